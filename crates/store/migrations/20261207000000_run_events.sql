-- Events posted to runs for their `event` steps (`POST /api/runs/{id}/events/{name}` or
-- the run's callback URL). An event is stored before any step sees it, so one posted
-- while the run is down is taken when it resumes; `taken_by` names the step (its
-- recorded path) that took it, so each event is taken once, and a step resumed after it
-- took one gets the same event again.
CREATE TABLE run_events (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      TEXT NOT NULL,
    name        TEXT NOT NULL,
    body        TEXT NOT NULL,
    received_at TEXT NOT NULL,
    taken_by    TEXT
);
CREATE INDEX run_events_by_name ON run_events (run_id, name, taken_by, id);

-- Random secrets of this database, made on first use (the key of runs' callback URLs).
CREATE TABLE instance_secrets (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
