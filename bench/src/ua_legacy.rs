//! The user-agent parser Sightline had before uap-core and isbot (pipeline versions up to 2):
//! woothee plus a hand-kept list of bot markers. Kept only so `ua-bench` can measure the new
//! parser against it in the same run.

/// (browser, os, device class, is_bot), as the old parser answered.
pub fn parse(user_agent: &str) -> (String, String, &'static str, bool) {
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
    let lower = user_agent.to_ascii_lowercase();
    let parsed = woothee::parser::Parser::new().parse(user_agent);
    let (browser, os, category) = match &parsed {
        Some(r) => (r.name.to_string(), r.os.to_string(), r.category),
        None => (String::new(), String::new(), "UNKNOWN"),
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
    (browser, os, device, is_bot)
}
