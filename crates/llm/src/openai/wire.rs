//! Wire types of the OpenAI chat completions and embeddings APIs (request, streamed
//! chunk, tool calls, errors), only the fields Nexus uses. Source: OpenAI API
//! reference, "Create chat completion", "The chat completion chunk object" and "Create
//! embeddings".

use serde::{Deserialize, Serialize};

#[derive(Serialize)]
pub(crate) struct ChatCompletionRequest<'a> {
    pub model: &'a str,
    pub messages: Vec<Message<'a>>,
    pub temperature: f32,
    pub max_tokens: u32,
    pub stream: bool,
    pub stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool<'a>>,
    /// `"auto"`, `"required"` or `{"type": "function", "function": {"name": ...}}`; only
    /// with tools.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<serde_json::Value>,
}

/// A message: `content` is null for an assistant message with only tool calls.
#[derive(Serialize)]
pub(crate) struct Message<'a> {
    pub role: &'static str,
    pub content: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCallOut<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<&'a str>,
}

/// A tool offered: `{"type": "function", "function": {"name", "description",
/// "parameters"}}`.
#[derive(Serialize)]
pub(crate) struct Tool<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: ToolFunction<'a>,
}

#[derive(Serialize)]
pub(crate) struct ToolFunction<'a> {
    pub name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub description: &'a str,
    pub parameters: &'a serde_json::Value,
}

/// A tool call sent back in the history: the arguments as a JSON string.
#[derive(Serialize)]
pub(crate) struct ToolCallOut<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionOut<'a>,
}

#[derive(Serialize)]
pub(crate) struct FunctionOut<'a> {
    pub name: &'a str,
    pub arguments: String,
}

#[derive(Serialize)]
pub(crate) struct StreamOptions {
    pub include_usage: bool,
}

/// `response_format`: `{"type": "json_schema", "json_schema": {...}}` (OpenAI structured
/// outputs) or `{"type": "json_object", "schema": {...}}` (llama.cpp servers).
#[derive(Serialize, Clone)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ResponseFormat {
    JsonSchema { json_schema: JsonSchemaFormat },
    JsonObject { schema: serde_json::Value },
}

#[derive(Serialize, Clone)]
pub(crate) struct JsonSchemaFormat {
    pub name: &'static str,
    pub schema: serde_json::Value,
}

impl ResponseFormat {
    pub fn json_schema(schema: &serde_json::Value) -> Self {
        ResponseFormat::JsonSchema {
            json_schema: JsonSchemaFormat {
                name: "output",
                schema: schema.clone(),
            },
        }
    }
    pub fn json_object(schema: &serde_json::Value) -> Self {
        ResponseFormat::JsonObject {
            schema: schema.clone(),
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct ChatCompletionChunk {
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

#[derive(Deserialize)]
pub(crate) struct ChunkChoice {
    #[serde(default)]
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
pub(crate) struct Delta {
    #[serde(default)]
    pub content: Option<String>,
    /// Fragments of tool calls, by `index` (`null` from llama-cpp-python when none).
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// One fragment of a streamed tool call: the first of an `index` has `id`, `type` and
/// `function.name`, the next ones pieces of `function.arguments`.
#[derive(Deserialize, Debug, Default)]
pub(crate) struct ToolCallDelta {
    #[serde(default)]
    pub index: usize,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<FunctionDelta>,
}

#[derive(Deserialize, Debug, Default)]
pub(crate) struct FunctionDelta {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default)]
    pub prompt_tokens: u64,
    #[serde(default)]
    pub completion_tokens: u64,
}

#[derive(Deserialize)]
pub(crate) struct ModelList {
    pub data: Vec<ModelEntry>,
}

#[derive(Deserialize)]
pub(crate) struct ModelEntry {
    pub id: String,
}

#[derive(Deserialize)]
pub(crate) struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum ErrorDetail {
    Object { message: String },
    Text(String),
}

impl ErrorDetail {
    pub fn message(self) -> String {
        match self {
            ErrorDetail::Object { message } | ErrorDetail::Text(message) => message,
        }
    }
}

/// A non-streamed chat completion (`chat.completion`), for servers that ignore
/// `stream: true`.
#[derive(Deserialize)]
pub(crate) struct ChatCompletion {
    #[serde(default)]
    pub choices: Vec<CompletionChoice>,
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

#[derive(Deserialize)]
pub(crate) struct CompletionChoice {
    #[serde(default)]
    pub message: CompletionMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
pub(crate) struct CompletionMessage {
    #[serde(default)]
    pub content: Option<String>,
    /// Whole tool calls: `function.arguments` is the complete JSON string.
    #[serde(default)]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

/// `POST /embeddings` ("Create embeddings").
#[derive(Serialize)]
pub(crate) struct EmbeddingsRequest<'a> {
    pub model: &'a str,
    pub input: &'a [String],
    pub encoding_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
}

/// Its answer: `data[].embedding` in `data[].index` order, `usage.prompt_tokens`.
#[derive(Deserialize)]
pub(crate) struct EmbeddingsResponse {
    pub data: Vec<EmbeddingEntry>,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub usage: Option<WireUsage>,
}

#[derive(Deserialize)]
pub(crate) struct EmbeddingEntry {
    #[serde(default)]
    pub index: usize,
    pub embedding: WireVector,
}

/// An embedding as servers send it: one list of numbers (OpenAI), or one list per token
/// (llama-cpp-python serving a model without pooling), which Nexus refuses.
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum WireVector {
    Flat(Vec<f32>),
    PerToken(Vec<Vec<f32>>),
}
