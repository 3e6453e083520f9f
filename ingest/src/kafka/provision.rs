//! Topic provisioning, the library `sightline provision` and the operator share: a tenant's
//! topics are `TopicSpec`s; `plan` compares them with what the broker describes (pure, so
//! it is tested without a broker) and returns the actions; `Provisioner` describes, applies
//! and deletes through rdkafka's AdminClient.
//!
//! Rules: partitions grow, never shrink (a visitor's events must keep their partition);
//! the replication factor is fixed once a topic exists (changing it is a partition
//! reassignment, an operator's decision, so it is refused); only the settings the spec owns
//! (`retention.ms`) are changed, every other setting a person set on the topic is kept (the
//! legacy AlterConfigs request replaces a topic's whole configuration, so the current
//! overrides are read and sent back with ours). Idempotent: a second run plans nothing.
//! Errors carry a class (`Conflict`, `NotSupported`, `Unavailable`, `Invalid`) and the
//! broker's error code, so the operator can say why in a condition.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, ConfigSource, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use sightline_core::spec::Tenant;

use super::context::{BrokerHealth, KafkaContext};
use super::{client_config, topics, Security};

/// The topic setting the spec owns.
pub const RETENTION_MS: &str = "retention.ms";

/// One topic as the spec wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
    /// The settings the spec owns (name -> value); others on the topic are left alone.
    pub configs: BTreeMap<String, String>,
}

/// The tenant's event topic and dead-letter topic, sized by its spec.
pub fn topic_specs(tenant: &Tenant) -> Vec<TopicSpec> {
    let k = &tenant.spec.kafka;
    let retention_ms = (i64::from(k.retention_hours) * 3_600_000).to_string();
    topics(&tenant.name)
        .into_iter()
        .map(|name| TopicSpec {
            name,
            partitions: k.partitions,
            replication_factor: k.replication_factor,
            configs: BTreeMap::from([(RETENTION_MS.to_string(), retention_ms.clone())]),
        })
        .collect()
}

/// A topic as the broker describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicState {
    pub partitions: u32,
    pub replication_factor: u16,
    /// The topic's own settings (set on the topic, not inherited from the broker): what an
    /// alteration must send back to keep them.
    pub overrides: BTreeMap<String, String>,
    /// Every setting's value in force, inherited or not.
    pub effective: BTreeMap<String, String>,
}

impl TopicState {
    pub fn retention_ms(&self) -> Option<i64> {
        self.effective.get(RETENTION_MS).and_then(|v| v.parse().ok())
    }
}

/// What provisioning does to one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Create(TopicSpec),
    Grow {
        topic: String,
        from: u32,
        to: u32,
    },
    /// Set `changed`; `all` is the topic's whole override set to send (kept ones included).
    Configure {
        topic: String,
        changed: BTreeMap<String, String>,
        all: BTreeMap<String, String>,
    },
}

/// What provisioning did to one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Created { partitions: u32 },
    Grown { from: u32, to: u32 },
    Configured { changed: BTreeMap<String, String> },
    Deleted,
}

/// Why provisioning failed, as the operator reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// Someone else holds what we need (a topic being deleted, a reassignment running).
    Conflict,
    /// The spec asks for something this broker or Sightline does not do (shrinking
    /// partitions, changing the replication factor, a broker without the API).
    NotSupported,
    /// The broker is away or not ready: retry later.
    Unavailable,
    /// The broker refused the request as wrong (a bad setting, not authorised).
    Invalid,
}

/// A provisioning failure: its class, the topic, the broker's error code when there is one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{message}{}", topic.as_ref().map(|t| format!("topic {t}: ")).unwrap_or_default(), code.map(|c| format!(" ({c:?})")).unwrap_or_default())]
pub struct ProvisionError {
    pub class: ErrorClass,
    pub topic: Option<String>,
    pub code: Option<RDKafkaErrorCode>,
    pub message: String,
}

impl ProvisionError {
    fn not_supported(topic: &str, message: String) -> Self {
        Self {
            class: ErrorClass::NotSupported,
            topic: Some(topic.to_string()),
            code: None,
            message,
        }
    }

    /// A broker error code, classified.
    pub fn from_code(topic: Option<&str>, code: RDKafkaErrorCode) -> Self {
        Self {
            class: classify(code),
            topic: topic.map(str::to_string),
            code: Some(code),
            message: code.to_string(),
        }
    }

    /// A client error (no answer, or an error answer), classified by its code if it has one.
    pub fn from_kafka(topic: Option<&str>, e: &KafkaError) -> Self {
        match e.rdkafka_error_code() {
            Some(code) => Self {
                message: e.to_string(),
                ..Self::from_code(topic, code)
            },
            None => Self {
                class: ErrorClass::Unavailable,
                topic: topic.map(str::to_string),
                code: None,
                message: e.to_string(),
            },
        }
    }
}

/// The class of a broker error code.
pub fn classify(code: RDKafkaErrorCode) -> ErrorClass {
    use RDKafkaErrorCode as C;
    match code {
        C::TopicAlreadyExists
        | C::ReassignmentInProgress
        | C::ConcurrentTransactions
        | C::ResourceNotFound
        | C::UnknownTopicOrPartition => ErrorClass::Conflict,
        C::UnsupportedVersion
        | C::UnsupportedFeature
        | C::TopicDeletionDisabled
        | C::InvalidReplicationFactor
        | C::InvalidReplicaAssignment
        | C::InvalidPartitions => ErrorClass::NotSupported,
        C::BrokerTransportFailure
        | C::AllBrokersDown
        | C::OperationTimedOut
        | C::RequestTimedOut
        | C::NetworkException
        | C::LeaderNotAvailable
        | C::NotLeaderForPartition
        | C::NotController
        | C::CoordinatorNotAvailable
        | C::CoordinatorLoadInProgress
        | C::NotEnoughReplicas
        | C::NotEnoughReplicasAfterAppend
        | C::BrokerNotAvailable
        | C::Resolve
        | C::MessageTimedOut
        | C::Fail
        | C::BrokerDestroy
        | C::ThrottlingQuotaExceeded => ErrorClass::Unavailable,
        _ => ErrorClass::Invalid,
    }
}

/// The actions that bring `current` (the broker's view of the topics that exist) to
/// `desired`. Pure. Refuses, before anything is done, a partition decrease or a
/// replication-factor change of any topic.
pub fn plan(desired: &[TopicSpec], current: &BTreeMap<String, TopicState>) -> Result<Vec<Action>, ProvisionError> {
    let mut actions = Vec::new();
    for spec in desired {
        let Some(state) = current.get(&spec.name) else {
            actions.push(Action::Create(spec.clone()));
            continue;
        };
        if spec.partitions < state.partitions {
            return Err(ProvisionError::not_supported(
                &spec.name,
                format!(
                    "has {} partitions and the spec asks for {}: partitions can grow but never shrink (a visitor's events must stay on one partition)",
                    state.partitions, spec.partitions
                ),
            ));
        }
        if spec.replication_factor != state.replication_factor {
            return Err(ProvisionError::not_supported(
                &spec.name,
                format!(
                    "has replication factor {} and the spec asks for {}: changing it is a partition reassignment, which Sightline leaves to the Kafka operator (kafka-reassign-partitions)",
                    state.replication_factor, spec.replication_factor
                ),
            ));
        }
        if spec.partitions > state.partitions {
            actions.push(Action::Grow {
                topic: spec.name.clone(),
                from: state.partitions,
                to: spec.partitions,
            });
        }
        let changed: BTreeMap<String, String> = spec
            .configs
            .iter()
            .filter(|(k, v)| state.effective.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !changed.is_empty() {
            let mut all = state.overrides.clone();
            all.extend(spec.configs.clone());
            actions.push(Action::Configure {
                topic: spec.name.clone(),
                changed,
                all,
            });
        }
    }
    Ok(actions)
}

/// A refused topic creation, naming the spec field behind the refused value when there is
/// one (a one-broker cluster refuses the default replication factor of 3).
fn refused_creation(topic: &str, spec: &TopicSpec, code: RDKafkaErrorCode) -> ProvisionError {
    let field = match code {
        RDKafkaErrorCode::InvalidReplicationFactor => Some(format!(
            "spec.kafka.replicationFactor is {}: the broker refused it (it cannot be more than the brokers the cluster has; a single broker takes 1, as in `kafka: {{ partitions: 3, replicationFactor: 1 }}`)",
            spec.replication_factor
        )),
        RDKafkaErrorCode::InvalidPartitions => Some(format!(
            "spec.kafka.partitions is {}: the broker refused it",
            spec.partitions
        )),
        _ => None,
    };
    match field {
        Some(message) => ProvisionError {
            message,
            ..ProvisionError::from_code(Some(topic), code)
        },
        None => ProvisionError::from_code(Some(topic), code),
    }
}

pub struct Provisioner {
    admin: Arc<AdminClient<KafkaContext>>,
    /// Where and how it connects, to say why the brokers refuse it (`explained`).
    brokers: String,
    security: Security,
    timeout: Duration,
}

impl Provisioner {
    /// `brokers`: the bootstrap address list; `security`: TLS/SASL settings.
    pub fn new(brokers: &str, security: &Security) -> Result<Self, ProvisionError> {
        // librdkafka's errors logged once each (`KafkaContext`).
        let context = KafkaContext::new("provision", Arc::new(BrokerHealth::not_contacted()));
        let admin = client_config(brokers, security)
            .create_with_context(context)
            .map_err(|e| ProvisionError {
                class: ErrorClass::Invalid,
                topic: None,
                code: None,
                message: format!("Kafka client configuration: {e}"),
            })?;
        Ok(Self {
            admin: Arc::new(admin),
            brokers: brokers.to_string(),
            security: security.clone(),
            timeout: Duration::from_secs(15),
        })
    }

    /// Shorter waits (tests of an absent broker).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .operation_timeout(Some(self.timeout))
            .request_timeout(Some(self.timeout))
    }

    /// Brings both topics of `tenant` to its spec; returns what changed.
    #[tracing::instrument(skip_all, fields(tenant = %tenant.name))]
    pub async fn provision(&self, tenant: &Tenant) -> Result<Vec<(String, Change)>, ProvisionError> {
        let actions = self.plan(&topic_specs(tenant)).await?;
        self.apply(&actions).await
    }

    /// Describes the topics and plans (see `plan`).
    pub async fn plan(&self, desired: &[TopicSpec]) -> Result<Vec<Action>, ProvisionError> {
        let names: Vec<String> = desired.iter().map(|s| s.name.clone()).collect();
        plan(desired, &self.describe_all(&names).await?)
    }

    /// Carries out planned actions in order.
    pub async fn apply(&self, actions: &[Action]) -> Result<Vec<(String, Change)>, ProvisionError> {
        match self.apply_unexplained(actions).await {
            Err(e) => Err(self.explained(e).await),
            ok => ok,
        }
    }

    /// A broker that is unavailable because it refuses the connection (TLS, SASL): the
    /// error says why, not only that a request failed (the admin client gets no error
    /// events from librdkafka, so a connection like `membership`'s asks).
    async fn explained(&self, mut e: ProvisionError) -> ProvisionError {
        if e.class == ErrorClass::Unavailable {
            if let Some(why) = super::membership::refusal(&self.brokers, &self.security, Duration::from_secs(5)).await {
                e.message = format!("{}; the broker refused the connection: {why}", e.message);
            }
        }
        e
    }

    async fn apply_unexplained(&self, actions: &[Action]) -> Result<Vec<(String, Change)>, ProvisionError> {
        let mut changes = Vec::new();
        for action in actions {
            match action {
                Action::Create(spec) => {
                    let mut new = NewTopic::new(
                        &spec.name,
                        spec.partitions as i32,
                        TopicReplication::Fixed(i32::from(spec.replication_factor)),
                    );
                    for (k, v) in &spec.configs {
                        new = new.set(k, v);
                    }
                    let results = self
                        .admin
                        .create_topics(&[new], &self.options())
                        .await
                        .map_err(|e| ProvisionError::from_kafka(Some(&spec.name), &e))?;
                    for result in results {
                        match result {
                            // Created by a concurrent run between describe and create: fine.
                            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                            Err((name, code)) => return Err(refused_creation(&name, spec, code)),
                        }
                    }
                    changes.push((
                        spec.name.clone(),
                        Change::Created {
                            partitions: spec.partitions,
                        },
                    ));
                }
                Action::Grow { topic, from, to } => {
                    let grow = NewPartitions::new(topic, *to as usize);
                    let results = self
                        .admin
                        .create_partitions(&[grow], &self.options())
                        .await
                        .map_err(|e| ProvisionError::from_kafka(Some(topic), &e))?;
                    for result in results {
                        result.map_err(|(name, code)| ProvisionError::from_code(Some(&name), code))?;
                    }
                    changes.push((topic.clone(), Change::Grown { from: *from, to: *to }));
                }
                Action::Configure { topic, changed, all } => {
                    let alter = all
                        .iter()
                        .fold(AlterConfig::new(ResourceSpecifier::Topic(topic)), |a, (k, v)| {
                            a.set(k, v)
                        });
                    let results = self
                        .admin
                        .alter_configs(&[alter], &self.options())
                        .await
                        .map_err(|e| ProvisionError::from_kafka(Some(topic), &e))?;
                    for result in results {
                        result.map_err(|(_, code)| ProvisionError::from_code(Some(topic), code))?;
                    }
                    changes.push((
                        topic.clone(),
                        Change::Configured {
                            changed: changed.clone(),
                        },
                    ));
                }
            }
        }
        for (topic, change) in &changes {
            tracing::info!(%topic, ?change, "topic provisioned");
        }
        Ok(changes)
    }

    /// Deletes the topics that exist of `names`; returns those it deleted.
    pub async fn delete(&self, names: &[String]) -> Result<Vec<(String, Change)>, ProvisionError> {
        match self.delete_unexplained(names).await {
            Err(e) => Err(self.explained(e).await),
            ok => ok,
        }
    }

    async fn delete_unexplained(&self, names: &[String]) -> Result<Vec<(String, Change)>, ProvisionError> {
        let existing = self.describe_all_unexplained(names).await?;
        let doomed: Vec<&str> = names
            .iter()
            .filter(|n| existing.contains_key(*n))
            .map(String::as_str)
            .collect();
        if doomed.is_empty() {
            return Ok(Vec::new());
        }
        let results = self
            .admin
            .delete_topics(&doomed, &self.options())
            .await
            .map_err(|e| ProvisionError::from_kafka(None, &e))?;
        let mut deleted = Vec::new();
        for result in results {
            match result {
                Ok(name) => deleted.push((name, Change::Deleted)),
                Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                Err((name, code)) => return Err(ProvisionError::from_code(Some(&name), code)),
            }
        }
        for (topic, _) in &deleted {
            tracing::info!(%topic, "topic deleted");
        }
        Ok(deleted)
    }

    /// The topic's partitions, replication and settings, or `None` when it does not exist.
    pub async fn describe(&self, topic: &str) -> Result<Option<TopicState>, ProvisionError> {
        Ok(self.describe_all(&[topic.to_string()]).await?.remove(topic))
    }

    /// The states of those of `names` that exist.
    pub async fn describe_all(&self, names: &[String]) -> Result<BTreeMap<String, TopicState>, ProvisionError> {
        match self.describe_all_unexplained(names).await {
            Err(e) => Err(self.explained(e).await),
            ok => ok,
        }
    }

    async fn describe_all_unexplained(&self, names: &[String]) -> Result<BTreeMap<String, TopicState>, ProvisionError> {
        // Metadata for all topics: asking about one topic by name makes brokers with
        // auto-creation create it with their default partitions, behind our back.
        // librdkafka's metadata call blocks, so it runs on the blocking pool (block_in_place
        // would panic on a current-thread runtime).
        let admin = self.admin.clone();
        let timeout = self.timeout;
        let metadata = tokio::task::spawn_blocking(move || admin.inner().fetch_metadata(None, timeout))
            .await
            .map_err(|e| ProvisionError {
                class: ErrorClass::Unavailable,
                topic: None,
                code: None,
                message: format!("metadata request: {e}"),
            })?
            .map_err(|e| ProvisionError::from_kafka(None, &e))?;
        let mut partial = BTreeMap::new();
        for name in names {
            let Some(meta) = metadata.topics().iter().find(|t| t.name() == name) else {
                continue;
            };
            match meta.error() {
                None => {}
                Some(e) if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition => continue,
                Some(e) => return Err(ProvisionError::from_code(Some(name), RDKafkaErrorCode::from(e))),
            }
            if meta.partitions().is_empty() {
                continue;
            }
            let replication_factor = meta.partitions().iter().map(|p| p.replicas().len()).max().unwrap_or(0) as u16;
            partial.insert(name.clone(), (meta.partitions().len() as u32, replication_factor));
        }
        let mut states = BTreeMap::new();
        for (name, (partitions, replication_factor)) in partial {
            let configs = self
                .admin
                .describe_configs(&[ResourceSpecifier::Topic(&name)], &self.options())
                .await
                .map_err(|e| ProvisionError::from_kafka(Some(&name), &e))?;
            let mut overrides = BTreeMap::new();
            let mut effective = BTreeMap::new();
            for resource in configs {
                let resource = resource.map_err(|code| ProvisionError::from_code(Some(&name), code))?;
                for entry in resource.entries {
                    // The topic's own settings: brokers that do not report sources mark
                    // them as not default.
                    let own = entry.source == ConfigSource::DynamicTopic
                        || (entry.source == ConfigSource::Unknown && !entry.is_default);
                    if let Some(value) = entry.value {
                        if own && !entry.is_read_only && !entry.is_sensitive {
                            overrides.insert(entry.name.clone(), value.clone());
                        }
                        effective.insert(entry.name, value);
                    }
                }
            }
            states.insert(
                name,
                TopicState {
                    partitions,
                    replication_factor,
                    overrides,
                    effective,
                },
            );
        }
        Ok(states)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(partitions: u32, rf: u16, retention: &str) -> TopicSpec {
        TopicSpec {
            name: "sightline.acme.events".into(),
            partitions,
            replication_factor: rf,
            configs: BTreeMap::from([(RETENTION_MS.into(), retention.into())]),
        }
    }

    fn state(partitions: u32, rf: u16, overrides: &[(&str, &str)]) -> BTreeMap<String, TopicState> {
        BTreeMap::from([(
            "sightline.acme.events".to_string(),
            TopicState {
                partitions,
                replication_factor: rf,
                overrides: overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
                effective: overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            },
        )])
    }

    #[test]
    fn absent_topics_are_created_and_a_matching_one_needs_nothing() {
        assert_eq!(
            plan(&[spec(3, 1, "1000")], &BTreeMap::new()).unwrap(),
            vec![Action::Create(spec(3, 1, "1000"))]
        );
        assert_eq!(
            plan(&[spec(3, 1, "1000")], &state(3, 1, &[("retention.ms", "1000")])).unwrap(),
            vec![]
        );
    }

    #[test]
    fn growth_and_settings_keep_what_someone_else_set() {
        let actions = plan(
            &[spec(6, 1, "2000")],
            &state(3, 1, &[("retention.ms", "1000"), ("max.message.bytes", "2097152")]),
        )
        .unwrap();
        assert_eq!(
            actions,
            vec![
                Action::Grow {
                    topic: "sightline.acme.events".into(),
                    from: 3,
                    to: 6
                },
                Action::Configure {
                    topic: "sightline.acme.events".into(),
                    changed: BTreeMap::from([("retention.ms".into(), "2000".into())]),
                    all: BTreeMap::from([
                        ("max.message.bytes".into(), "2097152".into()),
                        ("retention.ms".into(), "2000".into())
                    ]),
                }
            ]
        );
    }

    #[test]
    fn shrinking_and_replication_changes_are_refused_before_anything_is_done() {
        let e = plan(&[spec(2, 1, "1")], &state(3, 1, &[])).unwrap_err();
        assert_eq!(e.class, ErrorClass::NotSupported);
        assert!(e.to_string().contains("never shrink"), "{e}");
        let e = plan(&[spec(3, 3, "1")], &state(3, 1, &[])).unwrap_err();
        assert_eq!(e.class, ErrorClass::NotSupported);
        assert!(e.to_string().contains("replication factor 1"), "{e}");
    }

    #[test]
    fn broker_codes_have_classes() {
        assert_eq!(classify(RDKafkaErrorCode::AllBrokersDown), ErrorClass::Unavailable);
        assert_eq!(classify(RDKafkaErrorCode::InvalidConfig), ErrorClass::Invalid);
        assert_eq!(classify(RDKafkaErrorCode::UnsupportedVersion), ErrorClass::NotSupported);
        assert_eq!(classify(RDKafkaErrorCode::ReassignmentInProgress), ErrorClass::Conflict);
        let e = ProvisionError::from_code(Some("t"), RDKafkaErrorCode::PolicyViolation);
        assert_eq!(e.code, Some(RDKafkaErrorCode::PolicyViolation));
        assert!(e.to_string().starts_with("topic t: "), "{e}");
    }
}
