//! The OpenAPI 3 document of the query API, generated from these types and the handlers'
//! `#[utoipa::path]` annotations, served at `/v1/openapi.json`. `sightline openapi` prints it;
//! docs/openapi.json is that output, and a test fails when the two drift.

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

/// A query: every GET endpoint is a special case of this shape.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({
    "site_id": "shop.example.com",
    "metrics": ["visitors", "pageviews", "bounce_rate"],
    "date_range": "30d",
    "dimensions": ["source", "time:day"],
    "filters": [["is", "country", ["DE", "FR"]], ["not", ["contains", "page", ["/admin"]]]],
    "order_by": [["visitors", "desc"]],
    "pagination": {"limit": 100, "offset": 0},
    "compare": "previous_period"
}))]
pub struct QueryRequest {
    /// The site to query; the read token must be for this site.
    pub site_id: String,
    /// visitors, visits, pageviews, events, bounce_rate, visit_duration, views_per_visit,
    /// conversion_rate (needs a goal), revenue (per currency), percentage (needs a dimension).
    pub metrics: Vec<String>,
    /// A period (today, 7d, 30d, month, 12mo) or an ISO pair ["YYYY-MM-DD", "YYYY-MM-DD"].
    #[schema(value_type = Object)]
    pub date_range: Option<Value>,
    /// An IANA timezone for the range and time buckets; the site's own by default.
    pub timezone: Option<String>,
    /// Rollup dimensions (page, event_name, entry_page, source, channel, utm_source,
    /// utm_medium, utm_campaign, country, browser, os, device), time:hour|day|week|month,
    /// props:KEY or goal. At most 4.
    pub dimensions: Option<Vec<String>>,
    /// Conditions [op, dimension, [values]] with op is, is_not, contains, matches (re2),
    /// combined with ["and", [...]], ["or", [...]], ["not", filter]. Top-level filters are ANDed.
    #[schema(value_type = Vec<Object>)]
    pub filters: Option<Vec<Value>>,
    /// [[metric or dimension, "asc" | "desc"], ...]
    #[schema(value_type = Vec<Vec<String>>)]
    pub order_by: Option<Vec<Value>>,
    pub pagination: Option<Pagination>,
    /// previous_period or year_over_year.
    pub compare: Option<String>,
    /// auto (default), rollup or events: which tables answer.
    pub path: Option<String>,
    /// auto (default), quarter_hour, daily or monthly: which rollup tier answers. auto takes
    /// the coarsest that answers exactly; forcing daily or monthly where that tier cannot
    /// (hours, another timezone than the site's, days or months not sealed yet; for monthly
    /// also day or week buckets, or no month in the range it holds, whole or, reaching the
    /// last sealed day, to date) is a 400.
    pub tier: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Pagination {
    /// 1 to 10,000.
    pub limit: Option<u32>,
    pub offset: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct QueryResponse {
    pub results: Vec<ResultRow>,
    pub meta: Meta,
}

#[derive(Serialize, ToSchema)]
pub struct ResultRow {
    /// The row's dimension values, in the order of `dimensions`.
    #[schema(value_type = Vec<String>)]
    pub dimensions: Vec<Value>,
    /// The row's metric values, in the order of `metrics` (revenue is {currency: amount}).
    #[schema(value_type = Vec<Object>)]
    pub metrics: Vec<Value>,
    /// With `compare`: the earlier period's metrics and the change (percent for counts,
    /// points for rates, null from zero); both null for a time bucket without a counterpart
    /// (see `meta.comparison_buckets`).
    #[schema(value_type = Object)]
    pub comparison: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct Meta {
    pub site_id: String,
    pub metrics: Vec<String>,
    pub dimensions: Vec<String>,
    #[schema(value_type = Object)]
    pub date_range: Value,
    #[schema(value_type = Object)]
    pub comparison_date_range: Option<Value>,
    /// With `compare` and a time dimension: how each bucket found the one it is compared with.
    pub comparison_buckets: Option<ComparisonBuckets>,
    /// Rows in all, before pagination.
    pub total_rows: u64,
    /// rollup or events.
    pub path: String,
    /// On the rollup path, the coarsest tier read: monthly (local months, whole or the month
    /// in progress to its last sealed day, with the range's other days from the daily and
    /// quarter-hour tiers), daily (sealed local days,
    /// the days after from the quarter-hour tier), quarter_hour, or hourly (a database still
    /// moving from the layout of earlier releases). Absent on the events path.
    pub tier: Option<String>,
    /// The newest committed event time of the site (also in the X-Sightline-Watermark header).
    pub watermark: Option<String>,
}

/// How the buckets of a compared time series are matched with the comparison period's.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"match": "day_offset_and_local_hour", "without_counterpart": ["2026-03-30 02:00:00"], "without_counterpart_gets": "null"}))]
pub struct ComparisonBuckets {
    /// `day_offset_and_local_hour` for hour buckets: the same local clock hour on the same
    /// day of the range (a 23- or 25-hour DST day is compared hour for hour by clock time,
    /// not by position); `day_offset`, `week_offset` or `month_offset`: the bucket as many
    /// days, weeks or months from the start of the comparison period.
    #[schema(example = "day_offset_and_local_hour")]
    pub r#match: String,
    /// This period's buckets that have no counterpart (an hour the comparison day's clock
    /// skipped, a day past the end of a shorter comparison period). Comparison buckets
    /// without a counterpart here are not shown.
    pub without_counterpart: Vec<String>,
    /// Always "null": those buckets' comparison metrics and changes are null. A bucket
    /// that has a counterpart with nothing in it compares with zeros.
    pub without_counterpart_gets: String,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    #[schema(value_type = Object, example = json!({"code": "bad_parameter", "message": "metrics: unknown metric \"visits_total\"", "parameter": "metrics"}))]
    pub error: Value,
}

/// The refusals every query endpoint can answer with.
#[allow(dead_code)] // a description for the document, never built
#[derive(utoipa::IntoResponses)]
pub enum QueryErrors {
    /// A bad parameter, named in the error.
    #[response(status = 400)]
    BadParameter(ErrorBody),
    /// Missing, malformed, forged or expired token.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The token is for another site.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// The query would read too many rows.
    #[response(status = 422)]
    TooManyRows(ErrorBody),
    /// Over the token's rate limit (`rate_limited`), or too many of the token's or its
    /// tenant's queries already running and waiting (`too_many_queries`); Retry-After.
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// The query took too long.
    #[response(status = 504)]
    Timeout(ErrorBody),
}

/// Query parameters of the GET endpoints.
#[derive(Serialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// Comma-separated metric names (default visitors).
    pub metrics: Option<String>,
    /// today, 7d, 30d (default), month, 12mo or custom (with from and to).
    pub period: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub timezone: Option<String>,
    /// `dim==value;dim!=value;dim~text`, ANDed; `\;` inside a value.
    pub filters: Option<String>,
    /// timeseries: hour, day (default), week or month.
    pub interval: Option<String>,
    /// breakdown: the dimension to group by.
    pub property: Option<String>,
    /// breakdown: rows per page (1 to 1000, default 10) and the page (from 1).
    pub limit: Option<u32>,
    pub page: Option<u32>,
    /// A read token, for clients that cannot send Authorization (links, EventSource).
    pub token: Option<String>,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "read_token",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Sightline query API", description = "Time-series metrics about merchants' sites. Every answer carries the data watermark in X-Sightline-Watermark; Accept: text/csv gives CSV."),
    paths(crate::query, crate::aggregate, crate::timeseries, crate::breakdown, crate::realtime_now, crate::realtime_stream),
    components(schemas(QueryRequest, Pagination, QueryResponse, ResultRow, Meta, ComparisonBuckets, ErrorBody)),
    modifiers(&BearerAuth),
    security(("read_token" = []))
)]
pub struct ApiDoc;

/// The document as pretty JSON with a trailing newline (what docs/openapi.json holds).
pub fn document() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}
