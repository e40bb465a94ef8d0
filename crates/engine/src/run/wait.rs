//! The executor of `wait` steps: the deadline is computed from stored facts (the
//! dependencies' records, the list's start, or the rendered time), then the step sleeps
//! until it, or until the run is cancelled.
//!
//! Invariant: the deadline of a duration does not depend on when this process started,
//! so a resumed run waits only for what is left (a deadline already past finishes at
//! once).

use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::scheduler::Sched;
use super::{StepOutput, ms};
use crate::events::StepStatus;
use crate::store::StepRecord;

/// When the wait at `i` ends, or why the step fails.
pub(super) fn deadline(
    s: &Sched,
    i: usize,
    duration: Option<std::time::Duration>,
    until: Option<&str>,
) -> Result<DateTime<Utc>, String> {
    let step = &s.plan.steps[i];
    if let Some(template) = until {
        let text = s
            .render_for(i, template)
            .map_err(|e| format!("`until` failed to render: {e}"))?;
        return DateTime::parse_from_rfc3339(text.trim())
            .map(|t| t.with_timezone(&Utc))
            .map_err(|e| format!("`until` rendered `{text}`, which is not an RFC 3339 time: {e}"));
    }
    let duration = duration.unwrap_or_default();
    // The latest end among the dependencies, from their stored records.
    let base = step
        .needs
        .iter()
        .filter_map(|&d| {
            let id = s.frame.path(&s.plan.steps[d].id);
            s.records.iter().rev().find(|r| r.step_id == id)
        })
        .map(|r| {
            r.started_at
                + chrono::Duration::milliseconds(i64::try_from(r.duration_ms).unwrap_or(i64::MAX))
        })
        .max()
        .unwrap_or(s.frame.started_at);
    let span =
        chrono::Duration::from_std(duration).map_err(|_| "`duration` is too long".to_string())?;
    Ok(base + span)
}

/// Sleeps until `deadline` (or until `cancel`), then finishes `rec`.
pub(super) async fn wait(
    mut rec: StepRecord,
    deadline: DateTime<Utc>,
    cancel: CancellationToken,
) -> (StepRecord, Option<StepOutput>) {
    let t0 = Instant::now();
    let left = (deadline - Utc::now()).to_std().unwrap_or_default();
    let finished = tokio::select! {
        () = tokio::time::sleep(left) => true,
        () = cancel.cancelled() => false,
    };
    rec.duration_ms = ms(t0.elapsed());
    let until = deadline.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    if !finished {
        rec.status = StepStatus::Cancelled;
        rec.error = Some(format!("cancelled while waiting until {until}"));
        return (rec, None);
    }
    let json = serde_json::json!({ "until": until, "waited_ms": rec.duration_ms });
    rec.output = Some(until.clone());
    rec.output_json = Some(json.clone());
    (
        rec,
        Some(StepOutput {
            text: until,
            json: Some(json),
        }),
    )
}
