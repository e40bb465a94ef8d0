//! Embeddings, provider-neutral: texts in, one vector of `f32` per text out
//! ([`super::Provider::embed`]), for memory collections and their search.
//!
//! Wire shapes the providers map these to:
//! - Ollama `POST /api/embed` (`docs/api.md` "Generate Embeddings", `api/types.go`
//!   `EmbedRequest`/`EmbedResponse`, `server/routes.go` `EmbedHandler` of the Ollama
//!   repository): `{"model", "input": "text" | ["text", ...], "truncate", "dimensions"}`
//!   → `{"model", "embeddings": [[...], ...], "prompt_eval_count"}`; the daemon
//!   normalises every vector to unit length, and again after cutting it to
//!   `dimensions`.
//! - OpenAI `POST /embeddings` ("Create embeddings" of OpenAI's API reference):
//!   `{"model", "input": [...], "dimensions", "encoding_format": "float"}` →
//!   `{"data": [{"index", "embedding": [...]}], "usage": {"prompt_tokens"}}`.
//!
//! Invariant: an [`Embeddings`] holds exactly one vector per input, in input order, all
//! of [`Embeddings::dimensions`] numbers ([`Embeddings::checked`]); a reply that is not
//! so is a [`super::ProviderErrorKind::Protocol`] error.

use serde::{Deserialize, Serialize};

use super::{ProviderError, ProviderErrorKind};

/// Most texts one [`EmbedRequest`] may carry: a caller embeds more in batches (each
/// vector's JSON is up to ~100 KB, so a reply stays within tens of MB).
pub const MAX_EMBED_INPUTS: usize = 256;

/// An embeddings request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbedRequest {
    /// The model's name at the provider (without the `provider:` prefix).
    pub model: String,
    /// The texts, at most [`MAX_EMBED_INPUTS`].
    pub inputs: Vec<String>,
    /// Cut each vector to this many numbers (Ollama and OpenAI `dimensions`); `None`
    /// keeps the model's own length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<u32>,
    /// Whether the provider may cut a text longer than the model's window (Ollama's
    /// `truncate`, on by default at the daemon). Nexus sends `false` unless asked, so a
    /// text that does not fit is a [`ProviderErrorKind::ContextOverflow`] instead of a
    /// vector of its first part only.
    #[serde(default)]
    pub truncate: bool,
}

/// The vectors of an [`EmbedRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embeddings {
    /// The model that made them, as the provider names it.
    pub model: String,
    /// One vector per input, in input order.
    pub vectors: Vec<Vec<f32>>,
    /// Numbers in each vector (0 when there are no inputs).
    pub dimensions: usize,
    /// Tokens of the inputs, as the provider counted them (Ollama `prompt_eval_count`,
    /// OpenAI `usage.prompt_tokens`; 0 when it does not say).
    pub prompt_tokens: u64,
}

impl Embeddings {
    /// Checks a provider's reply against its request's `inputs` texts: one vector per
    /// input, all of one length, none empty; sets [`Embeddings::dimensions`].
    ///
    /// # Errors
    /// [`ProviderErrorKind::Protocol`] naming the first vector that breaks the rule.
    pub fn checked(
        model: String,
        vectors: Vec<Vec<f32>>,
        inputs: usize,
        prompt_tokens: u64,
    ) -> Result<Self, ProviderError> {
        if vectors.len() != inputs {
            return Err(ProviderError::new(
                ProviderErrorKind::Protocol,
                format!(
                    "the provider sent {} embeddings for {inputs} inputs",
                    vectors.len()
                ),
            ));
        }
        let dimensions = vectors.first().map_or(0, Vec::len);
        if let Some((i, v)) = vectors
            .iter()
            .enumerate()
            .find(|(_, v)| v.is_empty() || v.len() != dimensions)
        {
            return Err(ProviderError::new(
                ProviderErrorKind::Protocol,
                format!(
                    "embedding {i} has {} numbers where embedding 0 has {dimensions}",
                    v.len()
                ),
            ));
        }
        Ok(Embeddings {
            model,
            vectors,
            dimensions,
            prompt_tokens,
        })
    }
}

/// The error of a provider that does not serve embeddings (the default of
/// [`super::Provider::embed`]): an invalid request, so the engine moves on to a provider
/// that does.
pub fn unsupported(provider: &str) -> ProviderError {
    ProviderError::new(
        ProviderErrorKind::InvalidRequest,
        format!(
            "the `{provider}` provider does not serve embeddings; use an Ollama model or an OpenAI-compatible /embeddings endpoint"
        ),
    )
}

/// Checks a request before it is sent: at least one input and at most
/// [`MAX_EMBED_INPUTS`].
///
/// # Errors
/// [`ProviderErrorKind::InvalidRequest`] saying how many inputs there are and the limit.
pub fn check_request(request: &EmbedRequest) -> Result<(), ProviderError> {
    if request.inputs.len() > MAX_EMBED_INPUTS {
        return Err(ProviderError::new(
            ProviderErrorKind::InvalidRequest,
            format!(
                "{} texts in one embeddings request; send at most {MAX_EMBED_INPUTS} at a time",
                request.inputs.len()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_must_hold_one_vector_of_one_length_per_input() {
        let ok = Embeddings::checked("m".into(), vec![vec![0.6, 0.8], vec![1.0, 0.0]], 2, 5);
        assert_eq!(ok.map(|e| e.dimensions).ok(), Some(2));
        let few = Embeddings::checked("m".into(), vec![vec![1.0]], 2, 0);
        assert!(few.is_err_and(|e| e.kind == ProviderErrorKind::Protocol
            && e.message.contains("1 embeddings for 2 inputs")));
        let ragged = Embeddings::checked("m".into(), vec![vec![1.0, 0.0], vec![1.0]], 2, 0);
        assert!(ragged.is_err_and(|e| e.message.contains("embedding 1 has 1 numbers")));
        let none = Embeddings::checked("m".into(), vec![], 0, 0);
        assert_eq!(none.map(|e| e.dimensions).ok(), Some(0));
    }
}
