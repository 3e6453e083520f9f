//! Start-up repair (days a crash left half-loaded) and the plain "replay these days" that
//! tests and tools use: both run the engine (`replay::run`) with every site, the current
//! processor and no writers beside it; and the hourly rollups of earlier releases, rebuilt
//! a month at a time while they still answer queries.

use std::sync::Arc;

use chrono::{DateTime, Days, NaiveDate, Utc};

use super::super::tiers;
use super::super::{ops, Params, Warehouse};
use super::{run_days, NoHooks, ReplayReport, ReplayRequest};
use crate::processor::Current;
use crate::schema::{self, legacy, EVENTS_TABLE, RAW_TABLE};
use crate::spec::Tenant;
use crate::{Error, Result};

/// What a day's replay did, in short (the engine's `DayReport` has the rest).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DayReplayed {
    pub day: NaiveDate,
    pub raw_rows: u64,
}

/// Rebuilds `events` and the tiers of one UTC day from `events_raw` (see `replay_days`).
pub async fn replay_day(wh: &dyn Warehouse, tenant: &Tenant, day: NaiveDate) -> Result<DayReplayed> {
    let mut done = replay_days(wh, tenant, &[day]).await?;
    Ok(done.remove(0))
}

/// Rebuilds `events` for each day from `events_raw` with the current processor, then the
/// days' quarter-hour tier, the daily tier's local days and, while the hourly layout of
/// earlier releases still answers queries, its months (swapped a month at a time: run this
/// where no live insert touches them, as start-up does).
pub async fn replay_days(wh: &dyn Warehouse, tenant: &Tenant, days: &[NaiveDate]) -> Result<Vec<DayReplayed>> {
    if days.is_empty() {
        return Ok(Vec::new());
    }
    let report = replay_without_writers(wh, tenant, days, "repair").await?;
    Ok(report
        .days
        .iter()
        .map(|d| DayReplayed {
            day: d.day,
            raw_rows: d.raw_rows,
        })
        .collect())
}

/// The engine over `days`, forced, where no writer runs beside it.
async fn replay_without_writers(
    wh: &dyn Warehouse,
    tenant: &Tenant,
    days: &[NaiveDate],
    purpose: &str,
) -> Result<ReplayReport> {
    let mut days = days.to_vec();
    days.sort_unstable();
    days.dedup();
    let request = ReplayRequest {
        purpose: purpose.to_string(),
        force: true,
        beside_writers: false,
        ..ReplayRequest::new(
            tenant.clone(),
            midnight(days[0]),
            midnight(days[days.len() - 1] + Days::new(1)),
            Arc::new(Current),
        )
    };
    run_days(
        wh,
        request,
        days,
        None,
        &NoHooks,
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// Finds days of the recent past that a crash left half-loaded and replays them. Run before
/// accepting traffic, since a replay replaces whole days.
pub async fn repair_recent_days(
    wh: &dyn Warehouse,
    tenant: &Tenant,
    now: DateTime<Utc>,
    days_back: u64,
) -> Result<Vec<DayReplayed>> {
    let to = now.date_naive() + Days::new(1);
    let from = now.date_naive() - Days::new(days_back);
    let days = inconsistent_days(wh, tenant, from, to).await?;
    for day in &days {
        tracing::warn!(tenant = %tenant.name, %day, "day is inconsistent after a crash; replaying it");
    }
    replay_days(wh, tenant, &days).await
}

/// Both hourly rollups of one month (the layout of earlier releases), rebuilt from `events`
/// with their views' own SQL and swapped in.
pub(super) async fn rebuild_hourly_month(wh: &dyn Warehouse, tenant: &Tenant, year: i32, month: u32) -> Result<()> {
    let db = tenant.database();
    let none = Params::new();
    let days = tenant.spec.retention.rollup_days;
    let partition = format!("{year:04}{month:02}");
    for (table, ddl, view) in [
        (
            legacy::SITE_ROLLUP,
            legacy::site_rollup_ddl(&db, days),
            legacy::site_view(&db),
        ),
        (
            legacy::DIM_ROLLUP,
            legacy::dims_rollup_ddl(&db, days),
            legacy::dims_view(&db),
        ),
    ] {
        let staged = format!("{table}_stage_{:08x}", rand::random::<u32>());
        wh.execute(&ddl.replacen(table, &staged, 1), &none).await?;
        wh.execute(&format!("TRUNCATE TABLE {db}.{staged}"), &none).await?;
        // The view's own SELECT, over the month's events only.
        let select = view
            .split_once(" AS SELECT ")
            .map(|(_, select)| format!("SELECT {select}"))
            .expect("a view is CREATE ... AS SELECT");
        let month_events = format!("(SELECT * FROM {db}.{EVENTS_TABLE} WHERE toYYYYMM(ts) = {partition})");
        let select = select.replacen(&format!("{db}.{EVENTS_TABLE}"), &month_events, 1);
        wh.execute(&format!("INSERT INTO {db}.{staged} {select}"), &none)
            .await?;
        ops::swap_partition(wh, &db, table, &staged, &partition).await?;
        wh.execute(&format!("DROP TABLE IF EXISTS {db}.{staged}"), &none)
            .await?;
    }
    tracing::info!(tenant = %tenant.name, %partition, "month of hourly rollups rebuilt");
    Ok(())
}

/// The days in `[from, to]` whose tables disagree: `events_raw` and `events` hold other
/// rows, or the quarter-hour tier (and, while it lives, the hourly layout) does not add up
/// to the non-bot events.
pub async fn inconsistent_days(
    wh: &dyn Warehouse,
    tenant: &Tenant,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<NaiveDate>> {
    let db = tenant.database();
    let params = Params::new()
        .bind("from", from.format("%Y-%m-%d"))
        .bind("to", to.format("%Y-%m-%d"));
    let sql = format!(
        "SELECT toString(day) AS day FROM ( \
           SELECT toDate(ts) AS day, count() AS raw, 0 AS ev FROM {db}.{RAW_TABLE} \
             WHERE toDate(ts) BETWEEN {{from:Date}} AND {{to:Date}} GROUP BY day \
           UNION ALL SELECT toDate(ts), 0, sum(sign) FROM {db}.{EVENTS_TABLE} \
             WHERE toDate(ts) BETWEEN {{from:Date}} AND {{to:Date}} GROUP BY toDate(ts) \
         ) GROUP BY day HAVING sum(raw) != sum(ev) ORDER BY day"
    );
    let mut days: Vec<NaiveDate> = wh
        .select(&sql, &params)
        .await?
        .iter()
        .map(|r| {
            r["day"]
                .as_str()
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                .ok_or_else(|| Error::Decode(format!("day in {r}")))
        })
        .collect::<Result<_>>()?;
    days.extend(tiers::quarter_hour_mismatches(wh, &db, from, to).await?);
    if tiers::hourly_layout_live(wh, &db).await? {
        days.extend(hourly_mismatches(wh, &db, &params).await?);
    }
    days.sort_unstable();
    days.dedup();
    Ok(days)
}

async fn hourly_mismatches(wh: &dyn Warehouse, db: &str, params: &Params) -> Result<Vec<NaiveDate>> {
    let sql = format!(
        "SELECT toString(day) AS day, sum(counted) AS counted, sum(site) AS site, sum(dims) AS dims FROM ( \
           SELECT toDate(ts) AS day, countIf(is_bot = 0) AS counted, 0 AS site, 0 AS dims FROM {db}.{EVENTS_TABLE} \
             WHERE toDate(ts) BETWEEN {{from:Date}} AND {{to:Date}} GROUP BY day \
           UNION ALL SELECT toDate(hour), 0, sum(events), 0 FROM {db}.{site} \
             WHERE toDate(hour) BETWEEN {{from:Date}} AND {{to:Date}} GROUP BY toDate(hour) \
           UNION ALL SELECT toDate(hour), 0, 0, intDiv(sum(events), {n}) FROM {db}.{dims} \
             WHERE toDate(hour) BETWEEN {{from:Date}} AND {{to:Date}} GROUP BY toDate(hour) \
         ) GROUP BY day HAVING counted != site OR counted != dims ORDER BY day",
        site = legacy::SITE_ROLLUP,
        dims = legacy::DIM_ROLLUP,
        n = schema::DIMENSIONS.len()
    );
    wh.select(&sql, params)
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
