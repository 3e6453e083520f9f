//! What a hostile client can do with a write token, which every web page shows: it must not
//! lose anyone's acknowledged events, amplify one request into gigabytes, or get past the
//! site's budgets by another door (pixel, debug, GA4 MP).

use std::time::Duration;

use serde_json::{json, Value};
use sightline_core::warehouse::embedded::Embedded;
use sightline_tests::pipeline::Pipeline;
use sightline_tests::*;

const TENANTS: &str = r#"
apiVersion: sightline.dev/v1alpha1
kind: AnalyticsTenant
metadata: { name: lim }
spec:
  sites:
    allowed: [{ id: lim.example.com }]
  ga4:
    - measurementId: G-LIMIT1234
      site: lim.example.com
  limits: { eventsPerSecondPerSite: 1, burstPerSite: 4 }
---
apiVersion: sightline.dev/v1alpha1
kind: AnalyticsTenant
metadata: { name: bytes }
spec:
  sites:
    allowed: [{ id: bytes.example.com }]
  limits: { bytesPerSecondPerSite: 1000, burstBytesPerSite: 20000 }
"#;

fn start(dir: &tempfile::TempDir) -> Server {
    let tenants = dir.path().join("tenants");
    std::fs::create_dir_all(&tenants).unwrap();
    std::fs::write(tenants.join("fixture.yaml"), TENANTS_YAML).unwrap();
    std::fs::write(tenants.join("limits.yaml"), TENANTS).unwrap();
    Server::start(&dir.path().join("data"), &tenants, &[])
}

async fn collect(server: &Server, token: &str, ua: &str, body: &Value) -> reqwest::Response {
    client()
        .post(server.url("/v1/collect"))
        .bearer_auth(token)
        .header("User-Agent", ua)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Rows of a standalone server's database, read after the server stopped (the embedded
/// engine belongs to one process).
async fn stored(data: &std::path::Path, sql: &str) -> Vec<Value> {
    let wh = Embedded::open(&data.join("engine"), 1).unwrap();
    use sightline_core::warehouse::Warehouse;
    wh.select(sql, &sightline_core::warehouse::Params::new()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn one_id_on_two_sites_is_two_events_and_ids_that_cannot_be_unique_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&dir);
    let id = uuid::Uuid::new_v4().to_string();
    for site in ["shop.example.com", "blog.example.com"] {
        let r = collect(
            &server,
            &write_token("acme", site),
            CHROME_MAC,
            &json!({"id": id, "url": format!("https://{site}/same-id")}),
        )
        .await;
        assert_eq!(r.status(), 202);
        assert_eq!(r.json::<Value>().await.unwrap()["accepted"], 1);
    }
    // A retry of the first is still stored once.
    let r = collect(
        &server,
        &write_token("acme", "shop.example.com"),
        CHROME_MAC,
        &json!({"id": id, "url": "https://shop.example.com/same-id"}),
    )
    .await;
    assert_eq!(r.status(), 202);
    for nil in [
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
    ] {
        let r = collect(
            &server,
            &write_token("acme", "shop.example.com"),
            CHROME_MAC,
            &json!({"events": [{"id": nil, "url": "https://shop.example.com/nil"}, {"url": "https://shop.example.com/ok"}]}),
        )
        .await;
        assert_eq!(r.status(), 202);
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            (v["accepted"].clone(), v["rejected"][0]["field"].clone()),
            (json!(1), json!("id")),
            "{v}"
        );
    }
    server.stop();
    let rows = stored(
        &dir.path().join("data"),
        &format!("SELECT site_id FROM sightline_acme.events_raw WHERE event_id = '{id}' ORDER BY site_id"),
    )
    .await;
    assert_eq!(
        rows,
        vec![
            json!({"site_id": "blog.example.com"}),
            json!({"site_id": "shop.example.com"})
        ]
    );
    let rows = stored(
        &dir.path().join("data"),
        &format!("SELECT site_id FROM sightline_acme.events WHERE event_id = '{id}' ORDER BY site_id"),
    )
    .await;
    assert_eq!(rows.len(), 2, "both reach the processed table");
}

#[tokio::test(flavor = "multi_thread")]
async fn through_kafka_one_id_on_two_sites_is_two_events() {
    let p = Pipeline::start(50).await;
    let id = uuid::Uuid::new_v4().to_string();
    for site in ["shop.example.com", "blog.example.com", "shop.example.com"] {
        let r = collect(
            &p.collector,
            &write_token("acme", site),
            CHROME_MAC,
            &json!({"id": id, "url": format!("https://{site}/same-id")}),
        )
        .await;
        assert_eq!(r.status(), 202);
    }
    let wh = p.warehouse();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let sql = format!("SELECT count() AS n FROM sightline_acme.events_raw WHERE event_id = '{id}'");
    while count(&wh, &sql).await < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the loader did not store both sites' events"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Past what the loader needs to store a batch (50 ms), the retry is still not stored twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(count(&wh, &sql).await, 2);
    let per_site = format!("SELECT uniqExact(site_id) AS n FROM sightline_acme.events WHERE event_id = '{id}'");
    assert_eq!(count(&wh, &per_site).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_huge_user_agent_is_stored_capped_on_every_door() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&dir);
    let ua = format!("Mozilla/5.0 {}", "A".repeat(100_000));
    let events: Vec<Value> = (0..200)
        .map(|i| json!({"url": format!("https://shop.example.com/amp/{i}")}))
        .collect();
    let r = collect(
        &server,
        &write_token("acme", "shop.example.com"),
        &ua,
        &json!({ "events": events }),
    )
    .await;
    assert_eq!(r.status(), 202);
    // GA4's body user_agent, copied into its 25 events.
    let secret = write_token("acme", "shop.example.com");
    let ga4_events: Vec<Value> = (0..25).map(|i| json!({"name": format!("e{i}")})).collect();
    let r = client()
        .post(server.url("/mp/collect"))
        .query(&[("measurement_id", "G-SHOP12345"), ("api_secret", secret.as_str())])
        .json(&json!({"client_id": "9.9", "user_agent": ua, "events": ga4_events}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    server.stop();
    let rows = stored(
        &dir.path().join("data"),
        "SELECT count() AS n, max(length(user_agent)) AS longest, sum(length(user_agent)) AS total \
         FROM sightline_acme.events_raw",
    )
    .await;
    assert_eq!(rows[0]["n"], 225);
    assert_eq!(rows[0]["longest"], sightline_core::intake::MAX_USER_AGENT_BYTES as u64);
    assert!(rows[0]["total"].as_u64().unwrap() <= 225 * 1024);
}

#[tokio::test(flavor = "multi_thread")]
async fn stored_bytes_count_against_the_sites_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&dir);
    let token = write_token("bytes", "bytes.example.com");
    // Each request stores ~10 events of ~600 bytes: the 20,000-byte burst takes three.
    let body = |i: usize| {
        let events: Vec<Value> = (0..10)
            .map(|j| json!({"url": format!("https://bytes.example.com/{i}/{j}"), "props": {"blob": "b".repeat(500)}}))
            .collect();
        json!({ "events": events })
    };
    let mut statuses = Vec::new();
    let mut refused = None;
    for i in 0..6 {
        let r = collect(&server, &token, CHROME_MAC, &body(i)).await;
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
            refused = Some(r.json::<Value>().await.unwrap());
        }
    }
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    assert!((2..=4).contains(&accepted), "{statuses:?}");
    let refused = refused.expect("the byte budget refused a request");
    assert_eq!(refused["error"]["code"], "rate_limited");
    assert!(
        refused["error"]["message"].as_str().unwrap().contains("stored bytes"),
        "{refused}"
    );
    server.stop();
    let rows = stored(
        &dir.path().join("data"),
        "SELECT count() AS n FROM sightline_bytes.events_raw",
    )
    .await;
    assert_eq!(rows[0]["n"], (accepted * 10) as u64, "a refused request stores nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_door_is_charged_to_the_sites_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(&dir);
    let token = write_token("lim", "lim.example.com");
    let c = client();
    // GA4 MP: 1 event per second with a burst of 4; ten requests at once.
    let mut ga4 = Vec::new();
    for i in 0..10 {
        let r = c
            .post(server.url("/mp/collect"))
            .query(&[("measurement_id", "G-LIMIT1234"), ("api_secret", token.as_str())])
            .json(&json!({"client_id": format!("{i}.1"), "events": [{"name": "page_view",
                   "params": {"page_location": format!("https://lim.example.com/ga4/{i}")}}]}))
            .send()
            .await
            .unwrap();
        ga4.push(r.status().as_u16());
    }
    assert!(ga4.contains(&429), "GA4 MP skipped the rate limit: {ga4:?}");
    let ga4_ok = ga4.iter().filter(|s| **s == 204).count();
    assert!(ga4_ok <= 6, "{ga4:?}");
    // The debug endpoints are charged too (they store nothing, but they parse and process).
    let mut debug = Vec::new();
    for _ in 0..10 {
        let r = c
            .post(server.url("/v1/collect/debug"))
            .bearer_auth(&token)
            .json(&json!({"url": "https://lim.example.com/debug"}))
            .send()
            .await
            .unwrap();
        debug.push(r.status().as_u16());
    }
    assert!(debug.contains(&429), "/v1/collect/debug is not limited: {debug:?}");
    let mut pixel = Vec::new();
    for i in 0..10 {
        let r = c
            .get(server.url("/v1/collect"))
            .query(&[
                ("token", token.as_str()),
                ("url", &format!("https://lim.example.com/px/{i}")),
            ])
            .send()
            .await
            .unwrap();
        pixel.push(r.status().as_u16());
    }
    assert!(pixel.contains(&429), "the pixel is not limited: {pixel:?}");
    // GA4's country_id is checked like any other field: a bad one is not stored.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r = c
        .post(server.url("/debug/mp/collect"))
        .query(&[("measurement_id", "G-LIMIT1234"), ("api_secret", token.as_str())])
        .json(&json!({"client_id": "1.1", "user_location": {"country_id": "Narnia\n"},
                      "events": [{"name": "page_view", "params": {"page_location": "https://lim.example.com/where"}}]}))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        v["validationMessages"][0]["fieldPath"], "user_location.country_id",
        "{v}"
    );
    let r = c
        .post(server.url("/mp/collect"))
        .query(&[("measurement_id", "G-LIMIT1234"), ("api_secret", token.as_str())])
        .json(&json!({"client_id": "1.1", "user_location": {"country_id": "Narnia\n"},
                      "events": [{"name": "page_view", "params": {"page_location": "https://lim.example.com/where"}}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    server.stop();
    let rows = stored(
        &dir.path().join("data"),
        "SELECT pathname, country FROM sightline_lim.events WHERE pathname = '/where'",
    )
    .await;
    assert_eq!(rows, vec![json!({"pathname": "/where", "country": ""})]);
    let rows = stored(
        &dir.path().join("data"),
        "SELECT count() AS n FROM sightline_lim.events_raw WHERE url LIKE '%/ga4/%'",
    )
    .await;
    assert_eq!(rows[0]["n"], ga4_ok as u64);
}
