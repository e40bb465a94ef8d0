-- Permissions the user gave `shell` tools: per workflow file as it was (its hash) and
-- tool name; a changed file has another hash, so it asks again.
CREATE TABLE permissions (
    workflow_hash TEXT NOT NULL,
    tool TEXT NOT NULL,
    workflow_id TEXT NOT NULL,
    command TEXT NOT NULL,
    granted_at TEXT NOT NULL,
    PRIMARY KEY (workflow_hash, tool)
);
