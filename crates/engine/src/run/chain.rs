//! The candidate chain: the selector's ranked models tried in order, each behind its
//! circuit breaker and the budgets, each failed attempt handled as the error taxonomy says
//! (retry the same model with backoff, repair, drop a parameter, fall back, or stop).
//!
//! Invariants: a call's projected tokens and cost are reserved against the run's budget
//! before it is made and given back when the attempt ends (the real usage is counted
//! instead); a `local_only` step never reaches a cloud model; retries apply to single
//! calls, never to the chain.

use std::time::{Duration, Instant};

use chrono::Utc;

use super::attempt::{check_output, retry_delays};
use super::budget::Reservation;
use super::ladder::{Call, ChainEnd, Ladder, LlmContext, Success};
use super::{Engine, agent_protocol, lock, ms};
use crate::breaker::{Admission, CallOutcome};
use crate::events::Event;
use crate::provider::{
    ChatRequest, ErrorAction, Locality, ProviderError, ProviderErrorKind, ToolChoice,
};
use crate::select::Candidate;
use crate::store::{AttemptRecord, FallbackRecord, StepRecord};

/// Moves a step from one candidate to the next of its chain, recording why.
struct MoveOn<'a> {
    cx: &'a LlmContext,
    from: &'a str,
    to: Option<&'a str>,
    rung: &'a str,
}

impl MoveOn<'_> {
    /// Records the fallback (when there is a next candidate) and announces it.
    fn record(&self, rec: &mut StepRecord, reason: String) {
        let Some(to) = self.to else { return };
        rec.fallbacks.push(FallbackRecord {
            from: self.from.to_string(),
            to: to.to_string(),
            reason: reason.clone(),
            rung: self.rung.to_string(),
        });
        self.cx.sh.emitter.emit(Event::FallbackTaken {
            run_id: self.cx.sh.run_id.clone(),
            step_id: self.cx.step.id.clone(),
            from: self.from.to_string(),
            to: to.to_string(),
            reason,
            rung: self.rung.to_string(),
        });
    }
}

/// How the attempts on one candidate ended without success.
enum CandidateEnd {
    /// Go on with the next candidate (the reason is recorded already).
    Next,
    /// Stop the chain (cancel, guardrail block, token budget).
    Stop(ProviderError),
}

/// What the taxonomy says to do after a failed attempt.
enum NextMove {
    /// Try the same candidate again after this delay.
    Retry(Duration),
    /// Fall back to the next candidate, for this reason.
    FallBack(String),
    /// Stop the chain.
    Stop,
}

/// Per-candidate state of the retry rung.
struct Retries {
    delays: Box<dyn Iterator<Item = Duration> + Send>,
    tries: u32,
    repaired: bool,
    dropped: bool,
    enabled: bool,
}

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
            let mover = MoveOn {
                cx,
                from: &cand.reference,
                to: candidates.get(ci + 1).map(|c| c.reference.as_str()),
                rung,
            };
            // Privacy: a local_only step never reaches a cloud model, whatever the
            // selector returned.
            if cx.llm.model.local_only && cand.locality() == Locality::Cloud {
                mover.record(rec, "cloud model refused: local_only".into());
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
                        mover.record(rec, e.to_string());
                        lad.last_error = Some(e);
                        continue;
                    }
                }
            }
            // An open breaker is passed when every candidate's is open, and for the last
            // candidate of a chain in which no model could be tried: try it rather than
            // fail without trying (Portkey).
            let force = all_breakers_open || (ci + 1 == candidates.len() && !tried_any);
            let mut state = Retries {
                delays: Box::new(retry_delays(&cx.step.retry)),
                tries: 0,
                repaired: false,
                dropped: false,
                enabled: retries,
            };
            match self
                .on_candidate(
                    cx,
                    rec,
                    lad,
                    &mut call,
                    cand,
                    &mover,
                    force,
                    &mut state,
                    &mut tried_any,
                )
                .await
            {
                Ok(success) => return Ok(success),
                Err(CandidateEnd::Stop(e)) => return Err(ChainEnd::Stop(e)),
                Err(CandidateEnd::Next) => {}
            }
        }
        Err(ChainEnd::Exhausted)
    }

    /// Attempts on one candidate until one succeeds or the taxonomy says to move on.
    #[allow(clippy::too_many_arguments)]
    async fn on_candidate(
        &self,
        cx: &LlmContext,
        rec: &mut StepRecord,
        lad: &mut Ladder,
        call: &mut Call,
        cand: &Candidate,
        mover: &MoveOn<'_>,
        force: bool,
        state: &mut Retries,
        tried_any: &mut bool,
    ) -> Result<Success, CandidateEnd> {
        loop {
            // Budgets, before the call: checked and reserved under one lock; the
            // reservation is given back when the attempt ends, whatever its outcome.
            let projected = call.est_prompt + u64::from(call.max_tokens);
            let est_cost = cand.cost_usd(call.est_prompt, call.max_tokens.into());
            let reservation = match Reservation::take(cx, &lad.spend, projected, est_cost) {
                Ok(r) => r,
                Err(refusal) => {
                    let e = ProviderError::new(ProviderErrorKind::BudgetExceeded, refusal.message);
                    lad.last_error = Some(e.clone());
                    if refusal.tokens {
                        return Err(CandidateEnd::Stop(e));
                    }
                    mover.record(rec, e.to_string());
                    return Err(CandidateEnd::Next);
                }
            };
            let Some(admission) = self.admit(cand, force, mover, rec, lad) else {
                return Err(CandidateEnd::Next);
            };
            *tried_any = true;
            lad.attempt_no += 1;
            state.tries += 1;
            let result = self.call_once(cx, rec, lad, call, cand, admission).await;
            drop(reservation);
            let err = match result {
                Ok(success) => return Ok(success),
                Err(err) => err,
            };
            let next = self.next_move(cx, call, &err, state);
            let retry_in = match &next {
                NextMove::Retry(d) => Some(*d),
                _ => None,
            };
            cx.sh
                .emitter
                .emit(attempt_failed(cx, lad, cand, &err, retry_in));
            match next {
                NextMove::Stop => return Err(CandidateEnd::Stop(err)),
                NextMove::FallBack(reason) => {
                    mover.record(rec, reason);
                    return Err(CandidateEnd::Next);
                }
                NextMove::Retry(delay) => {
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = cx.cancel.cancelled() => {
                            return Err(CandidateEnd::Stop(ProviderError::new(
                                ProviderErrorKind::Cancelled,
                                "cancelled",
                            )));
                        }
                    }
                }
            }
        }
    }

    /// The candidate's circuit breaker: the admission, or `None` (recorded as a fallback)
    /// while it is open and `force` is false.
    fn admit(
        &self,
        cand: &Candidate,
        force: bool,
        mover: &MoveOn<'_>,
        rec: &mut StepRecord,
        lad: &mut Ladder,
    ) -> Option<Admission> {
        let mut b = lock(&self.breakers);
        match b.try_acquire(&cand.reference, Utc::now()) {
            Ok(a) => Some(a),
            Err(_) if force => Some(Admission::Normal),
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
                mover.record(rec, e.message.clone());
                lad.last_error = Some(e);
                None
            }
        }
    }

    /// One model call: the attempt under the step's timeouts, its usage counted, its
    /// output checked, the attempt recorded, the breaker and statistics told.
    async fn call_once(
        &self,
        cx: &LlmContext,
        rec: &mut StepRecord,
        lad: &mut Ladder,
        call: &Call,
        cand: &Candidate,
        admission: Admission,
    ) -> Result<Success, ProviderError> {
        cx.sh.emitter.emit(Event::StepStarted {
            run_id: cx.sh.run_id.clone(),
            step_id: cx.step.id.clone(),
            attempt: lad.attempt_no,
            model: Some(cand.reference.clone()),
        });
        let strategy = call
            .tools
            .as_ref()
            .map(|_| agent_protocol::Strategy::for_candidate(cand));
        let mut request = ChatRequest {
            model: cand.model.clone(),
            messages: call.messages.clone(),
            temperature: cx.llm.temperature,
            max_tokens: call.max_tokens,
            json_schema: call.json_schema.clone(),
            think: cx.llm.think,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
        };
        if let (Some(specs), Some(strategy)) = (&call.tools, strategy) {
            agent_protocol::shape_request(&mut request, specs, strategy);
        }
        let a_start = Utc::now();
        let a_t0 = Instant::now();
        let result = self.attempt(cx, cand, request).await;
        let duration_ms = ms(a_t0.elapsed());
        if let Ok(out) = &result {
            let tokens = out.usage.prompt_tokens + out.usage.completion_tokens;
            let cost = cand.cost_usd(out.usage.prompt_tokens, out.usage.completion_tokens);
            lad.spend.tokens += tokens;
            lad.spend.cost_usd += cost;
            let mut run = lock(&cx.sh.spend);
            run.tokens += tokens;
            run.cost_usd += cost;
        }
        let result = result.and_then(|out| match strategy {
            Some(strategy) => agent_protocol::decode_turn(&cx.llm, strategy, out),
            None => {
                let call_json = call.json_schema.is_some() || cx.llm.output_schema.is_some();
                check_output(&cx.llm, out, call_json).map(|(out, json)| (out, json, None))
            }
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
            Ok((out, _, _)) => (
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
            Ok((out, json, used)) => {
                attempt.first_token_ms = out.first_token_ms;
                attempt.usage = Some(out.usage);
                rec.attempts.push(attempt);
                Ok(Success {
                    text: out.text,
                    reasoning: out.reasoning,
                    json,
                    usage: out.usage,
                    reference: cand.reference.clone(),
                    reason: cand.reason.clone(),
                    score: cand.score,
                    tool_calls: out.tool_calls,
                    strategy: used,
                })
            }
            Err((err, first_token_ms)) => {
                attempt.first_token_ms = first_token_ms;
                attempt.error_kind = Some(err.kind);
                attempt.error_message = Some(err.message.clone());
                rec.attempts.push(attempt);
                lad.last_error = Some(err.clone());
                Err(err)
            }
        }
    }

    /// What to do after a failed attempt, per the error taxonomy
    /// ([`crate::provider::TAXONOMY`]); a repair or a dropped parameter changes `call`.
    fn next_move(
        &self,
        cx: &LlmContext,
        call: &mut Call,
        err: &ProviderError,
        state: &mut Retries,
    ) -> NextMove {
        let fall_back = || NextMove::FallBack(format!("{} ({})", err.kind, err.message));
        match err.kind.action() {
            ErrorAction::Stop => NextMove::Stop,
            ErrorAction::FallBack | ErrorAction::LargerContext => fall_back(),
            ErrorAction::DropParameter => {
                if state.dropped || call.json_schema.is_none() {
                    return fall_back();
                }
                state.dropped = true;
                call.json_schema = None;
                if let Some(last) = call.messages.last_mut() {
                    last.content.push_str(&cx.llm.schema_note());
                }
                NextMove::Retry(Duration::ZERO)
            }
            ErrorAction::RepairThenFallBack => {
                if state.repaired {
                    return NextMove::FallBack(format!(
                        "{} after a repair attempt: {}",
                        err.kind, err.message
                    ));
                }
                state.repaired = true;
                if let Some(last) = call.messages.last_mut() {
                    last.content.push_str(&format!(
                        "\n\nYour previous reply was not valid ({}). Reply again with only the requested content{}.",
                        err.message,
                        if cx.llm.output_schema.is_some() {
                            ", as JSON that follows the schema"
                        } else {
                            ""
                        }
                    ));
                }
                NextMove::Retry(Duration::ZERO)
            }
            ErrorAction::WaitThenRetry | ErrorAction::RetryWithBackoff => {
                let backoff = if state.enabled && state.tries < cx.step.retry.max_attempts {
                    state.delays.next()
                } else {
                    None
                };
                match (backoff, err.retry_after) {
                    (Some(_), Some(ra)) if ra > self.config.max_retry_after => {
                        NextMove::FallBack(format!(
                            "{}: Retry-After {} ms is over the {} ms cap ({})",
                            err.kind,
                            ms(ra),
                            ms(self.config.max_retry_after),
                            err.message
                        ))
                    }
                    (Some(b), ra) => NextMove::Retry(b.max(ra.unwrap_or_default())),
                    (None, _) => NextMove::FallBack(format!(
                        "{} after {} attempt(s): {}",
                        err.kind, state.tries, err.message
                    )),
                }
            }
        }
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
