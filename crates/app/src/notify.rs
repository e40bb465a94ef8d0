//! Sends a workflow's `notifications:` (see [`nexus_engine::workflow::Notification`]):
//! a signed JSON `POST` and/or a desktop notification when a run this app launched
//! succeeds, fails, is cancelled or waits for a person.
//!
//! Invariants:
//! - a notification never changes a run: it is sent from its own task after the event
//!   (which the engine emits only once the state change is stored), and its failures are
//!   logged and counted (`nexus_notifications_total{outcome}`), never returned;
//! - memory stays bounded: at most [`MAX_PENDING`] deliveries wait or are being tried at
//!   once; a notification beyond that is dropped, logged and counted as `dropped`;
//! - a desktop notification goes to the [`DesktopNotice`] handler the desktop shell set
//!   ([`Notifier::set_desktop`]), on a blocking thread (showing one may wait on the OS);
//!   a process without one (`nexus run`, `nexus serve`) logs it and counts it as
//!   `no_desktop`;
//! - one delivery keeps its `X-Nexus-Delivery` id over its attempts, so a receiver can
//!   drop a repeat; the signature is GitHub's `X-Hub-Signature-256` scheme under the name
//!   `X-Nexus-Signature-256` (`sha256=` + hex HMAC-SHA256 of the raw body).

use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;
use hmac::{Hmac, Mac};
use nexus_engine::workflow::{Notification, NotifyOn, Workflow};
use nexus_engine::{Event, EventSink, RunStatus};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::Semaphore;

use crate::metrics::Metrics;

/// At most this many deliveries wait or are tried at once (all workflows together).
pub const MAX_PENDING: usize = 1000;
/// Attempts per delivery (the first and 4 retries).
pub const MAX_ATTEMPTS: usize = 5;
/// Time limit of one attempt (connect, send, read the status), ms.
pub const ATTEMPT_TIMEOUT_MS: u64 = 10_000;

/// The JSON body of a notification.
#[derive(Debug, Clone, Serialize)]
struct Body<'a> {
    /// `run_succeeded`, `run_failed`, `run_cancelled` or `waiting_for_human`.
    event: &'static str,
    run_id: &'a str,
    workflow_id: &'a str,
    /// The run's status now.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    step_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    question: Option<&'a str>,
    /// When it happened, RFC 3339.
    at: String,
}

/// One delivery: where, what, signed with which secret variable.
struct Delivery {
    url: String,
    secret_env: Option<String>,
    event: &'static str,
    id: String,
    body: Vec<u8>,
}

/// A desktop notification to show: what happened to which run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesktopNotice {
    /// `run_succeeded`, `run_failed`, `run_cancelled` or `waiting_for_human`.
    pub event: &'static str,
    /// The run.
    pub run_id: String,
    /// The workflow's id.
    pub workflow_id: String,
    /// The notification's title, e.g. `report: run failed`.
    pub title: String,
    /// Its text: the run's status and duration, or the question asked (at most
    /// [`NOTICE_MAX_CHARS`] characters).
    pub body: String,
}

/// A desktop notification's text is cut to this many characters.
pub const NOTICE_MAX_CHARS: usize = 200;

/// Shows a [`DesktopNotice`] (the desktop shell's notification plugin).
pub type ShowNotice = Arc<dyn Fn(&DesktopNotice) + Send + Sync>;

/// Sends notifications for the app's runs.
pub struct Notifier {
    http: reqwest::Client,
    pending: Arc<Semaphore>,
    metrics: Arc<Metrics>,
    desktop: std::sync::OnceLock<ShowNotice>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Notifier {
    /// A notifier counting its outcomes in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Notifier {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(ATTEMPT_TIMEOUT_MS))
            .user_agent(concat!("nexus/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        Notifier {
            http,
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
            metrics,
            desktop: std::sync::OnceLock::new(),
        }
    }

    /// Makes `show` the way desktop notifications are shown (the desktop shell calls
    /// this once at start; later calls are ignored).
    pub fn set_desktop(&self, show: ShowNotice) {
        let _ = self.desktop.set(show);
    }

    /// Shows `notice` with the shell's handler on a blocking thread, or logs it when this
    /// process has none.
    fn show(&self, notice: DesktopNotice) {
        let Some(show) = self.desktop.get().cloned() else {
            tracing::info!(run_id = %notice.run_id, "desktop notification (no desktop in this process): {}: {}", notice.title, notice.body);
            self.metrics.notification("no_desktop");
            return;
        };
        self.metrics.notification("shown");
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || show(&notice))),
            Err(_) => show(&notice),
        }
    }

    /// The sink that sends `workflow`'s notifications for run `run_id` (events of other
    /// runs, e.g. its sub-workflows' children, are not its own); `None` when the workflow
    /// declares none.
    pub fn sink(self: &Arc<Self>, run_id: &str, workflow: &Workflow) -> Option<Arc<dyn EventSink>> {
        if workflow.notifications.is_empty() {
            return None;
        }
        Some(Arc::new(RunNotifications {
            notifier: Arc::clone(self),
            run_id: run_id.to_string(),
            workflow_id: workflow.id.clone(),
            notifications: workflow.notifications.clone(),
        }))
    }

    /// Sends the notifications of run `run_id` of `workflow`, and of its child runs
    /// (`workflow` steps) those of their own workflow files: a child run is a run of its
    /// own file, whose `notifications:` apply to it as they would to a run started alone.
    pub fn attach(
        self: &Arc<Self>,
        options: &mut nexus_engine::RunOptions,
        run_id: &str,
        workflow: &Workflow,
    ) {
        options.sinks.extend(self.sink(run_id, workflow));
        options.child_sinks = Some(Arc::new(ChildNotifications(Arc::clone(self))));
    }

    /// Waits until no delivery is pending, at most `within`; returns how many still are
    /// (a short-lived process, `nexus run`, calls this before it exits).
    pub async fn drain(&self, within: Duration) -> usize {
        let all = u32::try_from(MAX_PENDING).unwrap_or(u32::MAX);
        match tokio::time::timeout(within, self.pending.acquire_many(all)).await {
            Ok(Ok(_all_back)) => 0,
            _ => MAX_PENDING - self.pending.available_permits(),
        }
    }

    /// Queues `delivery` on its own task, or drops it when [`MAX_PENDING`] are pending.
    fn send(self: &Arc<Self>, delivery: Delivery) {
        let Ok(permit) = Arc::clone(&self.pending).try_acquire_owned() else {
            tracing::warn!(url = %delivery.url, "{MAX_PENDING} notifications are pending; this one is dropped");
            self.metrics.notification("dropped");
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.metrics.notification("dropped");
            return;
        };
        let me = Arc::clone(self);
        runtime.spawn(async move {
            let outcome = me.deliver(&delivery).await;
            me.metrics.notification(outcome);
            drop(permit);
        });
    }

    /// Tries `d` up to [`MAX_ATTEMPTS`] times; returns the outcome's label.
    async fn deliver(&self, d: &Delivery) -> &'static str {
        let signature = match &d.secret_env {
            None => None,
            Some(var) => match std::env::var(var) {
                Ok(secret) if !secret.is_empty() => Some(sign(secret.as_bytes(), &d.body)),
                _ => {
                    tracing::error!(url = %d.url, "notification not sent: its signing secret `{var}` is not set in the environment");
                    return "failed";
                }
            },
        };
        let mut delays = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(Duration::from_secs(60))
            .with_max_times(MAX_ATTEMPTS - 1)
            .with_jitter()
            .build();
        loop {
            let mut request = self
                .http
                .post(&d.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("X-Nexus-Event", d.event)
                .header("X-Nexus-Delivery", &d.id)
                .body(d.body.clone());
            if let Some(sig) = &signature {
                request = request.header("X-Nexus-Signature-256", sig);
            }
            let (retryable, why) = match request.send().await {
                Ok(r) if r.status().is_success() => return "delivered",
                Ok(r) => {
                    let s = r.status();
                    (
                        s.is_server_error() || s == reqwest::StatusCode::TOO_MANY_REQUESTS,
                        format!("it answered {s}"),
                    )
                }
                Err(e) => (true, format!("it could not be reached: {e}")),
            };
            match delays.next() {
                Some(delay) if retryable => {
                    tracing::warn!(url = %d.url, "notification attempt failed ({why}); retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
                _ => {
                    tracing::error!(url = %d.url, delivery = %d.id, "notification not delivered: {why}");
                    return "failed";
                }
            }
        }
    }
}

/// `sha256=` + the hex HMAC-SHA256 of `body` under `secret` (GitHub's webhook signature).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Gives each child run the notifications of its own workflow file.
struct ChildNotifications(Arc<Notifier>);

impl nexus_engine::ChildSinks for ChildNotifications {
    fn sinks(&self, run_id: &str, workflow: &Workflow) -> Vec<Arc<dyn EventSink>> {
        self.0.sink(run_id, workflow).into_iter().collect()
    }
}

/// The notifications of one run.
struct RunNotifications {
    notifier: Arc<Notifier>,
    run_id: String,
    workflow_id: String,
    notifications: Vec<Notification>,
}

impl RunNotifications {
    /// What `event` is, for the notifications of this run: its `on` name, the body's
    /// `event` and the body.
    fn body(&self, event: &Event) -> Option<(NotifyOn, &'static str, Vec<u8>)> {
        let mut body = Body {
            event: "",
            run_id: &self.run_id,
            workflow_id: &self.workflow_id,
            status: "",
            duration_ms: None,
            step_id: None,
            question: None,
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        };
        let on = match event {
            Event::RunFinished {
                run_id,
                status,
                duration_ms,
            } if *run_id == self.run_id => {
                body.status = status.as_str();
                body.duration_ms = Some(*duration_ms);
                let (on, name) = match status {
                    RunStatus::Succeeded => (NotifyOn::Succeeded, "run_succeeded"),
                    RunStatus::Failed => (NotifyOn::Failed, "run_failed"),
                    RunStatus::Cancelled => (NotifyOn::Cancelled, "run_cancelled"),
                    _ => return None,
                };
                body.event = name;
                on
            }
            Event::WaitingForHuman {
                run_id,
                step_id,
                question,
            } if *run_id == self.run_id => {
                body.event = "waiting_for_human";
                body.status = RunStatus::WaitingForHuman.as_str();
                body.step_id = Some(step_id);
                body.question = Some(question);
                NotifyOn::WaitingForHuman
            }
            _ => return None,
        };
        let name = body.event;
        serde_json::to_vec(&body).ok().map(|b| (on, name, b))
    }
}

impl RunNotifications {
    /// The desktop notification of `event` (named `name`).
    fn notice(&self, event: &Event, name: &'static str) -> DesktopNotice {
        let wf = &self.workflow_id;
        let (title, body) = match event {
            Event::WaitingForHuman {
                step_id, question, ..
            } => (
                format!("{wf}: waiting for you"),
                format!("step `{step_id}` asks: {question}"),
            ),
            Event::RunFinished {
                status,
                duration_ms,
                ..
            } => {
                let what = match status {
                    RunStatus::Succeeded => "succeeded",
                    RunStatus::Failed => "failed",
                    _ => "was cancelled",
                };
                (
                    format!("{wf}: run {what}"),
                    format!("the run {what} after {:.1} s", *duration_ms as f64 / 1000.0),
                )
            }
            _ => (wf.clone(), String::new()),
        };
        let body = if body.chars().count() > NOTICE_MAX_CHARS {
            let mut cut: String = body.chars().take(NOTICE_MAX_CHARS - 1).collect();
            cut.push('…');
            cut
        } else {
            body
        };
        DesktopNotice {
            event: name,
            run_id: self.run_id.clone(),
            workflow_id: self.workflow_id.clone(),
            title,
            body,
        }
    }
}

impl EventSink for RunNotifications {
    fn emit(&self, event: &Event) {
        if self.notifications.is_empty() {
            return;
        }
        let Some((on, name, body)) = self.body(event) else {
            return;
        };
        let mut shown = false;
        for n in self.notifications.iter().filter(|n| n.on.contains(&on)) {
            if let Some(webhook) = &n.webhook {
                self.notifier.send(Delivery {
                    url: webhook.url.clone(),
                    secret_env: webhook.secret_env.clone(),
                    event: name,
                    id: uuid::Uuid::now_v7().to_string(),
                    body: body.clone(),
                });
            }
            // One desktop notification per event, however many entries ask for it.
            if n.desktop && !shown {
                shown = true;
                self.notifier.show(self.notice(event, name));
            }
        }
    }
}
