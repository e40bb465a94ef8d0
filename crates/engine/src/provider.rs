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
#[cfg_attr(feature = "specta", derive(specta::Type))]
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
#[cfg_attr(feature = "specta", derive(specta::Type))]
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
#[cfg_attr(feature = "specta", derive(specta::Type))]
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

/// How a provider failed: the error taxonomy. Each class maps to one [`ErrorAction`]
/// (see [`TAXONOMY`], the single table the engine and the README follow).
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderErrorKind {
    /// A local server is down or cannot be reached (connection refused, DNS, daemon not
    /// running, model still loading, out of memory).
    Unavailable,
    /// The provider does not have the model (Ollama 404 "not found", HTTP 404).
    ModelNotFound,
    /// Authentication failed (HTTP 401/403).
    Auth,
    /// Rate limited (HTTP 429), possibly with a Retry-After delay.
    RateLimited,
    /// Quota or billing exhausted (HTTP 402, 429 `insufficient_quota`).
    Quota,
    /// The server failed or the connection broke before any content (HTTP 408, 409,
    /// 5xx, 529, a reset).
    Transient,
    /// The prompt plus `max_tokens` does not fit the model's context window.
    ContextOverflow,
    /// The server refused a parameter (structured output, a field it does not know).
    UnsupportedParameter,
    /// The provider refused the content on policy grounds.
    ContentPolicy,
    /// Any other refusal of the request as invalid (other 4xx).
    InvalidRequest,
    /// The stream was malformed or broke before any content arrived.
    Protocol,
    /// The stream broke after some content arrived.
    StreamBroken,
    /// The reply was empty or did not satisfy the step's output schema.
    InvalidOutput,
    /// A timeout of the engine (first token, idle gap, total).
    Timeout,
    /// The run was cancelled.
    Cancelled,
    /// A guardrail blocked the text before it reached the provider, or the reply.
    GuardrailBlock,
    /// The call would exceed the step's or the run's token or cost budget.
    BudgetExceeded,
    /// The embedded model could not be loaded or run.
    Internal,
}

/// What the engine does with a failed attempt, by error class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorAction {
    /// Retry the same model with backoff (retry policy), then fall back.
    RetryWithBackoff,
    /// Wait for Retry-After (or backoff) when it is within the cap, then retry; over the
    /// cap, or once the retries are spent, fall back.
    WaitThenRetry,
    /// No retry on this model: move to the next model at once.
    FallBack,
    /// Move to a model with a larger context window; the simplified-parameters rung
    /// trims the prompt.
    LargerContext,
    /// Retry once without the refused parameter (structured output), then fall back.
    DropParameter,
    /// Retry once with a repair instruction, then fall back.
    RepairThenFallBack,
    /// Never retry, never fall back: the step stops here (its `on_failure` still applies).
    Stop,
}

impl ErrorAction {
    /// The snake_case name used in the table and the run record.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorAction::RetryWithBackoff => "retry_with_backoff",
            ErrorAction::WaitThenRetry => "wait_then_retry",
            ErrorAction::FallBack => "fall_back",
            ErrorAction::LargerContext => "larger_context",
            ErrorAction::DropParameter => "drop_parameter",
            ErrorAction::RepairThenFallBack => "repair_then_fall_back",
            ErrorAction::Stop => "stop",
        }
    }
}

/// One row of the error taxonomy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaxonomyRow {
    /// The class.
    pub kind: ProviderErrorKind,
    /// How the class is recognised.
    pub signals: &'static str,
    /// What the engine does.
    pub action: ErrorAction,
    /// Whether the failure counts against the (provider, model) circuit breaker. Only
    /// provider faults count, never the request's own problems (resilience4j's
    /// `recordExceptions`; Portkey counts only 5xx/429).
    pub counts_for_breaker: bool,
    /// Where the rule comes from.
    pub source: &'static str,
}

/// The error taxonomy: every class, its signals, its action and the rule's source. The
/// README's table is rendered from this one ([`taxonomy_markdown`]); a test keeps them
/// equal.
pub const TAXONOMY: &[TaxonomyRow] = &[
    TaxonomyRow {
        kind: ProviderErrorKind::Transient,
        signals: "HTTP 408, 409, 5xx, 529; connection reset before content",
        action: ErrorAction::RetryWithBackoff,
        counts_for_breaker: true,
        source: "OpenAI and Anthropic SDK retry rules; Portkey",
    },
    TaxonomyRow {
        kind: ProviderErrorKind::RateLimited,
        signals: "HTTP 429 (Retry-After honoured up to `max_retry_after`)",
        action: ErrorAction::WaitThenRetry,
        counts_for_breaker: true,
        source: "LiteLLM Router cooldowns; Portkey 60 s Retry-After cap",
    },
    TaxonomyRow {
        kind: ProviderErrorKind::Quota,
        signals: "HTTP 402; 429 with `insufficient_quota`/billing",
        action: ErrorAction::FallBack,
        counts_for_breaker: true,
        source: "OpenAI error codes; LiteLLM",
    },
    TaxonomyRow {
        kind: ProviderErrorKind::Auth,
        signals: "HTTP 401, 403",
        action: ErrorAction::FallBack,
        counts_for_breaker: true,
        source: "LiteLLM (no retry on auth errors)",
    },
    TaxonomyRow {
        kind: ProviderErrorKind::Unavailable,
        signals: "connection refused, DNS failure, model loading, out of memory",
        action: ErrorAction::FallBack,
        counts_for_breaker: true,
        source: "LiteLLM local fallback; users' reports of Ollama being down",
    },
    TaxonomyRow {
        kind: ProviderErrorKind::ModelNotFound,
        signals: "HTTP 404; Ollama `model ... not found`",
        action: ErrorAction::FallBack,
        counts_for_breaker: true,
        source: "Ollama API docs (errors)",
    },
    TaxonomyRow {
        kind: ProviderErrorKind::ContextOverflow,
        signals: "HTTP 400/413 with a context-length message; prompt over the known window",
        action: ErrorAction::LargerContext,
        counts_for_breaker: false,
        source: "LiteLLM `context_window_fallbacks`",
    },
    TaxonomyRow {
        kind: ProviderErrorKind::UnsupportedParameter,
        signals: "HTTP 400/422 naming an unsupported parameter or `response_format`",
        action: ErrorAction::DropParameter,
        counts_for_breaker: false,
        source: "LiteLLM `drop_params`",
    },
    TaxonomyRow {
        kind: ProviderErrorKind::ContentPolicy,
        signals: "HTTP 400 with `content_policy`/`content_filter`/safety",
        action: ErrorAction::FallBack,
        counts_for_breaker: false,
        source: "LiteLLM `content_policy_fallbacks`",
    },
    TaxonomyRow {
        kind: ProviderErrorKind::InvalidRequest,
        signals: "any other HTTP 4xx",
        action: ErrorAction::FallBack,
        counts_for_breaker: false,
        source: "OpenAI SDK (4xx not retried)",
    },
    TaxonomyRow {
        kind: ProviderErrorKind::Protocol,
        signals: "malformed stream, or a stream that broke before any token",
        action: ErrorAction::RetryWithBackoff,
        counts_for_breaker: true,
        source: "OpenAI SDK (connection errors retried)",
    },
    TaxonomyRow {
        kind: ProviderErrorKind::StreamBroken,
        signals: "the stream ended or broke after some tokens",
        action: ErrorAction::RetryWithBackoff,
        counts_for_breaker: true,
        source: "LiteLLM mid-stream fallback (a fresh request; never continue a tool call)",
    },
    TaxonomyRow {
        kind: ProviderErrorKind::InvalidOutput,
        signals: "empty reply; reply not JSON or not matching `output_schema`",
        action: ErrorAction::RepairThenFallBack,
        counts_for_breaker: false,
        source: "Instructor/Guardrails re-ask; LiteLLM fallback on invalid output",
    },
    TaxonomyRow {
        kind: ProviderErrorKind::Timeout,
        signals: "no first token / idle gap / total time over the step's timeouts",
        action: ErrorAction::RetryWithBackoff,
        counts_for_breaker: true,
        source: "Temporal timeouts; LangGraph `idle_timeout`",
    },
    TaxonomyRow {
        kind: ProviderErrorKind::Internal,
        signals: "the embedded model failed to load or decode",
        action: ErrorAction::RetryWithBackoff,
        counts_for_breaker: true,
        source: "Temporal (unknown errors are retryable)",
    },
    TaxonomyRow {
        kind: ProviderErrorKind::Cancelled,
        signals: "the user cancelled the run",
        action: ErrorAction::Stop,
        counts_for_breaker: false,
        source: "LangGraph, LiteLLM (never retry a cancel)",
    },
    TaxonomyRow {
        kind: ProviderErrorKind::GuardrailBlock,
        signals: "a guardrail rule with action `block` matched",
        action: ErrorAction::Stop,
        counts_for_breaker: false,
        source: "LiteLLM guardrails (a block is final)",
    },
    TaxonomyRow {
        kind: ProviderErrorKind::BudgetExceeded,
        signals: "the call would pass the step's or run's token/cost budget",
        action: ErrorAction::Stop,
        counts_for_breaker: false,
        source: "LiteLLM budgets (requests over budget are refused)",
    },
];

/// The taxonomy as a Markdown table (the README embeds it verbatim).
pub fn taxonomy_markdown() -> String {
    let mut out = String::from(
        "| class | signals | action | counts for breaker | source |\n|---|---|---|---|---|\n",
    );
    for row in TAXONOMY {
        out.push_str(&format!(
            "| `{}` | {} | `{}` | {} | {} |\n",
            row.kind.as_str(),
            row.signals,
            row.action.as_str(),
            if row.counts_for_breaker { "yes" } else { "no" },
            row.source
        ));
    }
    out
}

impl ProviderErrorKind {
    /// The snake_case name stored in the run record.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderErrorKind::Unavailable => "unavailable",
            ProviderErrorKind::ModelNotFound => "model_not_found",
            ProviderErrorKind::Auth => "auth",
            ProviderErrorKind::RateLimited => "rate_limited",
            ProviderErrorKind::Quota => "quota",
            ProviderErrorKind::Transient => "transient",
            ProviderErrorKind::ContextOverflow => "context_overflow",
            ProviderErrorKind::UnsupportedParameter => "unsupported_parameter",
            ProviderErrorKind::ContentPolicy => "content_policy",
            ProviderErrorKind::InvalidRequest => "invalid_request",
            ProviderErrorKind::Protocol => "protocol",
            ProviderErrorKind::StreamBroken => "stream_broken",
            ProviderErrorKind::InvalidOutput => "invalid_output",
            ProviderErrorKind::Timeout => "timeout",
            ProviderErrorKind::Cancelled => "cancelled",
            ProviderErrorKind::GuardrailBlock => "guardrail_block",
            ProviderErrorKind::BudgetExceeded => "budget_exceeded",
            ProviderErrorKind::Internal => "internal",
        }
    }

    /// Every class, in [`TAXONOMY`] order.
    pub fn all() -> impl Iterator<Item = ProviderErrorKind> {
        TAXONOMY.iter().map(|r| r.kind)
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<ProviderErrorKind> {
        Self::all().find(|k| k.as_str() == s)
    }

    fn row(self) -> &'static TaxonomyRow {
        // Every kind has a row (a test checks it).
        const UNKNOWN: TaxonomyRow = TaxonomyRow {
            kind: ProviderErrorKind::Internal,
            signals: "",
            action: ErrorAction::RetryWithBackoff,
            counts_for_breaker: true,
            source: "",
        };
        TAXONOMY.iter().find(|r| r.kind == self).unwrap_or(&UNKNOWN)
    }

    /// The engine's action for this class.
    pub fn action(self) -> ErrorAction {
        self.row().action
    }

    /// Whether the failure counts against the circuit breaker.
    pub fn counts_for_breaker(self) -> bool {
        self.row().counts_for_breaker
    }

    /// Whether the engine moves to the next candidate model at once instead of retrying
    /// the same one (no retry is wasted on a daemon that is not running).
    pub fn falls_back_at_once(self) -> bool {
        matches!(
            self.action(),
            ErrorAction::FallBack | ErrorAction::LargerContext
        )
    }

    /// Whether another attempt on the same model may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self.action(),
            ErrorAction::RetryWithBackoff
                | ErrorAction::WaitThenRetry
                | ErrorAction::DropParameter
                | ErrorAction::RepairThenFallBack
        )
    }
}

/// A provider failure: its class, the provider's own words, and the delay the provider
/// asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ProviderError {
    /// The class of failure.
    pub kind: ProviderErrorKind,
    /// What the provider said, or what went wrong on our side.
    pub message: String,
    /// The provider's Retry-After, when it sent one.
    pub retry_after: Option<std::time::Duration>,
}

impl fmt::Display for ProviderErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Phrases of context-window errors: OpenAI `context_length_exceeded`, llama.cpp server
/// "exceed context window", Anthropic "prompt is too long", vLLM "maximum context length".
const CONTEXT_PHRASES: &[&str] = &[
    "context_length_exceeded",
    "context length",
    "context window",
    "maximum context",
    "exceed context",
    "exceeds the context",
    "prompt is too long",
    "too many tokens",
    "context overflow",
];

/// Phrases of refused parameters (OpenAI `unsupported_parameter`/`unsupported_value`,
/// llama.cpp and vLLM messages about `response_format`).
const PARAMETER_PHRASES: &[&str] = &[
    "unsupported_parameter",
    "unsupported_value",
    "unsupported parameter",
    "not supported",
    "unrecognized request argument",
    "unknown parameter",
    "extra inputs are not permitted",
    "response_format",
    "json_schema",
];

/// Phrases of content-policy refusals (OpenAI `content_policy_violation`, Azure
/// `content_filter`).
const POLICY_PHRASES: &[&str] = &[
    "content_policy",
    "content policy",
    "content_filter",
    "safety system",
];

impl ProviderError {
    /// Builds an error of `kind`.
    pub fn new(kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Sets the provider's Retry-After.
    #[must_use]
    pub fn with_retry_after(mut self, retry_after: Option<std::time::Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Classifies an error message without a status (Ollama `{"error": ...}` bodies,
    /// errors inside a stream): context overflow, content policy and missing models by
    /// their wording, otherwise `fallback`.
    pub fn classify_message(message: &str, fallback: ProviderErrorKind) -> ProviderErrorKind {
        let lower = message.to_ascii_lowercase();
        if CONTEXT_PHRASES.iter().any(|p| lower.contains(p)) {
            ProviderErrorKind::ContextOverflow
        } else if POLICY_PHRASES.iter().any(|p| lower.contains(p)) {
            ProviderErrorKind::ContentPolicy
        } else if lower.contains("insufficient_quota") || lower.contains("billing") {
            ProviderErrorKind::Quota
        } else if lower.contains("not found") && lower.contains("model") {
            ProviderErrorKind::ModelNotFound
        } else {
            fallback
        }
    }

    /// Classifies an HTTP error status and body from a provider ([`TAXONOMY`]): 401/403
    /// auth; 402 and 429 `insufficient_quota` quota; 404 missing model; 429 rate limit;
    /// 408, 409, 5xx transient; 4xx by the body's wording (context overflow, refused
    /// parameter, content policy), else an invalid request.
    pub fn from_status(status: u16, body: &str) -> Self {
        let lower = body.to_ascii_lowercase();
        let has = |phrases: &[&str]| phrases.iter().any(|p| lower.contains(p));
        let kind = match status {
            401 | 403 => ProviderErrorKind::Auth,
            402 => ProviderErrorKind::Quota,
            429 if lower.contains("insufficient_quota") || lower.contains("billing") => {
                ProviderErrorKind::Quota
            }
            429 => ProviderErrorKind::RateLimited,
            404 => ProviderErrorKind::ModelNotFound,
            // llama-cpp-python answers a request-validation error (e.g. an unknown
            // `response_format` type) with HTTP 500: the body decides.
            500 if has(PARAMETER_PHRASES) && lower.contains("validation error") => {
                ProviderErrorKind::UnsupportedParameter
            }
            408 | 409 | 500..=599 if !has(CONTEXT_PHRASES) => ProviderErrorKind::Transient,
            _ if has(CONTEXT_PHRASES) => ProviderErrorKind::ContextOverflow,
            _ if has(POLICY_PHRASES) => ProviderErrorKind::ContentPolicy,
            400 | 422 if has(PARAMETER_PHRASES) => ProviderErrorKind::UnsupportedParameter,
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

/// Parses an HTTP `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
/// A date in the past gives zero; an unreadable value gives `None`.
pub fn parse_retry_after(
    value: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<std::time::Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| std::time::Duration::from_secs_f64(secs.min(1e9)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or_default(),
    )
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
