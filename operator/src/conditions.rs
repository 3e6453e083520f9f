//! `metav1.Condition` helpers for every resource the operator reconciles (the tenant's
//! status and any other resource's): set a condition so its `lastTransitionTime` moves only
//! when its status does, list the conditions that changed, record each change as a
//! Kubernetes Event, and read a resource's health the way kstatus does (Flux, `kpt`, `kubectl
//! wait`-style tools), so what the operator writes is what those tools understand.
//!
//! kstatus (sigs.k8s.io/cli-utils/pkg/kstatus) reads a custom resource as: `Terminating`
//! while it has a deletion timestamp; `InProgress` while `status.observedGeneration` differs
//! from `metadata.generation` or a `Reconciling` condition is True; `Failed` while a
//! `Stalled` condition is True; `Current` otherwise. The operator therefore sets
//! `Reconciling` and `Stalled` beside `Ready` (see `status`).

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::Resource;

/// The longest condition message written (the API allows 32 KiB; a long error chain is cut).
pub const MAX_MESSAGE_CHARS: usize = 4000;

/// `True`, `False` or `Unknown`, as the API spells them.
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// A condition to set: everything but the transition time, which `set` decides.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update<'a> {
    pub type_: &'a str,
    pub status: &'a str,
    pub reason: &'a str,
    pub message: &'a str,
    pub generation: Option<i64>,
}

/// Sets a condition; its transition time moves only when its status changes (reason,
/// message and `observedGeneration` are refreshed every time).
pub fn set(conditions: &mut Vec<Condition>, update: Update<'_>, now: DateTime<Utc>) {
    let now = Time(
        k8s_openapi::jiff::Timestamp::from_millisecond(now.timestamp_millis())
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
    );
    let message: String = update.message.chars().take(MAX_MESSAGE_CHARS).collect();
    match conditions.iter_mut().find(|c| c.type_ == update.type_) {
        Some(c) => {
            if c.status != update.status {
                c.last_transition_time = now;
            }
            c.status = update.status.to_string();
            c.reason = update.reason.to_string();
            c.message = message;
            c.observed_generation = update.generation;
        }
        None => conditions.push(Condition {
            type_: update.type_.to_string(),
            status: update.status.to_string(),
            reason: update.reason.to_string(),
            message,
            observed_generation: update.generation,
            last_transition_time: now,
        }),
    }
}

/// Removes a condition (one that only exists while something holds, e.g. `DeletionBlocked`).
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// The condition of a type, if set.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Sorts conditions in `order`; types not in it go last, in their current order.
pub fn sort(conditions: &mut [Condition], order: &[&str]) {
    conditions.sort_by_key(|c| order.iter().position(|t| *t == c.type_).unwrap_or(order.len()));
}

/// The conditions of `after` whose status differs from `before` (or that are new).
pub fn transitions<'a>(before: &[Condition], after: &'a [Condition]) -> Vec<&'a Condition> {
    after
        .iter()
        .filter(|c| find(before, &c.type_).map(|b| b.status.as_str()) != Some(c.status.as_str()))
        .collect()
}

/// How an Event for a condition's transition is typed: a condition whose True is bad news
/// (`Stalled`, `DeletionBlocked`, …) is a Warning when it turns True, the others when they
/// turn False.
pub fn event_type(condition: &Condition, abnormal_true: &[&str]) -> EventType {
    let bad = if abnormal_true.contains(&condition.type_.as_str()) {
        condition.status == TRUE
    } else {
        condition.status == FALSE
    };
    if bad {
        EventType::Warning
    } else {
        EventType::Normal
    }
}

/// Records one Event per transition from `before` to `after` (Unknown ones are "not
/// attempted" noise and are skipped). An Event is a courtesy (the status already says it):
/// a failure to record one is logged, never returned.
pub async fn record_transitions<K>(
    recorder: &Recorder,
    object: &K,
    before: &[Condition],
    after: &[Condition],
    abnormal_true: &[&str],
) where
    K: Resource<DynamicType = ()>,
{
    let reference = object.object_ref(&());
    for c in transitions(before, after) {
        if c.status == UNKNOWN {
            continue;
        }
        let event = Event {
            type_: event_type(c, abnormal_true),
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
            tracing::warn!(object = ?reference.name, error = %e, "event not recorded");
        }
    }
}

/// A resource's health as kstatus computes it for custom resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    /// Being deleted.
    Terminating,
    /// The spec's generation is not observed yet, or a `Reconciling` condition is True.
    InProgress(String),
    /// A `Stalled` condition is True: it needs a person.
    Failed(String),
    /// Everything the spec asks for is in place (as far as the generic rules can tell).
    Current,
}

impl Health {
    pub fn word(&self) -> &'static str {
        match self {
            Health::Terminating => "Terminating",
            Health::InProgress(_) => "InProgress",
            Health::Failed(_) => "Failed",
            Health::Current => "Current",
        }
    }
}

/// kstatus's generic rules (`checkGenericProperties` of sigs.k8s.io/cli-utils), in order:
/// deletion, generation, then `Reconciling` and `Stalled`.
pub fn health(
    deleting: bool,
    generation: Option<i64>,
    observed_generation: Option<i64>,
    conditions: &[Condition],
) -> Health {
    if deleting {
        return Health::Terminating;
    }
    if let (Some(generation), Some(observed)) = (generation, observed_generation) {
        if generation != observed {
            return Health::InProgress(format!(
                "generation is {generation}, but latest observed generation is {observed}"
            ));
        }
    }
    for c in conditions {
        if c.type_ == "Reconciling" && c.status == TRUE {
            return Health::InProgress(c.message.clone());
        }
        if c.type_ == "Stalled" && c.status == TRUE {
            return Health::Failed(c.message.clone());
        }
    }
    Health::Current
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn update<'a>(type_: &'a str, status: &'a str, reason: &'a str) -> Update<'a> {
        Update {
            type_,
            status,
            reason,
            message: "m",
            generation: Some(1),
        }
    }

    #[test]
    fn the_transition_time_moves_only_with_the_status() {
        let mut c = Vec::new();
        set(&mut c, update("Ready", TRUE, "A"), t(0));
        set(&mut c, update("Ready", TRUE, "B"), t(10));
        assert_eq!(c[0].reason, "B");
        assert_eq!(c[0].last_transition_time.0.as_second(), 1_800_000_000);
        let before = c.clone();
        set(&mut c, update("Ready", FALSE, "C"), t(20));
        assert_eq!(c[0].last_transition_time.0.as_second(), 1_800_000_020);
        assert_eq!(transitions(&before, &c).len(), 1);
        assert!(transitions(&c, &c).is_empty());
        set(&mut c, update("Other", TRUE, "D"), t(30));
        sort(&mut c, &["Other", "Ready"]);
        assert_eq!(c[0].type_, "Other");
        remove(&mut c, "Other");
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn a_long_message_is_cut() {
        let mut c = Vec::new();
        let long = "x".repeat(10_000);
        set(
            &mut c,
            Update {
                message: &long,
                ..update("Ready", TRUE, "A")
            },
            t(0),
        );
        assert_eq!(c[0].message.len(), MAX_MESSAGE_CHARS);
    }

    #[test]
    fn events_are_warnings_for_bad_news_only() {
        let mut c = Vec::new();
        set(&mut c, update("Stalled", TRUE, "Invalid"), t(0));
        set(&mut c, update("Ready", FALSE, "Invalid"), t(0));
        set(&mut c, update("InSync", TRUE, "NoDrift"), t(0));
        let kinds: Vec<EventType> = c.iter().map(|c| event_type(c, &["Stalled"])).collect();
        assert_eq!(kinds, [EventType::Warning, EventType::Warning, EventType::Normal]);
    }

    #[test]
    fn health_follows_kstatus_rules_in_order() {
        let mut c = Vec::new();
        assert_eq!(health(true, Some(2), Some(1), &c), Health::Terminating);
        assert_eq!(health(false, Some(2), Some(1), &c).word(), "InProgress");
        assert_eq!(health(false, Some(2), None, &c), Health::Current);
        set(&mut c, update("Reconciling", TRUE, "Progressing"), t(0));
        assert_eq!(health(false, Some(1), Some(1), &c).word(), "InProgress");
        set(&mut c, update("Reconciling", FALSE, "Stalled"), t(0));
        set(&mut c, update("Stalled", TRUE, "Invalid"), t(0));
        assert_eq!(health(false, Some(1), Some(1), &c).word(), "Failed");
        set(&mut c, update("Stalled", FALSE, "Reconciled"), t(0));
        assert_eq!(health(false, Some(1), Some(1), &c), Health::Current);
    }
}
