//! `ReprocessSpec`: the spec of the `Reprocess` resource (a replay of a tenant's days,
//! docs/replay.md). One type for the future CRD, `sightline reprocess -f reprocess.yaml`
//! and the standalone server's admin endpoint:
//!
//! ```yaml
//! apiVersion: sightline.dev/v1alpha1
//! kind: Reprocess
//! metadata: { name: fix-referrers }
//! spec:
//!   tenantRef: acme
//!   from: 2026-11-01          # a UTC date (its midnight) or an RFC 3339 time
//!   to: 2026-11-08            # exclusive; the range widens to whole UTC days
//!   sites: [shop.example.com] # optional: every site when absent
//!   dryRun: false
//!   parallelism: 2            # days at once, 1 to 16
//!   force: false              # replay days that are not sealed yet
//! ```

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::processor::Processor;
use crate::spec::{Metadata, Tenant, API_VERSION};
use crate::warehouse::replay::ReplayRequest;
use crate::{Error, Result};

pub const KIND: &str = "Reprocess";

/// Fields of the `Reprocess` resource's spec that only the operator reads (its plan,
/// approval and stall restarts, `sightline_operator::reprocess::crd`): a file or the admin
/// endpoint runs at once, so they are refused there by name, with why.
pub const RESOURCE_ONLY_FIELDS: [&str; 3] = ["approval", "approvedPlanHash", "maxStallRestarts"];

/// Unknown fields are ignored by the type itself, so an operator reads a `Reprocess` that a
/// newer CRD gave more fields; files (`parse_reprocess`) and the admin endpoint hold their
/// input strictly (`unknown_fields`), where a typo such as `dryrun` must not run a real
/// replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReprocessSpec {
    /// The tenant (`AnalyticsTenant` name) whose days are replayed.
    #[schemars(length(min = 1, max = 40), pattern(r"^[a-z]([a-z0-9-]*[a-z0-9])?$"))]
    pub tenant_ref: String,
    /// Start of the range: a UTC date (`2026-11-01`, its midnight) or an RFC 3339 time.
    #[schemars(pattern(
        r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2}))?$"
    ))]
    pub from: String,
    /// End of the range, exclusive, in the same forms.
    #[schemars(pattern(
        r"^[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?(Z|[+-][0-9]{2}:[0-9]{2}))?$"
    ))]
    pub to: String,
    /// Sites replayed; every site when empty. Other sites' rows stay as they are.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000), inner(length(min = 1, max = 128), pattern(r"^[A-Za-z0-9._-]+$")))]
    pub sites: Vec<String>,
    /// Compare only: per day, the numbers now and as the replay would make them.
    #[serde(default)]
    pub dry_run: bool,
    /// Days replayed at once (1 to 16).
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 16))]
    pub parallelism: usize,
    /// Replay days that are not sealed yet (they may still receive events).
    #[serde(default)]
    pub force: bool,
}

fn one() -> usize {
    1
}

/// The resource as written in YAML.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ReprocessDocument {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: ReprocessSpec,
}

/// A time as the spec writes it: `2026-11-01` (UTC midnight) or RFC 3339.
pub fn parse_time(text: &str, field: &str) -> Result<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(day) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            Error::InvalidReplay(format!(
                "{field} {text:?}: expected a date (2026-11-01) or an RFC 3339 time (2026-11-01T06:00:00Z)"
            ))
        })
}

impl ReprocessSpec {
    /// The replay this spec asks for, with `processor`, for `tenant` (which must be the one
    /// it names); errors name the field.
    pub fn request(&self, tenant: &Tenant, processor: Arc<dyn Processor>) -> Result<ReplayRequest> {
        if tenant.name != self.tenant_ref {
            return Err(Error::UnknownTenant(self.tenant_ref.clone()));
        }
        let from = parse_time(&self.from, "from")?;
        let to = parse_time(&self.to, "to")?;
        Ok(ReplayRequest {
            sites: self.sites.clone(),
            dry_run: self.dry_run,
            force: self.force,
            parallelism: self.parallelism,
            ..ReplayRequest::new(tenant.clone(), from, to, processor)
        })
    }
}

/// Deserializes `T` and lists the fields it ignored under `prefix` (paths such as
/// `spec.dryrun`): what a strict reader refuses.
pub fn unknown_fields<'de, T, D>(deserializer: D, prefix: &str) -> std::result::Result<(T, Vec<String>), D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    let mut unknown = Vec::new();
    let value = serde_ignored::deserialize(deserializer, |path| {
        let path = path.to_string();
        if path.starts_with(prefix) {
            unknown.push(path);
        }
    })?;
    Ok((value, unknown))
}

/// Reads a `Reprocess` document (or a bare spec) from YAML; `source_name` names the file.
/// Fields the spec does not have are refused by name.
pub fn parse_reprocess(text: &str, source_name: &str) -> Result<ReprocessSpec> {
    let err = |message: String| Error::ReprocessSpec {
        source_name: source_name.to_string(),
        message,
    };
    let refuse_unknown = |unknown: Vec<String>| {
        let operator_only: Vec<&String> = unknown
            .iter()
            .filter(|f| RESOURCE_ONLY_FIELDS.contains(&f.trim_start_matches("spec.")))
            .collect();
        if !operator_only.is_empty() {
            return Err(err(format!(
                "{} only the operator reads (the Reprocess resource's plan and approval); sightline reprocess runs the \
                 replay at once: remove them, or kubectl apply the resource",
                operator_only.iter().map(|f| f.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        if unknown.is_empty() {
            Ok(())
        } else {
            Err(err(format!("unknown field(s) {}", unknown.join(", "))))
        }
    };
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| err(e.to_string()))?;
    if value.get("kind").is_none() {
        let (spec, unknown): (ReprocessSpec, _) = unknown_fields(value, "").map_err(|e| err(e.to_string()))?;
        refuse_unknown(unknown)?;
        return Ok(spec);
    }
    let (doc, unknown): (ReprocessDocument, _) = unknown_fields(value, "spec").map_err(|e| err(e.to_string()))?;
    refuse_unknown(unknown)?;
    if doc.kind != KIND {
        return Err(err(format!("kind {:?}: expected {KIND}", doc.kind)));
    }
    if doc.api_version != API_VERSION {
        return Err(err(format!("apiVersion {:?}: expected {API_VERSION}", doc.api_version)));
    }
    Ok(doc.spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_and_bare_specs_parse_with_defaults() {
        let doc = "apiVersion: sightline.dev/v1alpha1\nkind: Reprocess\nmetadata: {name: fix}\nspec:\n  tenantRef: acme\n  from: 2026-11-01\n  to: '2026-11-03T12:00:00Z'\n";
        let spec = parse_reprocess(doc, "r.yaml").unwrap();
        assert_eq!(spec.tenant_ref, "acme");
        assert_eq!((spec.parallelism, spec.dry_run, spec.force), (1, false, false));
        assert_eq!(
            parse_time(&spec.to, "to").unwrap(),
            "2026-11-03T12:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let bare = parse_reprocess("tenantRef: acme\nfrom: 2026-11-01\nto: 2026-11-02\ndryRun: true\n", "b").unwrap();
        assert!(bare.dry_run);
        let unknown = parse_reprocess("tenantRef: acme\nfrom: a\nto: b\nsite: [x]\n", "c.yaml").unwrap_err();
        assert!(unknown.to_string().contains("unknown field(s) site"), "{unknown}");
        let unknown = parse_reprocess(
            "apiVersion: sightline.dev/v1alpha1\nkind: Reprocess\nmetadata: {name: fix, namespace: analytics}\n\
             spec: {tenantRef: acme, from: 2026-11-01, to: 2026-11-02, dryrun: true}\n",
            "d.yaml",
        )
        .unwrap_err();
        assert!(
            unknown.to_string().contains("unknown field(s) spec.dryrun"),
            "{unknown}"
        );
        let manual = parse_reprocess(
            "apiVersion: sightline.dev/v1alpha1\nkind: Reprocess\nmetadata: {name: fix}\n\
             spec: {tenantRef: acme, from: 2026-11-01, to: 2026-11-02, approval: Manual}\n",
            "m.yaml",
        )
        .unwrap_err();
        assert!(
            manual
                .to_string()
                .starts_with("Reprocess m.yaml: spec.approval only the operator reads"),
            "named as a Reprocess, not a tenant spec: {manual}"
        );
        // The type alone (what the operator reads from the cluster) takes a newer field.
        let newer: ReprocessSpec = serde_json::from_value(serde_json::json!({
            "tenantRef": "acme", "from": "2026-11-01", "to": "2026-11-02", "approval": "Manual"
        }))
        .unwrap();
        assert_eq!(newer.tenant_ref, "acme");
        assert!(parse_time("yesterday", "from")
            .unwrap_err()
            .to_string()
            .contains("from"));
    }
}
