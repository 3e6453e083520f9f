//! Token buckets keyed by name: each key may spend `rate` per second with bursts up to
//! `burst`. In memory, per process. Used for per-site ingest rates and per-token query rates.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Buckets kept before idle ones are swept: a bucket that has refilled completely holds no
/// state worth keeping (a new one starts full), so sweeping never changes a decision.
const SWEEP_ABOVE: usize = 100_000;

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
        if buckets.len() >= SWEEP_ABOVE {
            let per_second = f64::from(rate);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.updated).as_secs_f64() * per_second < capacity
            });
        }
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

    #[test]
    fn idle_buckets_are_swept_without_changing_decisions() {
        let rl = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..SWEEP_ABOVE {
            rl.take("t", &i.to_string(), 1, 1, 1, t0).unwrap();
        }
        // One busy site stays limited across the sweep; the idle ones are forgotten.
        assert!(rl.take("t", "busy", 1, 1, 1, t0 + Duration::from_secs(2)).is_ok());
        assert!(rl.take("t", "busy", 1, 1, 1, t0 + Duration::from_secs(2)).is_err());
        assert!(rl.buckets.lock().unwrap().len() < 10, "idle buckets were swept");
        assert!(rl.take("t", "busy", 1, 1, 1, t0 + Duration::from_secs(2)).is_err());
    }
}
