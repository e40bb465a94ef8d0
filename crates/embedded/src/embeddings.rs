//! The embedded provider's embeddings: `embedded:all-minilm-l6-v2`, the sentence encoder
//! of `nexus-embed` run in-process on a blocking thread (loaded at the first request and
//! kept), so memory collections work with neither Ollama nor a cloud endpoint.

use std::path::PathBuf;
use std::sync::Arc;

use nexus_embed::{DEFAULT_MODEL_NAME, SentenceEncoder};
use nexus_engine::provider::embed::{EmbedRequest, Embeddings, check_request};
use nexus_engine::provider::{ProviderError, ProviderErrorKind};

/// The encoder, loaded on first use from its folder.
pub(crate) struct Encoder {
    dir: PathBuf,
    loaded: tokio::sync::OnceCell<Arc<SentenceEncoder>>,
}

impl Encoder {
    pub(crate) fn new(dir: PathBuf) -> Self {
        Encoder {
            dir,
            loaded: tokio::sync::OnceCell::new(),
        }
    }

    async fn load(&self) -> Result<Arc<SentenceEncoder>, ProviderError> {
        let dir = self.dir.clone();
        self.loaded
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || SentenceEncoder::load(&dir))
                    .await
                    .map_err(|e| ProviderError::new(ProviderErrorKind::Internal, e.to_string()))?
                    .map(Arc::new)
                    .map_err(|e| match e {
                        nexus_embed::Error::Missing(_) => {
                            ProviderError::new(ProviderErrorKind::Unavailable, e.to_string())
                        }
                        _ => ProviderError::new(ProviderErrorKind::Internal, e.to_string()),
                    })
            })
            .await
            .cloned()
    }

    /// Embeds `request.inputs`; the model must be `all-minilm-l6-v2`.
    ///
    /// # Errors
    /// [`ProviderErrorKind::InvalidRequest`] for another model, a `dimensions` other than
    /// the model's, or too many inputs; [`ProviderErrorKind::Unavailable`] when the model
    /// files are missing; [`ProviderErrorKind::ContextOverflow`] for a text over the
    /// model's window without `truncate`.
    pub(crate) async fn embed(&self, request: EmbedRequest) -> Result<Embeddings, ProviderError> {
        check_request(&request)?;
        if request.model != DEFAULT_MODEL_NAME {
            return Err(ProviderError::new(
                ProviderErrorKind::InvalidRequest,
                format!(
                    "the embedded provider embeds with `{DEFAULT_MODEL_NAME}` only, not `{}`; write `embedded:{DEFAULT_MODEL_NAME}`",
                    request.model
                ),
            ));
        }
        let encoder = self.load().await?;
        if let Some(d) = request.dimensions
            && usize::try_from(d).ok() != Some(encoder.dimensions())
        {
            return Err(ProviderError::new(
                ProviderErrorKind::InvalidRequest,
                format!(
                    "`{DEFAULT_MODEL_NAME}` makes vectors of {} numbers, not {d}; leave `dimensions` unset",
                    encoder.dimensions()
                ),
            ));
        }
        let inputs = request.inputs;
        let count = inputs.len();
        let truncate = request.truncate;
        let (vectors, tokens) = tokio::task::spawn_blocking(move || {
            let vectors = encoder.embed(&inputs, truncate)?;
            let tokens = inputs
                .iter()
                .map(|t| {
                    encoder
                        .count_tokens(t)
                        .map(|n| n.min(nexus_embed::MAX_TOKENS))
                })
                .sum::<Result<usize, _>>()?;
            Ok::<_, nexus_embed::Error>((vectors, tokens))
        })
        .await
        .map_err(|e| ProviderError::new(ProviderErrorKind::Internal, e.to_string()))?
        .map_err(|e| match e {
            nexus_embed::Error::TooLong { .. } => {
                ProviderError::new(ProviderErrorKind::ContextOverflow, e.to_string())
            }
            _ => ProviderError::new(ProviderErrorKind::Internal, e.to_string()),
        })?;
        Embeddings::checked(
            DEFAULT_MODEL_NAME.to_string(),
            vectors,
            count,
            u64::try_from(tokens).unwrap_or(u64::MAX),
        )
    }
}
