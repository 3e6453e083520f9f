//! Streams and caches: every realtime update costs its token a query, streams are bounded
//! per token and per tenant, one snapshot per site serves all its streams, and the answer
//! cache weighs what it really holds.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sightline_core::token::Scope;
use sightline_tests::*;

const SITE: &str = "blog.example.com";

/// A realtime stream of `SITE`; the refusal's status and body when refused.
async fn open_stream(c: &reqwest::Client, s: &Server, token: &str) -> Result<reqwest::Response, (u16, Value)> {
    open_stream_of(c, s, SITE, token).await
}

async fn open_stream_of(
    c: &reqwest::Client,
    s: &Server,
    site: &str,
    token: &str,
) -> Result<reqwest::Response, (u16, Value)> {
    let r = c
        .get(s.url(&format!("/v1/sites/{site}/realtime/stream?token={token}")))
        .send()
        .await
        .unwrap();
    if r.status().is_success() {
        Ok(r)
    } else {
        let status = r.status().as_u16();
        Err((status, r.json().await.unwrap_or(Value::Null)))
    }
}

/// Reads a stream until it ends or `limit` passes: the `realtime` updates and the `error`
/// events it sent, and whether it ended.
async fn read_stream(r: &mut reqwest::Response, limit: Duration) -> (usize, Vec<String>, bool) {
    let deadline = Instant::now() + limit;
    let mut text = String::new();
    let ended = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, r.chunk()).await {
            Err(_) => break false,
            Ok(Ok(Some(chunk))) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Ok(Ok(None)) | Ok(Err(_)) => break true,
        }
    };
    let updates = text.matches("event: realtime").count();
    let errors = text
        .split("event: error\n")
        .skip(1)
        .map(|e| {
            e.lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("data: ")
                .to_string()
        })
        .collect();
    (updates, errors, ended)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_update_costs_its_token_a_query() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(
        &data,
        &tenants,
        &[
            "--realtime-interval-ms",
            "100",
            "--queries-per-second-per-token",
            "2",
            "--query-burst-per-token",
            "5",
        ],
    );
    let c = client();
    let token = read_token("acme", SITE);
    // 10 updates a second against 2 queries a second: the bucket of 5 runs dry within a
    // second or two, and the stream says so and ends (it ran forever on one charge before).
    let mut stream = open_stream(&c, &server, &token).await.expect("opens");
    let started = Instant::now();
    let (updates, errors, ended) = read_stream(&mut stream, Duration::from_secs(10)).await;
    assert!(ended, "the stream ended");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    assert!((4..=12).contains(&updates), "{updates} updates before the rate ran out");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let error: Value = serde_json::from_str(&errors[0]).unwrap();
    assert_eq!(error["error"]["code"], "rate_limited");
    assert_eq!(error["error"]["parameter"], "token");
    // The same bucket as the token's queries.
    let r = c
        .get(server.url(&format!("/v1/sites/{SITE}/aggregate?period=today")))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_are_bounded_and_share_one_snapshot_per_site() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(
        &data,
        &tenants,
        &[
            "--realtime-interval-ms",
            "200",
            "--realtime-streams-per-token",
            "2",
            "--realtime-streams-per-tenant",
            "3",
        ],
    );
    let c = client();
    // Tokens differ by their expiry; each is its own token.
    let t1 = token_for("acme", SITE, Scope::Read, 3600);
    let t2 = token_for("acme", SITE, Scope::Read, 3601);
    let t3 = token_for("acme", "shop.example.com", Scope::Read, 3602);
    let mut a = open_stream(&c, &server, &t1).await.expect("first of t1");
    let mut b = open_stream(&c, &server, &t1).await.expect("second of t1");
    let (status, v) = open_stream(&c, &server, &t1).await.expect_err("a third of t1");
    assert_eq!(status, 429);
    assert_eq!(v["error"]["code"], "too_many_streams");
    assert!(v["error"]["message"].as_str().unwrap().contains("token"), "{v}");
    let mut d = open_stream(&c, &server, &t2).await.expect("t2: the tenant's third");
    let (status, v) = open_stream_of(&c, &server, "shop.example.com", &t3)
        .await
        .expect_err("a fourth of the tenant");
    assert_eq!(status, 429);
    assert!(v["error"]["message"].as_str().unwrap().contains("tenant"), "{v}");

    // Three streams of one site for two seconds: one snapshot per interval serves them all.
    let before = metric(&server, "sightline_query_realtime_snapshots_total")
        .await
        .unwrap_or(0.0);
    let (ua, ub, ud) = tokio::join!(
        read_stream(&mut a, Duration::from_secs(2)),
        read_stream(&mut b, Duration::from_secs(2)),
        read_stream(&mut d, Duration::from_secs(2)),
    );
    let updates = ua.0 + ub.0 + ud.0;
    let computed = metric(&server, "sightline_query_realtime_snapshots_total")
        .await
        .unwrap()
        - before;
    assert!(updates >= 15, "{updates} updates in 2 s from 3 streams");
    assert!(
        computed <= (updates as f64) / 2.0,
        "{computed} snapshots for {updates} updates: not shared"
    );
    assert_eq!(metric(&server, "sightline_query_realtime_streams").await, Some(3.0));

    // A closed stream frees its place (the server sees it closed at its next update).
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_stream_of(&c, &server, "shop.example.com", &t3).await.is_err() {
        assert!(Instant::now() < deadline, "the place of a closed stream was not freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread")]
async fn the_answer_cache_weighs_long_strings_as_they_are() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(&data, &tenants, &["--query-cache-mib", "8"]);
    let c = client();
    // 2,000 pages of 2 KB paths: one breakdown by page is a 4 MB answer.
    let write = write_token("acme", SITE);
    for batch in 0..5 {
        let events: Vec<Value> = (0..400)
            .map(|i| json!({"url": format!("https://{SITE}/{batch}/{i}/{}", "long-segment/".repeat(150))}))
            .collect();
        let r = c
            .post(server.url("/v1/collect"))
            .bearer_auth(&write)
            .header("User-Agent", CHROME_MAC)
            .json(&json!({"events": events}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    }
    let read = read_token("acme", SITE);
    let pid = server.pid().unwrap();
    // Warm up (engine caches, allocator), then measure.
    let query = |limit: u32| {
        json!({"site_id": SITE, "metrics": ["visitors"], "date_range": "today", "dimensions": ["page"],
            "pagination": {"limit": limit}})
    };
    for limit in [9_990, 9_991] {
        let r = c
            .post(server.url("/v1/query"))
            .bearer_auth(&read)
            .json(&query(limit))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let start = rss(pid);
    let cap = 8 * 1024 * 1024;
    // 60 distinct queries (their limits differ), each a 4 MB answer: 240 MB if kept.
    for i in 0..60u32 {
        let r = c
            .post(server.url("/v1/query"))
            .bearer_auth(&read)
            .json(&query(10_000 - i))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["results"].as_array().unwrap().len(), 2_000);
        let held = metric(&server, "sightline_query_cache_bytes").await.unwrap();
        assert!(held <= cap as f64, "the cache holds {held} bytes, over its {cap}");
    }
    let grown = rss(pid).saturating_sub(start);
    eprintln!("resident memory grew {} MB over 60 answers", grown / (1024 * 1024));
    // The cap plus transient buffers of one answer at a time; 100 MB leaves room for the
    // allocator and the engine, and is far below the 240 MB that unweighed strings held.
    assert!(
        grown < 100 * 1024 * 1024,
        "resident memory grew {} MB",
        grown / (1024 * 1024)
    );
}
