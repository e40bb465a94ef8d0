-- A run started by a `workflow` step of another run: the parent run and the step (its
-- recorded path) it belongs to.
ALTER TABLE runs ADD COLUMN parent_run_id TEXT;
ALTER TABLE runs ADD COLUMN parent_step_id TEXT;
CREATE INDEX runs_parent ON runs (parent_run_id);
