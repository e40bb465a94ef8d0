//! Templates and conditions: one minijinja environment per plan, every template compiled
//! into it once at validation and rendered by name at run time, and the references each
//! template makes checked against the workflow.
//!
//! A reference is `inputs.<name>` (a declared input), `steps.<id>.output` or
//! `steps.<id>.json` (a step the template's step depends on, see [`Scope`]), or a global
//! function of the environment. References are found with minijinja's
//! `Template::undeclared_variables(true)`.

use std::collections::{BTreeSet, HashMap};

use minijinja::{Environment, UndefinedBehavior};

use super::cycles::depends_on;
use super::report::{At, Ctx, did_you_mean};
use crate::diagnostic::DiagnosticCode;
use crate::workflow::Workflow;

/// The environment every plan compiles its templates into: minijinja with the contrib
/// filters (`truncate`, `wordcount`, ...) that Jinja users expect, strict undefined
/// values (a misspelt name fails the render instead of printing nothing), trailing
/// newlines trimmed.
pub(super) fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    minijinja_contrib::add_to_environment(&mut env);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(false);
    env
}

/// What a template may reference.
#[derive(Clone, Copy)]
pub(super) enum Scope<'a> {
    /// A workflow output: any step.
    Outputs,
    /// A step's template: only steps that `step` depends on in `graph`.
    Step {
        /// `needs` by step index.
        graph: &'a [Vec<usize>],
        /// The step whose template this is.
        step: usize,
    },
    /// A step of a workflow with a cycle: dependencies are unknown (the cycle is
    /// reported already), so references are not checked against them.
    InCycle,
}

/// Compiles one template into `env` under `name` and checks its references. Returns the
/// indices of the steps it reads, or `None` when it has errors (already reported).
/// `scope` says which steps the template may read (see [`Scope`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn compile_template(
    cx: &mut Ctx<'_>,
    env: &mut Environment<'static>,
    wf: &Workflow,
    index: &HashMap<String, usize>,
    scope: Scope<'_>,
    name: &str,
    source: String,
    at: At,
) -> Option<Vec<usize>> {
    let source_has_syntax = source.contains('{');
    if let Err(e) = env.add_template_owned(name.to_string(), source) {
        let detail = e.detail().unwrap_or("invalid syntax");
        let line = e
            .line()
            .map(|l| format!(" (line {l} of the template)"))
            .unwrap_or_default();
        cx.push(at.diag(
            DiagnosticCode::TemplateSyntax,
            format!("template does not compile: {detail}{line}"),
            "fix the minijinja syntax: `{{ inputs.name }}`, `{{ steps.<id>.output }}`, `{% if ... %}...{% endif %}`",
        ));
        return None;
    }
    // A text without `{` has no minijinja syntax, so no references: skip the second
    // parse that `undeclared_variables` makes (constant prompts, answers, headers).
    if !source_has_syntax {
        return Some(Vec::new());
    }
    let tmpl = env.get_template(name).ok()?;
    let vars = tmpl.undeclared_variables(true);
    let mut reads = BTreeSet::new();
    let mut ok = true;
    let mut vars: Vec<String> = vars.into_iter().collect();
    vars.sort();
    for var in vars {
        let mut parts = var.split('.');
        let root = parts.next().unwrap_or_default();
        let second = parts.next();
        match (root, second) {
            ("inputs", Some(input)) => {
                if !wf.inputs.contains_key(input) {
                    ok = false;
                    let dym = did_you_mean(input, wf.inputs.keys().map(String::as_str));
                    cx.push(at.diag(
                        DiagnosticCode::UnknownInput,
                        format!("template references undeclared input `inputs.{input}`{dym}"),
                        "declare it under `inputs:` or fix the name",
                    ));
                }
            }
            ("inputs", None) => {}
            ("steps", Some(step)) => match index.get(step) {
                None => {
                    ok = false;
                    let dym = did_you_mean(step, index.keys().map(String::as_str));
                    cx.push(at.diag(
                        DiagnosticCode::UnknownStep,
                        format!("template references unknown step `steps.{step}`{dym}"),
                        "reference a step id defined in this workflow",
                    ));
                }
                Some(&k) => {
                    // `Some(None)`: a step in a cycle, whose dependencies are unknown (the
                    // cycle is reported already).
                    if let Scope::Step { graph, step: me } = scope
                        && !depends_on(graph, me, k)
                    {
                        ok = false;
                        cx.push(at.diag(
                            DiagnosticCode::NotADependency,
                            format!("template reads `steps.{step}` but `{step}` is not among this step's dependencies, so its output may not exist yet"),
                            &format!("add `{step}` to this step's `needs`"),
                        ));
                        continue;
                    }
                    if let Some(attr) = parts.next()
                        && attr != "output"
                        && attr != "json"
                    {
                        ok = false;
                        cx.push(at.diag(
                            DiagnosticCode::UnknownStep,
                            format!("`steps.{step}.{attr}` does not exist"),
                            &format!("a step has `output` (its text) and `json` (its parsed JSON): write `steps.{step}.output`"),
                        ));
                    }
                    reads.insert(k);
                }
            },
            ("steps", None) => {
                ok = false;
                cx.push(at.diag(
                    DiagnosticCode::UnknownStep,
                    "template uses `steps` as a whole".to_string(),
                    "name the step: `steps.<id>.output`",
                ));
            }
            // minijinja reports global functions (`range`, `namespace`, ...) as undeclared.
            (other, _) if env.globals().any(|(g, _)| g == other) => {}
            (other, _) => {
                ok = false;
                cx.push(at.diag(
                    DiagnosticCode::UnknownInput,
                    format!("template references unknown variable `{other}`"),
                    &format!("templates see `inputs.<name>` and `steps.<id>.output`; did you mean `inputs.{other}`?"),
                ));
            }
        }
    }
    ok.then(|| reads.into_iter().collect())
}
