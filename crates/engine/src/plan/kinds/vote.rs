//! The planner of `vote` steps: the question and the sampling fields planned as an `llm`
//! step's (with the ballot's schema as its output schema), at least two distinct
//! choices, at least one voter, each voter's agent and model references, positive
//! weights, a threshold above one half, a quorum the voters can reach.

use serde_json::json;

use crate::diagnostic::DiagnosticCode;
use crate::plan::step::StepPlanner;
use crate::plan::{Action, VoteAction, VoterAction};
use crate::workflow::{LlmStep, VoteStep};

/// The default `threshold` of a supermajority: two thirds.
pub const DEFAULT_THRESHOLD: f64 = 2.0 / 3.0;

/// Plans a `vote` step.
pub(in crate::plan) fn plan(p: &mut StepPlanner<'_, '_>, step: &VoteStep) -> Action {
    let schema = json!({
        "type": "object",
        "properties": {"choice": {"enum": step.choices}, "reason": {"type": "string"}},
        "required": ["choice", "reason"],
        "additionalProperties": false,
    });
    let base = LlmStep {
        system: None,
        task: None,
        agent: None,
        capability: None,
        budget: None,
        fallback: None,
        prompt: step.prompt.clone(),
        model: None,
        temperature: step.temperature,
        max_tokens: step.max_tokens,
        think: None,
        output_schema: Some(schema),
    };
    let llm = match super::llm::plan(p, &base) {
        Action::Llm(llm) => *llm,
        other => return other,
    };
    check_choices(p, &step.choices);
    if step.voters.is_empty() {
        p.report(
            "voters",
            DiagnosticCode::MissingField,
            "a `vote` step has no `voters`".into(),
            "list the voters, e.g. `voters: [{model: ollama:llama3.1}, {agent: reviewer}]`",
        );
    }
    let mut voters = Vec::with_capacity(step.voters.len());
    for (k, v) in step.voters.iter().enumerate() {
        let agent = v.agent.as_deref().and_then(|a| p.agent("voters", a));
        let system = agent
            .as_ref()
            .and_then(|a| a.system.clone())
            .and_then(|s| p.compile_named(&format!("voters.{k}.system"), "voters", s));
        let mut model = super::llm::requirements(
            v.model
                .as_ref()
                .or(agent.as_ref().and_then(|a| a.model.as_ref())),
        );
        model.local_only |= p.wf.local_only;
        super::llm::check_model_references(p, &model);
        let weight = v.weight.unwrap_or(1.0);
        if !(weight.is_finite() && weight > 0.0) {
            p.report(
                "voters",
                DiagnosticCode::InvalidValue,
                format!("voter {} has weight {weight}", k + 1),
                "give a weight above 0, e.g. 2 for a voter that counts double",
            );
        }
        voters.push(VoterAction {
            name: v
                .name
                .clone()
                .or_else(|| v.agent.clone())
                .unwrap_or_else(|| format!("voter {}", k + 1)),
            system,
            model,
            weight,
            veto: v.veto.unwrap_or(false),
        });
    }
    let threshold = step.threshold.unwrap_or(DEFAULT_THRESHOLD);
    if !(threshold > 0.5 && threshold <= 1.0) {
        p.report(
            "threshold",
            DiagnosticCode::InvalidValue,
            format!("`threshold` {threshold} is not above one half and at most 1"),
            "give the share of the weight a supermajority needs, e.g. 0.67",
        );
    }
    let count = u32::try_from(step.voters.len()).unwrap_or(u32::MAX);
    let quorum = step.quorum.unwrap_or(count / 2 + 1);
    if quorum == 0 || quorum > count {
        p.report(
            "quorum",
            DiagnosticCode::InvalidValue,
            format!("`quorum` {quorum} cannot be met by {count} voter(s)"),
            "give at least 1 and at most the number of voters",
        );
    }
    Action::Vote(Box::new(VoteAction {
        llm,
        choices: step.choices.clone(),
        voters,
        rule: step.rule.unwrap_or_default(),
        threshold,
        quorum,
        on_tie: step.on_tie.unwrap_or_default(),
    }))
}

/// At least two choices, none empty, each once.
fn check_choices(p: &mut StepPlanner<'_, '_>, choices: &[String]) {
    if choices.len() < 2 {
        p.report(
            "choices",
            DiagnosticCode::InvalidValue,
            format!(
                "a `vote` step needs at least two choices, it has {}",
                choices.len()
            ),
            "list the choices, e.g. `choices: [ship, wait]`",
        );
    }
    for (k, c) in choices.iter().enumerate() {
        if c.trim().is_empty() {
            p.report(
                "choices",
                DiagnosticCode::InvalidValue,
                format!("choice {} is empty", k + 1),
                "give every choice a name",
            );
        } else if choices[..k].contains(c) {
            p.report(
                "choices",
                DiagnosticCode::DuplicateId,
                format!("`choices` lists `{c}` twice"),
                "list each choice once",
            );
        }
    }
}
