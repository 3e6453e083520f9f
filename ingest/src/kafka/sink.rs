//! The Kafka log: an `EventSink` that produces each request's accepted events, as one
//! message (`Envelope`) per visitor, to its tenant's topic, keyed by site and visitor so that
//! one visitor's events stay in order on one partition. `append` returns only when the
//! broker acknowledged every message (acks=all, idempotent producer): the collector's 202
//! means "on the log".
//!
//! A request waits for the broker at most `delivery_timeout` (plus [`DELIVERY_GRACE`]), and
//! not at all while the producer knows the brokers are unreachable (librdkafka reported
//! that all are down and none has answered since: `BrokerHealth`): it gets 503 at once.
//! While they are down, `watch_brokers` asks them for metadata every second, so the first
//! answer brings the collector back.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures_util::future::join_all;

use async_trait::async_trait;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use sightline_core::event::RawEvent;
use uuid::Uuid;

use super::context::{BrokerHealth, KafkaContext};
use super::{client_config, topics, Envelope, Security};
use crate::error::Error;
use crate::sink::EventSink;

#[derive(Clone, Debug)]
pub struct KafkaSinkConfig {
    pub brokers: String,
    /// TLS and SASL (`Security::from_env`).
    pub security: Security,
    /// How long an event may wait for the broker before the request fails with 503.
    pub delivery_timeout: Duration,
    /// Messages buffered in the producer before new requests get 503 at once: one message
    /// per request (per visitor of a request, see `split_by_visitor`), whatever its events.
    pub queue_max_messages: u32,
}

/// How long past `delivery_timeout` a request waits for librdkafka's own verdict (its timeout
/// is checked about once a second) before it is answered 503 anyway.
pub const DELIVERY_GRACE: Duration = Duration::from_millis(500);

/// How often brokers that are down are asked for metadata (and how long an answer may take).
pub const BROKER_PROBE_EVERY: Duration = Duration::from_secs(1);

type CollectorProducer = FutureProducer<KafkaContext>;

/// The largest message the collector produces (uncompressed).
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

pub struct KafkaSink {
    config: KafkaSinkConfig,
    producer: RwLock<Arc<CollectorProducer>>,
    /// When a delivery last succeeded, and when the producer was last replaced.
    health: Mutex<(Instant, Instant)>,
    /// The producers' logging context and what it knows of the brokers (shared by every
    /// producer this sink makes).
    context: KafkaContext,
}

impl KafkaSink {
    pub fn new(config: &KafkaSinkConfig) -> Result<Self, KafkaError> {
        let context = KafkaContext::new("collector", Arc::new(BrokerHealth::not_contacted()));
        let producer = Self::producer(config, &context)?;
        Ok(Self {
            config: config.clone(),
            producer: RwLock::new(Arc::new(producer)),
            health: Mutex::new((Instant::now(), Instant::now())),
            context,
        })
    }

    /// Whether the brokers answer, as far as the producer knows.
    pub fn brokers(&self) -> &Arc<BrokerHealth> {
        self.context.health()
    }

    /// Until `stop`: while the brokers are down, asks them for metadata every
    /// [`BROKER_PROBE_EVERY`]; the first answer marks them up (librdkafka reports when they
    /// go, not when they come back).
    pub fn watch_brokers(
        self: &Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        let sink = self.clone();
        tokio::spawn(async move {
            loop {
                if !sink.brokers().reachable() {
                    let producer = sink.current();
                    // All topics: asking for one by name lets brokers that auto-create topics
                    // create it. Only while the brokers are down, so its size does not matter.
                    let probe =
                        tokio::task::spawn_blocking(move || producer.client().fetch_metadata(None, BROKER_PROBE_EVERY))
                            .await;
                    if let Ok(Ok(_)) = probe {
                        sink.context.answered();
                    }
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(BROKER_PROBE_EVERY) => {}
                }
            }
        })
    }

    fn producer(config: &KafkaSinkConfig, context: &KafkaContext) -> Result<CollectorProducer, KafkaError> {
        client_config(&config.brokers, &config.security)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("compression.type", "lz4")
            .set("linger.ms", "5")
            .set("message.timeout.ms", config.delivery_timeout.as_millis().to_string())
            .set("queue.buffering.max.messages", config.queue_max_messages.to_string())
            // A message is a whole request (up to the spec's body limit, as raw events with
            // their user agents): allow it uncompressed; on the wire it is LZ4 batches.
            .set("message.max.bytes", MAX_MESSAGE_BYTES.to_string())
            // Reconnect at least once a second during an outage (librdkafka's default backs
            // off to 10 s), so that requests are taken again soon after the broker returns.
            .set("reconnect.backoff.max.ms", "1000")
            .create_with_context(context.clone())
    }

    fn current(&self) -> Arc<CollectorProducer> {
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
        match Self::producer(&self.config, &self.context) {
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
        self.context.answered();
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

/// One visitor's share of a request: its events and the ids among them that may repeat.
#[derive(Debug, PartialEq)]
pub struct VisitorMessage {
    pub key: String,
    pub events: Vec<RawEvent>,
    pub client_ids: Vec<Uuid>,
}

/// Splits a request's events into one message per visitor (in order of first appearance).
/// With more than one visitor, each id the client did not choose is replaced by one derived
/// from the event (its content but the receive time, and its place in the request), which
/// a retry of the same request derives again: the loader then finds it stored. The derived
/// ids join the client's in `client_ids`, the ids the loader looks up.
pub fn split_by_visitor(events: Vec<RawEvent>, client_ids: Vec<Uuid>) -> Vec<VisitorMessage> {
    // Almost every request holds one visitor: one key, no grouping.
    if let Some(first) = events.first() {
        if events
            .iter()
            .all(|e| e.visitor_id == first.visitor_id && e.site_id == first.site_id)
        {
            let key = KafkaSink::key(first);
            return vec![VisitorMessage {
                key,
                events,
                client_ids,
            }];
        }
    }
    let mut order: Vec<String> = Vec::new();
    let mut groups: std::collections::HashMap<String, Vec<(usize, RawEvent)>> = std::collections::HashMap::new();
    for (i, e) in events.into_iter().enumerate() {
        let key = KafkaSink::key(&e);
        if !groups.contains_key(&key) {
            order.push(key.clone());
        }
        groups.entry(key).or_default().push((i, e));
    }
    let chosen: std::collections::HashSet<Uuid> = client_ids.iter().copied().collect();
    if order.len() == 1 {
        let key = order.remove(0);
        let events = groups
            .remove(&key)
            .unwrap_or_default()
            .into_iter()
            .map(|(_, e)| e)
            .collect();
        return vec![VisitorMessage {
            key,
            events,
            client_ids,
        }];
    }
    order
        .into_iter()
        .map(|key| {
            let mut ids = Vec::new();
            let events = groups
                .remove(&key)
                .unwrap_or_default()
                .into_iter()
                .map(|(i, mut e)| {
                    if !chosen.contains(&e.event_id) {
                        e.event_id = derived_id(&e, i);
                    }
                    ids.push(e.event_id);
                    e
                })
                .collect();
            VisitorMessage {
                key,
                events,
                client_ids: ids,
            }
        })
        .collect()
}

/// A UUID (version 8, RFC 9562's custom layout) from SHA-256 of the event without its id and
/// receive time, and its index in the request.
fn derived_id(e: &RawEvent, index: usize) -> Uuid {
    use sha2::{Digest, Sha256};
    let mut stable = e.clone();
    stable.event_id = Uuid::nil();
    stable.received_at = chrono::DateTime::UNIX_EPOCH;
    let mut h = Sha256::new();
    h.update(serde_json::to_vec(&stable).unwrap_or_default());
    h.update((index as u64).to_le_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[async_trait]
impl EventSink for KafkaSink {
    async fn append(&self, tenant: &str, events: Vec<RawEvent>, client_ids: Vec<Uuid>) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        if let Some(down_for) = self.brokers().known_down_for() {
            // Waiting would only end in the delivery timeout: answer now, the client retries.
            return Err(Error::Unavailable(format!(
                "the Kafka brokers have been unreachable for {} s ({})",
                down_for.as_secs(),
                self.brokers().reason().unwrap_or_default()
            )));
        }
        let [topic, _] = topics(tenant);
        let producer = self.current();
        let mut deliveries = Vec::new();
        for message in split_by_visitor(events, client_ids) {
            let payload = serde_json::to_vec(&Envelope {
                events: message.events,
                client_ids: message.client_ids,
            })
            .map_err(|e| Error::Unavailable(format!("encoding events: {e}")))?;
            let record = FutureRecord::to(&topic).key(&message.key).payload(&payload);
            match producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                // The producer's queue is full: the broker is slow or away. What of this
                // request was queued may still be delivered; the client's retry is
                // deduplicated (the ids are the client's or derived).
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => return Err(Error::Busy),
                Err((e, _)) => return Err(Error::Unavailable(e.to_string())),
            }
        }
        let bound = self.config.delivery_timeout + DELIVERY_GRACE;
        let Ok(answers) = tokio::time::timeout(bound, join_all(deliveries)).await else {
            // librdkafka's verdict is late; what was queued may still be delivered, and the
            // client's retry is deduplicated like any other.
            self.failed();
            return Err(Error::Unavailable(format!(
                "the broker did not acknowledge within {} ms",
                bound.as_millis()
            )));
        };
        let mut outcome = Ok(());
        for answer in answers {
            match answer {
                Ok(Ok(_)) => self.delivered(),
                Ok(Err((e, _))) => {
                    self.failed();
                    outcome = Err(Error::Unavailable(format!("the broker did not acknowledge: {e}")));
                }
                Err(_) => outcome = Err(Error::Unavailable("the producer was dropped".into())),
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn event(visitor: u64, minute: i64) -> RawEvent {
        let ts = Utc.with_ymd_and_hms(2026, 11, 20, 23, 50, 0).unwrap() + chrono::Duration::minutes(minute);
        RawEvent {
            event_id: Uuid::now_v7(),
            site_id: "shop.example.com".into(),
            received_at: Utc::now(),
            ts,
            name: "pageview".into(),
            url: format!("https://shop.example.com/{minute}"),
            referrer: String::new(),
            user_agent: "UA".into(),
            props: Default::default(),
            revenue_amount: String::new(),
            revenue_currency: String::new(),
            visitor_id: visitor,
            country: String::new(),
            ingest_source: "web".into(),
            prev_day_visitor_id: 0,
            interactive: true,
        }
    }

    #[test]
    fn one_visitor_is_one_message_with_its_ids_untouched() {
        let events = vec![event(1, 0), event(1, 1)];
        let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
        let messages = split_by_visitor(events.clone(), vec![ids[0]]);
        assert_eq!(
            messages,
            vec![VisitorMessage {
                key: "shop.example.com:1".into(),
                events,
                client_ids: vec![ids[0]]
            }]
        );
    }

    #[test]
    fn a_request_across_midnight_is_one_message_per_visitor_with_ids_a_retry_repeats() {
        // Before and after midnight the visitor id differs (the daily salt).
        let events = vec![event(1, 0), event(2, 15), event(1, 5)];
        let chosen = events[2].event_id;
        let first = split_by_visitor(events.clone(), vec![chosen]);
        assert_eq!(first.len(), 2);
        assert_eq!(first[0].key, "shop.example.com:1");
        assert_eq!(first[0].events.len(), 2);
        assert_eq!(first[0].events[1].event_id, chosen, "the client's id stays");
        assert_ne!(
            first[0].events[0].event_id, events[0].event_id,
            "a server id is derived"
        );
        // A retry: new server ids and receive times, the same content.
        let mut retry = events.clone();
        retry[0].event_id = Uuid::now_v7();
        retry[1].event_id = Uuid::now_v7();
        for e in &mut retry {
            e.received_at = Utc::now() + chrono::Duration::seconds(3);
        }
        let second = split_by_visitor(retry, vec![chosen]);
        for (a, b) in first.iter().zip(&second) {
            let ids = |m: &VisitorMessage| m.events.iter().map(|e| e.event_id).collect::<Vec<_>>();
            assert_eq!(ids(a), ids(b), "a retry derives the same ids");
            assert_eq!(a.client_ids, ids(a), "every id of a split request is looked up");
        }
        // Two equal events at two places of one request are two events.
        let twins = split_by_visitor(vec![event(1, 0), event(1, 0), event(2, 20)], vec![]);
        assert_ne!(twins[0].events[0].event_id, twins[0].events[1].event_id);
    }
}
