//! How answers are written: JSON (the default) or CSV (`Accept: text/csv`), with the data
//! watermark in a header.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;
use sightline_core::watermark::Watermark;

pub const WATERMARK_HEADER: &str = "x-sightline-watermark";

pub fn wants_csv(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().starts_with("text/csv")))
}

pub fn watermark_text(w: &Watermark) -> Option<String> {
    w.newest.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

fn with_watermark(mut response: Response, w: &Watermark) -> Response {
    if let Some(text) = watermark_text(w) {
        if let Ok(v) = HeaderValue::from_str(&text) {
            response.headers_mut().insert(WATERMARK_HEADER, v);
        }
    }
    response
}

pub fn json(body: Value, w: &Watermark) -> Response {
    with_watermark(Json(body).into_response(), w)
}

/// A CSV table: a header row, then one row per result; objects (revenue) as JSON text.
pub fn csv(header_row: &[String], rows: &[Vec<Value>], w: &Watermark) -> Response {
    let mut out = csv::Writer::from_writer(Vec::new());
    let cell = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    // Writing to memory cannot fail; a failure would be a bug worth a 500, not a panic.
    let written = out
        .write_record(header_row)
        .and_then(|_| rows.iter().try_for_each(|r| out.write_record(r.iter().map(cell))))
        .map_err(|e| e.to_string())
        .and_then(|_| out.into_inner().map_err(|e| e.to_string()));
    let response = match written {
        Ok(bytes) => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    };
    with_watermark(response, w)
}
