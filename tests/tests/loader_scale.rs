//! Loaders scaled from two to one. A loader with `--instance-id` is a static group member,
//! and a static member that stops does not leave its group: on noida-db, which never
//! expires one, its partitions would sit unconsumed for good. Here, under steady load, each
//! way of removing the departed member (`sightline remove-loader`, `--leave-on-stop`, the
//! operator after a StatefulSet scale-down) moves every partition back to the remaining
//! loader within seconds, the stalled partitions show in
//! `sightline_loader_partition_unowned_seconds` and the lag meanwhile, and every
//! acknowledged event is stored exactly once. Nothing depends on which partitions each
//! loader was given: only that the departed one held some.

use std::process::Command;
use std::time::{Duration, Instant};

use sightline_operator::apply::{loaders, Policy};
use sightline_operator::crd::AnalyticsTenant;
use sightline_operator::validate::{validate, OperatorConfig};
use sightline_tests::pipeline::{Load, Pipeline};
use sightline_tests::*;

const OWNED: &str = "sightline_loader_partitions_owned{tenant=\"acme\"}";
const UNOWNED: &str = "sightline_loader_partition_unowned_seconds{tenant=\"acme\"";
const LAG: &str = "sightline_loader_consumer_lag{tenant=\"acme\"";
/// Lag and unowned partitions read every second (5 s by default).
const FAST_LAG: &[&str] = &["--lag-interval-ms", "1000"];
/// acme's partitions (`TEST_KAFKA_SPEC`).
const PARTITIONS: f64 = 3.0;

/// Partitions of acme a loader holds (0 while it does not say).
async fn owned(loader: &Server) -> f64 {
    metric(loader, OWNED).await.unwrap_or(0.0)
}

/// Waits until `departing` holds some of acme's partitions and `staying` the others.
async fn shared(staying: &Server, departing: &Server) {
    eventually(
        Duration::from_secs(90),
        "the two loaders share the partitions",
        || async {
            let (a, b) = (owned(staying).await, owned(departing).await);
            a >= 1.0 && b >= 1.0 && a + b == PARTITIONS
        },
    )
    .await;
}

/// Stops `departing` as a StatefulSet scale-down does (SIGTERM, nothing else), then shows
/// that its partitions stall: `staying` keeps its share, reports those partitions unowned
/// for a few seconds, and their lag.
async fn departs_and_stalls(staying: &Server, departing: &mut Server) {
    departing.stop();
    eventually(
        Duration::from_secs(30),
        "the departed loader's partitions show as unowned",
        || async {
            let unowned = metric_samples(staying, UNOWNED).await;
            unowned.len() == PARTITIONS as usize && unowned.iter().any(|(_, seconds)| *seconds >= 3.0)
        },
    )
    .await;
    assert!(
        owned(staying).await < PARTITIONS,
        "the remaining loader took every partition without a removal: the broker expired a static member"
    );
    let lag = metric_samples(staying, LAG).await;
    assert_eq!(lag.len(), PARTITIONS as usize, "lag of every partition: {lag:?}");
    assert!(
        lag.iter().any(|(_, l)| *l > 0.0),
        "the stalled partitions' lag: {lag:?}"
    );
}

/// Waits until `staying` holds every partition and reports none unowned; returns how long it
/// took (printed: "within seconds" is the claim, the assertion's bound is generous).
async fn taken_over(staying: &Server, since: Instant) -> Duration {
    eventually(Duration::from_secs(60), "every partition consumed again", || async {
        owned(staying).await == PARTITIONS
            && metric_samples(staying, UNOWNED)
                .await
                .iter()
                .all(|(_, seconds)| *seconds == 0.0)
    })
    .await;
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_departed_static_loader_is_removed_and_its_partitions_move_at_once() {
    let p = Pipeline::start_with(100, FAST_LAG).await;
    let load = Load::start(&p.collector, 2);

    // 1. `sightline remove-loader` after a loader stopped (by hand, or a pod scaled away).
    let mut second = p.start_loader_with("loader-1", FAST_LAG);
    shared(&p.loader, &second).await;
    // Every loader exports every partition's lag, not only the ones it holds.
    eventually(
        Duration::from_secs(30),
        "lag of every partition on each loader",
        || async { metric_samples(&second, LAG).await.len() == PARTITIONS as usize },
    )
    .await;
    departs_and_stalls(&p.loader, &mut second).await;
    let removed = Instant::now();
    let out = Command::new(binary())
        .args([
            "remove-loader",
            "--brokers",
            &p.broker.bootstrap,
            "--instance-id",
            "loader-1",
            "--tenants",
        ])
        .arg(&p.tenants)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        stdout.contains("loader-1.acme removed from sightline.acme.loader")
            && stdout.contains("loader-1.tiny removed from sightline.tiny.loader"),
        "{stdout}"
    );
    let took = taken_over(&p.loader, removed).await;
    println!("remove-loader: every partition consumed again {took:?} after the removal");
    // A second removal finds no such member, and says so without failing.
    let again = Command::new(binary())
        .args([
            "remove-loader",
            "--brokers",
            &p.broker.bootstrap,
            "--instance-id",
            "loader-1",
            "--tenants",
        ])
        .arg(&p.tenants)
        .output()
        .unwrap();
    assert!(again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("loader-1.acme was not a member of sightline.acme.loader"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    // 2. A loader stopped for good with --leave-on-stop removes itself on SIGTERM.
    let mut third = p.start_loader_with("loader-2", &[FAST_LAG, &["--leave-on-stop"]].concat());
    shared(&p.loader, &third).await;
    let stopped = Instant::now();
    third.stop();
    let took = taken_over(&p.loader, stopped).await;
    println!("--leave-on-stop: every partition consumed again {took:?} after SIGTERM");

    // 3. The operator, once a loader StatefulSet's scale-down from 2 to 1 is done: the pod
    // of ordinal 1 is gone, its membership is removed.
    let mut pod = p.start_loader_with("acme-loader-1", FAST_LAG);
    shared(&p.loader, &pod).await;
    departs_and_stalls(&p.loader, &mut pod).await;
    let tenant: AnalyticsTenant = serde_yaml::from_str(
        "apiVersion: sightline.dev/v1alpha1\nkind: AnalyticsTenant\nmetadata: { name: acme, uid: u1 }\n\
         spec:\n  sites: { allowed: [{ id: shop.example.com }] }\n\
         \x20 kafka: { partitions: 3, replicationFactor: 1, retentionHours: 24 }\n\
         \x20 ingest: { loader: { replicas: 1 } }\n",
    )
    .unwrap();
    let config = OperatorConfig {
        brokers: p.broker.bootstrap.clone(),
        ..OperatorConfig::example("analytics")
    };
    let validated = validate(&tenant, &config).unwrap();
    // Still scaling down (two pods): nothing is removed yet, a pod stopping could rejoin.
    let write = Policy {
        write: true,
        repair: true,
    };
    loaders::retire(&validated, Some(2), write).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(owned(&p.loader).await < PARTITIONS, "removed while the scale-down ran");
    // A paused tenant writes nothing, this included.
    loaders::retire(&validated, Some(1), Policy { write: false, ..write }).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        owned(&p.loader).await < PARTITIONS,
        "removed while the tenant was paused"
    );
    let retired = Instant::now();
    loaders::retire(&validated, Some(1), write).await;
    let took = taken_over(&p.loader, retired).await;
    println!("operator: every partition consumed again {took:?} after the scale-down was done");

    // Through all of it every acknowledged event was stored, once.
    while load.acked_so_far() < 50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = load.finish().await;
    p.assert_exactly_once(&report).await;
}
