-- Resilience and governance: resume, output cache, breakers, model statistics, guardrail audit.
ALTER TABLE runs ADD COLUMN workflow_json TEXT;      -- the workflow as run (JSON), for resume
ALTER TABLE runs ADD COLUMN heartbeat_at TEXT;       -- refreshed by the process running the run
ALTER TABLE runs ADD COLUMN control TEXT;            -- pending request: pause | resume | cancel
ALTER TABLE runs ADD COLUMN owner_pid INTEGER;       -- process running the run (liveness check)

ALTER TABLE steps ADD COLUMN cached INTEGER NOT NULL DEFAULT 0;
ALTER TABLE steps ADD COLUMN cost_usd REAL;          -- USD, catalog prices x provider token counts
ALTER TABLE steps ADD COLUMN selection TEXT;         -- the selector's decision (JSON)
ALTER TABLE steps ADD COLUMN handled INTEGER NOT NULL DEFAULT 0;

ALTER TABLE fallbacks ADD COLUMN rung TEXT NOT NULL DEFAULT '';

CREATE TABLE guardrail_audit (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id    TEXT NOT NULL,
    step_id   TEXT NOT NULL,
    stage     TEXT NOT NULL,                      -- input | output
    detector  TEXT NOT NULL,
    severity  TEXT NOT NULL,
    action    TEXT NOT NULL,                      -- block | require_approval | redact | warn
    count     INTEGER NOT NULL,
    sample    TEXT NOT NULL,                      -- masked, never the whole secret
    at        TEXT NOT NULL,
    FOREIGN KEY (run_id, step_id) REFERENCES steps (run_id, step_id) ON DELETE CASCADE
);
CREATE INDEX guardrail_audit_run ON guardrail_audit (run_id);

CREATE TABLE breakers (
    key        TEXT PRIMARY KEY,                  -- provider:model
    snapshot   TEXT NOT NULL,                     -- JSON (nexus_engine::breaker::BreakerSnapshot)
    updated_at TEXT NOT NULL
);

CREATE TABLE model_stats (
    key          TEXT PRIMARY KEY,                -- provider:model
    calls        INTEGER NOT NULL,
    success_rate REAL NOT NULL,                   -- moving average, 0..1
    latency_ms   REAL NOT NULL,                   -- moving average of time to first token
    updated_at   TEXT NOT NULL
);

CREATE TABLE step_cache (
    key               TEXT PRIMARY KEY,           -- sha256(step definition, resolved inputs, model)
    output            TEXT NOT NULL,
    output_json       TEXT,
    model             TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER,
    run_id            TEXT NOT NULL,
    created_at        TEXT NOT NULL
);
