//! The planner of `switch` steps: each case's condition compiled, the steps its cases
//! name resolved (each depends on the switch).

use std::collections::{HashMap, HashSet};

use crate::diagnostic::{Diagnostic, DiagnosticCode};
use crate::plan::Action;
use crate::plan::report::{Ctx, did_you_mean};
use crate::plan::step::{StepPlanner, condition_template};
use crate::workflow::{Step, StepKind, SwitchStep};

/// Plans a `switch` step: at least one case, case names unique, conditions compiled.
pub(in crate::plan) fn plan(p: &mut StepPlanner<'_, '_>, step: &SwitchStep) -> Action {
    if step.cases.is_empty() && p.locs.missing.is_none() {
        p.report(
            "cases",
            DiagnosticCode::InvalidValue,
            "a switch needs at least one case".into(),
            "add `cases: [{when: <condition>, then: [<step ids>]}]`",
        );
    }
    let mut names = HashSet::new();
    let mut cases = Vec::with_capacity(step.cases.len());
    for (n, case) in step.cases.iter().enumerate() {
        let name = case.name.clone().unwrap_or_else(|| format!("case{n}"));
        if !names.insert(name.clone()) {
            p.report(
                "cases",
                DiagnosticCode::InvalidValue,
                format!("two cases are named `{name}`"),
                "give each case its own `name`",
            );
        }
        if !p.check_expression("cases", &case.when) {
            continue;
        }
        if let Some(cond) = p.compile_named(
            &format!("cases[{n}].when"),
            "cases",
            condition_template(&case.when),
        ) {
            cases.push((name, cond));
        }
    }
    Action::Switch { cases }
}

/// For each step of `list`, the switches whose cases name it and on which cases (`-1`:
/// `default`); each named step gets the switch in its `needs`. Reports a case naming an
/// unknown step or the switch itself.
pub(in crate::plan) fn resolve_cases(
    cx: &mut Ctx<'_>,
    list: &[Step],
    index: &HashMap<String, usize>,
    needs: &mut [Vec<usize>],
) -> Vec<Vec<(usize, Vec<i64>)>> {
    let mut branches: Vec<Vec<(usize, Vec<i64>)>> = vec![Vec::new(); list.len()];
    for (i, step) in list.iter().enumerate() {
        let StepKind::Switch(sw) = &step.kind else {
            continue;
        };
        let named = sw
            .cases
            .iter()
            .enumerate()
            .flat_map(|(n, c)| c.then.iter().map(move |t| (n as i64, t)))
            .chain(sw.default.iter().map(|t| (-1, t)));
        for (case, target) in named {
            let field = if case < 0 { "default" } else { "cases" };
            let problem = match index.get(target) {
                Some(&k) if k == i => {
                    Some(format!("switch `{}` names itself as a branch", step.id))
                }
                Some(&k) => {
                    if !needs[k].contains(&i) {
                        needs[k].push(i);
                    }
                    match branches[k].iter_mut().find(|(s, _)| *s == i) {
                        Some((_, cases)) => cases.push(case),
                        None => branches[k].push((i, vec![case])),
                    }
                    None
                }
                None => {
                    let dym = did_you_mean(target, index.keys().map(String::as_str));
                    Some(format!("`{field}` names unknown step `{target}`{dym}"))
                }
            };
            if let Some(message) = problem {
                let at = cx.step_locs(i).of(field);
                cx.push(
                    Diagnostic::new(DiagnosticCode::UnknownStep, message)
                        .step(&step.id)
                        .field(field)
                        .at(at)
                        .hint("name steps of the same step list (a body's steps are named inside that body)"),
                );
            }
        }
    }
    branches
}
