//! The known-events scenario: a set of events across sites, hours, referrers, user agents
//! and a midnight in the site's timezone, posted to a collector, and the exact numbers every
//! query endpoint must then return. Standalone runs it on one process; the distributed
//! path (collector, Kafka, loader, ClickHouse, query) runs the very same scenario.

use chrono::{DateTime, Days, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Europe::Berlin;
use serde_json::{json, Value};

use crate::*;

struct Visit {
    ua: &'static str,
    ip: &'static str,
    country: &'static str,
    minutes_from_midnight: i64,
    body: Value,
}

/// Berlin midnight that starts the day before today (local), so that every event below
/// lies between 21 and 50 hours in the past: inside the 72-hour window, never in the future.
fn midnight() -> (DateTime<Utc>, NaiveDate) {
    let today = Utc::now().with_timezone(&Berlin).date_naive();
    let day = today - Days::new(1);
    let m = Berlin
        .from_local_datetime(&day.and_hms_opt(0, 0, 0).unwrap())
        .unwrap()
        .with_timezone(&Utc);
    (m, day)
}

fn dataset(m: DateTime<Utc>) -> Vec<(&'static str, Visit)> {
    let at = |min: i64| (m + Duration::minutes(min)).to_rfc3339();
    let shop = "shop.example.com";
    vec![
        // V1: Google, two pages in one session (300 s), late on the first day.
        (
            shop,
            Visit {
                ua: CHROME_MAC,
                ip: "198.51.100.1",
                country: "DE",
                minutes_from_midnight: -60,
                body: json!({"url":"https://shop.example.com/","referrer":"https://www.google.com/","ts":at(-60)}),
            },
        ),
        (
            shop,
            Visit {
                ua: CHROME_MAC,
                ip: "198.51.100.1",
                country: "DE",
                minutes_from_midnight: -55,
                body: json!({"url":"https://shop.example.com/pricing","referrer":"https://shop.example.com/","ts":at(-55)}),
            },
        ),
        // V2: Twitter before midnight (a bounce), back 35 minutes later after midnight: a new,
        // direct session (another bounce).
        (
            shop,
            Visit {
                ua: SAFARI_IPHONE,
                ip: "198.51.100.2",
                country: "US",
                minutes_from_midnight: -20,
                body: json!({"url":"https://shop.example.com/","referrer":"https://t.co/abc","ts":at(-20)}),
            },
        ),
        (
            shop,
            Visit {
                ua: SAFARI_IPHONE,
                ip: "198.51.100.2",
                country: "US",
                minutes_from_midnight: 15,
                body: json!({"url":"https://shop.example.com/blog","ts":at(15)}),
            },
        ),
        // V3: newsletter campaign, then a custom event with props: one session of 120 s.
        (
            shop,
            Visit {
                ua: FIREFOX_WIN,
                ip: "198.51.100.3",
                country: "FR",
                minutes_from_midnight: 30,
                body: json!({"url":"https://shop.example.com/pricing?utm_source=newsletter&utm_medium=email&utm_campaign=nov","ts":at(30)}),
            },
        ),
        (
            shop,
            Visit {
                ua: FIREFOX_WIN,
                ip: "198.51.100.3",
                country: "FR",
                minutes_from_midnight: 32,
                body: json!({"name":"signup","url":"https://shop.example.com/pricing","ts":at(32),"props":{"plan":"pro"}}),
            },
        ),
        // A bot: stored raw, never counted.
        (
            shop,
            Visit {
                ua: GOOGLEBOT,
                ip: "66.249.66.1",
                country: "US",
                minutes_from_midnight: 40,
                body: json!({"url":"https://shop.example.com/","ts":at(40)}),
            },
        ),
        // V4: Hacker News, a bounce at 02:xx local (the next UTC day).
        (
            shop,
            Visit {
                ua: CHROME_MAC,
                ip: "198.51.100.4",
                country: "",
                minutes_from_midnight: 120,
                body: json!({"url":"https://shop.example.com/","referrer":"https://news.ycombinator.com/item?id=1","ts":at(120)}),
            },
        ),
        // Another site of the same tenant.
        (
            "blog.example.com",
            Visit {
                ua: CHROME_MAC,
                ip: "198.51.100.5",
                country: "GB",
                minutes_from_midnight: 5,
                body: json!({"url":"https://blog.example.com/post","referrer":"https://duckduckgo.com/","ts":at(5)}),
            },
        ),
    ]
}

async fn get(c: &reqwest::Client, s: &Server, token: &str, path: &str) -> (u16, Value) {
    let r = c.get(s.url(path)).bearer_auth(token).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Posts the events to `collect` and checks every answer of `query` (which may be the same
/// server).
pub async fn known_events_give_exact_numbers(collect: &Server, query: &Server) {
    let c = client();
    let (m, day) = midnight();
    let d0 = (day - Days::new(1)).to_string(); // the local day before midnight
    let d1 = day.to_string(); // the local day after midnight

    for (site, v) in dataset(m) {
        let mut req = c
            .post(collect.url("/v1/collect"))
            .bearer_auth(write_token("acme", site))
            .header("User-Agent", v.ua)
            .header("X-Forwarded-For", v.ip)
            .json(&v.body);
        if !v.country.is_empty() {
            req = req.header("CF-IPCountry", v.country);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 202, "event at {} min", v.minutes_from_midnight);
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"accepted": 1, "rejected": []}));
    }
    // A batch with one bad event: the others are stored, the bad one is named.
    let r = c
        .post(collect.url("/v1/collect"))
        .bearer_auth(write_token("acme", "blog.example.com"))
        .header("User-Agent", FIREFOX_WIN)
        .header("X-Forwarded-For", "198.51.100.6")
        .json(&json!({"events": [
            {"url": "https://blog.example.com/a", "ts": (m + Duration::minutes(50)).to_rfc3339()},
            {"url": "not a url"},
            {"url": "https://blog.example.com/b", "ts": (m + Duration::minutes(51)).to_rfc3339()}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["accepted"], 2);
    assert_eq!(v["rejected"][0]["index"], 1);
    assert_eq!(v["rejected"][0]["field"], "url");

    let shop = read_token("acme", "shop.example.com");
    let range = format!("from={d0}&to={d1}");
    // Through a log the events are stored a moment after their 202: wait for all of them
    // (8 shop events incl. the bot; the answer is exact once they are in).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let (_, v) = get(
            &c,
            query,
            &shop,
            &format!("/v1/sites/shop.example.com/aggregate?{range}&metrics=events"),
        )
        .await;
        let (_, b) = get(
            &c,
            query,
            &read_token("acme", "blog.example.com"),
            "/v1/sites/blog.example.com/aggregate?period=7d&metrics=pageviews",
        )
        .await;
        if v["results"]["events"] == 7 && b["results"]["pageviews"] == 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "events not visible after 90 s: {v} {b}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let all = "visitors,visits,pageviews,events,bounce_rate,visit_duration,views_per_visit";

    // Aggregate over both local days.
    let (s, v) = get(
        &c,
        query,
        &shop,
        &format!("/v1/sites/shop.example.com/aggregate?{range}&metrics={all}"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["results"],
        json!({"visitors": 4, "visits": 5, "pageviews": 6, "events": 7, "bounce_rate": 60, "visit_duration": 84, "views_per_visit": 1.2})
    );
    assert_eq!(v["date_range"]["timezone"], "Europe/Berlin");

    // Daily series in Berlin time: midnight splits V2's two sessions.
    let (_, v) = get(&c, query, &shop, &format!("/v1/sites/shop.example.com/timeseries?{range}&interval=day&metrics=visitors,visits,pageviews,events,bounce_rate")).await;
    assert_eq!(
        v["results"],
        json!([
            {"date": d0, "visitors": 2, "visits": 2, "pageviews": 3, "events": 3, "bounce_rate": 50},
            {"date": d1, "visitors": 3, "visits": 3, "pageviews": 3, "events": 4, "bounce_rate": 67},
        ])
    );

    // The same range in UTC: everything but V4 falls on the first UTC day.
    let utc_d0 = (m - Duration::minutes(60)).date_naive();
    let utc_d1 = (m + Duration::minutes(120)).date_naive();
    let (_, v) = get(&c, query, &shop, &format!("/v1/sites/shop.example.com/timeseries?from={utc_d0}&to={utc_d1}&timezone=UTC&interval=day&metrics=visitors,pageviews")).await;
    assert_eq!(
        v["results"],
        json!([{"date": utc_d0.to_string(), "visitors": 3, "pageviews": 5}, {"date": utc_d1.to_string(), "visitors": 1, "pageviews": 1}])
    );

    // Hourly: 48 buckets, numbers only in the hours that had events.
    let (_, v) = get(
        &c,
        query,
        &shop,
        &format!("/v1/sites/shop.example.com/timeseries?{range}&interval=hour&metrics=pageviews,events"),
    )
    .await;
    let rows = v["results"].as_array().unwrap();
    assert_eq!(rows.len(), 48);
    let nonzero: Vec<(String, i64, i64)> = rows
        .iter()
        .filter(|r| r["events"].as_i64().unwrap() > 0)
        .map(|r| {
            (
                r["date"].as_str().unwrap().to_string(),
                r["pageviews"].as_i64().unwrap(),
                r["events"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        nonzero,
        vec![
            (format!("{d0} 23:00:00"), 3, 3),
            (format!("{d1} 00:00:00"), 2, 3),
            (format!("{d1} 02:00:00"), 1, 1)
        ]
    );

    // Monthly buckets cover the range's months.
    let (_, v) = get(
        &c,
        query,
        &shop,
        &format!("/v1/sites/shop.example.com/timeseries?{range}&interval=month&metrics=visitors"),
    )
    .await;
    let months: i64 = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["visitors"].as_i64().unwrap())
        .sum();
    assert!(months >= 4, "{v}");

    // Breakdowns from the dimension rollup.
    let breakdown = |q: String| {
        let c = c.clone();
        let shop = shop.clone();
        let url = query.url(&format!("/v1/sites/shop.example.com/breakdown?{range}&{q}"));
        async move {
            let r = c.get(url).bearer_auth(shop).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }
    };
    let v = breakdown("property=source&metrics=visitors,visits".into()).await;
    assert_eq!(
        v["results"],
        json!([
            {"source": "Direct / None", "visitors": 1, "visits": 1},
            {"source": "Google", "visitors": 1, "visits": 1},
            {"source": "Hacker News", "visitors": 1, "visits": 1},
            {"source": "Twitter", "visitors": 1, "visits": 1},
            {"source": "newsletter", "visitors": 1, "visits": 1},
        ])
    );
    assert_eq!(v["pagination"]["total"], 5);
    let v = breakdown("property=source&limit=2&page=2".into()).await;
    assert_eq!(
        v["results"],
        json!([{"source": "Hacker News", "visitors": 1}, {"source": "Twitter", "visitors": 1}])
    );
    // Past the last page: no rows, and still the total.
    let v = breakdown("property=source&limit=2&page=9".into()).await;
    assert_eq!(
        (v["results"].clone(), v["pagination"]["total"].clone()),
        (json!([]), json!(5))
    );
    let v = breakdown("property=page&metrics=visitors,pageviews,events".into()).await;
    assert_eq!(
        v["results"],
        json!([
            {"page": "/", "visitors": 3, "pageviews": 3, "events": 3},
            {"page": "/pricing", "visitors": 2, "pageviews": 2, "events": 3},
            {"page": "/blog", "visitors": 1, "pageviews": 1, "events": 1},
        ])
    );
    let v = breakdown("property=channel&metrics=visits,bounce_rate".into()).await;
    assert_eq!(
        v["results"],
        json!([
            {"channel": "Organic Social", "visits": 2, "bounce_rate": 100},
            {"channel": "Direct", "visits": 1, "bounce_rate": 100},
            {"channel": "Email", "visits": 1, "bounce_rate": 0},
            {"channel": "Organic Search", "visits": 1, "bounce_rate": 0},
        ])
    );
    let v = breakdown("property=country".into()).await;
    assert_eq!(
        v["results"],
        json!([{"country": "", "visitors": 1}, {"country": "DE", "visitors": 1}, {"country": "FR", "visitors": 1}, {"country": "US", "visitors": 1}])
    );
    let v = breakdown("property=browser".into()).await;
    assert_eq!(
        v["results"],
        json!([{"browser": "Chrome", "visitors": 2}, {"browser": "Firefox", "visitors": 1}, {"browser": "Safari", "visitors": 1}])
    );
    let v = breakdown("property=device".into()).await;
    assert_eq!(
        v["results"],
        json!([{"device": "desktop", "visitors": 3}, {"device": "mobile", "visitors": 1}])
    );
    let v = breakdown("property=event_name&metrics=visitors,events".into()).await;
    assert_eq!(
        v["results"],
        json!([{"event_name": "pageview", "visitors": 4, "events": 6}, {"event_name": "signup", "visitors": 1, "events": 1}])
    );
    let v = breakdown("property=entry_page&metrics=visits,visit_duration".into()).await;
    assert_eq!(
        v["results"],
        json!([{"entry_page": "/", "visits": 3, "visit_duration": 100}, {"entry_page": "/blog", "visits": 1, "visit_duration": 0}, {"entry_page": "/pricing", "visits": 1, "visit_duration": 120}])
    );
    let v = breakdown("property=utm_campaign&metrics=visitors".into()).await;
    assert_eq!(v["results"], json!([{"utm_campaign": "nov", "visitors": 1}]));

    // Filters: is / is not / contains, on the rollup and across dimensions (events table).
    let (_, v) = get(
        &c,
        query,
        &shop,
        &format!("/v1/sites/shop.example.com/aggregate?{range}&metrics=visitors,pageviews&filters=source==Google"),
    )
    .await;
    assert_eq!(v["results"], json!({"visitors": 1, "pageviews": 2}));
    let (_, v) = get(
        &c,
        query,
        &shop,
        &format!("/v1/sites/shop.example.com/aggregate?{range}&metrics=visitors&filters=browser!=Chrome"),
    )
    .await;
    assert_eq!(v["results"], json!({"visitors": 2}));
    let v = breakdown("property=page&filters=page~PRIC".into()).await;
    assert_eq!(v["results"], json!([{"page": "/pricing", "visitors": 2}]));
    let v = breakdown("property=page&metrics=visitors,pageviews&filters=channel==Organic%20Social".into()).await;
    assert_eq!(v["results"], json!([{"page": "/", "visitors": 2, "pageviews": 2}]));
    let (_, v) = get(&c, query, &shop, &format!("/v1/sites/shop.example.com/timeseries?{range}&interval=day&metrics=visitors&filters=channel==Organic%20Social;device==mobile")).await;
    assert_eq!(
        v["results"],
        json!([{"date": d0, "visitors": 1}, {"date": d1, "visitors": 0}])
    );

    // The other site of the tenant has its own numbers (UTC, its default timezone).
    let blog = read_token("acme", "blog.example.com");
    let (_, v) = get(
        &c,
        query,
        &blog,
        &format!(
            "/v1/sites/blog.example.com/aggregate?from={}&to={}&metrics=visitors,pageviews",
            utc_d0, utc_d1
        ),
    )
    .await;
    assert_eq!(v["results"], json!({"visitors": 2, "pageviews": 3}));

    // Bad parameters are named.
    for (q, parameter) in [
        ("metrics=visitors,revenue_per_kitten", "metrics"),
        ("period=fortnight", "period"),
        ("interval=minute", "interval"),
        ("filters=colour==red", "filters"),
        ("from=2026-13-01&to=2026-12-01", "from"),
        ("timezone=Mars/Olympus", "timezone"),
    ] {
        let (s, v) = get(&c, query, &shop, &format!("/v1/sites/shop.example.com/timeseries?{q}")).await;
        assert_eq!(
            (s, v["error"]["parameter"].as_str()),
            (400, Some(parameter)),
            "{q}: {v}"
        );
    }
    let (s, v) = get(
        &c,
        query,
        &shop,
        "/v1/sites/shop.example.com/breakdown?property=flavour",
    )
    .await;
    assert_eq!((s, v["error"]["parameter"].as_str()), (400, Some("property")));
}
