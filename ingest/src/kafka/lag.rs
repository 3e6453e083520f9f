//! The loaders' consumer-group lag on a tenant's event topic: for each partition, the
//! events past the group's committed offset (all of them when it committed none). The
//! operator reads it for the tenant's status (`loaderLag`); the loaders report their own
//! per-partition lag as `sightline_loader_consumer_lag`.
//!
//! The consumer made here never subscribes, so it never joins the group: it only reads the
//! group's committed offsets and the partitions' high watermarks.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use super::provision::{ErrorClass, ProvisionError};
use super::{client_config, Security};

/// Events of `topic` (partitions `0..partitions`) not yet committed by `group`. Blocking
/// librdkafka calls run on the blocking pool.
pub async fn group_lag(
    brokers: &str,
    security: &Security,
    group: &str,
    topic: &str,
    partitions: u32,
    timeout: Duration,
) -> Result<i64, ProvisionError> {
    let consumer: BaseConsumer = client_config(brokers, security)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| ProvisionError::from_kafka(Some(topic), &e))?;
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || {
        let mut list = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            list.add_partition(&topic, p);
        }
        let committed = consumer
            .committed_offsets(list, timeout)
            .map_err(|e| ProvisionError::from_kafka(Some(&topic), &e))?;
        let mut lag = 0i64;
        for element in committed.elements() {
            let (low, high) = consumer
                .fetch_watermarks(&topic, element.partition(), timeout)
                .map_err(|e| ProvisionError::from_kafka(Some(&topic), &e))?;
            lag += match element.offset() {
                Offset::Offset(at) => (high - at).max(0),
                _ => (high - low).max(0),
            };
        }
        Ok(lag)
    })
    .await
    .map_err(|e| ProvisionError {
        class: ErrorClass::Unavailable,
        topic: None,
        code: None,
        message: format!("lag request: {e}"),
    })?
}
