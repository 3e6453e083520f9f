//! The user-agent parser against public corpora of real user agents, and against the parser
//! it replaced (woothee + hand-kept bot markers), in one run: bot recall, browsers taken for
//! bots, device-class accuracy where the corpus labels it, in-app browsers named, and the
//! cost of parsing one new User-Agent. See BENCHMARKS.md for the corpora and the command.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use serde_json::Value;
use sightline_bench::ua_legacy;
use sightline_core::processor::agent;

#[derive(Parser)]
struct Args {
    /// isbot crate 0.1.3's fixtures/ (bots.txt, browsers.txt).
    #[arg(long)]
    isbot_fixtures: PathBuf,
    /// crawler-user-agents.json of the npm package crawler-user-agents (its `instances`).
    #[arg(long)]
    crawler_user_agents: PathBuf,
    /// Matomo device-detector's Tests/fixtures/ (device types labelled per user agent).
    #[arg(long)]
    matomo_fixtures: PathBuf,
    /// How many browser user agents the speed measurement parses.
    #[arg(long, default_value_t = 20_000)]
    speed_sample: usize,
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// One labelled user agent of Matomo's fixtures: its device class in our terms (bot,
/// desktop, mobile, tablet, other), and its client's name.
struct Labelled {
    ua: String,
    class: &'static str,
    client: String,
}

/// Matomo's device types in our classes; None for unlabelled entries.
fn our_class(matomo: &str) -> Option<&'static str> {
    match matomo {
        "" => None,
        "desktop" => Some("desktop"),
        "smartphone" | "phablet" | "feature phone" => Some("mobile"),
        "tablet" => Some("tablet"),
        _ => Some("other"),
    }
}

fn matomo(dir: &Path) -> Vec<Labelled> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        // Client-hints fixtures need request headers besides the User-Agent.
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("clienthints"))
        })
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let cases: Vec<serde_yaml::Value> =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for case in cases {
            let Some(ua) = case.get("user_agent").and_then(|v| v.as_str()) else {
                continue;
            };
            let class = if case.get("bot").is_some() {
                Some("bot")
            } else {
                our_class(
                    case.get("device")
                        .and_then(|d| d.get("type"))
                        .and_then(|t| t.as_str())
                        .unwrap_or(""),
                )
            };
            let Some(class) = class else { continue };
            let client = case
                .get("client")
                .and_then(|c| c.get("name"))
                .and_then(|n| n.as_str())
                .unwrap_or("")
                .to_string();
            out.push(Labelled {
                ua: ua.to_string(),
                class,
                client,
            });
        }
    }
    out
}

fn pct(n: usize, of: usize) -> String {
    if of == 0 {
        "-".into()
    } else {
        format!("{:.2} % ({n} / {of})", n as f64 * 100.0 / of as f64)
    }
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn old_is_bot(ua: &str) -> bool {
    ua_legacy::parse(ua).3
}

fn new_is_bot(ua: &str) -> bool {
    agent::parse_uncached(ua).is_bot
}

fn main() {
    let args = Args::parse();
    let rss_before = sightline_bench::status_mb(Some(std::process::id()), "VmRSS:");
    let started = Instant::now();
    agent::preload();
    let load = started.elapsed();
    let rss_data = sightline_bench::status_mb(Some(std::process::id()), "VmRSS:") - rss_before;

    let bots_txt = lines(&args.isbot_fixtures.join("bots.txt"));
    let browsers_txt = lines(&args.isbot_fixtures.join("browsers.txt"));
    let cua: Value =
        serde_json::from_str(&std::fs::read_to_string(&args.crawler_user_agents).expect("crawler-user-agents.json"))
            .expect("crawler-user-agents.json is JSON");
    let cua_instances: Vec<String> = cua
        .as_array()
        .expect("an array")
        .iter()
        .flat_map(|p| p["instances"].as_array().cloned().unwrap_or_default())
        .filter_map(|i| i.as_str().map(str::to_string))
        .collect();
    let labelled = matomo(&args.matomo_fixtures);

    println!("uap-core {}, isbot {}", agent::UAP_CORE_VERSION, agent::ISBOT_VERSION);
    println!();
    println!("| measure | corpus | old (woothee + markers) | new (uap-core + isbot) |");
    println!("| --- | --- | ---: | ---: |");
    let row = |measure: &str, corpus: &str, uas: &[&str], want_bot: bool| {
        let count = |f: fn(&str) -> bool| uas.iter().filter(|u| f(u) == want_bot).count();
        println!(
            "| {measure} | {corpus} | {} | {} |",
            pct(count(old_is_bot), uas.len()),
            pct(count(new_is_bot), uas.len())
        );
    };
    row("bot recall", "isbot fixtures/bots.txt", &refs(&bots_txt), true);
    row(
        "bot recall",
        "crawler-user-agents instances",
        &refs(&cua_instances),
        true,
    );
    let matomo_bots: Vec<&str> = labelled
        .iter()
        .filter(|l| l.class == "bot")
        .map(|l| l.ua.as_str())
        .collect();
    row("bot recall", "Matomo bots.yml", &matomo_bots, true);
    // "not a bot" counted, so the false-bot rate is 100 % minus this.
    let matomo_people: Vec<&str> = labelled
        .iter()
        .filter(|l| l.class != "bot")
        .map(|l| l.ua.as_str())
        .collect();
    let false_bots = |uas: &[&str], f: fn(&str) -> bool| uas.iter().filter(|u| f(u)).count();
    let browsers = refs(&browsers_txt);
    println!(
        "| browsers taken for bots | isbot fixtures/browsers.txt | {} | {} |",
        pct(false_bots(&browsers, old_is_bot), browsers.len()),
        pct(false_bots(&browsers, new_is_bot), browsers.len())
    );
    println!(
        "| clients taken for bots | Matomo device fixtures | {} | {} |",
        pct(false_bots(&matomo_people, old_is_bot), matomo_people.len()),
        pct(false_bots(&matomo_people, new_is_bot), matomo_people.len())
    );

    // Device class where Matomo labels it (its bots included: the class is then "bot").
    let mut per_class: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    let mut confusion: BTreeMap<(&str, &'static str), usize> = BTreeMap::new();
    for l in &labelled {
        let old = ua_legacy::parse(&l.ua).2;
        let new = agent::parse_uncached(&l.ua);
        let e = per_class.entry(l.class).or_default();
        e.0 += 1;
        e.1 += usize::from(old == l.class);
        e.2 += usize::from(new.device == l.class);
        if new.device != l.class {
            let got: &'static str = match new.device.as_str() {
                "desktop" => "desktop",
                "mobile" => "mobile",
                "tablet" => "tablet",
                "bot" => "bot",
                _ => "other",
            };
            *confusion.entry((l.class, got)).or_default() += 1;
        }
    }
    let (all, old_ok, new_ok) = per_class
        .values()
        .fold((0, 0, 0), |a, v| (a.0 + v.0, a.1 + v.1, a.2 + v.2));
    println!(
        "| device class accuracy | Matomo fixtures, all labelled | {} | {} |",
        pct(old_ok, all),
        pct(new_ok, all)
    );
    for (class, (n, old, new)) in &per_class {
        println!(
            "| device class `{class}` recall | Matomo fixtures | {} | {} |",
            pct(*old, *n),
            pct(*new, *n)
        );
    }
    // In-app browsers: Matomo names the client "Facebook" / "Instagram".
    for app in ["Facebook", "Instagram"] {
        let uas: Vec<&Labelled> = labelled.iter().filter(|l| l.client == app).collect();
        let old = uas.iter().filter(|l| ua_legacy::parse(&l.ua).0 == app).count();
        let new = uas
            .iter()
            .filter(|l| agent::parse_uncached(&l.ua).browser == app)
            .count();
        println!(
            "| in-app browser named `{app}` | Matomo fixtures | {} | {} |",
            pct(old, uas.len()),
            pct(new, uas.len())
        );
    }
    println!();
    println!("Largest device-class confusions of the new parser (label -> answer: count):");
    let mut worst: Vec<_> = confusion.into_iter().collect();
    worst.sort_by_key(|w| std::cmp::Reverse(w.1));
    for ((label, got), n) in worst.iter().take(8) {
        println!("  {label} -> {got}: {n}");
    }

    // Speed: each distinct user agent parsed once, uncached (the memo's misses), one thread.
    let step = (browsers_txt.len() / args.speed_sample.max(1)).max(1);
    let sample: Vec<&str> = browsers_txt
        .iter()
        .step_by(step)
        .take(args.speed_sample)
        .chain(bots_txt.iter())
        .map(String::as_str)
        .collect();
    let time = |f: &dyn Fn(&str)| {
        let t = Instant::now();
        for ua in &sample {
            f(ua);
        }
        t.elapsed().as_secs_f64() * 1e6 / sample.len() as f64
    };
    let old_us = time(&|ua| {
        std::hint::black_box(ua_legacy::parse(ua));
    });
    let new_us = time(&|ua| {
        std::hint::black_box(agent::parse_uncached(ua));
    });
    // The memo's hits: a repeated user agent.
    let hit = {
        agent::parse(sample[0]);
        let t = Instant::now();
        for _ in 0..100_000 {
            std::hint::black_box(agent::parse(sample[0]));
        }
        t.elapsed().as_secs_f64() * 1e6 / 100_000.0
    };
    println!();
    println!("| parse cost, one thread | old | new |");
    println!("| --- | ---: | ---: |");
    println!(
        "| new user agent (memo miss), µs, mean over {} | {old_us:.1} | {new_us:.1} |",
        sample.len()
    );
    println!("| repeated user agent (memo hit), µs | - | {hit:.2} |");
    println!(
        "| compiling the data once per process, ms | - | {:.0} |",
        load.as_secs_f64() * 1e3
    );
    println!("| memory of the compiled data, MB resident | - | {rss_data:.0} |");
}
