//! The DAG scheduler: one loop per run that starts ready steps, waits for the ones in
//! flight, stores each batch of finished steps, and only then releases their dependants.
//!
//! Invariants:
//! - a step is started at most once per run; a step already recorded (kept from an
//!   interrupted run, reused from an earlier one, or outside `only`) is never queued;
//! - the records of steps that finished together are written in one store transaction,
//!   before their events are published and before any dependant starts;
//! - while the run is paused (by the user or a waiting question) no new step starts;
//!   steps in flight finish;
//! - a store failure cancels the run and is returned once the steps in flight ended.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use tokio::task::JoinSet;

use super::budget::Spend;
use super::emit::Emitter;
use super::guard::{guard_inputs, settle};
use super::join::{States, blocked_by};
use super::ladder::LlmContext;
use super::records::{apply_on_failure, final_event, keep_record, record_for};
use super::templates::{Frame, render};
use super::{
    Engine, EngineError, Finished, RunOptions, RunReport, RunShared, StepOutput, lock, ms,
};
use crate::events::{Event, RunStatus, StepStatus};
use crate::plan::{Action, LlmAction, Plan, PlannedStep};
use crate::select::Catalog;
use crate::store::{RunFinish, RunRecord, StepRecord};
use crate::workflow::OutputFormat;

pub(super) type Inputs = serde_json::Map<String, serde_json::Value>;

/// The state of one step list while it is scheduled: a run's steps, or one item or
/// iteration of a body (see [`Frame`]).
pub(super) struct Sched {
    pub(super) plan: Arc<Plan>,
    pub(super) inputs: Arc<Inputs>,
    pub(super) shared: Arc<RunShared>,
    pub(super) options: RunOptions,
    /// Where the list runs (the record path prefix, a body's variables and outer outputs).
    pub(super) frame: Arc<Frame>,
    /// Per step: skipped because something above it failed (Airflow's `upstream_failed`).
    upstream_failed: Vec<bool>,
    /// Per step: failed, and an alternate branch or `on_error` handlers took it over.
    handled: Vec<bool>,
    /// Records of an interrupted run that belong to the bodies of this list's steps
    /// (full paths such as `each[3].summarize`), handed to those steps when they start.
    nested_prior: Vec<StepRecord>,
    /// Per step: dependencies not finished yet.
    pending: Vec<usize>,
    /// Per step: its final state once finished.
    status: Vec<Option<StepStatus>>,
    /// Per step: its output once succeeded.
    pub(super) outputs: Vec<Option<Arc<StepOutput>>>,
    /// Finished steps, in completion order.
    pub(super) records: Vec<StepRecord>,
    /// Steps whose dependencies are all finished, not started yet (popped from the end).
    ready: Vec<usize>,
    tasks: JoinSet<Finished>,
    task_steps: HashMap<tokio::task::Id, usize>,
    /// The `step` spans of ready steps that wait for a task slot, by step index: the
    /// span starts when the step is first tried, so it includes the wait.
    waiting_spans: HashMap<usize, tracing::Span>,
    pub(super) cancelled: bool,
    paused: bool,
    pub(super) store_error: Option<EngineError>,
}

impl Sched {
    /// A step list ready to schedule: nothing finished yet.
    pub(super) fn new(
        plan: Arc<Plan>,
        inputs: Arc<Inputs>,
        shared: Arc<RunShared>,
        options: RunOptions,
        frame: Arc<Frame>,
    ) -> Sched {
        let n = plan.steps.len();
        Sched {
            pending: plan.steps.iter().map(|s| s.needs.len()).collect(),
            status: vec![None; n],
            outputs: vec![None; n],
            upstream_failed: vec![false; n],
            handled: vec![false; n],
            nested_prior: Vec::new(),
            records: Vec::with_capacity(n),
            ready: Vec::new(),
            tasks: JoinSet::new(),
            task_steps: HashMap::new(),
            waiting_spans: HashMap::new(),
            cancelled: false,
            paused: false,
            store_error: None,
            plan,
            inputs,
            shared,
            options,
            frame,
        }
    }

    /// The records of the interrupted run that belong to the body of the step recorded
    /// as `path` (taken out of `nested_prior`).
    pub(super) fn take_nested(&mut self, path: &str) -> Vec<StepRecord> {
        let prefix = format!("{path}[");
        let (mine, rest) = std::mem::take(&mut self.nested_prior)
            .into_iter()
            .partition(|r| r.step_id.starts_with(&prefix));
        self.nested_prior = rest;
        mine
    }

    /// A copy of `step` under its recorded id (its path inside a body), for the tasks
    /// that record and announce it.
    pub(super) fn recorded(&self, step: &PlannedStep) -> PlannedStep {
        let mut step = step.clone();
        if !self.frame.prefix.is_empty() {
            step.id = self.frame.path(&step.id);
        }
        step
    }

    /// Renders template `name` of step `i` in this list's frame (the inputs, the outputs
    /// the step reads, the body's variables).
    pub(super) fn render_for(&self, i: usize, name: &str) -> Result<String, String> {
        let reads = &self.plan.steps[i].reads;
        render(
            &self.plan,
            name,
            &self.inputs,
            &self.frame,
            reads,
            &self.outputs,
        )
    }

    /// Queues every step whose dependencies are all finished and that has no record.
    pub(super) fn queue_initial(&mut self) {
        self.ready = (0..self.plan.steps.len())
            .filter(|&i| self.pending[i] == 0 && self.status[i].is_none())
            .rev()
            .collect();
    }

    /// Takes a record of a step that needs no running (kept from an interrupted run,
    /// reused, or outside `only`): see [`keep_record`].
    fn keep(&mut self, i: usize, rec: StepRecord) {
        self.handled[i] = rec.handled;
        keep_record(
            &self.plan,
            i,
            &rec,
            &mut self.status,
            &mut self.outputs,
            &mut self.pending,
        );
        self.records.push(rec);
    }
}

/// What starting one ready step did.
enum Start {
    /// The step finished at once (skipped, failed to render, a template).
    Done(Box<Finished>),
    /// The step runs as a task.
    Spawned,
    /// No task slot is free: the step goes back to the ready list.
    Full,
}

impl Engine {
    /// Runs a validated plan with resolved inputs (see [`crate::plan::resolve_inputs`]),
    /// or continues an interrupted run ([`RunOptions::resume`]).
    ///
    /// The inputs pass the workflow's guardrails before they are stored or used (strings
    /// are redacted where a rule says so).
    ///
    /// Returns when every step has finished, failed, been skipped or cancelled. A step
    /// failure is reported in the [`RunReport`], not as an error.
    ///
    /// # Errors
    /// [`EngineError::Store`] when the run's state cannot be stored;
    /// [`EngineError::Guardrails`] when the workflow's rules do not compile;
    /// [`EngineError::InputBlocked`] when an input matches a `block` rule (nothing is
    /// stored).
    ///
    /// Everything the run does is inside a `tracing` span `run` (fields `run_id`,
    /// `workflow`); each step run as a task inside a span `step` (`run_id`, `step_id`),
    /// each model call inside a span `attempt` (`model`), so a subscriber (e.g. an
    /// OpenTelemetry layer) sees the run/step/attempt tree.
    pub async fn run(
        self: &Arc<Self>,
        plan: Arc<Plan>,
        inputs: Inputs,
        mut options: RunOptions,
    ) -> Result<RunReport, EngineError> {
        use tracing::Instrument;
        let run_id = options
            .run_id
            .get_or_insert_with(|| uuid::Uuid::now_v7().to_string())
            .clone();
        let span = tracing::info_span!("run", run_id = %run_id, workflow = %plan.workflow.id);
        self.run_in_span(plan, inputs, options, run_id)
            .instrument(span)
            .await
    }

    /// [`Engine::run`] inside its span, with the run's id decided.
    async fn run_in_span(
        self: &Arc<Self>,
        plan: Arc<Plan>,
        inputs: Inputs,
        options: RunOptions,
        run_id: String,
    ) -> Result<RunReport, EngineError> {
        let started = Instant::now();
        let emitter = Arc::new(Emitter {
            sinks: options.sinks.clone(),
            buffer: Mutex::new(Vec::new()),
        });
        self.load_state().await?;
        let (guard, guard_cloud) = self.policies(&plan)?;
        let inputs = match &guard {
            Some(policy) => {
                let (inputs, verdicts) = guard_inputs(policy, &run_id, inputs)?;
                for event in verdicts {
                    emitter.emit(event);
                }
                inputs
            }
            None => inputs,
        };
        self.open_run(&plan, &run_id, &inputs, &options, &emitter)
            .await?;

        let has_llm = plan_has_llm(&plan);
        let catalog = Arc::new(if has_llm {
            self.discover().await
        } else {
            Catalog::default()
        });
        let shared = Arc::new(RunShared {
            run_id: run_id.clone(),
            emitter,
            cancel: options.cancel.clone(),
            human: options.human.clone(),
            spend: Mutex::new(Spend::default()),
            budget: plan.workflow.budget.clone(),
            guard,
            guard_cloud,
            use_cache: options.use_cache,
            catalog,
            control: options.control.clone(),
            body_records: Mutex::new(Vec::new()),
            permissions: tokio::sync::Mutex::new(HashMap::new()),
            mcp: super::mcp::McpSessions::default(),
            secrets: self.secrets(),
        });
        let mut frame = Frame {
            started_at: options.started_at.unwrap_or_else(Utc::now),
            ..Frame::default()
        };
        frame.vars.insert(
            "run".into(),
            serde_json::json!({
                "id": run_id,
                "callback_url": self.callback_url(&run_id).unwrap_or_default(),
            }),
        );
        let mut s = Sched::new(plan, Arc::new(inputs), shared, options, Arc::new(frame));
        keep_prior(&mut s);
        self.record_untouched(&mut s).await?;
        s.queue_initial();
        self.schedule(&mut s).await;
        // Every step has ended: the run's MCP servers are closed (their processes end).
        s.shared.mcp.close_all().await;
        if let Some(e) = s.store_error.take() {
            return Err(e);
        }
        self.finish_run(s, started).await
    }

    /// Stores the new run (or marks a resumed one running) and announces it.
    async fn open_run(
        &self,
        plan: &Plan,
        run_id: &str,
        inputs: &Inputs,
        options: &RunOptions,
        emitter: &Emitter,
    ) -> Result<(), EngineError> {
        let resumed = options.resume.as_ref().map(|prior| Event::RunResumed {
            run_id: run_id.to_string(),
            completed_steps: prior.len(),
        });
        if let Some(store) = &self.store {
            match &resumed {
                Some(event) => {
                    store
                        .set_run_status(run_id, RunStatus::Running, std::slice::from_ref(event))
                        .await?;
                }
                None => {
                    store
                        .create_run(&RunRecord {
                            run_id: run_id.to_string(),
                            workflow_id: plan.workflow.id.clone(),
                            workflow_name: plan.workflow.name.clone(),
                            workflow_version: plan.workflow.version.clone(),
                            file: plan.file.clone(),
                            inputs: serde_json::Value::Object(inputs.clone()),
                            workflow: serde_json::to_value(&plan.workflow).ok(),
                            started_at: Utc::now(),
                            parent: options.parent.clone(),
                            trigger: options.trigger.clone(),
                        })
                        .await?;
                }
            }
        }
        match resumed {
            Some(event) => emitter.publish(&[event]),
            None => emitter.emit(Event::RunStarted {
                run_id: run_id.to_string(),
                workflow_id: plan.workflow.id.clone(),
                steps: plan.steps.len(),
            }),
        }
        Ok(())
    }

    /// Records the steps that will not run in this run: outputs reused from an earlier
    /// run ("run from here") and steps outside `only` ("run up to here").
    async fn record_untouched(&self, s: &mut Sched) -> Result<(), EngineError> {
        let mut extra: Vec<StepRecord> = Vec::new();
        if let Some((from, reused)) = &s.options.reuse {
            for rec in reused {
                let Some(&i) = s.plan.index.get(&rec.step_id) else {
                    continue;
                };
                if s.status[i].is_some() || rec.status != StepStatus::Succeeded {
                    continue;
                }
                s.status[i] = Some(StepStatus::Succeeded);
                extra.push(reused_record(rec, from));
            }
        }
        if let Some(only) = &s.options.only {
            let wanted = s.plan.ancestors(only);
            for (i, step) in s.plan.steps.iter().enumerate() {
                if s.status[i].is_none() && !wanted.contains(&i) {
                    s.status[i] = Some(StepStatus::Skipped);
                    extra.push(record_for(
                        step,
                        StepStatus::Skipped,
                        Some(&format!("not needed to run up to `{}`", only.join("`, `"))),
                        Utc::now(),
                    ));
                }
            }
        }
        if extra.is_empty() {
            return Ok(());
        }
        let run_id = &s.shared.run_id;
        let finals: Vec<Event> = extra.iter().map(|r| final_event(run_id, r)).collect();
        if let Some(store) = &self.store {
            let mut events = s.shared.emitter.drain();
            events.extend(finals.iter().cloned());
            let batch: Vec<&StepRecord> = extra.iter().collect();
            store.record_steps(run_id, &batch, &events).await?;
        }
        s.shared.emitter.publish(&finals);
        for rec in extra {
            if let Some(&i) = s.plan.index.get(&rec.step_id) {
                s.keep(i, rec);
            }
        }
        Ok(())
    }

    /// The scheduling loop: start what is ready, wait for what runs, store, release.
    pub(super) async fn schedule(self: &Arc<Self>, s: &mut Sched) {
        let mut pause_rx = s.options.control.subscribe();
        loop {
            let mut done: Vec<Finished> = Vec::new();
            if s.options.cancel.is_cancelled() {
                s.cancelled = true;
            }
            self.follow_pause(s).await;
            self.start_ready(s, &mut done);
            if done.is_empty() {
                // Nothing in flight and nothing ready: done, paused or not.
                if s.tasks.is_empty() && (s.ready.is_empty() || !s.paused) {
                    break;
                }
                tokio::select! {
                    joined = s.tasks.join_next_with_id(), if !s.tasks.is_empty() => {
                        if let Some(res) = joined {
                            done.push(joined_step(&s.plan, &s.task_steps, res));
                        }
                    }
                    () = s.options.cancel.cancelled(), if !s.cancelled => {
                        s.cancelled = true;
                        continue;
                    }
                    changed = pause_rx.changed() => {
                        if changed.is_err() {
                            // The control was dropped: nobody can resume, so do not wait.
                            s.options.control.resume();
                        }
                        continue;
                    }
                }
                while let Some(res) = s.tasks.try_join_next_with_id() {
                    done.push(joined_step(&s.plan, &s.task_steps, res));
                }
            }
            self.commit(s, done).await;
        }
    }

    /// Announces and stores a change of the run's paused state.
    async fn follow_pause(&self, s: &mut Sched) {
        let paused_now = s.options.control.is_paused() && !s.cancelled;
        if paused_now == s.paused {
            return;
        }
        s.paused = paused_now;
        if !s.frame.prefix.is_empty() {
            // A body follows the run's pause; the run's own list announces and stores it.
            return;
        }
        let run_id = s.shared.run_id.clone();
        let (event, run_status) = if s.paused {
            (Event::RunPaused { run_id }, RunStatus::Paused)
        } else {
            let completed_steps = s.records.len();
            (
                Event::RunResumed {
                    run_id,
                    completed_steps,
                },
                RunStatus::Running,
            )
        };
        if let Some(store) = &self.store
            && let Err(e) = store
                .set_run_status(&s.shared.run_id, run_status, std::slice::from_ref(&event))
                .await
        {
            s.store_error = Some(e.into());
            s.options.cancel.cancel();
        }
        s.shared.emitter.publish(&[event]);
    }

    /// Starts ready steps while the run is not paused and a task slot is free (steps that
    /// finish at once, such as templates and skips, need no slot).
    fn start_ready(self: &Arc<Self>, s: &mut Sched, done: &mut Vec<Finished>) {
        let max = self.config.max_parallel.max(1);
        while !s.paused && (s.tasks.len() < max || !s.ready.is_empty()) {
            let Some(i) = s.ready.pop() else { break };
            // Every step, inline or a task, runs inside a `step` span (a task carries
            // the span it was spawned in, see [`Engine::spawn`]).
            let span = match s.waiting_spans.remove(&i) {
                Some(span) => span,
                None => tracing::info_span!(
                    "step",
                    run_id = %s.shared.run_id,
                    step_id = %s.frame.path(&s.plan.steps[i].id)
                ),
            };
            match span.in_scope(|| self.start_step(s, i, max)) {
                Start::Done(finished) => done.push(*finished),
                Start::Spawned => {}
                Start::Full => {
                    s.waiting_spans.insert(i, span);
                    s.ready.push(i);
                    break;
                }
            }
        }
    }

    /// Starts one ready step: skips it when its join rule is not met or its condition is
    /// false, runs templates and switches inline, and spawns the other kinds.
    fn start_step(self: &Arc<Self>, s: &mut Sched, i: usize, max: usize) -> Start {
        let plan = Arc::clone(&s.plan);
        let step = &plan.steps[i];
        let now = Utc::now();
        let finish = |status, why: &str| {
            Start::Done(Box::new((
                i,
                record_for(step, status, Some(why), now),
                None,
            )))
        };
        if s.cancelled || s.store_error.is_some() {
            return finish(
                StepStatus::Cancelled,
                "the run was cancelled before the step started",
            );
        }
        let states = States {
            status: &s.status,
            handled: &s.handled,
            upstream_failed: &s.upstream_failed,
            outputs: &s.outputs,
        };
        if let Some(blocked) = blocked_by(&plan, &states, step) {
            s.upstream_failed[i] = blocked.by_failure;
            return finish(StepStatus::Skipped, &blocked.reason);
        }
        let frame = failure_frame(s, step);
        if let Some(when) = &step.when {
            match render(&plan, when, &s.inputs, &frame, &step.reads, &s.outputs) {
                Ok(v) if v.trim() == "true" => {}
                Ok(_) => return finish(StepStatus::Skipped, "its `when` condition is false"),
                Err(e) => {
                    return finish(
                        StepStatus::Failed,
                        &format!("condition failed to evaluate: {e}"),
                    );
                }
            }
        }
        let r = |t: &str| render(&plan, t, &s.inputs, &frame, &step.reads, &s.outputs);
        match &step.action {
            Action::Template { template, format } => {
                let t0 = Instant::now();
                match r(template) {
                    Ok(text) => self.finish_template(s, i, text, *format, t0),
                    Err(e) => finish(StepStatus::Failed, &format!("template failed: {e}")),
                }
            }
            Action::Switch { cases } => {
                let (rec, out) = super::switch::choose(s, i, cases);
                Start::Done(Box::new((i, rec, out)))
            }
            Action::Map(_)
            | Action::Loop(_)
            | Action::Workflow(_)
            | Action::Tool(_)
            | Action::Wait { .. }
            | Action::Event { .. }
            | Action::Approval { .. }
            | Action::Llm(_)
            | Action::Agent(_)
            | Action::Vote(_)
                if s.tasks.len() >= max =>
            {
                Start::Full
            }
            Action::Map(map) => {
                let path = s.frame.path(&step.id);
                let prior = s.take_nested(&path);
                match super::map::prepare(s, i, map, prior) {
                    Ok(ctx) => self.spawn_announced(s, i, move |engine| engine.run_map(ctx)),
                    Err(e) => finish(StepStatus::Failed, &e),
                }
            }
            Action::Wait { duration, until } => {
                match super::wait::deadline(s, i, *duration, until.as_deref()) {
                    Ok(deadline) => {
                        let (rec, cancel) = (
                            record_for(&s.recorded(step), StepStatus::Succeeded, None, now),
                            s.options.cancel.child_token(),
                        );
                        self.spawn_announced(s, i, move |_| {
                            super::wait::wait(rec, deadline, cancel)
                        })
                    }
                    Err(e) => finish(StepStatus::Failed, &e),
                }
            }
            Action::Event {
                name,
                within,
                timeout_output,
            } => {
                let deadline = match within {
                    Some(d) => match super::wait::deadline(s, i, Some(*d), None) {
                        Ok(t) => Some(t),
                        Err(e) => return finish(StepStatus::Failed, &e),
                    },
                    None => None,
                };
                let wait = super::event::EventWait {
                    rec: record_for(&s.recorded(step), StepStatus::Succeeded, None, now),
                    run_id: s.shared.run_id.clone(),
                    name: name.clone(),
                    deadline,
                    timeout_output: timeout_output.clone(),
                    cancel: s.options.cancel.child_token(),
                };
                let until =
                    deadline.map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
                let start = self.spawn_announced(s, i, move |engine| engine.wait_event(wait));
                s.shared.emitter.emit(Event::WaitingForEvent {
                    run_id: s.shared.run_id.clone(),
                    step_id: s.frame.path(&step.id),
                    event: name.clone(),
                    until,
                });
                start
            }
            Action::Tool(tool) => match super::tool::prepare(s, i, tool) {
                Ok(call) if call.needs_permission() => {
                    self.spawn_announced(s, i, move |engine| call.run_permitted(engine))
                }
                Ok(call) => self.spawn_announced(s, i, move |engine| call.run(engine)),
                Err(e) => finish(StepStatus::Failed, &e),
            },
            Action::Workflow(sub) => match super::subflow::prepare(s, i, sub) {
                Ok(ctx) => self.spawn_announced(s, i, move |engine| engine.run_sub(ctx)),
                Err(e) => finish(StepStatus::Failed, &e),
            },
            Action::Loop(lp) => {
                let path = s.frame.path(&step.id);
                let prior = s.take_nested(&path);
                match super::loops::prepare(s, i, lp, prior) {
                    Ok(ctx) => self.spawn_announced(s, i, move |engine| engine.run_loop(ctx)),
                    Err(e) => finish(StepStatus::Failed, &e),
                }
            }
            Action::Approval { prompt, settings } => {
                let message = match r(prompt) {
                    Ok(m) => m,
                    Err(e) => {
                        return finish(
                            StepStatus::Failed,
                            &format!("question failed to render: {e}"),
                        );
                    }
                };
                let sh = Arc::clone(&s.shared);
                let (step, settings) = (s.recorded(step), settings.clone());
                let cancel = s.options.cancel.child_token();
                self.spawn(s, i, move |engine| async move {
                    engine
                        .run_approval_step(&sh, &step, message, &settings, cancel)
                        .await
                })
            }
            Action::Llm(llm) => {
                let (llm, choice) = self.routed_llm(llm);
                match llm_context(s, step, &llm, r) {
                    Ok(ctx) => self.spawn_llm(s, i, ctx, choice),
                    Err(e) => finish(StepStatus::Failed, &e),
                }
            }
            Action::Agent(agent) => {
                let (agent, choice) = self.routed_agent(agent);
                match llm_context(s, step, &agent.llm, r) {
                    Ok(llm) => self.spawn_agent(s, i, llm, agent, choice),
                    Err(e) => finish(StepStatus::Failed, &e),
                }
            }
            Action::Vote(vote) => {
                let systems: Result<Vec<Option<String>>, String> = vote
                    .voters
                    .iter()
                    .map(|v| v.system.as_deref().map(&r).transpose())
                    .collect();
                match (llm_context(s, step, &vote.llm, r), systems) {
                    (Ok(base), Ok(systems)) => {
                        let ctx = super::vote::VoteContext {
                            base,
                            vote: Arc::new((**vote).clone()),
                            systems,
                        };
                        self.spawn(s, i, move |engine| engine.run_vote_step(ctx))
                    }
                    (Err(e), _) => finish(StepStatus::Failed, &e),
                    (_, Err(e)) => finish(
                        StepStatus::Failed,
                        &format!("a voter's system prompt failed to render: {e}"),
                    ),
                }
            }
        }
    }

    /// An `llm` step's action as the agent its `capability:` routes to (and the
    /// decision), or as written.
    fn routed_llm(&self, llm: &LlmAction) -> (LlmAction, Option<crate::route::AgentChoice>) {
        match self.route_step(llm) {
            Some(r) => (r.llm, Some(r.choice)),
            None => (llm.clone(), None),
        }
    }

    /// An `agent` step's action as the agent its `capability:` routes to (that agent's
    /// tools added), and the decision.
    fn routed_agent(
        &self,
        agent: &crate::plan::AgentAction,
    ) -> (crate::plan::AgentAction, Option<crate::route::AgentChoice>) {
        let mut agent = agent.clone();
        let choice = self.route_step(&agent.llm).map(|routed| {
            agent.llm = routed.llm;
            agent.tools.extend(routed.tools);
            routed.choice
        });
        (agent, choice)
    }

    /// Runs `llm` step `i` up its ladder; a routed step's outcome is observed for its
    /// agent.
    fn spawn_llm(
        self: &Arc<Self>,
        s: &mut Sched,
        i: usize,
        ctx: LlmContext,
        choice: Option<crate::route::AgentChoice>,
    ) -> Start {
        self.spawn(s, i, move |engine| async move {
            let (mut rec, out) = engine.run_llm_step(ctx).await;
            if let Some(choice) = choice {
                engine.observe_agent(choice, &mut rec).await;
            }
            (rec, out)
        })
    }

    /// Runs `agent` step `i`'s loop; a routed step's outcome is observed for its agent.
    fn spawn_agent(
        self: &Arc<Self>,
        s: &mut Sched,
        i: usize,
        llm: LlmContext,
        agent: crate::plan::AgentAction,
        choice: Option<crate::route::AgentChoice>,
    ) -> Start {
        let ctx = super::agent::AgentContext {
            llm,
            agent: Arc::new(agent),
            workflow_id: s.plan.workflow.id.clone(),
        };
        self.spawn(s, i, move |engine| async move {
            let (mut rec, out) = Arc::clone(&engine).run_agent_step(ctx).await;
            if let Some(choice) = choice {
                engine.observe_agent(choice, &mut rec).await;
            }
            (rec, out)
        })
    }

    /// Runs step `i` of a control-flow kind (map, loop, sub-workflow, wait) as a task,
    /// announcing its start (an `llm` step announces each attempt itself).
    fn spawn_announced<F, Fut>(self: &Arc<Self>, s: &mut Sched, i: usize, work: F) -> Start
    where
        F: FnOnce(Arc<Self>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = (StepRecord, Option<StepOutput>)> + Send + 'static,
    {
        s.shared.emitter.emit(Event::StepStarted {
            run_id: s.shared.run_id.clone(),
            step_id: s.frame.path(&s.plan.steps[i].id),
            attempt: 1,
            model: None,
        });
        self.spawn(s, i, work)
    }

    /// Runs step `i` as a task: `work` gets the engine and yields the step's record and
    /// output. The task runs in the current span: the step's, entered by
    /// [`Engine::start_ready`].
    fn spawn<F, Fut>(self: &Arc<Self>, s: &mut Sched, i: usize, work: F) -> Start
    where
        F: FnOnce(Arc<Self>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = (StepRecord, Option<StepOutput>)> + Send + 'static,
    {
        use tracing::Instrument;
        let engine = Arc::clone(self);
        let span = tracing::Span::current();
        let handle = s.tasks.spawn(
            async move {
                let (rec, out) = work(engine).await;
                (i, rec, out)
            }
            .instrument(span),
        );
        s.task_steps.insert(handle.id(), i);
        Start::Spawned
    }

    /// A rendered template step: its text passes the guardrails (inline; as a task when a
    /// rule needs a human's approval) and, for `format: json`, parses as JSON.
    fn finish_template(
        self: &Arc<Self>,
        s: &mut Sched,
        i: usize,
        text: String,
        format: OutputFormat,
        t0: Instant,
    ) -> Start {
        let step = s.recorded(&s.plan.steps[i]);
        let mut rec = record_for(&step, StepStatus::Succeeded, None, Utc::now());
        let guarded = match &s.shared.guard {
            None => Ok(text),
            Some(policy) => {
                let outcome = policy.apply(&text);
                if outcome.needs_approval && !outcome.blocked {
                    // A human decides: that waits, so it runs as a task.
                    let (engine, sh) = (Arc::clone(self), Arc::clone(&s.shared));
                    let handle = s.tasks.spawn(tracing::Instrument::instrument(
                        async move {
                            let guarded = engine
                                .guard_text(&sh, &rec.step_id.clone(), "output", text, &mut rec)
                                .await;
                            let (rec, out) = template_result(rec, guarded, format, t0);
                            (i, rec, out)
                        },
                        tracing::Span::current(),
                    ));
                    s.task_steps.insert(handle.id(), i);
                    return Start::Spawned;
                }
                settle(&s.shared, &step.id, "output", &outcome, &mut rec).map(|_| outcome.text)
            }
        };
        let (rec, out) = template_result(rec, guarded, format, t0);
        Start::Done(Box::new((i, rec, out)))
    }

    /// Applies `on_failure`, stores a batch of finished steps, announces them and releases
    /// their dependants.
    async fn commit(&self, s: &mut Sched, mut done: Vec<Finished>) {
        for (i, rec, out) in &mut done {
            if rec.status == StepStatus::Failed && !rec.handled {
                apply_on_failure(&s.plan.steps[*i], rec, out);
                hand_to_handlers(&s.plan, &s.plan.steps[*i], rec);
            }
            if !s.frame.prefix.is_empty() {
                rec.step_id = s.frame.path(&s.plan.steps[*i].id);
            }
        }
        let finals: Vec<Event> = done
            .iter()
            .map(|(_, rec, _)| final_event(&s.shared.run_id, rec))
            .collect();
        if let Some(store) = &self.store
            && s.store_error.is_none()
        {
            let mut events = s.shared.emitter.drain();
            events.extend(finals.iter().cloned());
            let batch: Vec<&StepRecord> = done.iter().map(|(_, r, _)| r).collect();
            if let Err(e) = store.record_steps(&s.shared.run_id, &batch, &events).await {
                s.store_error = Some(e.into());
                s.options.cancel.cancel();
            }
        }
        s.shared.emitter.publish(&finals);
        for (i, rec, out) in done {
            s.status[i] = Some(rec.status);
            s.handled[i] = rec.handled;
            s.outputs[i] = out.map(Arc::new);
            s.records.push(rec);
            for &d in &s.plan.dependants[i] {
                s.pending[d] -= 1;
                // A step already recorded (reused, or outside `only`) is not run.
                if s.pending[d] == 0 && s.status[d].is_none() {
                    s.ready.push(d);
                }
            }
        }
    }

    /// Renders the workflow's outputs, stores the run's end and builds the report.
    async fn finish_run(
        self: &Arc<Self>,
        s: Sched,
        started: Instant,
    ) -> Result<RunReport, EngineError> {
        let Sched {
            plan,
            inputs,
            shared,
            options,
            status,
            outputs,
            records,
            cancelled,
            ..
        } = s;
        let any_failed = records
            .iter()
            .any(|r| r.status == StepStatus::Failed && !r.handled);
        let mut records = records;
        records.append(&mut lock(&shared.body_records));
        let run_status = if cancelled || options.cancel.is_cancelled() {
            RunStatus::Cancelled
        } else if any_failed {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        let out_values = render_outputs(&plan, &inputs, &status, &outputs);
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
        let run_id = shared.run_id.clone();
        let finish_event = Event::RunFinished {
            run_id: run_id.clone(),
            status: run_status,
            duration_ms,
        };
        if let Some(store) = &self.store {
            let mut events = shared.emitter.drain();
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
        shared.emitter.publish(&[finish_event]);
        let on_failure_run = match (&plan.on_failure, run_status) {
            (Some((file, handler)), RunStatus::Failed) => {
                let handler = Arc::clone(handler);
                let failed = failed_steps(&records);
                let facts = [
                    ("run_id", run_id.clone()),
                    ("workflow_id", plan.workflow.id.clone()),
                    ("error", error.clone().unwrap_or_default()),
                    ("failed_steps", failed),
                ];
                Some(
                    self.run_failure_handler(&run_id, file, handler, facts, &options)
                        .await,
                )
            }
            _ => None,
        };
        Ok(RunReport {
            run_id,
            status: run_status,
            outputs: out_values,
            steps: records,
            duration_ms,
            error,
            on_failure_run,
        })
    }

    /// Runs the workflow's failure handler as a child run (`<run>.on_failure`) with the
    /// facts it declares as inputs; its id and how it ended. (A boxed future: the
    /// handler's run goes through [`Engine::run`], which this is part of.)
    fn run_failure_handler(
        self: &Arc<Self>,
        run_id: &str,
        file: &str,
        handler: Arc<Plan>,
        facts: [(&str, String); 4],
        parent: &RunOptions,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = (String, RunStatus)> + Send>> {
        // `:` cannot appear in a step path, so no step's child run has this id.
        let id = format!("{run_id}:on_failure");
        let given = facts
            .into_iter()
            .filter(|(name, _)| handler.workflow.inputs.contains_key(*name))
            .map(|(name, value)| (name.to_string(), value))
            .collect();
        let (run_id, file) = (run_id.to_string(), file.to_string());
        let engine = Arc::clone(self);
        // Cancelling the failed run (still being finished) cancels its handler; the same
        // person answers its questions.
        let mut options = super::body::body_options(parent, parent.cancel.child_token());
        Box::pin(async move {
            let Ok(inputs) = crate::plan::resolve_inputs(&handler, &given) else {
                tracing::warn!(run_id, file, "the failure handler's inputs are not valid");
                return (id, RunStatus::Failed);
            };
            options.run_id = Some(id.clone());
            options.parent = Some((run_id.clone(), "on_failure".into()));
            match engine.run(handler, inputs, options).await {
                Ok(report) => (id, report.status),
                Err(e) => {
                    tracing::warn!(run_id, file, error = %e, "the failure handler could not run");
                    (id, RunStatus::Failed)
                }
            }
        })
    }
}

/// Takes the records of an interrupted run's completed steps (kept, never re-run) and
/// counts what they spent against the run's budget (cached steps spent nothing).
pub(super) fn keep_prior(s: &mut Sched) {
    let prior = s.options.resume.take().unwrap_or_default();
    for rec in prior {
        let local = rec.step_id.strip_prefix(s.frame.prefix.as_str());
        let Some(&i) = local.and_then(|id| s.plan.index.get(id)) else {
            // A body's record (`each[3].summarize`): its step gets it when it starts.
            s.nested_prior.push(rec);
            continue;
        };
        if s.status[i].is_some() {
            continue;
        }
        let mut spend = lock(&s.shared.spend);
        spend.tokens += rec
            .attempts
            .iter()
            .filter_map(|a| a.usage)
            .map(|u| u.prompt_tokens + u.completion_tokens)
            .sum::<u64>();
        spend.cost_usd += rec.cost_usd.unwrap_or(0.0);
        drop(spend);
        s.keep(i, rec);
    }
    mark_upstream_failed(s);
}

/// Marks the kept skipped steps that were skipped because something above them failed
/// (see [`super::join`]), as the run marked them: each kept skip is judged again by the
/// join rules over its kept dependencies, in dependency order, so a step skipped by its
/// condition or by `on_failure: skip` stays a plain skip.
fn mark_upstream_failed(s: &mut Sched) {
    for i in topological(&s.plan) {
        if s.status[i] != Some(StepStatus::Skipped)
            || s.plan.steps[i].needs.iter().any(|&d| s.status[d].is_none())
        {
            continue;
        }
        let states = States {
            status: &s.status,
            handled: &s.handled,
            upstream_failed: &s.upstream_failed,
            outputs: &s.outputs,
        };
        let by_failure =
            blocked_by(&s.plan, &states, &s.plan.steps[i]).is_some_and(|b| b.by_failure);
        s.upstream_failed[i] = by_failure;
    }
}

/// The plan's step indices, each after the steps it needs (Kahn's algorithm; the plan
/// has no cycle).
fn topological(plan: &Plan) -> Vec<usize> {
    let mut pending: Vec<usize> = plan.steps.iter().map(|s| s.needs.len()).collect();
    let mut ready: Vec<usize> = (0..plan.steps.len()).filter(|&i| pending[i] == 0).collect();
    let mut order = Vec::with_capacity(plan.steps.len());
    while let Some(i) = ready.pop() {
        order.push(i);
        for &d in &plan.dependants[i] {
            pending[d] -= 1;
            if pending[d] == 0 {
                ready.push(d);
            }
        }
    }
    order
}

/// The workflow's outputs: each rendered over what succeeded (a template may test
/// `steps.x is defined` to choose between branches); `null` when it reads a step that
/// did not succeed and does not render without it.
fn render_outputs(
    plan: &Plan,
    inputs: &Inputs,
    status: &[Option<StepStatus>],
    outputs: &[Option<Arc<StepOutput>>],
) -> serde_json::Map<String, serde_json::Value> {
    let frame = Frame::default();
    let mut out = serde_json::Map::new();
    for (name, tmpl, reads) in &plan.outputs {
        let complete = reads
            .iter()
            .all(|&r| status[r] == Some(StepStatus::Succeeded));
        let value = match render(plan, tmpl, inputs, &frame, reads, outputs) {
            Ok(text) => serde_json::Value::String(text),
            Err(_) if !complete => serde_json::Value::Null,
            Err(e) => serde_json::Value::String(format!("<output failed to render: {e}>")),
        };
        out.insert(name.clone(), value);
    }
    out
}

/// The failed steps of a run as JSON (`[{step, error}]`), for its failure handler.
fn failed_steps(records: &[StepRecord]) -> String {
    let list: Vec<serde_json::Value> = records
        .iter()
        .filter(|r| r.status == StepStatus::Failed && !r.handled)
        .map(|r| serde_json::json!({ "step": r.step_id, "error": r.error }))
        .collect();
    serde_json::Value::Array(list).to_string()
}

/// A failed step with `on_error` handlers: its failure is handled (the run does not fail
/// because of it), and the hand-over is recorded as the ladder's last rung.
fn hand_to_handlers(plan: &Plan, step: &PlannedStep, rec: &mut StepRecord) {
    if rec.status != StepStatus::Failed || step.handlers.is_empty() {
        return;
    }
    let names: Vec<&str> = step
        .handlers
        .iter()
        .map(|&h| plan.steps[h].id.as_str())
        .collect();
    rec.handled = true;
    rec.fallbacks.push(crate::store::FallbackRecord {
        from: rec.model.clone().unwrap_or_else(|| step.id.clone()),
        to: format!("error handler(s) `{}`", names.join("`, `")),
        reason: rec.error.clone().unwrap_or_else(|| "failed".into()),
        rung: "on_error".into(),
    });
}

/// The frame a step's templates render in: the list's, plus `error` for a step that runs
/// on another's failure (`{step, message, class, attempts}` from the failed record).
fn failure_frame(s: &Sched, step: &PlannedStep) -> Arc<Frame> {
    let Some(failed) = step.alternate_of else {
        return Arc::clone(&s.frame);
    };
    let id = s.frame.path(&s.plan.steps[failed].id);
    let Some(rec) = s.records.iter().rev().find(|r| r.step_id == id) else {
        return Arc::clone(&s.frame);
    };
    let class = rec
        .attempts
        .iter()
        .rev()
        .find_map(|a| a.error_kind)
        .and_then(|k| serde_json::to_value(k).ok());
    let error = serde_json::json!({
        "step": id,
        "message": rec.error,
        "class": class,
        "attempts": rec.attempts.len(),
    });
    let mut vars = s.frame.vars.clone();
    vars.insert("error".into(), error);
    Arc::new(Frame {
        prefix: s.frame.prefix.clone(),
        started_at: s.frame.started_at,
        vars,
        outer: s.frame.outer.clone(),
    })
}

/// The context of a model call of step `step` (an `llm` step, or an agent's turns): its
/// prompts rendered, or why they failed to.
fn llm_context(
    s: &Sched,
    step: &PlannedStep,
    llm: &LlmAction,
    r: impl Fn(&str) -> Result<String, String>,
) -> Result<LlmContext, String> {
    let rendered = r(&llm.prompt).and_then(|prompt| {
        let system = llm.system.as_deref().map(&r).transpose()?;
        let substitute_system = llm
            .substitute
            .as_ref()
            .and_then(|sub| sub.system.as_deref())
            .map(&r)
            .transpose()?;
        Ok((prompt, system, substitute_system))
    });
    let (prompt, system, substitute_system) =
        rendered.map_err(|e| format!("prompt failed to render: {e}"))?;
    Ok(LlmContext {
        sh: Arc::clone(&s.shared),
        step: s.recorded(step),
        llm: llm.clone(),
        prompt,
        system,
        substitute_system,
        cancel: s.options.cancel.child_token(),
    })
}

/// Whether a plan, or a body inside it, has `llm` or `agent` steps (the run then lists
/// the providers' models first).
fn plan_has_llm(plan: &Plan) -> bool {
    plan.steps.iter().any(|s| match &s.action {
        Action::Llm(_) | Action::Agent(_) | Action::Vote(_) => true,
        Action::Map(m) => plan_has_llm(&m.body),
        Action::Loop(l) => plan_has_llm(&l.body),
        Action::Workflow(w) => plan_has_llm(&w.plan),
        _ => false,
    })
}

/// The copy of an earlier run's succeeded record that a "run from here" run keeps.
fn reused_record(rec: &StepRecord, from: &str) -> StepRecord {
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
    r
}

/// The record and output of a template step from its guarded text.
fn template_result(
    mut rec: StepRecord,
    guarded: Result<String, crate::provider::ProviderError>,
    format: OutputFormat,
    t0: Instant,
) -> (StepRecord, Option<StepOutput>) {
    rec.duration_ms = ms(t0.elapsed());
    let cancelled =
        matches!(&guarded, Err(e) if e.kind == crate::provider::ProviderErrorKind::Cancelled);
    let result = guarded
        .map_err(|e| e.to_string())
        .and_then(|text| match format {
            OutputFormat::Text => Ok(StepOutput { text, json: None }),
            OutputFormat::Json => serde_json::from_str(&text)
                .map(|json| StepOutput {
                    text,
                    json: Some(json),
                })
                .map_err(|e| format!("template failed: rendered text is not JSON: {e}")),
        });
    match result {
        Ok(out) => {
            rec.output = Some(out.text.clone());
            rec.output_json = out.json.clone();
            (rec, Some(out))
        }
        Err(e) => {
            rec.status = if cancelled {
                StepStatus::Cancelled
            } else {
                StepStatus::Failed
            };
            rec.error = Some(e);
            (rec, None)
        }
    }
}

/// The result of a joined task; a task that panicked or was aborted fails its step.
fn joined_step(
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
