//! The distributed pipeline for tests: a broker, the ClickHouse front over libchdb (in this
//! process), `sightline collector` and `sightline loader`, and a steady load of client
//! requests whose answers are recorded, so crash tests can compare id sets.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sightline_core::warehouse::http::{Http, HttpConfig};

use crate::clickhouse_front::ClickHouseFront;
use crate::*;

pub const USER: &str = "sightline";
pub const PASSWORD: &str = "s3cret";

pub struct Pipeline {
    pub broker: Broker,
    pub front: ClickHouseFront,
    pub collector: Server,
    pub loader: Server,
    pub data: PathBuf,
    pub tenants: PathBuf,
    loader_args: LoaderArgs,
    _dir: tempfile::TempDir,
}

/// How the pipeline's loaders are started.
struct LoaderArgs {
    url: String,
    bootstrap: String,
    batch_wait_ms: u64,
    session_timeout_ms: u64,
}

impl LoaderArgs {
    fn start(&self, data: &std::path::Path, tenants: &std::path::Path, instance: &str, extra: &[&str]) -> Server {
        let (batch_wait, session_timeout) = (self.batch_wait_ms.to_string(), self.session_timeout_ms.to_string());
        Server::start_role(
            "loader",
            data,
            tenants,
            &[
                &[
                    "--clickhouse-url",
                    &self.url,
                    "--clickhouse-user",
                    USER,
                    "--clickhouse-password",
                    PASSWORD,
                    "--brokers",
                    &self.bootstrap,
                    "--instance-id",
                    instance,
                    "--batch-max-wait-ms",
                    &batch_wait,
                    "--session-timeout-ms",
                    &session_timeout,
                ][..],
                extra,
            ]
            .concat(),
        )
    }
}

impl Pipeline {
    /// Provisions the fixture tenants' topics and starts both roles; the loader closes a
    /// batch `batch_wait_ms` after its first message.
    pub async fn start(batch_wait_ms: u64) -> Pipeline {
        Self::start_with(batch_wait_ms, &[]).await
    }

    /// Like `start`, with more flags for the first loader.
    pub async fn start_with(batch_wait_ms: u64, loader_flags: &[&str]) -> Pipeline {
        let broker = Broker::start();
        let (dir, data, tenants) = kafka_fixture();
        provision(&tenants, &broker.bootstrap);
        let front = ClickHouseFront::start(&dir.path().join("clickhouse"), Some((USER, PASSWORD))).await;
        let loader_args = LoaderArgs {
            url: front.url(),
            bootstrap: broker.bootstrap.clone(),
            batch_wait_ms,
            session_timeout_ms: broker.kind.session_timeout_ms(),
        };
        let loader = loader_args.start(&data, &tenants, "loader-0", loader_flags);
        // The loader announces its operations listener at once and "listening" once it has
        // migrated the tenants' schema; the tests count rows of that schema, so they start
        // after it (on a loaded machine the collector acknowledged a load first, and the
        // count found no events_raw table).
        eventually(Duration::from_secs(90), "the loader says listening", || async {
            loader
                .stdout_lines()
                .iter()
                .any(|l| l.starts_with("sightline loader listening on"))
        })
        .await;
        let collector = Server::start_role(
            "collector",
            &data,
            &tenants,
            &["--brokers", broker.bootstrap.as_str(), "--delivery-timeout-ms", "3000"],
        );
        Pipeline {
            broker,
            front,
            collector,
            loader,
            data,
            tenants,
            loader_args,
            _dir: dir,
        }
    }

    /// Another loader of the same tenants (its own instance id): the group rebalances.
    pub fn start_another_loader(&self, instance: &str) -> Server {
        self.loader_args.start(&self.data, &self.tenants, instance, &[])
    }

    /// Like `start_another_loader`, with more flags.
    pub fn start_loader_with(&self, instance: &str, extra: &[&str]) -> Server {
        self.loader_args.start(&self.data, &self.tenants, instance, extra)
    }

    pub fn warehouse(&self) -> Http {
        Http::new(&HttpConfig {
            url: self.front.url(),
            user: Some(USER.into()),
            password: Some(PASSWORD.into()),
            compression: true,
        })
    }

    /// Waits until `events_raw` of acme holds at least `at_least` rows and stopped growing.
    pub async fn drained(&self, at_least: usize) {
        let wh = self.warehouse();
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = None;
        loop {
            let n = count(&wh, "SELECT count() AS n FROM sightline_acme.events_raw").await;
            if n as usize >= at_least && last == Some(n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the loader did not catch up: {n} rows, at least {at_least} expected"
            );
            last = Some(n);
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
    }

    /// Every check of the exactly-once contract over what the load recorded:
    /// acknowledged requests stored once, failed ones whole or not at all, `events` and the
    /// rollups holding exactly what `events_raw` holds.
    pub async fn assert_exactly_once(&self, load: &LoadReport) {
        self.drained(load.acked_ids()).await;
        let wh = self.warehouse();
        let stored = distinct_ids(&wh, "SELECT toString(event_id) AS id FROM sightline_acme.events_raw").await;
        let missing = load.acked.iter().flatten().filter(|id| !stored.contains(*id)).count();
        assert_eq!(missing, 0, "acknowledged events missing from events_raw");
        for request in &load.failed {
            let present = request.iter().filter(|id| stored.contains(*id)).count();
            assert!(
                present == 0 || present == request.len(),
                "a failed request is half stored: {present} of {}",
                request.len()
            );
        }
        let known: usize = load.acked.len() * 10 + load.failed.len() * 10;
        assert!(stored.len() <= known, "rows nobody sent: {} > {known}", stored.len());
        let raw = count(&wh, "SELECT count() AS n FROM sightline_acme.events_raw").await;
        let processed = count(&wh, "SELECT uniqExact(event_id) AS n FROM sightline_acme.events").await;
        let processed_rows = count(&wh, "SELECT count() AS n FROM sightline_acme.events").await;
        let orphans = count(
            &wh,
            "SELECT count() AS n FROM sightline_acme.events_raw WHERE event_id NOT IN (SELECT event_id FROM sightline_acme.events)",
        )
        .await;
        let rolled = count(
            &wh,
            "SELECT toUInt64(sum(events)) AS n FROM sightline_acme.rollup_site_15m",
        )
        .await;
        assert_eq!(
            (processed, processed_rows, orphans, rolled),
            (raw, raw, 0, raw),
            "events and rollups hold exactly what events_raw holds"
        );
    }
}

/// Clients posting batches of 10 events with their own ids to shop.example.com, as fast as
/// answers come, to whatever address `url` holds (a collector or standalone; a restarted
/// one has a new port). Each request comes from another visitor (its own address), so the
/// load reaches every partition of the topic whatever the day (the visitor key is keyed by
/// the UTC day) and however the broker spreads keys: a test that needs a loader to receive
/// messages must not depend on which partitions that loader was assigned.
pub struct Load {
    pub url: Arc<RwLock<String>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    acked: Arc<Mutex<Vec<Vec<String>>>>,
    failed: Arc<Mutex<Vec<Vec<String>>>>,
}

/// What the load saw: the ids of each acknowledged request and of each failed one.
pub struct LoadReport {
    pub acked: Vec<Vec<String>>,
    pub failed: Vec<Vec<String>>,
}

impl LoadReport {
    pub fn acked_ids(&self) -> usize {
        self.acked.iter().map(Vec::len).sum()
    }
}

/// The address of request `i` of worker `worker`: 250 visitors per worker, in turn.
fn visitor_address(worker: usize, i: usize) -> String {
    format!("198.18.{}.{}", worker % 256, i % 250 + 1)
}

impl Load {
    pub fn start(collector: &Server, workers: usize) -> Load {
        let url = Arc::new(RwLock::new(collector.url("/v1/collect")));
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
        let failed: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
        let c = client();
        let write = write_token("acme", "shop.example.com");
        let tasks = (0..workers)
            .map(|worker| {
                let (c, write, url, stop, acked, failed) = (
                    c.clone(),
                    write.clone(),
                    url.clone(),
                    stop.clone(),
                    acked.clone(),
                    failed.clone(),
                );
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let ids: Vec<String> = (0..10).map(|_| uuid::Uuid::new_v4().to_string()).collect();
                        let events: Vec<Value> = ids
                            .iter()
                            .map(|id| json!({"id": id, "url": format!("https://shop.example.com/w{worker}/{i}")}))
                            .collect();
                        let target = url.read().unwrap().clone();
                        let sent = c
                            .post(target)
                            .bearer_auth(&write)
                            .header("User-Agent", CHROME_MAC)
                            .header("X-Forwarded-For", visitor_address(worker, i))
                            .timeout(Duration::from_secs(5))
                            .json(&json!({"events": events}))
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status() == 202 => acked.lock().unwrap().push(ids),
                            _ => {
                                failed.lock().unwrap().push(ids);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            url,
            stop,
            tasks,
            acked,
            failed,
        }
    }

    /// Points the clients at a (restarted) collector.
    pub fn retarget(&self, collector: &Server) {
        *self.url.write().unwrap() = collector.url("/v1/collect");
    }

    pub fn acked_so_far(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    pub async fn finish(self) -> LoadReport {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let acked = std::mem::take(&mut *self.acked.lock().unwrap());
        let failed = std::mem::take(&mut *self.failed.lock().unwrap());
        LoadReport { acked, failed }
    }
}
