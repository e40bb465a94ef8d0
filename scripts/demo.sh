#!/usr/bin/env bash
# The main job: puts the embedded model in place and runs an example workflow on the best
# model available (installed Ollama models first, then a configured cloud model, then the
# embedded model), printing its outputs. Extra arguments go to `nexus run`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-build-deps.sh
scripts/fetch-model.sh
cargo run --quiet -p nexus-cli -- run workflows/feature-spec.yaml "$@"
