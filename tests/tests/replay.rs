//! The replay engine on the real engine (issue 14; docs/replay.md): the bug story, resuming
//! a stopped run, readers during a replay, sealing, and writers beside a forced replay.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{Days, NaiveDate};
use sightline_core::processor::Current;
use sightline_core::warehouse::embedded::Embedded;
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
        assert_eq!(d.processing_after, "v3");
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
    assert!(fixed.days.iter().all(|d| d.swapped && d.processing_after == "v3"));
    assert_eq!(checksums(&wh, "sightline_buggy").await, clean);

    // A sealed, unchanged day replayed changes nothing.
    for name in ["buggy", "clean"] {
        let again = replay::run(&wh, request(name), None, &NoHooks, &CancellationToken::new())
            .await
            .unwrap();
        assert!(again.days.iter().all(|d| d.processing_before.keys().eq(["v3"].iter())));
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

impl ReplayHooks for StopAfter {
    fn checkpoint(&self, checkpoint: &Checkpoint) -> sightline_core::Result<()> {
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
