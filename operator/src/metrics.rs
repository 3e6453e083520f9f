//! The operator's Prometheus metrics: reconciles by outcome, errors by reason, how long a
//! reconcile takes, and drift found by kind. Labels are bounded: outcomes, reasons and
//! drift kinds are fixed words.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok` or `error`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `Error::reason`: KafkaUnavailable, Conflict, ...
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DriftLabels {
    /// `drift::Kind::label`: kubernetes_object, topic, topic_partitions, topic_config,
    /// table_missing, table_definition, signing_secret.
    pub kind: String,
}

#[derive(Clone)]
pub struct Metrics {
    /// Drift found, by kind: each repair, and a reported drift once (until it changes).
    pub drift: Family<DriftLabels, Counter>,
    pub reconciles: Family<OutcomeLabels, Counter>,
    pub errors: Family<ReasonLabels, Counter>,
    pub duration: Histogram,
    /// 1 while this replica holds the leader lease.
    pub leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            drift: Family::default(),
            reconciles: Family::default(),
            errors: Family::default(),
            // 10 ms .. ~160 s: a reconcile waits on Kafka and ClickHouse.
            duration: Histogram::new(exponential_buckets(0.01, 2.0, 15)),
            leader: Gauge::default(),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "sightline_operator_reconciles",
            "Reconciles by outcome",
            self.reconciles.clone(),
        );
        registry.register(
            "sightline_operator_reconcile_errors",
            "Failed reconciles by reason",
            self.errors.clone(),
        );
        registry.register(
            "sightline_operator_reconcile_duration_seconds",
            "Time one reconcile took",
            self.duration.clone(),
        );
        registry.register(
            "sightline_operator_drift",
            "Drift found in what the operator owns, by kind (repaired or reported)",
            self.drift.clone(),
        );
        registry.register(
            "sightline_operator_leader",
            "1 while this replica holds the leader lease",
            self.leader.clone(),
        );
    }

    pub fn reconciled(&self, seconds: f64, error: Option<&str>) {
        self.duration.observe(seconds);
        let outcome = if error.is_some() { "error" } else { "ok" };
        self.reconciles
            .get_or_create(&OutcomeLabels {
                outcome: outcome.into(),
            })
            .inc();
        if let Some(reason) = error {
            self.errors.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
        }
    }

    /// Counts one drift of `kind`.
    pub fn drift_found(&self, kind: crate::drift::Kind) {
        self.drift
            .get_or_create(&DriftLabels {
                kind: kind.label().into(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_is_counted_by_kind_under_its_name() {
        let metrics = Metrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.drift_found(crate::drift::Kind::Topic);
        metrics.drift_found(crate::drift::Kind::Topic);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("sightline_operator_drift_total{kind=\"topic\"} 2"),
            "{text}"
        );
    }
}
