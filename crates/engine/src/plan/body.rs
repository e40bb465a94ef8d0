//! Planning the body of a `map` or `loop` step: its steps are planned as a step list of
//! their own (ids, `needs`, cycles, every step's checks), into a [`Plan`] of their own
//! that the step's executor runs once per item or iteration.
//!
//! The body's templates see the body's own steps (those they depend on), the variables
//! the body binds (`item`/`index`, `state`/`iteration`, and an enclosing body's), and the
//! steps the owner may read outside (its dependencies and what they may read). What the
//! body reads outside is added to the owner's reads, so the scheduler hands those outputs
//! to the body.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use super::Plan;
use super::report::Ctx;
use super::step::StepPlanner;
use super::templates::{BodyFrame, Scope, Templates, compile_template};
use super::validate::{dependants_of, plan_list};
use crate::diagnostic::DiagnosticCode;
use crate::parse::Locations;
use crate::workflow::{Step, Workflow};

/// A template of the owner that is compiled in the body's scope (a map's `result`, a
/// loop's `set` and `until`): any body step may be read.
pub(super) struct BodyTemplate {
    /// The template's name suffix (`steps.<owner>.<suffix>`).
    pub(super) suffix: String,
    /// The owner's field it is written in (for diagnostics).
    pub(super) field: &'static str,
    /// The template text.
    pub(super) text: String,
}

/// Plans the body `steps` of the step `p` plans, binding `vars`; also compiles `extra`
/// in the body's scope. Returns the body's plan and the names of the `extra` templates
/// (`None` where one has errors). Problems are reported into `p`'s context; with any,
/// the plan is incomplete and the owner yields no planned step.
pub(super) fn plan_body(
    p: &mut StepPlanner<'_, '_>,
    vars: Vec<String>,
    steps: &[Step],
    extra: Vec<BodyTemplate>,
) -> (Plan, Vec<Option<String>>) {
    if steps.is_empty() {
        p.report(
            "steps",
            DiagnosticCode::NoSteps,
            format!("the body of `{}` has no steps", p.id),
            "add the steps to run under `steps:` of this step",
        );
    }
    let frame = BodyFrame {
        vars,
        outer_index: p.index,
        outer_scope: p.scope,
        outer_reads: RefCell::new(BTreeSet::new()),
    };
    let locations = Locations {
        step: p.locs.body.clone(),
        ..Locations::default()
    };
    let mut cx = Ctx {
        file: p.cx.file,
        locs: &locations,
        diags: Vec::new(),
        chain: p.cx.chain,
        root: p.cx.root,
    };
    let mut templates = Templates::default();
    let list = plan_list(&mut cx, &mut templates, p.wf, steps, Some(&frame));
    let graph = (list.steps.len() == steps.len()).then_some(list.needs.as_slice());
    let scope = Scope::Body {
        graph,
        step: None,
        frame: &frame,
    };
    let mut names = Vec::with_capacity(extra.len());
    for t in extra {
        let name = format!("steps.{}.{}", p.id, t.suffix);
        let at = p.at(t.field);
        let reads = compile_template(
            &mut cx,
            &mut templates,
            p.wf,
            &list.index,
            scope,
            &name,
            t.text,
            at,
        );
        names.push(reads.map(|_| name));
    }
    for d in cx.diags {
        p.cx.push(d);
    }
    p.reads.extend(frame.outer_reads.into_inner());
    let dependants = dependants_of(&list.needs);
    let plan = Plan {
        workflow: body_workflow(p.wf, steps),
        file: p.cx.file.map(str::to_owned),
        steps: list.steps,
        index: list.index,
        dependants,
        outputs: Vec::new(),
        templates,
        on_failure: None,
    };
    (plan, names)
}

/// The workflow a body's plan carries: the file's header (inputs, agents, policies) with
/// the body's steps and no outputs.
fn body_workflow(wf: &Workflow, steps: &[Step]) -> Workflow {
    Workflow {
        format: wf.format,
        id: wf.id.clone(),
        name: wf.name.clone(),
        description: None,
        version: wf.version.clone(),
        inputs: wf.inputs.clone(),
        outputs: BTreeMap::new(),
        local_only: wf.local_only,
        budget: wf.budget.clone(),
        guardrails: wf.guardrails.clone(),
        tools: wf.tools.clone(),
        on_failure: None,
        agents: wf.agents.clone(),
        agents_file: None,
        triggers: Vec::new(),
        notifications: Vec::new(),
        steps: steps.to_vec(),
    }
}
