//! Realtime: visitors of the last five minutes and the pages they are on, from `events`.

use chrono::{Duration, Utc};
use serde_json::{json, Value};
use sightline_core::event::ch_datetime;
use sightline_core::schema::EVENTS_TABLE;
use sightline_core::warehouse::{Params, Warehouse};

use crate::error::QueryError;

pub const WINDOW: Duration = Duration::minutes(5);

pub async fn snapshot(wh: &dyn Warehouse, db: &str, site: &str) -> Result<Value, QueryError> {
    let since = Utc::now() - WINDOW;
    let params = Params::new()
        .bind("site", site)
        .bind("since", ch_datetime::format(&since));
    let scope = format!("FROM {db}.{EVENTS_TABLE} WHERE site_id = {{site:String}} AND ts >= {{since:DateTime64(3, 'UTC')}} AND is_bot = 0");
    let visitors = wh
        .select(&format!("SELECT uniq(visitor_id) AS visitors {scope}"), &params)
        .await?;
    let pages = wh
        .select(
            &format!("SELECT pathname AS page, uniq(visitor_id) AS visitors {scope} GROUP BY page ORDER BY visitors DESC, page ASC LIMIT 10"),
            &params,
        )
        .await?;
    Ok(json!({
        "site_id": site,
        "window_seconds": WINDOW.num_seconds(),
        "visitors": visitors.first().and_then(|r| r["visitors"].as_u64()).unwrap_or(0),
        "pages": pages,
    }))
}
