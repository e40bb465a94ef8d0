//! Triggers: what starts a run besides a person. [`Triggers`] scans the workflows
//! folder, arms the `cron` and `file` triggers of every valid workflow (and keeps the
//! `webhook` ones for `nexus serve` to look up, see [`Triggers::webhook`]), re-arms when
//! a workflow file changes, and starts runs through [`Desktop::start_run_by`], which
//! stores the trigger with the run.
//!
//! Invariants: a workflow that does not validate arms nothing (its first error is listed
//! in [`Triggers::list`] when it declares triggers); a webhook path belongs to the first
//! workflow file (by name) that declares it, the others are listed with the clash; the
//! overlap policy of a trigger counts only the runs that trigger started, and survives a
//! re-arm; everything a trigger does is broadcast as a [`TriggerEvent`] (bounded: a slow
//! listener loses the oldest events, never blocks a trigger).

mod clock;
pub mod cron;
mod file;
mod host;
mod scan;
mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use nexus_engine::store::RunTrigger;
use nexus_engine::workflow::{Overlap, Trigger};
use nexus_engine::{Event, EventSink, RunStatus};
use serde::Serialize;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

pub use clock::{Clock, ManualClock, RECHECK, SystemClock};
pub use host::AppTriggers;
pub use webhook::{HookCall, HookError, HookStarted, Webhook, is_loopback_host};

use crate::{Desktop, RunRequest};

/// Fires of one trigger waiting behind a running one (`overlap: queue`); more are
/// skipped.
pub const MAX_QUEUED: usize = 100;

/// How long after the last change to the workflows folder it is scanned again, ms.
const RESCAN_DEBOUNCE_MS: u64 = 300;

/// Something a trigger did, for logs, the app's notifications and tests.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TriggerEvent {
    /// The trigger is armed.
    Armed {
        /// The workflow file, relative to the workflows folder.
        file: String,
        /// The workflow's id.
        workflow_id: String,
        /// The trigger's name.
        trigger: String,
        /// `cron`, `file` or `webhook`.
        kind: String,
        /// A cron trigger's next fire, RFC 3339.
        next_fire: Option<String>,
    },
    /// A run was started.
    Fired {
        /// The workflow's id.
        workflow_id: String,
        /// The trigger's name.
        trigger: String,
        /// The scheduled time of a cron fire, RFC 3339.
        fire_at: Option<String>,
        /// The run started.
        run_id: String,
    },
    /// A fire did not start a run.
    Skipped {
        /// The workflow's id.
        workflow_id: String,
        /// The trigger's name.
        trigger: String,
        /// The scheduled time of a cron fire, RFC 3339.
        fire_at: Option<String>,
        /// Why (overlap policy, missed fires, a full queue).
        reason: String,
    },
    /// A cron trigger handled everything due and sleeps until its next fire.
    Waiting {
        /// The workflow's id.
        workflow_id: String,
        /// The trigger's name.
        trigger: String,
        /// The clock's time when it decided, RFC 3339.
        now: String,
        /// Its next fire, RFC 3339 (`None`: the pattern never fires again).
        next_fire: Option<String>,
    },
    /// A trigger cannot work, or its run could not start.
    Problem {
        /// The workflow file.
        file: String,
        /// The trigger's name, when the problem is one trigger's.
        trigger: Option<String>,
        /// What is wrong and what would fix it.
        message: String,
    },
}

/// One trigger as `GET /api/triggers` and the app list it.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct TriggerView {
    /// The workflow file, relative to the workflows folder.
    pub file: String,
    /// The workflow's id (`None`: the file does not validate).
    pub workflow_id: Option<String>,
    /// The trigger's name.
    pub name: Option<String>,
    /// `cron`, `webhook`, `file` or `manual`.
    pub kind: Option<String>,
    /// What it reacts to: the schedule and zone, `POST /hooks/<path>`, the watched paths.
    pub detail: String,
    /// Whether this process runs it (webhooks: only `nexus serve`).
    pub armed: bool,
    /// A cron trigger's next fire, RFC 3339.
    pub next_fire: Option<String>,
    /// A cron trigger's last fire, RFC 3339.
    pub last_fire: Option<String>,
    /// Why it is not armed.
    pub problem: Option<String>,
}

/// Which kinds this process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hosting {
    /// Serve webhooks (`nexus serve`); the desktop app runs `cron` and `file` only.
    pub webhooks: bool,
}

/// Makes the event sink of a run a trigger starts, and is told the run's id once it is
/// stored (`nexus serve` keeps the events for `GET /api/runs/{id}/events`).
pub type SinkFactory = Arc<dyn Fn() -> RunSink + Send + Sync>;

/// The event sink of one triggered run and the callback told its id once it is stored.
pub type RunSink = (Arc<dyn EventSink>, Box<dyn FnOnce(&str) + Send>);

/// Next and last fire of one cron trigger (UTC), `None` when not known.
type FireTimes = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// One trigger of one valid workflow file.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The file, relative to the workflows folder.
    pub file: String,
    /// The file's folder (file triggers' paths are relative to it).
    pub folder: std::path::PathBuf,
    /// The workflow's text as scanned (the run uses it).
    pub text: String,
    pub workflow_id: String,
    /// The names of the workflow's declared inputs (a webhook body's fields must be
    /// among them), read when the file was scanned so a call does not parse it again.
    pub inputs: std::collections::BTreeSet<String>,
    pub name: String,
    pub trigger: Trigger,
}

/// The running and queued runs of one trigger, for its overlap policy.
#[derive(Default)]
struct Slot {
    running: AtomicUsize,
    queued: AtomicUsize,
    queue: tokio::sync::Mutex<()>,
}

/// The finished runs seen by the sinks of triggered runs (the last 256), so a fire can
/// wait for its run's end.
struct Finished {
    done: watch::Sender<VecDeque256>,
}

type VecDeque256 = std::collections::VecDeque<(String, RunStatus)>;

impl Finished {
    fn record(&self, run_id: &str, status: RunStatus) {
        self.done.send_modify(|d| {
            if d.len() == 256 {
                d.pop_front();
            }
            d.push_back((run_id.to_string(), status));
        });
    }

    async fn wait(&self, run_id: &str) -> RunStatus {
        let mut rx = self.done.subscribe();
        let mut status = RunStatus::Failed;
        let _ = rx
            .wait_for(|d| {
                d.iter().find(|(id, _)| id == run_id).is_some_and(|(_, s)| {
                    status = *s;
                    true
                })
            })
            .await;
        status
    }
}

/// A sink that tells [`Finished`] about `run_finished` and passes everything on.
struct FinishSink {
    inner: Arc<dyn EventSink>,
    finished: Arc<Finished>,
}

impl EventSink for FinishSink {
    fn emit(&self, event: &Event) {
        if let Event::RunFinished { run_id, status, .. } = event {
            self.finished.record(run_id, *status);
        }
        self.inner.emit(event);
    }
}

/// A sink that drops everything.
struct NoSink;

impl EventSink for NoSink {
    fn emit(&self, _: &Event) {}
}

#[derive(Default)]
struct Armed {
    /// Cancels the tasks of this generation of the folder's triggers.
    cancel: CancellationToken,
    views: Vec<TriggerView>,
    webhooks: HashMap<String, Target>,
    /// Keeps the file watchers alive.
    watchers: Vec<file::Watcher>,
}

pub(crate) struct Inner {
    desktop: Arc<Desktop>,
    clock: Arc<dyn Clock>,
    hosting: Hosting,
    sinks: Option<SinkFactory>,
    events: broadcast::Sender<TriggerEvent>,
    armed: Mutex<Armed>,
    slots: Mutex<HashMap<(String, String), Arc<Slot>>>,
    finished: Arc<Finished>,
    /// Next and last fire of the cron triggers, by (workflow id, trigger name).
    times: Mutex<HashMap<(String, String), FireTimes>>,
    limits: webhook::Limits,
    stop: CancellationToken,
    /// How many scans of the folder finished.
    scans: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The triggers of the workflows folder, armed until dropped or [`Triggers::stop`].
pub struct Triggers {
    inner: Arc<Inner>,
}

impl Triggers {
    /// Scans `desktop`'s workflows folder, arms its triggers and watches the folder to
    /// re-arm on changes. Needs a tokio runtime.
    pub fn start(
        desktop: Arc<Desktop>,
        clock: Arc<dyn Clock>,
        hosting: Hosting,
        sinks: Option<SinkFactory>,
    ) -> Triggers {
        let inner = Arc::new(Inner {
            desktop,
            clock,
            hosting,
            sinks,
            events: broadcast::channel(1024).0,
            armed: Mutex::new(Armed::default()),
            slots: Mutex::new(HashMap::new()),
            finished: Arc::new(Finished {
                done: watch::Sender::new(VecDeque256::new()),
            }),
            times: Mutex::new(HashMap::new()),
            limits: webhook::Limits::default(),
            stop: CancellationToken::new(),
            scans: watch::Sender::new(0),
        });
        let triggers = Triggers { inner };
        triggers.spawn_rescans();
        triggers
    }

    /// Returns once the folder was scanned and its triggers armed the first time (each
    /// cron trigger then arms on its own task).
    pub async fn first_scan(&self) {
        self.inner.first_scan().await;
    }

    /// Receives every [`TriggerEvent`] from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<TriggerEvent> {
        self.inner.events.subscribe()
    }

    /// Every trigger of the workflows folder, by file, with the cron triggers' next and
    /// last fires and what keeps a trigger from being armed.
    pub fn list(&self) -> Vec<TriggerView> {
        let times = lock(&self.inner.times).clone();
        let mut views = lock(&self.inner.armed).views.clone();
        for v in &mut views {
            if let (Some(id), Some(name)) = (&v.workflow_id, &v.name)
                && let Some((next, last)) = times.get(&(id.clone(), name.clone()))
            {
                v.next_fire = next.as_ref().map(rfc3339);
                v.last_fire = last.as_ref().map(rfc3339);
            }
        }
        views
    }

    /// Scans the workflows folder again now and re-arms (the folder watcher does this
    /// on its own; the app calls it after changing the folder).
    pub fn rescan(&self) {
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move { inner.rescan().await });
    }

    /// Disarms every trigger; runs already started go on.
    pub fn stop(&self) {
        self.inner.stop.cancel();
        // Dropping the watchers ends their tasks, which hold the state.
        let old = std::mem::take(&mut *lock(&self.inner.armed));
        old.cancel.cancel();
    }

    fn spawn_rescans(&self) {
        let inner = Arc::clone(&self.inner);
        tokio::spawn(async move {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
            let _watcher = match inner.desktop.root() {
                Ok(root) => file::watch_folder(&root, Duration::from_millis(RESCAN_DEBOUNCE_MS), tx)
                    .map_err(|message| {
                        inner.emit(TriggerEvent::Problem {
                            file: root.display().to_string(),
                            trigger: None,
                            message: format!("the workflows folder is not watched, so changes are armed only at the next start: {message}"),
                        });
                    })
                    .ok(),
                Err(_) => None,
            };
            inner.rescan().await;
            loop {
                tokio::select! {
                biased;
                        () = inner.stop.cancelled() => return,
                        got = rx.recv() => {
                            if got.is_none() { return; }
                            inner.rescan().await;
                        }
                    }
            }
        });
    }
}

impl Drop for Triggers {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Inner {
    /// Returns once the folder was scanned the first time.
    async fn first_scan(&self) {
        let mut rx = self.scans.subscribe();
        let _ = rx.wait_for(|n| *n >= 1).await;
    }

    pub(crate) fn emit(&self, event: TriggerEvent) {
        match &event {
            TriggerEvent::Problem { file, message, .. } => {
                tracing::warn!(file = %file, "trigger: {message}");
            }
            other => tracing::info!("trigger: {other:?}"),
        }
        let _ = self.events.send(event);
    }

    pub(crate) fn problem(&self, target: &Target, message: String) {
        self.emit(TriggerEvent::Problem {
            file: target.file.clone(),
            trigger: Some(target.name.clone()),
            message,
        });
    }

    fn set_times(&self, target: &Target, next: Option<DateTime<Utc>>, last: Option<DateTime<Utc>>) {
        lock(&self.times).insert(
            (target.workflow_id.clone(), target.name.clone()),
            (next, last),
        );
    }

    /// Scans the folder and replaces the armed triggers with what it holds now.
    async fn rescan(self: &Arc<Self>) {
        if self.stop.is_cancelled() {
            return;
        }
        let desktop = Arc::clone(&self.desktop);
        let scanned = match tokio::task::spawn_blocking(move || scan::scan(&desktop)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("the workflows folder scan failed: {e}");
                self.scans.send_modify(|n| *n += 1);
                return;
            }
        };
        // Stopped while it scanned (the app chose another folder): arm nothing.
        if self.stop.is_cancelled() {
            self.scans.send_modify(|n| *n += 1);
            return;
        }
        for p in &scanned.problems {
            self.emit(TriggerEvent::Problem {
                file: p.file.clone(),
                trigger: None,
                message: p.problem.clone().unwrap_or_default(),
            });
        }
        let cancel = self.stop.child_token();
        let mut armed = Armed {
            cancel: cancel.clone(),
            views: scanned.problems,
            webhooks: HashMap::new(),
            watchers: Vec::new(),
        };
        for target in scanned.targets {
            let mut view = scan::view_of(&target);
            if !target.trigger.enabled() {
                view.detail.push_str(" (enabled: false)");
                armed.views.push(view);
                continue;
            }
            match &target.trigger {
                Trigger::Cron(cron) => {
                    view.armed = true;
                    let task = cron::run(
                        Arc::clone(self),
                        target.clone(),
                        cron.clone(),
                        cancel.child_token(),
                    );
                    tokio::spawn(task);
                }
                Trigger::File(f) => match file::arm(self, &target, f) {
                    Ok(w) => {
                        view.armed = true;
                        armed.watchers.push(w);
                    }
                    Err(message) => view.problem = Some(message),
                },
                Trigger::Webhook(w) if self.hosting.webhooks => {
                    if let Some(other) = armed.webhooks.get(&w.path) {
                        view.problem = Some(format!(
                            "`/hooks/{}` is already the webhook of {}; give this one another `path`",
                            w.path, other.file
                        ));
                    } else {
                        view.armed = true;
                        armed.webhooks.insert(w.path.clone(), target.clone());
                        self.emit(TriggerEvent::Armed {
                            file: target.file.clone(),
                            workflow_id: target.workflow_id.clone(),
                            trigger: target.name.clone(),
                            kind: "webhook".into(),
                            next_fire: None,
                        });
                    }
                }
                Trigger::Webhook(_) => {
                    view.problem = Some(
                        "webhooks are served by `nexus serve`; start it to receive this one".into(),
                    );
                }
                Trigger::Manual(_) => view.armed = true,
            }
            armed.views.push(view);
        }
        {
            // Checked under the lock `stop` takes after cancelling: a generation stopped
            // while it armed keeps nothing armed.
            let mut slot = lock(&self.armed);
            let old = if self.stop.is_cancelled() {
                armed
            } else {
                std::mem::replace(&mut *slot, armed)
            };
            old.cancel.cancel();
        }
        self.scans.send_modify(|n| *n += 1);
    }

    fn slot(&self, target: &Target) -> Arc<Slot> {
        let key = (target.workflow_id.clone(), target.name.clone());
        Arc::clone(lock(&self.slots).entry(key).or_default())
    }

    /// Starts a run for a fire of `target` under its overlap policy (cron: the
    /// trigger's `overlap`; the other kinds: `allow`). Returns once the run started, was
    /// queued or was skipped.
    /// `catching_up`: one of several missed fires started together, which run one
    /// after another (`queue`) whatever the policy, or `catch_up: all` would be lost to
    /// `skip` and be a burst under `allow`.
    pub(crate) async fn fire(
        self: &Arc<Self>,
        target: &Target,
        fire_at: Option<DateTime<Utc>>,
        inputs: BTreeMap<String, String>,
        catching_up: bool,
    ) {
        let overlap = match &target.trigger {
            _ if catching_up => Overlap::Queue,
            Trigger::Cron(c) => c.overlap,
            _ => Overlap::Allow,
        };
        let slot = self.slot(target);
        let skipped = |reason: &str| TriggerEvent::Skipped {
            workflow_id: target.workflow_id.clone(),
            trigger: target.name.clone(),
            fire_at: fire_at.as_ref().map(rfc3339),
            reason: reason.to_string(),
        };
        match overlap {
            Overlap::Skip if slot.running.load(Ordering::SeqCst) > 0 => {
                self.emit(skipped(
                    "a run this trigger started is still going (overlap: skip)",
                ));
            }
            Overlap::Queue => {
                if slot.queued.load(Ordering::SeqCst) >= MAX_QUEUED {
                    self.emit(skipped(&format!(
                        "{MAX_QUEUED} fires already wait behind the running one (overlap: queue)"
                    )));
                    return;
                }
                slot.queued.fetch_add(1, Ordering::SeqCst);
                let (inner, target) = (Arc::clone(self), target.clone());
                tokio::spawn(async move {
                    let _turn = slot.queue.lock().await;
                    slot.queued.fetch_sub(1, Ordering::SeqCst);
                    if let Some(run_id) = inner.start(&target, &slot, fire_at, inputs).await {
                        inner.finished.wait(&run_id).await;
                    }
                });
            }
            Overlap::Skip | Overlap::Allow => {
                let _ = self.start(target, &slot, fire_at, inputs).await;
            }
        }
    }

    /// Starts the run and counts it in `slot` until it finishes; `None` when it could
    /// not start (the problem is broadcast).
    async fn start(
        self: &Arc<Self>,
        target: &Target,
        slot: &Arc<Slot>,
        fire_at: Option<DateTime<Utc>>,
        inputs: BTreeMap<String, String>,
    ) -> Option<String> {
        match self.start_checked(target, slot, fire_at, inputs).await {
            Ok(run_id) => Some(run_id),
            Err(e) => {
                self.problem(target, format!("the run could not start: {e}"));
                None
            }
        }
    }

    /// [`Inner::start`], returning why a run could not start.
    async fn start_checked(
        self: &Arc<Self>,
        target: &Target,
        slot: &Arc<Slot>,
        fire_at: Option<DateTime<Utc>>,
        inputs: BTreeMap<String, String>,
    ) -> crate::Result<String> {
        let request = RunRequest {
            text: target.text.clone(),
            file: Some(target.file.clone()),
            inputs,
            ..RunRequest::default()
        };
        let trigger = RunTrigger {
            kind: target.trigger.kind().to_string(),
            name: target.name.clone(),
        };
        let (sink, on_stored): RunSink = match &self.sinks {
            Some(make) => make(),
            None => (Arc::new(NoSink), Box::new(|_: &str| {})),
        };
        let sink = Arc::new(FinishSink {
            inner: sink,
            finished: Arc::clone(&self.finished),
        });
        slot.running.fetch_add(1, Ordering::SeqCst);
        let run_id = match self
            .desktop
            .start_run_by(request, Some(trigger), sink)
            .await
        {
            Ok(id) => id,
            Err(e) => {
                slot.running.fetch_sub(1, Ordering::SeqCst);
                return Err(e);
            }
        };
        on_stored(&run_id);
        self.emit(TriggerEvent::Fired {
            workflow_id: target.workflow_id.clone(),
            trigger: target.name.clone(),
            fire_at: fire_at.as_ref().map(rfc3339),
            run_id: run_id.clone(),
        });
        let (finished, slot, id) = (Arc::clone(&self.finished), Arc::clone(slot), run_id.clone());
        tokio::spawn(async move {
            finished.wait(&id).await;
            slot.running.fetch_sub(1, Ordering::SeqCst);
        });
        Ok(run_id)
    }
}
