//! The edges: dates past the warehouse's domain, CSV cells that spreadsheets would run,
//! private data directories and secret files, one secret encoding with enough entropy,
//! bounded token lifetimes, case-insensitive auth schemes, and one answer for every forged
//! token.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::{json, Value};
use sightline_core::token::{Claims, Scope};
use sightline_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn far_dates_are_refused_and_the_server_lives_on() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(&data, &tenants, &[]);
    let c = client();
    let read = read_token("acme", "blog.example.com");
    for range in [
        json!(["+262142-12-31", "+262142-12-31"]),
        json!(["-262143-01-01", "2026-01-01"]),
        json!(["2299-12-31", "+10000-01-01"]),
    ] {
        let q = json!({"site_id": "blog.example.com", "metrics": ["visitors"], "date_range": range,
            "compare": "year_over_year"});
        let r = c
            .post(server.url("/v1/query"))
            .bearer_auth(&read)
            .json(&q)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{range}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["parameter"], "date_range", "{v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("1970-01-01"), "{v}");
    }
    // The first day of the domain compared with a year earlier: refused, naming compare.
    let q = json!({"site_id": "blog.example.com", "metrics": ["visitors"],
        "date_range": ["1970-01-01", "1970-01-02"], "compare": "year_over_year"});
    let r = c
        .post(server.url("/v1/query"))
        .bearer_auth(&read)
        .json(&q)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["parameter"], "compare", "{v}");
    let r = c
        .get(server.url("/v1/sites/blog.example.com/aggregate?from=%2B262142-12-31&to=%2B262142-12-31"))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // Still serving.
    let r = c
        .get(server.url("/v1/sites/blog.example.com/aggregate?period=today"))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_cells_never_come_back_as_formulas() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(&data, &tenants, &[]);
    let c = client();
    let formulas = ["=HYPERLINK(\"http://evil.example\",\"x\")", "+1+1", "-2+3", "@SUM(A1)"];
    let events: Vec<Value> = formulas
        .iter()
        .map(|f| json!({"url": "https://blog.example.com/", "props": {"plan": f}}))
        .collect();
    let r = c
        .post(server.url("/v1/collect"))
        .bearer_auth(write_token("acme", "blog.example.com"))
        .header("User-Agent", CHROME_MAC)
        .json(&json!({"events": events}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let csv = c
        .get(server.url("/v1/sites/blog.example.com/breakdown?period=today&property=props:plan&metrics=events"))
        .bearer_auth(read_token("acme", "blog.example.com"))
        .header("Accept", "text/csv")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut reader = csv::ReaderBuilder::new().from_reader(csv.as_bytes());
    let cells: Vec<String> = reader.records().map(|r| r.unwrap()[0].to_string()).collect();
    assert_eq!(cells.len(), 4, "{csv}");
    for f in formulas {
        assert!(cells.contains(&format!("'{f}")), "{f} in {csv}");
    }
    // The JSON answer keeps the values as they are.
    let v: Value = c
        .get(server.url("/v1/sites/blog.example.com/breakdown?period=today&property=props:plan&metrics=events"))
        .bearer_auth(read_token("acme", "blog.example.com"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["props:plan"] == "+1+1"),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_schemes_are_case_insensitive_and_forgeries_get_one_answer() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(&data, &tenants, &[]);
    let c = client();
    let write = write_token("acme", "blog.example.com");
    let read = read_token("acme", "blog.example.com");
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let r = c
            .post(server.url("/v1/collect"))
            .header("Authorization", format!("{scheme} {write}"))
            .header("User-Agent", CHROME_MAC)
            .json(&json!({"url": "https://blog.example.com/"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{scheme}");
        let r = c
            .get(server.url("/v1/sites/blog.example.com/aggregate?period=today"))
            .header("Authorization", format!("{scheme} {read}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme}");
    }

    // A forged token for a tenant that exists, and one for a tenant that does not: the same
    // answer, on both APIs (the second said "unknown tenant" before).
    let forge = |tenant: &str, scope: Scope| {
        sightline_core::token::issue(
            b"not-any-tenant-key",
            &Claims {
                tenant: tenant.into(),
                site: "blog.example.com".into(),
                scope,
                expires: chrono::Utc::now().timestamp() + 600,
            },
        )
    };
    let mut answers = Vec::new();
    for tenant in ["acme", "no-such-tenant"] {
        let r = c
            .post(server.url("/v1/collect"))
            .bearer_auth(forge(tenant, Scope::Write))
            .header("User-Agent", CHROME_MAC)
            .json(&json!({"url": "https://blog.example.com/"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let collect: Value = r.json().await.unwrap();
        let r = c
            .get(server.url("/v1/sites/blog.example.com/aggregate?period=today"))
            .bearer_auth(forge(tenant, Scope::Read))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let query: Value = r.json().await.unwrap();
        answers.push((collect, query));
    }
    assert_eq!(answers[0], answers[1], "a forger learns which tenants exist");
    assert!(!answers[1].0.to_string().contains("unknown"), "{:?}", answers[1]);
}

/// `sightline token issue` for acme's blog with `args`, with `secret` as SIGHTLINE_SECRET (or
/// none): (success, stderr).
fn issue(data: &std::path::Path, secret: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(binary());
    cmd.args([
        "token",
        "issue",
        "--tenant",
        "acme",
        "--site",
        "blog.example.com",
        "--scope",
        "read",
        "--data",
    ])
    .arg(data)
    .args(args)
    .env_remove("SIGHTLINE_SECRET");
    if let Some(secret) = secret {
        cmd.env("SIGHTLINE_SECRET", secret);
    }
    let out = cmd.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).to_string())
}

#[test]
fn secrets_have_one_encoding_enough_entropy_and_private_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("fresh").join("data");

    // Raw text (the old encoding of SIGHTLINE_SECRET) and weak secrets are refused, saying
    // how to make a good one.
    for weak in [
        "sightline-test-secret-0123456789".to_string(),
        base64(&[b'a'; 16]),
        base64(&[b'a'; 32]),
    ] {
        let (ok, stderr) = issue(&data, Some(&weak), &[]);
        assert!(!ok, "{weak} accepted");
        assert!(
            stderr.contains("SIGHTLINE_SECRET") && stderr.contains("head -c 32 /dev/urandom | base64"),
            "{stderr}"
        );
    }
    assert!(issue(&data, Some(TEST_SECRET), &[]).0);

    // Without the variable: the data directory and the secret are created private.
    let (ok, stderr) = issue(&data, None, &[]);
    assert!(ok, "{stderr}");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&dir.path().join("fresh")), 0o700);
    assert_eq!(mode(&data.join("secret.key")), 0o600);
    // A secret file others may read is refused, not used.
    std::fs::set_permissions(data.join("secret.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, stderr) = issue(&data, None, &[]);
    assert!(!ok);
    assert!(
        stderr.contains("secret.key") && stderr.contains("chmod 600"),
        "{stderr}"
    );

    // Token lifetimes are bounded.
    let (ok, stderr) = issue(&data, Some(TEST_SECRET), &["--ttl", "400000000years"]);
    assert!(!ok);
    assert!(
        stderr.contains("--ttl") && stderr.contains("at most 10 years"),
        "{stderr}"
    );
    let (ok, stderr) = issue(&data, Some(TEST_SECRET), &["--ttl", "10y"]);
    assert!(ok, "{stderr}");
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
