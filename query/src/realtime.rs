//! Realtime: visitors of the last five minutes and the pages they are on, from `events`.
//!
//! One snapshot per site is shared by every request and stream of that site: a snapshot
//! younger than the stream interval is served as it is, and requests arriving while one is
//! being computed wait for it instead of computing their own. Streams are counted per token
//! and per tenant, and refused past their bounds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use moka::sync::Cache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::{json, Value};
use sightline_core::event::ch_datetime;
use sightline_core::schema::EVENTS_TABLE;
use sightline_core::warehouse::{Params, Warehouse};

use crate::admission::Scope;
use crate::error::QueryError;
use crate::execute::{Hold, Limits};

pub const WINDOW: chrono::Duration = chrono::Duration::minutes(5);

/// Runs the two statements of a snapshot for `site` (within `limits`, holding `hold`).
pub async fn snapshot(
    wh: &dyn Warehouse,
    db: &str,
    site: &str,
    limits: &Limits,
    hold: &Hold,
) -> Result<Value, QueryError> {
    let since = Utc::now() - WINDOW;
    let params = Params::new()
        .bind("site", site)
        .bind("since", ch_datetime::format(&since));
    let scope = format!("FROM {db}.{EVENTS_TABLE} WHERE site_id = {{site:String}} AND ts >= {{since:DateTime64(3, 'UTC')}} AND is_bot = 0");
    let visitors = limits
        .select(
            wh,
            &format!("SELECT uniq(visitor_id) AS visitors {scope}"),
            &params,
            hold,
        )
        .await?;
    let pages = limits
        .select(
            wh,
            &format!("SELECT pathname AS page, uniq(visitor_id) AS visitors {scope} GROUP BY page ORDER BY visitors DESC, page ASC LIMIT 10"),
            &params,
            hold,
        )
        .await?;
    Ok(json!({
        "site_id": site,
        "window_seconds": WINDOW.num_seconds(),
        "visitors": visitors.first().and_then(|r| r["visitors"].as_u64()).unwrap_or(0),
        "pages": pages,
    }))
}

/// The newest snapshot of a site and when it was taken.
type Slot = Arc<tokio::sync::Mutex<Option<(Instant, Value)>>>;

/// The shared snapshots, one slot per (tenant, site) seen recently.
pub struct Snapshots {
    slots: Cache<(String, String), Slot>,
    /// Snapshots computed (each is two statements), for `/metrics`.
    pub computed: Counter,
}

impl Default for Snapshots {
    fn default() -> Self {
        Self {
            // Sites come from signed tokens; idle ones are forgotten after a minute.
            slots: Cache::builder()
                .max_capacity(100_000)
                .time_to_idle(Duration::from_secs(60))
                .build(),
            computed: Counter::default(),
        }
    }
}

impl Snapshots {
    /// The site's snapshot if it is younger than `max_age`, else a new one from `compute`
    /// (which only one caller per site runs at a time; the others wait and share it).
    pub async fn get<F, Fut>(
        &self,
        tenant: &str,
        site: &str,
        max_age: Duration,
        compute: F,
    ) -> Result<Value, QueryError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Value, QueryError>>,
    {
        let slot = self.slots.get_with((tenant.to_string(), site.to_string()), || {
            Arc::new(tokio::sync::Mutex::new(None))
        });
        let mut newest = slot.lock().await;
        if let Some((at, body)) = newest.as_ref() {
            if at.elapsed() < max_age {
                return Ok(body.clone());
            }
        }
        let body = compute().await?;
        self.computed.inc();
        *newest = Some((Instant::now(), body.clone()));
        Ok(body)
    }
}

/// Open streams per token and per tenant, with their bounds.
pub struct Streams {
    per_token: usize,
    per_tenant: usize,
    open: Mutex<StreamCounts>,
    /// All open streams, for `/metrics`.
    pub gauge: Gauge,
}

#[derive(Default)]
struct StreamCounts {
    tokens: HashMap<String, usize>,
    tenants: HashMap<String, usize>,
}

/// One open stream; closing it (dropping this) frees its place.
pub struct StreamPlace {
    streams: Arc<Streams>,
    tenant: String,
    token: String,
}

impl Streams {
    pub fn new(per_token: usize, per_tenant: usize) -> Self {
        Self {
            per_token: per_token.max(1),
            per_tenant: per_tenant.max(1),
            open: Mutex::new(StreamCounts::default()),
            gauge: Gauge::default(),
        }
    }

    /// A place for a new stream of `token` (its signature) in `tenant`, or 429
    /// `too_many_streams` naming the bound that is full.
    pub fn open(self: &Arc<Self>, tenant: &str, token: &str) -> Result<StreamPlace, QueryError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.tokens.get(token).copied().unwrap_or(0) >= self.per_token {
            return Err(QueryError::TooManyStreams {
                scope: Scope::Token,
                limit: self.per_token,
            });
        }
        if open.tenants.get(tenant).copied().unwrap_or(0) >= self.per_tenant {
            return Err(QueryError::TooManyStreams {
                scope: Scope::Tenant,
                limit: self.per_tenant,
            });
        }
        *open.tokens.entry(token.to_string()).or_default() += 1;
        *open.tenants.entry(tenant.to_string()).or_default() += 1;
        self.gauge.inc();
        Ok(StreamPlace {
            streams: self.clone(),
            tenant: tenant.to_string(),
            token: token.to_string(),
        })
    }
}

impl Drop for StreamPlace {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|p| p.into_inner());
        let StreamCounts { tokens, tenants } = &mut *open;
        for (map, key) in [(tokens, &self.token), (tenants, &self.tenant)] {
            if let Some(n) = map.get_mut(key.as_str()) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key.as_str());
                }
            }
        }
        self.streams.gauge.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_bounded_per_token_and_per_tenant() {
        let streams = Arc::new(Streams::new(2, 3));
        let a = streams.open("acme", "t1").unwrap();
        let _b = streams.open("acme", "t1").unwrap();
        assert!(matches!(
            streams.open("acme", "t1"),
            Err(QueryError::TooManyStreams {
                scope: Scope::Token,
                limit: 2
            })
        ));
        let _c = streams.open("acme", "t2").unwrap();
        assert!(matches!(
            streams.open("acme", "t3"),
            Err(QueryError::TooManyStreams {
                scope: Scope::Tenant,
                limit: 3
            })
        ));
        let _d = streams.open("tiny", "t4").unwrap();
        assert_eq!(streams.gauge.get(), 4);
        drop(a);
        let _e = streams.open("acme", "t1").expect("a closed stream frees its place");
    }

    #[tokio::test]
    async fn one_snapshot_per_site_is_shared() {
        let snapshots = Arc::new(Snapshots::default());
        let computed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut waiting = Vec::new();
        for _ in 0..20 {
            let (snapshots, computed) = (snapshots.clone(), computed.clone());
            waiting.push(tokio::spawn(async move {
                snapshots
                    .get("acme", "a.example", Duration::from_secs(60), || async move {
                        computed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok(json!({"visitors": 1}))
                    })
                    .await
                    .unwrap()
            }));
        }
        for w in waiting {
            assert_eq!(w.await.unwrap()["visitors"], 1);
        }
        assert_eq!(
            computed.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "20 requests, one computation"
        );
        // An older snapshot than asked for is computed again.
        let again = snapshots
            .get("acme", "a.example", Duration::ZERO, || async {
                Ok(json!({"visitors": 2}))
            })
            .await
            .unwrap();
        assert_eq!(again["visitors"], 2);
    }
}
