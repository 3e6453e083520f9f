//! Status: what a reconcile found, as `metav1.Condition`s (`TopicsReady`, `SchemaReady`,
//! `IngestReady` and their sum `Ready`), each with its own `observedGeneration`. A
//! condition's `lastTransitionTime` changes only when its status does (reason and message
//! may be refreshed meanwhile), and each transition is recorded as a Kubernetes Event:
//! Normal when it turns True, Warning with the message when it turns False. Written by
//! server-side apply on `/status` under the operator's field manager.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, Resource, ResourceExt};

use crate::crd::{AnalyticsTenant, TenantStatus};
use crate::error::Result;
use crate::FIELD_MANAGER;

pub const READY: &str = "Ready";
pub const TOPICS_READY: &str = "TopicsReady";
pub const SCHEMA_READY: &str = "SchemaReady";
pub const INGEST_READY: &str = "IngestReady";

/// How one step of a reconcile went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Not reached (an earlier step failed, or the tenant is refused).
    NotRun,
    /// Done; the reason and message say what holds now.
    Done { reason: &'static str, message: String },
    /// Running but not there yet (pods starting).
    Progressing { message: String },
    /// Failed with a reason from `Error::reason`.
    Failed { reason: &'static str, message: String },
}

/// What one reconcile found, step by step.
#[derive(Clone, Debug)]
pub struct Report {
    pub topics: Step,
    pub schema: Step,
    pub ingest: Step,
    /// Set when the whole tenant was refused before any step (Invalid, Conflict).
    pub refused: Option<(&'static str, String)>,
    pub schema_version: Option<u32>,
    pub pipeline_version: Option<u32>,
    pub sites: Option<u32>,
    pub collector_endpoint: Option<String>,
    pub query_endpoint: Option<String>,
}

impl Default for Report {
    fn default() -> Self {
        Self {
            topics: Step::NotRun,
            schema: Step::NotRun,
            ingest: Step::NotRun,
            refused: None,
            schema_version: None,
            pipeline_version: None,
            sites: None,
            collector_endpoint: None,
            query_endpoint: None,
        }
    }
}

/// The status a report gives, starting from the previous one (so unchanged conditions
/// keep their transition time, and values not learned this time are kept).
pub fn compute(
    previous: Option<&TenantStatus>,
    generation: Option<i64>,
    report: &Report,
    now: DateTime<Utc>,
) -> TenantStatus {
    let previous = previous.cloned().unwrap_or_default();
    let mut conditions = previous.conditions.clone();
    let step_condition = |step: &Step| -> (&'static str, &'static str, String) {
        match (&report.refused, step) {
            (Some((reason, message)), _) => ("Unknown", reason, format!("not attempted: {message}")),
            (None, Step::NotRun) => ("Unknown", "NotAttempted", "an earlier step failed".to_string()),
            (None, Step::Done { reason, message }) => ("True", reason, message.clone()),
            (None, Step::Progressing { message }) => ("False", "Progressing", message.clone()),
            (None, Step::Failed { reason, message }) => ("False", reason, message.clone()),
        }
    };
    for (type_, step) in [
        (TOPICS_READY, &report.topics),
        (SCHEMA_READY, &report.schema),
        (INGEST_READY, &report.ingest),
    ] {
        let (status, reason, message) = step_condition(step);
        set(&mut conditions, type_, status, reason, &message, generation, now);
    }
    let (status, reason, message) = match &report.refused {
        Some((reason, message)) => ("False", *reason, message.clone()),
        None => {
            let steps = [&report.topics, &report.schema, &report.ingest];
            match steps.iter().find_map(|s| match s {
                Step::Failed { reason, message } => Some((*reason, message.clone())),
                _ => None,
            }) {
                Some((reason, message)) => ("False", reason, message),
                None => match steps.iter().find_map(|s| match s {
                    Step::Progressing { message } => Some(message.clone()),
                    _ => None,
                }) {
                    Some(message) => ("False", "Progressing", message),
                    None if steps.iter().all(|s| matches!(s, Step::Done { .. })) => (
                        "True",
                        "Reconciled",
                        "topics, schema and workloads match the spec".to_string(),
                    ),
                    None => ("Unknown", "NotAttempted", "not reconciled yet".to_string()),
                },
            }
        }
    };
    set(&mut conditions, READY, status, reason, &message, generation, now);
    // A stable order: Ready first, then the steps.
    let order = [READY, TOPICS_READY, SCHEMA_READY, INGEST_READY];
    conditions.sort_by_key(|c| order.iter().position(|t| *t == c.type_).unwrap_or(order.len()));
    TenantStatus {
        observed_generation: generation,
        conditions,
        schema_version: report.schema_version.or(previous.schema_version),
        pipeline_version: report.pipeline_version.or(previous.pipeline_version),
        sites: report.sites.or(previous.sites),
        collector_endpoint: report.collector_endpoint.clone().or(previous.collector_endpoint),
        query_endpoint: report.query_endpoint.clone().or(previous.query_endpoint),
    }
}

/// Sets a condition; its transition time moves only when its status changes.
fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: DateTime<Utc>,
) {
    let now = Time(
        k8s_openapi::jiff::Timestamp::from_millisecond(now.timestamp_millis())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    );
    // Messages are bounded in the API (32 KiB); a long error chain is cut.
    let message: String = message.chars().take(4000).collect();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now;
            }
            c.status = status.to_string();
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: now,
        }),
    }
}

/// The conditions whose status differs between two statuses: (type, new condition).
pub fn transitions<'a>(before: Option<&TenantStatus>, after: &'a TenantStatus) -> Vec<&'a Condition> {
    after
        .conditions
        .iter()
        .filter(|c| before.and_then(|b| b.condition(&c.type_)).map(|b| b.status.as_str()) != Some(c.status.as_str()))
        .collect()
}

/// Writes the status (server-side apply on `/status`) and records an Event per transition.
pub async fn publish(
    api: &Api<AnalyticsTenant>,
    recorder: &Recorder,
    obj: &AnalyticsTenant,
    status: &TenantStatus,
) -> Result<()> {
    let patch = serde_json::json!({
        "apiVersion": AnalyticsTenant::api_version(&()),
        "kind": AnalyticsTenant::kind(&()),
        "status": status,
    });
    api.patch_status(
        &obj.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    let reference = obj.object_ref(&());
    for c in transitions(obj.status.as_ref(), status) {
        // Unknown steps are noise (not attempted); only real outcomes are recorded.
        if c.status == "Unknown" {
            continue;
        }
        let event = Event {
            type_: if c.status == "True" {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: c.reason.clone(),
            note: Some(
                format!("{} is {}: {}", c.type_, c.status, c.message)
                    .chars()
                    .take(1000)
                    .collect(),
            ),
            action: c.type_.clone(),
            secondary: None,
        };
        if let Err(e) = recorder.publish(&event, &reference).await {
            // An Event is a courtesy; the status already says it.
            tracing::warn!(tenant = %obj.name_any(), error = %e, "event not recorded");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn done() -> Step {
        Step::Done {
            reason: "Provisioned",
            message: "ok".into(),
        }
    }

    #[test]
    fn all_steps_done_is_ready() {
        let r = Report {
            topics: done(),
            schema: done(),
            ingest: done(),
            schema_version: Some(5),
            ..Report::default()
        };
        let s = compute(None, Some(3), &r, t(0));
        let ready = s.condition(READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "Reconciled"));
        assert_eq!(ready.observed_generation, Some(3));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.schema_version, Some(5));
        let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [READY, TOPICS_READY, SCHEMA_READY, INGEST_READY]);
    }

    #[test]
    fn a_failure_names_its_reason_and_later_steps_are_unknown() {
        let r = Report {
            topics: Step::Failed {
                reason: "KafkaUnavailable",
                message: "all brokers down".into(),
            },
            ..Report::default()
        };
        let s = compute(None, Some(1), &r, t(0));
        let ready = s.condition(READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "KafkaUnavailable")
        );
        assert_eq!(s.condition(TOPICS_READY).unwrap().status, "False");
        assert_eq!(s.condition(SCHEMA_READY).unwrap().status, "Unknown");
    }

    #[test]
    fn transition_times_move_only_with_the_status() {
        let ok = Report {
            topics: done(),
            schema: done(),
            ingest: done(),
            ..Report::default()
        };
        let first = compute(None, Some(1), &ok, t(0));
        // Same outcome later, new generation: the time stays, the generation follows.
        let second = compute(Some(&first), Some(2), &ok, t(60));
        let (a, b) = (first.condition(READY).unwrap(), second.condition(READY).unwrap());
        assert_eq!(a.last_transition_time, b.last_transition_time);
        assert_eq!(b.observed_generation, Some(2));
        assert!(transitions(Some(&first), &second).is_empty());
        // A failure is a transition of Ready and TopicsReady.
        let failed = Report {
            topics: Step::Failed {
                reason: "KafkaUnavailable",
                message: "down".into(),
            },
            ..Report::default()
        };
        let third = compute(Some(&second), Some(2), &failed, t(120));
        assert_ne!(
            third.condition(READY).unwrap().last_transition_time,
            b.last_transition_time
        );
        let changed: Vec<&str> = transitions(Some(&second), &third)
            .iter()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(changed, [READY, TOPICS_READY, SCHEMA_READY, INGEST_READY]);
    }

    #[test]
    fn refusal_is_ready_false_with_its_reason() {
        let r = Report {
            refused: Some(("Conflict", "database x belongs to tenant y".into())),
            ..Report::default()
        };
        let s = compute(None, Some(1), &r, t(0));
        let ready = s.condition(READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "Conflict"));
        assert!(ready.message.contains("belongs to tenant y"));
    }

    #[test]
    fn pods_starting_is_progressing() {
        let r = Report {
            topics: done(),
            schema: done(),
            ingest: Step::Progressing {
                message: "collector 0/2 ready".into(),
            },
            ..Report::default()
        };
        let s = compute(None, Some(1), &r, t(0));
        assert_eq!(s.condition(READY).unwrap().reason, "Progressing");
        assert_eq!(s.condition(INGEST_READY).unwrap().status, "False");
    }
}
