//! Sealing (docs/replay.md, "Sealing"): once a UTC day can receive no more events, it is
//! replayed if what is stored may differ from what a replay gives, then the daily tier
//! takes it (`tiers::seal`). A day needs the replay when
//! - it holds cancelled rows (`sign = -1`: live corrections, which visitor sketches cannot
//!   take back: a replay writes only the final rows);
//! - rows of it were made by another processing identity than the sealer's;
//! - `events` and `events_raw` disagree on its rows (a crash between the two inserts).
//!
//! `storage_state.replay_checked_through` records the last day checked, so each day is
//! checked (and replayed) once.

use std::sync::Arc;

use chrono::{DateTime, Days, NaiveDate, Utc};

use super::super::{tiers, Params, Warehouse};
use super::{midnight, run_days, CancellationToken, NoHooks, ReplayRequest};
use crate::processor::Processor;
use crate::schema::{EVENTS_TABLE, RAW_TABLE};
use crate::spec::Tenant;
use crate::{Error, Result};

const CHECKED_THROUGH: &str = "replay_checked_through";

/// What a round of sealing did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sealed {
    /// Days replayed before sealing.
    pub replayed: Vec<NaiveDate>,
    /// The local day the daily tier now holds through.
    pub daily_through: Option<NaiveDate>,
}

/// The sealed days in `[from, to]` whose rows may differ from a replay's with `processing`.
pub async fn days_needing_replay(
    wh: &dyn Warehouse,
    db: &str,
    processing: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<NaiveDate>> {
    let sql = format!(
        "SELECT toString(day) AS day FROM ( \
           SELECT toDate(ts) AS day, count() AS raw, 0 AS net, 0 AS cancelled, 0 AS other FROM {db}.{RAW_TABLE} \
             WHERE toDate(ts) BETWEEN {{from:Date}} AND {{to:Date}} GROUP BY day \
           UNION ALL SELECT toDate(ts), 0, sum(sign), countIf(sign < 0), countIf(processing != {{p:String}}) \
             FROM {db}.{EVENTS_TABLE} WHERE toDate(ts) BETWEEN {{from:Date}} AND {{to:Date}} GROUP BY toDate(ts) \
         ) GROUP BY day HAVING sum(raw) != sum(net) OR sum(cancelled) > 0 OR sum(other) > 0 ORDER BY day"
    );
    let params = Params::new()
        .bind("from", from.format("%Y-%m-%d"))
        .bind("to", to.format("%Y-%m-%d"))
        .bind("p", processing);
    wh.select(&sql, &params)
        .await?
        .iter()
        .map(|r| {
            r["day"]
                .as_str()
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                .ok_or_else(|| Error::Decode(format!("day in {r}")))
        })
        .collect()
}

/// One round of sealing for a tenant: the days sealed since the last round are checked and
/// replayed where needed (through the engine, with `processor`, one day at a time), then
/// the daily tier is brought up to them. A day another replay holds is left for the next
/// round (and so are the days after it).
pub async fn seal(
    wh: &dyn Warehouse,
    tenant: &Tenant,
    processor: Arc<dyn Processor>,
    now: DateTime<Utc>,
) -> Result<Sealed> {
    let db = tenant.database();
    if tiers::read_state(wh, &db).await?.layout == tiers::Layout::Hourly {
        // Still moving onto the tiers: the backfill seals at its end.
        return Ok(Sealed::default());
    }
    let sealed = tiers::sealed_through(now);
    let values = tiers::state_values(wh, &db).await?;
    let from = match values
        .get(CHECKED_THROUGH)
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
    {
        Some(checked) => checked + Days::new(1),
        None => match oldest_day(wh, &db).await? {
            Some(day) => day,
            None => return Ok(Sealed::default()),
        },
    };
    let mut replayed = Vec::new();
    if from <= sealed {
        let request = ReplayRequest {
            purpose: "sealing".into(),
            now,
            ..ReplayRequest::new(
                tenant.clone(),
                midnight(from),
                midnight(sealed + Days::new(1)),
                processor,
            )
        };
        let days = days_needing_replay(wh, &db, &request.identity(), from, sealed).await?;
        let mut checked = sealed;
        if !days.is_empty() {
            match run_days(wh, request, days, None, &NoHooks, &CancellationToken::new()).await {
                Ok(report) => replayed = report.days.iter().map(|d| d.day).collect(),
                Err(Error::ReplayStopped { day, cause, report }) => {
                    replayed = report.days.iter().map(|d| d.day).collect();
                    tracing::warn!(tenant = %tenant.name, %day, error = %cause, "sealing replay stopped; the day is checked again next round");
                    checked = day - Days::new(1);
                }
                Err(e) => return Err(e),
            }
        }
        if checked >= from {
            tiers::write_state(wh, &db, CHECKED_THROUGH, &checked.format("%Y-%m-%d").to_string()).await?;
        }
        if !replayed.is_empty() {
            tracing::info!(tenant = %tenant.name, days = replayed.len(), "sealed days replayed");
        }
    }
    let daily_through = tiers::seal(wh, tenant, now).await?;
    Ok(Sealed {
        replayed,
        daily_through,
    })
}

async fn oldest_day(wh: &dyn Warehouse, db: &str) -> Result<Option<NaiveDate>> {
    let rows = wh
        .select(
            &format!("SELECT toString(min(toDate(ts))) AS day, count() AS n FROM {db}.{RAW_TABLE}"),
            &Params::new(),
        )
        .await?;
    let Some(r) = rows.first().filter(|r| r["n"].as_u64().unwrap_or(0) > 0) else {
        return Ok(None);
    };
    Ok(r["day"]
        .as_str()
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()))
}
