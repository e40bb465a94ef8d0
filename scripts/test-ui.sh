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
# workspace's tests built (scripts/test.sh runs them first): building it here would
# rebuild the desktop shell, which embeds the editor's files just rebuilt above.
if [ -z "${NEXUS_BIN:-}" ]; then
  NEXUS_BIN="$(cd .. && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/nexus"
  export NEXUS_BIN
fi
if [ ! -x "$NEXUS_BIN" ]; then
  echo "no nexus binary at $NEXUS_BIN: build the workspace's tests first (cargo nextest run --workspace --no-run), or set NEXUS_BIN" >&2
  exit 1
fi
bash ../scripts/fetch-model.sh >/dev/null
npx playwright test --config playwright.serve.config.ts
