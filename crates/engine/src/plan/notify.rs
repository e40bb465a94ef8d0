//! Checks of a workflow's `notifications:` (see [`crate::workflow::Notification`]).
//!
//! Invariant: a workflow whose notifications pass these checks can send them: each is
//! sent on something and to somewhere, its URL is `http` or `https` (on this machine in a `local_only`
//! workflow, which sends nothing off it), and its secret is named by a valid
//! environment variable name.

use super::report::{At, Ctx};
use super::tools::is_loopback;
use crate::diagnostic::DiagnosticCode;
use crate::workflow::Workflow;

/// Reports what is wrong with `wf`'s notifications, each located at its entry.
pub(super) fn check_notifications(cx: &mut Ctx<'_>, wf: &Workflow) {
    for (i, n) in wf.notifications.iter().enumerate() {
        let span = cx.locs.notifications.get(i).copied().flatten();
        let at = |field: &str| At {
            step: None,
            field: format!("notifications[{i}].{field}"),
            span,
        };
        if n.on.is_empty() {
            cx.push(at("on").diag(
                DiagnosticCode::InvalidValue,
                "this notification is sent on nothing: `on` is empty".to_string(),
                "list what to send it on: `succeeded`, `failed`, `cancelled`, `waiting_for_human` (or leave `on` out for `[failed]`)",
            ));
        }
        if n.webhook.is_none() && !n.desktop {
            cx.push(at("webhook").diag(
                DiagnosticCode::InvalidValue,
                "this notification goes nowhere: it has neither a `webhook` nor `desktop: true`".to_string(),
                "add `webhook: {url: ...}` to POST it, or `desktop: true` to show it on the desktop",
            ));
        }
        let Some(webhook) = &n.webhook else {
            continue;
        };
        let url = &webhook.url;
        let host = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .and_then(|u| u.host_str().map(str::to_owned));
        match host {
            None => cx.push(at("webhook.url").diag(
                DiagnosticCode::InvalidValue,
                format!("`{url}` is not an http or https URL"),
                "give the full address to POST to, e.g. `https://chat.example.com/hooks/ops`",
            )),
            Some(h) if wf.local_only && !is_loopback(&h) => cx.push(at("webhook.url").diag(
                DiagnosticCode::InvalidValue,
                format!("the notification goes to `{h}`, but the workflow is `local_only`"),
                "in a local_only workflow a notification may go only to this machine (localhost, 127.0.0.1, ::1)",
            )),
            Some(_) => {}
        }
        if let Some(var) = &webhook.secret_env
            && (var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        {
            cx.push(at("webhook.secret_env").diag(
                DiagnosticCode::InvalidValue,
                format!("`{var}` is not an environment variable name"),
                "name the variable that holds the signing secret, e.g. `OPS_HOOK_SECRET`; never write the secret itself in the file",
            ));
        }
    }
}
