//! The distributed path, each part beside its baseline in one run (issue 4):
//!
//! 1. `sightline collector` events/s (`--request-events` per request, 100 by default; N connections) beside a bare rdkafka
//!    producer sending the same messages (one per request, same config) to the same broker,
//!    in alternating rounds (the median ratio is reported);
//! 2. `sightline loader` rows/s (the topic's backlog into ClickHouse over HTTP, here the
//!    libchdb front) beside libchdb's own bulk insert of the same rows (RowBinary, same
//!    batch size, in process: no HTTP, no Kafka, no processing; over up to 1M rows);
//! 3. end-to-end freshness at a steady rate: 202 from the collector to the event being
//!    counted by `sightline query`, p50/p99;
//! 4. peak and steady resident memory of the collector and the loader.
//!
//! Run:
//!
//! ```text
//! cargo build --release --bin sightline --bin pipeline-bench
//! SIGHTLINE_TEST_BROKER=tansu ./target/release/pipeline-bench --seconds 5 --rounds 3 --connections 32
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use sightline_core::spec::parse_tenants;
use sightline_core::warehouse::embedded::Embedded;
use sightline_core::warehouse::{Params, Warehouse};
use sightline_ingest::kafka::{topics, Envelope};
use sightline_tests::clickhouse_front::ClickHouseFront;
use sightline_tests::{provision, read_token, write_token, Broker, Server, CHROME_MAC};

use sightline_bench::{engine_bulk_insert, percentile, post_batches, raw_events, status_mb, Tables};

const SITE: &str = "bench.example.com";
const TENANTS: &str = "apiVersion: sightline.dev/v1alpha1
kind: AnalyticsTenant
metadata: { name: bench }
spec:
  sites: { allowed: [{ id: bench.example.com }] }
  limits: { eventsPerSecondPerSite: 100000000, burstPerSite: 100000000,
            bytesPerSecondPerSite: 4000000000, burstBytesPerSite: 4000000000 }
  kafka: { partitions: 6, replicationFactor: 1, retentionHours: 24 }
---
apiVersion: sightline.dev/v1alpha1
kind: AnalyticsTenant
metadata: { name: bulk }
spec:
  sites: { allowed: [{ id: bench.example.com }] }
  kafka: { partitions: 1, replicationFactor: 1, retentionHours: 24 }
";

#[derive(Parser)]
struct Args {
    /// Seconds of load for the collector and for the bare producer, in each round.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds of collector-then-producer; the ratio reported is the median of the rounds'
    /// (one 10 s pair moved between 0.56 and 0.82 across runs on shared cores).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent clients (HTTP connections; in-flight messages for the bare producer).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Seconds of the steady-rate freshness run.
    #[arg(long, default_value_t = 30)]
    freshness_seconds: u64,
    /// Events per second of the freshness run.
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Events per batch the loader stores (and the bulk insert uses).
    #[arg(long, default_value_t = 5_000)]
    batch: usize,
    /// Measure the collector beside the bare producer, then stop (for repeated runs of the
    /// part whose figure moves most between runs).
    #[arg(long)]
    collector_only: bool,
    /// Events per request to the collector (and per message of the bare producer): 100 for a
    /// server relaying batches, 1 for a browser's pageview.
    #[arg(long, default_value_t = 100)]
    request_events: usize,
}

/// The bare producer: the collector's producer settings, the same messages, the same
/// number in flight; returns events acknowledged.
async fn drive_producer(bootstrap: &str, seconds: u64, connections: usize, per_message: usize) -> (u64, f64) {
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("message.max.bytes", (16 * 1024 * 1024).to_string())
        .create()
        .expect("producer");
    let [topic, _] = topics("bench");
    let acked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let (producer, acked, topic) = (producer.clone(), acked.clone(), topic.clone());
            tokio::spawn(async move {
                let mut i = c;
                while Instant::now() < deadline {
                    let events = raw_events(SITE, i, per_message);
                    let key = format!("{SITE}:{}", events[0].visitor_id);
                    let payload = serde_json::to_vec(&Envelope {
                        events,
                        client_ids: Vec::new(),
                    })
                    .expect("json");
                    let record = FutureRecord::to(&topic).key(&key).payload(&payload);
                    match producer.send_result(record) {
                        Ok(delivery) => {
                            if let Ok(Ok(_)) = delivery.await {
                                acked.fetch_add(per_message as u64, Ordering::Relaxed);
                            }
                        }
                        // Queue full: wait as a client would for its 503 to pass.
                        Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                    }
                    i += connections;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let n = acked.load(Ordering::Relaxed);
    (n, n as f64 / start.elapsed().as_secs_f64())
}

async fn count(wh: &Embedded, sql: &str) -> u64 {
    wh.select(sql, &Params::new())
        .await
        .ok()
        .and_then(|r| r.first().and_then(|r| r["n"].as_u64()))
        .unwrap_or(0)
}

/// A steady `rate` events/s in requests of 10; every 500 ms one request carries a marker
/// page whose visibility in the query API is timed from its 202.
async fn freshness(collector: &Server, query: &Server, seconds: u64, rate: u64) -> (Vec<f64>, u64) {
    let client = reqwest::Client::new();
    let write = write_token("bench", SITE);
    let read = read_token("bench", SITE);
    let per_second = (rate / 10).max(1);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_second));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let latencies: Arc<Mutex<Vec<f64>>> = Arc::default();
    let sent = Arc::new(AtomicU64::new(0));
    let mut checkers = Vec::new();
    let start = Instant::now();
    let mut i: u64 = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        tick.tick().await;
        i += 1;
        let marker = i
            .is_multiple_of((per_second / 2).max(1))
            .then(|| uuid::Uuid::new_v4().to_string());
        let mut events: Vec<Value> = (0..10)
            .map(|k| json!({"url": format!("https://{SITE}/f/{}", (i * 7 + k) % 300)}))
            .collect();
        if let Some(m) = &marker {
            events[0] = json!({"url": format!("https://{SITE}/m/{m}")});
        }
        let (client, url, write, read, latencies, sent) = (
            client.clone(),
            collector.url("/v1/collect"),
            write.clone(),
            read.clone(),
            latencies.clone(),
            sent.clone(),
        );
        let query_url = marker.as_ref().map(|m| {
            query.url(&format!(
                "/v1/sites/{SITE}/aggregate?period=today&metrics=events&filters=page==/m/{m}"
            ))
        });
        checkers.push(tokio::spawn(async move {
            let r = client
                .post(url)
                .bearer_auth(&write)
                .header("User-Agent", CHROME_MAC)
                .header("X-Forwarded-For", format!("198.51.100.{}", i % 200))
                .json(&json!({ "events": events }))
                .send()
                .await;
            let Ok(r) = r else { return };
            if r.status() != 202 {
                return;
            }
            sent.fetch_add(10, Ordering::Relaxed);
            let Some(query_url) = query_url else { return };
            let acked = Instant::now();
            while acked.elapsed() < Duration::from_secs(60) {
                if let Ok(r) = client.get(&query_url).bearer_auth(&read).send().await {
                    if let Ok(v) = r.json::<Value>().await {
                        if v["results"]["events"] == 1 {
                            latencies.lock().unwrap().push(acked.elapsed().as_secs_f64());
                            return;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }));
    }
    for c in checkers {
        let _ = c.await;
    }
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(|a, b| a.total_cmp(b));
    (l, sent.load(Ordering::Relaxed))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = Args::parse();
    // The roles are started from the release `sightline` beside this binary.
    let sightline = std::env::current_exe().expect("exe").with_file_name("sightline");
    std::env::set_var("SIGHTLINE_BIN", &sightline);
    let dir = tempfile::tempdir().expect("tempdir");
    let tenants = dir.path().join("tenants");
    std::fs::create_dir_all(&tenants).expect("mkdir");
    std::fs::write(tenants.join("tenants.yaml"), TENANTS).expect("tenants");
    let data = dir.path().join("data");
    let broker = Broker::start();
    provision(&tenants, &broker.bootstrap);
    let engine = dir.path().join("clickhouse");
    let front = ClickHouseFront::start(&engine, None).await;
    let wh = Embedded::open(&engine, 1).expect("engine");
    println!(
        "broker {:?} at {}, ClickHouse front {}",
        broker.kind,
        broker.bootstrap,
        front.url()
    );

    // 1. Collector beside the bare producer.
    let mut collector = Server::start_role("collector", &data, &tenants, &["--brokers", &broker.bootstrap]);
    let (mut collector_events, mut producer_events) = (0, 0);
    let mut ratios = Vec::new();
    for round in 1..=args.rounds.max(1) {
        let (events, collector_eps) = post_batches(
            &collector.url("/v1/collect"),
            &write_token("bench", SITE),
            SITE,
            args.request_events,
            args.seconds,
            args.connections,
        )
        .await;
        let (bare_events, producer_eps) =
            drive_producer(&broker.bootstrap, args.seconds, args.connections, args.request_events).await;
        collector_events += events;
        producer_events += bare_events;
        ratios.push(collector_eps / producer_eps);
        println!(
            "round {round}: collector {collector_eps:.0} events/s, bare producer {producer_eps:.0} events/s, ratio {:.2}",
            collector_eps / producer_eps
        );
    }
    let collector_hwm = status_mb(collector.pid(), "VmHWM");
    ratios.sort_by(|a, b| a.total_cmp(b));
    println!(
        "collector: median ratio {:.2} of {} rounds (min {:.2}, max {:.2}); collector peak RSS {collector_hwm:.0} MB",
        percentile(&ratios, 0.5),
        ratios.len(),
        ratios[0],
        ratios[ratios.len() - 1],
    );
    if args.collector_only {
        collector.stop();
        return;
    }

    // 2. The loader drains the backlog both left on the topic.
    let backlog = collector_events + producer_events;
    let url = front.url();
    let batch = args.batch.to_string();
    let started = Instant::now();
    let mut loader = Server::start_role(
        "loader",
        &data,
        &tenants,
        &[
            "--brokers",
            &broker.bootstrap,
            "--clickhouse-url",
            &url,
            "--tenant",
            "bench",
            "--batch-max-events",
            &batch,
        ],
    );
    let mut first_row = None;
    let mut last = (0, Instant::now());
    loop {
        let n = count(&wh, "SELECT count() AS n FROM sightline_bench.events_raw").await;
        if n > 0 && first_row.is_none() {
            first_row = Some(Instant::now());
        }
        if n >= backlog {
            break;
        }
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(60) {
            panic!("the loader stalled at {n} of {backlog} rows");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let loaded_at = Instant::now();
    let first_row = first_row.unwrap_or(started);
    let loader_rps = backlog as f64 / (loaded_at - first_row).as_secs_f64();
    let loader_hwm = status_mb(loader.pid(), "VmHWM");
    println!(
        "loader now: RssAnon {:.0} MB, RssFile {:.0} MB, threads {}",
        status_mb(loader.pid(), "RssAnon"),
        status_mb(loader.pid(), "RssFile"),
        std::fs::read_to_string(format!("/proc/{}/status", loader.pid().unwrap_or(0)))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with("Threads"))
            .unwrap_or("")
    );
    // A rate: measured over up to 1M rows, whose encoded batches are held in memory.
    let bulk = parse_tenants(TENANTS, "bench").expect("tenants").remove(1);
    let bulk_rps = engine_bulk_insert(
        &wh,
        &bulk,
        SITE,
        backlog.min(1_000_000),
        args.batch,
        Tables::RawAndProcessed,
    )
    .await;
    println!(
        "loader {loader_rps:.0} rows/s ({backlog} rows; {:.1} s from start incl. group join), libchdb bulk insert {bulk_rps:.0} rows/s, ratio {:.2}; loader peak RSS {loader_hwm:.0} MB",
        (loaded_at - started).as_secs_f64(),
        loader_rps / bulk_rps
    );

    // 3. Freshness at a steady rate, with the query role on the same warehouse.
    let mut query = Server::start_role(
        "query",
        &data,
        &tenants,
        &[
            "--clickhouse-url",
            &url,
            "--queries-per-second-per-token",
            "100000",
            "--query-burst-per-token",
            "100000",
        ],
    );
    let (latencies, sent) = freshness(&collector, &query, args.freshness_seconds, args.rate).await;
    let steady_rss = (status_mb(collector.pid(), "VmRSS"), status_mb(loader.pid(), "VmRSS"));
    println!(
        "freshness at {:.0} events/s: {} markers, p50 {:.2} s, p99 {:.2} s, max {:.2} s; RSS at the end: collector {:.0} MB, loader {:.0} MB (peaks {:.0} / {:.0} MB)",
        sent as f64 / args.freshness_seconds as f64,
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        steady_rss.0,
        steady_rss.1,
        status_mb(collector.pid(), "VmHWM"),
        status_mb(loader.pid(), "VmHWM"),
    );
    query.stop();
    collector.stop();
    loader.stop();
}
