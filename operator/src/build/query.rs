//! The query role: Deployment, Service and PodDisruptionBudget. Like the loader it checks
//! the schema version instead of migrating.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::collector::{http_service, pdb, role_selector};
use super::meta::meta;
use super::pod;
use crate::names::Role;
use crate::validate::Validated;

const ROLE: Role = Role::Query;

pub fn deployment(v: &Validated) -> Deployment {
    let mut env = pod::clickhouse_env(v);
    env.push(pod::signing_secret_env(v));
    env.extend(pod::log_env());
    let args = vec!["--migrations".into(), "check".into()];
    Deployment {
        metadata: meta(v, v.names.workload(ROLE), Some(ROLE)),
        spec: Some(DeploymentSpec {
            replicas: Some(v.query.replicas),
            selector: role_selector(v, ROLE),
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: pod::template(v, ROLE, &v.query, args, env),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn service(v: &Validated) -> Service {
    http_service(v, ROLE)
}

pub fn disruption_budget(v: &Validated) -> PodDisruptionBudget {
    pdb(v, ROLE)
}
