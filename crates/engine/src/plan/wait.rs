//! The planner of `wait` steps: exactly one of `duration` (positive) and `until` (a time
//! in RFC 3339, checked now when it has no template syntax).

use crate::diagnostic::DiagnosticCode;
use crate::plan::Action;
use crate::plan::step::StepPlanner;
use crate::workflow::WaitStep;

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
