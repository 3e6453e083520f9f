//! User-Agent headers (any bytes, decoded as the collector decodes them, cut as intake cuts
//! them) through the browser, OS, device and bot parsers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sightline_core::intake::{cut, MAX_USER_AGENT_BYTES};
use sightline_core::processor::agent;

fuzz_target!(|data: &[u8]| {
    // Whatever bytes an HTTP/1 header value may hold (hyper refuses the rest).
    let Ok(value) = http::HeaderValue::from_bytes(data) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::USER_AGENT, value);
    let header = sightline_ingest::collector::client::user_agent(&headers);
    let ua = cut(&header, MAX_USER_AGENT_BYTES);
    let parsed = agent::parse(&ua);
    assert_eq!(parsed, agent::parse_uncached(&ua), "the memo changed an answer");
    assert_eq!(parsed, agent::parse(&ua), "parsing is not deterministic");
    assert!(
        ["desktop", "mobile", "tablet", "bot", "other"].contains(&parsed.device.as_str()),
        "device {:?}",
        parsed.device
    );
    assert_eq!(
        parsed.is_bot,
        parsed.device == "bot",
        "bots and only bots are the bot device"
    );
    if ua.trim().is_empty() {
        assert!(parsed.is_bot, "every browser sends a User-Agent");
    }
    for version in [&parsed.browser_version, &parsed.os_version] {
        assert!(
            version.is_empty() || version.split('.').all(|part| !part.is_empty()),
            "version {version:?}"
        );
    }
    assert!(
        parsed.os != "Other" && parsed.browser != "Other",
        "uap-core's Other is our empty"
    );
});
