//! How the Ollama daemon words its failures, mapped to the engine's taxonomy
//! ([`nexus_engine::provider::TAXONOMY`]): the HTTP status first, the daemon's words
//! (`server/routes.go`, `server/images.go`, `llm/status.go` of the Ollama repository)
//! refine it.

use nexus_engine::provider::{ProviderError, ProviderErrorKind};

use super::wire::ErrorLine;
use crate::http;

/// Passes a 2xx response; classifies any other by its error text.
pub(super) async fn check(resp: reqwest::Response) -> Result<reqwest::Response, ProviderError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let body = http::error_body(resp).await;
    let message = serde_json::from_str::<ErrorLine>(&body)
        .map(|e| e.error)
        .unwrap_or(body);
    let message = if message.trim().is_empty() {
        http::status_message(status, "")
    } else {
        message
    };
    Err(classify_status(status, &message))
}

/// Classifies an HTTP error answer of the daemon by its status and words: a 4xx that
/// [`classify_message`] does not recognise is an invalid request (never retried), a 5xx
/// transient.
pub(super) fn classify_status(status: u16, message: &str) -> ProviderError {
    let fallback = if (400..500).contains(&status) && status != 408 && status != 429 {
        ProviderErrorKind::InvalidRequest
    } else if status == 429 {
        ProviderErrorKind::RateLimited
    } else {
        ProviderErrorKind::Transient
    };
    classify_with(message, fallback)
}

/// The daemon's words for a model that cannot be loaded for lack of memory
/// (`llm/status.go` `outOfMemorySubstrings` of the Ollama repository), lower case, plus
/// "unable to load".
pub const OUT_OF_MEMORY_PHRASES: &[&str] = &[
    "out of memory",
    "out of device memory",
    "cudamalloc failed",
    "hipmalloc failed",
    "failed to allocate",
    "allocation failed",
    "not enough memory",
    "insufficient memory",
    "vk_error_out_of_device_memory",
    "erroroutofmemory",
    "unable to load",
];

/// Classifies the daemon's `{"error": ...}` text without a status (a line of a stream): as [`classify_with`], anything unrecognised transient.
pub fn classify_message(message: &str) -> ProviderError {
    classify_with(message, ProviderErrorKind::Transient)
}

/// Classifies the daemon's error text, `fallback` when the words say nothing:
/// - "not found", "file does not exist" (a pull of an unknown name): model not found;
/// - [`OUT_OF_MEMORY_PHRASES`]: unavailable (the model cannot be loaded here; fall back);
/// - "invalid format" (`llm/llama_server.go`): an unsupported parameter (the structured
///   output is dropped);
/// - "does not support" (chat, generate, thinking, tools, insert: `server/routes.go`,
///   `server/images.go` `CheckCapabilities`): an invalid request, which no retry mends;
/// - llama.cpp's context and policy wording, relayed by Ollama, as for OpenAI servers.
pub fn classify_with(message: &str, fallback: ProviderErrorKind) -> ProviderError {
    let lower = message.to_ascii_lowercase();
    let kind = if lower.contains("not found") || lower.contains("file does not exist") {
        ProviderErrorKind::ModelNotFound
    } else if OUT_OF_MEMORY_PHRASES.iter().any(|p| lower.contains(p)) {
        ProviderErrorKind::Unavailable
    } else if lower.contains("invalid format") {
        ProviderErrorKind::UnsupportedParameter
    } else if lower.contains("does not support") {
        ProviderErrorKind::InvalidRequest
    } else {
        crate::openai::classify_message(message, fallback)
    };
    ProviderError::new(kind, format!("ollama: {message}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemons_words_decide_the_class() {
        let kind = |status: Option<u16>, msg: &str| match status {
            Some(s) => classify_status(s, msg).kind,
            None => classify_message(msg).kind,
        };
        use ProviderErrorKind as K;
        // server/routes.go ChatHandler and server/images.go CheckCapabilities.
        assert_eq!(
            kind(Some(400), "\"bge-m3\" does not support chat"),
            K::InvalidRequest
        );
        assert_eq!(
            kind(Some(400), "\"llama3.1\" does not support thinking"),
            K::InvalidRequest
        );
        assert_eq!(kind(Some(400), "does not support tools"), K::InvalidRequest);
        // llm/llama_server.go: a bad `format` (HTTP 500 when it reaches streamResponse).
        assert_eq!(
            kind(
                Some(500),
                "invalid format: \"yaml\"; expected \"json\" or a valid JSON Schema object"
            ),
            K::UnsupportedParameter
        );
        // llm/status.go out-of-memory wording: fall back, no retry.
        for oom in [
            "model requires more system memory (9.5 GiB) than is available: insufficient memory",
            "failed to allocate compute buffers",
            "CUDA error: out of memory",
            "llama runner process has terminated: cudaMalloc failed: out of memory",
        ] {
            assert_eq!(kind(Some(500), oom), K::Unavailable, "{oom}");
            assert_eq!(kind(None, oom), K::Unavailable, "{oom}");
        }
        // The desktop pull of an unknown name (server/images.go pullModelManifest).
        assert_eq!(
            kind(None, "pull model manifest: file does not exist"),
            K::ModelNotFound
        );
        assert_eq!(
            kind(Some(404), "model \"x\" not found, try pulling it first"),
            K::ModelNotFound
        );
        assert_eq!(kind(Some(400), "missing request body"), K::InvalidRequest);
        assert_eq!(
            kind(
                Some(503),
                "server busy, please try again.  maximum pending requests exceeded"
            ),
            K::Transient
        );
        assert_eq!(kind(None, "an unexpected failure"), K::Transient);
    }
}
