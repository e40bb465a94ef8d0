//! The event logs of the runs this server started or continued, for the event stream
//! (`GET /api/runs/{id}/events`, Server-Sent Events).
//!
//! Invariants:
//! - a run's log holds its events in the order the engine emitted them; a subscriber
//!   gets the whole log from the start (or from after `Last-Event-ID`), then each new
//!   event, with no gap and no repeat: an event's SSE id is its index in the log;
//! - a log ends with `run_finished`; a subscriber's stream ends after it;
//! - memory is bounded: a log keeps at most [`MAX_STREAMED_TOKENS`] `token` and
//!   `reasoning` events (later ones are not streamed; the stored step output has the
//!   whole text), and at most [`KEPT_FINISHED`] finished logs are kept.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use futures::Stream;
use nexus_app::engine::{Event, EventSink};
use tokio::sync::watch;

/// Most `token`/`reasoning` events a run's log keeps.
pub const MAX_STREAMED_TOKENS: usize = 50_000;

/// Finished runs whose logs are kept for late subscribers; older ones are read from the
/// run database (without their tokens, which are not stored one by one).
pub const KEPT_FINISHED: usize = 64;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Default)]
struct Entries {
    events: Vec<Event>,
    tokens: usize,
    finished: bool,
}

/// The events of one run, appended by the engine and read by any number of
/// subscribers.
pub struct RunLog {
    entries: Mutex<Entries>,
    len: watch::Sender<usize>,
}

impl Default for RunLog {
    fn default() -> Self {
        RunLog {
            entries: Mutex::new(Entries::default()),
            len: watch::Sender::new(0),
        }
    }
}

impl RunLog {
    /// A log holding `events`, already finished (a run read from the database).
    pub fn finished(events: Vec<Event>) -> Self {
        let log = RunLog::default();
        {
            let mut e = lock(&log.entries);
            e.events = events;
            e.finished = true;
            log.len.send_replace(e.events.len());
        }
        log
    }

    fn is_finished(&self) -> bool {
        lock(&self.entries).finished
    }

    /// The events from index `from` on, as a stream of `(index, event)` that ends after
    /// `run_finished`.
    pub fn subscribe(self: &Arc<Self>, from: usize) -> impl Stream<Item = (usize, Event)> + use<> {
        let rx = self.len.subscribe();
        let state = (Arc::clone(self), from, rx, VecDeque::new());
        futures::stream::unfold(state, |(log, mut next, mut rx, mut ready)| async move {
            loop {
                if let Some(item) = ready.pop_front() {
                    return Some((item, (log, next, rx, ready)));
                }
                let finished = {
                    let e = lock(&log.entries);
                    for (i, ev) in e.events.iter().enumerate().skip(next) {
                        ready.push_back((i, ev.clone()));
                    }
                    next = next.max(e.events.len());
                    e.finished
                };
                if !ready.is_empty() {
                    continue;
                }
                if finished {
                    return None;
                }
                // Woken by the next append (its length is sent after it is in the log).
                rx.changed().await.ok()?;
            }
        })
    }
}

impl EventSink for RunLog {
    fn emit(&self, event: &Event) {
        let mut e = lock(&self.entries);
        if e.finished {
            return;
        }
        if matches!(event, Event::Token { .. } | Event::Reasoning { .. }) {
            if e.tokens >= MAX_STREAMED_TOKENS {
                return;
            }
            e.tokens += 1;
        }
        e.finished = matches!(event, Event::RunFinished { .. });
        e.events.push(event.clone());
        self.len.send_replace(e.events.len());
    }
}

/// The logs by run id.
#[derive(Default)]
pub struct Hub {
    logs: Mutex<HashMap<String, Arc<RunLog>>>,
    finished: Mutex<VecDeque<String>>,
}

impl Hub {
    /// Keeps `log` as run `run_id`'s, unless the run already has an unfinished log (a
    /// paused run resumed in this process goes on emitting to its first log). Returns
    /// the log in use.
    pub fn register(&self, run_id: &str, log: Arc<RunLog>) -> Arc<RunLog> {
        let mut logs = lock(&self.logs);
        if let Some(current) = logs.get(run_id)
            && !current.is_finished()
        {
            return Arc::clone(current);
        }
        logs.insert(run_id.to_string(), Arc::clone(&log));
        drop(logs);
        self.forget_old();
        log
    }

    /// Run `run_id`'s log, if this server ran it recently.
    pub fn get(&self, run_id: &str) -> Option<Arc<RunLog>> {
        lock(&self.logs).get(run_id).cloned()
    }

    /// Drops the oldest finished logs beyond [`KEPT_FINISHED`].
    fn forget_old(&self) {
        let mut logs = lock(&self.logs);
        let mut finished = lock(&self.finished);
        let done: Vec<String> = logs
            .iter()
            .filter(|(id, l)| l.is_finished() && !finished.contains(id))
            .map(|(id, _)| id.clone())
            .collect();
        finished.extend(done);
        while finished.len() > KEPT_FINISHED {
            if let Some(id) = finished.pop_front()
                && logs.get(&id).is_some_and(|l| l.is_finished())
            {
                logs.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn token(text: &str) -> Event {
        Event::Token {
            run_id: "r".into(),
            step_id: "s".into(),
            text: text.into(),
        }
    }

    #[tokio::test]
    async fn a_late_subscriber_gets_every_event_in_order_and_the_stream_ends() {
        let log = Arc::new(RunLog::default());
        log.emit(&token("a"));
        let early = log.subscribe(0);
        log.emit(&token("b"));
        let late = log.subscribe(1);
        log.emit(&Event::RunFinished {
            run_id: "r".into(),
            status: nexus_app::engine::RunStatus::Succeeded,
            duration_ms: 1,
        });
        log.emit(&token("after the end"));
        let early: Vec<usize> = early.map(|(i, _)| i).collect().await;
        let late: Vec<usize> = late.map(|(i, _)| i).collect().await;
        assert_eq!(early, vec![0, 1, 2]);
        assert_eq!(late, vec![1, 2]);
    }

    #[test]
    fn tokens_beyond_the_cap_are_not_kept() {
        let log = RunLog::default();
        for _ in 0..MAX_STREAMED_TOKENS + 10 {
            log.emit(&token("x"));
        }
        assert_eq!(lock(&log.entries).events.len(), MAX_STREAMED_TOKENS);
    }
}
