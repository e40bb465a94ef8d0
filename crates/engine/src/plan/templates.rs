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
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    minijinja_contrib::add_to_environment(&mut env);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(false);
    env
}

/// A plan's templates (prompts, systems, templates, conditions, outputs), by name.
///
/// A text with a `{` is compiled once into a minijinja [`Environment`] and rendered from
/// there. A text without one has no minijinja syntax (every tag, expression and comment
/// starts with `{`), so it is kept as the text it renders to: compiling it would cost
/// minijinja's preallocated instruction buffers (about 12 KB per template in minijinja
/// 2.24, `Instructions::new`) for nothing, which dominated validating large files.
pub struct Templates {
    env: Environment<'static>,
    literals: HashMap<String, String>,
}

impl std::fmt::Debug for Templates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Templates")
            .field("compiled", &self.env.templates().count())
            .field("literals", &self.literals.len())
            .finish()
    }
}

impl Default for Templates {
    fn default() -> Self {
        Self {
            env: environment(),
            literals: HashMap::new(),
        }
    }
}

impl Templates {
    /// Renders the template `name` with `ctx` (any serializable value; Nexus passes
    /// `{inputs, steps}`).
    ///
    /// # Errors
    /// minijinja's error: an unknown template name, or a failed render (an undefined
    /// value, a filter's error).
    pub fn render<S: serde::Serialize>(
        &self,
        name: &str,
        ctx: S,
    ) -> Result<String, minijinja::Error> {
        if let Some(text) = self.literals.get(name) {
            return Ok(text.clone());
        }
        self.env.get_template(name)?.render(ctx)
    }

    /// Keeps a text without template syntax under `name`, as minijinja would render it
    /// with `keep_trailing_newline(false)`: one trailing `\n`, then one `\r`, removed
    /// (minijinja's lexer, `Tokenizer::new`).
    fn add_literal(&mut self, name: String, mut text: String) {
        if text.ends_with('\n') {
            text.pop();
        }
        if text.ends_with('\r') {
            text.pop();
        }
        self.literals.insert(name, text);
    }
}

/// What the templates of a `map` or `loop` body see besides the body's own steps: the
/// variables the body binds (`item`, `index`, `state`, `iteration`), and the steps the
/// body's owner may read in the enclosing workflow or body (its own scope).
pub(super) struct BodyFrame<'a> {
    /// Variable names the body's templates may read (their first path segment).
    pub(super) vars: Vec<String>,
    /// The enclosing step list's ids.
    pub(super) outer_index: &'a HashMap<String, usize>,
    /// The scope of the body's owner (the `map` or `loop` step) in the enclosing list.
    pub(super) outer_scope: Scope<'a>,
    /// The enclosing steps the body's templates read (indices in the enclosing list):
    /// the owner reads them, so their outputs reach the body at run time.
    pub(super) outer_reads: std::cell::RefCell<BTreeSet<usize>>,
}

impl BodyFrame<'_> {
    /// The variables bound by this body and the enclosing ones, innermost first.
    fn all_vars(&self) -> Vec<String> {
        let mut vars = self.vars.clone();
        if let Scope::Body { frame, .. } = self.outer_scope {
            vars.extend(frame.all_vars());
        }
        vars
    }

    /// Whether `name` is a variable bound by this body or an enclosing one.
    fn binds(&self, name: &str) -> bool {
        self.vars.iter().any(|v| v == name)
            || matches!(self.outer_scope, Scope::Body { frame, .. } if frame.binds(name))
    }
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
    /// A template of a `map` or `loop` body: the body's steps that `step` depends on in
    /// `graph` (any body step when `step` is `None`: the owner's `result`, `set` and
    /// `until`; any when `graph` is `None`, a body with a cycle), then what the body's
    /// frame sees.
    Body {
        /// `needs` of the body's steps, by index; `None` when they form a cycle.
        graph: Option<&'a [Vec<usize>]>,
        /// The body step whose template this is.
        step: Option<usize>,
        /// The variables and enclosing steps the body sees.
        frame: &'a BodyFrame<'a>,
    },
}

/// Where a referenced step was found.
enum Found {
    /// In the template's own step list, at this index.
    Local(usize),
    /// In an enclosing list (recorded in that body's frame).
    Outer,
}

/// Why a referenced step cannot be read.
enum Missing {
    /// No step has this id where the template is.
    Unknown,
    /// The step exists but the template's step does not depend on it.
    NotADependency,
}

/// Looks `id` up from a template in `scope` whose own step list is `index`, then in the
/// enclosing lists of a body.
fn find_step(scope: Scope<'_>, index: &HashMap<String, usize>, id: &str) -> Result<Found, Missing> {
    if let Some(&k) = index.get(id) {
        let reachable = match scope {
            Scope::Step { graph, step } => depends_on(graph, step, k),
            Scope::Body {
                graph: Some(graph),
                step: Some(step),
                ..
            } => depends_on(graph, step, k),
            Scope::Outputs | Scope::InCycle | Scope::Body { .. } => true,
        };
        return if reachable {
            Ok(Found::Local(k))
        } else {
            Err(Missing::NotADependency)
        };
    }
    let Scope::Body { frame, .. } = scope else {
        return Err(Missing::Unknown);
    };
    match find_step(frame.outer_scope, frame.outer_index, id)? {
        Found::Local(k) => {
            frame.outer_reads.borrow_mut().insert(k);
            Ok(Found::Outer)
        }
        Found::Outer => Ok(Found::Outer),
    }
}

/// Compiles one template into `env` under `name` and checks its references. Returns the
/// indices of the steps it reads, or `None` when it has errors (already reported).
/// `scope` says which steps the template may read (see [`Scope`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn compile_template(
    cx: &mut Ctx<'_>,
    templates: &mut Templates,
    wf: &Workflow,
    index: &HashMap<String, usize>,
    scope: Scope<'_>,
    name: &str,
    source: String,
    at: At,
) -> Option<Vec<usize>> {
    // A text without `{` has no minijinja syntax, so no references (constant prompts,
    // answers, headers): kept as it is, see [`Templates`].
    if !source.contains('{') {
        templates.add_literal(name.to_string(), source);
        return Some(Vec::new());
    }
    let env = &mut templates.env;
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
            ("steps", Some(step)) => match find_step(scope, index, step) {
                Err(Missing::Unknown) => {
                    ok = false;
                    let dym = did_you_mean(step, index.keys().map(String::as_str));
                    cx.push(at.diag(
                        DiagnosticCode::UnknownStep,
                        format!("template references unknown step `steps.{step}`{dym}"),
                        "reference a step id defined in this workflow (a step inside a `map` or `loop` body is read only from that body)",
                    ));
                }
                Err(Missing::NotADependency) => {
                    ok = false;
                    cx.push(at.diag(
                        DiagnosticCode::NotADependency,
                        format!("template reads `steps.{step}` but `{step}` is not among this step's dependencies, so its output may not exist yet"),
                        &format!("add `{step}` to this step's `needs`"),
                    ));
                }
                Ok(found) => {
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
                    if let Found::Local(k) = found {
                        reads.insert(k);
                    }
                }
            },
            ("run", Some("id" | "callback_url")) => {}
            ("run", _) => {
                ok = false;
                cx.push(at.diag(
                    DiagnosticCode::UnknownInput,
                    format!("template references `{var}`, which a run does not have"),
                    "a run has `run.id` and `run.callback_url` (where its `event` steps' events are posted, as `{{ run.callback_url }}/<event>`)",
                ));
            }
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
            (other, _) if matches!(scope, Scope::Body { frame, .. } if frame.binds(other)) => {}
            (other, _) => {
                ok = false;
                let hint = match scope {
                    Scope::Body { frame, .. } => {
                        let vars = frame.all_vars();
                        let dym = did_you_mean(other, vars.iter().map(String::as_str));
                        format!(
                            "this body's templates see `inputs.<name>`, `steps.<id>.output` and `{}`{dym}",
                            vars.join("`, `")
                        )
                    }
                    _ => format!(
                        "templates see `inputs.<name>` and `steps.<id>.output`; did you mean `inputs.{other}`?"
                    ),
                };
                cx.push(at.diag(
                    DiagnosticCode::UnknownInput,
                    format!("template references unknown variable `{other}`"),
                    &hint,
                ));
            }
        }
    }
    ok.then(|| reads.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text kept as a literal renders exactly as minijinja renders the same text
    /// compiled (trailing newline rules included).
    #[test]
    fn a_literal_renders_as_minijinja_renders_the_same_text() {
        let texts = [
            "ok",
            "ok\n",
            "ok\n\n",
            "a\r\n",
            "\r",
            "",
            "100 % sure #1\n  indented\n",
        ];
        let mut templates = Templates::default();
        let mut env = environment();
        for (i, text) in texts.iter().enumerate() {
            templates.add_literal(format!("t{i}"), (*text).to_string());
            env.add_template_owned(format!("t{i}"), (*text).to_string())
                .unwrap();
        }
        for (i, text) in texts.iter().enumerate() {
            let name = format!("t{i}");
            let want = env.get_template(&name).unwrap().render(()).unwrap();
            assert_eq!(templates.render(&name, ()).unwrap(), want, "text {text:?}");
        }
        assert!(templates.render("missing", ()).is_err());
    }
}
