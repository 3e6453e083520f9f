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

/// An unsigned LEB128 integer: the lengths and counts of RowBinary and of Native alike.
pub(super) fn varint(out: &mut Vec<u8>, mut n: u64) {
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

/// A `String` value: its LEB128 byte length, then its bytes (RowBinary and Native alike).
pub(super) fn string(out: &mut Vec<u8>, s: &str) {
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

/// Reads rows of `schema::RAW_COLUMNS` in RowBinary (what `write_row_binary` writes for a
/// `RawEvent`, and what the engine returns for `SELECT {RAW_COLUMNS} ... FORMAT RowBinary`).
pub fn decode_raw_events(bytes: &[u8]) -> crate::Result<Vec<RawEvent>> {
    let mut r = Reader { bytes, at: 0 };
    let mut out = Vec::new();
    while r.at < bytes.len() {
        out.push(RawEvent {
            event_id: r.uuid()?,
            site_id: r.string()?,
            received_at: r.datetime64_ms()?,
            ts: r.datetime64_ms()?,
            name: r.string()?,
            url: r.string()?,
            referrer: r.string()?,
            user_agent: r.string()?,
            props: r.map()?,
            revenue_amount: r.string()?,
            revenue_currency: r.string()?,
            visitor_id: r.u64()?,
            country: r.string()?,
            ingest_source: r.string()?,
            prev_day_visitor_id: r.u64()?,
            interactive: r.take(1)?[0] != 0,
        });
    }
    Ok(out)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> crate::Result<&[u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| crate::Error::Decode(format!("RowBinary ends inside a value at byte {}", self.at)))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn varint(&mut self) -> crate::Result<u64> {
        let mut n = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            n |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err(crate::Error::Decode("RowBinary length over 64 bits".into()))
    }

    fn string(&mut self) -> crate::Result<String> {
        let n = self.varint()? as usize;
        let bytes = self.take(n)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| crate::Error::Decode(format!("RowBinary string: {e}")))
    }

    fn u64(&mut self) -> crate::Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }

    fn datetime64_ms(&mut self) -> crate::Result<DateTime<Utc>> {
        let ms = i64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes"));
        DateTime::from_timestamp_millis(ms).ok_or_else(|| crate::Error::Decode(format!("RowBinary time {ms}")))
    }

    fn uuid(&mut self) -> crate::Result<Uuid> {
        let high = self.u64()?;
        let low = self.u64()?;
        Ok(Uuid::from_u64_pair(high, low))
    }

    fn map(&mut self) -> crate::Result<BTreeMap<String, String>> {
        let n = self.varint()?;
        let mut m = BTreeMap::new();
        for _ in 0..n {
            let k = self.string()?;
            let v = self.string()?;
            m.insert(k, v);
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_events_read_back_what_was_written() {
        let ts = DateTime::from_timestamp_millis(1_795_000_123_456).unwrap();
        let mut props = BTreeMap::new();
        props.insert("plan".to_string(), "pro é".to_string());
        let raw = RawEvent {
            event_id: Uuid::from_u64_pair(1, 2),
            site_id: "shop.example.com".into(),
            received_at: ts,
            ts,
            name: "signup".into(),
            url: "https://shop.example.com/".into(),
            referrer: String::new(),
            user_agent: "x".repeat(300),
            props,
            revenue_amount: "19.9".into(),
            revenue_currency: "EUR".into(),
            visitor_id: u64::MAX,
            country: "DE".into(),
            ingest_source: "web".into(),
            prev_day_visitor_id: 7,
            interactive: false,
        };
        let bytes = encode(&[raw.clone(), raw.clone()]);
        assert_eq!(decode_raw_events(&bytes).unwrap(), vec![raw.clone(), raw]);
        assert!(
            decode_raw_events(&bytes[..bytes.len() - 1]).is_err(),
            "a cut row is an error"
        );
    }

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
