//! Whether a step whose dependencies have all finished runs: the alternate-branch rule,
//! the `switch` branches, then the step's join rule ([`TriggerRule`], Airflow's trigger
//! rules).
//!
//! A dependency counts as failed when it failed (unless an alternate branch or `on_error`
//! handlers took the failure over), was cancelled, or was skipped because of a failure
//! above it (Airflow's `upstream_failed`); as skipped when its failure was handled or it
//! was skipped for any other reason (a false `when`, a branch not taken, `on_failure: skip`, a rule that
//! needed a failure and got none). A step skipped by its rule because dependencies
//! failed is itself marked failure-caused, so the mark travels down a chain of
//! `all_success` steps to a `none_failed` join.

use super::StepOutput;
use crate::events::StepStatus;
use crate::plan::{Action, Plan, PlannedStep};
use crate::workflow::TriggerRule;

/// Why a step does not run.
pub(super) struct Blocked {
    /// The reason recorded with the skip.
    pub(super) reason: String,
    /// Whether the skip is because something above failed (counts as failed below).
    pub(super) by_failure: bool,
}

/// The states of the run's steps so far, as the join rules read them.
pub(super) struct States<'a> {
    pub(super) status: &'a [Option<StepStatus>],
    /// Per step: failed, and the failure was handled (alternate branch, `on_error`).
    pub(super) handled: &'a [bool],
    pub(super) upstream_failed: &'a [bool],
    pub(super) outputs: &'a [Option<std::sync::Arc<StepOutput>>],
}

impl States<'_> {
    fn failed_like(&self, d: usize) -> bool {
        match self.status[d] {
            Some(StepStatus::Failed) => !self.handled[d],
            Some(StepStatus::Cancelled) => true,
            Some(StepStatus::Skipped) => self.upstream_failed[d],
            _ => false,
        }
    }
}

/// Why `step` cannot run once its dependencies finished, or `None` when it runs.
pub(super) fn blocked_by(plan: &Plan, st: &States<'_>, step: &PlannedStep) -> Option<Blocked> {
    if let Some(alt) = step.alternate_of
        && st.status[alt] != Some(StepStatus::Failed)
    {
        return Some(Blocked {
            reason: format!(
                "dependency `{}` did not fail (this step runs only on its failure)",
                plan.steps[alt].id
            ),
            by_failure: false,
        });
    }
    if let Some(b) = branch_not_taken(plan, st, step) {
        return Some(b);
    }
    let deps = step
        .needs
        .iter()
        .copied()
        .filter(|&d| step.alternate_of != Some(d));
    let (mut ok, mut failed, mut skipped) = (0, 0, 0);
    let mut first_bad = None;
    for d in deps {
        if st.status[d] == Some(StepStatus::Succeeded) {
            ok += 1;
            continue;
        }
        if st.failed_like(d) {
            failed += 1;
        } else {
            skipped += 1;
        }
        first_bad.get_or_insert(d);
    }
    if step.trigger_rule.met(ok, failed, skipped) {
        return None;
    }
    let by_failure = failed > 0
        && !matches!(
            step.trigger_rule,
            TriggerRule::OneFailed | TriggerRule::AllFailed
        );
    let detail = first_bad.map(|d| {
        let why = match st.status[d] {
            Some(StepStatus::Failed) => "failed",
            Some(StepStatus::Cancelled) => "was cancelled",
            _ => "was skipped",
        };
        format!("dependency `{}` {why}", plan.steps[d].id)
    });
    let reason = match (step.trigger_rule, detail) {
        (TriggerRule::AllSuccess, Some(detail)) => detail,
        (rule, Some(detail)) => format!("its join rule `{}` is not met: {detail}", rule.as_str()),
        (rule, None) => format!(
            "its join rule `{}` is not met: no dependency failed",
            rule.as_str()
        ),
    };
    Some(Blocked { reason, by_failure })
}

/// A step named by a `switch` whose taken case does not name it.
fn branch_not_taken(plan: &Plan, st: &States<'_>, step: &PlannedStep) -> Option<Blocked> {
    for (sw, cases) in &step.branches {
        if st.status[*sw] != Some(StepStatus::Succeeded) {
            continue; // the join rule sees the switch's own state
        }
        let taken = st.outputs[*sw]
            .as_ref()
            .and_then(|o| o.json.as_ref())
            .and_then(|j| j.get("index"))
            .and_then(serde_json::Value::as_i64);
        if taken.is_some_and(|t| cases.contains(&t)) {
            continue;
        }
        let name = st.outputs[*sw]
            .as_ref()
            .map(|o| o.text.clone())
            .filter(|t| !t.is_empty());
        let switch = &plan.steps[*sw];
        let which = match (name, &switch.action) {
            (Some(name), _) => format!("case `{name}`"),
            (None, Action::Switch { .. }) => "no case".to_string(),
            (None, _) => "another case".to_string(),
        };
        return Some(Blocked {
            reason: format!("not on the branch switch `{}` took ({which})", switch.id),
            by_failure: false,
        });
    }
    None
}
