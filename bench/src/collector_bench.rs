//! Collector throughput: `sightline standalone` (validate, process, group-commit into the
//! embedded engine, answer after commit) beside a bare axum endpoint that parses the same
//! JSON and discards it, in one run, with the same load generator, for batches of 1 and 100.
//! Also reports each server's peak resident memory (VmHWM).
//!
//!     cargo build --release --bin sightline --bin collector-bench
//!     ./target/release/collector-bench --seconds 10 --connections 32

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::routing::post;
use axum::Router;
use clap::{Parser, Subcommand};
use serde_json::Value;
use sightline_core::secret::MasterSecret;
use sightline_core::token::{self, Claims, Scope};

use sightline_bench::{post_batches, status_mb};

const SECRET: &str = "sightline-bench-secret-0123456789";
const TENANT: &str = "apiVersion: sightline.dev/v1alpha1
kind: AnalyticsTenant
metadata: { name: bench }
spec:
  sites: { allowed: [{ id: bench.example.com }] }
  limits: { eventsPerSecondPerSite: 100000000, burstPerSite: 100000000 }
";

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Seconds of load per (server, batch size).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// More flags for `sightline standalone` (e.g. "--batch-max-events 50000").
    #[arg(long, default_value = "")]
    server_args: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// The baseline: an axum endpoint that parses the JSON body and discards it.
    Bare,
}

fn main() {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match args.command {
        Some(Cmd::Bare) => rt.block_on(bare()),
        None => rt.block_on(compare(args.seconds, args.connections, &args.server_args)),
    }
}

async fn bare() {
    async fn discard(body: axum::body::Bytes) -> (axum::http::StatusCode, String) {
        match serde_json::from_slice::<Value>(&body) {
            Ok(v) => {
                let n = v.get("events").and_then(Value::as_array).map_or(1, Vec::len);
                (
                    axum::http::StatusCode::ACCEPTED,
                    format!("{{\"accepted\":{n},\"rejected\":[]}}"),
                )
            }
            Err(e) => (axum::http::StatusCode::BAD_REQUEST, e.to_string()),
        }
    }
    let app = Router::new().route("/v1/collect", post(discard));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    println!("listening on http://{}", listener.local_addr().expect("addr"));
    axum::serve(listener, app).await.expect("serve");
}

fn sibling(name: &str) -> PathBuf {
    std::env::current_exe().expect("exe").with_file_name(name)
}

/// Spawns a server and waits for the line that carries its address.
fn spawn(mut cmd: Command, marker: &str) -> (Child, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn server");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let marker = marker.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(i) = line.find(&marker) {
                let _ = tx.send(line[i + marker.len()..].trim().to_string());
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(120)).expect("server address");
    (child, addr)
}

async fn compare(seconds: u64, connections: usize, server_args: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tenant.yaml"), TENANT).expect("tenant");
    let mut cmd = Command::new(sibling("sightline"));
    cmd.args([
        "standalone",
        "--listen",
        "127.0.0.1:0",
        "--trusted-proxy",
        "127.0.0.1/32",
    ])
    .arg("--tenants")
    .arg(dir.path().join("tenant.yaml"))
    .arg("--data")
    .arg(dir.path().join("data"))
    .args(server_args.split_whitespace())
    .env("SIGHTLINE_SECRET", SECRET)
    .env(
        "RUST_LOG",
        std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "error".into()),
    );
    let (mut sightline, s_addr) = spawn(cmd, "listening on http://");
    let mut cmd = Command::new(std::env::current_exe().expect("exe"));
    cmd.arg("bare");
    let (mut baseline, b_addr) = spawn(cmd, "listening on http://");

    let secret = MasterSecret::from_bytes(SECRET.as_bytes().to_vec()).expect("secret");
    let claims = Claims {
        tenant: "bench".into(),
        site: "bench.example.com".into(),
        scope: Scope::Write,
        expires: chrono::Utc::now().timestamp() + 3600,
    };
    let token = token::issue(&secret.tenant_key("bench"), &claims);

    println!("| batch | bare axum events/s | sightline events/s | ratio |");
    println!("| ---: | ---: | ---: | ---: |");
    let mut anon_peak: f64 = 0.0;
    for batch in [1usize, 100] {
        let (_, bare) = post_batches(
            &format!("http://{b_addr}/v1/collect"),
            &token,
            "bench.example.com",
            batch,
            seconds,
            connections,
        )
        .await;
        let (_, ours) = post_batches(
            &format!("http://{s_addr}/v1/collect"),
            &token,
            "bench.example.com",
            batch,
            seconds,
            connections,
        )
        .await;
        anon_peak = anon_peak.max(status_mb(Some(sightline.id()), "RssAnon:"));
        println!("| {batch} | {bare:.0} | {ours:.0} | {:.2} |", ours / bare);
    }
    println!();
    println!(
        "sightline: peak resident {:.0} MB (VmHWM), anonymous {:.0} MB (RssAnon after each run, max); bare axum: peak resident {:.0} MB",
        status_mb(Some(sightline.id()), "VmHWM:"),
        anon_peak,
        status_mb(Some(baseline.id()), "VmHWM:")
    );
    let _ = sightline.kill();
    let _ = baseline.kill();
    let _ = sightline.wait();
    let _ = baseline.wait();
}
