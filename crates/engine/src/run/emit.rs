//! Events of a run on their way out: sent to subscribers at once, and kept (all but
//! tokens) until the next store write so they are stored with the step records they
//! describe.

use std::sync::{Arc, Mutex};

use crate::events::{Event, EventSink};

pub(super) struct Emitter {
    pub(super) sinks: Vec<Arc<dyn EventSink>>,
    pub(super) buffer: Mutex<Vec<Event>>,
}

impl Emitter {
    /// Sends to subscribers at once; keeps events other than tokens (answer or reasoning)
    /// for the next store write.
    pub(super) fn emit(&self, event: Event) {
        for sink in &self.sinks {
            sink.emit(&event);
        }
        if !matches!(event, Event::Token { .. } | Event::Reasoning { .. })
            && let Ok(mut b) = self.buffer.lock()
        {
            b.push(event);
        }
    }
    pub(super) fn drain(&self) -> Vec<Event> {
        self.buffer
            .lock()
            .map(|mut b| std::mem::take(&mut *b))
            .unwrap_or_default()
    }
    pub(super) fn publish(&self, events: &[Event]) {
        for event in events {
            for sink in &self.sinks {
                sink.emit(event);
            }
        }
    }
}
