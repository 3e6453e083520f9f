//! Storing a batch read from the log exactly once. The log redelivers whatever was read
//! but not committed when a loader died (or lost its partitions), and a collector retry can
//! put one event on the log twice. So before inserting, the loader asks the warehouse which
//! of the batch's *suspect* ids it holds already:
//!
//! - ids in `events_raw` are not inserted there again;
//! - of those, ids missing from `events` (a crash between the two inserts) are processed
//!   and inserted there; ids absent from `events_raw` cannot be in `events` (raw goes first).
//!
//! Suspects are every event of a message inside the redelivery window, plus the ids clients
//! chose themselves (only those can come back in a retry). The window comes from a
//! write-ahead intent: before storing a batch the loader records, per partition, the last
//! offset it is about to store (`ops::record_intents`); after a crash, messages up to the
//! recorded offset may be stored, messages beyond cannot be. Outside the window a batch
//! costs no lookup, which keeps catch-up after an outage as fast as steady state.
//!
//! This relies on one writer per partition at a time, which the consumer group gives. Why
//! not insert deduplication tokens: a token covers one exact block, but after a crash the
//! next batch starts at the committed offset and ends wherever the log happens to be, so a
//! redelivered block rarely repeats. Why not a collapsing engine: duplicates would reach
//! the materialized views and double the rollups until a merge that never fixes them.

use std::collections::HashSet;

use sightline_core::event::{days_of, RawEvent};
use sightline_core::schema;
use sightline_core::spec::Tenant;
use sightline_core::warehouse::live::LiveSessions;
use sightline_core::warehouse::{ops, Warehouse};
use uuid::Uuid;

/// What storing a batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// Rows new to `events_raw`.
    pub raw: usize,
    /// Rows new to `events` (more than `raw` after a crash between the two inserts).
    pub events: usize,
    /// Events that were stored already (redelivered or sent twice).
    pub duplicates: usize,
    /// Stored rows cancelled and replaced because a late event changed their visit.
    pub corrected: usize,
}

/// Stores `batch` (one tenant's, in log order) so that each event (site and id) is in
/// `events_raw` and in `events` exactly once, given that only ids in `suspects` can be stored
/// already. On error `sessions` holds what it held before (and recomputes the batch's
/// visitors with the retry), so the caller retries the same batch.
pub async fn store_batch(
    wh: &dyn Warehouse,
    tenant: &Tenant,
    sessions: &mut LiveSessions,
    batch: &[RawEvent],
    suspects: &HashSet<Uuid>,
) -> Result<Stored, sightline_core::Error> {
    let total = batch.len();
    let mut seen = HashSet::with_capacity(total);
    let raws: Vec<&RawEvent> = batch.iter().filter(|r| seen.insert(r.key())).collect();
    if raws.is_empty() {
        return Ok(Stored::default());
    }
    let db = tenant.database();
    let days = days_of(raws.iter().copied());
    let keys: Vec<(&str, Uuid)> = raws
        .iter()
        .map(|r| r.key())
        .filter(|(_, id)| suspects.contains(id))
        .collect();
    // Phase timings go to the debug log: they are what the loader bench is read with.
    let lookup_started = std::time::Instant::now();
    let in_raw = if keys.is_empty() {
        HashSet::new()
    } else {
        ops::existing_event_ids(wh, &db, schema::RAW_TABLE, &keys, &days).await?
    };
    let in_events = if in_raw.is_empty() {
        HashSet::new()
    } else {
        let suspects: Vec<(&str, Uuid)> = in_raw.iter().map(|(site, id)| (site.as_str(), *id)).collect();
        ops::existing_event_ids(wh, &db, schema::EVENTS_TABLE, &suspects, &days).await?
    };
    let stored = |set: &HashSet<(String, Uuid)>, r: &RawEvent| set.contains(&(r.site_id.clone(), r.event_id));

    let lookup_time = lookup_started.elapsed();
    let process_started = std::time::Instant::now();
    let to_process: Vec<&RawEvent> = raws.iter().copied().filter(|r| !stored(&in_events, r)).collect();
    let processed = sessions.process(wh, &to_process).await?;
    let new_raw: Vec<&RawEvent> = raws.into_iter().filter(|r| !stored(&in_raw, r)).collect();
    let process_time = process_started.elapsed();
    let insert_started = std::time::Instant::now();
    if let Err(e) = ops::insert_raw_and_events(wh, &db, &new_raw, &processed.rows).await {
        sessions.rollback(processed);
        return Err(e);
    }
    tracing::debug!(
        events = total,
        ids_ms = lookup_time.as_secs_f64() * 1e3,
        process_ms = process_time.as_secs_f64() * 1e3,
        insert_ms = insert_started.elapsed().as_secs_f64() * 1e3,
        corrected = processed.corrected,
        recomputed = processed.recomputed,
        "batch stored"
    );
    Ok(Stored {
        raw: new_raw.len(),
        events: to_process.len(),
        duplicates: total - new_raw.len(),
        corrected: processed.corrected,
    })
}
