//! Live processing equals a replay, whatever the arrival order (issue 14, item 1;
//! docs/replay.md "Live corrections"), on the real engine.
//!
//! For several seeds: visitors whose visits cross UTC midnight, with gaps near the session
//! timeout, non-interactive events and two sites sharing event ids, arrive shuffled, in
//! batches of random size, with a writer restart (a new `LiveSessions` reading what is
//! stored) somewhere in the middle. Each batch goes through `LiveSessions::process` and one
//! insert, as the group commit and the loader do. Then the rows of `events` (collapsed by
//! sign) and the sums of the quarter-hour tier must equal what a replay of every day from
//! `events_raw` gives, and a second replay must change nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sightline_core::event::RawEvent;
use sightline_core::processor::Current;
use sightline_core::spec::{parse_tenants, Tenant};
use sightline_core::warehouse::embedded::Embedded;
use sightline_core::warehouse::live::{self, LiveSessions};
use sightline_core::warehouse::{ops, replay, tiers, Params, Warehouse};
use sightline_tests::CHROME_MAC;
use uuid::Uuid;

const SITES: [&str; 2] = ["shop.example.com", "blog.example.com"];
const REFERRERS: [&str; 4] = [
    "https://www.google.com/",
    "https://news.ycombinator.com/",
    "",
    "https://t.co/x",
];

fn tenant() -> Tenant {
    parse_tenants(
        "apiVersion: sightline.dev/v1alpha1\nkind: AnalyticsTenant\nmetadata: {name: live}\n\
         spec: {sites: {allowed: [{id: shop.example.com}, {id: blog.example.com}]}}\n",
        "test",
    )
    .unwrap()
    .remove(0)
}

/// A visitor's id on a UTC day (the collector's daily salt, modelled).
fn visitor_id(person: u64, day: NaiveDate) -> u64 {
    person * 1_000_003 + u64::from(day.format("%j").to_string().parse::<u32>().unwrap())
}

/// Visits around the midnight between `day` and the next, per person: 1 to 3 visits of 1 to 6
/// events, gaps from seconds to 40 minutes (so some visits split or merge depending on
/// what is known), one event in seven non-interactive.
fn dataset(rng: &mut StdRng, day: NaiveDate) -> Vec<RawEvent> {
    let midnight = day.succ_opt().unwrap().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let mut out = Vec::new();
    let mut per_site: BTreeMap<&str, u64> = BTreeMap::new();
    for person in 1..=30u64 {
        let site = SITES[(person % 2) as usize];
        let mut ts = midnight - Duration::minutes(rng.random_range(0..150));
        for _visit in 0..rng.random_range(1..=3) {
            let referrer = REFERRERS[rng.random_range(0..REFERRERS.len())];
            for n in 0..rng.random_range(1..=6) {
                let own_day = ts.date_naive();
                let prev = if ts >= own_day.and_hms_opt(0, 0, 0).unwrap().and_utc()
                    && ts < own_day.and_hms_opt(0, 30, 0).unwrap().and_utc()
                {
                    visitor_id(person, own_day.pred_opt().unwrap())
                } else {
                    0
                };
                // Ids repeat across the two sites on purpose: unique per site only.
                let n_site = per_site.entry(site).or_default();
                *n_site += 1;
                let id = Uuid::from_u64_pair(1, *n_site);
                out.push(RawEvent {
                    event_id: id,
                    site_id: site.into(),
                    received_at: ts,
                    ts,
                    name: "pageview".into(),
                    url: format!("https://{site}/p{}", rng.random_range(0..5)),
                    referrer: if n == 0 {
                        referrer.into()
                    } else {
                        format!("https://{site}/")
                    },
                    user_agent: CHROME_MAC.into(),
                    props: BTreeMap::new(),
                    revenue_amount: String::new(),
                    revenue_currency: String::new(),
                    visitor_id: visitor_id(person, own_day),
                    country: "DE".into(),
                    ingest_source: "web".into(),
                    prev_day_visitor_id: prev,
                    interactive: rng.random_range(0..7) != 0,
                });
                ts += Duration::seconds(rng.random_range(5..1500));
            }
            ts += Duration::minutes(rng.random_range(20..45));
        }
    }
    out
}

/// `events` collapsed by sign (every net row must be exactly one), and the quarter-hour
/// tier's sums per bucket and dimension value (visitors are sketches that cannot take a
/// visitor out: docs/replay.md).
async fn snapshot(wh: &dyn Warehouse, db: &str) -> (Vec<Value>, Vec<Value>, Vec<Value>) {
    let rows = wh
        .select(
            &format!(
                "SELECT site_id, toString(event_id) AS id, visitor_id, session_id, toString(session_start) AS start, \
                        visit_delta, bounce_delta, duration_delta, entry_page, session_source, session_medium, \
                        pathname, referrer_source, processing, sum(sign) AS n \
                 FROM {db}.events GROUP BY ALL HAVING n != 0 ORDER BY site_id, id"
            ),
            &Params::new(),
        )
        .await
        .unwrap();
    for r in &rows {
        assert_eq!(r["n"], 1, "a net row is one row: {r}");
    }
    let sums = "toInt64(sum(visits)) AS v, toInt64(sum(pageviews)) AS p, toInt64(sum(events)) AS e, \
                toInt64(sum(bounces)) AS b, toInt64(sum(duration)) AS d";
    let nonzero = "HAVING (v, p, e, b, d) != (0, 0, 0, 0, 0)";
    let site = wh
        .select(
            &format!(
                "SELECT site_id, toString(bucket) AS t, {sums} FROM {db}.rollup_site_15m \
                 GROUP BY site_id, t {nonzero} ORDER BY site_id, t"
            ),
            &Params::new(),
        )
        .await
        .unwrap();
    let dims = wh
        .select(
            &format!(
                "SELECT site_id, toString(bucket) AS t, dimension, value, {sums} FROM {db}.rollup_dims_15m \
                 GROUP BY site_id, t, dimension, value {nonzero} ORDER BY site_id, t, dimension, value"
            ),
            &Params::new(),
        )
        .await
        .unwrap();
    (rows, site, dims)
}

fn first_difference(a: &[Value], b: &[Value]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!("row {i}: live {} / replay {}", a[i], b[i]),
        None => format!("{} rows live, {} after replay", a.len(), b.len()),
    }
}

/// `writers` writers (one: the standalone group commit; more: Kafka loaders, each holding
/// the visitors of its partitions, as the collector keys messages by visitor) process the
/// shuffled events in batches, their batches interleaved at random.
async fn live_equals_replay(seed: u64, writers: usize) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let wh = Embedded::open(&dir.path().join("engine"), 2).unwrap();
    let tenant = tenant();
    let db = tenant.database();
    ops::apply_schema(&wh, &tenant).await.unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
    tiers::migrate_recent_days(&wh, &tenant, now).await.unwrap();

    let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let mut events = dataset(&mut rng, day);
    events.shuffle(&mut rng);
    // Each writer's batches, in its own arrival order.
    let mut batches: Vec<std::collections::VecDeque<Vec<RawEvent>>> = vec![Default::default(); writers];
    for (w, queue) in batches.iter_mut().enumerate() {
        let mine: Vec<RawEvent> = events
            .iter()
            .filter(|e| (e.visitor_id as usize + e.site_id.len()) % writers == w)
            .cloned()
            .collect();
        let mut rest = mine.as_slice();
        while !rest.is_empty() {
            let n = rng.random_range(1..=12).min(rest.len());
            queue.push_back(rest[..n].to_vec());
            rest = &rest[n..];
        }
    }
    let total: usize = batches.iter().map(|b| b.len()).sum();
    let restart_at = rng.random_range(1..total);

    let start = || async {
        let live = LiveSessions::start(&wh, &tenant, Arc::new(Current)).await.unwrap();
        if writers > 1 {
            live.shared_with_other_writers()
        } else {
            live
        }
    };
    let mut live = Vec::new();
    for _ in 0..writers {
        live.push(start().await);
    }
    let mut corrected = 0;
    for i in 0..total {
        let open: Vec<usize> = (0..writers).filter(|w| !batches[*w].is_empty()).collect();
        let w = open[rng.random_range(0..open.len())];
        if i == restart_at {
            live[w] = start().await;
        }
        let batch = batches[w].pop_front().unwrap();
        let refs: Vec<&RawEvent> = batch.iter().collect();
        let processed = live[w].process(&wh, &refs).await.unwrap();
        ops::insert_raw_and_events(&wh, &db, &batch, &processed.rows)
            .await
            .unwrap();
        corrected += processed.corrected;
    }
    let live_state = snapshot(&wh, &db).await;
    assert_eq!(live_state.0.len(), events.len(), "seed {seed}: one net row per event");

    let mut days: Vec<NaiveDate> = events.iter().map(|e| e.ts.date_naive()).collect();
    days.sort_unstable();
    days.dedup();
    replay::replay_days(&wh, &tenant, &days).await.unwrap();
    let replayed = snapshot(&wh, &db).await;
    assert!(
        live_state.0 == replayed.0,
        "seed {seed}: events differ ({corrected} corrections): {}",
        first_difference(&live_state.0, &replayed.0)
    );
    assert!(
        live_state.1 == replayed.1,
        "seed {seed}: site tier differs: {}",
        first_difference(&live_state.1, &replayed.1)
    );
    assert!(
        live_state.2 == replayed.2,
        "seed {seed}: dimension tier differs: {}",
        first_difference(&live_state.2, &replayed.2)
    );

    replay::replay_days(&wh, &tenant, &days).await.unwrap();
    assert!(
        snapshot(&wh, &db).await == replayed,
        "seed {seed}: a second replay changed something"
    );
    corrected
}

#[tokio::test(flavor = "multi_thread")]
async fn live_numbers_equal_a_replay_for_any_arrival_order() {
    let mut corrected = 0;
    for seed in 1..=6 {
        corrected += live_equals_replay(seed, 1).await;
    }
    // The shuffles must have exercised the slow path, or the test proves nothing.
    assert!(corrected > 0, "no arrival order needed a correction");
}

/// Kafka loaders: each holds the visitors of its partitions, and a visit that crosses UTC
/// midnight links two visitor ids that two loaders may hold.
#[tokio::test(flavor = "multi_thread")]
async fn loaders_sharing_a_tenant_equal_a_replay_across_midnight() {
    let mut corrected = 0;
    for seed in 11..=16 {
        corrected += live_equals_replay(seed, 3).await;
    }
    assert!(corrected > 0, "no arrival order needed a correction");
}

/// The measurement: 30 visitors' pageviews sent shuffled, one request each, gave
/// 97 visits against 56 before corrections. In arrival order with corrections the visits,
/// bounces and durations are those of the time-ordered stream.
#[tokio::test(flavor = "multi_thread")]
async fn shuffled_single_event_requests_count_the_true_visits() {
    let mut rng = StdRng::seed_from_u64(97);
    let dir = tempfile::tempdir().unwrap();
    let wh = Embedded::open(&dir.path().join("engine"), 2).unwrap();
    let tenant = tenant();
    let db = tenant.database();
    ops::apply_schema(&wh, &tenant).await.unwrap();
    tiers::migrate_recent_days(&wh, &tenant, Utc::now()).await.unwrap();
    let start: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 11, 20, 9, 0, 0).unwrap();
    let mut events = Vec::new();
    for visitor in 1..=30u64 {
        let mut ts = start + Duration::minutes(rng.random_range(0..300));
        for n in 0..rng.random_range(1..=8) {
            events.push(RawEvent {
                event_id: Uuid::from_u64_pair(visitor, n),
                site_id: SITES[0].into(),
                received_at: ts,
                ts,
                name: "pageview".into(),
                url: format!("https://{}/p{n}", SITES[0]),
                referrer: String::new(),
                user_agent: CHROME_MAC.into(),
                props: BTreeMap::new(),
                revenue_amount: String::new(),
                revenue_currency: String::new(),
                visitor_id: visitor,
                country: "DE".into(),
                ingest_source: "web".into(),
                prev_day_visitor_id: 0,
                interactive: true,
            });
            ts += Duration::seconds(rng.random_range(10..1200));
        }
    }
    let mut ordered = events.clone();
    ordered.sort_by_key(|e| (e.ts, e.event_id));
    let mut truth = sightline_core::processor::session::SessionState::default();
    let config = sightline_core::processor::ProcessorConfig { bot_filtering: true };
    let expected: (i64, i64, i64) = ordered.iter().fold((0, 0, 0), |acc, r| {
        let e = sightline_core::processor::process(r, config, &mut truth);
        (
            acc.0 + i64::from(e.visit_delta),
            acc.1 + i64::from(e.bounce_delta),
            acc.2 + e.duration_delta,
        )
    });

    events.shuffle(&mut rng);
    let mut live = LiveSessions::start(&wh, &tenant, Arc::new(Current)).await.unwrap();
    for e in &events {
        let processed = live.process(&wh, &[e]).await.unwrap();
        ops::insert_raw_and_events(&wh, &db, std::slice::from_ref(e), &processed.rows)
            .await
            .unwrap();
    }
    let got = wh
        .select(
            &format!(
                "SELECT toInt64(sum(sign * visit_delta)) AS v, toInt64(sum(sign * bounce_delta)) AS b, \
                        toInt64(sum(sign * duration_delta)) AS d FROM {db}.events"
            ),
            &Params::new(),
        )
        .await
        .unwrap();
    let got = (
        got[0]["v"].as_i64().unwrap(),
        got[0]["b"].as_i64().unwrap(),
        got[0]["d"].as_i64().unwrap(),
    );
    assert_eq!(got, expected, "visits, bounces, duration (s)");
    // And the quarter-hour tier agrees with `events`.
    let tier = wh
        .select(
            &format!("SELECT toInt64(sum(visits)) AS v, toInt64(sum(bounces)) AS b, toInt64(sum(duration)) AS d FROM {db}.rollup_site_15m"),
            &Params::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            tier[0]["v"].as_i64().unwrap(),
            tier[0]["b"].as_i64().unwrap(),
            tier[0]["d"].as_i64().unwrap()
        ),
        expected
    );
}

/// A replay's catch-up: raw events that reached a day without a processed row (a writer's
/// insert that slipped in beside the replay) are processed with their visitors, corrections
/// included; a second pass writes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn reconciling_visitors_processes_raw_rows_left_without_processed_rows() {
    let mut rng = StdRng::seed_from_u64(7);
    let dir = tempfile::tempdir().unwrap();
    let wh = Embedded::open(&dir.path().join("engine"), 2).unwrap();
    let tenant = tenant();
    let db = tenant.database();
    ops::apply_schema(&wh, &tenant).await.unwrap();
    tiers::migrate_recent_days(&wh, &tenant, Utc::now()).await.unwrap();
    let day = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
    let mut events = dataset(&mut rng, day);
    events.sort_by_key(|e| (e.ts, e.event_id));
    // Every fifth event reaches only events_raw.
    let late: Vec<RawEvent> = events.iter().step_by(5).cloned().collect();
    let first: Vec<RawEvent> = events
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 != 0)
        .map(|(_, e)| e.clone())
        .collect();
    let mut live = LiveSessions::start(&wh, &tenant, Arc::new(Current)).await.unwrap();
    let refs: Vec<&RawEvent> = first.iter().collect();
    let processed = live.process(&wh, &refs).await.unwrap();
    ops::insert_raw_and_events(&wh, &db, &first, &processed.rows)
        .await
        .unwrap();
    ops::insert_rows(&wh, &format!("{db}.events_raw"), &late).await.unwrap();

    let keys: Vec<(String, u64, DateTime<Utc>)> = late
        .iter()
        .flat_map(|e| {
            e.session_keys()
                .map(|(s, v)| (s.to_string(), v, e.ts))
                .collect::<Vec<_>>()
        })
        .collect();
    let done = live::reconcile_visitors(&wh, &tenant, &Current, &keys).await.unwrap();
    assert!(
        done.cancelled > 0,
        "late events in the middle of visits correct their rows: {done:?}"
    );
    let reconciled = snapshot(&wh, &db).await;
    assert_eq!(reconciled.0.len(), events.len(), "one net row per event");
    let again = live::reconcile_visitors(&wh, &tenant, &Current, &keys).await.unwrap();
    assert_eq!((again.rows, again.cancelled), (0, 0), "nothing left to write");

    let mut days: Vec<NaiveDate> = events.iter().map(|e| e.ts.date_naive()).collect();
    days.sort_unstable();
    days.dedup();
    replay::replay_days(&wh, &tenant, &days).await.unwrap();
    let replayed = snapshot(&wh, &db).await;
    assert!(
        reconciled.0 == replayed.0,
        "events: {}",
        first_difference(&reconciled.0, &replayed.0)
    );
    assert!(
        reconciled.2 == replayed.2,
        "tier: {}",
        first_difference(&reconciled.2, &replayed.2)
    );
}
