//! The Ollama daemon's wire types, only the fields Nexus uses, after `api/types.go` and
//! `docs/api.md` of the Ollama repository. Nexus keeps its own instead of `ollama-rs`'s:
//! those have no tool-call `id`, `index`, `tool_name` or `tool_call_id`, and read
//! streams per network chunk.

use serde::{Deserialize, Serialize};

/// `GET /api/tags` (docs/api.md "List Local Models"; `ListModelResponse`).
#[derive(Deserialize)]
pub(super) struct Tags {
    #[serde(default)]
    pub models: Vec<TagModel>,
}

/// One model of `/api/tags`.
#[derive(Deserialize)]
pub(super) struct TagModel {
    pub name: String,
    #[serde(default)]
    pub size: u64,
    /// Set for a cloud model the daemon forwards to (`https://ollama.com:443`).
    #[serde(default)]
    pub remote_host: Option<String>,
    #[serde(default)]
    pub details: Option<TagDetails>,
}

/// `details` of a `/api/tags` model.
#[derive(Deserialize)]
pub(super) struct TagDetails {
    #[serde(default)]
    pub quantization_level: Option<String>,
}

/// `POST /api/show` (`ShowResponse`): the GGUF's metadata and the capabilities
/// (`types/model/capability.go`).
#[derive(Deserialize)]
pub(super) struct Show {
    #[serde(default)]
    pub model_info: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub capabilities: Vec<String>,
}

/// `GET /api/ps` (`ProcessResponse`): the models loaded now.
#[derive(Deserialize)]
pub(super) struct Ps {
    #[serde(default)]
    pub models: Vec<PsModel>,
}

/// One loaded model and the `num_ctx` its runner was started with.
#[derive(Deserialize)]
pub(super) struct PsModel {
    pub name: String,
    #[serde(default)]
    pub context_length: u32,
}

/// An `{"error": "..."}` object, as a body or as a line of a stream.
#[derive(Deserialize)]
pub(super) struct ErrorLine {
    pub error: String,
}

/// `POST /api/chat` (`ChatRequest`).
#[derive(Serialize)]
pub(super) struct ChatRequest<'a> {
    pub model: &'a str,
    pub messages: Vec<Message<'a>>,
    pub stream: bool,
    /// `"json"` or a JSON Schema object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool<'a>>,
    pub options: Options,
    /// Absent: a thinking model thinks, any other answers (`server/routes.go`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub think: Option<bool>,
}

/// `options` (the Modelfile parameters Nexus sets).
#[derive(Serialize)]
pub(super) struct Options {
    pub temperature: f32,
    pub num_predict: i64,
    pub num_ctx: u32,
}

/// One message (`Message`): `role` is `system`, `user`, `assistant` or `tool`.
#[derive(Serialize)]
pub(super) struct Message<'a> {
    pub role: &'static str,
    pub content: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<&'a str>,
}

/// One tool offered (`Tool`): `{"type": "function", "function": {...}}`.
#[derive(Serialize)]
pub(super) struct Tool<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: ToolFunction<'a>,
}

/// `ToolFunction`.
#[derive(Serialize)]
pub(super) struct ToolFunction<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub description: &'a str,
    pub parameters: &'a serde_json::Value,
}

/// A tool call (`ToolCall`): in a reply, and sent back in the history.
#[derive(Serialize, Deserialize, Debug)]
pub(super) struct ToolCall {
    /// `call_` and 8 characters (`server/routes.go` `toolCallId`); absent from daemons
    /// before it was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub function: ToolCallFunction,
}

/// `ToolCallFunction`: the arguments are a JSON object (an ordered map).
#[derive(Serialize, Deserialize, Debug)]
pub(super) struct ToolCallFunction {
    #[serde(default)]
    pub index: usize,
    pub name: String,
    #[serde(default)]
    pub arguments: serde_json::Value,
}

/// One NDJSON line of `POST /api/chat` (`ChatResponse`), or an error line.
#[derive(Deserialize)]
pub(super) struct ChatLine {
    #[serde(default)]
    pub message: Option<LineMessage>,
    #[serde(default)]
    pub done: bool,
    #[serde(default)]
    pub done_reason: Option<String>,
    #[serde(default)]
    pub prompt_eval_count: Option<u64>,
    #[serde(default)]
    pub eval_count: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
}

/// `message` of a chat line: the answer's text, the reasoning's, the tool calls.
#[derive(Deserialize)]
pub(super) struct LineMessage {
    #[serde(default)]
    pub content: String,
    #[serde(default)]
    pub thinking: String,
    #[serde(default)]
    pub tool_calls: Vec<ToolCall>,
}

/// `POST /api/embed` (`EmbedRequest`).
#[derive(Serialize)]
pub(super) struct EmbedRequest<'a> {
    pub model: &'a str,
    pub input: &'a [String],
    pub truncate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
}

/// Its answer (`EmbedResponse`).
#[derive(Deserialize)]
pub(super) struct EmbedResponse {
    #[serde(default)]
    pub model: String,
    pub embeddings: Vec<Vec<f32>>,
    #[serde(default)]
    pub prompt_eval_count: u64,
}

/// `POST /api/pull` (`PullRequest`; `name` for daemons before `model` was added).
#[derive(Serialize)]
pub(super) struct PullRequest<'a> {
    pub model: &'a str,
    pub name: &'a str,
    pub stream: bool,
}

/// One NDJSON line of a pull (`ProgressResponse`; `total` and `completed` are
/// `omitempty`, so a layer's first line has no `completed`), or an error line.
#[derive(Deserialize)]
pub(super) struct ProgressLine {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub total: Option<u64>,
    #[serde(default)]
    pub completed: Option<u64>,
    #[serde(default)]
    pub error: Option<String>,
}
