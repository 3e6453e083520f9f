//! The query API for merchants: parse -> plan -> parameterised SQL -> answer. One query
//! language (`POST /v1/query`); the GET endpoints are special cases of it.

pub mod admission;
pub mod buckets;
pub mod cache;
pub mod dashboard;
pub mod error;
pub mod execute;
pub mod freshness;
pub mod merges;
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

use axum::extract::{DefaultBodyLimit, Path, Query as QueryParams, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use futures_util::Stream;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde_json::{json, Map, Value};
use sightline_core::rate::RateLimiter;
use sightline_core::registry::{Registry, TenantEntry};
use sightline_core::token::{Claims, Scope, TokenError};
use sightline_core::warehouse::Warehouse;
use sightline_core::watermark::{Watermark, Watermarks};
use tower_http::cors::{Any, CorsLayer};

use admission::Admission;
pub use admission::AdmissionConfig;
use cache::AnswerCache;
pub use error::QueryError;
use error::Refusal;
use execute::Answer;
pub use execute::Limits;
use model::{Dimension, Query};
use realtime::{Snapshots, Streams};
use request::{parse_dimension, parse_interval, parse_pagination, DateRange, RawParams};

#[derive(Clone, Debug)]
pub struct QueryConfig {
    /// Bytes of answers the cache may hold (weighed as they are held in memory).
    pub cache_bytes: u64,
    pub limits: Limits,
    /// Sustained queries per second per token, and the burst above it. Every realtime
    /// update a stream sends costs one query.
    pub queries_per_second_per_token: u32,
    pub burst_per_token: u32,
    /// Queries per token and per tenant in the warehouse at once, and how many may wait.
    pub admission: AdmissionConfig,
    /// How often the realtime stream sends an update (and how old a shared snapshot may be).
    pub realtime_interval: Duration,
    /// Realtime streams open at once per token and per tenant.
    pub streams_per_token: usize,
    pub streams_per_tenant: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            cache_bytes: 64 * 1024 * 1024,
            limits: Limits::default(),
            queries_per_second_per_token: 20,
            burst_per_token: 100,
            admission: AdmissionConfig::default(),
            realtime_interval: Duration::from_secs(5),
            streams_per_token: 4,
            streams_per_tenant: 64,
        }
    }
}

/// The largest `POST /v1/query` body: a query is a small document (the filter bounds allow
/// far less text than this).
pub const MAX_QUERY_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    /// A fixed name per refusal kind ([`QueryError::reason`]).
    reason: &'static str,
}

pub struct QueryState {
    pub registry: Arc<Registry>,
    pub warehouse: Arc<dyn Warehouse>,
    pub watermarks: Arc<Watermarks>,
    pub config: QueryConfig,
    cache: AnswerCache,
    storage: storage::StorageStates,
    merges: merges::SealedMerges,
    rate: RateLimiter,
    admission: Admission,
    snapshots: Snapshots,
    streams: Arc<Streams>,
    refusals: Family<RefusalLabels, Counter>,
    in_flight: Gauge,
}

impl QueryState {
    pub fn new(
        registry: Arc<Registry>,
        warehouse: Arc<dyn Warehouse>,
        watermarks: Arc<Watermarks>,
        config: QueryConfig,
    ) -> Self {
        Self {
            registry,
            warehouse,
            watermarks,
            cache: AnswerCache::new(config.cache_bytes),
            storage: storage::StorageStates::default(),
            merges: merges::SealedMerges::default(),
            rate: RateLimiter::default(),
            admission: Admission::new(config.admission),
            snapshots: Snapshots::default(),
            streams: Arc::new(Streams::new(config.streams_per_token, config.streams_per_tenant)),
            refusals: Family::default(),
            in_flight: Gauge::default(),
            config,
        }
    }

    /// Registers the query API's metrics (served by the process's operations listener).
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register(
            "sightline_query_cache_hits",
            "Query answers served from the cache",
            self.cache.hits.clone(),
        );
        registry.register(
            "sightline_query_cache_misses",
            "Query answers computed in the warehouse",
            self.cache.misses.clone(),
        );
        registry.register(
            "sightline_query_cache_bytes",
            "Bytes the cached answers hold",
            self.cache.bytes.clone(),
        );
        registry.register(
            "sightline_query_refusals",
            "Query API requests refused, by reason",
            self.refusals.clone(),
        );
        registry.register(
            "sightline_query_in_flight",
            "Queries waiting for or running in the warehouse",
            self.in_flight.clone(),
        );
        registry.register(
            "sightline_query_realtime_streams",
            "Realtime streams open",
            self.streams.gauge.clone(),
        );
        registry.register(
            "sightline_query_realtime_snapshots",
            "Realtime snapshots computed (one per site and interval, shared by its streams)",
            self.snapshots.computed.clone(),
        );
    }

    /// A query's admission ticket for `token`'s tenant, waiting at most the query timeout.
    async fn admit(&self, tenant: &str, token: &str) -> Result<execute::Hold, QueryError> {
        let wait = Duration::from_secs(self.config.limits.timeout_secs.max(1));
        let ticket = self.admission.admit(tenant, token, wait).await?;
        self.in_flight
            .set(i64::try_from(self.admission.in_flight()).unwrap_or(i64::MAX));
        Ok(Arc::new(ticket))
    }
}

/// Counts every refused request by its reason (a fixed set).
async fn count_refusals(State(state): State<Arc<QueryState>>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    if let Some(Refusal(reason)) = response.extensions().get::<Refusal>() {
        state.refusals.get_or_create(&RefusalLabels { reason }).inc();
    }
    state
        .in_flight
        .set(i64::try_from(state.admission.in_flight()).unwrap_or(i64::MAX));
    response
}

pub fn router(state: Arc<QueryState>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .expose_headers([header::HeaderName::from_static(output::WATERMARK_HEADER)]);
    Router::new()
        .route(
            "/v1/query",
            post(query).layer(DefaultBodyLimit::max(MAX_QUERY_BODY_BYTES)),
        )
        .route("/v1/sites/{site}/aggregate", get(aggregate))
        .route("/v1/sites/{site}/timeseries", get(timeseries))
        .route("/v1/sites/{site}/breakdown", get(breakdown))
        .route("/v1/sites/{site}/realtime", get(realtime_now))
        .route("/v1/sites/{site}/realtime/stream", get(realtime_stream))
        .route("/v1/openapi.json", get(openapi_json))
        .route("/", get(dashboard::page))
        .layer(axum::middleware::from_fn_with_state(state.clone(), count_refusals))
        .layer(cors)
        .with_state(state)
}

fn bearer(headers: &HeaderMap, params: &RawParams) -> Result<String, QueryError> {
    match headers.get(header::AUTHORIZATION) {
        Some(v) => Ok(sightline_core::token::from_authorization(v.as_bytes())?.to_string()),
        None => Ok(params.get("token").cloned().ok_or(TokenError::Missing)?),
    }
}

/// A verified read token: its tenant, its claims, and the key its rate, concurrency and
/// stream bounds are counted under (the signature, unique per token).
struct Reader {
    entry: Arc<TenantEntry>,
    claims: Claims,
    key: String,
}

/// The read token of a request (`Authorization: Bearer`, or `?token=` for links and SSE),
/// within its rate limit.
fn verify_token(state: &QueryState, headers: &HeaderMap, params: &RawParams) -> Result<Reader, QueryError> {
    let token = bearer(headers, params)?;
    let (entry, claims) = state.registry.verify(&token, Scope::Read, Utc::now().timestamp())?;
    let key = token.rsplit('.').next().unwrap_or_default().to_string();
    charge(state, &key)?;
    Ok(Reader { entry, claims, key })
}

/// Takes one query from the token's rate.
fn charge(state: &QueryState, key: &str) -> Result<(), QueryError> {
    let (rate, burst) = (state.config.queries_per_second_per_token, state.config.burst_per_token);
    state
        .rate
        .take("query", key, 1, rate, burst, Instant::now())
        .map_err(|retry_after| QueryError::RateLimited {
            per_second: rate,
            retry_after,
        })
}

/// A token reads only its own site.
fn authorize(state: &QueryState, headers: &HeaderMap, params: &RawParams, site: &str) -> Result<Reader, QueryError> {
    let reader = verify_token(state, headers, params)?;
    same_site(&reader.claims, site)?;
    Ok(reader)
}

fn same_site(claims: &Claims, site: &str) -> Result<(), QueryError> {
    if claims.site != site {
        return Err(QueryError::Forbidden {
            token_site: claims.site.clone(),
            requested: site.chars().take(200).collect(),
        });
    }
    Ok(())
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
    model::parse_get_query(
        params,
        site,
        entry.tenant.spec.site_timezone(site),
        dimensions,
        Utc::now(),
    )
}

/// The answer to a query, from the cache when the site has seen no commit since; else
/// computed under the token's and the tenant's admission bounds.
async fn answer(state: &QueryState, reader: &Reader, query: &Query) -> Result<(Arc<Answer>, Watermark), QueryError> {
    let entry = &reader.entry;
    model::check(query, &entry.tenant.spec)?;
    let watermark = state.watermarks.get(&entry.tenant.name, &query.site_id);
    let key = AnswerCache::key(&entry.tenant.name, query, watermark.commits);
    if let Some(hit) = state.cache.get(&key) {
        return Ok((hit, watermark));
    }
    let ticket = state.admit(&entry.tenant.name, &reader.key).await?;
    let storage = state.storage.get(state.warehouse.as_ref(), &entry.tenant).await;
    let fresh = Arc::new(
        execute::run(
            state.warehouse.as_ref(),
            &entry.tenant,
            &storage,
            query,
            &state.config.limits,
            &ticket,
            Some(&state.merges),
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
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, QueryError> {
    let reader = verify_token(&state, &headers, &params)?;
    // A body over the limit, or one that did not arrive in time, is a JSON refusal too.
    let body = body.map_err(|e| match e.status() {
        axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
            QueryError::bad("query", format!("the body is larger than {MAX_QUERY_BODY_BYTES} bytes"))
        }
        _ => QueryError::bad("query", format!("the body could not be read: {}", e.body_text())),
    })?;
    let body: Value = serde_json::from_slice(&body)
        .map_err(|e| QueryError::bad("query", format!("the body is not valid JSON: {e}")))?;
    // Authorised before anything else of the query is read: a token for another site gets
    // its 403 without its filters (regular expressions) ever being parsed.
    let site = body
        .get("site_id")
        .and_then(Value::as_str)
        .ok_or_else(|| QueryError::bad("site_id", "required: the site to query"))?;
    same_site(&reader.claims, site)?;
    // Parsing checks every pattern; it runs off the async threads.
    let spec = reader.entry.tenant.spec.clone();
    let query = tokio::task::spawn_blocking(move || model::parse_query(&body, &spec, Utc::now()))
        .await
        .map_err(|e| QueryError::bad("query", format!("the query could not be parsed: {e}")))??;
    let (answer, watermark) = answer(&state, &reader, &query).await?;
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
    let reader = authorize(&state, &headers, &params, &site)?;
    let query = get_query(&reader.entry, &params, &site, Vec::new())?;
    let (answer, watermark) = answer(&state, &reader, &query).await?;
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
    let reader = authorize(&state, &headers, &params, &site)?;
    let interval = parse_interval(&params)?;
    let query = get_query(&reader.entry, &params, &site, vec![Dimension::Time(interval)])?;
    let (answer, watermark) = answer(&state, &reader, &query).await.map_err(|e| match e {
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
    let reader = authorize(&state, &headers, &params, &site)?;
    let property = params
        .get("property")
        .ok_or_else(|| QueryError::bad("property", "name the dimension to break down by"))?;
    let dimension = parse_dimension("property", property)?;
    let label = dimension.label();
    let (limit, page) = parse_pagination(&params)?;
    let mut query = get_query(&reader.entry, &params, &site, vec![dimension])?;
    query.limit = limit;
    query.offset = u64::from(limit) * u64::from(page - 1);
    let (answer, watermark) = answer(&state, &reader, &query).await?;
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

/// The site's shared realtime snapshot with its watermark; computing a new one runs under
/// the token's and the tenant's admission bounds.
async fn realtime_body(state: &QueryState, entry: &TenantEntry, key: &str, site: &str) -> Result<Value, QueryError> {
    let watermark = state.watermarks.get(&entry.tenant.name, site);
    let db = entry.tenant.database();
    let mut body = state
        .snapshots
        .get(&entry.tenant.name, site, state.config.realtime_interval, || async {
            let ticket = state.admit(&entry.tenant.name, key).await?;
            realtime::snapshot(state.warehouse.as_ref(), &db, site, &state.config.limits, &ticket).await
        })
        .await?;
    body["watermark"] = json!(output::watermark_text(&watermark));
    Ok(body)
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
    let reader = authorize(&state, &headers, &params, &site)?;
    let body = realtime_body(&state, &reader.entry, &reader.key, &site).await?;
    let watermark = state.watermarks.get(&reader.entry.tenant.name, &site);
    Ok(output::json(body, &watermark))
}

/// Server-Sent Events: a `realtime` event now and every `realtime_interval`, for as long as
/// the token stays valid (it is checked again before every update). Every update costs the
/// token one query of its rate; a stream whose token is over its rate, or no longer valid,
/// gets an `error` event and ends. Streams per token and per tenant are bounded.
#[utoipa::path(get, path = "/v1/sites/{site}/realtime/stream", params(("site" = String, Path, description = "The site id")),
    responses(
        (status = 200, description = "text/event-stream of `realtime` events", content_type = "text/event-stream"),
        (status = 429, description = "Over the token's rate, or too many streams open for the token or its tenant", body = openapi::ErrorBody),
    ))]
#[tracing::instrument(skip_all, fields(site = %site))]
async fn realtime_stream(
    State(state): State<Arc<QueryState>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, QueryError> {
    let reader = authorize(&state, &headers, &params, &site)?;
    let place = state.streams.open(&reader.entry.tenant.name, &reader.key)?;
    let token = bearer(&headers, &params)?;
    let key = reader.key.clone();
    // The first update was charged with the request.
    let first = Some((place, true));
    let stream = futures_util::stream::unfold(first, move |open| {
        let (state, site, token, key) = (state.clone(), site.clone(), token.clone(), key.clone());
        async move {
            let (place, first) = open?;
            if !first {
                tokio::time::sleep(state.config.realtime_interval).await;
            }
            let update = async {
                let (entry, claims) = state.registry.verify(&token, Scope::Read, Utc::now().timestamp())?;
                same_site(&claims, &site)?;
                if !first {
                    charge(&state, &key)?;
                }
                realtime_body(&state, &entry, &key, &site).await
            };
            match update.await {
                Ok(body) => Some((
                    Ok(Event::default().event("realtime").data(body.to_string())),
                    Some((place, false)),
                )),
                // Said once, then the stream ends (and its place is freed).
                Err(e) => Some((Ok(stream_error(&e)), None)),
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// An `error` event: the same JSON as the API's error bodies.
fn stream_error(e: &QueryError) -> Event {
    let (code, parameter) = match e {
        QueryError::Unauthorized(_) => ("unauthorized", Some("token")),
        QueryError::Forbidden { .. } => ("forbidden", Some("site")),
        QueryError::RateLimited { .. } => ("rate_limited", Some("token")),
        QueryError::TooManyQueries { .. } => ("too_many_queries", Some("token")),
        QueryError::Timeout(_) => ("query_timeout", None),
        _ => ("warehouse_unavailable", None),
    };
    let message = match e {
        QueryError::Warehouse(_) => "the warehouse could not answer; retry later".to_string(),
        other => other.to_string(),
    };
    Event::default()
        .event("error")
        .data(json!({"error": {"code": code, "message": message, "parameter": parameter}}).to_string())
}

async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi::document()).into_response()
}
