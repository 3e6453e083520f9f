//! The loader: the tenant's event topic into the warehouse. One consumer group per tenant
//! (`sightline.<tenant>.loader`); each batch is decoded, deduplicated against what is
//! stored, processed (the same processor as standalone and replay) and inserted, raw rows
//! first. Offsets are committed only after the insert, so a crash redelivers and
//! `store::store_batch` makes the redelivery a no-op. A message (or one event of it) that
//! cannot be loaded goes to the dead-letter topic with its reason, and its partition moves on.

pub mod decode;
pub mod store;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use rdkafka::{Offset, TopicPartitionList};
use sightline_core::processor::session::SessionState;
use sightline_core::spec::Tenant;
use sightline_core::warehouse::{ops, Warehouse};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::Instrument;

use crate::kafka::{client_config, topics};
use crate::metrics::{LoaderMetrics, PartitionLabels, Readiness, TenantLabels};

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("warehouse: {0}")]
    Warehouse(#[from] sightline_core::Error),
}

#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub brokers: String,
    /// A batch closes at this many messages ...
    pub max_events: usize,
    /// ... or this long after its first message.
    pub max_wait: Duration,
    /// The group session timeout: how long the broker waits before giving a silent
    /// loader's partitions to another.
    pub session_timeout: Duration,
    /// A stable name for this loader (a StatefulSet pod name): with it the group uses
    /// static membership, and a restarted loader takes its partitions back at once instead
    /// of waiting for the broker to expire its previous incarnation.
    pub instance_id: Option<String>,
    /// How often librdkafka reports statistics (consumer lag).
    pub stats_interval: Duration,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            max_events: 5_000,
            max_wait: Duration::from_millis(250),
            session_timeout: Duration::from_secs(10),
            instance_id: None,
            stats_interval: Duration::from_secs(5),
        }
    }
}

/// Consumer callbacks: lag from statistics, and a flag raised when partitions are assigned
/// (their visitors' sessions must then be read back from storage).
struct LoaderContext {
    tenant: String,
    metrics: LoaderMetrics,
    assigned: Arc<AtomicBool>,
    revoked: Arc<AtomicBool>,
}

impl ClientContext for LoaderContext {
    fn stats(&self, statistics: Statistics) {
        for topic in statistics.topics.values() {
            for (partition, p) in &topic.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    self.metrics
                        .consumer_lag
                        .get_or_create(&PartitionLabels {
                            tenant: self.tenant.clone(),
                            partition: *partition,
                        })
                        .set(p.consumer_lag);
                }
            }
        }
    }
}

impl ConsumerContext for LoaderContext {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(tenant = %self.tenant, partitions = tpl.count(), "partitions assigned");
                self.assigned.store(true, Ordering::SeqCst);
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(tenant = %self.tenant, partitions = tpl.count(), "partitions revoked");
                self.revoked.store(true, Ordering::SeqCst);
            }
            Rebalance::Error(e) => tracing::warn!(tenant = %self.tenant, error = %e, "rebalance failed"),
        }
    }
}

pub struct Loader {
    tenant: Tenant,
    topic: String,
    dlq_topic: String,
    warehouse: Arc<dyn Warehouse>,
    consumer: StreamConsumer<LoaderContext>,
    dlq: FutureProducer,
    sessions: SessionState,
    assigned: Arc<AtomicBool>,
    revoked: Arc<AtomicBool>,
    /// Per partition, the last offset some loader recorded an intent to store, as read when
    /// partitions were assigned: messages up to it may be stored already.
    redelivery_window: BTreeMap<i32, i64>,
    /// Per partition, the last offset this loader's intents cover.
    intended: BTreeMap<i32, i64>,
    metrics: LoaderMetrics,
    readiness: Readiness,
    config: LoaderConfig,
}

/// Where a poison message (or event) came from, for its dead letter.
struct Origin {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
}

/// Messages read and decoded as they arrive, so a batch is bounded by events (a message is a
/// whole request, up to the spec's events per request) rather than by messages.
#[derive(Default)]
struct Batch {
    raws: Vec<sightline_core::event::RawEvent>,
    poison: Vec<(Origin, decode::Poison)>,
    /// Per partition, the offset to commit once the batch is stored.
    next_offsets: BTreeMap<i32, i64>,
    messages: usize,
    /// Per message with events: where it sits, its events' ids and the ids its client
    /// chose, to tell at store time which ids may be stored already.
    sources: Vec<Source>,
}

struct Source {
    partition: i32,
    offset: i64,
    ids: Vec<uuid::Uuid>,
    client_ids: Vec<uuid::Uuid>,
}

impl Batch {
    fn events(&self) -> usize {
        self.raws.len() + self.poison.len()
    }

    /// The ids that may be stored already (see `store`): every event of a message inside
    /// the redelivery window, else the ids its client chose. Decided when the batch is
    /// stored, after any assignment that came while it was read has set the window.
    fn suspects(&self, window: &BTreeMap<i32, i64>) -> HashSet<uuid::Uuid> {
        let mut suspects = HashSet::new();
        for source in &self.sources {
            if window.get(&source.partition).is_some_and(|last| source.offset <= *last) {
                suspects.extend(source.ids.iter().copied());
            } else {
                suspects.extend(source.client_ids.iter().copied());
            }
        }
        suspects
    }
}

/// The consumer group of a tenant's loaders.
pub fn group_id(tenant: &str) -> String {
    format!("sightline.{tenant}.loader")
}

impl Loader {
    pub fn new(
        tenant: Tenant,
        warehouse: Arc<dyn Warehouse>,
        metrics: LoaderMetrics,
        readiness: Readiness,
        config: LoaderConfig,
    ) -> Result<Self, LoaderError> {
        let [topic, dlq_topic] = topics(&tenant.name);
        let assigned = Arc::new(AtomicBool::new(false));
        let revoked = Arc::new(AtomicBool::new(false));
        let context = LoaderContext {
            tenant: tenant.name.clone(),
            metrics: metrics.clone(),
            assigned: assigned.clone(),
            revoked: revoked.clone(),
        };
        let mut consumer_config = client_config(&config.brokers);
        consumer_config
            .set("group.id", group_id(&tenant.name))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", config.session_timeout.as_millis().to_string())
            .set("statistics.interval.ms", config.stats_interval.as_millis().to_string())
            // Bounded prefetch: a message is a whole request (tens of KB), so librdkafka's
            // defaults (100,000 messages per partition) would buffer gigabytes.
            .set("queued.min.messages", "1000")
            .set("queued.max.messages.kbytes", "8192")
            .set("fetch.max.bytes", "8388608")
            .set("max.partition.fetch.bytes", "2097152");
        if let Some(id) = &config.instance_id {
            consumer_config.set("group.instance.id", id);
        }
        let consumer: StreamConsumer<LoaderContext> = consumer_config.create_with_context(context)?;
        let dlq: FutureProducer = client_config(&config.brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create()?;
        Ok(Self {
            tenant,
            topic,
            dlq_topic,
            warehouse,
            consumer,
            dlq,
            sessions: SessionState::default(),
            assigned,
            revoked,
            redelivery_window: BTreeMap::new(),
            intended: BTreeMap::new(),
            metrics,
            readiness,
            config,
        })
    }

    /// Loads until `shutdown` turns true, then stores what it has read, commits and returns.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), LoaderError> {
        // Sessions and the redelivery window are read when partitions are assigned, which
        // happens inside the first reads.
        self.consumer.subscribe(&[&self.topic])?;
        self.readiness.set(true);
        tracing::info!(tenant = %self.tenant.name, topic = %self.topic, group = %group_id(&self.tenant.name), "loading");
        let mut last_eviction = Instant::now();
        while !*shutdown.borrow() {
            let batch = self.next_batch(&mut shutdown).await;
            let rebalanced = self.revoked.swap(false, Ordering::SeqCst);
            if self.assigned.swap(false, Ordering::SeqCst) {
                // New partitions bring visitors whose sessions another loader advanced, and
                // messages another loader may have stored.
                self.take_over().await?;
            }
            if rebalanced && batch.messages > 0 {
                // Partitions were taken away while this batch was read: some of its messages
                // now belong to another loader, which reads them from the committed offset.
                // Storing them here too would race it, so none is stored; those that come
                // back to this loader are read again from the committed offset.
                tracing::info!(tenant = %self.tenant.name, messages = batch.messages, "rebalanced while reading: batch left to the new owners");
                continue;
            }
            if batch.messages == 0 {
                continue;
            }
            if !self.load(batch, &mut shutdown).await {
                break;
            }
            if last_eviction.elapsed() > Duration::from_secs(60) {
                self.sessions.evict_idle(Utc::now());
                last_eviction = Instant::now();
            }
        }
        // Everything stored is committed already; this makes sure the last commit is sent.
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit.
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                tracing::warn!(tenant = %self.tenant.name, error = %e, "final offset commit failed; the log will redeliver (deduplicated)")
            }
        }
        tracing::info!(tenant = %self.tenant.name, "loader stopped");
        Ok(())
    }

    /// What a loader needs when it gets partitions: the sessions of their visitors (advanced
    /// by whoever loaded them before) and the redelivery window of each.
    async fn take_over(&mut self) -> Result<(), LoaderError> {
        let db = self.tenant.database();
        let sessions = ops::restore_sessions(self.warehouse.as_ref(), &db, Utc::now(), &mut self.sessions).await?;
        let intents = ops::intents(self.warehouse.as_ref(), &db, &self.topic).await?;
        tracing::info!(tenant = %self.tenant.name, sessions, ?intents, "partitions taken over: sessions restored, redelivery window read");
        self.redelivery_window = intents.clone();
        self.intended = intents;
        Ok(())
    }

    /// Messages until the batch holds `max_events` events, `max_wait` after the first, or
    /// shutdown; each decoded on arrival.
    async fn next_batch(&self, shutdown: &mut watch::Receiver<bool>) -> Batch {
        let mut batch = Batch::default();
        let mut deadline = None;
        while batch.events() < self.config.max_events && !self.revoked.load(Ordering::SeqCst) {
            let received = match deadline {
                None => tokio::select! {
                    _ = shutdown.changed() => return batch,
                    // Wake up now and then with nothing read, so a rebalance is acted on.
                    r = tokio::time::timeout(Duration::from_secs(1), self.consumer.recv()) => match r {
                        Ok(r) => r,
                        Err(_) => return batch,
                    },
                },
                Some(deadline) => tokio::select! {
                    _ = shutdown.changed() => return batch,
                    r = tokio::time::timeout_at(deadline, self.consumer.recv()) => match r {
                        Ok(r) => r,
                        Err(_) => return batch,
                    },
                },
            };
            match received {
                Ok(m) => {
                    deadline.get_or_insert_with(|| Instant::now() + self.config.max_wait);
                    batch.messages += 1;
                    let next = batch.next_offsets.entry(m.partition()).or_insert(0);
                    *next = (*next).max(m.offset() + 1);
                    let decoded = decode::decode(m.payload(), &self.tenant);
                    batch.sources.push(Source {
                        partition: m.partition(),
                        offset: m.offset(),
                        ids: decoded.events.iter().map(|e| e.event_id).collect(),
                        client_ids: decoded.client_ids,
                    });
                    batch.raws.extend(decoded.events);
                    for p in decoded.poison {
                        let origin = Origin {
                            partition: m.partition(),
                            offset: m.offset(),
                            key: m.key().map(<[u8]>::to_vec),
                        };
                        batch.poison.push((origin, p));
                    }
                }
                Err(e) => {
                    // The broker is away or the group is rebalancing: librdkafka retries.
                    tracing::warn!(tenant = %self.tenant.name, error = %e, "consume error");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        batch
    }

    /// Stores a batch, sends its poison to the dead-letter topic and commits its offsets,
    /// retrying until that worked. Returns false when shutdown came first (nothing of the
    /// batch is committed then, so it is redelivered).
    async fn load(&mut self, batch: Batch, shutdown: &mut watch::Receiver<bool>) -> bool {
        let span = tracing::info_span!("load_batch", tenant = %self.tenant.name, messages = batch.messages, events = batch.events());
        self.load_in_span(batch, shutdown).instrument(span).await
    }

    async fn load_in_span(&mut self, batch: Batch, shutdown: &mut watch::Receiver<bool>) -> bool {
        let labels = TenantLabels {
            tenant: self.tenant.name.clone(),
        };
        self.metrics
            .batch_events
            .get_or_create(&labels)
            .observe(batch.events() as f64);

        let mut backoff = Duration::from_millis(100);
        loop {
            let started = std::time::Instant::now();
            let outcome = self.store_and_commit(&batch).await;
            match outcome {
                Ok(stored) => {
                    self.metrics
                        .insert_seconds
                        .get_or_create(&labels)
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics.loaded(&self.tenant.name, "stored", stored.raw as u64);
                    self.metrics
                        .loaded(&self.tenant.name, "duplicate", stored.duplicates as u64);
                    self.metrics.loaded(&self.tenant.name, "dlq", batch.poison.len() as u64);
                    self.readiness.set(true);
                    return true;
                }
                Err(e) => {
                    self.metrics.insert_failures.get_or_create(&labels).inc();
                    self.readiness.set(false);
                    if *shutdown.borrow() {
                        // Stopping: the batch is not committed, the log redelivers it.
                        tracing::warn!(error = %e, "batch not stored at shutdown; it will be redelivered");
                        return false;
                    }
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "batch not stored; retrying");
                    tokio::select! {
                        _ = shutdown.changed() => return false,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    async fn store_and_commit(&mut self, batch: &Batch) -> Result<store::Stored, LoaderError> {
        // Write-ahead: the intent is durable before any row of the batch is.
        let new_intents: Vec<(i32, i64)> = batch
            .next_offsets
            .iter()
            .map(|(p, next)| (*p, next - 1))
            .filter(|(p, last)| self.intended.get(p).is_none_or(|known| last > known))
            .collect();
        ops::record_intents(
            self.warehouse.as_ref(),
            &self.tenant.database(),
            &self.topic,
            &new_intents,
        )
        .await?;
        self.intended.extend(new_intents);
        let stored = store::store_batch(
            self.warehouse.as_ref(),
            &self.tenant,
            &mut self.sessions,
            &batch.raws,
            &batch.suspects(&self.redelivery_window),
        )
        .await?;
        for (origin, p) in &batch.poison {
            self.dead_letter(origin, p).await?;
        }
        let mut offsets = TopicPartitionList::new();
        for (partition, next) in &batch.next_offsets {
            offsets.add_partition_offset(&self.topic, *partition, Offset::Offset(*next))?;
        }
        // Stored first (the final commit at shutdown sends these), then committed now.
        // A lost commit only means a redelivery, which storing makes a no-op.
        self.consumer.store_offsets(&offsets)?;
        self.consumer.commit(&offsets, CommitMode::Async)?;
        Ok(stored)
    }

    /// Puts poison (a message, or one event of it) on the dead-letter topic with its reason
    /// and origin, and waits for the broker: its offset is committed only after.
    async fn dead_letter(&self, origin: &Origin, poison: &decode::Poison) -> Result<(), LoaderError> {
        tracing::warn!(partition = origin.partition, offset = origin.offset, reason = %poison.reason, "to the dead-letter topic");
        let mut origin_text = format!("{}/{}/{}", self.topic, origin.partition, origin.offset);
        if let Some(i) = poison.index {
            origin_text.push_str(&format!("#{i}"));
        }
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "sightline-reason",
                value: Some(&poison.reason),
            })
            .insert(Header {
                key: "sightline-origin",
                value: Some(&origin_text),
            });
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.dlq_topic)
            .payload(&poison.payload)
            .headers(headers);
        if let Some(key) = &origin.key {
            record = record.key(key.as_slice());
        }
        self.dlq
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| LoaderError::Kafka(e))?;
        self.metrics
            .dlq
            .get_or_create(&TenantLabels {
                tenant: self.tenant.name.clone(),
            })
            .inc();
        Ok(())
    }
}
