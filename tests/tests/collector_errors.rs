//! Every collector refusal, with its status and a body that names the field; tokens that
//! must be refused; tenant isolation on reads; idempotent retries; debug and pixel paths.

use serde_json::{json, Value};
use sightline_core::token::Scope;
use sightline_tests::*;

async fn post(
    c: &reqwest::Client,
    s: &Server,
    token: Option<&str>,
    content_type: &str,
    body: String,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = c
        .post(s.url("/v1/collect"))
        .header("Content-Type", content_type)
        .header("User-Agent", CHROME_MAC)
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.json().await.unwrap_or(Value::Null))
}

fn field(v: &Value) -> &str {
    v["error"]["field"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.field in {v}"))
}

const EVENT: &str = r#"{"url":"https://tiny.example.com/"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn each_refusal_has_its_status_and_names_the_field() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(&data, &tenants, &[]);
    let c = client();
    let tiny = write_token("tiny", "tiny.example.com");
    let json_ct = "application/json";

    // 400: unparsable, or not an event.
    let (s, _, v) = post(&c, &server, Some(&tiny), json_ct, "{not json".into()).await;
    assert_eq!((s, field(&v)), (400, "body"));
    assert!(v["error"]["message"].as_str().unwrap().contains("JSON"), "{v}");
    let (s, _, v) = post(&c, &server, Some(&tiny), json_ct, "[1,2]".into()).await;
    assert_eq!((s, field(&v)), (400, "body"));
    let (s, _, v) = post(&c, &server, Some(&tiny), json_ct, r#"{"events": 5}"#.into()).await;
    assert_eq!((s, field(&v)), (400, "events"));

    // 401: missing, malformed, forged, expired, wrong scope, site the tenant does not allow.
    let forged = {
        let claims = sightline_core::token::Claims {
            tenant: "tiny".into(),
            site: "tiny.example.com".into(),
            scope: Scope::Write,
            expires: chrono::Utc::now().timestamp() + 60,
        };
        sightline_core::token::issue(b"not-the-tenant-key", &claims)
    };
    for (token, why) in [
        (None, "missing"),
        (Some("garbage".to_string()), "malformed"),
        (Some(forged), "signature"),
        (Some(token_for("tiny", "tiny.example.com", Scope::Write, -1)), "expired"),
        (Some(read_token("tiny", "tiny.example.com")), "scope"),
        (Some(write_token("tiny", "other.example.com")), "another site"),
        // A tenant that does not exist is answered like a forgery (abuse_edges.rs checks the
        // two answers are the same).
        (Some(write_token("nosuch", "tiny.example.com")), "signature"),
    ] {
        let (s, h, v) = post(&c, &server, token.as_deref(), json_ct, EVENT.into()).await;
        assert_eq!((s, field(&v)), (401, "token"), "{why}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains(why), "{why}: {v}");
        assert_eq!(h.get("www-authenticate").unwrap(), "Bearer");
    }

    // 415: wrong content type.
    let (s, _, v) = post(&c, &server, Some(&tiny), "text/xml", EVENT.into()).await;
    assert_eq!((s, field(&v)), (415, "content-type"));

    // 413: body over the tenant's 2048 bytes, and more events than its 3 per request.
    let big = json!({"url": "https://tiny.example.com/", "props": {"x": "y".repeat(3000)}}).to_string();
    let (s, _, v) = post(&c, &server, Some(&tiny), json_ct, big).await;
    assert_eq!((s, field(&v)), (413, "body"));
    let four = json!({"events": [{"url":"https://tiny.example.com/1"},{"url":"https://tiny.example.com/2"},{"url":"https://tiny.example.com/3"},{"url":"https://tiny.example.com/4"}]});
    let (s, _, v) = post(&c, &server, Some(&tiny), json_ct, four.to_string()).await;
    assert_eq!((s, field(&v)), (413, "events"));

    // 202 with text/plain (sendBeacon), then 429 once the site's bucket (burst 4, 1/s) is empty.
    let three = json!({"events": [{"url":"https://tiny.example.com/1"},{"url":"https://tiny.example.com/2"},{"url":"https://tiny.example.com/3"}]});
    let (s, _, v) = post(&c, &server, Some(&tiny), "text/plain;charset=UTF-8", three.to_string()).await;
    assert_eq!((s, v["accepted"].as_u64()), (202, Some(3)));
    let (s, h, v) = post(&c, &server, Some(&tiny), json_ct, three.to_string()).await;
    assert_eq!((s, field(&v)), (429, "site"));
    let retry: u64 = h.get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry), "Retry-After {retry}");

    // CORS preflight for browsers.
    let r = c
        .request(reqwest::Method::OPTIONS, server.url("/v1/collect"))
        .header("Origin", "https://tiny.example.com")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "content-type,authorization")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(r.headers().get("access-control-allow-origin").unwrap(), "*");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backed_up_store_answers_503_with_retry_after() {
    let (_dir, data, tenants) = fixture();
    // Room for one waiting event: a request of two can never be queued.
    let server = Server::start(&data, &tenants, &["--max-pending-events", "1"]);
    let c = client();
    let body =
        json!({"events": [{"url":"https://shop.example.com/1"},{"url":"https://shop.example.com/2"}]}).to_string();
    let (s, h, v) = post(
        &c,
        &server,
        Some(&write_token("acme", "shop.example.com")),
        "application/json",
        body,
    )
    .await;
    assert_eq!((s, field(&v)), (503, "events"), "{v}");
    assert_eq!(h.get("retry-after").unwrap(), "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_read_only_their_own_site_and_retries_are_idempotent() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(&data, &tenants, &[]);
    let c = client();
    let write = write_token("acme", "blog.example.com");
    let id = uuid::Uuid::new_v4().to_string();
    let body = json!({"events": [{"id": id, "url": "https://blog.example.com/x"}, {"id": id, "url": "https://blog.example.com/x"}]}).to_string();
    // Sent twice (a client retry), and twice within the batch: stored once.
    for _ in 0..2 {
        let (s, _, _) = post(&c, &server, Some(&write), "application/json", body.clone()).await;
        assert_eq!(s, 202);
    }
    let blog = read_token("acme", "blog.example.com");
    let r = c
        .get(server.url("/v1/sites/blog.example.com/aggregate?period=7d&metrics=pageviews"))
        .bearer_auth(&blog)
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["results"]["pageviews"], 1);

    // Site A's token cannot read site B, through every endpoint; nor can a write token read.
    for path in ["aggregate", "timeseries", "breakdown?property=page"] {
        let r = c
            .get(server.url(&format!("/v1/sites/shop.example.com/{path}")))
            .bearer_auth(&blog)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let r = c
            .get(server.url(&format!("/v1/sites/blog.example.com/{path}")))
            .bearer_auth(&write)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
        let r = c
            .get(server.url(&format!("/v1/sites/blog.example.com/{path}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let other_tenant = read_token("tiny", "tiny.example.com");
    let r = c
        .get(server.url("/v1/sites/blog.example.com/aggregate"))
        .bearer_auth(&other_tenant)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let expired = token_for("acme", "blog.example.com", Scope::Read, -5);
    let r = c
        .get(server.url("/v1/sites/blog.example.com/aggregate"))
        .bearer_auth(&expired)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn debug_stores_nothing_and_the_pixel_stores_one_event() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(&data, &tenants, &[]);
    let c = client();
    let write = write_token("acme", "blog.example.com");
    let r = c
        .post(server.url("/v1/collect/debug"))
        .bearer_auth(&write)
        .header("User-Agent", SAFARI_IPHONE)
        .json(&json!({"events": [{"url": "https://blog.example.com/p?utm_campaign=spring", "referrer": "https://www.bing.com/"}, {"url": "ftp://nope"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["accepted"], 1);
    assert_eq!(v["rejected"][0]["field"], "url");
    assert_eq!(v["processed"][0]["referrer_source"], "Bing");
    assert_eq!(v["processed"][0]["device"], "mobile");

    let r = c
        .get(server.url("/v1/collect"))
        .query(&[
            ("token", write.as_str()),
            ("url", "https://blog.example.com/noscript"),
            ("referrer", "https://t.co/x"),
        ])
        .header("User-Agent", CHROME_MAC)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("content-type").unwrap(), "image/gif");
    assert_eq!(&r.bytes().await.unwrap()[..6], b"GIF89a");
    let r = c
        .get(server.url("/v1/collect"))
        .query(&[("token", write.as_str()), ("url", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"]["field"], "url");

    let read = read_token("acme", "blog.example.com");
    let r = c
        .get(server.url("/v1/sites/blog.example.com/breakdown?period=7d&property=page&metrics=pageviews"))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["results"],
        json!([{"page": "/noscript", "pageviews": 1}])
    );
}
