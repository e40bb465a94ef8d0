#!/usr/bin/env bash
# Starts `nexus serve` on PORT with the built editor (dist/), a fresh workflows folder
# holding the workflows of e2e-serve/workflows, and a fresh run database; the embedded
# model runs every step (no Ollama: OLLAMA_HOST points where nothing listens).
# NEXUS_BIN names the binary (scripts/test-ui.sh builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
port="${1:-4174}"
bin="${NEXUS_BIN:-${CARGO_TARGET_DIR:-../target}/debug/nexus}"
if [ ! -x "$bin" ]; then
  echo "no nexus binary at $bin: run \`cargo build -p nexus-cli\` or set NEXUS_BIN" >&2
  exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/workflows"
cp e2e-serve/workflows/*.yaml "$work/workflows/"
export NEXUS_DB="$work/runs.db" OLLAMA_HOST=127.0.0.1:9
unset NEXUS_API_TOKEN OPENAI_API_KEY OPENAI_BASE_URL NEXUS_OPENAI_BASE_URL NEXUS_OPENAI_API_KEY
"$bin" serve --bind "127.0.0.1:$port" --workflows "$work/workflows" --editor dist
