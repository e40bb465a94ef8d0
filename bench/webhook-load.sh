#!/usr/bin/env bash
# Load benchmark of `nexus serve` (issue: serve, triggers): webhook-triggered runs
# accepted per second with a real HTTP load tool (wrk, Debian's package), each answered
# 202 only after its run is stored in SQLite, and the server's memory with 1,000 runs
# waiting at once (each in an `event` step). Release build, loopback, a fresh database.
# Prints the figures as Markdown rows (README, "Benchmarks").
#
#   bench/webhook-load.sh [--seconds 20] [--connections 32] [--waiting 1000]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=20 connections=32 waiting=1000
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --connections) connections="$2"; shift 2 ;;
    --waiting) waiting="$2"; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
bash scripts/ensure-debian-packages.sh "the load benchmark" wrk
cargo build --quiet --release -p nexus-cli
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
bin="$target_dir/release/nexus"
. scripts/serve-in-background.sh
serve_work_dir
cat > "$work/workflows/load.yaml" <<'YAML'
id: load
inputs:
  n: {type: string, default: "0"}
triggers:
  - kind: webhook
    path: load
    auth: {kind: none}
    rate_per_minute: 100000000
steps:
  - id: echo
    kind: template
    template: "item {{ inputs.n }}"
YAML
cat > "$work/workflows/hold.yaml" <<'YAML'
id: hold
triggers:
  - kind: webhook
    path: hold
    auth: {kind: none}
    rate_per_minute: 100000000
steps:
  - id: go
    kind: event
YAML
cat > "$work/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"n": "1"}'
wrk.headers["Content-Type"] = "application/json"
LUA
serve_in_background "$bin" "$work"
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$server/status"; }
idle_kb=$(rss_kb)

# 1. Accepted runs per second: wrk for $seconds s; then every 202 must be a stored run.
wrk -t1 -c"$connections" -d"${seconds}s" --latency -s "$work/post.lua" "$base/hooks/load" > "$work/wrk.txt"
cat "$work/wrk.txt" >&2
python3 - "$work/wrk.txt" "$work/runs.db" "$seconds" "$connections" <<'PY'
import re, sqlite3, sys
text, db, seconds, conns = open(sys.argv[1]).read(), sys.argv[2], sys.argv[3], sys.argv[4]
total = int(re.search(r"(\d+) requests in", text).group(1))
bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
bad = int(bad.group(1)) if bad else 0
errors = re.search(r"Socket errors: (.*)", text)
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p50 = re.search(r"50%\s+(\S+)", text).group(1)
p99 = re.search(r"99%\s+(\S+)", text).group(1)
stored = sqlite3.connect(db).execute("select count(*) from runs where trigger_kind = 'webhook'").fetchone()[0]
accepted = total - bad
print(f"| webhook runs accepted (202 after the run is stored) | {rps:.0f}/s | {conns} connections, {seconds} s, {total} requests, {bad} not 202, p50 {p50}, p99 {p99}; {stored} runs in the database{'; socket errors: ' + errors.group(1) if errors else ''} |")
if stored < accepted:
    sys.exit(f"only {stored} runs stored for {accepted} accepted requests")
PY

loaded_kb=$(rss_kb)

# 2. Memory with $waiting runs waiting at once in an `event` step.
python3 - "$base" "$waiting" <<'PY'
import concurrent.futures, json, sys, time, urllib.request
base, n = sys.argv[1], int(sys.argv[2])
def post(_):
    req = urllib.request.Request(f"{base}/hooks/hold", data=b"{}", headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req) as r:
        assert r.status == 202, r.status
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    list(pool.map(post, range(n)))
deadline = time.time() + 300
while time.time() < deadline:
    with urllib.request.urlopen(f"{base}/metrics") as r:
        line = [l for l in r.read().decode().splitlines() if l.startswith("nexus_runs_in_flight ")]
    if line and float(line[0].split()[1]) >= n:
        break
    time.sleep(0.5)
else:
    sys.exit("the runs did not all start waiting")
PY
waiting_kb=$(rss_kb)
echo "| memory of the server | $((idle_kb / 1024)) MiB at start, $((loaded_kb / 1024)) MiB after the load | RSS (VmRSS) |"
echo "| memory with $waiting runs waiting in an event step | $((waiting_kb / 1024)) MiB | RSS (VmRSS) once /metrics counts them all in flight |"
