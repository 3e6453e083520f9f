//! The few `extern "C"` entry points of libchdb that Sightline uses, written from chdb's
//! `chdb.h` (the npm package ships no header). The library is loaded at run time with
//! `libloading`, so the workspace builds without it and only the embedded backend needs it.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libloading::Library;

/// `chdb_connection` is a pointer to an opaque struct; `chdb_connect` returns a pointer to it.
pub type Connection = *mut c_void;
pub type ResultHandle = *mut c_void;
pub type InsertStream = *mut c_void;

type ConnectFn = unsafe extern "C" fn(c_int, *mut *mut c_char) -> *mut Connection;
type CloseFn = unsafe extern "C" fn(*mut Connection);
type QueryWithParamsFn = unsafe extern "C" fn(
    Connection,
    *const c_char,
    usize,
    *const c_char,
    usize,
    *const *const c_char,
    *const usize,
    *const *const c_char,
    *const usize,
    usize,
) -> ResultHandle;
type StreamInsertFn = unsafe extern "C" fn(Connection, *const c_char, usize, *const c_char, usize) -> InsertStream;
type StreamAppendFn = unsafe extern "C" fn(InsertStream, *const c_void, usize) -> c_int;
type StreamDoneFn = unsafe extern "C" fn(InsertStream) -> ResultHandle;
type StreamErrorFn = unsafe extern "C" fn(InsertStream) -> *const c_char;
type DestroyStreamFn = unsafe extern "C" fn(InsertStream);
type ResultBufferFn = unsafe extern "C" fn(ResultHandle) -> *mut c_char;
type ResultLengthFn = unsafe extern "C" fn(ResultHandle) -> usize;
type ResultErrorFn = unsafe extern "C" fn(ResultHandle) -> *const c_char;
type ResultRowsFn = unsafe extern "C" fn(ResultHandle) -> u64;
type DestroyResultFn = unsafe extern "C" fn(ResultHandle);
type SetSignalHandlersFn = unsafe extern "C" fn(c_int);
type VersionFn = unsafe extern "C" fn() -> *const c_char;

/// Resolved entry points. The `Library` is kept alive for the life of the process.
pub struct Api {
    _lib: Library,
    pub connect: ConnectFn,
    pub close_conn: CloseFn,
    pub query_with_params_n: QueryWithParamsFn,
    pub stream_insert_n: StreamInsertFn,
    pub stream_append: StreamAppendFn,
    pub stream_done: StreamDoneFn,
    pub stream_insert_error: StreamErrorFn,
    pub destroy_insert_stream: DestroyStreamFn,
    pub result_buffer: ResultBufferFn,
    pub result_length: ResultLengthFn,
    pub result_error: ResultErrorFn,
    pub result_rows_written: ResultRowsFn,
    pub destroy_query_result: DestroyResultFn,
    pub version: VersionFn,
}

// SAFETY: the function pointers are plain C entry points that chdb documents as thread-safe
// per connection; the Library handle itself is immutable once loaded.
unsafe impl Send for Api {}
unsafe impl Sync for Api {}

static API: OnceLock<Result<Api, String>> = OnceLock::new();

/// Where libchdb is looked for, in order: `$SIGHTLINE_LIBCHDB` (a file), the install
/// script's directory (`$SIGHTLINE_LIB_DIR` or /usr/local/lib/sightline), then the
/// dynamic loader's own search path.
pub fn candidate_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Ok(p) = std::env::var("SIGHTLINE_LIBCHDB") {
        paths.push(PathBuf::from(p));
    }
    let dir = std::env::var("SIGHTLINE_LIB_DIR").unwrap_or_else(|_| "/usr/local/lib/sightline".into());
    paths.push(Path::new(&dir).join("libchdb.so"));
    paths.push(PathBuf::from("libchdb.so"));
    paths
}

/// Loads libchdb once per process and returns its entry points.
pub fn api() -> Result<&'static Api, String> {
    API.get_or_init(load).as_ref().map_err(Clone::clone)
}

fn load() -> Result<Api, String> {
    let mut tried = Vec::new();
    for path in candidate_paths() {
        // SAFETY: loading a shared library runs its initialisers; libchdb's are the
        // ClickHouse engine's static constructors, which is what we want.
        match unsafe { Library::new(&path) } {
            Ok(lib) => return resolve(lib).map_err(|e| format!("{}: {e}", path.display())),
            Err(e) => tried.push(format!("{}: {e}", path.display())),
        }
    }
    Err(format!(
        "libchdb not found (run scripts/install-deps.sh or set SIGHTLINE_LIBCHDB); tried {}",
        tried.join("; ")
    ))
}

fn resolve(lib: Library) -> Result<Api, libloading::Error> {
    // SAFETY: each symbol is declared above with the signature chdb.h gives it.
    unsafe {
        let set_signals: SetSignalHandlersFn = *lib.get(b"chdb_set_signal_handlers_enabled\0")?;
        // The engine must not take over SIGTERM/SIGINT: tokio handles shutdown.
        set_signals(0);
        Ok(Api {
            connect: *lib.get(b"chdb_connect\0")?,
            close_conn: *lib.get(b"chdb_close_conn\0")?,
            query_with_params_n: *lib.get(b"chdb_query_with_params_n\0")?,
            stream_insert_n: *lib.get(b"chdb_stream_insert_n\0")?,
            stream_append: *lib.get(b"chdb_stream_append\0")?,
            stream_done: *lib.get(b"chdb_stream_done\0")?,
            stream_insert_error: *lib.get(b"chdb_stream_insert_error\0")?,
            destroy_insert_stream: *lib.get(b"chdb_destroy_insert_stream\0")?,
            result_buffer: *lib.get(b"chdb_result_buffer\0")?,
            result_length: *lib.get(b"chdb_result_length\0")?,
            result_error: *lib.get(b"chdb_result_error\0")?,
            result_rows_written: *lib.get(b"chdb_result_rows_written\0")?,
            destroy_query_result: *lib.get(b"chdb_destroy_query_result\0")?,
            version: *lib.get(b"chdb_version\0")?,
            _lib: lib,
        })
    }
}

/// Copies a C string owned by chdb into Rust; `None` for a null pointer.
///
/// # Safety
/// `ptr` must be null or point to a NUL-terminated string that lives for this call.
pub unsafe fn owned_string(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        None
    } else {
        Some(CStr::from_ptr(ptr).to_string_lossy().into_owned())
    }
}
