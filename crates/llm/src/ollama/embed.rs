//! Embeddings from the daemon: `POST /api/embed` (`docs/api.md` "Generate Embeddings",
//! `server/routes.go` `EmbedHandler` of the Ollama repository).
//!
//! The daemon takes a list of texts, answers one unit-length vector per text in order
//! (`embeddings`) and the tokens it read (`prompt_eval_count`). Any model may embed (the
//! handler asks for no capability), an `embedding` model is made for it. A text longer
//! than the model's window is cut unless `truncate` is false; Nexus sends
//! [`EmbedRequest::truncate`] (false unless asked), so such a text is the daemon's 400
//! "the input length exceeds the context length", a
//! [`ProviderErrorKind::ContextOverflow`]. An unknown model is its 404 "model '…' not
//! found" ([`ProviderErrorKind::ModelNotFound`]).

use nexus_engine::provider::{EmbedRequest, Embeddings, ProviderError, ProviderErrorKind};

use super::{OllamaProvider, wire};
use crate::http::{self, classify_wire};

/// Embeds `request.inputs` (at most [`nexus_engine::provider::MAX_EMBED_INPUTS`]) with
/// the daemon; no inputs, no request.
///
/// # Errors
/// As [`nexus_engine::provider::Provider::embed`].
pub(super) async fn embed(
    provider: &OllamaProvider,
    request: &EmbedRequest,
) -> Result<Embeddings, ProviderError> {
    nexus_engine::provider::embed::check_request(request)?;
    if request.inputs.is_empty() {
        return Embeddings::checked(request.model.clone(), Vec::new(), 0, 0);
    }
    let body = wire::EmbedRequest {
        model: &request.model,
        input: &request.inputs,
        truncate: request.truncate,
        dimensions: request.dimensions.filter(|&d| d > 0),
    };
    let resp = provider.post("/api/embed", &body).await?;
    let bytes = http::read_capped(resp, http::embed_body_cap(request.inputs.len()))
        .await
        .map_err(|e| classify_wire(&e))?;
    let reply: wire::EmbedResponse = serde_json::from_slice(&bytes).map_err(|e| {
        ProviderError::new(
            ProviderErrorKind::Protocol,
            format!("bad embeddings from Ollama: {e}"),
        )
    })?;
    let model = if reply.model.is_empty() {
        request.model.clone()
    } else {
        reply.model
    };
    Embeddings::checked(
        model,
        reply.embeddings,
        request.inputs.len(),
        reply.prompt_eval_count,
    )
}
