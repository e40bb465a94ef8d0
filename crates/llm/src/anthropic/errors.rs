//! Anthropic's error types mapped to the engine's taxonomy
//! ([`nexus_engine::provider::TAXONOMY`]).
//!
//! Source: Anthropic's API docs, "Errors": every error body is `{"type": "error",
//! "error": {"type", "message"}, "request_id"}`, and the type says what went wrong:
//!
//! | HTTP | `error.type` | class |
//! |---|---|---|
//! | 400 | `invalid_request_error` | [`ProviderErrorKind::InvalidRequest`], refined by its words |
//! | 401 | `authentication_error` | [`ProviderErrorKind::Auth`] |
//! | 402 | `billing_error` | [`ProviderErrorKind::Quota`] |
//! | 403 | `permission_error` | [`ProviderErrorKind::Auth`] |
//! | 404 | `not_found_error` | [`ProviderErrorKind::ModelNotFound`] |
//! | 413 | `request_too_large` | [`ProviderErrorKind::ContextOverflow`] |
//! | 429 | `rate_limit_error` | [`ProviderErrorKind::RateLimited`] (with `Retry-After`) |
//! | 500 | `api_error` | [`ProviderErrorKind::Transient`] |
//! | 504 | `timeout_error` | [`ProviderErrorKind::Transient`] |
//! | 529 | `overloaded_error` | [`ProviderErrorKind::Transient`] |
//!
//! An `invalid_request_error` is a context overflow when its message says the prompt
//! does not fit ("prompt is too long: 210000 tokens > 200000 maximum", "input length
//! and `max_tokens` exceed context limit"), a quota when it says the credit balance is
//! too low (Anthropic answers that with 400), a content-policy refusal when it names
//! the content filtering policy, an unsupported parameter when it refuses a field
//! ("Extra inputs are not permitted", "not supported"). A request over the API's byte
//! limit (413) can only be fixed by a smaller prompt, which is what the
//! `larger_context` action's trimming rung does, so it is a context overflow. A body
//! that is not Anthropic's (a proxy's page) is classified by its status and words as
//! the OpenAI-compatible provider does ([`crate::openai::from_status`]).

use nexus_engine::provider::{ProviderError, ProviderErrorKind};

use super::wire;
use crate::http::status_message;
use crate::openai::errors::{CONTEXT_PHRASES, POLICY_PHRASES};

/// Phrases of a refused field: the API's validation of unknown fields ("Extra inputs
/// are not permitted") and of features a model lacks ("... is not supported").
const PARAMETER_PHRASES: &[&str] = &[
    "extra inputs are not permitted",
    "not supported",
    "unsupported",
];

/// Phrases of an exhausted balance, which Anthropic answers with 400
/// `invalid_request_error` ("Your credit balance is too low to access the Anthropic
/// API").
const QUOTA_PHRASES: &[&str] = &["credit balance", "billing"];

/// Phrases of a content-policy refusal ("Output blocked by content filtering policy").
const ANTHROPIC_POLICY_PHRASES: &[&str] = &["content filtering"];

/// The taxonomy class of an Anthropic error of `error_type` with `message`, for the
/// table in this module's header. An unknown type is classified by `status` when there
/// is one ([`crate::http::status_kind`]), else (a stream's `error` event) as a
/// protocol error.
pub fn classify(status: Option<u16>, error_type: &str, message: &str) -> ProviderErrorKind {
    let lower = message.to_ascii_lowercase();
    let has = |phrases: &[&str]| phrases.iter().any(|p| lower.contains(p));
    match error_type {
        "invalid_request_error" => {
            if has(CONTEXT_PHRASES) {
                ProviderErrorKind::ContextOverflow
            } else if has(QUOTA_PHRASES) {
                ProviderErrorKind::Quota
            } else if has(POLICY_PHRASES) || has(ANTHROPIC_POLICY_PHRASES) {
                ProviderErrorKind::ContentPolicy
            } else if has(PARAMETER_PHRASES) {
                ProviderErrorKind::UnsupportedParameter
            } else {
                ProviderErrorKind::InvalidRequest
            }
        }
        "authentication_error" | "permission_error" => ProviderErrorKind::Auth,
        "billing_error" => ProviderErrorKind::Quota,
        "not_found_error" => ProviderErrorKind::ModelNotFound,
        "request_too_large" => ProviderErrorKind::ContextOverflow,
        "rate_limit_error" => ProviderErrorKind::RateLimited,
        "api_error" | "overloaded_error" | "timeout_error" => ProviderErrorKind::Transient,
        _ => status.map_or(ProviderErrorKind::Protocol, crate::http::status_kind),
    }
}

/// Classifies a non-2xx answer of status `status` with body `body` by the error's
/// `type` ([`classify`]); a body that is not Anthropic's error object by its status and
/// words ([`crate::openai::from_status`]). The message is `HTTP <status>: <body>` (500
/// bytes at most); the caller adds the `Retry-After`.
pub fn from_status(status: u16, body: &str) -> ProviderError {
    match serde_json::from_str::<wire::ErrorBody>(body) {
        Ok(b) if !b.error.kind.is_empty() => ProviderError::new(
            classify(Some(status), &b.error.kind, &b.error.message),
            status_message(status, body),
        ),
        _ => crate::openai::from_status(status, body),
    }
}

/// The error of a stream's `error` event (`{"type": "error", "error": {"type",
/// "message"}}` after the HTTP 200, e.g. `overloaded_error` when the API is overloaded
/// mid-reply): classified by [`classify`] without a status, worded `<type>: <message>`.
pub(crate) fn from_event(error: &wire::ErrorDetail) -> ProviderError {
    ProviderError::new(
        classify(None, &error.kind, &error.message),
        format!("{}: {}", error.kind, error.message),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ProviderErrorKind as K;

    fn body(kind: &str, message: &str) -> String {
        serde_json::json!({
            "type": "error",
            "error": {"type": kind, "message": message},
            "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"
        })
        .to_string()
    }

    #[test]
    fn each_documented_error_type_has_its_class() {
        // "Errors": the status and type of each documented error, with its example words.
        let cases = [
            (
                400,
                "invalid_request_error",
                "messages: field required",
                K::InvalidRequest,
            ),
            (401, "authentication_error", "invalid x-api-key", K::Auth),
            (
                402,
                "billing_error",
                "There's an issue with your billing",
                K::Quota,
            ),
            (
                403,
                "permission_error",
                "Your API key does not have permission",
                K::Auth,
            ),
            (
                404,
                "not_found_error",
                "model: claude-nope",
                K::ModelNotFound,
            ),
            (
                413,
                "request_too_large",
                "Request exceeds the maximum allowed number of bytes.",
                K::ContextOverflow,
            ),
            (
                429,
                "rate_limit_error",
                "Number of request tokens has exceeded your rate limit",
                K::RateLimited,
            ),
            (500, "api_error", "Internal server error", K::Transient),
            (504, "timeout_error", "Request timed out", K::Transient),
            (529, "overloaded_error", "Overloaded", K::Transient),
        ];
        for (status, kind, message, want) in cases {
            let e = from_status(status, &body(kind, message));
            assert_eq!(e.kind, want, "{status} {kind}");
            assert!(
                e.message.starts_with(&format!("HTTP {status}: ")),
                "{}",
                e.message
            );
            assert!(e.message.contains(message), "{}", e.message);
        }
    }

    #[test]
    fn an_invalid_request_is_refined_by_its_words() {
        let cases = [
            (
                "prompt is too long: 210000 tokens > 200000 maximum",
                K::ContextOverflow,
            ),
            (
                "input length and `max_tokens` exceed context limit: 197000 + 8192 > 200000, decrease input length or `max_tokens` and try again",
                K::ContextOverflow,
            ),
            (
                "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.",
                K::Quota,
            ),
            (
                "Output blocked by content filtering policy",
                K::ContentPolicy,
            ),
            (
                "top_k: Extra inputs are not permitted",
                K::UnsupportedParameter,
            ),
            (
                "messages: roles must alternate between \"user\" and \"assistant\"",
                K::InvalidRequest,
            ),
        ];
        for (message, want) in cases {
            let e = from_status(400, &body("invalid_request_error", message));
            assert_eq!(e.kind, want, "{message}");
        }
    }

    #[test]
    fn other_bodies_and_types_fall_back_to_the_status() {
        // A proxy's page, not Anthropic's error object.
        assert_eq!(
            from_status(502, "<html>Bad Gateway</html>").kind,
            K::Transient
        );
        assert_eq!(from_status(401, "").kind, K::Auth);
        // A type this version does not know: the status decides.
        assert_eq!(
            from_status(429, &body("brand_new_error", "x")).kind,
            K::RateLimited
        );
        assert_eq!(
            from_status(418, &body("brand_new_error", "x")).kind,
            K::InvalidRequest
        );
    }

    #[test]
    fn a_stream_error_event_is_classified_by_its_type() {
        let overloaded = wire::ErrorDetail {
            kind: "overloaded_error".into(),
            message: "Overloaded".into(),
        };
        let e = from_event(&overloaded);
        assert_eq!(e.kind, K::Transient);
        assert_eq!(e.message, "overloaded_error: Overloaded");
        let unknown = wire::ErrorDetail {
            kind: "mystery".into(),
            message: "?".into(),
        };
        assert_eq!(from_event(&unknown).kind, K::Protocol);
    }
}
