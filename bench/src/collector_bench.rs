//! Standalone ingest at saturation: `sightline standalone` (HTTP, validate, process,
//! group-commit into the embedded engine, answer after commit) driven with batches of 100
//! from enough connections to saturate it, beside, in the same run, the engine's own bulk
//! insert of the same number of events (a) into the same schema (events_raw, then events
//! and its views into the rollup tiers) and (b) into events_raw alone, feeding nothing (the
//! least any design that keeps raw events pays). Reports the ratios, and the server's
//! anonymous resident memory (RssAnon: what it allocated, without libchdb's ~180 MB of
//! file-backed code), sampled through the run.
//!
//!     cargo build --release --bin sightline --bin collector-bench
//!     ./target/release/collector-bench --seconds 20 --connections 256

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Parser;
use sightline_core::secret::MasterSecret;
use sightline_core::spec::parse_tenants;
use sightline_core::token::{self, Claims, Scope};
use sightline_core::warehouse::embedded::Embedded;

use sightline_bench::{engine_bulk_insert, post_batches, status_mb, Tables};

/// Base64 of 32 random bytes, the one encoding `SIGHTLINE_SECRET` takes.
const SECRET: &str = "3yMaOo1dtKEsyl9MZTrh+ONrto/IBg1QrjyliS17IZE=";
const TENANT: &str = "apiVersion: sightline.dev/v1alpha1
kind: AnalyticsTenant
metadata: { name: bench }
spec:
  sites: { allowed: [{ id: bench.example.com }] }
  limits: { eventsPerSecondPerSite: 100000000, burstPerSite: 100000000,
            bytesPerSecondPerSite: 4000000000, burstBytesPerSite: 4000000000 }
";

#[derive(Parser)]
struct Args {
    /// Seconds of load on the server.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Concurrent client connections (enough to keep the group commit's batches full).
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// Events per request.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// More flags for `sightline standalone` (e.g. "--batch-max-events 50000").
    #[arg(long, default_value = "")]
    server_args: String,
}

fn main() {
    // The baselines' engine runs as the server's does (the server sets the same for itself).
    sightline_core::warehouse::embedded::configure_engine_allocator();
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(compare(args));
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

async fn compare(args: Args) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("tenant.yaml"), TENANT).expect("tenant");
    let mut cmd = Command::new(sibling("sightline"));
    cmd.args([
        "standalone",
        "--listen",
        "127.0.0.1:0",
        "--ops-listen",
        "127.0.0.1:0",
        "--trusted-proxy",
        "127.0.0.1/32",
    ])
    .arg("--tenants")
    .arg(dir.path().join("tenant.yaml"))
    .arg("--data")
    .arg(dir.path().join("data"))
    .args(args.server_args.split_whitespace())
    .env("SIGHTLINE_SECRET", SECRET)
    .env(
        "RUST_LOG",
        std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "error".into()),
    );
    let (mut sightline, s_addr) = spawn(cmd, "listening on http://");
    // A fresh database moves onto the tiers in its first seconds (the hourly tables retire):
    // measure the steady state.
    tokio::time::sleep(Duration::from_secs(5)).await;

    let secret = MasterSecret::from_base64(SECRET, "SECRET").expect("secret");
    let claims = Claims {
        tenant: "bench".into(),
        site: "bench.example.com".into(),
        scope: Scope::Write,
        expires: chrono::Utc::now().timestamp() + 3600,
    };
    let token = token::issue(&secret.tenant_key("bench"), &claims);

    let pid = sightline.id();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let mut peak: f64 = 0.0;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(status_mb(Some(pid), "RssAnon:"));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            peak
        })
    };
    let (stored, ours) = post_batches(
        &format!("http://{s_addr}/v1/collect"),
        &token,
        "bench.example.com",
        args.batch,
        args.seconds,
        args.connections,
    )
    .await;
    sampling.store(false, Ordering::Relaxed);
    let anon_peak = sampler.await.expect("sampler");
    let hwm = status_mb(Some(pid), "VmHWM:");
    let _ = sightline.kill();
    let _ = sightline.wait();

    // The baselines: the same number of events, in the group commit's batch size.
    let engine = Embedded::open(&dir.path().join("baseline"), 1).expect("engine");
    let tenants = parse_tenants(BASELINE_TENANTS, "bench").expect("tenants");
    let batch = 5_000;
    let same_schema = engine_bulk_insert(
        &engine,
        &tenants[0],
        "bench.example.com",
        stored,
        batch,
        Tables::RawAndProcessed,
    )
    .await;
    let raw_only = engine_bulk_insert(
        &engine,
        &tenants[1],
        "bench.example.com",
        stored,
        batch,
        Tables::RawOnly,
    )
    .await;

    println!("| | events/s | sightline's ratio |");
    println!("| --- | ---: | ---: |");
    println!(
        "| sightline standalone, batches of {}, {} connections, {} s | {ours:.0} | |",
        args.batch, args.connections, args.seconds
    );
    println!(
        "| (a) engine bulk insert, same schema ({stored} events, batches of {batch}) | {same_schema:.0} | {:.2} |",
        ours / same_schema
    );
    println!(
        "| (b) engine bulk insert, events_raw alone | {raw_only:.0} | {:.2} |",
        ours / raw_only
    );
    println!();
    println!("sightline: anonymous resident {anon_peak:.0} MB at most (RssAnon, sampled every 200 ms), peak resident {hwm:.0} MB (VmHWM, with libchdb's code)");
}

const BASELINE_TENANTS: &str = "apiVersion: sightline.dev/v1alpha1
kind: AnalyticsTenant
metadata: { name: same }
spec:
  sites: { allowed: [{ id: bench.example.com }] }
---
apiVersion: sightline.dev/v1alpha1
kind: AnalyticsTenant
metadata: { name: rawonly }
spec:
  sites: { allowed: [{ id: bench.example.com }] }
";
