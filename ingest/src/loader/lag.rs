//! Stalls made visible: every `interval` each loader reads, for every partition of its
//! tenant's topic (not only those it holds), the group's committed offset and the log end,
//! and exports the lag between them; and how long each partition has gone unconsumed while
//! messages waited on it.
//!
//! A partition counts as consumed at a sample when this loader holds it, when the group's
//! committed offset moved since the previous sample (another loader is consuming it), or
//! when nothing waits on it. Otherwise its `unowned_seconds` grow: its owner left without
//! leaving the group (a static member scaled away: `membership`), hangs, or there is no
//! loader at all. Each loader exports every partition, so the series are the same
//! whichever loader is scraped, and a revocation leaves nothing stale behind.
//!
//! Reading them also tells whether the brokers answer: a sample that fails for a broker
//! reason marks them down (the loader is then not ready), one that succeeds marks them up.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;

use crate::kafka::context::{transient, KafkaContext};
use crate::metrics::{LoaderMetrics, PartitionLabels, TenantLabels};

use super::reader::Consumer;

/// How long one metadata, offset or list-offsets request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One partition at one sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct PartitionSample {
    pub partition: i32,
    /// The group's committed offset (`None`: nothing committed yet).
    pub committed: Option<i64>,
    /// The log's first and next offsets.
    pub start: i64,
    pub end: i64,
    /// This loader holds it.
    pub owned: bool,
}

impl PartitionSample {
    /// Messages the group has not consumed yet (from the log's start when nothing is
    /// committed: the loaders read from the earliest offset).
    pub fn lag(&self) -> i64 {
        let from = self.committed.map_or(self.start, |c| c.max(self.start));
        (self.end - from).max(0)
    }
}

/// Per partition, when it was last seen consumed and its committed offset then.
#[derive(Default)]
pub(super) struct Stalls {
    seen: HashMap<i32, (Option<i64>, Instant)>,
}

impl Stalls {
    /// Takes a sample at `now`; returns per partition the seconds it has gone unconsumed.
    pub fn observe(&mut self, samples: &[PartitionSample], now: Instant) -> Vec<(i32, f64)> {
        samples
            .iter()
            .map(|s| {
                let consumed = match self.seen.get(&s.partition) {
                    // The first sample has no history: count from now.
                    None => true,
                    Some((committed, _)) => s.owned || s.lag() == 0 || *committed != s.committed,
                };
                let entry = self.seen.entry(s.partition).or_insert((s.committed, now));
                entry.0 = s.committed;
                if consumed {
                    entry.1 = now;
                }
                (s.partition, now.duration_since(entry.1).as_secs_f64())
            })
            .collect()
    }
}

/// What the watch needs.
pub(super) struct LagWatch {
    pub tenant: String,
    pub topic: String,
    pub consumer: Arc<Consumer>,
    pub context: KafkaContext,
    pub metrics: LoaderMetrics,
    pub interval: Duration,
}

impl LagWatch {
    /// Samples every `interval` until `stop` turns true.
    pub fn spawn(self, mut stop: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let this = Arc::new(self);
            let mut stalls = Stalls::default();
            let mut exported: HashSet<i32> = HashSet::new();
            loop {
                let sampling = this.clone();
                let sampled = tokio::task::spawn_blocking(move || sampling.sample()).await;
                match sampled {
                    Ok(Ok(samples)) => {
                        this.context.answered();
                        this.export(&samples, &stalls.observe(&samples, Instant::now()), &mut exported);
                    }
                    Ok(Err(e)) => {
                        if e.rdkafka_error_code().is_some_and(transient) {
                            this.context.unanswered(&format!("consumer lag not readable: {e}"));
                        } else {
                            tracing::warn!(tenant = %this.tenant, error = %e, "consumer lag not readable");
                        }
                        // Values that can no longer be read are not left to look current.
                        this.forget(&mut exported);
                    }
                    Err(e) => tracing::warn!(tenant = %this.tenant, error = %e, "consumer lag sampling failed"),
                }
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(this.interval) => {}
                }
            }
        })
    }

    /// Every partition of the topic: committed offsets, log start and end, ownership
    /// (blocking: librdkafka's calls wait for the broker).
    fn sample(&self) -> Result<Vec<PartitionSample>, KafkaError> {
        let metadata = self.consumer.fetch_metadata(Some(&self.topic), REQUEST_TIMEOUT)?;
        let Some(topic) = metadata.topics().iter().find(|t| t.name() == self.topic) else {
            return Ok(Vec::new());
        };
        if let Some(e) = topic.error() {
            return Err(KafkaError::MetadataFetch(e.into()));
        }
        let partitions: Vec<i32> = topic.partitions().iter().map(|p| p.id()).collect();
        let list = |offset: Offset| -> Result<TopicPartitionList, KafkaError> {
            let mut tpl = TopicPartitionList::new();
            for p in &partitions {
                tpl.add_partition_offset(&self.topic, *p, offset)?;
            }
            Ok(tpl)
        };
        let committed = self
            .consumer
            .committed_offsets(list(Offset::Invalid)?, REQUEST_TIMEOUT)?;
        // A timestamp of -1 asks for each partition's end, -2 for its start (ListOffsets).
        let ends = self.consumer.offsets_for_times(list(Offset::End)?, REQUEST_TIMEOUT)?;
        let starts = self
            .consumer
            .offsets_for_times(list(Offset::Beginning)?, REQUEST_TIMEOUT)?;
        let owned: HashSet<i32> = self
            .consumer
            .assignment()?
            .elements_for_topic(&self.topic)
            .iter()
            .map(|e| e.partition())
            .collect();
        let offset_of = |tpl: &TopicPartitionList, p: i32| match tpl.find_partition(&self.topic, p).map(|e| e.offset())
        {
            Some(Offset::Offset(o)) => Some(o),
            _ => None,
        };
        Ok(partitions
            .iter()
            .map(|p| PartitionSample {
                partition: *p,
                committed: offset_of(&committed, *p),
                start: offset_of(&starts, *p).unwrap_or(0),
                end: offset_of(&ends, *p).unwrap_or(0),
                owned: owned.contains(p),
            })
            .collect())
    }

    fn labels(&self, partition: i32) -> PartitionLabels {
        PartitionLabels {
            tenant: self.tenant.clone(),
            partition,
        }
    }

    fn export(&self, samples: &[PartitionSample], unowned: &[(i32, f64)], exported: &mut HashSet<i32>) {
        for s in samples {
            self.metrics
                .consumer_lag
                .get_or_create(&self.labels(s.partition))
                .set(s.lag());
            exported.insert(s.partition);
        }
        for (partition, seconds) in unowned {
            self.metrics
                .unowned_seconds
                .get_or_create(&self.labels(*partition))
                .set(*seconds);
        }
        self.metrics
            .partitions_owned
            .get_or_create(&TenantLabels {
                tenant: self.tenant.clone(),
            })
            .set(samples.iter().filter(|s| s.owned).count() as i64);
    }

    fn forget(&self, exported: &mut HashSet<i32>) {
        for partition in exported.drain() {
            let labels = self.labels(partition);
            self.metrics.consumer_lag.remove(&labels);
            self.metrics.unowned_seconds.remove(&labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(partition: i32, committed: Option<i64>, end: i64, owned: bool) -> PartitionSample {
        PartitionSample {
            partition,
            committed,
            start: 0,
            end,
            owned,
        }
    }

    #[test]
    fn lag_counts_from_the_committed_offset_or_the_log_start() {
        assert_eq!(sample(0, Some(7), 10, false).lag(), 3);
        assert_eq!(sample(0, None, 10, false).lag(), 10);
        let trimmed = PartitionSample {
            start: 8,
            ..sample(0, Some(5), 10, false)
        };
        assert_eq!(trimmed.lag(), 2, "retention removed what was before 8");
        assert_eq!(sample(0, Some(10), 10, false).lag(), 0);
    }

    #[test]
    fn a_partition_is_unowned_while_messages_wait_and_its_offset_stands_still() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut stalls = Stalls::default();
        // 0: held here; 1: another loader commits; 2: its owner is gone; 3: nothing waits.
        let first = [
            sample(0, Some(5), 9, true),
            sample(1, Some(5), 9, false),
            sample(2, Some(5), 9, false),
            sample(3, Some(9), 9, false),
        ];
        assert!(stalls.observe(&first, at(0)).iter().all(|(_, s)| *s == 0.0));
        let later = [
            sample(0, Some(5), 12, true),
            sample(1, Some(8), 12, false),
            sample(2, Some(5), 12, false),
            sample(3, Some(9), 9, false),
        ];
        assert_eq!(
            stalls.observe(&later, at(5)),
            vec![(0, 0.0), (1, 0.0), (2, 5.0), (3, 0.0)]
        );
        assert_eq!(stalls.observe(&later, at(12))[2], (2, 12.0));
        // Taken over: consumed again.
        let taken = [sample(2, Some(5), 12, true)];
        assert_eq!(stalls.observe(&taken, at(13)), vec![(2, 0.0)]);
    }
}
