//! Replay of one day: `events_raw` -> processor -> staging tables -> `REPLACE PARTITION`
//! into `events`, then the day's rollup tiers rebuilt from it (`tiers`). Readers see each
//! table's unit of swap wholly old or wholly new. Used by start-up repair of days a crash
//! left half-loaded.

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};

use super::tiers;
use super::{ops, Params, Warehouse};
use crate::event::{ch_datetime, RawEvent};
use crate::processor::session::SessionState;
use crate::processor::{process, ProcessorConfig};
use crate::schema::{self, legacy, EVENTS_TABLE, RAW_TABLE};
use crate::spec::Tenant;
use crate::{Error, Result};

/// Rows read from `events_raw` per page while replaying.
const PAGE_ROWS: usize = 20_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DayReplayed {
    pub day: NaiveDate,
    pub raw_rows: u64,
}

fn staging(table: &str) -> String {
    format!("{table}_staging")
}

fn partition(day: NaiveDate) -> String {
    day.format("%Y%m%d").to_string()
}

/// Rebuilds `events` and the rollups of one UTC day from `events_raw`.
pub async fn replay_day(wh: &dyn Warehouse, tenant: &Tenant, day: NaiveDate) -> Result<DayReplayed> {
    let mut done = replay_days(wh, tenant, &[day]).await?;
    Ok(done.remove(0))
}

/// Rebuilds `events` for each day from `events_raw`, then the days' quarter-hour tier and
/// the daily tier's months that hold them; while the hourly layout of earlier releases still
/// answers queries, its months too (they are swapped a month at a time, so run this where no
/// live insert touches them: start-up, or the single writer).
pub async fn replay_days(wh: &dyn Warehouse, tenant: &Tenant, days: &[NaiveDate]) -> Result<Vec<DayReplayed>> {
    let mut done = Vec::with_capacity(days.len());
    for day in days {
        done.push(replay_events_day(wh, tenant, *day).await?);
        tiers::rebuild_quarter_hour_day(wh, tenant, *day).await?;
    }
    tiers::refresh_daily(wh, tenant, days).await?;
    if tiers::hourly_layout_live(wh, &tenant.database()).await? {
        let mut months: Vec<(i32, u32)> = days.iter().map(|d| (d.year(), d.month())).collect();
        months.sort_unstable();
        months.dedup();
        for (year, month) in months {
            rebuild_hourly_month(wh, tenant, year, month).await?;
        }
    }
    Ok(done)
}

/// `events_raw` of one day -> processor -> staging -> `REPLACE PARTITION` into `events`.
///
/// A day is replayed on its own but for the visits open at its first midnight, which are read
/// back from the end of the day before in `events` (a visit continues across midnight under
/// the previous day's visitor id); rows are read ordered by (site, visitor, time), so each
/// visitor's sessions are rebuilt in order and state for finished visitors is dropped as we go.
async fn replay_events_day(wh: &dyn Warehouse, tenant: &Tenant, day: NaiveDate) -> Result<DayReplayed> {
    let db = tenant.database();
    let config = ProcessorConfig {
        bot_filtering: tenant.spec.bot_filtering,
    };
    let none = Params::new();
    let staged = staging(EVENTS_TABLE);
    wh.execute(
        &schema::events_table_ddl(&db, &staged, tenant.spec.retention.raw_days),
        &none,
    )
    .await?;
    wh.execute(&format!("TRUNCATE TABLE {db}.{staged}"), &none).await?;

    let start = day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    let end = start + chrono::Duration::days(1);
    // Visits open at the day's first midnight continue into it: the end of the day before,
    // as `events` holds it, seeds each visitor that carries the previous day's id.
    let mut seed = SessionState::default();
    ops::restore_sessions(wh, &db, start, &mut seed).await?;
    let mut sessions = SessionState::default();
    let mut cursor: Option<(String, u64, String, String)> = None;
    let mut raw_rows = 0u64;
    let mut current_visitor: Option<(String, u64)> = None;
    loop {
        let mut params = Params::new()
            .bind("start", ch_datetime::format(&start))
            .bind("end", ch_datetime::format(&end));
        let after = match &cursor {
            None => String::new(),
            Some((site, visitor, ts, id)) => {
                params.push("c_site", site);
                params.push("c_visitor", visitor);
                params.push("c_ts", ts);
                params.push("c_id", id);
                " AND (site_id, visitor_id, ts, event_id) > ({c_site:String}, {c_visitor:UInt64}, {c_ts:DateTime64(3, 'UTC')}, {c_id:UUID})"
                    .to_string()
            }
        };
        let sql = format!(
            "SELECT {} FROM {db}.{RAW_TABLE} WHERE ts >= {{start:DateTime64(3, 'UTC')}} AND ts < {{end:DateTime64(3, 'UTC')}}{after} \
             ORDER BY site_id, visitor_id, ts, event_id LIMIT {PAGE_ROWS}",
            schema::RAW_COLUMNS
        );
        let rows = wh.select(&sql, &params).await?;
        if rows.is_empty() {
            break;
        }
        let mut events = Vec::with_capacity(rows.len());
        for row in &rows {
            let raw: RawEvent =
                serde_json::from_value(row.clone()).map_err(|e| Error::Decode(format!("events_raw row: {e}")))?;
            let visitor = (raw.site_id.clone(), raw.visitor_id);
            if current_visitor.as_ref() != Some(&visitor) {
                // Rows come grouped by visitor: the previous visitor's sessions are complete.
                sessions = SessionState::default();
                if let Some(open) = seed
                    .get(&raw.site_id, raw.prev_day_visitor_id)
                    .filter(|_| raw.prev_day_visitor_id != 0)
                {
                    sessions.restore(&raw.site_id, raw.prev_day_visitor_id, open.clone());
                }
                current_visitor = Some(visitor);
            }
            events.push(process(&raw, config, &mut sessions));
            cursor = Some((
                raw.site_id.clone(),
                raw.visitor_id,
                ch_datetime::format(&raw.ts),
                raw.event_id.to_string(),
            ));
        }
        raw_rows += rows.len() as u64;
        ops::insert_rows(wh, &format!("{db}.{staged}"), &events).await?;
        if rows.len() < PAGE_ROWS {
            break;
        }
    }

    let staged_count = count(wh, &format!("SELECT count() AS n FROM {db}.{staged}")).await?;
    if staged_count != raw_rows {
        return Err(Error::Query {
            sql: "replay count check".into(),
            message: format!(
                "day {day}: staged {staged_count} events for {raw_rows} raw rows; live tables left unchanged"
            ),
        });
    }
    ops::swap_partition(wh, &db, EVENTS_TABLE, &staged, &partition(day)).await?;
    wh.execute(&format!("DROP TABLE IF EXISTS {db}.{staged}"), &none)
        .await?;
    tracing::info!(tenant = %tenant.name, %day, raw_rows, "day of events replayed");
    Ok(DayReplayed { day, raw_rows })
}

/// Both hourly rollups of one month (the layout of earlier releases), rebuilt from `events`
/// with their views' own SQL and swapped in.
async fn rebuild_hourly_month(wh: &dyn Warehouse, tenant: &Tenant, year: i32, month: u32) -> Result<()> {
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
        let staged = staging(table);
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

async fn count(wh: &dyn Warehouse, sql: &str) -> Result<u64> {
    let rows = wh.select(sql, &Params::new()).await?;
    rows.first()
        .and_then(|r| r["n"].as_u64())
        .ok_or_else(|| Error::Decode(format!("no count from {sql}")))
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
    let mut repaired = Vec::new();
    for day in inconsistent_days(wh, tenant, from, to).await? {
        tracing::warn!(tenant = %tenant.name, %day, "day is inconsistent after a crash; replaying it");
        repaired.push(day);
    }
    replay_days(wh, tenant, &repaired).await
}
