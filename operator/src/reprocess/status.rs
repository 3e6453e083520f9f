//! Status of a Reprocess: the pure transitions the operator and the Job's pod make. The
//! operator writes the plan and `Approved`, `Pending` (awaiting approval, queued, or its Job
//! starting), `Stalled` (its pod stopped reporting) and `Failed` (a refusal, a Job that
//! gave up, too many stalls); the pod writes `Running` when it starts, heartbeats (at least
//! every 15 s, days under way or not), progress, the day's result and the ledger after
//! every day, then `Succeeded`, `Failed` or `Cancelled` (its Reprocess was deleted). Every
//! condition is a `metav1.Condition` carrying the generation it describes, whose
//! `lastTransitionTime` moves only when its status does.
//!
//! Both writers send a JSON merge patch carrying the `resourceVersion` they read, so a
//! write based on a stale read is refused (409) and retried from a fresh one: neither
//! overwrites what the other wrote meanwhile. The patch is the difference between the
//! status read and the one computed (`status_patch`): a field the new status leaves out
//! (`progress.currentDay` between days, the ETA once finished) is sent as `null`, which is
//! how a merge patch removes it (RFC 7386); leaving it out would keep the old value.
//!
//! The status stays small whatever the range (etcd holds objects of at most 1.5 MiB, and
//! every watcher receives the whole object on every write): the ledger is kept as day
//! ranges, the plan lists months for ranges over 62 days, per-day details for at most
//! `MAX_DAY_RESULTS` days (those that changed first, then the latest), every day summed in
//! `totals`, messages cut at `MAX_MESSAGE` bytes: a 10-year range in the worst order stays
//! under 64 KiB (a test builds it).

use std::collections::BTreeSet;

use chrono::{DateTime, Days, NaiveDate, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use sightline_core::warehouse::replay::{Checkpoint, DayReport};

use super::crd::{
    DayResult, LedgerEntry, MetricDelta, Phase, ReprocessPlan, ReprocessProgress, ReprocessStatus, ReprocessTotals,
    StatusCheckpoint, APPROVED, COMPLETE, CONDITION_TYPES, FAILED, MAX_DAY_RESULTS, MAX_MESSAGE, PROGRESSING, STALLED,
};
use crate::conditions::Update;

/// The most time between two heartbeats of a pod while it runs.
pub const HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// Without a heartbeat for this long, a running Reprocess whose Job has a pod is stalled
/// (`NoHeartbeat`).
pub const HEARTBEAT_TIMEOUT: chrono::Duration = chrono::Duration::seconds(60);
/// A running Reprocess whose Job is gone or has no pod for this long is stalled (`PodGone`):
/// long enough for the Job to replace a pod that exited to be resumed.
pub const POD_GONE_GRACE: chrono::Duration = chrono::Duration::seconds(30);
/// A stalled run's Job still being deleted this long after the stall (a finalizer holds
/// it) counts as another stall (`JobNotDeleted`), so such a run ends `StalledTooOften`
/// instead of waiting for ever: five times the heartbeat timeout.
pub const DELETION_PATIENCE: chrono::Duration = chrono::Duration::seconds(300);

/// What the operator found for a Reprocess that is not final yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not run: `reason` says which check (UnknownTenant, RangeInFuture, NotSealed, ...).
    Refused { reason: &'static str, message: String },
    /// No plan can be made (`ImageDigestUnknown`, `WarehouseUnavailable`): nothing runs.
    PlanUnavailable { reason: &'static str, message: String },
    /// The plan is made and not approved (`AwaitingApproval`, `PlanChanged`, `HashMismatch`).
    AwaitingApproval { reason: &'static str, message: String },
    /// Waits for an overlapping Reprocess of the tenant (reason `Queued`).
    Queued { message: String },
    /// Its Job exists and has no running pod yet.
    Starting { job: String },
    /// Its Job has a pod (pending or running; the pod reports the rest).
    Running { job: String },
    /// Its pod stopped reporting (`NoHeartbeat`, `PodGone`): the Job (`job_uid`, if there
    /// is one) is replaced, after this is written, and the next pod resumes from the ledger.
    Stalled {
        reason: &'static str,
        message: String,
        job_uid: Option<String>,
    },
    /// Stalled more often than `spec.maxStallRestarts` allows: `Failed`, `StalledTooOften`;
    /// the Job (`job_uid`) is deleted after this is written.
    StalledTooOften { message: String, job_uid: Option<String> },
    /// Its Job failed (`BACKOFF_LIMIT` pods) without the pod reporting an outcome.
    JobFailed { job: String, message: String },
}

/// The plan the operator computed for a run not started yet, and whether it may run.
#[derive(Clone, Debug, PartialEq)]
pub struct PlanVerdict {
    pub plan: ReprocessPlan,
    pub approved: bool,
    /// `AutomaticApproval`, `PlanApproved`, `AwaitingApproval`, `PlanChanged`, `HashMismatch`.
    pub reason: &'static str,
    pub message: String,
}

/// Whether `plan` may run under `spec`, given the plan the status held before (`previous`)
/// and the `Approved` condition's reason then (`PlanChanged` stays until a plan is
/// approved, though later looks find the new plan unchanged): the verdict and its
/// condition's reason and message.
pub fn verdict(
    spec: &super::crd::ReprocessResourceSpec,
    previous: Option<&ReprocessPlan>,
    previous_reason: Option<&str>,
    plan: ReprocessPlan,
) -> PlanVerdict {
    use super::crd::Approval;
    let changed_from = previous.filter(|p| p.hash != plan.hash).map(|p| p.hash.clone());
    let was_changed = previous_reason == Some("PlanChanged");
    let (approved, reason, message) = match spec.approval {
        Approval::Automatic => (
            true,
            "AutomaticApproval",
            match &changed_from {
                Some(old) => format!("approval is Automatic; the plan was recomputed ({old} -> {}): its inputs changed", plan.hash),
                None => format!("approval is Automatic: plan {} runs as computed", plan.hash),
            },
        ),
        Approval::Manual => match spec.approved_plan_hash.as_deref() {
            Some(h) if h == plan.hash => (true, "PlanApproved", format!("spec.approvedPlanHash names plan {h}")),
            Some(h) if changed_from.as_deref() == Some(h) || was_changed => (
                false,
                "PlanChanged",
                format!(
                    "the approved plan {h} is no longer the plan: its inputs changed (rows or bytes of a day, the processing \
                     identity or the image) and the plan is now {}; review it (kubectl sightline reprocess plan) and approve again",
                    plan.hash
                ),
            ),
            Some(h) => (
                false,
                "HashMismatch",
                format!("spec.approvedPlanHash {h} is not the plan's hash {}", plan.hash),
            ),
            None if changed_from.is_some() || was_changed => (
                false,
                "PlanChanged",
                format!(
                    "the plan was recomputed (now {}): its inputs changed; approval is Manual: review it and set \
                     spec.approvedPlanHash (kubectl sightline reprocess approve)",
                    plan.hash
                ),
            ),
            None => (
                false,
                "AwaitingApproval",
                format!(
                    "approval is Manual: review the plan (kubectl sightline reprocess plan) and set spec.approvedPlanHash to {} \
                     (kubectl sightline reprocess approve)",
                    plan.hash
                ),
            ),
        },
    };
    PlanVerdict {
        plan,
        approved,
        reason,
        message,
    }
}

/// How a pod's run ended, as the status says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Final {
    /// Every day done: `Complete=True`.
    Succeeded { reason: &'static str, message: String },
    /// Not done and not to be retried: `Failed=True` with the reason; `day` the day that
    /// failed, if one did.
    Failed {
        reason: &'static str,
        message: String,
        day: Option<NaiveDate>,
    },
    /// Stopped because the Reprocess was deleted (the status is visible until the
    /// operator removes its finalizer).
    Cancelled { message: String },
}

/// A chrono instant as a Kubernetes `Time` (whole seconds on the wire).
pub fn time(now: DateTime<Utc>) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::from_millisecond(now.timestamp_millis())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// A status time as chrono's.
pub fn chrono_time(t: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.0.as_millisecond()).unwrap_or_default()
}

/// The JSON merge patch (RFC 7386) that turns the status `read` into `new`: keys whose
/// values differ are sent (objects recursively), keys `new` leaves out are sent as `null`
/// so the server removes them, equal values are not sent. Arrays are replaced whole, as a
/// merge patch always does.
pub fn status_patch(read: Option<&ReprocessStatus>, new: &ReprocessStatus) -> serde_json::Value {
    let read = read.map(serde_json::to_value).and_then(|r| r.ok()).unwrap_or_default();
    let new = serde_json::to_value(new).unwrap_or_default();
    merge_diff(&read, &new)
}

fn merge_diff(read: &serde_json::Value, new: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match (read, new) {
        (Value::Object(old), Value::Object(now)) => {
            let mut patch = serde_json::Map::new();
            for (key, value) in now {
                match old.get(key) {
                    Some(before) if before == value => {}
                    Some(before) => {
                        patch.insert(key.clone(), merge_diff(before, value));
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in old.keys().filter(|k| !now.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

/// `text` cut to at most `MAX_MESSAGE` bytes (at a character boundary, with `…`).
pub fn bounded(text: &str) -> String {
    if text.len() <= MAX_MESSAGE {
        return text.to_string();
    }
    let mut end = MAX_MESSAGE - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Sets one condition (its transition time moves only with its status).
fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let update = Update {
        type_,
        status,
        reason,
        message: &bounded(message),
        generation,
    };
    crate::conditions::set(conditions, update, now);
    crate::conditions::sort(conditions, &CONDITION_TYPES);
}

/// Sets `Complete`, `Failed` and `Progressing` and the message (bounded); `Stalled` is
/// added as False (`NotStarted`) if it is not there yet, so every condition is listed.
#[allow(clippy::too_many_arguments)]
fn conditions(
    s: &mut ReprocessStatus,
    complete: &str,
    failed: &str,
    progressing: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let message = bounded(message);
    set(&mut s.conditions, COMPLETE, complete, reason, &message, generation, now);
    set(&mut s.conditions, FAILED, failed, reason, &message, generation, now);
    set(
        &mut s.conditions,
        PROGRESSING,
        progressing,
        reason,
        &message,
        generation,
        now,
    );
    if s.condition(STALLED).is_none() {
        set(
            &mut s.conditions,
            STALLED,
            "False",
            "NotStarted",
            "no pod has run yet",
            generation,
            now,
        );
    }
    s.message = Some(message);
}

/// The status after the operator's decision (and, for a run not started yet, its plan).
/// `None` when the status already says it (no write, so a resync does not churn the
/// object). The operator never moves a Reprocess its pod reported as `Running` back to
/// `Pending` (a Job's status can lag its pod's).
pub fn decide(
    previous: Option<&ReprocessStatus>,
    generation: Option<i64>,
    decision: &Decision,
    plan: Option<&PlanVerdict>,
    now: DateTime<Utc>,
) -> Option<ReprocessStatus> {
    let before = previous.cloned().unwrap_or_default();
    let mut s = before.clone();
    s.observed_generation = generation;
    if let Some(v) = plan {
        record_plan(&mut s, generation, v, now);
    }
    let (phase, complete, failed, progressing, reason, message) = match decision {
        Decision::Refused { reason, message } => (Phase::Failed, "False", "True", "False", *reason, message.clone()),
        Decision::PlanUnavailable { reason, message } => {
            set(&mut s.conditions, APPROVED, "Unknown", reason, message, generation, now);
            (Phase::Pending, "False", "False", "False", *reason, message.clone())
        }
        Decision::AwaitingApproval { reason, message } => {
            (Phase::Pending, "False", "False", "False", *reason, message.clone())
        }
        Decision::Queued { message } => (
            Phase::Pending,
            "False",
            "False",
            "False",
            super::queue::QUEUED,
            message.clone(),
        ),
        Decision::Starting { job } if s.phase() == Phase::Running => {
            // A pod reported (its Job's status has not caught up, or the next pod of the
            // Job is starting, or the Job was replaced): keep what it wrote.
            s.job_name = Some(job.clone());
            return (s != before).then_some(s);
        }
        Decision::Starting { job } => (
            Phase::Pending,
            "False",
            "False",
            "True",
            "JobStarting",
            format!("Job {job} created; waiting for its pod"),
        ),
        Decision::Running { job } => {
            // Only the pod writes Running, before it touches a day: a deletion waits for a
            // pod that reported Running (it stops after its day), never for one still
            // pulling its image. The operator records the Job and that it has a pod.
            s.job_name = Some(job.clone());
            if s.phase() == Phase::Pending {
                let message = format!("Job {job} has a pod; waiting for it to start replaying");
                conditions(
                    &mut s,
                    "False",
                    "False",
                    "True",
                    "PodStarting",
                    &message,
                    generation,
                    now,
                );
            }
            return (s != before).then_some(s);
        }
        Decision::Stalled {
            reason,
            message,
            job_uid,
        } => {
            s.stall_restarts = s.stall_restarts.saturating_add(1);
            s.last_stall_time = Some(time(now));
            s.replaced_job_uid = job_uid.clone();
            set(&mut s.conditions, STALLED, "True", reason, message, generation, now);
            set(
                &mut s.conditions,
                PROGRESSING,
                "False",
                reason,
                message,
                generation,
                now,
            );
            s.message = Some(bounded(message));
            return (s != before).then_some(s);
        }
        Decision::StalledTooOften { message, job_uid } => {
            s.replaced_job_uid = job_uid.clone();
            (
                Phase::Failed,
                "False",
                "True",
                "False",
                "StalledTooOften",
                message.clone(),
            )
        }
        Decision::JobFailed { job, message } => (
            Phase::Failed,
            "False",
            "True",
            "False",
            "JobFailed",
            format!("Job {job} failed: {message}"),
        ),
    };
    if let Decision::Starting { job } | Decision::JobFailed { job, .. } = decision {
        s.job_name = Some(job.clone());
    }
    s.phase = phase;
    conditions(&mut s, complete, failed, progressing, reason, &message, generation, now);
    if phase.is_final() {
        s.finished_at.get_or_insert_with(|| time(now));
        if let Some(p) = s.progress.as_mut() {
            p.current_day = None;
        }
    }
    (s != before).then_some(s)
}

/// The status written right before the operator makes a Job: the plan and its `Approved`
/// condition (for a run not started), and `jobCreationTime`. Written with the
/// `resourceVersion` read, so that the pod finds the plan it was made for, a lost write
/// never leaves a Job running an unrecorded plan, and an operator working from a stale
/// cache (a run already failed) makes no Job.
pub fn before_job(
    previous: Option<&ReprocessStatus>,
    generation: Option<i64>,
    plan: Option<&PlanVerdict>,
    now: DateTime<Utc>,
) -> ReprocessStatus {
    let mut s = previous.cloned().unwrap_or_default();
    s.observed_generation = generation;
    if let Some(plan) = plan {
        record_plan(&mut s, generation, plan, now);
    }
    s.job_creation_time = Some(time(now));
    s
}

fn record_plan(s: &mut ReprocessStatus, generation: Option<i64>, v: &PlanVerdict, now: DateTime<Utc>) {
    // A plan equal to the one recorded keeps its time of computation (no churn).
    if s.plan.as_ref().map(|p| &p.hash) != Some(&v.plan.hash) {
        s.plan = Some(v.plan.clone());
    }
    let status = if v.approved { "True" } else { "False" };
    set(
        &mut s.conditions,
        APPROVED,
        status,
        v.reason,
        &v.message,
        generation,
        now,
    );
}

/// What the operator sees of a running Reprocess's Job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// No Job (deleted mid-run, never made by this operator, or the replacement after a
    /// stall not made yet).
    Absent,
    /// Being deleted (a replacement waits for it to go).
    Deleting,
    /// It exists and has no pod (between a pod that exited and the next).
    NoPod,
    /// It has a pod, pending or running.
    HasPod,
}

/// The last sign of life of a running Reprocess: its last heartbeat, its start, the
/// operator's last replacement of its Job (`lastStallTime`: a stall is counted once per
/// replacement) or its making of the Job (`jobCreationTime`: each Job gets the full time
/// to show life, however late it was made).
pub fn last_sign_of_life(s: &ReprocessStatus) -> Option<DateTime<Utc>> {
    let heartbeat = s.progress.as_ref().and_then(|p| p.last_heartbeat_time.as_ref());
    [
        heartbeat,
        s.started_at.as_ref(),
        s.last_stall_time.as_ref(),
        s.job_creation_time.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(chrono_time)
    .max()
}

/// Whether a Reprocess is stalled at `now` (see `HEARTBEAT_TIMEOUT`, `POD_GONE_GRACE`,
/// `DELETION_PATIENCE`; the time counts from `last_sign_of_life`): the reason and a
/// message, or `None`. Only a run its pod reported `Running` can stall.
pub fn stall(s: &ReprocessStatus, job: JobState, now: DateTime<Utc>) -> Option<(&'static str, String)> {
    if s.phase() != Phase::Running {
        return None;
    }
    let since = last_sign_of_life(s)?;
    let quiet = now - since;
    let seconds = quiet.num_seconds();
    match job {
        JobState::Deleting if quiet > DELETION_PATIENCE => Some((
            "JobNotDeleted",
            format!(
                "the Job being replaced is still being deleted {seconds} s after the stall (something holds it: its \
                 finalizers); the replacement cannot be made under the same name until it is gone"
            ),
        )),
        JobState::Deleting => None,
        // A stall since the last heartbeat: the Job is the replacement not made yet (the
        // stall was written, the old Job deleted), not a second stall.
        JobState::Absent if replacement_due(s) => None,
        JobState::HasPod if quiet > HEARTBEAT_TIMEOUT => Some((
            "NoHeartbeat",
            format!(
                "no heartbeat from the Job's pod for {seconds} s (since {}; at most {} s allowed): replacing the Job, \
                 the next pod resumes from the first day not swapped",
                since.to_rfc3339(),
                HEARTBEAT_TIMEOUT.num_seconds()
            ),
        )),
        JobState::Absent | JobState::NoPod if quiet > POD_GONE_GRACE => Some((
            "PodGone",
            format!(
                "the Job has had no pod for {seconds} s (last heartbeat {}): replacing the Job, the next pod resumes \
                 from the first day not swapped",
                since.to_rfc3339()
            ),
        )),
        _ => None,
    }
}

/// Whether the operator found the run stalled and no pod has reported since, so that the
/// Job it replaces is still to be made.
pub fn replacement_due(s: &ReprocessStatus) -> bool {
    s.condition(STALLED).is_some_and(|c| c.status == "True")
}

/// Days as ordered, disjoint ranges: `YYYY-MM-DD` or `YYYY-MM-DD/YYYY-MM-DD`.
pub fn day_ranges(days: &BTreeSet<NaiveDate>) -> Vec<String> {
    let mut out = Vec::new();
    let mut days = days.iter().copied().peekable();
    while let Some(first) = days.next() {
        let mut last = first;
        while let Some(next) = days
            .peek()
            .copied()
            .filter(|d| Some(*d) == last.checked_add_days(Days::new(1)))
        {
            last = next;
            days.next();
        }
        out.push(if first == last {
            first.to_string()
        } else {
            format!("{first}/{last}")
        });
    }
    out
}

/// The days of `day_ranges`' ranges; an error names a range that does not parse (the
/// status was edited by hand).
pub fn days_of_ranges(ranges: &[String]) -> Result<BTreeSet<NaiveDate>, String> {
    let day = |text: &str, range: &str| {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
            format!("status.checkpoint.ledger {range:?} is not a day or a range of days (YYYY-MM-DD[/YYYY-MM-DD])")
        })
    };
    let mut days = BTreeSet::new();
    for range in ranges {
        let (first, last) = match range.split_once('/') {
            Some((a, b)) => (day(a, range)?, day(b, range)?),
            None => (day(range, range)?, day(range, range)?),
        };
        if last < first {
            return Err(format!("status.checkpoint.ledger {range:?} ends before it starts"));
        }
        days.extend(first.iter_days().take_while(|d| *d <= last));
    }
    Ok(days)
}

/// Whether `day_ranges`' ranges hold `day` (a range that does not parse holds nothing).
pub fn ranges_contain(ranges: &[String], day: NaiveDate) -> bool {
    let parse = |text: &str| NaiveDate::parse_from_str(text, "%Y-%m-%d").ok();
    ranges.iter().any(|range| {
        let (first, last) = range.split_once('/').unwrap_or((range, range));
        matches!((parse(first), parse(last)), (Some(a), Some(b)) if a <= day && day <= b)
    })
}

/// Whether the status's ledger holds `day` (under any plan).
fn ledger_contains(c: &StatusCheckpoint, day: NaiveDate) -> bool {
    c.ledger.iter().any(|e| ranges_contain(&e.days, day))
}

/// The days done under `plan_hash`: the writer's own (`c.done`) and those the status
/// already records for that plan. A ledger only grows: two pods of one run can write it
/// (a stalled Job's pod finishing its day in its grace period while the replacement runs),
/// and each knows only its own days.
pub fn done_days(c: &Checkpoint, previous: Option<&StatusCheckpoint>, plan_hash: &str) -> BTreeSet<NaiveDate> {
    let mut done = c.done.clone();
    for entry in previous.map(|p| p.ledger.as_slice()).unwrap_or_default() {
        if entry.plan_hash == plan_hash {
            if let Ok(days) = days_of_ranges(&entry.days) {
                done.extend(days);
            }
        }
    }
    done
}

/// The status's ledger from the engine's checkpoint: days an earlier plan's entry holds
/// stay there, every other day done (`done_days`: the writer's and those recorded) goes to
/// `plan_hash`'s entry.
pub fn to_status_checkpoint(c: &Checkpoint, previous: Option<&StatusCheckpoint>, plan_hash: &str) -> StatusCheckpoint {
    let mut ledger: Vec<LedgerEntry> = Vec::new();
    let mut elsewhere = BTreeSet::new();
    for entry in previous.map(|p| p.ledger.as_slice()).unwrap_or_default() {
        if entry.plan_hash != plan_hash {
            if let Ok(days) = days_of_ranges(&entry.days) {
                elsewhere.extend(days);
            }
            ledger.push(entry.clone());
        }
    }
    let mine: BTreeSet<NaiveDate> = done_days(c, previous, plan_hash)
        .difference(&elsewhere)
        .copied()
        .collect();
    if !mine.is_empty() {
        ledger.push(LedgerEntry {
            plan_hash: plan_hash.to_string(),
            days: day_ranges(&mine),
        });
    }
    StatusCheckpoint {
        processing: c.processing.clone(),
        ledger,
    }
}

/// Why a pod cannot resume from its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumeError {
    /// A range of the ledger does not parse.
    Unreadable(String),
    /// Days were done with another processing identity than this pod's.
    OtherProcessor { done_with: String, this_pod: String },
}

impl std::fmt::Display for ResumeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ResumeError::Unreadable(m) => f.write_str(m),
            ResumeError::OtherProcessor { done_with, this_pod } => write!(
                f,
                "days of this run were replayed with processing {done_with}; this pod's image processes as {this_pod}, \
                 and one run must not mix the two: delete this Reprocess and create another for the rest"
            ),
        }
    }
}

/// Where the pod resumes: `fresh` (the engine's checkpoint of this run with nothing done)
/// with the days the status's ledger holds. `None` status: from the start.
pub fn resume_from(status: Option<&StatusCheckpoint>, fresh: Checkpoint) -> Result<Checkpoint, ResumeError> {
    let Some(saved) = status else {
        return Ok(fresh);
    };
    let mut done = BTreeSet::new();
    for entry in &saved.ledger {
        done.extend(days_of_ranges(&entry.days).map_err(ResumeError::Unreadable)?);
    }
    if saved.processing != fresh.processing && !done.is_empty() {
        return Err(ResumeError::OtherProcessor {
            done_with: saved.processing.clone(),
            this_pod: fresh.processing,
        });
    }
    Ok(Checkpoint { done, ..fresh })
}

/// The number of days of the run (both ends included).
pub fn days_total(c: &Checkpoint) -> u32 {
    u32::try_from((c.last_day - c.first_day).num_days() + 1).unwrap_or(u32::MAX)
}

/// What a pod knows of its run between two status writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// Rows read and written by the run's pods so far (earlier pods' included).
    pub rows: (u64, u64),
    /// Bytes of `events_raw`'s partitions of the days finished.
    pub bytes_read: u64,
    /// The earliest day under way.
    pub current_day: Option<NaiveDate>,
}

/// Progress after a write at `now`: days from the engine's checkpoint, `live`'s numbers,
/// the heartbeat, and the ETA (see `ReprocessProgress::eta`).
fn progress_at(
    s: &ReprocessStatus,
    checkpoint: Option<&Checkpoint>,
    live: &Live,
    now: DateTime<Utc>,
) -> ReprocessProgress {
    let mut p = s.progress.clone().unwrap_or_default();
    if let Some(c) = checkpoint {
        let done = done_days(c, s.checkpoint.as_ref(), &plan_hash(s)).len();
        p.set_days(u32::try_from(done).unwrap_or(u32::MAX), p.days_failed, days_total(c));
    }
    p.rows_read = live.rows.0;
    p.rows_written = live.rows.1;
    p.bytes_read = live.bytes_read;
    p.current_day = live.current_day.map(|d| d.to_string());
    p.started_at = p
        .started_at
        .clone()
        .or_else(|| s.started_at.clone())
        .or_else(|| Some(time(now)));
    p.last_heartbeat_time = Some(time(now));
    let started = p.started_at.as_ref().map(chrono_time).unwrap_or(now);
    (p.eta, p.eta_basis) = eta(&p, s.plan.as_ref(), started, now);
    p
}

/// When the run should end, and on what basis: the time per finished day measured since
/// the run started, once a day is done (`MeasuredRate`); before that the plan's estimate
/// from the start (`PlanEstimate`); none without either.
pub fn eta(
    p: &ReprocessProgress,
    plan: Option<&ReprocessPlan>,
    started: DateTime<Utc>,
    now: DateTime<Utc>,
) -> (Option<Time>, Option<String>) {
    if p.days_succeeded > 0 {
        let elapsed_ms = (now - started).num_milliseconds().max(0);
        let per_day = elapsed_ms / i64::from(p.days_succeeded);
        let left = per_day.saturating_mul(i64::from(p.days_pending));
        // Beyond what a time can hold, there is no ETA worth showing.
        let at = chrono::Duration::try_milliseconds(left).and_then(|d| now.checked_add_signed(d));
        return match at {
            Some(at) => (Some(time(at)), Some("MeasuredRate".into())),
            None => (None, None),
        };
    }
    let at = plan.and_then(|plan| {
        let secs = i64::try_from(plan.eta_seconds).ok()?;
        started.checked_add_signed(chrono::Duration::try_seconds(secs)?)
    });
    match at {
        Some(at) => (Some(time(at.max(now))), Some("PlanEstimate".into())),
        None => (None, None),
    }
}

/// The plan hash a pod records its days under: the status's plan's (the operator made the
/// Job for it), or empty for a status without a plan.
pub fn plan_hash(s: &ReprocessStatus) -> String {
    s.plan.as_ref().map(|p| p.hash.clone()).unwrap_or_default()
}

/// The pod's status when it starts (or resumes): `Running`, `startedAt` once, progress with
/// its first heartbeat, `Stalled=False`, and the ledger it resumes from (so the processing
/// identity is recorded before any day).
pub fn started(
    previous: Option<&ReprocessStatus>,
    generation: Option<i64>,
    checkpoint: &Checkpoint,
    live: &Live,
    message: &str,
    now: DateTime<Utc>,
) -> ReprocessStatus {
    let mut s = previous.cloned().unwrap_or_default();
    s.observed_generation = generation;
    s.phase = Phase::Running;
    s.started_at.get_or_insert_with(|| time(now));
    s.progress = Some(progress_at(&s, Some(checkpoint), live, now));
    let hash = plan_hash(&s);
    s.checkpoint = Some(to_status_checkpoint(checkpoint, s.checkpoint.as_ref(), &hash));
    set(
        &mut s.conditions,
        STALLED,
        "False",
        "Heartbeating",
        "the Job's pod reports",
        generation,
        now,
    );
    conditions(&mut s, "False", "False", "True", "Running", message, generation, now);
    s
}

/// The pod's heartbeat: progress as it stands (rows, bytes, the day under way, ETA) and
/// `lastHeartbeatTime`; `Stalled=False` when it was True.
pub fn heartbeat(
    previous: Option<&ReprocessStatus>,
    generation: Option<i64>,
    live: &Live,
    now: DateTime<Utc>,
) -> ReprocessStatus {
    let mut s = previous.cloned().unwrap_or_default();
    s.observed_generation = generation;
    s.progress = Some(progress_at(&s, None, live, now));
    if s.condition(STALLED).is_some_and(|c| c.status == "True") {
        set(
            &mut s.conditions,
            STALLED,
            "False",
            "Heartbeating",
            "the Job's pod reports again",
            generation,
            now,
        );
    }
    s
}

/// Rows read and written by the run's earlier pods.
pub fn rows_so_far(s: &ReprocessStatus) -> (u64, u64) {
    s.progress.as_ref().map_or((0, 0), |p| (p.rows_read, p.rows_written))
}

/// The pod's status after a finished day: the day in `days` (bounded) and, if the status
/// did not count it yet, in `totals`; progress from `live`; the ledger with the day under
/// the plan's hash.
pub fn record_day(
    previous: Option<&ReprocessStatus>,
    generation: Option<i64>,
    day: &DayReport,
    checkpoint: &Checkpoint,
    live: &Live,
    now: DateTime<Utc>,
) -> ReprocessStatus {
    let mut s = previous.cloned().unwrap_or_default();
    s.observed_generation = generation;
    let counted = s.checkpoint.as_ref().is_some_and(|c| ledger_contains(c, day.day));
    let result = day_result(day);
    if !counted {
        add_to_totals(s.totals.get_or_insert_with(Default::default), &result);
    }
    merge_days(&mut s.days, [result]);
    s.progress = Some(progress_at(&s, Some(checkpoint), live, now));
    let hash = plan_hash(&s);
    let done = done_days(checkpoint, s.checkpoint.as_ref(), &hash).len();
    s.checkpoint = Some(to_status_checkpoint(checkpoint, s.checkpoint.as_ref(), &hash));
    s.phase = Phase::Running;
    let total = days_total(checkpoint);
    let message = format!("{done} of {total} days done, the last {}", day.day);
    conditions(&mut s, "False", "False", "True", "Running", &message, generation, now);
    s
}

/// A finished day as the status shows it.
pub fn day_result(d: &DayReport) -> DayResult {
    DayResult {
        day: d.day.to_string(),
        processing_before: d.processing_before.clone(),
        processing_after: d.processing_after.clone(),
        raw_rows: d.raw_rows,
        copied_rows: d.copied_rows,
        caught_up: d.caught_up,
        swapped: d.swapped,
        deltas: d
            .comparison
            .iter()
            .flat_map(|c| &c.metrics)
            .map(|m| MetricDelta {
                metric: m.metric.clone(),
                current: m.current,
                recomputed: m.recomputed,
            })
            .collect(),
    }
}

/// The metrics summed over days (bounce rate is a ratio: per day only).
const SUMMED: [&str; 3] = ["visitors", "visits", "pageviews"];

fn add_to_totals(t: &mut ReprocessTotals, d: &DayResult) {
    // Saturating: a sum that could overflow is no reason to fail a replay.
    t.days = t.days.saturating_add(1);
    t.days_changed = t.days_changed.saturating_add(u32::from(d.changed()));
    t.raw_rows = t.raw_rows.saturating_add(d.raw_rows);
    t.copied_rows = t.copied_rows.saturating_add(d.copied_rows);
    t.caught_up = t.caught_up.saturating_add(d.caught_up);
    for (identity, rows) in &d.processing_before {
        let sum = t.processing_before.entry(identity.clone()).or_default();
        *sum = sum.saturating_add(*rows);
    }
    for m in d.deltas.iter().filter(|m| SUMMED.contains(&m.metric.as_str())) {
        match t.deltas.iter_mut().find(|x| x.metric == m.metric) {
            Some(x) => {
                x.current += m.current;
                x.recomputed += m.recomputed;
            }
            None => t.deltas.push(m.clone()),
        }
    }
}

/// Adds or replaces finished days, keeping day order (a day replayed again by a resumed pod
/// replaces its earlier result), then drops days beyond `MAX_DAY_RESULTS`: unchanged days
/// first, the oldest first.
pub fn merge_days(days: &mut Vec<DayResult>, new: impl IntoIterator<Item = DayResult>) {
    for d in new {
        match days.iter_mut().find(|x| x.day == d.day) {
            Some(slot) => *slot = d,
            None => days.push(d),
        }
    }
    days.sort_by(|a, b| a.day.cmp(&b.day));
    while days.len() > MAX_DAY_RESULTS {
        let drop = days.iter().position(|d| !d.changed()).unwrap_or(0);
        days.remove(drop);
    }
}

/// The pod's status when it stops without an outcome (a signal, an outage): still
/// `Running`, with why; the Job's next pod resumes from the ledger.
pub fn interrupted(
    previous: Option<&ReprocessStatus>,
    generation: Option<i64>,
    message: &str,
    now: DateTime<Utc>,
) -> ReprocessStatus {
    let mut s = previous.cloned().unwrap_or_default();
    s.observed_generation = generation;
    if let Some(p) = s.progress.as_mut() {
        p.current_day = None;
    }
    conditions(
        &mut s,
        "False",
        "False",
        "True",
        "Interrupted",
        message,
        generation,
        now,
    );
    s
}

/// The pod's last word.
pub fn finished(
    previous: Option<&ReprocessStatus>,
    generation: Option<i64>,
    outcome: &Final,
    now: DateTime<Utc>,
) -> ReprocessStatus {
    let mut s = previous.cloned().unwrap_or_default();
    s.observed_generation = generation;
    let (phase, complete, failed, reason, message) = match outcome {
        Final::Succeeded { reason, message } => (Phase::Succeeded, "True", "False", *reason, message),
        Final::Failed { reason, message, .. } => (Phase::Failed, "False", "True", *reason, message),
        Final::Cancelled { message } => (Phase::Cancelled, "False", "False", "Cancelled", message),
    };
    if let Some(p) = s.progress.as_mut() {
        p.current_day = None;
        let failed_days = u32::from(matches!(outcome, Final::Failed { day: Some(_), .. }));
        let (succeeded, total) = (p.days_succeeded, p.days_total);
        p.set_days(succeeded, failed_days, total);
        if phase == Phase::Succeeded {
            p.eta = None;
            p.eta_basis = None;
        }
    }
    s.phase = phase;
    conditions(&mut s, complete, failed, "False", reason, message, generation, now);
    s.finished_at.get_or_insert_with(|| time(now));
    s
}

/// What the days done were, in a sentence: `3 of 7 days finished (2026-11-01/2026-11-03)`
/// with the identity and rows. For the Event a deleted Reprocess leaves behind (its status
/// goes with it); at most 1000 bytes, the Event API's limit for a note.
pub fn finished_days_note(phase: Phase, status: Option<&ReprocessStatus>) -> String {
    let default = ReprocessStatus::default();
    let s = status.unwrap_or(&default);
    let (done, total) = s.progress.as_ref().map_or((0, 0), |p| (p.days_succeeded, p.days_total));
    let mut text = format!("deleted while {phase:?}: {done} of {total} days finished");
    if let Some(c) = s.checkpoint.as_ref() {
        let ranges = c.done().unwrap_or_default();
        if !ranges.is_empty() {
            text.push_str(&format!(" with processing {} ({})", c.processing, ranges.join(", ")));
        }
    }
    if let Some(t) = &s.totals {
        text.push_str(&format!(
            "; {} raw rows replayed, {} days changed",
            t.raw_rows, t.days_changed
        ));
        for m in &t.deltas {
            text.push_str(&format!("; {} {} -> {}", m.metric, m.current, m.recomputed));
        }
    }
    if text.len() > 1000 {
        let mut end = 1000 - '…'.len_utf8();
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use sightline_core::warehouse::replay::{Comparison, MetricChange};

    use super::*;
    #[test]
    fn a_status_patch_sends_what_changed_and_nulls_what_went() {
        let read = serde_json::json!({
            "phase": "Running",
            "progress": {"currentDay": "2026-11-02", "eta": "2026-12-01T10:00:00Z", "daysSucceeded": 1, "rowsRead": 5},
            "message": "replaying",
        });
        let new = serde_json::json!({
            "phase": "Succeeded",
            "progress": {"daysSucceeded": 3, "rowsRead": 5},
        });
        assert_eq!(
            merge_diff(&read, &new),
            serde_json::json!({
                "phase": "Succeeded",
                "progress": {"currentDay": null, "eta": null, "daysSucceeded": 3},
                "message": null,
            })
        );
        // Applied as a merge patch, it gives exactly the new status.
        let mut applied = read.clone();
        json_patch::merge(&mut applied, &merge_diff(&read, &new));
        assert_eq!(applied, new);
        assert_eq!(
            merge_diff(&new, &new),
            serde_json::json!({}),
            "nothing changed, nothing sent"
        );
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn d(day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, day).unwrap()
    }

    fn cond<'a>(s: &'a ReprocessStatus, type_: &str) -> (&'a str, &'a str) {
        let c = s.condition(type_).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    fn checkpoint(done: &[u32]) -> Checkpoint {
        Checkpoint {
            tenant: "acme".into(),
            first_day: d(1),
            last_day: d(7),
            sites: vec![],
            processing: "v3".into(),
            dry_run: false,
            done: done.iter().map(|n| d(*n)).collect(),
        }
    }

    fn report(day: NaiveDate, before: &str, deltas: Option<(f64, f64)>) -> DayReport {
        DayReport {
            day,
            raw_rows: 100,
            copied_rows: 5,
            caught_up: 0,
            processing_before: BTreeMap::from([(before.to_string(), 100)]),
            processing_after: "v3".into(),
            swapped: deltas.is_none(),
            comparison: deltas.map(|(current, recomputed)| Comparison {
                metrics: vec![
                    MetricChange {
                        metric: "pageviews".into(),
                        current,
                        recomputed,
                    },
                    MetricChange {
                        metric: "bounce_rate".into(),
                        current: 40.0,
                        recomputed: 50.0,
                    },
                ],
                sources: vec![],
                pages: vec![],
            }),
            seconds: 1.0,
        }
    }

    #[test]
    fn queued_then_starting_then_running_then_days_then_succeeded() {
        let queued = decide(
            None,
            Some(1),
            &Decision::Queued {
                message: "waits for Reprocess analytics/first".into(),
            },
            None,
            t(0),
        )
        .unwrap();
        assert_eq!(queued.phase(), Phase::Pending);
        assert_eq!(cond(&queued, COMPLETE), ("False", "Queued"));
        assert_eq!(cond(&queued, FAILED), ("False", "Queued"));
        assert!(queued.message.as_deref().unwrap().contains("analytics/first"));
        // The same decision again writes nothing.
        let again = Decision::Queued {
            message: "waits for Reprocess analytics/first".into(),
        };
        assert!(decide(Some(&queued), Some(1), &again, None, t(30)).is_none());
        let starting = decide(
            Some(&queued),
            Some(1),
            &Decision::Starting {
                job: "fix-replay".into(),
            },
            None,
            t(60),
        )
        .unwrap();
        assert_eq!(cond(&starting, COMPLETE), ("False", "JobStarting"));
        assert_eq!(starting.job_name.as_deref(), Some("fix-replay"));
        // Complete stayed False: its transition time did not move.
        assert_eq!(
            starting.condition(COMPLETE).unwrap().last_transition_time,
            queued.condition(COMPLETE).unwrap().last_transition_time
        );
        // The Job has a pod: still Pending until the pod itself reports.
        let pod = decide(
            Some(&starting),
            Some(1),
            &Decision::Running {
                job: "fix-replay".into(),
            },
            None,
            t(70),
        )
        .unwrap();
        assert_eq!(pod.phase(), Phase::Pending);
        assert_eq!(cond(&pod, COMPLETE), ("False", "PodStarting"));
        assert!(pod.started_at.is_none());
        // The pod starts: Running, with the checkpoint (identity recorded before any day).
        let running = started(
            Some(&starting),
            Some(1),
            &checkpoint(&[]),
            &Live::default(),
            "replaying with v3",
            t(90),
        );
        assert_eq!(running.phase(), Phase::Running);
        assert!(running.started_at.is_some());
        assert_eq!(running.progress.as_ref().unwrap().summary, "0/7");
        assert_eq!(running.checkpoint.as_ref().unwrap().processing, "v3");
        assert_eq!(
            running.job_name.as_deref(),
            Some("fix-replay"),
            "the operator's field is kept"
        );
        // The operator seeing the Job run (or its status lagging) changes nothing the pod wrote.
        for decision in [
            Decision::Running {
                job: "fix-replay".into(),
            },
            Decision::Starting {
                job: "fix-replay".into(),
            },
        ] {
            assert!(
                decide(Some(&running), Some(1), &decision, None, t(100)).is_none(),
                "{decision:?}"
            );
        }
        let one = record_day(
            Some(&running),
            Some(1),
            &report(d(1), "v2", None),
            &checkpoint(&[1]),
            &Live {
                rows: (100, 105),
                ..Default::default()
            },
            t(120),
        );
        let p = one.progress.clone().unwrap();
        assert_eq!(
            (
                p.days_succeeded,
                p.days_pending,
                p.days_total,
                p.rows_read,
                p.rows_written,
                p.percent
            ),
            (1, 6, 7, 100, 105, 14)
        );
        assert_eq!(p.summary, "1/7");
        assert_eq!(
            p.last_heartbeat_time,
            Some(time(t(120))),
            "a day's write is a heartbeat too"
        );
        assert_eq!(p.eta_basis.as_deref(), Some("MeasuredRate"));
        // 30 s since the start for one day: six more days, 180 s.
        assert_eq!(p.eta, Some(time(t(300))));
        assert_eq!(one.days.len(), 1);
        assert_eq!(one.checkpoint.as_ref().unwrap().done().unwrap(), ["2026-11-01"]);
        assert_eq!(cond(&one, COMPLETE), ("False", "Running"));
        let done = finished(
            Some(&one),
            Some(1),
            &Final::Succeeded {
                reason: "Replayed",
                message: "7 days replayed".into(),
            },
            t(300),
        );
        assert_eq!(done.phase(), Phase::Succeeded);
        assert_eq!(cond(&done, COMPLETE), ("True", "Replayed"));
        assert_eq!(cond(&done, FAILED), ("False", "Replayed"));
        assert_eq!(done.condition(COMPLETE).unwrap().observed_generation, Some(1));
        assert!(done.finished_at.is_some());
        let (a, b) = (done.progress.clone().unwrap(), one.progress.clone().unwrap());
        assert_eq!((a.days_succeeded, a.rows_read), (b.days_succeeded, b.rows_read));
        assert!(a.eta.is_none(), "a finished run has no ETA");
        let cancelled = finished(
            Some(&one),
            Some(1),
            &Final::Cancelled {
                message: "deleted".into(),
            },
            t(300),
        );
        assert_eq!(cancelled.phase(), Phase::Cancelled);
        assert_eq!(cond(&cancelled, COMPLETE), ("False", "Cancelled"));
        assert_eq!(cond(&cancelled, FAILED), ("False", "Cancelled"));
    }

    #[test]
    fn a_refusal_or_a_failed_job_is_failed_with_its_reason() {
        let refused = decide(
            None,
            Some(1),
            &Decision::Refused {
                reason: "UnknownTenant",
                message: "tenant nope does not exist".into(),
            },
            None,
            t(0),
        )
        .unwrap();
        assert_eq!(refused.phase(), Phase::Failed);
        assert_eq!(cond(&refused, FAILED), ("True", "UnknownTenant"));
        assert_eq!(cond(&refused, COMPLETE), ("False", "UnknownTenant"));
        assert!(refused.finished_at.is_some());
        let failed = decide(
            None,
            Some(1),
            &Decision::JobFailed {
                job: "fix-replay".into(),
                message: "BackoffLimitExceeded".into(),
            },
            None,
            t(0),
        )
        .unwrap();
        assert_eq!(cond(&failed, FAILED), ("True", "JobFailed"));
        assert!(failed.message.unwrap().contains("BackoffLimitExceeded"));
        let pod_failed = finished(
            None,
            Some(1),
            &Final::Failed {
                reason: "ReplayFailed",
                message: "day 2026-11-03: mismatch".into(),
                day: Some(d(3)),
            },
            t(0),
        );
        assert_eq!(pod_failed.phase(), Phase::Failed);
        assert_eq!(cond(&pod_failed, FAILED), ("True", "ReplayFailed"));
    }

    #[test]
    fn checkpoints_are_day_ranges_that_round_trip_and_refuse_another_processor() {
        let c = checkpoint(&[1, 2, 3, 5, 7]);
        let s = to_status_checkpoint(&c, None, "h1");
        assert_eq!(s.done().unwrap(), ["2026-11-01/2026-11-03", "2026-11-05", "2026-11-07"]);
        let fresh = Checkpoint {
            done: BTreeSet::new(),
            ..c.clone()
        };
        assert_eq!(resume_from(Some(&s), fresh.clone()).unwrap(), c);
        assert_eq!(resume_from(None, fresh.clone()).unwrap(), fresh);
        let other = StatusCheckpoint {
            processing: "v2".into(),
            ..s.clone()
        };
        let e = resume_from(Some(&other), fresh.clone()).unwrap_err();
        assert!(
            matches!(&e, ResumeError::OtherProcessor { done_with, this_pod } if done_with == "v2" && this_pod == "v3"),
            "{e:?}"
        );
        assert!(e.to_string().contains("create another"), "{e}");
        // An identity recorded before any day was done binds nothing.
        let nothing_done = StatusCheckpoint {
            processing: "v2".into(),
            ledger: vec![],
        };
        assert_eq!(resume_from(Some(&nothing_done), fresh.clone()).unwrap(), fresh);
        for bad in ["11/03/2026", "2026-11-05/2026-11-01", "2026-11-01/"] {
            let s = StatusCheckpoint {
                processing: "v3".into(),
                ledger: vec![LedgerEntry {
                    plan_hash: "h1".into(),
                    days: vec![bad.into()],
                }],
            };
            let e = resume_from(Some(&s), fresh.clone()).unwrap_err();
            assert!(
                matches!(e, ResumeError::Unreadable(ref m) if m.contains(bad)),
                "{bad}: {e:?}"
            );
        }
        // Across a month and a year.
        let span: BTreeSet<NaiveDate> = NaiveDate::from_ymd_opt(2026, 12, 30)
            .unwrap()
            .iter_days()
            .take(4)
            .collect();
        assert_eq!(day_ranges(&span), ["2026-12-30/2027-01-02"]);
        assert_eq!(days_of_ranges(&day_ranges(&span)).unwrap(), span);
    }

    #[test]
    fn two_pods_of_one_run_each_knowing_only_their_days_never_shrink_the_ledger() {
        // The stalled Job's pod (in its grace period) finishes day 1 while the replacement,
        // which resumed before that, finishes days 2 and 3: each writes what it knows.
        let plan_status = ReprocessStatus {
            plan: Some(plan("h1")),
            ..Default::default()
        };
        let mut s = started(
            Some(&plan_status),
            Some(1),
            &checkpoint(&[]),
            &Live::default(),
            "go",
            t(0),
        );
        let day = |n| report(d(n), "v2", None);
        s = record_day(Some(&s), Some(1), &day(2), &checkpoint(&[2]), &Live::default(), t(1));
        s = record_day(Some(&s), Some(1), &day(3), &checkpoint(&[2, 3]), &Live::default(), t(2));
        // The old pod's write: its checkpoint has day 1 only.
        s = record_day(Some(&s), Some(1), &day(1), &checkpoint(&[1]), &Live::default(), t(3));
        assert_eq!(
            s.checkpoint.as_ref().unwrap().done().unwrap(),
            ["2026-11-01/2026-11-03"]
        );
        assert_eq!(s.progress.as_ref().unwrap().days_succeeded, 3);
        assert_eq!(s.totals.as_ref().unwrap().days, 3);
        // A heartbeat or a restart of the old pod's view changes nothing of it.
        let again = started(Some(&s), Some(1), &checkpoint(&[1]), &Live::default(), "resumed", t(4));
        assert_eq!(again.checkpoint, s.checkpoint);
        assert_eq!(again.progress.as_ref().unwrap().days_succeeded, 3);
        // The replacement replays day 1 again (it did not know): counted once.
        let twice = record_day(
            Some(&s),
            Some(1),
            &day(1),
            &checkpoint(&[1, 2, 3]),
            &Live::default(),
            t(5),
        );
        assert_eq!(twice.totals.as_ref().unwrap().days, 3);
    }

    #[test]
    fn days_are_counted_once_and_the_list_keeps_changed_and_latest_days() {
        let mut s = started(None, Some(1), &checkpoint(&[]), &Live::default(), "start", t(0));
        let dry = |n| report(d(n), "v2", Some((100.0, 90.0)));
        // Days 1 and 2, then day 2 reported again (a resumed pod): it replaces its result
        // and is not counted twice.
        // (day, days done, rows so far and the write's time)
        for (day, done, n) in [(1, &[1][..], 1), (2, &[1, 2], 2), (2, &[1, 2], 3)] {
            let live = Live {
                rows: (n, n),
                ..Default::default()
            };
            s = record_day(Some(&s), Some(1), &dry(day), &checkpoint(done), &live, t(n as i64));
        }
        let totals = s.totals.clone().unwrap();
        assert_eq!((totals.days, totals.days_changed, totals.raw_rows), (2, 2, 200));
        assert_eq!(totals.processing_before, BTreeMap::from([("v2".to_string(), 200)]));
        assert_eq!(
            totals.deltas,
            [MetricDelta {
                metric: "pageviews".into(),
                current: 200.0,
                recomputed: 180.0
            }],
            "bounce rate is not summed"
        );
        assert_eq!(s.days.len(), 2);

        let unchanged = |n: u32| DayResult {
            day: format!("2027-01-{n:02}"),
            processing_before: BTreeMap::from([("v3".to_string(), 1)]),
            processing_after: "v3".into(),
            raw_rows: 1,
            copied_rows: 0,
            caught_up: 0,
            swapped: true,
            deltas: vec![],
        };
        let changed = |n: u32| DayResult {
            processing_before: BTreeMap::from([("v2".to_string(), 1)]),
            ..unchanged(n)
        };
        let mut days = vec![changed(1)];
        merge_days(&mut days, (2..=25).map(unchanged));
        assert_eq!(days.len(), MAX_DAY_RESULTS);
        assert_eq!(days[0].day, "2027-01-01", "the changed day stays");
        assert_eq!(days[1].day, "2027-01-07", "then the latest");
        assert_eq!(days.last().unwrap().day, "2027-01-25");
    }

    /// Issue 18 requires the status of a 10-year range to stay under 64 KiB: the worst case
    /// here is every other day done (the most ranges), the day list full of days with
    /// deltas and several identities, and the longest messages.
    #[test]
    fn a_ten_year_range_in_the_worst_order_stays_under_64_kib() {
        let first = NaiveDate::from_ymd_opt(2016, 1, 1).unwrap();
        let last = NaiveDate::from_ymd_opt(2025, 12, 31).unwrap();
        let days: Vec<NaiveDate> = first.iter_days().take_while(|d| *d <= last).collect();
        assert_eq!(days.len(), 3653);
        let mut c = Checkpoint {
            tenant: "a".repeat(40),
            first_day: first,
            last_day: last,
            sites: vec!["s".repeat(128); 1000],
            processing: "v3+bots".into(),
            dry_run: true,
            done: BTreeSet::new(),
        };
        let long = "x".repeat(100_000);
        let inputs = super::super::plan::PlanInputs {
            spec: serde_yaml::from_str("tenantRef: acme\nfrom: 2016-01-01\nto: 2026-01-01\n").unwrap(),
            processing: "v3+bots".into(),
            pipeline_version: 5,
            image: format!("{}@sha256:{}", "r".repeat(200), "a".repeat(64)),
            days: days
                .iter()
                .map(|day| super::super::plan::DayInput {
                    day: *day,
                    rows: u64::MAX / 4000,
                    bytes: u64::MAX / 4000,
                    sealed: true,
                })
                .collect(),
        };
        let before = ReprocessStatus {
            plan: Some(super::super::plan::make(&inputs, t(0))),
            ..Default::default()
        };
        assert_eq!(before.plan.as_ref().unwrap().breakdown.len(), 120, "per month");
        let mut s = started(Some(&before), Some(1), &c, &Live::default(), &long, t(0));
        for day in days.iter().step_by(2) {
            c.done.insert(*day);
            let mut r = report(*day, "v2+bots", Some((1e12, 2e12)));
            r.processing_before = (0..8)
                .map(|i| (format!("v{i}+bots-identity-of-some-length"), u64::MAX))
                .collect();
            r.comparison.as_mut().unwrap().metrics = ["visitors", "visits", "pageviews", "bounce_rate"]
                .iter()
                .map(|m| MetricChange {
                    metric: m.to_string(),
                    current: 123456789.123,
                    recomputed: 987654321.987,
                })
                .collect();
            s = record_day(
                Some(&s),
                Some(1),
                &r,
                &c,
                &Live {
                    rows: (u64::MAX, u64::MAX),
                    ..Default::default()
                },
                t(1),
            );
        }
        s = finished(
            Some(&s),
            Some(1),
            &Final::Failed {
                reason: "ReplayFailed",
                message: long.clone(),
                day: None,
            },
            t(2),
        );
        s.job_name = Some("j".repeat(63));
        s.stall_restarts = 10;
        s = heartbeat(
            Some(&s),
            Some(1),
            &Live {
                rows: (u64::MAX, u64::MAX),
                bytes_read: u64::MAX,
                current_day: Some(last),
            },
            t(3),
        );
        let ranges = serde_json::to_vec(&s.checkpoint).unwrap().len();
        let whole = serde_json::to_vec(&s).unwrap().len();
        assert!(ranges < 30 * 1024, "checkpoint: {ranges} bytes");
        assert_eq!(
            s.checkpoint.as_ref().unwrap().ledger.len(),
            1,
            "one plan: one ledger entry"
        );
        // Issue 18's bound (measured: 58,660 bytes; the plan is ~7 KiB of it).
        assert!(whole < 64 * 1024, "status: {whole} bytes");
        assert_eq!(s.days.len(), MAX_DAY_RESULTS);
        assert_eq!(s.totals.as_ref().unwrap().days, 1827);
        assert!(s.message.as_ref().unwrap().len() <= MAX_MESSAGE);
        let note = finished_days_note(Phase::Running, Some(&s));
        assert!(
            note.len() <= 1000 && note.starts_with("deleted while Running: 1827 of 3653"),
            "{note}"
        );
    }

    #[test]
    fn the_note_names_the_finished_days() {
        let s = record_day(
            None,
            Some(1),
            &report(d(1), "v2", None),
            &checkpoint(&[1, 2]),
            &Live {
                rows: (10, 10),
                ..Default::default()
            },
            t(0),
        );
        let note = finished_days_note(Phase::Cancelled, Some(&s));
        assert!(
            note.starts_with(
                "deleted while Cancelled: 2 of 7 days finished with processing v3 (2026-11-01/2026-11-02)"
            ),
            "{note}"
        );
        assert_eq!(
            finished_days_note(Phase::Pending, None),
            "deleted while Pending: 0 of 0 days finished"
        );
        assert_eq!(bounded("short"), "short");
        let cut = bounded(&"é".repeat(2000));
        assert!(cut.len() <= MAX_MESSAGE && cut.ends_with('…'));
    }

    fn plan(hash: &str) -> ReprocessPlan {
        let inputs = super::super::plan::PlanInputs {
            spec: serde_yaml::from_str("tenantRef: acme\nfrom: 2026-11-01\nto: 2026-11-02\n").unwrap(),
            processing: "v3".into(),
            pipeline_version: 5,
            image: "r@sha256:x".into(),
            days: vec![],
        };
        ReprocessPlan {
            hash: hash.into(),
            ..super::super::plan::make(&inputs, t(0))
        }
    }

    fn spec(approval: super::super::crd::Approval, approved: Option<&str>) -> super::super::crd::ReprocessResourceSpec {
        super::super::crd::ReprocessResourceSpec {
            approval,
            approved_plan_hash: approved.map(str::to_string),
            ..super::super::crd::ReprocessResourceSpec::new(
                serde_yaml::from_str("tenantRef: acme\nfrom: 2026-11-01\nto: 2026-11-02\n").unwrap(),
            )
        }
    }

    #[test]
    fn manual_runs_wait_for_the_current_plans_hash_and_a_changed_plan_needs_approving_again() {
        use super::super::crd::Approval::{Automatic, Manual};
        let auto = verdict(&spec(Automatic, None), None, None, plan("h1"));
        assert!(auto.approved);
        assert_eq!(auto.reason, "AutomaticApproval");
        let waiting = verdict(&spec(Manual, None), None, None, plan("h1"));
        assert_eq!((waiting.approved, waiting.reason), (false, "AwaitingApproval"));
        assert!(waiting.message.contains("h1"), "{}", waiting.message);
        let approved = verdict(&spec(Manual, Some("h1")), Some(&plan("h1")), None, plan("h1"));
        assert_eq!((approved.approved, approved.reason), (true, "PlanApproved"));
        // The inputs changed: the approved hash is the old plan's.
        let changed = verdict(
            &spec(Manual, Some("h1")),
            Some(&plan("h1")),
            Some("PlanApproved"),
            plan("h2"),
        );
        assert_eq!((changed.approved, changed.reason), (false, "PlanChanged"));
        assert!(changed.message.contains("h2"), "{}", changed.message);
        let changed_unapproved = verdict(&spec(Manual, None), Some(&plan("h1")), None, plan("h2"));
        assert_eq!(changed_unapproved.reason, "PlanChanged");
        // The next look finds the new plan unchanged: still PlanChanged, not a mismatch.
        let still = verdict(
            &spec(Manual, Some("h1")),
            Some(&plan("h2")),
            Some("PlanChanged"),
            plan("h2"),
        );
        assert_eq!((still.approved, still.reason), (false, "PlanChanged"));
        let still = verdict(&spec(Manual, None), Some(&plan("h2")), Some("PlanChanged"), plan("h2"));
        assert_eq!(still.reason, "PlanChanged");
        let wrong = verdict(&spec(Manual, Some("h9")), Some(&plan("h1")), None, plan("h1"));
        assert_eq!((wrong.approved, wrong.reason), (false, "HashMismatch"));

        // The status: the plan, Approved=False, Pending, nothing progressing.
        let decision = Decision::AwaitingApproval {
            reason: changed.reason,
            message: changed.message.clone(),
        };
        let s = decide(None, Some(2), &decision, Some(&changed), t(0)).unwrap();
        assert_eq!(s.phase(), Phase::Pending);
        assert_eq!(s.plan.as_ref().unwrap().hash, "h2");
        assert_eq!(cond(&s, APPROVED), ("False", "PlanChanged"));
        assert_eq!(cond(&s, PROGRESSING), ("False", "PlanChanged"));
        assert_eq!(cond(&s, STALLED), ("False", "NotStarted"));
        for c in &s.conditions {
            assert_eq!(c.observed_generation, Some(2), "{c:?}");
        }
        let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, CONDITION_TYPES);
        // The same plan again: nothing to write (its computedAt is kept).
        let mut same = changed.clone();
        same.plan.computed_at = time(t(60));
        assert!(decide(Some(&s), Some(2), &decision, Some(&same), t(60)).is_none());
        // Approved after an edit of approvedPlanHash (generation 3): the conditions say so.
        let ok = verdict(
            &spec(Manual, Some("h2")),
            s.plan.as_ref(),
            Some("PlanChanged"),
            plan("h2"),
        );
        let starting = decide(
            Some(&s),
            Some(3),
            &Decision::Starting {
                job: "fix-replay".into(),
            },
            Some(&ok),
            t(70),
        )
        .unwrap();
        assert_eq!(cond(&starting, APPROVED), ("True", "PlanApproved"));
        assert_eq!(cond(&starting, PROGRESSING), ("True", "JobStarting"));
        assert_eq!(starting.condition(APPROVED).unwrap().observed_generation, Some(3));
        assert_eq!(starting.observed_generation, Some(3));
        // A plan that cannot be made: Approved=Unknown with the reason.
        let unknown = decide(
            None,
            Some(1),
            &Decision::PlanUnavailable {
                reason: "ImageDigestUnknown",
                message: "pin it".into(),
            },
            None,
            t(0),
        )
        .unwrap();
        assert_eq!(cond(&unknown, APPROVED), ("Unknown", "ImageDigestUnknown"));
        assert_eq!(unknown.phase(), Phase::Pending);
    }

    fn running_since(heartbeat: i64) -> ReprocessStatus {
        let mut s = started(None, Some(1), &checkpoint(&[]), &Live::default(), "go", t(0));
        s = heartbeat_at(&s, heartbeat);
        s
    }

    fn heartbeat_at(s: &ReprocessStatus, at: i64) -> ReprocessStatus {
        heartbeat(Some(s), Some(1), &Live::default(), t(at))
    }

    #[test]
    fn no_heartbeat_for_60_s_or_no_pod_for_30_s_is_a_stall_counted_once_per_replacement() {
        let s = running_since(100);
        assert_eq!(last_sign_of_life(&s), Some(t(100)));
        assert_eq!(stall(&s, JobState::HasPod, t(160)), None, "60 s is allowed");
        let (reason, message) = stall(&s, JobState::HasPod, t(161)).unwrap();
        assert_eq!(reason, "NoHeartbeat");
        assert!(message.contains("61 s"), "{message}");
        assert_eq!(stall(&s, JobState::NoPod, t(130)), None, "a pod being replaced");
        assert_eq!(stall(&s, JobState::Absent, t(131)).unwrap().0, "PodGone");
        assert_eq!(stall(&s, JobState::NoPod, t(131)).unwrap().0, "PodGone");
        assert_eq!(stall(&s, JobState::Deleting, t(400)), None, "a replacement under way");
        // Only a run its pod reported Running stalls.
        let pending = decide(None, Some(1), &Decision::Starting { job: "j".into() }, None, t(0)).unwrap();
        assert_eq!(stall(&pending, JobState::HasPod, t(10_000)), None);

        // The operator's stall: Stalled=True, counted, Progressing=False; the phase stays.
        let decision = Decision::Stalled {
            reason: "NoHeartbeat",
            message: message.clone(),
            job_uid: Some("uid-a".into()),
        };
        let stalled = decide(Some(&s), Some(1), &decision, None, t(161)).unwrap();
        assert_eq!(stalled.phase(), Phase::Running);
        assert_eq!(stalled.stall_restarts, 1);
        assert_eq!(stalled.replaced_job_uid.as_deref(), Some("uid-a"), "the Job to delete");
        assert_eq!(cond(&stalled, STALLED), ("True", "NoHeartbeat"));
        assert_eq!(cond(&stalled, PROGRESSING), ("False", "NoHeartbeat"));
        // The replacement counts as a sign of life: no second stall until it too is quiet.
        assert_eq!(last_sign_of_life(&stalled), Some(t(161)));
        assert_eq!(stall(&stalled, JobState::NoPod, t(180)), None);
        assert_eq!(stall(&stalled, JobState::HasPod, t(222)).unwrap().0, "NoHeartbeat");
        // No Job after a stall is the replacement still to be made, however late the look.
        assert!(replacement_due(&stalled));
        assert_eq!(stall(&stalled, JobState::Absent, t(10_000)), None);

        // A second stall while Stalled is still True (the replacement's pod never started):
        // counted once, and the clock restarts from it, not from the first stall.
        let second = Decision::Stalled {
            reason: "NoHeartbeat",
            message: "again".into(),
            job_uid: Some("uid-b".into()),
        };
        let twice = decide(Some(&stalled), Some(1), &second, None, t(222)).unwrap();
        assert_eq!(twice.stall_restarts, 2);
        assert_eq!(twice.replaced_job_uid.as_deref(), Some("uid-b"));
        assert_eq!(last_sign_of_life(&twice), Some(t(222)));
        assert_eq!(
            stall(&twice, JobState::NoPod, t(251)),
            None,
            "30 s from the second stall"
        );
        assert_eq!(
            stall(&twice, JobState::HasPod, t(282)),
            None,
            "60 s from the second stall"
        );
        assert_eq!(stall(&twice, JobState::HasPod, t(283)).unwrap().0, "NoHeartbeat");
        // A replacement made late (its predecessor slow to go) gets its 60 s from its making.
        let late = before_job(Some(&twice), Some(1), None, t(400));
        assert_eq!(late.plan, twice.plan, "no plan given, none changed");
        assert_eq!(stall(&late, JobState::HasPod, t(460)), None);
        assert_eq!(stall(&late, JobState::HasPod, t(461)).unwrap().0, "NoHeartbeat");
        // A Job that never goes: another stall once the patience is out, not a wait for ever.
        assert_eq!(stall(&twice, JobState::Deleting, t(522)), None);
        assert_eq!(stall(&twice, JobState::Deleting, t(523)).unwrap().0, "JobNotDeleted");
        // The next pod reports: Stalled=False.
        let resumed = started(
            Some(&stalled),
            Some(1),
            &checkpoint(&[1]),
            &Live::default(),
            "resumed",
            t(200),
        );
        assert_eq!(cond(&resumed, STALLED), ("False", "Heartbeating"));
        assert_eq!(resumed.stall_restarts, 1, "kept");
        let healed = heartbeat(Some(&stalled), Some(1), &Live::default(), t(170));
        assert_eq!(cond(&healed, STALLED), ("False", "Heartbeating"));
        // Too many: Failed.
        let out = decide(
            Some(&stalled),
            Some(1),
            &Decision::StalledTooOften {
                message: "again".into(),
                job_uid: Some("uid-c".into()),
            },
            None,
            t(300),
        )
        .unwrap();
        assert_eq!(out.phase(), Phase::Failed);
        assert_eq!(out.replaced_job_uid.as_deref(), Some("uid-c"), "its Job deleted too");
        assert_eq!(cond(&out, FAILED), ("True", "StalledTooOften"));
        assert!(out.finished_at.is_some());
    }

    #[test]
    fn a_heartbeat_reports_the_day_under_way_rows_bytes_and_the_plans_eta_before_a_day_is_done() {
        let before = ReprocessStatus {
            plan: Some(ReprocessPlan {
                eta_seconds: 500,
                ..plan("h1")
            }),
            ..Default::default()
        };
        let s = started(Some(&before), Some(1), &checkpoint(&[]), &Live::default(), "go", t(0));
        let live = Live {
            rows: (40, 41),
            bytes_read: 0,
            current_day: Some(d(1)),
        };
        let beat = heartbeat(Some(&s), Some(1), &live, t(12));
        let p = beat.progress.as_ref().unwrap();
        assert_eq!(p.current_day.as_deref(), Some("2026-11-01"));
        assert_eq!(
            (p.rows_read, p.rows_written, p.days_succeeded, p.percent),
            (40, 41, 0, 0)
        );
        assert_eq!(p.last_heartbeat_time, Some(time(t(12))));
        assert_eq!(p.started_at, Some(time(t(0))));
        assert_eq!(
            (p.eta.clone(), p.eta_basis.as_deref()),
            (Some(time(t(500))), Some("PlanEstimate"))
        );
        // The ledger records the plan's hash with each day.
        let live = Live {
            rows: (100, 100),
            bytes_read: 2048,
            current_day: Some(d(2)),
        };
        let one = record_day(
            Some(&beat),
            Some(1),
            &report(d(1), "v2", None),
            &checkpoint(&[1]),
            &live,
            t(20),
        );
        let ledger = &one.checkpoint.as_ref().unwrap().ledger;
        assert_eq!(
            ledger,
            &[LedgerEntry {
                plan_hash: "h1".into(),
                days: vec!["2026-11-01".into()]
            }]
        );
        assert_eq!(one.progress.as_ref().unwrap().bytes_read, 2048);
        // Days an earlier plan swapped stay under its hash.
        let mut other = one.clone();
        other.plan = Some(plan("h2"));
        let two = record_day(
            Some(&other),
            Some(1),
            &report(d(2), "v2", None),
            &checkpoint(&[1, 2]),
            &live,
            t(30),
        );
        let ledger = &two.checkpoint.as_ref().unwrap().ledger;
        assert_eq!(ledger.len(), 2);
        assert_eq!(
            (ledger[0].plan_hash.as_str(), ledger[0].days.as_slice()),
            ("h1", &["2026-11-01".to_string()][..])
        );
        assert_eq!(
            (ledger[1].plan_hash.as_str(), ledger[1].days.as_slice()),
            ("h2", &["2026-11-02".to_string()][..])
        );
        assert_eq!(
            two.checkpoint.as_ref().unwrap().done().unwrap(),
            ["2026-11-01/2026-11-02"]
        );
        // A failed day is counted, and the progress ends without a current day.
        let failed = finished(
            Some(&two),
            Some(1),
            &Final::Failed {
                reason: "ReplayFailed",
                message: "day 3".into(),
                day: Some(d(3)),
            },
            t(40),
        );
        let p = failed.progress.as_ref().unwrap();
        assert_eq!((p.days_succeeded, p.days_failed, p.days_pending), (2, 1, 4));
        assert!(p.current_day.is_none());
    }
}
