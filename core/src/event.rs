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
}

/// DateTime64(3, 'UTC') in ClickHouse's text form, which both JSONEachRow input and output
/// use: `2026-11-21 10:00:00.123`.
pub mod ch_datetime {
    use chrono::{DateTime, NaiveDateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    const FORMAT: &str = "%Y-%m-%d %H:%M:%S%.3f";

    pub fn format(ts: &DateTime<Utc>) -> String {
        ts.format(FORMAT).to_string()
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
}
