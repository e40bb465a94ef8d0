-- Nexus run history, v1. Times are RFC 3339 UTC text; durations are milliseconds.
CREATE TABLE runs (
    run_id           TEXT PRIMARY KEY,
    workflow_id      TEXT NOT NULL,
    workflow_name    TEXT,
    workflow_version TEXT,
    file             TEXT,
    inputs           TEXT NOT NULL,          -- JSON object
    status           TEXT NOT NULL,          -- running | succeeded | failed | cancelled
    outputs          TEXT,                   -- JSON object
    error            TEXT,
    started_at       TEXT NOT NULL,
    finished_at      TEXT
);
CREATE INDEX runs_started ON runs (started_at);

CREATE TABLE steps (
    run_id            TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    step_id           TEXT NOT NULL,
    seq               INTEGER NOT NULL,      -- completion order within the run
    kind              TEXT NOT NULL,
    status            TEXT NOT NULL,         -- succeeded | failed | skipped | cancelled
    input             TEXT,
    output            TEXT,
    output_json       TEXT,
    model             TEXT,
    model_reason      TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    started_at        TEXT NOT NULL,
    duration_ms       INTEGER NOT NULL,
    error             TEXT,
    PRIMARY KEY (run_id, step_id)
);

CREATE TABLE attempts (
    run_id            TEXT NOT NULL,
    step_id           TEXT NOT NULL,
    attempt           INTEGER NOT NULL,
    model             TEXT,
    started_at        TEXT NOT NULL,
    duration_ms       INTEGER NOT NULL,
    first_token_ms    INTEGER,
    error_kind        TEXT,
    error_message     TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    PRIMARY KEY (run_id, step_id, attempt),
    FOREIGN KEY (run_id, step_id) REFERENCES steps (run_id, step_id) ON DELETE CASCADE
);

CREATE TABLE fallbacks (
    run_id     TEXT NOT NULL,
    step_id    TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    from_model TEXT NOT NULL,
    to_model   TEXT NOT NULL,
    reason     TEXT NOT NULL,
    PRIMARY KEY (run_id, step_id, seq),
    FOREIGN KEY (run_id, step_id) REFERENCES steps (run_id, step_id) ON DELETE CASCADE
);

CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id  TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
    type    TEXT NOT NULL,
    step_id TEXT,
    payload TEXT NOT NULL                    -- the event as JSON (tagged by `type`)
);
CREATE INDEX events_run ON events (run_id, id);
