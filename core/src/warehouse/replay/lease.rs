//! Leases on UTC days (`day_leases`, docs/replay.md "The replay engine"): a replay holds the
//! lease of each day it rebuilds, so that two replays, or a replay and sealing, never work
//! on one day at once, and so that writers hold back that day's events meanwhile.
//!
//! The warehouse has no compare-and-set, so a lease is a claim row and a rule everyone
//! applies alike: of the live claims on a day (not released, not expired), the one taken
//! first (by the server's clock, then by holder) holds it. A claimant inserts its claim,
//! reads the day's claims, and if it is not the holder withdraws. It reads a second time
//! after `SETTLE`, so that a claim whose insert was still in flight at the first read is
//! seen too. Claims expire (`TTL`) unless renewed, so a replay that died holds nothing
//! for long.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{Duration, NaiveDate};

use super::super::{Params, Warehouse};
use crate::schema::LEASES_TABLE;
use crate::{Error, Result};

/// How long a claim lives without renewal.
pub const TTL: Duration = Duration::minutes(5);
/// How often a holder renews its claims while it works.
pub const RENEW_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// How long a claimant waits before reading the claims a second time.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(200);
/// How long writers may go on with a stale view of the leases (`HeldDays`): a forced replay
/// waits this long (and a margin) after taking a lease before it reads the day.
pub const WRITER_NOTICE: std::time::Duration = std::time::Duration::from_secs(1);

/// One holder's claim on one day.
pub struct Lease {
    pub day: NaiveDate,
    holder: String,
    purpose: String,
    db: String,
    version: AtomicU64,
}

fn next_version(v: &AtomicU64) -> u64 {
    // Orders one holder's rows of a day: claim, renewals, release.
    let now = chrono::Utc::now().timestamp_micros().max(0) as u64;
    let prev = v.fetch_max(now, Ordering::SeqCst);
    if prev >= now {
        v.fetch_add(1, Ordering::SeqCst) + 1
    } else {
        now
    }
}

/// The live claims of `day`: (holder, purpose), the holder first.
async fn live_claims(wh: &dyn Warehouse, db: &str, day: NaiveDate) -> Result<Vec<(String, String)>> {
    let rows = wh
        .select(
            &format!(
                "SELECT holder, purpose FROM ( \
                   SELECT holder, argMax(purpose, version) AS purpose, min(taken_at) AS first, \
                          argMax(released, version) AS released, argMax(expires_at, version) AS expires \
                   FROM {db}.{LEASES_TABLE} WHERE day = {{day:Date}} GROUP BY holder) \
                 WHERE released = 0 AND expires > now64(3) ORDER BY first, holder"
            ),
            &Params::new().bind("day", day.format("%Y-%m-%d")),
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r["holder"].as_str().unwrap_or_default().to_string(),
                r["purpose"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect())
}

impl Lease {
    /// Claims `day` for `holder` (a run id), or fails with `Error::DayLeased` naming who
    /// holds it. `purpose` says why (reprocess, sealing, repair), for that message.
    pub async fn acquire(wh: &dyn Warehouse, db: &str, day: NaiveDate, holder: &str, purpose: &str) -> Result<Lease> {
        let lease = Lease {
            day,
            holder: holder.to_string(),
            purpose: purpose.to_string(),
            db: db.to_string(),
            version: AtomicU64::new(0),
        };
        lease.write(wh, false).await?;
        for read in 0..2 {
            if read > 0 {
                tokio::time::sleep(SETTLE).await;
            }
            let claims = live_claims(wh, db, day).await?;
            match claims.first() {
                Some((first, _)) if *first == lease.holder => {}
                Some((other, purpose)) => {
                    let (other, purpose) = (other.clone(), purpose.clone());
                    lease.release(wh).await?;
                    return Err(Error::DayLeased {
                        day,
                        holder: other,
                        purpose,
                    });
                }
                None => {
                    return Err(Error::Query {
                        sql: "lease claim".into(),
                        message: format!("the claim on day {day} is not visible after its insert"),
                    })
                }
            }
        }
        Ok(lease)
    }

    /// Extends the claim by `TTL` from now.
    pub async fn renew(&self, wh: &dyn Warehouse) -> Result<()> {
        self.write(wh, false).await
    }

    /// Gives the day back.
    pub async fn release(&self, wh: &dyn Warehouse) -> Result<()> {
        self.write(wh, true).await
    }

    async fn write(&self, wh: &dyn Warehouse, released: bool) -> Result<()> {
        let db = &self.db;
        wh.execute(
            &format!(
                "INSERT INTO {db}.{LEASES_TABLE} (day, holder, purpose, taken_at, expires_at, released, version) \
                 SELECT {{day:Date}}, {{holder:String}}, {{purpose:String}}, now64(3), \
                        now64(3) + toIntervalMillisecond({{ttl:UInt64}}), {{released:UInt8}}, {{version:UInt64}}"
            ),
            &Params::new()
                .bind("day", self.day.format("%Y-%m-%d"))
                .bind("holder", &self.holder)
                .bind("purpose", &self.purpose)
                .bind("ttl", TTL.num_milliseconds())
                .bind("released", u8::from(released))
                .bind("version", next_version(&self.version)),
        )
        .await
    }
}

/// The days of `db` with a live lease, from `since` on: what a writer checks before storing
/// a batch (`HeldDays` caches it).
pub async fn held_days(wh: &dyn Warehouse, db: &str, since: NaiveDate) -> Result<BTreeSet<NaiveDate>> {
    let rows = wh
        .select(
            &format!(
                "SELECT DISTINCT toString(day) AS day FROM ( \
                   SELECT day, holder, argMax(released, version) AS released, argMax(expires_at, version) AS expires \
                   FROM {db}.{LEASES_TABLE} WHERE day >= {{since:Date}} GROUP BY day, holder) \
                 WHERE released = 0 AND expires > now64(3)"
            ),
            &Params::new().bind("since", since.format("%Y-%m-%d")),
        )
        .await?;
    rows.iter()
        .map(|r| {
            r["day"]
                .as_str()
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                .ok_or_else(|| Error::Decode(format!("day in {r}")))
        })
        .collect()
}

/// A writer's view of the leased days of one tenant, read again when older than
/// `WRITER_NOTICE`. It also remembers which leased days it has seen, so that the writer
/// knows when a forced replay of a day it writes has finished (its sessions must then be
/// read again: `LiveSessions::take_over`).
pub struct HeldDays {
    db: String,
    held: BTreeSet<NaiveDate>,
    read_at: Option<std::time::Instant>,
    seen: BTreeSet<NaiveDate>,
}

/// What a writer may do with a batch's days.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    /// Days of the batch a replay holds: their events wait.
    pub held: BTreeSet<NaiveDate>,
    /// Days this writer saw leased before, now released: a replay rewrote them.
    pub released: BTreeSet<NaiveDate>,
}

impl HeldDays {
    pub fn new(db: &str) -> Self {
        HeldDays {
            db: db.to_string(),
            held: BTreeSet::new(),
            read_at: None,
            seen: BTreeSet::new(),
        }
    }

    /// The leases that concern `days` (read again when the view is older than
    /// `WRITER_NOTICE`). Writers only write days the intake still accepts, so only recent
    /// leases are read.
    pub async fn check(&mut self, wh: &dyn Warehouse, days: &[NaiveDate]) -> Result<LeaseView> {
        if self.read_at.is_none_or(|t| t.elapsed() >= WRITER_NOTICE) {
            let since = chrono::Utc::now().date_naive() - chrono::Days::new(7);
            self.held = held_days(wh, &self.db, since).await?;
            self.read_at = Some(std::time::Instant::now());
            self.seen.extend(self.held.iter().copied());
        }
        let held: BTreeSet<NaiveDate> = days.iter().copied().filter(|d| self.held.contains(d)).collect();
        let released: BTreeSet<NaiveDate> = self.seen.difference(&self.held).copied().collect();
        Ok(LeaseView { held, released })
    }

    /// The writer has caught up with the replays of `days` (it read its sessions again).
    pub fn acknowledge(&mut self, days: &BTreeSet<NaiveDate>) {
        for d in days {
            self.seen.remove(d);
        }
    }
}

/// Releases every live claim of `db`, for a process that holds the warehouse alone (the
/// embedded engine, which one process opens at a time): every claim in it was then left by
/// a process that has stopped (a replay killed mid-day), and would hold its day for up to
/// `TTL`, refusing a resumed run and holding writers' events of that day back. Returns the
/// days whose claims were released. Never call it where another process may replay (a
/// ClickHouse server): a live run's lease would be taken from under it.
pub async fn release_left_behind(wh: &dyn Warehouse, db: &str) -> Result<Vec<NaiveDate>> {
    let rows = wh
        .select(
            &format!(
                "SELECT toString(day) AS day, holder, purpose, toString(last_version) AS last FROM ( \
                   SELECT day, holder, argMax(purpose, version) AS purpose, max(version) AS last_version, \
                          argMax(released, version) AS released, argMax(expires_at, version) AS expires \
                   FROM {db}.{LEASES_TABLE} GROUP BY day, holder) \
                 WHERE released = 0 AND expires > now64(3) ORDER BY day, holder"
            ),
            &Params::new(),
        )
        .await?;
    let mut days = Vec::with_capacity(rows.len());
    for r in &rows {
        let field = |key: &str| {
            r[key]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| Error::Decode(format!("{key} in {r}")))
        };
        let day =
            NaiveDate::parse_from_str(&field("day")?, "%Y-%m-%d").map_err(|e| Error::Decode(format!("day: {e}")))?;
        let version: u64 = field("last")?
            .parse()
            .map_err(|e| Error::Decode(format!("version: {e}")))?;
        let lease = Lease {
            day,
            holder: field("holder")?,
            purpose: field("purpose")?,
            db: db.to_string(),
            version: AtomicU64::new(version),
        };
        // A version above the holder's last row, so that the release is its latest word.
        lease.release(wh).await?;
        days.push(day);
    }
    Ok(days)
}
