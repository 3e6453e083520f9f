//! An in-process cache of answers, keyed by the normalised query and the site's commit
//! counter: any commit for a site makes its cached answers unreachable, and the size bound
//! (in approximate bytes) evicts them. Hits and misses are counted for `/metrics`.

use std::sync::Arc;

use moka::sync::Cache;
use prometheus_client::metrics::counter::Counter;

use crate::execute::Answer;
use crate::model::Query;

pub struct AnswerCache {
    answers: Cache<String, Arc<Answer>>,
    pub hits: Counter,
    pub misses: Counter,
}

impl AnswerCache {
    pub fn new(max_bytes: u64) -> Self {
        let answers = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, answer: &Arc<Answer>| {
                let cells: usize = answer
                    .rows
                    .iter()
                    .map(|r| r.dimensions.len() + r.metrics.len() * 2)
                    .sum();
                u32::try_from(key.len() + 256 + cells * 24).unwrap_or(u32::MAX)
            })
            .build();
        Self {
            answers,
            hits: Counter::default(),
            misses: Counter::default(),
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
    }
}
