//! The forms a tenant's DDL takes. `schema` writes the single-node text: what runs on one
//! server and on the embedded engine, frozen once a migration is released. On a ClickHouse
//! cluster (`spec.clickhouse.cluster`) every statement takes its cluster form instead
//! (`cluster`), built from the single-node statement's parts (`parse`), so the two forms
//! cannot drift apart and the single-node text stays byte for byte what it was.

pub mod cluster;
pub mod parse;

use crate::schema;
use crate::spec::Tenant;
use crate::{Error, Result};

pub use cluster::ClusterForm;

/// How a tenant's statements are issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Form {
    /// On one server, as `schema` writes them.
    SingleNode,
    /// On a ClickHouse cluster (`cluster` module).
    Cluster(ClusterForm),
}

impl Form {
    /// The form `tenant`'s spec asks for: the cluster form when `clickhouse.cluster` is
    /// set, with the layout of every table its schema creates. Errors (`Error::Ddl`) when a
    /// statement of the schema has no cluster form: a bug in `schema`, which the unit tests
    /// over every migration catch first.
    pub fn of(tenant: &Tenant) -> Result<Self> {
        let Some(cluster) = &tenant.spec.clickhouse.cluster else {
            return Ok(Form::SingleNode);
        };
        let created: Vec<String> = schema::bootstrap_statements(tenant)
            .into_iter()
            .chain(schema::migrations(tenant).into_iter().flat_map(|m| m.statements))
            .collect();
        let form = ClusterForm::new(cluster, &tenant.database(), created.iter().map(String::as_str)).map_err(|e| {
            Error::Ddl {
                sql: String::new(),
                message: e.to_string(),
            }
        })?;
        Ok(Form::Cluster(form))
    }

    /// The form for a tenant on a warehouse backend: the embedded engine is one server, so
    /// it always takes the single-node form (standalone ignores the cluster settings, which
    /// are the operator's).
    pub fn for_backend(tenant: &Tenant, backend: &str) -> Result<Self> {
        if backend == "embedded" {
            Ok(Form::SingleNode)
        } else {
            Form::of(tenant)
        }
    }

    /// The statements that carry out the single-node statement `sql` in this form, in the
    /// order they must run: `sql` itself on one server.
    pub fn statements(&self, sql: &str) -> Result<Vec<String>> {
        match self {
            Form::SingleNode => Ok(vec![sql.to_string()]),
            Form::Cluster(form) => form.statements(sql).map_err(|e| Error::Ddl {
                sql: sql.to_string(),
                message: e.to_string(),
            }),
        }
    }

    /// The table that holds `table`'s rows on the server a statement reaches (what
    /// `system.tables` describes): `table`, or its local table when sharded.
    pub fn storage_table(&self, table: &str) -> String {
        match self {
            Form::SingleNode => table.to_string(),
            Form::Cluster(form) => form.storage_table(table),
        }
    }

    /// The tables a `CREATE TABLE` of `table` makes, in creation order.
    pub fn created_tables(&self, table: &str) -> Vec<String> {
        match self {
            Form::SingleNode => vec![table.to_string()],
            Form::Cluster(form) => form.created_tables(table),
        }
    }

    pub fn cluster(&self) -> Option<&str> {
        match self {
            Form::SingleNode => None,
            Form::Cluster(form) => Some(form.cluster()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse::Statement;
    use super::*;
    use crate::spec::TenantSpec;

    fn tenant(extra: &str) -> Tenant {
        let spec: TenantSpec = serde_yaml::from_str(&format!(
            "sites: {{ open: true }}\nretention: {{ rawDays: 30, rollupDays: 90 }}\n{extra}"
        ))
        .unwrap();
        Tenant {
            name: "acme-eu".into(),
            spec,
        }
    }

    /// Every statement `schema` writes, in apply order: bootstrap, migrations, the spec's
    /// TTLs, and the statements that retire the hourly layout.
    fn every_statement(t: &Tenant) -> Vec<String> {
        schema::bootstrap_statements(t)
            .into_iter()
            .chain(schema::migrations(t).into_iter().flat_map(|m| m.statements))
            .chain(schema::spec_statements(t, schema::latest_version()))
            .chain(schema::legacy::retire(&t.database()))
            .collect()
    }

    #[test]
    fn every_schema_statement_parses_and_reads_back() {
        let t = tenant("");
        for sql in every_statement(&t) {
            let parsed = Statement::parse(&sql).unwrap_or_else(|e| panic!("{e}: {sql}"));
            let squeeze = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
            assert_eq!(squeeze(&parsed.to_sql()), squeeze(&sql), "nothing is lost in the parts");
        }
    }

    #[test]
    fn the_single_node_form_is_the_schema_text_itself() {
        let t = tenant("");
        let form = Form::of(&t).unwrap();
        assert_eq!(form, Form::SingleNode);
        for sql in every_statement(&t) {
            assert_eq!(form.statements(&sql).unwrap(), vec![sql]);
        }
        assert_eq!(form.storage_table("events"), "events");
        assert_eq!(form.cluster(), None);
        let clustered = tenant("clickhouse: { cluster: main }");
        assert_eq!(Form::for_backend(&clustered, "embedded").unwrap(), Form::SingleNode);
        assert!(matches!(
            Form::for_backend(&clustered, "http").unwrap(),
            Form::Cluster(_)
        ));
    }

    #[test]
    fn every_schema_statement_has_a_cluster_form_on_the_cluster() {
        let t = tenant("clickhouse: { cluster: analytics }");
        let form = Form::of(&t).unwrap();
        let db = t.database();
        for sql in every_statement(&t) {
            let out = form.statements(&sql).unwrap_or_else(|e| panic!("{e}"));
            assert!(!out.is_empty());
            for s in &out {
                assert!(s.contains(" ON CLUSTER analytics"), "{s}");
                assert!(!s.contains("ENGINE = MergeTree"), "no unreplicated table: {s}");
            }
        }
        // The tables with a site are sharded, the bookkeeping ones replicated everywhere.
        for table in [
            schema::RAW_TABLE,
            schema::EVENTS_TABLE,
            schema::Tier::QuarterHour.table(false),
            schema::Tier::Daily.table(true),
            schema::legacy::SITE_ROLLUP,
        ] {
            assert_eq!(
                form.created_tables(table),
                [format!("{table}_local"), table.to_string()]
            );
        }
        for table in [schema::MIGRATIONS_TABLE, schema::STATE_TABLE, schema::INTENTS_TABLE] {
            assert_eq!(form.created_tables(table), [table.to_string()]);
        }
        // Views feed each shard's rollups from its own events.
        let v6 = schema::migrations(&t).into_iter().find(|m| m.version == 6).unwrap();
        let view = v6.statements.iter().find(|s| s.contains("rollup_site_15m_mv")).unwrap();
        let out = form.statements(view).unwrap();
        assert!(
            out[0].contains(&format!("TO {db}.rollup_site_15m_local AS SELECT")),
            "{}",
            out[0]
        );
        assert!(out[0].contains(&format!("FROM {db}.events_local WHERE")), "{}", out[0]);
        assert!(!out[0].contains(&format!("{db}.events ")), "{}", out[0]);
    }
}
