//! Against a real API server: what the generated CRD schema and its CEL rules refuse, so
//! `kubectl apply` refuses what the operator would; and a tenant reconciled by a running
//! operator to Ready. Ignored by default (no cluster in CI); `e2e/run.sh` creates a kind
//! cluster and runs them.

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use sightline_operator::crd::AnalyticsTenant;
use sightline_operator::reprocess::crd::Reprocess;

fn tenant(name: &str, spec: serde_json::Value) -> AnalyticsTenant {
    serde_json::from_value(json!({
        "apiVersion": "sightline.dev/v1alpha1",
        "kind": "AnalyticsTenant",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a tenant")
}

/// Creating `spec` fails with a message containing `expected`.
async fn refused(api: &Api<AnalyticsTenant>, name: &str, spec: serde_json::Value, expected: &str) {
    match api.create(&PostParams::default(), &tenant(name, spec)).await {
        Ok(_) => panic!("{name} was admitted"),
        Err(e) => assert!(e.to_string().contains(expected), "{name}: {e}"),
    }
}

/// A Reprocess's spec may change only in `approvedPlanHash` (the CEL transition rule the
/// operator generates): approving is an edit, every other change a refusal.
#[tokio::test]
#[ignore = "needs a Kubernetes cluster: run e2e/run.sh"]
async fn the_api_server_refuses_what_the_operator_would_of_a_reprocess_but_its_approval() {
    let client = sightline_e2e::client().await;
    sightline_e2e::install_crd(&client).await;
    let api: Api<Reprocess> = Api::namespaced(client, "default");
    let _ = api.delete("e2e-approval", &DeleteParams::default()).await;
    let rp: Reprocess = serde_json::from_value(json!({
        "apiVersion": "sightline.dev/v1alpha1", "kind": "Reprocess",
        "metadata": {"name": "e2e-approval"},
        "spec": {"tenantRef": "e2e", "from": "2026-11-01", "to": "2026-11-08", "approval": "Manual"},
    }))
    .expect("a Reprocess");
    api.create(&PostParams::default(), &rp).await.expect("admitted");
    let merge = |spec: serde_json::Value| Patch::Merge(json!({"spec": spec}));
    for hash in ["a", "b"] {
        api.patch(
            "e2e-approval",
            &PatchParams::default(),
            &merge(json!({"approvedPlanHash": hash.repeat(64)})),
        )
        .await
        .expect("approvedPlanHash may change, more than once");
    }
    for (change, expected) in [
        (
            json!({"to": "2026-11-09"}),
            "spec is immutable but for approvedPlanHash",
        ),
        (
            json!({"approval": "Automatic"}),
            "spec is immutable but for approvedPlanHash",
        ),
        (
            json!({"sites": ["shop.example.com"]}),
            "spec is immutable but for approvedPlanHash",
        ),
        (
            json!({"maxStallRestarts": 5}),
            "spec is immutable but for approvedPlanHash",
        ),
        (json!({"approvedPlanHash": "not-a-hash"}), "approvedPlanHash"),
    ] {
        let e = api
            .patch("e2e-approval", &PatchParams::default(), &merge(change.clone()))
            .await
            .expect_err("refused");
        assert!(e.to_string().contains(expected), "{change}: {e}");
    }
    let _ = api.delete("e2e-approval", &DeleteParams::default()).await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster: run e2e/run.sh"]
async fn the_api_server_refuses_what_the_operator_would() {
    let client = sightline_e2e::client().await;
    sightline_e2e::install_crd(&client).await;
    let api: Api<AnalyticsTenant> = Api::all(client);
    refused(
        &api,
        "bad-site",
        json!({"sites": {"allowed": [{"id": "bad site"}]}}),
        "sites.allowed[0].id",
    )
    .await;
    refused(
        &api,
        "no-sites",
        json!({"sites": {"open": false}}),
        "no site could send events",
    )
    .await;
    refused(
        &api,
        "too-many-loaders",
        json!({"sites": {"open": true}, "kafka": {"partitions": 2}, "ingest": {"loader": {"replicas": 3}}}),
        "may not exceed kafka.partitions",
    )
    .await;
    refused(
        &api,
        "bad-goal",
        json!({"sites": {"open": true}, "goals": [{"name": "g"}]}),
        "either event",
    )
    .await;
    refused(&api, "Bad_Name", json!({"sites": {"open": true}}), "metadata.name").await;

    // The database cannot change once set.
    let _ = api.delete("immutable", &DeleteParams::default()).await;
    api.create(
        &PostParams::default(),
        &tenant(
            "immutable",
            json!({"sites": {"open": true}, "clickhouse": {"database": "first_db"}}),
        ),
    )
    .await
    .expect("a valid tenant is admitted");
    let change = json!({"apiVersion": "sightline.dev/v1alpha1", "kind": "AnalyticsTenant",
        "spec": {"sites": {"open": true}, "clickhouse": {"database": "second_db"}}});
    let e = api
        .patch(
            "immutable",
            &PatchParams::apply("sightline-e2e").force(),
            &Patch::Apply(&change),
        )
        .await
        .expect_err("the database changed");
    assert!(e.to_string().contains("clickhouse.database cannot change"), "{e}");
    let _ = api.delete("immutable", &DeleteParams::default()).await;
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the operator, Kafka and ClickHouse: run e2e/run.sh --full"]
async fn a_tenant_becomes_ready_and_is_collected_with_its_children() {
    let client = sightline_e2e::client().await;
    sightline_e2e::install_crd(&client).await;
    let api: Api<AnalyticsTenant> = Api::all(client.clone());
    let _ = api.delete("e2e-shop", &DeleteParams::default()).await;
    api.create(
        &PostParams::default(),
        &tenant(
            "e2e-shop",
            json!({
                "sites": {"allowed": [{"id": "shop.example.com"}]},
                "kafka": {"partitions": 2, "replicationFactor": 1, "retentionHours": 1},
                "ingest": {"collector": {"replicas": 1}, "query": {"replicas": 1}},
                "deletionPolicy": "Delete"
            }),
        ),
    )
    .await
    .expect("tenant created");
    let mut ready = false;
    for _ in 0..300 {
        let t = api.get("e2e-shop").await.expect("tenant read");
        if let Some(c) = t.status.as_ref().and_then(|s| s.condition("Ready")) {
            if c.status == "True" {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    assert!(ready, "e2e-shop did not become Ready within 5 minutes");
    api.delete("e2e-shop", &DeleteParams::default()).await.expect("deleted");
}

/// Waits until the tenant's condition `type_` has `status` (10 minutes at most).
async fn wait_condition(api: &Api<AnalyticsTenant>, name: &str, type_: &str, status: &str) -> AnalyticsTenant {
    for _ in 0..600 {
        let t = api.get(name).await.expect("tenant read");
        if t.status
            .as_ref()
            .and_then(|s| s.condition(type_))
            .is_some_and(|c| c.status == status)
        {
            return t;
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    panic!("{name}: {type_} did not become {status} within 10 minutes");
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster with the operator, Kafka and ClickHouse: run e2e/run.sh --full"]
async fn status_is_kstatus_shaped_pause_writes_nothing_and_a_retain_tenant_is_deleted_at_once() {
    use sightline_operator::conditions::{health, Health};

    let client = sightline_e2e::client().await;
    sightline_e2e::install_crd(&client).await;
    let api: Api<AnalyticsTenant> = Api::all(client.clone());
    let _ = api.delete("e2e-ops", &DeleteParams::default()).await;
    api.create(
        &PostParams::default(),
        &tenant(
            "e2e-ops",
            json!({
                "sites": {"allowed": [{"id": "shop.example.com"}]},
                "kafka": {"partitions": 2, "replicationFactor": 1, "retentionHours": 1},
                "ingest": {"collector": {"replicas": 1}, "query": {"replicas": 1}}
            }),
        ),
    )
    .await
    .expect("tenant created");
    let t = wait_condition(&api, "e2e-ops", "Ready", "True").await;
    let status = t.status.clone().unwrap();
    assert_eq!(
        health(
            false,
            t.metadata.generation,
            status.observed_generation,
            &status.conditions
        ),
        Health::Current
    );
    for type_ in [
        "TopicsReady",
        "SchemaReady",
        "SigningSecretReady",
        "CollectorAvailable",
        "LoaderAvailable",
        "QueryAvailable",
        "InSync",
    ] {
        assert_eq!(
            status.condition(type_).map(|c| c.status.as_str()),
            Some("True"),
            "{type_}"
        );
    }
    assert!(
        t.metadata.finalizers.unwrap_or_default().is_empty(),
        "Retain: no finalizer"
    );

    // Paused: the condition says so and a spec edit is not observed.
    let pause = json!({"metadata": {"annotations": {"sightline.dev/pause-reconciliation": "true"}}, "spec": {"kafka": {"partitions": 3}}});
    api.patch("e2e-ops", &PatchParams::default(), &Patch::Merge(&pause))
        .await
        .expect("paused");
    let t = wait_condition(&api, "e2e-ops", "ReconciliationPaused", "True").await;
    assert_eq!(t.status.unwrap().observed_generation, Some(1));

    // Deleted: nothing holds it, operator or not.
    api.delete("e2e-ops", &DeleteParams::default()).await.expect("deleted");
    for _ in 0..20 {
        if api.get_opt("e2e-ops").await.expect("read").is_none() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    panic!("a Retain tenant was still there 10 s after its deletion");
}
