//! The embedded backend: the ClickHouse engine in-process through libchdb. One connection
//! writes (inserts are serialised anyway by the group commit), a pool of readers reads in
//! parallel, and one more connection only cancels statements.

mod conn;
mod ffi;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use serde_json::Value;
use tokio::sync::Semaphore;

pub use conn::Conn;

use super::{InsertFormat, Params, SelectLimits, StatementHold, Warehouse};
use crate::{Error, Result};

/// The environment variable libchdb's own jemalloc reads its configuration from, once,
/// when the library is loaded (at the first engine open).
pub const ALLOCATOR_ENV: &str = "JE_MALLOC_CONF";

/// The engine allocator's configuration in Sightline's processes: pages the engine frees go
/// back to the system within 100 ms (`dirty_decay_ms:100`) instead of over 5 seconds (the
/// engine's default, made for a server that owns its machine). Every insert allocates and
/// frees megabytes of parsing, aggregation and part-writing buffers, so at ingest
/// saturation those 5 seconds kept about as much freed memory resident as the engine was
/// using. Measured (BENCHMARKS.md, "Standalone memory at saturation"): 100 ms takes
/// standalone's anonymous memory from ~290-330 MB to ~220-245 MB at the same throughput;
/// 0 (back at once) reaches ~180 MB but costs about 28 % of the events per second, a
/// trade left to the operator (`JE_MALLOC_CONF=dirty_decay_ms:0`).
pub const ENGINE_ALLOCATOR_CONF: &str = "dirty_decay_ms:100";

/// Gives this process's engine [`ENGINE_ALLOCATOR_CONF`], unless its environment already
/// sets [`ALLOCATOR_ENV`] (an operator's own choice wins). Call it first in `main`, before
/// any other thread exists: changing the environment is sound only while nothing else can
/// read it, and it must happen before the engine is loaded.
pub fn configure_engine_allocator() {
    if std::env::var_os(ALLOCATOR_ENV).is_none() {
        std::env::set_var(ALLOCATOR_ENV, ENGINE_ALLOCATOR_CONF);
    }
}

pub struct Embedded {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Conn>,
    /// Reading connections not in use. A reader is taken only with a permit of `free`, so
    /// a statement waits (in arrival order) for whichever reader frees first, never behind
    /// one particular busy reader.
    readers: Mutex<Vec<Conn>>,
    free: Arc<Semaphore>,
    /// Runs `KILL QUERY` for statements past their deadline; never busy for long, so a
    /// cancellation does not wait behind inserts or reads.
    control: Mutex<Conn>,
}

/// Refuses an engine directory another process holds. The engine locks its `status` file
/// (flock) while it runs and removes it when it stops; opening a held directory fails inside
/// the engine with "Cannot lock file", which names neither the holder nor what to do.
fn refuse_if_in_use(path: &Path) -> Result<()> {
    let status = path.join("status");
    let file = match std::fs::File::open(&status) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    match file.try_lock() {
        // Released when `file` is dropped, before the engine takes it.
        Ok(()) => Ok(()),
        Err(std::fs::TryLockError::WouldBlock) => {
            // The engine writes "PID: n" on the status file's first line.
            let holder = std::fs::read_to_string(&status)
                .ok()
                .and_then(|text| text.lines().next().map(|l| l.trim().replace("PID: ", "PID ")))
                .filter(|l| !l.is_empty())
                .unwrap_or_else(|| "unknown PID".into());
            Err(Error::EngineInUse {
                path: path.display().to_string(),
                holder,
            })
        }
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

impl Embedded {
    /// Opens the engine with its data under `path` (created 0700), with `readers` reading
    /// connections.
    pub fn open(path: &Path, readers: usize) -> Result<Self> {
        crate::secret::create_private_dir(path)?;
        let path = path.canonicalize()?;
        refuse_if_in_use(&path)?;
        let writer = Mutex::new(Conn::open(&path)?);
        let control = Mutex::new(Conn::open(&path)?);
        let readers = (0..readers.max(1))
            .map(|_| Conn::open(&path))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                writer,
                free: Arc::new(Semaphore::new(readers.len())),
                readers: Mutex::new(readers),
                control,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    pub fn engine_version(&self) -> String {
        lock(&self.inner.writer).map(|c| c.version()).unwrap_or_default()
    }

    /// Runs `f` on a free reader; `hold` lives until `f` has returned.
    async fn with_reader<T: Send + 'static>(
        &self,
        hold: StatementHold,
        f: impl FnOnce(&mut Conn) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let permit = self
            .inner
            .free
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Engine("the reader pool is closed".into()))?;
        let inner = self.inner.clone();
        blocking(move || {
            let _hold = hold;
            let _permit = permit;
            let mut reader = Reader::take(&inner)?;
            f(reader.conn())
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

impl Embedded {
    /// Runs a statement on a reader within `limits` (see `Warehouse::select_within`) and
    /// returns its JSONEachRow output.
    async fn run_within(
        &self,
        sql: &str,
        params: &Params,
        limits: &SelectLimits,
        hold: StatementHold,
    ) -> Result<Vec<u8>> {
        // The engine's C API has no per-statement settings or id: the limits go into the
        // statement, and a unique log_comment names it for KILL QUERY.
        let tag = format!("sightline-{}", uuid::Uuid::new_v4());
        let settings: Vec<String> = limits
            .settings()
            .into_iter()
            .map(|(name, value)| match value.parse::<u64>() {
                Ok(n) => format!("{name} = {n}"),
                Err(_) => format!("{name} = '{value}'"),
            })
            .chain(std::iter::once(format!("log_comment = '{tag}'")))
            .collect();
        let sql = format!("{sql} SETTINGS {}", settings.join(", "));
        let params = params.0.clone();
        let mut cancel = CancelOnDrop {
            inner: self.inner.clone(),
            tag,
            armed: true,
        };
        let run = self.with_reader(hold, move |c| c.query(&sql, "JSONEachRow", &params));
        let outcome = tokio::time::timeout(limits.deadline(), run).await;
        match outcome {
            Ok(result) => {
                cancel.armed = false;
                result
            }
            // Dropping `cancel` (armed) cancels the statement; its reader and `hold` come
            // back when the engine has stopped it.
            Err(_) => Err(Error::DeadlineExceeded(limits.deadline())),
        }
    }
}

/// A reader taken from the pool, put back when dropped (also when the statement panicked).
struct Reader<'a> {
    inner: &'a Inner,
    conn: Option<Conn>,
}

impl<'a> Reader<'a> {
    fn take(inner: &'a Inner) -> Result<Self> {
        let conn = inner
            .readers
            .lock()
            .map_err(|_| Error::Engine("the reader pool was poisoned by a panic".into()))?
            .pop()
            .ok_or_else(|| Error::Engine("no free reader although a permit was granted".into()))?;
        Ok(Self {
            inner,
            conn: Some(conn),
        })
    }

    fn conn(&mut self) -> &mut Conn {
        self.conn.as_mut().expect("present until dropped")
    }
}

impl Drop for Reader<'_> {
    fn drop(&mut self) {
        if let (Some(conn), Ok(mut pool)) = (self.conn.take(), self.inner.readers.lock()) {
            pool.push(conn);
        }
    }
}

/// Cancels a tagged statement unless disarmed: dropped with the caller's future when the
/// caller stops waiting, so the engine does not finish work nobody will read.
struct CancelOnDrop {
    inner: Arc<Inner>,
    tag: String,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            cancel_tagged(&self.inner, &self.tag);
        }
    }
}

/// Asks the engine to cancel the statement carrying `tag` as its `log_comment`; the engine
/// stops it at its next check (between blocks of rows). Runs on a blocking thread, so it is
/// safe to call from a destructor.
fn cancel_tagged(inner: &Arc<Inner>, tag: &str) {
    let (inner, tag) = (inner.clone(), tag.to_string());
    let kill = move || {
        // The tag is ours (a UUID), never client text: it may be written into the statement.
        let sql = format!("KILL QUERY WHERE Settings['log_comment'] = '{tag}' ASYNC");
        match lock(&inner.control).and_then(|mut c| c.query(&sql, "TabSeparated", &[])) {
            Ok(_) => tracing::debug!(%tag, "statement cancelled"),
            Err(e) => tracing::warn!(%tag, error = %e, "could not cancel a statement"),
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn_blocking(kill);
        }
        Err(_) => kill(),
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
        let bytes = self
            .with_reader(Box::new(()), move |c| c.query(&sql, "JSONEachRow", &params))
            .await?;
        parse_json_each_row(&bytes)
    }

    async fn select_within(
        &self,
        sql: &str,
        params: &Params,
        limits: &SelectLimits,
        hold: StatementHold,
    ) -> Result<Vec<Value>> {
        parse_json_each_row(&self.run_within(sql, params, limits, hold).await?)
    }

    async fn execute_within(
        &self,
        sql: &str,
        params: &Params,
        limits: &SelectLimits,
        hold: StatementHold,
    ) -> Result<()> {
        self.run_within(sql, params, limits, hold).await.map(|_| ())
    }

    async fn select_row_binary(&self, sql: &str, params: &Params) -> Result<Vec<u8>> {
        let (sql, params) = (sql.to_string(), params.0.clone());
        self.with_reader(Box::new(()), move |c| c.query(&sql, "RowBinary", &params))
            .await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_another_process_holds_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        assert!(refuse_if_in_use(dir.path()).is_ok(), "no status file: free");
        let status = dir.path().join("status");
        std::fs::write(&status, "PID: 4242\nStarted at: 2026-12-01 07:15:13\n").unwrap();
        assert!(refuse_if_in_use(dir.path()).is_ok(), "a status file nobody locks: free");
        // flock locks belong to an open file: a second open sees this one's lock.
        let holder = std::fs::File::open(&status).unwrap();
        holder.lock().unwrap();
        let e = refuse_if_in_use(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("PID 4242") && e.contains("one process") && e.contains("--clickhouse-url"),
            "{e}"
        );
        drop(holder);
        assert!(refuse_if_in_use(dir.path()).is_ok());
    }
}
