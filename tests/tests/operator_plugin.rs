//! `kubectl sightline` (status, token issue, report, reprocess plan|approve|cancel) against a
//! mocked API server: what each command prints for the objects the API holds, and that only
//! `reprocess approve` and `cancel` write.

use std::process::{Command, Output};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sightline_core::secret::MasterSecret;
use sightline_core::token::{self, Claims, Scope};
use sightline_operator::plugin::{self, report, PluginError};
use sightline_tests::kube_api::{mock_client, FakeApi};

const NS: &str = "analytics";
/// A signing key as the operator makes them (32 random bytes, padded base64).
const KEY: &str = "DW7PMJHyU7QVdtc4mfpbvB1+30ChAmPEJYbnSKkKa8w=";

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_600, 0).unwrap()
}

fn tenant(status: Value) -> Value {
    json!({
        "apiVersion": "sightline.dev/v1alpha1", "kind": "AnalyticsTenant",
        "metadata": {"name": "acme", "uid": "uid-acme", "generation": 2},
        "spec": {"sites": {"allowed": [{"id": "shop.example.com"}]}},
        "status": status,
    })
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": "2027-01-15T08:00:00Z", "observedGeneration": 2})
}

fn status() -> Value {
    json!({
        "observedGeneration": 1,
        "conditions": [
            condition("Ready", "False", "KafkaUnavailable", "TopicsReady: Kafka is unavailable: all brokers down"),
            condition("Reconciling", "True", "KafkaUnavailable", "TopicsReady: Kafka is unavailable"),
            condition("InSync", "True", "NoDrift", "Kubernetes objects, topics, tables and views match the spec"),
        ],
        "schemaVersion": 8, "pipelineVersion": 3, "sites": 1, "loaderLag": 12,
        "collectorEndpoint": "http://acme-collector.analytics.svc:8080",
        "queryEndpoint": "http://acme-query.analytics.svc:8081",
    })
}

fn tenant_path() -> &'static str {
    "/apis/sightline.dev/v1alpha1/analyticstenants/acme"
}

fn secret() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret",
           "metadata": {"name": "acme-signing-key", "namespace": NS,
                        "labels": {"app.kubernetes.io/managed-by": "sightline-operator", "app.kubernetes.io/instance": "acme"},
                        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": format!("{{\"data\":{{\"secret\":\"{KEY}\"}}}}")}},
           "data": {"secret": base64_of(KEY)}})
}

fn base64_of(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[tokio::test]
async fn status_is_one_screen_of_health_conditions_endpoints_versions_and_lag() {
    let (client, api) = mock_client();
    let fake = FakeApi::start_for_a_person(api);
    fake.put(tenant_path(), tenant(status()));
    let screen = plugin::status::status(&client, "acme", now()).await.unwrap();
    let lines: Vec<&str> = screen.lines().collect();
    assert_eq!(
        lines[0],
        "AnalyticsTenant acme  generation 2 (observed 1)  health InProgress: generation is 2, but latest observed generation is 1"
    );
    assert_eq!(lines[1], "collector  http://acme-collector.analytics.svc:8080");
    assert_eq!(lines[2], "query      http://acme-query.analytics.svc:8081");
    assert_eq!(
        lines[3],
        "schema version 8  pipeline version 3  sites 1  loader lag 12 events"
    );
    assert_eq!(lines[4], "CONDITION    STATUS  REASON            AGE  MESSAGE");
    assert_eq!(
        lines[5],
        "Ready        False   KafkaUnavailable  10m  TopicsReady: Kafka is unavailable: all brokers down"
    );
    assert_eq!(lines.len(), 8, "{screen}");
    assert!(fake.take_calls().iter().all(|c| !c.is_write()));

    let e = plugin::status::status(&client, "nobody", now()).await.unwrap_err();
    assert!(matches!(e, PluginError::NotFound(_)), "{e}");
    assert!(
        e.to_string().contains("AnalyticsTenant \"nobody\" does not exist"),
        "{e}"
    );
}

fn claims(site: &str, scope: Scope) -> Claims {
    Claims {
        tenant: "acme".into(),
        site: site.into(),
        scope,
        expires: 4_000_000_000,
    }
}

#[tokio::test]
async fn token_issue_signs_with_the_tenants_secret_read_through_the_api() {
    let (client, api) = mock_client();
    let fake = FakeApi::start_for_a_person(api);
    fake.put(tenant_path(), tenant(status()));
    fake.put(&format!("/api/v1/namespaces/{NS}/secrets/acme-signing-key"), secret());
    let issued = plugin::token::issue(&client, &claims("shop.example.com", Scope::Read), None)
        .await
        .unwrap();
    // The same token `sightline token issue` makes from the same key, and it verifies.
    let key = MasterSecret::from_base64(KEY, "test").unwrap().tenant_key("acme");
    assert_eq!(issued, token::issue(&key, &claims("shop.example.com", Scope::Read)));
    let verified = token::verify(&issued, 1_800_000_000, Scope::Read, |t| {
        (t == "acme").then(|| key.clone())
    })
    .unwrap();
    assert_eq!(verified.site, "shop.example.com");
    let calls = fake.take_calls();
    assert!(calls.iter().all(|c| !c.is_write()), "{calls:?}");
    assert!(calls
        .iter()
        .any(|c| c.path == format!("/api/v1/namespaces/{NS}/secrets/acme-signing-key")));

    // A site the tenant does not allow, a missing Secret: refused with what to do.
    let e = plugin::token::issue(&client, &claims("other.example.com", Scope::Write), None)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("site \"other.example.com\" is not allowed by tenant \"acme\""),
        "{e}"
    );
    fake.remove(&format!("/api/v1/namespaces/{NS}/secrets/acme-signing-key"));
    let e = plugin::token::issue(&client, &claims("shop.example.com", Scope::Read), None)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("Secret analytics/acme-signing-key does not exist"),
        "{e}"
    );
    assert!(e.to_string().contains("kubectl sightline status acme"), "{e}");
    // Without a status or a namespace in the spec, the namespace must be given.
    fake.put(tenant_path(), tenant(json!({})));
    let e = plugin::token::issue(&client, &claims("shop.example.com", Scope::Read), None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("pass --namespace"), "{e}");
}

#[tokio::test]
async fn report_bundles_objects_events_and_logs_and_never_a_secret() {
    let (client, api) = mock_client();
    let fake = FakeApi::start_for_a_person(api);
    fake.put(tenant_path(), tenant(status()));
    fake.put(&format!("/api/v1/namespaces/{NS}/secrets/acme-signing-key"), secret());
    fake.put(
        &format!("/apis/apps/v1/namespaces/{NS}/deployments/acme-collector"),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "acme-collector", "namespace": NS, "labels": {"app.kubernetes.io/instance": "acme"},
                            "managedFields": [{"manager": "sightline-operator"}]},
               "spec": {"selector": {}, "template": {}}}),
    );
    fake.put(
        &format!("/apis/apps/v1/namespaces/{NS}/deployments/other-collector"),
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "other-collector", "namespace": NS, "labels": {"app.kubernetes.io/instance": "other"}},
               "spec": {"selector": {}, "template": {}}}),
    );
    fake.put(
        "/apis/events.k8s.io/v1/namespaces/default/events/acme.1",
        json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "acme.1", "namespace": "default"},
               "eventTime": "2027-01-15T08:00:00.000000Z", "reason": "DriftRepaired", "note": "topic sightline.acme.events.dlq: deleted",
               "regarding": {"kind": "AnalyticsTenant", "name": "acme"}}),
    );
    fake.put(
        "/api/v1/namespaces/sightline-system/pods/sightline-operator-0",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "sightline-operator-0", "namespace": "sightline-system",
                            "labels": {"app.kubernetes.io/name": "sightline-operator"}}}),
    );
    fake.put(
        "/api/v1/namespaces/sightline-system/pods/sightline-operator-0/log",
        Value::String("{\"level\":\"INFO\",\"message\":\"reconciled\",\"tenant\":\"acme\"}\n".into()),
    );
    let scope = report::Scope {
        tenant: "acme".into(),
        operator_namespace: "sightline-system".into(),
        operator_selector: "app.kubernetes.io/name=sightline-operator".into(),
        log_lines: 100,
        namespace: None,
    };
    let bundle = report::report(&client, &scope, "2027-01-15T08:10:00Z").await.unwrap();
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&bundle)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "SightlineSupportBundle",
        "AnalyticsTenant",
        "Deployment",
        "Secret",
        "Event",
        "OperatorLog",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    assert!(bundle.contains("acme-collector") && !bundle.contains("other-collector"));
    assert!(bundle.contains("topic sightline.acme.events.dlq: deleted"));
    assert!(bundle.contains("\"message\":\"reconciled\""));
    // No secret in any form: not its value, not its base64, not kubectl's copy of it.
    for secret in [KEY.to_string(), base64_of(KEY)] {
        assert!(!bundle.contains(&secret), "the bundle holds the secret");
    }
    assert!(!bundle.contains("last-applied-configuration"));
    assert!(!bundle.contains("managedFields"));
    let secret_doc = docs.iter().find(|d| d["kind"] == "Secret").unwrap();
    assert_eq!(secret_doc["metadata"]["name"], "acme-signing-key");
    assert!(secret_doc.get("data").is_none());
    assert!(fake.take_calls().iter().all(|c| !c.is_write()), "a report only reads");
}

// ---- `kubectl sightline reprocess plan|approve|cancel`. ----

fn rp_path(name: &str) -> String {
    format!("/apis/sightline.dev/v1alpha1/namespaces/{NS}/reprocesses/{name}")
}

fn hash(c: char) -> String {
    c.to_string().repeat(64)
}

/// A Reprocess (approval `approval`) with a plan of hash `plan` (none: no plan yet).
fn reprocess(name: &str, approval: &str, plan: Option<String>, phase: &str) -> Value {
    let mut status = json!({"phase": phase, "conditions": [
        condition("Approved", "False", "AwaitingApproval", "approval is Manual: review the plan")
    ]});
    if let Some(h) = plan {
        status["plan"] = json!({
            "hash": h, "computedAt": "2027-01-15T08:00:00Z", "processing": "v5", "pipelineVersion": 5,
            "image": format!("ghcr.io/sightline/sightline@sha256:{}", "5e".repeat(32)),
            "firstDay": "2026-11-10", "lastDay": "2026-11-12", "days": 3, "unsealedDays": 0,
            "rows": 1500, "bytes": 3_250_000u64, "breakdownBy": "Day",
            "breakdown": [
                {"period": "2026-11-10", "days": 1, "rows": 500, "bytes": 1_000_000u64},
                {"period": "2026-11-11", "days": 1, "rows": 600, "bytes": 1_250_000u64},
                {"period": "2026-11-12", "days": 1, "rows": 400, "bytes": 1_000_000u64}],
            "partitions": [{"table": "events", "first": "20261110", "last": "20261112", "count": 3}],
            "etaSeconds": 1, "etaBasis": "DocumentedThroughput"});
    }
    json!({
        "apiVersion": "sightline.dev/v1alpha1", "kind": "Reprocess",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"), "generation": 1},
        "spec": {"tenantRef": "acme", "from": "2026-11-10", "to": "2026-11-13", "approval": approval},
        "status": status,
    })
}

#[tokio::test]
async fn reprocess_plan_prints_the_plan_and_what_to_do_next() {
    let (client, api) = mock_client();
    let fake = FakeApi::start_for_a_person(api);
    fake.put(&rp_path("fix"), reprocess("fix", "Manual", Some(hash('a')), "Pending"));
    let text = plugin::reprocess::plan(&client, NS, "fix").await.unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Reprocess analytics/fix  tenant acme  replay  phase Pending");
    assert_eq!(lines[1], format!("plan       {}", hash('a')));
    assert_eq!(lines[2], "days       2026-11-10 to 2026-11-12 (3 days)");
    assert_eq!(lines[3], "sites      all");
    assert_eq!(lines[4], "input      1500 rows, 3.1 MiB of events_raw");
    assert_eq!(lines[5], "processing v5 (pipeline version 5)");
    assert_eq!(
        lines[6],
        format!("image      ghcr.io/sightline/sightline@sha256:{}", "5e".repeat(32))
    );
    assert_eq!(lines[7], "estimate   1s (DocumentedThroughput at 240,000 rows/s)");
    assert_eq!(lines[8], "per day:");
    assert_eq!(lines[10], "  2026-11-11    1 days           600 rows     1.2 MiB");
    assert!(
        text.contains("  events               partitions 20261110 to 20261112 (3)"),
        "{text}"
    );
    assert!(
        text.contains("approval   Manual; approved False (AwaitingApproval)"),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
            "to run it: kubectl sightline reprocess approve fix -n analytics --hash {}\n",
            hash('a')
        )),
        "{text}"
    );

    // No plan yet: the reason the status gives; no such Reprocess: named.
    fake.put(&rp_path("new"), reprocess("new", "Manual", None, "Pending"));
    let e = plugin::reprocess::plan(&client, NS, "new").await.unwrap_err();
    assert!(e.to_string().contains("has no plan yet (AwaitingApproval"), "{e}");
    let e = plugin::reprocess::plan(&client, NS, "nope").await.unwrap_err();
    assert!(matches!(e, PluginError::NotFound(_)), "{e}");
    assert!(e.to_string().contains("Reprocess analytics/nope does not exist"), "{e}");
    assert!(fake.take_calls().iter().all(|c| !c.is_write()), "plan only reads");
}

#[tokio::test]
async fn reprocess_approve_sets_the_plans_hash_and_refuses_what_it_cannot_approve() {
    let (client, api) = mock_client();
    let fake = FakeApi::start_for_a_person(api);
    fake.put(&rp_path("fix"), reprocess("fix", "Manual", Some(hash('a')), "Pending"));
    // Not a hash at all: refused, naming --hash and the form expected, before any request.
    for (bad, why) in [
        ("", "it is empty"),
        ("abc", "it has 3 digits"),
        (&hash('g')[..], "'g' is not a hex digit"),
        (&format!("sha256:{}", hash('a'))[..], "'s' is not a hex digit"),
    ] {
        let e = plugin::reprocess::approve(&client, NS, "fix", bad).await.unwrap_err();
        assert!(matches!(e, PluginError::Refused(_)), "{bad:?}: {e}");
        assert!(
            e.to_string().starts_with(&format!(
                "--hash {bad:?}: not a plan hash ({why}): expected the 64 hex digits"
            )),
            "{bad:?}: {e}"
        );
    }
    assert!(fake.take_calls().is_empty(), "a malformed hash sends nothing");
    // Not the hash the person reviewed: refused, nothing written.
    let e = plugin::reprocess::approve(&client, NS, "fix", &hash('b'))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains(&format!("is {}, not {}", hash('a'), hash('b'))),
        "{e}"
    );
    assert!(fake.get(&rp_path("fix")).unwrap()["spec"]["approvedPlanHash"].is_null());

    // The reviewed hash, as a person may paste it: upper case, with the line's whitespace.
    let pasted = format!("  {}\n", hash('a').to_uppercase());
    let text = plugin::reprocess::approve(&client, NS, "fix", &pasted).await.unwrap();
    assert!(
        text.contains(&format!("approved plan {} (3 days, 1500 rows)", hash('a'))),
        "{text}"
    );
    let object = fake.get(&rp_path("fix")).unwrap();
    assert_eq!(object["spec"]["approvedPlanHash"], hash('a'));
    assert_eq!(
        object["spec"]["from"], "2026-11-10",
        "the rest of the spec is untouched"
    );
    assert_eq!(object["metadata"]["generation"], 2, "an edit of the spec");
    let patch = fake.take_calls().into_iter().find(|c| c.is_write()).unwrap();
    assert!(patch.content_type.contains("merge-patch"), "{patch:?}");
    assert!(
        patch.body["metadata"]["resourceVersion"].is_string(),
        "it carries the version read"
    );
    // Again: already approved, nothing written.
    let again = plugin::reprocess::approve(&client, NS, "fix", &hash('a'))
        .await
        .unwrap();
    assert!(again.contains("was approved already"), "{again}");
    assert!(fake.take_calls().iter().all(|c| !c.is_write()));

    // The plan recomputed between the read and the write: refused (409), not approved unseen.
    fake.put(
        &rp_path("raced"),
        reprocess("raced", "Manual", Some(hash('c')), "Pending"),
    );
    fake.on_request(|r, world| {
        if r.method == http::Method::PATCH {
            world.edit(&rp_path("raced"), |o| o["status"]["plan"]["hash"] = json!(hash('d')));
        }
        sightline_tests::kube_api::Hook::Answer
    });
    let e = plugin::reprocess::approve(&client, NS, "raced", &hash('c'))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("changed since it was read"), "{e}");
    assert!(fake.get(&rp_path("raced")).unwrap()["spec"]["approvedPlanHash"].is_null());
    fake.on_request(|_, _| sightline_tests::kube_api::Hook::Answer);

    for (name, approval, plan, phase, needle) in [
        (
            "auto",
            "Automatic",
            Some(hash('a')),
            "Pending",
            "has approval Automatic",
        ),
        ("unplanned", "Manual", None, "Pending", "has no plan yet"),
        (
            "ran",
            "Manual",
            Some(hash('a')),
            "Running",
            "already ran or runs (phase Running",
        ),
        (
            "over",
            "Manual",
            Some(hash('a')),
            "Succeeded",
            "already ran or runs (phase Succeeded",
        ),
    ] {
        fake.put(&rp_path(name), reprocess(name, approval, plan, phase));
        let e = plugin::reprocess::approve(&client, NS, name, &hash('a'))
            .await
            .unwrap_err();
        assert!(matches!(e, PluginError::Refused(_)), "{name}: {e}");
        assert!(e.to_string().contains(needle), "{name}: {e}");
        assert!(
            fake.get(&rp_path(name)).unwrap()["spec"]["approvedPlanHash"].is_null(),
            "{name}"
        );
    }
    let e = plugin::reprocess::approve(&client, NS, "nope", &hash('a'))
        .await
        .unwrap_err();
    assert!(matches!(e, PluginError::NotFound(_)), "{e}");
}

#[tokio::test]
async fn reprocess_cancel_deletes_it_and_says_a_running_one_finishes_its_day() {
    let (client, api) = mock_client();
    let fake = FakeApi::start_for_a_person(api);
    let mut running = reprocess("fix", "Automatic", Some(hash('a')), "Running");
    running["metadata"]["finalizers"] = json!(["sightline.dev/cancel"]);
    fake.put(&rp_path("fix"), running);
    let text = plugin::reprocess::cancel(&client, NS, "fix").await.unwrap();
    assert!(
        text.contains("its pod finishes the day under way") && text.contains("involvedObject.name=fix"),
        "{text}"
    );
    // The finalizer holds it until the pod stopped and the operator recorded the days.
    let held = fake.get(&rp_path("fix")).unwrap();
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    fake.put(
        &rp_path("done"),
        reprocess("done", "Automatic", Some(hash('a')), "Succeeded"),
    );
    let text = plugin::reprocess::cancel(&client, NS, "done").await.unwrap();
    assert!(text.contains("it had ended: Succeeded"), "{text}");
    assert!(fake.get(&rp_path("done")).is_none());
    let e = plugin::reprocess::cancel(&client, NS, "nope").await.unwrap_err();
    assert!(e.to_string().contains("does not exist"), "{e}");
}

// ---- The binary: what a person sees on the command line. ----

/// A kubeconfig whose current context ("test") names the API server at `url`.
fn kubeconfig(dir: &std::path::Path, url: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: \"{url}\"}}}}]\n\
             users: [{{name: u, user: {{token: t}}}}]\n\
             contexts: [{{name: test, context: {{cluster: c, user: u, namespace: {NS}}}}}]\n\
             current-context: test\n"
        ),
    )
    .unwrap();
    path
}

/// The plugin with `args`, as `sightline kubectl …` or (`as_plugin`) through a symlink named
/// `kubectl-sightline`, as kubectl runs it; the log filter is the plugin's default.
fn plugin_command(dir: &std::path::Path, kubeconfig: &std::path::Path, as_plugin: bool, args: &[&str]) -> Output {
    let mut command = if as_plugin {
        let link = dir.join("kubectl-sightline");
        if !link.exists() {
            std::os::unix::fs::symlink(sightline_tests::binary(), &link).unwrap();
        }
        Command::new(link)
    } else {
        let mut c = Command::new(sightline_tests::binary());
        c.arg("kubectl");
        c
    };
    command
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("RUST_LOG")
        .output()
        .expect("run the plugin")
}

#[test]
fn a_malformed_hash_is_a_usage_error_naming_hash_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    // A server that would take a connection: none must come.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let config = kubeconfig(dir.path(), &format!("http://{}", listener.local_addr().unwrap()));
    for as_plugin in [false, true] {
        for bad in ["abc", &hash('g')[..], " ", &hash('a')[1..]] {
            let out = plugin_command(
                dir.path(),
                &config,
                as_plugin,
                &["reprocess", "approve", "fix", "-n", NS, "--hash", bad],
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "a usage error, like clap's: {stderr}");
            assert!(
                stderr.contains("for '--hash <HASH>': not a plan hash")
                    && stderr.contains("expected the 64 hex digits (SHA-256)"),
                "{bad:?}: {stderr}"
            );
        }
    }
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the plugin connected to the API server: {other:?}"),
    }
}

#[test]
fn an_unreachable_api_server_is_named_with_where_it_came_from_and_why() {
    let dir = tempfile::tempdir().unwrap();
    // A port just released: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = kubeconfig(dir.path(), &format!("https://127.0.0.1:{port}"));
    let upper = hash('a').to_uppercase();
    let commands: [&[&str]; 6] = [
        &["status", "acme"],
        &["token", "issue", "acme", "--scope", "admin"],
        &["report", "acme"],
        &["reprocess", "plan", "fix"],
        // Upper case is a hash (it passes the command line and is sent).
        &["reprocess", "approve", "fix", "--hash", &upper],
        &["reprocess", "cancel", "fix"],
    ];
    for as_plugin in [false, true] {
        for args in commands {
            let out = plugin_command(dir.path(), &config, as_plugin, args);
            // The whole of stderr: the one error line, no line of kube's own logging.
            assert_eq!(
                String::from_utf8_lossy(&out.stderr),
                format!(
                    "error: cannot reach the Kubernetes API server at https://127.0.0.1:{port} (from the \
                     kubeconfig's current context \"test\"): connection refused\n"
                ),
                "{args:?}"
            );
            assert_eq!(out.status.code(), Some(1), "{args:?}");
        }
    }
    // No kubeconfig and not in a pod: the path as a path, and what to do.
    let missing = dir.path().join("missing");
    let out = plugin_command(dir.path(), &missing, false, &["status", "acme"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "error: no Kubernetes cluster to talk to: kubeconfig: cannot read {}: ",
            missing.display()
        )) && stderr.contains("in-cluster: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set")
            && stderr.contains("set KUBECONFIG"),
        "{stderr}"
    );
    assert!(!stderr.contains("'\""), "the path quoted twice: {stderr}");
}
