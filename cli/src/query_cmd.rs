//! `sightline query`: the merchants' query API and dashboard over a warehouse that loaders
//! write. Watermarks and cache keys follow storage by polling it. It is ready (`/readyz`)
//! only while its warehouse answers with the schema of every tenant it serves: a tenant
//! whose database is missing would answer every query 503.

use std::sync::Arc;
use std::time::Duration;

use clap::Args as ClapArgs;
use sightline_core::registry::Registry;
use sightline_core::warehouse::{Params, Warehouse};
use sightline_core::watermark::Watermarks;
use sightline_ingest::metrics::Readiness;
use sightline_query::QueryState;

use crate::common::{announce, block_on, stop_on_signal, QueryArgs, ServeArgs, WarehouseArgs};

#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    warehouse: WarehouseArgs,
    #[command(flatten)]
    query: QueryArgs,
    /// How often storage is polled for new data (watermarks, cache invalidation), in ms.
    #[arg(long, default_value_t = 1000)]
    freshness_poll_ms: u64,
    /// Use the embedded engine under --data instead of a ClickHouse server. It belongs to one
    /// process: no loader can write it while this role runs. For reading a data directory
    /// no other process uses; `sightline standalone` is the one-process setup.
    #[arg(long)]
    embedded_engine: bool,
}

/// How often the role checks that its warehouse answers for every tenant.
const READY_CHECK_EVERY: Duration = Duration::from_secs(2);

pub fn run(args: Args) -> Result<(), String> {
    block_on(serve(args))
}

async fn serve(args: Args) -> Result<(), String> {
    args.warehouse.require_server("query", args.embedded_engine)?;
    let (tenants, secret) = args.serve.tenants_and_existing_secret()?;
    let ops = args.serve.ops.start("query").await?;
    let (_, mut stopped) = stop_on_signal();
    // A warehouse outage at start (or, with `--migrations check`, a schema the operator has
    // not migrated yet) is waited out, not an exit, with /healthz answering and /readyz not
    // ready on the operations listener; the loaders (or the operator) apply the schemas, so
    // none are applied here.
    let Some(warehouse) = args
        .warehouse
        .open_for_reading(&args.serve.data, &tenants, &mut stopped)
        .await?
    else {
        ops.stop();
        tracing::info!("stopped before the warehouse was available");
        return Ok(());
    };
    let registry = Arc::new(Registry::new(tenants, &secret));
    let reloader = args.serve.reload_into(registry.clone(), stopped.clone());
    let readiness_watch = watch_readiness(
        warehouse.clone(),
        registry.clone(),
        ops.readiness.clone(),
        stopped.clone(),
    );
    let state = Arc::new(QueryState::new(
        registry,
        warehouse,
        Arc::new(Watermarks::default()),
        args.query.config(),
    ));
    ops.metrics.register_with(|r| state.register_metrics(r));
    sightline_query::freshness::poll_once(&state).await;
    let poller = tokio::spawn(sightline_query::freshness::follow_storage(
        state.clone(),
        Duration::from_millis(args.freshness_poll_ms.max(50)),
    ));
    let app = sightline_query::router(state);
    let (listener, addr) = args.serve.bind().await?;
    announce("query", addr, "");
    let readiness = ops.readiness.clone();
    args.serve
        .serve(listener, app, async move {
            let _ = stopped.wait_for(|stop| *stop).await;
            readiness.set(false);
        })
        .await?;
    readiness_watch.abort();
    ops.readiness.set(false);
    poller.abort();
    reloader.abort();
    ops.stop();
    tracing::info!("stopped");
    Ok(())
}

/// Until `stop`: ready while the warehouse answers and holds the schema of every tenant of
/// `registry` (reloads included); each change is logged with the tenants it is missing.
fn watch_readiness(
    warehouse: Arc<dyn Warehouse>,
    registry: Arc<Registry>,
    readiness: Readiness,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last: Option<Result<(), String>> = None;
        loop {
            let now = missing_schemas(warehouse.as_ref(), &registry)
                .await
                .and_then(|missing| {
                    if missing.is_empty() {
                        Ok(())
                    } else {
                        Err(format!("no schema for {}", missing.join(", ")))
                    }
                });
            readiness.set(now.is_ok());
            // A shutdown that began meanwhile keeps the role not ready.
            if *stop.borrow() {
                readiness.set(false);
                return;
            }
            if last.as_ref() != Some(&now) {
                match &now {
                    Ok(()) => tracing::info!("ready: the warehouse answers for every tenant"),
                    Err(why) if last.is_none() => tracing::info!(why = %why, "not ready yet"),
                    Err(why) => tracing::warn!(why = %why, "not ready"),
                }
                last = Some(now);
            }
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(READY_CHECK_EVERY) => {}
            }
        }
    })
}

/// The tenants (as `tenant (database)`) whose database has no schema; an error when the
/// warehouse does not answer.
async fn missing_schemas(warehouse: &dyn Warehouse, registry: &Registry) -> Result<Vec<String>, String> {
    let tenants: Vec<(String, String)> = registry
        .entries()
        .iter()
        .map(|e| (e.tenant.name.clone(), e.tenant.database()))
        .collect();
    let databases = Params::array_of_strings(tenants.iter().map(|(_, db)| db.as_str()));
    let rows = warehouse
        .select(
            "SELECT database FROM system.tables WHERE name = {table:String} AND database IN {dbs:Array(String)}",
            &Params::new()
                .bind("table", sightline_core::schema::MIGRATIONS_TABLE)
                .bind("dbs", databases),
        )
        .await
        .map_err(|e| format!("the warehouse does not answer: {e}"))?;
    let present: std::collections::HashSet<&str> = rows.iter().filter_map(|r| r["database"].as_str()).collect();
    Ok(tenants
        .iter()
        .filter(|(_, db)| !present.contains(db.as_str()))
        .map(|(name, db)| format!("tenant {name} (database {db})"))
        .collect())
}
