//! URL and referrer normalisation: a page path, filter text, a source or channel name, a
//! page URL and a referrer, each put in its normal form; normalising twice changes nothing,
//! and what intake keeps of a URL and a referrer it keeps again unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::json;
use sightline_core::event::SOURCE_WEB;
use sightline_core::intake::validate_event;
use sightline_core::processor::page::{normalize_path, normalize_text, parse_page_url};
use sightline_core::processor::referrer::{canonical_channel, canonical_source};
use sightline_core::spec::Limits;
use sightline_fuzz::intake::{context, AGENTS};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = normalize_path(text);
    assert!(path.starts_with('/'), "{path:?}");
    assert_eq!(normalize_path(&path), path, "normalize_path twice: {text:?}");
    let contained = normalize_text(text);
    assert_eq!(normalize_text(&contained), contained, "normalize_text twice: {text:?}");
    let source = canonical_source(text);
    assert_eq!(canonical_source(&source), source, "canonical_source twice: {text:?}");
    let channel = canonical_channel(text);
    assert_eq!(
        canonical_channel(&channel),
        channel,
        "canonical_channel twice: {text:?}"
    );

    // A page URL as sent, or the text as the path (and more) of one.
    let url = if text.starts_with("http://") || text.starts_with("https://") {
        text.to_string()
    } else {
        format!("https://shop.example/{text}")
    };
    let page = parse_page_url(&url);
    assert_eq!(
        normalize_path(&page.pathname),
        page.pathname,
        "a stored page is a fixed point: {url:?}"
    );
    assert_eq!(page.hostname, page.hostname.to_ascii_lowercase());

    // What intake keeps of a URL and a referrer, it keeps again as it is.
    let limits = Limits::default();
    let ctx = context(&limits, AGENTS[0], None, SOURCE_WEB);
    let Ok(first) = validate_event(0, &json!({"url": url, "referrer": text}), &ctx) else {
        return;
    };
    let kept = json!({"url": first.event.url, "referrer": first.event.referrer});
    let again = validate_event(0, &kept, &ctx).unwrap_or_else(|r| panic!("kept {kept} is refused: {r:?}"));
    assert_eq!(
        (&again.event.url, &again.event.referrer),
        (&first.event.url, &first.event.referrer),
        "intake changed what it kept"
    );
    assert!(
        again.adjustments.is_empty(),
        "kept {kept} is adjusted again: {:?}",
        again.adjustments
    );
});
