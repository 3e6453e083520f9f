//! Drift: what the operator owns, found different from what the spec says, not because the
//! spec changed but because someone (or something) changed it behind the operator's back.
//!
//! Telling drift from a change the operator is about to make: every Kubernetes object the
//! operator applies carries the digest of what it applied (`DIGEST_ANNOTATION`), and the
//! status records the digests of the topic specs and of the DDL plan it last applied. While
//! the desired digest equals the recorded one, any difference is drift; when it does not,
//! the spec (or the operator) changed and the difference is the change to make.
//!
//! A Kubernetes object has drifted when a field the operator sets holds another value (or is
//! gone): `differences` compares what the operator applies with what the API holds, so
//! fields others add (defaults, other controllers' annotations) never count.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The annotation on every applied object: the digest of the object as applied.
pub const DIGEST_ANNOTATION: &str = "sightline.dev/applied-digest";

/// What drifted, as the metric `sightline_operator_drift_total{kind}` labels it (a fixed set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A Kubernetes object the operator applies (deleted, or a field changed).
    KubernetesObject,
    /// A topic deleted.
    Topic,
    /// A topic's partitions differ from the spec.
    TopicPartitions,
    /// A topic setting the spec owns (retention) changed.
    TopicConfig,
    /// A table or view of the plan is gone.
    TableMissing,
    /// A table or view exists with another definition than the plan's.
    TableDefinition,
    /// The signing Secret was deleted or its key replaced.
    SigningSecret,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::KubernetesObject,
        Kind::Topic,
        Kind::TopicPartitions,
        Kind::TopicConfig,
        Kind::TableMissing,
        Kind::TableDefinition,
        Kind::SigningSecret,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Kind::KubernetesObject => "kubernetes_object",
            Kind::Topic => "topic",
            Kind::TopicPartitions => "topic_partitions",
            Kind::TopicConfig => "topic_config",
            Kind::TableMissing => "table_missing",
            Kind::TableDefinition => "table_definition",
            Kind::SigningSecret => "signing_secret",
        }
    }

    /// How a message names it.
    pub fn noun(self) -> &'static str {
        match self {
            Kind::KubernetesObject => "object",
            Kind::Topic => "topic",
            Kind::TopicPartitions => "topic partitions",
            Kind::TopicConfig => "topic config",
            Kind::TableMissing => "table",
            Kind::TableDefinition => "table definition",
            Kind::SigningSecret => "signing secret",
        }
    }
}

/// What the operator did about a drift.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Put back as the spec says (an Event says so).
    Repaired,
    /// Only reported: `driftPolicy: Report`, a repair that would destroy data, a paused
    /// tenant, or something no repair can undo (a topic grown beyond the spec).
    Reported,
}

/// One drift found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub kind: Kind,
    /// What drifted: `Deployment analytics/acme-collector`, a topic, `db.table`.
    pub object: String,
    /// How it differs.
    pub detail: String,
    pub outcome: Outcome,
}

impl Found {
    pub fn new(kind: Kind, object: impl Into<String>, detail: impl Into<String>, outcome: Outcome) -> Self {
        Self {
            kind,
            object: object.into(),
            detail: detail.into(),
            outcome,
        }
    }

    /// `topic sightline.acme.events.dlq: deleted`
    pub fn describe(&self) -> String {
        format!("{} {}: {}", self.kind.noun(), self.object, self.detail)
    }
}

/// A short, stable digest of a JSON value: the first 16 hex digits of the SHA-256 of its
/// serialization (objects' keys are sorted: `serde_json` maps here are `BTreeMap`s).
pub fn digest(value: &Value) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    hex16(&Sha256::digest(bytes))
}

/// The first 16 hex digits of a hash.
pub fn hex16(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The paths at which `live` does not hold what `desired` sets. Maps: every key of
/// `desired` must be in `live` with a matching value (keys only `live` has are others').
/// Lists of objects: every desired element must match a live element (the one with the same
/// `name`, when it has one). Lists of scalars must be equal. Kubernetes quantities compare
/// by value (`0.5` is `500m`, `1024Mi` is `1Gi`).
pub fn differences(desired: &Value, live: &Value) -> Vec<String> {
    let mut out = Vec::new();
    diff(desired, live, String::new(), &mut out);
    out
}

fn diff(desired: &Value, live: &Value, path: String, out: &mut Vec<String>) {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            for (key, value) in d {
                let here = format!("{path}.{key}");
                match l.get(key) {
                    Some(lv) => diff(value, lv, here, out),
                    // An empty map or list set by us and absent live is the same thing.
                    None if is_empty(value) => {}
                    None => out.push(here),
                }
            }
        }
        (Value::Array(d), Value::Array(l)) => {
            let objects = d.iter().all(Value::is_object);
            if !objects {
                if d != l {
                    out.push(path);
                }
                return;
            }
            for (i, element) in d.iter().enumerate() {
                let name = element.get("name");
                let candidates: Vec<&Value> = match name {
                    Some(name) => l.iter().filter(|e| e.get("name") == Some(name)).collect(),
                    None => l.iter().collect(),
                };
                let label = match name.and_then(Value::as_str) {
                    Some(n) => format!("{path}[{n}]"),
                    None => format!("{path}[{i}]"),
                };
                if !candidates.iter().any(|c| differences(element, c).is_empty()) {
                    match (name, candidates.first()) {
                        // Name the fields that differ in the element of that name.
                        (Some(_), Some(c)) => diff(element, c, label, out),
                        _ => out.push(label),
                    }
                }
            }
        }
        (Value::String(d), Value::String(l)) if d != l && quantity_eq(d, l) => {}
        (d, l) if d == l => {}
        // Numbers the API may echo as another type (1 vs 1.0).
        (Value::Number(d), Value::Number(l)) if d.as_f64() == l.as_f64() => {}
        _ => out.push(path),
    }
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Null => true,
        _ => false,
    }
}

/// Whether two strings are the same Kubernetes quantity (`500m` and `0.5`, `1Gi` and
/// `1024Mi`). Strings that are not quantities are never equal here.
pub fn quantity_eq(a: &str, b: &str) -> bool {
    match (quantity(a), quantity(b)) {
        (Some(x), Some(y)) => (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs()).max(1.0) * 4.0,
        _ => false,
    }
}

/// A quantity's value: a decimal number and an optional suffix (binary `Ki`..`Ei`, decimal
/// `k`..`E`, milli `m`, or an exponent `e3`).
fn quantity(text: &str) -> Option<f64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(number * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_others_add_are_not_drift_and_ours_are() {
        let desired = json!({
            "metadata": {"labels": {"a": "1"}, "annotations": {}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "collector", "args": ["collector", "--x"], "env": [{"name": "A", "value": "1"}],
                 "resources": {"requests": {"cpu": "0.5", "memory": "1024Mi"}}}
            ]}}}
        });
        let mut live = json!({
            "metadata": {"labels": {"a": "1", "other": "x"}, "resourceVersion": "7"},
            "spec": {"replicas": 2, "revisionHistoryLimit": 10, "template": {"spec": {"containers": [
                {"name": "sidecar", "image": "x"},
                {"name": "collector", "args": ["collector", "--x"], "imagePullPolicy": "IfNotPresent",
                 "env": [{"name": "INJECTED", "value": "y"}, {"name": "A", "value": "1"}],
                 "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}
            ]}}},
            "status": {"replicas": 2}
        });
        assert_eq!(differences(&desired, &live), Vec::<String>::new());
        live["spec"]["replicas"] = json!(5);
        live["metadata"]["labels"].as_object_mut().unwrap().remove("a");
        live["spec"]["template"]["spec"]["containers"][1]["args"] = json!(["collector"]);
        live["spec"]["template"]["spec"]["containers"][1]["env"][1]["value"] = json!("2");
        assert_eq!(
            differences(&desired, &live),
            [
                ".metadata.labels.a",
                ".spec.replicas",
                ".spec.template.spec.containers[collector].args",
                ".spec.template.spec.containers[collector].env[A].value",
            ]
        );
    }

    #[test]
    fn quantities_compare_by_value() {
        assert!(quantity_eq("500m", "0.5"));
        assert!(quantity_eq("1Gi", "1024Mi"));
        assert!(quantity_eq("1k", "1000"));
        assert!(quantity_eq("2e3", "2k"));
        assert!(!quantity_eq("1Gi", "1G"));
        assert!(!quantity_eq("http", "http"));
    }

    #[test]
    fn digests_are_stable_and_short() {
        let a = digest(&json!({"b": 1, "a": [1, 2]}));
        assert_eq!(a.len(), 16);
        assert_eq!(a, digest(&json!({"a": [1, 2], "b": 1})));
        assert_ne!(a, digest(&json!({"a": [2, 1], "b": 1})));
        let labels: std::collections::HashSet<&str> = Kind::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(labels.len(), Kind::ALL.len());
    }
}
