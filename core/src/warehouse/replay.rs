//! Replay of one day: `events_raw` -> processor -> staging tables -> `REPLACE PARTITION`
//! into `events` and each rollup. Readers see each table's day wholly old or wholly new.
//! Used by reprocessing and by start-up repair of days a crash left half-loaded.

use chrono::{DateTime, Days, NaiveDate, Utc};

use super::ops::json_each_row;
use super::{Params, Warehouse};
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
    pub event_rows: u64,
}

fn staging(table: &str) -> String {
    format!("{table}_staging")
}

fn partition(day: NaiveDate) -> String {
    day.format("%Y%m%d").to_string()
}

/// Rebuilds `events` and the rollups of one UTC day from `events_raw`.
///
/// Sessions never cross a UTC midnight (the visitor id changes with the day), so a day can
/// be replayed on its own; rows are read ordered by (site, visitor, time), so each visitor's
/// sessions are rebuilt in order and state for finished visitors is dropped as we go.
pub async fn replay_day(wh: &dyn Warehouse, tenant: &Tenant, day: NaiveDate) -> Result<DayReplayed> {
    let db = tenant.database();
    let config = ProcessorConfig {
        bot_filtering: tenant.spec.bot_filtering,
    };
    let r = &tenant.spec.retention;
    let none = Params::new();
    let staged = [
        (
            EVENTS_TABLE,
            schema::events_table_ddl(&db, &staging(EVENTS_TABLE), r.raw_days),
        ),
        (
            SITE_ROLLUP,
            schema::site_rollup_ddl(&db, &staging(SITE_ROLLUP), r.rollup_days),
        ),
        (
            DIM_ROLLUP,
            schema::dims_rollup_ddl(&db, &staging(DIM_ROLLUP), r.rollup_days),
        ),
    ];
    for (table, ddl) in &staged {
        wh.execute(ddl, &none).await?;
        wh.execute(&format!("TRUNCATE TABLE {db}.{}", staging(table)), &none)
            .await?;
    }

    let start = day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    let end = start + chrono::Duration::days(1);
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
        wh.insert(
            &format!("{db}.{}", staging(EVENTS_TABLE)),
            schema::EVENT_COLUMNS,
            json_each_row(&events)?,
        )
        .await?;
        if rows.len() < PAGE_ROWS {
            break;
        }
    }

    wh.execute(
        &format!(
            "INSERT INTO {db}.{} {}",
            staging(SITE_ROLLUP),
            schema::site_rollup_select(&db, &staging(EVENTS_TABLE))
        ),
        &none,
    )
    .await?;
    wh.execute(
        &format!(
            "INSERT INTO {db}.{} {}",
            staging(DIM_ROLLUP),
            schema::dims_rollup_select(&db, &staging(EVENTS_TABLE))
        ),
        &none,
    )
    .await?;

    let staged_count = count(wh, &format!("SELECT count() AS n FROM {db}.{}", staging(EVENTS_TABLE))).await?;
    if staged_count != raw_rows {
        return Err(Error::Query {
            sql: "replay count check".into(),
            message: format!(
                "day {day}: staged {staged_count} events for {raw_rows} raw rows; live tables left unchanged"
            ),
        });
    }
    for (table, _) in &staged {
        wh.execute(
            &format!(
                "ALTER TABLE {db}.{table} REPLACE PARTITION {} FROM {db}.{}",
                partition(day),
                staging(table)
            ),
            &none,
        )
        .await?;
    }
    for (table, _) in &staged {
        wh.execute(&format!("DROP TABLE IF EXISTS {db}.{}", staging(table)), &none)
            .await?;
    }
    tracing::info!(tenant = %tenant.name, %day, raw_rows, "day replayed");
    Ok(DayReplayed {
        day,
        raw_rows,
        event_rows: staged_count,
    })
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
        repaired.push(replay_day(wh, tenant, day).await?);
    }
    Ok(repaired)
}
