//! Kafka over TLS and mTLS, and SASL SCRAM, with the real binary and a real broker (Tansu,
//! whatever `$SIGHTLINE_TEST_BROKER` says: noida-db's Kafka has neither TLS nor SASL) behind
//! a TLS-terminating proxy with a test CA made at run time (`kafka_tls`).
//!
//! What this proves: every Kafka client of the roles (provision's admin client, the
//! collector's producer, the loader's consumer and dead-letter producer, and the raw
//! LeaveGroup of `--leave-on-stop` and `remove-loader`) does a TLS handshake that verifies
//! the broker's certificate against SIGHTLINE_KAFKA_CA_FILE and its address, and presents the
//! client certificate (the proxy admits no connection without one the CA signed); a wrong CA
//! and a missing client certificate are refused with the reason; librdkafka and the raw
//! client speak SCRAM-SHA-512 and SCRAM-SHA-256 to a broker that checks them, and a refusal
//! names the settings. What it does not: a SCRAM login the broker accepts (Tansu in memory
//! cannot hold a SCRAM user while it requires SASL; `kafka_tls` says why), TLS between the
//! proxy and the broker (none; each connection is forwarded as bytes), or a broker's own TLS
//! stack.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::json;
use sightline_core::warehouse::http::{Http, HttpConfig};
use sightline_tests::clickhouse_front::ClickHouseFront;
use sightline_tests::kafka_tls::{mtls_env, TestPki, TlsProxy};
use sightline_tests::*;

/// Tansu advertising a TLS proxy in front of it, and the proxy.
fn broker_behind_tls(pki: &TestPki) -> (Broker, TlsProxy) {
    let listener = TlsProxy::bind();
    let proxy_addr = listener.local_addr().unwrap().to_string();
    let broker = Broker::start_tansu(TansuOptions {
        advertised: Some(proxy_addr),
        authentication: false,
    });
    let proxy = TlsProxy::start(listener, &broker.bootstrap, pki);
    (broker, proxy)
}

/// `sightline <args>` with `env` added; its output.
fn run(args: &[&str], env: &[(String, String)]) -> Output {
    Command::new(binary())
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sightline")
}

fn with(env: &[(String, String)], name: &str, value: &str) -> Vec<(String, String)> {
    let mut env: Vec<_> = env.iter().filter(|(k, _)| k != name).cloned().collect();
    env.push((name.to_string(), value.to_string()));
    env
}

fn without(env: &[(String, String)], names: &[&str]) -> Vec<(String, String)> {
    env.iter()
        .filter(|(k, _)| !names.contains(&k.as_str()))
        .cloned()
        .collect()
}

async fn post_events(collector: &Server, visitor: &str, n: usize) -> u16 {
    let events: Vec<_> = (0..n)
        .map(|i| json!({"url": format!("https://shop.example.com/tls/{visitor}/{i}")}))
        .collect();
    client()
        .post(collector.url("/v1/collect"))
        .bearer_auth(write_token("acme", "shop.example.com"))
        .header("User-Agent", CHROME_MAC)
        .header("X-Forwarded-For", visitor)
        .json(&json!({"events": events}))
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn events_travel_over_mtls_from_collector_to_loader_and_the_loader_leaves_its_group() {
    let pki = TestPki::new("Sightline test CA");
    let (broker, proxy) = broker_behind_tls(&pki);
    let env = mtls_env(&pki);
    let bootstrap = proxy.addr.to_string();
    let (dir, data, tenants) = kafka_fixture();
    let tenants_arg = tenants.to_str().unwrap();

    let provisioned = run(&["provision", "--brokers", &bootstrap, "--tenants", tenants_arg], &env);
    assert!(
        provisioned.status.success(),
        "provision over TLS: {}",
        String::from_utf8_lossy(&provisioned.stderr)
    );

    let front = ClickHouseFront::start(&dir.path().join("clickhouse"), Some(("sightline", "s3cret"))).await;
    let session_timeout = broker.kind.session_timeout_ms().to_string();
    let mut loader = Server::start_with_env(
        "loader",
        &data,
        &tenants,
        &[
            "--clickhouse-url",
            &front.url(),
            "--clickhouse-user",
            "sightline",
            "--clickhouse-password",
            "s3cret",
            "--brokers",
            &bootstrap,
            "--instance-id",
            "loader-0",
            "--leave-on-stop",
            "--batch-max-wait-ms",
            "50",
            "--session-timeout-ms",
            &session_timeout,
            "--lag-interval-ms",
            "500",
        ],
        &env,
        None,
    );
    let collector = Server::start_with_env(
        "collector",
        &data,
        &tenants,
        &["--brokers", &bootstrap, "--delivery-timeout-ms", "10000"],
        &env,
        None,
    );
    eventually(Duration::from_secs(60), "the collector is ready over TLS", || async {
        readyz(&collector).await == Some(200)
    })
    .await;
    // Visitors from several addresses: their messages spread over the partitions.
    let mut sent = 0u64;
    for visitor in ["10.1.0.1", "10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"] {
        assert_eq!(post_events(&collector, visitor, 5).await, 202, "a request over TLS");
        sent += 5;
    }
    let wh = Http::new(&HttpConfig {
        url: front.url(),
        user: Some("sightline".into()),
        password: Some("s3cret".into()),
        compression: true,
    });
    eventually(
        Duration::from_secs(90),
        "the loader stored every event read over TLS",
        || async { count(&wh, "SELECT count() AS n FROM sightline_acme.events_raw").await == sent },
    )
    .await;
    // On SIGTERM the loader removes its static membership with a raw LeaveGroup, over TLS
    // with its certificate too.
    loader.stop();
    let said = loader.stdout_lines().join("\n");
    assert!(
        said.contains("loader-0.acme removed from sightline.acme.loader"),
        "the loader left its group over TLS: {said}"
    );
    // remove-loader: the member is gone already.
    let removed = run(
        &[
            "remove-loader",
            "--brokers",
            &bootstrap,
            "--tenants",
            tenants_arg,
            "--instance-id",
            "loader-0",
        ],
        &env,
    );
    assert!(
        removed.status.success(),
        "remove-loader over TLS: {}",
        String::from_utf8_lossy(&removed.stderr)
    );
    assert!(
        String::from_utf8_lossy(&removed.stdout).contains("loader-0.acme was not a member of sightline.acme.loader"),
        "{}",
        String::from_utf8_lossy(&removed.stdout)
    );
    // Every connection went through TLS with the client certificate; none was refused.
    assert!(proxy.accepted_with_client_certificate() > 0);
    assert_eq!(proxy.refused(), Vec::<String>::new());
    drop(collector);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_ca_a_missing_client_certificate_and_refused_scram_are_errors_with_the_reason() {
    let pki = TestPki::new("Sightline test CA");
    let (_broker, proxy) = broker_behind_tls(&pki);
    let env = mtls_env(&pki);
    let bootstrap = proxy.addr.to_string();
    let (dir, data, tenants) = kafka_fixture();
    let tenants_arg = tenants.to_str().unwrap();
    let remove = |bootstrap: &str, env: &[(String, String)]| {
        run(
            &[
                "remove-loader",
                "--brokers",
                bootstrap,
                "--tenants",
                tenants_arg,
                "--instance-id",
                "loader-9",
            ],
            env,
        )
    };

    // The broker's certificate is signed by another CA than the one trusted.
    let other = TestPki::new("Another CA");
    let wrong_ca = with(&env, "SIGHTLINE_KAFKA_CA_FILE", other.ca_file.to_str().unwrap());
    let out = remove(&bootstrap, &wrong_ca);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "TLS with {bootstrap} failed: the broker's certificate was not accepted"
        )) && stderr.contains("check SIGHTLINE_KAFKA_CA_FILE"),
        "{stderr}"
    );
    let out = run(
        &["provision", "--brokers", &bootstrap, "--tenants", tenants_arg],
        &wrong_ca,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "the broker refused the connection: TLS with {bootstrap} failed: the broker's certificate was not accepted"
        )) && stderr.contains("check SIGHTLINE_KAFKA_CA_FILE"),
        "provision names the refused certificate: {stderr}"
    );
    let log = dir.path().join("wrong-ca.log");
    let collector = Server::start_with_env(
        "collector",
        &data,
        &tenants,
        &["--brokers", &bootstrap],
        &wrong_ca,
        Some((&log, "warn")),
    );
    eventually(
        Duration::from_secs(30),
        "the collector logs the refused certificate",
        || async { log_text(&log).contains("certificate verify failed") },
    )
    .await;
    assert_eq!(
        readyz(&collector).await,
        Some(503),
        "not ready while the broker is not trusted"
    );
    assert_eq!(post_events(&collector, "10.2.0.1", 1).await, 503);
    drop(collector);

    // No client certificate: the proxy (the broker's side) refuses the handshake.
    let no_certificate = without(&env, &["SIGHTLINE_KAFKA_CERT_FILE", "SIGHTLINE_KAFKA_KEY_FILE"]);
    let out = remove(&bootstrap, &no_certificate);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // TLS 1.3: the client's handshake completes, the broker's side then sends its alert.
    assert!(stderr.contains("alert certificate required"), "{stderr}");
    assert!(
        proxy.refused().iter().any(|why| why.contains("certificate")),
        "the proxy refused a client without a certificate: {:?}",
        proxy.refused()
    );

    // SCRAM with a broker that checks it (Tansu with --authentication, plaintext): a user it
    // does not know is refused, by both SCRAM mechanisms, naming the settings.
    let sasl_broker = Broker::start_tansu(TansuOptions {
        advertised: None,
        authentication: true,
    });
    for mechanism in ["SCRAM-SHA-512", "SCRAM-SHA-256"] {
        let scram: Vec<(String, String)> = [
            ("SIGHTLINE_KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
            ("SIGHTLINE_KAFKA_SASL_MECHANISM", mechanism),
            ("SIGHTLINE_KAFKA_SASL_USERNAME", "sightline"),
            ("SIGHTLINE_KAFKA_SASL_PASSWORD", "not-the-password"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let out = remove(&sasl_broker.bootstrap, &scram);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(&format!("SASL authentication with {} failed: ", sasl_broker.bootstrap))
                && stderr.contains("check SIGHTLINE_KAFKA_SASL_USERNAME and SIGHTLINE_KAFKA_SASL_PASSWORD"),
            "{mechanism}: {stderr}"
        );
        if mechanism == "SCRAM-SHA-512" {
            let log = dir.path().join("refused-scram.log");
            let collector = Server::start_with_env(
                "collector",
                &data,
                &tenants,
                &["--brokers", &sasl_broker.bootstrap],
                &scram,
                Some((&log, "warn")),
            );
            eventually(
                Duration::from_secs(30),
                "the collector logs the refused authentication",
                || async { log_text(&log).contains("SASL authentication error") },
            )
            .await;
            assert_eq!(
                readyz(&collector).await,
                Some(503),
                "not ready while authentication fails"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_kafka_settings_stop_every_role_at_start_naming_the_variable() {
    let pki = TestPki::new("Sightline test CA");
    let (_dir, _data, tenants) = kafka_fixture();
    let tenants_arg = tenants.to_str().unwrap();
    let key_of_another = TestPki::new("Another CA");
    let not_pem = pki.path("not.pem");
    std::fs::write(&not_pem, "not a certificate").unwrap();
    let ssl = |extra: &[(&str, &str)]| {
        let mut env = vec![("SIGHTLINE_KAFKA_SECURITY_PROTOCOL".to_string(), "ssl".to_string())];
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        env
    };
    let cert = pki.client_cert_file.to_str().unwrap();
    let cases: Vec<(Vec<(String, String)>, &str)> = vec![
        (
            vec![("SIGHTLINE_KAFKA_SECURITY_PROTOCOL".into(), "tls".into())],
            "SIGHTLINE_KAFKA_SECURITY_PROTOCOL: \"tls\" is not a security protocol",
        ),
        (
            vec![
                ("SIGHTLINE_KAFKA_SECURITY_PROTOCOL".into(), "sasl_ssl".into()),
                ("SIGHTLINE_KAFKA_SASL_USERNAME".into(), "u".into()),
                ("SIGHTLINE_KAFKA_SASL_PASSWORD".into(), "p".into()),
            ],
            "SIGHTLINE_KAFKA_SASL_MECHANISM: required with SIGHTLINE_KAFKA_SECURITY_PROTOCOL=sasl_ssl",
        ),
        (
            ssl(&[("SIGHTLINE_KAFKA_CA_FILE", "/nonexistent/ca.pem")]),
            "SIGHTLINE_KAFKA_CA_FILE: /nonexistent/ca.pem: No such file",
        ),
        (
            ssl(&[("SIGHTLINE_KAFKA_CA_FILE", not_pem.to_str().unwrap())]),
            "SIGHTLINE_KAFKA_CA_FILE",
        ),
        (
            ssl(&[("SIGHTLINE_KAFKA_CERT_FILE", cert)]),
            "SIGHTLINE_KAFKA_KEY_FILE: required with SIGHTLINE_KAFKA_CERT_FILE",
        ),
        (
            ssl(&[
                ("SIGHTLINE_KAFKA_CERT_FILE", cert),
                (
                    "SIGHTLINE_KAFKA_KEY_FILE",
                    key_of_another.client_key_file.to_str().unwrap(),
                ),
            ]),
            "SIGHTLINE_KAFKA_KEY_FILE",
        ),
        (
            vec![("SIGHTLINE_KAFKA_CA_FILE".into(), pki.ca_file.to_str().unwrap().into())],
            "SIGHTLINE_KAFKA_CA_FILE: set, but SIGHTLINE_KAFKA_SECURITY_PROTOCOL=plaintext is not TLS",
        ),
    ];
    let roles: [&[&str]; 5] = [
        &[
            "collector",
            "--brokers",
            "127.0.0.1:1",
            "--tenants",
            tenants_arg,
            "--listen",
            "127.0.0.1:0",
            "--ops-listen",
            "127.0.0.1:0",
        ],
        &[
            "loader",
            "--brokers",
            "127.0.0.1:1",
            "--tenants",
            tenants_arg,
            "--clickhouse-url",
            "http://127.0.0.1:1",
            "--ops-listen",
            "127.0.0.1:0",
        ],
        &["provision", "--brokers", "127.0.0.1:1", "--tenants", tenants_arg],
        &[
            "remove-loader",
            "--brokers",
            "127.0.0.1:1",
            "--tenants",
            tenants_arg,
            "--instance-id",
            "loader-1",
        ],
        &["operator", "render", "-f", "manifests/examples/tenant.yaml"],
    ];
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for (env, expected) in &cases {
        for role in roles {
            let out = Command::new(binary())
                .current_dir(&repo)
                .args(role)
                .envs(env.iter().map(|(k, v)| (k, v)))
                .env("SIGHTLINE_SECRET", TEST_SECRET)
                .env("RUST_LOG", "warn")
                .output()
                .expect("run sightline");
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{role:?} with {env:?} started");
            assert!(stderr.contains(expected), "{role:?} with {env:?}: {stderr}");
        }
    }
}
