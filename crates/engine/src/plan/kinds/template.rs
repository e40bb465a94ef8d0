//! The planner of `template` steps: the template compiled, the output format kept.

use crate::plan::Action;
use crate::plan::step::StepPlanner;
use crate::workflow::TemplateStep;

/// Plans a `template` step.
pub(in crate::plan) fn plan(p: &mut StepPlanner<'_, '_>, step: &TemplateStep) -> Action {
    let template = p.compile("template", &step.template);
    Action::Template {
        template: template.unwrap_or_default(),
        format: step.format.unwrap_or_default(),
    }
}
