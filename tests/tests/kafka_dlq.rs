//! Poison on the log: a message that is not Sightline's, and a message with one bad event
//! among good ones, on every partition. Each goes to the dead-letter topic with its reason
//! and origin; the good event of the mixed message and everything after them is loaded.

use std::time::Duration;

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::json;
use sightline_ingest::kafka::topics;
use sightline_tests::pipeline::{Load, Pipeline};
use sightline_tests::*;

#[tokio::test(flavor = "multi_thread")]
async fn poison_goes_to_the_dlq_with_its_reason_and_the_partition_keeps_flowing() {
    let p = Pipeline::start(50).await;
    let [topic, dlq] = topics("acme");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &p.broker.bootstrap)
        .create()
        .unwrap();
    let now = Utc::now().format("%Y-%m-%d %H:%M:%S%.3f").to_string();
    let good_id = uuid::Uuid::new_v4().to_string();
    let good = json!({"event_id": good_id, "site_id": "shop.example.com", "received_at": now, "ts": now,
        "name": "pageview", "url": "https://shop.example.com/from-the-log", "referrer": "", "user_agent": CHROME_MAC,
        "props": {}, "revenue_amount": "", "revenue_currency": "", "visitor_id": 42, "country": "", "ingest_source": "web"});
    let mut bad = good.clone();
    bad["event_id"] = json!(uuid::Uuid::new_v4().to_string());
    bad["site_id"] = json!("evil example!");
    for partition in 0..3 {
        let junk = FutureRecord::<str, [u8]>::to(&topic)
            .partition(partition)
            .payload(b"{not json".as_slice());
        producer.send(junk, Duration::from_secs(10)).await.unwrap();
    }
    let mixed = serde_json::to_vec(&json!({"events": [bad, good]})).unwrap();
    let record = FutureRecord::<str, [u8]>::to(&topic)
        .partition(1)
        .key("shop.example.com:42")
        .payload(&mixed);
    producer.send(record, Duration::from_secs(10)).await.unwrap();

    // Events through the collector, after the poison on every partition.
    let load = Load::start(&p.collector, 3);
    while load.acked_so_far() < 30 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = load.finish().await;
    p.drained(report.acked_ids() + 1).await;
    let wh = p.warehouse();
    let stored = count(&wh, "SELECT count() AS n FROM sightline_acme.events_raw").await;
    assert!(stored as usize > report.acked_ids());
    let from_log = count(
        &wh,
        "SELECT count() AS n FROM sightline_acme.events_raw WHERE url = 'https://shop.example.com/from-the-log'",
    )
    .await;
    assert_eq!(from_log, 1, "the good event of the mixed message is loaded");
    let evil = count(
        &wh,
        "SELECT count() AS n FROM sightline_acme.events_raw WHERE site_id = 'evil example!'",
    )
    .await;
    assert_eq!(evil, 0);

    // The dead-letter topic: three unreadable messages and one bad event, each with why.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &p.broker.bootstrap)
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[&dlq]).unwrap();
    let mut dead = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dead.len() < 4 && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let header = |name: &str| {
                m.headers()
                    .and_then(|h| h.iter().find(|h| h.key == name))
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8_lossy(v).to_string())
                    .unwrap_or_default()
            };
            dead.push((
                header("sightline-reason"),
                header("sightline-origin"),
                m.payload().unwrap_or_default().to_vec(),
            ));
        }
    }
    assert_eq!(dead.len(), 4, "{dead:?}");
    let junk: Vec<_> = dead.iter().filter(|(_, _, payload)| payload == b"{not json").collect();
    assert_eq!(junk.len(), 3, "{dead:?}");
    assert!(junk
        .iter()
        .all(|(reason, origin, _)| reason.contains("not a Sightline message")
            && origin.starts_with(&format!("{topic}/"))));
    let (reason, origin, payload) = dead.iter().find(|(_, _, payload)| payload != b"{not json").unwrap();
    assert!(reason.contains("evil example!"), "{reason}");
    assert!(
        origin.starts_with(&format!("{topic}/1/")) && origin.ends_with("#0"),
        "{origin}"
    );
    let dead_event: serde_json::Value = serde_json::from_slice(payload).unwrap();
    assert_eq!(dead_event["site_id"], "evil example!");

    assert_eq!(
        metric(&p.loader, "sightline_loader_dlq_total{tenant=\"acme\"}").await,
        Some(4.0)
    );
}
