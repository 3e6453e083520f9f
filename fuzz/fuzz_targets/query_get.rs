//! The GET endpoints' query strings (`aggregate`, `timeseries`, `breakdown`: metrics,
//! period or from/to, timezone, the `filters` syntax, interval, property, pagination)
//! through parsing and planning to SQL and its parameters.
//!
//! Input: the first byte picks the endpoint and the storage state, the rest is the query.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;
use sightline_fuzz::planning::{check_query, expect_refusal, storage, tenant};
use sightline_query::model::{check, parse_get_query, Dimension};
use sightline_query::request::{parse_dimension, parse_interval, parse_pagination};
use sightline_query::QueryError;

const PARAMETERS: [&str; 10] = [
    "metrics", "period", "from", "to", "timezone", "filters", "interval", "property", "limit", "page",
];

fn query(selector: u8, params: &HashMap<String, String>) -> Result<sightline_query::model::Query, QueryError> {
    let tenant = tenant();
    let site = params.get("site").map_or("shop.example", String::as_str);
    let site_tz = tenant.spec.site_timezone(site);
    let now = sightline_fuzz::now();
    let query = match selector % 3 {
        0 => parse_get_query(params, site, site_tz, Vec::new(), now)?,
        1 => {
            let interval = parse_interval(params)?;
            parse_get_query(params, site, site_tz, vec![Dimension::Time(interval)], now)?
        }
        _ => {
            let property = params
                .get("property")
                .ok_or_else(|| QueryError::bad("property", "name the dimension to break down by"))?;
            let dimension = parse_dimension("property", property)?;
            let (limit, page) = parse_pagination(params)?;
            let mut query = parse_get_query(params, site, site_tz, vec![dimension], now)?;
            query.limit = limit;
            query.offset = u64::from(limit) * u64::from(page - 1);
            query
        }
    };
    check(&query, &tenant.spec)?;
    Ok(query)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    // What axum's `Query<HashMap<String, String>>` extractor makes of the query string.
    let Ok(params) = serde_urlencoded::from_str::<HashMap<String, String>>(text) else {
        return;
    };
    match query(selector, &params) {
        Ok(q) => {
            let tenant = tenant();
            check_query(&tenant, &storage(&tenant, selector >> 2), &q);
        }
        Err(e) => {
            let mut known = PARAMETERS.to_vec();
            // `check` names these for any query, however it was written.
            known.extend(["dimensions", "date_range"]);
            expect_refusal(&e, &known);
        }
    }
});
