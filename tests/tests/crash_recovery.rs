//! kill -9 of `sightline standalone` under steady load, then a restart: every acknowledged
//! event is stored exactly once, nothing is half written, and queries still answer.

use std::time::Duration;

use serde_json::{json, Value};
use sightline_core::warehouse::embedded::Embedded;
use sightline_tests::pipeline::Load;
use sightline_tests::*;

/// The site `pipeline::Load` writes to.
const SITE: &str = "shop.example.com";

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_events_survive_kill_9_exactly_once() {
    let (_dir, data, tenants) = fixture();
    // Small, quick batches: many commits happen while the process is killed.
    let mut server = Server::start(
        &data,
        &tenants,
        &["--batch-max-events", "200", "--batch-max-wait-ms", "5"],
    );
    let c = client();
    let write = write_token("acme", SITE);
    // The pipeline tests' load: clients posting 10 events with their own ids, recording
    // which requests got 202.
    let load = Load::start(&server, 8);
    // Let the load run, then kill the process mid-flight.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server.kill9();
    let report = load.finish().await;
    let acked: Vec<String> = report.acked.concat();
    assert!(acked.len() > 500, "too little load before the kill: {}", acked.len());

    // Restart: start-up repair runs; queries answer; new events are accepted.
    server.restart();
    let read = read_token("acme", SITE);
    let r = c
        .get(server.url(&format!("/v1/sites/{SITE}/aggregate?period=7d&metrics=events,visitors")))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answered: Value = r.json().await.unwrap();
    let r = c
        .post(server.url("/v1/collect"))
        .bearer_auth(&write)
        .header("User-Agent", CHROME_MAC)
        .json(&json!({"url": format!("https://{SITE}/after-restart")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    server.stop();

    // Read what is stored straight from the engine, now that the server is gone.
    let wh = Embedded::open(&data.join("engine"), 1).unwrap();
    let db = "sightline_acme";
    let stored = distinct_ids(
        &wh,
        &format!("SELECT toString(event_id) AS id FROM {db}.events_raw WHERE url != 'https://{SITE}/after-restart'"),
    )
    .await;
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    // Unacknowledged requests were all or nothing: whole batches of 10 ids.
    let extra = stored.len() - acked.len();
    assert_eq!(extra % 10, 0, "a request was half stored ({extra} unacknowledged rows)");
    // Nothing half written between the raw and processed tables, nor the rollups.
    let raw = count(&wh, &format!("SELECT count() AS n FROM {db}.events_raw")).await;
    let processed = count(&wh, &format!("SELECT count() AS n FROM {db}.events")).await;
    let rolled = count(
        &wh,
        &format!("SELECT toUInt64(sum(events)) AS n FROM {db}.rollup_site_15m"),
    )
    .await;
    assert_eq!((raw, processed, rolled), (raw, raw, raw));
    // What the restarted server answered was everything stored before the new event.
    assert_eq!(answered["results"]["events"].as_u64().unwrap(), raw - 1);
}
