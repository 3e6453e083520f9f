//! `sightline collector` in front of a real Kafka-protocol broker (noida-db): a request's
//! events are on the tenant's topic, as one message keyed so that a visitor stays on one
//! partition, before the 202; with
//! the broker stopped the answer is a 503 within a bounded time, and it recovers.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::ClientConfig;
use serde_json::json;
use sightline_core::event::RawEvent;
use sightline_core::spec::parse_tenants;
use sightline_ingest::kafka::provision::Provisioner;
use sightline_ingest::kafka::{topics, Envelope};
use sightline_tests::*;

const TENANT: &str = "apiVersion: sightline.dev/v1alpha1
kind: AnalyticsTenant
metadata: { name: acme }
spec:
  sites: { allowed: [{ id: shop.example.com }] }
  kafka: { partitions: 3, replicationFactor: 1, retentionHours: 24 }
";

fn consume(bootstrap: &str, topic: &str, want: usize) -> Vec<(String, i32, RawEvent)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("test-{}", uuid::Uuid::new_v4()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while out.len() < want && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
            let message: Envelope<RawEvent> = serde_json::from_slice(m.payload().unwrap()).unwrap();
            out.extend(message.events.into_iter().map(|e| (key.clone(), m.partition(), e)));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_on_the_topic_before_202_and_a_stopped_broker_gives_503() {
    let broker = Broker::start();
    let tenant = parse_tenants(TENANT, "test").unwrap().remove(0);
    Provisioner::new(&broker.bootstrap, &Default::default())
        .unwrap()
        .provision(&tenant)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tenant.yaml"), TENANT).unwrap();
    let server = Server::start_role(
        "collector",
        &dir.path().join("data"),
        dir.path(),
        &["--brokers", &broker.bootstrap, "--delivery-timeout-ms", "3000"],
    );
    let c = client();
    let write = write_token("acme", "shop.example.com");
    let post = |ip: &'static str, n: usize| {
        let (c, url, write) = (c.clone(), server.url("/v1/collect"), write.clone());
        async move {
            let events: Vec<_> = (0..n)
                .map(|i| json!({"url": format!("https://shop.example.com/{ip}/{i}")}))
                .collect();
            c.post(url)
                .bearer_auth(write)
                .header("User-Agent", CHROME_MAC)
                .header("X-Forwarded-For", ip)
                .json(&json!({"events": events}))
                .send()
                .await
                .unwrap()
        }
    };

    // Two visitors, three and two events: all on the topic, each visitor on one partition.
    assert_eq!(post("198.51.100.1", 3).await.status(), 202);
    assert_eq!(post("198.51.100.2", 2).await.status(), 202);
    let [topic, _] = topics("acme");
    let got = consume(&broker.bootstrap, &topic, 5);
    assert_eq!(got.len(), 5, "{got:?}");
    let mut partitions: HashMap<String, HashSet<i32>> = HashMap::new();
    for (key, partition, event) in &got {
        assert_eq!(key, &format!("shop.example.com:{}", event.visitor_id));
        partitions.entry(key.clone()).or_default().insert(*partition);
    }
    assert_eq!(partitions.len(), 2, "two visitors");
    assert!(
        partitions.values().all(|p| p.len() == 1),
        "a visitor's events share a partition: {partitions:?}"
    );
    let urls: HashSet<String> = got.iter().map(|(_, _, e)| e.url.clone()).collect();
    assert!(urls.contains("https://shop.example.com/198.51.100.1/2"));

    // The broker goes away: a 503 with Retry-After, within the delivery timeout and change.
    broker.stop();
    let started = Instant::now();
    let r = post("198.51.100.3", 1).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "503 took {:?}",
        started.elapsed()
    );

    // It comes back: requests are acknowledged again. (A broker that kept nothing, Tansu
    // on memory storage, needs its topics again, as the operator would recreate them.)
    broker.resume();
    if broker.kind == BrokerKind::Tansu {
        Provisioner::new(&broker.bootstrap, &Default::default())
            .unwrap()
            .provision(&tenant)
            .await
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = post("198.51.100.4", 1).await.status();
        if status == 202 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {status} a minute after the broker returned"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
