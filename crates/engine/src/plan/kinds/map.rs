//! The planner of `map` steps: the item list's expression compiled, the variable names,
//! concurrency and failure tolerance checked, the body planned (see
//! [`crate::plan::body`]).

use std::sync::Arc;

use crate::diagnostic::DiagnosticCode;
use crate::plan::body::{BodyTemplate, plan_body};
use crate::plan::report::is_identifier;
use crate::plan::step::{StepPlanner, value_template};
use crate::plan::{Action, MapAction};
use crate::workflow::{MapStep, OnItemError};

/// Default items in flight at once.
pub const DEFAULT_CONCURRENCY: u32 = 4;
/// Largest `concurrency`.
const MAX_CONCURRENCY: u32 = 1024;

/// Checks a variable name a body binds (`as`, `index_as`, ...).
pub(in crate::plan) fn check_var(p: &mut StepPlanner<'_, '_>, field: &str, name: &str) {
    if !is_identifier(name) || matches!(name, "inputs" | "steps") {
        p.report(
            field,
            DiagnosticCode::InvalidValue,
            format!("`{field}: {name}` is not a usable variable name"),
            "use a lowercase identifier other than `inputs` and `steps`, e.g. `task`",
        );
    }
}

/// Plans a `map` step.
pub(in crate::plan) fn plan(p: &mut StepPlanner<'_, '_>, step: &MapStep) -> Action {
    let items = if p.locs.missing.is_none() && p.check_expression("items", &step.items) {
        p.compile_named("items", "items", value_template(&step.items))
    } else {
        None
    };
    let item_as = step.item_as.clone().unwrap_or_else(|| "item".into());
    let index_as = step.index_as.clone().unwrap_or_else(|| "index".into());
    check_var(p, "as", &item_as);
    check_var(p, "index_as", &index_as);
    if item_as == index_as {
        p.report(
            "index_as",
            DiagnosticCode::InvalidValue,
            format!("`as` and `index_as` are both `{item_as}`"),
            "give the item and its index different names",
        );
    }
    let concurrency = step.concurrency.unwrap_or(DEFAULT_CONCURRENCY);
    if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
        p.report(
            "concurrency",
            DiagnosticCode::InvalidValue,
            format!("`concurrency` is {concurrency}; it must be between 1 and {MAX_CONCURRENCY}"),
            "use 1 to run the items one after another",
        );
    }
    let on_item_error = step.on_item_error.unwrap_or_default();
    check_tolerance(p, step, on_item_error);
    let mut extra = Vec::new();
    if let Some(result) = &step.result
        && p.check_expression("result", result)
    {
        extra.push(BodyTemplate {
            suffix: "result".into(),
            field: "result",
            text: value_template(result),
        });
    }
    let (body, names) = plan_body(
        p,
        vec![item_as.clone(), index_as.clone()],
        &step.steps,
        extra,
    );
    Action::Map(Box::new(MapAction {
        items: items.unwrap_or_default(),
        item_as,
        index_as,
        concurrency: usize::try_from(concurrency.max(1)).unwrap_or(1),
        on_item_error,
        tolerated_failures: step.tolerated_failures,
        tolerated_failure_percent: step.tolerated_failure_percent,
        result: names.into_iter().next().flatten(),
        body: Arc::new(body),
    }))
}

/// The tolerance fields apply to `continue` and `drop`; a percentage is 0–100.
fn check_tolerance(p: &mut StepPlanner<'_, '_>, step: &MapStep, mode: OnItemError) {
    let has = step.tolerated_failures.is_some() || step.tolerated_failure_percent.is_some();
    if has && mode == OnItemError::FailFast {
        let field = if step.tolerated_failures.is_some() {
            "tolerated_failures"
        } else {
            "tolerated_failure_percent"
        };
        p.report(
            field,
            DiagnosticCode::InvalidValue,
            format!("`{field}` has no effect with `on_item_error: fail_fast`"),
            "set `on_item_error: continue` (or `drop`), or remove the tolerance",
        );
    }
    if let Some(pct) = step.tolerated_failure_percent
        && !(pct.is_finite() && (0.0..=100.0).contains(&pct))
    {
        p.report(
            "tolerated_failure_percent",
            DiagnosticCode::InvalidValue,
            format!("`tolerated_failure_percent` is {pct}; it must be between 0 and 100"),
            "give a percentage such as 10",
        );
    }
}
