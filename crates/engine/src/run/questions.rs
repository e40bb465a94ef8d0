//! Questions to a human: approval steps, guardrail approvals and the ladder's last rung.

use std::time::{Duration, Instant};

use chrono::Utc;

use super::records::record_for;
use super::{Engine, RunShared, StepOutput, ms};
use crate::events::{Event, RunStatus, StepStatus};
use crate::human::{HumanDecision, HumanRequest};
use crate::plan::PlannedStep;
use crate::store::StepRecord;
use crate::workflow::ApprovalDefault;

impl Engine {
    /// Asks a human, with the run in `waiting_for_human` meanwhile. `None` when nobody
    /// can be asked, the timeout passed, or the run or the asking step (`cancel`: a
    /// `fail_fast` map cancels its items' steps) was cancelled.
    pub(super) async fn ask(
        &self,
        sh: &RunShared,
        request: HumanRequest,
        timeout: Option<Duration>,
        cancel: &tokio_util::sync::CancellationToken,
    ) -> Option<HumanDecision> {
        let human = sh.human.as_ref()?;
        // A failed step holds the run paused while a human decides (no new step starts);
        // the hold ends with this call, whatever else paused the run meanwhile.
        let hold = matches!(request, HumanRequest::StepFailed { .. }).then(|| sh.control.hold());
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
            () = cancel.cancelled() => None,
        };
        drop(hold);
        sh.emitter.emit(Event::HumanDecided {
            run_id: sh.run_id.clone(),
            step_id: request.step_id().to_string(),
            decision: match &decision {
                Some(d) => d.name().to_string(),
                None => "timeout".to_string(),
            },
        });
        // Still paused when the user paused the run meanwhile or another question holds it.
        let status = if sh.control.is_paused() {
            RunStatus::Paused
        } else {
            RunStatus::Running
        };
        if let Some(store) = &self.store
            && let Err(e) = store.set_run_status(&sh.run_id, status, &[]).await
        {
            tracing::warn!("cannot record the human's answer: {e}");
        }
        decision
    }

    /// An `approval` step: its question (after the guardrails, like every text that is
    /// stored or shown) goes to the human; approve → succeeded with
    /// `{"approved": true, "decided_by": ...}`, reject → failed; no answer within the
    /// timeout → the step's default.
    pub(super) async fn run_approval_step(
        &self,
        sh: &RunShared,
        step: &PlannedStep,
        message: String,
        settings: &crate::workflow::ApprovalSettings,
        cancel: tokio_util::sync::CancellationToken,
    ) -> (StepRecord, Option<StepOutput>) {
        let t0 = Instant::now();
        let mut rec = record_for(step, StepStatus::Succeeded, None, Utc::now());
        let message = match self
            .guard_text(sh, &step.id, "question", message, &mut rec)
            .await
        {
            Ok(m) => m,
            Err(e) => {
                rec.status = if e.kind == crate::provider::ProviderErrorKind::Cancelled {
                    StepStatus::Cancelled
                } else {
                    StepStatus::Failed
                };
                rec.error = Some(e.to_string());
                rec.duration_ms = ms(t0.elapsed());
                return (rec, None);
            }
        };
        rec.input = Some(message.clone());
        let request = HumanRequest::Approval {
            run_id: sh.run_id.clone(),
            step_id: step.id.clone(),
            message,
        };
        let decision = self.ask(sh, request, settings.timeout, &cancel).await;
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
            None if sh.cancel.is_cancelled() || cancel.is_cancelled() => {
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
}
