-- The trigger that started a run (NULL: a person started it), so history and
-- `runs list` filter by it.
ALTER TABLE runs ADD COLUMN trigger_kind TEXT;
ALTER TABLE runs ADD COLUMN trigger_name TEXT;
CREATE INDEX runs_by_trigger ON runs (trigger_kind, trigger_name, started_at);

-- The last fire of each cron trigger (RFC 3339, UTC), claimed with a compare-and-set so a
-- fire is started once even when the app restarts or two processes (the desktop app and
-- `nexus serve`) arm the same workflows folder on one database, and fires missed while
-- nothing ran are counted from it.
CREATE TABLE trigger_fires (
    workflow_id  TEXT NOT NULL,
    trigger_name TEXT NOT NULL,
    last_fire    TEXT NOT NULL,
    PRIMARY KEY (workflow_id, trigger_name)
);
