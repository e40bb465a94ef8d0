//! Human-in-the-loop: approval steps, guardrail approvals, the last rung of the
//! fallback ladder and permissions for `shell` tools ask a person through a [`HumanHandler`] (the CLI prompts in the
//! terminal; the desktop app shows the question in the run panel).
//!
//! While a question is open the run's state is `waiting_for_human`; the answer is
//! recorded as a `human_decided` event. Without a handler, approval steps take their
//! default decision at once and the other questions are answered "no" (fail, reject).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A question for a human.
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HumanRequest {
    /// An `approval` step: approve or reject.
    Approval {
        /// Run id.
        run_id: String,
        /// Step id.
        step_id: String,
        /// The rendered question.
        message: String,
    },
    /// A guardrail rule asks for approval before text goes on.
    Guardrail {
        /// Run id.
        run_id: String,
        /// Step id.
        step_id: String,
        /// `input` or `output`.
        stage: String,
        /// The findings, in words (`2 email (warn)`), masked.
        findings: Vec<String>,
    },
    /// A step failed after every rung of its fallback ladder: retry, use an output
    /// typed by the human, skip, or cancel the run.
    StepFailed {
        /// Run id.
        run_id: String,
        /// Step id.
        step_id: String,
        /// The last error.
        error: String,
    },
    /// A `shell` tool is about to run for the first time for this workflow file: may
    /// it? Approve gives the permission and remembers it for the file as it is.
    Permission {
        /// Run id.
        run_id: String,
        /// Step id.
        step_id: String,
        /// The tool's name under `tools:`.
        tool: String,
        /// The program and its first arguments, as declared.
        command: Vec<String>,
        /// The working folder.
        cwd: String,
    },
}

impl HumanRequest {
    /// The run the question belongs to.
    pub fn run_id(&self) -> &str {
        match self {
            HumanRequest::Approval { run_id, .. }
            | HumanRequest::Guardrail { run_id, .. }
            | HumanRequest::StepFailed { run_id, .. }
            | HumanRequest::Permission { run_id, .. } => run_id,
        }
    }

    /// The step the question is about.
    pub fn step_id(&self) -> &str {
        match self {
            HumanRequest::Approval { step_id, .. }
            | HumanRequest::Guardrail { step_id, .. }
            | HumanRequest::StepFailed { step_id, .. }
            | HumanRequest::Permission { step_id, .. } => step_id,
        }
    }

    /// The question in one line.
    pub fn question(&self) -> String {
        match self {
            HumanRequest::Approval { message, .. } => message.clone(),
            HumanRequest::Guardrail {
                stage, findings, ..
            } => format!(
                "guardrails ask for approval of the step's {stage}: {}",
                findings.join(", ")
            ),
            HumanRequest::StepFailed { error, .. } => {
                format!("the step failed after its fallback ladder: {error}")
            }
            HumanRequest::Permission {
                tool, command, cwd, ..
            } => format!(
                "allow tool `{tool}` to run `{}` in `{cwd}`? (remembered until the workflow file changes)",
                command.join(" ")
            ),
        }
    }
}

/// A human's answer.
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum HumanDecision {
    /// Yes (approval, guardrail, permission).
    Approve,
    /// No (approval, guardrail, permission).
    Reject,
    /// Run the step's ladder again (failed step).
    Retry,
    /// Take this text as the step's output (failed step).
    UseOutput {
        /// The output.
        text: String,
    },
    /// Skip the step (failed step).
    Skip,
    /// Cancel the run.
    Cancel,
}

impl HumanDecision {
    /// A short name for the event log.
    pub fn name(&self) -> &'static str {
        match self {
            HumanDecision::Approve => "approve",
            HumanDecision::Reject => "reject",
            HumanDecision::Retry => "retry",
            HumanDecision::UseOutput { .. } => "use_output",
            HumanDecision::Skip => "skip",
            HumanDecision::Cancel => "cancel",
        }
    }
}

/// Who answers questions during a run.
#[async_trait]
pub trait HumanHandler: Send + Sync {
    /// Asks and waits for the answer; `None` when no answer can come (the terminal's
    /// input is closed), which the engine treats like a timeout (the approval step's
    /// default; a failure stays a failure). The engine applies timeouts and cancellation
    /// around this call, dropping the future when they fire.
    async fn decide(&self, request: &HumanRequest) -> Option<HumanDecision>;
}
