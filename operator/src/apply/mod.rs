//! Apply: carries out what build produced, in the order that keeps pods safe, and finds
//! drift on the way (`crate::drift`).
//!
//! 1. Conflicts: a tenant that claims another tenant's database or topics touches nothing.
//! 2. Topics (`topics`), through the shared provisioning code (plan first: a partition
//!    decrease or a replication change is refused before anything is done).
//! 3. Schema (`schema`), through core's `ops::apply_schema` (the operator is the single
//!    migrator), then every table and view of the plan checked against a reference built
//!    by the same server from the same plan.
//! 4. The signing Secret (`secret`), created once, never overwritten, never silently
//!    regenerated.
//! 5. The ConfigMap, then the workloads (`children`), by server-side apply under one field
//!    manager with force, each only when it differs from what the operator applies.
//!
//! 6. After a loader scale-down, the departed pods' static group memberships (`loaders`).
//!
//! Steps 2 and 3 come before 5, so a spec change that needs new topics or schema has them
//! before the new configuration reaches the pods. Every step takes a `Policy`: a paused
//! tenant writes nothing, and `driftPolicy: Report` leaves drift where it is.

pub mod children;
pub mod loaders;
pub mod schema;
pub mod secret;
pub mod topics;

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sightline_core::ddl::Form;
use sightline_core::warehouse::http::{Http, HttpConfig};
use sightline_core::warehouse::{ops, Warehouse};
use sightline_ingest::kafka::provision::Provisioner;

use crate::crd::AnalyticsTenant;
use crate::drift::Outcome;
use crate::error::{Error, Result};
use crate::validate::{validate, OperatorConfig, Validated};
use crate::FIELD_MANAGER;

/// Refuses a tenant whose database or topics another tenant owns. The owner is the tenant
/// created first (then the smaller name), so exactly one of two claimants proceeds.
pub fn check_conflicts(
    v: &Validated,
    obj: &AnalyticsTenant,
    tenants: &Store<AnalyticsTenant>,
    config: &OperatorConfig,
) -> Result<()> {
    let mine: HashSet<&str> = v.names.topics.iter().map(String::as_str).collect();
    let key = |t: &AnalyticsTenant| (t.metadata.creation_timestamp.clone().map(|t| t.0), t.name_any());
    for other in tenants.state() {
        // A younger claimant is the one in conflict, not us. (An older one being deleted
        // still owns its database until its finalizer has run.)
        if other.name_any() == obj.name_any() || key(&other) > key(obj) {
            continue;
        }
        let Ok(theirs) = validate(&other, config) else {
            continue;
        };
        if theirs.names.database == v.names.database {
            return Err(Error::Conflict {
                message: format!(
                    "database {} belongs to tenant {} (created first); this tenant touches nothing until the claim is resolved",
                    v.names.database,
                    other.name_any()
                ),
            });
        }
        if let Some(topic) = theirs.names.topics.iter().find(|t| mine.contains(t.as_str())) {
            return Err(Error::Conflict {
                message: format!("topic {topic} belongs to tenant {} (created first)", other.name_any()),
            });
        }
    }
    Ok(())
}

/// The warehouse of a tenant: its URL, with the credentials Secret read when it has one.
pub async fn warehouse(client: &Client, v: &Validated) -> Result<Arc<dyn Warehouse>> {
    let (user, password) = match &v.clickhouse.credentials {
        None => (None, None),
        Some(c) => {
            let secrets: Api<Secret> = Api::namespaced(client.clone(), v.names.namespace.as_str());
            let secret = secrets.get_opt(&c.name).await?.ok_or_else(|| {
                Error::SecretMissing(format!(
                    "ClickHouse credentials Secret {}/{} does not exist",
                    v.names.namespace, c.name
                ))
            })?;
            let read = |key: &str| -> Result<String> {
                secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(key))
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned())
                    .ok_or_else(|| {
                        Error::SecretMissing(format!("Secret {}/{} has no key {key:?}", v.names.namespace, c.name))
                    })
            };
            (Some(read(&c.user_key)?), Some(read(&c.password_key)?))
        }
    };
    Ok(Arc::new(Http::new(&HttpConfig {
        url: v.clickhouse.url.clone(),
        user,
        password,
        compression: true,
    })))
}

/// What a step may do: `write` is false while the tenant is paused (nothing is written
/// anywhere, only read), `repair` is false under `driftPolicy: Report` (drift is left where
/// it is; changes the spec asks for are still made).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub write: bool,
    pub repair: bool,
}

impl Policy {
    /// Whether drift is put back now.
    pub fn repairs(self) -> bool {
        self.write && self.repair
    }

    /// What drift found under this policy becomes.
    pub fn outcome(self) -> Outcome {
        if self.repairs() {
            Outcome::Repaired
        } else {
            Outcome::Reported
        }
    }
}

/// Server-side apply of one namespaced object (its JSON body, as `build::stamped` makes it)
/// under the operator's field manager, forced.
pub(crate) async fn ssa<K>(client: &Client, ns: &str, name: &str, body: &serde_json::Value) -> Result<K>
where
    K: kube::Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    Ok(api
        .patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body))
        .await?)
}

/// What a `Delete` cleanup dropped and what is left (with why).
#[derive(Debug, Default)]
pub struct Cleanup {
    pub dropped: Vec<String>,
    pub left: Vec<(String, Error)>,
}

impl Cleanup {
    pub fn done(&self) -> bool {
        self.left.is_empty()
    }

    /// `topics a, b (Kafka is unavailable: …); database x (…)`
    pub fn describe_left(&self) -> String {
        self.left
            .iter()
            .map(|(what, e)| format!("{what} ({})", e.chain()))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Deletes what the tenant owns outside Kubernetes (policy `Delete`): its topics and its
/// database (on a ClickHouse cluster, on every node), each tried whatever became of the
/// other. The children inside Kubernetes go with their owner reference.
pub async fn drop_external(kafka: &Provisioner, client: &Client, v: &Validated) -> Cleanup {
    let names = &v.names;
    let mut cleanup = Cleanup::default();
    match kafka.delete(&names.topics).await {
        Ok(deleted) => cleanup
            .dropped
            .extend(deleted.into_iter().map(|(topic, _)| format!("topic {topic}"))),
        Err(e) => cleanup
            .left
            .push((format!("topics {}", names.topics.join(", ")), e.into())),
    }
    let database = async {
        let wh = warehouse(client, v).await?;
        let form = Form::of(&v.tenant)?;
        ops::execute_schema_statement(
            wh.as_ref(),
            &form,
            &format!("DROP DATABASE IF EXISTS {}", names.database),
        )
        .await?;
        Ok::<_, Error>(())
    };
    match database.await {
        Ok(()) => cleanup.dropped.push(format!("database {}", names.database)),
        Err(e) => cleanup.left.push((format!("database {}", names.database), e)),
    }
    cleanup
}
