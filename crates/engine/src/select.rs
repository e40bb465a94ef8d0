//! The scoring model selector: which models may serve an `llm` step, in which order, and
//! why.
//!
//! 1. **Hard filters** drop a model, with the reason kept: the step's or workflow's
//!    `local_only` policy drops cloud models (by the model's own locality: a cloud model
//!    behind the local Ollama daemon is cloud); a model whose provider reports
//!    capabilities must report `completion` (embedding models never chat), and
//!    `thinking` for a step with `think: true`; the context window (when known: for
//!    Ollama the trained window, which the provider sends as `num_ctx` up to) must hold
//!    the prompt estimate plus `max_tokens` (and `min_context`); a step with an output
//!    schema needs a model with structured output; the projected cost must fit the
//!    remaining budget; an open circuit breaker drops the model until it half-opens. When
//!    every model that passed the other filters has an open breaker, they are tried anyway
//!    rather than failing without trying (Portkey's documented behaviour).
//! 2. **Score** (weights configurable, [`SelectorWeights`]): quality for the step's task
//!    class (the [`ModelCatalog`]), observed reliability and latency (moving averages kept
//!    in SQLite across runs, [`ModelStats`]; the latency as the expected wait given the
//!    requests already in flight or queued for the model, [`score_loaded`]), estimated
//!    cost, context headroom, and a
//!    locality preference (local 1, embedded 0.5, cloud 0). The weights start from seed
//!    002's weighting (suitability 0.3, reliability 0.2, latency 0.1, context 0.2, cost 0.1,
//!    local 0.1), with part of the context weight moved to locality because users choose
//!    Nexus to keep work on their machine.
//! 3. **Order**: an explicit preference list (`model: [...]`) keeps its written order
//!    (a reference to a provider family, `ollama:llama3.1` with several Ollama hosts
//!    configured, is served by each host, the best-scored first: so hosts are balanced by
//!    health, load and observed latency);
//!    otherwise by score, best first, with the embedded model last (it is the safety net
//!    that lets a machine with neither Ollama nor a cloud key run at all). The rest of the
//!    list is the fallback chain.
//!
//! Every decision is returned as a [`SelectionRecord`] that the run record stores and
//! `nexus runs show` prints ("why this model").

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::provider::{
    Locality, ModelCapability, ModelInfo, Provider, ProviderError, ProviderErrorKind,
};
use crate::workflow::{ModelRequirements, TaskClass};

/// The built-in catalog (YAML), compiled into the binary.
pub const BUILTIN_CATALOG: &str = include_str!("../catalog.yaml");

/// Errors of the selector's configuration.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// A catalog file could not be read.
    #[error("cannot read the model catalog {path}: {message}")]
    CatalogIo {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A catalog file is not valid.
    #[error("{path}: {message}")]
    CatalogFormat {
        /// The file (or `built-in`).
        path: String,
        /// The parser's message, with line and column.
        message: String,
    },
}

/// What a model can do beyond plain chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Output constrained to a JSON Schema (OpenAI `response_format`, Ollama `format`, a
    /// llama.cpp grammar).
    JsonSchema,
    /// Tool (function) calls.
    Tools,
    /// Image input.
    Vision,
}

/// One catalog entry: what is known about a model that providers do not report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogEntry {
    /// The model name, or a prefix of it followed by `-`, `:` or `@`.
    pub name: String,
    /// Only for this provider id (`openai`, `ollama`, `embedded`); any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Context window, tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_window: Option<u32>,
    /// Price of prompt tokens, USD per million.
    #[serde(default)]
    pub input_usd_per_mtok: f64,
    /// Price of generated tokens, USD per million.
    #[serde(default)]
    pub output_usd_per_mtok: f64,
    /// What the model can do.
    #[serde(default)]
    pub capabilities: Vec<Capability>,
    /// Quality per task class, 0–1 (`general` is used for classes not listed).
    #[serde(default)]
    pub quality: BTreeMap<TaskClass, f64>,
}

impl CatalogEntry {
    fn matches(&self, provider: &str, model: &str) -> Option<usize> {
        // An entry for `ollama` describes the model on every Ollama host.
        if self
            .provider
            .as_deref()
            .is_some_and(|p| !crate::provider::serves(provider, p))
        {
            return None;
        }
        let exact = model == self.name;
        let prefixed = model
            .strip_prefix(self.name.as_str())
            .is_some_and(|rest| rest.starts_with(['-', ':', '@']));
        (exact || prefixed).then(|| self.name.len() + usize::from(self.provider.is_some()))
    }

    /// Quality for a task class, falling back to `general`.
    pub fn quality_for(&self, task: TaskClass) -> Option<f64> {
        self.quality
            .get(&task)
            .or_else(|| self.quality.get(&TaskClass::General))
            .copied()
    }

    /// Estimated cost in USD of `prompt` prompt tokens and `completion` generated tokens.
    pub fn cost_usd(&self, prompt: u64, completion: u64) -> f64 {
        (prompt as f64 * self.input_usd_per_mtok + completion as f64 * self.output_usd_per_mtok)
            / 1_000_000.0
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    #[serde(default)]
    providers: Vec<ProviderDecl>,
    #[serde(default)]
    models: Vec<CatalogEntry>,
    #[serde(default)]
    weights: Option<SelectorWeights>,
}

/// A provider id that model references may name, as the catalog's `providers:` section
/// declares it: `{id, locality, model_optional, example}`. Validation checks references
/// against these declarations; the providers' code lives in `nexus-llm`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderDecl {
    /// The id before the `:` of a model reference (`ollama`).
    pub id: String,
    /// Where the provider's models run; a `cloud` provider is refused on `local_only`
    /// steps at validation.
    pub locality: Locality,
    /// Whether a reference may omit the model (`embedded` alone names the bundled model).
    #[serde(default)]
    pub model_optional: bool,
    /// A reference to show in hints (`ollama:llama3.1`).
    pub example: String,
}

/// Known models: the built-in catalog plus the user's entries, and the user's selector
/// weights when their file sets them (`weights: {quality: 0.5, locality: 0.1, ...}`).
#[derive(Debug, Clone, Default)]
pub struct ModelCatalog {
    /// Provider ids that model references may name.
    pub providers: Vec<ProviderDecl>,
    /// Entries; later entries with the same provider and name replace earlier ones.
    pub entries: Vec<CatalogEntry>,
    /// Selector weights from the user's file, if any (missing weights keep their
    /// defaults).
    pub weights: Option<SelectorWeights>,
}

impl ModelCatalog {
    /// The built-in catalog ([`BUILTIN_CATALOG`]).
    ///
    /// # Errors
    /// [`SelectError::CatalogFormat`] if the compiled-in file is broken (a test prevents it).
    pub fn builtin() -> Result<Self, SelectError> {
        Self::parse(BUILTIN_CATALOG, "built-in catalog")
    }

    /// Parses catalog YAML (`models: [...]`).
    ///
    /// # Errors
    /// [`SelectError::CatalogFormat`] naming `path`, line and column.
    pub fn parse(text: &str, path: &str) -> Result<Self, SelectError> {
        let file: CatalogFile =
            serde_saphyr::from_str(text).map_err(|e| SelectError::CatalogFormat {
                path: path.to_string(),
                message: e.to_string().lines().next().unwrap_or_default().to_string(),
            })?;
        Ok(ModelCatalog {
            providers: file.providers,
            entries: file.models,
            weights: file.weights,
        })
    }

    /// Adds the entries of a user file; an entry with the same provider and name replaces
    /// the existing one.
    ///
    /// # Errors
    /// [`SelectError::CatalogIo`] or [`SelectError::CatalogFormat`].
    pub fn extend_from_file(&mut self, path: &Path) -> Result<(), SelectError> {
        let text = std::fs::read_to_string(path).map_err(|e| SelectError::CatalogIo {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let more = Self::parse(&text, &path.display().to_string())?;
        if more.weights.is_some() {
            self.weights = more.weights;
        }
        for decl in more.providers {
            self.providers.retain(|p| p.id != decl.id);
            self.providers.push(decl);
        }
        for entry in more.entries {
            self.entries
                .retain(|e| !(e.name == entry.name && e.provider == entry.provider));
            self.entries.push(entry);
        }
        Ok(())
    }

    /// The most specific entry for a model (longest matching name; a provider-specific
    /// entry beats a generic one).
    pub fn lookup(&self, provider: &str, model: &str) -> Option<&CatalogEntry> {
        self.entries
            .iter()
            .filter_map(|e| e.matches(provider, model).map(|rank| (rank, e)))
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, e)| e)
    }
}

/// Observed behaviour of one model, as exponentially weighted moving averages (α = 0.2,
/// about a 10-sample window, the size RESILIENCE-NOTES suggests for latency).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct ModelStats {
    /// Attempts observed.
    pub calls: u64,
    /// Moving average of success (1) and provider fault (0).
    pub success_rate: f64,
    /// Moving average of time to first token (or of the whole attempt when no token
    /// came), ms.
    pub latency_ms: f64,
    /// When last updated.
    pub updated_at: Option<DateTime<Utc>>,
}

/// Weight of the newest sample in [`ModelStats`].
pub const STATS_ALPHA: f64 = 0.2;

impl ModelStats {
    /// Adds one observation.
    pub fn observe(&mut self, success: bool, latency_ms: Option<u64>, now: DateTime<Utc>) {
        let s = if success { 1.0 } else { 0.0 };
        if self.calls == 0 {
            self.success_rate = s;
            self.latency_ms = latency_ms.unwrap_or(0) as f64;
        } else {
            self.success_rate += STATS_ALPHA * (s - self.success_rate);
            if let Some(l) = latency_ms {
                self.latency_ms += STATS_ALPHA * (l as f64 - self.latency_ms);
            }
        }
        self.calls += 1;
        self.updated_at = Some(now);
    }
}

/// Weights of the score's parts (each part is 0–1). Defaults: quality 0.3, reliability
/// 0.2, latency 0.1, context 0.1, cost 0.1, locality 0.2.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SelectorWeights {
    /// Quality for the task class.
    pub quality: f64,
    /// Observed success rate.
    pub reliability: f64,
    /// Observed latency (lower is better).
    pub latency: f64,
    /// Context headroom.
    pub context: f64,
    /// Estimated cost (lower is better).
    pub cost: f64,
    /// Locality (local 1, embedded 0.5, cloud 0).
    pub locality: f64,
}

impl Default for SelectorWeights {
    fn default() -> Self {
        SelectorWeights {
            quality: 0.3,
            reliability: 0.2,
            latency: 0.1,
            context: 0.1,
            cost: 0.1,
            locality: 0.2,
        }
    }
}

/// The score of one model and its parts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct ScoreParts {
    /// Quality for the task class, 0–1.
    pub quality: f64,
    /// Observed success rate, 0–1 (0.9 before any observation).
    pub reliability: f64,
    /// `1 / (1 + latency_ms / 2000)`, 0.5 before any observation.
    pub latency: f64,
    /// `min(1, context_window / (2 × needed))`, 0.5 when the window is unknown.
    pub context: f64,
    /// `1 / (1 + cost_usd / 0.01)`: 1 when free.
    pub cost: f64,
    /// 1 local, 0.5 embedded, 0 cloud.
    pub locality: f64,
    /// The weighted sum.
    pub total: f64,
}

impl ScoreParts {
    /// The score in words: `score 0.812 (quality 0.62 for general, reliability 0.90, ...)`.
    pub fn describe(&self, task: TaskClass) -> String {
        format!(
            "score {:.3} (quality {:.2} for {}, reliability {:.2}, latency {:.2}, context {:.2}, cost {:.2}, locality {:.1})",
            self.total,
            self.quality,
            task.as_str(),
            self.reliability,
            self.latency,
            self.context,
            self.cost,
            self.locality
        )
    }
}

/// What the selector knows about a step.
#[derive(Debug, Clone, Default)]
pub struct SelectionInput {
    /// Model requirements (preferences, minimum context, `local_only`).
    pub requirements: ModelRequirements,
    /// The kind of work.
    pub task: TaskClass,
    /// Estimated prompt tokens ([`estimate_tokens`]).
    pub prompt_tokens: u64,
    /// Tokens the step may generate.
    pub max_tokens: u32,
    /// Whether the step needs structured output.
    pub needs_json: bool,
    /// The step's `think:` (a `true` needs a model with the `thinking` capability, when
    /// the provider reports capabilities).
    pub think: Option<bool>,
    /// Money left in the step's and run's budgets, USD (the smaller), if limited.
    pub budget_usd: Option<f64>,
    /// Tokens left in the step's and run's budgets (the smaller), if limited.
    pub budget_tokens: Option<u64>,
}

/// Estimates tokens of a text: one token per 4 characters, rounded up (OpenAI's rule of
/// thumb for English; a filter, not a bill — bills use the provider's counts).
pub fn estimate_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

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
    /// Where the model runs ([`ModelInfo::locality`]).
    pub locality: Locality,
    /// Who serves it.
    pub provider: Arc<dyn Provider>,
    /// The model's name at the provider.
    pub model: String,
    /// `provider:model`.
    pub reference: String,
    /// Why it is a candidate at this rank.
    pub reason: String,
    /// Its score.
    pub score: ScoreParts,
    /// Context window, tokens, when known.
    pub context_window: Option<u32>,
    /// Price of prompt tokens, USD per million (0 when unknown or free).
    pub input_usd_per_mtok: f64,
    /// Price of generated tokens, USD per million.
    pub output_usd_per_mtok: f64,
    /// Whether the provider takes tools natively for this model
    /// ([`crate::provider::Provider::native_tool_calls`]).
    pub native_tools: bool,
}

impl Candidate {
    /// Estimated cost in USD of a call with these token counts (0 without prices).
    pub fn cost_usd(&self, prompt: u64, completion: u64) -> f64 {
        (prompt as f64 * self.input_usd_per_mtok + completion as f64 * self.output_usd_per_mtok)
            / 1_000_000.0
    }

    /// Where the model runs (the model's own: a cloud model behind a local daemon is
    /// cloud).
    pub fn locality(&self) -> Locality {
        self.locality
    }
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate")
            .field("reference", &self.reference)
            .field("reason", &self.reason)
            .field("score", &self.score.total)
            .finish()
    }
}

/// A ranked candidate in the stored decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedRecord {
    /// `provider:model`.
    pub model: String,
    /// Score and parts.
    pub score: ScoreParts,
    /// Estimated cost of the call, USD.
    pub est_cost_usd: f64,
    /// Why it is at this rank.
    pub reason: String,
}

/// A model left out, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExcludedRecord {
    /// `provider:model`, or a provider id.
    pub model: String,
    /// Which filter, in words.
    pub reason: String,
}

/// The selector's decision for one step, as stored in the run record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SelectionRecord {
    /// Task class used for quality.
    pub task: String,
    /// Estimated prompt tokens.
    pub prompt_tokens: u64,
    /// Candidates, best first.
    pub ranked: Vec<RankedRecord>,
    /// Models left out.
    pub excluded: Vec<ExcludedRecord>,
    /// True when every remaining model had an open breaker and they are tried anyway.
    pub all_breakers_open: bool,
    /// For a `capability:` step: which agent it runs as, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<crate::route::AgentChoice>,
}

/// The ranked candidates of a step and the models left out, with reasons.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Candidates, best first; the rest of the list is the fallback chain.
    pub candidates: Vec<Candidate>,
    /// The decision, for the run record (models left out are in `record.excluded`).
    pub record: SelectionRecord,
}

impl Selection {
    /// The models left out, in words (`openai:gpt-4o: cloud model, ...`).
    pub fn excluded(&self) -> Vec<String> {
        self.record
            .excluded
            .iter()
            .map(|x| format!("{}: {}", x.model, x.reason))
            .collect()
    }
}

/// What the selector reads besides the step: the model catalog, observed stats, breaker
/// states and weights.
#[derive(Clone, Copy)]
pub struct SelectorContext<'a> {
    /// Known models.
    pub models: &'a ModelCatalog,
    /// Observed stats by `provider:model`.
    pub stats: &'a HashMap<String, ModelStats>,
    /// `provider:model` → open until, for breakers that are open now.
    pub open_breakers: &'a HashMap<String, DateTime<Utc>>,
    /// `provider:model` → its load now: requests in flight or waiting for it, per
    /// request it may serve at once (2.0: two requests for each slot). Absent means
    /// idle. The latency score is of the expected wait ([`score_loaded`]).
    pub load: &'a HashMap<String, f64>,
    /// Score weights.
    pub weights: &'a SelectorWeights,
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

    /// The order the selector tries models in for a general step without preferences,
    /// with the built-in catalog, no observed statistics and no open breakers.
    pub fn default_order(&self) -> Selection {
        let models = ModelCatalog::builtin().unwrap_or_default();
        select(
            &SelectionInput {
                max_tokens: crate::plan::DEFAULT_MAX_TOKENS,
                ..SelectionInput::default()
            },
            self,
            SelectorContext {
                models: &models,
                stats: &HashMap::new(),
                open_breakers: &HashMap::new(),
                load: &HashMap::new(),
                weights: &SelectorWeights::default(),
            },
        )
    }
}

fn locality_value(l: Locality) -> f64 {
    match l {
        Locality::Local => 1.0,
        Locality::Embedded => 0.5,
        Locality::Cloud => 0.0,
    }
}

/// Scores one idle model for a step ([`score_loaded`] with no load).
pub fn score(
    locality: Locality,
    context_window: Option<u32>,
    entry: Option<&CatalogEntry>,
    stats: Option<&ModelStats>,
    input: &SelectionInput,
    weights: &SelectorWeights,
) -> ScoreParts {
    score_loaded(locality, context_window, entry, stats, 0.0, input, weights)
}

/// The latency, ms, assumed for a model never observed (its latency score is then 0.5).
pub const UNOBSERVED_LATENCY_MS: f64 = 2000.0;

/// Scores one model for a step that has `load` requests in flight or waiting per slot
/// ([`SelectorContext::load`]). The latency part is of the expected wait: the observed
/// latency (or [`UNOBSERVED_LATENCY_MS`]) times `1 + load`, as a request queued behind
/// `n` others on a one-at-a-time host waits about `n` replies first (the
/// least-outstanding-requests rule of load balancers, weighted by latency). So of two
/// hosts of a model the faster one takes more work, and a busy one passes work on.
#[allow(clippy::too_many_arguments)]
pub fn score_loaded(
    locality: Locality,
    context_window: Option<u32>,
    entry: Option<&CatalogEntry>,
    stats: Option<&ModelStats>,
    load: f64,
    input: &SelectionInput,
    weights: &SelectorWeights,
) -> ScoreParts {
    let quality = entry
        .and_then(|e| e.quality_for(input.task))
        .unwrap_or(match locality {
            Locality::Local => 0.5,
            Locality::Cloud => 0.7,
            Locality::Embedded => 0.1,
        });
    let observed = stats.filter(|s| s.calls > 0);
    let reliability = observed.map_or(0.9, |s| s.success_rate);
    let latency = 1.0 / (1.0 + expected_wait_ms(stats, load) / UNOBSERVED_LATENCY_MS);
    let needed = input.prompt_tokens + u64::from(input.max_tokens);
    let context = context_window.map_or(0.5, |c| {
        (f64::from(c) / (2.0 * needed.max(1) as f64)).min(1.0)
    });
    let cost_usd = entry.map_or(0.0, |e| {
        e.cost_usd(input.prompt_tokens, input.max_tokens.into())
    });
    let cost = 1.0 / (1.0 + cost_usd / 0.01);
    let loc = locality_value(locality);
    let total = weights.quality * quality
        + weights.reliability * reliability
        + weights.latency * latency
        + weights.context * context
        + weights.cost * cost
        + weights.locality * loc;
    ScoreParts {
        quality,
        reliability,
        latency,
        context,
        cost,
        locality: loc,
        total,
    }
}

struct Option_<'a> {
    provider: &'a Arc<dyn Provider>,
    info: std::borrow::Cow<'a, ModelInfo>,
    explicit_rank: Option<usize>,
}

/// A candidate that passed the filters, with its preference rank, observed latency and
/// load.
struct Passed {
    cand: Candidate,
    rank: Option<usize>,
    latency_ms: Option<f64>,
    load: f64,
}

/// The observed latency, ms, of a model with `stats`: the moving average of its time to
/// the first token (or of its failed calls); `None` when none was measured.
fn observed_latency_ms(stats: Option<&ModelStats>) -> Option<f64> {
    stats
        .filter(|s| s.calls > 0 && s.latency_ms > 0.0)
        .map(|s| s.latency_ms)
}

/// The expected wait, ms, for a reply from a model with `stats` and `load`
/// ([`score_loaded`]): its observed latency ([`UNOBSERVED_LATENCY_MS`] when none was
/// measured) times `1 + load`.
pub fn expected_wait_ms(stats: Option<&ModelStats>, load: f64) -> f64 {
    observed_latency_ms(stats).unwrap_or(UNOBSERVED_LATENCY_MS) * (1.0 + load.max(0.0))
}

/// The ladder's order. Candidates are grouped by model: the same model name on
/// providers of one family (`llama3.1:8b` on `ollama@gpu1` and `ollama@gpu2`) is one
/// group. Groups go by the step's preference rank, or else with the embedded model last
/// and by their best score; inside a group, hosts go by expected wait, shortest first
/// (observed latency × (1 + load)): the circuit breaker decides whether a host is
/// healthy, the wait which healthy host serves (Envoy's outlier detection ejects and
/// returns hosts the same way, and its least-request balancer picks by requests
/// outstanding). A host never measured is assumed as fast as the group's fastest
/// measured one (optimism under uncertainty, as in UCB bandits), so it gets tried
/// instead of never being measured. So a host that was down and whose breaker
/// half-opens is tried again at once when it is the fastest, instead of staying behind
/// on the failures it had while down.
fn order(passed: Vec<Passed>) -> Vec<Candidate> {
    let key = |c: &Candidate| {
        (
            crate::provider::family(c.provider.id()).to_string(),
            c.model.clone(),
        )
    };
    // Each group's index of first appearance (ties keep the registration order) and
    // best score.
    let mut groups: HashMap<(String, String), (usize, f64)> = HashMap::new();
    for p in &passed {
        let n = groups.len();
        let g = groups.entry(key(&p.cand)).or_insert((n, f64::MIN));
        g.1 = g.1.max(p.cand.score.total);
    }
    let mut members: HashMap<(String, String), usize> = HashMap::new();
    let mut fastest: HashMap<(String, String), f64> = HashMap::new();
    for p in &passed {
        *members.entry(key(&p.cand)).or_default() += 1;
        if let Some(l) = p.latency_ms {
            let f = fastest.entry(key(&p.cand)).or_insert(l);
            *f = f.min(l);
        }
    }
    let wait = |p: &Passed| {
        let latency = p
            .latency_ms
            .or_else(|| fastest.get(&key(&p.cand)).copied())
            .unwrap_or(UNOBSERVED_LATENCY_MS);
        latency * (1.0 + p.load.max(0.0))
    };
    let mut passed: Vec<(f64, Passed)> = passed.into_iter().map(|p| (wait(&p), p)).collect();
    passed.sort_by(|(wa, a), (wb, b)| {
        let (ga, gb) = (key(&a.cand), key(&b.cand));
        let (ia, sa) = groups.get(&ga).copied().unwrap_or((0, 0.0));
        let (ib, sb) = groups.get(&gb).copied().unwrap_or((0, 0.0));
        let first = match (a.rank, b.rank) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => {
                let a_last = a.cand.locality() == Locality::Embedded;
                let b_last = b.cand.locality() == Locality::Embedded;
                a_last.cmp(&b_last).then(sb.total_cmp(&sa))
            }
        };
        first
            .then(ia.cmp(&ib))
            .then(wa.total_cmp(wb))
            .then(b.cand.score.total.total_cmp(&a.cand.score.total))
    });
    passed
        .into_iter()
        .map(|(wait_ms, mut p)| {
            if members.get(&key(&p.cand)).is_some_and(|&n| n > 1) {
                p.cand.reason.push_str(&format!(
                    "; expected wait ~{wait_ms:.0} ms on {}",
                    p.cand.provider.display_name()
                ));
            }
            p.cand
        })
        .collect()
}

/// The model `model` of `status`'s provider as discovery listed it, else as written.
/// The provider's full name for the model (Ollama: `llama3.1` is `llama3.1:latest`); a
/// provider that keeps names as written also matches `name:<tag>`; for the embedded
/// provider (an empty `model`) its one model. A model not installed keeps the name as
/// written (the daemon resolves it the same way).
fn preferred_model<'a>(status: &'a ProviderStatus, model: &str) -> std::borrow::Cow<'a, ModelInfo> {
    let resolved = status.provider.resolve_name(model);
    let found = match &status.models {
        Ok(models) => models.iter().find(|m| {
            model.is_empty()
                || m.name == resolved
                || (resolved == model
                    && m.name
                        .strip_prefix(model)
                        .is_some_and(|r| r.starts_with(':')))
        }),
        Err(_) => None,
    };
    found.map_or_else(
        || {
            std::borrow::Cow::Owned(ModelInfo::named(
                status.provider.id(),
                model,
                status.provider.locality(),
            ))
        },
        std::borrow::Cow::Borrowed,
    )
}

/// Ranks the candidates for a step (see the module documentation).
pub fn select(input: &SelectionInput, catalog: &Catalog, cx: SelectorContext<'_>) -> Selection {
    let req = &input.requirements;
    let mut sel = Selection::default();
    let mut options: Vec<Option_> = Vec::new();
    let exclude = |sel: &mut Selection, model: String, reason: String| {
        sel.record.excluded.push(ExcludedRecord { model, reason });
    };

    if !req.prefer.is_empty() {
        for (rank, reference) in req.prefer.iter().enumerate() {
            let (provider_id, model) = match reference.split_once(':') {
                Some((p, m)) => (p, m),
                None => (reference.as_str(), ""),
            };
            // Every configured provider that serves the reference: the named one, or
            // each host of a family (`ollama:` on `ollama@gpu1` and `ollama@gpu2`),
            // ranked among themselves by score.
            let serving: Vec<&ProviderStatus> = catalog
                .providers
                .iter()
                .filter(|s| crate::provider::serves(s.provider.id(), provider_id))
                .collect();
            if serving.is_empty() {
                exclude(
                    &mut sel,
                    reference.clone(),
                    format!("provider `{provider_id}` is not configured"),
                );
                continue;
            }
            for status in serving {
                options.push(Option_ {
                    provider: &status.provider,
                    info: preferred_model(status, model),
                    explicit_rank: Some(rank),
                });
            }
        }
    } else {
        for status in &catalog.providers {
            match &status.models {
                Err(e) => exclude(
                    &mut sel,
                    status.provider.id().to_string(),
                    format!("unreachable at discovery ({e})"),
                ),
                Ok(models) => {
                    // The provider's capabilities decide; a provider that reports none is
                    // judged by the name (`text-embedding-3-small`).
                    let chat: Vec<&ModelInfo> = models
                        .iter()
                        .filter(|m| {
                            m.can_chat()
                                && (!m.capabilities.is_empty() || !m.name.contains("embed"))
                        })
                        .collect();
                    if chat.is_empty() {
                        exclude(
                            &mut sel,
                            status.provider.id().to_string(),
                            "no chat models installed".into(),
                        );
                    }
                    for m in chat {
                        options.push(Option_ {
                            provider: &status.provider,
                            info: std::borrow::Cow::Borrowed(m),
                            explicit_rank: None,
                        });
                    }
                }
            }
        }
    }

    let needed = input.prompt_tokens + u64::from(input.max_tokens);
    let mut passed: Vec<Passed> = Vec::new();
    let mut breaker_blocked: Vec<Passed> = Vec::new();
    for opt in options {
        // The model's own locality: a cloud model behind a local daemon is cloud.
        let locality = opt.info.locality;
        let reference = format!("{}:{}", opt.provider.id(), opt.info.name);
        let entry = cx.models.lookup(opt.provider.id(), &opt.info.name);
        let window = opt
            .info
            .context_length
            .or(entry.and_then(|e| e.context_window));
        if req.local_only && locality == Locality::Cloud {
            let why = if opt.provider.locality() == Locality::Cloud {
                "cloud model, the workflow or step is local_only".to_string()
            } else {
                format!(
                    "cloud model served through the local {} daemon (the prompt would leave this machine), the workflow or step is local_only",
                    opt.provider.display_name()
                )
            };
            exclude(&mut sel, reference, why);
            continue;
        }
        if !opt.info.can_chat() {
            exclude(
                &mut sel,
                reference,
                "no chat: the provider reports no `completion` capability (an embedding model)"
                    .into(),
            );
            continue;
        }
        if input.think == Some(true)
            && !opt.info.capabilities.is_empty()
            && !opt.info.has(ModelCapability::Thinking)
        {
            exclude(
                &mut sel,
                reference,
                "no `thinking` capability, which the step's `think: true` needs".into(),
            );
            continue;
        }
        if let (Some(min), Some(ctx)) = (req.min_context, window)
            && ctx < min
        {
            exclude(
                &mut sel,
                reference,
                format!("context window {ctx} tokens < required {min}"),
            );
            continue;
        }
        if let Some(ctx) = window
            && u64::from(ctx) < needed
        {
            exclude(
                &mut sel,
                reference,
                format!(
                    "context window {ctx} tokens cannot hold the prompt (~{} tokens) and max_tokens {}",
                    input.prompt_tokens, input.max_tokens
                ),
            );
            continue;
        }
        if input.needs_json
            && locality == Locality::Cloud
            && entry.is_some_and(|e| !e.capabilities.contains(&Capability::JsonSchema))
        {
            exclude(
                &mut sel,
                reference,
                "no structured (JSON Schema) output, which the step's output_schema needs".into(),
            );
            continue;
        }
        let est_cost = entry.map_or(0.0, |e| {
            e.cost_usd(input.prompt_tokens, input.max_tokens.into())
        });
        if let Some(left) = input.budget_usd
            && est_cost > left
        {
            exclude(
                &mut sel,
                reference,
                format!("projected cost ${est_cost:.6} exceeds the ${left:.6} left in the budget"),
            );
            continue;
        }
        let load = cx.load.get(&reference).copied().unwrap_or(0.0);
        let stats = cx.stats.get(&reference);
        let parts = score_loaded(locality, window, entry, stats, load, input, cx.weights);
        let latency_ms = observed_latency_ms(stats);
        let reason = match (opt.explicit_rank, locality) {
            (Some(rank), _) => format!("explicit preference #{} of the step", rank + 1),
            (None, Locality::Local) => match &opt.info.recommended_family {
                Some(family) => format!(
                    "installed {} model, family `{family}`",
                    opt.provider.display_name()
                ),
                None => format!("installed {} model", opt.provider.display_name()),
            },
            (None, Locality::Cloud) if opt.provider.locality() != Locality::Cloud => format!(
                "cloud model served through the local {} daemon",
                opt.provider.display_name()
            ),
            (None, Locality::Cloud) => "configured cloud model".to_string(),
            (None, Locality::Embedded) => {
                "embedded model (last resort: runs when no local or cloud model can)".to_string()
            }
        };
        let cand = Candidate {
            locality,
            provider: Arc::clone(opt.provider),
            model: opt.info.name.clone(),
            reference: reference.clone(),
            reason,
            score: parts,
            context_window: window,
            input_usd_per_mtok: entry.map_or(0.0, |e| e.input_usd_per_mtok),
            output_usd_per_mtok: entry.map_or(0.0, |e| e.output_usd_per_mtok),
            native_tools: opt.provider.native_tool_calls(&opt.info),
        };
        if let Some(until) = cx.open_breakers.get(&reference) {
            exclude(
                &mut sel,
                reference,
                format!("circuit breaker open until {}", until.to_rfc3339()),
            );
            breaker_blocked.push(Passed {
                cand,
                rank: opt.explicit_rank,
                latency_ms,
                load,
            });
            continue;
        }
        passed.push(Passed {
            cand,
            rank: opt.explicit_rank,
            latency_ms,
            load,
        });
    }
    if passed.is_empty() && !breaker_blocked.is_empty() {
        sel.record.all_breakers_open = true;
        for Passed { cand: c, .. } in &mut breaker_blocked {
            c.reason.push_str(
                "; every other model was filtered out, so it is tried although its breaker is open",
            );
        }
        passed = breaker_blocked;
    }
    let passed = order(passed);
    sel.record.task = input.task.as_str().to_string();
    sel.record.prompt_tokens = input.prompt_tokens;
    for c in passed {
        sel.record.ranked.push(RankedRecord {
            model: c.reference.clone(),
            score: c.score,
            est_cost_usd: c.cost_usd(input.prompt_tokens, input.max_tokens.into()),
            reason: c.reason.clone(),
        });
        sel.candidates.push(c);
    }
    sel
}
