//! RowBinary encoding of the two rows Sightline inserts, `RawEvent` and `Event`, in the
//! column order of `schema::RAW_COLUMNS` and `schema::EVENT_COLUMNS`. Both backends insert
//! this format: the engine reads it without parsing text, which JSON costs on every field.
//!
//! Types as ClickHouse lays them out: integers little-endian, `String` (and
//! `LowCardinality(String)`) a LEB128 length then bytes, `DateTime64(3)` an Int64 of
//! milliseconds, `UUID` its two 64-bit halves each little-endian, `Map(String, String)` a
//! LEB128 count then key/value pairs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::event::{Event, RawEvent};
use crate::schema;

/// A row that can write itself in RowBinary, in its table's insert column order.
pub trait RowBinary {
    /// The columns `write_row_binary` writes, in order, as an insert's column list.
    const COLUMNS: &'static str;
    fn write_row_binary(&self, out: &mut Vec<u8>);
}

/// A borrowed row writes what it borrows (a batch can be stored without copying it).
impl<T: RowBinary> RowBinary for &T {
    const COLUMNS: &'static str = T::COLUMNS;

    fn write_row_binary(&self, out: &mut Vec<u8>) {
        (**self).write_row_binary(out)
    }
}

/// Encodes `rows` back to back, as one insert body.
pub fn encode<T: RowBinary>(rows: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(rows.len() * 256);
    for row in rows {
        row.write_row_binary(&mut out);
    }
    out
}

fn varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn datetime64_ms(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    out.extend_from_slice(&t.timestamp_millis().to_le_bytes());
}

fn uuid(out: &mut Vec<u8>, id: &Uuid) {
    let (high, low) = id.as_u64_pair();
    out.extend_from_slice(&high.to_le_bytes());
    out.extend_from_slice(&low.to_le_bytes());
}

fn map(out: &mut Vec<u8>, m: &BTreeMap<String, String>) {
    varint(out, m.len() as u64);
    for (k, v) in m {
        string(out, k);
        string(out, v);
    }
}

impl RowBinary for RawEvent {
    const COLUMNS: &'static str = schema::RAW_COLUMNS;

    fn write_row_binary(&self, out: &mut Vec<u8>) {
        uuid(out, &self.event_id);
        string(out, &self.site_id);
        datetime64_ms(out, &self.received_at);
        datetime64_ms(out, &self.ts);
        string(out, &self.name);
        string(out, &self.url);
        string(out, &self.referrer);
        string(out, &self.user_agent);
        map(out, &self.props);
        string(out, &self.revenue_amount);
        string(out, &self.revenue_currency);
        out.extend_from_slice(&self.visitor_id.to_le_bytes());
        string(out, &self.country);
        string(out, &self.ingest_source);
        out.extend_from_slice(&self.prev_day_visitor_id.to_le_bytes());
        out.push(u8::from(self.interactive));
    }
}

impl RowBinary for Event {
    const COLUMNS: &'static str = schema::EVENT_COLUMNS;

    fn write_row_binary(&self, out: &mut Vec<u8>) {
        uuid(out, &self.event_id);
        string(out, &self.site_id);
        datetime64_ms(out, &self.ts);
        string(out, &self.name);
        out.push(self.is_pageview);
        for s in [
            &self.hostname,
            &self.pathname,
            &self.referrer_host,
            &self.referrer_source,
            &self.referrer_medium,
            &self.utm_source,
            &self.utm_medium,
            &self.utm_campaign,
            &self.utm_content,
            &self.utm_term,
            &self.browser,
            &self.browser_version,
            &self.os,
            &self.os_version,
            &self.device,
            &self.country,
        ] {
            string(out, s);
        }
        out.push(self.is_bot);
        out.extend_from_slice(&self.visitor_id.to_le_bytes());
        out.extend_from_slice(&self.session_id.to_le_bytes());
        datetime64_ms(out, &self.session_start);
        out.extend_from_slice(&self.visit_delta.to_le_bytes());
        out.extend_from_slice(&self.bounce_delta.to_le_bytes());
        out.extend_from_slice(&self.duration_delta.to_le_bytes());
        for s in [
            &self.entry_page,
            &self.session_source,
            &self.session_medium,
            &self.session_utm_source,
            &self.session_utm_medium,
            &self.session_utm_campaign,
        ] {
            string(out, s);
        }
        map(out, &self.props);
        string(out, &self.revenue_amount);
        string(out, &self.revenue_currency);
        out.extend_from_slice(&self.pipeline_version.to_le_bytes());
        out.push(self.interactive);
        out.extend_from_slice(&self.sign.to_le_bytes());
        string(out, &self.processing);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_leb128() {
        let mut out = Vec::new();
        varint(&mut out, 0);
        varint(&mut out, 127);
        varint(&mut out, 128);
        varint(&mut out, 300);
        assert_eq!(out, [0x00, 0x7f, 0x80, 0x01, 0xac, 0x02]);
    }

    #[test]
    fn uuids_are_two_little_endian_halves() {
        let id = Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        let mut out = Vec::new();
        uuid(&mut out, &id);
        assert_eq!(
            out,
            [0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0x00, 0xff, 0xee, 0xdd, 0xcc, 0xbb, 0xaa, 0x99, 0x88]
        );
    }
}
