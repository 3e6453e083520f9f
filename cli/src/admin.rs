//! The standalone server's admin endpoint (the embedded engine belongs to one process, so
//! replays of a running server's data go through it):
//!
//! `POST /v1/admin/reprocess` with `Authorization: Bearer <admin token>` (scope `admin`, for
//! the tenant the spec names) and `{"spec": ReprocessSpec, "resume": Checkpoint | null}`.
//! Refusals answer `{"error": {"code", "message", "field"}}`. A replay that starts answers
//! 200 with one JSON object per line (`Line`): progress, a checkpoint after each finished
//! day, then the report, or the error with the report of the days done. A client that hangs
//! up cancels the run between days.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sightline_core::processor::Current;
use sightline_core::registry::Registry;
use sightline_core::reprocess::ReprocessSpec;
use sightline_core::token::{Scope, TokenError};
use sightline_core::warehouse::replay::{
    self, CancellationToken, Checkpoint, DayReport, Progress, ReplayHooks, ReplayReport,
};
use sightline_core::warehouse::Warehouse;
use tokio::sync::mpsc;

pub const REPROCESS_PATH: &str = "/v1/admin/reprocess";

/// The request body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReprocessCall {
    pub spec: ReprocessSpec,
    #[serde(default)]
    pub resume: Option<Checkpoint>,
}

/// One line of a running replay's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Line {
    Progress(Progress),
    Checkpoint(Checkpoint),
    Report(ReplayReport),
    Failed {
        error: ErrorBody,
        /// The days done before the error (none when it came before the first day).
        report: Option<ReplayReport>,
    },
}

/// `{"code", "message", "field"}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    pub field: Option<String>,
}

/// The admin endpoint's refusals (the `sightline` crate's one error type).
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Unauthorized(#[from] TokenError),
    #[error("the body is not a reprocess call: {0}")]
    BadBody(String),
    #[error("the token is for tenant {token}, the spec names {spec}")]
    OtherTenant { token: String, spec: String },
    #[error("{0}")]
    Replay(#[from] sightline_core::Error),
}

impl AdminError {
    pub fn body(&self) -> (StatusCode, ErrorBody) {
        use sightline_core::Error as E;
        let (status, code, field) = match self {
            AdminError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized", Some("token")),
            AdminError::BadBody(_) => (StatusCode::BAD_REQUEST, "bad_request", Some("body")),
            AdminError::OtherTenant { .. } => (StatusCode::FORBIDDEN, "forbidden", Some("tenantRef")),
            AdminError::Replay(e) => match e {
                E::InvalidReplay(_) => (StatusCode::BAD_REQUEST, "invalid_replay", Some("spec")),
                E::UnknownTenant(_) => (StatusCode::NOT_FOUND, "unknown_tenant", Some("tenantRef")),
                E::DayNotSealed { .. } => (StatusCode::CONFLICT, "not_sealed", Some("force")),
                E::DayLeased { .. } => (StatusCode::CONFLICT, "leased", None),
                E::Cancelled => (StatusCode::CONFLICT, "cancelled", None),
                E::ReplayStopped { cause, .. } => {
                    return AdminError::Replay(clone_error(cause)).body();
                }
                _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
            },
        };
        (
            status,
            ErrorBody {
                code: code.into(),
                message: self.to_string(),
                field: field.map(str::to_string),
            },
        )
    }
}

/// The parts of an error its JSON needs (core's errors are not `Clone`).
fn clone_error(e: &sightline_core::Error) -> sightline_core::Error {
    use sightline_core::Error as E;
    match e {
        E::InvalidReplay(m) => E::InvalidReplay(m.clone()),
        E::UnknownTenant(t) => E::UnknownTenant(t.clone()),
        E::DayNotSealed { day, sealed_through } => E::DayNotSealed {
            day: *day,
            sealed_through: *sealed_through,
        },
        E::DayLeased { day, holder, purpose } => E::DayLeased {
            day: *day,
            holder: holder.clone(),
            purpose: purpose.clone(),
        },
        E::Cancelled => E::Cancelled,
        other => E::Engine(other.to_string()),
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, body) = self.body();
        (status, Json(json!({ "error": body }))).into_response()
    }
}

#[derive(Clone)]
pub struct AdminState {
    pub registry: Arc<Registry>,
    pub warehouse: Arc<dyn Warehouse>,
}

pub fn router(state: AdminState) -> Router {
    Router::new().route(REPROCESS_PATH, post(reprocess)).with_state(state)
}

struct StreamHooks {
    lines: mpsc::UnboundedSender<Line>,
    cancel: CancellationToken,
}

impl StreamHooks {
    fn send(&self, line: Line) {
        if self.lines.send(line).is_err() {
            // The client hung up: stop between days.
            self.cancel.cancel();
        }
    }
}

#[async_trait::async_trait]
impl ReplayHooks for StreamHooks {
    fn progress(&self, progress: &Progress) {
        self.send(Line::Progress(*progress));
    }
    async fn day_done(&self, _day: &DayReport, checkpoint: &Checkpoint) -> sightline_core::Result<()> {
        self.send(Line::Checkpoint(checkpoint.clone()));
        Ok(())
    }
}

/// The body, held strictly: a field the call does not have is refused by name (a typo such
/// as `dryrun` must not run a real replay).
fn parse_call(body: &[u8]) -> Result<ReprocessCall, AdminError> {
    let bad = |e: serde_json::Error| AdminError::BadBody(e.to_string());
    let value: serde_json::Value = serde_json::from_slice(body).map_err(bad)?;
    let (call, unknown): (ReprocessCall, _) = sightline_core::reprocess::unknown_fields(value, "").map_err(bad)?;
    if !unknown.is_empty() {
        return Err(AdminError::BadBody(format!("unknown field(s) {}", unknown.join(", "))));
    }
    Ok(call)
}

#[tracing::instrument(skip_all, name = "admin_reprocess")]
async fn reprocess(State(state): State<AdminState>, headers: HeaderMap, body: Bytes) -> Result<Response, AdminError> {
    let token = sightline_core::token::from_authorization(
        headers
            .get(header::AUTHORIZATION)
            .ok_or(TokenError::Missing)?
            .as_bytes(),
    )?;
    let (entry, claims) = state.registry.verify(token, Scope::Admin, Utc::now().timestamp())?;
    let call = parse_call(&body)?;
    if claims.tenant != call.spec.tenant_ref {
        return Err(AdminError::OtherTenant {
            token: claims.tenant,
            spec: call.spec.tenant_ref,
        });
    }
    let request = call.spec.request(&entry.tenant, Arc::new(Current))?;
    // Refusals before anything runs are plain errors, not a stream.
    replay::prepare(&request)?;
    tracing::info!(tenant = %entry.tenant.name, from = %call.spec.from, to = %call.spec.to, dry_run = request.dry_run, "reprocess requested");

    let (lines, receiver) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let warehouse = state.warehouse.clone();
    tokio::spawn(async move {
        let hooks = StreamHooks {
            lines: lines.clone(),
            cancel: cancel.clone(),
        };
        let last = match replay::run(warehouse.as_ref(), request, call.resume, &hooks, &cancel).await {
            Ok(report) => Line::Report(report),
            Err(e) => {
                let report = match &e {
                    sightline_core::Error::ReplayStopped { report, .. } => Some((**report).clone()),
                    _ => None,
                };
                Line::Failed {
                    error: AdminError::Replay(e).body().1,
                    report,
                }
            }
        };
        let _ = lines.send(last);
    });
    let body = Body::from_stream(futures_util::stream::unfold(receiver, |mut receiver| async move {
        let line = receiver.recv().await?;
        let mut text = serde_json::to_vec(&line).unwrap_or_default();
        text.push(b'\n');
        Some((Ok::<_, std::io::Error>(Bytes::from(text)), receiver))
    }));
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response())
}
