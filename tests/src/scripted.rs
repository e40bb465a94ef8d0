//! A scripted OpenAI-compatible server on loopback for fault injection. Each request to
//! `POST /v1/chat/completions` takes the next [`Behavior`] of the script (the last one
//! repeats). It speaks the streaming protocol of OpenAI's chat completions: SSE `data:`
//! lines with `chat.completion.chunk` objects, a final chunk with `usage`, then
//! `data: [DONE]`.

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
    /// Accept the request and never answer.
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
