//! Wire types of Anthropic's Messages API (`anthropic-version: 2023-06-01`): the request
//! of `POST /v1/messages`, the Server-Sent Events of its stream, the non-streamed
//! message, the model list and the error body. Only the fields Nexus reads or sends;
//! each type names the fields it leaves out. Source: Anthropic's API docs, "Messages"
//! (request, content blocks, `tool_choice`, `thinking`), "Streaming Messages" (event
//! types and deltas), "Models" (list) and "Errors" (error shapes).
//!
//! Invariant: reading is lenient where the docs promise growth (new event types, new
//! content block and delta types read as `Other` and are skipped, as "Streaming
//! Messages" asks clients to do) and strict where Nexus depends on a field (a tool
//! block's `id` and `name`).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// The body of `POST /v1/messages` ("Messages", "Create a Message"). Left out:
/// `stop_sequences`, `top_p`, `top_k`, `metadata`, `service_tier`.
#[derive(Serialize, Debug)]
pub(crate) struct MessagesRequest<'a> {
    pub model: &'a str,
    /// Most tokens to generate (thinking included), at least 1.
    pub max_tokens: u32,
    /// The system prompt: the API has no `system` role in `messages`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// Alternating `user` and `assistant` turns (consecutive turns of one role are
    /// merged by the API's rules anyway; Nexus sends them merged).
    pub messages: Vec<MessageParam<'a>>,
    /// 0.0 to 1.0; absent with `thinking` ("Extended thinking": thinking is not
    /// compatible with temperature changes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    pub stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool<'a>>,
    /// Only with tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<Thinking>,
}

/// One turn: `{"role": "user" | "assistant", "content": [blocks]}`.
#[derive(Serialize, Debug)]
pub(crate) struct MessageParam<'a> {
    pub role: &'static str,
    pub content: Vec<ContentBlockParam<'a>>,
}

/// A content block of a request turn. Left out: `image`, `document`, `thinking` (Nexus
/// keeps no thinking signatures), `cache_control`.
#[derive(Serialize, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ContentBlockParam<'a> {
    /// `{"type": "text", "text"}`: never empty or only whitespace (the API refuses
    /// such blocks).
    Text { text: &'a str },
    /// `{"type": "tool_use", "id", "name", "input"}`: a call the assistant made;
    /// `input` is an object.
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: Cow<'a, serde_json::Value>,
    },
    /// `{"type": "tool_result", "tool_use_id", "content"}`: the result of the call
    /// `tool_use_id`, in a `user` turn, before any text of that turn. `is_error` is
    /// left out: a Nexus tool result carries no error flag.
    ToolResult {
        tool_use_id: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        content: &'a str,
    },
}

/// A tool offered: `{"name", "description", "input_schema"}`; `input_schema` is a JSON
/// Schema of `type: "object"`.
#[derive(Serialize, Debug)]
pub(crate) struct Tool<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub description: &'a str,
    pub input_schema: Cow<'a, serde_json::Value>,
}

/// `tool_choice`: `{"type": "auto"}`, `{"type": "any"}` (some tool must be called) or
/// `{"type": "tool", "name"}` (this one). Left out: `none` (Nexus then offers no tools)
/// and `disable_parallel_tool_use`.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ToolChoice<'a> {
    Auto,
    Any,
    Tool { name: &'a str },
}

impl ToolChoice<'_> {
    /// Whether the choice forces a tool call (`any`, `tool`), which extended thinking
    /// does not allow.
    pub fn forces(&self) -> bool {
        !matches!(self, ToolChoice::Auto)
    }
}

/// `thinking`: `{"type": "enabled", "budget_tokens"}`, the budget at least 1,024 and
/// under `max_tokens` ("Extended thinking").
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Thinking {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub budget_tokens: u32,
}

/// One event of the stream, by its data's `type` ("Streaming Messages", "Event
/// types"): `message_start`, then per content block `content_block_start`,
/// `content_block_delta`s and `content_block_stop`, then `message_delta`s and
/// `message_stop`; `ping`s anywhere; an `error` may end it. Others are skipped.
#[derive(Deserialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum StreamEvent {
    /// The message with empty `content`; its `usage.input_tokens` is the prompt's count.
    MessageStart { message: MessageStart },
    /// A block opens at `index` (its position in the final `content`).
    ContentBlockStart {
        index: usize,
        content_block: ContentBlock,
    },
    /// More of the block at `index`.
    ContentBlockDelta { index: usize, delta: BlockDelta },
    /// The block at `index` is complete.
    ContentBlockStop { index: usize },
    /// Top-level changes: `delta.stop_reason`, and cumulative `usage.output_tokens`.
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<DeltaUsage>,
    },
    /// The end of the message.
    MessageStop,
    /// Keep-alive.
    Ping,
    /// `{"type": "error", "error": {"type", "message"}}` after the HTTP 200.
    Error { error: ErrorDetail },
    /// An event type this version of Nexus does not know.
    #[serde(other)]
    Other,
}

/// `message_start.message`. Left out: `id`, `type`, `role`, `model`, `content` (empty),
/// `stop_reason` (null here), `stop_sequence`.
#[derive(Deserialize, Debug)]
pub(crate) struct MessageStart {
    #[serde(default)]
    pub usage: WireUsage,
}

/// `usage` of a message, tokens. The prompt's tokens are `input_tokens` plus the
/// cached ones (`cache_creation_input_tokens`, `cache_read_input_tokens`, null or absent
/// without prompt caching: "Prompt caching", "Tracking cache performance").
#[derive(Deserialize, Debug, Default, Clone, Copy)]
pub(crate) struct WireUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
}

/// `message_delta.usage`: cumulative counts, tokens (`output_tokens` always; the input
/// counts on newer revisions).
pub(crate) type DeltaUsage = WireUsage;

/// `message_delta.delta`. Left out: `stop_sequence`.
#[derive(Deserialize, Debug, Default)]
pub(crate) struct MessageDeltaBody {
    /// `end_turn`, `max_tokens`, `stop_sequence`, `tool_use`, `pause_turn`, `refusal`,
    /// `model_context_window_exceeded`.
    #[serde(default)]
    pub stop_reason: Option<String>,
}

/// A content block of a reply (`content_block_start.content_block`, a non-streamed
/// message's `content[]`). Left out: `redacted_thinking` and server tool blocks (read as
/// `Other`), `citations`, a thinking block's `signature`.
#[derive(Deserialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ContentBlock {
    /// `{"type": "text", "text"}` (`""` when it opens a stream).
    Text {
        #[serde(default)]
        text: String,
    },
    /// `{"type": "tool_use", "id", "name", "input"}`; `input` is `{}` when it opens a
    /// stream (the `input_json_delta`s then carry it) and the whole object in a
    /// non-streamed message.
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: serde_json::Value,
    },
    /// `{"type": "thinking", "thinking", "signature"}`.
    Thinking {
        #[serde(default)]
        thinking: String,
    },
    #[serde(other)]
    Other,
}

/// `content_block_delta.delta`. Left out: `signature_delta`, `citations_delta` (read as
/// `Other`).
#[derive(Deserialize, Debug)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum BlockDelta {
    /// `{"type": "text_delta", "text"}`.
    TextDelta { text: String },
    /// `{"type": "input_json_delta", "partial_json"}`: a piece of the tool input's JSON
    /// text, cut anywhere (mid-token); only the joined pieces parse.
    InputJsonDelta { partial_json: String },
    /// `{"type": "thinking_delta", "thinking"}`.
    ThinkingDelta { thinking: String },
    #[serde(other)]
    Other,
}

/// A non-streamed message (a proxy that ignored `stream: true`). Left out: `id`,
/// `type`, `role`, `model`, `stop_sequence`.
#[derive(Deserialize, Debug)]
pub(crate) struct WholeMessage {
    #[serde(default)]
    pub content: Vec<ContentBlock>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub usage: WireUsage,
}

/// `GET /v1/models` ("Models", "List Models"): newest first, a page of `limit` (1 to
/// 1,000, default 20), the next page after `last_id` while `has_more`. Left out:
/// `first_id`.
#[derive(Deserialize, Debug)]
pub(crate) struct ModelList {
    pub data: Vec<ModelEntry>,
    #[serde(default)]
    pub has_more: bool,
    #[serde(default)]
    pub last_id: Option<String>,
}

/// A model of the list. Left out: `display_name`, `type` (`"model"`), `created_at`.
#[derive(Deserialize, Debug)]
pub(crate) struct ModelEntry {
    pub id: String,
}

/// An error body ("Errors"): `{"type": "error", "error": {"type", "message"},
/// "request_id"}`; the same `error` object comes in a stream's `error` event.
#[derive(Deserialize, Debug)]
pub(crate) struct ErrorBody {
    pub error: ErrorDetail,
}

/// `error`: its `type` (`invalid_request_error`, `overloaded_error`, ...) and words.
#[derive(Deserialize, Debug, Clone, Default)]
pub(crate) struct ErrorDetail {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub message: String,
}
