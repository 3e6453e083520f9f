//! The Kafka side of the distributed data path: per-tenant topics, and the log the
//! collector produces to (the loader that consumes it comes next, issue 4).

pub mod provision;
pub mod sink;

/// The tenant's event topic and its dead-letter topic.
pub fn topics(tenant: &str) -> [String; 2] {
    [
        format!("sightline.{tenant}.events"),
        format!("sightline.{tenant}.events.dlq"),
    ]
}
