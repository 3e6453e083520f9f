//! `sightline standalone`: the whole pipeline in one process. Tenants come from the same
//! AnalyticsTenant YAML as in a cluster; the warehouse is the embedded engine; the log is the
//! in-process group-commit writer.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use chrono::{DateTime, Utc};
use clap::Args as ClapArgs;
use sightline_core::processor::Current;
use sightline_core::registry::Registry;
use sightline_core::secret::MasterSecret;
use sightline_core::token::{self, Claims, Scope};
use sightline_core::warehouse::live::LiveSessions;
use sightline_core::warehouse::{ops, replay};
use sightline_core::watermark::Watermarks;
use sightline_ingest::collector::{self, CollectorState};
use sightline_ingest::group_commit::{GroupCommit, GroupCommitConfig};
use sightline_query::QueryState;

use crate::common::{
    apply_schemas, block_on, processing_metrics, shutdown_signal, storage_maintenance, ClientArgs,
    ProcessingMetricsArgs, QueryArgs, ServeArgs, WarehouseArgs,
};

/// Days back from today that start-up checks for half-loaded days (the lateness window).
const REPAIR_DAYS: u64 = 4;

#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    serve: ServeArgs,
    /// A batch is committed when it holds this many events ...
    #[arg(long, default_value_t = 5000)]
    batch_max_events: usize,
    /// ... or when its first event has waited this many milliseconds.
    #[arg(long, default_value_t = 20)]
    batch_max_wait_ms: u64,
    /// Events waiting for commit before the collector answers 503.
    #[arg(long, default_value_t = 200_000)]
    max_pending_events: usize,
    #[command(flatten)]
    client: ClientArgs,
    #[command(flatten)]
    warehouse: WarehouseArgs,
    #[command(flatten)]
    query: QueryArgs,
    #[command(flatten)]
    processing_metrics: ProcessingMetricsArgs,
}

pub fn run(args: Args) -> Result<(), String> {
    // The user-agent data compiles once per process; at start, not in the first request.
    sightline_core::processor::agent::preload();
    block_on(serve(args))
}

async fn serve(args: Args) -> Result<(), String> {
    let (tenants, secret) = args.serve.tenants_and_secret()?;
    let geo = args.client.geo()?;
    // Up from the start: live while start-up repairs run, ready once the API serves.
    let ops = args.serve.ops.start("standalone").await?;
    let warehouse = args.warehouse.open(&args.serve.data).await?;

    let now = Utc::now();
    // The schema, and the recent days onto the rollup tiers, before anything is stored.
    apply_schemas(warehouse.as_ref(), &tenants).await?;
    let mut sessions = BTreeMap::new();
    for tenant in &tenants {
        // The embedded engine is this process's alone: day leases and staging tables in it
        // are those of replays a crash stopped; a lease would hold its day's events back
        // for minutes.
        if warehouse.backend() == "embedded" {
            replay::clear_left_behind(warehouse.as_ref(), &tenant.database())
                .await
                .map_err(|e| format!("tenant {}: {e}", tenant.name))?;
        }
        // Before accepting traffic: a crash may have left a day with raw rows but no
        // processed ones; replaying replaces whole days, so it must run first.
        let repaired = replay::repair_recent_days(warehouse.as_ref(), tenant, now, REPAIR_DAYS)
            .await
            .map_err(|e| format!("tenant {}: repair: {e}", tenant.name))?;
        if !repaired.is_empty() {
            tracing::warn!(tenant = %tenant.name, days = repaired.len(), "repaired days left half-loaded by a crash");
        }
        // Visits continue from what is stored: visitors stored recently are read again
        // from `events_raw` when their next event comes (warehouse::live).
        let live = LiveSessions::start(warehouse.as_ref(), tenant, Arc::new(Current))
            .await
            .map_err(|e| format!("tenant {}: sessions: {e}", tenant.name))?;
        sessions.insert(tenant.name.clone(), live);
    }

    let watermarks = Arc::new(Watermarks::default());
    for tenant in &tenants {
        for (site, newest, _) in ops::recent_activity(warehouse.as_ref(), &tenant.database(), DateTime::UNIX_EPOCH)
            .await
            .map_err(|e| e.to_string())?
        {
            watermarks.seed(&tenant.name, &site, newest);
        }
    }
    let registry = Arc::new(Registry::new(tenants.clone(), &secret));
    let config = GroupCommitConfig {
        max_events: args.batch_max_events.max(1),
        max_wait: Duration::from_millis(args.batch_max_wait_ms),
        max_pending_events: args.max_pending_events.max(1),
    };
    let (sink, writer) = GroupCommit::start(
        warehouse.clone(),
        registry.clone(),
        watermarks.clone(),
        sessions,
        config,
    );
    let client = args.client.client_config();
    let collector_state = Arc::new(CollectorState::new(
        registry.clone(),
        Arc::new(sink),
        client,
        Arc::new(geo),
    ));
    let query_config = args.query.config();
    let query_state = Arc::new(QueryState::new(
        registry.clone(),
        warehouse.clone(),
        watermarks.clone(),
        query_config,
    ));
    // One /metrics for the one process: the collector's, the query API's, and what made
    // each day.
    let processing = sightline_ingest::metrics::ProcessingMetrics::default();
    ops.metrics.register_with(|r| {
        collector_state.metrics.register(r);
        query_state.register_metrics(r);
        processing.register(r);
    });
    let app = Router::new()
        .merge(collector::router(collector_state))
        .merge(crate::admin::router(crate::admin::AdminState {
            registry: registry.clone(),
            warehouse: warehouse.clone(),
        }))
        .merge(sightline_query::router(query_state));

    let (listener, addr) = args.serve.bind().await?;
    print_banner(addr, &tenants[0], &secret);
    let (stop_maintenance, stopped) = tokio::sync::watch::channel(false);
    let identities = processing_metrics(
        warehouse.clone(),
        tenants.clone(),
        processing,
        &args.processing_metrics,
        stopped.clone(),
    );
    let maintenance = storage_maintenance(warehouse.clone(), tenants.clone(), stopped);

    ops.readiness.set(true);
    let readiness = ops.readiness.clone();
    args.serve
        .serve(listener, app, async move {
            shutdown_signal().await;
            readiness.set(false);
        })
        .await?;
    stop_maintenance.send_replace(true);
    maintenance.await.map_err(|e| e.to_string())?;
    identities.await.map_err(|e| e.to_string())?;
    // The server and every handle to the writer are gone: it commits what it holds, then ends.
    tracing::info!("draining the group-commit writer");
    writer.await.map_err(|e| e.to_string())?;
    ops.stop();
    tracing::info!("stopped");
    Ok(())
}

/// Where we listen, tokens for the example site, and a curl line to send and one to query.
fn print_banner(addr: SocketAddr, tenant: &sightline_core::spec::Tenant, secret: &MasterSecret) {
    let site = tenant
        .spec
        .sites
        .allowed
        .first()
        .map(|s| s.id.clone())
        .unwrap_or_else(|| "example.com".to_string());
    let key = secret.tenant_key(&tenant.name);
    let expires = Utc::now().timestamp() + 30 * 86_400;
    let write = token::issue(
        &key,
        &Claims {
            tenant: tenant.name.clone(),
            site: site.clone(),
            scope: Scope::Write,
            expires,
        },
    );
    let read = token::issue(
        &key,
        &Claims {
            tenant: tenant.name.clone(),
            site: site.clone(),
            scope: Scope::Read,
            expires,
        },
    );
    println!("sightline standalone listening on http://{addr}");
    println!("tenant {} site {site}", tenant.name);
    println!("write token: {write}");
    println!("read token:  {read}");
    println!();
    println!("send an event:");
    println!(
        "  curl -s -X POST http://{addr}/v1/collect -H 'Authorization: Bearer {write}' -H 'Content-Type: application/json' \
         -A 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36' \
         -d '{{\"url\":\"https://{site}/hello\",\"referrer\":\"https://www.google.com/\"}}'"
    );
    println!("query it:");
    println!("  curl -s 'http://{addr}/v1/sites/{site}/aggregate?period=today&metrics=visitors,pageviews' -H 'Authorization: Bearer {read}'");
    use std::io::Write;
    let _ = std::io::stdout().flush();
}
