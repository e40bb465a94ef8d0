//! Validation: a parsed [`Workflow`] becomes a [`Plan`] — the DAG with its templates
//! compiled — or a list of located [`Diagnostic`]s.
//!
//! Checks, each reported with file, line and column (or step id and field) and a hint:
//! format version, ids, duplicate step ids, unknown `needs`, cycles (the cycle is named),
//! fields that do not belong to a step's kind, value ranges, template and condition syntax,
//! references to undeclared inputs or unknown steps, references to steps that are not
//! dependencies, unknown model providers, output schemas that are not valid JSON Schema.
//!
//! Templates and conditions use minijinja, one engine for both. A condition `when: EXPR`
//! is compiled as the template `{% if EXPR %}true{% endif %}`, so its references are
//! checked the same way. References are found with minijinja's
//! `Template::undeclared_variables(true)`.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior};

use crate::diagnostic::{Diagnostic, DiagnosticCode, Span};
use crate::parse::{Locations, Parsed, StepLocations};
use crate::workflow::{
    Agent, ApprovalSettings, ApprovalStep, Budget, FORMAT_VERSION, FallbackLadder, InputSpec,
    InputType, KindName, LlmStep, ModelRequirements, ModelSpec, OnFailure, OutputFormat,
    RetryPolicy, Step, StepKind, TaskClass, TemplateStep, Timeouts, Workflow,
};

/// Provider ids a model reference may name.
pub const KNOWN_PROVIDERS: [&str; 3] = ["ollama", "openai", "embedded"];

/// Default sampling temperature of `llm` steps.
pub const DEFAULT_TEMPERATURE: f32 = 0.2;
/// Default `max_tokens` of `llm` steps.
pub const DEFAULT_MAX_TOKENS: u32 = 256;

/// What a planned step does.
#[derive(Debug, Clone)]
pub enum Action {
    /// Call a model.
    Llm(Box<LlmAction>),
    /// Render a template.
    Template {
        /// Name of the compiled template in [`Plan::env`].
        template: String,
        /// Text or JSON.
        format: OutputFormat,
    },
    /// Wait for a human's decision.
    Approval {
        /// Name of the compiled question template.
        prompt: String,
        /// Timeout and default decision.
        settings: ApprovalSettings,
    },
}

/// A substitute agent of the fallback ladder, resolved for one step.
#[derive(Debug, Clone)]
pub struct Substitute {
    /// The agent's name.
    pub agent: String,
    /// Name of the compiled system template, if the agent has one.
    pub system: Option<String>,
    /// The agent's model requirements (the workflow's `local_only` applied).
    pub model: ModelRequirements,
}

/// A validated `llm` step.
#[derive(Debug, Clone)]
pub struct LlmAction {
    /// Name of the compiled system template, if any.
    pub system: Option<String>,
    /// Name of the compiled prompt template.
    pub prompt: String,
    /// Model requirements (explicit preferences, minimum context, locality).
    pub model: ModelRequirements,
    /// Sampling temperature.
    pub temperature: f32,
    /// Maximum tokens to generate.
    pub max_tokens: u32,
    /// JSON Schema of the output and its compiled validator.
    pub output_schema: Option<(serde_json::Value, Arc<jsonschema::Validator>)>,
    /// The kind of work, for the selector.
    pub task: TaskClass,
    /// The agent the step uses, if any.
    pub agent: Option<String>,
    /// The fallback ladder.
    pub fallback: FallbackLadder,
    /// The substitute agent rung, when the ladder names one.
    pub substitute: Option<Substitute>,
    /// The step's own budget.
    pub budget: Option<Budget>,
}

impl LlmAction {
    /// The instruction that carries the output schema in the prompt when it cannot be a
    /// constraint (a server that refuses structured output, the ladder's simplified rung);
    /// empty without a schema.
    pub fn schema_note(&self) -> String {
        self.output_schema
            .as_ref()
            .map(|(schema, _)| {
                format!("\n\nReply with only a JSON value that follows this JSON Schema:\n{schema}")
            })
            .unwrap_or_default()
    }
}

/// One step of a [`Plan`].
#[derive(Debug, Clone)]
pub struct PlannedStep {
    /// Step id.
    pub id: String,
    /// Kind, as written.
    pub kind: KindName,
    /// What it does.
    pub action: Action,
    /// Indices of the steps it needs.
    pub needs: Vec<usize>,
    /// Indices of the steps whose outputs its templates read (a subset of its ancestors).
    pub reads: Vec<usize>,
    /// Name of the compiled condition template, if any.
    pub when: Option<String>,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// What happens when it fails.
    pub on_failure: OnFailure,
    /// Whether a stored output may be reused.
    pub cache: bool,
    /// When this step is the `on_failure: {alternate: ...}` branch of another step: that
    /// step's index. It runs only when that step failed.
    pub alternate_of: Option<usize>,
    /// A hash of the step's definition as written (position excluded), for the output
    /// cache key.
    pub definition_hash: String,
}

/// A validated workflow, ready to run.
#[derive(Debug)]
pub struct Plan {
    /// The workflow as written.
    pub workflow: Workflow,
    /// The file it came from, if any.
    pub file: Option<String>,
    /// Steps in file order.
    pub steps: Vec<PlannedStep>,
    /// Step id → index.
    pub index: HashMap<String, usize>,
    /// For each step, the indices of the steps that need it.
    pub dependants: Vec<Vec<usize>>,
    /// Outputs: name → compiled template name, and the steps each reads.
    pub outputs: Vec<(String, String, Vec<usize>)>,
    /// Compiled templates (prompts, systems, templates, conditions, outputs).
    pub env: Environment<'static>,
}

struct Ctx<'a> {
    file: Option<&'a str>,
    locs: &'a Locations,
    diags: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn push(&mut self, mut d: Diagnostic) {
        d.file = self.file.map(str::to_owned);
        self.diags.push(d);
    }
    fn step_locs(&self, i: usize) -> StepLocations {
        self.locs.step.get(i).cloned().unwrap_or_default()
    }
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (strsim::levenshtein(name, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn did_you_mean<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> String {
    match closest(name, candidates) {
        Some(c) => format!(" (did you mean `{c}`?)"),
        None => String::new(),
    }
}

/// Validates a parsed workflow and builds its plan.
///
/// # Errors
/// Every problem found, each located (never just the first).
pub fn validate(parsed: &Parsed) -> Result<Plan, Vec<Diagnostic>> {
    let wf = &parsed.workflow;
    let mut cx = Ctx {
        file: parsed.file.as_deref(),
        locs: &parsed.locations,
        diags: Vec::new(),
    };

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
        check_input(&mut cx, name, spec);
    }
    if wf.steps.is_empty() {
        cx.push(
            Diagnostic::new(DiagnosticCode::NoSteps, "the workflow has no steps")
                .field("steps")
                .at(cx.locs.steps)
                .hint("add at least one step under `steps:`"),
        );
    }

    // Ids.
    let mut index: HashMap<String, usize> = HashMap::with_capacity(wf.steps.len());
    for (i, step) in wf.steps.iter().enumerate() {
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

    // Needs.
    let mut needs: Vec<Vec<usize>> = vec![Vec::new(); wf.steps.len()];
    for (i, step) in wf.steps.iter().enumerate() {
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
    let has_cycle = check_cycles(&mut cx, wf, &needs);

    // Dependency graph for reference checks; unknown when there is a cycle.
    let graph = (!has_cycle).then_some(needs.as_slice());

    let mut env = Environment::new();
    // The contrib filters (`truncate`, `wordcount`, ...) that Jinja users expect.
    minijinja_contrib::add_to_environment(&mut env);
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(false);

    let mut steps = Vec::with_capacity(wf.steps.len());
    for (i, step) in wf.steps.iter().enumerate() {
        if let Some(planned) = plan_step(&mut cx, &mut env, wf, &index, graph, i, step, &needs[i]) {
            steps.push(planned);
        }
    }
    let budget_at = cx.locs.budget;
    check_budget(&mut cx, None, "budget", wf.budget.as_ref(), budget_at);
    // Alternate branches: the named step must exist and need the failing step.
    if steps.len() == wf.steps.len() {
        for i in 0..steps.len() {
            let OnFailure::Alternate(alt) = &steps[i].on_failure else {
                continue;
            };
            let at = cx.step_locs(i).of("on_failure");
            match index.get(alt) {
                None => {
                    let dym = did_you_mean(alt, index.keys().map(String::as_str));
                    let id = steps[i].id.clone();
                    cx.push(
                        Diagnostic::new(
                            DiagnosticCode::UnknownStep,
                            format!("`on_failure.alternate` names unknown step `{alt}`{dym}"),
                        )
                        .step(&id)
                        .field("on_failure.alternate")
                        .at(at)
                        .hint("name a step of this workflow that lists this step in its `needs`"),
                    );
                }
                Some(&k) if !needs[k].contains(&i) => {
                    let id = steps[i].id.clone();
                    cx.push(
                        Diagnostic::new(
                            DiagnosticCode::InvalidValue,
                            format!(
                                "the alternate step `{alt}` does not list `{id}` in its `needs`"
                            ),
                        )
                        .step(&id)
                        .field("on_failure.alternate")
                        .at(at)
                        .hint(format!("add `needs: [{id}]` to step `{alt}`")),
                    );
                }
                Some(&k) if steps[k].alternate_of.is_some() => {
                    let id = steps[i].id.clone();
                    cx.push(
                        Diagnostic::new(
                            DiagnosticCode::InvalidValue,
                            format!("step `{alt}` is already the alternate branch of another step"),
                        )
                        .step(&id)
                        .field("on_failure.alternate")
                        .at(at)
                        .hint("give each failing step its own alternate step"),
                    );
                }
                Some(&k) => steps[k].alternate_of = Some(i),
            }
        }
    }

    let mut outputs = Vec::new();
    for (name, text) in &wf.outputs {
        let tname = format!("outputs.{name}");
        let at = cx.locs.outputs.get(name).copied();
        let reads = compile_template(
            &mut cx,
            &mut env,
            wf,
            &index,
            Scope::Outputs,
            &tname,
            text.clone(),
            At {
                step: None,
                field: format!("outputs.{name}"),
                span: at,
            },
        );
        if let Some(reads) = reads {
            outputs.push((name.clone(), tname, reads));
        }
    }

    if !cx.diags.is_empty() {
        return Err(cx.diags);
    }
    let mut dependants = vec![Vec::new(); wf.steps.len()];
    for (i, ns) in needs.iter().enumerate() {
        for &n in ns {
            dependants[n].push(i);
        }
    }
    Ok(Plan {
        workflow: wf.clone(),
        file: parsed.file.clone(),
        steps,
        index,
        dependants,
        outputs,
        env,
    })
}

fn check_input(cx: &mut Ctx<'_>, name: &str, spec: &InputSpec) {
    let at = cx.locs.inputs.get(name).copied();
    if !is_identifier(name) {
        cx.push(
            Diagnostic::new(
                DiagnosticCode::InvalidId,
                format!("input name `{name}` is not a lowercase identifier"),
            )
            .field(format!("inputs.{name}"))
            .at(at)
            .hint("use lowercase letters, digits and `_` (templates read it as `inputs.<name>`)"),
        );
    }
    if let Some(default) = &spec.default {
        let ok = match spec.kind {
            InputType::String | InputType::File => default.is_string(),
            InputType::Number => default.is_number(),
            InputType::Boolean => default.is_boolean(),
            InputType::Json => true,
        };
        if !ok {
            cx.push(
                Diagnostic::new(
                    DiagnosticCode::InvalidValue,
                    format!(
                        "default of input `{name}` is not a {}",
                        input_type_name(spec.kind)
                    ),
                )
                .field(format!("inputs.{name}.default"))
                .at(at)
                .hint("make the default match the input's `type`, or change the type"),
            );
        }
    }
}

/// The name of an input type as written in files.
pub fn input_type_name(t: InputType) -> &'static str {
    match t {
        InputType::String => "string",
        InputType::Number => "number",
        InputType::Boolean => "boolean",
        InputType::File => "file",
        InputType::Json => "json",
    }
}

/// Finds cycles with a depth-first search and reports each once, naming its steps.
fn check_cycles(cx: &mut Ctx<'_>, wf: &Workflow, needs: &[Vec<usize>]) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let n = needs.len();
    let mut mark = vec![Mark::New; n];
    let mut found = false;
    let mut reported: HashSet<Vec<usize>> = HashSet::new();
    for root in 0..n {
        if mark[root] != Mark::New {
            continue;
        }
        // Iterative DFS: stack of (node, next child index); `path` mirrors the stack.
        let mut stack: Vec<(usize, usize)> = vec![(root, 0)];
        mark[root] = Mark::Active;
        while let Some(&mut (node, ref mut child)) = stack.last_mut() {
            if let Some(&next) = needs[node].get(*child) {
                *child += 1;
                match mark[next] {
                    Mark::New => {
                        mark[next] = Mark::Active;
                        stack.push((next, 0));
                    }
                    Mark::Active => {
                        found = true;
                        let pos = stack.iter().position(|(s, _)| *s == next).unwrap_or(0);
                        // The stack goes from dependant to dependency; a cycle reads best
                        // in execution order, so reverse it.
                        let mut cycle: Vec<usize> = stack[pos..].iter().map(|(s, _)| *s).collect();
                        cycle.reverse();
                        // Start the cycle at the step written first in the file.
                        if let Some(min_pos) = cycle
                            .iter()
                            .enumerate()
                            .min_by_key(|(_, s)| **s)
                            .map(|(i, _)| i)
                        {
                            cycle.rotate_left(min_pos);
                        }
                        let mut key = cycle.clone();
                        key.sort_unstable();
                        if reported.insert(key) {
                            let names: Vec<&str> =
                                cycle.iter().map(|&s| wf.steps[s].id.as_str()).collect();
                            let first = cycle[0];
                            let text = format!("{} → {}", names.join(" → "), names[0]);
                            let locs = cx.step_locs(first);
                            cx.push(
                                Diagnostic::new(
                                    DiagnosticCode::Cycle,
                                    format!("the steps form a cycle: {text}"),
                                )
                                .step(&wf.steps[first].id)
                                .field("needs")
                                .at(locs.of("needs"))
                                .hint(
                                    "remove one of these `needs` entries so the steps form a DAG",
                                ),
                            );
                        }
                    }
                    Mark::Done => {}
                }
            } else {
                mark[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    found
}

/// Whether step `from` depends on step `to`, directly or through other steps. Direct
/// needs are checked first (the common case); otherwise a depth-first search over `needs`,
/// O(steps + edges) at worst. Only called on acyclic graphs.
fn depends_on(needs: &[Vec<usize>], from: usize, to: usize) -> bool {
    if needs[from].contains(&to) {
        return true;
    }
    let mut seen = vec![false; needs.len()];
    let mut stack = vec![from];
    while let Some(i) = stack.pop() {
        for &d in &needs[i] {
            if d == to {
                return true;
            }
            if !seen[d] {
                seen[d] = true;
                stack.push(d);
            }
        }
    }
    false
}

/// What a template may reference.
#[derive(Clone, Copy)]
enum Scope<'a> {
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

struct At {
    step: Option<String>,
    field: String,
    span: Option<Span>,
}

impl At {
    fn diag(&self, code: DiagnosticCode, message: String, hint: &str) -> Diagnostic {
        let mut d = Diagnostic::new(code, message)
            .field(&self.field)
            .at(self.span)
            .hint(hint);
        if let Some(step) = &self.step {
            d = d.step(step);
        }
        d
    }
}

/// Compiles one template into `env` under `name` and checks its references. Returns the
/// indices of the steps it reads, or `None` when it has errors (already reported).
/// `scope` says which steps the template may read (see [`Scope`]).
#[allow(clippy::too_many_arguments)]
fn compile_template(
    cx: &mut Ctx<'_>,
    env: &mut Environment<'static>,
    wf: &Workflow,
    index: &HashMap<String, usize>,
    scope: Scope<'_>,
    name: &str,
    source: String,
    at: At,
) -> Option<Vec<usize>> {
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
    // minijinja reports global functions (`range`, `namespace`, ...) as undeclared too.
    let globals: HashSet<&str> = env.globals().map(|(n, _)| n).collect();
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
            (other, _) if globals.contains(other) => {}
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

/// What planning one step needs: the validation context, the template environment, the
/// workflow, the step's scope and locations, and the steps its templates read so far.
struct StepPlanner<'p, 'c> {
    cx: &'p mut Ctx<'c>,
    env: &'p mut Environment<'static>,
    wf: &'p Workflow,
    index: &'p HashMap<String, usize>,
    scope: Scope<'p>,
    id: &'p str,
    locs: StepLocations,
    reads: BTreeSet<usize>,
}

impl StepPlanner<'_, '_> {
    /// Where the step's `field` is, for a diagnostic.
    fn at(&self, field: &str) -> At {
        At {
            step: Some(self.id.to_string()),
            field: field.to_string(),
            span: self.locs.of(field),
        }
    }

    /// Reports a problem with `field`.
    fn report(&mut self, field: &str, code: DiagnosticCode, message: String, hint: &str) {
        let d = self.at(field).diag(code, message, hint);
        self.cx.push(d);
    }

    /// Compiles the step's template `text` written in `field` as `steps.<id>.<field>`,
    /// adding the steps it reads; the template's name, or `None` when it has errors.
    fn compile(&mut self, field: &str, text: &str) -> Option<String> {
        let name = format!("steps.{}.{field}", self.id);
        let at = self.at(field);
        let reads = compile_template(
            self.cx,
            self.env,
            self.wf,
            self.index,
            self.scope,
            &name,
            text.to_string(),
            at,
        )?;
        self.reads.extend(reads);
        Some(name)
    }

    /// The agent `name` written in `field`, or `None` (reported) when it is not declared.
    fn agent(&mut self, field: &str, name: &str) -> Option<Agent> {
        if let Some(a) = self.wf.agents.get(name) {
            return Some(a.clone());
        }
        let dym = did_you_mean(name, self.wf.agents.keys().map(String::as_str));
        self.report(
            field,
            DiagnosticCode::UnknownAgent,
            format!("`{field}` names unknown agent `{name}`{dym}"),
            "declare the agent under the workflow's `agents:` or fix the name",
        );
        None
    }
}

/// Reports the fields written on the step that its kind does not use, and the kind's
/// required field when it is missing (both found by the reader, see
/// [`StepLocations::unexpected`]).
fn check_kind_fields(p: &mut StepPlanner<'_, '_>, kind: KindName) {
    for field in p.locs.unexpected.clone() {
        p.report(
            field,
            DiagnosticCode::UnexpectedField,
            format!(
                "field `{field}` is not used by `kind: {}` steps",
                kind.as_str()
            ),
            "remove the field, or change the step's `kind`",
        );
    }
    if let Some(required) = p.locs.missing {
        let d = Diagnostic::new(
            DiagnosticCode::MissingField,
            format!("`kind: {}` steps need a `{required}`", kind.as_str()),
        )
        .step(p.id)
        .field(required)
        .at(p.locs.start)
        .hint(format!("add `{required}: ...` to the step"));
        p.cx.push(d);
    }
}

/// Checks the retry policy: at least one attempt, a sane coefficient, ordered intervals.
fn check_retry(p: &mut StepPlanner<'_, '_>, retry: &RetryPolicy) {
    if retry.max_attempts == 0 {
        p.report(
            "retry",
            DiagnosticCode::InvalidValue,
            "`retry.max_attempts` must be at least 1".into(),
            "use 1 for no retries, or more",
        );
    }
    if !(retry.backoff_coefficient >= 1.0 && retry.backoff_coefficient <= 100.0) {
        p.report(
            "retry",
            DiagnosticCode::InvalidValue,
            format!(
                "`retry.backoff_coefficient` is {}; it must be between 1.0 and 100.0",
                retry.backoff_coefficient
            ),
            "use 2.0 for doubling delays, 1.0 for a constant delay",
        );
    }
    if retry.max_interval < retry.initial_interval {
        p.report(
            "retry",
            DiagnosticCode::InvalidValue,
            "`retry.max_interval` is shorter than `retry.initial_interval`".into(),
            "make `max_interval` at least `initial_interval`",
        );
    }
}

/// Checks that no timeout is zero.
fn check_timeouts(p: &mut StepPlanner<'_, '_>, timeouts: &Timeouts) {
    for (name, value) in [
        ("first_token", timeouts.first_token),
        ("idle", timeouts.idle),
        ("total", timeouts.total),
    ] {
        if value.is_some_and(|d| d.is_zero()) {
            p.report(
                "timeout",
                DiagnosticCode::InvalidValue,
                format!("`timeout.{name}` is zero"),
                "give a positive duration such as `30s`, or leave the field out",
            );
        }
    }
}

/// Compiles the step's `when` condition as `{% if EXPR %}true{% endif %}`; its template
/// name, or `None` when there is none or it has errors (reported).
fn plan_condition(p: &mut StepPlanner<'_, '_>, expr: &str) -> Option<String> {
    if let Err(e) = Environment::new().compile_expression(expr) {
        p.report(
            "when",
            DiagnosticCode::TemplateSyntax,
            format!(
                "condition does not compile: {}",
                e.detail().unwrap_or("invalid expression")
            ),
            "write a minijinja expression such as `inputs.depth == \"full\"`",
        );
        return None;
    }
    p.compile("when", &format!("{{% if {expr} %}}true{{% endif %}}"))
}

/// Plans an `llm` step: agents, templates, model references, sampling parameters,
/// output schema, budget.
fn plan_llm(p: &mut StepPlanner<'_, '_>, step: &LlmStep) -> Action {
    check_budget(
        p.cx,
        Some(p.id),
        "budget",
        step.budget.as_ref(),
        p.locs.of("budget"),
    );
    let agent = step.agent.as_deref().and_then(|a| p.agent("agent", a));
    if agent.as_ref().is_some_and(|a| a.system.is_some()) && step.system.is_some() {
        p.report(
            "system",
            DiagnosticCode::InvalidValue,
            "the step sets `system` and uses an agent that has its own system prompt".into(),
            "remove the step's `system`, or use an agent without one",
        );
    }
    let fallback = step.fallback.clone().unwrap_or_default();
    let substitute_agent = fallback
        .agent
        .as_deref()
        .and_then(|a| p.agent("fallback", a));
    let system = step.system.as_deref().and_then(|s| p.compile("system", s));
    let prompt = p.compile("prompt", &step.prompt);
    let system = match (&system, agent.as_ref().and_then(|a| a.system.as_deref())) {
        (None, Some(agent_system)) => p.compile("agent", agent_system),
        _ => system,
    };
    let mut model = requirements(
        step.model
            .as_ref()
            .or(agent.as_ref().and_then(|a| a.model.as_ref())),
    );
    model.local_only |= p.wf.local_only;
    let substitute = match (&substitute_agent, &fallback.agent) {
        (Some(a), Some(name)) => {
            let system = a.system.as_deref().and_then(|s| p.compile("fallback", s));
            let mut model = requirements(a.model.as_ref());
            model.local_only |= p.wf.local_only;
            Some(Substitute {
                agent: name.clone(),
                system,
                model,
            })
        }
        _ => None,
    };
    check_model_references(p, &model);
    let temperature = step.temperature.unwrap_or(DEFAULT_TEMPERATURE);
    if !(0.0..=2.0).contains(&temperature) {
        p.report(
            "temperature",
            DiagnosticCode::InvalidValue,
            format!("temperature {temperature} is out of range"),
            "use a value from 0.0 to 2.0",
        );
    }
    let max_tokens = step.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    if max_tokens == 0 {
        p.report(
            "max_tokens",
            DiagnosticCode::InvalidValue,
            "`max_tokens` is 0".into(),
            "use a positive number of tokens, e.g. 256",
        );
    }
    let output_schema =
        step.output_schema
            .as_ref()
            .and_then(|schema| match jsonschema::validator_for(schema) {
                Ok(v) => Some((schema.clone(), Arc::new(v))),
                Err(e) => {
                    p.report(
                        "output_schema",
                        DiagnosticCode::InvalidValue,
                        format!("`output_schema` is not a valid JSON Schema: {e}"),
                        "give a JSON Schema object such as `{type: object, properties: {...}}`",
                    );
                    None
                }
            });
    Action::Llm(Box::new(LlmAction {
        system,
        prompt: prompt.unwrap_or_default(),
        model,
        temperature,
        max_tokens,
        output_schema,
        task: step.task.unwrap_or_default(),
        agent: step.agent.clone(),
        fallback,
        substitute,
        budget: step.budget.clone(),
    }))
}

/// Checks each model reference of an `llm` step: a known provider, a model name, no
/// cloud model on a `local_only` step.
fn check_model_references(p: &mut StepPlanner<'_, '_>, model: &ModelRequirements) {
    for (j, reference) in model.prefer.iter().enumerate() {
        let provider = reference.split(':').next().unwrap_or_default();
        let field = format!("model.prefer[{j}]");
        let problem = if !KNOWN_PROVIDERS.contains(&provider) {
            Some((
                DiagnosticCode::UnknownProvider,
                format!("model reference `{reference}` names unknown provider `{provider}`"),
                "write `ollama:<model>`, `openai:<model>` or `embedded`".to_string(),
            ))
        } else if provider != "embedded"
            && reference.split_once(':').is_none_or(|(_, m)| m.is_empty())
        {
            Some((
                DiagnosticCode::InvalidValue,
                format!("model reference `{reference}` has no model name"),
                format!("write `{provider}:<model>`, e.g. `ollama:llama3.1`"),
            ))
        } else if model.local_only && provider == "openai" {
            Some((
                DiagnosticCode::InvalidValue,
                format!(
                    "model reference `{reference}` is a cloud model but the step is `local_only`"
                ),
                "remove the cloud model or `local_only`".to_string(),
            ))
        } else {
            None
        };
        if let Some((code, message, hint)) = problem {
            let d = Diagnostic::new(code, message)
                .step(p.id)
                .field(field)
                .at(p.locs.of("model"))
                .hint(hint);
            p.cx.push(d);
        }
    }
}

/// Plans a `template` step.
fn plan_template(p: &mut StepPlanner<'_, '_>, step: &TemplateStep) -> Action {
    let template = p.compile("template", &step.template);
    Action::Template {
        template: template.unwrap_or_default(),
        format: step.format.unwrap_or_default(),
    }
}

/// Plans an `approval` step.
fn plan_approval(p: &mut StepPlanner<'_, '_>, step: &ApprovalStep) -> Action {
    let prompt = p.compile("prompt", &step.prompt);
    Action::Approval {
        prompt: prompt.unwrap_or_default(),
        settings: step.approval.clone().unwrap_or_default(),
    }
}

/// Plans one step: the checks every kind shares, then the kind's own planner. `None`
/// when the step has errors (reported).
#[allow(clippy::too_many_arguments)]
fn plan_step(
    cx: &mut Ctx<'_>,
    env: &mut Environment<'static>,
    wf: &Workflow,
    index: &HashMap<String, usize>,
    graph: Option<&[Vec<usize>]>,
    i: usize,
    step: &Step,
    needs: &[usize],
) -> Option<PlannedStep> {
    let errors_before = cx.diags.len();
    let locs = cx.step_locs(i);
    let mut p = StepPlanner {
        cx,
        env,
        wf,
        index,
        scope: match graph {
            Some(graph) => Scope::Step { graph, step: i },
            None => Scope::InCycle,
        },
        id: &step.id,
        locs,
        reads: BTreeSet::new(),
    };
    let kind = step.kind_name();
    check_kind_fields(&mut p, kind);
    let on_failure = step.on_failure.clone().unwrap_or_default();
    if matches!(&on_failure, OnFailure::Alternate(alt) if alt == &step.id) {
        p.report(
            "on_failure",
            DiagnosticCode::InvalidValue,
            "a step cannot be its own alternate branch".into(),
            "name another step that lists this one in its `needs`",
        );
    }
    let retry = step.retry.clone().unwrap_or_default();
    check_retry(&mut p, &retry);
    let timeouts = step.timeout.clone().unwrap_or_default();
    check_timeouts(&mut p, &timeouts);
    let when = step.when.as_deref().and_then(|e| plan_condition(&mut p, e));
    let action = match &step.kind {
        StepKind::Llm(s) => plan_llm(&mut p, s),
        StepKind::Template(s) => plan_template(&mut p, s),
        StepKind::Approval(s) => plan_approval(&mut p, s),
    };
    let reads = std::mem::take(&mut p.reads);
    if cx.diags.len() > errors_before {
        return None;
    }
    Some(PlannedStep {
        id: step.id.clone(),
        kind,
        action,
        needs: needs.to_vec(),
        reads: reads.into_iter().collect(),
        when,
        retry,
        timeouts,
        on_failure,
        cache: step.cache.unwrap_or(true),
        alternate_of: None,
        definition_hash: definition_hash(step),
    })
}

impl Plan {
    /// The indices of the named steps and every step they depend on ("run up to").
    /// Unknown names are ignored.
    pub fn ancestors(&self, ids: &[String]) -> HashSet<usize> {
        self.reach(ids, |i| &self.steps[i].needs)
    }

    /// The ids of the named steps and every step that depends on them ("run from": the
    /// steps to run again; the others may reuse an earlier run's outputs).
    pub fn descendants(&self, ids: &[String]) -> HashSet<String> {
        self.reach(ids, |i| &self.dependants[i])
            .into_iter()
            .map(|i| self.steps[i].id.clone())
            .collect()
    }

    /// The indices of the named steps and every step reachable from them along `next`.
    fn reach<'a>(&'a self, ids: &[String], next: impl Fn(usize) -> &'a [usize]) -> HashSet<usize> {
        let mut out = HashSet::new();
        let mut stack: Vec<usize> = ids
            .iter()
            .filter_map(|id| self.index.get(id).copied())
            .collect();
        while let Some(i) = stack.pop() {
            if out.insert(i) {
                stack.extend(next(i).iter().copied());
            }
        }
        out
    }
}

/// Model requirements from a step's or agent's `model` field.
fn requirements(spec: Option<&ModelSpec>) -> ModelRequirements {
    match spec {
        Some(ModelSpec::One(one)) => ModelRequirements {
            prefer: vec![one.clone()],
            ..ModelRequirements::default()
        },
        Some(ModelSpec::List(list)) => ModelRequirements {
            prefer: list.clone(),
            ..ModelRequirements::default()
        },
        Some(ModelSpec::Requirements(r)) => r.clone(),
        None => ModelRequirements::default(),
    }
}

/// SHA-256 (hex) of the step as written, without its canvas position: moving a node
/// does not invalidate its cached output, editing any other field does.
fn definition_hash(step: &Step) -> String {
    use sha2::Digest;
    let mut step = step.clone();
    step.position = None;
    step.name = None;
    let json = serde_json::to_vec(&step).unwrap_or_default();
    hex(&sha2::Sha256::digest(&json))
}

/// Lowercase hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Checks that budget limits are positive.
fn check_budget(
    cx: &mut Ctx<'_>,
    step: Option<&str>,
    field: &str,
    budget: Option<&Budget>,
    span: Option<Span>,
) {
    let Some(budget) = budget else { return };
    let mut bad = Vec::new();
    if budget.max_tokens == Some(0) {
        bad.push("`max_tokens` is 0".to_string());
    }
    if let Some(c) = budget.max_cost_usd
        && !(c.is_finite() && c >= 0.0)
    {
        bad.push(format!("`max_cost_usd` is {c}"));
    }
    for message in bad {
        let mut d = Diagnostic::new(DiagnosticCode::InvalidValue, format!("budget: {message}"))
            .field(field)
            .at(span)
            .hint("give a positive token count and a non-negative amount in US dollars");
        if let Some(step) = step {
            d = d.step(step);
        }
        cx.push(d);
    }
}

/// Resolves the inputs of a run: applies defaults, converts `key=value` strings to the
/// declared types, reads `file` inputs, and reports missing or unknown inputs. A `file`
/// input given on the command line is a path relative to the current directory; a
/// `file` default is relative to the workflow file's folder.
///
/// # Errors
/// One diagnostic per missing, unknown or ill-typed input, each saying which
/// `--input name=value` to give.
pub fn resolve_inputs(
    plan: &Plan,
    given: &BTreeMap<String, String>,
) -> Result<serde_json::Map<String, serde_json::Value>, Vec<Diagnostic>> {
    let wf = &plan.workflow;
    let base = plan
        .file
        .as_deref()
        .and_then(|f| std::path::Path::new(f).parent())
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let mut diags = Vec::new();
    let mut out = serde_json::Map::new();
    for name in given.keys() {
        if !wf.inputs.contains_key(name) {
            let dym = did_you_mean(name, wf.inputs.keys().map(String::as_str));
            let declared: Vec<&str> = wf.inputs.keys().map(String::as_str).collect();
            diags.push(
                Diagnostic::new(
                    DiagnosticCode::BadInput,
                    format!(
                        "input `{name}` is not declared by workflow `{}`{dym}",
                        wf.id
                    ),
                )
                .field(format!("inputs.{name}"))
                .hint(format!("declared inputs: {}", declared.join(", "))),
            );
        }
    }
    for (name, spec) in &wf.inputs {
        let value = match given.get(name) {
            Some(raw) => match convert_input(spec.kind, raw) {
                Ok(v) => v,
                Err(why) => {
                    diags.push(
                        Diagnostic::new(DiagnosticCode::BadInput, format!("input `{name}`: {why}"))
                            .field(format!("inputs.{name}"))
                            .hint(format!(
                                "give `--input {name}=<{}>`",
                                input_type_name(spec.kind)
                            )),
                    );
                    continue;
                }
            },
            None => match &spec.default {
                Some(default) => match (spec.kind, default) {
                    (InputType::File, serde_json::Value::String(path)) => {
                        let path = base.join(path);
                        match convert_input(InputType::File, &path.to_string_lossy()) {
                            Ok(v) => v,
                            Err(why) => {
                                diags.push(
                                    Diagnostic::new(
                                        DiagnosticCode::BadInput,
                                        format!("input `{name}` (default): {why}"),
                                    )
                                    .field(format!("inputs.{name}.default"))
                                    .hint(format!("give `--input {name}=<path>`")),
                                );
                                continue;
                            }
                        }
                    }
                    _ => default.clone(),
                },
                None => {
                    diags.push(
                        Diagnostic::new(
                            DiagnosticCode::MissingInput,
                            format!(
                                "required input `{name}` was not given{}",
                                spec.description
                                    .as_deref()
                                    .map(|d| format!(" ({d})"))
                                    .unwrap_or_default()
                            ),
                        )
                        .field(format!("inputs.{name}"))
                        .hint(format!(
                            "give `--input {name}=<{}>`",
                            input_type_name(spec.kind)
                        )),
                    );
                    continue;
                }
            },
        };
        out.insert(name.clone(), value);
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}

fn convert_input(kind: InputType, raw: &str) -> Result<serde_json::Value, String> {
    match kind {
        InputType::String => Ok(serde_json::Value::String(raw.to_string())),
        InputType::Number => raw
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(|f| {
                if f.fract() == 0.0 && f.abs() < 9e15 {
                    #[allow(clippy::cast_possible_truncation)]
                    Some(serde_json::Value::from(f as i64))
                } else {
                    serde_json::Number::from_f64(f).map(serde_json::Value::Number)
                }
            })
            .ok_or_else(|| format!("`{raw}` is not a number")),
        InputType::Boolean => match raw.trim() {
            "true" | "yes" | "1" => Ok(serde_json::Value::Bool(true)),
            "false" | "no" | "0" => Ok(serde_json::Value::Bool(false)),
            _ => Err(format!("`{raw}` is not true or false")),
        },
        InputType::Json => serde_json::from_str(raw).map_err(|e| format!("not valid JSON: {e}")),
        InputType::File => std::fs::read_to_string(raw)
            .map(serde_json::Value::String)
            .map_err(|e| format!("cannot read file `{raw}`: {e}")),
    }
}

/// Parses and validates workflow text in one call.
///
/// # Errors
/// The syntax error, or every validation diagnostic.
pub fn load_str(text: &str, file: Option<&str>) -> Result<Plan, Vec<Diagnostic>> {
    let parsed = crate::parse::parse_str(text, file).map_err(|d| vec![*d])?;
    validate(&parsed)
}

/// Reads, parses and validates a workflow file.
///
/// # Errors
/// The read or syntax error, or every validation diagnostic.
pub fn load_file(path: &std::path::Path) -> Result<Plan, Vec<Diagnostic>> {
    let parsed = crate::parse::parse_file(path).map_err(|d| vec![*d])?;
    validate(&parsed)
}
