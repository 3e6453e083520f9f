//! Query planning: which table answers (a rollup tier, or the processed `events` table),
//! and the parameterised SQL for it. Every path computes every metric the same way, so they
//! give the same answers; user input only ever travels as bound parameters, never as SQL
//! text.
//!
//! Tiers (`schema::Tier`, docs/storage.md): the coarsest that answers exactly. The daily
//! tier holds each site's sealed local days in the site's timezone, so it answers day, week
//! and month buckets and totals asked in that timezone; the days after it holds come from
//! the quarter-hour tier in the same statement. The monthly tier holds whole sealed local
//! months and the month in progress to the daily tier's last day, so for totals and month
//! buckets it answers the range's months it holds (whole, or to date when the range reaches
//! that day), the daily tier the range's other sealed days, and the quarter-hour tier the
//! rest, again in one statement. Hours, other timezones, and days the daily tier does not hold yet come from
//! the quarter-hour tier, whose 15-minute buckets tile every IANA zone's hours and days
//! exactly. Databases still on the hourly layout of earlier releases answer from it until
//! their move to the tiers is through.

use chrono::{Datelike, Days, Months, NaiveDate};
use sightline_core::event::ch_datetime;
use sightline_core::schema::{self, legacy, Tier, EVENTS_TABLE};
use sightline_core::spec::Goal;
use sightline_core::warehouse::tiers::{Layout, StorageState};
use sightline_core::warehouse::Params;

use crate::error::QueryError;
use crate::model::{Dimension, Filter, Metric, Op, OrderKey, PathHint, Query, TierHint};
use crate::request::{start_of_day, DateRange, Interval};

/// Which rollup tables answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollupTier {
    /// The hourly rollups of earlier releases (before a database's move to the tiers).
    Hourly,
    QuarterHour,
    /// The daily tier for local days through `through`, the quarter-hour tier after.
    Daily {
        through: NaiveDate,
    },
    /// The monthly tier for the range's local months `months` (the first days of the first
    /// and the last month; the last may be the month in progress, read to date, through
    /// `through`), the daily tier for its other days through `through`, the quarter-hour
    /// tier after.
    Monthly {
        months: (NaiveDate, NaiveDate),
        through: NaiveDate,
    },
}

impl RollupTier {
    pub fn name(self) -> &'static str {
        match self {
            RollupTier::Hourly => "hourly",
            RollupTier::QuarterHour => Tier::QuarterHour.name(),
            RollupTier::Daily { .. } => Tier::Daily.name(),
            RollupTier::Monthly { .. } => Tier::Monthly.name(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Rollup rows: per-site totals (`dim: None`) or one dimension's rows.
    Rollup {
        dim: Option<&'static str>,
        tier: RollupTier,
    },
    Events,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Events => "events",
            Source::Rollup { .. } => "rollup",
        }
    }

    /// The tier that answered (`meta.tier`); `None` for the events path.
    pub fn tier(self) -> Option<&'static str> {
        match self {
            Source::Events => None,
            Source::Rollup { tier, .. } => Some(tier.name()),
        }
    }
}

/// Base sums every metric is derived from, over rollup rows, with the visitor counting the
/// tier stores (`schema::visitors_merge`; the hourly layout of earlier releases held `uniq`).
fn rollup_sums(tier: RollupTier) -> String {
    let visitors = match tier {
        RollupTier::Hourly => legacy::visitors_merge("visitors"),
        RollupTier::QuarterHour | RollupTier::Daily { .. } | RollupTier::Monthly { .. } => {
            schema::visitors_merge("visitors")
        }
    };
    format!(
        "{visitors} AS visitors, toInt64(sum(visits)) AS visits, toUInt64(sum(pageviews)) AS pageviews, \
toUInt64(sum(events)) AS events, toInt64(sum(bounces)) AS bounces, toInt64(sum(duration)) AS duration"
    )
}

/// The same over `events` rows, with the same visitor counting; every sum weighs a row by
/// its `sign` (a cancelled row and its cancellation add up to nothing, docs/replay.md).
fn event_sums() -> String {
    format!(
        "{} AS visitors, toInt64(sum(sign * visit_delta)) AS visits, toUInt64(sum(sign * is_pageview)) AS pageviews, \
toUInt64(sum(sign)) AS events, toInt64(sum(sign * bounce_delta)) AS bounces, toInt64(sum(sign * duration_delta)) AS duration",
        schema::visitors_count("visitor_id")
    )
}
/// Revenue per currency, as exact decimal text (from `events` only, each row weighed by its
/// `sign`).
const REVENUE: &str = "CAST(sumMap(if(revenue_amount != '', [toString(revenue_currency)], []), \
if(revenue_amount != '', [toDecimal128OrZero(revenue_amount, 6) * sign], [])), 'Map(String, String)') AS revenue";
/// Derived metrics, in SQL too so that results can be ordered by them.
const DERIVED: &str = "if(visits > 0, round(bounces * 100 / visits), 0) AS bounce_rate, \
if(visits > 0, round(duration / visits), 0) AS visit_duration, if(visits > 0, round(pageviews / visits, 2), 0) AS views_per_visit";

/// A planned query: FROM/WHERE shared by the main, totals and count statements.
#[derive(Clone, Debug)]
pub struct Plan {
    pub source: Source,
    db: String,
    params: Params,
    next_param: usize,
    dims: Vec<(Dimension, String)>,
    /// The table, or for the daily tier the union of its days and the quarter-hour tier's.
    from_sql: String,
    /// For the daily and monthly tiers: the parts of the union in `from_sql`.
    sealed: Option<Sealed>,
    where_sql: String,
    revenue: bool,
}

/// The branches of a daily or monthly plan's `UNION ALL`: the rows of the sealed tiers
/// (monthly, then daily) and the quarter-hour tier's rows of the days after them. Each
/// selects `site_id, [dimension, value,] day` and the rollup columns.
#[derive(Clone, Debug)]
struct Sealed {
    dims: bool,
    /// The monthly and daily tiers' branches (`None`: the range has no sealed day).
    head: Option<String>,
    /// How many local days the head covers.
    head_days: i64,
    tail: Option<String>,
}

/// The fewest sealed days worth merging once and keeping (`Plan::sealed_head`): below
/// that, a query merges a few states per value anyway, and a fill would only add a part
/// to the merges table.
pub const MIN_MERGED_DAYS: i64 = 14;

impl Sealed {
    fn union(head: Option<&str>, tail: Option<&str>) -> String {
        let branches: Vec<&str> = head.into_iter().chain(tail).collect();
        format!("({})", branches.join(" UNION ALL "))
    }
}

/// The sealed part of a plan's range as one merge (`Plan::sealed_head`): what the query
/// service merges once and keeps (`crate::merges`).
#[derive(Clone, Debug)]
pub struct SealedHead {
    /// What the merge depends on in this plan: the database, the head's SQL and the values
    /// of the parameters it reads (site, dimension, days, months). The caller adds the
    /// tiers' fingerprint (`StorageState::generation`): the rows behind the same text change.
    pub key: String,
    /// `INSERT INTO <db>.sealed_merges … SELECT` the head's rows merged per value, for the
    /// fill id bound as `{merge_fill:UInt64}`.
    pub fill_sql: String,
    /// The database's merges table (`<db>.sealed_merges`).
    pub table: String,
    pub params: Params,
}

/// A fill of the merges table as the query service remembers it: its id and row count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MergedHead {
    pub fill: u64,
    pub rows: u64,
}

/// What the engine says when a statement reads a fill whose rows are not all there (the
/// table was emptied behind the service's back): the caller forgets the fill and answers
/// without it.
pub const MERGED_HEAD_MISSING: &str = "merged sealed range missing";

/// The names of the `{name:Type}` parameters `sql` reads, in order of appearance.
fn param_names(sql: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = sql;
    while let Some(open) = rest.find('{') {
        rest = &rest[open + 1..];
        if let Some(colon) = rest.find(':') {
            let name = &rest[..colon];
            if !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') && !names.contains(&name)
            {
                names.push(name);
            }
        }
    }
    names
}

fn rollup_column(query: &Query) -> Result<Option<&'static str>, ()> {
    let mut columns: Vec<&'static str> = Vec::new();
    let dims = query
        .dimensions
        .iter()
        .chain(query.filter.iter().flat_map(|f| f.dimensions()));
    for d in dims {
        match d {
            Dimension::Time(_) => {}
            Dimension::Column(c) => {
                if !columns.contains(c) {
                    columns.push(c)
                }
            }
            Dimension::Prop(_) | Dimension::Goal => return Err(()),
        }
    }
    if query
        .metrics
        .iter()
        .any(|m| matches!(m, Metric::Revenue | Metric::ConversionRate))
    {
        return Err(());
    }
    match columns.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(()),
    }
}

fn last_of_month(first: NaiveDate) -> NaiveDate {
    first + Months::new(1) - Days::new(1)
}

/// The months of local days `[first, last]` the monthly tier answers, as the first days of
/// the first and the last of them: a run of months that lie wholly in the range, each held
/// whole (ending by `whole_through`) or, for the month after those, to date (its days
/// through `daily_through`, which the range must reach: its rows cover exactly those).
fn month_rows(
    first: NaiveDate,
    last: NaiveDate,
    whole_through: NaiveDate,
    daily_through: NaiveDate,
) -> Option<(NaiveDate, NaiveDate)> {
    let start = first.with_day(1)?;
    let start = if start == first { start } else { start + Months::new(1) };
    let held = |month: NaiveDate| {
        let end = last_of_month(month);
        let whole = end <= whole_through.min(daily_through);
        let to_date = month == whole_through + Days::new(1) && daily_through >= month && daily_through < end;
        (whole || to_date) && end.min(daily_through) <= last
    };
    let mut end = None;
    let mut month = start;
    while held(month) {
        end = Some(month);
        month = month + Months::new(1);
    }
    end.map(|end| (start, end))
}

/// Chooses the table: the rollups when they hold what the query needs, else `events`; among
/// the rollups, the coarsest tier that answers exactly (module doc), given the tenant's
/// storage state and the timezones its daily and monthly tiers were built with
/// (`daily_zones_current`).
pub fn choose_source(
    query: &Query,
    site_tz: chrono_tz::Tz,
    storage: &StorageState,
    daily_zones_current: bool,
) -> Result<Source, QueryError> {
    let rollup = rollup_column(query);
    let dim = match (query.path, rollup) {
        (PathHint::Events, _) => return Ok(Source::Events),
        (_, Ok(None)) if query.filter.is_some() => return Ok(Source::Events),
        (_, Ok(dim)) => dim,
        (PathHint::Rollup, Err(())) => {
            return Err(QueryError::bad(
                "path",
                "the rollups cannot answer this query (props, goals, revenue, or several dimensions); use \"auto\" or \"events\"",
            ))
        }
        (PathHint::Auto, Err(())) => return Ok(Source::Events),
    };
    let time = query.dimensions.iter().find_map(|d| match d {
        Dimension::Time(interval) => Some(*interval),
        _ => None,
    });
    let daily = match storage.daily_through {
        Some(through)
            if storage.layout == Layout::Tiers
                && daily_zones_current
                && time != Some(Interval::Hour)
                && query.range.tz == site_tz
                && through >= query.range.first_day =>
        {
            Some(RollupTier::Daily { through })
        }
        _ => None,
    };
    // A month row answers totals and month buckets, not days or weeks within it.
    let monthly = match (daily, storage.monthly_through) {
        (Some(RollupTier::Daily { through }), Some(whole_through)) if matches!(time, None | Some(Interval::Month)) => {
            month_rows(query.range.first_day, query.range.last_day, whole_through, through)
                .map(|months| RollupTier::Monthly { months, through })
        }
        _ => None,
    };
    let tier = match (storage.layout, query.tier) {
        (Layout::Hourly, TierHint::Auto) => RollupTier::Hourly,
        (Layout::Hourly, _) => {
            return Err(QueryError::bad(
                "tier",
                "this tenant's storage is still moving to the tiers; use \"auto\"",
            ))
        }
        (Layout::Tiers, TierHint::Auto) => monthly.or(daily).unwrap_or(RollupTier::QuarterHour),
        (Layout::Tiers, TierHint::QuarterHour) => RollupTier::QuarterHour,
        (Layout::Tiers, TierHint::Daily) => daily.ok_or_else(|| {
            QueryError::bad(
                "tier",
                "the daily tier answers whole local days in the site's timezone, for days it holds; \
                 this query needs hours, another timezone or days not sealed yet",
            )
        })?,
        (Layout::Tiers, TierHint::Monthly) => monthly.ok_or_else(|| {
            QueryError::bad(
                "tier",
                "the monthly tier answers totals and month buckets in the site's timezone over the \
                 local months it holds (whole, or the month in progress to its last sealed day); this \
                 query needs hours, days or weeks, another timezone, or covers no such month",
            )
        })?,
    };
    Ok(Source::Rollup { dim, tier })
}

impl Plan {
    pub fn new(db: &str, query: &Query, range: &DateRange, goals: &[Goal], source: Source) -> Result<Plan, QueryError> {
        let mut plan = Plan {
            source,
            db: db.to_string(),
            params: Params::new()
                .bind("site", &query.site_id)
                .bind("start", ch_datetime::format(&range.start))
                .bind("end", ch_datetime::format(&range.end))
                .bind("tz", range.tz.name()),
            next_param: 0,
            dims: Vec::new(),
            from_sql: String::new(),
            sealed: None,
            where_sql: String::new(),
            revenue: query.metrics.contains(&Metric::Revenue),
        };
        // What selects the site's rows of the range (and the dimension's, for dimension rows).
        let mut scope = vec!["site_id = {site:String}".to_string()];
        let dim = match source {
            Source::Rollup { dim, .. } => dim,
            Source::Events => {
                scope.push("is_bot = 0".into());
                None
            }
        };
        if let Some(dim) = dim {
            plan.params.push("dim", dim);
            scope.push("dimension = {dim:String}".into());
        }
        let scope = scope.join(" AND ");
        let in_range =
            |time: &str| format!("{time} >= {{start:DateTime64(3, 'UTC')}} AND {time} < {{end:DateTime64(3, 'UTC')}}");
        let mut conditions = Vec::new();
        match source {
            Source::Events => {
                plan.from_sql = format!("{db}.{EVENTS_TABLE}");
                conditions.push(format!("{scope} AND {}", in_range("ts")));
            }
            Source::Rollup {
                tier: RollupTier::Hourly,
                ..
            } => {
                let table = if dim.is_some() {
                    legacy::DIM_ROLLUP
                } else {
                    legacy::SITE_ROLLUP
                };
                plan.from_sql = format!("{db}.{table}");
                conditions.push(format!("{scope} AND {}", in_range("hour")));
            }
            Source::Rollup {
                tier: RollupTier::QuarterHour,
                ..
            } => {
                plan.from_sql = format!("{db}.{}", Tier::QuarterHour.table(dim.is_some()));
                conditions.push(format!("{scope} AND {}", in_range("bucket")));
            }
            Source::Rollup {
                tier: RollupTier::Daily { through },
                ..
            } => {
                let sealed = plan.sealed_union(dim.is_some(), &scope, range, through, None);
                plan.from_sql = Sealed::union(sealed.head.as_deref(), sealed.tail.as_deref());
                plan.sealed = Some(sealed);
            }
            Source::Rollup {
                tier: RollupTier::Monthly { months, through },
                ..
            } => {
                let sealed = plan.sealed_union(dim.is_some(), &scope, range, through, Some(months));
                plan.from_sql = Sealed::union(sealed.head.as_deref(), sealed.tail.as_deref());
                plan.sealed = Some(sealed);
            }
        }
        if let Some(filter) = &query.filter {
            let sql = plan.filter_sql(filter, goals)?;
            conditions.push(sql);
        }
        for d in &query.dimensions {
            let expr = plan.dimension_expr(d, goals)?;
            if let Dimension::Column(c) = d {
                if c.starts_with("utm_") {
                    // Untagged visits have no campaign value: they are not a row of their own.
                    conditions.push(format!("{expr} != ''"));
                }
            }
            plan.dims.push((d.clone(), expr));
        }
        plan.where_sql = if conditions.is_empty() {
            "1".to_string()
        } else {
            conditions.join(" AND ")
        };
        Ok(plan)
    }

    /// The rows of the sealed tiers with the local `day` of the range's timezone, which is
    /// the site's (the planner chose these tiers only then), as one `UNION ALL`: the monthly
    /// tier's rows of the months `months` (first days of the first and last; each row through
    /// its month's last day or, for the month in progress, through `through`; `day` is the
    /// month's first day, which only month buckets and totals read), the daily tier's rows
    /// of the range's other days it holds (through `through`), then the quarter-hour tier's
    /// rows of the days after.
    fn sealed_union(
        &mut self,
        dims: bool,
        scope: &str,
        range: &DateRange,
        through: NaiveDate,
        months: Option<(NaiveDate, NaiveDate)>,
    ) -> Sealed {
        let db = self.db.clone();
        let keys = if dims { "dimension, value, " } else { "" };
        let columns = "visitors, visits, pageviews, events, bounces, duration";
        let daily_last = through.min(range.last_day);
        let mut branches = Vec::new();
        // The daily tier's days: the whole range it holds, or what the months leave of it
        // before and after them.
        let mut days = Vec::new();
        match months {
            None => days.push(("first_day", range.first_day, "daily_last", daily_last)),
            Some((first_month, last_month)) => {
                // Each month's row through its last day, or through the daily tier's last
                // day for the month in progress: the version this storage state names.
                self.params.push("first_month", first_month.format("%Y-%m-%d"));
                self.params.push("last_month", last_month.format("%Y-%m-%d"));
                self.params.push("months_through", through.format("%Y-%m-%d"));
                branches.push(format!(
                    "SELECT site_id, {keys}month AS day, {columns} FROM {db}.{} \
                     WHERE {scope} AND month >= {{first_month:Date}} AND month <= {{last_month:Date}} \
                       AND through = least(toLastDayOfMonth(month), {{months_through:Date}})",
                    Tier::Monthly.table(dims)
                ));
                let after_months = last_of_month(last_month).min(through) + Days::new(1);
                days.push(("first_day", range.first_day, "head_last", first_month - Days::new(1)));
                days.push(("daily_first", after_months, "daily_last", daily_last));
            }
        }
        let spans: Vec<String> = days
            .into_iter()
            .filter(|(_, from, _, to)| from <= to)
            .map(|(from_name, from, to_name, to)| {
                self.params.push(from_name, from.format("%Y-%m-%d"));
                self.params.push(to_name, to.format("%Y-%m-%d"));
                format!("(day >= {{{from_name}:Date}} AND day <= {{{to_name}:Date}})")
            })
            .collect();
        if !spans.is_empty() {
            branches.push(format!(
                "SELECT site_id, {keys}day, {columns} FROM {db}.{} WHERE {scope} AND ({})",
                Tier::Daily.table(dims),
                spans.join(" OR ")
            ));
        }
        let tail = (daily_last < range.last_day).then(|| {
            let tail_start = start_of_day(range.tz, daily_last + Days::new(1));
            self.params.push("tail_start", ch_datetime::format(&tail_start));
            format!(
                "SELECT site_id, {keys}toDate(bucket, {{tz:String}}) AS day, {columns} FROM {db}.{} \
                 WHERE {scope} AND bucket >= {{tail_start:DateTime64(3, 'UTC')}} AND bucket < {{end:DateTime64(3, 'UTC')}}",
                Tier::QuarterHour.table(dims)
            )
        });
        Sealed {
            dims,
            head: (!branches.is_empty()).then(|| branches.join(" UNION ALL ")),
            head_days: (daily_last - range.first_day).num_days() + 1,
            tail,
        }
    }

    /// The sealed part of this plan's range, when merging it once answers the query: a
    /// daily or monthly plan with at least [`MIN_MERGED_DAYS`] sealed days in its range and
    /// no time dimension (its rows are per dimension value, or one total, never per day),
    /// so that the head's rows of a value can be merged into one before the query. Filters
    /// on the dimension's value still apply: the merge keeps every value.
    pub fn sealed_head(&self) -> Option<SealedHead> {
        let sealed = self.sealed.as_ref()?;
        let head = sealed.head.as_deref()?;
        if sealed.head_days < MIN_MERGED_DAYS || self.dims.iter().any(|(d, _)| matches!(d, Dimension::Time(_))) {
            return None;
        }
        let names = param_names(head);
        let mut params = Params::new();
        let mut key = format!("{}\u{0}{head}", self.db);
        for name in names {
            let value = self.params.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())?;
            key.push_str(&format!("\u{0}{name}={value}"));
            params.push(name, value);
        }
        let (value, group) = if sealed.dims {
            ("value", " GROUP BY value")
        } else {
            ("''", "")
        };
        let table = format!("{}.{}", self.db, schema::MERGES_TABLE);
        let fill_sql = format!(
            "INSERT INTO {table} (fill, value, visitors, visits, pageviews, events, bounces, duration) \
             SELECT {{merge_fill:UInt64}}, {value}, {} FROM ({head}){group}",
            schema::merged_aggregates()
        );
        Some(SealedHead {
            key,
            fill_sql,
            table,
            params,
        })
    }

    /// This plan with its sealed part read from the merges table's fill `merged` (one row
    /// per value) instead of the tiers. The statement fails naming [`MERGED_HEAD_MISSING`]
    /// when the fill does not hold the rows it was written with.
    pub fn with_merged_head(&self, merged: MergedHead) -> Plan {
        let Some(sealed) = &self.sealed else {
            return self.clone();
        };
        let mut plan = self.clone();
        plan.params.push("merge_fill", merged.fill);
        plan.params.push("merge_rows", merged.rows);
        let table = format!("{}.{}", self.db, schema::MERGES_TABLE);
        let keys = if sealed.dims {
            "{dim:String} AS dimension, value, "
        } else {
            ""
        };
        let head = format!(
            "SELECT {{site:String}} AS site_id, {keys}toDate(0) AS day, visitors, visits, pageviews, events, bounces, duration \
             FROM {table} WHERE fill = {{merge_fill:UInt64}}"
        );
        // One row that is never kept, so that the engine always evaluates the check (a
        // condition on the fill's own rows would not be, once they are all gone).
        let empty_keys = if sealed.dims {
            "{dim:String} AS dimension, '' AS value, "
        } else {
            ""
        };
        let check = format!(
            "SELECT {{site:String}} AS site_id, {empty_keys}toDate(0) AS day, \
                    arrayReduce('{}', emptyArrayUInt64()) AS visitors, toInt64(0) AS visits, toInt64(0) AS pageviews, \
                    toInt64(0) AS events, toInt64(0) AS bounces, toInt64(0) AS duration \
             FROM system.one \
             WHERE throwIf((SELECT count() FROM {table} WHERE fill = {{merge_fill:UInt64}}) != {{merge_rows:UInt64}}, \
                           '{MERGED_HEAD_MISSING}') = 1",
            schema::visitors_state_name()
        );
        let head = format!("{head} UNION ALL {check}");
        plan.from_sql = Sealed::union(Some(&head), sealed.tail.as_deref());
        plan
    }

    /// The column that holds each row's time: an instant, or a local day (daily tier).
    fn time_column(&self) -> &'static str {
        match self.source {
            Source::Events => "ts",
            Source::Rollup {
                tier: RollupTier::Hourly,
                ..
            } => "hour",
            Source::Rollup {
                tier: RollupTier::QuarterHour,
                ..
            } => "bucket",
            Source::Rollup {
                tier: RollupTier::Daily { .. } | RollupTier::Monthly { .. },
                ..
            } => "day",
        }
    }

    fn param(&mut self, prefix: &str, value: impl ToString) -> String {
        let name = format!("{prefix}{}", self.next_param);
        self.next_param += 1;
        self.params.push(&name, value);
        name
    }

    fn dimension_expr(&mut self, d: &Dimension, goals: &[Goal]) -> Result<String, QueryError> {
        let t = self.time_column();
        // A local day already (daily and monthly tiers), or an instant to see in the range's
        // timezone.
        let day = if t == "day" {
            "day".to_string()
        } else {
            format!("toDate({t}, {{tz:String}})")
        };
        Ok(match d {
            Dimension::Time(Interval::Hour) => {
                format!("formatDateTime(toStartOfHour(toTimeZone({t}, {{tz:String}})), '%Y-%m-%d %H:00:00')")
            }
            Dimension::Time(Interval::Day) => format!("toString({day})"),
            Dimension::Time(Interval::Week) => format!("toString(toMonday({day}))"),
            Dimension::Time(Interval::Month) => format!("toString(toStartOfMonth({day}))"),
            Dimension::Column(c) => self.column_expr(c),
            Dimension::Prop(key) => {
                let p = self.param("k", key);
                format!("props[{{{p}:String}}]")
            }
            Dimension::Goal => {
                // An event may complete several goals: one row per goal it completes.
                let mut arms = Vec::new();
                for goal in goals {
                    let cond = self.goal_condition(goal);
                    let name = self.param("gn", &goal.name);
                    arms.push(format!("if({cond}, {{{name}:String}}, '')"));
                }
                format!("arrayJoin(arrayFilter(g -> g != '', [{}]))", arms.join(", "))
            }
        })
    }

    fn column_expr(&self, column: &str) -> String {
        match self.source {
            Source::Events => format!(
                "toString({})",
                schema::dimension(column).map(|(_, c, _)| c).unwrap_or("pathname")
            ),
            _ => "value".to_string(),
        }
    }

    fn goal_condition(&mut self, goal: &Goal) -> String {
        match (&goal.event, goal.page_regex()) {
            (Some(event), _) => {
                let p = self.param("ge", event);
                format!("(name = {{{p}:String}})")
            }
            (None, Some(re)) => {
                let p = self.param("gp", re);
                format!("(is_pageview = 1 AND match(pathname, {{{p}:String}}))")
            }
            (None, None) => "0".to_string(),
        }
    }

    fn filter_sql(&mut self, filter: &Filter, goals: &[Goal]) -> Result<String, QueryError> {
        Ok(match filter {
            Filter::And(parts) => format!(
                "({})",
                parts
                    .iter()
                    .map(|f| self.filter_sql(f, goals))
                    .collect::<Result<Vec<_>, _>>()?
                    .join(" AND ")
            ),
            Filter::Or(parts) => format!(
                "({})",
                parts
                    .iter()
                    .map(|f| self.filter_sql(f, goals))
                    .collect::<Result<Vec<_>, _>>()?
                    .join(" OR ")
            ),
            Filter::Not(inner) => format!("NOT ({})", self.filter_sql(inner, goals)?),
            Filter::Condition {
                op,
                dimension: Dimension::Goal,
                values,
            } => {
                // Goal names are the tenant's own: which goals the condition selects is
                // decided here, and the SQL tests those goals' conditions.
                let selected: Vec<&Goal> = goals
                    .iter()
                    .filter(|g| goal_name_matches(*op, &g.name, values))
                    .collect();
                let any = if selected.is_empty() {
                    "0".to_string()
                } else {
                    let conds: Vec<String> = selected.iter().map(|g| self.goal_condition(g)).collect();
                    format!("({})", conds.join(" OR "))
                };
                if *op == Op::IsNot {
                    let all: Vec<String> = goals
                        .iter()
                        .filter(|g| values.contains(&g.name))
                        .map(|g| self.goal_condition(g))
                        .collect();
                    if all.is_empty() {
                        "1".to_string()
                    } else {
                        format!("NOT ({})", all.join(" OR "))
                    }
                } else {
                    any
                }
            }
            Filter::Condition { op, dimension, values } => {
                let expr = self.dimension_expr(dimension, goals)?;
                let values = canonical_values(dimension, *op, values);
                let p = self.param("f", Params::array_of_strings(&values));
                match op {
                    Op::Is => format!("{expr} IN {{{p}:Array(String)}}"),
                    Op::IsNot => format!("{expr} NOT IN {{{p}:Array(String)}}"),
                    Op::Contains => {
                        format!("multiSearchAnyCaseInsensitiveUTF8({expr}, {{{p}:Array(String)}})")
                    }
                    Op::Matches => {
                        format!("arrayExists(r -> match({expr}, r), {{{p}:Array(String)}})")
                    }
                }
            }
        })
    }

    fn sums(&self) -> String {
        let base = match self.source {
            Source::Events => event_sums(),
            Source::Rollup { tier, .. } => rollup_sums(tier),
        };
        if self.revenue {
            format!("{base}, {REVENUE}")
        } else {
            base
        }
    }

    fn table_and_conditions(&self) -> String {
        format!("FROM {} WHERE {}", self.from_sql, self.where_sql)
    }

    /// The grouped rows: `d0, d1, ...` then the sums and derived metrics (and `total_rows`
    /// when paginated).
    pub fn rows_sql(&self, order_by: &[(OrderKey, bool)], limit: Option<(u32, u64)>) -> (String, Params) {
        let dims: Vec<String> = self
            .dims
            .iter()
            .enumerate()
            .map(|(i, (_, e))| format!("{e} AS d{i}"))
            .collect();
        let group: Vec<String> = (0..self.dims.len()).map(|i| format!("d{i}")).collect();
        let mut select = dims.clone();
        select.push(self.sums());
        let inner = format!(
            "SELECT {} {}{}",
            select.join(", "),
            self.table_and_conditions(),
            if group.is_empty() {
                String::new()
            } else {
                format!(" GROUP BY {}", group.join(", "))
            }
        );
        let order: Vec<String> = order_by
            .iter()
            .map(|(key, desc)| {
                let name = match key {
                    OrderKey::Metric(Metric::Percentage | Metric::ConversionRate) => "visitors".to_string(),
                    OrderKey::Metric(m) => m.name().to_string(),
                    OrderKey::Dimension(i) => format!("d{i}"),
                };
                format!("{name} {}", if *desc { "DESC" } else { "ASC" })
            })
            .collect();
        // With pagination, every row also carries how many rows there are in all: a window
        // over the grouped rows, computed before LIMIT, in the same scan.
        let total = if limit.is_some() {
            ", count() OVER () AS total_rows"
        } else {
            ""
        };
        let mut sql = format!("SELECT *, {DERIVED}{total} FROM ({inner})");
        if !order.is_empty() {
            sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
        }
        let mut params = self.params.clone();
        if let Some((limit, offset)) = limit {
            params.push("limit", limit);
            params.push("offset", offset);
            sql.push_str(" LIMIT {limit:UInt32} OFFSET {offset:UInt64}");
        }
        (sql, params)
    }

    /// How many grouped rows there are in all (for pagination).
    pub fn count_sql(&self) -> (String, Params) {
        let group: Vec<String> = self.dims.iter().map(|(_, e)| e.clone()).collect();
        let sql = if group.is_empty() {
            "SELECT toUInt64(1) AS n".to_string()
        } else {
            let dims: Vec<String> = group.iter().enumerate().map(|(i, e)| format!("{e} AS d{i}")).collect();
            let names: Vec<String> = (0..group.len()).map(|i| format!("d{i}")).collect();
            format!(
                "SELECT count() AS n FROM (SELECT {} {} GROUP BY {})",
                dims.join(", "),
                self.table_and_conditions(),
                names.join(", ")
            )
        };
        (sql, self.params.clone())
    }
}

/// Filter values in the form the processor stores, so that a filter finds what it means
/// however it is written: pages as `processor::page` normalises them (`/caf%C3%A9`, `/café/`
/// and `/café` find one page), sources by the referrer list's names (`google` finds
/// `Google`), channels by their names in any case. Regular expressions are left as written.
fn canonical_values(dimension: &Dimension, op: Op, values: &[String]) -> Vec<String> {
    use sightline_core::processor::{page, referrer};
    let map: fn(&str) -> String = match (dimension, op) {
        (Dimension::Column("page" | "entry_page"), Op::Is | Op::IsNot) => page::normalize_path,
        (Dimension::Column("page" | "entry_page"), Op::Contains) => page::normalize_text,
        (Dimension::Column("source"), Op::Is | Op::IsNot) => referrer::canonical_source,
        (Dimension::Column("channel"), Op::Is | Op::IsNot) => referrer::canonical_channel,
        _ => return values.to_vec(),
    };
    values.iter().map(|v| map(v)).collect()
}

fn goal_name_matches(op: Op, name: &str, values: &[String]) -> bool {
    match op {
        Op::Is | Op::IsNot => values.iter().any(|v| v == name),
        Op::Contains => values.iter().any(|v| name.to_lowercase().contains(&v.to_lowercase())),
        Op::Matches => values
            .iter()
            // Patterns passed `model::check_pattern`; the size limit only keeps this compile
            // as small as the checks already made it.
            .any(|v| {
                regex::RegexBuilder::new(v)
                    .size_limit(1 << 20)
                    .build()
                    .is_ok_and(|re| re.is_match(name))
            }),
    }
}

/// Splits a filter into the goal conditions ANDed at its top and the rest: conversion rate
/// divides visitors who pass both by visitors who pass the rest.
pub fn split_goal_filter(filter: Option<&Filter>) -> Result<(Option<Filter>, bool), QueryError> {
    let Some(filter) = filter else {
        return Ok((None, false));
    };
    let parts: Vec<Filter> = match filter {
        Filter::And(parts) => parts.clone(),
        other => vec![other.clone()],
    };
    let (goal, rest): (Vec<Filter>, Vec<Filter>) = parts.into_iter().partition(|f| {
        matches!(
            f,
            Filter::Condition {
                dimension: Dimension::Goal,
                ..
            }
        )
    });
    if rest.iter().any(|f| f.dimensions().contains(&&Dimension::Goal)) {
        return Err(QueryError::bad(
            "filters",
            "with conversion_rate, goal filters must stand at the top level, not inside or/not",
        ));
    }
    let rest = match rest.len() {
        0 => None,
        1 => rest.into_iter().next(),
        _ => Some(Filter::And(rest)),
    };
    Ok((rest, !goal.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_query;
    use chrono::{TimeZone, Utc};
    use serde_json::json;
    use sightline_core::spec::TenantSpec;

    fn spec() -> TenantSpec {
        serde_yaml::from_str("sites: { open: true }\ngoals:\n  - { name: Signup, event: signup }\n  - { name: Checkout, page: '/checkout/*' }").unwrap()
    }

    fn q(body: serde_json::Value) -> Query {
        parse_query(&body, &spec(), Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap()).unwrap()
    }

    /// Storage with the daily tier through 2026-11-17 (four days before "now" above), so
    /// the monthly tier through October.
    fn sealed() -> StorageState {
        StorageState {
            layout: Layout::Tiers,
            daily_through: Some(day(2026, 11, 17)),
            daily_timezones: String::new(),
            monthly_through: Some(day(2026, 10, 31)),
            generation: None,
        }
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap()
    }

    fn source(body: serde_json::Value) -> Result<Source, QueryError> {
        choose_source(&q(body), chrono_tz::UTC, &sealed(), true)
    }

    fn rollup(dim: Option<&'static str>, tier: RollupTier) -> Source {
        Source::Rollup { dim, tier }
    }

    #[test]
    fn chooses_the_cheapest_table_that_can_answer() {
        let daily = RollupTier::Daily {
            through: day(2026, 11, 17),
        };
        let base = json!({"site_id": "s", "metrics": ["visitors"], "date_range": "7d"});
        let with = |extra: serde_json::Value| {
            let mut b = base.clone();
            b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            b
        };
        assert_eq!(source(base.clone()).unwrap(), rollup(None, daily));
        assert_eq!(
            source(with(json!({"dimensions": ["time:day"]}))).unwrap(),
            rollup(None, daily)
        );
        assert_eq!(
            source(with(json!({"dimensions": ["source", "time:day"]}))).unwrap(),
            rollup(Some("source"), daily)
        );
        assert_eq!(
            source(with(
                json!({"filters": [["or", [["is", "source", ["a"]], ["matches", "source", ["^b"]]]]]})
            ))
            .unwrap(),
            rollup(Some("source"), daily)
        );
        assert_eq!(
            source(with(
                json!({"dimensions": ["page"], "filters": [["is", "country", ["DE"]]]})
            ))
            .unwrap(),
            Source::Events
        );
        assert_eq!(
            source(with(json!({"dimensions": ["props:plan"]}))).unwrap(),
            Source::Events
        );
        assert_eq!(source(with(json!({"dimensions": ["goal"]}))).unwrap(), Source::Events);
        assert_eq!(source(with(json!({"metrics": ["revenue"]}))).unwrap(), Source::Events);
        assert_eq!(source(with(json!({"path": "events"}))).unwrap(), Source::Events);
        assert!(source(with(json!({"dimensions": ["props:plan"], "path": "rollup"}))).is_err());
    }

    #[test]
    fn the_daily_tier_answers_only_whole_sealed_days_in_the_sites_zone() {
        let quarter = rollup(None, RollupTier::QuarterHour);
        let base = json!({"site_id": "s", "metrics": ["visitors"], "date_range": "7d"});
        let with = |extra: serde_json::Value| {
            let mut b = base.clone();
            b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            b
        };
        // Hours, another zone, days after the sealed ones, or timezones changed since.
        assert_eq!(source(with(json!({"dimensions": ["time:hour"]}))).unwrap(), quarter);
        assert_eq!(source(with(json!({"timezone": "Asia/Kolkata"}))).unwrap(), quarter);
        assert_eq!(source(with(json!({"date_range": "today"}))).unwrap(), quarter);
        assert_eq!(
            choose_source(&q(base.clone()), chrono_tz::UTC, &sealed(), false).unwrap(),
            quarter
        );
        assert_eq!(
            choose_source(&q(base.clone()), chrono_tz::Asia::Kolkata, &sealed(), true).unwrap(),
            quarter,
            "the site's zone is not the query's"
        );
        // Forcing a tier: the quarter-hour tier always answers, the daily one only when exact.
        assert_eq!(source(with(json!({"tier": "quarter_hour"}))).unwrap(), quarter);
        assert!(source(with(json!({"tier": "daily", "dimensions": ["time:hour"]}))).is_err());
        // A database still on the hourly layout answers from it.
        let hourly = StorageState::default();
        assert_eq!(
            choose_source(&q(base.clone()), chrono_tz::UTC, &hourly, true).unwrap(),
            rollup(None, RollupTier::Hourly)
        );
        assert!(choose_source(&q(with(json!({"tier": "daily"}))), chrono_tz::UTC, &hourly, true).is_err());
    }

    #[test]
    fn months_of_a_range_the_monthly_tier_holds() {
        let (whole, to_date) = (day(2026, 10, 31), day(2026, 11, 17));
        // Whole months, then November to date (its rows cover the 1st to the 17th).
        assert_eq!(
            month_rows(day(2025, 12, 1), day(2026, 11, 21), whole, to_date),
            Some((day(2025, 12, 1), day(2026, 11, 1)))
        );
        // A range starting on the 2nd leaves its month out; ending on the 30th, October.
        assert_eq!(
            month_rows(day(2026, 8, 2), day(2026, 10, 30), whole, to_date),
            Some((day(2026, 9, 1), day(2026, 9, 1)))
        );
        assert_eq!(month_rows(day(2026, 9, 2), day(2026, 10, 30), whole, to_date), None);
        // November to date only when the range reaches the 17th.
        assert_eq!(
            month_rows(day(2026, 11, 1), day(2026, 11, 17), whole, to_date),
            Some((day(2026, 11, 1), day(2026, 11, 1)))
        );
        assert_eq!(month_rows(day(2026, 11, 1), day(2026, 11, 16), whole, to_date), None);
        assert_eq!(
            month_rows(day(2026, 10, 1), day(2026, 11, 16), whole, to_date),
            Some((day(2026, 10, 1), day(2026, 10, 1)))
        );
        // A month whose last day the daily tier holds is whole: no month to date after it.
        assert_eq!(
            month_rows(
                day(2026, 11, 1),
                day(2026, 12, 10),
                day(2026, 11, 30),
                day(2026, 11, 30)
            ),
            Some((day(2026, 11, 1), day(2026, 11, 1)))
        );
        // A state between two writes of a seal (the daily tier into December, the monthly
        // tier still through October): November is neither whole nor to date, and the months
        // stop before it.
        assert_eq!(
            month_rows(day(2026, 10, 1), day(2026, 12, 5), whole, day(2026, 12, 1)),
            Some((day(2026, 10, 1), day(2026, 10, 1)))
        );
        // Never past the daily tier, whatever the monthly state says.
        assert_eq!(
            month_rows(day(2026, 11, 1), day(2026, 11, 30), day(2026, 12, 31), to_date),
            None
        );
        // February of a leap year ends on the 29th.
        let (whole, to_date) = (day(2028, 12, 31), day(2029, 1, 20));
        assert_eq!(month_rows(day(2028, 2, 1), day(2028, 2, 28), whole, to_date), None);
        assert_eq!(
            month_rows(day(2028, 2, 1), day(2028, 2, 29), whole, to_date),
            Some((day(2028, 2, 1), day(2028, 2, 1)))
        );
    }

    #[test]
    fn the_monthly_tier_answers_whole_sealed_months_of_totals_and_month_buckets() {
        let months = |first, last| RollupTier::Monthly {
            months: (first, last),
            through: day(2026, 11, 17),
        };
        let daily = RollupTier::Daily {
            through: day(2026, 11, 17),
        };
        let year = json!({"site_id": "s", "metrics": ["visitors"], "date_range": "12mo"});
        let with = |extra: serde_json::Value| {
            let mut b = year.clone();
            b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            b
        };
        // "12mo" on 2026-11-21 is 2025-12-01 to 2026-11-21: December to October are sealed
        // whole, November to date (through the 17th).
        let sealed_year = months(day(2025, 12, 1), day(2026, 11, 1));
        assert_eq!(source(year.clone()).unwrap(), rollup(None, sealed_year));
        assert_eq!(
            source(with(json!({"dimensions": ["time:month"]}))).unwrap(),
            rollup(None, sealed_year)
        );
        assert_eq!(
            source(with(json!({"dimensions": ["page"]}))).unwrap(),
            rollup(Some("page"), sealed_year)
        );
        assert_eq!(
            source(with(json!({"dimensions": ["source", "time:month"]}))).unwrap(),
            rollup(Some("source"), sealed_year)
        );
        // Days and weeks lie within months: the daily tier; hours: the quarter-hour tier.
        assert_eq!(
            source(with(json!({"dimensions": ["time:day"]}))).unwrap(),
            rollup(None, daily)
        );
        assert_eq!(
            source(with(json!({"dimensions": ["time:week"]}))).unwrap(),
            rollup(None, daily)
        );
        assert_eq!(
            source(with(
                json!({"dimensions": ["time:hour"], "date_range": ["2026-10-01", "2026-10-31"]})
            ))
            .unwrap(),
            rollup(None, RollupTier::QuarterHour)
        );
        // A range from the 2nd: the months after; November to date once the range reaches
        // the 17th; no month starting in the range, another timezone, or no monthly tier
        // yet: none.
        assert_eq!(
            source(with(json!({"date_range": ["2026-09-02", "2026-10-31"]}))).unwrap(),
            rollup(None, months(day(2026, 10, 1), day(2026, 10, 1)))
        );
        assert_eq!(
            source(with(json!({"date_range": ["2026-10-02", "2026-11-17"]}))).unwrap(),
            rollup(None, months(day(2026, 11, 1), day(2026, 11, 1)))
        );
        assert_eq!(
            source(with(json!({"date_range": "month"}))).unwrap(),
            rollup(None, months(day(2026, 11, 1), day(2026, 11, 1))),
            "this month to date"
        );
        assert_eq!(
            source(with(json!({"date_range": ["2026-10-02", "2026-11-16"]}))).unwrap(),
            rollup(None, daily),
            "November's rows run to the 17th"
        );
        assert_eq!(
            source(with(json!({"date_range": ["2026-10-02", "2026-11-21"]}))).unwrap(),
            rollup(None, months(day(2026, 11, 1), day(2026, 11, 1)))
        );
        assert_eq!(
            source(with(json!({"timezone": "Asia/Kolkata"}))).unwrap(),
            rollup(None, RollupTier::QuarterHour)
        );
        let no_months = StorageState {
            monthly_through: None,
            ..sealed()
        };
        assert_eq!(
            choose_source(&q(year.clone()), chrono_tz::UTC, &no_months, true).unwrap(),
            rollup(None, daily)
        );
        assert_eq!(
            choose_source(&q(year.clone()), chrono_tz::UTC, &sealed(), false).unwrap(),
            rollup(None, RollupTier::QuarterHour),
            "the tiers were built with other timezones"
        );
        // Forcing: daily reads no months; monthly only where it answers exactly.
        assert_eq!(source(with(json!({"tier": "daily"}))).unwrap(), rollup(None, daily));
        assert_eq!(
            source(with(json!({"tier": "monthly"}))).unwrap(),
            rollup(None, sealed_year)
        );
        let refused = source(with(json!({"tier": "monthly", "dimensions": ["time:day"]}))).unwrap_err();
        assert!(format!("{refused:?}").contains("monthly"), "{refused:?}");
        assert!(source(with(
            json!({"tier": "monthly", "date_range": ["2026-11-02", "2026-11-21"]})
        ))
        .is_err());
        assert!(choose_source(&q(with(json!({"tier": "monthly"}))), chrono_tz::UTC, &no_months, true).is_err());
    }

    #[test]
    fn a_monthly_plan_reads_months_then_the_other_days_then_the_quarter_hour_tier() {
        let through = day(2026, 11, 17);
        let param = |params: &Params, name: &str| params.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        // A range from the middle of August: its days of August, then September and October
        // whole, then November's sealed days, then the quarter-hour tier.
        let query = q(
            json!({"site_id": "s", "metrics": ["visitors"], "date_range": ["2026-08-20", "2026-11-21"], "dimensions": ["page"]}),
        );
        let tier = RollupTier::Monthly {
            months: (day(2026, 9, 1), day(2026, 10, 1)),
            through,
        };
        let plan = Plan::new("db", &query, &query.range, &[], rollup(Some("page"), tier)).unwrap();
        let (sql, params) = plan.rows_sql(&[], None);
        assert!(
            sql.contains("FROM db.rollup_dims_monthly")
                && sql.contains("FROM db.rollup_dims_daily")
                && sql.contains("FROM db.rollup_dims_15m")
                && sql.matches("UNION ALL").count() == 2,
            "{sql}"
        );
        for (name, value) in [
            ("first_month", "2026-09-01"),
            ("last_month", "2026-10-01"),
            ("first_day", "2026-08-20"),
            ("head_last", "2026-08-31"),
            ("daily_first", "2026-11-01"),
            ("daily_last", "2026-11-17"),
            ("tail_start", "2026-11-18 00:00:00.000"),
        ] {
            assert_eq!(param(&params, name).as_deref(), Some(value), "{name}");
        }
        // Whole months only: no daily days before them, none after, no quarter-hours.
        let query = q(
            json!({"site_id": "s", "metrics": ["visitors"], "date_range": ["2026-09-01", "2026-10-31"], "dimensions": ["time:month"]}),
        );
        let tier = RollupTier::Monthly {
            months: (day(2026, 9, 1), day(2026, 10, 1)),
            through,
        };
        let plan = Plan::new("db", &query, &query.range, &[], rollup(None, tier)).unwrap();
        let (sql, params) = plan.rows_sql(&[], None);
        assert!(
            sql.contains("FROM db.rollup_site_monthly") && !sql.contains("UNION ALL"),
            "{sql}"
        );
        assert!(
            sql.contains("toStartOfMonth(day)"),
            "month buckets of the month rows: {sql}"
        );
        assert_eq!(param(&params, "head_last"), None);
        assert_eq!(param(&params, "daily_last"), None);
        // The last month to date: its rows through the 17th (the version this state names),
        // no daily days after them, the quarter-hour tier from the 18th.
        let query = q(
            json!({"site_id": "s", "metrics": ["visitors"], "date_range": ["2026-08-20", "2026-11-21"], "dimensions": ["page"]}),
        );
        let tier = RollupTier::Monthly {
            months: (day(2026, 9, 1), day(2026, 11, 1)),
            through,
        };
        let plan = Plan::new("db", &query, &query.range, &[], rollup(Some("page"), tier)).unwrap();
        let (sql, params) = plan.rows_sql(&[], None);
        assert!(
            sql.contains("through = least(toLastDayOfMonth(month), {months_through:Date})"),
            "{sql}"
        );
        for (name, value) in [
            ("last_month", Some("2026-11-01")),
            ("months_through", Some("2026-11-17")),
            ("head_last", Some("2026-08-31")),
            ("daily_first", None),
            ("tail_start", Some("2026-11-18 00:00:00.000")),
        ] {
            assert_eq!(param(&params, name).as_deref(), value, "{name}");
        }
    }

    #[test]
    fn a_daily_plan_reads_the_quarter_hour_tier_after_its_days() {
        let query = q(json!({"site_id": "s", "metrics": ["visitors"], "date_range": "7d", "dimensions": ["time:day"]}));
        let through = day(2026, 11, 17);
        let plan = Plan::new(
            "db",
            &query,
            &query.range,
            &[],
            rollup(None, RollupTier::Daily { through }),
        )
        .unwrap();
        let (sql, params) = plan.rows_sql(&[], None);
        assert!(
            sql.contains("FROM db.rollup_site_daily")
                && sql.contains("UNION ALL")
                && sql.contains("FROM db.rollup_site_15m"),
            "{sql}"
        );
        assert!(params.0.iter().any(|(k, v)| k == "daily_last" && v == "2026-11-17"));
        assert!(params
            .0
            .iter()
            .any(|(k, v)| k == "tail_start" && v == "2026-11-18 00:00:00.000"));
        // A range the daily tier holds whole needs no second branch.
        let old = q(json!({"site_id": "s", "metrics": ["visitors"], "date_range": ["2026-11-01", "2026-11-10"]}));
        let plan = Plan::new("db", &old, &old.range, &[], rollup(None, RollupTier::Daily { through })).unwrap();
        assert!(!plan.rows_sql(&[], None).0.contains("UNION ALL"));
    }

    #[test]
    fn the_sealed_part_of_a_long_breakdown_or_total_is_merged_once_and_read_back() {
        let through = day(2026, 11, 17);
        let monthly = RollupTier::Monthly {
            months: (day(2026, 9, 1), day(2026, 10, 1)),
            through,
        };
        let evil = "x' OR 1=1; --";
        let body = |dims: serde_json::Value, range: serde_json::Value| {
            q(
                json!({"site_id": evil, "metrics": ["visitors", "pageviews"], "date_range": range,
                     "dimensions": dims, "filters": [["contains", "page", [evil]]]}),
            )
        };
        let plan_of =
            |query: &Query, tier| Plan::new("db", query, &query.range, &[], rollup(Some("page"), tier)).unwrap();

        let pages = body(json!(["page"]), json!(["2026-08-25", "2026-11-21"]));
        let plan = plan_of(&pages, monthly);
        let head = plan.sealed_head().expect("a long breakdown merges its sealed part");
        assert!(
            head.fill_sql.starts_with("INSERT INTO db.sealed_merges "),
            "{}",
            head.fill_sql
        );
        assert!(
            head.fill_sql.contains("FROM db.rollup_dims_monthly")
                && head.fill_sql.contains("FROM db.rollup_dims_daily")
        );
        assert!(
            head.fill_sql.ends_with("GROUP BY value"),
            "every value, whatever the filter"
        );
        assert!(
            !head.fill_sql.contains("rollup_dims_15m"),
            "the days after the sealed ones stay live"
        );
        assert!(!head.fill_sql.contains(evil), "the site is a parameter");
        // What the merge depends on: the site, the dimension, the months and the days.
        for (name, value) in [
            ("site", evil),
            ("dim", "page"),
            ("first_month", "2026-09-01"),
            ("months_through", "2026-11-17"),
        ] {
            assert!(head.key.contains(&format!("{name}={value}")), "{name}: {}", head.key);
            assert!(head.params.0.iter().any(|(n, v)| n == name && v == value), "{name}");
        }
        let other_site = body(json!(["page"]), json!(["2026-08-25", "2026-11-21"]));
        let mut other_site = other_site;
        other_site.site_id = "other".into();
        assert_ne!(plan_of(&other_site, monthly).sealed_head().unwrap().key, head.key);

        let merged = plan.with_merged_head(MergedHead { fill: 42, rows: 106 });
        let (sql, params) = merged.rows_sql(&[], Some((10, 0)));
        assert!(
            sql.contains("FROM db.sealed_merges WHERE fill = {merge_fill:UInt64}"),
            "{sql}"
        );
        assert!(
            sql.contains(MERGED_HEAD_MISSING) && sql.contains("{merge_rows:UInt64}"),
            "{sql}"
        );
        assert!(
            !sql.contains("rollup_dims_daily") && !sql.contains("rollup_dims_monthly"),
            "{sql}"
        );
        assert!(sql.contains("FROM db.rollup_dims_15m"), "the tail is read live: {sql}");
        assert!(
            sql.contains("multiSearchAnyCaseInsensitiveUTF8(value"),
            "the filter still applies: {sql}"
        );
        assert!(!sql.contains(evil));
        assert!(params.0.contains(&("merge_fill".to_string(), "42".to_string())));
        assert!(params.0.contains(&("merge_rows".to_string(), "106".to_string())));

        // Totals merge into one row; the site table.
        let total = q(json!({"site_id": "s", "metrics": ["visitors"], "date_range": ["2026-08-25", "2026-11-21"]}));
        let plan = Plan::new("db", &total, &total.range, &[], rollup(None, monthly)).unwrap();
        let head = plan.sealed_head().unwrap();
        assert!(head.fill_sql.contains("SELECT {merge_fill:UInt64}, ''") && !head.fill_sql.contains("GROUP BY"));

        // Days and months are rows of their own; short ranges have little to merge.
        let by_day = body(json!(["page", "time:day"]), json!(["2026-08-25", "2026-11-21"]));
        assert!(plan_of(&by_day, RollupTier::Daily { through }).sealed_head().is_none());
        let week = body(json!(["page"]), json!(["2026-11-09", "2026-11-21"]));
        assert!(plan_of(&week, RollupTier::Daily { through }).sealed_head().is_none());
        let weeks = body(json!(["page"]), json!(["2026-11-04", "2026-11-21"]));
        assert!(plan_of(&weeks, RollupTier::Daily { through }).sealed_head().is_some());
        assert!(plan_of(&weeks, RollupTier::QuarterHour).sealed_head().is_none());
    }

    #[test]
    fn user_input_is_never_sql_text() {
        let evil = "x' OR 1=1; DROP TABLE events; --";
        let query = q(json!({
            "site_id": evil, "metrics": ["visitors", "revenue"], "date_range": "7d",
            "dimensions": [format!("props:{evil}"), "country"],
            "filters": [["is", "page", [evil]], ["contains", "source", [evil]], ["matches", "browser", ["^x'.*"]], ["not", ["is_not", "os", [evil]]]]
        }));
        let plan = Plan::new(
            "db",
            &query,
            &query.range,
            &spec().goals,
            choose_source(&query, chrono_tz::UTC, &sealed(), true).unwrap(),
        )
        .unwrap();
        let (sql, params) = plan.rows_sql(&[(OrderKey::Metric(Metric::Visitors), true)], Some((10, 0)));
        let (count, _) = plan.count_sql();
        for text in [&sql, &count] {
            assert!(
                !text.contains("DROP") && !text.contains("1=1") && !text.contains("^x'"),
                "{text}"
            );
        }
        assert!(params.0.iter().any(|(_, v)| v == evil));
    }

    #[test]
    fn filter_values_take_the_stored_form() {
        let stored = |dim: &str, op: &str, value: &str| {
            let query = q(json!({"site_id": "s", "metrics": ["visitors"], "date_range": "7d",
                                 "filters": [[op, dim, [value]]]}));
            let plan = Plan::new("db", &query, &query.range, &[], Source::Events).unwrap();
            let (_, params) = plan.rows_sql(&[], None);
            params
                .0
                .iter()
                .find(|(k, _)| k.starts_with('f'))
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        for written in ["/caf%C3%A9", "/caf%c3%a9", "/café", "/café/"] {
            assert_eq!(stored("page", "is", written), "['/café']", "{written}");
        }
        assert_eq!(stored("entry_page", "is_not", "/thank-you/"), "['/thank-you']");
        assert_eq!(stored("page", "contains", "caf%C3%A9"), "['café']");
        assert_eq!(
            stored("page", "matches", "^/caf%C3%A9$"),
            "['^/caf%C3%A9$']",
            "patterns stay as written"
        );
        assert_eq!(stored("source", "is", "google"), "['Google']");
        assert_eq!(stored("source", "is", "fb"), "['Facebook']");
        assert_eq!(stored("source", "is", "newsletter"), "['newsletter']");
        assert_eq!(stored("channel", "is", "organic search"), "['Organic Search']");
        assert_eq!(stored("country", "is", "de"), "['de']", "other dimensions as written");
    }

    #[test]
    fn goals_become_conditions_on_events() {
        let query = q(
            json!({"site_id": "s", "metrics": ["visitors", "conversion_rate"], "date_range": "7d", "dimensions": ["goal"]}),
        );
        let plan = Plan::new("db", &query, &query.range, &spec().goals, Source::Events).unwrap();
        let (sql, params) = plan.rows_sql(&[], None);
        assert!(sql.contains("arrayJoin(arrayFilter"), "{sql}");
        assert!(params.0.iter().any(|(_, v)| v == "^/checkout/[^/]*$"));
        assert!(params.0.iter().any(|(_, v)| v == "Signup"));
    }

    #[test]
    fn conversion_rate_divides_by_the_filters_without_goals() {
        let query = q(
            json!({"site_id": "s", "metrics": ["conversion_rate"], "date_range": "7d",
            "filters": [["is", "goal", ["Signup"]], ["is", "country", ["DE"]]]}),
        );
        let (rest, had_goal) = split_goal_filter(query.filter.as_ref()).unwrap();
        assert!(had_goal);
        assert_eq!(rest.unwrap().dimensions(), vec![&Dimension::Column("country")]);
        let nested = json!({"site_id": "s", "metrics": ["conversion_rate"], "date_range": "7d",
            "filters": [["or", [["is", "goal", ["Signup"]], ["is", "country", ["DE"]]]]]});
        assert!(split_goal_filter(q(nested).filter.as_ref()).is_err());
    }
}
