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
//! Tools: [`ChatRequest::tools`] go out as `tools` with `tool_choice`; streamed
//! `delta.tool_calls` fragments are joined by `index` into complete calls
//! ([`tools`]), passed on as [`ChatChunk::ToolCall`]s before `Done` (whose finish reason
//! is then `tool_calls`). A server known to ignore tools is configured with
//! `NEXUS_OPENAI_TOOLS=off` ([`OpenAiProvider::with_native_tools`]): then the provider
//! reports no native tool calls and refuses requests with tools. Embeddings:
//! `POST /embeddings` ([`Provider::embed`]).
//!
//! Floods: the reply goes through [`metered`] (cut past `max_tokens` plus a margin, or
//! past the byte cap); below it, no SSE event may pass [`http::EVENT_CAP`] and no
//! non-streamed body twice the reply's byte ceiling, so nothing on the wire is buffered
//! past a few MiB. Error wording is in [`errors`].

pub mod errors;
pub mod tools;
mod wire;

use std::time::Duration;

use async_trait::async_trait;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use nexus_engine::provider::tools::no_native_tools;
use nexus_engine::provider::{
    ChatChunk, ChatRequest, ChatStream, EmbedRequest, Embeddings, Locality, ModelInfo, Provider,
    ProviderError, ProviderErrorKind, ToolChoice, Usage, metered, reply_byte_ceiling,
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
    /// Whether the server takes `tools` ([`OpenAiProvider::with_native_tools`]).
    native_tools: bool,
    /// `openai`, or `openai@<name>` for one of several endpoints
    /// ([`OpenAiProvider::with_id`]).
    id: String,
    /// Where the endpoint runs: cloud unless configured ([`OpenAiProvider::with_locality`]).
    locality: Locality,
}

impl std::fmt::Debug for OpenAiProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiProvider")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("models", &self.models)
            .field("native_tools", &self.native_tools)
            .field("id", &self.id)
            .field("locality", &self.locality)
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
            native_tools: true,
            id: "openai".to_string(),
            locality: Locality::Cloud,
        })
    }

    /// The same provider under another id, `openai@<name>` (`openai@groq`), so one
    /// process can hold several OpenAI-compatible endpoints, each with its own key,
    /// breakers and statistics; model references name it (`openai@groq:llama-3.1-8b`).
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// The same provider with another locality: [`Locality::Local`] for a server on this
    /// machine or network (LM Studio, vLLM, a llama.cpp server), which `local_only`
    /// steps may then use; [`Locality::Cloud`] by default.
    #[must_use]
    pub fn with_locality(mut self, locality: Locality) -> Self {
        self.locality = locality;
        self
    }

    /// The same provider with native tool calls on or off (on by default: the API
    /// defines `tools`). Off for a server that ignores `tools` and answers in text, so an
    /// agent step uses its JSON strategy with it.
    #[must_use]
    pub fn with_native_tools(mut self, on: bool) -> Self {
        self.native_tools = on;
        self
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
    /// `NEXUS_OPENAI_MODELS` (comma-separated); native tool calls off when
    /// `NEXUS_OPENAI_TOOLS` is `off`, `false`, `no` or `0`. The base URL and the key are
    /// independent; `None` when neither is configured.
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
        let tools = std::env::var("NEXUS_OPENAI_TOOLS").map_or(true, |v| {
            !matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "off" | "false" | "no" | "0"
            )
        });
        Self::new(&base, key, models).map(|p| Some(p.with_native_tools(tools)))
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

    fn info(&self, name: String) -> ModelInfo {
        ModelInfo::named(self.id.as_str(), name, self.locality)
    }

    async fn send(
        &self,
        body: &wire::ChatCompletionRequest<'_>,
    ) -> Result<reqwest::Response, ProviderError> {
        self.post("/chat/completions", body).await
    }

    /// Sends `body` to `path` (`/chat/completions`, `/embeddings`); a non-2xx answer is
    /// classified by its status and words, with its `Retry-After`.
    async fn post(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<reqwest::Response, ProviderError> {
        let resp = self
            .authed(self.http.post(format!("{}{path}", self.base_url)))
            .json(body)
            .send()
            .await
            .map_err(|e| classify_reqwest(&e))?;
        http::checked(resp, from_status).await
    }
}

#[async_trait]
impl Provider for OpenAiProvider {
    fn id(&self) -> &str {
        &self.id
    }

    fn locality(&self) -> Locality {
        self.locality
    }

    /// `POST /embeddings`: the vectors in `data[].index` order.
    async fn embed(&self, request: EmbedRequest) -> Result<Embeddings, ProviderError> {
        embed(self, &request).await
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, ProviderError> {
        if !self.models.is_empty() {
            return Ok(self.models.iter().cloned().map(|m| self.info(m)).collect());
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
        Ok(list.data.into_iter().map(|m| self.info(m.id)).collect())
    }

    fn native_tool_calls(&self, _model: &ModelInfo) -> bool {
        self.native_tools
    }

    fn can_embed(&self) -> bool {
        true
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatStream, ProviderError> {
        if !request.tools.is_empty() && !self.native_tools {
            return Err(no_native_tools(self.id(), &request.model));
        }
        let mut body = chat_body(&request);
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

/// The body of `POST /chat/completions` for `request`: the messages with their tool
/// calls (arguments as JSON text) and results, the tools and `tool_choice`.
fn chat_body(request: &ChatRequest) -> wire::ChatCompletionRequest<'_> {
    let messages = request
        .messages
        .iter()
        .map(|m| wire::Message {
            role: m.role.as_str(),
            // An assistant message with only tool calls has `content: null`.
            content: (!m.content.is_empty() || m.tool_calls.is_empty())
                .then_some(m.content.as_str()),
            tool_calls: m
                .tool_calls
                .iter()
                .map(|c| wire::ToolCallOut {
                    id: &c.id,
                    kind: "function",
                    function: wire::FunctionOut {
                        name: &c.name,
                        arguments: c.arguments.to_string(),
                    },
                })
                .collect(),
            tool_call_id: m.tool_call_id.as_deref(),
        })
        .collect();
    let tools: Vec<wire::Tool<'_>> = request
        .tools
        .iter()
        .map(|t| wire::Tool {
            kind: "function",
            function: wire::ToolFunction {
                name: &t.name,
                description: &t.description,
                parameters: &t.parameters,
            },
        })
        .collect();
    let tool_choice = (!tools.is_empty()).then(|| match &request.tool_choice {
        ToolChoice::Auto => serde_json::json!("auto"),
        ToolChoice::Required => serde_json::json!("required"),
        ToolChoice::Tool(name) => {
            serde_json::json!({"type": "function", "function": {"name": name}})
        }
    });
    wire::ChatCompletionRequest {
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
        tools,
        tool_choice,
    }
}

/// `POST /embeddings` of `request` ("Create embeddings"): float vectors, sorted by
/// `data[].index`; a server that answers one vector per token (llama-cpp-python with a
/// model that does not pool) is refused with a clear protocol error.
async fn embed(
    provider: &OpenAiProvider,
    request: &EmbedRequest,
) -> Result<Embeddings, ProviderError> {
    nexus_engine::provider::embed::check_request(request)?;
    if request.inputs.is_empty() {
        return Embeddings::checked(request.model.clone(), Vec::new(), 0, 0);
    }
    let body = wire::EmbeddingsRequest {
        model: &request.model,
        input: &request.inputs,
        encoding_format: "float",
        dimensions: request.dimensions.filter(|&d| d > 0),
    };
    let resp = provider.post("/embeddings", &body).await?;
    let bytes = http::read_capped(resp, http::embed_body_cap(request.inputs.len()))
        .await
        .map_err(|e| classify_wire(&e))?;
    let mut reply: wire::EmbeddingsResponse = serde_json::from_slice(&bytes).map_err(|e| {
        ProviderError::new(
            ProviderErrorKind::Protocol,
            format!("bad embeddings from the server: {e}"),
        )
    })?;
    drop(bytes);
    reply.data.sort_by_key(|d| d.index);
    let vectors = reply
        .data
        .into_iter()
        .enumerate()
        .map(|(i, d)| match d.embedding {
            wire::WireVector::Flat(v) => Ok(v),
            wire::WireVector::PerToken(rows) => Err(ProviderError::new(
                ProviderErrorKind::Protocol,
                format!(
                    "embedding {i} is {} vectors, one per token, not one vector: the server does not pool this model's token embeddings (serve an embedding model, or one with a pooling type)",
                    rows.len()
                ),
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let model = if reply.model.is_empty() {
        request.model.clone()
    } else {
        reply.model
    };
    Embeddings::checked(
        model,
        vectors,
        request.inputs.len(),
        reply.usage.map_or(0, |u| u.prompt_tokens),
    )
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
    let (text, calls) = choice.map_or((None, None), |c| (c.message.content, c.message.tool_calls));
    let text = text.unwrap_or_default();
    let mut assembler = tools::Assembler::default();
    for (i, mut call) in calls.unwrap_or_default().into_iter().enumerate() {
        call.index = i;
        assembler.push(call)?;
    }
    let calls = assembler.finish()?;
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
    let mut items = Vec::with_capacity(2 + calls.len());
    if !text.is_empty() {
        items.push(Ok(ChatChunk::Delta(text)));
    }
    items.extend(calls.into_iter().map(|c| Ok(ChatChunk::ToolCall(c))));
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
        let mut calls = tools::Assembler::default();
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
                if !send_calls(&tx, std::mem::take(&mut calls)).await {
                    return;
                }
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
                if let Some(content) = choice.delta.content
                    && !content.is_empty()
                {
                    chunks += 1;
                    if tx.send(Ok(ChatChunk::Delta(content))).await.is_err() {
                        return;
                    }
                }
                for fragment in choice.delta.tool_calls.unwrap_or_default() {
                    chunks += 1;
                    if let Err(e) = calls.push(fragment) {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
                if let Some(reason) = choice.finish_reason {
                    finish = Some(reason);
                    // The calls are complete once the choice ends.
                    if !send_calls(&tx, std::mem::take(&mut calls)).await {
                        return;
                    }
                }
            }
        }
        // The connection closed without `[DONE]`: the engine reports a broken stream.
    })
}

/// Sends the calls `assembler` holds as [`ChatChunk::ToolCall`]s; `false` when the
/// stream must end (the receiver is gone, or the calls were broken and their error was
/// sent).
async fn send_calls(
    tx: &tokio::sync::mpsc::Sender<Result<ChatChunk, ProviderError>>,
    assembler: tools::Assembler,
) -> bool {
    if assembler.is_empty() {
        return true;
    }
    match assembler.finish() {
        Ok(calls) => {
            for call in calls {
                if tx.send(Ok(ChatChunk::ToolCall(call))).await.is_err() {
                    return false;
                }
            }
            true
        }
        Err(e) => {
            let _ = tx.send(Err(e)).await;
            false
        }
    }
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
