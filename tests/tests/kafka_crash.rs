//! Crashes of each part of the distributed path during steady load: kill -9 of the
//! collector, kill -9 of the loader, a restart of the broker; and a second loader joining
//! (a rebalance moves partitions between live loaders); a warehouse outage with a loader
//! restart inside it. Every event acknowledged with
//! 202 ends up in `events_raw` exactly once (id sets compared), a request that got an error
//! is stored whole or not at all, and `events` and the rollups hold exactly the raw rows.

use std::time::Duration;

use sightline_tests::pipeline::{Load, Pipeline};
use sightline_tests::{client, metric, Server};

async fn ready(server: &Server) -> bool {
    client()
        .get(server.ops_url("/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

async fn steady(load: &Load, at_least: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while load.acked_so_far() < at_least {
        assert!(std::time::Instant::now() < deadline, "the load did not get going");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn collector_kill_9_loses_and_doubles_nothing() {
    let mut p = Pipeline::start(50).await;
    let load = Load::start(&p.collector, 6);
    steady(&load, 100).await;
    p.collector.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.collector.restart();
    load.retarget(&p.collector);
    let before = load.acked_so_far();
    steady(&load, before + 100).await;
    let report = load.finish().await;
    assert!(!report.failed.is_empty(), "the kill interrupted requests");
    p.assert_exactly_once(&report).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn loader_kill_9_loses_and_doubles_nothing() {
    // Big batches, so the kill lands between inserting and committing.
    let mut p = Pipeline::start(400).await;
    let load = Load::start(&p.collector, 6);
    steady(&load, 150).await;
    p.loader.kill9();
    tokio::time::sleep(Duration::from_millis(300)).await;
    p.loader.restart();
    let before = load.acked_so_far();
    steady(&load, before + 150).await;
    let report = load.finish().await;
    p.assert_exactly_once(&report).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broker_restart_loses_and_doubles_nothing() {
    let p = Pipeline::start(50).await;
    let load = Load::start(&p.collector, 6);
    steady(&load, 100).await;
    // Away longer than the collector's delivery timeout (3 s): requests fail with 503.
    p.broker.stop();
    tokio::time::sleep(Duration::from_millis(4000)).await;
    p.broker.resume();
    let before = load.acked_so_far();
    steady(&load, before + 100).await;
    let report = load.finish().await;
    assert!(!report.failed.is_empty(), "requests failed while the broker was away");
    p.assert_exactly_once(&report).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loader_joining_mid_load_doubles_nothing() {
    let p = Pipeline::start(200).await;
    let load = Load::start(&p.collector, 6);
    steady(&load, 150).await;
    let mut second = p.start_another_loader("loader-1");
    let before = load.acked_so_far();
    steady(&load, before + 300).await;
    let report = load.finish().await;
    p.assert_exactly_once(&report).await;
    second.stop();
}

/// The warehouse refuses everything for a while: both loaders of the group retry the batch
/// in hand and say they are not ready; one is restarted inside the outage (it stops
/// cleanly, leaving its batch to the log, and on start waits for the warehouse instead of
/// exiting, still not ready), then takes its partitions back (static membership) once the
/// warehouse is back. Every acknowledged event is then stored exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_warehouse_outage_with_a_loader_restart_in_it_loses_and_doubles_nothing() {
    let p = Pipeline::start(200).await;
    let load = Load::start(&p.collector, 6);
    steady(&load, 150).await;
    let mut second = p.start_another_loader("loader-1");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while metric(&second, "sightline_loader_events_total").await.unwrap_or(0.0) < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the second loader never stored anything"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    p.front.set_down(true);
    for loader in [&p.loader, &second] {
        while ready(loader).await
            || metric(loader, "sightline_loader_insert_failures_total")
                .await
                .unwrap_or(0.0)
                < 1.0
        {
            assert!(
                std::time::Instant::now() < deadline,
                "a loader never failed a store in the outage"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // SIGTERM inside the outage: a clean exit, the batch in hand left to the log. (Its
    // partitions stay its own: a static member that closes does not leave the group, and
    // noida-db never expires one, so the restart takes them back.)
    second.stop();
    second.restart();
    assert!(!ready(&second).await, "a loader without its warehouse says it is ready");
    // The collector writes to the log, which is up: acknowledgements go on.
    let before = load.acked_so_far();
    steady(&load, before + 100).await;
    p.front.set_down(false);

    steady(&load, load.acked_so_far() + 100).await;
    let report = load.finish().await;
    p.assert_exactly_once(&report).await;
    assert!(
        ready(&p.loader).await && ready(&second).await,
        "the loaders are ready again after the outage"
    );
    second.stop();
}
