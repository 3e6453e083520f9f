//! Runs a planned query: the grouped rows, the totals that percentage and conversion rate
//! divide by, the row count for pagination, empty time buckets, and the comparison period.

use std::collections::HashMap;

use serde_json::{json, Map, Value};
use sightline_core::spec::Tenant;
use sightline_core::warehouse::tiers::{self, StorageState};
use sightline_core::warehouse::{Params, SelectLimits, Warehouse};

use crate::buckets;
use crate::error::QueryError;
use crate::merges::SealedMerges;
use crate::model::{Compare, Dimension, Metric, OrderKey, Query};
use crate::plan::{choose_source, split_goal_filter, Plan, Source};
use crate::request::{add_days, add_months, day_after, start_of_day, DateRange};

#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub dimensions: Vec<Value>,
    pub metrics: Vec<Value>,
    /// The comparison period's metrics and the change, when the query compares.
    pub comparison: Option<(Vec<Value>, Vec<Value>)>,
}

#[derive(Clone, Debug)]
pub struct Answer {
    pub rows: Vec<Row>,
    pub total_rows: u64,
    pub source: Source,
    pub range: DateRange,
    pub comparison_range: Option<DateRange>,
    /// With a comparison over a time dimension: how its buckets were matched.
    pub bucket_match: Option<BucketMatch>,
}

fn only_time(query: &Query) -> bool {
    matches!(query.dimensions.as_slice(), [Dimension::Time(_)])
}

/// Time first (ascending); else the first orderable metric descending; then dimensions.
fn default_order(query: &Query) -> Vec<(OrderKey, bool)> {
    let mut order = Vec::new();
    if let Some(i) = query.dimensions.iter().position(|d| matches!(d, Dimension::Time(_))) {
        order.push((OrderKey::Dimension(i), false));
    }
    let metric = query
        .metrics
        .iter()
        .copied()
        .find(|m| *m != Metric::Revenue)
        .unwrap_or(Metric::Visitors);
    order.push((OrderKey::Metric(metric), true));
    for i in 0..query.dimensions.len() {
        if !order.iter().any(|(k, _)| *k == OrderKey::Dimension(i)) {
            order.push((OrderKey::Dimension(i), false));
        }
    }
    order
}

/// `order` followed by every dimension it does not order by yet (ascending): rows are
/// unique by their dimensions, so rows that tie on the client's keys still come in one
/// order, the same on every path and tier and on every run, and so does every page of them
/// (the differential fuzz target found pages of one query differing between tiers).
fn with_ties_broken(query: &Query, mut order: Vec<(OrderKey, bool)>) -> Vec<(OrderKey, bool)> {
    for i in 0..query.dimensions.len() {
        if !order.iter().any(|(k, _)| *k == OrderKey::Dimension(i)) {
            order.push((OrderKey::Dimension(i), false));
        }
    }
    order
}

/// The period a query compares with: the same number of days just before, or the same dates
/// a year earlier; refused (naming `compare`) when that leaves the date domain.
pub fn comparison_range(range: &DateRange, compare: Compare) -> Result<DateRange, QueryError> {
    let (first, last) = match compare {
        Compare::PreviousPeriod => {
            let days = (range.last_day - range.first_day).num_days() + 1;
            let last = add_days("compare", range.first_day, -1)?;
            (add_days("compare", last, 1 - days)?, last)
        }
        Compare::YearOverYear => (
            add_months("compare", range.first_day, -12)?,
            add_months("compare", range.last_day, -12)?,
        ),
    };
    Ok(DateRange {
        start: start_of_day(range.tz, first),
        end: start_of_day(range.tz, day_after("compare", last)?),
        first_day: first,
        last_day: last,
        tz: range.tz,
    })
}

/// Bounds on one query's work, enforced by the engine on every statement (and by the
/// warehouse at the deadline: the statement is cancelled, not left running).
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub timeout_secs: u64,
    pub max_rows_to_read: u64,
    /// Engine threads per statement (0: the engine's default, one per core).
    pub max_threads: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            timeout_secs: 10,
            max_rows_to_read: 2_000_000_000,
            max_threads: 1,
        }
    }
}

/// What every statement of one query carries into the warehouse: the query's admission
/// ticket, released when the last of its statements has left the engine.
pub type Hold = std::sync::Arc<dyn std::any::Any + Send + Sync>;

impl Limits {
    pub fn select_limits(&self) -> SelectLimits {
        SelectLimits {
            timeout_secs: self.timeout_secs.max(1),
            max_rows_to_read: self.max_rows_to_read,
            max_threads: self.max_threads,
        }
    }

    /// Runs one statement within the limits; the engine's refusals become clear errors.
    pub async fn select(
        &self,
        wh: &dyn Warehouse,
        sql: &str,
        params: &Params,
        hold: &Hold,
    ) -> Result<Vec<Value>, QueryError> {
        let outcome = wh
            .select_within(sql, params, &self.select_limits(), Box::new(hold.clone()))
            .await;
        outcome.map_err(|e| engine_refusal(e, self))
    }
}

/// The engine's refusals of a client's statement, as the client should see them: limits
/// passed (504, 422) and a regular expression the engine's re2 cannot compile (400 naming
/// the filters); anything else is the warehouse's failure (503).
fn engine_refusal(e: sightline_core::Error, limits: &Limits) -> QueryError {
    let message = match &e {
        sightline_core::Error::DeadlineExceeded(_) => return QueryError::Timeout(limits.timeout_secs),
        sightline_core::Error::Query { message, .. } => message,
        _ => return e.into(),
    };
    if message.contains("TIMEOUT_EXCEEDED") || message.contains("QUERY_WAS_CANCELLED") {
        QueryError::Timeout(limits.timeout_secs)
    } else if message.contains("TOO_MANY_ROWS") {
        QueryError::TooManyRows(limits.max_rows_to_read)
    } else if message.contains("CANNOT_COMPILE_REGEXP") {
        QueryError::bad("filters", regexp_refusal(message))
    } else {
        e.into()
    }
}

/// "cannot compile re2: PATTERN, error: REASON. Look at ..." as "the warehouse's regular
/// expression engine (re2) refused PATTERN: REASON" (the pattern is the client's own).
fn regexp_refusal(message: &str) -> String {
    let detail = message
        .split_once("cannot compile re2: ")
        .map(|(_, rest)| rest.split(". Look at").next().unwrap_or(rest))
        .unwrap_or("the pattern does not compile");
    let detail: String = detail.chars().take(400).collect();
    format!("the warehouse's regular expression engine (re2) refused a `matches` pattern: {detail}")
}

/// What the planner needs to know of a tenant's storage (`tiers::StorageState`), with
/// whether its daily tier was built with the timezones the spec says now.
#[derive(Clone, Debug)]
pub struct Storage {
    pub state: StorageState,
    pub daily_zones_current: bool,
}

impl Storage {
    pub fn new(tenant: &Tenant, state: StorageState) -> Self {
        let daily_zones_current = state.daily_timezones == tiers::timezone_fingerprint(tenant);
        Self {
            state,
            daily_zones_current,
        }
    }

    fn source(&self, tenant: &Tenant, query: &Query) -> Result<Source, QueryError> {
        choose_source(
            query,
            tenant.spec.site_timezone(&query.site_id),
            &self.state,
            self.daily_zones_current,
        )
    }
}

/// The warehouse, the limits and the hold every statement of one query runs with.
#[derive(Clone, Copy)]
pub(crate) struct Statements<'a> {
    wh: &'a dyn Warehouse,
    limits: &'a Limits,
    hold: &'a Hold,
    /// The merged sealed ranges this process keeps, if it keeps them.
    merges: Option<&'a SealedMerges>,
}

impl Statements<'_> {
    pub(crate) async fn select(&self, sql: &str, params: &Params) -> Result<Vec<Value>, QueryError> {
        self.limits.select(self.wh, sql, params, self.hold).await
    }

    /// Runs an `INSERT … SELECT` within the same bounds as the query's SELECTs.
    pub(crate) async fn execute(&self, sql: &str, params: &Params) -> Result<(), QueryError> {
        self.wh
            .execute_within(sql, params, &self.limits.select_limits(), Box::new(self.hold.clone()))
            .await
            .map_err(|e| engine_refusal(e, self.limits))
    }

    /// The grouped rows of `plan` (rendered by `render`), with its sealed part from a merged
    /// fill where there is one (`merges`); returns the plan that answered. A fill whose rows
    /// are gone is forgotten, and the plan runs as it is.
    async fn plan_rows(
        &self,
        storage: &Storage,
        plan: Plan,
        render: impl Fn(&Plan) -> (String, Params),
    ) -> Result<(Plan, Vec<Value>), QueryError> {
        if let Some(merges) = self.merges {
            if let Some((merged, key)) = merges.merged(*self, storage, &plan).await {
                let (sql, params) = render(&merged);
                match self.select(&sql, &params).await {
                    Ok(rows) => return Ok((merged, rows)),
                    Err(e) if SealedMerges::fill_missing(&e) => {
                        tracing::warn!("a merged sealed range lost its rows; merging it again next time");
                        merges.forget(&key).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        let (sql, params) = render(&plan);
        let rows = self.select(&sql, &params).await?;
        Ok((plan, rows))
    }
}

/// Answers `query` for `tenant`: planned with `storage`, every statement within `limits`
/// and holding `hold`; with `merges`, the sealed parts of long ranges are merged once and
/// kept (`crate::merges`), without, every statement reads the tiers.
pub async fn run(
    wh: &dyn Warehouse,
    tenant: &Tenant,
    storage: &Storage,
    query: &Query,
    limits: &Limits,
    hold: &Hold,
    merges: Option<&SealedMerges>,
) -> Result<Answer, QueryError> {
    let st = Statements {
        wh,
        limits,
        hold,
        merges,
    };
    let source = storage.source(tenant, query)?;
    let (rows, total_rows) = run_range(st, tenant, storage, query, source, &query.range, true).await?;
    let mut answer = Answer {
        rows,
        total_rows,
        source,
        range: query.range.clone(),
        comparison_range: None,
        bucket_match: None,
    };
    if let Some(compare) = query.compare {
        let range = comparison_range(&query.range, compare)?;
        // The earlier period may lie in days another tier holds.
        let mut earlier = query.clone();
        earlier.range = range.clone();
        let earlier_source = storage.source(tenant, &earlier)?;
        let (previous, _) = run_range(st, tenant, storage, query, earlier_source, &range, false).await?;
        answer.bucket_match = attach_comparison(query, &mut answer.rows, &previous, &query.range, &range);
        answer.comparison_range = Some(range);
    }
    Ok(answer)
}

/// The plan of `query` over `range` from `source`, and how its main statement (the grouped
/// rows) is ordered and paginated (when `paginate` and not a time series).
#[allow(clippy::type_complexity)]
fn rows_plan(
    tenant: &Tenant,
    query: &Query,
    source: Source,
    range: &DateRange,
    paginate: bool,
) -> Result<(Plan, Vec<(OrderKey, bool)>, Option<(u32, u64)>), QueryError> {
    let plan = Plan::new(&tenant.database(), query, range, &tenant.spec.goals, source)?;
    let order = if query.order_by.is_empty() {
        default_order(query)
    } else {
        with_ties_broken(query, query.order_by.clone())
    };
    let limit = (paginate && !only_time(query)).then_some((query.limit, query.offset));
    Ok((plan, order, limit))
}

/// The same plan and its main statement with its bound parameters.
fn rows_statement(
    tenant: &Tenant,
    query: &Query,
    source: Source,
    range: &DateRange,
    paginate: bool,
) -> Result<(Plan, String, Params), QueryError> {
    let (plan, order, limit) = rows_plan(tenant, query, source, range, paginate)?;
    let (sql, params) = plan.rows_sql(&order, limit);
    Ok((plan, sql, params))
}

/// What `run` would choose and execute first for `query`: the source (table and tier) and
/// the main statement with its parameters, for EXPLAIN and timing outside the HTTP service
/// (query-bench). The statement is the one `run` sends, without the `Limits` settings.
pub fn main_statement(
    tenant: &Tenant,
    storage: &Storage,
    query: &Query,
) -> Result<(Source, String, Params), QueryError> {
    let source = storage.source(tenant, query)?;
    let (_, sql, params) = rows_statement(tenant, query, source, &query.range, true)?;
    Ok((source, sql, params))
}

async fn run_range(
    st: Statements<'_>,
    tenant: &Tenant,
    storage: &Storage,
    query: &Query,
    source: Source,
    range: &DateRange,
    paginate: bool,
) -> Result<(Vec<Row>, u64), QueryError> {
    let (plan, order, limit) = rows_plan(tenant, query, source, range, paginate)?;
    let time_only = only_time(query);
    let (plan, raw_rows) = st.plan_rows(storage, plan, |p| p.rows_sql(&order, limit)).await?;

    // Denominators: all visitors under the same filters (percentage), or under the filters
    // without their goal conditions (conversion rate).
    let mut totals = Totals::default();
    if query.metrics.contains(&Metric::Percentage) {
        totals.percentage = visitors_total(st, tenant, storage, query, query.filter.clone(), range).await?;
    }
    if query.metrics.contains(&Metric::ConversionRate) {
        let (rest, _) = split_goal_filter(query.filter.as_ref())?;
        totals.conversion = visitors_total(st, tenant, storage, query, rest, range).await?;
    }

    let mut rows: Vec<Row> = raw_rows
        .iter()
        .map(|r| Row {
            dimensions: (0..query.dimensions.len())
                .map(|i| r[format!("d{i}")].clone())
                .collect(),
            metrics: metric_values(r, &query.metrics, &totals),
            comparison: None,
        })
        .collect();
    let total_rows = if time_only {
        let Some(Dimension::Time(interval)) = query.dimensions.first() else {
            unreachable!("time_only")
        };
        let labels = buckets::labels(range, *interval);
        let mut by_label: HashMap<String, Row> = rows
            .drain(..)
            .filter_map(|r| r.dimensions[0].as_str().map(|l| (l.to_string(), r.clone())))
            .collect();
        rows = labels
            .iter()
            .map(|l| {
                by_label.remove(l).unwrap_or_else(|| Row {
                    dimensions: vec![Value::String(l.clone())],
                    metrics: metric_values(&Value::Null, &query.metrics, &totals),
                    comparison: None,
                })
            })
            .collect();
        let total = rows.len() as u64;
        if paginate {
            rows = rows
                .into_iter()
                .skip(query.offset as usize)
                .take(query.limit as usize)
                .collect();
        }
        total
    } else if paginate && !query.dimensions.is_empty() {
        match raw_rows.first().and_then(|r| r["total_rows"].as_u64()) {
            Some(total) => total,
            // A page past the end has no row to carry the total: count separately.
            None => {
                let (sql, params) = plan.count_sql();
                st.select(&sql, &params)
                    .await?
                    .first()
                    .and_then(|r| r["n"].as_u64())
                    .unwrap_or(0)
            }
        }
    } else {
        rows.len() as u64
    };
    Ok((rows, total_rows))
}

#[derive(Default)]
struct Totals {
    percentage: u64,
    conversion: u64,
}

async fn visitors_total(
    st: Statements<'_>,
    tenant: &Tenant,
    storage: &Storage,
    query: &Query,
    filter: Option<crate::model::Filter>,
    range: &DateRange,
) -> Result<u64, QueryError> {
    let total_query = Query {
        dimensions: Vec::new(),
        filter,
        metrics: vec![Metric::Visitors],
        compare: None,
        order_by: Vec::new(),
        range: range.clone(),
        ..query.clone()
    };
    let source = storage.source(tenant, &total_query)?;
    let plan = Plan::new(&tenant.database(), &total_query, range, &tenant.spec.goals, source)?;
    let (_, rows) = st.plan_rows(storage, plan, |p| p.rows_sql(&[], None)).await?;
    Ok(rows.first().and_then(|r| r["visitors"].as_u64()).unwrap_or(0))
}

fn share(part: i64, whole: u64) -> Value {
    if whole == 0 {
        json!(0.0)
    } else {
        json!((part as f64 * 1000.0 / whole as f64).round() / 10.0)
    }
}

/// The requested metrics of one result row (a null row gives zeros).
fn metric_values(row: &Value, metrics: &[Metric], totals: &Totals) -> Vec<Value> {
    let int = |k: &str| {
        row[k]
            .as_i64()
            .or_else(|| row[k].as_f64().map(|f| f as i64))
            .unwrap_or(0)
    };
    metrics
        .iter()
        .map(|m| match m {
            Metric::Visitors => json!(int("visitors")),
            Metric::Visits => json!(int("visits")),
            Metric::Pageviews => json!(int("pageviews")),
            Metric::Events => json!(int("events")),
            Metric::BounceRate => json!(int("bounce_rate")),
            Metric::VisitDuration => json!(int("visit_duration")),
            Metric::ViewsPerVisit => json!(row["views_per_visit"].as_f64().unwrap_or(0.0)),
            Metric::Percentage => share(int("visitors"), totals.percentage),
            Metric::ConversionRate => share(int("visitors"), totals.conversion),
            Metric::Revenue => match &row["revenue"] {
                Value::Object(m) => Value::Object(m.clone()),
                _ => Value::Object(Map::new()),
            },
        })
        .collect()
}

/// Change from the comparison to now: points for rates, percent for counts (null from 0).
fn change(metric: Metric, now: &Value, before: &Value) -> Value {
    match metric {
        Metric::Revenue => Value::Null,
        m if m.is_rate() => {
            let (a, b) = (now.as_f64().unwrap_or(0.0), before.as_f64().unwrap_or(0.0));
            json!(((a - b) * 10.0).round() / 10.0)
        }
        _ => {
            let (a, b) = (now.as_f64().unwrap_or(0.0), before.as_f64().unwrap_or(0.0));
            if b == 0.0 {
                Value::Null
            } else {
                json!(((a - b) * 100.0 / b).round() as i64)
            }
        }
    }
}

/// How the buckets of a compared time series were matched (see [`buckets::counterparts`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketMatch {
    /// `day_offset_and_local_hour`, `day_offset`, `week_offset` or `month_offset`.
    pub rule: &'static str,
    /// This period's buckets with no counterpart in the comparison period, in order; their
    /// comparison metrics and changes are null (there was no such time to count, which is
    /// not the same as a time with nothing in it, which counts as zero).
    pub without_counterpart: Vec<String>,
}

/// Sets each row's comparison: the row of the earlier period with the same dimension values,
/// its time bucket being the counterpart of this row's (zeros when the earlier period had
/// nothing there, nulls when it has no such bucket). Returns how time buckets were matched.
fn attach_comparison(
    query: &Query,
    rows: &mut [Row],
    previous: &[Row],
    now: &DateRange,
    before: &DateRange,
) -> Option<BucketMatch> {
    let zero = metric_values(&Value::Null, &query.metrics, &Totals::default());
    let nulls = vec![Value::Null; query.metrics.len()];
    let time = query.dimensions.iter().enumerate().find_map(|(i, d)| match d {
        Dimension::Time(interval) => Some((i, *interval)),
        _ => None,
    });
    let pairs = time.map(|(_, interval)| buckets::counterparts(now, before, interval));
    let counterpart: HashMap<&str, Option<&str>> = pairs
        .iter()
        .flatten()
        .map(|(label, other)| (label.as_str(), other.as_deref()))
        .collect();
    for row in rows.iter_mut() {
        // The dimension values the earlier row must have: the same, with the time bucket
        // replaced by its counterpart; None when the bucket has none.
        let wanted: Option<Vec<Value>> = match time {
            None => Some(row.dimensions.clone()),
            Some((i, _)) => {
                let other = row.dimensions[i]
                    .as_str()
                    .and_then(|label| counterpart.get(label).copied().flatten());
                other.map(|other| {
                    let mut dims = row.dimensions.clone();
                    dims[i] = Value::String(other.to_string());
                    dims
                })
            }
        };
        let before_metrics = match &wanted {
            None => nulls.clone(),
            Some(dims) => previous
                .iter()
                .find(|p| &p.dimensions == dims)
                .map(|p| p.metrics.clone())
                .unwrap_or_else(|| zero.clone()),
        };
        let changes = if wanted.is_none() {
            nulls.clone()
        } else {
            query
                .metrics
                .iter()
                .zip(row.metrics.iter().zip(&before_metrics))
                .map(|(m, (a, b))| change(*m, a, b))
                .collect()
        };
        row.comparison = Some((before_metrics, changes));
    }
    time.zip(pairs).map(|((_, interval), pairs)| BucketMatch {
        rule: buckets::match_rule(interval),
        without_counterpart: pairs
            .into_iter()
            .filter(|(_, other)| other.is_none())
            .map(|(label, _)| label)
            .collect(),
    })
}
