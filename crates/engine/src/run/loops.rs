//! The executor of `loop` steps: the body runs once per iteration, in order (see
//! [`super::body`]); after each iteration the `set` expressions give the state its new
//! values (all evaluated against the state the iteration started with), then `until` is
//! evaluated against the new state.
//!
//! Invariants: at most `max_iterations` iterations; the state an iteration starts with
//! is a function of the initial state and the earlier iterations' stored records, so a
//! resumed loop recomputes it from the kept records and continues with the first
//! iteration that did not complete (no completed iteration's step runs again).

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use super::body::BodyOwner;
use super::records::record_for;
use super::scheduler::Sched;
use super::templates::{Frame, all_steps, render, render_value};
use super::{Engine, StepOutput, ms};
use crate::events::StepStatus;
use crate::plan::{LoopAction, StateInit};
use crate::store::StepRecord;
use crate::workflow::LoopCap;

type State = serde_json::Map<String, serde_json::Value>;

/// A `loop` step ready to run.
pub(super) struct LoopRun {
    owner: BodyOwner,
    lp: LoopAction,
    state: State,
}

/// Evaluates the initial state of the loop at `i`; the run, or why the step fails.
pub(super) fn prepare(
    s: &Sched,
    i: usize,
    lp: &LoopAction,
    prior: Vec<StepRecord>,
) -> Result<LoopRun, String> {
    let mut state = State::new();
    for (name, init) in &lp.state {
        let value = match init {
            StateInit::Value(v) => v.clone(),
            StateInit::Template(t) => s
                .render_for(i, t)
                .map(serde_json::Value::String)
                .map_err(|e| format!("`state.{name}` failed to render: {e}"))?,
        };
        state.insert(name.clone(), value);
    }
    Ok(LoopRun {
        owner: BodyOwner::new(s, i, prior),
        lp: lp.clone(),
        state,
    })
}

/// Why a loop stopped.
enum Stop {
    Until,
    Cap,
    Failed(String),
    Cancelled,
}

impl Engine {
    /// Runs a loop to its end.
    pub(super) async fn run_loop(
        self: Arc<Self>,
        mut run: LoopRun,
    ) -> (StepRecord, Option<StepOutput>) {
        let t0 = Instant::now();
        let mut rec = record_for(&run.owner.step, StepStatus::Succeeded, None, Utc::now());
        let mut iterations = 0;
        let mut stop = Stop::Cap;
        for it in 0..run.lp.max_iterations {
            let k = usize::try_from(it).unwrap_or(usize::MAX);
            iterations = it + 1;
            match self.iterate(&mut run, k).await {
                Ok(true) => {
                    stop = Stop::Until;
                    break;
                }
                Ok(false) => {}
                Err(s) => {
                    stop = s;
                    break;
                }
            }
        }
        let stopped_by = match &stop {
            Stop::Until => "until",
            Stop::Cap => "max_iterations",
            Stop::Failed(_) => "failure",
            Stop::Cancelled => "cancel",
        };
        let json = serde_json::json!({
            "state": run.state,
            "iterations": iterations,
            "stopped_by": stopped_by,
        });
        rec.output = Some(serde_json::Value::Object(run.state.clone()).to_string());
        rec.output_json = Some(json.clone());
        rec.duration_ms = ms(t0.elapsed());
        match stop {
            Stop::Failed(e) => {
                rec.status = StepStatus::Failed;
                rec.error = Some(e);
            }
            Stop::Cancelled => {
                rec.status = StepStatus::Cancelled;
                rec.error = Some("the loop was cancelled".into());
            }
            Stop::Cap if run.lp.cap == LoopCap::Fail => {
                rec.status = StepStatus::Failed;
                rec.error = Some(format!(
                    "`until` did not hold within `max_iterations` ({}); `on_max_iterations: fail`",
                    run.lp.max_iterations
                ));
            }
            Stop::Cap | Stop::Until => {}
        }
        let out = (rec.status == StepStatus::Succeeded).then(|| StepOutput {
            text: rec.output.clone().unwrap_or_default(),
            json: Some(json),
        });
        (rec, out)
    }

    /// Runs iteration `k`, then updates the state; whether `until` holds now.
    async fn iterate(self: &Arc<Self>, run: &mut LoopRun, k: usize) -> Result<bool, Stop> {
        if run.owner.options.cancel.is_cancelled() {
            return Err(Stop::Cancelled);
        }
        let vars = [
            (
                "state".to_string(),
                serde_json::Value::Object(run.state.clone()),
            ),
            ("iteration".to_string(), serde_json::Value::from(k)),
        ];
        let body = run.owner.body(&run.lp.body, k, vars);
        let outcome = Arc::clone(self).run_body(body).await;
        if let Some(failure) = outcome.failure {
            return Err(Stop::Failed(format!("iteration {k} failed: {failure}")));
        }
        if outcome.cancelled {
            return Err(Stop::Cancelled);
        }
        let plan = &run.lp.body;
        let every = all_steps(plan);
        let mut next = run.state.clone();
        for (name, t) in &run.lp.set {
            let v = render_value(
                plan,
                t,
                &run.owner.inputs,
                &outcome.frame,
                &every,
                &outcome.outputs,
            )
            .map_err(|e| Stop::Failed(format!("iteration {k}: `set.{name}` failed: {e}")))?;
            next.insert(name.clone(), v);
        }
        run.state = next;
        let Some(until) = &run.lp.until else {
            return Ok(false);
        };
        let mut after = Frame {
            prefix: outcome.frame.prefix.clone(),
            started_at: outcome.frame.started_at,
            vars: outcome.frame.vars.clone(),
            outer: outcome.frame.outer.clone(),
        };
        after
            .vars
            .insert("state".into(), serde_json::Value::Object(run.state.clone()));
        render(
            plan,
            until,
            &run.owner.inputs,
            &after,
            &every,
            &outcome.outputs,
        )
        .map(|v| v.trim() == "true")
        .map_err(|e| Stop::Failed(format!("iteration {k}: `until` failed to evaluate: {e}")))
    }
}
