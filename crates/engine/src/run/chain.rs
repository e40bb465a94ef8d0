//! The candidate chain.

use std::time::{Duration, Instant};

use chrono::Utc;

use super::attempt::{check_output, retry_delays};
use super::budget::left_of;
use super::ladder::{Call, ChainEnd, Ladder, LlmContext, Success};
use super::{Engine, lock, ms};
use crate::breaker::{Admission, CallOutcome};
use crate::events::Event;
use crate::provider::{ChatRequest, ErrorAction, Locality, ProviderError, ProviderErrorKind};
use crate::select::Candidate;
use crate::store::{AttemptRecord, FallbackRecord, StepRecord};

impl Engine {
    /// Tries candidates in order; on each, attempts follow the error taxonomy.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn chain(
        &self,
        cx: &LlmContext,
        rec: &mut StepRecord,
        lad: &mut Ladder,
        call: &Call,
        candidates: &[Candidate],
        all_breakers_open: bool,
        retries: bool,
        rung: &str,
    ) -> Result<Success, ChainEnd> {
        let mut tried_any = false;
        for (ci, cand) in candidates.iter().enumerate() {
            let next = candidates.get(ci + 1).map(|c| c.reference.clone());
            let move_on = |rec: &mut StepRecord, reason: String| {
                if let Some(to) = &next {
                    rec.fallbacks.push(FallbackRecord {
                        from: cand.reference.clone(),
                        to: to.clone(),
                        reason: reason.clone(),
                        rung: rung.to_string(),
                    });
                    cx.sh.emitter.emit(Event::FallbackTaken {
                        run_id: cx.sh.run_id.clone(),
                        step_id: cx.step.id.clone(),
                        from: cand.reference.clone(),
                        to: to.clone(),
                        reason,
                    });
                }
            };
            // Privacy: a local_only step never reaches a cloud model, whatever the
            // selector returned.
            if cx.llm.model.local_only && cand.locality() == Locality::Cloud {
                move_on(rec, "cloud model refused: local_only".into());
                continue;
            }
            lad.last_model = Some(cand.reference.clone());
            let mut call = call.clone();
            // Guardrails tied to routing: `scope: cloud` rules scrub or block the text on
            // its way to a cloud model; a block moves on to the next (local) model.
            if cand.locality() == Locality::Cloud
                && let Some(policy) = &cx.sh.guard_cloud
            {
                match self.guard_for_cloud(cx, rec, lad, policy, &call.messages) {
                    Ok(messages) => call.messages = messages,
                    Err(e) => {
                        move_on(rec, e.to_string());
                        lad.last_error = Some(e);
                        continue;
                    }
                }
            }
            let mut delays = retry_delays(&cx.step.retry);
            let mut tries = 0u32;
            let mut repaired = false;
            let mut dropped = false;
            loop {
                // Budgets, before the call: check and reserve under one lock.
                let projected = call.est_prompt + u64::from(call.max_tokens);
                let est_cost = cand.cost_usd(call.est_prompt, call.max_tokens.into());
                let refused = {
                    let mut run = lock(&cx.sh.spend);
                    let (tokens_left, cost_left) = left_of(
                        cx.sh.budget.as_ref(),
                        cx.llm.budget.as_ref(),
                        &run,
                        &lad.spend,
                    );
                    match (tokens_left, cost_left) {
                        (Some(left), _) if projected > left => Some((
                            true,
                            format!(
                                "the call would use ~{projected} tokens but only {left} are left in the budget"
                            ),
                        )),
                        (_, Some(left)) if est_cost > left => Some((
                            false,
                            format!(
                                "projected cost ${est_cost:.6} exceeds the ${left:.6} left in the budget"
                            ),
                        )),
                        _ => {
                            run.reserved_tokens += projected;
                            run.reserved_cost_usd += est_cost;
                            None
                        }
                    }
                };
                if let Some((tokens, message)) = refused {
                    let e = ProviderError::new(ProviderErrorKind::BudgetExceeded, message);
                    lad.last_error = Some(e.clone());
                    if tokens {
                        return Err(ChainEnd::Stop(e));
                    }
                    move_on(rec, e.to_string());
                    break;
                }
                // The breaker.
                let admission = {
                    let mut b = lock(&self.breakers);
                    match b.try_acquire(&cand.reference, Utc::now()) {
                        Ok(a) => Some(a),
                        Err(_) if all_breakers_open => Some(Admission::Normal),
                        // The last candidate of a chain in which no model could be tried:
                        // try it anyway rather than fail without trying (Portkey).
                        Err(_) if ci + 1 == candidates.len() && !tried_any => {
                            Some(Admission::Normal)
                        }
                        Err(until) => {
                            drop(b);
                            let e = ProviderError::new(
                                ProviderErrorKind::Unavailable,
                                format!(
                                    "circuit breaker of {} open until {}",
                                    cand.reference,
                                    until.to_rfc3339()
                                ),
                            );
                            move_on(rec, e.message.clone());
                            lad.last_error = Some(e);
                            None
                        }
                    }
                };
                let Some(admission) = admission else {
                    lock(&cx.sh.spend).release(projected, est_cost);
                    break;
                };
                tried_any = true;

                lad.attempt_no += 1;
                tries += 1;
                cx.sh.emitter.emit(Event::StepStarted {
                    run_id: cx.sh.run_id.clone(),
                    step_id: cx.step.id.clone(),
                    attempt: lad.attempt_no,
                    model: Some(cand.reference.clone()),
                });
                let request = ChatRequest {
                    model: cand.model.clone(),
                    messages: call.messages.clone(),
                    temperature: cx.llm.temperature,
                    max_tokens: call.max_tokens,
                    json_schema: call.json_schema.clone(),
                };
                let a_start = Utc::now();
                let a_t0 = Instant::now();
                let result = self.attempt(cx, cand, request).await;
                let duration_ms = ms(a_t0.elapsed());
                let mut usage_cost = 0.0;
                if let Ok(out) = &result {
                    lad.spend.tokens += out.usage.prompt_tokens + out.usage.completion_tokens;
                    usage_cost =
                        cand.cost_usd(out.usage.prompt_tokens, out.usage.completion_tokens);
                    lad.spend.cost_usd += usage_cost;
                    let mut run = lock(&cx.sh.spend);
                    run.tokens += out.usage.prompt_tokens + out.usage.completion_tokens;
                    run.cost_usd += usage_cost;
                }
                let _ = usage_cost;
                let result = result.and_then(|out| {
                    let call_json = call.json_schema.is_some() || cx.llm.output_schema.is_some();
                    check_output(&cx.llm, out, call_json)
                });
                let mut attempt = AttemptRecord {
                    attempt: lad.attempt_no,
                    model: Some(cand.reference.clone()),
                    started_at: a_start,
                    duration_ms,
                    first_token_ms: None,
                    error_kind: None,
                    error_message: None,
                    usage: None,
                };
                // The breaker and the statistics.
                let (outcome, latency) = match &result {
                    Ok((out, _)) => (
                        CallOutcome::Success,
                        out.first_token_ms.or(Some(duration_ms)),
                    ),
                    Err((e, ftm)) if e.kind.counts_for_breaker() => (
                        CallOutcome::Failure {
                            retry_after: e.retry_after,
                        },
                        ftm.or(Some(duration_ms)),
                    ),
                    Err(_) => (CallOutcome::Ignored, None),
                };
                self.observe(
                    cx,
                    &cand.reference,
                    admission,
                    outcome,
                    latency,
                    result.as_ref().err().map(|(e, _)| e.to_string()),
                )
                .await;

                match result {
                    Ok((out, json)) => {
                        attempt.first_token_ms = out.first_token_ms;
                        attempt.usage = Some(out.usage);
                        rec.attempts.push(attempt);
                        return Ok(Success {
                            text: out.text,
                            json,
                            usage: out.usage,
                            reference: cand.reference.clone(),
                            reason: cand.reason.clone(),
                            score: cand.score,
                        });
                    }
                    Err((err, first_token_ms)) => {
                        attempt.first_token_ms = first_token_ms;
                        attempt.error_kind = Some(err.kind);
                        attempt.error_message = Some(err.message.clone());
                        rec.attempts.push(attempt);
                        lad.last_error = Some(err.clone());
                        let action = err.kind.action();
                        // What to do, per the taxonomy.
                        let mut retry_in: Option<Duration> = None;
                        let mut fall_back_reason: Option<String> = None;
                        match action {
                            ErrorAction::Stop => {
                                cx.sh
                                    .emitter
                                    .emit(attempt_failed(cx, lad, cand, &err, None));
                                return Err(ChainEnd::Stop(err));
                            }
                            ErrorAction::FallBack | ErrorAction::LargerContext => {
                                fall_back_reason = Some(format!("{} ({})", err.kind, err.message));
                            }
                            ErrorAction::DropParameter => {
                                if !dropped && call.json_schema.is_some() {
                                    dropped = true;
                                    call.json_schema = None;
                                    if let Some(last) = call.messages.last_mut() {
                                        last.content.push_str(&cx.llm.schema_note());
                                    }
                                    retry_in = Some(Duration::ZERO);
                                } else {
                                    fall_back_reason =
                                        Some(format!("{} ({})", err.kind, err.message));
                                }
                            }
                            ErrorAction::RepairThenFallBack => {
                                if !repaired {
                                    repaired = true;
                                    if let Some(last) = call.messages.last_mut() {
                                        last.content.push_str(&format!(
                                            "\n\nYour previous reply was not valid ({}). Reply again with only the requested content{}.",
                                            err.message,
                                            if cx.llm.output_schema.is_some() { ", as JSON that follows the schema" } else { "" }
                                        ));
                                    }
                                    retry_in = Some(Duration::ZERO);
                                } else {
                                    fall_back_reason = Some(format!(
                                        "{} after a repair attempt: {}",
                                        err.kind, err.message
                                    ));
                                }
                            }
                            ErrorAction::WaitThenRetry | ErrorAction::RetryWithBackoff => {
                                let backoff = if retries && tries < cx.step.retry.max_attempts {
                                    delays.next()
                                } else {
                                    None
                                };
                                match (backoff, err.retry_after) {
                                    (Some(_), Some(ra)) if ra > self.config.max_retry_after => {
                                        fall_back_reason = Some(format!(
                                            "{}: Retry-After {} ms is over the {} ms cap ({})",
                                            err.kind,
                                            ms(ra),
                                            ms(self.config.max_retry_after),
                                            err.message
                                        ));
                                    }
                                    (Some(b), ra) => retry_in = Some(b.max(ra.unwrap_or_default())),
                                    (None, _) => {
                                        fall_back_reason = Some(format!(
                                            "{} after {tries} attempt(s): {}",
                                            err.kind, err.message
                                        ));
                                    }
                                }
                            }
                        }
                        cx.sh
                            .emitter
                            .emit(attempt_failed(cx, lad, cand, &err, retry_in));
                        if let Some(delay) = retry_in {
                            tokio::select! {
                                () = tokio::time::sleep(delay) => continue,
                                () = cx.cancel.cancelled() => {
                                    return Err(ChainEnd::Stop(ProviderError::new(ProviderErrorKind::Cancelled, "cancelled")));
                                }
                            }
                        }
                        move_on(rec, fall_back_reason.unwrap_or_else(|| err.to_string()));
                        break;
                    }
                }
            }
        }
        Err(ChainEnd::Exhausted)
    }

    /// Records an attempt's outcome in the breaker and the statistics, and persists them.
    pub(super) async fn observe(
        &self,
        cx: &LlmContext,
        key: &str,
        admission: Admission,
        outcome: CallOutcome,
        latency_ms: Option<u64>,
        message: Option<String>,
    ) {
        let now = Utc::now();
        let (transition, snapshot) = {
            let mut b = lock(&self.breakers);
            let t = b.record(key, now, admission, outcome, message.as_deref());
            (t, b.snapshot(key))
        };
        let stats = if outcome == CallOutcome::Ignored {
            None
        } else {
            let mut s = lock(&self.stats);
            let entry = s.entry(key.to_string()).or_default();
            entry.observe(outcome == CallOutcome::Success, latency_ms, now);
            Some(*entry)
        };
        if let Some(t) = transition {
            cx.sh.emitter.emit(Event::BreakerChanged {
                model: key.to_string(),
                transition: t,
            });
        }
        if let Some(store) = &self.store {
            if let Some(snap) = snapshot
                && let Err(e) = store.save_breaker(key, &snap).await
            {
                tracing::warn!("cannot store the breaker of {key}: {e}");
            }
            if let Some(stats) = stats
                && let Err(e) = store.save_model_stats(key, &stats).await
            {
                tracing::warn!("cannot store the statistics of {key}: {e}");
            }
        }
    }
}

pub(super) fn attempt_failed(
    cx: &LlmContext,
    lad: &Ladder,
    cand: &Candidate,
    err: &ProviderError,
    retry_in: Option<Duration>,
) -> Event {
    Event::AttemptFailed {
        run_id: cx.sh.run_id.clone(),
        step_id: cx.step.id.clone(),
        attempt: lad.attempt_no,
        model: Some(cand.reference.clone()),
        error_kind: err.kind,
        message: err.message.clone(),
        // Rounded: backon multiplies in f32, so 20 ms × 3 is 59.99… ms.
        retry_in_ms: retry_in.map(|d| (d.as_secs_f64() * 1000.0).round() as u64),
    }
}
