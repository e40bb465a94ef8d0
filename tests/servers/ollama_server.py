#!/usr/bin/env python3
"""Loopback stand-in for the Ollama daemon, backed by a real GGUF model.

Implements the subset of Ollama's REST API that Nexus uses, following
docs/api.md of github.com/ollama/ollama (and server/routes.go for error
wording): GET / , GET /api/version, GET /api/tags, GET /api/ps,
POST /api/show, POST /api/chat, POST /api/generate, POST /api/pull,
POST /api/embed.
Streaming endpoints answer NDJSON over HTTP/1.1 chunked transfer, one JSON
object per chunk; `"stream": false` gives one JSON object. Durations are in
nanoseconds, created_at is RFC3339 (UTC). Inference runs on llama_cpp.Llama
(llama-cpp-python), one instance serialised by a lock; every name given by
--name/--alias is served by the same GGUF.

  python3 tests/servers/ollama_server.py --model FILE --port PORT \
      [--host 127.0.0.1] [--name smollm2:135m] [--alias NAME ...]
      [--ctx 4096] [--threads 1] [--default-num-ctx 4096] [--spec JSON ...] [--verbose]

--spec adds (or, for a --name/--alias, describes) one model as a JSON object:
  {"name": "deepseek-r1:8b",            the tag as /api/tags lists it
   "capabilities": ["completion", ...], /api/show `capabilities` (types/model/capability.go)
   "context_length": 131072,            the trained window, model_info["<arch>.context_length"]
   "remote_host": "https://ollama.com:443", "remote_model": "gpt-oss:20b",
                                        a cloud model behind the daemon (api/types.go
                                        ListModelResponse.RemoteHost/RemoteModel)
   "script": {                          canned reply instead of the GGUF's:
     "thinking": ["Let", " me"],        message.thinking chunks (think on)
     "content": ["{\"a\"", ": 1}"],     message.content chunks
     "think_tags": true,                an old pull whose template has no thinking support:
                                        the reasoning arrives inside content as <think>..</think>
     "split_utf8": true,                every NDJSON line goes out in several TCP writes cut
                                        inside multi-byte characters
     "error_after": "CUDA error: out of memory",
                                        an {"error": ...} line after the content (the runner died)
     "echo_tokens": true,               the reply states how many prompt tokens the model saw
                                        and whether the prompt's first word survived truncation
     "gap_ms": 100,                     paces the chunks as a model generating does
     "tool_calls": [{"name": "get_weather", "arguments": {"city": "Tokyo"}}],
                                        when the request offers tools and the last message is
                                        not a tool result: the model's calls, sent as the daemon
                                        parses them (one message.tool_calls line each, object
                                        arguments, `id` call_xxxxxxxx, `index` counting from 0;
                                        a call of a tool not offered stays text in the content)
     "after_tool": "It is {content} in {tool_name}.",
                                        the reply when the last message is a tool result: the
                                        tool message read back ({tool_name}, {tool_call_id},
                                        {content}, {calls}: the assistant's earlier tool
                                        calls as the daemon received them, JSON, and
                                        {results}: every tool message's content, a JSON list)
     "rounds": [[{"name": ..., "arguments": ...}], ...],
                                        an agent's loop: when the request offers tools and
                                        its history holds k assistant messages with tool
                                        calls, round k's calls (as "tool_calls" are sent);
                                        once the rounds are used up, "after_tool" answers
  }}
Every model's prompt is truncated to the request's num_ctx (default --default-num-ctx, the
daemon's default for < 24 GiB of VRAM in server/routes.go) as the daemon does, with HTTP 200.

/api/embed embeds with the same GGUF (a second llama_cpp.Llama in embedding mode, mean
pooled), for any model name: the daemon's EmbedHandler asks for no capability.
/api/pull streams one model's manifest layers one after another (the GGUF, its template,
its parameters, then the config blob; server/images.go PullModel), each with its own
digest, total and completed (server/download.go); a second pull of a name finds every
blob on disk and reports each layer once, complete.

Prints `READY <port>` on stdout once listening (--port 0 picks a free port).
Stdlib only besides llama_cpp.
"""
import argparse, hashlib, json, os, random, socket, sys, threading, time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import llama_cpp
from llama_cpp import Llama, LlamaGrammar

VERSION = "0.5.7"
FILE_TYPES = dict(enumerate("F32 F16 Q4_0 Q4_1 4 5 6 Q8_0 Q5_0 Q5_1 Q2_K Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M "
                             "Q5_K_S Q5_K_M Q6_K".split()))  # GGUF general.file_type -> Ollama's label
DEFAULT_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
TEMPLATE = ("{{- range $i, $_ := .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n"
            "{{ end }}<|im_start|>assistant\n")
STOPS = ["<|im_start|>", "<|im_end|>"]


def now_rfc3339(ns=None):
    ns = time.time_ns() if ns is None else ns
    base = datetime.fromtimestamp(ns // 1_000_000_000, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{ns % 1_000_000_000:09d}".rstrip("0")  # Go's RFC3339Nano trims trailing zeros
    return base + ("." + frac if frac else "") + "Z"


def normalize(vec):
    """server/routes.go normalize: unit length (float32 in the daemon)."""
    n = max(sum(v * v for v in vec) ** 0.5, 1e-12)
    return [v / n for v in vec]


def tool_call_id():
    """server/routes.go toolCallId: call_ and 8 of [a-z0-9]."""
    return "call_" + "".join(random.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(8))


def norm(name):
    name = (name or "").strip().lower()
    for p in ("registry.ollama.ai/library/", "registry.ollama.ai/"):
        if name.startswith(p):
            name = name[len(p):]
    return name if ":" in name.rsplit("/", 1)[-1] else name + ":latest"


class Backend:
    def __init__(self, args):
        self.llm = Llama(model_path=args.model, n_ctx=args.ctx, n_threads=args.threads,
                         n_threads_batch=args.threads, verbose=False)
        self.lock = threading.Lock()
        self.names = [args.name] + list(args.alias or [])
        self.default_num_ctx = args.default_num_ctx
        self.loaded = {}  # name -> num_ctx of the runner (server/sched.go keeps one per model)
        # name -> spec (see the module doc); the --name/--alias models are the GGUF's
        self.specs = {}
        for raw in args.spec or []:
            spec = json.loads(raw)
            self.specs[norm(spec["name"])] = spec
            if not any(norm(n) == norm(spec["name"]) for n in self.names):
                self.names.append(spec["name"])
        st = os.stat(args.model)
        self.size, self.mtime = st.st_size, now_rfc3339(int(st.st_mtime * 1e9))
        with open(args.model, "rb") as f:
            self.digest = hashlib.file_digest(f, "sha256").hexdigest()
        md = self.llm.metadata
        self.arch = md.get("general.architecture", "llama")
        n_params = int(llama_cpp.llama_model_n_params(self.llm.model))
        ft = int(md.get("general.file_type", 3))
        self.details = {"parent_model": "", "format": "gguf", "family": self.arch, "families": [self.arch],
                        "parameter_size": f"{n_params / 1e9:.1f}B" if n_params >= 1e9 else f"{n_params / 1e6:.2f}M",
                        "quantization_level": FILE_TYPES.get(ft, str(ft))}
        info = {"general.parameter_count": n_params}
        for k, v in md.items():
            if k.startswith(("general.", self.arch + ".", "tokenizer.ggml.")) and len(v) < 256:
                info[k] = int(v) if v.lstrip("-").isdigit() else float(v) if v.replace(".", "", 1).isdigit() else v
        # The stand-in's llama.cpp context is --ctx, so that is the most a request may use.
        self.trained_ctx = min(int(md.get(self.arch + ".context_length", args.ctx)), args.ctx)
        info[self.arch + ".context_length"] = self.trained_ctx
        self.model_info = dict(sorted(info.items()))
        self.model_path, self.ctx, self.threads = args.model, args.ctx, args.threads
        self.embedder = None  # made on the first /api/embed
        self.pulled = set()  # names whose blobs are "on disk" after a pull
        # A model's manifest layers (server/images.go PullModel pulls mf.Layers, then
        # mf.Config): the GGUF, the template, the parameters; the config blob last.
        params = json.dumps({"stop": STOPS}).encode()
        config = json.dumps({"model_format": "gguf", "model_family": self.arch}).encode()
        self.layers = [("sha256:" + self.digest, self.size)] + [
            ("sha256:" + hashlib.sha256(blob).hexdigest(), len(blob))
            for blob in (TEMPLATE.encode(), params, config)]

    def embed_model(self):
        """The GGUF in embedding mode (caller holds self.lock)."""
        if self.embedder is None:
            # One batch holds a whole text (llama_cpp would cut it at n_batch).
            self.embedder = Llama(model_path=self.model_path, n_ctx=self.ctx, n_batch=self.ctx, n_ubatch=self.ctx,
                                  n_threads=self.threads, n_threads_batch=self.threads, embedding=True,
                                  pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN, verbose=False)
        return self.embedder

    def spec(self, name):
        return self.specs.get(norm(name), {})

    def caps(self, name):
        return list(self.spec(name).get("capabilities") or ["completion"])

    def ctx_len(self, name):
        return int(self.spec(name).get("context_length") or self.trained_ctx)

    def tokenize(self, text):
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)

    @staticmethod
    def with_system(messages):
        if not messages or messages[0].get("role") != "system":
            return [{"role": "system", "content": DEFAULT_SYSTEM}] + messages
        return messages

    @staticmethod
    def render(messages):
        return "".join(f"<|im_start|>{m.get('role', 'user')}\n{m.get('content') or ''}<|im_end|>\n"
                       for m in messages) + "<|im_start|>assistant\n"

    def fit(self, name, messages, raw_prompt, opts):
        """The prompt tokens the model sees: (tokens, tokens before truncation, num_ctx).

        num_ctx is the request's options.num_ctx, else the daemon's default; it is
        clamped to the model's trained window (server/routes.go: `if ctxLen :=
        runner.ContextLength(); ctxLen > 0 && opts.NumCtx > ctxLen`). Then, silently and
        with HTTP 200: server/prompt.go chatPrompt drops messages from the front
        (keeping system messages and always the last message) until the rendered prompt
        fits; llm/llama_server.go keeps num_keep (default 4, api/types.go
        DefaultOptions) plus BOS tokens and discards from just after them down to
        contextShiftPromptLimit = num_ctx - max((num_ctx - keep) / 2, 1).
        """
        num_ctx = int(opts.get("num_ctx") or self.default_num_ctx)
        num_ctx = min(num_ctx, self.ctx_len(name))
        if raw_prompt is not None:
            tokens = self.tokenize(raw_prompt)
            full = len(tokens)
        else:
            full = len(self.tokenize(self.render(messages)))
            tokens = []
            for i in range(len(messages)):
                system = [m for m in messages[:i] if m.get("role") == "system"]
                tokens = self.tokenize(self.render(system + messages[i:]))
                if len(tokens) <= num_ctx:
                    break
        limit_full = num_ctx - 1
        if len(tokens) > limit_full:
            keep = int(opts.get("num_keep", 4))
            keep = len(tokens) if keep < 0 else keep
            keep = min(keep + 1, limit_full)  # tokenizerAddsBOS
            limit = num_ctx - max((num_ctx - max(0, min(keep, num_ctx - 1))) // 2, 1)
            discard = len(tokens) - limit
            tokens = tokens[:keep] + tokens[keep + discard:]
        self.loaded[norm(name)] = num_ctx
        return tokens, full, num_ctx

    def find(self, name):
        return any(norm(n) == norm(name) for n in self.names)

    def generate(self, name, messages, raw_prompt, opts, fmt):
        """Yields text pieces, then a final dict of stats. Caller must hold self.lock."""
        t0 = time.monotonic_ns()
        if raw_prompt is None:
            messages = self.with_system(messages)
        tokens, _, _ = self.fit(name, messages, raw_prompt, opts)
        prompt = self.llm.detokenize(tokens, special=True).decode("utf-8", "replace")
        grammar = None
        if fmt == "json":
            grammar = LlamaGrammar.from_string(llama_cpp.llama_grammar.JSON_GBNF, verbose=False)
        elif isinstance(fmt, dict):
            grammar = LlamaGrammar.from_json_schema(json.dumps(fmt), verbose=False)
        n_predict, seed, stop = opts.get("num_predict", -1), opts.get("seed"), opts.get("stop") or []
        kw = dict(max_tokens=None if n_predict is None or n_predict < 0 else max(int(n_predict), 1),
                  temperature=float(opts.get("temperature", 0.8)), top_p=float(opts.get("top_p", 0.9)),
                  top_k=int(opts.get("top_k", 40)), min_p=float(opts.get("min_p", 0.0)),
                  typical_p=float(opts.get("typical_p", 1.0)), repeat_penalty=float(opts.get("repeat_penalty", 1.1)),
                  presence_penalty=float(opts.get("presence_penalty", 0.0)),
                  frequency_penalty=float(opts.get("frequency_penalty", 0.0)),
                  mirostat_mode=int(opts.get("mirostat", 0)), mirostat_tau=float(opts.get("mirostat_tau", 5.0)),
                  mirostat_eta=float(opts.get("mirostat_eta", 0.1)),
                  seed=int(seed) if seed is not None and int(seed) >= 0 else random.randint(0, 2**31 - 1),
                  stop=STOPS + ([stop] if isinstance(stop, str) else list(stop)), grammar=grammar, stream=True)
        text, reason, t_first = [], "stop", None
        gen = self.llm.create_completion(tokens, **kw)
        try:
            for chunk in gen:
                choice = chunk["choices"][0]
                if t_first is None:
                    t_first = time.monotonic_ns()
                if choice.get("text"):
                    text.append(choice["text"])
                    yield choice["text"]
                if choice.get("finish_reason"):
                    reason = choice["finish_reason"]
        finally:
            gen.close()  # stops llama_cpp generation if the consumer went away
        t_end, out = time.monotonic_ns(), "".join(text)
        t_first = t_first or t_end
        n_eval = max(1, len(self.llm.tokenize(out.encode("utf-8"), add_bos=False, special=True)))
        yield {"done_reason": reason, "prompt_eval_count": len(tokens),
               "prompt_eval_duration": max(1, t_first - t0), "eval_count": n_eval,
               "eval_duration": max(1, t_end - t_first),
               "context": self.llm.tokenize((prompt + out).encode("utf-8"), add_bos=True, special=True)}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ollama-test-server"
    backend: Backend = None
    verbose = False

    def log_message(self, fmt, *args):
        if self.verbose:
            sys.stderr.write("ollama_server: " + (fmt % args) + "\n")

    def send_body(self, status, body, ctype="application/json; charset=utf-8", head=False):
        data = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def error(self, status, msg):
        self.send_body(status, {"error": msg})

    def start_stream(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def chunk(self, obj, split=False):  # one NDJSON line == one HTTP chunk; raises if the client went away
        # Raw UTF-8 on the wire, as Go's encoding/json writes it (server/routes.go streamResponse
        # uses json.Marshal, which escapes only <, >, & and invalid UTF-8).
        line = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n" \
            if obj is not None else b""
        pieces = [line]
        if split:  # cut after the first byte of every multi-byte character: each piece its own write
            cuts = [i + 1 for i, c in enumerate(line) if c >= 0xC0]
            pieces = [line[a:b] for a, b in zip([0] + cuts, cuts + [len(line)]) if b > a]
        for piece in pieces:
            self.wfile.write(f"{len(piece):X}\r\n".encode() + piece + b"\r\n")
            self.wfile.flush()

    def do_HEAD(self):
        self.do_GET(head=True)

    def do_GET(self, head=False):
        b, path = self.backend, self.path.split("?")[0].rstrip("/") or "/"
        if path == "/":
            self.send_body(200, b"Ollama is running", "text/plain; charset=utf-8", head)
        elif path == "/api/version":
            self.send_body(200, {"version": VERSION}, head=head)
        elif path == "/api/tags":  # api/types.go ListModelResponse
            models = []
            for n in b.names:
                m = dict(name=n, model=n, modified_at=b.mtime, size=b.size, digest=b.digest, details=b.details)
                sp = b.spec(n)
                if sp.get("remote_host"):  # a cloud model: a small manifest pointing at the remote host
                    m.update(remote_model=sp.get("remote_model") or n, remote_host=sp["remote_host"], size=384)
                models.append(m)
            self.send_body(200, {"models": models}, head=head)
        elif path == "/api/ps":  # api/types.go ProcessModelResponse: only models loaded now
            models = [dict(name=n, model=n, size=b.size, digest=b.digest, details=b.details,
                           expires_at=now_rfc3339(time.time_ns() + 300 * 10**9), size_vram=0,
                           context_length=b.loaded[norm(n)]) for n in b.names if norm(n) in b.loaded]
            self.send_body(200, {"models": models}, head=head)
        else:
            self.send_body(404, b"404 page not found", "text/plain", head)

    def do_POST(self):
        try:
            raw = b""
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                while True:
                    n = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if n == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        break
                    raw += self.rfile.read(n)
                    self.rfile.readline()
            elif int(self.headers.get("Content-Length") or 0) > 0:
                raw = self.rfile.read(int(self.headers["Content-Length"]))
            path = self.path.split("?")[0].rstrip("/")
            if path not in ("/api/chat", "/api/generate", "/api/show", "/api/pull", "/api/embed"):
                return self.send_body(404, b"404 page not found", "text/plain")
            if not raw.strip():
                return self.error(400, "missing request body")
            try:
                req = json.loads(raw)
            except ValueError as e:
                return self.error(400, f"invalid character in request body: {e}")
            if not isinstance(req, dict):
                return self.error(400, "json: cannot unmarshal request body into Go value of type api.Request")
            name = req.get("model") or req.get("name") or ""
            if not name and path == "/api/embed":  # EmbedHandler: writeModelRefParseError's fallback
                return self.error(404, f"model '{name}' not found")
            if not name:
                return self.error(400, "model is required")
            getattr(self, "h_" + path.rsplit("/", 1)[-1])(req, name)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True

    def h_show(self, req, name):
        b = self.backend
        if not b.find(name):
            return self.error(404, f"model '{name}' not found")  # ShowHandler wording in routes.go
        params = "\n".join(f'stop{" " * 27}"{s}"' for s in STOPS)
        modelfile = (f'# Modelfile generated by "ollama show"\n# To build a new Modelfile based on this, replace '
                     f'FROM with:\n# FROM {name}\n\nFROM {os.path.abspath(b.llm.model_path)}\n'
                     f'TEMPLATE """{TEMPLATE}"""\n' + "".join(f'PARAMETER stop "{s}"\n' for s in STOPS))
        info = dict(b.model_info)
        info[b.arch + ".context_length"] = b.ctx_len(name)
        body = {"license": "", "modelfile": modelfile, "parameters": params, "template": TEMPLATE,
                "system": DEFAULT_SYSTEM, "details": b.details, "model_info": info,
                "capabilities": b.caps(name), "modified_at": b.mtime}
        sp = b.spec(name)
        if sp.get("remote_host"):  # routes.go ShowHandler: remote_model/remote_host of the config
            body.update(remote_model=sp.get("remote_model") or name, remote_host=sp["remote_host"])
        self.send_body(200, body)

    def h_pull(self, req, name):
        b, stream = self.backend, req.get("stream", True) is not False
        err = "pull model manifest: file does not exist"
        if not stream:  # waitForStream: last status, or the error with HTTP 500
            return self.send_body(200, {"status": "success"}) if b.find(name) else self.error(500, err)
        self.start_stream()
        self.chunk({"status": "pulling manifest"})
        if not b.find(name):  # streamResponse: the error arrives as an NDJSON line after the 200
            self.chunk({"error": err})
            return self.chunk(None)
        cached = norm(name) in b.pulled
        for digest, size in b.layers:  # server/images.go PullModel: one layer after another
            status = f"pulling {digest[7:19]}"
            if cached:  # download.go downloadBlob: the blob is on disk, one line, complete
                self.chunk({"status": status, "digest": digest, "total": size, "completed": size})
                continue
            # blobDownload.Wait reports every 60 ms: first before any byte arrives (Completed
            # 0, which `omitempty` drops), then the bytes so far, this layer's own count.
            for done in (0, size // 3, 2 * size // 3, size):
                line = {"status": status, "digest": digest, "total": size}
                if done:
                    line["completed"] = done
                self.chunk(line)
                time.sleep(0.005)
        b.pulled.add(norm(name))
        for st in ("verifying sha256 digest", "writing manifest", "success"):
            self.chunk({"status": st})
        self.chunk(None)

    def h_embed(self, req, name):
        """server/routes.go EmbedHandler."""
        b, raw = self.backend, req.get("input")
        if isinstance(raw, str):
            inputs = [raw] if raw else []
        elif isinstance(raw, list):
            if not all(isinstance(v, str) for v in raw):
                return self.error(400, "invalid input type")
            inputs = list(raw)
        elif raw is None:
            inputs = []
        else:
            return self.error(400, "invalid input type")
        if not b.find(name):
            return self.error(404, f"model '{name}' not found")
        opts, t0 = req.get("options") or {}, time.monotonic_ns()
        if not inputs:
            return self.send_body(200, {"model": name, "embeddings": []})
        # inputTokensAndContext: the window is the model's, or num_ctx when smaller (the
        # request's options, else the daemon's default); adjustTokenLimit keeps room for
        # BOS and EOS when the text's tokens lack them.
        ctx_len = min(int(opts.get("num_ctx") or b.default_num_ctx), b.ctx_len(name)) - 2
        truncate = req.get("truncate") is not False
        dims = int(req.get("dimensions") or 0)
        vectors, count = [], 0
        with b.lock:
            emb = b.embed_model()
            for text in inputs:
                tokens = emb.tokenize(text.encode("utf-8"), add_bos=False, special=False)
                if len(tokens) > ctx_len:
                    if not truncate:
                        return self.error(400, "the input length exceeds the context length")
                    tokens = tokens[:ctx_len]
                    text = emb.detokenize(tokens).decode("utf-8", "ignore")
                vec = emb.embed(text)
                count += len(tokens)
                vec = normalize(vec)  # "this first normalization should be done by the model"
                if 0 < dims < len(vec):
                    vec = normalize(vec[:dims])
                vectors.append(vec)
        self.send_body(200, {"model": name, "embeddings": vectors, "total_duration": max(1, time.monotonic_ns() - t0),
                             "load_duration": 1, "prompt_eval_count": count})

    def h_chat(self, req, name):
        msgs = req.get("messages") or []
        if not isinstance(msgs, list) or not all(isinstance(m, dict) for m in msgs):
            return self.error(400, "json: cannot unmarshal messages into Go struct field ChatRequest.messages")
        bad = [m.get("role") for m in msgs if m.get("role") not in ("system", "user", "assistant", "tool")]
        if bad:
            return self.error(400, f"invalid role: {bad[0]}")
        # api/types.go: tools are Tool objects; a call's arguments are a JSON object
        # (ToolCallFunctionArguments.UnmarshalJSON reads an ordered map), so anything else
        # fails the request's binding with a 400.
        tools = req.get("tools") or []
        if not isinstance(tools, list) or not all(
                isinstance(t, dict) and isinstance(t.get("function"), dict)
                and isinstance(t["function"].get("name"), str) for t in tools):
            return self.error(400, "json: cannot unmarshal tools into Go struct field ChatRequest.tools of type api.Tools")
        for m in msgs:
            for c in m.get("tool_calls") or []:
                args = (c.get("function") or {}).get("arguments") if isinstance(c, dict) else None
                if args is not None and not isinstance(args, dict):
                    return self.error(400, "json: cannot unmarshal " + type(args).__name__ +
                                      " into Go value of type map[string]interface {}")
        b = self.backend
        if b.find(name):
            # routes.go ChatHandler: a thinking model thinks unless told not to; `think` on a
            # model without the capability is a 400; then scheduleRunner's CheckCapabilities
            # (server/images.go) refuses a model without completion (or tools when asked).
            caps, think = b.caps(name), req.get("think")
            if "thinking" in caps:
                if think is None:
                    req["think"] = True
            elif think not in (None, False):
                return self.error(400, f'"{name}" does not support thinking')
            if "completion" not in caps:
                return self.error(400, f'"{name}" does not support chat')
            if req.get("tools") and "tools" not in caps:
                return self.error(400, "does not support tools")
        self.infer(req, name, "chat", msgs, None, not msgs)

    def h_generate(self, req, name):
        prompt = req.get("prompt") or ""
        if req.get("raw"):
            self.infer(req, name, "generate", None, prompt, not prompt)
        else:
            msgs = ([{"role": "system", "content": req["system"]}] if req.get("system") else []) + \
                   [{"role": "user", "content": prompt}]
            self.infer(req, name, "generate", msgs, None, not prompt)

    def infer(self, req, name, kind, msgs, raw_prompt, empty):
        b, t0 = self.backend, time.monotonic_ns()
        if not b.find(name):  # handleScheduleError wording in routes.go
            return self.error(404, f'model "{name}" not found, try pulling it first')
        fmt, opts = req.get("format"), req.get("options") or {}
        if fmt not in (None, "", "json") and not isinstance(fmt, dict):
            # llm/llama_server.go Completion's wording; the error reaches streamResponse before
            # any write, so it is HTTP 500 (server/routes.go)
            return self.error(500, f'invalid format: {json.dumps(fmt)}; expected "json" or a valid JSON Schema object')
        if not isinstance(opts, dict):
            return self.error(400, "json: cannot unmarshal options into Go struct field of type map[string]any")

        def body(text, final=None):  # api.ChatResponse / api.GenerateResponse
            o = {"model": name, "created_at": now_rfc3339()}
            o.update({"message": {"role": "assistant", "content": text}} if kind == "chat" else {"response": text})
            if final is None:
                return dict(o, done=False)
            ctx = final.pop("context")  # only /api/generate (not raw) returns the deprecated context
            o.update(done_reason=final.pop("done_reason"), done=True)
            o.update({"context": ctx} if kind == "generate" and raw_prompt is None else {})
            return dict(o, total_duration=max(1, time.monotonic_ns() - t0), **final)

        if empty:  # empty messages/prompt: the spec's "load" (or, with keep_alive 0, "unload") reply
            unload = req.get("keep_alive") in (0, "0", "0s", "0m")
            return self.send_body(200, dict(body(""), done_reason="unload" if unload else "load", done=True))
        stream = req.get("stream", True) is not False
        if b.spec(name).get("script"):
            return self.scripted(req, name, kind, msgs, raw_prompt, opts, stream, body)
        with b.lock:  # one Llama instance: requests queue here, as they do in Ollama's scheduler
            load_ns = max(1, time.monotonic_ns() - t0)
            gen = b.generate(name, msgs, raw_prompt, opts, fmt or None)
            try:
                item = next(gen)  # surfaces bad schema / options / context overflow before any header
            except Exception as e:
                return self.error(500, str(e))
            try:
                parts = []
                if stream:
                    self.start_stream()
                while not isinstance(item, dict):
                    self.chunk(body(item)) if stream else parts.append(item)
                    item = next(gen)
                item["load_duration"] = load_ns
                if not stream:
                    return self.send_body(200, body("".join(parts), item))
                self.chunk(body("", item))
                self.chunk(None)
            except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
                self.close_connection = True  # client went away: generation stops below, server keeps serving
            except Exception as e:
                self.chunk({"error": str(e)}) if stream else self.error(500, str(e))
                self.chunk(None) if stream else None
            finally:
                gen.close()

    def scripted(self, req, name, kind, msgs, raw_prompt, opts, stream, body):
        """A canned reply, streamed as the daemon streams a model's (routes.go ChatHandler)."""
        b, sc = self.backend, self.backend.spec(name)["script"]
        with b.lock:
            msgs = b.with_system(msgs) if raw_prompt is None else msgs
            tokens, full, _ = b.fit(name, msgs, raw_prompt, opts)
        content = list(sc.get("content") or [])
        if sc.get("echo_tokens"):
            last = (msgs or [{}])[-1].get("content") or raw_prompt or ""
            seen = b.llm.detokenize(tokens, special=True).decode("utf-8", "replace")
            first = (last.split() or [""])[0]
            content = [f"saw {len(tokens)} of {full} prompt tokens; the first word was "
                       f"{'kept' if first and first in seen else 'cut'}"]
        calls = []
        last = (msgs or [{}])[-1]
        rounds = sc.get("rounds")
        done = sum(1 for m in msgs if m.get("role") == "assistant" and m.get("tool_calls"))
        if rounds is not None and req.get("tools") and done < len(rounds):
            # An agent's loop: round k answers the request that carries k earlier calls.
            offered = {t["function"]["name"] for t in req["tools"]}
            calls = [c for c in rounds[done] if c["name"] in offered]
            content = [json.dumps(c, separators=(",", ":")) for c in rounds[done] if c["name"] not in offered]
        elif last.get("role") == "tool" and sc.get("after_tool") is not None:
            # The tool's result read back (docs/api.md "Chat request (With history, with
            # tools)": role tool with tool_name), and the calls the history carried.
            seen = [c for m in msgs if m.get("role") == "assistant" for c in (m.get("tool_calls") or [])]
            content = [sc["after_tool"].format(tool_name=last.get("tool_name", ""),
                                               tool_call_id=last.get("tool_call_id", ""),
                                               content=last.get("content", ""),
                                               calls=json.dumps(seen, separators=(",", ":")),
                                               results=json.dumps([m.get("content", "") for m in msgs if m.get("role") == "tool"]))]
        elif req.get("tools") and sc.get("tool_calls"):
            # tools/tools.go Parser: only calls of tools the request offers are parsed; the
            # model's text for any other stays content.
            offered = {t["function"]["name"] for t in req["tools"]}
            calls = [c for c in sc["tool_calls"] if c["name"] in offered]
            content = [json.dumps(c, separators=(",", ":")) for c in sc["tool_calls"] if c["name"] not in offered]
        thinking = list(sc.get("thinking") or [])
        parts = []  # (field, text): routes.go sets message.thinking from the thinking parser
        if sc.get("think_tags"):  # no thinking capability: the template's tags stay in content
            parts = [("content", t) for t in ["<think>"] + thinking + ["</think>\n\n"] + content]
        else:
            parts = ([("thinking", t) for t in thinking] if req.get("think") not in (None, False) else []) + \
                    [("content", t) for t in content]
        # routes.go ChatHandler: each parsed call gets toolCallId(); tools.go counts `index`
        # across the reply. Arguments go out as the JSON object they are.
        parts += [("tool_call", {"id": tool_call_id(),
                                 "function": {"index": i, "name": c["name"], "arguments": c.get("arguments") or {}}})
                  for i, c in enumerate(calls)]
        n_predict = int(opts.get("num_predict", -1))
        reason = "stop"
        if 0 <= n_predict < len(parts):  # llm/server.go: the runner stops at num_predict, "length"
            parts, reason = parts[:n_predict], "length"
        split = bool(sc.get("split_utf8"))

        def msg_body(field, text):
            o = body("")
            if kind == "chat":
                o["message"] = {"role": "assistant", "content": text if field == "content" else ""}
                if field == "thinking":
                    o["message"]["thinking"] = text
                if field == "tool_call":
                    o["message"]["tool_calls"] = [text]
            else:
                o.update({"response": text if field == "content" else ""},
                         **({"thinking": text} if field == "thinking" else {}))
            return o
        final = {"context": tokens, "done_reason": reason, "prompt_eval_count": len(tokens),
                 "prompt_eval_duration": 1, "eval_count": max(1, len(parts)), "eval_duration": 1,
                 "load_duration": 1}
        if not stream:
            o = body("", dict(final))
            text = "".join(t for f, t in parts if f == "content")
            think = "".join(t for f, t in parts if f == "thinking")
            tcs = [t for f, t in parts if f == "tool_call"]  # routes.go: gathered into the one message
            o.update({"message": dict({"role": "assistant", "content": text}, **({"thinking": think} if think else {}),
                                      **({"tool_calls": tcs} if tcs else {}))}
                     if kind == "chat" else {"response": text})
            return self.send_body(200, o)
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.start_stream()
            for field, text in parts:
                time.sleep(float(sc.get("gap_ms", 0)) / 1000)
                self.chunk(msg_body(field, text), split)
            if sc.get("error_after"):
                # routes.go streamResponse: after the first write an error is one more NDJSON
                # line, `{"error": ...}`, and the stream ends (no done line).
                self.chunk({"error": sc["error_after"]}, split)
                return self.chunk(None)
            self.chunk(body("", dict(final)), split)
            self.chunk(None)
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            self.close_connection = True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, default=11434)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--name", default="smollm2:135m")
    ap.add_argument("--alias", action="append", default=[])
    ap.add_argument("--ctx", type=int, default=4096)
    # server/routes.go: 4096 below 24 GiB of VRAM (OLLAMA_CONTEXT_LENGTH overrides it)
    ap.add_argument("--default-num-ctx", type=int, default=int(os.environ.get("OLLAMA_CONTEXT_LENGTH") or 4096))
    ap.add_argument("--spec", action="append", default=[])
    # 1 thread by default: llama.cpp's spinning worker threads collapse (30x slower) on a busy 2-core box.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args()
    Handler.backend, Handler.verbose = Backend(args), args.verbose
    srv = ThreadingHTTPServer((args.host, args.port), Handler)
    srv.daemon_threads = True
    print(f"READY {srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
