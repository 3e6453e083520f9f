//! Topic provisioning against a real Kafka-protocol broker: create, provision again without
//! changes; then grow partitions, follow retention and refuse to shrink. (Tansu 0.6 has neither
//! AlterConfigs nor CreatePartitions (UnsupportedFeature), so `scripts/test.sh` skips the
//! second test by name on that broker.)

use sightline_core::spec::parse_tenants;
use sightline_ingest::kafka::provision::{Change, Provisioner};
use sightline_ingest::kafka::topics;
use sightline_ingest::Error;
use sightline_tests::Broker;

fn tenant(partitions: u32, retention_hours: u32) -> sightline_core::spec::Tenant {
    let yaml = format!(
        "apiVersion: sightline.dev/v1alpha1\nkind: AnalyticsTenant\nmetadata: {{name: acme}}\n\
         spec: {{sites: {{open: true}}, kafka: {{partitions: {partitions}, replicationFactor: 1, retentionHours: {retention_hours}}}}}\n"
    );
    parse_tenants(&yaml, "test").unwrap().remove(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn provisioning_creates_the_topics_and_is_idempotent() {
    let broker = Broker::start();
    let p = Provisioner::new(&broker.bootstrap).unwrap();
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
        assert_eq!(state.retention_ms, Some(24 * 3_600_000));
    }

    // Provisioning the same spec again changes nothing.
    assert_eq!(p.provision(&tenant(3, 24)).await.unwrap(), vec![]);
}

#[tokio::test(flavor = "multi_thread")]
async fn partitions_grow_retention_follows_and_shrinking_is_refused() {
    let broker = Broker::start();
    let p = Provisioner::new(&broker.bootstrap).unwrap();
    let [events, dlq] = topics("acme");
    p.provision(&tenant(3, 24)).await.unwrap();

    // Growing works and keeps the topics; retention follows the spec.
    let grown = p.provision(&tenant(6, 48)).await.unwrap();
    assert!(
        grown.contains(&(events.clone(), Change::Grown { from: 3, to: 6 })),
        "{grown:?}"
    );
    assert!(
        grown.contains(&(dlq.clone(), Change::RetentionSet { hours: 48 })),
        "{grown:?}"
    );
    assert_eq!(p.describe(&events).await.unwrap().unwrap().partitions, 6);
    assert_eq!(
        p.describe(&events).await.unwrap().unwrap().retention_ms,
        Some(48 * 3_600_000)
    );

    // Shrinking is refused with a message that says why, and nothing changes.
    let err = p.provision(&tenant(2, 48)).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Shrink {
                current: 6,
                requested: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("never shrink"), "{err}");
    assert_eq!(p.describe(&events).await.unwrap().unwrap().partitions, 6);
}
