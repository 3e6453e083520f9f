//! The operator process: `/metrics`, `/healthz` and `/readyz` on its listener, and the
//! controller run while this replica holds the leader lease.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures_util::FutureExt;
use kube::Client;
use sightline_ingest::kafka::provision::Provisioner;
use tokio::sync::watch;

use crate::controller::{self, Context};
use crate::leader::{run_while_leader, LeaseConfig};
use crate::metrics::Metrics;
use crate::reprocess::controller::{self as reprocess_controller, ReprocessContext};
use crate::validate::OperatorConfig;

/// How often a queued or running Reprocess is looked at again besides its Job's events.
const REPROCESS_POLL: Duration = Duration::from_secs(30);

/// Everything the operator process needs besides the API client.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub operator: OperatorConfig,
    pub lease: LeaseConfig,
    /// How often a healthy tenant is reconciled again.
    pub resync: Duration,
    /// How long a Kafka admin request may take.
    pub kafka_timeout: Duration,
    /// Apply the embedded CRDs at start (`crate::crds::ensure`).
    pub manage_crds: bool,
    /// Finished Reprocesses kept per tenant (`reprocess::history`).
    pub reprocess_history_limit: usize,
}

/// `/metrics` (Prometheus text), `/healthz` (the process runs) and `/readyz` (it runs its
/// loop: leading or standing by).
pub fn ops_router(registry: Arc<prometheus_client::registry::Registry>, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let registry = registry.clone();
                async move {
                    let mut text = String::new();
                    match prometheus_client::encoding::text::encode(&mut text, &registry) {
                        Ok(()) => (
                            StatusCode::OK,
                            [(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )],
                            text,
                        )
                            .into_response(),
                        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
                    }
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.load(Ordering::Relaxed);
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
}

/// Runs the operator until `stop` is raised: serves the ops endpoints on `listener` and
/// reconciles while leading.
pub async fn run(
    client: Client,
    config: RunConfig,
    listener: tokio::net::TcpListener,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let kafka = Arc::new(
        Provisioner::new(&config.operator.brokers, &config.operator.kafka_security)
            .map_err(|e| format!("--brokers {}: {e}", config.operator.brokers))?
            .with_timeout(config.kafka_timeout),
    );
    let metrics = Metrics::default();
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let ready = Arc::new(AtomicBool::new(false));
    let app = ops_router(Arc::new(registry), ready.clone());
    let mut server_stop = stop.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = server_stop.wait_for(|s| *s).await;
            })
            .await
    });
    ready.store(true, Ordering::Relaxed);
    if config.manage_crds {
        crate::crds::ensure(&client).await;
    }
    let outcome = run_while_leader(client.clone(), config.lease.clone(), metrics.clone(), stop, |until| {
        let client = client.clone();
        let kafka = kafka.clone();
        let metrics = metrics.clone();
        let config = config.clone();
        // Both controllers stop when the lease is lost.
        let until = until.shared();
        let tenants = controller::run(
            client.clone(),
            {
                let client = client.clone();
                let config = config.clone();
                move |store| {
                    Arc::new(Context::new(
                        client,
                        config.operator.clone(),
                        store,
                        kafka,
                        metrics,
                        config.resync,
                    ))
                }
            },
            until.clone(),
        );
        let reprocesses = reprocess_controller::run(
            client.clone(),
            move |store| {
                Arc::new(
                    ReprocessContext::new(
                        client,
                        config.operator.clone(),
                        store,
                        Arc::new(chrono::Utc::now),
                        REPROCESS_POLL,
                    )
                    .with_history_limit(config.reprocess_history_limit),
                )
            },
            until,
        );
        async move {
            futures_util::future::join(tenants, reprocesses).await;
        }
    })
    .await;
    ready.store(false, Ordering::Relaxed);
    let _ = server.await;
    outcome.map_err(|e| format!("leader election: {e}"))
}

/// The address the ops endpoints bind (for the announce line).
pub fn describe(addr: SocketAddr) -> String {
    format!("sightline operator listening on http://{addr} (/metrics, /healthz, /readyz)")
}
