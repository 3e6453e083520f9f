//! Sessions: a visitor's events belong to one session until 30 minutes pass without one.
//! The state is handed to the processor, which stays deterministic: the same events in the
//! same order give the same session ids and deltas, live or replayed.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

pub const SESSION_TIMEOUT: Duration = Duration::minutes(30);

/// What a session remembers: its id, time span, size and the attributes of its entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    pub id: u64,
    pub start: DateTime<Utc>,
    pub last: DateTime<Utc>,
    pub events: u32,
    pub entry: SessionEntry,
}

/// Attributes fixed by a session's first event; every later event of the session carries them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionEntry {
    pub page: String,
    pub source: String,
    pub medium: String,
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

/// Open sessions keyed by (site, visitor).
#[derive(Debug, Default)]
pub struct SessionState {
    open: HashMap<(String, u64), Session>,
}

/// Sessions saved by `SessionState::snapshot`.
#[derive(Debug)]
pub struct SessionSnapshot(HashMap<(String, u64), Option<Session>>);

fn duration_secs(start: DateTime<Utc>, last: DateTime<Utc>) -> i64 {
    (last.timestamp_millis() - start.timestamp_millis()).max(0) / 1000
}

/// A session id that any replay computes again: a hash of site, visitor and start time.
pub fn session_id(site_id: &str, visitor_id: u64, start: DateTime<Utc>) -> u64 {
    let mut h = Sha256::new();
    h.update(site_id.as_bytes());
    h.update(visitor_id.to_le_bytes());
    h.update(start.timestamp_millis().to_le_bytes());
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("sha256 is 32 bytes"))
}

impl SessionState {
    pub fn len(&self) -> usize {
        self.open.len()
    }

    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Applies one event: continues the visitor's session or starts a new one. Returns the
    /// delta and the session's entry attributes (`entry` is used only when a session starts).
    pub fn observe(
        &mut self,
        site_id: &str,
        visitor_id: u64,
        ts: DateTime<Utc>,
        entry: SessionEntry,
    ) -> (SessionDelta, SessionEntry, DateTime<Utc>) {
        let key = (site_id.to_string(), visitor_id);
        if let Some(s) = self.open.get_mut(&key) {
            // Within the timeout of the session's span (either side, for late arrivals).
            if ts <= s.last + SESSION_TIMEOUT && ts >= s.start - SESSION_TIMEOUT {
                let before = duration_secs(s.start, s.last);
                s.start = s.start.min(ts);
                s.last = s.last.max(ts);
                s.events += 1;
                let delta = SessionDelta {
                    session_id: s.id,
                    visit: 0,
                    bounce: if s.events == 2 { -1 } else { 0 },
                    duration_secs: duration_secs(s.start, s.last) - before,
                };
                return (delta, s.entry.clone(), s.start);
            }
        }
        let session = Session {
            id: session_id(site_id, visitor_id, ts),
            start: ts,
            last: ts,
            events: 1,
            entry: entry.clone(),
        };
        let delta = SessionDelta {
            session_id: session.id,
            visit: 1,
            bounce: 1,
            duration_secs: 0,
        };
        self.open.insert(key, session);
        (delta, entry, ts)
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

    #[test]
    fn thirty_minutes_of_inactivity_starts_a_new_session() {
        let mut st = SessionState::default();
        let e = SessionEntry {
            page: "/a".into(),
            ..Default::default()
        };
        let (d1, _, _) = st.observe("s", 1, t(10, 0, 0), e.clone());
        assert_eq!((d1.visit, d1.bounce, d1.duration_secs), (1, 1, 0));
        let (d2, entry, start) = st.observe(
            "s",
            1,
            t(10, 30, 0),
            SessionEntry {
                page: "/b".into(),
                ..Default::default()
            },
        );
        assert_eq!((d2.visit, d2.bounce, d2.duration_secs), (0, -1, 1800));
        assert_eq!(d2.session_id, d1.session_id);
        assert_eq!(entry.page, "/a", "later events keep the entry page");
        assert_eq!(start, t(10, 0, 0));
        let (d3, _, _) = st.observe("s", 1, t(10, 40, 0), e.clone());
        assert_eq!((d3.visit, d3.bounce, d3.duration_secs), (0, 0, 600));
        // 30 minutes and one second later: a new session.
        let (d4, _, _) = st.observe("s", 1, t(11, 10, 1), e.clone());
        assert_eq!((d4.visit, d4.bounce), (1, 1));
        assert_ne!(d4.session_id, d1.session_id);
        // Other visitors and sites are separate.
        let (d5, _, _) = st.observe("s", 2, t(11, 10, 2), e.clone());
        assert_eq!(d5.visit, 1);
        let (d6, _, _) = st.observe("other", 1, t(11, 10, 2), e);
        assert_eq!(d6.visit, 1);
    }

    #[test]
    fn deltas_add_up_to_the_session() {
        let mut st = SessionState::default();
        let times = [t(9, 0, 0), t(9, 5, 0), t(9, 2, 0), t(9, 20, 30)];
        let deltas: Vec<SessionDelta> = times
            .iter()
            .map(|ts| st.observe("s", 7, *ts, SessionEntry::default()).0)
            .collect();
        assert_eq!(deltas.iter().map(|d| d.visit as i64).sum::<i64>(), 1);
        assert_eq!(deltas.iter().map(|d| d.bounce as i64).sum::<i64>(), 0);
        assert_eq!(deltas.iter().map(|d| d.duration_secs).sum::<i64>(), 20 * 60 + 30);
    }

    #[test]
    fn session_ids_are_reproducible() {
        let run = || {
            let mut st = SessionState::default();
            [t(1, 0, 0), t(1, 10, 0), t(2, 0, 0)]
                .iter()
                .map(|ts| st.observe("s", 3, *ts, SessionEntry::default()).0.session_id)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }

    #[test]
    fn eviction_forgets_idle_sessions_only() {
        let mut st = SessionState::default();
        st.observe("s", 1, t(10, 0, 0), SessionEntry::default());
        st.observe("s", 2, t(10, 20, 0), SessionEntry::default());
        st.evict_idle(t(10, 45, 0));
        assert_eq!(st.len(), 1);
    }

    #[test]
    fn a_rolled_back_batch_counts_again_as_the_first_time() {
        let mut state = SessionState::default();
        state.observe("s", 1, t(10, 0, 0), SessionEntry::default());
        let snapshot = state.snapshot([("s", 1), ("s", 2)]);
        let (first, _, _) = state.observe("s", 1, t(10, 5, 0), SessionEntry::default());
        state.observe("s", 2, t(10, 5, 0), SessionEntry::default());
        state.rollback(snapshot);
        assert_eq!(state.len(), 1, "visitor 2 had no session before the batch");
        let (again, _, _) = state.observe("s", 1, t(10, 5, 0), SessionEntry::default());
        assert_eq!(first, again);
        assert_eq!(again.bounce, -1);
    }
}
