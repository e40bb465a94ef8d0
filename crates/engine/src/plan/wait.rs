//! The planners of `wait` steps — exactly one of `duration` (positive) and `until` (a
//! time in RFC 3339, checked now when it has no template syntax) — and of `event` steps
//! (a name of letters, digits, `-`, `_` and `.`; a positive `within`; `timeout_output`
//! only with `within`).

use crate::diagnostic::DiagnosticCode;
use crate::plan::Action;
use crate::plan::step::StepPlanner;
use crate::workflow::{EventStep, WaitStep};

/// Plans a `wait` step.
pub(super) fn plan(p: &mut StepPlanner<'_, '_>, step: &WaitStep) -> Action {
    match (step.duration, &step.until) {
        (Some(_), Some(_)) | (None, None) => {
            p.report(
                "duration",
                DiagnosticCode::MissingField,
                "a `wait` step needs exactly one of `duration` and `until`".into(),
                "write `duration: 10m` to wait a while, or `until: 2026-12-24T09:00:00Z` to wait for a time",
            );
            Action::Wait {
                duration: None,
                until: None,
            }
        }
        (Some(d), None) => {
            if d.is_zero() {
                p.report(
                    "duration",
                    DiagnosticCode::InvalidValue,
                    "`duration` is zero".into(),
                    "give a positive duration such as `30s`",
                );
            }
            Action::Wait {
                duration: Some(d),
                until: None,
            }
        }
        (None, Some(text)) => {
            if !text.contains('{')
                && let Err(e) = chrono::DateTime::parse_from_rfc3339(text.trim())
            {
                p.report(
                    "until",
                    DiagnosticCode::InvalidValue,
                    format!("`until: {text}` is not an RFC 3339 time: {e}"),
                    "write a time with its offset, e.g. `2026-12-24T09:00:00Z`",
                );
            }
            Action::Wait {
                duration: None,
                until: p.compile_named("until", "until", text.clone()),
            }
        }
    }
}

/// The longest event name (bytes); names travel in URL paths.
pub const MAX_EVENT_NAME: usize = 100;

/// Whether `name` may name an event: 1 to [`MAX_EVENT_NAME`] ASCII letters, digits,
/// `-`, `_` and `.` (so that it is one URL path segment as it is).
pub fn valid_event_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_EVENT_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Plans an `event` step whose id is `id`.
pub(super) fn plan_event(p: &mut StepPlanner<'_, '_>, id: &str, step: &EventStep) -> Action {
    let name = step.event.clone().unwrap_or_else(|| id.to_string());
    if !valid_event_name(&name) {
        p.report(
            "event",
            DiagnosticCode::InvalidValue,
            format!("`{name}` cannot name an event"),
            "use 1 to 100 letters, digits, `-`, `_` or `.`, e.g. `event: payment-received`",
        );
    }
    if step.within.is_some_and(|d| d.is_zero()) {
        p.report(
            "within",
            DiagnosticCode::InvalidValue,
            "`within` is zero".into(),
            "give a positive duration such as `30m`, or leave it out to wait forever",
        );
    }
    if step.within.is_none() && step.timeout_output.is_some() {
        p.report(
            "timeout_output",
            DiagnosticCode::InvalidValue,
            "`timeout_output` without `within` is never used".into(),
            "add `within: 1h` (how long to wait), or remove `timeout_output`",
        );
    }
    Action::Event {
        name,
        within: step.within,
        timeout_output: step.timeout_output.clone(),
    }
}
