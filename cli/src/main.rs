//! `sightline`: one binary, one subcommand per role.

mod admin;
mod collector_cmd;
mod common;
mod kubectl_cmd;
mod loader_cmd;
mod logging;
mod operator_cmd;
mod provision_cmd;
mod query_cmd;
mod reload;
mod reprocess_cmd;
mod serve;
mod standalone;
mod token_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "sightline", version, about = "Sightline: an open analytics backend")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Collect, process, store and query in one process on the embedded ClickHouse engine.
    Standalone(standalone::Args),
    /// The collector HTTP API in front of Kafka (202 once the broker has every event).
    Collector(collector_cmd::Args),
    /// Each tenant's event topic into the warehouse, exactly once (commits after inserts).
    Loader(loader_cmd::Args),
    /// Remove a loader that stopped for good (its --instance-id) from its tenants' consumer
    /// groups, so its partitions move to the loaders still running at once.
    RemoveLoader(loader_cmd::RemoveArgs),
    /// The query API (and dashboard) over a warehouse written by loaders.
    Query(query_cmd::Args),
    /// Create or update every tenant's Kafka topics to its spec (idempotent).
    Provision(provision_cmd::Args),
    /// The operator: reconciles AnalyticsTenants and runs each Reprocess in a Job (`render`
    /// prints what it would apply for a tenant).
    Operator(Box<operator_cmd::Args>),
    /// Write the CRDs to crds/ and charts/sightline/crds/ (tests fail when either drifts from
    /// the code).
    Crdgen(operator_cmd::CrdgenArgs),
    /// Print the query API's OpenAPI 3 document (docs/openapi.json is this output).
    Openapi,
    /// Replay a tenant's days from events_raw (events and every rollup tier), offline
    /// against a data directory, against a ClickHouse URL, or through a running standalone
    /// server's admin endpoint.
    Reprocess(reprocess_cmd::Args),
    /// `kubectl sightline` (status, token, report, reprocess) without the symlink.
    Kubectl(kubectl_cmd::PluginCli),
    /// Issue tokens for merchants' sites.
    Token {
        #[command(subcommand)]
        command: token_cmd::TokenCommand,
    },
}

fn main() -> ExitCode {
    // Before any thread starts and before any command opens the embedded engine.
    sightline_core::warehouse::embedded::configure_engine_allocator();
    // Installed as `kubectl-sightline`, the binary is the kubectl plugin.
    if kubectl_cmd::invoked_as_plugin() {
        logging::init_with(kubectl_cmd::LOG_FILTER);
        return exit(kubectl_cmd::run(kubectl_cmd::PluginCli::parse()));
    }
    let cli = Cli::parse();
    match cli.command {
        // The operator logs JSON lines, each reconcile's span (tenant, generation) included.
        Command::Operator(_) => logging::init_json(),
        Command::Kubectl(_) => logging::init_with(kubectl_cmd::LOG_FILTER),
        _ => logging::init(),
    }
    let outcome = match cli.command {
        Command::Standalone(args) => standalone::run(args),
        Command::Token { command } => token_cmd::run(command),
        Command::Provision(args) => provision_cmd::run(args),
        Command::Collector(args) => collector_cmd::run(args),
        Command::Loader(args) => loader_cmd::run(args),
        Command::RemoveLoader(args) => loader_cmd::remove(args),
        Command::Query(args) => query_cmd::run(args),
        Command::Operator(args) => operator_cmd::run(*args),
        Command::Crdgen(args) => operator_cmd::crdgen(args),
        Command::Reprocess(args) => reprocess_cmd::run(args),
        Command::Kubectl(cli) => kubectl_cmd::run(cli),
        Command::Openapi => {
            print!("{}", sightline_query::openapi::document());
            Ok(())
        }
    };
    exit(outcome)
}

fn exit(outcome: Result<(), String>) -> ExitCode {
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
