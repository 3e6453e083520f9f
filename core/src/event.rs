//! `RawEvent` (what the collector accepted: the row of `events_raw`) and `Event` (what the
//! processor made of it: the row of `events`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// An accepted event after validation. The client IP is gone: only the visitor id and the
/// country derived from it at ingest are kept. Serialized onto the log and into `events_raw`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RawEvent {
    pub event_id: Uuid,
    pub site_id: String,
    #[serde(with = "ch_datetime")]
    pub received_at: DateTime<Utc>,
    #[serde(with = "ch_datetime")]
    pub ts: DateTime<Utc>,
    pub name: String,
    pub url: String,
    pub referrer: String,
    pub user_agent: String,
    pub props: BTreeMap<String, String>,
    /// Decimal text with at most 6 fractional digits; empty when the event has no revenue.
    pub revenue_amount: String,
    pub revenue_currency: String,
    pub visitor_id: u64,
    pub country: String,
    /// Which door the event came in by: `web` (collector, pixel, sightline.js) or `ga4_mp`
    /// (GA4 Measurement Protocol, sent by servers: its user agent is not the visitor's).
    #[serde(default = "web_source")]
    pub ingest_source: String,
    /// The visitor id the same visitor had on the previous UTC day, for events within a
    /// session's reach (30 minutes) after UTC midnight; 0 otherwise. A visit that crosses
    /// midnight continues under the earlier id (the privacy-friendly peers do the same with
    /// the previous day's salt).
    #[serde(default)]
    pub prev_day_visitor_id: u64,
    /// False for events that happen without the visitor doing anything (an autoplay video, a
    /// scroll-depth ping sent on load): they neither end a bounce nor extend a visit.
    #[serde(default = "interactive_by_default", deserialize_with = "flag")]
    pub interactive: bool,
}

fn interactive_by_default() -> bool {
    true
}

/// A flag as JSON writes it (`true`) or as the warehouse returns a `UInt8` column (`1`).
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Number(u8),
    }
    Ok(match Flag::deserialize(d)? {
        Flag::Bool(b) => b,
        Flag::Number(n) => n != 0,
    })
}

impl RawEvent {
    /// What makes an event unique: its site and its id (ids are the client's choice, unique
    /// within a site).
    pub fn key(&self) -> (&str, uuid::Uuid) {
        (&self.site_id, self.event_id)
    }

    /// Roughly what the event costs on disk before compression, in bytes: its text fields and
    /// a fixed part for the rest. What the collector charges against a site's byte budget.
    pub fn stored_bytes(&self) -> u64 {
        let props: usize = self.props.iter().map(|(k, v)| k.len() + v.len()).sum();
        (64 + self.site_id.len()
            + self.name.len()
            + self.url.len()
            + self.referrer.len()
            + self.user_agent.len()
            + props
            + self.revenue_amount.len()
            + self.revenue_currency.len()
            + self.country.len()
            + self.ingest_source.len()) as u64
    }

    /// The (site, visitor) keys whose sessions processing this event may change: its own
    /// visitor's, and near midnight the previous day's id it may continue.
    pub fn session_keys(&self) -> impl Iterator<Item = (&str, u64)> {
        std::iter::once((self.site_id.as_str(), self.visitor_id))
            .chain((self.prev_day_visitor_id != 0).then_some((self.site_id.as_str(), self.prev_day_visitor_id)))
    }
}

/// The UTC days (the partitions of `events_raw` and `events`) that `events` fall on.
pub fn days_of<'a>(events: impl IntoIterator<Item = &'a RawEvent>) -> Vec<chrono::NaiveDate> {
    let days: std::collections::BTreeSet<_> = events.into_iter().map(|e| e.ts.date_naive()).collect();
    days.into_iter().collect()
}

pub const SOURCE_WEB: &str = "web";
pub const SOURCE_GA4_MP: &str = "ga4_mp";

fn web_source() -> String {
    SOURCE_WEB.to_string()
}

/// The processed event: the row of `events`. Session deltas make visits, bounces and
/// durations summable in rollups: the deltas of one session add up to its final values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub event_id: Uuid,
    pub site_id: String,
    #[serde(with = "ch_datetime")]
    pub ts: DateTime<Utc>,
    pub name: String,
    pub is_pageview: u8,
    pub hostname: String,
    pub pathname: String,
    pub referrer_host: String,
    pub referrer_source: String,
    pub referrer_medium: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub utm_content: String,
    pub utm_term: String,
    pub browser: String,
    pub browser_version: String,
    pub os: String,
    pub os_version: String,
    pub device: String,
    pub country: String,
    pub is_bot: u8,
    pub visitor_id: u64,
    pub session_id: u64,
    #[serde(with = "ch_datetime")]
    pub session_start: DateTime<Utc>,
    pub visit_delta: i8,
    pub bounce_delta: i8,
    pub duration_delta: i64,
    pub entry_page: String,
    pub session_source: String,
    pub session_medium: String,
    pub session_utm_source: String,
    pub session_utm_medium: String,
    pub session_utm_campaign: String,
    pub props: BTreeMap<String, String>,
    pub revenue_amount: String,
    pub revenue_currency: String,
    pub pipeline_version: u32,
    /// 0 for non-interactive events (`RawEvent::interactive`).
    pub interactive: u8,
    /// +1 for a row as processed; -1 for a copy that cancels an earlier row of the same event
    /// when a late event changed its session (docs/replay.md). Every metric sums rows
    /// weighted by it.
    pub sign: i8,
    /// The processing identity that made the row (`processor::identity`): `v5`, `v5+bots`.
    pub processing: String,
}

impl Event {
    /// The row that cancels this one (the same row, `sign` -1).
    pub fn cancelled(&self) -> Event {
        Event {
            sign: -1,
            ..self.clone()
        }
    }
}

/// DateTime64(3, 'UTC') in ClickHouse's text form, which both JSONEachRow input and output
/// use: `2026-11-21 10:00:00.123`.
pub mod ch_datetime {
    use chrono::{DateTime, Datelike, NaiveDate, NaiveDateTime, Timelike, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    const FORMAT: &str = "%Y-%m-%d %H:%M:%S%.3f";

    /// `YYYY-MM-DD HH:MM:SS.mmm`. Written digit by digit: every event is formatted on its way
    /// to the log, and chrono's `format` (which interprets the pattern each time) was the
    /// collector's largest single cost under load.
    pub fn format(ts: &DateTime<Utc>) -> String {
        let mut out = String::with_capacity(23);
        if !push_date(&mut out, ts.date_naive()) {
            return ts.format(FORMAT).to_string();
        }
        let time = ts.time();
        out.push(' ');
        push_digits(&mut out, time.hour(), 2);
        out.push(':');
        push_digits(&mut out, time.minute(), 2);
        out.push(':');
        // chrono carries a leap second in the nanoseconds (>= 1e9) and writes it as :60.
        let leap = u32::from(time.nanosecond() >= 1_000_000_000);
        push_digits(&mut out, time.second() + leap, 2);
        out.push('.');
        push_digits(&mut out, (time.nanosecond() % 1_000_000_000) / 1_000_000, 3);
        out
    }

    /// `YYYY-MM-DD`, as `NaiveDate`'s `Display` writes it.
    pub fn format_date(date: NaiveDate) -> String {
        let mut out = String::with_capacity(10);
        if push_date(&mut out, date) {
            out
        } else {
            date.to_string()
        }
    }

    /// False (and nothing written) for years outside 0..=9999, which chrono writes its own way.
    fn push_date(out: &mut String, date: NaiveDate) -> bool {
        let Ok(year) = u32::try_from(date.year()) else {
            return false;
        };
        if year > 9999 {
            return false;
        }
        push_digits(out, year, 4);
        out.push('-');
        push_digits(out, date.month(), 2);
        out.push('-');
        push_digits(out, date.day(), 2);
        true
    }

    fn push_digits(out: &mut String, value: u32, width: u32) {
        for place in (0..width).rev() {
            let digit = (value / 10u32.pow(place)) % 10;
            out.push(char::from(b'0' + digit as u8));
        }
    }

    pub fn parse(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").map(|n| n.and_utc())
    }

    pub fn serialize<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(ts))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use chrono::TimeZone;

        #[test]
        fn digits_are_what_chrono_writes() {
            let mut cases = vec![
                Utc.with_ymd_and_hms(2026, 11, 22, 5, 7, 9).unwrap(),
                Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
                Utc.with_ymd_and_hms(7, 2, 3, 4, 5, 6).unwrap(),
                Utc.with_ymd_and_hms(-44, 3, 15, 12, 0, 0).unwrap(),
                Utc.with_ymd_and_hms(12345, 6, 7, 8, 9, 10).unwrap(),
                // A leap second.
                NaiveDate::from_ymd_opt(2016, 12, 31)
                    .unwrap()
                    .and_hms_milli_opt(23, 59, 59, 1_500)
                    .unwrap()
                    .and_utc(),
            ];
            for millis in [0, 1, 9, 10, 99, 100, 999] {
                cases.push(cases[0] + chrono::Duration::milliseconds(millis));
            }
            cases.push(cases[0] + chrono::Duration::nanoseconds(999_999));
            for ts in cases {
                assert_eq!(format(&ts), ts.format(FORMAT).to_string(), "{ts:?}");
                assert_eq!(format_date(ts.date_naive()), ts.date_naive().to_string(), "{ts:?}");
            }
        }
    }
}
