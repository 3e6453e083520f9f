//! What browsers, apps and crawlers really send, through /v1/collect and the query API's
//! `device` and `browser` breakdowns: a phone whose model name contains "BOT" is a person on
//! a mobile, in-app browsers are named for their app, tablets are tablets, a User-Agent
//! holding a byte outside ASCII is parsed as the browser it is, and crawlers and tools
//! (Google-InspectionTool, Bingbot, headless Chrome, curl) are stored but never counted.

use axum::http::HeaderValue;
use serde_json::{json, Value};
use sightline_tests::*;

const SITE: &str = "blog.example.com";

/// (User-Agent bytes, what it is): each is another visitor.
const AGENTS: &[(&[u8], &str)] = &[
    (CHROME_MAC.as_bytes(), "Chrome on a Mac"),
    (
        b"Mozilla/5.0 (Linux; Android 12; CUBOT_X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
        "Chrome on a CUBOT phone",
    ),
    // The registered sign as one ISO-8859-1 byte (0xAE), as some phones send it.
    (
        b"Mozilla/5.0 (Linux; Android 13; moto g stylus 5G (2023)\xae) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.210 Mobile Safari/537.36",
        "Chrome on a phone with a Latin-1 byte in its model",
    ),
    // ... and in UTF-8 (0xC2 0xAE), on a tablet.
    (
        b"Mozilla/5.0 (Linux; Android 12; Lenovo Tab M10\xc2\xae) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        "Chrome on an Android tablet with a UTF-8 byte in its model",
    ),
    (
        b"Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        "Safari on an iPad",
    ),
    (
        b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/470.0.0.33.109;FBBV/612083440;FBDV/iPhone15,3;FBMD/iPhone;FBSN/iOS;FBSV/17.5;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5]",
        "Facebook's in-app browser on an iPhone",
    ),
    (
        b"Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/127.0.6533.103 Mobile Safari/537.36 Instagram 343.0.0.33.101 Android (34/14; 480dpi; 1080x2340; samsung; SM-S918B; dm3q; qcom; en_US; 626412447)",
        "Instagram's in-app browser on an Android phone",
    ),
    // Crawlers and tools: stored, never counted.
    (b"Mozilla/5.0 (compatible; Google-InspectionTool/1.0;)", "Google-InspectionTool"),
    (
        b"Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
        "Bingbot",
    ),
    (
        b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
        "headless Chrome",
    ),
    (b"curl/8.5.0", "curl"),
];

async fn breakdown(server: &Server, property: &str) -> Value {
    let r = client()
        .get(server.url(&format!(
            "/v1/sites/{SITE}/breakdown?period=7d&property={property}&metrics=visitors"
        )))
        .bearer_auth(read_token("acme", SITE))
        .send()
        .await
        .expect("breakdown");
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.expect("json")["results"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_browsers_and_bots_as_real_clients_send_them() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(&data, &tenants, &[]);
    let c = client();
    for (i, (ua, what)) in AGENTS.iter().enumerate() {
        let r = c
            .post(server.url("/v1/collect"))
            .bearer_auth(write_token("acme", SITE))
            .header("User-Agent", HeaderValue::from_bytes(ua).expect("a header value"))
            .header("X-Forwarded-For", format!("198.51.100.{}", i + 1))
            .json(&json!({"url": format!("https://{SITE}/")}))
            .send()
            .await
            .expect("collect");
        assert_eq!(r.status(), 202, "{what}");
    }

    assert_eq!(
        breakdown(&server, "device").await,
        json!([
            {"device": "mobile", "visitors": 4},
            {"device": "tablet", "visitors": 2},
            {"device": "desktop", "visitors": 1},
        ])
    );
    assert_eq!(
        breakdown(&server, "browser").await,
        json!([
            {"browser": "Chrome", "visitors": 4},
            {"browser": "Facebook", "visitors": 1},
            {"browser": "Instagram", "visitors": 1},
            {"browser": "Safari", "visitors": 1},
        ])
    );
    // The query language gives the same, and the bots are nowhere in it.
    let r = c
        .post(server.url("/v1/query"))
        .bearer_auth(read_token("acme", SITE))
        .json(&json!({
            "site_id": SITE,
            "metrics": ["visitors", "pageviews"],
            "date_range": "7d",
            "dimensions": ["device", "browser"],
            "order_by": [["device", "asc"], ["browser", "asc"]],
        }))
        .send()
        .await
        .expect("query");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    let rows: Vec<Value> = v["results"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| json!([r["dimensions"][0], r["dimensions"][1], r["metrics"][0]]))
        .collect();
    assert_eq!(
        rows,
        vec![
            json!(["desktop", "Chrome", 1]),
            json!(["mobile", "Chrome", 2]),
            json!(["mobile", "Facebook", 1]),
            json!(["mobile", "Instagram", 1]),
            json!(["tablet", "Chrome", 1]),
            json!(["tablet", "Safari", 1]),
        ]
    );
}
