//! The replay engine (docs/replay.md, "The replay engine"): `events` and the rollup tiers
//! of whole UTC days rebuilt from `events_raw` with a given processor, each day swapped in
//! atomically for readers. One library for `sightline reprocess` (a data directory, a
//! ClickHouse URL, or a running standalone server's admin endpoint), sealing (`seal`), and
//! start-up repair (`repair`).
//!
//! Per day (`day`): refuse it unless sealed or forced; take its lease (`lease`); stage its
//! rows in per-run tables (other sites' rows copied unchanged, the replayed sites' raw rows
//! streamed through the processor in the total order, `stream`); verify the staging
//! against `events_raw` counted again; `REPLACE PARTITION` into `events`; process what
//! writers slipped in meanwhile (forced days); rebuild the day's quarter-hour tier and
//! check it; refresh the daily tier's local days once every UTC day they overlap is
//! swapped; drop staging; checkpoint; release the lease.
//!
//! Days run `parallelism` at a time. Day D's visitors that continue a visit from D-1 are
//! processed with the visits open at D's midnight, which come from D-1's staging when D-1
//! is in the same run (so a run's days follow each other's new rows whatever the order
//! they finish in), else from `events`.

pub mod checkpoint;
mod compare;
mod day;
pub mod lease;
mod left_behind;
mod repair;
pub mod seal;
mod stream;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
pub use tokio_util::sync::CancellationToken;

use super::{tiers, Params, Warehouse};
use crate::processor::session::SessionState;
use crate::processor::{identity, Processor, ProcessorConfig};
use crate::spec::Tenant;
use crate::{Error, Result};

pub use checkpoint::Checkpoint;
pub use compare::{Comparison, MetricChange, ValueChange};
pub use left_behind::{clear_left_behind, LeftBehind};
pub use repair::{inconsistent_days, repair_recent_days, replay_day, replay_days, DayReplayed};

/// The most days a run works on at once.
pub const MAX_PARALLELISM: usize = 16;

/// What to replay and how.
#[derive(Clone)]
pub struct ReplayRequest {
    pub tenant: Tenant,
    /// `[from, to)`, widened to whole UTC days.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The sites replayed; empty: every site. Other sites' rows of the days stay as they are.
    pub sites: Vec<String>,
    /// What processes the raw rows (and names the identity stamped on every row).
    pub processor: Arc<dyn Processor>,
    /// Stage, verify and compare each day; swap nothing.
    pub dry_run: bool,
    /// Replay days that are not sealed yet (they may still receive events).
    pub force: bool,
    /// Days at once, 1 to `MAX_PARALLELISM`.
    pub parallelism: usize,
    /// Why (reprocess, sealing, repair): recorded with the leases, shown to whoever waits.
    pub purpose: String,
    /// Whether writers may be storing into forced days meanwhile (the engine then gives them
    /// time to see its lease and processes what they slipped in). False only where the
    /// caller knows nothing writes (start-up, before writers start).
    pub beside_writers: bool,
    /// The clock that decides which days are sealed.
    pub now: DateTime<Utc>,
}

impl ReplayRequest {
    /// A request with the defaults: every site, no dry run, not forced, one day at a time,
    /// purpose `reprocess`, beside writers, now.
    pub fn new(tenant: Tenant, from: DateTime<Utc>, to: DateTime<Utc>, processor: Arc<dyn Processor>) -> Self {
        ReplayRequest {
            tenant,
            from,
            to,
            sites: Vec::new(),
            processor,
            dry_run: false,
            force: false,
            parallelism: 1,
            purpose: "reprocess".into(),
            beside_writers: true,
            now: Utc::now(),
        }
    }

    fn config(&self) -> ProcessorConfig {
        ProcessorConfig {
            bot_filtering: self.tenant.spec.bot_filtering,
        }
    }

    /// The processing identity the days get (`processor::identity`).
    pub fn identity(&self) -> String {
        identity(self.processor.version(), self.config())
    }
}

/// `[from, to)` as whole UTC days: `first` to `last`, both included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayRange {
    pub first: NaiveDate,
    pub last: NaiveDate,
    /// Whether `from` or `to` fell inside a day, so that the range grew to whole days.
    pub widened: bool,
}

pub(crate) fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

impl DayRange {
    /// The UTC days that `[from, to)` touches; an error when it is empty.
    pub fn widen(from: DateTime<Utc>, to: DateTime<Utc>) -> Result<DayRange> {
        if to <= from {
            return Err(Error::InvalidReplay(format!(
                "the range [{from}, {to}) is empty: `to` must be after `from`"
            )));
        }
        let first = from.date_naive();
        let end = to.date_naive();
        let last = if to == midnight(end) { end - Days::new(1) } else { end };
        Ok(DayRange {
            first,
            last,
            widened: from != midnight(first) || to != midnight(last + Days::new(1)),
        })
    }

    pub fn days(&self) -> Vec<NaiveDate> {
        self.first.iter_days().take_while(|d| *d <= self.last).collect()
    }
}

/// Which sites' rows a run replays, as a SQL condition on `site_id` with its parameter.
#[derive(Clone, Debug)]
pub(crate) struct SiteFilter {
    sites: Vec<String>,
}

impl SiteFilter {
    /// The replayed rows.
    pub(crate) fn condition(&self) -> &'static str {
        if self.sites.is_empty() {
            "1 = 1"
        } else {
            "site_id IN {sites:Array(String)}"
        }
    }

    /// The rows of the other sites, if some are left out.
    pub(crate) fn others(&self) -> Option<&'static str> {
        (!self.sites.is_empty()).then_some("site_id NOT IN {sites:Array(String)}")
    }

    pub(crate) fn params(&self) -> Params {
        Params::new().bind("sites", Params::array_of_strings(&self.sites))
    }
}

/// What a run did, day by day.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplayReport {
    /// Names the run's leases and staging tables.
    pub run_id: String,
    pub tenant: String,
    /// The range asked for, and the whole UTC days it became.
    pub requested_from: DateTime<Utc>,
    pub requested_to: DateTime<Utc>,
    pub range: DayRange,
    /// Replayed sites (empty: all).
    pub sites: Vec<String>,
    /// The identity the days were replayed with.
    pub processing: String,
    pub dry_run: bool,
    /// Days finished by this run, in day order.
    pub days: Vec<DayReport>,
    /// Days an earlier run had finished (from the checkpoint): not touched.
    pub skipped: Vec<NaiveDate>,
}

/// One day of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DayReport {
    pub day: NaiveDate,
    /// Raw rows of the replayed sites read and processed.
    pub raw_rows: u64,
    /// Rows of other sites copied unchanged.
    pub copied_rows: u64,
    /// Raw rows a writer stored into the day during a forced replay, processed after the
    /// swap (`live::reconcile_visitors`).
    pub caught_up: u64,
    /// The identities that had made the replayed sites' rows, with their (net) rows.
    pub processing_before: BTreeMap<String, u64>,
    pub processing_after: String,
    /// False in a dry run.
    pub swapped: bool,
    /// Dry runs: the day now and as the replay would make it.
    pub comparison: Option<Comparison>,
    pub seconds: f64,
}

/// Where a run is, for progress bars.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Days finished and checkpointed (`ReplayHooks::day_done` returned for each).
    pub days_done: usize,
    pub days_total: usize,
    pub rows_read: u64,
    pub rows_written: u64,
}

/// What a caller hears during a run: progress (after each page of rows and each day), and
/// each finished day with the checkpoint that now includes it, to keep where the run can
/// resume from and what the day did.
#[async_trait::async_trait]
pub trait ReplayHooks: Sync {
    fn progress(&self, _progress: &Progress) {}
    /// When a day is launched (before its lease is taken): what a caller shows as the day
    /// under way.
    fn day_started(&self, _day: NaiveDate) {}
    /// After each finished day (swapped with its tiers refreshed, or compared in a dry run),
    /// one day at a time and before its lease is released: `day` is its report and
    /// `checkpoint` the run's, with the day among `done`. A caller that keeps the checkpoint
    /// somewhere slow (a file, a Kubernetes status) does so here; an error stops the run
    /// (the days under way finish first) and the day counts as failed, so a resume replays
    /// it again from the same inputs.
    async fn day_done(&self, _day: &DayReport, _checkpoint: &Checkpoint) -> Result<()> {
        Ok(())
    }
}

/// Hooks that listen to nothing.
pub struct NoHooks;
impl ReplayHooks for NoHooks {}

/// Runs a replay of `request`'s range (see the module documentation), resuming from
/// `resume` (a checkpoint of the same run) if given. Stops launching days once `cancel` is
/// cancelled or a day failed; the days under way finish first. Errors: `InvalidReplay`,
/// `DayNotSealed` (before anything is done); `ReplayStopped` with the report of the days
/// done when a day failed (`DayLeased`, `ReplayMismatch`, a warehouse error) or the run was
/// cancelled.
pub async fn run(
    wh: &dyn Warehouse,
    request: ReplayRequest,
    resume: Option<Checkpoint>,
    hooks: &dyn ReplayHooks,
    cancel: &CancellationToken,
) -> Result<ReplayReport> {
    let range = DayRange::widen(request.from, request.to)?;
    run_days(wh, request, range.days(), resume, hooks, cancel).await
}

/// The checks `run` makes before it starts, and the checkpoint of a fresh run: what a
/// caller uses to refuse a request early or to name its checkpoint.
pub fn prepare(request: &ReplayRequest) -> Result<(DayRange, Checkpoint)> {
    let range = DayRange::widen(request.from, request.to)?;
    check(request, &range.days())?;
    Ok((range, fresh_checkpoint(request, &range)))
}

fn fresh_checkpoint(request: &ReplayRequest, range: &DayRange) -> Checkpoint {
    let mut sites = request.sites.clone();
    sites.sort();
    sites.dedup();
    Checkpoint {
        tenant: request.tenant.name.clone(),
        first_day: range.first,
        last_day: range.last,
        sites,
        processing: request.identity(),
        dry_run: request.dry_run,
        done: BTreeSet::new(),
    }
}

fn check(request: &ReplayRequest, days: &[NaiveDate]) -> Result<()> {
    if !(1..=MAX_PARALLELISM).contains(&request.parallelism) {
        return Err(Error::InvalidReplay(format!(
            "parallelism {}: 1 to {MAX_PARALLELISM} days at once",
            request.parallelism
        )));
    }
    for site in &request.sites {
        if request.tenant.spec.site(site).is_none() {
            return Err(Error::InvalidReplay(format!(
                "site {site:?} is not a site of tenant {}",
                request.tenant.name
            )));
        }
    }
    if days.is_empty() {
        return Err(Error::InvalidReplay("no day to replay".into()));
    }
    let sealed_through = tiers::sealed_through(request.now);
    if !request.force {
        if let Some(day) = days.iter().find(|d| **d > sealed_through) {
            return Err(Error::DayNotSealed {
                day: *day,
                sealed_through,
            });
        }
    }
    Ok(())
}

/// `run` over the given days (sorted, within the request's range).
pub(crate) async fn run_days(
    wh: &dyn Warehouse,
    mut request: ReplayRequest,
    mut days: Vec<NaiveDate>,
    resume: Option<Checkpoint>,
    hooks: &dyn ReplayHooks,
    cancel: &CancellationToken,
) -> Result<ReplayReport> {
    days.sort_unstable();
    days.dedup();
    request.sites.sort();
    request.sites.dedup();
    check(&request, &days)?;
    // `REPLACE PARTITION` swaps one server's tables: on a cluster a replay would have to run
    // per shard on the local tables (docs/storage.md, "On a ClickHouse cluster").
    if crate::ddl::Form::for_backend(&request.tenant, wh.backend())?
        .cluster()
        .is_some()
    {
        return Err(Error::InvalidReplay(format!(
            "tenant {} is on a ClickHouse cluster, where replays are not done yet (they swap partitions per shard)",
            request.tenant.name
        )));
    }
    let range = DayRange::widen(request.from, request.to)?;
    let checkpoint = fresh_checkpoint(&request, &range).resume_from(resume)?;
    let (skipped, pending): (Vec<NaiveDate>, Vec<NaiveDate>) = days.iter().partition(|d| checkpoint.done.contains(*d));
    let db = request.tenant.database();
    let hourly_live = !request.dry_run && tiers::hourly_layout_live(wh, &db).await?;
    let run_id = format!("{}-{:08x}", request.purpose, rand::random::<u32>());
    let mut report = ReplayReport {
        run_id: run_id.clone(),
        tenant: request.tenant.name.clone(),
        requested_from: request.from,
        requested_to: request.to,
        range,
        sites: request.sites.clone(),
        processing: request.identity(),
        dry_run: request.dry_run,
        days: Vec::new(),
        skipped,
    };
    tracing::info!(tenant = %request.tenant.name, run = %run_id, days = pending.len(), skipped = report.skipped.len(),
        dry_run = request.dry_run, processing = %report.processing, "replay starting");

    let seeds = pending
        .iter()
        .map(|d| (*d, tokio::sync::watch::channel(None)))
        .collect::<HashMap<_, _>>();
    let shared = Shared {
        wh,
        sites: SiteFilter {
            sites: request.sites.clone(),
        },
        db,
        run_id,
        sealed_through: tiers::sealed_through(request.now),
        hooks,
        pending: pending.iter().copied().collect(),
        seeds,
        progress: ProgressCounters {
            total: pending.len(),
            ..Default::default()
        },
        state: tokio::sync::Mutex::new(RunState {
            checkpoint,
            finished: BTreeSet::new(),
            refreshed: BTreeSet::new(),
        }),
        request,
    };

    let mut running = FuturesUnordered::new();
    let mut queue = pending.iter().copied();
    let mut failure: Option<(NaiveDate, Error)> = None;
    loop {
        while running.len() < shared.request.parallelism && failure.is_none() && !cancel.is_cancelled() {
            let Some(day) = queue.next() else { break };
            shared.hooks.day_started(day);
            let shared = &shared;
            running.push(async move { (day, day::replay_day(shared, day).await) });
        }
        let Some((day, outcome)) = running.next().await else {
            break;
        };
        match outcome {
            Ok(done) => report.days.push(done),
            Err(e) => {
                tracing::error!(run = %shared.run_id, %day, error = %e, "day failed; the run stops after the days under way");
                // The first failure is the cause; days that failed because of it follow.
                if failure.as_ref().is_none_or(|(d, _)| day < *d) {
                    failure = Some((day, e));
                }
            }
        }
    }
    report.days.sort_by_key(|d| d.day);
    if hourly_live && !report.days.is_empty() {
        let mut months: Vec<(i32, u32)> = report.days.iter().map(|d| (d.day.year(), d.day.month())).collect();
        months.sort_unstable();
        months.dedup();
        for (year, month) in months {
            repair::rebuild_hourly_month(wh, &shared.request.tenant, year, month).await?;
        }
    }
    if let Some((day, cause)) = failure {
        return Err(Error::ReplayStopped {
            day,
            cause: Box::new(cause),
            report: Box::new(report),
        });
    }
    if let Some(day) = queue.next() {
        return Err(Error::ReplayStopped {
            day,
            cause: Box::new(Error::Cancelled),
            report: Box::new(report),
        });
    }
    tracing::info!(run = %report.run_id, days = report.days.len(), "replay done");
    Ok(report)
}

/// The open sessions at the end of a staged day, or why there are none.
type Seed = Option<std::result::Result<Arc<SessionState>, String>>;

/// What the days of a run share.
pub(crate) struct Shared<'a> {
    wh: &'a dyn Warehouse,
    request: ReplayRequest,
    sites: SiteFilter,
    db: String,
    run_id: String,
    sealed_through: NaiveDate,
    hooks: &'a dyn ReplayHooks,
    /// The days this run works on (not done by an earlier run).
    pending: BTreeSet<NaiveDate>,
    /// Per pending day, the visits open at its end once it is staged (for the next day).
    seeds: HashMap<NaiveDate, (tokio::sync::watch::Sender<Seed>, tokio::sync::watch::Receiver<Seed>)>,
    progress: ProgressCounters,
    state: tokio::sync::Mutex<RunState>,
}

#[derive(Default)]
struct ProgressCounters {
    total: usize,
    done: AtomicUsize,
    read: AtomicU64,
    written: AtomicU64,
}

struct RunState {
    checkpoint: Checkpoint,
    /// Days of this run swapped (and their quarter-hour tier rebuilt).
    finished: BTreeSet<NaiveDate>,
    /// Local days of the daily tier refreshed by this run.
    refreshed: BTreeSet<NaiveDate>,
}

impl Shared<'_> {
    fn report_progress(&self, read: u64, written: u64) {
        self.progress.read.fetch_add(read, Ordering::Relaxed);
        self.progress.written.fetch_add(written, Ordering::Relaxed);
        self.hooks.progress(&Progress {
            days_done: self.progress.done.load(Ordering::Relaxed),
            days_total: self.progress.total,
            rows_read: self.progress.read.load(Ordering::Relaxed),
            rows_written: self.progress.written.load(Ordering::Relaxed),
        });
    }

    /// The visits open at `day`'s first midnight: from the run's staging of the day before
    /// when this run replays it (waiting until it is staged), else from `events`.
    async fn seed(&self, day: NaiveDate) -> Result<Arc<SessionState>> {
        let before = day - Days::new(1);
        if let Some((_, receiver)) = self.seeds.get(&before) {
            let mut receiver = receiver.clone();
            let seed = receiver
                .wait_for(Option::is_some)
                .await
                .map_err(|_| Error::InvalidReplay(format!("day {before} stopped before it was staged")))?
                .clone();
            return match seed {
                Some(Ok(seed)) => Ok(seed),
                Some(Err(why)) => Err(Error::InvalidReplay(format!(
                    "day {before}, which this day's visits continue from, failed: {why}"
                ))),
                None => unreachable!("waited for a value"),
            };
        }
        let mut seed = SessionState::default();
        super::ops::restore_sessions(self.wh, &self.db, midnight(day), &mut seed).await?;
        Ok(Arc::new(seed))
    }

    /// Publishes the visits open at the end of `day` (or why there are none) for the next day.
    fn publish_seed(&self, day: NaiveDate, seed: Seed) {
        if let Some((sender, _)) = self.seeds.get(&day) {
            sender.send_if_modified(|current| {
                if current.is_none() {
                    *current = seed;
                    true
                } else {
                    false
                }
            });
        }
    }

    /// After a day was swapped (or compared, in a dry run): the daily tier's local days that
    /// every UTC day they overlap is final for (swapped by this run, or not part of it) are
    /// refreshed, then the day is checkpointed and handed to the hooks. One day at a time,
    /// so refreshes never race and the hooks see the days in the order they finished.
    async fn finish(&self, report: &DayReport) -> Result<()> {
        let day = report.day;
        let mut state = self.state.lock().await;
        if !self.request.dry_run {
            state.finished.insert(day);
            let unfinished: BTreeSet<NaiveDate> = self.pending.difference(&state.finished).copied().collect();
            // A local day is at most 14 hours from its UTC date: it overlaps that day and
            // the ones either side.
            let settled: Vec<NaiveDate> = [day - Days::new(1), day, day + Days::new(1)]
                .into_iter()
                .filter(|l| {
                    !state.refreshed.contains(l)
                        && [*l - Days::new(1), *l, *l + Days::new(1)]
                            .iter()
                            .all(|u| !unfinished.contains(u))
                })
                .collect();
            if !settled.is_empty() {
                tiers::refresh_daily_days(self.wh, &self.request.tenant, &settled).await?;
                state.refreshed.extend(settled);
            }
        }
        state.checkpoint.done.insert(day);
        // Checkpointed before it is counted: a day reported done (the CLI's "1/3 days done",
        // a resource's progress) is one a resumed run skips, even if the process dies
        // right after saying so.
        self.hooks.day_done(report, &state.checkpoint).await?;
        self.progress.done.fetch_add(1, Ordering::Relaxed);
        self.report_progress(0, 0);
        Ok(())
    }
}
