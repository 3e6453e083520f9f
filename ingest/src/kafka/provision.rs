//! Topic provisioning through rdkafka's AdminClient: create the tenant's topics with the
//! spec's partitions, replication and retention; grow partitions when the spec grows;
//! refuse to shrink (a visitor's events must keep their partition). Idempotent: a second
//! run finds nothing to change.

use std::time::Duration;

use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewPartitions, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;
use sightline_core::spec::Tenant;

use super::topics;
use crate::error::Error;

/// What provisioning did to one topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Created { partitions: u32 },
    Grown { from: u32, to: u32 },
    RetentionSet { hours: u32 },
}

/// A topic as the broker describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicState {
    pub partitions: u32,
    pub retention_ms: Option<i64>,
}

pub struct Provisioner {
    admin: AdminClient<DefaultClientContext>,
    timeout: Duration,
}

impl Provisioner {
    /// `brokers`: the bootstrap address list, from configuration.
    pub fn new(brokers: &str) -> Result<Self, Error> {
        let admin = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
        Ok(Self {
            admin,
            timeout: Duration::from_secs(15),
        })
    }

    fn options(&self) -> AdminOptions {
        AdminOptions::new()
            .operation_timeout(Some(self.timeout))
            .request_timeout(Some(self.timeout))
    }

    /// Brings both topics of `tenant` to its spec; returns what changed.
    #[tracing::instrument(skip_all, fields(tenant = %tenant.name))]
    pub async fn provision(&self, tenant: &Tenant) -> Result<Vec<(String, Change)>, Error> {
        let k = &tenant.spec.kafka;
        let retention_ms = i64::from(k.retention_hours) * 3_600_000;
        let mut changes = Vec::new();
        for topic in topics(&tenant.name) {
            match self.describe(&topic).await? {
                None => {
                    let retention = retention_ms.to_string();
                    let new = NewTopic::new(
                        &topic,
                        k.partitions as i32,
                        TopicReplication::Fixed(i32::from(k.replication_factor)),
                    )
                    .set("retention.ms", &retention);
                    for result in self.admin.create_topics(&[new], &self.options()).await? {
                        match result {
                            // Created by a concurrent run between describe and create: fine.
                            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                            Err((name, code)) => {
                                return Err(Error::Topic {
                                    topic: name,
                                    message: code.to_string(),
                                })
                            }
                        }
                    }
                    changes.push((
                        topic.clone(),
                        Change::Created {
                            partitions: k.partitions,
                        },
                    ));
                }
                Some(state) => {
                    if k.partitions < state.partitions {
                        return Err(Error::Shrink {
                            topic,
                            current: state.partitions,
                            requested: k.partitions,
                        });
                    }
                    if k.partitions > state.partitions {
                        let grow = NewPartitions::new(&topic, k.partitions as usize);
                        for result in self.admin.create_partitions(&[grow], &self.options()).await? {
                            result.map_err(|(name, code)| Error::Topic {
                                topic: name,
                                message: code.to_string(),
                            })?;
                        }
                        changes.push((
                            topic.clone(),
                            Change::Grown {
                                from: state.partitions,
                                to: k.partitions,
                            },
                        ));
                    }
                    if state.retention_ms != Some(retention_ms) {
                        let value = retention_ms.to_string();
                        let alter = AlterConfig::new(ResourceSpecifier::Topic(&topic)).set("retention.ms", &value);
                        for result in self.admin.alter_configs(&[alter], &self.options()).await? {
                            result.map_err(|(_, code)| Error::Topic {
                                topic: topic.clone(),
                                message: code.to_string(),
                            })?;
                        }
                        changes.push((
                            topic.clone(),
                            Change::RetentionSet {
                                hours: k.retention_hours,
                            },
                        ));
                    }
                }
            }
        }
        for (topic, change) in &changes {
            tracing::info!(%topic, ?change, "topic provisioned");
        }
        Ok(changes)
    }

    /// The topic's partitions and retention, or `None` when it does not exist. Needs a
    /// multi-threaded tokio runtime.
    pub async fn describe(&self, topic: &str) -> Result<Option<TopicState>, Error> {
        // Metadata for all topics: asking about one topic by name makes brokers with
        // auto-creation create it with their default partitions, behind our back.
        // librdkafka's metadata call blocks: keep it off the async workers' hot loop.
        let metadata = tokio::task::block_in_place(|| self.admin.inner().fetch_metadata(None, self.timeout))?;
        let Some(meta) = metadata.topics().iter().find(|t| t.name() == topic) else {
            return Ok(None);
        };
        match meta.error() {
            None => {}
            Some(e) if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::UnknownTopicOrPartition => return Ok(None),
            Some(e) => {
                return Err(Error::Topic {
                    topic: topic.to_string(),
                    message: RDKafkaErrorCode::from(e).to_string(),
                })
            }
        }
        if meta.partitions().is_empty() {
            return Ok(None);
        }
        let configs = self
            .admin
            .describe_configs(&[ResourceSpecifier::Topic(topic)], &self.options())
            .await?;
        let retention_ms = configs
            .into_iter()
            .filter_map(Result::ok)
            .flat_map(|r| r.entries)
            .find(|e| e.name == "retention.ms")
            .and_then(|e| e.value)
            .and_then(|v| v.parse().ok());
        Ok(Some(TopicState {
            partitions: meta.partitions().len() as u32,
            retention_ms,
        }))
    }
}
