//! The Kafka side of the distributed data path: per-tenant topics (provisioning now; the
//! producer-backed `EventSink` and the loader come next, issue 4).

pub mod provision;

/// The tenant's event topic and its dead-letter topic.
pub fn topics(tenant: &str) -> [String; 2] {
    [
        format!("sightline.{tenant}.events"),
        format!("sightline.{tenant}.events.dlq"),
    ]
}
