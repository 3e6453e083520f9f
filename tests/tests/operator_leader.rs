//! Leader election against a mocked API server that keeps one Lease: the operator takes the
//! free lease and reconciles; when another replica holds it (its renewal shows another
//! holder), the operator stops reconciling at once.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Method;
use serde_json::{json, Value};
use sightline_operator::leader::{run_while_leader, LeaseConfig};
use sightline_operator::metrics::Metrics;
use sightline_tests::kube_api::{mock_client, not_found, respond, ApiServer};

const PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/analytics/leases/sightline-operator";

fn micro_time(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// Plays an API server that holds one Lease: GET, create, and patches merged into its
/// spec. Once `stolen`, another replica holds it and our patches no longer change it.
async fn lease_server(mut api: ApiServer, lease: Arc<Mutex<Option<Value>>>, stolen: Arc<AtomicBool>) {
    loop {
        let (r, reply) = api.next().await;
        let mut current = lease.lock().unwrap();
        match (&r.method, r.path.as_str()) {
            (&Method::GET, PATH) => match current.as_ref() {
                Some(l) => respond(reply, 200, l),
                None => respond(reply, 404, &not_found("lease")),
            },
            (&Method::POST, "/apis/coordination.k8s.io/v1/namespaces/analytics/leases") => {
                *current = Some(r.body.clone());
                respond(reply, 201, &r.body);
            }
            (&Method::PATCH, PATH) => {
                let l = current.get_or_insert_with(|| json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "sightline-operator", "namespace": "analytics"}}));
                if !stolen.load(Ordering::SeqCst) {
                    if l["spec"].is_null() {
                        l["spec"] = json!({});
                    }
                    for (k, v) in r.body["spec"].as_object().cloned().unwrap_or_default() {
                        if v.is_null() {
                            l["spec"].as_object_mut().unwrap().remove(&k);
                        } else {
                            l["spec"][k] = v;
                        }
                    }
                }
                respond(reply, 200, l);
            }
            other => panic!("unexpected API request {other:?}: {r:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_that_loses_the_lease_stops_reconciling() {
    let (client, api) = mock_client();
    let lease = Arc::new(Mutex::new(None));
    let stolen = Arc::new(AtomicBool::new(false));
    let server = tokio::spawn(lease_server(api, lease.clone(), stolen.clone()));

    let metrics = Metrics::default();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let reconciles = Arc::new(AtomicU64::new(0));
    let config = LeaseConfig {
        name: "sightline-operator".into(),
        namespace: "analytics".into(),
        identity: "operator-0".into(),
        duration_secs: 3,
        grace_secs: 1,
    };
    let counted = reconciles.clone();
    let runner = tokio::spawn(run_while_leader(
        client,
        config,
        metrics.clone(),
        stopped,
        move |until| {
            let counted = counted.clone();
            // Stands in for the controller: "reconciles" until the lease is lost.
            async move {
                tokio::select! {
                    _ = until => {}
                    _ = async { loop { counted.fetch_add(1, Ordering::SeqCst); tokio::time::sleep(Duration::from_millis(20)).await; } } => {}
                }
            }
        },
    ));

    // It takes the free lease and reconciles.
    let deadline = Instant::now() + Duration::from_secs(20);
    while reconciles.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "never became leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metrics.leader.get(), 1);
    assert_eq!(
        lease.lock().unwrap().as_ref().unwrap()["spec"]["holderIdentity"],
        "operator-0"
    );

    // Another replica holds the lease now (ours was not renewed in time).
    {
        let mut l = lease.lock().unwrap();
        let l = l.as_mut().unwrap();
        l["spec"]["holderIdentity"] = json!("operator-1");
        l["spec"]["renewTime"] = json!(micro_time(chrono::Utc::now()));
        l["spec"]["leaseDurationSeconds"] = json!(30);
        stolen.store(true, Ordering::SeqCst);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while metrics.leader.get() != 0 {
        assert!(Instant::now() < deadline, "did not notice the lost lease");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after_loss = reconciles.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        reconciles.load(Ordering::SeqCst),
        after_loss,
        "kept reconciling without the lease"
    );

    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(20), runner)
        .await
        .expect("stopped")
        .unwrap()
        .unwrap();
    server.abort();
}

const CRD_PATH: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/analyticstenants.sightline.dev";

#[tokio::test]
async fn at_start_the_operator_updates_its_crds_unless_newer_absent_or_forbidden() {
    use sightline_operator::crds::{ensure, Outcome};
    use sightline_tests::kube_api::FakeApi;

    // Installed by an older chart: brought to this operator's schema, stamped with its
    // version, by a merge patch (the RBAC names the CRDs and grants no create).
    let (client, api) = mock_client();
    let fake = FakeApi::start(api);
    fake.put(
        CRD_PATH,
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
               "metadata": {"name": "analyticstenants.sightline.dev", "annotations": {"sightline.dev/operator-version": "0.0.1"}},
               "spec": {"group": "sightline.dev", "names": {"kind": "AnalyticsTenant", "plural": "analyticstenants"},
                        "scope": "Cluster", "versions": []}}),
    );
    let outcome = ensure(&client).await;
    // The Reprocess CRD is embedded too; this cluster has not installed it.
    assert_eq!(
        outcome,
        [
            ("analyticstenants.sightline.dev".to_string(), Outcome::Applied),
            ("reprocesses.sightline.dev".to_string(), Outcome::Absent)
        ]
    );
    let calls = fake.take_calls();
    let patch = calls.iter().find(|c| c.method == Method::PATCH).expect("updated");
    assert_eq!(patch.path, CRD_PATH);
    assert!(patch.content_type.contains("merge-patch"), "{patch:?}");
    let applied = fake.get(CRD_PATH).unwrap();
    assert_eq!(
        applied["metadata"]["annotations"]["sightline.dev/operator-version"],
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(
        applied["spec"],
        serde_json::to_value(sightline_operator::crd::crd()).unwrap()["spec"]
    );

    // Applied by a newer operator (a rolling upgrade's new replica): left alone.
    fake.edit(CRD_PATH, |c| {
        c["metadata"]["annotations"]["sightline.dev/operator-version"] = json!("999.0.0")
    });
    let outcome = ensure(&client).await;
    assert_eq!(outcome[0].1, Outcome::KeptNewer("999.0.0".into()));
    assert!(fake.take_calls().iter().all(|c| !c.is_write()));

    // Not installed: left to the installer.
    fake.remove(CRD_PATH);
    assert_eq!(ensure(&client).await[0].1, Outcome::Absent);
    assert!(fake.take_calls().iter().all(|c| !c.is_write()));

    // No permission: said, and the operator goes on.
    let (client, mut api) = mock_client();
    let run = tokio::spawn(async move { ensure(&client).await });
    for path in [
        CRD_PATH,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/reprocesses.sightline.dev",
    ] {
        api.expect(Method::GET, path, |_| {
            (
                403,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                       "message": "customresourcedefinitions is forbidden", "metadata": {}}),
            )
        })
        .await;
    }
    let outcomes = run.await.unwrap();
    assert!(outcomes.iter().all(|(_, o)| *o == Outcome::Forbidden), "{outcomes:?}");
}
