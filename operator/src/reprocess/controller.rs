//! The Reprocess reconciler: validate (the tenant exists and is valid, the Reprocess is in
//! its namespace, the range is not in the future, its days are sealed or `force` is set)
//! -> plan (until the run starts: read-only queries on the warehouse and the image's
//! digest, `plan`; a changed plan is recorded and, under `approval: Manual`, needs approving
//! again) -> approve (`spec.approvedPlanHash` must name the plan under `Manual`) -> queue (an
//! overlapping earlier Reprocess of the tenant runs first) -> finalizer -> build -> apply
//! (ServiceAccount, Role, RoleBinding by server-side apply; the Job, running the plan's
//! image by digest, created when absent and never changed afterwards) -> stall check ->
//! status.
//!
//! The status's ledger is the source of truth for resuming: a Job deleted mid-run, or one
//! whose pod was killed, is recreated (or retried by Kubernetes) and its pod starts from
//! the days the ledger holds. A running Reprocess is looked at every `poll_running` (20 s):
//! with no heartbeat for 60 s, or no pod for 30 s, it is `Stalled` (a Warning Event), its
//! Job is replaced, at most `spec.maxStallRestarts` times, then it is `Failed`
//! (`StalledTooOften`). A stall is written (counted, `lastStallTime`, the stalled Job's
//! uid) before that Job is deleted, so a conflicting write deletes nothing and a failed
//! deletion is retried, not counted again; a Job missing after a stall is made, not
//! counted. The plan (and `Approved`) and `jobCreationTime` are written before a Job is
//! made. A Reprocess in a final phase gets no Job (its finalizer removed, a stalled Job
//! still recorded deleted), and the tenant's finished ones beyond the history limit are
//! deleted (`history`).
//!
//! Deletion: the finalizer (`crd::FINALIZER`) is set only once the Reprocess is admitted
//! and about to get its Job. A deleted Reprocess whose pod reported `Running` and whose Job
//! still has a pod waits: the pod sees the deletion at its next status write (after the
//! day under way), writes `Cancelled` and exits. Then, or at once for one whose pod never
//! started a day, the operator records the finished days in an Event (the status goes with
//! the object), removes the finalizer and sets nothing else; the Job and its RBAC go with
//! their owner reference.
//!
//! Status and finalizer writes are JSON merge patches carrying the `resourceVersion` read
//! (see `status`): a 409 means the pod wrote meanwhile, and the reconcile is repeated.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sightline_core::processor::{Current, Processor, ProcessorConfig, PIPELINE_VERSION};
use sightline_core::warehouse::{replay, tiers};
use tracing::Instrument;

use super::build::{self, Owner};
use super::crd::{Phase, Reprocess, ReprocessPlan, ReprocessStatus, FINALIZER};
use super::plan::{self, ImageSource, OwnPod, PlanInputs, TenantWarehouse, Warehouses};
use super::status::{self, Decision, JobState, PlanVerdict};
use super::{history, queue};
use crate::crd::AnalyticsTenant;
use crate::error::{Error, Result};
use crate::validate::{validate, OperatorConfig, Validated};
use crate::FIELD_MANAGER;

/// A clock: the tests give a fixed one (nothing may depend on the date they run).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// How soon a write that lost a race (409) is tried again.
const AFTER_CONFLICT: Duration = Duration::from_secs(1);

/// What every reconcile of a Reprocess shares.
pub struct ReprocessContext {
    pub client: Client,
    pub config: OperatorConfig,
    /// Every Reprocess the controller has seen (for the queue).
    pub reprocesses: Store<Reprocess>,
    pub now: Clock,
    /// How often a waiting Reprocess is looked at again (besides the watches of its Job).
    pub poll: Duration,
    /// How often a running one is (its heartbeat checked): at most 20 s, so a stall is
    /// found within `HEARTBEAT_TIMEOUT` + 20 s < 90 s.
    pub poll_running: Duration,
    /// Records the Event a deleted Reprocess leaves behind, and stalls.
    pub recorder: Recorder,
    /// Opens a tenant's warehouse for the plan's read-only queries.
    pub warehouses: Arc<dyn Warehouses>,
    /// Resolves the Job's image to a digest.
    pub images: Arc<ImageSource>,
    /// Finished Reprocesses kept per tenant (`history`).
    pub history_limit: usize,
}

impl ReprocessContext {
    pub fn new(
        client: Client,
        config: OperatorConfig,
        reprocesses: Store<Reprocess>,
        now: Clock,
        poll: Duration,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            images: Arc::new(ImageSource::new(config.image.clone(), OwnPod::from_env())),
            client,
            config,
            reprocesses,
            now,
            poll,
            poll_running: poll.min(MAX_POLL_RUNNING),
            warehouses: Arc::new(TenantWarehouse),
            history_limit: history::DEFAULT_HISTORY_LIMIT,
        }
    }

    /// The warehouses the plan reads (tests: the embedded engine).
    pub fn with_warehouses(mut self, warehouses: Arc<dyn Warehouses>) -> Self {
        self.warehouses = warehouses;
        self
    }

    /// Where the operator's own pod is, to read its image's digest (instead of
    /// `POD_NAMESPACE`/`POD_NAME`).
    pub fn with_own_pod(mut self, own_pod: Option<OwnPod>) -> Self {
        self.images = Arc::new(ImageSource::new(self.config.image.clone(), own_pod));
        self
    }

    /// Finished Reprocesses kept per tenant.
    pub fn with_history_limit(mut self, limit: usize) -> Self {
        self.history_limit = limit;
        self
    }
}

/// The longest time between two looks at a running Reprocess.
pub const MAX_POLL_RUNNING: Duration = Duration::from_secs(20);

fn conflict(e: &Error) -> bool {
    matches!(e, Error::Kube(kube::Error::Api(s)) if s.code == 409)
}

/// One reconcile, in a span naming the Reprocess.
pub async fn reconcile(rp: Arc<Reprocess>, ctx: Arc<ReprocessContext>) -> Result<Action> {
    let span = tracing::info_span!("reconcile_reprocess", namespace = rp.namespace().unwrap_or_default(), name = %rp.name_any());
    async move {
        let outcome = if rp.metadata.deletion_timestamp.is_some() {
            on_delete(&rp, &ctx).await
        } else if rp.status.as_ref().is_some_and(|s| s.phase().is_final()) {
            on_final(&rp, &ctx).await
        } else {
            admit_and_run(&rp, &ctx).await
        };
        match outcome {
            // The pod (or another write) changed the object since it was read.
            Err(e) if conflict(&e) => Ok(Action::requeue(AFTER_CONFLICT)),
            other => other,
        }
    }
    .instrument(span)
    .await
}

/// A Reprocess in a final phase: nothing runs any more, so nothing for a deletion to wait
/// for (its finalizer goes); first a run failed for stalling whose Job's deletion failed
/// after the status said so (or a run that stalled once): the Job of that uid deleted, then
/// forgotten, so a finished run is not looked at again. Then the history limit.
async fn on_final(rp: &Reprocess, ctx: &ReprocessContext) -> Result<Action> {
    let mut rp = rp.clone();
    if let Some(status) = rp.status.clone().filter(|s| s.replaced_job_uid.is_some()) {
        delete_replaced_job(ctx, &rp, status.replaced_job_uid.as_deref()).await?;
        let forgotten = ReprocessStatus {
            replaced_job_uid: None,
            ..status
        };
        rp = write_status(&ctx.client, &rp, &forgotten).await?;
    }
    if has_finalizer(&rp) {
        remove_finalizer(&ctx.client, &rp).await?;
    }
    prune_history(&rp, ctx).await?;
    Ok(Action::await_change())
}

/// A Reprocess that is not final and not deleted: decide, then write the status.
async fn admit_and_run(rp: &Reprocess, ctx: &ReprocessContext) -> Result<Action> {
    let now = (ctx.now)();
    let (decision, verdict, rp) = decide(rp, ctx, now).await?;
    tracing::debug!(?decision, "decided");
    if let Some(new) = status::decide(
        rp.status.as_ref(),
        rp.metadata.generation,
        &decision,
        verdict.as_ref(),
        now,
    ) {
        write_status(&ctx.client, &rp, &new).await?;
    }
    // A stall is written (counted, the Job's uid recorded) before its Job is deleted: a
    // write that loses the race to the pod's own leaves the Job alone, and a deletion that
    // fails is retried by the next look (a Job of the recorded uid is deleted on sight).
    match &decision {
        Decision::Stalled {
            reason,
            message,
            job_uid,
        } => {
            warn(ctx, &rp, reason, message).await;
            delete_replaced_job(ctx, &rp, job_uid.as_deref()).await?;
        }
        Decision::StalledTooOften { message, job_uid } => {
            warn(ctx, &rp, "StalledTooOften", message).await;
            delete_replaced_job(ctx, &rp, job_uid.as_deref()).await?;
        }
        _ => {}
    }
    Ok(match decision {
        Decision::Refused { .. } | Decision::JobFailed { .. } | Decision::StalledTooOften { .. } => {
            Action::await_change()
        }
        Decision::PlanUnavailable { .. } | Decision::AwaitingApproval { .. } | Decision::Queued { .. } => {
            Action::requeue(ctx.poll)
        }
        Decision::Starting { .. } | Decision::Running { .. } | Decision::Stalled { .. } => {
            Action::requeue(ctx.poll_running)
        }
    })
}

/// A Warning Event on the Reprocess (a courtesy: a failure is logged).
async fn warn(ctx: &ReprocessContext, rp: &Reprocess, reason: &str, message: &str) {
    tracing::warn!(reason, "{message}");
    let event = KubeEvent {
        type_: EventType::Warning,
        reason: reason.into(),
        note: Some(status::bounded(message).chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &rp.object_ref(&())).await {
        tracing::warn!(error = %e, "event not recorded");
    }
}

/// Deletes the tenant's finished Reprocesses beyond the history limit, oldest first.
async fn prune_history(rp: &Reprocess, ctx: &ReprocessContext) -> Result<()> {
    let doomed = history::beyond_limit(
        &ctx.reprocesses.state(),
        &rp.spec.reprocess.tenant_ref,
        ctx.history_limit,
    );
    for old in doomed {
        let (namespace, name) = (old.namespace().unwrap_or_default(), old.name_any());
        let api: Api<Reprocess> = Api::namespaced(ctx.client.clone(), &namespace);
        tracing::info!(%namespace, %name, limit = ctx.history_limit, "deleting a finished Reprocess beyond the tenant's history limit");
        // Only the object read as finished: a Reprocess deleted and created again under
        // the same name (a GitOps re-apply) while the cache still held the old one fails
        // the precondition (409) and is left alone.
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: old.uid(),
                resource_version: old.resource_version(),
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn has_finalizer(rp: &Reprocess) -> bool {
    rp.finalizers().iter().any(|f| f == FINALIZER)
}

/// Writes `finalizers` by merge patch with the `resourceVersion` read; the object written.
async fn set_finalizers(client: &Client, rp: &Reprocess, finalizers: Vec<String>) -> Result<Reprocess> {
    let api: Api<Reprocess> = Api::namespaced(client.clone(), &rp.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": rp.resource_version(), "finalizers": finalizers},
    });
    Ok(api
        .patch(&rp.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?)
}

/// The Reprocess with the finalizer (added if missing).
async fn ensure_finalizer(client: &Client, rp: &Reprocess) -> Result<Reprocess> {
    if has_finalizer(rp) {
        return Ok(rp.clone());
    }
    let mut finalizers = rp.finalizers().to_vec();
    finalizers.push(FINALIZER.into());
    set_finalizers(client, rp, finalizers).await
}

async fn remove_finalizer(client: &Client, rp: &Reprocess) -> Result<()> {
    let finalizers: Vec<String> = rp.finalizers().iter().filter(|f| *f != FINALIZER).cloned().collect();
    match set_finalizers(client, rp, finalizers).await {
        // Gone already.
        Err(Error::Kube(kube::Error::Api(e))) if e.code == 404 => Ok(()),
        other => other.map(|_| ()),
    }
}

/// A deleted Reprocess: wait for a pod that is replaying to stop after its day, then
/// leave the finished days in an Event and let the object go.
async fn on_delete(rp: &Reprocess, ctx: &ReprocessContext) -> Result<Action> {
    if !has_finalizer(rp) {
        return Ok(Action::await_change());
    }
    let phase = rp.status.as_ref().map(ReprocessStatus::phase).unwrap_or_default();
    // A pod writes Running before it touches a day and checks for the deletion at every
    // write after that, so a Reprocess seen Pending after its deletion has no pod that
    // will replay anything.
    if phase == Phase::Running {
        if let Ok(owner) = Owner::of(rp) {
            let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &owner.namespace);
            let status = rp.status.clone().unwrap_or_default();
            // Not waited for: a stalled Job (its deletion failed after the stall was
            // written) or a pod silent past the heartbeat timeout; neither will write
            // Cancelled, and their day leases keep any replay of theirs apart.
            let silent =
                status::last_sign_of_life(&status).is_none_or(|at| (ctx.now)() - at > status::HEARTBEAT_TIMEOUT);
            let replaced = status.replaced_job_uid.as_deref();
            if jobs.get_opt(&owner.child_name()).await?.as_ref().is_some_and(|j| {
                job_has_a_pod(j) && !silent && (replaced.is_none() || j.metadata.uid.as_deref() != replaced)
            }) {
                tracing::info!("deleted while its pod replays: waiting for it to stop after the days under way");
                return Ok(Action::requeue(ctx.poll.min(Duration::from_secs(5))));
            }
        }
    }
    let note = status::finished_days_note(phase, rp.status.as_ref());
    let reason = match phase {
        Phase::Succeeded | Phase::Failed => "Deleted",
        Phase::Pending | Phase::Running | Phase::Cancelled => "Cancelled",
    };
    tracing::info!(reason, "{note}");
    let event = KubeEvent {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(note),
        action: "Delete".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &rp.object_ref(&())).await {
        // The Event is a courtesy; a deletion must not hang on it.
        tracing::warn!(error = %e, "event not recorded");
    }
    remove_finalizer(&ctx.client, rp).await?;
    Ok(Action::await_change())
}

/// Whether a Job still has a pod (pending or running) and has not finished.
fn job_has_a_pod(job: &Job) -> bool {
    let Some(status) = &job.status else {
        return false;
    };
    let finished = status
        .conditions
        .iter()
        .flatten()
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True");
    !finished && status.active.unwrap_or(0) > 0
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

/// The checks, the plan and its approval, the queue, the finalizer and the Job; the
/// decision, the plan's verdict (for a run not started) and the Reprocess as last written
/// (the finalizer patch moves its `resourceVersion`).
async fn decide(
    rp: &Reprocess,
    ctx: &ReprocessContext,
    now: DateTime<Utc>,
) -> Result<(Decision, Option<PlanVerdict>, Reprocess)> {
    let (owner, v) = match check(rp, ctx, now).await? {
        Ok(admitted) => admitted,
        Err(refused) => return Ok((refused, None, rp.clone())),
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let existing = jobs.get_opt(&owner.child_name()).await?;
    let status = rp.status.clone().unwrap_or_default();
    // Once a Job was made, the plan is the one it runs: never recomputed. (A Job whose
    // plan was not recorded, its status write lost, gets the plan recorded now.)
    let started = existing.is_some() || status.phase() == Phase::Running || status.job_name.is_some();
    let verdict = if started && status.plan.is_some() {
        None
    } else {
        match make_plan(rp, ctx, &v, now).await? {
            Ok(plan) => {
                let previous_reason = status.condition(super::crd::APPROVED).map(|c| c.reason.as_str());
                let verdict = status::verdict(&rp.spec, status.plan.as_ref(), previous_reason, plan);
                if !verdict.approved && !started {
                    let decision = Decision::AwaitingApproval {
                        reason: verdict.reason,
                        message: verdict.message.clone(),
                    };
                    return Ok((decision, Some(verdict), rp.clone()));
                }
                Some(verdict)
            }
            Err(unavailable) if !started => return Ok((unavailable, None, rp.clone())),
            // The Job runs whatever it was made with; its pod checks what it can.
            Err(_) => None,
        }
    };
    if let Some(blocker) = queue::waits_for(rp, &ctx.reprocesses.state()) {
        let message = queue::queued_message(rp, &blocker);
        return Ok((Decision::Queued { message }, verdict, rp.clone()));
    }
    let image = verdict
        .as_ref()
        .map(|v| v.plan.image.clone())
        .or_else(|| status.plan.as_ref().map(|p| p.image.clone()))
        .unwrap_or_else(|| v.image.clone());
    let mut rp = ensure_finalizer(&ctx.client, rp).await?;
    let decision = job(ctx, &owner, &v, &image, existing, verdict.as_ref(), &mut rp, now).await?;
    Ok((decision, verdict, rp))
}

/// The plan of a run not started, or why none can be made (`PlanUnavailable`).
async fn make_plan(
    rp: &Reprocess,
    ctx: &ReprocessContext,
    v: &Validated,
    now: DateTime<Utc>,
) -> Result<Result<ReprocessPlan, Decision>> {
    let unavailable = |reason: &'static str, message: String| Ok(Err(Decision::PlanUnavailable { reason, message }));
    let image = match ctx.images.resolve(&ctx.client, &v.image).await {
        Ok(image) => image,
        Err(Error::ImageDigestUnknown(message)) => return unavailable("ImageDigestUnknown", message),
        Err(e) => return Err(e),
    };
    let spec = &rp.spec.reprocess;
    let range = match queue::day_range(spec) {
        Ok(r) => r,
        Err(e) => {
            return Ok(Err(Decision::Refused {
                reason: "InvalidRange",
                message: e.to_string(),
            }))
        }
    };
    let wh = match ctx.warehouses.open(&ctx.client, v).await {
        Ok(wh) => wh,
        Err(e) => {
            return unavailable(
                "WarehouseUnavailable",
                format!("the plan reads the tenant's warehouse: {}", e.chain()),
            )
        }
    };
    let days = match plan::read_days(
        wh.as_ref(),
        &v.tenant.database(),
        range.first,
        range.last,
        tiers::sealed_through(now),
    )
    .await
    {
        Ok(days) => days,
        Err(e) => {
            return unavailable(
                "WarehouseUnavailable",
                format!("the plan's read of events_raw's partitions failed: {e}"),
            )
        }
    };
    let processing = sightline_core::processor::identity(
        Current.version(),
        ProcessorConfig {
            bot_filtering: v.tenant.spec.bot_filtering,
        },
    );
    let inputs = PlanInputs {
        spec: spec.clone(),
        processing,
        pipeline_version: PIPELINE_VERSION,
        image,
        days,
    };
    Ok(Ok(plan::make(&inputs, now)))
}

fn refused<T>(reason: &'static str, message: String) -> Result<Result<T, Decision>> {
    Ok(Err(Decision::Refused { reason, message }))
}

/// The refusals, in order; the Reprocess as its children name it and its tenant when it
/// may run.
async fn check(
    rp: &Reprocess,
    ctx: &ReprocessContext,
    now: DateTime<Utc>,
) -> Result<Result<(Owner, Validated), Decision>> {
    let spec = &rp.spec.reprocess;
    let tenants: Api<AnalyticsTenant> = Api::all(ctx.client.clone());
    let Some(tenant) = tenants.get_opt(&spec.tenant_ref).await? else {
        return refused(
            "UnknownTenant",
            format!(
                "tenant {:?} does not exist (no AnalyticsTenant of that name)",
                spec.tenant_ref
            ),
        );
    };
    let v = match validate(&tenant, &ctx.config) {
        Ok(v) => v,
        Err(e) => return refused("TenantInvalid", format!("tenant {}: {e}", spec.tenant_ref)),
    };
    let owner = match Owner::of(rp) {
        Ok(o) => o,
        Err(e) => return refused("Invalid", e.to_string()),
    };
    if let Err(e) = build::validate_namespace(&owner, &v) {
        return refused("WrongNamespace", e.to_string());
    }
    if let Some(cluster) = &v.tenant.spec.clickhouse.cluster {
        // The engine refuses too (REPLACE PARTITION swaps one server's tables); said here
        // so that no Job is started for it.
        return refused(
            "NotSupported",
            format!(
                "tenant {} is on ClickHouse cluster {cluster}, where replays are not done yet (they swap partitions per shard)",
                spec.tenant_ref
            ),
        );
    }
    let range = match queue::day_range(spec) {
        Ok(r) => r,
        Err(e) => return refused("InvalidRange", e.to_string()),
    };
    if range.first > now.date_naive() {
        return refused(
            "RangeInFuture",
            format!(
                "the range starts on {} (UTC), after today ({}): there is nothing to replay",
                range.first,
                now.date_naive()
            ),
        );
    }
    // The engine's own checks (parallelism, sites of the tenant, sealed days), with the
    // operator's clock; the Job's pod makes them again with the processor it runs.
    let mut request = match spec.request(&v.tenant, Arc::new(Current)) {
        Ok(r) => r,
        Err(e) => return refused("Invalid", e.to_string()),
    };
    request.now = now;
    match replay::prepare(&request) {
        Ok(_) => {}
        Err(e @ sightline_core::Error::DayNotSealed { .. }) => {
            return refused("NotSealed", format!("{e}; set spec.force to replay it anyway"))
        }
        Err(e) => return refused("Invalid", e.to_string()),
    }
    Ok(Ok((owner, v)))
}

/// The Job and its RBAC: applied (the Job, running `image`, only when absent, after
/// `status::before_job` is written to `rp`), what the Job says, and whether a running
/// Reprocess stalled (the caller writes that, then deletes the Job; a later reconcile makes
/// the replacement once it is gone).
#[allow(clippy::too_many_arguments)]
async fn job(
    ctx: &ReprocessContext,
    owner: &Owner,
    v: &Validated,
    image: &str,
    existing: Option<Job>,
    verdict: Option<&PlanVerdict>,
    rp: &mut Reprocess,
    now: DateTime<Utc>,
) -> Result<Decision> {
    let status = rp.status.clone().unwrap_or_default();
    let status = &status;
    let children = build::build(owner, v, image);
    let ns = owner.namespace.as_str();
    ssa(&ctx.client, ns, &children.service_account).await?;
    ssa(&ctx.client, ns, &children.role).await?;
    ssa(&ctx.client, ns, &children.role_binding).await?;
    let name = owner.child_name();
    let replaced = status.replaced_job_uid.as_deref();
    let state = match &existing {
        None => JobState::Absent,
        Some(j) if j.metadata.deletion_timestamp.is_some() => JobState::Deleting,
        Some(j) if replaced.is_some() && j.metadata.uid.as_deref() == replaced => {
            // The stalled Job, its deletion written in the status but not done (it failed
            // after the write): done now; a later look makes the replacement.
            delete_replaced_job(ctx, rp, replaced).await?;
            return Ok(Decision::Starting { job: name });
        }
        Some(j) if job_has_a_pod(j) => JobState::HasPod,
        Some(_) => JobState::NoPod,
    };
    if let Some((reason, mut message)) = status::stall(status, state, now) {
        if let Some(finalizers) = existing
            .as_ref()
            .and_then(|j| j.metadata.finalizers.as_ref())
            .filter(|_| state == JobState::Deleting)
        {
            message = format!("{message}: {}", finalizers.join(", "));
        }
        let limit = rp.spec.max_stall_restarts;
        let job_uid = existing
            .as_ref()
            .filter(|_| state != JobState::Deleting)
            .and_then(|j| j.metadata.uid.clone());
        if status.stall_restarts >= limit {
            return Ok(Decision::StalledTooOften {
                message: format!(
                    "{message}; but the run has stalled {} times already (spec.maxStallRestarts {limit}): giving up; \
                     its ledger keeps the days done for another Reprocess",
                    status.stall_restarts + 1
                ),
                job_uid,
            });
        }
        return Ok(Decision::Stalled {
            reason,
            message,
            job_uid,
        });
    }
    let Some(job) = existing else {
        // First start, the replacement after a stall, or the Job was deleted mid-run: its
        // pod resumes from the status. The plan and the time are written first, with the
        // resourceVersion read: a stale view of the run (already failed, or changed by its
        // pod) conflicts here and makes no Job.
        let before = status::before_job(rp.status.as_ref(), rp.metadata.generation, verdict, now);
        *rp = write_status(&ctx.client, rp, &before).await?;
        ssa(&ctx.client, ns, &children.job).await?;
        return Ok(Decision::Starting { job: name });
    };
    if state == JobState::Deleting {
        // Being deleted by someone else (a stalled Job goes at once: background
        // propagation): made again once gone.
        return Ok(Decision::Starting { job: name });
    }
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
    if state == JobState::HasPod {
        return Ok(Decision::Running { job: name });
    }
    Ok(Decision::Starting { job: name })
}

/// Deletes the Reprocess's Job if it is still the one of `uid` (a precondition: a
/// replacement made since under the same name is left alone). Background propagation: the
/// Job goes at once and the garbage collector removes its pod, so a pod stuck terminating
/// (its node lost) never holds the replacement back; day leases keep two pods off one day.
async fn delete_replaced_job(ctx: &ReprocessContext, rp: &Reprocess, uid: Option<&str>) -> Result<()> {
    let Some(uid) = uid else {
        return Ok(());
    };
    // A Reprocess that cannot name its children (refused as Invalid) never had a Job.
    let Ok(owner) = Owner::of(rp) else {
        return Ok(());
    };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &owner.namespace);
    let name = owner.child_name();
    // No read first: the uid precondition makes a Job already replaced a 409 and a Job
    // already gone a 404, both done.
    tracing::info!(job = %name, %uid, "deleting the stalled run's Job");
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match jobs.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A merge patch of the status carrying the `resourceVersion` read (optimistic lock).
pub async fn write_status(client: &Client, rp: &Reprocess, status: &ReprocessStatus) -> Result<Reprocess> {
    let api: Api<Reprocess> = Api::namespaced(client.clone(), &rp.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": rp.resource_version()},
        "status": status::status_patch(rp.status.as_ref(), status),
    });
    Ok(api
        .patch_status(&rp.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?)
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
