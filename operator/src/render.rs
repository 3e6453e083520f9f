//! `sightline operator render`: every Kubernetes object the operator would apply for the
//! tenants of a YAML file, as YAML, with the topics and the DDL plan as comments. The file
//! is read as strictly as the roles read tenants files. Two things differ from a cluster:
//! the owner references carry a placeholder uid (the API assigns the real one), and the
//! signing Secret has no data (the operator generates it once, at first apply).

use crate::build::{self, Children};
use crate::crd::{AnalyticsTenant, AnalyticsTenantSpec};
use crate::validate::{validate, OperatorConfig};

/// The uid the rendered owner references carry.
pub const PLACEHOLDER_UID: &str = "00000000-0000-0000-0000-000000000000";

/// Renders every tenant of `text` (`source` names it in errors).
pub fn render(text: &str, source: &str, config: &OperatorConfig) -> Result<String, String> {
    let tenants = sightline_core::spec::parse_tenants(text, source).map_err(|e| e.to_string())?;
    if tenants.is_empty() {
        return Err(format!("{source}: no AnalyticsTenant documents"));
    }
    let mut out = String::new();
    for tenant in tenants {
        let mut obj = AnalyticsTenant::new(&tenant.name, AnalyticsTenantSpec { tenant: tenant.spec });
        obj.metadata.uid = Some(PLACEHOLDER_UID.into());
        obj.metadata.generation = Some(1);
        let v = validate(&obj, config).map_err(|e| format!("{source} ({}): {e}", tenant.name))?;
        let children = build::build(&v, None).map_err(|e| e.to_string())?;
        out.push_str(&header(&tenant.name, &children));
        for object in children.all_objects().map_err(|e| e.to_string())? {
            out.push_str("---\n");
            out.push_str(&serde_yaml::to_string(&object).map_err(|e| e.to_string())?);
        }
    }
    Ok(out)
}

fn header(name: &str, children: &Children) -> String {
    let mut text = format!("# AnalyticsTenant {name}\n");
    for t in &children.topics {
        let configs: Vec<String> = t.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        text.push_str(&format!(
            "# topic {}: {} partitions, replication factor {}, {}\n",
            t.name,
            t.partitions,
            t.replication_factor,
            configs.join(", ")
        ));
    }
    text.push_str(&format!(
        "# database {}: schema version {} ({} migrations)\n",
        children.ddl.database,
        children.ddl.target_version,
        children.ddl.steps.len()
    ));
    for step in &children.ddl.steps {
        text.push_str(&format!("#   {}: {}\n", step.version, step.description));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_object_of_the_example_tenant() {
        let text = include_str!("../../manifests/examples/tenant.yaml");
        let out = render(text, "tenant.yaml", &OperatorConfig::example("sightline")).unwrap();
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&out)
            .map(serde::Deserialize::deserialize)
            .collect::<Result<_, _>>()
            .unwrap();
        let kinds: Vec<&str> = docs.iter().filter_map(|d| d["kind"].as_str()).collect();
        assert_eq!(kinds.len(), 10, "{kinds:?}");
        assert_eq!(kinds[0], "Secret");
        assert!(out.contains("# topic sightline.demo.events: "));
        assert!(out.contains("# database sightline_demo: schema version"));
        assert!(!out.contains("data:\n  secret"), "no key is printed");
        let e = render("apiVersion: sightline.dev/v1alpha1\nkind: AnalyticsTenant\nmetadata: {name: x}\nspec: {sites: {open: true}, typo: 1}\n", "t.yaml", &OperatorConfig::example("s")).unwrap_err();
        assert!(e.contains("typo"), "{e}");
    }
}
