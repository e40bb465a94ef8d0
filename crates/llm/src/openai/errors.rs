//! How OpenAI-compatible servers word their failures (OpenAI, Anthropic-style proxies,
//! llama.cpp and llama-cpp-python servers, vLLM), mapped to the engine's taxonomy
//! ([`nexus_engine::provider::TAXONOMY`]). The HTTP status decides first
//! ([`crate::http::status_kind`]); the body's wording refines it.

use nexus_engine::provider::{ProviderError, ProviderErrorKind};

use crate::http::{status_kind, status_message};

/// Phrases of context-window errors: OpenAI `context_length_exceeded`, llama.cpp server
/// "exceed context window", Anthropic "prompt is too long", vLLM "maximum context length".
pub(crate) const CONTEXT_PHRASES: &[&str] = &[
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
pub(crate) const POLICY_PHRASES: &[&str] = &[
    "content_policy",
    "content policy",
    "content_filter",
    "safety system",
];

/// Phrases of an exhausted quota or billing (OpenAI `insufficient_quota`).
const QUOTA_PHRASES: &[&str] = &["insufficient_quota", "billing"];

/// Classifies an error message without a status (errors inside a stream): context
/// overflow, content policy, quota and missing models by their wording, otherwise
/// `fallback`.
pub fn classify_message(message: &str, fallback: ProviderErrorKind) -> ProviderErrorKind {
    let lower = message.to_ascii_lowercase();
    let has = |phrases: &[&str]| phrases.iter().any(|p| lower.contains(p));
    if has(CONTEXT_PHRASES) {
        ProviderErrorKind::ContextOverflow
    } else if has(POLICY_PHRASES) {
        ProviderErrorKind::ContentPolicy
    } else if has(QUOTA_PHRASES) {
        ProviderErrorKind::Quota
    } else if lower.contains("not found") && lower.contains("model") {
        ProviderErrorKind::ModelNotFound
    } else {
        fallback
    }
}

/// Classifies an HTTP error status and body from an OpenAI-compatible server
/// ([`nexus_engine::provider::TAXONOMY`]): 401/403 auth; 402 and 429
/// `insufficient_quota` quota; 404 missing model; 429 rate limit; 408, 409, 5xx
/// transient; 4xx by the body's wording (context overflow, refused parameter, content
/// policy), else an invalid request. The message is `HTTP <status>: <body>` (500 bytes
/// at most).
pub fn from_status(status: u16, body: &str) -> ProviderError {
    let lower = body.to_ascii_lowercase();
    let has = |phrases: &[&str]| phrases.iter().any(|p| lower.contains(p));
    let kind = match (status, status_kind(status)) {
        (429, _) if has(QUOTA_PHRASES) => ProviderErrorKind::Quota,
        // llama-cpp-python answers a request-validation error (e.g. an unknown
        // `response_format` type) with HTTP 500: the body decides.
        (500, _) if has(PARAMETER_PHRASES) && lower.contains("validation error") => {
            ProviderErrorKind::UnsupportedParameter
        }
        (_, ProviderErrorKind::Transient) if !has(CONTEXT_PHRASES) => ProviderErrorKind::Transient,
        (
            _,
            kind @ (ProviderErrorKind::Auth
            | ProviderErrorKind::Quota
            | ProviderErrorKind::RateLimited
            | ProviderErrorKind::ModelNotFound),
        ) => kind,
        _ if has(CONTEXT_PHRASES) => ProviderErrorKind::ContextOverflow,
        _ if has(POLICY_PHRASES) => ProviderErrorKind::ContentPolicy,
        (400 | 422, _) if has(PARAMETER_PHRASES) => ProviderErrorKind::UnsupportedParameter,
        _ => ProviderErrorKind::InvalidRequest,
    };
    ProviderError::new(kind, status_message(status, body))
}
