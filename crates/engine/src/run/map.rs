//! The executor of `map` steps: the item list is evaluated when the step starts, then
//! each item's body runs (see [`super::body`]) with at most `concurrency` items in
//! flight, and the items' results are gathered in input order.
//!
//! Invariants: an item starts only while fewer than `concurrency` run; with `fail_fast`
//! the first failed item cancels the items in flight (their model calls, tools, waits
//! and questions to a human end) and no further item starts; a
//! resumed map keeps every item step already recorded (a completed item runs nothing).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tokio::task::JoinSet;

use super::body::{BodyOutcome, BodyOwner, type_name};
use super::records::record_for;
use super::scheduler::Sched;
use super::templates::{all_steps, render_value};
use super::{Engine, StepOutput, ms};
use crate::events::StepStatus;
use crate::plan::MapAction;
use crate::store::StepRecord;
use crate::workflow::OnItemError;

/// A `map` step ready to run.
pub(super) struct MapRun {
    owner: BodyOwner,
    map: MapAction,
    items: Vec<serde_json::Value>,
}

/// Evaluates the item list of the map at `i`; the run, or why the step fails.
pub(super) fn prepare(
    s: &Sched,
    i: usize,
    map: &MapAction,
    prior: Vec<StepRecord>,
) -> Result<MapRun, String> {
    let step = &s.plan.steps[i];
    let items = render_value(
        &s.plan,
        &map.items,
        &s.inputs,
        &s.frame,
        &step.reads,
        &s.outputs,
    )
    .map_err(|e| format!("`items` failed to evaluate: {e}"))?;
    let serde_json::Value::Array(items) = items else {
        return Err(format!(
            "`items` is {}, not a list; give an expression whose value is a JSON array",
            type_name(&items)
        ));
    };
    Ok(MapRun {
        owner: BodyOwner::new(s, i, prior),
        map: map.clone(),
        items,
    })
}

/// How one item ended.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ItemState {
    NotRun,
    Succeeded,
    Failed,
    Cancelled,
}

impl ItemState {
    fn as_str(self) -> &'static str {
        match self {
            ItemState::NotRun => "not_run",
            ItemState::Succeeded => "succeeded",
            ItemState::Failed => "failed",
            ItemState::Cancelled => "cancelled",
        }
    }
}

/// The items' states, results and errors, by position.
struct Gathered {
    state: Vec<ItemState>,
    results: Vec<serde_json::Value>,
    errors: Vec<Option<String>>,
}

impl Engine {
    /// Runs a map: every item's body, at most `concurrency` at once.
    pub(super) async fn run_map(
        self: Arc<Self>,
        mut run: MapRun,
    ) -> (StepRecord, Option<StepOutput>) {
        let t0 = Instant::now();
        let started = Utc::now();
        let n = run.items.len();
        let mut g = Gathered {
            state: vec![ItemState::NotRun; n],
            results: vec![serde_json::Value::Null; n],
            errors: vec![None; n],
        };
        let mut tasks: JoinSet<(usize, BodyOutcome)> = JoinSet::new();
        let mut task_items: HashMap<tokio::task::Id, usize> = HashMap::new();
        let mut next = 0;
        let mut stop = false;
        loop {
            while !stop && next < n && tasks.len() < run.map.concurrency {
                if run.owner.options.cancel.is_cancelled() {
                    stop = true;
                    break;
                }
                let vars = [
                    (run.map.item_as.clone(), run.items[next].clone()),
                    (run.map.index_as.clone(), serde_json::Value::from(next)),
                ];
                let body = run.owner.body(&run.map.body, next, vars);
                let engine = Arc::clone(&self);
                let k = next;
                let handle = tasks.spawn(async move { (k, engine.run_body(body).await) });
                task_items.insert(handle.id(), k);
                next += 1;
            }
            let Some(joined) = tasks.join_next_with_id().await else {
                break;
            };
            let (k, outcome) = match joined {
                Ok((_, done)) => done,
                Err(e) => {
                    let k = task_items.get(&e.id()).copied().unwrap_or(0);
                    g.state[k] = ItemState::Failed;
                    g.errors[k] = Some(format!("internal error: {e}"));
                    continue;
                }
            };
            self.gather(&run, k, &outcome, &mut g);
            announce_progress(&run, &g);
            if g.state[k] == ItemState::Failed && run.map.on_item_error == OnItemError::FailFast {
                stop = true;
                run.owner.options.cancel.cancel();
            }
        }
        let mut rec = record_for(&run.owner.step, StepStatus::Succeeded, None, started);
        let out = finish_map(&run, g, &mut rec);
        rec.duration_ms = ms(t0.elapsed());
        (rec, out)
    }

    /// Records how item `k` ended and its result.
    fn gather(&self, run: &MapRun, k: usize, outcome: &BodyOutcome, g: &mut Gathered) {
        if let Some(failure) = &outcome.failure {
            g.state[k] = ItemState::Failed;
            g.errors[k] = Some(failure.clone());
            return;
        }
        if outcome.cancelled {
            g.state[k] = ItemState::Cancelled;
            return;
        }
        let body = &run.map.body;
        let result = match &run.map.result {
            Some(t) => render_value(
                body,
                t,
                &run.owner.inputs,
                &outcome.frame,
                &all_steps(body),
                &outcome.outputs,
            )
            .map_err(|e| format!("`result` failed to evaluate: {e}")),
            None => Ok(outcome
                .outputs
                .last()
                .and_then(Option::as_ref)
                .map(|o| {
                    o.json
                        .clone()
                        .unwrap_or_else(|| serde_json::Value::String(o.text.clone()))
                })
                .unwrap_or(serde_json::Value::Null)),
        };
        match result {
            Ok(v) => {
                g.state[k] = ItemState::Succeeded;
                g.results[k] = v;
            }
            Err(e) => {
                g.state[k] = ItemState::Failed;
                g.errors[k] = Some(e);
            }
        }
    }
}

/// Emits the map's progress: items ended and failed so far, out of all.
fn announce_progress(run: &MapRun, g: &Gathered) {
    let count = |f: &dyn Fn(ItemState) -> bool| {
        u32::try_from(g.state.iter().filter(|&&s| f(s)).count()).unwrap_or(u32::MAX)
    };
    let sh = &run.owner.shared;
    sh.emitter.emit(crate::events::Event::MapProgress {
        run_id: sh.run_id.clone(),
        step_id: run.owner.step.id.clone(),
        done: count(&|s| s != ItemState::NotRun),
        failed: count(&|s| s == ItemState::Failed),
        total: u32::try_from(g.state.len()).unwrap_or(u32::MAX),
    });
}

/// The map's record and output from its items: the status (tolerance applied), the
/// results in input order, the per-item states and counts.
fn finish_map(run: &MapRun, g: Gathered, rec: &mut StepRecord) -> Option<StepOutput> {
    let n = g.state.len();
    let count = |s: ItemState| g.state.iter().filter(|&&x| x == s).count();
    let (ok, failed) = (count(ItemState::Succeeded), count(ItemState::Failed));
    let items: Vec<serde_json::Value> = (0..n)
        .map(|k| {
            serde_json::json!({
                "index": k,
                "status": g.state[k].as_str(),
                "error": g.errors[k],
            })
        })
        .collect();
    let results: Vec<serde_json::Value> = match run.map.on_item_error {
        OnItemError::Drop => g
            .results
            .into_iter()
            .zip(&g.state)
            .filter(|(_, s)| **s == ItemState::Succeeded)
            .map(|(r, _)| r)
            .collect(),
        _ => g.results,
    };
    let first_error = (0..n).find_map(|k| g.errors[k].as_ref().map(|e| (k, e)));
    let error = if run.owner.options.cancel.is_cancelled() && failed == 0 {
        rec.status = StepStatus::Cancelled;
        Some("the map was cancelled before all its items ran".to_string())
    } else if failed > 0 && !tolerated(&run.map, failed, n) {
        rec.status = StepStatus::Failed;
        first_error.map(|(k, e)| {
            format!(
                "{failed} of {n} items failed (item {k}: {e}){}",
                tolerance_note(&run.map)
            )
        })
    } else {
        None
    };
    let json = serde_json::json!({
        "results": results,
        "items": items,
        "succeeded": ok,
        "failed": failed,
    });
    rec.output_json = Some(json.clone());
    rec.output = Some(serde_json::Value::Array(results).to_string());
    rec.error = error;
    (rec.status == StepStatus::Succeeded).then(|| StepOutput {
        text: rec.output.clone().unwrap_or_default(),
        json: Some(json),
    })
}

/// Whether `failed` of `n` items are within the map's tolerance (Step Functions'
/// `ToleratedFailureCount`/`Percentage`: the map fails when either is exceeded).
fn tolerated(map: &MapAction, failed: usize, n: usize) -> bool {
    if map.on_item_error == OnItemError::FailFast {
        return false;
    }
    let by_count = map
        .tolerated_failures
        .is_none_or(|c| failed <= usize::try_from(c).unwrap_or(usize::MAX));
    #[allow(clippy::cast_precision_loss)]
    let by_percent = map
        .tolerated_failure_percent
        .is_none_or(|p| n == 0 || (failed as f64) * 100.0 / (n as f64) <= p);
    by_count && by_percent
}

/// `; tolerated: ...` for a map with a tolerance, for its error.
fn tolerance_note(map: &MapAction) -> String {
    match (
        map.on_item_error,
        map.tolerated_failures,
        map.tolerated_failure_percent,
    ) {
        (OnItemError::FailFast, ..) => String::new(),
        (_, Some(c), _) => format!("; {c} tolerated"),
        (_, None, Some(p)) => format!("; {p}% tolerated"),
        (_, None, None) => String::new(),
    }
}
