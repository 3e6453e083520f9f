//! `POST /v1/query` bodies through parsing and planning to SQL and its parameters.
//!
//! Input: the first byte picks the storage state the planner sees, the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sightline_fuzz::planning::{check_query, expect_refusal, storage, tenant};
use sightline_query::model::parse_query;

fuzz_target!(|data: &[u8]| {
    let Some((&state, body)) = data.split_first() else {
        return;
    };
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let tenant = tenant();
    let query = match parse_query(&body, &tenant.spec, sightline_fuzz::now()) {
        Ok(query) => query,
        Err(e) => {
            expect_refusal(
                &e,
                &[
                    "query",
                    "site_id",
                    "metrics",
                    "timezone",
                    "date_range",
                    "dimensions",
                    "filters",
                    "order_by",
                    "pagination",
                    "compare",
                    "path",
                    "tier",
                ],
            );
            return;
        }
    };
    check_query(&tenant, &storage(&tenant, state), &query);
});
