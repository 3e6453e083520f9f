//! Client addresses behind proxies, through HTTP and the query API: visitors behind a trusted
//! proxy are told apart by the address the proxy wrote, in every form proxies write it
//! (X-Forwarded-For with ports, brackets and quotes; RFC 7239 Forwarded when chosen), while a
//! client that is not a trusted proxy cannot choose its address or its country by header.
//!
//! The harness trusts 127.0.0.1 (the "proxy"); a "direct" client connects from 127.0.0.2,
//! another loopback address, which is not trusted.

use serde_json::{json, Value};
use sightline_tests::*;

const SITE: &str = "blog.example.com";

/// A client whose connections come from `local` (a loopback address).
fn client_from(local: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some(local.parse().expect("address")))
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}

async fn send(c: &reqwest::Client, server: &Server, headers: &[(&str, &str)], path: &str) {
    let mut req = c
        .post(server.url("/v1/collect"))
        .bearer_auth(write_token("acme", SITE))
        .header("User-Agent", CHROME_MAC)
        .json(&json!({"url": format!("https://{SITE}{path}")}));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let r = req.send().await.expect("collect");
    assert_eq!(r.status(), 202, "{headers:?}");
}

async fn breakdown(server: &Server, property: &str) -> Value {
    let r = client()
        .get(server.url(&format!(
            "/v1/sites/{SITE}/breakdown?period=7d&property={property}&metrics=visitors,pageviews"
        )))
        .bearer_auth(read_token("acme", SITE))
        .send()
        .await
        .expect("breakdown");
    assert_eq!(r.status(), 200);
    r.json::<Value>().await.expect("json")["results"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn visitors_behind_a_trusted_proxy_are_told_apart_and_direct_clients_cannot_spoof() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(&data, &tenants, &[]);
    let proxy = client_from("127.0.0.1");
    let direct = client_from("127.0.0.2");

    // Through the proxy: five people, each written in another form, one page each.
    for (xff, page) in [
        ("203.0.113.7:51234", "/p/ipv4-port"),
        ("[2001:db8::9]:443", "/p/ipv6-port"),
        ("\"198.51.100.20\"", "/p/quoted"),
        ("2001:db8::10", "/p/ipv6"),
        ("192.0.2.200, 198.51.100.21 , 127.0.0.1", "/p/chain"),
    ] {
        send(&proxy, &server, &[("X-Forwarded-For", xff)], page).await;
    }
    // The same person again from another source port: still one visitor.
    send(
        &proxy,
        &server,
        &[("X-Forwarded-For", "203.0.113.7:40000")],
        "/p/ipv4-port",
    )
    .await;
    // The country a trusted CDN wrote is taken.
    send(
        &proxy,
        &server,
        &[("X-Forwarded-For", "203.0.113.50"), ("CF-IPCountry", "DE")],
        "/p/cdn",
    )
    .await;
    // A direct client: its X-Forwarded-For and country headers are its own claims, ignored.
    // Two requests claiming two addresses are one visitor (the peer address), of no country.
    send(
        &direct,
        &server,
        &[("X-Forwarded-For", "192.0.2.1"), ("CF-IPCountry", "FR")],
        "/p/direct",
    )
    .await;
    send(
        &direct,
        &server,
        &[("X-Forwarded-For", "192.0.2.2"), ("CF-IPCountry", "FR")],
        "/p/direct",
    )
    .await;

    assert_eq!(
        breakdown(&server, "page").await,
        json!([
            {"page": "/p/cdn", "visitors": 1, "pageviews": 1},
            {"page": "/p/chain", "visitors": 1, "pageviews": 1},
            {"page": "/p/direct", "visitors": 1, "pageviews": 2},
            {"page": "/p/ipv4-port", "visitors": 1, "pageviews": 2},
            {"page": "/p/ipv6", "visitors": 1, "pageviews": 1},
            {"page": "/p/ipv6-port", "visitors": 1, "pageviews": 1},
            {"page": "/p/quoted", "visitors": 1, "pageviews": 1},
        ])
    );
    // Seven people in all: the five forms, the CDN visitor and the direct client.
    let r = client()
        .get(server.url(&format!("/v1/sites/{SITE}/aggregate?period=7d&metrics=visitors")))
        .bearer_auth(read_token("acme", SITE))
        .send()
        .await
        .expect("aggregate");
    assert_eq!(
        r.json::<Value>().await.expect("json")["results"],
        json!({"visitors": 7})
    );
    assert_eq!(
        breakdown(&server, "country").await,
        json!([{"country": "", "visitors": 6, "pageviews": 8}, {"country": "DE", "visitors": 1, "pageviews": 1}])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rfc_7239_forwarded_when_the_proxies_write_it() {
    let (_dir, data, tenants) = fixture();
    let server = Server::start(&data, &tenants, &["--client-ip-header", "forwarded"]);
    let proxy = client_from("127.0.0.1");
    for (forwarded, page) in [
        ("for=203.0.113.7;proto=https", "/f/ipv4"),
        ("for=\"203.0.113.8:51234\"", "/f/ipv4-port"),
        ("for=\"[2001:db8:cafe::17]:4711\";by=127.0.0.1", "/f/ipv6-port"),
        ("for=192.0.2.1;host=\"a,b\", for=198.51.100.9", "/f/chain"),
    ] {
        send(&proxy, &server, &[("Forwarded", forwarded)], page).await;
    }
    // A proxy that hides its client (`unknown`, an obfuscated name): the address known last
    // is the proxy's own, so these two are one visitor, not two made-up ones.
    send(&proxy, &server, &[("Forwarded", "for=unknown")], "/f/hidden").await;
    send(&proxy, &server, &[("Forwarded", "for=_hidden")], "/f/hidden").await;
    // The configured header only: an X-Forwarded-For a client slipped in is not read.
    send(
        &proxy,
        &server,
        &[("X-Forwarded-For", "192.0.2.99"), ("Forwarded", "for=203.0.113.7")],
        "/f/ipv4",
    )
    .await;

    assert_eq!(
        breakdown(&server, "page").await,
        json!([
            {"page": "/f/chain", "visitors": 1, "pageviews": 1},
            {"page": "/f/hidden", "visitors": 1, "pageviews": 2},
            {"page": "/f/ipv4", "visitors": 1, "pageviews": 2},
            {"page": "/f/ipv4-port", "visitors": 1, "pageviews": 1},
            {"page": "/f/ipv6-port", "visitors": 1, "pageviews": 1},
        ])
    );
}
