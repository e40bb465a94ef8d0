//! The planner of `approval` steps: the question compiled, the timeout and default
//! decision kept.

use crate::plan::Action;
use crate::plan::step::StepPlanner;
use crate::workflow::ApprovalStep;

/// Plans an `approval` step.
pub(in crate::plan) fn plan(p: &mut StepPlanner<'_, '_>, step: &ApprovalStep) -> Action {
    let prompt = p.compile("prompt", &step.prompt);
    Action::Approval {
        prompt: prompt.unwrap_or_default(),
        settings: step.approval.clone().unwrap_or_default(),
    }
}
