//! Memory collections in the run database ([`nexus_engine::memory::MemoryStore`]):
//! chunks with their embeddings in `memory_chunks`, searched exactly (every chunk of the
//! collection that passes the filter is scored) with sqlite-vec's `vec_distance_cosine`,
//! so a metadata filter never hides a nearer chunk behind an approximate index.
//!
//! sqlite-vec is compiled into the program (crate `sqlite-vec`) and registered once as
//! an automatic extension of the bundled SQLite, so every connection of every pool has
//! its functions.

use std::sync::Once;

use async_trait::async_trait;
use chrono::Utc;
use nexus_engine::memory::{
    CollectionKey, MemoryDocument, MemoryHit, MemoryQuery, MemoryStore, embedder_mismatch,
};
use nexus_engine::store::StoreError;
use sqlx::Row;

use crate::{Error, SqliteStore, ts};

/// Registers sqlite-vec with SQLite before the first connection opens (SQLite's
/// `sqlite3_auto_extension`, as sqlite-vec's Rust documentation shows).
pub(crate) fn register_sqlite_vec() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_vec_init` is sqlite-vec's C extension entry point, `int
        // sqlite3_vec_init(sqlite3*, char**, const sqlite3_api_routines*)`; the crate
        // declares it without arguments, so the transmute gives it back the signature
        // SQLite calls it with for each new connection.
        unsafe {
            type Init = unsafe extern "C" fn(
                *mut libsqlite3_sys::sqlite3,
                *mut *mut std::ffi::c_char,
                *const libsqlite3_sys::sqlite3_api_routines,
            ) -> std::ffi::c_int;
            let init: Init = std::mem::transmute(sqlite_vec::sqlite3_vec_init as *const ());
            libsqlite3_sys::sqlite3_auto_extension(Some(init));
        }
    });
}

/// A vector as the blob sqlite-vec reads: float32, little-endian.
fn blob(vector: &[f32]) -> Vec<u8> {
    vector.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl SqliteStore {
    /// The collection's embedder and length, creating the collection if `create`.
    async fn collection(
        &self,
        tx: &mut sqlx::SqliteConnection,
        key: &CollectionKey,
        create: bool,
    ) -> Result<bool, StoreError> {
        let row: Option<(String, i64)> =
            sqlx::query_as("SELECT embedder, dimensions FROM memory_collections WHERE name = ?")
                .bind(&key.name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(Error::from)?;
        match row {
            Some((embedder, dims)) => {
                let dims = usize::try_from(dims).unwrap_or(0);
                if embedder != key.embedder || dims != key.dimensions {
                    return Err(embedder_mismatch(key, &embedder, dims));
                }
                Ok(true)
            }
            None if create => {
                sqlx::query(
                    "INSERT INTO memory_collections (name, embedder, dimensions, created_at) VALUES (?, ?, ?, ?)",
                )
                .bind(&key.name)
                .bind(&key.embedder)
                .bind(i64::try_from(key.dimensions).unwrap_or(i64::MAX))
                .bind(ts(&Utc::now()))
                .execute(&mut *tx)
                .await
                .map_err(Error::from)?;
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// A JSON path selecting the metadata key `key` (`$."key"`).
fn json_path(key: &str) -> Result<String, StoreError> {
    if key.is_empty() || key.contains(['"', '\\']) {
        return Err(StoreError(format!(
            "memory filter key `{key}` is empty or has a quote or backslash; use plain metadata keys"
        )));
    }
    Ok(format!("$.\"{key}\""))
}

#[async_trait]
impl MemoryStore for SqliteStore {
    async fn add_document(
        &self,
        collection: &CollectionKey,
        document: &MemoryDocument,
    ) -> Result<(), StoreError> {
        // The write lock first: a deferred transaction that reads the collection and
        // then writes fails with SQLITE_BUSY when another writer committed meanwhile
        // (as the store's other writes do, see the module header of lib.rs).
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(Error::from)?;
        self.collection(&mut tx, collection, true).await?;
        sqlx::query("DELETE FROM memory_chunks WHERE collection = ? AND document = ?")
            .bind(&collection.name)
            .bind(&document.id)
            .execute(&mut *tx)
            .await
            .map_err(Error::from)?;
        let metadata = serde_json::Value::Object(document.metadata.clone()).to_string();
        let now = ts(&Utc::now());
        for chunk in &document.chunks {
            if chunk.vector.len() != collection.dimensions {
                return Err(StoreError(format!(
                    "chunk {} of `{}` has {} numbers where collection `{}` holds {}",
                    chunk.index,
                    document.id,
                    chunk.vector.len(),
                    collection.name,
                    collection.dimensions
                )));
            }
            sqlx::query(
                "INSERT INTO memory_chunks (collection, document, chunk, text, metadata, embedding, added_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&collection.name)
            .bind(&document.id)
            .bind(i64::try_from(chunk.index).unwrap_or(i64::MAX))
            .bind(&chunk.text)
            .bind(&metadata)
            .bind(blob(&chunk.vector))
            .bind(&now)
            .execute(&mut *tx)
            .await
            .map_err(Error::from)?;
        }
        tx.commit().await.map_err(Error::from)?;
        Ok(())
    }

    async fn search(
        &self,
        collection: &CollectionKey,
        query: &MemoryQuery,
    ) -> Result<Vec<MemoryHit>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(Error::from)?;
        if !self.collection(&mut conn, collection, false).await? {
            return Ok(Vec::new());
        }
        let mut sql = String::from(
            "SELECT document, chunk, text, metadata, 1.0 - vec_distance_cosine(embedding, ?) AS score
             FROM memory_chunks WHERE collection = ?",
        );
        for _ in &query.filter {
            sql.push_str(" AND json_extract(metadata, ?) = ?");
        }
        sql.push_str(" ORDER BY score DESC, document, chunk LIMIT ?");
        let mut q = sqlx::query(&sql)
            .bind(blob(&query.vector))
            .bind(&collection.name);
        for (key, value) in &query.filter {
            q = q.bind(json_path(key)?);
            q = match value {
                serde_json::Value::String(s) => q.bind(s.clone()),
                serde_json::Value::Bool(b) => q.bind(i64::from(*b)),
                serde_json::Value::Number(n) => match n.as_i64() {
                    Some(i) => q.bind(i),
                    None => q.bind(n.as_f64().unwrap_or(f64::NAN)),
                },
                other => {
                    return Err(StoreError(format!(
                        "memory filter `{key}` is {other}; filter values are strings, numbers or booleans"
                    )));
                }
            };
        }
        let rows = q
            .bind(i64::try_from(query.top_k).unwrap_or(i64::MAX))
            .fetch_all(&mut *conn)
            .await
            .map_err(Error::from)?;
        let mut hits = Vec::with_capacity(rows.len());
        for row in rows {
            let score: f64 = row.try_get("score").map_err(Error::from)?;
            if query.min_score.is_some_and(|min| score < min) {
                continue;
            }
            let metadata: String = row.try_get("metadata").map_err(Error::from)?;
            let metadata = match serde_json::from_str(&metadata) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => serde_json::Map::new(),
            };
            hits.push(MemoryHit {
                document: row.try_get("document").map_err(Error::from)?,
                chunk: usize::try_from(row.try_get::<i64, _>("chunk").map_err(Error::from)?)
                    .unwrap_or(0),
                text: row.try_get("text").map_err(Error::from)?,
                score,
                metadata,
            });
        }
        Ok(hits)
    }

    async fn delete_document(&self, collection: &str, document: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM memory_chunks WHERE collection = ? AND document = ?")
            .bind(collection)
            .bind(document)
            .execute(&self.pool)
            .await
            .map_err(Error::from)?;
        Ok(done.rows_affected() > 0)
    }
}
