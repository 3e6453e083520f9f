//! Status of a Reprocess: the pure transitions the operator and the Job's pod make. The
//! operator writes `Pending` (queued, or its Job starting) and `Failed` (a refusal, or a
//! Job that gave up); the pod writes `Running` when it starts, progress, the day's result
//! and the checkpoint after every day, then `Succeeded`, `Failed` or `Cancelled` (its
//! Reprocess was deleted). `Complete` and `Failed` are `metav1.Condition`s whose
//! `lastTransitionTime` moves only when their status does.
//!
//! Both writers send a JSON merge patch carrying the `resourceVersion` they read, so a
//! write based on a stale read is refused (409) and retried from a fresh one: neither
//! overwrites what the other wrote meanwhile.
//!
//! The status stays small whatever the range (etcd holds objects of at most 1.5 MiB, and
//! every watcher receives the whole object on every write): the checkpoint is kept as day
//! ranges, per-day details for at most `MAX_DAY_RESULTS` days (those that changed first,
//! then the latest), every day summed in `totals`, messages cut at `MAX_MESSAGE` bytes.

use std::collections::BTreeSet;

use chrono::{DateTime, Days, NaiveDate, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sightline_core::warehouse::replay::{Checkpoint, DayReport};

use super::crd::{
    DayResult, MetricDelta, Phase, ReprocessProgress, ReprocessStatus, ReprocessTotals, StatusCheckpoint, COMPLETE,
    FAILED, MAX_DAY_RESULTS, MAX_MESSAGE,
};
use crate::conditions::Update;

/// What the operator found for a Reprocess that is not final yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not run: `reason` says which check (UnknownTenant, RangeInFuture, NotSealed, ...).
    Refused { reason: &'static str, message: String },
    /// Waits for an overlapping Reprocess of the tenant (reason `Queued`).
    Queued { message: String },
    /// Its Job exists and has no running pod yet.
    Starting { job: String },
    /// Its Job has a pod (pending or running; the pod reports the rest).
    Running { job: String },
    /// Its Job failed (`BACKOFF_LIMIT` pods) without the pod reporting an outcome.
    JobFailed { job: String, message: String },
}

/// How a pod's run ended, as the status says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Final {
    /// Every day done: `Complete=True`.
    Succeeded { reason: &'static str, message: String },
    /// Not done and not to be retried: `Failed=True` with the reason.
    Failed { reason: &'static str, message: String },
    /// Stopped because the Reprocess was deleted (the status is visible until the
    /// operator removes its finalizer).
    Cancelled { message: String },
}

pub(crate) fn time(now: DateTime<Utc>) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::from_millisecond(now.timestamp_millis())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
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
    conditions: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
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
        message,
        generation,
    };
    crate::conditions::set(conditions, update, now);
}

/// Sets both conditions and the message (bounded).
fn conditions(
    s: &mut ReprocessStatus,
    complete: &str,
    failed: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let message = bounded(message);
    set(&mut s.conditions, COMPLETE, complete, reason, &message, generation, now);
    set(&mut s.conditions, FAILED, failed, reason, &message, generation, now);
    s.message = Some(message);
}

/// The status after the operator's decision. `None` when the status already says it (no
/// write, so a resync does not churn the object). The operator never moves a Reprocess
/// its pod reported as `Running` back to `Pending` (a Job's status can lag its pod's).
pub fn decide(
    previous: Option<&ReprocessStatus>,
    generation: Option<i64>,
    decision: &Decision,
    now: DateTime<Utc>,
) -> Option<ReprocessStatus> {
    let before = previous.cloned().unwrap_or_default();
    let mut s = before.clone();
    s.observed_generation = generation;
    let (phase, complete, failed, reason, message) = match decision {
        Decision::Refused { reason, message } => (Phase::Failed, "False", "True", *reason, message.clone()),
        Decision::Queued { message } => (Phase::Pending, "False", "False", super::queue::QUEUED, message.clone()),
        Decision::Starting { job } if s.phase() == Phase::Running => {
            // A pod reported (its Job's status has not caught up, or the next pod of the
            // Job is starting): keep what it wrote.
            s.job_name = Some(job.clone());
            return (s != before).then_some(s);
        }
        Decision::Starting { job } => (
            Phase::Pending,
            "False",
            "False",
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
                conditions(&mut s, "False", "False", "PodStarting", &message, generation, now);
            }
            return (s != before).then_some(s);
        }
        Decision::JobFailed { job, message } => (
            Phase::Failed,
            "False",
            "True",
            "JobFailed",
            format!("Job {job} failed: {message}"),
        ),
    };
    if let Decision::Starting { job } | Decision::JobFailed { job, .. } = decision {
        s.job_name = Some(job.clone());
    }
    s.phase = phase;
    conditions(&mut s, complete, failed, reason, &message, generation, now);
    if phase.is_final() {
        s.finished_at.get_or_insert_with(|| time(now));
    }
    (s != before).then_some(s)
}

/// Days as ordered, disjoint ranges: `YYYY-MM-DD` or `YYYY-MM-DD/YYYY-MM-DD`.
pub fn day_ranges(days: &BTreeSet<NaiveDate>) -> Vec<String> {
    let mut out = Vec::new();
    let mut days = days.iter().copied().peekable();
    while let Some(first) = days.next() {
        let mut last = first;
        while days
            .peek()
            .is_some_and(|d| Some(*d) == last.checked_add_days(Days::new(1)))
        {
            last = days.next().expect("peeked");
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
            format!("status.checkpoint.done {range:?} is not a day or a range of days (YYYY-MM-DD[/YYYY-MM-DD])")
        })
    };
    let mut days = BTreeSet::new();
    for range in ranges {
        let (first, last) = match range.split_once('/') {
            Some((a, b)) => (day(a, range)?, day(b, range)?),
            None => (day(range, range)?, day(range, range)?),
        };
        if last < first {
            return Err(format!("status.checkpoint.done {range:?} ends before it starts"));
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

/// The status's checkpoint from the engine's.
pub fn to_status_checkpoint(c: &Checkpoint) -> StatusCheckpoint {
    StatusCheckpoint {
        processing: c.processing.clone(),
        done: day_ranges(&c.done),
    }
}

/// Why a pod cannot resume from its status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResumeError {
    /// A range of `done` does not parse.
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
/// with the days the status says are done. `None` status: from the start.
pub fn resume_from(status: Option<&StatusCheckpoint>, fresh: Checkpoint) -> Result<Checkpoint, ResumeError> {
    let Some(saved) = status else {
        return Ok(fresh);
    };
    let done = days_of_ranges(&saved.done).map_err(ResumeError::Unreadable)?;
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

/// The pod's status when it starts (or resumes): `Running`, `startedAt` once, progress and
/// the checkpoint it resumes from (so the processing identity is recorded before any day).
pub fn started(
    previous: Option<&ReprocessStatus>,
    generation: Option<i64>,
    checkpoint: &Checkpoint,
    message: &str,
    now: DateTime<Utc>,
) -> ReprocessStatus {
    let mut s = previous.cloned().unwrap_or_default();
    s.observed_generation = generation;
    s.phase = Phase::Running;
    s.started_at.get_or_insert_with(|| time(now));
    let (read, written) = rows_so_far(&s);
    s.progress = Some(ReprocessProgress::new(
        checkpoint.done.len() as u32,
        days_total(checkpoint),
        read,
        written,
    ));
    s.checkpoint = Some(to_status_checkpoint(checkpoint));
    conditions(&mut s, "False", "False", "Running", message, generation, now);
    s
}

/// Rows read and written by the run's earlier pods.
pub fn rows_so_far(s: &ReprocessStatus) -> (u64, u64) {
    s.progress.as_ref().map_or((0, 0), |p| (p.rows_read, p.rows_written))
}

/// The pod's status after a finished day: the day in `days` (bounded) and, if the status
/// did not count it yet, in `totals`; progress with `rows` (read, written: the run's
/// totals so far); the checkpoint.
pub fn record_day(
    previous: Option<&ReprocessStatus>,
    generation: Option<i64>,
    day: &DayReport,
    checkpoint: &Checkpoint,
    rows: (u64, u64),
    now: DateTime<Utc>,
) -> ReprocessStatus {
    let mut s = previous.cloned().unwrap_or_default();
    s.observed_generation = generation;
    let counted = s.checkpoint.as_ref().is_some_and(|c| ranges_contain(&c.done, day.day));
    let result = day_result(day);
    if !counted {
        add_to_totals(s.totals.get_or_insert_with(Default::default), &result);
    }
    merge_days(&mut s.days, [result]);
    let done = checkpoint.done.len() as u32;
    let total = days_total(checkpoint);
    s.progress = Some(ReprocessProgress::new(done, total, rows.0, rows.1));
    s.checkpoint = Some(to_status_checkpoint(checkpoint));
    s.phase = Phase::Running;
    let message = format!("{done} of {total} days done, the last {}", day.day);
    conditions(&mut s, "False", "False", "Running", &message, generation, now);
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
/// `Running`, with why; the Job's next pod resumes from the checkpoint.
pub fn interrupted(
    previous: Option<&ReprocessStatus>,
    generation: Option<i64>,
    message: &str,
    now: DateTime<Utc>,
) -> ReprocessStatus {
    let mut s = previous.cloned().unwrap_or_default();
    s.observed_generation = generation;
    conditions(&mut s, "False", "False", "Interrupted", message, generation, now);
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
        Final::Failed { reason, message } => (Phase::Failed, "False", "True", *reason, message),
        Final::Cancelled { message } => (Phase::Cancelled, "False", "False", "Cancelled", message),
    };
    s.phase = phase;
    conditions(&mut s, complete, failed, reason, message, generation, now);
    s.finished_at.get_or_insert_with(|| time(now));
    s
}

/// What the days done were, in a sentence: `3 of 7 days finished (2026-11-01/2026-11-03)`
/// with the identity and rows. For the Event a deleted Reprocess leaves behind (its status
/// goes with it); at most 1000 bytes, the Event API's limit for a note.
pub fn finished_days_note(phase: Phase, status: Option<&ReprocessStatus>) -> String {
    let default = ReprocessStatus::default();
    let s = status.unwrap_or(&default);
    let (done, total) = s.progress.as_ref().map_or((0, 0), |p| (p.days_done, p.days_total));
    let mut text = format!("deleted while {phase:?}: {done} of {total} days finished");
    if let Some(c) = s.checkpoint.as_ref().filter(|c| !c.done.is_empty()) {
        text.push_str(&format!(" with processing {} ({})", c.processing, c.done.join(", ")));
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
        assert!(decide(Some(&queued), Some(1), &again, t(30)).is_none());
        let starting = decide(
            Some(&queued),
            Some(1),
            &Decision::Starting {
                job: "fix-replay".into(),
            },
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
            t(70),
        )
        .unwrap();
        assert_eq!(pod.phase(), Phase::Pending);
        assert_eq!(cond(&pod, COMPLETE), ("False", "PodStarting"));
        assert!(pod.started_at.is_none());
        // The pod starts: Running, with the checkpoint (identity recorded before any day).
        let running = started(Some(&starting), Some(1), &checkpoint(&[]), "replaying with v3", t(90));
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
                decide(Some(&running), Some(1), &decision, t(100)).is_none(),
                "{decision:?}"
            );
        }
        let one = record_day(
            Some(&running),
            Some(1),
            &report(d(1), "v2", None),
            &checkpoint(&[1]),
            (100, 105),
            t(120),
        );
        assert_eq!(one.progress, Some(ReprocessProgress::new(1, 7, 100, 105)));
        assert_eq!(one.days.len(), 1);
        assert_eq!(one.checkpoint.as_ref().unwrap().done, ["2026-11-01"]);
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
        assert_eq!(done.progress, one.progress);
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
            },
            t(0),
        );
        assert_eq!(pod_failed.phase(), Phase::Failed);
        assert_eq!(cond(&pod_failed, FAILED), ("True", "ReplayFailed"));
    }

    #[test]
    fn checkpoints_are_day_ranges_that_round_trip_and_refuse_another_processor() {
        let c = checkpoint(&[1, 2, 3, 5, 7]);
        let s = to_status_checkpoint(&c);
        assert_eq!(s.done, ["2026-11-01/2026-11-03", "2026-11-05", "2026-11-07"]);
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
            done: vec![],
        };
        assert_eq!(resume_from(Some(&nothing_done), fresh.clone()).unwrap(), fresh);
        for bad in ["11/03/2026", "2026-11-05/2026-11-01", "2026-11-01/"] {
            let s = StatusCheckpoint {
                processing: "v3".into(),
                done: vec![bad.into()],
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
    fn days_are_counted_once_and_the_list_keeps_changed_and_latest_days() {
        let mut s = started(None, Some(1), &checkpoint(&[]), "start", t(0));
        let dry = |n| report(d(n), "v2", Some((100.0, 90.0)));
        s = record_day(Some(&s), Some(1), &dry(1), &checkpoint(&[1]), (1, 1), t(1));
        s = record_day(Some(&s), Some(1), &dry(2), &checkpoint(&[1, 2]), (2, 2), t(2));
        // A day reported again (a resumed pod) replaces its result and is not counted twice.
        s = record_day(Some(&s), Some(1), &dry(2), &checkpoint(&[1, 2]), (3, 3), t(3));
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
        let mut s = started(None, Some(1), &c, &long, t(0));
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
            s = record_day(Some(&s), Some(1), &r, &c, (u64::MAX, u64::MAX), t(1));
        }
        s = finished(
            Some(&s),
            Some(1),
            &Final::Failed {
                reason: "ReplayFailed",
                message: long.clone(),
            },
            t(2),
        );
        s.job_name = Some("j".repeat(63));
        let ranges = serde_json::to_vec(&s.checkpoint).unwrap().len();
        let whole = serde_json::to_vec(&s).unwrap().len();
        assert!(ranges < 30 * 1024, "checkpoint: {ranges} bytes");
        // 64 KiB is issue 18's bound; the README says under 48 KiB (measured: 45,676 bytes).
        assert!(whole < 48 * 1024, "status: {whole} bytes");
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
            (10, 10),
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
}
