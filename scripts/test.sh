#!/usr/bin/env bash
# The whole test suite: build dependencies, the embedded model, the real
# OpenAI-compatible server the tests start, then every test of the workspace, then the
# HTTP API fuzzed from its OpenAPI document (scripts/fuzz-api.sh), then the editor's
# browser tests (scripts/test-ui.sh), then the real desktop window
# (scripts/test-desktop.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-build-deps.sh
bash scripts/ensure-debian-packages.sh "the service test (systemd-analyze verify)" systemd
scripts/fetch-model.sh
scripts/setup-test-servers.sh
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
scripts/fuzz-api.sh
scripts/test-ui.sh
scripts/test-desktop.sh
