//! What each distributed role's `/readyz` means, and how they start: the query role is
//! ready only while its warehouse holds every tenant's schema; the collector and the loader
//! are not ready while their broker is stopped, and the collector then answers 503 at once
//! (and within its delivery timeout at worst); a loader says "listening" only once its
//! warehouse is open; loader and query refuse to start without a ClickHouse server, and
//! every role refuses a data directory another process holds; librdkafka's errors reach the
//! logs once each, without colour.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use sightline_core::spec::parse_tenants;
use sightline_core::warehouse::http::{Http, HttpConfig};
use sightline_core::warehouse::{ops, Params, Warehouse};
use sightline_tests::clickhouse_front::ClickHouseFront;
use sightline_tests::pipeline::Pipeline;
use sightline_tests::*;

/// Waits until the role's `/readyz` answers `status`.
async fn ready_becomes(server: &Server, status: u16, what: &str) {
    eventually(Duration::from_secs(60), what, || async {
        readyz(server).await == Some(status)
    })
    .await;
}

/// One event for acme's shop through `collector`: (status, seconds it took).
async fn collect(collector: &Server) -> (u16, f64) {
    let started = Instant::now();
    let status = client()
        .post(collector.url("/v1/collect"))
        .bearer_auth(write_token("acme", "shop.example.com"))
        .header("User-Agent", CHROME_MAC)
        .json(&json!({"url": "https://shop.example.com/ready"}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    (status, started.elapsed().as_secs_f64())
}

fn front_client(front: &ClickHouseFront) -> Http {
    Http::new(&HttpConfig {
        url: front.url(),
        compression: true,
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_query_role_is_ready_only_while_its_warehouse_holds_every_tenants_schema() {
    let (dir, data, tenants) = fixture();
    let front = ClickHouseFront::start(&dir.path().join("clickhouse"), None).await;
    let query = Server::start_role("query", &data, &tenants, &["--clickhouse-url", &front.url()]);
    let wh = front_client(&front);
    let yaml = std::fs::read_to_string(tenants.join("tenants.yaml")).unwrap();
    let fixture_tenants = parse_tenants(&yaml, "t").unwrap();

    // No database at all: it serves (the port is up) but is not ready.
    assert_eq!(readyz(&query).await, Some(503));
    // One tenant of two migrated: still not ready, for as long as the other is missing.
    ops::apply_schema(&wh, &fixture_tenants[0]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(readyz(&query).await, Some(503), "ready with tiny's database missing");
    ops::apply_schema(&wh, &fixture_tenants[1]).await.unwrap();
    ready_becomes(&query, 200, "ready once every tenant's schema exists").await;

    // A database dropped under it, and a warehouse outage: not ready, then ready again.
    wh.execute("DROP DATABASE sightline_tiny", &Params::new())
        .await
        .unwrap();
    ready_becomes(&query, 503, "not ready once tiny's database is gone").await;
    ops::apply_schema(&wh, &fixture_tenants[1]).await.unwrap();
    ready_becomes(&query, 200, "ready again").await;
    front.set_down(true);
    ready_becomes(&query, 503, "not ready while the warehouse does not answer").await;
    front.set_down(false);
    ready_becomes(&query, 200, "ready once it answers again").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn collector_and_loader_are_not_ready_while_their_broker_is_stopped_and_requests_fail_fast() {
    let p = Pipeline::start(100).await;
    ready_becomes(&p.collector, 200, "the collector ready").await;
    ready_becomes(&p.loader, 200, "the loader ready").await;
    assert_eq!(collect(&p.collector).await.0, 202);

    p.broker.stop();
    // The first request may come before the collector knows: it waits its delivery timeout
    // (3 s in the pipeline) at most, plus the 0.5 s grace. The 2 s beyond are for a loaded
    // test machine; before the bound it hung 12-16 s with a 10 s timeout.
    let (status, took) = collect(&p.collector).await;
    assert_eq!(status, 503);
    assert!(
        took < 3.0 + 0.5 + 2.0,
        "the first request after the broker stopped took {took} s"
    );
    ready_becomes(&p.collector, 503, "the collector not ready while its broker is stopped").await;
    ready_becomes(&p.loader, 503, "the loader not ready while its broker is stopped").await;
    // Once it knows, at once: nothing is sent that could only time out. (Generous: no
    // broker round trip is involved, 2 s is slack for a loaded machine.)
    let (status, took) = collect(&p.collector).await;
    assert_eq!(status, 503);
    assert!(
        took < 2.0,
        "a request while the broker is known to be down took {took} s"
    );

    p.broker.resume();
    ready_becomes(&p.collector, 200, "the collector ready once the broker is back").await;
    ready_becomes(&p.loader, 200, "the loader ready once the broker is back").await;
    assert_eq!(collect(&p.collector).await.0, 202);
    p.drained(2).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loader_says_listening_only_once_its_warehouse_is_open() {
    let broker = Broker::start();
    let (dir, data, tenants) = kafka_fixture();
    provision(&tenants, &broker.bootstrap);
    let front = ClickHouseFront::start(&dir.path().join("clickhouse"), None).await;
    front.set_down(true);
    let loader = Server::start_role(
        "loader",
        &data,
        &tenants,
        &["--clickhouse-url", &front.url(), "--brokers", &broker.bootstrap],
    );
    // Its operations listener answers from the start; it is neither listening nor ready.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let listening = |s: &Server| {
        s.stdout_lines()
            .iter()
            .any(|l| l.starts_with("sightline loader listening on"))
    };
    assert!(!listening(&loader), "{:?}", loader.stdout_lines());
    assert_eq!(readyz(&loader).await, Some(503));
    front.set_down(false);
    eventually(Duration::from_secs(60), "the loader says listening", || async {
        listening(&loader)
    })
    .await;
    let line = loader
        .stdout_lines()
        .into_iter()
        .find(|l| l.starts_with("sightline loader listening on"))
        .unwrap();
    assert!(
        line.contains("acme, tiny") && line.contains(&front.url()),
        "it names its tenants and its warehouse: {line}"
    );
    ready_becomes(&loader, 200, "the loader ready once its warehouse is open").await;
}

/// Runs `sightline <args>` to its end: (success, stderr).
fn run(args: &[&str], data: &std::path::Path, tenants: &std::path::Path) -> (bool, String) {
    let out = Command::new(binary())
        .args(args)
        .arg("--tenants")
        .arg(tenants)
        .arg("--data")
        .arg(data)
        .args(["--ops-listen", "127.0.0.1:0"])
        .env("SIGHTLINE_SECRET", TEST_SECRET)
        .env_remove("SIGHTLINE_CLICKHOUSE_URL")
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn roles_refuse_no_warehouse_server_and_a_data_directory_another_process_holds() {
    let (_dir, data, tenants) = kafka_fixture();
    // Loader and query without a ClickHouse server: refused, saying why and what to do.
    for args in [
        &["loader", "--brokers", "127.0.0.1:1"][..],
        &["query", "--listen", "127.0.0.1:0"][..],
    ] {
        let (ok, stderr) = run(args, &data, &tenants);
        assert!(!ok, "{args:?} started without a ClickHouse server");
        assert!(
            stderr.contains("--clickhouse-url")
                && stderr.contains("belongs to one process")
                && stderr.contains("--embedded-engine")
                && stderr.contains("sightline standalone"),
            "{args:?}: {stderr}"
        );
    }

    // A standalone server holds the data directory: every other role is refused, naming it.
    let mut standalone = Server::start(&data, &tenants, &[]);
    let holder = format!("PID {}", standalone.pid().unwrap());
    for args in [
        &["loader", "--embedded-engine", "--brokers", "127.0.0.1:1"][..],
        &["query", "--embedded-engine", "--listen", "127.0.0.1:0"][..],
        &["standalone", "--listen", "127.0.0.1:0"][..],
    ] {
        let (ok, stderr) = run(args, &data, &tenants);
        assert!(!ok, "{args:?} opened a data directory another process holds");
        assert!(
            stderr.contains("in use by another process") && stderr.contains(&holder),
            "{args:?}: {stderr}"
        );
    }

    // Once it stopped, a query role told --embedded-engine reads the directory, and is
    // ready: the standalone server created every tenant's schema there.
    standalone.stop();
    let query = Server::start_role("query", &data, &tenants, &["--embedded-engine"]);
    ready_becomes(&query, 200, "the query role on the embedded engine ready").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_outage_is_logged_once_without_colour() {
    let (dir, data, tenants) = kafka_fixture();
    // Nothing listens there: every reconnection fails.
    let nowhere = sightline_tests::readme::free_address();
    let log = dir.path().join("collector.log");
    let mut collector = Server::start_logged(
        "collector",
        &data,
        &tenants,
        &["--brokers", &nowhere],
        Some((&log, "info")),
    );
    // Several reconnection attempts (one a second at most).
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(readyz(&collector).await, Some(503));
    let (status, took) = collect(&collector).await;
    assert_eq!(status, 503);
    assert!(took < 2.0, "a request while the broker is unreachable took {took} s");
    collector.stop();

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{1b}'), "colour codes in a log file:\n{text}");
    assert!(!text.contains("log.target"), "the log crate's fields:\n{text}");
    let count = |needle: &str| text.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(count("Kafka brokers unreachable"), 1, "{text}");
    assert_eq!(count("error=BrokerTransportFailure"), 1, "{text}");
    assert!(count("error=AllBrokersDown") <= 1, "{text}");
    assert_eq!(count(" ERROR "), 0, "an unreachable broker is a warning:\n{text}");
}
