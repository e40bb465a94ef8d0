//! The fallback ladder of an `llm` step, rung by rung: guardrails on the input, the output
//! cache, the selector's chain ([`super::chain`]), simplified parameters, a substitute
//! agent, then (after `on_failure` leaves the failure to the ladder) a human.
//!
//! Invariants: no provider sees a text before the input guardrails; every rung taken is a
//! [`FallbackRecord`]; the output that is stored passed the output guardrails (model
//! reply, cache hit or human-typed text alike).

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
use crate::provider::{Message, ProviderError, ProviderErrorKind, ToolSpec, Usage};
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
    /// An agent's turn: the tools offered. A candidate with native tool calls gets them
    /// as `tools`; another gets the JSON protocol ([`super::agent_protocol`]), constrained
    /// by `json_schema` (the protocol's schema) while that is set.
    pub(super) tools: Option<Arc<Vec<ToolSpec>>>,
}

/// A successful call.
pub(super) struct Success {
    pub(super) text: String,
    /// A thinking model's reasoning (empty when none): stored, never passed on.
    pub(super) reasoning: String,
    pub(super) json: Option<serde_json::Value>,
    pub(super) usage: Usage,
    pub(super) reference: String,
    pub(super) reason: String,
    pub(super) score: crate::select::ScoreParts,
    /// An agent's turn: the tool calls the model made (empty for a final answer).
    pub(super) tool_calls: Vec<crate::provider::ToolCall>,
    /// An agent's turn: how the tools reached the model.
    pub(super) strategy: Option<super::agent_protocol::Strategy>,
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

/// The texts of one `llm` step after the input guardrails.
pub(super) struct Guarded {
    pub(super) prompt: String,
    pub(super) system: Option<String>,
    substitute_system: Option<String>,
}

/// How a step ended on the ladder.
pub(super) type StepEnd = (StepRecord, Option<StepOutput>);

/// The status of a step stopped by an error: cancelled for a cancel, else failed.
pub(super) fn stopped(e: &ProviderError) -> StepStatus {
    if e.kind == ProviderErrorKind::Cancelled {
        StepStatus::Cancelled
    } else {
        StepStatus::Failed
    }
}

/// Sets a step's final status, error, duration and cost.
pub(super) fn finish(
    mut rec: StepRecord,
    lad: &Ladder,
    status: StepStatus,
    error: Option<String>,
) -> StepRecord {
    rec.status = status;
    rec.error = error;
    rec.duration_ms = ms(lad.t0.elapsed());
    if lad.spend.cost_usd > 0.0 {
        rec.cost_usd = Some(lad.spend.cost_usd);
    }
    rec
}

/// The messages of a call: the system prompt (if any), then the user's prompt.
fn messages(system: Option<&String>, prompt: &str) -> Vec<Message> {
    let mut m = Vec::with_capacity(2);
    if let Some(system) = system {
        m.push(Message::system(system.clone()));
    }
    m.push(Message::user(prompt));
    m
}

impl Engine {
    /// Runs one `llm` step up its ladder and returns its record and output.
    pub(super) async fn run_llm_step(&self, cx: LlmContext) -> StepEnd {
        let mut lad = Ladder {
            attempt_no: 0,
            last_error: None,
            last_model: None,
            spend: Spend::default(),
            t0: Instant::now(),
            cloud_verdicts_recorded: false,
        };
        // The input is stored only once it passed the guardrails (a blocked text never is).
        let mut rec = record_for(&cx.step, StepStatus::Failed, None, Utc::now());
        let g = match self.guard_step_input(&cx, &mut rec).await {
            Ok(g) => g,
            Err(e) => {
                let status = stopped(&e);
                return (finish(rec, &lad, status, Some(e.to_string())), None);
            }
        };
        rec.input = Some(g.prompt.clone());
        let est_prompt =
            estimate_tokens(&g.prompt) + g.system.as_deref().map_or(0, estimate_tokens) + 8;
        let base = Call {
            messages: messages(g.system.as_ref(), &g.prompt),
            max_tokens: cx.llm.max_tokens,
            json_schema: cx.llm.output_schema.as_ref().map(|(s, _)| s.clone()),
            est_prompt,
            tools: None,
        };
        let selection = self.selection_for(&cx, &cx.llm.model, &base, lad.spend);
        rec.selection = Some(selection.record.clone());
        let cache_key = cache_key(&cx, &g, &selection);
        if let Some(end) = self.cached_output(&cx, &mut rec, &lad, &cache_key).await {
            return end;
        }
        loop {
            let result = self
                .climb(&cx, &mut rec, &mut lad, &base, selection.clone(), &g)
                .await;
            let error = match result {
                Ok(success) => return self.succeed(&cx, rec, &lad, success, &cache_key).await,
                Err(ChainEnd::Stop(e)) if e.kind == ProviderErrorKind::Cancelled => {
                    return (
                        finish(rec, &lad, StepStatus::Cancelled, Some("cancelled".into())),
                        None,
                    );
                }
                Err(ChainEnd::Stop(e)) => e.to_string(),
                Err(ChainEnd::Exhausted) => exhausted_error(&selection, &lad),
            };
            // Last rung: a human, when `on_failure` leaves the failure to us.
            if cx.llm.fallback.ask_human && cx.step.on_failure == OnFailure::Fail {
                match self.ask_after_failure(&cx, rec, &lad, error).await {
                    Ok(end) => return end,
                    Err(again) => {
                        rec = again;
                        continue;
                    }
                }
            }
            return (finish(rec, &lad, StepStatus::Failed, Some(error)), None);
        }
    }

    /// Guardrails on the step's input (prompt, system, the substitute agent's system),
    /// before any provider sees it.
    pub(super) async fn guard_step_input(
        &self,
        cx: &LlmContext,
        rec: &mut StepRecord,
    ) -> Result<Guarded, ProviderError> {
        let id = &cx.step.id;
        let prompt = self
            .guard_text(&cx.sh, id, "input", cx.prompt.clone(), rec)
            .await?;
        let mut optional = Vec::with_capacity(2);
        for text in [&cx.system, &cx.substitute_system] {
            optional.push(match text {
                Some(t) => Some(self.guard_text(&cx.sh, id, "input", t.clone(), rec).await?),
                None => None,
            });
        }
        let substitute_system = optional.pop().flatten();
        let system = optional.pop().flatten();
        Ok(Guarded {
            prompt,
            system,
            substitute_system,
        })
    }

    /// The selector's ranking for a call of this step under what its budgets leave.
    pub(super) fn selection_for(
        &self,
        cx: &LlmContext,
        req: &crate::workflow::ModelRequirements,
        call: &Call,
        spend: Spend,
    ) -> crate::select::Selection {
        let (tokens, cost) = self.budget_left(&cx.sh, &cx.llm, spend);
        self.rank(
            &SelectionInput {
                requirements: req.clone(),
                task: cx.llm.task,
                prompt_tokens: call.est_prompt,
                max_tokens: call.max_tokens,
                // An agent's turn sends its protocol schema only to models without
                // native tool calls (local or embedded), and checks its final answer itself.
                needs_json: call.tools.is_none() && call.json_schema.is_some(),
                think: cx.llm.think,
                budget_usd: cost,
                budget_tokens: tokens,
            },
            &cx.sh.catalog,
        )
    }

    /// The output cache: a stored output of the same step definition, resolved inputs
    /// and first-choice model, after this workflow's output guardrails.
    async fn cached_output(
        &self,
        cx: &LlmContext,
        rec: &mut StepRecord,
        lad: &Ladder,
        key: &str,
    ) -> Option<StepEnd> {
        if !cx.step.cache || !cx.sh.use_cache {
            return None;
        }
        let store = self.store.as_ref()?;
        let hit = match store.cache_get(key).await {
            Ok(hit) => hit?,
            Err(e) => {
                tracing::warn!("output cache unavailable: {e}");
                return None;
            }
        };
        let guarded = self
            .guard_output(&cx.sh, &cx.step.id, hit.output, hit.output_json, rec)
            .await;
        let StepOutput { text, json } = match guarded {
            Ok(out) => out,
            Err(e) => {
                let status = stopped(&e);
                return Some((finish(rec.clone(), lad, status, Some(e.to_string())), None));
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
        Some((rec.clone(), Some(StepOutput { text, json })))
    }

    /// A model answered: its output passes the guardrails, the step records the model and
    /// why, and the output goes into the cache.
    async fn succeed(
        &self,
        cx: &LlmContext,
        mut rec: StepRecord,
        lad: &Ladder,
        success: Success,
        cache_key: &str,
    ) -> StepEnd {
        let guarded = self
            .guard_output(&cx.sh, &cx.step.id, success.text, success.json, &mut rec)
            .await;
        let StepOutput { text, json } = match guarded {
            Ok(out) => out,
            Err(e) => {
                let status = stopped(&e);
                return (finish(rec, lad, status, Some(e.to_string())), None);
            }
        };
        // The reasoning is stored and shown, so it passes the same policy as the output.
        if !success.reasoning.is_empty() {
            match self
                .guard_text(
                    &cx.sh,
                    &cx.step.id,
                    "reasoning",
                    success.reasoning,
                    &mut rec,
                )
                .await
            {
                Ok(reasoning) => rec.reasoning = Some(reasoning),
                Err(e) => {
                    let status = stopped(&e);
                    return (finish(rec, lad, status, Some(e.to_string())), None);
                }
            }
        }
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
            if let Err(e) = store.cache_put(cache_key, &cached).await {
                tracing::warn!("cannot store the output in the cache: {e}");
            }
        }
        (
            finish(rec, lad, StepStatus::Succeeded, None),
            Some(StepOutput { text, json }),
        )
    }

    /// The ladder's last rung: a human retries (`Err` gives the record back to climb
    /// again), types the output, skips the step or cancels the run.
    async fn ask_after_failure(
        &self,
        cx: &LlmContext,
        mut rec: StepRecord,
        lad: &Ladder,
        error: String,
    ) -> Result<StepEnd, StepRecord> {
        let request = HumanRequest::StepFailed {
            run_id: cx.sh.run_id.clone(),
            step_id: cx.step.id.clone(),
            error: error.clone(),
        };
        let from = lad.last_model.clone().unwrap_or_else(|| "ladder".into());
        let human = |to: &str, reason: &str| FallbackRecord {
            from: from.clone(),
            to: to.into(),
            reason: reason.into(),
            rung: "human".into(),
        };
        match self.ask(&cx.sh, request, None, &cx.cancel).await {
            Some(HumanDecision::Retry) => {
                rec.fallbacks
                    .push(human("retry", "a human asked to run the ladder again"));
                Err(rec)
            }
            Some(HumanDecision::UseOutput { text }) => {
                let text = match self
                    .guard_text(&cx.sh, &cx.step.id, "output", text, &mut rec)
                    .await
                {
                    Ok(t) => t,
                    Err(e) => {
                        let status = stopped(&e);
                        return Ok((finish(rec, lad, status, Some(e.to_string())), None));
                    }
                };
                rec.fallbacks
                    .push(human("human output", "a human typed the output"));
                rec.model = Some("human".into());
                rec.model_reason = Some(format!("written by a human after: {error}"));
                let json = parse_json_reply(&text)
                    .ok()
                    .filter(|_| cx.llm.output_schema.is_some());
                rec.output = Some(text.clone());
                rec.output_json = json.clone();
                Ok((
                    finish(rec, lad, StepStatus::Succeeded, None),
                    Some(StepOutput { text, json }),
                ))
            }
            Some(HumanDecision::Skip) => {
                rec.fallbacks
                    .push(human("skip", "a human skipped the step"));
                let why = format!("skipped by a human after: {error}");
                Ok((finish(rec, lad, StepStatus::Skipped, Some(why)), None))
            }
            Some(HumanDecision::Cancel) => {
                cx.sh.cancel.cancel();
                let why = "a human cancelled the run".to_string();
                Ok((finish(rec, lad, StepStatus::Cancelled, Some(why)), None))
            }
            _ => Ok((finish(rec, lad, StepStatus::Failed, Some(error)), None)),
        }
    }

    /// The model rungs of the ladder: the chain, simplified parameters, a substitute
    /// agent.
    async fn climb(
        &self,
        cx: &LlmContext,
        rec: &mut StepRecord,
        lad: &mut Ladder,
        base: &Call,
        selection: crate::select::Selection,
        g: &Guarded,
    ) -> Result<Success, ChainEnd> {
        let ladder = &cx.llm.fallback;
        let mut chain = selection.candidates;
        if !ladder.next_model {
            chain.truncate(1);
        }
        let all_open = selection.record.all_breakers_open;
        let retry = ladder.retry_same;
        match self
            .chain(cx, rec, lad, base, &chain, all_open, retry, "next_model")
            .await
        {
            Err(ChainEnd::Exhausted) => {}
            end => return end,
        }
        if ladder.simplify {
            match self.simplified(cx, rec, lad, base, g).await {
                Err(ChainEnd::Exhausted) => {}
                end => return end,
            }
        }
        let Some(sub) = &cx.llm.substitute else {
            return Err(ChainEnd::Exhausted);
        };
        let call = Call {
            messages: messages(
                g.substitute_system.as_ref().or(g.system.as_ref()),
                &g.prompt,
            ),
            max_tokens: base.max_tokens,
            json_schema: base.json_schema.clone(),
            est_prompt: base.est_prompt,
            tools: None,
        };
        let sel = self.selection_for(cx, &sub.model, &call, lad.spend);
        let Some(first) = sel.candidates.first() else {
            return Err(ChainEnd::Exhausted);
        };
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
        let all_open = sel.record.all_breakers_open;
        self.chain(cx, rec, lad, &call, &chain, all_open, retry, "agent")
            .await
    }

    /// The simplify rung: half the `max_tokens`, the prompt trimmed to each model's
    /// window (head and tail kept), the schema moved from a constraint into the prompt;
    /// one attempt per model, no retries.
    async fn simplified(
        &self,
        cx: &LlmContext,
        rec: &mut StepRecord,
        lad: &mut Ladder,
        base: &Call,
        g: &Guarded,
    ) -> Result<Success, ChainEnd> {
        let max_tokens = (base.max_tokens / 2).max(16);
        let probe = Call {
            messages: Vec::new(),
            max_tokens,
            json_schema: None,
            est_prompt: 0,
            tools: None,
        };
        let sel = self.selection_for(cx, &cx.llm.model, &probe, lad.spend);
        let mut simple = sel.candidates;
        if !cx.llm.fallback.next_model {
            simple.truncate(1);
        }
        let sys_tokens = g.system.as_deref().map_or(0, estimate_tokens);
        let schema_note = cx.llm.schema_note();
        let note_tokens = estimate_tokens(&schema_note);
        let now = Utc::now();
        for cand in &simple {
            // An open breaker still counts here, unless every candidate's is open.
            if !sel.record.all_breakers_open && lock(&self.breakers).is_open(&cand.reference, now) {
                continue;
            }
            let mut text = match cand.context_window {
                Some(w) => {
                    let room = u64::from(w)
                        .saturating_sub(u64::from(max_tokens) + sys_tokens + note_tokens + 64);
                    if room < 256 {
                        continue;
                    }
                    trim_middle(&g.prompt, usize::try_from(room * 4).unwrap_or(usize::MAX))
                }
                None => g.prompt.clone(),
            };
            text.push_str(&schema_note);
            let call = Call {
                messages: messages(g.system.as_ref(), &text),
                max_tokens,
                json_schema: None,
                est_prompt: estimate_tokens(&text) + sys_tokens + 8,
                tools: None,
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
            let all_open = sel.record.all_breakers_open;
            let one = std::slice::from_ref(cand);
            match self
                .chain(cx, rec, lad, &call, one, all_open, false, "simplify")
                .await
            {
                Err(ChainEnd::Exhausted) => {}
                end => return end,
            }
        }
        Err(ChainEnd::Exhausted)
    }
}

/// The output cache key: sha256 over the step definition, the resolved (guarded) system
/// and prompt, and the first-choice model.
fn cache_key(cx: &LlmContext, g: &Guarded, selection: &crate::select::Selection) -> String {
    use sha2::Digest;
    let key = serde_json::json!([
        cx.step.definition_hash,
        g.system,
        g.prompt,
        selection.candidates.first().map(|c| c.reference.clone()),
    ]);
    crate::plan::hex(&sha2::Sha256::digest(key.to_string().as_bytes()))
}

/// Why every rung failed: no model could serve the step, or the last error.
fn exhausted_error(selection: &crate::select::Selection, lad: &Ladder) -> String {
    if selection.candidates.is_empty() && lad.attempt_no == 0 {
        return format!(
            "no model can serve this step ({})",
            if selection.record.excluded.is_empty() {
                "no provider is configured".to_string()
            } else {
                selection.excluded().join("; ")
            }
        );
    }
    match &lad.last_error {
        Some(e) => format!("every rung of the fallback ladder failed; last error: {e}"),
        None => "every rung of the fallback ladder failed".into(),
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
