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

/// One log message: the accepted events of one collector request. A request is one
/// message so that it is on the log whole or not at all: a collector killed while
/// producing never leaves half a request behind, and its client's retry (same ids) is
/// deduplicated by the loader. The key is the first event's `site:visitor`; a request comes
/// from one browser, so its events share the visitor and stay in order on one partition.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub events: Vec<T>,
    /// The ids the client chose itself: only these can repeat in a later message (a retry),
    /// so only these are looked up before storing (beyond a crash's redelivery window).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_ids: Vec<uuid::Uuid>,
}
