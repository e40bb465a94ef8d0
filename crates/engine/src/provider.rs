//! The model provider interface: one trait that Ollama, OpenAI-compatible servers and the
//! embedded llama.cpp model implement (in the `nexus-llm` and `nexus-embedded` crates).
//!
//! A provider lists its models and streams a chat completion. The engine owns retries,
//! timeouts, fallback and cancellation: dropping the stream returned by
//! [`Provider::chat`] must abort the underlying request (for HTTP providers that happens
//! when the `reqwest` response is dropped; the embedded provider checks for a closed
//! channel after every token).

use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;
use serde::{Deserialize, Serialize};

/// Where a provider runs, which decides its default concurrency and its place in the
/// selector's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Locality {
    /// A daemon on this machine (Ollama): one request in flight per model by default.
    Local,
    /// A remote API: several requests in flight.
    Cloud,
    /// In-process llama.cpp: one request in flight.
    Embedded,
}

/// A model a provider can serve now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Provider id (`ollama`, `openai`, `embedded`).
    pub provider: String,
    /// The model's name at that provider (`llama3.1:latest`, `gpt-4o-mini`, `smollm2-135m`).
    pub name: String,
    /// Where it runs.
    pub locality: Locality,
    /// Context window in tokens, when the provider reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u32>,
    /// Size on disk in bytes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Parameter count as the provider words it (`8.0B`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_size: Option<String>,
    /// Quantization (`Q4_K_M`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
}

impl ModelInfo {
    /// The `provider:name` reference used in workflow files and run records.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.provider, self.name)
    }
}

/// Role of a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Instructions.
    System,
    /// The user's message.
    User,
    /// A model's reply.
    Assistant,
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

/// A chat request, provider-neutral.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model's name at the provider (without the `provider:` prefix).
    pub model: String,
    /// The conversation, system message first when present.
    pub messages: Vec<Message>,
    /// Sampling temperature.
    pub temperature: f32,
    /// Maximum tokens to generate.
    pub max_tokens: u32,
    /// When set, the reply must be JSON following this schema.
    pub json_schema: Option<serde_json::Value>,
}

/// Token counts of one completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt, as the provider counted them.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub completion_tokens: u64,
}

/// One item of a chat stream.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatChunk {
    /// Generated text.
    Delta(String),
    /// The end of the completion, with token counts and why it stopped (`stop`,
    /// `length`, ...).
    Done {
        /// Token counts.
        usage: Usage,
        /// Why generation stopped, as the provider says it.
        finish_reason: Option<String>,
    },
}

/// A stream of chat chunks.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, ProviderError>> + Send>>;

/// How a provider failed, which decides what the engine does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderErrorKind {
    /// The provider cannot be reached (connection refused, DNS, daemon not running).
    /// The engine falls back to the next candidate at once, without retrying.
    Unavailable,
    /// The provider does not have the model (Ollama 404 "not found"). Falls back at once.
    ModelNotFound,
    /// Authentication failed (401/403). Falls back at once.
    Auth,
    /// Rate limited (429). Retried with backoff.
    RateLimited,
    /// The server failed (5xx) or the connection broke; retried with backoff.
    Transient,
    /// The request was refused as invalid (4xx other than the above); not retried.
    InvalidRequest,
    /// The stream broke or was malformed; retried.
    Protocol,
    /// The reply did not satisfy the step's output schema, or was empty; retried.
    InvalidOutput,
    /// A timeout of the engine (first token, idle, total); retried.
    Timeout,
    /// The run was cancelled; never retried.
    Cancelled,
    /// The embedded model could not be loaded or run.
    Internal,
}

impl ProviderErrorKind {
    /// The snake_case name stored in the run record.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderErrorKind::Unavailable => "unavailable",
            ProviderErrorKind::ModelNotFound => "model_not_found",
            ProviderErrorKind::Auth => "auth",
            ProviderErrorKind::RateLimited => "rate_limited",
            ProviderErrorKind::Transient => "transient",
            ProviderErrorKind::InvalidRequest => "invalid_request",
            ProviderErrorKind::Protocol => "protocol",
            ProviderErrorKind::InvalidOutput => "invalid_output",
            ProviderErrorKind::Timeout => "timeout",
            ProviderErrorKind::Cancelled => "cancelled",
            ProviderErrorKind::Internal => "internal",
        }
    }

    /// Whether the engine moves to the next candidate model at once instead of retrying
    /// the same one (no retry is wasted on a daemon that is not running).
    pub fn falls_back_at_once(self) -> bool {
        matches!(
            self,
            ProviderErrorKind::Unavailable
                | ProviderErrorKind::ModelNotFound
                | ProviderErrorKind::Auth
        )
    }

    /// Whether another attempt on the same model may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ProviderErrorKind::RateLimited
                | ProviderErrorKind::Transient
                | ProviderErrorKind::Protocol
                | ProviderErrorKind::InvalidOutput
                | ProviderErrorKind::Timeout
                | ProviderErrorKind::Internal
        )
    }
}

/// A provider failure: its class and the provider's own words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ProviderError {
    /// The class of failure.
    pub kind: ProviderErrorKind,
    /// What the provider said, or what went wrong on our side.
    pub message: String,
}

impl fmt::Display for ProviderErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl ProviderError {
    /// Builds an error of `kind`.
    pub fn new(kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            message: message.into(),
        }
    }

    /// Classifies an HTTP status from a provider, after the OpenAI and Anthropic SDKs'
    /// retry rules (408, 409, 429, 5xx retryable; 401/403 auth; 404 missing model).
    pub fn from_status(status: u16, body: &str) -> Self {
        let kind = match status {
            401 | 403 => ProviderErrorKind::Auth,
            404 => ProviderErrorKind::ModelNotFound,
            429 => ProviderErrorKind::RateLimited,
            408 | 409 | 500..=599 => ProviderErrorKind::Transient,
            _ => ProviderErrorKind::InvalidRequest,
        };
        let body = body.trim();
        let body = if body.len() > 500 {
            &body[..body.floor_char_boundary(500)]
        } else {
            body
        };
        ProviderError::new(kind, format!("HTTP {status}: {body}"))
    }
}

/// A source of models: Ollama, an OpenAI-compatible server, the embedded model.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Stable id used in model references (`ollama`, `openai`, `embedded`).
    fn id(&self) -> &str;

    /// Where the provider runs.
    fn locality(&self) -> Locality;

    /// How many requests to one model may be in flight at once (default: 1 for local and
    /// embedded models, 4 for cloud).
    fn max_concurrency(&self) -> usize {
        match self.locality() {
            Locality::Cloud => 4,
            Locality::Local | Locality::Embedded => 1,
        }
    }

    /// The models available now.
    ///
    /// # Errors
    /// [`ProviderErrorKind::Unavailable`] when the provider cannot be reached.
    async fn list_models(&self) -> Result<Vec<ModelInfo>, ProviderError>;

    /// Starts a streamed chat completion. The returned stream yields deltas and ends with
    /// one [`ChatChunk::Done`]; a stream that ends without it is treated as broken.
    /// Dropping the stream aborts the request.
    ///
    /// # Errors
    /// Any [`ProviderError`]; errors after the stream started come through the stream.
    async fn chat(&self, request: ChatRequest) -> Result<ChatStream, ProviderError>;
}
