//! `EventSink`: where the collector hands accepted events. `append` returns only once the
//! events are durable (committed to the warehouse in standalone, acknowledged by the broker
//! with Kafka), so the collector's 202 means "stored".

use async_trait::async_trait;
use sightline_core::event::RawEvent;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Too much is waiting already: the client should retry later.
    #[error("the event store is backed up; retry later")]
    Busy,
    /// The store failed; nothing of this request is acknowledged.
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Makes `events` (all of one tenant) durable. All or nothing for the request.
    /// `client_ids` are the ids the client chose itself (a retry repeats them); the ids the
    /// server generated are new by construction.
    async fn append(&self, tenant: &str, events: Vec<RawEvent>, client_ids: Vec<Uuid>) -> Result<(), SinkError>;
}
