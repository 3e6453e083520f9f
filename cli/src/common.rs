//! What the serving subcommands share: their runtime, tenants and secret, how clients are
//! seen (proxies, country), and how a process is asked to stop.

use std::future::Future;
use std::path::{Path, PathBuf};

use clap::Args as ClapArgs;
use ipnet::IpNet;
use sightline_core::geo::Geo;
use sightline_core::secret::MasterSecret;
use sightline_core::spec::{load_tenants, Tenant};
use sightline_ingest::collector::client::ClientConfig;

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
    /// Address for the HTTP API.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
}

impl ServeArgs {
    /// The tenants from their YAML and the master secret.
    pub fn tenants_and_secret(&self) -> Result<(Vec<Tenant>, MasterSecret), String> {
        tenants_and_secret(&self.tenants, &self.data)
    }
}

#[derive(ClapArgs, Clone)]
pub struct ClientArgs {
    /// Proxy networks whose X-Forwarded-For is trusted (repeatable), e.g. 10.0.0.0/8.
    #[arg(long = "trusted-proxy")]
    pub trusted_proxies: Vec<IpNet>,
    /// Header a trusted CDN sets with the visitor's country, e.g. CF-IPCountry.
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
