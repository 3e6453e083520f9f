//! The DDL plan: the database and the numbered migrations core's schema module generates
//! for this tenant (`schema::migrations`), in the tenant's form (`ddl::Form`: on a
//! ClickHouse cluster, `spec.clickhouse.cluster`, every statement's cluster form), and the
//! schema version they lead to. Apply runs them through core's `ops::apply_schema`, which
//! takes the same form; the plan is what `render`, drift repair and the tests see.

use sightline_core::ddl::parse::Statement;
use sightline_core::ddl::Form;
use sightline_core::schema;

use crate::error::Result;
use crate::validate::Validated;

/// One migration of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub version: u32,
    pub description: &'static str,
    /// In the tenant's form (one single-node statement may become two on a cluster).
    pub statements: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DdlPlan {
    pub database: String,
    /// The ClickHouse cluster the statements run on; `None`: one server.
    pub cluster: Option<String>,
    /// The database and the migrations table, before any migration.
    pub bootstrap: Vec<String>,
    /// The version the database is at after the plan ran.
    pub target_version: u32,
    pub steps: Vec<Step>,
    /// The tables and views the plan creates (on a cluster: local and `Distributed`
    /// tables both): what drift repair checks are still there.
    pub objects: Vec<String>,
}

/// The plan for `v`'s tenant. Errors only when a schema statement has no cluster form
/// (`Error::ClickHouse` with core's `Ddl` error), which core's tests rule out.
pub fn build(v: &Validated) -> Result<DdlPlan> {
    let form = Form::of(&v.tenant)?;
    let in_form = |statements: &[String]| -> Result<Vec<String>> {
        let mut out = Vec::with_capacity(statements.len());
        for sql in statements {
            out.extend(form.statements(sql)?);
        }
        Ok(out)
    };
    let bootstrap_sql = schema::bootstrap_statements(&v.tenant);
    let migrations = schema::migrations(&v.tenant);
    let mut objects = Vec::new();
    for sql in bootstrap_sql
        .iter()
        .chain(migrations.iter().flat_map(|m| &m.statements))
    {
        // Every statement parses: `Form::of` read them all already.
        match Statement::parse(sql) {
            Ok(Statement::CreateTable(t)) if t.table.database == v.names.database => {
                objects.extend(form.created_tables(t.table.name))
            }
            Ok(Statement::CreateView(view)) if view.view.database == v.names.database => {
                objects.push(view.view.name.to_string())
            }
            _ => {}
        }
    }
    // The hourly layout's objects retire once a tenant is on the tiers (a loader's first
    // start on a new database): drift repair must not bring them back.
    let retired: Vec<String> = schema::legacy::retired_objects()
        .into_iter()
        .flat_map(|name| form.created_tables(&name))
        .collect();
    objects.retain(|o| !retired.contains(o));
    objects.sort();
    objects.dedup();
    let mut steps = Vec::with_capacity(migrations.len());
    for m in migrations {
        steps.push(Step {
            version: m.version,
            description: m.description,
            statements: in_form(&m.statements)?,
        });
    }
    Ok(DdlPlan {
        database: v.names.database.clone(),
        cluster: form.cluster().map(str::to_string),
        bootstrap: in_form(&bootstrap_sql)?,
        target_version: steps.last().map(|s| s.version).unwrap_or(0),
        steps,
        objects,
    })
}

impl DdlPlan {
    /// Every statement, in the order apply runs them: bootstrap, then the migrations.
    pub fn statements(&self) -> impl Iterator<Item = &String> {
        self.bootstrap
            .iter()
            .chain(self.steps.iter().flat_map(|s| &s.statements))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests::object;
    use crate::validate::{validate, OperatorConfig};

    fn plan(spec: &str) -> DdlPlan {
        build(&validate(&object("acme", spec), &OperatorConfig::example("sightline")).unwrap()).unwrap()
    }

    #[test]
    fn the_single_node_plan_is_core_schema_text() {
        let p = plan("sites: { open: true }");
        assert_eq!(p.cluster, None);
        let t = sightline_core::spec::Tenant {
            name: "acme".into(),
            spec: serde_yaml::from_str("sites: { open: true }").unwrap(),
        };
        let expected: Vec<String> = schema::bootstrap_statements(&t)
            .into_iter()
            .chain(schema::migrations(&t).into_iter().flat_map(|m| m.statements))
            .collect();
        assert_eq!(p.statements().cloned().collect::<Vec<_>>(), expected);
        for o in [
            "events",
            "events_raw",
            "rollup_site_15m_mv",
            "schema_migrations",
            "storage_state",
        ] {
            assert!(p.objects.contains(&o.to_string()), "{o}: {:?}", p.objects);
        }
        assert!(!p.objects.iter().any(|o| o.ends_with("_local")));
    }

    #[test]
    fn the_cluster_plan_runs_on_the_cluster_with_local_and_distributed_tables() {
        let p = plan("sites: { open: true }\nclickhouse: { cluster: analytics }");
        assert_eq!(p.cluster.as_deref(), Some("analytics"));
        assert_eq!(
            p.bootstrap[0],
            "CREATE DATABASE IF NOT EXISTS sightline_acme ON CLUSTER analytics"
        );
        assert!(p.statements().all(|s| s.contains(" ON CLUSTER analytics")));
        let single = plan("sites: { open: true }");
        assert_eq!(
            p.steps.iter().map(|s| (s.version, s.description)).collect::<Vec<_>>(),
            single
                .steps
                .iter()
                .map(|s| (s.version, s.description))
                .collect::<Vec<_>>()
        );
        assert!(p.statements().count() > single.statements().count());
        for o in [
            "events",
            "events_local",
            "events_raw_local",
            "rollup_site_15m_local",
            "rollup_site_15m_mv",
            "schema_migrations",
            "storage_state",
        ] {
            assert!(p.objects.contains(&o.to_string()), "{o}: {:?}", p.objects);
        }
        assert!(!p.objects.contains(&"schema_migrations_local".to_string()));
        assert!(p.statements().any(|s| s.contains(
            "sightline_acme.events ON CLUSTER analytics AS sightline_acme.events_local ENGINE = Distributed(analytics, sightline_acme, events_local, sipHash64(site_id))"
        )));
    }
}
