//! The `Reprocess` resource end to end (issue 15): the operator's reconciler and the Job
//! pod's side (`sightline reprocess --resource`, driven in-process) take turns on the fake
//! API server that holds the objects (`kube_api::FakeApi`: every operator call checked
//! against the installed RBAC, every pod call against the Role the operator made for it),
//! while the pod runs the real replay engine on libchdb. The bug story through the resource (a dry run's deltas in the status,
//! then a real run, then the query API answers what a clean ingest gives), queueing,
//! cancel on delete after the day under way, and resume after a stopped and a killed pod.
//! The clock is fixed (`later()`): nothing depends on today's date.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{Days, NaiveDate};
use http::Method;
use kube::runtime::controller::Action;
use kube::runtime::{reflector, watcher};
use serde_json::{json, Value};
use sightline_core::processor::{Current, Processor};
use sightline_core::token::Scope;
use sightline_core::warehouse::embedded::Embedded;
use sightline_core::warehouse::replay::CancellationToken;
use sightline_core::warehouse::{Params, Warehouse};
use sightline_operator::crd::{AnalyticsTenant, AnalyticsTenantSpec};
use sightline_operator::plugin;
use sightline_operator::reprocess::controller::{reconcile, ReprocessContext};
use sightline_operator::reprocess::crd::{Phase, Reprocess, ReprocessStatus};
use sightline_operator::reprocess::history;
use sightline_operator::reprocess::plan::{FixedWarehouse, OwnPod};
use sightline_operator::reprocess::runner::{Outcome, Runner};
use sightline_operator::reprocess::status::chrono_time;
use sightline_operator::validate::OperatorConfig;
use sightline_tests::kube_api::{mock_client, FakeApi, Hook};
use sightline_tests::replay_support::{checksums, dataset, days, ingest, later, prepare, tenant, Buggy};

const NS: &str = "analytics";
const POLL: Duration = Duration::from_secs(30);
/// How often a Reprocess with a Job is looked at (`MAX_POLL_RUNNING`).
const RUNNING_POLL: Duration = Duration::from_secs(20);
/// Where the operator's own pod is (`POD_NAMESPACE`/`POD_NAME`).
const OPERATOR_NS: &str = "sightline";
const OPERATOR_POD: &str = "sightline-operator-0";

/// The digest the kubelet reports for the operator's image.
fn operator_digest() -> String {
    format!("sha256:{}", "5e".repeat(32))
}

fn rp_path(name: &str) -> String {
    format!("/apis/sightline.dev/v1alpha1/namespaces/{NS}/reprocesses/{name}")
}

fn job_path(name: &str) -> String {
    format!("/apis/batch/v1/namespaces/{NS}/jobs/{name}-replay")
}

/// The dataset's three days as a spec's range.
fn spec(extra: &str) -> Value {
    let mut spec = json!({
        "tenantRef": "buggy",
        "from": days()[0].to_string(),
        "to": (days()[2] + Days::new(1)).to_string(),
    });
    let extra: Value = serde_yaml::from_str(extra).unwrap();
    if let Some(fields) = extra.as_object() {
        for (k, v) in fields {
            spec[k] = v.clone();
        }
    }
    spec
}

/// The world: the tenant `buggy` (the replay tests' tenant) as an AnalyticsTenant.
fn start() -> (kube::Client, FakeApi) {
    let (client, api) = mock_client();
    let api = FakeApi::start(api);
    let mut t = AnalyticsTenant::new(
        "buggy",
        AnalyticsTenantSpec {
            tenant: tenant("buggy").spec,
        },
    );
    t.metadata.generation = Some(1);
    t.metadata.uid = Some("uid-buggy".into());
    api.put(
        "/apis/sightline.dev/v1alpha1/analyticstenants/buggy",
        serde_json::to_value(t).unwrap(),
    );
    // The operator's own pod, as the kubelet reports it: its image (the operator's --image,
    // which the tenant runs too) and that image's digest.
    let image = OperatorConfig::example(NS).image;
    api.put(
        &format!("/api/v1/namespaces/{OPERATOR_NS}/pods/{OPERATOR_POD}"),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": OPERATOR_POD, "namespace": OPERATOR_NS},
            "spec": {"containers": [{"name": "operator", "image": image}]},
            "status": {"containerStatuses": [{"name": "operator", "image": image, "ready": true, "restartCount": 0,
                       "imageID": format!("docker-pullable://ghcr.io/sightline/sightline@{}", operator_digest())}]},
        }),
    );
    (client, api)
}

/// Applies a Reprocess created `age` seconds after the first.
fn create(api: &FakeApi, name: &str, spec: Value, age: i64) {
    let created = chrono::DateTime::from_timestamp(1_800_000_000 + age, 0).unwrap();
    api.put(
        &rp_path(name),
        json!({
            "apiVersion": "sightline.dev/v1alpha1", "kind": "Reprocess",
            "metadata": {"name": name, "namespace": NS, "generation": 1, "uid": format!("uid-{name}"),
                         "creationTimestamp": created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)},
            "spec": spec,
        }),
    );
}

fn object(api: &FakeApi, name: &str) -> Option<Reprocess> {
    api.get(&rp_path(name)).map(|o| serde_json::from_value(o).unwrap())
}

fn status(api: &FakeApi, name: &str) -> ReprocessStatus {
    object(api, name).and_then(|o| o.status).unwrap_or_default()
}

/// One reconcile by an operator that has just started (its cache: the world's Reprocesses),
/// whose plans read `wh`.
async fn operator(client: &kube::Client, api: &FakeApi, name: &str, wh: &Arc<Embedded>) -> Action {
    operator_with(client, api, name, wh, Arc::new(later), history::DEFAULT_HISTORY_LIMIT).await
}

/// `operator` with a clock and a history limit.
async fn operator_with(
    client: &kube::Client,
    api: &FakeApi,
    name: &str,
    wh: &Arc<Embedded>,
    now: sightline_operator::reprocess::controller::Clock,
    history_limit: usize,
) -> Action {
    let ctx = context(client, api, wh, now, history_limit);
    let rp = object(api, name).expect("the Reprocess exists");
    tokio::time::timeout(Duration::from_secs(30), reconcile(Arc::new(rp), ctx))
        .await
        .expect("a reconcile within 30 s")
        .unwrap()
}

/// The context of an operator that has just started (its cache: the world's Reprocesses).
fn context(
    client: &kube::Client,
    api: &FakeApi,
    wh: &Arc<Embedded>,
    now: sightline_operator::reprocess::controller::Clock,
    history_limit: usize,
) -> Arc<ReprocessContext> {
    let all: Vec<Reprocess> = api
        .objects_under(&format!("/apis/sightline.dev/v1alpha1/namespaces/{NS}/reprocesses/"))
        .into_iter()
        .map(|o| serde_json::from_value(o).unwrap())
        .collect();
    let (store, mut writer) = reflector::store::<Reprocess>();
    writer.apply_watcher_event(&watcher::Event::Init);
    for rp in &all {
        writer.apply_watcher_event(&watcher::Event::InitApply(rp.clone()));
    }
    writer.apply_watcher_event(&watcher::Event::InitDone);
    let ctx = ReprocessContext::new(client.clone(), OperatorConfig::example(NS), store, now, POLL)
        .with_warehouses(Arc::new(FixedWarehouse(wh.clone())))
        .with_own_pod(Some(OwnPod {
            namespace: OPERATOR_NS.into(),
            name: OPERATOR_POD.into(),
        }))
        .with_history_limit(history_limit);
    Arc::new(ctx)
}

/// The Job's pod for `name`, as `sightline reprocess --resource analytics/NAME` runs it,
/// with the fixed processor (its requests logged as `pod:NAME`'s).
fn pod(api: &mut FakeApi, name: &str, interrupt: CancellationToken) -> Runner {
    pod_at(api, name, interrupt, Arc::new(later))
}

/// `pod` with its own clock.
fn pod_at(
    api: &mut FakeApi,
    name: &str,
    interrupt: CancellationToken,
    now: sightline_operator::reprocess::controller::Clock,
) -> Runner {
    Runner {
        api: kube::Api::namespaced(api.client_for_reprocess_pod(name), NS),
        name: name.into(),
        tenants: vec![tenant("buggy")],
        processor: Arc::new(Current),
        now,
        interrupt,
        lease_poll: Duration::from_millis(100),
        lease_wait: Duration::from_secs(120),
        retry_pause: Duration::from_millis(10),
        heartbeat: Duration::from_millis(200),
    }
}

/// The processing identity the fixed processor gives the tenant's days (`v4` today).
fn fixed_identity() -> String {
    sightline_core::processor::identity(
        Current.version(),
        sightline_core::processor::ProcessorConfig {
            bot_filtering: tenant("buggy").spec.bot_filtering,
        },
    )
}

/// `buggy` ingested with the buggy processor, `clean` with the fixed one, in one engine.
async fn engine(seed: u64) -> (tempfile::TempDir, Arc<Embedded>) {
    let dir = tempfile::tempdir().unwrap();
    let wh = Arc::new(Embedded::open(&dir.path().join("engine"), 3).unwrap());
    let events = dataset(seed);
    for (name, processor) in [
        ("buggy", Arc::new(Buggy) as Arc<dyn Processor>),
        ("clean", Arc::new(Current)),
    ] {
        let t = tenant(name);
        prepare(wh.as_ref(), &t).await;
        ingest(wh.as_ref(), &t, processor, &events).await;
    }
    (dir, wh)
}

/// The engine with `buggy`'s schema and no events.
async fn bare_engine() -> (tempfile::TempDir, Arc<Embedded>) {
    let dir = tempfile::tempdir().unwrap();
    let wh = Arc::new(Embedded::open(&dir.path().join("engine"), 2).unwrap());
    prepare(wh.as_ref(), &tenant("buggy")).await;
    (dir, wh)
}

/// Per day, the processing identities of `buggy`'s events.
async fn identities(wh: &dyn Warehouse) -> Vec<(String, String)> {
    wh.select(
        "SELECT toString(toDate(ts)) AS d, arrayStringConcat(arraySort(groupUniqArray(processing)), ',') AS p \
         FROM sightline_buggy.events GROUP BY d ORDER BY d",
        &Params::new(),
    )
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r["d"].as_str().unwrap().to_string(),
            r["p"].as_str().unwrap().to_string(),
        )
    })
    .collect()
}

/// A checksum of `buggy`'s events of one day (every column processing decides).
async fn day_checksum(wh: &dyn Warehouse, day: NaiveDate) -> u64 {
    let rows = wh
        .select(
            "SELECT sum(cityHash64(site_id, event_id, ts, visitor_id, session_id, session_start, visit_delta, \
             bounce_delta, duration_delta, entry_page, session_source, referrer_source, is_bot, processing, sign)) AS h \
             FROM sightline_buggy.events WHERE toDate(ts) = {d:Date}",
            &Params::new().bind("d", day.to_string()),
        )
        .await
        .unwrap();
    rows[0]["h"].as_u64().unwrap()
}

fn condition(s: &ReprocessStatus, type_: &str) -> (String, String, Option<i64>) {
    let c = s
        .condition(type_)
        .unwrap_or_else(|| panic!("no {type_} condition: {s:?}"));
    (c.status.clone(), c.reason.clone(), c.observed_generation)
}

/// The phases of the statuses written to `name`, consecutive repeats folded.
fn phases(api: &FakeApi, name: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (path, s) in &api.status_writes() {
        if *path == rp_path(name) {
            let phase = s["phase"].as_str().unwrap_or_default().to_string();
            if out.last() != Some(&phase) {
                out.push(phase);
            }
        }
    }
    out
}

/// The query API over the engine, on 127.0.0.1 (a free port), reading both tenants.
async fn query_api(wh: Arc<Embedded>) -> (String, tokio::task::JoinHandle<()>) {
    let secret = sightline_tests::secret();
    let registry = Arc::new(sightline_core::registry::Registry::new(
        vec![tenant("buggy"), tenant("clean")],
        &secret,
    ));
    let state = Arc::new(sightline_query::QueryState::new(
        registry,
        wh,
        Arc::new(sightline_core::watermark::Watermarks::default()),
        sightline_query::QueryConfig::default(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, sightline_query::router(state)).await.unwrap();
    });
    (url, server)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bug_story_through_the_resource_dry_run_deltas_then_a_replay_the_query_api_agrees_with() {
    let (_dir, wh) = engine(21).await;
    let buggy_before = checksums(wh.as_ref(), "sightline_buggy").await;
    let clean = checksums(wh.as_ref(), "sightline_clean").await;
    assert_ne!(buggy_before, clean, "the bugs show in the tables");
    let (client, mut api) = start();
    create(&api, "check", spec("{dryRun: true}"), 0);
    create(&api, "fix", spec("{parallelism: 2}"), 10);

    // The dry run is admitted: finalizer, its Job; the real one overlaps it and waits.
    assert_eq!(
        operator(&client, &api, "check", &wh).await,
        Action::requeue(RUNNING_POLL)
    );
    let check = object(&api, "check").unwrap();
    assert_eq!(
        check.metadata.finalizers.as_deref(),
        Some(&["sightline.dev/cancel".to_string()][..])
    );
    let job = api.get(&job_path("check")).expect("the Job was created");
    assert_eq!(job["metadata"]["ownerReferences"][0]["name"], "check");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()[0..3],
        [json!("reprocess"), json!("--resource"), json!("analytics/check")]
    );
    assert_eq!(operator(&client, &api, "fix", &wh).await, Action::requeue(POLL));
    let fix = status(&api, "fix");
    assert_eq!(fix.phase, Phase::Pending);
    let (_, reason, _) = condition(&fix, "Complete");
    assert_eq!(reason, "Queued");
    assert!(
        fix.message
            .as_deref()
            .unwrap()
            .contains("waits for Reprocess analytics/check"),
        "{fix:?}"
    );
    assert!(api.get(&job_path("fix")).is_none(), "a queued Reprocess has no Job");
    assert!(
        object(&api, "fix").unwrap().metadata.finalizers.is_none(),
        "nor a finalizer"
    );

    // The dry run's pod: deltas per day and summed, and nothing swapped.
    let outcome = pod(&mut api, "check", CancellationToken::new())
        .run(wh.as_ref())
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(phases(&api, "check"), ["Pending", "Running", "Succeeded"]);
    let dry = status(&api, "check");
    assert_eq!(condition(&dry, "Complete"), ("True".into(), "Compared".into(), Some(1)));
    assert_eq!(condition(&dry, "Failed").0, "False");
    assert_eq!(dry.progress.as_ref().unwrap().summary, "3/3");
    assert!(dry.started_at.is_some() && dry.finished_at.is_some());
    assert_eq!(
        dry.checkpoint.as_ref().unwrap().done().unwrap(),
        ["2026-11-10/2026-11-12"]
    );
    assert_eq!(
        checksums(wh.as_ref(), "sightline_buggy").await,
        buggy_before,
        "a dry run swaps nothing"
    );
    let clean_pageviews = wh
        .select(
            "SELECT toString(toDate(ts)) AS d, toInt64(sum(sign * is_pageview)) AS n FROM sightline_clean.events \
             WHERE is_bot = 0 GROUP BY d ORDER BY d",
            &Params::new(),
        )
        .await
        .unwrap();
    assert_eq!(dry.days.len(), 3);
    let mut total = 0.0;
    for (d, clean) in dry.days.iter().zip(&clean_pageviews) {
        assert_eq!(d.day, clean["d"].as_str().unwrap());
        assert!(!d.swapped);
        assert_eq!(d.processing_before.keys().collect::<Vec<_>>(), ["v2"]);
        assert_eq!(d.processing_after, fixed_identity());
        let pageviews = d.deltas.iter().find(|m| m.metric == "pageviews").unwrap();
        assert_eq!(pageviews.recomputed, clean["n"].as_i64().unwrap() as f64, "{}", d.day);
        assert!(
            pageviews.recomputed < pageviews.current,
            "bots no longer count: {pageviews:?}"
        );
        total += pageviews.recomputed;
    }
    let totals = dry.totals.as_ref().unwrap();
    assert_eq!((totals.days, totals.days_changed), (3, 3));
    let summed = totals.deltas.iter().find(|m| m.metric == "pageviews").unwrap();
    assert_eq!(summed.recomputed, total);

    // The query API shows the bugs before the fix (a fresh query process: no cache).
    let (_, different) = compare_answers(wh.clone()).await;
    assert!(
        different.len() >= 4,
        "the bugs show through the query API: {different:?}"
    );

    // Final: the operator lets go of the finalizer; the queued one starts.
    assert_eq!(operator(&client, &api, "check", &wh).await, Action::await_change());
    assert!(object(&api, "check")
        .unwrap()
        .metadata
        .finalizers
        .unwrap_or_default()
        .is_empty());
    assert_eq!(operator(&client, &api, "fix", &wh).await, Action::requeue(RUNNING_POLL));
    assert!(api.get(&job_path("fix")).is_some());
    let outcome = pod(&mut api, "fix", CancellationToken::new())
        .run(wh.as_ref())
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Succeeded);
    assert_eq!(phases(&api, "fix"), ["Pending", "Running", "Succeeded"]);
    let fixed = status(&api, "fix");
    assert_eq!(
        condition(&fixed, "Complete"),
        ("True".into(), "Replayed".into(), Some(1))
    );
    assert!(fixed
        .days
        .iter()
        .all(|d| d.swapped && d.processing_before.keys().eq(["v2"].iter()) && d.processing_after == fixed_identity()));
    assert_eq!(
        checksums(wh.as_ref(), "sightline_buggy").await,
        clean,
        "every table as a clean ingest"
    );

    // The query API answers for the fixed tenant what it answers for the clean ingest.
    let (same, different) = compare_answers(wh.clone()).await;
    assert!(different.is_empty(), "answers differ after the fix: {different:?}");
    assert_eq!(same, 6);
}

/// Asks the query API the same questions for `buggy` and `clean` (both sites, the dataset's
/// days: totals, sources, days); returns how many answers were equal and which differed.
async fn compare_answers(wh: Arc<Embedded>) -> (usize, Vec<String>) {
    let (url, server) = query_api(wh).await;
    let http = sightline_tests::client();
    let (from, to) = (days()[0], days()[2]);
    let (mut same, mut different) = (0, Vec::new());
    for site in ["shop.example.com", "blog.example.com"] {
        for path in [
            format!("aggregate?period=custom&from={from}&to={to}&metrics=visitors,visits,pageviews,bounce_rate,visit_duration"),
            format!("breakdown?period=custom&from={from}&to={to}&property=source&metrics=visitors,visits,pageviews"),
            format!("timeseries?period=custom&from={from}&to={to}&interval=day&metrics=visitors,pageviews"),
        ] {
            let mut answers = Vec::new();
            for t in ["buggy", "clean"] {
                let token = sightline_tests::token_for(t, site, Scope::Read, 3600);
                let r = http
                    .get(format!("{url}/v1/sites/{site}/{path}"))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{t} {site} {path}");
                let mut body: Value = r.json().await.unwrap();
                assert!(!body["results"].is_null(), "{body}");
                // Where the answer came from (tier, watermark) is not what is compared.
                if let Some(o) = body.as_object_mut() {
                    o.remove("meta");
                }
                answers.push(body);
            }
            if answers[0] == answers[1] {
                same += 1;
            } else {
                different.push(format!("{site} {path}: {} vs {}", answers[0], answers[1]));
            }
        }
    }
    server.abort();
    (same, different)
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_running_reprocess_cancels_it_after_the_day_under_way_and_leaves_an_event() {
    let (_dir, wh) = engine(22).await;
    let (client, mut api) = start();
    create(&api, "fix", spec("{parallelism: 1}"), 0);
    assert_eq!(operator(&client, &api, "fix", &wh).await, Action::requeue(RUNNING_POLL));

    // Deleted while the pod writes its first day: the write meets the deletion (409), the
    // pod reads the object again, records the day and stops there.
    api.on_request(|r, world| {
        if r.method == Method::PATCH
            && r.path == format!("{}/status", rp_path("fix"))
            && r.body["status"]["progress"]["daysSucceeded"] == 1
            && world.get(&rp_path("fix")).unwrap()["metadata"]["deletionTimestamp"].is_null()
        {
            world.delete(&rp_path("fix"));
        }
        Hook::Answer
    });
    let outcome = pod(&mut api, "fix", CancellationToken::new())
        .run(wh.as_ref())
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Cancelled);
    let cancelled = status(&api, "fix");
    assert_eq!(cancelled.phase, Phase::Cancelled);
    assert_eq!(condition(&cancelled, "Complete").1, "Cancelled");
    assert_eq!(cancelled.checkpoint.as_ref().unwrap().done().unwrap(), ["2026-11-10"]);
    assert!(
        cancelled.message.as_deref().unwrap().contains("1 of 3 days done"),
        "{cancelled:?}"
    );
    // The first day is replayed; the others are as they were.
    assert_eq!(
        identities(wh.as_ref()).await,
        [
            ("2026-11-10".to_string(), fixed_identity()),
            ("2026-11-11".into(), "v2".into()),
            ("2026-11-12".into(), "v2".into())
        ]
    );

    // The operator records the finished days and lets the object go; it sets nothing else.
    let writes_before = api.status_writes().len();
    assert_eq!(operator(&client, &api, "fix", &wh).await, Action::await_change());
    assert!(
        object(&api, "fix").is_none(),
        "the finalizer is removed and the object is gone"
    );
    assert_eq!(api.status_writes().len(), writes_before, "no status write on deletion");
    let events = api.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["reason"], "Cancelled");
    assert_eq!(events[0]["regarding"]["name"], "fix");
    let note = events[0]["note"].as_str().unwrap();
    assert!(
        note.starts_with(&format!(
            "deleted while Cancelled: 1 of 3 days finished with processing {} (2026-11-10)",
            fixed_identity()
        )),
        "{note}"
    );
    // The Job goes with its owner (Kubernetes' garbage collector): it names it.
    let job = api.get(&job_path("fix")).unwrap();
    assert_eq!(job["metadata"]["ownerReferences"][0]["uid"], "uid-fix");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reprocess_that_never_ran_is_deleted_at_once() {
    let (_dir, wh) = bare_engine().await;
    let (client, api) = start();
    // Queued and refused Reprocesses never get the finalizer: deleted without the operator.
    create(&api, "first", spec("{}"), 0);
    create(&api, "queued", spec("{}"), 10);
    create(
        &api,
        "refused",
        json!({"tenantRef": "nope", "from": "2026-11-01", "to": "2026-11-02"}),
        20,
    );
    operator(&client, &api, "first", &wh).await;
    operator(&client, &api, "queued", &wh).await;
    operator(&client, &api, "refused", &wh).await;
    assert_eq!(status(&api, "refused").phase, Phase::Failed);
    for name in ["queued", "refused"] {
        api.delete(&rp_path(name));
        assert!(object(&api, name).is_none(), "{name} is gone at once");
    }
    // Admitted, its Job created, no pod yet: deleted without waiting.
    assert_eq!(status(&api, "first").phase, Phase::Pending);
    api.delete(&rp_path("first"));
    assert!(object(&api, "first").is_some(), "the finalizer holds it");
    assert_eq!(operator(&client, &api, "first", &wh).await, Action::await_change());
    assert!(object(&api, "first").is_none());
    let events = api.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["note"], "deleted while Pending: 0 of 0 days finished");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_and_a_killed_pod_are_resumed_from_the_status_without_a_day_skipped_or_changed() {
    let (_dir, wh) = engine(23).await;
    let clean = checksums(wh.as_ref(), "sightline_clean").await;
    let (client, mut api) = start();
    create(&api, "fix", spec("{parallelism: 1}"), 0);
    operator(&client, &api, "fix", &wh).await;

    // Pod A is told to stop (SIGTERM) while it records its first day: it finishes that day
    // and exits for the next pod.
    let interrupt = interrupted_at_the_first_day(&api);
    let outcome = pod(&mut api, "fix", interrupt).run(wh.as_ref()).await.unwrap();
    assert!(
        matches!(&outcome, Outcome::Interrupted(m) if m.contains("told to stop")),
        "{outcome:?}"
    );
    let stopped = status(&api, "fix");
    assert_eq!(stopped.phase, Phase::Running);
    assert_eq!(condition(&stopped, "Complete").1, "Interrupted");
    assert_eq!(stopped.checkpoint.as_ref().unwrap().done().unwrap(), ["2026-11-10"]);

    // The operator restarts and the Job is gone: a new Job, and the status is kept.
    api.remove(&job_path("fix"));
    assert_eq!(operator(&client, &api, "fix", &wh).await, Action::requeue(RUNNING_POLL));
    assert!(api.get(&job_path("fix")).is_some(), "the Job is created again");
    let kept = status(&api, "fix");
    assert_eq!(kept.phase, Phase::Running, "not moved back to Pending");
    assert_eq!(kept.checkpoint, stopped.checkpoint);

    // Pod B is killed (SIGKILL) after it swapped day 2, while it writes the day to the
    // status: the day is swapped, not recorded, and its lease is left behind.
    let (killed_tx, killed_rx) = tokio::sync::oneshot::channel();
    let mut killed_tx = Some(killed_tx);
    api.on_request(move |r, _| {
        if r.method == Method::PATCH && r.body["status"]["progress"]["daysSucceeded"] == 2 {
            if let Some(tx) = killed_tx.take() {
                let _ = tx.send(());
            }
            return Hook::Hold;
        }
        Hook::Answer
    });
    let b = {
        let (runner, wh) = (pod(&mut api, "fix", CancellationToken::new()), wh.clone());
        tokio::spawn(async move { runner.run(wh.as_ref()).await })
    };
    tokio::time::timeout(Duration::from_secs(120), killed_rx)
        .await
        .expect("pod B reached day 2")
        .unwrap();
    b.abort();
    let _ = b.await;
    let day2 = days()[1];
    let swapped_by_b = day_checksum(wh.as_ref(), day2).await;
    assert_eq!(
        status(&api, "fix").checkpoint,
        stopped.checkpoint,
        "day 2 is not recorded"
    );
    let db = "sightline_buggy";
    let live = format!(
        "SELECT holder FROM {db}.day_leases WHERE day = {{d:Date}} GROUP BY holder \
         HAVING argMax(released, version) = 0 AND argMax(expires_at, version) > now64(3)"
    );
    let held: Vec<String> = wh
        .select(&live, &Params::new().bind("d", day2.to_string()))
        .await
        .unwrap()
        .iter()
        .map(|r| r["holder"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(held.len(), 1, "pod B's lease on day 2 outlives it: {held:?}");

    // Pod C finds day 2 leased by an earlier pod of this Reprocess and waits; once that
    // lease has expired it replays day 2 again (from the same inputs) and day 3.
    let waiting = Arc::new(AtomicBool::new(false));
    let seen = waiting.clone();
    api.on_request(move |r, _| {
        if r.body["status"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("an earlier pod of this Reprocess"))
        {
            seen.store(true, Ordering::SeqCst);
        }
        Hook::Answer
    });
    let c = {
        let (runner, wh) = (pod(&mut api, "fix", CancellationToken::new()), wh.clone());
        tokio::spawn(async move { runner.run(wh.as_ref()).await })
    };
    tokio::time::timeout(Duration::from_secs(60), async {
        while !waiting.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("pod C says it waits for the lease");
    assert!(!c.is_finished(), "pod C waits rather than fail");
    // The lease expires (as it would 5 minutes after pod B's last renewal).
    wh.execute(
        &format!(
            "INSERT INTO {db}.day_leases (day, holder, purpose, taken_at, expires_at, released, version) \
             SELECT day, holder, argMax(purpose, version), min(taken_at), now64(3), 0, max(version) + 1 \
             FROM {db}.day_leases WHERE day = {{d:Date}} AND holder = {{h:String}} GROUP BY day, holder"
        ),
        &Params::new().bind("d", day2.to_string()).bind("h", held[0].as_str()),
    )
    .await
    .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(120), c)
        .await
        .expect("pod C finished")
        .unwrap()
        .unwrap();
    assert_eq!(outcome, Outcome::Succeeded);
    let done = status(&api, "fix");
    assert_eq!(
        condition(&done, "Complete"),
        ("True".into(), "Replayed".into(), Some(1))
    );
    assert_eq!(
        done.checkpoint.as_ref().unwrap().done().unwrap(),
        ["2026-11-10/2026-11-12"]
    );
    let totals = done.totals.as_ref().unwrap();
    assert_eq!(totals.days, 3, "each day counted once");
    // Day 1 (pod A) and day 3 were made by the buggy processor before; day 2 was already
    // pod B's work when pod C replayed it, and came out the same.
    let before: Vec<(&str, Vec<&String>)> = done
        .days
        .iter()
        .map(|d| (d.day.as_str(), d.processing_before.keys().collect()))
        .collect();
    let (v2, v3) = ("v2".to_string(), fixed_identity());
    assert_eq!(
        before,
        [
            ("2026-11-10", vec![&v2]),
            ("2026-11-11", vec![&v3]),
            ("2026-11-12", vec![&v2])
        ]
    );
    assert_eq!(
        day_checksum(wh.as_ref(), day2).await,
        swapped_by_b,
        "day 2 replayed from the same inputs"
    );
    assert_eq!(
        checksums(wh.as_ref(), "sightline_buggy").await,
        clean,
        "no day skipped or changed"
    );
}

/// `later()` plus `secs` seconds, as a clock.
fn at(secs: i64) -> sightline_operator::reprocess::controller::Clock {
    Arc::new(move || later() + chrono::Duration::seconds(secs))
}

/// Rows of `buggy`'s `events_raw` per day.
async fn raw_rows(wh: &dyn Warehouse) -> Vec<u64> {
    wh.select(
        "SELECT toDate(ts) AS d, count() AS n FROM sightline_buggy.events_raw GROUP BY d ORDER BY d",
        &Params::new(),
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r["n"].as_u64().unwrap())
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manual_reprocess_runs_only_the_approved_plan_and_a_changed_plan_needs_approving_again() {
    let (_dir, wh) = engine(24).await;
    let (client, mut api) = start();
    create(&api, "fix", spec("{approval: Manual}"), 0);

    // The plan, from the warehouse; nothing runs.
    assert_eq!(operator(&client, &api, "fix", &wh).await, Action::requeue(POLL));
    let planned = status(&api, "fix");
    assert_eq!(planned.phase, Phase::Pending);
    assert_eq!(
        condition(&planned, "Approved"),
        ("False".into(), "AwaitingApproval".into(), Some(1))
    );
    assert_eq!(condition(&planned, "Progressing").0, "False");
    assert!(api.get(&job_path("fix")).is_none(), "no Job before approval");
    assert!(object(&api, "fix").unwrap().metadata.finalizers.is_none());
    let plan = planned.plan.clone().expect("a plan");
    let rows = raw_rows(wh.as_ref()).await;
    assert_eq!(plan.breakdown.iter().map(|p| p.rows).collect::<Vec<_>>(), rows);
    assert_eq!(plan.rows, rows.iter().sum::<u64>());
    assert!(plan.breakdown.iter().all(|p| p.bytes > 0), "{plan:?}");
    assert_eq!(plan.processing, fixed_identity());
    assert_eq!(
        plan.image,
        format!("ghcr.io/sightline/sightline@{}", operator_digest()),
        "the operator's image, pinned to the digest its pod reports"
    );
    assert_eq!(plan.partitions[0].table, "events");
    // The same inputs: the same plan, nothing written.
    let writes = api.status_writes().len();
    operator(&client, &api, "fix", &wh).await;
    assert_eq!(
        api.status_writes().len(),
        writes,
        "a plan unchanged is not written again"
    );

    // A hash that is not the plan's approves nothing.
    api.edit(&rp_path("fix"), |o| {
        o["spec"]["approvedPlanHash"] = json!("0".repeat(64))
    });
    operator(&client, &api, "fix", &wh).await;
    assert_eq!(condition(&status(&api, "fix"), "Approved").1, "HashMismatch");
    assert!(api.get(&job_path("fix")).is_none());

    // A person reviews the plan and approves it (generation 2)...
    let person = api.client_for_a_person();
    let shown = plugin::reprocess::plan(&person, NS, "fix").await.unwrap();
    assert!(shown.contains(&plan.hash), "{shown}");
    plugin::reprocess::approve(&person, NS, "fix", &plan.hash)
        .await
        .unwrap();
    assert_eq!(object(&api, "fix").unwrap().metadata.generation, Some(2));
    // ... but before the start a late raw row lands in day 2: the plan changes and the
    // approval no longer holds.
    wh.execute(
        "INSERT INTO sightline_buggy.events_raw SELECT * REPLACE (generateUUIDv4() AS event_id) \
         FROM sightline_buggy.events_raw WHERE toDate(ts) = {d:Date} LIMIT 1",
        &Params::new().bind("d", days()[1].to_string()),
    )
    .await
    .unwrap();
    assert_eq!(operator(&client, &api, "fix", &wh).await, Action::requeue(POLL));
    let changed = status(&api, "fix");
    let new_plan = changed.plan.clone().unwrap();
    assert_ne!(new_plan.hash, plan.hash);
    assert_eq!(new_plan.breakdown[1].rows, plan.breakdown[1].rows + 1);
    let (approved, reason, generation) = condition(&changed, "Approved");
    assert_eq!(
        (approved.as_str(), reason.as_str(), generation),
        ("False", "PlanChanged", Some(2))
    );
    assert_eq!(changed.observed_generation, Some(2));
    assert!(api.get(&job_path("fix")).is_none(), "the changed plan does not run");
    // A later look finds the new plan unchanged: it still says why.
    operator(&client, &api, "fix", &wh).await;
    assert_eq!(condition(&status(&api, "fix"), "Approved").1, "PlanChanged");

    // A person approving the hash reviewed before the change is refused...
    let e = plugin::reprocess::approve(&person, NS, "fix", &plan.hash)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("is {}, not {}", new_plan.hash, plan.hash)),
        "{e}"
    );
    // ... and approving the new one after reviewing it runs it, by the plan's image digest.
    assert!(plugin::reprocess::plan(&person, NS, "fix")
        .await
        .unwrap()
        .contains(&new_plan.hash));
    plugin::reprocess::approve(&person, NS, "fix", &new_plan.hash)
        .await
        .unwrap();
    assert_eq!(operator(&client, &api, "fix", &wh).await, Action::requeue(RUNNING_POLL));
    let approved = status(&api, "fix");
    assert_eq!(
        condition(&approved, "Approved"),
        ("True".into(), "PlanApproved".into(), Some(3))
    );
    let job = api.get(&job_path("fix")).expect("the Job");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["image"],
        json!(new_plan.image)
    );
    let outcome = pod(&mut api, "fix", CancellationToken::new())
        .run(wh.as_ref())
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Succeeded);
    let done = status(&api, "fix");
    assert_eq!(condition(&done, "Complete").0, "True");
    let ledger = &done.checkpoint.as_ref().unwrap().ledger;
    assert_eq!(ledger.len(), 1);
    assert_eq!(
        ledger[0].plan_hash, new_plan.hash,
        "each day swapped under the approved plan"
    );
    assert_eq!(ledger[0].days, ["2026-11-10/2026-11-12"]);
    let p = done.progress.as_ref().unwrap();
    assert_eq!(
        (p.days_succeeded, p.days_failed, p.days_pending, p.percent),
        (3, 0, 0, 100)
    );
    assert_eq!(p.bytes_read, new_plan.bytes, "the bytes of every day's raw partition");
    assert!(p.last_heartbeat_time.is_some() && p.started_at.is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pod_refuses_a_plan_of_another_processor_or_one_not_approved() {
    let (_dir, wh) = bare_engine().await;
    let (client, mut api) = start();
    create(&api, "fix", spec("{approval: Manual}"), 0);
    operator(&client, &api, "fix", &wh).await;
    // A pod started without the approval (by hand, with the Role the operator would make):
    // it replays nothing.
    let owner = sightline_operator::reprocess::build::Owner::of(&object(&api, "fix").unwrap()).unwrap();
    let tenant: AnalyticsTenant =
        serde_json::from_value(api.get("/apis/sightline.dev/v1alpha1/analyticstenants/buggy").unwrap()).unwrap();
    let v = sightline_operator::validate::validate(&tenant, &OperatorConfig::example(NS)).unwrap();
    api.put(
        &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles/fix-replay"),
        serde_json::to_value(sightline_operator::reprocess::build::role(&owner, &v)).unwrap(),
    );
    let outcome = pod(&mut api, "fix", CancellationToken::new())
        .run(wh.as_ref())
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Failed("NotApproved"));
    assert_eq!(condition(&status(&api, "fix"), "Failed").1, "NotApproved");

    create(&api, "other", spec("{}"), 10);
    operator(&client, &api, "other", &wh).await;
    api.edit(&rp_path("other"), |o| o["status"]["plan"]["processing"] = json!("v1"));
    let outcome = pod(&mut api, "other", CancellationToken::new())
        .run(wh.as_ref())
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Failed("PlanMismatch"));
    let failed = status(&api, "other");
    assert!(
        failed.message.as_deref().unwrap().contains("processes as"),
        "{failed:?}"
    );
    assert!(
        failed.checkpoint.as_ref().is_none_or(|c| c.ledger.is_empty()),
        "no day touched: {failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_pod_is_stalled_within_90_s_its_job_replaced_and_the_next_pod_resumes() {
    use sightline_operator::reprocess::controller::MAX_POLL_RUNNING;
    use sightline_operator::reprocess::status::HEARTBEAT_TIMEOUT;
    // A stall is seen within the timeout and one look at a running Reprocess.
    assert!(HEARTBEAT_TIMEOUT.to_std().unwrap() + MAX_POLL_RUNNING <= Duration::from_secs(90));

    let (_dir, wh) = engine(25).await;
    let clean = checksums(wh.as_ref(), "sightline_clean").await;
    let (client, mut api) = start();
    silent_after_day_one(&client, &mut api, &wh).await;
    let deletions = deletions_of_the_job(&api);

    // 59 s of silence: still fine.
    let action = operator_with(&client, &api, "fix", &wh, at(59), 10).await;
    assert_eq!(action, Action::requeue(RUNNING_POLL));
    assert_eq!(condition(&status(&api, "fix"), "Stalled").0, "False");
    assert!(api.get(&job_path("fix")).is_some());
    // 61 s: stalled, a Warning Event, the Job deleted to be replaced.
    operator_with(&client, &api, "fix", &wh, at(61), 10).await;
    let stalled = status(&api, "fix");
    let (s, reason, _) = condition(&stalled, "Stalled");
    assert_eq!((s.as_str(), reason.as_str()), ("True", "NoHeartbeat"));
    assert_eq!(stalled.phase, Phase::Running);
    assert_eq!(stalled.stall_restarts, 1);
    let events = api.take_events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0]["type"].as_str(), events[0]["reason"].as_str()),
        (Some("Warning"), Some("NoHeartbeat"))
    );
    assert!(api.get(&job_path("fix")).is_none(), "the silent pod's Job is deleted");
    // In the background (a pod stuck terminating must not hold the Job), and only the Job
    // of the uid the stall recorded.
    let deleted = deletions.lock().unwrap().clone();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0]["propagationPolicy"], "Background");
    assert_eq!(
        deleted[0]["preconditions"]["uid"].as_str(),
        stalled.replaced_job_uid.as_deref()
    );
    assert_eq!(
        stalled.last_stall_time.as_ref().map(chrono_time),
        Some(later() + secs(61))
    );
    // The next look makes a new Job; its pod resumes from the first day not swapped.
    api.on_request(|_, _| Hook::Answer);
    operator_with(&client, &api, "fix", &wh, at(62), 10).await;
    assert!(api.get(&job_path("fix")).is_some(), "a new Job");
    assert_eq!(status(&api, "fix").stall_restarts, 1, "counted once");
    let heartbeats = Arc::new(std::sync::Mutex::new(0));
    let seen = heartbeats.clone();
    api.on_request(move |r, _| {
        // A heartbeat: a write while a day is under way.
        if r.method == Method::PATCH && r.body["status"]["progress"]["currentDay"].is_string() {
            *seen.lock().unwrap() += 1;
        }
        Hook::Answer
    });
    let mut b = pod_at(&mut api, "fix", CancellationToken::new(), at(70));
    b.heartbeat = Duration::from_millis(50);
    assert_eq!(b.run(wh.as_ref()).await.unwrap(), Outcome::Succeeded);
    assert!(*heartbeats.lock().unwrap() > 0, "heartbeats while days ran");
    let done = status(&api, "fix");
    assert_eq!(condition(&done, "Stalled").1, "Heartbeating");
    assert_eq!(condition(&done, "Complete").0, "True");
    assert_eq!(
        done.checkpoint.as_ref().unwrap().done().unwrap(),
        ["2026-11-10/2026-11-12"]
    );
    assert_eq!(done.totals.as_ref().unwrap().days, 3);
    assert_eq!(
        checksums(wh.as_ref(), "sightline_buggy").await,
        clean,
        "no day skipped or changed"
    );
}

/// A token cancelled when the pod records its first finished day (a SIGTERM arriving
/// then: the pod finishes that day and exits).
fn interrupted_at_the_first_day(api: &FakeApi) -> CancellationToken {
    let interrupt = CancellationToken::new();
    let signal = interrupt.clone();
    api.on_request(move |r, _| {
        if r.method == Method::PATCH && r.body["status"]["progress"]["daysSucceeded"] == 1 {
            signal.cancel();
        }
        Hook::Answer
    });
    interrupt
}

/// `fix` (days 1 to 3, one at a time) created and started; its pod replays day 1 and goes
/// silent (its last status write at `later()`), and its Job still counts that pod active.
async fn silent_after_day_one(client: &kube::Client, api: &mut FakeApi, wh: &Arc<Embedded>) {
    create(api, "fix", spec("{parallelism: 1}"), 0);
    operator(client, api, "fix", wh).await;
    let interrupt = interrupted_at_the_first_day(api);
    pod(api, "fix", interrupt).run(wh.as_ref()).await.unwrap();
    api.on_request(|_, _| Hook::Answer);
    api.edit(&job_path("fix"), |j| j["status"] = json!({"active": 1}));
    api.take_events();
}

/// From now on, the body of every DELETE of `fix`'s Job (its DeleteOptions).
fn deletions_of_the_job(api: &FakeApi) -> Arc<std::sync::Mutex<Vec<Value>>> {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    api.on_request(move |r, _| {
        if r.method == Method::DELETE && r.path == job_path("fix") {
            log.lock().unwrap().push(r.body.clone());
        }
        Hook::Answer
    });
    seen
}

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

/// The Job of `fix` with one pod counted active (pending: it never heartbeats); its uid.
fn job_with_a_pending_pod(api: &FakeApi) -> String {
    api.edit(&job_path("fix"), |j| j["status"] = json!({"active": 1}));
    api.get(&job_path("fix")).unwrap()["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_stall_and_a_slow_job_deletion_count_once_each_and_every_stall_gets_a_new_job() {
    let (_dir, wh) = engine(25).await;
    let clean = checksums(wh.as_ref(), "sightline_clean").await;
    let (client, mut api) = start();
    silent_after_day_one(&client, &mut api, &wh).await;
    // A finalizer holds the silent pod's Job (someone's; the operator deletes in the
    // background, so a pod stuck terminating would not).
    api.edit(&job_path("fix"), |j| {
        j["metadata"]["finalizers"] = json!(["test.sightline.dev/slow"])
    });

    operator_with(&client, &api, "fix", &wh, at(61), 10).await;
    assert_eq!(status(&api, "fix").stall_restarts, 1);
    let deleting = api.get(&job_path("fix")).expect("held by its finalizer");
    assert!(deleting["metadata"]["deletionTimestamp"].is_string());
    // Minutes of a Job slow to go: no second stall, no Job made beside it (up to
    // `DELETION_PATIENCE`, 300 s after the stall, when it would count as another).
    for t in [100, 200, 360] {
        operator_with(&client, &api, "fix", &wh, at(t), 10).await;
        let s = status(&api, "fix");
        assert_eq!((s.stall_restarts, s.phase), (1, Phase::Running), "at {t} s");
        assert!(api.get(&job_path("fix")).unwrap()["metadata"]["deletionTimestamp"].is_string());
    }
    // Gone: the next look makes the replacement, without counting a stall for the wait.
    api.remove(&job_path("fix"));
    operator_with(&client, &api, "fix", &wh, at(401), 10).await;
    assert_eq!(status(&api, "fix").stall_restarts, 1, "the wait is not a stall");
    let second_uid = job_with_a_pending_pod(&api);
    // Its pod never starts (Pending): 60 s from the Job's making (`jobCreationTime`), not
    // from the first stall.
    assert_eq!(
        status(&api, "fix").job_creation_time.as_ref().map(chrono_time),
        Some(later() + secs(401))
    );
    operator_with(&client, &api, "fix", &wh, at(461), 10).await;
    assert_eq!(status(&api, "fix").stall_restarts, 1, "60 s is allowed");
    operator_with(&client, &api, "fix", &wh, at(462), 10).await;
    let twice = status(&api, "fix");
    assert_eq!(twice.stall_restarts, 2, "a second stall while Stalled is still True");
    assert_eq!(twice.replaced_job_uid.as_deref(), Some(second_uid.as_str()));
    assert_eq!(
        twice.last_stall_time.as_ref().map(chrono_time),
        Some(later() + secs(462))
    );
    assert!(api.get(&job_path("fix")).is_none(), "deleted at once");
    let events = api.take_events();
    assert_eq!(events.len(), 2, "one Warning per stall: {events:?}");
    // However late the next look, a missing Job after a stall is made, not counted.
    operator_with(&client, &api, "fix", &wh, at(600), 10).await;
    let third_uid = job_with_a_pending_pod(&api);
    assert_ne!(third_uid, second_uid);
    assert_eq!(status(&api, "fix").stall_restarts, 2);
    operator_with(&client, &api, "fix", &wh, at(630), 10).await;
    assert_eq!(
        api.get(&job_path("fix")).unwrap()["metadata"]["uid"],
        third_uid.as_str()
    );

    // Its pod runs: the rest of the days, nothing skipped or changed.
    let b = pod_at(&mut api, "fix", CancellationToken::new(), at(640));
    assert_eq!(b.run(wh.as_ref()).await.unwrap(), Outcome::Succeeded);
    let done = status(&api, "fix");
    assert_eq!(condition(&done, "Complete").0, "True");
    assert_eq!(done.stall_restarts, 2);
    assert_eq!(checksums(wh.as_ref(), "sightline_buggy").await, clean);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stall_is_written_before_its_job_is_deleted_and_a_failed_deletion_is_retried_not_counted() {
    let (_dir, wh) = engine(25).await;
    let (client, mut api) = start();
    silent_after_day_one(&client, &mut api, &wh).await;
    let first_uid = job_with_a_pending_pod(&api);
    // The pod's own write lands between the operator's read and its stall write: the
    // write conflicts, and the Job is left alone (nothing recorded, nothing deleted).
    api.on_request(|r, state| {
        if r.method == Method::PATCH && r.path == format!("{}/status", rp_path("fix")) {
            state.edit(&rp_path("fix"), |_| {});
        }
        Hook::Answer
    });
    operator_with(&client, &api, "fix", &wh, at(61), 10).await;
    assert_eq!(status(&api, "fix").stall_restarts, 0);
    assert_eq!(
        api.get(&job_path("fix")).unwrap()["metadata"]["uid"],
        first_uid.as_str()
    );
    assert!(api.get(&job_path("fix")).unwrap()["metadata"]["deletionTimestamp"].is_null());
    // The next look writes the stall; the deletion after it fails.
    api.on_request(|r, _| match r.method == Method::DELETE && r.path == job_path("fix") {
        true => Hook::Fail(500),
        false => Hook::Answer,
    });
    let rp = object(&api, "fix").unwrap();
    let ctx = context(&client, &api, &wh, at(62), 10);
    assert!(
        reconcile(Arc::new(rp), ctx).await.is_err(),
        "the failed deletion is an error"
    );
    let stalled = status(&api, "fix");
    assert_eq!(stalled.stall_restarts, 1);
    assert_eq!(stalled.replaced_job_uid.as_deref(), Some(first_uid.as_str()));
    assert!(api.get(&job_path("fix")).is_some());
    // The look after that deletes the recorded Job, without counting again; then the
    // replacement is made.
    api.on_request(|_, _| Hook::Answer);
    operator_with(&client, &api, "fix", &wh, at(63), 10).await;
    assert!(api.get(&job_path("fix")).is_none());
    assert_eq!(status(&api, "fix").stall_restarts, 1);
    operator_with(&client, &api, "fix", &wh, at(64), 10).await;
    let replacement = api.get(&job_path("fix")).expect("the replacement");
    assert_ne!(replacement["metadata"]["uid"], first_uid.as_str());
    assert_eq!(status(&api, "fix").stall_restarts, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_plan_is_in_the_status_before_the_job_that_runs_it_exists() {
    let (_dir, wh) = engine(25).await;
    let (client, api) = start();
    create(&api, "fix", spec("{}"), 0);
    // Another writer changes the object between the operator's read and its plan write:
    // the write conflicts, and no Job is made for a plan the status does not hold.
    let once = Arc::new(AtomicBool::new(true));
    api.on_request(move |r, state| {
        let plan_write = r.method == Method::PATCH
            && r.path == format!("{}/status", rp_path("fix"))
            && !r.body["status"]["plan"].is_null();
        if plan_write && once.swap(false, Ordering::SeqCst) {
            state.edit(&rp_path("fix"), |_| {});
        }
        Hook::Answer
    });
    operator(&client, &api, "fix", &wh).await;
    assert!(status(&api, "fix").plan.is_none());
    assert!(api.get(&job_path("fix")).is_none(), "no Job without its plan recorded");
    // The next look: the plan written, then the Job, which runs the plan's image.
    api.take_calls();
    operator(&client, &api, "fix", &wh).await;
    let calls = api.take_calls();
    let position = |found: &dyn Fn(&sightline_tests::kube_api::Received) -> bool| {
        calls.iter().position(found).expect("the request was made")
    };
    let plan_written = position(&|c| {
        c.method == Method::PATCH
            && c.path == format!("{}/status", rp_path("fix"))
            && !c.body["status"]["plan"].is_null()
    });
    let job_applied = position(&|c| c.method == Method::PATCH && c.path == job_path("fix"));
    assert!(plan_written < job_applied, "{calls:#?}");
    let plan = status(&api, "fix").plan.expect("the plan");
    let job = api.get(&job_path("fix")).unwrap();
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["image"].as_str(),
        Some(plan.image.as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_pod_is_gone_too_often_fails_with_stalled_too_often() {
    let (_dir, wh) = bare_engine().await;
    let (client, mut api) = start();
    create(&api, "fix", spec("{maxStallRestarts: 0}"), 0);
    operator(&client, &api, "fix", &wh).await;
    // The pod reports Running, then stops before a day (its node went away).
    let interrupt = CancellationToken::new();
    interrupt.cancel();
    pod(&mut api, "fix", interrupt).run(wh.as_ref()).await.unwrap();
    assert_eq!(status(&api, "fix").phase, Phase::Running);
    api.take_events();
    // Its Job has no pod (30 s is allowed for a replacement pod).
    operator_with(&client, &api, "fix", &wh, at(30), 10).await;
    assert_eq!(status(&api, "fix").phase, Phase::Running);
    // Failed is written; the Job's deletion after it fails (the API server's error).
    api.on_request(|r, _| match r.method == Method::DELETE && r.path == job_path("fix") {
        true => Hook::Fail(500),
        false => Hook::Answer,
    });
    let rp = object(&api, "fix").unwrap();
    assert!(reconcile(Arc::new(rp), context(&client, &api, &wh, at(31), 10))
        .await
        .is_err());
    assert!(api.get(&job_path("fix")).is_some());
    assert!(status(&api, "fix").replaced_job_uid.is_some());
    // The next look at the failed run deletes it, and forgets it.
    api.on_request(|_, _| Hook::Answer);
    assert_eq!(
        operator_with(&client, &api, "fix", &wh, at(32), 10).await,
        Action::await_change()
    );
    let failed = status(&api, "fix");
    assert_eq!(failed.replaced_job_uid, None, "nothing left to look at");
    assert_eq!(failed.phase, Phase::Failed);
    let (f, reason, _) = condition(&failed, "Failed");
    assert_eq!((f.as_str(), reason.as_str()), ("True", "StalledTooOften"));
    assert!(
        failed.message.as_deref().unwrap().contains("spec.maxStallRestarts 0"),
        "{failed:?}"
    );
    let events = api.take_events();
    assert_eq!(events[0]["reason"], "StalledTooOften");
    assert_eq!(events[0]["type"], "Warning");
    assert!(api.get(&job_path("fix")).is_none(), "its Job is gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn finished_reprocesses_beyond_the_history_limit_are_deleted_oldest_first() {
    let (_dir, wh) = bare_engine().await;
    let (client, api) = start();
    for (i, (name, phase)) in [
        ("r1", "Succeeded"),
        ("r2", "Failed"),
        ("r3", "Cancelled"),
        ("r4", "Succeeded"),
        ("live", "Running"),
    ]
    .into_iter()
    .enumerate()
    {
        create(&api, name, spec("{}"), i as i64);
        let finished = (later() + chrono::Duration::seconds(i as i64 * 10)).to_rfc3339();
        api.edit(&rp_path(name), |o| {
            o["status"] = json!({"phase": phase});
            if phase != "Running" {
                o["status"]["finishedAt"] = json!(finished);
            }
        });
    }
    let action = operator_with(&client, &api, "r4", &wh, Arc::new(later), 2).await;
    assert_eq!(action, Action::await_change());
    let left: Vec<bool> = ["r1", "r2", "r3", "r4", "live"]
        .iter()
        .map(|n| object(&api, n).is_some())
        .collect();
    assert_eq!(
        left,
        [false, false, true, true, true],
        "the two oldest finished ones go"
    );
    // Within the limit: nothing more goes.
    operator_with(&client, &api, "r3", &wh, Arc::new(later), 2).await;
    assert!(object(&api, "r3").is_some() && object(&api, "r4").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_without_a_digest_the_operator_can_learn_is_not_planned_and_says_how_to_pin_it() {
    let (_dir, wh) = bare_engine().await;
    let (client, api) = start();
    api.edit("/apis/sightline.dev/v1alpha1/analyticstenants/buggy", |t| {
        t["spec"]["ingest"] = json!({"image": "registry.example/sightline:fix-7"});
    });
    create(&api, "fix", spec("{}"), 0);
    assert_eq!(operator(&client, &api, "fix", &wh).await, Action::requeue(POLL));
    let s = status(&api, "fix");
    let (approved, reason, _) = condition(&s, "Approved");
    assert_eq!((approved.as_str(), reason.as_str()), ("Unknown", "ImageDigestUnknown"));
    assert!(
        s.message
            .as_deref()
            .unwrap()
            .contains("registry.example/sightline:fix-7@sha256:"),
        "{s:?}"
    );
    assert_eq!(s.phase, Phase::Pending);
    assert!(api.get(&job_path("fix")).is_none(), "no Job runs a tag");
    // Pinned by digest: planned and run with it.
    let pinned = format!("registry.example/sightline@sha256:{}", "7f".repeat(32));
    api.edit("/apis/sightline.dev/v1alpha1/analyticstenants/buggy", |t| {
        t["spec"]["ingest"] = json!({"image": pinned});
    });
    operator(&client, &api, "fix", &wh).await;
    let job = api.get(&job_path("fix")).expect("a Job");
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["image"], json!(pinned));
}

// ---- The binary: `sightline reprocess --resource`, as the Job's pod runs it. ----

mod binary {
    use std::path::Path;
    use std::process::{Command, Output};

    use chrono::Utc;
    use serde_json::json;
    use sightline_operator::crd::{AnalyticsTenant, AnalyticsTenantSpec};
    use sightline_operator::reprocess::build::{self, Owner};
    use sightline_operator::reprocess::crd::Phase;
    use sightline_operator::validate::{validate, OperatorConfig};
    use sightline_tests::kube_api::{reprocess_pod_token, FakeApi};
    use sightline_tests::replay_support::tenant;
    use sightline_tests::{binary, client, fixture, write_token, Server, CHROME_MAC, TEST_SECRET};

    use super::{condition, create, rp_path, start, status, NS};

    /// The Role the operator makes for the Job's pod of Reprocess `name` (`get` on it,
    /// `patch` on its status), put where the fake API looks it up for that pod's requests.
    fn grant(api: &FakeApi, name: &str) {
        let owner = Owner {
            name: name.into(),
            namespace: NS.into(),
            uid: format!("uid-{name}"),
        };
        let mut tenant = AnalyticsTenant::new(
            "acme",
            AnalyticsTenantSpec {
                tenant: tenant("acme").spec,
            },
        );
        tenant.metadata.uid = Some("uid-acme".into());
        let v = validate(&tenant, &OperatorConfig::example(NS)).unwrap();
        api.put(
            &format!(
                "/apis/rbac.authorization.k8s.io/v1/namespaces/{NS}/roles/{}",
                owner.child_name()
            ),
            serde_json::to_value(build::role(&owner, &v)).unwrap(),
        );
    }

    /// A kubeconfig for the Job's pod of Reprocess `pod`, naming the API at `url`.
    fn kubeconfig_for(dir: &Path, url: &str, pod: &str) -> std::path::PathBuf {
        let path = dir.join(format!("kubeconfig-{pod}"));
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters: [{{name: fake, cluster: {{server: \"{url}\"}}}}]\n\
                 users: [{{name: fake, user: {{token: \"{token}\"}}}}]\n\
                 contexts: [{{name: fake, context: {{cluster: fake, user: fake, namespace: {NS}}}}}]\n\
                 current-context: fake\n",
                token = reprocess_pod_token(pod),
            ),
        )
        .unwrap();
        path
    }

    /// `sightline reprocess --resource RESOURCE` with a kubeconfig naming `api_url` (what
    /// the in-cluster config gives a pod; the client loads either).
    fn run(resource: &str, kubeconfig: &Path, data: &Path, tenants: &Path) -> Output {
        Command::new(binary())
            .args(["reprocess", "--resource", resource, "--data"])
            .arg(data)
            .arg("--tenants")
            .arg(tenants)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env("SIGHTLINE_SECRET", TEST_SECRET)
            .env("RUST_LOG", "warn")
            .output()
            .expect("run sightline reprocess --resource")
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_binary_replays_a_reprocess_through_the_api_and_exits_by_its_outcome() {
        let (dir, data, tenants) = fixture();
        let mut server = Server::start(&data, &tenants, &[]);
        let c = client();
        for i in 0..20 {
            let r = c
                .post(server.url("/v1/collect"))
                .bearer_auth(write_token("acme", "shop.example.com"))
                .header("User-Agent", CHROME_MAC)
                .header("X-Forwarded-For", format!("198.51.100.{}", i + 1))
                .json(&json!({"url": format!("https://shop.example.com/p{i}")}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }
        server.stop();

        let (_client, mut api) = start();
        let today = Utc::now().date_naive();
        // Today's day is not sealed: the run is forced (as a replay beside writers).
        let spec = json!({"tenantRef": "acme", "from": today.to_string(),
                          "to": (today + chrono::Days::new(1)).to_string(), "force": true});
        create(&api, "fix", spec, 0);
        grant(&api, "fix");
        // Each request is checked against the Role of the pod whose token it carries.
        let url = api.serve_http().await;
        let kubeconfig = kubeconfig_for(dir.path(), &url, "fix");

        let out = run("analytics/fix", &kubeconfig, &data, &tenants);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(api.forbidden(), Vec::<String>::new(), "the pod needs only its Role");
        let done = status(&api, "fix");
        assert_eq!(done.phase, Phase::Succeeded, "{done:?}");
        assert_eq!(condition(&done, "Complete").0, "True");
        assert_eq!(done.progress.as_ref().unwrap().summary, "1/1");
        assert_eq!(done.days[0].raw_rows, 20);

        // Final already: nothing to do, nothing written, exit 0.
        let writes = api.status_writes().len();
        let again = run("analytics/fix", &kubeconfig, &data, &tenants);
        assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
        assert_eq!(api.status_writes().len(), writes);

        // A pod that cannot finish (the tenant is not in its directory) says why in the
        // status, as Failed: exit 0, for the Job not to retry what cannot work.
        create(
            &api,
            "other",
            json!({"tenantRef": "nope", "from": "2026-11-01", "to": "2026-11-02"}),
            10,
        );
        grant(&api, "other");
        // The pod of another Reprocess may not read it, let alone write its status: the
        // API refuses (403) and the pod exits non-zero without a write.
        let writes = api.status_writes().len();
        let out = run("analytics/other", &kubeconfig, &data, &tenants);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("Reprocess analytics/other"),
            "{stderr}"
        );
        assert_eq!(api.status_writes().len(), writes);
        let refused = api.forbidden();
        assert!(
            refused.len() == 1 && refused[0].starts_with("GET ") && refused[0].contains("reprocesses/other"),
            "{refused:?}"
        );
        assert_eq!(status(&api, "other").phase, Phase::Pending);

        let out = run(
            "analytics/other",
            &kubeconfig_for(dir.path(), &url, "other"),
            &data,
            &tenants,
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let failed = status(&api, "other");
        assert_eq!(condition(&failed, "Failed").1, "UnknownTenant");
        assert!(api.get(&rp_path("other")).is_some());
        assert_eq!(api.forbidden().len(), 1, "only the other pod's read was refused");

        // The API away: non-zero, so the Job makes another pod.
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let away = dir.path().join("kubeconfig-away");
        let text = std::fs::read_to_string(&kubeconfig)
            .unwrap()
            .replace(&url, &format!("http://{closed}"));
        std::fs::write(&away, text).unwrap();
        let out = run("analytics/fix", &away, &data, &tenants);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("Reprocess analytics/fix: Kubernetes API"),
            "{stderr}"
        );

        // Bad input: named, non-zero.
        for (resource, needle) in [
            ("fix", "expected NAMESPACE/NAME"),
            ("analytics/", "expected NAMESPACE/NAME"),
        ] {
            let out = run(resource, &kubeconfig, &data, &tenants);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success() && stderr.contains(needle), "{resource}: {stderr}");
        }
        let out = Command::new(binary())
            .args(["reprocess", "--resource", "analytics/fix", "--tenant", "acme"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));
    }
}
