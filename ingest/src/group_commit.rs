//! The standalone log: a group-commit writer. Requests hand their events to one writer task,
//! which closes a batch at `max_events` or `max_wait`, processes it, inserts it into the
//! warehouse and only then answers every request of the batch. One insert per batch keeps
//! the engine's part count low at high request rates; nobody is answered before commit.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use sightline_core::event::{days_of, RawEvent};
use sightline_core::registry::Registry;
use sightline_core::schema;
use sightline_core::warehouse::live::LiveSessions;
use sightline_core::warehouse::replay::lease::HeldDays;
use sightline_core::warehouse::{ops, Warehouse};
use sightline_core::watermark::Watermarks;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

use crate::error::Error;
use crate::sink::EventSink;

#[derive(Clone, Copy, Debug)]
pub struct GroupCommitConfig {
    /// A batch closes when it holds this many events ...
    pub max_events: usize,
    /// ... or when its first request has waited this long.
    pub max_wait: Duration,
    /// Events waiting for commit before new requests get 503.
    pub max_pending_events: usize,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        Self {
            max_events: 5_000,
            max_wait: Duration::from_millis(20),
            max_pending_events: 200_000,
        }
    }
}

struct Pending {
    tenant: String,
    events: Vec<RawEvent>,
    /// Ids the client chose: only these can repeat (a retry), so only these are looked up.
    client_ids: Vec<Uuid>,
    /// When the request handed its events over: a batch closes `max_wait` after its first
    /// request arrived, so requests that queued during the previous commit go at once.
    arrived: Instant,
    reply: oneshot::Sender<Result<(), Error>>,
    _permit: OwnedSemaphorePermit,
}

/// The handle requests use. Cloning is cheap; the writer stops when every handle is gone.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::UnboundedSender<Pending>,
    room: Arc<Semaphore>,
}

impl GroupCommit {
    /// Starts the writer task. Each tenant's processing continues from its `LiveSessions`
    /// (`LiveSessions::start`, run before this).
    pub fn start(
        warehouse: Arc<dyn Warehouse>,
        registry: Arc<Registry>,
        watermarks: Arc<Watermarks>,
        sessions: BTreeMap<String, LiveSessions>,
        config: GroupCommitConfig,
    ) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let room = Arc::new(Semaphore::new(config.max_pending_events));
        let leases = sessions
            .keys()
            .filter_map(|t| {
                registry
                    .get(t)
                    .map(|e| (t.clone(), HeldDays::new(&e.tenant.database())))
            })
            .collect();
        let writer = Writer {
            warehouse,
            registry,
            watermarks,
            sessions,
            leases,
            held: Vec::new(),
            config,
        };
        let task = tokio::spawn(writer.run(rx));
        (Self { tx, room }, task)
    }
}

#[async_trait]
impl EventSink for GroupCommit {
    async fn append(&self, tenant: &str, events: Vec<RawEvent>, client_ids: Vec<Uuid>) -> Result<(), Error> {
        if events.is_empty() {
            return Ok(());
        }
        let n = u32::try_from(events.len()).map_err(|_| Error::Busy)?;
        let permit = self.room.clone().try_acquire_many_owned(n).map_err(|_| Error::Busy)?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending {
                tenant: tenant.to_string(),
                events,
                client_ids,
                arrived: Instant::now(),
                reply,
                _permit: permit,
            })
            .map_err(|_| Error::Unavailable("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| Error::Unavailable("the writer stopped before commit".into()))?
    }
}

struct Writer {
    warehouse: Arc<dyn Warehouse>,
    registry: Arc<Registry>,
    watermarks: Arc<Watermarks>,
    sessions: BTreeMap<String, LiveSessions>,
    /// Per tenant, the days replays hold (docs/replay.md, "Replays beside live writers").
    leases: BTreeMap<String, HeldDays>,
    /// Requests with events of a leased day: they wait, unanswered, until it is released.
    held: Vec<Pending>,
    config: GroupCommitConfig,
}

/// How often requests held back by a replay's lease are tried again.
const HOLD_RETRY: Duration = Duration::from_millis(250);

/// How long the writer waits for requests before it retries visitors left to repair by a
/// failed insert.
const REPAIR_RETRY: Duration = Duration::from_secs(1);

impl Writer {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Pending>) {
        loop {
            let repairs = self.sessions.values().any(|l| l.pending_repairs() > 0);
            let first = if !self.held.is_empty() {
                match tokio::time::timeout(HOLD_RETRY, rx.recv()).await {
                    Ok(Some(first)) => Some(first),
                    // Timed out, or every handle is gone: the held requests still get stored.
                    Ok(None) | Err(_) => {
                        if rx.is_closed() {
                            tokio::time::sleep(HOLD_RETRY).await;
                        }
                        let held = std::mem::take(&mut self.held);
                        self.commit(held).await;
                        continue;
                    }
                }
            } else if repairs {
                match tokio::time::timeout(REPAIR_RETRY, rx.recv()).await {
                    Ok(first) => first,
                    Err(_) => {
                        self.repair().await;
                        continue;
                    }
                }
            } else {
                rx.recv().await
            };
            let Some(first) = first else { break };
            let deadline = first.arrived + self.config.max_wait;
            let mut count = first.events.len();
            let mut batch = vec![first];
            while count < self.config.max_events {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(p)) => {
                        count += p.events.len();
                        batch.push(p);
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            // Requests held back by a lease go with the next batch.
            let mut held = std::mem::take(&mut self.held);
            held.extend(batch);
            self.commit(held).await;
        }
        tracing::info!("group-commit writer stopped: every handle is gone");
    }

    /// Recomputes, with no new events, the visitors a failed insert left (their raw rows
    /// may have landed without their processed rows, and the client may never retry).
    async fn repair(&mut self) {
        let tenants: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, l)| l.pending_repairs() > 0)
            .map(|(t, _)| t.clone())
            .collect();
        for tenant in tenants {
            let span = tracing::info_span!("group_commit_repair", %tenant);
            if let Err(e) = self.store(&tenant, Vec::new()).instrument(span).await {
                tracing::warn!(%tenant, error = %e, "repair after a failed insert failed; retrying");
            }
        }
    }

    async fn commit(&mut self, batch: Vec<Pending>) {
        let mut by_tenant: BTreeMap<String, Vec<Pending>> = BTreeMap::new();
        for p in batch {
            by_tenant.entry(p.tenant.clone()).or_default().push(p);
        }
        for (tenant, pending) in by_tenant {
            let mut pending = match self.hold_leased(&tenant, pending).await {
                Ok(free) => free,
                Err((e, pending)) => {
                    tracing::error!(%tenant, error = %e, "leases not readable; batch not committed");
                    for p in pending {
                        let _ = p.reply.send(Err(Error::Unavailable(e.to_string())));
                    }
                    continue;
                }
            };
            if pending.is_empty() {
                continue;
            }
            let span = tracing::info_span!("group_commit", %tenant, requests = pending.len());
            // The span goes with the future: a guard held across `.await` would tag whatever
            // else runs on this thread meanwhile.
            let outcome = self.commit_tenant(&tenant, &mut pending).instrument(span).await;
            if let Err(e) = &outcome {
                tracing::error!(%tenant, error = %e, "batch not committed");
            }
            for p in pending {
                let answer = match &outcome {
                    Ok(()) => Ok(()),
                    Err(e) => Err(Error::Unavailable(e.to_string())),
                };
                // The requester may have gone away (client hung up); the events are stored anyway.
                let _ = p.reply.send(answer);
            }
        }
    }

    /// Keeps back (in `held`) the requests with an event on a day a replay holds, and
    /// returns the others. A day whose replay ended since this writer saw its lease was
    /// rewritten: the tenant's sessions are read again first (`LiveSessions::take_over`).
    async fn hold_leased(
        &mut self,
        tenant: &str,
        pending: Vec<Pending>,
    ) -> Result<Vec<Pending>, (sightline_core::Error, Vec<Pending>)> {
        let Some(leases) = self.leases.get_mut(tenant) else {
            return Ok(pending);
        };
        let days = days_of(pending.iter().flat_map(|p| p.events.iter()));
        let view = match leases.check(self.warehouse.as_ref(), &days).await {
            Ok(view) => view,
            Err(e) => return Err((e, pending)),
        };
        if !view.released.is_empty() {
            if let Some(live) = self.sessions.get_mut(tenant) {
                if let Err(e) = live.take_over(self.warehouse.as_ref()).await {
                    return Err((e, pending));
                }
            }
            tracing::info!(%tenant, days = ?view.released, "replays of live days ended: sessions read again");
            leases.acknowledge(&view.released);
        }
        if view.held.is_empty() {
            return Ok(pending);
        }
        let (held, free): (Vec<Pending>, Vec<Pending>) = pending
            .into_iter()
            .partition(|p| p.events.iter().any(|e| view.held.contains(&e.ts.date_naive())));
        tracing::debug!(%tenant, held = held.len(), days = ?view.held, "requests held back while replays hold their days");
        self.held.extend(held);
        Ok(free)
    }

    /// Stores the events of `pending` (which it takes: only the replies are needed after).
    async fn commit_tenant(&mut self, tenant: &str, pending: &mut [Pending]) -> Result<(), sightline_core::Error> {
        let entry = self.registry.get(tenant).ok_or_else(|| sightline_core::Error::Spec {
            source_name: tenant.into(),
            message: "unknown tenant".into(),
        })?;
        let db = entry.tenant.database();

        // Exactly once across client retries: drop events (site and id) already stored or
        // seen in this batch.
        let mut raws: Vec<RawEvent> = pending.iter_mut().flat_map(|p| std::mem::take(&mut p.events)).collect();
        let client_ids: HashSet<Uuid> = pending.iter().flat_map(|p| p.client_ids.iter().copied()).collect();
        let days = days_of(&raws);
        let suspects: Vec<(&str, Uuid)> = raws
            .iter()
            .map(RawEvent::key)
            .filter(|(_, id)| client_ids.contains(id))
            .collect();
        // Phase timings go to the debug log: they are what the collector bench is read with.
        let lookup_started = std::time::Instant::now();
        let stored = if suspects.is_empty() {
            HashSet::new()
        } else {
            ops::existing_event_ids(self.warehouse.as_ref(), &db, schema::RAW_TABLE, &suspects, &days).await?
        };
        let lookup_time = lookup_started.elapsed();
        let mut seen = HashSet::with_capacity(raws.len());
        raws.retain(|r| {
            !stored.contains(&(r.site_id.clone(), r.event_id)) && seen.insert((r.site_id.clone(), r.event_id))
        });
        if raws.is_empty() {
            return Ok(());
        }
        tracing::debug!(ids_ms = lookup_time.as_secs_f64() * 1e3, "retried ids looked up");
        self.store(tenant, raws).await
    }

    /// Processes `raws` (new to the tenant's tables; none when only repairing) and inserts
    /// them with their processed rows and any corrections, then publishes the watermarks.
    async fn store(&mut self, tenant: &str, raws: Vec<RawEvent>) -> Result<(), sightline_core::Error> {
        let entry = self.registry.get(tenant).ok_or_else(|| sightline_core::Error::Spec {
            source_name: tenant.into(),
            message: "unknown tenant".into(),
        })?;
        let db = entry.tenant.database();
        let live = self
            .sessions
            .get_mut(tenant)
            .ok_or_else(|| sightline_core::Error::Spec {
                source_name: tenant.into(),
                message: "no live sessions for this tenant".into(),
            })?;
        let process_started = std::time::Instant::now();
        let batch: Vec<&RawEvent> = raws.iter().collect();
        let processed = live.process(self.warehouse.as_ref(), &batch).await?;
        let process_time = process_started.elapsed();
        let insert_started = std::time::Instant::now();
        if let Err(e) = ops::insert_raw_and_events(self.warehouse.as_ref(), &db, &raws, &processed.rows).await {
            // The client will retry these events (a retry is deduplicated by id); the raw
            // insert may have landed without the processed one: the state forgets the
            // batch and recomputes its visitors from what is stored, with the next batch or
            // after `REPAIR_RETRY`.
            live.rollback(processed);
            return Err(e);
        }
        tracing::debug!(
            events = raws.len(),
            rows = processed.rows.len(),
            corrected = processed.corrected,
            recomputed = processed.recomputed,
            process_ms = process_time.as_secs_f64() * 1e3,
            insert_ms = insert_started.elapsed().as_secs_f64() * 1e3,
            "batch committed"
        );
        // Every site with a new or corrected row: its cached answers are stale.
        let mut newest: BTreeMap<&str, chrono::DateTime<Utc>> = BTreeMap::new();
        for e in processed.rows.iter().filter(|e| e.sign > 0) {
            let n = newest.entry(e.site_id.as_str()).or_insert(e.ts);
            *n = (*n).max(e.ts);
        }
        for (site, ts) in newest {
            self.watermarks.committed(tenant, site, ts);
        }
        Ok(())
    }
}
