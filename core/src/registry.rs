//! The tenants a process serves, with their keys: what collector and query API consult to
//! verify a token and find a site's settings. Reloadable: `replace` swaps in the tenants of
//! a changed tenants directory while requests are served (each request sees one whole set,
//! old or new), so new sites, goals and limits take effect without a restart.

use std::collections::BTreeMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::secret::MasterSecret;
use crate::spec::Tenant;
use crate::token::{self, Claims, Scope, TokenError};

pub struct TenantEntry {
    pub tenant: Tenant,
    key: Vec<u8>,
}

impl TenantEntry {
    pub fn key(&self) -> &[u8] {
        &self.key
    }
}

type Entries = BTreeMap<String, Arc<TenantEntry>>;

pub struct Registry {
    tenants: ArcSwap<Entries>,
    /// What keys are derived from; `None` for a role that verifies no tokens (the loader).
    secret: Option<MasterSecret>,
}

impl Registry {
    pub fn new(tenants: Vec<Tenant>, secret: &MasterSecret) -> Self {
        Self {
            tenants: ArcSwap::from_pointee(entries(tenants, Some(secret))),
            secret: Some(secret.clone()),
        }
    }

    /// A registry without keys, for a role that reads tenants but verifies no tokens (every
    /// token fails verification against it).
    pub fn without_keys(tenants: Vec<Tenant>) -> Self {
        Self {
            tenants: ArcSwap::from_pointee(entries(tenants, None)),
            secret: None,
        }
    }

    /// Serves `tenants` from now on (a reloaded tenants directory).
    pub fn replace(&self, tenants: Vec<Tenant>) {
        self.tenants.store(Arc::new(entries(tenants, self.secret.as_ref())));
    }

    pub fn get(&self, name: &str) -> Option<Arc<TenantEntry>> {
        self.tenants.load().get(name).cloned()
    }

    /// The tenant and site a GA4 measurement id is mapped to.
    pub fn ga4_stream(&self, measurement_id: &str) -> Option<(Arc<TenantEntry>, String)> {
        self.tenants.load().values().find_map(|e| {
            e.tenant
                .spec
                .ga4
                .iter()
                .find(|s| s.measurement_id == measurement_id)
                .map(|s| (e.clone(), s.site.clone()))
        })
    }

    /// The tenants now served.
    pub fn entries(&self) -> Vec<Arc<TenantEntry>> {
        self.tenants.load().values().cloned().collect()
    }

    /// Verifies a token for `scope` and checks that its site still may be used.
    pub fn verify(&self, token: &str, scope: Scope, now_unix: i64) -> Result<(Arc<TenantEntry>, Claims), TokenError> {
        let tenants = self.tenants.load();
        let claims = token::verify(token, now_unix, scope, |t| {
            tenants.get(t).filter(|e| !e.key.is_empty()).map(|e| e.key.clone())
        })?;
        let entry = tenants.get(&claims.tenant).ok_or(TokenError::BadSignature)?;
        let whole_tenant = claims.scope == Scope::Admin && claims.site == token::ALL_SITES;
        if !whole_tenant && entry.tenant.spec.site(&claims.site).is_none() {
            return Err(TokenError::WrongSite);
        }
        Ok((entry.clone(), claims))
    }
}

fn entries(tenants: Vec<Tenant>, secret: Option<&MasterSecret>) -> Entries {
    tenants
        .into_iter()
        .map(|t| {
            let key = secret.map(|s| s.tenant_key(&t.name)).unwrap_or_default();
            (t.name.clone(), Arc::new(TenantEntry { key, tenant: t }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::parse_tenants;

    fn tenants(sites: &str) -> Vec<Tenant> {
        parse_tenants(
            &format!(
                "apiVersion: sightline.dev/v1alpha1\nkind: AnalyticsTenant\nmetadata: {{name: acme}}\nspec: {{sites: {{allowed: [{sites}]}}}}\n"
            ),
            "t.yaml",
        )
        .unwrap()
    }

    #[test]
    fn a_replaced_set_is_served_at_once_with_the_same_keys() {
        let secret = MasterSecret::from_bytes((0u8..32).collect()).unwrap();
        let registry = Registry::new(tenants("{id: a.example}"), &secret);
        let claims = Claims {
            tenant: "acme".into(),
            site: "b.example".into(),
            scope: Scope::Write,
            expires: 2_000_000_000,
        };
        let token = token::issue(&secret.tenant_key("acme"), &claims);
        assert!(matches!(
            registry.verify(&token, Scope::Write, 1_900_000_000),
            Err(TokenError::WrongSite)
        ));
        registry.replace(tenants("{id: a.example}, {id: b.example}"));
        let (entry, verified) = registry.verify(&token, Scope::Write, 1_900_000_000).unwrap();
        assert_eq!(verified.site, "b.example");
        assert_eq!(entry.tenant.spec.sites.allowed.len(), 2);
    }

    #[test]
    fn a_registry_without_keys_verifies_nothing() {
        let registry = Registry::without_keys(tenants("{id: a.example}"));
        let token = token::issue(
            b"",
            &Claims {
                tenant: "acme".into(),
                site: "a.example".into(),
                scope: Scope::Read,
                expires: 2_000_000_000,
            },
        );
        assert!(registry.verify(&token, Scope::Read, 1_900_000_000).is_err());
        assert!(registry.get("acme").is_some());
    }
}
