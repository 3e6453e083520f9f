//! The collector's one error type: every refusal has the same JSON shape,
//! `{"error": {"code", "message", "field"}}`, and status mapping.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sightline_core::token::TokenError;

use crate::sink::SinkError;

#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("{0}")]
    Unauthorized(#[from] TokenError),
    #[error("site {0:?} is not allowed for this tenant")]
    SiteNotAllowed(String),
    #[error("Content-Type must be application/json or text/plain, got {0:?}")]
    UnsupportedMediaType(String),
    #[error("body is larger than {limit} bytes")]
    BodyTooLarge { limit: u32 },
    #[error("{count} events in one request; at most {limit} are allowed")]
    TooManyEvents { count: usize, limit: u32 },
    #[error("body is not valid JSON: {0}")]
    BadJson(String),
    #[error("{message}")]
    BadRequest { field: String, message: String },
    #[error("site {site:?} sends more than its limit of events per second")]
    RateLimited { site: String, retry_after: Duration },
    #[error("{0}")]
    Store(#[from] SinkError),
}

impl CollectError {
    fn status_code_field(&self) -> (StatusCode, &'static str, &str) {
        match self {
            CollectError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "token"),
            CollectError::SiteNotAllowed(_) => (StatusCode::FORBIDDEN, "site_not_allowed", "token"),
            CollectError::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "content-type",
            ),
            CollectError::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "body"),
            CollectError::TooManyEvents { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_events", "events"),
            CollectError::BadJson(_) => (StatusCode::BAD_REQUEST, "bad_json", "body"),
            CollectError::BadRequest { field, .. } => (StatusCode::BAD_REQUEST, "bad_request", field.as_str()),
            CollectError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", "site"),
            CollectError::Store(SinkError::Busy) => (StatusCode::SERVICE_UNAVAILABLE, "store_busy", "events"),
            CollectError::Store(SinkError::Unavailable(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "events")
            }
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            CollectError::RateLimited { retry_after, .. } => Some(*retry_after),
            CollectError::Store(_) => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

impl IntoResponse for CollectError {
    fn into_response(self) -> Response {
        let (status, code, field) = self.status_code_field();
        let field = field.to_string();
        if status.is_server_error() {
            tracing::warn!(error = %self, "collect refused");
        }
        let body = json!({"error": {"code": code, "message": self.to_string(), "field": field}});
        let mut response = (status, Json(body)).into_response();
        if let Some(after) = self.retry_after() {
            let secs = after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
