//! The Reprocess reconciler: validate (the tenant exists and is valid, the Reprocess is in
//! its namespace, the range is not in the future, its days are sealed or `force` is set)
//! -> queue (an overlapping earlier Reprocess of the tenant runs first) -> build -> apply
//! (ServiceAccount, Role, RoleBinding by server-side apply; the Job created when absent and
//! never changed afterwards, so a run keeps the image it started with) -> status.
//!
//! The status's checkpoint is the source of truth for resuming: a Job deleted mid-run, or
//! one whose pod was killed, is recreated (or retried by Kubernetes) and its pod starts
//! from the days the status says are done. A Reprocess in a final phase is left alone.
//!
//! Status writes are JSON merge patches carrying the `resourceVersion` read (see
//! `status`): a 409 means the pod wrote meanwhile, and the reconcile is repeated at once.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sightline_core::processor::Current;
use sightline_core::warehouse::replay;
use tracing::Instrument;

use super::build::{self, Owner};
use super::crd::{Reprocess, ReprocessStatus};
use super::queue;
use super::status::{self, Decision};
use crate::crd::AnalyticsTenant;
use crate::error::{Error, Result};
use crate::validate::{validate, OperatorConfig};
use crate::FIELD_MANAGER;

/// A clock: the tests give a fixed one (nothing may depend on the date they run).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// What every reconcile of a Reprocess shares.
pub struct ReprocessContext {
    pub client: Client,
    pub config: OperatorConfig,
    /// Every Reprocess the controller has seen (for the queue).
    pub reprocesses: Store<Reprocess>,
    pub now: Clock,
    /// How often a waiting or running Reprocess is looked at again (besides the watches of
    /// its Job).
    pub poll: Duration,
}

/// One reconcile, in a span naming the Reprocess.
pub async fn reconcile(rp: Arc<Reprocess>, ctx: Arc<ReprocessContext>) -> Result<Action> {
    let span = tracing::info_span!("reconcile_reprocess", namespace = rp.namespace().unwrap_or_default(), name = %rp.name_any());
    async move {
        if rp.status.as_ref().is_some_and(|s| s.phase().is_final()) {
            return Ok(Action::await_change());
        }
        let now = (ctx.now)();
        let decision = decide(&rp, &ctx, now).await?;
        tracing::debug!(?decision, "decided");
        if let Some(new) = status::decide(rp.status.as_ref(), rp.metadata.generation, &decision, now) {
            match write_status(&ctx.client, &rp, &new).await {
                Ok(()) => {}
                // The pod (or another write) changed the object since it was read.
                Err(Error::Kube(kube::Error::Api(e))) if e.code == 409 => {
                    return Ok(Action::requeue(Duration::from_secs(1)))
                }
                Err(e) => return Err(e),
            }
        }
        Ok(match decision {
            Decision::Refused { .. } | Decision::JobFailed { .. } => Action::await_change(),
            Decision::Queued { .. } | Decision::Starting { .. } | Decision::Running { .. } => Action::requeue(ctx.poll),
        })
    }
    .instrument(span)
    .await
}

/// Transient errors retry after 10 s; the rest wait for the resource to change.
pub fn error_policy(_rp: Arc<Reprocess>, error: &Error, _ctx: Arc<ReprocessContext>) -> Action {
    tracing::warn!(reason = error.reason(), error = %error.chain(), "reprocess reconcile failed");
    if error.is_transient() {
        Action::requeue(Duration::from_secs(10))
    } else {
        Action::await_change()
    }
}

fn refused(reason: &'static str, message: String) -> Decision {
    Decision::Refused { reason, message }
}

/// The checks, the queue and the Job.
async fn decide(rp: &Reprocess, ctx: &ReprocessContext, now: DateTime<Utc>) -> Result<Decision> {
    let spec = &rp.spec.reprocess;
    let tenants: Api<AnalyticsTenant> = Api::all(ctx.client.clone());
    let Some(tenant) = tenants.get_opt(&spec.tenant_ref).await? else {
        return Ok(refused(
            "UnknownTenant",
            format!(
                "tenant {:?} does not exist (no AnalyticsTenant of that name)",
                spec.tenant_ref
            ),
        ));
    };
    let v = match validate(&tenant, &ctx.config) {
        Ok(v) => v,
        Err(e) => return Ok(refused("TenantInvalid", format!("tenant {}: {e}", spec.tenant_ref))),
    };
    let owner = match Owner::of(rp) {
        Ok(o) => o,
        Err(e) => return Ok(refused("Invalid", e.to_string())),
    };
    if let Err(e) = build::validate_namespace(&owner, &v) {
        return Ok(refused("WrongNamespace", e.to_string()));
    }
    let range = match queue::day_range(spec) {
        Ok(r) => r,
        Err(e) => return Ok(refused("InvalidRange", e.to_string())),
    };
    if range.first > now.date_naive() {
        return Ok(refused(
            "RangeInFuture",
            format!(
                "the range starts on {} (UTC), after today ({}): there is nothing to replay",
                range.first,
                now.date_naive()
            ),
        ));
    }
    // The engine's own checks (parallelism, sites of the tenant, sealed days), with the
    // operator's clock; the Job's pod makes them again with the processor it runs.
    let mut request = match spec.request(&v.tenant, Arc::new(Current)) {
        Ok(r) => r,
        Err(e) => return Ok(refused("Invalid", e.to_string())),
    };
    request.now = now;
    match replay::prepare(&request) {
        Ok(_) => {}
        Err(e @ sightline_core::Error::DayNotSealed { .. }) => {
            return Ok(refused("NotSealed", format!("{e}; set spec.force to replay it anyway")))
        }
        Err(e) => return Ok(refused("Invalid", e.to_string())),
    }
    if let Some(blocker) = queue::waits_for(rp, &ctx.reprocesses.state()) {
        return Ok(Decision::Queued {
            message: queue::queued_message(rp, &blocker),
        });
    }
    let children = build::build(&owner, &v);
    let ns = owner.namespace.as_str();
    ssa(&ctx.client, ns, &children.service_account).await?;
    ssa(&ctx.client, ns, &children.role).await?;
    ssa(&ctx.client, ns, &children.role_binding).await?;
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), ns);
    let name = owner.child_name();
    let Some(job) = jobs.get_opt(&name).await? else {
        // First start, or the Job was deleted mid-run: its pod resumes from the status.
        ssa(&ctx.client, ns, &children.job).await?;
        return Ok(Decision::Starting { job: name });
    };
    let job_status = job.status.unwrap_or_default();
    let conditions = job_status.conditions.unwrap_or_default();
    let true_condition = |type_: &str| conditions.iter().find(|c| c.type_ == type_ && c.status == "True");
    if let Some(c) = true_condition("Failed") {
        let message = [c.reason.clone(), c.message.clone()]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(": ");
        return Ok(Decision::JobFailed { job: name, message });
    }
    if true_condition("Complete").is_some() {
        // The pod reports before it exits 0; a Job complete without a final status means
        // that report was lost.
        return Ok(Decision::JobFailed {
            job: name,
            message: "the Job completed but its pod did not report an outcome".into(),
        });
    }
    if job_status.active.unwrap_or(0) > 0 {
        return Ok(Decision::Running { job: name });
    }
    Ok(Decision::Starting { job: name })
}

/// A merge patch of the status carrying the `resourceVersion` read (optimistic lock).
pub async fn write_status(client: &Client, rp: &Reprocess, status: &ReprocessStatus) -> Result<()> {
    let api: Api<Reprocess> = Api::namespaced(client.clone(), &rp.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": rp.resource_version()},
        "status": status,
    });
    api.patch_status(&rp.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

async fn ssa<K>(client: &Client, ns: &str, object: &K) -> Result<K>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let body = crate::build::typed(object)?;
    Ok(api
        .patch(
            &object.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await?)
}

/// The label selector of the Jobs the controller watches.
pub fn jobs_selector() -> String {
    "app.kubernetes.io/component=reprocess".into()
}

/// Runs the Reprocess controller until `stop` resolves.
pub async fn run(
    client: Client,
    make_context: impl FnOnce(Store<Reprocess>) -> Arc<ReprocessContext>,
    stop: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<Reprocess> = Api::all(client.clone());
    let controller = Controller::new(api, watcher::Config::default().any_semantic());
    let ctx = make_context(controller.store());
    controller
        .owns(
            Api::<Job>::all(client),
            watcher::Config::default().labels(&jobs_selector()),
        )
        .graceful_shutdown_on(stop)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "reprocess controller event");
            }
        })
        .await;
}
