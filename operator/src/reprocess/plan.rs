//! The plan of a Reprocess (issue 18): what the run will do, computed by the operator with
//! read-only queries before anything runs, shown in `status.plan`, and identified by a hash
//! that `approval: Manual` must name (`spec.approvedPlanHash`) before a Job starts.
//!
//! - **Inputs** (`read_days`): per UTC day of the range, the rows and uncompressed bytes of
//!   `events_raw`'s partition (`system.parts`, active parts), and whether the day is sealed.
//!   Only the rows are hashed: a merge of parts keeps them, while even uncompressed bytes
//!   can move (each part's LowCardinality dictionaries, columns added by ALTER written out),
//!   which would ask for approval again with nothing changed. The bytes are shown only.
//! - **Image** (`ImageSource`): the Job runs its image by digest. A tenant image already
//!   pinned (`…@sha256:…`) is used as is; the operator's own image (the `--image` every tenant
//!   runs unless its spec names another) gets the digest the kubelet reports for the
//!   operator's own pod (`status.containerStatuses[].imageID`, the pod named by `POD_NAME`
//!   and `POD_NAMESPACE`, which the chart sets from the downward API). Any other tag has no
//!   digest the operator can learn without a registry client: the plan is not made
//!   (`Approved=Unknown`, reason `ImageDigestUnknown`) until the tenant pins its image.
//! - **Hash** (`hash`): SHA-256 over a versioned, line-per-fact text of the spec's replay
//!   fields, every day with its rows (a day not sealed yet by its date and
//!   `unsealed`: its rows still change while it receives events), the partitions replaced,
//!   the processing identity, the pipeline version and the image by digest. The ETA and
//!   the time of computation are not covered (they change without the run changing).
//! - **ETA**: the plan's rows at `DOCUMENTED_ROWS_PER_SECOND` (BENCHMARKS.md, "Replay
//!   throughput": the current engine replayed one 5 M-row day in 20.4 s, 245,646 raw rows/s
//!   on two shared cores, rounded down to 240,000; one pod, whatever `parallelism`, as the
//!   pod's CPU bounds it).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use sha2::{Digest, Sha256};
use sightline_core::reprocess::ReprocessSpec;
use sightline_core::schema::{Tier, EVENTS_TABLE, RAW_TABLE};
use sightline_core::warehouse::{Params, Warehouse};

use super::crd::{PlanPartitions, PlanPeriod, ReprocessPlan};
use crate::error::{Error, Result};
use crate::validate::Validated;

/// Raw rows a Job's pod replays per second, for the plan's ETA: BENCHMARKS.md, "Replay
/// throughput", one 5 M-row day at 245,646 rows/s rounded down (see the module docs). The
/// one place the figure is kept: the plugin prints it from here, and a test checks that the
/// CRD, README.md and docs/replay.md state the same.
pub const DOCUMENTED_ROWS_PER_SECOND: u64 = 240_000;
/// `n` with its thousands grouped by commas, as the docs write figures (`240,000`).
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `status.plan.etaBasis`.
pub const ETA_BASIS: &str = "DocumentedThroughput";
/// Ranges of at most this many days list rows and bytes per day, longer ones per month.
pub const MAX_DAILY_BREAKDOWN: usize = 62;
/// The version of the hashed text: a change of what the hash covers changes it.
const HASH_FORMAT: &str = "sightline-reprocess-plan/2";

/// One day of the range as the warehouse holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DayInput {
    pub day: NaiveDate,
    /// Rows of `events_raw`'s partition of the day.
    pub rows: u64,
    /// Their uncompressed bytes.
    pub bytes: u64,
    /// Whether the day is sealed (no event can arrive for it any more).
    pub sealed: bool,
}

/// Everything a plan is made of.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanInputs {
    pub spec: ReprocessSpec,
    /// The processing identity the days get.
    pub processing: String,
    pub pipeline_version: u32,
    /// The image by digest.
    pub image: String,
    /// Every day of the range, in order.
    pub days: Vec<DayInput>,
}

/// The rows and bytes of `events_raw` per day of `first..=last` in database `db`; a day
/// without a partition has 0 of both. `sealed_through`: the last sealed day.
pub async fn read_days(
    wh: &dyn Warehouse,
    db: &str,
    first: NaiveDate,
    last: NaiveDate,
    sealed_through: NaiveDate,
) -> sightline_core::Result<Vec<DayInput>> {
    let rows = wh
        .select(
            "SELECT partition, toUInt64(sum(rows)) AS rows, toUInt64(sum(data_uncompressed_bytes)) AS bytes \
             FROM system.parts WHERE database = {db:String} AND table = {t:String} AND active GROUP BY partition",
            &Params::new().bind("db", db).bind("t", RAW_TABLE),
        )
        .await?;
    let mut found: BTreeMap<NaiveDate, (u64, u64)> = BTreeMap::new();
    for row in rows {
        let partition = row["partition"].as_str().unwrap_or_default();
        let Ok(day) = NaiveDate::parse_from_str(partition, "%Y%m%d") else {
            continue;
        };
        let n = |k: &str| {
            row[k]
                .as_u64()
                .or_else(|| row[k].as_str().and_then(|s| s.parse().ok()))
                .ok_or_else(|| sightline_core::Error::Decode(format!("{k} of partition {partition} in {row}")))
        };
        found.insert(day, (n("rows")?, n("bytes")?));
    }
    Ok(first
        .iter_days()
        .take_while(|d| *d <= last)
        .map(|day| {
            let (rows, bytes) = found.get(&day).copied().unwrap_or((0, 0));
            DayInput {
                day,
                rows,
                bytes,
                sealed: day <= sealed_through,
            }
        })
        .collect())
}

/// `YYYYMMDD` of a day, `YYYYMM` of its month: partition ids of the two partitionings.
fn day_id(d: NaiveDate) -> String {
    d.format("%Y%m%d").to_string()
}

fn month_id(d: NaiveDate) -> String {
    d.format("%Y%m").to_string()
}

/// The partitions a real run of `first..=last` replaces: `events` and the quarter-hour tier
/// per UTC day; the daily and monthly tiers per month holding the range's local days (a
/// local day is at most 14 hours from UTC: the day before the first and after the last
/// count). None for a dry run.
pub fn partitions(first: NaiveDate, last: NaiveDate, dry_run: bool) -> Vec<PlanPartitions> {
    if dry_run || last < first {
        return Vec::new();
    }
    let days = u32::try_from((last - first).num_days() + 1).unwrap_or(u32::MAX);
    let per_day = |table: &str| PlanPartitions {
        table: table.to_string(),
        first: day_id(first),
        last: day_id(last),
        count: days,
    };
    let (local_first, local_last) = (
        first.checked_sub_days(Days::new(1)).unwrap_or(first),
        last.checked_add_days(Days::new(1)).unwrap_or(last),
    );
    let months = u32::try_from(
        (local_last.year() - local_first.year()) * 12 + local_last.month() as i32 - local_first.month() as i32 + 1,
    )
    .unwrap_or(0);
    let per_month = |table: &str| PlanPartitions {
        table: table.to_string(),
        first: month_id(local_first),
        last: month_id(local_last),
        count: months,
    };
    let mut out = vec![per_day(EVENTS_TABLE)];
    for dims in [false, true] {
        out.push(per_day(Tier::QuarterHour.table(dims)));
    }
    for tier in [Tier::Daily, Tier::Monthly] {
        for dims in [false, true] {
            out.push(per_month(tier.table(dims)));
        }
    }
    out
}

/// The plan's hash: hex SHA-256 of the text `hashed_text` makes.
pub fn hash(inputs: &PlanInputs) -> String {
    let digest = Sha256::digest(hashed_text(inputs).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the hash covers, one fact a line (see the module docs).
pub fn hashed_text(inputs: &PlanInputs) -> String {
    let s = &inputs.spec;
    let mut sites = s.sites.clone();
    sites.sort();
    sites.dedup();
    let mut text = format!(
        "{HASH_FORMAT}\ntenant {}\nfrom {}\nto {}\nsites {}\ndryRun {}\nforce {}\nparallelism {}\nprocessing {}\npipeline {}\nimage {}\n",
        s.tenant_ref,
        s.from,
        s.to,
        sites.join(","),
        s.dry_run,
        s.force,
        s.parallelism,
        inputs.processing,
        inputs.pipeline_version,
        inputs.image
    );
    for d in &inputs.days {
        if d.sealed {
            text.push_str(&format!("day {} rows {}\n", d.day, d.rows));
        } else {
            text.push_str(&format!("day {} unsealed\n", d.day));
        }
    }
    if let (Some(first), Some(last)) = (inputs.days.first(), inputs.days.last()) {
        for p in partitions(first.day, last.day, s.dry_run) {
            text.push_str(&format!("partitions {} {} {} {}\n", p.table, p.first, p.last, p.count));
        }
    }
    text
}

/// The plan as the status shows it.
pub fn make(inputs: &PlanInputs, now: DateTime<Utc>) -> ReprocessPlan {
    let rows: u64 = inputs.days.iter().map(|d| d.rows).fold(0, u64::saturating_add);
    let bytes: u64 = inputs.days.iter().map(|d| d.bytes).fold(0, u64::saturating_add);
    let by_day = inputs.days.len() <= MAX_DAILY_BREAKDOWN;
    let mut breakdown: Vec<PlanPeriod> = Vec::new();
    for d in &inputs.days {
        let period = if by_day {
            d.day.to_string()
        } else {
            d.day.format("%Y-%m").to_string()
        };
        match breakdown.last_mut() {
            Some(p) if p.period == period => {
                p.days += 1;
                p.rows = p.rows.saturating_add(d.rows);
                p.bytes = p.bytes.saturating_add(d.bytes);
            }
            _ => breakdown.push(PlanPeriod {
                period,
                days: 1,
                rows: d.rows,
                bytes: d.bytes,
            }),
        }
    }
    let (first, last) = match (inputs.days.first(), inputs.days.last()) {
        (Some(a), Some(b)) => (a.day.to_string(), b.day.to_string()),
        _ => (String::new(), String::new()),
    };
    ReprocessPlan {
        hash: hash(inputs),
        computed_at: super::status::time(now),
        processing: inputs.processing.clone(),
        pipeline_version: inputs.pipeline_version,
        image: inputs.image.clone(),
        first_day: first,
        last_day: last,
        days: u32::try_from(inputs.days.len()).unwrap_or(u32::MAX),
        unsealed_days: u32::try_from(inputs.days.iter().filter(|d| !d.sealed).count()).unwrap_or(u32::MAX),
        rows,
        bytes,
        breakdown_by: if by_day { "Day" } else { "Month" }.into(),
        breakdown,
        partitions: match (inputs.days.first(), inputs.days.last()) {
            (Some(a), Some(b)) => partitions(a.day, b.day, inputs.spec.dry_run),
            _ => Vec::new(),
        },
        eta_seconds: rows.div_ceil(DOCUMENTED_ROWS_PER_SECOND),
        eta_basis: ETA_BASIS.into(),
    }
}

// ---- The image by digest. ----

/// The digest (`sha256:…`) in an image reference pinned by digest.
pub fn pinned_digest(image: &str) -> Option<&str> {
    image.rsplit_once('@').map(|(_, d)| d).filter(|d| is_sha256_digest(d))
}

fn is_sha256_digest(d: &str) -> bool {
    d.strip_prefix("sha256:")
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The digest in a container status's `imageID` (`docker-pullable://repo@sha256:…`,
/// `repo@sha256:…`, or a bare `sha256:…` for an image with no repository digest, which a
/// Job on another node could not pull: refused).
pub fn digest_of_image_id(image_id: &str) -> Option<&str> {
    image_id
        .rsplit_once('@')
        .map(|(_, d)| d)
        .filter(|d| is_sha256_digest(d))
}

/// `image` (with or without a tag) pinned to `digest`: `repo[:tag]` -> `repo@digest`.
pub fn by_digest(image: &str, digest: &str) -> String {
    let repo = image.split_once('@').map_or(image, |(r, _)| r);
    // A tag follows the last ':' after the last '/' (a registry's port precedes a '/').
    let repo = match repo.rsplit_once('/') {
        Some((host_path, name)) => match name.split_once(':') {
            Some((name, _tag)) => format!("{host_path}/{name}"),
            None => repo.to_string(),
        },
        None => repo.split_once(':').map_or(repo, |(n, _)| n).to_string(),
    };
    format!("{repo}@{digest}")
}

/// Where the operator's own pod is (from the downward API), to read its image's digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnPod {
    pub namespace: String,
    pub name: String,
}

impl OwnPod {
    /// `POD_NAMESPACE` and `POD_NAME`, when both are set.
    pub fn from_env() -> Option<Self> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Some(OwnPod {
            namespace: get("POD_NAMESPACE")?,
            name: get("POD_NAME")?,
        })
    }
}

/// Resolves the image a Reprocess's Job runs to a reference by digest; the operator's own
/// image's digest is read from its pod once and kept.
pub struct ImageSource {
    /// The operator's `--image` (what tenants run unless they name another).
    pub operator_image: String,
    pub own_pod: Option<OwnPod>,
    own_digest: tokio::sync::Mutex<Option<String>>,
}

impl ImageSource {
    pub fn new(operator_image: String, own_pod: Option<OwnPod>) -> Self {
        Self {
            operator_image,
            own_pod,
            own_digest: tokio::sync::Mutex::new(None),
        }
    }

    /// `image` by digest; `Error::ImageDigestUnknown` says why not and what to do.
    pub async fn resolve(&self, client: &Client, image: &str) -> Result<String> {
        if pinned_digest(image).is_some() {
            return Ok(image.to_string());
        }
        if image != self.operator_image {
            return Err(Error::ImageDigestUnknown(format!(
                "the tenant's image {image} is named by a tag and is not the operator's own image ({}), whose digest \
                 the operator reads from its pod: pin spec.ingest.image by digest ({image}@sha256:…)",
                self.operator_image
            )));
        }
        let mut cached = self.own_digest.lock().await;
        if let Some(d) = cached.as_ref() {
            return Ok(by_digest(image, d));
        }
        let d = self.read_own_digest(client).await?;
        *cached = Some(d.clone());
        Ok(by_digest(image, &d))
    }

    async fn read_own_digest(&self, client: &Client) -> Result<String> {
        let Some(own) = &self.own_pod else {
            return Err(Error::ImageDigestUnknown(format!(
                "POD_NAME and POD_NAMESPACE are not set (the chart sets them from the downward API), so the operator \
                 cannot read the digest of its image {}: set them, or pin the tenant's image by digest",
                self.operator_image
            )));
        };
        let pods: Api<Pod> = Api::namespaced(client.clone(), &own.namespace);
        let pod = pods.get_opt(&own.name).await?.ok_or_else(|| {
            Error::ImageDigestUnknown(format!(
                "the operator's pod {}/{} (POD_NAMESPACE/POD_NAME) does not exist",
                own.namespace, own.name
            ))
        })?;
        let spec_containers = pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
        let Some(container) = spec_containers
            .iter()
            .find(|c| c.image.as_deref() == Some(self.operator_image.as_str()))
        else {
            return Err(Error::ImageDigestUnknown(format!(
                "no container of the operator's pod {}/{} runs its --image {}: set --image to the image the operator runs, \
                 or pin the tenant's image by digest",
                own.namespace, own.name, self.operator_image
            )));
        };
        let image_id = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == container.name))
            .map(|c| c.image_id.clone())
            .unwrap_or_default();
        digest_of_image_id(&image_id).map(str::to_string).ok_or_else(|| {
            Error::ImageDigestUnknown(format!(
                "the operator's pod {}/{} reports no repository digest for container {} (imageID {image_id:?}): \
                 push the image to a registry, or pin the tenant's image by digest",
                own.namespace, own.name, container.name
            ))
        })
    }
}

/// Opens the warehouse of a tenant for the plan's read-only queries.
#[async_trait::async_trait]
pub trait Warehouses: Send + Sync {
    async fn open(&self, client: &Client, v: &Validated) -> Result<Arc<dyn Warehouse>>;
}

/// The tenant's ClickHouse (its URL and credentials Secret), as the tenant controller
/// opens it.
pub struct TenantWarehouse;

#[async_trait::async_trait]
impl Warehouses for TenantWarehouse {
    async fn open(&self, client: &Client, v: &Validated) -> Result<Arc<dyn Warehouse>> {
        crate::apply::warehouse(client, v).await
    }
}

/// One warehouse for every tenant (tests: the embedded engine).
pub struct FixedWarehouse(pub Arc<dyn Warehouse>);

#[async_trait::async_trait]
impl Warehouses for FixedWarehouse {
    async fn open(&self, _client: &Client, _v: &Validated) -> Result<Arc<dyn Warehouse>> {
        Ok(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    fn inputs(days: Vec<DayInput>) -> PlanInputs {
        PlanInputs {
            spec: serde_yaml::from_str("tenantRef: acme\nfrom: 2026-11-01\nto: 2026-11-04\n").unwrap(),
            processing: "v5".into(),
            pipeline_version: 5,
            image: format!("registry.example/sightline@sha256:{}", "a".repeat(64)),
            days,
        }
    }

    fn day(n: u32, rows: u64, bytes: u64) -> DayInput {
        DayInput {
            day: d(2026, 11, n),
            rows,
            bytes,
            sealed: true,
        }
    }

    #[test]
    fn the_hash_is_stable_and_covers_rows_identity_image_and_the_spec_not_bytes() {
        let base = inputs(vec![day(1, 10, 100), day(2, 20, 200), day(3, 0, 0)]);
        let h = hash(&base);
        assert_eq!(h.len(), 64);
        assert_eq!(h, hash(&base.clone()), "stable");
        let mut changed = Vec::new();
        let mut rows = base.clone();
        rows.days[1].rows += 1;
        changed.push(rows);
        let mut bytes = base.clone();
        bytes.days[0].bytes += 1;
        assert_eq!(hash(&bytes), h, "bytes move when parts merge: shown, not hashed");
        let mut identity = base.clone();
        identity.processing = "v5+bots".into();
        changed.push(identity);
        let mut version = base.clone();
        version.pipeline_version = 6;
        changed.push(version);
        let mut image = base.clone();
        image.image = format!("registry.example/sightline@sha256:{}", "b".repeat(64));
        changed.push(image);
        let mut dry = base.clone();
        dry.spec.dry_run = true;
        changed.push(dry);
        let mut sites = base.clone();
        sites.spec.sites = vec!["shop.example.com".into()];
        changed.push(sites);
        for c in &changed {
            assert_ne!(hash(c), h, "{:?}", hashed_text(c));
        }
        // The order sites are listed in does not matter; an unsealed day's rows do not count.
        let mut a = base.clone();
        a.spec.sites = vec!["b".into(), "a".into()];
        let mut b = base.clone();
        b.spec.sites = vec!["a".into(), "b".into()];
        assert_eq!(hash(&a), hash(&b));
        let mut live = base.clone();
        live.days[2].sealed = false;
        let mut busier = live.clone();
        busier.days[2].rows = 1_000;
        assert_ne!(hash(&live), h);
        assert_eq!(hash(&live), hash(&busier));
    }

    #[test]
    fn the_plan_lists_days_partitions_totals_and_a_documented_eta() {
        let rate = DOCUMENTED_ROWS_PER_SECOND;
        let p = make(&inputs(vec![day(1, rate, 1000), day(2, rate + 1, 2000)]), Utc::now());
        assert_eq!(
            (p.first_day.as_str(), p.last_day.as_str(), p.days),
            ("2026-11-01", "2026-11-02", 2)
        );
        assert_eq!((p.rows, p.bytes), (2 * rate + 1, 3000));
        assert_eq!(p.eta_seconds, 3, "rows at the documented rate, rounded up");
        assert_eq!(p.eta_basis, "DocumentedThroughput");
        assert_eq!(p.breakdown_by, "Day");
        assert_eq!(
            p.breakdown[1],
            PlanPeriod {
                period: "2026-11-02".into(),
                days: 1,
                rows: rate + 1,
                bytes: 2000
            }
        );
        let tables: Vec<(&str, &str, &str, u32)> = p
            .partitions
            .iter()
            .map(|x| (x.table.as_str(), x.first.as_str(), x.last.as_str(), x.count))
            .collect();
        assert_eq!(
            tables,
            [
                ("events", "20261101", "20261102", 2),
                ("rollup_site_15m", "20261101", "20261102", 2),
                ("rollup_dims_15m", "20261101", "20261102", 2),
                ("rollup_site_daily", "202610", "202611", 2),
                ("rollup_dims_daily", "202610", "202611", 2),
                ("rollup_site_monthly", "202610", "202611", 2),
                ("rollup_dims_monthly", "202610", "202611", 2),
            ]
        );
        assert!(
            partitions(d(2026, 11, 1), d(2026, 11, 2), true).is_empty(),
            "a dry run replaces nothing"
        );
        // A year: per month.
        let year: Vec<DayInput> = d(2025, 1, 1)
            .iter_days()
            .take(365)
            .map(|day| DayInput {
                day,
                rows: 1,
                bytes: 2,
                sealed: true,
            })
            .collect();
        let p = make(&inputs(year), Utc::now());
        assert_eq!(p.breakdown_by, "Month");
        assert_eq!(p.breakdown.len(), 12);
        assert_eq!(
            p.breakdown[1],
            PlanPeriod {
                period: "2025-02".into(),
                days: 28,
                rows: 28,
                bytes: 56
            }
        );
    }

    #[test]
    fn the_documented_rate_is_one_figure_everywhere_it_is_written() {
        assert_eq!(
            [
                grouped(0),
                grouped(999),
                grouped(1_000),
                grouped(240_000),
                grouped(5_000_000)
            ],
            ["0", "999", "1,000", "240,000", "5,000,000"]
        );
        let figure = format!("{} raw rows/s", grouped(DOCUMENTED_ROWS_PER_SECOND));
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let read = |file: &str| std::fs::read_to_string(root.join(file)).unwrap();
        for (name, text) in [
            ("the CRD", serde_json::to_string(&super::super::crd::crd()).unwrap()),
            ("README.md", read("README.md")),
            ("docs/replay.md", read("docs/replay.md")),
        ] {
            // Lines wrap anywhere in prose: compare with whitespace runs made one space.
            let text = text
                .replace("\\n", " ")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            assert!(
                text.contains(&figure),
                "{name} does not state the plan's rate, {figure}"
            );
        }
    }

    #[test]
    fn images_are_pinned_by_digest() {
        let digest = format!("sha256:{}", "c".repeat(64));
        assert_eq!(
            by_digest("ghcr.io/sightline/sightline:1.2", &digest),
            format!("ghcr.io/sightline/sightline@{digest}")
        );
        assert_eq!(
            by_digest("localhost:5000/sightline:dev", &digest),
            format!("localhost:5000/sightline@{digest}")
        );
        assert_eq!(by_digest("sightline", &digest), format!("sightline@{digest}"));
        assert_eq!(by_digest("sightline:dev", &digest), format!("sightline@{digest}"));
        assert_eq!(
            digest_of_image_id(&format!("docker-pullable://ghcr.io/sightline/sightline@{digest}")),
            Some(digest.as_str())
        );
        assert_eq!(
            digest_of_image_id(&digest),
            None,
            "a bare image id names no repository digest"
        );
        assert_eq!(pinned_digest(&format!("r/s@{digest}")), Some(digest.as_str()));
        assert_eq!(pinned_digest("r/s:tag"), None);
        assert_eq!(pinned_digest("r/s@sha256:short"), None);
    }
}
