//! `sightline reprocess`: replays a tenant's days (docs/replay.md) offline against a data
//! directory (the embedded engine: the server must be stopped), against a ClickHouse URL,
//! or through a running standalone server's admin endpoint (`--server`, admin token). A
//! progress bar on a terminal (plain lines otherwise), a summary table at the end, a
//! checkpoint file to resume from, and a non-zero exit with the reason on any error.
//! `--resource NS/NAME` is a Reprocess Job's pod (`sightline_operator::reprocess::runner`):
//! the same engine, with the resource's status as progress and checkpoint.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Args as ClapArgs;
use comfy_table::Table;
use indicatif::{ProgressBar, ProgressStyle};
use sightline_core::processor::Current;
use sightline_core::reprocess::{parse_reprocess, ReprocessSpec};
use sightline_core::spec::load_tenants;
use sightline_core::warehouse::replay::{
    self, CancellationToken, Checkpoint, DayReport, Progress, ReplayHooks, ReplayReport,
};

use sightline_operator::reprocess::runner::{self, Runner};

use crate::admin::{Line, ReprocessCall, REPROCESS_PATH};
use crate::common::{block_on, WarehouseArgs};

#[derive(ClapArgs)]
pub struct Args {
    /// In a Reprocess Job's pod: the Reprocess NAMESPACE/NAME, read through the Kubernetes
    /// API (in-cluster config); the replay runs from its status's checkpoint and writes its
    /// status after every day. Exits 0 once the status has an outcome, 1 when the Job's
    /// next pod is to resume.
    #[arg(long, value_name = "NAMESPACE/NAME", conflicts_with_all = [
        "file", "tenant", "from", "to", "sites", "dry_run", "parallelism", "force", "checkpoint", "server"
    ])]
    resource: Option<String>,
    /// A Reprocess resource (or its bare spec) in YAML, instead of --tenant/--from/--to.
    #[arg(short = 'f', long = "file", conflicts_with_all = ["tenant", "from", "to"])]
    file: Option<PathBuf>,
    /// The tenant whose days are replayed.
    #[arg(long)]
    tenant: Option<String>,
    /// Start: a UTC date (2026-11-01) or an RFC 3339 time; widened to its day's midnight.
    #[arg(long)]
    from: Option<String>,
    /// End, exclusive, in the same forms; widened to the end of its day.
    #[arg(long)]
    to: Option<String>,
    /// Only these sites (comma-separated); the others' rows stay as they are.
    #[arg(long, value_delimiter = ',')]
    sites: Vec<String>,
    /// Compare each day now with what the replay would make it; swap nothing.
    #[arg(long)]
    dry_run: bool,
    /// Days replayed at once (1 to 16; default 1, or the file's).
    #[arg(long)]
    parallelism: Option<usize>,
    /// Replay days that are not sealed yet (they may still receive events).
    #[arg(long)]
    force: bool,
    /// Where the run keeps its checkpoint: resumed from if it exists, updated after each
    /// day, removed once the run finished.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// A running standalone server (http://host:port): the replay runs there, through its
    /// admin endpoint.
    #[arg(long, conflicts_with = "clickhouse_url")]
    server: Option<String>,
    /// An admin token for the tenant (`sightline token issue --scope admin`), with --server.
    #[arg(long, env = "SIGHTLINE_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// AnalyticsTenant YAML file or directory (offline and --clickhouse-url).
    #[arg(long, default_value = "manifests/examples")]
    tenants: PathBuf,
    /// The data directory of the embedded engine (offline).
    #[arg(long, default_value = "./data")]
    data: PathBuf,
    #[command(flatten)]
    warehouse: WarehouseArgs,
}

pub fn run(args: Args) -> Result<(), String> {
    match args.resource.clone() {
        Some(resource) => block_on(in_cluster(args, resource)),
        None => block_on(reprocess(args)),
    }
}

/// How often a pod looks again at a day an earlier pod of its run left leased.
const LEASE_POLL: std::time::Duration = std::time::Duration::from_secs(15);

/// `--resource NS/NAME`: the Job pod's side of a Reprocess (`sightline_operator::reprocess::runner`).
async fn in_cluster(args: Args, resource: String) -> Result<(), String> {
    let (namespace, name) = resource
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty() && !name.contains('/'))
        .ok_or_else(|| format!("--resource {resource:?}: expected NAMESPACE/NAME"))?;
    let tenants = load_tenants(&args.tenants).map_err(|e| e.to_string())?;
    let (_stop, mut stopped) = crate::common::stop_on_signal();
    // With --migrations check (the Job passes it) this waits until the operator migrated
    // the tenant's schema, and waits out a ClickHouse outage.
    let Some(warehouse) = args
        .warehouse
        .open_for_reading(&args.data, &tenants, &mut stopped)
        .await?
    else {
        return Err("stopped before the warehouse was ready; the Job's next pod resumes".into());
    };
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("Kubernetes API (in-cluster config): {e}"))?;
    let interrupt = CancellationToken::new();
    let on_signal = interrupt.clone();
    tokio::spawn(async move {
        let _ = stopped.wait_for(|s| *s).await;
        tracing::info!("stopping after the days under way; the Job's next pod resumes");
        on_signal.cancel();
    });
    let runner = Runner {
        api: kube::Api::namespaced(client, namespace),
        name: name.to_string(),
        tenants,
        processor: Arc::new(Current),
        now: Arc::new(chrono::Utc::now),
        interrupt,
        lease_poll: LEASE_POLL,
        lease_wait: (replay::lease::TTL + chrono::Duration::minutes(1))
            .to_std()
            .unwrap_or(LEASE_POLL),
        retry_pause: std::time::Duration::from_secs(2),
        heartbeat: sightline_operator::reprocess::status::HEARTBEAT_INTERVAL,
    };
    let outcome = runner
        .run(warehouse.as_ref())
        .await
        .map_err(|e| format!("Reprocess {resource}: {}", e.chain()))?;
    tracing::info!(?outcome, "Reprocess {resource} done here");
    match outcome {
        runner::Outcome::Interrupted(why) => Err(format!("Reprocess {resource}: {why}")),
        _ => Ok(()),
    }
}

/// The spec from the file or the flags, with the flags given on top.
fn spec(args: &Args) -> Result<ReprocessSpec, String> {
    let mut spec = match &args.file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("-f {}: {e}", path.display()))?;
            parse_reprocess(&text, &path.display().to_string()).map_err(|e| e.to_string())?
        }
        None => {
            let need = |v: &Option<String>, flag: &str| {
                v.clone()
                    .ok_or_else(|| format!("{flag} is required (or give -f reprocess.yaml)"))
            };
            ReprocessSpec {
                tenant_ref: need(&args.tenant, "--tenant")?,
                from: need(&args.from, "--from")?,
                to: need(&args.to, "--to")?,
                sites: Vec::new(),
                dry_run: false,
                parallelism: 1,
                force: false,
            }
        }
    };
    if !args.sites.is_empty() {
        spec.sites = args.sites.clone();
    }
    spec.dry_run |= args.dry_run;
    spec.force |= args.force;
    if let Some(p) = args.parallelism {
        spec.parallelism = p;
    }
    Ok(spec)
}

fn load_checkpoint(path: Option<&Path>) -> Result<Option<Checkpoint>, String> {
    let Some(path) = path.filter(|p| p.exists()) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("--checkpoint {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| format!("--checkpoint {}: not a checkpoint: {e}", path.display()))
}

fn save_checkpoint(path: &Path, checkpoint: &Checkpoint) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(checkpoint).map_err(std::io::Error::other)?;
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

/// Progress on stderr (a bar on a terminal, a line per day otherwise) and the checkpoint
/// file.
struct CliHooks {
    bar: ProgressBar,
    plain: bool,
    started: Instant,
    days_reported: AtomicUsize,
    checkpoint: Option<PathBuf>,
}

impl CliHooks {
    fn new(checkpoint: Option<PathBuf>) -> Self {
        let plain = !std::io::stderr().is_terminal();
        let bar = if plain {
            ProgressBar::hidden()
        } else {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} days  {msg}  ETA {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        };
        CliHooks {
            bar,
            plain,
            started: Instant::now(),
            days_reported: AtomicUsize::new(0),
            checkpoint,
        }
    }
}

#[async_trait::async_trait]
impl ReplayHooks for CliHooks {
    fn progress(&self, p: &Progress) {
        let rate = p.rows_read as f64 / self.started.elapsed().as_secs_f64().max(0.001);
        if self.plain {
            if self.days_reported.fetch_max(p.days_done, Ordering::Relaxed) < p.days_done {
                eprintln!(
                    "{}/{} days done, {} rows read ({rate:.0}/s), {} rows written",
                    p.days_done, p.days_total, p.rows_read, p.rows_written
                );
            }
        } else {
            self.bar.set_length(p.days_total as u64);
            self.bar.set_position(p.days_done as u64);
            self.bar.set_message(format!("{} rows read ({rate:.0}/s)", p.rows_read));
        }
    }

    async fn day_done(&self, _day: &DayReport, checkpoint: &Checkpoint) -> sightline_core::Result<()> {
        self.save(checkpoint)
    }
}

impl CliHooks {
    /// Keeps the checkpoint in the `--checkpoint` file, if one was given.
    fn save(&self, checkpoint: &Checkpoint) -> sightline_core::Result<()> {
        if let Some(path) = &self.checkpoint {
            save_checkpoint(path, checkpoint)?;
        }
        Ok(())
    }
}

async fn reprocess(args: Args) -> Result<(), String> {
    let spec = spec(&args)?;
    let resume = load_checkpoint(args.checkpoint.as_deref())?;
    let hooks = CliHooks::new(args.checkpoint.clone());
    let outcome = match &args.server {
        Some(server) => through_server(&args, server, spec, resume, &hooks).await?,
        None => here(&args, spec, resume, &hooks).await?,
    };
    hooks.bar.finish_and_clear();
    match outcome {
        Ok(report) => {
            print_summary(&report);
            if let Some(path) = &args.checkpoint {
                let _ = std::fs::remove_file(path);
            }
            Ok(())
        }
        Err((message, report)) => {
            if let Some(report) = report {
                print_summary(&report);
            }
            let resume = match &args.checkpoint {
                Some(path) => format!("; run the same command to resume from {}", path.display()),
                None => String::new(),
            };
            Err(format!("{message}{resume}"))
        }
    }
}

type Outcome = Result<ReplayReport, (String, Option<ReplayReport>)>;

/// Offline (the embedded engine under --data) or against --clickhouse-url.
async fn here(
    args: &Args,
    spec: ReprocessSpec,
    resume: Option<Checkpoint>,
    hooks: &CliHooks,
) -> Result<Outcome, String> {
    let tenants = load_tenants(&args.tenants).map_err(|e| e.to_string())?;
    let Some(tenant) = tenants.iter().find(|t| t.name == spec.tenant_ref) else {
        let names: Vec<&str> = tenants.iter().map(|t| t.name.as_str()).collect();
        return Err(format!(
            "unknown tenant {:?}: {} has {}",
            spec.tenant_ref,
            args.tenants.display(),
            names.join(", ")
        ));
    };
    let request = spec.request(tenant, Arc::new(Current)).map_err(|e| e.to_string())?;
    replay::prepare(&request).map_err(|e| e.to_string())?;
    let warehouse = args.warehouse.open(&args.data).await?;
    sightline_core::warehouse::ops::apply_schema(warehouse.as_ref(), tenant)
        .await
        .map_err(|e| format!("tenant {}: {e}", tenant.name))?;
    if warehouse.backend() == "embedded" {
        // This process holds the data directory alone: leases and staging tables in it are
        // a stopped run's (killed mid-day), and would refuse the resumed run for minutes.
        replay::clear_left_behind(warehouse.as_ref(), &tenant.database())
            .await
            .map_err(|e| format!("tenant {}: {e}", tenant.name))?;
    }
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        crate::common::shutdown_signal().await;
        eprintln!("stopping after the days under way (their work is kept; resume with the checkpoint)");
        on_signal.cancel();
    });
    Ok(
        match replay::run(warehouse.as_ref(), request, resume, hooks, &cancel).await {
            Ok(report) => Ok(report),
            Err(sightline_core::Error::ReplayStopped { day, cause, report }) => {
                Err((format!("replay stopped at day {day}: {cause}"), Some(*report)))
            }
            Err(e) => Err((e.to_string(), None)),
        },
    )
}

/// Through a running standalone server's admin endpoint: its answer's lines drive the same
/// progress and checkpoint.
async fn through_server(
    args: &Args,
    server: &str,
    spec: ReprocessSpec,
    resume: Option<Checkpoint>,
    hooks: &CliHooks,
) -> Result<Outcome, String> {
    let token = args
        .token
        .as_deref()
        .ok_or("--server needs --token (or SIGHTLINE_ADMIN_TOKEN): an admin token for the tenant")?;
    let url = format!("{}{REPROCESS_PATH}", server.trim_end_matches('/'));
    let mut response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token)
        .json(&ReprocessCall { spec, resume })
        .send()
        .await
        .map_err(|e| format!("--server {server}: {e}"))?;
    if !response.status().is_success() {
        let status = response.status();
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let message = body["error"]["message"].as_str().unwrap_or("no error message");
        return Err(format!("{server} refused the replay ({status}): {message}"));
    }
    let mut buffer: Vec<u8> = Vec::new();
    loop {
        let chunk = response
            .chunk()
            .await
            .map_err(|e| format!("--server {server}: the answer broke off: {e}"))?;
        let Some(chunk) = chunk else {
            return Err(format!("--server {server}: the answer ended before the report"));
        };
        buffer.extend_from_slice(&chunk);
        while let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buffer.drain(..=end).collect();
            let line: Line = serde_json::from_slice(&line)
                .map_err(|e| format!("--server {server}: an answer line is not understood: {e}"))?;
            match line {
                Line::Progress(p) => hooks.progress(&p),
                Line::Checkpoint(c) => hooks.save(&c).map_err(|e| e.to_string())?,
                Line::Report(report) => return Ok(Ok(report)),
                Line::Failed { error, report } => return Ok(Err((error.message, report))),
            }
        }
    }
}

fn print_summary(report: &ReplayReport) {
    let widened = if report.range.widened {
        format!(" (widened from [{}, {}))", report.requested_from, report.requested_to)
    } else {
        String::new()
    };
    println!(
        "{} tenant {}, UTC days {} to {}{widened}, {}, sites: {}, run {}",
        if report.dry_run { "Dry run:" } else { "Replayed:" },
        report.tenant,
        report.range.first,
        report.range.last,
        report.processing,
        if report.sites.is_empty() {
            "all".to_string()
        } else {
            report.sites.join(", ")
        },
        report.run_id
    );
    if !report.skipped.is_empty() {
        println!("{} days were done by an earlier run (checkpoint)", report.skipped.len());
    }
    let mut table = Table::new();
    table.set_header([
        "day",
        "raw rows",
        "other sites' rows",
        "caught up",
        "processing before",
        "after",
        "swapped",
        "seconds",
    ]);
    for d in &report.days {
        let before: Vec<String> = d.processing_before.iter().map(|(p, n)| format!("{p}: {n}")).collect();
        table.add_row([
            d.day.to_string(),
            d.raw_rows.to_string(),
            d.copied_rows.to_string(),
            d.caught_up.to_string(),
            before.join(", "),
            d.processing_after.clone(),
            if d.swapped { "yes" } else { "no" }.to_string(),
            format!("{:.1}", d.seconds),
        ]);
    }
    println!("{table}");
    if !report.dry_run {
        return;
    }
    let mut metrics = Table::new();
    metrics.set_header(["day", "metric", "current", "recomputed", "change"]);
    let mut values = Table::new();
    values.set_header(["day", "changed", "value", "current", "recomputed"]);
    for d in &report.days {
        let Some(c) = &d.comparison else { continue };
        for m in &c.metrics {
            metrics.add_row([
                d.day.to_string(),
                m.metric.clone(),
                format!("{}", m.current),
                format!("{}", m.recomputed),
                format!("{:+}", m.recomputed - m.current),
            ]);
        }
        for (kind, list) in [("source (visits)", &c.sources), ("page (pageviews)", &c.pages)] {
            for v in list {
                values.add_row([
                    d.day.to_string(),
                    kind.to_string(),
                    v.value.clone(),
                    v.current.to_string(),
                    v.recomputed.to_string(),
                ]);
            }
        }
    }
    println!("{metrics}");
    println!("{values}");
}
