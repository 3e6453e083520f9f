//! The `AnalyticsTenant` custom resource: `sightline.dev/v1alpha1`, cluster-scoped, short
//! name `tenant`, category `sightline`. Its spec is core's `TenantSpec` (one type for the
//! CRD, the YAML files and the tests), flattened into the resource's `spec`; its status is
//! `TenantStatus`. `crd()` is what `sightline crdgen` writes to crds/ (a test fails on drift).
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
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
pub struct AnalyticsTenantSpec {
    #[serde(flatten)]
    pub tenant: TenantSpec,
}

/// What the operator last saw and did. Conditions are `metav1.Condition`s, each with its
/// own `observedGeneration`, so `kubectl wait --for=condition=Ready` and GitOps tools read
/// health without scripts.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `TopicsReady`, `SchemaReady`, `IngestReady`.
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
}

impl TenantStatus {
    /// The condition of a type, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
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
    let body = serde_yaml::to_string(&crd()).expect("a CRD serializes");
    format!("# Generated by `sightline crdgen` from operator/src/crd.rs; do not edit.\n{body}")
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
        assert_eq!(cols, ["Ready", "Reason", "Sites", "Endpoint", "Age"]);
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

#[cfg(test)]
mod drift {
    /// crds/ is generated by `sightline crdgen`; this fails when the code changed and the
    /// file was not regenerated (or the file was edited by hand).
    #[test]
    fn crds_match_the_code() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crds")
            .join(super::CRD_FILE);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            on_disk == super::crd_yaml(),
            "{} drifted from operator/src/crd.rs: run `sightline crdgen` and commit the result",
            path.display()
        );
    }
}
