//! Parsing of query-string parameters into a typed request: metrics, date range, filters,
//! interval, breakdown property and pagination. Every refusal names its parameter.

use std::collections::HashMap;

use chrono::{DateTime, Datelike, Days, Months, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use sightline_core::schema;

use crate::error::QueryError;
use crate::model::{Dimension, Filter, Metric, Op};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interval {
    Hour,
    Day,
    Week,
    Month,
}

/// A half-open UTC range `[start, end)` and the calendar days it covers in `tz`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DateRange {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub first_day: NaiveDate,
    pub last_day: NaiveDate,
    pub tz: Tz,
}

pub type RawParams = HashMap<String, String>;

pub fn parse_metrics(params: &RawParams) -> Result<Vec<Metric>, QueryError> {
    let Some(text) = params.get("metrics") else {
        return Ok(vec![Metric::Visitors]);
    };
    let mut metrics = Vec::new();
    for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let metric = Metric::parse_or_explain(name).map_err(|e| QueryError::bad("metrics", e))?;
        if !metrics.contains(&metric) {
            metrics.push(metric);
        }
    }
    if metrics.is_empty() {
        return Err(QueryError::bad("metrics", "name at least one metric"));
    }
    Ok(metrics)
}

/// A dimension by name: a rollup dimension, `props:KEY` or `goal`.
pub fn parse_dimension(parameter: &'static str, name: &str) -> Result<Dimension, QueryError> {
    Dimension::parse(name)
        .filter(|d| !matches!(d, Dimension::Time(_)))
        .ok_or_else(|| {
            let known: Vec<&str> = schema::DIMENSIONS.iter().map(|(n, _, _)| *n).collect();
            QueryError::bad(
                parameter,
                format!(
                    "unknown dimension {name:?}; known: {}, props:KEY, goal",
                    known.join(", ")
                ),
            )
        })
}

/// Splits on `;` except where escaped as `\;` (and `\\` for a backslash).
fn split_clauses(text: &str) -> Vec<String> {
    let mut clauses = vec![String::new()];
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    clauses.last_mut().expect("never empty").push(next);
                }
            }
            ';' => clauses.push(String::new()),
            c => clauses.last_mut().expect("never empty").push(c),
        }
    }
    clauses
        .into_iter()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect()
}

/// `filters=source==Google;country!=DE;page~blog` (is, is not, contains); a `;` inside a
/// value is written `\\;`. The conditions are ANDed.
pub fn parse_filters(params: &RawParams) -> Result<Option<Filter>, QueryError> {
    let Some(text) = params.get("filters") else {
        return Ok(None);
    };
    let mut filters = Vec::new();
    for clause in split_clauses(text) {
        let clause = clause.as_str();
        let (dimension, op, value) = if let Some((d, v)) = clause.split_once("!=") {
            (d, Op::IsNot, v)
        } else if let Some((d, v)) = clause.split_once("==") {
            (d, Op::Is, v)
        } else if let Some((d, v)) = clause.split_once('~') {
            (d, Op::Contains, v)
        } else {
            return Err(QueryError::bad(
                "filters",
                format!("{clause:?}: expected DIMENSION==VALUE, DIMENSION!=VALUE or DIMENSION~TEXT"),
            ));
        };
        let dimension = parse_dimension("filters", dimension.trim())?;
        if value.len() > 1024 {
            return Err(QueryError::bad("filters", "a filter value is longer than 1024 bytes"));
        }
        filters.push(Filter::Condition {
            op,
            dimension,
            values: vec![value.to_string()],
        });
    }
    if filters.len() > 10 {
        return Err(QueryError::bad("filters", "at most 10 filters"));
    }
    Ok(match filters.len() {
        0 => None,
        1 => filters.pop(),
        _ => Some(Filter::And(filters)),
    })
}

pub fn parse_interval(params: &RawParams) -> Result<Interval, QueryError> {
    match params.get("interval").map(String::as_str) {
        None | Some("day") => Ok(Interval::Day),
        Some("hour") => Ok(Interval::Hour),
        Some("week") => Ok(Interval::Week),
        Some("month") => Ok(Interval::Month),
        Some(other) => Err(QueryError::bad(
            "interval",
            format!("{other:?}: expected hour, day, week or month"),
        )),
    }
}

/// The dates a query may name: from the Unix epoch to the last day the warehouse's
/// `DateTime64` columns can hold. Inside it, a day's neighbours and its midnight always exist.
pub fn date_domain() -> (NaiveDate, NaiveDate) {
    (
        NaiveDate::from_ymd_opt(1970, 1, 1).expect("a valid date"),
        NaiveDate::from_ymd_opt(2299, 12, 31).expect("a valid date"),
    )
}

fn parse_date(parameter: &'static str, text: &str) -> Result<NaiveDate, QueryError> {
    let shown: String = text.chars().take(40).collect();
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map_err(|_| QueryError::bad(parameter, format!("{shown:?} is not a date (YYYY-MM-DD)")))?;
    let (first, last) = date_domain();
    if !(first..=last).contains(&date) {
        return Err(QueryError::bad(
            parameter,
            format!("{shown:?} is outside the dates a query may cover ({first} to {last})"),
        ));
    }
    Ok(date)
}

/// `day + days`, or a refusal naming `parameter` when that leaves the date domain.
pub fn add_days(parameter: &'static str, day: NaiveDate, days: i64) -> Result<NaiveDate, QueryError> {
    let (first, last) = date_domain();
    let moved = if days >= 0 {
        day.checked_add_days(Days::new(days.unsigned_abs()))
    } else {
        day.checked_sub_days(Days::new(days.unsigned_abs()))
    };
    moved.filter(|d| (first..=last).contains(d)).ok_or_else(|| {
        QueryError::bad(
            parameter,
            format!("the range would leave the dates a query may cover ({first} to {last})"),
        )
    })
}

/// The day after `day` (a range's exclusive end, which may be the first day past the domain).
pub fn day_after(parameter: &'static str, day: NaiveDate) -> Result<NaiveDate, QueryError> {
    day.checked_add_days(Days::new(1))
        .ok_or_else(|| QueryError::bad(parameter, format!("{day} has no next day")))
}

/// `day` moved by whole months (negative: back), within the date domain.
pub fn add_months(parameter: &'static str, day: NaiveDate, months: i32) -> Result<NaiveDate, QueryError> {
    let (first, last) = date_domain();
    let moved = if months >= 0 {
        day.checked_add_months(Months::new(months.unsigned_abs()))
    } else {
        day.checked_sub_months(Months::new(months.unsigned_abs()))
    };
    moved.filter(|d| (first..=last).contains(d)).ok_or_else(|| {
        QueryError::bad(
            parameter,
            format!("the range would leave the dates a query may cover ({first} to {last})"),
        )
    })
}

/// Midnight of `day` in `tz` as UTC; on a DST gap, the first instant of the day.
pub fn start_of_day(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    let midnight = day.and_time(chrono::NaiveTime::MIN);
    match tz.from_local_datetime(&midnight) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        chrono::LocalResult::None => tz
            .from_local_datetime(&(midnight + chrono::Duration::hours(1)))
            .earliest()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| midnight.and_utc()),
    }
}

/// The longest range a query may cover, to keep scans bounded.
pub const MAX_RANGE_DAYS: i64 = 3 * 366;

/// `period` (today, 7d, 30d, month, 12mo, custom) or `from`/`to` (inclusive dates), in the
/// site's timezone or the `timezone` parameter.
pub fn parse_range(params: &RawParams, site_tz: Tz, now: DateTime<Utc>) -> Result<DateRange, QueryError> {
    let tz = match params.get("timezone") {
        Some(name) => sightline_core::spec::parse_timezone(name).map_err(|e| QueryError::bad("timezone", e))?,
        None => site_tz,
    };
    let today = now.with_timezone(&tz).date_naive();
    let explicit = params.contains_key("from") || params.contains_key("to");
    let period = params
        .get("period")
        .map(String::as_str)
        .unwrap_or(if explicit { "custom" } else { "30d" });
    let month_start = today.with_day(1).unwrap_or(today);
    let (first_day, last_day) = match period {
        "today" => (today, today),
        "7d" => (add_days("period", today, -6)?, today),
        "30d" => (add_days("period", today, -29)?, today),
        "month" => (month_start, today),
        "12mo" => (add_months("period", month_start, -11)?, today),
        "custom" => {
            let from = params
                .get("from")
                .ok_or_else(|| QueryError::bad("from", "required with a custom period"))?;
            let to = params
                .get("to")
                .ok_or_else(|| QueryError::bad("to", "required with a custom period"))?;
            (parse_date("from", from)?, parse_date("to", to)?)
        }
        other => {
            return Err(QueryError::bad(
                "period",
                format!("{other:?}: expected today, 7d, 30d, month, 12mo or custom"),
            ));
        }
    };
    if last_day < first_day {
        return Err(QueryError::bad("to", "is before from"));
    }
    if (last_day - first_day).num_days() >= MAX_RANGE_DAYS {
        return Err(QueryError::bad(
            "period",
            format!("a range may cover at most {MAX_RANGE_DAYS} days"),
        ));
    }
    Ok(DateRange {
        start: start_of_day(tz, first_day),
        end: start_of_day(tz, day_after("to", last_day)?),
        first_day,
        last_day,
        tz,
    })
}

pub fn parse_pagination(params: &RawParams) -> Result<(u32, u32), QueryError> {
    let limit = match params.get("limit") {
        None => 10,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| QueryError::bad("limit", "must be 1 to 1000"))?,
    };
    let page = match params.get("page") {
        None => 1,
        Some(v) => v
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=100_000).contains(n))
            .ok_or_else(|| QueryError::bad("page", "must be 1 or more"))?,
    };
    Ok((limit, page))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> RawParams {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn ranges_follow_the_timezone() {
        let now = Utc.with_ymd_and_hms(2026, 11, 21, 23, 30, 0).unwrap();
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let r = parse_range(&p(&[("period", "today")]), berlin, now).unwrap();
        // 23:30 UTC is already the 22nd in Berlin.
        assert_eq!(r.first_day, NaiveDate::from_ymd_opt(2026, 11, 22).unwrap());
        assert_eq!(r.start, Utc.with_ymd_and_hms(2026, 11, 21, 23, 0, 0).unwrap());
        let r = parse_range(&p(&[("from", "2026-11-01"), ("to", "2026-11-02")]), chrono_tz::UTC, now).unwrap();
        assert_eq!((r.end - r.start).num_hours(), 48);
        let r = parse_range(&p(&[("period", "12mo")]), chrono_tz::UTC, now).unwrap();
        assert_eq!(r.first_day, NaiveDate::from_ymd_opt(2025, 12, 1).unwrap());
        assert!(parse_range(&p(&[("period", "1y")]), chrono_tz::UTC, now).is_err());
        assert!(parse_range(&p(&[("from", "2026-11-05"), ("to", "2026-11-01")]), chrono_tz::UTC, now).is_err());
        assert!(parse_range(&p(&[("from", "2000-01-01"), ("to", "2026-11-01")]), chrono_tz::UTC, now).is_err());
    }

    #[test]
    fn dates_stay_in_their_domain() {
        let now = Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap();
        // Dates chrono can hold but the warehouse cannot: refused, naming the parameter.
        for (from, to) in [
            ("+262142-12-31", "+262142-12-31"),
            ("-262143-01-01", "2026-01-01"),
            ("1969-12-31", "1970-01-02"),
            ("2299-12-31", "+10000-01-01"),
        ] {
            let e = parse_range(&p(&[("from", from), ("to", to)]), chrono_tz::UTC, now).unwrap_err();
            let QueryError::BadParameter { parameter, message } = e else {
                panic!("{from}..{to}: {e}")
            };
            assert!(["from", "to"].contains(&parameter), "{parameter}");
            assert!(message.contains("1970-01-01"), "{message}");
        }
        // The edges themselves are fine, in any timezone.
        let pacific: Tz = "Pacific/Kiritimati".parse().unwrap();
        let r = parse_range(&p(&[("from", "2299-12-31"), ("to", "2299-12-31")]), pacific, now).unwrap();
        assert_eq!(r.last_day, NaiveDate::from_ymd_opt(2299, 12, 31).unwrap());
        assert!(parse_range(&p(&[("from", "1970-01-01"), ("to", "1970-01-01")]), chrono_tz::UTC, now).is_ok());
    }

    #[test]
    fn filters_and_metrics() {
        let Some(Filter::And(f)) = parse_filters(&p(&[("filters", "source==Google;country!=DE;page~blog")])).unwrap()
        else {
            panic!("three conditions are ANDed")
        };
        assert_eq!(f.len(), 3);
        assert_eq!(
            f[1],
            Filter::Condition {
                op: Op::IsNot,
                dimension: Dimension::Column("country"),
                values: vec!["DE".into()]
            }
        );
        let Some(Filter::And(f)) = parse_filters(&p(&[("filters", r"page==/a\;b;source==x")])).unwrap() else {
            panic!("two conditions")
        };
        assert_eq!(
            f[0],
            Filter::Condition {
                op: Op::Is,
                dimension: Dimension::Column("page"),
                values: vec!["/a;b".into()]
            }
        );
        let e = parse_filters(&p(&[("filters", "sauce==x")])).unwrap_err().to_string();
        assert!(e.starts_with("filters:"), "{e}");
        let e = parse_metrics(&p(&[("metrics", "visitors,drop table")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("metrics") && e.contains("drop table"), "{e}");
    }
}
