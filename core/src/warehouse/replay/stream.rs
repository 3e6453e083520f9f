//! The processing half of a day's replay: raw rows in, processed rows out, one visitor at a
//! time in the total order `(ts, event_id)`.
//!
//! Rows arrive ordered by `(site_id, visitor_id, ts, event_id)`: each visitor's events are
//! contiguous and in the total order, and a visitor's sessions depend on its own events
//! only (and, near midnight, on the visit it continues from the day before). So a visitor's
//! state is dropped as soon as the next one starts, which bounds memory by one visitor.
//!
//! Visitors linked to the day before (an event carries `prev_day_visitor_id`) need the
//! visits open at the day's first midnight. Those are known only once the day before is
//! final, which, in a run of several days, is when the run has staged it: so these visitors
//! are set aside (`deferred`) and processed at the end with that seed, while everyone else
//! is processed at once.

use std::sync::Arc;

use crate::event::RawEvent;
use crate::processor::session::SessionState;
use crate::processor::{Processor, ProcessorConfig};
use crate::warehouse::native::EventBlock;

pub(super) struct Streamer {
    processor: Arc<dyn Processor>,
    config: ProcessorConfig,
    /// The events of the visitor being read (its events may span two pages).
    visitor: Vec<RawEvent>,
    /// Visitors that continue visits from the day before: processed with the seed.
    deferred: Vec<Vec<RawEvent>>,
}

impl Streamer {
    pub(super) fn new(processor: Arc<dyn Processor>, config: ProcessorConfig) -> Self {
        Streamer {
            processor,
            config,
            visitor: Vec::new(),
            deferred: Vec::new(),
        }
    }

    /// Takes the next rows of the stream; the processed rows of every visitor they complete
    /// go into `out`.
    pub(super) fn feed(&mut self, rows: Vec<RawEvent>, out: &mut EventBlock) {
        for raw in rows {
            if self
                .visitor
                .first()
                .is_some_and(|v| v.visitor_id != raw.visitor_id || v.site_id != raw.site_id)
            {
                self.flush(out);
            }
            self.visitor.push(raw);
        }
    }

    /// The end of the stream: the last visitor.
    pub(super) fn finish(&mut self, out: &mut EventBlock) {
        self.flush(out);
    }

    /// Events set aside for the seed.
    pub(super) fn deferred_events(&self) -> usize {
        self.deferred.iter().map(Vec::len).sum()
    }

    fn flush(&mut self, out: &mut EventBlock) {
        if self.visitor.is_empty() {
            return;
        }
        if self.visitor.iter().any(|r| r.prev_day_visitor_id != 0) {
            self.deferred.push(std::mem::take(&mut self.visitor));
        } else {
            self.process_visitor(&self.visitor, None, out);
            self.visitor.clear();
        }
    }

    /// The visitors set aside, processed with `seed` (the sessions open at the day's first
    /// midnight, keyed by the previous day's visitor ids) into `out`.
    pub(super) fn process_deferred(&mut self, seed: &SessionState, out: &mut EventBlock) {
        for visitor in std::mem::take(&mut self.deferred) {
            self.process_visitor(&visitor, Some(seed), out);
        }
    }

    fn process_visitor(&self, events: &[RawEvent], seed: Option<&SessionState>, out: &mut EventBlock) {
        let mut sessions = SessionState::default();
        if let (Some(seed), Some(first)) = (seed, events.iter().find(|r| r.prev_day_visitor_id != 0)) {
            if let Some(open) = seed.get(&first.site_id, first.prev_day_visitor_id) {
                sessions.restore(&first.site_id, first.prev_day_visitor_id, open.clone());
            }
        }
        for raw in events {
            out.push(&self.processor.process(raw, self.config, &mut sessions));
        }
    }
}
