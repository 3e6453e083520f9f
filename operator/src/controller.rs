//! The controller: a kube-rs `Controller` over `AnalyticsTenant` that also watches the
//! children it owns. Each reconcile hands the tenant to kube's `finalizer()`, whose two arms
//! are `apply_tenant` (validate -> build -> apply -> status) and `cleanup` (policy `Delete`
//! drops the topics and the database; `Retain` keeps them and says so in an Event).
//!
//! A reconcile that succeeds is repeated every `resync` (drift: a topic, table, view or
//! child deleted by hand is recreated; hand edits are reverted by server-side apply). One
//! that fails is retried with exponential backoff when waiting can help (Kafka or ClickHouse
//! away), else at the resync pace (the spec must change first). Outages never end the
//! process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use sightline_core::processor::PIPELINE_VERSION;
use sightline_ingest::kafka::provision::Provisioner;
use tracing::Instrument;

use crate::apply;
use crate::build::{self, secret::SigningKey};
use crate::crd::{AnalyticsTenant, FINALIZER};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::names::Role;
use crate::status::{self, Report, Step};
use crate::validate::{validate, OperatorConfig};
use crate::FIELD_MANAGER;

/// What every reconcile shares: the API client, the operator's settings, the tenants seen
/// (for conflict checks), the Kafka admin client, the event recorder and the metrics.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub tenants: Store<AnalyticsTenant>,
    pub kafka: Arc<Provisioner>,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// How often a healthy tenant is reconciled again (drift repair).
    pub resync: Duration,
    failures: Mutex<HashMap<String, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        config: OperatorConfig,
        tenants: Store<AnalyticsTenant>,
        kafka: Arc<Provisioner>,
        metrics: Metrics,
        resync: Duration,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            tenants,
            kafka,
            metrics,
            resync,
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The wait before retry `attempt` (1-based) after a transient failure: 5 s doubling up to
/// 5 minutes.
pub fn backoff(attempt: u32) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(6));
    Duration::from_secs(secs.min(300))
}

/// One reconcile of one tenant, in a span that names it and its generation.
pub async fn reconcile(obj: Arc<AnalyticsTenant>, ctx: Arc<Context>) -> Result<Action> {
    let name = obj.name_any();
    let span = tracing::info_span!("reconcile", tenant = %name, generation = obj.metadata.generation.unwrap_or(0));
    async move {
        let started = Instant::now();
        let api: Api<AnalyticsTenant> = Api::all(ctx.client.clone());
        let result = finalizer(&api, FINALIZER, obj, |event| async {
            match event {
                Event::Apply(tenant) => apply_tenant(&tenant, &ctx, &api).await,
                Event::Cleanup(tenant) => cleanup(&tenant, &ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)));
        ctx.metrics.reconciled(
            started.elapsed().as_secs_f64(),
            result.as_ref().err().map(Error::reason),
        );
        match &result {
            Ok(_) => {
                ctx.failures().remove(&name);
                tracing::debug!("reconciled");
            }
            Err(e) => tracing::warn!(reason = e.reason(), error = %e.chain(), "reconcile failed"),
        }
        result
    }
    .instrument(span)
    .await
}

/// Requeue after a failed reconcile: backoff for outages, the resync pace otherwise.
pub fn error_policy(obj: Arc<AnalyticsTenant>, error: &Error, ctx: Arc<Context>) -> Action {
    let attempt = {
        let mut failures = ctx.failures();
        let n = failures.entry(obj.name_any()).or_insert(0);
        *n += 1;
        *n
    };
    if error.is_transient() {
        Action::requeue(backoff(attempt))
    } else {
        Action::requeue(ctx.resync)
    }
}

/// Validate, build, apply, then write the status whatever happened.
async fn apply_tenant(obj: &AnalyticsTenant, ctx: &Context, api: &Api<AnalyticsTenant>) -> Result<Action> {
    let mut report = Report::default();
    let outcome = steps(obj, ctx, &mut report).await;
    let status = status::compute(obj.status.as_ref(), obj.metadata.generation, &report, Utc::now());
    status::publish(api, &ctx.recorder, obj, &status).await?;
    outcome.map(|()| Action::requeue(ctx.resync))
}

/// The reconcile proper; fills `report` as each step ends.
async fn steps(obj: &AnalyticsTenant, ctx: &Context, report: &mut Report) -> Result<()> {
    let refuse = |report: &mut Report, e: Error| {
        report.refused = Some((e.reason(), e.to_string()));
        Err(e)
    };
    let v = match validate(obj, &ctx.config) {
        Ok(v) => v,
        Err(e) => return refuse(report, e),
    };
    report.sites = Some(v.tenant.spec.sites.allowed.len() as u32);
    if let Err(e) = apply::check_conflicts(&v, obj, &ctx.tenants, &ctx.config) {
        return refuse(report, e);
    }
    let children = build::build(&v, Some(&SigningKey::generate()))?;

    let fail = |step: &mut Step, e: Error| {
        *step = Step::Failed {
            reason: e.reason(),
            message: e.to_string(),
        };
        Err(e)
    };
    match apply::topics(&ctx.kafka, &children).await {
        Ok(changes) => {
            report.topics = Step::Done {
                reason: "Provisioned",
                message: format!(
                    "{} with {} partitions{}",
                    v.names.topics.join(" and "),
                    v.tenant.spec.kafka.partitions,
                    if changes.is_empty() {
                        String::new()
                    } else {
                        format!(" ({} changed)", changes.len())
                    }
                ),
            }
        }
        Err(e) => return fail(&mut report.topics, e),
    }

    let schema = async {
        let wh = apply::warehouse(&ctx.client, &v).await?;
        apply::schema(wh.as_ref(), &v, &children.ddl).await
    };
    match schema.await {
        Ok(version) => {
            report.schema_version = Some(version);
            report.schema = Step::Done {
                reason: "Migrated",
                message: format!("database {} at schema version {version}", v.names.database),
            };
        }
        Err(e) => return fail(&mut report.schema, e),
    }

    let workloads = async {
        apply::signing_secret(&ctx.client, &v.names, &children.secret).await?;
        apply::children(&ctx.client, &v, &children).await
    };
    match workloads.await {
        Ok(w) if w.serving() => {
            report.ingest = Step::Done {
                reason: "Available",
                message: w.describe(),
            }
        }
        Ok(w) => {
            report.ingest = Step::Progressing { message: w.describe() };
        }
        Err(e) => return fail(&mut report.ingest, e),
    }
    report.collector_endpoint = Some(v.names.endpoint(Role::Collector));
    report.query_endpoint = Some(v.names.endpoint(Role::Query));
    // The processor version is known for the operator's own image; an override may differ.
    report.pipeline_version = (v.image == ctx.config.image).then_some(PIPELINE_VERSION);
    Ok(())
}

/// On delete: policy `Delete` drops the topics and the database; `Retain` keeps them and
/// says so in an Event. A tenant that never owned them (invalid, or in conflict) drops
/// nothing. Children in Kubernetes go with their owner reference.
async fn cleanup(obj: &AnalyticsTenant, ctx: &Context) -> Result<Action> {
    let reference = obj.object_ref(&());
    let note = |text: String| KubeEvent {
        type_: EventType::Normal,
        reason: String::new(),
        note: Some(text),
        action: "Cleanup".into(),
        secondary: None,
    };
    let (reason, text) = match validate(obj, &ctx.config) {
        Err(e) => (
            "NothingToClean",
            format!("the tenant was never valid ({e}); nothing outside Kubernetes to delete"),
        ),
        Ok(v) => {
            if let Err(e) = apply::check_conflicts(&v, obj, &ctx.tenants, &ctx.config) {
                ("NothingToClean", format!("nothing deleted: {e}"))
            } else {
                match v.deletion_policy {
                    sightline_core::spec::DeletionPolicy::Delete => {
                        let wh = apply::warehouse(&ctx.client, &v).await?;
                        let dropped = apply::drop_external(&ctx.kafka, wh.as_ref(), &v).await?;
                        (
                            "Deleted",
                            format!("deletionPolicy Delete: dropped {}", dropped.join(", ")),
                        )
                    }
                    sightline_core::spec::DeletionPolicy::Retain => (
                        "Retained",
                        format!(
                            "deletionPolicy Retain: topics {} and database {} are kept",
                            v.names.topics.join(", "),
                            v.names.database
                        ),
                    ),
                }
            }
        }
    };
    tracing::info!(reason, "{text}");
    let event = KubeEvent {
        reason: reason.into(),
        ..note(text)
    };
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(error = %e, "event not recorded");
    }
    Ok(Action::await_change())
}

/// Maps a child to the tenant that owns it. (kube's `owns` looks the owner up in the
/// child's namespace; the tenant is cluster-scoped, so the mapping is written here.)
fn owner_of<K: Resource>(child: K) -> Vec<ObjectRef<AnalyticsTenant>> {
    child
        .owner_references()
        .iter()
        .filter(|o| o.kind == AnalyticsTenant::kind(&()) && o.api_version == AnalyticsTenant::api_version(&()))
        .map(|o| ObjectRef::new(&o.name))
        .collect()
}

/// The label every child carries: the watches of children are limited to it.
pub fn children_selector() -> String {
    format!("app.kubernetes.io/managed-by={FIELD_MANAGER}")
}

/// Runs the controller until `stop` resolves. The context is built from the controller's
/// own store of tenants by `make_context`.
pub async fn run(
    client: Client,
    make_context: impl FnOnce(Store<AnalyticsTenant>) -> Arc<Context>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let tenants: Api<AnalyticsTenant> = Api::all(client.clone());
    let controller = Controller::new(tenants, watcher::Config::default().any_semantic());
    let ctx = make_context(controller.store());
    let children = watcher::Config::default().labels(&children_selector());
    controller
        .watches(Api::<ConfigMap>::all(client.clone()), children.clone(), owner_of)
        .watches(Api::<Deployment>::all(client.clone()), children.clone(), owner_of)
        .watches(Api::<StatefulSet>::all(client.clone()), children.clone(), owner_of)
        .watches(Api::<Service>::all(client.clone()), children.clone(), owner_of)
        .watches(
            Api::<PodDisruptionBudget>::all(client.clone()),
            children.clone(),
            owner_of,
        )
        .watches(Api::<HorizontalPodAutoscaler>::all(client.clone()), children, owner_of)
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller event");
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_maps_to_its_cluster_scoped_tenant() {
        // kube's `owns` would look the owner up in the child's namespace; the tenant has none.
        let mut child = k8s_openapi::api::apps::v1::Deployment::default();
        child.metadata.namespace = Some("analytics".into());
        child.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: "other".into(),
                uid: "u1".into(),
                ..Default::default()
            },
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "sightline.dev/v1alpha1".into(),
                kind: "AnalyticsTenant".into(),
                name: "acme".into(),
                uid: "u2".into(),
                ..Default::default()
            },
        ]);
        assert_eq!(owner_of(child), vec![ObjectRef::<AnalyticsTenant>::new("acme")]);
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(7), Duration::from_secs(300));
        assert_eq!(backoff(50), Duration::from_secs(300));
    }
}
