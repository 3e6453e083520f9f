//! The processor: one pure, versioned function from a raw event to a processed one. Live
//! loading and replay both call `process`, so a replay reproduces what loading produced.

pub mod agent;
pub mod referrer;
pub mod session;

use crate::event::{Event, RawEvent};
use session::{SessionEntry, SessionState};

/// Bump whenever `process` can give a different answer for the same input, then reprocess.
/// 2: hash-router fragments (`#/route`, `#!/route`) are part of the path.
pub const PIPELINE_VERSION: u32 = 2;

/// What the processor needs from the tenant spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessorConfig {
    pub bot_filtering: bool,
}

/// The parts of the page URL the processor uses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageUrl {
    pub hostname: String,
    pub pathname: String,
    pub utm_source: String,
    pub utm_medium: String,
    pub utm_campaign: String,
    pub utm_content: String,
    pub utm_term: String,
    /// Names of query parameters, for ad click ids such as gclid.
    pub param_names: Vec<String>,
}

/// Hostname without `www.`, lower case; path without query or fragment, without a trailing
/// slash (except the root) and with repeated slashes folded.
pub fn parse_page_url(url: &str) -> PageUrl {
    let Ok(parsed) = url::Url::parse(url) else {
        return PageUrl {
            pathname: "/".into(),
            ..Default::default()
        };
    };
    let hostname = parsed
        .host_str()
        .unwrap_or_default()
        .trim_start_matches("www.")
        .to_ascii_lowercase();
    let mut pathname = String::with_capacity(parsed.path().len());
    for segment in parsed.path().split('/').filter(|s| !s.is_empty()) {
        pathname.push('/');
        pathname.push_str(segment);
    }
    if pathname.is_empty() {
        pathname.push('/');
    }
    // Single-page apps with hash routing keep their route in the fragment; any other
    // fragment is an anchor within the page and not a page of its own.
    if let Some(fragment) = parsed.fragment().filter(|f| f.starts_with('/') || f.starts_with("!/")) {
        pathname.push('#');
        pathname.push_str(fragment);
    }
    let mut page = PageUrl {
        hostname,
        pathname,
        ..Default::default()
    };
    for (key, value) in parsed.query_pairs() {
        let value = value.trim().to_string();
        match key.as_ref() {
            "utm_source" => page.utm_source = value,
            "utm_medium" => page.utm_medium = value,
            "utm_campaign" => page.utm_campaign = value,
            "utm_content" => page.utm_content = value,
            "utm_term" => page.utm_term = value,
            _ => {}
        }
        page.param_names.push(key.into_owned());
    }
    page
}

fn referrer_host(referrer: &str) -> String {
    url::Url::parse(referrer)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.to_ascii_lowercase()))
        .unwrap_or_default()
}

/// Turns one raw event into a processed event. Deterministic given the session state.
pub fn process(raw: &RawEvent, config: ProcessorConfig, sessions: &mut SessionState) -> Event {
    let page = parse_page_url(&raw.url);
    let ref_host = referrer_host(&raw.referrer);
    let (source, medium) = referrer::classify(
        &page.hostname,
        &ref_host,
        &page.utm_source,
        &page.utm_medium,
        &page.param_names,
    );
    // Servers relaying events (GA4 Measurement Protocol) send their own user agent or none:
    // it says nothing about the visitor, so it is neither parsed nor judged a bot.
    let agent = if raw.ingest_source == crate::event::SOURCE_WEB || !raw.user_agent.is_empty() {
        agent::parse(&raw.user_agent)
    } else {
        agent::Agent::unknown()
    };
    let is_pageview = raw.name == crate::intake::DEFAULT_EVENT_NAME;

    let entry = SessionEntry {
        page: page.pathname.clone(),
        source: source.clone(),
        medium: medium.to_string(),
        utm_source: page.utm_source.clone(),
        utm_medium: page.utm_medium.clone(),
        utm_campaign: page.utm_campaign.clone(),
    };
    let (delta, entry, session_start) = sessions.observe(&raw.site_id, raw.visitor_id, raw.ts, entry);

    Event {
        event_id: raw.event_id,
        site_id: raw.site_id.clone(),
        ts: raw.ts,
        name: raw.name.clone(),
        is_pageview: u8::from(is_pageview),
        hostname: page.hostname,
        pathname: page.pathname,
        referrer_host: ref_host.trim_start_matches("www.").to_string(),
        referrer_source: source,
        referrer_medium: medium.to_string(),
        utm_source: page.utm_source,
        utm_medium: page.utm_medium,
        utm_campaign: page.utm_campaign,
        utm_content: page.utm_content,
        utm_term: page.utm_term,
        browser: agent.browser,
        browser_version: agent.browser_version,
        os: agent.os,
        os_version: agent.os_version,
        device: agent.device,
        country: raw.country.clone(),
        is_bot: u8::from(config.bot_filtering && agent.is_bot),
        visitor_id: raw.visitor_id,
        session_id: delta.session_id,
        session_start,
        visit_delta: delta.visit,
        bounce_delta: delta.bounce,
        duration_delta: delta.duration_secs,
        entry_page: entry.page,
        session_source: entry.source,
        session_medium: entry.medium,
        session_utm_source: entry.utm_source,
        session_utm_medium: entry.utm_medium,
        session_utm_campaign: entry.utm_campaign,
        props: raw.props.clone(),
        revenue_amount: raw.revenue_amount.clone(),
        revenue_currency: raw.revenue_currency.clone(),
        pipeline_version: PIPELINE_VERSION,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use std::collections::BTreeMap;

    const CHROME: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";

    fn raw(url: &str, referrer: &str, ua: &str, minute: u32) -> RawEvent {
        let ts = Utc.with_ymd_and_hms(2026, 11, 21, 10, minute, 0).unwrap();
        RawEvent {
            event_id: uuid::Uuid::nil(),
            site_id: "shop.example".into(),
            received_at: ts,
            ts,
            name: "pageview".into(),
            url: url.into(),
            referrer: referrer.into(),
            user_agent: ua.into(),
            props: BTreeMap::new(),
            revenue_amount: String::new(),
            revenue_currency: String::new(),
            visitor_id: 42,
            country: "FR".into(),
            ingest_source: crate::event::SOURCE_WEB.into(),
        }
    }

    const ON: ProcessorConfig = ProcessorConfig { bot_filtering: true };

    #[test]
    fn url_parts_and_utm() {
        let p = parse_page_url(
            "https://WWW.Shop.example//blog//post/?utm_source=news&utm_medium=email&utm_campaign=nov#top",
        );
        assert_eq!(p.hostname, "shop.example");
        assert_eq!(p.pathname, "/blog/post");
        assert_eq!(
            (p.utm_source.as_str(), p.utm_medium.as_str(), p.utm_campaign.as_str()),
            ("news", "email", "nov")
        );
        assert_eq!(parse_page_url("https://shop.example").pathname, "/");
        assert_eq!(
            parse_page_url("https://shop.example/app/#/settings?tab=2").pathname,
            "/app#/settings?tab=2"
        );
        assert_eq!(
            parse_page_url("https://shop.example/app#!/inbox").pathname,
            "/app#!/inbox"
        );
        assert_eq!(parse_page_url("https://shop.example/docs#install").pathname, "/docs");
    }

    #[test]
    fn a_session_keeps_its_entry_attributes() {
        let mut st = SessionState::default();
        let first = process(
            &raw(
                "https://shop.example/?utm_source=x&utm_campaign=c",
                "https://www.google.com/",
                CHROME,
                0,
            ),
            ON,
            &mut st,
        );
        assert_eq!(
            (first.referrer_source.as_str(), first.referrer_medium.as_str()),
            ("Google", "search")
        );
        assert_eq!((first.visit_delta, first.bounce_delta), (1, 1));
        let second = process(
            &raw("https://shop.example/pricing", "https://shop.example/", CHROME, 3),
            ON,
            &mut st,
        );
        assert_eq!(second.referrer_medium, "internal");
        assert_eq!(
            (second.session_source.as_str(), second.session_medium.as_str()),
            ("Google", "search")
        );
        assert_eq!(second.entry_page, "/");
        assert_eq!(second.session_utm_campaign, "c");
        assert_eq!(
            (second.visit_delta, second.bounce_delta, second.duration_delta),
            (0, -1, 180)
        );
        assert_eq!(second.session_id, first.session_id);
        assert_eq!(
            (second.browser.as_str(), second.device.as_str(), second.country.as_str()),
            ("Chrome", "desktop", "FR")
        );
        assert_eq!(second.pipeline_version, PIPELINE_VERSION);
    }

    #[test]
    fn bots_are_flagged_only_when_filtering_is_on() {
        let bot = raw(
            "https://shop.example/",
            "",
            "Googlebot/2.1 (+http://www.google.com/bot.html)",
            0,
        );
        assert_eq!(process(&bot, ON, &mut SessionState::default()).is_bot, 1);
        assert_eq!(
            process(
                &bot,
                ProcessorConfig { bot_filtering: false },
                &mut SessionState::default()
            )
            .is_bot,
            0
        );
    }

    #[test]
    fn a_session_ends_at_the_utc_day_boundary() {
        // The same person (IP and UA) ten minutes apart, either side of UTC midnight: the
        // visitor id is keyed by the day, so the second event opens a new visit.
        let ip = Some("192.0.2.7".parse().unwrap());
        let before = Utc.with_ymd_and_hms(2026, 11, 21, 23, 55, 0).unwrap();
        let after = Utc.with_ymd_and_hms(2026, 11, 22, 0, 5, 0).unwrap();
        let mut a = raw("https://shop.example/a", "", CHROME, 0);
        a.ts = before;
        a.visitor_id = crate::intake::visitor_id(b"k", "shop.example", before, ip, CHROME);
        let mut b = raw("https://shop.example/b", "", CHROME, 0);
        b.ts = after;
        b.visitor_id = crate::intake::visitor_id(b"k", "shop.example", after, ip, CHROME);
        let mut st = SessionState::default();
        let (ea, eb) = (process(&a, ON, &mut st), process(&b, ON, &mut st));
        assert_ne!(ea.visitor_id, eb.visitor_id);
        assert_ne!(ea.session_id, eb.session_id);
        assert_eq!((eb.visit_delta, eb.bounce_delta, eb.entry_page.as_str()), (1, 1, "/b"));
        // Within one day the same ten minutes continue the visit.
        let mut c = raw("https://shop.example/c", "", CHROME, 10);
        c.visitor_id = a.visitor_id;
        c.ts = before - chrono::Duration::minutes(10);
        let mut st = SessionState::default();
        let (ec, ea) = (process(&c, ON, &mut st), process(&a, ON, &mut st));
        assert_eq!(ec.session_id, ea.session_id);
        assert_eq!((ea.visit_delta, ea.duration_delta), (0, 600));
    }

    #[test]
    fn server_side_events_without_a_user_agent_are_not_bots() {
        let mut e = raw("https://shop.example/thanks", "", "", 0);
        assert_eq!(
            process(&e, ON, &mut SessionState::default()).is_bot,
            1,
            "a browser without a UA is a bot"
        );
        e.ingest_source = crate::event::SOURCE_GA4_MP.into();
        let p = process(&e, ON, &mut SessionState::default());
        assert_eq!((p.is_bot, p.device.as_str(), p.browser.as_str()), (0, "other", ""));
    }

    #[test]
    fn same_input_same_output() {
        let events = [
            raw("https://shop.example/a", "", CHROME, 0),
            raw("https://shop.example/b", "", CHROME, 45),
        ];
        let run = || {
            let mut st = SessionState::default();
            events.iter().map(|e| process(e, ON, &mut st)).collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
        let out = run();
        assert_ne!(out[0].session_id, out[1].session_id, "45 minutes apart: two sessions");
    }
}
