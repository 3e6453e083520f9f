//! `kubectl sightline …`: the `sightline` binary installed as `kubectl-sightline` (a
//! symlink; kubectl runs plugins by that name), or `sightline kubectl …`. Each command is
//! the operator crate's `plugin` function on the kubeconfig's cluster; this module only
//! reads the command line and prints.

use std::time::Duration;

use clap::{Parser, Subcommand};
use sightline_operator::plugin::{self, report};

use crate::common::block_on;

/// The plugin's command line: `kubectl sightline <command>`.
#[derive(Parser)]
#[command(
    name = "kubectl sightline",
    version,
    about = "Sightline tenants on the current cluster"
)]
pub struct PluginCli {
    #[command(subcommand)]
    pub command: PluginCommand,
}

#[derive(Subcommand)]
pub enum PluginCommand {
    /// One screen for a tenant: health, conditions, endpoints, schema version, lag.
    Status {
        /// The AnalyticsTenant.
        tenant: String,
    },
    /// Issue tokens from a tenant's signing Secret, read through the API.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Plan, approve or cancel a Reprocess.
    Reprocess {
        #[command(subcommand)]
        command: ReprocessCommand,
    },
    /// A redacted support bundle (YAML): the tenant, its objects, pods, Events, the names
    /// of its Secrets and the operator's logs; no Secret's data.
    Report {
        /// The AnalyticsTenant.
        tenant: String,
        /// Write the bundle here instead of standard output.
        #[arg(long, short = 'o')]
        out: Option<std::path::PathBuf>,
        /// The operator's namespace (where the README installs the chart).
        #[arg(long, default_value = "sightline")]
        operator_namespace: String,
        /// Label selector of the operator's pods (the chart's labels).
        #[arg(
            long,
            default_value = "app.kubernetes.io/name=sightline,app.kubernetes.io/component=operator"
        )]
        operator_selector: String,
        /// Log lines per operator pod.
        #[arg(long, default_value_t = 500)]
        log_lines: i64,
        /// The workloads' namespace, when the tenant does not name one.
        #[arg(long)]
        namespace: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum ReprocessCommand {
    /// Print a Reprocess's plan: days, rows and bytes, partitions replaced, processing,
    /// image digest, estimate, hash and approval.
    Plan {
        /// The Reprocess.
        name: String,
        /// Its namespace (default: the kubeconfig context's).
        #[arg(long, short = 'n')]
        namespace: Option<String>,
    },
    /// Approve a Manual Reprocess's current plan (sets spec.approvedPlanHash to its hash).
    Approve {
        /// The Reprocess.
        name: String,
        /// The hash of the plan you reviewed (what `plan` printed): 64 hex digits, either
        /// case. A plan recomputed since is refused, never approved unseen.
        #[arg(long, value_parser = plugin::reprocess::plan_hash)]
        hash: String,
        /// Its namespace (default: the kubeconfig context's).
        #[arg(long, short = 'n')]
        namespace: Option<String>,
    },
    /// Cancel a Reprocess (delete it): a running one stops after the day under way and the
    /// operator records the finished days in an Event.
    Cancel {
        /// The Reprocess.
        name: String,
        /// Its namespace (default: the kubeconfig context's).
        #[arg(long, short = 'n')]
        namespace: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Print a token for (tenant, site, scope), signed with the tenant's key.
    Issue {
        /// The AnalyticsTenant.
        tenant: String,
        /// The site; admin tokens are for the whole tenant and name none.
        #[arg(long)]
        site: Option<String>,
        /// write (collector), read (query API) or admin.
        #[arg(long)]
        scope: String,
        /// How long the token is valid, e.g. 30d, 12h; at most 10 years.
        #[arg(long, default_value = "30d", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// The namespace of the tenant's Secret, when the tenant does not say.
        #[arg(long)]
        namespace: Option<String>,
    },
}

/// Whether the process was started as `kubectl-sightline` (kubectl's plugin name).
pub fn invoked_as_plugin() -> bool {
    std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().starts_with("kubectl-sightline"))
        })
        .unwrap_or(false)
}

/// The plugin's default log filter (`RUST_LOG` replaces it): kube's request tracing logs
/// every failed request at ERROR (`failed with error client error (Connect)`), and each such
/// failure is also returned to the command, which prints it once, naming the server.
pub const LOG_FILTER: &str = "info,kube_client::client::builder=off";

pub fn run(cli: PluginCli) -> Result<(), String> {
    block_on(async move {
        let (client, server) = plugin::connect::connect().await.map_err(|e| e.to_string())?;
        let explain = |e: plugin::PluginError| server.explain(e).to_string();
        let text = match cli.command {
            PluginCommand::Status { tenant } => plugin::status::status(&client, &tenant, chrono::Utc::now())
                .await
                .map_err(explain)?,
            PluginCommand::Token {
                command:
                    TokenCommand::Issue {
                        tenant,
                        site,
                        scope,
                        ttl,
                        namespace,
                    },
            } => {
                let claims = crate::token_cmd::claims(&tenant, site, &scope, ttl)?;
                let token = plugin::token::issue(&client, &claims, namespace.as_deref())
                    .await
                    .map_err(explain)?;
                format!("{token}\n")
            }
            PluginCommand::Reprocess { command } => {
                let ns = |n: Option<String>| n.unwrap_or_else(|| client.default_namespace().to_string());
                match command {
                    ReprocessCommand::Plan { name, namespace } => {
                        plugin::reprocess::plan(&client, &ns(namespace), &name).await
                    }
                    ReprocessCommand::Approve { name, hash, namespace } => {
                        plugin::reprocess::approve(&client, &ns(namespace), &name, &hash).await
                    }
                    ReprocessCommand::Cancel { name, namespace } => {
                        plugin::reprocess::cancel(&client, &ns(namespace), &name).await
                    }
                }
                .map_err(explain)?
            }
            PluginCommand::Report {
                tenant,
                out,
                operator_namespace,
                operator_selector,
                log_lines,
                namespace,
            } => {
                let scope = report::Scope {
                    tenant,
                    operator_namespace,
                    operator_selector,
                    log_lines,
                    namespace,
                };
                let bundle = report::report(&client, &scope, &chrono::Utc::now().to_rfc3339())
                    .await
                    .map_err(explain)?;
                match out {
                    Some(path) => {
                        std::fs::write(&path, bundle).map_err(|e| format!("{}: {e}", path.display()))?;
                        format!("wrote {}\n", path.display())
                    }
                    None => bundle,
                }
            }
        };
        print!("{text}");
        Ok(())
    })
}
