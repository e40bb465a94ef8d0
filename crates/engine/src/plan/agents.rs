//! The agent registry of a workflow: the shared `agents_file` merged with the inline
//! `agents:`, each agent's `tools` declared, and the agents a `capability:` step may be
//! routed to (see [`crate::route`] for the choice at run time).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::report::{At, Ctx, did_you_mean};
use super::step::StepPlanner;
use super::{AgentRoute, RouteCandidate};
use crate::diagnostic::DiagnosticCode;
use crate::workflow::{Agent, Workflow};

/// An `agents_file`: `agents: {name: {description, system, model, capabilities, tools}}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentsFile {
    #[serde(default)]
    agents: BTreeMap<String, Agent>,
}

const FILE_HINT: &str =
    "the file holds `agents: {NAME: {description, system, model, capabilities, tools}}`";

/// The workflow with its `agents_file`'s agents merged in (an inline agent replaces the
/// file's agent of the same name; `agents_file` is then cleared, so the plan's workflow,
/// stored with each run, needs no file to resume), or `None` when it names no file or the
/// file is refused (reported).
pub(super) fn with_agents_file(cx: &mut Ctx<'_>, wf: &Workflow) -> Option<Workflow> {
    let rel = wf.agents_file.as_deref()?;
    let at = At {
        step: None,
        field: "agents_file".into(),
        span: cx.locs.agents_file,
    };
    let base = workflow_folder(cx.file);
    let path = match inside(&base, rel) {
        Ok(p) => p,
        Err((code, message, hint)) => {
            cx.push(at.diag(code, message, &hint));
            return None;
        }
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            let message = format!("`agents_file` `{rel}` cannot be read: {e}");
            cx.push(at.diag(DiagnosticCode::Io, message, FILE_HINT));
            return None;
        }
    };
    let file: AgentsFile = match serde_saphyr::from_str(&text) {
        Ok(f) => f,
        Err(e) => {
            let first = e.to_string();
            let first = first.lines().next().unwrap_or("invalid YAML");
            let message = format!("`agents_file` `{rel}` is not an agents file: {first}");
            cx.push(at.diag(DiagnosticCode::Syntax, message, FILE_HINT));
            return None;
        }
    };
    let mut merged = wf.clone();
    let mut agents = file.agents;
    agents.extend(wf.agents.clone());
    merged.agents = agents;
    merged.agents_file = None;
    Some(merged)
}

/// The folder of the workflow file (the current folder for a workflow without one).
fn workflow_folder(file: Option<&str>) -> PathBuf {
    let base = file
        .and_then(|f| Path::new(f).parent())
        .map(Path::to_path_buf)
        .unwrap_or_default();
    if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    }
}

/// `rel` resolved from `base` (links followed), refused when it leads outside `base`.
fn inside(base: &Path, rel: &str) -> Result<PathBuf, (DiagnosticCode, String, String)> {
    let io = |e: std::io::Error, what: &Path| {
        (
            DiagnosticCode::Io,
            format!(
                "`agents_file` `{rel}` cannot be read: {} ({e})",
                what.display()
            ),
            "create the file in the workflow's folder, or fix the path".to_string(),
        )
    };
    let root = std::fs::canonicalize(base).map_err(|e| io(e, base))?;
    let joined = base.join(rel);
    let path = std::fs::canonicalize(&joined).map_err(|e| io(e, &joined))?;
    if path.starts_with(&root) {
        Ok(path)
    } else {
        Err((
            DiagnosticCode::InvalidValue,
            format!(
                "`agents_file` `{rel}` is outside the workflow's folder {}",
                root.display()
            ),
            "move the agents file into the workflow's folder (or a folder below it)".into(),
        ))
    }
}

/// Each agent's `tools` are declared under the workflow's `tools:`.
pub(super) fn check_agents(cx: &mut Ctx<'_>, wf: &Workflow) {
    for (name, agent) in &wf.agents {
        for tool in &agent.tools {
            if wf.tools.contains_key(tool) {
                continue;
            }
            let dym = did_you_mean(tool, wf.tools.keys().map(String::as_str));
            let at = At {
                step: None,
                field: format!("agents.{name}.tools"),
                span: cx.locs.agents.get(name).copied(),
            };
            cx.push(at.diag(
                DiagnosticCode::UnknownStep,
                format!("agent `{name}` lists unknown tool `{tool}`{dym}"),
                "declare the tool under the workflow's `tools:` or fix the name",
            ));
        }
    }
}

/// The agents a step's `capability` may be routed to, each planned for the step (its
/// system template compiled, its model requirements), or `None` (reported) when the step
/// also names an `agent` or no agent lists the capability. `step_system` and
/// `step_model` are the step's own, which an agent's replace.
pub(super) fn route(
    p: &mut StepPlanner<'_, '_>,
    capability: &str,
    has_agent: bool,
    step_system: Option<&String>,
    step_model: Option<&crate::workflow::ModelSpec>,
) -> Option<Box<AgentRoute>> {
    if has_agent {
        p.report(
            "capability",
            DiagnosticCode::InvalidValue,
            "the step sets both `agent` and `capability`".into(),
            "keep `agent` to name the agent, or `capability` to let the run pick one of the agents that list it",
        );
        return None;
    }
    let listing: Vec<(String, Agent)> =
        p.wf.agents
            .iter()
            .filter(|(_, a)| a.capabilities.iter().any(|c| c == capability))
            .map(|(n, a)| (n.clone(), a.clone()))
            .collect();
    if listing.is_empty() {
        let known: std::collections::BTreeSet<&str> =
            p.wf.agents
                .values()
                .flat_map(|a| a.capabilities.iter().map(String::as_str))
                .collect();
        let dym = did_you_mean(capability, known.iter().copied());
        p.report(
            "capability",
            DiagnosticCode::UnknownCapability,
            format!("`capability` names `{capability}`, which no agent lists{dym}"),
            "add it to an agent's `capabilities:` (inline or in the `agents_file`), or fix the name",
        );
        return None;
    }
    let mut candidates = Vec::with_capacity(listing.len());
    for (name, agent) in listing {
        let system = match agent.system.as_deref() {
            Some(text) => p.compile_named(&format!("route.{name}"), "capability", text.into()),
            None => step_system.and_then(|s| p.compile("system", s)),
        };
        let mut model = super::kinds::llm::requirements(step_model.or(agent.model.as_ref()));
        model.local_only |= p.wf.local_only;
        super::kinds::llm::check_model_references(p, &model);
        candidates.push(RouteCandidate {
            agent: name,
            system,
            model,
            tools: Vec::new(),
        });
    }
    Some(Box::new(AgentRoute {
        capability: capability.to_string(),
        candidates,
    }))
}
