//! Replay of one day: `events_raw` -> processor -> staging tables -> `REPLACE PARTITION`
//! into `events` and each rollup. Readers see each table's day wholly old or wholly new.
//! Used by reprocessing and by start-up repair of days a crash left half-loaded.

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};

use super::{ops, Params, Warehouse};
use crate::event::{ch_datetime, RawEvent};
use crate::processor::session::SessionState;
use crate::processor::{process, ProcessorConfig};
use crate::schema::{self, DIM_ROLLUP, EVENTS_TABLE, RAW_TABLE, SITE_ROLLUP};
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

/// Rebuilds `events` for each day from `events_raw`, then each touched month of the rollups
/// from `events`. `events` is partitioned by day and swapped a day at a time; the rollups
/// are partitioned by month (so a year of hourly rollups is 12 parts to read, not 365) and
/// swapped a month at a time, once for all the days of that month.
///
/// Each swap is one `REPLACE PARTITION`: readers see a day of events, or a month of
/// rollups, wholly old or wholly new. Run it where no live insert touches the same month
/// (start-up, the single writer, or a paused loader): a live insert between the rebuild and
/// the swap of a month would reach `events` but not the swapped rollups.
pub async fn replay_days(wh: &dyn Warehouse, tenant: &Tenant, days: &[NaiveDate]) -> Result<Vec<DayReplayed>> {
    let mut done = Vec::with_capacity(days.len());
    for day in days {
        done.push(replay_events_day(wh, tenant, *day).await?);
    }
    let mut months: Vec<(i32, u32)> = days.iter().map(|d| (d.year(), d.month())).collect();
    months.sort_unstable();
    months.dedup();
    for (year, month) in months {
        rebuild_rollup_month(wh, tenant, year, month).await?;
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
    wh.execute(
        &format!(
            "ALTER TABLE {db}.{EVENTS_TABLE} REPLACE PARTITION {} FROM {db}.{staged}",
            partition(day)
        ),
        &none,
    )
    .await?;
    wh.execute(&format!("DROP TABLE IF EXISTS {db}.{staged}"), &none)
        .await?;
    tracing::info!(tenant = %tenant.name, %day, raw_rows, "day of events replayed");
    Ok(DayReplayed { day, raw_rows })
}

/// Both rollups of one month, rebuilt from `events` with the views' own SQL and swapped in.
async fn rebuild_rollup_month(wh: &dyn Warehouse, tenant: &Tenant, year: i32, month: u32) -> Result<()> {
    let db = tenant.database();
    let none = Params::new();
    let days = tenant.spec.retention.rollup_days;
    let partition = format!("{year:04}{month:02}");
    let source = format!("(SELECT * FROM {db}.{EVENTS_TABLE} WHERE toYYYYMM(ts) = {partition})");
    for (table, ddl, select) in [
        (
            SITE_ROLLUP,
            schema::site_rollup_ddl(&db, &staging(SITE_ROLLUP), days),
            schema::site_rollup_select_from(&source),
        ),
        (
            DIM_ROLLUP,
            schema::dims_rollup_ddl(&db, &staging(DIM_ROLLUP), days),
            schema::dims_rollup_select_from(&source),
        ),
    ] {
        let staged = staging(table);
        wh.execute(&ddl, &none).await?;
        wh.execute(&format!("TRUNCATE TABLE {db}.{staged}"), &none).await?;
        wh.execute(&format!("INSERT INTO {db}.{staged} {select}"), &none)
            .await?;
        wh.execute(
            &format!("ALTER TABLE {db}.{table} REPLACE PARTITION {partition} FROM {db}.{staged}"),
            &none,
        )
        .await?;
        wh.execute(&format!("DROP TABLE IF EXISTS {db}.{staged}"), &none)
            .await?;
    }
    tracing::info!(tenant = %tenant.name, %partition, "month of rollups rebuilt");
    Ok(())
}

async fn count(wh: &dyn Warehouse, sql: &str) -> Result<u64> {
    let rows = wh.select(sql, &Params::new()).await?;
    rows.first()
        .and_then(|r| r["n"].as_u64())
        .ok_or_else(|| Error::Decode(format!("no count from {sql}")))
}

/// Per day in `[from, to]`: raw rows, processed rows, non-bot processed rows, and the event
/// totals of both rollups. A consistent day has raw == events and non-bot == each rollup.
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
        "SELECT toString(day) AS day, sum(raw) AS raw, sum(ev) AS ev, sum(counted) AS counted, sum(site) AS site, sum(dims) AS dims FROM ( \
           SELECT toDate(ts) AS day, count() AS raw, 0 AS ev, 0 AS counted, 0 AS site, 0 AS dims FROM {db}.{RAW_TABLE} \
             WHERE toDate(ts) BETWEEN {{from:Date}} AND {{to:Date}} GROUP BY day \
           UNION ALL SELECT toDate(ts), 0, count(), countIf(is_bot = 0), 0, 0 FROM {db}.{EVENTS_TABLE} \
             WHERE toDate(ts) BETWEEN {{from:Date}} AND {{to:Date}} GROUP BY toDate(ts) \
           UNION ALL SELECT toDate(hour), 0, 0, 0, sum(events), 0 FROM {db}.{SITE_ROLLUP} \
             WHERE toDate(hour) BETWEEN {{from:Date}} AND {{to:Date}} GROUP BY toDate(hour) \
           UNION ALL SELECT toDate(hour), 0, 0, 0, 0, intDiv(sum(events), {}) FROM {db}.{DIM_ROLLUP} \
             WHERE toDate(hour) BETWEEN {{from:Date}} AND {{to:Date}} GROUP BY toDate(hour) \
         ) GROUP BY day HAVING raw != ev OR counted != site OR counted != dims ORDER BY day",
        schema::DIMENSIONS.len()
    );
    let rows = wh.select(&sql, &params).await?;
    rows.iter()
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
