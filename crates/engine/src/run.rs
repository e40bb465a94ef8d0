//! The scheduler: runs a [`Plan`] as a DAG on tokio, with the resilience ladder.
//!
//! - Steps whose dependencies have all succeeded become ready (an alternate branch
//!   becomes ready when the step it backs up failed). `template` steps and conditions are
//!   evaluated inline on the scheduler task; `llm` and `approval` steps run as tasks, at
//!   most `max_parallel` at once, and each model has its own semaphore
//!   ([`Provider::max_concurrency`]: 1 for a local model, 4 for cloud).
//! - A step whose dependency failed or was skipped is skipped (Airflow's default
//!   `all_success` trigger rule); its `when` condition is checked before it runs.
//! - Completed steps are written to the [`RunStore`] in batches (one transaction for all
//!   the steps that finished together) before their events are emitted and before their
//!   dependants start. A run resumed after a crash starts from those records: completed
//!   steps are never re-run, steps that were in flight run again.
//! - Pausing ([`RunControl`]) lets steps in flight finish and starts no new one.
//! - `llm` steps climb the fallback ladder ([`crate::workflow::FallbackLadder`]): guardrails
//!   on the input first; then the output cache; then the selector's chain, each model
//!   behind its circuit breaker and the budgets, each failure handled as the error
//!   taxonomy says ([`crate::provider::TAXONOMY`]); then simplified parameters; then a
//!   substitute agent; then the step's `on_failure`; then a human. Timeouts (first token,
//!   idle gap, total) apply to every attempt; cancellation drops the provider's stream,
//!   which aborts the HTTP request.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use chrono::Utc;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::breaker::{
    Admission, BreakerConfig, BreakerSnapshot, BreakerState, Breakers, CallOutcome,
};
use crate::events::{Event, EventSink, RunStatus, StepStatus};
use crate::human::{HumanDecision, HumanHandler, HumanRequest};
use crate::plan::{Action, LlmAction, Plan, PlannedStep};
use crate::provider::{
    ChatChunk, ChatRequest, ErrorAction, Locality, Message, ProviderError, ProviderErrorKind, Role,
    Usage,
};
use crate::select::{
    Candidate, Catalog, ModelCatalog, ModelStats, SelectionInput, SelectorContext, SelectorWeights,
    estimate_tokens, select,
};
use crate::store::{
    AttemptRecord, CachedOutput, FallbackRecord, GuardrailRecord, RunFinish, RunRecord, RunStore,
    StepRecord,
};
use crate::workflow::{ApprovalDefault, Budget, OnFailure, OutputFormat, RetryPolicy, Timeouts};

/// Errors that stop a run from starting or finishing.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed; the run stopped because its state could not be kept.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The workflow's guardrail rules could not be compiled.
    #[error("guardrails: {0}")]
    Guardrails(String),
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most `llm` steps in flight at once, over all providers (default 8).
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
#[derive(Clone)]
pub struct RunControl {
    tx: Arc<watch::Sender<bool>>,
}

impl Default for RunControl {
    fn default() -> Self {
        RunControl {
            tx: Arc::new(watch::channel(false).0),
        }
    }
}

impl RunControl {
    /// Pauses: steps in flight finish, no new step starts.
    pub fn pause(&self) {
        self.tx.send_replace(true);
    }
    /// Resumes a paused run.
    pub fn resume(&self) {
        self.tx.send_replace(false);
    }
    /// Whether the run is paused.
    pub fn is_paused(&self) -> bool {
        *self.tx.borrow()
    }
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
}

/// The workflow engine: providers, a store, limits, and the state kept across runs
/// (circuit breakers, model statistics).
pub struct Engine {
    providers: Vec<Arc<dyn crate::provider::Provider>>,
    store: Option<Arc<dyn RunStore>>,
    config: EngineConfig,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    state_loaded: tokio::sync::OnceCell<()>,
    breakers: Mutex<Breakers>,
    stats: Mutex<HashMap<String, ModelStats>>,
}

#[derive(Clone)]
struct StepOutput {
    text: String,
    json: Option<serde_json::Value>,
}

/// A finished step: its index, record and output.
type Finished = (usize, StepRecord, Option<StepOutput>);

struct Emitter {
    sinks: Vec<Arc<dyn EventSink>>,
    buffer: Mutex<Vec<Event>>,
}

impl Emitter {
    /// Sends to subscribers at once; keeps non-token events for the next store write.
    fn emit(&self, event: Event) {
        for sink in &self.sinks {
            sink.emit(&event);
        }
        if !matches!(event, Event::Token { .. })
            && let Ok(mut b) = self.buffer.lock()
        {
            b.push(event);
        }
    }
    fn drain(&self) -> Vec<Event> {
        self.buffer
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default()
    }
    fn publish(&self, events: &[Event]) {
        for event in events {
            for sink in &self.sinks {
                sink.emit(event);
            }
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Tokens and money spent, and (for the run) reserved by calls in flight, so parallel
/// steps cannot together pass the run's budget.
#[derive(Debug, Clone, Copy, Default)]
struct Spend {
    tokens: u64,
    cost_usd: f64,
    reserved_tokens: u64,
    reserved_cost_usd: f64,
}

impl Spend {
    fn release(&mut self, tokens: u64, cost_usd: f64) {
        self.reserved_tokens = self.reserved_tokens.saturating_sub(tokens);
        self.reserved_cost_usd = (self.reserved_cost_usd - cost_usd).max(0.0);
    }
}

/// Tokens and money left under the run's and the step's budgets (the smaller of each).
fn left_of(
    run_budget: Option<&Budget>,
    step_budget: Option<&Budget>,
    run: &Spend,
    step: &Spend,
) -> (Option<u64>, Option<f64>) {
    let mut tokens: Option<u64> = None;
    let mut cost: Option<f64> = None;
    let mut limit = |b: &Budget, spent_tokens: u64, spent_cost: f64| {
        if let Some(t) = b.max_tokens {
            let left = t.saturating_sub(spent_tokens);
            tokens = Some(tokens.map_or(left, |x| x.min(left)));
        }
        if let Some(c) = b.max_cost_usd {
            let left = (c - spent_cost).max(0.0);
            cost = Some(cost.map_or(left, |x| x.min(left)));
        }
    };
    if let Some(b) = run_budget {
        limit(
            b,
            run.tokens + run.reserved_tokens,
            run.cost_usd + run.reserved_cost_usd,
        );
    }
    if let Some(b) = step_budget {
        limit(b, step.tokens, step.cost_usd);
    }
    (tokens, cost)
}

/// What every task of a run shares.
struct RunShared {
    run_id: String,
    emitter: Arc<Emitter>,
    /// The run's own token (a step's failure rung may cancel the whole run).
    cancel: CancellationToken,
    human: Option<Arc<dyn HumanHandler>>,
    spend: Mutex<Spend>,
    budget: Option<Budget>,
    guard: Option<nexus_guard::Policy>,
    /// Rules with `scope: cloud`, applied to the messages of each cloud attempt.
    guard_cloud: Option<nexus_guard::Policy>,
    use_cache: bool,
    catalog: Arc<Catalog>,
    /// The run's pause switch: the ladder's last rung pauses the run while it asks.
    control: RunControl,
}

/// Outcome of one attempt.
struct AttemptOutput {
    text: String,
    usage: Usage,
    first_token_ms: Option<u64>,
}

/// One model call's parameters, as a ladder rung shapes them.
#[derive(Clone)]
struct Call {
    messages: Vec<Message>,
    max_tokens: u32,
    json_schema: Option<serde_json::Value>,
    est_prompt: u64,
}

/// A successful call.
struct Success {
    text: String,
    json: Option<serde_json::Value>,
    usage: Usage,
    reference: String,
    reason: String,
    score: crate::select::ScoreParts,
}

/// How a chain of candidates ended without success.
enum ChainEnd {
    /// Every candidate was tried.
    Exhausted,
    /// An error whose action is to stop (cancel, guardrail block, budget).
    Stop(ProviderError),
}

/// Running state of one step's ladder.
struct Ladder {
    attempt_no: u32,
    last_error: Option<ProviderError>,
    /// The model tried last, for fallback records.
    last_model: Option<String>,
    spend: Spend,
    t0: Instant,
    /// Whether the cloud-scope guardrail verdicts were recorded already.
    cloud_verdicts_recorded: bool,
}

#[derive(Serialize)]
struct TemplateContext<'a> {
    inputs: &'a serde_json::Map<String, serde_json::Value>,
    steps: BTreeMap<&'a str, StepView<'a>>,
}

#[derive(Serialize)]
struct StepView<'a> {
    output: &'a str,
    json: Option<&'a serde_json::Value>,
}

fn render(
    plan: &Plan,
    name: &str,
    inputs: &serde_json::Map<String, serde_json::Value>,
    reads: &[usize],
    outputs: &[Option<Arc<StepOutput>>],
) -> Result<String, String> {
    let mut steps = BTreeMap::new();
    for &r in reads {
        if let Some(out) = &outputs[r] {
            steps.insert(
                plan.steps[r].id.as_str(),
                StepView {
                    output: &out.text,
                    json: out.json.as_ref(),
                },
            );
        }
    }
    let ctx = TemplateContext { inputs, steps };
    let tmpl = plan.env.get_template(name).map_err(|e| e.to_string())?;
    tmpl.render(&ctx).map_err(|e| {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(&format!(": {s}"));
            source = s.source();
        }
        msg
    })
}

/// Builds the backoff delays of a retry policy (one per retry) with `backon`.
pub fn retry_delays(policy: &RetryPolicy) -> impl Iterator<Item = Duration> + use<> {
    let mut b = backon::ExponentialBuilder::default()
        .with_min_delay(policy.initial_interval)
        .with_max_delay(policy.max_interval)
        .with_factor(policy.backoff_coefficient)
        .with_max_times(policy.max_attempts.saturating_sub(1) as usize);
    if policy.jitter {
        b = b.with_jitter();
    }
    b.build()
}

impl Engine {
    /// An engine over these providers (in registration order), with an optional store.
    pub fn new(
        providers: Vec<Arc<dyn crate::provider::Provider>>,
        store: Option<Arc<dyn RunStore>>,
        config: EngineConfig,
    ) -> Self {
        let breakers = Breakers::new(config.breaker.clone());
        Engine {
            providers,
            store,
            config,
            slots: Mutex::new(HashMap::new()),
            state_loaded: tokio::sync::OnceCell::new(),
            breakers: Mutex::new(breakers),
            stats: Mutex::new(HashMap::new()),
        }
    }

    /// The configured providers.
    pub fn providers(&self) -> &[Arc<dyn crate::provider::Provider>] {
        &self.providers
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Lists what every provider offers now.
    pub async fn discover(&self) -> Catalog {
        Catalog::discover(&self.providers, self.config.discovery_timeout).await
    }

    /// Loads the breakers and model statistics from the store, once.
    ///
    /// # Errors
    /// [`EngineError::Store`] when the store cannot be read.
    pub async fn load_state(&self) -> Result<(), EngineError> {
        self.state_loaded
            .get_or_try_init(|| async {
                if let Some(store) = &self.store {
                    let state = store.load_state().await?;
                    *lock(&self.breakers) =
                        Breakers::restore(self.config.breaker.clone(), state.breakers);
                    lock(&self.stats).extend(state.stats);
                }
                Ok::<(), EngineError>(())
            })
            .await?;
        Ok(())
    }

    /// Every known breaker with its state now, sorted by `provider:model`.
    ///
    /// # Errors
    /// [`EngineError::Store`] when the state cannot be loaded.
    pub async fn breaker_states(
        &self,
    ) -> Result<Vec<(String, BreakerState, BreakerSnapshot)>, EngineError> {
        self.load_state().await?;
        let now = Utc::now();
        let b = lock(&self.breakers);
        Ok(b.snapshots()
            .into_iter()
            .map(|(k, snap)| (k.clone(), b.state(&k, now), snap))
            .collect())
    }

    /// Observed statistics of every model, by `provider:model`.
    pub fn model_stats(&self) -> HashMap<String, ModelStats> {
        lock(&self.stats).clone()
    }

    /// Ranks the candidates for a step input with the current breakers and statistics.
    pub fn rank(&self, input: &SelectionInput, catalog: &Catalog) -> crate::select::Selection {
        let open = lock(&self.breakers).open_at(Utc::now());
        // Held while ranking (a few microseconds) instead of copying the statistics.
        let stats = lock(&self.stats);
        select(
            input,
            catalog,
            SelectorContext {
                models: &self.config.models,
                stats: &stats,
                open_breakers: &open,
                weights: &self.config.weights,
            },
        )
    }

    fn slot(&self, candidate: &Candidate) -> Arc<Semaphore> {
        let mut slots = lock(&self.slots);
        Arc::clone(slots.entry(candidate.reference.clone()).or_insert_with(|| {
            let limit = self
                .config
                .provider_limits
                .get(candidate.provider.id())
                .copied()
                .unwrap_or_else(|| candidate.provider.max_concurrency())
                .max(1);
            Arc::new(Semaphore::new(limit))
        }))
    }

    /// Runs a validated plan with resolved inputs (see [`crate::plan::resolve_inputs`]),
    /// or continues an interrupted run ([`RunOptions::resume`]).
    ///
    /// Returns when every step has finished, failed, been skipped or cancelled. A step
    /// failure is reported in the [`RunReport`], not as an error.
    ///
    /// # Errors
    /// [`EngineError::Store`] when the run's state cannot be stored;
    /// [`EngineError::Guardrails`] when the workflow's rules do not compile.
    pub async fn run(
        self: &Arc<Self>,
        plan: Arc<Plan>,
        inputs: serde_json::Map<String, serde_json::Value>,
        options: RunOptions,
    ) -> Result<RunReport, EngineError> {
        let started = Instant::now();
        let run_id = options
            .run_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let emitter = Arc::new(Emitter {
            sinks: options.sinks.clone(),
            buffer: Mutex::new(Vec::new()),
        });
        let inputs = Arc::new(inputs);
        let n = plan.steps.len();
        self.load_state().await?;

        // Guardrails: rules for every text, and rules only for text bound to the cloud.
        let rules = match &plan.workflow.guardrails {
            Some(g) if !g.enabled => Vec::new(),
            Some(g) if !g.rules.is_empty() => g.rules.clone(),
            _ => nexus_guard::default_rules(),
        };
        let policy_of =
            |scope: nexus_guard::Scope| -> Result<Option<nexus_guard::Policy>, EngineError> {
                let chosen: Vec<nexus_guard::Rule> =
                    rules.iter().filter(|r| r.scope == scope).copied().collect();
                if chosen.is_empty() {
                    return Ok(None);
                }
                nexus_guard::Policy::new(chosen)
                    .map(Some)
                    .map_err(|e| EngineError::Guardrails(e.to_string()))
            };
        let guard = policy_of(nexus_guard::Scope::All)?;
        let guard_cloud = policy_of(nexus_guard::Scope::Cloud)?;

        let prior = options.resume.clone().unwrap_or_default();
        if let Some(store) = &self.store {
            if options.resume.is_some() {
                store
                    .set_run_status(
                        &run_id,
                        RunStatus::Running,
                        &[Event::RunResumed {
                            run_id: run_id.clone(),
                            completed_steps: prior.len(),
                        }],
                    )
                    .await?;
            } else {
                store
                    .create_run(&RunRecord {
                        run_id: run_id.clone(),
                        workflow_id: plan.workflow.id.clone(),
                        workflow_name: plan.workflow.name.clone(),
                        workflow_version: plan.workflow.version.clone(),
                        file: plan.file.clone(),
                        inputs: serde_json::Value::Object((*inputs).clone()),
                        workflow: serde_json::to_value(&plan.workflow).ok(),
                        started_at: Utc::now(),
                    })
                    .await?;
            }
        }
        if options.resume.is_some() {
            emitter.publish(&[Event::RunResumed {
                run_id: run_id.clone(),
                completed_steps: prior.len(),
            }]);
        } else {
            emitter.emit(Event::RunStarted {
                run_id: run_id.clone(),
                workflow_id: plan.workflow.id.clone(),
                steps: n,
            });
        }

        let has_llm = plan
            .steps
            .iter()
            .any(|s| matches!(s.action, Action::Llm(_)));
        let catalog = Arc::new(if has_llm {
            self.discover().await
        } else {
            Catalog::default()
        });
        let shared = Arc::new(RunShared {
            run_id: run_id.clone(),
            emitter: Arc::clone(&emitter),
            cancel: options.cancel.clone(),
            human: options.human.clone(),
            spend: Mutex::new(Spend::default()),
            budget: plan.workflow.budget.clone(),
            guard,
            guard_cloud,
            use_cache: options.use_cache,
            catalog,
            control: options.control.clone(),
        });

        let mut pending: Vec<usize> = plan.steps.iter().map(|s| s.needs.len()).collect();
        let mut status: Vec<Option<StepStatus>> = vec![None; n];
        let mut outputs: Vec<Option<Arc<StepOutput>>> = vec![None; n];
        let mut records: Vec<StepRecord> = Vec::with_capacity(n);
        for rec in prior {
            let Some(&i) = plan.index.get(&rec.step_id) else {
                continue;
            };
            if status[i].is_some() {
                continue;
            }
            keep_record(&plan, i, &rec, &mut status, &mut outputs, &mut pending);
            // What the interrupted run already spent (cached steps spent nothing).
            if let Ok(mut spend) = shared.spend.lock() {
                spend.tokens += rec
                    .attempts
                    .iter()
                    .filter_map(|a| a.usage)
                    .map(|u| u.prompt_tokens + u.completion_tokens)
                    .sum::<u64>();
                spend.cost_usd += rec.cost_usd.unwrap_or(0.0);
            }
            records.push(rec);
        }
        // Reused outputs and steps outside `only`: recorded at once, like kept records.
        let mut extra: Vec<StepRecord> = Vec::new();
        if let Some((from, reused)) = &options.reuse {
            for rec in reused {
                let Some(&i) = plan.index.get(&rec.step_id) else {
                    continue;
                };
                if status[i].is_some() || rec.status != StepStatus::Succeeded {
                    continue;
                }
                let mut r = rec.clone();
                r.cached = true;
                r.model_reason = Some(format!(
                    "output reused from run {from}{}",
                    rec.model_reason
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                ));
                r.attempts.clear();
                r.fallbacks.clear();
                r.usage = None;
                r.cost_usd = None;
                r.duration_ms = 0;
                r.started_at = Utc::now();
                status[i] = Some(StepStatus::Succeeded);
                extra.push(r);
            }
        }
        if let Some(only) = &options.only {
            let wanted = plan.ancestors(only);
            for (i, step) in plan.steps.iter().enumerate() {
                if status[i].is_none() && !wanted.contains(&i) {
                    status[i] = Some(StepStatus::Skipped);
                    extra.push(record_for(
                        step,
                        StepStatus::Skipped,
                        Some(&format!("not needed to run up to `{}`", only.join("`, `"))),
                        Utc::now(),
                    ));
                }
            }
        }
        if !extra.is_empty() {
            let finals: Vec<Event> = extra
                .iter()
                .filter_map(|r| {
                    plan.index
                        .get(&r.step_id)
                        .map(|&i| final_event(&run_id, &plan.steps[i], r))
                })
                .collect();
            if let Some(store) = &self.store {
                let mut events = emitter.drain();
                events.extend(finals.iter().cloned());
                let batch: Vec<&StepRecord> = extra.iter().collect();
                store.record_steps(&run_id, &batch, &events).await?;
            }
            emitter.publish(&finals);
            for rec in extra {
                let Some(&i) = plan.index.get(&rec.step_id) else {
                    continue;
                };
                keep_record(&plan, i, &rec, &mut status, &mut outputs, &mut pending);
                records.push(rec);
            }
        }
        let mut ready: Vec<usize> = (0..n)
            .filter(|&i| pending[i] == 0 && status[i].is_none())
            .rev()
            .collect();
        let mut tasks: JoinSet<Finished> = JoinSet::new();
        let mut task_steps: HashMap<tokio::task::Id, usize> = HashMap::new();
        let mut cancelled = false;
        let mut paused = false;
        let mut pause_rx = options.control.tx.subscribe();
        let mut store_error: Option<EngineError> = None;

        loop {
            let mut done: Vec<Finished> = Vec::new();
            if options.cancel.is_cancelled() {
                cancelled = true;
            }
            let paused_now = options.control.is_paused() && !cancelled;
            if paused_now != paused {
                paused = paused_now;
                let (event, run_status) = if paused {
                    (
                        Event::RunPaused {
                            run_id: run_id.clone(),
                        },
                        RunStatus::Paused,
                    )
                } else {
                    (
                        Event::RunResumed {
                            run_id: run_id.clone(),
                            completed_steps: records.len(),
                        },
                        RunStatus::Running,
                    )
                };
                if let Some(store) = &self.store
                    && let Err(e) = store
                        .set_run_status(&run_id, run_status, std::slice::from_ref(&event))
                        .await
                {
                    store_error = Some(e.into());
                    options.cancel.cancel();
                }
                emitter.publish(&[event]);
            }
            // Start what is ready.
            while !paused && (tasks.len() < self.config.max_parallel.max(1) || !ready.is_empty()) {
                let Some(i) = ready.pop() else { break };
                let step = &plan.steps[i];
                let now = Utc::now();
                if cancelled || store_error.is_some() {
                    done.push((
                        i,
                        record_for(
                            step,
                            StepStatus::Cancelled,
                            Some("the run was cancelled before the step started"),
                            now,
                        ),
                        None,
                    ));
                    continue;
                }
                let blocking = step.needs.iter().find(|&&d| {
                    if step.alternate_of == Some(d) {
                        status[d] != Some(StepStatus::Failed)
                    } else {
                        status[d] != Some(StepStatus::Succeeded)
                    }
                });
                if let Some(&dep) = blocking {
                    let why = if step.alternate_of == Some(dep) {
                        "did not fail (this step is its alternate branch)"
                    } else {
                        match status[dep] {
                            Some(StepStatus::Failed) => "failed",
                            Some(StepStatus::Cancelled) => "was cancelled",
                            _ => "was skipped",
                        }
                    };
                    done.push((
                        i,
                        record_for(
                            step,
                            StepStatus::Skipped,
                            Some(&format!("dependency `{}` {why}", plan.steps[dep].id)),
                            now,
                        ),
                        None,
                    ));
                    continue;
                }
                if let Some(when) = &step.when {
                    match render(&plan, when, &inputs, &step.reads, &outputs) {
                        Ok(v) if v.trim() == "true" => {}
                        Ok(_) => {
                            done.push((
                                i,
                                record_for(
                                    step,
                                    StepStatus::Skipped,
                                    Some("its `when` condition is false"),
                                    now,
                                ),
                                None,
                            ));
                            continue;
                        }
                        Err(e) => {
                            let rec = record_for(
                                step,
                                StepStatus::Failed,
                                Some(&format!("condition failed to evaluate: {e}")),
                                now,
                            );
                            done.push((i, rec, None));
                            continue;
                        }
                    }
                }
                match &step.action {
                    Action::Template { template, format } => {
                        let t0 = Instant::now();
                        let result = render(&plan, template, &inputs, &step.reads, &outputs)
                            .and_then(|text| match format {
                                OutputFormat::Text => Ok(StepOutput { text, json: None }),
                                OutputFormat::Json => serde_json::from_str(&text)
                                    .map(|json| StepOutput {
                                        text,
                                        json: Some(json),
                                    })
                                    .map_err(|e| format!("rendered text is not JSON: {e}")),
                            });
                        let mut rec = record_for(step, StepStatus::Succeeded, None, now);
                        rec.duration_ms = ms(t0.elapsed());
                        match result {
                            Ok(out) => {
                                rec.output = Some(out.text.clone());
                                rec.output_json = out.json.clone();
                                done.push((i, rec, Some(out)));
                            }
                            Err(e) => {
                                rec.status = StepStatus::Failed;
                                rec.error = Some(format!("template failed: {e}"));
                                done.push((i, rec, None));
                            }
                        }
                    }
                    Action::Approval { prompt, settings } => {
                        if tasks.len() >= self.config.max_parallel.max(1) {
                            ready.push(i);
                            break;
                        }
                        let message = match render(&plan, prompt, &inputs, &step.reads, &outputs) {
                            Ok(m) => m,
                            Err(e) => {
                                let rec = record_for(
                                    step,
                                    StepStatus::Failed,
                                    Some(&format!("question failed to render: {e}")),
                                    now,
                                );
                                done.push((i, rec, None));
                                continue;
                            }
                        };
                        let engine = Arc::clone(self);
                        let sh = Arc::clone(&shared);
                        let step = step.clone();
                        let settings = settings.clone();
                        let handle = tasks.spawn(async move {
                            let (rec, out) = engine
                                .run_approval_step(&sh, &step, message, &settings)
                                .await;
                            (i, rec, out)
                        });
                        task_steps.insert(handle.id(), i);
                    }
                    Action::Llm(llm) => {
                        if tasks.len() >= self.config.max_parallel.max(1) {
                            ready.push(i);
                            break;
                        }
                        let r = |t: &str| render(&plan, t, &inputs, &step.reads, &outputs);
                        let prompt = r(&llm.prompt);
                        let system = llm.system.as_deref().map(r).transpose();
                        let substitute_system = llm
                            .substitute
                            .as_ref()
                            .and_then(|s| s.system.as_deref())
                            .map(r)
                            .transpose();
                        let (prompt, system, substitute_system) =
                            match (prompt, system, substitute_system) {
                                (Ok(p), Ok(s), Ok(ss)) => (p, s, ss),
                                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                                    let rec = record_for(
                                        step,
                                        StepStatus::Failed,
                                        Some(&format!("prompt failed to render: {e}")),
                                        now,
                                    );
                                    done.push((i, rec, None));
                                    continue;
                                }
                            };
                        let engine = Arc::clone(self);
                        let ctx = LlmContext {
                            sh: Arc::clone(&shared),
                            step: step.clone(),
                            llm: (**llm).clone(),
                            prompt,
                            system,
                            substitute_system,
                            cancel: options.cancel.child_token(),
                        };
                        let handle = tasks.spawn(async move {
                            let (rec, out) = engine.run_llm_step(ctx).await;
                            (i, rec, out)
                        });
                        task_steps.insert(handle.id(), i);
                    }
                }
            }

            if done.is_empty() {
                // Nothing in flight and nothing ready: done, paused or not.
                if tasks.is_empty() && (ready.is_empty() || !paused) {
                    break;
                }
                tokio::select! {
                    joined = tasks.join_next_with_id(), if !tasks.is_empty() => {
                        if let Some(res) = joined {
                            done.push(self.joined(&plan, &task_steps, res));
                        }
                    }
                    () = options.cancel.cancelled(), if !cancelled => {
                        cancelled = true;
                        continue;
                    }
                    changed = pause_rx.changed() => {
                        if changed.is_err() {
                            // The control was dropped: nobody can resume, so do not wait.
                            options.control.resume();
                        }
                        continue;
                    }
                }
                while let Some(res) = tasks.try_join_next_with_id() {
                    done.push(self.joined(&plan, &task_steps, res));
                }
            }

            // Apply `on_failure` to failed steps.
            for (i, rec, out) in &mut done {
                if rec.status == StepStatus::Failed && !rec.handled {
                    apply_on_failure(&plan.steps[*i], rec, out);
                }
            }

            // Store the batch, then announce it, then release dependants.
            let mut finals = Vec::with_capacity(done.len());
            for (i, rec, _) in &done {
                finals.push(final_event(&run_id, &plan.steps[*i], rec));
            }
            if let Some(store) = &self.store
                && store_error.is_none()
            {
                let mut events = emitter.drain();
                events.extend(finals.iter().cloned());
                let batch: Vec<&StepRecord> = done.iter().map(|(_, r, _)| r).collect();
                if let Err(e) = store.record_steps(&run_id, &batch, &events).await {
                    store_error = Some(e.into());
                    options.cancel.cancel();
                }
            }
            emitter.publish(&finals);
            for (i, rec, out) in done {
                status[i] = Some(rec.status);
                outputs[i] = out.map(Arc::new);
                records.push(rec);
                for &d in &plan.dependants[i] {
                    pending[d] -= 1;
                    // A step already recorded (reused, or outside `only`) is not run.
                    if pending[d] == 0 && status[d].is_none() {
                        ready.push(d);
                    }
                }
            }
        }

        if let Some(e) = store_error {
            return Err(e);
        }

        let any_failed = records
            .iter()
            .any(|r| r.status == StepStatus::Failed && !r.handled);
        let run_status = if cancelled || options.cancel.is_cancelled() {
            RunStatus::Cancelled
        } else if any_failed {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        let mut out_values = serde_json::Map::new();
        for (name, tmpl, reads) in &plan.outputs {
            let value = if reads
                .iter()
                .all(|&r| status[r] == Some(StepStatus::Succeeded))
            {
                match render(&plan, tmpl, &inputs, reads, &outputs) {
                    Ok(text) => serde_json::Value::String(text),
                    Err(e) => serde_json::Value::String(format!("<output failed to render: {e}>")),
                }
            } else {
                serde_json::Value::Null
            };
            out_values.insert(name.clone(), value);
        }
        let error = match run_status {
            RunStatus::Cancelled => Some("the run was cancelled".to_string()),
            RunStatus::Failed => {
                let failed: Vec<String> = records
                    .iter()
                    .filter(|r| r.status == StepStatus::Failed && !r.handled)
                    .map(|r| format!("{}: {}", r.step_id, r.error.as_deref().unwrap_or("failed")))
                    .collect();
                Some(format!("step(s) failed: {}", failed.join("; ")))
            }
            _ => None,
        };
        let duration_ms = ms(started.elapsed());
        let finish_event = Event::RunFinished {
            run_id: run_id.clone(),
            status: run_status,
            duration_ms,
        };
        if let Some(store) = &self.store {
            let mut events = emitter.drain();
            events.push(finish_event.clone());
            store
                .finish_run(
                    &run_id,
                    &RunFinish {
                        status: run_status,
                        outputs: serde_json::Value::Object(out_values.clone()),
                        error: error.clone(),
                        finished_at: Utc::now(),
                    },
                    &events,
                )
                .await?;
        }
        emitter.publish(&[finish_event]);
        Ok(RunReport {
            run_id,
            status: run_status,
            outputs: out_values,
            steps: records,
            duration_ms,
            error,
        })
    }

    fn joined(
        &self,
        plan: &Plan,
        task_steps: &HashMap<tokio::task::Id, usize>,
        res: Result<(tokio::task::Id, Finished), tokio::task::JoinError>,
    ) -> Finished {
        match res {
            Ok((_, value)) => value,
            Err(e) => {
                let i = task_steps.get(&e.id()).copied().unwrap_or(0);
                let rec = record_for(
                    &plan.steps[i],
                    StepStatus::Failed,
                    Some(&format!("internal error: {e}")),
                    Utc::now(),
                );
                (i, rec, None)
            }
        }
    }

    /// Asks a human, with the run in `waiting_for_human` meanwhile. `None` when nobody
    /// can be asked, the timeout passed, or the run was cancelled.
    async fn ask(
        &self,
        sh: &RunShared,
        request: HumanRequest,
        timeout: Option<Duration>,
    ) -> Option<HumanDecision> {
        let human = sh.human.as_ref()?;
        // A failed step pauses the run while a human decides (no new step starts).
        let pause = matches!(request, HumanRequest::StepFailed { .. }) && !sh.control.is_paused();
        if pause {
            sh.control.pause();
        }
        sh.emitter.emit(Event::WaitingForHuman {
            run_id: sh.run_id.clone(),
            step_id: request.step_id().to_string(),
            question: request.question(),
        });
        if let Some(store) = &self.store
            && let Err(e) = store
                .set_run_status(&sh.run_id, RunStatus::WaitingForHuman, &[])
                .await
        {
            tracing::warn!("cannot record the wait for a human: {e}");
        }
        let wait = human.decide(&request);
        let decision = tokio::select! {
            d = async {
                match timeout {
                    Some(t) => tokio::time::timeout(t, wait).await.ok().flatten(),
                    None => wait.await,
                }
            } => d,
            () = sh.cancel.cancelled() => None,
        };
        if pause {
            sh.control.resume();
        }
        sh.emitter.emit(Event::HumanDecided {
            run_id: sh.run_id.clone(),
            step_id: request.step_id().to_string(),
            decision: match &decision {
                Some(d) => d.name().to_string(),
                None => "timeout".to_string(),
            },
        });
        if let Some(store) = &self.store
            && let Err(e) = store
                .set_run_status(&sh.run_id, RunStatus::Running, &[])
                .await
        {
            tracing::warn!("cannot record the human's answer: {e}");
        }
        decision
    }

    async fn run_approval_step(
        &self,
        sh: &RunShared,
        step: &PlannedStep,
        message: String,
        settings: &crate::workflow::ApprovalSettings,
    ) -> (StepRecord, Option<StepOutput>) {
        let t0 = Instant::now();
        let mut rec = record_for(step, StepStatus::Succeeded, None, Utc::now());
        rec.input = Some(message.clone());
        let request = HumanRequest::Approval {
            run_id: sh.run_id.clone(),
            step_id: step.id.clone(),
            message,
        };
        let decision = self.ask(sh, request, settings.timeout).await;
        let (approved, by) = match decision {
            Some(HumanDecision::Approve) => (true, "human"),
            Some(HumanDecision::Cancel) => {
                sh.cancel.cancel();
                rec.status = StepStatus::Cancelled;
                rec.error = Some("the approver cancelled the run".into());
                rec.duration_ms = ms(t0.elapsed());
                return (rec, None);
            }
            Some(_) => (false, "human"),
            None if sh.cancel.is_cancelled() => {
                rec.status = StepStatus::Cancelled;
                rec.error = Some("cancelled while waiting for approval".into());
                rec.duration_ms = ms(t0.elapsed());
                return (rec, None);
            }
            None => (settings.default == ApprovalDefault::Approve, "default"),
        };
        rec.duration_ms = ms(t0.elapsed());
        let json = serde_json::json!({ "approved": approved, "decided_by": by });
        if approved {
            rec.output = Some("approved".into());
            rec.output_json = Some(json.clone());
            (
                rec,
                Some(StepOutput {
                    text: "approved".into(),
                    json: Some(json),
                }),
            )
        } else {
            rec.status = StepStatus::Failed;
            rec.error = Some(format!("rejected (decided by {by})"));
            rec.output_json = Some(json);
            (rec, None)
        }
    }

    /// Applies the guardrail policy to a text. Returns the text to use (redacted when a
    /// rule says so), or the error that stops the step.
    async fn guard_text(
        &self,
        sh: &RunShared,
        step_id: &str,
        stage: &str,
        text: String,
        rec: &mut StepRecord,
    ) -> Result<String, ProviderError> {
        let Some(policy) = &sh.guard else {
            return Ok(text);
        };
        let outcome = policy.apply(&text);
        if outcome.verdicts.is_empty() {
            return Ok(text);
        }
        let findings: Vec<String> = outcome
            .verdicts
            .iter()
            .map(|v| record_verdict(sh, step_id, stage, v, rec))
            .collect();
        if outcome.blocked {
            return Err(ProviderError::new(
                ProviderErrorKind::GuardrailBlock,
                format!(
                    "guardrails blocked the step's {stage}: {}",
                    findings.join(", ")
                ),
            ));
        }
        if outcome.needs_approval {
            let request = HumanRequest::Guardrail {
                run_id: sh.run_id.clone(),
                step_id: step_id.to_string(),
                stage: stage.to_string(),
                findings: findings.clone(),
            };
            match self.ask(sh, request, None).await {
                // Approved: the text goes on as written (redactions still apply).
                Some(HumanDecision::Approve) => {}
                Some(HumanDecision::Cancel) => {
                    sh.cancel.cancel();
                    return Err(ProviderError::new(
                        ProviderErrorKind::Cancelled,
                        "the run was cancelled at a guardrail question",
                    ));
                }
                _ => {
                    return Err(ProviderError::new(
                        ProviderErrorKind::GuardrailBlock,
                        format!(
                            "guardrails needed approval of the step's {stage} and it was not given: {}",
                            findings.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(outcome.text)
    }

    /// Guardrails on a step's output: the text to keep (redacted where a rule says so) and
    /// its JSON, parsed again from the redacted text when redaction changed it.
    async fn guard_output(
        &self,
        sh: &RunShared,
        step_id: &str,
        text: String,
        json: Option<serde_json::Value>,
        rec: &mut StepRecord,
    ) -> Result<StepOutput, ProviderError> {
        let guarded = self
            .guard_text(sh, step_id, "output", text.clone(), rec)
            .await?;
        let json = if guarded == text {
            json
        } else {
            json.and_then(|_| parse_json_reply(&guarded).ok())
        };
        Ok(StepOutput {
            text: guarded,
            json,
        })
    }

    fn budget_left(
        &self,
        sh: &RunShared,
        llm: &LlmAction,
        step: Spend,
    ) -> (Option<u64>, Option<f64>) {
        let run = *lock(&sh.spend);
        left_of(sh.budget.as_ref(), llm.budget.as_ref(), &run, &step)
    }

    async fn run_llm_step(&self, cx: LlmContext) -> (StepRecord, Option<StepOutput>) {
        let started_at = Utc::now();
        let mut lad = Ladder {
            attempt_no: 0,
            last_error: None,
            last_model: None,
            spend: Spend::default(),
            t0: Instant::now(),
            cloud_verdicts_recorded: false,
        };
        let mut rec = record_for(&cx.step, StepStatus::Failed, None, started_at);
        rec.input = Some(cx.prompt.clone());
        let finish =
            |mut rec: StepRecord, lad: &Ladder, status: StepStatus, error: Option<String>| {
                rec.status = status;
                rec.error = error;
                rec.duration_ms = ms(lad.t0.elapsed());
                if lad.spend.cost_usd > 0.0 {
                    rec.cost_usd = Some(lad.spend.cost_usd);
                }
                rec
            };

        // Guardrails on the input (prompt, system, the substitute agent's system), before
        // any provider sees it.
        let step_id = cx.step.id.clone();
        let stopped = |e: &ProviderError| {
            if e.kind == ProviderErrorKind::Cancelled {
                StepStatus::Cancelled
            } else {
                StepStatus::Failed
            }
        };
        let mut guarded: Vec<Option<String>> = Vec::with_capacity(3);
        for text in [
            Some(&cx.prompt),
            cx.system.as_ref(),
            cx.substitute_system.as_ref(),
        ] {
            match text {
                Some(t) => match self
                    .guard_text(&cx.sh, &step_id, "input", t.clone(), &mut rec)
                    .await
                {
                    Ok(t) => guarded.push(Some(t)),
                    Err(e) => {
                        let status = stopped(&e);
                        return (finish(rec, &lad, status, Some(e.to_string())), None);
                    }
                },
                None => guarded.push(None),
            }
        }
        let substitute_system = guarded.pop().flatten();
        let system = guarded.pop().flatten();
        let prompt = guarded.pop().flatten().unwrap_or_default();
        rec.input = Some(prompt.clone());

        let messages = |system: Option<&String>, prompt: &str| {
            let mut m = Vec::with_capacity(2);
            if let Some(system) = system {
                m.push(Message {
                    role: Role::System,
                    content: system.clone(),
                });
            }
            m.push(Message {
                role: Role::User,
                content: prompt.to_string(),
            });
            m
        };
        let est_prompt =
            estimate_tokens(&prompt) + system.as_deref().map_or(0, estimate_tokens) + 8;
        let base_call = Call {
            messages: messages(system.as_ref(), &prompt),
            max_tokens: cx.llm.max_tokens,
            json_schema: cx.llm.output_schema.as_ref().map(|(s, _)| s.clone()),
            est_prompt,
        };
        let selection_for = |engine: &Engine,
                             req: &crate::workflow::ModelRequirements,
                             call: &Call,
                             spend: Spend| {
            let (tokens, cost) = engine.budget_left(&cx.sh, &cx.llm, spend);
            engine.rank(
                &SelectionInput {
                    requirements: req.clone(),
                    task: cx.llm.task,
                    prompt_tokens: call.est_prompt,
                    max_tokens: call.max_tokens,
                    needs_json: call.json_schema.is_some(),
                    budget_usd: cost,
                    budget_tokens: tokens,
                },
                &cx.sh.catalog,
            )
        };
        let selection = selection_for(self, &cx.llm.model, &base_call, lad.spend);
        rec.selection = Some(selection.record.clone());

        // The output cache: same definition, resolved inputs and first-choice model.
        let cache_key = {
            use sha2::Digest;
            let key = serde_json::json!([
                cx.step.definition_hash,
                system,
                prompt,
                selection.candidates.first().map(|c| c.reference.clone()),
            ]);
            crate::plan::hex(&sha2::Sha256::digest(key.to_string().as_bytes()))
        };
        if cx.step.cache
            && cx.sh.use_cache
            && let Some(store) = &self.store
        {
            match store.cache_get(&cache_key).await {
                Ok(Some(hit)) => {
                    // The cached text passes this workflow's output guardrails too.
                    let StepOutput { text, json } = match self
                        .guard_output(&cx.sh, &step_id, hit.output, hit.output_json, &mut rec)
                        .await
                    {
                        Ok(out) => out,
                        Err(e) => {
                            let status = stopped(&e);
                            return (finish(rec, &lad, status, Some(e.to_string())), None);
                        }
                    };
                    rec.status = StepStatus::Succeeded;
                    rec.cached = true;
                    rec.model = hit.model.clone();
                    rec.model_reason = Some(format!(
                        "cached output of run {} (same step definition, inputs and model)",
                        hit.run_id
                    ));
                    rec.usage = hit.usage;
                    rec.output = Some(text.clone());
                    rec.output_json = json.clone();
                    rec.duration_ms = ms(lad.t0.elapsed());
                    return (rec, Some(StepOutput { text, json }));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("output cache unavailable: {e}"),
            }
        }

        loop {
            let result = self
                .climb(
                    &cx,
                    &mut rec,
                    &mut lad,
                    &base_call,
                    selection.clone(),
                    &selection_for,
                    system.as_ref(),
                    substitute_system.as_ref(),
                    &prompt,
                    &messages,
                )
                .await;
            let error = match result {
                Ok(success) => {
                    // Guardrails on the output.
                    let StepOutput { text, json } = match self
                        .guard_output(&cx.sh, &step_id, success.text, success.json, &mut rec)
                        .await
                    {
                        Ok(out) => out,
                        Err(e) => {
                            let status = stopped(&e);
                            return (finish(rec, &lad, status, Some(e.to_string())), None);
                        }
                    };
                    rec.model = Some(success.reference.clone());
                    let mut reason = format!(
                        "{}: {}; {}",
                        success.reference,
                        success.reason,
                        success.score.describe(cx.llm.task)
                    );
                    if !rec.fallbacks.is_empty() {
                        let chain: Vec<String> = rec
                            .fallbacks
                            .iter()
                            .map(|f| format!("{} → {} [{}] ({})", f.from, f.to, f.rung, f.reason))
                            .collect();
                        reason.push_str(&format!("; after the ladder: {}", chain.join("; ")));
                    }
                    rec.model_reason = Some(reason);
                    rec.usage = Some(success.usage);
                    rec.output = Some(text.clone());
                    rec.output_json = json.clone();
                    if let Some(store) = &self.store
                        && cx.step.cache
                    {
                        let cached = CachedOutput {
                            output: text.clone(),
                            output_json: json.clone(),
                            model: rec.model.clone(),
                            usage: rec.usage,
                            run_id: cx.sh.run_id.clone(),
                        };
                        if let Err(e) = store.cache_put(&cache_key, &cached).await {
                            tracing::warn!("cannot store the output in the cache: {e}");
                        }
                    }
                    return (
                        finish(rec, &lad, StepStatus::Succeeded, None),
                        Some(StepOutput { text, json }),
                    );
                }
                Err(ChainEnd::Stop(e)) if e.kind == ProviderErrorKind::Cancelled => {
                    return (
                        finish(rec, &lad, StepStatus::Cancelled, Some("cancelled".into())),
                        None,
                    );
                }
                Err(ChainEnd::Stop(e)) => e.to_string(),
                Err(ChainEnd::Exhausted) => {
                    if selection.candidates.is_empty() && lad.attempt_no == 0 {
                        format!(
                            "no model can serve this step ({})",
                            if selection.record.excluded.is_empty() {
                                "no provider is configured".to_string()
                            } else {
                                selection.excluded().join("; ")
                            }
                        )
                    } else {
                        match &lad.last_error {
                            Some(e) => {
                                format!("every rung of the fallback ladder failed; last error: {e}")
                            }
                            None => "every rung of the fallback ladder failed".into(),
                        }
                    }
                }
            };
            // Last rung: a human, when `on_failure` leaves the failure to us.
            if cx.llm.fallback.ask_human && cx.step.on_failure == OnFailure::Fail {
                let request = HumanRequest::StepFailed {
                    run_id: cx.sh.run_id.clone(),
                    step_id: step_id.clone(),
                    error: error.clone(),
                };
                let from = lad.last_model.clone().unwrap_or_else(|| "ladder".into());
                match self.ask(&cx.sh, request, None).await {
                    Some(HumanDecision::Retry) => {
                        rec.fallbacks.push(FallbackRecord {
                            from,
                            to: "retry".into(),
                            reason: "a human asked to run the ladder again".into(),
                            rung: "human".into(),
                        });
                        continue;
                    }
                    Some(HumanDecision::UseOutput { text }) => {
                        let text = match self
                            .guard_text(&cx.sh, &step_id, "output", text, &mut rec)
                            .await
                        {
                            Ok(t) => t,
                            Err(e) => {
                                let status = stopped(&e);
                                return (finish(rec, &lad, status, Some(e.to_string())), None);
                            }
                        };
                        rec.fallbacks.push(FallbackRecord {
                            from,
                            to: "human output".into(),
                            reason: "a human typed the output".into(),
                            rung: "human".into(),
                        });
                        rec.model = Some("human".into());
                        rec.model_reason = Some(format!("written by a human after: {error}"));
                        let json = parse_json_reply(&text)
                            .ok()
                            .filter(|_| cx.llm.output_schema.is_some());
                        rec.output = Some(text.clone());
                        rec.output_json = json.clone();
                        return (
                            finish(rec, &lad, StepStatus::Succeeded, None),
                            Some(StepOutput { text, json }),
                        );
                    }
                    Some(HumanDecision::Skip) => {
                        rec.fallbacks.push(FallbackRecord {
                            from,
                            to: "skip".into(),
                            reason: "a human skipped the step".into(),
                            rung: "human".into(),
                        });
                        return (
                            finish(
                                rec,
                                &lad,
                                StepStatus::Skipped,
                                Some(format!("skipped by a human after: {error}")),
                            ),
                            None,
                        );
                    }
                    Some(HumanDecision::Cancel) => {
                        cx.sh.cancel.cancel();
                        return (
                            finish(
                                rec,
                                &lad,
                                StepStatus::Cancelled,
                                Some("a human cancelled the run".into()),
                            ),
                            None,
                        );
                    }
                    _ => {}
                }
            }
            return (finish(rec, &lad, StepStatus::Failed, Some(error)), None);
        }
    }

    /// The model rungs of the ladder: the chain, simplified parameters, a substitute
    /// agent.
    #[allow(clippy::too_many_arguments)]
    async fn climb(
        &self,
        cx: &LlmContext,
        rec: &mut StepRecord,
        lad: &mut Ladder,
        base: &Call,
        selection: crate::select::Selection,
        selection_for: &(
             dyn Fn(
            &Engine,
            &crate::workflow::ModelRequirements,
            &Call,
            Spend,
        ) -> crate::select::Selection
                 + Sync
         ),
        system: Option<&String>,
        substitute_system: Option<&String>,
        prompt: &str,
        messages: &(dyn Fn(Option<&String>, &str) -> Vec<Message> + Sync),
    ) -> Result<Success, ChainEnd> {
        let ladder = &cx.llm.fallback;
        let mut chain = selection.candidates;
        if !ladder.next_model {
            chain.truncate(1);
        }
        match self
            .chain(
                cx,
                rec,
                lad,
                base,
                &chain,
                selection.record.all_breakers_open,
                ladder.retry_same,
                "next_model",
            )
            .await
        {
            Ok(s) => return Ok(s),
            Err(ChainEnd::Stop(e)) => return Err(ChainEnd::Stop(e)),
            Err(ChainEnd::Exhausted) => {}
        }

        if ladder.simplify {
            let max_tokens = (base.max_tokens / 2).max(16);
            let probe = Call {
                messages: Vec::new(),
                max_tokens,
                json_schema: None,
                est_prompt: 0,
            };
            let sel = selection_for(self, &cx.llm.model, &probe, lad.spend);
            let mut simple = sel.candidates;
            if !ladder.next_model {
                simple.truncate(1);
            }
            let sys_tokens = system.map_or(0, |s| estimate_tokens(s));
            let schema_note = cx.llm.schema_note();
            let note_tokens = estimate_tokens(&schema_note);
            let now = Utc::now();
            for cand in &simple {
                // An open breaker still counts here, unless every candidate's is open.
                if !sel.record.all_breakers_open
                    && lock(&self.breakers).is_open(&cand.reference, now)
                {
                    continue;
                }
                // The prompt trimmed to this model's window (head and tail kept).
                let mut text = match cand.context_window {
                    Some(w) => {
                        let room = u64::from(w)
                            .saturating_sub(u64::from(max_tokens) + sys_tokens + note_tokens + 64);
                        if room < 256 {
                            continue;
                        }
                        trim_middle(prompt, usize::try_from(room * 4).unwrap_or(usize::MAX))
                    }
                    None => prompt.to_string(),
                };
                text.push_str(&schema_note);
                let call = Call {
                    messages: messages(system, &text),
                    max_tokens,
                    json_schema: None,
                    est_prompt: estimate_tokens(&text) + sys_tokens + 8,
                };
                rec.fallbacks.push(FallbackRecord {
                    from: lad.last_model.clone().unwrap_or_else(|| "chain".into()),
                    to: format!("simplified parameters ({})", cand.reference),
                    reason: format!(
                        "max_tokens {max_tokens}, prompt ~{} tokens, no structured-output constraint",
                        call.est_prompt
                    ),
                    rung: "simplify".into(),
                });
                match self
                    .chain(
                        cx,
                        rec,
                        lad,
                        &call,
                        std::slice::from_ref(cand),
                        sel.record.all_breakers_open,
                        false,
                        "simplify",
                    )
                    .await
                {
                    Ok(s) => return Ok(s),
                    Err(ChainEnd::Stop(e)) => return Err(ChainEnd::Stop(e)),
                    Err(ChainEnd::Exhausted) => {}
                }
            }
        }

        if let Some(sub) = &cx.llm.substitute {
            let sub_system = substitute_system.or(system);
            let call = Call {
                messages: messages(sub_system, prompt),
                max_tokens: base.max_tokens,
                json_schema: base.json_schema.clone(),
                est_prompt: base.est_prompt,
            };
            let sel = selection_for(self, &sub.model, &call, lad.spend);
            if let Some(first) = sel.candidates.first() {
                rec.fallbacks.push(FallbackRecord {
                    from: lad.last_model.clone().unwrap_or_else(|| "chain".into()),
                    to: format!("agent `{}` ({})", sub.agent, first.reference),
                    reason: "substitute agent of the fallback ladder".into(),
                    rung: "agent".into(),
                });
                let mut chain = sel.candidates;
                if !ladder.next_model {
                    chain.truncate(1);
                }
                return self
                    .chain(
                        cx,
                        rec,
                        lad,
                        &call,
                        &chain,
                        sel.record.all_breakers_open,
                        ladder.retry_same,
                        "agent",
                    )
                    .await;
            }
        }
        Err(ChainEnd::Exhausted)
    }

    /// Tries candidates in order; on each, attempts follow the error taxonomy.
    #[allow(clippy::too_many_arguments)]
    async fn chain(
        &self,
        cx: &LlmContext,
        rec: &mut StepRecord,
        lad: &mut Ladder,
        call: &Call,
        candidates: &[Candidate],
        all_breakers_open: bool,
        retries: bool,
        rung: &str,
    ) -> Result<Success, ChainEnd> {
        let mut tried_any = false;
        for (ci, cand) in candidates.iter().enumerate() {
            let next = candidates.get(ci + 1).map(|c| c.reference.clone());
            let move_on = |rec: &mut StepRecord, reason: String| {
                if let Some(to) = &next {
                    rec.fallbacks.push(FallbackRecord {
                        from: cand.reference.clone(),
                        to: to.clone(),
                        reason: reason.clone(),
                        rung: rung.to_string(),
                    });
                    cx.sh.emitter.emit(Event::FallbackTaken {
                        run_id: cx.sh.run_id.clone(),
                        step_id: cx.step.id.clone(),
                        from: cand.reference.clone(),
                        to: to.clone(),
                        reason,
                    });
                }
            };
            // Privacy: a local_only step never reaches a cloud model, whatever the
            // selector returned.
            if cx.llm.model.local_only && cand.locality() == Locality::Cloud {
                move_on(rec, "cloud model refused: local_only".into());
                continue;
            }
            lad.last_model = Some(cand.reference.clone());
            let mut call = call.clone();
            // Guardrails tied to routing: `scope: cloud` rules scrub or block the text on
            // its way to a cloud model; a block moves on to the next (local) model.
            if cand.locality() == Locality::Cloud
                && let Some(policy) = &cx.sh.guard_cloud
            {
                match self.guard_for_cloud(cx, rec, lad, policy, &call.messages) {
                    Ok(messages) => call.messages = messages,
                    Err(e) => {
                        move_on(rec, e.to_string());
                        lad.last_error = Some(e);
                        continue;
                    }
                }
            }
            let mut delays = retry_delays(&cx.step.retry);
            let mut tries = 0u32;
            let mut repaired = false;
            let mut dropped = false;
            loop {
                // Budgets, before the call: check and reserve under one lock.
                let projected = call.est_prompt + u64::from(call.max_tokens);
                let est_cost = cand.cost_usd(call.est_prompt, call.max_tokens.into());
                let refused = {
                    let mut run = lock(&cx.sh.spend);
                    let (tokens_left, cost_left) = left_of(
                        cx.sh.budget.as_ref(),
                        cx.llm.budget.as_ref(),
                        &run,
                        &lad.spend,
                    );
                    match (tokens_left, cost_left) {
                        (Some(left), _) if projected > left => Some((
                            true,
                            format!(
                                "the call would use ~{projected} tokens but only {left} are left in the budget"
                            ),
                        )),
                        (_, Some(left)) if est_cost > left => Some((
                            false,
                            format!(
                                "projected cost ${est_cost:.6} exceeds the ${left:.6} left in the budget"
                            ),
                        )),
                        _ => {
                            run.reserved_tokens += projected;
                            run.reserved_cost_usd += est_cost;
                            None
                        }
                    }
                };
                if let Some((tokens, message)) = refused {
                    let e = ProviderError::new(ProviderErrorKind::BudgetExceeded, message);
                    lad.last_error = Some(e.clone());
                    if tokens {
                        return Err(ChainEnd::Stop(e));
                    }
                    move_on(rec, e.to_string());
                    break;
                }
                // The breaker.
                let admission = {
                    let mut b = lock(&self.breakers);
                    match b.try_acquire(&cand.reference, Utc::now()) {
                        Ok(a) => Some(a),
                        Err(_) if all_breakers_open => Some(Admission::Normal),
                        // The last candidate of a chain in which no model could be tried:
                        // try it anyway rather than fail without trying (Portkey).
                        Err(_) if ci + 1 == candidates.len() && !tried_any => {
                            Some(Admission::Normal)
                        }
                        Err(until) => {
                            drop(b);
                            let e = ProviderError::new(
                                ProviderErrorKind::Unavailable,
                                format!(
                                    "circuit breaker of {} open until {}",
                                    cand.reference,
                                    until.to_rfc3339()
                                ),
                            );
                            move_on(rec, e.message.clone());
                            lad.last_error = Some(e);
                            None
                        }
                    }
                };
                let Some(admission) = admission else {
                    lock(&cx.sh.spend).release(projected, est_cost);
                    break;
                };
                tried_any = true;

                lad.attempt_no += 1;
                tries += 1;
                cx.sh.emitter.emit(Event::StepStarted {
                    run_id: cx.sh.run_id.clone(),
                    step_id: cx.step.id.clone(),
                    attempt: lad.attempt_no,
                    model: Some(cand.reference.clone()),
                });
                let request = ChatRequest {
                    model: cand.model.clone(),
                    messages: call.messages.clone(),
                    temperature: cx.llm.temperature,
                    max_tokens: call.max_tokens,
                    json_schema: call.json_schema.clone(),
                };
                let a_start = Utc::now();
                let a_t0 = Instant::now();
                let result = self.attempt(cx, cand, request).await;
                let duration_ms = ms(a_t0.elapsed());
                let mut usage_cost = 0.0;
                if let Ok(out) = &result {
                    lad.spend.tokens += out.usage.prompt_tokens + out.usage.completion_tokens;
                    usage_cost =
                        cand.cost_usd(out.usage.prompt_tokens, out.usage.completion_tokens);
                    lad.spend.cost_usd += usage_cost;
                    let mut run = lock(&cx.sh.spend);
                    run.tokens += out.usage.prompt_tokens + out.usage.completion_tokens;
                    run.cost_usd += usage_cost;
                }
                let _ = usage_cost;
                let result = result.and_then(|out| {
                    let call_json = call.json_schema.is_some() || cx.llm.output_schema.is_some();
                    check_output(&cx.llm, out, call_json)
                });
                let mut attempt = AttemptRecord {
                    attempt: lad.attempt_no,
                    model: Some(cand.reference.clone()),
                    started_at: a_start,
                    duration_ms,
                    first_token_ms: None,
                    error_kind: None,
                    error_message: None,
                    usage: None,
                };
                // The breaker and the statistics.
                let (outcome, latency) = match &result {
                    Ok((out, _)) => (
                        CallOutcome::Success,
                        out.first_token_ms.or(Some(duration_ms)),
                    ),
                    Err((e, ftm)) if e.kind.counts_for_breaker() => (
                        CallOutcome::Failure {
                            retry_after: e.retry_after,
                        },
                        ftm.or(Some(duration_ms)),
                    ),
                    Err(_) => (CallOutcome::Ignored, None),
                };
                self.observe(
                    cx,
                    &cand.reference,
                    admission,
                    outcome,
                    latency,
                    result.as_ref().err().map(|(e, _)| e.to_string()),
                )
                .await;

                match result {
                    Ok((out, json)) => {
                        attempt.first_token_ms = out.first_token_ms;
                        attempt.usage = Some(out.usage);
                        rec.attempts.push(attempt);
                        return Ok(Success {
                            text: out.text,
                            json,
                            usage: out.usage,
                            reference: cand.reference.clone(),
                            reason: cand.reason.clone(),
                            score: cand.score,
                        });
                    }
                    Err((err, first_token_ms)) => {
                        attempt.first_token_ms = first_token_ms;
                        attempt.error_kind = Some(err.kind);
                        attempt.error_message = Some(err.message.clone());
                        rec.attempts.push(attempt);
                        lad.last_error = Some(err.clone());
                        let action = err.kind.action();
                        // What to do, per the taxonomy.
                        let mut retry_in: Option<Duration> = None;
                        let mut fall_back_reason: Option<String> = None;
                        match action {
                            ErrorAction::Stop => {
                                cx.sh
                                    .emitter
                                    .emit(attempt_failed(cx, lad, cand, &err, None));
                                return Err(ChainEnd::Stop(err));
                            }
                            ErrorAction::FallBack | ErrorAction::LargerContext => {
                                fall_back_reason = Some(format!("{} ({})", err.kind, err.message));
                            }
                            ErrorAction::DropParameter => {
                                if !dropped && call.json_schema.is_some() {
                                    dropped = true;
                                    call.json_schema = None;
                                    if let Some(last) = call.messages.last_mut() {
                                        last.content.push_str(&cx.llm.schema_note());
                                    }
                                    retry_in = Some(Duration::ZERO);
                                } else {
                                    fall_back_reason =
                                        Some(format!("{} ({})", err.kind, err.message));
                                }
                            }
                            ErrorAction::RepairThenFallBack => {
                                if !repaired {
                                    repaired = true;
                                    if let Some(last) = call.messages.last_mut() {
                                        last.content.push_str(&format!(
                                            "\n\nYour previous reply was not valid ({}). Reply again with only the requested content{}.",
                                            err.message,
                                            if cx.llm.output_schema.is_some() { ", as JSON that follows the schema" } else { "" }
                                        ));
                                    }
                                    retry_in = Some(Duration::ZERO);
                                } else {
                                    fall_back_reason = Some(format!(
                                        "{} after a repair attempt: {}",
                                        err.kind, err.message
                                    ));
                                }
                            }
                            ErrorAction::WaitThenRetry | ErrorAction::RetryWithBackoff => {
                                let backoff = if retries && tries < cx.step.retry.max_attempts {
                                    delays.next()
                                } else {
                                    None
                                };
                                match (backoff, err.retry_after) {
                                    (Some(_), Some(ra)) if ra > self.config.max_retry_after => {
                                        fall_back_reason = Some(format!(
                                            "{}: Retry-After {} ms is over the {} ms cap ({})",
                                            err.kind,
                                            ms(ra),
                                            ms(self.config.max_retry_after),
                                            err.message
                                        ));
                                    }
                                    (Some(b), ra) => retry_in = Some(b.max(ra.unwrap_or_default())),
                                    (None, _) => {
                                        fall_back_reason = Some(format!(
                                            "{} after {tries} attempt(s): {}",
                                            err.kind, err.message
                                        ));
                                    }
                                }
                            }
                        }
                        cx.sh
                            .emitter
                            .emit(attempt_failed(cx, lad, cand, &err, retry_in));
                        if let Some(delay) = retry_in {
                            tokio::select! {
                                () = tokio::time::sleep(delay) => continue,
                                () = cx.cancel.cancelled() => {
                                    return Err(ChainEnd::Stop(ProviderError::new(ProviderErrorKind::Cancelled, "cancelled")));
                                }
                            }
                        }
                        move_on(rec, fall_back_reason.unwrap_or_else(|| err.to_string()));
                        break;
                    }
                }
            }
        }
        Err(ChainEnd::Exhausted)
    }

    /// Applies the cloud-scope rules to the messages of a cloud attempt: the redacted
    /// messages, or the guardrail error that keeps this text from cloud models.
    fn guard_for_cloud(
        &self,
        cx: &LlmContext,
        rec: &mut StepRecord,
        lad: &mut Ladder,
        policy: &nexus_guard::Policy,
        messages: &[Message],
    ) -> Result<Vec<Message>, ProviderError> {
        let mut out = Vec::with_capacity(messages.len());
        let mut findings = Vec::new();
        let mut stopped = false;
        let record = !lad.cloud_verdicts_recorded;
        for m in messages {
            let outcome = policy.apply(&m.content);
            stopped |= outcome.blocked || outcome.needs_approval;
            for v in &outcome.verdicts {
                findings.push(if record {
                    record_verdict(&cx.sh, &cx.step.id, "input (cloud)", v, rec)
                } else {
                    finding_text(v)
                });
            }
            out.push(Message {
                role: m.role,
                content: outcome.text,
            });
        }
        lad.cloud_verdicts_recorded = true;
        if stopped {
            return Err(ProviderError::new(
                ProviderErrorKind::GuardrailBlock,
                format!(
                    "guardrails keep this text from cloud models: {}",
                    findings.join(", ")
                ),
            ));
        }
        Ok(out)
    }

    /// Records an attempt's outcome in the breaker and the statistics, and persists them.
    async fn observe(
        &self,
        cx: &LlmContext,
        key: &str,
        admission: Admission,
        outcome: CallOutcome,
        latency_ms: Option<u64>,
        message: Option<String>,
    ) {
        let now = Utc::now();
        let (transition, snapshot) = {
            let mut b = lock(&self.breakers);
            let t = b.record(key, now, admission, outcome, message.as_deref());
            (t, b.snapshot(key))
        };
        let stats = if outcome == CallOutcome::Ignored {
            None
        } else {
            let mut s = lock(&self.stats);
            let entry = s.entry(key.to_string()).or_default();
            entry.observe(outcome == CallOutcome::Success, latency_ms, now);
            Some(*entry)
        };
        if let Some(t) = transition {
            cx.sh.emitter.emit(Event::BreakerChanged {
                model: key.to_string(),
                transition: t,
            });
        }
        if let Some(store) = &self.store {
            if let Some(snap) = snapshot
                && let Err(e) = store.save_breaker(key, &snap).await
            {
                tracing::warn!("cannot store the breaker of {key}: {e}");
            }
            if let Some(stats) = stats
                && let Err(e) = store.save_model_stats(key, &stats).await
            {
                tracing::warn!("cannot store the statistics of {key}: {e}");
            }
        }
    }

    /// One attempt on one candidate, under the step's timeouts and the run's cancel token.
    async fn attempt(
        &self,
        cx: &LlmContext,
        cand: &Candidate,
        request: ChatRequest,
    ) -> Result<AttemptOutput, (ProviderError, Option<u64>)> {
        let slot = self.slot(cand);
        let _permit = tokio::select! {
            p = slot.acquire_owned() => p.map_err(|_| (ProviderError::new(ProviderErrorKind::Internal, "provider slot closed"), None))?,
            () = cx.cancel.cancelled() => return Err((ProviderError::new(ProviderErrorKind::Cancelled, "cancelled while waiting for the model"), None)),
        };
        let timeouts: &Timeouts = &cx.step.timeouts;
        let start = tokio::time::Instant::now();
        let first_token_at: Mutex<Option<u64>> = Mutex::new(None);
        let work = async {
            // An absurd timeout (years) means no deadline rather than an overflow.
            let first_deadline = timeouts.first_token.and_then(|d| start.checked_add(d));
            let open = cand.provider.chat(request);
            let mut stream = match first_deadline {
                Some(deadline) => {
                    tokio::time::timeout_at(deadline, open)
                        .await
                        .map_err(|_| {
                            ProviderError::new(
                                ProviderErrorKind::Timeout,
                                format!(
                                    "no first token within {} ms",
                                    ms(timeouts.first_token.unwrap_or_default())
                                ),
                            )
                        })??
                }
                None => open.await?,
            };
            let mut text = String::new();
            let mut seen_token = false;
            loop {
                let deadline = if seen_token {
                    timeouts
                        .idle
                        .and_then(|d| tokio::time::Instant::now().checked_add(d))
                } else {
                    first_deadline
                };
                let next = match deadline {
                    Some(deadline) => tokio::time::timeout_at(deadline, stream.next())
                        .await
                        .map_err(|_| {
                            if seen_token {
                                ProviderError::new(
                                    ProviderErrorKind::Timeout,
                                    format!(
                                        "no token for {} ms (idle timeout)",
                                        ms(timeouts.idle.unwrap_or_default())
                                    ),
                                )
                            } else {
                                ProviderError::new(
                                    ProviderErrorKind::Timeout,
                                    format!(
                                        "no first token within {} ms",
                                        ms(timeouts.first_token.unwrap_or_default())
                                    ),
                                )
                            }
                        })?,
                    None => stream.next().await,
                };
                match next {
                    Some(Ok(ChatChunk::Delta(t))) => {
                        if !seen_token {
                            seen_token = true;
                            if let Ok(mut f) = first_token_at.lock() {
                                *f = Some(ms(start.elapsed()));
                            }
                        }
                        if t.is_empty() {
                            continue;
                        }
                        text.push_str(&t);
                        cx.sh.emitter.emit(Event::Token {
                            run_id: cx.sh.run_id.clone(),
                            step_id: cx.step.id.clone(),
                            text: t,
                        });
                    }
                    Some(Ok(ChatChunk::Done { usage, .. })) => return Ok((text, usage)),
                    Some(Err(mut e)) => {
                        // A break after content is its own class (a fresh request, never
                        // a continuation).
                        if seen_token
                            && matches!(
                                e.kind,
                                ProviderErrorKind::Protocol | ProviderErrorKind::Transient
                            )
                        {
                            e.kind = ProviderErrorKind::StreamBroken;
                        }
                        return Err(e);
                    }
                    None => {
                        return Err(ProviderError::new(
                            if seen_token {
                                ProviderErrorKind::StreamBroken
                            } else {
                                ProviderErrorKind::Protocol
                            },
                            "the stream ended before the completion was done",
                        ));
                    }
                }
            }
        };
        let bounded = async {
            match timeouts.total {
                Some(total) => tokio::time::timeout(total, work).await.unwrap_or_else(|_| {
                    Err(ProviderError::new(
                        ProviderErrorKind::Timeout,
                        format!("attempt exceeded the total timeout of {} ms", ms(total)),
                    ))
                }),
                None => work.await,
            }
        };
        let result = tokio::select! {
            r = bounded => r,
            () = cx.cancel.cancelled() => Err(ProviderError::new(ProviderErrorKind::Cancelled, "cancelled")),
        };
        let first_token_ms = first_token_at.lock().ok().and_then(|f| *f);
        match result {
            Ok((text, usage)) => Ok(AttemptOutput {
                text,
                usage,
                first_token_ms,
            }),
            Err(e) => Err((e, first_token_ms)),
        }
    }
}

/// Takes a step record that needs no running (kept from an interrupted run, reused from an
/// earlier one, or outside `only`): its state is set, its output becomes readable, and its
/// dependants have one need fewer.
fn keep_record(
    plan: &Plan,
    i: usize,
    rec: &StepRecord,
    status: &mut [Option<StepStatus>],
    outputs: &mut [Option<Arc<StepOutput>>],
    pending: &mut [usize],
) {
    status[i] = Some(rec.status);
    if rec.status == StepStatus::Succeeded {
        outputs[i] = Some(Arc::new(StepOutput {
            text: rec.output.clone().unwrap_or_default(),
            json: rec.output_json.clone(),
        }));
    }
    for &d in &plan.dependants[i] {
        pending[d] -= 1;
    }
}

/// A guardrail verdict in words: `2 email (warn)`.
fn finding_text(v: &nexus_guard::Verdict) -> String {
    format!(
        "{} {} ({})",
        v.count,
        v.detector.as_str(),
        v.action.as_str()
    )
}

/// Records a guardrail verdict on a step (its audit record and the event) and returns it
/// in words.
fn record_verdict(
    sh: &RunShared,
    step_id: &str,
    stage: &str,
    v: &nexus_guard::Verdict,
    rec: &mut StepRecord,
) -> String {
    sh.emitter.emit(Event::GuardrailVerdict {
        run_id: sh.run_id.clone(),
        step_id: step_id.to_string(),
        stage: stage.to_string(),
        detector: v.detector.as_str().to_string(),
        action: v.action.as_str().to_string(),
        count: v.count,
    });
    rec.guardrails.push(GuardrailRecord {
        stage: stage.to_string(),
        detector: v.detector.as_str().to_string(),
        severity: v.severity.as_str().to_string(),
        action: v.action.as_str().to_string(),
        count: v.count,
        sample: v.sample.clone(),
    });
    finding_text(v)
}

fn attempt_failed(
    cx: &LlmContext,
    lad: &Ladder,
    cand: &Candidate,
    err: &ProviderError,
    retry_in: Option<Duration>,
) -> Event {
    Event::AttemptFailed {
        run_id: cx.sh.run_id.clone(),
        step_id: cx.step.id.clone(),
        attempt: lad.attempt_no,
        model: Some(cand.reference.clone()),
        error_kind: err.kind,
        message: err.message.clone(),
        // Rounded: backon multiplies in f32, so 20 ms × 3 is 59.99… ms.
        retry_in_ms: retry_in.map(|d| (d.as_secs_f64() * 1000.0).round() as u64),
    }
}

/// Keeps the head (two thirds) and the tail (one third) of a text within `max_chars`
/// characters, with a marker where the middle was cut.
fn trim_middle(text: &str, max_chars: usize) -> String {
    let count = text.chars().count();
    if count <= max_chars {
        return text.to_string();
    }
    let marker = "\n[… trimmed to fit the context window …]\n";
    let keep = max_chars.saturating_sub(marker.chars().count());
    let head = keep * 2 / 3;
    let tail = keep - head;
    let head_text: String = text.chars().take(head).collect();
    let tail_text: String = text.chars().skip(count - tail).collect();
    format!("{head_text}{marker}{tail_text}")
}

/// Applies a failed step's `on_failure` (the ladder's rung after the models).
fn apply_on_failure(step: &PlannedStep, rec: &mut StepRecord, out: &mut Option<StepOutput>) {
    let error = rec.error.clone().unwrap_or_else(|| "failed".into());
    let from = rec.model.clone().unwrap_or_else(|| step.id.clone());
    match &step.on_failure {
        OnFailure::Fail => {}
        OnFailure::Skip => {
            rec.status = StepStatus::Skipped;
            rec.error = Some(format!("failed, skipped by `on_failure: skip`: {error}"));
            rec.fallbacks.push(FallbackRecord {
                from,
                to: "skip".into(),
                reason: error,
                rung: "on_failure".into(),
            });
        }
        OnFailure::Default(value) => {
            let text = match value {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let json = (!value.is_string()).then(|| value.clone());
            rec.status = StepStatus::Succeeded;
            rec.output = Some(text.clone());
            rec.output_json = json.clone();
            rec.model_reason = Some(format!("default value of `on_failure` after: {error}"));
            rec.error = None;
            rec.fallbacks.push(FallbackRecord {
                from,
                to: "default value".into(),
                reason: error,
                rung: "on_failure".into(),
            });
            *out = Some(StepOutput { text, json });
        }
        OnFailure::Alternate(alt) => {
            rec.handled = true;
            rec.fallbacks.push(FallbackRecord {
                from,
                to: format!("alternate step `{alt}`"),
                reason: error,
                rung: "on_failure".into(),
            });
        }
    }
}

/// A record for a step that finished without running a model.
fn record_for(
    step: &PlannedStep,
    status: StepStatus,
    error: Option<&str>,
    now: chrono::DateTime<Utc>,
) -> StepRecord {
    StepRecord {
        step_id: step.id.clone(),
        kind: step.kind.as_str().to_string(),
        status,
        input: None,
        output: None,
        output_json: None,
        model: None,
        model_reason: None,
        usage: None,
        started_at: now,
        duration_ms: 0,
        error: error.map(str::to_owned),
        attempts: Vec::new(),
        fallbacks: Vec::new(),
        cached: false,
        cost_usd: None,
        selection: None,
        guardrails: Vec::new(),
        handled: false,
    }
}

fn final_event(run_id: &str, step: &PlannedStep, rec: &StepRecord) -> Event {
    match rec.status {
        StepStatus::Succeeded => Event::StepSucceeded {
            run_id: run_id.to_string(),
            step_id: step.id.clone(),
            model: rec.model.clone(),
            usage: rec.usage,
            duration_ms: rec.duration_ms,
            cached: rec.cached,
        },
        StepStatus::Failed => Event::StepFailed {
            run_id: run_id.to_string(),
            step_id: step.id.clone(),
            error: rec.error.clone().unwrap_or_default(),
        },
        StepStatus::Skipped | StepStatus::Cancelled => Event::StepSkipped {
            run_id: run_id.to_string(),
            step_id: step.id.clone(),
            reason: rec.error.clone().unwrap_or_default(),
        },
    }
}

struct LlmContext {
    sh: Arc<RunShared>,
    step: PlannedStep,
    llm: LlmAction,
    prompt: String,
    system: Option<String>,
    substitute_system: Option<String>,
    cancel: CancellationToken,
}

/// Checks an attempt's output: not empty, and valid against the output schema if any.
fn check_output(
    llm: &LlmAction,
    out: AttemptOutput,
    _json_requested: bool,
) -> Result<(AttemptOutput, Option<serde_json::Value>), (ProviderError, Option<u64>)> {
    let ftm = out.first_token_ms;
    if out.text.trim().is_empty() {
        return Err((
            ProviderError::new(
                ProviderErrorKind::InvalidOutput,
                "the model returned no text",
            ),
            ftm,
        ));
    }
    let Some((_, validator)) = &llm.output_schema else {
        return Ok((out, None));
    };
    let json = match parse_json_reply(&out.text) {
        Ok(v) => v,
        Err(e) => {
            return Err((
                ProviderError::new(
                    ProviderErrorKind::InvalidOutput,
                    format!("reply is not JSON: {e}"),
                ),
                ftm,
            ));
        }
    };
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .take(3)
        .map(|e| format!("{} at `{}`", e, e.instance_path()))
        .collect();
    if !errors.is_empty() {
        return Err((
            ProviderError::new(
                ProviderErrorKind::InvalidOutput,
                format!(
                    "reply does not match the output schema: {}",
                    errors.join("; ")
                ),
            ),
            ftm,
        ));
    }
    Ok((out, Some(json)))
}

/// Parses a model's JSON reply, tolerating a surrounding Markdown code fence.
fn parse_json_reply(text: &str) -> Result<serde_json::Value, serde_json::Error> {
    let t = text.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .map(|r| r.trim_end().trim_end_matches("```"))
        .unwrap_or(t);
    serde_json::from_str(t.trim())
}
