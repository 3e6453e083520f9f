//! `sightline query`: the merchants' query API and dashboard over a warehouse that loaders
//! write. Watermarks and cache keys follow storage by polling it.

use std::sync::Arc;
use std::time::Duration;

use clap::Args as ClapArgs;
use sightline_core::registry::Registry;
use sightline_core::watermark::Watermarks;
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
}

pub fn run(args: Args) -> Result<(), String> {
    block_on(serve(args))
}

async fn serve(args: Args) -> Result<(), String> {
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
    ops.readiness.set(true);
    let readiness = ops.readiness.clone();
    args.serve
        .serve(listener, app, async move {
            let _ = stopped.wait_for(|stop| *stop).await;
            readiness.set(false);
        })
        .await?;
    poller.abort();
    reloader.abort();
    ops.stop();
    tracing::info!("stopped");
    Ok(())
}
