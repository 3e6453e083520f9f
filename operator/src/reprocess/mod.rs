//! The `Reprocess` resource (issue 15): `kubectl apply` a range of a tenant's days, the
//! operator replays it in a Job it owns, `kubectl wait --for=condition=Complete`.
//! `crd` is the resource, `build` the Job and its narrow RBAC (pure).

pub mod build;
pub mod crd;
