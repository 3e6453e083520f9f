//! `Schema`: the DDL of one tenant, generated from its spec. Both warehouse backends run
//! exactly this text. Migrations are numbered; `schema_migrations` records which ran, so a
//! restart re-runs nothing and an upgrade runs only what is new. A migration's text never
//! changes once released (`legacy` keeps what earlier layouts created); what changes is a
//! new migration.
//!
//! The storage layout (docs/storage.md): `events_raw` (the truth) and `events` (processed)
//! partitioned by UTC day; rollup tiers below them:
//! - `Tier::QuarterHour`: 15-minute UTC buckets, partitioned by UTC day, fed by materialized
//!   views from `events`. Every IANA zone's offset is a whole number of quarter hours, so any
//!   zone's hours, days, weeks and months are sums of whole buckets: exact everywhere.
//! - `Tier::Daily`: each site's local days (its configured timezone), partitioned by month,
//!   built from the quarter-hour tier's states once days are sealed (`warehouse::tiers`).
//! - `Tier::Monthly`: each site's local months, partitioned by month, built from the daily
//!   tier's states: a whole month once every day of it is in the daily tier, and the month
//!   in progress through the daily tier's last day (month to date), each row keyed by the
//!   last day it covers (`through`).

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
pub const MIGRATIONS_TABLE: &str = "schema_migrations";
/// Small facts about a tenant's storage (`warehouse::tiers::StorageState`): which layout
/// answers queries, which local days the daily tier holds, with which timezones.
pub const STATE_TABLE: &str = "storage_state";
/// The loaders' write-ahead intents (see `ingest::loader::store`).
pub const INTENTS_TABLE: &str = "loader_intents";
/// Leases on UTC days taken by replays (`warehouse::replay::lease`): writers hold back a
/// leased day's events, and two replays never work on one day at once.
pub const LEASES_TABLE: &str = "day_leases";
/// Merged visitor states and sums of the sealed part of a range (its monthly and daily
/// tiers' rows), one row per dimension value, kept between queries by the query service
/// (`sightline_query::merges`; docs/storage.md, "Merged sealed ranges"). A cache: rows are
/// found by their `fill` id only, and expire a day after they were written.
pub const MERGES_TABLE: &str = "sealed_merges";

/// Rows per granule of the rollups. Each row holds a `uniq` state of up to kilobytes, and a
/// read decodes whole granules: the default 8192 made a 720-row read decode megabytes.
pub const ROLLUP_GRANULARITY: u32 = 512;

/// Rows per granule of the monthly tier. Its states are mostly whole HyperLogLog sketches
/// (12 KB, ~0.1 ms each to decode and merge), and a dimension's values of neighbouring
/// months share granules: at 512 rows, reading one month of a site's ~100 pages decoded
/// about five months of them.
pub const MONTHLY_GRANULARITY: u32 = 64;

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
session_utm_source, session_utm_medium, session_utm_campaign, props, revenue_amount, revenue_currency, pipeline_version, interactive, \
sign, processing";

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
    interactive UInt8 DEFAULT 1,
    sign Int8 DEFAULT 1,
    processing LowCardinality(String) DEFAULT ''"
}

/// How visitors are counted, in every rollup tier and on the events path alike (so both
/// paths answer alike): an aggregate function and its parameters. The choice and the error
/// it brings are measured in BENCHMARKS.md and stated in the README.
pub const VISITORS_FN: &str = "uniqCombined";
pub const VISITORS_PARAMS: &str = "(14)";

/// The column type of a visitors state.
pub fn visitors_type() -> String {
    format!("AggregateFunction({VISITORS_FN}{VISITORS_PARAMS}, UInt64)")
}

/// `expr`'s visitors as a state (rows of a tier from `events`).
pub fn visitors_state(expr: &str) -> String {
    format!("{VISITORS_FN}State{VISITORS_PARAMS}({expr})")
}

/// The name of the aggregate function that makes a visitors state (`arrayReduce` takes it
/// as text).
pub fn visitors_state_name() -> String {
    format!("{VISITORS_FN}State{VISITORS_PARAMS}")
}

/// States merged into a state (a coarser tier from a finer one).
pub fn visitors_merge_state(expr: &str) -> String {
    format!("{VISITORS_FN}MergeState{VISITORS_PARAMS}({expr})")
}

/// States merged into a count (a query over a tier).
pub fn visitors_merge(expr: &str) -> String {
    format!("{VISITORS_FN}Merge{VISITORS_PARAMS}({expr})")
}

/// A count over `events` rows (the events path).
pub fn visitors_count(expr: &str) -> String {
    format!("{VISITORS_FN}{VISITORS_PARAMS}({expr})")
}

fn rollup_columns_ddl() -> String {
    format!(
        "visitors {},
    visits SimpleAggregateFunction(sum, Int64),
    pageviews SimpleAggregateFunction(sum, Int64),
    events SimpleAggregateFunction(sum, Int64),
    bounces SimpleAggregateFunction(sum, Int64),
    duration SimpleAggregateFunction(sum, Int64)",
        visitors_type()
    )
}

/// The rollup aggregates over `events`; shared by the views and by every rebuild of the
/// quarter-hour tier, so both compute the same thing.
pub fn rollup_aggregates() -> String {
    format!(
        "{} AS visitors, \
toInt64(sum(sign * visit_delta)) AS visits, \
toInt64(sum(sign * is_pageview)) AS pageviews, \
toInt64(sum(sign)) AS events, \
toInt64(sum(sign * bounce_delta)) AS bounces, \
toInt64(sum(sign * duration_delta)) AS duration",
        visitors_state("visitor_id")
    )
}

/// The same aggregates over rows that already hold them (a coarser tier from a finer one).
pub fn merged_aggregates() -> String {
    format!(
        "{} AS visitors, toInt64(sum(visits)) AS visits, \
toInt64(sum(pageviews)) AS pageviews, toInt64(sum(events)) AS events, \
toInt64(sum(bounces)) AS bounces, toInt64(sum(duration)) AS duration",
        visitors_merge_state("visitors")
    )
}

/// `('page', toString(pathname)), ...`: each event counts once per dimension.
fn dimension_pairs() -> String {
    DIMENSIONS
        .iter()
        .map(|(name, column, _)| format!("('{name}', toString({column}))"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A rollup tier (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tier {
    QuarterHour,
    Daily,
    Monthly,
}

impl Tier {
    /// The tier's name in query answers (`meta.tier`) and docs.
    pub fn name(self) -> &'static str {
        match self {
            Tier::QuarterHour => "quarter_hour",
            Tier::Daily => "daily",
            Tier::Monthly => "monthly",
        }
    }

    /// The table of per-site totals (`dims = false`) or per-dimension rows.
    pub fn table(self, dims: bool) -> &'static str {
        match (self, dims) {
            (Tier::QuarterHour, false) => "rollup_site_15m",
            (Tier::QuarterHour, true) => "rollup_dims_15m",
            (Tier::Daily, false) => "rollup_site_daily",
            (Tier::Daily, true) => "rollup_dims_daily",
            (Tier::Monthly, false) => "rollup_site_monthly",
            (Tier::Monthly, true) => "rollup_dims_monthly",
        }
    }

    /// The time column: a UTC bucket start (`DateTime`), a local day (`Date`), or the
    /// first local day of a month (`Date`).
    pub fn time_column(self) -> &'static str {
        match self {
            Tier::QuarterHour => "bucket",
            Tier::Daily => "day",
            Tier::Monthly => "month",
        }
    }

    /// What one `REPLACE PARTITION` swaps: a UTC day, a month of local days, or one local
    /// month (a partition per month, so that a month is rebuilt and swapped alone, from the
    /// one partition of the daily tier that holds its days).
    pub fn partition_by(self) -> &'static str {
        match self {
            Tier::QuarterHour => "toYYYYMMDD(bucket)",
            Tier::Daily => "toYYYYMM(day)",
            Tier::Monthly => "toYYYYMM(month)",
        }
    }

    pub const ALL: [Tier; 3] = [Tier::QuarterHour, Tier::Daily, Tier::Monthly];

    /// Every tier's two tables.
    pub fn all_tables() -> Vec<&'static str> {
        Tier::ALL
            .iter()
            .flat_map(|tier| [tier.table(false), tier.table(true)])
            .collect()
    }
}

/// A tier table (or a staging copy of one, `table`), `dims` for the per-dimension form.
/// Monthly rows also carry `through`, the last local day they cover (the month's last day,
/// or the daily tier's last day for the month in progress), in the key after the month: a
/// month in progress holds a row per recent `through`, so that a reader planning with a
/// storage state a seal old still finds the rows that state names.
pub fn tier_table_ddl(db: &str, table: &str, tier: Tier, dims: bool, rollup_days: u32) -> String {
    let time_type = match tier {
        Tier::QuarterHour => "DateTime('UTC')",
        Tier::Daily | Tier::Monthly => "Date",
    };
    let time = tier.time_column();
    let (time_columns, time_key, granularity) = match tier {
        Tier::Monthly => (
            format!("{time} {time_type},\n    through Date"),
            format!("{time}, through"),
            MONTHLY_GRANULARITY,
        ),
        _ => (format!("{time} {time_type}"), time.to_string(), ROLLUP_GRANULARITY),
    };
    let (dim_columns, order) = if dims {
        (
            "dimension LowCardinality(String),\n    value String,\n    ".to_string(),
            format!("site_id, dimension, {time_key}, value"),
        )
    } else {
        (String::new(), format!("site_id, {time_key}"))
    };
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{table} (
    site_id LowCardinality(String),
    {time_columns},
    {dim_columns}{}
) ENGINE = AggregatingMergeTree
PARTITION BY {}
ORDER BY ({order})
TTL {time} + INTERVAL {rollup_days} DAY
SETTINGS index_granularity = {granularity}",
        rollup_columns_ddl(),
        tier.partition_by()
    )
}

/// SELECT that builds quarter-hour rows (`dims`: per dimension) from any source of `events`
/// rows (a table or a subquery): what the views run on every insert, and every rebuild.
pub fn quarter_hour_select_from(source: &str, dims: bool) -> String {
    let aggregates = rollup_aggregates();
    if dims {
        format!(
            "SELECT site_id, toStartOfFifteenMinutes(ts) AS bucket, dim.1 AS dimension, dim.2 AS value, {aggregates} \
             FROM {source} ARRAY JOIN [{}] AS dim WHERE is_bot = 0 GROUP BY site_id, bucket, dimension, value",
            dimension_pairs()
        )
    } else {
        format!(
            "SELECT site_id, toStartOfFifteenMinutes(ts) AS bucket, {aggregates} \
             FROM {source} WHERE is_bot = 0 GROUP BY site_id, bucket"
        )
    }
}

/// SELECT that builds daily rows from quarter-hour rows of `db`, for the local days
/// `[{first:Date}, {last:Date}]` in the timezone `{tz:String}`, of the sites in
/// `{sites:Array(String)}` (or, `except`, of every other site).
pub fn daily_select(db: &str, dims: bool, except: bool) -> String {
    let source = Tier::QuarterHour.table(dims);
    let sites = if except { "NOT IN" } else { "IN" };
    let (keys, group) = if dims {
        (
            "site_id, toDate(bucket, {tz:String}) AS day, dimension, value",
            "site_id, day, dimension, value",
        )
    } else {
        ("site_id, toDate(bucket, {tz:String}) AS day", "site_id, day")
    };
    // Local days lie within 14 hours of their UTC dates, either way.
    format!(
        "SELECT {keys}, {} FROM {db}.{source} \
         WHERE bucket >= toDateTime({{first:Date}}, 'UTC') - INTERVAL 14 HOUR \
           AND bucket < toDateTime({{last:Date}}, 'UTC') + INTERVAL 38 HOUR \
           AND site_id {sites} {{sites:Array(String)}} \
           AND toDate(bucket, {{tz:String}}) BETWEEN {{first:Date}} AND {{last:Date}} \
         GROUP BY {group}",
        merged_aggregates()
    )
}

/// SELECT that builds monthly rows from the daily tier's rows of `db`: the rows of the
/// month that starts on `{first:Date}`, covering its local days through `{through:Date}`
/// (the month's last day for a whole month, an earlier one for a month in progress). The
/// daily tier's rows are local days of each site's own timezone already, so a month is the
/// same for every site.
pub fn monthly_select(db: &str, dims: bool) -> String {
    let source = Tier::Daily.table(dims);
    let (keys, group) = if dims {
        (
            "site_id, toStartOfMonth(day) AS month, {through:Date} AS through, dimension, value",
            "site_id, month, dimension, value",
        )
    } else {
        (
            "site_id, toStartOfMonth(day) AS month, {through:Date} AS through",
            "site_id, month",
        )
    };
    format!(
        "SELECT {keys}, {} FROM {db}.{source} WHERE day >= {{first:Date}} AND day <= {{through:Date}} GROUP BY {group}",
        merged_aggregates()
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

/// What earlier layouts created, frozen: their migrations must keep meaning what they
/// meant when they ran. Only migrations and the step that retires them read this.
pub mod legacy {
    /// The hourly rollups of layout 1 (partitioned by month), replaced by the tiers.
    pub const SITE_ROLLUP: &str = "rollup_site_hourly";
    pub const DIM_ROLLUP: &str = "rollup_dims_hourly";

    const ROLLUP_COLUMNS: &str = "visitors AggregateFunction(uniq, UInt64),
    visits SimpleAggregateFunction(sum, Int64),
    pageviews SimpleAggregateFunction(sum, UInt64),
    events SimpleAggregateFunction(sum, UInt64),
    bounces SimpleAggregateFunction(sum, Int64),
    duration SimpleAggregateFunction(sum, Int64)";

    const AGGREGATES: &str = "uniqState(visitor_id) AS visitors, \
toInt64(sum(visit_delta)) AS visits, \
toUInt64(sum(is_pageview)) AS pageviews, \
toUInt64(count()) AS events, \
toInt64(sum(bounce_delta)) AS bounces, \
toInt64(sum(duration_delta)) AS duration";

    /// `events` as migration 1 created it (later columns come from ALTERs).
    pub fn events_v1_ddl(db: &str, raw_days: u32) -> String {
        let columns = super::events_columns_ddl()
            .strip_suffix(",\n    interactive UInt8 DEFAULT 1,\n    sign Int8 DEFAULT 1,\n    processing LowCardinality(String) DEFAULT ''")
            .expect("interactive, sign and processing are the last columns, added by migrations 5 and 6");
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{} (
    {columns}
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (site_id, toStartOfHour(ts), visitor_id, ts)
TTL toDateTime(ts) + INTERVAL {raw_days} DAY",
            super::EVENTS_TABLE
        )
    }

    pub fn site_rollup_ddl(db: &str, rollup_days: u32) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{SITE_ROLLUP} (
    site_id LowCardinality(String),
    hour DateTime('UTC'),
    {ROLLUP_COLUMNS}
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (site_id, hour)
TTL hour + INTERVAL {rollup_days} DAY
SETTINGS index_granularity = {}",
            super::ROLLUP_GRANULARITY
        )
    }

    pub fn dims_rollup_ddl(db: &str, rollup_days: u32) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {db}.{DIM_ROLLUP} (
    site_id LowCardinality(String),
    hour DateTime('UTC'),
    dimension LowCardinality(String),
    value String,
    {ROLLUP_COLUMNS}
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (site_id, dimension, hour, value)
TTL hour + INTERVAL {rollup_days} DAY
SETTINGS index_granularity = {}",
            super::ROLLUP_GRANULARITY
        )
    }

    pub fn site_view(db: &str) -> String {
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{SITE_ROLLUP}_mv TO {db}.{SITE_ROLLUP} AS \
             SELECT site_id, toStartOfHour(ts) AS hour, {AGGREGATES} FROM {db}.{} WHERE is_bot = 0 GROUP BY site_id, hour",
            super::EVENTS_TABLE
        )
    }

    pub fn dims_view(db: &str) -> String {
        format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{DIM_ROLLUP}_mv TO {db}.{DIM_ROLLUP} AS \
             SELECT site_id, toStartOfHour(ts) AS hour, dim.1 AS dimension, dim.2 AS value, {AGGREGATES} \
             FROM {db}.{} ARRAY JOIN [{}] AS dim WHERE is_bot = 0 GROUP BY site_id, hour, dimension, value",
            super::EVENTS_TABLE,
            super::dimension_pairs()
        )
    }

    /// States of the hourly rollups merged into a count: they hold `uniq` states.
    pub fn visitors_merge(expr: &str) -> String {
        format!("uniqMerge({expr})")
    }

    /// The tables and views `retire` drops: once a tenant is on the tiers they are gone on
    /// purpose, and drift repair must not bring them back.
    pub fn retired_objects() -> Vec<String> {
        vec![
            format!("{SITE_ROLLUP}_mv"),
            format!("{DIM_ROLLUP}_mv"),
            SITE_ROLLUP.to_string(),
            DIM_ROLLUP.to_string(),
        ]
    }

    /// What retires layout 1 once the tiers hold every day (`warehouse::tiers`).
    pub fn retire(db: &str) -> Vec<String> {
        vec![
            format!("DROP VIEW IF EXISTS {db}.{SITE_ROLLUP}_mv"),
            format!("DROP VIEW IF EXISTS {db}.{DIM_ROLLUP}_mv"),
            format!("DROP TABLE IF EXISTS {db}.{SITE_ROLLUP}"),
            format!("DROP TABLE IF EXISTS {db}.{DIM_ROLLUP}"),
        ]
    }
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
            legacy::events_v1_ddl(&db, r.raw_days),
            legacy::site_rollup_ddl(&db, r.rollup_days),
            legacy::dims_rollup_ddl(&db, r.rollup_days),
            legacy::site_view(&db),
            legacy::dims_view(&db),
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
        Migration {
            version: 6,
            description: "storage v2: events.sign and events.processing; quarter-hour tier (fed by views) and daily tier; storage_state",
            statements: {
                let mut statements = vec![format!(
                    "ALTER TABLE {db}.{EVENTS_TABLE} ADD COLUMN IF NOT EXISTS sign Int8 DEFAULT 1, \
                     ADD COLUMN IF NOT EXISTS processing LowCardinality(String) DEFAULT ''"
                )];
                for tier in [Tier::QuarterHour, Tier::Daily] {
                    for dims in [false, true] {
                        statements.push(tier_table_ddl(&db, tier.table(dims), tier, dims, r.rollup_days));
                    }
                }
                for dims in [false, true] {
                    let table = Tier::QuarterHour.table(dims);
                    statements.push(format!(
                        "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{table}_mv TO {db}.{table} AS {}",
                        quarter_hour_select_from(&format!("{db}.{EVENTS_TABLE}"), dims)
                    ));
                }
                statements.push(format!(
                    "CREATE TABLE IF NOT EXISTS {db}.{STATE_TABLE} (key String, value String, version UInt64) \
                     ENGINE = ReplacingMergeTree(version) ORDER BY key"
                ));
                statements
            },
        },
        Migration {
            version: 7,
            description: "monthly tier: each site's local months (and the month in progress to date), built from the daily tier",
            statements: [false, true]
                .into_iter()
                .map(|dims| tier_table_ddl(&db, Tier::Monthly.table(dims), Tier::Monthly, dims, r.rollup_days))
                .collect(),
        },
        Migration {
            version: 8,
            description: "day_leases: replays lease the UTC days they rebuild; writers hold those days' events back",
            statements: vec![format!(
                "CREATE TABLE IF NOT EXISTS {db}.{LEASES_TABLE} (
    day Date,
    holder String,
    purpose LowCardinality(String),
    taken_at DateTime64(3, 'UTC'),
    expires_at DateTime64(3, 'UTC'),
    released UInt8,
    version UInt64
) ENGINE = MergeTree
ORDER BY (day, holder, version)
TTL toDateTime(taken_at) + INTERVAL 30 DAY"
            )],
        },
        Migration {
            version: 9,
            description: "sealed_merges: the query service keeps merged states of ranges' sealed parts between queries",
            statements: vec![merges_table_ddl(&db)],
        },
    ]
}

/// The `MERGES_TABLE`: per fill (a random id the query service remembers with the range it
/// merged), one row per dimension value (`''` for site totals) with the rollup columns. A
/// partition per day and whole parts dropped a day after their newest row: the service
/// uses a fill for an hour at most, so no part it reads is dropped under it.
pub fn merges_table_ddl(db: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{MERGES_TABLE} (
    fill UInt64,
    created DateTime('UTC') DEFAULT now(),
    value String,
    {}
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(created)
ORDER BY (fill, value)
TTL created + INTERVAL 1 DAY
SETTINGS index_granularity = {MONTHLY_GRANULARITY}, ttl_only_drop_parts = 1",
        rollup_columns_ddl()
    )
}

/// The version `apply_schema` brings a tenant to: the last migration's.
pub fn latest_version() -> u32 {
    9
}

/// Statements run on every apply after the migrations, for the tables of schema `version`:
/// settings that follow the spec (retention) rather than the code version. Idempotent.
pub fn spec_statements(tenant: &Tenant, version: u32) -> Vec<String> {
    let db = tenant.database();
    let r = &tenant.spec.retention;
    let mut statements = vec![
        format!(
            "ALTER TABLE {db}.{RAW_TABLE} MODIFY TTL toDateTime(ts) + INTERVAL {} DAY",
            r.raw_days
        ),
        format!(
            "ALTER TABLE {db}.{EVENTS_TABLE} MODIFY TTL toDateTime(ts) + INTERVAL {} DAY",
            r.raw_days
        ),
    ];
    // The quarter-hour and daily tiers exist from migration 6 on, the monthly one from 7.
    let tiers = Tier::ALL.into_iter().filter(|tier| match tier {
        Tier::QuarterHour | Tier::Daily => version >= 6,
        Tier::Monthly => version >= 7,
    });
    for tier in tiers {
        for dims in [false, true] {
            statements.push(format!(
                "ALTER TABLE {db}.{} MODIFY TTL {} + INTERVAL {} DAY",
                tier.table(dims),
                tier.time_column(),
                r.rollup_days
            ));
        }
    }
    statements
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
    fn views_and_rebuilds_share_the_tier_select() {
        let m = migrations(&tenant());
        let v6 = &m.iter().find(|m| m.version == 6).unwrap().statements;
        for dims in [false, true] {
            let view = v6
                .iter()
                .find(|s| s.contains(&format!("{}_mv", Tier::QuarterHour.table(dims))))
                .unwrap();
            assert!(view.ends_with(&quarter_hour_select_from("sightline_acme_eu.events", dims)));
        }
        for (name, _, _) in DIMENSIONS {
            assert!(quarter_hour_select_from("x", true).contains(&format!("('{name}',")));
        }
        assert_eq!(m.last().unwrap().version, latest_version());
    }

    #[test]
    fn the_monthly_tier_swaps_one_local_month_and_is_built_from_the_daily_tier() {
        let m = migrations(&tenant());
        let v7 = &m.iter().find(|m| m.version == 7).unwrap().statements;
        assert_eq!(v7.len(), 2);
        for (dims, ddl) in [false, true].into_iter().zip(v7) {
            let table = format!("sightline_acme_eu.{} ", Tier::Monthly.table(dims));
            assert!(ddl.contains(&table), "{ddl}");
            assert!(ddl.contains("month Date"), "{ddl}");
            assert!(ddl.contains("through Date"), "{ddl}");
            assert!(
                ddl.contains("month, through"),
                "{ddl}: rows of a month are keyed by what they cover"
            );
            assert!(ddl.contains("PARTITION BY toYYYYMM(month)"), "{ddl}");
            assert!(ddl.contains("index_granularity = 64"), "{ddl}");
            assert!(ddl.contains("TTL month + INTERVAL 90 DAY"), "{ddl}");
        }
        for dims in [false, true] {
            let select = monthly_select("db", dims);
            assert!(
                select.contains(&format!("FROM db.{} ", Tier::Daily.table(dims))),
                "{select}"
            );
            assert!(select.contains(&visitors_merge_state("visitors")), "{select}");
            assert!(select.contains("toStartOfMonth(day) AS month"), "{select}");
            assert!(select.contains("day <= {through:Date}"), "{select}");
        }
        let statements = spec_statements(&tenant(), 7).join("\n");
        assert!(statements.contains("rollup_dims_monthly MODIFY TTL month + INTERVAL 90 DAY"));
        assert!(!spec_statements(&tenant(), 6).join("\n").contains("monthly"));
    }

    /// A released migration never changes: a changed view or table is a new migration.
    /// These are the SHA-256 of each migration's statements for the tenant above; a failure
    /// here means a released migration was edited.
    #[test]
    fn released_migrations_are_frozen() {
        use sha2::{Digest, Sha256};
        let pinned: &[(u32, &str)] = &[
            (1, "12062e90db46a8d624ea9eb9b1fe32b069494e7835ebb288e2ab4dab8f05897c"),
            (2, "d68b45ffd438ae0cb309a85cfec7ecbf570401d9ce38fb595c808bf7f90e2d08"),
            (3, "b387ae02ff38b9c281cd92ab87d3f0adf65e38c95aa55a3d2dfdea846f697836"),
            (4, "85c57d39989e55f0164c0bdd2a8407369a529878ac4774d718d33f654b85d41b"),
            (5, "020eb1dd0cbf510f9b4842f8f5a3a8bf519ae9717ccd07f81a0865b04816f6a0"),
            (6, "d5bb24dbd3229c6f087307fb62a56c768b44696e168c4cfc2a69b11bc1da9faf"),
            (7, "b5f2fab36a2cc6ae6a311d7cb7178be57d4a610a8624419154650742c074e95d"),
            (8, "095865ee5a12fd49a3a2bf80c6185d802f4f930d47bd38e2f681b2c9b3e49235"),
            (9, "b420dae84878adf8d7adaad5622080fc36f2913a8675dbdc3ecd2d25e9cd0748"),
        ];
        for m in migrations(&tenant()) {
            let mut h = Sha256::new();
            for statement in &m.statements {
                h.update(statement.as_bytes());
                h.update([0]);
            }
            let got: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
            let want = pinned.iter().find(|(v, _)| *v == m.version).map(|(_, c)| *c);
            assert_eq!(Some(got.as_str()), want, "migration {} ({})", m.version, m.description);
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
