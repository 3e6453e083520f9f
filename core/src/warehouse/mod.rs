//! The `Warehouse`: a small trait of primitives (execute, select, insert) that each backend
//! implements, and the operations Sightline builds on them (schema, ingest, replay), written
//! once so that every backend runs the same SQL text.

pub mod embedded;
pub mod http;
pub mod live;
pub mod native;
pub mod ops;
pub mod params;
pub mod processing;
pub mod replay;
pub mod rowbinary;
pub mod tiers;
pub mod ttl;

use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;

pub use params::Params;

use crate::Result;

#[async_trait]
pub trait Warehouse: Send + Sync + 'static {
    /// Runs a statement whose output does not matter (DDL, ALTER).
    async fn execute(&self, sql: &str, params: &Params) -> Result<()>;
    /// Runs a SELECT and returns its rows as JSON objects. 64-bit integers come back as
    /// JSON numbers.
    async fn select(&self, sql: &str, params: &Params) -> Result<Vec<Value>>;
    /// Runs a SELECT a client asked for, within `limits`: the engine enforces them as the
    /// statement's settings, and past `limits.deadline()` the backend cancels the statement
    /// in the engine and answers [`Error::DeadlineExceeded`]. A caller that stops waiting
    /// (drops the future) cancels the statement too. `hold` is kept until the engine has
    /// finished with the statement, which may be after the caller got its answer: a
    /// concurrency permit held that way keeps counting a statement that still runs. `sql`
    /// has no SETTINGS clause of its own.
    async fn select_within(
        &self,
        sql: &str,
        params: &Params,
        limits: &SelectLimits,
        hold: StatementHold,
    ) -> Result<Vec<Value>>;
    /// Runs a statement whose output does not matter (an `INSERT … SELECT` a query asked
    /// for: the query service's merged ranges) within `limits`, as [`Warehouse::select_within`]
    /// runs a SELECT: on a reading connection of the embedded engine, so that it never waits
    /// behind (or holds up) the writer's inserts.
    async fn execute_within(
        &self,
        sql: &str,
        params: &Params,
        limits: &SelectLimits,
        hold: StatementHold,
    ) -> Result<()>;
    /// Runs a SELECT and returns its rows in ClickHouse's RowBinary format (the replay
    /// engine reads raw rows this way: no text to parse, `rowbinary::decode_raw_events`).
    async fn select_row_binary(&self, sql: &str, params: &Params) -> Result<Vec<u8>>;
    /// Inserts `rows`, encoded in `format`, into `table (columns)` as one insert: one part
    /// per partition, all or nothing from the reader's view.
    async fn insert(&self, table: &str, columns: &str, format: InsertFormat, rows: Vec<u8>) -> Result<()>;
    /// `embedded` or `http`, for logs and metrics.
    fn backend(&self) -> &'static str;
}

/// How an insert body is encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InsertFormat {
    /// ClickHouse's binary row format (`rowbinary`): what the ingest path sends.
    RowBinary,
    /// One JSON object per line: for rows built as JSON.
    JsonEachRow,
    /// ClickHouse's columnar format (`native`): what the replay engine sends.
    Native,
}

impl InsertFormat {
    pub fn name(self) -> &'static str {
        match self {
            InsertFormat::RowBinary => "RowBinary",
            InsertFormat::JsonEachRow => "JSONEachRow",
            InsertFormat::Native => "Native",
        }
    }
}

/// Bounds on one client-requested SELECT, sent to the engine as settings of the statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelectLimits {
    /// The engine's `max_execution_time`, in seconds (at least 1).
    pub timeout_secs: u64,
    /// The engine's `max_rows_to_read`.
    pub max_rows_to_read: u64,
    /// The engine's `max_threads` for the statement; 0 leaves the engine's default (one per
    /// core).
    pub max_threads: u32,
}

/// How long after the engine's own time limit a backend waits before cancelling the statement
/// itself: the engine checks its limit only between blocks of rows.
pub const CANCEL_GRACE: Duration = Duration::from_secs(1);

impl SelectLimits {
    /// When the backend gives up and cancels: the engine's time limit plus [`CANCEL_GRACE`].
    pub fn deadline(&self) -> Duration {
        Duration::from_secs(self.timeout_secs.max(1)) + CANCEL_GRACE
    }

    /// The settings that carry the limits (overflow modes `throw`, so a limit is an error, not
    /// a silently partial answer).
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        let mut settings = vec![
            ("max_execution_time", self.timeout_secs.max(1).to_string()),
            ("timeout_overflow_mode", "throw".to_string()),
            ("max_rows_to_read", self.max_rows_to_read.to_string()),
            ("read_overflow_mode", "throw".to_string()),
        ];
        if self.max_threads > 0 {
            settings.push(("max_threads", self.max_threads.to_string()));
        }
        settings
    }
}

/// Whatever a caller needs kept alive while its statement runs in the engine (see
/// [`Warehouse::select_within`]).
pub type StatementHold = Box<dyn std::any::Any + Send + Sync>;
