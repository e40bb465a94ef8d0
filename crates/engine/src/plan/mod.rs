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
//! checked the same way. Every template is compiled once, into [`Plan::templates`], and the run
//! renders it from there by name.
//!
//! Layout: [`validate()`](validate) orders the workflow-level checks (`validate`), each
//! step is planned by `step` (the checks every kind shares) and the planner of its kind
//! (`kinds::llm`, `kinds::template`, `kinds::approval`); `templates` compiles and checks
//! references, `cycles` walks the `needs` graph, `inputs` checks declarations and
//! resolves a run's values, `report` collects the diagnostics.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::diagnostic::Diagnostic;
use crate::workflow::{
    ApprovalSettings, Budget, FallbackLadder, KindName, LoopCap, ModelRequirements, OnFailure,
    OnItemError, OutputFormat, RetryPolicy, TaskClass, Timeouts, TriggerRule, Workflow,
};

mod agents;
mod body;
mod cycles;
mod handlers;
mod http;
mod inputs;
mod kinds;
pub(crate) mod memory;
mod notify;
mod report;
mod step;
mod templates;
pub(crate) mod tools;
mod triggers;
mod validate;
mod wait;

pub use inputs::{FileInputs, input_type_name, resolve_inputs, resolve_inputs_in};
pub use templates::Templates;
pub use triggers::Schedule;
pub use validate::{validate, validate_within};
pub use wait::{MAX_EVENT_NAME, valid_event_name};

/// The provider ids model references may name: the built-in catalog's `providers:`
/// section ([`crate::select::ProviderDecl`]), read once per process. Empty only if the
/// compiled-in catalog were broken, which a test prevents. A user's catalog file may
/// declare more providers for the selector, but validation reads only the built-in
/// declarations (it reads no configuration), so a reference to a provider declared only
/// there is reported as unknown.
pub fn declared_providers() -> &'static [crate::select::ProviderDecl] {
    static PROVIDERS: std::sync::LazyLock<Vec<crate::select::ProviderDecl>> =
        std::sync::LazyLock::new(|| {
            crate::select::ModelCatalog::builtin()
                .map(|c| c.providers)
                .unwrap_or_default()
        });
    &PROVIDERS
}

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
        /// Name of the compiled template in [`Plan::templates`].
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
    /// Choose a branch: the first case whose condition holds.
    Switch {
        /// Per case: its name and its compiled condition template.
        cases: Vec<(String, String)>,
    },
    /// Run a body once per item.
    Map(Box<MapAction>),
    /// Run a body until a condition holds.
    Loop(Box<LoopAction>),
    /// Run another workflow file as a child run.
    Workflow(Box<SubWorkflowAction>),
    /// Call a tool.
    Tool(Box<ToolAction>),
    /// A model calling tools in a loop.
    Agent(Box<AgentAction>),
    /// Voters answering with a choice, a rule deciding.
    Vote(Box<VoteAction>),
    /// Wait for a duration (from when the dependencies finished) or until a time.
    Wait {
        /// How long, when the step gives a duration.
        duration: Option<std::time::Duration>,
        /// Name of the compiled template that renders the time (RFC 3339).
        until: Option<String>,
    },
    /// Wait for an external event posted to the run.
    Event {
        /// The event's name (the step's id when the file gives none).
        name: String,
        /// How long to wait, counted like a `wait` step's duration; forever when `None`.
        within: Option<std::time::Duration>,
        /// The output when `within` passes without the event; `None`: the step fails.
        timeout_output: Option<serde_json::Value>,
    },
}

/// A validated `agent` step: its model call as an `llm` step's, the tools it may call,
/// its caps.
#[derive(Debug, Clone)]
pub struct AgentAction {
    /// The model fields (prompt, system, model requirements, sampling, output schema,
    /// fallback, budget), planned as an `llm` step's.
    pub llm: LlmAction,
    /// The tools, in the order the step lists them.
    pub tools: Vec<ToolAction>,
    /// Most model calls of the loop.
    pub max_iterations: u32,
    /// Most tool calls over the loop.
    pub max_tool_calls: u32,
}

/// A validated `vote` step.
#[derive(Debug, Clone)]
pub struct VoteAction {
    /// The ballot's call: the question's template, sampling, and the ballot's schema
    /// (`{"choice": <one of choices>, "reason"}`) as the output schema; each voter
    /// replaces the model requirements.
    pub llm: LlmAction,
    /// The choices, in the order written (a tie with `first_choice` goes to the first).
    pub choices: Vec<String>,
    /// The voters, in the order they are asked.
    pub voters: Vec<VoterAction>,
    /// How the ballots decide.
    pub rule: crate::workflow::VoteRule,
    /// The share of the weight a supermajority needs, in (0.5, 1].
    pub threshold: f64,
    /// The fewest ballots that count.
    pub quorum: u32,
    /// What a tie gives.
    pub on_tie: crate::workflow::OnTie,
}

/// One voter of a [`VoteAction`].
#[derive(Debug, Clone)]
pub struct VoterAction {
    /// Its name in the ballots.
    pub name: String,
    /// Its agent's compiled system prompt, when it has one.
    pub system: Option<String>,
    /// Which models may serve it.
    pub model: ModelRequirements,
    /// Its weight, above 0.
    pub weight: f64,
    /// Whether its ballot against the winner blocks it.
    pub veto: bool,
}

/// A validated `tool` step.
#[derive(Debug, Clone)]
pub struct ToolAction {
    /// The tool's name under `tools:`.
    pub name: String,
    /// The tool as declared.
    pub decl: crate::workflow::ToolDecl,
    /// The arguments as written (an object).
    pub args: serde_json::Value,
    /// The templated strings among them: JSON pointer → compiled template name.
    pub templated: Vec<(String, String)>,
    /// For a `file` tool: its workspace folder; for a `shell` tool: its working folder
    /// (both canonical).
    pub workspace: Option<std::path::PathBuf>,
    /// Whether the workflow is `local_only` (an `http` tool may reach loopback only).
    pub local_only: bool,
    /// For a `shell` tool: the hash of the workflow as written (sha256 over its JSON
    /// form, hex), under which the user's permission is remembered.
    pub workflow_hash: Option<String>,
}

/// A validated `workflow` step.
#[derive(Debug, Clone)]
pub struct SubWorkflowAction {
    /// The child's file as resolved (relative to the caller's folder), for messages.
    pub file: String,
    /// The child's plan, validated with the caller.
    pub plan: Arc<Plan>,
    /// The child's inputs by name.
    pub inputs: Vec<(String, StateInit)>,
}

/// A validated `map` step.
#[derive(Debug, Clone)]
pub struct MapAction {
    /// Name of the compiled template that renders the item list as JSON.
    pub items: String,
    /// The variable the body reads the item by.
    pub item_as: String,
    /// The variable the body reads the item's position by.
    pub index_as: String,
    /// Items in flight at once (at least 1).
    pub concurrency: usize,
    /// What a failed item does.
    pub on_item_error: OnItemError,
    /// Failed items tolerated (`continue`/`drop`); `None`: any number.
    pub tolerated_failures: Option<u32>,
    /// Failed items tolerated as a percentage of all items.
    pub tolerated_failure_percent: Option<f64>,
    /// Name of the compiled template (in the body's templates) that renders an item's
    /// result as JSON; `None`: the body's last step's output.
    pub result: Option<String>,
    /// The body, a plan of its own.
    pub body: Arc<Plan>,
}

/// The initial value of a loop's state variable.
#[derive(Debug, Clone)]
pub enum StateInit {
    /// A JSON value as written.
    Value(serde_json::Value),
    /// A string with template syntax: the name of its compiled template (rendered as
    /// text).
    Template(String),
}

/// A validated `loop` step.
#[derive(Debug, Clone)]
pub struct LoopAction {
    /// The most iterations.
    pub max_iterations: u32,
    /// State variables and their initial values, by name.
    pub state: Vec<(String, StateInit)>,
    /// After each iteration: variable → compiled template (in the body's templates) that
    /// renders its new value as JSON.
    pub set: Vec<(String, String)>,
    /// Compiled `until` condition (in the body's templates), if any.
    pub until: Option<String>,
    /// What reaching the cap does.
    pub cap: LoopCap,
    /// The body, a plan of its own.
    pub body: Arc<Plan>,
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
    /// Whether a thinking model thinks (`think:` of the step; `None`: the model's
    /// default).
    pub think: Option<bool>,
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
    /// For a step with `capability:`: the agents that list it, one of which the run picks
    /// (then `system`, `model` and `agent` are the picked agent's).
    pub route: Option<Box<AgentRoute>>,
}

/// The agents a `capability:` step may be routed to (see [`crate::route`]).
#[derive(Debug, Clone)]
pub struct AgentRoute {
    /// The capability asked for.
    pub capability: String,
    /// The agents listing it, by name (the order of ties).
    pub candidates: Vec<RouteCandidate>,
}

/// One agent a `capability:` step may be routed to, planned for the step.
#[derive(Debug, Clone)]
pub struct RouteCandidate {
    /// The agent's name.
    pub agent: String,
    /// Name of the compiled system template: the agent's, else the step's own.
    pub system: Option<String>,
    /// The model requirements: the step's `model`, else the agent's (`local_only`
    /// applied).
    pub model: ModelRequirements,
    /// For an `agent` step: the agent's own tools, offered besides the step's.
    pub tools: Vec<ToolAction>,
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
    /// When it runs, given how its dependencies ended.
    pub trigger_rule: TriggerRule,
    /// The `switch` steps that name this step in a case: the switch's index and the
    /// cases (positions; `-1` for `default`) on which this step runs. It is skipped when
    /// one of them took another case.
    pub branches: Vec<(usize, Vec<i64>)>,
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
    /// When this step is the `on_failure: {alternate: ...}` branch or an `on_error`
    /// handler of another step: that step's index. It runs only when that step failed,
    /// and its templates read the failure as `error`.
    pub alternate_of: Option<usize>,
    /// This step's `on_error` handlers (indices): with any, its failure is handled.
    pub handlers: Vec<usize>,
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
    pub templates: Templates,
    /// The workflow run when a run fails: its file (as resolved) and plan.
    pub on_failure: Option<(String, Arc<Plan>)>,
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

/// Lowercase hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Parses and validates workflow text in one call.
///
/// # Errors
/// The syntax error, or every validation diagnostic.
pub fn load_str(text: &str, file: Option<&str>) -> Result<Plan, Vec<Diagnostic>> {
    let parsed = crate::parse::parse_str(text, file).map_err(|d| vec![*d])?;
    validate(&parsed)
}

/// [`load_str`] for a workflow run from a folder it must not read out of: its
/// sub-workflows and failure handlers must be inside `root` ([`validate_within`]).
///
/// # Errors
/// The syntax error, or every validation diagnostic.
pub fn load_str_within(
    text: &str,
    file: Option<&str>,
    root: &std::path::Path,
) -> Result<Plan, Vec<Diagnostic>> {
    let parsed = crate::parse::parse_str(text, file).map_err(|d| vec![*d])?;
    validate_within(&parsed, root)
}

/// Reads, parses and validates a workflow file.
///
/// # Errors
/// The read or syntax error, or every validation diagnostic.
pub fn load_file(path: &std::path::Path) -> Result<Plan, Vec<Diagnostic>> {
    let parsed = crate::parse::parse_file(path).map_err(|d| vec![*d])?;
    validate(&parsed)
}
