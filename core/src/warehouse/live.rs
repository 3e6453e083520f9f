//! Live processing that gives what a replay gives, whatever the arrival order
//! (docs/replay.md, "Live corrections").
//!
//! A writer (the standalone group commit, each loader) holds a `LiveSessions` per tenant.
//! Events reach it in arrival order; a replay reads them in the total order `(ts, event_id)`
//! per visitor. Where the two can differ, the writer recomputes the visitor from
//! `events_raw` and writes the difference as rows of `sign` -1 (cancelling stored rows) and
//! +1 (their replacements), which every metric sums.
//!
//! Per event, with `k` each of its session keys (its visitor, and the previous day's id
//! near midnight):
//! - **fast path**: nothing stored for `k` is unknown to this state (`k` is not in `unseen`),
//!   the event sorts after every event that consulted `k`'s session (`last`), and it is not
//!   older than `floor`. Appending at the end of a visitor's total order changes no earlier
//!   row, so the event's own row is all there is to write.
//! - **slow path** otherwise: the visitor (with the visitors it is linked to across UTC
//!   midnight) is processed again from its stored raw events plus the new ones, seeded with
//!   the visits open at midnight, and compared with its stored rows.
//!
//! **Writers that share a tenant** (Kafka loaders: each visitor's events reach one of them,
//! `ingest::kafka::sink`) hold each visitor's state alone, except across UTC midnight: a
//! visit that crosses it links the day's visitor id `A` with the next day's `B` (events of
//! `B` carry `prev_day_visitor_id = A`), and `A` and `B` may belong to two loaders. There an
//! event of one can change rows of the other, which the other cannot see in memory, so on a
//! shared writer these take the slow path: events that carry a previous day's id, every
//! later event of such a visitor (`linked`), and events within the session timeout before a
//! midnight. That is the visitors active around midnight, a few in a hundred. Two loaders
//! that recompute one linked pair in the same instant can both correct the same rows; the
//! day's sealing replay (docs/replay.md) puts such a day right.
//!
//! `unseen` holds the keys with rows stored by someone else (another loader, this process
//! before a restart) since `floor` minus the session timeout: what a restart or a partition
//! take-over cannot hold in memory. Memory is bounded by `REACH`: state older than the newest
//! event by more than that is dropped and `floor` moves up, so an event that old takes the
//! slow path. Which path an event takes changes only the cost, never the rows.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use uuid::Uuid;

use super::{ops, tiers, Params, Warehouse};
use crate::event::{ch_datetime, Event, RawEvent};
use crate::processor::session::{SessionSnapshot, SessionState, SESSION_TIMEOUT};
use crate::processor::{Processor, ProcessorConfig};
use crate::schema::{self, EVENTS_TABLE, RAW_TABLE};
use crate::spec::Tenant;
use crate::{Error, Result};

/// How far behind the newest event live state reaches: events older than that take the slow
/// path (a lookup), and memory holds about this much event time of visitors.
pub const REACH: Duration = Duration::hours(2);

/// Rounds of following visits across UTC midnight while recomputing (a visit that crosses
/// more midnights than this is left to sealing).
const MAX_LINK_ROUNDS: usize = 8;

/// How often (at most) the state drops what fell behind `REACH`.
const EVICT_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// While the hourly layout of earlier releases answers queries, its views cannot take a
/// cancelling row; the layout is read again this often until the tiers take over.
const LAYOUT_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// A session key: (site, visitor id as `events` counts it).
type Key = (String, u64);
/// A place in the total order.
type Order = (DateTime<Utc>, Uuid);

/// One tenant's live processing state. See the module documentation.
pub struct LiveSessions {
    db: String,
    processor: Arc<dyn Processor>,
    config: ProcessorConfig,
    /// False while the hourly layout lives: events are then processed in arrival order, as
    /// that layout always did.
    corrections: bool,
    layout_checked: std::time::Instant,
    sessions: SessionState,
    /// Per key, the last event (in the total order) that consulted its session.
    last: HashMap<Key, Order>,
    /// Keys with stored events this state has not seen, with the newest such event time.
    unseen: HashMap<Key, DateTime<Utc>>,
    /// Keys of a batch whose insert failed, with one of their event times: recomputed with
    /// the next batch (their raw rows may have landed without their processed rows).
    repair: HashMap<Key, DateTime<Utc>>,
    /// Events older than this take the slow path.
    floor: DateTime<Utc>,
    /// Other writers store events of this tenant (see the module documentation).
    shared: bool,
    /// On a shared writer: keys with an event that carried a previous day's id, with their
    /// newest event time; their events take the slow path.
    linked: HashMap<Key, DateTime<Utc>>,
    /// The newest event time processed (never ahead of the wall clock).
    newest: DateTime<Utc>,
    evicted: std::time::Instant,
}

/// What `process` made of a batch: the rows to insert into `events` (new rows, and for
/// corrections the cancelling row before its replacement), and what to undo if that insert
/// fails.
pub struct Processed {
    pub rows: Vec<Event>,
    /// Stored rows cancelled (each with a replacement).
    pub corrected: usize,
    /// Visitors processed again from `events_raw`.
    pub recomputed: usize,
    undo: Undo,
}

struct Undo {
    sessions: SessionSnapshot,
    last: Vec<(Key, Option<Order>)>,
    unseen: Vec<(Key, Option<DateTime<Utc>>)>,
    repair: HashMap<Key, DateTime<Utc>>,
    newest: DateTime<Utc>,
    /// Every key the batch touched, with an event time.
    touched: Vec<(Key, DateTime<Utc>)>,
}

impl LiveSessions {
    /// The state of a writer that starts now (or takes partitions over): what others stored
    /// recently is `unseen`. `corrections` is off while the tenant's hourly layout lives.
    pub async fn start(wh: &dyn Warehouse, tenant: &Tenant, processor: Arc<dyn Processor>) -> Result<Self> {
        let db = tenant.database();
        let corrections = tiers::read_state(wh, &db).await?.layout == tiers::Layout::Tiers;
        let mut live = LiveSessions {
            db,
            processor,
            config: ProcessorConfig {
                bot_filtering: tenant.spec.bot_filtering,
            },
            corrections,
            layout_checked: std::time::Instant::now(),
            sessions: SessionState::default(),
            last: HashMap::new(),
            unseen: HashMap::new(),
            repair: HashMap::new(),
            floor: DateTime::<Utc>::MIN_UTC,
            shared: false,
            linked: HashMap::new(),
            newest: DateTime::<Utc>::MIN_UTC,
            evicted: std::time::Instant::now(),
        };
        live.load_unseen(wh).await?;
        Ok(live)
    }

    /// Forgets everything and reads what is stored again: after partitions moved, another
    /// loader may have advanced any visitor.
    pub async fn take_over(&mut self, wh: &dyn Warehouse) -> Result<()> {
        self.sessions = SessionState::default();
        self.last.clear();
        self.unseen.clear();
        self.linked.clear();
        self.floor = DateTime::<Utc>::MIN_UTC;
        self.newest = DateTime::<Utc>::MIN_UTC;
        self.load_unseen(wh).await
    }

    async fn load_unseen(&mut self, wh: &dyn Warehouse) -> Result<()> {
        let now = Utc::now();
        let newest = wh
            .select(
                &format!(
                    "SELECT toString(max(ts)) AS newest, count() AS n FROM {}.{RAW_TABLE} \
                     WHERE ts <= {{now:DateTime64(3, 'UTC')}}",
                    self.db
                ),
                &Params::new().bind("now", ch_datetime::format(&now)),
            )
            .await?;
        let stored = newest.first().and_then(|r| r["n"].as_u64()).unwrap_or(0);
        if stored == 0 {
            // Nothing stored: nothing can be unseen, and no event is too old.
            return Ok(());
        }
        let newest = newest
            .first()
            .and_then(|r| r["newest"].as_str())
            .map(ch_datetime::parse)
            .transpose()
            .map_err(|e| Error::Decode(format!("newest raw event: {e}")))?
            .unwrap_or(now);
        self.newest = newest;
        self.floor = newest - REACH;
        let since = self.floor - SESSION_TIMEOUT;
        let rows = wh
            .select(
                &format!(
                    "SELECT site_id, key, toString(max(ts)) AS newest, \
                       maxIf(1, key = visitor_id AND prev_day_visitor_id != 0) AS linked \
                     FROM {}.{RAW_TABLE} ARRAY JOIN [visitor_id, prev_day_visitor_id] AS key \
                     WHERE ts >= {{since:DateTime64(3, 'UTC')}} AND key != 0 GROUP BY site_id, key",
                    self.db
                ),
                &Params::new().bind("since", ch_datetime::format(&since)),
            )
            .await?;
        for r in &rows {
            let site = r["site_id"].as_str().unwrap_or_default().to_string();
            let key = r["key"].as_u64().ok_or_else(|| Error::Decode(format!("key in {r}")))?;
            let ts = ch_datetime::parse(r["newest"].as_str().unwrap_or_default())
                .map_err(|e| Error::Decode(format!("newest: {e}")))?;
            if r["linked"].as_u64() == Some(1) {
                self.linked.insert((site.clone(), key), ts);
            }
            self.unseen.insert((site, key), ts);
        }
        tracing::info!(db = %self.db, unseen = self.unseen.len(), floor = %self.floor, "live sessions: recent visitors read");
        Ok(())
    }

    /// Whether corrections are written (the tiers answer queries).
    /// Marks this state as one of several writers of the tenant (Kafka loaders): visitors
    /// around UTC midnight then always take the slow path (see the module documentation).
    pub fn shared_with_other_writers(mut self) -> Self {
        self.shared = true;
        self
    }

    /// Whether `r` must take the slow path on a shared writer, for its key `key`: it may
    /// depend on, or change, a visitor another writer holds.
    fn crosses_writers(&self, r: &RawEvent, key: &Key) -> bool {
        if !self.shared {
            return false;
        }
        let next_midnight =
            r.ts.date_naive()
                .succ_opt()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|m| m.and_utc());
        r.prev_day_visitor_id != 0
            || self.linked.contains_key(key)
            || next_midnight.is_some_and(|m| m - r.ts <= SESSION_TIMEOUT)
    }

    pub fn corrections(&self) -> bool {
        self.corrections
    }

    /// Processes `batch` (events new to `events`, in any order): returns the rows to insert.
    /// Nothing changes in `self` unless this returns Ok; if the insert of the rows fails,
    /// `rollback` must follow.
    pub async fn process(&mut self, wh: &dyn Warehouse, batch: &[&RawEvent]) -> Result<Processed> {
        if !self.corrections && self.layout_checked.elapsed() >= LAYOUT_CHECK_EVERY {
            self.corrections = tiers::read_state(wh, &self.db).await?.layout == tiers::Layout::Tiers;
            self.layout_checked = std::time::Instant::now();
            if self.corrections {
                // What was processed in arrival order stays as it is until sealing; from here
                // on, state is exact for what this process saw, and the rest is unseen.
                self.take_over(wh).await?;
            }
        }
        let mut batch: Vec<&RawEvent> = batch.to_vec();
        batch.sort_by_key(|r| (r.ts, r.event_id));

        // Which keys need the slow path, closed over the batch: an event that touches a slow
        // key is slow, and so are all its keys.
        let mut slow: HashSet<Key> = HashSet::new();
        let mut hints: HashMap<Key, DateTime<Utc>> = HashMap::new();
        if self.corrections {
            slow.extend(self.repair.keys().cloned());
            hints.extend(self.repair.iter().map(|(k, ts)| (k.clone(), *ts)));
            let mut first_seen: HashSet<Key> = HashSet::new();
            for r in &batch {
                for (site, visitor) in r.session_keys() {
                    let key = (site.to_string(), visitor);
                    if !first_seen.insert(key.clone()) {
                        continue; // only the key's first event in the batch can sort too early
                    }
                    let fast = !self.unseen.contains_key(&key)
                        && !self.crosses_writers(r, &key)
                        && r.ts >= self.floor
                        && self.last.get(&key).is_none_or(|o| (r.ts, r.event_id) > *o);
                    if !fast {
                        slow.extend(r.session_keys().map(|(s, v)| (s.to_string(), v)));
                    }
                }
            }
            loop {
                let before = slow.len();
                for r in &batch {
                    if r.session_keys().any(|(s, v)| slow.contains(&(s.to_string(), v))) {
                        slow.extend(r.session_keys().map(|(s, v)| (s.to_string(), v)));
                    }
                }
                if slow.len() == before {
                    break;
                }
            }
            for key in &slow {
                if let Some(ts) = self.unseen.get(key) {
                    hints.entry(key.clone()).or_insert(*ts);
                }
            }
        }
        let (slow_events, fast_events): (Vec<&RawEvent>, Vec<&RawEvent>) = batch
            .iter()
            .partition(|r| r.session_keys().any(|(s, v)| slow.contains(&(s.to_string(), v))));

        let recomputed = if slow.is_empty() {
            None
        } else {
            Some(
                recompute(
                    wh,
                    &self.db,
                    self.processor.as_ref(),
                    self.config,
                    &slow,
                    &slow_events,
                    &hints,
                )
                .await?,
            )
        };

        // From here on nothing fails: record what to undo, then apply.
        let mut touched: Vec<(Key, DateTime<Utc>)> = Vec::new();
        for r in &batch {
            touched.extend(r.session_keys().map(|(s, v)| ((s.to_string(), v), r.ts)));
        }
        let mut keys: Vec<Key> = touched.iter().map(|(k, _)| k.clone()).collect();
        if let Some(rc) = &recomputed {
            keys.extend(rc.sessions.iter().map(|(s, v, _)| (s.to_string(), v)));
            keys.extend(rc.last.keys().cloned());
        }
        keys.extend(slow.iter().cloned());
        keys.sort_unstable();
        keys.dedup();
        let undo = Undo {
            sessions: self.sessions.snapshot(keys.iter().map(|(s, v)| (s.as_str(), *v))),
            last: keys.iter().map(|k| (k.clone(), self.last.get(k).copied())).collect(),
            unseen: keys.iter().map(|k| (k.clone(), self.unseen.get(k).copied())).collect(),
            repair: self.repair.clone(),
            newest: self.newest,
            touched,
        };

        let mut rows = Vec::with_capacity(batch.len());
        let (mut corrected, mut visitors) = (0, 0);
        if let Some(rc) = recomputed {
            for (site, visitor, session) in rc.sessions.iter() {
                self.sessions.set(site, visitor, session.clone());
            }
            for (key, order) in rc.last {
                let entry = self.last.entry(key).or_insert(order);
                *entry = (*entry).max(order);
            }
            for key in &slow {
                self.unseen.remove(key);
            }
            rows.extend(rc.rows);
            corrected = rc.cancelled;
            visitors = rc.visitors;
        }
        self.repair.clear();
        for r in fast_events {
            rows.push(self.processor.process(r, self.config, &mut self.sessions));
            for (site, visitor) in r.session_keys() {
                let order = (r.ts, r.event_id);
                let entry = self.last.entry((site.to_string(), visitor)).or_insert(order);
                *entry = (*entry).max(order);
            }
        }
        if self.shared {
            for r in &batch {
                let key = (r.site_id.clone(), r.visitor_id);
                if r.prev_day_visitor_id != 0 || self.linked.contains_key(&key) {
                    let entry = self.linked.entry(key).or_insert(r.ts);
                    *entry = (*entry).max(r.ts);
                }
            }
        }
        if let Some(newest) = batch.iter().map(|r| r.ts).max() {
            self.newest = self.newest.max(newest.min(Utc::now()));
        }
        if self.evicted.elapsed() >= EVICT_EVERY {
            self.evict();
        }
        Ok(Processed {
            rows,
            corrected,
            recomputed: visitors,
            undo,
        })
    }

    /// Puts the state back as it was before `processed` and marks its visitors for a
    /// recompute with the next batch: the insert failed, perhaps after the raw rows landed.
    pub fn rollback(&mut self, processed: Processed) {
        let undo = processed.undo;
        self.sessions.rollback(undo.sessions);
        for (key, order) in undo.last {
            match order {
                Some(o) => self.last.insert(key, o),
                None => self.last.remove(&key),
            };
        }
        for (key, ts) in undo.unseen {
            match ts {
                Some(t) => self.unseen.insert(key, t),
                None => self.unseen.remove(&key),
            };
        }
        self.repair = undo.repair;
        self.newest = undo.newest;
        if self.corrections {
            for (key, ts) in undo.touched {
                self.repair.entry(key).or_insert(ts);
            }
        }
    }

    /// Visitors waiting for a recompute after a failed insert.
    pub fn pending_repairs(&self) -> usize {
        self.repair.len()
    }

    /// Drops state that fell behind `REACH` of the newest event, and raises `floor` to match:
    /// an event older than it finds nothing in memory and takes the slow path.
    fn evict(&mut self) {
        self.evicted = std::time::Instant::now();
        if self.newest == DateTime::<Utc>::MIN_UTC {
            return;
        }
        let horizon = self.newest - REACH;
        if horizon <= self.floor {
            return;
        }
        // A session that no event at or after the horizon can join.
        self.sessions.evict_idle(horizon);
        let keep = horizon - SESSION_TIMEOUT;
        self.last.retain(|_, (ts, _)| *ts >= keep);
        self.unseen.retain(|_, ts| *ts >= keep);
        self.linked.retain(|_, ts| *ts >= keep);
        self.floor = horizon;
    }

    /// Sizes of the state: (sessions, keys with a last event, unseen keys).
    pub fn sizes(&self) -> (usize, usize, usize) {
        (self.sessions.len(), self.last.len(), self.unseen.len())
    }
}

/// What `reconcile_visitors` wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Rows inserted into `events` (new rows, cancellations and their replacements).
    pub rows: usize,
    /// Stored rows cancelled and replaced.
    pub cancelled: usize,
    /// Visitors processed again.
    pub visitors: usize,
}

/// Processes the visitors of `keys` (site, visitor id, the time of one of their events)
/// again from what `events_raw` holds and inserts the difference with their rows in
/// `events`: rows for raw events that have none, and corrections. What a replay's catch-up
/// pass runs for events that reached a day while it was being replayed; idempotent (a second
/// run finds nothing to write).
pub async fn reconcile_visitors(
    wh: &dyn Warehouse,
    tenant: &Tenant,
    processor: &dyn Processor,
    keys: &[(String, u64, DateTime<Utc>)],
) -> Result<Reconciled> {
    if keys.is_empty() {
        return Ok(Reconciled::default());
    }
    let config = ProcessorConfig {
        bot_filtering: tenant.spec.bot_filtering,
    };
    let db = tenant.database();
    let set: HashSet<Key> = keys.iter().map(|(s, v, _)| (s.clone(), *v)).collect();
    let hints: HashMap<Key, DateTime<Utc>> = keys.iter().map(|(s, v, t)| ((s.clone(), *v), *t)).collect();
    let rc = recompute(wh, &db, processor, config, &set, &[], &hints).await?;
    ops::insert_events(wh, &format!("{db}.{EVENTS_TABLE}"), &rc.rows).await?;
    Ok(Reconciled {
        rows: rc.rows.len(),
        cancelled: rc.cancelled,
        visitors: rc.visitors,
    })
}

struct Recomputed {
    rows: Vec<Event>,
    cancelled: usize,
    visitors: usize,
    sessions: SessionState,
    last: HashMap<Key, Order>,
}

/// Processes the visitors `keys` again from their stored raw events plus `new` (events not
/// stored yet, or stored raw without a processed row), following visits across UTC midnight,
/// and returns the difference with their stored rows.
async fn recompute(
    wh: &dyn Warehouse,
    db: &str,
    processor: &dyn Processor,
    config: ProcessorConfig,
    keys: &HashSet<Key>,
    new: &[&RawEvent],
    hints: &HashMap<Key, DateTime<Utc>>,
) -> Result<Recomputed> {
    let mut by_site: BTreeMap<&str, (BTreeSet<u64>, Vec<DateTime<Utc>>)> = BTreeMap::new();
    for (site, visitor) in keys {
        by_site.entry(site.as_str()).or_default().0.insert(*visitor);
    }
    for r in new {
        if let Some(site) = by_site.get_mut(r.site_id.as_str()) {
            site.1.push(r.ts);
        }
    }
    for ((site, _), ts) in hints {
        if let Some(site) = by_site.get_mut(site.as_str()) {
            site.1.push(*ts);
        }
    }
    // Ids are unique per site only: events are keyed by both.
    let mut events: BTreeMap<(String, Uuid), (RawEvent, bool)> = BTreeMap::new();
    let mut all_keys: HashSet<Key> = keys.clone();
    let mut seeds: Vec<(String, DateTime<Utc>, Vec<u64>)> = Vec::new();
    for (site, (visitors, times)) in by_site {
        let site_new: Vec<&RawEvent> = new.iter().copied().filter(|r| r.site_id == site).collect();
        let stored = visitor_raw_events(wh, db, site, visitors, &times, &site_new).await?;
        for r in stored.rows {
            events.insert((r.site_id.clone(), r.event_id), (r, true));
        }
        for r in site_new {
            events
                .entry((r.site_id.clone(), r.event_id))
                .or_insert_with(|| (r.clone(), false));
        }
        all_keys.extend(stored.visitors.iter().map(|v| (site.to_string(), *v)));
        // The visits open at a midnight for visitors outside the recompute seed it.
        let mut by_midnight: BTreeMap<DateTime<Utc>, BTreeSet<u64>> = BTreeMap::new();
        for (r, _) in events.values().filter(|(r, _)| r.site_id == site) {
            if r.prev_day_visitor_id != 0 && !stored.visitors.contains(&r.prev_day_visitor_id) {
                let midnight = r.ts.date_naive().and_hms_opt(0, 0, 0).expect("midnight").and_utc();
                by_midnight.entry(midnight).or_default().insert(r.prev_day_visitor_id);
            }
        }
        for (midnight, prevs) in by_midnight {
            seeds.push((site.to_string(), midnight, prevs.into_iter().collect()));
        }
    }
    let mut state = SessionState::default();
    for (site, midnight, prevs) in &seeds {
        ops::restore_visitor_sessions(wh, db, *midnight, site, prevs, &mut state).await?;
    }
    // The total order (sites are independent; the site only breaks ties deterministically).
    let mut ordered: Vec<(RawEvent, bool)> = events.into_values().collect();
    ordered.sort_by(|a, b| (a.0.ts, a.0.event_id, &a.0.site_id).cmp(&(b.0.ts, b.0.event_id, &b.0.site_id)));

    let stored_rows = stored_event_rows(wh, db, &ordered).await?;
    let mut rows = Vec::new();
    let mut cancelled = 0;
    let mut last: HashMap<Key, Order> = HashMap::new();
    for (raw, _) in &ordered {
        let row = processor.process(raw, config, &mut state);
        for (site, visitor) in raw.session_keys() {
            let order = (raw.ts, raw.event_id);
            let entry = last.entry((site.to_string(), visitor)).or_insert(order);
            *entry = (*entry).max(order);
        }
        match stored_rows.get(&(raw.site_id.clone(), raw.event_id)) {
            Some(old) if *old == row => {}
            Some(old) => {
                rows.push(old.cancelled());
                rows.push(row);
                cancelled += 1;
            }
            None => rows.push(row),
        }
    }
    let visitors = all_keys.len();
    if cancelled > 0 {
        tracing::debug!(db, visitors, cancelled, "visitors recomputed: rows corrected");
    }
    Ok(Recomputed {
        rows,
        cancelled,
        visitors,
        sessions: state,
        last,
    })
}

struct VisitorEvents {
    rows: Vec<RawEvent>,
    /// The visitor ids whose events these are (the keys asked for, and the next days' ids
    /// of visits that crossed midnight from them).
    visitors: BTreeSet<u64>,
}

/// The stored raw events of `visitors` of a site around `times`, and of the visitors whose
/// visits crossed UTC midnight from them (linked by `prev_day_visitor_id`), followed for as
/// many midnights as they cross. `new` are the site's events not stored yet: they can reach
/// past a midnight too.
async fn visitor_raw_events(
    wh: &dyn Warehouse,
    db: &str,
    site: &str,
    visitors: BTreeSet<u64>,
    times: &[DateTime<Utc>],
    new: &[&RawEvent],
) -> Result<VisitorEvents> {
    let mut rows: HashMap<Uuid, RawEvent> = HashMap::new();
    let mut known = visitors.clone();
    let mut wanted: Vec<u64> = visitors.into_iter().collect();
    let mut days: BTreeSet<NaiveDate> = times.iter().map(|t| t.date_naive()).collect();
    for _ in 0..MAX_LINK_ROUNDS {
        if wanted.is_empty() {
            break;
        }
        let (Some(first), Some(last)) = (days.first().copied(), days.last().copied()) else {
            break;
        };
        let range = (first.pred_opt().unwrap_or(first), last.succ_opt().unwrap_or(last));
        // A visitor's own events: the primary key leads with (site, visitor).
        let mut found = select_raw(
            wh,
            db,
            site,
            &wanted,
            "toDate(ts) BETWEEN {from:Date} AND {to:Date} AND visitor_id IN {visitors:Array(UInt64)}",
            Some(range),
            &[],
        )
        .await?;
        // The next day's first half hour, only where one of these visitors' events is close
        // enough to midnight for a visit to cross it: that lookup cannot use the key.
        let wanted_set: HashSet<u64> = wanted.iter().copied().collect();
        let next_days: BTreeSet<NaiveDate> = found
            .iter()
            .chain(new.iter().copied().filter(|r| wanted_set.contains(&r.visitor_id)))
            .filter(|r| {
                let midnight = r.ts.date_naive().succ_opt().and_then(|d| d.and_hms_opt(0, 0, 0));
                midnight.is_some_and(|m| r.ts >= m.and_utc() - SESSION_TIMEOUT - Duration::minutes(1))
            })
            .filter_map(|r| r.ts.date_naive().succ_opt())
            .collect();
        if !next_days.is_empty() {
            let next: Vec<NaiveDate> = next_days.into_iter().collect();
            found.extend(
                select_raw(
                    wh,
                    db,
                    site,
                    &wanted,
                    "toDate(ts) IN {days:Array(Date)} AND prev_day_visitor_id IN {visitors:Array(UInt64)} \
                     AND ts < toStartOfDay(ts) + INTERVAL 1 HOUR",
                    None,
                    &next,
                )
                .await?,
            );
        }
        wanted = Vec::new();
        for raw in found {
            if known.insert(raw.visitor_id) {
                wanted.push(raw.visitor_id);
            }
            days.insert(raw.ts.date_naive());
            rows.insert(raw.event_id, raw);
        }
    }
    Ok(VisitorEvents {
        rows: rows.into_values().collect(),
        visitors: known,
    })
}

/// Raw events of a site matching `condition` over `visitors` (in chunks), with `{from}` and
/// `{to}` bound from `range` and `{days}` from `days`.
async fn select_raw(
    wh: &dyn Warehouse,
    db: &str,
    site: &str,
    visitors: &[u64],
    condition: &str,
    range: Option<(NaiveDate, NaiveDate)>,
    days: &[NaiveDate],
) -> Result<Vec<RawEvent>> {
    let mut out = Vec::new();
    let days: Vec<String> = days.iter().map(|d| d.format("%Y-%m-%d").to_string()).collect();
    for chunk in visitors.chunks(ops::ID_LOOKUP_CHUNK) {
        let mut params = Params::new()
            .bind("site", site)
            .bind("visitors", ops::u64_array(chunk))
            .bind("days", Params::array_of_strings(&days));
        if let Some((from, to)) = range {
            params.push("from", from);
            params.push("to", to);
        }
        let sql = format!(
            "SELECT {} FROM {db}.{RAW_TABLE} WHERE site_id = {{site:String}} AND {condition}",
            schema::RAW_COLUMNS
        );
        for row in wh.select(&sql, &params).await? {
            out.push(serde_json::from_value(row).map_err(|e| Error::Decode(format!("events_raw row: {e}")))?);
        }
    }
    Ok(out)
}

/// The current row of each stored event of `events` (site, id) in `events`: rows collapsed by
/// `sign`, so a cancelled row and its cancellation are gone.
async fn stored_event_rows(
    wh: &dyn Warehouse,
    db: &str,
    events: &[(RawEvent, bool)],
) -> Result<HashMap<(String, Uuid), Event>> {
    let mut by_site: BTreeMap<&str, (Vec<&RawEvent>, BTreeSet<NaiveDate>)> = BTreeMap::new();
    for (raw, stored) in events {
        if *stored {
            let site = by_site.entry(raw.site_id.as_str()).or_default();
            site.0.push(raw);
            site.1.insert(raw.ts.date_naive());
        }
    }
    let mut current = HashMap::new();
    for (site, (raws, days)) in by_site {
        let days: Vec<String> = days.iter().map(|d| d.format("%Y%m%d").to_string()).collect();
        let days = format!("[{}]", days.join(","));
        for chunk in raws.chunks(ops::ID_LOOKUP_CHUNK) {
            let params = Params::new().bind("site", site).bind("days", &days).bind(
                "ids",
                Params::array_of_strings(chunk.iter().map(|r| r.event_id.to_string())),
            );
            let sql = format!(
                "SELECT {} FROM {db}.{EVENTS_TABLE} WHERE site_id = {{site:String}} \
                   AND toYYYYMMDD(ts) IN {{days:Array(UInt32)}} AND event_id IN {{ids:Array(UUID)}}",
                schema::EVENT_COLUMNS
            );
            // Rows of one event: +1 rows and -1 rows that cancel one of them exactly.
            let mut tally: HashMap<String, (i64, Event)> = HashMap::new();
            for row in wh.select(&sql, &params).await? {
                let event: Event =
                    serde_json::from_value(row).map_err(|e| Error::Decode(format!("events row: {e}")))?;
                let sign = i64::from(event.sign);
                let plain = Event { sign: 1, ..event };
                let key = serde_json::to_string(&plain).map_err(|e| Error::Decode(e.to_string()))?;
                tally.entry(key).or_insert((0, plain)).0 += sign;
            }
            for (net, event) in tally.into_values() {
                if net > 0 {
                    current.insert((event.site_id.clone(), event.event_id), event);
                }
            }
        }
    }
    Ok(current)
}
