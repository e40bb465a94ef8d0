# Sourced (not run) by scripts that test or measure a real `nexus serve`:
#
#   . scripts/serve-in-background.sh
#   serve_work_dir                  # sets `work`: a fresh folder with workflows/ in it
#   serve_in_background BIN WORK    # serves WORK/workflows on a free loopback port
#
# `serve_work_dir` also stops the server and removes the folder when the script exits.
#
# Starts BIN on a free loopback port with WORK/runs.db and the workflows in
# WORK/workflows, no API token and no cloud keys (runs use the embedded model; OLLAMA_HOST
# points where nothing listens), its output in WORK/out and WORK/err. Waits for its
# "listening on" line (printed once it accepts connections) and sets `server` (its pid)
# and `base` (its URL). Exits with the server's error output if it does not start. The
# caller stops it (`kill "$server"`).
serve_in_background() {
  local bin="$1" work="$2"
  NEXUS_DB="$work/runs.db" OLLAMA_HOST=127.0.0.1:9 \
    env -u NEXUS_API_TOKEN -u OPENAI_API_KEY -u OPENAI_BASE_URL -u NEXUS_OPENAI_BASE_URL -u NEXUS_OPENAI_API_KEY \
    "$bin" serve --bind 127.0.0.1:0 --workflows "$work/workflows" >"$work/out" 2>"$work/err" &
  server=$!
  for _ in $(seq 1 300); do
    grep -q 'listening on' "$work/out" 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || { cat "$work/err" >&2; exit 1; }
    sleep 0.1
  done
  base="$(grep -o 'http://[0-9.:]*' "$work/out" | head -1)"
  [ -n "$base" ] || { echo "nexus serve did not start" >&2; cat "$work/err" >&2; exit 1; }
}

serve_work_dir() {
  work="$(mktemp -d)"
  server=""
  trap 'if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi; rm -rf "$work"' EXIT
  mkdir -p "$work/workflows"
}
