//! Crashes of each part of the distributed path during steady load: kill -9 of the
//! collector, kill -9 of the loader, a restart of the broker; and a second loader joining
//! (a rebalance moves partitions between live loaders). Every event acknowledged with
//! 202 ends up in `events_raw` exactly once (id sets compared), a request that got an error
//! is stored whole or not at all, and `events` and the rollups hold exactly the raw rows.

use std::time::Duration;

use sightline_tests::pipeline::{Load, Pipeline};

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
