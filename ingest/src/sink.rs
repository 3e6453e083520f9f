//! `EventSink`: where the collector hands accepted events. `append` returns only once the
//! events are durable (committed to the warehouse in standalone, acknowledged by the broker
//! with Kafka), so the collector's 202 means "stored".

use async_trait::async_trait;
use sightline_core::event::RawEvent;
use uuid::Uuid;

use crate::error::Error;

#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Makes `events` (all of one tenant) durable. All or nothing for the request: on
    /// `Error::Busy` (too much waiting; retry later) or `Error::Unavailable` nothing of it is
    /// acknowledged.
    /// `client_ids` are the ids the client chose itself (a retry repeats them); the ids the
    /// server generated are new by construction.
    async fn append(&self, tenant: &str, events: Vec<RawEvent>, client_ids: Vec<Uuid>) -> Result<(), Error>;
}
