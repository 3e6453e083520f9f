//! The Kafka log: an `EventSink` that produces each request's accepted events, as one
//! message (`Envelope`), to its tenant's topic, keyed by site and visitor so that one
//! visitor's events stay in order on one partition. `append` returns only when the broker
//! acknowledged the message (acks=all, idempotent producer): the collector's 202 means "on
//! the log".

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use sightline_core::event::RawEvent;
use uuid::Uuid;

use super::{client_config, topics, Envelope};
use crate::error::Error;
use crate::sink::EventSink;

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
    config: KafkaSinkConfig,
    producer: RwLock<Arc<FutureProducer>>,
    /// When a delivery last succeeded, and when the producer was last replaced.
    health: Mutex<(Instant, Instant)>,
}

impl KafkaSink {
    pub fn new(config: &KafkaSinkConfig) -> Result<Self, KafkaError> {
        let producer = Self::producer(config)?;
        Ok(Self {
            config: config.clone(),
            producer: RwLock::new(Arc::new(producer)),
            health: Mutex::new((Instant::now(), Instant::now())),
        })
    }

    fn producer(config: &KafkaSinkConfig) -> Result<FutureProducer, KafkaError> {
        client_config(&config.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("message.timeout.ms", config.delivery_timeout.as_millis().to_string())
            .set("queue.buffering.max.messages", config.queue_max_messages.to_string())
            // A message is a whole request (up to the spec's body limit, as raw events with
            // their user agents): allow it uncompressed; on the wire it is LZ4 batches.
            .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            .create()
    }

    fn current(&self) -> Arc<FutureProducer> {
        self.producer.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// After a failed delivery: if nothing was delivered for two delivery timeouts, start
    /// over with a new producer. A broker that lost its producer state (a cluster rebuilt,
    /// a memory-only broker restarted) answers the old producer id with UnknownProducerId
    /// forever; a new producer gets a new id. Nothing acknowledged is at risk: requests in
    /// flight on the old producer keep it alive until their answer.
    fn failed(&self) {
        let mut health = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let stale = self.config.delivery_timeout * 2;
        if health.0.elapsed() < stale || health.1.elapsed() < stale {
            return;
        }
        match Self::producer(&self.config) {
            Ok(fresh) => {
                tracing::warn!("no delivery for {stale:?}: replacing the Kafka producer");
                *self.producer.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
                health.1 = Instant::now();
            }
            Err(e) => tracing::error!(error = %e, "could not create a new Kafka producer"),
        }
    }

    fn delivered(&self) {
        self.health.lock().unwrap_or_else(|p| p.into_inner()).0 = Instant::now();
    }

    /// The partitioning key: a visitor's events land on one partition, in order.
    pub fn key(event: &RawEvent) -> String {
        format!("{}:{}", event.site_id, event.visitor_id)
    }

    /// Waits for every buffered event to be delivered (for graceful shutdown).
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.current().flush(Timeout::After(timeout))
    }
}

#[async_trait]
impl EventSink for KafkaSink {
    async fn append(&self, tenant: &str, events: Vec<RawEvent>, client_ids: Vec<Uuid>) -> Result<(), Error> {
        let Some(first) = events.first() else {
            return Ok(());
        };
        let [topic, _] = topics(tenant);
        let key = Self::key(first);
        let payload = serde_json::to_vec(&Envelope { events, client_ids })
            .map_err(|e| Error::Unavailable(format!("encoding events: {e}")))?;
        let record = FutureRecord::to(&topic).key(&key).payload(&payload);
        let producer = self.current();
        let delivery = match producer.send_result(record) {
            Ok(delivery) => delivery,
            // The producer's queue is full: the broker is slow or away. Nothing of this
            // request is on the log.
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => return Err(Error::Busy),
            Err((e, _)) => return Err(Error::Unavailable(e.to_string())),
        };
        match delivery.await {
            Ok(Ok(_)) => {
                self.delivered();
                Ok(())
            }
            Ok(Err((e, _))) => {
                self.failed();
                Err(Error::Unavailable(format!("the broker did not acknowledge: {e}")))
            }
            Err(_) => Err(Error::Unavailable("the producer was dropped".into())),
        }
    }
}
