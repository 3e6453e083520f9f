//! `TenantSpec`: the spec of the `AnalyticsTenant` resource. One type for the CRD, the
//! standalone YAML files and the tests, so that what a platform team writes means the same
//! thing everywhere.
//!
//! The types accept fields they do not know (an operator one version behind must still
//! read objects a newer CRD admitted); YAML files are held strictly by `parse_tenants`,
//! which refuses every field it ignored. The schema attributes (bounds, patterns, CEL rules
//! under `x-kubernetes-validations`, list-map keys) end up in the CRD that `sightline
//! crdgen` writes, so `kubectl apply` refuses what `validate` would.

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

pub const API_GROUP: &str = "sightline.dev";
pub const API_VERSION: &str = "sightline.dev/v1alpha1";
pub const KIND: &str = "AnalyticsTenant";

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(has(self.clickhouse) && has(self.clickhouse.database) ? self.clickhouse.database : '') == (has(oldSelf.clickhouse) && has(oldSelf.clickhouse.database) ? oldSelf.clickhouse.database : '')",
        "message": "clickhouse.database cannot change: the tenant's data lives there (create a new tenant instead)"
    },
    {
        "rule": "(has(self.clickhouse) && has(self.clickhouse.cluster) ? self.clickhouse.cluster : '') == (has(oldSelf.clickhouse) && has(oldSelf.clickhouse.cluster) ? oldSelf.clickhouse.cluster : '')",
        "message": "clickhouse.cluster cannot change: the tables were created on it"
    },
    {
        "rule": "!has(self.ingest) || !has(self.ingest.loader) || !has(self.ingest.loader.replicas) || self.ingest.loader.replicas <= (has(self.kafka) && has(self.kafka.partitions) ? self.kafka.partitions : 6)",
        "message": "ingest.loader.replicas may not exceed kafka.partitions: a loader without a partition would idle"
    },
    {
        "rule": "has(self.sites) && ((has(self.sites.open) && self.sites.open) || (has(self.sites.allowed) && size(self.sites.allowed) > 0))",
        "message": "sites: the allow-list is empty and open is false, so no site could send events"
    }
]))]
pub struct TenantSpec {
    /// Which merchant sites may send events. Merchants are rows keyed by site id.
    #[serde(default)]
    pub sites: SitePolicy,
    /// How long the tenant's events and rollups are kept.
    #[serde(default)]
    pub retention: Retention,
    /// IANA timezone used for sites that do not name their own.
    #[serde(default = "default_timezone")]
    pub default_timezone: String,
    /// When on, events from known bots are stored in `events_raw` but never reach rollups.
    #[serde(default = "default_true")]
    pub bot_filtering: bool,
    /// Per-request and per-site limits the collector enforces.
    #[serde(default)]
    pub limits: Limits,
    /// GA4 Measurement Protocol streams: `POST /mp/collect?measurement_id=…` is stored for
    /// the mapped site; its `api_secret` must be a write token for that site.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["measurementId"]))]
    pub ga4: Vec<Ga4Stream>,
    /// Conversions merchants care about: `conversion_rate` and the `goal` dimension use them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub goals: Vec<Goal>,
    /// The tenant's topics in a cluster (`sightline.<tenant>.events` and its `.dlq`).
    #[serde(default)]
    pub kafka: KafkaSpec,
    /// The tenant's warehouse in a cluster (the operator's; standalone uses its engine).
    #[serde(default)]
    pub clickhouse: ClickHouseSpec,
    /// The tenant's workloads in a cluster: collector, loader and query roles.
    #[serde(default)]
    pub ingest: IngestSpec,
    /// What deleting the `AnalyticsTenant` does to its topics and database.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// What the operator does when it finds its Kubernetes objects, topics or tables
    /// changed behind its back: `Repair` (put them back) or `Report` (only say so).
    #[serde(default, skip_serializing_if = "DriftPolicy::is_default")]
    pub drift_policy: DriftPolicy,
}

/// Where the tenant's tables are. `database` and `cluster` cannot change once set (a CEL
/// rule in the CRD refuses it; the data lives there).
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClickHouseSpec {
    /// The database, instead of `sightline_<tenant>` (dashes as underscores). Cannot change
    /// once set (a CEL rule): the tenant's data lives there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z_][a-z0-9_]*$"))]
    pub database: Option<String>,
    /// A ClickHouse cluster name (in the servers' `remote_servers`): every statement of the
    /// DDL then runs ON CLUSTER, tables with a site are Replicated*MergeTree `<table>_local`
    /// tables on each shard behind Distributed tables sharded by site (docs/storage.md).
    /// Cannot change once set (a CEL rule): the tables were created on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(r"^[A-Za-z_][A-Za-z0-9_-]*$"))]
    pub cluster: Option<String>,
    /// `http(s)://host:port` of the server; the operator's `--clickhouse-url` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), pattern(r"^https?://[^\s/]+(/.*)?$"))]
    pub url: Option<String>,
    /// A Secret in the workloads' namespace holding the user and password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<CredentialsSecretRef>,
}

/// A Secret with ClickHouse credentials: its name and the keys of the user and password.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsSecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253), pattern(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub name: String,
    /// The key holding the user name.
    #[serde(default = "default_user_key")]
    #[schemars(length(min = 1, max = 253))]
    pub user_key: String,
    /// The key holding the password.
    #[serde(default = "default_password_key")]
    #[schemars(length(min = 1, max = 253))]
    pub password_key: String,
}

fn default_user_key() -> String {
    "username".into()
}
fn default_password_key() -> String {
    "password".into()
}

/// The tenant's workloads. Each role runs the `sightline` image with the tenant's
/// ConfigMap mounted as its tenants directory.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IngestSpec {
    /// Namespace of the workloads; the operator's own namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"))]
    pub namespace: Option<String>,
    /// The `sightline` image, instead of the operator's `--image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// The collector Deployment.
    #[serde(default)]
    pub collector: CollectorSpec,
    /// The loader StatefulSet.
    #[serde(default)]
    pub loader: LoaderSpec,
    /// The query Deployment.
    #[serde(default)]
    pub query: QuerySpec,
}

/// The collector Deployment: fixed replicas, or a HorizontalPodAutoscaler on CPU.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(self.autoscaling) || self.autoscaling.minReplicas <= self.autoscaling.maxReplicas",
        "message": "autoscaling.minReplicas may not exceed maxReplicas"
    }
]))]
pub struct CollectorSpec {
    /// Replicas when autoscaling is off.
    #[serde(default = "default_two")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: u32,
    /// Container resources of each collector pod.
    #[serde(default)]
    pub resources: ResourcesSpec,
    /// When present, an HPA scales the collector between these bounds on CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// The fewest collector pods the HPA keeps.
    #[schemars(range(min = 1, max = 1000))]
    pub min_replicas: u32,
    /// The most collector pods the HPA starts.
    #[schemars(range(min = 1, max = 1000))]
    pub max_replicas: u32,
    /// Average CPU utilisation the HPA aims for, in percent of the request.
    #[serde(default = "default_target_cpu")]
    #[schemars(range(min = 10, max = 100))]
    pub target_cpu_percent: u32,
}

fn default_target_cpu() -> u32 {
    70
}

/// The loader StatefulSet: one pod per consumer-group member (at most the partitions).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LoaderSpec {
    /// Loader pods; at most `kafka.partitions` (a loader without a partition would idle).
    #[serde(default = "default_one")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: u32,
    /// Container resources of each loader pod.
    #[serde(default)]
    pub resources: ResourcesSpec,
}

/// The query Deployment.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QuerySpec {
    /// Query pods.
    #[serde(default = "default_two")]
    #[schemars(range(min = 1, max = 1000))]
    pub replicas: u32,
    /// Container resources of each query pod.
    #[serde(default)]
    pub resources: ResourcesSpec,
}

fn default_one() -> u32 {
    1
}
fn default_two() -> u32 {
    2
}

impl Default for CollectorSpec {
    fn default() -> Self {
        Self {
            replicas: default_two(),
            resources: ResourcesSpec::default(),
            autoscaling: None,
        }
    }
}

impl Default for LoaderSpec {
    fn default() -> Self {
        Self {
            replicas: default_one(),
            resources: ResourcesSpec::default(),
        }
    }
}

impl Default for QuerySpec {
    fn default() -> Self {
        Self {
            replicas: default_two(),
            resources: ResourcesSpec::default(),
        }
    }
}

/// Container resources; absent values take the operator's defaults for the role.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ResourcesSpec {
    /// What the scheduler reserves for the container.
    #[serde(default)]
    pub requests: Quantities,
    /// The most the container may use (no CPU limit unless given).
    #[serde(default)]
    pub limits: Quantities,
}

/// Kubernetes quantities, e.g. `cpu: 500m`, `memory: 512Mi`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Quantities {
    /// CPU in cores or millicores, e.g. `500m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+(\.[0-9]+)?m?$"))]
    pub cpu: Option<String>,
    /// Memory in bytes with an optional suffix, e.g. `512Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[0-9]+(\.[0-9]+)?(k|M|G|T|Ki|Mi|Gi|Ti)?$"))]
    pub memory: Option<String>,
}

/// `Retain` (the default) keeps the topics and the database when the tenant is deleted;
/// `Delete` drops them.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub enum DeletionPolicy {
    #[default]
    Retain,
    Delete,
}

/// What the operator does with drift: `Repair` (the default) puts what it owns back as the
/// spec says, with an Event per repair; `Report` only lists it in the `InSync` condition.
/// A repair that would destroy data (a table to drop and recreate) is only ever reported.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq, Eq)]
pub enum DriftPolicy {
    #[default]
    Repair,
    Report,
}

impl DriftPolicy {
    pub fn is_default(&self) -> bool {
        *self == DriftPolicy::Repair
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KafkaSpec {
    /// Partitions of each topic: the ceiling on loader parallelism. May grow, never shrink
    /// (a visitor's events must stay on one partition).
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 1000))]
    pub partitions: u32,
    /// Copies of each partition; fixed once the topics exist (a change is refused).
    #[serde(default = "default_replication")]
    #[schemars(range(min = 1, max = 16))]
    pub replication_factor: u16,
    /// How long the broker keeps events: the window to recover a loader outage.
    #[serde(default = "default_retention_hours")]
    #[schemars(range(min = 1))]
    pub retention_hours: u32,
}

fn default_partitions() -> u32 {
    6
}
fn default_replication() -> u16 {
    3
}
fn default_retention_hours() -> u32 {
    168
}

impl Default for KafkaSpec {
    fn default() -> Self {
        Self {
            partitions: default_partitions(),
            replication_factor: default_replication(),
            retention_hours: default_retention_hours(),
        }
    }
}

/// A goal is completed by an event with a given name, or by a pageview whose path matches a
/// pattern (`*` matches within one path segment, `**` across segments).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.event) != has(self.page)",
        "message": "give either event (a name) or page (a path pattern starting with /)"
    }
]))]
pub struct Goal {
    /// The goal's name, as the `goal` dimension shows it.
    #[schemars(length(min = 1, max = 120))]
    pub name: String,
    /// An event name that completes the goal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub event: Option<String>,
    /// A page path pattern that completes the goal (`*` within a segment, `**` across).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), pattern(r"^/"))]
    pub page: Option<String>,
}

impl Goal {
    /// The page pattern as an anchored regular expression (re2 syntax). The pattern is first
    /// put in the normal form of stored pages (`processor::page::normalize_path`: escapes
    /// decoded, NFC, no trailing slash), so `/thank-you/` and `/caf%C3%A9` find what they mean.
    pub fn page_regex(&self) -> Option<String> {
        let pattern = crate::processor::page::normalize_path(self.page.as_deref()?);
        let pattern = pattern.as_str();
        let mut re = String::from("^");
        let mut rest = pattern;
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix("**") {
                re.push_str(".*");
                rest = r;
            } else if let Some(r) = rest.strip_prefix('*') {
                re.push_str("[^/]*");
                rest = r;
            } else {
                let c = rest.chars().next().expect("not empty");
                if "\\.+?()[]{}|^$".contains(c) {
                    re.push('\\');
                }
                re.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        re.push('$');
        Some(re)
    }
}
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Ga4Stream {
    /// The GA4 measurement id senders already use, e.g. G-ABC123XYZ.
    #[schemars(pattern(r"^G-[A-Z0-9]{4,20}$"))]
    pub measurement_id: String,
    /// The Sightline site its events belong to.
    #[schemars(length(min = 1, max = 128), pattern(r"^[A-Za-z0-9._-]+$"))]
    pub site: String,
}

/// GA4 measurement ids: `G-` then 4 to 20 upper-case letters or digits.
pub fn valid_measurement_id(id: &str) -> bool {
    id.strip_prefix("G-").is_some_and(|rest| {
        (4..=20).contains(&rest.len()) && rest.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    })
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SitePolicy {
    /// `true`: any well-formed site id is accepted (tokens still gate access).
    #[serde(default)]
    pub open: bool,
    /// The allow-list (and per-site settings, also used by open tenants).
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["id"]))]
    pub allowed: Vec<SiteSpec>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SiteSpec {
    /// The site id tokens and events name, e.g. `shop.example.com`.
    #[schemars(length(min = 1, max = 128), pattern(r"^[A-Za-z0-9._-]+$"))]
    pub id: String,
    /// IANA timezone for this site's reports; the tenant default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub timezone: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Days `events_raw` and `events` are kept; also the window `Reprocess` can replay.
    #[serde(default = "default_raw_days")]
    #[schemars(range(min = 1))]
    pub raw_days: u32,
    /// Days the rollup tiers (quarter-hour, daily, monthly) keep a bucket, counted from the
    /// bucket's start (a TTL on each tier).
    #[serde(default = "default_rollup_days")]
    #[schemars(range(min = 1))]
    pub rollup_days: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    /// Events one request may carry.
    #[serde(default = "default_events_per_request")]
    #[schemars(range(min = 1))]
    pub events_per_request: u32,
    /// Bytes of one request body.
    #[serde(default = "default_body_bytes")]
    #[schemars(range(min = 1))]
    pub body_bytes: u32,
    /// Sustained events per second per site (token bucket refill rate).
    #[serde(default = "default_events_per_second")]
    #[schemars(range(min = 1))]
    pub events_per_second_per_site: u32,
    /// Token bucket size: how far above the sustained rate a site may burst.
    #[serde(default = "default_burst")]
    #[schemars(range(min = 1))]
    pub burst_per_site: u32,
    /// Sustained bytes per second a site may store (what its events cost on disk before
    /// compression): a write token is public, so this bounds what anyone can write.
    #[serde(default = "default_bytes_per_second")]
    #[schemars(range(min = 1))]
    pub bytes_per_second_per_site: u32,
    /// How far above the sustained byte rate a site may burst.
    #[serde(default = "default_burst_bytes")]
    #[schemars(range(min = 1))]
    pub burst_bytes_per_site: u32,
    /// Custom properties an event may carry.
    #[serde(default = "default_max_props")]
    pub max_props: u32,
    /// Bytes of one property's name.
    #[serde(default = "default_max_prop_key_bytes")]
    #[schemars(range(min = 1))]
    pub max_prop_key_bytes: u32,
    /// Bytes of one property's value.
    #[serde(default = "default_max_prop_value_bytes")]
    #[schemars(range(min = 1))]
    pub max_prop_value_bytes: u32,
}

fn default_timezone() -> String {
    "UTC".into()
}
fn default_true() -> bool {
    true
}
fn default_raw_days() -> u32 {
    400
}
fn default_rollup_days() -> u32 {
    1100
}
fn default_events_per_request() -> u32 {
    500
}
fn default_body_bytes() -> u32 {
    1024 * 1024
}
fn default_events_per_second() -> u32 {
    1000
}
fn default_burst() -> u32 {
    5000
}
fn default_bytes_per_second() -> u32 {
    2 * 1024 * 1024
}
fn default_burst_bytes() -> u32 {
    16 * 1024 * 1024
}
fn default_max_props() -> u32 {
    30
}
fn default_max_prop_key_bytes() -> u32 {
    64
}
fn default_max_prop_value_bytes() -> u32 {
    512
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            raw_days: default_raw_days(),
            rollup_days: default_rollup_days(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            events_per_request: default_events_per_request(),
            body_bytes: default_body_bytes(),
            events_per_second_per_site: default_events_per_second(),
            burst_per_site: default_burst(),
            bytes_per_second_per_site: default_bytes_per_second(),
            burst_bytes_per_site: default_burst_bytes(),
            max_props: default_max_props(),
            max_prop_key_bytes: default_max_prop_key_bytes(),
            max_prop_value_bytes: default_max_prop_value_bytes(),
        }
    }
}

/// A site id: what merchants are keyed by. Letters, digits, `.`, `-`, `_`; 1 to 128 bytes.
pub fn valid_site_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A tenant name is a Kubernetes object name that also maps to a database name.
pub fn valid_tenant_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name.as_bytes()[0].is_ascii_lowercase()
        && !name.ends_with('-')
}

impl TenantSpec {
    /// Checks everything serde cannot: ids, timezones, limits. `source_name` names the
    /// file or object in the message.
    pub fn validate(&self, source_name: &str) -> Result<()> {
        let err = |message: String| Error::Spec {
            source_name: source_name.to_string(),
            message,
        };
        if !self.sites.open && self.sites.allowed.is_empty() {
            return Err(err(
                "sites: the allow-list is empty and `open` is false, so no site could send events".into(),
            ));
        }
        parse_timezone(&self.default_timezone).map_err(|e| err(format!("defaultTimezone: {e}")))?;
        let mut seen = std::collections::HashSet::new();
        for (i, site) in self.sites.allowed.iter().enumerate() {
            if !valid_site_id(&site.id) {
                return Err(err(format!(
                    "sites.allowed[{i}].id {:?}: use 1-128 letters, digits, '.', '-' or '_'",
                    site.id
                )));
            }
            if !seen.insert(site.id.as_str()) {
                return Err(err(format!("sites.allowed[{i}].id {:?} is listed twice", site.id)));
            }
            if let Some(tz) = &site.timezone {
                parse_timezone(tz).map_err(|e| err(format!("sites.allowed[{i}].timezone: {e}")))?;
            }
        }
        let mut ids = std::collections::HashSet::new();
        for (i, stream) in self.ga4.iter().enumerate() {
            if !valid_measurement_id(&stream.measurement_id) {
                return Err(err(format!(
                    "ga4[{i}].measurementId {:?}: expected G- and 4-20 letters or digits",
                    stream.measurement_id
                )));
            }
            if !ids.insert(stream.measurement_id.as_str()) {
                return Err(err(format!(
                    "ga4[{i}].measurementId {:?} is listed twice",
                    stream.measurement_id
                )));
            }
            if self.site(&stream.site).is_none() {
                return Err(err(format!(
                    "ga4[{i}].site {:?} is not a site of this tenant",
                    stream.site
                )));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, goal) in self.goals.iter().enumerate() {
            if goal.name.trim().is_empty() || goal.name.len() > 120 {
                return Err(err(format!("goals[{i}].name: 1 to 120 bytes")));
            }
            if !names.insert(goal.name.as_str()) {
                return Err(err(format!("goals[{i}].name {:?} is listed twice", goal.name)));
            }
            match (&goal.event, &goal.page) {
                (Some(e), None) if !e.is_empty() => {}
                (None, Some(p)) if p.starts_with('/') => {}
                _ => {
                    return Err(err(format!(
                        "goals[{i}]: give either event (a name) or page (a path pattern starting with /)"
                    )))
                }
            }
        }
        if !(1..=1000).contains(&self.kafka.partitions) {
            return Err(err(format!("kafka.partitions {}: 1 to 1000", self.kafka.partitions)));
        }
        if self.kafka.replication_factor == 0 {
            return Err(err("kafka.replicationFactor must be at least 1".into()));
        }
        if let Some(db) = &self.clickhouse.database {
            if !valid_database_name(db) {
                return Err(err(format!(
                    "clickhouse.database {db:?}: use 1-63 lowercase letters, digits and '_', not starting with a digit"
                )));
            }
        }
        if let Some(cluster) = &self.clickhouse.cluster {
            if !crate::ddl::cluster::valid_cluster_name(cluster) {
                return Err(err(format!(
                    "clickhouse.cluster {cluster:?}: use 1-63 letters, digits, '_' and '-', starting with a letter or '_'"
                )));
            }
        }
        if let Some(url) = &self.clickhouse.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(err(format!("clickhouse.url {url:?}: expected http:// or https://")));
            }
        }
        let ingest = &self.ingest;
        for (field, value) in [
            ("ingest.collector.replicas", ingest.collector.replicas),
            ("ingest.loader.replicas", ingest.loader.replicas),
            ("ingest.query.replicas", ingest.query.replicas),
        ] {
            if !(1..=1000).contains(&value) {
                return Err(err(format!("{field} {value}: 1 to 1000")));
            }
        }
        if ingest.loader.replicas > self.kafka.partitions {
            return Err(err(format!(
                "ingest.loader.replicas {} exceeds kafka.partitions {}: a loader without a partition would idle",
                ingest.loader.replicas, self.kafka.partitions
            )));
        }
        if let Some(a) = &ingest.collector.autoscaling {
            if a.min_replicas == 0 || a.min_replicas > a.max_replicas {
                return Err(err(format!(
                    "ingest.collector.autoscaling: minReplicas {} must be 1 or more and at most maxReplicas {}",
                    a.min_replicas, a.max_replicas
                )));
            }
            if !(10..=100).contains(&a.target_cpu_percent) {
                return Err(err(format!(
                    "ingest.collector.autoscaling.targetCpuPercent {}: 10 to 100",
                    a.target_cpu_percent
                )));
            }
        }
        let l = &self.limits;
        for (field, value) in [
            ("limits.eventsPerRequest", l.events_per_request),
            ("limits.bodyBytes", l.body_bytes),
            ("limits.eventsPerSecondPerSite", l.events_per_second_per_site),
            ("limits.burstPerSite", l.burst_per_site),
            ("limits.bytesPerSecondPerSite", l.bytes_per_second_per_site),
            ("limits.burstBytesPerSite", l.burst_bytes_per_site),
            ("limits.maxPropKeyBytes", l.max_prop_key_bytes),
            ("limits.maxPropValueBytes", l.max_prop_value_bytes),
            ("retention.rawDays", self.retention.raw_days),
            ("retention.rollupDays", self.retention.rollup_days),
            ("kafka.retentionHours", self.kafka.retention_hours),
        ] {
            if value == 0 {
                return Err(err(format!("{field} must be greater than 0")));
            }
        }
        Ok(())
    }

    /// The site's settings if it may send events: from the allow-list, or defaults when open.
    pub fn site(&self, site_id: &str) -> Option<SiteSpec> {
        if let Some(site) = self.sites.allowed.iter().find(|s| s.id == site_id) {
            return Some(site.clone());
        }
        (self.sites.open && valid_site_id(site_id)).then(|| SiteSpec {
            id: site_id.to_string(),
            timezone: None,
        })
    }

    pub fn site_timezone(&self, site_id: &str) -> chrono_tz::Tz {
        self.site(site_id)
            .and_then(|s| s.timezone)
            .as_deref()
            .and_then(|tz| parse_timezone(tz).ok())
            .or_else(|| parse_timezone(&self.default_timezone).ok())
            .unwrap_or(chrono_tz::UTC)
    }
}

pub fn parse_timezone(name: &str) -> std::result::Result<chrono_tz::Tz, String> {
    name.parse::<chrono_tz::Tz>()
        .map_err(|_| format!("{name:?} is not an IANA timezone"))
}

/// A tenant as written in YAML: the same shape as the Kubernetes object.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TenantDocument {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: TenantSpec,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Metadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A validated tenant: its name and spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Tenant {
    pub name: String,
    pub spec: TenantSpec,
}

impl Tenant {
    /// The tenant's ClickHouse database: `clickhouse.database` when the spec names one, else
    /// `sightline_<tenant>`. Both are validated, so this is safe to place in DDL as an
    /// identifier.
    pub fn database(&self) -> String {
        self.spec
            .clickhouse
            .database
            .clone()
            .unwrap_or_else(|| database_name(&self.name))
    }

    /// The tenant as a YAML document in the format `parse_tenants` reads (what the
    /// operator's ConfigMap holds for the roles' `--tenants`).
    pub fn to_yaml(&self) -> Result<String> {
        let doc = TenantDocument {
            api_version: API_VERSION.to_string(),
            kind: KIND.to_string(),
            metadata: Metadata {
                name: self.name.clone(),
                labels: BTreeMap::new(),
            },
            spec: self.spec.clone(),
        };
        serde_yaml::to_string(&doc).map_err(|e| Error::Spec {
            source_name: self.name.clone(),
            message: e.to_string(),
        })
    }
}

/// A tenant whose spec may be replaced while a role runs (its tenants file reloaded): each
/// reader takes the current one with `load` and keeps it for the unit of work at hand.
#[derive(Clone)]
pub struct LiveTenant(std::sync::Arc<arc_swap::ArcSwap<Tenant>>);

impl LiveTenant {
    pub fn new(tenant: Tenant) -> Self {
        Self(std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(tenant)))
    }

    pub fn load(&self) -> std::sync::Arc<Tenant> {
        self.0.load_full()
    }

    /// Replaces the spec. The name (and with it the topics) cannot change.
    pub fn store(&self, tenant: Tenant) {
        self.0.store(std::sync::Arc::new(tenant));
    }
}

/// A database name Sightline may place in DDL: 1-63 of `[a-z0-9_]`, not starting with a digit.
pub fn valid_database_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !name.as_bytes()[0].is_ascii_digit()
}

pub fn database_name(tenant: &str) -> String {
    format!("sightline_{}", tenant.replace('-', "_"))
}

/// Parses every `AnalyticsTenant` document in a YAML text (`---`-separated); other kinds
/// are skipped so a directory can hold other manifests too.
pub fn parse_tenants(text: &str, source_name: &str) -> Result<Vec<Tenant>> {
    let mut tenants = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| Error::Spec {
            source_name: source_name.to_string(),
            message: format!("document {}: {e}", i + 1),
        })?;
        if value.is_null() || value.get("kind").and_then(|k| k.as_str()) != Some(KIND) {
            continue;
        }
        // Files are held strictly: a field the types ignore (a typo) is an error here, while
        // the operator reads cluster objects leniently (a newer CRD may have more fields).
        let mut unknown = Vec::new();
        let parsed: TenantDocument = serde_ignored::deserialize(value, |path| {
            let path = path.to_string();
            if path.starts_with("spec") {
                unknown.push(path);
            }
        })
        .map_err(|e| Error::Spec {
            source_name: source_name.to_string(),
            message: format!("document {}: {e}", i + 1),
        })?;
        if !unknown.is_empty() {
            return Err(Error::Spec {
                source_name: source_name.to_string(),
                message: format!("document {}: unknown field(s) {}", i + 1, unknown.join(", ")),
            });
        }
        if parsed.api_version != API_VERSION {
            return Err(Error::Spec {
                source_name: source_name.to_string(),
                message: format!("apiVersion {:?}: expected {API_VERSION}", parsed.api_version),
            });
        }
        if !valid_tenant_name(&parsed.metadata.name) {
            return Err(Error::Spec {
                source_name: source_name.to_string(),
                message: format!(
                    "metadata.name {:?}: use 1-40 lowercase letters, digits and '-', starting with a letter",
                    parsed.metadata.name
                ),
            });
        }
        parsed
            .spec
            .validate(&format!("{source_name} ({})", parsed.metadata.name))?;
        tenants.push(Tenant {
            name: parsed.metadata.name,
            spec: parsed.spec,
        });
    }
    Ok(tenants)
}

/// Reads tenants from a YAML file or from every `*.yaml`/`*.yml` file of a directory.
///
/// A directory is read one level deep, as Kubernetes mounts a ConfigMap: its subdirectories
/// are not searched (a mounted ConfigMap holds `..data` and timestamped copies of every
/// file, and a manifests tree holds examples for other setups). When a directory holds no
/// tenant but a subdirectory does, the error names the subdirectories to point at.
pub fn load_tenants(path: &Path) -> Result<Vec<Tenant>> {
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            let p = entry?.path();
            if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                files.push(p);
            }
        }
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut tenants: Vec<Tenant> = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|e| Error::Spec {
            source_name: file.display().to_string(),
            message: e.to_string(),
        })?;
        for tenant in parse_tenants(&text, &file.display().to_string())? {
            if let Some(stream) = tenant.spec.ga4.iter().find(|s| {
                tenants
                    .iter()
                    .any(|t| t.spec.ga4.iter().any(|o| o.measurement_id == s.measurement_id))
            }) {
                return Err(Error::Spec {
                    source_name: file.display().to_string(),
                    message: format!("GA4 measurement id {:?} is used by two tenants", stream.measurement_id),
                });
            }
            if tenants.iter().any(|t| t.name == tenant.name) {
                return Err(Error::Spec {
                    source_name: file.display().to_string(),
                    message: format!("tenant {:?} is defined twice", tenant.name),
                });
            }
            tenants.push(tenant);
        }
    }
    if tenants.is_empty() {
        let nested = if path.is_dir() {
            yaml_subdirectories(path)
        } else {
            Vec::new()
        };
        let message = if nested.is_empty() {
            format!("no {KIND} documents found")
        } else {
            format!(
                "no {KIND} documents found (subdirectories are not searched; these hold YAML files: {}; point --tenants at one of them)",
                nested.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
            )
        };
        return Err(Error::Spec {
            source_name: path.display().to_string(),
            message,
        });
    }
    Ok(tenants)
}

/// The subdirectories of `dir` (not hidden, any depth) that hold YAML files.
fn yaml_subdirectories(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&current) else {
            continue;
        };
        let mut has_yaml = false;
        for entry in entries.flatten() {
            let p = entry.path();
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if p.is_dir() {
                pending.push(p);
            } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
                has_yaml = true;
            }
        }
        if has_yaml && current != dir {
            found.push(current);
        }
    }
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = r#"
apiVersion: sightline.dev/v1alpha1
kind: AnalyticsTenant
metadata: { name: acme }
spec:
  sites:
    allowed:
      - id: shop.example.com
        timezone: Europe/Berlin
      - id: blog.example.com
  defaultTimezone: America/New_York
  limits: { eventsPerRequest: 50 }
"#;

    #[test]
    fn a_directory_is_read_one_level_deep_and_says_where_tenants_are() {
        let dir = tempfile::tempdir().unwrap();
        let examples = dir.path().join("examples");
        std::fs::create_dir_all(examples.join("cluster")).unwrap();
        std::fs::write(examples.join("tenant.yaml"), DOC).unwrap();
        // A ConfigMap mount's copies are hidden directories: never read, never suggested.
        std::fs::create_dir_all(dir.path().join("..data")).unwrap();
        std::fs::write(dir.path().join("..data/tenant.yaml"), DOC).unwrap();
        let e = load_tenants(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("subdirectories are not searched") && e.contains(&examples.display().to_string()),
            "{e}"
        );
        assert!(!e.contains("..data"), "{e}");
        assert_eq!(load_tenants(&examples).unwrap()[0].name, "acme");
        // The bare error without anything nested.
        let empty = tempfile::tempdir().unwrap();
        let e = load_tenants(empty.path()).unwrap_err().to_string();
        assert!(e.ends_with("no AnalyticsTenant documents found"), "{e}");
    }

    #[test]
    fn parses_defaults_and_site_settings() {
        let tenants = parse_tenants(DOC, "t.yaml").unwrap();
        assert_eq!(tenants.len(), 1);
        let t = &tenants[0];
        assert_eq!(t.name, "acme");
        assert_eq!(t.database(), "sightline_acme");
        assert_eq!(t.spec.limits.events_per_request, 50);
        assert_eq!(t.spec.limits.body_bytes, 1024 * 1024);
        assert!(t.spec.bot_filtering);
        assert_eq!(t.spec.site_timezone("shop.example.com"), chrono_tz::Europe::Berlin);
        assert_eq!(t.spec.site_timezone("blog.example.com"), chrono_tz::America::New_York);
        assert!(t.spec.site("other.example.com").is_none());
    }

    #[test]
    fn refuses_unknown_fields_and_bad_values_naming_them() {
        let bad = DOC.replace("eventsPerRequest: 50", "eventsPerRequst: 50");
        let e = parse_tenants(&bad, "t.yaml").unwrap_err().to_string();
        assert!(e.contains("eventsPerRequst"), "{e}");
        let bad = DOC.replace("Europe/Berlin", "Mars/Olympus");
        let e = parse_tenants(&bad, "t.yaml").unwrap_err().to_string();
        assert!(e.contains("sites.allowed[0].timezone"), "{e}");
        let bad = DOC.replace("name: acme", "name: Acme_1");
        let e = parse_tenants(&bad, "t.yaml").unwrap_err().to_string();
        assert!(e.contains("metadata.name"), "{e}");
    }

    #[test]
    fn ga4_streams_map_to_sites_of_the_tenant() {
        let with = |stream: &str| {
            DOC.replace(
                "  limits: { eventsPerRequest: 50 }",
                &format!("  limits: {{ eventsPerRequest: 50 }}\n  ga4:\n    - {stream}"),
            )
        };
        let t = &parse_tenants(&with("{ measurementId: G-ABC123, site: shop.example.com }"), "t.yaml").unwrap()[0];
        assert_eq!(t.spec.ga4[0].site, "shop.example.com");
        let e = parse_tenants(&with("{ measurementId: UA-1234, site: shop.example.com }"), "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ga4[0].measurementId"), "{e}");
        let e = parse_tenants(&with("{ measurementId: G-ABC123, site: nope.example.com }"), "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("ga4[0].site"), "{e}");
    }

    #[test]
    fn goal_page_patterns() {
        let g = |p: &str| {
            Goal {
                name: "g".into(),
                event: None,
                page: Some(p.into()),
            }
            .page_regex()
            .unwrap()
        };
        let m = |p: &str, path: &str| regex::Regex::new(&g(p)).unwrap().is_match(path);
        assert!(m("/checkout/*", "/checkout/done"));
        assert!(!m("/checkout/*", "/checkout/a/b"));
        assert!(m("/docs/**", "/docs/a/b"));
        assert!(m("/a.b", "/a.b") && !m("/a.b", "/axb"));
        // Patterns are normalised like stored pages: a trailing slash or escapes find the page.
        assert!(m("/thank-you/", "/thank-you"));
        assert!(m("/caf%C3%A9", "/café") && m("/café/", "/café") && m("/cafe\u{301}", "/café"));
        assert!(m("/a%5Fb", "/a_b"));
        assert!(m("/#/done/", "/#/done"));
        let bad = DOC.replace(
            "  limits: { eventsPerRequest: 50 }",
            "  limits: { eventsPerRequest: 50 }\n  goals: [{ name: Signup }]",
        );
        let e = parse_tenants(&bad, "t.yaml").unwrap_err().to_string();
        assert!(e.contains("goals[0]"), "{e}");
    }

    #[test]
    fn open_tenants_accept_any_well_formed_site() {
        let open = DOC.replace("sites:\n", "sites:\n    open: true\n");
        let t = &parse_tenants(&open, "t.yaml").unwrap()[0];
        assert!(t.spec.site("anything.example").is_some());
        assert!(t.spec.site("bad site").is_none());
    }
}
