//! Rendering a step's templates and conditions against the run's inputs, the outputs of
//! the steps it reads, and — inside a `map` or `loop` body — the body's [`Frame`].

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::StepOutput;
use crate::plan::Plan;

/// Where a step list runs: the top of a workflow (an empty frame) or one item or
/// iteration of a body.
///
/// Invariant: `outer` holds the outputs of every enclosing step a body's templates read
/// (validation adds them to the owner's reads), `vars` every variable they may read.
pub(super) struct Frame {
    /// Prepended to the list's step ids in records and events (`each[3].`).
    pub(super) prefix: String,
    /// When the list started (a resumed list: when it first started, from its stored
    /// records or the run's start), the base of a `wait` step without dependencies.
    pub(super) started_at: chrono::DateTime<chrono::Utc>,
    /// Variables bound by the enclosing bodies (`item`, `index`, `state`, ...).
    pub(super) vars: serde_json::Map<String, serde_json::Value>,
    /// Outputs of enclosing steps, by step id.
    pub(super) outer: BTreeMap<String, Arc<StepOutput>>,
}

impl Default for Frame {
    fn default() -> Self {
        Frame {
            prefix: String::new(),
            started_at: chrono::Utc::now(),
            vars: serde_json::Map::new(),
            outer: BTreeMap::new(),
        }
    }
}

impl Frame {
    /// The recorded id of the list's step `id`.
    pub(super) fn path(&self, id: &str) -> String {
        format!("{}{id}", self.prefix)
    }

    /// The frame of one item or iteration of the body of the step recorded as `path`,
    /// at position `n`: this frame's variables and outer outputs, plus `vars` and the
    /// outputs the owner reads (`reads`).
    pub(super) fn child(
        &self,
        path: &str,
        n: usize,
        vars: impl IntoIterator<Item = (String, serde_json::Value)>,
        reads: impl IntoIterator<Item = (String, Arc<StepOutput>)>,
    ) -> Frame {
        let mut all = self.vars.clone();
        all.extend(vars);
        let mut outer = self.outer.clone();
        outer.extend(reads);
        Frame {
            prefix: format!("{path}[{n}]."),
            started_at: chrono::Utc::now(),
            vars: all,
            outer,
        }
    }
}

#[derive(Serialize)]
pub(super) struct TemplateContext<'a> {
    pub(super) inputs: &'a serde_json::Map<String, serde_json::Value>,
    pub(super) steps: BTreeMap<&'a str, StepView<'a>>,
    #[serde(flatten)]
    pub(super) vars: &'a serde_json::Map<String, serde_json::Value>,
}

#[derive(Serialize)]
pub(super) struct StepView<'a> {
    pub(super) output: &'a str,
    pub(super) json: Option<&'a serde_json::Value>,
}

impl<'a> StepView<'a> {
    fn of(out: &'a StepOutput) -> Self {
        StepView {
            output: &out.text,
            json: out.json.as_ref(),
        }
    }
}

/// Renders the template `name` of `plan` for a step that reads the steps `reads`.
pub(super) fn render(
    plan: &Plan,
    name: &str,
    inputs: &serde_json::Map<String, serde_json::Value>,
    frame: &Frame,
    reads: &[usize],
    outputs: &[Option<Arc<StepOutput>>],
) -> Result<String, String> {
    let mut steps: BTreeMap<&str, StepView<'_>> = frame
        .outer
        .iter()
        .map(|(id, out)| (id.as_str(), StepView::of(out)))
        .collect();
    for &r in reads {
        if let Some(out) = &outputs[r] {
            steps.insert(plan.steps[r].id.as_str(), StepView::of(out));
        }
    }
    let ctx = TemplateContext {
        inputs,
        steps,
        vars: &frame.vars,
    };
    plan.templates.render(name, &ctx).map_err(|e| {
        let mut msg = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            msg.push_str(&format!(": {s}"));
            source = s.source();
        }
        msg
    })
}

/// Renders a value template (`{{ (EXPR) | tojson }}`, see the planner) and parses the
/// JSON it renders.
pub(super) fn render_value(
    plan: &Plan,
    name: &str,
    inputs: &serde_json::Map<String, serde_json::Value>,
    frame: &Frame,
    reads: &[usize],
    outputs: &[Option<Arc<StepOutput>>],
) -> Result<serde_json::Value, String> {
    let text = render(plan, name, inputs, frame, reads, outputs)?;
    serde_json::from_str(&text).map_err(|e| format!("the expression's value is not JSON: {e}"))
}

/// Every index of a plan's steps (a body's `result`, `set` and `until` may read any).
pub(super) fn all_steps(plan: &Plan) -> Vec<usize> {
    (0..plan.steps.len()).collect()
}
