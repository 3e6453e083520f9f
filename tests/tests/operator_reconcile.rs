//! The operator's reconciler against a mocked Kubernetes API server (kube-rs's tower-test
//! pattern), with the real Kafka broker and the real ClickHouse engine (the HTTP front over
//! libchdb) behind it. Short scenarios script the API server call by call; longer ones use
//! the stateful `FakeApi` and assert the calls it logged.

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
use sightline_operator::conditions::{health, Health};
use sightline_operator::controller::{error_policy, reconcile, Context};
use sightline_operator::crd::{AnalyticsTenant, AnalyticsTenantSpec, TenantStatus, FINALIZER};
use sightline_operator::metrics::{DriftLabels, Metrics};
use sightline_operator::validate::OperatorConfig;
use sightline_tests::clickhouse_front::ClickHouseFront;
use sightline_tests::kube_api::{mock_client, FakeApi, Received};
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

fn secret_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/secrets/{name}-signing-key")
}

fn deployment_path(name: &str) -> String {
    format!("/apis/apps/v1/namespaces/{NS}/deployments/{name}")
}

fn service_path(name: &str) -> String {
    format!("/api/v1/namespaces/{NS}/services/{name}")
}

/// The engines, the fake API server and a context on it, with `tenants` stored.
struct Harness {
    engines: Engines,
    fake: FakeApi,
    ctx: Arc<Context>,
}

impl Harness {
    async fn start(tenants: &[&AnalyticsTenant]) -> Harness {
        let engines = Engines::start().await;
        let (client, api) = mock_client();
        let ctx = context(client, &engines, tenants);
        let fake = FakeApi::start(api);
        for t in tenants {
            fake.put(&tenant_path(&name(t)), serde_json::to_value(t).unwrap());
        }
        Harness { engines, fake, ctx }
    }

    /// The tenant as the API holds it now.
    fn tenant(&self, name: &str) -> AnalyticsTenant {
        serde_json::from_value(self.fake.get(&tenant_path(name)).expect("the tenant exists")).unwrap()
    }

    /// Changes the stored tenant (a person's edit); a spec change bumps the generation.
    fn edit_tenant(&self, name: &str, change: impl FnOnce(&mut AnalyticsTenant)) {
        let mut t = self.tenant(name);
        let spec = t.spec.clone();
        change(&mut t);
        if t.spec != spec {
            t.metadata.generation = Some(t.metadata.generation.unwrap_or(1) + 1);
        }
        self.fake.put(&tenant_path(name), serde_json::to_value(&t).unwrap());
    }

    /// One reconcile of the tenant as stored; the calls it made and the Events it recorded.
    async fn reconcile(&self, name: &str) -> (Result<Action, sightline_operator::Error>, Vec<Received>, Vec<Value>) {
        let t = self.tenant(name);
        let result = tokio::time::timeout(Duration::from_secs(120), reconcile(Arc::new(t), self.ctx.clone()))
            .await
            .expect("reconcile finished within 120 s");
        (result, self.fake.take_calls(), self.fake.take_events())
    }

    fn status(&self, name: &str) -> TenantStatus {
        self.tenant(name).status.expect("a status")
    }

    fn drift_counted(&self, kind: &str) -> u64 {
        self.ctx
            .metrics
            .drift
            .get_or_create(&DriftLabels { kind: kind.into() })
            .get()
    }
}

fn name(t: &AnalyticsTenant) -> String {
    t.metadata.name.clone().unwrap()
}

fn condition<'a>(status: &'a TenantStatus, type_: &str) -> (&'a str, &'a str) {
    let c = status
        .condition(type_)
        .unwrap_or_else(|| panic!("no {type_} in {status:?}"));
    (c.status.as_str(), c.reason.as_str())
}

fn message<'a>(status: &'a TenantStatus, type_: &str) -> &'a str {
    &status.condition(type_).unwrap().message
}

/// The writes of a reconcile as `METHOD path` (reads left out).
fn writes(calls: &[Received]) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.is_write())
        .map(|c| format!("{} {}", c.method, c.path))
        .collect()
}

fn reasons(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Polls `f` until it holds (Kafka deletes topics asynchronously).
async fn eventually<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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
        name: name(t),
        spec: t.spec.tenant.clone(),
    };
    let kafka = engines.kafka();
    kafka
        .apply(&kafka.plan(&topic_specs(&tenant)).await.unwrap())
        .await
        .unwrap();
    ops::apply_schema(&engines.warehouse(), &tenant).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_policy_tenant_gets_the_finalizer_first_and_nothing_else() {
    let engines = Engines::start().await;
    let t = tenant("acme", &format!("{SPEC}\ndeletionPolicy: Delete"), false, 0);
    let (client, mut api) = mock_client();
    let ctx = context(client, &engines, &[&t]);
    let echo = serde_json::to_value(tenant("acme", SPEC, true, 0)).unwrap();
    let run = tokio::spawn(reconcile(Arc::new(t.clone()), ctx));
    let patch = api.expect(Method::PATCH, &tenant_path("acme"), |_| (200, echo)).await;
    assert_eq!(run.await.unwrap().unwrap(), Action::await_change());
    assert!(patch.content_type.contains("merge-patch"), "{patch:?}");
    assert_eq!(
        patch.body,
        json!({"metadata": {"finalizers": [FINALIZER], "resourceVersion": "1"}}),
        "a merge patch that fails if the tenant changed meanwhile"
    );
    api.expect_silence(Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_is_reconciled_to_ready_and_drift_is_repaired_with_an_event_each() {
    let t = tenant("acme", SPEC, false, 0);
    let h = Harness::start(&[&t]).await;
    let (result, calls, events) = h.reconcile("acme").await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(300)));

    // Given a new tenant: the Secret, then each child read and applied, then the status.
    let apps = format!("/apis/apps/v1/namespaces/{NS}");
    let policy = format!("/apis/policy/v1/namespaces/{NS}/poddisruptionbudgets");
    assert_eq!(
        writes(&calls),
        [
            format!("POST /api/v1/namespaces/{NS}/secrets"),
            format!("PATCH /api/v1/namespaces/{NS}/configmaps/acme-tenant"),
            format!("PATCH {apps}/deployments/acme-collector"),
            format!("PATCH {}", service_path("acme-collector")),
            format!("PATCH {policy}/acme-collector"),
            format!("PATCH {}", service_path("acme-loader")),
            format!("PATCH {apps}/statefulsets/acme-loader"),
            format!("PATCH {apps}/deployments/acme-query"),
            format!("PATCH {}", service_path("acme-query")),
            format!("PATCH {policy}/acme-query"),
            format!("PATCH {}/status", tenant_path("acme")),
        ]
        .into_iter()
        .chain(std::iter::repeat_n(
            "POST /apis/events.k8s.io/v1/namespaces/default/events".to_string(),
            events.len()
        ))
        .collect::<Vec<_>>()
    );
    for c in calls
        .iter()
        .filter(|c| c.method == Method::PATCH && !c.is_status_or_event())
    {
        c.assert_applied_by_the_operator();
        assert_eq!(c.body["metadata"]["ownerReferences"][0]["uid"], "uid-acme", "{c:?}");
        assert!(c.body["metadata"]["annotations"]["sightline.dev/applied-digest"].is_string());
    }
    assert!(
        !calls
            .iter()
            .any(|c| c.path == tenant_path("acme") && c.method == Method::PATCH),
        "Retain: no finalizer"
    );
    let secret = h.fake.get(&secret_path("acme")).unwrap();
    assert_eq!(secret["data"]["secret"].as_str().map(str::len), Some(60), "{secret}");

    // Status: every condition with the generation; kstatus reads Current.
    let status = h.status("acme");
    for (type_, expected) in [
        ("Ready", ("True", "Reconciled")),
        ("Reconciling", ("False", "Reconciled")),
        ("Stalled", ("False", "NotStalled")),
        ("TopicsReady", ("True", "Provisioned")),
        ("SchemaReady", ("True", "Migrated")),
        ("SigningSecretReady", ("True", "Created")),
        ("CollectorAvailable", ("True", "Available")),
        ("LoaderAvailable", ("True", "Available")),
        ("QueryAvailable", ("True", "Available")),
        ("InSync", ("True", "NoDrift")),
        ("ReconciliationPaused", ("False", "NotPaused")),
        ("RolloutPending", ("False", "UpToDate")),
    ] {
        assert_eq!(condition(&status, type_), expected, "{type_}");
    }
    assert_eq!(status.observed_generation, Some(1));
    assert!(status.conditions.iter().all(|c| c.observed_generation == Some(1)));
    assert_eq!(
        health(false, Some(1), status.observed_generation, &status.conditions),
        Health::Current
    );
    let latest = sightline_operator::build::ddl::build(
        &sightline_operator::validate::validate(&t, &h.engines.config()).unwrap(),
    )
    .unwrap()
    .target_version;
    assert_eq!(status.schema_version, Some(latest));
    assert_eq!(status.sites, Some(1));
    assert_eq!(status.loader_lag, Some(0), "nothing produced yet");
    assert_eq!(status.signing_key_fingerprint.as_deref().map(str::len), Some(16));
    assert!(status.applied_topics_digest.is_some() && status.applied_schema_digest.is_some());
    assert_eq!(
        status.collector_endpoint.as_deref(),
        Some("http://acme-collector.analytics.svc:8080")
    );
    assert!(reasons(&events).contains(&"Reconciled".to_string()));

    // The topics exist with the spec's partitions; the tables and views take an insert.
    let kafka = h.engines.kafka();
    for topic in topics("acme") {
        assert_eq!(
            kafka.describe(&topic).await.unwrap().expect("topic created").partitions,
            3
        );
    }
    let wh = h.engines.warehouse();
    insert_one(&wh, "sightline_acme").await;
    assert_eq!(count(&wh, "SELECT count() AS n FROM sightline_acme.events").await, 1);

    // A loader's first start moves the new database onto the tiers, and the hourly layout
    // retires (writer-free): that is not drift.
    let tenant = sightline_operator::validate::validate(&t, &h.engines.config())
        .unwrap()
        .tenant;
    let now = chrono::Utc::now();
    tiers::migrate_recent_days(&wh, &tenant, now).await.unwrap();
    tiers::backfill(&wh, &tenant, now).await.unwrap();
    tiers::migrate_recent_days(&wh, &tenant, now).await.unwrap();
    let hourly = "SELECT count() AS n FROM system.tables WHERE database = 'sightline_acme' AND name LIKE '%hourly%'";
    assert_eq!(count(&wh, hourly).await, 0, "the hourly layout retired");

    // Nothing changed: the next reconcile reads everything and writes only the status.
    let (result, calls, events) = h.reconcile("acme").await;
    result.unwrap();
    assert_eq!(writes(&calls), [format!("PATCH {}/status", tenant_path("acme"))]);
    assert!(events.is_empty(), "{events:?}");
    assert_eq!(condition(&h.status("acme"), "InSync"), ("True", "NoDrift"));

    // Drift of every kind: a view dropped, a column dropped, a TTL changed, a topic deleted,
    // its retention changed, a Service deleted, replicas and an image edited by hand.
    wh.execute("DROP TABLE sightline_acme.rollup_dims_15m_mv", &Params::new())
        .await
        .unwrap();
    wh.execute(
        "ALTER TABLE sightline_acme.events_raw DROP COLUMN ingest_source",
        &Params::new(),
    )
    .await
    .unwrap();
    wh.execute(
        "ALTER TABLE sightline_acme.events MODIFY TTL toDateTime(ts) + INTERVAL 3 DAY",
        &Params::new(),
    )
    .await
    .unwrap();
    let [events_topic, dlq] = topics("acme");
    kafka.delete(std::slice::from_ref(&dlq)).await.unwrap();
    eventually(&format!("{dlq} deleted"), || async {
        kafka.describe(&dlq).await.unwrap().is_none()
    })
    .await;
    kafka
        .apply(&[sightline_ingest::kafka::provision::Action::Configure {
            topic: events_topic.clone(),
            changed: [("retention.ms".to_string(), "60000".to_string())].into(),
            all: [("retention.ms".to_string(), "60000".to_string())].into(),
        }])
        .await
        .unwrap();
    h.fake.remove(&service_path("acme-query"));
    h.fake.edit(&deployment_path("acme-collector"), |d| {
        d["spec"]["replicas"] = json!(7);
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("evil/sightline:1");
    });
    let (result, calls, events) = h.reconcile("acme").await;
    result.unwrap();
    let status = h.status("acme");
    assert_eq!(
        condition(&status, "InSync"),
        ("True", "Repaired"),
        "{}",
        message(&status, "InSync")
    );
    let repaired = message(&status, "InSync");
    for what in [
        "topic sightline.acme.events.dlq: deleted",
        "topic config sightline.acme.events: retention.ms is 60000 where the spec says 86400000",
        "table sightline_acme.rollup_dims_15m_mv: dropped",
        "table definition sightline_acme.events_raw: differed",
        "table definition sightline_acme.events: differed",
        "object Service analytics/acme-query: deleted",
        "object Deployment analytics/acme-collector: changed at .spec.replicas, .spec.template.spec.containers[collector].image",
    ] {
        assert!(repaired.contains(what), "{what} not in {repaired}");
    }
    let repairs = reasons(&events).iter().filter(|r| *r == "DriftRepaired").count();
    assert_eq!(repairs, 7, "one Event per repair: {events:?}");
    for (kind, n) in [
        ("topic", 1),
        ("topic_config", 1),
        ("table_missing", 1),
        ("table_definition", 2),
        ("kubernetes_object", 2),
    ] {
        assert_eq!(h.drift_counted(kind), n, "{kind}");
    }
    // Only what drifted was written back.
    let written: Vec<String> = writes(&calls)
        .into_iter()
        .filter(|w| !w.contains("/events") && !w.ends_with("/status"))
        .collect();
    assert_eq!(
        written,
        [
            format!("PATCH {}", deployment_path("acme-collector")),
            format!("PATCH {}", service_path("acme-query")),
        ]
    );
    assert_eq!(
        h.fake.get(&deployment_path("acme-collector")).unwrap()["spec"]["replicas"],
        2
    );
    assert!(kafka.describe(&dlq).await.unwrap().is_some(), "topic recreated");
    assert_eq!(
        kafka.describe(&events_topic).await.unwrap().unwrap().retention_ms(),
        Some(24 * 3_600_000)
    );
    let present = |table: &'static str| {
        let wh = &wh;
        async move {
            count(
                wh,
                &format!(
                    "SELECT count() AS n FROM system.tables WHERE database = 'sightline_acme' AND name = '{table}'"
                ),
            )
            .await
        }
    };
    assert_eq!(present("rollup_dims_15m_mv").await, 1, "view recreated");
    assert_eq!(
        count(
            &wh,
            "SELECT count() AS n FROM system.columns WHERE database = 'sightline_acme' AND table = 'events_raw' AND name = 'ingest_source'"
        )
        .await,
        1,
        "column re-added"
    );
    assert_eq!(count(&wh, hourly).await, 0, "the retired hourly layout stays retired");

    // A change no idempotent statement undoes is reported, never "repaired" by a drop.
    wh.execute(
        "ALTER TABLE sightline_acme.storage_state ADD COLUMN note String DEFAULT ''",
        &Params::new(),
    )
    .await
    .unwrap();
    let (result, _, _) = h.reconcile("acme").await;
    result.unwrap();
    let status = h.status("acme");
    assert_eq!(condition(&status, "InSync"), ("False", "DriftDetected"));
    assert!(message(&status, "InSync").contains("table definition sightline_acme.storage_state: differs from the plan's definition; putting it back would drop or rewrite data"));
    assert_eq!(
        condition(&status, "Ready").0,
        "True",
        "drift alone does not make it unready"
    );
    assert_eq!(
        count(
            &wh,
            "SELECT count() AS n FROM system.columns WHERE database = 'sightline_acme' AND table = 'storage_state' AND name = 'note'"
        )
        .await,
        1,
        "nothing dropped"
    );
    // Reported once: the next reconcile finds the same and does not count it again.
    let counted = h.drift_counted("table_definition");
    h.reconcile("acme").await.0.unwrap();
    assert_eq!(h.drift_counted("table_definition"), counted);
}

#[tokio::test(flavor = "multi_thread")]
async fn drift_policy_report_lists_drift_and_leaves_it() {
    let t = tenant("acme", &format!("{SPEC}\ndriftPolicy: Report"), false, 0);
    let h = Harness::start(&[&t]).await;
    h.reconcile("acme").await.0.unwrap();
    let wh = h.engines.warehouse();
    wh.execute("DROP TABLE sightline_acme.rollup_dims_15m_mv", &Params::new())
        .await
        .unwrap();
    h.fake
        .edit(&deployment_path("acme-query"), |d| d["spec"]["replicas"] = json!(5));
    let (result, calls, events) = h.reconcile("acme").await;
    result.unwrap();
    let status = h.status("acme");
    assert_eq!(condition(&status, "InSync"), ("False", "DriftDetected"));
    let listed = message(&status, "InSync");
    assert!(
        listed.contains("table sightline_acme.rollup_dims_15m_mv: missing"),
        "{listed}"
    );
    assert!(
        listed.contains("object Deployment analytics/acme-query: changed at .spec.replicas"),
        "{listed}"
    );
    assert!(!reasons(&events).contains(&"DriftRepaired".to_string()));
    assert_eq!(
        writes(&calls)
            .iter()
            .filter(|w| !w.contains("/events") && !w.ends_with("/status"))
            .count(),
        0
    );
    assert_eq!(
        h.fake.get(&deployment_path("acme-query")).unwrap()["spec"]["replicas"],
        5
    );
    assert_eq!(
        count(
            &wh,
            "SELECT count() AS n FROM system.tables WHERE database = 'sightline_acme' AND name = 'rollup_dims_15m_mv'"
        )
        .await,
        0,
        "left as found"
    );
    // The missing view makes the schema not ready: someone must act.
    assert_eq!(condition(&status, "SchemaReady"), ("False", "Missing"));
    assert_eq!(condition(&status, "Stalled"), ("True", "Missing"));
    assert_eq!(h.drift_counted("table_missing"), 1);
    assert_eq!(h.drift_counted("kubernetes_object"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn observed_generation_lags_after_a_spec_edit_until_the_reconcile() {
    let t = tenant("acme", SPEC, false, 0);
    let h = Harness::start(&[&t]).await;
    h.reconcile("acme").await.0.unwrap();
    assert_eq!(h.status("acme").observed_generation, Some(1));

    // A spec edit: generation 2, the status still says 1 until a reconcile of 2 finishes.
    h.edit_tenant("acme", |t| t.spec.tenant.kafka.partitions = 4);
    let edited = h.tenant("acme");
    assert_eq!(edited.metadata.generation, Some(2));
    let status = edited.status.clone().unwrap();
    assert_eq!(
        health(
            false,
            edited.metadata.generation,
            status.observed_generation,
            &status.conditions
        )
        .word(),
        "InProgress"
    );
    // Kafka is down: the reconcile of 2 cannot finish, so 2 is not observed.
    h.engines.broker.stop();
    let (result, _, _) = h.reconcile("acme").await;
    let error = result.unwrap_err();
    assert_eq!(error.reason(), "KafkaUnavailable");
    let status = h.status("acme");
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(condition(&status, "Ready"), ("False", "KafkaUnavailable"));
    assert_eq!(condition(&status, "Reconciling"), ("True", "KafkaUnavailable"));
    assert_eq!(condition(&status, "TopicsReady"), ("False", "KafkaUnavailable"));
    assert_eq!(status.condition("TopicsReady").unwrap().observed_generation, Some(2));
    assert_eq!(
        health(false, Some(2), status.observed_generation, &status.conditions).word(),
        "InProgress"
    );
    // Retried with backoff (5 s, then 10 s), not at the slow resync pace.
    let obj = Arc::new(h.tenant("acme"));
    assert_eq!(
        error_policy(obj.clone(), &error, h.ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        error_policy(obj, &error, h.ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );

    // Kafka is back: generation 2 is applied (grown, not drift) and observed.
    h.engines.broker.resume();
    let (result, _, events) = h.reconcile("acme").await;
    result.unwrap();
    let status = h.status("acme");
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(condition(&status, "Ready"), ("True", "Reconciled"));
    assert_eq!(condition(&status, "InSync"), ("True", "NoDrift"));
    assert!(!reasons(&events).contains(&"DriftRepaired".to_string()));
    assert_eq!(
        h.engines
            .kafka()
            .describe(&topics("acme")[0])
            .await
            .unwrap()
            .unwrap()
            .partitions,
        4
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_tenant_writes_nothing_and_its_status_is_refreshed() {
    let t = tenant("acme", SPEC, false, 0);
    let h = Harness::start(&[&t]).await;
    h.reconcile("acme").await.0.unwrap();
    // Paused, then a spec edit and drift of every place: none of it is acted on.
    h.edit_tenant("acme", |t| {
        t.metadata.annotations = Some([("sightline.dev/pause-reconciliation".to_string(), "true".to_string())].into());
    });
    h.edit_tenant("acme", |t| {
        t.spec.tenant.kafka.partitions = 5;
        t.spec.tenant.deletion_policy = sightline_core::spec::DeletionPolicy::Delete;
    });
    let wh = h.engines.warehouse();
    wh.execute("DROP TABLE sightline_acme.rollup_dims_15m_mv", &Params::new())
        .await
        .unwrap();
    h.fake.remove(&service_path("acme-query"));
    h.fake.remove(&secret_path("acme"));
    let (result, calls, events) = h.reconcile("acme").await;
    result.unwrap();
    let other_writes: Vec<&Received> = calls
        .iter()
        .filter(|c| c.is_write() && !c.is_status_or_event())
        .collect();
    assert!(other_writes.is_empty(), "a paused tenant wrote: {other_writes:?}");
    assert!(
        calls.iter().any(|c| c.path.ends_with("/status")),
        "the status is refreshed"
    );
    let status = h.status("acme");
    assert_eq!(condition(&status, "ReconciliationPaused"), ("True", "Paused"));
    assert_eq!(condition(&status, "Reconciling"), ("False", "Paused"));
    assert_eq!(condition(&status, "TopicsReady"), ("False", "ChangesPending"));
    assert_eq!(condition(&status, "SigningSecretReady"), ("False", "SecretMissing"));
    assert_eq!(condition(&status, "InSync"), ("False", "DriftDetected"));
    assert!(message(&status, "InSync").contains("object Service analytics/acme-query: deleted"));
    assert_eq!(
        status.observed_generation,
        Some(1),
        "generation 2 is not applied while paused"
    );
    assert!(reasons(&events).contains(&"Paused".to_string()));
    // Nothing changed in Kafka, ClickHouse or Kubernetes.
    assert_eq!(
        h.engines
            .kafka()
            .describe(&topics("acme")[0])
            .await
            .unwrap()
            .unwrap()
            .partitions,
        3
    );
    assert_eq!(
        count(
            &wh,
            "SELECT count() AS n FROM system.tables WHERE database = 'sightline_acme' AND name = 'rollup_dims_15m_mv'"
        )
        .await,
        0
    );
    assert!(h.fake.get(&service_path("acme-query")).is_none());
    assert!(
        h.tenant("acme").metadata.finalizers.is_none(),
        "no finalizer while paused"
    );

    // Unpaused: everything is applied (the Secret stays missing: never regenerated silently).
    h.edit_tenant("acme", |t| t.metadata.annotations = None);
    let (result, _, _) = h.reconcile("acme").await;
    assert_eq!(result.unwrap(), Action::await_change(), "the finalizer goes on first");
    h.reconcile("acme").await.0.unwrap();
    let status = h.status("acme");
    assert_eq!(condition(&status, "ReconciliationPaused"), ("False", "NotPaused"));
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(
        h.engines
            .kafka()
            .describe(&topics("acme")[0])
            .await
            .unwrap()
            .unwrap()
            .partitions,
        5
    );
    assert!(h.fake.get(&service_path("acme-query")).is_some());
    assert_eq!(condition(&status, "SigningSecretReady"), ("False", "SecretMissing"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_signing_secret_is_reported_and_regenerated_only_on_request() {
    let t = tenant("acme", SPEC, false, 0);
    let h = Harness::start(&[&t]).await;
    h.reconcile("acme").await.0.unwrap();
    let first = h.status("acme").signing_key_fingerprint.unwrap();

    h.fake.remove(&secret_path("acme"));
    let (result, calls, events) = h.reconcile("acme").await;
    result.unwrap();
    assert!(
        !calls
            .iter()
            .any(|c| c.method == Method::POST && c.path.contains("/secrets")),
        "not recreated"
    );
    let status = h.status("acme");
    assert_eq!(condition(&status, "SigningSecretReady"), ("False", "SecretMissing"));
    assert!(message(&status, "SigningSecretReady").contains("sightline.dev/regenerate-signing-secret=true"));
    assert_eq!(condition(&status, "Ready"), ("False", "SecretMissing"));
    assert_eq!(condition(&status, "Stalled"), ("True", "SecretMissing"));
    assert!(reasons(&events).contains(&"SecretMissing".to_string()));
    assert_eq!(h.drift_counted("signing_secret"), 1);
    // Again: still reported, still not made.
    h.reconcile("acme").await.0.unwrap();
    assert!(h.fake.get(&secret_path("acme")).is_none());

    // Asked for: a new key, the annotation removed, the pods that read it restarted.
    h.edit_tenant("acme", |t| {
        t.metadata.annotations = Some(
            [(
                "sightline.dev/regenerate-signing-secret".to_string(),
                "true".to_string(),
            )]
            .into(),
        );
    });
    let (result, calls, events) = h.reconcile("acme").await;
    result.unwrap();
    let status = h.status("acme");
    assert_eq!(condition(&status, "SigningSecretReady"), ("True", "Regenerated"));
    assert_ne!(status.signing_key_fingerprint.as_deref(), Some(first.as_str()));
    assert!(h.fake.get(&secret_path("acme")).is_some());
    assert!(
        h.tenant("acme").metadata.annotations.unwrap_or_default().is_empty(),
        "the request is honoured once"
    );
    assert!(reasons(&events).contains(&"SigningSecretRegenerated".to_string()));
    for role in ["acme-collector", "acme-query"] {
        let restart = calls
            .iter()
            .find(|c| c.path == deployment_path(role) && c.query.contains("sightline-operator-restart"))
            .unwrap_or_else(|| panic!("{role} not restarted"));
        assert!(restart.body["spec"]["template"]["metadata"]["annotations"]["sightline.dev/restarted-at"].is_string());
    }

    // Deleted again with the annotation back (a GitOps tool re-applying it): reported, not
    // regenerated, since the request is honoured only after a report.
    h.fake.remove(&secret_path("acme"));
    h.edit_tenant("acme", |t| {
        t.metadata.annotations = Some(
            [(
                "sightline.dev/regenerate-signing-secret".to_string(),
                "true".to_string(),
            )]
            .into(),
        );
    });
    h.reconcile("acme").await.0.unwrap();
    assert_eq!(
        condition(&h.status("acme"), "SigningSecretReady"),
        ("False", "SecretMissing")
    );
    assert!(h.fake.get(&secret_path("acme")).is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_template_is_never_reapplied_and_a_changed_one_is_announced() {
    let t = tenant("acme", SPEC, false, 0);
    let h = Harness::start(&[&t]).await;
    h.reconcile("acme").await.0.unwrap();
    // Reconciled again (as by an upgraded operator that builds the same objects): nothing
    // is written but the status, so no pod restarts.
    let (result, calls, _) = h.reconcile("acme").await;
    result.unwrap();
    assert_eq!(writes(&calls), [format!("PATCH {}/status", tenant_path("acme"))]);

    // The collector as an older operator left it: another template, another version.
    h.fake.edit(&deployment_path("acme-collector"), |d| {
        let a = &mut d["metadata"]["annotations"];
        a["sightline.dev/applied-digest"] = json!("0000000000000000");
        a["sightline.dev/template-digest"] = json!("0000000000000000");
        a["sightline.dev/operator-version"] = json!("0.0.9");
        d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = json!(30);
    });
    h.fake.set_rolling(true);
    let (result, calls, events) = h.reconcile("acme").await;
    result.unwrap();
    assert!(calls
        .iter()
        .any(|c| c.method == Method::PATCH && c.path == deployment_path("acme-collector")));
    let started: Vec<&Value> = events.iter().filter(|e| e["reason"] == "RolloutStarted").collect();
    assert_eq!(started.len(), 1, "{events:?}");
    let note = started[0]["note"].as_str().unwrap();
    assert!(
        note.contains("collector: the pod template changed (operator upgrade 0.0.9 -> "),
        "{note}"
    );
    let status = h.status("acme");
    assert_eq!(condition(&status, "RolloutPending"), ("True", "RolloutInProgress"));
    assert!(message(&status, "RolloutPending").contains("collector: 0 of 2 pods on the current template"));
    assert_eq!(
        condition(&status, "InSync"),
        ("True", "NoDrift"),
        "a change to make is not drift"
    );
    // The rollout finishes.
    h.fake.set_rolling(false);
    h.reconcile("acme").await.0.unwrap();
    assert_eq!(condition(&h.status("acme"), "RolloutPending"), ("False", "UpToDate"));
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_with_policy_delete_drops_everything_or_says_what_is_left() {
    let t = tenant("acme", &format!("{SPEC}\ndeletionPolicy: Delete"), true, 0);
    let h = Harness::start(&[&t]).await;
    provisioned(&h.engines, &t).await;
    h.fake.edit(&tenant_path("acme"), |o| {
        o["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z")
    });

    // ClickHouse away: the topics go, the database stays, and the status says so.
    h.engines.front.set_down(true);
    let (result, _, events) = h.reconcile("acme").await;
    let error = result.unwrap_err();
    assert_eq!(error.reason(), "DeletionBlocked");
    assert!(error.is_transient());
    let status = h.status("acme");
    assert_eq!(condition(&status, "DeletionBlocked"), ("True", "ClickHouseUnavailable"));
    let left = message(&status, "DeletionBlocked");
    assert!(
        left.starts_with("left: database sightline_acme (ClickHouse is unavailable"),
        "{left}"
    );
    assert!(left.contains("dropped: topic sightline.acme.events"), "{left}");
    assert_eq!(condition(&status, "Ready"), ("False", "Deleting"));
    let warning = events
        .iter()
        .find(|e| e["reason"] == "ClickHouseUnavailable")
        .expect("a Warning Event");
    assert_eq!(warning["type"], "Warning");
    assert!(warning["note"]
        .as_str()
        .unwrap()
        .starts_with("DeletionBlocked is True: left: database"));
    assert_eq!(h.tenant("acme").metadata.finalizers, Some(vec![FINALIZER.to_string()]));

    // Back: the database goes, then the finalizer (and with it the tenant).
    h.engines.front.set_down(false);
    let (result, _, events) = h.reconcile("acme").await;
    result.unwrap();
    assert!(reasons(&events).contains(&"Deleted".to_string()));
    assert!(h.fake.get(&tenant_path("acme")).is_none(), "the API server let it go");
    let kafka = h.engines.kafka();
    for topic in topics("acme") {
        eventually(&format!("{topic} deleted"), || async {
            kafka.describe(&topic).await.unwrap().is_none()
        })
        .await;
    }
    let dbs = count(
        &h.engines.warehouse(),
        "SELECT count() AS n FROM system.databases WHERE name = 'sightline_acme'",
    )
    .await;
    assert_eq!(dbs, 0, "database dropped");
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_retain_tenant_never_waits_for_the_operator() {
    let t = tenant("acme", SPEC, false, 0);
    let h = Harness::start(&[&t]).await;
    h.reconcile("acme").await.0.unwrap();
    assert!(
        h.tenant("acme").metadata.finalizers.is_none(),
        "Retain: nothing guards the tenant"
    );
    // A tenant left with the finalizer by an earlier operator loses it at the next reconcile.
    h.edit_tenant("acme", |t| t.metadata.finalizers = Some(vec![FINALIZER.into()]));
    let (result, calls, _) = h.reconcile("acme").await;
    result.unwrap();
    let removal = calls
        .iter()
        .find(|c| c.path == tenant_path("acme") && c.method == Method::PATCH)
        .unwrap();
    assert_eq!(removal.body["metadata"]["finalizers"], json!([]));
    assert!(h.tenant("acme").metadata.finalizers.unwrap_or_default().is_empty());

    // No operator runs any more (nothing reconciles): the tenant is deleted, and the API
    // server lets it go at once, as nothing holds it.
    assert!(h.fake.delete(&tenant_path("acme")), "nothing blocks the deletion");
    assert!(h.fake.get(&tenant_path("acme")).is_none());
    // Topics and database remain.
    for topic in topics("acme") {
        assert!(
            h.engines.kafka().describe(&topic).await.unwrap().is_some(),
            "{topic} kept"
        );
    }
    let tables = count(
        &h.engines.warehouse(),
        "SELECT count() AS n FROM system.tables WHERE database = 'sightline_acme' AND name = 'events_raw'",
    )
    .await;
    assert_eq!(tables, 1, "database kept");
}

#[tokio::test(flavor = "multi_thread")]
async fn clickhouse_down_gives_clickhouse_unavailable() {
    let t = tenant("acme", SPEC, false, 0);
    let h = Harness::start(&[&t]).await;
    h.engines.front.set_down(true);
    let (result, _, events) = h.reconcile("acme").await;
    let error = result.unwrap_err();
    assert!(error.is_transient(), "{error}");
    let status = h.status("acme");
    assert_eq!(condition(&status, "Ready"), ("False", "ClickHouseUnavailable"));
    assert_eq!(condition(&status, "TopicsReady"), ("True", "Provisioned"));
    assert_eq!(condition(&status, "SchemaReady"), ("False", "ClickHouseUnavailable"));
    assert_eq!(condition(&status, "Reconciling"), ("True", "ClickHouseUnavailable"));
    assert_eq!(status.observed_generation, None);
    let r = reasons(&events);
    assert!(
        r.contains(&"ClickHouseUnavailable".to_string()) && r.contains(&"Provisioned".to_string()),
        "{r:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_claiming_another_tenants_database_gets_conflict_and_touches_nothing() {
    let owner = tenant("acme", SPEC, false, 0);
    // Created later, claiming acme's database through the override.
    let intruder = tenant(
        "intruder",
        &format!("{SPEC}\nclickhouse: {{ database: sightline_acme }}"),
        false,
        10,
    );
    let h = Harness::start(&[&owner, &intruder]).await;
    let (result, calls, events) = h.reconcile("intruder").await;
    assert_eq!(result.unwrap_err().reason(), "Conflict");
    assert_eq!(
        writes(&calls).iter().filter(|w| !w.contains("/events")).count(),
        1,
        "{calls:?}"
    );
    let status = h.status("intruder");
    assert_eq!(condition(&status, "Ready"), ("False", "Conflict"));
    assert_eq!(condition(&status, "Stalled"), ("True", "Conflict"));
    assert!(message(&status, "Ready").contains("belongs to tenant acme"));
    assert!(reasons(&events).contains(&"Conflict".to_string()));
    for topic in topics("intruder") {
        assert!(h.engines.kafka().describe(&topic).await.unwrap().is_none());
    }
    let dbs = count(
        &h.engines.warehouse(),
        "SELECT count() AS n FROM system.databases WHERE name = 'sightline_acme'",
    )
    .await;
    assert_eq!(dbs, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_decrease_gets_not_supported_and_changes_nothing() {
    let bigger = tenant("acme", &SPEC.replace("partitions: 3", "partitions: 6"), false, 0);
    let t = tenant("acme", SPEC, false, 0);
    let h = Harness::start(&[&t]).await;
    provisioned(&h.engines, &bigger).await;
    let (result, _, _) = h.reconcile("acme").await;
    assert_eq!(result.unwrap_err().reason(), "NotSupported");
    let status = h.status("acme");
    assert_eq!(condition(&status, "Ready"), ("False", "NotSupported"));
    assert_eq!(condition(&status, "Stalled"), ("True", "NotSupported"));
    assert!(message(&status, "TopicsReady").contains("never shrink"));
    assert_eq!(
        h.engines
            .kafka()
            .describe(&topics("acme")[0])
            .await
            .unwrap()
            .unwrap()
            .partitions,
        6
    );
}
