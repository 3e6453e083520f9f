//! The `Warehouse`: a small trait of primitives (execute, select, insert) that each backend
//! implements, and the operations Sightline builds on them (schema, ingest, replay), written
//! once so that every backend runs the same SQL text.

pub mod embedded;
pub mod ops;
pub mod params;
pub mod replay;

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
    /// Inserts JSONEachRow-encoded `rows` into `table (columns)` as one insert: one part per
    /// partition, all or nothing from the reader's view.
    async fn insert(&self, table: &str, columns: &str, rows: Vec<u8>) -> Result<u64>;
    /// `embedded` or `http`, for logs and metrics.
    fn backend(&self) -> &'static str;
}
