//! The query service around the language: watermark, cache and its invalidation, CSV,
//! realtime and its SSE stream, per-token rate limits, the read-row limit, and tenant
//! isolation on every endpoint.

use std::time::Duration;

use serde_json::{json, Value};
use sightline_tests::*;

const SITE: &str = "blog.example.com";

async fn send(c: &reqwest::Client, s: &Server, ip: &str, url: &str) {
    let r = c
        .post(s.url("/v1/collect"))
        .bearer_auth(write_token("acme", SITE))
        .header("User-Agent", CHROME_MAC)
        .header("X-Forwarded-For", ip)
        .json(&json!({"url": url, "props": {"plan": "pro"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

async fn counter(s: &Server, series: &str) -> u64 {
    metric(s, series)
        .await
        .unwrap_or_else(|| panic!("{series} not on /metrics")) as u64
}

#[tokio::test(flavor = "multi_thread")]
async fn watermark_cache_csv_realtime_and_sse() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(&data, &tenants, &["--realtime-interval-ms", "200"]);
    let c = client();
    let read = read_token("acme", SITE);
    send(&c, &server, "198.51.100.1", "https://blog.example.com/a").await;
    // Standalone serves its collector's metrics on the same /metrics.
    assert_eq!(
        counter(
            &server,
            "sightline_collector_events_total{tenant=\"acme\",outcome=\"accepted\""
        )
        .await,
        1
    );

    // The watermark: the newest committed event, in a header and in meta.
    let q =
        json!({"site_id": SITE, "metrics": ["visitors", "pageviews"], "date_range": "today", "dimensions": ["page"]});
    let r = c
        .post(server.url("/v1/query"))
        .bearer_auth(&read)
        .json(&q)
        .send()
        .await
        .unwrap();
    let header = r
        .headers()
        .get("x-sightline-watermark")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["meta"]["watermark"], header);
    let age = chrono::Utc::now()
        - chrono::DateTime::parse_from_rfc3339(&header)
            .unwrap()
            .with_timezone(&chrono::Utc);
    assert!(
        age < chrono::Duration::seconds(30),
        "watermark {header} is not the event just sent"
    );

    // The same query again is a cache hit; a commit to the site makes it a miss.
    let (hits, misses) = (
        counter(&server, "sightline_query_cache_hits_total").await,
        counter(&server, "sightline_query_cache_misses_total").await,
    );
    let again: Value = c
        .post(server.url("/v1/query"))
        .bearer_auth(&read)
        .json(&q)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["results"], v["results"]);
    assert_eq!(counter(&server, "sightline_query_cache_hits_total").await, hits + 1);
    send(&c, &server, "198.51.100.2", "https://blog.example.com/b").await;
    let fresh: Value = c
        .post(server.url("/v1/query"))
        .bearer_auth(&read)
        .json(&q)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counter(&server, "sightline_query_cache_misses_total").await, misses + 1);
    assert_eq!(
        fresh["results"].as_array().unwrap().len(),
        2,
        "the new page is in the fresh answer: {fresh}"
    );

    // CSV for the language, breakdowns and time series.
    let csv = c
        .post(server.url("/v1/query"))
        .bearer_auth(&read)
        .header("Accept", "text/csv")
        .json(&q)
        .send()
        .await
        .unwrap();
    assert_eq!(csv.headers().get("content-type").unwrap(), "text/csv; charset=utf-8");
    assert_eq!(csv.text().await.unwrap(), "page,visitors,pageviews\n/a,1,1\n/b,1,1\n");
    let get_csv = |path: String| {
        let (c, url, read) = (c.clone(), server.url(&path), read.clone());
        async move {
            c.get(url)
                .bearer_auth(read)
                .header("Accept", "text/csv")
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    };
    let csv = get_csv(format!(
        "/v1/sites/{SITE}/breakdown?period=today&property=props:plan&metrics=visitors,events"
    ))
    .await;
    assert_eq!(csv, "props:plan,visitors,events\npro,2,2\n");
    let csv = get_csv(format!(
        "/v1/sites/{SITE}/timeseries?period=today&interval=day&metrics=pageviews"
    ))
    .await;
    let today = chrono::Utc::now().date_naive();
    assert_eq!(csv, format!("date,pageviews\n{today},2\n"));

    // Realtime now, then as a stream that follows new visitors.
    let v: Value = c
        .get(server.url(&format!("/v1/sites/{SITE}/realtime")))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["visitors"], 2);
    assert_eq!(
        v["pages"],
        json!([{"page": "/a", "visitors": 1}, {"page": "/b", "visitors": 1}])
    );
    let mut stream = c
        .get(server.url(&format!("/v1/sites/{SITE}/realtime/stream?token={read}")))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.headers().get("content-type").unwrap(), "text/event-stream");
    let mut seen = Vec::new();
    let mut buffer = String::new();
    let mut sent_third = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while seen.last() != Some(&3) && tokio::time::Instant::now() < deadline {
        let Ok(Ok(Some(chunk))) = tokio::time::timeout(Duration::from_secs(5), stream.chunk()).await else {
            break;
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            if let Some(data) = event
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .filter(|_| event.contains("event: realtime"))
            {
                let v: Value = serde_json::from_str(data).unwrap();
                seen.push(v["visitors"].as_u64().unwrap());
            }
        }
        if !sent_third && !seen.is_empty() {
            send(&c, &server, "198.51.100.3", "https://blog.example.com/c").await;
            sent_third = true;
        }
    }
    assert_eq!(seen.first(), Some(&2), "{seen:?}");
    assert_eq!(seen.last(), Some(&3), "the stream shows the new visitor: {seen:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_is_served() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(&data, &tenants, &[]);
    let served = client()
        .get(server.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json")).unwrap();
    assert_eq!(served, committed);
}

#[tokio::test(flavor = "multi_thread")]
async fn limits_answer_with_clear_json_errors() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(
        &data,
        &tenants,
        &[
            "--queries-per-second-per-token",
            "1",
            "--query-burst-per-token",
            "3",
            "--query-max-rows",
            "5",
        ],
    );
    let c = client();
    for i in 0..8 {
        send(
            &c,
            &server,
            &format!("198.51.100.{i}"),
            &format!("https://blog.example.com/p{i}"),
        )
        .await;
    }
    // Reading the events table (props) touches more than 5 rows: refused, not hung.
    let read = read_token("acme", SITE);
    let r = c
        .post(server.url("/v1/query"))
        .bearer_auth(&read)
        .json(&json!({"site_id": SITE, "metrics": ["visitors"], "dimensions": ["props:plan"], "date_range": "today"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "too_many_rows");
    assert!(v["error"]["message"].as_str().unwrap().contains("5 rows"), "{v}");
    // Three more within the burst of 3 (one used above), then 429 with Retry-After.
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..4 {
        let r = c
            .get(server.url(&format!("/v1/sites/{SITE}/aggregate?period=today")))
            .bearer_auth(&read)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
            assert_eq!(r.json::<Value>().await.unwrap()["error"]["code"], "rate_limited");
        }
    }
    assert_eq!(statuses, vec![200, 200, 429, 429]);
    assert_eq!(retry_after.as_deref(), Some("1"));
    // Another token has its own budget.
    let other = token_for("acme", SITE, sightline_core::token::Scope::Read, 7200);
    let r = c
        .get(server.url(&format!("/v1/sites/{SITE}/aggregate?period=today")))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_for_site_a_cannot_read_site_b_anywhere() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(&data, &tenants, &[]);
    let c = client();
    let shop = read_token("acme", "shop.example.com");
    for path in [
        format!("/v1/sites/{SITE}/aggregate"),
        format!("/v1/sites/{SITE}/timeseries"),
        format!("/v1/sites/{SITE}/breakdown?property=props:plan"),
        format!("/v1/sites/{SITE}/breakdown?property=goal"),
        format!("/v1/sites/{SITE}/realtime"),
        format!("/v1/sites/{SITE}/realtime/stream"),
    ] {
        let r = c.get(server.url(&path)).bearer_auth(&shop).send().await.unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let r = c
            .get(server.url(&format!(
                "{path}{}token={shop}",
                if path.contains('?') { "&" } else { "?" }
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path} with ?token=");
    }
    for body in [
        json!({"site_id": SITE, "metrics": ["visitors"]}),
        json!({"site_id": SITE, "metrics": ["visitors"], "dimensions": ["props:plan"]}),
        json!({"site_id": SITE, "metrics": ["revenue"]}),
    ] {
        let r = c
            .post(server.url("/v1/query"))
            .bearer_auth(&shop)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{body}");
    }
}
