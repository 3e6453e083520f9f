//! The query API for merchants: parse -> plan -> parameterised SQL -> answer. One query
//! language (`POST /v1/query`); the GET endpoints are special cases of it.

pub mod buckets;
pub mod cache;
pub mod dashboard;
pub mod error;
pub mod execute;
pub mod freshness;
pub mod model;
pub mod openapi;
pub mod output;
pub mod plan;
pub mod realtime;
pub mod request;
pub mod storage;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query as QueryParams, State};
use axum::http::{header, HeaderMap, Method};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use futures_util::Stream;
use serde_json::{json, Map, Value};
use sightline_core::rate::RateLimiter;
use sightline_core::registry::{Registry, TenantEntry};
use sightline_core::token::{Claims, Scope, TokenError};
use sightline_core::warehouse::Warehouse;
use sightline_core::watermark::{Watermark, Watermarks};
use tower_http::cors::{Any, CorsLayer};

use cache::AnswerCache;
pub use error::QueryError;
use execute::Answer;
pub use execute::Limits;
use model::{Dimension, PathHint, Query, TierHint};
use request::{
    parse_dimension, parse_filters, parse_interval, parse_metrics, parse_pagination, parse_range, DateRange, RawParams,
};

#[derive(Clone, Debug)]
pub struct QueryConfig {
    /// Approximate bytes of answers the cache may hold.
    pub cache_bytes: u64,
    pub limits: Limits,
    /// Sustained queries per second per token, and the burst above it.
    pub queries_per_second_per_token: u32,
    pub burst_per_token: u32,
    /// How often the realtime stream sends an update.
    pub realtime_interval: Duration,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            cache_bytes: 64 * 1024 * 1024,
            limits: Limits::default(),
            queries_per_second_per_token: 20,
            burst_per_token: 100,
            realtime_interval: Duration::from_secs(5),
        }
    }
}

pub struct QueryState {
    pub registry: Arc<Registry>,
    pub warehouse: Arc<dyn Warehouse>,
    pub watermarks: Arc<Watermarks>,
    pub config: QueryConfig,
    cache: AnswerCache,
    storage: storage::StorageStates,
    rate: RateLimiter,
    metrics: prometheus_client::registry::Registry,
}

impl QueryState {
    pub fn new(
        registry: Arc<Registry>,
        warehouse: Arc<dyn Warehouse>,
        watermarks: Arc<Watermarks>,
        config: QueryConfig,
    ) -> Self {
        let cache = AnswerCache::new(config.cache_bytes);
        let mut metrics = prometheus_client::registry::Registry::default();
        metrics.register(
            "sightline_query_cache_hits",
            "Query answers served from the cache",
            cache.hits.clone(),
        );
        metrics.register(
            "sightline_query_cache_misses",
            "Query answers computed in the warehouse",
            cache.misses.clone(),
        );
        Self {
            registry,
            warehouse,
            watermarks,
            config,
            cache,
            storage: storage::StorageStates::default(),
            rate: RateLimiter::default(),
            metrics,
        }
    }
}

impl QueryState {
    /// The registry `/metrics` serves, for a process that serves more than queries (standalone
    /// registers its collector's metrics here) before the state is shared.
    pub fn metrics_registry(&mut self) -> &mut prometheus_client::registry::Registry {
        &mut self.metrics
    }
}

pub fn router(state: Arc<QueryState>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .expose_headers([header::HeaderName::from_static(output::WATERMARK_HEADER)]);
    Router::new()
        .route("/v1/query", post(query))
        .route("/v1/sites/{site}/aggregate", get(aggregate))
        .route("/v1/sites/{site}/timeseries", get(timeseries))
        .route("/v1/sites/{site}/breakdown", get(breakdown))
        .route("/v1/sites/{site}/realtime", get(realtime_now))
        .route("/v1/sites/{site}/realtime/stream", get(realtime_stream))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi_json))
        .route("/", get(dashboard::page))
        .layer(cors)
        .with_state(state)
}

fn bearer(headers: &HeaderMap, params: &RawParams) -> Result<String, QueryError> {
    match headers.get(header::AUTHORIZATION) {
        Some(v) => Ok(v
            .to_str()
            .ok()
            .and_then(|t| t.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(TokenError::Malformed)?
            .to_string()),
        None => Ok(params.get("token").cloned().ok_or(TokenError::Missing)?),
    }
}

/// The read token of a request (`Authorization: Bearer`, or `?token=` for links and SSE),
/// within its rate limit.
fn verify_token<'a>(
    state: &'a QueryState,
    headers: &HeaderMap,
    params: &RawParams,
) -> Result<(&'a TenantEntry, Claims), QueryError> {
    let token = bearer(headers, params)?;
    let verified = state.registry.verify(&token, Scope::Read, Utc::now().timestamp())?;
    let signature = token.rsplit('.').next().unwrap_or_default();
    let (rate, burst) = (state.config.queries_per_second_per_token, state.config.burst_per_token);
    state
        .rate
        .take("query", signature, 1, rate, burst, Instant::now())
        .map_err(|retry_after| QueryError::RateLimited {
            per_second: rate,
            retry_after,
        })?;
    Ok(verified)
}

/// A token reads only its own site.
fn authorize<'a>(
    state: &'a QueryState,
    headers: &HeaderMap,
    params: &RawParams,
    site: &str,
) -> Result<&'a TenantEntry, QueryError> {
    let (entry, claims) = verify_token(state, headers, params)?;
    if claims.site != site {
        return Err(QueryError::Forbidden {
            token_site: claims.site,
            requested: site.to_string(),
        });
    }
    Ok(entry)
}

fn range_json(range: &DateRange) -> Value {
    json!({"from": range.first_day.to_string(), "to": range.last_day.to_string(), "timezone": range.tz.name()})
}

/// The parts of a GET query every endpoint shares.
fn get_query(
    entry: &TenantEntry,
    params: &RawParams,
    site: &str,
    dimensions: Vec<Dimension>,
) -> Result<Query, QueryError> {
    let query = Query {
        site_id: site.to_string(),
        metrics: parse_metrics(params)?,
        range: parse_range(params, entry.tenant.spec.site_timezone(site), Utc::now())?,
        dimensions,
        filter: parse_filters(params)?,
        order_by: Vec::new(),
        limit: model::MAX_LIMIT,
        offset: 0,
        compare: None,
        path: PathHint::Auto,
        tier: TierHint::Auto,
    };
    Ok(query)
}

/// The answer to a query, from the cache when the site has seen no commit since.
async fn answer(
    state: &QueryState,
    entry: &TenantEntry,
    query: &Query,
) -> Result<(Arc<Answer>, Watermark), QueryError> {
    model::check(query, &entry.tenant.spec)?;
    let watermark = state.watermarks.get(&entry.tenant.name, &query.site_id);
    let key = AnswerCache::key(&entry.tenant.name, query, watermark.commits);
    if let Some(hit) = state.cache.get(&key) {
        return Ok((hit, watermark));
    }
    let storage = state.storage.get(state.warehouse.as_ref(), &entry.tenant).await;
    let fresh = Arc::new(
        execute::run(
            state.warehouse.as_ref(),
            &entry.tenant,
            &storage,
            query,
            &state.config.limits,
        )
        .await?,
    );
    state.cache.insert(key, fresh.clone());
    Ok((fresh, watermark))
}

fn named_metrics(query: &Query, values: &[Value]) -> Map<String, Value> {
    query
        .metrics
        .iter()
        .zip(values)
        .map(|(m, v)| (m.name().to_string(), v.clone()))
        .collect()
}

fn meta(query: &Query, answer: &Answer, watermark: &Watermark) -> Value {
    let mut m = json!({
        "watermark": output::watermark_text(watermark),
        "site_id": query.site_id,
        "metrics": query.metrics.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "dimensions": query.dimensions.iter().map(Dimension::label).collect::<Vec<_>>(),
        "date_range": range_json(&answer.range),
        "total_rows": answer.total_rows,
        "path": answer.source.name(),
    });
    if let Some(tier) = answer.source.tier() {
        m["tier"] = json!(tier);
    }
    if let Some(c) = &answer.comparison_range {
        m["comparison_date_range"] = range_json(c);
    }
    if let Some(b) = &answer.bucket_match {
        m["comparison_buckets"] = json!({
            "match": b.rule,
            "without_counterpart": b.without_counterpart,
            "without_counterpart_gets": "null",
        });
    }
    m
}

/// Each row as an object: `label` (the first dimension) then the named metrics.
fn labelled_rows(query: &Query, answer: &Answer, label: &str) -> Vec<Value> {
    answer
        .rows
        .iter()
        .map(|r| {
            let mut m = Map::new();
            m.insert(label.to_string(), r.dimensions[0].clone());
            m.extend(named_metrics(query, &r.metrics));
            Value::Object(m)
        })
        .collect()
}

/// Header and rows of an answer for CSV: dimension labels, then metric names.
fn csv_table(query: &Query, answer: &Answer) -> (Vec<String>, Vec<Vec<Value>>) {
    let mut header: Vec<String> = query.dimensions.iter().map(Dimension::label).collect();
    header.extend(query.metrics.iter().map(|m| m.name().to_string()));
    let rows = answer
        .rows
        .iter()
        .map(|r| r.dimensions.iter().chain(&r.metrics).cloned().collect())
        .collect();
    (header, rows)
}

#[utoipa::path(post, path = "/v1/query", request_body = openapi::QueryRequest,
    responses(
        (status = 200, description = "The answer (JSON, or CSV with Accept: text/csv)", body = openapi::QueryResponse),
        openapi::QueryErrors,
    ))]
#[tracing::instrument(skip_all)]
async fn query(
    State(state): State<Arc<QueryState>>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Response, QueryError> {
    let (entry, claims) = verify_token(&state, &headers, &params)?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| QueryError::bad("query", format!("the body is not valid JSON: {e}")))?;
    let query = model::parse_query(&body, &entry.tenant.spec, Utc::now())?;
    if claims.site != query.site_id {
        return Err(QueryError::Forbidden {
            token_site: claims.site,
            requested: query.site_id,
        });
    }
    let (answer, watermark) = answer(&state, entry, &query).await?;
    if output::wants_csv(&headers) {
        let (header, rows) = csv_table(&query, &answer);
        return Ok(output::csv(&header, &rows, &watermark));
    }
    let results: Vec<Value> = answer
        .rows
        .iter()
        .map(|r| {
            let mut row = json!({"dimensions": r.dimensions, "metrics": r.metrics});
            if let Some((before, change)) = &r.comparison {
                row["comparison"] = json!({"metrics": before, "change": change});
            }
            row
        })
        .collect();
    Ok(output::json(
        json!({"results": results, "meta": meta(&query, &answer, &watermark)}),
        &watermark,
    ))
}

#[utoipa::path(get, path = "/v1/sites/{site}/aggregate", params(("site" = String, Path, description = "The site id"), openapi::GetParams),
    responses(
        (status = 200, description = "Totals of the metrics over the range", body = Object),
        openapi::QueryErrors,
    ))]
#[tracing::instrument(skip_all, fields(site = %site))]
async fn aggregate(
    State(state): State<Arc<QueryState>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> Result<Response, QueryError> {
    let entry = authorize(&state, &headers, &params, &site)?;
    let query = get_query(entry, &params, &site, Vec::new())?;
    let (answer, watermark) = answer(&state, entry, &query).await?;
    if output::wants_csv(&headers) {
        let (header, rows) = csv_table(&query, &answer);
        return Ok(output::csv(&header, &rows, &watermark));
    }
    let results = answer
        .rows
        .first()
        .map(|r| named_metrics(&query, &r.metrics))
        .unwrap_or_default();
    let body = json!({"site_id": site, "date_range": range_json(&answer.range), "results": results, "meta": meta(&query, &answer, &watermark)});
    Ok(output::json(body, &watermark))
}

#[utoipa::path(get, path = "/v1/sites/{site}/timeseries", params(("site" = String, Path, description = "The site id"), openapi::GetParams),
    responses(
        (status = 200, description = "The metrics per time bucket, empty buckets included", body = Object),
        openapi::QueryErrors,
    ))]
#[tracing::instrument(skip_all, fields(site = %site))]
async fn timeseries(
    State(state): State<Arc<QueryState>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> Result<Response, QueryError> {
    let entry = authorize(&state, &headers, &params, &site)?;
    let interval = parse_interval(&params)?;
    let query = get_query(entry, &params, &site, vec![Dimension::Time(interval)])?;
    let (answer, watermark) = answer(&state, entry, &query).await.map_err(|e| match e {
        QueryError::BadParameter {
            parameter: "date_range",
            message,
        } => QueryError::bad("interval", message),
        other => other,
    })?;
    if output::wants_csv(&headers) {
        let (mut header, rows) = csv_table(&query, &answer);
        header[0] = "date".into();
        return Ok(output::csv(&header, &rows, &watermark));
    }
    let results = labelled_rows(&query, &answer, "date");
    let body = json!({"site_id": site, "date_range": range_json(&answer.range), "results": results, "meta": meta(&query, &answer, &watermark)});
    Ok(output::json(body, &watermark))
}

#[utoipa::path(get, path = "/v1/sites/{site}/breakdown", params(("site" = String, Path, description = "The site id"), openapi::GetParams),
    responses(
        (status = 200, description = "The metrics per value of one dimension, paginated", body = Object),
        openapi::QueryErrors,
    ))]
#[tracing::instrument(skip_all, fields(site = %site))]
async fn breakdown(
    State(state): State<Arc<QueryState>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> Result<Response, QueryError> {
    let entry = authorize(&state, &headers, &params, &site)?;
    let property = params
        .get("property")
        .ok_or_else(|| QueryError::bad("property", "name the dimension to break down by"))?;
    let dimension = parse_dimension("property", property)?;
    let label = dimension.label();
    let (limit, page) = parse_pagination(&params)?;
    let mut query = get_query(entry, &params, &site, vec![dimension])?;
    query.limit = limit;
    query.offset = u64::from(limit) * u64::from(page - 1);
    let (answer, watermark) = answer(&state, entry, &query).await?;
    if output::wants_csv(&headers) {
        let (header, rows) = csv_table(&query, &answer);
        return Ok(output::csv(&header, &rows, &watermark));
    }
    let results = labelled_rows(&query, &answer, &label);
    let body = json!({
        "site_id": site,
        "date_range": range_json(&answer.range),
        "property": label,
        "results": results,
        "pagination": {"limit": limit, "page": page, "total": answer.total_rows},
        "meta": meta(&query, &answer, &watermark),
    });
    Ok(output::json(body, &watermark))
}

#[utoipa::path(get, path = "/v1/sites/{site}/realtime", params(("site" = String, Path, description = "The site id")),
    responses((status = 200, description = "Visitors of the last five minutes and their top pages", body = Object)))]
#[tracing::instrument(skip_all, fields(site = %site))]
async fn realtime_now(
    State(state): State<Arc<QueryState>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> Result<Response, QueryError> {
    let entry = authorize(&state, &headers, &params, &site)?;
    let watermark = state.watermarks.get(&entry.tenant.name, &site);
    let mut body = realtime::snapshot(state.warehouse.as_ref(), &entry.tenant.database(), &site).await?;
    body["watermark"] = json!(output::watermark_text(&watermark));
    Ok(output::json(body, &watermark))
}

/// Server-Sent Events: a `realtime` event now and every `realtime_interval`, for as long as
/// the token stays valid (it is checked again before every update).
#[utoipa::path(get, path = "/v1/sites/{site}/realtime/stream", params(("site" = String, Path, description = "The site id")),
    responses((status = 200, description = "text/event-stream of `realtime` events", content_type = "text/event-stream")))]
#[tracing::instrument(skip_all, fields(site = %site))]
async fn realtime_stream(
    State(state): State<Arc<QueryState>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, QueryError> {
    authorize(&state, &headers, &params, &site)?;
    let token = bearer(&headers, &params)?;
    let stream = futures_util::stream::unfold(true, move |first| {
        let (state, site, token) = (state.clone(), site.clone(), token.clone());
        async move {
            if !first {
                tokio::time::sleep(state.config.realtime_interval).await;
            }
            let (entry, claims) = state
                .registry
                .verify(&token, Scope::Read, Utc::now().timestamp())
                .ok()?;
            if claims.site != site {
                return None;
            }
            let watermark = state.watermarks.get(&entry.tenant.name, &site);
            let event = match realtime::snapshot(state.warehouse.as_ref(), &entry.tenant.database(), &site).await {
                Ok(mut body) => {
                    body["watermark"] = json!(output::watermark_text(&watermark));
                    Event::default().event("realtime").data(body.to_string())
                }
                Err(e) => Event::default().event("error").data(e.to_string()),
            };
            Some((Ok(event), false))
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi::document()).into_response()
}

/// Prometheus text format: cache hits and misses.
async fn metrics(State(state): State<Arc<QueryState>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.metrics) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
