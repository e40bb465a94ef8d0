//! Memory collections: documents cut into chunks, each chunk stored with its embedding,
//! searched by similarity to a query. The engine chunks and embeds (through a provider's
//! [`crate::provider::Provider::embed`]); a [`MemoryStore`] keeps the chunks and does the
//! nearest-neighbour search (SQLite: `sqlite-vec` in `nexus-store`).
//!
//! Invariants:
//! - A collection holds vectors of one embedder (`provider:model`) and one length: the
//!   first add fixes both, and an add or search with another embedder is refused with an
//!   error naming both (vectors of two models are not comparable).
//! - Adding a document again under the same id replaces its chunks, so re-running a
//!   workflow does not duplicate what it remembers.
//! - Scores are cosine similarities in [-1, 1] (1 − cosine distance), highest first.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// A collection as a store knows it: its name and the embedder that fixed its vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectionKey {
    /// The collection's name (the `memory` tool's `collection`).
    pub name: String,
    /// The embedder, `provider:model` (e.g. `embedded:all-minilm-l6-v2`).
    pub embedder: String,
    /// Numbers per vector.
    pub dimensions: usize,
}

/// One chunk of a document, with its vector.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryChunk {
    /// Its position in the document, from 0.
    pub index: usize,
    /// The chunk's text.
    pub text: String,
    /// Its embedding, [`CollectionKey::dimensions`] numbers.
    pub vector: Vec<f32>,
}

/// A document to add: its id, metadata (a JSON object) and chunks.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryDocument {
    /// The document's id in its collection.
    pub id: String,
    /// Metadata kept with every chunk and matched by search filters.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The chunks, in document order.
    pub chunks: Vec<MemoryChunk>,
}

/// A search: the query's vector, how many hits, the lowest score, a metadata filter.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryQuery {
    /// The query's embedding.
    pub vector: Vec<f32>,
    /// Most hits returned.
    pub top_k: usize,
    /// Hits scoring below are left out.
    pub min_score: Option<f64>,
    /// Metadata every hit must have: key → the exact JSON value (string, number or bool).
    pub filter: serde_json::Map<String, serde_json::Value>,
}

/// One hit of a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryHit {
    /// The document it belongs to.
    pub document: String,
    /// The chunk's position in the document.
    pub chunk: usize,
    /// The chunk's text.
    pub text: String,
    /// Cosine similarity to the query.
    pub score: f64,
    /// The document's metadata.
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// Where memory collections live (the run database).
#[async_trait]
pub trait MemoryStore: Send + Sync {
    /// Adds `document` to the collection, replacing a document of the same id, in one
    /// transaction; creates the collection on its first add.
    ///
    /// # Errors
    /// [`StoreError`] when the collection holds another embedder's vectors (the message
    /// names both) or the write fails; nothing is changed then.
    async fn add_document(
        &self,
        collection: &CollectionKey,
        document: &MemoryDocument,
    ) -> Result<(), StoreError>;

    /// The chunks nearest to `query`, best first. A collection never added to has no
    /// hits.
    ///
    /// # Errors
    /// [`StoreError`] when the collection holds another embedder's vectors, or the read
    /// fails.
    async fn search(
        &self,
        collection: &CollectionKey,
        query: &MemoryQuery,
    ) -> Result<Vec<MemoryHit>, StoreError>;

    /// Removes a document; whether it was there.
    ///
    /// # Errors
    /// [`StoreError`] when the write fails.
    async fn delete_document(&self, collection: &str, document: &str) -> Result<bool, StoreError>;
}

/// The refusal of a collection's vectors made by another embedder, worded once for every
/// store.
pub fn embedder_mismatch(key: &CollectionKey, stored: &str, stored_dims: usize) -> StoreError {
    StoreError(format!(
        "memory collection `{}` holds vectors of `{stored}` ({stored_dims} numbers); this workflow embeds with `{}` ({} numbers): use the same embedder, or another collection name",
        key.name, key.embedder, key.dimensions
    ))
}
