//! The rollup tiers on the real engine: every tier answers what the events path answers, for
//! every metric and dimension of a dataset around a DST change and month ends, in a
//! whole-hour zone and in Asia/Kolkata (+05:30), in the site's zone and in others, over
//! ranges of whole and partial months; a rebuild of any day (quarter-hour tier) or month
//! (daily and monthly tiers) gives identical rows; a replayed UTC day reaches the months it
//! touches; a database of the hourly layout moves onto the tiers with no count lost or
//! doubled while queries keep answering; and one sealed before the monthly tier gains it.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use serde_json::{json, Value};
use sightline_core::event::{Event, RawEvent};
use sightline_core::processor::session::SessionState;
use sightline_core::processor::{process, ProcessorConfig};
use sightline_core::schema::{self, Tier};
use sightline_core::spec::{parse_tenants, Tenant};
use sightline_core::warehouse::embedded::Embedded;
use sightline_core::warehouse::tiers::{self, Backfill, Layout, StorageState};
use sightline_core::warehouse::{ops, replay, InsertFormat, Params, Warehouse};
use sightline_query::execute::{self, Storage};
use sightline_query::merges::SealedMerges;
use sightline_query::model::parse_query;
use sightline_query::Limits;
use uuid::Uuid;

const TENANT: &str = r#"
apiVersion: sightline.dev/v1alpha1
kind: AnalyticsTenant
metadata: { name: tiers }
spec:
  defaultTimezone: Europe/Berlin
  sites:
    allowed:
      - id: berlin.example
      - id: kolkata.example
        timezone: Asia/Kolkata
"#;

const AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
];
const REFERRERS: [&str; 5] = [
    "",
    "https://www.google.com/",
    "https://t.co/x",
    "https://news.example.org/a",
    "https://mail.google.com/",
];
const PAGES: [&str; 6] = ["/", "/pricing", "/blog/a", "/blog/b", "/checkout", "/caf%C3%A9"];

fn tenant() -> Tenant {
    parse_tenants(TENANT, "test").unwrap().remove(0)
}

/// A deterministic pseudo-random sequence (no dependency, the same on every run).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// Visits of both sites from `first` through `last` (UTC days), many of them near each
/// site's local midnight and hour boundaries; processed as the loaders would.
fn dataset(first: NaiveDate, last: NaiveDate) -> (Vec<RawEvent>, Vec<Event>) {
    let mut rng = Lcg(7);
    let mut raws = Vec::new();
    let mut day = first;
    while day <= last {
        let midnight = day.and_hms_opt(0, 0, 0).unwrap().and_utc();
        for site in ["berlin.example", "kolkata.example"] {
            for v in 0..30u64 {
                // Half the visits start within an hour of a local midnight (22:00-00:00 UTC
                // for Berlin, 18:00-19:00 UTC for Kolkata), the rest anywhere.
                let start = if v % 2 == 0 {
                    let local_midnight = if site == "berlin.example" {
                        22 * 60
                    } else {
                        18 * 60 + 30
                    };
                    midnight + Duration::minutes(local_midnight - 40 + rng.next(80) as i64)
                } else {
                    midnight + Duration::minutes(rng.next(24 * 60) as i64)
                };
                let visitor = 1 + rng.next(40) + if site == "berlin.example" { 0 } else { 1000 };
                let agent = AGENTS[rng.next(4) as usize];
                let referrer = REFERRERS[rng.next(5) as usize];
                let campaign = if rng.next(4) == 0 {
                    "?utm_source=newsletter&utm_medium=email&utm_campaign=autumn"
                } else {
                    ""
                };
                let pages = 1 + rng.next(4);
                for p in 0..pages {
                    let ts = start + Duration::seconds(p as i64 * (30 + rng.next(600) as i64));
                    raws.push(RawEvent {
                        event_id: Uuid::from_u64_pair(rng.next(u64::MAX), rng.next(u64::MAX) | 1),
                        site_id: site.into(),
                        received_at: ts,
                        ts,
                        name: if rng.next(5) == 0 {
                            "signup".into()
                        } else {
                            "pageview".into()
                        },
                        url: format!(
                            "https://{site}{}{}",
                            PAGES[rng.next(6) as usize],
                            if p == 0 { campaign } else { "" }
                        ),
                        referrer: if p == 0 {
                            referrer.into()
                        } else {
                            format!("https://{site}/")
                        },
                        user_agent: agent.into(),
                        props: BTreeMap::new(),
                        revenue_amount: String::new(),
                        revenue_currency: String::new(),
                        visitor_id: visitor * 100_000 + day.ordinal() as u64,
                        country: ["DE", "IN", "US", ""][rng.next(4) as usize].into(),
                        ingest_source: "web".into(),
                        prev_day_visitor_id: 0,
                        interactive: true,
                    });
                }
            }
        }
        day = day.succ_opt().unwrap();
    }
    raws.sort_by_key(|r| (r.ts, r.event_id));
    let config = ProcessorConfig { bot_filtering: true };
    let mut sessions = SessionState::default();
    let events = raws.iter().map(|r| process(r, config, &mut sessions)).collect();
    (raws, events)
}

async fn store(wh: &dyn Warehouse, tenant: &Tenant, raws: &[RawEvent], events: &[Event]) {
    for (r, e) in raws.chunks(2000).zip(events.chunks(2000)) {
        ops::insert_raw_and_events(wh, &tenant.database(), r, e).await.unwrap();
    }
}

/// The answer rows of a query body for the site, on the path and tier given in `body`.
async fn answer(wh: &dyn Warehouse, tenant: &Tenant, body: &Value) -> (Vec<(Vec<Value>, Vec<Value>)>, String) {
    let state = tiers::read_state(wh, &tenant.database()).await.unwrap();
    answer_with(wh, tenant, body, state, None).await
}

/// The same, with the sealed parts of ranges merged once and kept in `merges`.
async fn answer_merged(
    wh: &dyn Warehouse,
    tenant: &Tenant,
    body: &Value,
    merges: &SealedMerges,
) -> (Vec<(Vec<Value>, Vec<Value>)>, String) {
    let state = tiers::read_state(wh, &tenant.database()).await.unwrap();
    answer_with(wh, tenant, body, state, Some(merges)).await
}

/// The same, planned with a given storage state (as a reader that read it a moment ago).
async fn answer_with(
    wh: &dyn Warehouse,
    tenant: &Tenant,
    body: &Value,
    state: StorageState,
    merges: Option<&SealedMerges>,
) -> (Vec<(Vec<Value>, Vec<Value>)>, String) {
    let now = Utc.with_ymd_and_hms(2026, 12, 31, 0, 0, 0).unwrap();
    let query = parse_query(body, &tenant.spec, now).unwrap_or_else(|e| panic!("{body}: {e:?}"));
    let storage = Storage::new(tenant, state);
    let hold: execute::Hold = std::sync::Arc::new(());
    let answer = execute::run(wh, tenant, &storage, &query, &Limits::default(), &hold, merges)
        .await
        .unwrap_or_else(|e| panic!("{body}: {e:?}"));
    let mut rows: Vec<(Vec<Value>, Vec<Value>)> = answer
        .rows
        .iter()
        .map(|r| (r.dimensions.clone(), r.metrics.clone()))
        .collect();
    rows.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
    (rows, answer.source.tier().unwrap_or("events").to_string())
}

fn with(base: &Value, extra: Value) -> Value {
    let mut b = base.clone();
    b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    b
}

const ALL: [&str; 7] = [
    "visitors",
    "visits",
    "pageviews",
    "events",
    "bounce_rate",
    "visit_duration",
    "views_per_visit",
];

/// The queries every tier must answer like the events path: totals, series, every
/// dimension, dimension and day, in the site's zone and in two others.
fn queries(site: &str) -> Vec<Value> {
    let range = json!(["2026-10-20", "2026-11-05"]);
    let base = json!({"site_id": site, "metrics": ALL, "date_range": range});
    let mut out = vec![
        base.clone(),
        with(&base, json!({"dimensions": ["time:day"]})),
        with(&base, json!({"dimensions": ["time:week"]})),
        with(&base, json!({"dimensions": ["time:month"]})),
        with(
            &base,
            json!({"dimensions": ["time:hour"], "date_range": ["2026-10-24", "2026-10-26"]}),
        ),
    ];
    for (dim, _, session) in schema::DIMENSIONS {
        let metrics: Vec<&str> = if *session {
            ALL.to_vec()
        } else {
            vec!["visitors", "pageviews", "events"]
        };
        out.push(json!({"site_id": site, "metrics": metrics, "date_range": range, "dimensions": [dim]}));
        out.push(json!({"site_id": site, "metrics": metrics, "date_range": range, "dimensions": [dim, "time:day"]}));
    }
    for zone in ["UTC", "Asia/Kolkata", "Europe/Berlin", "America/New_York"] {
        out.push(with(&base, json!({"timezone": zone, "dimensions": ["time:day"]})));
        out.push(with(
            &base,
            json!({"timezone": zone, "dimensions": ["time:hour"], "date_range": ["2026-10-24", "2026-10-26"]}),
        ));
    }
    out
}

/// Queries over several months, whole and partial, across Berlin's DST change (October) and
/// month ends: totals and month buckets (what the monthly tier answers), every dimension
/// alone and by month, and days, weeks and other zones (what it must leave to the others).
fn long_queries(site: &str) -> Vec<Value> {
    let range = json!(["2026-09-25", "2026-12-03"]);
    let base = json!({"site_id": site, "metrics": ALL, "date_range": range});
    let mut out = vec![
        base.clone(),
        with(&base, json!({"dimensions": ["time:month"]})),
        with(&base, json!({"dimensions": ["time:day"]})),
        with(&base, json!({"dimensions": ["time:week"]})),
        with(&base, json!({"date_range": ["2026-10-01", "2026-11-30"]})),
        with(
            &base,
            json!({"date_range": ["2026-10-01", "2026-11-30"], "dimensions": ["time:month"]}),
        ),
        with(
            &base,
            json!({"date_range": ["2026-09-30", "2026-11-01"], "dimensions": ["time:month"]}),
        ),
    ];
    for (dim, _, session) in schema::DIMENSIONS {
        let metrics: Vec<&str> = if *session {
            ALL.to_vec()
        } else {
            vec!["visitors", "pageviews", "events"]
        };
        out.push(json!({"site_id": site, "metrics": metrics, "date_range": range, "dimensions": [dim]}));
        out.push(json!({"site_id": site, "metrics": metrics, "date_range": range, "dimensions": [dim, "time:month"]}));
    }
    for zone in ["UTC", "Asia/Kolkata", "Europe/Berlin"] {
        out.push(with(&base, json!({"timezone": zone, "dimensions": ["time:month"]})));
    }
    out
}

/// How many queries each tier answered when the planner chose.
#[derive(Debug, Default)]
struct Chosen {
    daily: usize,
    monthly: usize,
}

/// Every query on the events path, the quarter-hour tier and as the planner chooses (the
/// daily or monthly tier where they can); where it chose the monthly tier, the daily tier
/// forced too; and as the planner chooses with `merges` (twice: the first merges the
/// range's sealed part, the second reads that merge, or one made before, when nothing
/// swapped since). Every answer must be the events path's.
async fn assert_tiers_agree(wh: &dyn Warehouse, tenant: &Tenant, merges: &SealedMerges) -> Chosen {
    let mut chosen = Chosen::default();
    for site in ["berlin.example", "kolkata.example"] {
        for q in queries(site).into_iter().chain(long_queries(site)) {
            let (events, _) = answer(wh, tenant, &with(&q, json!({"path": "events"}))).await;
            assert!(!events.is_empty(), "{q}: no rows");
            let (quarter, tier) =
                answer(wh, tenant, &with(&q, json!({"path": "rollup", "tier": "quarter_hour"}))).await;
            assert_eq!(tier, "quarter_hour");
            assert_eq!(quarter, events, "quarter-hour tier != events path for {q}");
            let (auto, tier) = answer(wh, tenant, &q).await;
            assert_eq!(auto, events, "the planner's choice ({tier}) != events path for {q}");
            for round in ["first", "second"] {
                let (merged, merged_tier) = answer_merged(wh, tenant, &q, merges).await;
                assert_eq!(merged_tier, tier);
                assert_eq!(
                    merged, events,
                    "{tier} with merged sealed ranges ({round} query) != events path for {q}"
                );
            }
            match tier.as_str() {
                "daily" => chosen.daily += 1,
                "monthly" => {
                    chosen.monthly += 1;
                    let (daily, tier) = answer(wh, tenant, &with(&q, json!({"tier": "daily"}))).await;
                    assert_eq!(tier, "daily");
                    assert_eq!(daily, events, "daily tier != events path for {q}");
                }
                _ => {}
            }
        }
    }
    assert!(chosen.daily > 20, "the daily tier answered only {chosen:?}");
    chosen
}

/// The monthly tier's per-site rows: (site, month, through) -> (pageviews, events).
async fn month_rows(wh: &dyn Warehouse, db: &str) -> BTreeMap<(String, String, String), (i64, i64)> {
    let rows = wh
        .select(
            &format!(
                "SELECT site_id, toString(month) AS month, toString(through) AS through, sum(pageviews) AS pageviews, \
                 sum(events) AS events FROM {db}.{} GROUP BY site_id, month, through",
                Tier::Monthly.table(false)
            ),
            &Params::new(),
        )
        .await
        .unwrap();
    rows.iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap().to_string();
            (
                (text("site_id"), text("month"), text("through")),
                (r["pageviews"].as_i64().unwrap(), r["events"].as_i64().unwrap()),
            )
        })
        .collect()
}

/// The `through` versions the monthly tier holds for each site's months.
fn versions(rows: &BTreeMap<(String, String, String), (i64, i64)>, site: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (s, month, through) in rows.keys() {
        if s == site {
            out.entry(month.clone()).or_default().push(through.clone());
        }
    }
    out
}

fn strings(pairs: &[(&str, &[&str])]) -> BTreeMap<String, Vec<String>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().map(|s| s.to_string()).collect()))
        .collect()
}

/// A checksum of a tier's rows in a unit of swap, aggregated by key first (parts may not
/// have merged).
async fn checksum(wh: &dyn Warehouse, db: &str, tier: Tier, dims: bool, unit: &str) -> u64 {
    let time = match tier {
        Tier::Monthly => "month, through",
        _ => tier.time_column(),
    };
    let keys = if dims {
        format!("site_id, dimension, value, {time}")
    } else {
        format!("site_id, {time}")
    };
    let partition = tier.partition_by();
    let sql = format!(
        "SELECT groupBitXor(cityHash64({keys}, v, visits, pageviews, events, bounces, duration)) AS n FROM ( \
           SELECT {keys}, {merge} AS v, sum(visits) AS visits, sum(pageviews) AS pageviews, \
                  sum(events) AS events, sum(bounces) AS bounces, sum(duration) AS duration \
           FROM {db}.{} WHERE toString({partition}) = {{unit:String}} GROUP BY {keys})",
        tier.table(dims),
        merge = schema::visitors_merge("visitors"),
    );
    let rows = wh.select(&sql, &Params::new().bind("unit", unit)).await.unwrap();
    rows[0]["n"].as_u64().unwrap()
}

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).unwrap()
}

/// A pageview of `site` at `ts` from a browser, as the collector stores it.
fn pageview(site: &str, ts: DateTime<Utc>, visitor_id: u64, n: u64) -> RawEvent {
    RawEvent {
        event_id: Uuid::from_u64_pair(0x5eed, n),
        site_id: site.into(),
        received_at: ts,
        ts,
        name: "pageview".into(),
        url: format!("https://{site}/replayed"),
        referrer: String::new(),
        user_agent: AGENTS[0].into(),
        props: BTreeMap::new(),
        revenue_amount: String::new(),
        revenue_currency: String::new(),
        visitor_id,
        country: "DE".into(),
        ingest_source: "web".into(),
        prev_day_visitor_id: 0,
        interactive: true,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_tier_answers_what_the_events_path_answers_and_rebuilds_are_identical() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Embedded::open(&dir.path().join("engine"), 2).unwrap();
    let tenant = tenant();
    let db = tenant.database();
    ops::apply_schema(&wh, &tenant).await.unwrap();
    // Late September to early December: October (Berlin's DST change) and November whole.
    let (first, last) = (day(2026, 9, 24), day(2026, 12, 4));
    let (raws, events) = dataset(first, last);
    store(&wh, &tenant, &raws, &events).await;
    // On 2026-11-24 every day through 2026-11-19 is sealed: the database moves onto the
    // tiers at once, the daily tier through the 19th, the monthly tier through October.
    let now: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
    tiers::migrate_recent_days(&wh, &tenant, now).await.unwrap();
    tiers::backfill(&wh, &tenant, now).await.unwrap();
    let state = tiers::read_state(&wh, &db).await.unwrap();
    assert_eq!(state.layout, Layout::Tiers);
    assert_eq!(state.daily_through, Some(day(2026, 11, 19)));
    assert_eq!(state.monthly_through, Some(day(2026, 10, 31)));
    // The hourly tables go at the next writer-free start, not beside running inserts.
    assert!(tiers::hourly_layout_live(&wh, &db).await.unwrap());
    tiers::migrate_recent_days(&wh, &tenant, now).await.unwrap();
    assert!(
        !tiers::hourly_layout_live(&wh, &db).await.unwrap(),
        "the hourly tables retired"
    );

    // September and October whole, November to date (the 1st to the 19th).
    let months = month_rows(&wh, &db).await;
    let expected = strings(&[
        ("2026-09-01", &["2026-09-30"]),
        ("2026-10-01", &["2026-10-31"]),
        ("2026-11-01", &["2026-11-19"]),
    ]);
    for site in ["berlin.example", "kolkata.example"] {
        assert_eq!(versions(&months, site), expected, "{site}");
    }

    // Long ranges read September's days from the daily tier, October whole and November to
    // the 19th from the monthly tier, and the days after the 19th from the quarter-hour tier.
    // The query service's merged sealed ranges are kept across everything below: seals,
    // rebuilds and a replay must never let a merge made before them answer after them.
    let merges = SealedMerges::default();
    let chosen = assert_tiers_agree(&wh, &tenant, &merges).await;
    let fills = merges.fills().await;
    assert!(fills >= 40, "only {fills} sealed ranges merged");
    assert!(chosen.monthly >= 40, "the monthly tier answered only {chosen:?}");

    // A month later, November is sealed whole, and December to the 25th. November keeps its
    // rows to the 19th beside the whole month: a reader that planned with the state of a
    // moment before the seal still finds the rows that state names, and answers exactly.
    let before_seal = tiers::read_state(&wh, &db).await.unwrap();
    let now: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 12, 31, 0, 0, 0).unwrap();
    assert_eq!(tiers::seal(&wh, &tenant, now).await.unwrap(), Some(day(2026, 12, 25)));
    let state = tiers::read_state(&wh, &db).await.unwrap();
    assert_eq!(state.monthly_through, Some(day(2026, 11, 30)));
    let months = month_rows(&wh, &db).await;
    let expected = strings(&[
        ("2026-09-01", &["2026-09-30"]),
        ("2026-10-01", &["2026-10-31"]),
        ("2026-11-01", &["2026-11-19", "2026-11-30"]),
        ("2026-12-01", &["2026-12-25"]),
    ]);
    for site in ["berlin.example", "kolkata.example"] {
        assert_eq!(versions(&months, site), expected, "{site}");
    }
    let mut stale_monthly = 0;
    for site in ["berlin.example", "kolkata.example"] {
        for q in long_queries(site) {
            let (events, _) = answer(&wh, &tenant, &with(&q, json!({"path": "events"}))).await;
            let (rows, tier) = answer_with(&wh, &tenant, &q, before_seal.clone(), None).await;
            assert_eq!(rows, events, "planned with the state before the seal ({tier}): {q}");
            let (rows, tier) = answer_with(&wh, &tenant, &q, before_seal.clone(), Some(&merges)).await;
            assert_eq!(
                rows, events,
                "planned with the state before the seal ({tier}), merged: {q}"
            );
            stale_monthly += usize::from(tier == "monthly");
        }
    }
    assert!(stale_monthly >= 20, "only {stale_monthly} read November to date");
    let chosen = assert_tiers_agree(&wh, &tenant, &merges).await;
    assert!(chosen.monthly >= 40, "the monthly tier answered only {chosen:?}");
    assert!(
        merges.fills().await > fills,
        "the seal's new generation made new merges"
    );

    // Rebuilding any unit of swap of any tier gives the same rows.
    let mut d = first;
    while d <= last {
        let unit = d.format("%Y%m%d").to_string();
        let before = [
            checksum(&wh, &db, Tier::QuarterHour, false, &unit).await,
            checksum(&wh, &db, Tier::QuarterHour, true, &unit).await,
        ];
        assert_ne!(before, [0, 0], "{d} has rows");
        tiers::rebuild_quarter_hour_day(&wh, &tenant, d).await.unwrap();
        let after = [
            checksum(&wh, &db, Tier::QuarterHour, false, &unit).await,
            checksum(&wh, &db, Tier::QuarterHour, true, &unit).await,
        ];
        assert_eq!(before, after, "quarter-hour tier, {d}");
        d = d.succ_opt().unwrap();
    }
    let through = state.daily_through.unwrap();
    for month in ["202609", "202610", "202611", "202612"] {
        let first_of = NaiveDate::parse_from_str(&format!("{month}01"), "%Y%m%d").unwrap();
        for tier in [Tier::Daily, Tier::Monthly] {
            let before = [
                checksum(&wh, &db, tier, false, month).await,
                checksum(&wh, &db, tier, true, month).await,
            ];
            assert!(before[0] != 0 && before[1] != 0, "{tier:?} {month} has rows");
            match tier {
                Tier::Daily => tiers::rebuild_daily_month(&wh, &tenant, first_of, through).await,
                _ => tiers::rebuild_monthly_month(&wh, &tenant, first_of, through).await,
            }
            .unwrap();
            let after = [
                checksum(&wh, &db, tier, false, month).await,
                checksum(&wh, &db, tier, true, month).await,
            ];
            assert_eq!(before, after, "{tier:?} tier, {month}");
        }
    }
    assert_eq!(month_rows(&wh, &db).await, months, "the same versions, the same sums");
    // A month none of whose days the daily tier holds has no monthly rows.
    assert!(tiers::rebuild_monthly_month(&wh, &tenant, day(2027, 1, 1), through)
        .await
        .is_err());
    // The rebuilt tiers still answer like the events path.
    assert_tiers_agree(&wh, &tenant, &merges).await;

    // A replay of UTC day 2026-10-31 with three more pageviews: one at noon (October in both
    // zones), one at 20:00 UTC (November 1st in Kolkata, still October in Berlin) and one at
    // 23:30 UTC (November 1st in both). The months they fall in change, and still answer
    // like the events path.
    let replayed = day(2026, 10, 31);
    let at = |h, m| Utc.with_ymd_and_hms(2026, 10, 31, h, m, 0).unwrap();
    let more = [
        pageview("berlin.example", at(12, 0), 900_001, 1),
        pageview("kolkata.example", at(20, 0), 900_002, 2),
        pageview("berlin.example", at(23, 30), 900_003, 3),
    ];
    ops::insert_raw_and_events(&wh, &db, &more, &[]).await.unwrap();
    let before = month_rows(&wh, &db).await;
    replay::replay_day(&wh, &tenant, replayed).await.unwrap();
    let after = month_rows(&wh, &db).await;
    let change = |site: &str, month: &str, through: &str| {
        let key = (site.to_string(), month.to_string(), through.to_string());
        (after[&key].0 - before[&key].0, after[&key].1 - before[&key].1)
    };
    assert_eq!(change("berlin.example", "2026-10-01", "2026-10-31"), (1, 1));
    assert_eq!(change("berlin.example", "2026-11-01", "2026-11-30"), (1, 1));
    assert_eq!(change("berlin.example", "2026-11-01", "2026-11-19"), (1, 1));
    assert_eq!(change("kolkata.example", "2026-10-01", "2026-10-31"), (0, 0));
    assert_eq!(change("kolkata.example", "2026-11-01", "2026-11-30"), (1, 1));
    assert_eq!(change("kolkata.example", "2026-11-01", "2026-11-19"), (1, 1));
    assert_eq!(change("berlin.example", "2026-09-01", "2026-09-30"), (0, 0));
    assert_eq!(change("berlin.example", "2026-12-01", "2026-12-25"), (0, 0));
    assert_eq!(after.len(), before.len(), "no version gained or lost");
    let chosen = assert_tiers_agree(&wh, &tenant, &merges).await;
    assert!(chosen.monthly >= 40, "the monthly tier answered only {chosen:?}");

    // Merges whose rows are gone (the table emptied behind the service's back) are not
    // read as empty: the statement notices, the service forgets them and answers from the
    // tiers, and merges again.
    wh.execute(&format!("TRUNCATE TABLE {db}.{}", schema::MERGES_TABLE), &Params::new())
        .await
        .unwrap();
    assert_tiers_agree(&wh, &tenant, &merges).await;
}

/// Long breakdowns and totals of both sites through the monthly tier (October), the daily
/// tier (the September days before it) and the quarter-hour tier (after the 19th), each
/// answered twice with `merges` (merging, then reading the merge): every answer must be
/// what the tiers give without merges, and (`events`) what the events path gives.
async fn assert_merged_answers_current(
    wh: &dyn Warehouse,
    tenant: &Tenant,
    merges: &SealedMerges,
    events: bool,
    when: &str,
) {
    for site in ["berlin.example", "kolkata.example"] {
        let range = json!(["2026-09-26", "2026-11-23"]);
        let pages =
            json!({"site_id": site, "metrics": ["visitors", "pageviews"], "date_range": range, "dimensions": ["page"]});
        let totals = json!({"site_id": site, "metrics": ["visitors", "visits", "pageviews"], "date_range": range});
        for q in [pages, totals] {
            let (tiers, tier) = answer(wh, tenant, &q).await;
            assert_eq!(tier, "monthly", "{q}");
            if events {
                let (events, _) = answer(wh, tenant, &with(&q, json!({"path": "events"}))).await;
                assert_eq!(tiers, events, "{when}: the tiers != events path for {q}");
            }
            for round in ["merging", "merged"] {
                let (merged, _) = answer_merged(wh, tenant, &q, merges).await;
                assert_eq!(
                    merged, tiers,
                    "{when}: answered from a merge ({round}) != the tiers for {q}"
                );
            }
        }
    }
}

/// What a merge the query service keeps is keyed by (`StorageState::generation`) comes from
/// the engine's own parts of the daily and monthly tiers, so no merge answers after their
/// rows changed, whoever changed them and whatever the writers' clocks say: not after a
/// replay by a writer whose clock is behind the last state writer's (state writes are
/// ordered by their writers' clocks: the replay's would lose), nor after rows were dropped
/// without any writer saying so (a release that does not announce its swaps, retention, a
/// hand-made repair).
#[tokio::test(flavor = "multi_thread")]
async fn no_merged_sealed_range_answers_after_the_tiers_changed_whoever_changed_them() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Embedded::open(&dir.path().join("engine"), 2).unwrap();
    let tenant = tenant();
    let db = tenant.database();
    ops::apply_schema(&wh, &tenant).await.unwrap();
    let (raws, events) = dataset(day(2026, 9, 26), day(2026, 11, 24));
    store(&wh, &tenant, &raws, &events).await;
    let now: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
    tiers::migrate_recent_days(&wh, &tenant, now).await.unwrap();
    tiers::backfill(&wh, &tenant, now).await.unwrap();
    let merges = SealedMerges::default();
    assert_merged_answers_current(&wh, &tenant, &merges, true, "sealed").await;
    let fills = merges.fills().await;
    assert!(fills >= 4, "only {fills} sealed ranges merged");

    // Another process, whose clock runs a day ahead, states again what the state says:
    // every key now carries a version a day ahead of this process's clock.
    wh.execute(
        &format!(
            "INSERT INTO {db}.{table} (key, value, version) \
             SELECT key, argMax(value, version), max(version) + 86400000000 FROM {db}.{table} GROUP BY key",
            table = schema::STATE_TABLE
        ),
        &Params::new(),
    )
    .await
    .unwrap();
    assert_merged_answers_current(&wh, &tenant, &merges, true, "after the state was written a day ahead").await;
    // Then this process replays UTC day 2026-10-31 with three more pageviews (October in
    // both zones, November 1st in Kolkata): the months' rows change under the same state.
    let at = |h, m| Utc.with_ymd_and_hms(2026, 10, 31, h, m, 0).unwrap();
    let more = [
        pageview("berlin.example", at(12, 0), 900_001, 1),
        pageview("kolkata.example", at(20, 0), 900_002, 2),
        pageview("berlin.example", at(23, 30), 900_003, 3),
    ];
    ops::insert_raw_and_events(&wh, &db, &more, &[]).await.unwrap();
    replay::replay_day(&wh, &tenant, day(2026, 10, 31)).await.unwrap();
    assert_merged_answers_current(&wh, &tenant, &merges, true, "after the replay").await;

    // Rows dropped from the sealed tiers with no writer saying so: October's months and
    // September's days. The tiers now answer without them (the events path still has
    // them), and so must every merge.
    for (tier, partition) in [(Tier::Monthly, "202610"), (Tier::Daily, "202609")] {
        for dims in [false, true] {
            wh.execute(
                &format!("ALTER TABLE {db}.{} DROP PARTITION {partition}", tier.table(dims)),
                &Params::new(),
            )
            .await
            .unwrap();
        }
    }
    assert_merged_answers_current(&wh, &tenant, &merges, false, "after rows were dropped by hand").await;
}

/// A database a release without the monthly tier sealed (schema 6, the daily tier and its
/// state, no monthly tier) gains the tier's whole months at its next seal, which the writing
/// roles run at start and every 15 minutes: no manual step.
#[tokio::test(flavor = "multi_thread")]
async fn a_database_sealed_before_the_monthly_tier_gains_it_at_its_next_seal() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Embedded::open(&dir.path().join("engine"), 2).unwrap();
    let tenant = tenant();
    let db = tenant.database();
    ops::apply_schema_to(&wh, &tenant, 6).await.unwrap();
    let (first, last) = (day(2026, 9, 24), day(2026, 11, 7));
    let (raws, events) = dataset(first, last);
    store(&wh, &tenant, &raws, &events).await;
    // What that release's seal left, on 2026-11-24: the daily tier through 2026-11-19 and
    // the state saying so (its views fed the quarter-hour tier as the rows came in).
    let now = Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap();
    let through = tiers::daily_limit(now);
    for month in [day(2026, 9, 1), day(2026, 10, 1), day(2026, 11, 1)] {
        tiers::rebuild_daily_month(&wh, &tenant, month, through).await.unwrap();
    }
    for (n, (key, value)) in [
        ("layout_recent_migrated", "1".to_string()),
        ("layout", "tiers".to_string()),
        ("daily_timezones", tiers::timezone_fingerprint(&tenant)),
        ("daily_through", through.to_string()),
    ]
    .into_iter()
    .enumerate()
    {
        wh.execute(
            &format!("INSERT INTO {db}.storage_state (key, value, version) VALUES ({{k:String}}, {{v:String}}, {{n:UInt64}})"),
            &Params::new().bind("k", key).bind("v", value).bind("n", n as u64 + 1),
        )
        .await
        .unwrap();
    }
    let state = tiers::read_state(&wh, &db).await.unwrap();
    assert_eq!((state.daily_through, state.monthly_through), (Some(through), None));
    let long = json!({"site_id": "berlin.example", "metrics": ALL, "date_range": ["2026-09-24", "2026-11-07"], "dimensions": ["time:month"]});
    let (_, tier) = answer(&wh, &tenant, &long).await;
    assert_eq!(tier, "daily", "no monthly tier yet");

    // This release starts: migration 7 (and what follows it), then the maintenance's seal.
    assert_eq!(
        ops::apply_schema(&wh, &tenant).await.unwrap().to,
        sightline_core::schema::latest_version()
    );
    assert_eq!(tiers::seal(&wh, &tenant, now).await.unwrap(), Some(through));
    let state = tiers::read_state(&wh, &db).await.unwrap();
    assert_eq!(state.daily_through, Some(through), "the daily tier as it was");
    assert_eq!(state.monthly_through, Some(day(2026, 10, 31)));
    let expected = strings(&[
        ("2026-09-01", &["2026-09-30"]),
        ("2026-10-01", &["2026-10-31"]),
        ("2026-11-01", &["2026-11-19"]),
    ]);
    let months = month_rows(&wh, &db).await;
    for site in ["berlin.example", "kolkata.example"] {
        assert_eq!(versions(&months, site), expected, "{site}");
    }
    for site in ["berlin.example", "kolkata.example"] {
        for dimensions in [json!(["time:month"]), json!(["source"]), json!(["page", "time:month"])] {
            let q = with(&long, json!({"site_id": site, "dimensions": dimensions}));
            let q = if dimensions.to_string().contains("page") {
                with(&q, json!({"metrics": ["visitors", "pageviews", "events"]}))
            } else {
                q
            };
            let (events_path, _) = answer(&wh, &tenant, &with(&q, json!({"path": "events"}))).await;
            let (rows, tier) = answer(&wh, &tenant, &q).await;
            assert_eq!(tier, "monthly", "{q}");
            assert_eq!(rows, events_path, "{q}");
        }
    }
    // The next seal has nothing to add.
    let months = month_rows(&wh, &db).await;
    tiers::seal(&wh, &tenant, now).await.unwrap();
    assert_eq!(month_rows(&wh, &db).await, months);
}

/// Rows of `events_raw` and `events` as the release before the tiers wrote them (schema 3:
/// without the columns later migrations add).
async fn store_as_schema_3(wh: &dyn Warehouse, db: &str, raws: &[RawEvent], events: &[Event]) {
    let strip = |mut v: Value, keys: &[&str]| {
        for k in keys {
            v.as_object_mut().unwrap().remove(*k);
        }
        v
    };
    let raw_columns = "event_id, site_id, received_at, ts, name, url, referrer, user_agent, props, revenue_amount, revenue_currency, visitor_id, country, ingest_source";
    let raw_rows: Vec<Value> = raws
        .iter()
        .map(|r| {
            strip(
                serde_json::to_value(r).unwrap(),
                &["prev_day_visitor_id", "interactive"],
            )
        })
        .collect();
    wh.insert(
        &format!("{db}.events_raw"),
        raw_columns,
        InsertFormat::JsonEachRow,
        ops::json_each_row(&raw_rows).unwrap(),
    )
    .await
    .unwrap();
    let event_columns = schema::EVENT_COLUMNS.trim_end_matches(", interactive, sign, processing");
    assert_ne!(
        event_columns,
        schema::EVENT_COLUMNS,
        "the columns of later migrations are left out"
    );
    let event_rows: Vec<Value> = events
        .iter()
        .map(|e| strip(serde_json::to_value(e).unwrap(), &["interactive", "sign", "processing"]))
        .collect();
    wh.insert(
        &format!("{db}.events"),
        event_columns,
        InsertFormat::JsonEachRow,
        ops::json_each_row(&event_rows).unwrap(),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_of_the_hourly_layout_moves_onto_the_tiers_while_queries_answer() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Embedded::open(&dir.path().join("engine"), 2).unwrap();
    let tenant = tenant();
    let db = tenant.database();
    // What the release before the tiers left: schema 3, the hourly rollups, data in them.
    ops::apply_schema_to(&wh, &tenant, 3).await.unwrap();
    let (first, last) = (
        NaiveDate::from_ymd_opt(2026, 10, 18).unwrap(),
        NaiveDate::from_ymd_opt(2026, 11, 7).unwrap(),
    );
    let (raws, events) = dataset(first, last);
    store_as_schema_3(&wh, &db, &raws, &events).await;

    // This release starts: migrations 4 to 6, then the days still open to inserts (those not
    // sealed yet, three days after the data ends) move before anything is stored.
    let now = Utc.with_ymd_and_hms(2026, 11, 10, 12, 0, 0).unwrap();
    ops::apply_schema(&wh, &tenant).await.unwrap();
    let recent = tiers::migrate_recent_days(&wh, &tenant, now).await.unwrap();
    assert_eq!(
        recent.first().copied(),
        Some(tiers::sealed_through(now).succ_opt().unwrap())
    );
    assert_eq!(recent.last().copied(), Some(last));

    // What the hourly layout answers now is what every step must keep answering.
    let probes: Vec<Value> = ["berlin.example", "kolkata.example"]
        .iter()
        .flat_map(|site| {
            let base = json!({"site_id": site, "metrics": ALL, "date_range": ["2026-10-18", "2026-11-07"]});
            [
                base.clone(),
                with(&base, json!({"dimensions": ["time:day"], "timezone": "UTC"})),
                with(
                    &base,
                    json!({"dimensions": ["source"], "metrics": ["visitors", "visits", "bounce_rate"]}),
                ),
                with(
                    &base,
                    json!({"dimensions": ["page"], "metrics": ["visitors", "pageviews"]}),
                ),
                // October whole (the monthly tier's, once the move is through) and November's days.
                with(
                    &base,
                    json!({"date_range": ["2026-10-01", "2026-11-07"], "dimensions": ["time:month"]}),
                ),
                with(
                    &base,
                    json!({"date_range": ["2026-10-01", "2026-11-07"], "dimensions": ["page"], "metrics": ["visitors", "pageviews"]}),
                ),
            ]
        })
        .collect();
    let mut expected = Vec::new();
    for p in &probes {
        let (rows, tier) = answer(&wh, &tenant, p).await;
        assert_eq!(tier, "hourly", "before the move, the hourly layout answers");
        let (events_path, _) = answer(&wh, &tenant, &with(p, json!({"path": "events"}))).await;
        // Whole UTC days in UTC agree exactly; other zones only approximately on hourly rollups.
        if p["timezone"] == "UTC" {
            assert_eq!(rows, events_path, "{p}");
        }
        expected.push(events_path);
    }
    let mut moved = Vec::new();
    loop {
        let step = tiers::backfill_step(&wh, &tenant, now).await.unwrap();
        // Between every two days, queries answer as before (hourly layout, or the tiers once
        // switched) for every probe in UTC days, and the tables hold every event once.
        for (p, want) in probes.iter().zip(&expected) {
            let (rows, tier) = answer(&wh, &tenant, p).await;
            if p["timezone"] == "UTC" || tier != "hourly" {
                assert_eq!(&rows, want, "{p} after {step:?} ({tier})");
            }
        }
        match step {
            Backfill::Moved(day) => moved.push(day),
            Backfill::Done => break,
        }
    }
    assert_eq!(moved.first().copied(), Some(first));
    assert_eq!(moved.len() + recent.len(), (last - first).num_days() as usize + 1);
    // The move sealed the daily tier and, from it, the monthly tier: October whole (the data
    // starts on the 18th), November to the 5th.
    let state = tiers::read_state(&wh, &db).await.unwrap();
    assert_eq!(state.layout, Layout::Tiers);
    assert_eq!(state.daily_through, Some(day(2026, 11, 5)));
    assert_eq!(state.monthly_through, Some(day(2026, 10, 31)));
    let months = month_rows(&wh, &db).await;
    let want_months = strings(&[("2026-10-01", &["2026-10-31"]), ("2026-11-01", &["2026-11-05"])]);
    for site in ["berlin.example", "kolkata.example"] {
        assert_eq!(versions(&months, site), want_months, "{site}");
    }
    for (p, want) in probes.iter().zip(&expected) {
        let (rows, tier) = answer(&wh, &tenant, p).await;
        assert_eq!(&rows, want, "{p} ({tier})");
        if p["date_range"][0] == "2026-10-01" {
            assert_eq!(tier, "monthly", "{p}");
        }
    }
    // The next start (nothing writes yet) retires the hourly tables.
    assert_eq!(tiers::migrate_recent_days(&wh, &tenant, now).await.unwrap(), vec![]);
    assert!(!tiers::hourly_layout_live(&wh, &db).await.unwrap());
    let counted = sightline_tests::count(&wh, &format!("SELECT countIf(is_bot = 0) AS n FROM {db}.events")).await;
    let in_tier = sightline_tests::count(
        &wh,
        &format!(
            "SELECT toUInt64(sum(events)) AS n FROM {db}.{}",
            Tier::QuarterHour.table(false)
        ),
    )
    .await;
    assert_eq!(in_tier, counted, "no event lost or doubled");
    // Run again, the move changes nothing.
    assert_eq!(tiers::migrate_recent_days(&wh, &tenant, now).await.unwrap(), vec![]);
    assert_eq!(tiers::backfill_step(&wh, &tenant, now).await.unwrap(), Backfill::Done);
}
