//! The warehouse operations, run against both backends: the embedded engine (libchdb) and
//! the HTTP backend (crate `clickhouse`) talking to the test-support front over libchdb, or
//! to a real server when `CLICKHOUSE_URL` is set (`CLICKHOUSE_USER`, `CLICKHOUSE_PASSWORD`).
//! The engine is one per process and nextest runs each test in its own, so each backend's
//! test runs the whole scenario in order.

use std::collections::BTreeMap;

use chrono::{Duration, TimeZone, Utc};
use sightline_core::event::RawEvent;
use sightline_core::processor::session::SessionState;
use sightline_core::processor::{process, ProcessorConfig};
use sightline_core::spec::parse_tenants;
use sightline_core::warehouse::embedded::Embedded;
use sightline_core::warehouse::http::{Http, HttpConfig};
use sightline_core::warehouse::{ops, replay, InsertFormat, Params, SelectLimits, StatementHold, Warehouse};
use sightline_tests::clickhouse_front::ClickHouseFront;
use sightline_tests::count;
use std::sync::atomic::Ordering;
use uuid::Uuid;

const CHROME: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

fn raw(site: &str, visitor: u64, minute: i64, url: &str, ua: &str) -> RawEvent {
    let ts = Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap() + Duration::minutes(minute);
    RawEvent {
        event_id: Uuid::new_v4(),
        site_id: site.into(),
        received_at: ts,
        ts,
        name: "pageview".into(),
        url: url.into(),
        referrer: "https://www.google.com/".into(),
        user_agent: ua.into(),
        props: BTreeMap::from([("plan".to_string(), "it's \"pro\"".to_string())]),
        revenue_amount: String::new(),
        revenue_currency: String::new(),
        visitor_id: visitor,
        country: "DE".into(),
        ingest_source: "web".into(),
        prev_day_visitor_id: 0,
        interactive: true,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_backend() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Embedded::open(&dir.path().join("engine"), 2).unwrap();
    assert!(wh.engine_version().starts_with("26."), "engine {}", wh.engine_version());
    scenario(&wh).await;
}

/// The HTTP backend against `CLICKHOUSE_URL`, or the front over libchdb (with credentials
/// and LZ4 both ways, as a production server would be configured).
#[tokio::test(flavor = "multi_thread")]
async fn http_backend() {
    let dir = tempfile::tempdir().unwrap();
    let (front, config) = http_target(&dir, true).await;
    let wh = Http::new(&config);
    assert!(!wh.server_version().await.unwrap().is_empty());
    scenario(&wh).await;
    if let Some(front) = front {
        assert!(
            front.requests.load(Ordering::Relaxed) > 20,
            "the scenario went through the front"
        );
    }
}

/// Uncompressed bodies work too, and failures come back as errors that say what failed.
#[tokio::test(flavor = "multi_thread")]
async fn http_backend_plain_bodies_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_front, config) = http_target(&dir, false).await;
    let wh = Http::new(&config);
    let rows = wh
        .select(
            "SELECT {a:UInt64} + 1 AS n, {s:String} AS s",
            &Params::new().bind("a", 41).bind("s", "it's?"),
        )
        .await
        .unwrap();
    assert_eq!(rows, vec![serde_json::json!({"n": 42, "s": "it's?"})]);

    let missing = wh
        .select("SELECT * FROM nowhere.nothing", &Params::new())
        .await
        .unwrap_err();
    assert!(
        missing.to_string().contains("UNKNOWN_DATABASE") || missing.to_string().contains("UNKNOWN_TABLE"),
        "{missing}"
    );
    let syntax = wh.execute("SELEC 1", &Params::new()).await.unwrap_err();
    assert!(syntax.to_string().contains("SYNTAX_ERROR"), "{syntax}");

    let wrong = Http::new(&HttpConfig {
        password: Some("not-the-password".into()),
        ..config.clone()
    });
    let denied = wrong.server_version().await.unwrap_err();
    assert!(denied.to_string().contains("AUTHENTICATION_FAILED"), "{denied}");

    let nobody = Http::new(&HttpConfig {
        url: "http://127.0.0.1:9".into(),
        ..config
    });
    let unreachable = nobody.server_version().await.unwrap_err();
    assert!(
        matches!(unreachable, sightline_core::Error::Unreachable(_)),
        "{unreachable}"
    );
}

/// Client statements run within their limits on both backends: the engine's limits are
/// sent with them, and one past its deadline ends the call at the deadline.
async fn limited_statements(wh: &dyn Warehouse) {
    let limits = SelectLimits {
        timeout_secs: 1,
        max_rows_to_read: 1_000,
        max_threads: 1,
    };
    let hold: StatementHold = Box::new(());
    let rows = wh
        .select_within("SELECT count() AS n FROM numbers(10)", &Params::new(), &limits, hold)
        .await
        .unwrap();
    assert_eq!(rows[0]["n"], 10);
    let too_many = wh
        .select_within(
            "SELECT count() AS n FROM numbers(100000)",
            &Params::new(),
            &limits,
            Box::new(()),
        )
        .await
        .unwrap_err();
    assert!(too_many.to_string().contains("TOO_MANY_ROWS"), "{too_many}");
    // An INSERT … SELECT a query asks for runs within the same limits.
    wh.execute(
        "CREATE TABLE IF NOT EXISTS default.limited_fill (n UInt64) ENGINE = MergeTree ORDER BY n",
        &Params::new(),
    )
    .await
    .unwrap();
    wh.execute_within(
        "INSERT INTO default.limited_fill SELECT number FROM numbers({n:UInt64})",
        &Params::new().bind("n", 10),
        &limits,
        Box::new(()),
    )
    .await
    .unwrap();
    let too_many = wh
        .execute_within(
            "INSERT INTO default.limited_fill SELECT number FROM numbers(100000)",
            &Params::new(),
            &limits,
            Box::new(()),
        )
        .await
        .unwrap_err();
    assert!(too_many.to_string().contains("TOO_MANY_ROWS"), "{too_many}");
    let rows = wh
        .select("SELECT count() AS n FROM default.limited_fill", &Params::new())
        .await
        .unwrap();
    assert_eq!(rows[0]["n"], 10, "only the statement within its limits stored rows");
    wh.execute("DROP TABLE default.limited_fill", &Params::new())
        .await
        .unwrap();
    let limits = SelectLimits {
        max_rows_to_read: u64::MAX / 2,
        ..limits
    };
    let started = std::time::Instant::now();
    let slow = wh
        .select_within(
            "SELECT sum(sipHash64(number)) AS n FROM numbers(1000000000000)",
            &Params::new(),
            &limits,
            Box::new(()),
        )
        .await
        .unwrap_err();
    assert!(
        slow.to_string().contains("TIMEOUT_EXCEEDED") || matches!(slow, sightline_core::Error::DeadlineExceeded(_)),
        "{slow}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// The engine runs with the allocator configuration Sightline's processes give it
/// (`embedded::configure_engine_allocator`, first in the binary's `main`): pages it frees
/// go back to the system within 100 ms, which took standalone's anonymous memory at
/// saturation from ~300 to ~230 MB (BENCHMARKS.md). Read from the engine's own jemalloc statistics, so
/// a misnamed variable, or one set after the library loaded, fails here. (This process
/// loads the engine here first: nextest runs each test in its own.)
#[test]
fn the_embedded_engine_gives_freed_pages_back_within_100_ms() {
    use sightline_core::warehouse::embedded::{configure_engine_allocator, ALLOCATOR_ENV};
    let preset = std::env::var(ALLOCATOR_ENV).ok();
    configure_engine_allocator();
    if preset.is_some() {
        // Whoever runs the tests chose the allocator's configuration: it is kept.
        assert_eq!(std::env::var(ALLOCATOR_ENV).ok(), preset);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows = runtime.block_on(async {
        let wh = Embedded::open(&dir.path().join("engine"), 1).unwrap();
        wh.select("SELECT stats FROM system.jemalloc_stats", &Params::new())
            .await
            .unwrap()
    });
    let stats = rows[0]["stats"].as_str().unwrap();
    assert!(
        stats.contains("opt.dirty_decay_ms: 100 ("),
        "{}",
        stats
            .lines()
            .filter(|l| l.contains("decay"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_limited_statements() {
    let dir = tempfile::tempdir().unwrap();
    limited_statements(&Embedded::open(&dir.path().join("engine"), 2).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_limited_statements() {
    let dir = tempfile::tempdir().unwrap();
    let (_front, config) = http_target(&dir, true).await;
    limited_statements(&Http::new(&config)).await;
}

/// The embedded engine's readers: a statement nobody waits for any more is cancelled in the
/// engine (its reader and its hold come back long before its own time limit), and a busy
/// reader never makes a statement wait while another reader is free.
#[tokio::test(flavor = "multi_thread")]
async fn embedded_cancels_abandoned_statements_and_pools_readers() {
    let dir = tempfile::tempdir().unwrap();
    let wh = std::sync::Arc::new(Embedded::open(&dir.path().join("engine"), 2).unwrap());
    let slow_sql = "SELECT sum(sipHash64(number)) AS n FROM numbers(1000000000000)";
    let patient = SelectLimits {
        timeout_secs: 120,
        max_rows_to_read: u64::MAX / 2,
        max_threads: 1,
    };

    // One reader busy for up to two minutes: quick statements still find the other one,
    // every time (round-robin put every second one behind the busy reader).
    let hold = std::sync::Arc::new(());
    let busy = {
        let (wh, hold) = (wh.clone(), hold.clone());
        tokio::spawn(async move {
            let params = Params::new();
            let statement = wh.select_within(slow_sql, &params, &patient, Box::new(hold));
            tokio::time::timeout(std::time::Duration::from_secs(2), statement).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for _ in 0..6 {
        let started = std::time::Instant::now();
        let rows = wh.select("SELECT 1 AS n", &Params::new()).await.unwrap();
        assert_eq!(rows[0]["n"], 1);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
    // The caller gives up after 2 s (its future is dropped): the engine is told to stop.
    assert!(busy.await.unwrap().is_err(), "the slow statement was still running");
    let stopped = std::time::Instant::now();
    while std::sync::Arc::strong_count(&hold) > 1 {
        assert!(
            stopped.elapsed() < std::time::Duration::from_secs(20),
            "the abandoned statement still holds its reader (its own limit is 120 s)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let running = wh
        .select(
            "SELECT count() AS n FROM system.processes WHERE query LIKE '%sipHash64%' AND query NOT LIKE '%system.processes%'",
            &Params::new(),
        )
        .await
        .unwrap();
    assert_eq!(running[0]["n"], 0, "cancelled in the engine");
}

/// Retention is applied only where a table's TTL differs from the spec's, on each backend.
#[tokio::test(flavor = "multi_thread")]
async fn embedded_retention_only_where_it_differs() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Embedded::open(&dir.path().join("engine"), 1).unwrap();
    retention_only_where_it_differs(Recorder::new(wh)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_retention_only_where_it_differs() {
    let dir = tempfile::tempdir().unwrap();
    let (_front, config) = http_target(&dir, true).await;
    retention_only_where_it_differs(Recorder::new(Http::new(&config))).await;
}

/// A backend that records every statement `execute` sends it: what reached the engine.
struct Recorder<W> {
    inner: W,
    executed: std::sync::Mutex<Vec<String>>,
}

impl<W: Warehouse> Recorder<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            executed: Default::default(),
        }
    }

    /// The statements executed since the last call.
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.executed.lock().unwrap())
    }
}

#[async_trait::async_trait]
impl<W: Warehouse> Warehouse for Recorder<W> {
    async fn execute(&self, sql: &str, params: &Params) -> sightline_core::Result<()> {
        self.executed.lock().unwrap().push(sql.to_string());
        self.inner.execute(sql, params).await
    }
    async fn select(&self, sql: &str, params: &Params) -> sightline_core::Result<Vec<serde_json::Value>> {
        self.inner.select(sql, params).await
    }
    async fn select_within(
        &self,
        sql: &str,
        params: &Params,
        limits: &SelectLimits,
        hold: StatementHold,
    ) -> sightline_core::Result<Vec<serde_json::Value>> {
        self.inner.select_within(sql, params, limits, hold).await
    }
    async fn execute_within(
        &self,
        sql: &str,
        params: &Params,
        limits: &SelectLimits,
        hold: StatementHold,
    ) -> sightline_core::Result<()> {
        self.executed.lock().unwrap().push(sql.to_string());
        self.inner.execute_within(sql, params, limits, hold).await
    }
    async fn select_row_binary(&self, sql: &str, params: &Params) -> sightline_core::Result<Vec<u8>> {
        self.inner.select_row_binary(sql, params).await
    }
    async fn insert(
        &self,
        table: &str,
        columns: &str,
        format: InsertFormat,
        rows: Vec<u8>,
    ) -> sightline_core::Result<()> {
        self.inner.insert(table, columns, format, rows).await
    }
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
}

/// An unchanged spec sends no `MODIFY TTL` (each is an ALTER, and one that changes the TTL
/// a mutation rewriting parts); a changed retention, or a TTL changed by hand, is set.
async fn retention_only_where_it_differs<W: Warehouse>(wh: Recorder<W>) {
    let tenant = |raw: u32, rollup: u32| {
        parse_tenants(
            &format!(
                "apiVersion: sightline.dev/v1alpha1\nkind: AnalyticsTenant\nmetadata: {{name: keep}}\n\
                 spec: {{sites: {{open: true}}, retention: {{rawDays: {raw}, rollupDays: {rollup}}}}}\n"
            ),
            "test",
        )
        .unwrap()
        .remove(0)
    };
    let ttl_alters =
        |executed: Vec<String>| -> Vec<String> { executed.into_iter().filter(|s| s.contains("MODIFY TTL")).collect() };
    let engine_full = |table: &'static str| {
        let wh = &wh;
        async move {
            let rows = wh
                .select(
                    "SELECT engine_full FROM system.tables WHERE database = 'sightline_keep' AND name = {t:String}",
                    &Params::new().bind("t", table),
                )
                .await
                .unwrap();
            rows[0]["engine_full"].as_str().unwrap().to_string()
        }
    };

    let first = ops::apply_schema(&wh, &tenant(400, 800)).await.unwrap();
    assert_eq!(first.ttl_changed, Vec::<String>::new(), "created with the spec's TTLs");
    let executed = wh.take();
    assert!(executed.iter().any(|s| s.starts_with("CREATE TABLE")), "{executed:?}");
    assert_eq!(ttl_alters(executed), Vec::<String>::new());
    let again = ops::apply_schema(&wh, &tenant(400, 800)).await.unwrap();
    assert_eq!(again.ttl_changed, Vec::<String>::new());
    assert_eq!(
        ttl_alters(wh.take()),
        Vec::<String>::new(),
        "an unchanged spec sends no ALTER"
    );

    // A longer raw retention: events_raw and events change, nothing else does.
    let changed = ops::apply_schema(&wh, &tenant(500, 800)).await.unwrap();
    assert_eq!(changed.ttl_changed, ["events_raw", "events"]);
    assert_eq!(
        ttl_alters(wh.take()),
        [
            "ALTER TABLE sightline_keep.events_raw MODIFY TTL toDateTime(ts) + INTERVAL 500 DAY",
            "ALTER TABLE sightline_keep.events MODIFY TTL toDateTime(ts) + INTERVAL 500 DAY",
        ]
    );
    for table in ["events_raw", "events"] {
        assert!(
            engine_full(table)
                .await
                .contains("TTL toDateTime(ts) + toIntervalDay(500)"),
            "{table}"
        );
    }
    assert!(engine_full("rollup_site_15m")
        .await
        .contains("TTL bucket + toIntervalDay(800)"));
    let again = ops::apply_schema(&wh, &tenant(500, 800)).await.unwrap();
    assert_eq!(again.ttl_changed, Vec::<String>::new());
    assert_eq!(ttl_alters(wh.take()), Vec::<String>::new());

    // A TTL changed by hand is set back; the others are left alone.
    wh.execute(
        "ALTER TABLE sightline_keep.rollup_dims_daily MODIFY TTL day + INTERVAL 5 DAY",
        &Params::new(),
    )
    .await
    .unwrap();
    wh.take();
    let repaired = ops::apply_schema(&wh, &tenant(500, 800)).await.unwrap();
    assert_eq!(repaired.ttl_changed, ["rollup_dims_daily"]);
    assert_eq!(
        ttl_alters(wh.take()),
        ["ALTER TABLE sightline_keep.rollup_dims_daily MODIFY TTL day + INTERVAL 800 DAY"]
    );
    assert!(engine_full("rollup_dims_daily")
        .await
        .contains("TTL day + toIntervalDay(800)"));

    // A table dropped by hand is left to drift repair (which creates it with the spec's
    // TTL): the apply still succeeds.
    wh.execute("DROP TABLE sightline_keep.rollup_site_daily", &Params::new())
        .await
        .unwrap();
    let without = ops::apply_schema(&wh, &tenant(600, 800)).await.unwrap();
    assert_eq!(without.ttl_changed, ["events_raw", "events"]);
}

async fn http_target(dir: &tempfile::TempDir, compression: bool) -> (Option<ClickHouseFront>, HttpConfig) {
    if let Ok(url) = std::env::var("CLICKHOUSE_URL") {
        let config = HttpConfig {
            url,
            user: std::env::var("CLICKHOUSE_USER").ok(),
            password: std::env::var("CLICKHOUSE_PASSWORD").ok(),
            compression,
        };
        return (None, config);
    }
    let front = ClickHouseFront::start(&dir.path().join("engine"), Some(("sightline", "s3cret"))).await;
    let config = HttpConfig {
        url: front.url(),
        user: Some("sightline".into()),
        password: Some("s3cret".into()),
        compression,
    };
    (Some(front), config)
}

async fn scenario(wh: &dyn Warehouse) {
    let tenant = parse_tenants(
        "apiVersion: sightline.dev/v1alpha1\nkind: AnalyticsTenant\nmetadata: {name: acme}\nspec: {sites: {open: true}}\n",
        "test",
    )
    .unwrap()
    .remove(0);
    let db = tenant.database();

    // Applying twice: the second apply migrates nothing.
    let latest = sightline_core::schema::migrations(&tenant).last().unwrap().version;
    let first = ops::apply_schema(wh, &tenant).await.unwrap();
    assert_eq!((first.from, first.to), (0, latest));
    let second = ops::apply_schema(wh, &tenant).await.unwrap();
    assert_eq!((second.from, second.to), (latest, latest));

    // An upgrade migrates and keeps data: a database at version 1 with a row in it.
    let legacy = parse_tenants(
        "apiVersion: sightline.dev/v1alpha1\nkind: AnalyticsTenant\nmetadata: {name: legacy}\nspec: {sites: {open: true}}\n",
        "test",
    )
    .unwrap()
    .remove(0);
    let old = ops::apply_schema_to(wh, &legacy, 1).await.unwrap();
    assert_eq!((old.from, old.to), (0, 1));
    wh.execute(
        "INSERT INTO sightline_legacy.events_raw (event_id, site_id, received_at, ts, name, url, referrer, user_agent, props, \
         revenue_amount, revenue_currency, visitor_id, country) VALUES (generateUUIDv4(), 's', now64(3), now64(3), 'pageview', \
         'https://s.example/', '', 'ua', map(), '', '', 1, '')",
        &Params::new(),
    )
    .await
    .unwrap();
    let upgraded = ops::apply_schema(wh, &legacy).await.unwrap();
    assert_eq!((upgraded.from, upgraded.to), (1, latest));
    let rows = wh
        .select(
            "SELECT ingest_source, url FROM sightline_legacy.events_raw",
            &Params::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![serde_json::json!({"ingest_source": "web", "url": "https://s.example/"})]
    );

    // Three events of one visitor in one session, one of another, one bot.
    let raws = vec![
        raw("a.example", 1, 0, "https://a.example/", CHROME),
        raw("a.example", 1, 5, "https://a.example/pricing", CHROME),
        raw("a.example", 1, 12, "https://a.example/signup", CHROME),
        raw("a.example", 2, 1, "https://a.example/blog", CHROME),
        raw("a.example", 3, 2, "https://a.example/", "Googlebot/2.1"),
    ];
    let config = ProcessorConfig { bot_filtering: true };
    let mut sessions = SessionState::default();
    let events: Vec<_> = raws.iter().map(|r| process(r, config, &mut sessions)).collect();
    ops::insert_raw_and_events(wh, &db, &raws, &events).await.unwrap();

    // RowBinary lands every column as it was: read the rows back whole.
    let stored_raw = wh
        .select(
            &format!(
                "SELECT {} FROM {db}.events_raw WHERE event_id = {{id:UUID}}",
                sightline_core::schema::RAW_COLUMNS
            ),
            &Params::new().bind("id", raws[1].event_id),
        )
        .await
        .unwrap();
    let stored_raw: RawEvent = serde_json::from_value(stored_raw[0].clone()).unwrap();
    assert_eq!(stored_raw, raws[1]);
    let stored_event = wh
        .select(
            &format!(
                "SELECT {} FROM {db}.events WHERE event_id = {{id:UUID}}",
                sightline_core::schema::EVENT_COLUMNS
            ),
            &Params::new().bind("id", events[2].event_id),
        )
        .await
        .unwrap();
    let stored_event: sightline_core::event::Event = serde_json::from_value(stored_event[0].clone()).unwrap();
    assert_eq!(stored_event, events[2]);

    assert_eq!(count(wh, &format!("SELECT count() AS n FROM {db}.events_raw")).await, 5);
    let props = wh
        .select(
            &format!("SELECT props['plan'] AS p FROM {db}.events_raw LIMIT 1"),
            &Params::new(),
        )
        .await
        .unwrap();
    assert_eq!(props[0]["p"], "it's \"pro\"");
    let site = wh
        .select(
            &format!("SELECT {} AS v, sum(visits) AS visits, sum(pageviews) AS pv, sum(bounces) AS b, sum(duration) AS d FROM {db}.rollup_site_15m WHERE site_id = {{s:String}}", sightline_core::schema::visitors_merge("visitors")),
            &Params::new().bind("s", "a.example"),
        )
        .await
        .unwrap();
    assert_eq!(site[0]["v"], 2, "the bot is not a visitor: {site:?}");
    assert_eq!(site[0]["visits"], 2);
    assert_eq!(site[0]["pv"], 4);
    assert_eq!(site[0]["b"], 1, "visitor 2 bounced, visitor 1 did not");
    assert_eq!(site[0]["d"], 12 * 60);
    let pages = wh
        .select(
            &format!("SELECT value, sum(pageviews) AS pv FROM {db}.rollup_dims_15m WHERE dimension = 'page' GROUP BY value ORDER BY value"),
            &Params::new(),
        )
        .await
        .unwrap();
    assert_eq!(pages.len(), 4, "{pages:?}");

    // Existing ids are found; unknown ones are not.
    let day = raws[0].ts.date_naive();
    // Ids are unique within a site only: another site's event with a stored id is new.
    let probe = vec![
        raws[0].key(),
        raws[3].key(),
        (raws[0].site_id.as_str(), Uuid::new_v4()),
        ("other.example", raws[0].event_id),
    ];
    let found = ops::existing_event_ids(wh, &db, "events_raw", &probe, &[day])
        .await
        .unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found.contains(&(raws[0].site_id.clone(), raws[0].event_id)));
    assert!(!found.contains(&("other.example".to_string(), raws[0].event_id)));

    // A consistent day needs no repair.
    assert!(replay::inconsistent_days(wh, &tenant, day, day)
        .await
        .unwrap()
        .is_empty());

    // Another day of the same month, loaded normally: a replay of the 20th rebuilds the
    // month's rollups and must keep the 19th as it is.
    let mut other_day: Vec<RawEvent> = (0..3)
        .map(|i| raw("a.example", 10 + i, 0, "https://a.example/x", CHROME))
        .collect();
    for e in &mut other_day {
        e.ts -= Duration::days(1);
        e.received_at = e.ts;
    }
    let mut s2 = SessionState::default();
    let other_events: Vec<_> = other_day.iter().map(|r| process(r, config, &mut s2)).collect();
    ops::insert_raw_and_events(wh, &db, &other_day, &other_events)
        .await
        .unwrap();
    let nineteenth =
        format!("SELECT toUInt64(sum(events)) AS n FROM {db}.rollup_dims_15m WHERE toDate(bucket) = '2026-11-19' AND dimension = 'page'");
    assert_eq!(count(wh, &nineteenth).await, 3);

    // Simulate a crash between the raw and the processed insert: raw rows without events.
    let lost = vec![raw("a.example", 4, 30, "https://a.example/lost", CHROME)];
    wh.insert(
        &format!("{db}.events_raw"),
        sightline_core::schema::RAW_COLUMNS,
        InsertFormat::JsonEachRow,
        ops::json_each_row(&lost).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(
        replay::inconsistent_days(wh, &tenant, day, day).await.unwrap(),
        vec![day]
    );
    let repaired = replay::repair_recent_days(wh, &tenant, raws[0].ts, 1).await.unwrap();
    assert_eq!(repaired.len(), 1);
    assert_eq!(repaired[0].raw_rows, 6);
    assert!(replay::inconsistent_days(wh, &tenant, day - Duration::days(1), day)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        count(wh, &nineteenth).await,
        3,
        "the rebuilt month keeps its other days"
    );
    assert_eq!(
        count(
            wh,
            &format!("SELECT countIf(toDate(ts) = '2026-11-20') AS n FROM {db}.events")
        )
        .await,
        6
    );
    assert_eq!(
        count(
            wh,
            &format!("SELECT toUInt64(sum(visits)) AS n FROM {db}.rollup_site_15m WHERE toDate(bucket) = '2026-11-20'")
        )
        .await,
        3
    );

    // Replaying again is idempotent: same rows, same session ids.
    let before = wh
        .select(
            &format!("SELECT event_id, session_id, visit_delta FROM {db}.events ORDER BY event_id"),
            &Params::new(),
        )
        .await
        .unwrap();
    replay::replay_day(wh, &tenant, day).await.unwrap();
    let after = wh
        .select(
            &format!("SELECT event_id, session_id, visit_delta FROM {db}.events ORDER BY event_id"),
            &Params::new(),
        )
        .await
        .unwrap();
    assert_eq!(before, after);
    let live_sessions: Vec<u64> = events.iter().map(|e| e.session_id).collect();
    let replayed: Vec<u64> = wh
        .select(
            &format!("SELECT session_id FROM {db}.events WHERE visitor_id IN (1,2,3) ORDER BY visitor_id, ts"),
            &Params::new(),
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r["session_id"].as_u64().unwrap())
        .collect();
    let mut live_sorted = live_sessions.clone();
    live_sorted.sort();
    let mut replayed_sorted = replayed.clone();
    replayed_sorted.sort();
    assert_eq!(live_sorted, replayed_sorted, "replay reproduces live session ids");

    // The loaders' write-ahead intents: the highest offset per partition wins.
    ops::record_intents(wh, &db, "t", &[(0, 10), (1, 5)]).await.unwrap();
    ops::record_intents(wh, &db, "t", &[(0, 20)]).await.unwrap();
    ops::record_intents(wh, &db, "other", &[(0, 99)]).await.unwrap();
    assert_eq!(
        ops::intents(wh, &db, "t").await.unwrap(),
        std::collections::BTreeMap::from([(0, 20), (1, 5)])
    );

    // Sessions come back after a restart.
    let mut restored = SessionState::default();
    let n = ops::restore_sessions(wh, &db, raws[2].ts + Duration::minutes(5), &mut restored)
        .await
        .unwrap();
    assert!(n >= 1, "open sessions restored");
}
