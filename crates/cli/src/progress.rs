//! Live progress of a run in the terminal: one spinner per running step, the tokens of
//! the focused step (the one that started last) streaming in its line, and one line per
//! finished step. When stderr is not a terminal, plain lines are printed instead.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use nexus_app::engine::Plan;
use nexus_app::engine::events::{Event, EventSink};

struct Running {
    bar: ProgressBar,
    model: String,
    tail: String,
    tokens: u64,
    /// Reasoning tokens of a thinking model, streamed apart from the answer.
    thinking: u64,
}

/// The CLI's event sink.
pub struct Progress {
    multi: MultiProgress,
    tty: bool,
    running: Mutex<HashMap<String, Running>>,
    focused: Mutex<Option<String>>,
}

impl Progress {
    /// The progress display, so prompts can suspend it while they read the terminal.
    pub fn multi(&self) -> MultiProgress {
        self.multi.clone()
    }

    /// A progress display for a run of `plan`.
    pub fn new(_plan: &Plan) -> Self {
        let tty = std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if tty {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        Progress {
            multi,
            tty,
            running: Mutex::new(HashMap::new()),
            focused: Mutex::new(None),
        }
    }

    fn line(&self, text: String) {
        if self.tty {
            let _ = self.multi.println(text);
        } else {
            eprintln!("{text}");
        }
    }

    /// Clears the spinners.
    pub fn finish(&self) {
        if let Ok(mut running) = self.running.lock() {
            for (_, r) in running.drain() {
                r.bar.finish_and_clear();
            }
        }
        let _ = self.multi.clear();
    }
}

fn tail(s: &str, n: usize) -> String {
    let flat: String = s.chars().map(|c| if c == '\n' { ' ' } else { c }).collect();
    let count = flat.chars().count();
    flat.chars().skip(count.saturating_sub(n)).collect()
}

impl EventSink for Progress {
    fn emit(&self, event: &Event) {
        match event {
            Event::RunStarted {
                run_id,
                workflow_id,
                steps,
            } => {
                self.line(format!("▶ run {run_id} of `{workflow_id}` ({steps} steps)"));
            }
            Event::StepStarted {
                step_id,
                attempt,
                model,
                ..
            } => {
                let model = model.clone().unwrap_or_default();
                if !self.tty {
                    self.line(format!(
                        "  … {step_id} started (attempt {attempt}{})",
                        if model.is_empty() {
                            String::new()
                        } else {
                            format!(" on {model}")
                        }
                    ));
                }
                if let Ok(mut running) = self.running.lock() {
                    let bar = running.remove(step_id).map(|r| r.bar).unwrap_or_else(|| {
                        let bar = self.multi.add(ProgressBar::new_spinner());
                        bar.set_style(
                            ProgressStyle::with_template("{spinner} {prefix:.bold} {msg}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        );
                        bar.enable_steady_tick(Duration::from_millis(120));
                        bar.set_prefix(step_id.clone());
                        bar
                    });
                    bar.set_message(format!("{model} · attempt {attempt}"));
                    running.insert(
                        step_id.clone(),
                        Running {
                            bar,
                            model,
                            tail: String::new(),
                            tokens: 0,
                            thinking: 0,
                        },
                    );
                }
                if let Ok(mut f) = self.focused.lock() {
                    *f = Some(step_id.clone());
                }
            }
            Event::Token { step_id, text, .. } => {
                let focused = self.focused.lock().ok().and_then(|f| f.clone());
                if let Ok(mut running) = self.running.lock()
                    && let Some(r) = running.get_mut(step_id)
                {
                    r.tokens += 1;
                    r.tail.push_str(text);
                    if r.tail.len() > 400 {
                        r.tail = tail(&r.tail, 200);
                    }
                    let msg = if focused.as_deref() == Some(step_id.as_str()) {
                        format!("{} · {} tok · {}", r.model, r.tokens, tail(&r.tail, 60))
                    } else {
                        format!("{} · {} tok", r.model, r.tokens)
                    };
                    r.bar.set_message(msg);
                }
            }
            Event::Reasoning { step_id, text, .. } => {
                let focused = self.focused.lock().ok().and_then(|f| f.clone());
                let mut first = false;
                if let Ok(mut running) = self.running.lock()
                    && let Some(r) = running.get_mut(step_id)
                {
                    first = r.thinking == 0;
                    r.thinking += 1;
                    r.tail.push_str(text);
                    if r.tail.len() > 400 {
                        r.tail = tail(&r.tail, 200);
                    }
                    let msg = if focused.as_deref() == Some(step_id.as_str()) {
                        format!(
                            "{} · thinking {} tok · {}",
                            r.model,
                            r.thinking,
                            tail(&r.tail, 60)
                        )
                    } else {
                        format!("{} · thinking {} tok", r.model, r.thinking)
                    };
                    r.bar.set_message(msg);
                }
                if first && !self.tty {
                    self.line(format!("  … {step_id} is thinking: {}", tail(text, 60)));
                }
            }
            Event::AttemptFailed {
                step_id,
                attempt,
                error_kind,
                message,
                retry_in_ms,
                ..
            } => {
                let next = retry_in_ms
                    .map(|ms| format!(", retrying in {ms} ms"))
                    .unwrap_or_default();
                self.line(format!(
                    "  ! {step_id} attempt {attempt} failed ({error_kind}): {message}{next}"
                ));
            }
            Event::FallbackTaken {
                step_id,
                from,
                to,
                reason,
                ..
            } => {
                self.line(format!("  ↪ {step_id}: {from} → {to} ({reason})"));
            }
            Event::StepSucceeded {
                step_id,
                model,
                usage,
                duration_ms,
                ..
            } => {
                if let Ok(mut running) = self.running.lock()
                    && let Some(r) = running.remove(step_id)
                {
                    r.bar.finish_and_clear();
                }
                let tokens = usage
                    .map(|u| format!(", {}+{} tokens", u.prompt_tokens, u.completion_tokens))
                    .unwrap_or_default();
                let model = model
                    .as_ref()
                    .map(|m| format!(" on {m}"))
                    .unwrap_or_default();
                self.line(format!("  ✓ {step_id}{model} ({duration_ms} ms{tokens})"));
            }
            Event::StepFailed { step_id, error, .. } => {
                if let Ok(mut running) = self.running.lock()
                    && let Some(r) = running.remove(step_id)
                {
                    r.bar.finish_and_clear();
                }
                self.line(format!("  ✗ {step_id} failed: {error}"));
            }
            Event::StepSkipped {
                step_id,
                reason,
                status,
                ..
            } => {
                if let Ok(mut running) = self.running.lock()
                    && let Some(r) = running.remove(step_id)
                {
                    r.bar.finish_and_clear();
                }
                self.line(format!("  - {step_id} {}: {reason}", status.as_str()));
            }
            Event::MapProgress {
                step_id,
                done,
                failed,
                total,
                ..
            } => {
                let failed = if *failed > 0 {
                    format!(", {failed} failed")
                } else {
                    String::new()
                };
                self.line(format!("  ⋯ {step_id}: {done}/{total} items done{failed}"));
            }
            Event::RunPaused { .. } => {
                self.line("  ⏸ paused: steps in flight finish, no new step starts".into())
            }
            Event::RunResumed {
                completed_steps, ..
            } => {
                self.line(format!(
                    "  ▶ resumed ({completed_steps} steps already completed)"
                ));
            }
            Event::WaitingForEvent {
                step_id,
                event,
                until,
                ..
            } => {
                let until = until
                    .as_deref()
                    .map(|u| format!(" until {u}"))
                    .unwrap_or_default();
                self.line(format!("  ⋯ {step_id} waits for event `{event}`{until}"));
            }
            Event::RunFinished { .. }
            | Event::WaitingForHuman { .. }
            | Event::HumanDecided { .. }
            | Event::GuardrailVerdict { .. }
            | Event::BreakerChanged { .. } => {}
        }
    }
}
