//! SQLite persistence of Nexus runs (sqlx, WAL, migrations).
//!
//! One database file holds the run history shared by the CLI and the desktop app: runs,
//! steps (input, output, model and why, token counts, duration), attempts (with error
//! kind and message), fallbacks, and the event log (every event but tokens).
//!
//! Durability ([`Durability`], a setting: `NEXUS_DB_SYNC=normal|full`): the database runs
//! in WAL mode. With the default, `synchronous = NORMAL`, a committed step survives a
//! crash or `kill -9` of the process (the commit is in the WAL file, which the operating
//! system writes out on its own); a power cut or an operating-system crash can roll back
//! the last commits (never corrupt the database: SQLite's "WAL mode" and "PRAGMA
//! synchronous" documentation), and `nexus resume` then runs those steps again. With
//! `full`, `synchronous = FULL`: every commit waits for the WAL to be synced to the disk
//! (fsync), so it survives a power cut too, at the price of one sync per commit
//! (`bench/` measures it). Every write of
//! [`nexus_engine::store::RunStore`] is one transaction. Write transactions start with
//! `BEGIN IMMEDIATE`, taking the write lock first: a deferred transaction that reads and
//! then writes fails with `SQLITE_BUSY_SNAPSHOT` when another connection (a cache or
//! breaker write from a parallel step) committed in between, and the busy timeout cannot
//! save it (SQLite's documentation on WAL and `BEGIN IMMEDIATE`).
//!
//! The default location is `<data dir>/nexus/nexus.db` (`dirs::data_dir`: XDG on Linux,
//! `~/Library/Application Support` on macOS, `%APPDATA%` on Windows), overridable with
//! `NEXUS_DB` or the CLI's `--db`.

mod memory;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use nexus_engine::breaker::BreakerSnapshot;
use nexus_engine::events::{Event, RunStatus, StepStatus};
use nexus_engine::provider::{ProviderErrorKind, Usage};
use nexus_engine::select::ModelStats;
use nexus_engine::store::{
    AttemptRecord, CachedOutput, EngineState, FallbackRecord, GuardrailRecord, PostedEvent,
    RunFinish, RunRecord, RunStore, RunTrigger, StepRecord, StoreError, StoredChild,
};
use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

/// The most events of one run that wait for an `event` step at once.
pub const MAX_OPEN_EVENTS: i64 = 1000;

/// Errors of the SQLite store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database file could not be opened or created.
    #[error("cannot open the run database at {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        source: sqlx::Error,
    },
    /// The database's folder could not be created.
    #[error("cannot create the folder {path}: {source}")]
    CreateDir {
        /// The folder.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Applying the schema migrations failed (for example a newer, unknown schema).
    #[error("cannot migrate the run database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] sqlx::Error),
    /// A run has [`MAX_OPEN_EVENTS`] events that no step took; no more are stored.
    #[error(
        "run {run_id} has {open} events that no step took yet; no more are stored until its `event` steps take them"
    )]
    TooManyEvents {
        /// The run.
        run_id: String,
        /// How many wait.
        open: i64,
    },
    /// A stored value could not be read back (a corrupt or foreign row).
    #[error("stored data is malformed: {0}")]
    Decode(String),
    /// No run matches the id or prefix.
    #[error("no run matches `{0}`")]
    NotFound(String),
    /// Several runs match the prefix.
    #[error("`{0}` matches several runs; give more of the id")]
    Ambiguous(String),
    /// A setting of the store (`NEXUS_DB_SYNC`) has a value it does not know.
    #[error("{0}")]
    Setting(String),
}

impl From<Error> for StoreError {
    fn from(e: Error) -> Self {
        StoreError(e.to_string())
    }
}

/// How far a committed write is guaranteed to survive (SQLite's `synchronous` setting
/// in WAL mode; see the crate header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous = NORMAL`: commits survive a crash of the process; a power cut or an
    /// operating-system crash may roll back the last ones (the database stays intact).
    /// The default: a run's steps are replayable (`nexus resume` re-runs what was
    /// lost), and a sync per step would cost every run a disk flush per step.
    #[default]
    Process,
    /// `synchronous = FULL`: every commit is synced to the disk before it returns, so it
    /// survives a power cut too.
    PowerLoss,
}

impl Durability {
    /// `NEXUS_DB_SYNC`: `full` for [`Durability::PowerLoss`], `normal` (or unset) for
    /// [`Durability::Process`].
    ///
    /// # Errors
    /// [`Error::Setting`] for any other value, naming the accepted ones.
    pub fn from_env() -> Result<Self, Error> {
        match std::env::var("NEXUS_DB_SYNC") {
            Err(_) => Ok(Durability::Process),
            Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
                "" | "normal" => Ok(Durability::Process),
                "full" => Ok(Durability::PowerLoss),
                _ => Err(Error::Setting(format!(
                    "NEXUS_DB_SYNC is `{v}`; give `normal` (survive a process crash, the default) or `full` (survive a power cut)"
                ))),
            },
        }
    }

    fn synchronous(self) -> SqliteSynchronous {
        match self {
            Durability::Process => SqliteSynchronous::Normal,
            Durability::PowerLoss => SqliteSynchronous::Full,
        }
    }
}

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
    /// Next step sequence number per run, so a write does not scan the run's steps.
    next_seq: Arc<Mutex<HashMap<String, i64>>>,
    /// Step writes waiting to be committed together (see [`SqliteStore::write_steps`]).
    group: Arc<GroupCommit>,
}

/// Group commit of step writes (the technique of database logs: writes that arrive
/// while one transaction commits are committed together by the next one). Each caller
/// queues its write, then takes the writer lock; the holder commits everything queued in
/// one transaction and tells each caller its result, so a caller returns only once its
/// own records are committed, as before, but concurrent steps (map items, fan-out
/// branches, several runs) share commits.
#[derive(Default)]
struct GroupCommit {
    queue: Mutex<Vec<PendingWrite>>,
    writer: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queued = self.queue.lock().map(|q| q.len()).unwrap_or_default();
        f.debug_struct("GroupCommit")
            .field("queued", &queued)
            .finish()
    }
}

/// One queued step write.
struct PendingWrite {
    run_id: String,
    steps: Vec<StepRecord>,
    events: Vec<Event>,
    done: tokio::sync::oneshot::Sender<Result<(), Error>>,
}

/// A permission the user gave a `shell` tool or a stdio MCP server (`nexus permissions
/// list`): for the workflow file as it was (its sha256) and the tool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Permission {
    /// The workflow's id.
    pub workflow_id: String,
    /// The tool's name under `tools:`.
    pub tool: String,
    /// The program the permission covers (the tool's argv).
    pub command: Vec<String>,
    /// sha256 of the workflow's JSON form, hex: the file as it was when allowed.
    pub workflow_hash: String,
    /// When it was given, RFC 3339.
    pub granted_at: String,
}

/// One line of `runs list`.
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    /// Run id.
    pub run_id: String,
    /// Workflow id.
    pub workflow_id: String,
    /// `running`, `succeeded`, `failed`, `cancelled`.
    pub status: String,
    /// Start time.
    pub started_at: String,
    /// End time, if finished.
    pub finished_at: Option<String>,
    /// Number of steps stored.
    pub steps: i64,
    /// Tokens over all steps (prompt + completion).
    pub tokens: i64,
    /// The trigger that started it; `None`: a person.
    pub trigger: Option<RunTrigger>,
}

/// Which runs [`SqliteStore::list_runs_where`] lists.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    /// Only runs started by a trigger of this kind or name (`cron`, `nightly`, ...);
    /// `manual` also matches the runs a person started. `None`: every run.
    pub trigger: Option<String>,
}

/// A stored run with everything recorded about it.
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Serialize)]
pub struct StoredRun {
    /// Run id.
    pub run_id: String,
    /// Workflow id.
    pub workflow_id: String,
    /// Workflow name.
    pub workflow_name: Option<String>,
    /// Workflow version.
    pub workflow_version: Option<String>,
    /// Workflow file.
    pub file: Option<String>,
    /// Inputs (JSON object).
    pub inputs: serde_json::Value,
    /// Status.
    pub status: String,
    /// Outputs (JSON object), when finished.
    pub outputs: Option<serde_json::Value>,
    /// Error, when it did not succeed.
    pub error: Option<String>,
    /// Start time.
    pub started_at: String,
    /// End time.
    pub finished_at: Option<String>,
    /// Steps in completion order.
    pub steps: Vec<StepRecord>,
    /// The event log (no token events).
    pub events: Vec<Event>,
    /// The workflow as run (serde JSON of `nexus_engine::Workflow`), for resume.
    pub workflow: Option<serde_json::Value>,
    /// When the process running the run last said it was alive.
    pub heartbeat_at: Option<String>,
    /// The id of the process that last ran the run.
    pub owner_pid: Option<i64>,
    /// The trigger that started it; `None`: a person.
    pub trigger: Option<RunTrigger>,
}

/// The default database path: `NEXUS_DB` if set, else `<data dir>/nexus/nexus.db`.
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("NEXUS_DB") {
        return PathBuf::from(p);
    }
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("nexus")
        .join("nexus.db")
}

/// The `trigger_kind` and `trigger_name` columns of a `runs` row.
fn trigger_of(r: &sqlx::sqlite::SqliteRow) -> Option<RunTrigger> {
    let kind: Option<String> = r.get("trigger_kind");
    let name: Option<String> = r.get("trigger_name");
    kind.map(|kind| RunTrigger {
        name: name.unwrap_or_else(|| kind.clone()),
        kind,
    })
}

pub(crate) fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>, Error> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| Error::Decode(format!("bad timestamp `{s}`: {e}")))
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(v: Option<i64>) -> Option<u64> {
    v.map(|x| u64::try_from(x).unwrap_or(0))
}

/// Token counts of a `steps` or `attempts` row; `None` when neither column is set.
fn usage_of(row: &sqlx::sqlite::SqliteRow) -> Option<Usage> {
    match (
        row.get::<Option<i64>, _>("prompt_tokens"),
        row.get::<Option<i64>, _>("completion_tokens"),
    ) {
        (None, None) => None,
        (p, c) => Some(Usage {
            prompt_tokens: u64_of(p).unwrap_or(0),
            completion_tokens: u64_of(c).unwrap_or(0),
        }),
    }
}

fn parse_status(s: &str) -> Result<StepStatus, Error> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| Error::Decode(format!("unknown step status `{s}`")))
}

fn guardrail_of(g: &sqlx::sqlite::SqliteRow) -> GuardrailRecord {
    GuardrailRecord {
        stage: g.get("stage"),
        detector: g.get("detector"),
        severity: g.get("severity"),
        action: g.get("action"),
        count: usize::try_from(g.get::<i64, _>("count")).unwrap_or(0),
        sample: g.get("sample"),
    }
}

impl SqliteStore {
    /// Closes the database's connections once their current statements are done; later
    /// calls on this store (and its clones) fail with a closed-pool error. Each
    /// connection's worker thread has then finished, so what it still held (the
    /// `tracing` span of its last statement, which keeps a run's span open) is dropped:
    /// a process calls this before it exports its last spans and exits.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Opens (creating if needed) the database at `path` and applies migrations, with
    /// the durability of `NEXUS_DB_SYNC` ([`Durability::from_env`]).
    ///
    /// # Errors
    /// [`Error::Setting`], [`Error::CreateDir`], [`Error::Open`] or [`Error::Migrate`].
    pub async fn open(path: &Path) -> Result<Self, Error> {
        Self::open_with(path, Durability::from_env()?).await
    }

    /// [`SqliteStore::open`] with an explicit durability.
    ///
    /// # Errors
    /// [`Error::CreateDir`], [`Error::Open`] or [`Error::Migrate`].
    pub async fn open_with(path: &Path, durability: Durability) -> Result<Self, Error> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        memory::register_sqlite_vec();
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            })?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(durability.synchronous())
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|source| Error::Open {
                path: path.to_path_buf(),
                source,
            })?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(SqliteStore {
            pool,
            path: path.to_path_buf(),
            next_seq: Arc::new(Mutex::new(HashMap::new())),
            group: Arc::new(GroupCommit::default()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The durability in effect, as SQLite reports it (`PRAGMA synchronous`).
    ///
    /// # Errors
    /// [`Error::Query`]; [`Error::Decode`] for a level other than NORMAL or FULL.
    pub async fn durability(&self) -> Result<Durability, Error> {
        let level: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&self.pool)
            .await?;
        match level {
            1 => Ok(Durability::Process),
            2 => Ok(Durability::PowerLoss),
            other => Err(Error::Decode(format!("synchronous level {other}"))),
        }
    }

    /// The most recent runs, newest first.
    ///
    /// # Errors
    /// [`Error::Query`].
    pub async fn list_runs(&self, limit: u32) -> Result<Vec<RunSummary>, Error> {
        self.list_runs_where(limit, &RunFilter::default()).await
    }

    /// The most recent runs that `filter` lets through, newest first.
    ///
    /// # Errors
    /// [`Error::Query`].
    pub async fn list_runs_where(
        &self,
        limit: u32,
        filter: &RunFilter,
    ) -> Result<Vec<RunSummary>, Error> {
        let rows = sqlx::query(
            "SELECT r.run_id, r.workflow_id, r.status, r.started_at, r.finished_at,
                    r.trigger_kind, r.trigger_name,
                    (SELECT COUNT(*) FROM steps s WHERE s.run_id = r.run_id) AS steps,
                    (SELECT COALESCE(SUM(COALESCE(prompt_tokens,0) + COALESCE(completion_tokens,0)),0)
                       FROM steps s WHERE s.run_id = r.run_id) AS tokens
             FROM runs r
             WHERE ?1 IS NULL OR r.trigger_kind = ?1 OR r.trigger_name = ?1
                OR (?1 = 'manual' AND r.trigger_kind IS NULL)
             ORDER BY r.started_at DESC, r.run_id DESC LIMIT ?2",
        )
        .bind(filter.trigger.as_deref())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| RunSummary {
                trigger: trigger_of(&r),
                run_id: r.get("run_id"),
                workflow_id: r.get("workflow_id"),
                status: r.get("status"),
                started_at: r.get("started_at"),
                finished_at: r.get("finished_at"),
                steps: r.get("steps"),
                tokens: r.get("tokens"),
            })
            .collect())
    }

    /// The last fire stored for a cron trigger (see [`SqliteStore::claim_fire`]).
    ///
    /// # Errors
    /// [`Error::Query`], [`Error::Decode`] for a stored time that is not RFC 3339.
    pub async fn last_fire(
        &self,
        workflow_id: &str,
        trigger_name: &str,
    ) -> Result<Option<DateTime<Utc>>, Error> {
        let row = sqlx::query(
            "SELECT last_fire FROM trigger_fires WHERE workflow_id = ? AND trigger_name = ?",
        )
        .bind(workflow_id)
        .bind(trigger_name)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| parse_ts(&r.get::<String, _>("last_fire")))
            .transpose()
    }

    /// Claims the fire of a cron trigger at `fire` (its scheduled time): stores it as the
    /// trigger's last fire and returns true only when no fire at or after `fire` was
    /// stored before, in one statement, so of two processes (or a process and itself
    /// after a restart) exactly one starts the run of a fire.
    ///
    /// # Errors
    /// [`Error::Query`].
    pub async fn claim_fire(
        &self,
        workflow_id: &str,
        trigger_name: &str,
        fire: DateTime<Utc>,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "INSERT INTO trigger_fires (workflow_id, trigger_name, last_fire) VALUES (?, ?, ?)
             ON CONFLICT (workflow_id, trigger_name) DO UPDATE SET last_fire = excluded.last_fire
             WHERE excluded.last_fire > trigger_fires.last_fire",
        )
        .bind(workflow_id)
        .bind(trigger_name)
        .bind(ts(&fire))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Stores an event named `name` with `body` for run `run_id`, where its `event`
    /// steps take it (see [`RunStore::take_event`]). At most [`MAX_OPEN_EVENTS`] events
    /// of a run wait untaken, so a caller cannot fill the disk.
    ///
    /// # Errors
    /// [`Error::TooManyEvents`] when that many wait already; [`Error::Query`].
    pub async fn post_event(
        &self,
        run_id: &str,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<i64, Error> {
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM run_events WHERE run_id = ? AND taken_by IS NULL",
        )
        .bind(run_id)
        .fetch_one(&self.pool)
        .await?;
        if open >= MAX_OPEN_EVENTS {
            return Err(Error::TooManyEvents {
                run_id: run_id.to_string(),
                open,
            });
        }
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO run_events (run_id, name, body, received_at) VALUES (?, ?, ?, ?)
             RETURNING id",
        )
        .bind(run_id)
        .bind(name)
        .bind(body.to_string())
        .bind(ts(&Utc::now()))
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    /// The random secret `name` of this database (32 bytes from SQLite's
    /// `randomblob`, seeded by the operating system), made on first use and kept.
    ///
    /// # Errors
    /// [`Error::Query`].
    pub async fn instance_secret(&self, name: &str) -> Result<Vec<u8>, Error> {
        sqlx::query(
            "INSERT OR IGNORE INTO instance_secrets (name, value) VALUES (?, randomblob(32))",
        )
        .bind(name)
        .execute(&self.pool)
        .await?;
        let value: Vec<u8> =
            sqlx::query_scalar("SELECT value FROM instance_secrets WHERE name = ?")
                .bind(name)
                .fetch_one(&self.pool)
                .await?;
        Ok(value)
    }

    /// Resolves a full run id or a unique prefix of one.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Ambiguous`], [`Error::Query`].
    pub async fn resolve_run_id(&self, id_or_prefix: &str) -> Result<String, Error> {
        // A full id wins over being the prefix of another (a child run's id is its
        // parent's id followed by the step's path).
        let exact = sqlx::query("SELECT run_id FROM runs WHERE run_id = ?")
            .bind(id_or_prefix)
            .fetch_optional(&self.pool)
            .await?;
        if let Some(row) = exact {
            return Ok(row.get("run_id"));
        }
        let pattern = format!(
            "{}%",
            id_or_prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let rows = sqlx::query("SELECT run_id FROM runs WHERE run_id LIKE ? ESCAPE '\\' LIMIT 2")
            .bind(pattern)
            .fetch_all(&self.pool)
            .await?;
        match rows.len() {
            0 => Err(Error::NotFound(id_or_prefix.to_string())),
            1 => Ok(rows[0].get("run_id")),
            _ => Err(Error::Ambiguous(id_or_prefix.to_string())),
        }
    }

    /// Everything stored about one run (id or unique prefix).
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Ambiguous`], [`Error::Query`], [`Error::Decode`].
    pub async fn get_run(&self, id_or_prefix: &str) -> Result<StoredRun, Error> {
        let run_id = self.resolve_run_id(id_or_prefix).await?;
        let r = sqlx::query("SELECT * FROM runs WHERE run_id = ?")
            .bind(&run_id)
            .fetch_one(&self.pool)
            .await?;
        let json = |s: Option<String>| -> Result<Option<serde_json::Value>, Error> {
            s.map(|s| serde_json::from_str(&s).map_err(|e| Error::Decode(e.to_string())))
                .transpose()
        };
        let inputs = json(Some(r.get("inputs")))?.unwrap_or(serde_json::Value::Null);
        let outputs = json(r.get("outputs"))?;

        let step_rows = sqlx::query("SELECT * FROM steps WHERE run_id = ? ORDER BY seq")
            .bind(&run_id)
            .fetch_all(&self.pool)
            .await?;
        let attempt_rows =
            sqlx::query("SELECT * FROM attempts WHERE run_id = ? ORDER BY step_id, attempt")
                .bind(&run_id)
                .fetch_all(&self.pool)
                .await?;
        let fallback_rows =
            sqlx::query("SELECT * FROM fallbacks WHERE run_id = ? ORDER BY step_id, seq")
                .bind(&run_id)
                .fetch_all(&self.pool)
                .await?;
        let guard_rows = sqlx::query("SELECT * FROM guardrail_audit WHERE run_id = ? ORDER BY id")
            .bind(&run_id)
            .fetch_all(&self.pool)
            .await?;
        let mut steps = Vec::with_capacity(step_rows.len());
        for s in step_rows {
            let step_id: String = s.get("step_id");
            let usage = usage_of(&s);
            let mut attempts = Vec::new();
            for a in attempt_rows
                .iter()
                .filter(|a| a.get::<String, _>("step_id") == step_id)
            {
                let usage = usage_of(a);
                attempts.push(AttemptRecord {
                    attempt: u32::try_from(a.get::<i64, _>("attempt")).unwrap_or(0),
                    model: a.get("model"),
                    started_at: parse_ts(&a.get::<String, _>("started_at"))?,
                    duration_ms: u64_of(Some(a.get("duration_ms"))).unwrap_or(0),
                    first_token_ms: u64_of(a.get("first_token_ms")),
                    error_kind: a
                        .get::<Option<String>, _>("error_kind")
                        .as_deref()
                        .and_then(ProviderErrorKind::parse),
                    error_message: a.get("error_message"),
                    usage,
                });
            }
            let fallbacks = fallback_rows
                .iter()
                .filter(|f| f.get::<String, _>("step_id") == step_id)
                .map(|f| FallbackRecord {
                    from: f.get("from_model"),
                    to: f.get("to_model"),
                    reason: f.get("reason"),
                    rung: f.get("rung"),
                })
                .collect();
            let guardrails = guard_rows
                .iter()
                .filter(|g| g.get::<String, _>("step_id") == step_id)
                .map(guardrail_of)
                .collect();
            let selection = match s.get::<Option<String>, _>("selection") {
                Some(text) => {
                    Some(serde_json::from_str(&text).map_err(|e| Error::Decode(e.to_string()))?)
                }
                None => None,
            };
            let transcript = match s.get::<Option<String>, _>("transcript") {
                Some(text) => {
                    serde_json::from_str(&text).map_err(|e| Error::Decode(e.to_string()))?
                }
                None => Vec::new(),
            };
            steps.push(StepRecord {
                kind: s.get("kind"),
                status: parse_status(&s.get::<String, _>("status"))?,
                input: s.get("input"),
                output: s.get("output"),
                reasoning: s.get("reasoning"),
                output_json: json(s.get("output_json"))?,
                model: s.get("model"),
                model_reason: s.get("model_reason"),
                usage,
                started_at: parse_ts(&s.get::<String, _>("started_at"))?,
                duration_ms: u64_of(Some(s.get("duration_ms"))).unwrap_or(0),
                error: s.get("error"),
                attempts,
                fallbacks,
                cached: s.get::<i64, _>("cached") != 0,
                cost_usd: s.get("cost_usd"),
                selection,
                guardrails,
                handled: s.get::<i64, _>("handled") != 0,
                transcript,
                step_id,
            });
        }
        let event_rows = sqlx::query("SELECT payload FROM events WHERE run_id = ? ORDER BY id")
            .bind(&run_id)
            .fetch_all(&self.pool)
            .await?;
        let events = event_rows
            .into_iter()
            .map(|e| {
                serde_json::from_str::<Event>(&e.get::<String, _>("payload"))
                    .map_err(|err| Error::Decode(err.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(StoredRun {
            run_id,
            workflow_id: r.get("workflow_id"),
            workflow_name: r.get("workflow_name"),
            workflow_version: r.get("workflow_version"),
            file: r.get("file"),
            inputs,
            status: r.get("status"),
            outputs,
            error: r.get("error"),
            started_at: r.get("started_at"),
            finished_at: r.get("finished_at"),
            steps,
            events,
            workflow: json(r.get("workflow_json"))?,
            heartbeat_at: r.get("heartbeat_at"),
            owner_pid: r.get("owner_pid"),
            trigger: trigger_of(&r),
        })
    }

    /// Marks the run as alive now (the process running it calls this every second or
    /// so; `nexus resume` treats a run whose heartbeat is older as interrupted).
    ///
    /// # Errors
    /// [`Error::Query`].
    pub async fn heartbeat(&self, run_id: &str) -> Result<(), Error> {
        // The run's unfinished child runs (`<id>.<step path>`, `<id>:on_failure`) run in
        // the same process and are alive with it. They are the ids in the ranges
        // [`<id>.`, `<id>/`) and [`<id>:`, `<id>;`) (`/` and `;` follow `.` and `:` in
        // ASCII), which the primary key's index finds directly; a `LIKE` here scanned
        // every run ever stored on each heartbeat.
        sqlx::query(
            "UPDATE runs SET heartbeat_at = ?, owner_pid = ?
             WHERE run_id = ?
                OR (((run_id >= ? AND run_id < ?) OR (run_id >= ? AND run_id < ?))
                    AND status IN ('running', 'paused', 'waiting_for_human'))",
        )
        .bind(ts(&Utc::now()))
        .bind(i64::from(std::process::id()))
        .bind(run_id)
        .bind(format!("{run_id}."))
        .bind(format!("{run_id}/"))
        .bind(format!("{run_id}:"))
        .bind(format!("{run_id};"))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The newest run of a workflow, if any (for "run from this step").
    ///
    /// # Errors
    /// [`Error::Query`].
    /// Every permission given, newest first.
    pub async fn list_permissions(&self) -> Result<Vec<Permission>, Error> {
        let rows = sqlx::query(
            "SELECT workflow_hash, tool, workflow_id, command, granted_at FROM permissions
             ORDER BY granted_at DESC, workflow_id, tool",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let command: String = r.get("command");
                Ok(Permission {
                    workflow_id: r.get("workflow_id"),
                    tool: r.get("tool"),
                    command: serde_json::from_str(&command)
                        .map_err(|e| Error::Decode(e.to_string()))?,
                    workflow_hash: r.get("workflow_hash"),
                    granted_at: r.get("granted_at"),
                })
            })
            .collect()
    }

    /// Takes back the permissions of `workflow_id` (every tool, or only `tool`); how many
    /// there were. The next run asks again.
    pub async fn revoke_permissions(
        &self,
        workflow_id: &str,
        tool: Option<&str>,
    ) -> Result<u64, Error> {
        let done = sqlx::query(
            "DELETE FROM permissions WHERE workflow_id = ? AND (? IS NULL OR tool = ?)",
        )
        .bind(workflow_id)
        .bind(tool)
        .bind(tool)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn latest_run_of(&self, workflow_id: &str) -> Result<Option<String>, Error> {
        Ok(sqlx::query(
            "SELECT run_id FROM runs WHERE workflow_id = ? ORDER BY started_at DESC, run_id DESC LIMIT 1",
        )
        .bind(workflow_id)
        .fetch_optional(&self.pool)
        .await?
        .map(|r| r.get("run_id")))
    }

    /// Takes over an interrupted run for this process, only if nobody else did since it
    /// was read (its owner and heartbeat are still those given). Returns whether the
    /// claim succeeded, so two `nexus resume` commands cannot both continue a run.
    ///
    /// # Errors
    /// [`Error::Query`].
    pub async fn claim_run(
        &self,
        run_id: &str,
        owner_pid: Option<i64>,
        heartbeat_at: Option<&str>,
    ) -> Result<bool, Error> {
        let done = sqlx::query(
            "UPDATE runs SET owner_pid = ?, heartbeat_at = ?
             WHERE run_id = ? AND owner_pid IS ? AND heartbeat_at IS ?",
        )
        .bind(i64::from(std::process::id()))
        .bind(ts(&Utc::now()))
        .bind(run_id)
        .bind(owner_pid)
        .bind(heartbeat_at)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Leaves a control request (`pause`, `resume`, `cancel`) for the process running
    /// the run.
    ///
    /// # Errors
    /// [`Error::Query`].
    pub async fn request_control(&self, run_id: &str, request: &str) -> Result<(), Error> {
        sqlx::query("UPDATE runs SET control = ? WHERE run_id = ?")
            .bind(request)
            .bind(run_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Takes the pending control request of a run, if any.
    ///
    /// # Errors
    /// [`Error::Query`].
    pub async fn take_control(&self, run_id: &str) -> Result<Option<String>, Error> {
        // (`UPDATE ... RETURNING` would return the new value, NULL.)
        let pending: Option<String> = sqlx::query("SELECT control FROM runs WHERE run_id = ?")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await?
            .and_then(|r| r.try_get::<Option<String>, _>("control").ok().flatten());
        let Some(request) = pending else {
            return Ok(None);
        };
        // Clear it only if it is still the same request.
        let cleared =
            sqlx::query("UPDATE runs SET control = NULL WHERE run_id = ? AND control = ?")
                .bind(run_id)
                .bind(&request)
                .execute(&self.pool)
                .await?;
        Ok((cleared.rows_affected() == 1).then_some(request))
    }

    /// The guardrail audit log, newest first.
    ///
    /// # Errors
    /// [`Error::Query`].
    pub async fn guardrail_audit(
        &self,
        limit: u32,
    ) -> Result<Vec<(String, String, GuardrailRecord, String)>, Error> {
        let rows = sqlx::query("SELECT * FROM guardrail_audit ORDER BY id DESC LIMIT ?")
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .into_iter()
            .map(|g| {
                (
                    g.get("run_id"),
                    g.get("step_id"),
                    guardrail_of(&g),
                    g.get("at"),
                )
            })
            .collect())
    }

    async fn insert_events(
        tx: &mut sqlx::SqliteConnection,
        run_id: &str,
        events: &[Event],
    ) -> Result<(), Error> {
        for event in events {
            let payload = serde_json::to_string(event).map_err(|e| Error::Decode(e.to_string()))?;
            sqlx::query("INSERT INTO events (run_id, type, step_id, payload) VALUES (?, ?, ?, ?)")
                .bind(run_id)
                .bind(event.name())
                .bind(event.step_id())
                .bind(payload)
                .execute(&mut *tx)
                .await?;
        }
        Ok(())
    }

    /// Writes step records and events durably (one commit), grouped with the writes of
    /// other steps that are waiting at the same time (see [`GroupCommit`]). When a group's
    /// transaction fails, each write of the group is retried alone, so a bad write (a
    /// step recorded twice) fails only its own caller.
    async fn write_steps(
        &self,
        run_id: &str,
        steps: &[&StepRecord],
        events: &[Event],
    ) -> Result<(), Error> {
        let (done, mut result) = tokio::sync::oneshot::channel();
        if let Ok(mut q) = self.group.queue.lock() {
            q.push(PendingWrite {
                run_id: run_id.to_string(),
                steps: steps.iter().map(|s| (*s).clone()).collect(),
                events: events.to_vec(),
                done,
            });
        }
        let writer = self.group.writer.lock().await;
        if let Ok(r) = result.try_recv() {
            // The previous holder committed this write with its group.
            return r;
        }
        let batch = self
            .group
            .queue
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default();
        self.commit_group(batch).await;
        drop(writer);
        result
            .await
            .unwrap_or_else(|_| Err(Error::Decode("a step write was lost".into())))
    }

    /// Commits queued writes in one transaction, or, when that fails, each alone.
    async fn commit_group(&self, batch: Vec<PendingWrite>) {
        if batch.len() > 1 {
            let mut seqs = HashMap::new();
            let all: Result<(), Error> = async {
                let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
                for w in &batch {
                    self.insert_steps(&mut tx, &mut seqs, &w.run_id, &w.steps, &w.events)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }
            .await;
            if all.is_ok() {
                self.remember_seqs(seqs);
                for w in batch {
                    let _ = w.done.send(Ok(()));
                }
                return;
            }
        }
        for w in batch {
            let mut seqs = HashMap::new();
            let one: Result<(), Error> = async {
                let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
                self.insert_steps(&mut tx, &mut seqs, &w.run_id, &w.steps, &w.events)
                    .await?;
                tx.commit().await?;
                Ok(())
            }
            .await;
            if one.is_ok() {
                self.remember_seqs(seqs);
            }
            let _ = w.done.send(one);
        }
    }

    /// Keeps the next sequence numbers of a committed group.
    fn remember_seqs(&self, seqs: HashMap<String, i64>) {
        if let Ok(mut m) = self.next_seq.lock() {
            m.extend(seqs);
        }
    }

    /// Inserts one write's steps (with their guardrail findings, attempts, fallbacks) and
    /// events in `tx`; `seqs` holds the last sequence number per run written in this
    /// transaction.
    async fn insert_steps(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
        seqs: &mut HashMap<String, i64>,
        run_id: &str,
        steps: &[StepRecord],
        events: &[Event],
    ) -> Result<(), Error> {
        let known = match seqs.get(run_id) {
            Some(&s) => Some(s),
            None => self
                .next_seq
                .lock()
                .ok()
                .and_then(|m| m.get(run_id).copied()),
        };
        let base: i64 = match known {
            Some(base) => base,
            None => sqlx::query("SELECT COALESCE(MAX(seq), 0) AS m FROM steps WHERE run_id = ?")
                .bind(run_id)
                .fetch_one(&mut **tx)
                .await?
                .get("m"),
        };
        for (k, step) in steps.iter().enumerate() {
            let seq = base + 1 + i64::try_from(k).unwrap_or(0);
            sqlx::query(
                "INSERT INTO steps (run_id, step_id, seq, kind, status, input, output, output_json,
                   model, model_reason, prompt_tokens, completion_tokens, started_at, duration_ms, error,
                   cached, cost_usd, selection, handled, reasoning, transcript)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(run_id)
            .bind(&step.step_id)
            .bind(seq)
            .bind(&step.kind)
            .bind(step.status.as_str())
            .bind(&step.input)
            .bind(&step.output)
            .bind(step.output_json.as_ref().map(ToString::to_string))
            .bind(&step.model)
            .bind(&step.model_reason)
            .bind(step.usage.map(|u| i64_of(u.prompt_tokens)))
            .bind(step.usage.map(|u| i64_of(u.completion_tokens)))
            .bind(ts(&step.started_at))
            .bind(i64_of(step.duration_ms))
            .bind(&step.error)
            .bind(i64::from(step.cached))
            .bind(step.cost_usd)
            .bind(
                step.selection
                    .as_ref()
                    .and_then(|s| serde_json::to_string(s).ok()),
            )
            .bind(i64::from(step.handled))
            .bind(&step.reasoning)
            .bind(
                (!step.transcript.is_empty())
                    .then(|| serde_json::to_string(&step.transcript).ok())
                    .flatten(),
            )
            .execute(&mut **tx)
            .await?;
            for g in &step.guardrails {
                sqlx::query(
                    "INSERT INTO guardrail_audit (run_id, step_id, stage, detector, severity, action, count, sample, at)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(run_id)
                .bind(&step.step_id)
                .bind(&g.stage)
                .bind(&g.detector)
                .bind(&g.severity)
                .bind(&g.action)
                .bind(i64::try_from(g.count).unwrap_or(i64::MAX))
                .bind(&g.sample)
                .bind(ts(&step.started_at))
                .execute(&mut **tx)
                .await?;
            }
            for a in &step.attempts {
                sqlx::query(
                    "INSERT INTO attempts (run_id, step_id, attempt, model, started_at, duration_ms,
                       first_token_ms, error_kind, error_message, prompt_tokens, completion_tokens)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(run_id)
                .bind(&step.step_id)
                .bind(i64::from(a.attempt))
                .bind(&a.model)
                .bind(ts(&a.started_at))
                .bind(i64_of(a.duration_ms))
                .bind(a.first_token_ms.map(i64_of))
                .bind(a.error_kind.map(ProviderErrorKind::as_str))
                .bind(&a.error_message)
                .bind(a.usage.map(|u| i64_of(u.prompt_tokens)))
                .bind(a.usage.map(|u| i64_of(u.completion_tokens)))
                .execute(&mut **tx)
                .await?;
            }
            for (k, f) in step.fallbacks.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO fallbacks (run_id, step_id, seq, from_model, to_model, reason, rung)
                     VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(run_id)
                .bind(&step.step_id)
                .bind(i64::try_from(k).unwrap_or(0))
                .bind(&f.from)
                .bind(&f.to)
                .bind(&f.reason)
                .bind(&f.rung)
                .execute(&mut **tx)
                .await?;
            }
        }
        Self::insert_events(tx, run_id, events).await?;
        seqs.insert(
            run_id.to_string(),
            base + i64::try_from(steps.len()).unwrap_or(0),
        );
        Ok(())
    }
}

impl SqliteStore {
    /// Writes one row of observed statistics (`model_stats` by `key`, `agent_stats` by
    /// `agent`: the same columns), replacing the row of the same key.
    async fn upsert_stats(
        &self,
        table: &'static str,
        key_column: &'static str,
        key: &str,
        stats: &ModelStats,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO {table} ({key_column}, calls, success_rate, latency_ms, updated_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT ({key_column}) DO UPDATE SET calls = excluded.calls, success_rate = excluded.success_rate,
               latency_ms = excluded.latency_ms, updated_at = excluded.updated_at"
        );
        sqlx::query(&sql)
            .bind(key)
            .bind(i64_of(stats.calls))
            .bind(stats.success_rate)
            .bind(stats.latency_ms)
            .bind(ts(&stats.updated_at.unwrap_or_else(Utc::now)))
            .execute(&self.pool)
            .await
            .map_err(Error::from)?;
        Ok(())
    }
}

#[async_trait]
impl RunStore for SqliteStore {
    fn memory(&self) -> Option<&dyn nexus_engine::memory::MemoryStore> {
        Some(self)
    }

    async fn create_run(&self, run: &RunRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO runs (run_id, workflow_id, workflow_name, workflow_version, file, inputs, status, started_at,
               workflow_json, heartbeat_at, owner_pid, parent_run_id, parent_step_id,
               trigger_kind, trigger_name)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&run.run_id)
        .bind(&run.workflow_id)
        .bind(&run.workflow_name)
        .bind(&run.workflow_version)
        .bind(&run.file)
        .bind(run.inputs.to_string())
        .bind(RunStatus::Running.as_str())
        .bind(ts(&run.started_at))
        .bind(run.workflow.as_ref().map(ToString::to_string))
        .bind(ts(&run.started_at))
        .bind(i64::from(std::process::id()))
        .bind(run.parent.as_ref().map(|(r, _)| r))
        .bind(run.parent.as_ref().map(|(_, s)| s))
        .bind(run.trigger.as_ref().map(|t| &t.kind))
        .bind(run.trigger.as_ref().map(|t| &t.name))
        .execute(&self.pool)
        .await
        .map_err(Error::from)?;
        Ok(())
    }

    async fn record_steps(
        &self,
        run_id: &str,
        steps: &[&StepRecord],
        events: &[Event],
    ) -> Result<(), StoreError> {
        Ok(self.write_steps(run_id, steps, events).await?)
    }

    async fn child_run(&self, run_id: &str) -> Result<Option<StoredChild>, StoreError> {
        let exists = sqlx::query("SELECT run_id FROM runs WHERE run_id = ?")
            .bind(run_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::from)?;
        if exists.is_none() {
            return Ok(None);
        }
        let run = self.get_run(run_id).await?;
        let status = RunStatus::parse(&run.status).ok_or_else(|| {
            Error::Decode(format!(
                "run {run_id} has an unknown status `{}`",
                run.status
            ))
        })?;
        let outputs = match run.outputs {
            Some(serde_json::Value::Object(o)) => o,
            _ => serde_json::Map::new(),
        };
        let started_at = DateTime::parse_from_rfc3339(&run.started_at)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| Error::Decode(format!("run {run_id} has a bad start time: {e}")))?;
        Ok(Some(StoredChild {
            status,
            steps: run.steps,
            outputs,
            error: run.error,
            started_at,
        }))
    }

    async fn finish_run(
        &self,
        run_id: &str,
        finish: &RunFinish,
        events: &[Event],
    ) -> Result<(), StoreError> {
        let result: Result<(), Error> = async {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query("UPDATE runs SET status = ?, outputs = ?, error = ?, finished_at = ? WHERE run_id = ?")
                .bind(finish.status.as_str())
                .bind(finish.outputs.to_string())
                .bind(&finish.error)
                .bind(ts(&finish.finished_at))
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
            Self::insert_events(&mut tx, run_id, events).await?;
            tx.commit().await?;
            if let Ok(mut m) = self.next_seq.lock() {
                m.remove(run_id);
            }
            Ok(())
        }
        .await;
        Ok(result?)
    }

    async fn set_run_status(
        &self,
        run_id: &str,
        status: RunStatus,
        events: &[Event],
    ) -> Result<(), StoreError> {
        let result: Result<(), Error> = async {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            sqlx::query(
                "UPDATE runs SET status = ?, heartbeat_at = ?, finished_at = NULL WHERE run_id = ?",
            )
            .bind(status.as_str())
            .bind(ts(&Utc::now()))
            .bind(run_id)
            .execute(&mut *tx)
            .await?;
            Self::insert_events(&mut tx, run_id, events).await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        Ok(result?)
    }

    async fn load_state(&self) -> Result<EngineState, StoreError> {
        let result: Result<EngineState, Error> = async {
            let mut state = EngineState::default();
            for r in sqlx::query("SELECT key, snapshot FROM breakers")
                .fetch_all(&self.pool)
                .await?
            {
                let snap: BreakerSnapshot = serde_json::from_str(&r.get::<String, _>("snapshot"))
                    .map_err(|e| Error::Decode(e.to_string()))?;
                state.breakers.push((r.get("key"), snap));
            }
            for r in sqlx::query("SELECT * FROM model_stats")
                .fetch_all(&self.pool)
                .await?
            {
                state.stats.push((
                    r.get("key"),
                    ModelStats {
                        calls: u64_of(Some(r.get("calls"))).unwrap_or(0),
                        success_rate: r.get("success_rate"),
                        latency_ms: r.get("latency_ms"),
                        updated_at: parse_ts(&r.get::<String, _>("updated_at")).ok(),
                    },
                ));
            }
            for r in sqlx::query("SELECT * FROM agent_stats")
                .fetch_all(&self.pool)
                .await?
            {
                state.agent_stats.push((
                    r.get("agent"),
                    ModelStats {
                        calls: u64_of(Some(r.get("calls"))).unwrap_or(0),
                        success_rate: r.get("success_rate"),
                        latency_ms: r.get("latency_ms"),
                        updated_at: parse_ts(&r.get::<String, _>("updated_at")).ok(),
                    },
                ));
            }
            Ok(state)
        }
        .await;
        Ok(result?)
    }

    async fn save_agent_stats(&self, agent: &str, stats: &ModelStats) -> Result<(), StoreError> {
        self.upsert_stats("agent_stats", "agent", agent, stats)
            .await
    }

    async fn save_breaker(&self, key: &str, snapshot: &BreakerSnapshot) -> Result<(), StoreError> {
        let text = serde_json::to_string(snapshot).map_err(|e| StoreError(e.to_string()))?;
        sqlx::query(
            "INSERT INTO breakers (key, snapshot, updated_at) VALUES (?, ?, ?)
             ON CONFLICT (key) DO UPDATE SET snapshot = excluded.snapshot, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(text)
        .bind(ts(&Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(Error::from)?;
        Ok(())
    }

    async fn save_model_stats(&self, key: &str, stats: &ModelStats) -> Result<(), StoreError> {
        self.upsert_stats("model_stats", "key", key, stats).await
    }

    async fn cache_get(&self, key: &str) -> Result<Option<CachedOutput>, StoreError> {
        let row = sqlx::query("SELECT * FROM step_cache WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::from)?;
        let Some(r) = row else { return Ok(None) };
        let output_json = match r.get::<Option<String>, _>("output_json") {
            Some(t) => Some(serde_json::from_str(&t).map_err(|e| StoreError(e.to_string()))?),
            None => None,
        };
        Ok(Some(CachedOutput {
            output: r.get("output"),
            output_json,
            model: r.get("model"),
            usage: usage_of(&r),
            run_id: r.get("run_id"),
        }))
    }

    async fn permission(&self, workflow_hash: &str, tool: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM permissions WHERE workflow_hash = ? AND tool = ?")
            .bind(workflow_hash)
            .bind(tool)
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::from)?;
        Ok(row.is_some())
    }

    async fn grant_permission(
        &self,
        workflow_hash: &str,
        tool: &str,
        workflow_id: &str,
        command: &[String],
    ) -> Result<(), StoreError> {
        let command = serde_json::to_string(command).map_err(|e| StoreError(e.to_string()))?;
        sqlx::query(
            "INSERT INTO permissions (workflow_hash, tool, workflow_id, command, granted_at)
             VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (workflow_hash, tool) DO UPDATE SET granted_at = excluded.granted_at",
        )
        .bind(workflow_hash)
        .bind(tool)
        .bind(workflow_id)
        .bind(command)
        .bind(ts(&Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(Error::from)?;
        Ok(())
    }

    async fn cache_put(&self, key: &str, output: &CachedOutput) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO step_cache (key, output, output_json, model, prompt_tokens, completion_tokens, run_id, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (key) DO UPDATE SET output = excluded.output, output_json = excluded.output_json,
               model = excluded.model, prompt_tokens = excluded.prompt_tokens,
               completion_tokens = excluded.completion_tokens, run_id = excluded.run_id,
               created_at = excluded.created_at",
        )
        .bind(key)
        .bind(&output.output)
        .bind(output.output_json.as_ref().map(ToString::to_string))
        .bind(&output.model)
        .bind(output.usage.map(|u| i64_of(u.prompt_tokens)))
        .bind(output.usage.map(|u| i64_of(u.completion_tokens)))
        .bind(&output.run_id)
        .bind(ts(&Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(Error::from)?;
        Ok(())
    }

    async fn take_event(
        &self,
        run_id: &str,
        name: &str,
        step: &str,
    ) -> Result<Option<PostedEvent>, StoreError> {
        let again = sqlx::query(
            "SELECT body, received_at FROM run_events
             WHERE run_id = ? AND name = ? AND taken_by = ? ORDER BY id LIMIT 1",
        )
        .bind(run_id)
        .bind(name)
        .bind(step)
        .fetch_optional(&self.pool)
        .await
        .map_err(Error::from)?;
        // One statement, so two steps waiting for the same name never take one event.
        let row = match again {
            Some(row) => row,
            None => match sqlx::query(
                "UPDATE run_events SET taken_by = ? WHERE id = (
                   SELECT id FROM run_events
                   WHERE run_id = ? AND name = ? AND taken_by IS NULL ORDER BY id LIMIT 1)
                 RETURNING body, received_at",
            )
            .bind(step)
            .bind(run_id)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(Error::from)?
            {
                Some(row) => row,
                None => return Ok(None),
            },
        };
        let body: String = row.get("body");
        let received: String = row.get("received_at");
        Ok(Some(PostedEvent {
            body: serde_json::from_str(&body)
                .map_err(|e| StoreError(format!("stored event `{name}` of run {run_id}: {e}")))?,
            received_at: parse_ts(&received)?,
        }))
    }
}
