//! Status: what a reconcile found, as `metav1.Condition`s, each with its own
//! `observedGeneration`, written by server-side apply on `/status` under the operator's
//! field manager; every transition is a Kubernetes Event (Normal for good news, Warning
//! for bad, see `conditions::event_type`).
//!
//! The conditions of an `AnalyticsTenant`:
//!
//! | type | True means |
//! | --- | --- |
//! | `Ready` | all of the six below are True: topics, schema, signing secret, three roles |
//! | `TopicsReady` | the event and dead-letter topics exist as the spec says |
//! | `SchemaReady` | the database is at the plan's version with every table and view |
//! | `SigningSecretReady` | the signing Secret exists with a usable key |
//! | `CollectorAvailable`, `LoaderAvailable`, `QueryAvailable` | the role has a ready pod |
//! | `InSync` | nothing the operator owns differs from the spec (repaired drift included) |
//! | `ReconciliationPaused` | the pause annotation is set: nothing is written |
//! | `RolloutPending` | a pod template changed and its pods are being replaced |
//! | `Reconciling` | kstatus: work toward the spec is under way (or retried) |
//! | `Stalled` | kstatus: it needs a person (an invalid spec, a refused change) |
//! | `DeletionBlocked` | (only while deleting with `Delete`) cleanup cannot finish |
//!
//! `status.observedGeneration` moves to the generation a reconcile finished: applied (pods
//! may still be starting: `Reconciling`), or refused (`Stalled`). A reconcile retried after
//! an outage, or a paused tenant, leaves it behind, so kstatus reads InProgress.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::Recorder;
use kube::{Api, Resource, ResourceExt};

use crate::conditions::{self, Update, FALSE, TRUE, UNKNOWN};
use crate::crd::{AnalyticsTenant, TenantStatus};
use crate::drift::{Found, Outcome};
use crate::error::Result;
use crate::FIELD_MANAGER;

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";
pub const TOPICS_READY: &str = "TopicsReady";
pub const SCHEMA_READY: &str = "SchemaReady";
pub const SIGNING_SECRET_READY: &str = "SigningSecretReady";
pub const COLLECTOR_AVAILABLE: &str = "CollectorAvailable";
pub const LOADER_AVAILABLE: &str = "LoaderAvailable";
pub const QUERY_AVAILABLE: &str = "QueryAvailable";
pub const IN_SYNC: &str = "InSync";
pub const RECONCILIATION_PAUSED: &str = "ReconciliationPaused";
pub const ROLLOUT_PENDING: &str = "RolloutPending";
pub const DELETION_BLOCKED: &str = "DeletionBlocked";

/// The order conditions are listed in.
pub const ORDER: [&str; 13] = [
    READY,
    RECONCILING,
    STALLED,
    TOPICS_READY,
    SCHEMA_READY,
    SIGNING_SECRET_READY,
    COLLECTOR_AVAILABLE,
    LOADER_AVAILABLE,
    QUERY_AVAILABLE,
    IN_SYNC,
    RECONCILIATION_PAUSED,
    ROLLOUT_PENDING,
    DELETION_BLOCKED,
];

/// Conditions whose True is bad news (Warning Events when they turn True).
pub const ABNORMAL_TRUE: [&str; 5] = [
    RECONCILING,
    STALLED,
    RECONCILIATION_PAUSED,
    ROLLOUT_PENDING,
    DELETION_BLOCKED,
];

/// How one step of a reconcile went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Not reached (an earlier step failed, or the tenant is refused).
    NotRun,
    /// Done; the reason and message say what holds now.
    Done { reason: &'static str, message: String },
    /// Running but not there yet (pods starting).
    Progressing { message: String },
    /// Changes are due but were not made (the tenant is paused).
    Pending { message: String },
    /// Failed with a reason from `Error::reason`; `transient` when waiting can help.
    Failed {
        reason: &'static str,
        message: String,
        transient: bool,
    },
}

impl Step {
    /// A failure from an error.
    pub fn failed(e: &crate::Error) -> Self {
        Step::Failed {
            reason: e.reason(),
            message: e.to_string(),
            transient: e.is_transient(),
        }
    }
}

/// What one reconcile found, step by step.
#[derive(Clone, Debug)]
pub struct Report {
    pub topics: Step,
    pub schema: Step,
    pub signing_secret: Step,
    pub collector: Step,
    pub loader: Step,
    pub query: Step,
    /// Set when the whole tenant was refused before any step (Invalid, Conflict).
    pub refused: Option<(&'static str, String)>,
    /// The pause annotation was set: nothing was written.
    pub paused: bool,
    /// What was compared with the spec and differed; `None` when the check did not run.
    pub drift: Option<Vec<Found>>,
    /// Parts the drift check could not look at (and why).
    pub unchecked: Vec<String>,
    /// Roles whose pods are being replaced after a template change, with the cause;
    /// `None` when the workloads were not reached.
    pub rollout: Option<Vec<String>>,
    pub schema_version: Option<u32>,
    pub pipeline_version: Option<u32>,
    pub sites: Option<u32>,
    pub collector_endpoint: Option<String>,
    pub query_endpoint: Option<String>,
    pub loader_lag: Option<i64>,
    pub signing_key_fingerprint: Option<String>,
    pub applied_topics_digest: Option<String>,
    pub applied_schema_digest: Option<String>,
}

impl Default for Report {
    fn default() -> Self {
        Self {
            topics: Step::NotRun,
            schema: Step::NotRun,
            signing_secret: Step::NotRun,
            collector: Step::NotRun,
            loader: Step::NotRun,
            query: Step::NotRun,
            refused: None,
            paused: false,
            drift: None,
            unchecked: Vec::new(),
            rollout: None,
            schema_version: None,
            pipeline_version: None,
            sites: None,
            collector_endpoint: None,
            query_endpoint: None,
            loader_lag: None,
            signing_key_fingerprint: None,
            applied_topics_digest: None,
            applied_schema_digest: None,
        }
    }
}

impl Report {
    fn steps(&self) -> [(&'static str, &Step); 6] {
        [
            (TOPICS_READY, &self.topics),
            (SCHEMA_READY, &self.schema),
            (SIGNING_SECRET_READY, &self.signing_secret),
            (COLLECTOR_AVAILABLE, &self.collector),
            (LOADER_AVAILABLE, &self.loader),
            (QUERY_AVAILABLE, &self.query),
        ]
    }

    /// A step failed in a way only a person can fix (or the tenant was refused).
    pub fn stalled(&self) -> Option<(&'static str, String)> {
        if let Some((reason, message)) = &self.refused {
            return Some((reason, message.clone()));
        }
        self.steps().iter().find_map(|(_, s)| match s {
            Step::Failed {
                reason,
                message,
                transient: false,
            } => Some((*reason, message.clone())),
            _ => None,
        })
    }

    /// Whether this reconcile finished with the spec it saw: every step ran (pods may still
    /// be starting), or it stopped on something only a person can fix. A paused tenant and
    /// a reconcile cut short by an outage have not.
    pub fn concluded(&self) -> bool {
        !self.paused
            && (self.stalled().is_some()
                || self
                    .steps()
                    .iter()
                    .all(|(_, s)| matches!(s, Step::Done { .. } | Step::Progressing { .. })))
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
    let had_rollout = conditions::find(&conditions, ROLLOUT_PENDING).is_some();
    let mut put = |type_: &str, status: &str, reason: &str, message: &str| {
        conditions::set(
            &mut conditions,
            Update {
                type_,
                status,
                reason,
                message,
                generation,
            },
            now,
        )
    };
    for (type_, step) in report.steps() {
        let (status, reason, message) = match (&report.refused, step) {
            (Some((reason, message)), _) => (UNKNOWN, *reason, format!("not attempted: {message}")),
            (None, Step::NotRun) => (UNKNOWN, "NotAttempted", "an earlier step failed".to_string()),
            (None, Step::Done { reason, message }) => (TRUE, *reason, message.clone()),
            (None, Step::Progressing { message }) => (FALSE, "Progressing", message.clone()),
            (None, Step::Pending { message }) => (FALSE, "ChangesPending", message.clone()),
            (None, Step::Failed { reason, message, .. }) => (FALSE, *reason, message.clone()),
        };
        put(type_, status, reason, &message);
    }

    // Ready: the first failure, else what is still on its way, else all done.
    let steps = report.steps();
    let (ready, ready_reason, ready_message) = match &report.refused {
        Some((reason, message)) => (FALSE, *reason, message.clone()),
        None => {
            let failed = steps.iter().find_map(|(type_, s)| match s {
                Step::Failed { reason, message, .. } => Some((*reason, format!("{type_}: {message}"))),
                _ => None,
            });
            let waiting = steps.iter().find_map(|(type_, s)| match s {
                Step::Progressing { message } => Some(("Progressing", format!("{type_}: {message}"))),
                Step::Pending { message } => Some(("ChangesPending", format!("{type_}: {message}"))),
                _ => None,
            });
            match (failed, waiting) {
                (Some((reason, message)), _) => (FALSE, reason, message),
                (None, Some((reason, message))) => (FALSE, reason, message),
                (None, None) if steps.iter().all(|(_, s)| matches!(s, Step::Done { .. })) => (
                    TRUE,
                    "Reconciled",
                    "topics, schema, signing secret and workloads match the spec".to_string(),
                ),
                (None, None) => (UNKNOWN, "NotAttempted", "not reconciled yet".to_string()),
            }
        }
    };
    put(READY, ready, ready_reason, &ready_message);

    // kstatus: Stalled when it needs a person, Reconciling while work is under way.
    let stalled = report.stalled();
    match &stalled {
        Some((reason, message)) => put(STALLED, TRUE, reason, message),
        None => put(STALLED, FALSE, "NotStalled", "nothing needs a person"),
    }
    if report.paused {
        put(RECONCILING, FALSE, "Paused", "reconciliation is paused by annotation");
    } else if stalled.is_some() {
        put(
            RECONCILING,
            FALSE,
            "Stalled",
            "stopped until the spec or the cluster changes",
        );
    } else if ready == TRUE {
        put(RECONCILING, FALSE, "Reconciled", "the spec is in place");
    } else {
        put(RECONCILING, TRUE, ready_reason, &ready_message);
    }

    // InSync: what drifted, repaired or reported.
    let (in_sync, sync_reason, sync_message) = match &report.drift {
        None => (
            UNKNOWN,
            "NotChecked",
            "not compared with the spec (an earlier step failed)".to_string(),
        ),
        Some(found) => {
            let list = |outcome: Outcome| -> Vec<String> {
                found
                    .iter()
                    .filter(|f| f.outcome == outcome)
                    .map(Found::describe)
                    .collect()
            };
            let (reported, repaired) = (list(Outcome::Reported), list(Outcome::Repaired));
            let mut message = Vec::new();
            if !reported.is_empty() {
                message.push(format!("not repaired: {}", reported.join("; ")));
            }
            if !repaired.is_empty() {
                message.push(format!("repaired: {}", repaired.join("; ")));
            }
            if !report.unchecked.is_empty() {
                message.push(format!("not checked: {}", report.unchecked.join("; ")));
            }
            let message = message.join(". ");
            if !reported.is_empty() {
                (FALSE, "DriftDetected", message)
            } else if !report.unchecked.is_empty() {
                (UNKNOWN, "PartlyChecked", message)
            } else if !repaired.is_empty() {
                (TRUE, "Repaired", message)
            } else {
                (
                    TRUE,
                    "NoDrift",
                    "Kubernetes objects, topics, tables and views match the spec".to_string(),
                )
            }
        }
    };
    put(IN_SYNC, in_sync, sync_reason, &sync_message);

    if report.paused {
        put(
            RECONCILIATION_PAUSED,
            TRUE,
            "Paused",
            &format!(
                "annotation {}: nothing is written; status is still refreshed",
                crate::crd::PAUSE_ANNOTATION
            ),
        );
    } else {
        put(
            RECONCILIATION_PAUSED,
            FALSE,
            "NotPaused",
            "the operator reconciles this tenant",
        );
    }

    match &report.rollout {
        Some(rolling) if rolling.is_empty() => put(
            ROLLOUT_PENDING,
            FALSE,
            "UpToDate",
            "every pod runs its current template",
        ),
        Some(rolling) => put(ROLLOUT_PENDING, TRUE, "RolloutInProgress", &rolling.join("; ")),
        None if !had_rollout => put(ROLLOUT_PENDING, UNKNOWN, "NotChecked", "the workloads were not reached"),
        None => {}
    }
    conditions::remove(&mut conditions, DELETION_BLOCKED);
    conditions::sort(&mut conditions, &ORDER);
    TenantStatus {
        observed_generation: if report.concluded() {
            generation
        } else {
            previous.observed_generation
        },
        conditions,
        schema_version: report.schema_version.or(previous.schema_version),
        pipeline_version: report.pipeline_version.or(previous.pipeline_version),
        sites: report.sites.or(previous.sites),
        collector_endpoint: report.collector_endpoint.clone().or(previous.collector_endpoint),
        query_endpoint: report.query_endpoint.clone().or(previous.query_endpoint),
        loader_lag: report.loader_lag.or(previous.loader_lag),
        signing_key_fingerprint: report
            .signing_key_fingerprint
            .clone()
            .or(previous.signing_key_fingerprint),
        applied_topics_digest: report.applied_topics_digest.clone().or(previous.applied_topics_digest),
        applied_schema_digest: report.applied_schema_digest.clone().or(previous.applied_schema_digest),
    }
}

/// The status while a `Delete` cleanup is under way: `DeletionBlocked` True with what is
/// left and why (`blocked`), or False once nothing is left; `Ready` False, reason
/// `Deleting`. Everything else is kept as the last reconcile left it.
pub fn deleting(
    previous: Option<&TenantStatus>,
    generation: Option<i64>,
    blocked: Option<(&str, &str)>,
    now: DateTime<Utc>,
) -> TenantStatus {
    let mut status = previous.cloned().unwrap_or_default();
    let mut put = |type_: &str, value: &str, reason: &str, message: &str| {
        conditions::set(
            &mut status.conditions,
            Update {
                type_,
                status: value,
                reason,
                message,
                generation,
            },
            now,
        )
    };
    match blocked {
        Some((reason, message)) => {
            put(DELETION_BLOCKED, TRUE, reason, message);
            put(READY, FALSE, "Deleting", &format!("cleanup cannot finish: {message}"));
        }
        None => {
            put(
                DELETION_BLOCKED,
                FALSE,
                "CleanedUp",
                "nothing is left outside Kubernetes",
            );
            put(READY, FALSE, "Deleting", "being deleted");
        }
    }
    conditions::sort(&mut status.conditions, &ORDER);
    status
}

/// The conditions whose status differs between two statuses.
pub fn transitions<'a>(before: Option<&TenantStatus>, after: &'a TenantStatus) -> Vec<&'a Condition> {
    conditions::transitions(
        before.map(|b| b.conditions.as_slice()).unwrap_or(&[]),
        &after.conditions,
    )
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
    let before = obj.status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
    conditions::record_transitions(recorder, obj, &before, &status.conditions, &ABNORMAL_TRUE).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::Kind;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn done() -> Step {
        Step::Done {
            reason: "Provisioned",
            message: "ok".into(),
        }
    }

    fn all_done() -> Report {
        Report {
            topics: done(),
            schema: done(),
            signing_secret: done(),
            collector: done(),
            loader: done(),
            query: done(),
            drift: Some(Vec::new()),
            rollout: Some(Vec::new()),
            ..Report::default()
        }
    }

    fn cond<'a>(s: &'a TenantStatus, type_: &str) -> (&'a str, &'a str) {
        let c = s.condition(type_).unwrap_or_else(|| panic!("no {type_}"));
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn all_steps_done_is_ready_current_and_in_sync() {
        let s = compute(
            None,
            Some(3),
            &Report {
                schema_version: Some(5),
                ..all_done()
            },
            t(0),
        );
        assert_eq!(cond(&s, READY), (TRUE, "Reconciled"));
        assert_eq!(cond(&s, RECONCILING).0, FALSE);
        assert_eq!(cond(&s, STALLED).0, FALSE);
        assert_eq!(cond(&s, IN_SYNC), (TRUE, "NoDrift"));
        assert_eq!(cond(&s, RECONCILIATION_PAUSED).0, FALSE);
        assert_eq!(cond(&s, ROLLOUT_PENDING), (FALSE, "UpToDate"));
        assert!(s.conditions.iter().all(|c| c.observed_generation == Some(3)));
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.schema_version, Some(5));
        let types: Vec<&str> = s.conditions.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ORDER[..12]);
        assert_eq!(
            conditions::health(false, Some(3), s.observed_generation, &s.conditions),
            conditions::Health::Current
        );
    }

    #[test]
    fn an_outage_keeps_the_observed_generation_and_is_reconciling() {
        let first = compute(None, Some(1), &all_done(), t(0));
        // Generation 2 (a spec edit) meets Kafka down: the status still says 1.
        let r = Report {
            topics: Step::Failed {
                reason: "KafkaUnavailable",
                message: "all brokers down".into(),
                transient: true,
            },
            ..Report::default()
        };
        let s = compute(Some(&first), Some(2), &r, t(60));
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(cond(&s, READY), (FALSE, "KafkaUnavailable"));
        assert_eq!(cond(&s, RECONCILING), (TRUE, "KafkaUnavailable"));
        assert_eq!(cond(&s, STALLED).0, FALSE);
        assert_eq!(cond(&s, SCHEMA_READY).0, UNKNOWN);
        assert_eq!(cond(&s, IN_SYNC).0, UNKNOWN);
        assert_eq!(
            conditions::health(false, Some(2), s.observed_generation, &s.conditions).word(),
            "InProgress"
        );
        // Kafka is back: generation 2 is observed.
        let s = compute(Some(&s), Some(2), &all_done(), t(120));
        assert_eq!(s.observed_generation, Some(2));
    }

    #[test]
    fn a_refusal_or_a_hard_failure_is_stalled_and_observed() {
        let r = Report {
            refused: Some(("Conflict", "database x belongs to tenant y".into())),
            ..Report::default()
        };
        let s = compute(None, Some(1), &r, t(0));
        assert_eq!(cond(&s, READY), (FALSE, "Conflict"));
        assert_eq!(cond(&s, STALLED), (TRUE, "Conflict"));
        assert_eq!(cond(&s, RECONCILING).0, FALSE);
        assert_eq!(s.observed_generation, Some(1));
        assert!(s.condition(READY).unwrap().message.contains("belongs to tenant y"));
        let r = Report {
            topics: Step::Failed {
                reason: "NotSupported",
                message: "never shrink".into(),
                transient: false,
            },
            ..Report::default()
        };
        let s = compute(None, Some(1), &r, t(0));
        assert_eq!(cond(&s, STALLED), (TRUE, "NotSupported"));
        assert_eq!(
            conditions::health(false, Some(1), s.observed_generation, &s.conditions).word(),
            "Failed"
        );
    }

    #[test]
    fn pods_starting_are_progressing_and_the_generation_is_observed() {
        let r = Report {
            loader: Step::Progressing {
                message: "0/2 ready".into(),
            },
            ..all_done()
        };
        let s = compute(None, Some(1), &r, t(0));
        assert_eq!(cond(&s, READY), (FALSE, "Progressing"));
        assert_eq!(cond(&s, LOADER_AVAILABLE), (FALSE, "Progressing"));
        assert_eq!(cond(&s, RECONCILING), (TRUE, "Progressing"));
        assert_eq!(s.observed_generation, Some(1));
    }

    #[test]
    fn paused_refreshes_conditions_but_not_the_observed_generation() {
        let first = compute(None, Some(1), &all_done(), t(0));
        let r = Report {
            paused: true,
            topics: Step::Pending {
                message: "partitions 3 -> 6 not applied".into(),
            },
            ..all_done()
        };
        let s = compute(Some(&first), Some(2), &r, t(60));
        assert_eq!(cond(&s, RECONCILIATION_PAUSED), (TRUE, "Paused"));
        assert_eq!(cond(&s, TOPICS_READY), (FALSE, "ChangesPending"));
        assert_eq!(cond(&s, RECONCILING), (FALSE, "Paused"));
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!(s.condition(TOPICS_READY).unwrap().observed_generation, Some(2));
    }

    #[test]
    fn drift_is_listed_in_in_sync() {
        let repaired = Found {
            kind: Kind::Topic,
            object: "sightline.acme.events.dlq".into(),
            detail: "deleted".into(),
            outcome: Outcome::Repaired,
        };
        let s = compute(
            None,
            Some(1),
            &Report {
                drift: Some(vec![repaired.clone()]),
                ..all_done()
            },
            t(0),
        );
        assert_eq!(cond(&s, IN_SYNC), (TRUE, "Repaired"));
        assert!(s
            .condition(IN_SYNC)
            .unwrap()
            .message
            .contains("sightline.acme.events.dlq"));
        let reported = Found {
            kind: Kind::TableDefinition,
            object: "sightline_acme.events".into(),
            detail: "differs".into(),
            outcome: Outcome::Reported,
        };
        let s = compute(
            Some(&s),
            Some(1),
            &Report {
                drift: Some(vec![repaired, reported]),
                ..all_done()
            },
            t(10),
        );
        assert_eq!(cond(&s, IN_SYNC), (FALSE, "DriftDetected"));
        let message = &s.condition(IN_SYNC).unwrap().message;
        assert!(
            message.starts_with("not repaired: table definition sightline_acme.events"),
            "{message}"
        );
        // Drift does not make the tenant unready.
        assert_eq!(cond(&s, READY).0, TRUE);
    }

    #[test]
    fn deletion_blocked_says_what_is_left() {
        let ready = compute(None, Some(1), &all_done(), t(0));
        let s = deleting(
            Some(&ready),
            Some(1),
            Some(("ClickHouseUnavailable", "database sightline_acme: refused")),
            t(10),
        );
        assert_eq!(cond(&s, DELETION_BLOCKED), (TRUE, "ClickHouseUnavailable"));
        assert_eq!(cond(&s, READY), (FALSE, "Deleting"));
        assert_eq!(
            conditions::transitions(&ready.conditions, &s.conditions)
                .iter()
                .map(|c| c.type_.as_str())
                .collect::<Vec<_>>(),
            [READY, DELETION_BLOCKED]
        );
        // A later reconcile that is not deleting drops the condition.
        assert!(compute(Some(&s), Some(1), &all_done(), t(20))
            .condition(DELETION_BLOCKED)
            .is_none());
    }
}
