//! `cron` triggers: which fires are due ([`plan_fires`], pure) and the loop that claims
//! and starts them.
//!
//! Invariants: a fire is started only after [`nexus_store::SqliteStore::claim_fire`]
//! stored it, so a restart or a second process on the same database never starts it
//! again; a trigger armed for the first time stores "now" as its last fire, so it does not
//! catch up on a past it never knew; fires missed while nothing ran the trigger (the
//! machine slept, the app was closed) follow the trigger's `catch_up`.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use nexus_engine::plan::Schedule;
use nexus_engine::workflow::{CatchUp, CronTrigger, DEFAULT_MAX_CATCH_UP};
use tokio_util::sync::CancellationToken;

use super::{Inner, Target, TriggerEvent, rfc3339};

/// A fire at most this old when it is noticed counts as on time, not missed (the
/// system clock re-reads the time every 30 s; a busy machine may be late).
pub const ON_TIME_MS: i64 = 60_000;

/// The most missed fires counted backwards when planning (a per-second schedule after a
/// week asleep would be 600,000); beyond it the count shown is "at least".
const MAX_COUNTED: usize = 10_000;

/// The fires due at `now` for a trigger whose last stored fire is `last`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fires {
    /// The fires to start, oldest first.
    pub run: Vec<DateTime<Utc>>,
    /// How many fires after `last` are not started (missed and left out by `catch_up`),
    /// counted up to 10,000.
    pub skipped: usize,
    /// The newest fire at or before `now` after `last`: stored as the last fire once
    /// the fires are handled.
    pub latest: Option<DateTime<Utc>>,
}

/// Plans the fires in `(last, now]` of `schedule` under `catch_up` (`cap`: the most
/// fires `catch_up: all` starts, default 10). A fire within [`ON_TIME_MS`] of `now`
/// always runs; older ones are missed: `none` starts none of them, `latest` the newest
/// one, `all` the newest `cap`, oldest first (Windmill and Kubernetes CronJob
/// `startingDeadlineSeconds` do the same: a bounded catch-up, never an unbounded burst).
pub fn plan_fires(
    schedule: &Schedule,
    last: DateTime<Utc>,
    now: DateTime<Utc>,
    catch_up: CatchUp,
    cap: Option<u32>,
) -> Fires {
    let keep = match catch_up {
        CatchUp::All => usize::try_from(cap.unwrap_or(DEFAULT_MAX_CATCH_UP).max(1)).unwrap_or(1),
        CatchUp::None | CatchUp::Latest => 1,
    };
    // Newest first, walking back from `now`.
    let mut newest: VecDeque<DateTime<Utc>> = VecDeque::new();
    let mut total = 0usize;
    let mut at = schedule.latest_at_or_before(now);
    while let Some(fire) = at {
        if fire <= last || total >= MAX_COUNTED {
            break;
        }
        total += 1;
        if newest.len() < keep {
            newest.push_back(fire);
        }
        at = schedule.latest_before(fire);
    }
    let latest = newest.front().copied();
    let on_time = |t: &DateTime<Utc>| (now - *t).num_milliseconds() <= ON_TIME_MS;
    let mut run: Vec<DateTime<Utc>> = match catch_up {
        CatchUp::None => newest.iter().copied().filter(on_time).take(1).collect(),
        CatchUp::Latest | CatchUp::All => newest.iter().copied().collect(),
    };
    run.reverse();
    Fires {
        skipped: total - run.len(),
        run,
        latest,
    }
}

/// Runs one cron trigger until `cancel`: arms it, then at each fire claims it and hands
/// it to the overlap policy ([`super::Inner::fire`]).
pub(super) async fn run(
    inner: Arc<Inner>,
    target: Target,
    cron: CronTrigger,
    cancel: CancellationToken,
) {
    let schedule = match Schedule::of(&cron) {
        Ok(s) => s,
        Err(message) => return inner.problem(&target, message),
    };
    let store = match inner.desktop.store().await {
        Ok(s) => s,
        Err(e) => return inner.problem(&target, e.to_string()),
    };
    let (wf, name) = (target.workflow_id.as_str(), target.name.as_str());
    let mut last = match store.last_fire(wf, name).await {
        Ok(Some(t)) => t,
        Ok(None) => {
            let now = inner.clock.now();
            if let Err(e) = store.claim_fire(wf, name, now).await {
                return inner.problem(&target, e.to_string());
            }
            now
        }
        Err(e) => return inner.problem(&target, e.to_string()),
    };
    let now = inner.clock.now();
    inner.emit(TriggerEvent::Armed {
        file: target.file.clone(),
        workflow_id: wf.to_string(),
        trigger: name.to_string(),
        kind: "cron".to_string(),
        next_fire: schedule.next_after(last.max(now)).map(|t| rfc3339(&t)),
    });
    // `biased`: once cancelled (a re-arm, a stop) the task never acts on a later time.
    while !cancel.is_cancelled() {
        let now = inner.clock.now();
        let fires = plan_fires(&schedule, last, now, cron.catch_up, cron.max_catch_up);
        if fires.skipped > 0 {
            inner.emit(TriggerEvent::Skipped {
                workflow_id: wf.to_string(),
                trigger: name.to_string(),
                fire_at: fires.latest.map(|t| rfc3339(&t)),
                reason: format!(
                    "{}{} fire(s) missed while nothing ran this trigger were left out (catch_up: {})",
                    fires.skipped,
                    if fires.skipped >= MAX_COUNTED { "+" } else { "" },
                    catch_up_name(cron.catch_up)
                ),
            });
        }
        for fire in &fires.run {
            if cancel.is_cancelled() {
                return;
            }
            match store.claim_fire(wf, name, *fire).await {
                Ok(true) => {
                    let catching_up = fires.run.len() > 1;
                    inner
                        .fire(&target, Some(*fire), cron.inputs.clone(), catching_up)
                        .await;
                }
                Ok(false) => {}
                Err(e) => inner.problem(&target, e.to_string()),
            }
        }
        if let Some(latest) = fires.latest {
            // Marks the fires left out as handled (a no-op when the newest one ran).
            if let Err(e) = store.claim_fire(wf, name, latest).await {
                inner.problem(&target, e.to_string());
            }
        }
        last = match store.last_fire(wf, name).await {
            Ok(Some(t)) => t.max(last),
            _ => fires.latest.unwrap_or(last).max(last),
        };
        let next = schedule.next_after(last.max(now));
        inner.set_times(&target, next, Some(last));
        inner.emit(TriggerEvent::Waiting {
            workflow_id: wf.to_string(),
            trigger: name.to_string(),
            now: rfc3339(&now),
            next_fire: next.map(|t| rfc3339(&t)),
        });
        let Some(next) = next else {
            cancel.cancelled().await;
            return;
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => return,
            () = inner.clock.sleep_until(next) => {}
        }
    }
}

fn catch_up_name(c: CatchUp) -> &'static str {
    match c {
        CatchUp::None => "none",
        CatchUp::Latest => "latest",
        CatchUp::All => "all",
    }
}
