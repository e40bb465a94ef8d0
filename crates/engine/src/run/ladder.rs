//! The fallback ladder of an `llm` step.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::attempt::parse_json_reply;
use super::budget::Spend;
use super::records::record_for;
use super::{Engine, RunShared, StepOutput, lock, ms};
use crate::events::StepStatus;
use crate::human::{HumanDecision, HumanRequest};
use crate::plan::{LlmAction, PlannedStep};
use crate::provider::{Message, ProviderError, ProviderErrorKind, Role, Usage};
use crate::select::{SelectionInput, estimate_tokens};
use crate::store::{CachedOutput, FallbackRecord, StepRecord};
use crate::workflow::OnFailure;

/// One model call's parameters, as a ladder rung shapes them.
#[derive(Clone)]
pub(super) struct Call {
    pub(super) messages: Vec<Message>,
    pub(super) max_tokens: u32,
    pub(super) json_schema: Option<serde_json::Value>,
    pub(super) est_prompt: u64,
}

/// A successful call.
pub(super) struct Success {
    pub(super) text: String,
    pub(super) json: Option<serde_json::Value>,
    pub(super) usage: Usage,
    pub(super) reference: String,
    pub(super) reason: String,
    pub(super) score: crate::select::ScoreParts,
}

/// How a chain of candidates ended without success.
pub(super) enum ChainEnd {
    /// Every candidate was tried.
    Exhausted,
    /// An error whose action is to stop (cancel, guardrail block, budget).
    Stop(ProviderError),
}

/// Running state of one step's ladder.
pub(super) struct Ladder {
    pub(super) attempt_no: u32,
    pub(super) last_error: Option<ProviderError>,
    /// The model tried last, for fallback records.
    pub(super) last_model: Option<String>,
    pub(super) spend: Spend,
    pub(super) t0: Instant,
    /// Whether the cloud-scope guardrail verdicts were recorded already.
    pub(super) cloud_verdicts_recorded: bool,
}

pub(super) struct LlmContext {
    pub(super) sh: Arc<RunShared>,
    pub(super) step: PlannedStep,
    pub(super) llm: LlmAction,
    pub(super) prompt: String,
    pub(super) system: Option<String>,
    pub(super) substitute_system: Option<String>,
    pub(super) cancel: CancellationToken,
}

impl Engine {
    pub(super) async fn run_llm_step(&self, cx: LlmContext) -> (StepRecord, Option<StepOutput>) {
        let started_at = Utc::now();
        let mut lad = Ladder {
            attempt_no: 0,
            last_error: None,
            last_model: None,
            spend: Spend::default(),
            t0: Instant::now(),
            cloud_verdicts_recorded: false,
        };
        let mut rec = record_for(&cx.step, StepStatus::Failed, None, started_at);
        rec.input = Some(cx.prompt.clone());
        let finish =
            |mut rec: StepRecord, lad: &Ladder, status: StepStatus, error: Option<String>| {
                rec.status = status;
                rec.error = error;
                rec.duration_ms = ms(lad.t0.elapsed());
                if lad.spend.cost_usd > 0.0 {
                    rec.cost_usd = Some(lad.spend.cost_usd);
                }
                rec
            };

        // Guardrails on the input (prompt, system, the substitute agent's system), before
        // any provider sees it.
        let step_id = cx.step.id.clone();
        let stopped = |e: &ProviderError| {
            if e.kind == ProviderErrorKind::Cancelled {
                StepStatus::Cancelled
            } else {
                StepStatus::Failed
            }
        };
        let mut guarded: Vec<Option<String>> = Vec::with_capacity(3);
        for text in [
            Some(&cx.prompt),
            cx.system.as_ref(),
            cx.substitute_system.as_ref(),
        ] {
            match text {
                Some(t) => match self
                    .guard_text(&cx.sh, &step_id, "input", t.clone(), &mut rec)
                    .await
                {
                    Ok(t) => guarded.push(Some(t)),
                    Err(e) => {
                        let status = stopped(&e);
                        return (finish(rec, &lad, status, Some(e.to_string())), None);
                    }
                },
                None => guarded.push(None),
            }
        }
        let substitute_system = guarded.pop().flatten();
        let system = guarded.pop().flatten();
        let prompt = guarded.pop().flatten().unwrap_or_default();
        rec.input = Some(prompt.clone());

        let messages = |system: Option<&String>, prompt: &str| {
            let mut m = Vec::with_capacity(2);
            if let Some(system) = system {
                m.push(Message {
                    role: Role::System,
                    content: system.clone(),
                });
            }
            m.push(Message {
                role: Role::User,
                content: prompt.to_string(),
            });
            m
        };
        let est_prompt =
            estimate_tokens(&prompt) + system.as_deref().map_or(0, estimate_tokens) + 8;
        let base_call = Call {
            messages: messages(system.as_ref(), &prompt),
            max_tokens: cx.llm.max_tokens,
            json_schema: cx.llm.output_schema.as_ref().map(|(s, _)| s.clone()),
            est_prompt,
        };
        let selection_for = |engine: &Engine,
                             req: &crate::workflow::ModelRequirements,
                             call: &Call,
                             spend: Spend| {
            let (tokens, cost) = engine.budget_left(&cx.sh, &cx.llm, spend);
            engine.rank(
                &SelectionInput {
                    requirements: req.clone(),
                    task: cx.llm.task,
                    prompt_tokens: call.est_prompt,
                    max_tokens: call.max_tokens,
                    needs_json: call.json_schema.is_some(),
                    budget_usd: cost,
                    budget_tokens: tokens,
                },
                &cx.sh.catalog,
            )
        };
        let selection = selection_for(self, &cx.llm.model, &base_call, lad.spend);
        rec.selection = Some(selection.record.clone());

        // The output cache: same definition, resolved inputs and first-choice model.
        let cache_key = {
            use sha2::Digest;
            let key = serde_json::json!([
                cx.step.definition_hash,
                system,
                prompt,
                selection.candidates.first().map(|c| c.reference.clone()),
            ]);
            crate::plan::hex(&sha2::Sha256::digest(key.to_string().as_bytes()))
        };
        if cx.step.cache
            && cx.sh.use_cache
            && let Some(store) = &self.store
        {
            match store.cache_get(&cache_key).await {
                Ok(Some(hit)) => {
                    // The cached text passes this workflow's output guardrails too.
                    let StepOutput { text, json } = match self
                        .guard_output(&cx.sh, &step_id, hit.output, hit.output_json, &mut rec)
                        .await
                    {
                        Ok(out) => out,
                        Err(e) => {
                            let status = stopped(&e);
                            return (finish(rec, &lad, status, Some(e.to_string())), None);
                        }
                    };
                    rec.status = StepStatus::Succeeded;
                    rec.cached = true;
                    rec.model = hit.model.clone();
                    rec.model_reason = Some(format!(
                        "cached output of run {} (same step definition, inputs and model)",
                        hit.run_id
                    ));
                    rec.usage = hit.usage;
                    rec.output = Some(text.clone());
                    rec.output_json = json.clone();
                    rec.duration_ms = ms(lad.t0.elapsed());
                    return (rec, Some(StepOutput { text, json }));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("output cache unavailable: {e}"),
            }
        }

        loop {
            let result = self
                .climb(
                    &cx,
                    &mut rec,
                    &mut lad,
                    &base_call,
                    selection.clone(),
                    &selection_for,
                    system.as_ref(),
                    substitute_system.as_ref(),
                    &prompt,
                    &messages,
                )
                .await;
            let error = match result {
                Ok(success) => {
                    // Guardrails on the output.
                    let StepOutput { text, json } = match self
                        .guard_output(&cx.sh, &step_id, success.text, success.json, &mut rec)
                        .await
                    {
                        Ok(out) => out,
                        Err(e) => {
                            let status = stopped(&e);
                            return (finish(rec, &lad, status, Some(e.to_string())), None);
                        }
                    };
                    rec.model = Some(success.reference.clone());
                    let mut reason = format!(
                        "{}: {}; {}",
                        success.reference,
                        success.reason,
                        success.score.describe(cx.llm.task)
                    );
                    if !rec.fallbacks.is_empty() {
                        let chain: Vec<String> = rec
                            .fallbacks
                            .iter()
                            .map(|f| format!("{} → {} [{}] ({})", f.from, f.to, f.rung, f.reason))
                            .collect();
                        reason.push_str(&format!("; after the ladder: {}", chain.join("; ")));
                    }
                    rec.model_reason = Some(reason);
                    rec.usage = Some(success.usage);
                    rec.output = Some(text.clone());
                    rec.output_json = json.clone();
                    if let Some(store) = &self.store
                        && cx.step.cache
                    {
                        let cached = CachedOutput {
                            output: text.clone(),
                            output_json: json.clone(),
                            model: rec.model.clone(),
                            usage: rec.usage,
                            run_id: cx.sh.run_id.clone(),
                        };
                        if let Err(e) = store.cache_put(&cache_key, &cached).await {
                            tracing::warn!("cannot store the output in the cache: {e}");
                        }
                    }
                    return (
                        finish(rec, &lad, StepStatus::Succeeded, None),
                        Some(StepOutput { text, json }),
                    );
                }
                Err(ChainEnd::Stop(e)) if e.kind == ProviderErrorKind::Cancelled => {
                    return (
                        finish(rec, &lad, StepStatus::Cancelled, Some("cancelled".into())),
                        None,
                    );
                }
                Err(ChainEnd::Stop(e)) => e.to_string(),
                Err(ChainEnd::Exhausted) => {
                    if selection.candidates.is_empty() && lad.attempt_no == 0 {
                        format!(
                            "no model can serve this step ({})",
                            if selection.record.excluded.is_empty() {
                                "no provider is configured".to_string()
                            } else {
                                selection.excluded().join("; ")
                            }
                        )
                    } else {
                        match &lad.last_error {
                            Some(e) => {
                                format!("every rung of the fallback ladder failed; last error: {e}")
                            }
                            None => "every rung of the fallback ladder failed".into(),
                        }
                    }
                }
            };
            // Last rung: a human, when `on_failure` leaves the failure to us.
            if cx.llm.fallback.ask_human && cx.step.on_failure == OnFailure::Fail {
                let request = HumanRequest::StepFailed {
                    run_id: cx.sh.run_id.clone(),
                    step_id: step_id.clone(),
                    error: error.clone(),
                };
                let from = lad.last_model.clone().unwrap_or_else(|| "ladder".into());
                match self.ask(&cx.sh, request, None).await {
                    Some(HumanDecision::Retry) => {
                        rec.fallbacks.push(FallbackRecord {
                            from,
                            to: "retry".into(),
                            reason: "a human asked to run the ladder again".into(),
                            rung: "human".into(),
                        });
                        continue;
                    }
                    Some(HumanDecision::UseOutput { text }) => {
                        let text = match self
                            .guard_text(&cx.sh, &step_id, "output", text, &mut rec)
                            .await
                        {
                            Ok(t) => t,
                            Err(e) => {
                                let status = stopped(&e);
                                return (finish(rec, &lad, status, Some(e.to_string())), None);
                            }
                        };
                        rec.fallbacks.push(FallbackRecord {
                            from,
                            to: "human output".into(),
                            reason: "a human typed the output".into(),
                            rung: "human".into(),
                        });
                        rec.model = Some("human".into());
                        rec.model_reason = Some(format!("written by a human after: {error}"));
                        let json = parse_json_reply(&text)
                            .ok()
                            .filter(|_| cx.llm.output_schema.is_some());
                        rec.output = Some(text.clone());
                        rec.output_json = json.clone();
                        return (
                            finish(rec, &lad, StepStatus::Succeeded, None),
                            Some(StepOutput { text, json }),
                        );
                    }
                    Some(HumanDecision::Skip) => {
                        rec.fallbacks.push(FallbackRecord {
                            from,
                            to: "skip".into(),
                            reason: "a human skipped the step".into(),
                            rung: "human".into(),
                        });
                        return (
                            finish(
                                rec,
                                &lad,
                                StepStatus::Skipped,
                                Some(format!("skipped by a human after: {error}")),
                            ),
                            None,
                        );
                    }
                    Some(HumanDecision::Cancel) => {
                        cx.sh.cancel.cancel();
                        return (
                            finish(
                                rec,
                                &lad,
                                StepStatus::Cancelled,
                                Some("a human cancelled the run".into()),
                            ),
                            None,
                        );
                    }
                    _ => {}
                }
            }
            return (finish(rec, &lad, StepStatus::Failed, Some(error)), None);
        }
    }

    /// The model rungs of the ladder: the chain, simplified parameters, a substitute
    /// agent.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn climb(
        &self,
        cx: &LlmContext,
        rec: &mut StepRecord,
        lad: &mut Ladder,
        base: &Call,
        selection: crate::select::Selection,
        selection_for: &(
             dyn Fn(
            &Engine,
            &crate::workflow::ModelRequirements,
            &Call,
            Spend,
        ) -> crate::select::Selection
                 + Sync
         ),
        system: Option<&String>,
        substitute_system: Option<&String>,
        prompt: &str,
        messages: &(dyn Fn(Option<&String>, &str) -> Vec<Message> + Sync),
    ) -> Result<Success, ChainEnd> {
        let ladder = &cx.llm.fallback;
        let mut chain = selection.candidates;
        if !ladder.next_model {
            chain.truncate(1);
        }
        match self
            .chain(
                cx,
                rec,
                lad,
                base,
                &chain,
                selection.record.all_breakers_open,
                ladder.retry_same,
                "next_model",
            )
            .await
        {
            Ok(s) => return Ok(s),
            Err(ChainEnd::Stop(e)) => return Err(ChainEnd::Stop(e)),
            Err(ChainEnd::Exhausted) => {}
        }

        if ladder.simplify {
            let max_tokens = (base.max_tokens / 2).max(16);
            let probe = Call {
                messages: Vec::new(),
                max_tokens,
                json_schema: None,
                est_prompt: 0,
            };
            let sel = selection_for(self, &cx.llm.model, &probe, lad.spend);
            let mut simple = sel.candidates;
            if !ladder.next_model {
                simple.truncate(1);
            }
            let sys_tokens = system.map_or(0, |s| estimate_tokens(s));
            let schema_note = cx.llm.schema_note();
            let note_tokens = estimate_tokens(&schema_note);
            let now = Utc::now();
            for cand in &simple {
                // An open breaker still counts here, unless every candidate's is open.
                if !sel.record.all_breakers_open
                    && lock(&self.breakers).is_open(&cand.reference, now)
                {
                    continue;
                }
                // The prompt trimmed to this model's window (head and tail kept).
                let mut text = match cand.context_window {
                    Some(w) => {
                        let room = u64::from(w)
                            .saturating_sub(u64::from(max_tokens) + sys_tokens + note_tokens + 64);
                        if room < 256 {
                            continue;
                        }
                        trim_middle(prompt, usize::try_from(room * 4).unwrap_or(usize::MAX))
                    }
                    None => prompt.to_string(),
                };
                text.push_str(&schema_note);
                let call = Call {
                    messages: messages(system, &text),
                    max_tokens,
                    json_schema: None,
                    est_prompt: estimate_tokens(&text) + sys_tokens + 8,
                };
                rec.fallbacks.push(FallbackRecord {
                    from: lad.last_model.clone().unwrap_or_else(|| "chain".into()),
                    to: format!("simplified parameters ({})", cand.reference),
                    reason: format!(
                        "max_tokens {max_tokens}, prompt ~{} tokens, no structured-output constraint",
                        call.est_prompt
                    ),
                    rung: "simplify".into(),
                });
                match self
                    .chain(
                        cx,
                        rec,
                        lad,
                        &call,
                        std::slice::from_ref(cand),
                        sel.record.all_breakers_open,
                        false,
                        "simplify",
                    )
                    .await
                {
                    Ok(s) => return Ok(s),
                    Err(ChainEnd::Stop(e)) => return Err(ChainEnd::Stop(e)),
                    Err(ChainEnd::Exhausted) => {}
                }
            }
        }

        if let Some(sub) = &cx.llm.substitute {
            let sub_system = substitute_system.or(system);
            let call = Call {
                messages: messages(sub_system, prompt),
                max_tokens: base.max_tokens,
                json_schema: base.json_schema.clone(),
                est_prompt: base.est_prompt,
            };
            let sel = selection_for(self, &sub.model, &call, lad.spend);
            if let Some(first) = sel.candidates.first() {
                rec.fallbacks.push(FallbackRecord {
                    from: lad.last_model.clone().unwrap_or_else(|| "chain".into()),
                    to: format!("agent `{}` ({})", sub.agent, first.reference),
                    reason: "substitute agent of the fallback ladder".into(),
                    rung: "agent".into(),
                });
                let mut chain = sel.candidates;
                if !ladder.next_model {
                    chain.truncate(1);
                }
                return self
                    .chain(
                        cx,
                        rec,
                        lad,
                        &call,
                        &chain,
                        sel.record.all_breakers_open,
                        ladder.retry_same,
                        "agent",
                    )
                    .await;
            }
        }
        Err(ChainEnd::Exhausted)
    }
}

/// Keeps the head (two thirds) and the tail (one third) of a text within `max_chars`
/// characters, with a marker where the middle was cut.
pub(super) fn trim_middle(text: &str, max_chars: usize) -> String {
    let count = text.chars().count();
    if count <= max_chars {
        return text.to_string();
    }
    let marker = "\n[… trimmed to fit the context window …]\n";
    let keep = max_chars.saturating_sub(marker.chars().count());
    let head = keep * 2 / 3;
    let tail = keep - head;
    let head_text: String = text.chars().take(head).collect();
    let tail_text: String = text.chars().skip(count - tail).collect();
    format!("{head_text}{marker}{tail_text}")
}
