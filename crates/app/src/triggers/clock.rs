//! The wall clock the cron triggers read, behind a trait so tests drive it.
//!
//! Invariant: [`Clock::sleep_until`] may return early (callers re-read [`Clock::now`] and
//! decide again); the system clock wakes at least every [`RECHECK`], so a machine that
//! slept (monotonic timers stop, the wall clock does not) is noticed within that time.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

/// How often the system clock wakes a sleeping cron trigger to re-read the time.
pub const RECHECK: Duration = Duration::from_secs(30);

/// A wall clock.
#[async_trait]
pub trait Clock: Send + Sync {
    /// Now, UTC.
    fn now(&self) -> DateTime<Utc>;
    /// Returns at `at` or earlier.
    async fn sleep_until(&self, at: DateTime<Utc>);
}

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

#[async_trait]
impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        let left = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        tokio::time::sleep(left.min(RECHECK)).await;
    }
}

/// A clock that moves only when told ([`ManualClock::set`]), for tests of schedules,
/// missed fires and restarts.
#[derive(Debug)]
pub struct ManualClock {
    now: watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock showing `now`.
    pub fn new(now: DateTime<Utc>) -> Self {
        ManualClock {
            now: watch::Sender::new(now),
        }
    }

    /// Moves the clock to `now` (forwards or backwards) and wakes the sleepers.
    pub fn set(&self, now: DateTime<Utc>) {
        self.now.send_replace(now);
    }
}

#[async_trait]
impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.borrow()
    }

    async fn sleep_until(&self, at: DateTime<Utc>) {
        let mut rx = self.now.subscribe();
        // Returns when the clock reaches `at`; a sender that is gone never moves again.
        let _ = rx.wait_for(|now| *now >= at).await;
    }
}
