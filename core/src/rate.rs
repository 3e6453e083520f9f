//! Token buckets keyed by name: each key may spend `rate` per second with bursts up to
//! `burst`. In memory, per process. Used for per-site ingest rates and per-token query rates.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Bucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<(String, String), Bucket>>,
}

impl RateLimiter {
    /// Takes `cost` tokens from the site's bucket, or says how long until there are enough.
    pub fn take(
        &self,
        tenant: &str,
        site: &str,
        cost: u32,
        rate: u32,
        burst: u32,
        now: Instant,
    ) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let capacity = f64::from(burst.max(rate));
        let bucket = buckets
            .entry((tenant.to_string(), site.to_string()))
            .or_insert_with(|| Bucket {
                tokens: capacity,
                updated: now,
            });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * f64::from(rate)).min(capacity);
        bucket.updated = now;
        let cost = f64::from(cost);
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            Ok(())
        } else {
            let wait = (cost.min(capacity) - bucket.tokens) / f64::from(rate.max(1));
            Err(Duration::from_secs_f64(wait.max(0.001)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let rl = RateLimiter::default();
        let t0 = Instant::now();
        assert!(rl.take("t", "s", 10, 5, 10, t0).is_ok());
        let wait = rl.take("t", "s", 5, 5, 10, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 1.0).abs() < 0.01, "{wait:?}");
        assert!(
            rl.take("t", "other", 10, 5, 10, t0).is_ok(),
            "sites have their own buckets"
        );
        assert!(rl.take("t", "s", 5, 5, 10, t0 + Duration::from_secs(1)).is_ok());
    }
}
