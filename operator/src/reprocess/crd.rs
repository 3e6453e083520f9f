//! The `Reprocess` custom resource: `sightline.dev/v1alpha1`, namespaced, short name `rp`,
//! category `sightline`. Its spec is core's `ReprocessSpec` (one type for the resource,
//! `sightline reprocess -f` and the standalone admin endpoint), flattened into `spec` and
//! the resource's own fields beside it (`approval`, `approvedPlanHash`, `maxStallRestarts`).
//! Everything but `approvedPlanHash` is immutable once admitted (a CEL rule: a different
//! range is a new resource). Its status is `ReprocessStatus`: phase, `metav1.Condition`s
//! each with its own `observedGeneration` (`Approved`, `Progressing`, `Stalled`, `Complete`,
//! `Failed`: `kubectl wait --for=condition=Complete reprocess/NAME` works), the plan, the
//! progress, per-day results and the ledger a recreated Job resumes from.

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
/// True once the current plan may run: at once under `approval: Automatic`, when
/// `spec.approvedPlanHash` equals `status.plan.hash` under `Manual`. False with
/// `AwaitingApproval`, `PlanChanged` or `HashMismatch`; Unknown while no plan can be made
/// (`ImageDigestUnknown`, `WarehouseUnavailable`).
pub const APPROVED: &str = "Approved";
/// True while a Job works towards the outcome (reasons `JobStarting`, `PodStarting`,
/// `Running`); False when nothing moves (`Queued`, `AwaitingApproval`, or the outcome).
pub const PROGRESSING: &str = "Progressing";
/// True when the run's pod stopped reporting (`NoHeartbeat`: no heartbeat for
/// `HEARTBEAT_TIMEOUT`; `PodGone`: its Job has no pod; `JobNotDeleted`: the Job a stall
/// replaces is still held in deletion after `DELETION_PATIENCE`); the operator replaces the
/// Job and the next pod resumes. False (`Heartbeating`, `NotStarted`) otherwise.
pub const STALLED: &str = "Stalled";
/// Every condition type, in the order the status lists them.
pub const CONDITION_TYPES: [&str; 5] = [APPROVED, PROGRESSING, STALLED, COMPLETE, FAILED];
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
    printcolumn(
        name = "Approved",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Approved\")].status"
    ),
    printcolumn(name = "Progress", type_ = "string", json_path = ".status.progress.summary"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ReprocessResourceSpec {
    #[serde(flatten)]
    pub reprocess: ReprocessSpec,
    /// `Automatic` (default): the plan runs as soon as it is computed. `Manual`: nothing
    /// runs until `approvedPlanHash` equals `status.plan.hash` (`kubectl sightline
    /// reprocess approve NAME --hash HASH`, HASH the hash `kubectl sightline reprocess plan
    /// NAME` printed). Cannot change after creation.
    #[serde(default)]
    pub approval: Approval,
    /// Under `approval: Manual`, the hash of the plan (`status.plan.hash`) that may run: 64
    /// lowercase hex digits. The one field that can change after creation; a hash of an
    /// earlier plan does not approve a recomputed one (`Approved=False`, `PlanChanged`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9a-f]{64}$"))]
    pub approved_plan_hash: Option<String>,
    /// How many times a stalled run (no heartbeat for 60 s, or its Job without a pod) gets
    /// its Job replaced before it fails with reason `StalledTooOften`; 0 to 10, default 3.
    /// Cannot change after creation.
    #[serde(default = "default_max_stall_restarts")]
    #[schemars(range(min = 0, max = 10))]
    pub max_stall_restarts: u32,
}

/// The default of `spec.maxStallRestarts`.
pub const DEFAULT_MAX_STALL_RESTARTS: u32 = 3;

fn default_max_stall_restarts() -> u32 {
    DEFAULT_MAX_STALL_RESTARTS
}

impl ReprocessResourceSpec {
    /// The resource spec for a core spec, with the defaults (Automatic, 3 restarts).
    pub fn new(reprocess: ReprocessSpec) -> Self {
        Self {
            reprocess,
            approval: Approval::Automatic,
            approved_plan_hash: None,
            max_stall_restarts: DEFAULT_MAX_STALL_RESTARTS,
        }
    }

    /// Whether `hash` is the plan this spec approves (always under `Automatic`).
    pub fn approves(&self, hash: &str) -> bool {
        match self.approval {
            Approval::Automatic => true,
            Approval::Manual => self.approved_plan_hash.as_deref() == Some(hash),
        }
    }
}

/// Who approves a Reprocess's plan: `Automatic` (it runs as soon as it is computed) or
/// `Manual` (it runs once `spec.approvedPlanHash` names it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Approval {
    #[default]
    Automatic,
    Manual,
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

/// How far the run is. Written by the Job's pod: at its start, at every heartbeat (at
/// least every 15 s while a day runs) and after every day.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReprocessProgress {
    /// Days of the range.
    pub days_total: u32,
    /// Days finished (swapped, or compared in a dry run), by any pod of this run.
    pub days_succeeded: u32,
    /// Days that failed (the run stops at the first: `Failed`, reason `ReplayFailed`).
    #[serde(default)]
    pub days_failed: u32,
    /// Days neither finished nor failed.
    #[serde(default)]
    pub days_pending: u32,
    /// The earliest day a pod is replaying now (`YYYY-MM-DD`), absent between days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_day: Option<String>,
    /// Raw rows read and processed by the pods of this run (a day a stopped pod had begun
    /// is read again by the next).
    pub rows_read: u64,
    /// Rows written to staging tables by the pods of this run (replayed and copied rows).
    pub rows_written: u64,
    /// Uncompressed bytes of `events_raw`'s partitions of the finished days (the plan's
    /// per-day bytes).
    #[serde(default)]
    pub bytes_read: u64,
    /// `daysSucceeded` of `daysTotal` in percent, rounded down (100 only when all are done).
    #[serde(default)]
    pub percent: u32,
    /// When the run should end: from this run's measured rate (`etaBasis: MeasuredRate`,
    /// the time since `startedAt` per finished day) once a day is done, before that the
    /// plan's estimate (`PlanEstimate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta: Option<Time>,
    /// What `eta` is based on: `MeasuredRate` or `PlanEstimate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_basis: Option<String>,
    /// When the first pod of this run started replaying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// The last sign of life of the run's pod; the operator sets `Stalled` when it is older
    /// than 60 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_time: Option<Time>,
    /// `daysSucceeded/daysTotal` for `kubectl get`.
    pub summary: String,
}

impl ReprocessProgress {
    /// Progress with the day counts and rows; the rest (current day, bytes, ETA, times)
    /// left empty for the caller.
    pub fn new(days_succeeded: u32, days_total: u32, rows_read: u64, rows_written: u64) -> Self {
        Self {
            days_total,
            days_succeeded,
            days_pending: days_total.saturating_sub(days_succeeded),
            rows_read,
            rows_written,
            percent: percent(days_succeeded, days_total),
            summary: format!("{days_succeeded}/{days_total}"),
            ..Default::default()
        }
    }

    /// Sets the day counts (and what follows from them: pending, percent, summary).
    pub fn set_days(&mut self, succeeded: u32, failed: u32, total: u32) {
        self.days_total = total;
        self.days_succeeded = succeeded;
        self.days_failed = failed;
        self.days_pending = total.saturating_sub(succeeded).saturating_sub(failed);
        self.percent = percent(succeeded, total);
        self.summary = format!("{succeeded}/{total}");
    }
}

/// `done` of `total` in percent, rounded down: 100 only when every day is done.
fn percent(done: u32, total: u32) -> u32 {
    if total == 0 {
        return 0;
    }
    u32::try_from(u64::from(done.min(total)) * 100 / u64::from(total)).unwrap_or(100)
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

/// Where a run resumes from, and the ledger of what it swapped: the processing identity its
/// days are replayed with and the days it finished, grouped by the plan hash each was
/// swapped (or compared) under. The rest of the run's identity (tenant, range, sites, dry
/// run) is the spec's, fixed once admitted. A pod of another processor refuses to resume
/// (the days done would mix two processors).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusCheckpoint {
    /// The processing identity the days are replayed with (`v5`, or `v5+bots` for a tenant
    /// whose bot filtering is off).
    pub processing: String,
    /// Days finished, per plan hash they were swapped under (a run has one plan once it
    /// started, so one entry; an entry per plan keeps the ledger honest if that ever
    /// changes).
    #[serde(default)]
    pub ledger: Vec<LedgerEntry>,
}

/// Days finished under one plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntry {
    /// `status.plan.hash` of the plan the days were swapped under.
    pub plan_hash: String,
    /// The days, as ordered, disjoint ranges: `YYYY-MM-DD` for one day,
    /// `YYYY-MM-DD/YYYY-MM-DD` (ISO 8601, both ends included) for several. Ranges keep the
    /// status small: a 10-year range in the worst order stays under 30 KiB.
    pub days: Vec<String>,
}

impl StatusCheckpoint {
    /// Every day of the ledger as ranges (the union of its entries); a range that does not
    /// parse is an error naming it.
    pub fn done(&self) -> Result<Vec<String>, String> {
        let mut all = std::collections::BTreeSet::new();
        for entry in &self.ledger {
            all.extend(super::status::days_of_ranges(&entry.days)?);
        }
        Ok(super::status::day_ranges(&all))
    }
}

/// What the operator computed before the run, with read-only queries on the warehouse; the
/// Job runs exactly this (`hash`), and under `approval: Manual` only once approved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReprocessPlan {
    /// SHA-256 (hex) over the spec's replay fields (tenant, range, sites, dry run, force,
    /// parallelism), every day with its `events_raw` rows (a day not sealed yet by
    /// its day alone: it still receives events), the partitions replaced, the processing
    /// identity, the pipeline version and the image (docs/replay.md, "The plan"). Not
    /// covered: `computedAt`, the ETA, the approval fields.
    pub hash: String,
    /// When the plan was computed.
    pub computed_at: Time,
    /// The processing identity the days get (`v5`, or `v5+bots` for a tenant whose bot
    /// filtering is off).
    pub processing: String,
    /// The processor's `PIPELINE_VERSION`.
    pub pipeline_version: u32,
    /// The image the Job runs, by digest (`repository@sha256:…`).
    pub image: String,
    /// The first UTC day of the range (`YYYY-MM-DD`, included).
    pub first_day: String,
    /// The last UTC day of the range (`YYYY-MM-DD`, included).
    pub last_day: String,
    /// Days of the range.
    pub days: u32,
    /// Days of the range not sealed yet (`spec.force`): their rows still change, so the
    /// hash covers them by day only.
    pub unsealed_days: u32,
    /// Rows of `events_raw`'s partitions of the range (every site: a day's partition is
    /// replaced whole, other sites' rows copied).
    pub rows: u64,
    /// Uncompressed bytes of those partitions (shown, not hashed: merging parts can move
    /// them with no event added).
    pub bytes: u64,
    /// `Day` (ranges of at most 62 days) or `Month`: the unit of `breakdown`.
    pub breakdown_by: String,
    /// Rows and bytes per day, or per month for longer ranges (the hash covers every day's
    /// rows either way); bounded so the status stays small.
    pub breakdown: Vec<PlanPeriod>,
    /// The partitions the run replaces, per table (none in a dry run).
    #[serde(default)]
    pub partitions: Vec<PlanPartitions>,
    /// The estimated run time in seconds: `rows` at the documented throughput
    /// (`etaBasis`).
    pub eta_seconds: u64,
    /// What the estimate is based on: `DocumentedThroughput`, 240,000 raw rows/s for one
    /// pod (BENCHMARKS.md, "Replay throughput": one 5 M-row day at 245,646 rows/s, rounded
    /// down).
    pub eta_basis: String,
}

/// Rows and bytes of a day or a month of the plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanPeriod {
    /// `YYYY-MM-DD` or `YYYY-MM`.
    pub period: String,
    /// Days of the range in the period.
    pub days: u32,
    /// Rows of `events_raw`'s partitions of those days.
    pub rows: u64,
    /// Their uncompressed bytes.
    pub bytes: u64,
}

/// The partitions of one table the run replaces: every partition id from `first` to
/// `last` (`toYYYYMMDD` days or `toYYYYMM` months), `count` of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanPartitions {
    /// The table (`events`, a tier table).
    pub table: String,
    /// The first partition id replaced.
    pub first: String,
    /// The last partition id replaced.
    pub last: String,
    /// How many.
    pub count: u32,
}

/// What the operator and the Job's pod last reported. Bounded whatever the range: the
/// checkpoint as day ranges, per-day details for at most 20 days, the rest in `totals`,
/// messages cut at 1024 bytes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReprocessStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pending (admitted, planned, awaiting approval, queued or its Job starting), Running,
    /// then Succeeded, Failed or Cancelled.
    #[serde(default)]
    pub phase: Phase,
    /// `Approved`, `Progressing`, `Stalled`, `Complete` and `Failed`, `metav1.Condition`s,
    /// each with the generation it describes.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// How far the run is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<ReprocessProgress>,
    /// Every finished day summed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals: Option<ReprocessTotals>,
    /// Finished days in day order, at most 20: the days that changed and the latest ones;
    /// `totals` counts them all.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["day"]))]
    pub days: Vec<DayResult>,
    /// When the first pod started replaying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the outcome was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// What is happening or happened, in a sentence (the queue, the refusal, the outcome).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The Job running the replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// Where the run resumes from, and the ledger of the days finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<StatusCheckpoint>,
    /// The plan (computed on creation, recomputed while the run has not started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<ReprocessPlan>,
    /// How many times the operator replaced the Job of a stalled run (at most
    /// `spec.maxStallRestarts`, then `Failed`, reason `StalledTooOften`).
    #[serde(default)]
    pub stall_restarts: u32,
    /// When the operator last found the run stalled (it replaces the Job then): the next
    /// pod's 60 s to heartbeat count from here, or from `jobCreationTime` if later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_stall_time: Option<Time>,
    /// When the operator last made the run's Job, by its own clock, written (with the
    /// plan) before the Job is made: a Job made late, its predecessor slow to go, gets its
    /// full time, and an operator working from a stale cache makes no Job (the write
    /// conflicts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_creation_time: Option<Time>,
    /// The uid of the Job the last stall replaces. The operator records it before deleting
    /// that Job (so a lost status write never leaves a deletion unaccounted for) and deletes
    /// a Job of this uid wherever it sees one (so a failed deletion is retried, not counted
    /// as another stall); a Job of any other uid is the replacement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaced_job_uid: Option<String>,
}

/// The most days `status.days` details (the CRD's descriptions state the number; a test
/// checks they agree).
pub const MAX_DAY_RESULTS: usize = 20;
/// The longest message (`status.message`, a condition's) in bytes (stated in the CRD too).
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

/// The spec field that may change after creation: approving a plan is an edit of it.
pub const MUTABLE_SPEC_FIELD: &str = "approvedPlanHash";

/// The CRD as `kubectl apply` takes it: the derive's schema plus the immutability of the
/// spec but `approvedPlanHash` (a CEL transition rule on `spec`): a Job replays what was
/// admitted, and a changed range would make the status's ledger describe another run.
pub fn crd() -> CustomResourceDefinition {
    let mut crd = Reprocess::crd();
    for version in &mut crd.spec.versions {
        let Some(schema) = version.schema.as_mut().and_then(|s| s.open_api_v3_schema.as_mut()) else {
            continue;
        };
        let Some(spec) = schema.properties.as_mut().and_then(|p| p.get_mut("spec")) else {
            continue;
        };
        let fields: Vec<String> = spec
            .properties
            .as_ref()
            .map(|p| p.keys().filter(|k| *k != MUTABLE_SPEC_FIELD).cloned().collect())
            .unwrap_or_default();
        spec.x_kubernetes_validations
            .get_or_insert_with(Vec::new)
            .push(ValidationRule {
                rule: immutability_rule(&fields),
                message: Some(format!(
                    "spec is immutable but for {MUTABLE_SPEC_FIELD}: delete this Reprocess and create another"
                )),
                ..Default::default()
            });
    }
    crd
}

/// A CEL rule that holds when none of `fields` was added, removed or changed: for each,
/// `has(self.f) == has(oldSelf.f) && (!has(self.f) || self.f == oldSelf.f)` (an optional
/// field may be absent on either side, and `self.f` of an absent one is an error).
pub fn immutability_rule(fields: &[String]) -> String {
    fields
        .iter()
        .map(|f| format!("(has(self.{f}) == has(oldSelf.{f}) && (!has(self.{f}) || self.{f} == oldSelf.{f}))"))
        .collect::<Vec<_>>()
        .join(" && ")
}

/// Reads a `Reprocess` document as `kubectl apply` would send it, strictly: the core spec's
/// fields as `sightline reprocess -f` reads them (an unknown one is an error naming it) and
/// the resource's own fields (`approval`, `approvedPlanHash`, `maxStallRestarts`).
pub fn parse_resource(text: &str, source_name: &str) -> Result<ReprocessResourceSpec, String> {
    let mut value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| format!("{source_name}: {e}"))?;
    let spec = value
        .get("spec")
        .cloned()
        .ok_or_else(|| format!("{source_name}: no spec"))?;
    let resource: ReprocessResourceSpec =
        serde_yaml::from_value(spec).map_err(|e| format!("{source_name}: spec: {e}"))?;
    if let Some(m) = value.get_mut("spec").and_then(|s| s.as_mapping_mut()) {
        for field in sightline_core::reprocess::RESOURCE_ONLY_FIELDS {
            m.remove(field);
        }
    }
    let core_text = serde_yaml::to_string(&value).map_err(|e| e.to_string())?;
    sightline_core::reprocess::parse_reprocess(&core_text, source_name).map_err(|e| e.to_string())?;
    Ok(resource)
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
                ("Approved", ".status.conditions[?(@.type==\"Approved\")].status"),
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
        for field in [
            "tenantRef",
            "from",
            "to",
            "sites",
            "dryRun",
            "parallelism",
            "force",
            "approval",
            "approvedPlanHash",
            "maxStallRestarts",
        ] {
            assert!(props[field].is_object(), "spec.{field} missing: {spec}");
        }
        assert_eq!(props["approval"]["enum"], serde_json::json!(["Automatic", "Manual"]));
        assert_eq!(props["approval"]["default"], "Automatic");
        assert_eq!(props["maxStallRestarts"]["default"], 3);
        assert_eq!(props["maxStallRestarts"]["maximum"].as_f64(), Some(10.0));
        let hash = regex_lite(props["approvedPlanHash"]["pattern"].as_str().unwrap());
        assert!(hash(&"0a".repeat(32)) && !hash(&"0A".repeat(32)) && !hash("abc"));
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
        // Immutable but for approvedPlanHash: one term per other field of the spec.
        let rule = spec["x-kubernetes-validations"][0]["rule"].as_str().unwrap();
        let fields: Vec<&String> = props.as_object().unwrap().keys().collect();
        assert_eq!(fields.len(), 10);
        for field in fields {
            let term = format!(
                "(has(self.{field}) == has(oldSelf.{field}) && (!has(self.{field}) || self.{field} == oldSelf.{field}))"
            );
            assert_eq!(
                rule.contains(&term),
                field != MUTABLE_SPEC_FIELD,
                "{field} in the rule: {rule}"
            );
        }
        assert_eq!(rule.matches(" && (has(").count(), 8, "nine terms joined: {rule}");
        assert!(!rule.contains("approvedPlanHash"), "{rule}");
        let status = &s["properties"]["status"]["properties"];
        assert_eq!(status["conditions"]["x-kubernetes-list-map-keys"][0], "type");
        assert_eq!(status["days"]["x-kubernetes-list-map-keys"][0], "day");
        assert_eq!(
            status["phase"]["enum"],
            serde_json::json!(["Pending", "Running", "Succeeded", "Failed", "Cancelled"])
        );
        for field in [
            "progress",
            "totals",
            "startedAt",
            "finishedAt",
            "message",
            "checkpoint",
            "plan",
            "stallRestarts",
            "observedGeneration",
        ] {
            assert!(status[field].is_object(), "status.{field} missing");
        }
    }

    #[test]
    fn descriptions_state_numbers_current_identities_and_the_whole_approve_command() {
        use sightline_core::processor::{identity, ProcessorConfig, PIPELINE_VERSION};
        let s = schema();
        let text = serde_json::to_string(&s).unwrap();
        assert!(
            !text.contains("MAX_"),
            "a Rust constant's name in a description: {text}"
        );
        // Doc comments wrap anywhere: compare with whitespace runs made one space.
        let desc = |v: &serde_json::Value| {
            v["description"]
                .as_str()
                .unwrap_or_else(|| panic!("no description: {v}"))
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        let status = &s["properties"]["status"];
        let of_status = &status["properties"];
        assert!(
            desc(status).contains(&format!("at most {MAX_DAY_RESULTS} days"))
                && desc(status).contains(&format!("cut at {MAX_MESSAGE} bytes")),
            "{}",
            desc(status)
        );
        assert!(desc(&of_status["days"]).contains(&format!("at most {MAX_DAY_RESULTS}:")));
        let current = identity(PIPELINE_VERSION, ProcessorConfig { bot_filtering: true });
        let with_bots = identity(PIPELINE_VERSION, ProcessorConfig { bot_filtering: false });
        for field in [
            &of_status["checkpoint"]["properties"]["processing"],
            &of_status["plan"]["properties"]["processing"],
        ] {
            let d = desc(field);
            assert!(
                d.contains(&format!("(`{current}`, or `{with_bots}` ")),
                "not this build's identities ({current}, {with_bots}): {d}"
            );
        }
        let plan = &of_status["plan"]["properties"];
        assert!(desc(&plan["firstDay"]).starts_with("The first UTC day"));
        assert!(desc(&plan["lastDay"]).starts_with("The last UTC day"));
        assert!(desc(&s["properties"]["spec"]["properties"]["approval"])
            .contains("kubectl sightline reprocess approve NAME --hash HASH"));
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
            "status": {"phase": "Running", "progress": {"daysSucceeded": 2, "daysTotal": 7, "daysPending": 5,
                        "percent": 28, "rowsRead": 10, "rowsWritten": 10, "summary": "2/7"}},
        }))
        .unwrap();
        assert!(obj.spec.reprocess.dry_run);
        assert_eq!(obj.spec.reprocess.parallelism, 1);
        assert_eq!(obj.spec.approval, Approval::Automatic, "the default");
        assert_eq!(obj.spec.max_stall_restarts, DEFAULT_MAX_STALL_RESTARTS);
        assert!(obj.spec.approves("anything"), "Automatic approves every plan");
        let manual = ReprocessResourceSpec {
            approval: Approval::Manual,
            approved_plan_hash: Some("h1".into()),
            ..obj.spec.clone()
        };
        assert!(manual.approves("h1") && !manual.approves("h2"));
        let status = obj.status.unwrap();
        assert_eq!(status.phase(), Phase::Running);
        assert_eq!(status.progress, Some(ReprocessProgress::new(2, 7, 10, 10)));
    }
}
