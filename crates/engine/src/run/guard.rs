//! Guardrails applied by the run.

use super::attempt::parse_json_reply;
use super::ladder::{Ladder, LlmContext};
use super::{Engine, RunShared, StepOutput};
use crate::events::Event;
use crate::human::{HumanDecision, HumanRequest};
use crate::provider::{Message, ProviderError, ProviderErrorKind};
use crate::store::{GuardrailRecord, StepRecord};

impl Engine {
    /// Applies the guardrail policy to a text. Returns the text to use (redacted when a
    /// rule says so), or the error that stops the step.
    pub(super) async fn guard_text(
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
    pub(super) async fn guard_output(
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

    /// Applies the cloud-scope rules to the messages of a cloud attempt: the redacted
    /// messages, or the guardrail error that keeps this text from cloud models.
    pub(super) fn guard_for_cloud(
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
}

/// A guardrail verdict in words: `2 email (warn)`.
pub(super) fn finding_text(v: &nexus_guard::Verdict) -> String {
    format!(
        "{} {} ({})",
        v.count,
        v.detector.as_str(),
        v.action.as_str()
    )
}

/// Records a guardrail verdict on a step (its audit record and the event) and returns it
/// in words.
pub(super) fn record_verdict(
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
