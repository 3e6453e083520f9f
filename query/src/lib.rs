//! The query API for merchants: parse -> plan -> parameterised SQL -> answer, from the
//! rollups whenever they can answer.

pub mod buckets;
pub mod error;
pub mod plan;
pub mod request;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, Method};
use axum::routing::get;
use axum::{Json, Router};
use chrono::Utc;
use serde_json::{json, Map, Value};
use sightline_core::registry::{Registry, TenantEntry};
use sightline_core::token::{Scope, TokenError};
use sightline_core::warehouse::Warehouse;
use tower_http::cors::{Any, CorsLayer};

pub use error::QueryError;
use plan::{metric_values, plan};
use request::{
    parse_dimension, parse_filters, parse_interval, parse_metrics, parse_pagination, parse_range,
    DateRange, RawParams,
};

pub struct QueryState {
    pub registry: Arc<Registry>,
    pub warehouse: Arc<dyn Warehouse>,
}

pub fn router(state: Arc<QueryState>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::GET, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]);
    Router::new()
        .route("/v1/sites/{site}/aggregate", get(aggregate))
        .route("/v1/sites/{site}/timeseries", get(timeseries))
        .route("/v1/sites/{site}/breakdown", get(breakdown))
        .layer(cors)
        .with_state(state)
}

/// Checks the read token against the site in the path: a token reads only its own site.
fn authorize<'a>(
    state: &'a QueryState,
    headers: &HeaderMap,
    params: &RawParams,
    site: &str,
) -> Result<&'a TenantEntry, QueryError> {
    let token = match headers.get(header::AUTHORIZATION) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|t| t.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(TokenError::Malformed)?,
        None => params
            .get("token")
            .map(String::as_str)
            .ok_or(TokenError::Missing)?,
    };
    let (entry, claims) = state
        .registry
        .verify(token, Scope::Read, Utc::now().timestamp())?;
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

/// What every endpoint reads first: the authorised tenant, metrics, filters and range.
struct Common<'a> {
    entry: &'a TenantEntry,
    metrics: Vec<request::Metric>,
    filters: Vec<request::Filter>,
    range: DateRange,
}

fn common<'a>(
    state: &'a QueryState,
    headers: &HeaderMap,
    params: &RawParams,
    site: &str,
) -> Result<Common<'a>, QueryError> {
    let entry = authorize(state, headers, params, site)?;
    Ok(Common {
        entry,
        metrics: parse_metrics(params)?,
        filters: parse_filters(params)?,
        range: parse_range(params, entry.tenant.spec.site_timezone(site), Utc::now())?,
    })
}

#[tracing::instrument(skip_all, fields(site = %site))]
async fn aggregate(
    State(state): State<Arc<QueryState>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, QueryError> {
    let Common {
        entry,
        metrics,
        filters,
        range,
    } = common(&state, &headers, &params, &site)?;
    let p = plan(
        &entry.tenant.database(),
        &site,
        &range,
        &filters,
        None,
        &metrics,
    )?;
    let rows = state
        .warehouse
        .select(&p.aggregate_sql(), &p.params)
        .await?;
    let results = metric_values(rows.first().unwrap_or(&Value::Null), &metrics);
    Ok(Json(
        json!({"site_id": site, "date_range": range_json(&range), "results": results}),
    ))
}

#[tracing::instrument(skip_all, fields(site = %site))]
async fn timeseries(
    State(state): State<Arc<QueryState>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, QueryError> {
    let Common {
        entry,
        metrics,
        filters,
        range,
    } = common(&state, &headers, &params, &site)?;
    let interval = parse_interval(&params)?;
    let labels = buckets::labels(&range, interval);
    if labels.len() > 10_000 {
        return Err(QueryError::bad(
            "interval",
            format!(
                "{} buckets; choose a longer interval or a shorter range",
                labels.len()
            ),
        ));
    }
    let p = plan(
        &entry.tenant.database(),
        &site,
        &range,
        &filters,
        None,
        &metrics,
    )?;
    let rows = state
        .warehouse
        .select(&p.timeseries_sql(interval), &p.params)
        .await?;
    let by_bucket: HashMap<&str, &Value> = rows
        .iter()
        .filter_map(|r| r["bucket"].as_str().map(|b| (b, r)))
        .collect();
    let results: Vec<Value> = labels
        .iter()
        .map(|label| {
            let mut m = Map::new();
            m.insert("date".into(), Value::String(label.clone()));
            m.extend(metric_values(
                by_bucket
                    .get(label.as_str())
                    .copied()
                    .unwrap_or(&Value::Null),
                &metrics,
            ));
            Value::Object(m)
        })
        .collect();
    Ok(Json(
        json!({"site_id": site, "date_range": range_json(&range), "results": results}),
    ))
}

#[tracing::instrument(skip_all, fields(site = %site))]
async fn breakdown(
    State(state): State<Arc<QueryState>>,
    Path(site): Path<String>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, QueryError> {
    let Common {
        entry,
        metrics,
        filters,
        range,
    } = common(&state, &headers, &params, &site)?;
    let property = params
        .get("property")
        .ok_or_else(|| QueryError::bad("property", "name the dimension to break down by"))?;
    let dimension = parse_dimension("property", property)?;
    let (limit, page) = parse_pagination(&params)?;
    let mut p = plan(
        &entry.tenant.database(),
        &site,
        &range,
        &filters,
        Some(dimension),
        &metrics,
    )?;
    let total_rows = state
        .warehouse
        .select(&p.breakdown_total_sql(dimension), &p.params)
        .await?;
    let total = total_rows
        .first()
        .and_then(|r| r["n"].as_u64())
        .unwrap_or(0);
    p.params.push("limit", limit);
    p.params
        .push("offset", u64::from(limit) * u64::from(page - 1));
    let rows = state
        .warehouse
        .select(&p.breakdown_sql(dimension, metrics[0]), &p.params)
        .await?;
    let results: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut m = Map::new();
            m.insert(dimension.to_string(), r["value"].clone());
            m.extend(metric_values(r, &metrics));
            Value::Object(m)
        })
        .collect();
    Ok(Json(json!({
        "site_id": site,
        "date_range": range_json(&range),
        "property": dimension,
        "results": results,
        "pagination": {"limit": limit, "page": page, "total": total},
    })))
}
