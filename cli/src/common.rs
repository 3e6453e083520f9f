//! What the serving subcommands share: their runtime, tenants and secret, how clients are
//! seen (proxies, country), and how a process is asked to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::Router;
use clap::Args as ClapArgs;
use ipnet::IpNet;
use sightline_core::ddl::Form;
use sightline_core::geo::Geo;
use sightline_core::processor::Current;
use sightline_core::secret::MasterSecret;
use sightline_core::spec::{load_tenants, Tenant};
use sightline_core::warehouse::embedded::Embedded;
use sightline_core::warehouse::http::{Http, HttpConfig};
use sightline_core::warehouse::{replay, tiers, Warehouse};
use sightline_ingest::collector::client::{ClientConfig, ForwardingHeader};
use sightline_ingest::metrics::{ops_router, MetricsRegistry, Readiness};
use sightline_query::{AdmissionConfig, Limits, QueryConfig};

pub use crate::serve::ConnectionArgs;
use std::sync::Arc;
use std::time::Duration;

/// Where a serving subcommand reads its tenants and secret and where it listens.
#[derive(ClapArgs, Clone)]
pub struct ServeArgs {
    /// AnalyticsTenant YAML file or directory.
    #[arg(long, default_value = "manifests/examples")]
    pub tenants: PathBuf,
    /// Where data lives: the secret file (unless SIGHTLINE_SECRET is set) and, for
    /// standalone, the embedded engine's files.
    #[arg(long, default_value = "./data")]
    pub data: PathBuf,
    /// Address for the HTTP API (the public port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    #[command(flatten)]
    pub connections: ConnectionArgs,
    #[command(flatten)]
    pub ops: OpsArgs,
    /// How often the tenants files are checked for changes, in milliseconds (a change is
    /// applied without a restart).
    #[arg(long, default_value_t = 5000)]
    pub reload_interval_ms: u64,
}

/// Binds `addr`; the error names `flag`.
async fn bind(flag: &str, addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{flag} {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    Ok((listener, bound))
}

impl ServeArgs {
    /// Binds `--listen`; the error names the flag.
    pub async fn bind(&self) -> Result<(tokio::net::TcpListener, SocketAddr), String> {
        bind("--listen", self.listen).await
    }

    /// Serves the public API on `listener` within `--max-connections` and the connection
    /// timeouts, until `shutdown`.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        app: Router,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), String> {
        crate::serve::serve(
            listener,
            app.layer(crate::logging::trace_layer()),
            self.connections.limits(),
            shutdown,
        )
        .await
    }

    /// The tenants from their YAML and the master secret, created when absent (standalone).
    pub fn tenants_and_secret(&self) -> Result<(Vec<Tenant>, MasterSecret), String> {
        tenants_and_secret(&self.tenants, &self.data)
    }

    /// The tenants and the master secret, which must exist (the distributed roles share the
    /// tenant's secret; one made up here would differ per pod).
    pub fn tenants_and_existing_secret(&self) -> Result<(Vec<Tenant>, MasterSecret), String> {
        let tenants = load_tenants(&self.tenants).map_err(|e| e.to_string())?;
        let secret = MasterSecret::load(&self.data).map_err(|e| e.to_string())?;
        Ok((tenants, secret))
    }

    /// Reloads the tenants files into `registry` when they change, until `stop`.
    pub fn reload_into(
        &self,
        registry: Arc<sightline_core::registry::Registry>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        crate::reload::spawn(self.tenants.clone(), self.reload_interval(), stop, move |tenants| {
            registry.replace(tenants)
        })
    }

    pub fn reload_interval(&self) -> Duration {
        reload_interval(self.reload_interval_ms)
    }
}

/// `--reload-interval-ms`, at least 100 ms.
pub fn reload_interval(ms: u64) -> Duration {
    Duration::from_millis(ms.max(100))
}

#[derive(ClapArgs, Clone)]
pub struct ClientArgs {
    /// Proxy networks whose forwarding and country headers are trusted (repeatable), e.g.
    /// 10.0.0.0/8. From any other peer those headers are ignored.
    #[arg(long = "trusted-proxy")]
    pub trusted_proxies: Vec<IpNet>,
    /// The header the trusted proxies write the client address into: x-forwarded-for,
    /// forwarded (RFC 7239) or x-real-ip (only if the nearest proxy always overwrites it).
    #[arg(long, default_value = "x-forwarded-for")]
    pub client_ip_header: ForwardingHeader,
    /// Header a trusted CDN sets with the visitor's country, e.g. CF-IPCountry (read only
    /// from --trusted-proxy peers).
    #[arg(long)]
    pub country_header: Option<String>,
    /// A GeoIP2/GeoLite2 country or city database (MaxMind format).
    #[arg(long)]
    pub geoip: Option<PathBuf>,
}

impl ClientArgs {
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            trusted_proxies: self.trusted_proxies.clone(),
            forwarding_header: self.client_ip_header,
            country_header: self.country_header.clone(),
        }
    }

    pub fn geo(&self) -> Result<Geo, String> {
        match &self.geoip {
            Some(path) => Geo::open(path).map_err(|e| e.to_string()),
            None => Ok(Geo::none()),
        }
    }
}

/// Prints the line scripts and tests wait for, `sightline <role> listening on http://ADDR`,
/// at once (stdout may be a pipe).
pub fn announce(role: &str, addr: SocketAddr, serves: &str) {
    use std::io::Write;
    println!("sightline {role} listening on http://{addr}{serves}");
    let _ = std::io::stdout().flush();
}

/// Where the operations endpoints are served: its own listener, so that probes and scrapes
/// never queue behind clients on the public port (nor are reachable from it).
#[derive(ClapArgs, Clone)]
pub struct OpsArgs {
    /// Address for /metrics (Prometheus text), /healthz and /readyz.
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub ops_listen: SocketAddr,
}

/// The operations listener of a running role.
pub struct Ops {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What `/metrics` serves; a role registers its metrics here.
    pub metrics: MetricsRegistry,
    /// What `/readyz` answers (not ready until the role sets it).
    pub readiness: Readiness,
    server: tokio::task::JoinHandle<Result<(), String>>,
}

impl OpsArgs {
    /// Binds `--ops-listen` and serves /metrics, /healthz and /readyz on it at once, and
    /// prints `sightline <role> operations on http://ADDR (/metrics, /healthz, /readyz)`.
    pub async fn start(&self, role: &str) -> Result<Ops, String> {
        let (listener, addr) = bind("--ops-listen", self.ops_listen).await?;
        let metrics = MetricsRegistry::default();
        let readiness = Readiness::default();
        let app = ops_router(metrics.clone(), readiness.clone()).layer(crate::logging::trace_layer());
        let server = tokio::spawn(crate::serve::serve(
            listener,
            app,
            crate::serve::ConnectionLimits::ops(),
            std::future::pending(),
        ));
        {
            use std::io::Write;
            println!("sightline {role} operations on http://{addr} (/metrics, /healthz, /readyz)");
            let _ = std::io::stdout().flush();
        }
        Ok(Ops {
            addr,
            metrics,
            readiness,
            server,
        })
    }
}

impl Ops {
    /// Stops serving (at the very end of the process).
    pub fn stop(self) {
        self.server.abort();
    }
}

/// Resolves on SIGTERM or Ctrl-C; servers then finish in-flight requests.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested: finishing in-flight requests");
}

/// A flag that turns true on SIGTERM or Ctrl-C, for roles that must stop somewhere other than
/// their HTTP server too (waiting for the warehouse, the loaders); the sender lets a role
/// raise it itself.
pub fn stop_on_signal() -> (tokio::sync::watch::Sender<bool>, tokio::sync::watch::Receiver<bool>) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let on_signal = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        on_signal.send_replace(true);
    });
    (stop, stopped)
}

/// Runs a subcommand's async body on a multi-threaded runtime.
pub fn block_on(body: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?
        .block_on(body)
}

/// The tenants from their YAML and the master secret (`$SIGHTLINE_SECRET` or `<data>/secret.key`).
pub fn tenants_and_secret(tenants: &Path, data: &Path) -> Result<(Vec<Tenant>, MasterSecret), String> {
    let tenants = load_tenants(tenants).map_err(|e| e.to_string())?;
    let secret = MasterSecret::load_or_create(data).map_err(|e| e.to_string())?;
    Ok((tenants, secret))
}

/// Which warehouse a role talks to: a ClickHouse server over HTTP when `--clickhouse-url`
/// is given, else the embedded engine under `--data`.
#[derive(ClapArgs, Clone)]
pub struct WarehouseArgs {
    /// ClickHouse HTTP(S) endpoint, e.g. http://clickhouse:8123.
    #[arg(long, env = "SIGHTLINE_CLICKHOUSE_URL")]
    pub clickhouse_url: Option<String>,
    #[arg(long, env = "SIGHTLINE_CLICKHOUSE_USER")]
    pub clickhouse_user: Option<String>,
    #[arg(long, env = "SIGHTLINE_CLICKHOUSE_PASSWORD", hide_env_values = true)]
    pub clickhouse_password: Option<String>,
    /// Send and receive bodies uncompressed (LZ4 is on by default).
    #[arg(long)]
    pub clickhouse_no_compression: bool,
    /// Reading connections to the embedded engine.
    #[arg(long, default_value_t = 4)]
    pub readers: usize,
    /// `apply`: this role migrates the tenants' schemas at start (standalone, a loader
    /// outside a cluster). `check`: it only waits (not ready) until the database is at the
    /// version this build writes; the operator is then the single migrator, so a rolling
    /// upgrade never runs two.
    #[arg(long, value_enum)]
    pub migrations: Option<Migrations>,
}

/// Who migrates the schema (see `--migrations`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Migrations {
    Apply,
    Check,
}

/// The schema version this build writes: the last of core's migrations.
pub fn required_schema_version(tenant: &Tenant) -> u32 {
    sightline_core::schema::migrations(tenant)
        .last()
        .map(|m| m.version)
        .unwrap_or(0)
}

/// The version a tenant's database is at (0 when it has no schema yet).
pub async fn schema_version(warehouse: &dyn Warehouse, tenant: &Tenant) -> Result<u32, sightline_core::Error> {
    let db = tenant.database();
    let exists = warehouse
        .select(
            "SELECT count() AS n FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            &sightline_core::warehouse::Params::new()
                .bind("db", db.as_str())
                .bind("t", sightline_core::schema::MIGRATIONS_TABLE),
        )
        .await?;
    if exists.first().and_then(|r| r["n"].as_u64()).unwrap_or(0) == 0 {
        return Ok(0);
    }
    let rows = warehouse
        .select(
            &format!(
                "SELECT max(version) AS v FROM {db}.{}",
                sightline_core::schema::MIGRATIONS_TABLE
            ),
            &sightline_core::warehouse::Params::new(),
        )
        .await?;
    Ok(rows.first().and_then(|r| r["v"].as_u64()).unwrap_or(0) as u32)
}

impl WarehouseArgs {
    /// A distributed role (loader, query) needs a ClickHouse server that every role shares:
    /// the embedded engine belongs to one process (a loader and a query role cannot open one
    /// data directory together, and two loaders on two directories write two warehouses).
    /// Without `--clickhouse-url` it refuses to start, unless `--embedded-engine` says that
    /// this process is the only one using its data directory.
    pub fn require_server(&self, role: &str, embedded_engine: bool) -> Result<(), String> {
        if self.clickhouse_url.is_some() || embedded_engine {
            return Ok(());
        }
        Err(format!(
            "{role}: no --clickhouse-url (or SIGHTLINE_CLICKHOUSE_URL). The distributed roles share one \
             ClickHouse server; the embedded engine under --data belongs to one process (a loader and a \
             query role cannot open it together, and two loaders on two data directories write two \
             warehouses). Run `sightline standalone` for one process, give a ClickHouse server \
             (README: \"Trying the distributed path on one machine\"), or pass --embedded-engine if this \
             {role} is the only process using --data"
        ))
    }

    /// Where this role's warehouse is, for people: the URL or the engine's directory.
    pub fn describe_target(&self, data: &Path) -> String {
        match &self.clickhouse_url {
            Some(url) => url.clone(),
            None => format!("embedded engine at {}", data.join("engine").display()),
        }
    }

    pub async fn open(&self, data: &Path) -> Result<Arc<dyn Warehouse>, String> {
        self.connect(data).await.map_err(|e| self.describe(e))
    }

    /// Opens the warehouse and applies the tenants' schemas. A long-running role calls this
    /// with `stop`: it then waits out a warehouse outage (each failed attempt logged, then
    /// retried with backoff) instead of exiting, since the orchestrator's restart backoff
    /// would delay it long after the warehouse came back; errors that waiting cannot heal
    /// (credentials, a statement refused) still end it. `None` when stopped while waiting.
    pub async fn open_and_migrate(
        &self,
        data: &Path,
        tenants: &[Tenant],
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Option<Arc<dyn Warehouse>>, String> {
        self.open_waiting(data, tenants, true, stop).await
    }

    /// Like `open_and_migrate` for a role that only reads (query): it migrates and moves
    /// nothing; with `--migrations check` it waits until the tenants' schemas are at the
    /// version this build reads.
    pub async fn open_for_reading(
        &self,
        data: &Path,
        tenants: &[Tenant],
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Option<Arc<dyn Warehouse>>, String> {
        let checked: &[Tenant] = if self.migrations == Some(Migrations::Check) {
            tenants
        } else {
            &[]
        };
        self.open_waiting(data, checked, false, stop).await
    }

    async fn open_waiting(
        &self,
        data: &Path,
        tenants: &[Tenant],
        writer: bool,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<Option<Arc<dyn Warehouse>>, String> {
        let mut backoff = std::time::Duration::from_millis(500);
        loop {
            let attempt = async {
                let warehouse = self.connect(data).await?;
                for tenant in tenants {
                    if self.migrations == Some(Migrations::Check) || !writer {
                        let (at, needed) = (
                            schema_version(warehouse.as_ref(), tenant).await?,
                            required_schema_version(tenant),
                        );
                        // Migrations add; a newer schema still has every column this
                        // build writes (an old pod during an upgrade keeps working).
                        if at < needed {
                            tracing::warn!(tenant = %tenant.name, at, needed, "schema older than this build writes; waiting for the operator to migrate");
                            return Ok(None);
                        }
                        tracing::info!(tenant = %tenant.name, version = at, "schema ready");
                    } else {
                        let applied = sightline_core::warehouse::ops::apply_schema(warehouse.as_ref(), tenant).await?;
                        tracing::info!(tenant = %tenant.name, from = applied.from, to = applied.to, "schema ready");
                    }
                    if writer {
                        migrate_recent_days(warehouse.as_ref(), tenant).await?;
                    }
                }
                Ok::<_, sightline_core::Error>(Some(warehouse))
            };
            match attempt.await {
                Ok(Some(warehouse)) => return Ok(Some(warehouse)),
                Ok(None) => {}
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %self.describe(e), retry_in_ms = backoff.as_millis() as u64, "warehouse not available yet; waiting");
                }
                Err(e) => return Err(self.describe(e)),
            }
            tokio::select! {
                _ = stop.changed() => return Ok(None),
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
        }
    }

    async fn connect(&self, data: &Path) -> Result<Arc<dyn Warehouse>, sightline_core::Error> {
        match &self.clickhouse_url {
            Some(url) => {
                let http = Http::new(&HttpConfig {
                    url: url.clone(),
                    user: self.clickhouse_user.clone(),
                    password: self.clickhouse_password.clone(),
                    compression: !self.clickhouse_no_compression,
                });
                let version = http.server_version().await?;
                tracing::info!(%url, %version, "ClickHouse server reachable");
                Ok(Arc::new(http))
            }
            None => {
                let engine = Embedded::open(&data.join("engine"), self.readers)?;
                tracing::info!(version = %engine.engine_version(), path = %engine.path().display(), "embedded engine open");
                Ok(Arc::new(engine))
            }
        }
    }

    /// An error with the warehouse it came from.
    fn describe(&self, e: sightline_core::Error) -> String {
        match &self.clickhouse_url {
            Some(url) => format!("--clickhouse-url {url}: {e}"),
            None => e.to_string(),
        }
    }
}

/// How the query API answers: cache, limits, rates.
#[derive(ClapArgs, Clone)]
pub struct QueryArgs {
    /// Memory for cached query answers, in MiB (answers are weighed as they are held).
    #[arg(long, default_value_t = 64)]
    pub query_cache_mib: u64,
    /// A query running longer than this many seconds is stopped with an error.
    #[arg(long, default_value_t = 10)]
    pub query_timeout_secs: u64,
    /// A query that would read more rows than this is stopped with an error.
    #[arg(long, default_value_t = 2_000_000_000)]
    pub query_max_rows: u64,
    /// Sustained queries per second per read token ...
    #[arg(long, default_value_t = 20)]
    pub queries_per_second_per_token: u32,
    /// ... and the burst above it.
    #[arg(long, default_value_t = 100)]
    pub query_burst_per_token: u32,
    /// Queries of one read token running in the warehouse at once ...
    #[arg(long, default_value_t = 2)]
    pub query_concurrency_per_token: usize,
    /// ... and of one tenant (all its tokens). On the embedded engine keep it below
    /// --readers, so that other tenants always find a free reader.
    #[arg(long, default_value_t = 2)]
    pub query_concurrency_per_tenant: usize,
    /// Queries that may wait for a slot, per token and per tenant, beyond those running;
    /// more are refused at once (429 too_many_queries).
    #[arg(long, default_value_t = 8)]
    pub query_queue: usize,
    /// Engine threads one statement may use (0: one per core). With N cores, concurrency
    /// per tenant times this below N leaves cores to other tenants.
    #[arg(long, default_value_t = 1)]
    pub query_max_threads: u32,
    /// How often the realtime stream sends an update, in milliseconds (each update costs
    /// its token one query of its rate).
    #[arg(long, default_value_t = 5000)]
    pub realtime_interval_ms: u64,
    /// Realtime streams open at once per read token ...
    #[arg(long, default_value_t = 4)]
    pub realtime_streams_per_token: usize,
    /// ... and per tenant.
    #[arg(long, default_value_t = 64)]
    pub realtime_streams_per_tenant: usize,
}

impl QueryArgs {
    pub fn config(&self) -> QueryConfig {
        QueryConfig {
            cache_bytes: self.query_cache_mib * 1024 * 1024,
            limits: Limits {
                timeout_secs: self.query_timeout_secs.max(1),
                max_rows_to_read: self.query_max_rows.max(1),
                max_threads: self.query_max_threads,
            },
            queries_per_second_per_token: self.queries_per_second_per_token.max(1),
            burst_per_token: self.query_burst_per_token.max(1),
            admission: AdmissionConfig {
                per_token: self.query_concurrency_per_token.max(1),
                per_tenant: self.query_concurrency_per_tenant.max(1),
                queue: self.query_queue,
            },
            realtime_interval: Duration::from_millis(self.realtime_interval_ms.max(100)),
            streams_per_token: self.realtime_streams_per_token.max(1),
            streams_per_tenant: self.realtime_streams_per_tenant.max(1),
        }
    }
}

/// Applies (creates or migrates) every tenant's schema, and moves the days still open to
/// inserts onto the rollup tiers (run before the role stores anything).
pub async fn apply_schemas(warehouse: &dyn Warehouse, tenants: &[Tenant]) -> Result<(), String> {
    for tenant in tenants {
        let applied = sightline_core::warehouse::ops::apply_schema(warehouse, tenant)
            .await
            .map_err(|e| format!("tenant {}: {e}", tenant.name))?;
        tracing::info!(tenant = %tenant.name, from = applied.from, to = applied.to, "schema ready");
        migrate_recent_days(warehouse, tenant)
            .await
            .map_err(|e| format!("tenant {}: {e}", tenant.name))?;
    }
    Ok(())
}

/// The first step of a database's move from the hourly layout to the tiers: the days that
/// still take inserts, swapped while this role does not write yet (`tiers`).
async fn migrate_recent_days(warehouse: &dyn Warehouse, tenant: &Tenant) -> Result<(), sightline_core::Error> {
    let moved = tiers::migrate_recent_days(warehouse, tenant, chrono::Utc::now()).await?;
    if !moved.is_empty() {
        tracing::info!(tenant = %tenant.name, days = moved.len(), "recent days moved onto the rollup tiers");
    }
    Ok(())
}

/// How often the writing roles seal days into the daily tier.
const SEAL_EVERY: Duration = Duration::from_secs(15 * 60);

/// The storage work of a role that writes (standalone, loader), in the background until
/// `stop`: each tenant's older days moved onto the tiers (once, resumable), then every 15
/// minutes the days sealed since are replayed where they need it and enter the daily tier
/// (`replay::seal`). Both are idempotent: two processes doing it at once
/// only repeat each other's work. Failures are logged and tried again at the next round.
pub fn storage_maintenance(
    warehouse: Arc<dyn Warehouse>,
    tenants: Vec<Tenant>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    // On a ClickHouse cluster the tiers' swaps would have to run per shard on the local
    // tables, which they do not yet (docs/storage.md, "On a ClickHouse cluster"): such a
    // tenant's queries read the quarter-hour tier, and nothing is swapped.
    let (clustered, tenants): (Vec<Tenant>, Vec<Tenant>) = tenants
        .into_iter()
        .partition(|t| Form::for_backend(t, warehouse.backend()).is_ok_and(|f| f.cluster().is_some()));
    for tenant in &clustered {
        tracing::warn!(tenant = %tenant.name, "ClickHouse cluster: the daily tier is not built here yet; queries read the quarter-hour tier");
    }
    tokio::spawn(async move {
        loop {
            for tenant in &tenants {
                let now = chrono::Utc::now();
                let work = async {
                    tiers::backfill(warehouse.as_ref(), tenant, now).await?;
                    // Days that may differ from a replay are replayed as they seal.
                    replay::seal::seal(warehouse.as_ref(), tenant, Arc::new(Current), now).await
                };
                let outcome = tokio::select! {
                    outcome = work => outcome,
                    _ = stop.changed() => return,
                };
                if let Err(e) = outcome {
                    tracing::warn!(tenant = %tenant.name, error = %e, "storage maintenance failed; trying again later");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(SEAL_EVERY) => {}
                _ = stop.changed() => return,
            }
        }
    })
}

/// How often the writing roles read which processing identities made each tenant's days.
#[derive(ClapArgs, Clone)]
pub struct ProcessingMetricsArgs {
    /// How often /metrics' days per processing identity (`sightline_day_processing_identity`)
    /// are brought up to date, in milliseconds (at least 100). Each refresh reads the parts
    /// list and only the days whose parts changed since.
    #[arg(long, default_value_t = 60_000)]
    pub processing_metrics_interval_ms: u64,
}

/// In the background until `stop`: every `--processing-metrics-interval-ms`, each tenant's
/// days per processing identity (`warehouse::processing`) into `metrics`. Tenants on a
/// ClickHouse cluster are left out (their `events` is a `Distributed` table: the parts are
/// on the shards). Failures are logged and tried again at the next round.
pub fn processing_metrics(
    warehouse: Arc<dyn Warehouse>,
    tenants: Vec<Tenant>,
    metrics: sightline_ingest::metrics::ProcessingMetrics,
    args: &ProcessingMetricsArgs,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let every = Duration::from_millis(args.processing_metrics_interval_ms.max(100));
    let mut tenants: Vec<(Tenant, sightline_core::warehouse::processing::DayIdentities)> = tenants
        .into_iter()
        .filter(|t| {
            let clustered = Form::for_backend(t, warehouse.backend()).is_ok_and(|f| f.cluster().is_some());
            if clustered {
                tracing::info!(tenant = %t.name, "ClickHouse cluster: days per processing identity are not shown on /metrics");
            }
            !clustered
        })
        .map(|t| (t, Default::default()))
        .collect();
    tokio::spawn(async move {
        loop {
            for (tenant, days) in &mut tenants {
                let db = tenant.database();
                let refreshed = tokio::select! {
                    refreshed = days.refresh(warehouse.as_ref(), &db) => refreshed,
                    _ = stop.changed() => return,
                };
                match refreshed {
                    Ok(_) => metrics.record(&tenant.name, &days.summary()),
                    Err(e) => {
                        tracing::warn!(tenant = %tenant.name, error = %e, "days per processing identity not read; trying again later")
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => return,
            }
        }
    })
}
