//! `Schema`: the DDL of one tenant, generated from its spec. Both warehouse backends run
//! exactly this text. Migrations are numbered; `schema_migrations` records which ran, so a
//! restart re-runs nothing and an upgrade runs only what is new.

use crate::spec::Tenant;

/// The rollup dimensions: name, the `events` column that feeds it, and whether it is a
/// session attribute (visits, bounces and durations make sense for it) or an event one.
pub const DIMENSIONS: &[(&str, &str, bool)] = &[
    ("page", "pathname", false),
    ("event_name", "name", false),
    ("entry_page", "entry_page", true),
    ("source", "session_source", true),
    ("channel", "session_medium", true),
    ("utm_source", "session_utm_source", true),
    ("utm_medium", "session_utm_medium", true),
    ("utm_campaign", "session_utm_campaign", true),
    ("country", "country", true),
    ("browser", "browser", true),
    ("os", "os", true),
    ("device", "device", true),
];

pub fn dimension(name: &str) -> Option<(&'static str, &'static str, bool)> {
    DIMENSIONS.iter().copied().find(|(n, _, _)| *n == name)
}

pub const RAW_TABLE: &str = "events_raw";
pub const EVENTS_TABLE: &str = "events";
pub const SITE_ROLLUP: &str = "rollup_site_hourly";
pub const DIM_ROLLUP: &str = "rollup_dims_hourly";
pub const MIGRATIONS_TABLE: &str = "schema_migrations";
/// The loaders' write-ahead intents (see `ingest::loader::store`).
pub const INTENTS_TABLE: &str = "loader_intents";

/// Rows per granule of the rollups. Each row holds a `uniq` state of up to kilobytes, and a
/// read decodes whole granules: the default 8192 made a 720-row read decode megabytes.
pub const ROLLUP_GRANULARITY: u32 = 512;

/// One numbered step. Every statement is idempotent on its own, so a step interrupted
/// half-way is simply run again.
pub struct Migration {
    pub version: u32,
    pub description: &'static str,
    pub statements: Vec<String>,
}

/// Columns of `events_raw` in insert order (the `RawEvent` fields).
pub const RAW_COLUMNS: &str = "event_id, site_id, received_at, ts, name, url, referrer, user_agent, props, revenue_amount, revenue_currency, visitor_id, country, ingest_source, prev_day_visitor_id, interactive";

/// Columns of `events` in insert order (the `Event` fields).
pub const EVENT_COLUMNS: &str = "event_id, site_id, ts, name, is_pageview, hostname, pathname, referrer_host, referrer_source, referrer_medium, \
utm_source, utm_medium, utm_campaign, utm_content, utm_term, browser, browser_version, os, os_version, device, country, is_bot, \
visitor_id, session_id, session_start, visit_delta, bounce_delta, duration_delta, entry_page, session_source, session_medium, \
session_utm_source, session_utm_medium, session_utm_campaign, props, revenue_amount, revenue_currency, pipeline_version, interactive";

fn events_columns_ddl() -> &'static str {
    "event_id UUID,
    site_id LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    name LowCardinality(String),
    is_pageview UInt8,
    hostname String,
    pathname String,
    referrer_host String,
    referrer_source LowCardinality(String),
    referrer_medium LowCardinality(String),
    utm_source String,
    utm_medium String,
    utm_campaign String,
    utm_content String,
    utm_term String,
    browser LowCardinality(String),
    browser_version String,
    os LowCardinality(String),
    os_version String,
    device LowCardinality(String),
    country LowCardinality(String),
    is_bot UInt8,
    visitor_id UInt64,
    session_id UInt64,
    session_start DateTime64(3, 'UTC'),
    visit_delta Int8,
    bounce_delta Int8,
    duration_delta Int64,
    entry_page String,
    session_source LowCardinality(String),
    session_medium LowCardinality(String),
    session_utm_source String,
    session_utm_medium String,
    session_utm_campaign String,
    props Map(String, String),
    revenue_amount String,
    revenue_currency LowCardinality(String),
    pipeline_version UInt32,
    interactive UInt8 DEFAULT 1"
}

fn rollup_columns_ddl() -> &'static str {
    "visitors AggregateFunction(uniq, UInt64),
    visits SimpleAggregateFunction(sum, Int64),
    pageviews SimpleAggregateFunction(sum, UInt64),
    events SimpleAggregateFunction(sum, UInt64),
    bounces SimpleAggregateFunction(sum, Int64),
    duration SimpleAggregateFunction(sum, Int64)"
}

/// The rollup aggregates over `events`; shared by the views and by replay's staging build,
/// so both compute the same thing.
pub const ROLLUP_AGGREGATES: &str = "uniqState(visitor_id) AS visitors, \
toInt64(sum(visit_delta)) AS visits, \
toUInt64(sum(is_pageview)) AS pageviews, \
toUInt64(count()) AS events, \
toInt64(sum(bounce_delta)) AS bounces, \
toInt64(sum(duration_delta)) AS duration";

/// SELECT that builds `rollup_site_hourly` rows from an events table.
pub fn site_rollup_select(db: &str, events_table: &str) -> String {
    site_rollup_select_from(&format!("{db}.{events_table}"))
}

/// The same, from any source of `events` rows (a table or a subquery).
pub fn site_rollup_select_from(source: &str) -> String {
    format!("SELECT site_id, toStartOfHour(ts) AS hour, {ROLLUP_AGGREGATES} FROM {source} WHERE is_bot = 0 GROUP BY site_id, hour")
}

/// SELECT that builds `rollup_dims_hourly` rows: each event counts once per dimension.
pub fn dims_rollup_select(db: &str, events_table: &str) -> String {
    dims_rollup_select_from(&format!("{db}.{events_table}"))
}

/// The same, from any source of `events` rows (a table or a subquery).
pub fn dims_rollup_select_from(source: &str) -> String {
    let pairs: Vec<String> = DIMENSIONS
        .iter()
        .map(|(name, column, _)| format!("('{name}', toString({column}))"))
        .collect();
    format!(
        "SELECT site_id, toStartOfHour(ts) AS hour, dim.1 AS dimension, dim.2 AS value, {ROLLUP_AGGREGATES} \
         FROM {source} ARRAY JOIN [{}] AS dim WHERE is_bot = 0 GROUP BY site_id, hour, dimension, value",
        pairs.join(", ")
    )
}

pub fn events_table_ddl(db: &str, table: &str, raw_days: u32) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{table} (
    {}
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (site_id, toStartOfHour(ts), visitor_id, ts)
TTL toDateTime(ts) + INTERVAL {raw_days} DAY",
        events_columns_ddl()
    )
}

pub fn site_rollup_ddl(db: &str, table: &str, rollup_days: u32) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{table} (
    site_id LowCardinality(String),
    hour DateTime('UTC'),
    {}
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (site_id, hour)
TTL hour + INTERVAL {rollup_days} DAY
SETTINGS index_granularity = {ROLLUP_GRANULARITY}",
        rollup_columns_ddl()
    )
}

pub fn dims_rollup_ddl(db: &str, table: &str, rollup_days: u32) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{table} (
    site_id LowCardinality(String),
    hour DateTime('UTC'),
    dimension LowCardinality(String),
    value String,
    {}
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (site_id, dimension, hour, value)
TTL hour + INTERVAL {rollup_days} DAY
SETTINGS index_granularity = {ROLLUP_GRANULARITY}",
        rollup_columns_ddl()
    )
}

/// All migrations of a tenant, oldest first.
pub fn migrations(tenant: &Tenant) -> Vec<Migration> {
    let db = tenant.database();
    let r = &tenant.spec.retention;
    vec![
        Migration {
        version: 1,
        description: "events_raw, events, hourly rollups and their views",
        statements: vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {db}.{RAW_TABLE} (
    event_id UUID,
    site_id LowCardinality(String),
    received_at DateTime64(3, 'UTC'),
    ts DateTime64(3, 'UTC'),
    name LowCardinality(String),
    url String,
    referrer String,
    user_agent String,
    props Map(String, String),
    revenue_amount String,
    revenue_currency LowCardinality(String),
    visitor_id UInt64,
    country LowCardinality(String),
    INDEX event_id_idx event_id TYPE bloom_filter GRANULARITY 4
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (site_id, visitor_id, ts)
TTL toDateTime(ts) + INTERVAL {} DAY",
                r.raw_days
            ),
            events_table_ddl(&db, EVENTS_TABLE, r.raw_days),
            site_rollup_ddl(&db, SITE_ROLLUP, r.rollup_days),
            dims_rollup_ddl(&db, DIM_ROLLUP, r.rollup_days),
            format!("CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{SITE_ROLLUP}_mv TO {db}.{SITE_ROLLUP} AS {}", site_rollup_select(&db, EVENTS_TABLE)),
            format!("CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{DIM_ROLLUP}_mv TO {db}.{DIM_ROLLUP} AS {}", dims_rollup_select(&db, EVENTS_TABLE)),
        ],
    },
        Migration {
            version: 2,
            description: "events_raw.ingest_source: which door an event came in by (web, ga4_mp)",
            statements: vec![format!(
                "ALTER TABLE {db}.{RAW_TABLE} ADD COLUMN IF NOT EXISTS ingest_source LowCardinality(String) DEFAULT 'web'"
            )],
        },
        Migration {
            version: 3,
            description: "loader_intents: per log partition, the last offset a loader is about to store",
            statements: vec![format!(
                "CREATE TABLE IF NOT EXISTS {db}.{INTENTS_TABLE} (
    topic LowCardinality(String),
    partition Int32,
    last_offset Int64
) ENGINE = ReplacingMergeTree(last_offset)
ORDER BY (topic, partition)"
            )],
        },
        Migration {
            version: 4,
            description: "events_raw.prev_day_visitor_id and interactive: visits across UTC midnight, non-interactive events",
            statements: vec![format!(
                "ALTER TABLE {db}.{RAW_TABLE} ADD COLUMN IF NOT EXISTS prev_day_visitor_id UInt64 DEFAULT 0, \
                 ADD COLUMN IF NOT EXISTS interactive UInt8 DEFAULT 1"
            )],
        },
        Migration {
            version: 5,
            description: "events.interactive: whether an event may end a bounce or extend a visit",
            statements: vec![format!(
                "ALTER TABLE {db}.{EVENTS_TABLE} ADD COLUMN IF NOT EXISTS interactive UInt8 DEFAULT 1"
            )],
        },
    ]
}

/// Statements run on every apply after the migrations: settings that follow the spec
/// (retention) rather than the code version. Idempotent.
pub fn spec_statements(tenant: &Tenant) -> Vec<String> {
    let db = tenant.database();
    let r = &tenant.spec.retention;
    vec![
        format!(
            "ALTER TABLE {db}.{RAW_TABLE} MODIFY TTL toDateTime(ts) + INTERVAL {} DAY",
            r.raw_days
        ),
        format!(
            "ALTER TABLE {db}.{EVENTS_TABLE} MODIFY TTL toDateTime(ts) + INTERVAL {} DAY",
            r.raw_days
        ),
        format!(
            "ALTER TABLE {db}.{SITE_ROLLUP} MODIFY TTL hour + INTERVAL {} DAY",
            r.rollup_days
        ),
        format!(
            "ALTER TABLE {db}.{DIM_ROLLUP} MODIFY TTL hour + INTERVAL {} DAY",
            r.rollup_days
        ),
    ]
}

pub fn bootstrap_statements(tenant: &Tenant) -> Vec<String> {
    let db = tenant.database();
    vec![
        format!("CREATE DATABASE IF NOT EXISTS {db}"),
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{MIGRATIONS_TABLE} (version UInt32, description String, applied_at DateTime('UTC') DEFAULT now()) \
             ENGINE = ReplacingMergeTree ORDER BY version"
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::TenantSpec;

    fn tenant() -> Tenant {
        let spec: TenantSpec =
            serde_yaml::from_str("sites: { open: true }\nretention: { rawDays: 30, rollupDays: 90 }").unwrap();
        Tenant {
            name: "acme-eu".into(),
            spec,
        }
    }

    #[test]
    fn ddl_follows_the_spec() {
        let m = migrations(&tenant());
        assert_eq!(m[0].version, 1);
        assert!(m[0].statements[0].starts_with("CREATE TABLE IF NOT EXISTS sightline_acme_eu.events_raw"));
        assert!(m[0].statements[0].contains("INTERVAL 30 DAY"));
        assert!(m[0].statements[2].contains("INTERVAL 90 DAY"));
        assert!(
            m.iter()
                .flat_map(|m| &m.statements)
                .all(|s| s.contains("IF NOT EXISTS")),
            "every step is idempotent"
        );
    }

    #[test]
    fn views_and_replay_share_the_rollup_select() {
        let m = migrations(&tenant());
        assert!(m[0].statements[4].ends_with(&site_rollup_select("sightline_acme_eu", EVENTS_TABLE)));
        assert!(m[0].statements[5].ends_with(&dims_rollup_select("sightline_acme_eu", EVENTS_TABLE)));
        for (name, _, _) in DIMENSIONS {
            assert!(m[0].statements[5].contains(&format!("('{name}',")));
        }
    }

    #[test]
    fn column_lists_match_the_row_types() {
        let raw: Vec<&str> = RAW_COLUMNS.split(", ").collect();
        assert_eq!(raw.len(), 16);
        let ev: Vec<&str> = EVENT_COLUMNS.split(", ").map(str::trim).collect();
        let ddl_cols: Vec<&str> = events_columns_ddl()
            .lines()
            .map(|l| l.trim().split(' ').next().unwrap())
            .collect();
        assert_eq!(ev, ddl_cols);
    }
}
