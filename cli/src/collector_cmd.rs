//! `sightline collector`: the collector HTTP API in front of Kafka. Valid events go to their
//! tenant's topic; the 202 goes out only after the broker acknowledged every one of them.
//! One deployment serves many tenants: the token says which.

use std::sync::Arc;
use std::time::Duration;

use clap::Args as ClapArgs;
use sightline_core::registry::Registry;
use sightline_ingest::collector::{self, CollectorState};
use sightline_ingest::kafka::sink::{KafkaSink, KafkaSinkConfig};

use crate::common::{announce, block_on, shutdown_signal, ClientArgs, ServeArgs};

#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    serve: ServeArgs,
    /// Kafka bootstrap servers.
    #[arg(long, env = "SIGHTLINE_KAFKA_BROKERS")]
    brokers: String,
    /// A request whose events the broker has not acknowledged within this time gets 503.
    #[arg(long, default_value_t = 10_000)]
    delivery_timeout_ms: u64,
    /// Events buffered for the broker before new requests get 503 at once.
    #[arg(long, default_value_t = 200_000)]
    queue_max_messages: u32,
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(args: Args) -> Result<(), String> {
    block_on(serve(args))
}

async fn serve(args: Args) -> Result<(), String> {
    let (tenants, secret) = args.serve.tenants_and_existing_secret()?;
    let sink = Arc::new(
        KafkaSink::new(&KafkaSinkConfig {
            brokers: args.brokers.clone(),
            delivery_timeout: Duration::from_millis(args.delivery_timeout_ms.max(1)),
            queue_max_messages: args.queue_max_messages.max(1),
        })
        .map_err(|e| format!("--brokers {}: {e}", args.brokers))?,
    );
    let registry = Arc::new(Registry::new(tenants, &secret));
    let (_, stopped) = crate::common::stop_on_signal();
    let reloader = args.serve.reload_into(registry.clone(), stopped);
    let state = Arc::new(CollectorState::new(
        registry,
        sink.clone(),
        args.client.client_config(),
        Arc::new(args.client.geo()?),
    ));
    let ops = args.serve.ops.start("collector").await?;
    ops.metrics.register_with(|r| state.metrics.register(r));
    let app = collector::router(state);
    let (listener, addr) = args.serve.bind().await?;
    announce("collector", addr, "");
    ops.readiness.set(true);
    let readiness = ops.readiness.clone();
    args.serve
        .serve(listener, app, async move {
            shutdown_signal().await;
            readiness.set(false);
        })
        .await?;
    // Every request that got its answer is on the log already; this sends what remains.
    sink.flush(Duration::from_secs(30))
        .map_err(|e| format!("flushing the producer: {e}"))?;
    ops.stop();
    reloader.abort();
    tracing::info!("stopped");
    Ok(())
}
