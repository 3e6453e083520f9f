//! The Reprocess reconciler against a mocked Kubernetes API server (the tower-test pattern
//! of operator_reconcile.rs: "given this Reprocess and tenant, expect these API calls").
//! The reconciler touches no Kafka; ClickHouse only for the plan's read-only queries
//! (`system.parts` of the tenant's `events_raw`), answered here by the embedded engine with
//! the tenant's schema. The clock is fixed: nothing depends on today's date.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use http::Method;
use kube::runtime::controller::Action;
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde_json::{json, Value};
use sightline_core::warehouse::embedded::Embedded;
use sightline_operator::crd::{AnalyticsTenant, AnalyticsTenantSpec};
use sightline_operator::reprocess::controller::{reconcile, ReprocessContext};
use sightline_operator::reprocess::crd::{Phase, Reprocess, ReprocessResourceSpec, ReprocessStatus};
use sightline_operator::reprocess::plan::FixedWarehouse;
use sightline_operator::validate::OperatorConfig;
use sightline_tests::kube_api::{mock_client, not_found, ApiServer, Received};

const NS: &str = "analytics";
const POLL: Duration = Duration::from_secs(30);
/// How often a Reprocess with a Job is looked at (`MAX_POLL_RUNNING`).
const RUNNING_POLL: Duration = Duration::from_secs(20);

/// The tenant's image, pinned by digest (so the plan needs no look at the operator's pod).
fn pinned_image() -> String {
    format!("registry.example/sightline@sha256:{}", "ab".repeat(32))
}

/// The embedded engine with `acme`'s schema (kept by the test, dropped at its end).
async fn engine() -> (tempfile::TempDir, Arc<Embedded>) {
    let dir = tempfile::tempdir().unwrap();
    let wh = Arc::new(Embedded::open(&dir.path().join("engine"), 2).unwrap());
    let core = sightline_tests::replay_support::tenant("acme");
    sightline_tests::replay_support::prepare(wh.as_ref(), &core).await;
    (dir, wh)
}

/// 2026-11-20T12:00:00Z: days up to the middle of November are sealed.
fn now() -> DateTime<Utc> {
    "2026-11-20T12:00:00Z".parse().unwrap()
}

fn tenant() -> AnalyticsTenant {
    let mut t = AnalyticsTenant::new(
        "acme",
        AnalyticsTenantSpec {
            tenant: serde_yaml::from_str(&format!(
                "sites: {{ allowed: [{{ id: shop.example.com }}] }}\ningest: {{ image: {} }}",
                pinned_image()
            ))
            .unwrap(),
        },
    );
    t.metadata.uid = Some("uid-acme".into());
    t.metadata.generation = Some(1);
    t
}

/// A Reprocess as the API hands it over; `age` orders creation (smaller is older).
fn reprocess(name: &str, spec: &str, age: i64, status: Option<ReprocessStatus>) -> Reprocess {
    let mut rp = Reprocess::new(name, ReprocessResourceSpec::new(serde_yaml::from_str(spec).unwrap()));
    rp.metadata.namespace = Some(NS.into());
    rp.metadata.uid = Some(format!("uid-{name}"));
    rp.metadata.generation = Some(1);
    rp.metadata.resource_version = Some("7".into());
    rp.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + age).unwrap(),
    ));
    rp.status = status;
    rp
}

const WEEK: &str = "tenantRef: acme\nfrom: 2026-11-01\nto: 2026-11-08\n";

fn context(client: kube::Client, known: &[&Reprocess], wh: &Arc<Embedded>) -> Arc<ReprocessContext> {
    let (store, mut writer) = reflector::store::<Reprocess>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for rp in known {
        writer.apply_watcher_event(&watcher::Event::InitApply((*rp).clone()));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    Arc::new(
        ReprocessContext::new(client, OperatorConfig::example(NS), store, Arc::new(now), POLL)
            .with_warehouses(Arc::new(FixedWarehouse(wh.clone())))
            .with_own_pod(None),
    )
}

/// Runs one reconcile while `serve` plays the API server.
async fn reconcile_with<T: Send + 'static>(
    ctx: &Arc<ReprocessContext>,
    rp: &Reprocess,
    api: ApiServer,
    serve: impl FnOnce(ApiServer) -> futures_util::future::BoxFuture<'static, (ApiServer, T)>,
) -> (Result<Action, sightline_operator::Error>, ApiServer, T) {
    let verifier = tokio::spawn(serve(api));
    let result = tokio::time::timeout(Duration::from_secs(30), reconcile(Arc::new(rp.clone()), ctx.clone()))
        .await
        .expect("reconcile finished within 30 s");
    let (api, out) = tokio::time::timeout(Duration::from_secs(30), verifier)
        .await
        .expect("the scenario completed")
        .expect("the scenario did not panic");
    (result, api, out)
}

async fn expect_tenant(api: &mut ApiServer, found: bool) {
    api.expect(
        Method::GET,
        "/apis/sightline.dev/v1alpha1/analyticstenants/acme",
        |_| {
            if found {
                (200, serde_json::to_value(tenant()).unwrap())
            } else {
                (404, not_found("analyticstenants.sightline.dev \"acme\""))
            }
        },
    )
    .await;
}

/// The ServiceAccount, Role and RoleBinding, each a forced server-side apply.
async fn expect_rbac(api: &mut ApiServer, child: &str) -> Vec<Received> {
    let mut applied = Vec::new();
    for path in [
        format!("/api/v1/namespaces/{NS}/serviceaccounts/{child}"),
        format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles/{child}"),
        format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/rolebindings/{child}"),
    ] {
        applied.push(api.expect_apply(&path, None).await);
    }
    applied
}

fn job_path(child: &str) -> String {
    format!("/apis/batch/v1/namespaces/{NS}/jobs/{child}")
}

/// The finalizer added by a merge patch carrying the resourceVersion read ("7"); the
/// answer moves it to "8".
async fn expect_finalizer_added(api: &mut ApiServer, name: &str) -> Received {
    let received = api
        .expect(
            Method::PATCH,
            &format!("/apis/sightline.dev/v1alpha1/namespaces/{NS}/reprocesses/{name}"),
            |r| {
                let mut echo = serde_json::to_value(reprocess(name, WEEK, 0, None)).unwrap();
                echo["metadata"]["finalizers"] = r.body["metadata"]["finalizers"].clone();
                echo["metadata"]["resourceVersion"] = json!("8");
                (200, echo)
            },
        )
        .await;
    assert_eq!(
        received.body["metadata"],
        json!({"resourceVersion": "7", "finalizers": ["sightline.dev/cancel"]}),
        "{:?}",
        received.body
    );
    received
}

/// The status write: a merge patch carrying the resourceVersion read ("7", or "8" after
/// the finalizer was added, "9" after the plan was written before the Job); the answer
/// moves it one on. Returns the status.
async fn expect_status(api: &mut ApiServer, name: &str, code: u16) -> ReprocessStatus {
    expect_status_at(api, name, code, "7").await
}

async fn expect_status_at(api: &mut ApiServer, name: &str, code: u16, version: &str) -> ReprocessStatus {
    let received = api
        .expect(
            Method::PATCH,
            &format!("/apis/sightline.dev/v1alpha1/namespaces/{NS}/reprocesses/{name}/status"),
            |r| {
                if code == 409 {
                    (409, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Conflict", "code": 409, "message": "the object has been modified"}))
                } else {
                    let mut echo = serde_json::to_value(reprocess(name, WEEK, 0, None)).unwrap();
                    echo["status"] = r.body["status"].clone();
                    let next = version.parse::<u64>().expect("a numeric resourceVersion") + 1;
                    echo["metadata"]["resourceVersion"] = json!(next.to_string());
                    (200, echo)
                }
            },
        )
        .await;
    assert_eq!(
        received.body["metadata"]["resourceVersion"], version,
        "the write carries the version it was based on: {:?}",
        received.body
    );
    serde_json::from_value(received.body["status"].clone()).unwrap()
}

fn condition(s: &ReprocessStatus, type_: &str) -> (String, String, String) {
    let c = s
        .condition(type_)
        .unwrap_or_else(|| panic!("no {type_} condition: {s:?}"));
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_first_reconcile_creates_the_owned_job_with_its_own_narrow_service_account() {
    let (_dir, wh) = engine().await;
    let (client, api) = mock_client();
    let rp = reprocess("fix", WEEK, 0, None);
    let ctx = context(client, &[&rp], &wh);
    let (result, _, (rbac, job, status)) = reconcile_with(&ctx, &rp, api, |mut api| {
        Box::pin(async move {
            expect_tenant(&mut api, true).await;
            api.expect(Method::GET, &job_path("fix-replay"), |_| {
                (404, not_found("jobs.batch \"fix-replay\""))
            })
            .await;
            expect_finalizer_added(&mut api, "fix").await;
            let rbac = expect_rbac(&mut api, "fix-replay").await;
            // The plan is recorded before the Job that runs it exists.
            let planned = expect_status_at(&mut api, "fix", 200, "8").await;
            let job = api.expect_apply(&job_path("fix-replay"), None).await;
            let status = expect_status_at(&mut api, "fix", 200, "9").await;
            (api, (rbac, job, (planned, status)))
        })
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(RUNNING_POLL));
    let (planned, status) = status;
    assert_eq!(condition(&planned, "Approved").0, "True");
    assert_eq!(planned.job_name, None, "no Job yet when the plan was written");
    assert_eq!(
        status.plan, None,
        "the plan is not sent again (a merge patch of changes)"
    );
    let owner = &job.body["metadata"]["ownerReferences"][0];
    assert_eq!(
        (
            owner["kind"].as_str(),
            owner["name"].as_str(),
            owner["uid"].as_str(),
            owner["controller"].as_bool()
        ),
        (Some("Reprocess"), Some("fix"), Some("uid-fix"), Some(true))
    );
    let pod = &job.body["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "fix-replay");
    assert_eq!(
        pod["containers"][0]["image"],
        pinned_image(),
        "the plan's image, by digest"
    );
    assert_eq!(
        pod["containers"][0]["args"].as_array().unwrap()[0..3],
        [json!("reprocess"), json!("--resource"), json!("analytics/fix")]
    );
    for r in &rbac {
        assert_eq!(r.body["metadata"]["ownerReferences"][0]["name"], "fix");
    }
    let rules = &rbac[1].body["rules"];
    assert_eq!(
        rules,
        &json!([
            {"apiGroups": ["sightline.dev"], "resources": ["reprocesses"], "resourceNames": ["fix"], "verbs": ["get"]},
            {"apiGroups": ["sightline.dev"], "resources": ["reprocesses/status"], "resourceNames": ["fix"], "verbs": ["patch"]},
        ])
    );
    assert_eq!(rbac[2].body["subjects"][0]["name"], "fix-replay");
    assert_eq!(status.phase, Phase::Pending);
    assert_eq!(condition(&status, "Complete").0, "False");
    assert_eq!(condition(&status, "Complete").1, "JobStarting");
    assert_eq!(status.job_name.as_deref(), Some("fix-replay"));
    // The plan, read from the warehouse (no raw rows yet), approved at once (Automatic).
    let plan = planned.plan.as_ref().expect("a plan");
    assert_eq!(plan.hash.len(), 64);
    assert_eq!(
        (plan.first_day.as_str(), plan.last_day.as_str(), plan.days),
        ("2026-11-01", "2026-11-07", 7)
    );
    assert_eq!((plan.rows, plan.image.as_str()), (0, pinned_image().as_str()));
    assert_eq!(condition(&status, "Approved").1, "AutomaticApproval");
    assert_eq!(condition(&status, "Approved").0, "True");
    assert_eq!(condition(&planned, "Approved"), condition(&status, "Approved"));
    assert_eq!(condition(&status, "Progressing").0, "True");
    assert_eq!(condition(&status, "Stalled").0, "False");
    for c in &status.conditions {
        assert_eq!(c.observed_generation, Some(1), "{c:?}");
    }
    assert_eq!(planned.observed_generation, Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_overlapping_later_reprocess_is_queued_naming_the_one_it_waits_for() {
    let (_dir, wh) = engine().await;
    let (client, api) = mock_client();
    let running = ReprocessStatus {
        phase: Phase::Running,
        ..Default::default()
    };
    let first = reprocess("first", WEEK, 0, Some(running));
    let second = reprocess(
        "second",
        "tenantRef: acme\nfrom: 2026-11-05\nto: 2026-11-10\n",
        60,
        None,
    );
    let ctx = context(client, &[&first, &second], &wh);
    let (result, mut api, status) = reconcile_with(&ctx, &second, api, |mut api| {
        Box::pin(async move {
            expect_tenant(&mut api, true).await;
            api.expect(Method::GET, &job_path("second-replay"), |_| (404, not_found("job")))
                .await;
            // No Job, no RBAC: straight to the status.
            let status = expect_status(&mut api, "second", 200).await;
            (api, status)
        })
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(POLL));
    assert_eq!(status.phase, Phase::Pending);
    let (complete, reason, message) = condition(&status, "Complete");
    assert_eq!((complete.as_str(), reason.as_str()), ("False", "Queued"));
    assert!(message.contains("waits for Reprocess analytics/first"), "{message}");
    assert_eq!(status.message.as_deref(), Some(message.as_str()));
    api.expect_silence(Duration::from_millis(200)).await;

    // Once the first finished, the second gets its Job.
    let (client, api) = mock_client();
    let done = ReprocessStatus {
        phase: Phase::Succeeded,
        ..Default::default()
    };
    let first = reprocess("first", WEEK, 0, Some(done));
    let ctx = context(client, &[&first, &second], &wh);
    let (result, _, job) = reconcile_with(&ctx, &second, api, |mut api| {
        Box::pin(async move {
            expect_tenant(&mut api, true).await;
            api.expect(Method::GET, &job_path("second-replay"), |_| (404, not_found("job")))
                .await;
            expect_finalizer_added(&mut api, "second").await;
            expect_rbac(&mut api, "second-replay").await;
            expect_status_at(&mut api, "second", 200, "8").await;
            let job = api.expect_apply(&job_path("second-replay"), None).await;
            expect_status_at(&mut api, "second", 200, "9").await;
            (api, job)
        })
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(RUNNING_POLL));
    assert_eq!(job.body["metadata"]["ownerReferences"][0]["name"], "second");
}

/// The Job as the API answers a GET, with `status`.
fn job_with(rp: &Reprocess, status: Value) -> Value {
    let children = sightline_operator::reprocess::build::build(
        &sightline_operator::reprocess::build::Owner::of(rp).unwrap(),
        &sightline_operator::validate::validate(&tenant(), &OperatorConfig::example(NS)).unwrap(),
        &pinned_image(),
    );
    let mut job = sightline_operator::build::typed(&children.job).unwrap();
    job["status"] = status;
    job
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_with_a_pod_leaves_running_to_the_pod_and_a_failed_job_makes_it_failed_with_the_reason() {
    let (_dir, wh) = engine().await;
    let (client, api) = mock_client();
    let rp = reprocess("fix", WEEK, 0, None);
    let ctx = context(client, &[&rp], &wh);
    let active = job_with(&rp, json!({"active": 1}));
    let (result, _, status) = reconcile_with(&ctx, &rp, api, |mut api| {
        Box::pin(async move {
            expect_tenant(&mut api, true).await;
            api.expect(Method::GET, &job_path("fix-replay"), |_| (200, active))
                .await;
            expect_finalizer_added(&mut api, "fix").await;
            expect_rbac(&mut api, "fix-replay").await;
            let status = expect_status_at(&mut api, "fix", 200, "8").await;
            (api, status)
        })
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(RUNNING_POLL));
    // Only the pod says Running (a deletion then waits for it); the operator says it has one.
    assert_eq!(status.phase, Phase::Pending);
    assert_eq!(condition(&status, "Complete").1, "PodStarting");
    assert!(status.started_at.is_none());
    assert_eq!(status.job_name.as_deref(), Some("fix-replay"));

    let (client, api) = mock_client();
    let ctx = context(client, &[&rp], &wh);
    let failed = job_with(
        &rp,
        json!({"failed": 4, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                             "message": "Job has reached the specified backoff limit"}]}),
    );
    let (result, _, status) = reconcile_with(&ctx, &rp, api, |mut api| {
        Box::pin(async move {
            expect_tenant(&mut api, true).await;
            api.expect(Method::GET, &job_path("fix-replay"), |_| (200, failed))
                .await;
            expect_finalizer_added(&mut api, "fix").await;
            expect_rbac(&mut api, "fix-replay").await;
            let status = expect_status_at(&mut api, "fix", 200, "8").await;
            (api, status)
        })
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
    assert_eq!(status.phase, Phase::Failed);
    let (failed, reason, message) = condition(&status, "Failed");
    assert_eq!((failed.as_str(), reason.as_str()), ("True", "JobFailed"));
    assert!(message.contains("BackoffLimitExceeded"), "{message}");
    assert_eq!(condition(&status, "Complete").0, "False");
    assert!(status.finished_at.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_failed_with_a_reason_that_says_which() {
    let (_dir, wh) = engine().await;
    let cases = [
        (
            "tenantRef: nope\nfrom: 2026-11-01\nto: 2026-11-08\n",
            "UnknownTenant",
            "nope",
        ),
        (
            "tenantRef: acme\nfrom: 2026-12-01\nto: 2026-12-02\n",
            "RangeInFuture",
            "2026-12-01",
        ),
        (
            "tenantRef: acme\nfrom: 2026-11-18\nto: 2026-11-20\n",
            "NotSealed",
            "spec.force",
        ),
        (
            "tenantRef: acme\nfrom: 2026-11-01\nto: 2026-11-08\nsites: [other.example.com]\n",
            "Invalid",
            "other.example.com",
        ),
    ];
    for (spec, want_reason, want_in_message) in cases {
        let (client, api) = mock_client();
        let rp = reprocess("fix", spec, 0, None);
        let ctx = context(client, &[&rp], &wh);
        let known = !spec.contains("nope");
        let (result, mut api, status) = reconcile_with(&ctx, &rp, api, move |mut api| {
            Box::pin(async move {
                if known {
                    expect_tenant(&mut api, true).await;
                } else {
                    api.expect(
                        Method::GET,
                        "/apis/sightline.dev/v1alpha1/analyticstenants/nope",
                        |_| (404, not_found("analyticstenants.sightline.dev \"nope\"")),
                    )
                    .await;
                }
                let status = expect_status(&mut api, "fix", 200).await;
                (api, status)
            })
        })
        .await;
        assert_eq!(result.unwrap(), Action::await_change(), "{want_reason}");
        assert_eq!(status.phase, Phase::Failed, "{want_reason}");
        let (failed, reason, message) = condition(&status, "Failed");
        assert_eq!((failed.as_str(), reason.as_str()), ("True", want_reason), "{message}");
        assert!(message.contains(want_in_message), "{want_reason}: {message}");
        // Nothing was created for a refused Reprocess.
        api.expect_silence(Duration::from_millis(100)).await;
    }

    // A tenant on a ClickHouse cluster: no Job for a replay the engine cannot do there.
    let (client, api) = mock_client();
    let rp = reprocess("fix", WEEK, 0, None);
    let ctx = context(client, &[&rp], &wh);
    let mut clustered = serde_json::to_value(tenant()).unwrap();
    clustered["spec"]["clickhouse"] = json!({"cluster": "analytics"});
    let (result, mut api, status) = reconcile_with(&ctx, &rp, api, |mut api| {
        Box::pin(async move {
            api.expect(
                Method::GET,
                "/apis/sightline.dev/v1alpha1/analyticstenants/acme",
                |_| (200, clustered),
            )
            .await;
            let status = expect_status(&mut api, "fix", 200).await;
            (api, status)
        })
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
    let (failed, reason, message) = condition(&status, "Failed");
    assert_eq!((failed.as_str(), reason.as_str()), ("True", "NotSupported"));
    assert!(message.contains("ClickHouse cluster analytics"), "{message}");
    api.expect_silence(Duration::from_millis(100)).await;

    // Outside the tenant's namespace.
    let (client, api) = mock_client();
    let mut rp = reprocess("fix", WEEK, 0, None);
    rp.metadata.namespace = Some("default".into());
    let ctx = context(client, &[&rp], &wh);
    let echo = serde_json::to_value(&rp).unwrap();
    let (result, _, received) = reconcile_with(&ctx, &rp, api, |mut api| {
        Box::pin(async move {
            expect_tenant(&mut api, true).await;
            let r = api
                .expect(
                    Method::PATCH,
                    "/apis/sightline.dev/v1alpha1/namespaces/default/reprocesses/fix/status",
                    |r| {
                        let mut echo = echo;
                        echo["status"] = r.body["status"].clone();
                        (200, echo)
                    },
                )
                .await;
            (api, r)
        })
    })
    .await;
    assert_eq!(result.unwrap(), Action::await_change());
    let status: ReprocessStatus = serde_json::from_value(received.body["status"].clone()).unwrap();
    let (_, reason, message) = condition(&status, "Failed");
    assert_eq!(reason, "WrongNamespace");
    assert!(message.contains("must be in namespace analytics"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_write_that_lost_the_race_with_the_pod_is_retried_and_a_final_one_is_left_alone() {
    let (_dir, wh) = engine().await;
    let (client, api) = mock_client();
    let rp = reprocess("fix", WEEK, 0, None);
    let ctx = context(client, &[&rp], &wh);
    let active = job_with(&rp, json!({"active": 1}));
    let (result, _, _) = reconcile_with(&ctx, &rp, api, |mut api| {
        Box::pin(async move {
            expect_tenant(&mut api, true).await;
            api.expect(Method::GET, &job_path("fix-replay"), |_| (200, active))
                .await;
            expect_finalizer_added(&mut api, "fix").await;
            expect_rbac(&mut api, "fix-replay").await;
            expect_status_at(&mut api, "fix", 409, "8").await;
            (api, ())
        })
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(1)));

    for phase in [Phase::Succeeded, Phase::Failed, Phase::Cancelled] {
        let (client, mut api) = mock_client();
        let done = reprocess(
            "fix",
            WEEK,
            0,
            Some(ReprocessStatus {
                phase,
                ..Default::default()
            }),
        );
        let ctx = context(client, &[&done], &wh);
        let result = reconcile(Arc::new(done), ctx).await;
        assert_eq!(result.unwrap(), Action::await_change());
        api.expect_silence(Duration::from_millis(100)).await;
    }
}

/// A Reprocess with the finalizer, `phase`, and (when `deleted`) a deletion under way.
fn guarded(phase: Phase, deleted: bool) -> Reprocess {
    // A running one's pod heartbeat 10 s ago.
    let started_at = (phase == Phase::Running)
        .then(|| sightline_operator::reprocess::status::time(now() - chrono::Duration::seconds(10)));
    let mut rp = reprocess(
        "fix",
        WEEK,
        0,
        Some(ReprocessStatus {
            phase,
            started_at,
            ..Default::default()
        }),
    );
    rp.metadata.finalizers = Some(vec!["sightline.dev/cancel".into()]);
    if deleted {
        rp.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1_800_000_100).unwrap(),
        ));
    }
    rp
}

/// The finalizer removed by a merge patch carrying the resourceVersion read.
async fn expect_finalizer_removed(api: &mut ApiServer) {
    let received = api
        .expect(
            Method::PATCH,
            &format!("/apis/sightline.dev/v1alpha1/namespaces/{NS}/reprocesses/fix"),
            |r| {
                let mut echo = serde_json::to_value(reprocess("fix", WEEK, 0, None)).unwrap();
                echo["metadata"]["finalizers"] = r.body["metadata"]["finalizers"].clone();
                (200, echo)
            },
        )
        .await;
    assert_eq!(
        received.body["metadata"],
        json!({"resourceVersion": "7", "finalizers": []})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_final_reprocess_loses_its_finalizer_so_nothing_waits_on_it() {
    let (_dir, wh) = engine().await;
    for phase in [Phase::Succeeded, Phase::Failed, Phase::Cancelled] {
        let (client, api) = mock_client();
        let rp = guarded(phase, false);
        let ctx = context(client, &[&rp], &wh);
        let (result, mut api, ()) = reconcile_with(&ctx, &rp, api, |mut api| {
            Box::pin(async move {
                expect_finalizer_removed(&mut api).await;
                (api, ())
            })
        })
        .await;
        assert_eq!(result.unwrap(), Action::await_change(), "{phase:?}");
        api.expect_silence(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_reprocess_waits_for_its_running_pod_and_no_longer() {
    let (_dir, wh) = engine().await;
    // Its pod replays a day: the operator looks at the Job and waits, writing nothing.
    let (client, api) = mock_client();
    let rp = guarded(Phase::Running, true);
    let ctx = context(client, &[&rp], &wh);
    let active = job_with(&rp, json!({"active": 1}));
    let (result, mut api, ()) = reconcile_with(&ctx, &rp, api, |mut api| {
        Box::pin(async move {
            api.expect(Method::GET, &job_path("fix-replay"), |_| (200, active))
                .await;
            (api, ())
        })
    })
    .await;
    assert_eq!(result.unwrap(), Action::requeue(Duration::from_secs(5)));
    api.expect_silence(Duration::from_millis(100)).await;

    // Running, but its Job has no pod left (it failed, or its pod was killed): no one to
    // wait for. Pending (no pod started a day) and final: at once, without looking.
    for (phase, job) in [
        (
            Phase::Running,
            Some(json!({"failed": 4, "conditions": [{"type": "Failed", "status": "True"}]})),
        ),
        (Phase::Running, None),
        (Phase::Pending, None),
        (Phase::Succeeded, None),
    ] {
        let (client, api) = mock_client();
        let rp = guarded(phase, true);
        let ctx = context(client, &[&rp], &wh);
        let job = job.map(|status| job_with(&rp, status));
        let (result, _, reasons) = reconcile_with(&ctx, &rp, api, move |mut api| {
            Box::pin(async move {
                if phase == Phase::Running {
                    api.expect(Method::GET, &job_path("fix-replay"), |_| match job {
                        Some(job) => (200, job),
                        None => (404, not_found("job")),
                    })
                    .await;
                }
                let reasons = api.expect_events(NS, 1).await;
                expect_finalizer_removed(&mut api).await;
                (api, reasons)
            })
        })
        .await;
        assert_eq!(result.unwrap(), Action::await_change(), "{phase:?}");
        let want = if phase == Phase::Succeeded {
            "Deleted"
        } else {
            "Cancelled"
        };
        assert_eq!(reasons, [want], "{phase:?}");
    }

    // Running with a pod, but one no write will come from: silent past the heartbeat
    // timeout, or the Job a stall replaces (its deletion failed). Not waited for.
    let silent = {
        let mut rp = guarded(Phase::Running, true);
        rp.status.as_mut().unwrap().started_at = Some(sightline_operator::reprocess::status::time(
            now() - chrono::Duration::seconds(61),
        ));
        (rp, None)
    };
    let replaced = {
        let mut rp = guarded(Phase::Running, true);
        rp.status.as_mut().unwrap().replaced_job_uid = Some("uid-stalled-job".into());
        (rp, Some("uid-stalled-job"))
    };
    for (rp, uid) in [silent, replaced] {
        let (client, api) = mock_client();
        let ctx = context(client, &[&rp], &wh);
        let mut job = job_with(&rp, json!({"active": 1}));
        if let Some(uid) = uid {
            job["metadata"]["uid"] = json!(uid);
        }
        let (result, _, reasons) = reconcile_with(&ctx, &rp, api, move |mut api| {
            Box::pin(async move {
                api.expect(Method::GET, &job_path("fix-replay"), |_| (200, job)).await;
                let reasons = api.expect_events(NS, 1).await;
                expect_finalizer_removed(&mut api).await;
                (api, reasons)
            })
        })
        .await;
        assert_eq!(result.unwrap(), Action::await_change(), "{uid:?}");
        assert_eq!(reasons, ["Cancelled"]);
    }

    // Without the finalizer (queued, refused): nothing to do.
    let (client, mut api) = mock_client();
    let mut rp = guarded(Phase::Pending, true);
    rp.metadata.finalizers = None;
    let ctx = context(client, &[&rp], &wh);
    assert_eq!(reconcile(Arc::new(rp), ctx).await.unwrap(), Action::await_change());
    api.expect_silence(Duration::from_millis(100)).await;
}
