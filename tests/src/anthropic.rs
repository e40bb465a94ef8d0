//! A loopback server that answers as Anthropic's Messages API does (the "Messages",
//! "Streaming Messages" and "Errors" pages of Anthropic's API documentation), for tests
//! that configure several providers at once.
//!
//! `POST /v1/messages` with `"stream": true` answers the documented event sequence:
//! `message_start` (with `usage.input_tokens`), `content_block_start` of a text block,
//! a `ping`, one `content_block_delta` (`text_delta`) per word of the reply,
//! `content_block_stop`, `message_delta` (`stop_reason: end_turn`, `usage.output_tokens`)
//! and `message_stop`, each as `event: <type>` and `data: <json>` lines. A request
//! without the server's `x-api-key` gets 401 with an `authentication_error` body; one
//! without `anthropic-version` gets 400 with an `invalid_request_error` body.
//! `GET /v1/models` lists the served model.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

struct Inner {
    key: String,
    model: String,
    reply: String,
    bodies: Mutex<Vec<Value>>,
}

/// A running Anthropic-protocol server.
pub struct AnthropicServer {
    inner: Arc<Inner>,
    /// `http://127.0.0.1:PORT` (the API root; requests go to `/v1/...`).
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AnthropicServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl AnthropicServer {
    /// Starts a server that accepts only `key`, serves `model` and answers `reply`.
    ///
    /// # Errors
    /// When it cannot bind a loopback port.
    pub async fn start(key: &str, model: &str, reply: &str) -> anyhow::Result<Self> {
        let inner = Arc::new(Inner {
            key: key.to_string(),
            model: model.to_string(),
            reply: reply.to_string(),
            bodies: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/models", get(models))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(AnthropicServer {
            inner,
            url: format!("http://127.0.0.1:{port}"),
            task,
        })
    }

    /// The JSON body of every accepted `POST /v1/messages`, in order.
    pub fn bodies(&self) -> Vec<Value> {
        self.inner
            .bodies
            .lock()
            .map(|b| b.clone())
            .unwrap_or_default()
    }
}

/// Anthropic's error body (`{"type": "error", "error": {"type", "message"}}`).
fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"type": "error", "error": {"type": kind, "message": message}})),
    )
        .into_response()
}

/// `None` when the request carries the key and a version, else the error answer.
fn refused(inner: &Inner, headers: &HeaderMap) -> Option<Response> {
    let key = headers.get("x-api-key").and_then(|v| v.to_str().ok());
    if key != Some(inner.key.as_str()) {
        return Some(error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        ));
    }
    if headers.get("anthropic-version").is_none() {
        return Some(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
        ));
    }
    None
}

async fn models(State(inner): State<Arc<Inner>>, headers: HeaderMap) -> Response {
    if let Some(r) = refused(&inner, &headers) {
        return r;
    }
    Json(json!({
        "data": [{"type": "model", "id": inner.model, "display_name": inner.model,
                  "created_at": "2025-01-01T00:00:00Z"}],
        "has_more": false, "first_id": inner.model, "last_id": inner.model
    }))
    .into_response()
}

fn event(kind: &str, data: &Value) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

async fn messages(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = refused(&inner, &headers) {
        return r;
    }
    if let Ok(mut b) = inner.bodies.lock() {
        b.push(body.clone());
    }
    if body.get("stream") != Some(&json!(true)) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "this test server answers streamed requests only",
        );
    }
    let words: Vec<String> = inner
        .reply
        .split_inclusive(' ')
        .map(str::to_string)
        .collect();
    let id = "msg_01XFDUDYJgAACzvnptvVoYEL";
    let mut sse = event(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "content": [],
            "model": body.get("model").cloned().unwrap_or(Value::Null),
            "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 25, "output_tokens": 1}}}),
    );
    sse.push_str(&event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
    ));
    sse.push_str(&event("ping", &json!({"type": "ping"})));
    for w in &words {
        sse.push_str(&event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": w}}),
        ));
    }
    sse.push_str(&event(
        "content_block_stop",
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    sse.push_str(&event(
        "message_delta",
        &json!({"type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": null},
                "usage": {"output_tokens": words.len()}}),
    ));
    sse.push_str(&event("message_stop", &json!({"type": "message_stop"})));
    (
        StatusCode::OK,
        [
            ("content-type", "text/event-stream"),
            ("cache-control", "no-cache"),
        ],
        sse,
    )
        .into_response()
}
