//! `sightline collector`: the collector HTTP API in front of Kafka. Valid events go to their
//! tenant's topic; the 202 goes out only after the broker acknowledged every one of them.
//! One deployment serves many tenants: the token says which. It is ready (`/readyz`) while
//! its brokers answer; while they do not, requests get 503 at once.

use std::sync::Arc;
use std::time::Duration;

use clap::Args as ClapArgs;
use sightline_core::registry::Registry;
use sightline_ingest::collector::{self, CollectorState};
use sightline_ingest::kafka::sink::{KafkaSink, KafkaSinkConfig};
use sightline_ingest::kafka::Security;
use sightline_ingest::metrics::Readiness;

use crate::common::{announce, block_on, ClientArgs, ServeArgs};

#[derive(ClapArgs)]
pub struct Args {
    #[command(flatten)]
    serve: ServeArgs,
    /// Kafka bootstrap servers.
    #[arg(long, env = "SIGHTLINE_KAFKA_BROKERS")]
    brokers: String,
    /// A request whose events the broker has not acknowledged within this time gets 503
    /// (at most 0.5 s later); while the brokers are known to be unreachable, at once.
    #[arg(long, default_value_t = 10_000)]
    delivery_timeout_ms: u64,
    /// Messages buffered for the broker before new requests get 503 at once. A message is
    /// one request's events (one per visitor when a request holds several), whatever their
    /// number.
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
    // TLS and SASL: a bad setting stops the collector here, naming the variable.
    let security = Security::from_env().map_err(|e| e.to_string())?;
    let sink = Arc::new(
        KafkaSink::new(&KafkaSinkConfig {
            brokers: args.brokers.clone(),
            security,
            delivery_timeout: Duration::from_millis(args.delivery_timeout_ms.max(1)),
            queue_max_messages: args.queue_max_messages.max(1),
        })
        .map_err(|e| format!("--brokers {}: {e}", args.brokers))?,
    );
    let registry = Arc::new(Registry::new(tenants, &secret));
    let (_, stopped) = crate::common::stop_on_signal();
    let mut shutdown = stopped.clone();
    let reloader = args.serve.reload_into(registry.clone(), stopped.clone());
    let broker_watch = sink.watch_brokers(stopped.clone());
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
    let readiness_watch = watch_readiness(sink.clone(), ops.readiness.clone(), stopped.clone());
    let readiness = ops.readiness.clone();
    args.serve
        .serve(listener, app, async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
            readiness.set(false);
        })
        .await?;
    readiness_watch.abort();
    broker_watch.abort();
    ops.readiness.set(false);
    // Every request that got its answer is on the log already; this sends what remains.
    sink.flush(Duration::from_secs(30))
        .map_err(|e| format!("flushing the producer: {e}"))?;
    ops.stop();
    reloader.abort();
    tracing::info!("stopped");
    Ok(())
}

/// Until `stop`: ready while the brokers answer (as far as the producer knows); each
/// change is logged.
fn watch_readiness(
    sink: Arc<KafkaSink>,
    readiness: Readiness,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = None;
        loop {
            let reachable = sink.brokers().reachable();
            readiness.set(reachable);
            // A shutdown keeps the role not ready (its signal may come between the two).
            if *stop.borrow() {
                readiness.set(false);
                return;
            }
            if last != Some(reachable) {
                if reachable {
                    tracing::info!("ready: the Kafka brokers answer");
                } else if last.is_none() {
                    // Starting: not news yet.
                    tracing::info!(why = %sink.brokers().reason().unwrap_or_default(), "not ready yet: the Kafka brokers have not answered");
                } else {
                    tracing::warn!(why = %sink.brokers().reason().unwrap_or_default(), "not ready: the Kafka brokers do not answer");
                }
                last = Some(reachable);
            }
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    })
}
