//! `GET /v1/collect?...` (the 1x1 pixel): its query string through the collector's parser
//! and intake to a processed, storable event.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline_core::event::SOURCE_WEB;
use sightline_core::spec::Limits;
use sightline_fuzz::intake::{admit_and_process, context, AGENTS};
use sightline_ingest::collector::fuzzing::{pixel_query_event, status};

fuzz_target!(|data: &[u8]| {
    // A request target is text; axum hands the handler the query as a str.
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let event = match pixel_query_event(query) {
        Ok(event) => event,
        Err(e) => {
            assert!(status(&e).is_client_error(), "{e}");
            return;
        }
    };
    assert!(event.is_object(), "a pixel is one event object");
    assert!(event.get("token").is_none(), "the token is no field of the event");
    let limits = Limits::default();
    let ctx = context(&limits, AGENTS[query.len() % AGENTS.len()], None, SOURCE_WEB);
    admit_and_process(&[event], &ctx);
});
