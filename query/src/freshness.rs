//! Watermarks for a query process that does not write (`sightline query`): it polls
//! storage for each site's newest event and recent row count. A change counts as a commit,
//! which moves the site's cache key, so answers are at most one poll interval stale.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sightline_core::warehouse::ops;

use crate::QueryState;

/// Events older than this are refused at intake (72 h) and so cannot change; one more day
/// of margin for clock skew.
const LATENESS_WINDOW_DAYS: i64 = 4;

/// Polls every `interval` until the task is dropped.
pub async fn follow_storage(state: Arc<QueryState>, interval: Duration) {
    loop {
        poll_once(&state).await;
        tokio::time::sleep(interval).await;
    }
}

/// One poll of every tenant; failures are logged and tried again next time.
pub async fn poll_once(state: &QueryState) {
    let since = Utc::now() - chrono::Duration::days(LATENESS_WINDOW_DAYS);
    for entry in state.registry.entries() {
        let tenant = &entry.tenant.name;
        match ops::recent_activity(state.warehouse.as_ref(), &entry.tenant.database(), since).await {
            Ok(sites) => {
                for (site, newest, rows) in sites {
                    state.watermarks.observed(tenant, &site, newest, rows);
                }
            }
            Err(e) => tracing::warn!(%tenant, error = %e, "could not poll storage for watermarks"),
        }
    }
}
