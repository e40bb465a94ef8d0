-- Agent statistics: how each agent's runs of `capability:` steps went, for capability
-- routing (nexus_engine::route), kept per agent name across workflows.
CREATE TABLE agent_stats (
    agent        TEXT PRIMARY KEY,                -- the agent's name under `agents:`
    calls        INTEGER NOT NULL,                -- runs observed
    success_rate REAL NOT NULL,                   -- moving average, 0..1
    latency_ms   REAL NOT NULL,                   -- moving average of the step's wall time
    updated_at   TEXT NOT NULL
);
