//! The JSON query language on a generated dataset whose answers the test computes on its
//! own: every metric, dimension, filter operator, timezone, comparison and goal; the rollup
//! and events paths must agree; malformed and malicious queries are refused with 400.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Days, Duration, TimeZone, Utc};
use serde_json::{json, Value};
use sightline_tests::*;

const SITE: &str = "blog.example.com"; // UTC
const UAS: [&str; 3] = [CHROME_MAC, FIREFOX_WIN, SAFARI_IPHONE];
const BROWSERS: [&str; 3] = ["Chrome", "Firefox", "Safari"];
const COUNTRIES: [&str; 4] = ["DE", "FR", "US", "GB"];

/// One generated event, as the test's own model sees it.
#[derive(Clone, Debug)]
struct Ev {
    day: usize,
    visitor: String,
    name: &'static str,
    path: String,
    source: &'static str,
    country: &'static str,
    browser: &'static str,
    plan: Option<&'static str>,
    revenue: Option<(&'static str, &'static str)>,
}

/// One visitor's visit: its day, its number, and its events with their request bodies.
type Visit = (usize, usize, Vec<(Ev, Value)>);
/// Which generated events a filter keeps, in the test's own model.
type Keep = Box<dyn Fn(&Ev) -> bool>;

fn day_start(day: usize) -> DateTime<Utc> {
    // Day 0 is two days ago, day 1 yesterday (UTC): inside the 72-hour window.
    let today = Utc::now().date_naive();
    let d = today - Days::new(2 - day as u64);
    Utc.from_utc_datetime(&d.and_hms_opt(10, 0, 0).unwrap())
}

/// Visitors 0..20 on day 0 and 0..30 on day 1; each lands on /, some go on to /pricing,
/// sign up (with a plan), or check out (with revenue).
fn generate() -> Vec<Visit> {
    let mut visits = Vec::new();
    for (day, visitors) in [(0usize, 20usize), (1, 30)] {
        for v in 0..visitors {
            let (referrer, url_suffix, source) = match v % 4 {
                0 => (Some("https://www.google.com/"), "", "Google"),
                1 => (Some("https://t.co/x"), "", "Twitter"),
                2 => (None, "", "Direct / None"),
                _ => (None, "?utm_source=newsletter&utm_medium=email", "newsletter"),
            };
            let base = Ev {
                day,
                visitor: format!("{day}-{v}"),
                name: "pageview",
                path: "/".into(),
                source,
                country: COUNTRIES[v % 4],
                browser: BROWSERS[v % 3],
                plan: None,
                revenue: None,
            };
            let at = |minute: i64| (day_start(day) + Duration::minutes(v as i64 * 3 + minute)).to_rfc3339();
            let mut events = vec![(
                base.clone(),
                json!({"url": format!("https://{SITE}/{url_suffix}"), "referrer": referrer, "ts": at(0)}),
            )];
            if v % 2 == 0 {
                events.push((
                    Ev {
                        path: "/pricing".into(),
                        ..base.clone()
                    },
                    json!({"url": format!("https://{SITE}/pricing"), "ts": at(1)}),
                ));
            }
            if v % 3 == 0 {
                let plan = if v % 2 == 0 { "pro" } else { "free" };
                events.push((
                    Ev { name: "signup", path: "/pricing".into(), plan: Some(plan), ..base.clone() },
                    json!({"name": "signup", "url": format!("https://{SITE}/pricing"), "ts": at(2), "props": {"plan": plan}}),
                ));
            }
            if v % 5 == 0 {
                let (amount, currency) = if v % 2 == 0 { ("10.50", "EUR") } else { ("20", "USD") };
                events.push((
                    Ev {
                        path: "/checkout/done".into(),
                        ..base.clone()
                    },
                    json!({"url": format!("https://{SITE}/checkout/done"), "ts": at(3)}),
                ));
                events.push((
                    Ev { name: "purchase", path: "/checkout/done".into(), revenue: Some((amount, currency)), ..base.clone() },
                    json!({"name": "purchase", "url": format!("https://{SITE}/checkout/done"), "ts": at(3), "revenue": {"amount": amount, "currency": currency}}),
                ));
            }
            visits.push((day, v, events));
        }
    }
    visits
}

struct Api {
    c: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    async fn post(&self, body: Value) -> (u16, Value) {
        let r = self
            .c
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    async fn ok(&self, body: Value) -> Value {
        let (s, v) = self.post(body.clone()).await;
        assert_eq!(s, 200, "{body} -> {v}");
        v
    }

    /// Results as {dimension values -> metric values}.
    async fn table(&self, body: Value) -> BTreeMap<String, Vec<Value>> {
        let v = self.ok(body).await;
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["dimensions"].to_string(), r["metrics"].as_array().unwrap().clone()))
            .collect()
    }
}

fn uniq<'a>(evs: impl Iterator<Item = &'a Ev>) -> usize {
    evs.map(|e| e.visitor.clone()).collect::<BTreeSet<_>>().len()
}

fn pct(part: usize, whole: usize) -> f64 {
    (part as f64 * 1000.0 / whole as f64).round() / 10.0
}

#[tokio::test(flavor = "multi_thread")]
async fn the_query_language_gives_exact_answers_on_both_paths() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(&data, &tenants, &[]);
    let c = client();
    let write = write_token("acme", SITE);
    let visits = generate();
    for (day, v, events) in &visits {
        let body: Vec<Value> = events.iter().map(|(_, b)| b.clone()).collect();
        let r = c
            .post(server.url("/v1/collect"))
            .bearer_auth(&write)
            .header("User-Agent", UAS[v % 3])
            .header("X-Forwarded-For", format!("10.{day}.0.{v}"))
            .header("CF-IPCountry", COUNTRIES[v % 4])
            .json(&json!({"events": body}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let all: Vec<Ev> = visits
        .iter()
        .flat_map(|(_, _, e)| e.iter().map(|(ev, _)| ev.clone()))
        .collect();
    let y: Vec<&Ev> = all.iter().filter(|e| e.day == 1).collect();
    let yesterday = day_start(1).date_naive().to_string();
    let before = day_start(0).date_naive().to_string();
    let api = Api {
        c: c.clone(),
        url: server.url("/v1/query"),
        token: read_token("acme", SITE),
    };
    let q = |extra: Value| {
        let mut body = json!({"site_id": SITE, "date_range": [yesterday, yesterday], "metrics": ["visitors"]});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };

    // Aggregate: visitors, pageviews, events straight from the model.
    let total_visitors = uniq(y.iter().copied());
    let v = api
        .ok(q(
            json!({"metrics": ["visitors", "visits", "pageviews", "events", "bounce_rate"]}),
        ))
        .await;
    let bounced = (0..30).filter(|v| v % 2 != 0 && v % 3 != 0 && v % 5 != 0).count();
    assert_eq!(
        v["results"][0]["metrics"],
        json!([
            total_visitors,
            30,
            y.iter().filter(|e| e.name == "pageview").count(),
            y.len(),
            (bounced as f64 * 100.0 / 30.0).round() as i64
        ])
    );
    assert_eq!(v["meta"]["path"], "rollup");

    // Breakdown by source with percentage; ordered by visitors, then name.
    let t = api
        .table(q(
            json!({"metrics": ["visitors", "percentage"], "dimensions": ["source"]}),
        ))
        .await;
    for source in ["Google", "Twitter", "Direct / None", "newsletter"] {
        let n = uniq(y.iter().copied().filter(|e| e.source == source));
        assert_eq!(
            t[&json!([source]).to_string()],
            vec![json!(n), json!(pct(n, total_visitors))],
            "{source}"
        );
    }

    // Every filter operator, alone and nested.
    let cases: Vec<(Value, Keep)> = vec![
        (
            json!([["is", "country", ["DE", "FR"]]]),
            Box::new(|e: &Ev| e.country == "DE" || e.country == "FR"),
        ),
        (
            json!([["is_not", "browser", ["Chrome"]]]),
            Box::new(|e: &Ev| e.browser != "Chrome"),
        ),
        (
            json!([["contains", "page", ["PRIC"]]]),
            Box::new(|e: &Ev| e.path.contains("pric")),
        ),
        (
            json!([["matches", "page", ["^/checkout/.+$"]]]),
            Box::new(|e: &Ev| e.path.starts_with("/checkout/")),
        ),
        (
            json!([[
                "or",
                [
                    ["is", "country", ["US"]],
                    [
                        "and",
                        [["is", "browser", ["Safari"]], ["not", ["is", "source", ["Google"]]]]
                    ]
                ]
            ]]),
            Box::new(|e: &Ev| e.country == "US" || (e.browser == "Safari" && e.source != "Google")),
        ),
        (
            json!([["is", "props:plan", ["pro"]]]),
            Box::new(|e: &Ev| e.plan == Some("pro")),
        ),
    ];
    for (filters, keep) in &cases {
        let want = uniq(y.iter().copied().filter(|e| keep(e)));
        let events = y.iter().filter(|e| keep(e)).count();
        let v = api
            .ok(q(json!({"metrics": ["visitors", "events"], "filters": filters})))
            .await;
        assert_eq!(v["results"][0]["metrics"], json!([want, events]), "{filters}");
    }

    // Custom properties as a dimension.
    let t = api.table(q(json!({"metrics": ["visitors", "events"], "dimensions": ["props:plan"], "filters": [["is", "goal", ["Signup"]]]}))).await;
    for plan in ["pro", "free"] {
        let n = y.iter().filter(|e| e.plan == Some(plan)).count();
        assert_eq!(t[&json!([plan]).to_string()], vec![json!(n), json!(n)], "{plan}");
    }

    // Goals: a dimension, a filter, and conversion rate against all visitors.
    let signup = uniq(y.iter().copied().filter(|e| e.name == "signup"));
    let checkout = uniq(
        y.iter()
            .copied()
            .filter(|e| e.name == "pageview" && e.path.starts_with("/checkout/")),
    );
    let t = api
        .table(q(
            json!({"metrics": ["visitors", "conversion_rate"], "dimensions": ["goal"]}),
        ))
        .await;
    assert_eq!(
        t[&json!(["Signup"]).to_string()],
        vec![json!(signup), json!(pct(signup, total_visitors))]
    );
    assert_eq!(
        t[&json!(["Checkout"]).to_string()],
        vec![json!(checkout), json!(pct(checkout, total_visitors))]
    );
    let de = uniq(y.iter().copied().filter(|e| e.country == "DE"));
    let de_signup = uniq(y.iter().copied().filter(|e| e.country == "DE" && e.name == "signup"));
    let v = api.ok(q(json!({"metrics": ["visitors", "conversion_rate"], "filters": [["is", "goal", ["Signup"]], ["is", "country", ["DE"]]]}))).await;
    assert_eq!(v["results"][0]["metrics"], json!([de_signup, pct(de_signup, de)]));

    // Revenue sums per currency, exactly.
    let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
    for e in y.iter().filter_map(|e| e.revenue) {
        *sums.entry(e.1).or_default() += e.0.parse::<f64>().unwrap();
    }
    let v = api.ok(q(json!({"metrics": ["revenue"]}))).await;
    let revenue = &v["results"][0]["metrics"][0];
    for (currency, sum) in &sums {
        assert_eq!(
            revenue[currency].as_str().unwrap().parse::<f64>().unwrap(),
            *sum,
            "{currency}"
        );
    }

    // Time dimensions in two timezones: UTC puts all of yesterday's events in one day.
    let v = api
        .ok(q(
            json!({"metrics": ["events"], "dimensions": ["time:day"], "date_range": [before, yesterday]}),
        ))
        .await;
    let days: Vec<Value> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metrics"][0].clone())
        .collect();
    assert_eq!(
        days,
        vec![json!(all.iter().filter(|e| e.day == 0).count()), json!(y.len())]
    );
    let v = api
        .ok(q(
            json!({"metrics": ["events"], "dimensions": ["time:hour"], "timezone": "Asia/Tokyo"}),
        ))
        .await;
    let rows = v["results"].as_array().unwrap();
    assert_eq!(rows.len(), 24, "a Tokyo day of hours");
    // 10:00 UTC is 19:00 in Tokyo, on the same date: the first events land in that bucket.
    let first_busy = rows.iter().find(|r| r["metrics"][0].as_u64().unwrap() > 0).unwrap();
    assert!(
        first_busy["dimensions"][0].as_str().unwrap().ends_with("19:00:00"),
        "{first_busy}"
    );

    // Comparison with the previous period: both values and the change.
    let v = api
        .ok(q(
            json!({"metrics": ["visitors", "events"], "compare": "previous_period"}),
        ))
        .await;
    let prev_visitors = uniq(all.iter().filter(|e| e.day == 0));
    let prev_events = all.iter().filter(|e| e.day == 0).count();
    assert_eq!(
        v["results"][0]["comparison"]["metrics"],
        json!([prev_visitors, prev_events])
    );
    let change = |a: usize, b: usize| ((a as f64 - b as f64) * 100.0 / b as f64).round() as i64;
    assert_eq!(
        v["results"][0]["comparison"]["change"],
        json!([change(total_visitors, prev_visitors), change(y.len(), prev_events)])
    );
    assert_eq!(v["meta"]["comparison_date_range"]["from"], before);
    let v = api
        .ok(q(
            json!({"metrics": ["visitors"], "dimensions": ["source"], "compare": "year_over_year"}),
        ))
        .await;
    assert!(v["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["comparison"]["metrics"] == json!([0]) && r["comparison"]["change"] == json!([null])));

    // Ordering and pagination with a total row count.
    let v = api.ok(q(json!({"metrics": ["visitors"], "dimensions": ["page"], "order_by": [["page", "asc"]], "pagination": {"limit": 2, "offset": 1}}))).await;
    let pages: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["dimensions"][0].as_str().unwrap())
        .collect();
    assert_eq!(pages, vec!["/checkout/done", "/pricing"]);
    assert_eq!(v["meta"]["total_rows"], 3);

    // The rollup path and the events path agree on everything the rollups can answer.
    let all_metrics = json!([
        "visitors",
        "visits",
        "pageviews",
        "events",
        "bounce_rate",
        "visit_duration",
        "views_per_visit"
    ]);
    for extra in [
        json!({"metrics": all_metrics}),
        json!({"metrics": all_metrics, "dimensions": ["time:hour"]}),
        json!({"metrics": all_metrics, "dimensions": ["source"]}),
        json!({"metrics": all_metrics, "dimensions": ["country", "time:day"], "date_range": [before, yesterday]}),
        json!({"metrics": all_metrics, "dimensions": ["channel"], "filters": [["is_not", "channel", ["direct"]]]}),
        json!({"metrics": ["visitors", "pageviews", "percentage"], "dimensions": ["page"], "filters": [["matches", "page", ["^/(pricing|checkout)"]]]}),
        json!({"metrics": ["visitors", "events"], "dimensions": ["event_name"], "filters": [["contains", "event_name", ["sign", "pur"]]]}),
        json!({"metrics": all_metrics, "filters": [["or", [["is", "browser", ["Safari"]], ["not", ["contains", "browser", ["fire"]]]]]]}),
    ] {
        let mut rollup = q(extra.clone());
        rollup["path"] = json!("rollup");
        let mut events = q(extra.clone());
        events["path"] = json!("events");
        let (a, b) = (api.ok(rollup).await, api.ok(events).await);
        assert_eq!(a["meta"]["path"], "rollup");
        assert_eq!(b["meta"]["path"], "events");
        assert_eq!(a["results"], b["results"], "{extra}");
        assert!(!a["results"].as_array().unwrap().is_empty());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_and_malicious_queries_are_refused_with_400() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(&data, &tenants, &[]);
    let api = Api {
        c: client(),
        url: server.url("/v1/query"),
        token: read_token("acme", SITE),
    };
    let deep = json!(["not", ["not", ["not", ["not", ["not", ["is", "page", ["/"]]]]]]]);
    let cases = vec![
        (
            json!({"site_id": SITE, "metrics": ["visitors; DROP TABLE events"]}),
            "metrics",
        ),
        (
            json!({"site_id": SITE, "metrics": ["visitors"], "dimensions": ["page) UNION SELECT * FROM system.users --"]}),
            "dimensions",
        ),
        (
            json!({"site_id": SITE, "metrics": ["visitors"], "date_range": ["2000-01-01", "2026-01-01"]}),
            "date_range",
        ),
        (
            json!({"site_id": SITE, "metrics": ["visitors"], "date_range": "12mo", "dimensions": ["time:hour"]}),
            "date_range",
        ),
        (
            json!({"site_id": SITE, "metrics": ["visitors"], "filters": [["matches", "page", ["(unclosed"]]]}),
            "filters",
        ),
        (
            json!({"site_id": SITE, "metrics": ["visitors"], "filters": [deep]}),
            "filters",
        ),
        (
            json!({"site_id": SITE, "metrics": ["visitors"], "filters": [["drop", "page", ["x"]]]}),
            "filters",
        ),
        (
            json!({"site_id": SITE, "metrics": ["visitors"], "order_by": [["visitors; --", "desc"]]}),
            "order_by",
        ),
        (
            json!({"site_id": SITE, "metrics": ["bounce_rate"], "dimensions": ["page"]}),
            "metrics",
        ),
        (json!({"site_id": SITE, "metrics": ["conversion_rate"]}), "metrics"),
        (
            json!({"site_id": SITE, "metrics": ["visitors"], "pagination": {"limit": 1000000}}),
            "pagination",
        ),
        (
            json!({"site_id": SITE, "metrics": ["visitors"], "sql": "SELECT 1"}),
            "query",
        ),
    ];
    for (body, parameter) in cases {
        let (s, v) = api.post(body.clone()).await;
        assert_eq!(
            (s, v["error"]["parameter"].as_str()),
            (400, Some(parameter)),
            "{body} -> {v}"
        );
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    // SQL-looking values are just values: they match nothing, and nothing breaks.
    let (s, v) = api
        .post(json!({"site_id": SITE, "metrics": ["visitors"], "date_range": "7d",
        "filters": [["is", "page", ["' OR 1=1 --"]], ["contains", "props:x'); DROP TABLE events; --", ["a"]]]}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["metrics"], json!([0]));
    // A token for one site cannot query another through the body.
    let (s, _) = api
        .post(json!({"site_id": "shop.example.com", "metrics": ["visitors"]}))
        .await;
    assert_eq!(s, 403);
}
