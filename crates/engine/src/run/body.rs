//! Running one item or iteration of a `map` or `loop` body: the body's plan is scheduled
//! like a workflow's steps (the same loop, [`Engine::schedule`]) in its own [`Frame`], so
//! each body step is retried, guarded, budgeted, recorded (under its path) and resumed
//! exactly like a top-level step.
//!
//! Invariant: a body record is stored before anything reads it, in the batch of the body
//! steps that finished with it; a resumed body keeps the records of its completed steps
//! and runs only the others.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::scheduler::{Inputs, Sched, keep_prior};
use super::templates::Frame;
use super::{Engine, RunOptions, RunShared, StepOutput};
use crate::events::StepStatus;
use crate::plan::Plan;
use crate::store::StepRecord;

/// What running one body needs.
pub(super) struct BodyRun {
    pub(super) plan: Arc<Plan>,
    pub(super) inputs: Arc<Inputs>,
    pub(super) shared: Arc<RunShared>,
    /// The owner's options: its cancellation token (a child of the run's), the run's
    /// pause control and human handler.
    pub(super) options: RunOptions,
    pub(super) frame: Frame,
    /// Records of the interrupted run under this body's prefix.
    pub(super) prior: Vec<StepRecord>,
}

/// How one body ended.
pub(super) struct BodyOutcome {
    /// Per body step: its output if it succeeded.
    pub(super) outputs: Vec<Option<Arc<StepOutput>>>,
    /// The body's frame (for the owner's `result`, `set` and `until`).
    pub(super) frame: Arc<Frame>,
    /// Why the body failed (its failed steps), if it did.
    pub(super) failure: Option<String>,
    /// Whether it was cancelled.
    pub(super) cancelled: bool,
}

/// A boxed body future: bodies nest (a map inside a loop), so the future type would
/// otherwise contain itself.
type BodyFuture = Pin<Box<dyn Future<Output = BodyOutcome> + Send>>;

impl Engine {
    /// Runs one body to its end.
    pub(super) fn run_body(self: Arc<Self>, run: BodyRun) -> BodyFuture {
        Box::pin(async move {
            let mut run = run;
            // A body resumed after a crash started when its first kept step did.
            if let Some(first) = run.prior.iter().map(|r| r.started_at).min() {
                run.frame.started_at = first;
            }
            let options = RunOptions {
                resume: Some(run.prior),
                reuse: None,
                only: None,
                ..run.options
            };
            let mut s = Sched::new(
                run.plan,
                run.inputs,
                run.shared,
                options,
                Arc::new(run.frame),
            );
            keep_prior(&mut s);
            s.queue_initial();
            self.schedule(&mut s).await;
            let mut failure = None;
            if let Some(e) = s.store_error.take() {
                // The run cannot go on without its records.
                s.shared.cancel.cancel();
                failure = Some(format!("the run's state could not be stored: {e}"));
            }
            let failed: Vec<String> = s
                .records
                .iter()
                .filter(|r| r.status == StepStatus::Failed && !r.handled)
                .map(|r| {
                    format!(
                        "`{}`: {}",
                        r.step_id,
                        r.error.as_deref().unwrap_or("failed")
                    )
                })
                .collect();
            if failure.is_none() && !failed.is_empty() {
                failure = Some(format!("step {}", failed.join("; ")));
            }
            let cancelled = s.cancelled
                || s.options.cancel.is_cancelled()
                || s.records.iter().any(|r| r.status == StepStatus::Cancelled);
            super::lock(&s.shared.body_records).append(&mut s.records);
            BodyOutcome {
                outputs: s.outputs,
                frame: s.frame,
                failure,
                cancelled,
            }
        })
    }
}

/// What a `map` or `loop` step hands each of its bodies: its recorded step, the run's
/// inputs and shared state, the options its bodies run under (a token of its own), the
/// frame it runs in, the outputs it reads, and its bodies' records from an interrupted
/// run.
pub(super) struct BodyOwner {
    pub(super) step: crate::plan::PlannedStep,
    pub(super) inputs: Arc<Inputs>,
    pub(super) shared: Arc<RunShared>,
    pub(super) options: RunOptions,
    pub(super) frame: Arc<Frame>,
    pub(super) reads: Vec<(String, Arc<StepOutput>)>,
    pub(super) prior: Vec<StepRecord>,
}

impl BodyOwner {
    /// The owner state of step `i` of `s`.
    pub(super) fn new(s: &Sched, i: usize, prior: Vec<StepRecord>) -> BodyOwner {
        BodyOwner {
            step: s.recorded(&s.plan.steps[i]),
            inputs: Arc::clone(&s.inputs),
            shared: Arc::clone(&s.shared),
            options: body_options(&s.options, s.options.cancel.child_token()),
            frame: Arc::clone(&s.frame),
            reads: owner_reads(s, i),
            prior,
        }
    }

    /// The run of body `plan` as item or iteration `n`, binding `vars`; the records of an
    /// interrupted run under its prefix are taken out of `prior`.
    pub(super) fn body(
        &mut self,
        plan: &Arc<Plan>,
        n: usize,
        vars: impl IntoIterator<Item = (String, serde_json::Value)>,
    ) -> BodyRun {
        let frame = self
            .frame
            .child(&self.step.id, n, vars, self.reads.iter().cloned());
        let prior = take_prefixed(&mut self.prior, &frame.prefix);
        BodyRun {
            plan: Arc::clone(plan),
            inputs: Arc::clone(&self.inputs),
            shared: Arc::clone(&self.shared),
            options: self.options.clone(),
            frame,
            prior,
        }
    }
}

/// The options a body runs under: the owner's token, the run's control and handler.
pub(super) fn body_options(
    parent: &RunOptions,
    cancel: tokio_util::sync::CancellationToken,
) -> RunOptions {
    RunOptions {
        run_id: None,
        cancel,
        sinks: Vec::new(),
        control: parent.control.clone(),
        human: parent.human.clone(),
        use_cache: parent.use_cache,
        resume: None,
        reuse: None,
        only: None,
        parent: None,
        started_at: None,
        trigger: None,
        child_sinks: parent.child_sinks.clone(),
    }
}

/// The outputs of the steps a body's owner reads, by id (they become the body frame's
/// outer outputs).
pub(super) fn owner_reads(s: &Sched, i: usize) -> Vec<(String, Arc<StepOutput>)> {
    s.plan.steps[i]
        .reads
        .iter()
        .filter_map(|&r| {
            s.outputs[r]
                .as_ref()
                .map(|o| (s.plan.steps[r].id.clone(), Arc::clone(o)))
        })
        .collect()
}

/// The records among `prior` under `prefix` (one item's or iteration's), taken out.
pub(super) fn take_prefixed(prior: &mut Vec<StepRecord>, prefix: &str) -> Vec<StepRecord> {
    let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(prior)
        .into_iter()
        .partition(|r| r.step_id.starts_with(prefix));
    *prior = rest;
    mine
}

/// A JSON value's type name, for errors.
pub(super) fn type_name(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "a list",
        serde_json::Value::Object(_) => "an object",
    }
}
