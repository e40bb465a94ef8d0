//! Questions for a human in the terminal: approval steps, guardrail approvals, the
//! last rung of the fallback ladder and permissions of `shell` tools (given without a
//! question for the tools named by `--allow-tool`). The question goes to stderr; the answer is one line
//! read from stdin (so scripts and tests can answer through a pipe). When stdin is closed
//! the engine applies the default (an approval step's `default`; a failed step stays
//! failed).

use async_trait::async_trait;
use indicatif::MultiProgress;
use nexus_app::engine::human::{HumanDecision, HumanHandler, HumanRequest};
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};
use tokio::sync::Mutex;

/// Asks on the terminal.
pub struct Terminal {
    multi: Option<MultiProgress>,
    lines: Mutex<Lines<BufReader<Stdin>>>,
    /// `shell` tools allowed on the command line.
    allow_tools: Vec<String>,
}

impl Terminal {
    /// A terminal handler; `multi` is suspended while a question is shown; the
    /// permission of the `shell` tools in `allow_tools` is given without asking.
    pub fn new(multi: Option<MultiProgress>, allow_tools: Vec<String>) -> Self {
        Terminal {
            multi,
            lines: Mutex::new(BufReader::new(tokio::io::stdin()).lines()),
            allow_tools,
        }
    }

    fn say(&self, text: &str) {
        match &self.multi {
            Some(m) => m.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }
}

#[async_trait]
impl HumanHandler for Terminal {
    async fn decide(&self, request: &HumanRequest) -> Option<HumanDecision> {
        if let HumanRequest::Permission { tool, .. } = request
            && self.allow_tools.contains(tool)
        {
            self.say(&format!(
                "  tool `{tool}` may run (--allow-tool {tool}); remembered for this file"
            ));
            return Some(HumanDecision::Approve);
        }
        let mut lines = self.lines.lock().await;
        let (question, choices) = match request {
            HumanRequest::Approval { .. }
            | HumanRequest::Guardrail { .. }
            | HumanRequest::Permission { .. } => (
                request.question(),
                "approve? [y]es / [n]o / [c]ancel the run",
            ),
            HumanRequest::StepFailed { .. } => (
                request.question(),
                "[r]etry / [o]utput <text> to use as the step's output / [s]kip / [c]ancel the run",
            ),
        };
        loop {
            self.say(&format!(
                "\n? step `{}`: {question}\n  {choices}",
                request.step_id()
            ));
            let line = match lines.next_line().await {
                Ok(Some(l)) => l,
                // Closed or unreadable input: nobody can answer.
                Ok(None) | Err(_) => return None,
            };
            let answer = line.trim();
            let (word, rest) = answer.split_once(' ').unwrap_or((answer, ""));
            let decision = match (request, word.to_ascii_lowercase().as_str()) {
                (_, "c" | "cancel") => Some(HumanDecision::Cancel),
                (HumanRequest::StepFailed { .. }, "r" | "retry") => Some(HumanDecision::Retry),
                (HumanRequest::StepFailed { .. }, "s" | "skip") => Some(HumanDecision::Skip),
                (HumanRequest::StepFailed { .. }, "o" | "output") if !rest.trim().is_empty() => {
                    Some(HumanDecision::UseOutput {
                        text: rest.trim().to_string(),
                    })
                }
                (HumanRequest::StepFailed { .. }, _) => None,
                (_, "y" | "yes") => Some(HumanDecision::Approve),
                (_, "n" | "no") => Some(HumanDecision::Reject),
                _ => None,
            };
            match decision {
                Some(d) => return Some(d),
                None => self.say(&format!("  `{answer}` is not one of the choices")),
            }
        }
    }
}
