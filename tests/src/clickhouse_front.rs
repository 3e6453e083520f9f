//! A small HTTP front over libchdb that speaks ClickHouse's HTTP interface, so the HTTP
//! warehouse backend (crate `clickhouse`) is tested against the real engine without a
//! ClickHouse server. Test support only: the product talks to real servers.
//!
//! What it speaks: `POST /` and `GET /?query=`; the query in the URL, the body, or a
//! `multipart/form-data` body (`query` and `param_<name>` fields, which is how the crate
//! sends parameters); `param_<name>` in the URL; `database`; `default_format`; every other
//! URL parameter as a setting; `decompress=1` request bodies in ClickHouse's native
//! compressed framing (LZ4, CityHash128 checksums); `compress=1` and `Accept-Encoding: lz4`
//! responses; `X-ClickHouse-User`/`X-ClickHouse-Key` (or `user`/`password`) credentials;
//! errors as ClickHouse sends them (status, `X-ClickHouse-Exception-Code`, `Code: N. ...`).
//! `INSERT ... FORMAT X` with a body goes through the engine's stream insert.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sightline_core::warehouse::embedded::Conn;

/// URL parameters that shape the HTTP exchange rather than name engine settings.
const HTTP_ONLY: &[&str] = &[
    "query",
    "database",
    "default_format",
    "decompress",
    "compress",
    "user",
    "password",
    "query_id",
    "session_id",
    "session_timeout",
    "session_check",
    "buffer_size",
    "wait_end_of_query",
    "role",
];

pub struct ClickHouseFront {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Requests served, for tests that check traffic went through the front.
    pub requests: Arc<std::sync::atomic::AtomicU64>,
    down: Arc<std::sync::atomic::AtomicBool>,
}

struct Front {
    conns: Vec<Mutex<Conn>>,
    next: std::sync::atomic::AtomicUsize,
    credentials: Option<(String, String)>,
    requests: Arc<std::sync::atomic::AtomicU64>,
    down: Arc<std::sync::atomic::AtomicBool>,
}

/// A failed request, answered the way ClickHouse answers.
struct Failure {
    code: u32,
    message: String,
}

impl Failure {
    fn new(code: u32, name: &str, message: impl std::fmt::Display) -> Self {
        Self {
            code,
            message: format!("Code: {code}. DB::Exception: {message}. ({name})"),
        }
    }

    /// The engine's own error text already reads `Code: N. DB::Exception: ...`.
    fn from_engine(message: String) -> Self {
        let code = message
            .split_once("Code: ")
            .and_then(|(_, rest)| rest.split('.').next())
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(1000);
        Self { code, message }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        // ClickHouse's mapping of the common codes to HTTP statuses.
        let status = match self.code {
            62 | 27 | 26 | 36 | 6 | 53 | 38 | 41 => StatusCode::BAD_REQUEST,
            60 | 81 => StatusCode::NOT_FOUND,
            192 | 193 | 194 | 516 => StatusCode::UNAUTHORIZED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut response = (status, format!("{}\n", self.message)).into_response();
        if let Ok(v) = HeaderValue::from_str(&self.code.to_string()) {
            response.headers_mut().insert("X-ClickHouse-Exception-Code", v);
        }
        response
    }
}

impl ClickHouseFront {
    /// Opens the engine at `engine_path` (in this process) and serves it on a free loopback
    /// port. With `credentials`, requests must carry that user and password.
    pub async fn start(engine_path: &Path, credentials: Option<(&str, &str)>) -> ClickHouseFront {
        std::fs::create_dir_all(engine_path).expect("engine dir");
        let conns = (0..4)
            .map(|_| Conn::open(engine_path).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()
            .expect("open libchdb");
        let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let front = Arc::new(Front {
            conns,
            next: Default::default(),
            credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
            requests: requests.clone(),
            down: down.clone(),
        });
        let app = Router::new()
            .route("/", get(handle).post(handle))
            .route("/ping", get(|| async { "Ok.\n" }))
            // ClickHouse takes bodies of any size (inserts); so does this front.
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(front);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        ClickHouseFront {
            addr,
            stop: Some(stop),
            requests,
            down,
        }
    }

    /// An outage: while down, every request fails as a server whose tables went read-only
    /// would answer (the engine and its data stay as they are).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for ClickHouseFront {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn handle(
    State(front): State<Arc<Front>>,
    Query(url): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    request: Request,
) -> Response {
    front.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if front.down.load(std::sync::atomic::Ordering::SeqCst) {
        return Failure::new(242, "TABLE_IS_READ_ONLY", "the server is down (test outage)").into_response();
    }
    match serve(front, url, headers, request).await {
        Ok(r) => r,
        Err(f) => f.into_response(),
    }
}

async fn serve(
    front: Arc<Front>,
    url: Vec<(String, String)>,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, Failure> {
    let get = |name: &str| url.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    authenticate(&front, &headers, &get("user"), &get("password"))?;

    // Query text, parameters and the body, from wherever the client put them.
    let mut params: Vec<(String, String)> = url
        .iter()
        .filter_map(|(k, v)| k.strip_prefix("param_").map(|n| (n.to_string(), v.clone())))
        .collect();
    let mut query = get("query").unwrap_or_default();
    let is_multipart = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let mut body = Bytes::new();
    if is_multipart {
        let mut form = Multipart::from_request(request, &())
            .await
            .map_err(|e| Failure::new(27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED", e))?;
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| Failure::new(27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED", e))?
        {
            let name = field.name().unwrap_or_default().to_string();
            let value = field
                .text()
                .await
                .map_err(|e| Failure::new(27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED", e))?;
            match name.strip_prefix("param_") {
                Some(p) => params.push((p.to_string(), value)),
                None if name == "query" => query.push_str(&value),
                None => {}
            }
        }
    } else {
        body = axum::body::to_bytes(request.into_body(), usize::MAX)
            .await
            .map_err(|e| Failure::new(1000, "NETWORK_ERROR", e))?;
        if get("decompress").as_deref() == Some("1") {
            body = Bytes::from(decompress(&body)?);
        }
    }
    let insert = insert_with_data(&query);
    if insert.is_none() && !body.is_empty() {
        // Without a data-taking INSERT in the URL, the body continues the query text.
        if !query.is_empty() {
            query.push(' ');
        }
        query.push_str(&String::from_utf8_lossy(&body));
    }
    if query.trim().is_empty() {
        return Err(Failure::new(62, "SYNTAX_ERROR", "Empty query"));
    }
    let settings: Vec<(String, String)> = url
        .iter()
        .filter(|(k, _)| !k.starts_with("param_") && !HTTP_ONLY.contains(&k.as_str()))
        .cloned()
        .collect();
    let database = get("database");
    let format = get("default_format").unwrap_or_else(|| "TabSeparated".into());

    let output = tokio::task::spawn_blocking(move || {
        let i = front.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % front.conns.len();
        let mut conn = front.conns[i].lock().unwrap_or_else(|p| p.into_inner());
        run(&mut conn, database.as_deref(), &settings, |conn| match insert {
            Some((statement, data_format)) => conn.insert(&statement, &data_format, &body).map(|_| Vec::new()),
            None => conn.query(&query, &format, &params),
        })
    })
    .await
    .map_err(|e| Failure::new(1000, "LOGICAL_ERROR", e))??;

    let mut response_headers = HeaderMap::new();
    let accepts_lz4 = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|e| e.trim() == "lz4"));
    let body = if get("compress").as_deref() == Some("1") {
        compress_native(&output)
    } else if accepts_lz4 {
        response_headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("lz4"));
        lz4_frame(&output)?
    } else {
        output
    };
    Ok((StatusCode::OK, response_headers, body).into_response())
}

/// Runs `work` on `conn` with the request's database and settings, then puts the
/// connection back as it was (a connection keeps session state between requests).
fn run(
    conn: &mut Conn,
    database: Option<&str>,
    settings: &[(String, String)],
    work: impl FnOnce(&mut Conn) -> Result<Vec<u8>, sightline_core::Error>,
) -> Result<Vec<u8>, Failure> {
    let engine = |e: sightline_core::Error| match e {
        sightline_core::Error::Query { message, .. } => Failure::from_engine(message),
        other => Failure::from_engine(other.to_string()),
    };
    for (name, value) in settings {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Failure::new(
                115,
                "UNKNOWN_SETTING",
                format!("Unknown setting '{name}'"),
            ));
        }
        let value = value.replace('\\', "\\\\").replace('\'', "\\'");
        conn.query(&format!("SET {name} = '{value}'"), "TabSeparated", &[])
            .map_err(engine)?;
    }
    if let Some(db) = database {
        conn.query(&format!("USE `{}`", db.replace('`', "")), "TabSeparated", &[])
            .map_err(engine)?;
    }
    let outcome = work(conn).map_err(engine);
    for (name, _) in settings {
        let _ = conn.query(&format!("SET {name} = DEFAULT"), "TabSeparated", &[]);
    }
    if database.is_some() {
        let _ = conn.query("USE default", "TabSeparated", &[]);
    }
    outcome
}

fn authenticate(
    front: &Front,
    headers: &HeaderMap,
    url_user: &Option<String>,
    url_password: &Option<String>,
) -> Result<(), Failure> {
    let Some((user, password)) = &front.credentials else {
        return Ok(());
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let given_user = header("X-ClickHouse-User")
        .or_else(|| url_user.clone())
        .unwrap_or_else(|| "default".into());
    let given_password = header("X-ClickHouse-Key")
        .or_else(|| url_password.clone())
        .unwrap_or_default();
    if &given_user == user && &given_password == password {
        Ok(())
    } else {
        Err(Failure::new(
            516,
            "AUTHENTICATION_FAILED",
            format!("{given_user}: Authentication failed: password is incorrect, or there is no user with such name"),
        ))
    }
}

/// `INSERT INTO t (cols) FORMAT X` (data in the body): the statement without its FORMAT
/// clause, and the format.
fn insert_with_data(query: &str) -> Option<(String, String)> {
    let trimmed = query.trim();
    if !trimmed.get(..6)?.eq_ignore_ascii_case("insert") {
        return None;
    }
    let upper = trimmed.to_ascii_uppercase();
    let at = upper.rfind(" FORMAT ")?;
    let format = trimmed[at + 8..].trim();
    if format.is_empty() || !format.chars().all(|c| c.is_ascii_alphanumeric()) {
        return None;
    }
    Some((trimmed[..at].to_string(), format.to_string()))
}

const CHECKSUM: usize = 16;
const HEADER: usize = 9;
const LZ4_METHOD: u8 = 0x82;

/// ClickHouse's checksum of a compressed block: CityHash128 v1.0.2 of header and data.
fn checksum(block: &[u8]) -> u128 {
    cityhash_rs::cityhash_102_128(block).rotate_right(64)
}

/// Decodes ClickHouse's native compressed framing: per block a 16-byte checksum, the
/// method byte, compressed size (with the 9-byte header) and decompressed size.
fn decompress(mut input: &[u8]) -> Result<Vec<u8>, Failure> {
    let corrupt = |what: &str| Failure::new(271, "CANNOT_DECOMPRESS", format!("Cannot decompress: {what}"));
    let mut out = Vec::new();
    while !input.is_empty() {
        if input.len() < CHECKSUM + HEADER {
            return Err(corrupt("truncated block header"));
        }
        let expected = u128::from_le_bytes(input[..CHECKSUM].try_into().map_err(|_| corrupt("checksum"))?);
        let method = input[CHECKSUM];
        let compressed = u32::from_le_bytes(
            input[CHECKSUM + 1..CHECKSUM + 5]
                .try_into()
                .map_err(|_| corrupt("size"))?,
        ) as usize;
        let size = u32::from_le_bytes(
            input[CHECKSUM + 5..CHECKSUM + 9]
                .try_into()
                .map_err(|_| corrupt("size"))?,
        ) as usize;
        if compressed < HEADER || input.len() < CHECKSUM + compressed {
            return Err(corrupt("truncated block"));
        }
        let block = &input[CHECKSUM..CHECKSUM + compressed];
        if checksum(block) != expected {
            return Err(Failure::new(
                40,
                "CHECKSUM_DOESNT_MATCH",
                "Checksum doesn't match: corrupted data",
            ));
        }
        match method {
            LZ4_METHOD => {
                let data = lz4_flex::block::decompress(&block[HEADER..], size).map_err(|e| corrupt(&e.to_string()))?;
                out.extend_from_slice(&data);
            }
            0x02 => out.extend_from_slice(&block[HEADER..]),
            other => return Err(corrupt(&format!("unknown compression method {other:#x}"))),
        }
        input = &input[CHECKSUM + compressed..];
    }
    Ok(out)
}

/// The same framing in the other direction (`compress=1`), one LZ4 block per MiB.
fn compress_native(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2 + 64);
    for chunk in data.chunks(1 << 20) {
        let packed = lz4_flex::block::compress(chunk);
        let mut block = Vec::with_capacity(HEADER + packed.len());
        block.push(LZ4_METHOD);
        block.extend_from_slice(&((HEADER + packed.len()) as u32).to_le_bytes());
        block.extend_from_slice(&(chunk.len() as u32).to_le_bytes());
        block.extend_from_slice(&packed);
        out.extend_from_slice(&checksum(&block).to_le_bytes());
        out.extend_from_slice(&block);
    }
    out
}

/// `Content-Encoding: lz4`: the LZ4 frame format.
fn lz4_frame(data: &[u8]) -> Result<Vec<u8>, Failure> {
    use std::io::Write;
    let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
    encoder
        .write_all(data)
        .map_err(|e| Failure::new(1000, "CANNOT_COMPRESS", e))?;
    encoder.finish().map_err(|e| Failure::new(1000, "CANNOT_COMPRESS", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_framing_round_trips_and_checks_its_checksum() {
        let data: Vec<u8> = (0..3_000_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let framed = compress_native(&data);
        assert_eq!(decompress(&framed).ok(), Some(data));
        let mut corrupted = framed.clone();
        corrupted[CHECKSUM + HEADER + 3] ^= 0xff;
        assert_eq!(decompress(&corrupted).err().map(|f| f.code), Some(40));
    }

    #[test]
    fn inserts_with_data_are_split_from_their_format() {
        assert_eq!(
            insert_with_data("INSERT INTO db.t (a, b) FORMAT RowBinary"),
            Some(("INSERT INTO db.t (a, b)".into(), "RowBinary".into()))
        );
        assert_eq!(insert_with_data("SELECT 1 FORMAT JSON"), None);
        assert_eq!(insert_with_data("INSERT INTO t VALUES (1)"), None);
    }
}
