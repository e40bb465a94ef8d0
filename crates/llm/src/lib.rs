//! Nexus model providers that speak HTTP: Ollama (through `ollama-rs`) and
//! OpenAI-compatible chat completions (through `reqwest`, with SSE streaming).
//!
//! Each provider keeps its wire format in its own module; the rest of Nexus sees only
//! [`nexus_engine::provider`] types. API keys come from the environment only and are
//! never written to files or the database.

pub mod ollama;
pub mod openai;

pub use ollama::OllamaProvider;
pub use openai::OpenAiProvider;

use nexus_engine::provider::{ProviderError, ProviderErrorKind};

/// Classifies a `reqwest` transport error: a refused or failed connection means the
/// provider is unavailable (fall back at once), a timeout is a timeout, anything else
/// (reset mid-body, decode) is transient.
pub(crate) fn classify_reqwest(e: &reqwest::Error) -> ProviderError {
    let kind = if e.is_connect() {
        ProviderErrorKind::Unavailable
    } else if e.is_timeout() {
        ProviderErrorKind::Timeout
    } else if e.is_builder() || e.is_request() && e.url().is_none() {
        ProviderErrorKind::InvalidRequest
    } else {
        ProviderErrorKind::Transient
    };
    // reqwest's Display omits the cause ("error sending request"); add the chain.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    ProviderError::new(kind, message)
}
