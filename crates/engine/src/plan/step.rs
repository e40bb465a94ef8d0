//! Planning one step: the checks every kind shares (stray and missing fields, failure
//! policy, retry, timeouts, the `when` condition), then the planner of the step's kind
//! (see [`super::kinds`]), and the step's definition hash.
//!
//! A step with any error yields no [`PlannedStep`]; its problems are all reported.

use std::collections::{BTreeSet, HashMap};

use minijinja::Environment;

use super::PlannedStep;
use super::kinds;
use super::report::{At, Ctx, did_you_mean};
use super::templates::{BodyFrame, Scope, Templates, compile_template};
use crate::diagnostic::{Diagnostic, DiagnosticCode, Span};
use crate::parse::StepLocations;
use crate::workflow::{
    Agent, Budget, KindName, OnFailure, RetryPolicy, Step, StepKind, Timeouts, Workflow,
};

/// What planning one step needs: the validation context, the template environment, the
/// workflow, the step's scope and locations, and the steps its templates read so far.
pub(super) struct StepPlanner<'p, 'c> {
    pub(super) cx: &'p mut Ctx<'c>,
    pub(super) templates: &'p mut Templates,
    pub(super) wf: &'p Workflow,
    pub(super) index: &'p HashMap<String, usize>,
    pub(super) scope: Scope<'p>,
    pub(super) id: &'p str,
    pub(super) locs: &'p StepLocations,
    pub(super) reads: BTreeSet<usize>,
}

impl StepPlanner<'_, '_> {
    /// Where the step's `field` is, for a diagnostic.
    pub(super) fn at(&self, field: &str) -> At {
        At {
            step: Some(self.id.to_string()),
            field: field.to_string(),
            span: self.locs.of(field),
        }
    }

    /// Reports a problem with `field`.
    pub(super) fn report(
        &mut self,
        field: &str,
        code: DiagnosticCode,
        message: String,
        hint: &str,
    ) {
        let d = self.at(field).diag(code, message, hint);
        self.cx.push(d);
    }

    /// Compiles the step's template `text` written in `field` as `steps.<id>.<field>`,
    /// adding the steps it reads; the template's name, or `None` when it has errors.
    pub(super) fn compile(&mut self, field: &str, text: &str) -> Option<String> {
        self.compile_named(field, field, text.to_string())
    }

    /// Compiles the template `text` as `steps.<id>.<name>`, located at the step's `field`,
    /// adding the steps it reads; the template's name, or `None` when it has errors.
    pub(super) fn compile_named(
        &mut self,
        name: &str,
        field: &str,
        text: String,
    ) -> Option<String> {
        let name = format!("steps.{}.{name}", self.id);
        let at = self.at(field);
        let reads = compile_template(
            self.cx,
            self.templates,
            self.wf,
            self.index,
            self.scope,
            &name,
            text,
            at,
        )?;
        self.reads.extend(reads);
        Some(name)
    }

    /// Checks that `expr` (written in `field`) is a minijinja expression, reporting it
    /// when not.
    pub(super) fn check_expression(&mut self, field: &str, expr: &str) -> bool {
        match Environment::new().compile_expression(expr) {
            Ok(_) => true,
            Err(e) => {
                let what = if field == "when" {
                    "condition".to_string()
                } else {
                    format!("`{field}`")
                };
                self.report(
                    field,
                    DiagnosticCode::TemplateSyntax,
                    format!(
                        "{what} does not compile: {}",
                        e.detail().unwrap_or("invalid expression")
                    ),
                    "write a minijinja expression such as `steps.plan.json.tasks` or `inputs.depth == \"full\"`",
                );
                false
            }
        }
    }

    /// The agent `name` written in `field`, or `None` (reported) when it is not declared.
    pub(super) fn agent(&mut self, field: &str, name: &str) -> Option<Agent> {
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
    let locs = p.locs;
    for &field in &locs.unexpected {
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
    if let Some(required) = locs.missing {
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

/// `retry` and `timeout` apply to one call (a model, a tool, a render); on a kind that
/// only arranges other steps they would do nothing, so they are reported.
fn check_unused_common(p: &mut StepPlanner<'_, '_>, step: &Step) {
    let kind = step.kind_name();
    let arranges = matches!(
        kind,
        KindName::Switch
            | KindName::Map
            | KindName::Loop
            | KindName::Workflow
            | KindName::Wait
            | KindName::Event
    );
    if arranges && step.retry.is_some() {
        p.report(
            "retry",
            DiagnosticCode::InvalidValue,
            format!("`retry` has no effect on `kind: {}` steps", kind.as_str()),
            "put the retry policy on the steps it runs (their own `retry`)",
        );
    }
    if (arranges || kind == KindName::Tool) && step.timeout.is_some() {
        let hint = if kind == KindName::Tool {
            "give the tool a `timeout` under `tools:`"
        } else {
            "put timeouts on the steps it runs"
        };
        p.report(
            "timeout",
            DiagnosticCode::InvalidValue,
            format!("`timeout` has no effect on `kind: {}` steps", kind.as_str()),
            hint,
        );
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
    if !p.check_expression("when", expr) {
        return None;
    }
    p.compile("when", &condition_template(expr))
}

/// The template a condition `EXPR` is compiled as: it renders `true` when the
/// expression is truthy, nothing otherwise.
pub(super) fn condition_template(expr: &str) -> String {
    format!("{{% if {expr} %}}true{{% endif %}}")
}

/// The template a value expression `EXPR` is compiled as: it renders the value as JSON
/// (minijinja's `tojson` filter), which the run parses back.
pub(super) fn value_template(expr: &str) -> String {
    format!("{{{{ ({expr}) | tojson }}}}")
}

/// Plans one step: the checks every kind shares, then the kind's own planner. `None`
/// when the step has errors (reported).
#[allow(clippy::too_many_arguments)]
pub(super) fn plan_step(
    cx: &mut Ctx<'_>,
    templates: &mut Templates,
    wf: &Workflow,
    index: &HashMap<String, usize>,
    graph: Option<&[Vec<usize>]>,
    frame: Option<&BodyFrame<'_>>,
    handler: bool,
    i: usize,
    step: &Step,
    needs: &[usize],
) -> Option<PlannedStep> {
    let errors_before = cx.diags.len();
    let locs = cx.step_locs(i);
    let scope = match (frame, graph) {
        (Some(frame), graph) => Scope::Body {
            graph,
            step: Some(i),
            frame,
        },
        (None, Some(graph)) => Scope::Step { graph, step: i },
        (None, None) => Scope::InCycle,
    };
    // A handler also reads `error`: its scope is wrapped in a frame that binds it (the
    // frame's enclosing list is the step's own, so step references resolve as before).
    let handler_frame = handler.then(|| BodyFrame {
        vars: vec!["error".to_string()],
        outer_index: index,
        outer_scope: scope,
        outer_reads: std::cell::RefCell::new(std::collections::BTreeSet::new()),
    });
    let scope = match &handler_frame {
        Some(hf) => Scope::Body {
            graph,
            step: Some(i),
            frame: hf,
        },
        None => scope,
    };
    let mut p = StepPlanner {
        cx,
        templates,
        wf,
        index,
        scope,
        id: &step.id,
        locs,
        reads: BTreeSet::new(),
    };
    let kind = step.kind_name();
    check_kind_fields(&mut p, kind);
    check_unused_common(&mut p, step);
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
        StepKind::Llm(s) => kinds::llm::plan(&mut p, s),
        StepKind::Template(s) => kinds::template::plan(&mut p, s),
        StepKind::Approval(s) => kinds::approval::plan(&mut p, s),
        StepKind::Switch(s) => kinds::switch::plan(&mut p, s),
        StepKind::Map(s) => kinds::map::plan(&mut p, s),
        StepKind::Loop(s) => kinds::loops::plan(&mut p, s),
        StepKind::Workflow(s) => kinds::subflow::plan(&mut p, s),
        StepKind::Wait(s) => super::wait::plan(&mut p, s),
        StepKind::Event(s) => super::wait::plan_event(&mut p, &step.id, s),
        StepKind::Tool(s) => super::tools::plan(&mut p, s),
        StepKind::Agent(s) => kinds::agent::plan(&mut p, s),
        StepKind::Vote(s) => kinds::vote::plan(&mut p, s),
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
        trigger_rule: step.trigger_rule.unwrap_or_default(),
        branches: Vec::new(),
        reads: reads.into_iter().collect(),
        when,
        retry,
        timeouts,
        on_failure,
        cache: step.cache.unwrap_or(true),
        alternate_of: None,
        handlers: Vec::new(),
        definition_hash: definition_hash(step),
    })
}

/// SHA-256 (hex) of the step as written, without its canvas position: moving a node
/// does not invalidate its cached output, editing any other field does.
fn definition_hash(step: &Step) -> String {
    use sha2::Digest;
    let mut step = step.clone();
    step.position = None;
    step.name = None;
    let json = serde_json::to_vec(&step).unwrap_or_default();
    super::hex(&sha2::Sha256::digest(&json))
}

/// Checks that budget limits are positive.
pub(super) fn check_budget(
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
