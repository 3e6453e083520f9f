//! The differential harness: one generated dataset on the real engine (libchdb), sealed so
//! that every rollup tier holds part of it, and random queries answered by the events path
//! and by every tier the planner can use (quarter-hour, daily, monthly, and its own choice,
//! also with the sealed parts of long ranges merged once and read back, as the query service
//! answers: `sightline_query::merges`). Any difference is a failure: the panic message holds
//! the query.
//!
//! The dataset: three sites in zones with whole-hour, half-hour and 30-minute-DST offsets
//! (Berlin, Kolkata, Lord Howe), 2026-09-24 to 2026-12-04 (Berlin's and Lord Howe's DST
//! changes, month ends), visits clustered around local midnights; sealed as of 2026-11-24,
//! so the monthly tier holds September and October, the daily tier days through 11-19 and
//! the quarter-hour tier the rest.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use serde_json::{json, Value};
use sightline_core::event::{Event, RawEvent};
use sightline_core::processor::session::SessionState;
use sightline_core::processor::{process, ProcessorConfig};
use sightline_core::schema;
use sightline_core::spec::{parse_tenants, Tenant};
use sightline_core::warehouse::embedded::Embedded;
use sightline_core::warehouse::{ops, tiers};
use sightline_query::execute::{self, Answer, Storage};
use sightline_query::merges::SealedMerges;
use sightline_query::model::{parse_query, PathHint, Query, TierHint};
use sightline_query::{Limits, QueryError};
use uuid::Uuid;

const TENANT: &str = r#"
apiVersion: sightline.dev/v1alpha1
kind: AnalyticsTenant
metadata: { name: differential }
spec:
  defaultTimezone: Europe/Berlin
  sites:
    allowed:
      - id: berlin.example
      - id: kolkata.example
        timezone: Asia/Kolkata
      - id: lordhowe.example
        timezone: Australia/Lord_Howe
"#;

pub const SITES: [(&str, i64); 3] = [
    // The site and its local midnight in minutes after UTC midnight (roughly: visits cluster
    // around it, across the DST changes too).
    ("berlin.example", 23 * 60),
    ("kolkata.example", 18 * 60 + 30),
    ("lordhowe.example", 13 * 60),
];

const AGENTS: [&str; 5] = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
];
const REFERRERS: [&str; 6] = [
    "",
    "https://www.google.com/",
    "https://t.co/x",
    "https://news.example.org/a",
    "https://mail.google.com/",
    "android-app://com.google.android.gm/",
];
const PAGES: [&str; 7] = [
    "/",
    "/pricing",
    "/blog/a",
    "/blog/b/",
    "/checkout",
    "/caf%C3%A9",
    "/#/app/settings",
];
const CAMPAIGNS: [&str; 4] = [
    "",
    "?utm_source=newsletter&utm_medium=email&utm_campaign=autumn",
    "?utm_source=Google&utm_medium=cpc&utm_campaign=Brand",
    "?gclid=abc",
];
const COUNTRIES: [&str; 4] = ["DE", "IN", "AU", ""];

/// The first and last UTC day of the dataset, and the instant it is sealed at.
pub fn dataset_days() -> (NaiveDate, NaiveDate) {
    (
        NaiveDate::from_ymd_opt(2026, 9, 24).expect("a date"),
        NaiveDate::from_ymd_opt(2026, 12, 4).expect("a date"),
    )
}

fn sealed_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0)
        .single()
        .expect("an instant")
}

/// "now" for the queries' named periods (today, 7d, 30d, month, 12mo): within the data.
fn query_now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 2, 10, 0, 0)
        .single()
        .expect("an instant")
}

/// A deterministic pseudo-random sequence, the same dataset on every run.
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

/// The dataset's raw events, in time order, and what the processor makes of them.
pub fn dataset() -> (Vec<RawEvent>, Vec<Event>) {
    let mut rng = Lcg(17);
    let (mut day, last) = dataset_days();
    let mut raws = Vec::new();
    while day <= last {
        let midnight = day.and_hms_opt(0, 0, 0).expect("midnight").and_utc();
        for (site, local_midnight) in SITES {
            for v in 0..16u64 {
                let start = if v % 2 == 0 {
                    midnight + Duration::minutes(local_midnight - 50 + rng.next(100) as i64)
                } else {
                    midnight + Duration::minutes(rng.next(24 * 60) as i64)
                };
                let visitor = 1 + rng.next(30);
                let agent = AGENTS[rng.next(AGENTS.len() as u64) as usize];
                let referrer = REFERRERS[rng.next(REFERRERS.len() as u64) as usize];
                let campaign = CAMPAIGNS[rng.next(CAMPAIGNS.len() as u64) as usize];
                let country = COUNTRIES[rng.next(COUNTRIES.len() as u64) as usize];
                for p in 0..1 + rng.next(4) {
                    let ts = start + Duration::seconds(p as i64 * (20 + rng.next(900) as i64));
                    raws.push(RawEvent {
                        event_id: Uuid::from_u64_pair(rng.next(u64::MAX), rng.next(u64::MAX) | 1),
                        site_id: site.into(),
                        received_at: ts,
                        ts,
                        name: if rng.next(6) == 0 {
                            "signup".into()
                        } else {
                            "pageview".into()
                        },
                        url: format!(
                            "https://{site}{}{}",
                            PAGES[rng.next(PAGES.len() as u64) as usize],
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
                        visitor_id: sightline_core::intake::keyed_visitor_id(b"k", site, ts, &visitor.to_string()),
                        country: country.into(),
                        ingest_source: "web".into(),
                        prev_day_visitor_id: 0,
                        interactive: rng.next(10) != 0,
                    });
                }
            }
        }
        day = day.succ_opt().expect("a next day");
    }
    raws.sort_by_key(|r| (r.ts, r.event_id));
    let mut sessions = SessionState::default();
    let config = ProcessorConfig { bot_filtering: true };
    let events = raws.iter().map(|r| process(r, config, &mut sessions)).collect();
    (raws, events)
}

/// The engine with the dataset stored and sealed, and the runtime that drives it.
pub struct Harness {
    pub runtime: tokio::runtime::Runtime,
    pub warehouse: Embedded,
    pub tenant: Tenant,
    pub storage: Storage,
    /// The merged sealed ranges kept between inputs, as the query service keeps them.
    pub merges: SealedMerges,
    /// The engine's data (~42 MB), in a directory under `$TMPDIR`. Never removed by the
    /// harness: it lives in a static, and the process ends in `_exit` (the handler below,
    /// or libFuzzer's `_Exit` on a crash), so `TempDir`'s drop never runs.
    /// `scripts/fuzz.sh` gives each target a `TMPDIR` of its own and removes it after the
    /// target; a target run by hand leaves the directory behind.
    _dir: tempfile::TempDir,
}

/// The process's harness, built on first use (some seconds: the engine starts, stores the
/// dataset and builds the tiers). Its engine directory outlives the process (see
/// `Harness::_dir`): `scripts/fuzz.sh` removes it with the target's own `TMPDIR`.
pub fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let warehouse = Embedded::open(&dir.path().join("engine"), 2).expect("the embedded engine opens");
        let tenant = parse_tenants(TENANT, "differential")
            .expect("the tenant parses")
            .remove(0);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let storage = runtime.block_on(async {
            let db = tenant.database();
            ops::apply_schema(&warehouse, &tenant)
                .await
                .expect("the schema applies");
            let (raws, events) = dataset();
            for (r, e) in raws.chunks(4000).zip(events.chunks(4000)) {
                ops::insert_raw_and_events(&warehouse, &db, r, e)
                    .await
                    .expect("the dataset is stored");
            }
            tiers::migrate_recent_days(&warehouse, &tenant, sealed_at())
                .await
                .expect("the tiers take over");
            tiers::backfill(&warehouse, &tenant, sealed_at())
                .await
                .expect("the tiers are built");
            let state = tiers::read_state(&warehouse, &db)
                .await
                .expect("the storage state reads");
            assert!(
                state.daily_through.is_some() && state.monthly_through.is_some(),
                "{state:?}"
            );
            Storage::new(&tenant, state)
        });
        // libchdb's static destructors crash when they run with connections open, and this
        // harness lives until the process ends (libFuzzer ends it with `exit(0)` after its
        // last input; crashes end it with `_Exit`, past atexit). A handler registered after
        // the library was loaded runs before its destructors: it ends the process there,
        // with the status a clean run has.
        extern "C" fn end_before_the_engine_tears_down() {
            // SAFETY: `_exit` only ends the process; nothing runs after it.
            unsafe { libc::_exit(0) }
        }
        // SAFETY: registering a handler that takes no arguments and never returns.
        let registered = unsafe { libc::atexit(end_before_the_engine_tears_down) };
        assert_eq!(registered, 0, "atexit registers the handler");
        Harness {
            runtime,
            warehouse,
            tenant,
            storage,
            merges: SealedMerges::default(),
            _dir: dir,
        }
    })
}

/// The metrics the rollups answer (revenue and conversion rate need the events path).
const METRICS: [&str; 8] = [
    "visitors",
    "visits",
    "pageviews",
    "events",
    "bounce_rate",
    "visit_duration",
    "views_per_visit",
    "percentage",
];
const INTERVALS: [&str; 4] = ["hour", "day", "week", "month"];
const ZONES: [&str; 8] = [
    "UTC",
    "Europe/Berlin",
    "Asia/Kolkata",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "America/St_Johns",
    "Pacific/Chatham",
];
const PERIODS: [&str; 5] = ["today", "7d", "30d", "month", "12mo"];
/// Filter values: what the dataset holds (in several spellings), and some it does not.
const VALUES: [&str; 30] = [
    "/",
    "/pricing",
    "/blog/a",
    "/blog/b/",
    "/café",
    "/caf%C3%A9",
    "/#/app/settings",
    "google",
    "Google",
    "Direct / None",
    "t.co",
    "Twitter",
    "news.example.org",
    "Gmail",
    "organic search",
    "Paid Search",
    "Email",
    "Referral",
    "DE",
    "IN",
    "",
    "Chrome",
    "Safari",
    "mobile",
    "desktop",
    "newsletter",
    "email",
    "autumn",
    "signup",
    "Mac OS X",
];
const FRAGMENTS: [&str; 8] = ["blog", "GOO", "a", "/", "é", "e", "news", "x"];
const PATTERNS: [&str; 8] = ["^/blog", "o", ".*", "^G", "^[A-Z]{2}$", "(?i)chrome", "^$", "/b/?$"];

#[derive(Arbitrary, Debug, Clone)]
pub enum Range {
    Named(u8),
    /// Days from 2026-09-18 (a week before the data) and a length in days.
    Days {
        start: u8,
        len: u8,
    },
}

#[derive(Arbitrary, Debug, Clone)]
pub enum FilterSpec {
    /// `[op, dim, [values]]`: op by `op % 4`, values from the pools by index, or text.
    Condition {
        op: u8,
        values: Vec<ValueSpec>,
    },
    And(Vec<FilterSpec>),
    Or(Vec<FilterSpec>),
    Not(Box<FilterSpec>),
}

#[derive(Arbitrary, Debug, Clone)]
pub enum ValueSpec {
    Pool(u8),
    Text(String),
}

/// A query the rollups can answer: at most one rollup dimension (filters on it only), maybe
/// a time dimension, rollup metrics, any zone, range, comparison, order and page.
#[derive(Arbitrary, Debug, Clone)]
pub struct DiffQuery {
    pub site: u8,
    pub metrics: u8,
    pub dimension: Option<u8>,
    pub time: Option<u8>,
    pub time_first: bool,
    pub filter: Option<FilterSpec>,
    pub zone: Option<u8>,
    pub range: Range,
    pub compare: u8,
    pub order: Option<(u8, bool)>,
    pub page: Option<(u8, u8)>,
}

fn value(op: usize, v: &ValueSpec) -> String {
    match v {
        ValueSpec::Pool(i) => {
            let i = usize::from(*i);
            match op {
                2 => FRAGMENTS[i % FRAGMENTS.len()].to_string(),
                3 => PATTERNS[i % PATTERNS.len()].to_string(),
                _ => VALUES[i % VALUES.len()].to_string(),
            }
        }
        ValueSpec::Text(t) => t.chars().take(24).collect(),
    }
}

fn filter_json(f: &FilterSpec, dim: &str, depth: usize) -> Option<Value> {
    if depth > 3 {
        return None;
    }
    Some(match f {
        FilterSpec::Condition { op, values } => {
            let op = usize::from(*op % 4);
            let values: Vec<String> = values.iter().take(4).map(|v| value(op, v)).collect();
            if values.is_empty() {
                return None;
            }
            let name = ["is", "is_not", "contains", "matches"][op];
            json!([name, dim, values])
        }
        FilterSpec::And(fs) | FilterSpec::Or(fs) => {
            let parts: Vec<Value> = fs
                .iter()
                .take(3)
                .filter_map(|f| filter_json(f, dim, depth + 1))
                .collect();
            if parts.is_empty() {
                return None;
            }
            json!([if matches!(f, FilterSpec::And(_)) { "and" } else { "or" }, parts])
        }
        FilterSpec::Not(inner) => json!(["not", filter_json(inner, dim, depth + 1)?]),
    })
}

impl DiffQuery {
    /// The query as `POST /v1/query` takes it.
    pub fn body(&self) -> Value {
        let site = SITES[usize::from(self.site) % SITES.len()].0;
        let metrics: Vec<&str> = METRICS
            .iter()
            .enumerate()
            .filter(|(i, _)| self.metrics & (1 << i) != 0)
            .map(|(_, m)| *m)
            .collect();
        let metrics = if metrics.is_empty() { vec!["visitors"] } else { metrics };
        let column = self
            .dimension
            .map(|d| schema::DIMENSIONS[usize::from(d) % schema::DIMENSIONS.len()].0);
        let interval = self.time.map(|t| INTERVALS[usize::from(t) % INTERVALS.len()]);
        let mut dimensions: Vec<String> = column.iter().map(|c| c.to_string()).collect();
        if let Some(interval) = interval {
            let time = format!("time:{interval}");
            if self.time_first {
                dimensions.insert(0, time);
            } else {
                dimensions.push(time);
            }
        }
        // Visit metrics mean nothing per event: keep them off per-event dimensions.
        let per_event = column.is_some_and(|c| schema::dimension(c).is_some_and(|(_, _, session)| !session));
        let metrics: Vec<&str> = if per_event {
            let kept: Vec<&str> = metrics
                .into_iter()
                .filter(|m| !matches!(*m, "visits" | "bounce_rate" | "visit_duration" | "views_per_visit"))
                .collect();
            if kept.is_empty() {
                vec!["pageviews"]
            } else {
                kept
            }
        } else {
            metrics
        };
        let metrics: Vec<&str> = if column.is_none() {
            metrics.into_iter().filter(|m| *m != "percentage").collect::<Vec<_>>()
        } else {
            metrics
        };
        let metrics = if metrics.is_empty() { vec!["events"] } else { metrics };
        let date_range = match &self.range {
            Range::Named(i) => {
                let period = PERIODS[usize::from(*i) % PERIODS.len()];
                json!(if interval == Some("hour") && period == "12mo" {
                    "7d"
                } else {
                    period
                })
            }
            Range::Days { start, len } => {
                let first =
                    NaiveDate::from_ymd_opt(2026, 9, 18).expect("a date") + chrono::Days::new(u64::from(*start % 84));
                let max = if interval == Some("hour") { 31 } else { 75 };
                let last = first + chrono::Days::new(u64::from(*len) % max);
                json!([first.to_string(), last.to_string()])
            }
        };
        let mut body = json!({"site_id": site, "metrics": metrics, "date_range": date_range, "dimensions": dimensions});
        let obj = body.as_object_mut().expect("an object");
        if let Some(zone) = self.zone {
            obj.insert("timezone".into(), json!(ZONES[usize::from(zone) % ZONES.len()]));
        }
        if let Some(filter) = &self.filter {
            // On the query's own dimension, or (totals and series) on any one dimension.
            let dim = column.unwrap_or(schema::DIMENSIONS[usize::from(self.metrics) % schema::DIMENSIONS.len()].0);
            if let Some(f) = filter_json(filter, dim, 1) {
                obj.insert("filters".into(), json!([f]));
            }
        }
        match self.compare % 3 {
            1 => {
                obj.insert("compare".into(), json!("previous_period"));
            }
            2 => {
                obj.insert("compare".into(), json!("year_over_year"));
            }
            _ => {}
        }
        if let Some((key, desc)) = self.order {
            let names: Vec<&str> = metrics
                .iter()
                .copied()
                .chain(dimensions.iter().map(String::as_str))
                .filter(|n| *n != "revenue")
                .collect();
            let name = names[usize::from(key) % names.len()];
            obj.insert("order_by".into(), json!([[name, if desc { "desc" } else { "asc" }]]));
        }
        if let Some((limit, offset)) = self.page {
            obj.insert(
                "pagination".into(),
                json!({"limit": 1 + u64::from(limit % 12), "offset": u64::from(offset % 16)}),
            );
        }
        body
    }
}

/// What an answer says, in a form two answers compare by: every row's dimensions, metrics
/// and comparison, and the row count.
pub fn answer_text(answer: &Answer) -> Value {
    let rows: Vec<Value> = answer
        .rows
        .iter()
        .map(|r| {
            json!([
                r.dimensions,
                r.metrics,
                r.comparison.as_ref().map(|(m, c)| json!([m, c]))
            ])
        })
        .collect();
    json!({"rows": rows, "total_rows": answer.total_rows})
}

/// Where two answers part: the row count, or the first row that differs.
fn first_difference(rollup: &Value, events: &Value) -> String {
    if rollup["total_rows"] != events["total_rows"] {
        return format!("total_rows {} != {}", rollup["total_rows"], events["total_rows"]);
    }
    let (a, b) = (rollup["rows"].as_array(), events["rows"].as_array());
    let (a, b) = (a.map_or(&[][..], Vec::as_slice), b.map_or(&[][..], Vec::as_slice));
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("row {i}: {} != {}", a[i], b[i]),
        None => format!("{} rows != {} rows", a.len(), b.len()),
    }
}

/// Runs a query on one path and tier, with the sealed parts of long ranges merged and kept
/// in `merges` when given.
pub fn run(
    harness: &Harness,
    query: &Query,
    path: PathHint,
    tier: TierHint,
    merges: Option<&SealedMerges>,
) -> Result<Answer, QueryError> {
    let query = Query {
        path,
        tier,
        ..query.clone()
    };
    let hold: execute::Hold = std::sync::Arc::new(());
    harness.runtime.block_on(execute::run(
        &harness.warehouse,
        &harness.tenant,
        &harness.storage,
        &query,
        &Limits::default(),
        &hold,
        merges,
    ))
}

/// Answers `body` on the events path and on every tier that takes it; panics naming the
/// query, the tier and both answers when one differs. Returns the tiers that answered.
pub fn check(body: &Value) -> Vec<&'static str> {
    let harness = harness();
    let Ok(query) = parse_query(body, &harness.tenant.spec, query_now()) else {
        return Vec::new();
    };
    let events = match run(harness, &query, PathHint::Events, TierHint::Auto, None) {
        Ok(answer) => answer_text(&answer),
        Err(e) => panic!("the events path refused {body}: {e:?}"),
    };
    let mut answered = Vec::new();
    for tier in [
        TierHint::Auto,
        TierHint::QuarterHour,
        TierHint::Daily,
        TierHint::Monthly,
    ] {
        let answer = match run(harness, &query, PathHint::Rollup, tier, None) {
            Ok(answer) => answer,
            // A tier that cannot answer this query exactly says so (400 naming `tier`).
            Err(QueryError::BadParameter { parameter: "tier", .. }) if tier != TierHint::Auto => continue,
            Err(e) => panic!("the rollups ({tier:?}) refused {body}: {e:?}"),
        };
        let name = answer.source.tier().unwrap_or("events");
        let text = answer_text(&answer);
        if text != events {
            panic!(
                "the {name} tier ({tier:?}) disagrees with the events path on {body}: {}",
                first_difference(&text, &events)
            );
        }
        answered.push(name);
    }
    // As the query service answers: the planner's choice with the range's sealed part merged
    // (the first time) and read back from that merge (the second, and any later input of
    // the same sealed part).
    for round in ["merging", "merged"] {
        let answer = match run(harness, &query, PathHint::Rollup, TierHint::Auto, Some(&harness.merges)) {
            Ok(answer) => answer,
            Err(e) => panic!("the rollups ({round}) refused {body}: {e:?}"),
        };
        let name = answer.source.tier().unwrap_or("events");
        let text = answer_text(&answer);
        if text != events {
            panic!(
                "the {name} tier with sealed ranges {round} disagrees with the events path on {body}: {}",
                first_difference(&text, &events)
            );
        }
    }
    if std::env::var_os("SIGHTLINE_FUZZ_SHOW").is_some() {
        // What each input asked and which tiers answered it, to see what a corpus covers.
        eprintln!("{body} -> events and {answered:?}");
    }
    answered
}
