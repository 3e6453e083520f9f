//! The crate's one error type. The collector's refusals all have the same JSON shape,
//! `{"error": {"code", "message", "field"}}`, and status mapping; the loader's and
//! provisioning's errors (Kafka, warehouse) never reach a client and answer 500 if they did.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use rdkafka::error::KafkaError;
use serde_json::json;
use sightline_core::token::TokenError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    #[error("site {site:?} sends more than its limit of {budget} per second")]
    RateLimited {
        site: String,
        /// `events` or `stored bytes`.
        budget: &'static str,
        retry_after: Duration,
    },
    /// Too much is waiting already: the client should retry later.
    #[error("the event store is backed up; retry later")]
    Busy,
    /// The store failed; nothing of the request is acknowledged.
    #[error("the event store is unavailable: {0}")]
    Unavailable(String),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    /// Creating, growing, configuring or deleting topics failed (its class says why).
    #[error("{0}")]
    Provision(#[from] crate::kafka::provision::ProvisionError),
    #[error("warehouse: {0}")]
    Warehouse(#[from] sightline_core::Error),
    #[error("the loader's reading thread: {0}")]
    Reader(String),
}

impl Error {
    pub(crate) fn status_code_field(&self) -> (StatusCode, &'static str, &str) {
        match self {
            Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", "token"),
            Error::SiteNotAllowed(_) => (StatusCode::FORBIDDEN, "site_not_allowed", "token"),
            Error::UnsupportedMediaType(_) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "content-type",
            ),
            Error::BodyTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "body"),
            Error::TooManyEvents { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_many_events", "events"),
            Error::BadJson(_) => (StatusCode::BAD_REQUEST, "bad_json", "body"),
            Error::BadRequest { field, .. } => (StatusCode::BAD_REQUEST, "bad_request", field.as_str()),
            Error::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", "site"),
            Error::Busy => (StatusCode::SERVICE_UNAVAILABLE, "store_busy", "events"),
            Error::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "events"),
            Error::Kafka(_) | Error::Provision(_) | Error::Warehouse(_) | Error::Reader(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal", "")
            }
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::RateLimited { retry_after, .. } => Some(*retry_after),
            Error::Busy | Error::Unavailable(_) => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

impl IntoResponse for Error {
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
