//! The `Reprocess` custom resource: `sightline.dev/v1alpha1`, namespaced, short name `rp`,
//! category `sightline`. Its spec is core's `ReprocessSpec` (one type for the resource,
//! `sightline reprocess -f` and the standalone admin endpoint), flattened into `spec` and
//! immutable once admitted (a CEL rule: a different range is a new resource). Its status is
//! `ReprocessStatus`: phase, `Complete`/`Failed` conditions (so `kubectl wait
//! --for=condition=Complete reprocess/NAME` works), progress, per-day results and the
//! checkpoint a recreated Job resumes from.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{CustomResourceDefinition, ValidationRule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sightline_core::reprocess::ReprocessSpec;

/// The condition `kubectl wait --for=condition=Complete` waits for.
pub const COMPLETE: &str = "Complete";
/// True when the run ended without finishing its days (or was refused).
pub const FAILED: &str = "Failed";
/// The finalizer the operator sets while a Job may be replaying days: deleting the
/// Reprocess then lets the pod stop after the days under way and leaves an Event with the
/// finished days before the object (and its status) goes. Set when the Job is created,
/// removed once the run is final, so a queued, refused or finished Reprocess is deleted at
/// once, operator or not.
pub const FINALIZER: &str = "sightline.dev/cancel";

// The spec is exactly core's `ReprocessSpec`, flattened: the wrapper exists only because
// the derive must sit on a type of this crate.
/// A replay of a tenant's whole UTC days from its raw events (docs/replay.md).
// Clippy reads the printcolumn arguments (`type_ = "string"` repeated) as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[kube(
    group = "sightline.dev",
    version = "v1alpha1",
    kind = "Reprocess",
    plural = "reprocesses",
    shortname = "rp",
    category = "sightline",
    namespaced,
    status = "ReprocessStatus",
    derive = "PartialEq",
    doc = "A replay of a tenant's UTC days from its raw events with the processor of the image the Job runs",
    printcolumn(name = "Tenant", type_ = "string", json_path = ".spec.tenantRef"),
    printcolumn(name = "From", type_ = "string", json_path = ".spec.from"),
    printcolumn(name = "To", type_ = "string", json_path = ".spec.to"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Progress", type_ = "string", json_path = ".status.progress.summary"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
pub struct ReprocessResourceSpec {
    #[serde(flatten)]
    pub reprocess: ReprocessSpec,
}

/// Where a Reprocess is in its life. Pending (admitted, queued or its Job starting) ->
/// Running (the Job's pod replays days) -> Succeeded, Failed or Cancelled (final).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Phase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl Phase {
    /// Whether nothing more happens to the resource.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Cancelled)
    }
}

/// How far the run is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReprocessProgress {
    /// Days finished (swapped, or compared in a dry run), by any pod of this run.
    pub days_done: u32,
    /// Days of the range.
    pub days_total: u32,
    /// Raw rows read and processed by the pods of this run (a day a stopped pod had begun
    /// is read again by the next).
    pub rows_read: u64,
    /// Rows written to staging tables by the pods of this run (replayed and copied rows).
    pub rows_written: u64,
    /// `daysDone/daysTotal` for `kubectl get`.
    pub summary: String,
}

impl ReprocessProgress {
    pub fn new(days_done: u32, days_total: u32, rows_read: u64, rows_written: u64) -> Self {
        Self {
            days_done,
            days_total,
            rows_read,
            rows_written,
            summary: format!("{days_done}/{days_total}"),
        }
    }
}

/// A metric of a day (or of the finished days summed) now and as the replay makes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricDelta {
    /// visitors, visits, pageviews or bounce_rate (percent; per day only).
    pub metric: String,
    /// The value the live tables give now.
    pub current: f64,
    /// The value the replay gives.
    pub recomputed: f64,
}

/// One finished day.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DayResult {
    /// The UTC day, `YYYY-MM-DD`.
    pub day: String,
    /// The processing identities that had made the replayed sites' rows, with their rows.
    #[serde(default)]
    pub processing_before: BTreeMap<String, u64>,
    /// The identity the day was replayed with.
    pub processing_after: String,
    /// Raw rows of the replayed sites read and processed.
    pub raw_rows: u64,
    /// Rows of other sites copied unchanged.
    pub copied_rows: u64,
    /// Raw rows a writer stored during a forced replay, processed after the swap.
    pub caught_up: u64,
    /// False in a dry run.
    pub swapped: bool,
    /// Dry runs: the day's totals now and as the replay would make them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<MetricDelta>,
}

impl DayResult {
    /// Whether the day is worth keeping in the bounded list: a dry run changes a metric,
    /// the day had been made by another processing identity, or rows were caught up.
    pub fn changed(&self) -> bool {
        self.deltas.iter().any(|d| d.current != d.recomputed)
            || self.processing_before.keys().any(|p| *p != self.processing_after)
            || self.caught_up > 0
    }
}

/// Every finished day summed, each counted once whichever pod finished it (the per-day
/// list keeps only some days).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReprocessTotals {
    /// Days finished.
    pub days: u32,
    /// Finished days that changed (see `days[]`: a dry-run metric differs, another
    /// processing identity had made the day, or rows were caught up).
    pub days_changed: u32,
    /// Raw rows of the replayed sites read and processed.
    pub raw_rows: u64,
    /// Rows of other sites copied unchanged.
    pub copied_rows: u64,
    /// Raw rows writers stored during forced replays, processed after the swaps.
    pub caught_up: u64,
    /// The identities that had made the finished days, with their rows.
    #[serde(default)]
    pub processing_before: BTreeMap<String, u64>,
    /// Dry runs: visitors (a sum of daily visitors), visits and pageviews of the finished
    /// days, now and recomputed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deltas: Vec<MetricDelta>,
}

/// Where a run resumes from: the processing identity its days are replayed with and the
/// days it finished. The rest of the run's identity (tenant, range, sites, dry run) is the
/// spec's, fixed once admitted. A pod of another processor refuses to resume (the days done
/// would mix two processors).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusCheckpoint {
    /// The processing identity the days are replayed with (`v3`, `v3+bots`).
    pub processing: String,
    /// Days finished, as ordered, disjoint ranges: `YYYY-MM-DD` for one day,
    /// `YYYY-MM-DD/YYYY-MM-DD` (ISO 8601, both ends included) for several. Ranges keep the
    /// status small: a 10-year range in the worst order stays under 30 KiB.
    #[serde(default)]
    pub done: Vec<String>,
}

/// What the operator and the Job's pod last reported. Bounded whatever the range: the
/// checkpoint as day ranges, per-day details for at most `MAX_DAY_RESULTS` days, the rest
/// in `totals`, messages cut at `MAX_MESSAGE` bytes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReprocessStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default)]
    pub phase: Phase,
    /// `Complete` and `Failed`, `metav1.Condition`s.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ReprocessProgress>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<ReprocessTotals>,
    /// Finished days in day order, at most `MAX_DAY_RESULTS` (20): the days that changed
    /// and the latest ones; `totals` counts them all.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["day"]))]
    pub days: Vec<DayResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// What is happening or happened, in a sentence (the queue, the refusal, the outcome).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The Job running the replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<StatusCheckpoint>,
}

/// The most days `status.days` details.
pub const MAX_DAY_RESULTS: usize = 20;
/// The longest message (`status.message`, a condition's) in bytes.
pub const MAX_MESSAGE: usize = 1024;

impl ReprocessStatus {
    /// The condition of a type, if set.
    pub fn condition(&self, type_: &str) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }

    /// The phase (`Pending` when none was written yet).
    pub fn phase(&self) -> Phase {
        self.phase
    }
}

/// The CRD as `kubectl apply` takes it: the derive's schema plus the immutability of the
/// spec (CEL `self == oldSelf`): a Job replays what was admitted, and a changed range would
/// make the status's checkpoint describe another run.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = Reprocess::crd();
    for version in &mut crd.spec.versions {
        let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) else {
            continue;
        };
        let Some(spec) = schema.properties.as_mut().and_then(|p| p.get_mut("spec")) else {
            continue;
        };
        spec.x_kubernetes_validations
            .get_or_insert_with(Vec::new)
            .push(ValidationRule {
                rule: "self == oldSelf".into(),
                message: Some("spec is immutable: delete this Reprocess and create another".into()),
                ..Default::default()
            });
    }
    crd
}

/// The file crds/ holds the CRD in.
pub const CRD_FILE: &str = "reprocesses.sightline.dev.yaml";

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> serde_json::Value {
        let crd = serde_json::to_value(crd()).unwrap();
        crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
    }

    #[test]
    fn namespaced_with_names_printer_columns_and_status() {
        let crd = crd();
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.group, "sightline.dev");
        assert_eq!(crd.spec.names.kind, "Reprocess");
        assert_eq!(crd.spec.names.plural, "reprocesses");
        assert_eq!(crd.spec.names.short_names, Some(vec!["rp".to_string()]));
        assert_eq!(crd.spec.names.categories, Some(vec!["sightline".to_string()]));
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(v.subresources.as_ref().unwrap().status.is_some());
        let cols: Vec<(&str, &str)> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| (c.name.as_str(), c.json_path.as_str()))
            .collect();
        assert_eq!(
            cols,
            [
                ("Tenant", ".spec.tenantRef"),
                ("From", ".spec.from"),
                ("To", ".spec.to"),
                ("Phase", ".status.phase"),
                ("Progress", ".status.progress.summary"),
                ("Age", ".metadata.creationTimestamp")
            ]
        );
    }

    #[test]
    fn the_schema_is_the_core_spec_with_bounds_patterns_and_immutability() {
        let s = schema();
        let spec = &s["properties"]["spec"];
        let props = &spec["properties"];
        for field in ["tenantRef", "from", "to", "sites", "dryRun", "parallelism", "force"] {
            assert!(props[field].is_object(), "spec.{field} missing: {spec}");
        }
        let required: Vec<&str> = spec["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap())
            .collect();
        assert_eq!(required, ["from", "tenantRef", "to"]);
        assert_eq!(props["parallelism"]["minimum"].as_f64(), Some(1.0));
        assert_eq!(props["parallelism"]["maximum"].as_f64(), Some(16.0));
        assert_eq!(props["tenantRef"]["maxLength"].as_u64(), Some(40));
        let date = regex_lite(props["from"]["pattern"].as_str().unwrap());
        assert!(date("2026-11-01") && date("2026-11-01T06:00:00Z") && date("2026-11-01T06:00:00.5+01:00"));
        assert!(!date("yesterday") && !date("2026-11-01 06:00"));
        assert!(props["sites"]["items"]["pattern"].is_string());
        assert_eq!(spec["x-kubernetes-validations"][0]["rule"], "self == oldSelf");
        let status = &s["properties"]["status"]["properties"];
        assert_eq!(status["conditions"]["x-kubernetes-list-map-keys"][0], "type");
        assert_eq!(status["days"]["x-kubernetes-list-map-keys"][0], "day");
        assert_eq!(
            status["phase"]["enum"],
            serde_json::json!(["Pending", "Running", "Succeeded", "Failed", "Cancelled"])
        );
        for field in ["progress", "totals", "startedAt", "finishedAt", "message", "checkpoint"] {
            assert!(status[field].is_object(), "status.{field} missing");
        }
    }

    /// A predicate matching the schema's pattern (the API server's regexes are RE2, which
    /// the `regex` crate follows).
    fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
        let re = regex::Regex::new(pattern).unwrap();
        move |s| re.is_match(s)
    }

    #[test]
    fn a_resource_reads_back_with_its_status() {
        let obj: Reprocess = serde_json::from_value(serde_json::json!({
            "apiVersion": "sightline.dev/v1alpha1",
            "kind": "Reprocess",
            "metadata": {"name": "fix", "namespace": "analytics"},
            "spec": {"tenantRef": "acme", "from": "2026-11-01", "to": "2026-11-08", "dryRun": true},
            "status": {"phase": "Running", "progress": {"daysDone": 2, "daysTotal": 7, "rowsRead": 10,
                        "rowsWritten": 10, "summary": "2/7"}},
        }))
        .unwrap();
        assert!(obj.spec.reprocess.dry_run);
        assert_eq!(obj.spec.reprocess.parallelism, 1);
        let status = obj.status.unwrap();
        assert_eq!(status.phase(), Phase::Running);
        assert_eq!(status.progress, Some(ReprocessProgress::new(2, 7, 10, 10)));
    }
}
