//! Anthropic's Messages API, natively (not through an OpenAI-compatible shim).
//!
//! Source for every rule here: Anthropic's API docs, "Messages" (the request),
//! "Streaming Messages" (the events), "Errors" ([`errors`]), "Models" (the list),
//! "Extended thinking" and "Tool use" (how tools and thinking combine).
//!
//! Requests: `POST {base}/v1/messages` with `x-api-key` (when a key is configured),
//! `anthropic-version: 2023-06-01` and a JSON body (`wire::MessagesRequest`). The
//! system messages are lifted out of `messages` into the top-level `system` (joined by
//! blank lines: the API has no `system` role); the other messages become alternating
//! `user`/`assistant` turns, consecutive turns of one role merged into one (the API
//! requires alternation). An assistant's tool calls are `tool_use` blocks after its
//! text; tool results are `tool_result` blocks of a `user` turn, so consecutive results
//! go in one turn, placed before any text of that turn (as "Tool use" requires). Blank
//! text is left out (the API refuses empty text blocks). `temperature` is clamped to
//! the API's 0.0 to 1.0.
//!
//! Tools: [`ChatRequest::tools`] go out as `tools` (`input_schema` = the parameters);
//! [`ToolChoice`] `Auto`, `Required` and `Tool(name)` as `tool_choice` `auto`, `any`
//! and `tool`. Structured output ([`ChatRequest::json_schema`]): this API version has no
//! `response_format`, so the schema goes out as one more tool, [`JSON_TOOL`], which the
//! model is forced to call (`tool_choice: {type: tool}`, or `any` when other tools are
//! offered too, so the model either calls a tool or answers): its input, serialized as
//! JSON text, is the reply's text, and no tool call is reported for it. A schema that is
//! not `type: "object"` (which `input_schema` must be) is wrapped as the object's
//! `answer` property and unwrapped on the way back.
//!
//! Thinking: with [`ChatRequest::think`] `Some(true)` the request asks for extended
//! thinking (`thinking: {type: enabled, budget_tokens}`, half of `max_tokens`, at least
//! [`MIN_THINKING_BUDGET`]) and sends no `temperature` (thinking allows none).
//! "Extended thinking" rules out three cases, in which the request goes without
//! thinking: `max_tokens` of [`MIN_THINKING_BUDGET`] or less (the budget must be under
//! it), a forced tool choice (`any`, `tool`: structured output included), and a
//! conversation in a tool-use loop (the last assistant message made tool calls: the API
//! then wants that turn's signed thinking blocks back, which Nexus does not keep).
//! Thinking deltas become [`ChatChunk::Reasoning`], as Ollama's thinking does.
//!
//! Streaming (`Reply`): `message_start` gives the prompt's tokens (`input_tokens`
//! plus the cached ones), text deltas become [`ChatChunk::Delta`]s, a `tool_use`
//! block's `input_json_delta` pieces are joined and parsed at its `content_block_stop`
//! into one [`ChatChunk::ToolCall`] (empty pieces mean `{}`), `message_delta` gives the
//! stop reason and the cumulative output tokens, `message_stop` ends the reply with
//! [`ChatChunk::Done`]. The stop reason is reported in the words of OpenAI's
//! `finish_reason`, which the engine reads (`length` means cut at `max_tokens`):
//! `end_turn`, `stop_sequence` → `stop`; `max_tokens`,
//! `model_context_window_exceeded` → `length`; `tool_use` → `tool_calls` (`stop` when
//! the only call was [`JSON_TOOL`]); `refusal` → `content_filter`; others as sent. `ping`
//! and unknown events are skipped; an `error` event ends the reply as the error its
//! type names ([`errors`]). A proxy that answers one `application/json` message instead
//! of a stream is read too, within a cap.
//!
//! Invariants: the key is sent only as `x-api-key` (marked sensitive, never logged or
//! shown by `Debug`); the reply goes through [`metered`]; no SSE event passes
//! [`http::EVENT_CAP`], the stream not [`http::wire_cap`], the joined tool inputs not
//! the reply's byte ceiling ([`reply_byte_ceiling`]), a non-streamed body not twice that
//! ceiling plus 64 KiB, a model list page not [`http::LIST_BODY_CAP`].

pub mod errors;
mod wire;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use nexus_engine::provider::{
    ChatChunk, ChatRequest, ChatStream, Locality, Message, ModelInfo, Provider, ProviderError,
    ProviderErrorKind, Role, ToolCall, ToolChoice, Usage, metered, reply_byte_ceiling,
};

pub use errors::{classify, from_status};

use crate::http::{self, classify_reqwest, classify_wire};

/// The public API's base URL, without `/v1` (requests go to `{base}/v1/messages`).
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// The `anthropic-version` header every request carries ("Versions": the current and
/// only stable version of the Messages API).
pub const API_VERSION: &str = "2023-06-01";

/// The provider id of an instance without [`AnthropicProvider::with_id`].
pub const DEFAULT_ID: &str = "anthropic";

/// The name of the tool that carries a structured answer ([`ChatRequest::json_schema`]).
pub const JSON_TOOL: &str = "json_answer";

/// The smallest thinking budget the API takes, tokens ("Extended thinking":
/// `budget_tokens` at least 1,024 and under `max_tokens`).
pub const MIN_THINKING_BUDGET: u32 = 1024;

/// Models asked for per page of `GET /v1/models` (the API's most, "List Models").
const MODEL_PAGE_LIMIT: &str = "1000";

/// Most pages of `GET /v1/models` read (16,000 models); past it the list is cut.
pub const MAX_MODEL_PAGES: usize = 16;

/// Anthropic's Messages API (id `anthropic` unless set, cloud).
#[derive(Clone)]
pub struct AnthropicProvider {
    http: reqwest::Client,
    base_url: String,
    api_key: Option<String>,
    models: Vec<String>,
    id: String,
}

impl std::fmt::Debug for AnthropicProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicProvider")
            .field("id", &self.id)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("models", &self.models)
            .finish()
    }
}

impl AnthropicProvider {
    /// A provider for `base_url` (e.g. [`DEFAULT_BASE_URL`]; a trailing `/` or `/v1` is
    /// dropped, since the paths carry `/v1`), sending `api_key` as `x-api-key` when set.
    /// `models` may be empty, in which case `GET /v1/models` lists them.
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
        let base = base_url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        Ok(AnthropicProvider {
            http,
            base_url: base.to_string(),
            api_key,
            models,
            id: DEFAULT_ID.to_string(),
        })
    }

    /// The same provider under the id `id` (`anthropic@team`), so one process can hold
    /// several accounts; model references and [`ModelInfo::provider`] use it.
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// The base URL, without `/v1`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `rb` with the API's headers: `x-api-key` (sensitive) when a key is set, and
    /// `anthropic-version`.
    fn headers(
        &self,
        rb: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let rb = rb.header("anthropic-version", API_VERSION);
        let Some(key) = &self.api_key else {
            return Ok(rb);
        };
        let mut value = reqwest::header::HeaderValue::from_str(key).map_err(|_| {
            ProviderError::new(
                ProviderErrorKind::Auth,
                "the Anthropic API key holds characters an HTTP header cannot carry",
            )
        })?;
        value.set_sensitive(true);
        Ok(rb.header("x-api-key", value))
    }

    fn info(&self, name: String) -> ModelInfo {
        ModelInfo::named(self.id.as_str(), name, Locality::Cloud)
    }

    /// Sends `body` to `/v1/messages`; a non-2xx answer is classified by its error type
    /// ([`from_status`]), with its `Retry-After`.
    async fn send(
        &self,
        body: &wire::MessagesRequest<'_>,
    ) -> Result<reqwest::Response, ProviderError> {
        let rb = self.headers(self.http.post(format!("{}/v1/messages", self.base_url)))?;
        let resp = rb
            .json(body)
            .send()
            .await
            .map_err(|e| classify_reqwest(&e))?;
        checked(resp).await
    }

    /// One page of `GET /v1/models`, after the model `after` (`after_id`).
    async fn models_page(&self, after: Option<&str>) -> Result<wire::ModelList, ProviderError> {
        let mut query = vec![("limit", MODEL_PAGE_LIMIT)];
        if let Some(after) = after {
            query.push(("after_id", after));
        }
        let rb = self.headers(self.http.get(format!("{}/v1/models", self.base_url)))?;
        let resp = rb
            .query(&query)
            .send()
            .await
            .map_err(|e| classify_reqwest(&e))?;
        let resp = checked(resp).await?;
        let body = http::read_capped(resp, http::LIST_BODY_CAP)
            .await
            .map_err(|e| match e {
                crate::Error::Transport(t) => classify_reqwest(&t),
                other => ProviderError::new(
                    ProviderErrorKind::Protocol,
                    format!("bad model list: {other}"),
                ),
            })?;
        serde_json::from_slice(&body).map_err(|e| {
            ProviderError::new(ProviderErrorKind::Protocol, format!("bad model list: {e}"))
        })
    }
}

/// `resp` when its status is 2xx; otherwise its error, classified by [`from_status`],
/// with its `Retry-After`.
async fn checked(resp: reqwest::Response) -> Result<reqwest::Response, ProviderError> {
    http::checked(resp, from_status).await
}

#[async_trait]
impl Provider for AnthropicProvider {
    fn id(&self) -> &str {
        &self.id
    }

    fn locality(&self) -> Locality {
        Locality::Cloud
    }

    fn display_name(&self) -> &str {
        "Anthropic"
    }

    /// The configured models, without a request; else `GET /v1/models`, page after
    /// page (at most [`MAX_MODEL_PAGES`]).
    async fn list_models(&self) -> Result<Vec<ModelInfo>, ProviderError> {
        if !self.models.is_empty() {
            return Ok(self.models.iter().map(|m| self.info(m.clone())).collect());
        }
        let mut models = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_MODEL_PAGES {
            let page = self.models_page(after.as_deref()).await?;
            models.extend(page.data.into_iter().map(|m| self.info(m.id)));
            match (page.has_more, page.last_id) {
                (true, Some(last)) => after = Some(last),
                _ => return Ok(models),
            }
        }
        tracing::warn!(
            provider = %self.id,
            "the model list has more than {MAX_MODEL_PAGES} pages; the rest is left out"
        );
        Ok(models)
    }

    /// Every model takes tools: the Messages API defines `tools` for all of them.
    fn native_tool_calls(&self, _model: &ModelInfo) -> bool {
        true
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatStream, ProviderError> {
        let body = messages_body(&request);
        let resp = self.send(&body).await?;
        let reply = Reply::new(&request);
        let max_tokens = request.max_tokens;
        let is_json = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim_start().starts_with("application/json"));
        if is_json {
            return Ok(metered(
                whole_reply(resp, reply, max_tokens).await?,
                max_tokens,
            ));
        }
        Ok(metered(stream_reply(resp, reply, max_tokens), max_tokens))
    }
}

/// How a structured answer travels in [`JSON_TOOL`]'s input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JsonAnswer {
    /// The schema is an object schema: the input is the answer.
    Whole,
    /// The schema is not: the input is `{"answer": <the answer>}`.
    Wrapped,
}

impl JsonAnswer {
    fn of(schema: &serde_json::Value) -> Self {
        if schema.get("type").and_then(serde_json::Value::as_str) == Some("object") {
            JsonAnswer::Whole
        } else {
            JsonAnswer::Wrapped
        }
    }
}

/// The body of `POST /v1/messages` for `request` (the rules of this module's header).
fn messages_body(request: &ChatRequest) -> wire::MessagesRequest<'_> {
    let (system, messages) = turns(&request.messages);
    let mut tools: Vec<wire::Tool<'_>> = request
        .tools
        .iter()
        .map(|t| wire::Tool {
            name: &t.name,
            description: &t.description,
            input_schema: Cow::Borrowed(&t.parameters),
        })
        .collect();
    let offered = !tools.is_empty();
    if let Some(schema) = &request.json_schema {
        let input_schema = match JsonAnswer::of(schema) {
            JsonAnswer::Whole => Cow::Borrowed(schema),
            JsonAnswer::Wrapped => Cow::Owned(serde_json::json!({
                "type": "object",
                "properties": {"answer": schema},
                "required": ["answer"],
            })),
        };
        tools.push(wire::Tool {
            name: JSON_TOOL,
            description: "Give your answer: its input is the answer, as JSON following the schema.",
            input_schema,
        });
    }
    let tool_choice = match (request.json_schema.is_some(), offered, &request.tool_choice) {
        (false, false, _) => None,
        (true, false, _) => Some(wire::ToolChoice::Tool { name: JSON_TOOL }),
        (_, true, ToolChoice::Tool(name)) => Some(wire::ToolChoice::Tool { name }),
        (true, true, _) | (false, true, ToolChoice::Required) => Some(wire::ToolChoice::Any),
        (false, true, ToolChoice::Auto) => Some(wire::ToolChoice::Auto),
    };
    let thinking = thinking(
        request,
        tool_choice.as_ref().is_some_and(wire::ToolChoice::forces),
    );
    let temperature = (thinking.is_none() && request.temperature.is_finite())
        .then(|| request.temperature.clamp(0.0, 1.0));
    wire::MessagesRequest {
        model: &request.model,
        max_tokens: request.max_tokens,
        system,
        messages,
        temperature,
        stream: true,
        tools,
        tool_choice,
        thinking,
    }
}

/// The `thinking` of `request`: asked for, and none of the cases "Extended thinking"
/// rules out (a budget that cannot be under `max_tokens`, a forced tool choice, a
/// tool-use loop whose thinking blocks Nexus did not keep).
fn thinking(request: &ChatRequest, forced_tool: bool) -> Option<wire::Thinking> {
    if request.think != Some(true) || forced_tool || request.max_tokens <= MIN_THINKING_BUDGET {
        return None;
    }
    let in_tool_loop = request
        .messages
        .iter()
        .rev()
        .find(|m| m.role == Role::Assistant)
        .is_some_and(|m| !m.tool_calls.is_empty());
    if in_tool_loop {
        return None;
    }
    Some(wire::Thinking {
        kind: "enabled",
        budget_tokens: (request.max_tokens / 2).max(MIN_THINKING_BUDGET),
    })
}

/// A text block of `text`, none when it is blank.
fn text_block(text: &str) -> Option<wire::ContentBlockParam<'_>> {
    (!text.trim().is_empty()).then_some(wire::ContentBlockParam::Text { text })
}

/// The system prompt (the system messages joined by blank lines) and the turns of
/// `messages`: merged by role, tool results first in their turn.
fn turns(messages: &[Message]) -> (Option<String>, Vec<wire::MessageParam<'_>>) {
    let mut system: Vec<&str> = Vec::new();
    let mut turns: Vec<wire::MessageParam<'_>> = Vec::new();
    for m in messages {
        let (role, blocks): (&'static str, Vec<wire::ContentBlockParam<'_>>) = match m.role {
            Role::System => {
                if !m.content.trim().is_empty() {
                    system.push(&m.content);
                }
                continue;
            }
            Role::User => ("user", text_block(&m.content).into_iter().collect()),
            Role::Assistant => {
                let mut blocks: Vec<_> = text_block(&m.content).into_iter().collect();
                blocks.extend(
                    m.tool_calls
                        .iter()
                        .map(|c| wire::ContentBlockParam::ToolUse {
                            id: &c.id,
                            name: &c.name,
                            // `input` must be an object; a call Nexus holds is one when the model
                            // followed its schema.
                            input: if c.arguments.is_object() {
                                Cow::Borrowed(&c.arguments)
                            } else {
                                Cow::Owned(serde_json::Value::Object(serde_json::Map::new()))
                            },
                        }),
                );
                ("assistant", blocks)
            }
            // A result without the id of its call cannot be a `tool_result`: its text.
            Role::Tool => match m.tool_call_id.as_deref() {
                Some(id) => (
                    "user",
                    vec![wire::ContentBlockParam::ToolResult {
                        tool_use_id: id,
                        content: &m.content,
                    }],
                ),
                None => ("user", text_block(&m.content).into_iter().collect()),
            },
        };
        if blocks.is_empty() {
            continue;
        }
        match turns.last_mut() {
            Some(turn) if turn.role == role => turn.content.extend(blocks),
            _ => turns.push(wire::MessageParam {
                role,
                content: blocks,
            }),
        }
    }
    for turn in &mut turns {
        // Stable: the results keep their order, and so does the text.
        turn.content
            .sort_by_key(|b| !matches!(b, wire::ContentBlockParam::ToolResult { .. }));
    }
    let system = (!system.is_empty()).then(|| system.join("\n\n"));
    (system, turns)
}

/// A `tool_use` block being streamed.
#[derive(Debug)]
struct ToolBlock {
    id: String,
    name: String,
    /// The block's `input` as it opened (`{}` in a stream).
    input: serde_json::Value,
    /// The joined `partial_json` pieces.
    json: String,
}

/// What one reply has seen so far, turning the API's events into chunks.
#[derive(Debug)]
struct Reply {
    /// How the structured answer travels, when the request had a schema.
    json: Option<JsonAnswer>,
    /// Most bytes of tool input JSON held for the reply (its byte ceiling).
    input_cap: usize,
    /// Bytes of tool input JSON received so far.
    input_bytes: usize,
    /// Open `tool_use` blocks by index.
    tools: BTreeMap<usize, ToolBlock>,
    usage: wire::WireUsage,
    stop_reason: Option<String>,
    /// Tool calls passed on (not counting [`JSON_TOOL`]).
    calls: usize,
}

impl Reply {
    fn new(request: &ChatRequest) -> Self {
        Reply {
            json: request.json_schema.as_ref().map(JsonAnswer::of),
            input_cap: reply_byte_ceiling(request.max_tokens),
            input_bytes: 0,
            tools: BTreeMap::new(),
            usage: wire::WireUsage::default(),
            stop_reason: None,
            calls: 0,
        }
    }

    /// The chunk `event` gives, if any ([`ChatChunk::Done`] at `message_stop`).
    ///
    /// # Errors
    /// The API's error of an `error` event; [`ProviderErrorKind::Protocol`] for a tool
    /// input piece of a block that is not a `tool_use` block, or a tool block without a
    /// name; [`ProviderErrorKind::OversizedReply`] when the tool inputs pass the reply's
    /// byte ceiling; [`ProviderErrorKind::InvalidOutput`] naming the tool for an input
    /// that is not JSON.
    fn on(&mut self, event: wire::StreamEvent) -> Result<Option<ChatChunk>, ProviderError> {
        use wire::{BlockDelta, ContentBlock, StreamEvent};
        Ok(match event {
            StreamEvent::MessageStart { message } => {
                self.usage = message.usage;
                None
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                ContentBlock::Text { text } => (!text.is_empty()).then_some(ChatChunk::Delta(text)),
                ContentBlock::Thinking { thinking } => {
                    (!thinking.is_empty()).then_some(ChatChunk::Reasoning(thinking))
                }
                ContentBlock::ToolUse { id, name, input } => {
                    self.tools.insert(
                        index,
                        ToolBlock {
                            id,
                            name,
                            input,
                            json: String::new(),
                        },
                    );
                    None
                }
                ContentBlock::Other => None,
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => {
                    (!text.is_empty()).then_some(ChatChunk::Delta(text))
                }
                BlockDelta::ThinkingDelta { thinking } => {
                    (!thinking.is_empty()).then_some(ChatChunk::Reasoning(thinking))
                }
                BlockDelta::InputJsonDelta { partial_json } => {
                    self.input_bytes = self.input_bytes.saturating_add(partial_json.len());
                    if self.input_bytes > self.input_cap {
                        return Err(ProviderError::new(
                            ProviderErrorKind::OversizedReply,
                            format!(
                                "the tool inputs of the reply passed {} bytes; Nexus stopped reading the reply",
                                self.input_cap
                            ),
                        ));
                    }
                    let Some(block) = self.tools.get_mut(&index) else {
                        return Err(ProviderError::new(
                            ProviderErrorKind::Protocol,
                            format!(
                                "an input_json_delta for content block {index}, which is not a tool_use block"
                            ),
                        ));
                    };
                    block.json.push_str(&partial_json);
                    None
                }
                BlockDelta::Other => None,
            },
            StreamEvent::ContentBlockStop { index } => match self.tools.remove(&index) {
                Some(block) => Some(self.finish_tool(block)?),
                None => None,
            },
            StreamEvent::MessageDelta { delta, usage } => {
                if delta.stop_reason.is_some() {
                    self.stop_reason = delta.stop_reason;
                }
                if let Some(u) = usage {
                    // Cumulative: each count sent replaces the one held.
                    let held = &mut self.usage;
                    held.input_tokens = u.input_tokens.or(held.input_tokens);
                    held.output_tokens = u.output_tokens.or(held.output_tokens);
                    held.cache_creation_input_tokens = u
                        .cache_creation_input_tokens
                        .or(held.cache_creation_input_tokens);
                    held.cache_read_input_tokens =
                        u.cache_read_input_tokens.or(held.cache_read_input_tokens);
                }
                None
            }
            StreamEvent::MessageStop => Some(self.done()),
            StreamEvent::Error { error } => return Err(errors::from_event(&error)),
            StreamEvent::Ping | StreamEvent::Other => None,
        })
    }

    /// The chunk of a complete `tool_use` block: the structured answer's text for
    /// [`JSON_TOOL`] when the request had a schema, else a [`ChatChunk::ToolCall`].
    fn finish_tool(&mut self, block: ToolBlock) -> Result<ChatChunk, ProviderError> {
        if block.name.is_empty() {
            return Err(ProviderError::new(
                ProviderErrorKind::Protocol,
                "a tool_use block of the reply has no name",
            ));
        }
        let input = if block.json.trim().is_empty() {
            match block.input {
                v @ serde_json::Value::Object(_) => v,
                _ => serde_json::Value::Object(serde_json::Map::new()),
            }
        } else {
            serde_json::from_str(&block.json).map_err(|e| {
                ProviderError::new(
                    ProviderErrorKind::InvalidOutput,
                    format!(
                        "the input of the call of tool `{}` is not complete JSON ({e}): {}",
                        block.name,
                        &block.json[..block.json.floor_char_boundary(200)]
                    ),
                )
            })?
        };
        if let Some(shape) = self.json
            && block.name == JSON_TOOL
        {
            let answer = match (shape, input) {
                (JsonAnswer::Wrapped, serde_json::Value::Object(mut m)) => {
                    m.remove("answer").unwrap_or(serde_json::Value::Object(m))
                }
                (_, input) => input,
            };
            return Ok(ChatChunk::Delta(answer.to_string()));
        }
        let id = if block.id.is_empty() {
            ToolCall::fallback_id(self.calls)
        } else {
            block.id
        };
        self.calls += 1;
        Ok(ChatChunk::ToolCall(ToolCall {
            id,
            name: block.name,
            arguments: input,
        }))
    }

    /// The reply's end: its counts and its stop reason in `finish_reason` words.
    fn done(&self) -> ChatChunk {
        let u = self.usage;
        let prompt_tokens = u.input_tokens.unwrap_or(0)
            + u.cache_creation_input_tokens.unwrap_or(0)
            + u.cache_read_input_tokens.unwrap_or(0);
        let finish_reason = self.stop_reason.as_deref().map(|r| {
            match r {
                "end_turn" | "stop_sequence" => "stop",
                "max_tokens" | "model_context_window_exceeded" => "length",
                "tool_use" if self.calls > 0 => "tool_calls",
                "tool_use" => "stop",
                "refusal" => "content_filter",
                other => other,
            }
            .to_string()
        });
        ChatChunk::Done {
            usage: Usage {
                prompt_tokens,
                completion_tokens: u.output_tokens.unwrap_or(0),
            },
            finish_reason,
        }
    }

    /// The chunks of a whole (non-streamed) message, `Done` last.
    fn whole(mut self, message: wire::WholeMessage) -> Vec<Result<ChatChunk, ProviderError>> {
        let mut items = Vec::with_capacity(message.content.len() + 1);
        for block in message.content {
            let item = match block {
                wire::ContentBlock::Text { text } if !text.is_empty() => Ok(ChatChunk::Delta(text)),
                wire::ContentBlock::Thinking { thinking } if !thinking.is_empty() => {
                    Ok(ChatChunk::Reasoning(thinking))
                }
                wire::ContentBlock::ToolUse { id, name, input } => self.finish_tool(ToolBlock {
                    id,
                    name,
                    input,
                    json: String::new(),
                }),
                _ => continue,
            };
            let failed = item.is_err();
            items.push(item);
            if failed {
                return items;
            }
        }
        self.usage = message.usage;
        self.stop_reason = message.stop_reason;
        items.push(Ok(self.done()));
        items
    }
}

/// Reads a non-streamed message (a proxy that ignored `stream: true`): at most twice
/// the reply's byte ceiling plus 64 KiB of JSON.
async fn whole_reply(
    resp: reqwest::Response,
    reply: Reply,
    max_tokens: u32,
) -> Result<ChatStream, ProviderError> {
    let cap = reply_byte_ceiling(max_tokens)
        .saturating_mul(2)
        .saturating_add(64 << 10);
    let body = http::read_capped(resp, cap)
        .await
        .map_err(|e| classify_wire(&e))?;
    let message: wire::WholeMessage = serde_json::from_slice(&body).map_err(|e| {
        match serde_json::from_slice::<wire::ErrorBody>(&body) {
            Ok(b) => errors::from_event(&b.error),
            Err(_) => ProviderError::new(ProviderErrorKind::Protocol, format!("bad message: {e}")),
        }
    })?;
    drop(body);
    Ok(Box::pin(futures::stream::iter(reply.whole(message))))
}

/// Reads the event stream: no event over [`http::EVENT_CAP`], no more than
/// [`http::wire_cap`] bytes in all. The stream ends after `Done` or the first error;
/// a connection that closes before `message_stop` just ends it (the engine reports a
/// broken stream). Dropping it drops the response, which closes the connection.
fn stream_reply(resp: reqwest::Response, reply: Reply, max_tokens: u32) -> ChatStream {
    let events =
        Box::pin(http::sse_capped(resp, http::EVENT_CAP, http::wire_cap(max_tokens)).eventsource());
    Box::pin(futures::stream::unfold(
        Some((events, reply)),
        |state| async move {
            let (mut events, mut reply) = state?;
            loop {
                let event = match events.next().await? {
                    Ok(event) => event,
                    Err(e) => return Some((Err(broken(e)), None)),
                };
                if event.data.trim().is_empty() {
                    continue;
                }
                let parsed: wire::StreamEvent = match serde_json::from_str(&event.data) {
                    Ok(p) => p,
                    Err(e) => {
                        let err = ProviderError::new(
                            ProviderErrorKind::Protocol,
                            format!("bad `{}` event: {e}", event.event),
                        );
                        return Some((Err(err), None));
                    }
                };
                match reply.on(parsed) {
                    Ok(None) => {}
                    Ok(Some(done @ ChatChunk::Done { .. })) => return Some((Ok(done), None)),
                    Ok(Some(chunk)) => return Some((Ok(chunk), Some((events, reply)))),
                    Err(e) => return Some((Err(e), None)),
                }
            }
        },
    ))
}

/// The error of an event stream that broke: the caps' errors as themselves, a broken
/// connection or bad framing as a protocol error.
fn broken(e: eventsource_stream::EventStreamError<crate::Error>) -> ProviderError {
    match e {
        eventsource_stream::EventStreamError::Transport(crate::Error::Transport(t)) => {
            ProviderError::new(
                ProviderErrorKind::Protocol,
                format!("the event stream broke: {}", classify_reqwest(&t).message),
            )
        }
        eventsource_stream::EventStreamError::Transport(other) => classify_wire(&other),
        other => ProviderError::new(
            ProviderErrorKind::Protocol,
            format!("the event stream broke: {other}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nexus_engine::provider::ToolSpec;
    use serde_json::{Value, json};

    fn body(request: &ChatRequest) -> Value {
        serde_json::to_value(messages_body(request)).unwrap()
    }

    fn call(id: &str, name: &str, arguments: Value) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: name.into(),
            arguments,
        }
    }

    fn weather() -> ToolSpec {
        ToolSpec {
            name: "get_weather".into(),
            description: "Get the current weather in a given location".into(),
            parameters: json!({"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}),
        }
    }

    #[test]
    fn system_messages_are_lifted_out_and_tool_results_share_one_user_turn() {
        let a = call("toolu_a", "get_weather", json!({"location": "Paris"}));
        let b = call("toolu_b", "get_weather", json!({"location": "Rome"}));
        let mut request = ChatRequest::new(
            "claude-sonnet-4-5",
            vec![
                Message::system("You are brief."),
                Message::system("Answer in English."),
                Message::user("Weather in Paris and Rome?"),
                Message::assistant_tool_calls("Checking both.", vec![a.clone(), b.clone()]),
                Message::tool_result(&a, "18 C, rain"),
                Message::tool_result(&b, "25 C, sun"),
                Message::user("And which is warmer?"),
            ],
            256,
        );
        request.tools = vec![weather()];
        request.temperature = 0.3;
        let body = body(&request);
        assert_eq!(body["system"], "You are brief.\n\nAnswer in English.");
        assert_eq!(body["stream"], true);
        assert_eq!(body["max_tokens"], 256);
        assert_eq!(body["model"], "claude-sonnet-4-5");
        assert!((body["temperature"].as_f64().unwrap() - 0.3).abs() < 1e-6);
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Rome?"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Checking both."},
                    {"type": "tool_use", "id": "toolu_a", "name": "get_weather", "input": {"location": "Paris"}},
                    {"type": "tool_use", "id": "toolu_b", "name": "get_weather", "input": {"location": "Rome"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_a", "content": "18 C, rain"},
                    {"type": "tool_result", "tool_use_id": "toolu_b", "content": "25 C, sun"},
                    {"type": "text", "text": "And which is warmer?"}
                ]}
            ])
        );
        assert_eq!(
            body["tools"],
            json!([{
                "name": "get_weather",
                "description": "Get the current weather in a given location",
                "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}
            }])
        );
        assert_eq!(body["tool_choice"], json!({"type": "auto"}));
        assert!(body.get("thinking").is_none());
    }

    #[test]
    fn same_role_messages_merge_blank_text_is_dropped_and_results_come_first() {
        let a = call("toolu_a", "t", json!(null));
        let request = ChatRequest::new(
            "m",
            vec![
                Message::user("one"),
                Message::user("  "),
                Message::user("two"),
                Message::assistant_tool_calls("", vec![a.clone()]),
                Message::user("before the result"),
                Message::tool_result(&a, ""),
                Message::assistant(""),
                Message::assistant("done"),
            ],
            64,
        );
        let body = body(&request);
        assert_eq!(
            body["messages"],
            json!([
                {"role": "user", "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}]},
                // Arguments that are not an object go out as `{}` (`input` must be one).
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_a", "name": "t", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_a"},
                    {"type": "text", "text": "before the result"}
                ]},
                {"role": "assistant", "content": [{"type": "text", "text": "done"}]}
            ])
        );
        assert!(body.get("system").is_none());
        assert!(body.get("tools").is_none());
        assert!(body.get("tool_choice").is_none());
    }

    #[test]
    fn tool_choice_maps_to_auto_any_and_tool() {
        let mut request = ChatRequest::new("m", vec![Message::user("hi")], 64);
        request.tools = vec![weather()];
        for (choice, want) in [
            (ToolChoice::Auto, json!({"type": "auto"})),
            (ToolChoice::Required, json!({"type": "any"})),
            (
                ToolChoice::Tool("get_weather".into()),
                json!({"type": "tool", "name": "get_weather"}),
            ),
        ] {
            request.tool_choice = choice.clone();
            assert_eq!(body(&request)["tool_choice"], want, "{choice:?}");
        }
    }

    #[test]
    fn a_json_schema_is_one_forced_tool() {
        let schema = json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
        let mut request = ChatRequest::new("m", vec![Message::user("Where?")], 64);
        request.json_schema = Some(schema.clone());
        let b = body(&request);
        assert_eq!(b["tools"].as_array().map(Vec::len), Some(1));
        assert_eq!(b["tools"][0]["name"], JSON_TOOL);
        assert_eq!(b["tools"][0]["input_schema"], schema);
        assert_eq!(b["tool_choice"], json!({"type": "tool", "name": JSON_TOOL}));
        assert!(b.get("response_format").is_none());
        // A schema that is not an object's is the `answer` of one.
        request.json_schema = Some(json!({"type": "array", "items": {"type": "string"}}));
        let b = body(&request);
        assert_eq!(
            b["tools"][0]["input_schema"],
            json!({"type": "object", "properties": {"answer": {"type": "array", "items": {"type": "string"}}}, "required": ["answer"]})
        );
        // With tools offered too: some tool must be called, the answer's or another.
        request.tools = vec![weather()];
        let b = body(&request);
        assert_eq!(b["tools"][0]["name"], "get_weather");
        assert_eq!(b["tools"][1]["name"], JSON_TOOL);
        assert_eq!(b["tool_choice"], json!({"type": "any"}));
    }

    #[test]
    fn thinking_is_asked_only_where_the_api_allows_it() {
        let mut request = ChatRequest::new("m", vec![Message::user("Think.")], 4096);
        request.think = Some(true);
        let b = body(&request);
        assert_eq!(
            b["thinking"],
            json!({"type": "enabled", "budget_tokens": 2048})
        );
        assert!(
            b.get("temperature").is_none(),
            "thinking takes no temperature"
        );
        request.max_tokens = 1500;
        assert_eq!(body(&request)["thinking"]["budget_tokens"], 1024);
        // Too small a budget, a forced tool, a tool-use loop: no thinking.
        request.max_tokens = 1024;
        assert!(body(&request).get("thinking").is_none());
        request.max_tokens = 4096;
        request.json_schema = Some(json!({"type": "object"}));
        assert!(body(&request).get("thinking").is_none());
        request.json_schema = None;
        let c = call("toolu_1", "get_weather", json!({}));
        request
            .messages
            .push(Message::assistant_tool_calls("", vec![c.clone()]));
        request.messages.push(Message::tool_result(&c, "sunny"));
        assert!(body(&request).get("thinking").is_none());
        assert!(body(&request).get("temperature").is_some());
        // Not asked: none.
        let mut plain = ChatRequest::new("m", vec![Message::user("hi")], 4096);
        plain.temperature = 1.7;
        let b = body(&plain);
        assert!(b.get("thinking").is_none());
        assert_eq!(b["temperature"], 1.0, "clamped to the API's range");
    }

    fn event(data: Value) -> wire::StreamEvent {
        serde_json::from_value(data).unwrap()
    }

    /// The chunks `events` give, the error that ended them last.
    fn run(request: &ChatRequest, events: Vec<Value>) -> Vec<Result<ChatChunk, ProviderError>> {
        let mut reply = Reply::new(request);
        let mut out = Vec::new();
        for e in events {
            match reply.on(event(e)) {
                Ok(Some(c)) => out.push(Ok(c)),
                Ok(None) => {}
                Err(e) => {
                    out.push(Err(e));
                    break;
                }
            }
        }
        out
    }

    fn start(input_tokens: u64) -> Value {
        json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": input_tokens, "output_tokens": 1}}})
    }

    fn stop(reason: &str, output_tokens: u64) -> [Value; 2] {
        [
            json!({"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": null}, "usage": {"output_tokens": output_tokens}}),
            json!({"type": "message_stop"}),
        ]
    }

    #[test]
    fn events_become_text_reasoning_a_tool_call_and_done() {
        let request = ChatRequest::new("m", vec![Message::user("hi")], 256);
        let mut events = vec![
            start(472),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm."}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "EqQB"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Okay"}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": ", checking."}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {}}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": ""}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"locat"}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "ion\": \"San Fra"}}),
            json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "ncisco, CA\"}"}}),
            json!({"type": "content_block_stop", "index": 2}),
            json!({"type": "some_future_event", "whatever": 1}),
        ];
        events.extend(stop("tool_use", 89));
        let out = run(&request, events);
        assert_eq!(
            out,
            vec![
                Ok(ChatChunk::Reasoning("Hmm.".into())),
                Ok(ChatChunk::Delta("Okay".into())),
                Ok(ChatChunk::Delta(", checking.".into())),
                Ok(ChatChunk::ToolCall(call(
                    "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "get_weather",
                    json!({"location": "San Francisco, CA"})
                ))),
                Ok(ChatChunk::Done {
                    usage: Usage {
                        prompt_tokens: 472,
                        completion_tokens: 89
                    },
                    finish_reason: Some("tool_calls".into())
                }),
            ]
        );
    }

    #[test]
    fn stop_reasons_are_reported_as_finish_reasons() {
        let request = ChatRequest::new("m", vec![Message::user("hi")], 256);
        for (reason, want) in [
            ("end_turn", "stop"),
            ("stop_sequence", "stop"),
            ("max_tokens", "length"),
            ("model_context_window_exceeded", "length"),
            ("tool_use", "stop"),
            ("refusal", "content_filter"),
            ("pause_turn", "pause_turn"),
        ] {
            let mut events = vec![start(3)];
            events.extend(stop(reason, 5));
            let out = run(&request, events);
            assert!(
                matches!(&out[..], [Ok(ChatChunk::Done { finish_reason: Some(f), .. })] if f == want),
                "{reason}: {out:?}"
            );
        }
    }

    #[test]
    fn cached_prompt_tokens_count_and_a_tool_without_input_has_empty_arguments() {
        let request = ChatRequest::new("m", vec![Message::user("hi")], 256);
        let mut events = vec![
            json!({"type": "message_start", "message": {"usage": {"input_tokens": 5, "cache_creation_input_tokens": 100, "cache_read_input_tokens": 20, "output_tokens": 1}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "", "name": "now", "input": {}}}),
            json!({"type": "content_block_stop", "index": 0}),
        ];
        events.extend(stop("tool_use", 7));
        let out = run(&request, events);
        assert_eq!(
            out,
            vec![
                Ok(ChatChunk::ToolCall(call("call_0", "now", json!({})))),
                Ok(ChatChunk::Done {
                    usage: Usage {
                        prompt_tokens: 125,
                        completion_tokens: 7
                    },
                    finish_reason: Some("tool_calls".into())
                }),
            ]
        );
    }

    #[test]
    fn the_forced_answer_tool_becomes_the_text_and_no_call() {
        let mut request = ChatRequest::new("m", vec![Message::user("Where?")], 256);
        request.json_schema =
            Some(json!({"type": "object", "properties": {"city": {"type": "string"}}}));
        let mut events = vec![
            start(10),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_x", "name": JSON_TOOL, "input": {}}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"ci"}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "ty\": \"Oslo\"}"}}),
            json!({"type": "content_block_stop", "index": 0}),
        ];
        events.extend(stop("tool_use", 12));
        let out = run(&request, events);
        assert_eq!(out[0], Ok(ChatChunk::Delta(r#"{"city":"Oslo"}"#.into())));
        assert!(
            matches!(&out[1], Ok(ChatChunk::Done { finish_reason: Some(f), .. }) if f == "stop"),
            "{out:?}"
        );
        // A wrapped schema's answer is unwrapped.
        request.json_schema = Some(json!({"type": "string"}));
        let mut events = vec![
            start(10),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_x", "name": JSON_TOOL, "input": {}}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": "{\"answer\": \"Oslo\"}"}}),
            json!({"type": "content_block_stop", "index": 0}),
        ];
        events.extend(stop("tool_use", 12));
        assert_eq!(
            run(&request, events)[0],
            Ok(ChatChunk::Delta("\"Oslo\"".into()))
        );
    }

    #[test]
    fn broken_inputs_errors_and_floods_end_the_reply_with_their_class() {
        let request = ChatRequest::new("m", vec![Message::user("hi")], 1);
        let opening = json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "get_weather", "input": {}}});
        let piece = |s: &str| json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": s}});
        let kind = |out: Vec<Result<ChatChunk, ProviderError>>| {
            out.last()
                .and_then(|r| r.as_ref().err())
                .map(|e| (e.kind, e.message.clone()))
        };
        let cut = kind(run(
            &request,
            vec![
                start(1),
                opening.clone(),
                piece("{\"loc"),
                json!({"type": "content_block_stop", "index": 0}),
            ],
        ));
        assert!(
            cut.as_ref().is_some_and(
                |(k, m)| *k == ProviderErrorKind::InvalidOutput && m.contains("`get_weather`")
            ),
            "{cut:?}"
        );
        let overloaded = kind(run(
            &request,
            vec![
                start(1),
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ],
        ));
        assert_eq!(
            overloaded.map(|(k, _)| k),
            Some(ProviderErrorKind::Transient)
        );
        // max_tokens 1: the ceiling is 17 tokens of 256 bytes.
        let flood = "x".repeat(17 * 256 + 1);
        let flooded = kind(run(&request, vec![start(1), opening, piece(&flood)]));
        assert_eq!(
            flooded.map(|(k, _)| k),
            Some(ProviderErrorKind::OversizedReply)
        );
        let stray = kind(run(&request, vec![start(1), piece("{}")]));
        assert_eq!(stray.map(|(k, _)| k), Some(ProviderErrorKind::Protocol));
    }

    #[test]
    fn a_whole_message_gives_the_same_chunks() {
        let request = ChatRequest::new("m", vec![Message::user("hi")], 256);
        let message: wire::WholeMessage = serde_json::from_value(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
            "content": [
                {"type": "text", "text": "Sure."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"location": "Oslo"}},
                {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 9, "output_tokens": 4}
        }))
        .unwrap();
        assert_eq!(
            Reply::new(&request).whole(message),
            vec![
                Ok(ChatChunk::Delta("Sure.".into())),
                Ok(ChatChunk::ToolCall(call(
                    "toolu_1",
                    "get_weather",
                    json!({"location": "Oslo"})
                ))),
                Ok(ChatChunk::Done {
                    usage: Usage {
                        prompt_tokens: 9,
                        completion_tokens: 4
                    },
                    finish_reason: Some("tool_calls".into())
                }),
            ]
        );
    }

    #[test]
    fn the_key_stays_out_of_debug_and_the_base_url_loses_v1() {
        let p = AnthropicProvider::new(
            "https://api.anthropic.com/v1/",
            Some("sk-ant-secret".into()),
            vec![],
        )
        .unwrap()
        .with_id("anthropic@team");
        let shown = format!("{p:?}");
        assert!(!shown.contains("sk-ant-secret"), "{shown}");
        assert!(shown.contains("<set>"), "{shown}");
        assert_eq!(p.base_url(), DEFAULT_BASE_URL);
        assert_eq!(p.id(), "anthropic@team");
        assert_eq!(p.display_name(), "Anthropic");
        let plain = AnthropicProvider::new(DEFAULT_BASE_URL, None, vec![]).unwrap();
        assert_eq!(plain.id(), DEFAULT_ID);
        assert_eq!(plain.locality(), Locality::Cloud);
    }

    #[tokio::test]
    async fn a_configured_model_list_is_returned_without_a_request() {
        // Port 9 (discard) on loopback: any request would fail.
        let p = AnthropicProvider::new(
            "http://127.0.0.1:9",
            None,
            vec!["claude-a".into(), "claude-b".into()],
        )
        .unwrap()
        .with_id("anthropic@team");
        let models = p.list_models().await.unwrap();
        let names: Vec<_> = models
            .iter()
            .map(|m| (m.provider.as_str(), m.name.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("anthropic@team", "claude-a"),
                ("anthropic@team", "claude-b")
            ]
        );
        assert!(p.native_tool_calls(&models[0]));
        assert!(!p.can_embed());
    }
}
