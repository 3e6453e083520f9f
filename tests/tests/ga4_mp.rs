//! GA4 Measurement Protocol payloads in the shapes of Google's documented examples are
//! stored and queryable; invalid ones get GA4's validation codes from the debug endpoint.

use serde_json::{json, Value};
use sightline_tests::*;

const MID: &str = "G-SHOP12345";

async fn send(c: &reqwest::Client, s: &Server, path: &str, secret: &str, body: &Value) -> reqwest::Response {
    c.post(s.url(path))
        .query(&[("measurement_id", MID), ("api_secret", secret)])
        .header("User-Agent", "python-requests/2.31.0")
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn codes(c: &reqwest::Client, s: &Server, secret: &str, body: &Value) -> Vec<(String, String)> {
    let r = send(c, s, "/debug/mp/collect", secret, body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["validationMessages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["fieldPath"].as_str().unwrap().to_string(),
                m["validationCode"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn documented_payloads_are_stored_and_invalid_ones_get_ga4_codes() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(&data, &tenants, &[]);
    let c = client();
    let secret = write_token("acme", "shop.example.com");

    let page_view = json!({
        "client_id": "123456.7654321",
        "events": [{"name": "page_view", "params": {
            "page_location": "https://shop.example.com/products?utm_campaign=ga4",
            "page_referrer": "https://www.google.com/",
            "page_title": "Products",
            "session_id": "1700000000",
            "engagement_time_msec": "100"
        }}]
    });
    let purchase = json!({
        "client_id": "123456.7654321",
        "user_id": "user-1",
        "user_properties": {"customer_tier": {"value": "premium"}},
        "events": [{"name": "purchase", "params": {
            "currency": "USD", "value": 30.03, "transaction_id": "T_12345", "session_id": "1700000000",
            "items": [{"item_id": "SKU_12345", "item_name": "Stan and Friends Tee", "price": 10.01, "quantity": 3}]
        }}]
    });
    let custom = json!({
        "client_id": "999.888",
        "events": [{"name": "tutorial_begin", "params": {"session_id": "42", "engagement_time_msec": "1200"}}]
    });
    let batch: Vec<Value> = (0..25)
        .map(|i| json!({"name": "page_view", "params": {"page_location": format!("https://shop.example.com/batch/{i}")}}))
        .collect();
    let batch = json!({"client_id": "555.444", "events": batch});

    for body in [&page_view, &purchase, &custom, &batch] {
        assert!(codes(&c, &server, &secret, body).await.is_empty(), "valid: {body}");
        let r = send(&c, &server, "/mp/collect", &secret, body).await;
        assert_eq!(r.status(), 204);
    }

    // Invalid payloads: the debug endpoint names the field and GA4's code ...
    let too_many =
        json!({"client_id": "1.2", "events": (0..26).map(|_| json!({"name": "page_view"})).collect::<Vec<_>>()});
    let cases: Vec<(Value, (&str, &str))> = vec![
        (
            json!({"events": [{"name": "page_view"}]}),
            ("client_id", "VALUE_REQUIRED"),
        ),
        (too_many.clone(), ("events", "EXCEEDED_MAX_ENTITIES")),
        (json!({"client_id": "1.2", "events": []}), ("events", "VALUE_REQUIRED")),
        (
            json!({"client_id": "1.2", "events": [{"name": "session_start"}]}),
            ("events[0].name", "NAME_RESERVED"),
        ),
        (
            json!({"client_id": "1.2", "events": [{"name": "_badEventName"}]}),
            ("events[0].name", "NAME_INVALID"),
        ),
        (
            json!({"client_id": "1.2", "events": [{"name": "bad-name"}]}),
            ("events[0].name", "NAME_INVALID"),
        ),
        (
            json!({"client_id": "1.2", "events": [{"name": "ok", "params": {"firebase_x": "1"}}]}),
            ("events[0].params.firebase_x", "NAME_RESERVED"),
        ),
        (
            json!({"client_id": "1.2", "events": [{"name": "ok", "params": {"note": "x".repeat(101)}}]}),
            ("events[0].params.note", "VALUE_OUT_OF_BOUNDS"),
        ),
        (
            json!({"client_id": "1.2", "events": [{"name": "purchase", "params": {"value": 5}}]}),
            ("events[0].params.currency", "VALUE_REQUIRED"),
        ),
        (
            json!({"client_id": "1.2", "events": [{"name": "page_view", "params": {"page_location": "ftp://files.example.com/"}}]}),
            ("events[0].params.page_location", "VALUE_INVALID"),
        ),
        (
            json!({"client_id": "1.2", "timestamp_micros": 1_000_000_000_000_000i64, "events": [{"name": "page_view"}]}),
            ("events[0].timestamp_micros", "VALUE_OUT_OF_BOUNDS"),
        ),
    ];
    for (body, (path, code)) in &cases {
        let got = codes(&c, &server, &secret, body).await;
        assert!(
            got.iter().any(|(p, k)| p == path && k == code),
            "{body}: expected {path} {code}, got {got:?}"
        );
        // ... and the main endpoint answers 2xx, like GA4, storing none of it.
        assert_eq!(send(&c, &server, "/mp/collect", &secret, body).await.status(), 204);
    }
    // A user property that GA4 refuses (too long, or a name GA4 reserves) is dropped on its
    // own: the debug endpoint names it, the main one stores the event without it.
    for (properties, path, code) in [
        (
            json!({"tier": {"value": "x".repeat(37)}}),
            "user_properties.tier.value",
            "VALUE_OUT_OF_BOUNDS",
        ),
        (
            json!({"first_open_time": {"value": "1"}}),
            "user_properties.first_open_time",
            "NAME_RESERVED",
        ),
        (
            json!({"user_id": {"value": "u-42"}}),
            "user_properties.user_id",
            "NAME_RESERVED",
        ),
        (
            json!({"first_visit_time": {"value": "1"}, "plan": {"value": "pro"}}),
            "user_properties.first_visit_time",
            "NAME_RESERVED",
        ),
    ] {
        let body = json!({"client_id": "1.2", "user_properties": properties, "events": [{"name": "profile_update"}]});
        let got = codes(&c, &server, &secret, &body).await;
        assert_eq!(got, vec![(path.to_string(), code.to_string())], "{body}");
        assert_eq!(send(&c, &server, "/mp/collect", &secret, &body).await.status(), 204);
    }
    // One bad event does not sink the others of its request.
    let mixed = json!({"client_id": "777.1", "events": [{"name": "page_view", "params": {"page_location": "https://shop.example.com/mixed"}}, {"name": "bad-name"}]});
    assert_eq!(
        codes(&c, &server, &secret, &mixed).await,
        vec![("events[1].name".to_string(), "NAME_INVALID".to_string())]
    );
    assert_eq!(send(&c, &server, "/mp/collect", &secret, &mixed).await.status(), 204);
    // Unknown streams and secrets that are not this site's write token.
    let r = c
        .post(server.url("/debug/mp/collect"))
        .query(&[("measurement_id", "G-NOPE9999"), ("api_secret", secret.as_str())])
        .json(&page_view)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["validationMessages"][0]["fieldPath"],
        "measurement_id"
    );
    for bad in [
        read_token("acme", "shop.example.com"),
        write_token("acme", "blog.example.com"),
        "not-a-token".to_string(),
    ] {
        assert_eq!(codes(&c, &server, &bad, &page_view).await[0].0, "api_secret");
        assert_eq!(send(&c, &server, "/mp/collect", &bad, &page_view).await.status(), 204);
    }

    // Stored exactly what was valid: 1 + 25 + 1 page views, one purchase, one custom event.
    let read = read_token("acme", "shop.example.com");
    let q = |path: &str| {
        let (c, url, read) = (c.clone(), server.url(path), read.clone());
        async move {
            c.get(url)
                .bearer_auth(read)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let v = q("/v1/sites/shop.example.com/breakdown?period=7d&property=event_name&metrics=visitors,events").await;
    assert_eq!(
        v["results"],
        json!([
            {"event_name": "pageview", "visitors": 3, "events": 27},
            {"event_name": "profile_update", "visitors": 1, "events": 4},
            {"event_name": "purchase", "visitors": 1, "events": 1},
            {"event_name": "tutorial_begin", "visitors": 1, "events": 1},
        ])
    );
    // Server-to-server events are not bots, and the referrer of page_view counts.
    let v = q("/v1/sites/shop.example.com/aggregate?period=7d&metrics=visitors,pageviews").await;
    assert_eq!(v["results"], json!({"visitors": 5, "pageviews": 27}));
    // Only the valid user property of the last profile update was kept.
    let with_value = |v: &Value, key: &str| -> Vec<Value> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r[key] != "")
            .cloned()
            .collect()
    };
    let v = q("/v1/sites/shop.example.com/breakdown?period=7d&property=props:user.plan&metrics=events").await;
    assert_eq!(
        with_value(&v, "props:user.plan"),
        vec![json!({"props:user.plan": "pro", "events": 1})]
    );
    for reserved in [
        "user.first_open_time",
        "user.user_id",
        "user.first_visit_time",
        "user.tier",
    ] {
        let v = q(&format!(
            "/v1/sites/shop.example.com/breakdown?period=7d&property=props:{reserved}&metrics=events"
        ))
        .await;
        assert!(
            with_value(&v, &format!("props:{reserved}")).is_empty(),
            "{reserved} was stored: {v}"
        );
    }
    let v = q("/v1/sites/shop.example.com/breakdown?period=7d&property=source&metrics=visits").await;
    assert!(
        v["results"].as_array().unwrap().iter().any(|r| r["source"] == "Google"),
        "{v}"
    );
    let v = q("/v1/sites/shop.example.com/breakdown?period=7d&property=page&metrics=pageviews&filters=page==/products")
        .await;
    assert_eq!(v["results"], json!([{"page": "/products", "pageviews": 1}]));
}
