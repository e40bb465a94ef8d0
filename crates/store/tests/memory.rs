//! Memory collections in a real SQLite file with sqlite-vec: nearest chunks first with
//! cosine scores, metadata filters applied before ranking, a document added again
//! replaces its chunks, another embedder's vectors are refused, and everything survives
//! reopening the file.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may stop at the failing line

use nexus_engine::memory::{CollectionKey, MemoryChunk, MemoryDocument, MemoryQuery, MemoryStore};
use nexus_engine::store::RunStore;
use nexus_store::SqliteStore;
use serde_json::json;

fn key(embedder: &str, dimensions: usize) -> CollectionKey {
    CollectionKey {
        name: "notes".into(),
        embedder: embedder.into(),
        dimensions,
    }
}

fn doc(id: &str, source: &str, vectors: &[[f32; 3]]) -> MemoryDocument {
    MemoryDocument {
        id: id.into(),
        metadata: json!({"source": source, "year": 2026, "public": true})
            .as_object()
            .cloned()
            .unwrap(),
        chunks: vectors
            .iter()
            .enumerate()
            .map(|(i, v)| MemoryChunk {
                index: i,
                text: format!("{id} chunk {i}"),
                vector: v.to_vec(),
            })
            .collect(),
    }
}

fn query(v: [f32; 3], top_k: usize, filter: serde_json::Value) -> MemoryQuery {
    MemoryQuery {
        vector: v.to_vec(),
        top_k,
        min_score: None,
        filter: filter.as_object().cloned().unwrap(),
    }
}

#[tokio::test]
async fn chunks_are_ranked_by_cosine_filtered_replaced_and_kept_across_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runs.db");
    let store = SqliteStore::open(&path).await.unwrap();
    let mem: &dyn MemoryStore = store.memory().unwrap();
    let k = key("embedded:m", 3);
    mem.add_document(&k, &doc("a", "web", &[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        .await
        .unwrap();
    mem.add_document(&k, &doc("b", "mail", &[[0.8, 0.6, 0.0]]))
        .await
        .unwrap();

    let hits = mem
        .search(&k, &query([1.0, 0.0, 0.0], 3, json!({})))
        .await
        .unwrap();
    let order: Vec<_> = hits
        .iter()
        .map(|h| (h.document.as_str(), h.chunk))
        .collect();
    assert_eq!(order, [("a", 0), ("b", 0), ("a", 1)]);
    assert!((hits[0].score - 1.0).abs() < 1e-6);
    assert!(
        (hits[1].score - 0.8).abs() < 1e-6,
        "cosine of (1,0,0) and (.8,.6,0)"
    );
    assert!(hits[2].score.abs() < 1e-6);
    assert_eq!(hits[1].metadata["source"], "mail");

    // The filter applies before ranking: the best `mail` chunk is found with top_k 1.
    let mail = mem
        .search(
            &k,
            &query(
                [0.0, 1.0, 0.0],
                1,
                json!({"source": "mail", "year": 2026, "public": true}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].document, "b");
    let none = mem
        .search(&k, &query([0.0, 1.0, 0.0], 5, json!({"source": "fax"})))
        .await
        .unwrap();
    assert!(none.is_empty());
    let mut min = query([1.0, 0.0, 0.0], 5, json!({}));
    min.min_score = Some(0.5);
    assert_eq!(mem.search(&k, &min).await.unwrap().len(), 2);

    // Adding `a` again replaces its two chunks with one.
    mem.add_document(&k, &doc("a", "web", &[[0.0, 0.0, 1.0]]))
        .await
        .unwrap();
    let all = mem
        .search(&k, &query([0.0, 0.0, 1.0], 10, json!({})))
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(
        (all[0].document.as_str(), all[0].text.as_str()),
        ("a", "a chunk 0")
    );

    // Another embedder's vectors are refused, naming both; nothing changes.
    let other = key("ollama:nomic-embed-text", 3);
    let err = mem
        .add_document(&other, &doc("c", "web", &[[1.0, 0.0, 0.0]]))
        .await
        .unwrap_err();
    assert!(
        err.0.contains("holds vectors of `embedded:m`")
            && err.0.contains("ollama:nomic-embed-text"),
        "{}",
        err.0
    );
    assert!(
        mem.search(&key("embedded:m", 4), &query([1.0, 0.0, 0.0], 1, json!({})))
            .await
            .is_err()
    );
    let bad = mem
        .search(&k, &query([1.0, 0.0, 0.0], 1, json!({"source": ["x"]})))
        .await
        .unwrap_err();
    assert!(bad.0.contains("strings, numbers or booleans"), "{}", bad.0);

    assert!(mem.delete_document("notes", "b").await.unwrap());
    assert!(!mem.delete_document("notes", "b").await.unwrap());
    drop(store);

    let reopened = SqliteStore::open(&path).await.unwrap();
    let hits = reopened
        .memory()
        .unwrap()
        .search(&k, &query([0.0, 0.0, 1.0], 10, json!({})))
        .await
        .unwrap();
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].document, "a");
    // A collection never added to has no hits.
    let fresh = CollectionKey {
        name: "empty".into(),
        ..k
    };
    assert!(
        reopened
            .memory()
            .unwrap()
            .search(&fresh, &query([1.0, 0.0, 0.0], 3, json!({})))
            .await
            .unwrap()
            .is_empty()
    );
}
