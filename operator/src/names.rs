//! Names as types: a tenant's name, the namespace of its workloads, and every name derived
//! from them (objects, database, topics, consumer group), computed once here so a builder
//! cannot swap two strings or derive a name its own way.
//!
//! The tenant is cluster-scoped, so `metadata.name` is unique in the cluster; database and
//! topic names come from it alone and cannot collide between tenants, unless a spec claims
//! another tenant's database through `clickhouse.database` (the controller refuses that as
//! `Conflict`). Workload objects are named `<tenant>-<role>` in their namespace.

use std::collections::BTreeMap;
use std::fmt;

use sightline_core::spec::{valid_tenant_name, Tenant};

/// A validated tenant name: 1-40 of `[a-z0-9-]`, starting with a letter, not ending in `-`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TenantName(String);

impl TenantName {
    pub fn parse(name: &str) -> Option<Self> {
        valid_tenant_name(name).then(|| Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The namespace the tenant's workloads, Secret and ConfigMap live in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Namespace(String);

impl Namespace {
    /// A DNS-1123 label (what Kubernetes requires of namespace names).
    pub fn parse(name: &str) -> Option<Self> {
        let ok = (1..=63).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        ok.then(|| Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The roles a tenant runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Collector,
    Loader,
    Query,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Collector => "collector",
            Role::Loader => "loader",
            Role::Query => "query",
        }
    }

    /// The port the role serves its public API on (collector, query); the loader has none
    /// and answers its operations port here.
    pub fn port(self) -> i32 {
        match self {
            Role::Collector => 8080,
            Role::Loader => OPS_PORT,
            Role::Query => 8081,
        }
    }

    /// Whether the role has a public API (`--listen`); the loader only has `--ops-listen`.
    pub fn has_api(self) -> bool {
        !matches!(self, Role::Loader)
    }
}

/// The operations listener of every role (`--ops-listen`): `/metrics`, `/healthz`,
/// `/readyz`, apart from the public port, so probes and scrapes never queue behind clients.
pub const OPS_PORT: i32 = 9090;

/// Every name derived from a tenant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub tenant: TenantName,
    pub namespace: Namespace,
    /// The ClickHouse database (the spec's override or `sightline_<tenant>`).
    pub database: String,
    /// The event topic and its dead-letter topic.
    pub topics: [String; 2],
    /// The loaders' consumer group.
    pub consumer_group: String,
}

impl Names {
    pub fn new(tenant: &Tenant, name: TenantName, namespace: Namespace) -> Self {
        Self {
            database: tenant.database(),
            topics: sightline_ingest::kafka::topics(name.as_str()),
            consumer_group: sightline_ingest::loader::group_id(name.as_str()),
            tenant: name,
            namespace,
        }
    }

    /// `<tenant>-<role>`: the Deployment/StatefulSet, its Service, HPA and PDB. At most 50
    /// bytes (40 + `-collector`), within the 52 a StatefulSet name may have.
    pub fn workload(&self, role: Role) -> String {
        format!("{}-{}", self.tenant, role.as_str())
    }

    /// The Secret holding the tenant's signing key (`SIGHTLINE_SECRET` of its pods).
    pub fn signing_secret(&self) -> String {
        format!("{}-signing-key", self.tenant)
    }

    /// The ConfigMap holding the tenant as the YAML file the roles' `--tenants` reads.
    pub fn config_map(&self) -> String {
        format!("{}-tenant", self.tenant)
    }

    /// Labels on every child; `role` adds the component.
    pub fn labels(&self, role: Option<Role>) -> BTreeMap<String, String> {
        let mut labels = self.selector(role);
        labels.insert("app.kubernetes.io/managed-by".into(), crate::FIELD_MANAGER.into());
        labels.insert("app.kubernetes.io/part-of".into(), "sightline".into());
        labels
    }

    /// The labels a role's selector matches: name, instance (the tenant) and component.
    pub fn selector(&self, role: Option<Role>) -> BTreeMap<String, String> {
        let mut labels = BTreeMap::from([
            ("app.kubernetes.io/name".to_string(), "sightline".to_string()),
            ("app.kubernetes.io/instance".to_string(), self.tenant.to_string()),
        ]);
        if let Some(role) = role {
            labels.insert("app.kubernetes.io/component".into(), role.as_str().into());
        }
        labels
    }

    /// The in-cluster URL of a role's Service.
    pub fn endpoint(&self, role: Role) -> String {
        format!("http://{}.{}.svc:{}", self.workload(role), self.namespace, role.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_and_namespace_names_are_checked() {
        assert!(TenantName::parse("acme-eu").is_some());
        assert!(TenantName::parse("Acme").is_none());
        assert!(TenantName::parse(&"a".repeat(41)).is_none());
        assert!(Namespace::parse("analytics").is_some());
        assert!(Namespace::parse("-x").is_none());
        assert!(Namespace::parse("a_b").is_none());
    }

    #[test]
    fn the_longest_tenant_name_fits_a_statefulset_name() {
        let name = "a".repeat(40);
        let tenant = Tenant {
            name: name.clone(),
            spec: serde_yaml::from_str("sites: { open: true }").unwrap(),
        };
        let names = Names::new(
            &tenant,
            TenantName::parse(&name).unwrap(),
            Namespace::parse("ns").unwrap(),
        );
        for role in [Role::Collector, Role::Loader, Role::Query] {
            assert!(names.workload(role).len() <= 52, "{}", names.workload(role));
        }
        assert_eq!(names.database, format!("sightline_{name}"));
        assert_eq!(names.topics[0], format!("sightline.{name}.events"));
    }
}
