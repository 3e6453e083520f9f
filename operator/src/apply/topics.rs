//! The tenant's topics: brought to the spec through the shared provisioning code, with
//! drift told apart from a spec change by the digest of the topic specs the status records.
//!
//! Drift here: a topic deleted (recreated, kind `topic`), a setting the spec owns changed
//! (set back, `topic_config`), partitions fewer than the spec (grown, `topic_partitions`),
//! or more than the spec, which no repair can undo (partitions never shrink): reported, and
//! the rest of the topic still reconciled.

use std::collections::BTreeMap;

use serde_json::json;
use sightline_ingest::kafka::provision::{self, Action, Provisioner, TopicSpec, TopicState};

use super::Policy;
use crate::drift::{self, Found, Kind, Outcome};
use crate::error::Result;

/// What the topics step did and found.
#[derive(Clone, Debug, Default)]
pub struct TopicsOutcome {
    /// Changes made (one line each).
    pub changed: Vec<String>,
    /// Changes due but not made (paused, or drift under `Report`).
    pub pending: Vec<String>,
    /// A topic is missing and was not recreated.
    pub missing: Vec<String>,
    pub drift: Vec<Found>,
    /// The digest to record: the specs are in place (`None` when they are not).
    pub applied_digest: Option<String>,
}

/// The digest of the topic specs (names, partitions, replication, the settings owned).
pub fn digest(specs: &[TopicSpec]) -> String {
    drift::digest(&json!(specs
        .iter()
        .map(|s| json!([s.name, s.partitions, s.replication_factor, s.configs]))
        .collect::<Vec<_>>()))
}

/// Brings the topics to `specs`. `recorded` is the digest the status holds: when it equals
/// the specs' digest, every difference found is drift.
pub async fn reconcile(
    kafka: &Provisioner,
    specs: &[TopicSpec],
    recorded: Option<&str>,
    policy: Policy,
) -> Result<TopicsOutcome> {
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    let current = kafka.describe_all(&names).await?;
    let plan = plan(specs, &current, recorded, policy)?;
    let mut outcome = TopicsOutcome {
        drift: plan.drift,
        ..TopicsOutcome::default()
    };
    let (mut apply, mut hold) = (Vec::new(), Vec::new());
    for (action, make) in plan.actions {
        if make {
            apply.push(action);
        } else {
            hold.push(action);
        }
    }
    for action in &hold {
        if let Action::Create(spec) = action {
            outcome.missing.push(spec.name.clone());
        }
        outcome.pending.push(describe(action, &current));
    }
    if !apply.is_empty() {
        for (topic, change) in kafka.apply(&apply).await? {
            outcome.changed.push(format!("{topic}: {change:?}"));
        }
    }
    if hold.is_empty() && policy.write {
        outcome.applied_digest = Some(digest(specs));
    }
    Ok(outcome)
}

/// The actions to take (`true`) or hold (`false`) and the drift found.
struct Plan {
    actions: Vec<(Action, bool)>,
    drift: Vec<Found>,
}

/// Pure: what to do about `current` given the specs, the recorded digest and the policy.
fn plan(
    specs: &[TopicSpec],
    current: &BTreeMap<String, TopicState>,
    recorded: Option<&str>,
    policy: Policy,
) -> Result<Plan> {
    let steady = recorded == Some(digest(specs).as_str());
    let mut drift = Vec::new();
    let mut desired = specs.to_vec();
    if steady {
        // Grown beyond the spec while the spec stayed: someone grew it; it never shrinks.
        for spec in &mut desired {
            if let Some(state) = current.get(&spec.name).filter(|s| s.partitions > spec.partitions) {
                drift.push(Found::new(
                    Kind::TopicPartitions,
                    &spec.name,
                    format!(
                        "{} partitions where the spec says {} (grown outside the operator; partitions never shrink: set kafka.partitions to {})",
                        state.partitions, spec.partitions, state.partitions
                    ),
                    Outcome::Reported,
                ));
                spec.partitions = state.partitions;
            }
        }
    }
    let actions = provision::plan(&desired, current)?;
    let mut out = Vec::with_capacity(actions.len());
    for action in actions {
        // A spec change is always made (when writing); drift only when repairing.
        let make = if steady { policy.repairs() } else { policy.write };
        if steady {
            let (kind, object, detail) = match &action {
                Action::Create(spec) => (Kind::Topic, spec.name.clone(), "deleted".to_string()),
                Action::Grow { topic, from, to } => (
                    Kind::TopicPartitions,
                    topic.clone(),
                    format!("{from} partitions where the spec says {to}"),
                ),
                Action::Configure { topic, changed, .. } => (
                    Kind::TopicConfig,
                    topic.clone(),
                    describe_configs(topic, changed, current),
                ),
            };
            let outcome = if make { Outcome::Repaired } else { Outcome::Reported };
            drift.push(Found::new(kind, object, detail, outcome));
        }
        out.push((action, make));
    }
    Ok(Plan { actions: out, drift })
}

fn describe_configs(topic: &str, changed: &BTreeMap<String, String>, current: &BTreeMap<String, TopicState>) -> String {
    changed
        .iter()
        .map(|(key, want)| {
            let was = current
                .get(topic)
                .and_then(|s| s.effective.get(key))
                .map(String::as_str)
                .unwrap_or("unset");
            format!("{key} is {was} where the spec says {want}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One line for a held action.
fn describe(action: &Action, current: &BTreeMap<String, TopicState>) -> String {
    match action {
        Action::Create(spec) => format!("create {} ({} partitions)", spec.name, spec.partitions),
        Action::Grow { topic, from, to } => format!("grow {topic} from {from} to {to} partitions"),
        Action::Configure { topic, changed, .. } => format!("{topic}: {}", describe_configs(topic, changed, current)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(partitions: u32, retention: &str) -> TopicSpec {
        TopicSpec {
            name: "sightline.acme.events".into(),
            partitions,
            replication_factor: 1,
            configs: BTreeMap::from([("retention.ms".to_string(), retention.to_string())]),
        }
    }

    fn state(partitions: u32, retention: &str) -> BTreeMap<String, TopicState> {
        BTreeMap::from([(
            "sightline.acme.events".to_string(),
            TopicState {
                partitions,
                replication_factor: 1,
                overrides: BTreeMap::from([("retention.ms".to_string(), retention.to_string())]),
                effective: BTreeMap::from([("retention.ms".to_string(), retention.to_string())]),
            },
        )])
    }

    const REPAIR: Policy = Policy {
        write: true,
        repair: true,
    };
    const REPORT: Policy = Policy {
        write: true,
        repair: false,
    };
    const PAUSED: Policy = Policy {
        write: false,
        repair: true,
    };

    #[test]
    fn a_spec_change_is_made_and_is_not_drift() {
        let specs = [spec(6, "1000")];
        let p = plan(&specs, &state(3, "1000"), Some("an older digest"), REPORT).unwrap();
        assert!(p.drift.is_empty());
        assert_eq!(p.actions.len(), 1);
        assert!(p.actions[0].1, "made even under Report");
        let paused = plan(&specs, &state(3, "1000"), Some("an older digest"), PAUSED).unwrap();
        assert!(!paused.actions[0].1, "held while paused");
    }

    #[test]
    fn drift_is_repaired_or_reported_by_policy() {
        let specs = [spec(3, "1000")];
        let steady = digest(&specs);
        let p = plan(&specs, &state(3, "5"), Some(&steady), REPAIR).unwrap();
        assert_eq!(p.drift.len(), 1);
        assert_eq!(p.drift[0].kind, Kind::TopicConfig);
        assert_eq!(p.drift[0].outcome, Outcome::Repaired);
        assert!(p.drift[0].detail.contains("retention.ms is 5 where the spec says 1000"));
        assert!(p.actions[0].1);
        let p = plan(&specs, &state(3, "5"), Some(&steady), REPORT).unwrap();
        assert_eq!(p.drift[0].outcome, Outcome::Reported);
        assert!(!p.actions[0].1);
        let p = plan(&specs, &BTreeMap::new(), Some(&steady), REPAIR).unwrap();
        assert_eq!((p.drift[0].kind, p.drift[0].detail.as_str()), (Kind::Topic, "deleted"));
    }

    #[test]
    fn partitions_grown_by_hand_are_reported_and_a_shrinking_spec_is_refused() {
        let specs = [spec(3, "1000")];
        let steady = digest(&specs);
        let p = plan(&specs, &state(8, "1000"), Some(&steady), REPAIR).unwrap();
        assert_eq!(p.drift.len(), 1);
        assert_eq!(p.drift[0].kind, Kind::TopicPartitions);
        assert_eq!(p.drift[0].outcome, Outcome::Reported);
        assert!(p.actions.is_empty());
        // Without a recorded digest the spec asked for fewer: refused as before.
        let e = plan(&specs, &state(8, "1000"), None, REPAIR).err().unwrap();
        assert_eq!(e.reason(), "NotSupported");
    }
}
