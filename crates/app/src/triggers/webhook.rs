//! `webhook` triggers, for `nexus serve`: the checks of a call (method, token or
//! signature, rate, body) and the inputs it gives, before any run starts.
//!
//! Invariants: nothing starts unless every check passed and the inputs validate; a
//! secret is read from the environment variable the file names at each call (never
//! stored, never logged) and compared in constant time; the rate limit is a GCRA bucket
//! per hook path (`governor`), `rate_per_minute` calls a minute with a burst of the same
//! size.
//!
//! Signature rule: GitHub's `X-Hub-Signature-256`, `sha256=` followed by the lowercase
//! hex HMAC-SHA256 of the raw body keyed with the secret ("Validating webhook
//! deliveries", GitHub docs).

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, Mac};
use nexus_engine::workflow::{
    DEFAULT_WEBHOOK_RATE_PER_MINUTE, DEFAULT_WEBHOOK_WAIT_MS, Respond, Trigger, WebhookAuth,
    WebhookTrigger,
};
use nexus_engine::{Diagnostic, RunStatus};
use serde::Serialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{Inner, Target, Triggers, lock, scan::method_of};

/// A webhook as armed.
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    /// The workflow file.
    pub file: String,
    /// The workflow's id.
    pub workflow_id: String,
    /// The trigger as declared.
    pub trigger: WebhookTrigger,
}

impl Webhook {
    /// The request header holding the signature (HMAC auth only), lower case.
    pub fn signature_header(&self) -> Option<String> {
        match &self.trigger.auth {
            WebhookAuth::HmacSha256 { header, .. } => Some(
                header
                    .as_deref()
                    .unwrap_or("X-Hub-Signature-256")
                    .to_ascii_lowercase(),
            ),
            _ => None,
        }
    }
}

/// One HTTP call to `/hooks/<path>`, as the server read it.
#[derive(Debug, Clone, Default)]
pub struct HookCall {
    /// The request method.
    pub method: String,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// The value of the hook's signature header ([`Webhook::signature_header`]).
    pub signature: Option<String>,
    /// The raw body (empty: `{}`).
    pub body: Vec<u8>,
    /// The query string's parameters.
    pub query: BTreeMap<String, String>,
    /// The `Host` header (name and port): a hook with `auth: none` answers only under a
    /// loopback name, see [`is_loopback_host`].
    pub host: Option<String>,
}

/// Whether `host` (a `Host` header: a name or address, an optional port, IPv6 in
/// brackets) is `127.0.0.1`, `localhost` or `[::1]`. A web page that reaches a loopback
/// server by DNS rebinding sends its own name, so a check without a secret must insist on
/// one of these (the defense Jupyter and Ollama use).
pub fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    matches!(name, "127.0.0.1" | "localhost" | "::1")
}

/// A call that started a run.
#[derive(Debug, Clone, PartialEq)]
pub struct HookStarted {
    /// The run.
    pub run_id: String,
    /// Whether to answer at once or wait for the outputs.
    pub respond: Respond,
    /// How long to wait for the outputs, ms.
    pub wait_ms: u64,
}

/// Why a call started nothing, tagged by `kind` like the API's errors (the server maps
/// each to its status).
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type, thiserror::Error)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HookError {
    /// No armed webhook has this path (404).
    #[error("{message}")]
    NotFound {
        /// What to check.
        message: String,
    },
    /// The hook takes another method (405).
    #[error("{message}")]
    WrongMethod {
        /// The method to use.
        message: String,
        /// The method the hook takes.
        allowed: String,
    },
    /// The token or signature is missing or wrong (401).
    #[error("{message}")]
    Unauthorized {
        /// What was wrong.
        message: String,
    },
    /// More calls than `rate_per_minute` (429).
    #[error("{message}")]
    RateLimited {
        /// When to try again.
        message: String,
        /// Seconds until a call is accepted.
        retry_after_s: u64,
    },
    /// The body cannot be read or gives unknown inputs (400).
    #[error("{message}")]
    BadBody {
        /// What is wrong with it.
        message: String,
    },
    /// The inputs the call gives do not validate (422).
    #[error("the inputs are not valid: {}", .diagnostics.first().map(ToString::to_string).unwrap_or_default())]
    InvalidInputs {
        /// Each input's problem.
        diagnostics: Vec<Diagnostic>,
    },
    /// The server lacks the hook's secret (503).
    #[error("{message}")]
    NotConfigured {
        /// The variable to set.
        message: String,
    },
    /// The run could not start (500).
    #[error("{message}")]
    Start {
        /// Why.
        message: String,
    },
}

/// The rate limiters, one per hook path (re-made when its rate changes).
#[derive(Default)]
pub(super) struct Limits {
    by_path: Mutex<HashMap<String, (u32, Arc<DefaultDirectRateLimiter>)>>,
}

impl Limits {
    /// Takes one call from `path`'s bucket, or says how long until one is free.
    fn take(&self, path: &str, per_minute: u32) -> Result<(), Duration> {
        let limiter = {
            let mut map = lock(&self.by_path);
            let entry = map
                .entry(path.to_string())
                .or_insert_with(|| (0, limiter(1)));
            if entry.0 != per_minute {
                *entry = (per_minute, limiter(per_minute));
            }
            Arc::clone(&entry.1)
        };
        limiter
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

fn limiter(per_minute: u32) -> Arc<DefaultDirectRateLimiter> {
    let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
    Arc::new(RateLimiter::direct(Quota::per_minute(n)))
}

impl Triggers {
    /// The armed webhook at `/hooks/<path>`, if any.
    pub fn webhook(&self, path: &str) -> Option<Webhook> {
        let armed = lock(&self.inner.armed);
        let target = armed.webhooks.get(path)?;
        match &target.trigger {
            Trigger::Webhook(w) => Some(Webhook {
                file: target.file.clone(),
                workflow_id: target.workflow_id.clone(),
                trigger: w.clone(),
            }),
            _ => None,
        }
    }

    /// Checks `call` against the webhook at `path` and starts its run.
    ///
    /// # Errors
    /// [`HookError`]: nothing was started.
    pub async fn call_webhook(&self, path: &str, call: HookCall) -> Result<HookStarted, HookError> {
        let target = lock(&self.inner.armed).webhooks.get(path).cloned();
        let Some(target) = target else {
            return Err(HookError::NotFound {
                message: format!(
                    "no armed webhook at `/hooks/{path}`; GET /api/triggers lists them"
                ),
            });
        };
        let Trigger::Webhook(hook) = &target.trigger else {
            return Err(HookError::NotFound {
                message: format!("`/hooks/{path}` is not a webhook"),
            });
        };
        let method = method_of(hook);
        if !call.method.eq_ignore_ascii_case(&method) {
            return Err(HookError::WrongMethod {
                message: format!("`/hooks/{path}` takes {method}, not {}", call.method),
                allowed: method,
            });
        }
        authorize(&hook.auth, &call)?;
        let rate = hook
            .rate_per_minute
            .unwrap_or(DEFAULT_WEBHOOK_RATE_PER_MINUTE);
        if let Err(wait) = self.inner.limits.take(path, rate) {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(HookError::RateLimited {
                message: format!(
                    "`/hooks/{path}` takes {rate} calls a minute; try again in {secs} s"
                ),
                retry_after_s: secs.max(1),
            });
        }
        let inputs = inputs_of(&target, hook, &call)?;
        let run_id = self.inner.start_hook(&target, inputs).await?;
        Ok(HookStarted {
            run_id,
            respond: hook.respond,
            wait_ms: hook.wait_ms.unwrap_or(DEFAULT_WEBHOOK_WAIT_MS),
        })
    }

    /// Waits up to `timeout` for run `run_id` (started by a trigger of this process) to
    /// finish; `None` when it is still going.
    pub async fn wait_finished(&self, run_id: &str, timeout: Duration) -> Option<RunStatus> {
        tokio::time::timeout(timeout, self.inner.finished.wait(run_id))
            .await
            .ok()
    }
}

impl Inner {
    /// Starts a webhook's run, mapping a start failure to [`HookError`].
    async fn start_hook(
        self: &Arc<Self>,
        target: &Target,
        inputs: BTreeMap<String, String>,
    ) -> Result<String, HookError> {
        let slot = self.slot(target);
        self.start_checked(target, &slot, None, inputs)
            .await
            .map_err(|e| match e {
                crate::Error::InvalidInputs { diagnostics } => {
                    HookError::InvalidInputs { diagnostics }
                }
                other => HookError::Start {
                    message: other.to_string(),
                },
            })
    }
}

/// The secret in `var`, or why the server cannot check the call.
fn secret(var: &str) -> Result<String, HookError> {
    match std::env::var(var) {
        Ok(s) if !s.is_empty() => Ok(s),
        _ => Err(HookError::NotConfigured {
            message: format!(
                "this webhook checks calls with the secret in `{var}`, which is not set for `nexus serve`; set it and restart the server"
            ),
        }),
    }
}

fn authorize(auth: &WebhookAuth, call: &HookCall) -> Result<(), HookError> {
    let refuse = |message: &str| HookError::Unauthorized {
        message: message.to_string(),
    };
    match auth {
        WebhookAuth::None => match call.host.as_deref() {
            Some(h) if is_loopback_host(h) => Ok(()),
            other => Err(HookError::Unauthorized {
                message: format!(
                    "this webhook has `auth: none`, so it answers only calls to a loopback name (127.0.0.1, localhost, [::1]); this one came for host `{}` (a web page reaching the server by DNS rebinding would); give the trigger `auth: {{kind: token}}` or `{{kind: hmac_sha256}}` to call it under another name",
                    other.unwrap_or("")
                ),
            }),
        },
        WebhookAuth::Token { secret_env } => {
            let secret = secret(secret_env)?;
            let given = call
                .authorization
                .as_deref()
                .and_then(|h| h.strip_prefix("Bearer "))
                .ok_or_else(|| {
                    refuse("send the hook's token as `Authorization: Bearer <token>`")
                })?;
            if bool::from(given.trim().as_bytes().ct_eq(secret.as_bytes())) {
                Ok(())
            } else {
                Err(refuse("the token is wrong"))
            }
        }
        WebhookAuth::HmacSha256 { secret_env, header } => {
            let secret = secret(secret_env)?;
            let name = header.as_deref().unwrap_or("X-Hub-Signature-256");
            let given = call.signature.as_deref().ok_or_else(|| {
                refuse(&format!(
                    "sign the body: send `{name}: sha256=<hex HMAC-SHA256 of the body>`"
                ))
            })?;
            let hex_sig = given
                .trim()
                .strip_prefix("sha256=")
                .ok_or_else(|| refuse(&format!("`{name}` must start with `sha256=`")))?;
            let sig = hex::decode(hex_sig)
                .map_err(|_| refuse(&format!("`{name}` is not hexadecimal after `sha256=`")))?;
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
                .map_err(|e| refuse(&e.to_string()))?;
            mac.update(&call.body);
            mac.verify_slice(&sig)
                .map_err(|_| refuse("the signature does not match the body"))
        }
    }
}

/// The run's inputs: the trigger's `inputs` templates rendered over `body` and `query`,
/// or, when it has none, the body's top-level fields that are declared inputs.
fn inputs_of(
    target: &Target,
    hook: &WebhookTrigger,
    call: &HookCall,
) -> Result<BTreeMap<String, String>, HookError> {
    let bad = |message: String| HookError::BadBody { message };
    let body: serde_json::Value = if call.body.iter().all(u8::is_ascii_whitespace) {
        serde_json::json!({})
    } else {
        serde_json::from_slice(&call.body)
            .map_err(|e| bad(format!("the body is not JSON: {e}; send a JSON object")))?
    };
    if !hook.inputs.is_empty() {
        let env = minijinja::Environment::new();
        let ctx = minijinja::context! { body => body, query => call.query };
        let mut out = BTreeMap::new();
        for (name, text) in &hook.inputs {
            let value = env.render_str(text, &ctx).map_err(|e| {
                bad(format!(
                    "input `{name}` (`{text}`) cannot be made from this call: {e}"
                ))
            })?;
            out.insert(name.clone(), value);
        }
        return Ok(out);
    }
    let serde_json::Value::Object(fields) = body else {
        return Err(bad(
            "the body must be a JSON object whose fields are the workflow's inputs".into(),
        ));
    };
    let declared = &target.inputs;
    let mut out = BTreeMap::new();
    for (name, value) in fields {
        if !declared.contains(&name) {
            let known: Vec<&str> = declared.iter().map(String::as_str).collect();
            return Err(bad(format!(
                "field `{name}` is not an input of `{}`; its inputs are: {}",
                target.workflow_id,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        let text = match value {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        out.insert(name, text);
    }
    Ok(out)
}
