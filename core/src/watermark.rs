//! Data watermarks: per site, the newest event time committed and a commit counter. The
//! writer publishes after every commit; the query API shows the watermark with each answer
//! and keys its cache by the counter, so a commit for a site invalidates that site's answers.

use std::collections::HashMap;
use std::sync::RwLock;

use chrono::{DateTime, Utc};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watermark {
    /// The newest event time committed for the site (`None`: nothing yet).
    pub newest: Option<DateTime<Utc>>,
    /// How many commits have touched the site since this process started.
    pub commits: u64,
}

#[derive(Debug, Default)]
pub struct Watermarks {
    sites: RwLock<HashMap<(String, String), Watermark>>,
    /// Per site, the row count last seen by `observed`.
    recent_rows: RwLock<HashMap<(String, String), u64>>,
}

impl Watermarks {
    pub fn get(&self, tenant: &str, site: &str) -> Watermark {
        let sites = self.sites.read().unwrap_or_else(|p| p.into_inner());
        sites
            .get(&(tenant.to_string(), site.to_string()))
            .copied()
            .unwrap_or_default()
    }

    /// Records a commit that stored events of `site` up to `newest`.
    pub fn committed(&self, tenant: &str, site: &str, newest: DateTime<Utc>) {
        let mut sites = self.sites.write().unwrap_or_else(|p| p.into_inner());
        let w = sites.entry((tenant.to_string(), site.to_string())).or_default();
        w.newest = Some(w.newest.map_or(newest, |n| n.max(newest)));
        w.commits += 1;
    }

    /// Records what another process's commits left in storage, as seen by polling it: the
    /// newest event time and a row count of recent days. Counts as a commit (cached answers
    /// go stale) when either moved; late events move only the count.
    pub fn observed(&self, tenant: &str, site: &str, newest: DateTime<Utc>, recent_rows: u64) {
        let mut sites = self.sites.write().unwrap_or_else(|p| p.into_inner());
        let key = (tenant.to_string(), site.to_string());
        let w = sites.entry(key.clone()).or_default();
        let newest = w.newest.map_or(newest, |n| n.max(newest));
        let mut counts = self.recent_rows.write().unwrap_or_else(|p| p.into_inner());
        let known = counts.insert(key, recent_rows);
        if w.newest != Some(newest) || known != Some(recent_rows) {
            w.newest = Some(newest);
            w.commits += 1;
        }
    }

    /// Sets what storage already holds at start-up (no commit counted).
    pub fn seed(&self, tenant: &str, site: &str, newest: DateTime<Utc>) {
        let mut sites = self.sites.write().unwrap_or_else(|p| p.into_inner());
        let w = sites.entry((tenant.to_string(), site.to_string())).or_default();
        w.newest = Some(w.newest.map_or(newest, |n| n.max(newest)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn commits_move_the_watermark_forward_only() {
        let w = Watermarks::default();
        let t1 = Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap();
        let t0 = Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap();
        assert_eq!(w.get("t", "s"), Watermark::default());
        w.committed("t", "s", t1);
        w.committed("t", "s", t0); // a late event: counted, the newest time stays
        assert_eq!(
            w.get("t", "s"),
            Watermark {
                newest: Some(t1),
                commits: 2
            }
        );
        assert_eq!(w.get("t", "other").commits, 0);
    }

    #[test]
    fn polling_counts_a_commit_only_when_storage_changed() {
        let w = Watermarks::default();
        let t1 = Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap();
        w.observed("t", "s", t1, 10);
        w.observed("t", "s", t1, 10);
        assert_eq!(w.get("t", "s").commits, 1);
        w.observed("t", "s", t1, 11); // a late event: same newest, one more row
        assert_eq!(w.get("t", "s").commits, 2);
        assert_eq!(w.get("t", "s").newest, Some(t1));
    }
}
