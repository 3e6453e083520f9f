//! Status of a Reprocess: the pure transitions the operator and the Job's pod make. The
//! operator writes `Pending` (queued, or its Job starting) and `Failed` (a refusal, or a
//! Job that gave up); the pod writes `Running` with progress, per-day results and the
//! checkpoint after every day, then `Succeeded` or `Failed`. `Complete` and `Failed` are
//! `metav1.Condition`s whose `lastTransitionTime` moves only when their status does.
//!
//! Both writers send a JSON merge patch carrying the `resourceVersion` they read, so a
//! write based on a stale read is refused (409) and retried from a fresh one: the operator
//! never overwrites a result the pod wrote meanwhile.

use std::collections::BTreeSet;

use chrono::{DateTime, NaiveDate, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use sightline_core::warehouse::replay::{Checkpoint, DayReport};

use super::crd::{
    DayResult, MetricDelta, Phase, ReprocessProgress, ReprocessStatus, StatusCheckpoint, COMPLETE, FAILED,
};
use crate::status::set;

/// What the operator found for a Reprocess that is not final yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not run: `reason` says which check (UnknownTenant, RangeInFuture, NotSealed, ...).
    Refused { reason: &'static str, message: String },
    /// Waits for an overlapping Reprocess of the tenant (reason `Queued`).
    Queued { message: String },
    /// Its Job exists and has no running pod yet.
    Starting { job: String },
    /// Its Job's pod runs (the pod reports the rest).
    Running { job: String },
    /// Its Job failed (`BACKOFF_LIMIT` pods) without the pod reporting an outcome.
    JobFailed { job: String, message: String },
}

fn time(now: DateTime<Utc>) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::from_millisecond(now.timestamp_millis())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    )
}

/// The status after the operator's decision. `None` when the status already says it (no
/// write, so a resync does not churn the object).
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
        Decision::Starting { job } => (
            Phase::Pending,
            "False",
            "False",
            "JobStarting",
            format!("Job {job} created; waiting for its pod"),
        ),
        Decision::Running { job } => {
            // The pod writes Running with its progress; the operator only records the Job
            // (and Running, if the pod has not reported yet).
            s.job_name = Some(job.clone());
            if s.phase() == Phase::Pending {
                s.phase = Phase::Running;
                s.started_at.get_or_insert_with(|| time(now));
                s.message = Some(format!("Job {job} is running"));
                set(
                    &mut s.conditions,
                    COMPLETE,
                    "False",
                    "Running",
                    &format!("Job {job} is running"),
                    generation,
                    now,
                );
                set(
                    &mut s.conditions,
                    FAILED,
                    "False",
                    "Running",
                    &format!("Job {job} is running"),
                    generation,
                    now,
                );
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
    s.message = Some(message.clone());
    set(&mut s.conditions, COMPLETE, complete, reason, &message, generation, now);
    set(&mut s.conditions, FAILED, failed, reason, &message, generation, now);
    if phase.is_final() {
        s.finished_at.get_or_insert_with(|| time(now));
    }
    (s != before).then_some(s)
}

/// The status's checkpoint from the engine's (dates as `YYYY-MM-DD`).
pub fn to_status_checkpoint(c: &Checkpoint) -> StatusCheckpoint {
    StatusCheckpoint {
        tenant: c.tenant.clone(),
        first_day: c.first_day.to_string(),
        last_day: c.last_day.to_string(),
        sites: c.sites.clone(),
        processing: c.processing.clone(),
        dry_run: c.dry_run,
        done: c.done.iter().map(NaiveDate::to_string).collect(),
    }
}

/// The engine's checkpoint from the status's; an error names the date that does not parse
/// (the status was edited by hand).
pub fn from_status_checkpoint(c: &StatusCheckpoint) -> Result<Checkpoint, String> {
    let day = |text: &str, field: &str| {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_err(|_| format!("status.checkpoint.{field} {text:?} is not a date (YYYY-MM-DD)"))
    };
    Ok(Checkpoint {
        tenant: c.tenant.clone(),
        first_day: day(&c.first_day, "firstDay")?,
        last_day: day(&c.last_day, "lastDay")?,
        sites: c.sites.clone(),
        processing: c.processing.clone(),
        dry_run: c.dry_run,
        done: c
            .done
            .iter()
            .map(|d| day(d, "done"))
            .collect::<Result<BTreeSet<_>, _>>()?,
    })
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

/// Adds or replaces finished days, keeping day order (a day replayed again by a resumed pod
/// replaces its earlier result).
pub fn merge_days(days: &mut Vec<DayResult>, new: impl IntoIterator<Item = DayResult>) {
    for d in new {
        match days.iter_mut().find(|x| x.day == d.day) {
            Some(slot) => *slot = d,
            None => days.push(d),
        }
    }
    days.sort_by(|a, b| a.day.cmp(&b.day));
}

/// The pod's status while it runs: phase Running, progress, checkpoint (and `startedAt` once).
pub fn running(
    previous: Option<&ReprocessStatus>,
    generation: Option<i64>,
    progress: ReprocessProgress,
    checkpoint: &Checkpoint,
    now: DateTime<Utc>,
) -> ReprocessStatus {
    let mut s = previous.cloned().unwrap_or_default();
    s.observed_generation = generation;
    let message = format!("{} of {} days done", progress.days_done, progress.days_total);
    s.phase = Phase::Running;
    s.started_at.get_or_insert_with(|| time(now));
    set(
        &mut s.conditions,
        COMPLETE,
        "False",
        "Running",
        &message,
        generation,
        now,
    );
    set(&mut s.conditions, FAILED, "False", "Running", &message, generation, now);
    s.message = Some(message);
    s.progress = Some(progress);
    s.checkpoint = Some(to_status_checkpoint(checkpoint));
    s
}

/// The pod's last word: `Succeeded` with `Complete=True`, or `Failed` with `Failed=True`
/// and the reason (`ReplayFailed`, `Refused`, ...).
pub fn finished(
    previous: Option<&ReprocessStatus>,
    generation: Option<i64>,
    outcome: Result<String, (&'static str, String)>,
    now: DateTime<Utc>,
) -> ReprocessStatus {
    let mut s = previous.cloned().unwrap_or_default();
    s.observed_generation = generation;
    let (phase, complete, failed, reason, message) = match outcome {
        Ok(message) => (Phase::Succeeded, "True", "False", "Replayed", message),
        Err((reason, message)) => (Phase::Failed, "False", "True", reason, message),
    };
    s.phase = phase;
    set(&mut s.conditions, COMPLETE, complete, reason, &message, generation, now);
    set(&mut s.conditions, FAILED, failed, reason, &message, generation, now);
    s.message = Some(message);
    s.finished_at.get_or_insert_with(|| time(now));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn cond<'a>(s: &'a ReprocessStatus, type_: &str) -> (&'a str, &'a str) {
        let c = s.condition(type_).unwrap();
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn queued_then_starting_then_running_then_succeeded() {
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
        assert!(decide(
            Some(&queued),
            Some(1),
            &Decision::Queued {
                message: "waits for Reprocess analytics/first".into()
            },
            t(30)
        )
        .is_none());
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
        let running = decide(
            Some(&starting),
            Some(1),
            &Decision::Running {
                job: "fix-replay".into(),
            },
            t(90),
        )
        .unwrap();
        assert_eq!(running.phase(), Phase::Running);
        assert!(running.started_at.is_some());
        // The pod's progress is not overwritten by the operator seeing the Job run again.
        let mut reported = running.clone();
        reported.progress = Some(ReprocessProgress::new(2, 7, 100, 100));
        assert!(decide(
            Some(&reported),
            Some(1),
            &Decision::Running {
                job: "fix-replay".into()
            },
            t(120)
        )
        .is_none());
        let done = finished(Some(&reported), Some(1), Ok("7 days replayed".into()), t(300));
        assert_eq!(done.phase(), Phase::Succeeded);
        assert_eq!(cond(&done, COMPLETE), ("True", "Replayed"));
        assert_eq!(cond(&done, FAILED), ("False", "Replayed"));
        assert!(done.finished_at.is_some());
        assert_eq!(done.progress, reported.progress);
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
            Err(("ReplayFailed", "day 2026-11-03: mismatch".into())),
            t(0),
        );
        assert_eq!(pod_failed.phase(), Phase::Failed);
        assert_eq!(cond(&pod_failed, FAILED), ("True", "ReplayFailed"));
    }

    #[test]
    fn checkpoints_round_trip_and_a_bad_date_is_named() {
        let c = Checkpoint {
            tenant: "acme".into(),
            first_day: NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(),
            last_day: NaiveDate::from_ymd_opt(2026, 11, 7).unwrap(),
            sites: vec!["shop.example.com".into()],
            processing: "v3-bots".into(),
            dry_run: false,
            done: [1, 2, 5]
                .iter()
                .map(|d| NaiveDate::from_ymd_opt(2026, 11, *d).unwrap())
                .collect(),
        };
        let s = to_status_checkpoint(&c);
        assert_eq!(s.done, ["2026-11-01", "2026-11-02", "2026-11-05"]);
        assert_eq!(from_status_checkpoint(&s).unwrap(), c);
        let bad = StatusCheckpoint {
            done: vec!["11/03/2026".into()],
            ..s
        };
        assert!(from_status_checkpoint(&bad)
            .unwrap_err()
            .contains("checkpoint.done \"11/03/2026\""));
        let running = running(None, Some(1), ReprocessProgress::new(3, 7, 9, 9), &c, t(0));
        assert_eq!(running.checkpoint.as_ref().unwrap().done.len(), 3);
        assert_eq!(running.progress.as_ref().unwrap().summary, "3/7");
    }

    #[test]
    fn days_merge_in_order_and_a_replayed_day_replaces_its_result() {
        let day = |d: &str, rows: u64| DayResult {
            day: d.into(),
            processing_before: Default::default(),
            processing_after: "v3".into(),
            raw_rows: rows,
            copied_rows: 0,
            caught_up: 0,
            swapped: true,
            deltas: vec![],
        };
        let mut days = vec![day("2026-11-03", 1)];
        merge_days(&mut days, [day("2026-11-01", 2), day("2026-11-03", 5)]);
        let got: Vec<(&str, u64)> = days.iter().map(|d| (d.day.as_str(), d.raw_rows)).collect();
        assert_eq!(got, [("2026-11-01", 2), ("2026-11-03", 5)]);
    }
}
