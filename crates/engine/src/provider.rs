//! The model provider interface: one trait that Ollama, OpenAI-compatible servers and the
//! embedded llama.cpp model implement (in the `nexus-llm` and `nexus-embedded` crates).
//!
//! A provider lists its models and streams a chat completion. The engine owns retries,
//! timeouts, fallback and cancellation: dropping the stream returned by
//! [`Provider::chat`] must abort the underlying request (for HTTP providers that happens
//! when the `reqwest` response is dropped; the embedded provider checks for a closed
//! channel after every token).
//!
//! The engine knows no provider by name: how a vendor words its errors, what an HTTP
//! status means, which model families a provider recommends, all live with each provider
//! (`nexus-llm`, `nexus-embedded`) and reach the engine as a [`ProviderErrorKind`], a
//! [`ModelInfo`] or a [`Provider`] method.
//!
//! Invariant: a chat stream never carries more than [`ReplyMeter`] admits for the
//! request's `max_tokens` (a margin over it, and a byte cap), so a provider that ignores
//! `max_tokens` cannot grow Nexus's memory; every provider wraps its stream in
//! [`metered`], and the cut is a [`ProviderErrorKind::OversizedReply`].
//!
//! Tool calls ([`tools`]) and embeddings ([`embed`]) are optional: a provider says
//! whether a model takes tools natively ([`Provider::native_tool_calls`]; an agent step
//! uses a JSON strategy for the others) and whether it serves embeddings
//! ([`Provider::can_embed`]); how many different models one provider keeps loaded at
//! once ([`Provider::max_loaded_models`]) bounds the models Nexus has in flight on it.

use std::fmt;
use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;
use serde::{Deserialize, Serialize};

pub mod embed;
pub mod tools;

pub use embed::{EmbedRequest, Embeddings, MAX_EMBED_INPUTS};
pub use tools::{ToolCall, ToolChoice, ToolSpec};

/// Where a provider runs, which decides its default concurrency and its place in the
/// selector's order.
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Provider id (`ollama`, `openai`, `embedded`).
    pub provider: String,
    /// The model's name at that provider (`llama3.1:latest`, `gpt-4o-mini`, `smollm2-135m`).
    pub name: String,
    /// Where it runs.
    pub locality: Locality,
    /// Context window in tokens, when the provider reports it (Ollama: the trained
    /// window, up to which Nexus sends `num_ctx`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u32>,
    /// The window the model is loaded with now, tokens (Ollama's `/api/ps`
    /// `context_length`: the runner's `num_ctx`), when it is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded_context_length: Option<u32>,
    /// Size on disk in bytes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Parameter count as the provider words it (`8.0B`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameter_size: Option<String>,
    /// Quantization (`Q4_K_M`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    /// The model family, when the provider recommends this family for Nexus (Ollama:
    /// `llama3.1`, `qwen2.5`, `deepseek-r1`); the selector names it in its reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recommended_family: Option<String>,
    /// What the model can do, as the provider reports it (Ollama's `/api/show`
    /// `capabilities`); empty when the provider does not say, and then the selector
    /// assumes a chat model.
    #[serde(default)]
    pub capabilities: Vec<ModelCapability>,
}

/// One thing a model can do, as Ollama names them (`types/model/capability.go` of the
/// Ollama repository: `completion`, `tools`, `insert`, `vision`, `embedding`,
/// `thinking`); other names read as [`ModelCapability::Other`].
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelCapability {
    /// Text generation (chat, generate): what an `llm` step needs.
    Completion,
    /// Tool (function) calls.
    Tools,
    /// Fill-in-the-middle (`suffix`).
    Insert,
    /// Image input.
    Vision,
    /// Embeddings only (`/api/embed`); no chat.
    Embedding,
    /// Reasoning streamed apart from the answer (`think`).
    Thinking,
    /// A capability Nexus does not know (`image`, `audio`).
    #[serde(other)]
    Other,
}

impl ModelCapability {
    /// The provider's name for it (`other` for unknown ones).
    pub fn as_str(self) -> &'static str {
        match self {
            ModelCapability::Completion => "completion",
            ModelCapability::Tools => "tools",
            ModelCapability::Insert => "insert",
            ModelCapability::Vision => "vision",
            ModelCapability::Embedding => "embedding",
            ModelCapability::Thinking => "thinking",
            ModelCapability::Other => "other",
        }
    }
}

impl ModelInfo {
    /// A model known by its name only: `name` at provider `provider` (an id such as
    /// `openai@groq`), running at `locality`, with nothing else reported (no window, size,
    /// quantization or capabilities). What a provider that lists names only (`GET
    /// /models`, a configured list) reports, and the selector's stand-in for a model a
    /// step names but discovery did not list.
    pub fn named(provider: impl Into<String>, name: impl Into<String>, locality: Locality) -> Self {
        ModelInfo {
            provider: provider.into(),
            name: name.into(),
            locality,
            context_length: None,
            size_bytes: None,
            parameter_size: None,
            quantization: None,
            recommended_family: None,
            capabilities: Vec::new(),
            loaded_context_length: None,
        }
    }

    /// The `provider:name` reference used in workflow files and run records.
    pub fn reference(&self) -> String {
        format!("{}:{}", self.provider, self.name)
    }

    /// Whether the model can serve chat: the provider reports `completion`, or reports
    /// nothing at all (an embedding-only model reports `embedding` without `completion`).
    pub fn can_chat(&self) -> bool {
        self.capabilities.is_empty() || self.capabilities.contains(&ModelCapability::Completion)
    }

    /// Whether the provider reports `cap` for the model.
    pub fn has(&self, cap: ModelCapability) -> bool {
        self.capabilities.contains(&cap)
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
    /// A model's reply (its text, its tool calls, or both).
    Assistant,
    /// The result of a tool the model called ([`Message::tool_result`]).
    Tool,
}

impl Role {
    /// The role's name on the wire: `system`, `user`, `assistant`, `tool`, as OpenAI's
    /// Chat Completions API, Ollama's `/api/chat` and chat templates (llama.cpp) all
    /// spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

/// One chat message: text, and for an assistant the tool calls it made, for a tool
/// result the call it answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said (a tool's result as text, often JSON).
    pub content: String,
    /// The tool calls of an assistant message, in the order the model made them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<ToolCall>,
    /// For a [`Role::Tool`] message: the [`ToolCall::id`] it answers (OpenAI's
    /// `tool_call_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For a [`Role::Tool`] message: the tool's name (Ollama's `tool_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
}

impl Message {
    /// A message of `role` with `content` and nothing else.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
            tool_calls: Vec::new(),
            tool_call_id: None,
            tool_name: None,
        }
    }

    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new(Role::System, content)
    }

    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new(Role::User, content)
    }

    /// An assistant message with text only.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new(Role::Assistant, content)
    }

    /// The assistant message that made `calls` (with whatever text came with them), for
    /// the history sent back with their results.
    pub fn assistant_tool_calls(content: impl Into<String>, calls: Vec<ToolCall>) -> Self {
        Message {
            tool_calls: calls,
            ..Self::new(Role::Assistant, content)
        }
    }

    /// The result of `call`, as text (`content`; an error the tool returned is a result
    /// too, so the model can recover).
    pub fn tool_result(call: &ToolCall, content: impl Into<String>) -> Self {
        Message {
            tool_call_id: Some(call.id.clone()),
            tool_name: Some(call.name.clone()),
            ..Self::new(Role::Tool, content)
        }
    }
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
    /// Whether a reasoning model should think before answering (Ollama's `think`);
    /// `None` leaves it to the model's default (Ollama: a `thinking` model thinks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think: Option<bool>,
    /// The tools the model may call (empty: none, a plain chat). Only for a model whose
    /// provider reports [`Provider::native_tool_calls`]; any other provider refuses the
    /// request with [`ProviderErrorKind::InvalidRequest`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolSpec>,
    /// How the model may use [`ChatRequest::tools`] (ignored without tools).
    #[serde(default)]
    pub tool_choice: ToolChoice,
}

impl ChatRequest {
    /// A request for `model` with `messages` and at most `max_tokens` tokens generated:
    /// temperature 0.2, no schema, no tools, the model's default thinking.
    pub fn new(model: impl Into<String>, messages: Vec<Message>, max_tokens: u32) -> Self {
        ChatRequest {
            model: model.into(),
            messages,
            temperature: 0.2,
            max_tokens,
            json_schema: None,
            think: None,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
        }
    }
}

/// Token counts of one completion.
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
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
    /// Reasoning text of a thinking model (Ollama's `message.thinking`, a stripped
    /// `<think>` block): activity for the timeouts, kept apart from the answer.
    Reasoning(String),
    /// One complete tool call (id, name, parsed arguments), when the request offered
    /// tools: the provider assembles streamed fragments first ([`tools`]). The reply's
    /// `Done` then usually says `tool_calls` (OpenAI) or `stop` (Ollama).
    ToolCall(ToolCall),
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
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
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
    /// The reply passed the request's `max_tokens` (with [`ReplyMeter`]'s margin) or the
    /// byte cap: the provider ignored `max_tokens` or flooded. Nexus stopped reading.
    OversizedReply,
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
        kind: ProviderErrorKind::OversizedReply,
        signals: "more than `max_tokens` + 10 % + 16 chunks, or more text than the byte cap (256 bytes a token, at most 8 MiB), or an over-long stream line or body",
        action: ErrorAction::FallBack,
        counts_for_breaker: true,
        source: "OpenAI chat API (`max_tokens` ends a reply with `finish_reason: length`); a server that ignores it will again, so no retry (LiteLLM fallbacks)",
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
            ProviderErrorKind::OversizedReply => "oversized_reply",
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
}

/// Chunks a reply may carry beyond its `max_tokens`, in tenths of `max_tokens`
/// ([`reply_token_ceiling`]): providers count differently from the chunks Nexus sees (a
/// proxy that re-chunks, a server that streams a stop sequence or a split UTF-8 character
/// as its own chunk, Ollama's `num_predict` leaving out template tokens), so an honest
/// reply may arrive in a few more chunks than `max_tokens`; 10 % plus
/// [`REPLY_TOKEN_SLACK`] covers those while a flood is cut after at most 1.1 times the
/// work asked for.
pub const REPLY_TOKEN_MARGIN_TENTHS: u64 = 1;

/// Chunks a reply may carry beyond its `max_tokens` whatever `max_tokens` is (a short
/// reply's off-by-one counts: a final chunk, a stop sequence).
pub const REPLY_TOKEN_SLACK: u64 = 16;

/// Bytes of text one token may carry when a reply is metered against `max_tokens`: the
/// longest pieces of common vocabularies (runs of spaces, dashes or `=` in code) are
/// well under 256 bytes, while English averages about 4; a reply of N tokens may carry
/// `256 × ceiling(N)` bytes, at most [`REPLY_BYTE_CAP`].
pub const REPLY_BYTES_PER_TOKEN: usize = 256;

/// Most bytes of text one reply may carry, whatever its `max_tokens` (8 MiB: 16 times a
/// 128k-token reply at 4 bytes a token). With a few copies of the text (the reply, its
/// events, its record) a flooded attempt stays within tens of MB.
pub const REPLY_BYTE_CAP: usize = 8 << 20;

/// The most chunks (tokens) a reply to `max_tokens` may carry:
/// `max_tokens + max_tokens / 10 + 16`.
pub fn reply_token_ceiling(max_tokens: u32) -> u64 {
    let m = u64::from(max_tokens);
    m + m * REPLY_TOKEN_MARGIN_TENTHS / 10 + REPLY_TOKEN_SLACK
}

/// The most bytes of text a reply to `max_tokens` may carry:
/// `min(256 × reply_token_ceiling(max_tokens), 8 MiB)`.
pub fn reply_byte_ceiling(max_tokens: u32) -> usize {
    usize::try_from(reply_token_ceiling(max_tokens))
        .unwrap_or(usize::MAX)
        .saturating_mul(REPLY_BYTES_PER_TOKEN)
        .min(REPLY_BYTE_CAP)
}

/// Counts one reply against its `max_tokens`: tokens (one per streamed chunk, or the
/// provider's own count when it gives one) and bytes of text.
#[derive(Debug, Clone)]
pub struct ReplyMeter {
    max_tokens: u32,
    token_ceiling: u64,
    byte_ceiling: usize,
    tokens: u64,
    bytes: usize,
}

impl ReplyMeter {
    /// A meter for a request with this `max_tokens`.
    pub fn new(max_tokens: u32) -> Self {
        ReplyMeter {
            max_tokens,
            token_ceiling: reply_token_ceiling(max_tokens),
            byte_ceiling: reply_byte_ceiling(max_tokens),
            tokens: 0,
            bytes: 0,
        }
    }

    /// Tokens (chunks) admitted so far.
    pub fn tokens(&self) -> u64 {
        self.tokens
    }

    /// Bytes of text admitted so far.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The most bytes of text this reply may carry.
    pub fn byte_ceiling(&self) -> usize {
        self.byte_ceiling
    }

    /// Admits `bytes` of text worth `tokens` tokens.
    ///
    /// # Errors
    /// [`ProviderErrorKind::OversizedReply`] when the reply would pass the token or the
    /// byte ceiling; nothing is admitted then.
    pub fn admit(&mut self, bytes: usize, tokens: u64) -> Result<(), ProviderError> {
        let t = self.tokens.saturating_add(tokens);
        let b = self.bytes.saturating_add(bytes);
        if t > self.token_ceiling {
            return Err(self.cut(format!("more than {} tokens", self.token_ceiling)));
        }
        if b > self.byte_ceiling {
            return Err(self.cut(format!("more than {} bytes", self.byte_ceiling)));
        }
        self.tokens = t;
        self.bytes = b;
        Ok(())
    }

    /// Checks the provider's own count of completion tokens at the end of a reply.
    ///
    /// # Errors
    /// [`ProviderErrorKind::OversizedReply`] when it is over the token ceiling.
    pub fn check_reported(&self, completion_tokens: u64) -> Result<(), ProviderError> {
        if completion_tokens > self.token_ceiling {
            return Err(self.cut(format!(
                "{completion_tokens} completion tokens by the provider's count"
            )));
        }
        Ok(())
    }

    /// The error for a reply cut here; `why` says what passed the ceiling.
    pub fn cut(&self, why: String) -> ProviderError {
        ProviderError::new(
            ProviderErrorKind::OversizedReply,
            format!(
                "reply cut after {} tokens and {} bytes: {why} for max_tokens {} (the provider ignored max_tokens)",
                self.tokens, self.bytes, self.max_tokens
            ),
        )
    }
}

/// Wraps a chat stream so it carries at most what [`ReplyMeter`] admits for
/// `max_tokens`: each delta (answer or reasoning) and each tool call counts as one token; a delta that would pass a ceiling, or a
/// `Done` whose completion tokens do, becomes one
/// [`ProviderErrorKind::OversizedReply`] error that ends the stream (the inner stream is
/// dropped at once, which aborts the request).
pub fn metered(stream: ChatStream, max_tokens: u32) -> ChatStream {
    let state = Some((stream, ReplyMeter::new(max_tokens)));
    Box::pin(futures::stream::unfold(state, |state| async move {
        let (mut stream, mut meter) = state?;
        let item = futures::StreamExt::next(&mut stream).await?;
        match item {
            Ok(ChatChunk::Delta(text)) => match meter.admit(text.len(), 1) {
                Ok(()) => Some((Ok(ChatChunk::Delta(text)), Some((stream, meter)))),
                Err(e) => Some((Err(e), None)),
            },
            // Reasoning tokens are generated tokens: Ollama counts them in `eval_count` and
            // against `num_predict`.
            Ok(ChatChunk::Reasoning(text)) => match meter.admit(text.len(), 1) {
                Ok(()) => Some((Ok(ChatChunk::Reasoning(text)), Some((stream, meter)))),
                Err(e) => Some((Err(e), None)),
            },
            // A call's arguments were generated too: their JSON's bytes count, and the
            // call counts as one chunk (the provider's own count arrives with `Done`).
            Ok(ChatChunk::ToolCall(call)) => {
                let bytes = call.name.len() + call.arguments.to_string().len();
                match meter.admit(bytes, 1) {
                    Ok(()) => Some((Ok(ChatChunk::ToolCall(call)), Some((stream, meter)))),
                    Err(e) => Some((Err(e), None)),
                }
            }
            Ok(ChatChunk::Done {
                usage,
                finish_reason,
            }) => match meter.check_reported(usage.completion_tokens) {
                Ok(()) => Some((
                    Ok(ChatChunk::Done {
                        usage,
                        finish_reason,
                    }),
                    Some((stream, meter)),
                )),
                Err(e) => Some((Err(e), None)),
            },
            Err(e) => Some((Err(e), Some((stream, meter)))),
        }
    }))
}

/// The family of a provider id: the part before `@` (`ollama@gpu1` → `ollama`), the id
/// itself when it has none. One process may hold several providers of a family (two
/// Ollama hosts, several OpenAI-compatible endpoints, configured in `providers.yaml`);
/// a model reference that names the family (`ollama:llama3.1`) may be served by any of
/// them, one that names the instance (`ollama@gpu1:llama3.1`) only by that one.
pub fn family(id: &str) -> &str {
    id.split_once('@').map_or(id, |(f, _)| f)
}

/// Whether the provider `id` serves references to `wanted`: the same id, or `wanted` is
/// the family of `id` (`ollama` is served by `ollama@gpu1`; `ollama@gpu1` only by itself).
pub fn serves(id: &str, wanted: &str) -> bool {
    id == wanted || (!wanted.contains('@') && family(id) == wanted)
}

/// A source of models: Ollama, an OpenAI-compatible server, the embedded model.
#[async_trait]
pub trait Provider: Send + Sync {
    /// Stable id used in model references (`ollama`, `openai`, `embedded`), or
    /// `family@name` for one of several providers of a family (`ollama@gpu1`,
    /// [`family`]).
    fn id(&self) -> &str;

    /// Where the provider runs.
    fn locality(&self) -> Locality;

    /// The provider's name for people (`Ollama`), used in the selector's reasons;
    /// defaults to [`Provider::id`].
    fn display_name(&self) -> &str {
        self.id()
    }

    /// The full name of a model as the provider reads `name` (Ollama: `llama3.1` is
    /// `llama3.1:latest`); the selector matches installed models against it. Defaults
    /// to `name` unchanged.
    fn resolve_name(&self, name: &str) -> String {
        name.to_string()
    }

    /// How many requests to one model may be in flight at once (default: 1 for local and
    /// embedded models, 4 for cloud).
    fn max_concurrency(&self) -> usize {
        match self.locality() {
            Locality::Cloud => 4,
            Locality::Local | Locality::Embedded => 1,
        }
    }

    /// How many different models of this provider may have requests in flight at once
    /// (`None`, the default: no limit beyond each model's own
    /// [`Provider::max_concurrency`]). A local daemon keeps only so many models loaded
    /// (Ollama's `OLLAMA_MAX_LOADED_MODELS`) and unloads one to serve another, so more
    /// models in flight than that only make it reload models.
    fn max_loaded_models(&self) -> Option<usize> {
        None
    }

    /// Whether `model` takes [`ChatRequest::tools`] and answers with
    /// [`ChatChunk::ToolCall`]s (default: no). An agent step uses its JSON strategy for
    /// a model without native tool calls; such a provider refuses a request with tools
    /// ([`ProviderErrorKind::InvalidRequest`]).
    fn native_tool_calls(&self, model: &ModelInfo) -> bool {
        let _ = model;
        false
    }

    /// Whether the provider serves [`Provider::embed`] (default: no).
    fn can_embed(&self) -> bool {
        false
    }

    /// The models available now.
    ///
    /// # Errors
    /// [`ProviderErrorKind::Unavailable`] when the provider cannot be reached.
    async fn list_models(&self) -> Result<Vec<ModelInfo>, ProviderError>;

    /// Starts a streamed chat completion. The returned stream yields deltas and ends with
    /// one [`ChatChunk::Done`]; a stream that ends without it is treated as broken.
    /// Dropping the stream aborts the request. The stream must stay within
    /// [`ReplyMeter`]'s ceilings for `request.max_tokens` (wrap it in [`metered`]), and
    /// the provider must not buffer more of the wire than that either.
    ///
    /// # Errors
    /// Any [`ProviderError`]; errors after the stream started come through the stream.
    async fn chat(&self, request: ChatRequest) -> Result<ChatStream, ProviderError>;

    /// Embeds `request.inputs` with `request.model`: one vector per input, in order
    /// (see [`embed`]). The default refuses: the provider serves no embeddings.
    ///
    /// # Errors
    /// [`ProviderErrorKind::InvalidRequest`] from a provider without embeddings (the
    /// default) or for more than [`MAX_EMBED_INPUTS`] inputs;
    /// [`ProviderErrorKind::ContextOverflow`] for a text longer than the model's window
    /// when `truncate` is off; [`ProviderErrorKind::Protocol`] for a reply that is not
    /// one vector of one length per input; otherwise as [`Provider::chat`].
    async fn embed(&self, request: EmbedRequest) -> Result<Embeddings, ProviderError> {
        let _ = request;
        Err(embed::unsupported(self.id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn the_ceilings_follow_max_tokens_with_their_margin_and_the_cap() {
        assert_eq!(reply_token_ceiling(0), 16);
        assert_eq!(reply_token_ceiling(100), 126);
        assert_eq!(reply_byte_ceiling(100), 126 * 256);
        assert_eq!(reply_byte_ceiling(u32::MAX), REPLY_BYTE_CAP);
        // max_tokens 10: 10 + 1 + 16 = 27 chunks, 27 × 256 bytes.
        let mut m = ReplyMeter::new(10);
        assert!(m.admit(10, 27).is_ok());
        let err = m.admit(1, 1).err().map(|e| e.kind);
        assert_eq!(err, Some(ProviderErrorKind::OversizedReply));
        assert_eq!(m.tokens(), 27, "a refused chunk is not admitted");
        let mut m = ReplyMeter::new(10);
        let err = m.admit(27 * 256 + 1, 1).err().map(|e| e.kind);
        assert_eq!(err, Some(ProviderErrorKind::OversizedReply));
        assert!(m.check_reported(27).is_ok());
        assert!(m.check_reported(28).is_err());
    }

    #[tokio::test]
    async fn a_metered_stream_ends_with_one_oversized_error_at_the_ceiling() {
        let endless: ChatStream = Box::pin(futures::stream::repeat_with(|| {
            Ok(ChatChunk::Delta("flood ".into()))
        }));
        let items: Vec<_> = metered(endless, 20).collect().await;
        assert_eq!(items.len(), 20 + 2 + 16 + 1);
        assert!(
            items[..38]
                .iter()
                .all(|i| matches!(i, Ok(ChatChunk::Delta(_))))
        );
        assert_eq!(
            items[38].as_ref().err().map(|e| e.kind),
            Some(ProviderErrorKind::OversizedReply)
        );
        let honest: ChatStream = Box::pin(futures::stream::iter(vec![
            Ok(ChatChunk::Delta("a".into())),
            Ok(ChatChunk::Done {
                usage: Usage {
                    prompt_tokens: 1,
                    completion_tokens: 1,
                },
                finish_reason: Some("stop".into()),
            }),
        ]));
        let items: Vec<_> = metered(honest, 1).collect().await;
        assert_eq!(items.len(), 2);
        assert!(items.iter().all(Result::is_ok));
    }
}
