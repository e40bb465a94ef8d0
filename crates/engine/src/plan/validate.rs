//! The workflow-level checks and the order of validation: header (format, id, inputs,
//! steps), step ids, `needs`, cycles, every step (see [`super::step`]), the run budget,
//! alternate branches, outputs. Then the plan: steps, index, dependants, outputs, the
//! compiled templates.
//!
//! Every problem is reported (never just the first); a workflow with any problem has no
//! plan.

use std::collections::{HashMap, HashSet};

use super::cycles::check_cycles;
use super::inputs::check_input;
use super::report::{At, Ctx, did_you_mean, is_identifier};
use super::step::{check_budget, plan_step};
use super::templates::{BodyFrame, Scope, Templates, compile_template};
use super::{Plan, PlannedStep};
use crate::diagnostic::{Diagnostic, DiagnosticCode};
use crate::parse::Parsed;
use crate::workflow::{FORMAT_VERSION, OnFailure, Step, Workflow};

/// Validates a parsed workflow and builds its plan.
///
/// # Errors
/// Every problem found, each located (never just the first).
pub fn validate(parsed: &Parsed) -> Result<Plan, Vec<Diagnostic>> {
    validate_in(parsed, &[], None)
}

/// [`validate`] for a workflow run from a folder it must not read out of (the desktop
/// app's and `nexus serve`'s workflows folder): every other file it reads — its
/// sub-workflows, its failure handler, theirs — must lie inside `root` once symbolic
/// links are followed, else it is an error located at the step that names it.
///
/// # Errors
/// As [`validate`], plus one diagnostic per file outside `root`.
pub fn validate_within(parsed: &Parsed, root: &std::path::Path) -> Result<Plan, Vec<Diagnostic>> {
    let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    validate_in(parsed, &[], Some(&root))
}

/// Validates a workflow called by the files `callers` (outermost first; see
/// [`Ctx::chain`]), reading no file outside `root` when given ([`Ctx::root`]).
pub(super) fn validate_in(
    parsed: &Parsed,
    callers: &[std::path::PathBuf],
    root: Option<&std::path::Path>,
) -> Result<Plan, Vec<Diagnostic>> {
    let mut chain = callers.to_vec();
    if let Some(me) = parsed
        .file
        .as_deref()
        .and_then(|f| std::fs::canonicalize(f).ok())
    {
        chain.push(me);
    }
    let mut cx = Ctx {
        file: parsed.file.as_deref(),
        locs: &parsed.locations,
        diags: Vec::new(),
        chain: &chain,
        root,
    };
    let merged = super::agents::with_agents_file(&mut cx, &parsed.workflow);
    let wf = merged.as_ref().unwrap_or(&parsed.workflow);
    super::agents::check_agents(&mut cx, wf);
    check_header(&mut cx, wf);
    super::triggers::check_triggers(&mut cx, wf);
    super::notify::check_notifications(&mut cx, wf);
    check_unique_ids(&mut cx, wf);
    let mut templates = Templates::default();
    let list = plan_list(&mut cx, &mut templates, wf, &wf.steps, None);
    let (steps, index, needs) = (list.steps, list.index, list.needs);
    let budget_at = cx.locs.budget;
    check_budget(&mut cx, None, "budget", wf.budget.as_ref(), budget_at);
    let mut outputs = Vec::new();
    for (name, text) in &wf.outputs {
        let tname = format!("outputs.{name}");
        let at = At {
            step: None,
            field: format!("outputs.{name}"),
            span: cx.locs.outputs.get(name).copied(),
        };
        let reads = compile_template(
            &mut cx,
            &mut templates,
            wf,
            &index,
            Scope::Outputs,
            &tname,
            text.clone(),
            at,
        );
        if let Some(reads) = reads {
            outputs.push((name.clone(), tname, reads));
        }
    }

    let on_failure = wf
        .on_failure
        .as_ref()
        .and_then(|h| super::kinds::subflow::plan_failure_handler(&mut cx, h, wf.local_only));
    if !cx.diags.is_empty() {
        return Err(cx.diags);
    }
    let dependants = dependants_of(&needs);
    Ok(Plan {
        workflow: wf.clone(),
        file: parsed.file.clone(),
        steps,
        index,
        dependants,
        outputs,
        templates,
        on_failure,
    })
}

/// The planned steps of one step list (a workflow's steps or a body's), its id index and
/// each step's `needs` as indices (a `switch` included for the steps its cases name).
pub(super) struct PlannedList {
    pub(super) steps: Vec<PlannedStep>,
    pub(super) index: HashMap<String, usize>,
    pub(super) needs: Vec<Vec<usize>>,
}

/// Plans one step list: ids, `needs`, cycles, every step (templates compiled into
/// `templates`), alternate branches and switch cases. `frame` is the body's frame for a
/// `map` or `loop` body. When any step has errors, `steps` is shorter than the list.
pub(super) fn plan_list(
    cx: &mut Ctx<'_>,
    templates: &mut Templates,
    wf: &Workflow,
    list: &[Step],
    frame: Option<&BodyFrame<'_>>,
) -> PlannedList {
    let index = index_steps(cx, list);
    let mut needs = resolve_needs(cx, list, &index);
    let branches = super::kinds::switch::resolve_cases(cx, list, &index, &mut needs);
    let handlers = super::handlers::resolve_handlers(cx, list, &index, &mut needs);
    let on_failure_steps = super::handlers::failure_steps(list, &index, &handlers);
    let has_cycle = check_cycles(cx, list, &needs);
    // Dependency graph for reference checks; unknown when there is a cycle.
    let graph = (!has_cycle).then_some(needs.as_slice());
    let mut steps = Vec::with_capacity(list.len());
    for (i, step) in list.iter().enumerate() {
        let handler = on_failure_steps.contains(&i);
        if let Some(planned) = plan_step(
            cx, templates, wf, &index, graph, frame, handler, i, step, &needs[i],
        ) {
            steps.push(planned);
        }
    }
    if steps.len() == list.len() {
        link_alternates(cx, &index, &needs, &mut steps);
        link_handlers(cx, handlers, &mut steps);
        for (i, b) in branches.into_iter().enumerate() {
            steps[i].branches = b;
        }
    }
    PlannedList {
        steps,
        index,
        needs,
    }
}

/// Marks each `on_error` handler as running on its step's failure; a step may handle the
/// failure of one step only (as an alternate branch may back up one step).
fn link_handlers(cx: &mut Ctx<'_>, handlers: Vec<Vec<usize>>, steps: &mut [PlannedStep]) {
    for (i, hs) in handlers.into_iter().enumerate() {
        for &h in &hs {
            match steps[h].alternate_of {
                None => steps[h].alternate_of = Some(i),
                Some(other) if other == i => {}
                Some(other) => {
                    let at = cx.step_locs(i).of("on_error");
                    let msg = format!(
                        "step `{}` already handles the failure of `{}`",
                        steps[h].id, steps[other].id
                    );
                    cx.push(
                        Diagnostic::new(DiagnosticCode::InvalidValue, msg)
                            .step(&steps[i].id)
                            .field("on_error")
                            .at(at)
                            .hint("give each failing step its own handler steps"),
                    );
                }
            }
        }
        steps[i].handlers = hs;
    }
}

/// For each step, the indices of the steps that need it.
pub(super) fn dependants_of(needs: &[Vec<usize>]) -> Vec<Vec<usize>> {
    let mut dependants = vec![Vec::new(); needs.len()];
    for (i, ns) in needs.iter().enumerate() {
        for &n in ns {
            dependants[n].push(i);
        }
    }
    dependants
}

/// Step ids are unique across the whole file, bodies of `map` and `loop` steps included
/// (a record's path names a body step by its id; templates read any step as
/// `steps.<id>`). Duplicates within one list are reported by [`index_steps`]; this
/// reports an id reused in another list.
fn check_unique_ids(cx: &mut Ctx<'_>, wf: &Workflow) {
    fn walk<'w>(
        steps: &'w [Step],
        locs: &'w [crate::parse::StepLocations],
        list: usize,
        next: &mut usize,
        seen: &mut HashMap<&'w str, (usize, Option<crate::diagnostic::Span>)>,
        out: &mut Vec<Diagnostic>,
    ) {
        for (i, step) in steps.iter().enumerate() {
            let loc = locs.get(i);
            let at = loc.and_then(|l| l.of("id"));
            match seen.get(step.id.as_str()) {
                Some(&(other, first)) if other != list => {
                    let line = first
                        .map(|s| format!(" (first defined at line {})", s.line))
                        .unwrap_or_default();
                    out.push(
                        Diagnostic::new(
                            DiagnosticCode::DuplicateId,
                            format!("step id `{}` is used twice{line}", step.id),
                        )
                        .step(&step.id)
                        .field("id")
                        .at(at)
                        .hint("step ids are unique in the whole file, `map` and `loop` bodies included: rename one"),
                    );
                }
                Some(_) => {}
                None => {
                    seen.insert(&step.id, (list, at));
                }
            }
            let body = match &step.kind {
                crate::workflow::StepKind::Map(m) => &m.steps,
                crate::workflow::StepKind::Loop(l) => &l.steps,
                _ => continue,
            };
            *next += 1;
            let body_locs = loc.map(|l| l.body.as_slice()).unwrap_or_default();
            walk(body, body_locs, *next, next, seen, out);
        }
    }
    let mut seen = HashMap::new();
    let mut out = Vec::new();
    let mut next = 0;
    walk(&wf.steps, &cx.locs.step, 0, &mut next, &mut seen, &mut out);
    for d in out {
        cx.push(d);
    }
}

/// The format version, the workflow id, the input declarations, and that there are
/// steps.
fn check_header(cx: &mut Ctx<'_>, wf: &Workflow) {
    if wf.format != FORMAT_VERSION {
        cx.push(
            Diagnostic::new(
                DiagnosticCode::UnsupportedFormat,
                format!("format version {} is not supported", wf.format),
            )
            .field("format")
            .at(cx.locs.format)
            .hint(format!("this build reads `format: {FORMAT_VERSION}`")),
        );
    }
    if wf.id.trim().is_empty()
        || !wf
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        cx.push(
            Diagnostic::new(
                DiagnosticCode::InvalidId,
                format!("workflow id `{}` is not valid", wf.id),
            )
            .field("id")
            .at(cx.locs.id)
            .hint("use letters, digits, `-` and `_`, e.g. `spec-to-plan`"),
        );
    }
    for (name, spec) in &wf.inputs {
        check_input(cx, name, spec);
    }
    if wf.steps.is_empty() {
        cx.push(
            Diagnostic::new(DiagnosticCode::NoSteps, "the workflow has no steps")
                .field("steps")
                .at(cx.locs.steps)
                .hint("add at least one step under `steps:`"),
        );
    }
}

/// Step id → index, reporting ids that are not identifiers and ids used twice (the first
/// one wins).
fn index_steps(cx: &mut Ctx<'_>, list: &[Step]) -> HashMap<String, usize> {
    let mut index: HashMap<String, usize> = HashMap::with_capacity(list.len());
    for (i, step) in list.iter().enumerate() {
        let locs = cx.step_locs(i);
        if !is_identifier(&step.id) {
            cx.push(
                Diagnostic::new(
                    DiagnosticCode::InvalidId,
                    format!("step id `{}` is not a lowercase identifier", step.id),
                )
                .step(&step.id)
                .field("id")
                .at(locs.of("id"))
                .hint("use lowercase letters, digits and `_`, starting with a letter (templates read it as `steps.<id>`)"),
            );
        }
        if let Some(&first) = index.get(&step.id) {
            let first_line = cx
                .step_locs(first)
                .of("id")
                .map(|s| format!(" (first defined at line {})", s.line))
                .unwrap_or_default();
            cx.push(
                Diagnostic::new(
                    DiagnosticCode::DuplicateId,
                    format!("step id `{}` is used twice{first_line}", step.id),
                )
                .step(&step.id)
                .field("id")
                .at(locs.of("id"))
                .hint("give each step a unique id"),
            );
        } else {
            index.insert(step.id.clone(), i);
        }
    }
    index
}

/// Each step's `needs` as indices (duplicates dropped), reporting names of no step.
fn resolve_needs(
    cx: &mut Ctx<'_>,
    list: &[Step],
    index: &HashMap<String, usize>,
) -> Vec<Vec<usize>> {
    let mut needs: Vec<Vec<usize>> = vec![Vec::new(); list.len()];
    for (i, step) in list.iter().enumerate() {
        let locs = cx.step_locs(i);
        let mut seen = HashSet::new();
        for (j, need) in step.needs.iter().enumerate() {
            let at = locs.needs.get(j).copied().flatten().or(locs.of("needs"));
            match index.get(need) {
                Some(&k) => {
                    if seen.insert(k) {
                        needs[i].push(k);
                    }
                }
                None => {
                    let dym = did_you_mean(need, index.keys().map(String::as_str));
                    cx.push(
                        Diagnostic::new(
                            DiagnosticCode::UnknownNeed,
                            format!("`needs` names unknown step `{need}`{dym}"),
                        )
                        .step(&step.id)
                        .field(format!("needs[{j}]"))
                        .at(at)
                        .hint("name a step id defined in this workflow, or remove the entry"),
                    );
                }
            }
        }
    }
    needs
}

/// Alternate branches (`on_failure: {alternate: x}`): the named step must exist, need the
/// failing step, and be the alternate of no other step; it is marked as such.
fn link_alternates(
    cx: &mut Ctx<'_>,
    index: &HashMap<String, usize>,
    needs: &[Vec<usize>],
    steps: &mut [PlannedStep],
) {
    for i in 0..steps.len() {
        let OnFailure::Alternate(alt) = &steps[i].on_failure else {
            continue;
        };
        let alt = alt.clone();
        let id = steps[i].id.clone();
        let at = cx.step_locs(i).of("on_failure");
        let problem = match index.get(&alt) {
            None => {
                let dym = did_you_mean(&alt, index.keys().map(String::as_str));
                Some((
                    DiagnosticCode::UnknownStep,
                    format!("`on_failure.alternate` names unknown step `{alt}`{dym}"),
                    "name a step of this workflow that lists this step in its `needs`".to_string(),
                ))
            }
            Some(&k) if !needs[k].contains(&i) => Some((
                DiagnosticCode::InvalidValue,
                format!("the alternate step `{alt}` does not list `{id}` in its `needs`"),
                format!("add `needs: [{id}]` to step `{alt}`"),
            )),
            Some(&k) if steps[k].alternate_of.is_some() => Some((
                DiagnosticCode::InvalidValue,
                format!("step `{alt}` is already the alternate branch of another step"),
                "give each failing step its own alternate step".to_string(),
            )),
            Some(&k) => {
                steps[k].alternate_of = Some(i);
                None
            }
        };
        if let Some((code, message, hint)) = problem {
            cx.push(
                Diagnostic::new(code, message)
                    .step(&id)
                    .field("on_failure.alternate")
                    .at(at)
                    .hint(hint),
            );
        }
    }
}
