//! What the fuzz targets (fuzz/, scripts/fuzz.sh) found in the query path, each kept as a
//! test on the real engine with its right answer worked out by hand. (Findings in pure
//! functions are unit tests beside them: `core::intake`, `core::processor::page`.)

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value};
use sightline_core::event::RawEvent;
use sightline_core::processor::session::SessionState;
use sightline_core::processor::{process, ProcessorConfig};
use sightline_core::spec::{parse_tenants, Tenant};
use sightline_core::warehouse::embedded::Embedded;
use sightline_core::warehouse::{ops, tiers, Warehouse};
use sightline_query::execute::{self, Storage};
use sightline_query::model::parse_query;
use sightline_query::Limits;
use uuid::Uuid;

const TENANT: &str = r#"
apiVersion: sightline.dev/v1alpha1
kind: AnalyticsTenant
metadata: { name: findings }
spec:
  defaultTimezone: UTC
  sites:
    allowed:
      - id: shop.example
"#;

const IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
const WINDOWS: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, hour, 0, 0).unwrap()
}

fn pageview(n: u64, ts: DateTime<Utc>, visitor: u64, agent: &str) -> RawEvent {
    RawEvent {
        event_id: Uuid::from_u64_pair(0xf0, n),
        site_id: "shop.example".into(),
        received_at: ts,
        ts,
        name: "pageview".into(),
        url: "https://shop.example/".into(),
        referrer: String::new(),
        user_agent: agent.into(),
        props: BTreeMap::new(),
        revenue_amount: String::new(),
        revenue_currency: String::new(),
        visitor_id: visitor,
        country: "DE".into(),
        ingest_source: "web".into(),
        prev_day_visitor_id: 0,
        interactive: true,
    }
}

/// The engine with `raws` stored (processed as a loader would) and the tiers built as of
/// 2026-11-24 (the quarter-hour tier holds every day).
async fn engine(dir: &std::path::Path, raws: &[RawEvent]) -> (Embedded, Tenant) {
    let wh = Embedded::open(&dir.join("engine"), 1).unwrap();
    let tenant = parse_tenants(TENANT, "test").unwrap().remove(0);
    ops::apply_schema(&wh, &tenant).await.unwrap();
    let mut sessions = SessionState::default();
    let events: Vec<_> = raws
        .iter()
        .map(|r| process(r, ProcessorConfig { bot_filtering: true }, &mut sessions))
        .collect();
    ops::insert_raw_and_events(&wh, &tenant.database(), raws, &events)
        .await
        .unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
    tiers::migrate_recent_days(&wh, &tenant, now).await.unwrap();
    tiers::backfill(&wh, &tenant, now).await.unwrap();
    (wh, tenant)
}

/// The answer's rows (dimensions, metrics) on the path and tier `body` names.
async fn rows(wh: &dyn Warehouse, tenant: &Tenant, body: &Value) -> Vec<(Vec<Value>, Vec<Value>)> {
    let now = Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap();
    let query = parse_query(body, &tenant.spec, now).unwrap();
    let state = tiers::read_state(wh, &tenant.database()).await.unwrap();
    let hold: execute::Hold = std::sync::Arc::new(());
    let answer = execute::run(
        wh,
        tenant,
        &Storage::new(tenant, state),
        &query,
        &Limits::default(),
        &hold,
        None,
    )
    .await
    .unwrap_or_else(|e| panic!("{body}: {e:?}"));
    answer.rows.into_iter().map(|r| (r.dimensions, r.metrics)).collect()
}

fn with(base: &Value, extra: Value) -> Value {
    let mut b = base.clone();
    b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    b
}

/// Found by the differential target: with `order_by` on a key that rows tie on (the OS,
/// for a series by day and OS), the engine returned the tied rows in any order, so the
/// events path and a tier (and two runs of one query) gave different orders and different
/// pages. Rows now come ordered by the client's keys, then by every other dimension.
#[tokio::test(flavor = "multi_thread")]
async fn rows_that_tie_on_the_clients_order_come_in_one_order_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    // iOS on the 10th, 11th and 12th; Windows on the 11th. Visitors differ per day.
    let raws = [
        pageview(1, at(12, 9), 12, IPHONE),
        pageview(2, at(10, 9), 10, IPHONE),
        pageview(3, at(11, 9), 11, IPHONE),
        pageview(4, at(11, 15), 21, WINDOWS),
    ];
    let (wh, tenant) = engine(dir.path(), &raws).await;
    let base = json!({"site_id": "shop.example", "metrics": ["pageviews"],
        "date_range": ["2026-11-10", "2026-11-12"], "dimensions": ["time:day", "os"],
        "order_by": [["os", "asc"]]});
    let row = |day: &str, os: &str| (vec![json!(day), json!(os)], vec![json!(1)]);
    // Byte order: "Windows" before "iOS"; the iOS rows tie, and come in date order.
    let all = vec![
        row("2026-11-11", "Windows"),
        row("2026-11-10", "iOS"),
        row("2026-11-11", "iOS"),
        row("2026-11-12", "iOS"),
    ];
    for path in [
        json!({"path": "events"}),
        json!({"path": "rollup", "tier": "quarter_hour"}),
    ] {
        let body = with(&base, path.clone());
        assert_eq!(rows(&wh, &tenant, &body).await, all, "{path}");
        // The second page of two: the same rows on every path.
        let page = with(&body, json!({"pagination": {"limit": 2, "offset": 2}}));
        assert_eq!(rows(&wh, &tenant, &page).await, all[2..4].to_vec(), "{path}");
        // Descending by OS: the iOS days first, still in date order, then Windows.
        let desc = with(&body, json!({"order_by": [["os", "desc"]]}));
        let mut expected = all[1..].to_vec();
        expected.push(all[0].clone());
        assert_eq!(rows(&wh, &tenant, &desc).await, expected, "{path}");
    }
}
