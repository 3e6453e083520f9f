//! Apply: carries out what build produced, in the order that keeps pods safe.
//!
//! 1. Conflicts: a tenant that claims another tenant's database or topics touches nothing.
//! 2. Topics, through the shared provisioning code (plan first: a partition decrease or a
//!    replication change is refused before anything is done).
//! 3. Schema, through core's `ops::apply_schema` (the operator is the single migrator),
//!    then a check that every table and view of the plan exists; a missing one (dropped by
//!    hand) is recreated by running the plan's idempotent statements again.
//! 4. The signing Secret, created when absent, never overwritten.
//! 5. The ConfigMap, then the workloads, by server-side apply under one field manager with
//!    force (hand edits of fields the operator owns are reverted).
//!
//! Steps 2 and 3 come before 5, so a spec change that needs new topics or schema has them
//! before the new configuration reaches the pods.

use std::collections::HashSet;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sightline_core::ddl::Form;
use sightline_core::warehouse::http::{Http, HttpConfig};
use sightline_core::warehouse::{ops, tiers, Params, Warehouse};
use sightline_ingest::kafka::provision::{Change, Provisioner};

use crate::build::{self, Children};
use crate::crd::AnalyticsTenant;
use crate::error::{Error, Result};
use crate::names::Names;
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

/// Topics to the spec; what changed.
pub async fn topics(kafka: &Provisioner, children: &Children) -> Result<Vec<(String, Change)>> {
    let actions = kafka.plan(&children.topics).await?;
    Ok(kafka.apply(&actions).await?)
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

/// The schema at the plan's version, with every table and view of the plan present.
/// Returns the version.
pub async fn schema(wh: &dyn Warehouse, v: &Validated, plan: &build::ddl::DdlPlan) -> Result<u32> {
    let applied = ops::apply_schema(wh, &v.tenant).await?;
    if applied.from != applied.to {
        tracing::info!(tenant = %v.names.tenant, from = applied.from, to = applied.to, "schema migrated");
    }
    if !applied.ttl_changed.is_empty() {
        tracing::info!(tenant = %v.names.tenant, tables = ?applied.ttl_changed, "retention applied");
    }
    let missing = missing_objects(wh, plan).await?;
    if !missing.is_empty() {
        // Dropped by hand since they were created: `schema_migrations` still records the
        // versions, so apply_schema ran nothing. Every statement of the plan is idempotent
        // on its own; running them all recreates what is missing and leaves the rest.
        tracing::warn!(tenant = %v.names.tenant, ?missing, "schema objects missing; recreating");
        // The plan holds the hourly layout of migration 1; a tenant on the tiers retired it
        // (where nothing wrote: dropping a view under an insert can leave the insert half
        // through its views), so its statements are not run again.
        let retired = if tiers::read_state(wh, &plan.database).await?.layout == tiers::Layout::Tiers {
            sightline_core::schema::legacy::retired_objects()
        } else {
            Vec::new()
        };
        for statement in plan.statements().filter(|s| !mentions_any(s, &retired)) {
            wh.execute(statement, &Params::new()).await?;
        }
        let still = missing_objects(wh, plan).await?;
        if !still.is_empty() {
            return Err(Error::ClickHouse(sightline_core::Error::Query {
                sql: String::new(),
                message: format!(
                    "tables or views still missing after recreating them: {}",
                    still.join(", ")
                ),
            }));
        }
    }
    Ok(applied.to)
}

/// Whether `sql` names one of `objects` (`<db>.<name>`, or on a cluster its `<name>_local`
/// storage table), as a whole name: `rollup_site_hourly` is not `rollup_site_hourly_mv`.
fn mentions_any(sql: &str, objects: &[String]) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    objects.iter().any(|name| {
        let needle = format!(".{name}");
        sql.match_indices(&needle).any(|(at, _)| {
            let rest = &sql[at + needle.len()..];
            let rest = rest.strip_prefix("_local").unwrap_or(rest);
            !rest.starts_with(word)
        })
    })
}

async fn missing_objects(wh: &dyn Warehouse, plan: &build::ddl::DdlPlan) -> Result<Vec<String>> {
    let rows = wh
        .select(
            "SELECT name FROM system.tables WHERE database = {db:String}",
            &Params::new().bind("db", plan.database.as_str()),
        )
        .await?;
    let present: HashSet<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    Ok(plan
        .objects
        .iter()
        .filter(|o| !present.contains(o.as_str()))
        .cloned()
        .collect())
}

/// Creates the signing Secret when it does not exist; an existing one is left exactly as
/// it is (a new key would invalidate every token and change visitor ids).
pub async fn signing_secret(client: &Client, names: &Names, secret: &Secret) -> Result<bool> {
    let api: Api<Secret> = Api::namespaced(client.clone(), names.namespace.as_str());
    if api.get_opt(&names.signing_secret()).await?.is_some() {
        return Ok(false);
    }
    match api.create(&PostParams::default(), secret).await {
        Ok(_) => Ok(true),
        // Created between our read and our write (another reconcile): keep theirs.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// What the workloads looked like after they were applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workloads {
    /// (role, ready pods, wanted pods)
    pub roles: Vec<(&'static str, i32, i32)>,
}

impl Workloads {
    /// Every role has at least one ready pod.
    pub fn serving(&self) -> bool {
        !self.roles.is_empty() && self.roles.iter().all(|(_, ready, _)| *ready >= 1)
    }

    pub fn describe(&self) -> String {
        self.roles
            .iter()
            .map(|(role, ready, wanted)| format!("{role} {ready}/{wanted} ready"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The ConfigMap and workloads by server-side apply, and the HPA deleted when autoscaling
/// was turned off. Returns the workloads' readiness as the API answered.
pub async fn children(client: &Client, v: &Validated, children: &Children) -> Result<Workloads> {
    let ns = v.names.namespace.as_str();
    ssa(client, ns, &children.config_map).await?;
    let collector = ssa(client, ns, &children.collector).await?;
    ssa(client, ns, &children.collector_service).await?;
    match &children.collector_autoscaler {
        Some(hpa) => {
            ssa(client, ns, hpa).await?;
        }
        None => {
            let api: Api<HorizontalPodAutoscaler> = Api::namespaced(client.clone(), ns);
            match api
                .delete(
                    &v.names.workload(crate::names::Role::Collector),
                    &DeleteParams::default(),
                )
                .await
            {
                Ok(_) => tracing::info!(tenant = %v.names.tenant, "collector autoscaler removed"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    ssa(client, ns, &children.collector_budget).await?;
    ssa(client, ns, &children.loader_service).await?;
    let loader = ssa(client, ns, &children.loader).await?;
    let query = ssa(client, ns, &children.query).await?;
    ssa(client, ns, &children.query_service).await?;
    ssa(client, ns, &children.query_budget).await?;
    let deployment = |d: &Deployment| {
        let s = d.status.clone().unwrap_or_default();
        (
            s.available_replicas.unwrap_or(0),
            d.spec.as_ref().and_then(|s| s.replicas).or(s.replicas).unwrap_or(0),
        )
    };
    let stateful = |s: &StatefulSet| {
        (
            s.status.as_ref().and_then(|st| st.ready_replicas).unwrap_or(0),
            s.spec.as_ref().and_then(|sp| sp.replicas).unwrap_or(0),
        )
    };
    let (c_ready, c_want) = deployment(&collector);
    let (l_ready, l_want) = stateful(&loader);
    let (q_ready, q_want) = deployment(&query);
    Ok(Workloads {
        roles: vec![
            ("collector", c_ready, c_want),
            ("loader", l_ready, l_want),
            ("query", q_ready, q_want),
        ],
    })
}

/// Server-side apply of one namespaced object under the operator's field manager, forced.
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
    let body = build::typed(object)?;
    let name = object.name_any();
    Ok(api
        .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
        .await?)
}

/// Deletes what the tenant owns outside Kubernetes (policy `Delete`): its topics and its
/// database (on a ClickHouse cluster, on every node). The children inside Kubernetes go
/// with their owner reference.
pub async fn drop_external(kafka: &Provisioner, wh: &dyn Warehouse, v: &Validated) -> Result<Vec<String>> {
    let names = &v.names;
    let mut dropped: Vec<String> = kafka
        .delete(&names.topics)
        .await?
        .into_iter()
        .map(|(topic, _)| format!("topic {topic}"))
        .collect();
    let form = Form::of(&v.tenant)?;
    ops::execute_schema_statement(wh, &form, &format!("DROP DATABASE IF EXISTS {}", names.database)).await?;
    dropped.push(format!("database {}", names.database));
    Ok(dropped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_of_retired_objects_are_told_by_whole_names() {
        let retired = sightline_core::schema::legacy::retired_objects();
        assert!(mentions_any("DROP VIEW IF EXISTS db.rollup_site_hourly_mv", &retired));
        assert!(mentions_any(
            "CREATE TABLE db.rollup_dims_hourly_local ON CLUSTER c (x UInt8)",
            &retired
        ));
        assert!(mentions_any(
            "ALTER TABLE db.rollup_site_hourly ADD COLUMN x UInt8",
            &retired
        ));
        assert!(!mentions_any(
            "CREATE TABLE db.rollup_site_hourly_archive (x UInt8)",
            &retired
        ));
        assert!(!mentions_any("CREATE TABLE db.rollup_site_15m (x UInt8)", &retired));
    }
}
