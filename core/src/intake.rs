//! Validation of what clients send: one JSON event becomes a `RawEvent` or a rejection that
//! names the field. Shared by every ingestion path (collector JSON, pixel, later GA4 MP), so
//! all of them accept and refuse exactly the same things.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Duration, TimeZone, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;
use uuid::Uuid;

use crate::event::RawEvent;
use crate::spec::Limits;

/// Events may be at most this far in the future (clock skew) ...
pub const MAX_FUTURE: Duration = Duration::minutes(5);
/// ... and at most this old (offline queues), relative to the time we receive them.
pub const MAX_AGE: Duration = Duration::hours(72);
pub const MAX_URL_BYTES: usize = 2048;
pub const MAX_NAME_BYTES: usize = 120;
pub const DEFAULT_EVENT_NAME: &str = "pageview";

/// Why one event of a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub index: usize,
    pub field: String,
    pub reason: String,
}

/// What the server knows about the request, beyond its body.
#[derive(Clone, Debug)]
pub struct RequestContext<'a> {
    pub site_id: &'a str,
    pub tenant_key: &'a [u8],
    pub user_agent: &'a str,
    pub client_ip: Option<IpAddr>,
    pub country: &'a str,
    pub received_at: DateTime<Utc>,
    pub limits: &'a Limits,
    /// Where the visitor's identity comes from: `None` for the IP and user agent (browsers),
    /// or a client-chosen key such as GA4's client_id (servers sending on a user's behalf).
    pub visitor_key: Option<&'a str>,
    /// `event::SOURCE_WEB` or `event::SOURCE_GA4_MP`.
    pub ingest_source: &'a str,
}

/// Validates one event. `index` is its place in the request, for the rejection.
pub fn validate_event(index: usize, value: &Value, ctx: &RequestContext<'_>) -> Result<RawEvent, Rejection> {
    let reject = |field: &str, reason: String| Rejection {
        index,
        field: field.to_string(),
        reason,
    };
    let Some(obj) = value.as_object() else {
        return Err(reject("event", "each event must be a JSON object".into()));
    };
    for key in obj.keys() {
        if !matches!(
            key.as_str(),
            "id" | "name" | "url" | "referrer" | "ts" | "props" | "revenue"
        ) {
            return Err(reject(key, "unknown field".into()));
        }
    }

    let event_id = match obj.get("id") {
        None | Some(Value::Null) => Uuid::now_v7(),
        Some(Value::String(s)) => Uuid::parse_str(s).map_err(|_| reject("id", "must be a UUID".into()))?,
        Some(_) => return Err(reject("id", "must be a UUID string".into())),
    };

    let name = match obj.get("name") {
        None | Some(Value::Null) => DEFAULT_EVENT_NAME.to_string(),
        Some(Value::String(s)) if s.trim().is_empty() => return Err(reject("name", "must not be empty".into())),
        Some(Value::String(s)) if s.len() > MAX_NAME_BYTES => {
            return Err(reject("name", format!("longer than {MAX_NAME_BYTES} bytes")))
        }
        Some(Value::String(s)) => s.trim().to_string(),
        Some(_) => return Err(reject("name", "must be a string".into())),
    };

    let url = match obj.get("url") {
        None | Some(Value::Null) => return Err(reject("url", "is required".into())),
        Some(Value::String(s)) => check_http_url(s).map_err(|r| reject("url", r))?,
        Some(_) => return Err(reject("url", "must be a string".into())),
    };

    let referrer = match obj.get("referrer") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) if s.is_empty() => String::new(),
        Some(Value::String(s)) => check_http_url(s).map_err(|r| reject("referrer", r))?,
        Some(_) => return Err(reject("referrer", "must be a string".into())),
    };

    let ts = match obj.get("ts") {
        None | Some(Value::Null) => ctx.received_at,
        Some(v) => {
            let ts = parse_ts(v).map_err(|r| reject("ts", r))?;
            if ts > ctx.received_at + MAX_FUTURE {
                return Err(reject("ts", "more than 5 minutes in the future".into()));
            }
            if ts < ctx.received_at - MAX_AGE {
                return Err(reject("ts", "older than 72 hours".into()));
            }
            ts
        }
    };

    let props = match obj.get("props") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(map)) => check_props(map, ctx.limits).map_err(|(f, r)| reject(&f, r))?,
        Some(_) => return Err(reject("props", "must be an object of string values".into())),
    };

    let (revenue_amount, revenue_currency) = match obj.get("revenue") {
        None | Some(Value::Null) => (String::new(), String::new()),
        Some(v) => check_revenue(v).map_err(|(f, r)| reject(&f, r))?,
    };

    Ok(RawEvent {
        event_id,
        site_id: ctx.site_id.to_string(),
        received_at: ctx.received_at,
        ts,
        name,
        url,
        referrer,
        user_agent: ctx.user_agent.to_string(),
        props,
        revenue_amount,
        revenue_currency,
        visitor_id: match ctx.visitor_key {
            Some(key) => keyed_visitor_id(ctx.tenant_key, ctx.site_id, ts, key),
            None => visitor_id(ctx.tenant_key, ctx.site_id, ts, ctx.client_ip, ctx.user_agent),
        },
        country: ctx.country.to_string(),
        ingest_source: ctx.ingest_source.to_string(),
    })
}

fn check_http_url(text: &str) -> Result<String, String> {
    if text.len() > MAX_URL_BYTES {
        return Err(format!("longer than {MAX_URL_BYTES} bytes"));
    }
    let parsed = url::Url::parse(text).map_err(|e| format!("not a valid URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(text.to_string())
}

/// `ts` is RFC 3339 text or Unix epoch milliseconds.
fn parse_ts(value: &Value) -> Result<DateTime<Utc>, String> {
    match value {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| "must be RFC 3339 text (2026-11-21T10:00:00Z) or epoch milliseconds".into()),
        Value::Number(n) => n
            .as_i64()
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .ok_or_else(|| "epoch milliseconds out of range".into()),
        _ => Err("must be RFC 3339 text or epoch milliseconds".into()),
    }
}

fn check_props(
    map: &serde_json::Map<String, Value>,
    limits: &Limits,
) -> Result<BTreeMap<String, String>, (String, String)> {
    if map.len() > limits.max_props as usize {
        return Err(("props".into(), format!("more than {} properties", limits.max_props)));
    }
    let mut out = BTreeMap::new();
    for (key, value) in map {
        let field = format!("props.{key}");
        if key.is_empty() || key.len() > limits.max_prop_key_bytes as usize {
            return Err((field, format!("keys must be 1 to {} bytes", limits.max_prop_key_bytes)));
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err((field, "values must be strings, numbers or booleans".into())),
        };
        if text.len() > limits.max_prop_value_bytes as usize {
            return Err((
                field,
                format!("value longer than {} bytes", limits.max_prop_value_bytes),
            ));
        }
        out.insert(key.clone(), text);
    }
    Ok(out)
}

fn check_revenue(value: &Value) -> Result<(String, String), (String, String)> {
    let Some(obj) = value.as_object() else {
        return Err(("revenue".into(), "must be an object {amount, currency}".into()));
    };
    if let Some(key) = obj.keys().find(|k| !matches!(k.as_str(), "amount" | "currency")) {
        return Err((format!("revenue.{key}"), "unknown field".into()));
    }
    let amount = match obj.get("amount") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.trim().to_string(),
        _ => return Err(("revenue.amount".into(), "is required: a number or decimal text".into())),
    };
    let amount = normalize_decimal(&amount).ok_or_else(|| {
        (
            "revenue.amount".to_string(),
            "must be a decimal with at most 12 integer and 6 fractional digits".to_string(),
        )
    })?;
    let currency = match obj.get("currency") {
        Some(Value::String(s)) if s.len() == 3 && s.bytes().all(|b| b.is_ascii_alphabetic()) => s.to_ascii_uppercase(),
        _ => {
            return Err((
                "revenue.currency".into(),
                "is required: an ISO 4217 code such as EUR".into(),
            ))
        }
    };
    Ok((amount, currency))
}

/// Checks decimal text and returns it in a canonical form (no exponent, no `+`).
fn normalize_decimal(text: &str) -> Option<String> {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let ok = !int.is_empty()
        && int.len() <= 12
        && frac.len() <= 6
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| {
        if frac.is_empty() {
            format!("{sign}{int}")
        } else {
            format!("{sign}{int}.{frac}")
        }
    })
}

/// A keyed hash of (site, UTC day, IP, user agent): stable for a visitor within a day,
/// unlinkable across days and sites, and the IP itself is never stored.
pub fn visitor_id(tenant_key: &[u8], site_id: &str, ts: DateTime<Utc>, ip: Option<IpAddr>, user_agent: &str) -> u64 {
    let ip = ip.map(|ip| ip.to_string()).unwrap_or_default();
    day_hash(
        tenant_key,
        b"visitor",
        site_id,
        ts,
        &[ip.as_bytes(), user_agent.as_bytes()],
    )
}

/// The visitor id of a client that names itself (GA4's client_id): the same keyed hash of
/// site and UTC day, over the client's key instead of IP and user agent.
pub fn keyed_visitor_id(tenant_key: &[u8], site_id: &str, ts: DateTime<Utc>, key: &str) -> u64 {
    day_hash(tenant_key, b"client", site_id, ts, &[key.as_bytes()])
}

/// HMAC-SHA256(tenant key, kind NUL site NUL day {NUL part}...), first 8 bytes.
///
/// The events of one request almost always share site, day, IP and user agent, so the last
/// answer of each thread is kept and reused when the same key and message come again
/// (comparing a few hundred bytes costs far less than the hash).
fn day_hash(tenant_key: &[u8], kind: &[u8], site_id: &str, ts: DateTime<Utc>, parts: &[&[u8]]) -> u64 {
    thread_local! {
        static LAST: std::cell::RefCell<(Vec<u8>, usize, u64)> = const { std::cell::RefCell::new((Vec::new(), 0, 0)) };
    }
    let mut input = Vec::with_capacity(tenant_key.len() + 64);
    input.extend_from_slice(tenant_key);
    let key_len = tenant_key.len();
    input.extend_from_slice(kind);
    input.push(0);
    input.extend_from_slice(site_id.as_bytes());
    input.push(0);
    input.extend_from_slice(crate::event::ch_datetime::format_date(ts.date_naive()).as_bytes());
    for part in parts {
        input.push(0);
        input.extend_from_slice(part);
    }
    LAST.with_borrow_mut(|(last, last_key_len, hash)| {
        if *last_key_len == key_len && *last == input {
            return *hash;
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(tenant_key).expect("HMAC accepts keys of any length");
        mac.update(&input[key_len..]);
        let bytes = mac.finalize().into_bytes();
        *hash = u64::from_le_bytes(bytes[..8].try_into().expect("HMAC-SHA256 output is 32 bytes"));
        *last = input;
        *last_key_len = key_len;
        *hash
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx(limits: &Limits) -> RequestContext<'_> {
        RequestContext {
            site_id: "a.example",
            tenant_key: b"k",
            user_agent: "Mozilla/5.0",
            client_ip: Some("192.0.2.1".parse().unwrap()),
            country: "DE",
            received_at: Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap(),
            limits,
            visitor_key: None,
            ingest_source: crate::event::SOURCE_WEB,
        }
    }

    #[test]
    fn accepts_a_full_event() {
        let limits = Limits::default();
        let e = validate_event(
            0,
            &json!({"name":"purchase","url":"https://a.example/checkout","referrer":"https://www.google.com/",
                    "ts":"2026-11-21T11:00:00Z","props":{"plan":"pro","seats":3},"revenue":{"amount":"19.90","currency":"eur"}}),
            &ctx(&limits),
        )
        .unwrap();
        assert_eq!(e.name, "purchase");
        assert_eq!(e.props.get("seats").map(String::as_str), Some("3"));
        assert_eq!(
            (e.revenue_amount.as_str(), e.revenue_currency.as_str()),
            ("19.90", "EUR")
        );
        assert_eq!(e.ts, Utc.with_ymd_and_hms(2026, 11, 21, 11, 0, 0).unwrap());
        assert_eq!(e.country, "DE");
    }

    #[test]
    fn rejections_name_the_field() {
        let limits = Limits {
            max_props: 1,
            ..Limits::default()
        };
        let c = ctx(&limits);
        let field = |v: Value| validate_event(3, &v, &c).unwrap_err();
        assert_eq!(field(json!({})).field, "url");
        assert_eq!(field(json!({"url":"ftp://a.example/"})).field, "url");
        assert_eq!(
            field(json!({"url":"https://a.example/","referrer":"nope"})).field,
            "referrer"
        );
        assert_eq!(
            field(json!({"url":"https://a.example/","ts":"2026-11-21T12:06:00Z"})).field,
            "ts"
        );
        assert_eq!(
            field(json!({"url":"https://a.example/","ts":"2026-11-18T11:59:00Z"})).field,
            "ts"
        );
        assert_eq!(
            field(json!({"url":"https://a.example/","props":{"a":"1","b":"2"}})).field,
            "props"
        );
        assert_eq!(
            field(json!({"url":"https://a.example/","props":{"a":{}}})).field,
            "props.a"
        );
        assert_eq!(
            field(json!({"url":"https://a.example/","revenue":{"amount":"1e5","currency":"EUR"}})).field,
            "revenue.amount"
        );
        assert_eq!(
            field(json!({"url":"https://a.example/","revenue":{"amount":1}})).field,
            "revenue.currency"
        );
        assert_eq!(
            field(json!({"url":"https://a.example/","colour":"red"})).field,
            "colour"
        );
        assert_eq!(field(json!({"url":"mailto:x@a.example"})).index, 3);
    }

    #[test]
    fn timestamps_at_the_edges_of_the_window_are_accepted() {
        let limits = Limits::default();
        let c = ctx(&limits);
        assert!(validate_event(0, &json!({"url":"https://a.example/","ts":"2026-11-21T12:05:00Z"}), &c).is_ok());
        let ms = Utc.with_ymd_and_hms(2026, 11, 18, 12, 0, 0).unwrap().timestamp_millis();
        assert!(validate_event(0, &json!({"url":"https://a.example/","ts":ms}), &c).is_ok());
    }

    #[test]
    fn visitor_ids_keep_their_bytes() {
        // Stored visitor ids must not change with a refactor: pinned against the HMAC input.
        let ts = Utc.with_ymd_and_hms(2026, 11, 21, 10, 0, 0).unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
        mac.update(b"visitor\x00s\x002026-11-21\x00192.0.2.1\x00ua");
        let want = u64::from_le_bytes(mac.finalize().into_bytes()[..8].try_into().unwrap());
        assert_eq!(
            visitor_id(b"k", "s", ts, Some("192.0.2.1".parse().unwrap()), "ua"),
            want
        );
        let mut mac = Hmac::<Sha256>::new_from_slice(b"k").unwrap();
        mac.update(b"client\x00s\x002026-11-21\x00abc");
        let want = u64::from_le_bytes(mac.finalize().into_bytes()[..8].try_into().unwrap());
        assert_eq!(keyed_visitor_id(b"k", "s", ts, "abc"), want);
    }

    #[test]
    fn visitor_id_is_stable_within_a_day_only() {
        let ip = Some("192.0.2.1".parse().unwrap());
        let t1 = Utc.with_ymd_and_hms(2026, 11, 21, 0, 1, 0).unwrap();
        let t2 = Utc.with_ymd_and_hms(2026, 11, 21, 23, 59, 0).unwrap();
        let t3 = Utc.with_ymd_and_hms(2026, 11, 22, 0, 1, 0).unwrap();
        assert_eq!(visitor_id(b"k", "s", t1, ip, "ua"), visitor_id(b"k", "s", t2, ip, "ua"));
        assert_ne!(visitor_id(b"k", "s", t1, ip, "ua"), visitor_id(b"k", "s", t3, ip, "ua"));
        assert_ne!(visitor_id(b"k", "s", t1, ip, "ua"), visitor_id(b"k", "t", t1, ip, "ua"));
        assert_ne!(
            visitor_id(b"k", "s", t1, ip, "ua"),
            visitor_id(b"k2", "s", t1, ip, "ua")
        );
    }
}
