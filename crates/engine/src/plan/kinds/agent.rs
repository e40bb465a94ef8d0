//! The planner of `agent` steps: the model fields planned as an `llm` step's (persona,
//! templates, model references, sampling, output schema, budget), each listed tool
//! declared under `tools:` and checked as a `tool` step's tool is (without a call's
//! arguments, which the model gives), and the caps positive.

use crate::diagnostic::DiagnosticCode;
use crate::plan::report::did_you_mean;
use crate::plan::step::StepPlanner;
use crate::plan::{Action, AgentAction};
use crate::workflow::{AgentStep, DEFAULT_AGENT_ITERATIONS, DEFAULT_AGENT_TOOL_CALLS};

/// Plans an `agent` step.
pub(in crate::plan) fn plan(p: &mut StepPlanner<'_, '_>, step: &AgentStep) -> Action {
    let llm = match super::llm::plan(p, &step.as_llm()) {
        Action::Llm(llm) => *llm,
        // The llm planner returns nothing else; the step is reported already if it did.
        other => return other,
    };
    if step.tools.is_empty() && p.locs.missing.is_none() {
        p.report(
            "tools",
            DiagnosticCode::MissingField,
            "an `agent` step lists no `tools`".into(),
            "list the tools it may call (names under the workflow's `tools:`), or use a `kind: llm` step",
        );
    }
    let mut tools = Vec::with_capacity(step.tools.len());
    for (k, name) in step.tools.iter().enumerate() {
        if step.tools[..k].contains(name) {
            p.report(
                "tools",
                DiagnosticCode::DuplicateId,
                format!("`tools` lists `{name}` twice"),
                "list each tool once",
            );
            continue;
        }
        let Some(decl) = p.wf.tools.get(name).cloned() else {
            let dym = did_you_mean(name, p.wf.tools.keys().map(String::as_str));
            p.report(
                "tools",
                DiagnosticCode::UnknownStep,
                format!("`tools` names unknown tool `{name}`{dym}"),
                "declare the tool under the workflow's `tools:` (`http:`, `file:`, `shell:` or `mcp:`) or fix the name",
            );
            continue;
        };
        tools.push(crate::plan::tools::agent_tool(p, name, &decl));
    }
    let max_iterations = step.max_iterations.unwrap_or(DEFAULT_AGENT_ITERATIONS);
    let max_tool_calls = step.max_tool_calls.unwrap_or(DEFAULT_AGENT_TOOL_CALLS);
    for (field, value, example) in [
        ("max_iterations", max_iterations, DEFAULT_AGENT_ITERATIONS),
        ("max_tool_calls", max_tool_calls, DEFAULT_AGENT_TOOL_CALLS),
    ] {
        if value == 0 {
            p.report(
                field,
                DiagnosticCode::InvalidValue,
                format!("`{field}` is 0"),
                &format!("use a positive number, e.g. {example}"),
            );
        }
    }
    Action::Agent(Box::new(AgentAction {
        llm,
        tools,
        max_iterations,
        max_tool_calls,
    }))
}
