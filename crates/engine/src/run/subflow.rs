//! The executor of `workflow` steps: the child workflow runs as a run of its own on the
//! same engine (same store, breakers and statistics), linked to the parent run and step,
//! under the parent step's cancellation token and the parent run's pause control.
//!
//! Invariants: the child's run id is `<parent run id>.<step path>`, so when the parent
//! resumes, a child that finished is not run again (its stored outputs are used) and a
//! child that was interrupted is resumed from its own stored records; a failed child
//! fails the step with the child's run id and error.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use super::body::body_options;
use super::records::record_for;
use super::scheduler::Sched;
use super::{Engine, EngineError, RunOptions, RunReport, StepOutput, ms};
use crate::events::{RunStatus, StepStatus};
use crate::plan::{PlannedStep, StateInit, SubWorkflowAction};
use crate::store::StepRecord;

/// A `workflow` step ready to run.
pub(super) struct SubRun {
    step: PlannedStep,
    action: SubWorkflowAction,
    inputs: serde_json::Map<String, serde_json::Value>,
    run_id: String,
    options: RunOptions,
    /// The parent run's token: a child cancelled from within (its approver chose to
    /// cancel) cancels the parent run too.
    run_cancel: tokio_util::sync::CancellationToken,
    /// The token of the list the step is in: cancelled when the cancel came from outside.
    outer_cancel: tokio_util::sync::CancellationToken,
}

/// Renders and resolves the child's inputs (as the CLI would from `--input` values:
/// declared types parsed, defaults applied); the run, or why the step fails.
pub(super) fn prepare(s: &Sched, i: usize, action: &SubWorkflowAction) -> Result<SubRun, String> {
    let step = &s.plan.steps[i];
    let mut given = BTreeMap::new();
    for (name, init) in &action.inputs {
        let text = match init {
            StateInit::Template(t) => s
                .render_for(i, t)
                .map_err(|e| format!("`inputs.{name}` failed to render: {e}"))?,
            StateInit::Value(serde_json::Value::String(v)) => v.clone(),
            StateInit::Value(v) => v.to_string(),
        };
        given.insert(name.clone(), text);
    }
    let inputs = crate::plan::resolve_inputs(&action.plan, &given).map_err(|d| {
        format!(
            "the inputs of `{}` are not valid: {}",
            action.file,
            crate::diagnostic::render_all(&d).trim()
        )
    })?;
    let recorded = s.recorded(step);
    let run_id = format!("{}.{}", s.shared.run_id, recorded.id);
    let mut options = body_options(&s.options, s.options.cancel.child_token());
    options.run_id = Some(run_id.clone());
    options.parent = Some((s.shared.run_id.clone(), recorded.id.clone()));
    if let Some(children) = &s.options.child_sinks {
        options
            .sinks
            .extend(children.sinks(&run_id, &action.plan.workflow));
    }
    Ok(SubRun {
        step: recorded,
        action: action.clone(),
        inputs,
        run_id,
        options,
        run_cancel: s.shared.cancel.clone(),
        outer_cancel: s.options.cancel.clone(),
    })
}

/// A boxed child run: the child runs through [`Engine::run`], which may reach another
/// `workflow` step.
type ChildFuture = Pin<Box<dyn Future<Output = Result<RunReport, EngineError>> + Send>>;

impl Engine {
    /// Runs (or resumes, or reuses) the child run of a `workflow` step.
    pub(super) async fn run_sub(
        self: Arc<Self>,
        mut run: SubRun,
    ) -> (StepRecord, Option<StepOutput>) {
        let t0 = Instant::now();
        let mut rec = record_for(&run.step, StepStatus::Succeeded, None, Utc::now());
        rec.input = Some(
            serde_json::json!({
                "workflow": run.action.file,
                "run_id": run.run_id,
                "inputs": run.inputs,
            })
            .to_string(),
        );
        let stored = match &self.store {
            Some(store) => store.child_run(&run.run_id).await,
            None => Ok(None),
        };
        let (outer_cancel, run_cancel) = (run.outer_cancel.clone(), run.run_cancel.clone());
        let outcome = match stored {
            Err(e) => Err(format!(
                "the child run {} could not be read: {e}",
                run.run_id
            )),
            Ok(Some(child))
                if matches!(
                    child.status,
                    RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled
                ) =>
            {
                Ok((child.status, child.outputs, child.error))
            }
            Ok(stored) => {
                if let Some(child) = &stored {
                    run.options.started_at = Some(child.started_at);
                }
                run.options.resume = stored.map(|c| c.steps);
                let engine = Arc::clone(&self);
                let plan = Arc::clone(&run.action.plan);
                let child: ChildFuture =
                    Box::pin(async move { engine.run(plan, run.inputs, run.options).await });
                child
                    .await
                    .map(|r| (r.status, r.outputs, r.error))
                    .map_err(|e| format!("the child run {} could not run: {e}", run.run_id))
            }
        };
        rec.duration_ms = ms(t0.elapsed());
        match outcome {
            Ok((RunStatus::Succeeded, outputs, _)) => {
                let text = match outputs.values().collect::<Vec<_>>().as_slice() {
                    [serde_json::Value::String(only)] => only.clone(),
                    _ => serde_json::Value::Object(outputs.clone()).to_string(),
                };
                let json = serde_json::Value::Object(outputs);
                rec.output = Some(text.clone());
                rec.output_json = Some(json.clone());
                (
                    rec,
                    Some(StepOutput {
                        text,
                        json: Some(json),
                    }),
                )
            }
            Ok((RunStatus::Cancelled, _, _)) => {
                if !outer_cancel.is_cancelled() {
                    // Cancelled from inside (an approver chose to cancel the run): the
                    // person meant this run, not only the child.
                    run_cancel.cancel();
                }
                rec.status = StepStatus::Cancelled;
                rec.error = Some(format!("the child run {} was cancelled", run.run_id));
                (rec, None)
            }
            Ok((status, _, error)) => {
                rec.status = StepStatus::Failed;
                rec.error = Some(format!(
                    "the child run {} of `{}` ended {}: {}",
                    run.run_id,
                    run.action.file,
                    status.as_str(),
                    error.as_deref().unwrap_or("no error recorded")
                ));
                (rec, None)
            }
            Err(e) => {
                rec.status = StepStatus::Failed;
                rec.error = Some(e);
                (rec, None)
            }
        }
    }
}
