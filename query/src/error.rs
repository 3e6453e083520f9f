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
    #[error("this {} has {running} queries running and {waiting} waiting, the most it may; retry when one has finished", scope.name())]
    TooManyQueries {
        scope: crate::admission::Scope,
        running: usize,
        waiting: usize,
    },
    #[error("this {} has {limit} realtime streams open, the most it may; close one first", scope.name())]
    TooManyStreams {
        scope: crate::admission::Scope,
        limit: usize,
    },
    #[error("the query took longer than {0} s; narrow the date range or the filters")]
    Timeout(u64),
    #[error("the query would read more than {0} rows; narrow the date range or the filters")]
    TooManyRows(u64),
    #[error("query failed: {0}")]
    Warehouse(#[from] sightline_core::Error),
}

impl QueryError {
    /// A fixed name for the kind of refusal, for the `reason` label of
    /// `sightline_query_refusals_total` (never client text).
    pub fn reason(&self) -> &'static str {
        use crate::admission::Scope;
        match self {
            QueryError::Unauthorized(_) => "unauthorized",
            QueryError::Forbidden { .. } => "forbidden",
            QueryError::BadParameter { .. } => "bad_parameter",
            QueryError::RateLimited { .. } => "rate_limited",
            QueryError::TooManyQueries {
                scope: Scope::Token, ..
            } => "too_many_queries_token",
            QueryError::TooManyQueries {
                scope: Scope::Tenant, ..
            } => "too_many_queries_tenant",
            QueryError::TooManyStreams {
                scope: Scope::Token, ..
            } => "too_many_streams_token",
            QueryError::TooManyStreams {
                scope: Scope::Tenant, ..
            } => "too_many_streams_tenant",
            QueryError::Timeout(_) => "timeout",
            QueryError::TooManyRows(_) => "too_many_rows",
            QueryError::Warehouse(_) => "warehouse",
        }
    }

    pub fn bad(parameter: &'static str, message: impl Into<String>) -> Self {
        QueryError::BadParameter {
            parameter,
            message: message.into(),
        }
    }
}

/// The refusal a response carries (its [`QueryError::reason`]), for the middleware that
/// counts refusals on `/metrics`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Refusal(pub &'static str);

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let (status, code, parameter) = match &self {
            QueryError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", Some("token")),
            QueryError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden", Some("site")),
            QueryError::BadParameter { parameter, .. } => (StatusCode::BAD_REQUEST, "bad_parameter", Some(*parameter)),
            QueryError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limited", Some("token")),
            QueryError::TooManyQueries { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_queries", Some("token")),
            QueryError::TooManyStreams { .. } => (StatusCode::TOO_MANY_REQUESTS, "too_many_streams", Some("token")),
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
        response.extensions_mut().insert(Refusal(self.reason()));
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
        if matches!(
            self,
            QueryError::TooManyQueries { .. } | QueryError::TooManyStreams { .. }
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
