//! Tool (function) calling, provider-neutral: the tools a chat request offers
//! ([`ToolSpec`]), how the model may use them ([`ToolChoice`]), and a call the model made
//! ([`ToolCall`]), which comes back as one [`super::ChatChunk::ToolCall`] and goes into
//! the history as an assistant [`super::Message`] with `tool_calls`, answered by a
//! [`super::Role::Tool`] message.
//!
//! Wire shapes the providers map these to:
//! - Ollama (`docs/api.md` "Chat request (Streaming with tools)", `api/types.go` `Tool`,
//!   `ToolCall`, `Message` of the Ollama repository): `tools: [{"type": "function",
//!   "function": {"name", "description", "parameters"}}]`; the reply's
//!   `message.tool_calls: [{"id", "function": {"index", "name", "arguments": {...}}}]`
//!   with the arguments as a JSON object; a result is `{"role": "tool", "content",
//!   "tool_name", "tool_call_id"}`.
//! - OpenAI chat completions ("Create chat completion", "The chat completion chunk
//!   object" of OpenAI's API reference): the same `tools`; `tool_choice` `"auto"`,
//!   `"required"` or `{"type": "function", "function": {"name"}}`; a streamed call
//!   arrives as `delta.tool_calls[]` fragments keyed by `index` (the first with `id`
//!   and `function.name`, then pieces of `function.arguments`, a JSON *string*), the
//!   choice ends with `finish_reason: "tool_calls"`; a result is `{"role": "tool",
//!   "tool_call_id", "content"}`.
//!
//! Invariant: a [`ToolCall`] handed to the engine is complete: its `arguments` are one
//! parsed JSON value (an object when the model followed the schema). A provider that
//! cannot assemble one (argument fragments that are not JSON) fails the attempt with a
//! [`super::ProviderErrorKind::InvalidOutput`] error naming the tool, never a partial
//! call.

use serde::{Deserialize, Serialize};

use super::{ProviderError, ProviderErrorKind};

/// One tool a chat request offers the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The name the model calls it by (`get_weather`; OpenAI allows `a-z A-Z 0-9 _ -`,
    /// at most 64 characters).
    pub name: String,
    /// What it does, for the model (may be empty).
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments, an object schema
    /// (`{"type": "object", "properties": {...}, "required": [...]}`).
    pub parameters: serde_json::Value,
}

/// How the model may use the tools offered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides whether to call a tool or answer (OpenAI `"auto"`; Ollama's
    /// only behaviour).
    #[default]
    Auto,
    /// The model must call at least one tool (OpenAI `"required"`). Ollama has no such
    /// switch: it is sent as `auto`.
    Required,
    /// The model must call this tool (OpenAI `{"type": "function", "function":
    /// {"name": ...}}`; llama-cpp-python then constrains the arguments by the tool's
    /// schema). Ollama has no such switch: only this tool is offered.
    Tool(String),
}

/// A call the model made: which tool, with which arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for the call (OpenAI `call_...`, Ollama `call_` and 8
    /// characters, `server/routes.go` `toolCallId`); the tool's result quotes it. A
    /// provider that sends none gets one made by [`ToolCall::fallback_id`].
    pub id: String,
    /// The tool's name, one of the request's [`ToolSpec::name`]s when the model
    /// behaved.
    pub name: String,
    /// The arguments, parsed JSON (an object when the model followed the schema).
    pub arguments: serde_json::Value,
}

impl ToolCall {
    /// The id given to the `index`-th call of a reply whose provider sent none:
    /// `call_<index>`.
    pub fn fallback_id(index: usize) -> String {
        format!("call_{index}")
    }
}

/// The error of a provider asked to offer tools to `provider:model`, which has no native
/// tool calls ([`super::Provider::native_tool_calls`]): an invalid request, so the
/// engine moves on instead of retrying.
pub fn no_native_tools(provider: &str, model: &str) -> ProviderError {
    ProviderError::new(
        ProviderErrorKind::InvalidRequest,
        format!(
            "`{provider}:{model}` has no native tool calls; offer it no tools (an agent step uses its JSON strategy for such a model)"
        ),
    )
}
