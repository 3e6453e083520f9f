//! The replay engine on the real engine (issue 14; docs/replay.md): the bug story, resuming
//! a stopped run, readers during a replay, sealing, and writers beside a forced replay.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{Days, NaiveDate};
use sightline_core::processor::{Current, PIPELINE_VERSION};
use sightline_core::warehouse::embedded::Embedded;
use sightline_core::warehouse::processing::DayIdentities;
use sightline_core::warehouse::replay::{
    self, seal, CancellationToken, Checkpoint, NoHooks, ReplayHooks, ReplayRequest,
};
use sightline_core::warehouse::{Params, Warehouse};
use sightline_core::Error;
use sightline_tests::replay_support::{checksums, dataset, days, ingest, later, prepare, tenant, Buggy};

fn midnight(day: NaiveDate) -> chrono::DateTime<chrono::Utc> {
    day.and_hms_opt(0, 0, 0).unwrap().and_utc()
}

/// A request over the dataset's days with the current processor, at a time they are sealed.
fn request(tenant_name: &str) -> ReplayRequest {
    ReplayRequest {
        now: later(),
        ..ReplayRequest::new(
            tenant(tenant_name),
            midnight(days()[0]),
            midnight(days()[2] + Days::new(1)),
            Arc::new(Current),
        )
    }
}

/// The same dataset stored with the buggy processor (tenant `buggy`) and with the current
/// one (tenant `clean`), in one engine.
async fn both(seed: u64) -> (tempfile::TempDir, Embedded) {
    let dir = tempfile::tempdir().unwrap();
    let wh = Embedded::open(&dir.path().join("engine"), 3).unwrap();
    let events = dataset(seed);
    for (name, processor) in [
        (
            "buggy",
            Arc::new(Buggy) as Arc<dyn sightline_core::processor::Processor>,
        ),
        ("clean", Arc::new(Current)),
    ] {
        let t = tenant(name);
        prepare(&wh, &t).await;
        ingest(&wh, &t, processor, &events).await;
    }
    (dir, wh)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bug_story_dry_run_then_replay_equals_a_clean_ingest() {
    let (_dir, wh) = both(11).await;
    let clean = checksums(&wh, "sightline_clean").await;
    let buggy = checksums(&wh, "sightline_buggy").await;
    assert_ne!(buggy, clean, "the bugs must show in the tables");

    // The dry run shows what the fix changes, and changes nothing.
    let dry = replay::run(
        &wh,
        ReplayRequest {
            dry_run: true,
            ..request("buggy")
        },
        None,
        &NoHooks,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        checksums(&wh, "sightline_buggy").await,
        buggy,
        "a dry run swaps nothing"
    );
    assert_eq!(dry.days.len(), 3);
    let mut hacker_news = 0;
    for d in &dry.days {
        assert!(!d.swapped);
        assert_eq!(d.processing_before.keys().collect::<Vec<_>>(), vec!["v2"]);
        assert_eq!(d.processing_after, current_identity());
        let c = d.comparison.as_ref().unwrap();
        let pageviews = c.metrics.iter().find(|m| m.metric == "pageviews").unwrap();
        assert!(
            pageviews.recomputed < pageviews.current,
            "bots no longer count on {}: {pageviews:?}",
            d.day
        );
        let google = c.sources.iter().find(|s| s.value == "Google");
        assert!(google.is_some_and(|g| g.recomputed < g.current), "{:?}", c.sources);
        hacker_news += c
            .sources
            .iter()
            .filter(|s| s.value == "Hacker News" && s.current == 0 && s.recomputed > 0)
            .count();
    }
    assert!(hacker_news > 0, "Hacker News visits appear");
    // The numbers a dry run gives are the clean ingest's.
    let clean_pageviews = wh
        .select(
            "SELECT toString(toDate(ts)) AS d, toInt64(sum(sign * is_pageview)) AS n FROM sightline_clean.events \
             WHERE is_bot = 0 GROUP BY d ORDER BY d",
            &Params::new(),
        )
        .await
        .unwrap();
    for (d, row) in dry.days.iter().zip(&clean_pageviews) {
        let c = d.comparison.as_ref().unwrap();
        let pageviews = c.metrics.iter().find(|m| m.metric == "pageviews").unwrap();
        assert_eq!(pageviews.recomputed, row["n"].as_i64().unwrap() as f64, "{}", d.day);
    }

    // The fix: every table equals the clean ingest, exactly.
    let fixed = replay::run(
        &wh,
        ReplayRequest {
            parallelism: 2,
            ..request("buggy")
        },
        None,
        &NoHooks,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(fixed
        .days
        .iter()
        .all(|d| d.swapped && d.processing_after == current_identity()));
    assert_eq!(checksums(&wh, "sightline_buggy").await, clean);

    // A sealed, unchanged day replayed changes nothing.
    for name in ["buggy", "clean"] {
        let again = replay::run(&wh, request(name), None, &NoHooks, &CancellationToken::new())
            .await
            .unwrap();
        assert!(again
            .days
            .iter()
            .all(|d| d.processing_before.keys().eq([current_identity()].iter())));
        assert_eq!(
            checksums(&wh, &format!("sightline_{name}")).await,
            clean,
            "{name} replayed again"
        );
    }
}

/// Cancels the run once `after` days are done, and keeps the last checkpoint.
struct StopAfter {
    after: usize,
    cancel: CancellationToken,
    saved: Mutex<Option<Checkpoint>>,
}

#[async_trait::async_trait]
impl ReplayHooks for StopAfter {
    async fn day_done(&self, day: &replay::DayReport, checkpoint: &Checkpoint) -> sightline_core::Result<()> {
        // The hook hears each day with the checkpoint that already holds it.
        assert!(
            day.swapped && checkpoint.done.contains(&day.day),
            "{day:?} {checkpoint:?}"
        );
        if checkpoint.done.len() >= self.after {
            self.cancel.cancel();
        }
        *self.saved.lock().unwrap() = Some(checkpoint.clone());
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_run_resumes_from_its_checkpoint_without_swapping_a_day_twice() {
    let (_dir, wh) = both(12).await;
    let clean = checksums(&wh, "sightline_clean").await;
    let cancel = CancellationToken::new();
    let hooks = StopAfter {
        after: 1,
        cancel: cancel.clone(),
        saved: Mutex::new(None),
    };
    let stopped = replay::run(&wh, request("buggy"), None, &hooks, &cancel).await;
    let Err(Error::ReplayStopped { day, cause, report }) = stopped else {
        panic!("the run should stop: {stopped:?}");
    };
    assert!(matches!(*cause, Error::Cancelled), "{cause}");
    assert_eq!(day, days()[1]);
    assert_eq!(report.days.iter().map(|d| d.day).collect::<Vec<_>>(), vec![days()[0]]);
    let checkpoint = hooks.saved.lock().unwrap().clone().unwrap();
    assert_eq!(checkpoint.done.iter().copied().collect::<Vec<_>>(), vec![days()[0]]);
    // Half-way: the first day is fixed, the others are not.
    assert_ne!(checksums(&wh, "sightline_buggy").await, clean);

    // A checkpoint of another run is refused.
    let other = replay::run(
        &wh,
        ReplayRequest {
            sites: vec!["shop.example.com".into()],
            ..request("buggy")
        },
        Some(checkpoint.clone()),
        &NoHooks,
        &CancellationToken::new(),
    )
    .await;
    assert!(matches!(other, Err(Error::InvalidReplay(_))), "{other:?}");

    let resumed = replay::run(
        &wh,
        request("buggy"),
        Some(checkpoint),
        &NoHooks,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(resumed.skipped, vec![days()[0]]);
    let mut swapped: Vec<NaiveDate> = report.days.iter().chain(&resumed.days).map(|d| d.day).collect();
    swapped.sort_unstable();
    assert_eq!(swapped, days().to_vec(), "every day swapped once");
    assert_eq!(
        checksums(&wh, "sightline_buggy").await,
        clean,
        "as an uninterrupted run"
    );
}

/// Per UTC day (events, quarter-hour tier) and per local day of the Berlin site (daily
/// tier): the non-bot pageviews.
async fn per_day(wh: &dyn Warehouse, db: &str) -> [BTreeMap<String, i64>; 3] {
    let read = |sql: String| async move {
        wh.select(&sql, &Params::new())
            .await
            .unwrap()
            .iter()
            .map(|r| (r["d"].as_str().unwrap().to_string(), r["n"].as_i64().unwrap()))
            .collect::<BTreeMap<String, i64>>()
    };
    [
        read(format!(
            "SELECT toString(toDate(ts)) AS d, toInt64(sum(sign * is_pageview)) AS n FROM {db}.events \
             WHERE is_bot = 0 GROUP BY d"
        ))
        .await,
        read(format!(
            "SELECT toString(toDate(bucket)) AS d, toInt64(sum(pageviews)) AS n FROM {db}.rollup_site_15m GROUP BY d"
        ))
        .await,
        read(format!(
            "SELECT toString(day) AS d, toInt64(sum(pageviews)) AS n FROM {db}.rollup_site_daily \
             WHERE site_id = 'shop.example.com' GROUP BY d"
        ))
        .await,
    ]
}

#[tokio::test(flavor = "multi_thread")]
async fn readers_see_each_day_wholly_old_or_wholly_new_during_a_replay() {
    let (_dir, wh) = both(13).await;
    let old = per_day(&wh, "sightline_buggy").await;
    let new = per_day(&wh, "sightline_clean").await;
    for (o, n) in old.iter().zip(&new) {
        assert!(o.iter().any(|(d, v)| n.get(d) != Some(v)), "old and new must differ");
    }
    let done = AtomicBool::new(false);
    let polls = Mutex::new(0usize);
    let poll = async {
        while !done.load(Ordering::SeqCst) {
            let now = per_day(&wh, "sightline_buggy").await;
            for (table, ((seen, o), n)) in now.iter().zip(&old).zip(&new).enumerate() {
                for (day, value) in seen {
                    assert!(
                        o.get(day) == Some(value) || n.get(day) == Some(value),
                        "table {table}, day {day}: {value} is neither the old {:?} nor the new {:?}",
                        o.get(day),
                        n.get(day)
                    );
                }
            }
            *polls.lock().unwrap() += 1;
        }
    };
    let replaying = async {
        let report = replay::run(&wh, request("buggy"), None, &NoHooks, &CancellationToken::new()).await;
        done.store(true, Ordering::SeqCst);
        report
    };
    let (report, ()) = tokio::join!(replaying, poll);
    report.unwrap();
    assert!(*polls.lock().unwrap() > 3, "the readers ran during the replay");
    assert_eq!(per_day(&wh, "sightline_buggy").await, new);
}

#[tokio::test(flavor = "multi_thread")]
async fn sealing_replays_the_days_another_identity_made_once() {
    let (_dir, wh) = both(14).await;
    let clean = checksums(&wh, "sightline_clean").await;
    let sealed = seal::seal(&wh, &tenant("buggy"), Arc::new(Current), later())
        .await
        .unwrap();
    assert_eq!(sealed.replayed, days().to_vec());
    assert_eq!(checksums(&wh, "sightline_buggy").await, clean);
    // Checked days are not checked again; the clean tenant needs nothing.
    let again = seal::seal(&wh, &tenant("buggy"), Arc::new(Current), later())
        .await
        .unwrap();
    assert!(again.replayed.is_empty());
    let untouched = seal::seal(&wh, &tenant("clean"), Arc::new(Current), later())
        .await
        .unwrap();
    assert!(untouched.replayed.is_empty());
    assert_eq!(checksums(&wh, "sightline_clean").await, clean);
}

#[tokio::test(flavor = "multi_thread")]
async fn days_per_identity_are_read_again_only_where_parts_changed() {
    let (_dir, wh) = both(16).await;
    let db = "sightline_buggy";
    // One part per day, so no merge changes a day behind the test's back.
    wh.execute(&format!("OPTIMIZE TABLE {db}.events FINAL"), &Params::new())
        .await
        .unwrap();
    let mut identities = DayIdentities::default();
    assert_eq!(identities.refresh(&wh, db).await.unwrap(), 3, "every day read once");
    let summary = identities.summary();
    assert_eq!(
        (summary.days, summary.mixed, summary.total),
        (BTreeMap::from([("v2".to_string(), 3)]), 0, 3)
    );
    assert_eq!(identities.refresh(&wh, db).await.unwrap(), 0, "nothing changed");

    // One day replayed with the current processor: only its partition is read again.
    let first = ReplayRequest {
        to: midnight(days()[1]),
        ..request("buggy")
    };
    replay::run(&wh, first, None, &NoHooks, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(identities.refresh(&wh, db).await.unwrap(), 1);
    let summary = identities.summary();
    assert_eq!(
        summary.days,
        BTreeMap::from([("v2".to_string(), 2), (current_identity(), 1)])
    );
    assert_eq!((summary.mixed, summary.total), (0, 3));

    // A live correction of another identity on a replayed day: the day mixes both.
    wh.execute(
        &format!(
            "INSERT INTO {db}.events SELECT * REPLACE ('v9' AS processing) FROM {db}.events \
             WHERE toDate(ts) = '{}' LIMIT 1",
            days()[0]
        ),
        &Params::new(),
    )
    .await
    .unwrap();
    assert_eq!(identities.refresh(&wh, db).await.unwrap(), 1);
    let summary = identities.summary();
    assert_eq!(summary.days.get("v9"), Some(&1));
    assert_eq!((summary.mixed, summary.total), (1, 3));

    // A day dropped (retention) leaves the record.
    wh.execute(
        &format!("ALTER TABLE {db}.events DROP PARTITION {}", days()[2].format("%Y%m%d")),
        &Params::new(),
    )
    .await
    .unwrap();
    assert_eq!(identities.refresh(&wh, db).await.unwrap(), 0);
    assert_eq!(identities.summary().total, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_site_filter_leaves_other_sites_exactly_as_they_were() {
    let (_dir, wh) = both(15).await;
    let blog_rows = |db: &'static str| {
        let wh = &wh;
        async move {
            wh.select(
                &format!(
                    "SELECT count() AS n, sum(cityHash64(*)) AS h FROM {db}.events WHERE site_id = 'blog.example.com'"
                ),
                &Params::new(),
            )
            .await
            .unwrap()
        }
    };
    let before = blog_rows("sightline_buggy").await;
    let report = replay::run(
        &wh,
        ReplayRequest {
            sites: vec!["shop.example.com".into()],
            ..request("buggy")
        },
        None,
        &NoHooks,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(report.days.iter().all(|d| d.copied_rows > 0));
    assert_eq!(blog_rows("sightline_buggy").await, before);
    let shop = |db: &str| {
        format!("SELECT count() AS n, sum(cityHash64(event_id, session_source, is_bot, processing)) AS h FROM {db}.events WHERE site_id = 'shop.example.com'")
    };
    assert_eq!(
        wh.select(&shop("sightline_buggy"), &Params::new()).await.unwrap(),
        wh.select(&shop("sightline_clean"), &Params::new()).await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_name_what_is_wrong_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Embedded::open(&dir.path().join("engine"), 1).unwrap();
    prepare(&wh, &tenant("buggy")).await;
    let run = |r: ReplayRequest| {
        let wh = &wh;
        async move { replay::run(wh, r, None, &NoHooks, &CancellationToken::new()).await }
    };
    let reversed = run(ReplayRequest {
        from: midnight(days()[2]),
        to: midnight(days()[0]),
        ..request("buggy")
    })
    .await;
    assert!(matches!(reversed, Err(Error::InvalidReplay(_))), "{reversed:?}");
    let unsealed = run(ReplayRequest {
        now: midnight(days()[2]),
        ..request("buggy")
    })
    .await;
    assert!(
        matches!(unsealed, Err(Error::DayNotSealed { day, .. }) if day == days()[0]),
        "{unsealed:?}"
    );
    let site = run(ReplayRequest {
        sites: vec!["nope.example.com".into()],
        ..request("buggy")
    })
    .await;
    assert!(site.unwrap_err().to_string().contains("nope.example.com"));
    let parallel = run(ReplayRequest {
        parallelism: 0,
        ..request("buggy")
    })
    .await;
    assert!(parallel.unwrap_err().to_string().contains("parallelism"));
    // A range inside one day widens to the whole day, and says so.
    let (range, _) = replay::prepare(&ReplayRequest {
        from: midnight(days()[1]) + chrono::Duration::hours(3),
        to: midnight(days()[1]) + chrono::Duration::hours(5),
        ..request("buggy")
    })
    .unwrap();
    assert_eq!((range.first, range.last, range.widened), (days()[1], days()[1], true));
}

/// A writer that ignores the lease: once the day is staged (its rows all read and
/// written), it stores new events of that day, raw and processed, before the swap.
struct LateWriter<'a> {
    wh: &'a Embedded,
    staged_at: u64,
    events: Vec<sightline_core::event::RawEvent>,
    fired: AtomicBool,
}

impl ReplayHooks for LateWriter<'_> {
    fn progress(&self, p: &replay::Progress) {
        if p.rows_read == self.staged_at && p.rows_written >= self.staged_at && !self.fired.swap(true, Ordering::SeqCst)
        {
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(async {
                    let t = tenant("clean");
                    let mut live = sightline_core::warehouse::live::LiveSessions::start(self.wh, &t, Arc::new(Current))
                        .await
                        .unwrap();
                    let refs: Vec<&sightline_core::event::RawEvent> = self.events.iter().collect();
                    let processed = live.process(self.wh, &refs).await.unwrap();
                    sightline_core::warehouse::ops::insert_raw_and_events(
                        self.wh,
                        &t.database(),
                        &self.events,
                        &processed.rows,
                    )
                    .await
                    .unwrap();
                })
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forced_replay_catches_up_with_what_a_writer_slipped_in() {
    let (_dir, wh) = both(16).await;
    let day = days()[1];
    let mut late: Vec<_> = dataset(99)
        .into_iter()
        .filter(|e| e.ts.date_naive() == day)
        .take(6)
        .collect();
    for (i, e) in late.iter_mut().enumerate() {
        e.event_id = uuid::Uuid::from_u64_pair(7777, i as u64);
    }
    let staged_at = sightline_tests::count(
        &wh,
        &format!("SELECT count() AS n FROM sightline_clean.events_raw WHERE toDate(ts) = '{day}'"),
    )
    .await;
    let hooks = LateWriter {
        wh: &wh,
        staged_at,
        events: late.clone(),
        fired: AtomicBool::new(false),
    };
    // The day is not sealed yet at this clock: forced, beside writers.
    let report = replay::run(
        &wh,
        ReplayRequest {
            from: midnight(day),
            to: midnight(day + Days::new(1)),
            force: true,
            now: midnight(days()[2]),
            ..request("clean")
        },
        None,
        &hooks,
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(hooks.fired.load(Ordering::SeqCst), "the late writer ran");
    assert_eq!(report.days[0].caught_up, late.len() as u64, "{report:?}");
    let not_once = sightline_tests::count(
        &wh,
        "SELECT count() AS n FROM (SELECT site_id, event_id, sum(sign) AS s FROM sightline_clean.events \
         GROUP BY site_id, event_id HAVING s != 1)",
    )
    .await;
    assert_eq!(not_once, 0, "every event has one net row");
    // What the catch-up wrote is what a replay gives (net rows; visitor sketches of the
    // per-dimension tier cannot take a visitor out, docs/replay.md).
    let net = "SELECT count() AS n, sum(cityHash64(site_id, event_id, session_id, visit_delta, bounce_delta, duration_delta, \
               entry_page, session_source)) AS h FROM (SELECT site_id, event_id, session_id, visit_delta, bounce_delta, \
               duration_delta, entry_page, session_source, sum(sign) AS s FROM sightline_clean.events GROUP BY ALL HAVING s != 0)";
    let caught_up = (
        wh.select(net, &Params::new()).await.unwrap(),
        checksums(&wh, "sightline_clean").await,
    );
    replay::run(&wh, request("clean"), None, &NoHooks, &CancellationToken::new())
        .await
        .unwrap();
    let replayed = (
        wh.select(net, &Params::new()).await.unwrap(),
        checksums(&wh, "sightline_clean").await,
    );
    assert_eq!(caught_up.0, replayed.0, "events");
    assert_eq!(caught_up.1[1], replayed.1[1], "the quarter-hour tier");
}

// ---- The binary: `sightline reprocess`, and writers beside a forced replay. ----

mod binary {
    use std::collections::BTreeMap;
    use std::process::{Command, Output};
    use std::time::Duration;

    use chrono::Utc;
    use serde_json::json;
    use sightline_core::token::{Scope, ALL_SITES};
    use sightline_core::warehouse::embedded::Embedded;
    use sightline_core::warehouse::{Params, Warehouse};
    use std::sync::Arc;

    use sightline_core::event::RawEvent;
    use sightline_core::processor::Current;
    use sightline_core::warehouse::replay::{lease, Checkpoint};
    use sightline_tests::pipeline::{Load, LoadReport, Pipeline, PASSWORD, USER};
    use sightline_tests::replay_support::{checksums, dataset, days, ingest, prepare, tenant, tenant_yaml, Buggy};
    use sightline_tests::*;

    fn reprocess(args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(binary())
            .arg("reprocess")
            .args(args)
            .env("SIGHTLINE_SECRET", TEST_SECRET)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .output()
            .expect("run sightline reprocess")
    }

    fn refused(out: &Output, needle: &str) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "exit 0; stderr: {stderr}");
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }

    fn today() -> String {
        Utc::now().date_naive().to_string()
    }

    fn tomorrow() -> String {
        (Utc::now().date_naive() + chrono::Days::new(1)).to_string()
    }

    fn admin_token() -> String {
        token_for("acme", ALL_SITES, Scope::Admin, 3600)
    }

    /// Sends `n` requests of one pageview each for shop.example.com (now), all acknowledged.
    async fn send(server: &Server, n: usize) {
        let c = client();
        for i in 0..n {
            let r = c
                .post(server.url("/v1/collect"))
                .bearer_auth(write_token("acme", "shop.example.com"))
                .header("User-Agent", CHROME_MAC)
                .header("X-Forwarded-For", format!("198.51.100.{}", i % 50 + 1))
                .json(&json!({"url": format!("https://shop.example.com/p{i}"), "referrer": "https://news.ycombinator.com/"}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 202);
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_cli_refuses_bad_requests_with_a_message_and_a_failing_exit() {
        let (_dir, data, tenants) = fixture();
        let (data, tenants) = (data.to_str().unwrap(), tenants.to_str().unwrap());
        let local = ["--data", data, "--tenants", tenants];
        fn with<'a>(local: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
            [local, extra].concat()
        }
        refused(
            &reprocess(
                &with(
                    &local,
                    &["--tenant", "acme", "--from", "2026-11-12", "--to", "2026-11-10"],
                ),
                &[],
            ),
            "empty",
        );
        refused(
            &reprocess(
                &with(
                    &local,
                    &["--tenant", "nope", "--from", "2026-11-10", "--to", "2026-11-12"],
                ),
                &[],
            ),
            "unknown tenant \"nope\"",
        );
        refused(
            &reprocess(
                &with(&local, &["--tenant", "acme", "--from", &today(), "--to", &tomorrow()]),
                &[],
            ),
            "is not sealed",
        );
        refused(
            &reprocess(
                &with(
                    &local,
                    &["--tenant", "acme", "--from", "yesterday", "--to", &tomorrow()],
                ),
                &[],
            ),
            "from \"yesterday\"",
        );
        refused(
            &reprocess(&with(&local, &["--from", "2026-11-10"]), &[]),
            "--tenant is required",
        );
        // The resource's own fields are the operator's: refused by name, and the file is
        // named for what it is, a Reprocess (not a tenant spec).
        let manual =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/examples/reprocess-manual.yaml");
        let manual = manual.to_str().unwrap();
        let out = reprocess(&with(&local, &["-f", manual]), &[]);
        refused(
            &out,
            &format!("error: Reprocess {manual}: spec.approval, spec.maxStallRestarts only the operator reads"),
        );
        assert!(!String::from_utf8_lossy(&out.stderr).contains("tenant spec"));

        // Through a running server: only an admin token of the tenant opens the endpoint.
        let mut server = Server::start(std::path::Path::new(data), std::path::Path::new(tenants), &[]);
        let url = server.url("");
        let remote = |token: &str| {
            reprocess(
                &[
                    "--server",
                    &url,
                    "--token",
                    token,
                    "--tenant",
                    "acme",
                    "--from",
                    "2026-11-10",
                    "--to",
                    "2026-11-11",
                ],
                &[],
            )
        };
        refused(&remote(&read_token("acme", "shop.example.com")), "needs admin");
        refused(&remote(&write_token("acme", "shop.example.com")), "needs admin");
        refused(
            &remote(&token_for("tiny", ALL_SITES, Scope::Admin, 3600)),
            "the token is for tenant tiny",
        );
        refused(
            &reprocess(
                &[
                    "--server",
                    &url,
                    "--token",
                    &admin_token(),
                    "--tenant",
                    "acme",
                    "--from",
                    &today(),
                    "--to",
                    &tomorrow(),
                ],
                &[],
            ),
            "is not sealed",
        );
        // The API's JSON error.
        let r = client()
            .post(server.url("/v1/admin/reprocess"))
            .bearer_auth(read_token("acme", "shop.example.com"))
            .json(&json!({"spec": {"tenantRef": "acme", "from": "2026-11-10", "to": "2026-11-11"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized");
        assert_eq!(body["error"]["field"], "token");
        // A misspelt field is refused by name, not ignored (`dryrun` would swap the days).
        let r = client()
            .post(server.url("/v1/admin/reprocess"))
            .bearer_auth(admin_token())
            .json(&json!({"spec": {"tenantRef": "acme", "from": "2026-11-10", "to": "2026-11-11", "dryrun": true}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "bad_request");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("unknown field(s) spec.dryrun"),
            "{body}"
        );
        server.stop();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_cli_replays_a_data_directory_offline_with_a_checkpoint_and_a_summary() {
        let (dir, data, tenants) = fixture();
        let mut server = Server::start(&data, &tenants, &[]);
        send(&server, 40).await;
        server.stop();
        let checkpoint = dir.path().join("run.checkpoint.json");
        let base = [
            "--data",
            data.to_str().unwrap(),
            "--tenants",
            tenants.to_str().unwrap(),
            "--tenant",
            "acme",
            "--from",
            &today(),
            "--to",
            &tomorrow(),
            "--force",
            "--checkpoint",
            checkpoint.to_str().unwrap(),
        ];
        let dry = reprocess(&[&base[..], &["--dry-run"]].concat(), &[]);
        let stdout = String::from_utf8_lossy(&dry.stdout);
        assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
        assert!(
            stdout.contains("Dry run: tenant acme") && stdout.contains("pageviews"),
            "{stdout}"
        );
        let run = reprocess(&base, &[]);
        let stdout = String::from_utf8_lossy(&run.stdout);
        assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
        assert!(
            stdout.contains("Replayed: tenant acme") && stdout.contains("| yes"),
            "{stdout}"
        );
        assert!(!checkpoint.exists(), "a finished run leaves no checkpoint");
        // A checkpoint of another run is refused, naming it.
        std::fs::write(
            &checkpoint,
            format!(
                r#"{{"tenant":"acme","firstDay":"2026-01-01","lastDay":"2026-01-02","sites":[],"processing":"v{}","dryRun":false,"done":["2026-01-01"]}}"#,
                sightline_core::processor::PIPELINE_VERSION
            ),
        )
        .unwrap();
        refused(&reprocess(&base, &[]), "checkpoint is of another run");

        let wh = Embedded::open(&data.join("engine"), 1).unwrap();
        assert_eq!(count(&wh, "SELECT count() AS n FROM sightline_acme.events").await, 40);
    }

    /// The days of `replay_support`'s dataset, as the CLI's `--from` and `--to`.
    fn dataset_range() -> [String; 2] {
        [days()[0].to_string(), (days()[2] + chrono::Days::new(1)).to_string()]
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_run_killed_mid_way_and_resumed_equals_an_uninterrupted_run() {
        use std::io::{BufRead, BufReader};
        use std::process::Stdio;

        // Two tenants holding the same three days as the buggy processor stored them.
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let tenants = dir.path().join("tenants.yaml");
        std::fs::write(&tenants, [tenant_yaml("whole"), tenant_yaml("killed")].join("---\n")).unwrap();
        let events = dataset(41);
        let stored = {
            let wh = Embedded::open(&data.join("engine"), 2).unwrap();
            for name in ["whole", "killed"] {
                let t = tenant(name);
                prepare(&wh, &t).await;
                ingest(&wh, &t, Arc::new(Buggy), &events).await;
            }
            let stored = checksums(&wh, "sightline_whole").await;
            assert_eq!(checksums(&wh, "sightline_killed").await, stored, "identical copies");
            stored
            // The engine closes with its last connection: the CLI can open the directory.
        };
        let [from, to] = dataset_range();
        let checkpoint = dir.path().join("killed.checkpoint.json");
        let args = |tenant: &str| -> Vec<String> {
            [
                "--data",
                data.to_str().unwrap(),
                "--tenants",
                tenants.to_str().unwrap(),
                "--tenant",
                tenant,
                "--from",
                &from,
                "--to",
                &to,
                "--checkpoint",
                checkpoint.to_str().unwrap(),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        let run = |tenant: &str| {
            let args = args(tenant);
            reprocess(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[])
        };
        let whole = run("whole");
        assert!(whole.status.success(), "{}", String::from_utf8_lossy(&whole.stderr));
        assert!(!checkpoint.exists());

        // SIGKILL once the first day is checkpointed (the CLI says so on stderr after it
        // saved the file), while the next one is under way.
        let mut child = Command::new(binary())
            .arg("reprocess")
            .args(args("killed"))
            .env("SIGHTLINE_SECRET", TEST_SECRET)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut said = Vec::new();
        for line in BufReader::new(child.stderr.take().unwrap()).lines() {
            let line = line.unwrap();
            let first_done = line.starts_with("1/3 days done");
            said.push(line);
            if first_done {
                break;
            }
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(
            said.last().is_some_and(|l| l.starts_with("1/3 days done")),
            "the run never finished its first day: {said:?}"
        );
        assert!(!status.success(), "the run finished before the kill: {said:?}");
        let saved: Checkpoint = serde_json::from_str(&std::fs::read_to_string(&checkpoint).unwrap()).unwrap();
        let done = saved.done.len();
        assert!((1..3).contains(&done), "killed mid-run: {saved:?}");

        // The same command again: the days left, then nothing left behind.
        let resumed = run("killed");
        let stdout = String::from_utf8_lossy(&resumed.stdout);
        assert!(
            resumed.status.success(),
            "the resumed run failed: {}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        assert!(
            stdout.contains(&format!("{done} days were done by an earlier run")),
            "{stdout}"
        );
        assert_eq!(stdout.matches("| yes").count(), 3 - done, "{stdout}");
        assert!(!checkpoint.exists(), "a finished run leaves no checkpoint");

        let wh = Embedded::open(&data.join("engine"), 1).unwrap();
        let replayed = checksums(&wh, "sightline_whole").await;
        assert_ne!(replayed, stored, "the replay changed the days");
        assert_eq!(
            checksums(&wh, "sightline_killed").await,
            replayed,
            "killed and resumed equals uninterrupted, in events and every tier"
        );
        let staging = count(
            &wh,
            "SELECT count() AS n FROM system.tables WHERE database = 'sightline_killed' \
             AND (name LIKE 'events\\_replay\\_%' OR name LIKE '%\\_stage\\_%')",
        )
        .await;
        assert_eq!(staging, 0, "the killed run's staging tables are gone");
        let leased = lease::held_days(&wh, "sightline_killed", days()[0]).await.unwrap();
        assert!(leased.is_empty(), "leases left: {leased:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn metrics_count_the_days_each_processing_identity_made_and_follow_a_reprocess() {
        let (_dir, data, tenants) = fixture();
        let expected = {
            let wh = Embedded::open(&data.join("engine"), 2).unwrap();
            let acme = tenant("acme");
            prepare(&wh, &acme).await;
            // The last day's blog rows by the current processor, the rest by the buggy one
            // (the current one, continuing visits from the day before, corrects some of
            // that day's rows too).
            let (current, buggy): (Vec<RawEvent>, Vec<RawEvent>) = dataset(51)
                .into_iter()
                .partition(|e| e.ts.date_naive() == days()[2] && e.site_id == "blog.example.com");
            ingest(&wh, &acme, Arc::new(Buggy), &buggy).await;
            ingest(&wh, &acme, Arc::new(Current), &current).await;
            // Sealing replays the days another identity made as they seal (docs/replay.md):
            // marked checked, these days stay as stored whatever today's date is.
            wh.execute(
                "INSERT INTO sightline_acme.storage_state (key, value, version) \
                 VALUES ('replay_checked_through', '2099-12-31', toUInt64(toUnixTimestamp64Micro(now64(6))))",
                &Params::new(),
            )
            .await
            .unwrap();
            // What each day holds, read from its rows: the identities with net rows.
            let rows = wh
                .select(
                    "SELECT toString(toDate(ts)) AS day, processing FROM sightline_acme.events \
                     GROUP BY day, processing HAVING sum(sign) > 0",
                    &Params::new(),
                )
                .await
                .unwrap();
            let mut per_day: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for r in &rows {
                per_day
                    .entry(r["day"].as_str().unwrap().to_string())
                    .or_default()
                    .push(r["processing"].as_str().unwrap().to_string());
            }
            let mut days: BTreeMap<String, f64> = BTreeMap::new();
            for identity in per_day.values().flatten() {
                *days
                    .entry(format!("tenant=\"acme\",identity=\"{identity}\""))
                    .or_default() += 1.0;
            }
            let mixed = per_day.values().filter(|ids| ids.len() > 1).count();
            assert!(
                mixed > 0 && days.len() == 2,
                "a mixed day and two identities: {per_day:?}"
            );
            let mut expected: Vec<(String, f64)> = days.into_iter().collect();
            expected.push(("tenant=\"acme\"".to_string(), mixed as f64));
            expected.sort_by(|a, b| a.0.cmp(&b.0));
            expected
        };
        let mut server = Server::start(&data, &tenants, &["--processing-metrics-interval-ms", "200"]);
        // The acme series of both metrics (labels, value), once they equal `expected`.
        async fn shown(server: &Server, expected: &[(String, f64)]) {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let mut got = metric_samples(server, "sightline_day_processing_identity").await;
                got.extend(metric_samples(server, "sightline_day_processing_mixed").await);
                got.retain(|(labels, _)| labels.starts_with("tenant=\"acme\""));
                got.sort_by(|a, b| a.0.cmp(&b.0));
                if got == expected {
                    return;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "/metrics shows {got:?}, not {expected:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        shown(&server, &expected).await;

        let [from, to] = dataset_range();
        let url = server.url("");
        let out = reprocess(
            &[
                "--server",
                &url,
                "--token",
                &admin_token(),
                "--tenant",
                "acme",
                "--from",
                &from,
                "--to",
                &to,
            ],
            &[],
        );
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let after = [
            ("tenant=\"acme\"".to_string(), 0.0),
            ("tenant=\"acme\",identity=\"v2\"".to_string(), 0.0),
            (
                format!("tenant=\"acme\",identity=\"{}\"", crate::current_identity()),
                3.0,
            ),
        ];
        shown(&server, &after).await;
        server.stop();
    }

    /// Every acknowledged id stored once in `events_raw`; every raw row with exactly one net
    /// row in `events` and counted once in the quarter-hour tier; failed requests whole or
    /// absent.
    async fn exactly_once(wh: &dyn Warehouse, load: &LoadReport) {
        let stored = distinct_ids(wh, "SELECT toString(event_id) AS id FROM sightline_acme.events_raw").await;
        let missing = load.acked.iter().flatten().filter(|id| !stored.contains(*id)).count();
        assert_eq!(missing, 0, "acknowledged events missing from events_raw");
        for request in &load.failed {
            let present = request.iter().filter(|id| stored.contains(*id)).count();
            assert!(
                present == 0 || present == request.len(),
                "a failed request is half stored"
            );
        }
        let not_once = count(
            wh,
            "SELECT count() AS n FROM (SELECT site_id, event_id, sum(sign) AS s FROM sightline_acme.events \
             GROUP BY site_id, event_id HAVING s != 1)",
        )
        .await;
        let orphans = count(
            wh,
            "SELECT count() AS n FROM sightline_acme.events_raw WHERE (site_id, event_id) NOT IN \
             (SELECT site_id, event_id FROM sightline_acme.events)",
        )
        .await;
        let net = count(
            wh,
            "SELECT toUInt64(sum(sign)) AS n FROM sightline_acme.events WHERE is_bot = 0",
        )
        .await;
        let tier = count(
            wh,
            "SELECT toUInt64(sum(events)) AS n FROM sightline_acme.rollup_site_15m",
        )
        .await;
        assert_eq!((not_once, orphans), (0, 0), "events hold each raw event once");
        assert_eq!(net, stored.len() as u64);
        assert_eq!(tier, net, "the quarter-hour tier counts each event once");
    }

    /// Runs `sightline reprocess` with `args` on a thread while `load` goes on; the run must
    /// succeed and have swapped today.
    async fn replay_during(load: &Load, args: Vec<String>) -> String {
        let before = load.acked_so_far();
        let run = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            reprocess(&args, &[])
        });
        let out = run.await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "reprocess failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("| yes"), "the day was swapped: {stdout}");
        assert!(load.acked_so_far() > before, "the load went on during the replay");
        stdout
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn standalone_ingestion_during_a_forced_replay_loses_and_doubles_nothing() {
        let (_dir, data, tenants) = fixture();
        let mut server = Server::start(&data, &tenants, &[]);
        let load = Load::start(&server, 3);
        while load.acked_so_far() < 30 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let args: Vec<String> = [
            "--server",
            &server.url(""),
            "--token",
            &admin_token(),
            "--tenant",
            "acme",
            "--from",
            &today(),
            "--to",
            &tomorrow(),
            "--force",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        replay_during(&load, args).await;
        // Some more after the replay: the writer read its sessions again.
        let after = load.acked_so_far();
        while load.acked_so_far() < after + 20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let report = load.finish().await;
        server.stop();
        let wh = Embedded::open(&data.join("engine"), 1).unwrap();
        exactly_once(&wh, &report).await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn loader_ingestion_during_a_forced_replay_loses_and_doubles_nothing() {
        let pipeline = Pipeline::start_with(100, &["--processing-metrics-interval-ms", "200"]).await;
        let load = Load::start(&pipeline.collector, 3);
        // The loader creates the schema when it starts: wait for its first rows.
        let wh = pipeline.warehouse();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let rows = wh
                .select("SELECT count() AS n FROM sightline_acme.events_raw", &Params::new())
                .await
                .ok()
                .and_then(|r| r.first().and_then(|r| r["n"].as_u64()));
            if rows.is_some_and(|n| n >= 100) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the loader stored nothing");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let args: Vec<String> = [
            "--clickhouse-url",
            &pipeline.front.url(),
            "--clickhouse-user",
            USER,
            "--clickhouse-password",
            PASSWORD,
            "--tenants",
            pipeline.tenants.to_str().unwrap(),
            "--tenant",
            "acme",
            "--from",
            &today(),
            "--to",
            &tomorrow(),
            "--force",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        replay_during(&load, args).await;
        let after = load.acked_so_far();
        while load.acked_so_far() < after + 20 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let report = load.finish().await;
        pipeline.drained(report.acked_ids()).await;
        exactly_once(&pipeline.warehouse(), &report).await;
        // The loader's /metrics: every day it stored was made by the current processor.
        let days = count(
            &pipeline.warehouse(),
            "SELECT uniqExact(toDate(ts)) AS n FROM sightline_acme.events",
        )
        .await as f64;
        let series = format!(
            "sightline_day_processing_identity{{tenant=\"acme\",identity=\"{}\"}}",
            sightline_core::processor::identity(
                sightline_core::processor::PIPELINE_VERSION,
                sightline_core::processor::ProcessorConfig { bot_filtering: true }
            )
        );
        eventually(
            Duration::from_secs(30),
            "the loader shows the days per identity",
            || async {
                metric(&pipeline.loader, &series).await == Some(days)
                    && metric(&pipeline.loader, "sightline_day_processing_mixed{tenant=\"acme\"}").await == Some(0.0)
            },
        )
        .await;
    }
}

/// The processing identity this build's processor stamps with bot filtering on (the
/// datasets' setting): `v5` for PIPELINE_VERSION 5.
fn current_identity() -> String {
    format!("v{PIPELINE_VERSION}")
}
