//! The engine's public API types: settings, per-run options, pause/resume control, the
//! report of a finished run, and the errors that stop a run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::breaker::BreakerConfig;
use crate::events::{EventSink, RunStatus};
use crate::human::HumanHandler;
use crate::select::{ModelCatalog, SelectorWeights};
use crate::store::StepRecord;

/// Errors that stop a run from starting or finishing.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed; the run stopped because its state could not be kept.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The workflow's guardrail rules could not be compiled.
    #[error("guardrails: {0}")]
    Guardrails(String),
    /// A run input matched a guardrail rule whose action is `block`; nothing was stored.
    /// The message names the input and the findings (never the text).
    #[error("guardrails blocked the run's {0}; change the input or the workflow's guardrail rules")]
    InputBlocked(String),
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most steps running as tasks at once (`llm`, approval, tool, wait, map, loop,
    /// sub-workflow) in one step list (default 8): the run's own steps, and separately
    /// each item or iteration of a body, so a map's items multiply it (a map's own
    /// `concurrency` bounds its items). Each model's own limit applies on top.
    pub max_parallel: usize,
    /// Per-provider override of [`Provider::max_concurrency`] (provider id → limit).
    pub provider_limits: HashMap<String, usize>,
    /// How long model discovery may take per provider (default 3 s).
    pub discovery_timeout: Duration,
    /// Circuit breaker settings (see [`BreakerConfig`]).
    pub breaker: BreakerConfig,
    /// Selector weights.
    pub weights: SelectorWeights,
    /// Known models: context windows, prices, capabilities, quality.
    pub models: ModelCatalog,
    /// Longest Retry-After the engine waits for before falling back instead (default
    /// 60 s, Portkey's cap; one user of a routing layer reported a 3-day Retry-After).
    pub max_retry_after: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_parallel: 8,
            provider_limits: HashMap::new(),
            discovery_timeout: Duration::from_secs(3),
            breaker: BreakerConfig::default(),
            weights: SelectorWeights::default(),
            models: ModelCatalog::builtin().unwrap_or_default(),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// Pause and resume of a running run, from any task or thread.
///
/// The run is paused while the user paused it ([`RunControl::pause`]) or while any
/// question that holds the run ([`RunControl::hold`]: the ladder's last rung) waits for its
/// answer. The two are kept apart, so answering one question neither resumes a run the
/// user paused meanwhile nor one that another question still holds.
#[derive(Clone)]
pub struct RunControl {
    tx: Arc<watch::Sender<PauseState>>,
}

/// Who is holding a run paused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PauseState {
    /// The user paused the run (and has not resumed it).
    user: bool,
    /// Questions waiting for an answer that hold the run paused.
    holds: u32,
}

impl Default for RunControl {
    fn default() -> Self {
        RunControl {
            tx: Arc::new(watch::channel(PauseState::default()).0),
        }
    }
}

impl RunControl {
    /// Pauses: steps in flight finish, no new step starts.
    pub fn pause(&self) {
        self.tx.send_modify(|s| s.user = true);
    }
    /// Resumes a run the user paused (questions that hold it keep it paused until they
    /// are answered).
    pub fn resume(&self) {
        self.tx.send_modify(|s| s.user = false);
    }
    /// Whether the run is paused (by the user or by a waiting question).
    pub fn is_paused(&self) -> bool {
        let s = *self.tx.borrow();
        s.user || s.holds > 0
    }
    /// Holds the run paused until the returned guard is dropped.
    pub(crate) fn hold(&self) -> PauseHold {
        self.tx.send_modify(|s| s.holds += 1);
        PauseHold {
            control: self.clone(),
        }
    }
    /// A receiver that sees every pause, resume, hold and release.
    pub(crate) fn subscribe(&self) -> watch::Receiver<PauseState> {
        self.tx.subscribe()
    }
}

/// Keeps a run paused while it lives (see [`RunControl::hold`]).
pub(crate) struct PauseHold {
    control: RunControl,
}

impl Drop for PauseHold {
    fn drop(&mut self) {
        self.control
            .tx
            .send_modify(|s| s.holds = s.holds.saturating_sub(1));
    }
}

/// Makes extra event sinks for the child runs of a run (the runs of its `workflow`
/// steps, and theirs) from the child's workflow: the app attaches that workflow file's
/// own `notifications:` this way, since a child run is a run of its own file.
pub trait ChildSinks: Send + Sync {
    /// The sinks of child run `run_id`, a run of `workflow`.
    fn sinks(&self, run_id: &str, workflow: &crate::workflow::Workflow) -> Vec<Arc<dyn EventSink>>;
}

/// Per-run options.
#[derive(Clone)]
pub struct RunOptions {
    /// Run id; a UUID v7 is generated when `None`.
    pub run_id: Option<String>,
    /// Cancels the run: no new step starts and in-flight requests are aborted.
    pub cancel: CancellationToken,
    /// Subscribers to the run's events.
    pub sinks: Vec<Arc<dyn EventSink>>,
    /// Pause and resume.
    pub control: RunControl,
    /// Who answers approvals and the ladder's last rung; `None`: nobody (defaults apply).
    pub human: Option<Arc<dyn HumanHandler>>,
    /// Read the step output cache (default true). Outputs are written to it either way.
    pub use_cache: bool,
    /// Continue an interrupted run: the records of its completed steps (the run must
    /// exist in the store under `run_id`). Those steps are not run again.
    pub resume: Option<Vec<StepRecord>>,
    /// "Run from this step": outputs of an earlier run (its id and step records) to reuse.
    /// Each succeeded record of a step of this plan is copied into the new run (marked
    /// cached, with the run it came from) instead of running the step; leave out the
    /// records of the steps to run again (see [`Plan::descendants`]).
    pub reuse: Option<(String, Vec<StepRecord>)>,
    /// "Run up to this step": run only these steps and the steps they depend on; the
    /// others are recorded as skipped.
    pub only: Option<Vec<String>>,
    /// For the child run of a `workflow` step: the parent run's id and the step's
    /// recorded id (stored with the run).
    pub parent: Option<(String, String)>,
    /// When the run first started (a resumed run: its stored start), the base of a
    /// `wait` step without dependencies; `None`: now.
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The trigger that started the run, stored with it; `None`: a person.
    pub trigger: Option<crate::store::RunTrigger>,
    /// Extra sinks for the run's child runs (see [`ChildSinks`]); passed on to theirs.
    pub child_sinks: Option<Arc<dyn ChildSinks>>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            run_id: None,
            cancel: CancellationToken::new(),
            sinks: Vec::new(),
            control: RunControl::default(),
            human: None,
            use_cache: true,
            resume: None,
            reuse: None,
            only: None,
            parent: None,
            trigger: None,
            started_at: None,
            child_sinks: None,
        }
    }
}

/// The result of a finished run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Run id.
    pub run_id: String,
    /// Final state.
    pub status: RunStatus,
    /// The workflow's outputs by name (`null` where a step they read did not succeed).
    pub outputs: serde_json::Map<String, serde_json::Value>,
    /// Every step's record, in completion order (kept records of a resumed run first).
    pub steps: Vec<StepRecord>,
    /// Wall time, ms.
    pub duration_ms: u64,
    /// Why the run did not succeed.
    pub error: Option<String>,
    /// The run of the workflow's failure handler (`on_failure`) and how it ended, when
    /// the run failed and has one.
    pub on_failure_run: Option<(String, RunStatus)>,
}
