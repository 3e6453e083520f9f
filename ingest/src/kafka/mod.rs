//! The Kafka side of the distributed data path: per-tenant topics, the message format, and
//! the log the collector produces to (the loader consumes it, `crate::loader`).

use serde::{Deserialize, Serialize};

pub mod context;
pub mod lag;
pub mod membership;
pub mod provision;
pub mod security;
pub mod sink;

pub use security::{ClientCertificate, Mechanism, Protocol, Sasl, Security, SecurityError};

/// The tenant's event topic and its dead-letter topic.
pub fn topics(tenant: &str) -> [String; 2] {
    [
        format!("sightline.{tenant}.events"),
        format!("sightline.{tenant}.events.dlq"),
    ]
}

/// A librdkafka client configuration with the bootstrap servers, the TLS/SASL settings
/// (`Security`, which every role reads from its environment at start), and librdkafka's
/// protocol debug contexts when `$SIGHTLINE_KAFKA_DEBUG` names some (e.g.
/// `broker,protocol,security`).
pub fn client_config(brokers: &str, security: &Security) -> rdkafka::ClientConfig {
    let mut config = rdkafka::ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    security.apply(&mut config);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_settings_reach_the_client_configuration() {
        let security = Security {
            protocol: Protocol::SaslSsl,
            sasl: Some(Sasl {
                mechanism: Mechanism::ScramSha512,
                username: "sightline".into(),
                password: "pw".into(),
            }),
            ca_file: Some("/etc/kafka/ca.pem".into()),
            client_certificate: Some(ClientCertificate {
                cert_file: "/etc/kafka/user.crt".into(),
                key_file: "/etc/kafka/user.key".into(),
                key_password: Some("kpw".into()),
            }),
        };
        let config = client_config("k:9093", &security);
        assert_eq!(config.get("bootstrap.servers"), Some("k:9093"));
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("sightline"));
        assert_eq!(config.get("sasl.password"), Some("pw"));
        assert_eq!(config.get("ssl.ca.location"), Some("/etc/kafka/ca.pem"));
        assert_eq!(config.get("ssl.certificate.location"), Some("/etc/kafka/user.crt"));
        assert_eq!(config.get("ssl.key.location"), Some("/etc/kafka/user.key"));
        assert_eq!(config.get("ssl.key.password"), Some("kpw"));
        // TLS without a CA file: the system's CAs, wherever they are (not OpenSSL's
        // compiled-in directory, which distroless lacks).
        let public_ca = Security {
            protocol: Protocol::Ssl,
            ..Security::default()
        };
        assert_eq!(
            client_config("k:9093", &public_ca).get("ssl.ca.location"),
            Some("probe")
        );
        let plain = client_config("k:9092", &Security::default());
        assert_eq!(plain.get("security.protocol"), Some("plaintext"));
        assert_eq!(plain.get("ssl.ca.location"), None);
        assert_eq!(plain.get("sasl.mechanism"), None);
    }
}
