//! The loader: a StatefulSet, so each pod has a stable name that it uses as its
//! `--instance-id` (static consumer-group membership: a restarted loader takes its
//! partitions back at once), and the headless Service a StatefulSet needs. Its replicas
//! never exceed the topic's partitions (validated). It checks the schema version instead of
//! migrating: the operator is the single migrator.

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::collector::role_selector;
use super::meta::meta;
use super::pod;
use crate::names::Role;
use crate::validate::Validated;

const ROLE: Role = Role::Loader;

pub fn stateful_set(v: &Validated) -> StatefulSet {
    let mut env = pod::kafka_env(v);
    env.extend(pod::clickhouse_env(v));
    env.push(pod::env_from_field("SIGHTLINE_LOADER_INSTANCE", "metadata.name"));
    env.extend(pod::log_env());
    let args = vec!["--migrations".into(), "check".into()];
    StatefulSet {
        metadata: meta(v, v.names.workload(ROLE), Some(ROLE)),
        spec: Some(StatefulSetSpec {
            replicas: Some(v.loader.replicas),
            service_name: Some(v.names.workload(ROLE)),
            selector: role_selector(v, ROLE),
            // Loaders do not depend on each other's order: start and stop them together.
            pod_management_policy: Some("Parallel".into()),
            template: pod::template(v, ROLE, &v.loader, args, env),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The headless Service that gives the StatefulSet's pods their identity (and exposes the
/// ops port for scraping).
pub fn service(v: &Validated) -> Service {
    Service {
        metadata: meta(v, v.names.workload(ROLE), Some(ROLE)),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(v.names.selector(Some(ROLE))),
            ports: Some(vec![ServicePort {
                name: Some("ops".into()),
                port: ROLE.port(),
                target_port: Some(IntOrString::String("ops".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
