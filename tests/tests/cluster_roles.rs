//! The roles as the operator runs them in a cluster: the distributed roles refuse to start
//! without the tenant's secret; with `--migrations check` they wait (not ready) until the
//! schema is at their version instead of migrating; and a changed tenants file (a mounted
//! ConfigMap updated in place) is taken up without a restart while steady load gets no
//! failed answer.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use sightline_core::spec::parse_tenants;
use sightline_core::warehouse::ops;
use sightline_tests::clickhouse_front::ClickHouseFront;
use sightline_tests::pipeline::{Load, Pipeline};
use sightline_tests::*;

#[test]
fn distributed_roles_refuse_to_start_without_the_tenants_secret() {
    let (_dir, data, tenants) = kafka_fixture();
    for role in [
        &["collector", "--brokers", "127.0.0.1:1"][..],
        &["query", "--clickhouse-url", "http://127.0.0.1:1"][..],
    ] {
        let out = Command::new(binary())
            .args(role)
            .arg("--tenants")
            .arg(&tenants)
            .arg("--data")
            .arg(&data)
            .args(["--listen", "127.0.0.1:0"])
            .env_remove("SIGHTLINE_SECRET")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{role:?} started without a secret");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("SIGHTLINE_SECRET"), "{role:?}: {stderr}");
        assert!(!data.join("secret.key").exists(), "{role:?} made up a secret");
    }
}

/// Polls `url` until it answers `status` (or 30 s pass).
async fn until_status(url: &str, status: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = client().get(url).send().await.map(|r| r.status().as_u16()).ok();
        if got == Some(status) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} never answered {status} (last {got:?})"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_migrations_check_a_loader_waits_not_ready_until_the_schema_is_migrated() {
    let broker = Broker::start();
    let (dir, data, tenants) = kafka_fixture();
    provision(&tenants, &broker.bootstrap);
    let front = ClickHouseFront::start(&dir.path().join("clickhouse"), None).await;
    let loader = Server::start_role(
        "loader",
        &data,
        &tenants,
        &[
            "--clickhouse-url",
            &front.url(),
            "--brokers",
            &broker.bootstrap,
            "--migrations",
            "check",
        ],
    );
    // Alive, not ready, and it created nothing: the operator is the single migrator.
    until_status(&loader.url("/healthz"), 200).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ready = client().get(loader.url("/readyz")).send().await.unwrap().status();
    assert_eq!(ready, 503);
    let wh = sightline_core::warehouse::http::Http::new(&sightline_core::warehouse::http::HttpConfig {
        url: front.url(),
        compression: true,
        ..Default::default()
    });
    let dbs = count(
        &wh,
        "SELECT count() AS n FROM system.databases WHERE name LIKE 'sightline_%'",
    )
    .await;
    assert_eq!(dbs, 0, "a checking loader migrated");

    // The operator's migration (core's apply_schema) lets it start.
    let yaml = std::fs::read_to_string(tenants.join("tenants.yaml")).unwrap();
    for tenant in parse_tenants(&yaml, "t").unwrap() {
        ops::apply_schema(&wh, &tenant).await.unwrap();
    }
    until_status(&loader.url("/readyz"), 200).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_migrations_check_the_query_role_is_alive_but_not_ready_while_it_waits() {
    let (dir, data, tenants) = kafka_fixture();
    let front = ClickHouseFront::start(&dir.path().join("clickhouse"), None).await;
    // The ports are not announced while it waits; they are bound, so find them by asking
    // for free ones.
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (listen, ops_listen) = (format!("127.0.0.1:{}", free()), format!("127.0.0.1:{}", free()));
    let mut child = Command::new(binary())
        .args([
            "query",
            "--clickhouse-url",
            &front.url(),
            "--migrations",
            "check",
            "--listen",
            &listen,
            "--ops-listen",
            &ops_listen,
        ])
        .arg("--tenants")
        .arg(&tenants)
        .arg("--data")
        .arg(&data)
        .env("SIGHTLINE_SECRET", TEST_SECRET)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://{listen}");
    let ops = format!("http://{ops_listen}");
    // Alive (the orchestrator does not restart it) but not ready (it routes nothing to it).
    until_status(&format!("{ops}/healthz"), 200).await;
    assert_eq!(
        client().get(format!("{ops}/readyz")).send().await.unwrap().status(),
        503
    );
    let wh = sightline_core::warehouse::http::Http::new(&sightline_core::warehouse::http::HttpConfig {
        url: front.url(),
        compression: true,
        ..Default::default()
    });
    let yaml = std::fs::read_to_string(tenants.join("tenants.yaml")).unwrap();
    for tenant in parse_tenants(&yaml, "t").unwrap() {
        ops::apply_schema(&wh, &tenant).await.unwrap();
    }
    until_status(&format!("{ops}/readyz"), 200).await;
    let answer = client()
        .get(format!(
            "{base}/v1/sites/shop.example.com/aggregate?period=7d&metrics=visitors"
        ))
        .bearer_auth(read_token("acme", "shop.example.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_site_added_to_the_tenants_file_is_taken_up_under_load_without_a_failed_request() {
    let pipeline = Pipeline::start(100).await;
    let query = Server::start_role(
        "query",
        &pipeline.data,
        &pipeline.tenants,
        &[
            "--clickhouse-url",
            &pipeline.front.url(),
            "--clickhouse-user",
            sightline_tests::pipeline::USER,
            "--clickhouse-password",
            sightline_tests::pipeline::PASSWORD,
        ],
    );
    let file = pipeline.tenants.join("tenants.yaml");
    // Writes the tenants file as a mounted ConfigMap changes: a new file swapped in whole.
    let swap_in = |yaml: String| {
        let staged = pipeline.tenants.join(".tenants.yaml.new");
        std::fs::write(&staged, yaml).unwrap();
        std::fs::rename(&staged, &file).unwrap();
    };

    // Limits: a request of 550 events is over the default 500 ...
    let big = || async {
        let events: Vec<_> = (0..550)
            .map(|i| json!({"url": format!("https://shop.example.com/big/{i}")}))
            .collect();
        client()
            .post(pipeline.collector.url("/v1/collect"))
            .bearer_auth(write_token("acme", "shop.example.com"))
            .header("User-Agent", CHROME_MAC)
            .json(&json!({"events": events}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(big().await, 413);
    // ... and is taken once the tenant's limits are raised (the rates too, so the steady
    // load below is never throttled).
    let raised = std::fs::read_to_string(&file).unwrap().replace(
        "  defaultTimezone: UTC\n",
        "  defaultTimezone: UTC\n  limits: { eventsPerRequest: 600, eventsPerSecondPerSite: 1000000, burstPerSite: 1000000, \
         bytesPerSecondPerSite: 1000000000, burstBytesPerSite: 1000000000 }\n",
    );
    assert!(raised.contains("eventsPerRequest: 600"));
    swap_in(raised);
    let deadline = Instant::now() + Duration::from_secs(60);
    while big().await != 202 {
        assert!(
            Instant::now() < deadline,
            "the collector did not take the new limits within a minute"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let load = Load::start(&pipeline.collector, 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while load.acked_so_far() < 20 {
        assert!(Instant::now() < deadline, "the load did not get going");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The new site is refused before the change.
    let new_site = "new.example.com";
    let send_new = || async {
        client()
            .post(pipeline.collector.url("/v1/collect"))
            .bearer_auth(write_token("acme", new_site))
            .header("User-Agent", CHROME_MAC)
            .json(&json!({"url": format!("https://{new_site}/hello")}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    assert_ne!(send_new().await, 202);

    // Under load, a site is added.
    let yaml = std::fs::read_to_string(&file).unwrap().replace(
        "      - id: blog.example.com\n",
        &format!("      - id: blog.example.com\n      - id: {new_site}\n"),
    );
    assert!(yaml.contains(new_site));
    swap_in(yaml);
    let changed = Instant::now();

    // Within a minute: the collector takes the site, the loader stores it (a loader that
    // did not know it would dead-letter it), the query role answers for it.
    let deadline = changed + Duration::from_secs(60);
    while send_new().await != 202 {
        assert!(
            Instant::now() < deadline,
            "the collector did not take the new site within a minute"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let wh = pipeline.warehouse();
    let sql = format!("SELECT count() AS n FROM sightline_acme.events_raw WHERE site_id = '{new_site}'");
    while count(&wh, &sql).await == 0 {
        assert!(
            Instant::now() < deadline,
            "the loader did not store the new site within a minute"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let url = query.url(&format!("/v1/sites/{new_site}/aggregate?period=7d&metrics=visitors"));
    loop {
        let status = client()
            .get(&url)
            .bearer_auth(read_token("acme", new_site))
            .send()
            .await
            .unwrap()
            .status();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the query role did not take the new site within a minute ({status})"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Meanwhile every request of the steady load was answered 202.
    let report = load.finish().await;
    assert!(report.acked.len() > 20, "{} requests", report.acked.len());
    assert!(
        report.failed.is_empty(),
        "{} of {} requests failed around the reload",
        report.failed.len(),
        report.failed.len() + report.acked.len()
    );
}
