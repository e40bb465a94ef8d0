//! Notifications of the format: who is told when a run of the workflow ends or waits for
//! a person (seeds/000 §3.4.3 asks for completion and error notifications). Declared
//! under `notifications:`; sent by the app that runs the workflow (`nexus serve`, the
//! desktop app), never by the engine, so a notification that cannot be delivered never
//! changes a run.
//!
//! Invariants: a webhook's URL is `http` or `https` (loopback only in a `local_only`
//! workflow); its signing secret is never written in the file, only the name of the
//! environment variable that holds it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a notification is sent on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NotifyOn {
    /// The run succeeded.
    Succeeded,
    /// The run failed.
    Failed,
    /// The run was cancelled.
    Cancelled,
    /// A step of the run waits for a person (an approval, a guardrail's question, the
    /// fallback ladder's last rung).
    WaitingForHuman,
}

impl NotifyOn {
    /// The name as written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyOn::Succeeded => "succeeded",
            NotifyOn::Failed => "failed",
            NotifyOn::Cancelled => "cancelled",
            NotifyOn::WaitingForHuman => "waiting_for_human",
        }
    }
}

fn default_on() -> Vec<NotifyOn> {
    vec![NotifyOn::Failed]
}

/// One notification: when, and to where (an outgoing webhook, a desktop notification,
/// or both; at least one).
///
/// ```yaml
/// notifications:
///   - on: [failed, waiting_for_human]
///     webhook: {url: "https://chat.example.com/hooks/ops", secret_env: OPS_HOOK_SECRET}
///   - on: [succeeded, failed]
///     desktop: true
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    /// What it is sent on (default `[failed]`).
    #[serde(default = "default_on")]
    pub on: Vec<NotifyOn>,
    /// An outgoing webhook: a JSON `POST` (see [`NotifyWebhook`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<NotifyWebhook>,
    /// Also show a desktop notification (the operating system's notification center),
    /// for runs of the desktop app, which is the process that can show one; `nexus run`
    /// and `nexus serve` log it instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub desktop: bool,
}

/// An outgoing webhook. The body is JSON:
/// `{"event": "run_succeeded" | "run_failed" | "run_cancelled" | "waiting_for_human",
/// "run_id", "workflow_id", "status", "duration_ms"?, "step_id"?, "question"?, "at"}`
/// (`at` RFC 3339). Headers: `X-Nexus-Event` (the event), `X-Nexus-Delivery` (a UUID, the
/// same on every attempt of one delivery, for deduplication) and, with a secret,
/// `X-Nexus-Signature-256: sha256=<hex HMAC-SHA256 of the body>` (GitHub's webhook
/// signature scheme, the one `nexus serve`'s own webhooks check). A delivery is tried up
/// to 5 times, with exponential backoff from 1 s, on a connection error, a timeout (10 s),
/// a 429 or a 5xx; another 4xx is final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyWebhook {
    /// Where to `POST` (`http` or `https`).
    pub url: String,
    /// The environment variable holding the signing secret; without it the body is not
    /// signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
}
