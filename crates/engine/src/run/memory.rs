//! The executor of `memory` tool calls (from `kind: tool` steps and agents): a document
//! is cut into chunks (`text-splitter`, by characters, at the tool's size and overlap),
//! embedded in batches by the embedder's provider ([`crate::provider::Provider::embed`])
//! and stored through the run store's [`crate::memory::MemoryStore`]; a search embeds
//! the query with the same embedder and asks the store for the nearest chunks.
//!
//! Invariants: a document's text passes the run's guardrail policy (stage `memory`)
//! before it is chunked, so nothing a rule redacts or blocks is stored; a text that goes
//! to a cloud embedder also passes the cloud-scope rules; every request carries at most
//! [`MAX_EMBED_INPUTS`] texts.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use text_splitter::{ChunkConfig, TextSplitter};

use super::{Engine, RunShared, StepOutput};
use crate::memory::{CollectionKey, MemoryChunk, MemoryDocument, MemoryQuery, MemoryStore};
use crate::provider::embed::{EmbedRequest, MAX_EMBED_INPUTS};
use crate::provider::{Locality, Provider, ProviderErrorKind};
use crate::store::StepRecord;
use crate::workflow::MemoryTool;

/// A memory call's context: the engine, the run, the step's record.
pub(super) struct MemoryCall<'a> {
    pub engine: &'a Engine,
    pub shared: &'a Arc<RunShared>,
    pub step_id: &'a str,
    pub tool: &'a MemoryTool,
    pub args: &'a Map<String, Value>,
}

impl MemoryCall<'_> {
    /// Runs the call; its output, or why the step fails.
    pub(super) async fn run(&self, rec: &mut StepRecord) -> Result<StepOutput, String> {
        let store = self
            .engine
            .store
            .as_ref()
            .and_then(|s| s.memory())
            .ok_or("memory needs a run database; this engine runs without one")?;
        let provider = self.embedder()?;
        match self.str_arg("op") {
            Some("add") => self.add(store, &provider, rec).await,
            Some("search") => self.search(store, &provider).await,
            Some("delete") => {
                let document = self
                    .str_arg("document")
                    .ok_or("`delete` needs `document`")?;
                let deleted = store
                    .delete_document(&self.tool.collection, document)
                    .await
                    .map_err(|e| e.0)?;
                Ok(json_output(json!({ "deleted": deleted })))
            }
            Some(other) => Err(format!(
                "`op: {other}` is not an operation of a memory tool; use add, search or delete"
            )),
            None => Err("the call gives no `op` (add, search or delete)".into()),
        }
    }

    fn str_arg(&self, key: &str) -> Option<&str> {
        self.args.get(key).and_then(Value::as_str)
    }

    /// The embedder's provider and model.
    fn embedder(&self) -> Result<(Arc<dyn Provider>, String), String> {
        let reference = self.tool.embedder();
        let (id, model) = reference.split_once(':').unwrap_or((reference, ""));
        let provider = self
            .engine
            .providers
            .iter()
            .find(|p| p.id() == id)
            .ok_or_else(|| {
                format!("embedder `{reference}`: no `{id}` provider is configured here")
            })?;
        if !provider.can_embed() {
            return Err(format!(
                "embedder `{reference}`: the `{id}` provider serves no embeddings"
            ));
        }
        Ok((Arc::clone(provider), model.to_string()))
    }

    /// Embeds `texts` in batches; the vectors and their length.
    async fn embed(
        &self,
        (provider, model): &(Arc<dyn Provider>, String),
        texts: Vec<String>,
    ) -> Result<(Vec<Vec<f32>>, usize), EmbedError> {
        let texts = self
            .guard_cloud(provider.as_ref(), texts)
            .map_err(EmbedError::Other)?;
        let mut vectors = Vec::with_capacity(texts.len());
        let mut dimensions = 0;
        for batch in texts.chunks(MAX_EMBED_INPUTS) {
            let request = EmbedRequest {
                model: model.clone(),
                inputs: batch.to_vec(),
                dimensions: None,
                truncate: false,
            };
            let reply = provider.embed(request).await.map_err(|e| {
                let message = format!(
                    "embedder `{}`: {} ({})",
                    self.tool.embedder(),
                    e.message,
                    e.kind.as_str()
                );
                if e.kind == ProviderErrorKind::ContextOverflow {
                    EmbedError::Overflow(message)
                } else {
                    EmbedError::Other(message)
                }
            })?;
            dimensions = reply.dimensions;
            vectors.extend(reply.vectors);
        }
        Ok((vectors, dimensions))
    }

    /// The cloud-scope guardrail rules on texts bound for a cloud embedder.
    fn guard_cloud(
        &self,
        provider: &dyn Provider,
        texts: Vec<String>,
    ) -> Result<Vec<String>, String> {
        let Some(policy) = self.shared.guard_cloud.as_ref() else {
            return Ok(texts);
        };
        if provider.locality() != Locality::Cloud {
            return Ok(texts);
        }
        texts
            .into_iter()
            .map(|t| {
                let outcome = policy.apply(&t);
                if outcome.blocked || outcome.needs_approval {
                    Err(format!(
                        "guardrails keep this text from the cloud embedder `{}`: {}",
                        self.tool.embedder(),
                        outcome
                            .verdicts
                            .iter()
                            .map(super::guard::finding_text)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                } else {
                    Ok(outcome.text)
                }
            })
            .collect()
    }

    fn key(&self, dimensions: usize) -> CollectionKey {
        CollectionKey {
            name: self.tool.collection.clone(),
            embedder: self.tool.embedder().to_string(),
            dimensions,
        }
    }

    async fn add(
        &self,
        store: &dyn MemoryStore,
        provider: &(Arc<dyn Provider>, String),
        rec: &mut StepRecord,
    ) -> Result<StepOutput, String> {
        let text = self
            .str_arg("text")
            .ok_or("`add` needs `text`")?
            .to_string();
        let text = self
            .engine
            .guard_text(self.shared, self.step_id, "memory", text, rec)
            .await
            .map_err(|e| e.message)?;
        let id = match self.str_arg("document") {
            Some(id) if !id.trim().is_empty() => id.to_string(),
            _ => document_id(&text),
        };
        let metadata = match self.args.get("metadata") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => return Err(format!("`metadata` is {other}, not an object")),
        };
        let (chunks, vectors, dimensions) = self.chunk_and_embed(provider, &text).await?;
        let document = MemoryDocument {
            id: id.clone(),
            metadata,
            chunks: chunks
                .into_iter()
                .zip(vectors)
                .enumerate()
                .map(|(index, (text, vector))| MemoryChunk {
                    index,
                    text,
                    vector,
                })
                .collect(),
        };
        store
            .add_document(&self.key(dimensions), &document)
            .await
            .map_err(|e| e.0)?;
        Ok(json_output(json!({
            "collection": self.tool.collection,
            "document": id,
            "chunks": document.chunks.len(),
        })))
    }

    /// The text's chunks and their vectors. A chunk longer than the embedder's window
    /// (characters are not tokens: code and numbers take more tokens a character) makes
    /// the whole text be cut again at half the size, up to [`RESPLITS`] times, so every
    /// part of it is embedded instead of only the start of a long chunk.
    async fn chunk_and_embed(
        &self,
        provider: &(Arc<dyn Provider>, String),
        text: &str,
    ) -> Result<(Vec<String>, Vec<Vec<f32>>, usize), String> {
        let mut size = self
            .tool
            .chunk_size
            .unwrap_or(MemoryTool::DEFAULT_CHUNK_SIZE);
        let mut overlap = self
            .tool
            .chunk_overlap
            .unwrap_or(MemoryTool::DEFAULT_CHUNK_OVERLAP.min(size.saturating_sub(1)));
        for attempt in 0..=RESPLITS {
            let chunks = chunk(text, size, overlap)?;
            if chunks.is_empty() {
                return Err("`text` is empty: there is nothing to remember".into());
            }
            match self.embed(provider, chunks.clone()).await {
                Ok((vectors, dimensions)) => return Ok((chunks, vectors, dimensions)),
                Err(EmbedError::Overflow(_)) if attempt < RESPLITS && size >= 2 => {
                    size /= 2;
                    overlap /= 2;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Err("no chunk size fits the embedder's window".into())
    }

    async fn search(
        &self,
        store: &dyn MemoryStore,
        provider: &(Arc<dyn Provider>, String),
    ) -> Result<StepOutput, String> {
        let query = self.str_arg("query").ok_or("`search` needs `query`")?;
        if query.trim().is_empty() {
            return Err("`query` is empty".into());
        }
        let top_k = match self.args.get("top_k") {
            None => self.tool.top_k.unwrap_or(MemoryTool::DEFAULT_TOP_K),
            Some(v) => number(v)
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| (1..=MemoryTool::MAX_TOP_K).contains(&n))
                .ok_or_else(|| format!("`top_k` is {v}; give a whole number from 1 to 100"))?,
        };
        let min_score = match self.args.get("min_score") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_f64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                    .ok_or_else(|| format!("`min_score` is {v}, not a number"))?,
            ),
        };
        let filter = match self.args.get("filter") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(other) => return Err(format!("`filter` is {other}, not an object")),
        };
        let (mut vectors, dimensions) = self
            .embed(provider, vec![query.to_string()])
            .await
            .map_err(|e| e.to_string())?;
        let hits = store
            .search(
                &self.key(dimensions),
                &MemoryQuery {
                    vector: vectors.pop().unwrap_or_default(),
                    top_k,
                    min_score,
                    filter,
                },
            )
            .await
            .map_err(|e| e.0)?;
        let text = hits
            .iter()
            .map(|h| h.text.as_str())
            .collect::<Vec<_>>()
            .join("\n\n");
        Ok(StepOutput {
            text,
            json: Some(json!({ "hits": hits })),
        })
    }
}

/// How many times a text is cut again at half the chunk size when a chunk does not fit
/// the embedder's window (800 characters → 400 → 200 → 100).
const RESPLITS: usize = 3;

/// Why embedding failed: a text over the embedder's window, or anything else.
#[derive(Debug)]
enum EmbedError {
    Overflow(String),
    Other(String),
}

impl std::fmt::Display for EmbedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EmbedError::Overflow(m) | EmbedError::Other(m) => f.write_str(m),
        }
    }
}

/// A whole number given as a number or as text (a rendered template).
fn number(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// A step output whose text is its JSON.
fn json_output(v: Value) -> StepOutput {
    StepOutput {
        text: v.to_string(),
        json: Some(v),
    }
}

/// The id of a document added without one: the first 16 hex digits of its text's sha256.
fn document_id(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    crate::plan::hex(&digest[..8])
}

/// The text cut into chunks of at most `size` characters, overlapping by `overlap`, at
/// the largest semantic boundary that fits (paragraphs, then sentences, then words:
/// `text-splitter`'s rule).
fn chunk(text: &str, size: usize, overlap: usize) -> Result<Vec<String>, String> {
    let config = ChunkConfig::new(size)
        .with_overlap(overlap)
        .map_err(|e| format!("chunks of {size} characters overlapping by {overlap}: {e}"))?;
    Ok(TextSplitter::new(config)
        .chunks(text)
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_fit_the_size_and_cover_the_text() {
        let text = "One sentence here. Another sentence there. ".repeat(20);
        let chunks = chunk(&text, 100, 20).unwrap_or_default();
        assert!(chunks.len() > 5);
        assert!(chunks.iter().all(|c| c.chars().count() <= 100));
        for w in text.split_whitespace() {
            assert!(chunks.iter().any(|c| c.contains(w)));
        }
        assert_eq!(chunk("short", 100, 20).unwrap_or_default(), ["short"]);
        assert!(chunk("", 100, 20).unwrap_or_default().is_empty());
        assert!(chunk("x", 10, 10).is_err());
    }

    #[test]
    fn a_document_without_an_id_is_named_by_its_text() {
        assert_eq!(document_id("a"), document_id("a"));
        assert_ne!(document_id("a"), document_id("b"));
        assert_eq!(document_id("a").len(), 16);
    }
}
