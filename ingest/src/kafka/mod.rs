//! The Kafka side of the distributed data path: per-tenant topics, the message format, and
//! the log the collector produces to (the loader consumes it, `crate::loader`).

use serde::{Deserialize, Serialize};

pub mod provision;
pub mod sink;

/// The tenant's event topic and its dead-letter topic.
pub fn topics(tenant: &str) -> [String; 2] {
    [
        format!("sightline.{tenant}.events"),
        format!("sightline.{tenant}.events.dlq"),
    ]
}

/// A librdkafka client configuration with the bootstrap servers, and librdkafka's protocol
/// debug contexts when `$SIGHTLINE_KAFKA_DEBUG` names some (e.g. `broker,protocol,eos`).
pub fn client_config(brokers: &str) -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    if let Ok(debug) = std::env::var("SIGHTLINE_KAFKA_DEBUG") {
        config
            .set("debug", debug)
            .set_log_level(rdkafka::config::RDKafkaLogLevel::Debug);
    }
    config
}

/// One log message: the accepted events of one visitor from one collector request, keyed
/// `site:visitor`, so that each visitor's events stay on one partition and one loader (the
/// live state of a visitor has one writer: `warehouse::live`). Almost every request holds
/// one visitor and is one message, on the log whole or not at all. A request whose events
/// belong to several visitors (a batch spanning UTC midnight, where the visitor id changes)
/// becomes one message per visitor; so that a retry of a request that was only partly
/// produced stores nothing twice, the ids the client did not choose are derived from the
/// events' content and place in the request, and listed with the client's own
/// (`sink::split_by_visitor`).
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub events: Vec<T>,
    /// The ids the client chose itself: only these can repeat in a later message (a retry),
    /// so only these are looked up before storing (beyond a crash's redelivery window).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_ids: Vec<uuid::Uuid>,
}
