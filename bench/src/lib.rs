//! What the benchmark binaries share: the collector load generator, the engine's own bulk
//! insert (the baseline of the ingest benchmarks), process memory, percentiles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sightline_tests::CHROME_MAC;

/// A field of /proc/PID/status in MB (VmHWM: peak resident; VmRSS: resident now; RssAnon:
/// resident memory the process allocated, without file-backed pages such as libchdb's
/// 180 MB of mapped code). 0 when the process is gone.
pub fn status_mb(pid: Option<u32>, field: &str) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The value at quantile `p` of `sorted` (NaN when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Sends batches of `batch` events to `site` through the collector API at `url` for
/// `seconds` over `connections` keep-alive connections, 250 client addresses; returns the
/// events answered 202 and their rate per second.
pub async fn post_batches(
    url: &str,
    token: &str,
    site: &str,
    batch: usize,
    seconds: u64,
    connections: usize,
) -> (u64, f64) {
    let bodies: Vec<String> = (0..64)
        .map(|b| {
            let events: Vec<Value> = (0..batch)
                .map(|i| json!({"url": format!("https://{site}/p/{}", (b * 131 + i) % 500), "referrer": "https://www.google.com/"}))
                .collect();
            if batch == 1 {
                events[0].to_string()
            } else {
                json!({ "events": events }).to_string()
            }
        })
        .collect();
    let bodies = Arc::new(bodies);
    let acked = Arc::new(AtomicU64::new(0));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(connections)
        .build()
        .expect("client");
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..connections)
        .map(|c| {
            let (client, bodies, acked, url, token) = (
                client.clone(),
                bodies.clone(),
                acked.clone(),
                url.to_string(),
                token.to_string(),
            );
            tokio::spawn(async move {
                let mut i = c;
                while Instant::now() < deadline {
                    let r = client
                        .post(&url)
                        .bearer_auth(&token)
                        .header("Content-Type", "application/json")
                        .header("User-Agent", CHROME_MAC)
                        .header("X-Forwarded-For", format!("203.0.113.{}", i % 250))
                        .body(bodies[i % bodies.len()].clone())
                        .send()
                        .await;
                    if let Ok(r) = r {
                        if r.status() == 202 {
                            acked.fetch_add(batch as u64, Ordering::Relaxed);
                        }
                        let _ = r.bytes().await;
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

/// What the collector puts on the log for one request of `n` events to `site`: fresh ids
/// each time, 250 visitors, 500 pages.
pub fn raw_events(site: &str, seed: usize, n: usize) -> Vec<sightline_core::event::RawEvent> {
    let now = chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis()).expect("now");
    (0..n)
        .map(|i| sightline_core::event::RawEvent {
            event_id: uuid::Uuid::new_v4(),
            site_id: site.into(),
            received_at: now,
            ts: now,
            name: "pageview".into(),
            url: format!("https://{site}/p/{}", (seed * 131 + i) % 500),
            referrer: "https://www.google.com/".into(),
            user_agent: CHROME_MAC.into(),
            props: std::collections::BTreeMap::new(),
            revenue_amount: String::new(),
            revenue_currency: String::new(),
            visitor_id: (seed % 250) as u64,
            country: String::new(),
            ingest_source: "web".into(),
            prev_day_visitor_id: 0,
            interactive: true,
        })
        .collect()
}

/// What the engine's bulk insert writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tables {
    /// `events_raw`, then `events` with its views into the rollup tiers: what Sightline
    /// stores per event, without HTTP, validation, sessions or the group commit.
    RawAndProcessed,
    /// The raw events into a copy of `events_raw` that feeds nothing: the least any design
    /// that keeps the raw events must pay.
    RawOnly,
}

/// The engine's own bulk insert of `total` events of `site` for `tenant` (whose schema is
/// applied and moved onto the tiers first), in batches of `batch` encoded as the product
/// encodes them (raw rows RowBinary, processed rows Native) before the clock starts;
/// returns events per second.
pub async fn engine_bulk_insert(
    wh: &sightline_core::warehouse::embedded::Embedded,
    tenant: &sightline_core::spec::Tenant,
    site: &str,
    total: u64,
    batch: usize,
    tables: Tables,
) -> f64 {
    use sightline_core::processor::session::SessionState;
    use sightline_core::processor::{process, ProcessorConfig};
    use sightline_core::schema;
    use sightline_core::warehouse::{ops, rowbinary, tiers, InsertFormat, Params, Warehouse};

    ops::apply_schema(wh, tenant).await.expect("schema");
    let now = chrono::Utc::now();
    tiers::migrate_recent_days(wh, tenant, now).await.expect("tiers");
    tiers::backfill(wh, tenant, now).await.expect("tiers");
    let db = tenant.database();
    let raw_table = match tables {
        Tables::RawAndProcessed => format!("{db}.{}", schema::RAW_TABLE),
        Tables::RawOnly => {
            let alone = format!("{db}.events_raw_alone");
            wh.execute(
                &format!("CREATE TABLE IF NOT EXISTS {alone} AS {db}.{}", schema::RAW_TABLE),
                &Params::new(),
            )
            .await
            .expect("raw copy");
            alone
        }
    };
    let mut sessions = SessionState::default();
    let config = ProcessorConfig { bot_filtering: true };
    let mut batches = Vec::new();
    let mut left = total as usize;
    let mut seed = 0;
    while left > 0 {
        let n = left.min(batch);
        let raws: Vec<_> = (0..n.div_ceil(100))
            .flat_map(|_| {
                seed += 1;
                raw_events(site, seed, 100)
            })
            .take(n)
            .collect();
        let events = (tables == Tables::RawAndProcessed).then(|| {
            // As the product stores them (`ops::insert_events`): one Native block.
            sightline_core::warehouse::native::encode_events(
                &raws
                    .iter()
                    .map(|r| process(r, config, &mut sessions))
                    .collect::<Vec<_>>(),
            )
        });
        batches.push((rowbinary::encode(&raws), events));
        left -= n;
    }
    let start = Instant::now();
    for (raw, events) in batches {
        wh.insert(&raw_table, schema::RAW_COLUMNS, InsertFormat::RowBinary, raw)
            .await
            .expect("bulk raw");
        if let Some(events) = events {
            wh.insert(
                &format!("{db}.{}", schema::EVENTS_TABLE),
                schema::EVENT_COLUMNS,
                InsertFormat::Native,
                events,
            )
            .await
            .expect("bulk events");
        }
    }
    total as f64 / start.elapsed().as_secs_f64()
}

pub mod ua_legacy;
