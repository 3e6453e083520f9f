//! How answers are written: JSON (the default) or CSV (`Accept: text/csv`), with the data
//! watermark in a header.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
#[cfg(test)]
use serde_json::json;
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

/// A text cell as a spreadsheet will read it safely: text that a spreadsheet would take for
/// a formula (`=`, `+`, `-`, `@`, or a tab or carriage return before one, as OWASP's CSV
/// injection guidance lists) gets a leading `'`, which spreadsheets show as text.
/// Visitor-supplied values (paths, referrers, props) reach CSV cells, so every text cell
/// goes through this; numbers are written as numbers and never need it.
pub fn neutralise_formula(text: &str) -> std::borrow::Cow<'_, str> {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        std::borrow::Cow::Owned(format!("'{text}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// A CSV table: a header row, then one row per result; objects (revenue) as JSON text.
pub fn csv(header_row: &[String], rows: &[Vec<Value>], w: &Watermark) -> Response {
    let mut out = csv::Writer::from_writer(Vec::new());
    let cell = |v: &Value| match v {
        Value::String(s) => neutralise_formula(s).into_owned(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    // Writing to memory cannot fail; a failure would be a bug worth a 500, not a panic.
    let written = out
        .write_record(header_row.iter().map(|h| neutralise_formula(h).into_owned()))
        .and_then(|_| rows.iter().try_for_each(|r| out.write_record(r.iter().map(cell))))
        .map_err(|e| e.to_string())
        .and_then(|_| out.into_inner().map_err(|e| e.to_string()));
    let response = match written {
        Ok(bytes) => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    };
    with_watermark(response, w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn formulas_come_back_as_text() {
        for (cell, safe) in [
            ("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"),
            ("+1+1", "'+1+1"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("/pricing", "/pricing"),
            ("", ""),
        ] {
            assert_eq!(neutralise_formula(cell), safe);
        }
        let rows = vec![vec![json!("=cmd|' /C calc'!A0"), json!(-3), json!({"EUR": "1.00"})]];
        let response = csv(
            &["page".into(), "change".into(), "revenue".into()],
            &rows,
            &Watermark::default(),
        );
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        // The text cell is neutralised; the negative number stays a number.
        assert_eq!(
            text,
            "page,change,revenue\n'=cmd|' /C calc'!A0,-3,\"{\"\"EUR\"\":\"\"1.00\"\"}\"\n"
        );
    }
}
