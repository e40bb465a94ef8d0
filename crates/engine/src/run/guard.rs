//! Guardrails applied by the run.

use std::sync::Arc;

use super::attempt::parse_json_reply;
use super::ladder::{Ladder, LlmContext};
use super::{Engine, EngineError, RunShared, StepOutput, lock};
use crate::events::Event;
use crate::human::{HumanDecision, HumanRequest};
use crate::plan::Plan;
use crate::provider::{Message, ProviderError, ProviderErrorKind};
use crate::store::{GuardrailRecord, StepRecord};

impl Engine {
    /// Applies the guardrail policy to a text. Returns the text to use (redacted when a
    /// rule says so), or the error that stops the step (a block, or an approval that a
    /// human did not give).
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
        let findings = settle(sh, step_id, stage, &outcome, rec)?;
        if outcome.needs_approval {
            self.approve_findings(sh, step_id, stage, findings).await?;
        }
        Ok(outcome.text)
    }

    /// Asks a human to let a text with `require_approval` findings through.
    async fn approve_findings(
        &self,
        sh: &RunShared,
        step_id: &str,
        stage: &str,
        findings: Vec<String>,
    ) -> Result<(), ProviderError> {
        let request = HumanRequest::Guardrail {
            run_id: sh.run_id.clone(),
            step_id: step_id.to_string(),
            stage: stage.to_string(),
            findings: findings.clone(),
        };
        match self.ask(sh, request, None, &sh.cancel).await {
            // Approved: the text goes on as written (redactions still apply).
            Some(HumanDecision::Approve) => Ok(()),
            Some(HumanDecision::Cancel) => {
                sh.cancel.cancel();
                Err(ProviderError::new(
                    ProviderErrorKind::Cancelled,
                    "the run was cancelled at a guardrail question",
                ))
            }
            _ => Err(ProviderError::new(
                ProviderErrorKind::GuardrailBlock,
                format!(
                    "guardrails needed approval of the step's {stage} and it was not given: {}",
                    findings.join(", ")
                ),
            )),
        }
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
        // Applies the policy to one text, noting its verdicts (recorded the first time).
        let mut check = |text: &str, stage: &str, rec: &mut StepRecord| {
            let outcome = policy.apply(text);
            stopped |= outcome.blocked || outcome.needs_approval;
            for v in &outcome.verdicts {
                findings.push(if record {
                    record_verdict(&cx.sh, &cx.step.id, stage, v, rec)
                } else {
                    finding_text(v)
                });
            }
            outcome
        };
        for m in messages {
            let outcome = check(&m.content, "input (cloud)", rec);
            // An agent's earlier tool calls carry text too: their arguments are checked
            // the same way, and a scrubbed value stays JSON when it still parses.
            let mut tool_calls = m.tool_calls.clone();
            for call in &mut tool_calls {
                let args = check(&call.arguments.to_string(), "tool call (cloud)", rec);
                if !args.verdicts.is_empty() {
                    call.arguments = serde_json::from_str(&args.text)
                        .unwrap_or(serde_json::Value::String(args.text));
                }
            }
            out.push(Message {
                content: outcome.text,
                tool_calls,
                ..m.clone()
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

/// Records the verdicts of a guardrail outcome on a step (audit records and events) and
/// returns them in words, or the error when a rule blocks the text.
pub(super) fn settle(
    sh: &RunShared,
    step_id: &str,
    stage: &str,
    outcome: &nexus_guard::Outcome,
    rec: &mut StepRecord,
) -> Result<Vec<String>, ProviderError> {
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
    Ok(findings)
}

/// Applies the policy to the run's inputs before they are stored or used: every string
/// (at any depth of a JSON input, and a file input's contents) comes back redacted where
/// a rule says so. Returns the inputs and the verdicts as events (step id empty: they
/// belong to the run). `require_approval` findings are asked about by the steps that
/// send the text on, not here.
///
/// # Errors
/// [`EngineError::InputBlocked`] naming the input when a `block` rule matches.
pub(super) fn guard_inputs(
    policy: &nexus_guard::Policy,
    run_id: &str,
    inputs: serde_json::Map<String, serde_json::Value>,
) -> Result<(serde_json::Map<String, serde_json::Value>, Vec<Event>), EngineError> {
    let mut events = Vec::new();
    let mut out = serde_json::Map::with_capacity(inputs.len());
    for (name, mut value) in inputs {
        let mut blocked = Vec::new();
        let mut stack = vec![&mut value];
        while let Some(v) = stack.pop() {
            match v {
                serde_json::Value::String(text) => {
                    let outcome = policy.apply(text);
                    for verdict in &outcome.verdicts {
                        events.push(Event::GuardrailVerdict {
                            run_id: run_id.to_string(),
                            step_id: String::new(),
                            stage: format!("input `{name}`"),
                            detector: verdict.detector.as_str().to_string(),
                            action: verdict.action.as_str().to_string(),
                            count: verdict.count,
                        });
                    }
                    if outcome.blocked {
                        blocked.extend(outcome.verdicts.iter().map(finding_text));
                    }
                    *text = outcome.text;
                }
                serde_json::Value::Array(items) => stack.extend(items.iter_mut()),
                serde_json::Value::Object(map) => stack.extend(map.values_mut()),
                _ => {}
            }
        }
        if !blocked.is_empty() {
            return Err(EngineError::InputBlocked(format!(
                "input `{name}`: {}",
                blocked.join(", ")
            )));
        }
        out.insert(name, value);
    }
    Ok((out, events))
}

/// Compiled guardrail policies kept across runs and engines of this process: compiling
/// the default rules takes milliseconds, which every run paid before its first step.
type PolicyCache = Vec<(Vec<nexus_guard::Rule>, Arc<nexus_guard::Policy>)>;

/// The process's compiled policies, most recently compiled last.
static POLICIES: std::sync::Mutex<PolicyCache> = std::sync::Mutex::new(Vec::new());

/// The policies of one run: for every text, and only for text bound to a cloud model.
pub(super) type RunPolicies = (
    Option<Arc<nexus_guard::Policy>>,
    Option<Arc<nexus_guard::Policy>>,
);

/// How many distinct rule sets [`PolicyCache`] keeps (oldest dropped first).
const POLICY_CACHE_SIZE: usize = 16;

impl Engine {
    /// The policies of a workflow's guardrails: one for every text (`scope: all`) and one
    /// only for text bound to a cloud model (`scope: cloud`); `None` where no rule has that
    /// scope. Each distinct rule set is compiled once per process.
    ///
    /// # Errors
    /// [`EngineError::Guardrails`] when the rules do not compile.
    pub(super) fn policies(&self, plan: &Plan) -> Result<RunPolicies, EngineError> {
        let rules = match &plan.workflow.guardrails {
            Some(g) if !g.enabled => Vec::new(),
            Some(g) if !g.rules.is_empty() => g.rules.clone(),
            _ => nexus_guard::default_rules(),
        };
        let policy_of = |scope: nexus_guard::Scope| {
            let chosen: Vec<nexus_guard::Rule> =
                rules.iter().filter(|r| r.scope == scope).copied().collect();
            if chosen.is_empty() {
                return Ok::<_, EngineError>(None);
            }
            let mut cache = lock(&POLICIES);
            if let Some((_, p)) = cache.iter().find(|(r, _)| *r == chosen) {
                return Ok(Some(Arc::clone(p)));
            }
            let policy = Arc::new(
                nexus_guard::Policy::new(chosen.clone())
                    .map_err(|e| EngineError::Guardrails(e.to_string()))?,
            );
            if cache.len() >= POLICY_CACHE_SIZE {
                cache.remove(0);
            }
            cache.push((chosen, Arc::clone(&policy)));
            Ok(Some(policy))
        };
        Ok((
            policy_of(nexus_guard::Scope::All)?,
            policy_of(nexus_guard::Scope::Cloud)?,
        ))
    }
}
