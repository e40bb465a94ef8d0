//! The executor of `event` steps and the engine's side of posted events.
//!
//! An event is stored first (by whoever receives it: `nexus serve`, the desktop app) and
//! then announced with [`Engine::event_posted`], which wakes the steps of this process
//! waiting for that run and name. A waiting step takes events from the store only, so
//! an event posted while the run was down, or by another process on the same database,
//! is taken all the same: the latter within [`RECHECK`].
//!
//! Invariants: a step takes at most one event, and each event is taken by one step
//! ([`RunStore::take_event`]); the timeout's deadline comes from stored facts, like a
//! `wait` step's, so a resumed run waits only for what is left.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Engine, StepOutput, lock, ms};
use crate::events::StepStatus;
use crate::store::{PostedEvent, StepRecord};

/// How often a waiting step looks in the store for an event that another process
/// stored (events posted to this process wake it at once).
pub const RECHECK: Duration = Duration::from_secs(5);

/// Makes the callback URL of a run (`{{ run.callback_url }}`), the base its events
/// are posted to as `{url}/{event name}`; `None` when nothing receives callbacks (the
/// template then renders an empty text).
pub trait CallbackUrls: Send + Sync {
    /// The callback URL of run `run_id`.
    fn url(&self, run_id: &str) -> Option<String>;
}

/// The steps of this process waiting for events, by (run id, event name).
#[derive(Default)]
pub(super) struct Waiters {
    map: Mutex<HashMap<(String, String), Shared>>,
}

/// The wake-up shared by the steps waiting for one (run, name), and how many they are.
type Shared = (Arc<Notify>, usize);

/// One registered waiter; unregisters when dropped.
struct Waiting<'a> {
    waiters: &'a Waiters,
    key: (String, String),
    notify: Arc<Notify>,
}

impl Waiters {
    fn register(&self, run_id: &str, name: &str) -> Waiting<'_> {
        let key = (run_id.to_string(), name.to_string());
        let mut map = lock(&self.map);
        let entry = map
            .entry(key.clone())
            .or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        let notify = Arc::clone(&entry.0);
        Waiting {
            waiters: self,
            key,
            notify,
        }
    }

    fn wake(&self, run_id: &str, name: &str) {
        let key = (run_id.to_string(), name.to_string());
        if let Some((notify, _)) = lock(&self.map).get(&key) {
            notify.notify_waiters();
        }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        let mut map = lock(&self.waiters.map);
        if let Some(entry) = map.get_mut(&self.key) {
            entry.1 = entry.1.saturating_sub(1);
            if entry.1 == 0 {
                map.remove(&self.key);
            }
        }
    }
}

/// What an `event` step waits for.
pub(super) struct EventWait {
    /// The step's record so far (status succeeded, to be finished).
    pub(super) rec: StepRecord,
    /// The run the event is posted to.
    pub(super) run_id: String,
    /// The event's name.
    pub(super) name: String,
    /// When the wait ends without the event; `None`: never.
    pub(super) deadline: Option<DateTime<Utc>>,
    /// The output then; `None`: the step fails.
    pub(super) timeout_output: Option<serde_json::Value>,
    /// The step's token.
    pub(super) cancel: CancellationToken,
}

impl Engine {
    /// Wakes this process's `event` steps waiting for event `name` of run `run_id`; call
    /// it after the event is stored. Events of runs with no waiting step stay stored for
    /// the step that comes to wait for them.
    pub fn event_posted(&self, run_id: &str, name: &str) {
        self.waiters.wake(run_id, name);
    }

    /// Sets how runs' callback URLs are made (`nexus serve` sets it once it knows its
    /// address); the first call wins.
    pub fn set_callback_urls(&self, urls: Arc<dyn CallbackUrls>) {
        let _ = self.callback_urls.set(urls);
    }

    /// The callback URL of run `run_id`, if something receives callbacks.
    pub(super) fn callback_url(&self, run_id: &str) -> Option<String> {
        self.callback_urls.get().and_then(|u| u.url(run_id))
    }

    /// Waits until the step takes its event, the deadline passes or the step is
    /// cancelled.
    pub(super) async fn wait_event(
        self: Arc<Self>,
        w: EventWait,
    ) -> (StepRecord, Option<StepOutput>) {
        let EventWait {
            mut rec,
            run_id,
            name,
            deadline,
            timeout_output,
            cancel,
        } = w;
        let t0 = Instant::now();
        let waiting = self.waiters.register(&run_id, &name);
        let outcome = loop {
            let notified = waiting.notify.notified();
            tokio::pin!(notified);
            // Registered before the store is read, so a post between the read and the
            // wait still wakes this step.
            notified.as_mut().enable();
            if let Some(store) = &self.store {
                match store.take_event(&run_id, &name, &rec.step_id).await {
                    Ok(Some(event)) => break Ok(event),
                    Ok(None) => {}
                    Err(e) => break Err(format!("cannot read the events of the run: {e}")),
                }
            }
            let left = deadline.map(|d| (d - Utc::now()).to_std().unwrap_or_default());
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    rec.status = StepStatus::Cancelled;
                    break Err(format!("cancelled while waiting for event `{name}`"));
                }
                () = &mut notified => {}
                () = tokio::time::sleep(RECHECK) => {}
                () = sleep_or_never(left) => {
                    break Err(String::new());
                }
            }
        };
        drop(waiting);
        rec.duration_ms = ms(t0.elapsed());
        match outcome {
            Ok(event) => finish(rec, &event),
            Err(e) if rec.status == StepStatus::Cancelled => {
                rec.error = Some(e);
                (rec, None)
            }
            Err(e) if !e.is_empty() => {
                rec.status = StepStatus::Failed;
                rec.error = Some(e);
                (rec, None)
            }
            Err(_) => timed_out(rec, &name, deadline, timeout_output),
        }
    }
}

async fn sleep_or_never(left: Option<Duration>) {
    match left {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// The step's output from the event it took: a JSON string as its text, other JSON as
/// written.
fn finish(mut rec: StepRecord, event: &PostedEvent) -> (StepRecord, Option<StepOutput>) {
    let text = match &event.body {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    rec.output = Some(text.clone());
    rec.output_json = Some(event.body.clone());
    (
        rec,
        Some(StepOutput {
            text,
            json: Some(event.body.clone()),
        }),
    )
}

/// The deadline passed: the `timeout_output` when the step has one, else a failure.
fn timed_out(
    mut rec: StepRecord,
    name: &str,
    deadline: Option<DateTime<Utc>>,
    timeout_output: Option<serde_json::Value>,
) -> (StepRecord, Option<StepOutput>) {
    let at = deadline
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    match timeout_output {
        Some(value) => finish(
            rec,
            &PostedEvent {
                body: value,
                received_at: Utc::now(),
            },
        ),
        None => {
            rec.status = StepStatus::Failed;
            rec.error = Some(format!(
                "no event `{name}` came before {at}; give the step `timeout_output` to go on without it"
            ));
            (rec, None)
        }
    }
}
