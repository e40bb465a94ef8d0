//! Wire types of the OpenAI chat completions API (request, streamed chunk, errors), only
//! the fields Nexus uses. Source: OpenAI API reference, "Create chat completion" and
//! "The chat completion chunk object".

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
}

#[derive(Serialize)]
pub(crate) struct Message<'a> {
    pub role: &'static str,
    pub content: &'a str,
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
}
