#!/usr/bin/env bash
# The editor's tests: type check, production build, then Playwright against the build
# (served by `vite preview`) in Debian's Chromium, installed with apt-get when missing
# (Playwright's own browser download is not available on these machines).
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
