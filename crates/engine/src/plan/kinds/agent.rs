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
    let mut llm = match super::llm::plan(p, &step.as_llm()) {
        Action::Llm(llm) => *llm,
        // The llm planner returns nothing else; the step is reported already if it did.
        other => return other,
    };
    let agent_has_tools = step
        .agent
        .as_deref()
        .and_then(|a| p.wf.agents.get(a))
        .is_some_and(|a| !a.tools.is_empty())
        || llm.route.as_ref().is_some_and(|r| {
            r.candidates.iter().all(|c| {
                p.wf.agents
                    .get(&c.agent)
                    .is_some_and(|a| !a.tools.is_empty())
            })
        });
    if step.tools.is_empty() && !agent_has_tools && p.locs.missing.is_none() {
        p.report(
            "tools",
            DiagnosticCode::MissingField,
            "an `agent` step lists no `tools`".into(),
            "list the tools it may call (names under the workflow's `tools:`, here or in its agent's `tools`), or use a `kind: llm` step",
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
    // The agent's own tools, besides the step's: the named agent's now, each routed
    // candidate's when the run picks it.
    if let Some(agent) = step
        .agent
        .as_deref()
        .and_then(|a| p.wf.agents.get(a).cloned())
    {
        tools.extend(agent_tools(p, &agent.tools, &step.tools));
    }
    if let Some(route) = llm.route.as_mut() {
        for cand in &mut route.candidates {
            let own =
                p.wf.agents
                    .get(&cand.agent)
                    .map(|a| a.tools.clone())
                    .unwrap_or_default();
            cand.tools = agent_tools(p, &own, &step.tools);
        }
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

/// The tools of an agent's `tools` list that the step does not list already, planned as
/// the step's (an undeclared one is reported with the agent's declaration).
fn agent_tools(
    p: &mut StepPlanner<'_, '_>,
    names: &[String],
    step_tools: &[String],
) -> Vec<crate::plan::ToolAction> {
    let mut out = Vec::new();
    for (k, name) in names.iter().enumerate() {
        if step_tools.contains(name) || names[..k].contains(name) {
            continue;
        }
        if let Some(decl) = p.wf.tools.get(name).cloned() {
            out.push(crate::plan::tools::agent_tool(p, name, &decl));
        }
    }
    out
}
