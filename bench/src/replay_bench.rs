//! Replay throughput (issue 14): one UTC day of N raw events replayed by the engine
//! (`core::warehouse::replay`: stream, process, stage, verify, swap, quarter-hour tier),
//! beside the engine's own `INSERT ... SELECT` of the same day's rows into a copy of
//! `events`, in one run on the embedded engine. The ratio is replay rows/s over
//! INSERT ... SELECT rows/s.
//!
//! Run:
//!
//! ```text
//! cargo build --release --bin replay-bench
//! ./target/release/replay-bench --rows 5000000
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, NaiveDate, TimeZone, Utc};
use clap::Parser;
use sightline_core::event::RawEvent;
use sightline_core::processor::Current;
use sightline_core::spec::parse_tenants;
use sightline_core::warehouse::embedded::Embedded;
use sightline_core::warehouse::replay::{self, CancellationToken, NoHooks, ReplayRequest};
use sightline_core::warehouse::{ops, tiers, Params, Warehouse};
use sightline_tests::{CHROME_MAC, FIREFOX_WIN, GOOGLEBOT, SAFARI_IPHONE};

#[derive(Parser)]
struct Args {
    /// Raw events in the day.
    #[arg(long, default_value_t = 1_000_000)]
    rows: u64,
    /// Distinct visitors among them.
    #[arg(long, default_value_t = 200_000)]
    visitors: u64,
    /// Days replayed at once does not apply (one day); rows per insert while loading.
    #[arg(long, default_value_t = 200_000)]
    load_batch: usize,
}

const SITE: &str = "bench.example.com";

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 10).unwrap()
}

/// Event `i` of the day: visitors browse a few pages from varied sources and devices.
fn event(i: u64, visitors: u64) -> RawEvent {
    let visitor = (i * 2_654_435_761) % visitors;
    let start = day().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let ts = start + Duration::milliseconds(((i * 86_400_000) / 5_000_000 + visitor * 37) as i64 % 86_400_000);
    let referrers = [
        "https://www.google.com/",
        "https://news.ycombinator.com/",
        "",
        "https://t.co/x",
        "https://www.bing.com/search?q=x",
        "https://bench.example.com/",
    ];
    let agents = [CHROME_MAC, SAFARI_IPHONE, FIREFOX_WIN, CHROME_MAC, GOOGLEBOT];
    RawEvent {
        event_id: uuid::Uuid::from_u64_pair(42, i),
        site_id: SITE.into(),
        received_at: ts,
        ts,
        name: if i.is_multiple_of(9) {
            "signup".into()
        } else {
            "pageview".into()
        },
        url: format!("https://{SITE}/p/{}?utm_source=news&utm_medium=email", i % 700),
        referrer: referrers[(i % 6) as usize].into(),
        user_agent: agents[(visitor % 5) as usize].into(),
        props: BTreeMap::new(),
        revenue_amount: String::new(),
        revenue_currency: String::new(),
        visitor_id: visitor + 1,
        country: "DE".into(),
        ingest_source: "web".into(),
        prev_day_visitor_id: 0,
        interactive: true,
    }
}

async fn count(wh: &dyn Warehouse, sql: &str) -> u64 {
    wh.select(sql, &Params::new()).await.expect(sql)[0]["n"]
        .as_u64()
        .expect("count")
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = Args::parse();
    // The engine logs each day's phases at debug level (RUST_LOG overrides).
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,sightline_core::warehouse::replay=debug".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    sightline_core::processor::agent::preload();
    let dir = tempfile::tempdir().expect("tempdir");
    let wh = Embedded::open(&dir.path().join("engine"), 3).expect("engine");
    let tenant = parse_tenants(
        &format!("apiVersion: sightline.dev/v1alpha1\nkind: AnalyticsTenant\nmetadata: {{name: bench}}\nspec: {{sites: {{allowed: [{{id: {SITE}}}]}}}}\n"),
        "bench",
    )
    .expect("tenant")
    .remove(0);
    let db = tenant.database();
    let later = Utc.with_ymd_and_hms(2026, 12, 20, 0, 0, 0).unwrap();
    ops::apply_schema(&wh, &tenant).await.expect("schema");
    tiers::migrate_recent_days(&wh, &tenant, later).await.expect("tiers");

    eprintln!("loading {} raw events of {} ...", args.rows, day());
    let mut i = 0;
    while i < args.rows {
        let n = (args.rows - i).min(args.load_batch as u64);
        let batch: Vec<RawEvent> = (i..i + n).map(|k| event(k, args.visitors)).collect();
        ops::insert_rows(&wh, &format!("{db}.events_raw"), &batch)
            .await
            .expect("load");
        i += n;
    }
    wh.execute(&format!("OPTIMIZE TABLE {db}.events_raw FINAL"), &Params::new())
        .await
        .expect("optimize");

    let start = day().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let request = ReplayRequest {
        now: later,
        ..ReplayRequest::new(tenant.clone(), start, start + Duration::days(1), Arc::new(Current))
    };
    let started = Instant::now();
    let report = replay::run(&wh, request, None, &NoHooks, &CancellationToken::new())
        .await
        .expect("replay");
    let replay_secs = started.elapsed().as_secs_f64();
    let rows = report.days[0].raw_rows;
    assert_eq!(rows, args.rows, "every raw row replayed");

    // The baseline: the engine copying the same day of events into a copy of the table.
    wh.execute(&format!("CREATE TABLE {db}.events_copy AS {db}.events"), &Params::new())
        .await
        .expect("copy table");
    let started = Instant::now();
    wh.execute(
        &format!(
            "INSERT INTO {db}.events_copy SELECT * FROM {db}.events WHERE toDate(ts) = '{}'",
            day()
        ),
        &Params::new(),
    )
    .await
    .expect("insert select");
    let copy_secs = started.elapsed().as_secs_f64();
    let copied = count(&wh, &format!("SELECT count() AS n FROM {db}.events_copy")).await;
    assert_eq!(copied, rows, "the copy holds the day");

    let replay_rate = rows as f64 / replay_secs;
    let copy_rate = rows as f64 / copy_secs;
    println!("| rows | replay s | replay rows/s | INSERT ... SELECT s | INSERT ... SELECT rows/s | ratio |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {rows} | {replay_secs:.1} | {replay_rate:.0} | {copy_secs:.2} | {copy_rate:.0} | {:.2} |",
        replay_rate / copy_rate
    );
}
