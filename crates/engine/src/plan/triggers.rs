//! Checks of a workflow's `triggers:` (see [`crate::workflow::Trigger`]) and the
//! compiled form of a `cron` schedule ([`Schedule`]), shared by validation and by what
//! runs the triggers, so a schedule the editor accepts is the schedule that fires.
//!
//! Invariant: a workflow whose triggers pass these checks can be armed: its schedules
//! parse, its time zones exist, every input a trigger gives is declared, and every
//! required input is given (a webhook's come from the request, checked per request).

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

use super::report::{At, Ctx, did_you_mean};
use crate::diagnostic::DiagnosticCode;
use crate::workflow::{
    CatchUp, CronTrigger, FileTrigger, InputType, MAX_WEBHOOK_WAIT_MS, Respond, Trigger,
    WebhookAuth, WebhookTrigger, Workflow,
};

/// A parsed `cron` trigger: its pattern and time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    zone: chrono_tz::Tz,
}

impl Schedule {
    /// Parses `trigger`'s pattern (5 fields, or 6 with seconds first) and time zone
    /// (IANA name; default this machine's zone, UTC when it cannot be told).
    ///
    /// # Errors
    /// A sentence naming what is wrong, for a diagnostic or a log line.
    pub fn of(trigger: &CronTrigger) -> Result<Self, String> {
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .build()
            .parse(&trigger.schedule)
            .map_err(|e| format!("the cron pattern `{}` is not valid: {e}", trigger.schedule))?;
        let zone = match &trigger.timezone {
            Some(name) => name.parse::<chrono_tz::Tz>().map_err(|_| {
                format!("`{name}` is not an IANA time zone (e.g. `Europe/Berlin`, `UTC`)")
            })?,
            None => local_zone(),
        };
        Ok(Schedule { cron, zone })
    }

    /// The time zone the pattern is read in.
    pub fn zone(&self) -> chrono_tz::Tz {
        self.zone
    }

    /// The first fire strictly after `after`, or `None` when the pattern never fires
    /// again (e.g. a year in the past).
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.zone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

impl Schedule {
    /// The last fire at or before `at`, or `None` when the pattern never fired before.
    pub fn latest_at_or_before(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&at.with_timezone(&self.zone), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last fire strictly before `before`.
    pub fn latest_before(&self, before: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&before.with_timezone(&self.zone), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

/// This machine's IANA time zone, UTC when it cannot be told.
fn local_zone() -> chrono_tz::Tz {
    iana_time_zone::get_timezone()
        .ok()
        .and_then(|name| name.parse().ok())
        .unwrap_or(chrono_tz::UTC)
}

/// The webhook methods accepted (a hook starts a run, so not `GET`).
const METHODS: &[&str] = &["POST", "PUT", "PATCH"];

/// Checks every trigger of `wf` (see the module header).
pub(super) fn check_triggers(cx: &mut Ctx<'_>, wf: &Workflow) {
    let mut names = HashSet::new();
    for (i, trigger) in wf.triggers.iter().enumerate() {
        let span = cx.locs.triggers.get(i).copied().flatten();
        let at = |field: &str| At {
            step: None,
            field: format!("triggers[{i}].{field}"),
            span,
        };
        let name = trigger.name();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            let msg = format!("trigger name `{name}` is not valid");
            cx.push(at("name").diag(
                DiagnosticCode::InvalidId,
                msg,
                "use letters, digits, `-` and `_`",
            ));
        } else if !names.insert(name.to_string()) {
            let msg = format!("two triggers are named `{name}`");
            cx.push(at("name").diag(
                DiagnosticCode::DuplicateId,
                msg,
                "give each trigger of the same kind its own `name`",
            ));
        }
        match trigger {
            Trigger::Cron(t) => check_cron(cx, wf, t, &at),
            Trigger::Webhook(t) => check_webhook(cx, wf, t, &at),
            Trigger::File(t) => check_file(cx, wf, t, &at),
            Trigger::Manual(_) => {}
        }
    }
}

fn check_cron(cx: &mut Ctx<'_>, wf: &Workflow, t: &CronTrigger, at: &dyn Fn(&str) -> At) {
    if let Err(message) = Schedule::of(t) {
        let field = if message.contains("time zone") {
            "timezone"
        } else {
            "schedule"
        };
        cx.push(at(field).diag(
            DiagnosticCode::InvalidValue,
            message,
            "write 5 fields (minute hour day month weekday, e.g. `0 9 * * 1-5`) or 6 with seconds first, and an IANA zone name",
        ));
    }
    if t.max_catch_up == Some(0) || (t.max_catch_up.is_some() && t.catch_up != CatchUp::All) {
        cx.push(at("max_catch_up").diag(
            DiagnosticCode::InvalidValue,
            "`max_catch_up` must be at least 1 and goes with `catch_up: all`".to_string(),
            "remove it, or set `catch_up: all` and a cap of 1 or more",
        ));
    }
    check_given_inputs(cx, wf, &t.inputs, &[], at);
}

fn check_webhook(cx: &mut Ctx<'_>, wf: &Workflow, t: &WebhookTrigger, at: &dyn Fn(&str) -> At) {
    let path_ok = !t.path.is_empty()
        && t.path.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if !path_ok {
        let msg = format!("webhook path `{}` is not valid", t.path);
        cx.push(at("path").diag(
            DiagnosticCode::InvalidValue,
            msg,
            "use segments of letters, digits, `-` and `_` joined by `/`, e.g. `github/push` (it is served under `/hooks/`)",
        ));
    }
    if let Some(m) = &t.method
        && !METHODS.contains(&m.to_ascii_uppercase().as_str())
    {
        let msg = format!("webhook method `{m}` is not accepted");
        cx.push(at("method").diag(
            DiagnosticCode::InvalidValue,
            msg,
            "use `POST` (the default), `PUT` or `PATCH`",
        ));
    }
    let secret_env = match &t.auth {
        WebhookAuth::Token { secret_env } | WebhookAuth::HmacSha256 { secret_env, .. } => {
            Some(secret_env)
        }
        WebhookAuth::None => None,
    };
    if let Some(var) = secret_env
        && (var.is_empty() || !var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        let msg = format!("`{var}` is not an environment variable name");
        cx.push(at("auth.secret_env").diag(
            DiagnosticCode::InvalidValue,
            msg,
            "name the variable that holds the secret, e.g. `LEADS_HOOK_SECRET`; never write the secret itself in the file",
        ));
    }
    match (t.respond, t.wait_ms) {
        (Respond::Accepted, Some(_)) => cx.push(at("wait_ms").diag(
            DiagnosticCode::InvalidValue,
            "`wait_ms` goes with `respond: wait`".to_string(),
            "remove it, or set `respond: wait`",
        )),
        (_, Some(ms)) if ms == 0 || ms > MAX_WEBHOOK_WAIT_MS => cx.push(at("wait_ms").diag(
            DiagnosticCode::InvalidValue,
            format!("`wait_ms: {ms}` is out of range"),
            &format!("use 1 to {MAX_WEBHOOK_WAIT_MS} milliseconds"),
        )),
        _ => {}
    }
    if t.rate_per_minute == Some(0) {
        cx.push(at("rate_per_minute").diag(
            DiagnosticCode::InvalidValue,
            "`rate_per_minute` must be at least 1".to_string(),
            "remove it (60 a minute) or give a positive number",
        ));
    }
    let env = minijinja::Environment::new();
    for (name, text) in &t.inputs {
        check_declared(cx, wf, name, at);
        if let Err(e) = env.template_from_str(text) {
            let msg = format!("the template of input `{name}` does not compile: {e}");
            cx.push(at(&format!("inputs.{name}")).diag(
                DiagnosticCode::TemplateSyntax,
                msg,
                "write e.g. `{{ body.title }}` or `{{ query.page }}`",
            ));
        }
    }
}

fn check_file(cx: &mut Ctx<'_>, wf: &Workflow, t: &FileTrigger, at: &dyn Fn(&str) -> At) {
    if t.paths.is_empty() || t.paths.iter().any(|p| p.trim().is_empty()) {
        cx.push(at("paths").diag(
            DiagnosticCode::MissingField,
            "a file trigger needs at least one path to watch".to_string(),
            "list files or folders, relative to the workflow file, e.g. `paths: [inbox]`",
        ));
    }
    let input = t.input.as_deref().unwrap_or("path");
    match wf.inputs.get(input) {
        Some(spec) if matches!(spec.kind, InputType::String | InputType::File) => {}
        Some(_) => {
            let msg = format!(
                "input `{input}` receives the changed path, so it must be a string or a file"
            );
            cx.push(at("input").diag(
                DiagnosticCode::BadInput,
                msg,
                "declare it with `type: string` (the path) or `type: file` (the contents)",
            ));
        }
        None => {
            let msg = format!(
                "the file trigger gives the changed path as input `{input}`, which the workflow does not declare"
            );
            cx.push(at("input").diag(
                DiagnosticCode::UnknownInput,
                msg,
                &format!("declare `{input}` under `inputs:` or name another input with `input:`"),
            ));
        }
    }
    check_given_inputs(cx, wf, &t.inputs, &[input], at);
}

/// The inputs a trigger gives must be declared, and the required ones (no default) must
/// be given or be in `supplied`.
fn check_given_inputs(
    cx: &mut Ctx<'_>,
    wf: &Workflow,
    given: &BTreeMap<String, String>,
    supplied: &[&str],
    at: &dyn Fn(&str) -> At,
) {
    for name in given.keys() {
        check_declared(cx, wf, name, at);
    }
    for (name, spec) in &wf.inputs {
        if spec.default.is_none() && !given.contains_key(name) && !supplied.contains(&name.as_str())
        {
            let msg = format!("input `{name}` is required, and this trigger does not give it");
            cx.push(at("inputs").diag(
                DiagnosticCode::MissingInput,
                msg,
                &format!(
                    "add `{name}: ...` under the trigger's `inputs:`, or give the input a `default`"
                ),
            ));
        }
    }
}

fn check_declared(cx: &mut Ctx<'_>, wf: &Workflow, name: &str, at: &dyn Fn(&str) -> At) {
    if !wf.inputs.contains_key(name) {
        let msg = format!(
            "the trigger gives input `{name}`, which the workflow does not declare{}",
            did_you_mean(name, wf.inputs.keys().map(String::as_str))
        );
        cx.push(at(&format!("inputs.{name}")).diag(
            DiagnosticCode::UnknownInput,
            msg,
            "declare it under `inputs:` or remove it from the trigger",
        ));
    }
}
