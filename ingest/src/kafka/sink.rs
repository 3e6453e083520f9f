//! The Kafka log: an `EventSink` that produces each request's accepted events, as one
//! message (`Envelope`), to its tenant's topic, keyed by site and visitor so that one
//! visitor's events stay in order on one partition. `append` returns only when the broker
//! acknowledged the message (acks=all, idempotent producer): the collector's 202 means "on
//! the log".

use std::time::Duration;

use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use sightline_core::event::RawEvent;
use uuid::Uuid;

use super::{topics, Envelope};
use crate::sink::{EventSink, SinkError};

#[derive(Clone, Debug)]
pub struct KafkaSinkConfig {
    pub brokers: String,
    /// How long an event may wait for the broker before the request fails with 503.
    pub delivery_timeout: Duration,
    /// Requests (messages) buffered in the producer before new requests get 503 at once.
    pub queue_max_messages: u32,
}

/// The largest message the collector produces (uncompressed).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

pub struct KafkaSink {
    producer: FutureProducer,
}

impl KafkaSink {
    pub fn new(config: &KafkaSinkConfig) -> Result<Self, KafkaError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("message.timeout.ms", config.delivery_timeout.as_millis().to_string())
            .set("queue.buffering.max.messages", config.queue_max_messages.to_string())
            // A message is a whole request (up to the spec's body limit, as raw events with
            // their user agents): allow it uncompressed; on the wire it is LZ4 batches.
            .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            .create()?;
        Ok(Self { producer })
    }

    /// The partitioning key: a visitor's events land on one partition, in order.
    pub fn key(event: &RawEvent) -> String {
        format!("{}:{}", event.site_id, event.visitor_id)
    }

    /// Waits for every buffered event to be delivered (for graceful shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(Timeout::After(timeout))
    }
}

#[async_trait]
impl EventSink for KafkaSink {
    async fn append(&self, tenant: &str, events: Vec<RawEvent>, _client_ids: Vec<Uuid>) -> Result<(), SinkError> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let [topic, _] = topics(tenant);
        let key = Self::key(first);
        let payload = serde_json::to_vec(&Envelope { events })
            .map_err(|e| SinkError::Unavailable(format!("encoding events: {e}")))?;
        let record = FutureRecord::to(&topic).key(&key).payload(&payload);
        let delivery = match self.producer.send_result(record) {
            Ok(delivery) => delivery,
            // The producer's queue is full: the broker is slow or away. Nothing of this
            // request is on the log.
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => return Err(SinkError::Busy),
            Err((e, _)) => return Err(SinkError::Unavailable(e.to_string())),
        };
        match delivery.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(SinkError::Unavailable(format!("the broker did not acknowledge: {e}"))),
            Err(_) => Err(SinkError::Unavailable("the producer was dropped".into())),
        }
    }
}
