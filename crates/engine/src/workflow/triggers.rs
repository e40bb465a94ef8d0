//! Triggers of the format: what starts a run besides a person (seeds/002 gives every
//! workflow `schedule`, `webhook` and `manual` triggers). Declared under `triggers:`,
//! each tagged by `kind`; run by `nexus serve` (every kind) and the desktop app while it
//! is open (`cron` and `file`).
//!
//! Invariants: trigger names are unique in a workflow (a run records the name of the
//! trigger that started it); a webhook's `path` is unique among the workflows one server
//! serves (checked when the server arms its triggers); secrets are never written in the
//! file, only the name of the environment variable that holds them.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A trigger, tagged by `kind` (`cron`, `webhook`, `file` or `manual`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// A schedule.
    Cron(CronTrigger),
    /// An HTTP request to `nexus serve`.
    Webhook(WebhookTrigger),
    /// A change to watched files.
    File(FileTrigger),
    /// A person starting the run (the Run button, `nexus run`, `POST /api/runs`); always
    /// possible, declared for documentation (seeds/002's `manual` trigger).
    Manual(ManualTrigger),
}

impl Trigger {
    /// The trigger's kind as written (`cron`, `webhook`, `file`, `manual`).
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Cron(_) => "cron",
            Trigger::Webhook(_) => "webhook",
            Trigger::File(_) => "file",
            Trigger::Manual(_) => "manual",
        }
    }

    /// Whether it is armed (`manual` is always possible).
    pub fn enabled(&self) -> bool {
        match self {
            Trigger::Cron(t) => t.enabled,
            Trigger::Webhook(t) => t.enabled,
            Trigger::File(t) => t.enabled,
            Trigger::Manual(_) => true,
        }
    }

    /// The trigger's name: its `name`, or its kind when it has none.
    pub fn name(&self) -> &str {
        let name = match self {
            Trigger::Cron(t) => t.name.as_deref(),
            Trigger::Webhook(t) => t.name.as_deref(),
            Trigger::File(t) => t.name.as_deref(),
            Trigger::Manual(t) => t.name.as_deref(),
        };
        name.unwrap_or(self.kind())
    }
}

/// A `cron` trigger: runs on a schedule in a time zone.
///
/// The schedule is a cron pattern of 5 fields (minute hour day-of-month month
/// day-of-week) or 6 with seconds first, with the POSIX/Vixie rules and croner's
/// extensions (`L`, `W`, `#`, `@daily`); see the `croner` crate. A daylight-saving gap
/// moves a fire that falls in it to the first time after it (`30 2 * * *` in Berlin fires
/// at 03:00 on the day clocks go forward, as Vixie cron does); a repeated hour fires once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CronTrigger {
    /// The trigger's name (default `cron`), recorded with each run it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether the trigger is armed (default true); `false` keeps it in the file
    /// without running it (n8n's inactive workflows).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// The cron pattern, e.g. `0 9 * * *` (9:00 every day) or `*/30 * * * * *` (every 30
    /// seconds).
    pub schedule: String,
    /// The IANA time zone the pattern is read in, e.g. `Europe/Berlin` (default: this
    /// machine's zone, UTC when it cannot be told).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// What a fire does while a run this trigger started is still going (default
    /// `skip`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub overlap: Overlap,
    /// Fires missed while nothing ran the trigger (the machine slept, the server was
    /// stopped), counted from the last fire stored in the run database (default
    /// `latest`). The fires `all` catches up run one after another, whatever `overlap`
    /// says.
    #[serde(default, skip_serializing_if = "is_default")]
    pub catch_up: CatchUp,
    /// With `catch_up: all`, the most missed fires started (default 10); older ones are
    /// dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_catch_up: Option<u32>,
    /// Input values of the runs it starts, by name, as typed (converted to the declared
    /// types).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,
}

/// What a `cron` fire does while an earlier run of the same trigger is going (the
/// overlap policies of Temporal's schedules, simplified).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Start nothing; the fire is recorded as skipped.
    #[default]
    Skip,
    /// Start it when the earlier run ends (one fire waits at most; more are skipped).
    Queue,
    /// Start it at once, alongside.
    Allow,
}

/// Which missed `cron` fires start when the trigger runs again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// None: wait for the next fire.
    None,
    /// One run for the most recent missed fire.
    #[default]
    Latest,
    /// One run per missed fire, oldest first, up to `max_catch_up`.
    All,
}

fn yes() -> bool {
    true
}

fn is_true(v: &bool) -> bool {
    *v
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// The most missed fires `catch_up: all` starts when `max_catch_up` is not given.
pub const DEFAULT_MAX_CATCH_UP: u32 = 10;

/// A `webhook` trigger: `nexus serve` starts a run on each accepted request to
/// `/hooks/<path>`.
///
/// The request body (JSON; at most the server's body limit) is mapped to inputs: by
/// `inputs` when given, else each top-level field of a JSON object body becomes the
/// input of the same name. The inputs are validated as for any run; a request with a
/// bad signature, a malformed body or bad inputs gets a 4xx naming what is wrong and
/// starts nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookTrigger {
    /// The trigger's name (default `webhook`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether the trigger is armed (default true); `false` keeps it in the file
    /// without running it (n8n's inactive workflows).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// The hook's path under `/hooks/`, e.g. `lead-generation` or `github/push`
    /// (letters, digits, `-`, `_`, `/`).
    pub path: String,
    /// The HTTP method (default `POST`; `PUT` and `PATCH` also accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// How a request proves it may start a run.
    pub auth: WebhookAuth,
    /// What the caller gets back (default `accepted`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub respond: Respond,
    /// With `respond: wait`, how long to wait for the run's outputs, in milliseconds
    /// (default 30000, at most 300000); the caller gets `202` with the run id after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// The most requests accepted per minute (default 60); more get `429` with
    /// `Retry-After`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_per_minute: Option<u32>,
    /// Input values by name, each a template over `body` (the JSON body) and `query`
    /// (the query string's parameters), e.g. `"{{ body.issue.title }}"`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,
}

/// The most milliseconds `respond: wait` may wait.
pub const MAX_WEBHOOK_WAIT_MS: u64 = 300_000;

/// How long `respond: wait` waits by default, ms.
pub const DEFAULT_WEBHOOK_WAIT_MS: u64 = 30_000;

/// Calls a minute a webhook accepts by default.
pub const DEFAULT_WEBHOOK_RATE_PER_MINUTE: u32 = 60;

/// How a webhook request is authenticated, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WebhookAuth {
    /// A shared token, sent as `Authorization: Bearer <token>` or `X-Nexus-Token`.
    Token {
        /// The environment variable of `nexus serve` holding the token.
        secret_env: String,
    },
    /// An HMAC-SHA256 of the raw body with a shared secret, hex-encoded after `sha256=`
    /// in a header, as GitHub sends `X-Hub-Signature-256` (GitHub's "Validating webhook
    /// deliveries").
    HmacSha256 {
        /// The environment variable of `nexus serve` holding the secret.
        secret_env: String,
        /// The header carrying the signature (default `X-Hub-Signature-256`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<String>,
    },
    /// No check: anyone who can reach the server may start runs (only for a server on
    /// loopback behind something that checks).
    None,
}

/// What a webhook request gets back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Respond {
    /// `202 Accepted` with the run id as soon as the run is stored.
    #[default]
    Accepted,
    /// `200` with the run's status and outputs when it ends within `wait_ms`.
    Wait,
}

/// A `file` trigger: a run per settled change under the watched paths, with the changed
/// path as an input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileTrigger {
    /// The trigger's name (default `file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Whether the trigger is armed (default true); `false` keeps it in the file
    /// without running it (n8n's inactive workflows).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub enabled: bool,
    /// Files or folders to watch, relative to the workflow file's folder (folders are
    /// watched with everything under them).
    pub paths: Vec<String>,
    /// How long changes must settle before a run starts, in milliseconds (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce_ms: Option<u64>,
    /// The string input that receives the changed file's absolute path (default
    /// `path`); the workflow must declare it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<String>,
    /// Other input values, by name, as typed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, String>,
}

/// The debounce of a `file` trigger when `debounce_ms` is not given.
pub const DEFAULT_DEBOUNCE_MS: u64 = 500;

/// A `manual` trigger (documentation only: a person may always start a run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManualTrigger {
    /// The trigger's name (default `manual`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The permission a person needs (recorded; checked in team mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<String>,
}
