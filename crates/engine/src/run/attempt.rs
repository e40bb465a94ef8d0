//! One attempt.

use std::sync::Mutex;
use std::time::Duration;

use backon::BackoffBuilder;
use futures::StreamExt;

use super::ladder::LlmContext;
use super::{Engine, ms};
use crate::events::Event;
use crate::plan::LlmAction;
use crate::provider::{ChatChunk, ChatRequest, ProviderError, ProviderErrorKind, Usage};
use crate::select::Candidate;
use crate::workflow::{RetryPolicy, Timeouts};

/// Outcome of one attempt.
pub(super) struct AttemptOutput {
    pub(super) text: String,
    /// The reasoning of a thinking model, apart from `text` (empty when none).
    pub(super) reasoning: String,
    pub(super) usage: Usage,
    pub(super) first_token_ms: Option<u64>,
    /// The tool calls of the reply, in order (only when the request offered tools).
    pub(super) tool_calls: Vec<crate::provider::ToolCall>,
    /// The provider said generation stopped at the token cap (`finish_reason: length`,
    /// Ollama's `done_reason: length`): a JSON reply that does not parse was cut short.
    pub(super) cut_at_max_tokens: bool,
}

/// Builds the backoff delays of a retry policy (one per retry) with `backon`.
pub fn retry_delays(policy: &RetryPolicy) -> impl Iterator<Item = Duration> + use<> {
    let mut b = backon::ExponentialBuilder::default()
        .with_min_delay(policy.initial_interval)
        .with_max_delay(policy.max_interval)
        .with_factor(policy.backoff_coefficient)
        .with_max_times(policy.max_attempts.saturating_sub(1) as usize);
    if policy.jitter {
        b = b.with_jitter();
    }
    b.build()
}

impl Engine {
    /// One attempt on one candidate, under the step's timeouts and the run's cancel
    /// token, inside a `tracing` span `attempt` (field `model`).
    pub(super) async fn attempt(
        &self,
        cx: &LlmContext,
        cand: &Candidate,
        request: ChatRequest,
    ) -> Result<AttemptOutput, (ProviderError, Option<u64>)> {
        use tracing::Instrument;
        let span = tracing::info_span!("attempt", model = %cand.reference);
        self.attempt_in_span(cx, cand, request)
            .instrument(span)
            .await
    }

    async fn attempt_in_span(
        &self,
        cx: &LlmContext,
        cand: &Candidate,
        request: ChatRequest,
    ) -> Result<AttemptOutput, (ProviderError, Option<u64>)> {
        let slot = self.slot(cand);
        let _permit = tokio::select! {
            p = slot.acquire_owned() => p.map_err(|_| (ProviderError::new(ProviderErrorKind::Internal, "provider slot closed"), None))?,
            () = cx.cancel.cancelled() => return Err((ProviderError::new(ProviderErrorKind::Cancelled, "cancelled while waiting for the model"), None)),
        };
        let timeouts: &Timeouts = &cx.step.timeouts;
        let start = tokio::time::Instant::now();
        let first_token_at: Mutex<Option<u64>> = Mutex::new(None);
        let work = async {
            // An absurd timeout (years) means no deadline rather than an overflow.
            let first_deadline = timeouts.first_token.and_then(|d| start.checked_add(d));
            let open = cand.provider.chat(request);
            let mut stream = match first_deadline {
                Some(deadline) => {
                    tokio::time::timeout_at(deadline, open)
                        .await
                        .map_err(|_| {
                            ProviderError::new(
                                ProviderErrorKind::Timeout,
                                format!(
                                    "no first token within {} ms",
                                    ms(timeouts.first_token.unwrap_or_default())
                                ),
                            )
                        })??
                }
                None => open.await?,
            };
            let mut text = String::new();
            let mut reasoning = String::new();
            let mut calls = Vec::new();
            let mut seen_token = false;
            loop {
                let deadline = if seen_token {
                    timeouts
                        .idle
                        .and_then(|d| tokio::time::Instant::now().checked_add(d))
                } else {
                    first_deadline
                };
                let next = match deadline {
                    Some(deadline) => tokio::time::timeout_at(deadline, stream.next())
                        .await
                        .map_err(|_| {
                            if seen_token {
                                ProviderError::new(
                                    ProviderErrorKind::Timeout,
                                    format!(
                                        "no token for {} ms (idle timeout)",
                                        ms(timeouts.idle.unwrap_or_default())
                                    ),
                                )
                            } else {
                                ProviderError::new(
                                    ProviderErrorKind::Timeout,
                                    format!(
                                        "no first token within {} ms",
                                        ms(timeouts.first_token.unwrap_or_default())
                                    ),
                                )
                            }
                        })?,
                    None => stream.next().await,
                };
                match next {
                    Some(Ok(ChatChunk::Delta(t))) => {
                        if !seen_token {
                            seen_token = true;
                            if let Ok(mut f) = first_token_at.lock() {
                                *f = Some(ms(start.elapsed()));
                            }
                        }
                        if t.is_empty() {
                            continue;
                        }
                        text.push_str(&t);
                        cx.sh.emitter.emit(Event::Token {
                            run_id: cx.sh.run_id.clone(),
                            step_id: cx.step.id.clone(),
                            text: t,
                        });
                    }
                    // Reasoning is activity: it counts for the first-token and idle
                    // timeouts (a thinking model's answer may come minutes later).
                    Some(Ok(ChatChunk::Reasoning(t))) => {
                        if !seen_token {
                            seen_token = true;
                            if let Ok(mut f) = first_token_at.lock() {
                                *f = Some(ms(start.elapsed()));
                            }
                        }
                        if t.is_empty() {
                            continue;
                        }
                        reasoning.push_str(&t);
                        cx.sh.emitter.emit(Event::Reasoning {
                            run_id: cx.sh.run_id.clone(),
                            step_id: cx.step.id.clone(),
                            text: t,
                        });
                    }
                    // A call is activity too; an `llm` step offers no tools, so there it is
                    // a stray, dropped by the caller.
                    Some(Ok(ChatChunk::ToolCall(call))) => {
                        if !seen_token {
                            seen_token = true;
                            if let Ok(mut f) = first_token_at.lock() {
                                *f = Some(ms(start.elapsed()));
                            }
                        }
                        calls.push(call);
                    }
                    Some(Ok(ChatChunk::Done {
                        usage,
                        finish_reason,
                    })) => {
                        let cut = finish_reason.as_deref() == Some("length");
                        return Ok((text, reasoning, usage, calls, cut));
                    }
                    Some(Err(mut e)) => {
                        // A break after content is its own class (a fresh request, never
                        // a continuation).
                        if seen_token
                            && matches!(
                                e.kind,
                                ProviderErrorKind::Protocol | ProviderErrorKind::Transient
                            )
                        {
                            e.kind = ProviderErrorKind::StreamBroken;
                        }
                        return Err(e);
                    }
                    None => {
                        return Err(ProviderError::new(
                            if seen_token {
                                ProviderErrorKind::StreamBroken
                            } else {
                                ProviderErrorKind::Protocol
                            },
                            "the stream ended before the completion was done",
                        ));
                    }
                }
            }
        };
        let bounded = async {
            match timeouts.total {
                Some(total) => tokio::time::timeout(total, work).await.unwrap_or_else(|_| {
                    Err(ProviderError::new(
                        ProviderErrorKind::Timeout,
                        format!("attempt exceeded the total timeout of {} ms", ms(total)),
                    ))
                }),
                None => work.await,
            }
        };
        let result = tokio::select! {
            r = bounded => r,
            () = cx.cancel.cancelled() => Err(ProviderError::new(ProviderErrorKind::Cancelled, "cancelled")),
        };
        let first_token_ms = first_token_at.lock().ok().and_then(|f| *f);
        match result {
            Ok((text, reasoning, usage, tool_calls, cut_at_max_tokens)) => Ok(AttemptOutput {
                text,
                reasoning,
                usage,
                first_token_ms,
                tool_calls,
                cut_at_max_tokens,
            }),
            Err(e) => Err((e, first_token_ms)),
        }
    }
}

/// Checks an attempt's output: not empty, and valid against the output schema if any.
/// What to add to an unreadable reply's error when the provider cut it at the token cap:
/// the JSON never closed, so the fix is a larger `max_tokens`, not a different prompt.
pub(super) fn cut_note(llm: &LlmAction, out: &AttemptOutput) -> String {
    if out.cut_at_max_tokens {
        format!(
            "; the reply was cut at `max_tokens` ({}) before it was complete: raise the step's `max_tokens`",
            llm.max_tokens
        )
    } else {
        String::new()
    }
}

pub(super) fn check_output(
    llm: &LlmAction,
    out: AttemptOutput,
    _json_requested: bool,
) -> Result<(AttemptOutput, Option<serde_json::Value>), (ProviderError, Option<u64>)> {
    let ftm = out.first_token_ms;
    if out.text.trim().is_empty() {
        return Err((
            ProviderError::new(
                ProviderErrorKind::InvalidOutput,
                "the model returned no text",
            ),
            ftm,
        ));
    }
    let Some((_, validator)) = &llm.output_schema else {
        return Ok((out, None));
    };
    let json = match parse_json_reply(&out.text) {
        Ok(v) => v,
        Err(e) => {
            return Err((
                ProviderError::new(
                    ProviderErrorKind::InvalidOutput,
                    format!("reply is not JSON: {e}{}", cut_note(llm, &out)),
                ),
                ftm,
            ));
        }
    };
    let errors: Vec<String> = validator
        .iter_errors(&json)
        .take(3)
        .map(|e| format!("{} at `{}`", e, e.instance_path()))
        .collect();
    if !errors.is_empty() {
        return Err((
            ProviderError::new(
                ProviderErrorKind::InvalidOutput,
                format!(
                    "reply does not match the output schema: {}",
                    errors.join("; ")
                ),
            ),
            ftm,
        ));
    }
    Ok((out, Some(json)))
}

/// Parses a model's JSON reply, tolerating a surrounding Markdown code fence.
pub(super) fn parse_json_reply(text: &str) -> Result<serde_json::Value, serde_json::Error> {
    let t = text.trim();
    let t = t
        .strip_prefix("```json")
        .or_else(|| t.strip_prefix("```"))
        .map(|r| r.trim_end().trim_end_matches("```"))
        .unwrap_or(t);
    serde_json::from_str(t.trim())
}
