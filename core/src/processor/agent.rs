//! Browser, OS, device class and the bot flag, from the User-Agent.
//!
//! Two maintained, versioned lists do the recognising (pinned in `scripts/install-deps.sh`,
//! embedded at build time by `core/build.rs`; a change of either is a processing change):
//!
//! - **Bots**: isbot's crawler patterns ([`ISBOT_VERSION`]), case-insensitive like isbot
//!   itself. They are written for JavaScript; all but a handful compile as one `regex`, and
//!   the few with look-around (e.g. `(?<! cu)bots?(?:\b|_)`, which keeps a CUBOT phone out)
//!   run with `fancy-regex`. An Android device model is left out of the check (see
//!   [`without_android_model`]). An empty User-Agent is a bot too: every browser sends one.
//! - **Browser and OS**: uap-core's `regexes.yaml` ([`UAP_CORE_VERSION`]) with the official
//!   `ua-parser` crate. It names in-app browsers (Facebook, Instagram) as such.
//!
//! uap-core names devices but does not class them, so [`device_class`] does, from the OS
//! and the tokens browsers use to say what they run on.

use std::sync::LazyLock;

/// The uap-core release whose `regexes.yaml` is embedded.
pub const UAP_CORE_VERSION: &str = env!("SIGHTLINE_UAP_CORE_VERSION");
/// The isbot release whose crawler patterns are embedded.
pub const ISBOT_VERSION: &str = env!("SIGHTLINE_ISBOT_VERSION");

const UAP_REGEXES: &str = include_str!(concat!(env!("OUT_DIR"), "/regexes.yaml"));
const ISBOT_PATTERNS: &str = include_str!(concat!(env!("OUT_DIR"), "/isbot-patterns.json"));

/// What the User-Agent tells us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    /// The browser family as uap-core names it, the platform dropped ("Chrome" for Chrome
    /// Mobile, "Safari" for Mobile Safari); in-app browsers by their app ("Facebook",
    /// "Instagram"); empty when unknown.
    pub browser: String,
    /// Dotted, as many parts as the User-Agent gives (`131.0.6778`).
    pub browser_version: String,
    /// The OS family as uap-core names it ("Windows", "Mac OS X", "iOS", "Android"), or empty.
    pub os: String,
    pub os_version: String,
    /// desktop, mobile, tablet, bot or other.
    pub device: String,
    pub is_bot: bool,
}

impl Agent {
    /// Nothing known about the visitor's software (server-to-server events).
    pub fn unknown() -> Self {
        Agent {
            browser: String::new(),
            browser_version: String::new(),
            os: String::new(),
            os_version: String::new(),
            device: "other".to_string(),
            is_bot: false,
        }
    }
}

/// isbot's patterns compiled for Rust.
struct BotPatterns {
    /// Every pattern without look-around, as one alternation. Bytes and ASCII classes, as
    /// the patterns mean them in JavaScript (`\w`, `\b`, `\d` are ASCII there).
    plain: regex::bytes::Regex,
    /// The patterns that need look-around, and beside them the same patterns with the
    /// look-around taken out, which match a superset: fancy-regex backtracks at every
    /// position (tens of µs per User-Agent), so it only runs where its prefilter matched.
    lookaround: Vec<fancy_regex::Regex>,
    prefilters: regex::bytes::RegexSet,
}

/// A case-insensitive, ASCII-class, byte-level regex as isbot's JavaScript patterns mean it.
fn javascript_flags(builder: &mut regex::bytes::RegexBuilder) -> &mut regex::bytes::RegexBuilder {
    builder.case_insensitive(true).unicode(false).size_limit(64 << 20)
}

impl BotPatterns {
    fn compile(json: &str) -> Result<Self, String> {
        let patterns: Vec<String> = serde_json::from_str(json).map_err(|e| format!("isbot-patterns.json: {e}"))?;
        let (with, without): (Vec<&String>, Vec<&String>) = patterns
            .iter()
            .partition(|p| p.contains("(?=") || p.contains("(?!") || p.contains("(?<=") || p.contains("(?<!"));
        let alternation = without
            .iter()
            .map(|p| format!("(?:{})", from_javascript(p)))
            .collect::<Vec<_>>()
            .join("|");
        let plain = javascript_flags(&mut regex::bytes::RegexBuilder::new(&alternation))
            .build()
            .map_err(|e| format!("isbot patterns: {e}"))?;
        let lookaround = with
            .iter()
            .map(|p| {
                fancy_regex::Regex::new(&format!("(?i){}", from_javascript(p)))
                    .map_err(|e| format!("isbot pattern {p:?}: {e}"))
            })
            .collect::<Result<_, _>>()?;
        let prefilters =
            regex::bytes::RegexSetBuilder::new(with.iter().map(|p| from_javascript(&without_lookaround(p))))
                .case_insensitive(true)
                .unicode(false)
                .size_limit(64 << 20)
                .build()
                .map_err(|e| format!("isbot look-around prefilters: {e}"))?;
        Ok(BotPatterns {
            plain,
            lookaround,
            prefilters,
        })
    }

    fn is_match(&self, user_agent: &str) -> bool {
        self.plain.is_match(user_agent.as_bytes())
            || self
                .prefilters
                .matches(user_agent.as_bytes())
                .iter()
                // A pattern that gives up (backtrack limit) does not make a bot.
                .any(|i| self.lookaround[i].is_match(user_agent).unwrap_or(false))
    }
}

/// The User-Agent without the device model of its Android platform token, for the bot
/// patterns: the model (`Linux; Android 12; CUBOT_X30 Build/SP1A`) is free text a maker
/// chose, so words in it (CUBOT, "Discovery", "Virtuoso") say nothing about automation.
/// Crawlers that pose as Android phones still say who they are outside it.
fn without_android_model(user_agent: &str) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    let Some(open) = user_agent.find('(') else {
        return Cow::Borrowed(user_agent);
    };
    let group = &user_agent[open + 1..];
    let group = &group[..group.find(')').unwrap_or(group.len())];
    let items: Vec<&str> = group.split(';').collect();
    let Some(android) = items.iter().position(|item| {
        item.trim_start()
            .get(..7)
            .is_some_and(|w| w.eq_ignore_ascii_case("android"))
    }) else {
        return Cow::Borrowed(user_agent);
    };
    // Old builds put the locale (`en-US`) or `U` between the version and the model.
    let is_locale = |item: &str| {
        let item = item.trim();
        item.eq_ignore_ascii_case("u")
            || item.eq_ignore_ascii_case("wv")
            || (item.len() >= 2
                && item.len() <= 10
                && item.as_bytes()[..2].iter().all(u8::is_ascii_alphabetic)
                && item
                    .bytes()
                    .skip(2)
                    .all(|b| b == b'-' || b == b'_' || b.is_ascii_alphabetic())
                && (item.len() == 2 || matches!(item.as_bytes()[2], b'-' | b'_')))
    };
    let Some(model) = items[android + 1..].iter().find(|item| !is_locale(item)) else {
        return Cow::Borrowed(user_agent);
    };
    // `model` is a slice of `user_agent`: cut it out by its position.
    let start = model.as_ptr() as usize - user_agent.as_ptr() as usize;
    Cow::Owned(format!(
        "{}{}",
        &user_agent[..start],
        &user_agent[start + model.len()..]
    ))
}

/// The pattern with its look-around groups (`(?=…)`, `(?!…)`, `(?<=…)`, `(?<!…)`) removed:
/// they only ever narrow a match, so what is left matches wherever the pattern does.
fn without_lookaround(pattern: &str) -> String {
    let bytes = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len());
    let mut i = 0;
    let mut in_class = false;
    while i < bytes.len() {
        let rest = &pattern[i..];
        if !in_class && ["(?=", "(?!", "(?<=", "(?<!"].iter().any(|p| rest.starts_with(p)) {
            // Skip to the parenthesis that closes this group.
            let mut depth = 0;
            let mut class = false;
            while i < bytes.len() {
                match bytes[i] {
                    b'\\' => i += 1,
                    b'[' if !class => class = true,
                    b']' if class => class = false,
                    b'(' if !class => depth += 1,
                    b')' if !class => {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            continue;
        }
        let c = rest.chars().next().unwrap_or_default();
        match c {
            '\\' => {
                out.push(c);
                if let Some(next) = rest[1..].chars().next() {
                    out.push(next);
                    i += next.len_utf8();
                }
            }
            '[' if !in_class => {
                in_class = true;
                out.push(c);
            }
            ']' if in_class => {
                in_class = false;
                out.push(c);
            }
            _ => out.push(c),
        }
        i += c.len_utf8();
    }
    out
}

/// The one place JavaScript's regex syntax differs from Rust's in these patterns: inside a
/// character class, JavaScript reads a `-` next to a class escape (`[\w\d-.]`) as a literal
/// dash, where Rust refuses the "range". Such a dash is escaped; nothing else changes.
fn from_javascript(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 4);
    let mut chars = pattern.chars().peekable();
    let mut in_class = false;
    // Whether the previous item in the class was a class escape such as `\w`.
    let mut after_class_escape = false;
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let next = chars.next();
                out.push(c);
                if let Some(n) = next {
                    out.push(n);
                }
                after_class_escape = in_class && matches!(next, Some('w' | 'W' | 'd' | 'D' | 's' | 'S'));
                continue;
            }
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '-' if in_class => {
                let before_escape = chars.peek() == Some(&'\\');
                if after_class_escape || before_escape {
                    out.push_str("\\-");
                    after_class_escape = false;
                    continue;
                }
            }
            _ => {}
        }
        after_class_escape = false;
        out.push(c);
    }
    out
}

/// uap-core's browser and OS parsers (its device parser is left out: it would hold 15 MB of
/// compiled regexes to name phone models, and the device class needs none of it).
struct Parsers {
    browser: ua_parser::user_agent::Extractor<'static>,
    os: ua_parser::os::Extractor<'static>,
    bots: BotPatterns,
}

impl Parsers {
    fn load() -> Result<Self, String> {
        let regexes: ua_parser::Regexes<'static> =
            serde_yaml::from_str(UAP_REGEXES).map_err(|e| format!("uap-core regexes.yaml: {e}"))?;
        let failed = |e: &dyn std::fmt::Display| format!("uap-core regexes.yaml: {e}");
        let browser = regexes
            .user_agent_parsers
            .into_iter()
            .try_fold(ua_parser::user_agent::Builder::new(), |b, p| b.push(p))
            .map_err(|e| failed(&e))?
            .build()
            .map_err(|e| failed(&e))?;
        let os = regexes
            .os_parsers
            .into_iter()
            .try_fold(ua_parser::os::Builder::new(), |b, p| b.push(p))
            .map_err(|e| failed(&e))?
            .build()
            .map_err(|e| failed(&e))?;
        Ok(Parsers {
            browser,
            os,
            bots: BotPatterns::compile(ISBOT_PATTERNS)?,
        })
    }
}

/// Compiled once per process (~100 ms and ~11 MB in a release build). The
/// data is embedded at build time, and a unit test loads it, so this cannot fail on input.
static PARSERS: LazyLock<Parsers> =
    LazyLock::new(|| Parsers::load().expect("the embedded user-agent data compiles (unit-tested)"));

/// User agents repeat heavily (a handful of browser builds cover most traffic), and parsing
/// one costs microseconds, so results are memoised per thread. Parsing is pure, so the cache
/// never changes an answer; it is cleared when full to bound its memory.
const CACHE_ENTRIES: usize = 4096;

thread_local! {
    static CACHE: std::cell::RefCell<std::collections::HashMap<String, Agent>> = std::cell::RefCell::new(std::collections::HashMap::new());
}

pub fn parse(user_agent: &str) -> Agent {
    CACHE.with(|cache| {
        if let Some(hit) = cache.borrow().get(user_agent) {
            return hit.clone();
        }
        let agent = parse_uncached(user_agent);
        let mut cache = cache.borrow_mut();
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(user_agent.to_string(), agent.clone());
        agent
    })
}

/// Joins the version parts a parser found: `131`, `0`, `6778` -> `131.0.6778`.
fn dotted<'a>(parts: impl IntoIterator<Item = Option<&'a str>>) -> String {
    parts
        .into_iter()
        .map_while(|p| p.filter(|s| !s.is_empty()))
        .collect::<Vec<_>>()
        .join(".")
}

/// uap-core's "Other" is our empty.
fn known(name: &str) -> String {
    if name == "Other" {
        String::new()
    } else {
        name.to_string()
    }
}

/// The browser as people name it: the platform is the device dimension's business, so
/// "Chrome Mobile" and "Chrome Mobile iOS" are Chrome and "Mobile Safari" is Safari (as GA
/// reports them); embedded web views are named for what they are.
fn browser_name(family: &str) -> String {
    match family {
        "Other" => String::new(),
        "Chrome Mobile WebView" => "Android WebView".into(),
        "Mobile Safari UI/WKWebView" => "Safari (in-app)".into(),
        "Mobile Safari" => "Safari".into(),
        other => {
            let base = other
                .strip_suffix(" Mobile iOS")
                .or_else(|| other.strip_suffix(" Mobile"))
                .or_else(|| other.strip_suffix(" iOS"))
                .unwrap_or(other);
            base.to_string()
        }
    }
}

/// Compiles the embedded data now rather than at the first parse (benchmarks time it).
pub fn preload() {
    LazyLock::force(&PARSERS);
}

/// [`parse`] without the per-thread memo: what one new User-Agent costs.
pub fn parse_uncached(user_agent: &str) -> Agent {
    let parsers = &*PARSERS;
    let browser = parsers.browser.extract(user_agent);
    let os = parsers.os.extract(user_agent);
    let is_bot = user_agent.trim().is_empty() || parsers.bots.is_match(&without_android_model(user_agent));
    let os_family = os.as_ref().map(|o| o.os.as_ref()).unwrap_or("Other");
    let class = if is_bot {
        "bot"
    } else {
        device_class(user_agent, os_family)
    };
    Agent {
        browser: browser.as_ref().map(|b| browser_name(&b.family)).unwrap_or_default(),
        browser_version: browser
            .as_ref()
            .map(|b| dotted([b.major, b.minor, b.patch, b.patch_minor]))
            .unwrap_or_default(),
        os: known(os_family),
        os_version: os
            .as_ref()
            .map(|o| {
                dotted([
                    o.major.as_deref(),
                    o.minor.as_deref(),
                    o.patch.as_deref(),
                    o.patch_minor.as_deref(),
                ])
            })
            .unwrap_or_default(),
        device: class.to_string(),
        is_bot,
    }
}

/// Operating systems of desktop and laptop computers, as uap-core names them.
const DESKTOP_OS: &[&str] = &[
    "Windows",
    "Mac OS X",
    "Linux",
    "Ubuntu",
    "Debian",
    "Fedora",
    "Red Hat",
    "SUSE",
    "Mint",
    "Gentoo",
    "Slackware",
    "Mandriva",
    "Kubuntu",
    "Xubuntu",
    "Arch Linux",
    "Chrome OS",
    "ChromeOS",
    "FreeBSD",
    "OpenBSD",
    "NetBSD",
    "Solaris",
    "BeOS",
    "Haiku",
    "OS/2",
];

/// Tokens of television sets, consoles and other screens that are no computer, tablet or
/// phone (many run Linux or Android).
const OTHER_SCREENS: &[&str] = &[
    "smart-tv",
    "smarttv",
    "smart tv",
    "googletv",
    "android tv",
    "hbbtv",
    "netcast",
    "web0s",
    "webos",
    "tizen tv",
    "crkey",
    "roku",
    "appletv",
    "apple tv",
    "aftb",
    "aftt",
    "aftm",
    "afts",
    "aftka",
    "aftmm",
    "playstation",
    "xbox",
    "nintendo",
    "oculus",
    "quest",
    "bravia",
    "viera",
    "philipstv",
    "tv safari",
];

/// desktop, mobile, tablet or other, for a client that is not a bot.
///
/// In order: screens that are neither (TVs, consoles, headsets) are `other`; Windows is a
/// `desktop` (its tablets too, as GA counts them); an iPad, a
/// Kindle, anything that says `Tablet` is a `tablet`; an iPhone, an iPod, and anything that
/// says `Mobile` (Android phones do; iPads say `Mobile/` too, so they were caught first),
/// `Phone` or is a mobile browser build is `mobile`; Android without `Mobile` is a
/// `tablet` (the convention Android browsers follow); a desktop OS is `desktop`.
pub fn device_class(user_agent: &str, os_family: &str) -> &'static str {
    let lower = user_agent.to_ascii_lowercase();
    let has = |tokens: &[&str]| tokens.iter().any(|t| lower.contains(t));
    if has(OTHER_SCREENS) {
        "other"
    } else if lower.contains("windows nt") && !lower.contains("windows phone") {
        // Windows tablets and touch laptops (`Tablet PC 2.0`) are counted as computers.
        "desktop"
    } else if has(&["ipad", "tablet", "kindle", "silk/", "playbook", "; tab "]) {
        "tablet"
    } else if has(&[
        "iphone",
        "ipod",
        "mobile",
        "phone",
        "opera mini",
        "kaios",
        "blackberry",
        "bb10",
        "symbian",
        "series60",
        "j2me",
        "midp",
        "fennec",
        "minimo",
    ]) {
        "mobile"
    } else if os_family == "Android" || lower.contains("android") {
        "tablet"
    } else if DESKTOP_OS.contains(&os_family)
        || os_family.starts_with("Windows")
        || has(&["macintosh", "x11;", "cros "])
    {
        "desktop"
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    pub const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    pub const FIREFOX_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
    pub const IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

    /// (browser, os, device, is_bot) of a User-Agent.
    fn summary(ua: &str) -> (String, String, String, bool) {
        let a = parse(ua);
        (a.browser, a.os, a.device, a.is_bot)
    }

    fn expect(ua: &str, browser: &str, os: &str, device: &str) {
        assert_eq!(
            summary(ua),
            (browser.to_string(), os.to_string(), device.to_string(), device == "bot"),
            "{ua}"
        );
    }

    #[test]
    fn the_embedded_data_compiles_and_says_its_versions() {
        let parsers = Parsers::load().unwrap();
        assert!(parsers.bots.lookaround.len() < 20, "most patterns run as one regex");
        assert!(!UAP_CORE_VERSION.is_empty() && !ISBOT_VERSION.is_empty());
    }

    #[test]
    fn browsers_os_devices() {
        expect(CHROME_MAC, "Chrome", "Mac OS X", "desktop");
        assert_eq!(parse(CHROME_MAC).browser_version, "131.0.0.0");
        assert_eq!(parse(CHROME_MAC).os_version, "10.15.7");
        expect(SAFARI_IPHONE, "Safari", "iOS", "mobile");
        expect(FIREFOX_WIN, "Firefox", "Windows", "desktop");
        expect(IPAD, "Safari", "iOS", "tablet");
        expect(
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Chrome",
            "Linux",
            "desktop",
        );
        expect(
            "Mozilla/5.0 (X11; CrOS x86_64 14541.0.0) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Chrome",
            "Chrome OS",
            "desktop",
        );
        expect(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.2903.86",
            "Edge",
            "Windows",
            "desktop",
        );
        expect(
            "Mozilla/5.0 (Linux; Android 14; SM-S918B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/25.0 Chrome/121.0.0.0 Mobile Safari/537.36",
            "Samsung Internet",
            "Android",
            "mobile",
        );
        expect(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/131.0.6778.73 Mobile/15E148 Safari/604.1",
            "Chrome",
            "iOS",
            "mobile",
        );
    }

    #[test]
    fn phones_whose_model_names_look_like_bots_are_people() {
        // The models are real phones; "BOT" in them is no crawler.
        for ua in [
            "Mozilla/5.0 (Linux; Android 12; CUBOT_X30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36",
            "Mozilla/5.0 (Linux; Android 10; CUBOT KINGKONG 5 Pro) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118.0.5993.111 Mobile Safari/537.36",
            "Mozilla/5.0 (Linux; Android 11; CUBOT NOTE 20 PRO) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Mobile Safari/537.36",
            "Mozilla/5.0 (Linux; Android 9; Cubot P30) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/110.0.5481.153 Mobile Safari/537.36",
            "Mozilla/5.0 (Linux; Android 6.0; AURII Virtuoso Build/MRA58K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/110.0.5481.153 Mobile Safari/537.36",
            "Mozilla/5.0 (Linux; Android 4.4.2; Discovery II Mini) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/81.0.4044.96 Mobile Safari/537.36",
        ] {
            expect(ua, "Chrome", "Android", "mobile");
        }
        // After a locale, as older builds write it.
        let a = parse("Mozilla/5.0 (Linux; U; Android 4.4.2; en-US; Robot-X Build/JDQ39) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Mobile Safari/534.30");
        assert_eq!((a.device.as_str(), a.is_bot), ("mobile", false));
    }

    #[test]
    fn crawlers_and_tools_are_bots() {
        for ua in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.69 Mobile Safari/537.36 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (compatible; Google-InspectionTool/1.0;)",
            "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X Build/MMB29P) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.6045.199 Mobile Safari/537.36 (compatible; Google-InspectionTool/1.0;)",
            "Mozilla/5.0 (compatible; GoogleOther)",
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Googlebot/2.1; +http://www.google.com/bot.html) Chrome/131.0.6778.69 Safari/537.36",
            "AdsBot-Google (+http://www.google.com/adsbot.html)",
            "Mediapartners-Google",
            "Googlebot-Image/1.0",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36",
            "Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)",
            "DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)",
            "Mozilla/5.0 (compatible; Baiduspider/2.0; +http://www.baidu.com/search/spider.html)",
            "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)",
            "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
            "Twitterbot/1.0",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/131.0.0.0 Safari/537.36",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Chrome-Lighthouse",
            "curl/8.5.0",
            "Wget/1.21.4",
            "python-requests/2.31.0",
            "Python-urllib/3.11",
            "Go-http-client/2.0",
            "okhttp/4.12.0",
            "axios/1.7.2",
            "node-fetch/1.0 (+https://github.com/bitinn/node-fetch)",
            "Java/17.0.2",
            "Scrapy/2.11.0 (+https://scrapy.org)",
            "",
            "   ",
        ] {
            let a = parse(ua);
            assert!(a.is_bot, "{ua:?} should be a bot");
            assert_eq!(a.device, "bot", "{ua:?}");
        }
        assert!(!parse(CHROME_MAC).is_bot);
    }

    #[test]
    fn a_non_ascii_model_name_does_not_hide_the_browser() {
        // The collector decodes such header bytes (UTF-8, else Latin-1) instead of dropping
        // the header; the parser then sees the browser it is.
        expect(
            "Mozilla/5.0 (Linux; Android 13; moto g stylus 5G (2023)®) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.210 Mobile Safari/537.36",
            "Chrome",
            "Android",
            "mobile",
        );
        expect(
            "Mozilla/5.0 (Linux; Android 12; Lenovo Tab M10®) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            "Chrome",
            "Android",
            "tablet",
        );
        expect(
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; Büro-PC) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
            "Chrome",
            "Windows",
            "desktop",
        );
    }

    #[test]
    fn in_app_browsers_are_named_for_their_app() {
        expect(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/470.0.0.33.109;FBBV/612083440;FBDV/iPhone15,3;FBMD/iPhone;FBSN/iOS;FBSV/17.5;FBSS/3;FBID/phone;FBLC/en_US;FBOP/5;FBRV/614213478]",
            "Facebook",
            "iOS",
            "mobile",
        );
        expect(
            "Mozilla/5.0 (Linux; Android 14; Pixel 8 Build/AP2A.240805.005; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/127.0.6533.103 Mobile Safari/537.36 [FB_IAB/FB4A;FBAV/478.0.0.41.86;]",
            "Facebook",
            "Android",
            "mobile",
        );
        expect(
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Instagram 339.0.3.12.91 (iPhone15,3; iOS 17_5; en_US; en; scale=3.00; 1290x2796; 618094519)",
            "Instagram",
            "iOS",
            "mobile",
        );
        expect(
            "Mozilla/5.0 (Linux; Android 14; SM-S918B Build/UP1A.231005.007; wv) AppleWebKit/537.36 (KHTML, like Gecko) Version/4.0 Chrome/127.0.6533.103 Mobile Safari/537.36 Instagram 343.0.0.33.101 Android (34/14; 480dpi; 1080x2340; samsung; SM-S918B; dm3q; qcom; en_US; 626412447)",
            "Instagram",
            "Android",
            "mobile",
        );
        // An in-app browser on an iPad is a tablet.
        expect(
            "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 [FBAN/FBIOS;FBAV/470.0.0.33.109;FBBV/612083440;FBDV/iPad13,4;FBMD/iPad;FBSN/iPadOS;FBSV/17.5;FBSS/2;FBID/tablet;FBLC/en_US;FBOP/5]",
            "Facebook",
            "iOS",
            "tablet",
        );
    }

    #[test]
    fn tablets() {
        for (ua, browser, os) in [
            (IPAD, "Safari", "iOS"),
            (
                "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) CriOS/120.0.6099.119 Mobile/15E148 Safari/604.1",
                "Chrome",
                "iOS",
            ),
            (
                "Mozilla/5.0 (Linux; Android 13; SM-X710) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.144 Safari/537.36",
                "Chrome",
                "Android",
            ),
            (
                "Mozilla/5.0 (Linux; Android 12; Lenovo TB-X606F) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/118.0.0.0 Safari/537.36",
                "Chrome",
                "Android",
            ),
            (
                "Mozilla/5.0 (Android 13; Tablet; rv:121.0) Gecko/121.0 Firefox/121.0",
                "Firefox",
                "Android",
            ),
            (
                "Mozilla/5.0 (Linux; Android 11; KFTRWI) AppleWebKit/537.36 (KHTML, like Gecko) Silk/120.3.2 like Chrome/120.0.6099.230 Safari/537.36",
                "Amazon Silk",
                "Android",
            ),
            (
                "Mozilla/5.0 (X11; U; Linux armv7l like Android; en-us) AppleWebKit/531.2+ (KHTML, like Gecko) Version/5.0 Safari/531.2+ Kindle/3.0+",
                "Kindle",
                "Kindle",
            ),
        ] {
            expect(ua, browser, os, "tablet");
        }
    }

    #[test]
    fn other_screens() {
        for ua in [
            "Mozilla/5.0 (SMART-TV; Linux; Tizen 6.0) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/4.0 Chrome/76.0.3809.146 TV Safari/537.36",
            "Mozilla/5.0 (Linux; Android 9; AFTMM) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.230 Safari/537.36",
            "Mozilla/5.0 (PlayStation; PlayStation 5/2.26) AppleWebKit/605.1.15 (KHTML, like Gecko)",
        ] {
            assert_eq!(parse(ua).device, "other", "{ua}");
            assert!(!parse(ua).is_bot, "{ua}");
        }
    }

    #[test]
    fn look_around_is_taken_out_of_prefilters_only() {
        assert_eq!(without_lookaround("(?<! cu)bots?(?:\\b|_)"), "bots?(?:\\b|_)");
        assert_eq!(
            without_lookaround("(?<! channel/|google/)google(?!(?:wv|app|/google| pixel))"),
            "google"
        );
        assert_eq!(without_lookaround("java(?!;)"), "java");
        assert_eq!(without_lookaround("[(?!]x(?!y)z"), "[(?!]xz");
        assert_eq!(from_javascript("[\\w\\d-.]+"), "[\\w\\d\\-.]+");
        assert_eq!(from_javascript("[a-z-]"), "[a-z-]");
    }

    #[test]
    fn android_models_are_left_out_of_the_bot_check() {
        assert_eq!(
            without_android_model("Mozilla/5.0 (Linux; Android 12; CUBOT_X30) AppleWebKit/537.36"),
            "Mozilla/5.0 (Linux; Android 12;) AppleWebKit/537.36"
        );
        assert_eq!(
            without_android_model("Mozilla/5.0 (Linux; U; Android 4.4.2; en-US; Robot-X Build/JDQ39) Safari"),
            "Mozilla/5.0 (Linux; U; Android 4.4.2; en-US;) Safari"
        );
        assert_eq!(without_android_model(CHROME_MAC), CHROME_MAC);
        assert_eq!(without_android_model("curl/8.5.0"), "curl/8.5.0");
    }

    #[test]
    fn browser_names_drop_the_platform() {
        for (family, name) in [
            ("Chrome Mobile", "Chrome"),
            ("Chrome Mobile iOS", "Chrome"),
            ("Mobile Safari", "Safari"),
            ("Firefox iOS", "Firefox"),
            ("Firefox Mobile", "Firefox"),
            ("Edge Mobile", "Edge"),
            ("Chrome Mobile WebView", "Android WebView"),
            ("Mobile Safari UI/WKWebView", "Safari (in-app)"),
            ("Facebook", "Facebook"),
            ("Other", ""),
        ] {
            assert_eq!(browser_name(family), name);
        }
    }
}
