//! An in-process cache of answers, keyed by the normalised query and the site's commit
//! counter: any commit for a site makes its cached answers unreachable, and the size bound
//! evicts them. An answer weighs what it holds in memory (every string's bytes, every JSON
//! node, every row), so the bound holds however long the visitor-supplied values in it are.
//! Hits, misses and the bytes held are on `/metrics`.

use std::mem::size_of;
use std::sync::Arc;

use moka::sync::Cache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::Value;

use crate::execute::{Answer, Row};
use crate::model::Query;

pub struct AnswerCache {
    answers: Cache<String, Arc<Answer>>,
    pub hits: Counter,
    pub misses: Counter,
    /// Bytes the cached answers weigh now.
    pub bytes: Gauge,
}

/// Heap bytes of a JSON value beyond its own node: string bytes, array and object storage.
/// Objects (serde_json's `Map`, a BTreeMap) are counted at their keys and values plus a
/// node-overhead estimate per entry.
fn json_heap_bytes(value: &Value) -> usize {
    match value {
        Value::String(s) => s.capacity(),
        Value::Array(items) => items.capacity() * size_of::<Value>() + items.iter().map(json_heap_bytes).sum::<usize>(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| size_of::<String>() + k.capacity() + size_of::<Value>() + json_heap_bytes(v) + 16)
            .sum(),
        Value::Null | Value::Bool(_) | Value::Number(_) => 0,
    }
}

fn values_bytes(values: &Vec<Value>) -> usize {
    values.capacity() * size_of::<Value>() + values.iter().map(json_heap_bytes).sum::<usize>()
}

fn row_bytes(row: &Row) -> usize {
    let comparison = row
        .comparison
        .as_ref()
        .map(|(before, change)| values_bytes(before) + values_bytes(change))
        .unwrap_or(0);
    size_of::<Row>() + values_bytes(&row.dimensions) + values_bytes(&row.metrics) + comparison
}

/// What one cache entry holds in memory: the key (kept by the cache and hashed once more),
/// the answer and its rows, and a fixed allowance for the cache's own bookkeeping.
pub fn weight(key: &str, answer: &Answer) -> u64 {
    let rows: usize = answer.rows.capacity().saturating_sub(answer.rows.len()) * size_of::<Row>()
        + answer.rows.iter().map(row_bytes).sum::<usize>();
    let buckets: usize = answer.bucket_match.as_ref().map_or(0, |m| {
        m.without_counterpart.capacity() * size_of::<String>()
            + m.without_counterpart.iter().map(String::capacity).sum::<usize>()
    });
    (2 * key.len() + size_of::<Answer>() + rows + buckets + 256) as u64
}

impl AnswerCache {
    /// A cache holding answers that weigh at most `max_bytes` in all.
    pub fn new(max_bytes: u64) -> Self {
        let answers = Cache::builder()
            .max_capacity(max_bytes)
            // An entry heavier than u32::MAX bytes is weighed u32::MAX, which is more than any
            // sensible cap; the cache then does not keep it.
            .weigher(|key: &String, answer: &Arc<Answer>| u32::try_from(weight(key, answer)).unwrap_or(u32::MAX))
            .build();
        Self {
            answers,
            hits: Counter::default(),
            misses: Counter::default(),
            bytes: Gauge::default(),
        }
    }

    /// The key: tenant, the resolved query (absolute range, so "today" never leaks into
    /// tomorrow), and how many commits the site has seen.
    pub fn key(tenant: &str, query: &Query, commits: u64) -> String {
        format!("{tenant}|{commits}|{query:?}")
    }

    pub fn get(&self, key: &str) -> Option<Arc<Answer>> {
        let hit = self.answers.get(key);
        if hit.is_some() {
            self.hits.inc();
        } else {
            self.misses.inc();
        }
        hit
    }

    pub fn insert(&self, key: String, answer: Arc<Answer>) {
        self.answers.insert(key, answer);
        // Evictions are applied lazily; apply them now so the bound (and the gauge) hold at
        // once after every insert.
        self.answers.run_pending_tasks();
        self.bytes
            .set(i64::try_from(self.answers.weighted_size()).unwrap_or(i64::MAX));
    }

    /// Bytes the cached answers weigh now.
    pub fn weighted_bytes(&self) -> u64 {
        self.answers.weighted_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Source;
    use crate::request::DateRange;
    use chrono::{NaiveDate, TimeZone, Utc};
    use serde_json::json;

    fn answer(rows: usize, path_bytes: usize) -> Answer {
        let day = NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
        Answer {
            rows: (0..rows)
                .map(|i| Row {
                    dimensions: vec![json!(format!("/{i}/{}", "p".repeat(path_bytes)))],
                    metrics: vec![json!(i), json!(1.5)],
                    comparison: None,
                })
                .collect(),
            total_rows: rows as u64,
            source: Source::Events,
            range: DateRange {
                start: Utc.with_ymd_and_hms(2026, 11, 21, 0, 0, 0).unwrap(),
                end: Utc.with_ymd_and_hms(2026, 11, 22, 0, 0, 0).unwrap(),
                first_day: day,
                last_day: day,
                tz: chrono_tz::UTC,
            },
            comparison_range: None,
            bucket_match: None,
        }
    }

    #[test]
    fn an_answer_weighs_its_strings() {
        // 1,000 rows of 2 KB paths hold at least 2 MB, whatever few cells they are.
        let heavy = weight("k", &answer(1_000, 2_048));
        assert!(heavy >= 1_000 * 2_048, "{heavy}");
        assert!(
            heavy < 1_000 * (2_048 + 512),
            "{heavy}: the estimate stays near the truth"
        );
        let light = weight("k", &answer(1_000, 1));
        assert!(heavy - light >= 1_000 * 2_047);
    }

    #[test]
    fn the_cache_holds_no_more_than_its_bound() {
        let cache = AnswerCache::new(4 * 1024 * 1024);
        for i in 0..50 {
            // Each answer is about 1 MB: at most four fit.
            cache.insert(format!("q{i}"), Arc::new(answer(500, 2_048)));
            assert!(cache.weighted_bytes() <= 4 * 1024 * 1024, "{}", cache.weighted_bytes());
        }
        assert!(cache.weighted_bytes() > 0);
        assert_eq!(cache.bytes.get() as u64, cache.weighted_bytes());
    }
}
