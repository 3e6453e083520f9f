//! The collector's HTTP API: `POST /v1/collect` (one event or `{"events": [...]}`),
//! `POST /v1/collect/debug` (same verdicts, nothing stored) and `GET /v1/collect` (one event
//! from query parameters, answered with a 1x1 GIF for clients without JavaScript).

mod admit;
pub mod client;
pub mod ga4;

pub mod tracker;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, request::Parts, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use serde::Serialize;
use serde_json::Value;
use sightline_core::event::{Event, RawEvent};
use sightline_core::geo::Geo;
use sightline_core::intake::{Adjustment, Rejection, RequestContext};
use sightline_core::processor::session::SessionState;
use sightline_core::processor::{process, ProcessorConfig};
use sightline_core::registry::{Registry, TenantEntry};
use sightline_core::token::{Claims, Scope, TokenError};
use tower_http::cors::{Any, CorsLayer};

use crate::error::Error;
use crate::metrics::{CollectorMetrics, TenantLabels};
use crate::sink::EventSink;
use admit::{Admitted, Submission};
use client::ClientConfig;
use sightline_core::rate::RateLimiter;

pub struct CollectorState {
    pub registry: Arc<Registry>,
    pub sink: Arc<dyn EventSink>,
    pub client: ClientConfig,
    pub geo: Arc<Geo>,
    /// Events per second per site.
    pub rate: RateLimiter,
    /// Stored bytes per second per site.
    pub stored_bytes: RateLimiter,
    pub metrics: CollectorMetrics,
}

impl CollectorState {
    pub fn new(registry: Arc<Registry>, sink: Arc<dyn EventSink>, client: ClientConfig, geo: Arc<Geo>) -> Self {
        Self {
            registry,
            sink,
            client,
            geo,
            rate: RateLimiter::default(),
            stored_bytes: RateLimiter::default(),
            metrics: CollectorMetrics::default(),
        }
    }

    /// Hands a request's accepted events to the sink (returning once they are durable) and
    /// counts every event of the request by outcome.
    pub(crate) async fn store(
        &self,
        tenant: &str,
        accepted: Vec<RawEvent>,
        client_ids: Vec<uuid::Uuid>,
        rejected: &[Rejection],
    ) -> Result<(), Error> {
        for r in rejected {
            self.metrics.rejected(tenant, &r.field);
        }
        if accepted.is_empty() {
            return Ok(());
        }
        let n = accepted.len() as u64;
        let started = Instant::now();
        let outcome = self.sink.append(tenant, accepted, client_ids).await;
        self.metrics
            .store_seconds
            .get_or_create(&TenantLabels {
                tenant: tenant.to_string(),
            })
            .observe(started.elapsed().as_secs_f64());
        match &outcome {
            Ok(()) => self.metrics.event(tenant, "accepted", "", n),
            Err(Error::Busy) => self.metrics.event(tenant, "failed", "busy", n),
            Err(_) => self.metrics.event(tenant, "failed", "unavailable", n),
        }
        outcome
    }
}

pub fn router(state: Arc<CollectorState>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::CONTENT_TYPE, header::AUTHORIZATION])
        .max_age(std::time::Duration::from_secs(86_400));
    Router::new()
        .route("/v1/collect", post(collect).get(pixel))
        .route("/v1/collect/debug", post(collect_debug))
        .route("/js/sightline.js", axum::routing::get(tracker::script))
        .route("/mp/collect", post(ga4::collect))
        .route("/debug/mp/collect", post(ga4::debug))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            crate::metrics::count_requests,
        ))
        .layer(cors)
        .with_state(state)
}

/// The answer to a request that was taken: how many events are stored, which were refused
/// and why, and what was cut or dropped from the stored ones.
#[derive(Debug, Serialize)]
pub struct Verdict {
    pub accepted: usize,
    pub rejected: Vec<Rejection>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub adjusted: Vec<Adjustment>,
}

#[derive(Debug, Serialize)]
struct DebugVerdict {
    accepted: usize,
    rejected: Vec<Rejection>,
    adjusted: Vec<Adjustment>,
    /// What the processor makes of each accepted event (with a fresh session).
    processed: Vec<Event>,
}

/// The token from `Authorization: Bearer` or, for beacons and pixels that cannot set
/// headers, the `token` query parameter.
fn bearer_token(parts: &Parts) -> Result<String, TokenError> {
    if let Some(value) = parts.headers.get(header::AUTHORIZATION) {
        return sightline_core::token::from_authorization(value.as_bytes()).map(str::to_string);
    }
    parts
        .uri
        .query()
        .and_then(|q| serde_urlencoded::from_str::<Vec<(String, String)>>(q).ok())
        .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == "token").map(|(_, v)| v))
        .ok_or(TokenError::Missing)
}

fn authorize(state: &CollectorState, parts: &Parts) -> Result<(Arc<TenantEntry>, Claims), Error> {
    let token = bearer_token(parts)?;
    Ok(state.registry.verify(&token, Scope::Write, Utc::now().timestamp())?)
}

fn check_content_type(headers: &HeaderMap) -> Result<(), Error> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    content_type_allowed(ct)
}

/// `application/json`, or `text/plain` (what sendBeacon sends), parameters ignored.
fn content_type_allowed(ct: &str) -> Result<(), Error> {
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    // text/plain: navigator.sendBeacon sends strings with it, and it avoids a CORS preflight.
    if essence == "application/json" || essence == "text/plain" {
        Ok(())
    } else {
        Err(Error::UnsupportedMediaType(ct.to_string()))
    }
}

pub(crate) async fn read_body(headers: &HeaderMap, body: Body, limit: u32) -> Result<bytes::Bytes, Error> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > u64::from(limit)) {
        return Err(Error::BodyTooLarge { limit });
    }
    axum::body::to_bytes(body, limit as usize).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            Error::BodyTooLarge { limit }
        } else {
            Error::BadRequest {
                field: "body".into(),
                message: format!("could not read the body: {e}"),
            }
        }
    })
}

/// The events of a body: one event object, or `{"events": [...]}`.
fn events_of(body: &[u8]) -> Result<Vec<Value>, Error> {
    let value: Value = serde_json::from_slice(body).map_err(|e| Error::BadJson(e.to_string()))?;
    match value {
        Value::Object(mut obj) if obj.contains_key("events") => match obj.remove("events") {
            Some(Value::Array(events)) if obj.is_empty() => Ok(events),
            Some(Value::Array(_)) => Err(Error::BadRequest {
                field: "body".into(),
                message: "a batch holds only \"events\"; put other fields inside each event".into(),
            }),
            _ => Err(Error::BadRequest {
                field: "events".into(),
                message: "\"events\" must be an array of event objects".into(),
            }),
        },
        Value::Object(obj) => Ok(vec![Value::Object(obj)]),
        _ => Err(Error::BadRequest {
            field: "body".into(),
            message: "expected one event object or {\"events\": [...]}".into(),
        }),
    }
}

/// Who sent a request: the client IP (trusted proxies honoured), its country and UA.
pub(crate) struct Origin {
    pub ip: Option<std::net::IpAddr>,
    pub country: String,
}

pub(crate) fn origin(state: &CollectorState, parts: &Parts) -> Origin {
    let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let ip = state.client.client_ip(peer, &parts.headers);
    let country = state.geo.country(ip, state.client.country_header(peer, &parts.headers));
    Origin { ip, country }
}

/// Everything up to and including admission, shared by collect, debug and pixel: the token,
/// the body (or the pixel's query), then `admit::admit`.
async fn intake(state: &CollectorState, parts: &Parts, body: Option<Body>, stores: bool) -> Result<Admitted, Error> {
    let (entry, claims) = authorize(state, parts)?;
    let limits = &entry.tenant.spec.limits;
    let events = match body {
        Some(body) => {
            check_content_type(&parts.headers)?;
            let bytes = read_body(&parts.headers, body, limits.body_bytes).await?;
            events_of(&bytes)?
        }
        None => vec![pixel_event(parts.uri.query().unwrap_or(""))?],
    };
    let origin = origin(state, parts);
    let submission = Submission {
        entry: &entry,
        ctx: RequestContext {
            site_id: &claims.site,
            tenant_key: entry.key(),
            user_agent: &client::user_agent(&parts.headers),
            client_ip: origin.ip,
            country: &origin.country,
            received_at: Utc::now(),
            limits,
            visitor_key: None,
            ingest_source: sightline_core::event::SOURCE_WEB,
        },
        events: &events,
        stores,
    };
    admit::admit(state, submission)
}

#[tracing::instrument(skip_all, fields(tenant, accepted, rejected))]
async fn collect(State(state): State<Arc<CollectorState>>, request: Request) -> Result<Response, Error> {
    let (parts, body) = request.into_parts();
    let Admitted {
        tenant,
        events: accepted,
        client_ids,
        rejected,
        adjusted,
    } = intake(&state, &parts, Some(body), true).await?;
    let span = tracing::Span::current();
    span.record("tenant", tenant.as_str());
    span.record("accepted", accepted.len());
    span.record("rejected", rejected.len());
    let count = accepted.len();
    state.store(&tenant, accepted, client_ids, &rejected).await?;
    let verdict = Verdict {
        accepted: count,
        rejected,
        adjusted,
    };
    Ok((StatusCode::ACCEPTED, Json(verdict)).into_response())
}

#[tracing::instrument(skip_all)]
async fn collect_debug(State(state): State<Arc<CollectorState>>, request: Request) -> Result<Response, Error> {
    let (parts, body) = request.into_parts();
    let Admitted {
        tenant,
        events: accepted,
        rejected,
        adjusted,
        ..
    } = intake(&state, &parts, Some(body), false).await?;
    let bot_filtering = state.registry.get(&tenant).is_some_and(|e| e.tenant.spec.bot_filtering);
    let mut sessions = SessionState::default();
    let processed = accepted
        .iter()
        .map(|r| process(r, ProcessorConfig { bot_filtering }, &mut sessions))
        .collect();
    Ok((
        StatusCode::OK,
        Json(DebugVerdict {
            accepted: accepted.len(),
            rejected,
            adjusted,
            processed,
        }),
    )
        .into_response())
}

/// A transparent 1x1 GIF.
const PIXEL_GIF: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02,
    0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// One event from the query string: `url`, `referrer`, `name`, `ts`, `id`, and `props` as a
/// JSON object text.
fn pixel_event(query: &str) -> Result<Value, Error> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).map_err(|e| Error::BadRequest {
        field: "query".into(),
        message: format!("bad query string: {e}"),
    })?;
    let mut event = serde_json::Map::new();
    for (key, value) in pairs {
        let value = match key.as_str() {
            "token" => continue,
            "url" | "referrer" | "name" | "id" => Value::String(value),
            "ts" => value.parse::<i64>().map(Value::from).unwrap_or(Value::String(value)),
            "interactive" => value.parse::<bool>().map(Value::Bool).unwrap_or(Value::String(value)),
            "props" => serde_json::from_str(&value).map_err(|e| Error::BadRequest {
                field: "props".into(),
                message: format!("props must be a JSON object: {e}"),
            })?,
            _ => Value::String(value),
        };
        event.insert(key, value);
    }
    Ok(Value::Object(event))
}

/// The collector's body and query-string parsers without HTTP around them, for the fuzz
/// targets (`fuzz/`): what a request's bytes become before intake sees them.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// The events of a `POST /v1/collect` body sent with `content_type` (`application/json`,
    /// or `text/plain` from sendBeacon): one event object or `{"events": [...]}`; the
    /// collector's refusal (415, 400) otherwise.
    pub fn body_events(content_type: &str, body: &[u8]) -> Result<Vec<Value>, Error> {
        content_type_allowed(content_type)?;
        events_of(body)
    }

    /// The one event of a `GET /v1/collect?...` pixel request's query string (without `?`).
    pub fn pixel_query_event(query: &str) -> Result<Value, Error> {
        pixel_event(query)
    }

    /// The status a refusal is answered with.
    pub fn status(e: &Error) -> StatusCode {
        e.status_code_field().0
    }
}

#[tracing::instrument(skip_all)]
async fn pixel(State(state): State<Arc<CollectorState>>, request: Request) -> Result<Response, Error> {
    let (parts, _) = request.into_parts();
    let Admitted {
        tenant,
        events: accepted,
        client_ids,
        rejected,
        ..
    } = intake(&state, &parts, None, true).await?;
    if let Some(r) = rejected.first() {
        state.metrics.rejected(&tenant, &r.field);
        return Err(Error::BadRequest {
            field: r.field.clone(),
            message: r.reason.clone(),
        });
    }
    state.store(&tenant, accepted, client_ids, &[]).await?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-store, max-age=0"),
        ],
        PIXEL_GIF,
    )
        .into_response())
}
