#!/usr/bin/env bash
# Fuzzes the HTTP API of `nexus serve` from its OpenAPI document with Schemathesis
# (installed from PyPI by name, pinned, into a virtual environment under the cache dir):
# no 5xx, no crash, every response (and every event of a run's stream) matching the
# document, documented status codes and content types; then /metrics is parsed with the
# Prometheus Python client's text-format parser (pinned, same environment). The server runs on a free loopback
# port with a fresh workflows folder and run database; runs use the embedded model.
# NEXUS_BIN names the `nexus` binary (default: the workspace's debug build).
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=4.32.5
venv="${NEXUS_FUZZ_VENV:-$HOME/.cache/nexus-fuzz-venv}"
if ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  bash scripts/ensure-debian-packages.sh "the API fuzzer's virtual environment" python3-venv
fi
PROMETHEUS_CLIENT=0.23.1
if [ ! -x "$venv/bin/schemathesis" ] || [ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $VERSION" ] \
  || ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('prometheus-client') != '$PROMETHEUS_CLIENT')" 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$VERSION" "prometheus-client==$PROMETHEUS_CLIENT"
fi
if [ -z "${NEXUS_BIN:-}" ]; then
  NEXUS_BIN="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/debug/nexus"
fi
[ -x "$NEXUS_BIN" ] || { echo "no nexus binary at $NEXUS_BIN: build the workspace first (cargo nextest run --workspace --no-run)" >&2; exit 1; }
. scripts/serve-in-background.sh
serve_work_dir
cp workflows/*.yaml "$work/workflows/"
cp -r workflows/data "$work/workflows/"
serve_in_background "$NEXUS_BIN" "$work"
status=0
"$venv/bin/schemathesis" --config-file tests/fuzz/schemathesis.toml run schema/openapi.json \
  --url "$base" --checks all --seed "${NEXUS_FUZZ_SEED:-1}" || status=$?
# After the fuzzing, one more run to the end, then /metrics parses with the Prometheus
# client's own parser of the text format (it raises on a malformed line) and counts it.
"$venv/bin/python" - "$base" <<'PY' || status=1
import json, sys, time, urllib.request
from prometheus_client.parser import text_string_to_metric_families
base = sys.argv[1]
flow = "id: metrics-probe\nsteps:\n  - id: a\n    kind: template\n    template: hi\n"
req = urllib.request.Request(f"{base}/api/runs", data=json.dumps({"text": flow, "inputs": {}}).encode(),
                             headers={"Content-Type": "application/json"}, method="POST")
run_id = json.load(urllib.request.urlopen(req))["run_id"]
for _ in range(600):
    if json.load(urllib.request.urlopen(f"{base}/api/runs/{run_id}"))["status"] == "succeeded":
        break
    time.sleep(0.1)
else:
    sys.exit(f"the probe run {run_id} did not succeed")
with urllib.request.urlopen(f"{base}/metrics") as r:
    assert r.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8", r.headers["Content-Type"]
    text = r.read().decode()
families = {f.name: f for f in text_string_to_metric_families(text)}
for name, kind in [("nexus_runs_finished", "counter"), ("nexus_steps_finished", "counter"),
                   ("nexus_step_duration_seconds", "histogram"), ("nexus_runs_in_flight", "gauge")]:
    assert name in families and families[name].type == kind, (name, sorted(families))
probe = [s for s in families["nexus_runs_finished"].samples
         if s.labels == {"workflow": "metrics-probe", "status": "succeeded"}]
assert probe and probe[0].value == 1, families["nexus_runs_finished"].samples
print(f"/metrics: {len(families)} families parsed, "
      f"{sum(len(f.samples) for f in families.values())} samples")
PY
if ! kill -0 "$server" 2>/dev/null; then
  echo "nexus serve died during the fuzzing:" >&2
  cat "$work/err" >&2
  exit 1
fi
exit "$status"
