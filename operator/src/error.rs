//! The one error type of the operator. Each variant has a `reason`: the CamelCase word the
//! `Ready` condition, the Warning Event and the error metric carry, so `kubectl get` says why
//! a tenant is not ready.

use sightline_ingest::kafka::provision::{ErrorClass, ProvisionError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec (or the operator's settings for it) cannot be used; nothing was touched.
    #[error("{message}")]
    Invalid { message: String },
    /// The tenant claims a database or topic another tenant owns; nothing was touched.
    #[error("{message}")]
    Conflict { message: String },
    /// The spec asks for something Sightline does not do (shrink partitions, change the
    /// replication factor).
    #[error("{message}")]
    NotSupported { message: String },
    /// Kafka is away or not ready: retried with backoff.
    #[error("Kafka is unavailable: {0}")]
    KafkaUnavailable(String),
    /// Kafka refused a request as wrong.
    #[error("Kafka refused: {0}")]
    Kafka(ProvisionError),
    /// ClickHouse is away or not ready: retried with backoff.
    #[error("ClickHouse is unavailable: {0}")]
    ClickHouseUnavailable(String),
    /// ClickHouse refused a statement.
    #[error("ClickHouse refused: {0}")]
    ClickHouse(sightline_core::Error),
    /// A Secret the spec points at (credentials) is missing or lacks a key.
    #[error("{0}")]
    SecretMissing(String),
    /// The Kubernetes API refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A `Delete` cleanup could not finish (what is left and why); `transient` when every
    /// cause is an outage.
    #[error("cleanup cannot finish: {message}")]
    Cleanup { message: String, transient: bool },
    /// The image a Reprocess's Job would run has no digest the operator can learn (a tag
    /// other than the operator's own image, or no `POD_NAME`/`POD_NAMESPACE`); the message
    /// says how to pin it.
    #[error("{0}")]
    ImageDigestUnknown(String),
    /// An object could not be serialized for the API.
    #[error("serialize: {0}")]
    Serialize(#[from] serde_json::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Invalid { .. } => "Invalid",
            Error::Conflict { .. } => "Conflict",
            Error::NotSupported { .. } => "NotSupported",
            Error::KafkaUnavailable(_) => "KafkaUnavailable",
            Error::Kafka(_) => "KafkaError",
            Error::ClickHouseUnavailable(_) => "ClickHouseUnavailable",
            Error::ClickHouse(_) => "ClickHouseError",
            Error::SecretMissing(_) => "SecretMissing",
            Error::Kube(_) => "KubernetesError",
            Error::Cleanup { .. } => "DeletionBlocked",
            Error::ImageDigestUnknown(_) => "ImageDigestUnknown",
            Error::Serialize(_) => "Internal",
        }
    }

    /// Whether retrying without a spec change can help (an outage); a spec that is wrong
    /// waits for its next change (and the periodic check) instead of a tight retry loop.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::KafkaUnavailable(_) | Error::ClickHouseUnavailable(_) | Error::Kube(_) | Error::SecretMissing(_) => {
                true
            }
            Error::Cleanup { transient, .. } => *transient,
            _ => false,
        }
    }

    /// The whole chain, for Warning Events (`kubectl describe` answers "why").
    pub fn chain(&self) -> String {
        let mut text = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(e) = source {
            text.push_str(": ");
            text.push_str(&e.to_string());
            source = e.source();
        }
        text
    }
}

impl From<ProvisionError> for Error {
    fn from(e: ProvisionError) -> Self {
        match e.class {
            ErrorClass::Unavailable => Error::KafkaUnavailable(e.to_string()),
            ErrorClass::NotSupported => Error::NotSupported { message: e.to_string() },
            ErrorClass::Conflict => Error::Conflict { message: e.to_string() },
            ErrorClass::Invalid => Error::Kafka(e),
        }
    }
}

impl From<sightline_core::Error> for Error {
    fn from(e: sightline_core::Error) -> Self {
        if e.is_transient() {
            Error::ClickHouseUnavailable(e.to_string())
        } else {
            Error::ClickHouse(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::types::RDKafkaErrorCode;

    #[test]
    fn provisioning_classes_become_reasons() {
        let e: Error = ProvisionError::from_code(Some("t"), RDKafkaErrorCode::AllBrokersDown).into();
        assert_eq!(e.reason(), "KafkaUnavailable");
        assert!(e.is_transient());
        let e: Error = ProvisionError::from_code(Some("t"), RDKafkaErrorCode::InvalidConfig).into();
        assert_eq!(e.reason(), "KafkaError");
        assert!(!e.is_transient());
        let e: Error = sightline_core::Error::Unreachable("refused".into()).into();
        assert_eq!(e.reason(), "ClickHouseUnavailable");
    }
}
