//! Ingest: the collector (HTTP -> log) and the standalone log, a group-commit writer into
//! the warehouse. The Kafka log and loader come beside these, behind the same `EventSink`.

pub mod collector;
pub mod error;
pub mod group_commit;
pub mod kafka;
pub mod loader;
pub mod metrics;
pub mod sink;

pub use error::Error;
