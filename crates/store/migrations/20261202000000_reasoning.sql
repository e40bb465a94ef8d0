-- The reasoning of a thinking model (Ollama's message.thinking, or a <think> block stripped
-- from the answer), stored apart from the output and never passed to dependants.
ALTER TABLE steps ADD COLUMN reasoning TEXT;
