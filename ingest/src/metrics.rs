//! Prometheus metrics of the ingest roles (collector and loader), and the `/metrics`,
//! `/healthz` and `/readyz` routes every role serves on its operations listener. Label
//! values come from fixed sets only: tenants from the spec, routes from the router, reasons
//! from [`REJECTION_REASONS`] and the store's error kinds; never text a client sent (a
//! client's field name in a label could forge metric lines and would make a new series per
//! request).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub tenant: String,
    /// `accepted` (stored), `rejected` (failed validation), `failed` (the store refused the
    /// request: nothing of it acknowledged).
    pub outcome: String,
    /// The rejected field, or the store's error kind; empty for accepted events.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    pub tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoadedLabels {
    pub tenant: String,
    /// `stored` (new rows), `duplicate` (already stored: a redelivery), `dlq` (poison).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    pub tenant: String,
    pub partition: i32,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn batch_histogram() -> Histogram {
    // 1 .. ~32k events
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

/// The collector's metrics.
#[derive(Clone)]
pub struct CollectorMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub events: Family<EventLabels, Counter>,
    /// From handing a request's events to the store until it acknowledged them (the broker's
    /// acks with Kafka, the commit in standalone).
    pub store_seconds: Family<TenantLabels, Histogram, fn() -> Histogram>,
}

impl Default for CollectorMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            events: Family::default(),
            store_seconds: Family::new_with_constructor(latency_histogram),
        }
    }
}

impl CollectorMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sightline_collector_requests",
            "HTTP requests by route and status",
            self.requests.clone(),
        );
        registry.register(
            "sightline_collector_events",
            "Events by outcome and reason",
            self.events.clone(),
        );
        registry.register(
            "sightline_collector_store_seconds",
            "Time for the store to acknowledge a request's events (produce latency with Kafka)",
            self.store_seconds.clone(),
        );
    }

    /// Counts `n` events of `tenant` by outcome and reason, both from fixed sets.
    pub fn event(&self, tenant: &str, outcome: &'static str, reason: &'static str, n: u64) {
        if n > 0 {
            self.events
                .get_or_create(&EventLabels {
                    tenant: tenant.to_string(),
                    outcome: outcome.to_string(),
                    reason: reason.to_string(),
                })
                .inc_by(n);
        }
    }

    /// Counts one rejected event under its field's reason (see [`rejection_reason`]).
    pub fn rejected(&self, tenant: &str, field: &str) {
        self.event(tenant, "rejected", rejection_reason(field), 1);
    }
}

/// The `reason` label values of rejected events: the event fields intake checks, and
/// `other` for anything else (an unknown key a client sent, a field added later).
pub const REJECTION_REASONS: &[&str] = &[
    "url", "referrer", "ts", "props", "revenue", "id", "name", "event", "other",
];

/// The fixed reason a rejection's field is counted under: its first segment (`props.plan`
/// is `props`, `revenue.amount` is `revenue`) when that is a known field, else `other`.
pub fn rejection_reason(field: &str) -> &'static str {
    let head = field.split(['.', '[']).next().unwrap_or_default();
    REJECTION_REASONS
        .iter()
        .copied()
        .find(|r| *r == head && *r != "other")
        .unwrap_or("other")
}

/// Counts every response by matched route and status.
pub async fn count_requests(State(metrics): State<CollectorMetrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let response = next.run(request).await;
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

/// The loader's metrics.
#[derive(Clone)]
pub struct LoaderMetrics {
    /// Events by outcome (a message of the log holds a request's events).
    pub events: Family<LoadedLabels, Counter>,
    pub batch_events: Family<TenantLabels, Histogram, fn() -> Histogram>,
    pub insert_seconds: Family<TenantLabels, Histogram, fn() -> Histogram>,
    pub insert_failures: Family<TenantLabels, Counter>,
    /// Per partition of the tenant's topic (every one, not only this loader's): messages
    /// between the group's committed offset and the log end.
    pub consumer_lag: Family<PartitionLabels, Gauge>,
    /// Per partition: seconds since any loader of the group last consumed it while messages
    /// waited on it (0 while a loader consumes it or nothing waits).
    pub unowned_seconds: Family<PartitionLabels, Gauge<f64, AtomicU64>>,
    /// Partitions of the tenant's topic this loader holds.
    pub partitions_owned: Family<TenantLabels, Gauge>,
    pub dlq: Family<TenantLabels, Counter>,
}

impl Default for LoaderMetrics {
    fn default() -> Self {
        Self {
            events: Family::default(),
            batch_events: Family::new_with_constructor(batch_histogram),
            insert_seconds: Family::new_with_constructor(latency_histogram),
            insert_failures: Family::default(),
            consumer_lag: Family::default(),
            unowned_seconds: Family::default(),
            partitions_owned: Family::default(),
            dlq: Family::default(),
        }
    }
}

impl LoaderMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sightline_loader_events",
            "Events by outcome: stored (new rows), duplicate (stored before: a redelivery), dlq (sent to the dead-letter topic; a message that does not decode counts one)",
            self.events.clone(),
        );
        registry.register(
            "sightline_loader_batch_events",
            "Events per loaded batch",
            self.batch_events.clone(),
        );
        registry.register(
            "sightline_loader_insert_seconds",
            "Time to store a batch (raw and processed rows)",
            self.insert_seconds.clone(),
        );
        registry.register(
            "sightline_loader_insert_failures",
            "Batches whose insert failed and was retried",
            self.insert_failures.clone(),
        );
        registry.register(
            "sightline_loader_consumer_lag",
            "Messages between the group's committed offset and the log end, for every partition of the tenant's topic",
            self.consumer_lag.clone(),
        );
        registry.register(
            "sightline_loader_partition_unowned_seconds",
            "Seconds since any loader of the group last consumed the partition while messages waited on it (0 while one does or nothing waits)",
            self.unowned_seconds.clone(),
        );
        registry.register(
            "sightline_loader_partitions_owned",
            "Partitions of the tenant's topic this loader holds",
            self.partitions_owned.clone(),
        );
        registry.register(
            "sightline_loader_dlq",
            "Records sent to the dead-letter topic (an undecodable message, or one bad event of a message)",
            self.dlq.clone(),
        );
    }

    /// Counts `n` events of `tenant` under `outcome` (stored, duplicate, dlq).
    pub fn loaded(&self, tenant: &str, outcome: &str, n: u64) {
        if n > 0 {
            self.events
                .get_or_create(&LoadedLabels {
                    tenant: tenant.to_string(),
                    outcome: outcome.to_string(),
                })
                .inc_by(n);
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IdentityLabels {
    pub tenant: String,
    /// A processing identity (`processor::identity`: `v4`, `v4+bots`), or `unrecorded` for
    /// rows stored before rows carried one.
    pub identity: String,
}

/// What made each tenant's days (`warehouse::processing`), for the writing roles
/// (standalone, loader). One series per tenant and identity, never per day: the days are
/// counted, so the series stay as few as the identities a deployment has used (a version
/// bump or a bot-filtering change adds one; a replay onto the new one brings the old one's
/// count to 0), however many days the warehouse holds.
#[derive(Clone, Default)]
pub struct ProcessingMetrics {
    /// Per tenant and identity: UTC days of `events` holding net rows that identity made.
    pub days: Family<IdentityLabels, Gauge>,
    /// Per tenant: days holding rows of more than one identity.
    pub mixed: Family<TenantLabels, Gauge>,
    /// Identities shown per tenant, so one that no day holds any more shows 0.
    shown: Arc<std::sync::Mutex<std::collections::BTreeMap<String, std::collections::BTreeSet<String>>>>,
}

impl ProcessingMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sightline_day_processing_identity",
            "UTC days of events holding rows made by the processing identity (a day of two identities counts under both)",
            self.days.clone(),
        );
        registry.register(
            "sightline_day_processing_mixed",
            "UTC days of events holding rows of more than one processing identity",
            self.mixed.clone(),
        );
    }

    /// Shows `tenant`'s days per identity; identities shown before and gone now show 0.
    pub fn record(&self, tenant: &str, summary: &sightline_core::warehouse::processing::IdentityDays) {
        let mut shown = self.shown.lock().unwrap_or_else(|p| p.into_inner());
        let identities = shown.entry(tenant.to_string()).or_default();
        identities.extend(summary.days.keys().cloned());
        for identity in identities.iter() {
            let days = summary.days.get(identity).copied().unwrap_or(0);
            self.days
                .get_or_create(&IdentityLabels {
                    tenant: tenant.to_string(),
                    identity: identity.clone(),
                })
                .set(i64::try_from(days).unwrap_or(i64::MAX));
        }
        self.mixed
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
            })
            .set(i64::try_from(summary.mixed).unwrap_or(i64::MAX));
    }
}

/// Whether the process should get traffic (collector) or is doing its work (loader).
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The registry a process's `/metrics` serves. Roles register into it as they start, while
/// it is already served (a loader's `/readyz` answers before its warehouse is up).
#[derive(Clone, Default)]
pub struct MetricsRegistry(Arc<RwLock<Registry>>);

impl MetricsRegistry {
    pub fn register_with(&self, register: impl FnOnce(&mut Registry)) {
        let mut registry = self.0.write().unwrap_or_else(|p| p.into_inner());
        register(&mut registry);
    }

    /// The OpenMetrics text of every registered metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let registry = self.0.read().unwrap_or_else(|p| p.into_inner());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

/// `/metrics` (Prometheus text), `/healthz` (the process runs) and `/readyz`.
pub fn ops_router(metrics: MetricsRegistry, readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    match metrics.encode() {
                        Ok(text) => (
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
                let ready = readiness.get();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_reasons_are_a_fixed_set() {
        for (field, reason) in [
            ("url", "url"),
            ("props.plan", "props"),
            ("props.\"}\n# EOF", "props"),
            ("revenue.amount", "revenue"),
            ("ts", "ts"),
            ("id", "id"),
            ("colour\"} 1\nfake_metric 1\n# EOF", "other"),
            ("other", "other"),
            ("", "other"),
        ] {
            assert_eq!(rejection_reason(field), reason, "{field:?}");
        }
        // Whatever a client sends, the metric text has one series per reason at most.
        let metrics = CollectorMetrics::default();
        let registry = MetricsRegistry::default();
        registry.register_with(|r| metrics.register(r));
        for i in 0..500 {
            metrics.rejected("acme", &format!("props.k{i}\"}} 9\n# EOF"));
            metrics.rejected("acme", &format!("key-{i}"));
        }
        let text = registry.encode().unwrap();
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("sightline_collector_events_total"))
            .collect();
        assert_eq!(series.len(), 2, "{text}");
        assert!(
            text.contains("reason=\"props\"} 500") && text.contains("reason=\"other\"} 500"),
            "{text}"
        );
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn days_per_identity_are_one_series_per_identity_and_gone_ones_show_zero() {
        use sightline_core::warehouse::processing::IdentityDays;
        let metrics = ProcessingMetrics::default();
        let registry = MetricsRegistry::default();
        registry.register_with(|r| metrics.register(r));
        metrics.record(
            "acme",
            &IdentityDays {
                days: [("v3".to_string(), 400), ("v4".to_string(), 2)].into(),
                mixed: 1,
                total: 401,
            },
        );
        metrics.record(
            "acme",
            &IdentityDays {
                days: [("v4".to_string(), 401)].into(),
                mixed: 0,
                total: 401,
            },
        );
        let text = registry.encode().unwrap();
        let mut series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("sightline_day_processing"))
            .collect();
        series.sort_unstable();
        assert_eq!(
            series,
            [
                "sightline_day_processing_identity{tenant=\"acme\",identity=\"v3\"} 0",
                "sightline_day_processing_identity{tenant=\"acme\",identity=\"v4\"} 401",
                "sightline_day_processing_mixed{tenant=\"acme\"} 0",
            ],
            "{text}"
        );
    }
}
