//! A safe handle over one libchdb connection: parameterised queries and stream inserts.
//! A connection runs one statement at a time, so callers hold it behind a mutex.

use std::ffi::{c_char, CString};
use std::path::Path;

use super::ffi::{self, Api, Connection};
use crate::Error as WarehouseError;

pub struct Conn {
    api: &'static Api,
    handle: *mut Connection,
}

// SAFETY: a chdb connection may be used from any thread as long as calls are serialised,
// which `&mut self` on every call guarantees.
unsafe impl Send for Conn {}

impl Conn {
    /// Opens a connection to the engine storing its data under `path`. Every connection of
    /// a process must use the same path (the engine is one per process).
    pub fn open(path: &Path) -> Result<Self, WarehouseError> {
        let api = ffi::api().map_err(WarehouseError::Engine)?;
        let args = [
            "sightline".to_string(),
            format!("--path={}", path.display()),
            // Inserts are small and frequent; the engine must not buffer them asynchronously,
            // or an acknowledged event could sit in memory only.
            "--async_insert=0".to_string(),
        ];
        let cstrings: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_str()).map_err(|_| WarehouseError::Engine("NUL in engine argument".into())))
            .collect::<Result<_, _>>()?;
        let mut argv: Vec<*mut c_char> = cstrings.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        // SAFETY: argv points at NUL-terminated strings that outlive the call.
        let handle = unsafe { (api.connect)(argv.len() as i32, argv.as_mut_ptr()) };
        if handle.is_null() {
            return Err(WarehouseError::Engine(format!(
                "could not open the embedded engine at {}",
                path.display()
            )));
        }
        Ok(Self { api, handle })
    }

    pub fn version(&self) -> String {
        // SAFETY: chdb_version returns a static string.
        unsafe { ffi::owned_string((self.api.version)()) }.unwrap_or_default()
    }

    /// Runs one statement with `{name:Type}` parameters bound by the engine (never
    /// interpolated) and returns the output in `format`.
    pub fn query(&mut self, sql: &str, format: &str, params: &[(String, String)]) -> Result<Vec<u8>, WarehouseError> {
        let names: Vec<*const c_char> = params.iter().map(|(n, _)| n.as_ptr() as *const c_char).collect();
        let name_lens: Vec<usize> = params.iter().map(|(n, _)| n.len()).collect();
        let values: Vec<*const c_char> = params.iter().map(|(_, v)| v.as_ptr() as *const c_char).collect();
        let value_lens: Vec<usize> = params.iter().map(|(_, v)| v.len()).collect();
        // SAFETY: every pointer/length pair describes a live buffer for the duration of the call.
        let result = unsafe {
            (self.api.query_with_params_n)(
                *self.handle,
                sql.as_ptr() as *const c_char,
                sql.len(),
                format.as_ptr() as *const c_char,
                format.len(),
                names.as_ptr(),
                name_lens.as_ptr(),
                values.as_ptr(),
                value_lens.as_ptr(),
                params.len(),
            )
        };
        self.take_result(result, sql).map(|(bytes, _)| bytes)
    }

    /// Streams `data` (encoded in `format`) into `insert` ("INSERT INTO t (cols)") and
    /// commits it; returns rows written (including those of materialized views).
    pub fn insert(&mut self, insert: &str, format: &str, data: &[u8]) -> Result<u64, WarehouseError> {
        // SAFETY: pointers/lengths describe live buffers; the stream handle is destroyed on
        // every path below, as chdb.h requires.
        unsafe {
            let stream = (self.api.stream_insert_n)(
                *self.handle,
                insert.as_ptr() as *const c_char,
                insert.len(),
                format.as_ptr() as *const c_char,
                format.len(),
            );
            if let Some(err) = ffi::owned_string((self.api.stream_insert_error)(stream)) {
                (self.api.destroy_insert_stream)(stream);
                return Err(WarehouseError::Query {
                    sql: insert.to_string(),
                    message: err,
                });
            }
            if !data.is_empty() && (self.api.stream_append)(stream, data.as_ptr().cast(), data.len()) != 0 {
                let err = ffi::owned_string((self.api.stream_insert_error)(stream))
                    .unwrap_or_else(|| "stream append failed".into());
                (self.api.destroy_insert_stream)(stream);
                return Err(WarehouseError::Query {
                    sql: insert.to_string(),
                    message: err,
                });
            }
            let result = (self.api.stream_done)(stream);
            let outcome = self.take_result(result, insert);
            (self.api.destroy_insert_stream)(stream);
            outcome.map(|(_, rows)| rows)
        }
    }

    fn take_result(&self, result: ffi::ResultHandle, sql: &str) -> Result<(Vec<u8>, u64), WarehouseError> {
        if result.is_null() {
            return Err(WarehouseError::Query {
                sql: sql.to_string(),
                message: "engine returned no result".into(),
            });
        }
        // SAFETY: result is a live handle until destroyed at the end of this block.
        unsafe {
            let outcome = match ffi::owned_string((self.api.result_error)(result)) {
                Some(message) if !message.is_empty() => Err(WarehouseError::Query {
                    sql: sql.to_string(),
                    message,
                }),
                _ => {
                    let len = (self.api.result_length)(result);
                    let buf = (self.api.result_buffer)(result);
                    let bytes = if buf.is_null() || len == 0 {
                        Vec::new()
                    } else {
                        std::slice::from_raw_parts(buf as *const u8, len).to_vec()
                    };
                    Ok((bytes, (self.api.result_rows_written)(result)))
                }
            };
            (self.api.destroy_query_result)(result);
            outcome
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: handle came from chdb_connect and is closed exactly once.
        unsafe { (self.api.close_conn)(self.handle) }
    }
}
