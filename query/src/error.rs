//! The query API's one error type: `{"error": {"code", "message", "parameter"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use sightline_core::token::TokenError;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Unauthorized(#[from] TokenError),
    #[error("this token is for site {token_site:?}, not {requested:?}")]
    Forbidden { token_site: String, requested: String },
    #[error("{parameter}: {message}")]
    BadParameter { parameter: &'static str, message: String },
    #[error("this token sent more than {per_second} queries per second; retry later")]
    RateLimited {
        per_second: u32,
        retry_after: std::time::Duration,
    },
    #[error("the query took longer than {0} s; narrow the date range or the filters")]
    Timeout(u64),
    #[error("the query would read more than {0} rows; narrow the date range or the filters")]
    TooManyRows(u64),
    #[error("query failed: {0}")]
    Warehouse(#[from] sightline_core::Error),
}

impl QueryError {
    pub fn bad(parameter: &'static str, message: impl Into<String>) -> Self {
        QueryError::BadParameter {
            parameter,
            message: message.into(),
        }
    }
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let (status, code, parameter) = match &self {
            QueryError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", Some("token")),
            QueryError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden", Some("site")),
            QueryError::BadParameter { parameter, .. } => (StatusCode::BAD_REQUEST, "bad_parameter", Some(*parameter)),
            QueryError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", Some("token")),
            QueryError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "query_timeout", None),
            QueryError::TooManyRows(_) => (StatusCode::UNPROCESSABLE_ENTITY, "too_many_rows", None),
            QueryError::Warehouse(_) => (StatusCode::SERVICE_UNAVAILABLE, "warehouse_unavailable", None),
        };
        let message = match &self {
            // Statement text stays in the logs, not in answers.
            QueryError::Warehouse(e) => {
                tracing::error!(error = ?e, "query failed in the warehouse");
                "the warehouse could not answer; retry later".to_string()
            }
            other => other.to_string(),
        };
        let mut response = (
            status,
            Json(json!({"error": {"code": code, "message": message, "parameter": parameter}})),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let QueryError::RateLimited { retry_after, .. } = &self {
            let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}
