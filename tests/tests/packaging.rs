//! Packaging agrees with the code: the Helm chart (charts/sightline), the plain bundle
//! rendered from it (manifests/install.yaml; scripts/check-packaging.sh fails when the two
//! differ), the examples (manifests/examples), the Dockerfile, and the commands NOTES.txt
//! and the `helm test` Pod run, which are run here against the real binary.
//!
//! What needs helm (lint, render, kubernetes-validate) is in scripts/check-packaging.sh; what
//! can be read or run without it is here, so `cargo nextest` alone catches it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value as Json;
use serde_yaml::Value;
use sightline_core::spec::{parse_tenants, Tenant};
use sightline_operator::build::pod::RUN_AS_USER;
use sightline_operator::crd::AnalyticsTenant;
use sightline_operator::names::Role;
use sightline_operator::validate::{validate, OperatorConfig};
use sightline_tests::rbac::{Attributes, Rbac};
use sightline_tests::{binary, client, Server, TEST_SECRET};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    let path = repo().join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The non-empty documents of a multi-document YAML text.
fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// `sightline <args> --help`.
fn help(args: &[&str]) -> String {
    let out = Command::new(binary())
        .args(args)
        .arg("--help")
        .output()
        .expect("run sightline --help");
    assert!(out.status.success(), "sightline {args:?} --help failed");
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

/// The `--flag` names in `text` (up to `=`, a space or a quote).
fn flags(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '=' || c == ',')
        .filter(|w| w.starts_with("--") && w.len() > 2 && w[2..].chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .map(str::to_string)
        .collect()
}

/// Asserts every flag of `used` is one `sightline <command> --help` lists.
fn assert_flags_exist(command: &[&str], used: &BTreeSet<String>, whose: &str) {
    let known = flags(&help(command));
    let unknown: Vec<&String> = used.iter().filter(|f| !known.contains(*f)).collect();
    assert!(
        unknown.is_empty(),
        "{whose} passes `sightline {}` flags it does not have: {unknown:?}",
        command.join(" ")
    );
}

fn files_in(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().expect("name").to_string_lossy().into_owned();
            (name, std::fs::read(&p).expect("read"))
        })
        .collect()
}

#[test]
fn the_charts_crds_are_the_generated_crds() {
    // crds/ is checked against the code by the operator's drift test; Helm installs every
    // file of the chart's crds/, so a CRD added to crds/ must be there too.
    let generated = files_in(&repo().join("crds"));
    let chart = files_in(&repo().join("charts/sightline/crds"));
    assert!(!generated.is_empty());
    assert_eq!(
        generated.keys().collect::<Vec<_>>(),
        chart.keys().collect::<Vec<_>>(),
        "charts/sightline/crds/ must hold the files of crds/: run `sightline crdgen`"
    );
    for (name, bytes) in &generated {
        assert!(
            chart[name] == *bytes,
            "charts/sightline/crds/{name} differs from crds/{name}: run `sightline crdgen`"
        );
    }
}

/// Every `*.yaml` under `dir`, recursively.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

#[test]
fn every_example_is_a_resource_the_operator_and_the_cli_accept() {
    let mut files = Vec::new();
    yaml_files(&repo().join("manifests/examples"), &mut files);
    files.sort();
    // The tenant e2e/run.sh --full applies, held to the same rules.
    files.push(repo().join("e2e/cluster/tenant.yaml"));
    let mut tenants: Vec<Tenant> = Vec::new();
    let mut reprocesses = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read");
        let name = file.display().to_string();
        for doc in documents(&text) {
            let one = serde_yaml::to_string(&doc).expect("YAML");
            match kind(&doc) {
                "AnalyticsTenant" => {
                    // The tenants file's strict reading (an unknown field is an error) ...
                    let parsed = parse_tenants(&one, &name).unwrap_or_else(|e| panic!("{e}"));
                    // ... and the operator's: the CRD type, validated as a reconcile would.
                    let mut obj: AnalyticsTenant =
                        serde_yaml::from_value(doc.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
                    obj.metadata.uid = Some("uid".into());
                    validate(&obj, &OperatorConfig::example("sightline")).unwrap_or_else(|e| panic!("{name}: {e}"));
                    tenants.extend(parsed);
                }
                "Reprocess" => {
                    // Strictly, as the resource (the core spec and the operator's fields).
                    let resource = sightline_operator::reprocess::crd::parse_resource(&one, &name)
                        .unwrap_or_else(|e| panic!("{e}"));
                    reprocesses.push((name.clone(), resource));
                }
                other => panic!("{name}: a {other:?} document; the examples are AnalyticsTenants and Reprocesses"),
            }
        }
    }
    assert!(
        reprocesses.iter().any(|(_, s)| s.reprocess.dry_run) && reprocesses.iter().any(|(_, s)| !s.reprocess.dry_run),
        "a Reprocess and a dry-run Reprocess"
    );
    assert!(
        reprocesses
            .iter()
            .any(|(_, s)| s.approval == sightline_operator::reprocess::crd::Approval::Manual),
        "a Reprocess with Manual approval"
    );
    for (name, resource) in reprocesses {
        let spec = resource.reprocess;
        let tenant = tenants
            .iter()
            .find(|t| t.name == spec.tenant_ref)
            .unwrap_or_else(|| panic!("{name}: tenantRef {:?} is no example tenant", spec.tenant_ref));
        let mut request = spec
            .request(tenant, Arc::new(sightline_core::processor::Current))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        // The engine's own checks (sites of the tenant, parallelism, sealed days), on a
        // clock well after the range, so the answer does not depend on today's date.
        request.now = request.to + chrono::Duration::days(30);
        sightline_core::warehouse::replay::prepare(&request).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// The bundle's documents of one kind.
fn bundle_docs(bundle: &[Value], k: &str) -> Vec<Value> {
    bundle.iter().filter(|d| kind(d) == k).cloned().collect()
}

#[test]
fn the_operator_deployment_runs_flags_the_binary_has_with_a_restricted_pod() {
    let bundle = documents(&read("manifests/install.yaml"));
    let deployment = &bundle_docs(&bundle, "Deployment")[0];
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(2), "two replicas");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args = strings(&container["args"]);
    assert_eq!(args[0], "operator");
    // Every flag the chart's template can pass (optional ones included), not only the
    // defaults rendered into the bundle.
    let template = read("charts/sightline/templates/deployment.yaml");
    let used = flags(&template);
    assert!(
        used.contains("--lease-name") && used.contains("--collector-trusted-proxy"),
        "{used:?}"
    );
    assert_flags_exist(&["operator"], &used, "charts/sightline/templates/deployment.yaml");

    // The probes ask the port the operator listens on.
    let listen = args.iter().find_map(|a| a.strip_prefix("--listen=")).expect("--listen");
    let port: i64 = listen.rsplit(':').next().unwrap().parse().expect("port");
    let ports = container["ports"].as_sequence().expect("ports");
    let named = ports
        .iter()
        .find(|p| p["containerPort"].as_i64() == Some(port))
        .and_then(|p| p["name"].as_str())
        .expect("a named container port for --listen");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(container[probe]["httpGet"]["path"].as_str(), Some(path));
        assert_eq!(container[probe]["httpGet"]["port"].as_str(), Some(named));
    }
    // Pod Security "restricted", and the uid the image and the operator's own pods use.
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(pod["securityContext"]["runAsUser"].as_i64(), Some(RUN_AS_USER));
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault")
    );
    let sc = &container["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    let env: Vec<String> = container["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .filter_map(|e| e["name"].as_str().map(str::to_string))
        .collect();
    assert!(
        env.contains(&"POD_NAMESPACE".into()) && env.contains(&"POD_NAME".into()),
        "{env:?}"
    );

    // The image is the one the operator's workloads run by default (--image).
    let default_image = format!("ghcr.io/sightline/sightline:{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(container["image"].as_str(), Some(default_image.as_str()));
    assert!(args.contains(&format!("--image={default_image}")), "{args:?}");
    assert!(
        help(&["operator"]).contains(&format!("[default: {default_image}]")),
        "the chart's image and appVersion follow the operator's default --image"
    );
}

#[test]
fn the_plugins_report_looks_for_the_operator_where_the_chart_puts_it() {
    let bundle = documents(&read("manifests/install.yaml"));
    let deployment = &bundle_docs(&bundle, "Deployment")[0];
    let text = help(&["kubectl", "report"]);
    let default_of = |flag: &str| {
        let after = &text[text.find(flag).unwrap_or_else(|| panic!("{flag} in {text}"))..];
        let value = &after[after.find("[default: ").expect("a default") + "[default: ".len()..];
        value[..value.find(']').expect("]")].to_string()
    };
    assert_eq!(
        deployment["metadata"]["namespace"].as_str(),
        Some(default_of("--operator-namespace").as_str()),
        "the README installs the chart in the namespace --operator-namespace defaults to"
    );
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for term in default_of("--operator-selector").split(',') {
        let (key, value) = term.split_once('=').expect("key=value");
        assert_eq!(
            labels[key].as_str(),
            Some(value),
            "the operator's pods carry {term}: {labels:?}"
        );
    }
}

#[test]
fn the_rbac_grants_no_wildcards_no_secret_listing_and_what_the_reprocess_job_role_needs() {
    let bundle = documents(&read("manifests/install.yaml"));
    let rbac = Rbac::from_bundle(&read("manifests/install.yaml")).expect("RBAC");
    for rule in &rbac.rules {
        for list in [&rule.api_groups, &rule.resources, &rule.verbs] {
            assert!(!list.iter().any(|v| v == "*"), "a wildcard in {rule:?}");
        }
        if rule.resources.iter().any(|r| r == "secrets") {
            // Reading every Secret of the cluster would be the operator's largest grant.
            let verbs: BTreeSet<&str> = rule.verbs.iter().map(String::as_str).collect();
            assert_eq!(verbs, BTreeSet::from(["get", "create"]), "{rule:?}");
        }
        if rule.resources.iter().any(|r| r == "leases") {
            assert!(rule.namespaced, "leases only in the operator's namespace: {rule:?}");
        }
    }
    // Reading and renewing the lease is limited to the lease the operator is told.
    let deployment = &bundle_docs(&bundle, "Deployment")[0];
    let args = strings(&deployment["spec"]["template"]["spec"]["containers"][0]["args"]);
    let lease = args
        .iter()
        .find_map(|a| a.strip_prefix("--lease-name="))
        .expect("--lease-name");
    let lease_rules: Vec<_> = rbac
        .rules
        .iter()
        .filter(|r| r.resources.iter().any(|x| x == "leases") && r.verbs.iter().any(|v| v == "patch"))
        .collect();
    assert!(!lease_rules.is_empty());
    for r in lease_rules {
        assert_eq!(r.resource_names, [lease.to_string()], "{r:?}");
    }
    // The operator grants the Reprocess Job's ServiceAccount get on its Reprocess and patch
    // on its status; Kubernetes allows that only to who holds both.
    let reprocess = |verb: &'static str, resource: &str| Attributes {
        verb,
        group: "sightline.dev".into(),
        resource: resource.into(),
        namespace: Some("shop".into()),
        name: Some("fix-referrers".into()),
    };
    assert!(rbac.allows(&reprocess("get", "reprocesses")));
    assert!(rbac.allows(&reprocess("patch", "reprocesses/status")));
    // The bindings give the rules to the Deployment's ServiceAccount.
    let account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName");
    for k in ["ClusterRoleBinding", "RoleBinding"] {
        let binding = &bundle_docs(&bundle, k)[0];
        assert_eq!(binding["subjects"][0]["name"].as_str(), Some(account), "{k}");
        assert_eq!(binding["subjects"][0]["namespace"].as_str(), Some("sightline"), "{k}");
    }
}

/// The lines of NOTES.txt's heredoc `<<'YAML'` ... `YAML`, without their indentation.
fn notes_tenant(notes: &str) -> String {
    let start = notes.find("<<'YAML'\n").expect("the tenant's heredoc") + "<<'YAML'\n".len();
    let body = &notes[start..];
    let end = body.find("\n     YAML\n").expect("the heredoc's end");
    body[..end]
        .lines()
        .map(|l| l.strip_prefix("     ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The text between `open` and the next `close` after the line that holds `anchor`.
fn quoted_after(text: &str, anchor: &str, open: &str, close: char) -> String {
    let from = text.find(anchor).unwrap_or_else(|| panic!("{anchor:?} in NOTES.txt"));
    let rest = &text[from..];
    let start = rest.find(open).unwrap_or_else(|| panic!("{open:?} after {anchor:?}")) + open.len();
    let end = rest[start..].find(close).expect("closing quote");
    rest[start..start + end].to_string()
}

/// `sightline token issue ...` as NOTES.txt writes it for `var` (`WRITE_TOKEN=$(sightline ...)`).
fn notes_token_args(notes: &str, var: &str) -> Vec<String> {
    let line = notes
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{var}=$(sightline ")))
        .unwrap_or_else(|| panic!("{var}=$(sightline ...) in NOTES.txt"));
    let inner = line
        .split_once("$(sightline ")
        .unwrap()
        .1
        .trim_end()
        .trim_end_matches(')');
    inner.split_whitespace().map(str::to_string).collect()
}

#[tokio::test]
async fn the_notes_commands_create_a_tenant_issue_tokens_send_and_query_a_first_event() {
    let notes = read("charts/sightline/templates/NOTES.txt");
    // 1. The tenant NOTES.txt applies, as a tenants file (the strict reading).
    let tenant_yaml = notes_tenant(&notes);
    let tenant = parse_tenants(&tenant_yaml, "NOTES.txt").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tenant.len(), 1);
    let dir = tempfile::tempdir().unwrap();
    let tenants = dir.path().join("tenants");
    std::fs::create_dir_all(&tenants).unwrap();
    std::fs::write(tenants.join("notes.yaml"), &tenant_yaml).unwrap();
    let server = Server::start(&dir.path().join("data"), &tenants, &[]);

    // 2. Tokens from the signing Secret's value in SIGHTLINE_SECRET, as NOTES.txt issues them.
    let issue = |var: &str| {
        let args = notes_token_args(&notes, var);
        let out = Command::new(binary())
            .args(&args)
            .env("SIGHTLINE_SECRET", TEST_SECRET)
            .current_dir(dir.path())
            .output()
            .expect("run sightline token issue");
        assert!(
            out.status.success(),
            "sightline {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let write = issue("WRITE_TOKEN");
    let read_token = issue("READ_TOKEN");

    // 3. The event NOTES.txt sends, with its User-Agent (a browser's, so it is counted).
    let user_agent = quoted_after(&notes, "/v1/collect", "-A '", '\'');
    let body = quoted_after(&notes, "/v1/collect", "-d '", '\'');
    let day_before = chrono::Utc::now().date_naive();
    let sent = client()
        .post(server.url("/v1/collect"))
        .bearer_auth(&write)
        .header("content-type", "application/json")
        .header("user-agent", &user_agent)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(sent.status(), 202, "{body}: {}", sent.text().await.unwrap());

    // 4. The query NOTES.txt makes: one visitor, one pageview.
    let url = quoted_after(&notes, "READ_TOKEN\" \\", "'http://127.0.0.1:8081", '\'');
    let answer = client()
        .get(server.url(&url))
        .bearer_auth(&read_token)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Json = answer.json().await.unwrap();
    // `period=today`: when the UTC date turned between sending and asking, the event is
    // yesterday's and today has none; only then is the answer not checked.
    if chrono::Utc::now().date_naive() == day_before {
        assert_eq!(answer["results"]["visitors"], 1, "{answer}");
        assert_eq!(answer["results"]["pageviews"], 1, "{answer}");
    }

    // The ports NOTES.txt forwards are the Services' (the operator's roles).
    assert!(notes.contains(&format!("svc/shop-collector {p}:{p}", p = Role::Collector.port())));
    assert!(notes.contains(&format!("svc/shop-query {p}:{p}", p = Role::Query.port())));
}

#[tokio::test]
async fn the_helm_test_pod_expects_what_the_query_api_answers() {
    let pod = read("charts/sightline/templates/tests/query-health.yaml");
    // The query Service's port, as the operator builds it.
    assert!(pod.contains(&format!("-query.%s.svc:{}", Role::Query.port())), "{pod}");
    let paths: Vec<&str> = pod
        .split("\"$QUERY_URL")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap())
        .collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    let (dir, data, tenants) = sightline_tests::fixture();
    let server = Server::start(&data, &tenants, &[]);
    // The OpenAPI document, without a token.
    let doc = client().get(server.url(paths[0])).send().await.unwrap();
    assert_eq!(doc.status(), 200);
    assert!(doc.text().await.unwrap().contains("\"openapi\""));
    assert!(
        pod.contains("*'\"openapi\"'*"),
        "the pod looks for what the document holds"
    );
    // A query without a token: 401 with the API's JSON error.
    let refused = client().get(server.url(paths[1])).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let error: Json = refused.json().await.unwrap();
    assert!(error["error"]["code"].is_string(), "{error}");
    assert!(
        pod.contains("*'\"error\"'*' 401'"),
        "the pod expects 401 and the JSON error"
    );
    drop(dir);
}

#[test]
fn the_dockerfile_builds_the_binary_and_takes_its_pins_from_the_install_script() {
    let dockerfile = read("Dockerfile");
    let install = read("scripts/install-deps.sh");
    let lines: Vec<&str> = dockerfile.lines().map(str::trim).collect();
    // The binary: the cli crate's one [[bin]], built locked, at the path the entrypoint runs.
    let cli = read("cli/Cargo.toml");
    assert!(
        cli.contains("[[bin]]\nname = \"sightline\""),
        "the binary is `sightline`"
    );
    assert!(dockerfile.contains("cargo build --release --locked --bin sightline"));
    assert!(dockerfile.contains("install -D -m 0755 target/release/sightline /out/bin/sightline"));
    assert!(dockerfile.contains("COPY --from=build /out/bin/sightline /usr/local/bin/sightline"));
    assert!(lines.contains(&r#"ENTRYPOINT ["/usr/local/bin/sightline"]"#));
    // The uid the operator's pods and the chart run as.
    assert!(lines.contains(&format!("USER {RUN_AS_USER}:{RUN_AS_USER}").as_str()));
    let values: Value = serde_yaml::from_str(&read("charts/sightline/values.yaml")).unwrap();
    assert_eq!(values["podSecurityContext"]["runAsUser"].as_i64(), Some(RUN_AS_USER));

    // libchdb and the user-agent data come from install-deps.sh (its pins, not copies): the
    // Dockerfile names no version of them, runs the script with a flag it has, and copies
    // from where the script puts them, which is where core looks.
    for pin in ["CHDB_VERSION=", "UAP_CORE_VERSION=", "ISBOT_VERSION="] {
        let value = install
            .lines()
            .find_map(|l| l.trim().strip_prefix(pin))
            .unwrap_or_else(|| panic!("{pin} in install-deps.sh"))
            .split_whitespace()
            .next()
            .unwrap()
            .trim_matches('"');
        assert!(
            !dockerfile.contains(value),
            "the Dockerfile repeats the pin {pin}{value}"
        );
    }
    assert!(lines.contains(&r#"RUN ["./scripts/install-deps.sh", "--no-libchdb", "--no-build-libs"]"#));
    assert!(lines.contains(&r#"RUN ["./scripts/install-deps.sh", "--no-build-libs"]"#));
    assert!(install.contains("--no-libchdb) with_libchdb=false"));
    // The build stage gets the C toolchain and OpenSSL headers from the same script, before
    // the build.
    let build_libs = lines
        .iter()
        .position(|l| *l == r#"RUN ["./scripts/install-deps.sh", "--build-libs"]"#)
        .expect("the build stage runs install-deps.sh --build-libs");
    let cargo = lines.iter().position(|l| l.contains("cargo build --release")).unwrap();
    let build_from = lines.iter().position(|l| l.ends_with("AS build")).unwrap();
    assert!(build_from < build_libs && build_libs < cargo);
    assert!(install.contains("--build-libs) only_build_libs=true") && install.contains("libssl-dev"));
    assert!(install.contains(r#"CHDB_DIR="${SIGHTLINE_LIB_DIR:-/usr/local/lib/sightline}""#));
    assert!(lines.contains(&"ENV SIGHTLINE_LIB_DIR=/usr/local/lib/sightline"));
    assert!(dockerfile
        .contains("COPY --from=libchdb /usr/local/lib/sightline/libchdb.so /usr/local/lib/sightline/libchdb.so"));
    let ffi = read("core/src/warehouse/embedded/ffi.rs");
    assert!(ffi.contains(r#""/usr/local/lib/sightline""#) && ffi.contains("join(\"libchdb.so\")"));
    assert!(dockerfile.contains("COPY --from=deps /usr/local/lib/sightline/ua /usr/local/lib/sightline/ua"));
    assert!(
        read("core/build.rs").contains(r#"PathBuf::from("/usr/local/lib/sightline")"#)
            && read("core/build.rs").contains(".join(\"ua\")")
    );

    // Files the stages copy exist; the context keeps what the build reads.
    for path in [
        "scripts/install-deps.sh",
        "scripts/tools-path.sh",
        "manifests/examples/tenant.yaml",
    ] {
        assert!(dockerfile.contains(path) && repo().join(path).is_file(), "{path}");
    }
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    for needed in [
        "Cargo.lock",
        "web/dist/sightline.js",
        "scripts/install-deps.sh",
        "core/data",
        "manifests/examples",
    ] {
        assert!(
            !ignored.iter().any(|p| needed.starts_with(p.as_str())),
            ".dockerignore leaves out {needed}, which the build reads"
        );
    }

    // The Rust image is at least the workspace's rust-version; build and runtime are both
    // Debian 12 (bookworm), so the binary's glibc is the one it runs on.
    let rust = lines
        .iter()
        .find_map(|l| l.strip_prefix("ARG RUST_VERSION="))
        .expect("ARG RUST_VERSION");
    let workspace = read("Cargo.toml");
    let msrv = workspace
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .expect("rust-version")
        .trim_matches('"');
    let version = |v: &str| -> Vec<u32> { v.split('.').map(|p| p.parse().expect("a version")).collect() };
    assert!(version(rust) >= version(msrv), "rust {rust} < rust-version {msrv}");
    assert!(dockerfile.contains("FROM rust:${RUST_VERSION}-bookworm AS build"));
    assert!(dockerfile.contains("FROM gcr.io/distroless/cc-debian12:nonroot AS runtime"));
    // The binary links only what distroless cc-debian12 has: glibc, libgcc and libstdc++ (the
    // cc image) and OpenSSL 3 (libssl3, in the base it builds on; librdkafka's TLS). The
    // build here is on the same Debian 12 as the image's build stage.
    let ldd = Command::new("ldd").arg(binary()).output().expect("ldd");
    assert!(ldd.status.success(), "ldd {}", binary().display());
    let runtime = [
        "linux-vdso.so.1",
        "libc.so.6",
        "libm.so.6",
        "libdl.so.2",
        "libpthread.so.0",
        "librt.so.1",
        "libgcc_s.so.1",
        "libstdc++.so.6",
        "libssl.so.3",
        "libcrypto.so.3",
    ];
    let linked: Vec<String> = String::from_utf8_lossy(&ldd.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .filter(|lib| !lib.contains("ld-linux"))
        .collect();
    assert!(
        linked.iter().any(|l| l == "libssl.so.3"),
        "TLS links the system OpenSSL: {linked:?}"
    );
    for lib in &linked {
        assert!(
            runtime.contains(&lib.as_str()),
            "{lib} is not in distroless cc-debian12: {linked:?}"
        );
    }
    // The default target (the last stage) is the cluster image, without libchdb.
    let last_from = lines.iter().rev().find(|l| l.starts_with("FROM ")).unwrap();
    assert_eq!(*last_from, "FROM runtime AS cluster");

    // The standalone image's command uses flags `sightline standalone` has.
    let cmd = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("CMD [\"standalone\""))
        .expect("the standalone CMD");
    assert_flags_exist(&["standalone"], &flags(cmd), "the standalone image's CMD");
}
