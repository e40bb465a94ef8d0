//! The scheduler: runs a [`Plan`] as a DAG on tokio, with the resilience ladder.
//!
//! - Steps whose dependencies have all succeeded become ready (an alternate branch
//!   becomes ready when the step it backs up failed). `template` steps and conditions are
//!   evaluated inline on the scheduler task; `llm` and `approval` steps run as tasks, at
//!   most `max_parallel` at once, and each model has its own semaphore
//!   ([`Provider::max_concurrency`]: 1 for a local model, 4 for cloud); a provider that
//!   keeps only so many models loaded ([`Provider::max_loaded_models`]) has at most that
//!   many models in flight ([`slots`]).
//! - A step whose dependency failed or was skipped is skipped (Airflow's default
//!   `all_success` trigger rule); its `when` condition is checked before it runs.
//! - Completed steps are written to the [`RunStore`] in batches (one transaction for all
//!   the steps that finished together) before their events are emitted and before their
//!   dependants start. A run resumed after a crash starts from those records: completed
//!   steps are never re-run, steps that were in flight run again.
//! - Pausing ([`RunControl`]) lets steps in flight finish and starts no new one.
//! - `llm` steps climb the fallback ladder ([`crate::workflow::FallbackLadder`]): guardrails
//!   on the input first; then the output cache; then the selector's chain, each model
//!   behind its circuit breaker and the budgets, each failure handled as the error
//!   taxonomy says ([`crate::provider::TAXONOMY`]); then simplified parameters; then a
//!   substitute agent; then the step's `on_failure`; then a human. Timeouts (first token,
//!   idle gap, total) apply to every attempt; cancellation drops the provider's stream,
//!   which aborts the HTTP request.
//!
//! Layout: [`api`] (settings, options, report, errors), [`scheduler`] (the DAG loop),
//! [`templates`] (rendering), [`budget`] (spend and reservations), [`questions`]
//! (humans), [`guard`] (guardrails), the cache and records ([`records`]), the ladder
//! ([`ladder`]), the candidate chain ([`chain`]) and one attempt under its timeouts
//! ([`attempt`]).

mod agent;
mod agent_protocol;
mod api;
mod attempt;
mod body;
mod budget;
mod chain;
mod discover;
mod emit;
mod event;
mod guard;
mod http_pages;
mod join;
mod ladder;
mod loops;
mod map;
mod mcp;
mod memory;
mod questions;
mod records;
mod route;
mod scheduler;
mod shell;
mod slots;
mod subflow;
mod switch;
mod templates;
mod tool;
mod vote;
mod wait;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::breaker::{BreakerSnapshot, BreakerState, Breakers};
use crate::human::HumanHandler;
use crate::select::{Candidate, Catalog, ModelStats, SelectionInput, SelectorContext, select};
use crate::store::{RunStore, StepRecord};
use crate::workflow::Budget;

pub use api::{ChildSinks, EngineConfig, EngineError, RunControl, RunOptions, RunReport};
pub use attempt::retry_delays;
use budget::Spend;
pub use discover::{DiscoverError, McpFunction};
use emit::Emitter;
pub use event::{CallbackUrls, RECHECK as EVENT_RECHECK};

/// The workflow engine: providers, a store, limits, and the state kept across runs
/// (circuit breakers, model statistics).
pub struct Engine {
    providers: Vec<Arc<dyn crate::provider::Provider>>,
    store: Option<Arc<dyn RunStore>>,
    config: EngineConfig,
    slots: slots::Slots,
    state_loaded: tokio::sync::OnceCell<()>,
    breakers: Mutex<Breakers>,
    stats: Mutex<HashMap<String, ModelStats>>,
    /// Agent statistics by agent name ([`crate::route`]).
    agent_stats: Mutex<HashMap<String, ModelStats>>,
    /// `event` steps of this process waiting, woken by [`Engine::event_posted`].
    waiters: event::Waiters,
    /// How runs' callback URLs are made ([`Engine::set_callback_urls`]).
    callback_urls: std::sync::OnceLock<Arc<dyn CallbackUrls>>,
    /// Where tools' secrets come from ([`Engine::set_secrets`]; default: the
    /// environment).
    secrets: std::sync::OnceLock<Arc<dyn crate::secrets::SecretResolver>>,
}

#[derive(Clone)]
struct StepOutput {
    text: String,
    json: Option<serde_json::Value>,
}

/// A finished step: its index, record and output.
type Finished = (usize, StepRecord, Option<StepOutput>);

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// What every task of a run shares.
struct RunShared {
    run_id: String,
    emitter: Arc<Emitter>,
    /// The run's own token (a step's failure rung may cancel the whole run).
    cancel: CancellationToken,
    human: Option<Arc<dyn HumanHandler>>,
    spend: Mutex<Spend>,
    budget: Option<Budget>,
    guard: Option<Arc<nexus_guard::Policy>>,
    /// Rules with `scope: cloud`, applied to the messages of each cloud attempt.
    guard_cloud: Option<Arc<nexus_guard::Policy>>,
    use_cache: bool,
    catalog: Arc<Catalog>,
    /// The run's pause switch: the ladder's last rung pauses the run while it asks.
    control: RunControl,
    /// The records of the steps of `map` and `loop` bodies, added as each body ends; the
    /// run's report lists them after the top-level steps.
    body_records: Mutex<Vec<StepRecord>>,
    /// Permissions of `shell` tools decided in this run (workflow hash and tool → given),
    /// held while one is asked so that parallel calls ask once.
    permissions: tokio::sync::Mutex<HashMap<(String, String), bool>>,
    /// The run's connections to MCP servers, closed when the run ends.
    mcp: mcp::McpSessions,
    /// Where tools' secrets come from.
    secrets: Arc<dyn crate::secrets::SecretResolver>,
}

impl Engine {
    /// An engine over these providers (in registration order), with an optional store.
    pub fn new(
        providers: Vec<Arc<dyn crate::provider::Provider>>,
        store: Option<Arc<dyn RunStore>>,
        config: EngineConfig,
    ) -> Self {
        let breakers = Breakers::new(config.breaker.clone());
        Engine {
            providers,
            store,
            config,
            slots: slots::Slots::default(),
            state_loaded: tokio::sync::OnceCell::new(),
            breakers: Mutex::new(breakers),
            stats: Mutex::new(HashMap::new()),
            agent_stats: Mutex::new(HashMap::new()),
            waiters: event::Waiters::default(),
            callback_urls: std::sync::OnceLock::new(),
            secrets: std::sync::OnceLock::new(),
        }
    }

    /// Sets where tools' secrets come from (once; later calls are ignored). Without it,
    /// secrets come from the environment ([`crate::secrets::EnvSecrets`]).
    pub fn set_secrets(&self, secrets: Arc<dyn crate::secrets::SecretResolver>) {
        let _ = self.secrets.set(secrets);
    }

    /// Where tools' secrets come from.
    pub(crate) fn secrets(&self) -> Arc<dyn crate::secrets::SecretResolver> {
        match self.secrets.get() {
            Some(s) => Arc::clone(s),
            None => Arc::new(crate::secrets::EnvSecrets),
        }
    }

    /// The configured providers.
    pub fn providers(&self) -> &[Arc<dyn crate::provider::Provider>] {
        &self.providers
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Lists what every provider offers now.
    pub async fn discover(&self) -> Catalog {
        Catalog::discover(&self.providers, self.config.discovery_timeout).await
    }

    /// Loads the breakers, model and agent statistics from the store, once.
    ///
    /// # Errors
    /// [`EngineError::Store`] when the store cannot be read.
    pub async fn load_state(&self) -> Result<(), EngineError> {
        self.state_loaded
            .get_or_try_init(|| async {
                if let Some(store) = &self.store {
                    let state = store.load_state().await?;
                    *lock(&self.breakers) =
                        Breakers::restore(self.config.breaker.clone(), state.breakers);
                    lock(&self.stats).extend(state.stats);
                    lock(&self.agent_stats).extend(state.agent_stats);
                }
                Ok::<(), EngineError>(())
            })
            .await?;
        Ok(())
    }

    /// Every known breaker with its state now, sorted by `provider:model`.
    ///
    /// # Errors
    /// [`EngineError::Store`] when the state cannot be loaded.
    pub async fn breaker_states(
        &self,
    ) -> Result<Vec<(String, BreakerState, BreakerSnapshot)>, EngineError> {
        self.load_state().await?;
        let now = Utc::now();
        let b = lock(&self.breakers);
        Ok(b.snapshots()
            .into_iter()
            .map(|(k, snap)| (k.clone(), b.state(&k, now), snap))
            .collect())
    }

    /// Observed statistics of every model, by `provider:model`.
    pub fn model_stats(&self) -> HashMap<String, ModelStats> {
        lock(&self.stats).clone()
    }

    /// Ranks the candidates for a step input with the current breakers and statistics.
    pub fn rank(&self, input: &SelectionInput, catalog: &Catalog) -> crate::select::Selection {
        let open = lock(&self.breakers).open_at(Utc::now());
        // Held while ranking (a few microseconds) instead of copying the statistics.
        let load = self.slots.load();
        let stats = lock(&self.stats);
        select(
            input,
            catalog,
            SelectorContext {
                models: &self.config.models,
                stats: &stats,
                open_breakers: &open,
                load: &load,
                weights: &self.config.weights,
            },
        )
    }

    /// The candidate's model slot: its requests in flight, and its provider's models in
    /// flight ([`slots`]).
    fn slot(&self, candidate: &Candidate) -> Arc<slots::ModelSlot> {
        let limit = self
            .config
            .provider_limits
            .get(candidate.provider.id())
            .copied()
            .unwrap_or_else(|| candidate.provider.max_concurrency());
        self.slots
            .model(&candidate.reference, candidate.provider.as_ref(), limit)
    }
}
