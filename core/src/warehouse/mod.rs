//! The `Warehouse`: a small trait of primitives (execute, select, insert) that each backend
//! implements, and the operations Sightline builds on them (schema, ingest, replay), written
//! once so that every backend runs the same SQL text.

pub mod embedded;
pub mod http;
pub mod live;
pub mod ops;
pub mod params;
pub mod replay;
pub mod rowbinary;
pub mod tiers;

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
}

impl InsertFormat {
    pub fn name(self) -> &'static str {
        match self {
            InsertFormat::RowBinary => "RowBinary",
            InsertFormat::JsonEachRow => "JSONEachRow",
        }
    }
}
