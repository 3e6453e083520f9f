//! `sightline provision`: creates or updates every tenant's topics to its spec (what the
//! operator will run on each reconcile; idempotent).

use std::path::PathBuf;

use clap::Args as ClapArgs;
use sightline_core::spec::load_tenants;
use sightline_ingest::kafka::provision::Provisioner;
use sightline_ingest::kafka::Security;

#[derive(ClapArgs)]
pub struct Args {
    /// AnalyticsTenant YAML file or directory.
    #[arg(long, default_value = "manifests/examples")]
    tenants: PathBuf,
    /// Kafka bootstrap servers, e.g. kafka-0:9092,kafka-1:9092.
    #[arg(long, env = "SIGHTLINE_KAFKA_BROKERS")]
    brokers: String,
}

pub fn run(args: Args) -> Result<(), String> {
    let tenants = load_tenants(&args.tenants).map_err(|e| e.to_string())?;
    let security = Security::from_env().map_err(|e| e.to_string())?;
    crate::common::block_on(async {
        let provisioner = Provisioner::new(&args.brokers, &security).map_err(|e| e.to_string())?;
        for tenant in &tenants {
            let changes = provisioner
                .provision(tenant)
                .await
                .map_err(|e| format!("tenant {}: {e}", tenant.name))?;
            if changes.is_empty() {
                println!("tenant {}: topics up to date", tenant.name);
            }
            for (topic, change) in changes {
                println!("tenant {}: {topic}: {change:?}", tenant.name);
            }
        }
        Ok(())
    })
}
