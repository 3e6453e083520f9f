//! The operator: the `AnalyticsTenant` controller and, under the same lease, the `Reprocess`
//! controller (`reprocess`: plans, approvals, a Job per run). A tenant's reconcile is a
//! pipeline of named steps, each its own module: `validate` (one `Validated` value with
//! every default resolved) -> `build` (pure, one module per Kubernetes kind, plus the topic
//! specs and the DDL plan) -> `apply` (topics and DDL through the shared ingest and core
//! code, then server-side apply) -> `status` (conditions by server-side apply on `/status`,
//! Events on transitions). `controller` runs it for every tenant, `leader` makes two
//! replicas safe, `http` serves `/metrics`, `/healthz` and `/readyz`, `render` prints what
//! would be applied, `plugin` is `kubectl sightline` (status, token, report, reprocess),
//! `crds` the CRDs it serves and applies.

pub mod apply;
pub mod build;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod crds;
pub mod drift;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod plugin;
pub mod render;
pub mod reprocess;
pub mod serve;
pub mod status;
pub mod validate;

pub use error::{Error, Result};

/// The one field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "sightline-operator";
