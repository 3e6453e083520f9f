//! The collector: Deployment, Service, HorizontalPodAutoscaler (when autoscaling is on)
//! and PodDisruptionBudget. With an HPA the Deployment leaves `replicas` unset, so the
//! operator's server-side apply never fights the autoscaler over it.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::meta;
use super::pod;
use crate::names::Role;
use crate::validate::{Scaling, Validated};

const ROLE: Role = Role::Collector;

pub fn deployment(v: &Validated) -> Deployment {
    let mut env = pod::kafka_env(v);
    env.push(pod::signing_secret_env(v));
    env.extend(pod::log_env());
    // Behind an ingress every request comes from the controller's pods: without trusting
    // them, every visitor would get the controller's address (and one visitor id per UA).
    let args = v
        .collector_trusted_proxies
        .iter()
        .flat_map(|net| ["--trusted-proxy".to_string(), net.clone()])
        .collect();
    Deployment {
        metadata: meta(v, v.names.workload(ROLE), Some(ROLE)),
        spec: Some(DeploymentSpec {
            replicas: match v.collector_scaling {
                Scaling::Fixed(n) => Some(n),
                Scaling::Autoscaled { .. } => None,
            },
            selector: selector(v),
            // Never fewer ready collectors than wanted during a rollout: a request must
            // always find one.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: pod::template(v, ROLE, &v.collector, args, env),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn service(v: &Validated) -> Service {
    http_service(v, ROLE)
}

/// `None` when the collector runs a fixed number of replicas.
pub fn autoscaler(v: &Validated) -> Option<HorizontalPodAutoscaler> {
    let Scaling::Autoscaled {
        min,
        max,
        target_cpu_percent,
    } = v.collector_scaling
    else {
        return None;
    };
    Some(HorizontalPodAutoscaler {
        metadata: meta(v, v.names.workload(ROLE), Some(ROLE)),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: v.names.workload(ROLE),
            },
            min_replicas: Some(min),
            max_replicas: max,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(target_cpu_percent),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

pub fn disruption_budget(v: &Validated) -> PodDisruptionBudget {
    pdb(v, ROLE)
}

pub(super) fn selector(v: &Validated) -> LabelSelector {
    role_selector(v, ROLE)
}

pub(super) fn role_selector(v: &Validated, role: Role) -> LabelSelector {
    LabelSelector {
        match_labels: Some(v.names.selector(Some(role))),
        ..Default::default()
    }
}

/// A ClusterIP Service on the role's port named `http`.
pub(super) fn http_service(v: &Validated, role: Role) -> Service {
    Service {
        metadata: meta(v, v.names.workload(role), Some(role)),
        spec: Some(ServiceSpec {
            selector: Some(v.names.selector(Some(role))),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: role.port(),
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// At most one pod of the role voluntarily disrupted at a time.
pub(super) fn pdb(v: &Validated, role: Role) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: meta(v, v.names.workload(role), Some(role)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(role_selector(v, role)),
            ..Default::default()
        }),
        ..Default::default()
    }
}
