//! A scripted OpenAI-compatible server on loopback for fault injection. Each request to
//! `POST /v1/chat/completions` takes the next [`Behavior`] of the script (the last one
//! repeats). It speaks the streaming protocol of OpenAI's chat completions: SSE `data:`
//! lines with `chat.completion.chunk` objects, a final chunk with `usage`, then
//! `data: [DONE]`; or, for [`Behavior::Whole`] and [`Behavior::FloodBody`], one
//! `chat.completion` object as a non-streamed `application/json` body.
//!
//! [`ScriptedOllama`] is the same for Ollama's `POST /api/chat` (NDJSON chunks, Ollama's
//! docs/api.md "Generate a chat completion"), with `/api/tags` and `/api/show`.
//!
//! `POST /v1/embeddings` answers as OpenAI's "Create embeddings" documents: `data` with
//! one `embedding` per input (listed last input first, each with its `index`), made from
//! the text so equal texts get equal vectors, cut to `dimensions`, and `usage`.
//!
//! The floods generate their bytes lazily, so the server itself holds almost nothing
//! whatever it sends.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// What the server does with one request.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Answer with this status and an OpenAI error body.
    Status(u16),
    /// Accept the request and never answer (until the client goes away:
    /// [`ScriptedServer::client_disconnected`]).
    Hang,
    /// Stream these tokens, then `[DONE]`.
    Stream(Vec<String>),
    /// Stream these tokens, then stop sending but keep the connection open.
    StreamThenHang(Vec<String>),
    /// Stream these tokens, then close the connection without `[DONE]`.
    StreamThenCut(Vec<String>),
    /// Stream a token every `interval` forever (until the client goes away).
    Slow(Duration),
    /// Stream these tokens with `interval` before each, then `[DONE]`.
    Paced(Vec<String>, Duration),
    /// Ignore `max_tokens`: stream content chunks (`flood 0 `, `flood 1 `, ...) as fast as
    /// the client reads, forever.
    Flood,
    /// Open one SSE event (`data: {...` and the content) and never end it: content bytes
    /// forever, no line end.
    FloodEvent,
    /// Stream chunks without content (`"delta": {}`) forever.
    FloodEmpty,
    /// Answer a non-streamed `chat.completion` whose content is this many bytes (`x`),
    /// `application/json`, sent in 64 KiB pieces.
    FloodBody(usize),
    /// Answer a non-streamed `chat.completion` with this content and usage.
    Whole(String),
    /// Stream these `chat.completion.chunk` objects as they are, one SSE event each, then
    /// `[DONE]` (tool-call deltas, as a test writes them from OpenAI's documentation).
    Events(Vec<serde_json::Value>),
}

struct Inner {
    script: Mutex<VecDeque<Behavior>>,
    arrivals: Mutex<Vec<Instant>>,
    bodies: Mutex<Vec<serde_json::Value>>,
    disconnected: Arc<AtomicBool>,
}

/// A running scripted server.
pub struct ScriptedServer {
    inner: Arc<Inner>,
    /// `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedServer {
    /// Starts a server that follows `script`.
    ///
    /// # Errors
    /// When it cannot bind a loopback port.
    pub async fn start(script: Vec<Behavior>) -> anyhow::Result<Self> {
        let inner = Arc::new(Inner {
            script: Mutex::new(script.into()),
            arrivals: Mutex::new(Vec::new()),
            bodies: Mutex::new(Vec::new()),
            disconnected: Arc::new(AtomicBool::new(false)),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .route("/v1/embeddings", post(embeddings))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(ScriptedServer {
            inner,
            base_url: format!("http://127.0.0.1:{port}/v1"),
            task,
        })
    }

    /// When each request arrived.
    pub fn arrivals(&self) -> Vec<Instant> {
        self.inner
            .arrivals
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// The JSON body of every request, in order.
    pub fn bodies(&self) -> Vec<serde_json::Value> {
        self.inner
            .bodies
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// Whether a streaming response was dropped because the client went away.
    pub fn client_disconnected(&self) -> bool {
        self.inner.disconnected.load(Ordering::SeqCst)
    }
}

/// A vector of `dims` numbers made from `text` (its length, its vowels, its spaces and
/// then its bytes), unnormalised: equal texts, equal vectors.
fn text_vector(text: &str, dims: usize) -> Vec<f32> {
    let count = |f: fn(&u8) -> bool| text.bytes().filter(&f).count() as f32;
    let mut v = vec![
        text.len() as f32,
        count(|b| b"aeiou".contains(b)),
        count(|b| *b == b' '),
    ];
    v.extend(text.bytes().map(f32::from));
    v.resize(dims, 0.5);
    v
}

async fn embeddings(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if let Ok(mut b) = inner.bodies.lock() {
        b.push(req.clone());
    }
    let inputs: Vec<String> = match &req["input"] {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let dims = req["dimensions"]
        .as_u64()
        .and_then(|d| usize::try_from(d).ok())
        .unwrap_or(8);
    let data: Vec<serde_json::Value> = inputs
        .iter()
        .enumerate()
        .rev()
        .map(|(i, t)| serde_json::json!({"object": "embedding", "index": i, "embedding": text_vector(t, dims)}))
        .collect();
    let tokens: usize = inputs.iter().map(|t| t.split_whitespace().count()).sum();
    axum::Json(serde_json::json!({
        "object": "list", "data": data, "model": req["model"],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}
    }))
    .into_response()
}

async fn models() -> impl IntoResponse {
    axum::Json(
        serde_json::json!({"object": "list", "data": [{"id": "scripted", "object": "model"}]}),
    )
}

fn chunk(text: &str) -> Bytes {
    let v = serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "scripted",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]
    });
    Bytes::from(format!("data: {v}\n\n"))
}

fn finish(n: usize) -> Vec<Bytes> {
    let stop = serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "scripted",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]
    });
    let usage = serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "scripted",
        "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": n, "total_tokens": 7 + n}
    });
    vec![
        Bytes::from(format!("data: {stop}\n\n")),
        Bytes::from(format!("data: {usage}\n\n")),
        Bytes::from("data: [DONE]\n\n"),
    ]
}

/// Sets the flag when dropped before it was defused: the client went away mid-stream.
struct DisconnectGuard(Arc<AtomicBool>, bool);
impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}

fn sse(
    stream: impl futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

/// An endless stream of `piece`, after `head`; flags the client's going away.
fn endless(
    head: Bytes,
    piece: impl Fn(u64) -> Bytes + Send + 'static,
    guard: DisconnectGuard,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let body = futures::stream::unfold((0u64, guard), move |(i, guard)| {
        let next = piece(i);
        async move { Some((Ok(next), (i + 1, guard))) }
    });
    futures::StreamExt::chain(futures::stream::iter([Ok(head)]), body)
}

/// A `chat.completion` body of `size` content bytes, made as it is sent.
fn whole_body(size: usize) -> Body {
    const PIECE: usize = 64 << 10;
    let head = Bytes::from_static(
        br#"{"id":"chatcmpl-1","object":"chat.completion","created":0,"model":"scripted","choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":""#,
    );
    let tail = Bytes::from_static(br#""}}]}"#);
    let pieces = futures::stream::unfold(size, |left| async move {
        (left > 0).then(|| {
            let n = left.min(PIECE);
            (Ok::<_, Infallible>(Bytes::from(vec![b'x'; n])), left - n)
        })
    });
    let all = futures::StreamExt::chain(
        futures::StreamExt::chain(futures::stream::iter([Ok(head)]), pieces),
        futures::stream::iter([Ok(tail)]),
    );
    Body::from_stream(all)
}

fn json_response(body: Body) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap_or_default()
}

async fn chat(State(inner): State<Arc<Inner>>, body: Bytes) -> Response {
    if let Ok(mut a) = inner.arrivals.lock() {
        a.push(Instant::now());
    }
    if let Ok(mut b) = inner.bodies.lock() {
        b.push(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null));
    }
    let behavior = {
        let mut script = inner.script.lock().unwrap_or_else(|p| p.into_inner());
        if script.len() > 1 {
            script.pop_front()
        } else {
            script.front().cloned()
        }
    };
    match behavior.unwrap_or(Behavior::Status(500)) {
        Behavior::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = (
                status,
                axum::Json(serde_json::json!({"error": {"message": format!("scripted failure {code}"), "type": "server_error"}})),
            )
                .into_response();
            if code == 429 {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            }
            resp
        }
        Behavior::Hang => {
            // Dropped, with the flag set, when the client goes away (hyper drops the
            // handler of a closed connection).
            let _guard = DisconnectGuard(Arc::clone(&inner.disconnected), false);
            futures::future::pending::<()>().await;
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
        Behavior::Stream(tokens) => {
            let n = tokens.len();
            let mut items: Vec<Bytes> = tokens.iter().map(|t| chunk(t)).collect();
            items.extend(finish(n));
            sse(futures::stream::iter(items.into_iter().map(Ok)))
        }
        Behavior::StreamThenHang(tokens) => {
            let items: Vec<Result<Bytes, Infallible>> =
                tokens.iter().map(|t| Ok(chunk(t))).collect();
            sse(futures::StreamExt::chain(
                futures::stream::iter(items),
                futures::stream::pending(),
            ))
        }
        Behavior::StreamThenCut(tokens) => {
            let items: Vec<Result<Bytes, Infallible>> =
                tokens.iter().map(|t| Ok(chunk(t))).collect();
            sse(futures::stream::iter(items))
        }
        Behavior::Paced(tokens, interval) => {
            let n = tokens.len();
            let mut items: Vec<Bytes> = tokens.iter().map(|t| chunk(t)).collect();
            items.extend(finish(n));
            let stream = futures::stream::unfold(items.into_iter(), move |mut it| async move {
                let next = it.next()?;
                tokio::time::sleep(interval).await;
                Some((Ok(next), it))
            });
            sse(stream)
        }
        Behavior::Flood => {
            let guard = DisconnectGuard(Arc::clone(&inner.disconnected), false);
            sse(endless(
                Bytes::new(),
                |i| chunk(&format!("flood {i} ")),
                guard,
            ))
        }
        Behavior::FloodEvent => {
            let guard = DisconnectGuard(Arc::clone(&inner.disconnected), false);
            let head = Bytes::from_static(
                br#"data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":0,"model":"scripted","choices":[{"index":0,"delta":{"content":""#,
            );
            sse(endless(head, |_| Bytes::from(vec![b'x'; 16 << 10]), guard))
        }
        Behavior::FloodEmpty => {
            let guard = DisconnectGuard(Arc::clone(&inner.disconnected), false);
            let empty = serde_json::json!({
                "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "scripted",
                "choices": [{"index": 0, "delta": {}, "finish_reason": null}]
            });
            let line = Bytes::from(format!("data: {empty}\n\n"));
            sse(endless(Bytes::new(), move |_| line.clone(), guard))
        }
        Behavior::FloodBody(size) => json_response(whole_body(size)),
        Behavior::Whole(text) => {
            let v = serde_json::json!({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "scripted",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}
            });
            json_response(Body::from(v.to_string()))
        }
        Behavior::Events(events) => {
            let mut items: Vec<Bytes> = events
                .iter()
                .map(|e| Bytes::from(format!("data: {e}\n\n")))
                .collect();
            items.push(Bytes::from("data: [DONE]\n\n"));
            sse(futures::stream::iter(items.into_iter().map(Ok)))
        }
        Behavior::Slow(interval) => {
            let guard = DisconnectGuard(Arc::clone(&inner.disconnected), false);
            let stream = futures::stream::unfold((0u64, guard), move |(i, guard)| async move {
                tokio::time::sleep(interval).await;
                Some((Ok(chunk(&format!("t{i} "))), (i + 1, guard)))
            });
            sse(stream)
        }
    }
}

/// What the scripted Ollama server does with one `POST /api/chat`.
#[derive(Debug, Clone)]
pub enum OllamaBehavior {
    /// Stream these tokens as NDJSON lines, then the final `done: true` line with counts.
    Stream(Vec<String>),
    /// Ignore `num_predict`: stream content lines (`flood 0 `, ...) forever.
    Flood,
    /// Start one line and never end it: content bytes forever.
    FloodLine,
}

/// A scripted Ollama server on loopback: `GET /api/tags` lists one model, `POST
/// /api/show` describes it, `POST /api/chat` follows the script (the last behaviour
/// repeats). Field names follow Ollama's docs/api.md.
pub struct ScriptedOllama {
    script: Arc<Mutex<VecDeque<OllamaBehavior>>>,
    disconnected: Arc<AtomicBool>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The model it lists.
    pub model: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedOllama {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct OllamaState {
    script: Arc<Mutex<VecDeque<OllamaBehavior>>>,
    disconnected: Arc<AtomicBool>,
    model: String,
}

impl ScriptedOllama {
    /// Starts a server listing `model` and answering chats by `script`.
    ///
    /// # Errors
    /// When it cannot bind a loopback port.
    pub async fn start(model: &str, script: Vec<OllamaBehavior>) -> anyhow::Result<Self> {
        let state = OllamaState {
            script: Arc::new(Mutex::new(script.into())),
            disconnected: Arc::new(AtomicBool::new(false)),
            model: model.to_string(),
        };
        let app = Router::new()
            .route("/api/tags", get(ollama_tags))
            .route("/api/show", post(ollama_show))
            .route("/api/chat", post(ollama_chat))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(ScriptedOllama {
            script: state.script,
            disconnected: state.disconnected,
            url: format!("http://127.0.0.1:{port}"),
            model: model.to_string(),
            task,
        })
    }

    /// Whether a streaming response was dropped because the client went away.
    pub fn client_disconnected(&self) -> bool {
        self.disconnected.load(Ordering::SeqCst)
    }

    /// Behaviours not yet used (the last one stays).
    pub fn remaining(&self) -> usize {
        self.script.lock().map(|s| s.len()).unwrap_or_default()
    }
}

async fn ollama_tags(State(state): State<OllamaState>) -> Response {
    axum::Json(serde_json::json!({"models": [{
        "name": state.model, "model": state.model, "modified_at": "2024-06-04T14:38:31.83753-07:00",
        "size": 1000, "digest": "sha256:0",
        "details": {"format": "gguf", "family": "llama", "parameter_size": "135M", "quantization_level": "Q4_1"}
    }]}))
    .into_response()
}

async fn ollama_show() -> Response {
    axum::Json(serde_json::json!({
        "modelfile": "", "parameters": "", "template": "{{ .Prompt }}",
        "details": {"format": "gguf", "family": "llama", "parameter_size": "135M", "quantization_level": "Q4_1"},
        "model_info": {"general.architecture": "llama", "general.parameter_count": 135000000u64, "llama.context_length": 8192},
        "capabilities": ["completion"]
    }))
    .into_response()
}

fn ollama_line(model: &str, content: &str) -> Bytes {
    let v = serde_json::json!({
        "model": model, "created_at": "2023-08-04T08:52:19.385406455-07:00",
        "message": {"role": "assistant", "content": content}, "done": false
    });
    Bytes::from(format!("{v}\n"))
}

fn ndjson(
    stream: impl futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .body(Body::from_stream(stream))
        .unwrap_or_default()
}

async fn ollama_chat(State(state): State<OllamaState>) -> Response {
    let behavior = {
        let mut script = state.script.lock().unwrap_or_else(|p| p.into_inner());
        if script.len() > 1 {
            script.pop_front()
        } else {
            script.front().cloned()
        }
    };
    let model = state.model.clone();
    let guard = DisconnectGuard(Arc::clone(&state.disconnected), false);
    match behavior.unwrap_or(OllamaBehavior::Stream(Vec::new())) {
        OllamaBehavior::Stream(tokens) => {
            let n = tokens.len();
            let mut lines: Vec<Result<Bytes, Infallible>> =
                tokens.iter().map(|t| Ok(ollama_line(&model, t))).collect();
            let done = serde_json::json!({
                "model": model, "created_at": "2023-08-04T19:22:45.499127Z",
                "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "stop",
                "total_duration": 4883583458u64, "load_duration": 1334875, "prompt_eval_count": 26,
                "prompt_eval_duration": 342546000, "eval_count": n, "eval_duration": 4535599000u64
            });
            lines.push(Ok(Bytes::from(format!("{done}\n"))));
            let mut guard = guard;
            guard.1 = true;
            ndjson(futures::stream::iter(lines))
        }
        OllamaBehavior::Flood => ndjson(endless(
            Bytes::new(),
            move |i| ollama_line(&model, &format!("flood {i} ")),
            guard,
        )),
        OllamaBehavior::FloodLine => {
            let head = Bytes::from(format!(
                r#"{{"model":"{model}","created_at":"2023-08-04T08:52:19.385406455-07:00","message":{{"role":"assistant","content":""#
            ));
            ndjson(endless(head, |_| Bytes::from(vec![b'x'; 16 << 10]), guard))
        }
    }
}
