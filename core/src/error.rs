//! The one error type of `sightline-core`.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tenant file or spec that cannot be used; names the file and the field.
    #[error("tenant spec {source_name}: {message}")]
    Spec { source_name: String, message: String },
    /// A Reprocess file (a `Reprocess` document or a bare spec) that cannot be used; names
    /// the file and the field. Apart from `Spec`, so the message says which kind of file it
    /// is.
    #[error("Reprocess {source_name}: {message}")]
    ReprocessSpec { source_name: String, message: String },
    /// The embedded engine could not be loaded or opened.
    #[error("embedded engine: {0}")]
    Engine(String),
    /// Another process holds the embedded engine's directory (its `status` file is locked):
    /// the engine belongs to one process at a time.
    #[error("the embedded engine at {path} is in use by another process ({holder}): it belongs to one process at a time; stop that process, or give the distributed roles a ClickHouse server (--clickhouse-url)")]
    EngineInUse { path: String, holder: String },
    /// The warehouse server could not be reached (network, timeout): worth retrying.
    #[error("warehouse unreachable: {0}")]
    Unreachable(String),
    /// A statement failed in the warehouse; `sql` is the statement text (never user input).
    #[error("warehouse query failed: {message}")]
    Query { sql: String, message: String },
    /// A schema statement with no form for where it is to run (the cluster form knows the
    /// statement kinds `schema` writes); `sql` is the statement (never user input).
    #[error("no cluster form for a schema statement: {message}")]
    Ddl { sql: String, message: String },
    /// A client-requested statement outlived its deadline and was cancelled in the engine.
    #[error("the statement ran past its deadline of {0:?} and was cancelled")]
    DeadlineExceeded(std::time::Duration),
    /// The warehouse answered with something we could not decode.
    #[error("warehouse answer could not be decoded: {0}")]
    Decode(String),
    #[error("secret: {0}")]
    Secret(String),
    /// A replay asked for something that cannot be done (an empty or reversed range, a site
    /// the tenant does not have, a checkpoint of another run); names what is wrong.
    #[error("replay: {0}")]
    InvalidReplay(String),
    /// A tenant no spec names.
    #[error("unknown tenant {0:?}")]
    UnknownTenant(String),
    /// A replay of a day that can still receive events, without `force`
    /// (docs/replay.md, "Sealing").
    #[error("day {day} is not sealed yet (days through {sealed_through} are): it can still receive events; force the replay to run it beside the writers")]
    DayNotSealed {
        day: chrono::NaiveDate,
        sealed_through: chrono::NaiveDate,
    },
    /// Another replay (or sealing) holds the day's lease.
    #[error("day {day} is being replayed by {holder} ({purpose}); try again once it is done")]
    DayLeased {
        day: chrono::NaiveDate,
        holder: String,
        purpose: String,
    },
    /// A replay's staging disagrees with `events_raw` at swap time: nothing was swapped.
    #[error("day {day}: {message}; the live tables are unchanged")]
    ReplayMismatch { day: chrono::NaiveDate, message: String },
    /// A run cancelled between days.
    #[error("cancelled")]
    Cancelled,
    /// A replay stopped by an error on `day` (or cancelled): `report` holds the days done
    /// before it (each swapped whole and checkpointed).
    #[error("replay stopped at day {day}: {cause} ({} days done before it)", report.days.len())]
    ReplayStopped {
        day: chrono::NaiveDate,
        cause: Box<Error>,
        report: Box<crate::warehouse::replay::ReplayReport>,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// ClickHouse exception codes of conditions that pass with time (a server starting, read-only
/// while its keeper is away, overloaded), as opposed to a request that is wrong.
const TRANSIENT_CODES: &[u32] = &[
    3,   // UNEXPECTED_END_OF_FILE (connection cut)
    159, // TIMEOUT_EXCEEDED
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR
    225, // NO_ZOOKEEPER
    241, // MEMORY_LIMIT_EXCEEDED
    242, // TABLE_IS_READ_ONLY
    252, // TOO_MANY_PARTS
    999, // KEEPER_EXCEPTION
];

impl Error {
    /// Whether waiting can heal this (the warehouse away or overloaded), so a service should
    /// retry rather than exit; wrong credentials, statements or specs need a fix instead.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable(_) => true,
            Error::Query { message, .. } => message
                .split_once("Code: ")
                .and_then(|(_, rest)| rest.split('.').next())
                .and_then(|code| code.trim().parse::<u32>().ok())
                .is_some_and(|code| TRANSIENT_CODES.contains(&code)),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(message: &str) -> Error {
        Error::Query {
            sql: "SELECT 1".into(),
            message: message.into(),
        }
    }

    #[test]
    fn outages_are_transient_and_wrong_requests_are_not() {
        assert!(Error::Unreachable("connection refused".into()).is_transient());
        assert!(
            query("bad response: Code: 242. DB::Exception: Table is in readonly mode. (TABLE_IS_READ_ONLY)")
                .is_transient()
        );
        assert!(!query(
            "bad response: Code: 516. DB::Exception: default: Authentication failed. (AUTHENTICATION_FAILED)"
        )
        .is_transient());
        assert!(!query("Code: 62. DB::Exception: Syntax error. (SYNTAX_ERROR)").is_transient());
        assert!(!query("no code at all").is_transient());
        assert!(!Error::Decode("x".into()).is_transient());
    }
}
