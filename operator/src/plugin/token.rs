//! `kubectl sightline token issue`: a token for one of a tenant's sites, signed with the
//! tenant's key read from its signing Secret through the API (so no secret is copied by
//! hand), with core's token code: the same token `sightline token issue` makes from the
//! same key.

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use sightline_core::secret::MasterSecret;
use sightline_core::token::{self, Claims, Scope};

use super::{workload_namespace, PluginError};
use crate::build::pod::SECRET_KEY;
use crate::crd::AnalyticsTenant;

/// Issues a token for `claims` (its tenant must exist; a read or write token's site must be
/// one the tenant allows, unless it is open). `namespace` overrides where the Secret is
/// looked for.
pub async fn issue(client: &Client, claims: &Claims, namespace: Option<&str>) -> Result<String, PluginError> {
    let tenants: Api<AnalyticsTenant> = Api::all(client.clone());
    let tenant = tenants.get_opt(&claims.tenant).await?.ok_or_else(|| {
        PluginError::NotFound(format!(
            "AnalyticsTenant {:?} does not exist (kubectl get tenants)",
            claims.tenant
        ))
    })?;
    if claims.scope != Scope::Admin && tenant.spec.tenant.site(&claims.site).is_none() {
        return Err(PluginError::Refused(format!(
            "site {:?} is not allowed by tenant {:?} (spec.sites)",
            claims.site, claims.tenant
        )));
    }
    let namespace = namespace
        .map(str::to_string)
        .or_else(|| workload_namespace(&tenant))
        .ok_or_else(|| {
            PluginError::NotFound(format!(
                "tenant {:?} names no namespace and has no status yet: pass --namespace (the operator's namespace)",
                claims.tenant
            ))
        })?;
    let name = format!("{}-signing-key", claims.tenant);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let secret = secrets.get_opt(&name).await?.ok_or_else(|| {
        PluginError::NotFound(format!(
            "Secret {namespace}/{name} does not exist: see `kubectl sightline status {}` (SigningSecretReady)",
            claims.tenant
        ))
    })?;
    let value = secret
        .data
        .as_ref()
        .and_then(|d| d.get(SECRET_KEY))
        .ok_or_else(|| PluginError::NotFound(format!("Secret {namespace}/{name} has no key {SECRET_KEY:?}")))?;
    let key = MasterSecret::from_base64(
        &String::from_utf8_lossy(&value.0),
        &format!("Secret {namespace}/{name}"),
    )
    .map_err(|e| PluginError::Refused(e.to_string()))?;
    Ok(token::issue(&key.tenant_key(&claims.tenant), claims))
}
