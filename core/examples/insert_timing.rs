//! Times the pieces of one group commit against the embedded engine (diagnostics):
//! `cargo run --release -p sightline-core --example insert_timing`.
use std::collections::BTreeMap;
use std::time::Instant;

use chrono::Utc;
use sightline_core::event::RawEvent;
use sightline_core::processor::session::SessionState;
use sightline_core::processor::{process, ProcessorConfig};
use sightline_core::schema;
use sightline_core::spec::parse_tenants;
use sightline_core::warehouse::embedded::Embedded;
use sightline_core::warehouse::{ops, rowbinary, InsertFormat, Params, Warehouse};

#[tokio::main]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Embedded::open(&dir.path().join("e"), 1).unwrap();
    let tenant = parse_tenants(
        "apiVersion: sightline.dev/v1alpha1\nkind: AnalyticsTenant\nmetadata: {name: t}\nspec: {sites: {open: true}}\n",
        "x",
    )
    .unwrap()
    .remove(0);
    ops::apply_schema(&wh, &tenant).await.unwrap();
    let db = tenant.database();
    for n in [32usize, 1000] {
        let raws: Vec<RawEvent> = (0..n)
            .map(|i| RawEvent {
                event_id: uuid::Uuid::now_v7(),
                site_id: "s".into(),
                received_at: Utc::now(),
                ts: Utc::now(),
                name: "pageview".into(),
                url: format!("https://s.example/p/{i}"),
                referrer: "https://www.google.com/".into(),
                user_agent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36".into(),
                props: BTreeMap::new(),
                revenue_amount: String::new(),
                revenue_currency: String::new(),
                visitor_id: i as u64 % 50,
                country: "DE".into(),
                ingest_source: "web".into(),
                prev_day_visitor_id: 0,
                interactive: true,
            })
            .collect();
        let mut st = SessionState::default();
        let events: Vec<_> = raws
            .iter()
            .map(|r| process(r, ProcessorConfig { bot_filtering: true }, &mut st))
            .collect();
        let raw_rows = rowbinary::encode(&raws);
        let ev_rows = rowbinary::encode(&events);
        let time = |label: String, ms: f64| println!("{label}: {ms:.2} ms");
        let t = Instant::now();
        for _ in 0..10 {
            wh.insert(
                &format!("{db}.events_raw"),
                schema::RAW_COLUMNS,
                InsertFormat::RowBinary,
                raw_rows.clone(),
            )
            .await
            .unwrap();
        }
        time(format!("{n} rows into events_raw"), t.elapsed().as_secs_f64() * 100.0);
        let t = Instant::now();
        for _ in 0..10 {
            wh.insert(
                &format!("{db}.events"),
                schema::EVENT_COLUMNS,
                InsertFormat::RowBinary,
                ev_rows.clone(),
            )
            .await
            .unwrap();
        }
        time(
            format!("{n} rows into events (+2 views)"),
            t.elapsed().as_secs_f64() * 100.0,
        );
        wh.execute(
            &format!("CREATE TABLE IF NOT EXISTS {db}.events_noview AS {db}.events"),
            &Params::new(),
        )
        .await
        .unwrap();
        let t = Instant::now();
        for _ in 0..10 {
            wh.insert(
                &format!("{db}.events_noview"),
                schema::EVENT_COLUMNS,
                InsertFormat::RowBinary,
                ev_rows.clone(),
            )
            .await
            .unwrap();
        }
        time(
            format!("{n} rows into events without views"),
            t.elapsed().as_secs_f64() * 100.0,
        );
    }
}
