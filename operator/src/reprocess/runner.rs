//! The Job pod's side of a Reprocess: `sightline reprocess --resource NS/NAME`. It reads
//! its Reprocess through the Kubernetes API, runs core's replay engine (the one `sightline
//! reprocess` runs offline and against a ClickHouse URL) from the checkpoint in the status,
//! and writes the status: `Running` when it starts, a heartbeat every `heartbeat` (10 s;
//! the operator calls a run silent for 60 s stalled) whether a day ends or not, progress,
//! the day's result and the ledger (each day under the plan's hash) after every day, then
//! the outcome.
//!
//! - **The plan**: the pod runs only the plan the operator made (`status.plan`): its
//!   processing identity must be this image's (`PlanMismatch` otherwise) and, under
//!   `approval: Manual`, `spec.approvedPlanHash` must name it (`NotApproved`). A run an
//!   operator admitted before plans existed has none and is recorded under an empty hash.
//! - **Writes** are JSON merge patches of the status subresource carrying the
//!   `resourceVersion` last seen (the object a write answered, or a fresh read after a
//!   409), so they never overwrite what the operator wrote meanwhile; each write is
//!   computed from that object's status.
//! - **Resume**: the checkpoint holds the days done and the processing identity; a pod
//!   replays only the other days, and refuses (`ProcessorChanged`) to continue a run whose
//!   days another processor made. A day swapped but not yet recorded when its pod died is
//!   replayed again from the same inputs (the raw rows and the visits open at its midnight
//!   are what they were).
//! - **Cancel**: a write whose answer shows `deletionTimestamp` (or a 404) stops the run
//!   after the days under way; the pod writes `Cancelled` and exits 0, and the operator
//!   records the finished days in an Event before it lets the object go.
//! - **Stop** (SIGTERM, `interrupt`): the days under way finish and are recorded, the pod
//!   exits non-zero and the Job's next pod resumes. A day an earlier pod of this run held
//!   when it died (SIGKILL, OOM) stays leased until its lease expires (5 minutes): the pod
//!   waits for it rather than fail.
//!
//! The pod's ServiceAccount may only `get` this Reprocess and `patch` its status.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use sightline_core::processor::Processor;
use sightline_core::spec::Tenant;
use sightline_core::warehouse::replay::{
    self, CancellationToken, Checkpoint, DayReport, Progress, ReplayHooks, ReplayReport,
};
use sightline_core::warehouse::Warehouse;

use super::controller::Clock;
use super::crd::{Approval, Phase, Reprocess, ReprocessStatus};
use super::status::{self, Final, Live, ResumeError};
use crate::error::Result;

/// Conflicts (409) a status write retries after a fresh read before it gives up.
const MAX_CONFLICTS: u32 = 10;
/// Other failed status writes retried (an API server restarting, a 5xx, a timeout).
const MAX_RETRIES: u32 = 5;

/// What one pod needs.
pub struct Runner {
    /// Reprocesses of the pod's namespace.
    pub api: Api<Reprocess>,
    pub name: String,
    /// The tenants the pod knows (its tenant's ConfigMap).
    pub tenants: Vec<Tenant>,
    /// The processor of this image.
    pub processor: Arc<dyn Processor>,
    pub now: Clock,
    /// Cancelled when the pod is told to stop (SIGTERM).
    pub interrupt: CancellationToken,
    /// How often to look again at a day an earlier pod of this run left leased.
    pub lease_poll: Duration,
    /// How long to wait at most for such a lease (its TTL and a margin).
    pub lease_wait: Duration,
    /// Pause before retrying a failed status write.
    pub retry_pause: Duration,
    /// Time between two heartbeats while days run (`status::HEARTBEAT_INTERVAL`).
    pub heartbeat: Duration,
}

/// How the pod's work ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every day done; `Succeeded` written.
    Succeeded,
    /// Refused or failed for good; `Failed` written with this reason.
    Failed(&'static str),
    /// The Reprocess was deleted; `Cancelled` written after the days under way.
    Cancelled,
    /// The Reprocess was final already: nothing to do.
    AlreadyFinal(Phase),
    /// The Reprocess no longer exists.
    Gone,
    /// Stopped without an outcome (a signal, an outage, a lease): the Job's next pod
    /// resumes. The only outcome that exits non-zero.
    Interrupted(String),
}

impl Outcome {
    /// Whether the pod exits non-zero so that the Job makes another pod.
    pub fn resumable(&self) -> bool {
        matches!(self, Outcome::Interrupted(_))
    }
}

impl Runner {
    /// The purpose recorded with the run's day leases: names this Reprocess, so that a pod
    /// recognises the leases an earlier pod of it left behind.
    pub fn purpose(&self) -> String {
        format!("reprocess {}/{}", self.api.namespace().unwrap_or_default(), self.name)
    }

    /// Runs (or resumes) the replay the Reprocess asks for. `Err` only for an API failure
    /// outside a status write's retries (the pod then exits non-zero and is retried).
    pub async fn run(&self, wh: &dyn Warehouse) -> Result<Outcome> {
        let mut waiting_since: Option<Instant> = None;
        loop {
            match self.attempt(wh).await? {
                Attempt::Done(outcome) => return Ok(outcome),
                Attempt::LeasedByEarlierPod(message) => {
                    let since = *waiting_since.get_or_insert_with(Instant::now);
                    if since.elapsed() >= self.lease_wait {
                        return Ok(Outcome::Interrupted(format!(
                            "{message}; still leased after {:?}",
                            self.lease_wait
                        )));
                    }
                    tracing::info!(wait = ?self.lease_poll, "{message}");
                    tokio::select! {
                        _ = tokio::time::sleep(self.lease_poll) => {}
                        _ = self.interrupt.cancelled() => {
                            return Ok(Outcome::Interrupted("stopped while waiting for a lease".into()))
                        }
                    }
                }
            }
        }
    }

    async fn attempt(&self, wh: &dyn Warehouse) -> Result<Attempt> {
        let Some(rp) = self.api.get_opt(&self.name).await? else {
            return Ok(Attempt::Done(Outcome::Gone));
        };
        let phase = rp.status.as_ref().map(ReprocessStatus::phase).unwrap_or_default();
        if phase.is_final() {
            tracing::info!(?phase, "the Reprocess is final already; nothing to do");
            return Ok(Attempt::Done(Outcome::AlreadyFinal(phase)));
        }
        let writer = StatusWriter::new(self, rp.clone());
        if rp.metadata.deletion_timestamp.is_some() {
            return writer
                .cancelled("before this pod replayed a day")
                .await
                .map(Attempt::Done);
        }
        let spec = &rp.spec.reprocess;
        let Some(tenant) = self.tenants.iter().find(|t| t.name == spec.tenant_ref) else {
            let message = format!(
                "tenant {:?} is not in the pod's tenants directory (its ConfigMap)",
                spec.tenant_ref
            );
            return writer.failed("UnknownTenant", message).await.map(Attempt::Done);
        };
        let mut request = match spec.request(tenant, self.processor.clone()) {
            Ok(r) => r,
            Err(e) => return writer.failed("Invalid", e.to_string()).await.map(Attempt::Done),
        };
        request.now = (self.now)();
        request.purpose = self.purpose();
        let fresh = match replay::prepare(&request) {
            Ok((_, fresh)) => fresh,
            Err(e @ sightline_core::Error::DayNotSealed { .. }) => {
                let message = format!("{e}; set spec.force to replay it anyway");
                return writer.failed("NotSealed", message).await.map(Attempt::Done);
            }
            Err(e) => return writer.failed("Invalid", e.to_string()).await.map(Attempt::Done),
        };
        let saved = rp.status.as_ref().and_then(|s| s.checkpoint.as_ref());
        let resume = match status::resume_from(saved, fresh) {
            Ok(c) => c,
            Err(e @ ResumeError::OtherProcessor { .. }) => {
                return writer
                    .failed("ProcessorChanged", e.to_string())
                    .await
                    .map(Attempt::Done)
            }
            Err(e @ ResumeError::Unreadable(_)) => {
                return writer
                    .failed("CheckpointUnreadable", e.to_string())
                    .await
                    .map(Attempt::Done)
            }
        };
        if let Some(refusal) = plan_refusal(&rp, &resume.processing) {
            let (reason, message) = refusal;
            return writer.failed(reason, message).await.map(Attempt::Done);
        }
        // The bytes of each day, for `bytesRead` (the plan's figures, read again: the
        // status keeps them per month for long ranges).
        let bytes = match super::plan::read_days(
            wh,
            &tenant.database(),
            resume.first_day,
            resume.last_day,
            sightline_core::warehouse::tiers::sealed_through(request.now),
        )
        .await
        {
            Ok(days) => days.into_iter().map(|d| (d.day, d.bytes)).collect::<BTreeMap<_, _>>(),
            Err(e) => {
                let message = format!("reading events_raw's partitions: {e}; the Job's next pod resumes");
                return writer.interrupted(message).await.map(Attempt::Done);
            }
        };
        let total = status::days_total(&resume);
        let done_before = resume.done.len();
        let message = format!(
            "replaying days {} to {} with processing {}{}",
            resume.first_day,
            resume.last_day,
            resume.processing,
            if done_before > 0 {
                format!(", resuming after {done_before} of {total} days done")
            } else {
                String::new()
            }
        );
        let base = writer.rows_so_far();
        let cancel = self.interrupt.child_token();
        let hooks = StatusHooks {
            writer: &writer,
            base,
            live: Mutex::new(LiveState {
                progress: Progress::default(),
                running: BTreeSet::new(),
                done: resume.done.clone(),
                bytes,
            }),
            cancel: cancel.clone(),
            deleted: AtomicBool::new(false),
            over: AtomicBool::new(false),
        };
        let now = self.now.clone();
        let live = hooks.live();
        match writer
            .write(|rp| {
                status::started(
                    rp.status.as_ref(),
                    rp.metadata.generation,
                    &resume,
                    &live,
                    &message,
                    now(),
                )
            })
            .await?
        {
            Written::Gone => return Ok(Attempt::Done(Outcome::Gone)),
            Written::Final(phase) => return Ok(Attempt::Done(Outcome::AlreadyFinal(phase))),
            Written::Ok { deleting: true } => {
                return writer
                    .cancelled("before this pod replayed a day")
                    .await
                    .map(Attempt::Done)
            }
            Written::Ok { deleting: false } => {}
        }
        tracing::info!(tenant = %tenant.name, done_before, total, "{message}");

        let outcome = tokio::select! {
            outcome = replay::run(wh, request, Some(resume), &hooks, &cancel) => outcome,
            never = self.heartbeats(&writer, &hooks) => match never {},
        };
        if hooks.over.load(Ordering::SeqCst) {
            let current = writer.current();
            return Ok(Attempt::Done(
                match current.status.as_ref().map(ReprocessStatus::phase) {
                    Some(phase) if phase.is_final() => Outcome::AlreadyFinal(phase),
                    _ => Outcome::Gone,
                },
            ));
        }
        let deleted = hooks.deleted.load(Ordering::SeqCst);
        self.conclude(&writer, outcome, deleted).await
    }

    /// A heartbeat every `self.heartbeat` while the engine runs (days under way or not);
    /// never returns (the engine's end ends it). A write that fails is logged: the next one
    /// may pass, and a run silent for 60 s is the operator's to handle.
    async fn heartbeats(&self, writer: &StatusWriter<'_>, hooks: &StatusHooks<'_>) -> std::convert::Infallible {
        beat_every(self.heartbeat, || async {
            if hooks.over.load(Ordering::SeqCst) {
                return;
            }
            let live = hooks.live();
            let now = writer.now();
            match writer
                .write(|rp| status::heartbeat(rp.status.as_ref(), rp.metadata.generation, &live, now))
                .await
            {
                Ok(Written::Ok { .. }) => tracing::debug!(?live, "heartbeat"),
                Ok(Written::Gone | Written::Final(_)) => {}
                Err(e) => tracing::warn!(error = %e.chain(), "heartbeat not written"),
            }
        })
        .await
    }

    /// The status and outcome after the engine returned.
    async fn conclude(
        &self,
        writer: &StatusWriter<'_>,
        outcome: sightline_core::Result<ReplayReport>,
        deleted: bool,
    ) -> Result<Attempt> {
        use sightline_core::Error as E;
        let done = |w: &StatusWriter<'_>| w.progress_line();
        match outcome {
            Ok(report) => {
                let verb = if report.dry_run { "compared" } else { "replayed" };
                let message = format!(
                    "{} days {verb} with processing {} ({} by this pod, {} by earlier ones)",
                    report.days.len() + report.skipped.len(),
                    report.processing,
                    report.days.len(),
                    report.skipped.len()
                );
                let reason = if report.dry_run { "Compared" } else { "Replayed" };
                writer
                    .finish(Final::Succeeded { reason, message }, Outcome::Succeeded)
                    .await
                    .map(Attempt::Done)
            }
            Err(E::ReplayStopped { .. }) if deleted => {
                writer.cancelled("after the days under way").await.map(Attempt::Done)
            }
            Err(E::ReplayStopped { cause, day, .. }) => match *cause {
                E::Cancelled => {
                    let message = format!(
                        "this pod was told to stop; it finished the days under way ({}) and the Job's next pod resumes",
                        done(writer)
                    );
                    writer.interrupted(message).await.map(Attempt::Done)
                }
                E::DayLeased { day, holder, purpose } if purpose == self.purpose() => {
                    let message = format!(
                        "day {day} is leased by {holder}, an earlier pod of this Reprocess that stopped without \
                         releasing it; waiting for the lease to expire ({} minutes at most)",
                        replay::lease::TTL.num_minutes()
                    );
                    writer.note(&message).await?;
                    Ok(Attempt::LeasedByEarlierPod(message))
                }
                cause @ (E::DayLeased { .. } | E::Unreachable(_)) => {
                    let message = format!("day {day}: {cause}; the Job's next pod resumes ({})", done(writer));
                    writer.interrupted(message).await.map(Attempt::Done)
                }
                cause if cause.is_transient() => {
                    let message = format!("day {day}: {cause}; the Job's next pod resumes ({})", done(writer));
                    writer.interrupted(message).await.map(Attempt::Done)
                }
                cause => {
                    let message = format!("day {day}: {cause} ({})", done(writer));
                    writer
                        .finish(
                            Final::Failed {
                                reason: "ReplayFailed",
                                message,
                                day: Some(day),
                            },
                            Outcome::Failed("ReplayFailed"),
                        )
                        .await
                        .map(Attempt::Done)
                }
            },
            Err(e) if e.is_transient() => {
                let message = format!("{e}; the Job's next pod resumes ({})", done(writer));
                writer.interrupted(message).await.map(Attempt::Done)
            }
            Err(e) => writer.failed("ReplayFailed", e.to_string()).await.map(Attempt::Done),
        }
    }
}

/// One pass over the run.
enum Attempt {
    Done(Outcome),
    /// A day an earlier pod of this run left leased: look again after `lease_poll`.
    LeasedByEarlierPod(String),
}

/// What a status write found.
enum Written {
    /// Written; whether the object is being deleted.
    Ok { deleting: bool },
    /// The Reprocess no longer exists.
    Gone,
    /// Not written: the status is final already (the operator refused the Reprocess or
    /// gave its Job up meanwhile): this pod's run is over.
    Final(Phase),
}

/// The pod's status writes, each based on the object last seen.
struct StatusWriter<'a> {
    runner: &'a Runner,
    current: Mutex<Reprocess>,
}

impl<'a> StatusWriter<'a> {
    fn new(runner: &'a Runner, rp: Reprocess) -> Self {
        StatusWriter {
            runner,
            current: Mutex::new(rp),
        }
    }

    fn current(&self) -> Reprocess {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_current(&self, rp: Reprocess) {
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = rp;
    }

    fn rows_so_far(&self) -> (u64, u64) {
        self.current().status.as_ref().map_or((0, 0), status::rows_so_far)
    }

    /// `N of M days done`, from the status last written.
    fn progress_line(&self) -> String {
        let rp = self.current();
        let (done, total) = rp
            .status
            .as_ref()
            .and_then(|s| s.progress.as_ref())
            .map_or((0, 0), |p| (p.days_succeeded, p.days_total));
        format!("{done} of {total} days done")
    }

    /// Writes the status `make` computes from the object last seen: a merge patch with its
    /// `resourceVersion`; on a conflict the object is read again and the status computed
    /// again.
    async fn write(&self, make: impl Fn(&Reprocess) -> ReprocessStatus) -> Result<Written> {
        let api = &self.runner.api;
        let name = self.runner.name.as_str();
        let (mut conflicts, mut failures) = (0, 0);
        loop {
            let current = self.current();
            if let Some(phase) = current
                .status
                .as_ref()
                .map(ReprocessStatus::phase)
                .filter(|p| p.is_final())
            {
                return Ok(Written::Final(phase));
            }
            let patch = serde_json::json!({
                "metadata": {"resourceVersion": current.resource_version()},
                "status": super::status::status_patch(current.status.as_ref(), &make(&current)),
            });
            match api
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(written) => {
                    let deleting = written.metadata.deletion_timestamp.is_some();
                    self.set_current(written);
                    return Ok(Written::Ok { deleting });
                }
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Written::Gone),
                Err(kube::Error::Api(e)) if e.code == 409 && conflicts < MAX_CONFLICTS => {
                    conflicts += 1;
                    match api.get_opt(name).await? {
                        Some(fresh) => self.set_current(fresh),
                        None => return Ok(Written::Gone),
                    }
                }
                Err(e) if failures < MAX_RETRIES && retryable(&e) => {
                    failures += 1;
                    tracing::warn!(error = %e, attempt = failures, "status write failed; retrying");
                    tokio::time::sleep(self.runner.retry_pause).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        (self.runner.now)()
    }

    async fn finish(&self, outcome: Final, then: Outcome) -> Result<Outcome> {
        tracing::info!(?outcome, "finished");
        let now = self.now();
        Ok(
            match self
                .write(|rp| status::finished(rp.status.as_ref(), rp.metadata.generation, &outcome, now))
                .await?
            {
                Written::Gone => Outcome::Gone,
                Written::Final(phase) => Outcome::AlreadyFinal(phase),
                Written::Ok { .. } => then,
            },
        )
    }

    async fn failed(&self, reason: &'static str, message: String) -> Result<Outcome> {
        self.finish(
            Final::Failed {
                reason,
                message,
                day: None,
            },
            Outcome::Failed(reason),
        )
        .await
    }

    async fn cancelled(&self, when: &str) -> Result<Outcome> {
        let message = format!(
            "cancelled: the Reprocess was deleted; this pod stopped {when} ({})",
            self.progress_line()
        );
        self.finish(Final::Cancelled { message }, Outcome::Cancelled).await
    }

    async fn interrupted(&self, message: String) -> Result<Outcome> {
        tracing::warn!("{message}");
        self.note(&message).await?;
        Ok(Outcome::Interrupted(message))
    }

    /// Says why the run waits or stopped, leaving the phase as it is.
    async fn note(&self, message: &str) -> Result<()> {
        let now = self.now();
        self.write(|rp| status::interrupted(rp.status.as_ref(), rp.metadata.generation, message, now))
            .await?;
        Ok(())
    }
}

/// Runs `beat` every `interval`, the first one interval from now, forever (a beat that
/// takes longer delays the next rather than bunching them up).
async fn beat_every<F, Fut>(interval: Duration, mut beat: F) -> std::convert::Infallible
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: the caller has just written.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        beat().await;
    }
}

/// Whether a failed API call may pass by itself (the server restarting or overloaded).
fn retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 429 || s.code >= 500,
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Why the pod must not run its Reprocess's plan, if it must not: its processing identity
/// is not the plan's (`PlanMismatch`), or under `approval: Manual` the plan is not approved
/// (`NotApproved`, or `NoPlan` without one).
fn plan_refusal(rp: &Reprocess, processing: &str) -> Option<(&'static str, String)> {
    let plan = rp.status.as_ref().and_then(|s| s.plan.as_ref());
    match plan {
        None if rp.spec.approval == Approval::Manual => Some((
            "NoPlan",
            "approval is Manual and the status has no plan: nothing was approved".into(),
        )),
        None => None,
        Some(plan) if plan.processing != processing => Some((
            "PlanMismatch",
            format!(
                "the plan ({}) replays with processing {} (image {}); this pod's image processes as {processing}: \
                 the Job must run the plan's image",
                plan.hash, plan.processing, plan.image
            ),
        )),
        Some(plan) if !rp.spec.approves(&plan.hash) => Some((
            "NotApproved",
            format!(
                "spec.approvedPlanHash {:?} does not name the plan {}: nothing runs unapproved",
                rp.spec.approved_plan_hash, plan.hash
            ),
        )),
        Some(_) => None,
    }
}

/// What the hooks know between status writes.
struct LiveState {
    progress: Progress,
    /// Days launched and not finished.
    running: BTreeSet<NaiveDate>,
    /// Days finished (earlier pods' included).
    done: BTreeSet<NaiveDate>,
    /// `events_raw` bytes per day.
    bytes: BTreeMap<NaiveDate, u64>,
}

/// The engine's hooks: progress kept for the next status write (heartbeats), and each
/// finished day written to the status.
struct StatusHooks<'a> {
    writer: &'a StatusWriter<'a>,
    /// Rows read and written by the run's earlier pods.
    base: (u64, u64),
    live: Mutex<LiveState>,
    /// The engine's token: cancelled when the Reprocess is being deleted.
    cancel: CancellationToken,
    deleted: AtomicBool,
    /// The Reprocess is gone or final: nothing more is written.
    over: AtomicBool,
}

impl StatusHooks<'_> {
    fn live(&self) -> Live {
        let l = self.live.lock().unwrap_or_else(|p| p.into_inner());
        Live {
            rows: (
                self.base.0.saturating_add(l.progress.rows_read),
                self.base.1.saturating_add(l.progress.rows_written),
            ),
            bytes_read: l
                .done
                .iter()
                .filter_map(|d| l.bytes.get(d))
                .fold(0, |a, b| a.saturating_add(*b)),
            current_day: l.running.iter().next().copied(),
        }
    }
}

#[async_trait::async_trait]
impl ReplayHooks for StatusHooks<'_> {
    fn progress(&self, progress: &Progress) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).progress = *progress;
    }

    fn day_started(&self, day: NaiveDate) {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).running.insert(day);
    }

    async fn day_done(&self, day: &DayReport, checkpoint: &Checkpoint) -> sightline_core::Result<()> {
        {
            let mut l = self.live.lock().unwrap_or_else(|p| p.into_inner());
            l.running.remove(&day.day);
            l.done.insert(day.day);
        }
        let live = self.live();
        let now = self.writer.now();
        let written = self
            .writer
            .write(|rp| status::record_day(rp.status.as_ref(), rp.metadata.generation, day, checkpoint, &live, now))
            .await;
        match written {
            Ok(Written::Ok { deleting: false }) => Ok(()),
            Ok(Written::Ok { deleting: true }) => {
                tracing::info!(day = %day.day, "the Reprocess is being deleted: stopping after the days under way");
                self.deleted.store(true, Ordering::SeqCst);
                self.cancel.cancel();
                Ok(())
            }
            Ok(Written::Gone) => {
                tracing::info!(day = %day.day, "the Reprocess is gone: stopping after the days under way");
                self.deleted.store(true, Ordering::SeqCst);
                self.over.store(true, Ordering::SeqCst);
                self.cancel.cancel();
                Ok(())
            }
            Ok(Written::Final(phase)) => {
                tracing::warn!(day = %day.day, ?phase, "the Reprocess was made final by another writer: stopping after the days under way");
                self.over.store(true, Ordering::SeqCst);
                self.cancel.cancel();
                Ok(())
            }
            // The day is swapped but not recorded: the run stops, and the next pod replays
            // the day again from the same inputs.
            Err(e) => Err(sightline_core::Error::Unreachable(format!(
                "the Kubernetes API did not take the status after day {}: {}",
                day.day,
                e.chain()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_interruption_exits_non_zero() {
        assert!(Outcome::Interrupted("signal".into()).resumable());
        for done in [
            Outcome::Succeeded,
            Outcome::Failed("ReplayFailed"),
            Outcome::Cancelled,
            Outcome::AlreadyFinal(Phase::Succeeded),
            Outcome::Gone,
        ] {
            assert!(!done.resumable(), "{done:?}");
        }
    }

    /// The pod's heartbeat cadence, on tokio's paused clock: a beat every interval, whatever
    /// the engine does meanwhile, so a day longer than 60 s never looks stalled.
    #[tokio::test(start_paused = true)]
    async fn heartbeats_come_every_interval_while_the_run_lasts() {
        let beats = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counted = beats.clone();
        let run = tokio::time::sleep(Duration::from_secs(65));
        tokio::select! {
            _ = run => {}
            never = beat_every(crate::reprocess::status::HEARTBEAT_INTERVAL, || {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            }) => match never {},
        }
        assert_eq!(beats.load(Ordering::SeqCst), 6, "at 10, 20, ... 60 s");
        assert!(crate::reprocess::status::HEARTBEAT_INTERVAL <= Duration::from_secs(15));
    }

    #[test]
    fn outages_are_retried_and_refusals_are_not() {
        let api = |code: u16| kube::Error::Api(kube::core::Status::failure("x", "y").with_code(code).boxed());
        assert!(retryable(&api(503)) && retryable(&api(429)));
        assert!(!retryable(&api(403)) && !retryable(&api(422)));
    }
}
