//! The process's logs: what a client sends can reach them (a measurement id, a site in a
//! path, a URI), so every field is cut to [`MAX_FIELD_CHARS`] and escaped; each log
//! statement at INFO or above writes at most [`BURST`] lines at once and [`PER_SECOND`] a
//! second after (the rest are counted, and the count is logged when the statement may write
//! again), so that a client repeating a request cannot flood them; and request URIs are
//! logged with their `token` and `api_secret` values redacted, at every level. DEBUG and
//! TRACE, which an operator turns on to see everything, are not rate-limited.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::Mutex;
use std::time::Instant;

use axum::http::{Request, Uri};
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{
    DefaultOnBodyChunk, DefaultOnEos, DefaultOnFailure, DefaultOnRequest, DefaultOnResponse, MakeSpan, TraceLayer,
};
use tracing::callsite::Identifier;
use tracing::Metadata;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::writer::{EitherWriter, MakeWriter};

/// The longest a logged field value may be, in characters.
pub const MAX_FIELD_CHARS: usize = 256;
/// Lines one log statement may write at once ...
pub const BURST: f64 = 20.0;
/// ... and per second after that.
pub const PER_SECOND: f64 = 5.0;

/// Query parameters whose values are credentials: never logged.
const SECRET_PARAMS: &[&str] = &["token", "api_secret"];

/// Sets up the process's logger (stderr, `RUST_LOG`, default `info`). Colours only for a
/// person at a terminal: never when stderr is a file or a pipe (collected logs), nor when
/// `NO_COLOR` is set (no-color.org).
pub fn init() {
    init_with("info");
}

/// [`init`] with `default_filter` (`EnvFilter` directives) where `RUST_LOG` is unset.
pub fn init_with(default_filter: &str) {
    let fields = tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        // Where a `log` record (a library logging through the `log` crate) came from in
        // the source: noise for the people reading the logs.
        if field.name().starts_with("log.") {
            return Ok(());
        }
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        let shown = cut(&text, MAX_FIELD_CHARS);
        if field.name() == "message" {
            write!(writer, "{shown}")
        } else {
            write!(writer, "{field}={shown}")
        }
    })
    .delimited(" ");
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()),
        )
        .with_ansi(colours())
        .fmt_fields(fields)
        .with_writer(RateLimitedStderr::default())
        .init();
}

/// Whether log lines are coloured: stderr is a terminal and `NO_COLOR` is unset or empty.
fn colours() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Sets up the operator's logger: JSON lines on stderr with the current span (a reconcile's
/// tenant and generation), rate-limited like [`init`]; its input comes from the API server.
pub fn init_json() {
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(RateLimitedStderr::default())
        .init();
}

/// `text` cut to `max` characters, saying how much was cut.
fn cut(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => std::borrow::Cow::Borrowed(text),
        Some((at, _)) => std::borrow::Cow::Owned(format!("{}…(+{} bytes)", &text[..at], text.len() - at)),
    }
}

/// A token bucket per log statement (its callsite).
struct Bucket {
    tokens: f64,
    updated: Instant,
    suppressed: u64,
}

/// Stderr, rate-limited per log statement.
#[derive(Default)]
pub struct RateLimitedStderr {
    buckets: Mutex<HashMap<Identifier, Bucket>>,
}

impl RateLimitedStderr {
    /// Whether a line of `meta` may be written now; when it may after some were dropped,
    /// says how many first.
    fn admit(&self, meta: &Metadata<'_>) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        // Callsites are the program's log statements: a fixed, small set.
        let bucket = buckets.entry(meta.callsite()).or_insert(Bucket {
            tokens: BURST,
            updated: now,
            suppressed: 0,
        });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.updated).as_secs_f64() * PER_SECOND).min(BURST);
        bucket.updated = now;
        if bucket.tokens < 1.0 {
            bucket.suppressed += 1;
            return false;
        }
        bucket.tokens -= 1.0;
        if bucket.suppressed > 0 {
            let _ = writeln!(
                std::io::stderr(),
                "{} lines of {} ({}:{}) were not logged: over {PER_SECOND} per second",
                bucket.suppressed,
                meta.target(),
                meta.file().unwrap_or("?"),
                meta.line().unwrap_or(0),
            );
            bucket.suppressed = 0;
        }
        true
    }
}

impl<'a> MakeWriter<'a> for RateLimitedStderr {
    type Writer = EitherWriter<std::io::Stderr, std::io::Sink>;

    fn make_writer(&'a self) -> Self::Writer {
        EitherWriter::A(std::io::stderr())
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        if *meta.level() > tracing::Level::INFO || self.admit(meta) {
            EitherWriter::A(std::io::stderr())
        } else {
            EitherWriter::B(std::io::sink())
        }
    }
}

/// How much of a URI is logged: less than a field may hold, so the field formatter leaves
/// the URI's own "how much was cut" note alone.
const MAX_URI_CHARS: usize = MAX_FIELD_CHARS - 40;

/// A URI for the logs: the values of credential parameters replaced by `REDACTED`, and the
/// whole cut to [`MAX_URI_CHARS`] (cutting here keeps a long URI from being copied whole).
pub fn redacted_uri(uri: &Uri) -> String {
    let Some(query) = uri.query() else {
        return cut(uri.path(), MAX_URI_CHARS).into_owned();
    };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| {
            let name = pair.split('=').next().unwrap_or_default();
            let decoded = percent_decoded_lowercase(name);
            if SECRET_PARAMS.contains(&decoded.as_str()) {
                format!("{name}=REDACTED")
            } else {
                pair.to_string()
            }
        })
        .collect();
    cut(&format!("{}?{}", uri.path(), pairs.join("&")), MAX_URI_CHARS).into_owned()
}

/// A query parameter name as a server decodes it (so `%74oken` is `token` too), lowercased.
fn percent_decoded_lowercase(name: &str) -> String {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).and_then(|b| hex(*b)),
            bytes.get(i + 2).and_then(|b| hex(*b)),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b'+', _, _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).to_lowercase()
}

/// Request spans (at DEBUG, like tower-http's default) with the method and the redacted URI.
#[derive(Clone, Copy, Debug, Default)]
pub struct RedactedSpan;

impl<B> MakeSpan<B> for RedactedSpan {
    fn make_span(&mut self, request: &Request<B>) -> tracing::Span {
        tracing::debug_span!("request", method = %request.method(), uri = %redacted_uri(request.uri()))
    }
}

/// The request tracing every role's router wears. A 5xx answer is logged at DEBUG here: the
/// handler that chose it logs why (a 503 of `/readyz` is an answer, not a failure, and at
/// ERROR a probe every few seconds would fill the logs while a role is not ready).
pub fn trace_layer() -> TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    RedactedSpan,
    DefaultOnRequest,
    DefaultOnResponse,
    DefaultOnBodyChunk,
    DefaultOnEos,
    DefaultOnFailure,
> {
    TraceLayer::new_for_http()
        .make_span_with(RedactedSpan)
        .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_the_logs() {
        let uri: Uri = "/mp/collect?measurement_id=G-1&api_secret=slt1.abc.def&x=1"
            .parse()
            .unwrap();
        assert_eq!(
            redacted_uri(&uri),
            "/mp/collect?measurement_id=G-1&api_secret=REDACTED&x=1"
        );
        let uri: Uri = "/v1/collect?url=https%3A%2F%2Fa.example%2F&TOKEN=slt1.a.b&%74oken=slt1.c.d"
            .parse()
            .unwrap();
        let shown = redacted_uri(&uri);
        assert!(!shown.contains("slt1"), "{shown}");
        assert_eq!(redacted_uri(&"/v1/query".parse().unwrap()), "/v1/query");
        let long: Uri = format!("/mp/collect?measurement_id={}", "G".repeat(60_000))
            .parse()
            .unwrap();
        let shown = redacted_uri(&long);
        assert!(
            shown.len() < MAX_FIELD_CHARS && shown.ends_with("…(+59811 bytes)"),
            "{shown}"
        );
    }

    #[test]
    fn long_values_are_cut_and_say_so() {
        assert_eq!(cut("short", 10), "short");
        let long = "é".repeat(1_000);
        let cut_text = cut(&long, 4);
        assert_eq!(cut_text, format!("éééé…(+{} bytes)", 2 * 996));
    }
}
