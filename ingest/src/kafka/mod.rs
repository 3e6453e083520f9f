//! The Kafka side of the distributed data path: per-tenant topics, the message format, and
//! the log the collector produces to (the loader consumes it, `crate::loader`).

use serde::{Deserialize, Serialize};

pub mod context;
pub mod lag;
pub mod membership;
pub mod provision;
pub mod sink;

/// The tenant's event topic and its dead-letter topic.
pub fn topics(tenant: &str) -> [String; 2] {
    [
        format!("sightline.{tenant}.events"),
        format!("sightline.{tenant}.events.dlq"),
    ]
}

/// How clients reach the brokers: TLS and SASL. Every role reads it from its environment
/// (`Security::from_env`), so a cluster's pods get it the way they get the brokers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Security {
    /// librdkafka's `security.protocol`: `plaintext` (default), `ssl`, `sasl_plaintext`,
    /// `sasl_ssl`. From `$SIGHTLINE_KAFKA_SECURITY_PROTOCOL`.
    pub protocol: Option<String>,
    /// `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (`$SIGHTLINE_KAFKA_SASL_MECHANISM`).
    pub sasl_mechanism: Option<String>,
    /// `$SIGHTLINE_KAFKA_SASL_USERNAME` and `$SIGHTLINE_KAFKA_SASL_PASSWORD`.
    pub sasl_username: Option<String>,
    pub sasl_password: Option<String>,
    /// A PEM file of CAs that sign the brokers' certificates (`$SIGHTLINE_KAFKA_CA_FILE`).
    pub ca_file: Option<String>,
}

impl Security {
    pub const PROTOCOL_ENV: &'static str = "SIGHTLINE_KAFKA_SECURITY_PROTOCOL";
    pub const SASL_MECHANISM_ENV: &'static str = "SIGHTLINE_KAFKA_SASL_MECHANISM";
    pub const SASL_USERNAME_ENV: &'static str = "SIGHTLINE_KAFKA_SASL_USERNAME";
    pub const SASL_PASSWORD_ENV: &'static str = "SIGHTLINE_KAFKA_SASL_PASSWORD";
    pub const CA_FILE_ENV: &'static str = "SIGHTLINE_KAFKA_CA_FILE";

    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            protocol: var(Self::PROTOCOL_ENV),
            sasl_mechanism: var(Self::SASL_MECHANISM_ENV),
            sasl_username: var(Self::SASL_USERNAME_ENV),
            sasl_password: var(Self::SASL_PASSWORD_ENV),
            ca_file: var(Self::CA_FILE_ENV),
        }
    }

    fn apply(&self, config: &mut rdkafka::ClientConfig) {
        for (key, value) in [
            ("security.protocol", &self.protocol),
            ("sasl.mechanism", &self.sasl_mechanism),
            ("sasl.username", &self.sasl_username),
            ("sasl.password", &self.sasl_password),
            ("ssl.ca.location", &self.ca_file),
        ] {
            if let Some(value) = value {
                config.set(key, value);
            }
        }
    }
}

/// A librdkafka client configuration with the bootstrap servers, the TLS/SASL settings of
/// the environment (`Security::from_env`), and librdkafka's protocol debug contexts when
/// `$SIGHTLINE_KAFKA_DEBUG` names some (e.g. `broker,protocol,eos`).
pub fn client_config(brokers: &str) -> rdkafka::ClientConfig {
    client_config_with(brokers, &Security::from_env())
}

/// Like `client_config`, with explicit TLS/SASL settings.
pub fn client_config_with(brokers: &str, security: &Security) -> rdkafka::ClientConfig {
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
            protocol: Some("sasl_ssl".into()),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_username: Some("sightline".into()),
            sasl_password: Some("pw".into()),
            ca_file: Some("/etc/kafka/ca.pem".into()),
        };
        let config = client_config_with("k:9093", &security);
        assert_eq!(config.get("bootstrap.servers"), Some("k:9093"));
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("sasl.username"), Some("sightline"));
        assert_eq!(config.get("ssl.ca.location"), Some("/etc/kafka/ca.pem"));
        assert_eq!(
            client_config_with("k:9092", &Security::default()).get("security.protocol"),
            None
        );
    }
}
