//! Query latency on a large site: 10M events for one site and 1,000 small sites beside it
//! (a year, in Europe/Berlin), moved onto the rollup tiers as a migrated database would be;
//! then p50/p99 of six dashboard queries, cold (cache invalidated before each; the first
//! cold request of each also merges its range's sealed part, which the others read) and cached,
//! and queries per second at 32 concurrent clients, through the real HTTP query service.
//! With `--visitor-functions`, also how `uniq`, `uniqCombined` and `uniqHLL12` states merge
//! per tier and how far their counts are from `uniqExact`, on the dataset and over many
//! random sets of known size.
//!
//!     cargo build --release --bin query-bench
//!     ./target/release/query-bench --events 10000000 --visitor-functions

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};
use sightline_bench::percentile;
use sightline_core::processor::{identity, ProcessorConfig, PIPELINE_VERSION};
use sightline_core::registry::Registry;
use sightline_core::schema::Tier;
use sightline_core::secret::MasterSecret;
use sightline_core::spec::parse_tenants;
use sightline_core::token::{self, Claims, Scope};
use sightline_core::warehouse::embedded::Embedded;
use sightline_core::warehouse::{ops, tiers, Params, Warehouse};
use sightline_core::watermark::Watermarks;
use sightline_query::execute::{self, Storage};
use sightline_query::model::parse_query;
use sightline_query::{QueryConfig, QueryState};
use sightline_tests::{CHROME_MAC, FIREFOX_WIN, SAFARI_IPHONE};

#[derive(Parser)]
struct Args {
    /// Events of the big site.
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Small sites beside it, with this many events each.
    #[arg(long, default_value_t = 1000)]
    small_sites: u64,
    #[arg(long, default_value_t = 100)]
    small_events: u64,
    /// Timed requests per query and mode.
    #[arg(long, default_value_t = 100)]
    samples: usize,
    /// Seconds of the 32-client throughput run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Also compare the visitor-counting functions (merge time and error, per tier).
    #[arg(long)]
    visitor_functions: bool,
    /// Keep the engine's files here and, when they already hold the dataset, reuse them
    /// (the load and the move onto the tiers take minutes).
    #[arg(long)]
    engine_dir: Option<std::path::PathBuf>,
}

const SITE: &str = "big.example.com";

/// Fills `events` straight from numbers(): a year of traffic, 500 pages with a skew, and
/// visits as they happen: five events a minute apart from one visitor, at a random moment of
/// the year. The views build the rollups from it as they do for live inserts.
fn generate_sql(db: &str, site: &str, events: u64, offset: u64) -> String {
    format!(
        "INSERT INTO {db}.events SELECT
            generateUUIDv4(number) AS event_id, '{site}' AS site_id,
            now64(3) - toIntervalSecond(intHash32(intDiv(number, 5) + {offset}) % (365 * 86400)) + toIntervalSecond((number % 5) * 60) AS ts,
            if(number % 7 = 0, 'signup', 'pageview') AS name, toUInt8(number % 7 != 0) AS is_pageview,
            '{site}' AS hostname, concat('/p/', toString(pow(intHash32(number * 7 + {offset}) % 1000, 2) % 500)) AS pathname,
            '' AS referrer_host, ['Google', 'Twitter', 'Direct / None', 'news.example'][number % 4 + 1] AS referrer_source,
            ['Organic Search', 'Organic Social', 'Direct', 'Referral'][number % 4 + 1] AS referrer_medium,
            '' AS utm_source, '' AS utm_medium, '' AS utm_campaign, '' AS utm_content, '' AS utm_term,
            ['Chrome', 'Safari', 'Firefox'][number % 3 + 1] AS browser, '' AS browser_version,
            ['Mac OSX', 'iPhone', 'Windows 10'][number % 3 + 1] AS os, '' AS os_version,
            ['desktop', 'mobile', 'desktop'][number % 3 + 1] AS device,
            ['DE', 'US', 'FR', 'GB', 'JP'][number % 5 + 1] AS country, 0 AS is_bot,
            cityHash64(intDiv(number, 5) + {offset}) AS visitor_id, visitor_id AS session_id,
            ts AS session_start, toInt8(number % 5 = 0) AS visit_delta, toInt8(number % 5 = 0) - toInt8(number % 5 = 1) AS bounce_delta,
            toInt64(if(number % 5 = 0, 0, 60)) AS duration_delta, pathname AS entry_page, referrer_source AS session_source,
            referrer_medium AS session_medium, '' AS session_utm_source, '' AS session_utm_medium, '' AS session_utm_campaign,
            map('plan', ['free', 'pro', 'team'][number % 3 + 1]) AS props, '' AS revenue_amount, '' AS revenue_currency, {version} AS pipeline_version,
            1 AS interactive, 1 AS sign, '{processing}' AS processing
        FROM numbers({events})
        SETTINGS max_partitions_per_insert_block = 1000",
        version = PIPELINE_VERSION,
        processing = identity(PIPELINE_VERSION, ProcessorConfig { bot_filtering: true }),
    )
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().expect("tempdir");
    let engine_dir = args.engine_dir.clone().unwrap_or_else(|| dir.path().join("engine"));
    let engine = Arc::new(Embedded::open(&engine_dir, 4).expect("engine"));
    let tenant = parse_tenants(
        "apiVersion: sightline.dev/v1alpha1\nkind: AnalyticsTenant\nmetadata: {name: bench}\nspec: {sites: {open: true}, defaultTimezone: Europe/Berlin}\n",
        "bench",
    )
    .expect("tenant")
    .remove(0);
    ops::apply_schema(engine.as_ref(), &tenant).await.expect("schema");
    let db = tenant.database();
    let held = engine
        .select(&format!("SELECT count() AS n FROM {db}.events"), &Params::new())
        .await
        .expect("count")[0]["n"]
        .as_u64()
        .unwrap_or(0);
    if held >= args.events {
        eprintln!("reusing {held} events in {}", engine_dir.display());
    } else {
        load(engine.as_ref(), &tenant, &args).await;
    }
    stored_bytes(engine.as_ref(), &db).await;
    if args.visitor_functions {
        visitor_functions(engine.as_ref(), &db).await;
    }
    query_latency(engine, tenant, &args).await;
}

/// The dataset, then the move onto the tiers as a migrated database would make it.
async fn load(engine: &Embedded, tenant: &sightline_core::spec::Tenant, args: &Args) {
    let db = tenant.database();

    let t = Instant::now();
    let chunk = 2_000_000;
    let mut done = 0;
    while done < args.events {
        let n = chunk.min(args.events - done);
        engine
            .execute(&generate_sql(&db, SITE, n, done), &Params::new())
            .await
            .expect("generate");
        done += n;
    }
    for s in 0..args.small_sites {
        // The small sites together: one statement per 100 sites keeps this quick.
        if s % 100 == 0 {
            let sites: Vec<String> = (s..(s + 100).min(args.small_sites))
                .map(|i| format!("small-{i}.example.com"))
                .collect();
            for site in sites {
                engine
                    .execute(
                        &generate_sql(&db, &site, args.small_events, 1_000_000_000 + s),
                        &Params::new(),
                    )
                    .await
                    .expect("small");
            }
        }
    }
    // The raw rows those events came from, as the collector stores them (for the bytes per
    // event of events_raw; queries never read them).
    engine
        .execute(
            &format!(
                "INSERT INTO {db}.events_raw (event_id, site_id, received_at, ts, name, url, referrer, user_agent, props, \
                 revenue_amount, revenue_currency, visitor_id, country, ingest_source) \
                 SELECT event_id, site_id, ts, ts, name, concat('https://', hostname, pathname), \
                 if(referrer_source = 'Google', 'https://www.google.com/', if(referrer_source = 'Twitter', 'https://t.co/x', '')), \
                 [{agents}][visitor_id % 3 + 1], props, '', '', visitor_id, country, 'web' FROM {db}.events \
                 SETTINGS max_partitions_per_insert_block = 1000",
                agents = [CHROME_MAC, SAFARI_IPHONE, FIREFOX_WIN].map(|a| format!("'{a}'")).join(", ")
            ),
            &Params::new(),
        )
        .await
        .expect("raw rows");
    let rows = engine
        .select(&format!("SELECT count() AS n FROM {db}.events"), &Params::new())
        .await
        .expect("count");
    eprintln!("loaded {} events in {:.0} s", rows[0]["n"], t.elapsed().as_secs_f64());
    // As a database of the hourly layout moves: the open days, then every older day rebuilt
    // from events into the quarter-hour tier, then the daily tier sealed.
    let t = Instant::now();
    let now = chrono::Utc::now();
    tiers::migrate_recent_days(engine, tenant, now)
        .await
        .expect("recent days");
    let recent = t.elapsed().as_secs_f64();
    tiers::backfill(engine, tenant, now).await.expect("backfill");
    // The next start of a writing role retires the hourly tables (before it writes).
    tiers::migrate_recent_days(engine, tenant, now)
        .await
        .expect("hourly tables retired");
    let state = tiers::read_state(engine, &db).await.expect("state");
    eprintln!(
        "moved onto the tiers in {:.0} s (open days {recent:.1} s); daily tier through {:?}, monthly tier through {:?}",
        t.elapsed().as_secs_f64(),
        state.daily_through,
        state.monthly_through
    );
    for table in Tier::all_tables() {
        engine
            .execute(&format!("OPTIMIZE TABLE {db}.{table} FINAL"), &Params::new())
            .await
            .expect("optimize");
    }
}

async fn query_latency(engine: Arc<Embedded>, tenant: sightline_core::spec::Tenant, args: &Args) {
    let secret = MasterSecret::from_bytes(b"query-bench-secret-0123456789abc".to_vec()).expect("secret");
    let registry = Arc::new(Registry::new(vec![tenant.clone()], &secret));
    let watermarks = Arc::new(Watermarks::default());
    let config = QueryConfig {
        queries_per_second_per_token: 1_000_000,
        burst_per_token: 1_000_000,
        ..QueryConfig::default()
    };
    let state = Arc::new(QueryState::new(registry, engine.clone(), watermarks.clone(), config));
    let app = sightline_query::router(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let claims = Claims {
        tenant: "bench".into(),
        site: SITE.into(),
        scope: Scope::Read,
        expires: chrono::Utc::now().timestamp() + 3600,
    };
    let token = token::issue(&secret.tenant_key("bench"), &claims);
    let client = reqwest::Client::new();
    let base = format!("http://{addr}");

    let today = chrono::Utc::now()
        .with_timezone(&chrono_tz::Europe::Berlin)
        .date_naive();
    let ninety_days = json!([(today - chrono::Days::new(89)).to_string(), today.to_string()]);
    // (name, request path, POST body or none for a GET shortcut).
    let queries: Vec<(&str, &str, Option<Value>)> = vec![
        (
            "30-day daily series",
            "/v1/sites/big.example.com/timeseries?period=30d&interval=day&metrics=visitors,pageviews,bounce_rate",
            None,
        ),
        (
            "top 10 pages, 30 days",
            "/v1/sites/big.example.com/breakdown?period=30d&property=page&limit=10&metrics=visitors,pageviews",
            None,
        ),
        (
            "12-month monthly series",
            "/v1/sites/big.example.com/timeseries?period=12mo&interval=month&metrics=visitors,pageviews",
            None,
        ),
        (
            "top 10 pages, 90 days",
            "/v1/query",
            Some(
                json!({"site_id": SITE, "metrics": ["visitors", "pageviews"], "date_range": ninety_days, "dimensions": ["page"], "pagination": {"limit": 10}}),
            ),
        ),
        (
            "top 10 sources, 12 months",
            "/v1/query",
            Some(
                json!({"site_id": SITE, "metrics": ["visitors", "visits"], "date_range": "12mo", "dimensions": ["source"], "pagination": {"limit": 10}}),
            ),
        ),
        (
            "props breakdown, 30 days (events path)",
            "/v1/query",
            Some(
                json!({"site_id": SITE, "metrics": ["visitors", "events"], "date_range": "30d", "dimensions": ["props:plan"]}),
            ),
        ),
    ];
    let send = |path: &str, body: &Option<Value>| {
        let url = format!("{base}{path}");
        let req = match body {
            Some(b) => client.post(url).json(b),
            None => client.get(url),
        };
        req.bearer_auth(&token).send()
    };

    // The first cold request of a query is also the first of its range: where the sealed
    // part is merged and kept (`sightline_query::merges`); the others read that merge.
    println!("| query | path (tier) | cold first ms | cold p50 ms | cold p99 ms | cached p50 ms | cached p99 ms |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, path, body) in &queries {
        let mut meta_path = String::new();
        let mut timings = [Vec::new(), Vec::new()];
        let mut first = f64::NAN;
        for (mode, samples) in timings.iter_mut().enumerate() {
            for _ in 0..args.samples {
                if mode == 0 {
                    // A commit for the site makes the cached answer unreachable: a cold query.
                    watermarks.committed("bench", SITE, chrono::Utc::now());
                }
                let t = Instant::now();
                let r = send(path, body).await.expect("request");
                assert!(r.status().is_success(), "{name}: {}", r.status());
                let v: Value = r.json().await.expect("json");
                samples.push(t.elapsed().as_secs_f64() * 1000.0);
                if mode == 0 && samples.len() == 1 {
                    first = samples[0];
                }
                meta_path = match v["meta"]["tier"].as_str() {
                    Some(tier) => format!("{} ({tier})", v["meta"]["path"].as_str().unwrap_or_default()),
                    None => v["meta"]["path"].as_str().unwrap_or_default().to_string(),
                };
            }
            samples.sort_by(|a, b| a.total_cmp(b));
        }
        println!(
            "| {name} | {meta_path} | {first:.1} | {:.1} | {:.1} | {:.2} | {:.2} |",
            percentile(&timings[0], 0.5),
            percentile(&timings[0], 0.99),
            percentile(&timings[1], 0.5),
            percentile(&timings[1], 0.99)
        );
    }

    // The /v1/query bodies the three GET shortcuts stand for, for the statement breakdown.
    let shortcuts = [
        json!({"site_id": SITE, "metrics": ["visitors", "pageviews", "bounce_rate"], "date_range": "30d", "dimensions": ["time:day"]}),
        json!({"site_id": SITE, "metrics": ["visitors", "pageviews"], "date_range": "30d", "dimensions": ["page"], "pagination": {"limit": 10}}),
        json!({"site_id": SITE, "metrics": ["visitors", "pageviews"], "date_range": "12mo", "dimensions": ["time:month"]}),
    ];
    let planned: Vec<(&str, Value)> = queries
        .iter()
        .enumerate()
        .map(|(i, (name, _, body))| (*name, body.clone().unwrap_or_else(|| shortcuts[i].clone())))
        .collect();
    statements(engine.as_ref(), &tenant, &planned, args.samples).await;

    for cold in [false, true] {
        let count = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(args.seconds);
        let mut tasks = Vec::new();
        for c in 0..32usize {
            let (count, client, token, base, watermarks) = (
                count.clone(),
                client.clone(),
                token.clone(),
                base.clone(),
                watermarks.clone(),
            );
            let queries = queries
                .iter()
                .map(|(_, p, b)| (p.to_string(), b.clone()))
                .collect::<Vec<_>>();
            tasks.push(tokio::spawn(async move {
                let mut i = c;
                while Instant::now() < deadline {
                    if cold {
                        watermarks.committed("bench", SITE, chrono::Utc::now());
                    }
                    let (path, body) = &queries[i % queries.len()];
                    let req = match body {
                        Some(b) => client.post(format!("{base}{path}")).json(b),
                        None => client.get(format!("{base}{path}")),
                    };
                    if let Ok(r) = req.bearer_auth(&token).send().await {
                        if r.status().is_success() && r.bytes().await.is_ok() {
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += 1;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        println!(
            "\n32 clients, the {} queries in turn, {}: {:.0} queries/s",
            queries.len(),
            if cold {
                "every answer computed (cache invalidated before each)"
            } else {
                "cache on"
            },
            count.load(Ordering::Relaxed) as f64 / args.seconds as f64
        );
    }
}

/// Where each query's time goes: its main statement as the query service plans it, run
/// straight on the engine (no HTTP, no cache, no storage-state read), and what the engine
/// estimates it reads (`EXPLAIN ESTIMATE`: parts, marks and rows per table); with
/// `SIGHTLINE_BENCH_EXPLAIN=1`, also the statement and its `EXPLAIN indexes = 1`.
async fn statements(
    engine: &Embedded,
    tenant: &sightline_core::spec::Tenant,
    queries: &[(&str, Value)],
    samples: usize,
) {
    let db = tenant.database();
    let state = tiers::read_state(engine, &db).await.expect("state");
    let storage = Storage::new(tenant, state);
    let explain = std::env::var("SIGHTLINE_BENCH_EXPLAIN").is_ok_and(|v| v == "1");
    println!("\nThe main statement of each query on the engine alone, and what it reads:\n");
    println!("| query | tier | statement p50 ms | statement p99 ms | parts | marks | rows | per table (parts/rows) |");
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |");
    for (name, body) in queries {
        let query = parse_query(body, &tenant.spec, chrono::Utc::now()).expect("query");
        let (source, sql, params) = execute::main_statement(tenant, &storage, &query).expect("plan");
        let mut times = Vec::new();
        for _ in 0..samples {
            let t = Instant::now();
            engine.select(&sql, &params).await.expect(&sql);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let estimate = engine
            .select(&format!("EXPLAIN ESTIMATE {sql}"), &params)
            .await
            .expect("explain estimate");
        let total = |k: &str| estimate.iter().map(|r| r[k].as_u64().unwrap_or(0)).sum::<u64>();
        let per_table: Vec<String> = estimate
            .iter()
            .map(|r| {
                format!(
                    "{} {}/{}",
                    r["table"].as_str().unwrap_or_default(),
                    r["parts"],
                    r["rows"]
                )
            })
            .collect();
        println!(
            "| {name} | {} | {:.1} | {:.1} | {} | {} | {} | {} |",
            source.tier().unwrap_or("events"),
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            total("parts"),
            total("marks"),
            total("rows"),
            per_table.join(", ")
        );
        if explain {
            let plan = engine
                .select(&format!("EXPLAIN indexes = 1 {sql}"), &params)
                .await
                .expect("explain");
            eprintln!("-- {name}\n{sql}\n{params:?}");
            for line in plan {
                eprintln!("{}", line["explain"].as_str().unwrap_or_default());
            }
        }
    }
    println!();
}

/// The visitor-counting functions side by side on the big site: for each, the site's
/// monthly, daily and quarter-hour states built from `events` (per site, and per page,
/// ordered like the tiers: by kind of row, then time), then the time to merge them for the
/// dashboard's ranges and the error of the counts against `uniqExact` over exactly the same
/// rows; then each function's error over many random sets of known size.
async fn visitor_functions(engine: &Embedded, db: &str) {
    // (function, parameters): `uniqCombined(14)` merges as `uniqCombinedMerge(14)(...)`.
    let functions = [
        ("uniq", ""),
        ("uniqCombined", "(14)"),
        ("uniqCombined", ""),
        ("uniqHLL12", ""),
        ("uniqTheta", ""),
    ];
    // Not every engine build has every function (uniqTheta needs the DataSketches library):
    // each is probed once, and one the engine lacks is reported with its error and left out.
    let mut available = Vec::new();
    for (f, params) in functions {
        match engine
            .select(
                &format!("SELECT {f}{params}(number) AS n FROM numbers(10)"),
                &Params::new(),
            )
            .await
        {
            Ok(_) => available.push((f, params)),
            Err(e) => {
                let reason = e.to_string();
                let reason = reason
                    .lines()
                    .last()
                    .unwrap_or_default()
                    .chars()
                    .take(200)
                    .collect::<String>();
                println!("{f}{params}: not available in this engine ({reason})\n");
            }
        }
    }
    let functions = available;
    println!("Visitor counting (big site, merged per range; error against uniqExact of the same rows):\n");
    println!("| function | tier | range | states merged | MB read | merge p50 ms | merge p99 ms | error |");
    println!("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |");
    let run = |sql: String| async move {
        let t = Instant::now();
        let rows = engine.select(&sql, &Params::new()).await.expect(&sql);
        (t.elapsed().as_secs_f64() * 1000.0, rows)
    };
    for (f, params) in &functions {
        let label = format!("{f}{params}");
        for (tier, key) in [
            ("monthly", "toDateTime(toStartOfMonth(toDate(ts, 'Europe/Berlin')))"),
            ("daily", "toDateTime(toDate(ts, 'Europe/Berlin'))"),
            ("quarter_hour", "toStartOfFifteenMinutes(ts)"),
        ] {
            let table = format!("{db}.vf_{}_{tier}", label.replace(['(', ')'], "_"));
            let _ = engine
                .execute(&format!("DROP TABLE IF EXISTS {table}"), &Params::new())
                .await;
            engine
                .execute(
                    &format!(
                        "CREATE TABLE {table} (kind UInt8, page String, t DateTime('UTC'), visitors AggregateFunction({f}{params}, UInt64)) \
                         ENGINE = AggregatingMergeTree ORDER BY (kind, t, page) SETTINGS index_granularity = 512"
                    ),
                    &Params::new(),
                )
                .await
                .expect("create");
            engine
                .execute(
                    &format!(
                        "INSERT INTO {table} SELECT 0 AS kind, '' AS page, {key} AS t, {f}State{params}(visitor_id) FROM {db}.events \
                         WHERE site_id = '{SITE}' GROUP BY t \
                         UNION ALL SELECT 1 AS kind, pathname AS page, {key} AS t, {f}State{params}(visitor_id) FROM {db}.events \
                         WHERE site_id = '{SITE}' GROUP BY t, page"
                    ),
                    &Params::new(),
                )
                .await
                .expect("fill");
            engine
                .execute(&format!("OPTIMIZE TABLE {table} FINAL"), &Params::new())
                .await
                .expect("optimize");
            // The quarter-hour tier serves up to a month; the daily and monthly tiers serve long
            // ranges (the monthly tier's rows from the first month starting in the range).
            let ranges: &[(&str, i64)] = match tier {
                "monthly" => &[("12 months", 365)],
                "daily" => &[("30 days", 30), ("90 days", 90), ("12 months", 365)],
                _ => &[("7 days", 7), ("30 days", 30)],
            };
            for (range, days) in ranges {
                let since = format!("toDateTime(toDate(now() - INTERVAL {days} DAY))");
                for top in [false, true] {
                    let (filter, sql) = if top {
                        (
                            format!("kind = 1 AND t >= {since}"),
                            format!(
                                "SELECT page, {f}Merge{params}(visitors) AS v FROM {table} WHERE kind = 1 AND t >= {since} \
                                 GROUP BY page ORDER BY v DESC, page LIMIT 10"
                            ),
                        )
                    } else {
                        (
                            format!("kind = 0 AND t >= {since}"),
                            format!("SELECT '' AS page, {f}Merge{params}(visitors) AS v FROM {table} WHERE kind = 0 AND t >= {since}"),
                        )
                    };
                    let mut times = Vec::new();
                    let mut rows = Vec::new();
                    for _ in 0..10 {
                        let (ms, r) = run(sql.clone()).await;
                        times.push(ms);
                        rows = r;
                    }
                    times.sort_by(|a, b| a.total_cmp(b));
                    let mut worst: f64 = 0.0;
                    for r in &rows {
                        let page = r["page"].as_str().unwrap_or_default();
                        let which = if page.is_empty() {
                            String::new()
                        } else {
                            format!("AND pathname = '{page}'")
                        };
                        let (_, exact) = run(format!(
                            "SELECT uniqExact(visitor_id) AS v FROM {db}.events WHERE site_id = '{SITE}' {which} AND {key} >= {since}"
                        ))
                        .await;
                        let exact = exact[0]["v"].as_f64().unwrap_or(1.0);
                        let error = (r["v"].as_f64().unwrap_or(0.0) - exact) / exact * 100.0;
                        if error.abs() > worst.abs() {
                            worst = error;
                        }
                    }
                    let (_, size) = run(format!(
                        "SELECT count() AS n, sum(byteSize(visitors)) AS bytes FROM {table} WHERE {filter}"
                    ))
                    .await;
                    println!(
                        "| {label} | {tier} | {range}, {} | {} | {:.1} | {:.1} | {:.1} | {}{worst:+.2} % |",
                        if top { "top 10 pages" } else { "site total" },
                        size[0]["n"],
                        size[0]["bytes"].as_f64().unwrap_or(0.0) / 1e6,
                        percentile(&times, 0.5),
                        percentile(&times, 0.99),
                        if top { "worst " } else { "" },
                    );
                }
            }
            let _ = engine
                .execute(&format!("DROP TABLE IF EXISTS {table}"), &Params::new())
                .await;
        }
    }
    println!();
    // The error alone, over many sets: 1,000 random sets of each size (distinct 64-bit ids
    // hashed with a seed per set), each counted once.
    println!("Visitor counting error over 1,000 random sets of each size (absolute error against the true size):\n");
    println!("| function | distinct ids | median | p95 | p99 | worst |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (f, params) in &functions {
        // One size per statement: a thousand states of one size alive at a time.
        // uniqCombined(14) keeps up to 2^10 = 1,024 distinct 32-bit hashes in a hash table
        // (exact) before it turns into HyperLogLog: 1,024 and 1,025 are either side of that.
        // Its HyperLogLog has no bias correction (the engine has a table for precision 17
        // only): linear counting up to 2.5 x 2^14 = 40,960, the raw estimate above, whose bias
        // is largest just above that switch; 30,000 to 80,000 cover it.
        for n in [
            100u64, 1_024, 1_025, 2_000, 10_000, 20_000, 30_000, 40_000, 50_000, 60_000, 80_000, 100_000,
        ] {
            let rows = engine
                .select(
                    &format!(
                        "SELECT quantileExact(0.5)(e) AS p50, quantileExact(0.95)(e) AS p95, quantileExact(0.99)(e) AS p99, max(e) AS worst \
                         FROM (SELECT abs({f}{params}(cityHash64(seed, number)) - {n}) / {n} * 100 AS e \
                               FROM (SELECT arrayJoin(range(1000)) AS seed) ARRAY JOIN range({n}) AS number GROUP BY seed)"
                    ),
                    &Params::new(),
                )
                .await
                .expect("error distribution");
            let pct = |k: &str| rows[0][k].as_f64().unwrap_or(f64::NAN);
            println!(
                "| {f}{params} | {n} | {:.2} % | {:.2} % | {:.2} % | {:.2} % |",
                pct("p50"),
                pct("p95"),
                pct("p99"),
                pct("worst")
            );
        }
    }
    println!();
}

/// Compressed bytes on disk per event, per table: what capacity planning multiplies by.
async fn stored_bytes(engine: &Embedded, db: &str) {
    let events = engine
        .select(&format!("SELECT count() AS n FROM {db}.events"), &Params::new())
        .await
        .expect("count")[0]["n"]
        .as_f64()
        .unwrap_or(1.0);
    let rows = engine
        .select(
            "SELECT table, sum(rows) AS rows, sum(data_compressed_bytes) AS compressed, sum(data_uncompressed_bytes) AS raw \
             FROM system.parts WHERE database = {db:String} AND active GROUP BY table ORDER BY table",
            &Params::new().bind("db", db),
        )
        .await
        .expect("parts");
    println!("Stored bytes ({events} events):\n");
    println!("| table | rows | compressed MB | compressed bytes per event | uncompressed bytes per event |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for r in rows {
        let compressed = r["compressed"].as_f64().unwrap_or(0.0);
        let raw = r["raw"].as_f64().unwrap_or(0.0);
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} |",
            r["table"].as_str().unwrap_or_default(),
            r["rows"],
            compressed / 1e6,
            compressed / events,
            raw / events
        );
    }
    println!();
}
