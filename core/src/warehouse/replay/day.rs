//! One day of a run: lease, staging, stream, verify, swap, catch-up, tiers, checkpoint.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{Days, NaiveDate};
use serde_json::Value;

use super::lease::{self, Lease};
use super::stream::Streamer;
use super::{compare, midnight, DayReport, Seed, Shared};
use crate::event::ch_datetime;
use crate::processor::session::SessionState;
use crate::schema::{self, Tier, EVENTS_TABLE, EVENT_COLUMNS, RAW_TABLE};
use crate::warehouse::native::EventBlock;
use crate::warehouse::{live, ops, rowbinary, tiers, InsertFormat, Params, Warehouse};
use crate::{Error, Result};

/// Raw rows read per page.
const PAGE_ROWS: usize = 50_000;
/// Processed rows per insert into staging: a part each (about 170 bytes a row in Native).
const INSERT_ROWS: usize = 250_000;

/// Seconds per phase of a day's replay, logged at debug level (`replay-bench` prints them;
/// BENCHMARKS.md, "Replay throughput").
#[derive(Default)]
struct Phases(Vec<(&'static str, f64)>);

impl Phases {
    fn add(&mut self, phase: &'static str, since: std::time::Instant) -> std::time::Instant {
        let now = std::time::Instant::now();
        self.0.push((phase, (now - since).as_secs_f64()));
        now
    }

    fn log(&self, day: NaiveDate) {
        let phases: Vec<String> = self.0.iter().map(|(p, s)| format!("{p} {s:.2}s")).collect();
        tracing::debug!(%day, phases = %phases.join(", "), "day's phases");
    }
}

/// Replays `day` under its lease (none in a dry run: it changes nothing, and writers would
/// hold the day's events back for nothing), renewing the lease while it works.
pub(super) async fn replay_day(shared: &Shared<'_>, day: NaiveDate) -> Result<DayReport> {
    let started = std::time::Instant::now();
    let outcome = async {
        let lease = if shared.request.dry_run {
            None
        } else {
            Some(Lease::acquire(shared.wh, &shared.db, day, &shared.run_id, &shared.request.purpose).await?)
        };
        let work = work(shared, day, started);
        tokio::pin!(work);
        let mut renew = tokio::time::interval(lease::RENEW_EVERY);
        renew.tick().await;
        let outcome = loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                _ = renew.tick() => {
                    if let Some(lease) = &lease {
                        if let Err(e) = lease.renew(shared.wh).await {
                            tracing::warn!(%day, error = %e, "lease renewal failed; retrying at the next tick");
                        }
                    }
                }
            }
        };
        if let Some(lease) = &lease {
            if let Err(e) = lease.release(shared.wh).await {
                tracing::warn!(%day, error = %e, "lease not released; it expires by itself");
            }
        }
        outcome
    }
    .await;
    match outcome {
        Ok(report) => {
            tracing::info!(run = %shared.run_id, %day, raw_rows = report.raw_rows, caught_up = report.caught_up,
                seconds = report.seconds, "day replayed");
            Ok(report)
        }
        Err(e) => {
            // The next day of the run may be waiting for this one's visits at midnight.
            shared.publish_seed(day, Some(Err(e.to_string())));
            Err(e)
        }
    }
}

fn day_number(day: NaiveDate) -> u32 {
    day.format("%Y%m%d").to_string().parse().expect("eight digits")
}

async fn count(wh: &dyn Warehouse, sql: &str, params: &Params) -> Result<u64> {
    wh.select(sql, params)
        .await?
        .first()
        .and_then(|r| r["n"].as_u64())
        .ok_or_else(|| Error::Decode(format!("no count from {sql}")))
}

/// A forced replay of a day that may still receive events (writers see the lease within
/// their notice period, and commits already under way land meanwhile).
fn live_day(shared: &Shared<'_>, day: NaiveDate) -> bool {
    let request = &shared.request;
    request.force && day > shared.sealed_through && request.beside_writers && !request.dry_run
}

/// A quarter-hour tier table's staging: a table like it, fed by a view over the day's
/// staged events with the live view's own SQL, so the tier is built while the rows are
/// inserted (the engine aggregates each inserted block as the processor makes the next).
struct TierStage {
    table: &'static str,
    staged: String,
    view: String,
}

async fn work(shared: &Shared<'_>, day: NaiveDate, started: std::time::Instant) -> Result<DayReport> {
    let (wh, db) = (shared.wh, shared.db.as_str());
    let none = Params::new();
    let run = shared.run_id.rsplit('-').next().unwrap_or_default();
    let staged = format!("{EVENTS_TABLE}_replay_{run}_{}", day_number(day));
    wh.execute(
        &schema::events_table_ddl(db, &staged, shared.request.tenant.spec.retention.raw_days),
        &none,
    )
    .await?;
    // A dry run swaps nothing; on a live day the tier is rebuilt after the catch-up.
    let tier_stages: Vec<TierStage> = if shared.request.dry_run || live_day(shared, day) {
        Vec::new()
    } else {
        [false, true]
            .into_iter()
            .map(|dims| {
                let table = Tier::QuarterHour.table(dims);
                let staged = format!("{table}_stage_{}_{run}", day_number(day));
                let view = format!("{staged}_mv");
                TierStage { table, staged, view }
            })
            .collect()
    };
    let built = async {
        for (dims, stage) in [false, true].into_iter().zip(&tier_stages) {
            let rollup_days = shared.request.tenant.spec.retention.rollup_days;
            wh.execute(
                &schema::tier_table_ddl(db, &stage.staged, Tier::QuarterHour, dims, rollup_days),
                &none,
            )
            .await?;
            wh.execute(
                &format!(
                    "CREATE MATERIALIZED VIEW {db}.{} TO {db}.{} AS {}",
                    stage.view,
                    stage.staged,
                    schema::quarter_hour_select_from(&format!("{db}.{staged}"), dims)
                ),
                &none,
            )
            .await?;
        }
        build(shared, day, &staged, &tier_stages).await
    }
    .await;
    let mut dropped = Ok(());
    for stage in &tier_stages {
        for sql in [
            format!("DROP VIEW IF EXISTS {db}.{}", stage.view),
            format!("DROP TABLE IF EXISTS {db}.{}", stage.staged),
        ] {
            dropped = dropped.and(wh.execute(&sql, &none).await);
        }
    }
    dropped = dropped.and(wh.execute(&format!("DROP TABLE IF EXISTS {db}.{staged}"), &none).await);
    let mut report = built?;
    dropped?;
    report.seconds = started.elapsed().as_secs_f64();
    if report.swapped || shared.request.dry_run {
        shared.finish(&report).await?;
    }
    Ok(report)
}

/// Stages, verifies and (unless a dry run) swaps the day, then catches up and rebuilds its
/// quarter-hour tier.
async fn build(shared: &Shared<'_>, day: NaiveDate, staged: &str, tier_stages: &[TierStage]) -> Result<DayReport> {
    let (wh, db, request) = (shared.wh, shared.db.as_str(), &shared.request);
    let number = day_number(day);
    let sites = &shared.sites;
    // A forced day may still receive events: writers see the lease within their notice
    // period, and commits already under way land meanwhile (they are then read below).
    let live_day = live_day(shared, day);
    if live_day {
        tokio::time::sleep(lease::WRITER_NOTICE * 2 + std::time::Duration::from_secs(1)).await;
    }
    let mut phases = Phases::default();
    let mut at = std::time::Instant::now();
    let processing_before = compare::identities(wh, db, number, sites).await?;
    at = phases.add("identities", at);

    // Other sites' rows, as they are.
    let mut copied = 0;
    if let Some(others) = sites.others() {
        wh.execute(
            &format!(
                "INSERT INTO {db}.{staged} ({EVENT_COLUMNS}) SELECT {EVENT_COLUMNS} FROM {db}.{EVENTS_TABLE} \
                 WHERE toYYYYMMDD(ts) = {number} AND {others}"
            ),
            &sites.params(),
        )
        .await?;
        copied = count(
            wh,
            &format!("SELECT count() AS n FROM {db}.{staged} WHERE {others}"),
            &sites.params(),
        )
        .await?;
        shared.report_progress(0, copied);
    }

    at = phases.add("copy other sites", at);
    let raw_rows = stream(shared, day, staged).await?;
    at = phases.add("stream", at);

    // Verify: one staged row per raw row read, and events_raw still holds what was read.
    let condition = sites.condition();
    let staged_rows = count(
        wh,
        &format!("SELECT count() AS n FROM {db}.{staged} WHERE {condition}"),
        &sites.params(),
    )
    .await?;
    if staged_rows != raw_rows {
        return Err(Error::ReplayMismatch {
            day,
            message: format!("staged {staged_rows} rows for {raw_rows} raw rows read"),
        });
    }
    let raw_now = count(
        wh,
        &format!("SELECT count() AS n FROM {db}.{RAW_TABLE} WHERE toYYYYMMDD(ts) = {number} AND {condition}"),
        &sites.params(),
    )
    .await?;
    // On a forced day writers may have added rows since (processed after the swap).
    if raw_now < raw_rows || (raw_now > raw_rows && !live_day) {
        return Err(Error::ReplayMismatch {
            day,
            message: format!(
                "events_raw holds {raw_now} rows of the day now, {raw_rows} were read: something changed a day no writer may touch"
            ),
        });
    }
    if let Some(others) = sites.others() {
        let now = count(
            wh,
            &format!("SELECT count() AS n FROM {db}.{EVENTS_TABLE} WHERE toYYYYMMDD(ts) = {number} AND {others}"),
            &sites.params(),
        )
        .await?;
        if now != copied && !live_day {
            return Err(Error::ReplayMismatch {
                day,
                message: format!("other sites had {copied} rows when copied and {now} at swap"),
            });
        }
    }
    let mut report = DayReport {
        day,
        raw_rows,
        copied_rows: copied,
        caught_up: 0,
        processing_before,
        processing_after: request.identity(),
        swapped: false,
        comparison: None,
        seconds: 0.0,
    };
    at = phases.add("verify", at);
    if request.dry_run {
        report.comparison = Some(compare::compare(wh, db, staged, number, sites).await?);
        phases.add("compare", at);
        phases.log(day);
        return Ok(report);
    }

    ops::swap_partition(wh, db, EVENTS_TABLE, staged, &number.to_string()).await?;
    report.swapped = true;
    for stage in tier_stages {
        ops::swap_partition(wh, db, stage.table, &stage.staged, &number.to_string()).await?;
    }
    at = phases.add("swap", at);
    if live_day {
        report.caught_up = catch_up(shared, day).await?;
        at = phases.add("catch up", at);
    }
    // Staged with events, the tier is checked against them; a live day's, or one that
    // disagrees, is rebuilt from `events` (and checked again).
    if tier_stages.is_empty() || !tiers::quarter_hour_mismatches(wh, db, day, day).await?.is_empty() {
        if !tier_stages.is_empty() {
            tracing::warn!(%day, "the staged quarter-hour tier disagrees with events; rebuilding it");
        }
        tiers::rebuild_quarter_hour_day(wh, &request.tenant, day).await?;
    }
    phases.add("quarter-hour tier", at);
    phases.log(day);
    Ok(report)
}

/// Raw rows of the day with no row in `events` (a writer's insert that slipped in beside
/// the replay, its processed rows replaced by the swap or never written): processed with
/// their visitors as late events are (`live::reconcile_visitors`). Returns how many.
async fn catch_up(shared: &Shared<'_>, day: NaiveDate) -> Result<u64> {
    let (wh, db) = (shared.wh, shared.db.as_str());
    let number = day_number(day);
    let rows = wh
        .select(
            &format!(
                "SELECT site_id, visitor_id, prev_day_visitor_id, toString(ts) AS at FROM {db}.{RAW_TABLE} \
                 WHERE toYYYYMMDD(ts) = {number} AND (site_id, event_id) NOT IN \
                   (SELECT site_id, event_id FROM {db}.{EVENTS_TABLE} WHERE toYYYYMMDD(ts) = {number})"
            ),
            &Params::new(),
        )
        .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut keys = Vec::with_capacity(rows.len() * 2);
    for r in &rows {
        let site = r["site_id"].as_str().unwrap_or_default().to_string();
        let ts =
            ch_datetime::parse(r["at"].as_str().unwrap_or_default()).map_err(|e| Error::Decode(format!("ts: {e}")))?;
        for key in ["visitor_id", "prev_day_visitor_id"] {
            if let Some(v) = r[key].as_u64().filter(|v| *v != 0) {
                keys.push((site.clone(), v, ts));
            }
        }
    }
    let done = live::reconcile_visitors(wh, &shared.request.tenant, shared.request.processor.as_ref(), &keys).await?;
    tracing::info!(%day, raw = rows.len(), rows = done.rows, cancelled = done.cancelled, "writers' rows caught up after the swap");
    Ok(rows.len() as u64)
}

/// Seconds each stage of `stream` was busy (they overlap), for the debug log.
#[derive(Default)]
struct Busy {
    fetch: AtomicU64,
    process: AtomicU64,
    insert: AtomicU64,
}

impl Busy {
    fn add(counter: &AtomicU64, since: std::time::Instant) {
        counter.fetch_add(since.elapsed().as_micros() as u64, Ordering::Relaxed);
    }

    fn seconds(counter: &AtomicU64) -> f64 {
        counter.load(Ordering::Relaxed) as f64 / 1e6
    }
}

/// Runs CPU-bound work off the async threads.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Engine(format!("replay task failed: {e}")))?
}

/// A block's bytes and rows, leaving the block empty.
fn take(block: &mut EventBlock) -> (Vec<u8>, u64) {
    let rows = block.len() as u64;
    (block.take(), rows)
}

/// Streams the replayed sites' raw rows of the day through the processor into `staged`;
/// returns the rows read. Pages are ranges of visitor ids (so a visitor is never split, and
/// each page is a range of the primary key). Three loops run at once, joined by bounded
/// queues: fetching pages, processing them (on a blocking thread) into Native blocks of
/// `INSERT_ROWS` rows, and inserting the blocks; so the engine parses no rows (`native`)
/// and writes few, large parts.
async fn stream(shared: &Shared<'_>, day: NaiveDate, staged: &str) -> Result<u64> {
    let (wh, db, request) = (shared.wh, shared.db.as_str(), &shared.request);
    let table = format!("{db}.{staged}");
    let ranges = pages(shared, day).await?;
    let (page_tx, mut page_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(2);
    let (block_tx, mut block_rx) = tokio::sync::mpsc::channel::<(Vec<u8>, u64)>(1);
    let busy = Busy::default();

    let fetching = async {
        for range in ranges {
            let t = std::time::Instant::now();
            let page = fetch(shared, day, range).await?;
            Busy::add(&busy.fetch, t);
            if page_tx.send(page).await.is_err() {
                break; // processing stopped: its error is the run's
            }
        }
        drop(page_tx);
        Ok::<_, Error>(())
    };
    let processing = async {
        let mut streamer = Streamer::new(request.processor.clone(), request.config());
        let mut block = EventBlock::default();
        let mut read = 0u64;
        while let Some(page) = page_rx.recv().await {
            let t = std::time::Instant::now();
            let full;
            let n;
            (streamer, block, full, n) = blocking(move || {
                let raws = rowbinary::decode_raw_events(&page)?;
                let n = raws.len() as u64;
                streamer.feed(raws, &mut block);
                let full = (block.len() >= INSERT_ROWS).then(|| take(&mut block));
                Ok((streamer, block, full, n))
            })
            .await?;
            Busy::add(&busy.process, t);
            read += n;
            shared.report_progress(n, 0);
            if let Some(full) = full {
                if block_tx.send(full).await.is_err() {
                    return Ok(read); // inserting stopped: its error is the run's
                }
            }
        }
        // Visitors continuing a visit from the day before: with the visits open at midnight.
        let deferred = streamer.deferred_events();
        let seed = shared.seed(day).await?;
        let t = std::time::Instant::now();
        let last = blocking(move || {
            streamer.finish(&mut block);
            streamer.process_deferred(&seed, &mut block);
            Ok(take(&mut block))
        })
        .await?;
        Busy::add(&busy.process, t);
        tracing::debug!(%day, read, deferred, "day processed");
        let _ = block_tx.send(last).await;
        drop(block_tx);
        Ok::<_, Error>(read)
    };
    let inserting = async {
        while let Some((bytes, rows)) = block_rx.recv().await {
            let t = std::time::Instant::now();
            if rows > 0 {
                wh.insert(&table, EVENT_COLUMNS, InsertFormat::Native, bytes).await?;
            }
            Busy::add(&busy.insert, t);
            shared.report_progress(0, rows);
        }
        Ok::<_, Error>(())
    };
    let ((), read, ()) = tokio::try_join!(fetching, processing, inserting)?;
    tracing::debug!(%day, fetch = Busy::seconds(&busy.fetch), process = Busy::seconds(&busy.process),
        insert = Busy::seconds(&busy.insert), "day staged (seconds each stage was busy; they overlap)");
    // The visits open at this day's end, for the next day of the run.
    if shared.seeds.contains_key(&day) {
        let mut open = SessionState::default();
        ops::restore_sessions_from(wh, db, staged, midnight(day + Days::new(1)), &mut open).await?;
        let seed: Seed = Some(Ok(Arc::new(open)));
        shared.publish_seed(day, seed);
    }
    Ok(read)
}

/// A page: visitor ids from `.0` up to `.1` (excluded; none: to the end).
type Range = (u64, Option<u64>);

fn day_bounds(shared: &Shared<'_>, day: NaiveDate) -> Params {
    shared
        .sites
        .params()
        .bind("start", ch_datetime::format(&midnight(day)))
        .bind("end", ch_datetime::format(&midnight(day + Days::new(1))))
}

const IN_DAY: &str = "ts >= {start:DateTime64(3, 'UTC')} AND ts < {end:DateTime64(3, 'UTC')}";

/// Visitor-id ranges holding about `PAGE_ROWS` of the day's raw rows each (quantiles of
/// the visitor ids; a visitor with more rows than that is one page all the same).
async fn pages(shared: &Shared<'_>, day: NaiveDate) -> Result<Vec<Range>> {
    let (wh, db) = (shared.wh, shared.db.as_str());
    let condition = shared.sites.condition();
    let rows = count(
        wh,
        &format!("SELECT count() AS n FROM {db}.{RAW_TABLE} WHERE {IN_DAY} AND {condition}"),
        &day_bounds(shared, day),
    )
    .await?;
    let pages = rows as usize / PAGE_ROWS + 1;
    if pages == 1 {
        return Ok(vec![(0, None)]);
    }
    // Levels are numbers this code makes, not input.
    let levels: Vec<String> = (1..pages).map(|i| format!("{:.6}", i as f64 / pages as f64)).collect();
    let quantiles = wh
        .select(
            &format!(
                "SELECT quantilesExact({})(visitor_id) AS q FROM {db}.{RAW_TABLE} WHERE {IN_DAY} AND {condition}",
                levels.join(", ")
            ),
            &day_bounds(shared, day),
        )
        .await?;
    let mut bounds: Vec<u64> = quantiles
        .first()
        .and_then(|r| r["q"].as_array())
        .ok_or_else(|| Error::Decode("visitor quantiles".into()))?
        .iter()
        .filter_map(Value::as_u64)
        .filter(|b| *b > 0)
        .collect();
    bounds.sort_unstable();
    bounds.dedup();
    let mut ranges = Vec::with_capacity(bounds.len() + 1);
    let mut low = 0;
    for b in bounds {
        ranges.push((low, Some(b)));
        low = b;
    }
    ranges.push((low, None));
    Ok(ranges)
}

/// One page of the day's raw rows (RowBinary), in `(site, visitor, ts, event_id)` order.
async fn fetch(shared: &Shared<'_>, day: NaiveDate, (low, high): Range) -> Result<Vec<u8>> {
    let mut params = day_bounds(shared, day).bind("low", low);
    let upper = match high {
        Some(high) => {
            params.push("high", high);
            " AND visitor_id < {high:UInt64}"
        }
        None => "",
    };
    let sql = format!(
        "SELECT {} FROM {}.{RAW_TABLE} WHERE {IN_DAY} AND {} AND visitor_id >= {{low:UInt64}}{upper} \
         ORDER BY site_id, visitor_id, ts, event_id",
        schema::RAW_COLUMNS,
        shared.db,
        shared.sites.condition()
    );
    shared.wh.select_row_binary(&sql, &params).await
}
