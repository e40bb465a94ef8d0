//! How a Nexus process is put together, shared by the `nexus` CLI and the desktop app so
//! both pick the same providers, read the same catalog and store runs the same way.
//!
//! Providers, in the selector's registration order: those of `providers.yaml`
//! ([`crate::providers`]) when there is one; Ollama at `OLLAMA_HOST` (default
//! `http://127.0.0.1:11434`) unless the file configures Ollama hosts; the
//! OpenAI-compatible provider when a base URL or key is configured (environment first,
//! then the key from the OS keychain for the desktop app) unless the file configures
//! OpenAI-compatible endpoints; and the embedded model.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use nexus_engine::plan::Plan;
use nexus_engine::run::RunControl;
use nexus_engine::{EngineConfig, RunOptions};
use nexus_store::SqliteStore;
use tokio_util::sync::CancellationToken;

use crate::{Error, Result};

/// Provider settings that do not come from the environment.
#[derive(Clone, Default)]
pub struct ProviderSettings {
    /// The providers file; [`crate::providers::find`] when absent.
    pub providers_file: Option<PathBuf>,
    /// Where the providers file's keys come from (the OS keychain, then the
    /// environment); the environment alone when absent.
    pub secrets: Option<Arc<dyn nexus_engine::secrets::SecretResolver>>,
    /// The Ollama daemon's address; `OLLAMA_HOST` or the default when absent.
    pub ollama_url: Option<String>,
    /// API key for the OpenAI-compatible provider (from the keychain), used when the
    /// environment configures none.
    pub openai_key: Option<String>,
    /// The embedded model's GGUF file; `nexus_embedded::default_model_path()` when absent.
    pub embedded_model: Option<PathBuf>,
}

/// The Ollama provider at `url`, else at `OLLAMA_HOST`, else at the default address.
///
/// # Errors
/// [`Error::Config`] when the address is not a URL.
pub fn ollama(url: Option<&str>) -> Result<nexus_llm::OllamaProvider> {
    match url {
        Some(url) => nexus_llm::OllamaProvider::new(url),
        None => nexus_llm::OllamaProvider::from_env(),
    }
    .map_err(|e| Error::Config { message: e.message })
}

impl std::fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderSettings")
            .field("providers_file", &self.providers_file)
            .field("ollama_url", &self.ollama_url)
            .field("openai_key", &self.openai_key.as_ref().map(|_| "<set>"))
            .field("embedded_model", &self.embedded_model)
            .finish_non_exhaustive()
    }
}

/// The providers of this machine (see the module header for the order) and the
/// per-provider concurrency limits the providers file sets. Reads the providers file
/// and its keys on a blocking thread (keychain calls can block).
///
/// # Errors
/// [`Error::Config`] when `OLLAMA_HOST` or the OpenAI base URL is not a URL, or the
/// providers file is not valid or names a key that is not set.
pub async fn providers(settings: &ProviderSettings) -> Result<crate::providers::Configured> {
    let file = settings
        .providers_file
        .clone()
        .or_else(crate::providers::find);
    let secrets = settings
        .secrets
        .clone()
        .unwrap_or_else(|| Arc::new(nexus_engine::secrets::EnvSecrets));
    let mut configured = match file {
        None => crate::providers::Configured::default(),
        Some(path) => tokio::task::spawn_blocking(move || {
            let file = crate::providers::load(&path)?;
            crate::providers::build(&file, &path.display().to_string(), secrets.as_ref())
        })
        .await
        .map_err(|e| Error::Config {
            message: format!("reading the providers file stopped: {e}"),
        })??,
    };
    let list = &mut configured.providers;
    if !configured.families.contains("ollama") {
        list.push(Arc::new(ollama(settings.ollama_url.as_deref())?));
    }
    if !configured.families.contains("openai")
        && let Some(openai) = openai(settings.openai_key.as_deref())?
    {
        list.push(Arc::new(openai));
    }
    list.push(Arc::new(match &settings.embedded_model {
        Some(path) => nexus_embedded::EmbeddedProvider::new(path.clone()),
        None => nexus_embedded::EmbeddedProvider::from_default_location(),
    }));
    Ok(configured)
}

/// The OpenAI-compatible provider: base URL from `NEXUS_OPENAI_BASE_URL`, else
/// `OPENAI_BASE_URL`, else the public API; key from `NEXUS_OPENAI_API_KEY`, else
/// `OPENAI_API_KEY`, else `keychain_key`; models from `NEXUS_OPENAI_MODELS`
/// (comma-separated). `None` when neither a base URL nor a key is configured. The base
/// URL and the key are independent: a base URL from the environment with the key from
/// the keychain is a configured provider with that key.
///
/// # Errors
/// [`Error::Config`] when the base URL is not a URL.
pub fn openai(keychain_key: Option<&str>) -> Result<Option<nexus_llm::OpenAiProvider>> {
    nexus_llm::OpenAiProvider::from_env_with_key(keychain_key)
        .map_err(|e| Error::Config { message: e.message })
}

/// The engine settings: `max_parallel` steps at once, the built-in model catalog extended
/// by the user's (`NEXUS_CATALOG`, else `<config dir>/nexus/models.yaml` when present),
/// whose `weights:` replace the selector's default weights.
///
/// # Errors
/// [`Error::Config`] when the user's catalog does not parse (the message names the file
/// and place).
pub fn engine_config(max_parallel: usize) -> Result<EngineConfig> {
    let mut config = EngineConfig {
        max_parallel,
        ..EngineConfig::default()
    };
    let user = std::env::var_os("NEXUS_CATALOG")
        .map(PathBuf::from)
        .or_else(|| dirs::config_dir().map(|d| d.join("nexus").join("models.yaml")))
        .filter(|p| p.exists());
    if let Some(path) = user {
        config
            .models
            .extend_from_file(&path)
            .map_err(|e| Error::Config {
                message: e.to_string(),
            })?;
        if let Some(w) = config.models.weights {
            config.weights = w;
        }
    }
    Ok(config)
}

/// "Run from this step" and "run up to this step" (Rivet's and n8n's partial runs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Partial {
    /// Run this step and everything downstream of it again; reuse the rest.
    pub from: Option<String>,
    /// The run whose outputs are reused (id or prefix); the latest run of the workflow
    /// when absent.
    pub reuse: Option<String>,
    /// Run only this step and what it needs.
    pub until: Option<String>,
}

/// Applies `partial` to `options`: `until` limits the run to a step and its ancestors;
/// `from` reuses the stored outputs of every step that is not `from` or downstream of it,
/// from the `reuse` run or the workflow's latest run.
///
/// # Errors
/// [`Error::NotActive`] when a named step is not in the workflow or there is no earlier
/// run to reuse; [`Error::UnknownRun`] when `reuse` names no run; [`Error::Store`].
pub async fn apply_partial(
    store: &SqliteStore,
    plan: &Plan,
    partial: &Partial,
    options: &mut RunOptions,
) -> Result<()> {
    for step in [&partial.from, &partial.until].into_iter().flatten() {
        if !plan.index.contains_key(step) {
            return Err(Error::NotActive {
                message: format!("the workflow has no step `{step}`"),
            });
        }
    }
    if let Some(step) = &partial.until {
        options.only = Some(vec![step.clone()]);
    }
    if let Some(step) = &partial.from {
        let source = match &partial.reuse {
            Some(id) => store.resolve_run_id(id).await?,
            None => store
                .latest_run_of(&plan.workflow.id)
                .await?
                .ok_or_else(|| Error::NotActive {
                    message: format!(
                        "no earlier run of `{}` to reuse outputs from; run it once first",
                        plan.workflow.id
                    ),
                })?,
        };
        let earlier = store.get_run(&source).await?;
        let again = plan.descendants(std::slice::from_ref(step));
        let reused = earlier
            .steps
            .into_iter()
            .filter(|s| !again.contains(&s.step_id))
            .collect();
        options.reuse = Some((source, reused));
    }
    Ok(())
}

/// How often a running process says it is alive and looks for control requests.
pub const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);

/// Keeps the run's heartbeat fresh and applies control requests another process stored
/// (`nexus pause|resume|cancel RUN`), every [`HEARTBEAT_EVERY`], until aborted.
pub fn watch_run(
    store: Arc<SqliteStore>,
    run_id: String,
    control: RunControl,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        loop {
            tick.tick().await;
            // A failed heartbeat is retried on the next tick; the run itself reports
            // store failures.
            let _ = store.heartbeat(&run_id).await;
            match store.take_control(&run_id).await {
                Ok(Some(r)) if r == "pause" => control.pause(),
                Ok(Some(r)) if r == "resume" => control.resume(),
                Ok(Some(r)) if r == "cancel" => cancel.cancel(),
                _ => {}
            }
        }
    })
}
