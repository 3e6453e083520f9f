//! `sightline operator`: runs the operator, the AnalyticsTenant and Reprocess controllers (in
//! a cluster, or against the kubeconfig's cluster); `sightline operator render` prints what it would apply; `sightline
//! crdgen` writes the CRDs to crds/ and the chart's crds/.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Subcommand};
use ipnet::IpNet;
use sightline_core::spec::CredentialsSecretRef;
use sightline_ingest::kafka::Security;
use sightline_operator::leader::LeaseConfig;
use sightline_operator::serve::{self, RunConfig};
use sightline_operator::validate::{ClientCertificateSecret, OperatorConfig, SecretFile};

use crate::common::{block_on, stop_on_signal};

#[derive(ClapArgs)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<OperatorCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum OperatorCommand {
    /// Print every object the operator would apply for the tenants of a file, as YAML.
    Render(RenderArgs),
}

/// What the workloads and the operator's own clients are told.
#[derive(ClapArgs, Clone)]
struct WorkloadArgs {
    /// Namespace of the workloads of tenants that do not name one (and of the lease): the
    /// operator's own, from the downward API.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: Option<String>,
    /// The `sightline` image the workloads run.
    #[arg(long, env = "SIGHTLINE_IMAGE", default_value = concat!("ghcr.io/sightline/sightline:", env!("CARGO_PKG_VERSION")))]
    image: String,
    /// Kafka bootstrap servers.
    #[arg(long, env = "SIGHTLINE_KAFKA_BROKERS", default_value = "kafka:9092")]
    brokers: String,
    /// A Secret (in the workloads' namespace) with SASL `username` and `password` for the
    /// workloads; required with a sasl_* protocol. The operator's own TLS and SASL settings
    /// (and the workloads' protocol and mechanism) come from SIGHTLINE_KAFKA_*.
    #[arg(long)]
    kafka_credentials_secret: Option<String>,
    /// A Secret (in the workloads' namespace) with the CA certificates (PEM) that sign the
    /// brokers' certificates, mounted into the collector and loader pods (TLS only; without
    /// it they trust the image's CA certificates). A Strimzi cluster's is
    /// `<cluster>-cluster-ca-cert`.
    #[arg(long)]
    kafka_ca_secret: Option<String>,
    /// The key of --kafka-ca-secret that holds the certificates.
    #[arg(long, default_value = "ca.crt")]
    kafka_ca_secret_certificate: String,
    /// A Secret (in the workloads' namespace) with the workloads' client certificate and
    /// unencrypted key (PEM), for brokers that authenticate clients by TLS (mTLS): a Strimzi
    /// KafkaUser's Secret (`user.crt`, `user.key`) or a kubernetes.io/tls one (`tls.crt`,
    /// `tls.key`: set the two keys below).
    #[arg(long)]
    kafka_client_secret: Option<String>,
    /// The key of --kafka-client-secret that holds the certificate.
    #[arg(long, default_value = "user.crt")]
    kafka_client_secret_certificate: String,
    /// The key of --kafka-client-secret that holds the private key.
    #[arg(long, default_value = "user.key")]
    kafka_client_secret_key: String,
    /// ClickHouse HTTP(S) endpoint of tenants that do not name one.
    #[arg(long, env = "SIGHTLINE_CLICKHOUSE_URL", default_value = "http://clickhouse:8123")]
    clickhouse_url: String,
    /// A Secret (in the workloads' namespace) with `username` and `password` for ClickHouse,
    /// for tenants that do not name one.
    #[arg(long)]
    clickhouse_credentials_secret: Option<String>,
    /// A proxy network in front of every tenant's collector, e.g. the ingress controller's
    /// pods at 10.0.0.0/8 (repeatable): collectors trust its X-Forwarded-For for the
    /// visitor's address (their --trusted-proxy).
    #[arg(long = "collector-trusted-proxy")]
    collector_trusted_proxies: Vec<IpNet>,
}

impl WorkloadArgs {
    /// The operator's settings; its own TLS/SASL settings from the environment (a bad one,
    /// or workload Secrets that do not fit the protocol, is an error naming it).
    fn config(&self, namespace: String) -> Result<OperatorConfig, String> {
        let config = OperatorConfig {
            namespace,
            image: self.image.clone(),
            brokers: self.brokers.clone(),
            kafka_security: Security::from_env().map_err(|e| e.to_string())?,
            kafka_credentials_secret: self.kafka_credentials_secret.clone(),
            kafka_ca_secret: self.kafka_ca_secret.clone().map(|name| SecretFile {
                name,
                key: self.kafka_ca_secret_certificate.clone(),
            }),
            kafka_client_secret: self.kafka_client_secret.clone().map(|name| ClientCertificateSecret {
                name,
                certificate: self.kafka_client_secret_certificate.clone(),
                key: self.kafka_client_secret_key.clone(),
            }),
            clickhouse_url: Some(self.clickhouse_url.clone()),
            clickhouse_credentials: self
                .clickhouse_credentials_secret
                .clone()
                .map(|name| CredentialsSecretRef {
                    name,
                    user_key: "username".into(),
                    password_key: "password".into(),
                }),
            collector_trusted_proxies: self.collector_trusted_proxies.iter().map(IpNet::to_string).collect(),
        };
        config.check_kafka()?;
        Ok(config)
    }
}

#[derive(ClapArgs, Clone)]
struct RunArgs {
    #[command(flatten)]
    workloads: WorkloadArgs,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    listen: std::net::SocketAddr,
    /// Seconds between reconciles of a healthy tenant (drift in topics and tables, which no
    /// watch sees), from 10 to 300.
    #[arg(long, default_value_t = 300)]
    resync_secs: u64,
    /// Apply the CRDs this operator embeds at start (server-side apply; skipped when the
    /// cluster's were applied by a newer operator, logged and skipped without permission).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    manage_crds: bool,
    /// Seconds a Kafka admin request may take.
    #[arg(long, default_value_t = 15)]
    kafka_timeout_secs: u64,
    /// The Lease two replicas compete for.
    #[arg(long, default_value = "sightline-operator")]
    lease_name: String,
    /// This replica's name in the lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds the lease holds without renewal.
    #[arg(long, default_value_t = 15)]
    lease_duration_secs: u64,
    /// Finished Reprocesses (Succeeded, Failed, Cancelled) kept per tenant; older ones are
    /// deleted, the oldest first.
    #[arg(long, default_value_t = sightline_operator::reprocess::history::DEFAULT_HISTORY_LIMIT)]
    reprocess_history_limit: usize,
}

#[derive(ClapArgs)]
struct RenderArgs {
    /// The AnalyticsTenant YAML file.
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    #[command(flatten)]
    workloads: WorkloadArgs,
}

pub fn run(args: Args) -> Result<(), String> {
    match args.command {
        Some(OperatorCommand::Render(render)) => {
            let text = std::fs::read_to_string(&render.file).map_err(|e| format!("{}: {e}", render.file.display()))?;
            let namespace = render.workloads.namespace.clone().unwrap_or_else(|| "default".into());
            let config = render.workloads.config(namespace)?;
            print!(
                "{}",
                sightline_operator::render::render(&text, &render.file.display().to_string(), &config)?
            );
            Ok(())
        }
        None => block_on(operate(args.run)),
    }
}

async fn operate(args: RunArgs) -> Result<(), String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("Kubernetes client (in-cluster or kubeconfig): {e}"))?;
    let namespace = args
        .workloads
        .namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_string());
    let identity = args.identity.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME").unwrap_or_else(|_| format!("sightline-operator-{}", std::process::id()))
    });
    let config = RunConfig {
        operator: args.workloads.config(namespace.clone())?,
        lease: LeaseConfig {
            name: args.lease_name.clone(),
            namespace,
            identity,
            duration_secs: args.lease_duration_secs.max(3),
            grace_secs: (args.lease_duration_secs.max(3) / 3).max(1),
        },
        resync: Duration::from_secs(args.resync_secs.clamp(10, 300)),
        manage_crds: args.manage_crds,
        kafka_timeout: Duration::from_secs(args.kafka_timeout_secs.max(1)),
        reprocess_history_limit: args.reprocess_history_limit,
    };
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("--listen {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    {
        use std::io::Write;
        println!("{}", serve::describe(addr));
        let _ = std::io::stdout().flush();
    }
    let (_, stopped) = stop_on_signal();
    serve::run(client, config, listener, stopped).await?;
    tracing::info!("stopped");
    Ok(())
}

/// `sightline crdgen`: writes every CRD the operator embeds (one file each) to crds/ and to
/// the Helm chart's crds/, so the chart installs exactly the generated files (a test fails
/// when the two directories differ).
#[derive(ClapArgs)]
pub struct CrdgenArgs {
    /// Directories the CRD files go to (repeatable).
    #[arg(long, default_values = ["crds", "charts/sightline/crds"])]
    out: Vec<PathBuf>,
}

pub fn crdgen(args: CrdgenArgs) -> Result<(), String> {
    for dir in &args.out {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (file, crd) in sightline_operator::crds::embedded() {
            let path = dir.join(file);
            std::fs::write(&path, sightline_operator::crds::to_yaml(&crd))
                .map_err(|e| format!("{}: {e}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
