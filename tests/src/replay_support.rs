//! Replay tests' shared parts: a dataset over three UTC days (visits across midnight,
//! referrers, bots), a deliberately buggy processor, ingestion through the live writers'
//! path, and checksums of `events` and every tier.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sightline_core::event::{Event, RawEvent};
use sightline_core::processor::session::SessionState;
use sightline_core::processor::{identity, process, Processor, ProcessorConfig};
use sightline_core::schema;
use sightline_core::spec::{parse_tenants, Tenant};
use sightline_core::warehouse::live::LiveSessions;
use sightline_core::warehouse::{ops, tiers, Params, Warehouse};
use uuid::Uuid;

use crate::{CHROME_MAC, GOOGLEBOT};

/// The three UTC days of the dataset.
pub fn days() -> [NaiveDate; 3] {
    let d = |n| NaiveDate::from_ymd_opt(2026, 11, n).unwrap();
    [d(10), d(11), d(12)]
}

/// A clock at which those days are long sealed.
pub fn later() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 20, 12, 0, 0).unwrap()
}

/// A tenant with a Berlin site and a UTC one, as an AnalyticsTenant document (for a tenants
/// file the binary reads).
pub fn tenant_yaml(name: &str) -> String {
    format!(
        "apiVersion: sightline.dev/v1alpha1\nkind: AnalyticsTenant\nmetadata: {{name: {name}}}\n\
         spec: {{sites: {{allowed: [{{id: shop.example.com, timezone: Europe/Berlin}}, {{id: blog.example.com}}]}}}}\n"
    )
}

/// The tenant of `tenant_yaml`.
pub fn tenant(name: &str) -> Tenant {
    parse_tenants(&tenant_yaml(name), "test").unwrap().remove(0)
}

fn visitor_id(person: u64, day: NaiveDate) -> u64 {
    person * 1_000_003 + u64::from(day.format("%j").to_string().parse::<u32>().unwrap())
}

const REFERRERS: [&str; 4] = [
    "https://www.google.com/",
    "https://news.ycombinator.com/item?id=1",
    "",
    "https://t.co/x",
];

/// About 1,500 events over `days()`: per day and person, one to three visits of one to
/// six events; some visits start just before midnight and continue into the next day;
/// every seventh person is Googlebot.
pub fn dataset(seed: u64) -> Vec<RawEvent> {
    let mut rng = StdRng::seed_from_u64(seed);
    let sites = ["shop.example.com", "blog.example.com"];
    let end = days()[2].succ_opt().unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let mut out = Vec::new();
    let mut n = 0u64;
    for day in days() {
        for person in 1..=40u64 {
            let site = sites[(person % 2) as usize];
            let start = day.and_hms_opt(0, 0, 0).unwrap().and_utc();
            let mut ts = if person % 5 == 0 {
                start + Duration::minutes(23 * 60 + 35 + rng.random_range(0..20))
            } else {
                start + Duration::minutes(rng.random_range(0..(23 * 60)))
            };
            let agent = if person % 7 == 0 { GOOGLEBOT } else { CHROME_MAC };
            for _visit in 0..rng.random_range(1..=3) {
                let referrer = REFERRERS[rng.random_range(0..REFERRERS.len())];
                for i in 0..rng.random_range(1..=6) {
                    if ts >= end {
                        break;
                    }
                    let own_day = ts.date_naive();
                    let midnight = own_day.and_hms_opt(0, 0, 0).unwrap().and_utc();
                    let prev = if ts < midnight + Duration::minutes(30) && own_day > days()[0] {
                        visitor_id(person, own_day.pred_opt().unwrap())
                    } else {
                        0
                    };
                    n += 1;
                    out.push(RawEvent {
                        event_id: Uuid::from_u64_pair(seed, n),
                        site_id: site.into(),
                        received_at: ts,
                        ts,
                        name: "pageview".into(),
                        url: format!("https://{site}/p{}", rng.random_range(0..6)),
                        referrer: if i == 0 {
                            referrer.into()
                        } else {
                            format!("https://{site}/")
                        },
                        user_agent: agent.into(),
                        props: BTreeMap::new(),
                        revenue_amount: String::new(),
                        revenue_currency: String::new(),
                        visitor_id: visitor_id(person, own_day),
                        country: "DE".into(),
                        ingest_source: "web".into(),
                        prev_day_visitor_id: prev,
                        interactive: true,
                    });
                    ts += Duration::seconds(rng.random_range(20..900));
                }
                ts += Duration::minutes(rng.random_range(35..90));
            }
        }
    }
    out
}

/// Version 2 of the processor, with two bugs: Hacker News referrals are taken for Google
/// searches, and bots are counted as people.
pub struct Buggy;

impl Processor for Buggy {
    fn version(&self) -> u32 {
        2
    }

    fn process(&self, raw: &RawEvent, config: ProcessorConfig, sessions: &mut SessionState) -> Event {
        let mut raw = raw.clone();
        if raw.referrer.contains("news.ycombinator.com") {
            raw.referrer = "https://www.google.com/".into();
        }
        let mut event = process(&raw, ProcessorConfig { bot_filtering: false }, sessions);
        event.pipeline_version = 2;
        event.processing = identity(2, config);
        event
    }
}

/// A tenant's schema on the tiers, ready for writers.
pub async fn prepare(wh: &dyn Warehouse, tenant: &Tenant) {
    ops::apply_schema(wh, tenant).await.unwrap();
    tiers::migrate_recent_days(wh, tenant, later()).await.unwrap();
}

/// Stores `events` as a live writer does (in time order, batches of 50), with `processor`,
/// then seals the days into the daily tier.
pub async fn ingest(wh: &dyn Warehouse, tenant: &Tenant, processor: Arc<dyn Processor>, events: &[RawEvent]) {
    let mut events = events.to_vec();
    events.sort_by_key(|e| (e.ts, e.event_id));
    let mut live = LiveSessions::start(wh, tenant, processor).await.unwrap();
    for batch in events.chunks(50) {
        let refs: Vec<&RawEvent> = batch.iter().collect();
        let processed = live.process(wh, &refs).await.unwrap();
        ops::insert_raw_and_events(wh, &tenant.database(), batch, &processed.rows)
            .await
            .unwrap();
    }
    tiers::seal(wh, tenant, later()).await.unwrap();
}

/// Per table, (rows, checksum): `events` row by row (every column that processing
/// decides), the tiers by their finalized values.
pub async fn checksums(wh: &dyn Warehouse, db: &str) -> Vec<(String, u64, u64)> {
    let visitors = schema::visitors_merge("visitors");
    let sums = "toInt64(sum(visits)) AS a, toInt64(sum(pageviews)) AS b, toInt64(sum(events)) AS c, \
                toInt64(sum(bounces)) AS d, toInt64(sum(duration)) AS e";
    let statements = [
        (
            "events".to_string(),
            format!(
                "SELECT count() AS n, sum(cityHash64(site_id, event_id, ts, visitor_id, session_id, session_start, visit_delta, \
                 bounce_delta, duration_delta, entry_page, session_source, session_medium, pathname, referrer_source, \
                 referrer_medium, is_bot, browser, device, processing, pipeline_version, sign)) AS h FROM {db}.events"
            ),
        ),
        (
            "rollup_site_15m".into(),
            format!(
                "SELECT count() AS n, sum(cityHash64(site_id, bucket, v, a, b, c, d, e)) AS h FROM \
                 (SELECT site_id, bucket, {visitors} AS v, {sums} FROM {db}.rollup_site_15m GROUP BY site_id, bucket)"
            ),
        ),
        (
            "rollup_dims_15m".into(),
            format!(
                "SELECT count() AS n, sum(cityHash64(site_id, bucket, dimension, value, v, a, b, c, d, e)) AS h FROM \
                 (SELECT site_id, bucket, dimension, value, {visitors} AS v, {sums} FROM {db}.rollup_dims_15m \
                  GROUP BY site_id, bucket, dimension, value)"
            ),
        ),
        (
            "rollup_site_daily".into(),
            format!(
                "SELECT count() AS n, sum(cityHash64(site_id, day, v, a, b, c, d, e)) AS h FROM \
                 (SELECT site_id, day, {visitors} AS v, {sums} FROM {db}.rollup_site_daily GROUP BY site_id, day)"
            ),
        ),
        (
            "rollup_dims_daily".into(),
            format!(
                "SELECT count() AS n, sum(cityHash64(site_id, day, dimension, value, v, a, b, c, d, e)) AS h FROM \
                 (SELECT site_id, day, dimension, value, {visitors} AS v, {sums} FROM {db}.rollup_dims_daily \
                  GROUP BY site_id, day, dimension, value)"
            ),
        ),
    ];
    let mut out = Vec::new();
    for (table, sql) in statements {
        let rows = wh.select(&sql, &Params::new()).await.unwrap();
        out.push((
            table,
            rows[0]["n"].as_u64().unwrap(),
            rows[0]["h"].as_u64().unwrap_or(0),
        ));
    }
    out
}
