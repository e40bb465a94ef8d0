//! OpenAI-compatible chat completions provider (OpenAI, Groq, OpenRouter, Together,
//! DeepSeek, Mistral, LM Studio, vLLM, llama.cpp servers).
//!
//! Configuration comes from the environment only: `NEXUS_OPENAI_BASE_URL` (or
//! `OPENAI_BASE_URL`), `NEXUS_OPENAI_API_KEY` (or `OPENAI_API_KEY`) and optionally
//! `NEXUS_OPENAI_MODELS` (comma-separated; otherwise `GET /models` is asked). The key is
//! sent as a bearer token and never stored.
//!
//! Streaming follows OpenAI's chat completions API: `stream: true` gives Server-Sent
//! Events whose data are `chat.completion.chunk` objects, ended by `data: [DONE]`; with
//! `stream_options.include_usage` the last chunk carries `usage`. SSE framing is parsed
//! by the `eventsource-stream` crate. When a server sends no usage, the completion
//! tokens are counted as the number of content chunks (llama.cpp servers send one token
//! per chunk) and the prompt tokens stay 0. A server that ignores `stream: true` and
//! answers one `application/json` chat completion is read too, within a cap.
//!
//! Floods: the reply goes through [`metered`] (cut past `max_tokens` plus a margin, or
//! past the byte cap); below it, no SSE event may pass [`http::EVENT_CAP`] and no
//! non-streamed body twice the reply's byte ceiling, so nothing on the wire is buffered
//! past a few MiB. Error wording is in [`errors`].

pub mod errors;
mod wire;

use std::time::Duration;

use async_trait::async_trait;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use nexus_engine::provider::{
    ChatChunk, ChatRequest, ChatStream, Locality, ModelInfo, Provider, ProviderError,
    ProviderErrorKind, Usage, metered, reply_byte_ceiling,
};

pub use errors::{classify_message, from_status};

use crate::http::{self, classify_reqwest, classify_wire};

/// Default base URL when only an API key is configured.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The OpenAI-compatible provider (id `openai`, cloud).
#[derive(Clone)]
pub struct OpenAiProvider {
    http: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
    models: Vec<String>,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("models", &self.models)
            .finish()
    }
}

impl OpenAiProvider {
    /// A provider for `base_url` (e.g. `http://127.0.0.1:8080/v1`). `models` may be empty,
    /// in which case `GET /models` lists them.
    ///
    /// # Errors
    /// [`ProviderErrorKind::Internal`] if the HTTP client cannot be built.
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        models: Vec<String>,
    ) -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ProviderError::new(ProviderErrorKind::Internal, e.to_string()))?;
        Ok(OpenAiProvider {
            http,
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            models,
        })
    }

    /// The provider configured by the environment, or `None` when neither a base URL nor
    /// an API key is set.
    ///
    /// # Errors
    /// As [`OpenAiProvider::new`].
    pub fn from_env() -> Result<Option<Self>, ProviderError> {
        Self::from_env_with_key(None)
    }

    /// The provider configured by the environment: base URL from `NEXUS_OPENAI_BASE_URL`,
    /// else `OPENAI_BASE_URL`, else the public API; key from `NEXUS_OPENAI_API_KEY`, else
    /// `OPENAI_API_KEY`, else `fallback_key` (e.g. the OS keychain's); models from
    /// `NEXUS_OPENAI_MODELS` (comma-separated). The base URL and the key are independent;
    /// `None` when neither is configured.
    ///
    /// # Errors
    /// As [`OpenAiProvider::new`].
    pub fn from_env_with_key(fallback_key: Option<&str>) -> Result<Option<Self>, ProviderError> {
        // The first of the two that is set and not blank.
        let var = |a: &str, b: &str| {
            [a, b]
                .iter()
                .filter_map(|n| std::env::var(n).ok())
                .find(|v| !v.trim().is_empty())
        };
        let base = var("NEXUS_OPENAI_BASE_URL", "OPENAI_BASE_URL");
        let key = var("NEXUS_OPENAI_API_KEY", "OPENAI_API_KEY")
            .or_else(|| fallback_key.map(str::to_string));
        if base.is_none() && key.is_none() {
            return Ok(None);
        }
        let models = std::env::var("NEXUS_OPENAI_MODELS")
            .map(|m| {
                m.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let base = base.unwrap_or_else(|| DEFAULT_BASE_URL.to_string());
        Self::new(&base, key, models).map(Some)
    }

    /// The base URL.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn authed(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => rb.bearer_auth(key),
            None => rb,
        }
    }

    fn info(name: String) -> ModelInfo {
        ModelInfo {
            provider: "openai".into(),
            name,
            locality: Locality::Cloud,
            context_length: None,
            size_bytes: None,
            parameter_size: None,
            quantization: None,
            recommended_family: None,
            capabilities: Vec::new(),
            loaded_context_length: None,
        }
    }

    async fn send(
        &self,
        body: &wire::ChatCompletionRequest<'_>,
    ) -> Result<reqwest::Response, ProviderError> {
        let resp = self
            .authed(
                self.http
                    .post(format!("{}/chat/completions", self.base_url)),
            )
            .json(body)
            .send()
            .await
            .map_err(|e| classify_reqwest(&e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = http::retry_after(&resp);
        let text = http::error_body(resp).await;
        Err(from_status(status.as_u16(), &text).with_retry_after(retry_after))
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn id(&self) -> &str {
        "openai"
    }

    fn locality(&self) -> Locality {
        Locality::Cloud
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, ProviderError> {
        if !self.models.is_empty() {
            return Ok(self.models.iter().cloned().map(Self::info).collect());
        }
        let resp = self
            .authed(self.http.get(format!("{}/models", self.base_url)))
            .send()
            .await
            .map_err(|e| classify_reqwest(&e))?;
        let status = resp.status();
        if !status.is_success() {
            let text = http::error_body(resp).await;
            return Err(from_status(status.as_u16(), &text));
        }
        let body = http::read_capped(resp, http::LIST_BODY_CAP)
            .await
            .map_err(|e| match e {
                crate::Error::Transport(t) => classify_reqwest(&t),
                other => ProviderError::new(
                    ProviderErrorKind::Protocol,
                    format!("bad model list: {other}"),
                ),
            })?;
        let list: wire::ModelList = serde_json::from_slice(&body).map_err(|e| {
            ProviderError::new(ProviderErrorKind::Protocol, format!("bad model list: {e}"))
        })?;
        Ok(list.data.into_iter().map(|m| Self::info(m.id)).collect())
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatStream, ProviderError> {
        let messages: Vec<wire::Message<'_>> = request
            .messages
            .iter()
            .map(|m| wire::Message {
                role: match m.role {
                    nexus_engine::provider::Role::System => "system",
                    nexus_engine::provider::Role::User => "user",
                    nexus_engine::provider::Role::Assistant => "assistant",
                },
                content: &m.content,
            })
            .collect();
        let mut body = wire::ChatCompletionRequest {
            model: &request.model,
            messages,
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            stream: true,
            stream_options: wire::StreamOptions {
                include_usage: true,
            },
            response_format: request
                .json_schema
                .as_ref()
                .map(wire::ResponseFormat::json_schema),
        };
        let resp = match self.send(&body).await {
            // Servers that do not know `json_schema` (older llama.cpp servers) take
            // `json_object` with a `schema`: try that once before failing.
            Err(e)
                if matches!(
                    e.kind,
                    ProviderErrorKind::InvalidRequest | ProviderErrorKind::UnsupportedParameter
                ) && body.response_format.is_some() =>
            {
                body.response_format = request
                    .json_schema
                    .as_ref()
                    .map(wire::ResponseFormat::json_object);
                self.send(&body).await?
            }
            other => other?,
        };
        let max_tokens = request.max_tokens;
        let is_json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
        if is_json {
            return Ok(metered(whole_reply(resp, max_tokens).await?, max_tokens));
        }
        Ok(metered(stream_reply(resp, max_tokens), max_tokens))
    }
}

/// Reads a non-streamed chat completion (a server that ignored `stream: true`): at most
/// twice the reply's byte ceiling plus 64 KiB of JSON (escapes may double the text).
async fn whole_reply(
    resp: reqwest::Response,
    max_tokens: u32,
) -> Result<ChatStream, ProviderError> {
    let cap = reply_byte_ceiling(max_tokens)
        .saturating_mul(2)
        .saturating_add(64 << 10);
    let body = http::read_capped(resp, cap)
        .await
        .map_err(|e| classify_wire(&e))?;
    let reply: wire::ChatCompletion = serde_json::from_slice(&body).map_err(|e| {
        match serde_json::from_slice::<wire::ErrorBody>(&body) {
            Ok(b) => {
                let msg = b.error.message();
                ProviderError::new(classify_message(&msg, ProviderErrorKind::Protocol), msg)
            }
            Err(_) => ProviderError::new(
                ProviderErrorKind::Protocol,
                format!("bad chat completion: {e}"),
            ),
        }
    })?;
    drop(body);
    let choice = reply.choices.into_iter().next();
    let finish_reason = choice.as_ref().and_then(|c| c.finish_reason.clone());
    let text = choice.and_then(|c| c.message.content).unwrap_or_default();
    let usage = reply.usage.map_or(
        Usage {
            prompt_tokens: 0,
            completion_tokens: u64::from(!text.is_empty()),
        },
        |u| Usage {
            prompt_tokens: u.prompt_tokens,
            completion_tokens: u.completion_tokens,
        },
    );
    let mut items = Vec::with_capacity(2);
    if !text.is_empty() {
        items.push(Ok(ChatChunk::Delta(text)));
    }
    items.push(Ok(ChatChunk::Done {
        usage,
        finish_reason,
    }));
    Ok(Box::pin(futures::stream::iter(items)))
}

/// Reads a streamed chat completion (SSE), no event over [`http::EVENT_CAP`], no more
/// than [`http::wire_cap`] bytes in all.
fn stream_reply(resp: reqwest::Response, max_tokens: u32) -> ChatStream {
    let mut events =
        http::sse_capped(resp, http::EVENT_CAP, http::wire_cap(max_tokens)).eventsource();
    async_stream(move |tx| async move {
        let mut usage: Option<Usage> = None;
        let mut chunks = 0u64;
        let mut finish: Option<String> = None;
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(ev) => ev,
                Err(eventsource_stream::EventStreamError::Transport(e)) => {
                    let err = match e {
                        crate::Error::Transport(t) => ProviderError::new(
                            ProviderErrorKind::Protocol,
                            format!("the event stream broke: {}", classify_reqwest(&t).message),
                        ),
                        other => classify_wire(&other),
                    };
                    let _ = tx.send(Err(err)).await;
                    return;
                }
                Err(e) => {
                    let _ = tx
                        .send(Err(ProviderError::new(
                            ProviderErrorKind::Protocol,
                            format!("the event stream broke: {e}"),
                        )))
                        .await;
                    return;
                }
            };
            if event.data.trim() == "[DONE]" {
                let usage = usage.unwrap_or(Usage {
                    prompt_tokens: 0,
                    completion_tokens: chunks,
                });
                let _ = tx
                    .send(Ok(ChatChunk::Done {
                        usage,
                        finish_reason: finish,
                    }))
                    .await;
                return;
            }
            let chunk: wire::ChatCompletionChunk = match serde_json::from_str(&event.data) {
                Ok(c) => c,
                Err(e) => {
                    // An error object mid-stream, or garbage.
                    let err = match serde_json::from_str::<wire::ErrorBody>(&event.data) {
                        Ok(b) => {
                            let msg = b.error.message();
                            let kind = classify_message(&msg, ProviderErrorKind::Protocol);
                            ProviderError::new(kind, msg)
                        }
                        Err(_) => ProviderError::new(
                            ProviderErrorKind::Protocol,
                            format!("bad chunk: {e}"),
                        ),
                    };
                    let _ = tx.send(Err(err)).await;
                    return;
                }
            };
            if let Some(u) = chunk.usage {
                usage = Some(Usage {
                    prompt_tokens: u.prompt_tokens,
                    completion_tokens: u.completion_tokens,
                });
            }
            for choice in chunk.choices {
                if let Some(reason) = choice.finish_reason {
                    finish = Some(reason);
                }
                if let Some(content) = choice.delta.content
                    && !content.is_empty()
                {
                    chunks += 1;
                    if tx.send(Ok(ChatChunk::Delta(content))).await.is_err() {
                        return;
                    }
                }
            }
        }
        // The connection closed without `[DONE]`: the engine reports a broken stream.
    })
}

/// Runs `producer` as a task feeding a channel and returns the channel as a stream.
/// Dropping the stream closes the channel; the producer then stops at its next send and
/// drops the HTTP response, which closes the connection.
fn async_stream<F, Fut>(producer: F) -> ChatStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<ChatChunk, ProviderError>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let fut = producer(tx.clone());
    let handle = tokio::spawn(async move {
        tokio::select! {
            () = fut => {}
            () = tx.closed() => {}
        }
    });
    Box::pin(AbortOnDrop {
        inner: tokio_stream_from(rx),
        handle,
    })
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<ChatChunk, ProviderError>>,
) -> impl futures::Stream<Item = Result<ChatChunk, ProviderError>> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A stream that aborts its producer task when dropped.
struct AbortOnDrop<S> {
    inner: S,
    handle: tokio::task::JoinHandle<()>,
}

impl<S: futures::Stream + Unpin> futures::Stream for AbortOnDrop<S> {
    type Item = S::Item;
    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        std::pin::Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl<S> Drop for AbortOnDrop<S> {
    fn drop(&mut self) {
        self.handle.abort();
    }
}
