//! Rendering a step's templates and conditions against the run's inputs and the outputs
//! of the steps it reads.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use super::StepOutput;
use crate::plan::Plan;

#[derive(Serialize)]
pub(super) struct TemplateContext<'a> {
    pub(super) inputs: &'a serde_json::Map<String, serde_json::Value>,
    pub(super) steps: BTreeMap<&'a str, StepView<'a>>,
}

#[derive(Serialize)]
pub(super) struct StepView<'a> {
    pub(super) output: &'a str,
    pub(super) json: Option<&'a serde_json::Value>,
}

pub(super) fn render(
    plan: &Plan,
    name: &str,
    inputs: &serde_json::Map<String, serde_json::Value>,
    reads: &[usize],
    outputs: &[Option<Arc<StepOutput>>],
) -> Result<String, String> {
    let mut steps = BTreeMap::new();
    for &r in reads {
        if let Some(out) = &outputs[r] {
            steps.insert(
                plan.steps[r].id.as_str(),
                StepView {
                    output: &out.text,
                    json: out.json.as_ref(),
                },
            );
        }
    }
    let ctx = TemplateContext { inputs, steps };
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
