//! Browser, OS, device class and the bot flag, from the User-Agent via the `woothee` parser.

/// What the User-Agent tells us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub browser: String,
    pub browser_version: String,
    pub os: String,
    pub os_version: String,
    /// desktop, mobile, tablet, bot or other.
    pub device: String,
    pub is_bot: bool,
}

/// Substrings of automated clients that woothee does not list as crawlers.
const BOT_MARKERS: &[&str] = &[
    "bot",
    "crawler",
    "spider",
    "slurp",
    "headless",
    "phantomjs",
    "puppeteer",
    "playwright",
    "lighthouse",
    "curl/",
    "wget/",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "go-http-client",
    "java/",
    "okhttp",
    "axios/",
    "node-fetch",
    "libwww-perl",
    "httpclient",
    "scrapy",
    "facebookexternalhit",
    "preview",
];

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

fn parse_uncached(user_agent: &str) -> Agent {
    let lower = user_agent.to_ascii_lowercase();
    let parsed = woothee::parser::Parser::new().parse(user_agent);
    let unknown = |s: &str| {
        if s.is_empty() || s == "UNKNOWN" {
            String::new()
        } else {
            s.to_string()
        }
    };
    let (browser, browser_version, os, os_version, category) = match &parsed {
        Some(r) => (
            unknown(r.name),
            unknown(r.version),
            unknown(r.os),
            unknown(&r.os_version),
            r.category,
        ),
        None => (String::new(), String::new(), String::new(), String::new(), "UNKNOWN"),
    };
    let is_bot = user_agent.trim().is_empty() || category == "crawler" || BOT_MARKERS.iter().any(|m| lower.contains(m));
    let device = if is_bot {
        "bot"
    } else if lower.contains("ipad")
        || lower.contains("tablet")
        || (lower.contains("android") && !lower.contains("mobile"))
    {
        "tablet"
    } else {
        match category {
            "pc" => "desktop",
            "smartphone" | "mobilephone" => "mobile",
            _ => "other",
        }
    };
    Agent {
        browser,
        browser_version,
        os,
        os_version,
        device: device.to_string(),
        is_bot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
    pub const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
    pub const FIREFOX_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
    pub const IPAD: &str = "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";

    #[test]
    fn browsers_os_devices() {
        let a = parse(CHROME_MAC);
        assert_eq!(
            (a.browser.as_str(), a.os.as_str(), a.device.as_str(), a.is_bot),
            ("Chrome", "Mac OSX", "desktop", false)
        );
        assert_eq!(a.browser_version, "131.0.0.0");
        let a = parse(SAFARI_IPHONE);
        assert_eq!(
            (a.browser.as_str(), a.os.as_str(), a.device.as_str()),
            ("Safari", "iPhone", "mobile")
        );
        let a = parse(FIREFOX_WIN);
        assert_eq!((a.browser.as_str(), a.device.as_str()), ("Firefox", "desktop"));
        assert_eq!(parse(IPAD).device, "tablet");
    }

    #[test]
    fn bots() {
        for ua in [
            "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
            "curl/8.5.0",
            "python-requests/2.31.0",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0 Safari/537.36",
            "",
        ] {
            let a = parse(ua);
            assert!(a.is_bot, "{ua:?} should be a bot");
            assert_eq!(a.device, "bot");
        }
        assert!(!parse(CHROME_MAC).is_bot);
    }
}
