//! Typed run events and their subscribers.
//!
//! The engine pushes every event to each [`EventSink`] of the run, in order, from the
//! scheduler's task. Sinks must not block: the CLI updates progress bars, the desktop shell
//! forwards to a `tauri::ipc::Channel`, a test collects into a vector. Events that record a
//! state change (`step_succeeded`, `step_failed`, `run_finished`, ...) are emitted only
//! after the store has committed that change, so nothing is announced as done before it
//! is stored. `token` and `reasoning` events are not stored one by one: the step's output (and its
//! reasoning) holds the text.

use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::provider::{ProviderErrorKind, Usage};

/// Final state of a step.
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Finished with an output.
    Succeeded,
    /// All attempts and fallbacks failed.
    Failed,
    /// Not run: its `when` was false, or a dependency failed or was skipped.
    Skipped,
    /// Stopped by cancellation.
    Cancelled,
}

impl StepStatus {
    /// The snake_case name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
        }
    }
}

/// Final state of a run.
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Still going (a run whose process died stays `running` in the store until
    /// `nexus resume` continues it).
    Running,
    /// Paused by the user: steps in flight finish, no new step starts.
    Paused,
    /// A step waits for a human's decision.
    WaitingForHuman,
    /// Every step succeeded or was skipped by its condition.
    Succeeded,
    /// At least one step failed.
    Failed,
    /// Cancelled by the user.
    Cancelled,
}

impl RunStatus {
    /// The snake_case name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Paused => "paused",
            RunStatus::WaitingForHuman => "waiting_for_human",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    /// The state named `name` (as [`RunStatus::as_str`] writes it), if any.
    pub fn parse(name: &str) -> Option<RunStatus> {
        [
            RunStatus::Running,
            RunStatus::Paused,
            RunStatus::WaitingForHuman,
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Cancelled,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }
}

/// One event of a run. Serialized with a `type` tag in snake_case.
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The run was stored and starts.
    RunStarted {
        /// Run id.
        run_id: String,
        /// Workflow id.
        workflow_id: String,
        /// Number of steps.
        steps: usize,
    },
    /// An attempt of a step starts; for `llm` steps, on `model` (`provider:name`).
    StepStarted {
        /// Run id.
        run_id: String,
        /// Step id.
        step_id: String,
        /// Attempt number, from 1, counted across models.
        attempt: u32,
        /// Model serving this attempt, for `llm` steps.
        model: Option<String>,
    },
    /// Generated text of a running `llm` step.
    Token {
        /// Run id.
        run_id: String,
        /// Step id.
        step_id: String,
        /// The text.
        text: String,
    },
    /// Reasoning text of a running `llm` step on a thinking model (Ollama's
    /// `message.thinking`, or a `<think>` block stripped from the answer). Stored apart
    /// from the output ([`crate::store::StepRecord::reasoning`]), never passed to the
    /// steps that depend on it. Like `token`, not stored one by one.
    Reasoning {
        /// Run id.
        run_id: String,
        /// Step id.
        step_id: String,
        /// The text.
        text: String,
    },
    /// An attempt failed.
    AttemptFailed {
        /// Run id.
        run_id: String,
        /// Step id.
        step_id: String,
        /// Attempt number.
        attempt: u32,
        /// Model of the attempt, for `llm` steps.
        model: Option<String>,
        /// Failure class.
        error_kind: ProviderErrorKind,
        /// What went wrong.
        message: String,
        /// Delay before the next attempt on the same model, ms; `None` when the step moves
        /// to another model or gives up.
        retry_in_ms: Option<u64>,
    },
    /// The step moves to the next candidate model.
    FallbackTaken {
        /// Run id.
        run_id: String,
        /// Step id.
        step_id: String,
        /// Model given up.
        from: String,
        /// Model tried next.
        to: String,
        /// Why.
        reason: String,
        /// The rung of the fallback ladder that moved on (`next_model`, `simplify`,
        /// `agent`, ...; see [`crate::store::FallbackRecord::rung`]).
        #[serde(default)]
        rung: String,
    },
    /// A step finished with an output (stored before this is emitted).
    StepSucceeded {
        /// Run id.
        run_id: String,
        /// Step id.
        step_id: String,
        /// Model that served it, for `llm` steps.
        model: Option<String>,
        /// Token counts, for `llm` steps.
        usage: Option<Usage>,
        /// Wall time of the step, ms.
        duration_ms: u64,
        /// True when the output came from the step output cache.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        cached: bool,
        /// Estimated cost of the step's calls, USD (as
        /// [`crate::store::StepRecord::cost_usd`]); absent when nothing was priced.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cost_usd: Option<f64>,
    },
    /// A step failed (stored before this is emitted).
    StepFailed {
        /// Run id.
        run_id: String,
        /// Step id.
        step_id: String,
        /// Why.
        error: String,
    },
    /// A `map` step's progress, after each of its items ended (the editor shows
    /// `done/total done, failed failed` on the map).
    MapProgress {
        /// Run id.
        run_id: String,
        /// The map step's id (its path inside a body).
        step_id: String,
        /// Items ended so far, failed ones included.
        done: u32,
        /// Items that failed so far.
        failed: u32,
        /// Items in all.
        total: u32,
    },
    /// A step was not run, or was stopped by the run's cancellation (stored before this
    /// is emitted).
    StepSkipped {
        /// Run id.
        run_id: String,
        /// Step id.
        step_id: String,
        /// Why.
        reason: String,
        /// The step's stored status: `skipped` (a join rule, a `when`, a failed
        /// dependency) or `cancelled` (the run was cancelled).
        status: StepStatus,
    },
    /// The run finished (stored before this is emitted).
    RunFinished {
        /// Run id.
        run_id: String,
        /// Final state.
        status: RunStatus,
        /// Wall time, ms.
        duration_ms: u64,
    },
    /// The run was paused: no new step starts until it is resumed.
    RunPaused {
        /// Run id.
        run_id: String,
    },
    /// The run continues: after a pause, or after an interruption (a crash), with the
    /// steps already completed kept.
    RunResumed {
        /// Run id.
        run_id: String,
        /// Steps already completed and kept.
        completed_steps: usize,
    },
    /// A step waits for a human (an approval step, a guardrail asking for approval, or
    /// the last rung of the fallback ladder).
    WaitingForHuman {
        /// Run id.
        run_id: String,
        /// Step id.
        step_id: String,
        /// What is asked.
        question: String,
    },
    /// An `event` step waits for its event (posted to the run's callback URL or to
    /// `POST /api/runs/{id}/events/{name}`); emitted when the step starts waiting.
    WaitingForEvent {
        /// Run id.
        run_id: String,
        /// Step id.
        step_id: String,
        /// The event's name.
        event: String,
        /// When the step stops waiting (its `within`), RFC 3339; `None`: no limit.
        until: Option<String>,
    },
    /// A human answered (or the wait ended without an answer: `timeout`).
    HumanDecided {
        /// Run id.
        run_id: String,
        /// Step id.
        step_id: String,
        /// The decision (`approve`, `reject`, `retry`, `use_output`, `skip`, `cancel`,
        /// `timeout`).
        decision: String,
    },
    /// A guardrail rule matched a step's input or output.
    GuardrailVerdict {
        /// Run id.
        run_id: String,
        /// Step id.
        step_id: String,
        /// `input` or `output`.
        stage: String,
        /// Detector name.
        detector: String,
        /// Action taken (`block`, `require_approval`, `redact`, `warn`).
        action: String,
        /// Matches found.
        count: usize,
    },
    /// A circuit breaker changed state.
    BreakerChanged {
        /// `provider:model`.
        model: String,
        /// The transition.
        transition: crate::breaker::Transition,
    },
}

impl Event {
    /// The event's `type` tag.
    pub fn name(&self) -> &'static str {
        match self {
            Event::RunStarted { .. } => "run_started",
            Event::StepStarted { .. } => "step_started",
            Event::Token { .. } => "token",
            Event::Reasoning { .. } => "reasoning",
            Event::AttemptFailed { .. } => "attempt_failed",
            Event::FallbackTaken { .. } => "fallback_taken",
            Event::StepSucceeded { .. } => "step_succeeded",
            Event::StepFailed { .. } => "step_failed",
            Event::StepSkipped { .. } => "step_skipped",
            Event::MapProgress { .. } => "map_progress",
            Event::RunFinished { .. } => "run_finished",
            Event::RunPaused { .. } => "run_paused",
            Event::RunResumed { .. } => "run_resumed",
            Event::WaitingForHuman { .. } => "waiting_for_human",
            Event::WaitingForEvent { .. } => "waiting_for_event",
            Event::HumanDecided { .. } => "human_decided",
            Event::GuardrailVerdict { .. } => "guardrail_verdict",
            Event::BreakerChanged { .. } => "breaker_changed",
        }
    }

    /// The step the event is about, if any.
    pub fn step_id(&self) -> Option<&str> {
        match self {
            Event::RunStarted { .. }
            | Event::RunFinished { .. }
            | Event::RunPaused { .. }
            | Event::RunResumed { .. }
            | Event::BreakerChanged { .. } => None,
            Event::WaitingForHuman { step_id, .. }
            | Event::WaitingForEvent { step_id, .. }
            | Event::HumanDecided { step_id, .. }
            | Event::GuardrailVerdict { step_id, .. } => Some(step_id),
            Event::StepStarted { step_id, .. }
            | Event::Token { step_id, .. }
            | Event::Reasoning { step_id, .. }
            | Event::AttemptFailed { step_id, .. }
            | Event::FallbackTaken { step_id, .. }
            | Event::StepSucceeded { step_id, .. }
            | Event::StepFailed { step_id, .. }
            | Event::MapProgress { step_id, .. }
            | Event::StepSkipped { step_id, .. } => Some(step_id),
        }
    }
}

/// A subscriber to run events. Called from the engine's tasks; must return quickly.
pub trait EventSink: Send + Sync {
    /// Receives one event.
    fn emit(&self, event: &Event);
}

/// A sink that keeps every event in memory, for tests and for `--json` output.
#[derive(Debug, Default, Clone)]
pub struct CollectingSink {
    events: Arc<Mutex<Vec<Event>>>,
}

impl CollectingSink {
    /// A new, empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the events received so far.
    pub fn events(&self) -> Vec<Event> {
        self.events.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

impl EventSink for CollectingSink {
    fn emit(&self, event: &Event) {
        if let Ok(mut events) = self.events.lock() {
            events.push(event.clone());
        }
    }
}
