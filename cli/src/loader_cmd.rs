//! `sightline loader`: each tenant's event topic into the warehouse, one consumer per
//! tenant in its tenant's group. It has no public API: `/metrics`, `/healthz` and `/readyz`
//! on `--ops-listen`.

use std::time::Duration;

use std::path::PathBuf;

use clap::Args as ClapArgs;
use sightline_core::spec::load_tenants;
use sightline_ingest::loader::{Loader, LoaderConfig};
use sightline_ingest::metrics::LoaderMetrics;

use crate::common::{block_on, stop_on_signal, storage_maintenance, OpsArgs, WarehouseArgs};

#[derive(ClapArgs)]
pub struct Args {
    /// AnalyticsTenant YAML file or directory.
    #[arg(long, default_value = "manifests/examples")]
    tenants: PathBuf,
    /// Where the embedded engine's files live (without --clickhouse-url).
    #[arg(long, default_value = "./data")]
    data: PathBuf,
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
}

pub fn run(args: Args) -> Result<(), String> {
    // The user-agent data compiles once per process; at start, not in the first request.
    sightline_core::processor::agent::preload();
    block_on(serve(args))
}

async fn serve(args: Args) -> Result<(), String> {
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
    let ops = args.ops.start("loader").await?;
    ops.metrics.register_with(|r| metrics.register(r));
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

    let maintenance = storage_maintenance(warehouse.clone(), tenants.clone(), stopped.clone());
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
    for tenant in live {
        let tenant_name = tenant.load().name.clone();
        let config = LoaderConfig {
            brokers: args.brokers.clone(),
            max_events: args.batch_max_events.max(1),
            max_wait: Duration::from_millis(args.batch_max_wait_ms),
            session_timeout: Duration::from_millis(args.session_timeout_ms),
            instance_id: args.instance_id.as_ref().map(|i| format!("{i}.{tenant_name}")),
            ..LoaderConfig::default()
        };
        let name = tenant_name;
        let loader = Loader::new(tenant, warehouse.clone(), metrics.clone(), readiness.clone(), config)
            .map_err(|e| format!("tenant {name}: {e}"))?;
        let stopped = stopped.clone();
        loaders.spawn(async move { loader.run(stopped).await.map_err(|e| format!("tenant {name}: {e}")) });
    }

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
    if let Err(e) = maintenance.await {
        failed.push(e.to_string());
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

/// The error a finished loader task reports, if any.
fn outcome(ended: Result<Result<(), String>, tokio::task::JoinError>) -> Option<String> {
    match ended {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(e.to_string()),
    }
}
