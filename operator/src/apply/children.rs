//! The tenant's Kubernetes objects: the ConfigMap, then the workloads and what goes with
//! them, each read first and applied (server-side apply, forced, one field manager) only
//! when it differs from what the operator applies:
//!
//! - absent: created (on the first reconcile), or, once the tenant was reconciled, drift
//!   (deleted by hand): recreated under `Repair`, reported under `Report`;
//! - its applied digest differs from the desired one: the spec or the operator changed it,
//!   so it is applied (and a changed pod template is announced: `RolloutPending` and an
//!   Event, since its pods are replaced);
//! - same digest, but a field the operator sets holds another value: drift (hand edit),
//!   applied back under `Repair`, reported under `Report`.
//!
//! So an operator upgrade that builds the same objects writes nothing and restarts nothing.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::NamespaceResourceScope;
use kube::api::DeleteParams;
use kube::{Api, Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{ssa, Policy};
use crate::build::{self, Children, OPERATOR_VERSION_ANNOTATION, TEMPLATE_DIGEST_ANNOTATION};
use crate::drift::{self, Found, Kind, Outcome, DIGEST_ANNOTATION};
use crate::error::Result;
use crate::names::Role;
use crate::status::Step;
use crate::validate::Validated;

/// One role's workload as it stands after the step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleState {
    pub role: Role,
    /// `None`: the workload does not exist.
    pub pods: Option<Pods>,
}

/// Pods of a workload: ready, wanted, and those already on the current template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pods {
    pub ready: i32,
    pub wanted: i32,
    pub updated: i32,
    /// A rollout of a changed template is under way.
    pub rolling: bool,
}

/// What the step did and found.
#[derive(Clone, Debug, Default)]
pub struct ChildrenOutcome {
    pub roles: Vec<RoleState>,
    pub drift: Vec<Found>,
    /// Changes due but not made (paused).
    pub pending: Vec<String>,
    /// Template changes applied now (pods about to be replaced), with their cause.
    pub rollouts_started: Vec<String>,
    /// The loader pods that exist (the StatefulSet's `status.replicas`), when the API said.
    pub loader_pods: Option<i32>,
}

impl ChildrenOutcome {
    /// The condition step of a role.
    pub fn step(&self, role: Role, policy: Policy) -> Step {
        let Some(state) = self.roles.iter().find(|r| r.role == role) else {
            return Step::NotRun;
        };
        match &state.pods {
            None if !policy.write => Step::Pending {
                message: format!("the {} workload is not there and the tenant is paused", role.as_str()),
            },
            None => Step::Failed {
                reason: "Missing",
                message: format!(
                    "the {} workload was deleted and is left so (driftPolicy Report)",
                    role.as_str()
                ),
                transient: false,
            },
            Some(p) if p.ready >= 1 => Step::Done {
                reason: if p.ready >= p.wanted {
                    "Available"
                } else {
                    "PartiallyAvailable"
                },
                message: format!("{}/{} pods ready", p.ready, p.wanted),
            },
            Some(p) => Step::Progressing {
                message: format!("{}/{} pods ready", p.ready, p.wanted),
            },
        }
    }

    /// Roles whose pods are being replaced: `collector: 1 of 2 pods on the current template`.
    pub fn rolling(&self) -> Vec<String> {
        self.roles
            .iter()
            .filter_map(|r| {
                let p = r.pods.as_ref().filter(|p| p.rolling)?;
                Some(format!(
                    "{}: {} of {} pods on the current template",
                    r.role.as_str(),
                    p.updated.min(p.wanted),
                    p.wanted
                ))
            })
            .collect()
    }
}

/// Applies what differs. `reconciled_before`: the tenant finished a reconcile before (a
/// missing object is then drift, not a first creation). `cause` names why a template would
/// change when the spec did not: `spec generation 3`, or empty for the operator itself.
pub async fn reconcile(
    client: &Client,
    v: &Validated,
    children: &Children,
    policy: Policy,
    reconciled_before: bool,
    spec_changed: Option<i64>,
) -> Result<ChildrenOutcome> {
    let mut s = Sync {
        client,
        ns: v.names.namespace.as_str(),
        policy,
        reconciled_before,
        spec_changed,
        out: ChildrenOutcome::default(),
    };
    s.sync(&children.config_map, None).await?;
    let collector = s.sync(&children.collector, Some(Role::Collector)).await?;
    s.sync(&children.collector_service, None).await?;
    match &children.collector_autoscaler {
        Some(hpa) => {
            s.sync(hpa, None).await?;
        }
        // Autoscaling turned off: an HPA left from before would fight the replicas.
        None => {
            let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), s.ns);
            let name = v.names.workload(Role::Collector);
            if api.get_opt(&name).await?.is_some() {
                if policy.write {
                    match api.delete(&name, &DeleteParams::default()).await {
                        Ok(_) => tracing::info!(tenant = %v.names.tenant, "collector autoscaler removed"),
                        Err(kube::Error::Api(e)) if e.code == 404 => {}
                        Err(e) => return Err(e.into()),
                    }
                } else {
                    s.out
                        .pending
                        .push(format!("delete HorizontalPodAutoscaler {}/{name}", s.ns));
                }
            }
        }
    }
    s.sync(&children.collector_budget, None).await?;
    s.sync(&children.loader_service, None).await?;
    let loader = s.sync(&children.loader, Some(Role::Loader)).await?;
    let query = s.sync(&children.query, Some(Role::Query)).await?;
    s.sync(&children.query_service, None).await?;
    s.sync(&children.query_budget, None).await?;
    let mut out = s.out;
    out.loader_pods = loader.as_ref().and_then(|l| l.status.as_ref()).map(|st| st.replicas);
    out.roles = vec![
        RoleState {
            role: Role::Collector,
            pods: collector.as_ref().map(deployment_pods),
        },
        RoleState {
            role: Role::Loader,
            pods: loader.as_ref().map(stateful_pods),
        },
        RoleState {
            role: Role::Query,
            pods: query.as_ref().map(deployment_pods),
        },
    ];
    Ok(out)
}

struct Sync<'a> {
    client: &'a Client,
    ns: &'a str,
    policy: Policy,
    reconciled_before: bool,
    spec_changed: Option<i64>,
    out: ChildrenOutcome,
}

impl Sync<'_> {
    /// Reads one object, applies it when needed; returns it as it stands after (`None`:
    /// absent). `role` marks a workload (its template changes are announced).
    async fn sync<K>(&mut self, object: &K, role: Option<Role>) -> Result<Option<K>>
    where
        K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + k8s_openapi::Resource
            + Clone
            + Serialize
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let name = object.name_any();
        let id = format!("{} {}/{name}", <K as k8s_openapi::Resource>::KIND, self.ns);
        let desired = build::stamped(build::typed(object)?);
        let api: Api<K> = Api::namespaced(self.client.clone(), self.ns);
        let live = api.get_opt(&name).await?;
        let Some(live) = live else {
            if self.reconciled_before {
                let outcome = self.policy.outcome();
                self.out
                    .drift
                    .push(Found::new(Kind::KubernetesObject, &id, "deleted", outcome));
                if outcome == Outcome::Reported {
                    return Ok(None);
                }
            } else if !self.policy.write {
                self.out.pending.push(format!("create {id}"));
                return Ok(None);
            }
            return Ok(Some(ssa(self.client, self.ns, &name, &desired).await?));
        };
        let live_value = serde_json::to_value(&live)?;
        let annotation = |value: &serde_json::Value, key: &str| -> Option<String> {
            value["metadata"]["annotations"][key].as_str().map(str::to_string)
        };
        if annotation(&live_value, DIGEST_ANNOTATION) != annotation(&desired, DIGEST_ANNOTATION) {
            // The spec or the operator changed it: a change to make, not drift.
            if !self.policy.write {
                self.out.pending.push(format!("update {id}"));
                return Ok(Some(live));
            }
            if let Some(role) = role {
                let (was, now) = (
                    annotation(&live_value, TEMPLATE_DIGEST_ANNOTATION),
                    annotation(&desired, TEMPLATE_DIGEST_ANNOTATION),
                );
                if was != now {
                    let cause = match (self.spec_changed, annotation(&live_value, OPERATOR_VERSION_ANNOTATION)) {
                        (Some(generation), _) => format!("spec generation {generation}"),
                        (None, Some(version)) if version != env!("CARGO_PKG_VERSION") => {
                            format!("operator upgrade {version} -> {}", env!("CARGO_PKG_VERSION"))
                        }
                        (None, _) => "the operator's templates changed".to_string(),
                    };
                    self.out.rollouts_started.push(format!(
                        "{}: the pod template changed ({cause}); its pods are replaced",
                        role.as_str()
                    ));
                }
            }
            return Ok(Some(ssa(self.client, self.ns, &name, &desired).await?));
        }
        let differences = drift::differences(&desired, &live_value);
        if differences.is_empty() {
            return Ok(Some(live));
        }
        let outcome = self.policy.outcome();
        self.out.drift.push(Found::new(
            Kind::KubernetesObject,
            &id,
            format!("changed at {}", differences.join(", ")),
            outcome,
        ));
        if outcome == Outcome::Reported {
            return Ok(Some(live));
        }
        Ok(Some(ssa(self.client, self.ns, &name, &desired).await?))
    }
}

/// A Deployment's pods. With an HPA, `spec.replicas` is left to it; the status says.
pub fn deployment_pods(d: &Deployment) -> Pods {
    let status = d.status.clone().unwrap_or_default();
    let wanted = d
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .or(status.replicas)
        .unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let observed = status.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0);
    Pods {
        ready: status.available_replicas.unwrap_or(0),
        wanted,
        updated,
        rolling: d.status.is_some() && (!observed || updated < wanted || status.replicas.unwrap_or(0) > updated),
    }
}

/// A StatefulSet's pods: a rollout runs while its update revision is not the current one.
pub fn stateful_pods(s: &StatefulSet) -> Pods {
    let status = s.status.clone().unwrap_or_default();
    let wanted = s.spec.as_ref().and_then(|sp| sp.replicas).unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    let observed = status.observed_generation.unwrap_or(0) >= s.metadata.generation.unwrap_or(0);
    let revisions_differ = match (&status.current_revision, &status.update_revision) {
        (Some(a), Some(b)) => a != b,
        _ => false,
    };
    Pods {
        ready: status.ready_replicas.unwrap_or(0),
        wanted,
        updated,
        rolling: s.status.is_some() && (!observed || revisions_differ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus, StatefulSetSpec, StatefulSetStatus};

    #[test]
    fn a_rollout_runs_until_every_pod_has_the_current_template() {
        let mut d = Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(2),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(3),
                replicas: Some(3),
                updated_replicas: Some(1),
                available_replicas: Some(2),
                ..Default::default()
            }),
            ..Default::default()
        };
        d.metadata.generation = Some(3);
        assert!(deployment_pods(&d).rolling);
        d.status.as_mut().unwrap().updated_replicas = Some(2);
        d.status.as_mut().unwrap().replicas = Some(2);
        let p = deployment_pods(&d);
        assert!(!p.rolling);
        assert_eq!((p.ready, p.wanted), (2, 2));
        // Not yet seen by its controller.
        d.metadata.generation = Some(4);
        assert!(deployment_pods(&d).rolling);
        let mut s = StatefulSet {
            spec: Some(StatefulSetSpec {
                replicas: Some(2),
                ..Default::default()
            }),
            status: Some(StatefulSetStatus {
                observed_generation: Some(1),
                current_revision: Some("a".into()),
                update_revision: Some("b".into()),
                ready_replicas: Some(2),
                ..Default::default()
            }),
            ..Default::default()
        };
        s.metadata.generation = Some(1);
        assert!(stateful_pods(&s).rolling);
        s.status.as_mut().unwrap().current_revision = Some("b".into());
        assert!(!stateful_pods(&s).rolling);
    }

    #[test]
    fn role_steps_say_how_many_pods_serve() {
        let out = ChildrenOutcome {
            roles: vec![
                RoleState {
                    role: Role::Collector,
                    pods: Some(Pods {
                        ready: 1,
                        wanted: 2,
                        updated: 1,
                        rolling: true,
                    }),
                },
                RoleState {
                    role: Role::Loader,
                    pods: None,
                },
                RoleState {
                    role: Role::Query,
                    pods: Some(Pods {
                        ready: 0,
                        wanted: 2,
                        updated: 2,
                        rolling: false,
                    }),
                },
            ],
            ..Default::default()
        };
        let write = Policy {
            write: true,
            repair: false,
        };
        assert!(matches!(
            out.step(Role::Collector, write),
            Step::Done {
                reason: "PartiallyAvailable",
                ..
            }
        ));
        assert!(matches!(
            out.step(Role::Loader, write),
            Step::Failed { reason: "Missing", .. }
        ));
        assert!(matches!(out.step(Role::Query, write), Step::Progressing { .. }));
        assert_eq!(out.rolling(), ["collector: 1 of 2 pods on the current template"]);
    }
}
