//! The one error type of `sightline-core`.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tenant file or spec that cannot be used; names the file and the field.
    #[error("tenant spec {source_name}: {message}")]
    Spec { source_name: String, message: String },
    /// The embedded engine could not be loaded or opened.
    #[error("embedded engine: {0}")]
    Engine(String),
    /// The warehouse server could not be reached (network, timeout): worth retrying.
    #[error("warehouse unreachable: {0}")]
    Unreachable(String),
    /// A statement failed in the warehouse; `sql` is the statement text (never user input).
    #[error("warehouse query failed: {message}")]
    Query { sql: String, message: String },
    /// The warehouse answered with something we could not decode.
    #[error("warehouse answer could not be decoded: {0}")]
    Decode(String),
    #[error("secret: {0}")]
    Secret(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
