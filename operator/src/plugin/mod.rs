//! `kubectl sightline`: the operator's client side, run by a person against the cluster
//! (the `sightline` binary installed as `kubectl-sightline`). Each command is a function
//! of an API client that returns what it prints, so it is tested against a mocked API
//! server. `status` (one screen per tenant), `token` (issue a token from the tenant's
//! Secret, read through the API), `report` (a redacted support bundle), `reprocess`
//! (`plan`, `approve`, `cancel` of a Reprocess); `connect` makes the client and names the
//! server in a failure to reach it.

pub mod connect;
pub mod report;
pub mod reprocess;
pub mod status;
pub mod token;

/// What a plugin command can fail with; the message names the object and the fix.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The tenant (or a Secret it needs) is not in the cluster.
    #[error("{0}")]
    NotFound(String),
    /// The request is not one the tenant allows (a site it does not list, …).
    #[error("{0}")]
    Refused(String),
    /// The Kubernetes API refused or failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// No configuration to reach a cluster with (no kubeconfig, not in a pod), or one that
    /// cannot be used; says which and why (`connect`).
    #[error("{0}")]
    Config(String),
    /// The API server could not be connected to; names it, where its URL came from, and why
    /// (`connect::ApiServer::explain`).
    #[error("{0}")]
    Unreachable(String),
    #[error("{0}")]
    Serialize(#[from] serde_yaml::Error),
}

/// The namespace of a tenant's workloads and Secret: the spec's, else the one its collector
/// endpoint names (`http://<name>.<namespace>.svc:<port>`, set by the operator).
pub fn workload_namespace(t: &crate::crd::AnalyticsTenant) -> Option<String> {
    t.spec.tenant.ingest.namespace.clone().or_else(|| {
        let endpoint = t.status.as_ref()?.collector_endpoint.as_ref()?;
        let host = endpoint.strip_prefix("http://")?.split(':').next()?;
        host.split('.').nth(1).map(str::to_string)
    })
}
