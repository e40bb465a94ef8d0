#!/usr/bin/env bash
# Engine overhead on no-op workflows, Nexus and LangGraph side by side (same shapes:
# chain and fan-out of 1,000 and 10,000 steps; in memory and with SQLite persistence).
# Prints a Markdown table with the ratio LangGraph / Nexus (µs per step).
# Usage: bench/run.sh [--sizes 1000,10000] [--repeat 3]
set -euo pipefail
cd "$(dirname "$0")/.."
args=("$@")
out=$(mktemp -d)
cargo build --quiet --release -p nexus-bench --bins
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
"$target_dir/release/nexus-bench" "${args[@]}" > "$out/nexus.jsonl"
python3 -m pip install --quiet --disable-pip-version-check langgraph langgraph-checkpoint-sqlite
python3 bench/langgraph_noop.py --json "${args[@]}" > "$out/langgraph.jsonl" || true
python3 - "$out/nexus.jsonl" "$out/langgraph.jsonl" <<'PY'
import json, sys
def load(p):
    rows = {}
    for line in open(p):
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if "us_per_step" in r:
            rows[(r["shape"], r["steps"], r["mode"])] = r
    return rows
nx, lg = load(sys.argv[1]), load(sys.argv[2])
print("| shape | steps | mode | Nexus µs/step | LangGraph µs/step | LangGraph / Nexus |")
print("|---|---:|---|---:|---:|---:|")
for key in sorted(nx):
    n = nx[key]; l = lg.get(key)
    lu = f'{l["us_per_step"]:.1f}' + (" (extrapolated)" if l and l.get("extrapolated") else "") if l else "—"
    ratio = f'{l["us_per_step"] / n["us_per_step"]:.0f}×' if l and n["us_per_step"] > 0 else "—"
    print(f'| {key[0]} | {key[1]} | {key[2]} | {n["us_per_step"]:.2f} | {lu} | {ratio} |')
print()
for key in sorted(nx):
    if key[2] == "memory":
        print(f'validate {key[0]} {key[1]}: {nx[key]["validate_ms"]:.1f} ms')
PY

echo
echo "resilience layer (bench/src/bin/resilience.rs):"
"$target_dir/release/resilience"

echo
echo "fixed cost per run, one-step workflow (bench/src/bin/per_run.rs):"
"$target_dir/release/per_run"

echo
echo "provider floods, peak memory (bench/src/bin/flood.rs):"
"$target_dir/release/flood"
