//! The life of a run outside the engine, shared by the `nexus` CLI and the desktop app:
//! opening the run database, building the engine, running with a heartbeat and control
//! requests, telling a live run from an interrupted one, asking another process to
//! pause, resume or cancel, and continuing an interrupted run from its stored record.
//!
//! Invariants:
//! - a run is *alive* when a process still runs it: on Linux its recorded process exists
//!   (and is not this process, which cannot be running it unless it says so itself) and
//!   its heartbeat is younger than [`STALE_AFTER`]; elsewhere the heartbeat alone;
//! - an interrupted run is continued by one process only: [`prepare_resume`] claims it in
//!   the database before anything runs, and a second claimant is refused;
//! - a continued run keeps its completed steps (their stored outputs) and runs the rest,
//!   with the workflow as it was when the run started (the stored copy, not the file).

use std::path::Path;
use std::sync::Arc;

use nexus_engine::plan::Plan;
use nexus_engine::{Engine, RunOptions, RunReport};
use nexus_store::{SqliteStore, StoredRun};

use crate::setup::{ProviderSettings, engine_config, providers, watch_run};
use crate::{Error, Result};

/// How old a heartbeat may be before the run counts as interrupted (the heartbeat is
/// refreshed every [`crate::setup::HEARTBEAT_EVERY`]).
pub const STALE_AFTER: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// Opens (creating when missing) the run database at `path`.
///
/// # Errors
/// [`Error::Store`] when the file cannot be opened or migrated.
pub async fn open_store(path: &Path) -> Result<Arc<SqliteStore>> {
    Ok(Arc::new(SqliteStore::open(path).await?))
}

/// The engine over this machine's providers ([`providers`]), storing runs in `store`,
/// with at most `max_parallel` steps at once.
///
/// # Errors
/// [`Error::Config`] for a bad provider address, providers file or user catalog.
pub async fn engine(
    store: Arc<SqliteStore>,
    settings: &ProviderSettings,
    max_parallel: usize,
) -> Result<Arc<Engine>> {
    let configured = providers(settings).await?;
    let mut config = engine_config(max_parallel)?;
    config.provider_limits.extend(configured.limits);
    Ok(Arc::new(Engine::new(
        configured.providers,
        Some(store as Arc<dyn nexus_engine::store::RunStore>),
        config,
    )))
}

/// A new run id (a UUID v7: time-ordered, so ids sort by start).
pub fn new_run_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Runs `plan` to its end with a heartbeat and the control requests of other processes
/// ([`watch_run`]); gives the run an id when `options` has none.
///
/// # Errors
/// [`Error::Store`] when the run cannot be recorded. A failed step is not an error: it
/// is in the report.
pub async fn execute(
    engine: &Arc<Engine>,
    store: &Arc<SqliteStore>,
    plan: Arc<Plan>,
    inputs: serde_json::Map<String, serde_json::Value>,
    mut options: RunOptions,
) -> Result<RunReport> {
    let run_id = options.run_id.get_or_insert_with(new_run_id).clone();
    let watcher = watch_run(
        Arc::clone(store),
        run_id,
        options.control.clone(),
        options.cancel.clone(),
    );
    let result = engine.run(plan, inputs, options).await;
    watcher.abort();
    result.map_err(|e| match e {
        nexus_engine::EngineError::Store(e) => Error::Store {
            message: format!("the run could not be recorded: {e}"),
        },
        other => Error::Guardrails {
            message: other.to_string(),
        },
    })
}

/// Whether a process is still running `run` (see the module header).
pub fn is_alive(run: &StoredRun) -> bool {
    if cfg!(target_os = "linux")
        && let Some(pid) = run.owner_pid
    {
        return pid != i64::from(std::process::id())
            && Path::new("/proc").join(pid.to_string()).exists()
            && recent_heartbeat(run);
    }
    recent_heartbeat(run)
}

fn recent_heartbeat(run: &StoredRun) -> bool {
    run.heartbeat_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| chrono::Utc::now() - t.with_timezone(&chrono::Utc) < STALE_AFTER)
}

/// Refuses a run that has finished: only `running`, `paused` and `waiting_for_human`
/// runs can be paused, resumed or cancelled.
///
/// # Errors
/// [`Error::NotActive`] naming the run and its final status.
pub fn ensure_unfinished(run: &StoredRun) -> Result<()> {
    if matches!(
        run.status.as_str(),
        "running" | "paused" | "waiting_for_human"
    ) {
        Ok(())
    } else {
        Err(Error::NotActive {
            message: format!("run {} has already finished ({})", run.run_id, run.status),
        })
    }
}

/// A control request for the process running a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Steps in flight finish, no new step starts.
    Pause,
    /// A paused run goes on.
    Resume,
    /// Steps in flight are aborted; the run ends `cancelled`.
    Cancel,
}

impl Control {
    /// The word stored for [`watch_run`]: `pause`, `resume`, `cancel`.
    pub fn as_str(self) -> &'static str {
        match self {
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Cancel => "cancel",
        }
    }
}

/// Leaves `request` for the process running run `id` (id or prefix) and returns the
/// run's full id.
///
/// # Errors
/// [`Error::UnknownRun`]; [`Error::NotActive`] when the run has finished or no process
/// runs it (interrupted: continue it with [`prepare_resume`]); [`Error::Store`].
pub async fn request_control(store: &SqliteStore, id: &str, request: Control) -> Result<String> {
    let run = store.get_run(id).await?;
    ensure_unfinished(&run)?;
    if !is_alive(&run) {
        return Err(Error::NotActive {
            message: format!(
                "run {} is not running in any process (interrupted); continue it with `nexus resume {}` or Resume in the desktop app's history",
                run.run_id, run.run_id
            ),
        });
    }
    store.request_control(&run.run_id, request.as_str()).await?;
    Ok(run.run_id)
}

/// An interrupted run, claimed by this process and ready to continue.
pub struct Resumable {
    /// The run's id.
    pub run_id: String,
    /// The plan of the workflow as stored with the run.
    pub plan: Plan,
    /// The run's resolved inputs, as stored.
    pub inputs: serde_json::Map<String, serde_json::Value>,
    /// Options that continue the run: its id and its completed steps.
    pub options: RunOptions,
    /// Steps already recorded.
    pub completed: usize,
}

/// What [`prepare_resume`] found.
pub enum Resumption {
    /// Another process runs it: it was asked to resume (a no-op unless paused).
    Asked {
        /// The run's id.
        run_id: String,
    },
    /// Interrupted: claimed here, continue it with [`execute`].
    Continue(Box<Resumable>),
}

/// Prepares continuing run `id` (id or prefix): a live run is asked to resume; an
/// interrupted one is rebuilt from its stored workflow and inputs and claimed for this
/// process.
///
/// # Errors
/// [`Error::UnknownRun`]; [`Error::NotActive`] for a finished run, a run stored without
/// its workflow, or one another process claimed first; [`Error::InvalidWorkflow`] when
/// the stored workflow no longer validates (or, with `root`, reads a file outside it:
/// see [`nexus_engine::plan::validate_within`]); [`Error::Store`].
pub async fn prepare_resume(
    store: &SqliteStore,
    id: &str,
    root: Option<&std::path::Path>,
) -> Result<Resumption> {
    let run = store.get_run(id).await?;
    ensure_unfinished(&run)?;
    if is_alive(&run) {
        store
            .request_control(&run.run_id, Control::Resume.as_str())
            .await?;
        return Ok(Resumption::Asked { run_id: run.run_id });
    }
    let Some(workflow) = run.workflow.clone() else {
        return Err(Error::NotActive {
            message: format!(
                "run {} was stored without its workflow and cannot be resumed",
                run.run_id
            ),
        });
    };
    let workflow: nexus_engine::Workflow =
        serde_json::from_value(workflow).map_err(|e| Error::Store {
            message: format!(
                "the stored workflow of run {} is malformed: {e}",
                run.run_id
            ),
        })?;
    let parsed = nexus_engine::parse::Parsed {
        workflow,
        locations: nexus_engine::parse::Locations::default(),
        file: run.file.clone(),
    };
    let plan = match root {
        Some(root) => nexus_engine::plan::validate_within(&parsed, root),
        None => nexus_engine::plan::validate(&parsed),
    }
    .map_err(|diagnostics| Error::InvalidWorkflow { diagnostics })?;
    let inputs = match run.inputs.clone() {
        serde_json::Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    if !store
        .claim_run(&run.run_id, run.owner_pid, run.heartbeat_at.as_deref())
        .await?
    {
        return Err(Error::NotActive {
            message: format!("run {} was just taken over by another process", run.run_id),
        });
    }
    let options = RunOptions {
        run_id: Some(run.run_id.clone()),
        resume: Some(run.steps.clone()),
        // A `wait` step without dependencies counts from the run's first start.
        started_at: chrono::DateTime::parse_from_rfc3339(&run.started_at)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc)),
        ..RunOptions::default()
    };
    Ok(Resumption::Continue(Box::new(Resumable {
        run_id: run.run_id,
        completed: run.steps.len(),
        plan,
        inputs,
        options,
    })))
}
