#!/usr/bin/env bash
# Installs the real OpenAI-compatible server used by the tests (llama-cpp-python's
# server, which builds llama.cpp: several minutes on 2 cores the first time; pip caches
# the wheel) and checks it imports.
set -euo pipefail
if ! python3 -c "import llama_cpp.server" >/dev/null 2>&1; then
  echo "installing llama-cpp-python[server] (builds llama.cpp; a few minutes the first time)"
  CMAKE_BUILD_PARALLEL_LEVEL="$(nproc 2>/dev/null || echo 2)" \
    python3 -m pip install --quiet --disable-pip-version-check 'llama-cpp-python[server]'
fi
python3 -c "import llama_cpp.server" && echo "llama-cpp-python server available"
