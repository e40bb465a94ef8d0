//! The desktop app's operations, one method per Tauri command (the shell in `src-tauri`
//! delegates each command to one method here in one line).
//!
//! Invariants:
//! - every workflow path is relative to the workflows folder and stays inside it (no
//!   absolute paths, no `..`, no symbolic link out of it: the check is made on the path
//!   with its links resolved); a save writes a temporary file next to the target and
//!   renames it, so a failed save never leaves a half-written workflow;
//! - a run reads a `file` input only inside the workflows folder (links resolved) or when
//!   the user chose that file in the native dialog ([`Desktop::grant_file`]); the folder
//!   itself changes only to a folder chosen in the native dialog
//!   ([`Desktop::set_workflows_folder`]); the shell gives the web view no other way;
//! - runs go to the same SQLite database as the CLI (`NEXUS_DB` or the data dir), with a
//!   heartbeat, so `nexus runs list|show|pause|cancel` see and act on desktop runs;
//! - each run has one [`EventSink`] (the shell's `tauri::ipc::Channel`); its last event is
//!   always `run_finished`, also when the engine itself fails;
//! - API keys go to the [`SecretStore`] (the OS keychain) only.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use nexus_engine::human::{HumanDecision, HumanHandler, HumanRequest};
use nexus_engine::run::RunControl;
use nexus_engine::select::{Catalog, SelectionInput};
use nexus_engine::{
    Diagnostic, Engine, Event, EventSink, Locality, ModelInfo, RunOptions, RunStatus,
};
use nexus_store::{RunSummary, SqliteStore, StoredRun};
use serde::{Deserialize, Serialize};
use tokio::sync::{OnceCell, oneshot};
use tokio_util::sync::CancellationToken;

use crate::keys::{CLOUD_PROVIDERS, SecretStore, known_provider};
use crate::setup::{Partial, ProviderSettings, apply_partial, ollama};
use crate::{Error, Result};

/// The example workflows shipped with the app, offered by "New from template".
pub const TEMPLATES: &[(&str, &str)] = &[
    (
        "feature-spec.yaml",
        include_str!("../../../workflows/feature-spec.yaml"),
    ),
    (
        "document-report.yaml",
        include_str!("../../../workflows/document-report.yaml"),
    ),
    (
        "issue-triage.yaml",
        include_str!("../../../workflows/issue-triage.yaml"),
    ),
];

/// Data files the example workflows read (`document-report.yaml`'s default document),
/// by template, path relative to the workflows folder, and text. They are written next
/// to the templates when the folder is created, and by [`Desktop::use_template`].
pub const TEMPLATE_FILES: &[(&str, &str, &str)] = &[(
    "document-report.yaml",
    "data/market-notes.txt",
    include_str!("../../../workflows/data/market-notes.txt"),
)];

/// The app's remembered settings (`<config dir>/nexus/desktop.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, specta::Type)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Settings {
    /// The folder whose `*.yaml` files the app lists and saves to.
    pub workflows_folder: String,
}

/// An example workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, specta::Type)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct Template {
    /// File name (`feature-spec.yaml`).
    pub name: String,
    /// The workflow text.
    pub text: String,
}

/// What a Run button asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, specta::Type)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct RunRequest {
    /// The workflow text as in the editor (saved or not).
    pub text: String,
    /// Its file name in the workflows folder, for diagnostics and the run record.
    pub file: Option<String>,
    /// Input values by name, as typed (converted to the declared types).
    pub inputs: BTreeMap<String, String>,
    /// "Run from this step": run it and its dependants, reuse the other steps' outputs.
    pub from: Option<String>,
    /// The run to reuse outputs from (the workflow's latest run when absent).
    pub reuse: Option<String>,
    /// "Run up to this step": only it and what it needs.
    pub until: Option<String>,
    /// Bypass the step output cache.
    pub fresh: bool,
}

/// One provider in the models view.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ProviderView {
    /// `ollama`, `openai`, `embedded`.
    pub id: String,
    /// Where its models run.
    pub locality: Locality,
    /// Whether it answered the model listing (Ollama running, embedded file present).
    pub reachable: bool,
    /// Why not, when it did not.
    pub error: Option<String>,
    /// Its models (size in bytes and context length in tokens where known).
    pub models: Vec<ModelInfo>,
}

/// A model in the selector's order.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct RankedModel {
    /// `provider:model`.
    pub reference: String,
    /// Where it runs.
    pub locality: Locality,
    /// Why it is at this rank (the selector's words).
    pub reason: String,
    /// The selector's total score (higher is better).
    pub score: f64,
    /// Context window, tokens.
    pub context_length: Option<u32>,
}

/// Whether a cloud provider has a key, and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, specta::Type)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct KeyStatus {
    /// Provider id.
    pub provider: String,
    /// A key is in the OS keychain.
    pub in_keychain: bool,
    /// A key is set in the environment (it wins over the keychain).
    pub in_environment: bool,
    /// Why the keychain could not be read (no Secret Service running), if so.
    pub keychain_error: Option<String>,
}

/// Everything the Models view shows.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ModelsView {
    /// Each configured provider with its models.
    pub providers: Vec<ProviderView>,
    /// Models in the selector's order for a general step.
    pub order: Vec<RankedModel>,
    /// The Ollama daemon's address.
    pub ollama_url: String,
    /// The embedded model's file and whether it is there.
    pub embedded_path: String,
    /// Whether the embedded model's file exists.
    pub embedded_present: bool,
    /// Cloud providers' keys.
    pub keys: Vec<KeyStatus>,
}

/// One progress line of a model pull, summed over the model's layers: the daemon
/// downloads them one after another and counts each from 0, so the sums are what a
/// progress bar shows (the downloaded bytes never decrease; the total grows as layers
/// appear).
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct PullProgress {
    /// The daemon's status text (`pulling manifest`, `pulling <digest>`, `success`).
    pub status: String,
    /// Bytes of all layers seen so far, on the lines about a layer (`pulling <digest>`).
    pub total_bytes: Option<f64>,
    /// Bytes of them downloaded so far, on the same lines.
    pub completed_bytes: Option<f64>,
    /// Layers seen so far.
    pub layers: u32,
}

/// A question a run waits on, for the run panel.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct PendingQuestion {
    /// Run id.
    pub run_id: String,
    /// The question.
    pub request: HumanRequest,
}

/// One circuit breaker, for the models view and `GET /api/breakers` of `nexus serve`.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct BreakerView {
    /// `provider:model`.
    pub model: String,
    /// Its state now (`closed`, `open` with `until`, `half_open`).
    pub state: nexus_engine::breaker::BreakerState,
    /// Consecutive trips without a full close (0 when closed).
    pub trips: u32,
    /// Counted failures in a row.
    pub consecutive_failures: u32,
    /// The message of the most recent failure recorded, if any.
    pub last_failure: Option<String>,
}

/// Passes events on and says when the run is stored (its first event, `run_started` or
/// `run_resumed`, is emitted after the store committed the run) or over. A
/// `waiting_for_human` event announces its question to the panel before anyone can see
/// the event, so an answer sent on seeing it is kept even when it arrives before the
/// engine starts waiting ([`PanelHuman`]).
struct Started {
    inner: Arc<dyn EventSink>,
    started: Mutex<Option<oneshot::Sender<()>>>,
    human: Arc<PanelHuman>,
}

impl EventSink for Started {
    fn emit(&self, event: &Event) {
        if matches!(
            event,
            Event::RunStarted { .. } | Event::RunResumed { .. } | Event::RunFinished { .. }
        ) && let Some(tx) = lock(&self.started).take()
        {
            let _ = tx.send(());
        }
        match event {
            Event::WaitingForHuman {
                run_id, step_id, ..
            } => {
                lock(&self.human.questions)
                    .announced
                    .insert((run_id.clone(), step_id.clone()), None);
            }
            Event::RunFinished { run_id, .. } => {
                lock(&self.human.questions)
                    .announced
                    .retain(|(run, _), _| run != run_id);
            }
            _ => {}
        }
        self.inner.emit(event);
    }
}

struct ActiveRun {
    cancel: CancellationToken,
    control: RunControl,
}

type Answer = oneshot::Sender<HumanDecision>;

/// A question waiting in the run panel; `id` tells it apart from a later question of
/// the same step (a failed step asks again after each retry).
struct OpenQuestion {
    id: u64,
    request: HumanRequest,
    answer: Answer,
}

/// Human questions of desktop runs: each waits until the user answers in the run panel
/// ([`Desktop::answer`]) or the engine stops waiting (the approval's timeout, the run
/// cancelled: the engine drops the `decide` future); either way the question leaves the
/// panel ([`Asked`] removes it on drop).
///
/// The engine emits `waiting_for_human` (and stores the run's status) before it calls
/// `decide`; a question announced by that event but not yet asked keeps an answer given
/// in between, and `decide` returns it at once. Both maps share one lock, so an answer
/// goes to exactly one of them.
#[derive(Default)]
struct PanelHuman {
    questions: Mutex<Questions>,
    next: AtomicU64,
}

type QuestionKey = (String, String);

#[derive(Default)]
struct Questions {
    /// Questions `decide` waits on, by (run, step).
    open: HashMap<QuestionKey, OpenQuestion>,
    /// Questions announced by their event and not asked yet, with an early answer.
    announced: HashMap<QuestionKey, Option<HumanDecision>>,
}

/// Removes its question from the panel when `decide` ends, however it ends.
struct Asked<'a> {
    human: &'a PanelHuman,
    key: (String, String),
    id: u64,
}

impl Drop for Asked<'_> {
    fn drop(&mut self) {
        let mut questions = lock(&self.human.questions);
        if questions
            .open
            .get(&self.key)
            .is_some_and(|q| q.id == self.id)
        {
            questions.open.remove(&self.key);
        }
    }
}

#[async_trait]
impl HumanHandler for PanelHuman {
    async fn decide(&self, request: &HumanRequest) -> Option<HumanDecision> {
        let (tx, rx) = oneshot::channel();
        let key = (request.run_id().to_string(), request.step_id().to_string());
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        {
            let mut questions = lock(&self.questions);
            if let Some(Some(early)) = questions.announced.remove(&key) {
                return Some(early);
            }
            questions.open.insert(
                key.clone(),
                OpenQuestion {
                    id,
                    request: request.clone(),
                    answer: tx,
                },
            );
        }
        let _asked = Asked {
            human: self,
            key,
            id,
        };
        rx.await.ok()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where the app keeps things.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The settings file (`<config dir>/nexus/desktop.json`).
    pub settings_file: PathBuf,
    /// The run database.
    pub database: PathBuf,
    /// The workflows folder used until the user picks one.
    pub default_workflows: PathBuf,
    /// The Ollama daemon's address; `OLLAMA_HOST` or the default when absent.
    pub ollama_url: Option<String>,
    /// The embedded model's GGUF file (`NEXUS_EMBEDDED_MODEL`, `models/`, or
    /// `<data dir>/nexus/models`).
    pub embedded_model: PathBuf,
}

impl Paths {
    /// The standard places: settings under the OS config dir, the run database shared
    /// with the CLI ([`nexus_store::default_path`]), and `NEXUS_WORKFLOWS`, else
    /// `workflows/` in (or above) the current folder, else `<documents>/Nexus/workflows`.
    pub fn standard() -> Self {
        let config = dirs::config_dir().unwrap_or_else(std::env::temp_dir);
        let default_workflows = std::env::var_os("NEXUS_WORKFLOWS")
            .map(PathBuf::from)
            .or_else(|| {
                ["workflows", "../workflows"]
                    .iter()
                    .map(PathBuf::from)
                    .find(|p| p.is_dir())
                    .and_then(|p| p.canonicalize().ok())
            })
            .unwrap_or_else(|| {
                dirs::document_dir()
                    .or_else(dirs::home_dir)
                    .unwrap_or_else(std::env::temp_dir)
                    .join("Nexus")
                    .join("workflows")
            });
        Paths {
            settings_file: config.join("nexus").join("desktop.json"),
            database: nexus_store::default_path(),
            default_workflows,
            ollama_url: None,
            embedded_model: nexus_embedded::default_model_path(),
        }
    }
}

/// The desktop app's state and operations.
pub struct Desktop {
    pub(crate) paths: Paths,
    settings: Mutex<Settings>,
    secrets: Arc<dyn SecretStore>,
    store: OnceCell<Arc<SqliteStore>>,
    engine: tokio::sync::Mutex<Option<Arc<Engine>>>,
    runs: Arc<Mutex<HashMap<String, ActiveRun>>>,
    human: Arc<PanelHuman>,
    granted: Mutex<HashSet<PathBuf>>,
    /// How runs' callback URLs are made, once `nexus serve` set it.
    callback_urls: Mutex<Option<Arc<dyn nexus_engine::CallbackUrls>>>,
    /// Counts every launched run's events for `/metrics`.
    metrics: Arc<crate::metrics::Metrics>,
    /// Sends the workflows' `notifications:`.
    notifier: Arc<crate::notify::Notifier>,
}

impl Desktop {
    /// The app with its settings read from `paths.settings_file` (defaults when missing
    /// or unreadable: a broken settings file is replaced on the next change, never
    /// fatal). The database is opened on first use.
    pub fn new(paths: Paths, secrets: Arc<dyn SecretStore>) -> Self {
        let settings = std::fs::read_to_string(&paths.settings_file)
            .ok()
            .and_then(|t| serde_json::from_str::<Settings>(&t).ok())
            .unwrap_or_else(|| Settings {
                workflows_folder: paths.default_workflows.display().to_string(),
            });
        let metrics = Arc::new(crate::metrics::Metrics::new());
        Desktop {
            paths,
            settings: Mutex::new(settings),
            secrets,
            store: OnceCell::new(),
            engine: tokio::sync::Mutex::new(None),
            runs: Arc::new(Mutex::new(HashMap::new())),
            human: Arc::new(PanelHuman::default()),
            granted: Mutex::new(HashSet::new()),
            callback_urls: Mutex::new(None),
            metrics: Arc::clone(&metrics),
            notifier: Arc::new(crate::notify::Notifier::new(metrics)),
        }
    }

    /// Shows the workflows' desktop notifications (`notifications: [{desktop: true}]`)
    /// with `show` from now on: the desktop shell passes its notification plugin. Set
    /// once; without it they are logged.
    pub fn set_desktop_notifications(&self, show: crate::notify::ShowNotice) {
        self.notifier.set_desktop(show);
    }

    /// The current settings.
    pub fn settings(&self) -> Settings {
        lock(&self.settings).clone()
    }

    /// Makes `folder` the workflows folder and remembers it (as its canonical path). The
    /// shell passes only a folder the user chose in the native folder dialog: the web
    /// view cannot name one.
    ///
    /// # Errors
    /// [`Error::BadPath`] when `folder` is not an absolute path of an existing folder;
    /// [`Error::Io`] when the settings cannot be written.
    pub fn set_workflows_folder(&self, folder: &Path) -> Result<Settings> {
        let bad = |reason: &str| Error::BadPath {
            path: folder.display().to_string(),
            reason: reason.to_string(),
        };
        if !folder.is_absolute() {
            return Err(bad("give the absolute path of an existing folder"));
        }
        let path = folder
            .canonicalize()
            .map_err(|_| bad("the folder does not exist; create it first"))?;
        if !path.is_dir() {
            return Err(bad("this is a file, not a folder"));
        }
        let settings = Settings {
            workflows_folder: path.display().to_string(),
        };
        if let Some(dir) = self.paths.settings_file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        let text = serde_json::to_string_pretty(&settings).map_err(|e| Error::Io {
            path: self.paths.settings_file.display().to_string(),
            message: e.to_string(),
        })?;
        write_atomically(&self.paths.settings_file, &text)?;
        *lock(&self.settings) = settings.clone();
        Ok(settings)
    }

    /// Allows runs of this app to read `path` as a `file` input although it is outside
    /// the workflows folder, and returns its canonical path (the value to give the
    /// input). The shell passes only a file the user chose in the native file dialog;
    /// the grant lasts until the app quits.
    ///
    /// # Errors
    /// [`Error::BadPath`] when `path` is not an existing file.
    pub fn grant_file(&self, path: &Path) -> Result<String> {
        let real = path
            .canonicalize()
            .ok()
            .filter(|p| p.is_file())
            .ok_or_else(|| Error::BadPath {
                path: path.display().to_string(),
                reason: "not an existing file".to_string(),
            })?;
        let shown = real.display().to_string();
        lock(&self.granted).insert(real);
        Ok(shown)
    }

    fn folder(&self) -> PathBuf {
        PathBuf::from(&lock(&self.settings).workflows_folder)
    }

    /// The workflows folder with links resolved (created with the examples when
    /// missing, see [`Desktop::list_workflows`]: whatever looks at it first, the window
    /// or the triggers' scan, finds the same folder).
    pub(crate) fn root(&self) -> Result<PathBuf> {
        let folder = self.ensure_folder()?;
        folder.canonicalize().map_err(|e| io(&folder, e))
    }

    /// The `*.yaml` / `*.yml` files of the workflows folder, sorted by name (the folder
    /// is created with the example workflows in it when it does not exist yet).
    ///
    /// # Errors
    /// [`Error::Io`] when the folder cannot be read or created.
    pub fn list_workflows(&self) -> Result<Vec<String>> {
        let folder = self.ensure_folder()?;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&folder).map_err(|e| io(&folder, e))? {
            let entry = entry.map_err(|e| io(&folder, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
            if is_file && (name.ends_with(".yaml") || name.ends_with(".yml")) {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// The workflows folder, created with the example workflows and their data files
    /// when it does not exist yet.
    fn ensure_folder(&self) -> Result<PathBuf> {
        let folder = self.folder();
        if !folder.exists() {
            std::fs::create_dir_all(&folder).map_err(|e| io(&folder, e))?;
            for (name, text) in TEMPLATES {
                write_atomically(&folder.join(name), text)?;
            }
            for (_, name, text) in TEMPLATE_FILES {
                let path = folder.join(name);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
                }
                write_atomically(&path, text)?;
            }
        }
        Ok(folder)
    }

    /// The example workflows.
    pub fn templates(&self) -> Vec<Template> {
        TEMPLATES
            .iter()
            .map(|(name, text)| Template {
                name: (*name).to_string(),
                text: (*text).to_string(),
            })
            .collect()
    }

    /// The text of template `name`, after writing the data files it reads into the
    /// workflows folder where they are missing (an existing file is left as it is).
    ///
    /// # Errors
    /// [`Error::BadPath`] for an unknown template; [`Error::Io`].
    pub fn use_template(&self, name: &str) -> Result<String> {
        let (_, text) =
            TEMPLATES
                .iter()
                .find(|(n, _)| *n == name)
                .ok_or_else(|| Error::BadPath {
                    path: name.to_string(),
                    reason: format!(
                        "no such template; known: {}",
                        TEMPLATES
                            .iter()
                            .map(|(n, _)| *n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?;
        let root = self.root()?;
        for (_, file, data) in TEMPLATE_FILES.iter().filter(|(t, _, _)| *t == name) {
            let path = inside(&root, &root.join(file)).ok_or_else(|| Error::BadPath {
                path: (*file).to_string(),
                reason: "a link leads it out of the workflows folder".to_string(),
            })?;
            if !path.exists() {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
                }
                write_atomically(&path, data)?;
            }
        }
        Ok((*text).to_string())
    }

    /// The text of workflow `name` (relative to the workflows folder).
    ///
    /// # Errors
    /// [`Error::BadPath`] for a path leaving the folder; [`Error::Io`].
    pub fn read_workflow(&self, name: &str) -> Result<String> {
        let path = self.resolve(name)?;
        std::fs::read_to_string(&path).map_err(|e| io(&path, e))
    }

    /// Whether workflow `name` (relative to the workflows folder) exists as a file.
    ///
    /// # Errors
    /// [`Error::BadPath`] for a path leaving the folder or not a workflow file name.
    pub fn workflow_exists(&self, name: &str) -> Result<bool> {
        Ok(self.resolve(name)?.is_file())
    }

    /// Saves `text` as workflow `name` (relative to the workflows folder), atomically.
    /// The text is written as given, so an unchanged workflow saves to identical bytes.
    ///
    /// # Errors
    /// [`Error::BadPath`]; [`Error::Io`] (the previous file is then untouched).
    pub fn write_workflow(&self, name: &str, text: &str) -> Result<()> {
        let path = self.resolve(name)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        }
        write_atomically(&path, text)
    }

    fn resolve(&self, name: &str) -> Result<PathBuf> {
        let bad = |reason: &str| Error::BadPath {
            path: name.to_string(),
            reason: reason.to_string(),
        };
        let rel = Path::new(name);
        if name.trim().is_empty() {
            return Err(bad(
                "the name is empty; give a file name such as `my-flow.yaml`",
            ));
        }
        if !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(bad(
                "give a name inside the workflows folder (no absolute path, no `..`); change the folder in Settings to work elsewhere",
            ));
        }
        if !(name.ends_with(".yaml") || name.ends_with(".yml")) {
            return Err(bad("a workflow file name ends in `.yaml` or `.yml`"));
        }
        let root = self.root()?;
        inside(&root, &root.join(rel)).ok_or_else(|| {
            bad("a link (symlink) leads it out of the workflows folder; use the file itself, or change the folder in Settings")
        })
    }

    /// The engine's diagnostics for `text` (empty when the workflow is valid).
    pub fn validate(&self, text: &str, file: Option<&str>) -> Vec<Diagnostic> {
        self.load(text, file).err().unwrap_or_default()
    }

    /// The plan of workflow `text` (file `file` in the workflows folder), reading no
    /// sub-workflow or failure handler outside the folder.
    pub(crate) fn load(
        &self,
        text: &str,
        file: Option<&str>,
    ) -> std::result::Result<nexus_engine::Plan, Vec<Diagnostic>> {
        match self.root() {
            Ok(root) => nexus_engine::load_str_within(text, self.plan_path(file).as_deref(), &root),
            Err(e) => Err(vec![Diagnostic::new(
                nexus_engine::diagnostic::DiagnosticCode::Io,
                e.to_string(),
            )]),
        }
    }

    /// Where workflow `file` (a name in the workflows folder) lives, for the engine:
    /// its sub-workflows' paths are relative to it, so a bare name would resolve them
    /// against this process's working directory. A name that does not resolve inside
    /// the folder is placed at the folder's top by its last component.
    pub(crate) fn plan_path(&self, file: Option<&str>) -> Option<String> {
        let name = file?;
        let path = self.resolve(name).or_else(|_| {
            let last = Path::new(name).file_name().unwrap_or_default();
            self.root().map(|r| r.join(last))
        });
        Some(path.ok()?.display().to_string())
    }

    pub(crate) async fn store(&self) -> Result<Arc<SqliteStore>> {
        let store = self
            .store
            .get_or_try_init(|| async {
                SqliteStore::open(&self.paths.database).await.map(Arc::new)
            })
            .await?;
        Ok(Arc::clone(store))
    }

    /// Reads `provider`'s key from the secret store on a blocking thread.
    async fn read_key(&self, provider: &str) -> Result<Option<String>> {
        let secrets = Arc::clone(&self.secrets);
        let provider = provider.to_string();
        tokio::task::spawn_blocking(move || secrets.get(&provider))
            .await
            .map_err(|e| Error::Keychain {
                message: e.to_string(),
            })?
    }

    /// Provider settings with the keys from the keychain. A keychain that cannot be
    /// read (no Secret Service on a headless Linux session) counts as "no key": local
    /// models keep working, and the models view says why cloud keys are missing.
    async fn provider_settings(&self) -> ProviderSettings {
        let openai = match self.read_key("openai").await {
            Ok(key) => key,
            Err(e) => {
                tracing::warn!("cloud keys unavailable: {e}");
                None
            }
        };
        ProviderSettings {
            secrets: Some(Arc::new(crate::keys::ToolSecrets::new(Arc::clone(
                &self.secrets,
            )))),
            ollama_url: self.paths.ollama_url.clone(),
            openai_key: openai,
            embedded_model: Some(self.paths.embedded_model.clone()),
            providers_file: None,
        }
    }

    /// The engine, built on first use and again after a key changed (breakers and
    /// model statistics are reloaded from the database).
    pub(crate) async fn engine(&self) -> Result<Arc<Engine>> {
        let mut slot = self.engine.lock().await;
        if let Some(engine) = slot.as_ref() {
            return Ok(Arc::clone(engine));
        }
        let store = self.store().await?;
        let settings = self.provider_settings().await;
        let engine = crate::runs::engine(store, &settings, 4).await?;
        engine.set_secrets(Arc::new(crate::keys::ToolSecrets::new(Arc::clone(
            &self.secrets,
        ))));
        if let Some(urls) = lock(&self.callback_urls).clone() {
            engine.set_callback_urls(urls);
        }
        *slot = Some(Arc::clone(&engine));
        Ok(engine)
    }

    /// The engine if one was made (a run, a model list), without making one.
    pub(crate) async fn engine_if_started(&self) -> Option<Arc<Engine>> {
        self.engine.lock().await.clone()
    }

    /// Sets how runs' callback URLs are made, for the engine now and any made later.
    pub(crate) async fn set_callback_urls(
        &self,
        urls: Arc<dyn nexus_engine::CallbackUrls>,
    ) -> Result<()> {
        *lock(&self.callback_urls) = Some(Arc::clone(&urls));
        if let Some(engine) = self.engine_if_started().await {
            engine.set_callback_urls(urls);
        }
        Ok(())
    }

    /// Starts a run of `request.text` in the background and returns its id as soon as the
    /// run is stored. Every event of the run goes to `sink`, ending with `run_finished`.
    ///
    /// # Errors
    /// [`Error::InvalidWorkflow`], [`Error::InvalidInputs`], [`Error::NotActive`] (a
    /// `from`/`until` step that does not exist, nothing to reuse), [`Error::Store`],
    /// [`Error::Config`]. Failures of steps are not errors here: they are events.
    pub async fn start_run(&self, request: RunRequest, sink: Arc<dyn EventSink>) -> Result<String> {
        self.start_run_by(request, None, sink).await
    }

    /// [`Desktop::start_run`] for a run a trigger starts: `trigger` is stored with the
    /// run (`None`: a person).
    ///
    /// # Errors
    /// As [`Desktop::start_run`].
    pub async fn start_run_by(
        &self,
        request: RunRequest,
        trigger: Option<nexus_engine::store::RunTrigger>,
        sink: Arc<dyn EventSink>,
    ) -> Result<String> {
        let plan = self
            .load(&request.text, request.file.as_deref())
            .map_err(|diagnostics| Error::InvalidWorkflow { diagnostics })?;
        let inputs = self.inputs(&plan, request.file.as_deref(), &request.inputs)?;
        let store = self.store().await?;
        let engine = self.engine().await?;
        let mut options = RunOptions {
            use_cache: !request.fresh,
            trigger,
            ..RunOptions::default()
        };
        let partial = Partial {
            from: request.from,
            reuse: request.reuse,
            until: request.until,
        };
        apply_partial(&store, &plan, &partial, &mut options).await?;
        self.launch(engine, store, plan, inputs, options, sink)
            .await
    }

    /// Continues run `run_id` (id or prefix), the way `nexus resume` does and from the
    /// same code ([`crate::runs::prepare_resume`]): a run of this app that is paused goes
    /// on; a run whose process died (the app or a `nexus run` that quit mid-run) is
    /// continued here, keeping its completed steps, with its events going to `sink`.
    /// Returns the run's full id.
    ///
    /// # Errors
    /// [`Error::UnknownRun`]; [`Error::NotActive`] for a finished run, or one another
    /// live process runs (it is asked to resume, as `nexus resume` does, but its events
    /// do not come here); [`Error::InvalidWorkflow`]; [`Error::Store`].
    pub async fn resume_run(&self, run_id: &str, sink: Arc<dyn EventSink>) -> Result<String> {
        let store = self.store().await?;
        let run = store.get_run(run_id).await?;
        crate::runs::ensure_unfinished(&run)?;
        if self.active(&run.run_id, |r| r.control.resume()).is_ok() {
            return Ok(run.run_id);
        }
        let root = self.root()?;
        match crate::runs::prepare_resume(&store, &run.run_id, Some(&root)).await? {
            crate::runs::Resumption::Asked { run_id } => Err(Error::NotActive {
                message: format!(
                    "run {run_id} is running in another process; it was asked to resume, follow it there"
                ),
            }),
            crate::runs::Resumption::Continue(run) => {
                let engine = self.engine().await?;
                self.launch(engine, store, run.plan, run.inputs, run.options, sink)
                    .await
            }
        }
    }

    /// Runs `plan` in the background with the panel's human questions, a heartbeat and
    /// control requests, and returns its id once the run is stored.
    async fn launch(
        &self,
        engine: Arc<Engine>,
        store: Arc<SqliteStore>,
        plan: nexus_engine::Plan,
        inputs: serde_json::Map<String, serde_json::Value>,
        mut options: RunOptions,
        sink: Arc<dyn EventSink>,
    ) -> Result<String> {
        let run_id = options
            .run_id
            .get_or_insert_with(|| uuid::Uuid::now_v7().to_string())
            .clone();
        let (stored_tx, stored_rx) = oneshot::channel();
        let sink: Arc<dyn EventSink> = Arc::new(Started {
            inner: sink,
            started: Mutex::new(Some(stored_tx)),
            human: Arc::clone(&self.human),
        });
        options.sinks.push(Arc::clone(&sink));
        self.metrics.run_launched(&run_id, &plan.workflow.id);
        options
            .sinks
            .push(Arc::clone(&self.metrics) as Arc<dyn EventSink>);
        self.notifier.attach(&mut options, &run_id, &plan.workflow);
        options.human = Some(Arc::clone(&self.human) as Arc<dyn HumanHandler>);
        lock(&self.runs).insert(
            run_id.clone(),
            ActiveRun {
                cancel: options.cancel.clone(),
                control: options.control.clone(),
            },
        );
        let runs = Arc::clone(&self.runs);
        let id = run_id.clone();
        let plan = Arc::new(plan);
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let result = crate::runs::execute(&engine, &store, plan, inputs, options).await;
            lock(&runs).remove(&id);
            if let Err(e) = result {
                tracing::error!(run = %id, "the run could not be recorded: {e}");
                sink.emit(&Event::RunFinished {
                    run_id: id,
                    status: RunStatus::Failed,
                    duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                });
            }
        });
        // Returns once the run is in the database (or over), so the history lists it.
        let _ = stored_rx.await;
        Ok(run_id)
    }

    /// The run's inputs, `file` inputs relative to the workflow's folder (the workflows
    /// folder for an unsaved workflow) and read only inside the workflows folder or when
    /// the user chose the file in the dialog ([`Desktop::grant_file`]); links are
    /// followed before the check.
    fn inputs(
        &self,
        plan: &nexus_engine::Plan,
        file: Option<&str>,
        given: &BTreeMap<String, String>,
    ) -> Result<serde_json::Map<String, serde_json::Value>> {
        let root = self.root()?;
        let base = match file {
            Some(name) => self
                .resolve(name)?
                .parent()
                .map_or_else(|| root.clone(), Path::to_path_buf),
            None => root.clone(),
        };
        let granted = lock(&self.granted).clone();
        let read = |path: &Path| -> std::result::Result<String, String> {
            let real = path.canonicalize().map_err(|e| e.to_string())?;
            if real.starts_with(&root) || granted.contains(&real) {
                std::fs::read_to_string(&real).map_err(|e| e.to_string())
            } else {
                Err(format!(
                    "it is outside the workflows folder `{}`; choose it with the input's Browse button to use it",
                    root.display()
                ))
            }
        };
        let files = nexus_engine::FileInputs {
            base: &base,
            read: &read,
        };
        nexus_engine::resolve_inputs_in(plan, given, &files)
            .map_err(|diagnostics| Error::InvalidInputs { diagnostics })
    }

    fn active<T>(&self, run_id: &str, f: impl FnOnce(&ActiveRun) -> T) -> Result<T> {
        lock(&self.runs)
            .get(run_id)
            .map(f)
            .ok_or_else(|| Error::NotActive {
                message: format!("run {run_id} is not running in this app"),
            })
    }

    /// Cancels a running run: steps in flight are stopped, nothing new starts; the run
    /// ends `cancelled`.
    ///
    /// # Errors
    /// [`Error::NotActive`] when the run is not running here.
    pub fn cancel_run(&self, run_id: &str) -> Result<()> {
        self.active(run_id, |r| r.cancel.cancel())
    }

    /// Pauses (`true`) or resumes (`false`) a running run.
    ///
    /// # Errors
    /// [`Error::NotActive`].
    pub fn pause_run(&self, run_id: &str, pause: bool) -> Result<()> {
        self.active(run_id, |r| {
            if pause {
                r.control.pause();
            } else {
                r.control.resume();
            }
        })
    }

    /// Leaves `request` for run `run_id` (id or prefix): obeyed at once when the run
    /// runs in this process, else through the database by the process that runs it (a
    /// `nexus run`, the desktop app), as `nexus pause|resume|cancel` does. Returns the
    /// run's full id.
    ///
    /// # Errors
    /// [`Error::UnknownRun`]; [`Error::NotActive`] when the run has finished or no process
    /// runs it (interrupted: continue it with [`Desktop::resume_run`]); [`Error::Store`].
    pub async fn control_run(&self, run_id: &str, request: crate::runs::Control) -> Result<String> {
        let store = self.store().await?;
        let run = store.get_run(run_id).await?;
        crate::runs::ensure_unfinished(&run)?;
        let here = self.active(&run.run_id, |r| match request {
            crate::runs::Control::Pause => r.control.pause(),
            crate::runs::Control::Resume => r.control.resume(),
            crate::runs::Control::Cancel => r.cancel.cancel(),
        });
        if here.is_ok() {
            return Ok(run.run_id);
        }
        crate::runs::request_control(&store, &run.run_id, request).await
    }

    /// Every known circuit breaker with its state now, sorted by `provider:model`.
    ///
    /// # Errors
    /// [`Error::Store`], [`Error::Config`].
    pub async fn breakers(&self) -> Result<Vec<BreakerView>> {
        let engine = self.engine().await?;
        let states = engine.breaker_states().await.map_err(|e| Error::Store {
            message: e.to_string(),
        })?;
        Ok(states
            .into_iter()
            .map(|(model, state, snap)| BreakerView {
                model,
                state,
                trips: snap.trips,
                consecutive_failures: snap.consecutive_failures,
                last_failure: snap.last_failure,
            })
            .collect())
    }

    /// The metrics of the runs this app started, in the Prometheus text format 0.0.4
    /// (`crate::metrics::CONTENT_TYPE`), with the breakers' states read now.
    ///
    /// # Errors
    /// [`Error::Store`], [`Error::Config`] (reading the breakers); [`Error::Internal`]
    /// if the encoder fails (it writes to a `String`, which does not).
    pub async fn metrics_text(&self) -> Result<String> {
        let breakers: Vec<crate::metrics::BreakerGauge> = self
            .breakers()
            .await?
            .into_iter()
            .map(|b| crate::metrics::BreakerGauge {
                model: b.model,
                state: b.state,
            })
            .collect();
        let open = lock(&self.human.questions).open.len();
        self.metrics
            .encode(open, &breakers)
            .map_err(|e| Error::Internal {
                message: format!("the metrics could not be encoded: {e}"),
            })
    }

    /// The questions runs of this app wait on.
    pub fn pending_questions(&self) -> Vec<PendingQuestion> {
        lock(&self.human.questions)
            .open
            .iter()
            .map(|((run_id, _), q)| PendingQuestion {
                run_id: run_id.clone(),
                request: q.request.clone(),
            })
            .collect()
    }

    /// Answers the question step `step_id` of run `run_id` waits on (also when the
    /// run's `waiting_for_human` event was seen but the engine is not waiting yet).
    ///
    /// # Errors
    /// [`Error::NotActive`] when no such question is open.
    pub fn answer(&self, run_id: &str, step_id: &str, decision: HumanDecision) -> Result<()> {
        let key = (run_id.to_string(), step_id.to_string());
        let mut questions = lock(&self.human.questions);
        let sent = match questions.open.remove(&key) {
            Some(q) => q.answer.send(decision).is_ok(),
            // Announced by its event, not asked yet: `decide` takes this answer.
            None => match questions.announced.get_mut(&key) {
                Some(slot @ None) => {
                    *slot = Some(decision);
                    true
                }
                _ => false,
            },
        };
        drop(questions);
        match sent {
            true => Ok(()),
            false => Err(Error::NotActive {
                message: format!("step {step_id} of run {run_id} is not waiting for an answer"),
            }),
        }
    }

    /// The latest `limit` runs (CLI and desktop), newest first.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn list_runs(&self, limit: u32) -> Result<Vec<RunSummary>> {
        Ok(self.store().await?.list_runs(limit).await?)
    }

    /// The latest `limit` runs that `filter` lets through (e.g. those a trigger
    /// started), newest first.
    ///
    /// # Errors
    /// [`Error::Store`].
    pub async fn list_runs_where(
        &self,
        limit: u32,
        filter: &nexus_store::RunFilter,
    ) -> Result<Vec<RunSummary>> {
        Ok(self.store().await?.list_runs_where(limit, filter).await?)
    }

    /// Everything stored about a run (id or unique prefix): steps with input, output,
    /// model and why, tokens, attempts; its events; the workflow as run.
    ///
    /// # Errors
    /// [`Error::UnknownRun`], [`Error::Store`].
    pub async fn get_run(&self, run_id: &str) -> Result<StoredRun> {
        Ok(self.store().await?.get_run(run_id).await?)
    }

    /// Providers, their models, the selector's order, the embedded model and keys.
    ///
    /// # Errors
    /// [`Error::Store`], [`Error::Config`], [`Error::Keychain`].
    pub async fn models(&self) -> Result<ModelsView> {
        let engine = self.engine().await?;
        let catalog = Catalog::discover(engine.providers(), Duration::from_secs(3)).await;
        let selection = engine.rank(
            &SelectionInput {
                max_tokens: nexus_engine::plan::DEFAULT_MAX_TOKENS,
                ..SelectionInput::default()
            },
            &catalog,
        );
        let order = selection
            .candidates
            .iter()
            .map(|c| RankedModel {
                reference: c.reference.clone(),
                locality: c.locality(),
                reason: c.reason.clone(),
                score: c.score.total,
                context_length: c.context_window,
            })
            .collect();
        let providers = catalog
            .providers
            .iter()
            .map(|s| ProviderView {
                id: s.provider.id().to_string(),
                locality: s.provider.locality(),
                reachable: s.models.is_ok(),
                error: s.models.as_ref().err().map(|e| e.message.clone()),
                models: s.models.clone().unwrap_or_default(),
            })
            .collect();
        let mut keys = Vec::new();
        for provider in CLOUD_PROVIDERS {
            let stored = self.read_key(provider).await;
            keys.push(KeyStatus {
                provider: (*provider).to_string(),
                in_keychain: matches!(stored, Ok(Some(_))),
                in_environment: ["NEXUS_OPENAI_API_KEY", "OPENAI_API_KEY"]
                    .iter()
                    .any(|v| std::env::var(v).is_ok_and(|k| !k.trim().is_empty())),
                keychain_error: stored.err().map(|e| e.to_string()),
            });
        }
        let embedded = &self.paths.embedded_model;
        Ok(ModelsView {
            providers,
            order,
            ollama_url: ollama(self.paths.ollama_url.as_deref())?.url().to_string(),
            embedded_present: embedded.is_file(),
            embedded_path: embedded.display().to_string(),
            keys,
        })
    }

    /// Pulls `model` into Ollama, passing each progress line to `progress`; returns after
    /// the daemon said `success`. The models list shows it afterwards.
    ///
    /// # Errors
    /// [`Error::Provider`] (`unavailable` when Ollama is not running, `model_not_found`
    /// for an unknown name), [`Error::Config`].
    pub async fn pull_model(
        &self,
        model: &str,
        progress: impl Fn(PullProgress) + Send,
    ) -> Result<()> {
        let mut stream = ollama(self.paths.ollama_url.as_deref())?
            .pull(model.trim())
            .await?;
        while let Some(line) = stream.next().await {
            let line = line?;
            // Sizes as f64: JSON numbers in the UI (a model is far below 2^53 bytes).
            let layer = line.digest.is_some();
            progress(PullProgress {
                status: line.status,
                total_bytes: layer.then_some(line.total_bytes as f64),
                completed_bytes: layer.then_some(line.completed_bytes as f64),
                layers: u32::try_from(line.layers).unwrap_or(u32::MAX),
            });
        }
        Ok(())
    }

    /// Stores `key` for cloud `provider` in the keychain; the next run uses it.
    ///
    /// # Errors
    /// [`Error::NotActive`] for an unknown provider, [`Error::Keychain`].
    pub async fn set_api_key(&self, provider: &str, key: &str) -> Result<()> {
        known_provider(provider)?;
        let key = key.trim().to_string();
        if key.is_empty() {
            return self.delete_api_key(provider).await;
        }
        self.with_secrets(provider, move |s, p| s.set(&p, &key))
            .await
    }

    /// Removes the key of cloud `provider` from the keychain.
    ///
    /// # Errors
    /// As [`Desktop::set_api_key`].
    pub async fn delete_api_key(&self, provider: &str) -> Result<()> {
        known_provider(provider)?;
        self.with_secrets(provider, |s, p| s.delete(&p)).await
    }

    async fn with_secrets(
        &self,
        provider: &str,
        f: impl FnOnce(&dyn SecretStore, String) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let secrets = Arc::clone(&self.secrets);
        let provider = provider.to_string();
        tokio::task::spawn_blocking(move || f(secrets.as_ref(), provider))
            .await
            .map_err(|e| Error::Keychain {
                message: e.to_string(),
            })??;
        // Providers are rebuilt with the new key on the next use.
        *self.engine.lock().await = None;
        Ok(())
    }
}

/// `path` with every link resolved as far as it exists (a missing tail is kept as
/// given), when that stays inside `root` (a canonical folder); `None` when a link leads
/// out of it.
fn inside(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut tail = Vec::new();
    let mut at = path;
    let real = loop {
        match at.canonicalize() {
            Ok(real) => break real,
            Err(_) => {
                tail.push(at.file_name()?);
                at = at.parent()?;
            }
        }
    };
    let full = tail.iter().rev().fold(real, |p, name| p.join(name));
    full.starts_with(root).then_some(full)
}

fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Writes `text` to `path` through a temporary file in the same folder and a rename, so
/// readers see the old or the new content, never a mix.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io(dir, e))?;
    tmp.write_all(text.as_bytes()).map_err(|e| io(path, e))?;
    tmp.as_file().sync_all().map_err(|e| io(path, e))?;
    tmp.persist(path).map_err(|e| io(path, e.error))?;
    Ok(())
}
