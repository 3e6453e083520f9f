//! The `Reprocess` resource (issue 15): `kubectl apply` a range of a tenant's days, the
//! operator replays it in a Job it owns, `kubectl wait --for=condition=Complete`.
//! `crd` is the resource, `build` the Job and its narrow RBAC (pure), `queue` which of two
//! overlapping runs of a tenant waits for which, `status` the transitions of its status
//! (pure; the operator's and the Job pod's), `controller` the operator's reconciler,
//! `runner` the Job pod's side (`sightline reprocess --resource NS/NAME`), `plan` the plan
//! and its hash (issue 18), `history` which finished Reprocesses a tenant keeps.

pub mod build;
pub mod controller;
pub mod crd;
pub mod history;
pub mod plan;
pub mod queue;
pub mod runner;
pub mod status;
