#!/usr/bin/env bash
# Installs the real OpenAI-compatible server the tests start (llama-cpp-python's server,
# pinned), built portable: llama.cpp's native CPU detection is off (`-DGGML_NATIVE=OFF`,
# as llama-cpp-sys-2 builds the embedded model), since a native build has died with a
# general-protection fault in libggml-cpu on CPUs with AVX-512/AMX. The build takes several
# minutes on 2 cores the first time; pip caches the wheel.
#
# Then it proves the server works: starts it on loopback with the embedded model
# (scripts/fetch-model.sh puts it in place) and asks for one real completion. A copy that
# imports but cannot answer (e.g. an earlier native build) is rebuilt once from source.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.3.36
build() {
  echo "installing llama-cpp-python[server]==$VERSION (builds llama.cpp portably; a few minutes the first time)"
  CMAKE_ARGS="-DGGML_NATIVE=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc 2>/dev/null || echo 2)" \
    python3 -m pip install --quiet --disable-pip-version-check "$@" "llama-cpp-python[server]==$VERSION"
}
installed=$(python3 -c "import importlib.metadata as m; print(m.version('llama-cpp-python'))" 2>/dev/null || true)
if [ "$installed" != "$VERSION" ] || ! python3 -c "import llama_cpp.server" >/dev/null 2>&1; then
  build
fi
model="${NEXUS_EMBEDDED_MODEL:-}"
if [ -z "$model" ]; then
  if [ -n "${NEXUS_MODELS_DIR:-}" ]; then dir="$NEXUS_MODELS_DIR"
  elif [ "$(uname -s)" = Darwin ]; then dir="$HOME/Library/Application Support/nexus/models"
  else dir="${XDG_DATA_HOME:-$HOME/.local/share}/nexus/models"; fi
  model="$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
fi
[ -s "$model" ] || { echo "no embedded model at $model: run scripts/fetch-model.sh first" >&2; exit 1; }
if ! python3 scripts/check-llama-server.py "$model"; then
  echo "llama-cpp-python imports but does not answer: rebuilding it from source without native CPU detection"
  build --force-reinstall --no-deps --no-cache-dir --no-binary llama-cpp-python
  python3 scripts/check-llama-server.py "$model"
fi

# The official reference MCP servers (stdio and streamable HTTP), pinned in
# tests/servers/mcp/package-lock.json.
echo "installing the reference MCP servers (tests/servers/mcp)"
npm ci --prefix tests/servers/mcp --no-audit --no-fund --loglevel=error
