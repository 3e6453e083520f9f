//! Query planning: which table answers (the site rollup, the dimension rollup, or the
//! processed `events` table when filters span several dimensions), and the parameterised
//! SQL for it. User input only ever travels as bound parameters.

use serde_json::Value;
use sightline_core::schema::{self, DIM_ROLLUP, EVENTS_TABLE, SITE_ROLLUP};
use sightline_core::warehouse::Params;

use crate::error::QueryError;
use crate::request::{DateRange, Filter, FilterOp, Interval, Metric};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    SiteRollup,
    DimRollup(&'static str),
    Events,
}

/// The FROM/WHERE of a query, with its parameters; SELECT and GROUP BY are added per endpoint.
#[derive(Clone, Debug)]
pub struct Plan {
    pub source: Source,
    pub from_where: String,
    pub params: Params,
    time_column: &'static str,
}

const ROLLUP_METRICS: &str = "uniqMerge(visitors) AS visitors, toInt64(sum(visits)) AS visits, toUInt64(sum(pageviews)) AS pageviews, \
toUInt64(sum(events)) AS events, toInt64(sum(bounces)) AS bounces, toInt64(sum(duration)) AS duration";
const EVENT_METRICS: &str = "uniq(visitor_id) AS visitors, toInt64(sum(visit_delta)) AS visits, toUInt64(sum(is_pageview)) AS pageviews, \
toUInt64(count()) AS events, toInt64(sum(bounce_delta)) AS bounces, toInt64(sum(duration_delta)) AS duration";

fn is_session_dimension(name: &str) -> bool {
    schema::dimension(name).is_some_and(|(_, _, session)| session)
}

fn events_column(name: &str) -> &'static str {
    schema::dimension(name)
        .map(|(_, column, _)| column)
        .unwrap_or("pathname")
}

/// Dimensions whose empty value means "not tagged" and is left out of breakdowns.
fn skips_empty(name: &str) -> bool {
    name.starts_with("utm_")
}

pub fn plan(
    db: &str,
    site: &str,
    range: &DateRange,
    filters: &[Filter],
    breakdown: Option<&'static str>,
    metrics: &[Metric],
) -> Result<Plan, QueryError> {
    let mut dims: Vec<&'static str> = filters.iter().map(|f| f.dimension).collect();
    dims.extend(breakdown);
    dims.sort_unstable();
    dims.dedup();
    if let Some(event_dim) = dims.iter().find(|d| !is_session_dimension(d)) {
        if let Some(m) = metrics.iter().find(|m| m.is_session_metric()) {
            return Err(QueryError::bad(
                "metrics",
                format!("{} describes visits, and {event_dim} is a per-event dimension; use entry_page or drop {}", m.name(), m.name()),
            ));
        }
    }
    let source = match dims.as_slice() {
        [] => Source::SiteRollup,
        [one] => Source::DimRollup(one),
        _ => Source::Events,
    };
    let mut params = Params::new()
        .bind("site", site)
        .bind(
            "start",
            sightline_core::event::ch_datetime::format(&range.start),
        )
        .bind(
            "end",
            sightline_core::event::ch_datetime::format(&range.end),
        )
        .bind("tz", range.tz.name());
    let (table, time_column) = match source {
        Source::SiteRollup => (SITE_ROLLUP, "hour"),
        Source::DimRollup(_) => (DIM_ROLLUP, "hour"),
        Source::Events => (EVENTS_TABLE, "ts"),
    };
    let mut conditions = vec![
        "site_id = {site:String}".to_string(),
        format!("{time_column} >= {{start:DateTime64(3, 'UTC')}}"),
        format!("{time_column} < {{end:DateTime64(3, 'UTC')}}"),
    ];
    if let Source::DimRollup(dim) = source {
        params.push("dim", dim);
        conditions.push("dimension = {dim:String}".into());
    }
    if source == Source::Events {
        conditions.push("is_bot = 0".into());
    }
    for (i, filter) in filters.iter().enumerate() {
        let column = value_expression(source, filter.dimension);
        let name = format!("f{i}");
        params.push(&name, &filter.value);
        conditions.push(match filter.op {
            FilterOp::Is => format!("{column} = {{{name}:String}}"),
            FilterOp::IsNot => format!("{column} != {{{name}:String}}"),
            FilterOp::Contains => {
                format!("positionCaseInsensitiveUTF8({column}, {{{name}:String}}) > 0")
            }
        });
    }
    if let Some(dim) = breakdown.filter(|d| skips_empty(d)) {
        conditions.push(format!("{} != ''", value_expression(source, dim)));
    }
    let from_where = format!("FROM {db}.{table} WHERE {}", conditions.join(" AND "));
    Ok(Plan {
        source,
        from_where,
        params,
        time_column,
    })
}

/// The column holding a dimension's value in the plan's table.
fn value_expression(source: Source, dimension: &str) -> String {
    match source {
        Source::DimRollup(_) => "value".to_string(),
        _ => format!("toString({})", events_column(dimension)),
    }
}

impl Plan {
    fn metrics_sql(&self) -> &'static str {
        match self.source {
            Source::Events => EVENT_METRICS,
            _ => ROLLUP_METRICS,
        }
    }

    pub fn aggregate_sql(&self) -> String {
        format!("SELECT {} {}", self.metrics_sql(), self.from_where)
    }

    /// Buckets are labelled in the range's timezone: `YYYY-MM-DD HH:00:00` for hours, the
    /// first day (`YYYY-MM-DD`) otherwise; weeks start on Monday.
    pub fn timeseries_sql(&self, interval: Interval) -> String {
        let t = self.time_column;
        let bucket = match interval {
            Interval::Hour => format!("formatDateTime(toStartOfHour(toTimeZone({t}, {{tz:String}})), '%Y-%m-%d %H:00:00')"),
            Interval::Day => format!("toString(toDate({t}, {{tz:String}}))"),
            Interval::Week => format!("toString(toMonday(toDate({t}, {{tz:String}})))"),
            Interval::Month => format!("toString(toStartOfMonth(toDate({t}, {{tz:String}})))"),
        };
        format!(
            "SELECT {bucket} AS bucket, {} {} GROUP BY bucket ORDER BY bucket",
            self.metrics_sql(),
            self.from_where
        )
    }

    pub fn breakdown_sql(&self, dimension: &str, order_by: Metric) -> String {
        let value = value_expression(self.source, dimension);
        let order = match order_by {
            Metric::Visits | Metric::Pageviews | Metric::Events => order_by.name(),
            _ => "visitors",
        };
        format!(
            "SELECT {value} AS value, {} {} GROUP BY value ORDER BY {order} DESC, value ASC LIMIT {{limit:UInt32}} OFFSET {{offset:UInt32}}",
            self.metrics_sql(),
            self.from_where
        )
    }

    pub fn breakdown_total_sql(&self, dimension: &str) -> String {
        format!(
            "SELECT uniqExact({}) AS n {}",
            value_expression(self.source, dimension),
            self.from_where
        )
    }
}

/// The requested metrics of one result row, derived from the base sums.
pub fn metric_values(row: &Value, metrics: &[Metric]) -> serde_json::Map<String, Value> {
    let int = |k: &str| row[k].as_i64().unwrap_or(0);
    let visits = int("visits");
    let ratio = |num: i64, scale: f64| {
        if visits > 0 {
            num as f64 * scale / visits as f64
        } else {
            0.0
        }
    };
    metrics
        .iter()
        .map(|m| {
            let v: Value = match m {
                Metric::Visitors => int("visitors").into(),
                Metric::Visits => visits.into(),
                Metric::Pageviews => int("pageviews").into(),
                Metric::Events => int("events").into(),
                Metric::BounceRate => (ratio(int("bounces"), 100.0).round() as i64).into(),
                Metric::VisitDuration => (ratio(int("duration"), 1.0).round() as i64).into(),
                Metric::ViewsPerVisit => {
                    ((ratio(int("pageviews"), 1.0) * 100.0).round() / 100.0).into()
                }
            };
            (m.name().to_string(), v)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{parse_filters, parse_range, RawParams};
    use chrono::{TimeZone, Utc};

    fn range() -> DateRange {
        let p: RawParams = [("period".to_string(), "7d".to_string())].into();
        parse_range(
            &p,
            chrono_tz::UTC,
            Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn chooses_the_cheapest_table() {
        let r = range();
        let m = [Metric::Visitors];
        assert_eq!(
            plan("db", "s", &r, &[], None, &m).unwrap().source,
            Source::SiteRollup
        );
        let f =
            parse_filters(&[("filters".to_string(), "source==Google".to_string())].into()).unwrap();
        assert_eq!(
            plan("db", "s", &r, &f, None, &m).unwrap().source,
            Source::DimRollup("source")
        );
        assert_eq!(
            plan("db", "s", &r, &f, Some("source"), &m).unwrap().source,
            Source::DimRollup("source")
        );
        assert_eq!(
            plan("db", "s", &r, &f, Some("page"), &m).unwrap().source,
            Source::Events
        );
    }

    #[test]
    fn user_input_is_never_sql_text() {
        let evil = "x' OR 1=1; DROP TABLE events; --";
        let f = parse_filters(
            &[(
                "filters".to_string(),
                format!("page=={}", evil.replace(';', "\\;")),
            )]
            .into(),
        )
        .unwrap();
        let p = plan(
            "db",
            evil,
            &range(),
            &f,
            Some("country"),
            &[Metric::Visitors],
        )
        .unwrap();
        assert!(!p.from_where.contains(evil));
        assert!(!p
            .breakdown_sql("country", Metric::Visitors)
            .contains("DROP"));
        assert!(p.params.0.iter().any(|(_, v)| v == evil));
    }

    #[test]
    fn session_metrics_need_session_dimensions() {
        let e = plan(
            "db",
            "s",
            &range(),
            &[],
            Some("page"),
            &[Metric::BounceRate],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("bounce_rate") && e.contains("entry_page"), "{e}");
        assert!(plan(
            "db",
            "s",
            &range(),
            &[],
            Some("entry_page"),
            &[Metric::BounceRate]
        )
        .is_ok());
    }

    #[test]
    fn derived_metrics() {
        let row = serde_json::json!({"visitors": 3, "visits": 4, "pageviews": 9, "events": 10, "bounces": 1, "duration": 250});
        let v = metric_values(&row, &Metric::ALL);
        assert_eq!(v["bounce_rate"], 25);
        assert_eq!(v["visit_duration"], 63);
        assert_eq!(v["views_per_visit"], 2.25);
    }
}
