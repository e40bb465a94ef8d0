#!/usr/bin/env python3
"""Starts `python -m llama_cpp.server` on a free loopback port with the given GGUF, asks
for one real chat completion and stops it. Exits 0 when a non-empty answer came back;
otherwise prints the server's own log (e.g. a crash in libggml-cpu) and exits 1.

  python3 scripts/check-llama-server.py MODEL.gguf
"""
import json, os, socket, subprocess, sys, tempfile, time, urllib.error, urllib.request

model = sys.argv[1]
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
log = tempfile.TemporaryFile()
server = subprocess.Popen(
    [sys.executable, "-m", "llama_cpp.server", "--model", model, "--host", "127.0.0.1",
     "--port", str(port), "--model_alias", "check", "--n_ctx", "512"],
    stdout=log, stderr=subprocess.STDOUT,
    # A crash in native code then leaves "Fatal Python error: Segmentation fault" in the log.
    env={**os.environ, "PYTHONFAULTHANDLER": "1", "PYTHONUNBUFFERED": "1"})
ok, why = False, ""
try:
    deadline = time.time() + 120
    body = json.dumps({"model": "check", "max_tokens": 8,
                       "messages": [{"role": "user", "content": "Say hello."}]}).encode()
    while time.time() < deadline and server.poll() is None:
        try:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body,
                                         {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=60) as r:
                reply = json.load(r)
            text = reply["choices"][0]["message"]["content"] or ""
            ok, why = bool(text.strip()), f"answered {text.strip()[:40]!r}"
            break
        except urllib.error.HTTPError as e:  # up, but the completion failed: no retry
            why = f"HTTP {e.code}: {e.read()[:400].decode(errors='replace')}"
            break
        except (KeyError, IndexError, TypeError, ValueError) as e:  # not an OpenAI reply
            why = f"unexpected reply ({e!r})"
            break
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.5)  # not listening yet
    if server.poll() is not None:
        why = f"the server exited with status {server.returncode}"
    elif not why:
        why = "no answer within 120 s"
finally:
    if server.poll() is None:
        server.kill()
    server.wait()
if ok:
    print(f"llama-cpp-python server works: {why}")
    sys.exit(0)
log.seek(0)
print(f"llama-cpp-python server check failed: {why}; its log:", file=sys.stderr)
sys.stderr.write(log.read().decode(errors="replace")[-4000:])
sys.exit(1)
