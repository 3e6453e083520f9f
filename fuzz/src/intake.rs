//! The rules an event obeys from intake to storage, checked on every event a target gets
//! through `intake::validate_event`: what intake accepts is within its documented limits,
//! the processor takes it, both rows encode for the warehouse, and what storage keeps of the
//! raw event (the log's JSON, `events_raw`'s RowBinary) is the event itself, so a replay
//! processes exactly what live loading processed.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sightline_core::event::{Event, RawEvent};
use sightline_core::intake::{self, validate_event, Accepted, RequestContext};
use sightline_core::processor::page::normalize_path;
use sightline_core::processor::session::{SessionState, SESSION_TIMEOUT};
use sightline_core::processor::{process, referrer, ProcessorConfig};
use sightline_core::spec::Limits;
use sightline_core::warehouse::rowbinary::{self, RowBinary};

/// The user agents a target picks from by a byte of its input (the user-agent target fuzzes
/// the header itself; here it only has to vary).
pub const AGENTS: [&str; 5] = [
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
    "",
    "Mozilla/5.0 (Linux; Android 12; CUBOT_X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Mobile Safari/537.36",
];

/// The fields a rejection or an adjustment may name (intake's fields, a prop, revenue's
/// parts), so that a client can always tell which field it was.
fn known_field(field: &str) -> bool {
    matches!(
        field,
        "event" | "id" | "name" | "url" | "referrer" | "ts" | "props" | "revenue" | "interactive"
    ) || field.starts_with("props.")
        || field.starts_with("revenue.")
}

/// A request's context for the targets: site `shop.example`, the fixed `crate::now()`.
pub fn context<'a>(
    limits: &'a Limits,
    user_agent: &'a str,
    visitor_key: Option<&'a str>,
    ingest_source: &'a str,
) -> RequestContext<'a> {
    RequestContext {
        site_id: "shop.example",
        tenant_key: b"fuzz-tenant-key",
        user_agent,
        client_ip: Some("192.0.2.7".parse().expect("an address")),
        country: "DE",
        received_at: crate::now(),
        limits,
        visitor_key,
        ingest_source,
    }
}

/// Validates every event of a request as the collector's `admit` does, checks the verdicts,
/// then processes the accepted events in order and checks what storage gets. Returns the
/// accepted events.
pub fn admit_and_process(events: &[Value], ctx: &RequestContext<'_>) -> Vec<Accepted> {
    let mut accepted = Vec::new();
    for (i, event) in events.iter().enumerate() {
        match validate_event(i, event, ctx) {
            Ok(a) => {
                for n in &a.adjustments {
                    assert_eq!(n.index, i, "an adjustment names its event");
                    assert!(!n.reason.is_empty(), "an adjustment says why");
                }
                check_accepted(&a.event, ctx);
                accepted.push(a);
            }
            Err(r) => {
                assert_eq!(r.index, i, "a rejection names its event");
                assert!(known_field(&r.field), "rejection of unknown field {:?}", r.field);
                assert!(!r.reason.is_empty(), "a rejection says why");
            }
        }
    }
    let raws: Vec<RawEvent> = accepted.iter().map(|a| a.event.clone()).collect();
    process_and_store(&raws);
    accepted
}

/// Intake's limits hold for what it accepted.
fn check_accepted(e: &RawEvent, ctx: &RequestContext<'_>) {
    let parsed = url::Url::parse(e.url.trim()).unwrap_or_else(|err| panic!("accepted url {:?}: {err}", e.url));
    assert!(matches!(parsed.scheme(), "http" | "https"), "{}", e.url);
    assert!(e.url.len() <= intake::MAX_URL_BYTES, "url of {} bytes", e.url.len());
    assert!(e.referrer.len() <= intake::MAX_REFERRER_BYTES);
    assert!(
        e.referrer.is_empty()
            || referrer::app_package(&e.referrer).is_some()
            || url::Url::parse(&e.referrer).is_ok_and(|u| matches!(u.scheme(), "http" | "https")),
        "kept referrer {:?}",
        e.referrer
    );
    assert!(
        !e.name.is_empty() && e.name.len() <= intake::MAX_NAME_BYTES,
        "name {:?}",
        e.name
    );
    assert_eq!(e.name, e.name.trim(), "names are trimmed");
    assert!(e.user_agent.len() <= intake::MAX_USER_AGENT_BYTES);
    assert!(
        e.ts >= e.received_at - intake::MAX_AGE && e.ts <= e.received_at + intake::MAX_FUTURE,
        "ts {} outside the window",
        e.ts
    );
    assert!(
        e.received_at <= ctx.received_at && ctx.received_at - e.received_at < chrono::Duration::milliseconds(1),
        "received_at {} for a request received at {}",
        e.received_at,
        ctx.received_at
    );
    let limits = ctx.limits;
    assert!(e.props.len() <= limits.max_props as usize, "{} props", e.props.len());
    for (k, v) in &e.props {
        assert!(
            !k.is_empty() && k.len() <= limits.max_prop_key_bytes as usize,
            "prop key {k:?}"
        );
        assert!(
            v.len() <= limits.max_prop_value_bytes as usize,
            "prop value of {} bytes",
            v.len()
        );
    }
    assert_eq!(
        e.revenue_amount.is_empty(),
        e.revenue_currency.is_empty(),
        "revenue is whole or absent"
    );
    if !e.revenue_amount.is_empty() {
        assert_eq!(
            intake::decimal_amount(&e.revenue_amount).as_deref(),
            Some(e.revenue_amount.as_str()),
            "a kept amount is in its canonical form"
        );
        assert!(
            e.revenue_currency.len() == 3 && e.revenue_currency.bytes().all(|b| b.is_ascii_uppercase()),
            "currency {:?}",
            e.revenue_currency
        );
    }
    assert!(!e.event_id.is_nil() && !e.event_id.is_max());
}

/// The whole millisecond storage keeps of an instant (`DateTime64(3)`).
fn stored_instant(t: DateTime<Utc>) -> bool {
    t.timestamp_subsec_nanos().is_multiple_of(1_000_000)
}

/// Processes accepted events as a loader does, and checks what the warehouse gets.
pub fn process_and_store(raws: &[RawEvent]) {
    let config = ProcessorConfig { bot_filtering: true };
    let mut live = SessionState::default();
    let events: Vec<Event> = raws.iter().map(|r| process(r, config, &mut live)).collect();
    for (raw, event) in raws.iter().zip(&events) {
        check_processed(raw, event);
    }
    // What storage keeps of the raw events is the events: the log's JSON (the Kafka loader
    // reads it) and events_raw's RowBinary (replays read it) give back what was processed,
    // and so processing them again gives the same rows.
    for raw in raws {
        assert!(stored_instant(raw.ts), "ts {} has more than milliseconds", raw.ts);
        assert!(
            stored_instant(raw.received_at),
            "received_at {} has more than milliseconds",
            raw.received_at
        );
        let json = serde_json::to_vec(raw).expect("a raw event serialises");
        let back: RawEvent = serde_json::from_slice(&json).expect("the log's JSON reads back");
        assert_eq!(&back, raw, "the log's JSON changes the event");
    }
    let encoded = rowbinary::encode(raws);
    let decoded = rowbinary::decode_raw_events(&encoded).expect("events_raw's RowBinary reads back");
    assert_eq!(decoded, raws, "events_raw's RowBinary changes the events");
    let mut replay = SessionState::default();
    let replayed: Vec<Event> = decoded.iter().map(|r| process(r, config, &mut replay)).collect();
    assert_eq!(replayed, events, "a replay processes the stored events differently");
    let mut out = Vec::new();
    for e in &events {
        e.write_row_binary(&mut out);
    }
    assert!(!out.is_empty() || events.is_empty());
}

const DEVICES: [&str; 5] = ["desktop", "mobile", "tablet", "bot", "other"];

/// The processed row's own rules.
fn check_processed(raw: &RawEvent, e: &Event) {
    assert!(e.pathname.starts_with('/'), "pathname {:?}", e.pathname);
    assert_eq!(
        normalize_path(&e.pathname),
        e.pathname,
        "a stored page is in its normal form"
    );
    assert_eq!(
        normalize_path(&e.entry_page),
        e.entry_page,
        "an entry page is in its normal form"
    );
    assert_eq!(e.hostname, e.hostname.to_ascii_lowercase(), "hostname {:?}", e.hostname);
    assert!(DEVICES.contains(&e.device.as_str()), "device {:?}", e.device);
    assert_eq!(e.is_pageview == 1, raw.name == intake::DEFAULT_EVENT_NAME);
    assert!(matches!(e.visit_delta, 0 | 1), "visit_delta {}", e.visit_delta);
    assert!(matches!(e.bounce_delta, -1..=1), "bounce_delta {}", e.bounce_delta);
    assert!(e.duration_delta >= 0, "duration_delta {}", e.duration_delta);
    // A session's start is when the event that opened it happened; an event that arrives
    // after a later one of its visit joins that session and may lie before its start.
    assert!(
        e.session_start - e.ts <= SESSION_TIMEOUT,
        "a session opened after its events"
    );
    let channels: BTreeSet<&str> = referrer::CHANNELS.iter().copied().collect();
    assert!(
        channels.contains(e.referrer_medium.as_str()),
        "channel {:?}",
        e.referrer_medium
    );
    assert!(
        channels.contains(e.session_medium.as_str()),
        "channel {:?}",
        e.session_medium
    );
    assert!(!e.referrer_source.is_empty() && !e.session_source.is_empty());
    assert_eq!((&e.props, &e.revenue_amount), (&raw.props, &raw.revenue_amount));
}
