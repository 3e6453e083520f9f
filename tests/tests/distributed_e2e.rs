//! The distributed path end to end: `sightline collector` -> Kafka (noida-db) -> `sightline
//! loader` -> ClickHouse over HTTP (the test-support front over libchdb) -> `sightline
//! query`. The known-events scenario gives the same exact numbers as standalone; every role
//! serves its metrics and health, and stops cleanly on SIGTERM.

use sightline_core::warehouse::http::{Http, HttpConfig};
use sightline_core::warehouse::{Params, Warehouse};
use sightline_tests::clickhouse_front::ClickHouseFront;
use sightline_tests::known_events::known_events_give_exact_numbers;
use sightline_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn collector_kafka_loader_clickhouse_query_give_the_exact_numbers() {
    let broker = Broker::start();
    let (dir, data, tenants) = kafka_fixture();
    provision(&tenants, &broker.bootstrap);
    let front = ClickHouseFront::start(&dir.path().join("clickhouse"), Some(("sightline", "s3cret"))).await;
    let url = front.url();
    let ch = [
        "--clickhouse-url",
        url.as_str(),
        "--clickhouse-user",
        "sightline",
        "--clickhouse-password",
        "s3cret",
    ];
    let brokers = ["--brokers", broker.bootstrap.as_str()];
    let session_timeout = broker.kind.session_timeout_ms().to_string();
    let mut loader = Server::start_role(
        "loader",
        &data,
        &tenants,
        &[
            &ch[..],
            &brokers[..],
            &["--batch-max-wait-ms", "50", "--session-timeout-ms", &session_timeout],
        ]
        .concat(),
    );
    let mut collector = Server::start_role("collector", &data, &tenants, &brokers);
    let mut query = Server::start_role(
        "query",
        &data,
        &tenants,
        &[&ch[..], &["--freshness-poll-ms", "100"]].concat(),
    );

    known_events_give_exact_numbers(&collector, &query).await;

    // Every accepted event is in events_raw once, and processed once.
    let wh = Http::new(&HttpConfig {
        url: front.url(),
        user: Some("sightline".into()),
        password: Some("s3cret".into()),
        compression: true,
    });
    let counts = wh
        .select(
            "SELECT (SELECT count() FROM sightline_acme.events_raw) AS raw, \
                    (SELECT uniqExact(event_id) FROM sightline_acme.events_raw) AS ids, \
                    (SELECT count() FROM sightline_acme.events) AS events",
            &Params::new(),
        )
        .await
        .unwrap();
    assert_eq!(counts[0]["raw"], counts[0]["ids"], "{counts:?}");
    assert_eq!(counts[0]["raw"], counts[0]["events"], "{counts:?}");

    // Metrics and health of the collector and the loader, on their operations listeners.
    let c = client();
    let text = |s: &Server, path: &'static str| {
        let (c, url) = (c.clone(), s.ops_url(path));
        async move {
            let r = c.get(url).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let stored = counts[0]["raw"].as_u64().unwrap();
    let (status, metrics) = text(&collector, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(&format!(
            "sightline_collector_events_total{{tenant=\"acme\",outcome=\"accepted\",reason=\"\"}} {stored}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("sightline_collector_events_total{tenant=\"acme\",outcome=\"rejected\",reason=\"url\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sightline_collector_store_seconds_count{tenant=\"acme\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("route=\"/v1/collect\",status=\"202\""), "{metrics}");
    let (status, metrics) = text(&loader, "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains(&format!(
            "sightline_loader_events_total{{tenant=\"acme\",outcome=\"stored\"}} {stored}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("sightline_loader_insert_seconds_count{tenant=\"acme\"}"),
        "{metrics}"
    );
    for s in [&collector, &loader, &query] {
        assert_eq!(text(s, "/healthz").await.0, 200);
        assert_eq!(text(s, "/readyz").await.0, 200);
    }
    // The public ports serve the API only.
    for s in [&collector, &query] {
        let r = c.get(s.url("/metrics")).send().await.unwrap();
        assert_eq!(r.status(), 404, "/metrics is not on the public port");
    }

    // SIGTERM: each role drains and exits 0.
    collector.stop();
    loader.stop();
    query.stop();
}
