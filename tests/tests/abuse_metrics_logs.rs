//! Metrics and logs against hostile input: metric labels come from fixed sets whatever keys
//! events carry, `/metrics` is on the operations listener only, and client strings in logs
//! are cut, rate-limited and stripped of credentials, at every level.

use serde_json::{json, Value};
use sightline_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn metric_labels_come_from_fixed_sets() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(&data, &tenants, &[]);
    let c = client();
    let token = write_token("acme", "blog.example.com");
    // 20 requests of 100 events, each with a new key holding a quote, a newline and an
    // early `# EOF`: rejected field names made 10,000 series (and a forged metric line)
    // before. Half are rejected (no url), half stored with their odd parts dropped.
    for r in 0..20 {
        let events: Vec<Value> = (0..100)
            .map(|i| {
                let evil = format!("k{r}x{i}\"}} 1\nfake_metric{{a=\"1\"}} 1\n# EOF\n");
                if i % 2 == 0 {
                    json!({evil: "x"})
                } else {
                    // Over the 64-byte key limit.
                    let key = format!("{evil}{}", "k".repeat(64));
                    json!({"url": "https://blog.example.com/", "props": {key: "x"}})
                }
            })
            .collect();
        let resp = c
            .post(server.url("/v1/collect"))
            .bearer_auth(&token)
            .header("User-Agent", CHROME_MAC)
            .json(&json!({"events": events}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["rejected"].as_array().unwrap().len(), 50, "{v}");
    }
    let text = c
        .get(server.ops_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("fake_metric"), "a forged line: {text}");
    assert_eq!(text.matches("# EOF").count(), 1);
    assert!(text.trim_end().ends_with("# EOF"));
    let rejected: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("sightline_collector_events_total{tenant=\"acme\",outcome=\"rejected\""))
        .collect();
    assert!(rejected.len() <= 2, "{rejected:?}");
    assert_eq!(
        metric(
            &server,
            "sightline_collector_events_total{tenant=\"acme\",outcome=\"rejected\",reason=\"url\"}"
        )
        .await,
        Some(1000.0)
    );
    assert_eq!(
        metric(
            &server,
            "sightline_collector_events_total{tenant=\"acme\",outcome=\"accepted\""
        )
        .await,
        Some(1000.0)
    );
    assert!(text.len() < 64 * 1024, "/metrics is {} bytes", text.len());
    // Not on the public port.
    assert_eq!(c.get(server.url("/metrics")).send().await.unwrap().status(), 404);
    assert_eq!(c.get(server.url("/healthz")).send().await.unwrap().status(), 404);
    assert_eq!(c.get(server.ops_url("/readyz")).send().await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_strings_in_logs_are_cut_rate_limited_and_free_of_credentials() {
    let (dir, data, tenants) = fixture();
    let log = dir.path().join("sightline.log");
    // Debug level: request URIs are logged too.
    let server = Server::start_logged("standalone", &data, &tenants, &[], Some((&log, "debug")));
    let c = client();
    let token = write_token("acme", "shop.example.com");
    let signature = token.rsplit('.').next().unwrap().to_string();
    // Short URIs are logged whole, but for their credentials (first: the flood below uses
    // up the request lines' share of the log).
    for _ in 0..5 {
        let r = c
            .post(server.url(&format!("/mp/collect?measurement_id=G-NOPE&api_secret={token}")))
            .json(&json!({"client_id": "1.2", "events": [{"name": "page_view"}]}))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success() || r.status().is_client_error(),
            "{}",
            r.status()
        );
    }
    // And pixels with the token in the URI.
    for i in 0..5 {
        let r = c
            .get(server.url(&format!(
                "/v1/collect?token={token}&url=https%3A%2F%2Fshop.example.com%2F{i}"
            )))
            .header("User-Agent", CHROME_MAC)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    // 60 GA4 requests with a 60,000-character measurement id and the token as api_secret:
    // 1.2 MB of WARN from 10 of them before.
    let long_id = "G".repeat(60_000);
    for _ in 0..60 {
        let r = c
            .post(server.url(&format!("/mp/collect?measurement_id={long_id}&api_secret={token}")))
            .json(&json!({"client_id": "1.2", "events": [{"name": "page_view"}]}))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success() || r.status().is_client_error(),
            "{}",
            r.status()
        );
    }
    let mut server = server;
    server.stop();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains(&signature), "a token reached the logs");
    assert!(
        text.contains("token=REDACTED") && text.contains("api_secret=REDACTED"),
        "URIs are logged, redacted"
    );
    assert!(!text.contains(&"G".repeat(1_000)), "a client string was logged whole");
    assert!(
        text.contains("were not logged"),
        "a flood of one line says how much it dropped"
    );
    assert!(text.len() < 400 * 1024, "{} bytes of logs", text.len());
}
