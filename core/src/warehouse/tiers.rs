//! The rollup tiers below `events` (`schema::Tier`): rebuilding them one unit of swap at a
//! time, sealing days into the daily and monthly tiers, and moving a tenant from the hourly
//! layout of earlier releases onto the tiers. docs/storage.md tells the whole story; in short:
//!
//! - Quarter-hour tier: unit of swap, one UTC day. A rebuild reads that day of `events`
//!   into staging tables with the views' own SELECT and `REPLACE PARTITION`s it into both
//!   tables, then checks the day against `events` and does it again if a concurrent insert
//!   slipped between the read and the swap.
//! - Daily tier: unit of swap, one month of local days. It holds sealed days only (days no
//!   event can reach any more), so no live insert ever races a rebuild; the planner reads
//!   it up to `StorageState::daily_through` and the quarter-hour tier after that. A rebuild
//!   merges the quarter-hour states of each site's local days, one statement per timezone.
//! - Monthly tier: unit of swap, one local month. It holds months whose every day is in the
//!   daily tier (through `StorageState::monthly_through`) and the month in progress to the
//!   daily tier's last day, built from that month's daily rows and keyed by the last day
//!   they cover, and is rebuilt after the daily tier's month whenever that is.
//!
//! Every rebuild is deterministic, so running one twice, or in two processes at once,
//! leaves the same rows.

use chrono::{DateTime, Datelike, Days, Duration, Months, NaiveDate, Utc};
use serde_json::Value;

use super::{ops, Params, Warehouse};
use crate::ddl::Form;
use crate::event::ch_datetime;
use crate::schema::{self, legacy, Tier, EVENTS_TABLE, STATE_TABLE};
use crate::spec::Tenant;
use crate::{Error, Result};

/// Which tables answer queries: the hourly rollups of earlier releases until every day has
/// been rebuilt into the tiers, then the tiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Hourly,
    Tiers,
}

/// What the planner and the sealer need to know about a tenant's storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageState {
    pub layout: Layout,
    /// The last local day the daily tier holds for every site; `None` before the first seal.
    pub daily_through: Option<NaiveDate>,
    /// The timezones the daily and monthly tiers were built with (`timezone_fingerprint`):
    /// they answer only while the spec still says the same.
    pub daily_timezones: String,
    /// The last day of the last whole local month the monthly tier holds for every site (a
    /// month is there whole once all its days are in the daily tier; the month after it is
    /// there to date, through `daily_through`, with `through = daily_through`); `None`
    /// before the monthly tier's first seal (a database sealed by a release without it,
    /// until its next seal).
    pub monthly_through: Option<NaiveDate>,
    /// A fingerprint of the daily and monthly tiers' rows as the engine holds them when the
    /// state is read (`tiers_fingerprint`: their tables and active parts). Whatever changes
    /// those rows (a seal, a replay's refresh, any rebuild, the retention TTL, a release
    /// that knows nothing of it, a hand-made repair) changes it, whoever does it and
    /// whatever the clocks say, so whatever was computed from the rows under one
    /// fingerprint is current while it stays. The query service keys the merged states of
    /// sealed ranges it keeps by it (`sightline_query::merges`). `None` when it could not be
    /// read (then nothing is kept).
    pub generation: Option<String>,
}

impl Default for StorageState {
    fn default() -> Self {
        Self {
            layout: Layout::Hourly,
            daily_through: None,
            daily_timezones: String::new(),
            monthly_through: None,
            generation: None,
        }
    }
}

const LAYOUT: &str = "layout";
const DAILY_THROUGH: &str = "daily_through";
const MONTHLY_THROUGH: &str = "monthly_through";
const DAILY_TIMEZONES: &str = "daily_timezones";
const RECENT_MIGRATED: &str = "layout_recent_migrated";
const BACKFILLED_THROUGH: &str = "layout_backfilled_through";

/// How many times a quarter-hour day is rebuilt before giving up, when concurrent inserts
/// keep slipping between the read and the swap.
const REBUILD_ATTEMPTS: usize = 5;

pub(crate) async fn state_values(wh: &dyn Warehouse, db: &str) -> Result<std::collections::HashMap<String, String>> {
    let rows = wh
        .select(
            &format!("SELECT key, argMax(value, version) AS value FROM {db}.{STATE_TABLE} GROUP BY key"),
            &Params::new(),
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| Some((r["key"].as_str()?.to_string(), r["value"].as_str()?.to_string())))
        .collect())
}

/// The tenant's storage state (defaults for a database the tiers have not reached yet).
pub async fn read_state(wh: &dyn Warehouse, db: &str) -> Result<StorageState> {
    let values = state_values(wh, db).await?;
    let date = |key: &str| {
        values
            .get(key)
            .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
    };
    Ok(StorageState {
        layout: match values.get(LAYOUT).map(String::as_str) {
            Some("tiers") => Layout::Tiers,
            _ => Layout::Hourly,
        },
        daily_through: date(DAILY_THROUGH),
        daily_timezones: values.get(DAILY_TIMEZONES).cloned().unwrap_or_default(),
        monthly_through: date(MONTHLY_THROUGH),
        generation: match tiers_fingerprint(wh, db).await {
            Ok(fingerprint) => Some(fingerprint),
            Err(e) => {
                tracing::debug!(%db, error = %e, "the sealed tiers' parts could not be read; nothing merged is kept");
                None
            }
        },
    })
}

/// `StorageState::generation`: a hash of the daily and monthly tiers' active parts, each by
/// its path (which holds the table's UUID in an Atomic database, the default of both
/// engines: a table dropped and made again is another table) and modification time. The
/// engine gives every change to a table's rows new parts (an insert, `REPLACE`/`DROP
/// PARTITION`, a TTL or merge, a mutation), and block numbers only grow, so a set of parts
/// never comes back once replaced: a fingerprint read after a change differs from every
/// one read before it. Read from the engine itself, not from a value the writers keep, so
/// that it holds for every process and every writer (one whose clock runs ahead, one that
/// fails between its swap and a write, one of a release that does not write it).
/// Background merges change it too (with no change to the rows): that only costs a merge
/// made again. ~2 ms on the 10M-event bench database (48 parts).
pub async fn tiers_fingerprint(wh: &dyn Warehouse, db: &str) -> Result<String> {
    let tables: Vec<String> = [Tier::Daily, Tier::Monthly]
        .into_iter()
        .flat_map(|tier| [tier.table(false).to_string(), tier.table(true).to_string()])
        .collect();
    let rows = wh
        .select(
            "SELECT toString(cityHash64(arraySort(groupArray(concat(path, '/', toString(modification_time)))))) \
               AS fingerprint \
             FROM system.parts WHERE database = {db:String} AND table IN {tables:Array(String)} AND active",
            &Params::new()
                .bind("db", db)
                .bind("tables", Params::array_of_strings(&tables)),
        )
        .await?;
    rows.first()
        .and_then(|r| r["fingerprint"].as_str())
        .map(str::to_string)
        .ok_or_else(|| Error::Decode(format!("no fingerprint of the tiers of {db}")))
}

pub(crate) async fn write_state(wh: &dyn Warehouse, db: &str, key: &str, value: &str) -> Result<()> {
    // Versions order writes: the newest one wins (microseconds since the epoch).
    let version = Utc::now().timestamp_micros();
    wh.execute(
        &format!(
            "INSERT INTO {db}.{STATE_TABLE} (key, value, version) VALUES ({{k:String}}, {{v:String}}, {{n:UInt64}})"
        ),
        &Params::new().bind("k", key).bind("v", value).bind("n", version),
    )
    .await
}

/// The last UTC day no event can reach any more: intake refuses events older than 72 hours
/// and more than 5 minutes ahead, so day D is closed once D+1 is 72 hours and 5 minutes old;
/// an hour more covers loaders still storing what was accepted just before.
pub fn sealed_through(now: DateTime<Utc>) -> NaiveDate {
    let closes = crate::intake::MAX_AGE + crate::intake::MAX_FUTURE + Duration::hours(1);
    (now - closes).date_naive() - Days::new(1)
}

/// The last local day the daily tier can hold: every UTC day it overlaps (the one before
/// and after too, for zones up to 14 hours from UTC) must be sealed.
pub fn daily_limit(now: DateTime<Utc>) -> NaiveDate {
    sealed_through(now) - Days::new(1)
}

/// The last day of the last whole month that ends by `through` (`through` itself when it is
/// a month's last day): how far the monthly tier can go while the daily tier holds the local
/// days through `through`.
pub fn whole_months_through(through: NaiveDate) -> NaiveDate {
    match through.succ_opt() {
        Some(next) if next.day() == 1 => through,
        _ => first_of_month(through) - Days::new(1),
    }
}

fn first_of_month(day: NaiveDate) -> NaiveDate {
    day.with_day(1).expect("day 1 exists")
}

fn last_of_month(day: NaiveDate) -> NaiveDate {
    first_of_month(day) + Months::new(1) - Days::new(1)
}

/// The site groups that share a timezone: `(timezone, sites, except)`, `except` meaning
/// every site but those listed (the tenant's default zone, which open tenants' unlisted
/// sites use too).
pub fn timezone_groups(tenant: &Tenant) -> Vec<(String, Vec<String>, bool)> {
    let default = tenant.spec.default_timezone.clone();
    let mut by_zone: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for site in &tenant.spec.sites.allowed {
        let zone = tenant.spec.site_timezone(&site.id).name().to_string();
        if zone != default {
            by_zone.entry(zone).or_default().push(site.id.clone());
        }
    }
    let elsewhere: Vec<String> = by_zone.values().flatten().cloned().collect();
    let mut groups: Vec<(String, Vec<String>, bool)> =
        by_zone.into_iter().map(|(zone, sites)| (zone, sites, false)).collect();
    groups.push((default, elsewhere, true));
    groups
}

/// What the daily tier depends on from the spec: every site's timezone.
pub fn timezone_fingerprint(tenant: &Tenant) -> String {
    timezone_groups(tenant)
        .iter()
        .map(|(zone, sites, except)| format!("{zone}{}{}", if *except { "!" } else { "=" }, sites.join(",")))
        .collect::<Vec<_>>()
        .join(";")
}

fn day_number(day: NaiveDate) -> String {
    day.format("%Y%m%d").to_string()
}

fn utc_midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc()
}

/// A staging table name no other rebuild uses at the same time.
fn staging_name(table: &str, unit: &str) -> String {
    format!("{table}_stage_{unit}_{:08x}", rand::random::<u32>())
}

/// Per UTC day in `[from, to]`: non-bot `events` rows, and the event totals of the
/// quarter-hour tier's two tables (the per-dimension one divided by the dimensions). A
/// consistent day has all three equal.
pub async fn quarter_hour_mismatches(
    wh: &dyn Warehouse,
    db: &str,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<NaiveDate>> {
    let site = Tier::QuarterHour.table(false);
    let dims = Tier::QuarterHour.table(true);
    let sql = format!(
        "SELECT toString(day) AS day, sum(counted) AS counted, sum(site) AS site, sum(dims) AS dims FROM ( \
           SELECT toDate(ts) AS day, sumIf(sign, is_bot = 0) AS counted, 0 AS site, 0 AS dims FROM {db}.{EVENTS_TABLE} \
             WHERE toDate(ts) BETWEEN {{from:Date}} AND {{to:Date}} GROUP BY day \
           UNION ALL SELECT toDate(bucket), 0, sum(events), 0 FROM {db}.{site} \
             WHERE toDate(bucket) BETWEEN {{from:Date}} AND {{to:Date}} GROUP BY toDate(bucket) \
           UNION ALL SELECT toDate(bucket), 0, 0, intDiv(sum(events), {n}) FROM {db}.{dims} \
             WHERE toDate(bucket) BETWEEN {{from:Date}} AND {{to:Date}} GROUP BY toDate(bucket) \
         ) GROUP BY day HAVING counted != site OR counted != dims ORDER BY day",
        n = schema::DIMENSIONS.len()
    );
    let params = Params::new()
        .bind("from", from.format("%Y-%m-%d"))
        .bind("to", to.format("%Y-%m-%d"));
    parse_days(&wh.select(&sql, &params).await?)
}

fn parse_days(rows: &[Value]) -> Result<Vec<NaiveDate>> {
    rows.iter()
        .map(|r| {
            r["day"]
                .as_str()
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                .ok_or_else(|| Error::Decode(format!("day in {r}")))
        })
        .collect()
}

/// Rebuilds one UTC day of the quarter-hour tier from `events` and swaps it in; verifies the
/// day against `events` afterwards and rebuilds it again if an insert slipped in between.
pub async fn rebuild_quarter_hour_day(wh: &dyn Warehouse, tenant: &Tenant, day: NaiveDate) -> Result<()> {
    let db = tenant.database();
    let none = Params::new();
    let (start, end) = (utc_midnight(day), utc_midnight(day + Days::new(1)));
    let source = format!(
        "(SELECT * FROM {db}.{EVENTS_TABLE} WHERE ts >= '{}' AND ts < '{}')",
        ch_datetime::format(&start),
        ch_datetime::format(&end)
    );
    for attempt in 1..=REBUILD_ATTEMPTS {
        let started = std::time::Instant::now();
        for dims in [false, true] {
            let table = Tier::QuarterHour.table(dims);
            let staged = staging_name(table, &day_number(day));
            wh.execute(
                &schema::tier_table_ddl(&db, &staged, Tier::QuarterHour, dims, tenant.spec.retention.rollup_days),
                &none,
            )
            .await?;
            let swapped = async {
                wh.execute(
                    &format!(
                        "INSERT INTO {db}.{staged} {}",
                        schema::quarter_hour_select_from(&source, dims)
                    ),
                    &none,
                )
                .await?;
                ops::swap_partition(wh, &db, table, &staged, &day_number(day)).await
            }
            .await;
            wh.execute(&format!("DROP TABLE IF EXISTS {db}.{staged}"), &none)
                .await?;
            swapped?;
            tracing::debug!(%day, dims, seconds = started.elapsed().as_secs_f64(), "quarter-hour day built");
        }
        let consistent = quarter_hour_mismatches(wh, &db, day, day).await?.is_empty();
        tracing::debug!(%day, seconds = started.elapsed().as_secs_f64(), "quarter-hour day checked");
        if consistent {
            return Ok(());
        }
        tracing::warn!(tenant = %tenant.name, %day, attempt, "an insert into the day raced its rebuild; rebuilding again");
    }
    Err(Error::Query {
        sql: "quarter-hour rebuild".into(),
        message: format!(
            "day {day} of tenant {} still disagrees with events after {REBUILD_ATTEMPTS} rebuilds: something keeps writing into it",
            tenant.name
        ),
    })
}

/// Rebuilds the daily tier's month that holds `month` (any day of it), for local days up to
/// `through`, from the quarter-hour tier, and swaps it in.
pub async fn rebuild_daily_month(
    wh: &dyn Warehouse,
    tenant: &Tenant,
    month: NaiveDate,
    through: NaiveDate,
) -> Result<()> {
    let db = tenant.database();
    let none = Params::new();
    let first = first_of_month(month);
    let last = last_of_month(first).min(through);
    let partition = first.format("%Y%m").to_string();
    for dims in [false, true] {
        let table = Tier::Daily.table(dims);
        let staged = staging_name(table, &partition);
        wh.execute(
            &schema::tier_table_ddl(&db, &staged, Tier::Daily, dims, tenant.spec.retention.rollup_days),
            &none,
        )
        .await?;
        let swapped = async {
            if first <= last {
                insert_daily_rows(wh, tenant, &staged, dims, first, last).await?;
            }
            ops::swap_partition(wh, &db, table, &staged, &partition).await
        }
        .await;
        wh.execute(&format!("DROP TABLE IF EXISTS {db}.{staged}"), &none)
            .await?;
        swapped?;
    }
    Ok(())
}

/// Inserts into `staged` the daily tier's rows of the local days `first..=last`, built from
/// the quarter-hour tier, one statement per timezone group of the tenant's sites.
async fn insert_daily_rows(
    wh: &dyn Warehouse,
    tenant: &Tenant,
    staged: &str,
    dims: bool,
    first: NaiveDate,
    last: NaiveDate,
) -> Result<()> {
    let db = tenant.database();
    for (zone, sites, except) in timezone_groups(tenant) {
        let params = Params::new()
            .bind("first", first.format("%Y-%m-%d"))
            .bind("last", last.format("%Y-%m-%d"))
            .bind("tz", &zone)
            .bind("sites", Params::array_of_strings(&sites));
        wh.execute(
            &format!("INSERT INTO {db}.{staged} {}", schema::daily_select(&db, dims, except)),
            &params,
        )
        .await?;
    }
    Ok(())
}

/// How many `through` versions a month in progress keeps: the newest, and the one a reader
/// whose storage state is a seal old plans with (states are read at most a second old,
/// seals run minutes apart).
const MONTH_VERSIONS: usize = 2;

/// Rebuilds the monthly tier's partition of the local month that holds `month` (any day of
/// it) from the daily tier's rows of its days, and swaps it in. It holds a row per
/// `through` (the last day a row covers): the month's last day once the daily tier holds
/// it whole, else `daily_through` (month to date), plus the versions the partition held
/// before, newest first, `MONTH_VERSIONS` in all. Rebuilding a month again gives the same
/// rows. `daily_through` must reach into the month.
pub async fn rebuild_monthly_month(
    wh: &dyn Warehouse,
    tenant: &Tenant,
    month: NaiveDate,
    daily_through: NaiveDate,
) -> Result<()> {
    let db = tenant.database();
    let none = Params::new();
    let (first, last) = (first_of_month(month), last_of_month(month));
    if daily_through < first {
        return Err(Error::Query {
            sql: "monthly rebuild".into(),
            message: format!(
                "month {} of tenant {} has no day in the daily tier yet (through {daily_through})",
                first.format("%Y-%m"),
                tenant.name
            ),
        });
    }
    let partition = first.format("%Y%m").to_string();
    let mut versions = month_versions(wh, &db, first).await?;
    versions.push(last.min(daily_through));
    versions.retain(|d| *d <= daily_through);
    versions.sort_unstable_by(|a, b| b.cmp(a));
    versions.dedup();
    versions.truncate(MONTH_VERSIONS);
    for dims in [false, true] {
        let table = Tier::Monthly.table(dims);
        let staged = staging_name(table, &partition);
        wh.execute(
            &schema::tier_table_ddl(&db, &staged, Tier::Monthly, dims, tenant.spec.retention.rollup_days),
            &none,
        )
        .await?;
        let swapped = async {
            for through in &versions {
                let params = Params::new()
                    .bind("first", first.format("%Y-%m-%d"))
                    .bind("through", through.format("%Y-%m-%d"));
                wh.execute(
                    &format!("INSERT INTO {db}.{staged} {}", schema::monthly_select(&db, dims)),
                    &params,
                )
                .await?;
            }
            ops::swap_partition(wh, &db, table, &staged, &partition).await
        }
        .await;
        wh.execute(&format!("DROP TABLE IF EXISTS {db}.{staged}"), &none)
            .await?;
        swapped?;
    }
    Ok(())
}

/// The `through` versions the monthly tier holds for the month starting on `first`.
async fn month_versions(wh: &dyn Warehouse, db: &str, first: NaiveDate) -> Result<Vec<NaiveDate>> {
    let rows = wh
        .select(
            &format!(
                "SELECT DISTINCT toString(through) AS day FROM {db}.{} WHERE month = {{first:Date}}",
                Tier::Monthly.table(false)
            ),
            &Params::new().bind("first", first.format("%Y-%m-%d")),
        )
        .await?;
    parse_days(&rows)
}

/// The first day of each month that local days `[from, to]` fall in.
fn months(from: NaiveDate, to: NaiveDate) -> Vec<NaiveDate> {
    let mut out = Vec::new();
    let mut m = first_of_month(from);
    while m <= to {
        out.push(m);
        m = m + Months::new(1);
    }
    out
}

/// The UTC days `events` holds, oldest first.
pub async fn days_with_events(wh: &dyn Warehouse, db: &str) -> Result<Vec<NaiveDate>> {
    let rows = wh
        .select(
            &format!("SELECT DISTINCT toString(toDate(ts)) AS day FROM {db}.{EVENTS_TABLE} ORDER BY day"),
            &Params::new(),
        )
        .await?;
    parse_days(&rows)
}

/// Brings the daily tier up to the days sealed by `now`, and the monthly tier up to it: the
/// months of newly sealed local days are rebuilt (every month, when the spec's timezones
/// changed since the last seal), then the monthly tier's newly whole months (every whole
/// month after a change of timezones, and those of a database the monthly tier has not
/// reached yet: one sealed by an earlier release gains it here) and the month in progress
/// to the new limit. Returns the local day the daily tier now holds through, if any.
/// Nothing is sealed while the tenant is still on the hourly layout: the quarter-hour tier
/// holds every day only once the backfill is through (which seals at its end).
pub async fn seal(wh: &dyn Warehouse, tenant: &Tenant, now: DateTime<Utc>) -> Result<Option<NaiveDate>> {
    let state = read_state(wh, &tenant.database()).await?;
    if state.layout == Layout::Hourly {
        return Ok(None);
    }
    seal_from(wh, tenant, now, state).await
}

async fn seal_from(
    wh: &dyn Warehouse,
    tenant: &Tenant,
    now: DateTime<Utc>,
    state: StorageState,
) -> Result<Option<NaiveDate>> {
    let db = tenant.database();
    let limit = daily_limit(now);
    let fingerprint = timezone_fingerprint(tenant);
    let zones_unchanged = state.daily_timezones == fingerprint;
    let days = days_with_events(wh, &db).await?;
    let (Some(oldest), Some(newest)) = (days.first().copied(), days.last().copied()) else {
        return Ok(state.daily_through);
    };
    // A local day can start on the UTC day before its date, or end on the one after.
    let (oldest, newest) = (oldest - Days::new(1), newest + Days::new(1));
    let from = match state.daily_through {
        Some(through) if zones_unchanged => through + Days::new(1),
        _ => oldest,
    };
    let daily_through = if from <= limit {
        // Months without any event hold nothing to rebuild (their days are sealed all the same).
        for month in months(from.max(oldest), limit.min(newest)) {
            rebuild_daily_month(wh, tenant, month, limit).await?;
        }
        limit
    } else {
        match state.daily_through {
            // Nothing new to seal; the monthly tier may still have whole months to catch up.
            Some(through) if zones_unchanged => through,
            _ => return Ok(state.daily_through),
        }
    };
    let monthly_to = whole_months_through(daily_through);
    let monthly_from = match state.monthly_through {
        Some(through) if zones_unchanged => through + Days::new(1),
        _ => oldest,
    };
    // Daily months first, then the months built from them (the newly whole ones, and the
    // month in progress to the new limit), then the state that says so: a reader that sees
    // a new limit or timezones finds the rows built with them.
    if monthly_from <= monthly_to {
        for month in months(monthly_from.max(oldest), monthly_to.min(newest)) {
            rebuild_monthly_month(wh, tenant, month, daily_through).await?;
        }
    }
    let in_progress = first_of_month(daily_through);
    let moved = from <= limit || state.monthly_through.is_none();
    if moved && daily_through < last_of_month(daily_through) && in_progress <= newest {
        rebuild_monthly_month(wh, tenant, in_progress, daily_through).await?;
    }
    if from <= limit {
        // The timezones first: a reader that sees the new limit sees the zones it was built with.
        write_state(wh, &db, DAILY_TIMEZONES, &fingerprint).await?;
        write_state(wh, &db, DAILY_THROUGH, &limit.format("%Y-%m-%d").to_string()).await?;
        tracing::info!(tenant = %tenant.name, through = %limit, "daily tier sealed");
    }
    if monthly_from <= monthly_to || moved {
        write_state(wh, &db, MONTHLY_THROUGH, &monthly_to.format("%Y-%m-%d").to_string()).await?;
        tracing::info!(tenant = %tenant.name, through = %monthly_to, "monthly tier sealed");
    }
    Ok(Some(daily_through))
}

/// After days `replayed` changed in `events` and the quarter-hour tier: the daily tier's
/// months that hold their local days (one either side), where sealed, then the monthly
/// tier's rows of those months (whole, or to date), once that tier is live. Each month is swapped in the daily
/// tier before it is rebuilt from it in the monthly tier, so a reader sees every unit
/// (a month of days, a month row) wholly old or wholly new.
pub async fn refresh_daily(wh: &dyn Warehouse, tenant: &Tenant, replayed: &[NaiveDate]) -> Result<()> {
    let db = tenant.database();
    let state = read_state(wh, &db).await?;
    let Some(through) = state.daily_through else {
        return Ok(());
    };
    let mut touched: Vec<NaiveDate> = replayed
        .iter()
        .flat_map(|d| [*d - Days::new(1), *d, *d + Days::new(1)])
        .filter(|d| *d <= through)
        .map(first_of_month)
        .collect();
    touched.sort_unstable();
    touched.dedup();
    for month in touched {
        rebuild_daily_month(wh, tenant, month, through).await?;
        // Every month with sealed days has monthly rows once the tier is live: whole, or
        // to date for the month in progress.
        if state.monthly_through.is_some() {
            rebuild_monthly_month(wh, tenant, month, through).await?;
        }
    }
    Ok(())
}

/// After a replay swapped UTC days: the daily tier's local `days` (where sealed) rebuilt
/// from the quarter-hour tier, and every other local day of their months kept exactly as it
/// is. A replay of several days calls this for a local day only once every UTC day it
/// overlaps is swapped (`replay`), so no local day ever mixes old and new UTC days, even
/// while other local days of its month still wait for theirs.
pub async fn refresh_daily_days(wh: &dyn Warehouse, tenant: &Tenant, days: &[NaiveDate]) -> Result<()> {
    let db = tenant.database();
    let state = read_state(wh, &db).await?;
    let Some(through) = state.daily_through else {
        return Ok(());
    };
    let mut by_month: std::collections::BTreeMap<NaiveDate, Vec<NaiveDate>> = std::collections::BTreeMap::new();
    for day in days.iter().copied().filter(|d| *d <= through) {
        by_month
            .entry(day.with_day(1).expect("day 1 exists"))
            .or_default()
            .push(day);
    }
    let none = Params::new();
    for (first, mut fresh) in by_month {
        fresh.sort_unstable();
        fresh.dedup();
        let partition = first.format("%Y%m").to_string();
        let fresh_text: Vec<String> = fresh.iter().map(|d| d.format("%Y-%m-%d").to_string()).collect();
        for dims in [false, true] {
            let table = Tier::Daily.table(dims);
            let staged = staging_name(table, &partition);
            wh.execute(
                &schema::tier_table_ddl(&db, &staged, Tier::Daily, dims, tenant.spec.retention.rollup_days),
                &none,
            )
            .await?;
            let swapped = async {
                // The month's other local days, as they are.
                wh.execute(
                    &format!(
                        "INSERT INTO {db}.{staged} SELECT * FROM {db}.{table} \
                         WHERE toYYYYMM(day) = {partition} AND day NOT IN {{fresh:Array(Date)}}"
                    ),
                    &Params::new().bind("fresh", Params::array_of_strings(&fresh_text)),
                )
                .await?;
                for day in &fresh {
                    insert_daily_rows(wh, tenant, &staged, dims, *day, *day).await?;
                }
                ops::swap_partition(wh, &db, table, &staged, &partition).await
            }
            .await;
            wh.execute(&format!("DROP TABLE IF EXISTS {db}.{staged}"), &none)
                .await?;
            swapped?;
        }
        // The monthly tier's row of this month, from the daily tier just swapped (once that
        // tier is live). Until a replay has refreshed every local day of the month, the row
        // holds the days refreshed so far: a replay of a range that ends inside a month
        // leaves its other days as they were, which is what they are.
        if state.monthly_through.is_some() {
            rebuild_monthly_month(wh, tenant, first, through).await?;
        }
    }
    Ok(())
}

/// Moving a database of the hourly layout onto the tiers, step one: the days still open
/// to inserts. Run it where nothing writes to the tenant (before a role starts storing):
/// each day is swapped whole. Being writer-free, it is also where the hourly tables retire
/// once the move is through (dropping a view under a running insert can leave that insert
/// half-pushed through its views), and where a database with nothing to move (a new one)
/// moves at once. Idempotent; returns the days rebuilt.
pub async fn migrate_recent_days(wh: &dyn Warehouse, tenant: &Tenant, now: DateTime<Utc>) -> Result<Vec<NaiveDate>> {
    let db = tenant.database();
    let values = state_values(wh, &db).await?;
    if values.get(LAYOUT).map(String::as_str) == Some("tiers") {
        if hourly_layout_live(wh, &db).await? {
            retire_hourly(wh, tenant).await?;
        }
        return Ok(Vec::new());
    }
    let days = days_with_events(wh, &db).await?;
    let mut recent = Vec::new();
    if !values.contains_key(RECENT_MIGRATED) {
        let sealed = sealed_through(now);
        recent = days.iter().copied().filter(|d| *d > sealed).collect();
        for day in &recent {
            rebuild_quarter_hour_day(wh, tenant, *day).await?;
        }
        write_state(wh, &db, RECENT_MIGRATED, "1").await?;
    }
    if days.is_empty() {
        // Nothing to move in the background: switch and retire now, while nothing writes.
        write_state(wh, &db, LAYOUT, "tiers").await?;
        retire_hourly(wh, tenant).await?;
    }
    Ok(recent)
}

/// Drops the hourly layout's views and tables, in the tenant's form (on a cluster, on every
/// node, with the local tables behind them).
async fn retire_hourly(wh: &dyn Warehouse, tenant: &Tenant) -> Result<()> {
    let form = Form::for_backend(tenant, wh.backend())?;
    for statement in legacy::retire(&tenant.database()) {
        ops::execute_schema_statement(wh, &form, &statement).await?;
    }
    Ok(())
}

/// What one step of the backfill did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backfill {
    /// This day of the hourly layout is now in the quarter-hour tier; more may follow.
    Moved(NaiveDate),
    /// Every day is in the tiers, the daily tier is sealed and queries read the tiers.
    Done,
}

/// Step two, while roles run (sealed days get no inserts): every older day into the
/// quarter-hour tier, one per call, oldest first and resumable; then the daily tier, the
/// switch of the planner to the tiers and, once no reader can still be planning on the
/// hourly tables, their retirement.
pub async fn backfill_step(wh: &dyn Warehouse, tenant: &Tenant, now: DateTime<Utc>) -> Result<Backfill> {
    let db = tenant.database();
    let values = state_values(wh, &db).await?;
    if values.get(LAYOUT).map(String::as_str) == Some("tiers") {
        return Ok(Backfill::Done);
    }
    if !values.contains_key(RECENT_MIGRATED) {
        return Err(Error::Query {
            sql: "storage backfill".into(),
            message: "the recent days have not been moved yet (migrate_recent_days)".into(),
        });
    }
    let done = values
        .get(BACKFILLED_THROUGH)
        .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    let sealed = sealed_through(now);
    let next = days_with_events(wh, &db)
        .await?
        .into_iter()
        .find(|day| *day <= sealed && done.is_none_or(|d| *day > d));
    if let Some(day) = next {
        rebuild_quarter_hour_day(wh, tenant, day).await?;
        write_state(wh, &db, BACKFILLED_THROUGH, &day.format("%Y-%m-%d").to_string()).await?;
        return Ok(Backfill::Moved(day));
    }
    seal_from(wh, tenant, now, read_state(wh, &db).await?).await?;
    write_state(wh, &db, LAYOUT, "tiers").await?;
    // The hourly tables stop answering now; they are dropped at the next writer-free start
    // (`migrate_recent_days`), not here beside running inserts.
    tracing::info!(tenant = %tenant.name, "queries now read the tiers; the hourly rollups retire at the next start");
    Ok(Backfill::Done)
}

/// The whole backfill (`backfill_step` until done).
pub async fn backfill(wh: &dyn Warehouse, tenant: &Tenant, now: DateTime<Utc>) -> Result<()> {
    while backfill_step(wh, tenant, now).await? != Backfill::Done {}
    Ok(())
}

/// Whether the hourly layout's tables still take writes (its views exist), so that a replay
/// keeps them consistent too until they retire.
pub async fn hourly_layout_live(wh: &dyn Warehouse, db: &str) -> Result<bool> {
    let rows = wh
        .select(
            "SELECT count() AS n FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            &Params::new().bind("db", db).bind("t", legacy::SITE_ROLLUP),
        )
        .await?;
    Ok(rows.first().and_then(|r| r["n"].as_u64()).unwrap_or(0) > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_day_seals_once_no_event_can_reach_it() {
        // Day 21 closes once day 22 is 72 hours and 5 minutes old (plus an hour of slack).
        let at = |d, h, m| Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap();
        assert_eq!(
            sealed_through(at(25, 1, 4)),
            NaiveDate::from_ymd_opt(2026, 11, 20).unwrap()
        );
        assert_eq!(
            sealed_through(at(25, 1, 5)),
            NaiveDate::from_ymd_opt(2026, 11, 21).unwrap()
        );
        assert_eq!(
            daily_limit(at(25, 1, 5)),
            NaiveDate::from_ymd_opt(2026, 11, 20).unwrap()
        );
    }

    #[test]
    fn sites_are_grouped_by_timezone() {
        let tenant = crate::spec::parse_tenants(
            "apiVersion: sightline.dev/v1alpha1\nkind: AnalyticsTenant\nmetadata: {name: t}\nspec:\n  defaultTimezone: Europe/Berlin\n  sites:\n    open: true\n    allowed:\n      - {id: a, timezone: Asia/Kolkata}\n      - {id: b}\n      - {id: c, timezone: Asia/Kolkata}\n      - {id: d, timezone: Europe/Berlin}\n",
            "t",
        )
        .unwrap()
        .remove(0);
        assert_eq!(
            timezone_groups(&tenant),
            vec![
                (
                    "Asia/Kolkata".to_string(),
                    vec!["a".to_string(), "c".to_string()],
                    false
                ),
                (
                    "Europe/Berlin".to_string(),
                    vec!["a".to_string(), "c".to_string()],
                    true
                ),
            ]
        );
        assert_eq!(timezone_fingerprint(&tenant), "Asia/Kolkata=a,c;Europe/Berlin!a,c");
    }

    #[test]
    fn months_of_a_range() {
        let d = |m, day| NaiveDate::from_ymd_opt(2026, m, day).unwrap();
        assert_eq!(months(d(1, 30), d(3, 1)), vec![d(1, 1), d(2, 1), d(3, 1)]);
        assert_eq!(months(d(5, 5), d(5, 6)), vec![d(5, 1)]);
    }

    #[test]
    fn the_monthly_tier_reaches_the_last_whole_month_of_the_daily_tier() {
        let d = |y, m, day| NaiveDate::from_ymd_opt(y, m, day).unwrap();
        assert_eq!(whole_months_through(d(2026, 11, 30)), d(2026, 11, 30));
        assert_eq!(whole_months_through(d(2026, 11, 29)), d(2026, 10, 31));
        assert_eq!(whole_months_through(d(2026, 12, 1)), d(2026, 11, 30));
        assert_eq!(whole_months_through(d(2026, 1, 15)), d(2025, 12, 31));
        assert_eq!(whole_months_through(d(2028, 2, 29)), d(2028, 2, 29), "a leap February");
        assert_eq!(whole_months_through(d(2027, 2, 28)), d(2027, 2, 28));
        assert_eq!(last_of_month(d(2028, 2, 10)), d(2028, 2, 29));
    }
}
