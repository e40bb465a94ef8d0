//! The scheduler: runs a [`Plan`] as a DAG on tokio.
//!
//! - Steps whose dependencies have all succeeded become ready. `template` steps and
//!   conditions are evaluated inline on the scheduler task (they are cheap); `llm` steps
//!   run as tasks, at most `max_parallel` at once, and each model reference has its own
//!   semaphore ([`Provider::max_concurrency`]: 1 for a local model, 4 for cloud).
//! - A step whose dependency failed or was skipped is skipped (Airflow's default
//!   `all_success` trigger rule); its `when` condition is checked before it runs.
//! - Completed steps are written to the [`RunStore`] in batches (one transaction for all
//!   the steps that finished together) before their events are emitted and before their
//!   dependants start.
//! - `llm` steps: the selector's candidates are tried in order; on each, attempts follow
//!   the retry policy (delays from `backon`); an unreachable provider or a missing model
//!   moves to the next candidate at once; timeouts (first token, idle gap, total) apply
//!   to every attempt; cancellation drops the provider's stream, which aborts the
//!   HTTP request.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use chrono::Utc;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::events::{Event, EventSink, RunStatus, StepStatus};
use crate::plan::{Action, LlmAction, Plan, PlannedStep};
use crate::provider::{
    ChatChunk, ChatRequest, Message, Provider, ProviderError, ProviderErrorKind, Role, Usage,
};
use crate::select::{Candidate, Catalog, select};
use crate::store::{AttemptRecord, FallbackRecord, RunFinish, RunRecord, RunStore, StepRecord};
use crate::workflow::{OutputFormat, RetryPolicy, Timeouts};

/// Errors that stop a run from starting or finishing.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed; the run stopped because its state could not be kept.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
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
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_parallel: 8,
            provider_limits: HashMap::new(),
            discovery_timeout: Duration::from_secs(3),
        }
    }
}

/// Per-run options.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Run id; a UUID v7 is generated when `None`.
    pub run_id: Option<String>,
    /// Cancels the run: no new step starts and in-flight requests are aborted.
    pub cancel: CancellationToken,
    /// Subscribers to the run's events.
    pub sinks: Vec<Arc<dyn EventSink>>,
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
    /// Every step's record, in completion order.
    pub steps: Vec<StepRecord>,
    /// Wall time, ms.
    pub duration_ms: u64,
    /// Why the run did not succeed.
    pub error: Option<String>,
}

/// The workflow engine: providers, a store, limits.
pub struct Engine {
    providers: Vec<Arc<dyn Provider>>,
    store: Option<Arc<dyn RunStore>>,
    config: EngineConfig,
    slots: Mutex<HashMap<String, Arc<Semaphore>>>,
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

/// Outcome of one attempt.
struct AttemptOutput {
    text: String,
    usage: Usage,
    first_token_ms: Option<u64>,
}

impl Engine {
    /// An engine over these providers (in registration order), with an optional store.
    pub fn new(
        providers: Vec<Arc<dyn Provider>>,
        store: Option<Arc<dyn RunStore>>,
        config: EngineConfig,
    ) -> Self {
        Engine {
            providers,
            store,
            config,
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The configured providers.
    pub fn providers(&self) -> &[Arc<dyn Provider>] {
        &self.providers
    }

    /// Lists what every provider offers now.
    pub async fn discover(&self) -> Catalog {
        Catalog::discover(&self.providers, self.config.discovery_timeout).await
    }

    fn slot(&self, candidate: &Candidate) -> Arc<Semaphore> {
        let mut slots = match self.slots.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
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

    /// Runs a validated plan with resolved inputs (see [`crate::plan::resolve_inputs`]).
    ///
    /// Returns when every step has finished, failed, been skipped or cancelled. A step
    /// failure is reported in the [`RunReport`], not as an error.
    ///
    /// # Errors
    /// [`EngineError::Store`] when the run's state cannot be stored.
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

        if let Some(store) = &self.store {
            store
                .create_run(&RunRecord {
                    run_id: run_id.clone(),
                    workflow_id: plan.workflow.id.clone(),
                    workflow_name: plan.workflow.name.clone(),
                    workflow_version: plan.workflow.version.clone(),
                    file: plan.file.clone(),
                    inputs: serde_json::Value::Object((*inputs).clone()),
                    started_at: Utc::now(),
                })
                .await?;
        }
        emitter.emit(Event::RunStarted {
            run_id: run_id.clone(),
            workflow_id: plan.workflow.id.clone(),
            steps: n,
        });

        let has_llm = plan
            .steps
            .iter()
            .any(|s| matches!(s.action, Action::Llm(_)));
        let catalog = Arc::new(if has_llm {
            self.discover().await
        } else {
            Catalog::default()
        });

        let mut pending: Vec<usize> = plan.steps.iter().map(|s| s.needs.len()).collect();
        let mut status: Vec<Option<StepStatus>> = vec![None; n];
        let mut outputs: Vec<Option<Arc<StepOutput>>> = vec![None; n];
        let mut ready: Vec<usize> = (0..n).filter(|&i| pending[i] == 0).rev().collect();
        let mut tasks: JoinSet<Finished> = JoinSet::new();
        let mut task_steps: HashMap<tokio::task::Id, usize> = HashMap::new();
        let mut records: Vec<StepRecord> = Vec::with_capacity(n);
        let mut cancelled = false;
        let mut store_error: Option<EngineError> = None;

        loop {
            let mut done: Vec<Finished> = Vec::new();
            if options.cancel.is_cancelled() {
                cancelled = true;
            }
            // Start what is ready.
            while tasks.len() < self.config.max_parallel.max(1) || !ready.is_empty() {
                let Some(i) = ready.pop() else { break };
                let step = &plan.steps[i];
                let now = Utc::now();
                if cancelled || store_error.is_some() {
                    done.push((
                        i,
                        skipped(
                            step,
                            StepStatus::Cancelled,
                            "the run was cancelled before the step started",
                            now,
                        ),
                        None,
                    ));
                    continue;
                }
                if let Some(&dep) = step
                    .needs
                    .iter()
                    .find(|&&d| status[d] != Some(StepStatus::Succeeded))
                {
                    let why = match status[dep] {
                        Some(StepStatus::Failed) => "failed",
                        Some(StepStatus::Cancelled) => "was cancelled",
                        _ => "was skipped",
                    };
                    done.push((
                        i,
                        skipped(
                            step,
                            StepStatus::Skipped,
                            &format!("dependency `{}` {why}", plan.steps[dep].id),
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
                                skipped(
                                    step,
                                    StepStatus::Skipped,
                                    "its `when` condition is false",
                                    now,
                                ),
                                None,
                            ));
                            continue;
                        }
                        Err(e) => {
                            let mut rec = skipped(step, StepStatus::Failed, "", now);
                            rec.error = Some(format!("condition failed to evaluate: {e}"));
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
                        let mut rec = skipped(step, StepStatus::Succeeded, "", now);
                        rec.error = None;
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
                    Action::Llm(llm) => {
                        if tasks.len() >= self.config.max_parallel.max(1) {
                            ready.push(i);
                            break;
                        }
                        let prompt = render(&plan, &llm.prompt, &inputs, &step.reads, &outputs);
                        let system = llm
                            .system
                            .as_ref()
                            .map(|s| render(&plan, s, &inputs, &step.reads, &outputs))
                            .transpose();
                        let (prompt, system) = match (prompt, system) {
                            (Ok(p), Ok(s)) => (p, s),
                            (Err(e), _) | (_, Err(e)) => {
                                let mut rec = skipped(step, StepStatus::Failed, "", now);
                                rec.error = Some(format!("prompt failed to render: {e}"));
                                done.push((i, rec, None));
                                continue;
                            }
                        };
                        let engine = Arc::clone(self);
                        let ctx = LlmContext {
                            run_id: run_id.clone(),
                            step: step.clone(),
                            llm: llm.clone(),
                            prompt,
                            system,
                            catalog: Arc::clone(&catalog),
                            emitter: Arc::clone(&emitter),
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
                if tasks.is_empty() {
                    break;
                }
                tokio::select! {
                    joined = tasks.join_next_with_id() => {
                        if let Some(res) = joined {
                            done.push(self.joined(&plan, &task_steps, res));
                        }
                    }
                    () = options.cancel.cancelled(), if !cancelled => {
                        cancelled = true;
                        continue;
                    }
                }
                while let Some(res) = tasks.try_join_next_with_id() {
                    done.push(self.joined(&plan, &task_steps, res));
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
                    if pending[d] == 0 {
                        ready.push(d);
                    }
                }
            }
        }

        if let Some(e) = store_error {
            return Err(e);
        }

        let any_failed = status.contains(&Some(StepStatus::Failed));
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
                    .filter(|r| r.status == StepStatus::Failed)
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
                let mut rec = skipped(&plan.steps[i], StepStatus::Failed, "", Utc::now());
                rec.error = Some(format!("internal error: {e}"));
                (i, rec, None)
            }
        }
    }

    async fn run_llm_step(&self, cx: LlmContext) -> (StepRecord, Option<StepOutput>) {
        let started_at = Utc::now();
        let t0 = Instant::now();
        let selection = select(&cx.llm.model, &cx.catalog);
        let mut rec = StepRecord {
            step_id: cx.step.id.clone(),
            kind: cx.step.kind.as_str().to_string(),
            status: StepStatus::Failed,
            input: Some(cx.prompt.clone()),
            output: None,
            output_json: None,
            model: None,
            model_reason: None,
            usage: None,
            started_at,
            duration_ms: 0,
            error: None,
            attempts: Vec::new(),
            fallbacks: Vec::new(),
        };
        if selection.candidates.is_empty() {
            rec.error = Some(format!(
                "no model can serve this step ({})",
                if selection.excluded.is_empty() {
                    "no provider is configured".to_string()
                } else {
                    selection.excluded.join("; ")
                }
            ));
            rec.duration_ms = ms(t0.elapsed());
            return (rec, None);
        }
        let mut messages = Vec::with_capacity(2);
        if let Some(system) = &cx.system {
            messages.push(Message {
                role: Role::System,
                content: system.clone(),
            });
        }
        messages.push(Message {
            role: Role::User,
            content: cx.prompt.clone(),
        });

        let mut attempt_no = 0u32;
        let mut last_error: Option<ProviderError> = None;
        let candidates = &selection.candidates;
        'candidates: for (ci, cand) in candidates.iter().enumerate() {
            let mut delays = retry_delays(&cx.step.retry);
            let mut tries = 0u32;
            loop {
                attempt_no += 1;
                tries += 1;
                cx.emitter.emit(Event::StepStarted {
                    run_id: cx.run_id.clone(),
                    step_id: cx.step.id.clone(),
                    attempt: attempt_no,
                    model: Some(cand.reference.clone()),
                });
                let request = ChatRequest {
                    model: cand.model.clone(),
                    messages: messages.clone(),
                    temperature: cx.llm.temperature,
                    max_tokens: cx.llm.max_tokens,
                    json_schema: cx.llm.output_schema.as_ref().map(|(s, _)| s.clone()),
                };
                let a_start = Utc::now();
                let a_t0 = Instant::now();
                let result = self.attempt(&cx, cand, request).await;
                let result = result.and_then(|out| check_output(&cx.llm, out));
                let mut attempt = AttemptRecord {
                    attempt: attempt_no,
                    model: Some(cand.reference.clone()),
                    started_at: a_start,
                    duration_ms: ms(a_t0.elapsed()),
                    first_token_ms: None,
                    error_kind: None,
                    error_message: None,
                    usage: None,
                };
                match result {
                    Ok((out, json)) => {
                        attempt.first_token_ms = out.first_token_ms;
                        attempt.usage = Some(out.usage);
                        rec.attempts.push(attempt);
                        rec.status = StepStatus::Succeeded;
                        rec.model = Some(cand.reference.clone());
                        let mut reason = format!("{}: {}", cand.reference, cand.reason);
                        if !rec.fallbacks.is_empty() {
                            let chain: Vec<String> = rec
                                .fallbacks
                                .iter()
                                .map(|f| format!("{} ({})", f.from, f.reason))
                                .collect();
                            reason.push_str(&format!(
                                "; after falling back from {}",
                                chain.join(", ")
                            ));
                        }
                        rec.model_reason = Some(reason);
                        rec.usage = Some(out.usage);
                        rec.output = Some(out.text.clone());
                        rec.output_json = json.clone();
                        rec.duration_ms = ms(t0.elapsed());
                        return (
                            rec,
                            Some(StepOutput {
                                text: out.text,
                                json,
                            }),
                        );
                    }
                    Err((err, first_token_ms)) => {
                        attempt.first_token_ms = first_token_ms;
                        attempt.error_kind = Some(err.kind);
                        attempt.error_message = Some(err.message.clone());
                        rec.attempts.push(attempt);
                        if err.kind == ProviderErrorKind::Cancelled {
                            rec.status = StepStatus::Cancelled;
                            rec.error = Some("cancelled".into());
                            rec.duration_ms = ms(t0.elapsed());
                            return (rec, None);
                        }
                        let retry_in = if err.kind.is_retryable()
                            && !err.kind.falls_back_at_once()
                            && tries < cx.step.retry.max_attempts
                        {
                            delays.next()
                        } else {
                            None
                        };
                        cx.emitter.emit(Event::AttemptFailed {
                            run_id: cx.run_id.clone(),
                            step_id: cx.step.id.clone(),
                            attempt: attempt_no,
                            model: Some(cand.reference.clone()),
                            error_kind: err.kind,
                            message: err.message.clone(),
                            // Rounded: backon multiplies in f32, so 20 ms × 3 is 59.99… ms.
                            retry_in_ms: retry_in
                                .map(|d| (d.as_secs_f64() * 1000.0).round() as u64),
                        });
                        last_error = Some(err.clone());
                        if let Some(delay) = retry_in {
                            tokio::select! {
                                () = tokio::time::sleep(delay) => continue,
                                () = cx.cancel.cancelled() => {
                                    rec.status = StepStatus::Cancelled;
                                    rec.error = Some("cancelled".into());
                                    rec.duration_ms = ms(t0.elapsed());
                                    return (rec, None);
                                }
                            }
                        }
                        if let Some(next) = candidates.get(ci + 1) {
                            let reason = if err.kind.falls_back_at_once() {
                                format!("{} ({})", err.kind, err.message)
                            } else {
                                format!("{} after {tries} attempt(s): {}", err.kind, err.message)
                            };
                            rec.fallbacks.push(FallbackRecord {
                                from: cand.reference.clone(),
                                to: next.reference.clone(),
                                reason: reason.clone(),
                            });
                            cx.emitter.emit(Event::FallbackTaken {
                                run_id: cx.run_id.clone(),
                                step_id: cx.step.id.clone(),
                                from: cand.reference.clone(),
                                to: next.reference.clone(),
                                reason,
                            });
                        }
                        continue 'candidates;
                    }
                }
            }
        }
        rec.error = Some(match last_error {
            Some(e) => format!("every candidate model failed; last error: {e}"),
            None => "every candidate model failed".into(),
        });
        rec.duration_ms = ms(t0.elapsed());
        (rec, None)
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
            let first_deadline = timeouts.first_token.map(|d| start + d);
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
                    timeouts.idle.map(|d| tokio::time::Instant::now() + d)
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
                        cx.emitter.emit(Event::Token {
                            run_id: cx.run_id.clone(),
                            step_id: cx.step.id.clone(),
                            text: t,
                        });
                    }
                    Some(Ok(ChatChunk::Done { usage, .. })) => return Ok((text, usage)),
                    Some(Err(e)) => return Err(e),
                    None => {
                        return Err(ProviderError::new(
                            ProviderErrorKind::Protocol,
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

struct LlmContext {
    run_id: String,
    step: PlannedStep,
    llm: LlmAction,
    prompt: String,
    system: Option<String>,
    catalog: Arc<Catalog>,
    emitter: Arc<Emitter>,
    cancel: CancellationToken,
}

/// Checks an attempt's output: not empty, and valid against the output schema if any.
fn check_output(
    llm: &LlmAction,
    out: AttemptOutput,
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

fn skipped(
    step: &PlannedStep,
    status: StepStatus,
    reason: &str,
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
        error: if reason.is_empty() {
            None
        } else {
            Some(reason.to_string())
        },
        attempts: Vec::new(),
        fallbacks: Vec::new(),
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
