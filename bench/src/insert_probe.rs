//! Where the engine's insert time and memory go: the group commit's inserts (batches of
//! 5,000 events of one site, raw rows as RowBinary and processed rows as Native, as `collector-bench` stores them) into one layout
//! at a time, timed insert by insert (generating, processing and encoding the batch is not
//! timed), with the process's anonymous resident memory and the engine's allocator
//! sampled throughout. One layout per process: the engine and its allocator are the
//! process's.
//!
//!     cargo build --release --bin insert-probe
//!     ./target/release/insert-probe --layout raw
//!     ./target/release/insert-probe --layout schema
//!
//! Layouts: `raw` (a copy of `events_raw` that feeds nothing), `raw-events` (`events_raw`
//! and `events` without the quarter-hour views), `site-view` and `dims-view` (with one of
//! the two views), `schema` (the tenant's schema as it is: both views).
//!
//! `collector-bench` measures the ratios (standalone at saturation against the
//! engine's bulk insert into the schema and into `events_raw` alone); this probe splits
//! the gap between those two bulk inserts by table and view, and shows the engine's memory
//! for each layout (its tracked memory and jemalloc's summary), for the memory target.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use sightline_bench::{raw_events, status_mb};
use sightline_core::processor::session::SessionState;
use sightline_core::processor::{process, ProcessorConfig};
use sightline_core::schema::{self, Tier};
use sightline_core::spec::parse_tenants;
use sightline_core::warehouse::embedded::Embedded;
use sightline_core::warehouse::{ops, rowbinary, tiers, InsertFormat, Params, Warehouse};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Layout {
    Raw,
    RawEvents,
    SiteView,
    DimsView,
    Schema,
}

#[derive(Parser)]
struct Args {
    #[arg(long, value_enum)]
    layout: Layout,
    /// Events in all.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Events per insert (the group commit's batch).
    #[arg(long, default_value_t = 5000)]
    batch: usize,
}

const TENANT: &str = "apiVersion: sightline.dev/v1alpha1
kind: AnalyticsTenant
metadata: { name: probe }
spec:
  sites: { allowed: [{ id: bench.example.com }] }
";
const SITE: &str = "bench.example.com";

fn main() {
    // The engine as Sightline's processes run it (an explicit JE_MALLOC_CONF wins).
    sightline_core::warehouse::embedded::configure_engine_allocator();
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(probe(args));
}

async fn probe(args: Args) {
    let dir = tempfile::tempdir().expect("tempdir");
    let wh = Embedded::open(&dir.path().join("engine"), 1).expect("engine");
    let tenant = parse_tenants(TENANT, "probe").expect("tenant").remove(0);
    let db = tenant.database();
    ops::apply_schema(&wh, &tenant).await.expect("schema");
    let now = chrono::Utc::now();
    tiers::migrate_recent_days(&wh, &tenant, now).await.expect("tiers");
    tiers::backfill(&wh, &tenant, now).await.expect("tiers");
    let none = Params::new();
    let raw_table = match args.layout {
        Layout::Raw => {
            let alone = format!("{db}.events_raw_alone");
            wh.execute(
                &format!("CREATE TABLE IF NOT EXISTS {alone} AS {db}.{}", schema::RAW_TABLE),
                &none,
            )
            .await
            .expect("raw copy");
            alone
        }
        _ => format!("{db}.{}", schema::RAW_TABLE),
    };
    let drop_view = |dims: bool| format!("DROP VIEW IF EXISTS {db}.{}_mv", Tier::QuarterHour.table(dims));
    let dropped: Vec<String> = match args.layout {
        Layout::RawEvents => vec![drop_view(false), drop_view(true)],
        Layout::SiteView => vec![drop_view(true)],
        Layout::DimsView => vec![drop_view(false)],
        Layout::Raw | Layout::Schema => Vec::new(),
    };
    for sql in dropped {
        wh.execute(&sql, &none).await.expect("drop view");
    }

    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut peak: f64 = 0.0;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(status_mb(Some(std::process::id()), "RssAnon:"));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            peak
        })
    };
    let idle = status_mb(Some(std::process::id()), "RssAnon:");
    let mut sessions = SessionState::default();
    let config = ProcessorConfig { bot_filtering: true };
    let (mut raw_time, mut events_time) = (Duration::ZERO, Duration::ZERO);
    let mut done = 0;
    let mut seed = 0;
    let started = Instant::now();
    while done < args.events {
        let n = args.batch.min(args.events - done);
        let raws: Vec<_> = (0..n.div_ceil(100))
            .flat_map(|_| {
                seed += 1;
                raw_events(SITE, seed, 100)
            })
            .take(n)
            .collect();
        let events = (args.layout != Layout::Raw).then(|| {
            // As the product stores them (`ops::insert_events`): one Native block.
            sightline_core::warehouse::native::encode_events(
                &raws
                    .iter()
                    .map(|r| process(r, config, &mut sessions))
                    .collect::<Vec<_>>(),
            )
        });
        let raw = rowbinary::encode(&raws);
        let t = Instant::now();
        wh.insert(&raw_table, schema::RAW_COLUMNS, InsertFormat::RowBinary, raw)
            .await
            .expect("raw insert");
        raw_time += t.elapsed();
        if let Some(events) = events {
            let t = Instant::now();
            wh.insert(
                &format!("{db}.{}", schema::EVENTS_TABLE),
                schema::EVENT_COLUMNS,
                InsertFormat::Native,
                events,
            )
            .await
            .expect("events insert");
            events_time += t.elapsed();
        }
        done += n;
    }
    let wall = started.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let peak = sampler.await.expect("sampler");
    let tracked = wh
        .select(
            "SELECT metric, value FROM system.metrics WHERE metric IN ('MemoryTracking', 'MergesMutationsMemoryTracking')",
            &none,
        )
        .await
        .expect("metrics");
    let stats = wh
        .select("SELECT stats FROM system.jemalloc_stats", &none)
        .await
        .expect("jemalloc stats");
    let stats = stats[0]["stats"].as_str().unwrap_or_default();
    let inserts = raw_time + events_time;
    println!("| layout | events | events/s (inserts only) | µs/event into events_raw | µs/event into events | RssAnon idle MB | RssAnon peak MB | wall |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {:?} | {} | {:.0} | {:.2} | {:.2} | {idle:.0} | {peak:.0} | {:.1} s |",
        args.layout,
        done,
        done as f64 / inserts.as_secs_f64(),
        raw_time.as_secs_f64() * 1e6 / done as f64,
        events_time.as_secs_f64() * 1e6 / done as f64,
        wall.as_secs_f64()
    );
    for row in tracked {
        println!(
            "{}: {:.0} MB",
            row["metric"].as_str().unwrap_or_default(),
            row["value"].as_f64().unwrap_or(0.0) / 1e6
        );
    }
    // jemalloc's summary lines: what it holds, and for whom.
    for line in stats.lines().filter(|l| {
        l.starts_with("Allocated:")
            || l.starts_with("Background threads:")
            || l.contains("arenas[") && l.contains("assigned")
    }) {
        println!("jemalloc {line}");
    }
}
