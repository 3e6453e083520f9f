//! The loader's exactly-once step on the real engine, without a broker: a redelivered batch
//! stores nothing twice, a batch that crashed between the raw and the processed insert is
//! completed, and sessions continue as if the batch had been stored once.

use std::collections::BTreeMap;

use chrono::{Duration, TimeZone, Utc};
use sightline_core::event::RawEvent;
use sightline_core::processor::Current;
use sightline_core::spec::parse_tenants;
use sightline_core::warehouse::embedded::Embedded;
use sightline_core::warehouse::live::LiveSessions;
use sightline_core::warehouse::ops;
use sightline_ingest::loader::store::{store_batch, Stored};
use sightline_tests::{count, CHROME_MAC};

fn raw(visitor: u64, minute: i64) -> RawEvent {
    let ts = Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap() + Duration::minutes(minute);
    RawEvent {
        event_id: uuid::Uuid::new_v4(),
        site_id: "shop.example.com".into(),
        received_at: ts,
        ts,
        name: "pageview".into(),
        url: format!("https://shop.example.com/{minute}"),
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
    }
}

/// Inside the redelivery window every id is a suspect.
fn suspects(batch: &[RawEvent]) -> std::collections::HashSet<uuid::Uuid> {
    batch.iter().map(|e| e.event_id).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn redelivery_and_half_stored_batches_end_up_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let wh = Embedded::open(&dir.path().join("engine"), 1).unwrap();
    let tenant = parse_tenants(
        "apiVersion: sightline.dev/v1alpha1\nkind: AnalyticsTenant\nmetadata: {name: acme}\nspec: {sites: {allowed: [{id: shop.example.com}]}}\n",
        "test",
    )
    .unwrap()
    .remove(0);
    ops::apply_schema(&wh, &tenant).await.unwrap();
    let mut sessions = LiveSessions::start(&wh, &tenant, std::sync::Arc::new(Current))
        .await
        .unwrap();

    // A batch, with one event twice (a collector retry on the log).
    let first = vec![raw(1, 0), raw(1, 5), raw(2, 1)];
    let mut batch = first.clone();
    batch.push(first[0].clone());
    let stored = store_batch(&wh, &tenant, &mut sessions, &batch, &suspects(&batch))
        .await
        .unwrap();
    assert_eq!(
        stored,
        Stored {
            raw: 3,
            events: 3,
            duplicates: 1,
            corrected: 0
        }
    );

    // Redelivered after a loader crash (its offsets were not committed): nothing new.
    let again = store_batch(&wh, &tenant, &mut sessions, &batch, &suspects(&batch))
        .await
        .unwrap();
    assert_eq!(
        again,
        Stored {
            raw: 0,
            events: 0,
            duplicates: 4,
            corrected: 0
        }
    );

    // A crash between the two inserts: raw rows without their processed rows. The
    // redelivery inserts only the processed ones.
    let half = vec![raw(1, 10), raw(3, 11)];
    ops::insert_rows(&wh, "sightline_acme.events_raw", &half).await.unwrap();
    let mut redelivered = half.clone();
    redelivered.push(raw(2, 12));
    let completed = store_batch(&wh, &tenant, &mut sessions, &redelivered, &suspects(&redelivered))
        .await
        .unwrap();
    assert_eq!(
        completed,
        Stored {
            raw: 1,
            events: 3,
            duplicates: 2,
            corrected: 0
        }
    );

    assert_eq!(
        count(&wh, "SELECT count() AS n FROM sightline_acme.events_raw").await,
        6
    );
    assert_eq!(
        count(&wh, "SELECT uniqExact(event_id) AS n FROM sightline_acme.events_raw").await,
        6
    );
    assert_eq!(count(&wh, "SELECT count() AS n FROM sightline_acme.events").await, 6);
    assert_eq!(
        count(
            &wh,
            "SELECT toUInt64(sum(events)) AS n FROM sightline_acme.rollup_site_15m"
        )
        .await,
        6
    );
    // Visitor 1: one session of three pageviews (0, 5, 10 min); visitor 2: one of two
    // (1, 12 min); visitor 3: one. Counted once each despite the redeliveries.
    assert_eq!(
        count(
            &wh,
            "SELECT toUInt64(sum(visits)) AS n FROM sightline_acme.rollup_site_15m"
        )
        .await,
        3
    );
    assert_eq!(
        count(
            &wh,
            "SELECT toUInt64(sum(bounces)) AS n FROM sightline_acme.rollup_site_15m"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &wh,
            "SELECT toUInt64(sum(duration)) AS n FROM sightline_acme.rollup_site_15m"
        )
        .await,
        10 * 60 + 11 * 60
    );
}
