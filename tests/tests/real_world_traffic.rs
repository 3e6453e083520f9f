//! What browsers, apps, proxies and crawlers really send, through the HTTP APIs and the query
//! API of a standalone server: odd optional fields, sources and channels, visits across UTC
//! midnight, non-interactive events, one page however it is spelled. Each case is one member
//! of a kind; each test checks the kind's rule with more than the one case.

use chrono::{DateTime, Duration, Utc};
use serde_json::{json, Value};
use sightline_tests::*;

const TENANT: &str = r#"
apiVersion: sightline.dev/v1alpha1
kind: AnalyticsTenant
metadata: { name: rw }
spec:
  sites:
    allowed:
      - id: shop.example.com
        timezone: America/New_York
      - id: cafe.example.com
  ga4:
    - measurementId: G-RWSHOP123
      site: shop.example.com
  goals:
    - { name: Cafe, page: "/caf%C3%A9/" }
    - { name: Thanks, page: "/thank-you/" }
"#;

struct Site {
    server: Server,
    _dir: tempfile::TempDir,
}

fn start() -> Site {
    let dir = tempfile::tempdir().unwrap();
    let tenants = dir.path().join("tenants");
    std::fs::create_dir_all(&tenants).unwrap();
    std::fs::write(tenants.join("rw.yaml"), TENANT).unwrap();
    let server = Server::start(&dir.path().join("data"), &tenants, &[]);
    Site { server, _dir: dir }
}

/// Posts events for `site` from one browser (its address and user agent); the answer.
async fn post(s: &Site, site: &str, ip: &str, events: Value) -> Value {
    let r = client()
        .post(s.server.url("/v1/collect"))
        .bearer_auth(write_token("rw", site))
        .header("User-Agent", CHROME_MAC)
        .header("X-Forwarded-For", ip)
        .json(&json!({ "events": events }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    r.json().await.unwrap()
}

/// `POST /v1/query` for `site` with `body` (site_id added); the answer's results.
async fn query(s: &Site, site: &str, mut body: Value) -> Value {
    body["site_id"] = json!(site);
    let r = client()
        .post(s.server.url("/v1/query"))
        .bearer_auth(read_token("rw", site))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let v: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{v}");
    v["results"].clone()
}

/// The rows of a one-dimension breakdown as (dimension value, metric values), by value.
fn rows(results: &Value) -> Vec<(String, Vec<Value>)> {
    let mut rows: Vec<(String, Vec<Value>)> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["dimensions"][0].as_str().unwrap_or_default().to_string(),
                r["metrics"].as_array().unwrap().clone(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

fn ago(minutes: i64) -> String {
    (Utc::now() - Duration::minutes(minutes)).to_rfc3339()
}

#[tokio::test(flavor = "multi_thread")]
async fn odd_optional_fields_never_sink_their_event() {
    let s = start();
    let long_state = "x".repeat(2100);
    let v = post(
        &s,
        "cafe.example.com",
        "198.51.100.10",
        json!([
            // A visit from the Google app.
            {"url": "https://cafe.example.com/menu", "referrer": "android-app://com.google.android.googlequicksearchbox/", "ts": ago(50)},
            // A page URL whose length is all query string.
            {"url": format!("https://cafe.example.com/checkout?state={long_state}"), "ts": ago(49)},
            // A purchase whose value is a float with noise, and one with its amount as text.
            {"name": "purchase", "url": "https://cafe.example.com/checkout", "ts": ago(48),
             "revenue": {"amount": 54.989999999999995, "currency": "usd"}},
            {"name": "purchase", "url": "https://cafe.example.com/checkout", "ts": ago(47),
             "revenue": {"amount": "0.30000000000000004", "currency": "USD"}},
            // More members of the kind: a referrer that is no URL, a clock far ahead, props that
            // are too many or nested, revenue without a currency, a field we do not know.
            {"url": "https://cafe.example.com/a", "referrer": "not a url", "ts": ago(46)},
            {"url": "https://cafe.example.com/b", "ts": (Utc::now() + Duration::hours(3)).to_rfc3339()},
            {"url": "https://cafe.example.com/c", "ts": ago(45), "props": {"ok": "1", "nested": {"a": 1}}},
            {"name": "purchase", "url": "https://cafe.example.com/checkout", "ts": ago(44), "revenue": {"amount": 3}},
            {"url": "https://cafe.example.com/d", "ts": ago(43), "screen": "1920x1080"},
            // What makes an event still refuses it, alone.
            {"url": "ftp://cafe.example.com/"},
        ]),
    )
    .await;
    assert_eq!(v["accepted"], 9, "{v}");
    assert_eq!(v["rejected"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["rejected"][0]["index"], 9);
    let adjusted: Vec<(u64, String)> = v["adjusted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["index"].as_u64().unwrap(), a["field"].as_str().unwrap().to_string()))
        .collect();
    for expected in [
        (1, "url"),
        (4, "referrer"),
        (5, "ts"),
        (6, "props.nested"),
        (7, "revenue.currency"),
        (8, "screen"),
    ] {
        assert!(
            adjusted.contains(&(expected.0, expected.1.to_string())),
            "{expected:?} not in {adjusted:?}"
        );
    }

    let sources = query(
        &s,
        "cafe.example.com",
        json!({"metrics": ["visitors"], "date_range": "7d", "dimensions": ["source"], "path": "events",
               "filters": [["is", "page", ["/menu"]]]}),
    )
    .await;
    assert_eq!(rows(&sources), vec![("Google".to_string(), vec![json!(1)])]);
    let pages = query(
        &s,
        "cafe.example.com",
        json!({"metrics": ["pageviews"], "date_range": "7d", "dimensions": ["page"]}),
    )
    .await;
    let pages = rows(&pages);
    assert!(
        pages.contains(&("/checkout".to_string(), vec![json!(1)])),
        "the long URL is the page /checkout: {pages:?}"
    );
    assert_eq!(pages.len(), 6, "every pageview stored: {pages:?}");
    let revenue = query(
        &s,
        "cafe.example.com",
        json!({"metrics": ["revenue"], "date_range": "7d"}),
    )
    .await;
    assert_eq!(revenue[0]["metrics"][0], json!({"USD": "55.29"}), "54.99 + 0.3");

    // The same purchase through GA4 Measurement Protocol.
    let secret = write_token("rw", "shop.example.com");
    let r = client()
        .post(s.server.url("/mp/collect"))
        .query(&[("measurement_id", "G-RWSHOP123"), ("api_secret", secret.as_str())])
        .json(
            &json!({"client_id": "555.1", "events": [{"name": "purchase", "params": {
            "currency": "USD", "value": 54.989999999999995, "page_location": "https://shop.example.com/thanks"}}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let revenue = query(
        &s,
        "shop.example.com",
        json!({"metrics": ["revenue"], "date_range": "7d"}),
    )
    .await;
    assert_eq!(revenue[0]["metrics"][0], json!({"USD": "54.99"}));
}

#[tokio::test(flavor = "multi_thread")]
async fn sources_and_channels_follow_ga4() {
    let s = start();
    let site = "cafe.example.com";
    let visit = |ip: u8, url: &str, referrer: &str, minutes: i64| {
        (
            format!("198.51.100.{ip}"),
            json!([{"url": url, "referrer": referrer, "ts": ago(minutes)}]),
        )
    };
    for (ip, events) in [
        // A Facebook share: organic social, though it carries a click id.
        visit(
            1,
            "https://cafe.example.com/?fbclid=IwAR0abc",
            "https://l.facebook.com/",
            60,
        ),
        // Tagged and referred Google visits are one source.
        visit(
            2,
            "https://cafe.example.com/?utm_source=google&utm_medium=organic",
            "https://www.google.com/",
            59,
        ),
        visit(3, "https://cafe.example.com/", "https://www.google.com/", 58),
        visit(4, "https://cafe.example.com/?utm_source=GOOGLE&utm_medium=cpc", "", 57),
        // Webmail under a search engine's name is email.
        visit(5, "https://cafe.example.com/", "https://mail.yahoo.co.uk/", 56),
        // More: a Google Ads click (paid), an Instagram tag, a newsletter, a partner link.
        visit(
            6,
            "https://cafe.example.com/?gclid=Cj0abc",
            "https://www.google.com/",
            55,
        ),
        visit(7, "https://cafe.example.com/?utm_source=ig&utm_medium=social", "", 54),
        visit(
            8,
            "https://cafe.example.com/?utm_source=newsletter&utm_medium=email",
            "",
            53,
        ),
        visit(9, "https://cafe.example.com/", "https://blog.partner.example/post", 52),
        visit(10, "https://cafe.example.com/", "", 51),
    ] {
        post(&s, site, &ip, events).await;
    }
    let breakdown = |dimension: &str| {
        query(
            &s,
            site,
            json!({"metrics": ["visits"], "date_range": "7d", "dimensions": [dimension], "order_by": [[dimension, "asc"]]}),
        )
    };
    let sources = rows(&breakdown("source").await);
    assert_eq!(
        sources,
        vec![
            ("Direct / None".to_string(), vec![json!(1)]),
            ("Facebook".to_string(), vec![json!(1)]),
            ("Google".to_string(), vec![json!(4)]),
            ("Instagram".to_string(), vec![json!(1)]),
            ("Yahoo! Mail".to_string(), vec![json!(1)]),
            ("blog.partner.example".to_string(), vec![json!(1)]),
            ("newsletter".to_string(), vec![json!(1)]),
        ]
    );
    let channels = rows(&breakdown("channel").await);
    assert_eq!(
        channels,
        vec![
            ("Direct".to_string(), vec![json!(1)]),
            ("Email".to_string(), vec![json!(2)]),
            ("Organic Search".to_string(), vec![json!(2)]),
            ("Organic Social".to_string(), vec![json!(2)]),
            ("Paid Search".to_string(), vec![json!(2)]),
            ("Referral".to_string(), vec![json!(1)]),
        ]
    );
    // One filter finds both Google spellings, however the filter writes the name.
    for written in ["Google", "google", "google.com"] {
        let v = query(
            &s,
            site,
            json!({"metrics": ["visits"], "date_range": "7d", "filters": [["is", "source", [written]]]}),
        )
        .await;
        assert_eq!(v[0]["metrics"][0], 4, "source is {written}");
    }
    let v = query(
        &s,
        site,
        json!({"metrics": ["visits"], "date_range": "7d", "filters": [["is", "channel", ["organic social"]]]}),
    )
    .await;
    assert_eq!(v[0]["metrics"][0], 2);
}

/// The latest UTC midnight at least 15 minutes ago: a visit around it lies in the past.
fn past_midnight() -> DateTime<Utc> {
    let now = Utc::now() - Duration::minutes(15);
    now.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_visit_across_utc_midnight_is_one_visit() {
    let s = start();
    let m = past_midnight();
    let at = |minutes: i64| (m + Duration::minutes(minutes)).to_rfc3339();
    // One New York visitor (same IP and browser), four pageviews from 10 minutes before to 10
    // minutes after UTC midnight (evening in New York), from a Google search.
    post(
        &s,
        "shop.example.com",
        "198.51.100.20",
        json!([
            {"url": "https://shop.example.com/", "referrer": "https://www.google.com/", "ts": at(-10)},
            {"url": "https://shop.example.com/a", "referrer": "https://shop.example.com/", "ts": at(-3)},
        ]),
    )
    .await;
    post(
        &s,
        "shop.example.com",
        "198.51.100.20",
        json!([
            {"url": "https://shop.example.com/b", "referrer": "https://shop.example.com/a", "ts": at(3)},
            {"url": "https://shop.example.com/c", "referrer": "https://shop.example.com/b", "ts": at(10)},
        ]),
    )
    .await;
    // Another visitor: 40 minutes between two pageviews across midnight is two visits.
    post(
        &s,
        "shop.example.com",
        "198.51.100.21",
        json!([
            {"url": "https://shop.example.com/", "ts": at(-20)},
            {"url": "https://shop.example.com/x", "ts": at(20)},
        ]),
    )
    .await;
    // The local evening in New York that holds UTC midnight.
    let day = m.with_timezone(&chrono_tz::America::New_York).date_naive().to_string();
    let range = json!([day, day]);
    let one = |ip_filter: &str| {
        json!({"metrics": ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"], "date_range": range,
               "filters": [["is", "entry_page", [ip_filter]]]})
    };
    let v = query(&s, "shop.example.com", one("/")).await;
    let metrics = v[0]["metrics"].clone();
    // Entry page "/" is both visitors' first visit: 2 visitors, 2 visits of which the first
    // (4 pageviews, 20 minutes) is no bounce and the second (1 pageview) is.
    assert_eq!(metrics, json!([2, 2, 5, 50, 600]), "{v}");
    let v = query(
        &s,
        "shop.example.com",
        json!({"metrics": ["visitors", "visits", "visit_duration"], "date_range": range, "dimensions": ["source"]}),
    )
    .await;
    assert_eq!(
        rows(&v),
        vec![
            // Two visits 40 minutes apart across midnight: the daily visitor id changed, and
            // no visit carried it over.
            ("Direct / None".to_string(), vec![json!(2), json!(2), json!(0)]),
            ("Google".to_string(), vec![json!(1), json!(1), json!(1200)]),
        ],
        "the second half is not 'Internal' and not a visitor of its own"
    );
    // Every tier and path agrees.
    let events_path = query(
        &s,
        "shop.example.com",
        json!({"metrics": ["visitors", "visits", "visit_duration"], "date_range": range, "dimensions": ["source"], "path": "events"}),
    )
    .await;
    assert_eq!(rows(&events_path), rows(&v));
}

#[tokio::test(flavor = "multi_thread")]
async fn non_interactive_events_leave_bounces_and_durations_alone() {
    let s = start();
    let site = "cafe.example.com";
    // A page with an autoplay video event sent on load.
    post(
        &s,
        site,
        "198.51.100.30",
        json!([
            {"url": "https://cafe.example.com/video", "ts": ago(30)},
            {"name": "video_autoplay", "url": "https://cafe.example.com/video", "ts": ago(29), "interactive": false},
        ]),
    )
    .await;
    // The same through the pixel, and through GA4's non_interaction.
    let r = client()
        .get(s.server.url("/v1/collect"))
        .query(&[
            ("token", write_token("rw", site).as_str()),
            ("url", "https://cafe.example.com/video"),
            ("name", "scroll_ping"),
            ("interactive", "false"),
            (
                "ts",
                &(Utc::now() - Duration::minutes(28)).timestamp_millis().to_string(),
            ),
        ])
        .header("User-Agent", CHROME_MAC)
        .header("X-Forwarded-For", "198.51.100.30")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // A visitor whose two pageviews are a real visit, with a ping between them.
    post(
        &s,
        site,
        "198.51.100.31",
        json!([
            {"url": "https://cafe.example.com/", "ts": ago(20)},
            {"name": "heartbeat", "url": "https://cafe.example.com/", "ts": ago(19), "interactive": false},
            {"url": "https://cafe.example.com/menu", "ts": ago(18)},
            // After the visit: a ping 10 minutes later does not make it longer.
            {"name": "heartbeat", "url": "https://cafe.example.com/menu", "ts": ago(8), "interactive": false},
        ]),
    )
    .await;
    let v = query(
        &s,
        site,
        json!({"metrics": ["visitors", "visits", "pageviews", "events", "bounce_rate", "visit_duration"], "date_range": "7d",
               "dimensions": ["entry_page"]}),
    )
    .await;
    let got = rows(&v);
    assert_eq!(
        got,
        vec![
            (
                "/".to_string(),
                vec![json!(1), json!(1), json!(2), json!(4), json!(0), json!(120)]
            ),
            (
                "/video".to_string(),
                vec![json!(1), json!(1), json!(1), json!(3), json!(100), json!(0)]
            ),
        ]
    );

    let secret = write_token("rw", "shop.example.com");
    let ga4 = |name: &str, params: Value| json!({"client_id": "42.1", "events": [{"name": name, "params": params}]});
    for body in [
        ga4("page_view", json!({"page_location": "https://shop.example.com/promo"})),
        ga4(
            "video_start",
            json!({"non_interaction": 1, "page_location": "https://shop.example.com/promo"}),
        ),
    ] {
        let r = client()
            .post(s.server.url("/mp/collect"))
            .query(&[("measurement_id", "G-RWSHOP123"), ("api_secret", secret.as_str())])
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let v = query(
        &s,
        "shop.example.com",
        json!({"metrics": ["visits", "events", "bounce_rate"], "date_range": "7d"}),
    )
    .await;
    assert_eq!(
        v[0]["metrics"],
        json!([1, 2, 100]),
        "GA4's non_interaction event keeps the bounce"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_page_however_it_is_spelled() {
    let s = start();
    let site = "cafe.example.com";
    post(
        &s,
        site,
        "198.51.100.40",
        json!([
            {"url": "https://cafe.example.com/caf%C3%A9", "ts": ago(40)},
            {"url": "https://cafe.example.com/caf%c3%a9", "ts": ago(39)},
            {"url": "https://cafe.example.com/café", "ts": ago(38)},
            {"url": "https://cafe.example.com/cafe\u{301}/", "ts": ago(37)},
            {"url": "https://cafe.example.com/a%5Fb", "ts": ago(36)},
            {"url": "https://cafe.example.com/a_b", "ts": ago(35)},
            {"url": "https://cafe.example.com/thank-you", "ts": ago(34)},
            {"url": "https://cafe.example.com/#/landing?utm_source=newsletter&utm_medium=email", "ts": ago(90)},
        ]),
    )
    .await;
    let pages = query(
        &s,
        site,
        json!({"metrics": ["pageviews"], "date_range": "7d", "dimensions": ["page"]}),
    )
    .await;
    let pages = rows(&pages);
    assert_eq!(
        pages,
        vec![
            ("/#/landing".to_string(), vec![json!(1)]),
            ("/a_b".to_string(), vec![json!(2)]),
            ("/café".to_string(), vec![json!(4)]),
            ("/thank-you".to_string(), vec![json!(1)]),
        ]
    );
    // A filter written either way finds all of them.
    for written in ["/caf%C3%A9", "/caf%c3%a9", "/café", "/café/"] {
        let v = query(
            &s,
            site,
            json!({"metrics": ["pageviews"], "date_range": "7d", "filters": [["is", "page", [written]]]}),
        )
        .await;
        assert_eq!(v[0]["metrics"][0], 4, "{written}");
    }
    let v = query(
        &s,
        site,
        json!({"metrics": ["pageviews"], "date_range": "7d", "filters": [["contains", "page", ["%5F"]]]}),
    )
    .await;
    assert_eq!(v[0]["metrics"][0], 2);
    // Goals written with escapes or a trailing slash match the stored page.
    let v = query(
        &s,
        site,
        json!({"metrics": ["events"], "date_range": "7d", "dimensions": ["goal"]}),
    )
    .await;
    let goals = rows(&v);
    assert_eq!(
        goals,
        vec![
            ("Cafe".to_string(), vec![json!(4)]),
            ("Thanks".to_string(), vec![json!(1)])
        ]
    );
    // UTM tags inside a hash route count.
    let v = query(
        &s,
        site,
        json!({"metrics": ["visits"], "date_range": "7d", "dimensions": ["channel"],
               "filters": [["is", "entry_page", ["/#/landing"]]]}),
    )
    .await;
    assert_eq!(rows(&v), vec![("Email".to_string(), vec![json!(1)])]);
    let v = query(
        &s,
        site,
        json!({"metrics": ["visits"], "date_range": "7d", "dimensions": ["source"],
               "filters": [["is", "entry_page", ["/#/landing/"]]]}),
    )
    .await;
    assert_eq!(rows(&v), vec![("newsletter".to_string(), vec![json!(1)])]);
}
