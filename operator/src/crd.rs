//! The `AnalyticsTenant` custom resource: `sightline.dev/v1alpha1`, cluster-scoped, short
//! name `tenant`, category `sightline`. Its spec is core's `TenantSpec` (one type for the
//! CRD, the YAML files and the tests), flattened into the resource's `spec`; its status is
//! `TenantStatus`. `crd()` is what `sightline crdgen` writes to crds/ (`crate::crds`: a test
//! fails on drift, another checks descriptions, columns, names and CEL rules).
//!
//! Cluster scope: a tenant's database and topics are global resources (one Kafka, one
//! ClickHouse), so the names derived from `metadata.name` are unique by construction; the
//! tenant's workloads go to `spec.ingest.namespace` or the operator's namespace.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sightline_core::spec::TenantSpec;

/// The finalizer that holds a deleted tenant until its topics and database are dropped
/// (policy `Delete`) or an Event says they were kept (`Retain`).
pub const FINALIZER: &str = "sightline.dev/cleanup";

// The resource's spec is exactly core's `TenantSpec`, flattened: the wrapper exists only
// because the derive must sit on a type of this crate, and adds no field.
/// The tenant's sites, limits, goals, topics, warehouse and workloads.
// Clippy reads the printcolumn arguments (`type_ = "string"` twice) as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[kube(
    group = "sightline.dev",
    version = "v1alpha1",
    kind = "AnalyticsTenant",
    plural = "analyticstenants",
    shortname = "tenant",
    category = "sightline",
    status = "TenantStatus",
    derive = "PartialEq",
    doc = "A Sightline tenant: its Kafka topics, ClickHouse database, signing secret and collector, loader and query workloads",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(name = "Sites", type_ = "integer", json_path = ".status.sites"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.collectorEndpoint"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "In-Sync",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"InSync\")].status",
        priority = 1
    ),
    printcolumn(
        name = "Paused",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"ReconciliationPaused\")].status",
        priority = 1
    ),
    printcolumn(
        name = "Schema",
        type_ = "integer",
        json_path = ".status.schemaVersion",
        priority = 1
    )
)]
pub struct AnalyticsTenantSpec {
    #[serde(flatten)]
    pub tenant: TenantSpec,
}

/// What the operator last saw and did. Conditions are `metav1.Condition`s, each with its
/// own `observedGeneration`, so `kubectl wait --for=condition=Ready`, Flux and other kstatus
/// readers tell health without scripts (see `status` for each condition).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// The last generation the operator finished a reconcile of (applied, or refused as
    /// needing a person). It lags `metadata.generation` while a spec change is still being
    /// applied, is retried after an outage, or waits behind the pause annotation: kstatus
    /// then reads the tenant as InProgress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (the sum), `Reconciling` and `Stalled` (kstatus), `TopicsReady`,
    /// `SchemaReady`, `SigningSecretReady`, `CollectorAvailable`, `LoaderAvailable`,
    /// `QueryAvailable`, `InSync`, `ReconciliationPaused`, `RolloutPending`, and
    /// `DeletionBlocked` while a `Delete` cleanup cannot finish.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The schema version the database is at (core's numbered migrations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
    /// The processor version the workloads run (`PIPELINE_VERSION` of their image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline_version: Option<u32>,
    /// Sites on the allow-list (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites: Option<u32>,
    /// In-cluster URL of the collector Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector_endpoint: Option<String>,
    /// In-cluster URL of the query Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_endpoint: Option<String>,
    /// Events in the tenant's topic not yet stored by the loaders (the consumer group's lag,
    /// summed over partitions), as of the last reconcile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loader_lag: Option<i64>,
    /// The first 16 hex digits of the SHA-256 of the signing key the operator created or
    /// found: tells a deleted or replaced key from the tenant's own without revealing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_fingerprint: Option<String>,
    /// Digest of the topic specs last applied: while it matches the spec, a topic that
    /// differs from the spec has drifted (rather than waiting for a spec change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_topics_digest: Option<String>,
    /// Digest of the DDL plan last applied, likewise for tables and views.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_schema_digest: Option<String>,
}

impl TenantStatus {
    /// The condition of a type, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}

/// `sightline.dev/pause-reconciliation: "true"` on a tenant: the operator writes nothing
/// (no Kubernetes object, topic, table or finalizer) and still refreshes the status, with
/// `ReconciliationPaused=True`.
pub const PAUSE_ANNOTATION: &str = "sightline.dev/pause-reconciliation";

/// `sightline.dev/regenerate-signing-secret: "true"` on a tenant: once the operator has
/// reported the signing Secret missing (`SigningSecretReady=False`, `SecretMissing`), it
/// creates a new key, restarts the pods that read it, and removes the annotation, so a later
/// deletion is reported again instead of regenerated.
pub const REGENERATE_SECRET_ANNOTATION: &str = "sightline.dev/regenerate-signing-secret";

impl AnalyticsTenant {
    /// Whether an annotation is set to `"true"`.
    pub fn annotated(&self, key: &str) -> bool {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .is_some_and(|v| v == "true")
    }
}

/// The CRD as `kubectl apply` takes it. The derive's schema plus what it cannot express:
/// a CEL rule on `metadata.name` (the name becomes database and topic names, so it must be
/// a valid tenant name).
pub fn crd() -> CustomResourceDefinition {
    let mut crd = AnalyticsTenant::crd();
    for version in &mut crd.spec.versions {
        if let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) {
            let rule = k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::ValidationRule {
                rule: "self.metadata.name.size() <= 40 && self.metadata.name.matches('^[a-z]([a-z0-9-]*[a-z0-9])?$')"
                    .into(),
                message: Some(
                    "metadata.name: 1-40 lowercase letters, digits and '-', starting with a letter (it names the tenant's database and topics)"
                        .into(),
                ),
                ..Default::default()
            };
            schema.x_kubernetes_validations.get_or_insert_with(Vec::new).push(rule);
        }
    }
    crd
}

/// The CRD as YAML: the content of crds/analyticstenants.sightline.dev.yaml.
pub fn crd_yaml() -> String {
    crate::crds::to_yaml(&crd())
}

/// The file crds/ holds the CRD in.
pub const CRD_FILE: &str = "analyticstenants.sightline.dev.yaml";

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> serde_json::Value {
        let crd = serde_json::to_value(crd()).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    #[test]
    fn cluster_scoped_with_names_printer_columns_and_status() {
        let crd = crd();
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.group, "sightline.dev");
        assert_eq!(crd.spec.names.short_names, Some(vec!["tenant".to_string()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["sightline".to_string()]));
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let cols: Vec<&str> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            cols,
            ["Ready", "Reason", "Sites", "Endpoint", "Age", "In-Sync", "Paused", "Schema"]
        );
    }

    #[test]
    fn the_schema_carries_bounds_patterns_list_keys_and_cel() {
        let s = schema();
        let spec = &s["properties"]["spec"];
        let partitions = &spec["properties"]["kafka"]["properties"]["partitions"];
        assert_eq!(partitions["minimum"].as_f64(), Some(1.0));
        assert_eq!(partitions["maximum"].as_f64(), Some(1000.0));
        let allowed = &spec["properties"]["sites"]["properties"]["allowed"];
        assert_eq!(allowed["x-kubernetes-list-type"], "map");
        assert_eq!(allowed["x-kubernetes-list-map-keys"][0], "id");
        assert!(allowed["items"]["properties"]["id"]["pattern"].is_string());
        assert_eq!(spec["properties"]["goals"]["x-kubernetes-list-map-keys"][0], "name");
        assert_eq!(
            spec["properties"]["ga4"]["x-kubernetes-list-map-keys"][0],
            "measurementId"
        );
        let rules: Vec<&str> = spec["x-kubernetes-validations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule"].as_str().unwrap())
            .collect();
        assert!(
            rules.iter().any(|r| r.contains("oldSelf.clickhouse.database")),
            "{rules:?}"
        );
        assert!(
            rules.iter().any(|r| r.contains("oldSelf.clickhouse.cluster")),
            "{rules:?}"
        );
        assert!(s["x-kubernetes-validations"][0]["rule"]
            .as_str()
            .unwrap()
            .contains("metadata.name"));
        let conditions = &s["properties"]["status"]["properties"]["conditions"];
        assert_eq!(conditions["x-kubernetes-list-map-keys"][0], "type");
        let policy = &spec["properties"]["deletionPolicy"];
        assert_eq!(policy["enum"], serde_json::json!(["Retain", "Delete"]));
    }

    #[test]
    fn the_resource_reads_fields_it_does_not_know() {
        // An operator one version behind must still read what a newer CRD admitted.
        let obj: AnalyticsTenant = serde_json::from_value(serde_json::json!({
            "apiVersion": "sightline.dev/v1alpha1",
            "kind": "AnalyticsTenant",
            "metadata": {"name": "acme"},
            "spec": {"sites": {"open": true, "futureKnob": 1}, "brandNewSection": {"x": 1}},
        }))
        .unwrap();
        assert!(obj.spec.tenant.sites.open);
    }
}
