//! The tenants a process serves, with their keys: what collector and query API consult to
//! verify a token and find a site's settings.

use std::collections::BTreeMap;

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

pub struct Registry {
    tenants: BTreeMap<String, TenantEntry>,
}

impl Registry {
    pub fn new(tenants: Vec<Tenant>, secret: &MasterSecret) -> Self {
        let tenants = tenants
            .into_iter()
            .map(|t| {
                (
                    t.name.clone(),
                    TenantEntry {
                        key: secret.tenant_key(&t.name),
                        tenant: t,
                    },
                )
            })
            .collect();
        Self { tenants }
    }

    pub fn get(&self, name: &str) -> Option<&TenantEntry> {
        self.tenants.get(name)
    }

    /// The tenant and site a GA4 measurement id is mapped to.
    pub fn ga4_stream(&self, measurement_id: &str) -> Option<(&TenantEntry, &str)> {
        self.tenants.values().find_map(|e| {
            e.tenant
                .spec
                .ga4
                .iter()
                .find(|s| s.measurement_id == measurement_id)
                .map(|s| (e, s.site.as_str()))
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &TenantEntry> {
        self.tenants.values()
    }

    /// Verifies a token for `scope` and checks that its site still may be used.
    pub fn verify(&self, token: &str, scope: Scope, now_unix: i64) -> Result<(&TenantEntry, Claims), TokenError> {
        let claims = token::verify(token, now_unix, scope, |t| self.tenants.get(t).map(|e| e.key.clone()))?;
        let entry = self.tenants.get(&claims.tenant).ok_or(TokenError::BadSignature)?;
        if entry.tenant.spec.site(&claims.site).is_none() {
            return Err(TokenError::WrongSite);
        }
        Ok((entry, claims))
    }
}
