//! The tenant's schema: migrated through core's `ops::apply_schema`, then every table and
//! view of the plan compared with what it should be, on every replica when clustered.
//!
//! What it should be is read from the server itself: the plan is applied once to a scratch
//! database (`_sightline_reference_<digest>`, in the tenant's form) and its
//! `system.tables.create_table_query` (what `SHOW CREATE` shows) kept per plan, then the
//! scratch database is dropped. So a definition is compared as the same server writes it
//! back (types, defaults, the views' SELECTs, TTLs, settings, engine paths), with only the
//! database's name (and a UUID, if shown) normalised away; no second formatter to drift.
//!
//! Drift here: a table or view gone (recreated by running the plan's idempotent statements
//! again, kind `table_missing`), or one whose definition differs (`table_definition`). The
//! latter is repaired only when re-running the plan does it (a column dropped by hand, a
//! TTL changed: `ADD COLUMN IF NOT EXISTS`, `MODIFY TTL`); anything else would need the
//! table dropped or rewritten, which the operator never does on its own: reported.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::json;
use sightline_core::ddl::Form;
use sightline_core::spec::Tenant;
use sightline_core::warehouse::{ops, tiers, Params, Warehouse};
use tokio::sync::Mutex;

use super::Policy;
use crate::build::ddl::DdlPlan;
use crate::drift::{self, Found, Kind, Outcome};
use crate::error::{Error, Result};
use crate::validate::Validated;

/// Normalised definitions of one server: object name -> `create_table_query`.
pub type Definitions = BTreeMap<String, String>;

/// The reference definitions, built once per plan (by digest) for the operator's lifetime.
#[derive(Default)]
pub struct References {
    built: Mutex<HashMap<String, Arc<Definitions>>>,
}

/// What the schema step did and found.
#[derive(Clone, Debug, Default)]
pub struct SchemaOutcome {
    /// The version the database is at (`None`: not created yet).
    pub version: Option<u32>,
    /// The plan's version.
    pub target: u32,
    /// Objects of the plan missing now (after any repair), as `host: name` on a cluster.
    pub missing: Vec<String>,
    pub drift: Vec<Found>,
    /// Why the definitions were not compared, when they were not.
    pub unchecked: Option<String>,
    /// The digest to record: the plan is applied (`None` when it is not).
    pub applied_digest: Option<String>,
}

/// The digest of the DDL plan and the spec's retention statements.
pub fn digest(plan: &DdlPlan, tenant: &Tenant) -> String {
    drift::digest(&json!({
        "cluster": plan.cluster,
        "statements": plan.statements().collect::<Vec<_>>(),
        "spec": sightline_core::schema::spec_statements(tenant, plan.target_version),
    }))
}

/// Migrates, repairs and compares. `recorded` is the digest the status holds: when it
/// equals the plan's, every difference found is drift.
pub async fn reconcile(
    wh: &dyn Warehouse,
    v: &Validated,
    plan: &DdlPlan,
    recorded: Option<&str>,
    policy: Policy,
    references: &References,
) -> Result<SchemaOutcome> {
    let digest = digest(plan, &v.tenant);
    let steady = recorded == Some(digest.as_str());
    let mut out = SchemaOutcome {
        target: plan.target_version,
        ..SchemaOutcome::default()
    };
    let reference = match reference(wh, v, plan, policy, references).await {
        Ok(r) => r,
        Err(e) => {
            out.unchecked = Some(format!("table definitions ({e})"));
            None
        }
    };
    let before = compare(&definitions(wh, plan).await?, reference.as_deref(), plan);
    let make_changes = if steady { policy.repairs() } else { policy.write };
    if make_changes {
        let applied = ops::apply_schema(wh, &v.tenant).await?;
        if applied.from != applied.to {
            tracing::info!(tenant = %v.names.tenant, from = applied.from, to = applied.to, "schema migrated");
        }
        if !applied.ttl_changed.is_empty() {
            tracing::info!(tenant = %v.names.tenant, tables = ?applied.ttl_changed, "retention applied");
        }
        if !before.missing.is_empty() || !before.differs.is_empty() {
            recreate(wh, plan, &before.missing_names()).await?;
        }
    }
    let after = if make_changes {
        compare(&definitions(wh, plan).await?, reference.as_deref(), plan)
    } else {
        before.clone()
    };
    // Before a spec change is applied the differences are the change itself, not drift;
    // what a change leaves different was there before it. Held (paused) changes are no
    // drift either.
    let judged = match (steady, make_changes) {
        (true, _) => Some(&before),
        (false, true) => Some(&after),
        (false, false) => None,
    };
    if let Some(judged) = judged {
        for (kind, list, still) in [
            (Kind::TableMissing, &judged.missing, &after.missing),
            (Kind::TableDefinition, &judged.differs, &after.differs),
        ] {
            for object in list {
                let outcome = if still.contains(object) {
                    Outcome::Reported
                } else {
                    Outcome::Repaired
                };
                let detail = match (kind, outcome) {
                    (Kind::TableMissing, Outcome::Repaired) => "dropped; recreated by the plan",
                    (Kind::TableMissing, _) => "missing",
                    (_, Outcome::Repaired) => "differed; the plan's idempotent statements put it back",
                    (_, _) if make_changes => {
                        "differs from the plan's definition; putting it back would drop or rewrite data, so it is left for a person"
                    }
                    (_, _) => "differs from the plan's definition",
                };
                out.drift.push(Found::new(kind, object, detail, outcome));
            }
        }
    }
    out.missing = after.missing.clone();
    out.version = version(wh, &plan.database).await?;
    if policy.write && (make_changes || steady) {
        out.applied_digest = Some(digest);
    }
    Ok(out)
}

/// Objects missing and objects whose definition differs, as `name` (one server) or
/// `name on host` (every replica of a cluster).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Comparison {
    missing: Vec<String>,
    differs: Vec<String>,
}

impl Comparison {
    fn missing_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .missing
            .iter()
            .map(|m| m.split(" on ").next().unwrap_or(m).to_string())
            .collect();
        names.dedup();
        names
    }
}

/// Pure: each host's definitions against the plan's objects and the reference.
fn compare(live: &BTreeMap<String, Definitions>, reference: Option<&Definitions>, plan: &DdlPlan) -> Comparison {
    let mut out = Comparison::default();
    let label = |host: &str, object: &str| {
        let name = format!("{}.{object}", plan.database);
        if host.is_empty() {
            name
        } else {
            format!("{name} on {host}")
        }
    };
    // A database that does not exist yet answers no host at all.
    let empty = Definitions::new();
    let hosts: Vec<(&str, &Definitions)> = if live.is_empty() {
        vec![("", &empty)]
    } else {
        live.iter().map(|(h, d)| (h.as_str(), d)).collect()
    };
    for (host, defs) in hosts {
        for object in &plan.objects {
            match (defs.get(object), reference.and_then(|r| r.get(object))) {
                (None, _) => out.missing.push(label(host, object)),
                (Some(have), Some(want)) if have != want => out.differs.push(label(host, object)),
                _ => {}
            }
        }
    }
    out
}

/// Every server's definitions of the tenant's database: one server, or every replica of
/// the cluster through `clusterAllReplicas` (one query).
async fn definitions(wh: &dyn Warehouse, plan: &DdlPlan) -> Result<BTreeMap<String, Definitions>> {
    let rows = wh
        .select(
            &definitions_query(plan.cluster.as_deref()),
            &Params::new().bind("db", plan.database.as_str()),
        )
        .await?;
    let mut out: BTreeMap<String, Definitions> = BTreeMap::new();
    for row in rows {
        let (Some(name), Some(query)) = (row["name"].as_str(), row["create_table_query"].as_str()) else {
            continue;
        };
        let host = row["host"].as_str().unwrap_or_default().to_string();
        out.entry(host)
            .or_default()
            .insert(name.to_string(), normalise(query, &plan.database));
    }
    Ok(out)
}

/// The statement reading definitions. The cluster name is checked by core's
/// `valid_cluster_name` (letters, digits, `_`, `-`) before it gets here, so it is quoted as
/// a literal; the database is a parameter.
fn definitions_query(cluster: Option<&str>) -> String {
    match cluster {
        None => "SELECT '' AS host, name, create_table_query FROM system.tables WHERE database = {db:String}".into(),
        Some(cluster) => format!(
            "SELECT hostName() AS host, name, create_table_query FROM clusterAllReplicas('{cluster}', system.tables) \
             WHERE database = {{db:String}}"
        ),
    }
}

/// A definition with the database's name as `{db}`, any `UUID '…'` clause removed,
/// whitespace runs as one space, and the column list in name order: a column re-added by
/// `ADD COLUMN IF NOT EXISTS` comes last, and the order is nothing a query of ours relies
/// on (every insert names its columns).
pub fn normalise(create: &str, database: &str) -> String {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut text = String::with_capacity(create.len());
    let mut rest = create;
    while let Some(at) = rest.find(database) {
        let previous = rest[..at].chars().last().or_else(|| text.chars().last());
        let before_ok = !previous.is_some_and(word);
        let after = &rest[at + database.len()..];
        if before_ok && !after.starts_with(word) {
            text.push_str(&rest[..at]);
            text.push_str("{db}");
        } else {
            text.push_str(&rest[..at + database.len()]);
        }
        rest = after;
    }
    text.push_str(rest);
    let text = strip_uuid(&text);
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    sort_elements(&text)
}

/// The first parenthesised list (the columns and indexes of a table or view) with its
/// top-level elements sorted. Quotes and nested parentheses are respected.
fn sort_elements(text: &str) -> String {
    let Some(open) = text.find('(') else {
        return text.to_string();
    };
    let (mut depth, mut quote, mut close) = (0usize, None::<char>, None);
    let mut splits = Vec::new();
    for (i, c) in text[open..].char_indices() {
        let at = open + i;
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '`' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth -= 1;
                if depth == 0 {
                    close = Some(at);
                    break;
                }
            }
            (None, ',') if depth == 1 => splits.push(at),
            _ => {}
        }
    }
    let Some(close) = close else {
        return text.to_string();
    };
    let mut elements = Vec::new();
    let mut start = open + 1;
    for at in splits.into_iter().chain([close]) {
        elements.push(text[start..at].trim());
        start = at + 1;
    }
    elements.sort_unstable();
    format!("{}({}){}", &text[..open], elements.join(", "), &text[close + 1..])
}

fn strip_uuid(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(" UUID '") {
        let after = &rest[at + " UUID '".len()..];
        match after.find('\'') {
            Some(end) if end == 36 => {
                out.push_str(&rest[..at]);
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str(&rest[..at + 1]);
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The reference definitions of `plan`, from the cache or built now (a write: not while
/// paused). `None` when there is none and none may be built.
async fn reference(
    wh: &dyn Warehouse,
    v: &Validated,
    plan: &DdlPlan,
    policy: Policy,
    references: &References,
) -> Result<Option<Arc<Definitions>>> {
    // The plan with a placeholder database: tenants with the same retention and cluster
    // share one reference.
    let key = {
        let mut t = v.tenant.clone();
        t.spec.clickhouse.database = Some("_sightline_reference".into());
        drift::digest(&json!([
            plan.cluster,
            sightline_core::schema::bootstrap_statements(&t),
            sightline_core::schema::migrations(&t)
                .iter()
                .map(|m| &m.statements)
                .collect::<Vec<_>>(),
            sightline_core::schema::spec_statements(&t, plan.target_version),
        ]))
    };
    let mut built = references.built.lock().await;
    if let Some(r) = built.get(&key) {
        return Ok(Some(r.clone()));
    }
    if !policy.write {
        return Err(Error::Invalid {
            message: "no reference yet, and building one writes (the tenant is paused)".into(),
        });
    }
    let scratch = format!("_sightline_reference_{key}");
    let mut t = v.tenant.clone();
    t.spec.clickhouse.database = Some(scratch.clone());
    let form = Form::of(&t)?;
    let drop = format!("DROP DATABASE IF EXISTS {scratch}");
    ops::execute_schema_statement(wh, &form, &drop).await?;
    let result = async {
        ops::apply_schema(wh, &t).await?;
        let rows = wh
            .select(&definitions_query(None), &Params::new().bind("db", scratch.as_str()))
            .await?;
        Ok::<_, Error>(
            rows.iter()
                .filter_map(|r| {
                    Some((
                        r["name"].as_str()?.to_string(),
                        normalise(r["create_table_query"].as_str()?, &scratch),
                    ))
                })
                .collect::<Definitions>(),
        )
    }
    .await;
    ops::execute_schema_statement(wh, &form, &drop).await?;
    let definitions = Arc::new(result?);
    built.insert(key, definitions.clone());
    Ok(Some(definitions))
}

/// Recreates missing objects by running the plan's statements again (each is idempotent:
/// `IF NOT EXISTS`), except those of the hourly layout a tenant on the tiers retired.
async fn recreate(wh: &dyn Warehouse, plan: &DdlPlan, missing: &[String]) -> Result<()> {
    tracing::warn!(database = %plan.database, ?missing, "schema objects missing; recreating");
    // Retired objects are never recreated: dropping a view under an insert can leave the
    // insert half through its views, so they stay retired once retired.
    let retired = if tiers::read_state(wh, &plan.database).await?.layout == tiers::Layout::Tiers {
        sightline_core::schema::legacy::retired_objects()
    } else {
        Vec::new()
    };
    for statement in plan.statements().filter(|s| !mentions_any(s, &retired)) {
        wh.execute(statement, &Params::new()).await?;
    }
    Ok(())
}

/// The version the database is at, `None` when it has no migrations table yet.
async fn version(wh: &dyn Warehouse, database: &str) -> Result<Option<u32>> {
    let present = wh
        .select(
            "SELECT count() AS n FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            &Params::new()
                .bind("db", database)
                .bind("t", sightline_core::schema::MIGRATIONS_TABLE),
        )
        .await?;
    if present.first().and_then(|r| r["n"].as_u64()).unwrap_or(0) == 0 {
        return Ok(None);
    }
    let rows = wh
        .select(
            &format!(
                "SELECT max(version) AS v FROM {database}.{}",
                sightline_core::schema::MIGRATIONS_TABLE
            ),
            &Params::new(),
        )
        .await?;
    Ok(rows.first().and_then(|r| r["v"].as_u64()).map(|v| v as u32))
}

/// Whether `sql` names one of `objects` (`<db>.<name>`, or on a cluster its `<name>_local`
/// storage table), as a whole name: `rollup_site_hourly` is not `rollup_site_hourly_mv`.
fn mentions_any(sql: &str, objects: &[String]) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    objects.iter().any(|name| {
        let needle = format!(".{name}");
        sql.match_indices(&needle).any(|(at, _)| {
            let rest = &sql[at + needle.len()..];
            let rest = rest.strip_prefix("_local").unwrap_or(rest);
            !rest.starts_with(word)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests::object;
    use crate::validate::{validate, OperatorConfig};

    fn plan(spec: &str) -> DdlPlan {
        crate::build::ddl::build(&validate(&object("acme", spec), &OperatorConfig::example("s")).unwrap()).unwrap()
    }

    #[test]
    fn statements_of_retired_objects_are_told_by_whole_names() {
        let retired = sightline_core::schema::legacy::retired_objects();
        assert!(mentions_any("DROP VIEW IF EXISTS db.rollup_site_hourly_mv", &retired));
        assert!(mentions_any(
            "CREATE TABLE db.rollup_dims_hourly_local ON CLUSTER c (x UInt8)",
            &retired
        ));
        assert!(mentions_any(
            "ALTER TABLE db.rollup_site_hourly ADD COLUMN x UInt8",
            &retired
        ));
        assert!(!mentions_any(
            "CREATE TABLE db.rollup_site_hourly_archive (x UInt8)",
            &retired
        ));
        assert!(!mentions_any("CREATE TABLE db.rollup_site_15m (x UInt8)", &retired));
    }

    #[test]
    fn normalising_names_the_database_and_nothing_else() {
        let create = "CREATE MATERIALIZED VIEW sightline_acme.v UUID '0f5e4c1a-8a5e-4f4e-9c3b-2d1e0f9a8b7c' TO sightline_acme.t\n  (`x`  UInt8) AS SELECT x FROM sightline_acme.events WHERE sightline_acme_x = 1 AND y = 'sightline_acme'";
        assert_eq!(
            normalise(create, "sightline_acme"),
            "CREATE MATERIALIZED VIEW {db}.v TO {db}.t (`x` UInt8) AS SELECT x FROM {db}.events WHERE sightline_acme_x = 1 AND y = '{db}'"
        );
        // Columns in any order are the same table; a nested type's commas stay put.
        assert_eq!(
            normalise("CREATE TABLE d.t (`b` Map(String, String), `a` UInt8 DEFAULT 'x,y') ENGINE = MergeTree ORDER BY (a, b)", "d"),
            "CREATE TABLE {db}.t (`a` UInt8 DEFAULT 'x,y', `b` Map(String, String)) ENGINE = MergeTree ORDER BY (a, b)"
        );
        // An engine path names the database too.
        assert_eq!(
            normalise(
                "ReplicatedMergeTree('/clickhouse/tables/{shard}/db1/events', '{replica}')",
                "db1"
            ),
            "ReplicatedMergeTree('/clickhouse/tables/{shard}/{db}/events', '{replica}')"
        );
    }

    #[test]
    fn comparison_names_missing_and_different_objects_per_replica() {
        let p = plan("sites: { open: true }");
        let reference: Definitions = p.objects.iter().map(|o| (o.clone(), format!("CREATE {o}"))).collect();
        let mut one = reference.clone();
        one.remove("events");
        one.insert("storage_state".into(), "CREATE changed".into());
        let live = BTreeMap::from([("".to_string(), one)]);
        let c = compare(&live, Some(&reference), &p);
        assert_eq!(c.missing, ["sightline_acme.events"]);
        assert_eq!(c.differs, ["sightline_acme.storage_state"]);
        assert_eq!(c.missing_names(), ["sightline_acme.events"]);
        // No reference: only presence is checked. No database: everything is missing.
        assert!(compare(&live, None, &p).differs.is_empty());
        assert_eq!(compare(&BTreeMap::new(), None, &p).missing.len(), p.objects.len());
    }

    #[test]
    fn on_a_cluster_every_replica_is_read_in_one_query() {
        let p = plan("sites: { open: true }\nclickhouse: { cluster: analytics }");
        let q = definitions_query(p.cluster.as_deref());
        assert_eq!(
            q,
            "SELECT hostName() AS host, name, create_table_query FROM clusterAllReplicas('analytics', system.tables) \
             WHERE database = {db:String}"
        );
        let reference: Definitions = p.objects.iter().map(|o| (o.clone(), format!("CREATE {o}"))).collect();
        let mut stale = reference.clone();
        stale.remove("events_local");
        let live = BTreeMap::from([("ch-0-0".to_string(), reference.clone()), ("ch-0-1".to_string(), stale)]);
        let c = compare(&live, Some(&reference), &p);
        assert_eq!(c.missing, ["sightline_acme.events_local on ch-0-1"]);
    }

    #[test]
    fn the_digest_follows_the_plan_and_the_retention() {
        let a = plan("sites: { open: true }");
        let v = validate(&object("acme", "sites: { open: true }"), &OperatorConfig::example("s")).unwrap();
        let longer = validate(
            &object("acme", "sites: { open: true }\nretention: { rawDays: 30 }"),
            &OperatorConfig::example("s"),
        )
        .unwrap();
        assert_ne!(digest(&a, &v.tenant), digest(&a, &longer.tenant));
        assert_eq!(digest(&a, &v.tenant), digest(&plan("sites: { open: true }"), &v.tenant));
    }
}
