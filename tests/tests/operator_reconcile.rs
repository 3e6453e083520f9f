//! The operator's reconciler against a mocked Kubernetes API server (kube-rs's tower-test
//! pattern: each test is "given this tenant, expect these API calls"), with the real Kafka
//! broker and the real ClickHouse engine (the HTTP front over libchdb) behind it.

use std::sync::Arc;
use std::time::Duration;

use http::Method;
use kube::runtime::controller::Action;
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde_json::{json, Value};
use sightline_core::warehouse::http::{Http, HttpConfig};
use sightline_core::warehouse::{ops, tiers, Params, Warehouse};
use sightline_ingest::kafka::provision::{topic_specs, Provisioner};
use sightline_ingest::kafka::topics;
use sightline_operator::controller::{error_policy, reconcile, Context};
use sightline_operator::crd::{AnalyticsTenant, AnalyticsTenantSpec, TenantStatus, FINALIZER};
use sightline_operator::metrics::Metrics;
use sightline_operator::validate::OperatorConfig;
use sightline_tests::clickhouse_front::ClickHouseFront;
use sightline_tests::kube_api::{mock_client, not_found, ApiServer, Received};
use sightline_tests::{count, Broker};

const NS: &str = "analytics";
const SPEC: &str = "sites: { allowed: [{ id: shop.example.com }] }\n\
                    kafka: { partitions: 3, replicationFactor: 1, retentionHours: 24 }\n\
                    ingest: { loader: { replicas: 2 } }";

/// The real engines behind the reconciler.
struct Engines {
    broker: Broker,
    front: ClickHouseFront,
    _dir: tempfile::TempDir,
}

impl Engines {
    async fn start() -> Engines {
        let dir = tempfile::tempdir().unwrap();
        let front = ClickHouseFront::start(&dir.path().join("engine"), None).await;
        Engines {
            broker: Broker::start(),
            front,
            _dir: dir,
        }
    }

    fn config(&self) -> OperatorConfig {
        OperatorConfig {
            brokers: self.broker.bootstrap.clone(),
            clickhouse_url: Some(self.front.url()),
            ..OperatorConfig::example(NS)
        }
    }

    fn warehouse(&self) -> Http {
        Http::new(&HttpConfig {
            url: self.front.url(),
            compression: true,
            ..Default::default()
        })
    }

    fn kafka(&self) -> Provisioner {
        Provisioner::new(&self.broker.bootstrap, &Default::default())
            .unwrap()
            .with_timeout(Duration::from_secs(3))
    }
}

/// A tenant as the API hands it over; `age` orders creation (smaller is older).
fn tenant(name: &str, spec: &str, finalizer: bool, age: i64) -> AnalyticsTenant {
    let mut t = AnalyticsTenant::new(
        name,
        AnalyticsTenantSpec {
            tenant: serde_yaml::from_str(spec).unwrap(),
        },
    );
    t.metadata.uid = Some(format!("uid-{name}"));
    t.metadata.generation = Some(1);
    t.metadata.resource_version = Some("1".into());
    t.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + age).unwrap(),
    ));
    if finalizer {
        t.metadata.finalizers = Some(vec![FINALIZER.into()]);
    }
    t
}

/// A context on the mocked client; `known` are the tenants the controller's store holds.
fn context(client: kube::Client, engines: &Engines, known: &[&AnalyticsTenant]) -> Arc<Context> {
    let (store, mut writer) = reflector::store::<AnalyticsTenant>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for t in known {
        writer.apply_watcher_event(&watcher::Event::InitApply((*t).clone()));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    Arc::new(Context::new(
        client,
        engines.config(),
        store,
        Arc::new(engines.kafka()),
        Metrics::default(),
        Duration::from_secs(300),
    ))
}

fn tenant_path(name: &str) -> String {
    format!("/apis/sightline.dev/v1alpha1/analyticstenants/{name}")
}

/// The status patch: asserts it is a forced server-side apply and answers with the tenant
/// carrying it. Returns the status.
async fn expect_status(api: &mut ApiServer, t: &AnalyticsTenant) -> TenantStatus {
    let echo = serde_json::to_value(t).unwrap();
    let received = api
        .expect(
            Method::PATCH,
            &format!("{}/status", tenant_path(&t.metadata.name.clone().unwrap())),
            |r| {
                let mut object = echo.clone();
                object["status"] = r.body["status"].clone();
                (200, object)
            },
        )
        .await;
    received.assert_applied_by_the_operator();
    assert_eq!(received.body["kind"], "AnalyticsTenant");
    serde_json::from_value(received.body["status"].clone()).unwrap()
}

/// Everything after Kafka and ClickHouse in an apply: the signing Secret (created when
/// absent), the ConfigMap and workloads by server-side apply (answered as ready), the HPA
/// removal, the status and `events` Events. Returns the applied bodies, the status and the
/// events' reasons.
async fn serve_apply(
    api: &mut ApiServer,
    t: &AnalyticsTenant,
    secret_exists: bool,
    events: usize,
) -> (Vec<Received>, TenantStatus, Vec<String>) {
    let name = t.metadata.name.clone().unwrap();
    let core = format!("/api/v1/namespaces/{NS}");
    let apps = format!("/apis/apps/v1/namespaces/{NS}");
    let secret_path = format!("{core}/secrets/{name}-signing-key");
    let mut applied = Vec::new();
    api.expect(Method::GET, &secret_path, |_| {
        if secret_exists {
            (200, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("{name}-signing-key")}, "data": {"secret": "a2VlcA=="}}))
        } else {
            (404, not_found("secret"))
        }
    })
    .await;
    if !secret_exists {
        applied.push(
            api.expect(Method::POST, &format!("{core}/secrets"), |r| (201, r.body.clone()))
                .await,
        );
    }
    applied.push(
        api.expect_apply(&format!("{core}/configmaps/{name}-tenant"), None)
            .await,
    );
    applied.push(
        api.expect_apply(
            &format!("{apps}/deployments/{name}-collector"),
            Some(json!({"replicas": 2, "availableReplicas": 2})),
        )
        .await,
    );
    applied.push(
        api.expect_apply(&format!("{core}/services/{name}-collector"), None)
            .await,
    );
    api.expect(
        Method::DELETE,
        &format!("/apis/autoscaling/v2/namespaces/{NS}/horizontalpodautoscalers/{name}-collector"),
        |_| (404, not_found("hpa")),
    )
    .await;
    applied.push(
        api.expect_apply(
            &format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/{name}-collector"),
            None,
        )
        .await,
    );
    applied.push(api.expect_apply(&format!("{core}/services/{name}-loader"), None).await);
    applied.push(
        api.expect_apply(
            &format!("{apps}/statefulsets/{name}-loader"),
            Some(json!({"replicas": 2, "readyReplicas": 2})),
        )
        .await,
    );
    applied.push(
        api.expect_apply(
            &format!("{apps}/deployments/{name}-query"),
            Some(json!({"replicas": 2, "availableReplicas": 1})),
        )
        .await,
    );
    applied.push(api.expect_apply(&format!("{core}/services/{name}-query"), None).await);
    applied.push(
        api.expect_apply(
            &format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets/{name}-query"),
            None,
        )
        .await,
    );
    let status = expect_status(api, t).await;
    let reasons = api.expect_events("default", events).await;
    (applied, status, reasons)
}

fn condition<'a>(status: &'a TenantStatus, type_: &str) -> (&'a str, &'a str) {
    let c = status
        .condition(type_)
        .unwrap_or_else(|| panic!("no {type_} in {status:?}"));
    (c.status.as_str(), c.reason.as_str())
}

/// Runs one reconcile while `serve` plays the API server; returns the reconcile's result
/// and what `serve` returned.
async fn reconcile_with<T: Send + 'static>(
    ctx: &Arc<Context>,
    t: &AnalyticsTenant,
    api: ApiServer,
    serve: impl FnOnce(ApiServer) -> futures_util::future::BoxFuture<'static, (ApiServer, T)>,
) -> (Result<Action, sightline_operator::Error>, ApiServer, T) {
    let verifier = tokio::spawn(serve(api));
    let result = tokio::time::timeout(Duration::from_secs(90), reconcile(Arc::new(t.clone()), ctx.clone()))
        .await
        .expect("reconcile finished within 90 s");
    let (api, out) = tokio::time::timeout(Duration::from_secs(30), verifier)
        .await
        .expect("the scenario completed")
        .expect("the scenario did not panic");
    (result, api, out)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_reconcile_adds_the_finalizer_and_nothing_else() {
    let engines = Engines::start().await;
    let t = tenant("acme", SPEC, false, 0);
    let (client, api) = mock_client();
    let ctx = context(client, &engines, &[&t]);
    let echo = serde_json::to_value(tenant("acme", SPEC, true, 0)).unwrap();
    let (result, mut api, patch) = reconcile_with(&ctx, &t, api, move |mut api| {
        Box::pin(async move {
            let r = api.expect(Method::PATCH, &tenant_path("acme"), |_| (200, echo)).await;
            (api, r)
        })
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(
        patch.body,
        json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [FINALIZER]}
        ])
    );
    api.expect_silence(Duration::from_millis(300)).await;
    // Nothing outside Kubernetes was touched yet.
    assert!(engines.kafka().describe(&topics("acme")[0]).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_applies_children_and_status_then_topics_and_tables_work_and_drift_is_repaired() {
    let engines = Engines::start().await;
    let t = tenant("acme", SPEC, true, 0);
    let (client, api) = mock_client();
    let ctx = context(client, &engines, &[&t]);
    let t2 = t.clone();
    let (result, api, (applied, status, reasons)) = reconcile_with(&ctx, &t, api, move |mut api| {
        Box::pin(async move {
            let out = serve_apply(&mut api, &t2, false, 4).await;
            (api, out)
        })
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(300)));

    // The Secret was created with a generated key; every child is owned by the tenant.
    let secret = &applied[0];
    assert_eq!(secret.method, Method::POST);
    assert_eq!(
        secret.body["data"]["secret"].as_str().map(str::len),
        Some(60),
        "{secret:?}"
    );
    for r in &applied {
        assert_eq!(r.body["metadata"]["ownerReferences"][0]["uid"], "uid-acme", "{r:?}");
    }
    let configmap: Value = serde_yaml::from_str(applied[1].body["data"]["tenant.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(configmap["metadata"]["name"], "acme");

    // Status: every condition True, with the generation, version and endpoints.
    assert_eq!(condition(&status, "Ready"), ("True", "Reconciled"));
    assert_eq!(condition(&status, "TopicsReady"), ("True", "Provisioned"));
    assert_eq!(condition(&status, "SchemaReady"), ("True", "Migrated"));
    assert_eq!(condition(&status, "IngestReady"), ("True", "Available"));
    assert_eq!(status.observed_generation, Some(1));
    assert!(status.conditions.iter().all(|c| c.observed_generation == Some(1)));
    let latest =
        sightline_operator::build::ddl::build(&sightline_operator::validate::validate(&t, &engines.config()).unwrap())
            .unwrap()
            .target_version;
    assert_eq!(status.schema_version, Some(latest));
    assert_eq!(status.sites, Some(1));
    assert_eq!(
        status.collector_endpoint.as_deref(),
        Some("http://acme-collector.analytics.svc:8080")
    );
    assert_eq!(reasons, ["Reconciled", "Provisioned", "Migrated", "Available"]);

    // The topics exist with the spec's partitions; the tables and views take an insert.
    let kafka = engines.kafka();
    for topic in topics("acme") {
        let state = kafka.describe(&topic).await.unwrap().expect("topic created");
        assert_eq!(state.partitions, 3);
    }
    let wh = engines.warehouse();
    insert_one(&wh, "sightline_acme").await;
    assert_eq!(count(&wh, "SELECT count() AS n FROM sightline_acme.events").await, 1);
    assert_eq!(
        count(&wh, "SELECT count() AS n FROM sightline_acme.rollup_site_hourly").await,
        1,
        "the view fed the rollup"
    );

    // A loader's first start moves the new database onto the tiers, and the hourly layout
    // retires (writer-free); drift repair must not bring it back.
    let tenant = sightline_operator::validate::validate(&t, &engines.config())
        .unwrap()
        .tenant;
    let now = chrono::Utc::now();
    tiers::migrate_recent_days(&wh, &tenant, now).await.unwrap();
    tiers::backfill(&wh, &tenant, now).await.unwrap();
    tiers::migrate_recent_days(&wh, &tenant, now).await.unwrap();
    let hourly = "SELECT count() AS n FROM system.tables WHERE database = 'sightline_acme' AND name LIKE '%hourly%'";
    assert_eq!(count(&wh, hourly).await, 0, "the hourly layout retired");

    // Drift: a view dropped and a topic deleted by hand are back after the next reconcile,
    // which changes no condition (so records no Event) and keeps the Secret.
    wh.execute("DROP TABLE sightline_acme.rollup_dims_15m_mv", &Params::new())
        .await
        .unwrap();
    let [_, dlq] = topics("acme");
    kafka.delete(std::slice::from_ref(&dlq)).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while kafka.describe(&dlq).await.unwrap().is_some() {
        assert!(std::time::Instant::now() < deadline, "{dlq} not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut again = t.clone();
    again.status = Some(status);
    let again2 = again.clone();
    let (result, _api, (applied, status, reasons)) = reconcile_with(&ctx, &again, api, move |mut api| {
        Box::pin(async move {
            let out = serve_apply(&mut api, &again2, true, 0).await;
            (api, out)
        })
    })
    .await;
    result.unwrap();
    assert!(
        applied.iter().all(|r| r.method == Method::PATCH),
        "the Secret is never rewritten"
    );
    assert!(reasons.is_empty());
    assert_eq!(condition(&status, "Ready"), ("True", "Reconciled"));
    assert!(kafka.describe(&dlq).await.unwrap().is_some(), "topic recreated");
    let views = count(
        &wh,
        "SELECT count() AS n FROM system.tables WHERE database = 'sightline_acme' AND name = 'rollup_dims_15m_mv'",
    )
    .await;
    assert_eq!(views, 1, "view recreated");
    assert_eq!(count(&wh, hourly).await, 0, "the retired hourly layout stays retired");
}

/// One processed event through the events table (its views fill the rollups).
async fn insert_one(wh: &dyn Warehouse, db: &str) {
    wh.execute(
        &format!(
            "INSERT INTO {db}.events (event_id, site_id, ts, name, is_pageview, visitor_id, session_id, visit_delta, pipeline_version) \
             VALUES (generateUUIDv4(), 'shop.example.com', now64(3), 'pageview', 1, 7, 7, 1, 3)"
        ),
        &Params::new(),
    )
    .await
    .unwrap();
    wh.execute(
        &format!(
            "INSERT INTO {db}.events_raw (event_id, site_id, received_at, ts, name, url) \
             VALUES (generateUUIDv4(), 'shop.example.com', now64(3), now64(3), 'pageview', 'https://shop.example.com/')"
        ),
        &Params::new(),
    )
    .await
    .unwrap();
}

/// Creates the tenant's topics and database through the shared code, as an earlier
/// reconcile would have.
async fn provisioned(engines: &Engines, t: &AnalyticsTenant) {
    let tenant = sightline_core::spec::Tenant {
        name: t.metadata.name.clone().unwrap(),
        spec: t.spec.tenant.clone(),
    };
    let kafka = engines.kafka();
    kafka
        .apply(&kafka.plan(&topic_specs(&tenant)).await.unwrap())
        .await
        .unwrap();
    ops::apply_schema(&engines.warehouse(), &tenant).await.unwrap();
}

fn deleting(mut t: AnalyticsTenant) -> AnalyticsTenant {
    t.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_900_000_000).unwrap(),
    ));
    t
}

/// Cleanup: one Event, then the finalizer's removal.
async fn serve_cleanup(api: &mut ApiServer, name: &str) -> String {
    let reason = api.expect_events("default", 1).await.remove(0);
    let removal = api
        .expect(Method::PATCH, &tenant_path(name), |_| {
            (200, serde_json::to_value(tenant(name, SPEC, false, 0)).unwrap())
        })
        .await;
    assert_eq!(
        removal.body[1],
        json!({"op": "remove", "path": "/metadata/finalizers/0"})
    );
    reason
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_with_policy_delete_drops_the_topics_and_the_database() {
    let engines = Engines::start().await;
    let t = deleting(tenant("acme", &format!("{SPEC}\ndeletionPolicy: Delete"), true, 0));
    provisioned(&engines, &t).await;
    let (client, api) = mock_client();
    let ctx = context(client, &engines, &[&t]);
    let (result, _, reason) = reconcile_with(&ctx, &t, api, |mut api| {
        Box::pin(async move {
            let reason = serve_cleanup(&mut api, "acme").await;
            (api, reason)
        })
    })
    .await;
    result.unwrap();
    assert_eq!(reason, "Deleted");
    let kafka = engines.kafka();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    for topic in topics("acme") {
        while kafka.describe(&topic).await.unwrap().is_some() {
            assert!(std::time::Instant::now() < deadline, "{topic} still exists");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let dbs = count(
        &engines.warehouse(),
        "SELECT count() AS n FROM system.databases WHERE name = 'sightline_acme'",
    )
    .await;
    assert_eq!(dbs, 0, "database dropped");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_with_policy_retain_keeps_them_and_says_so() {
    let engines = Engines::start().await;
    let t = deleting(tenant("acme", SPEC, true, 0));
    provisioned(&engines, &t).await;
    let (client, api) = mock_client();
    let ctx = context(client, &engines, &[&t]);
    let (result, _, reason) = reconcile_with(&ctx, &t, api, |mut api| {
        Box::pin(async move {
            let reason = serve_cleanup(&mut api, "acme").await;
            (api, reason)
        })
    })
    .await;
    result.unwrap();
    assert_eq!(reason, "Retained");
    for topic in topics("acme") {
        assert!(
            engines.kafka().describe(&topic).await.unwrap().is_some(),
            "{topic} kept"
        );
    }
    let tables = count(
        &engines.warehouse(),
        "SELECT count() AS n FROM system.tables WHERE database = 'sightline_acme' AND name = 'events_raw'",
    )
    .await;
    assert_eq!(tables, 1, "database kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_down_gives_kafka_unavailable_and_a_requeue_then_recovers() {
    let engines = Engines::start().await;
    let t = tenant("acme", SPEC, true, 0);
    let (client, api) = mock_client();
    let ctx = context(client, &engines, &[&t]);
    engines.broker.stop();
    let t2 = t.clone();
    let (result, api, (status, reasons)) = reconcile_with(&ctx, &t, api, move |mut api| {
        Box::pin(async move {
            let status = expect_status(&mut api, &t2).await;
            let reasons = api.expect_events("default", 2).await;
            (api, (status, reasons))
        })
    })
    .await;
    let error = result.unwrap_err();
    assert_eq!(error.reason(), "KafkaUnavailable", "{error}");
    assert_eq!(condition(&status, "Ready"), ("False", "KafkaUnavailable"));
    assert_eq!(condition(&status, "TopicsReady"), ("False", "KafkaUnavailable"));
    assert_eq!(condition(&status, "SchemaReady").0, "Unknown");
    assert_eq!(reasons, ["KafkaUnavailable", "KafkaUnavailable"]);
    // Retried with backoff (5 s, then 10 s), not at the slow resync pace.
    let obj = Arc::new(t.clone());
    assert_eq!(
        error_policy(obj.clone(), &error, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        error_policy(obj, &error, ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );

    // Kafka is back: the next reconcile gets everything ready.
    engines.broker.resume();
    let mut again = t.clone();
    again.status = Some(status);
    let again2 = again.clone();
    let (result, _, (_, status, _)) = reconcile_with(&ctx, &again, api, move |mut api| {
        Box::pin(async move {
            let out = serve_apply(&mut api, &again2, false, 4).await;
            (api, out)
        })
    })
    .await;
    result.unwrap();
    assert_eq!(condition(&status, "Ready"), ("True", "Reconciled"));
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_down_gives_clickhouse_unavailable() {
    let engines = Engines::start().await;
    let t = tenant("acme", SPEC, true, 0);
    let (client, api) = mock_client();
    let ctx = context(client, &engines, &[&t]);
    engines.front.set_down(true);
    let t2 = t.clone();
    let (result, _, (status, reasons)) = reconcile_with(&ctx, &t, api, move |mut api| {
        Box::pin(async move {
            let status = expect_status(&mut api, &t2).await;
            let reasons = api.expect_events("default", 3).await;
            (api, (status, reasons))
        })
    })
    .await;
    let error = result.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert_eq!(condition(&status, "Ready"), ("False", "ClickHouseUnavailable"));
    assert_eq!(condition(&status, "TopicsReady"), ("True", "Provisioned"));
    assert_eq!(condition(&status, "SchemaReady"), ("False", "ClickHouseUnavailable"));
    assert_eq!(
        reasons,
        ["ClickHouseUnavailable", "Provisioned", "ClickHouseUnavailable"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_claiming_another_tenants_database_gets_conflict_and_touches_nothing() {
    let engines = Engines::start().await;
    let owner = tenant("acme", SPEC, true, 0);
    // Created later, claiming acme's database through the override.
    let intruder = tenant(
        "intruder",
        &format!("{SPEC}\nclickhouse: {{ database: sightline_acme }}"),
        true,
        10,
    );
    let (client, api) = mock_client();
    let ctx = context(client, &engines, &[&owner, &intruder]);
    let i2 = intruder.clone();
    let (result, mut api, (status, reasons)) = reconcile_with(&ctx, &intruder, api, move |mut api| {
        Box::pin(async move {
            let status = expect_status(&mut api, &i2).await;
            let reasons = api.expect_events("default", 1).await;
            (api, (status, reasons))
        })
    })
    .await;
    let error = result.unwrap_err();
    assert_eq!(error.reason(), "Conflict");
    assert_eq!(condition(&status, "Ready"), ("False", "Conflict"));
    assert!(status
        .condition("Ready")
        .unwrap()
        .message
        .contains("belongs to tenant acme"));
    assert_eq!(reasons, ["Conflict"]);
    api.expect_silence(Duration::from_millis(300)).await;
    // Nothing was created for it: no topics, no database.
    for topic in topics("intruder") {
        assert!(engines.kafka().describe(&topic).await.unwrap().is_none());
    }
    let dbs = count(
        &engines.warehouse(),
        "SELECT count() AS n FROM system.databases WHERE name = 'sightline_acme'",
    )
    .await;
    assert_eq!(dbs, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_decrease_gets_not_supported_and_changes_nothing() {
    let engines = Engines::start().await;
    let bigger = tenant("acme", &SPEC.replace("partitions: 3", "partitions: 6"), true, 0);
    provisioned(&engines, &bigger).await;
    let t = tenant("acme", SPEC, true, 0);
    let (client, api) = mock_client();
    let ctx = context(client, &engines, &[&t]);
    let t2 = t.clone();
    let (result, _, (status, reasons)) = reconcile_with(&ctx, &t, api, move |mut api| {
        Box::pin(async move {
            let status = expect_status(&mut api, &t2).await;
            let reasons = api.expect_events("default", 2).await;
            (api, (status, reasons))
        })
    })
    .await;
    assert_eq!(result.unwrap_err().reason(), "NotSupported");
    assert_eq!(condition(&status, "Ready"), ("False", "NotSupported"));
    assert!(status
        .condition("TopicsReady")
        .unwrap()
        .message
        .contains("never shrink"));
    assert_eq!(reasons, ["NotSupported", "NotSupported"]);
    assert_eq!(
        engines
            .kafka()
            .describe(&topics("acme")[0])
            .await
            .unwrap()
            .unwrap()
            .partitions,
        6
    );
}
