//! Model selection v1: which models may serve an `llm` step, in which order, and why.
//!
//! Order (the first that applies):
//! 1. an explicit preference list on the step (`model: [...]` or `model.prefer`) wins,
//!    in the order written;
//! 2. otherwise: installed Ollama models, preferring the families `llama3.1`, then
//!    `qwen2.5`, then `deepseek-r1`, then the other installed chat models by name;
//!    then the configured cloud models; then the embedded model.
//!
//! Filters: `local_only` drops cloud models; `min_context` drops models whose context
//! window is known and smaller. Providers that could not be reached at discovery are
//! left out of the automatic order with the reason kept for the run record. At run time,
//! a candidate that turns out unreachable or lacks the model is skipped at once (see
//! [`crate::provider::ProviderErrorKind::falls_back_at_once`]).

use std::sync::Arc;
use std::time::Duration;

use crate::provider::{Locality, ModelInfo, Provider, ProviderError, ProviderErrorKind};
use crate::workflow::ModelRequirements;

/// Ollama model families in order of preference (the product brief's local models).
pub const PREFERRED_OLLAMA_FAMILIES: [&str; 3] = ["llama3.1", "qwen2.5", "deepseek-r1"];

/// What discovery found for one provider.
#[derive(Clone)]
pub struct ProviderStatus {
    /// The provider.
    pub provider: Arc<dyn Provider>,
    /// Its models, or why they could not be listed.
    pub models: Result<Vec<ModelInfo>, ProviderError>,
}

/// The models available now, per configured provider, in registration order.
#[derive(Clone, Default)]
pub struct Catalog {
    /// One entry per configured provider.
    pub providers: Vec<ProviderStatus>,
}

/// One model the step may try, with the reason it is in the list.
#[derive(Clone)]
pub struct Candidate {
    /// Who serves it.
    pub provider: Arc<dyn Provider>,
    /// The model's name at the provider.
    pub model: String,
    /// `provider:model`.
    pub reference: String,
    /// Why it is a candidate at this rank.
    pub reason: String,
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate")
            .field("reference", &self.reference)
            .field("reason", &self.reason)
            .finish()
    }
}

/// The ranked candidates of a step and the models left out, with reasons.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Candidates, best first; the rest of the list is the fallback chain.
    pub candidates: Vec<Candidate>,
    /// Models or providers left out, and why (`"openai: not configured"`).
    pub excluded: Vec<String>,
}

impl Catalog {
    /// Lists the models of every provider concurrently, each within `timeout`.
    pub async fn discover(providers: &[Arc<dyn Provider>], timeout: Duration) -> Catalog {
        let futures = providers.iter().map(|p| {
            let p = Arc::clone(p);
            async move {
                let models = match tokio::time::timeout(timeout, p.list_models()).await {
                    Ok(result) => result,
                    Err(_) => Err(ProviderError::new(
                        ProviderErrorKind::Unavailable,
                        format!("no answer within {} ms", timeout.as_millis()),
                    )),
                };
                ProviderStatus {
                    provider: p,
                    models,
                }
            }
        });
        Catalog {
            providers: futures::future::join_all(futures).await,
        }
    }

    fn status(&self, provider: &str) -> Option<&ProviderStatus> {
        self.providers.iter().find(|s| s.provider.id() == provider)
    }

    /// The order the selector tries models in for a step without preferences.
    pub fn default_order(&self) -> Selection {
        select(&ModelRequirements::default(), self)
    }
}

fn family_rank(name: &str) -> usize {
    let base = name.split(':').next().unwrap_or(name);
    PREFERRED_OLLAMA_FAMILIES
        .iter()
        .position(|f| base == *f)
        .unwrap_or(PREFERRED_OLLAMA_FAMILIES.len())
}

fn fits(info: &ModelInfo, req: &ModelRequirements) -> Result<(), String> {
    if req.local_only && info.locality == Locality::Cloud {
        return Err(format!(
            "{}: cloud model, step is local_only",
            info.reference()
        ));
    }
    if let (Some(min), Some(ctx)) = (req.min_context, info.context_length)
        && ctx < min
    {
        return Err(format!(
            "{}: context window {ctx} tokens < required {min}",
            info.reference()
        ));
    }
    Ok(())
}

/// Ranks the candidates for a step.
pub fn select(req: &ModelRequirements, catalog: &Catalog) -> Selection {
    let mut sel = Selection::default();
    if !req.prefer.is_empty() {
        for (rank, reference) in req.prefer.iter().enumerate() {
            let (provider_id, model) = match reference.split_once(':') {
                Some((p, m)) => (p, m),
                None => (reference.as_str(), ""),
            };
            let Some(status) = catalog.status(provider_id) else {
                sel.excluded.push(format!(
                    "{reference}: provider `{provider_id}` is not configured"
                ));
                continue;
            };
            if req.local_only && status.provider.locality() == Locality::Cloud {
                sel.excluded
                    .push(format!("{reference}: cloud model, step is local_only"));
                continue;
            }
            // Resolve `llama3.1` to an installed `llama3.1:latest`; for the embedded
            // provider take its one model.
            let resolved = match &status.models {
                Ok(models) => models
                    .iter()
                    .find(|m| {
                        model.is_empty()
                            || m.name == model
                            || m.name
                                .strip_prefix(model)
                                .is_some_and(|r| r.starts_with(':'))
                    })
                    .map(|m| m.name.clone()),
                Err(_) => None,
            };
            let model = resolved.unwrap_or_else(|| model.to_string());
            sel.candidates.push(Candidate {
                provider: Arc::clone(&status.provider),
                reference: format!("{provider_id}:{model}"),
                model,
                reason: format!("explicit preference #{} of the step", rank + 1),
            });
        }
        return sel;
    }

    let push_models = |locality: Locality, sel: &mut Selection| {
        for status in catalog
            .providers
            .iter()
            .filter(|s| s.provider.locality() == locality)
        {
            match &status.models {
                Err(e) => sel.excluded.push(format!(
                    "{}: unreachable at discovery ({e})",
                    status.provider.id()
                )),
                Ok(models) => {
                    let mut models: Vec<&ModelInfo> = models
                        .iter()
                        .filter(|m| !m.name.contains("embed"))
                        .collect();
                    if locality == Locality::Local {
                        models.sort_by(|a, b| {
                            family_rank(&a.name)
                                .cmp(&family_rank(&b.name))
                                .then_with(|| a.name.cmp(&b.name))
                        });
                    }
                    if models.is_empty() {
                        sel.excluded
                            .push(format!("{}: no models installed", status.provider.id()));
                    }
                    for m in models {
                        if let Err(why) = fits(m, req) {
                            sel.excluded.push(why);
                            continue;
                        }
                        let reason = match locality {
                            Locality::Local => {
                                let rank = family_rank(&m.name);
                                if rank < PREFERRED_OLLAMA_FAMILIES.len() {
                                    format!(
                                        "installed Ollama model of preferred family `{}` (#{} of {})",
                                        PREFERRED_OLLAMA_FAMILIES[rank],
                                        rank + 1,
                                        PREFERRED_OLLAMA_FAMILIES.join(", ")
                                    )
                                } else {
                                    "installed Ollama model (not a preferred family)".to_string()
                                }
                            }
                            Locality::Cloud => {
                                "configured cloud model (after local models)".to_string()
                            }
                            Locality::Embedded => {
                                "embedded model (runs when no local or cloud model can)".to_string()
                            }
                        };
                        sel.candidates.push(Candidate {
                            provider: Arc::clone(&status.provider),
                            model: m.name.clone(),
                            reference: m.reference(),
                            reason,
                        });
                    }
                }
            }
        }
    };
    push_models(Locality::Local, &mut sel);
    if !req.local_only {
        push_models(Locality::Cloud, &mut sel);
    }
    push_models(Locality::Embedded, &mut sel);
    sel
}
