//! Step records.

use std::sync::Arc;

use chrono::Utc;

use super::StepOutput;
use crate::events::{Event, StepStatus};
use crate::plan::{Plan, PlannedStep};
use crate::store::{FallbackRecord, StepRecord};
use crate::workflow::OnFailure;

/// Takes a step record that needs no running (kept from an interrupted run, reused from an
/// earlier one, or outside `only`): its state is set, its output becomes readable, and its
/// dependants have one need fewer.
pub(super) fn keep_record(
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

/// Applies a failed step's `on_failure` (the ladder's rung after the models).
pub(super) fn apply_on_failure(
    step: &PlannedStep,
    rec: &mut StepRecord,
    out: &mut Option<StepOutput>,
) {
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
pub(super) fn record_for(
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
        reasoning: None,
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
        transcript: Vec::new(),
    }
}

/// The event that announces a finished step (under its recorded id).
pub(super) fn final_event(run_id: &str, rec: &StepRecord) -> Event {
    match rec.status {
        StepStatus::Succeeded => Event::StepSucceeded {
            run_id: run_id.to_string(),
            step_id: rec.step_id.clone(),
            model: rec.model.clone(),
            usage: rec.usage,
            duration_ms: rec.duration_ms,
            cached: rec.cached,
            cost_usd: rec.cost_usd,
        },
        StepStatus::Failed => Event::StepFailed {
            run_id: run_id.to_string(),
            step_id: rec.step_id.clone(),
            error: rec.error.clone().unwrap_or_default(),
        },
        StepStatus::Skipped | StepStatus::Cancelled => Event::StepSkipped {
            run_id: run_id.to_string(),
            step_id: rec.step_id.clone(),
            reason: rec.error.clone().unwrap_or_default(),
            status: rec.status,
        },
    }
}
