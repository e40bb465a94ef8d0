//! Persistence interface of the engine. The engine writes through [`RunStore`]; the
//! SQLite implementation lives in `nexus-store` (and a PostgreSQL one can follow without
//! touching the engine).
//!
//! Contract: each method returns only after its data is durable (committed), and the
//! engine emits the matching event only after the method returned `Ok`. A step's record,
//! its attempts and the events that led to it are written in one transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::{Event, RunStatus, StepStatus};
use crate::provider::{ProviderErrorKind, Usage};

/// A run as it starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run id (a UUID v7, so ids sort by start time).
    pub run_id: String,
    /// Workflow id.
    pub workflow_id: String,
    /// Workflow name, if any.
    pub workflow_name: Option<String>,
    /// Workflow version, if any.
    pub workflow_version: Option<String>,
    /// The workflow file, if the workflow came from one.
    pub file: Option<String>,
    /// The resolved inputs (defaults applied), as a JSON object.
    pub inputs: serde_json::Value,
    /// The workflow as run (its serde JSON form), so an interrupted run can be resumed
    /// even after the file changed.
    #[serde(default)]
    pub workflow: Option<serde_json::Value>,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// For a run started by a `workflow` step: the parent run's id and the step's
    /// recorded id.
    #[serde(default)]
    pub parent: Option<(String, String)>,
    /// The trigger that started the run; `None`: a person (the Run button, `nexus run`,
    /// `POST /api/runs`).
    #[serde(default)]
    pub trigger: Option<RunTrigger>,
}

/// The trigger that started a run, stored with it (history and `runs list` filter by
/// it): its kind and its name in the workflow file (see [`crate::workflow::Trigger`]).
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTrigger {
    /// `cron`, `webhook` or `file`.
    pub kind: String,
    /// The trigger's name (its kind when the file gives none).
    pub name: String,
}

/// A child run as stored, read when its parent resumes (see [`RunStore::child_run`]).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChild {
    /// Its state.
    pub status: crate::events::RunStatus,
    /// Its steps' records.
    pub steps: Vec<StepRecord>,
    /// Its outputs, when it finished.
    pub outputs: serde_json::Map<String, serde_json::Value>,
    /// Its error, when it did not succeed.
    pub error: Option<String>,
    /// When it first started (the base of its `wait` steps without dependencies).
    pub started_at: DateTime<Utc>,
}

/// One attempt of a step.
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// Attempt number, from 1, counted across models.
    pub attempt: u32,
    /// Model that served it (`provider:name`), for `llm` steps.
    pub model: Option<String>,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// Wall time, ms.
    pub duration_ms: u64,
    /// Time to first token, ms, when a token came.
    pub first_token_ms: Option<u64>,
    /// Failure class, when it failed.
    pub error_kind: Option<ProviderErrorKind>,
    /// Failure message, when it failed.
    pub error_message: Option<String>,
    /// Token counts, when the provider reported them.
    pub usage: Option<Usage>,
}

/// A rung of the fallback ladder taken: a move from one model (or parameters, agent) to
/// the next, or to the step's `on_failure`, or to a human.
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FallbackRecord {
    /// Model (or state) given up.
    pub from: String,
    /// What is tried next.
    pub to: String,
    /// Why.
    pub reason: String,
    /// The rung: `next_model`, `simplify`, `agent`, `on_failure`, `human`.
    #[serde(default)]
    pub rung: String,
}

/// One guardrail verdict on a step's input or output, for the audit table.
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuardrailRecord {
    /// `input` or `output`.
    pub stage: String,
    /// Detector name (`email`, `aws_access_key`, ...).
    pub detector: String,
    /// Severity (`low` .. `critical`).
    pub severity: String,
    /// Action taken (`block`, `require_approval`, `redact`, `warn`).
    pub action: String,
    /// Matches found.
    pub count: usize,
    /// A masked sample (never the whole secret).
    pub sample: String,
}

/// A stored step output that a later run may reuse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedOutput {
    /// Output text.
    pub output: String,
    /// Output JSON, for structured steps.
    pub output_json: Option<serde_json::Value>,
    /// Model that produced it.
    pub model: Option<String>,
    /// Token counts of the call that produced it.
    pub usage: Option<Usage>,
    /// The run that produced it.
    pub run_id: String,
}

/// Engine state kept across runs: circuit breakers and model statistics.
#[derive(Debug, Clone, Default)]
pub struct EngineState {
    /// Breaker snapshots by `provider:model`.
    pub breakers: Vec<(String, crate::breaker::BreakerSnapshot)>,
    /// Model statistics by `provider:model`.
    pub stats: Vec<(String, crate::select::ModelStats)>,
    /// Agent statistics by agent name (see [`crate::route`]).
    pub agent_stats: Vec<(String, crate::select::ModelStats)>,
}

/// A finished step.
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Step id.
    pub step_id: String,
    /// Step kind (`llm`, `template`).
    pub kind: String,
    /// Final state.
    pub status: StepStatus,
    /// The rendered prompt (for `llm` steps) or nothing.
    pub input: Option<String>,
    /// The output text.
    pub output: Option<String>,
    /// The reasoning of a thinking model (Ollama's `message.thinking`, or the
    /// `<think>` block stripped from the answer), kept apart from `output`: never passed to
    /// dependants, shown in the run panel and `nexus runs show`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<String>,
    /// The output parsed as JSON, for structured outputs and `format: json`.
    pub output_json: Option<serde_json::Value>,
    /// Model that produced the output.
    pub model: Option<String>,
    /// Why that model: the selector's explanation plus the fallbacks taken.
    pub model_reason: Option<String>,
    /// Token counts of the successful attempt.
    pub usage: Option<Usage>,
    /// Start time (first attempt).
    pub started_at: DateTime<Utc>,
    /// Wall time over all attempts, ms.
    pub duration_ms: u64,
    /// Why it failed or was skipped.
    pub error: Option<String>,
    /// Every attempt, in order.
    pub attempts: Vec<AttemptRecord>,
    /// Every fallback, in order.
    pub fallbacks: Vec<FallbackRecord>,
    /// True when the output came from the step output cache.
    #[serde(default)]
    pub cached: bool,
    /// Estimated cost of the step's calls, USD (catalog prices × provider token counts).
    #[serde(default)]
    pub cost_usd: Option<f64>,
    /// The selector's decision ("why this model").
    #[serde(default)]
    #[cfg_attr(feature = "specta", specta(type = Option<serde_json::Value>))]
    #[cfg_attr(feature = "utoipa", schema(value_type = Option<Object>))]
    pub selection: Option<crate::select::SelectionRecord>,
    /// Guardrail verdicts on the step's input and output.
    #[serde(default)]
    pub guardrails: Vec<GuardrailRecord>,
    /// True when the step failed but its `on_failure` handled it (an alternate branch),
    /// so the run does not fail because of it.
    #[serde(default)]
    pub handled: bool,
    /// For an `agent` step: each model call and tool call of its loop, in order (kept
    /// when the step fails, e.g. at `max_iterations`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transcript: Vec<TranscriptEntry>,
}

/// What an agent step did, in order: each model call and each tool call (stored with the
/// step's record, shown by `nexus runs show` and the run panel).
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TranscriptEntry {
    /// One model call of the loop (its retries and fallbacks are the step's attempts).
    Model {
        /// The loop's iteration, from 1.
        iteration: u32,
        /// The model that answered (`provider:model`).
        model: String,
        /// How tools reached the model: `native`, `json` or `react`.
        strategy: String,
        /// The model's text (the final answer, or what it said beside its calls).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        text: String,
        /// The calls it made: `[{"id", "name", "arguments"}]`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        #[cfg_attr(feature = "specta", specta(type = Vec<serde_json::Value>))]
        #[cfg_attr(feature = "utoipa", schema(value_type = Vec<Object>))]
        tool_calls: Vec<crate::provider::ToolCall>,
        /// Prompt tokens of the call.
        prompt_tokens: u64,
        /// Generated tokens of the call.
        completion_tokens: u64,
        /// Wall time of the call with its retries, ms.
        duration_ms: u64,
    },
    /// One tool call and its result.
    Tool {
        /// The loop's iteration that asked for it.
        iteration: u32,
        /// The call's id (quoted by the result message).
        id: String,
        /// The name the model called (`files__read_file` for an MCP server's tool).
        name: String,
        /// The arguments the model gave.
        #[cfg_attr(feature = "specta", specta(type = serde_json::Value))]
        #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
        arguments: serde_json::Value,
        /// Whether the tool succeeded.
        ok: bool,
        /// The result given to the model (the tool's output, or its error).
        result: String,
        /// Wall time of the call, ms.
        duration_ms: u64,
    },
}

/// The end of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFinish {
    /// Final state.
    pub status: RunStatus,
    /// The workflow's outputs, by name (a JSON object), when the run succeeded.
    pub outputs: serde_json::Value,
    /// Why the run did not succeed.
    pub error: Option<String>,
    /// End time.
    pub finished_at: DateTime<Utc>,
}

/// A storage failure. The store's own error is kept as text so that the engine does not
/// depend on any database crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage failed: {0}")]
pub struct StoreError(pub String);

/// An event posted to a run, as an `event` step takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PostedEvent {
    /// The body (JSON; a body that was not JSON is kept as a JSON string).
    pub body: serde_json::Value,
    /// When it was stored.
    pub received_at: DateTime<Utc>,
}

/// Where the engine records runs.
#[async_trait]
pub trait RunStore: Send + Sync {
    /// The store's memory collections, if it keeps them (the `memory` tool fails without
    /// them). Default: none.
    fn memory(&self) -> Option<&dyn crate::memory::MemoryStore> {
        None
    }

    /// Records a run as started.
    ///
    /// # Errors
    /// [`StoreError`] when the write fails; the run does not start.
    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError>;

    /// Records finished steps (the steps that finished together) with their attempts and
    /// the run's events since the last write (token events excluded), in one transaction.
    ///
    /// # Errors
    /// [`StoreError`] when the write fails; the run then stops.
    async fn record_steps(
        &self,
        run_id: &str,
        steps: &[&StepRecord],
        events: &[Event],
    ) -> Result<(), StoreError>;

    /// Records the end of a run with its remaining events.
    ///
    /// # Errors
    /// [`StoreError`] when the write fails.
    async fn finish_run(
        &self,
        run_id: &str,
        finish: &RunFinish,
        events: &[Event],
    ) -> Result<(), StoreError>;

    /// Records a change of a running run's state (paused, waiting for a human, running
    /// again, resumed after an interruption) with its events.
    ///
    /// # Errors
    /// [`StoreError`] when the write fails.
    async fn set_run_status(
        &self,
        run_id: &str,
        status: RunStatus,
        events: &[Event],
    ) -> Result<(), StoreError>;

    /// The child run `run_id` of a `workflow` step, if it is stored (default: none, so
    /// a resumed parent starts its children again).
    ///
    /// # Errors
    /// [`StoreError`] when the read fails.
    async fn child_run(&self, _run_id: &str) -> Result<Option<StoredChild>, StoreError> {
        Ok(None)
    }

    /// Loads the breakers and model statistics kept across runs.
    ///
    /// # Errors
    /// [`StoreError`] when the read fails.
    async fn load_state(&self) -> Result<EngineState, StoreError> {
        Ok(EngineState::default())
    }

    /// Stores one breaker's state.
    ///
    /// # Errors
    /// [`StoreError`] when the write fails.
    async fn save_breaker(
        &self,
        _key: &str,
        _snapshot: &crate::breaker::BreakerSnapshot,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Stores one model's statistics.
    ///
    /// # Errors
    /// [`StoreError`] when the write fails.
    async fn save_model_stats(
        &self,
        _key: &str,
        _stats: &crate::select::ModelStats,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Stores one agent's statistics (its runs of `capability:` steps, see
    /// [`crate::route`]).
    ///
    /// # Errors
    /// [`StoreError`] when the write fails.
    async fn save_agent_stats(
        &self,
        _agent: &str,
        _stats: &crate::select::ModelStats,
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Reads a cached step output by key.
    ///
    /// # Errors
    /// [`StoreError`] when the read fails.
    async fn cache_get(&self, _key: &str) -> Result<Option<CachedOutput>, StoreError> {
        Ok(None)
    }

    /// Stores a step output under a key (replacing an older one).
    ///
    /// # Errors
    /// [`StoreError`] when the write fails.
    async fn cache_put(&self, _key: &str, _output: &CachedOutput) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether the user gave tool `tool` of the workflow whose hash is `workflow_hash`
    /// permission to run (see [`crate::workflow::ShellTool`]; default: never, so each
    /// run asks again).
    ///
    /// # Errors
    /// [`StoreError`] when the read fails.
    async fn permission(&self, _workflow_hash: &str, _tool: &str) -> Result<bool, StoreError> {
        Ok(false)
    }

    /// Remembers a permission: tool `tool` (running `command`, as declared) of the
    /// workflow `workflow_id` whose hash is `workflow_hash`.
    ///
    /// # Errors
    /// [`StoreError`] when the write fails.
    async fn grant_permission(
        &self,
        _workflow_hash: &str,
        _tool: &str,
        _workflow_id: &str,
        _command: &[String],
    ) -> Result<(), StoreError> {
        Ok(())
    }

    /// Takes the oldest event named `name` posted to run `run_id` that no step took yet,
    /// for the step recorded as `step`; an event `step` took before (the run stopped
    /// after it took the event but before its record was stored) is returned again.
    /// Default: none, so an `event` step of a store-less engine waits until its timeout.
    ///
    /// # Errors
    /// [`StoreError`] when the read or write fails.
    async fn take_event(
        &self,
        _run_id: &str,
        _name: &str,
        _step: &str,
    ) -> Result<Option<PostedEvent>, StoreError> {
        Ok(None)
    }
}
