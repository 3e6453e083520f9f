//! ClickHouse's Native format for the replay's inserts of processed rows (`Event`, in the
//! column order of `schema::EVENT_COLUMNS`). Native is columnar: the engine takes each
//! column whole instead of parsing every field of every row, which RowBinary costs (measured
//! on the embedded engine, 1 M rows of `events`: RowBinary 5.2 s, Native 1.2 s to insert;
//! BENCHMARKS.md, "Replay throughput").
//!
//! A block is the column count and row count (LEB128), then per column its name, its type
//! and its values: fixed-width numbers little-endian one after another, `String` a LEB128
//! length then bytes per value, `UUID` its two 64-bit halves each little-endian,
//! `DateTime64(3)` an Int64 of milliseconds, `Map(String, String)` the cumulative entry
//! counts per row (UInt64), then every key, then every value. `LowCardinality(String)`
//! columns are sent as `String` (the engine converts them on insert, which costs far less
//! than writing the dictionary encoding here).

use super::rowbinary::{string, varint};
use crate::event::Event;
use crate::schema;

/// The type each column of `schema::EVENT_COLUMNS` is sent as, in order.
const EVENT_TYPES: [&str; 41] = [
    "UUID",                 // event_id
    "String",               // site_id
    "DateTime64(3, 'UTC')", // ts
    "String",               // name
    "UInt8",                // is_pageview
    "String",               // hostname
    "String",               // pathname
    "String",               // referrer_host
    "String",               // referrer_source
    "String",               // referrer_medium
    "String",               // utm_source
    "String",               // utm_medium
    "String",               // utm_campaign
    "String",               // utm_content
    "String",               // utm_term
    "String",               // browser
    "String",               // browser_version
    "String",               // os
    "String",               // os_version
    "String",               // device
    "String",               // country
    "UInt8",                // is_bot
    "UInt64",               // visitor_id
    "UInt64",               // session_id
    "DateTime64(3, 'UTC')", // session_start
    "Int8",                 // visit_delta
    "Int8",                 // bounce_delta
    "Int64",                // duration_delta
    "String",               // entry_page
    "String",               // session_source
    "String",               // session_medium
    "String",               // session_utm_source
    "String",               // session_utm_medium
    "String",               // session_utm_campaign
    "Map(String, String)",  // props
    "String",               // revenue_amount
    "String",               // revenue_currency
    "UInt32",               // pipeline_version
    "UInt8",                // interactive
    "Int8",                 // sign
    "String",               // processing
];

/// The position of `props` in `EVENT_TYPES`: the one column with three parts.
const PROPS: usize = 34;

/// Processed rows gathered column by column, to insert as one Native block. Rows are
/// encoded as they are pushed, so a batch holds its encoded bytes only.
pub struct EventBlock {
    columns: Vec<Vec<u8>>,
    /// `props`: cumulative entry counts (UInt64 each), keys, values.
    props_offsets: Vec<u8>,
    props_keys: Vec<u8>,
    props_values: Vec<u8>,
    props_entries: u64,
    rows: usize,
}

impl Default for EventBlock {
    fn default() -> Self {
        EventBlock {
            columns: vec![Vec::new(); EVENT_TYPES.len()],
            props_offsets: Vec::new(),
            props_keys: Vec::new(),
            props_values: Vec::new(),
            props_entries: 0,
            rows: 0,
        }
    }
}

impl EventBlock {
    /// Rows pushed so far.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Bytes the block holds (its encoded size, near enough).
    pub fn bytes(&self) -> usize {
        self.columns.iter().map(Vec::len).sum::<usize>()
            + self.props_offsets.len()
            + self.props_keys.len()
            + self.props_values.len()
    }

    /// Appends one row.
    pub fn push(&mut self, e: &Event) {
        let c = &mut self.columns;
        let (high, low) = e.event_id.as_u64_pair();
        c[0].extend_from_slice(&high.to_le_bytes());
        c[0].extend_from_slice(&low.to_le_bytes());
        string(&mut c[1], &e.site_id);
        c[2].extend_from_slice(&e.ts.timestamp_millis().to_le_bytes());
        string(&mut c[3], &e.name);
        c[4].push(e.is_pageview);
        for (i, s) in [
            &e.hostname,
            &e.pathname,
            &e.referrer_host,
            &e.referrer_source,
            &e.referrer_medium,
            &e.utm_source,
            &e.utm_medium,
            &e.utm_campaign,
            &e.utm_content,
            &e.utm_term,
            &e.browser,
            &e.browser_version,
            &e.os,
            &e.os_version,
            &e.device,
            &e.country,
        ]
        .into_iter()
        .enumerate()
        {
            string(&mut c[5 + i], s);
        }
        c[21].push(e.is_bot);
        c[22].extend_from_slice(&e.visitor_id.to_le_bytes());
        c[23].extend_from_slice(&e.session_id.to_le_bytes());
        c[24].extend_from_slice(&e.session_start.timestamp_millis().to_le_bytes());
        c[25].extend_from_slice(&e.visit_delta.to_le_bytes());
        c[26].extend_from_slice(&e.bounce_delta.to_le_bytes());
        c[27].extend_from_slice(&e.duration_delta.to_le_bytes());
        for (i, s) in [
            &e.entry_page,
            &e.session_source,
            &e.session_medium,
            &e.session_utm_source,
            &e.session_utm_medium,
            &e.session_utm_campaign,
        ]
        .into_iter()
        .enumerate()
        {
            string(&mut c[28 + i], s);
        }
        for (k, v) in &e.props {
            string(&mut self.props_keys, k);
            string(&mut self.props_values, v);
        }
        self.props_entries += e.props.len() as u64;
        self.props_offsets.extend_from_slice(&self.props_entries.to_le_bytes());
        string(&mut c[35], &e.revenue_amount);
        string(&mut c[36], &e.revenue_currency);
        c[37].extend_from_slice(&e.pipeline_version.to_le_bytes());
        c[38].push(e.interactive);
        c[39].extend_from_slice(&e.sign.to_le_bytes());
        string(&mut c[40], &e.processing);
        self.rows += 1;
    }

    /// The block in Native format, for `INSERT INTO t ({EVENT_COLUMNS}) FORMAT Native`;
    /// the block is empty again afterwards.
    pub fn take(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.bytes() + 1024);
        varint(&mut out, EVENT_TYPES.len() as u64);
        varint(&mut out, self.rows as u64);
        for (i, name) in schema::EVENT_COLUMNS.split(',').map(str::trim).enumerate() {
            string(&mut out, name);
            string(&mut out, EVENT_TYPES[i]);
            if i == PROPS {
                out.extend_from_slice(&self.props_offsets);
                out.extend_from_slice(&self.props_keys);
                out.extend_from_slice(&self.props_values);
            } else {
                out.extend_from_slice(&self.columns[i]);
            }
        }
        *self = EventBlock::default();
        out
    }
}

/// `events` as one Native block (see `EventBlock::take`).
pub fn encode_events(events: &[Event]) -> Vec<u8> {
    let mut block = EventBlock::default();
    for e in events {
        block.push(e);
    }
    block.take()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The base type of each column of `events` as the schema declares it.
    fn declared_types() -> Vec<(String, String)> {
        let ddl = schema::events_table_ddl("db", "events", 30);
        let columns = &ddl[ddl.find('(').unwrap() + 1..ddl.find(") ENGINE").unwrap()];
        columns
            .lines()
            .map(|l| l.trim().trim_end_matches(','))
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (name, rest) = l.split_once(' ').unwrap();
                let ty = rest.split(" DEFAULT").next().unwrap();
                let ty = ty
                    .strip_prefix("LowCardinality(")
                    .and_then(|t| t.strip_suffix(')'))
                    .unwrap_or(ty);
                (name.to_string(), ty.to_string())
            })
            .collect()
    }

    #[test]
    fn every_column_is_sent_as_the_schema_declares_it() {
        let names: Vec<&str> = schema::EVENT_COLUMNS.split(',').map(str::trim).collect();
        assert_eq!(names.len(), EVENT_TYPES.len());
        assert_eq!(names[PROPS], "props");
        let sent: Vec<(String, String)> = names
            .iter()
            .zip(EVENT_TYPES)
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect();
        assert_eq!(sent, declared_types());
    }
}
