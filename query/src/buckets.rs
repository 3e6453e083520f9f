//! The labels of every bucket of a time series, so empty buckets are answered with zeros.
//! They must match the labels the SQL in `plan` produces.

use chrono::{Datelike, Days, Duration, NaiveDate};

use crate::request::{DateRange, Interval};

pub fn labels(range: &DateRange, interval: Interval) -> Vec<String> {
    match interval {
        Interval::Hour => {
            let mut out: Vec<String> = Vec::new();
            let mut t = range.start;
            while t < range.end {
                let label = t.with_timezone(&range.tz).format("%Y-%m-%d %H:00:00").to_string();
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
}
