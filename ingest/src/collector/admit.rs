//! The one intake every entry point goes through (`/v1/collect` JSON and batches, the pixel,
//! `/v1/collect/debug`, GA4 MP and its debug endpoint, and so sightline.js): the request's
//! event count, validation (caps on every field that comes from a header or the body, see
//! `sightline_core::intake`) and the site's budgets, charged before anything is stored.
//!
//! Budgets are token buckets per (tenant, site), in this process: events per second
//! (`limits.eventsPerSecondPerSite`, `burstPerSite`) and stored bytes per second
//! (`limits.bytesPerSecondPerSite`, `burstBytesPerSite`), so that a write token, which every
//! web page shows, cannot fill the disk. Debug requests store nothing and are charged events
//! only.

use std::time::Instant;

use serde_json::Value;
use sightline_core::event::RawEvent;
use sightline_core::intake::{validate_event, Adjustment, Rejection, RequestContext};
use sightline_core::registry::TenantEntry;

use super::CollectorState;
use crate::error::Error;

/// One request's events on their way in, whatever door they came by.
pub(crate) struct Submission<'a> {
    pub entry: &'a TenantEntry,
    pub ctx: RequestContext<'a>,
    pub events: &'a [Value],
    /// Whether the events will be stored (debug endpoints only look).
    pub stores: bool,
}

/// The outcome of admitting one request.
pub(crate) struct Admitted {
    pub tenant: String,
    pub events: Vec<RawEvent>,
    /// The ids the client chose (a retry repeats them).
    pub client_ids: Vec<uuid::Uuid>,
    pub rejected: Vec<Rejection>,
    pub adjusted: Vec<Adjustment>,
}

/// Counts, validates and charges one request. Every event fails or is cut alone; the budgets
/// refuse the whole request (429, nothing stored) so the client retries it whole.
pub(crate) fn admit(state: &CollectorState, s: Submission<'_>) -> Result<Admitted, Error> {
    let limits = &s.entry.tenant.spec.limits;
    if s.events.len() > limits.events_per_request as usize {
        return Err(Error::TooManyEvents {
            count: s.events.len(),
            limit: limits.events_per_request,
        });
    }
    let mut out = Admitted {
        tenant: s.entry.tenant.name.clone(),
        events: Vec::with_capacity(s.events.len()),
        client_ids: Vec::new(),
        rejected: Vec::new(),
        adjusted: Vec::new(),
    };
    for (i, event) in s.events.iter().enumerate() {
        match validate_event(i, event, &s.ctx) {
            Ok(accepted) => {
                if accepted.client_chose_id {
                    out.client_ids.push(accepted.event.event_id);
                }
                out.adjusted.extend(accepted.adjustments);
                out.events.push(accepted.event);
            }
            Err(r) => out.rejected.push(r),
        }
    }
    let now = Instant::now();
    let site = s.ctx.site_id;
    let events = u32::try_from(s.events.len()).unwrap_or(u32::MAX);
    let refused = |budget: &'static str, retry_after| Error::RateLimited {
        site: site.to_string(),
        budget,
        retry_after,
    };
    state
        .rate
        .take(
            &out.tenant,
            site,
            events.min(limits.burst_per_site.max(limits.events_per_second_per_site)),
            limits.events_per_second_per_site,
            limits.burst_per_site,
            now,
        )
        .map_err(|after| refused("events", after))?;
    if s.stores && !out.events.is_empty() {
        let bytes: u64 = out.events.iter().map(RawEvent::stored_bytes).sum();
        state
            .stored_bytes
            .take(
                &out.tenant,
                site,
                // A request larger than the whole burst drains it rather than never passing.
                u32::try_from(bytes)
                    .unwrap_or(u32::MAX)
                    .min(limits.burst_bytes_per_site.max(limits.bytes_per_second_per_site)),
                limits.bytes_per_second_per_site,
                limits.burst_bytes_per_site,
                now,
            )
            .map_err(|after| refused("stored bytes", after))?;
    }
    Ok(out)
}
