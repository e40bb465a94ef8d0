#!/usr/bin/env bash
# The editor's tests: type check, production build, then Playwright against the build
# (served by `vite preview`, with the in-memory test backend, for editor behaviour that
# needs no engine), then Playwright against the build served by the real `nexus serve`
# (the real engine and the embedded model), in Debian's Chromium, installed with apt-get
# when missing (Playwright's own browser download is not available on these machines).
set -euo pipefail
cd "$(dirname "$0")/../ui"
# Debian's `chromium` package, checked by name, unless NEXUS_CHROMIUM names another binary.
if [ -z "${NEXUS_CHROMIUM:-}" ]; then
  bash ../scripts/ensure-debian-packages.sh --with-recommends "the editor's browser tests" chromium
fi
# `npm ci` refuses this lock file: the package mirror here carries only the Linux builds of
# optional platform packages (rollup, esbuild), so the lock cannot list the others.
npm install --no-audit --no-fund --loglevel=error
npx tsc --noEmit
npx vite build --logLevel warn
npx playwright test
# The editor as a web app on the real engine. The `nexus` binary is the one the
# workspace's tests built (the same features, so llama.cpp is not built again).
if [ -z "${NEXUS_BIN:-}" ]; then
  if cargo nextest --version >/dev/null 2>&1; then
    (cd .. && cargo nextest run --workspace --no-run --quiet)
  else
    (cd .. && cargo test --workspace --no-run --quiet)
  fi
  NEXUS_BIN="$(cd .. && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/nexus"
  export NEXUS_BIN
fi
bash ../scripts/fetch-model.sh >/dev/null
npx playwright test --config playwright.serve.config.ts
