//! Error handlers (`on_error`): each named step must exist in the same step list, is not
//! the step itself, and becomes a dependant of the step (the edge is added here, before
//! cycles are checked). The handlers and alternate branches of a list are known before
//! its steps are planned, because their templates may read `error`.

use std::collections::{HashMap, HashSet};

use super::report::{Ctx, did_you_mean};
use crate::diagnostic::{Diagnostic, DiagnosticCode};
use crate::workflow::{OnFailure, Step};

/// Per step, the indices of its `on_error` handlers (each given the step as a
/// dependency in `needs`); reports unknown names and a step handling itself.
pub(super) fn resolve_handlers(
    cx: &mut Ctx<'_>,
    list: &[Step],
    index: &HashMap<String, usize>,
    needs: &mut [Vec<usize>],
) -> Vec<Vec<usize>> {
    let mut handlers = vec![Vec::new(); list.len()];
    for (i, step) in list.iter().enumerate() {
        for name in &step.on_error {
            let problem = match index.get(name) {
                Some(&h) if h == i => {
                    Some(format!("step `{}` names itself in `on_error`", step.id))
                }
                Some(&h) => {
                    if !needs[h].contains(&i) {
                        needs[h].push(i);
                    }
                    if !handlers[i].contains(&h) {
                        handlers[i].push(h);
                    }
                    None
                }
                None => {
                    let dym = did_you_mean(name, index.keys().map(String::as_str));
                    Some(format!("`on_error` names unknown step `{name}`{dym}"))
                }
            };
            if let Some(message) = problem {
                let at = cx.step_locs(i).of("on_error");
                cx.push(
                    Diagnostic::new(DiagnosticCode::UnknownStep, message)
                        .step(&step.id)
                        .field("on_error")
                        .at(at)
                        .hint("name steps of the same step list that handle this step's failure"),
                );
            }
        }
    }
    handlers
}

/// The steps of `list` that run on another's failure (an `on_error` handler or an
/// `on_failure: {alternate: ...}` branch): their templates may read `error`.
pub(super) fn failure_steps(
    list: &[Step],
    index: &HashMap<String, usize>,
    handlers: &[Vec<usize>],
) -> HashSet<usize> {
    let mut out: HashSet<usize> = handlers.iter().flatten().copied().collect();
    for step in list {
        if let Some(OnFailure::Alternate(alt)) = &step.on_failure
            && let Some(&k) = index.get(alt)
        {
            out.insert(k);
        }
    }
    out
}
