//! Circuit breakers per model endpoint.
//!
//! One [`Breaker`] guards one key, the `provider:model` pair a call goes to (for example
//! `"openai:gpt-4o-mini"`, see [`breaker_key`]). The design follows resilience4j, Polly and
//! Failsafe, retuned for a laptop that makes a handful of calls a minute rather than
//! thousands:
//!
//! ```text
//!            trip (rate or consecutive failures)
//!   Closed ──────────────────────────────────────▶ Open { until }
//!     ▲                                               │  now >= until (on the next
//!     │ `half_open_successes` probes succeeded        ▼  `try_acquire` / `advance`)
//!     └──────────────────────────────────────────  HalfOpen ── any probe fails ──▶ Open
//!                                                              (trips + 1, longer)
//! ```
//!
//! - **Closed**: every call is let through. The outcomes of the last
//!   [`BreakerConfig::window`] counted calls are kept (a count-based sliding window). The
//!   breaker trips when a failure brings the window's failure rate to at least
//!   [`BreakerConfig::failure_rate`] with at least [`BreakerConfig::min_calls`] calls in the
//!   window, or when [`BreakerConfig::consecutive_failures`] failures come in a row (no
//!   minimum for that one). Only a failure can trip the breaker: unlike resilience4j, which
//!   re-evaluates the rate after every call, a success never opens it.
//! - **Open**: every call is refused until `until`. The open time grows with each trip that
//!   was not followed by a full close: `open_base × open_multiplier^(trips − 1)`, capped at
//!   `max_open`; a `Retry-After` carried by the tripping failure lengthens it (never past
//!   `max_open`).
//! - **HalfOpen**: up to [`BreakerConfig::half_open_probes`] trial calls may be in flight at
//!   once. One failed probe re-opens the breaker (one more trip, so a longer open time);
//!   [`BreakerConfig::half_open_successes`] successful probes close it, clearing the window
//!   and the trip count.
//!
//! Which errors count is the caller's decision, expressed as a [`CallOutcome`]: provider
//! faults (5xx, 429, timeouts, connection refused) are [`CallOutcome::Failure`]; errors that
//! say nothing about the endpoint's health (a 400 invalid request, context overflow, content
//! policy, a cancelled call) are [`CallOutcome::Ignored`].
//!
//! Nothing here reads a clock or sleeps: every method that depends on time takes `now`, so
//! the logic is deterministic and the tests need no waiting. The engine keeps a [`Breakers`]
//! registry behind one mutex and persists [`BreakerSnapshot`]s (one JSON text per key) so a
//! breaker that opened before a restart is still open after it.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// The registry key of a model endpoint: `"{provider}:{model}"`, e.g. `"openai:gpt-4o-mini"`.
pub fn breaker_key(provider: &str, model: &str) -> String {
    format!("{provider}:{model}")
}

/// Tuning of every breaker in a [`Breakers`] registry.
///
/// Serialized (settings file, IPC) with the durations as whole milliseconds under
/// `open_base_ms` and `max_open_ms`; every field is optional on input and defaults to
/// [`BreakerConfig::default`]; unknown fields are rejected. Deserializing does not check the
/// values: call [`BreakerConfig::validate`].
///
/// The defaults are much smaller than those of the server-side libraries this follows.
/// resilience4j's `CircuitBreakerConfig` defaults to a 50% failure rate over a count-based
/// window of 100 calls, at least 100 calls, 60 s open and 10 half-open calls; Polly v8's
/// `CircuitBreakerStrategyOptions` to a 10% failure ratio over 30 s of sampling, at least
/// 100 calls and a 5 s break. Those assume hundreds of calls a minute. A laptop running a
/// workflow makes a few calls a minute per model, so a minimum of 100 calls would never be
/// reached and the breaker would never trip; ours decides on the last 10 calls, trips early
/// on 3 failures in a row, and backs off exponentially instead of probing a dead endpoint
/// every few seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Number of most recent counted calls kept while closed (count-based sliding window).
    /// Default 10 (resilience4j: 100). Must be at least 1.
    pub window: usize,
    /// Calls that must be in the window before the failure rate can trip the breaker.
    /// Default 5 (resilience4j and Polly: 100). Must not exceed `window`; 0 means no minimum.
    pub min_calls: usize,
    /// Failure rate, as a fraction in `(0, 1]`, at or above which the breaker trips
    /// (`failures / calls in window >= failure_rate`). Default 0.5 (resilience4j: 50%,
    /// Polly: 0.1).
    pub failure_rate: f64,
    /// Failures in a row that trip the breaker whatever the window holds (Polly v7's
    /// classic breaker, Failsafe's failure threshold). Default 3; 0 disables this trigger.
    pub consecutive_failures: u32,
    /// Open time after the first trip. Serialized as `open_base_ms` (milliseconds).
    /// Default 30 s (resilience4j: 60 s, Polly: 5 s). Must be positive.
    #[serde(rename = "open_base_ms", with = "duration_ms")]
    pub open_base: Duration,
    /// Factor applied to the open time at each further trip without a full close:
    /// `open_base × open_multiplier^(trips − 1)`. Default 2.0 (as resilience4j's exponential
    /// wait interval). Must be finite and at least 1.
    pub open_multiplier: f64,
    /// Longest open time, also the cap on a `Retry-After`. Serialized as `max_open_ms`
    /// (milliseconds). Default 10 min. Must be at least `open_base`.
    #[serde(rename = "max_open_ms", with = "duration_ms")]
    pub max_open: Duration,
    /// Trial calls allowed in flight at once while half-open. Default 1 (resilience4j: 10,
    /// Polly: 1). Must be at least 1.
    pub half_open_probes: u32,
    /// Successful trial calls that close a half-open breaker. Default 1 (Polly and
    /// Failsafe: 1). Must be at least 1.
    pub half_open_successes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            window: 10,
            min_calls: 5,
            failure_rate: 0.5,
            consecutive_failures: 3,
            open_base: Duration::from_secs(30),
            open_multiplier: 2.0,
            max_open: Duration::from_secs(10 * 60),
            half_open_probes: 1,
            half_open_successes: 1,
        }
    }
}

/// A [`BreakerConfig`] value out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid breaker config: `{field}` {problem}")]
pub struct BreakerConfigError {
    /// The field's name as written in the serialized config.
    pub field: &'static str,
    /// What is wrong with it.
    pub problem: &'static str,
}

impl BreakerConfig {
    /// Checks the ranges documented on each field. [`Breaker`] never panics on an invalid
    /// config (it treats a zero `window`, `half_open_probes` or `half_open_successes` as 1),
    /// but the behaviour would not be the one asked for.
    pub fn validate(&self) -> Result<(), BreakerConfigError> {
        let err = |field, problem| Err(BreakerConfigError { field, problem });
        if self.window == 0 {
            return err("window", "must be at least 1");
        }
        if self.min_calls > self.window {
            return err("min_calls", "must not exceed `window`");
        }
        if !(self.failure_rate > 0.0 && self.failure_rate <= 1.0) {
            return err("failure_rate", "must be in (0, 1]");
        }
        if self.open_base.is_zero() {
            return err("open_base_ms", "must be positive");
        }
        if !(self.open_multiplier.is_finite() && self.open_multiplier >= 1.0) {
            return err("open_multiplier", "must be finite and at least 1");
        }
        if self.max_open < self.open_base {
            return err("max_open_ms", "must be at least `open_base_ms`");
        }
        if self.half_open_probes == 0 {
            return err("half_open_probes", "must be at least 1");
        }
        if self.half_open_successes == 0 {
            return err("half_open_successes", "must be at least 1");
        }
        Ok(())
    }
}

/// The state of a breaker as seen by callers.
///
/// Serialized internally tagged: `{"state":"closed"}`,
/// `{"state":"open","until":"2025-01-01T12:00:30Z"}` (RFC 3339, UTC), `{"state":"half_open"}`.
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through; outcomes are counted in the window.
    Closed,
    /// Calls are refused until `until`; the first [`Breaker::try_acquire`] at or after it
    /// moves the breaker to `HalfOpen`.
    Open {
        /// When the open period ends.
        until: DateTime<Utc>,
    },
    /// A limited number of trial calls may go through.
    HalfOpen,
}

/// How a call was let through by [`Breaker::try_acquire`]; pass it back to
/// [`Breaker::record`]. Serialized as `"normal"` / `"probe"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// An ordinary call of a closed breaker.
    Normal,
    /// A trial call of a half-open breaker; it holds one of the `half_open_probes` slots
    /// until its outcome is recorded (record [`CallOutcome::Ignored`] if it was cancelled,
    /// or the slot stays taken).
    Probe,
}

/// The outcome of a call, as classified by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The endpoint answered.
    Success,
    /// A provider fault: 5xx, 429, timeout, connection failure, a stream cut short.
    Failure {
        /// The provider's `Retry-After`, if it sent one: the breaker, if this failure opens
        /// it, stays open at least this long (capped at [`BreakerConfig::max_open`]).
        retry_after: Option<Duration>,
    },
    /// Not the endpoint's fault (400 invalid request, context overflow, content policy,
    /// cancelled): not counted at all, but it frees a probe slot.
    Ignored,
}

/// A change of state, returned by [`Breaker::record`] and [`Breaker::advance`] so the engine
/// can emit it as an event.
///
/// Serialized as `{"from":{"state":"closed"},"to":{"state":"open","until":"…"},"reason":"…"}`.
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// State before.
    pub from: BreakerState,
    /// State after.
    pub to: BreakerState,
    /// Human-readable cause, e.g. `"3 consecutive failures (last: HTTP 503); open for 30s
    /// (trip 1)"`.
    pub reason: String,
}

/// The persisted form of a breaker: everything needed to restore it after a restart.
///
/// JSON-serialisable; the store keeps it as one JSON text column per key. Fields missing on
/// input take the values of a fresh closed breaker, and unknown fields are ignored, so rows
/// written by another version still load.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BreakerSnapshot {
    /// Stored state. An `Open` whose `until` has passed is kept as is; it becomes
    /// `HalfOpen` on the next call.
    pub state: BreakerState,
    /// Consecutive trips without a full close (0 when closed); sets the next open time.
    pub trips: u32,
    /// Counted outcomes in the sliding window, oldest first, `true` = failure. Kept as it was
    /// when the breaker tripped; cleared when it closes again.
    pub window: Vec<bool>,
    /// Counted failures in a row, reset by a counted success.
    pub consecutive_failures: u32,
    /// Probe calls in flight (half-open only). Restoring resets it to 0: the probes of a
    /// process that died never report.
    pub half_open_in_flight: u32,
    /// Successful probes so far in this half-open period.
    pub half_open_successes: u32,
    /// When the breaker last opened (the latest trip); `None` while closed.
    pub opened_at: Option<DateTime<Utc>>,
    /// The message of the most recent [`CallOutcome::Failure`] recorded, if one was given.
    pub last_failure: Option<String>,
}

impl Default for BreakerSnapshot {
    fn default() -> Self {
        Self {
            state: BreakerState::Closed,
            trips: 0,
            window: Vec::new(),
            consecutive_failures: 0,
            half_open_in_flight: 0,
            half_open_successes: 0,
            opened_at: None,
            last_failure: None,
        }
    }
}

/// The circuit breaker of one key. See the [module docs](self) for the state machine.
///
/// Usage: `try_acquire(now)`; on `Err(until)` do not call (fall back or fail fast); on
/// `Ok(admission)` make the call, then `record(now, admission, outcome, message)` exactly
/// once.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    state: BreakerState,
    trips: u32,
    window: VecDeque<bool>,
    consecutive_failures: u32,
    half_open_in_flight: u32,
    half_open_successes: u32,
    opened_at: Option<DateTime<Utc>>,
    last_failure: Option<String>,
}

impl Breaker {
    /// A closed breaker with an empty window.
    pub fn new(config: BreakerConfig) -> Self {
        Self::from_snapshot(config, BreakerSnapshot::default())
    }

    /// Restores a breaker persisted with [`Breaker::snapshot`], under `config` (which may
    /// differ from the one it was saved under: a window longer than `config.window` keeps
    /// only its newest entries). `half_open_in_flight` resets to 0, since probes of a dead
    /// process never finish; the half-open counters are dropped unless the state is
    /// `HalfOpen`. An `Open` state keeps its `until`.
    pub fn from_snapshot(config: BreakerConfig, snap: BreakerSnapshot) -> Self {
        let cap = config.window.max(1);
        let skip = snap.window.len().saturating_sub(cap);
        let window: VecDeque<bool> = snap.window.into_iter().skip(skip).collect();
        let half_open_successes = match snap.state {
            BreakerState::HalfOpen => snap.half_open_successes,
            BreakerState::Closed | BreakerState::Open { .. } => 0,
        };
        Self {
            config,
            state: snap.state,
            trips: snap.trips,
            window,
            consecutive_failures: snap.consecutive_failures,
            half_open_in_flight: 0,
            half_open_successes,
            opened_at: snap.opened_at,
            last_failure: snap.last_failure,
        }
    }

    /// The persisted form of this breaker (the stored state: an expired `Open` stays
    /// `Open`).
    pub fn snapshot(&self) -> BreakerSnapshot {
        BreakerSnapshot {
            state: self.state,
            trips: self.trips,
            window: self.window.iter().copied().collect(),
            consecutive_failures: self.consecutive_failures,
            half_open_in_flight: self.half_open_in_flight,
            half_open_successes: self.half_open_successes,
            opened_at: self.opened_at,
            last_failure: self.last_failure.clone(),
        }
    }

    /// The configuration this breaker runs under.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The state at `now`: an `Open` whose `until` has passed reads as `HalfOpen` (the
    /// stored state changes on the next [`Breaker::try_acquire`] or [`Breaker::advance`]).
    pub fn state(&self, now: DateTime<Utc>) -> BreakerState {
        match self.state {
            BreakerState::Open { until } if now >= until => BreakerState::HalfOpen,
            state => state,
        }
    }

    /// Whether the breaker is open and its open period not yet over at `now`.
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        matches!(self.state(now), BreakerState::Open { .. })
    }

    /// Moves an `Open` breaker whose `until` has passed to `HalfOpen` and returns that
    /// transition; otherwise changes nothing and returns `None`. [`Breaker::try_acquire`]
    /// does this itself; call it first only to get the transition as an event.
    pub fn advance(&mut self, now: DateTime<Utc>) -> Option<Transition> {
        match self.state {
            BreakerState::Open { until } if now >= until => {
                let from = self.state;
                self.state = BreakerState::HalfOpen;
                self.half_open_in_flight = 0;
                self.half_open_successes = 0;
                Some(Transition {
                    from,
                    to: BreakerState::HalfOpen,
                    reason: format!(
                        "open period ended; allowing {} trial call(s)",
                        self.config.half_open_probes.max(1)
                    ),
                })
            }
            _ => None,
        }
    }

    /// Asks to make a call at `now`.
    ///
    /// - Closed: `Ok(Admission::Normal)`.
    /// - Open: `Err(until)`, the end of the open period; at or after `until` the breaker
    ///   first moves to half-open.
    /// - HalfOpen: `Ok(Admission::Probe)` while fewer than `half_open_probes` probes are in
    ///   flight, reserving a slot; otherwise `Err(now)`: there is no fixed time, a slot
    ///   frees when a probe's outcome is recorded.
    pub fn try_acquire(&mut self, now: DateTime<Utc>) -> Result<Admission, DateTime<Utc>> {
        self.advance(now);
        match self.state {
            BreakerState::Closed => Ok(Admission::Normal),
            BreakerState::Open { until } => Err(until),
            BreakerState::HalfOpen => {
                if self.half_open_in_flight < self.config.half_open_probes.max(1) {
                    self.half_open_in_flight += 1;
                    Ok(Admission::Probe)
                } else {
                    Err(now)
                }
            }
        }
    }

    /// Records the outcome of a call let through with `admission`, finishing at `now`;
    /// `message` describes a failure (kept as `last_failure` and quoted in the reason).
    /// Returns the state change it caused, if any.
    ///
    /// Which outcomes count:
    /// - [`CallOutcome::Ignored`] never counts; a probe's slot is freed.
    /// - In `Closed`, any admission counts (a late probe of a breaker that has since
    ///   closed is a fresh observation).
    /// - In `HalfOpen`, only probes count: a `Normal` call still finishing was admitted
    ///   before the breaker opened, and says nothing about the endpoint now.
    /// - In `Open`, nothing counts (calls admitted before the trip, or probes overtaken by
    ///   a failed one).
    ///
    /// A probe admitted in one half-open period and recorded in a later one (possible only
    /// with `half_open_probes > 1` and calls longer than the open time) is counted in the
    /// later one.
    pub fn record(
        &mut self,
        now: DateTime<Utc>,
        admission: Admission,
        outcome: CallOutcome,
        message: Option<&str>,
    ) -> Option<Transition> {
        if admission == Admission::Probe && self.state == BreakerState::HalfOpen {
            self.half_open_in_flight = self.half_open_in_flight.saturating_sub(1);
        }
        // `Some(retry_after)` for a failure, `None` for a success.
        let failure = match outcome {
            CallOutcome::Ignored => return None,
            CallOutcome::Success => None,
            CallOutcome::Failure { retry_after } => {
                self.last_failure = message.map(str::to_owned);
                Some(retry_after)
            }
        };
        match (self.state, admission) {
            (BreakerState::Closed, _) => self.record_closed(now, failure, message),
            (BreakerState::HalfOpen, Admission::Probe) => self.record_probe(now, failure, message),
            (BreakerState::HalfOpen, Admission::Normal) | (BreakerState::Open { .. }, _) => None,
        }
    }

    fn record_closed(
        &mut self,
        now: DateTime<Utc>,
        failure: Option<Option<Duration>>,
        message: Option<&str>,
    ) -> Option<Transition> {
        let cap = self.config.window.max(1);
        while self.window.len() >= cap {
            self.window.pop_front();
        }
        self.window.push_back(failure.is_some());
        let Some(retry_after) = failure else {
            self.consecutive_failures = 0;
            return None;
        };
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);

        let calls = self.window.len();
        let failures = self.window.iter().filter(|&&failed| failed).count();
        let rate = failures as f64 / calls as f64;
        let in_a_row = self.config.consecutive_failures;
        let cause = if in_a_row > 0 && self.consecutive_failures >= in_a_row {
            format!("{} consecutive failures", self.consecutive_failures)
        } else if calls >= self.config.min_calls && rate >= self.config.failure_rate {
            format!(
                "failure rate {:.0}% ({failures} of last {calls} calls) >= {:.0}%",
                rate * 100.0,
                self.config.failure_rate * 100.0
            )
        } else {
            return None;
        };
        Some(self.trip(now, cause, retry_after, message))
    }

    fn record_probe(
        &mut self,
        now: DateTime<Utc>,
        failure: Option<Option<Duration>>,
        message: Option<&str>,
    ) -> Option<Transition> {
        if let Some(retry_after) = failure {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            return Some(self.trip(now, "trial call failed".to_owned(), retry_after, message));
        }
        self.consecutive_failures = 0;
        self.half_open_successes = self.half_open_successes.saturating_add(1);
        let needed = self.config.half_open_successes.max(1);
        if self.half_open_successes < needed {
            return None;
        }
        let from = self.state;
        self.state = BreakerState::Closed;
        self.trips = 0;
        self.window.clear();
        self.half_open_in_flight = 0;
        self.half_open_successes = 0;
        self.opened_at = None;
        Some(Transition {
            from,
            to: BreakerState::Closed,
            reason: format!("{needed} trial call(s) succeeded"),
        })
    }

    /// Opens the breaker at `now` for the next trip's open time.
    fn trip(
        &mut self,
        now: DateTime<Utc>,
        cause: String,
        retry_after: Option<Duration>,
        message: Option<&str>,
    ) -> Transition {
        let from = self.state;
        self.trips = self.trips.saturating_add(1);
        let computed = self.open_duration(self.trips);
        let open_for = match retry_after {
            Some(wait) => computed.max(wait).min(self.config.max_open),
            None => computed,
        };
        let until = add(now, open_for);
        self.state = BreakerState::Open { until };
        self.opened_at = Some(now);
        self.half_open_in_flight = 0;
        self.half_open_successes = 0;

        let mut reason = cause;
        if let Some(msg) = message {
            reason.push_str(&format!(" (last: {msg})"));
        }
        reason.push_str(&format!(
            "; open for {} (trip {}",
            fmt_duration(open_for),
            self.trips
        ));
        if let Some(wait) = retry_after {
            reason.push_str(&format!(", Retry-After {}", fmt_duration(wait)));
        }
        reason.push(')');
        Transition {
            from,
            to: self.state,
            reason,
        }
    }

    /// `open_base × open_multiplier^(trips − 1)`, capped at `max_open`.
    fn open_duration(&self, trips: u32) -> Duration {
        let base = self.config.open_base;
        let cap = self.config.max_open;
        let exponent = i32::try_from(trips.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = base.as_secs_f64() * self.config.open_multiplier.powi(exponent);
        let open_for = if secs.is_nan() || secs <= 0.0 {
            base
        } else {
            // Overflow (including an infinite product) means "longer than any cap".
            Duration::try_from_secs_f64(secs).unwrap_or(cap)
        };
        open_for.min(cap)
    }
}

/// A registry of breakers by key ([`breaker_key`]), all under one config. Not synchronised:
/// the engine keeps it behind one mutex. Breakers are created on the first counted outcome
/// of a key; an unknown key reads as closed.
#[derive(Debug, Clone)]
pub struct Breakers {
    config: BreakerConfig,
    map: HashMap<String, Breaker>,
}

impl Breakers {
    /// An empty registry.
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            map: HashMap::new(),
        }
    }

    /// A registry restored from persisted snapshots (see [`Breaker::from_snapshot`]).
    pub fn restore(
        config: BreakerConfig,
        snapshots: impl IntoIterator<Item = (String, BreakerSnapshot)>,
    ) -> Self {
        let map = snapshots
            .into_iter()
            .map(|(key, snap)| {
                let breaker = Breaker::from_snapshot(config.clone(), snap);
                (key, breaker)
            })
            .collect();
        Self { config, map }
    }

    /// The configuration new and restored breakers run under.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// [`Breaker::try_acquire`] for `key`; an unknown key is closed.
    pub fn try_acquire(
        &mut self,
        key: &str,
        now: DateTime<Utc>,
    ) -> Result<Admission, DateTime<Utc>> {
        match self.map.get_mut(key) {
            Some(breaker) => breaker.try_acquire(now),
            None => Ok(Admission::Normal),
        }
    }

    /// [`Breaker::advance`] for `key`; `None` for an unknown key.
    pub fn advance(&mut self, key: &str, now: DateTime<Utc>) -> Option<Transition> {
        self.map.get_mut(key)?.advance(now)
    }

    /// [`Breaker::record`] for `key`, creating its breaker unless the outcome is ignored.
    pub fn record(
        &mut self,
        key: &str,
        now: DateTime<Utc>,
        admission: Admission,
        outcome: CallOutcome,
        message: Option<&str>,
    ) -> Option<Transition> {
        if !self.map.contains_key(key) {
            if outcome == CallOutcome::Ignored {
                return None;
            }
            self.map
                .insert(key.to_owned(), Breaker::new(self.config.clone()));
        }
        self.map
            .get_mut(key)?
            .record(now, admission, outcome, message)
    }

    /// [`Breaker::state`] for `key`; `Closed` for an unknown key.
    pub fn state(&self, key: &str, now: DateTime<Utc>) -> BreakerState {
        self.map
            .get(key)
            .map_or(BreakerState::Closed, |breaker| breaker.state(now))
    }

    /// Whether `key`'s breaker is open and not yet expired at `now`.
    pub fn is_open(&self, key: &str, now: DateTime<Utc>) -> bool {
        self.map
            .get(key)
            .is_some_and(|breaker| breaker.is_open(now))
    }

    /// The persisted form of `key`'s breaker, if it exists.
    pub fn snapshot(&self, key: &str) -> Option<BreakerSnapshot> {
        self.map.get(key).map(Breaker::snapshot)
    }

    /// The breakers open at `now`, each with the time it half-opens (for the selector's
    /// filter), without copying their windows.
    pub fn open_at(&self, now: DateTime<Utc>) -> HashMap<String, DateTime<Utc>> {
        self.map
            .iter()
            .filter_map(|(key, breaker)| match breaker.state(now) {
                BreakerState::Open { until } => Some((key.clone(), until)),
                _ => None,
            })
            .collect()
    }

    /// The persisted form of every breaker, sorted by key.
    pub fn snapshots(&self) -> Vec<(String, BreakerSnapshot)> {
        let mut all: Vec<_> = self
            .map
            .iter()
            .map(|(key, breaker)| (key.clone(), breaker.snapshot()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

/// `now + d`, saturating at the latest representable time.
fn add(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    let delta = TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX);
    now.checked_add_signed(delta)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `30s`, `2m`, `1m30s`, `250ms`.
fn fmt_duration(d: Duration) -> String {
    if d.subsec_millis() != 0 || d.is_zero() {
        return format!("{}ms", d.as_millis());
    }
    let secs = d.as_secs();
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// Serde for a [`Duration`] as whole milliseconds (`u64`, saturating).
mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests;
