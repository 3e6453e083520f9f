//! The history limit: finished Reprocesses (Succeeded, Failed, Cancelled) of a tenant beyond
//! the operator's `--reprocess-history-limit` (default `DEFAULT_HISTORY_LIMIT`) are deleted,
//! the oldest first (by `finishedAt`, then creation, namespace and name), as CloudNativePG
//! and cert-manager bound their one-shot objects. The limit is the operator's, not the
//! tenant spec's: the tenant spec is core's, shared with standalone, where Reprocess
//! resources do not exist; how much history a cluster keeps is its operator's concern.
//! Finished Reprocesses carry no finalizer, so each goes at once, its Job and RBAC with it.

use std::sync::Arc;

use kube::ResourceExt;

use super::crd::Reprocess;

/// Finished Reprocesses kept per tenant unless `--reprocess-history-limit` says otherwise.
pub const DEFAULT_HISTORY_LIMIT: usize = 10;

/// The finished Reprocesses of `tenant` beyond the `limit` newest, oldest first, as read
/// (the caller deletes each on the condition that it is still that object: same uid, same
/// resourceVersion).
pub fn beyond_limit(all: &[Arc<Reprocess>], tenant: &str, limit: usize) -> Vec<Arc<Reprocess>> {
    let mut finished: Vec<&Arc<Reprocess>> = all
        .iter()
        .filter(|rp| rp.spec.reprocess.tenant_ref == tenant)
        .filter(|rp| rp.metadata.deletion_timestamp.is_none())
        .filter(|rp| rp.status.as_ref().is_some_and(|s| s.phase().is_final()))
        .collect();
    // Newest first.
    finished.sort_by_key(|rp| {
        std::cmp::Reverse((
            rp.status.as_ref().and_then(|s| s.finished_at.as_ref()).map(|t| t.0),
            rp.metadata.creation_timestamp.as_ref().map(|t| t.0),
            rp.namespace().unwrap_or_default(),
            rp.name_any(),
        ))
    });
    let mut out: Vec<Arc<Reprocess>> = finished.into_iter().skip(limit).cloned().collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reprocess::crd::{Phase, ReprocessResourceSpec, ReprocessStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn rp(name: &str, tenant: &str, finished: Option<i64>, phase: Phase) -> Arc<Reprocess> {
        let spec = serde_yaml::from_str(&format!("tenantRef: {tenant}\nfrom: 2026-11-01\nto: 2026-11-02\n")).unwrap();
        let mut o = Reprocess::new(name, ReprocessResourceSpec::new(spec));
        o.metadata.namespace = Some("analytics".into());
        o.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).unwrap()));
        o.status = Some(ReprocessStatus {
            phase,
            finished_at: finished.map(|s| Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + s).unwrap())),
            ..Default::default()
        });
        Arc::new(o)
    }

    #[test]
    fn the_oldest_finished_of_a_tenant_beyond_the_limit_go() {
        let all = vec![
            rp("c", "acme", Some(30), Phase::Succeeded),
            rp("a", "acme", Some(10), Phase::Failed),
            rp("running", "acme", None, Phase::Running),
            rp("b", "acme", Some(20), Phase::Cancelled),
            rp("d", "acme", Some(40), Phase::Succeeded),
            rp("other", "globex", Some(0), Phase::Succeeded),
        ];
        let names = |v: Vec<Arc<Reprocess>>| v.into_iter().map(|rp| rp.name_any()).collect::<Vec<_>>();
        assert_eq!(names(beyond_limit(&all, "acme", 2)), ["a", "b"]);
        assert_eq!(names(beyond_limit(&all, "acme", 4)), Vec::<String>::new());
        assert_eq!(
            names(beyond_limit(&all, "acme", 0)),
            ["a", "b", "c", "d"],
            "a running one is never counted"
        );
        assert_eq!(names(beyond_limit(&all, "globex", 0)), ["other"]);
    }
}
