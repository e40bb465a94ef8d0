-- Memory collections (the `memory` tool): each collection keeps the embedder that made
-- its vectors and their length, fixed by its first add; chunks carry their document's
-- metadata (a JSON object, matched by search filters) and their embedding as a float32
-- blob, which sqlite-vec's vec_distance_cosine reads.
CREATE TABLE memory_collections (
    name       TEXT PRIMARY KEY,
    embedder   TEXT NOT NULL,
    dimensions INTEGER NOT NULL,
    created_at TEXT NOT NULL
);

CREATE TABLE memory_chunks (
    collection TEXT NOT NULL REFERENCES memory_collections (name) ON DELETE CASCADE,
    document   TEXT NOT NULL,
    chunk      INTEGER NOT NULL,
    text       TEXT NOT NULL,
    metadata   TEXT NOT NULL,
    embedding  BLOB NOT NULL,
    added_at   TEXT NOT NULL,
    PRIMARY KEY (collection, document, chunk)
);
