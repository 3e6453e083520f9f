//! The embedded backend: the ClickHouse engine in-process through libchdb. One connection
//! writes (inserts are serialised anyway by the group commit), a few more read in parallel.

mod conn;
mod ffi;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::Value;

pub use conn::Conn;

use super::{InsertFormat, Params, Warehouse};
use crate::{Error, Result};

pub struct Embedded {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Conn>,
    readers: Vec<Mutex<Conn>>,
    next_reader: AtomicUsize,
}

impl Embedded {
    /// Opens the engine with its data under `path`, with `readers` reading connections.
    pub fn open(path: &Path, readers: usize) -> Result<Self> {
        std::fs::create_dir_all(path)?;
        let path = path.canonicalize()?;
        let writer = Mutex::new(Conn::open(&path)?);
        let readers = (0..readers.max(1))
            .map(|_| Conn::open(&path).map(Mutex::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer,
                readers,
                next_reader: AtomicUsize::new(0),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn engine_version(&self) -> String {
        lock(&self.inner.writer).map(|c| c.version()).unwrap_or_default()
    }

    async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        blocking(move || {
            let i = inner.next_reader.fetch_add(1, Ordering::Relaxed) % inner.readers.len();
            let mut conn = lock(&inner.readers[i])?;
            f(&mut conn)
        })
        .await
    }

    async fn with_writer<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        blocking(move || {
            let mut conn = lock(&inner.writer)?;
            f(&mut conn)
        })
        .await
    }
}

fn lock(m: &Mutex<Conn>) -> Result<std::sync::MutexGuard<'_, Conn>> {
    m.lock()
        .map_err(|_| Error::Engine("a connection was poisoned by a panic".into()))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Engine(format!("engine task failed: {e}")))?
}

/// Parses JSONEachRow output into one JSON value per row.
pub fn parse_json_each_row(bytes: &[u8]) -> Result<Vec<Value>> {
    bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).map_err(|e| Error::Decode(e.to_string())))
        .collect()
}

#[async_trait]
impl Warehouse for Embedded {
    async fn execute(&self, sql: &str, params: &Params) -> Result<()> {
        let (sql, params) = (sql.to_string(), params.0.clone());
        self.with_writer(move |c| c.query(&sql, "TabSeparated", &params).map(|_| ()))
            .await
    }

    async fn select(&self, sql: &str, params: &Params) -> Result<Vec<Value>> {
        let (sql, params) = (sql.to_string(), params.0.clone());
        let bytes = self.with_reader(move |c| c.query(&sql, "JSONEachRow", &params)).await?;
        parse_json_each_row(&bytes)
    }

    async fn insert(&self, table: &str, columns: &str, format: InsertFormat, rows: Vec<u8>) -> Result<()> {
        let statement = format!("INSERT INTO {table} ({columns})");
        self.with_writer(move |c| c.insert(&statement, format.name(), &rows).map(|_| ()))
            .await
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }
}
