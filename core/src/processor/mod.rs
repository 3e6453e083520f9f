//! The processor: one pure, versioned function from a raw event to a processed one. Live
//! loading and replay both call `process`, so a replay reproduces what loading produced.

pub mod agent;
pub mod page;
mod place;
pub mod referrer;
pub mod session;

use crate::event::{Event, RawEvent};
pub use page::{parse_page_url, PageUrl};
use session::{SessionEntry, SessionState, Visit};

/// Bump whenever `process` can give a different answer for the same input, then reprocess.
/// 2: hash-router fragments (`#/route`, `#!/route`) are part of the path.
/// 3: sources and channels after GA4's default channel grouping (utm sources take the
///    referrer list's names; click ids that organic links carry no longer make a visit paid;
///    app referrers; host wildcards match only the product they name; the site's own pages
///    are no source); paths decoded and in NFC, hash routes without their query (whose UTM
///    tags count); visits continue across UTC midnight; non-interactive events; the
///    user-agent parser and crawler list.
/// 4: a `%` in a path that is text, not an escape, is written `%25` when decoding puts two
///    hex digits after it (`/%C%62` is `/%25Cb`, was `/%Cb`), so a stored page is its own
///    normal form (found by the `normalise` fuzz target).
/// 5: a path is put in NFC before its escapes are read as well as after, so a hex digit
///    that NFC joins with a combining mark starts no escape (`/%3C%Cc\u{341}` is `/<%Cć`,
///    was `/%3C%CĆ`; found by the `normalise` fuzz target).
pub const PIPELINE_VERSION: u32 = 5;

/// What the processor needs from the tenant spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessorConfig {
    pub bot_filtering: bool,
}

/// The processing identity of a version and a spec: `v5`, or `v5+bots` when bot filtering is
/// off (bots then count as people: another processing). Stored on every row.
pub fn identity(version: u32, config: ProcessorConfig) -> String {
    if config.bot_filtering {
        format!("v{version}")
    } else {
        format!("v{version}+bots")
    }
}

/// A processor: a version and the pure function it names. Writers and the replay engine
/// take one as a value (`Arc<dyn Processor>`), so a deployment runs the current one and a
/// test can run an older or a deliberately buggy one beside it.
pub trait Processor: Send + Sync + 'static {
    /// Stamped on every row (`events.pipeline_version`).
    fn version(&self) -> u32;
    /// One event, given the session state it updates. Deterministic.
    fn process(&self, raw: &RawEvent, config: ProcessorConfig, sessions: &mut SessionState) -> Event;
}

/// This build's processor: `process`, version `PIPELINE_VERSION`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Current;

impl Processor for Current {
    fn version(&self) -> u32 {
        PIPELINE_VERSION
    }

    fn process(&self, raw: &RawEvent, config: ProcessorConfig, sessions: &mut SessionState) -> Event {
        process(raw, config, sessions)
    }
}

/// The processor of a version this build carries: only the current one (older versions
/// live in tests that compare against them).
pub fn by_version(version: u32) -> Option<std::sync::Arc<dyn Processor>> {
    (version == PIPELINE_VERSION).then(|| std::sync::Arc::new(Current) as std::sync::Arc<dyn Processor>)
}

/// Turns one raw event into a processed event. Deterministic given the session state.
pub fn process(raw: &RawEvent, config: ProcessorConfig, sessions: &mut SessionState) -> Event {
    // What the page URL and the referrer give depends on those two strings alone: most
    // events repeat a pair seen before, so it is memoised per thread (`place`).
    let place = place::of(&raw.url, &raw.referrer);
    let (page, origin) = (&place.page, &place.origin);
    // Servers relaying events (GA4 Measurement Protocol) send their own user agent or none:
    // it says nothing about the visitor, so it is neither parsed nor judged a bot.
    let agent = if raw.ingest_source == crate::event::SOURCE_WEB || !raw.user_agent.is_empty() {
        agent::parse(&raw.user_agent)
    } else {
        agent::Agent::unknown()
    };
    let is_pageview = raw.name == crate::intake::DEFAULT_EVENT_NAME;

    // The entry attributes are read only when the event opens a session.
    let observed = sessions.observe_with(
        Visit {
            site_id: &raw.site_id,
            visitor_id: raw.visitor_id,
            prev_day_visitor_id: raw.prev_day_visitor_id,
            ts: raw.ts,
            interactive: raw.interactive,
        },
        || SessionEntry {
            page: page.pathname.clone(),
            source: origin.source.clone(),
            channel: origin.channel.to_string(),
            utm_source: page.utm_source.clone(),
            utm_medium: page.utm_medium.clone(),
            utm_campaign: page.utm_campaign.clone(),
        },
    );
    let (delta, entry) = (observed.delta, observed.entry);

    Event {
        event_id: raw.event_id,
        site_id: raw.site_id.clone(),
        ts: raw.ts,
        name: raw.name.clone(),
        is_pageview: u8::from(is_pageview),
        hostname: page.hostname.clone(),
        pathname: page.pathname.clone(),
        referrer_host: origin.referrer_host.clone(),
        referrer_source: origin.source.clone(),
        referrer_medium: origin.channel.to_string(),
        utm_source: page.utm_source.clone(),
        utm_medium: page.utm_medium.clone(),
        utm_campaign: page.utm_campaign.clone(),
        utm_content: page.utm_content.clone(),
        utm_term: page.utm_term.clone(),
        browser: agent.browser,
        browser_version: agent.browser_version,
        os: agent.os,
        os_version: agent.os_version,
        device: agent.device,
        country: raw.country.clone(),
        is_bot: u8::from(config.bot_filtering && agent.is_bot),
        visitor_id: observed.visitor_id,
        session_id: delta.session_id,
        session_start: observed.session_start,
        visit_delta: delta.visit,
        bounce_delta: delta.bounce,
        duration_delta: delta.duration_secs,
        entry_page: entry.page,
        session_source: entry.source,
        session_medium: entry.channel,
        session_utm_source: entry.utm_source,
        session_utm_medium: entry.utm_medium,
        session_utm_campaign: entry.utm_campaign,
        props: raw.props.clone(),
        revenue_amount: raw.revenue_amount.clone(),
        revenue_currency: raw.revenue_currency.clone(),
        pipeline_version: PIPELINE_VERSION,
        interactive: u8::from(raw.interactive),
        sign: 1,
        processing: identity(PIPELINE_VERSION, config),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use referrer::channel;
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
            prev_day_visitor_id: 0,
            interactive: true,
        }
    }

    const ON: ProcessorConfig = ProcessorConfig { bot_filtering: true };

    #[test]
    fn a_session_keeps_its_entry_attributes() {
        let mut st = SessionState::default();
        let first = process(
            &raw(
                "https://shop.example/?utm_campaign=c",
                "https://www.google.com/",
                CHROME,
                0,
            ),
            ON,
            &mut st,
        );
        assert_eq!(
            (first.referrer_source.as_str(), first.referrer_medium.as_str()),
            ("Google", channel::ORGANIC_SEARCH)
        );
        assert_eq!((first.visit_delta, first.bounce_delta), (1, 1));
        let second = process(
            &raw("https://shop.example/pricing", "https://shop.example/", CHROME, 3),
            ON,
            &mut st,
        );
        assert_eq!(
            second.referrer_medium,
            channel::DIRECT,
            "the site's own page is no source"
        );
        assert_eq!(
            (second.session_source.as_str(), second.session_medium.as_str()),
            ("Google", channel::ORGANIC_SEARCH)
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
    fn a_visit_crosses_utc_midnight() {
        // One New York visitor (same IP and browser), four pageviews from 18:50 to 19:10
        // local time (23:50 to 00:10 UTC), from a Google search: one visitor, one visit,
        // source Google, 20 minutes.
        let ip = Some("192.0.2.7".parse().unwrap());
        let mut st = SessionState::default();
        let events: Vec<Event> = [
            (21, 23, 50, "/"),
            (21, 23, 57, "/a"),
            (22, 0, 3, "/b"),
            (22, 0, 10, "/c"),
        ]
        .iter()
        .map(|(day, h, m, path)| {
            let ts = Utc.with_ymd_and_hms(2026, 11, *day, *h, *m, 0).unwrap();
            let referrer = if *path == "/" {
                "https://www.google.com/".to_string()
            } else {
                "https://shop.example/".to_string()
            };
            let mut e = raw(&format!("https://shop.example{path}"), &referrer, CHROME, 0);
            e.ts = ts;
            e.visitor_id = crate::intake::visitor_id(b"k", "shop.example", ts, ip, CHROME);
            if *day == 22 {
                e.prev_day_visitor_id =
                    crate::intake::visitor_id(b"k", "shop.example", ts - chrono::Duration::days(1), ip, CHROME);
            }
            process(&e, ON, &mut st)
        })
        .collect();
        let visitors: std::collections::HashSet<u64> = events.iter().map(|e| e.visitor_id).collect();
        assert_eq!(visitors.len(), 1);
        assert_eq!(events.iter().map(|e| i64::from(e.visit_delta)).sum::<i64>(), 1);
        assert_eq!(events.iter().map(|e| i64::from(e.bounce_delta)).sum::<i64>(), 0);
        assert_eq!(events.iter().map(|e| e.duration_delta).sum::<i64>(), 20 * 60);
        assert!(events
            .iter()
            .all(|e| e.session_source == "Google" && e.entry_page == "/"));
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
