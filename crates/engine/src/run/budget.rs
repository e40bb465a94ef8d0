//! Budgets of a run and of a step: what was spent, what calls in flight reserved, and
//! what is left.

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
