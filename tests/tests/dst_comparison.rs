//! Comparisons across a DST change, through the query API: an hourly series of a 23-hour day
//! compared with the day before matches buckets by local clock time (Sunday 10:00 with
//! Saturday 10:00), an hour the earlier day's clock skipped gives a null comparison that
//! `meta.comparison_buckets` names, and a 25-hour day keeps its clock hours too.
//!
//! The collector takes events at most 72 hours old, and most days of the year have no DST
//! change that close, so the events are stored the way the loader stores them (the same
//! `store_batch`) into ClickHouse over HTTP (the test front over libchdb), at dates chosen
//! relative to today: the latest day in the last year on which the zone's clock skipped an
//! hour, and the latest on which it repeated one. Every run thus exercises both kinds of
//! change whatever the date; `sightline query` answers over that warehouse. The matching
//! rule itself is unit-tested with fixed dates (2026-03-29 and 2026-10-25 in Berlin, Lord
//! Howe's half-hour shift) in `query/src/buckets.rs`.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde_json::{json, Value};
use sightline_core::event::RawEvent;
use sightline_core::processor::Current;
use sightline_core::spec::parse_tenants;
use sightline_core::warehouse::http::{Http, HttpConfig};
use sightline_core::warehouse::live::LiveSessions;
use sightline_core::warehouse::ops;
use sightline_ingest::loader::store::store_batch;
use sightline_tests::clickhouse_front::ClickHouseFront;
use sightline_tests::*;

const SITE: &str = "shop.example.com";

/// Zones tried in order; the first whose clock changed both ways in the last year is used
/// (Berlin today; the others keep the test meaningful should the EU drop DST).
const ZONES: [&str; 3] = ["Europe/Berlin", "America/New_York", "Australia/Sydney"];

fn day_start(tz: Tz, day: NaiveDate) -> DateTime<Utc> {
    (0..3)
        .find_map(|h| tz.from_local_datetime(&day.and_hms_opt(h, 0, 0)?).earliest())
        .expect("a day has an early hour")
        .with_timezone(&Utc)
}

fn hours_of(tz: Tz, day: NaiveDate) -> i64 {
    (day_start(tz, day + Days::new(1)) - day_start(tz, day)).num_hours()
}

/// The latest day in the last 365 whose length in `tz` is `hours`.
fn latest_day_of(tz: Tz, hours: i64) -> Option<NaiveDate> {
    let today = Utc::now().with_timezone(&tz).date_naive();
    (1..=365)
        .map(|back| today - Days::new(back))
        .find(|d| hours_of(tz, *d) == hours)
}

/// A local time of `day` in `tz` (the first of two when the clock repeats it).
fn at(tz: Tz, day: NaiveDate, hour: u32, minute: u32) -> DateTime<Utc> {
    tz.from_local_datetime(&day.and_hms_opt(hour, minute, 0).unwrap())
        .earliest()
        .unwrap_or_else(|| panic!("{day} {hour}:{minute} does not exist in {tz}"))
        .with_timezone(&Utc)
}

/// `n` pageviews at `ts`, each by another visitor.
fn pageviews(ts: DateTime<Utc>, n: usize, next_visitor: &mut u64) -> Vec<RawEvent> {
    (0..n)
        .map(|_| {
            *next_visitor += 1;
            RawEvent {
                event_id: uuid::Uuid::new_v4(),
                site_id: SITE.into(),
                received_at: ts,
                ts,
                name: "pageview".into(),
                url: format!("https://{SITE}/"),
                referrer: String::new(),
                user_agent: CHROME_MAC.into(),
                props: BTreeMap::new(),
                revenue_amount: String::new(),
                revenue_currency: String::new(),
                visitor_id: *next_visitor,
                prev_day_visitor_id: 0,
                country: String::new(),
                ingest_source: "web".into(),
                interactive: true,
            }
        })
        .collect()
}

struct Api {
    server: Server,
    token: String,
    tz: Tz,
}

impl Api {
    /// An hourly (or other) series of pageviews over `[from, to]`, compared.
    async fn compared(&self, from: NaiveDate, to: NaiveDate, interval: &str) -> Value {
        let r = client()
            .post(self.server.url("/v1/query"))
            .bearer_auth(&self.token)
            .json(&json!({
                "site_id": SITE,
                "metrics": ["pageviews"],
                "date_range": [from.to_string(), to.to_string()],
                "timezone": self.tz.name(),
                "dimensions": [format!("time:{interval}")],
                "compare": "previous_period",
            }))
            .send()
            .await
            .expect("query");
        assert_eq!(r.status(), 200);
        r.json().await.expect("json")
    }
}

/// The row of bucket `label`: (pageviews, comparison pageviews, change).
fn bucket(v: &Value, label: &str) -> (Value, Value, Value) {
    let row = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["dimensions"][0] == label)
        .unwrap_or_else(|| panic!("no bucket {label} in {v}"));
    (
        row["metrics"][0].clone(),
        row["comparison"]["metrics"][0].clone(),
        row["comparison"]["change"][0].clone(),
    )
}

fn hour(day: NaiveDate, h: u32) -> String {
    format!("{day} {h:02}:00:00")
}

#[tokio::test(flavor = "multi_thread")]
async fn hourly_comparisons_match_buckets_by_local_clock_across_dst() {
    let (tz, spring, autumn) = ZONES
        .iter()
        .map(|z| z.parse::<Tz>().unwrap())
        .find_map(|tz| Some((tz, latest_day_of(tz, 23)?, latest_day_of(tz, 25)?)))
        .expect("one of the zones changed its clock both ways in the last year");
    // The hour the spring change skips and the autumn change repeats, in this zone.
    let skipped = (0..24)
        .find(|h| {
            tz.from_local_datetime(&spring.and_hms_opt(*h, 0, 0).unwrap())
                .earliest()
                .is_none()
        })
        .expect("the short day skips an hour");
    let repeated = (0..24)
        .find(|h| {
            matches!(
                tz.from_local_datetime(&autumn.and_hms_opt(*h, 30, 0).unwrap()),
                chrono::LocalResult::Ambiguous(..)
            )
        })
        .expect("the long day repeats an hour");

    let (dir, data, tenants) = fixture();
    let front = ClickHouseFront::start(&dir.path().join("clickhouse"), None).await;
    let wh = Http::new(&HttpConfig {
        url: front.url(),
        user: None,
        password: None,
        compression: true,
    });
    let tenant = parse_tenants(TENANTS_YAML, "test")
        .unwrap()
        .into_iter()
        .find(|t| t.name == "acme")
        .unwrap();
    ops::apply_schema(&wh, &tenant).await.unwrap();

    // Around the short day: the day before has every hour, the short day skips `skipped`,
    // the day after has every hour again. Counts differ per hour so a wrong match shows.
    let saturday = spring - Days::new(1);
    let monday = spring + Days::new(1);
    let mut visitor = 0;
    let mut batch = Vec::new();
    for (day, h, n) in [
        (saturday, skipped - 1, 1),
        (saturday, skipped, 2),
        (saturday, skipped + 1, 3),
        (saturday, 10, 4),
        (spring, skipped - 1, 5),
        (spring, skipped + 1, 6),
        (spring, 10, 7),
        (monday, skipped, 8),
        (monday, 10, 9),
    ] {
        batch.extend(pageviews(at(tz, day, h, 15), n, &mut visitor));
    }
    // Around the long day: the repeated hour holds events of both passes of the clock.
    let before_autumn = autumn - Days::new(1);
    let first_pass = at(tz, autumn, repeated, 20);
    let second_pass = first_pass + chrono::Duration::hours(1);
    assert_eq!(
        second_pass.with_timezone(&tz).date_naive(),
        autumn,
        "the second pass is the same local hour"
    );
    batch.extend(pageviews(at(tz, before_autumn, repeated, 15), 2, &mut visitor));
    batch.extend(pageviews(at(tz, before_autumn, 10, 15), 1, &mut visitor));
    batch.extend(pageviews(first_pass, 3, &mut visitor));
    batch.extend(pageviews(second_pass, 4, &mut visitor));
    batch.extend(pageviews(at(tz, autumn, 10, 15), 5, &mut visitor));
    let mut sessions = LiveSessions::start(&wh, &tenant, std::sync::Arc::new(Current))
        .await
        .unwrap();
    store_batch(&wh, &tenant, &mut sessions, &batch, &HashSet::new())
        .await
        .unwrap();

    let url = front.url();
    let server = Server::start_role("query", &data, &tenants, &["--clickhouse-url", url.as_str()]);
    let api = Api {
        server,
        token: read_token("acme", SITE),
        tz,
    };

    // The short day against the day before: each hour with the same clock hour.
    let v = api.compared(spring, spring, "hour").await;
    assert_eq!(v["results"].as_array().unwrap().len(), 23, "{v}");
    assert_eq!(bucket(&v, &hour(spring, 10)), (json!(7), json!(4), json!(75)));
    assert_eq!(bucket(&v, &hour(spring, skipped + 1)), (json!(6), json!(3), json!(100)));
    assert_eq!(bucket(&v, &hour(spring, skipped - 1)), (json!(5), json!(1), json!(400)));
    // An hour with nothing on either day compares with zero, not null.
    assert_eq!(bucket(&v, &hour(spring, 20)), (json!(0), json!(0), Value::Null));
    assert_eq!(
        v["meta"]["comparison_buckets"],
        json!({"match": "day_offset_and_local_hour", "without_counterpart": [], "without_counterpart_gets": "null"})
    );
    assert_eq!(v["meta"]["comparison_date_range"]["from"], saturday.to_string());

    // The day after against the short day: the skipped hour has no counterpart.
    let v = api.compared(monday, monday, "hour").await;
    assert_eq!(v["results"].as_array().unwrap().len(), 24, "{v}");
    assert_eq!(bucket(&v, &hour(monday, skipped)), (json!(8), Value::Null, Value::Null));
    assert_eq!(bucket(&v, &hour(monday, 10)), (json!(9), json!(7), json!(29)));
    assert_eq!(
        v["meta"]["comparison_buckets"]["without_counterpart"],
        json!([hour(monday, skipped)])
    );

    // Two days over the change: matched by day offset and clock hour, not by position.
    let v = api.compared(spring, monday, "hour").await;
    assert_eq!(v["results"].as_array().unwrap().len(), 47, "{v}");
    assert_eq!(bucket(&v, &hour(monday, 10)), (json!(9), json!(4), json!(125)));
    assert_eq!(bucket(&v, &hour(monday, skipped)), (json!(8), json!(2), json!(300)));
    assert_eq!(v["meta"]["comparison_buckets"]["without_counterpart"], json!([]));

    // Daily buckets match by their offset in days.
    let v = api.compared(spring, monday, "day").await;
    assert_eq!(bucket(&v, &spring.to_string()), (json!(18), json!(0), Value::Null));
    assert_eq!(bucket(&v, &monday.to_string()), (json!(17), json!(10), json!(70)));
    assert_eq!(v["meta"]["comparison_buckets"]["match"], "day_offset");

    // The long day: the repeated hour is one bucket holding both passes, compared with the
    // same clock hour of the day before.
    let v = api.compared(autumn, autumn, "hour").await;
    assert_eq!(v["results"].as_array().unwrap().len(), 24, "{v}");
    assert_eq!(bucket(&v, &hour(autumn, repeated)), (json!(7), json!(2), json!(250)));
    assert_eq!(bucket(&v, &hour(autumn, 10)), (json!(5), json!(1), json!(400)));
    assert_eq!(v["meta"]["comparison_buckets"]["without_counterpart"], json!([]));
}
