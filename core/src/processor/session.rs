//! Sessions: a visitor's events belong to one session until 30 minutes pass without an
//! interactive one. The state is handed to the processor, which stays deterministic: the
//! same events in the same order give the same session ids and deltas, live or replayed.
//!
//! Two rules beyond the timeout:
//! - A visit crosses UTC midnight: the visitor id changes with the UTC day, so an event in
//!   the first 30 minutes of a day also carries the id its visitor had the day before
//!   (`RawEvent::prev_day_visitor_id`), and continues an open session under that id. The
//!   session keeps its first id: one visitor, one visit.
//! - Non-interactive events (an autoplay video) join or open a session but neither end a
//!   bounce nor extend the visit: its duration and its timeout run from interactive events.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

pub const SESSION_TIMEOUT: Duration = Duration::minutes(30);

/// What a session remembers: its id, time span, size and the attributes of its entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    pub id: u64,
    /// When its first event (of any kind) happened: the session's start and id.
    pub opened: DateTime<Utc>,
    /// The first and last interactive events; both `opened` while there is none.
    pub first: DateTime<Utc>,
    pub last: DateTime<Utc>,
    /// Interactive events so far: a session with fewer than two is a bounce.
    pub interactions: u32,
    pub entry: SessionEntry,
}

/// Attributes fixed by a session's first event; every later event of the session carries them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionEntry {
    pub page: String,
    pub source: String,
    pub channel: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
}

/// The change one event makes to its session, as summed by the rollups.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionDelta {
    pub session_id: u64,
    pub visit: i8,
    pub bounce: i8,
    pub duration_secs: i64,
}

/// One event as sessions see it.
#[derive(Clone, Copy, Debug)]
pub struct Visit<'a> {
    pub site_id: &'a str,
    pub visitor_id: u64,
    /// The visitor's id on the previous UTC day near midnight, else 0.
    pub prev_day_visitor_id: u64,
    pub ts: DateTime<Utc>,
    pub interactive: bool,
}

/// What `SessionState::observe` decided for one event.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub delta: SessionDelta,
    /// The session's entry attributes (the event's own when it opened the session).
    pub entry: SessionEntry,
    pub session_start: DateTime<Utc>,
    /// The visitor the event counts for: its own id, or the previous day's id when it
    /// continued a visit from before midnight.
    pub visitor_id: u64,
}

type Key = (String, u64);

/// Open sessions keyed by (site, visitor).
#[derive(Debug, Default)]
pub struct SessionState {
    open: HashMap<Key, Session>,
}

/// Sessions saved by `SessionState::snapshot`.
#[derive(Debug)]
pub struct SessionSnapshot(HashMap<Key, Option<Session>>);

fn duration_secs(first: DateTime<Utc>, last: DateTime<Utc>) -> i64 {
    (last.timestamp_millis() - first.timestamp_millis()).max(0) / 1000
}

/// A session id that any replay computes again: a hash of site, visitor and start time.
pub fn session_id(site_id: &str, visitor_id: u64, start: DateTime<Utc>) -> u64 {
    let mut h = Sha256::new();
    h.update(site_id.as_bytes());
    h.update(visitor_id.to_le_bytes());
    h.update(start.timestamp_millis().to_le_bytes());
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("sha256 is 32 bytes"))
}

impl Session {
    /// Whether an event at `ts` belongs to this session: within the timeout of its span
    /// (either side, for late arrivals).
    fn reaches(&self, ts: DateTime<Utc>) -> bool {
        ts <= self.last + SESSION_TIMEOUT && ts >= self.first - SESSION_TIMEOUT
    }
}

impl SessionState {
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Applies one event: continues the visitor's session (or, just after midnight, the
    /// session it had under the previous day's id) or starts a new one. `entry` is used only
    /// when a session starts.
    pub fn observe(&mut self, v: Visit<'_>, entry: SessionEntry) -> Observed {
        self.observe_with(v, || entry)
    }

    /// `observe`, with the entry attributes made only when the event starts a session.
    pub fn observe_with(&mut self, v: Visit<'_>, entry: impl FnOnce() -> SessionEntry) -> Observed {
        let own = (v.site_id.to_string(), v.visitor_id);
        let key = if self.open.get(&own).is_some_and(|s| s.reaches(v.ts)) {
            Some(own.clone())
        } else {
            let prev = (v.site_id.to_string(), v.prev_day_visitor_id);
            (v.prev_day_visitor_id != 0 && self.open.get(&prev).is_some_and(|s| s.reaches(v.ts))).then_some(prev)
        };
        if let Some(key) = key {
            let s = self.open.get_mut(&key).expect("found above");
            let delta = if !v.interactive {
                SessionDelta {
                    session_id: s.id,
                    visit: 0,
                    bounce: 0,
                    duration_secs: 0,
                }
            } else if s.interactions == 0 {
                // The first interactive event of a session opened by non-interactive ones:
                // the span starts here, and one interaction is still a bounce.
                s.first = v.ts;
                s.last = v.ts;
                s.interactions = 1;
                SessionDelta {
                    session_id: s.id,
                    visit: 0,
                    bounce: 0,
                    duration_secs: 0,
                }
            } else {
                let before = duration_secs(s.first, s.last);
                s.first = s.first.min(v.ts);
                s.last = s.last.max(v.ts);
                s.interactions += 1;
                SessionDelta {
                    session_id: s.id,
                    visit: 0,
                    bounce: if s.interactions == 2 { -1 } else { 0 },
                    duration_secs: duration_secs(s.first, s.last) - before,
                }
            };
            return Observed {
                delta,
                entry: s.entry.clone(),
                session_start: s.opened,
                visitor_id: key.1,
            };
        }
        let entry = entry();
        let session = Session {
            id: session_id(v.site_id, v.visitor_id, v.ts),
            opened: v.ts,
            first: v.ts,
            last: v.ts,
            interactions: u32::from(v.interactive),
            entry: entry.clone(),
        };
        let delta = SessionDelta {
            session_id: session.id,
            visit: 1,
            bounce: 1,
            duration_secs: 0,
        };
        self.open.insert(own, session);
        Observed {
            delta,
            entry,
            session_start: v.ts,
            visitor_id: v.visitor_id,
        }
    }

    /// Puts back a session read from storage (after a restart), unless a newer one is known.
    pub fn restore(&mut self, site_id: &str, visitor_id: u64, session: Session) {
        let key = (site_id.to_string(), visitor_id);
        match self.open.get(&key) {
            Some(existing) if existing.last >= session.last => {}
            _ => {
                self.open.insert(key, session);
            }
        }
    }

    /// Sets the session of a (site, visitor), whatever was there (a recomputed visitor's
    /// sessions replacing what the live state held).
    pub fn set(&mut self, site_id: &str, visitor_id: u64, session: Session) {
        self.open.insert((site_id.to_string(), visitor_id), session);
    }

    /// Every session held: (site, visitor key, session).
    pub fn iter(&self) -> impl Iterator<Item = (&str, u64, &Session)> {
        self.open
            .iter()
            .map(|((site, visitor), s)| (site.as_str(), *visitor, s))
    }

    /// The open session of a (site, visitor), if any.
    pub fn get(&self, site_id: &str, visitor_id: u64) -> Option<&Session> {
        self.open.get(&(site_id.to_string(), visitor_id))
    }

    /// The sessions of `keys` as they are now. Processing a batch changes sessions before the
    /// batch is stored; if storing fails, `rollback` puts them back, so a retry of the same
    /// events sees the sessions as the first attempt did (and counts each event once).
    pub fn snapshot<'a>(&self, keys: impl IntoIterator<Item = (&'a str, u64)>) -> SessionSnapshot {
        let mut saved = HashMap::new();
        for (site, visitor) in keys {
            let key = (site.to_string(), visitor);
            let session = self.open.get(&key).cloned();
            saved.entry(key).or_insert(session);
        }
        SessionSnapshot(saved)
    }

    /// Puts back the sessions of a snapshot, forgetting those that did not exist then.
    pub fn rollback(&mut self, snapshot: SessionSnapshot) {
        for (key, session) in snapshot.0 {
            match session {
                Some(s) => {
                    self.open.insert(key, s);
                }
                None => {
                    self.open.remove(&key);
                }
            }
        }
    }

    /// Forgets sessions that no event at or after `now` can continue.
    pub fn evict_idle(&mut self, now: DateTime<Utc>) {
        self.open.retain(|_, s| s.last + SESSION_TIMEOUT >= now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 21, h, m, s).unwrap()
    }

    fn at(visitor: u64, ts: DateTime<Utc>) -> Visit<'static> {
        Visit {
            site_id: "s",
            visitor_id: visitor,
            prev_day_visitor_id: 0,
            ts,
            interactive: true,
        }
    }

    fn page(p: &str) -> SessionEntry {
        SessionEntry {
            page: p.into(),
            ..Default::default()
        }
    }

    #[test]
    fn thirty_minutes_of_inactivity_starts_a_new_session() {
        let mut st = SessionState::default();
        let d1 = st.observe(at(1, t(10, 0, 0)), page("/a")).delta;
        assert_eq!((d1.visit, d1.bounce, d1.duration_secs), (1, 1, 0));
        let o2 = st.observe(at(1, t(10, 30, 0)), page("/b"));
        assert_eq!((o2.delta.visit, o2.delta.bounce, o2.delta.duration_secs), (0, -1, 1800));
        assert_eq!(o2.delta.session_id, d1.session_id);
        assert_eq!(o2.entry.page, "/a", "later events keep the entry page");
        assert_eq!(o2.session_start, t(10, 0, 0));
        let d3 = st.observe(at(1, t(10, 40, 0)), page("/a")).delta;
        assert_eq!((d3.visit, d3.bounce, d3.duration_secs), (0, 0, 600));
        // 30 minutes and one second later: a new session.
        let d4 = st.observe(at(1, t(11, 10, 1)), page("/a")).delta;
        assert_eq!((d4.visit, d4.bounce), (1, 1));
        assert_ne!(d4.session_id, d1.session_id);
        // Other visitors and sites are separate.
        assert_eq!(st.observe(at(2, t(11, 10, 2)), page("/a")).delta.visit, 1);
        let other = Visit {
            site_id: "other",
            ..at(1, t(11, 10, 2))
        };
        assert_eq!(st.observe(other, page("/a")).delta.visit, 1);
    }

    #[test]
    fn deltas_add_up_to_the_session() {
        let mut st = SessionState::default();
        let times = [t(9, 0, 0), t(9, 5, 0), t(9, 2, 0), t(9, 20, 30)];
        let deltas: Vec<SessionDelta> = times
            .iter()
            .map(|ts| st.observe(at(7, *ts), SessionEntry::default()).delta)
            .collect();
        assert_eq!(deltas.iter().map(|d| d.visit as i64).sum::<i64>(), 1);
        assert_eq!(deltas.iter().map(|d| d.bounce as i64).sum::<i64>(), 0);
        assert_eq!(deltas.iter().map(|d| d.duration_secs).sum::<i64>(), 20 * 60 + 30);
    }

    #[test]
    fn a_visit_continues_across_utc_midnight_under_its_first_id() {
        let day1 = |h, m| Utc.with_ymd_and_hms(2026, 11, 21, h, m, 0).unwrap();
        let day2 = |h, m| Utc.with_ymd_and_hms(2026, 11, 22, h, m, 0).unwrap();
        let mut st = SessionState::default();
        let first = st.observe(at(100, day1(23, 50)), page("/from-google"));
        let crossing = Visit {
            prev_day_visitor_id: 100,
            ..at(200, day2(0, 5))
        };
        let o = st.observe(crossing, page("/later"));
        assert_eq!(o.visitor_id, 100, "one visitor");
        assert_eq!(o.delta.session_id, first.delta.session_id, "one visit");
        assert_eq!((o.delta.visit, o.delta.bounce, o.delta.duration_secs), (0, -1, 15 * 60));
        assert_eq!(o.entry.page, "/from-google");
        // The next event of the new day finds the session through the same previous id.
        let o = st.observe(
            Visit {
                prev_day_visitor_id: 100,
                ..at(200, day2(0, 10))
            },
            page("/x"),
        );
        assert_eq!((o.visitor_id, o.delta.visit, o.delta.duration_secs), (100, 0, 300));
        // Without an open session the previous id changes nothing.
        let mut st = SessionState::default();
        let o = st.observe(
            Visit {
                prev_day_visitor_id: 100,
                ..at(200, day2(0, 5))
            },
            page("/x"),
        );
        assert_eq!((o.visitor_id, o.delta.visit), (200, 1));
    }

    #[test]
    fn non_interactive_events_neither_end_a_bounce_nor_extend_a_visit() {
        let quiet = |ts| Visit {
            interactive: false,
            ..at(1, ts)
        };
        // A page with an autoplay video event on load: still a bounce.
        let mut st = SessionState::default();
        let a = st.observe(at(1, t(10, 0, 0)), page("/")).delta;
        let b = st.observe(quiet(t(10, 0, 2)), page("/")).delta;
        assert_eq!(
            (
                a.visit + b.visit,
                a.bounce + b.bounce,
                a.duration_secs + b.duration_secs
            ),
            (1, 1, 0)
        );
        assert_eq!(b.session_id, a.session_id);
        // Nor do they keep a session open: 25 + 25 minutes of pings is two visits.
        let later = st.observe(quiet(t(10, 25, 0)), page("/")).delta;
        assert_eq!(later.visit, 0);
        let again = st.observe(at(1, t(10, 50, 0)), page("/")).delta;
        assert_eq!(again.visit, 1, "the ping did not extend the visit");
        // A session opened by a non-interactive event is a bounce until two interactions.
        let mut st = SessionState::default();
        let o = st.observe(quiet(t(12, 0, 0)), page("/v")).delta;
        assert_eq!((o.visit, o.bounce), (1, 1));
        let p1 = st.observe(at(1, t(12, 1, 0)), page("/")).delta;
        assert_eq!((p1.visit, p1.bounce, p1.duration_secs), (0, 0, 0));
        let p2 = st.observe(at(1, t(12, 3, 0)), page("/")).delta;
        assert_eq!((p2.visit, p2.bounce, p2.duration_secs), (0, -1, 120));
    }

    #[test]
    fn session_ids_are_reproducible() {
        let run = || {
            let mut st = SessionState::default();
            [t(1, 0, 0), t(1, 10, 0), t(2, 0, 0)]
                .iter()
                .map(|ts| st.observe(at(3, *ts), SessionEntry::default()).delta.session_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn eviction_forgets_idle_sessions_only() {
        let mut st = SessionState::default();
        st.observe(at(1, t(10, 0, 0)), SessionEntry::default());
        st.observe(at(2, t(10, 20, 0)), SessionEntry::default());
        st.evict_idle(t(10, 45, 0));
        assert_eq!(st.len(), 1);
    }

    #[test]
    fn a_rolled_back_batch_counts_again_as_the_first_time() {
        let mut state = SessionState::default();
        state.observe(at(1, t(10, 0, 0)), SessionEntry::default());
        let snapshot = state.snapshot([("s", 1), ("s", 2)]);
        let first = state.observe(at(1, t(10, 5, 0)), SessionEntry::default()).delta;
        state.observe(at(2, t(10, 5, 0)), SessionEntry::default());
        state.rollback(snapshot);
        assert_eq!(state.len(), 1, "visitor 2 had no session before the batch");
        let again = state.observe(at(1, t(10, 5, 0)), SessionEntry::default()).delta;
        assert_eq!(first, again);
        assert_eq!(again.bounce, -1);
    }
}
