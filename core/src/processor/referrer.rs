//! Referrer source and medium from the maintained list in `core/data/referrers.yaml`.

use std::collections::BTreeMap;
use std::sync::OnceLock;

/// The medium (channel) classes a session or event can have.
pub mod medium {
    pub const SEARCH: &str = "search";
    pub const SOCIAL: &str = "social";
    pub const EMAIL: &str = "email";
    pub const PAID: &str = "paid";
    pub const INTERNAL: &str = "internal";
    pub const DIRECT: &str = "direct";
    pub const REFERRAL: &str = "referral";
}

pub const DIRECT_SOURCE: &str = "Direct / None";

/// Known hosts: `(pattern, source name, medium)`, most specific first.
struct List {
    entries: Vec<(String, String, &'static str)>,
}

fn list() -> &'static List {
    static LIST: OnceLock<List> = OnceLock::new();
    LIST.get_or_init(|| {
        let raw: BTreeMap<String, BTreeMap<String, Vec<String>>> =
            serde_yaml::from_str(include_str!("../../data/referrers.yaml"))
                .expect("referrers.yaml is valid (unit-tested)");
        let mut entries = Vec::new();
        for (class, sources) in raw {
            let medium = match class.as_str() {
                "search" => medium::SEARCH,
                "social" => medium::SOCIAL,
                "email" => medium::EMAIL,
                other => panic!("referrers.yaml: unknown class {other}"),
            };
            for (source, hosts) in sources {
                for host in hosts {
                    entries.push((host, source.clone(), medium));
                }
            }
        }
        // Longer patterns first, so mail.google.com wins over google.*.
        entries.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        List { entries }
    })
}

fn host_matches(host: &str, pattern: &str) -> bool {
    if let Some(name) = pattern.strip_suffix(".*") {
        // `google.*`: the name, then a public suffix of one or two labels, under any subdomain.
        let labels: Vec<&str> = host.split('.').collect();
        return labels.iter().enumerate().any(|(i, l)| {
            *l == name && {
                let rest = labels.len() - i - 1;
                (1..=2).contains(&rest)
            }
        });
    }
    host == pattern || host.strip_suffix(pattern).is_some_and(|prefix| prefix.ends_with('.'))
}

/// Looks a referrer host up in the list: `(source, medium)`.
pub fn lookup(host: &str) -> Option<(String, &'static str)> {
    let host = host.trim_start_matches("www.");
    list()
        .entries
        .iter()
        .find(|(pattern, _, _)| host_matches(host, pattern))
        .map(|(_, source, medium)| (source.clone(), *medium))
}

const PAID_MEDIUMS: &[&str] = &[
    "cpc",
    "ppc",
    "paid",
    "paidsearch",
    "paid_search",
    "paid-social",
    "paid_social",
    "cpm",
    "display",
    "cpv",
    "cpa",
];
const PAID_CLICK_IDS: &[(&str, &str)] = &[
    ("gclid", "Google"),
    ("gbraid", "Google"),
    ("wbraid", "Google"),
    ("msclkid", "Bing"),
    ("fbclid", "Facebook"),
    ("ttclid", "TikTok"),
    ("li_fat_id", "LinkedIn"),
];

/// Classifies where a visit came from.
///
/// Precedence: paid signals (utm_medium or ad click ids) and `utm_medium=email` first,
/// then the referrer list, then internal (same host), then any other host (referral);
/// with neither referrer nor campaign tags the visit is direct.
pub fn classify(
    page_host: &str,
    referrer_host: &str,
    utm_source: &str,
    utm_medium: &str,
    click_ids: &[String],
) -> (String, &'static str) {
    let known = (!referrer_host.is_empty()).then(|| lookup(referrer_host)).flatten();
    let utm_medium_lc = utm_medium.to_ascii_lowercase();
    let fallback_source = |default: &str| -> String {
        known
            .as_ref()
            .map(|(s, _)| s.clone())
            .or_else(|| (!utm_source.is_empty()).then(|| utm_source.to_string()))
            .or_else(|| (!referrer_host.is_empty()).then(|| referrer_host.trim_start_matches("www.").to_string()))
            .unwrap_or_else(|| default.to_string())
    };
    if PAID_MEDIUMS.contains(&utm_medium_lc.as_str()) {
        return (fallback_source("Paid"), medium::PAID);
    }
    if let Some((_, source)) = PAID_CLICK_IDS.iter().find(|(id, _)| click_ids.iter().any(|c| c == id)) {
        return (
            known.map(|(s, _)| s).unwrap_or_else(|| source.to_string()),
            medium::PAID,
        );
    }
    if utm_medium_lc == "email" || utm_medium_lc == "e-mail" || utm_medium_lc == "newsletter" {
        return (fallback_source("Email"), medium::EMAIL);
    }
    if let Some((source, class)) = known {
        return (source, class);
    }
    let bare = |h: &str| h.trim_start_matches("www.").to_ascii_lowercase();
    if !referrer_host.is_empty() && bare(referrer_host) == bare(page_host) {
        return ("Internal".to_string(), medium::INTERNAL);
    }
    if !referrer_host.is_empty() {
        return (bare(referrer_host), medium::REFERRAL);
    }
    if !utm_source.is_empty() {
        return (utm_source.to_string(), medium::REFERRAL);
    }
    (DIRECT_SOURCE.to_string(), medium::DIRECT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(referrer: &str, utm_source: &str, utm_medium: &str, clicks: &[&str]) -> (String, &'static str) {
        let clicks: Vec<String> = clicks.iter().map(|s| s.to_string()).collect();
        classify("shop.example", referrer, utm_source, utm_medium, &clicks)
    }

    #[test]
    fn classes() {
        assert_eq!(c("www.google.com", "", "", &[]), ("Google".into(), medium::SEARCH));
        assert_eq!(c("google.co.uk", "", "", &[]), ("Google".into(), medium::SEARCH));
        assert_eq!(c("duckduckgo.com", "", "", &[]), ("DuckDuckGo".into(), medium::SEARCH));
        assert_eq!(c("mail.google.com", "", "", &[]), ("Gmail".into(), medium::EMAIL));
        assert_eq!(c("t.co", "", "", &[]), ("Twitter".into(), medium::SOCIAL));
        assert_eq!(c("l.facebook.com", "", "", &[]), ("Facebook".into(), medium::SOCIAL));
        assert_eq!(
            c("news.ycombinator.com", "", "", &[]),
            ("Hacker News".into(), medium::SOCIAL)
        );
        assert_eq!(
            c("www.shop.example", "", "", &[]),
            ("Internal".into(), medium::INTERNAL)
        );
        assert_eq!(
            c("blog.other.org", "", "", &[]),
            ("blog.other.org".into(), medium::REFERRAL)
        );
        assert_eq!(c("", "", "", &[]), (DIRECT_SOURCE.into(), medium::DIRECT));
        assert_eq!(
            c("", "newsletter-42", "email", &[]),
            ("newsletter-42".into(), medium::EMAIL)
        );
        assert_eq!(
            c("www.google.com", "google", "cpc", &[]),
            ("Google".into(), medium::PAID)
        );
        assert_eq!(c("", "", "", &["gclid"]), ("Google".into(), medium::PAID));
        assert_eq!(c("", "partner", "", &[]), ("partner".into(), medium::REFERRAL));
    }

    #[test]
    fn wildcard_does_not_match_lookalikes() {
        assert!(lookup("google.com").is_some());
        assert!(lookup("google.com.au").is_some());
        assert!(lookup("notgoogle.com").is_none());
        assert!(lookup("google.evil.example.com").is_none());
        assert!(lookup("fakefacebook.com").is_none());
    }
}
