//! The planner of `loop` steps: the cap checked, the state's initial values compiled in
//! the loop's own scope, `set` and `until` compiled in the body's scope, the body planned
//! (see [`crate::plan::body`]).

use std::sync::Arc;

use crate::diagnostic::DiagnosticCode;
use crate::plan::body::{BodyTemplate, plan_body};
use crate::plan::report::is_identifier;
use crate::plan::step::{StepPlanner, condition_template, value_template};
use crate::plan::{Action, LoopAction, StateInit};
use crate::workflow::LoopStep;

/// Largest `max_iterations`.
const MAX_ITERATIONS: u32 = 10_000;

/// Plans a `loop` step.
pub(in crate::plan) fn plan(p: &mut StepPlanner<'_, '_>, step: &LoopStep) -> Action {
    if p.locs.missing.is_none() && !(1..=MAX_ITERATIONS).contains(&step.max_iterations) {
        p.report(
            "max_iterations",
            DiagnosticCode::InvalidValue,
            format!(
                "`max_iterations` is {}; it must be between 1 and {MAX_ITERATIONS}",
                step.max_iterations
            ),
            "give the most rounds the loop may run, e.g. 5",
        );
    }
    let mut state = Vec::with_capacity(step.state.len());
    for (name, value) in &step.state {
        if !is_identifier(name) {
            p.report(
                "state",
                DiagnosticCode::InvalidValue,
                format!("state variable `{name}` is not a lowercase identifier"),
                "name state variables like step ids, e.g. `draft`, `score`",
            );
            continue;
        }
        let init = match value {
            serde_json::Value::String(text) if text.contains('{') => p
                .compile_named(&format!("state.{name}"), "state", text.clone())
                .map(StateInit::Template),
            other => Some(StateInit::Value(other.clone())),
        };
        if let Some(init) = init {
            state.push((name.clone(), init));
        }
    }
    let mut extra = Vec::new();
    let mut set_names = Vec::new();
    for (name, expr) in &step.set {
        if !step.state.contains_key(name) {
            p.report(
                "set",
                DiagnosticCode::UnknownInput,
                format!("`set` names `{name}`, which is not declared under `state`"),
                &format!("declare it with an initial value: `state: {{{name}: ...}}`"),
            );
            continue;
        }
        if p.check_expression("set", expr) {
            set_names.push(name.clone());
            extra.push(BodyTemplate {
                suffix: format!("set.{name}"),
                field: "set",
                text: value_template(expr),
            });
        }
    }
    let has_until = match &step.until {
        Some(until) if p.check_expression("until", until) => {
            extra.push(BodyTemplate {
                suffix: "until".into(),
                field: "until",
                text: condition_template(until),
            });
            true
        }
        _ => false,
    };
    let vars = vec!["state".to_string(), "iteration".to_string()];
    let (body, mut names) = plan_body(p, vars, &step.steps, extra);
    let until = if has_until {
        names.pop().flatten()
    } else {
        None
    };
    let set = set_names
        .into_iter()
        .zip(names)
        .filter_map(|(name, t)| t.map(|t| (name, t)))
        .collect();
    Action::Loop(Box::new(LoopAction {
        max_iterations: step.max_iterations,
        state,
        set,
        until,
        cap: step.on_max_iterations.unwrap_or_default(),
        body: Arc::new(body),
    }))
}
