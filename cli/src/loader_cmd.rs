//! `sightline loader`: each tenant's event topic into the warehouse, one consumer per
//! tenant in its tenant's group. It has no public API: `/metrics`, `/healthz` and `/readyz`
//! on `--ops-listen`.

use std::time::Duration;

use std::path::PathBuf;

use clap::Args as ClapArgs;
use sightline_core::spec::load_tenants;
use sightline_ingest::kafka::membership::{remove_static_members, Removal};
use sightline_ingest::kafka::Security;
use sightline_ingest::loader::{group_id, member_instance, Loader, LoaderConfig};
use sightline_ingest::metrics::LoaderMetrics;

use crate::common::{
    block_on, processing_metrics, stop_on_signal, storage_maintenance, OpsArgs, ProcessingMetricsArgs, WarehouseArgs,
};

#[derive(ClapArgs)]
pub struct Args {
    /// AnalyticsTenant YAML file or directory.
    #[arg(long, default_value = "manifests/examples")]
    tenants: PathBuf,
    /// Where the embedded engine's files live (with --embedded-engine).
    #[arg(long, default_value = "./data")]
    data: PathBuf,
    /// Use the embedded engine under --data instead of a ClickHouse server. It belongs to one
    /// process: a query role cannot read it while this loader runs, and two loaders would
    /// write two warehouses. For a single loader feeding a test; `sightline standalone` is
    /// the one-process setup.
    #[arg(long)]
    embedded_engine: bool,
    /// How often the tenants files are checked for changes, in milliseconds (a change is
    /// applied without a restart).
    #[arg(long, default_value_t = 5000)]
    reload_interval_ms: u64,
    #[command(flatten)]
    ops: OpsArgs,
    #[command(flatten)]
    warehouse: WarehouseArgs,
    /// Kafka bootstrap servers.
    #[arg(long, env = "SIGHTLINE_KAFKA_BROKERS")]
    brokers: String,
    /// Load only these tenants (repeatable); all tenants of --tenants by default.
    #[arg(long = "tenant")]
    only: Vec<String>,
    /// A batch is stored when it holds this many events (larger batches load faster and
    /// hold more memory: BENCHMARKS.md has both measured) ...
    #[arg(long, default_value_t = 5_000)]
    batch_max_events: usize,
    /// ... or this many milliseconds after its first message.
    #[arg(long, default_value_t = 250)]
    batch_max_wait_ms: u64,
    /// Consumer group session timeout.
    #[arg(long, default_value_t = 10_000)]
    session_timeout_ms: u64,
    /// A stable name of this loader (e.g. the pod name of a StatefulSet) for static group
    /// membership: a restart takes its partitions back without waiting for the session
    /// timeout.
    #[arg(long, env = "SIGHTLINE_LOADER_INSTANCE")]
    instance_id: Option<String>,
    /// On SIGTERM, once the last batch is stored and committed, remove this loader's static
    /// membership (--instance-id) from its groups, so its partitions move to the other
    /// loaders at once: for a loader that stops for good. Without it the group keeps the
    /// member for a restart to take its partitions back (until the broker's session timeout
    /// expires it; some brokers never do); `sightline remove-loader` removes it later.
    #[arg(long, env = "SIGHTLINE_LOADER_LEAVE_ON_STOP", requires = "instance_id")]
    leave_on_stop: bool,
    /// How often the lag of every partition of the tenant's topic, and how long each went
    /// unconsumed, are read for /metrics (milliseconds).
    #[arg(long, default_value_t = 5000)]
    lag_interval_ms: u64,
    #[command(flatten)]
    processing_metrics: ProcessingMetricsArgs,
}

pub fn run(args: Args) -> Result<(), String> {
    // The user-agent data compiles once per process; at start, not in the first request.
    sightline_core::processor::agent::preload();
    block_on(serve(args))
}

async fn serve(args: Args) -> Result<(), String> {
    args.warehouse.require_server("loader", args.embedded_engine)?;
    // TLS and SASL: a bad setting stops the loader here, naming the variable.
    let security = Security::from_env().map_err(|e| e.to_string())?;
    let mut tenants = load_tenants(&args.tenants).map_err(|e| e.to_string())?;
    if !args.only.is_empty() {
        for name in &args.only {
            if !tenants.iter().any(|t| &t.name == name) {
                return Err(format!("--tenant {name}: no such tenant in {}", args.tenants.display()));
            }
        }
        tenants.retain(|t| args.only.contains(&t.name));
    }
    // Served from the start: /readyz says "not ready" while the warehouse is awaited.
    let metrics = LoaderMetrics::default();
    let processing = sightline_ingest::metrics::ProcessingMetrics::default();
    let ops = args.ops.start("loader").await?;
    ops.metrics.register_with(|r| {
        metrics.register(r);
        processing.register(r);
    });
    let readiness = ops.readiness.clone();

    let (stop, mut stopped) = stop_on_signal();
    let Some(warehouse) = args
        .warehouse
        .open_and_migrate(&args.data, &tenants, &mut stopped)
        .await?
    else {
        ops.stop();
        tracing::info!("stopped before the warehouse was available");
        return Ok(());
    };

    {
        use std::io::Write;
        let names: Vec<&str> = tenants.iter().map(|t| t.name.as_str()).collect();
        println!(
            "sightline loader listening on the topics of {} (warehouse {}), operations on http://{}",
            names.join(", "),
            args.warehouse.describe_target(&args.data),
            ops.addr
        );
        let _ = std::io::stdout().flush();
    }
    let maintenance = storage_maintenance(warehouse.clone(), tenants.clone(), stopped.clone());
    let identities = processing_metrics(
        warehouse.clone(),
        tenants.clone(),
        processing,
        &args.processing_metrics,
        stopped.clone(),
    );
    // Each loader reads its tenant's spec (sites, bot filtering) through a LiveTenant that a
    // reload of the tenants files replaces.
    let live: Vec<sightline_core::spec::LiveTenant> = tenants
        .iter()
        .cloned()
        .map(sightline_core::spec::LiveTenant::new)
        .collect();
    let reloaded = live.clone();
    let reloader = crate::reload::spawn(
        args.tenants.clone(),
        crate::common::reload_interval(args.reload_interval_ms),
        stopped.clone(),
        move |tenants| {
            for current in &reloaded {
                let name = current.load().name.clone();
                match tenants.iter().find(|t| t.name == name) {
                    Some(t) => current.store(t.clone()),
                    None => {
                        tracing::warn!(tenant = %name, "tenant no longer in the tenants files; its loader keeps the last spec until restarted")
                    }
                }
            }
            for t in tenants
                .iter()
                .filter(|t| !reloaded.iter().any(|l| l.load().name == t.name))
            {
                tracing::warn!(tenant = %t.name, "new tenant in the tenants files; a restart starts its loader");
            }
        },
    );
    let mut loaders = tokio::task::JoinSet::new();
    let mut statuses = Vec::new();
    for tenant in live {
        let tenant_name = tenant.load().name.clone();
        let config = LoaderConfig {
            brokers: args.brokers.clone(),
            security: security.clone(),
            max_events: args.batch_max_events.max(1),
            max_wait: Duration::from_millis(args.batch_max_wait_ms),
            session_timeout: Duration::from_millis(args.session_timeout_ms),
            instance_id: args.instance_id.as_ref().map(|i| member_instance(i, &tenant_name)),
            lag_interval: Duration::from_millis(args.lag_interval_ms.max(100)),
        };
        let name = tenant_name;
        let loader = Loader::new(tenant, warehouse.clone(), metrics.clone(), config)
            .map_err(|e| format!("tenant {name}: {e}"))?;
        statuses.push((name.clone(), loader.status()));
        let stopped = stopped.clone();
        loaders.spawn(async move { loader.run(stopped).await.map_err(|e| format!("tenant {name}: {e}")) });
    }

    // Ready while every tenant's loader stores and reaches its brokers; each change is logged.
    let readiness_watch = {
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let mut last: Option<bool> = None;
            loop {
                let why_not: Vec<String> = statuses
                    .iter()
                    .filter_map(|(tenant, s)| s.why_not().map(|why| format!("tenant {tenant}: {why}")))
                    .collect();
                let ready = why_not.is_empty() && !*stopped.borrow();
                readiness.set(ready);
                if last != Some(ready) {
                    if ready {
                        tracing::info!("ready");
                    } else if last.is_none() {
                        // Starting: not news yet.
                        tracing::info!(why = %why_not.join("; "), "not ready yet");
                    } else if !*stopped.borrow() {
                        tracing::warn!(why = %why_not.join("; "), "not ready");
                    }
                    last = Some(ready);
                }
                tokio::select! {
                    _ = stopped.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
        })
    };
    let mut failed = Vec::new();
    tokio::select! {
        _ = stopped.changed() => {}
        // A loader that stops on its own has failed: exit, so the process is restarted.
        Some(ended) = loaders.join_next() => failed.push(outcome(ended).unwrap_or_else(|| "a loader stopped".into())),
    }
    // Each remaining loader stores what it has read, commits and returns; a loader that
    // failed stops the others.
    stop.send_replace(true);
    while let Some(ended) = loaders.join_next().await {
        failed.extend(outcome(ended));
    }
    readiness_watch.abort();
    if let Err(e) = maintenance.await {
        failed.push(e.to_string());
    }
    if let Err(e) = identities.await {
        failed.push(e.to_string());
    }
    if args.leave_on_stop {
        if let Some(instance) = &args.instance_id {
            // The consumers are closed: a member removed now cannot rejoin.
            if let Err(e) = leave_groups(&args.brokers, &security, instance, &tenants).await {
                failed.push(e);
            }
        }
    }
    ops.stop();
    reloader.abort();
    if failed.is_empty() {
        tracing::info!("stopped");
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// How long removing a member may wait for the broker.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(15);

/// Removes `instance`'s static memberships from the groups of `tenants`, saying what became
/// of each on stdout.
pub async fn leave_groups(
    brokers: &str,
    security: &Security,
    instance: &str,
    tenants: &[sightline_core::spec::Tenant],
) -> Result<(), String> {
    let mut failed = Vec::new();
    for tenant in tenants {
        let group = group_id(&tenant.name);
        let member = member_instance(instance, &tenant.name);
        match remove_static_members(brokers, security, &group, std::slice::from_ref(&member), LEAVE_TIMEOUT).await {
            Ok(outcomes) => {
                for (member, outcome) in outcomes {
                    let what = match outcome {
                        Removal::Removed => "removed from",
                        Removal::NotAMember => "was not a member of",
                    };
                    println!("{member} {what} {group}");
                    tracing::info!(%member, %group, ?outcome, "static membership removed");
                }
            }
            Err(e) => failed.push(format!("{group}: removing {member}: {e}")),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// The error a finished loader task reports, if any.
fn outcome(ended: Result<Result<(), String>, tokio::task::JoinError>) -> Option<String> {
    match ended {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(e.to_string()),
    }
}

/// `sightline remove-loader`: the static membership of a loader that is gone for good.
#[derive(ClapArgs)]
pub struct RemoveArgs {
    /// AnalyticsTenant YAML file or directory: the tenants whose groups the loader was in.
    #[arg(long, default_value = "manifests/examples")]
    tenants: PathBuf,
    /// Only these tenants (repeatable); all tenants of --tenants by default.
    #[arg(long = "tenant")]
    only: Vec<String>,
    /// Kafka bootstrap servers.
    #[arg(long, env = "SIGHTLINE_KAFKA_BROKERS")]
    brokers: String,
    /// The --instance-id the loader ran with (repeatable), e.g. a StatefulSet's pod name.
    #[arg(long = "instance-id", required = true)]
    instance_ids: Vec<String>,
}

/// Removes each instance's membership from each tenant's loader group: its partitions move to
/// the loaders still running at once. Exit 1 when a removal fails; a loader that was no
/// member (it left already) is not a failure.
pub fn remove(args: RemoveArgs) -> Result<(), String> {
    let mut tenants = load_tenants(&args.tenants).map_err(|e| e.to_string())?;
    for name in &args.only {
        if !tenants.iter().any(|t| &t.name == name) {
            return Err(format!("--tenant {name}: no such tenant in {}", args.tenants.display()));
        }
    }
    if !args.only.is_empty() {
        tenants.retain(|t| args.only.contains(&t.name));
    }
    let security = Security::from_env().map_err(|e| e.to_string())?;
    block_on(async {
        let mut failed = Vec::new();
        for instance in &args.instance_ids {
            if let Err(e) = leave_groups(&args.brokers, &security, instance, &tenants).await {
                failed.push(e);
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(failed.join("; "))
        }
    })
}
