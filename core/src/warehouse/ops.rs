//! What Sightline does with a warehouse, written once over the `Warehouse` primitives:
//! apply a tenant's schema, store a batch, find already-stored ids, restore sessions.

use std::collections::HashSet;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::rowbinary::{self, RowBinary};
use super::{ttl, InsertFormat, Params, Warehouse};
use crate::ddl::Form;
use crate::event::{ch_datetime, Event, RawEvent};
use crate::processor::session::{Session, SessionEntry, SessionState};
use crate::schema;
use crate::spec::Tenant;
use crate::{Error, Result};

/// Schema versions before and after an apply, and what the spec's retention changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaApplied {
    pub from: u32,
    pub to: u32,
    /// Tables whose TTL was set to the spec's retention (`ttl::apply_spec_ttls`); empty when
    /// every table had it already.
    pub ttl_changed: Vec<String>,
}

/// Creates or migrates one tenant's database to the latest version. Safe to run at every
/// start and concurrently with readers: every statement is idempotent and recorded only
/// after it succeeded. Statements take the tenant's form (`ddl::Form::for_backend`): on a
/// ClickHouse cluster (`spec.clickhouse.cluster`, HTTP backend) their cluster form.
pub async fn apply_schema(wh: &dyn Warehouse, tenant: &Tenant) -> Result<SchemaApplied> {
    apply_schema_to(wh, tenant, u32::MAX).await
}

/// Like `apply_schema`, but stops at version `target` (a staged upgrade, or a test that
/// needs an old schema).
pub async fn apply_schema_to(wh: &dyn Warehouse, tenant: &Tenant, target: u32) -> Result<SchemaApplied> {
    let db = tenant.database();
    let form = Form::for_backend(tenant, wh.backend())?;
    for statement in schema::bootstrap_statements(tenant) {
        execute_schema_statement(wh, &form, &statement).await?;
    }
    let rows = wh
        .select(
            &format!("SELECT max(version) AS v FROM {db}.{}", schema::MIGRATIONS_TABLE),
            &Params::new(),
        )
        .await?;
    let from = rows.first().and_then(|r| r["v"].as_u64()).unwrap_or(0) as u32;
    let mut to = from;
    for migration in schema::migrations(tenant)
        .into_iter()
        .filter(|m| m.version > from && m.version <= target)
    {
        for statement in &migration.statements {
            execute_schema_statement(wh, &form, statement).await?;
        }
        wh.execute(
            &format!(
                "INSERT INTO {db}.{} (version, description) VALUES ({{v:UInt32}}, {{d:String}})",
                schema::MIGRATIONS_TABLE
            ),
            &Params::new()
                .bind("v", migration.version)
                .bind("d", migration.description),
        )
        .await?;
        tracing::info!(tenant = %tenant.name, version = migration.version, "schema migration applied");
        to = migration.version;
    }
    let ttl_changed = ttl::apply_spec_ttls(wh, &form, &db, &schema::spec_statements(tenant, to)).await?;
    Ok(SchemaApplied { from, to, ttl_changed })
}

/// Runs one statement of the schema (single-node text, as `schema` writes it) in `form`.
pub async fn execute_schema_statement(wh: &dyn Warehouse, form: &Form, sql: &str) -> Result<()> {
    for statement in form.statements(sql)? {
        wh.execute(&statement, &Params::new()).await?;
    }
    Ok(())
}

/// Puts partition `partition` of `staged` (a staging copy of `table`, both in `db`) in the
/// place of `table`'s, atomically for readers: `REPLACE PARTITION`, or, when the staging
/// table has no rows for it (every event of the day was a bot, a month without visits),
/// `DROP PARTITION`, which the engine asks for instead of a replace from nothing.
pub async fn swap_partition(wh: &dyn Warehouse, db: &str, table: &str, staged: &str, partition: &str) -> Result<()> {
    let rows = wh
        .select(
            "SELECT count() AS n FROM system.parts WHERE database = {db:String} AND table = {t:String} \
             AND partition_id = {p:String} AND active AND rows > 0",
            &Params::new().bind("db", db).bind("t", staged).bind("p", partition),
        )
        .await?;
    let staged_parts = rows.first().and_then(|r| r["n"].as_u64()).unwrap_or(0);
    let sql = if staged_parts > 0 {
        format!("ALTER TABLE {db}.{table} REPLACE PARTITION {partition} FROM {db}.{staged}")
    } else {
        format!("ALTER TABLE {db}.{table} DROP PARTITION {partition}")
    };
    wh.execute(&sql, &Params::new()).await
}

/// Encodes rows as JSONEachRow.
pub fn json_each_row<T: Serialize>(rows: &[T]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(rows.len() * 512);
    for row in rows {
        serde_json::to_writer(&mut out, row).map_err(|e| Error::Decode(e.to_string()))?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Stores a batch: `events_raw` first (the truth), then `events` (which feeds the rollups
/// through the views). A crash between the two leaves a day whose `events` lag `events_raw`;
/// standalone's `replay::repair_recent_days` rebuilds such days at start-up, the loader
/// inserts the missing `events` rows when the log redelivers them. Either side may be
/// empty (the loader completing a half-stored batch has only `events` rows). Raw rows may
/// be owned or borrowed.
pub async fn insert_raw_and_events<R>(wh: &dyn Warehouse, db: &str, raw: &[R], events: &[Event]) -> Result<()>
where
    R: RowBinary + std::borrow::Borrow<RawEvent> + Sync,
{
    insert_rows(wh, &format!("{db}.{}", schema::RAW_TABLE), raw).await?;
    insert_events(wh, &format!("{db}.{}", schema::EVENTS_TABLE), events).await
}

/// Inserts processed rows into `table` (`db.events` or a staging copy) as one Native block;
/// nothing when empty. Native, not RowBinary: the engine takes each column whole instead of
/// parsing every field of every row (`native`; the 41 columns of `events` made its
/// RowBinary insert cost 1.6 times the raw row's, BENCHMARKS.md "Ingest against the
/// engine's own limits").
pub async fn insert_events(wh: &dyn Warehouse, table: &str, events: &[Event]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    wh.insert(
        table,
        schema::EVENT_COLUMNS,
        InsertFormat::Native,
        super::native::encode_events(events),
    )
    .await
}

/// Inserts `rows` into `table` (`db.name`) as one RowBinary insert; nothing when empty.
pub async fn insert_rows<T: RowBinary + Sync>(wh: &dyn Warehouse, table: &str, rows: &[T]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    wh.insert(table, T::COLUMNS, InsertFormat::RowBinary, rowbinary::encode(rows))
        .await
}

/// Which of `keys` (site, event id) are already in `table` (`events_raw` or `events`),
/// looking only at the given days' partitions (and the bloom-filter index on event_id). Used
/// to make client retries and redelivered log messages idempotent. Ids are the client's
/// choice, so they are unique only within a site: two sites of a tenant may send one id.
pub async fn existing_event_ids(
    wh: &dyn Warehouse,
    db: &str,
    table: &str,
    keys: &[(&str, Uuid)],
    days: &[NaiveDate],
) -> Result<HashSet<(String, Uuid)>> {
    let day_numbers: Vec<String> = days.iter().map(|d| d.format("%Y%m%d").to_string()).collect();
    let days = format!("[{}]", day_numbers.join(","));
    let sql = format!(
        "SELECT DISTINCT site_id, toString(event_id) AS id FROM {db}.{table} \
         WHERE toYYYYMMDD(ts) IN {{days:Array(UInt32)}} AND site_id IN {{sites:Array(String)}} \
           AND event_id IN {{ids:Array(UUID)}}"
    );
    let wanted: HashSet<(&str, Uuid)> = keys.iter().copied().collect();
    let mut found = HashSet::new();
    // Bounded parameter size: a server caps each HTTP form field (1 MiB by default).
    for chunk in keys.chunks(ID_LOOKUP_CHUNK) {
        let mut sites: Vec<&str> = chunk.iter().map(|(site, _)| *site).collect();
        sites.sort_unstable();
        sites.dedup();
        let params = Params::new()
            .bind("days", days.clone())
            .bind("sites", Params::array_of_strings(sites))
            .bind(
                "ids",
                Params::array_of_strings(chunk.iter().map(|(_, id)| id.to_string())),
            );
        for r in wh.select(&sql, &params).await? {
            let id = r["id"]
                .as_str()
                .and_then(|s| Uuid::parse_str(s).ok())
                .ok_or_else(|| Error::Decode(format!("event id in {r}")))?;
            let site = r["site_id"]
                .as_str()
                .ok_or_else(|| Error::Decode(format!("site_id in {r}")))?;
            // Another site's event with one of these ids is not this event.
            if wanted.contains(&(site, id)) {
                found.insert((site.to_string(), id));
            }
        }
    }
    Ok(found)
}

/// Ids per lookup query: 5,000 quoted UUIDs are ~200 KB of parameter.
pub(crate) const ID_LOOKUP_CHUNK: usize = 5_000;

/// An `Array(UInt64)` parameter value.
pub(crate) fn u64_array(values: &[u64]) -> String {
    let items: Vec<String> = values.iter().map(u64::to_string).collect();
    format!("[{}]", items.join(","))
}

/// Rebuilds the sessions that are open at `until` (an event in the 30 minutes before it)
/// from `events`, so that sessions continue across a restart exactly as a replay would see
/// them. Live roles pass now; a replay of a UTC day passes its midnight (visits that cross
/// it continue). Rows a correction cancelled (`sign`) are left out first, so a visit that
/// was merged away is not restored. Returns how many sessions were restored.
pub async fn restore_sessions(
    wh: &dyn Warehouse,
    db: &str,
    until: DateTime<Utc>,
    state: &mut SessionState,
) -> Result<usize> {
    restore(wh, db, schema::EVENTS_TABLE, until, None, state).await
}

/// `restore_sessions` from `table` of `db` (a table shaped like `events`: a replay's
/// staging copy of the day before, so that a run's days follow each other's new rows).
pub async fn restore_sessions_from(
    wh: &dyn Warehouse,
    db: &str,
    table: &str,
    until: DateTime<Utc>,
    state: &mut SessionState,
) -> Result<usize> {
    restore(wh, db, table, until, None, state).await
}

/// `restore_sessions` for some visitors of one site only (their session keys: a visitor id
/// as `events` counts it).
pub async fn restore_visitor_sessions(
    wh: &dyn Warehouse,
    db: &str,
    until: DateTime<Utc>,
    site: &str,
    visitors: &[u64],
    state: &mut SessionState,
) -> Result<usize> {
    let mut restored = 0;
    for chunk in visitors.chunks(ID_LOOKUP_CHUNK) {
        restored += restore(wh, db, schema::EVENTS_TABLE, until, Some((site, chunk)), state).await?;
    }
    Ok(restored)
}

async fn restore(
    wh: &dyn Warehouse,
    db: &str,
    events: &str,
    until: DateTime<Utc>,
    visitors: Option<(&str, &[u64])>,
    state: &mut SessionState,
) -> Result<usize> {
    let since = until - crate::processor::session::SESSION_TIMEOUT - Duration::minutes(1);
    let mut params = Params::new()
        .bind("since", ch_datetime::format(&since))
        .bind("until", ch_datetime::format(&until));
    let only = match visitors {
        None => "",
        Some((site, ids)) => {
            params.push("site", site);
            params.push("visitors", u64_array(ids));
            "site_id = {site:String} AND visitor_id IN {visitors:Array(UInt64)} AND "
        }
    };
    let sql = format!(
        "SELECT site_id, visitor_id, session_id, \
                toString(min(session_start)) AS opened, \
                toString(if(countIf(interactive = 1) > 0, minIf(ts, interactive = 1), min(session_start))) AS first, \
                toString(if(countIf(interactive = 1) > 0, maxIf(ts, interactive = 1), min(session_start))) AS last, \
                countIf(interactive = 1) AS interactions, \
                argMin(entry_page, ts) AS entry_page, argMin(session_source, ts) AS source, argMin(session_medium, ts) AS channel, \
                argMin(session_utm_source, ts) AS utm_source, argMin(session_utm_medium, ts) AS utm_medium, \
                argMin(session_utm_campaign, ts) AS utm_campaign \
         FROM ( \
           SELECT site_id, visitor_id, session_id, event_id, ts, interactive, session_start, entry_page, \
                  session_source, session_medium, session_utm_source, session_utm_medium, session_utm_campaign \
           FROM {db}.{events} WHERE {only}session_id IN (SELECT session_id FROM {db}.{events} \
                  WHERE {only}ts >= {{since:DateTime64(3, 'UTC')}} AND ts < {{until:DateTime64(3, 'UTC')}}) \
             AND ts >= {{since:DateTime64(3, 'UTC')}} - INTERVAL 1 DAY AND ts < {{until:DateTime64(3, 'UTC')}} \
           GROUP BY site_id, visitor_id, session_id, event_id, ts, interactive, session_start, entry_page, \
                    session_source, session_medium, session_utm_source, session_utm_medium, session_utm_campaign \
           HAVING sum(sign) > 0) \
         GROUP BY site_id, visitor_id, session_id"
    );
    let rows = wh.select(&sql, &params).await?;
    let text = |r: &serde_json::Value, k: &str| r[k].as_str().unwrap_or_default().to_string();
    let time = |r: &serde_json::Value, k: &str| -> Result<DateTime<Utc>> {
        ch_datetime::parse(r[k].as_str().unwrap_or_default()).map_err(|e| Error::Decode(format!("{k}: {e}")))
    };
    for r in &rows {
        let session = Session {
            id: r["session_id"]
                .as_u64()
                .ok_or_else(|| Error::Decode("session_id".into()))?,
            opened: time(r, "opened")?,
            first: time(r, "first")?,
            last: time(r, "last")?,
            interactions: r["interactions"].as_u64().unwrap_or(0) as u32,
            entry: SessionEntry {
                page: text(r, "entry_page"),
                source: text(r, "source"),
                channel: text(r, "channel"),
                utm_source: text(r, "utm_source"),
                utm_medium: text(r, "utm_medium"),
                utm_campaign: text(r, "utm_campaign"),
            },
        };
        let visitor = r["visitor_id"]
            .as_u64()
            .ok_or_else(|| Error::Decode("visitor_id".into()))?;
        state.restore(&text(r, "site_id"), visitor, session);
    }
    Ok(rows.len())
}

/// Per site, the newest event time and the number of rows of `events` since `since`: what a
/// query process that does not write polls to see others' commits, and (since the epoch)
/// what seeds watermarks at start-up. Rows, not events: a correction (a cancelled row and
/// its replacement) changes no event count but must still be seen as a commit.
pub async fn recent_activity(
    wh: &dyn Warehouse,
    db: &str,
    since: DateTime<Utc>,
) -> Result<Vec<(String, DateTime<Utc>, u64)>> {
    let rows = wh
        .select(
            &format!(
                "SELECT site_id, toString(max(ts)) AS newest, count() AS n FROM {db}.{} \
                 WHERE ts >= {{since:DateTime64(3, 'UTC')}} GROUP BY site_id",
                schema::EVENTS_TABLE
            ),
            &Params::new().bind("since", ch_datetime::format(&since)),
        )
        .await?;
    rows.iter()
        .map(|r| {
            let site = r["site_id"].as_str().unwrap_or_default().to_string();
            let newest = ch_datetime::parse(r["newest"].as_str().unwrap_or_default())
                .map_err(|e| Error::Decode(format!("newest: {e}")))?;
            Ok((site, newest, r["n"].as_u64().unwrap_or(0)))
        })
        .collect()
}

/// Records, before a batch is stored, the last offset of each log partition it holds: after
/// a crash, messages up to these offsets may be stored already, messages beyond cannot be.
pub async fn record_intents(wh: &dyn Warehouse, db: &str, topic: &str, last_offsets: &[(i32, i64)]) -> Result<()> {
    if last_offsets.is_empty() {
        return Ok(());
    }
    let rows: Vec<serde_json::Value> = last_offsets
        .iter()
        .map(|(partition, offset)| serde_json::json!({"topic": topic, "partition": partition, "last_offset": offset}))
        .collect();
    wh.insert(
        &format!("{db}.{}", schema::INTENTS_TABLE),
        "topic, partition, last_offset",
        InsertFormat::JsonEachRow,
        json_each_row(&rows)?,
    )
    .await
}

/// Per partition of `topic`, the highest offset any loader recorded an intent for.
pub async fn intents(wh: &dyn Warehouse, db: &str, topic: &str) -> Result<std::collections::BTreeMap<i32, i64>> {
    let rows = wh
        .select(
            &format!(
                "SELECT partition, max(last_offset) AS last FROM {db}.{} WHERE topic = {{topic:String}} GROUP BY partition",
                schema::INTENTS_TABLE
            ),
            &Params::new().bind("topic", topic),
        )
        .await?;
    rows.iter()
        .map(|r| {
            let partition = r["partition"]
                .as_i64()
                .ok_or_else(|| Error::Decode(format!("partition in {r}")))?;
            let last = r["last"]
                .as_i64()
                .ok_or_else(|| Error::Decode(format!("last in {r}")))?;
            Ok((partition as i32, last))
        })
        .collect()
}
