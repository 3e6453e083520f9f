//! The static group memberships a loader scale-down leaves behind, removed once it is done.
//!
//! A loader pod is a static member of its tenant's group (its pod name is its instance id),
//! and a static member does not leave the group when it stops: a restarted pod takes its
//! partitions back at once. When the StatefulSet is scaled down, the pods of the ordinals
//! from `ingest.loader.replicas` up are gone for good, and their partitions would sit
//! unconsumed until the broker's session timeout expires them (never, on some brokers:
//! noida-db). Once no such pod exists any more (`status.replicas` at most the wanted
//! replicas), their memberships are removed (`sightline_ingest::kafka::membership`), so the
//! partitions move at once. Removing earlier would let a pod still stopping rejoin.
//! Ordinals up to the topic's partitions are checked (replicas never exceed them); one that
//! is no member costs nothing (the group is described first). A failure is logged, never a
//! reconcile error: the broker expires the member in the end. Paused tenants are left alone.

use std::time::Duration;

use sightline_ingest::kafka::membership::{remove_static_members, Removal};
use sightline_ingest::loader::member_instance;

use super::Policy;
use crate::names::Role;
use crate::validate::Validated;

/// How long the broker may take to answer the removal.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Removes the memberships of loader pods scaled away, once none of them exists. `pods`:
/// the loader StatefulSet's `status.replicas` (`None` while the API has not said).
pub async fn retire(v: &Validated, pods: Option<i32>, policy: Policy) {
    let wanted = v.loader.replicas.max(0);
    let Some(pods) = pods else { return };
    if pods > wanted || !policy.write {
        return;
    }
    let tenant = v.tenant.name.as_str();
    let workload = v.names.workload(Role::Loader);
    let gone: Vec<String> = (wanted..v.tenant.spec.kafka.partitions as i32)
        .map(|ordinal| member_instance(&format!("{workload}-{ordinal}"), tenant))
        .collect();
    let group = &v.names.consumer_group;
    match remove_static_members(&v.brokers, &v.kafka_security, group, &gone, TIMEOUT).await {
        Ok(outcomes) => {
            for (member, outcome) in outcomes {
                if outcome == Removal::Removed {
                    tracing::info!(%tenant, %member, %group, "removed the group membership of a loader scaled away");
                }
            }
        }
        Err(e) => {
            tracing::warn!(%tenant, %group, error = %e, "could not remove the memberships of loaders scaled away")
        }
    }
}
