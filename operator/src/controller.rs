//! The controller: a kube-rs `Controller` over `AnalyticsTenant` that also watches the
//! children it owns, so a change to any of them reconciles its tenant at once; and every
//! tenant is reconciled again at least every `resync` (at most 5 minutes) to find drift in
//! what no watch sees (topics, tables, and the signing Secret: the operator's RBAC never
//! lists or watches Secrets).
//!
//! One reconcile: a tenant being deleted goes to `delete`; otherwise the finalizer is put
//! in place for `deletionPolicy: Delete` (and taken away for `Retain`, so deleting such a
//! tenant, or anything around it, never waits for the operator), then `apply_tenant`:
//! validate -> build -> apply (topics, schema, signing Secret, children; see `apply`) ->
//! status. The pause annotation turns every write into a read: the status is still
//! refreshed, nothing else is written.
//!
//! A reconcile that fails is retried with exponential backoff when waiting can help (Kafka
//! or ClickHouse away), else at the resync pace (the spec must change first). Outages never
//! end the process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::json;
use sightline_core::processor::PIPELINE_VERSION;
use sightline_core::spec::{DeletionPolicy, DriftPolicy};
use sightline_ingest::kafka::provision::Provisioner;
use tracing::Instrument;

use crate::apply::{self, schema::References, Policy};
use crate::build;
use crate::crd::{AnalyticsTenant, FINALIZER, PAUSE_ANNOTATION};
use crate::drift::{Found, Outcome};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::names::Role;
use crate::status::{self, Report, Step, IN_SYNC};
use crate::validate::{validate, OperatorConfig, Validated};
use crate::FIELD_MANAGER;

/// The longest a healthy tenant waits for its next reconcile: drift in what no watch sees
/// (topics, tables) is found within this.
pub const MAX_RESYNC: Duration = Duration::from_secs(300);

/// What every reconcile shares: the API client, the operator's settings, the tenants seen
/// (for conflict checks), the Kafka admin client, the event recorder, the metrics and the
/// reference schemas built so far.
pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub tenants: Store<AnalyticsTenant>,
    pub kafka: Arc<Provisioner>,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// How often a healthy tenant is reconciled again (drift), at most `MAX_RESYNC`.
    pub resync: Duration,
    pub references: References,
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
            resync: resync.min(MAX_RESYNC),
            references: References::default(),
            failures: Mutex::new(HashMap::new()),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// An Event of its own, never folded into a series with an earlier one of the same
    /// reason (as kube's `Recorder` does within minutes): one per repair, one per rollout.
    async fn distinct_event(&self, obj: &AnalyticsTenant, type_: EventType, reason: &str, action: &str, note: String) {
        let now = k8s_openapi::jiff::Timestamp::now();
        let event = k8s_openapi::api::events::v1::Event {
            metadata: kube::api::ObjectMeta {
                name: Some(format!("{}.{:x}", obj.name_any(), now.as_nanosecond())),
                namespace: Some("default".into()),
                ..Default::default()
            },
            action: Some(action.into()),
            reason: Some(reason.into()),
            note: Some(note.chars().take(1000).collect()),
            event_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(now)),
            regarding: Some(obj.object_ref(&())),
            reporting_controller: Some(FIELD_MANAGER.into()),
            reporting_instance: Some(std::env::var("POD_NAME").unwrap_or_else(|_| FIELD_MANAGER.into())),
            type_: Some(match type_ {
                EventType::Normal => "Normal".into(),
                EventType::Warning => "Warning".into(),
            }),
            ..Default::default()
        };
        // A cluster-scoped object's Events go to `default`, as the Recorder puts them.
        let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(self.client.clone(), "default");
        if let Err(e) = api.create(&kube::api::PostParams::default(), &event).await {
            tracing::warn!(error = %e, "event not recorded");
        }
    }

    async fn event(&self, obj: &AnalyticsTenant, type_: EventType, reason: &str, action: &str, note: String) {
        let event = KubeEvent {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, "event not recorded");
        }
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
        let result = if obj.metadata.deletion_timestamp.is_some() {
            delete(&obj, &ctx, &api).await
        } else {
            match finalizer(&obj, &api).await {
                Ok(true) => Ok(Action::await_change()),
                Ok(false) => apply_tenant(&obj, &ctx, &api).await,
                Err(e) => Err(e),
            }
        };
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

/// The finalizer as the deletion policy wants it: present for `Delete` (the topics and
/// database are dropped before the tenant goes), absent for `Retain` (nothing to wait for:
/// a tenant, or its namespace, is deleted at once, operator or not). Returns true when it
/// added one (the patch brings a new reconcile, as kube's `finalizer` does). A paused
/// tenant's finalizers are left as they are.
async fn finalizer(obj: &AnalyticsTenant, api: &Api<AnalyticsTenant>) -> Result<bool> {
    if obj.annotated(PAUSE_ANNOTATION) {
        return Ok(false);
    }
    let has = obj.finalizers().iter().any(|f| f == FINALIZER);
    match (obj.spec.tenant.deletion_policy, has) {
        (DeletionPolicy::Delete, false) => {
            let mut finalizers = obj.finalizers().to_vec();
            finalizers.push(FINALIZER.into());
            set_finalizers(api, obj, finalizers).await?;
            Ok(true)
        }
        (DeletionPolicy::Retain, true) => {
            // From an operator that put it on every tenant, or a policy changed to Retain.
            let finalizers = obj.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
            set_finalizers(api, obj, finalizers).await?;
            Ok(false)
        }
        _ => Ok(false),
    }
}

/// Replaces the finalizers by a merge patch carrying the resourceVersion read, so a
/// concurrent change fails (409) and is retried instead of lost.
async fn set_finalizers(api: &Api<AnalyticsTenant>, obj: &AnalyticsTenant, finalizers: Vec<String>) -> Result<()> {
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": obj.resource_version()}});
    api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// A tenant being deleted. Only a tenant carrying the finalizer gets here with work to do
/// (`Delete`): its topics and database are dropped, then the finalizer removed. When that
/// cannot finish, `DeletionBlocked` says what is left and why (and a Warning Event), and it
/// is retried. A paused tenant is left as it is (`DeletionBlocked`, reason
/// `ReconciliationPaused`). A policy turned to `Retain` meanwhile keeps everything.
async fn delete(obj: &AnalyticsTenant, ctx: &Context, api: &Api<AnalyticsTenant>) -> Result<Action> {
    if !obj.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let blocked = |reason: &str, message: &str| {
        status::deleting(
            obj.status.as_ref(),
            obj.metadata.generation,
            Some((reason, message)),
            Utc::now(),
        )
    };
    if obj.annotated(PAUSE_ANNOTATION) {
        let s = blocked(
            "ReconciliationPaused",
            &format!("the tenant is paused ({PAUSE_ANNOTATION}): nothing is dropped and the finalizer stays until the annotation is removed"),
        );
        status::publish(api, &ctx.recorder, obj, &s).await?;
        return Ok(Action::await_change());
    }
    let (reason, text) = match validate(obj, &ctx.config) {
        Err(e) => (
            "NothingToClean",
            format!("the tenant was never valid ({e}); nothing outside Kubernetes to delete"),
        ),
        Ok(v) => match (
            apply::check_conflicts(&v, obj, &ctx.tenants, &ctx.config),
            v.deletion_policy,
        ) {
            (Err(e), _) => ("NothingToClean", format!("nothing deleted: {e}")),
            (Ok(()), DeletionPolicy::Retain) => (
                "Retained",
                format!(
                    "deletionPolicy Retain: topics {} and database {} are kept",
                    v.names.topics.join(", "),
                    v.names.database
                ),
            ),
            (Ok(()), DeletionPolicy::Delete) => {
                let cleanup = apply::drop_external(&ctx.kafka, &ctx.client, &v).await;
                if !cleanup.done() {
                    let (_, first) = &cleanup.left[0];
                    let reason = first.reason();
                    let transient = cleanup.left.iter().all(|(_, e)| e.is_transient());
                    let message = format!(
                        "left: {}{}",
                        cleanup.describe_left(),
                        if cleanup.dropped.is_empty() {
                            String::new()
                        } else {
                            format!("; dropped: {}", cleanup.dropped.join(", "))
                        }
                    );
                    let s = blocked(reason, &message);
                    status::publish(api, &ctx.recorder, obj, &s).await?;
                    return Err(Error::Cleanup { message, transient });
                }
                (
                    "Deleted",
                    format!("deletionPolicy Delete: dropped {}", cleanup.dropped.join(", ")),
                )
            }
        },
    };
    tracing::info!(reason, "{text}");
    ctx.event(obj, EventType::Normal, reason, "Cleanup", text).await;
    let finalizers = obj.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    set_finalizers(api, obj, finalizers).await?;
    Ok(Action::await_change())
}

/// Validate, build, apply, then write the status whatever happened.
async fn apply_tenant(obj: &AnalyticsTenant, ctx: &Context, api: &Api<AnalyticsTenant>) -> Result<Action> {
    let mut report = Report {
        paused: obj.annotated(PAUSE_ANNOTATION),
        ..Report::default()
    };
    let outcome = steps(obj, ctx, &mut report).await;
    let status = status::compute(obj.status.as_ref(), obj.metadata.generation, &report, Utc::now());
    count_drift(obj, ctx, &report).await;
    status::publish(api, &ctx.recorder, obj, &status).await?;
    outcome.map(|()| Action::requeue(ctx.resync))
}

/// The drift metric and an Event per repair. A reported drift is counted once: when the
/// last status did not already list it.
async fn count_drift(obj: &AnalyticsTenant, ctx: &Context, report: &Report) {
    let listed = obj
        .status
        .as_ref()
        .and_then(|s| s.condition(IN_SYNC))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    for found in report.drift.iter().flatten() {
        match found.outcome {
            Outcome::Repaired => {
                ctx.metrics.drift_found(found.kind);
                ctx.distinct_event(
                    obj,
                    EventType::Normal,
                    "DriftRepaired",
                    "RepairDrift",
                    format!("{}; put back as the spec says", found.describe()),
                )
                .await;
            }
            Outcome::Reported if !listed.contains(&found.describe()) => ctx.metrics.drift_found(found.kind),
            Outcome::Reported => {}
        }
    }
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
    let children = build::build(&v, None)?;
    let policy = Policy {
        write: !report.paused,
        repair: v.tenant.spec.drift_policy == DriftPolicy::Repair,
    };
    let previous = obj.status.as_ref();
    let mut drift: Vec<Found> = Vec::new();
    let mut unchecked = Vec::new();

    // Topics.
    let recorded = previous.and_then(|s| s.applied_topics_digest.as_deref());
    let topics = match apply::topics::reconcile(&ctx.kafka, &children.topics, recorded, policy).await {
        Ok(t) => t,
        Err(e) => {
            report.topics = Step::failed(&e);
            return Err(e);
        }
    };
    drift.extend(topics.drift.iter().cloned());
    report.applied_topics_digest = topics.applied_digest.clone();
    report.topics = if !topics.missing.is_empty() && policy.write {
        Step::Failed {
            reason: "Missing",
            message: format!(
                "deleted and left so (driftPolicy Report): {}",
                topics.missing.join(", ")
            ),
            transient: false,
        }
    } else if !topics.pending.is_empty() && !policy.write {
        Step::Pending {
            message: format!("not applied while paused: {}", topics.pending.join("; ")),
        }
    } else {
        Step::Done {
            reason: "Provisioned",
            message: format!(
                "{} with {} partitions{}",
                v.names.topics.join(" and "),
                v.tenant.spec.kafka.partitions,
                if topics.changed.is_empty() {
                    String::new()
                } else {
                    format!(" ({} changed)", topics.changed.len())
                }
            ),
        }
    };
    report.loader_lag = loader_lag(&v).await;

    // Schema.
    let schema = async {
        let wh = apply::warehouse(&ctx.client, &v).await?;
        let recorded = previous.and_then(|s| s.applied_schema_digest.as_deref());
        apply::schema::reconcile(wh.as_ref(), &v, &children.ddl, recorded, policy, &ctx.references).await
    };
    let schema = match schema.await {
        Ok(s) => s,
        Err(e) => {
            report.schema = Step::failed(&e);
            report.drift = Some(drift);
            return Err(e);
        }
    };
    drift.extend(schema.drift.iter().cloned());
    unchecked.extend(schema.unchecked.clone());
    report.applied_schema_digest = schema.applied_digest.clone();
    report.schema_version = schema.version;
    report.schema = match (&schema.version, schema.missing.is_empty()) {
        (Some(version), true) if *version == schema.target => Step::Done {
            reason: "Migrated",
            message: format!("database {} at schema version {version}", v.names.database),
        },
        _ if !policy.write => Step::Pending {
            message: format!(
                "database {} at version {} of {}, {} objects missing: not changed while paused",
                v.names.database,
                schema.version.map(|v| v.to_string()).unwrap_or_else(|| "none".into()),
                schema.target,
                schema.missing.len()
            ),
        },
        _ => Step::Failed {
            reason: "Missing",
            message: format!(
                "database {} at version {} of {}; missing and left so (driftPolicy Report): {}",
                v.names.database,
                schema.version.map(|v| v.to_string()).unwrap_or_else(|| "none".into()),
                schema.target,
                schema.missing.join(", ")
            ),
            transient: false,
        },
    };

    // The signing Secret (a missing one stops nothing else: the workloads stay as they are).
    let secret = apply::secret::reconcile(&ctx.client, obj, &v, &children.secret, policy).await;
    let secret = match secret {
        Ok(s) => s,
        Err(e) => {
            report.signing_secret = Step::failed(&e);
            report.drift = Some(drift);
            return Err(e);
        }
    };
    report.signing_secret = secret.step.clone();
    report.signing_key_fingerprint = secret.fingerprint.clone();
    drift.extend(secret.drift.clone());
    if secret.regenerated {
        ctx.event(
            obj,
            EventType::Warning,
            "SigningSecretRegenerated",
            "RegenerateSigningSecret",
            format!(
                "a new signing key was made on request ({}): tokens issued before no longer verify and visitor ids change",
                crate::crd::REGENERATE_SECRET_ANNOTATION
            ),
        )
        .await;
    }

    // The workloads.
    let reconciled_before = previous.is_some_and(|s| s.observed_generation.is_some());
    let spec_changed = obj
        .metadata
        .generation
        .filter(|g| previous.and_then(|s| s.observed_generation) != Some(*g) && reconciled_before);
    let applied =
        match apply::children::reconcile(&ctx.client, &v, &children, policy, reconciled_before, spec_changed).await {
            Ok(c) => c,
            Err(e) => {
                report.collector = Step::failed(&e);
                report.drift = Some(drift);
                return Err(e);
            }
        };
    for started in &applied.rollouts_started {
        ctx.distinct_event(obj, EventType::Normal, "RolloutStarted", "Rollout", started.clone())
            .await;
    }
    apply::loaders::retire(&v, applied.loader_pods, policy).await;
    report.collector = applied.step(Role::Collector, policy);
    report.loader = applied.step(Role::Loader, policy);
    report.query = applied.step(Role::Query, policy);
    let mut rolling = applied.rolling();
    for started in &applied.rollouts_started {
        let role = started.split(':').next().unwrap_or_default();
        if !rolling.iter().any(|r| r.starts_with(role)) {
            rolling.push(started.clone());
        }
    }
    report.rollout = Some(rolling);
    drift.extend(applied.drift.iter().cloned());
    report.drift = Some(drift);
    report.unchecked = unchecked;
    report.collector_endpoint = Some(v.names.endpoint(Role::Collector));
    report.query_endpoint = Some(v.names.endpoint(Role::Query));
    // The processor version is known for the operator's own image; an override may differ.
    report.pipeline_version = (v.image == ctx.config.image).then_some(PIPELINE_VERSION);
    Ok(())
}

/// The loaders' lag, when Kafka answers (a status field, never a reason to fail).
async fn loader_lag(v: &Validated) -> Option<i64> {
    let lag = sightline_ingest::kafka::lag::group_lag(
        &v.brokers,
        &v.kafka_security,
        &v.names.consumer_group,
        &v.names.topics[0],
        v.tenant.spec.kafka.partitions,
        Duration::from_secs(5),
    )
    .await;
    match lag {
        Ok(lag) => Some(lag),
        Err(e) => {
            tracing::debug!(error = %e, "loader lag not read");
            None
        }
    }
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
