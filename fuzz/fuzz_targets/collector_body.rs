//! `POST /v1/collect` bodies (one event, `{"events": [...]}`, sendBeacon's text/plain)
//! through the collector's parser and intake to processed, storable events.
//!
//! Input: the first byte picks the content type and the user agent, the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline_core::event::SOURCE_WEB;
use sightline_core::spec::Limits;
use sightline_fuzz::intake::{admit_and_process, context, AGENTS};
use sightline_ingest::collector::fuzzing::body_events;

const CONTENT_TYPES: [&str; 4] = [
    "application/json",
    "text/plain;charset=UTF-8",
    "Application/JSON; charset=utf-8",
    "text/html",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let content_type = CONTENT_TYPES[usize::from(selector & 3)];
    let agent = AGENTS[usize::from(selector >> 2) % AGENTS.len()];
    let events = match body_events(content_type, body) {
        Ok(events) => events,
        Err(e) => {
            // Refused whole: a 4xx naming what is wrong, never a 5xx.
            let status = sightline_ingest::collector::fuzzing::status(&e);
            assert!(status.is_client_error(), "{status} for {e}");
            return;
        }
    };
    assert!(content_type != "text/html", "an unsupported content type was read");
    let limits = Limits::default();
    let ctx = context(&limits, agent, None, SOURCE_WEB);
    admit_and_process(&events, &ctx);
});
