//! The planner of `workflow` steps: the child file is read and validated with the
//! caller (its diagnostics summarized at the step), a call cycle between files is
//! reported with the chain of files, the inputs given are checked against the child's
//! declarations and compiled.

use std::path::Path;
use std::sync::Arc;

use crate::diagnostic::DiagnosticCode;
use crate::plan::report::{At, Ctx};
use crate::plan::step::StepPlanner;
use crate::plan::validate::validate_in;
use crate::plan::{Action, Plan, StateInit, SubWorkflowAction};
use crate::workflow::{MAX_WORKFLOW_DEPTH, OutputFormat, SubWorkflowStep};

/// What a step with errors plans to (discarded: the errors are reported).
fn nothing() -> Action {
    Action::Template {
        template: String::new(),
        format: OutputFormat::Text,
    }
}

/// A path's file name for a chain of calls.
fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Plans a `workflow` step.
pub(in crate::plan) fn plan(p: &mut StepPlanner<'_, '_>, step: &SubWorkflowStep) -> Action {
    if p.locs.missing.is_some() {
        return nothing();
    }
    let base =
        p.cx.file
            .map(Path::new)
            .and_then(Path::parent)
            .unwrap_or(Path::new(""));
    let path = base.join(&step.workflow);
    let shown = path.display().to_string();
    let at = p.at("workflow");
    let Some(child) = load_workflow(p.cx, &at, &path, &shown, p.wf.local_only) else {
        return nothing();
    };
    let mut inputs = Vec::with_capacity(step.inputs.len());
    for (name, value) in &step.inputs {
        if !child.workflow.inputs.contains_key(name) {
            let declared: Vec<&str> = child.workflow.inputs.keys().map(String::as_str).collect();
            p.report(
                "inputs",
                DiagnosticCode::BadInput,
                format!("`inputs.{name}` is not an input of `{shown}`"),
                &format!(
                    "`{shown}` declares: {}",
                    if declared.is_empty() {
                        "no inputs".to_string()
                    } else {
                        declared.join(", ")
                    }
                ),
            );
            continue;
        }
        let init = match value {
            serde_json::Value::String(text) if text.contains('{') => p
                .compile_named(&format!("inputs.{name}"), "inputs", text.clone())
                .map(StateInit::Template),
            other => {
                let kind = child.workflow.inputs.get(name).map(|spec| spec.kind);
                if let Some(kind) = kind
                    && !literal_fits(kind, other)
                {
                    p.report(
                        "inputs",
                        DiagnosticCode::BadInput,
                        format!(
                            "`inputs.{name}` is `{other}`, but `{shown}` declares it a {}",
                            crate::plan::input_type_name(kind)
                        ),
                        "give a value of the declared type",
                    );
                }
                Some(StateInit::Value(other.clone()))
            }
        };
        if let Some(init) = init {
            inputs.push((name.clone(), init));
        }
    }
    for (name, spec) in &child.workflow.inputs {
        if spec.default.is_none() && !step.inputs.contains_key(name) {
            p.report(
                "inputs",
                DiagnosticCode::MissingInput,
                format!("`{shown}` needs the input `{name}`, which the step does not give"),
                &format!("add `inputs: {{{name}: ...}}` to the step"),
            );
        }
    }
    Action::Workflow(Box::new(SubWorkflowAction {
        file: shown,
        plan: Arc::new(child),
        inputs,
    }))
}

/// Whether a literal value given to a child's input reads as its declared type (the run
/// passes it as text, parsed as the CLI parses `--input`).
fn literal_fits(kind: crate::workflow::InputType, value: &serde_json::Value) -> bool {
    use crate::workflow::InputType;
    match (kind, value) {
        (InputType::Number, serde_json::Value::Number(_)) => true,
        (InputType::Number, serde_json::Value::String(s)) => s.trim().parse::<f64>().is_ok(),
        (InputType::Number, _) => false,
        (InputType::Boolean, serde_json::Value::Bool(_)) => true,
        (InputType::Boolean, serde_json::Value::String(s)) => matches!(s.trim(), "true" | "false"),
        (InputType::Boolean, _) => false,
        (InputType::String | InputType::File | InputType::Json, _) => true,
    }
}

/// Reads and validates a called workflow file (a `workflow` step's or a run failure
/// handler's); `None` (reported at `at`) when it cannot be read, calls back into a file
/// being validated, nests too deep, or is invalid. A `local_only` caller makes the
/// callee `local_only` too (a private workflow's data stays on the machine whatever file
/// it calls).
pub(in crate::plan) fn load_workflow(
    cx: &mut Ctx<'_>,
    at: &At,
    path: &Path,
    shown: &str,
    local_only: bool,
) -> Option<Plan> {
    let report = |cx: &mut Ctx<'_>, code, message: String, hint: &str| {
        cx.push(at.diag(code, message, hint));
    };
    let canonical = match std::fs::canonicalize(path) {
        Ok(c) => c,
        Err(e) => {
            report(
                cx,
                DiagnosticCode::Io,
                format!("cannot read the sub-workflow `{shown}`: {e}"),
                "give the path of a workflow file relative to this file's folder",
            );
            return None;
        }
    };
    if let Some(root) = cx.root
        && !canonical.starts_with(root)
    {
        report(
            cx,
            DiagnosticCode::InvalidValue,
            format!(
                "the sub-workflow `{shown}` is outside the workflows folder (it is {})",
                canonical.display()
            ),
            "move the file into the workflows folder (a link pointing out of it counts as outside), or run this workflow with `nexus run`",
        );
        return None;
    }
    if let Some(pos) = cx.chain.iter().position(|c| *c == canonical) {
        let mut names: Vec<String> = cx.chain[pos..].iter().map(|c| name_of(c)).collect();
        names.push(name_of(&canonical));
        report(
            cx,
            DiagnosticCode::Cycle,
            format!(
                "workflow files call each other in a cycle: {}",
                names.join(" → ")
            ),
            "remove one of these `workflow` steps so no file calls itself",
        );
        return None;
    }
    if cx.chain.len() >= MAX_WORKFLOW_DEPTH {
        report(
            cx,
            DiagnosticCode::InvalidValue,
            format!("`workflow` steps nest more than {MAX_WORKFLOW_DEPTH} files deep"),
            "call fewer levels of sub-workflows",
        );
        return None;
    }
    let problems = match crate::parse::parse_file(path) {
        Err(d) => vec![*d],
        Ok(mut parsed) => {
            parsed.workflow.local_only |= local_only;
            match validate_in(&parsed, cx.chain, cx.root) {
                Ok(plan) => return Some(plan),
                Err(diags) => diags,
            }
        }
    };
    let first = problems
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    let more = match problems.len() {
        0 | 1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    let code = if problems.iter().any(|d| d.code == DiagnosticCode::Cycle) {
        DiagnosticCode::Cycle
    } else {
        DiagnosticCode::InvalidValue
    };
    report(
        cx,
        code,
        format!("the sub-workflow `{shown}` is not valid: {first}{more}"),
        &format!("run `nexus validate {shown}` and fix what it reports"),
    );
    None
}

/// The inputs a run failure handler may declare (see
/// [`crate::workflow::RunFailureHandler`]).
pub const HANDLER_INPUTS: [&str; 4] = ["run_id", "workflow_id", "error", "failed_steps"];

/// Plans the workflow-level `on_failure` handler: its file loaded like a sub-workflow's,
/// its required inputs among [`HANDLER_INPUTS`].
pub(in crate::plan) fn plan_failure_handler(
    cx: &mut Ctx<'_>,
    handler: &crate::workflow::RunFailureHandler,
    local_only: bool,
) -> Option<(String, Arc<Plan>)> {
    let base = cx
        .file
        .map(Path::new)
        .and_then(Path::parent)
        .unwrap_or(Path::new(""));
    let path = base.join(&handler.workflow);
    let shown = path.display().to_string();
    let at = At {
        step: None,
        field: "on_failure.workflow".into(),
        span: cx.locs.on_failure,
    };
    let plan = load_workflow(cx, &at, &path, &shown, local_only)?;
    let mut ok = true;
    for (name, spec) in &plan.workflow.inputs {
        if spec.default.is_none() && !HANDLER_INPUTS.contains(&name.as_str()) {
            ok = false;
            cx.push(at.diag(
                DiagnosticCode::MissingInput,
                format!("the failure handler `{shown}` needs the input `{name}`, which a failed run does not give"),
                &format!("declare only inputs among {} (or give `{name}` a default)", HANDLER_INPUTS.join(", ")),
            ));
        }
    }
    ok.then(|| (shown, Arc::new(plan)))
}
