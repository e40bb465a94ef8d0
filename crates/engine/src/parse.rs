//! Reading workflow files: YAML → [`Workflow`], keeping line/column locations.
//!
//! The YAML is read once, with `serde-saphyr` (a maintained serde YAML crate that reports
//! locations), into a located copy of the file's shape: the same fields as [`Workflow`],
//! each value that a diagnostic may point at wrapped in `serde_saphyr::Spanned`. Every
//! value is deserialized straight from the YAML, so a type error is located at the value
//! and worded by serde-saphyr; a step is read as one flat mapping holding the fields of
//! every kind (serde's `flatten` and internally tagged enums would buffer the values and
//! lose both the locations and serde-saphyr's wording).
//!
//! The located copy then becomes the typed [`Workflow`] (one [`StepKind`] variant per
//! step) and its [`Locations`]. A field written on a step whose kind does not use it is
//! left out of the typed step and listed in [`StepLocations::unexpected`]; a missing
//! required field is named in [`StepLocations::missing`] (its typed value is empty).
//! Validation reports both, so a file with such a step never becomes a plan.
//!
//! Adding a step kind: its struct in [`crate::workflow`], its fields in `StepText` below
//! (with the kind's entry in [`kind_uses`]), and its conversion in `kind_of`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::diagnostic::{Diagnostic, DiagnosticCode, Span};
use crate::workflow::{
    Agent, AgentStep, ApprovalSettings, ApprovalStep, Budget, EventStep, FORMAT_VERSION,
    FallbackLadder, Guardrails, InputSpec, KindName, LlmStep, LoopCap, LoopStep, MapStep,
    ModelSpec, Notification, OnFailure, OnItemError, OnTie, OutputFormat, Position, RetryPolicy,
    RunFailureHandler, Step, StepKind, SubWorkflowStep, SwitchCase, SwitchStep, TaskClass,
    TemplateStep, Timeouts, ToolDecl, ToolStep, Trigger, TriggerRule, VoteRule, VoteStep, Voter,
    WaitStep, Workflow,
};

/// Locations of the parts of a workflow file that diagnostics refer to. Missing entries
/// mean "unknown" (for example when a value came through an alias, or the workflow did
/// not come from a file).
#[derive(Debug, Default, Clone)]
pub struct Locations {
    /// Where the workflow's `id` value is.
    pub id: Option<Span>,
    /// Where the `format` value is.
    pub format: Option<Span>,
    /// Where the `steps` list starts.
    pub steps: Option<Span>,
    /// Per step, by position in the file.
    pub step: Vec<StepLocations>,
    /// Per output, by name: where its template is.
    pub outputs: BTreeMap<String, Span>,
    /// Per input, by name: where its declaration is.
    pub inputs: BTreeMap<String, Span>,
    /// Where the workflow's `budget` is.
    pub budget: Option<Span>,
    /// Per agent, by name: where its declaration is.
    pub agents: BTreeMap<String, Span>,
    /// Where the `agents_file` value is.
    pub agents_file: Option<Span>,
    /// Where the workflow's `on_failure` handler is.
    pub on_failure: Option<Span>,
    /// Per trigger, by position: where its declaration is.
    pub triggers: Vec<Option<Span>>,
    /// Per notification, by position: where its declaration is.
    pub notifications: Vec<Option<Span>>,
}

/// Locations inside one step, and the fields its kind did not take.
#[derive(Debug, Default, Clone)]
pub struct StepLocations {
    /// The step's mapping itself.
    pub start: Option<Span>,
    /// Field name → where its value is (`id`, `kind`, `prompt`, `when`, `template`,
    /// `system`, `model`, `temperature`, ...; `needs` is its first entry).
    pub fields: BTreeMap<&'static str, Span>,
    /// Each `needs` entry.
    pub needs: Vec<Option<Span>>,
    /// Fields written on the step that its kind does not use, in the order validation
    /// reports them (see [`KIND_FIELDS`]); they are not in the typed step.
    pub unexpected: Vec<&'static str>,
    /// The required field of the kind when it was not written (`prompt`, `template`); the
    /// typed step holds an empty value in its place.
    pub missing: Option<&'static str>,
    /// The locations of the steps of a `map` or `loop` body, by position.
    pub body: Vec<StepLocations>,
}

impl StepLocations {
    /// Where `field` is, falling back to the step's start.
    pub fn of(&self, field: &str) -> Option<Span> {
        self.fields.get(field).copied().or(self.start)
    }
}

/// A parsed workflow with the locations of its parts.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The workflow as written.
    pub workflow: Workflow,
    /// Where its parts are in the source text.
    pub locations: Locations,
    /// The file it came from, as given by the user (for diagnostics).
    pub file: Option<String>,
}

/// The fields that belong to one kind or another, in the order a step's stray fields are
/// reported.
pub const KIND_FIELDS: [&str; 47] = [
    "event",
    "within",
    "timeout_output",
    "choices",
    "voters",
    "rule",
    "threshold",
    "quorum",
    "on_tie",
    "tool",
    "args",
    "tools",
    "max_tool_calls",
    "duration",
    "workflow",
    "inputs",
    "cases",
    "default",
    "items",
    "as",
    "index_as",
    "concurrency",
    "on_item_error",
    "tolerated_failures",
    "tolerated_failure_percent",
    "result",
    "max_iterations",
    "state",
    "set",
    "until",
    "on_max_iterations",
    "steps",
    "system",
    "model",
    "temperature",
    "max_tokens",
    "think",
    "output_schema",
    "task",
    "agent",
    "capability",
    "budget",
    "fallback",
    "template",
    "format",
    "approval",
    "prompt",
];

/// Whether steps of `kind` use `field` (one of [`KIND_FIELDS`]).
pub fn kind_uses(kind: KindName, field: &str) -> bool {
    match kind {
        KindName::Llm => matches!(
            field,
            "system"
                | "model"
                | "temperature"
                | "max_tokens"
                | "think"
                | "output_schema"
                | "task"
                | "agent"
                | "capability"
                | "budget"
                | "fallback"
                | "prompt"
        ),
        KindName::Template => matches!(field, "template" | "format"),
        KindName::Approval => matches!(field, "prompt" | "approval"),
        KindName::Switch => matches!(field, "cases" | "default"),
        KindName::Map => matches!(
            field,
            "items"
                | "as"
                | "index_as"
                | "concurrency"
                | "on_item_error"
                | "tolerated_failures"
                | "tolerated_failure_percent"
                | "result"
                | "steps"
        ),
        KindName::Loop => matches!(
            field,
            "max_iterations" | "state" | "set" | "until" | "on_max_iterations" | "steps"
        ),
        KindName::Workflow => matches!(field, "workflow" | "inputs"),
        KindName::Wait => matches!(field, "duration" | "until"),
        KindName::Event => matches!(field, "event" | "within" | "timeout_output"),
        KindName::Tool => matches!(field, "tool" | "args"),
        KindName::Agent => matches!(
            field,
            "system"
                | "model"
                | "temperature"
                | "max_tokens"
                | "output_schema"
                | "task"
                | "agent"
                | "capability"
                | "budget"
                | "fallback"
                | "prompt"
                | "tools"
                | "max_iterations"
                | "max_tool_calls"
        ),
        KindName::Vote => matches!(
            field,
            "prompt"
                | "choices"
                | "voters"
                | "rule"
                | "threshold"
                | "quorum"
                | "on_tie"
                | "temperature"
                | "max_tokens"
        ),
    }
}

/// The field a step of `kind` must have.
pub fn required_field(kind: KindName) -> &'static str {
    match kind {
        KindName::Llm | KindName::Approval | KindName::Agent | KindName::Vote => "prompt",
        KindName::Template => "template",
        KindName::Switch => "cases",
        KindName::Map => "items",
        KindName::Loop => "max_iterations",
        KindName::Workflow => "workflow",
        // Either field; a wait with neither is reported by its planner.
        KindName::Wait => "",
        // The event's name defaults to the step's id.
        KindName::Event => "",
        KindName::Tool => "tool",
    }
}

fn span(loc: &serde_saphyr::Location) -> Option<Span> {
    let (line, column) = (loc.line(), loc.column());
    if line == 0 {
        None
    } else {
        Some(Span {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(column).unwrap_or(u32::MAX),
        })
    }
}

fn spanned<T>(s: &Spanned<T>) -> Option<Span> {
    span(&s.referenced)
}

fn default_format() -> Spanned<u32> {
    Spanned::new(
        FORMAT_VERSION,
        serde_saphyr::Location::UNKNOWN,
        serde_saphyr::Location::UNKNOWN,
    )
}

/// The file as written, located. Field names, order, defaults and required fields are
/// those of [`Workflow`], so serde's messages (`unknown field ..., expected one of ...`)
/// read the same.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileText {
    #[serde(default = "default_format")]
    format: Spanned<u32>,
    id: Spanned<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    inputs: BTreeMap<String, Spanned<InputSpec>>,
    #[serde(default)]
    outputs: BTreeMap<String, Spanned<String>>,
    #[serde(default)]
    local_only: bool,
    #[serde(default)]
    budget: Option<Spanned<Budget>>,
    #[serde(default)]
    guardrails: Option<Guardrails>,
    #[serde(default)]
    tools: BTreeMap<String, ToolDecl>,
    #[serde(default)]
    on_failure: Option<Spanned<RunFailureHandler>>,
    #[serde(default)]
    agents: BTreeMap<String, Spanned<Agent>>,
    #[serde(default)]
    agents_file: Option<Spanned<String>>,
    #[serde(default)]
    triggers: Vec<Spanned<Trigger>>,
    #[serde(default)]
    notifications: Vec<Spanned<Notification>>,
    steps: Spanned<Vec<Spanned<StepText>>>,
}

/// A located humantime duration (`90s`, `10m`): serde-saphyr's `Spanned` around the text,
/// parsed by `humantime` with its own error wording.
mod located_duration {
    use serde::{Deserialize, Deserializer};
    use serde_saphyr::Spanned;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Spanned<std::time::Duration>>, D::Error> {
        let text: Option<Spanned<String>> = Option::deserialize(d)?;
        text.map(|t| {
            humantime::parse_duration(&t.value)
                .map(|value| Spanned {
                    value,
                    referenced: t.referenced,
                    defined: t.defined,
                })
                .map_err(|e| {
                    serde::de::Error::custom(format!("`{}` is not a duration: {e}", t.value))
                })
        })
        .transpose()
    }
}

/// One step as written: the common fields and the fields of every kind, in the order of
/// the format's documentation (serde's `expected one of ...` lists them in this order).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepText {
    id: Spanned<String>,
    kind: Spanned<KindName>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    needs: Vec<Spanned<String>>,
    #[serde(default)]
    trigger_rule: Option<Spanned<TriggerRule>>,
    #[serde(default)]
    when: Option<Spanned<String>>,
    #[serde(default)]
    retry: Option<Spanned<RetryPolicy>>,
    #[serde(default)]
    timeout: Option<Spanned<Timeouts>>,
    #[serde(default)]
    on_failure: Option<Spanned<OnFailure>>,
    #[serde(default)]
    on_error: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    cache: Option<Spanned<bool>>,
    // `llm`
    #[serde(default)]
    system: Option<Spanned<String>>,
    #[serde(default)]
    task: Option<Spanned<TaskClass>>,
    #[serde(default)]
    agent: Option<Spanned<String>>,
    #[serde(default)]
    capability: Option<Spanned<String>>,
    #[serde(default)]
    budget: Option<Spanned<Budget>>,
    #[serde(default)]
    fallback: Option<Spanned<FallbackLadder>>,
    // `llm` and `approval`
    #[serde(default)]
    prompt: Option<Spanned<String>>,
    // `llm`
    #[serde(default)]
    model: Option<Spanned<ModelSpec>>,
    #[serde(default)]
    temperature: Option<Spanned<f32>>,
    #[serde(default)]
    max_tokens: Option<Spanned<u32>>,
    #[serde(default)]
    think: Option<Spanned<bool>>,
    #[serde(default)]
    output_schema: Option<Spanned<serde_json::Value>>,
    // `template`
    #[serde(default)]
    template: Option<Spanned<String>>,
    #[serde(default)]
    format: Option<Spanned<OutputFormat>>,
    // `approval`
    #[serde(default)]
    approval: Option<Spanned<ApprovalSettings>>,
    // `switch`
    #[serde(default)]
    cases: Option<Spanned<Vec<SwitchCase>>>,
    #[serde(default)]
    default: Option<Spanned<Vec<String>>>,
    // `map`
    #[serde(default)]
    items: Option<Spanned<String>>,
    #[serde(default, rename = "as")]
    item_as: Option<Spanned<String>>,
    #[serde(default)]
    index_as: Option<Spanned<String>>,
    #[serde(default)]
    concurrency: Option<Spanned<u32>>,
    #[serde(default)]
    on_item_error: Option<Spanned<OnItemError>>,
    #[serde(default)]
    tolerated_failures: Option<Spanned<u32>>,
    #[serde(default)]
    tolerated_failure_percent: Option<Spanned<f64>>,
    #[serde(default)]
    result: Option<Spanned<String>>,
    // `loop`
    #[serde(default)]
    max_iterations: Option<Spanned<u32>>,
    #[serde(default)]
    state: Option<Spanned<BTreeMap<String, serde_json::Value>>>,
    #[serde(default)]
    set: Option<Spanned<BTreeMap<String, String>>>,
    #[serde(default)]
    until: Option<Spanned<String>>,
    #[serde(default)]
    on_max_iterations: Option<Spanned<LoopCap>>,
    // `map` and `loop`
    #[serde(default)]
    steps: Option<Spanned<Vec<Spanned<StepText>>>>,
    // `workflow`
    #[serde(default)]
    workflow: Option<Spanned<String>>,
    #[serde(default)]
    inputs: Option<Spanned<BTreeMap<String, serde_json::Value>>>,
    // `wait` (and `until`, shared with `loop`)
    #[serde(default, with = "located_duration")]
    duration: Option<Spanned<std::time::Duration>>,
    // `event`
    #[serde(default)]
    event: Option<Spanned<String>>,
    #[serde(default, with = "located_duration")]
    within: Option<Spanned<std::time::Duration>>,
    #[serde(default)]
    timeout_output: Option<Spanned<serde_json::Value>>,
    // `tool`
    #[serde(default)]
    tool: Option<Spanned<String>>,
    #[serde(default)]
    args: Option<Spanned<BTreeMap<String, serde_json::Value>>>,
    // `agent` (and `max_iterations`, shared with `loop`)
    #[serde(default)]
    tools: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    max_tool_calls: Option<Spanned<u32>>,
    // `vote`
    #[serde(default)]
    choices: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    voters: Option<Spanned<Vec<Voter>>>,
    #[serde(default)]
    rule: Option<Spanned<VoteRule>>,
    #[serde(default)]
    threshold: Option<Spanned<f64>>,
    #[serde(default)]
    quorum: Option<Spanned<u32>>,
    #[serde(default)]
    on_tie: Option<Spanned<OnTie>>,
    #[serde(default)]
    position: Option<Position>,
}

/// Records where `value` is under `name` and returns the value.
fn take<T>(
    fields: &mut BTreeMap<&'static str, Span>,
    name: &'static str,
    value: Option<Spanned<T>>,
) -> Option<T> {
    let value = value?;
    if let Some(sp) = spanned(&value) {
        fields.insert(name, sp);
    }
    Some(value.value)
}

/// The located step's kind-specific fields, still optional, with their locations taken.
struct KindText {
    system: Option<String>,
    task: Option<TaskClass>,
    agent: Option<String>,
    capability: Option<String>,
    budget: Option<Budget>,
    fallback: Option<FallbackLadder>,
    prompt: Option<String>,
    model: Option<ModelSpec>,
    temperature: Option<f32>,
    max_tokens: Option<u32>,
    think: Option<bool>,
    output_schema: Option<serde_json::Value>,
    template: Option<String>,
    format: Option<OutputFormat>,
    approval: Option<ApprovalSettings>,
    cases: Option<Vec<SwitchCase>>,
    default: Option<Vec<String>>,
    items: Option<String>,
    item_as: Option<String>,
    index_as: Option<String>,
    concurrency: Option<u32>,
    on_item_error: Option<OnItemError>,
    tolerated_failures: Option<u32>,
    tolerated_failure_percent: Option<f64>,
    result: Option<String>,
    max_iterations: Option<u32>,
    state: Option<BTreeMap<String, serde_json::Value>>,
    set: Option<BTreeMap<String, String>>,
    until: Option<String>,
    on_max_iterations: Option<LoopCap>,
    steps: Option<Vec<Step>>,
    workflow: Option<String>,
    inputs: Option<BTreeMap<String, serde_json::Value>>,
    duration: Option<std::time::Duration>,
    event: Option<String>,
    within: Option<std::time::Duration>,
    timeout_output: Option<serde_json::Value>,
    tool: Option<String>,
    args: Option<BTreeMap<String, serde_json::Value>>,
    tools: Option<Vec<String>>,
    max_tool_calls: Option<u32>,
    choices: Option<Vec<String>>,
    voters: Option<Vec<Voter>>,
    rule: Option<VoteRule>,
    threshold: Option<f64>,
    quorum: Option<u32>,
    on_tie: Option<OnTie>,
}

impl KindText {
    /// Whether the field named `name` (one of [`KIND_FIELDS`]) was written.
    fn has(&self, name: &str) -> bool {
        match name {
            "system" => self.system.is_some(),
            "model" => self.model.is_some(),
            "temperature" => self.temperature.is_some(),
            "max_tokens" => self.max_tokens.is_some(),
            "think" => self.think.is_some(),
            "output_schema" => self.output_schema.is_some(),
            "task" => self.task.is_some(),
            "agent" => self.agent.is_some(),
            "capability" => self.capability.is_some(),
            "budget" => self.budget.is_some(),
            "fallback" => self.fallback.is_some(),
            "template" => self.template.is_some(),
            "format" => self.format.is_some(),
            "approval" => self.approval.is_some(),
            "prompt" => self.prompt.is_some(),
            "cases" => self.cases.is_some(),
            "default" => self.default.is_some(),
            "items" => self.items.is_some(),
            "as" => self.item_as.is_some(),
            "index_as" => self.index_as.is_some(),
            "concurrency" => self.concurrency.is_some(),
            "on_item_error" => self.on_item_error.is_some(),
            "tolerated_failures" => self.tolerated_failures.is_some(),
            "tolerated_failure_percent" => self.tolerated_failure_percent.is_some(),
            "result" => self.result.is_some(),
            "max_iterations" => self.max_iterations.is_some(),
            "state" => self.state.is_some(),
            "set" => self.set.is_some(),
            "until" => self.until.is_some(),
            "on_max_iterations" => self.on_max_iterations.is_some(),
            "steps" => self.steps.is_some(),
            "workflow" => self.workflow.is_some(),
            "inputs" => self.inputs.is_some(),
            "duration" => self.duration.is_some(),
            "event" => self.event.is_some(),
            "within" => self.within.is_some(),
            "timeout_output" => self.timeout_output.is_some(),
            "tool" => self.tool.is_some(),
            "args" => self.args.is_some(),
            "tools" => self.tools.is_some(),
            "max_tool_calls" => self.max_tool_calls.is_some(),
            "choices" => self.choices.is_some(),
            "voters" => self.voters.is_some(),
            "rule" => self.rule.is_some(),
            "threshold" => self.threshold.is_some(),
            "quorum" => self.quorum.is_some(),
            "on_tie" => self.on_tie.is_some(),
            _ => false,
        }
    }
}

/// The typed kind of a step: the kind's own fields are kept, the others are named in
/// `loc.unexpected`, a missing required field in `loc.missing`.
fn kind_of(kind: KindName, t: KindText, loc: &mut StepLocations) -> StepKind {
    loc.unexpected = KIND_FIELDS
        .into_iter()
        .filter(|f| t.has(f) && !kind_uses(kind, f))
        .collect();
    let required = required_field(kind);
    if !required.is_empty() && !t.has(required) {
        loc.missing = Some(required);
    }
    match kind {
        KindName::Llm => StepKind::Llm(LlmStep {
            system: t.system,
            task: t.task,
            agent: t.agent,
            capability: t.capability,
            budget: t.budget,
            fallback: t.fallback,
            prompt: t.prompt.unwrap_or_default(),
            model: t.model,
            temperature: t.temperature,
            max_tokens: t.max_tokens,
            think: t.think,
            output_schema: t.output_schema,
        }),
        KindName::Template => StepKind::Template(TemplateStep {
            template: t.template.unwrap_or_default(),
            format: t.format,
        }),
        KindName::Approval => StepKind::Approval(ApprovalStep {
            prompt: t.prompt.unwrap_or_default(),
            approval: t.approval,
        }),
        KindName::Switch => StepKind::Switch(SwitchStep {
            cases: t.cases.unwrap_or_default(),
            default: t.default.unwrap_or_default(),
        }),
        KindName::Map => StepKind::Map(MapStep {
            items: t.items.unwrap_or_default(),
            item_as: t.item_as,
            index_as: t.index_as,
            concurrency: t.concurrency,
            on_item_error: t.on_item_error,
            tolerated_failures: t.tolerated_failures,
            tolerated_failure_percent: t.tolerated_failure_percent,
            result: t.result,
            steps: t.steps.unwrap_or_default(),
        }),
        KindName::Loop => StepKind::Loop(LoopStep {
            max_iterations: t.max_iterations.unwrap_or_default(),
            state: t.state.unwrap_or_default(),
            set: t.set.unwrap_or_default(),
            until: t.until,
            on_max_iterations: t.on_max_iterations,
            steps: t.steps.unwrap_or_default(),
        }),
        KindName::Workflow => StepKind::Workflow(SubWorkflowStep {
            workflow: t.workflow.unwrap_or_default(),
            inputs: t.inputs.unwrap_or_default(),
        }),
        KindName::Wait => StepKind::Wait(WaitStep {
            duration: t.duration,
            until: t.until,
        }),
        KindName::Event => StepKind::Event(EventStep {
            event: t.event,
            within: t.within,
            timeout_output: t.timeout_output,
        }),
        KindName::Tool => StepKind::Tool(ToolStep {
            tool: t.tool.unwrap_or_default(),
            args: t.args.unwrap_or_default(),
        }),
        KindName::Agent => StepKind::Agent(AgentStep {
            system: t.system,
            task: t.task,
            agent: t.agent,
            capability: t.capability,
            budget: t.budget,
            fallback: t.fallback,
            prompt: t.prompt.unwrap_or_default(),
            model: t.model,
            temperature: t.temperature,
            max_tokens: t.max_tokens,
            output_schema: t.output_schema,
            tools: t.tools.unwrap_or_default(),
            max_iterations: t.max_iterations,
            max_tool_calls: t.max_tool_calls,
        }),
        KindName::Vote => StepKind::Vote(VoteStep {
            prompt: t.prompt.unwrap_or_default(),
            choices: t.choices.unwrap_or_default(),
            voters: t.voters.unwrap_or_default(),
            rule: t.rule,
            threshold: t.threshold,
            quorum: t.quorum,
            on_tie: t.on_tie,
            max_tokens: t.max_tokens,
            temperature: t.temperature,
        }),
    }
}

/// The typed step and its locations.
fn step_of(step: Spanned<StepText>) -> (Step, StepLocations) {
    let mut loc = StepLocations {
        start: spanned(&step),
        ..StepLocations::default()
    };
    let s = step.value;
    let body = s.steps.map(|body| {
        if let Some(sp) = spanned(&body) {
            loc.fields.insert("steps", sp);
        }
        let (steps, locs): (Vec<Step>, Vec<StepLocations>) =
            body.value.into_iter().map(step_of).unzip();
        loc.body = locs;
        steps
    });
    let f = &mut loc.fields;
    let id = take(f, "id", Some(s.id)).unwrap_or_default();
    let kind = take(f, "kind", Some(s.kind)).unwrap_or(KindName::Llm);
    loc.needs = s.needs.iter().map(spanned).collect();
    if let Some(first) = loc.needs.first().copied().flatten() {
        f.insert("needs", first);
    }
    let needs = s.needs.into_iter().map(|n| n.value).collect();
    let trigger_rule = take(f, "trigger_rule", s.trigger_rule);
    let when = take(f, "when", s.when);
    let retry = take(f, "retry", s.retry);
    let timeout = take(f, "timeout", s.timeout);
    let on_failure = take(f, "on_failure", s.on_failure);
    let on_error = take(f, "on_error", s.on_error).unwrap_or_default();
    let cache = take(f, "cache", s.cache);
    let text = KindText {
        system: take(f, "system", s.system),
        task: take(f, "task", s.task),
        agent: take(f, "agent", s.agent),
        capability: take(f, "capability", s.capability),
        budget: take(f, "budget", s.budget),
        fallback: take(f, "fallback", s.fallback),
        prompt: take(f, "prompt", s.prompt),
        model: take(f, "model", s.model),
        temperature: take(f, "temperature", s.temperature),
        max_tokens: take(f, "max_tokens", s.max_tokens),
        think: take(f, "think", s.think),
        output_schema: take(f, "output_schema", s.output_schema),
        template: take(f, "template", s.template),
        format: take(f, "format", s.format),
        approval: take(f, "approval", s.approval),
        cases: take(f, "cases", s.cases),
        default: take(f, "default", s.default),
        items: take(f, "items", s.items),
        item_as: take(f, "as", s.item_as),
        index_as: take(f, "index_as", s.index_as),
        concurrency: take(f, "concurrency", s.concurrency),
        on_item_error: take(f, "on_item_error", s.on_item_error),
        tolerated_failures: take(f, "tolerated_failures", s.tolerated_failures),
        tolerated_failure_percent: take(
            f,
            "tolerated_failure_percent",
            s.tolerated_failure_percent,
        ),
        result: take(f, "result", s.result),
        max_iterations: take(f, "max_iterations", s.max_iterations),
        state: take(f, "state", s.state),
        set: take(f, "set", s.set),
        until: take(f, "until", s.until),
        on_max_iterations: take(f, "on_max_iterations", s.on_max_iterations),
        steps: body,
        workflow: take(f, "workflow", s.workflow),
        inputs: take(f, "inputs", s.inputs),
        duration: take(f, "duration", s.duration),
        event: take(f, "event", s.event),
        within: take(f, "within", s.within),
        timeout_output: take(f, "timeout_output", s.timeout_output),
        tool: take(f, "tool", s.tool),
        args: take(f, "args", s.args),
        tools: take(f, "tools", s.tools),
        max_tool_calls: take(f, "max_tool_calls", s.max_tool_calls),
        choices: take(f, "choices", s.choices),
        voters: take(f, "voters", s.voters),
        rule: take(f, "rule", s.rule),
        threshold: take(f, "threshold", s.threshold),
        quorum: take(f, "quorum", s.quorum),
        on_tie: take(f, "on_tie", s.on_tie),
    };
    let kind = kind_of(kind, text, &mut loc);
    let step = Step {
        id,
        name: s.name,
        needs,
        trigger_rule,
        when,
        retry,
        timeout,
        on_failure,
        on_error,
        cache,
        position: s.position,
        kind,
    };
    (step, loc)
}

/// Values of a located map, recording where each entry is.
fn located_map<T>(
    map: BTreeMap<String, Spanned<T>>,
    at: &mut BTreeMap<String, Span>,
) -> BTreeMap<String, T> {
    map.into_iter()
        .map(|(name, value)| {
            if let Some(sp) = spanned(&value) {
                at.insert(name.clone(), sp);
            }
            (name, value.value)
        })
        .collect()
}

/// The typed workflow and its locations.
fn workflow_of(doc: FileText) -> (Workflow, Locations) {
    let mut locs = Locations {
        id: spanned(&doc.id),
        format: spanned(&doc.format),
        steps: spanned(&doc.steps),
        budget: doc.budget.as_ref().and_then(spanned),
        on_failure: doc.on_failure.as_ref().and_then(spanned),
        agents_file: doc.agents_file.as_ref().and_then(spanned),
        ..Locations::default()
    };
    let inputs = located_map(doc.inputs, &mut locs.inputs);
    let outputs = located_map(doc.outputs, &mut locs.outputs);
    let agents = located_map(doc.agents, &mut locs.agents);
    locs.triggers = doc.triggers.iter().map(spanned).collect();
    let triggers = doc.triggers.into_iter().map(|t| t.value).collect();
    locs.notifications = doc.notifications.iter().map(spanned).collect();
    let notifications = doc.notifications.into_iter().map(|n| n.value).collect();
    let mut steps = Vec::with_capacity(doc.steps.value.len());
    for step in doc.steps.value {
        let (step, loc) = step_of(step);
        steps.push(step);
        locs.step.push(loc);
    }
    let workflow = Workflow {
        format: doc.format.value,
        id: doc.id.value,
        name: doc.name,
        description: doc.description,
        version: doc.version,
        inputs,
        outputs,
        local_only: doc.local_only,
        budget: doc.budget.map(|b| b.value),
        guardrails: doc.guardrails,
        tools: doc.tools,
        on_failure: doc.on_failure.map(|h| h.value),
        agents,
        agents_file: doc.agents_file.map(|f| f.value),
        triggers,
        notifications,
        steps,
    };
    (workflow, locs)
}

/// Parses workflow YAML text. `file` is used in diagnostics only.
///
/// # Errors
/// One [`DiagnosticCode::Syntax`] diagnostic, located, when the text is not valid YAML or
/// does not match the format (wrong type, unknown or missing field).
pub fn parse_str(text: &str, file: Option<&str>) -> Result<Parsed, Box<Diagnostic>> {
    match serde_saphyr::from_str::<FileText>(text) {
        Ok(doc) => {
            let (workflow, locations) = workflow_of(doc);
            Ok(Parsed {
                workflow,
                locations,
                file: file.map(str::to_owned),
            })
        }
        Err(err) => {
            let at = err.location().and_then(|l| span(&l));
            let message = syntax_message(&err);
            let mut d = Diagnostic::new(DiagnosticCode::Syntax, message)
                .at(at)
                .hint("fix the YAML at this place; the format is described by schema/workflow.schema.json");
            d.file = file.map(str::to_owned);
            Err(Box::new(d))
        }
    }
}

/// The error's own message without the rendered source snippet serde-saphyr appends.
fn syntax_message(err: &serde_saphyr::Error) -> String {
    let full = err.to_string();
    let first = full
        .lines()
        .next()
        .unwrap_or("invalid workflow file")
        .trim();
    // serde-saphyr prefixes "error: line X column Y: "; the location is printed separately.
    let trimmed = first.strip_prefix("error: ").unwrap_or(first);
    let trimmed = match trimmed.find(": ") {
        Some(i) if trimmed[..i].starts_with("line ") => &trimmed[i + 2..],
        _ => trimmed,
    };
    trimmed.to_string()
}

/// Reads and parses a workflow file.
///
/// # Errors
/// A [`DiagnosticCode::Io`] diagnostic when the file cannot be read, otherwise as
/// [`parse_str`].
pub fn parse_file(path: &Path) -> Result<Parsed, Box<Diagnostic>> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut d = Diagnostic::new(DiagnosticCode::Io, format!("cannot read the file: {e}"))
            .hint("check the path and that the file is readable UTF-8 text");
        d.file = Some(name.clone());
        Box::new(d)
    })?;
    parse_str(&text, Some(&name))
}
