//! The loader: the tenant's event topic into the warehouse. One consumer group per tenant
//! (`sightline.<tenant>.loader`); each batch is decoded, deduplicated against what is
//! stored, processed (the same processor as standalone and replay) and inserted, raw rows
//! first. Offsets are committed only after the insert, so a crash redelivers and
//! `store::store_batch` makes the redelivery a no-op. A message (or one event of it) that
//! cannot be loaded goes to the dead-letter topic with its reason, and its partition moves on.
//!
//! A thread (`reader`) polls and decodes the next batch while this task stores the current
//! one; its `Gate` keeps the rule that no batch is stored across a revocation.

pub mod decode;
mod lag;
mod reader;
pub mod store;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sightline_core::event::days_of;
use sightline_core::processor::{Current, Processor};
use sightline_core::spec::LiveTenant;
use sightline_core::warehouse::live::LiveSessions;
use sightline_core::warehouse::replay::lease::HeldDays;
use sightline_core::warehouse::{ops, Warehouse};
use tokio::sync::{mpsc, watch, Semaphore};
use tracing::Instrument;

use crate::error::Error;
use crate::kafka::context::{BrokerHealth, KafkaContext};
use crate::kafka::{client_config, topics, Security};
use crate::metrics::{LoaderMetrics, TenantLabels};
use reader::{Batch, Gate, LoaderContext, Origin, Reader};

#[derive(Clone, Debug)]
pub struct LoaderConfig {
    pub brokers: String,
    /// TLS and SASL (`Security::from_env`).
    pub security: Security,
    /// A batch closes at this many events ...
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
    /// How often the lag of every partition (and how long each went unconsumed) is read.
    pub lag_interval: Duration,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            brokers: String::new(),
            security: Security::default(),
            max_events: 5_000,
            max_wait: Duration::from_millis(250),
            session_timeout: Duration::from_secs(10),
            instance_id: None,
            lag_interval: Duration::from_secs(5),
        }
    }
}

/// How far a write-ahead intent reaches past its batch, in batches (see `Batch::intents`):
/// one intent insert per five batches instead of one per batch, at the price of looking up
/// five batches of messages by id after a crash.
const INTENT_LOOKAHEAD: i64 = 4;

pub struct Loader {
    /// The tenant's name, and its spec as last reloaded (sites, bot filtering).
    name: String,
    tenant: LiveTenant,
    topic: String,
    dlq_topic: String,
    warehouse: Arc<dyn Warehouse>,
    consumer: Arc<reader::Consumer>,
    gate: Arc<Gate>,
    dlq: FutureProducer<KafkaContext>,
    /// librdkafka's logs and errors, and what they say of the brokers (consumer and DLQ
    /// producer share it).
    kafka: KafkaContext,
    status: Arc<LoaderStatus>,
    processor: Arc<dyn Processor>,
    /// Made at the first take-over (reading what is stored needs the warehouse).
    sessions: Option<LiveSessions>,
    /// Per partition, the last offset some loader recorded an intent to store, as read when
    /// partitions were assigned: messages up to it may be stored already.
    redelivery_window: BTreeMap<i32, i64>,
    /// Per partition, the last offset this loader's intents cover.
    intended: BTreeMap<i32, i64>,
    metrics: LoaderMetrics,
    config: LoaderConfig,
    /// The days replays hold (docs/replay.md, "Replays beside live writers").
    leases: HeldDays,
    /// A replay of a day this loader writes ended: its sessions are read again before the
    /// next store.
    replayed: bool,
}

/// Whether a loader does its work: its last store succeeded and its brokers answer.
pub struct LoaderStatus {
    stores_ok: AtomicBool,
    brokers: Arc<BrokerHealth>,
}

impl LoaderStatus {
    pub fn ready(&self) -> bool {
        self.stores_ok.load(Ordering::Relaxed) && self.brokers.reachable()
    }

    /// Why it is not ready (`None` when it is).
    pub fn why_not(&self) -> Option<String> {
        if let Some(reason) = self.brokers.reason() {
            return Some(format!("Kafka brokers unreachable: {reason}"));
        }
        (!self.stores_ok.load(Ordering::Relaxed)).then(|| "the last store failed".to_string())
    }
}

/// How often a batch held back by a replay's lease checks the lease again.
const HOLD_RETRY: Duration = Duration::from_millis(250);

/// The consumer group of a tenant's loaders.
pub fn group_id(tenant: &str) -> String {
    format!("sightline.{tenant}.loader")
}

/// The `group.instance.id` of the loader started with `--instance-id instance` in `tenant`'s
/// group (a loader runs one consumer per tenant, so the tenant is part of it).
pub fn member_instance(instance: &str, tenant: &str) -> String {
    format!("{instance}.{tenant}")
}

impl Loader {
    pub fn new(
        tenant: LiveTenant,
        warehouse: Arc<dyn Warehouse>,
        metrics: LoaderMetrics,
        config: LoaderConfig,
    ) -> Result<Self, Error> {
        let name = tenant.load().name.clone();
        let [topic, dlq_topic] = topics(&name);
        let gate = Arc::new(Gate::default());
        // Down until the first read of the group's offsets answers.
        let kafka = KafkaContext::new(format!("loader {name}"), Arc::new(BrokerHealth::not_contacted()));
        let context = LoaderContext {
            tenant: name.clone(),
            gate: gate.clone(),
            kafka: kafka.clone(),
        };
        let mut consumer_config = client_config(&config.brokers, &config.security);
        consumer_config
            .set("group.id", group_id(&name))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", config.session_timeout.as_millis().to_string())
            // Bounded prefetch: a message is a whole request (tens of KB), so librdkafka's
            // defaults (100,000 messages per partition) would buffer gigabytes. The reading
            // thread polls while a batch is stored, so a small prefetch keeps it fed.
            .set("queued.min.messages", "1000")
            .set("queued.max.messages.kbytes", "4096")
            .set("fetch.max.bytes", "4194304")
            .set("max.partition.fetch.bytes", "1048576")
            // With so small a prefetch the queue is often full; librdkafka's default is then
            // to wait a whole second before fetching that partition again, which starves the
            // loader (stalls of 0.2-0.5 s between batches, measured).
            .set("fetch.queue.backoff.ms", "20");
        if let Some(id) = &config.instance_id {
            consumer_config.set("group.instance.id", id);
        }
        let consumer: reader::Consumer = consumer_config.create_with_context(context)?;
        let dlq: FutureProducer<KafkaContext> = client_config(&config.brokers, &config.security)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .create_with_context(kafka.clone())?;
        let status = Arc::new(LoaderStatus {
            stores_ok: AtomicBool::new(true),
            brokers: kafka.health().clone(),
        });
        Ok(Self {
            leases: HeldDays::new(&sightline_core::spec::database_name(&name)),
            replayed: false,
            name,
            tenant,
            topic,
            dlq_topic,
            warehouse,
            consumer: Arc::new(consumer),
            gate,
            dlq,
            kafka,
            status,
            processor: Arc::new(Current),
            sessions: None,
            redelivery_window: BTreeMap::new(),
            intended: BTreeMap::new(),
            metrics,
            config,
        })
    }

    /// Whether this loader does its work (for the role's `/readyz`).
    pub fn status(&self) -> Arc<LoaderStatus> {
        self.status.clone()
    }

    /// Loads until `shutdown` turns true, then stores what it has read, commits and returns.
    /// A thread reads and decodes the next batch while this task stores the current one.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<(), Error> {
        // Sessions and the redelivery window are read when partitions are assigned, which
        // happens inside the first reads.
        self.consumer.subscribe(&[&self.topic])?;
        tracing::info!(tenant = %self.name, topic = %self.topic, group = %group_id(&self.name), "loading");
        let lag = lag::LagWatch {
            tenant: self.name.clone(),
            topic: self.topic.clone(),
            consumer: self.consumer.clone(),
            context: self.kafka.clone(),
            metrics: self.metrics.clone(),
            interval: self.config.lag_interval,
        }
        .spawn(shutdown.clone());
        let (batches, mut received) = mpsc::channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = Reader {
            consumer: self.consumer.clone(),
            tenant: self.tenant.clone(),
            gate: self.gate.clone(),
            max_events: self.config.max_events,
            max_wait: self.config.max_wait,
            stop: stop.clone(),
            batches,
            read_ahead: Arc::new(Semaphore::new(1)),
            runtime: tokio::runtime::Handle::current(),
            kafka: self.kafka.clone(),
        };
        let reading = std::thread::Builder::new()
            .name(format!("read-{}", self.name))
            .spawn(move || reader.run())
            .map_err(|e| Error::Reader(e.to_string()))?;

        loop {
            let waiting = std::time::Instant::now();
            let batch = tokio::select! {
                // At shutdown the reader hands over the batch in hand and ends, which closes
                // the channel once everything read is taken.
                _ = shutdown.changed(), if !stop.load(Ordering::SeqCst) => {
                    stop.store(true, Ordering::SeqCst);
                    continue;
                }
                batch = received.recv() => batch,
            };
            let Some(batch) = batch else { break };
            // A writer that waits long here is starved by the reading side (fetches).
            tracing::debug!(waited_ms = waiting.elapsed().as_secs_f64() * 1e3, "batch received");
            if !self.load(batch, &mut shutdown).await {
                break;
            }
        }
        stop.store(true, Ordering::SeqCst);
        // Unblocks a reader waiting to hand over a batch; that batch is redelivered.
        drop(received);
        let ended_cleanly = *shutdown.borrow();
        let joined = tokio::task::spawn_blocking(move || reading.join())
            .await
            .map_err(|e| Error::Reader(e.to_string()))?;
        joined.map_err(|_| Error::Reader("panicked".into()))?;
        lag.abort();
        // Everything stored is committed already; this makes sure the last commit is sent.
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit.
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                tracing::warn!(tenant = %self.name, error = %e, "final offset commit failed; the log will redeliver (deduplicated)")
            }
        }
        // Leaving the group waits for the broker: off the async workers.
        let consumer = self.consumer.clone();
        drop(self);
        tokio::task::spawn_blocking(move || drop(consumer))
            .await
            .map_err(|e| Error::Reader(e.to_string()))?;
        if !ended_cleanly {
            return Err(Error::Reader("stopped reading before shutdown".into()));
        }
        tracing::info!("loader stopped");
        Ok(())
    }

    /// What a loader needs when it gets partitions: the state of their visitors (advanced by
    /// whoever loaded them before: read again from what is stored) and the redelivery window
    /// of each.
    async fn take_over(&mut self) -> Result<(), Error> {
        let db = self.tenant.load().database();
        match &mut self.sessions {
            Some(live) => live.take_over(self.warehouse.as_ref()).await?,
            None => {
                self.sessions = Some(
                    LiveSessions::start(self.warehouse.as_ref(), &self.tenant.load(), self.processor.clone())
                        .await?
                        // Other loaders of the tenant hold the visitors of other partitions.
                        .shared_with_other_writers(),
                )
            }
        }
        let intents = ops::intents(self.warehouse.as_ref(), &db, &self.topic).await?;
        let (_, _, unseen) = self.sessions.as_ref().map(LiveSessions::sizes).unwrap_or_default();
        tracing::info!(tenant = %self.name, unseen, ?intents, "partitions taken over: recent visitors and the redelivery window read");
        self.redelivery_window = intents.clone();
        self.intended = intents;
        Ok(())
    }

    /// Runs the loader with another processor than this build's (a test ingesting with an
    /// older or a deliberately wrong one).
    pub fn with_processor(mut self, processor: Arc<dyn Processor>) -> Self {
        self.processor = processor;
        self
    }

    /// Stores a batch, sends its poison to the dead-letter topic and commits its offsets,
    /// retrying until that worked. Returns false when shutdown came first (nothing of the
    /// batch is committed then, so it is redelivered).
    async fn load(&mut self, batch: Batch, shutdown: &mut watch::Receiver<bool>) -> bool {
        let span =
            tracing::info_span!("load_batch", tenant = %self.name, messages = batch.messages, events = batch.events());
        self.load_in_span(batch, shutdown).instrument(span).await
    }

    async fn load_in_span(&mut self, mut batch: Batch, shutdown: &mut watch::Receiver<bool>) -> bool {
        // The reader may start on the next batch while this one is stored.
        batch.release();
        let labels = TenantLabels {
            tenant: self.name.clone(),
        };
        self.metrics
            .batch_events
            .get_or_create(&labels)
            .observe(batch.events() as f64);

        if !self.wait_for_leases(&batch, shutdown).await {
            return false;
        }
        let gate = self.gate.clone();
        let mut backoff = Duration::from_millis(100);
        loop {
            // Each attempt is one store: a revocation waits for it, or drops the batch
            // between attempts (its partitions' next owner reads it from the committed offset).
            let Some(storing) = gate.begin(batch.epoch) else {
                tracing::info!("revoked before storing: batch left to the partitions' next owners");
                return true;
            };
            let started = std::time::Instant::now();
            let outcome = async {
                if self.replayed && !storing.take_over {
                    // A replay rewrote a day this loader writes: what it remembers of those
                    // visitors may be stale.
                    if let Some(live) = &mut self.sessions {
                        live.take_over(self.warehouse.as_ref()).await?;
                    }
                }
                self.replayed = false;
                if storing.take_over {
                    // New partitions bring visitors whose sessions another loader advanced,
                    // and messages another loader may have stored.
                    if let Err(e) = self.take_over().await {
                        gate.retake();
                        return Err(e);
                    }
                }
                self.store_and_commit(&batch).await
            }
            .await;
            drop(storing);
            match outcome {
                Ok(stored) => {
                    self.metrics
                        .insert_seconds
                        .get_or_create(&labels)
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics.loaded(&self.name, "stored", stored.raw as u64);
                    self.metrics.loaded(&self.name, "duplicate", stored.duplicates as u64);
                    self.metrics.loaded(&self.name, "dlq", batch.poison.len() as u64);
                    self.status.stores_ok.store(true, Ordering::Relaxed);
                    return true;
                }
                Err(e) => {
                    self.metrics.insert_failures.get_or_create(&labels).inc();
                    self.status.stores_ok.store(false, Ordering::Relaxed);
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

    /// Holds the batch back while a replay holds one of its days (its offsets are committed
    /// in order, so the whole batch waits). Returns false when shutdown came first.
    async fn wait_for_leases(&mut self, batch: &Batch, shutdown: &mut watch::Receiver<bool>) -> bool {
        let days = days_of(batch.raws.iter());
        let mut waited = false;
        loop {
            match self.leases.check(self.warehouse.as_ref(), &days).await {
                Ok(view) => {
                    if !view.released.is_empty() {
                        self.replayed = true;
                        self.leases.acknowledge(&view.released);
                    }
                    if view.held.is_empty() {
                        if waited {
                            tracing::info!(days = ?days, "replays released the batch's days; storing it");
                        }
                        return true;
                    }
                    if !waited {
                        tracing::info!(days = ?view.held, "batch held back while replays hold its days");
                    }
                    waited = true;
                }
                // Storing will meet the same outage and retry with backoff.
                Err(e) => {
                    tracing::warn!(error = %e, "leases not readable; storing anyway");
                    return true;
                }
            }
            tokio::select! {
                _ = shutdown.changed() => return false,
                _ = tokio::time::sleep(HOLD_RETRY) => {}
            }
        }
    }

    async fn store_and_commit(&mut self, batch: &Batch) -> Result<store::Stored, Error> {
        // Write-ahead: an intent is durable before any row it covers.
        let started = std::time::Instant::now();
        let new_intents = batch.intents(&self.intended, INTENT_LOOKAHEAD);
        ops::record_intents(
            self.warehouse.as_ref(),
            &self.tenant.load().database(),
            &self.topic,
            &new_intents,
        )
        .await?;
        self.intended.extend(new_intents);
        let intents_done = std::time::Instant::now();
        let suspects = batch.suspects(&self.redelivery_window);
        let sessions = self
            .sessions
            .as_mut()
            .ok_or_else(|| Error::Reader("a batch to store before any partition was taken over".into()))?;
        let stored = store::store_batch(
            self.warehouse.as_ref(),
            &self.tenant.load(),
            sessions,
            &batch.raws,
            &suspects,
        )
        .await?;
        let stored_at = std::time::Instant::now();
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
        tracing::debug!(
            intents_ms = (intents_done - started).as_secs_f64() * 1e3,
            store_ms = (stored_at - intents_done).as_secs_f64() * 1e3,
            dlq_and_commit_ms = stored_at.elapsed().as_secs_f64() * 1e3,
            "batch committed"
        );
        Ok(stored)
    }

    /// Puts poison (a message, or one event of it) on the dead-letter topic with its reason
    /// and origin, and waits for the broker: its offset is committed only after.
    async fn dead_letter(&self, origin: &Origin, poison: &decode::Poison) -> Result<(), Error> {
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
            .map_err(|(e, _)| Error::Kafka(e))?;
        self.metrics
            .dlq
            .get_or_create(&TenantLabels {
                tenant: self.name.clone(),
            })
            .inc();
        Ok(())
    }
}
