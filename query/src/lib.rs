//! The query API for merchants: parse -> plan -> parameterised SQL -> answer. One query
//! language (`POST /v1/query`); the GET endpoints are special cases of it.

pub mod buckets;
pub mod error;
pub mod execute;
pub mod model;
pub mod plan;
pub mod request;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query as QueryParams, State};
use axum::http::{header, HeaderMap, Method};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Map, Value};
use sightline_core::registry::{Registry, TenantEntry};
use sightline_core::token::{Claims, Scope, TokenError};
use sightline_core::warehouse::Warehouse;
use tower_http::cors::{Any, CorsLayer};

pub use error::QueryError;
use execute::Answer;
use model::{Dimension, PathHint, Query};
use request::{
    parse_dimension, parse_filters, parse_interval, parse_metrics, parse_pagination, parse_range, DateRange, RawParams,
};

pub struct QueryState {
    pub registry: Arc<Registry>,
    pub warehouse: Arc<dyn Warehouse>,
}

pub fn router(state: Arc<QueryState>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT]);
    Router::new()
        .route("/v1/query", post(query))
        .route("/v1/sites/{site}/aggregate", get(aggregate))
        .route("/v1/sites/{site}/timeseries", get(timeseries))
        .route("/v1/sites/{site}/breakdown", get(breakdown))
        .layer(cors)
        .with_state(state)
}

/// The read token of a request: `Authorization: Bearer`, or `?token=` for links and SSE.
fn verify_token<'a>(
    state: &'a QueryState,
    headers: &HeaderMap,
    params: &RawParams,
) -> Result<(&'a TenantEntry, Claims), QueryError> {
    let token = match headers.get(header::AUTHORIZATION) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|t| t.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(TokenError::Malformed)?,
        None => params.get("token").map(String::as_str).ok_or(TokenError::Missing)?,
    };
    Ok(state.registry.verify(token, Scope::Read, Utc::now().timestamp())?)
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
    };
    Ok(query)
}

async fn answer(state: &QueryState, entry: &TenantEntry, query: &Query) -> Result<Answer, QueryError> {
    model::check(query, &entry.tenant.spec)?;
    execute::run(state.warehouse.as_ref(), &entry.tenant, query).await
}

fn named_metrics(query: &Query, values: &[Value]) -> Map<String, Value> {
    query
        .metrics
        .iter()
        .zip(values)
        .map(|(m, v)| (m.name().to_string(), v.clone()))
        .collect()
}

fn meta(query: &Query, answer: &Answer) -> Value {
    let mut m = json!({
        "site_id": query.site_id,
        "metrics": query.metrics.iter().map(|m| m.name()).collect::<Vec<_>>(),
        "dimensions": query.dimensions.iter().map(Dimension::label).collect::<Vec<_>>(),
        "date_range": range_json(&answer.range),
        "total_rows": answer.total_rows,
        "path": answer.source.name(),
    });
    if let Some(c) = &answer.comparison_range {
        m["comparison_date_range"] = range_json(c);
    }
    m
}

#[tracing::instrument(skip_all)]
async fn query(
    State(state): State<Arc<QueryState>>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<HashMap<String, String>>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, QueryError> {
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
    let answer = answer(&state, entry, &query).await?;
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
    Ok(Json(json!({"results": results, "meta": meta(&query, &answer)})))
}

#[tracing::instrument(skip_all, fields(site = %site))]
async fn aggregate(
    State(state): State<Arc<QueryState>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> Result<Json<Value>, QueryError> {
    let entry = authorize(&state, &headers, &params, &site)?;
    let query = get_query(entry, &params, &site, Vec::new())?;
    let answer = answer(&state, entry, &query).await?;
    let results = answer
        .rows
        .first()
        .map(|r| named_metrics(&query, &r.metrics))
        .unwrap_or_default();
    Ok(Json(
        json!({"site_id": site, "date_range": range_json(&answer.range), "results": results, "meta": meta(&query, &answer)}),
    ))
}

#[tracing::instrument(skip_all, fields(site = %site))]
async fn timeseries(
    State(state): State<Arc<QueryState>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> Result<Json<Value>, QueryError> {
    let entry = authorize(&state, &headers, &params, &site)?;
    let interval = parse_interval(&params)?;
    let query = get_query(entry, &params, &site, vec![Dimension::Time(interval)])?;
    let answer = answer(&state, entry, &query).await.map_err(|e| match e {
        QueryError::BadParameter {
            parameter: "date_range",
            message,
        } => QueryError::bad("interval", message),
        other => other,
    })?;
    let results: Vec<Value> = answer
        .rows
        .iter()
        .map(|r| {
            let mut m = Map::new();
            m.insert("date".into(), r.dimensions[0].clone());
            m.extend(named_metrics(&query, &r.metrics));
            Value::Object(m)
        })
        .collect();
    Ok(Json(
        json!({"site_id": site, "date_range": range_json(&answer.range), "results": results, "meta": meta(&query, &answer)}),
    ))
}

#[tracing::instrument(skip_all, fields(site = %site))]
async fn breakdown(
    State(state): State<Arc<QueryState>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    QueryParams(params): QueryParams<HashMap<String, String>>,
) -> Result<Json<Value>, QueryError> {
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
    let answer = answer(&state, entry, &query).await?;
    let results: Vec<Value> = answer
        .rows
        .iter()
        .map(|r| {
            let mut m = Map::new();
            m.insert(label.clone(), r.dimensions[0].clone());
            m.extend(named_metrics(&query, &r.metrics));
            Value::Object(m)
        })
        .collect();
    Ok(Json(json!({
        "site_id": site,
        "date_range": range_json(&answer.range),
        "property": label,
        "results": results,
        "pagination": {"limit": limit, "page": page, "total": answer.total_rows},
        "meta": meta(&query, &answer),
    })))
}
