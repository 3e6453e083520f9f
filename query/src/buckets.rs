//! The labels of every bucket of a time series, so empty buckets are answered with zeros,
//! and which bucket of a comparison period each one is compared with. The labels must match
//! the labels the SQL in `plan` produces.

use std::collections::HashSet;

use chrono::{Datelike, Days, Duration, NaiveDate};

use crate::request::{DateRange, Interval};

pub fn labels(range: &DateRange, interval: Interval) -> Vec<String> {
    match interval {
        Interval::Hour => {
            let mut out: Vec<String> = Vec::new();
            let mut t = range.start;
            while t < range.end {
                let label = t.with_timezone(&range.tz).format(HOUR_LABEL).to_string();
                // A DST fall-back repeats a local hour; it is one bucket, as in the SQL.
                if !out.contains(&label) {
                    out.push(label);
                }
                t += Duration::hours(1);
            }
            out
        }
        Interval::Day => days(range.first_day, range.last_day, Some),
        Interval::Week => days(range.first_day, range.last_day, |d| {
            Some(d - Days::new(u64::from(d.weekday().num_days_from_monday())))
        }),
        Interval::Month => days(range.first_day, range.last_day, |d| d.with_day(1)),
    }
}

/// How a bucket finds its counterpart in the comparison period.
///
/// Hour buckets match by (day offset within the range, local clock hour): on a 23-hour day
/// (DST starts) Sunday 10:00 is compared with Saturday 10:00, not with the bucket at the same
/// position; an hour the other period's clock skipped has no counterpart. Day, week and month
/// buckets match by their offset in days, weeks or months from the start of the range.
pub fn match_rule(interval: Interval) -> &'static str {
    match interval {
        Interval::Hour => "day_offset_and_local_hour",
        Interval::Day => "day_offset",
        Interval::Week => "week_offset",
        Interval::Month => "month_offset",
    }
}

/// Every bucket label of `now`, in order, with the label of its counterpart in `before`
/// (see [`match_rule`]), or `None` when `before` has no such bucket (an hour its clock
/// skipped, a day past the end of a shorter period).
pub fn counterparts(now: &DateRange, before: &DateRange, interval: Interval) -> Vec<(String, Option<String>)> {
    let now_labels = labels(now, interval);
    let before_labels = labels(before, interval);
    match interval {
        Interval::Hour => {
            let known: HashSet<&str> = before_labels.iter().map(String::as_str).collect();
            now_labels
                .into_iter()
                .map(|label| {
                    let other = parse_hour_label(&label)
                        .and_then(|(date, hour)| {
                            let offset = (date - now.first_day).num_days();
                            let day = before.first_day.checked_add_signed(Duration::days(offset))?;
                            day.and_hms_opt(hour, 0, 0)
                        })
                        .map(|t| t.format(HOUR_LABEL).to_string())
                        .filter(|l| known.contains(l.as_str()));
                    (label, other)
                })
                .collect()
        }
        // One label per day, week or month from the start of the range: the offset is the
        // position.
        Interval::Day | Interval::Week | Interval::Month => {
            let mut before_labels = before_labels.into_iter();
            now_labels
                .into_iter()
                .map(|label| (label, before_labels.next()))
                .collect()
        }
    }
}

/// The label of an hour bucket, as the SQL writes it.
const HOUR_LABEL: &str = "%Y-%m-%d %H:00:00";

/// The local date and clock hour of an hour label (`YYYY-MM-DD HH:00:00`).
fn parse_hour_label(label: &str) -> Option<(NaiveDate, u32)> {
    let date = NaiveDate::parse_from_str(label.get(..10)?, "%Y-%m-%d").ok()?;
    let hour = label.get(11..13)?.parse().ok()?;
    Some((date, hour))
}

fn days(first: NaiveDate, last: NaiveDate, bucket: impl Fn(NaiveDate) -> Option<NaiveDate>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut d = first;
    while d <= last {
        if let Some(b) = bucket(d) {
            let label = b.format("%Y-%m-%d").to_string();
            if out.last() != Some(&label) {
                out.push(label);
            }
        }
        d = d + Days::new(1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{parse_range, RawParams};
    use chrono::{TimeZone, Utc};

    fn range(from: &str, to: &str, tz: &str) -> DateRange {
        let p: RawParams = [
            ("from".to_string(), from.to_string()),
            ("to".to_string(), to.to_string()),
        ]
        .into();
        parse_range(
            &p,
            tz.parse().unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn bucket_labels() {
        let r = range("2026-10-30", "2026-11-02", "UTC");
        assert_eq!(
            labels(&r, Interval::Day),
            ["2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02"]
        );
        assert_eq!(labels(&r, Interval::Week), ["2026-10-26", "2026-11-02"]);
        assert_eq!(labels(&r, Interval::Month), ["2026-10-01", "2026-11-01"]);
        assert_eq!(labels(&r, Interval::Hour).len(), 96);
        // The night DST ends in Berlin has 25 hours but 24 local labels.
        let r = range("2026-10-25", "2026-10-25", "Europe/Berlin");
        assert_eq!(labels(&r, Interval::Hour).len(), 24);
    }

    fn before(now: &DateRange, compare: crate::model::Compare) -> DateRange {
        crate::execute::comparison_range(now, compare).expect("inside the date domain")
    }

    /// The counterparts of the buckets whose label ends with one of `hours`, and the
    /// buckets without one.
    fn hourly(now: &DateRange, compare: crate::model::Compare) -> (Vec<(String, Option<String>)>, Vec<String>) {
        let pairs = counterparts(now, &before(now, compare), Interval::Hour);
        let unmatched = pairs
            .iter()
            .filter(|(_, o)| o.is_none())
            .map(|(l, _)| l.clone())
            .collect();
        (pairs, unmatched)
    }

    fn counterpart_of(pairs: &[(String, Option<String>)], label: &str) -> Option<String> {
        pairs
            .iter()
            .find(|(l, _)| l == label)
            .unwrap_or_else(|| panic!("no bucket {label}"))
            .1
            .clone()
    }

    #[test]
    fn spring_forward_hours_match_by_local_clock() {
        use crate::model::Compare::PreviousPeriod;
        // Sunday 2026-03-29 in Berlin has 23 hours (02:00 is skipped); Saturday has 24.
        let sunday = range("2026-03-29", "2026-03-29", "Europe/Berlin");
        let (pairs, unmatched) = hourly(&sunday, PreviousPeriod);
        assert_eq!(pairs.len(), 23);
        assert!(unmatched.is_empty(), "{unmatched:?}");
        for (now, then) in [
            ("2026-03-29 00:00:00", "2026-03-28 00:00:00"),
            ("2026-03-29 01:00:00", "2026-03-28 01:00:00"),
            ("2026-03-29 03:00:00", "2026-03-28 03:00:00"),
            ("2026-03-29 10:00:00", "2026-03-28 10:00:00"),
            ("2026-03-29 23:00:00", "2026-03-28 23:00:00"),
        ] {
            assert_eq!(counterpart_of(&pairs, now).as_deref(), Some(then), "{now}");
        }
        assert!(pairs.iter().all(|(l, _)| !l.ends_with(" 02:00:00")));
        // Monday compared with that Sunday: Monday 02:00 has no counterpart.
        let monday = range("2026-03-30", "2026-03-30", "Europe/Berlin");
        let (pairs, unmatched) = hourly(&monday, PreviousPeriod);
        assert_eq!(pairs.len(), 24);
        assert_eq!(unmatched, ["2026-03-30 02:00:00"]);
        assert_eq!(
            counterpart_of(&pairs, "2026-03-30 03:00:00").as_deref(),
            Some("2026-03-29 03:00:00")
        );
        // Two days over the change (Friday and Saturday before): the day offset within the
        // range counts, not the position, and Monday 02:00 has Saturday's.
        let weekend = range("2026-03-29", "2026-03-30", "Europe/Berlin");
        let (pairs, unmatched) = hourly(&weekend, PreviousPeriod);
        assert_eq!(pairs.len(), 47);
        assert!(unmatched.is_empty(), "{unmatched:?}");
        assert_eq!(
            counterpart_of(&pairs, "2026-03-30 10:00:00").as_deref(),
            Some("2026-03-28 10:00:00")
        );
        assert_eq!(
            counterpart_of(&pairs, "2026-03-29 10:00:00").as_deref(),
            Some("2026-03-27 10:00:00")
        );
    }

    #[test]
    fn fall_back_hours_match_by_local_clock() {
        use crate::model::Compare::PreviousPeriod;
        // Sunday 2026-10-25 in Berlin has 25 hours; 02:00 repeats and is one bucket.
        let sunday = range("2026-10-25", "2026-10-25", "Europe/Berlin");
        let (pairs, unmatched) = hourly(&sunday, PreviousPeriod);
        assert_eq!(pairs.len(), 24);
        assert!(unmatched.is_empty());
        assert!(pairs
            .iter()
            .all(|(now, then)| then.as_deref() == Some(now.replace("2026-10-25", "2026-10-24").as_str())));
        // Monday against the long Sunday, and the long Sunday against its Saturday inside a
        // week: every hour has its counterpart at the same clock time.
        let monday = range("2026-10-26", "2026-10-26", "Europe/Berlin");
        let (pairs, unmatched) = hourly(&monday, PreviousPeriod);
        assert!(unmatched.is_empty());
        assert_eq!(
            counterpart_of(&pairs, "2026-10-26 02:00:00").as_deref(),
            Some("2026-10-25 02:00:00")
        );
        assert_eq!(
            counterpart_of(&pairs, "2026-10-26 10:00:00").as_deref(),
            Some("2026-10-25 10:00:00")
        );
    }

    #[test]
    fn half_hour_shift_of_lord_howe() {
        use crate::model::Compare::PreviousPeriod;
        // Australia/Lord_Howe moves its clock by 30 minutes: +10:30 to +11 on Sunday
        // 2026-10-04 at 02:00 (to 02:30), back on Sunday 2026-04-05 at 02:00 (to 01:30).
        // Buckets start an hour apart from local midnight, so the clock hours of those days
        // read 00, 01, 02 (from 02:30), 03, ... and 00, 01, 01 (from 01:30, one bucket), 02,
        // ...: every day keeps 24 hour labels, and each is compared with the same clock hour.
        for (now, then) in [
            ("2026-10-04", "2026-10-03"),
            ("2026-10-05", "2026-10-04"),
            ("2026-04-05", "2026-04-04"),
            ("2026-04-06", "2026-04-05"),
        ] {
            let day = range(now, now, "Australia/Lord_Howe");
            let (pairs, unmatched) = hourly(&day, PreviousPeriod);
            assert_eq!(pairs.len(), 24, "{now}");
            assert!(unmatched.is_empty(), "{now}: {unmatched:?}");
            assert!(
                pairs
                    .iter()
                    .all(|(n, t)| t.as_deref() == Some(n.replace(now, then).as_str())),
                "{now}: {pairs:?}"
            );
        }
    }

    #[test]
    fn days_weeks_months_match_by_offset() {
        use crate::model::Compare::{PreviousPeriod, YearOverYear};
        let now = range("2026-03-29", "2026-03-31", "Europe/Berlin");
        assert_eq!(
            counterparts(&now, &before(&now, PreviousPeriod), Interval::Day),
            [
                ("2026-03-29".to_string(), Some("2026-03-26".to_string())),
                ("2026-03-30".to_string(), Some("2026-03-27".to_string())),
                ("2026-03-31".to_string(), Some("2026-03-28".to_string())),
            ]
        );
        // A leap February against the year before's: the 29th has no counterpart.
        let feb = range("2028-02-01", "2028-02-29", "UTC");
        let pairs = counterparts(&feb, &before(&feb, YearOverYear), Interval::Day);
        assert_eq!(pairs[27], ("2028-02-28".to_string(), Some("2027-02-28".to_string())));
        assert_eq!(pairs[28], ("2028-02-29".to_string(), None));
        // Weeks (Monday labels) and months by their offset.
        let now = range("2026-11-09", "2026-11-22", "UTC");
        assert_eq!(
            counterparts(&now, &before(&now, PreviousPeriod), Interval::Week),
            [
                ("2026-11-09".to_string(), Some("2026-10-26".to_string())),
                ("2026-11-16".to_string(), Some("2026-11-02".to_string())),
            ]
        );
        let now = range("2026-10-15", "2026-11-20", "UTC");
        assert_eq!(
            counterparts(&now, &before(&now, YearOverYear), Interval::Month),
            [
                ("2026-10-01".to_string(), Some("2025-10-01".to_string())),
                ("2026-11-01".to_string(), Some("2025-11-01".to_string())),
            ]
        );
        // A period whose comparison spans fewer months: the extra one has none.
        let now = range("2026-03-31", "2026-04-01", "UTC");
        let then = before(&now, PreviousPeriod);
        assert_eq!(
            (then.first_day.to_string(), then.last_day.to_string()),
            ("2026-03-29".into(), "2026-03-30".into())
        );
        assert_eq!(
            counterparts(&now, &then, Interval::Month),
            [
                ("2026-03-01".to_string(), Some("2026-03-01".to_string())),
                ("2026-04-01".to_string(), None),
            ]
        );
    }
}
