//! Budgets of a run and of a step: what was spent, what calls in flight reserved, and
//! what is left.

use std::sync::Mutex;

use super::ladder::LlmContext;
use super::{Engine, RunShared, lock};
use crate::plan::LlmAction;
use crate::workflow::Budget;

/// Tokens and money spent, and (for the run) reserved by calls in flight, so parallel
/// steps cannot together pass the run's budget.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Spend {
    pub(super) tokens: u64,
    pub(super) cost_usd: f64,
    pub(super) reserved_tokens: u64,
    pub(super) reserved_cost_usd: f64,
}

impl Spend {
    /// Gives back a reservation of `tokens` and `cost_usd` (USD).
    pub(super) fn release(&mut self, tokens: u64, cost_usd: f64) {
        self.reserved_tokens = self.reserved_tokens.saturating_sub(tokens);
        self.reserved_cost_usd = (self.reserved_cost_usd - cost_usd).max(0.0);
    }
}

/// Tokens and money left under the run's and the step's budgets (the smaller of each).
pub(super) fn left_of(
    run_budget: Option<&Budget>,
    step_budget: Option<&Budget>,
    run: &Spend,
    step: &Spend,
) -> (Option<u64>, Option<f64>) {
    let mut tokens: Option<u64> = None;
    let mut cost: Option<f64> = None;
    let mut limit = |b: &Budget, spent_tokens: u64, spent_cost: f64| {
        if let Some(t) = b.max_tokens {
            let left = t.saturating_sub(spent_tokens);
            tokens = Some(tokens.map_or(left, |x| x.min(left)));
        }
        if let Some(c) = b.max_cost_usd {
            let left = (c - spent_cost).max(0.0);
            cost = Some(cost.map_or(left, |x| x.min(left)));
        }
    };
    if let Some(b) = run_budget {
        limit(
            b,
            run.tokens + run.reserved_tokens,
            run.cost_usd + run.reserved_cost_usd,
        );
    }
    if let Some(b) = step_budget {
        limit(b, step.tokens, step.cost_usd);
    }
    (tokens, cost)
}

impl Engine {
    /// Tokens and money left for a step now: the run's budget less what was spent and
    /// what calls in flight reserved, and the step's budget less what it spent.
    pub(super) fn budget_left(
        &self,
        sh: &RunShared,
        llm: &LlmAction,
        step: Spend,
    ) -> (Option<u64>, Option<f64>) {
        let run = *lock(&sh.spend);
        left_of(sh.budget.as_ref(), llm.budget.as_ref(), &run, &step)
    }
}

/// Why a call was refused before it was made.
pub(super) struct Refusal {
    /// The token budget refused it (the step stops); otherwise the money budget did (the
    /// next, cheaper model may still fit).
    pub(super) tokens: bool,
    /// What was projected and what is left.
    pub(super) message: String,
}

/// A call's projected tokens and cost, reserved against the run's budget while the call is
/// in flight so parallel steps cannot together pass it (LiteLLM refuses requests over
/// budget before they are made). Dropping it gives the reservation back: when the attempt
/// ends its real usage is counted instead, whatever the outcome.
pub(super) struct Reservation<'a> {
    spend: &'a Mutex<Spend>,
    tokens: u64,
    cost_usd: f64,
}

impl<'a> Reservation<'a> {
    /// Checks the projected use against what the run's and the step's budgets leave
    /// (`step` is what the step spent so far) and reserves it under one lock.
    ///
    /// # Errors
    /// A [`Refusal`] when the call would pass either budget.
    pub(super) fn take(
        cx: &'a LlmContext,
        step: &Spend,
        projected_tokens: u64,
        est_cost_usd: f64,
    ) -> Result<Reservation<'a>, Refusal> {
        let mut run = lock(&cx.sh.spend);
        let (tokens_left, cost_left) =
            left_of(cx.sh.budget.as_ref(), cx.llm.budget.as_ref(), &run, step);
        if let Some(left) = tokens_left
            && projected_tokens > left
        {
            return Err(Refusal {
                tokens: true,
                message: format!(
                    "the call would use ~{projected_tokens} tokens but only {left} are left in the budget"
                ),
            });
        }
        if let Some(left) = cost_left
            && est_cost_usd > left
        {
            return Err(Refusal {
                tokens: false,
                message: format!(
                    "projected cost ${est_cost_usd:.6} exceeds the ${left:.6} left in the budget"
                ),
            });
        }
        run.reserved_tokens += projected_tokens;
        run.reserved_cost_usd += est_cost_usd;
        Ok(Reservation {
            spend: &cx.sh.spend,
            tokens: projected_tokens,
            cost_usd: est_cost_usd,
        })
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        lock(self.spend).release(self.tokens, self.cost_usd);
    }
}
