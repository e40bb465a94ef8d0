#!/usr/bin/env bash
# The editor's tests: type check, production build, then Playwright against the build
# (served by `vite preview`) in Debian's Chromium, installed with apt-get when missing
# (Playwright's own browser download is not available on these machines).
set -euo pipefail
cd "$(dirname "$0")/../ui"
if ! command -v chromium >/dev/null 2>&1 && [ -z "${NEXUS_CHROMIUM:-}" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    echo "installing chromium for the editor's browser tests"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
  else
    echo "please install chromium (or set NEXUS_CHROMIUM to a Chromium binary)" >&2
    exit 1
  fi
fi
# `npm ci` refuses this lock file: the package mirror here carries only the Linux builds of
# optional platform packages (rollup, esbuild), so the lock cannot list the others.
npm install --no-audit --no-fund --loglevel=error
npx tsc --noEmit
npx vite build --logLevel warn
npx playwright test
