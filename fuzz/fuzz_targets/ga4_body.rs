//! `POST /mp/collect` bodies (GA4 Measurement Protocol): GA4's checks and mapping, then the
//! same intake and processor as the collector's own events.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use sightline_core::event::SOURCE_GA4_MP;
use sightline_core::spec::Limits;
use sightline_fuzz::intake::{admit_and_process, context};
use sightline_ingest::collector::ga4::{map_body, MAX_EVENTS};

/// GA4's validation codes (the debug endpoint's `validationCode`).
const CODES: [&str; 6] = [
    "VALUE_INVALID",
    "VALUE_REQUIRED",
    "NAME_INVALID",
    "NAME_RESERVED",
    "VALUE_OUT_OF_BOUNDS",
    "EXCEEDED_MAX_ENTITIES",
];

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let mapped = map_body(&body, "shop.example");
    for m in &mapped.messages {
        assert!(CODES.contains(&m.validation_code), "{m:?}");
        assert!(!m.description.is_empty());
    }
    assert_eq!(mapped.events.len(), mapped.index_map.len());
    assert!(mapped.events.len() <= MAX_EVENTS);
    assert!(
        mapped.index_map.windows(2).all(|w| w[0] < w[1]),
        "events keep their order"
    );
    if mapped.client_key.is_none() {
        assert!(mapped.events.is_empty(), "events without a visitor key were mapped");
        return;
    }
    let limits = Limits::default();
    let ctx = context(&limits, &mapped.user_agent, mapped.client_key.as_deref(), SOURCE_GA4_MP);
    let accepted = admit_and_process(&mapped.events, &ctx);
    for a in &accepted {
        // The mapping writes only fields intake knows: nothing it made is "unknown".
        assert!(
            a.adjustments.iter().all(|n| !n.reason.starts_with("unknown field")),
            "{:?}",
            a.adjustments
        );
        assert_eq!(a.event.ingest_source, SOURCE_GA4_MP);
    }
});
