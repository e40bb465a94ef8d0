//! Nexus model providers that speak HTTP: Ollama (its REST API, NDJSON streams),
//! OpenAI-compatible chat completions and Anthropic's Messages API (both through
//! `reqwest`, with SSE streaming).
//!
//! Each provider keeps its wire format and its vendors' error wording in its own module
//! ([`ollama`], [`openai`], [`anthropic`]); what they share (HTTP statuses,
//! `Retry-After`, capped reads) is in [`http`]. The rest of Nexus sees only [`nexus_engine::provider`] types: a
//! failure reaches the engine as a taxonomy class, never as a status or a vendor's
//! words. API keys come from the environment only and are never written to files or the
//! database.
//!
//! Invariant: a reply never holds more than [`nexus_engine::provider::ReplyMeter`]
//! admits for the request's `max_tokens`, and no read of the wire buffers more than the
//! caps of [`http`].

pub mod anthropic;
pub mod http;
pub mod ollama;
pub mod openai;

pub use anthropic::AnthropicProvider;
pub use ollama::OllamaProvider;
pub use openai::OpenAiProvider;

/// Errors reading a provider's wire (internal to the providers; each becomes a
/// [`nexus_engine::provider::ProviderError`] with its taxonomy class).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The HTTP transport failed.
    #[error(transparent)]
    Transport(#[from] reqwest::Error),
    /// One event of a stream (an SSE event, an NDJSON line) passed the cap, bytes.
    #[error("one event of the reply stream passed {0} bytes")]
    EventTooLong(usize),
    /// An NDJSON stream broke or one of its lines passed [`http::EVENT_CAP`].
    #[error("the NDJSON stream: {0}")]
    Lines(#[from] tokio_util::codec::LinesCodecError),
    /// A response body passed the cap, bytes.
    #[error("the response body passed {0} bytes")]
    BodyTooLong(usize),
}
