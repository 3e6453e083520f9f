//! The query language: one JSON shape (`POST /v1/query`) that every GET endpoint is a
//! special case of. Parsed from JSON by hand so that every refusal names the exact part of
//! the query that is wrong (`filters[1][2]`, `dimensions[0]`, ...).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde_json::Value;
use sightline_core::schema;
use sightline_core::spec::TenantSpec;

use crate::error::QueryError;
use crate::request::{parse_filters, parse_metrics, parse_range, DateRange, Interval, RawParams, MAX_RANGE_DAYS};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Metric {
    Visitors,
    Visits,
    Pageviews,
    Events,
    BounceRate,
    VisitDuration,
    ViewsPerVisit,
    ConversionRate,
    Revenue,
    Percentage,
}

impl Metric {
    pub const ALL: [Metric; 10] = [
        Metric::Visitors,
        Metric::Visits,
        Metric::Pageviews,
        Metric::Events,
        Metric::BounceRate,
        Metric::VisitDuration,
        Metric::ViewsPerVisit,
        Metric::ConversionRate,
        Metric::Revenue,
        Metric::Percentage,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Metric::Visitors => "visitors",
            Metric::Visits => "visits",
            Metric::Pageviews => "pageviews",
            Metric::Events => "events",
            Metric::BounceRate => "bounce_rate",
            Metric::VisitDuration => "visit_duration",
            Metric::ViewsPerVisit => "views_per_visit",
            Metric::ConversionRate => "conversion_rate",
            Metric::Revenue => "revenue",
            Metric::Percentage => "percentage",
        }
    }

    pub fn parse(name: &str) -> Option<Metric> {
        Metric::ALL.iter().copied().find(|m| m.name() == name)
    }

    /// Like `parse`, with the refusal callers show: the unknown name and the known ones.
    pub fn parse_or_explain(name: &str) -> Result<Metric, String> {
        Metric::parse(name).ok_or_else(|| {
            let known: Vec<&str> = Metric::ALL.iter().map(|m| m.name()).collect();
            format!("unknown metric {name:?}; known: {}", known.join(", "))
        })
    }

    /// Made of session deltas: meaningful only for session attributes.
    pub fn is_session_metric(self) -> bool {
        matches!(
            self,
            Metric::Visits | Metric::BounceRate | Metric::VisitDuration | Metric::ViewsPerVisit
        )
    }

    /// Rates compare as a difference in points; counts as a relative change.
    pub fn is_rate(self) -> bool {
        matches!(self, Metric::BounceRate | Metric::ConversionRate | Metric::Percentage)
    }
}

/// What results are grouped by.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Dimension {
    Time(Interval),
    /// A rollup dimension (page, source, country, ...).
    Column(&'static str),
    /// A custom property, `props:KEY`.
    Prop(String),
    /// The goal an event completed.
    Goal,
}

impl Dimension {
    pub fn parse(text: &str) -> Option<Dimension> {
        if let Some(interval) = text.strip_prefix("time:") {
            return match interval {
                "hour" => Some(Dimension::Time(Interval::Hour)),
                "day" => Some(Dimension::Time(Interval::Day)),
                "week" => Some(Dimension::Time(Interval::Week)),
                "month" => Some(Dimension::Time(Interval::Month)),
                _ => None,
            };
        }
        if let Some(key) = text.strip_prefix("props:") {
            let ok = !key.is_empty() && key.len() <= 64 && !key.chars().any(char::is_control);
            return ok.then(|| Dimension::Prop(key.to_string()));
        }
        if text == "goal" {
            return Some(Dimension::Goal);
        }
        schema::dimension(text).map(|(name, _, _)| Dimension::Column(name))
    }

    pub fn label(&self) -> String {
        match self {
            Dimension::Time(Interval::Hour) => "time:hour".into(),
            Dimension::Time(Interval::Day) => "time:day".into(),
            Dimension::Time(Interval::Week) => "time:week".into(),
            Dimension::Time(Interval::Month) => "time:month".into(),
            Dimension::Column(c) => (*c).into(),
            Dimension::Prop(k) => format!("props:{k}"),
            Dimension::Goal => "goal".into(),
        }
    }

    /// Per-event dimensions: visit metrics mean nothing for them.
    pub fn is_event_level(&self) -> bool {
        match self {
            Dimension::Time(_) => false,
            Dimension::Column(c) => !schema::dimension(c).is_some_and(|(_, _, session)| session),
            Dimension::Prop(_) | Dimension::Goal => true,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    Is,
    IsNot,
    Contains,
    Matches,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Filter {
    /// `[op, dimension, [values]]`: true when the value satisfies the op for any listed value
    /// (for `is_not`: for none of them).
    Condition {
        op: Op,
        dimension: Dimension,
        values: Vec<String>,
    },
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
}

impl Filter {
    /// Every dimension the filter reads.
    pub fn dimensions(&self) -> Vec<&Dimension> {
        match self {
            Filter::Condition { dimension, .. } => vec![dimension],
            Filter::And(fs) | Filter::Or(fs) => fs.iter().flat_map(Filter::dimensions).collect(),
            Filter::Not(f) => f.dimensions(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Compare {
    PreviousPeriod,
    YearOverYear,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum OrderKey {
    Metric(Metric),
    Dimension(usize),
}

/// Which rollup tier answers; `Auto` lets the planner choose the coarsest exact one (tests
/// force each to compare them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TierHint {
    Auto,
    QuarterHour,
    Daily,
    Monthly,
}

/// Which table answers; `Auto` lets the planner choose (tests force either to compare them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathHint {
    Auto,
    Rollup,
    Events,
}

/// A validated query, with its date range resolved to absolute instants (so that a cached
/// "today" is never served tomorrow).
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    pub site_id: String,
    pub metrics: Vec<Metric>,
    pub range: DateRange,
    pub dimensions: Vec<Dimension>,
    pub filter: Option<Filter>,
    pub order_by: Vec<(OrderKey, bool)>,
    pub limit: u32,
    pub offset: u64,
    pub compare: Option<Compare>,
    pub path: PathHint,
    pub tier: TierHint,
}

pub const MAX_LIMIT: u32 = 10_000;
pub const MAX_FILTER_DEPTH: usize = 4;
pub const MAX_CONDITIONS: usize = 20;
pub const MAX_VALUES: usize = 100;
pub const MAX_REGEX_LEN: usize = 256;
/// `matches` patterns in one query, over all its conditions: every one is run against every
/// row the query reads.
pub const MAX_PATTERNS: usize = 20;
/// The most copies a pattern's counted repetitions may ask for, nested counts multiplied
/// (`(a{10}){10}` is 100). re2, the warehouse's engine, accepts up to 1000, but matching
/// slows by orders of magnitude well before that: on the embedded engine
/// `([^x]*[^y]*){0,1000}Q$` took 67 ms per 2 KB path (2,000 paths held a reader 135 s,
/// far past a 3 s time limit the engine checks only between blocks of rows), while
/// `{0,100}` took microseconds.
pub const MAX_REPETITION: u64 = 100;
/// How deep groups and repetitions may nest in a pattern.
pub const MAX_REGEX_NESTING: u32 = 16;

/// Checks a `matches` pattern before it reaches the warehouse: its length, that it parses as
/// RE2-family syntax, its nesting and its counted repetitions (see [`MAX_REPETITION`]).
/// Whether re2 itself accepts it is the warehouse's verdict: its refusal is a 400 as well.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.len() > MAX_REGEX_LEN {
        return Err(format!("a pattern is longer than {MAX_REGEX_LEN} bytes"));
    }
    let ast = regex_syntax::ast::parse::ParserBuilder::new()
        .nest_limit(MAX_REGEX_NESTING)
        .build()
        .parse(pattern)
        .map_err(|e| format!("bad regular expression: {}", e.kind()))?;
    let copies = repetition_copies(&ast);
    if copies > MAX_REPETITION {
        return Err(format!(
            "the pattern's counted repetitions ask for {copies} copies (nested counts multiplied); at most {MAX_REPETITION}"
        ));
    }
    Ok(())
}

/// The most copies any part of `ast` is repeated: `{m,n}` counts n (`{m,}` counts m), nested
/// ones multiply; `*`, `+` and `?` are loops, not copies, and count 1.
fn repetition_copies(ast: &regex_syntax::ast::Ast) -> u64 {
    use regex_syntax::ast::{Ast, RepetitionKind, RepetitionRange};
    match ast {
        Ast::Repetition(r) => {
            let count = match &r.op.kind {
                RepetitionKind::Range(RepetitionRange::Exactly(n) | RepetitionRange::AtLeast(n)) => u64::from(*n),
                RepetitionKind::Range(RepetitionRange::Bounded(_, n)) => u64::from(*n),
                RepetitionKind::ZeroOrOne | RepetitionKind::ZeroOrMore | RepetitionKind::OneOrMore => 1,
            };
            count.max(1).saturating_mul(repetition_copies(&r.ast))
        }
        Ast::Group(g) => repetition_copies(&g.ast),
        Ast::Alternation(a) => a.asts.iter().map(repetition_copies).max().unwrap_or(1),
        Ast::Concat(c) => c.asts.iter().map(repetition_copies).max().unwrap_or(1),
        _ => 1,
    }
}

/// What the filters of one query have used of their allowance so far.
#[derive(Default)]
struct FilterBudget {
    conditions: usize,
    patterns: usize,
}

fn bad(parameter: &'static str, message: impl Into<String>) -> QueryError {
    QueryError::bad(parameter, message)
}

/// Parses and validates a JSON query for `site` (the path's or the body's site).
pub fn parse_query(body: &Value, spec: &TenantSpec, now: DateTime<Utc>) -> Result<Query, QueryError> {
    let obj = body
        .as_object()
        .ok_or_else(|| bad("query", "the query must be a JSON object"))?;
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "site_id"
                | "metrics"
                | "date_range"
                | "timezone"
                | "dimensions"
                | "filters"
                | "order_by"
                | "pagination"
                | "compare"
                | "path"
                | "tier"
        ) {
            return Err(bad("query", format!("unknown field {key:?}")));
        }
    }
    let site_id = obj
        .get("site_id")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("site_id", "required: the site to query"))?
        .to_string();

    let metrics = match obj.get("metrics") {
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut metrics = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let name = item
                    .as_str()
                    .ok_or_else(|| bad("metrics", format!("metrics[{i}] must be a string")))?;
                let m = Metric::parse_or_explain(name).map_err(|e| bad("metrics", format!("metrics[{i}]: {e}")))?;
                if !metrics.contains(&m) {
                    metrics.push(m);
                }
            }
            metrics
        }
        _ => return Err(bad("metrics", "required: a non-empty array of metric names")),
    };

    let mut params = RawParams::new();
    if let Some(tz) = obj.get("timezone") {
        params.insert(
            "timezone".into(),
            tz.as_str()
                .ok_or_else(|| bad("timezone", "must be an IANA timezone name"))?
                .to_string(),
        );
    }
    match obj.get("date_range") {
        None => {}
        Some(Value::String(period)) => {
            params.insert("period".into(), period.clone());
        }
        Some(Value::Array(pair)) if pair.len() == 2 => {
            let date = |i: usize| {
                pair[i]
                    .as_str()
                    .map(str::to_string)
                    .ok_or_else(|| bad("date_range", "an ISO pair [\"YYYY-MM-DD\", \"YYYY-MM-DD\"]"))
            };
            params.insert("from".into(), date(0)?);
            params.insert("to".into(), date(1)?);
        }
        Some(_) => {
            return Err(bad(
                "date_range",
                "a period name (today, 7d, 30d, month, 12mo) or an ISO pair of dates",
            ))
        }
    }
    let site_tz: Tz = spec.site_timezone(&site_id);
    let range = parse_range(&params, site_tz, now).map_err(|e| match e {
        QueryError::BadParameter {
            parameter: "period" | "from" | "to",
            message,
        } => bad("date_range", message),
        other => other,
    })?;

    let mut dimensions = Vec::new();
    if let Some(dims) = obj.get("dimensions") {
        let dims = dims
            .as_array()
            .ok_or_else(|| bad("dimensions", "must be an array of dimension names"))?;
        if dims.len() > 4 {
            return Err(bad("dimensions", "at most 4 dimensions"));
        }
        for (i, d) in dims.iter().enumerate() {
            let text = d
                .as_str()
                .ok_or_else(|| bad("dimensions", format!("dimensions[{i}] must be a string")))?;
            let dim = Dimension::parse(text)
                .ok_or_else(|| bad("dimensions", format!("dimensions[{i}]: unknown dimension {text:?}")))?;
            if dimensions.contains(&dim) {
                return Err(bad("dimensions", format!("dimensions[{i}]: {text} is listed twice")));
            }
            if matches!(dim, Dimension::Time(_)) && dimensions.iter().any(|d| matches!(d, Dimension::Time(_))) {
                return Err(bad("dimensions", "at most one time dimension"));
            }
            dimensions.push(dim);
        }
    }
    let filter = match obj.get("filters") {
        None => None,
        Some(Value::Array(items)) if items.is_empty() => None,
        Some(Value::Array(items)) => {
            let mut budget = FilterBudget::default();
            let parts = items
                .iter()
                .enumerate()
                .map(|(i, f)| parse_filter(f, &format!("filters[{i}]"), 1, &mut budget))
                .collect::<Result<Vec<_>, _>>()?;
            Some(if parts.len() == 1 {
                parts.into_iter().next().expect("one")
            } else {
                Filter::And(parts)
            })
        }
        Some(_) => return Err(bad("filters", "must be an array of filters")),
    };
    let mut order_by = Vec::new();
    if let Some(order) = obj.get("order_by") {
        let items = order
            .as_array()
            .ok_or_else(|| bad("order_by", "must be an array of [name, \"asc\"|\"desc\"]"))?;
        for (i, item) in items.iter().enumerate() {
            let pair = item
                .as_array()
                .filter(|p| p.len() == 2)
                .ok_or_else(|| bad("order_by", format!("order_by[{i}] must be [name, \"asc\"|\"desc\"]")))?;
            let name = pair[0].as_str().unwrap_or_default();
            let desc = match pair[1].as_str() {
                Some("asc") => false,
                Some("desc") => true,
                _ => {
                    return Err(bad(
                        "order_by",
                        format!("order_by[{i}]: direction must be \"asc\" or \"desc\""),
                    ))
                }
            };
            let key = if let Some(m) = Metric::parse(name).filter(|m| metrics.contains(m)) {
                if m == Metric::Revenue {
                    return Err(bad(
                        "order_by",
                        "revenue is a sum per currency and cannot order results",
                    ));
                }
                OrderKey::Metric(m)
            } else if let Some(pos) = Dimension::parse(name).and_then(|d| dimensions.iter().position(|x| *x == d)) {
                OrderKey::Dimension(pos)
            } else {
                return Err(bad(
                    "order_by",
                    format!("order_by[{i}]: {name:?} is not a metric or dimension of this query"),
                ));
            };
            order_by.push((key, desc));
        }
    }

    let (limit, offset) = match obj.get("pagination") {
        None => (MAX_LIMIT, 0),
        Some(p) => {
            let limit = match p.get("limit") {
                None => MAX_LIMIT as u64,
                Some(v) => v
                    .as_u64()
                    .filter(|n| (1..=MAX_LIMIT as u64).contains(n))
                    .ok_or_else(|| bad("pagination", format!("limit must be 1 to {MAX_LIMIT}")))?,
            };
            let offset = match p.get("offset") {
                None => 0,
                Some(v) => v
                    .as_u64()
                    .filter(|n| *n <= 10_000_000)
                    .ok_or_else(|| bad("pagination", "offset must be 0 to 10,000,000"))?,
            };
            (limit as u32, offset)
        }
    };

    let compare = match obj.get("compare").map(|v| v.as_str()) {
        None => None,
        Some(Some("previous_period")) => Some(Compare::PreviousPeriod),
        Some(Some("year_over_year")) => Some(Compare::YearOverYear),
        Some(_) => return Err(bad("compare", "\"previous_period\" or \"year_over_year\"")),
    };
    let path = match obj.get("path").map(|v| v.as_str()) {
        None | Some(Some("auto")) => PathHint::Auto,
        Some(Some("rollup")) => PathHint::Rollup,
        Some(Some("events")) => PathHint::Events,
        Some(_) => return Err(bad("path", "\"auto\", \"rollup\" or \"events\"")),
    };
    let tier = match obj.get("tier").map(|v| v.as_str()) {
        None | Some(Some("auto")) => TierHint::Auto,
        Some(Some("quarter_hour")) => TierHint::QuarterHour,
        Some(Some("daily")) => TierHint::Daily,
        Some(Some("monthly")) => TierHint::Monthly,
        Some(_) => return Err(bad("tier", "\"auto\", \"quarter_hour\", \"daily\" or \"monthly\"")),
    };
    let query = Query {
        site_id,
        metrics,
        range,
        dimensions,
        filter,
        order_by,
        limit,
        offset,
        compare,
        path,
        tier,
    };
    check(&query, spec)?;
    Ok(query)
}

/// The query the GET endpoints share (`aggregate`, `timeseries`, `breakdown`): `metrics`,
/// the range (`period` or `from`/`to`, `timezone`; in `site_tz` by default) and `filters`
/// (`dim==value;dim!=value;dim~text`) from the query-string `params`, grouped by
/// `dimensions` (the endpoint's), every row, the planner's choice of table. Refusals name
/// their parameter. [`check`] is for the caller, after it sets pagination.
pub fn parse_get_query(
    params: &RawParams,
    site: &str,
    site_tz: Tz,
    dimensions: Vec<Dimension>,
    now: DateTime<Utc>,
) -> Result<Query, QueryError> {
    Ok(Query {
        site_id: site.to_string(),
        metrics: parse_metrics(params)?,
        range: parse_range(params, site_tz, now)?,
        dimensions,
        filter: parse_filters(params)?,
        order_by: Vec::new(),
        limit: MAX_LIMIT,
        offset: 0,
        compare: None,
        path: PathHint::Auto,
        tier: TierHint::Auto,
    })
}

/// The rules every query obeys, however it was written (JSON or GET parameters).
pub fn check(query: &Query, spec: &TenantSpec) -> Result<(), QueryError> {
    let (metrics, dimensions, filter) = (&query.metrics, &query.dimensions, &query.filter);
    if let Some(Dimension::Time(interval)) = dimensions.iter().find(|d| matches!(d, Dimension::Time(_))) {
        check_range_for_interval(&query.range, *interval)?;
    }
    let uses_goal = dimensions.contains(&Dimension::Goal)
        || filter
            .as_ref()
            .is_some_and(|f| f.dimensions().contains(&&Dimension::Goal));
    if uses_goal && spec.goals.is_empty() {
        return Err(bad("dimensions", "this tenant defines no goals"));
    }
    if metrics.contains(&Metric::ConversionRate) && !uses_goal {
        return Err(bad(
            "metrics",
            "conversion_rate needs a goal dimension or a goal filter",
        ));
    }
    if metrics.contains(&Metric::Percentage) && dimensions.iter().all(|d| matches!(d, Dimension::Time(_))) {
        return Err(bad(
            "metrics",
            "percentage is a share of the total: it needs a non-time dimension",
        ));
    }
    let event_dims: Vec<String> = dimensions
        .iter()
        .chain(filter.iter().flat_map(|f| f.dimensions()))
        .filter(|d| d.is_event_level())
        .map(Dimension::label)
        .collect();
    if let (Some(m), Some(d)) = (metrics.iter().find(|m| m.is_session_metric()), event_dims.first()) {
        return Err(bad(
            "metrics",
            format!(
                "{} describes visits, and {d} is a per-event dimension; use entry_page or drop {}",
                m.name(),
                m.name()
            ),
        ));
    }

    Ok(())
}

/// How long a range each time bucket may cover, so a series never has absurdly many points.
pub fn check_range_for_interval(range: &DateRange, interval: Interval) -> Result<(), QueryError> {
    let days = (range.last_day - range.first_day).num_days() + 1;
    let max = match interval {
        Interval::Hour => 31,
        Interval::Day => 731,
        Interval::Week | Interval::Month => MAX_RANGE_DAYS,
    };
    if days > max {
        return Err(bad(
            "date_range",
            format!("{days} days is too long for this interval (at most {max}); choose a longer interval"),
        ));
    }
    Ok(())
}

fn parse_filter(value: &Value, path: &str, depth: usize, budget: &mut FilterBudget) -> Result<Filter, QueryError> {
    if depth > MAX_FILTER_DEPTH {
        return Err(bad(
            "filters",
            format!("{path}: filters nest at most {MAX_FILTER_DEPTH} deep"),
        ));
    }
    let items = value.as_array().ok_or_else(|| {
        bad(
            "filters",
            format!("{path}: a filter is an array such as [\"is\", \"country\", [\"DE\"]]"),
        )
    })?;
    let op = items
        .first()
        .and_then(Value::as_str)
        .ok_or_else(|| bad("filters", format!("{path}[0]: the operator must be a string")))?;
    match op {
        "and" | "or" => {
            let children = items
                .get(1)
                .and_then(Value::as_array)
                .filter(|c| !c.is_empty() && items.len() == 2)
                .ok_or_else(|| bad("filters", format!("{path}: [\"{op}\", [filter, ...]]")))?;
            let parsed = children
                .iter()
                .enumerate()
                .map(|(i, c)| parse_filter(c, &format!("{path}[1][{i}]"), depth + 1, budget))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(if op == "and" {
                Filter::And(parsed)
            } else {
                Filter::Or(parsed)
            })
        }
        "not" => {
            let child = items
                .get(1)
                .filter(|_| items.len() == 2)
                .ok_or_else(|| bad("filters", format!("{path}: [\"not\", filter]")))?;
            Ok(Filter::Not(Box::new(parse_filter(
                child,
                &format!("{path}[1]"),
                depth + 1,
                budget,
            )?)))
        }
        "is" | "is_not" | "contains" | "matches" => {
            budget.conditions += 1;
            if budget.conditions > MAX_CONDITIONS {
                return Err(bad("filters", format!("at most {MAX_CONDITIONS} conditions")));
            }
            if items.len() != 3 {
                return Err(bad("filters", format!("{path}: [\"{op}\", dimension, [values]]")));
            }
            let dim_text = items[1]
                .as_str()
                .ok_or_else(|| bad("filters", format!("{path}[1]: the dimension must be a string")))?;
            let dimension = Dimension::parse(dim_text)
                .filter(|d| !matches!(d, Dimension::Time(_)))
                .ok_or_else(|| bad("filters", format!("{path}[1]: unknown dimension {dim_text:?}")))?;
            let values: Vec<String> = match &items[2] {
                Value::Array(vs) if !vs.is_empty() && vs.len() <= MAX_VALUES => vs
                    .iter()
                    .map(|v| v.as_str().map(str::to_string))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("filters", format!("{path}[2]: values must be strings")))?,
                Value::String(s) => vec![s.clone()],
                _ => return Err(bad("filters", format!("{path}[2]: 1 to {MAX_VALUES} string values"))),
            };
            if values.iter().any(|v| v.len() > 1024) {
                return Err(bad("filters", format!("{path}[2]: a value is longer than 1024 bytes")));
            }
            let op = match op {
                "is" => Op::Is,
                "is_not" => Op::IsNot,
                "contains" => Op::Contains,
                _ => Op::Matches,
            };
            if op == Op::Matches {
                budget.patterns += values.len();
                if budget.patterns > MAX_PATTERNS {
                    return Err(bad(
                        "filters",
                        format!("{path}[2]: at most {MAX_PATTERNS} `matches` patterns in one query"),
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    check_pattern(v).map_err(|e| bad("filters", format!("{path}[2][{i}]: {e}")))?;
                }
            }
            Ok(Filter::Condition { op, dimension, values })
        }
        other => Err(bad(
            "filters",
            format!("{path}[0]: unknown operator {other:?}; use is, is_not, contains, matches, and, or, not"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_are_bounded_before_any_engine_sees_them() {
        for ok in [
            "^/docs/.+",
            "(a|b){0,100}c",
            "(a{10}){10}",
            "[[:alpha:]]+",
            "\\pN",
            "(?i)blog",
        ] {
            assert_eq!(check_pattern(ok), Ok(()), "{ok}");
        }
        for (bad, says) in [
            ("(a|b){0,1000}c", "1000 copies"),
            ("(a{11}){10}", "110 copies"),
            ("a{101,}", "101 copies"),
            ("((((((((((((((((((a))))))))))))))))))", "nest"),
            ("(a", "bad regular expression"),
        ] {
            let e = check_pattern(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert!(check_pattern(&"a".repeat(MAX_REGEX_LEN + 1))
            .unwrap_err()
            .contains("longer"));
    }

    #[test]
    fn a_query_holds_at_most_max_patterns() {
        let spec: TenantSpec = serde_yaml::from_str("sites: {open: true}").unwrap();
        let query = |patterns: usize| {
            let values: Vec<String> = (0..patterns).map(|i| format!("^/p{i}")).collect();
            serde_json::json!({"site_id": "s", "metrics": ["visitors"], "path": "events",
                "filters": [["matches", "page", values]]})
        };
        assert!(parse_query(&query(MAX_PATTERNS), &spec, Utc::now()).is_ok());
        let e = parse_query(&query(MAX_PATTERNS + 1), &spec, Utc::now())
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 20 `matches` patterns"), "{e}");
    }
}
