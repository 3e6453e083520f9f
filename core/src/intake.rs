//! Validation of what clients send: one JSON event becomes a `RawEvent` (with notes on what
//! was cut or dropped) or a rejection that names the field. Shared by every ingestion path
//! (collector JSON, batch, pixel, debug, GA4 MP), so all of them accept, cut and refuse
//! exactly the same things.
//!
//! The rule: an event is refused only when what makes it an event is wrong (its page URL, its
//! name, its id) or when it cannot be placed in time (older than the 72-hour window, so its
//! day may be sealed). An optional field that is odd never sinks its event: it is dropped or
//! cut, and the answer says so (`adjusted`). Limits apply to what is kept: a field over its
//! limit is cut, not refused.

use std::collections::BTreeMap;
use std::net::IpAddr;

use chrono::{DateTime, Duration, SubsecRound, TimeZone, Utc};
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
/// Bytes kept of the page URL. Longer URLs lose their other query parameters first (the
/// processor reads only `utm_*` and click ids), then the end of their path.
pub const MAX_URL_BYTES: usize = 2048;
/// Bytes kept of the referrer (query and fragment go first: only the host and path are read).
pub const MAX_REFERRER_BYTES: usize = 2048;
/// Bytes kept of the User-Agent header, which is copied into every event of a request. Real
/// browsers send 100 to 500 bytes.
pub const MAX_USER_AGENT_BYTES: usize = 1024;
pub const MAX_NAME_BYTES: usize = 120;
pub const DEFAULT_EVENT_NAME: &str = "pageview";
/// Digits kept after the decimal point of a revenue amount: binary floating-point noise
/// (`54.989999999999995`, what JavaScript arithmetic gives for 54.99) lies far below it.
pub const REVENUE_FRACTION_DIGITS: usize = 6;
/// Digits allowed before the decimal point of a revenue amount (Decimal128 with 6 places).
pub const REVENUE_INTEGER_DIGITS: usize = 12;

/// Query parameters of the page URL that processing reads and cutting keeps.
pub const KEPT_URL_PARAMS: &[&str] = &[
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_content",
    "utm_term",
    "gclid",
    "gbraid",
    "wbraid",
    "dclid",
    "msclkid",
    "fbclid",
    "ttclid",
    "twclid",
    "li_fat_id",
    "yclid",
];

/// Why one event of a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub index: usize,
    pub field: String,
    pub reason: String,
}

/// Something of an accepted event that was cut or dropped; the event itself is stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Adjustment {
    pub index: usize,
    pub field: String,
    pub reason: String,
}

/// An accepted event and what intake changed in it.
#[derive(Clone, Debug, PartialEq)]
pub struct Accepted {
    pub event: RawEvent,
    /// The client chose the id (a retry repeats it).
    pub client_chose_id: bool,
    pub adjustments: Vec<Adjustment>,
}

/// What the server knows about the request, beyond its body.
#[derive(Clone, Debug)]
pub struct RequestContext<'a> {
    pub site_id: &'a str,
    pub tenant_key: &'a [u8],
    /// The header as sent; intake keeps at most `MAX_USER_AGENT_BYTES` of it.
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

/// The fields an event object may have.
const FIELDS: &[&str] = &["id", "name", "url", "referrer", "ts", "props", "revenue", "interactive"];

/// Validates one event. `index` is its place in the request, for rejections and notes.
pub fn validate_event(index: usize, value: &Value, ctx: &RequestContext<'_>) -> Result<Accepted, Rejection> {
    let reject = |field: &str, reason: String| Rejection {
        index,
        field: field.to_string(),
        reason,
    };
    let mut adjustments = Vec::new();
    let mut note = |field: &str, reason: String| {
        adjustments.push(Adjustment {
            index,
            field: field.to_string(),
            reason,
        })
    };
    let Some(obj) = value.as_object() else {
        return Err(reject("event", "each event must be a JSON object".into()));
    };
    for key in obj.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        note(
            &cut(key, 64),
            format!("unknown field ignored; known: {}", FIELDS.join(", ")),
        );
    }

    let (event_id, client_chose_id) = match obj.get("id") {
        None | Some(Value::Null) => (Uuid::now_v7(), false),
        Some(Value::String(s)) => {
            let id = Uuid::parse_str(s).map_err(|_| reject("id", "must be a UUID".into()))?;
            if id.is_nil() || id.is_max() {
                return Err(reject(
                    "id",
                    "the nil and max UUIDs cannot identify one event; send a random UUID or omit id".into(),
                ));
            }
            (id, true)
        }
        Some(_) => return Err(reject("id", "must be a UUID string".into())),
    };

    let name = match obj.get("name") {
        None | Some(Value::Null) => DEFAULT_EVENT_NAME.to_string(),
        Some(Value::String(s)) if s.trim().is_empty() => return Err(reject("name", "must not be empty".into())),
        Some(Value::String(s)) => {
            let name = s.trim();
            if name.len() > MAX_NAME_BYTES {
                note("name", format!("cut to {MAX_NAME_BYTES} bytes"));
            }
            // Trimmed again after the cut: it may fall just after inner whitespace.
            cut(name, MAX_NAME_BYTES).trim_end().to_string()
        }
        Some(_) => return Err(reject("name", "must be a string".into())),
    };

    let url = match obj.get("url") {
        None | Some(Value::Null) => return Err(reject("url", "is required".into())),
        Some(Value::String(s)) => {
            let (url, change) = page_url(s).map_err(|r| reject("url", r))?;
            if let Some(change) = change {
                note("url", change);
            }
            url
        }
        Some(_) => return Err(reject("url", "must be a string".into())),
    };

    let referrer = match obj.get("referrer") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) if s.trim().is_empty() => String::new(),
        Some(Value::String(s)) => match referrer_url(s) {
            Ok((kept, change)) => {
                if let Some(change) = change {
                    note("referrer", change);
                }
                kept
            }
            Err(why) => {
                note("referrer", format!("{why}: dropped"));
                String::new()
            }
        },
        Some(_) => {
            note("referrer", "not a string: dropped".into());
            String::new()
        }
    };

    // Instants as storage keeps them (`DateTime64(3)`): whole milliseconds. Processing reads
    // the event as `events_raw` holds it, so a replay of the stored event gives what live
    // processing gave (a session 29:59.9999 long must not become 30:00.000 on replay).
    let received_at = ctx.received_at.trunc_subsecs(3);
    let ts = match obj.get("ts") {
        None | Some(Value::Null) => received_at,
        Some(v) => match parse_ts(v) {
            Err(why) => {
                note("ts", format!("{why}; the time of receipt is used"));
                received_at
            }
            Ok(ts) if ts.trunc_subsecs(3) > received_at + MAX_FUTURE => {
                note(
                    "ts",
                    "more than 5 minutes ahead of the server's clock; the time of receipt is used".into(),
                );
                received_at
            }
            // An event older than the window may belong to a day already sealed: it cannot be
            // placed without rewriting that day, so it is refused, not moved.
            Ok(ts) if ts.trunc_subsecs(3) < received_at - MAX_AGE => {
                return Err(reject("ts", "older than 72 hours".into()));
            }
            Ok(ts) => ts.trunc_subsecs(3),
        },
    };

    let props = match obj.get("props") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(map)) => keep_props(map, ctx.limits, &mut note),
        Some(_) => {
            note("props", "not an object of string values: dropped".into());
            BTreeMap::new()
        }
    };

    let (revenue_amount, revenue_currency) = match obj.get("revenue") {
        None | Some(Value::Null) => (String::new(), String::new()),
        Some(v) => match check_revenue(v) {
            Ok(revenue) => revenue,
            Err((field, why)) => {
                note(&field, format!("{why}; the revenue is dropped, the event kept"));
                (String::new(), String::new())
            }
        },
    };

    let interactive = match obj.get("interactive") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            note("interactive", "not a boolean: the event counts as interactive".into());
            true
        }
    };

    let user_agent = cut(ctx.user_agent, MAX_USER_AGENT_BYTES);
    let (visitor_id, prev_day_visitor_id) = visitor_ids(ctx, ts, &user_agent);
    Ok(Accepted {
        event: RawEvent {
            event_id,
            site_id: ctx.site_id.to_string(),
            received_at,
            ts,
            name,
            url,
            referrer,
            user_agent,
            props,
            revenue_amount,
            revenue_currency,
            visitor_id,
            country: ctx.country.to_string(),
            ingest_source: ctx.ingest_source.to_string(),
            prev_day_visitor_id,
            interactive,
        },
        client_chose_id,
        adjustments,
    })
}

/// The visitor id of the event's UTC day and, within a session's reach of midnight, the id the
/// same visitor had the day before (so a visit that crosses midnight continues).
fn visitor_ids(ctx: &RequestContext<'_>, ts: DateTime<Utc>, user_agent: &str) -> (u64, u64) {
    let id_on = |at: DateTime<Utc>| match ctx.visitor_key {
        Some(key) => keyed_visitor_id(ctx.tenant_key, ctx.site_id, at, key),
        None => visitor_id(ctx.tenant_key, ctx.site_id, at, ctx.client_ip, user_agent),
    };
    let since_midnight = ts - ts.date_naive().and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    let prev = if since_midnight <= crate::processor::session::SESSION_TIMEOUT {
        id_on(ts - Duration::days(1))
    } else {
        0
    };
    (id_on(ts), prev)
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// An http(s) URL with a host, as text of at most `MAX_URL_BYTES`: the text as sent when it
/// fits, else the URL without the query parameters processing does not read (and without a
/// fragment that is not a hash route), else that cut at the end of its path.
fn page_url(text: &str) -> Result<(String, Option<String>), String> {
    let parsed = http_url(text)?;
    if text.len() <= MAX_URL_BYTES {
        return Ok((text.to_string(), None));
    }
    let mut reduced = parsed.clone();
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| KEPT_URL_PARAMS.contains(&k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    if kept.is_empty() {
        reduced.set_query(None);
    } else {
        reduced.query_pairs_mut().clear().extend_pairs(kept);
    }
    if !parsed.fragment().is_some_and(is_hash_route) {
        reduced.set_fragment(None);
    }
    let why = format!(
        "{} bytes: cut to at most {MAX_URL_BYTES} (query parameters other than utm_* and click ids dropped)",
        text.len()
    );
    Ok((cut_after_origin(&reduced, MAX_URL_BYTES)?, Some(why)))
}

/// At most `max` bytes of `url`, cut in its path, query or fragment, never in its scheme,
/// host or port: what is kept is still the URL of the same host. `Err` when those alone
/// pass `max` (a host far longer than any name DNS can hold).
fn cut_after_origin(url: &url::Url, max: usize) -> Result<String, String> {
    let origin = &url[..url::Position::BeforePath];
    if origin.len() >= max {
        return Err(format!(
            "its scheme and host are {} bytes, more than the {max} a URL may keep",
            origin.len()
        ));
    }
    Ok(cut(url.as_str(), max))
}

/// A fragment that single-page apps use as their route (`#/settings`, `#!/inbox`).
pub fn is_hash_route(fragment: &str) -> bool {
    fragment.starts_with('/') || fragment.starts_with("!/")
}

fn http_url(text: &str) -> Result<url::Url, String> {
    let parsed = url::Url::parse(text.trim()).map_err(|e| format!("not a valid URL ({e})"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http or https URL".into());
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("has no host".into());
    }
    Ok(parsed)
}

/// A referrer to keep: an http(s) URL (its query and fragment dropped when it is too long),
/// or an app referrer (`android-app://com.google.android.googlequicksearchbox/`, what Android
/// sends for a visit from an app). Anything else says why it is not kept.
fn referrer_url(text: &str) -> Result<(String, Option<String>), String> {
    let text = text.trim();
    if let Some(app) = crate::processor::referrer::app_package(text) {
        if app.len() > 255 {
            return Err("an app referrer with a package name over 255 bytes".into());
        }
        if text.len() <= MAX_REFERRER_BYTES {
            return Ok((text.to_string(), None));
        }
        // Only the app is read: `android-app://<package>/` is kept of a long one.
        let scheme = text.split_once("://").map_or("", |(scheme, _)| scheme);
        return Ok((
            format!("{scheme}://{app}/"),
            Some(format!(
                "{} bytes: cut to the app (at most {MAX_REFERRER_BYTES} bytes are kept)",
                text.len()
            )),
        ));
    }
    let parsed = http_url(text).map_err(|_| "not an http(s) or app URL".to_string())?;
    if text.len() <= MAX_REFERRER_BYTES {
        return Ok((text.to_string(), None));
    }
    let mut reduced = parsed;
    reduced.set_query(None);
    reduced.set_fragment(None);
    Ok((
        cut_after_origin(&reduced, MAX_REFERRER_BYTES)?,
        Some(format!(
            "{} bytes: cut to at most {MAX_REFERRER_BYTES} (query and fragment dropped)",
            text.len()
        )),
    ))
}

/// `ts` is RFC 3339 text or Unix epoch milliseconds.
fn parse_ts(value: &Value) -> Result<DateTime<Utc>, String> {
    match value {
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| "not RFC 3339 text (2026-11-21T10:00:00Z) or epoch milliseconds".into()),
        Value::Number(n) => n
            .as_i64()
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .ok_or_else(|| "epoch milliseconds out of range".into()),
        _ => Err("not RFC 3339 text or epoch milliseconds".into()),
    }
}

/// The properties to keep: at most `max_props` (in key order), keys of 1 to
/// `max_prop_key_bytes`, scalar values cut to `max_prop_value_bytes`. What is left out is
/// noted, one note per property.
fn keep_props(
    map: &serde_json::Map<String, Value>,
    limits: &Limits,
    note: &mut impl FnMut(&str, String),
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in map {
        let field = format!("props.{}", cut(key, limits.max_prop_key_bytes as usize));
        if key.is_empty() || key.len() > limits.max_prop_key_bytes as usize {
            note(
                &field,
                format!("keys are 1 to {} bytes: dropped", limits.max_prop_key_bytes),
            );
            continue;
        }
        let text = match value {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            Value::Null => continue,
            _ => {
                note(&field, "values are strings, numbers or booleans: dropped".into());
                continue;
            }
        };
        if out.len() == limits.max_props as usize {
            note(&field, format!("more than {} properties: dropped", limits.max_props));
            continue;
        }
        if text.len() > limits.max_prop_value_bytes as usize {
            note(&field, format!("value cut to {} bytes", limits.max_prop_value_bytes));
        }
        out.insert(key.clone(), cut(&text, limits.max_prop_value_bytes as usize));
    }
    out
}

fn check_revenue(value: &Value) -> Result<(String, String), (String, String)> {
    let Some(obj) = value.as_object() else {
        return Err(("revenue".into(), "not an object {amount, currency}".into()));
    };
    let amount = match obj.get("amount") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.trim().to_string(),
        _ => return Err(("revenue.amount".into(), "missing: a number or decimal text".into())),
    };
    let amount = decimal_amount(&amount).ok_or_else(|| {
        (
            "revenue.amount".to_string(),
            format!("{amount:?} is not a decimal with at most {REVENUE_INTEGER_DIGITS} integer digits"),
        )
    })?;
    let currency = match obj.get("currency") {
        Some(Value::String(s)) if s.trim().len() == 3 && s.trim().bytes().all(|b| b.is_ascii_alphabetic()) => {
            s.trim().to_ascii_uppercase()
        }
        _ => {
            return Err((
                "revenue.currency".into(),
                "missing or not an ISO 4217 code such as EUR".into(),
            ))
        }
    };
    Ok((amount, currency))
}

/// Decimal text (`19.90`, `-5`, `54.989999999999995`, `1.5e3`) in canonical form: no
/// exponent, no `+`, at most `REVENUE_FRACTION_DIGITS` after the point. Amounts with more
/// digits are rounded half away from zero and lose their trailing zeros; shorter ones keep
/// the digits they were given. `None` when it is not a decimal or has too many integer digits.
pub fn decimal_amount(text: &str) -> Option<String> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exponent) = match unsigned.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.parse::<i32>().ok().filter(|e| e.abs() <= 40)?),
        None => (unsigned, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // All digits, and where the point falls among them.
    let digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
    let point = int.len() as i64 + i64::from(exponent);
    let digit_at = |i: i64| -> u8 {
        if i < 0 || i >= digits.len() as i64 {
            0
        } else {
            digits[i as usize]
        }
    };
    let given_frac = (digits.len() as i64 - point).max(0) as usize;
    let keep_frac = given_frac.min(REVENUE_FRACTION_DIGITS);
    // Integer and kept fraction digits, most significant first, then round on the next one.
    let first = point.min(0);
    let mut kept: Vec<u8> = (first..point + keep_frac as i64).map(digit_at).collect();
    if given_frac > keep_frac && digit_at(point + keep_frac as i64) >= 5 {
        let mut i = kept.len();
        loop {
            if i == 0 {
                kept.insert(0, 1);
                break;
            }
            i -= 1;
            if kept[i] == 9 {
                kept[i] = 0;
            } else {
                kept[i] += 1;
                break;
            }
        }
    }
    let split = kept.len() - keep_frac;
    let int_part: String = kept[..split]
        .iter()
        .map(|d| char::from(b'0' + d))
        .collect::<String>()
        .trim_start_matches('0')
        .to_string();
    let mut frac_part: String = kept[split..].iter().map(|d| char::from(b'0' + d)).collect();
    if given_frac > keep_frac {
        // Rounded: the digits past the cut were noise, and so are the zeros it leaves.
        frac_part = frac_part.trim_end_matches('0').to_string();
    }
    let int_part = if int_part.is_empty() { "0".to_string() } else { int_part };
    if int_part.len() > REVENUE_INTEGER_DIGITS {
        return None;
    }
    let is_zero = int_part == "0" && frac_part.bytes().all(|b| b == b'0');
    let sign = if negative && !is_zero { "-" } else { "" };
    Some(if frac_part.is_empty() {
        format!("{sign}{int_part}")
    } else {
        format!("{sign}{int_part}.{frac_part}")
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
        let a = validate_event(
            0,
            &json!({"name":"purchase","url":"https://a.example/checkout","referrer":"https://www.google.com/",
                    "ts":"2026-11-21T11:00:00Z","props":{"plan":"pro","seats":3},"revenue":{"amount":"19.90","currency":"eur"},
                    "id":"0b5e8f63-8c8b-4d6e-9a65-5a0f3b1c2d3e"}),
            &ctx(&limits),
        )
        .unwrap();
        let e = &a.event;
        assert_eq!(e.name, "purchase");
        assert_eq!(e.props.get("seats").map(String::as_str), Some("3"));
        assert_eq!(
            (e.revenue_amount.as_str(), e.revenue_currency.as_str()),
            ("19.90", "EUR")
        );
        assert_eq!(e.ts, Utc.with_ymd_and_hms(2026, 11, 21, 11, 0, 0).unwrap());
        assert_eq!(e.country, "DE");
        assert!(e.interactive && a.client_chose_id && a.adjustments.is_empty());
        assert_eq!(e.prev_day_visitor_id, 0, "11:00 is far from midnight");
    }

    #[test]
    fn what_makes_the_event_is_refused_and_named() {
        let limits = Limits::default();
        let c = ctx(&limits);
        let field = |v: Value| validate_event(3, &v, &c).unwrap_err();
        assert_eq!(field(json!({})).field, "url");
        assert_eq!(field(json!({"url":"ftp://a.example/"})).field, "url");
        assert_eq!(field(json!({"url":"https://"})).field, "url");
        assert_eq!(
            field(json!({"url":"https://a.example/","ts":"2026-11-18T11:59:00Z"})).field,
            "ts"
        );
        assert_eq!(field(json!({"url":"https://a.example/","name":" "})).field, "name");
        assert_eq!(field(json!({"url":"https://a.example/","name":7})).field, "name");
        assert_eq!(field(json!({"url":"https://a.example/","id":"nope"})).field, "id");
        for id in [Uuid::nil(), Uuid::max()] {
            let r = field(json!({"url":"https://a.example/","id":id.to_string()}));
            assert_eq!(r.field, "id");
            assert!(r.reason.contains("cannot identify"), "{}", r.reason);
        }
        assert_eq!(field(json!({"url":"mailto:x@a.example"})).index, 3);
        assert_eq!(field(json!("just text")).field, "event");
    }

    #[test]
    fn odd_optional_fields_never_sink_the_event() {
        let limits = Limits {
            max_props: 2,
            ..Limits::default()
        };
        let c = ctx(&limits);
        let ok = |v: Value| validate_event(0, &v, &c).unwrap();
        let fields = |a: &Accepted| a.adjustments.iter().map(|n| n.field.clone()).collect::<Vec<_>>();

        // A visit from the Google app: an app referrer, kept as sent.
        let a =
            ok(json!({"url":"https://a.example/","referrer":"android-app://com.google.android.googlequicksearchbox/"}));
        assert_eq!(
            a.event.referrer,
            "android-app://com.google.android.googlequicksearchbox/"
        );
        assert!(a.adjustments.is_empty());
        // Referrers that are no URL at all, or not a string: dropped, noted.
        for referrer in [
            json!("nope"),
            json!("about:blank"),
            json!(42),
            json!("javascript:alert(1)"),
        ] {
            let a = ok(json!({"url":"https://a.example/","referrer":referrer}));
            assert_eq!(
                (a.event.referrer.as_str(), fields(&a)),
                ("", vec!["referrer".to_string()])
            );
        }
        // A clock ahead, or a time that does not parse: the time of receipt.
        for ts in [json!("2026-11-21T12:06:00Z"), json!("yesterday"), json!(true)] {
            let a = ok(json!({"url":"https://a.example/","ts":ts}));
            assert_eq!((a.event.ts, fields(&a)), (c.received_at, vec!["ts".to_string()]));
        }
        // Props: too many, a nested value, a long key, a long value.
        let long = "v".repeat(600);
        let a = ok(
            json!({"url":"https://a.example/","props":{"a":"1","b":{"x":1},"c":"3","d":"4",
                          "k".repeat(70):"x","e":long}}),
        );
        assert_eq!(a.event.props.len(), 2);
        assert_eq!(a.event.props["a"], "1");
        assert_eq!(a.event.props["c"], "3");
        assert_eq!(fields(&a).len(), 4, "{:?}", a.adjustments);
        let a = ok(json!({"url":"https://a.example/","props":["x"]}));
        assert!(a.event.props.is_empty() && fields(&a) == ["props"]);
        let a = ok(json!({"url":"https://a.example/","props":{"v":"x".repeat(600)}}));
        assert_eq!(a.event.props["v"].len(), 512);
        // Revenue that cannot be read: dropped; the purchase is stored.
        for revenue in [
            json!({"amount":1}),
            json!({"amount":"abc","currency":"EUR"}),
            json!("12 EUR"),
            json!({"amount":"1234567890123","currency":"EUR"}),
        ] {
            let a = ok(json!({"name":"purchase","url":"https://a.example/","revenue":revenue}));
            assert_eq!(a.event.revenue_amount, "");
            assert!(fields(&a)[0].starts_with("revenue"), "{:?}", a.adjustments);
        }
        // Fields this version does not know: ignored, named.
        let a = ok(json!({"url":"https://a.example/","screen":"1920x1080"}));
        assert_eq!(fields(&a), ["screen"]);
        // A name over its limit is cut.
        let a = ok(json!({"url":"https://a.example/","name":"n".repeat(300)}));
        assert_eq!(a.event.name.len(), MAX_NAME_BYTES);
        // A cut that falls just after inner whitespace leaves none at the end (found by the
        // pixel_query fuzz target: names are trimmed, and stayed so only when not cut).
        let a = ok(json!({"url":"https://a.example/","name":format!("{}\u{c}tail", "n".repeat(119))}));
        assert_eq!(a.event.name, "n".repeat(119));
        let a = ok(json!({"url":"https://a.example/","interactive":"no"}));
        assert!(a.event.interactive && fields(&a) == ["interactive"]);
        let a = ok(json!({"url":"https://a.example/","interactive":false}));
        assert!(!a.event.interactive && a.adjustments.is_empty());
    }

    #[test]
    fn long_urls_keep_what_processing_reads() {
        let limits = Limits::default();
        let c = ctx(&limits);
        let long = format!("https://shop.example.com/checkout?state={}", "x".repeat(2100));
        let a = validate_event(0, &json!({"url": long}), &c).unwrap();
        assert_eq!(a.event.url, "https://shop.example.com/checkout");
        assert_eq!(a.adjustments[0].field, "url");
        let tagged = format!(
            "https://shop.example.com/p?utm_source=news&state={}&gclid=abc#/route?x=1",
            "y".repeat(2100)
        );
        let a = validate_event(0, &json!({"url": tagged}), &c).unwrap();
        assert_eq!(
            a.event.url,
            "https://shop.example.com/p?utm_source=news&gclid=abc#/route?x=1"
        );
        let deep = format!("https://shop.example.com/{}", "é".repeat(1500));
        let a = validate_event(0, &json!({"url": deep}), &c).unwrap();
        assert!(a.event.url.len() <= MAX_URL_BYTES && a.event.url.starts_with("https://shop.example.com/"));
        let referrer = format!("https://www.google.com/search?q={}", "z".repeat(3000));
        let a = validate_event(0, &json!({"url":"https://a.example/","referrer":referrer}), &c).unwrap();
        assert_eq!(a.event.referrer, "https://www.google.com/search");
        // Cut in the path, never in the host (found by the collector_body fuzz target: a
        // host of 2,000 bytes was cut, and the stored URL no longer parsed). A URL whose
        // host alone passes the limit is refused; such a referrer is dropped.
        let host = format!("{}.example", "h".repeat(2030));
        let a = validate_event(0, &json!({"url": format!("https://{host}/{}", "p".repeat(100))}), &c).unwrap();
        assert_eq!(
            a.event.url,
            format!("https://{host}/{}", "p".repeat(2048 - host.len() - 9))
        );
        assert!(url::Url::parse(&a.event.url).is_ok_and(|u| u.host_str() == Some(host.as_str())));
        // An app referrer over the limit keeps its app (found by the collector_body fuzz
        // target: app referrers were kept whole, whatever their length).
        let app = format!("android-app://com.google.android.gm/{}", "x".repeat(3000));
        let a = validate_event(0, &json!({"url":"https://a.example/","referrer":app}), &c).unwrap();
        assert_eq!(a.event.referrer, "android-app://com.google.android.gm/");
        assert_eq!(a.adjustments[0].field, "referrer");
        let huge = format!("{}.example", "h".repeat(2100));
        let r = validate_event(0, &json!({"url": format!("https://{huge}/")}), &c).unwrap_err();
        assert_eq!(r.field, "url");
        assert!(r.reason.contains("scheme and host"), "{}", r.reason);
        let a = validate_event(
            0,
            &json!({"url":"https://a.example/","referrer":format!("https://{huge}/")}),
            &c,
        )
        .unwrap();
        assert_eq!(a.event.referrer, "");
        assert_eq!(a.adjustments[0].field, "referrer");
    }

    #[test]
    fn the_user_agent_is_capped() {
        let limits = Limits::default();
        let ua = "U".repeat(500_000);
        let c = RequestContext {
            user_agent: &ua,
            ..ctx(&limits)
        };
        let a = validate_event(0, &json!({"url":"https://a.example/"}), &c).unwrap();
        assert_eq!(a.event.user_agent.len(), MAX_USER_AGENT_BYTES);
    }

    #[test]
    fn revenue_amounts_lose_float_noise_only() {
        for (given, kept) in [
            ("54.989999999999995", Some("54.99")),
            ("0.30000000000000004", Some("0.3")),
            ("19.90", Some("19.90")),
            ("-5", Some("-5")),
            ("+7.5", Some("7.5")),
            ("1.2345675", Some("1.234568")),
            ("-1.0000005", Some("-1.000001")),
            ("999999.9999999", Some("1000000")),
            ("1.5e3", Some("1500")),
            ("1e-7", Some("0")),
            ("2.5E-3", Some("0.0025")),
            (".5", Some("0.5")),
            ("-0.0000001", Some("0")),
            ("123456789012.5", Some("123456789012.5")),
            ("1234567890123", None),
            ("1e13", None),
            ("12a", None),
            ("", None),
            (".", None),
            ("1.2.3", None),
        ] {
            assert_eq!(decimal_amount(given).as_deref(), kept, "{given}");
        }
        let limits = Limits::default();
        let a = validate_event(
            0,
            &json!({"name":"purchase","url":"https://a.example/","revenue":{"amount":54.989999999999995,"currency":"USD"}}),
            &ctx(&limits),
        )
        .unwrap();
        assert_eq!(a.event.revenue_amount, "54.99");
    }

    #[test]
    fn instants_are_kept_to_the_millisecond_storage_holds() {
        // Found by the collector_body fuzz target: the server's clock and RFC 3339 text carry
        // nanoseconds, `events_raw` keeps milliseconds, so a replay saw other instants than
        // live processing (a visit 29:59.9999 long is one session, 30:00.000 may be two).
        let limits = Limits::default();
        let c = RequestContext {
            received_at: Utc.with_ymd_and_hms(2026, 11, 21, 12, 0, 0).unwrap() + Duration::nanoseconds(123_456_789),
            ..ctx(&limits)
        };
        let a = validate_event(0, &json!({"url":"https://a.example/"}), &c).unwrap();
        assert_eq!(a.event.received_at.timestamp_subsec_nanos(), 123_000_000);
        assert_eq!(a.event.ts, a.event.received_at);
        let a = validate_event(
            0,
            &json!({"url":"https://a.example/","ts":"2026-11-21T11:00:00.999999999Z"}),
            &c,
        )
        .unwrap();
        assert_eq!(
            a.event.ts,
            Utc.with_ymd_and_hms(2026, 11, 21, 11, 0, 0).unwrap() + Duration::milliseconds(999)
        );
        let stored: RawEvent = serde_json::from_slice(&serde_json::to_vec(&a.event).unwrap()).unwrap();
        assert_eq!(stored, a.event, "what the log and events_raw keep is the event");
    }

    #[test]
    fn timestamps_at_the_edges_of_the_window_are_accepted() {
        let limits = Limits::default();
        let c = ctx(&limits);
        let a = validate_event(0, &json!({"url":"https://a.example/","ts":"2026-11-21T12:05:00Z"}), &c).unwrap();
        assert!(a.adjustments.is_empty());
        let ms = Utc.with_ymd_and_hms(2026, 11, 18, 12, 0, 0).unwrap().timestamp_millis();
        assert!(validate_event(0, &json!({"url":"https://a.example/","ts":ms}), &c).is_ok());
    }

    #[test]
    fn near_midnight_the_previous_days_id_comes_along() {
        let limits = Limits::default();
        let c = ctx(&limits);
        let at = |ts: &str| {
            validate_event(0, &json!({"url":"https://a.example/","ts":ts}), &c)
                .unwrap()
                .event
        };
        let e = at("2026-11-21T00:10:00Z");
        let before = at("2026-11-20T23:55:00Z");
        assert_eq!(e.prev_day_visitor_id, before.visitor_id);
        assert_ne!(e.visitor_id, before.visitor_id);
        assert_eq!(at("2026-11-21T00:30:00Z").prev_day_visitor_id, before.visitor_id);
        assert_eq!(at("2026-11-21T00:30:01Z").prev_day_visitor_id, 0);
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
        assert_ne!(visitor_id(b"k", "s", t1, ip, "ua"), visitor_id(b"k", "s", t1, ip, "ub"));
        assert_ne!(visitor_id(b"k", "s", t1, ip, "ua"), visitor_id(b"k", "t", t1, ip, "ua"));
        assert_ne!(
            visitor_id(b"k", "s", t1, ip, "ua"),
            visitor_id(b"k2", "s", t1, ip, "ua")
        );
    }
}
