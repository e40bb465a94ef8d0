//! Workflow file format v1: the serde types of one workflow file (YAML, one workflow per
//! file, under `workflows/`).
//!
//! These types are the single source of the format: the JSON Schema committed at
//! `schema/workflow.schema.json` is generated from them (`nexus schema`), and a test fails
//! when the committed file is stale. They describe what the user wrote; [`crate::plan`]
//! turns a validated [`Workflow`] into the typed plan the scheduler runs.
//!
//! Invariants kept by validation, not by these types: step ids are unique identifiers,
//! `needs` name existing steps and form no cycle, every template and condition only
//! references declared inputs and steps it depends on. Each step carries exactly the
//! fields of its `kind` by construction ([`StepKind`]).

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod agent;
mod control;
mod notify;
mod tools;
mod triggers;
mod vote;

pub use agent::{AgentStep, DEFAULT_AGENT_ITERATIONS, DEFAULT_AGENT_TOOL_CALLS};
pub use control::{
    EventStep, LoopCap, LoopStep, MAX_WORKFLOW_DEPTH, MapStep, OnItemError, RunFailureHandler,
    SubWorkflowStep, SwitchCase, SwitchStep, TriggerRule, WaitStep,
};
pub use notify::{Notification, NotifyOn, NotifyWebhook};
pub use tools::{
    FileTool, HttpAuth, HttpTool, McpTool, MemoryTool, Paginate, ShellTool, ToolDecl, ToolStep,
};
pub use triggers::{
    CatchUp, CronTrigger, DEFAULT_DEBOUNCE_MS, DEFAULT_MAX_CATCH_UP,
    DEFAULT_WEBHOOK_RATE_PER_MINUTE, DEFAULT_WEBHOOK_WAIT_MS, FileTrigger, MAX_WEBHOOK_WAIT_MS,
    ManualTrigger, Overlap, Respond, Trigger, WebhookAuth, WebhookTrigger,
};
pub use vote::{OnTie, VoteRule, VoteStep, Voter};

/// Version of the workflow file format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// One workflow file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// Format version of the file; must be `1` (see [`FORMAT_VERSION`]).
    #[serde(default = "default_format")]
    pub format: u32,
    /// Stable identifier of the workflow (letters, digits, `-`, `_`).
    pub id: String,
    /// Human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// What the workflow does, for people browsing `workflows/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The workflow's own version (free text, e.g. `1.2.0`), recorded with every run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Typed inputs, by name. Available to templates as `inputs.<name>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, InputSpec>,
    /// Outputs, by name: each a minijinja template over `inputs` and `steps`, rendered
    /// when the run finishes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    /// Privacy policy: when true, no step of this workflow ever reaches a cloud provider,
    /// whatever fails (only Ollama and the embedded model are candidates).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local_only: bool,
    /// Token and cost limits for the whole run, enforced before each model call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Guardrails on step inputs and outputs (default: the built-in rules, see
    /// `nexus_guard::default_rules`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrails: Option<Guardrails>,
    /// Tools that `kind: tool` steps call, by name (see [`ToolDecl`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tools: BTreeMap<String, ToolDecl>,
    /// A workflow run when a run of this one fails (see [`RunFailureHandler`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<RunFailureHandler>,
    /// Named personas (system prompt and model preferences) that steps may use with
    /// `agent:` (or reach by `capability:`) and that the fallback ladder may substitute.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub agents: BTreeMap<String, Agent>,
    /// A YAML file of shared agents (`agents: {name: {...}}`), relative to the workflow
    /// file's folder and inside it, merged with `agents:` (an inline agent replaces the
    /// file's agent of the same name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agents_file: Option<String>,
    /// What starts runs besides a person: schedules, webhooks, file changes (see
    /// [`Trigger`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
    /// Who is told when a run ends or waits for a person (see [`Notification`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifications: Vec<Notification>,
    /// The steps, in any order; `needs` defines the DAG.
    pub steps: Vec<Step>,
}

/// Token and cost limits (per run at the workflow level, per step on a step). A call is
/// refused before it is made when its projected use (prompt estimate + `max_tokens`, at the
/// model's catalog prices) would pass a limit (LiteLLM's budget semantics).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// Most tokens (prompt + completion) to spend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Most money to spend, in US dollars.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_cost_usd: Option<f64>,
}

/// Guardrail settings of a workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Guardrails {
    /// Scan step inputs and outputs at all (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The rules; when empty, the built-in rules apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<nexus_guard::Rule>,
}

fn default_true() -> bool {
    true
}

/// A named persona: a system prompt and model preferences.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    /// What the agent is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The agent's system prompt (a template over `inputs` and the step's upstream
    /// outputs); replaces the step's `system`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The agent's model preferences; replace the step's `model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    /// What the agent can do (free names, e.g. `[summarize, code_review]`): a step with
    /// `capability: NAME` is routed to one of the agents listing `NAME`, the one with the
    /// best observed success rate and latency.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<String>,
    /// Tools (names under the workflow's `tools:`) an `agent` step using this agent may
    /// call, besides the step's own `tools`; `llm` steps ignore them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
}

/// The kind of work an `llm` step does; the selector scores models by their quality for
/// it (the catalog's `quality` per task class).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
    Default,
)]
#[serde(rename_all = "snake_case")]
pub enum TaskClass {
    /// Anything (the default).
    #[default]
    General,
    /// Multi-step reasoning, planning, analysis.
    Reasoning,
    /// Writing or reviewing code.
    Code,
    /// Pulling structured data out of text (usually with `output_schema`).
    Extraction,
    /// Condensing text.
    Summarization,
    /// Open-ended writing.
    Creative,
}

impl TaskClass {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskClass::General => "general",
            TaskClass::Reasoning => "reasoning",
            TaskClass::Code => "code",
            TaskClass::Extraction => "extraction",
            TaskClass::Summarization => "summarization",
            TaskClass::Creative => "creative",
        }
    }
}

/// The progressive fallback ladder of an `llm` step. Rungs are tried in this order, each
/// only when enabled, and every rung taken is recorded: retry the same model (the retry
/// policy) → the next model of the selector's chain → simplified parameters (half the
/// `max_tokens`, the prompt trimmed to fit, no structured-output constraint) → a
/// substitute agent → the step's `on_failure` → pausing the run to ask a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FallbackLadder {
    /// Retry the same model per the retry policy (default true).
    #[serde(default = "default_true")]
    pub retry_same: bool,
    /// Move down the selector's ranked chain (default true).
    #[serde(default = "default_true")]
    pub next_model: bool,
    /// One more pass with simplified parameters (default true).
    #[serde(default = "default_true")]
    pub simplify: bool,
    /// An agent (from the workflow's `agents`) to substitute as a last model rung.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// When everything else failed and `on_failure` is `fail`: pause the run and ask a
    /// human to retry, edit the output, skip, or cancel (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ask_human: bool,
}

impl Default for FallbackLadder {
    fn default() -> Self {
        FallbackLadder {
            retry_same: true,
            next_model: true,
            simplify: true,
            agent: None,
            ask_human: false,
        }
    }
}

/// What happens when a step has failed after its whole ladder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The step fails; its dependants are skipped and the run fails (the default).
    #[default]
    Fail,
    /// The step is skipped (its dependants too); the run does not fail because of it.
    Skip,
    /// The step succeeds with this output (text, or JSON for structured steps), marked
    /// as a default value.
    Default(serde_json::Value),
    /// The step fails without failing the run, and the named step (which must list this
    /// one in its `needs`) runs as the alternate branch. The alternate step runs only
    /// when this step failed.
    Alternate(String),
}

/// What an approval step does when nobody answers within its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalDefault {
    /// Approve.
    Approve,
    /// Reject (the default: nothing passes without a yes).
    #[default]
    Reject,
}

/// Settings of an `approval` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ApprovalSettings {
    /// How long to wait for an answer, e.g. `10m` (default: no limit).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
    /// The decision taken when the timeout passes or nobody can be asked.
    #[serde(default)]
    pub default: ApprovalDefault,
}

fn default_format() -> u32 {
    FORMAT_VERSION
}

/// Type of a workflow input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum InputType {
    /// Any text (the default).
    #[default]
    String,
    /// A number (integer or float).
    Number,
    /// `true` or `false`.
    Boolean,
    /// A path to a text file; the run reads it and templates see its contents.
    File,
    /// Any JSON value.
    Json,
}

/// Declaration of one input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The input's type (default `string`).
    #[serde(default, rename = "type")]
    pub kind: InputType,
    /// What the input means, shown by the CLI and the desktop app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Value used when the run does not provide one. An input without a default is
    /// required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<serde_json::Value>,
}

/// The name of a step kind, as written in `kind:` (the tag of [`StepKind`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KindName {
    /// Call a language model with a rendered prompt.
    Llm,
    /// Render text or JSON from inputs and upstream outputs; no model.
    Template,
    /// Wait for a human to approve or reject (the `prompt` is shown to them).
    Approval,
    /// Take the first case whose condition holds; the other cases' steps are skipped.
    Switch,
    /// Run a body of steps once per item of a list.
    Map,
    /// Run a body of steps again until a condition holds.
    Loop,
    /// Run another workflow file as a child run.
    Workflow,
    /// Wait for a duration or until a time.
    Wait,
    /// Wait for an external event: a call to the run's callback URL or an event posted
    /// to the API.
    Event,
    /// Call a tool declared under `tools:`.
    Tool,
    /// A model in a loop that calls tools until it gives a final answer.
    Agent,
    /// Several voters answer with a choice; a rule decides.
    Vote,
}

impl KindName {
    /// The name used in workflow files.
    pub fn as_str(self) -> &'static str {
        match self {
            KindName::Llm => "llm",
            KindName::Template => "template",
            KindName::Approval => "approval",
            KindName::Switch => "switch",
            KindName::Map => "map",
            KindName::Loop => "loop",
            KindName::Workflow => "workflow",
            KindName::Wait => "wait",
            KindName::Event => "event",
            KindName::Tool => "tool",
            KindName::Agent => "agent",
            KindName::Vote => "vote",
        }
    }
}

/// One step: the common fields, `kind`, and the fields of that kind (an unknown field, or
/// one of another kind, is an error).
#[derive(Debug, Clone, PartialEq, Deserialize, JsonSchema)]
#[schemars(extend("unevaluatedProperties" = false))]
pub struct Step {
    /// Unique id within the workflow: a lowercase identifier (`[a-z_][a-z0-9_]*`), so
    /// templates can write `steps.<id>.output`.
    pub id: String,
    /// Optional display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Ids of the steps that must finish before this one starts.
    #[serde(default)]
    pub needs: Vec<String>,
    /// When the step runs, given how its dependencies ended (default `all_success`; see
    /// [`TriggerRule`]).
    #[serde(default)]
    pub trigger_rule: Option<TriggerRule>,
    /// A minijinja expression over `inputs` and `steps`; the step is skipped when it is
    /// false. Example: `inputs.depth == "full"`.
    #[serde(default)]
    pub when: Option<String>,
    /// Retry policy for failed attempts (defaults: see [`RetryPolicy`]).
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    /// Timeouts per attempt (defaults: see [`Timeouts`]).
    #[serde(default)]
    pub timeout: Option<Timeouts>,
    /// What happens when the step fails after its fallback ladder (default `fail`).
    #[serde(default)]
    pub on_failure: Option<OnFailure>,
    /// Error handlers (seeds/003's `onError`): steps that run only when this step failed
    /// (after `on_failure`), each reading the failure as `error` (`error.step`,
    /// `error.message`, `error.class`, `error.attempts`). Each depends on this step
    /// (written in its `needs` or not). A failure with handlers does not fail the run, and
    /// counts as skipped, not failed, for the join rules of the steps after it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_error: Vec<String>,
    /// Reuse a stored output when the step's definition, resolved inputs and model are
    /// unchanged since an earlier run (default true; `nexus run --fresh` disables it).
    #[serde(default)]
    pub cache: Option<bool>,
    /// Position of the node on the desktop canvas; ignored by the engine.
    #[serde(default)]
    pub position: Option<Position>,
    /// What the step does (`kind:`) and the fields of that kind.
    #[serde(flatten)]
    pub kind: StepKind,
}

// In a file a kind's fields sit beside the common ones (`kind: llm`, then `prompt:`):
// `StepKind` is flattened into the step. Files are read by `crate::parse`, which keeps the
// location of every field and reports a field of another kind as `unexpected_field`; the
// `Deserialize` derived here reads what `Serialize` below wrote (the stored copy of a
// workflow). `Serialize` writes `id`, `kind`, the common fields, the kind's fields,
// `position`: the order of the format's documentation, which the definition hash of a
// step (the output cache's key) depends on.
impl Step {
    /// The name of the step's kind.
    pub fn kind_name(&self) -> KindName {
        self.kind.name()
    }
}

/// What a step does, tagged by `kind:`; each kind has its own fields. A new kind is one
/// more variant with its struct (and its fields in the located reader, `crate::parse`).
// One value per step of a parsed file: the size difference costs a few hundred bytes per
// step, while a box would complicate every pattern over the kinds.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StepKind {
    /// Call a language model with a rendered prompt.
    Llm(LlmStep),
    /// Render text or JSON from inputs and upstream outputs; no model.
    Template(TemplateStep),
    /// Wait for a human to approve or reject (the `prompt` is shown to them).
    Approval(ApprovalStep),
    /// Take the first case whose condition holds; the other cases' steps are skipped.
    Switch(SwitchStep),
    /// Run a body of steps once per item of a list.
    Map(MapStep),
    /// Run a body of steps again until a condition holds.
    Loop(LoopStep),
    /// Run another workflow file as a child run.
    Workflow(SubWorkflowStep),
    /// Wait for a duration or until a time.
    Wait(WaitStep),
    /// Wait for an external event: a call to the run's callback URL or an event posted
    /// to the API.
    Event(EventStep),
    /// Call a tool declared under `tools:`.
    Tool(ToolStep),
    /// A model in a loop that calls tools until it gives a final answer.
    Agent(AgentStep),
    /// Several voters answer with a choice; a rule decides.
    Vote(VoteStep),
}

impl StepKind {
    /// The kind's name, as written in `kind:`.
    pub fn name(&self) -> KindName {
        match self {
            StepKind::Llm(_) => KindName::Llm,
            StepKind::Template(_) => KindName::Template,
            StepKind::Approval(_) => KindName::Approval,
            StepKind::Switch(_) => KindName::Switch,
            StepKind::Map(_) => KindName::Map,
            StepKind::Loop(_) => KindName::Loop,
            StepKind::Workflow(_) => KindName::Workflow,
            StepKind::Wait(_) => KindName::Wait,
            StepKind::Event(_) => KindName::Event,
            StepKind::Tool(_) => KindName::Tool,
            StepKind::Agent(_) => KindName::Agent,
            StepKind::Vote(_) => KindName::Vote,
        }
    }
}

/// The fields of a `kind: llm` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LlmStep {
    /// System prompt (a template).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The kind of work, for the model selector (default `general`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskClass>,
    /// An agent from the workflow's `agents` whose system prompt and model preferences
    /// this step uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Instead of `agent`: a capability; the run picks, among the agents listing it,
    /// the one with the best observed success rate and latency (see
    /// [`crate::route`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// Token and cost limits of this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// The fallback ladder (defaults: see [`FallbackLadder`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackLadder>,
    /// The prompt, a minijinja template over `inputs` and `steps`.
    pub prompt: String,
    /// Which models may serve the step (default: the selector's order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    /// Sampling temperature, 0.0–2.0 (default 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Maximum tokens to generate (default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Whether a reasoning model (deepseek-r1, qwen3) thinks before it answers: `true`
    /// or `false` is sent as Ollama's `think`; absent, the model's default (Ollama: a
    /// model with the `thinking` capability thinks). The reasoning is stored apart from
    /// the output and never passed to the steps that depend on this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub think: Option<bool>,
    /// A JSON Schema the output must satisfy. The provider is asked for JSON that follows
    /// it (Ollama `format`, OpenAI `response_format`, a llama.cpp grammar) and the reply
    /// is validated on return; a reply that fails counts as a failed attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<serde_json::Value>,
}

/// The fields of a `kind: template` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TemplateStep {
    /// The template to render.
    pub template: String,
    /// Whether the rendered text is kept as text or parsed as JSON (default `text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<OutputFormat>,
}

/// The fields of a `kind: approval` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalStep {
    /// The question shown to the approver (a template).
    pub prompt: String,
    /// Timeout and default decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalSettings>,
}

/// How a [`Step`] is written: `id`, `kind`, the common fields, the kind's fields (one
/// flattened struct, so no tag of its own), `position`.
#[derive(Serialize)]
struct StepOut<'a> {
    id: &'a str,
    kind: KindName,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a String>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    needs: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    trigger_rule: Option<TriggerRule>,
    #[serde(skip_serializing_if = "Option::is_none")]
    when: Option<&'a String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry: Option<&'a RetryPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<&'a Timeouts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    on_failure: Option<&'a OnFailure>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    on_error: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    cache: Option<bool>,
    #[serde(flatten)]
    fields: KindFieldsOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    position: Option<Position>,
}

/// The fields of a kind without its tag.
#[derive(Serialize)]
#[serde(untagged)]
enum KindFieldsOut<'a> {
    Llm(&'a LlmStep),
    Template(&'a TemplateStep),
    Approval(&'a ApprovalStep),
    Switch(&'a SwitchStep),
    Map(&'a MapStep),
    Loop(&'a LoopStep),
    Workflow(&'a SubWorkflowStep),
    Wait(&'a WaitStep),
    Event(&'a EventStep),
    Tool(&'a ToolStep),
    Agent(&'a AgentStep),
    Vote(&'a VoteStep),
}

impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = match &self.kind {
            StepKind::Llm(s) => KindFieldsOut::Llm(s),
            StepKind::Template(s) => KindFieldsOut::Template(s),
            StepKind::Approval(s) => KindFieldsOut::Approval(s),
            StepKind::Switch(s) => KindFieldsOut::Switch(s),
            StepKind::Map(s) => KindFieldsOut::Map(s),
            StepKind::Loop(s) => KindFieldsOut::Loop(s),
            StepKind::Workflow(s) => KindFieldsOut::Workflow(s),
            StepKind::Wait(s) => KindFieldsOut::Wait(s),
            StepKind::Event(s) => KindFieldsOut::Event(s),
            StepKind::Tool(s) => KindFieldsOut::Tool(s),
            StepKind::Agent(s) => KindFieldsOut::Agent(s),
            StepKind::Vote(s) => KindFieldsOut::Vote(s),
        };
        StepOut {
            id: &self.id,
            kind: self.kind.name(),
            name: self.name.as_ref(),
            needs: &self.needs,
            trigger_rule: self.trigger_rule,
            when: self.when.as_ref(),
            retry: self.retry.as_ref(),
            timeout: self.timeout.as_ref(),
            on_failure: self.on_failure.as_ref(),
            on_error: &self.on_error,
            cache: self.cache,
            fields,
            position: self.position,
        }
        .serialize(serializer)
    }
}

/// Canvas position of a step, in canvas pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Position {
    /// Horizontal position.
    pub x: f64,
    /// Vertical position.
    pub y: f64,
}

/// Output format of a `template` step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    /// Keep the rendered text.
    #[default]
    Text,
    /// Parse the rendered text as JSON; a parse failure fails the step.
    Json,
}

/// Which models may serve an `llm` step.
///
/// One model reference, a list of them (shorthand for `prefer`), or an object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ModelSpec {
    /// Shorthand: one model, e.g. `ollama:llama3.1` or `embedded` (the same as a list of
    /// one; n8n and Flowise nodes name a single model this way).
    One(String),
    /// Shorthand: an explicit preference list, e.g. `["ollama:qwen2.5", "embedded"]`.
    List(Vec<String>),
    /// Full form.
    Requirements(ModelRequirements),
}

/// Model requirements of an `llm` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ModelRequirements {
    /// Explicit preference list of model references (`provider:model`, e.g.
    /// `ollama:llama3.1`, `openai:gpt-4o-mini`, `embedded`). When given it wins over the
    /// selector's order; candidates that are unreachable are skipped at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefer: Vec<String>,
    /// Smallest context window (tokens) a model must have to be considered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_context: Option<u32>,
    /// Keep the step on this machine: only Ollama and the embedded model are candidates.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub local_only: bool,
}

/// Retry policy, after Temporal's activity retry policy and LangGraph's `RetryPolicy`:
/// the delay before attempt `n+1` is `initial_interval × backoff_coefficient^(n-1)`,
/// capped at `max_interval`, with jitter when enabled. Delays are computed by the
/// `backon` crate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, counting the first (default 3; 1 disables retries).
    #[serde(default = "RetryPolicy::default_max_attempts")]
    pub max_attempts: u32,
    /// Delay before the first retry, e.g. `500ms`, `2s` (default `500ms`).
    #[serde(default = "RetryPolicy::default_initial", with = "humantime_serde")]
    #[schemars(with = "String")]
    pub initial_interval: Duration,
    /// Multiplier applied to the delay after each retry (default 2.0).
    #[serde(default = "RetryPolicy::default_coefficient")]
    pub backoff_coefficient: f32,
    /// Largest delay between attempts (default `30s`).
    #[serde(
        default = "RetryPolicy::default_max_interval",
        with = "humantime_serde"
    )]
    #[schemars(with = "String")]
    pub max_interval: Duration,
    /// Randomise each delay (default true), so parallel steps do not retry in lockstep.
    #[serde(default = "RetryPolicy::default_jitter")]
    pub jitter: bool,
}

impl RetryPolicy {
    fn default_max_attempts() -> u32 {
        3
    }
    fn default_initial() -> Duration {
        Duration::from_millis(500)
    }
    fn default_coefficient() -> f32 {
        2.0
    }
    fn default_max_interval() -> Duration {
        Duration::from_secs(30)
    }
    fn default_jitter() -> bool {
        true
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: Self::default_max_attempts(),
            initial_interval: Self::default_initial(),
            backoff_coefficient: Self::default_coefficient(),
            max_interval: Self::default_max_interval(),
            jitter: Self::default_jitter(),
        }
    }
}

/// Timeouts of one attempt. Each is optional; a long local generation that keeps
/// streaming is never cut unless `total` is set (n8n's fixed 300 s limit is a frequent
/// complaint: n8n issue #13655).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    /// Longest wait from sending the request to the first token (default `120s`: a
    /// local model may need to load first).
    #[serde(
        default = "Timeouts::default_first_token",
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub first_token: Option<Duration>,
    /// Longest gap between two streamed tokens (default `30s`).
    #[serde(
        default = "Timeouts::default_idle",
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub idle: Option<Duration>,
    /// Longest time for a whole attempt (default: none).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub total: Option<Duration>,
}

impl Timeouts {
    #[allow(clippy::unnecessary_wraps)]
    fn default_first_token() -> Option<Duration> {
        Some(Duration::from_secs(120))
    }
    #[allow(clippy::unnecessary_wraps)]
    fn default_idle() -> Option<Duration> {
        Some(Duration::from_secs(30))
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            first_token: Self::default_first_token(),
            idle: Self::default_idle(),
            total: None,
        }
    }
}

/// The JSON Schema of the workflow file format, generated from these types.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Workflow);
    serde_json::to_value(schema).unwrap_or(serde_json::Value::Null)
}
