//! The loader's reading side: a thread that polls the tenant's topic, decodes each message on
//! arrival and hands whole batches to the storing side, so the next batch is read and decoded
//! while the current one is stored.
//!
//! Overlapping the two must keep the rule that no batch is stored across a rebalance: the
//! partitions a batch came from may belong to another loader afterwards, which reads them
//! from the committed offset. The `Gate` enforces it. Every batch carries the *epoch* (the
//! number of revocations seen) in which its first message was read; a revocation raises the
//! epoch and then waits, inside librdkafka's rebalance callback (so before the partitions
//! are given up), until no store is in progress. A store starts only for a batch of the
//! current epoch. So a batch is either stored and committed before its partitions leave, or
//! dropped and read again by their next owner.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use sightline_core::event::RawEvent;
use sightline_core::spec::LiveTenant;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::decode;
use crate::kafka::context::KafkaContext;

/// Where a poison message (or event) came from, for its dead letter.
pub(super) struct Origin {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
}

/// Messages read and decoded as they arrive, so a batch is bounded by events (a message is a
/// whole request, up to the spec's events per request) rather than by messages.
pub(super) struct Batch {
    /// The gate's epoch when the first message was read.
    pub epoch: u64,
    pub raws: Vec<RawEvent>,
    pub poison: Vec<(Origin, decode::Poison)>,
    /// Per partition, the offset to commit once the batch is stored.
    pub next_offsets: BTreeMap<i32, i64>,
    /// Per partition, the batch's first offset.
    first_offsets: BTreeMap<i32, i64>,
    pub messages: usize,
    /// Per message with events: where it sits, its events' ids and the ids its client
    /// chose, to tell at store time which ids may be stored already.
    sources: Vec<Source>,
    /// Held until the storing side takes the batch: bounds the batches in memory to the one
    /// being stored and the one being read.
    permit: Option<OwnedSemaphorePermit>,
}

struct Source {
    partition: i32,
    offset: i64,
    ids: Vec<uuid::Uuid>,
    client_ids: Vec<uuid::Uuid>,
}

impl Batch {
    fn new(epoch: u64) -> Self {
        Self {
            epoch,
            raws: Vec::new(),
            poison: Vec::new(),
            next_offsets: BTreeMap::new(),
            first_offsets: BTreeMap::new(),
            messages: 0,
            sources: Vec::new(),
            permit: None,
        }
    }

    pub fn events(&self) -> usize {
        self.raws.len() + self.poison.len()
    }

    /// Lets the reader start the next batch (the storing side has taken this one).
    pub fn release(&mut self) {
        self.permit = None;
    }

    /// The ids that may be stored already (see `store`): every event of a message inside
    /// the redelivery window, else the ids its client chose. Decided when the batch is
    /// stored, after the take-over of the assignment it was read in has set the window.
    pub fn suspects(&self, window: &BTreeMap<i32, i64>) -> HashSet<uuid::Uuid> {
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

    /// The write-ahead intents to record before this batch is stored: for each partition
    /// where the batch goes beyond what `intended` covers, an offset `ahead` times the
    /// batch's span past its last message. Reaching ahead spares the following batches an
    /// intent of their own (one insert fewer per batch); the price is that after a crash
    /// that many more messages per partition are looked up by id.
    pub fn intents(&self, intended: &BTreeMap<i32, i64>, ahead: i64) -> Vec<(i32, i64)> {
        self.next_offsets
            .iter()
            .filter_map(|(partition, next)| {
                let last = next - 1;
                if intended.get(partition).is_some_and(|known| last <= *known) {
                    return None;
                }
                let first = self.first_offsets.get(partition).copied().unwrap_or(last);
                Some((*partition, last + (last - first + 1) * ahead))
            })
            .collect()
    }

    fn add(&mut self, partition: i32, offset: i64, key: Option<&[u8]>, decoded: decode::Decoded) {
        self.messages += 1;
        let next = self.next_offsets.entry(partition).or_insert(0);
        *next = (*next).max(offset + 1);
        let first = self.first_offsets.entry(partition).or_insert(offset);
        *first = (*first).min(offset);
        self.sources.push(Source {
            partition,
            offset,
            ids: decoded.events.iter().map(|e| e.event_id).collect(),
            client_ids: decoded.client_ids,
        });
        self.raws.extend(decoded.events);
        for p in decoded.poison {
            let origin = Origin {
                partition,
                offset,
                key: key.map(<[u8]>::to_vec),
            };
            self.poison.push((origin, p));
        }
    }
}

/// Orders stores against revocations (see the module's comment).
#[derive(Default)]
pub(super) struct Gate {
    state: Mutex<GateState>,
    idle: Condvar,
}

#[derive(Default)]
struct GateState {
    epoch: u64,
    storing: bool,
    /// Partitions were assigned and the storing side has not taken them over yet.
    assigned: bool,
}

/// A store in progress; a revocation waits until it is dropped.
pub(super) struct Storing<'a> {
    gate: &'a Gate,
    /// Partitions were assigned since the last store: take them over first.
    pub take_over: bool,
}

impl Drop for Storing<'_> {
    fn drop(&mut self) {
        self.gate.lock().storing = false;
        self.gate.idle.notify_all();
    }
}

impl Gate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        // A poisoned lock only means a panic elsewhere; the state is two flags and a counter.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Starts storing a batch read in `epoch`; `None` when partitions were revoked since,
    /// so the batch must be dropped.
    pub fn begin(&self, epoch: u64) -> Option<Storing<'_>> {
        let mut state = self.lock();
        if state.epoch != epoch {
            return None;
        }
        state.storing = true;
        let take_over = std::mem::take(&mut state.assigned);
        Some(Storing { gate: self, take_over })
    }

    /// Called when a take-over failed: the next store must try it again.
    pub fn retake(&self) {
        self.lock().assigned = true;
    }

    /// Inside the revocation callback: no batch read before it may be stored after it.
    fn revoke(&self) {
        let mut state = self.lock();
        state.epoch += 1;
        while state.storing {
            state = self.idle.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn assign(&self) {
        self.lock().assigned = true;
    }
}

/// Consumer callbacks, run on the reading thread inside `poll`: the gate's revocations and
/// assignments, and librdkafka's logs and errors (`KafkaContext`).
pub(super) struct LoaderContext {
    pub tenant: String,
    pub gate: Arc<Gate>,
    pub kafka: KafkaContext,
}

impl ClientContext for LoaderContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.kafka.log(level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.kafka.report(&error, reason);
    }
}

impl ConsumerContext for LoaderContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let started = Instant::now();
            self.gate.revoke();
            tracing::info!(tenant = %self.tenant, partitions = tpl.count(), waited_ms = started.elapsed().as_millis() as u64, "partitions revoked");
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(tenant = %self.tenant, partitions = tpl.count(), "partitions assigned");
                self.gate.assign();
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(tenant = %self.tenant, error = %e, "rebalance failed"),
        }
    }
}

pub(super) type Consumer = BaseConsumer<LoaderContext>;

/// What the reading thread needs.
pub(super) struct Reader {
    pub consumer: Arc<Consumer>,
    /// The spec as last reloaded: each message is decoded against the current one.
    pub tenant: LiveTenant,
    pub gate: Arc<Gate>,
    pub max_events: usize,
    pub max_wait: Duration,
    /// Raised by the storing side at shutdown: the batch in hand is handed over, then the
    /// thread ends.
    pub stop: Arc<AtomicBool>,
    pub batches: mpsc::Sender<Batch>,
    /// One permit per batch that may be read ahead of the one being stored.
    pub read_ahead: Arc<Semaphore>,
    pub runtime: tokio::runtime::Handle,
    /// Where a poll's errors are logged (once, not at every poll of an outage).
    pub kafka: KafkaContext,
}

impl Reader {
    /// Reads batches until stopped or the storing side is gone.
    pub fn run(self) {
        let _span = tracing::info_span!("loader_reader", tenant = %self.tenant.load().name).entered();
        while !self.stop.load(Ordering::SeqCst) {
            let Some(batch) = self.next_batch() else { continue };
            if self.batches.blocking_send(batch).is_err() {
                return;
            }
        }
    }

    /// Messages until the batch holds `max_events` events, `max_wait` after the first, or
    /// stop; each decoded on arrival. `None` when nothing was read or a revocation came
    /// while reading (the batch's messages are read again by their partitions' next owner).
    fn next_batch(&self) -> Option<Batch> {
        // Poll often enough to notice stop, and never past the batch's deadline.
        const POLL: Duration = Duration::from_millis(100);
        let permit = self.runtime.block_on(self.read_ahead.clone().acquire_owned()).ok();
        // The batch and when it closes (`max_wait` after its first message).
        let mut batch: Option<(Batch, Instant)> = None;
        loop {
            let stop = self.stop.load(Ordering::SeqCst);
            let wait = match &batch {
                Some((b, _)) if b.epoch != self.gate.epoch() => {
                    tracing::info!(
                        messages = b.messages,
                        "revoked while reading: batch left to the partitions' next owners"
                    );
                    return None;
                }
                Some((b, closes)) => {
                    let left = closes.saturating_duration_since(Instant::now());
                    if stop || left.is_zero() || b.events() >= self.max_events {
                        break;
                    }
                    left.min(POLL)
                }
                None if stop => return None,
                None => POLL,
            };
            match self.consumer.poll(wait) {
                None => {}
                Some(Ok(m)) => {
                    let decoded = decode::decode(m.payload(), &self.tenant.load());
                    // A batch begun before a revocation inside this poll is dropped at the top
                    // of the loop; a new one belongs to the epoch its first message came in.
                    let (b, _) =
                        batch.get_or_insert_with(|| (Batch::new(self.gate.epoch()), Instant::now() + self.max_wait));
                    b.add(m.partition(), m.offset(), m.key(), decoded);
                }
                Some(Err(e)) => {
                    // The broker is away or the group is rebalancing: librdkafka retries.
                    self.kafka.report(&e, &e.to_string());
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        let (mut batch, _) = batch?;
        batch.permit = permit;
        Some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revocation_waits_for_the_store_in_progress_and_drops_batches_read_before_it() {
        let gate = Arc::new(Gate::default());
        let storing = gate.begin(0).expect("a batch of the current epoch may be stored");
        assert!(!storing.take_over);

        let revoked = Arc::new(AtomicBool::new(false));
        let revoking = {
            let (gate, revoked) = (gate.clone(), revoked.clone());
            std::thread::spawn(move || {
                gate.revoke();
                revoked.store(true, Ordering::SeqCst);
            })
        };
        // The epoch is raised before the revocation waits.
        while gate.epoch() == 0 {
            std::thread::yield_now();
        }
        assert!(
            !revoked.load(Ordering::SeqCst),
            "revocation returned while a store was in progress"
        );
        drop(storing);
        revoking.join().unwrap();
        assert!(revoked.load(Ordering::SeqCst));

        assert!(gate.begin(0).is_none(), "a batch read before the revocation was stored");
        assert!(gate.begin(1).is_some());
    }

    #[test]
    fn the_first_store_after_an_assignment_takes_over_and_a_failed_take_over_is_retried() {
        let gate = Gate::default();
        gate.assign();
        assert!(gate.begin(0).unwrap().take_over);
        assert!(!gate.begin(0).unwrap().take_over);
        gate.retake();
        assert!(gate.begin(0).unwrap().take_over);
    }

    #[test]
    fn intents_reach_ahead_and_are_recorded_only_when_a_batch_passes_them() {
        let decoded = || decode::Decoded::default();
        let mut batch = Batch::new(0);
        for offset in 10..20 {
            batch.add(0, offset, None, decoded());
        }
        batch.add(1, 7, None, decoded());
        let none = BTreeMap::new();
        assert_eq!(batch.intents(&none, 4), vec![(0, 19 + 40), (1, 7 + 4)]);
        assert_eq!(batch.intents(&none, 0), vec![(0, 19), (1, 7)]);
        // Partition 0 is covered up to 19 already, partition 1 only up to 6.
        let intended = BTreeMap::from([(0, 19), (1, 6)]);
        assert_eq!(batch.intents(&intended, 4), vec![(1, 11)]);
    }

    #[test]
    fn suspects_are_whole_messages_inside_the_window_and_client_ids_beyond_it() {
        let (a, b, c, d) = (
            uuid::Uuid::from_u128(1),
            uuid::Uuid::from_u128(2),
            uuid::Uuid::from_u128(3),
            uuid::Uuid::from_u128(4),
        );
        let mut batch = Batch::new(0);
        batch.sources = vec![
            Source {
                partition: 0,
                offset: 5,
                ids: vec![a, b],
                client_ids: vec![],
            },
            Source {
                partition: 0,
                offset: 6,
                ids: vec![c, d],
                client_ids: vec![d],
            },
        ];
        let window = BTreeMap::from([(0, 5)]);
        assert_eq!(batch.suspects(&window), HashSet::from([a, b, d]));
        assert_eq!(batch.suspects(&BTreeMap::new()), HashSet::from([d]));
    }
}
