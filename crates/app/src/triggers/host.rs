//! The desktop app's triggers: [`AppTriggers`] arms the `cron` and `file` triggers of
//! the workflows folder while the app is open (webhooks need `nexus serve`), and arms
//! them again from the new folder when the user chooses another one.
//!
//! Invariants: at most one generation of [`Triggers`] is armed at a time (the old one is
//! stopped before the new one starts, so a fire is never handled twice); every
//! generation's [`TriggerEvent`]s reach the same subscribers, so the shell subscribes
//! once; runs already started by an old generation go on.

use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::{Clock, Hosting, TriggerEvent, TriggerView, Triggers, lock};
use crate::Desktop;

/// One armed generation and the token that ends its event forwarding.
struct Generation {
    triggers: Triggers,
    forward: CancellationToken,
}

/// The triggers the desktop app runs while it is open.
pub struct AppTriggers {
    desktop: Arc<Desktop>,
    clock: Arc<dyn Clock>,
    events: broadcast::Sender<TriggerEvent>,
    current: Mutex<Option<Generation>>,
}

impl std::fmt::Debug for AppTriggers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppTriggers").finish_non_exhaustive()
    }
}

impl AppTriggers {
    /// Arms the triggers of `desktop`'s workflows folder (scanned on a task: this returns
    /// at once). Needs a tokio runtime.
    pub fn start(desktop: Arc<Desktop>, clock: Arc<dyn Clock>) -> Arc<AppTriggers> {
        let host = Arc::new(AppTriggers {
            desktop,
            clock,
            events: broadcast::channel(1024).0,
            current: Mutex::new(None),
        });
        host.restart();
        host
    }

    /// Disarms the current triggers and arms those of the workflows folder as it is
    /// set now (call it after [`Desktop::set_workflows_folder`]). Needs a tokio runtime.
    pub fn restart(&self) {
        let mut current = lock(&self.current);
        if let Some(old) = current.take() {
            old.forward.cancel();
            old.triggers.stop();
        }
        let triggers = Triggers::start(
            Arc::clone(&self.desktop),
            Arc::clone(&self.clock),
            Hosting { webhooks: false },
            None,
        );
        let forward = CancellationToken::new();
        let mut rx = triggers.subscribe();
        let tx = self.events.clone();
        let end = forward.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    () = end.cancelled() => return,
                    got = rx.recv() => match got {
                        Ok(event) => drop(tx.send(event)),
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                }
            }
        });
        *current = Some(Generation { triggers, forward });
    }

    /// Returns once the current generation scanned the folder the first time.
    pub async fn first_scan(&self) {
        // The generation's state, out of the lock before waiting.
        let inner = lock(&self.current)
            .as_ref()
            .map(|g| Arc::clone(&g.triggers.inner));
        if let Some(inner) = inner {
            inner.first_scan().await;
        }
    }

    /// Every [`TriggerEvent`] from now on, of this and later generations.
    pub fn subscribe(&self) -> broadcast::Receiver<TriggerEvent> {
        self.events.subscribe()
    }

    /// The triggers of the workflows folder (see [`Triggers::list`]).
    pub fn list(&self) -> Vec<TriggerView> {
        lock(&self.current)
            .as_ref()
            .map(|g| g.triggers.list())
            .unwrap_or_default()
    }

    /// How many triggers this app runs now (armed `cron` and `file` triggers): while
    /// there is one, closing the window keeps the app running in the tray.
    pub fn armed(&self) -> usize {
        self.list()
            .iter()
            .filter(|v| v.armed && matches!(v.kind.as_deref(), Some("cron" | "file")))
            .count()
    }

    /// Disarms everything (the app is quitting); runs already started go on.
    pub fn stop(&self) {
        if let Some(old) = lock(&self.current).take() {
            old.forward.cancel();
            old.triggers.stop();
        }
    }
}
