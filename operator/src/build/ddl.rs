//! The DDL plan: the database and the numbered migrations core's schema module generates
//! for this tenant (`schema::migrations`), and the schema version they lead to. Apply runs
//! them through core's `ops::apply_schema`; the plan is what `render` and the tests see.

use sightline_core::schema;

use crate::validate::Validated;

/// One migration of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub version: u32,
    pub description: &'static str,
    pub statements: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DdlPlan {
    pub database: String,
    /// The version the database is at after the plan ran.
    pub target_version: u32,
    pub steps: Vec<Step>,
    /// The tables and views the plan creates: what drift repair checks are still there.
    pub objects: Vec<String>,
}

pub fn build(v: &Validated) -> DdlPlan {
    let steps: Vec<Step> = schema::migrations(&v.tenant)
        .into_iter()
        .map(|m| Step {
            version: m.version,
            description: m.description,
            statements: m.statements,
        })
        .collect();
    let prefix = format!("{}.", v.names.database);
    let mut objects: Vec<String> = steps
        .iter()
        .flat_map(|s| &s.statements)
        .filter_map(|sql| {
            let rest = sql
                .strip_prefix("CREATE TABLE IF NOT EXISTS ")
                .or_else(|| sql.strip_prefix("CREATE MATERIALIZED VIEW IF NOT EXISTS "))?;
            let name = rest.split([' ', '(', '\n']).next()?;
            name.strip_prefix(&prefix).map(str::to_string)
        })
        .collect();
    objects.push(schema::MIGRATIONS_TABLE.to_string());
    objects.sort();
    objects.dedup();
    DdlPlan {
        database: v.names.database.clone(),
        target_version: steps.last().map(|s| s.version).unwrap_or(0),
        steps,
        objects,
    }
}
