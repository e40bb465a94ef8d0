//! The executor of `switch` steps: the cases' conditions are evaluated in order, on the
//! scheduler task; the first that holds is taken, else `default`. The steps of the other
//! cases are skipped by the join rules (see [`super::join`]).

use std::time::Instant;

use chrono::Utc;

use super::records::record_for;
use super::scheduler::Sched;
use super::{StepOutput, ms};
use crate::events::StepStatus;
use crate::store::StepRecord;

/// The name and position the switch records when no case holds.
const DEFAULT_CASE: (&str, i64) = ("default", -1);

/// Evaluates the cases of the switch at `i` (name and compiled condition each).
pub(super) fn choose(
    s: &Sched,
    i: usize,
    cases: &[(String, String)],
) -> (StepRecord, Option<StepOutput>) {
    let t0 = Instant::now();
    let step = &s.plan.steps[i];
    let mut rec = record_for(step, StepStatus::Succeeded, None, Utc::now());
    let mut taken = None;
    for (n, (name, cond)) in cases.iter().enumerate() {
        match s.render_for(i, cond) {
            Ok(v) if v.trim() == "true" => {
                taken = Some((name.as_str(), i64::try_from(n).unwrap_or(i64::MAX)));
                break;
            }
            Ok(_) => {}
            Err(e) => {
                rec.status = StepStatus::Failed;
                rec.error = Some(format!("case `{name}` failed to evaluate: {e}"));
                rec.duration_ms = ms(t0.elapsed());
                return (rec, None);
            }
        }
    }
    let (name, index) = taken.unwrap_or(DEFAULT_CASE);
    let json = serde_json::json!({ "case": name, "index": index });
    rec.output = Some(name.to_string());
    rec.output_json = Some(json.clone());
    rec.duration_ms = ms(t0.elapsed());
    let out = StepOutput {
        text: name.to_string(),
        json: Some(json),
    };
    (rec, Some(out))
}
