-- The transcript of an `agent` step: each model call and tool call of its loop, in order,
-- as a JSON array of tagged entries (`{"type": "model", ...}`, `{"type": "tool", ...}`);
-- NULL for the other kinds.
ALTER TABLE steps ADD COLUMN transcript TEXT;
