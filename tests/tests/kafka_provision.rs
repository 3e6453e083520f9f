//! Topic provisioning against a real Kafka-protocol broker: create, provision again without
//! changes; grow partitions, follow retention while a setting someone set by hand survives,
//! refuse to shrink or to change the replication factor; delete. (Tansu 0.6 has neither
//! AlterConfigs nor CreatePartitions (UnsupportedFeature), so `scripts/test.sh` skips the
//! second test by name on that broker.)

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use sightline_core::spec::parse_tenants;
use sightline_ingest::kafka::provision::{Change, ErrorClass, Provisioner, TopicSpec};
use sightline_ingest::kafka::topics;
use sightline_tests::Broker;

fn tenant(partitions: u32, retention_hours: u32) -> sightline_core::spec::Tenant {
    tenant_rf(partitions, retention_hours, 1)
}

fn tenant_rf(partitions: u32, retention_hours: u32, rf: u16) -> sightline_core::spec::Tenant {
    let yaml = format!(
        "apiVersion: sightline.dev/v1alpha1\nkind: AnalyticsTenant\nmetadata: {{name: acme}}\n\
         spec: {{sites: {{open: true}}, kafka: {{partitions: {partitions}, replicationFactor: {rf}, retentionHours: {retention_hours}}}}}\n"
    );
    parse_tenants(&yaml, "test").unwrap().remove(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioning_creates_the_topics_is_idempotent_and_deletes() {
    let broker = Broker::start();
    let p = Provisioner::new(&broker.bootstrap, &Default::default()).unwrap();
    let [events, dlq] = topics("acme");

    let first = p.provision(&tenant(3, 24)).await.unwrap();
    assert_eq!(
        first,
        vec![
            (events.clone(), Change::Created { partitions: 3 }),
            (dlq.clone(), Change::Created { partitions: 3 })
        ]
    );
    for topic in [&events, &dlq] {
        let state = p.describe(topic).await.unwrap().expect("created");
        assert_eq!(state.partitions, 3);
        assert_eq!(state.replication_factor, 1);
        assert_eq!(state.retention_ms(), Some(24 * 3_600_000));
    }

    // Provisioning the same spec again changes nothing.
    assert_eq!(p.provision(&tenant(3, 24)).await.unwrap(), vec![]);

    // Deletion removes both, and a second deletion finds nothing to do.
    let deleted = p.delete(&[events.clone(), dlq.clone()]).await.unwrap();
    assert_eq!(deleted.len(), 2, "{deleted:?}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while p.describe(&events).await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "{events} still exists");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(p.delete(&[events, dlq]).await.unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_grow_retention_follows_and_shrinking_is_refused() {
    let broker = Broker::start();
    let p = Provisioner::new(&broker.bootstrap, &Default::default()).unwrap();
    let [events, dlq] = topics("acme");
    p.provision(&tenant(3, 24)).await.unwrap();

    // Someone tunes a setting the spec does not own, by hand.
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &broker.bootstrap)
        .create()
        .unwrap();
    let retention = (24 * 3_600_000).to_string();
    let alter = AlterConfig::new(ResourceSpecifier::Topic(&events))
        .set("max.message.bytes", "2097152")
        .set("retention.ms", &retention);
    for r in admin.alter_configs(&[alter], &AdminOptions::new()).await.unwrap() {
        r.unwrap();
    }
    assert_eq!(
        p.describe(&events)
            .await
            .unwrap()
            .unwrap()
            .effective
            .get("max.message.bytes")
            .map(String::as_str),
        Some("2097152")
    );

    // Growing works and keeps the topics; retention follows the spec.
    let grown = p.provision(&tenant(6, 48)).await.unwrap();
    assert!(
        grown.contains(&(events.clone(), Change::Grown { from: 3, to: 6 })),
        "{grown:?}"
    );
    let retention_48 = BTreeMap::from([("retention.ms".to_string(), (48 * 3_600_000).to_string())]);
    assert!(
        grown.contains(&(dlq.clone(), Change::Configured { changed: retention_48 })),
        "{grown:?}"
    );
    let state = p.describe(&events).await.unwrap().unwrap();
    assert_eq!(state.partitions, 6);
    assert_eq!(state.retention_ms(), Some(48 * 3_600_000));
    // ... and the hand-set setting survived the reconcile.
    assert_eq!(
        state.effective.get("max.message.bytes").map(String::as_str),
        Some("2097152"),
        "{state:?}"
    );

    // Shrinking is refused with a message that says why, and nothing changes.
    let err = p.provision(&tenant(2, 48)).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::NotSupported, "{err}");
    assert!(err.to_string().contains("never shrink"), "{err}");
    assert_eq!(p.describe(&events).await.unwrap().unwrap().partitions, 6);

    // So is a replication-factor change.
    let err = p.provision(&tenant_rf(6, 48, 3)).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::NotSupported, "{err}");
    assert!(err.to_string().contains("replication factor"), "{err}");
}

#[test]
fn provisioning_runs_on_a_current_thread_runtime() {
    // block_in_place panics there; the metadata call must not use it.
    let broker = Broker::start();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let p = Provisioner::new(&broker.bootstrap, &Default::default()).unwrap();
        p.provision(&tenant(1, 1)).await.unwrap();
        assert_eq!(p.describe(&topics("acme")[0]).await.unwrap().unwrap().partitions, 1);
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn an_absent_broker_is_unavailable() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = Provisioner::new(&format!("127.0.0.1:{port}"), &Default::default())
        .unwrap()
        .with_timeout(std::time::Duration::from_secs(2));
    let err = p.provision(&tenant(1, 1)).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Unavailable, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_loaders_lag_is_what_their_group_has_not_committed() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use sightline_ingest::kafka::lag::group_lag;

    let broker = Broker::start();
    let topic = "sightline.lagging.events";
    let provisioner = Provisioner::new(&broker.bootstrap, &Default::default()).unwrap();
    let spec = TopicSpec {
        name: topic.into(),
        partitions: 2,
        replication_factor: 1,
        configs: Default::default(),
    };
    provisioner
        .apply(&provisioner.plan(&[spec]).await.unwrap())
        .await
        .unwrap();
    let producer: FutureProducer = sightline_ingest::kafka::client_config(&broker.bootstrap, &Default::default())
        .create()
        .unwrap();
    for i in 0..5 {
        producer
            .send(
                FutureRecord::<str, str>::to(topic).payload("e").partition(i % 2),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
    }
    let security = Default::default();
    let lag = |group: &'static str| group_lag(&broker.bootstrap, &security, group, topic, 2, Duration::from_secs(10));
    assert_eq!(
        lag("nobody-read").await.unwrap(),
        5,
        "a group that committed nothing lags by everything"
    );
    // A group that stored partition 0 up to its end lags by partition 1's events only.
    let consumer: BaseConsumer = sightline_ingest::kafka::client_config(&broker.bootstrap, &Default::default())
        .set("group.id", "half-read")
        .create()
        .unwrap();
    let mut offsets = rdkafka::TopicPartitionList::new();
    offsets
        .add_partition_offset(topic, 0, rdkafka::Offset::Offset(3))
        .unwrap();
    consumer.commit(&offsets, CommitMode::Sync).unwrap();
    assert_eq!(lag("half-read").await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replication_factor_over_the_brokers_is_refused_naming_the_spec_field() {
    // The example tenant as it ships (no kafka block: replication factor 3) on one broker.
    let broker = Broker::start();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples/tenant.yaml");
    let out = std::process::Command::new(sightline_tests::binary())
        .args(["provision", "--brokers", &broker.bootstrap, "--tenants"])
        .arg(&example)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "replication factor 3 accepted by one broker");
    assert!(
        stderr.contains("tenant demo")
            && stderr.contains("spec.kafka.replicationFactor is 3")
            && stderr.contains("replicationFactor: 1"),
        "{stderr}"
    );
}
