//! Where a visit came from: its source (a name from `core/data/referrers.yaml`, a UTM source,
//! or a referring host) and its channel (GA4's default channel grouping).
//!
//! Source precedence: `utm_source` (mapped onto the list's names case-insensitively, so
//! `utm_source=google` and a google.com referrer are one source, `Google`), then an ad click
//! id added only to paid clicks (gclid: Google), then the referrer (a known host or app, else
//! the host itself; the site's own host is no source at all), then a click id that organic
//! links carry too (fbclid: Facebook); with none of these the visit is `Direct / None`.
//!
//! Channel: GA4's default channel group rules, in GA4's order, over the source's class (search,
//! social, video, shopping, email), the medium (`utm_medium`, or what the referrer implies:
//! organic for a search engine, referral otherwise) and the campaign. The rules are Google's:
//! <https://support.google.com/analytics/answer/9756891>.

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

/// The channels of GA4's default channel grouping.
pub mod channel {
    pub const DIRECT: &str = "Direct";
    pub const CROSS_NETWORK: &str = "Cross-network";
    pub const PAID_SHOPPING: &str = "Paid Shopping";
    pub const PAID_SEARCH: &str = "Paid Search";
    pub const PAID_SOCIAL: &str = "Paid Social";
    pub const PAID_VIDEO: &str = "Paid Video";
    pub const DISPLAY: &str = "Display";
    pub const PAID_OTHER: &str = "Paid Other";
    pub const ORGANIC_SHOPPING: &str = "Organic Shopping";
    pub const ORGANIC_SOCIAL: &str = "Organic Social";
    pub const ORGANIC_VIDEO: &str = "Organic Video";
    pub const ORGANIC_SEARCH: &str = "Organic Search";
    pub const REFERRAL: &str = "Referral";
    pub const EMAIL: &str = "Email";
    pub const AFFILIATES: &str = "Affiliates";
    pub const AUDIO: &str = "Audio";
    pub const SMS: &str = "SMS";
    pub const MOBILE_PUSH: &str = "Mobile Push Notifications";
    pub const UNASSIGNED: &str = "Unassigned";
}

/// Every channel, in GA4's rule order.
pub const CHANNELS: &[&str] = &[
    channel::DIRECT,
    channel::CROSS_NETWORK,
    channel::PAID_SHOPPING,
    channel::PAID_SEARCH,
    channel::PAID_SOCIAL,
    channel::PAID_VIDEO,
    channel::DISPLAY,
    channel::PAID_OTHER,
    channel::ORGANIC_SHOPPING,
    channel::ORGANIC_SOCIAL,
    channel::ORGANIC_VIDEO,
    channel::ORGANIC_SEARCH,
    channel::REFERRAL,
    channel::EMAIL,
    channel::AFFILIATES,
    channel::AUDIO,
    channel::SMS,
    channel::MOBILE_PUSH,
    channel::UNASSIGNED,
];

/// A channel name as a filter may write it (`organic search`) in its stored form
/// (`Organic Search`); anything else as given.
pub fn canonical_channel(value: &str) -> String {
    let value = value.trim();
    CHANNELS
        .iter()
        .find(|c| c.eq_ignore_ascii_case(value))
        .map_or_else(|| value.to_string(), |c| c.to_string())
}

/// The source of a visit with nothing to go by.
pub const DIRECT_SOURCE: &str = "Direct / None";

/// The class of a known source, as GA4's channel rules read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Class {
    Search,
    Social,
    Video,
    Shopping,
    Email,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceEntry {
    #[serde(default)]
    hosts: Vec<String>,
    #[serde(default)]
    apps: Vec<String>,
    #[serde(default)]
    aliases: Vec<String>,
}

/// A host pattern of the list (see the file's header for the forms).
#[derive(Debug)]
enum Pattern {
    /// `example.com`: the host, or with `www.` / `m.` in front.
    Exact(String),
    /// `*.example.com`: the host and its subdomains.
    Subdomains(String),
    /// `name.*` / `sub.name.*`: the labels, then exactly a public suffix.
    AnySuffix(String),
}

struct Known {
    name: String,
    class: Class,
}

struct List {
    sources: Vec<Known>,
    /// (pattern, index into `sources`), most specific first.
    hosts: Vec<(Pattern, usize)>,
    apps: HashMap<String, usize>,
    aliases: HashMap<String, usize>,
    /// Aliases two sources claim: mistakes in the data file (a unit test keeps this empty).
    conflicts: Vec<String>,
}

fn list() -> &'static List {
    static LIST: OnceLock<List> = OnceLock::new();
    LIST.get_or_init(|| {
        let raw: Vec<(Class, Vec<(String, SourceEntry)>)> = {
            let by_class: serde_yaml::Mapping = serde_yaml::from_str(include_str!("../../data/referrers.yaml"))
                .expect("referrers.yaml is valid (unit-tested)");
            by_class
                .into_iter()
                .map(|(class, sources)| {
                    let class: Class = serde_yaml::from_value(class).expect("referrers.yaml: a known class");
                    let sources: serde_yaml::Mapping =
                        serde_yaml::from_value(sources).expect("referrers.yaml: sources by name");
                    let sources = sources
                        .into_iter()
                        .map(|(name, entry)| {
                            (
                                serde_yaml::from_value::<String>(name).expect("referrers.yaml: a source name"),
                                serde_yaml::from_value::<SourceEntry>(entry).expect("referrers.yaml: a source entry"),
                            )
                        })
                        .collect();
                    (class, sources)
                })
                .collect()
        };
        let mut list = List {
            sources: Vec::new(),
            hosts: Vec::new(),
            apps: HashMap::new(),
            aliases: HashMap::new(),
            conflicts: Vec::new(),
        };
        for (class, sources) in raw {
            for (name, entry) in sources {
                let i = list.sources.len();
                let mut aliases = vec![name.to_lowercase(), name.to_lowercase().replace(['!', ' '], "")];
                for host in &entry.hosts {
                    let host = host.to_ascii_lowercase();
                    let pattern = if let Some(base) = host.strip_prefix("*.") {
                        Pattern::Subdomains(base.to_string())
                    } else if let Some(labels) = host.strip_suffix(".*") {
                        Pattern::AnySuffix(labels.to_string())
                    } else {
                        Pattern::Exact(host.clone())
                    };
                    let bare = host.trim_start_matches("*.").trim_end_matches(".*").to_string();
                    // A two-label domain names its source by its first label: utm_source=facebook.
                    if !matches!(pattern, Pattern::AnySuffix(_)) {
                        if let [first, _] = bare.split('.').collect::<Vec<_>>()[..] {
                            if first.len() >= 3 {
                                aliases.push(first.to_string());
                            }
                        }
                    }
                    aliases.push(bare);
                    list.hosts.push((pattern, i));
                }
                aliases.extend(entry.aliases.iter().map(|a| a.to_lowercase()));
                for alias in aliases {
                    let owner = *list.aliases.entry(alias.clone()).or_insert(i);
                    if owner != i {
                        list.conflicts.push(alias);
                    }
                }
                for app in &entry.apps {
                    list.apps.insert(app.to_ascii_lowercase(), i);
                }
                list.sources.push(Known { name, class });
            }
        }
        // The most specific pattern first: mail.yahoo.* before yahoo.*, cn.bing.com before
        // bing.com; among equals, exact hosts before subdomain wildcards.
        list.hosts.sort_by(|(a, _), (b, _)| {
            let key = |p: &Pattern| match p {
                Pattern::Exact(h) => (h.split('.').count(), 2, h.clone()),
                Pattern::AnySuffix(h) => (h.split('.').count() + 1, 1, h.clone()),
                Pattern::Subdomains(h) => (h.split('.').count(), 0, h.clone()),
            };
            key(b).cmp(&key(a))
        });
        list
    })
}

/// `www.` or `m.` in front of a host: the same site.
fn strip_front(host: &str) -> &str {
    host.strip_prefix("www.")
        .or_else(|| host.strip_prefix("m."))
        .unwrap_or(host)
}

fn matches(host: &str, pattern: &Pattern) -> bool {
    match pattern {
        Pattern::Exact(h) => host == h || strip_front(host) == h,
        Pattern::Subdomains(base) => host == base || host.strip_suffix(base.as_str()).is_some_and(|p| p.ends_with('.')),
        Pattern::AnySuffix(labels) => {
            let Some(suffix) = psl::suffix_str(host) else {
                return false;
            };
            let rest = host.strip_suffix(suffix).and_then(|r| r.strip_suffix('.'));
            rest.is_some_and(|r| r == labels || strip_front(r) == labels)
                // The suffix must be a listed one, not the default rule for unknown TLDs.
                && psl::suffix(host.as_bytes()).is_some_and(|s| s.is_known())
        }
    }
}

/// A known source by referrer host: `(name, class)`.
pub fn lookup(host: &str) -> Option<(&'static str, Class)> {
    let list = list();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    list.hosts
        .iter()
        .find(|(pattern, _)| matches(&host, pattern))
        .map(|(_, i)| (list.sources[*i].name.as_str(), list.sources[*i].class))
}

/// The app that sent an app referrer (`android-app://com.google.android.gm/` ->
/// `com.google.android.gm`; `ios-app://544007664/...` -> `544007664`).
pub fn app_package(referrer: &str) -> Option<String> {
    let rest = referrer
        .strip_prefix("android-app://")
        .or_else(|| referrer.strip_prefix("ios-app://"))?;
    let package = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let valid = !package.is_empty()
        && package
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    valid.then(|| package.to_string())
}

fn lookup_app(package: &str) -> Option<(&'static str, Class)> {
    let list = list();
    list.apps
        .get(&package.to_ascii_lowercase())
        .map(|i| (list.sources[*i].name.as_str(), list.sources[*i].class))
}

/// The list's name for a UTM source or a source filter value, case-insensitively
/// (`google`, `Google`, `google.com` -> `Google`; `fb` -> `Facebook`); anything else as given.
pub fn canonical_source(value: &str) -> String {
    known_source(value).map_or_else(|| value.trim().to_string(), |(name, _)| name.to_string())
}

fn known_source(value: &str) -> Option<(&'static str, Class)> {
    let list = list();
    let key = value.trim().to_lowercase();
    list.aliases
        .get(&key)
        .or_else(|| list.aliases.get(strip_front(&key)))
        .map(|i| (list.sources[*i].name.as_str(), list.sources[*i].class))
        // A host written as the source (utm_source=google.com): the list's host patterns.
        .or_else(|| key.contains('.').then(|| lookup(&key)).flatten())
}

/// Ad click ids that ad platforms add only to paid clicks (auto-tagging): one makes a visit
/// paid, from that platform.
const PAID_CLICK_IDS: &[(&str, &str)] = &[
    ("gclid", "Google"),
    ("gbraid", "Google"),
    ("wbraid", "Google"),
    ("dclid", "Google"),
    ("msclkid", "Bing"),
    ("ttclid", "TikTok"),
    ("twclid", "Twitter"),
    ("li_fat_id", "LinkedIn"),
    ("yclid", "Yandex"),
];

/// Click ids that platforms add to every outbound link, shares and posts included: they tell
/// the source, not that anyone paid (a Facebook share carries `fbclid`).
const ORGANIC_CLICK_IDS: &[(&str, &str)] = &[("fbclid", "Facebook"), ("igshid", "Instagram")];

/// What the page URL and the referrer say about a visit's origin.
#[derive(Clone, Copy, Debug, Default)]
pub struct Signals<'a> {
    /// The page's host, `www.` already gone.
    pub page_host: &'a str,
    /// The referrer as stored (an http(s) URL, an app referrer, or empty).
    pub referrer: &'a str,
    pub utm_source: &'a str,
    pub utm_medium: &'a str,
    pub utm_campaign: &'a str,
    /// Names of the page URL's query parameters.
    pub params: &'a [String],
}

/// The source and channel of a visit (or of one event).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribution {
    pub source: String,
    pub channel: &'static str,
    /// The referring host (`www.` gone) or app package; empty when there is none or it is
    /// the site itself.
    pub referrer_host: String,
}

/// The referrer's host, lower case, or an app referrer's package.
fn referrer_origin(referrer: &str) -> (String, Option<(&'static str, Class)>) {
    if referrer.is_empty() {
        return (String::new(), None);
    }
    if let Some(package) = app_package(referrer) {
        let known = lookup_app(&package);
        return (package, known);
    }
    let host = url::Url::parse(referrer)
        .ok()
        .and_then(|u| u.host_str().map(|h| h.trim_end_matches('.').to_ascii_lowercase()))
        .unwrap_or_default();
    let known = (!host.is_empty()).then(|| lookup(&host)).flatten();
    (host, known)
}

pub fn attribute(s: &Signals<'_>) -> Attribution {
    let (host, from_referrer) = referrer_origin(s.referrer);
    let bare = |h: &str| h.trim_start_matches("www.").to_string();
    // The site's own pages are no source: a visit that starts from one is direct (GA4 ignores
    // self-referrals the same way).
    let own = !host.is_empty() && bare(&host) == bare(s.page_host);
    let referrer_host = if own { String::new() } else { bare(&host) };
    let has = |id: &str| s.params.iter().any(|p| p == id);
    let paid_click = PAID_CLICK_IDS.iter().find(|(id, _)| has(id)).map(|(_, source)| *source);
    let organic_click = ORGANIC_CLICK_IDS
        .iter()
        .find(|(id, _)| has(id))
        .map(|(_, source)| *source);

    let utm_source = s.utm_source.trim();
    let (source, class): (String, Option<Class>) = if !utm_source.is_empty() {
        match known_source(utm_source) {
            Some((name, class)) => (name.to_string(), Some(class)),
            None => (utm_source.to_string(), None),
        }
    } else if let Some(platform) = paid_click {
        (platform.to_string(), known_source(platform).map(|(_, c)| c))
    } else if let Some((name, class)) = from_referrer.filter(|_| !own) {
        (name.to_string(), Some(class))
    } else if !referrer_host.is_empty() {
        (referrer_host.clone(), None)
    } else if let Some(platform) = organic_click {
        (platform.to_string(), known_source(platform).map(|(_, c)| c))
    } else {
        (DIRECT_SOURCE.to_string(), None)
    };

    // The medium GA4 would record: the tag, else what auto-tagging or the referrer implies.
    let medium = if !s.utm_medium.trim().is_empty() {
        s.utm_medium.trim().to_lowercase()
    } else if !utm_source.is_empty() {
        "(not set)".to_string()
    } else if paid_click.is_some() {
        "cpc".to_string()
    } else if source == DIRECT_SOURCE {
        "(none)".to_string()
    } else {
        match class {
            Some(Class::Search) => "organic".to_string(),
            Some(Class::Email) => "email".to_string(),
            _ => "referral".to_string(),
        }
    };
    let channel = channel_of(&source, class, &medium, &s.utm_campaign.to_lowercase());
    Attribution {
        source,
        channel,
        referrer_host,
    }
}

/// GA4's default channel group, rule by rule in GA4's order.
fn channel_of(source: &str, class: Option<Class>, medium: &str, campaign: &str) -> &'static str {
    use channel::*;
    let source_lc = source.to_lowercase();
    let paid = medium.contains("cp") || medium == "ppc" || medium == "retargeting" || medium.starts_with("paid");
    let shopping_campaign = campaign.contains("shopping") || shop_word(campaign);
    let is = |c: Class| class == Some(c);
    let email_word = |v: &str| matches!(v, "email" | "e-mail" | "e_mail" | "e mail");
    if source == DIRECT_SOURCE && matches!(medium, "(not set)" | "(none)") {
        DIRECT
    } else if campaign.contains("cross-network") {
        CROSS_NETWORK
    } else if (is(Class::Shopping) || shopping_campaign) && paid {
        PAID_SHOPPING
    } else if is(Class::Search) && paid {
        PAID_SEARCH
    } else if is(Class::Social) && paid {
        PAID_SOCIAL
    } else if is(Class::Video) && paid {
        PAID_VIDEO
    } else if matches!(medium, "display" | "banner" | "expandable" | "interstitial" | "cpm") {
        DISPLAY
    } else if paid {
        PAID_OTHER
    } else if is(Class::Shopping) || shopping_campaign {
        ORGANIC_SHOPPING
    } else if is(Class::Social)
        || matches!(
            medium,
            "social" | "social-network" | "social-media" | "sm" | "social network" | "social media"
        )
    {
        ORGANIC_SOCIAL
    } else if is(Class::Video) || medium.contains("video") {
        ORGANIC_VIDEO
    } else if is(Class::Search) || medium == "organic" {
        ORGANIC_SEARCH
    } else if matches!(medium, "referral" | "app" | "link") {
        REFERRAL
    } else if email_word(&source_lc) || email_word(medium) || is(Class::Email) {
        EMAIL
    } else if medium == "affiliate" {
        AFFILIATES
    } else if medium == "audio" {
        AUDIO
    } else if source_lc == "sms" || medium == "sms" {
        SMS
    } else if medium.ends_with("push")
        || medium.contains("mobile")
        || medium.contains("notification")
        || source_lc == "firebase"
    {
        MOBILE_PUSH
    } else {
        UNASSIGNED
    }
}

/// GA4's `([^a-df-z]|^)shop`: "shop" at the start or after anything but the letters a-d, f-z.
fn shop_word(campaign: &str) -> bool {
    campaign.match_indices("shop").any(|(i, _)| {
        campaign[..i]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_ascii_lowercase() && c != 'e'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(referrer: &str, utm: (&str, &str, &str), params: &[&str]) -> (String, &'static str) {
        let params: Vec<String> = params.iter().map(|s| s.to_string()).collect();
        let a = attribute(&Signals {
            page_host: "shop.example.com",
            referrer,
            utm_source: utm.0,
            utm_medium: utm.1,
            utm_campaign: utm.2,
            params: &params,
        });
        (a.source, a.channel)
    }

    fn r(referrer: &str) -> (String, &'static str) {
        attr(referrer, ("", "", ""), &[])
    }

    #[test]
    fn the_data_file_loads_and_aliases_are_unambiguous() {
        let list = list();
        assert!(list.sources.len() > 60);
        assert!(
            list.conflicts.is_empty(),
            "aliases of two sources: {:?}",
            list.conflicts
        );
        let names: std::collections::HashSet<String> = list.sources.iter().map(|s| s.name.to_lowercase()).collect();
        assert_eq!(names.len(), list.sources.len(), "source names are unique");
    }

    #[test]
    fn referrers_by_class() {
        use channel::*;
        assert_eq!(r("https://www.google.com/"), ("Google".into(), ORGANIC_SEARCH));
        assert_eq!(
            r("https://www.google.co.uk/search?q=x"),
            ("Google".into(), ORGANIC_SEARCH)
        );
        assert_eq!(r("https://google.de/"), ("Google".into(), ORGANIC_SEARCH));
        assert_eq!(r("https://duckduckgo.com/"), ("DuckDuckGo".into(), ORGANIC_SEARCH));
        assert_eq!(r("https://search.yahoo.com/"), ("Yahoo!".into(), ORGANIC_SEARCH));
        assert_eq!(r("https://uk.search.yahoo.com/"), ("Yahoo!".into(), ORGANIC_SEARCH));
        assert_eq!(r("https://mail.google.com/mail/u/0/"), ("Gmail".into(), EMAIL));
        assert_eq!(r("https://t.co/abc"), ("Twitter".into(), ORGANIC_SOCIAL));
        assert_eq!(r("https://l.facebook.com/"), ("Facebook".into(), ORGANIC_SOCIAL));
        assert_eq!(
            r("https://news.ycombinator.com/item?id=1"),
            ("Hacker News".into(), ORGANIC_SOCIAL)
        );
        assert_eq!(
            r("https://www.youtube.com/watch?v=x"),
            ("YouTube".into(), ORGANIC_VIDEO)
        );
        assert_eq!(r("https://www.amazon.de/dp/x"), ("Amazon".into(), ORGANIC_SHOPPING));
        assert_eq!(r("https://blog.other.org/post"), ("blog.other.org".into(), REFERRAL));
        assert_eq!(r(""), (DIRECT_SOURCE.into(), DIRECT));
        // The site's own pages are no source.
        assert_eq!(r("https://www.shop.example.com/cart"), (DIRECT_SOURCE.into(), DIRECT));
    }

    #[test]
    fn wildcards_match_only_the_product_they_mean() {
        use channel::*;
        // Webmail under a search engine's name is email, whatever the country's suffix.
        assert_eq!(r("https://mail.yahoo.co.uk/"), ("Yahoo! Mail".into(), EMAIL));
        assert_eq!(r("https://mail.yahoo.com/"), ("Yahoo! Mail".into(), EMAIL));
        assert_eq!(r("https://mail.yandex.ru/"), ("Yandex Mail".into(), EMAIL));
        // Another product under the name is not the search engine.
        assert_eq!(r("https://finance.yahoo.com/"), ("finance.yahoo.com".into(), REFERRAL));
        assert_eq!(
            r("https://docs.google.com/document"),
            ("docs.google.com".into(), REFERRAL)
        );
        // Look-alikes are nobody.
        for host in [
            "notgoogle.com",
            "google.evil.example.com",
            "google.evil.com",
            "fakefacebook.com",
            "google.notatld",
        ] {
            assert!(lookup(host).is_none(), "{host}");
        }
        assert!(lookup("google.com.au").is_some());
        assert!(lookup("www.google.com.au").is_some());
    }

    #[test]
    fn app_referrers() {
        use channel::*;
        assert_eq!(
            r("android-app://com.google.android.googlequicksearchbox/"),
            ("Google".into(), ORGANIC_SEARCH)
        );
        assert_eq!(r("android-app://com.google.android.gm/"), ("Gmail".into(), EMAIL));
        assert_eq!(
            r("android-app://com.facebook.katana/"),
            ("Facebook".into(), ORGANIC_SOCIAL)
        );
        assert_eq!(r("android-app://com.slack/"), ("Slack".into(), ORGANIC_SOCIAL));
        assert_eq!(
            r("android-app://org.example.reader/"),
            ("org.example.reader".into(), REFERRAL)
        );
        assert_eq!(app_package("android-app://com.x/path?q"), Some("com.x".into()));
        assert_eq!(app_package("android-app://"), None);
        assert_eq!(app_package("https://x.example/"), None);
    }

    #[test]
    fn utm_sources_take_the_lists_names() {
        use channel::*;
        // The case: one source, Google, whether tagged or referred.
        assert_eq!(
            attr("https://www.google.com/", ("google", "organic", ""), &[]),
            ("Google".into(), ORGANIC_SEARCH)
        );
        assert_eq!(
            attr("", ("Google", "organic", ""), &[]),
            ("Google".into(), ORGANIC_SEARCH)
        );
        for alias in [
            "facebook",
            "Facebook",
            "FB",
            "facebook.com",
            "m.facebook.com",
            "l.facebook.com",
        ] {
            assert_eq!(canonical_source(alias), "Facebook", "{alias}");
        }
        assert_eq!(canonical_source("hacker news"), "Hacker News");
        assert_eq!(canonical_source("yahoo"), "Yahoo!");
        assert_eq!(canonical_source("google.com"), "Google");
        assert_eq!(canonical_source("www.google.co.uk"), "Google");
        assert_eq!(canonical_source("newsletter-42"), "newsletter-42");
        // An unknown tag keeps its text; the channel follows the medium.
        assert_eq!(attr("", ("newsletter", "email", ""), &[]), ("newsletter".into(), EMAIL));
        assert_eq!(
            attr("", ("partner", "affiliate", ""), &[]),
            ("partner".into(), AFFILIATES)
        );
        assert_eq!(attr("", ("partner", "", ""), &[]), ("partner".into(), UNASSIGNED));
        assert_eq!(attr("", ("ig", "", ""), &[]), ("Instagram".into(), ORGANIC_SOCIAL));
    }

    #[test]
    fn mediums_map_like_ga4() {
        use channel::*;
        let ch = |source: &str, medium: &str, campaign: &str| attr("", (source, medium, campaign), &[]).1;
        assert_eq!(ch("google", "cpc", ""), PAID_SEARCH);
        assert_eq!(ch("bing", "ppc", ""), PAID_SEARCH);
        assert_eq!(ch("facebook", "paid", ""), PAID_SOCIAL);
        assert_eq!(ch("facebook", "paid-social", ""), PAID_SOCIAL);
        assert_eq!(ch("youtube", "cpv", ""), PAID_VIDEO);
        assert_eq!(ch("amazon", "cpc", ""), PAID_SHOPPING);
        assert_eq!(ch("partner", "cpc", "summer shopping"), PAID_SHOPPING);
        assert_eq!(
            ch("partner", "cpc", "workshop"),
            PAID_OTHER,
            "'workshop' is no shop word"
        );
        assert_eq!(ch("adnet", "display", ""), DISPLAY);
        assert_eq!(ch("adnet", "banner", ""), DISPLAY);
        assert_eq!(
            ch("adnet", "cpm", ""),
            DISPLAY,
            "GA4's Display rule comes before Paid Other"
        );
        assert_eq!(ch("adnet", "retargeting", ""), PAID_OTHER);
        assert_eq!(ch("adnet", "social", ""), ORGANIC_SOCIAL);
        assert_eq!(ch("adnet", "video", ""), ORGANIC_VIDEO);
        assert_eq!(ch("adnet", "organic", ""), ORGANIC_SEARCH);
        assert_eq!(ch("adnet", "referral", ""), REFERRAL);
        assert_eq!(ch("adnet", "e-mail", ""), EMAIL);
        assert_eq!(ch("email", "", ""), EMAIL);
        assert_eq!(ch("adnet", "audio", ""), AUDIO);
        assert_eq!(ch("sms", "", ""), SMS);
        assert_eq!(ch("adnet", "web-push", ""), MOBILE_PUSH);
        assert_eq!(ch("firebase", "", ""), MOBILE_PUSH);
        assert_eq!(ch("adnet", "y", "cross-network launch"), CROSS_NETWORK);
        assert_eq!(ch("adnet", "y", ""), UNASSIGNED);
    }

    #[test]
    fn click_ids() {
        use channel::*;
        // A Facebook share: the click id names Facebook but does not make the visit paid.
        assert_eq!(
            attr("https://l.facebook.com/", ("", "", ""), &["fbclid"]),
            ("Facebook".into(), ORGANIC_SOCIAL)
        );
        assert_eq!(attr("", ("", "", ""), &["fbclid"]), ("Facebook".into(), ORGANIC_SOCIAL));
        // Auto-tagged ad clicks are paid.
        assert_eq!(attr("", ("", "", ""), &["gclid"]), ("Google".into(), PAID_SEARCH));
        assert_eq!(
            attr("https://www.google.com/", ("", "", ""), &["gclid"]),
            ("Google".into(), PAID_SEARCH)
        );
        assert_eq!(attr("", ("", "", ""), &["msclkid"]), ("Bing".into(), PAID_SEARCH));
        assert_eq!(attr("", ("", "", ""), &["ttclid"]), ("TikTok".into(), PAID_SOCIAL));
        // A tag beats a click id.
        assert_eq!(
            attr("", ("newsletter", "email", ""), &["gclid"]),
            ("newsletter".into(), EMAIL)
        );
    }
}
