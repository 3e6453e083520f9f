//! The ConfigMap holding the tenant as the YAML file the roles' `--tenants` reads: one
//! document, the same format as a standalone tenants file. Mounted as a directory, it is
//! updated in place when the spec changes, and the roles reload it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::meta::meta;
use crate::error::{Error, Result};
use crate::validate::Validated;

/// The file name in the ConfigMap (and so in the mounted tenants directory).
pub const FILE: &str = "tenant.yaml";

pub fn build(v: &Validated) -> Result<ConfigMap> {
    let yaml = v
        .tenant
        .to_yaml()
        .map_err(|e| Error::Invalid { message: e.to_string() })?;
    Ok(ConfigMap {
        metadata: meta(v, v.names.config_map(), None),
        data: Some(BTreeMap::from([(FILE.to_string(), yaml)])),
        ..Default::default()
    })
}
