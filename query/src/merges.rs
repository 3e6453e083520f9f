//! Merged sealed ranges: the visitor states (and sums) of a range's sealed part, merged once
//! per dimension value and kept between queries (docs/storage.md, "Merged sealed ranges").
//!
//! A breakdown or total over a long range spends its time merging visitor states, not
//! reading rows (BENCHMARKS.md: 90 days of a busy site's pages, ~60 of ~65 ms). Most of
//! those states are the sealed days' (the monthly and daily tiers), and whatever changes
//! them (a seal, a replay, a rebuild, the retention TTL, a hand-made repair) gives those
//! tables new parts, which changes `StorageState::generation` (a fingerprint of the tiers'
//! parts read from the engine with the state). So the first query of a range merges its sealed
//! part into the tenant's `sealed_merges` table (one row per value, under a random fill
//! id), and every later query of the same sealed part with the same generation reads those
//! rows instead: one state per value, plus the quarter-hour tier's days after the sealed
//! ones, which stay live. The answer is the same: a visitor state merged from merges is the
//! merge of the whole, whatever the order (`uniqCombined` is order-independent), and sums
//! add up alike.
//!
//! What this process remembers is only which fill holds which sealed part: the key is the
//! head's SQL with its parameter values, the tiers' fingerprint and their timezones; with
//! no fingerprint (it could not be read), nothing is merged. A fill is used for an hour at
//! most (the table drops its rows a day after they were written), which bounds how many
//! this process remembers.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use moka::future::Cache;
use sightline_core::warehouse::Params;

use crate::error::QueryError;
use crate::execute::{Statements, Storage};
use crate::plan::{MergedHead, Plan, SealedHead, MERGED_HEAD_MISSING};

/// How long a fill answers for its sealed part, at most.
pub const FILL_USED_FOR: Duration = Duration::from_secs(3600);
/// Sealed parts remembered per process (each a short key: a few hundred bytes).
pub const MAX_FILLS: u64 = 20_000;
/// After a fill failed for a database (e.g. a read-only user on a ClickHouse server), how
/// long its queries run without merging first.
const PAUSE_AFTER_FAILURE: Duration = Duration::from_secs(600);

/// The fills this process made, by sealed part.
pub struct SealedMerges {
    fills: Cache<String, MergedHead>,
    /// Databases whose last fill failed, and when.
    failed: Mutex<HashMap<String, Instant>>,
}

impl Default for SealedMerges {
    fn default() -> Self {
        Self::new(MAX_FILLS, FILL_USED_FOR)
    }
}

impl SealedMerges {
    pub fn new(max_fills: u64, used_for: Duration) -> Self {
        Self {
            fills: Cache::builder().max_capacity(max_fills).time_to_live(used_for).build(),
            failed: Mutex::new(HashMap::new()),
        }
    }

    /// `plan` with its sealed part read from a fill (made now when there is none for it
    /// yet, once however many queries ask at once), and the key to [`Self::forget`] it by;
    /// `None` when the plan has no sealed part to merge or the fill failed (the caller runs
    /// `plan` as it is).
    pub(crate) async fn merged(&self, run: Statements<'_>, storage: &Storage, plan: &Plan) -> Option<(Plan, String)> {
        let head = plan.sealed_head()?;
        let generation = storage.state.generation.as_deref()?;
        let db = head.table.clone();
        if self.paused(&db) {
            return None;
        }
        let key = format!(
            "{}\u{0}generation={generation}\u{0}zones={}",
            head.key, storage.state.daily_timezones
        );
        match self.fills.try_get_with(key.clone(), fill(run, &head)).await {
            Ok(merged) => Some((plan.with_merged_head(merged), key)),
            Err(e) => {
                tracing::warn!(table = %db, error = %e, "could not merge a sealed range; answering from the tiers");
                self.lock_failed().insert(db, Instant::now());
                None
            }
        }
    }

    /// Drops the fill of `key` (its rows are gone): the next query makes another.
    pub async fn forget(&self, key: &str) {
        self.fills.invalidate(key).await;
    }

    /// Whether an error of a statement that read a fill means its rows are gone.
    pub fn fill_missing(error: &QueryError) -> bool {
        format!("{error:?}").contains(MERGED_HEAD_MISSING)
    }

    /// How many sealed parts this process holds fills for (for tests and metrics).
    pub async fn fills(&self) -> u64 {
        self.fills.run_pending_tasks().await;
        self.fills.entry_count()
    }

    fn paused(&self, db: &str) -> bool {
        let mut failed = self.lock_failed();
        match failed.get(db) {
            Some(at) if at.elapsed() < PAUSE_AFTER_FAILURE => true,
            Some(_) => {
                failed.remove(db);
                false
            }
            None => false,
        }
    }

    fn lock_failed(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.failed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Merges `head` into a new fill and counts its rows.
async fn fill(run: Statements<'_>, head: &SealedHead) -> Result<MergedHead, QueryError> {
    // Drawn at random from 2^64: two fills never share an id, in this process or another.
    let fill = uuid::Uuid::new_v4().as_u64_pair().0;
    let mut params = head.params.clone();
    params.push("merge_fill", fill);
    run.execute(&head.fill_sql, &params).await?;
    let rows = run
        .select(
            &format!(
                "SELECT count() AS n FROM {} WHERE fill = {{merge_fill:UInt64}}",
                head.table
            ),
            &Params::new().bind("merge_fill", fill),
        )
        .await?
        .first()
        .and_then(|r| r["n"].as_u64())
        .unwrap_or(0);
    Ok(MergedHead { fill, rows })
}
