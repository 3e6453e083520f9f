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
    let ddl = &children.ddl;
    let place = match &ddl.cluster {
        Some(cluster) => format!(" on ClickHouse cluster {cluster} (sharded by site)"),
        None => String::new(),
    };
    text.push_str(&format!(
        "# database {}{place}: schema version {} ({} migrations)\n",
        ddl.database,
        ddl.target_version,
        ddl.steps.len()
    ));
    text.push_str("#   bootstrap\n");
    push_statements(&mut text, &ddl.bootstrap);
    for step in &ddl.steps {
        text.push_str(&format!("#   {}: {}\n", step.version, step.description));
        push_statements(&mut text, &step.statements);
    }
    text
}

/// Statements as YAML comments, one `;`-terminated statement after another.
fn push_statements(text: &mut String, statements: &[String]) {
    for statement in statements {
        for (i, line) in statement.lines().enumerate() {
            let indent = if i == 0 { "#     " } else { "#       " };
            text.push_str(indent);
            text.push_str(line.trim_start());
            text.push('\n');
        }
        text.pop();
        text.push_str(";\n");
    }
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
        assert!(out.contains("#     CREATE TABLE IF NOT EXISTS sightline_demo.events_raw (\n#       event_id UUID,"));
        assert!(!out.contains("ON CLUSTER"));
        let e = render("apiVersion: sightline.dev/v1alpha1\nkind: AnalyticsTenant\nmetadata: {name: x}\nspec: {sites: {open: true}, typo: 1}\n", "t.yaml", &OperatorConfig::example("s")).unwrap_err();
        assert!(e.contains("typo"), "{e}");
    }

    #[test]
    fn renders_the_cluster_plan_of_a_tenant_on_a_clickhouse_cluster() {
        let text = include_str!("../../manifests/examples/cluster/sharded.yaml");
        let out = render(text, "sharded.yaml", &OperatorConfig::example("sightline")).unwrap();
        assert!(out
            .contains("# database sightline_media on ClickHouse cluster analytics (sharded by site): schema version"));
        assert!(out.contains("#     CREATE DATABASE IF NOT EXISTS sightline_media ON CLUSTER analytics;\n"));
        assert!(out.contains(
            "#     CREATE TABLE IF NOT EXISTS sightline_media.events ON CLUSTER analytics AS sightline_media.events_local \
             ENGINE = Distributed(analytics, sightline_media, events_local, sipHash64(site_id));\n"
        ));
        assert!(out.contains(
            "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/sightline_media/events', '{replica}')"
        ));
        // First lines of statements: continuation lines are indented further.
        let first_lines: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("#     ") && !l.starts_with("#      "))
            .collect();
        assert!(first_lines.len() > 30, "{first_lines:?}");
        let on_cluster = first_lines
            .iter()
            .filter(|l| l.contains(" ON CLUSTER analytics"))
            .count();
        assert_eq!(first_lines.len(), on_cluster, "every statement runs on the cluster");
    }
}
