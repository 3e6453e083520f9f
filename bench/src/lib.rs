//! What the benchmark binaries share: the collector load generator, process memory,
//! percentiles.

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
