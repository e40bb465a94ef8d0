//! The planner of `llm` steps: the agent and the fallback ladder's substitute resolved,
//! the prompts compiled, the model references and sampling parameters checked, the
//! output schema compiled into a validator.

use std::sync::Arc;

use crate::diagnostic::{Diagnostic, DiagnosticCode};
use crate::plan::step::{StepPlanner, check_budget};
use crate::plan::{
    Action, DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, LlmAction, Substitute, declared_providers,
};
use crate::provider::Locality;
use crate::select::ProviderDecl;
use crate::workflow::{LlmStep, ModelRequirements, ModelSpec};

/// Plans an `llm` step: agents, templates, model references, sampling parameters,
/// output schema, budget.
pub(in crate::plan) fn plan(p: &mut StepPlanner<'_, '_>, step: &LlmStep) -> Action {
    check_budget(
        p.cx,
        Some(p.id),
        "budget",
        step.budget.as_ref(),
        p.locs.of("budget"),
    );
    let agent = step.agent.as_deref().and_then(|a| p.agent("agent", a));
    if agent.as_ref().is_some_and(|a| a.system.is_some()) && step.system.is_some() {
        p.report(
            "system",
            DiagnosticCode::InvalidValue,
            "the step sets `system` and uses an agent that has its own system prompt".into(),
            "remove the step's `system`, or use an agent without one",
        );
    }
    let route = step.capability.as_deref().and_then(|c| {
        crate::plan::agents::route(
            p,
            c,
            step.agent.is_some(),
            step.system.as_ref(),
            step.model.as_ref(),
        )
    });
    let fallback = step.fallback.clone().unwrap_or_default();
    let substitute_agent = fallback
        .agent
        .as_deref()
        .and_then(|a| p.agent("fallback", a));
    let system = step.system.as_deref().and_then(|s| p.compile("system", s));
    let prompt = p.compile("prompt", &step.prompt);
    let system = match (&system, agent.as_ref().and_then(|a| a.system.as_deref())) {
        (None, Some(agent_system)) => p.compile("agent", agent_system),
        _ => system,
    };
    let mut model = requirements(
        step.model
            .as_ref()
            .or(agent.as_ref().and_then(|a| a.model.as_ref())),
    );
    model.local_only |= p.wf.local_only;
    let substitute = match (&substitute_agent, &fallback.agent) {
        (Some(a), Some(name)) => {
            let system = a.system.as_deref().and_then(|s| p.compile("fallback", s));
            let mut model = requirements(a.model.as_ref());
            model.local_only |= p.wf.local_only;
            Some(Substitute {
                agent: name.clone(),
                system,
                model,
            })
        }
        _ => None,
    };
    check_model_references(p, &model);
    let temperature = step.temperature.unwrap_or(DEFAULT_TEMPERATURE);
    if !(0.0..=2.0).contains(&temperature) {
        p.report(
            "temperature",
            DiagnosticCode::InvalidValue,
            format!("temperature {temperature} is out of range"),
            "use a value from 0.0 to 2.0",
        );
    }
    let max_tokens = step.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    if max_tokens == 0 {
        p.report(
            "max_tokens",
            DiagnosticCode::InvalidValue,
            "`max_tokens` is 0".into(),
            "use a positive number of tokens, e.g. 256",
        );
    }
    let output_schema =
        step.output_schema
            .as_ref()
            .and_then(|schema| match jsonschema::validator_for(schema) {
                Ok(v) => Some((schema.clone(), Arc::new(v))),
                Err(e) => {
                    p.report(
                        "output_schema",
                        DiagnosticCode::InvalidValue,
                        format!("`output_schema` is not a valid JSON Schema: {e}"),
                        "give a JSON Schema object such as `{type: object, properties: {...}}`",
                    );
                    None
                }
            });
    Action::Llm(Box::new(LlmAction {
        system,
        prompt: prompt.unwrap_or_default(),
        model,
        temperature,
        max_tokens,
        think: step.think,
        output_schema,
        task: step.task.unwrap_or_default(),
        agent: step.agent.clone(),
        fallback,
        substitute,
        budget: step.budget.clone(),
        route,
    }))
}

/// Checks each model reference of an `llm` step: a known provider, a model name, no
/// cloud model on a `local_only` step.
pub(in crate::plan) fn check_model_references(
    p: &mut StepPlanner<'_, '_>,
    model: &ModelRequirements,
) {
    for (j, reference) in model.prefer.iter().enumerate() {
        let provider = reference.split(':').next().unwrap_or_default();
        let field = format!("model.prefer[{j}]");
        let declared = declared_providers();
        // `ollama@gpu1`: one host of the `ollama` family (`providers.yaml`).
        let family = crate::provider::family(provider);
        let problem = match declared.iter().find(|d| d.id == family) {
            Some(_) if provider.ends_with('@') => Some((
                DiagnosticCode::InvalidValue,
                format!("model reference `{reference}` names no provider after `@`"),
                format!(
                    "write `{family}:<model>` or `{family}@<name>:<model>` with a name from providers.yaml"
                ),
            )),
            None => Some((
                DiagnosticCode::UnknownProvider,
                format!("model reference `{reference}` names unknown provider `{provider}`"),
                format!("write {}", reference_forms(declared)),
            )),
            Some(d)
                if !d.model_optional
                    && reference.split_once(':').is_none_or(|(_, m)| m.is_empty()) =>
            {
                Some((
                    DiagnosticCode::InvalidValue,
                    format!("model reference `{reference}` has no model name"),
                    format!("write `{provider}:<model>`, e.g. `{}`", d.example),
                ))
            }
            // An instance's locality is configuration (`openai@lmstudio` may be a
            // local server): the selector enforces `local_only` for it at run time.
            Some(d)
                if model.local_only && d.locality == Locality::Cloud && !provider.contains('@') =>
            {
                Some((
                    DiagnosticCode::InvalidValue,
                    format!(
                        "model reference `{reference}` is a cloud model but the step is `local_only`"
                    ),
                    "remove the cloud model or `local_only`".to_string(),
                ))
            }
            Some(_) => None,
        };
        if let Some((code, message, hint)) = problem {
            let d = Diagnostic::new(code, message)
                .step(p.id)
                .field(field)
                .at(p.locs.of("model"))
                .hint(hint);
            p.cx.push(d);
        }
    }
}

/// Model requirements from a step's or agent's `model` field.
pub(in crate::plan) fn requirements(spec: Option<&ModelSpec>) -> ModelRequirements {
    match spec {
        Some(ModelSpec::One(one)) => ModelRequirements {
            prefer: vec![one.clone()],
            ..ModelRequirements::default()
        },
        Some(ModelSpec::List(list)) => ModelRequirements {
            prefer: list.clone(),
            ..ModelRequirements::default()
        },
        Some(ModelSpec::Requirements(r)) => r.clone(),
        None => ModelRequirements::default(),
    }
}

/// The reference forms of the declared providers for a hint: "`ollama:<model>`,
/// `openai:<model>` or `embedded`".
fn reference_forms(declared: &[ProviderDecl]) -> String {
    let forms: Vec<String> = declared
        .iter()
        .map(|d| {
            if d.model_optional {
                format!("`{}`", d.id)
            } else {
                format!("`{}:<model>`", d.id)
            }
        })
        .collect();
    match forms.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => "a provider id declared in the model catalog".to_string(),
    }
}
