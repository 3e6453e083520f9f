//! The cluster form of the schema: what each single-node statement becomes on a ClickHouse
//! cluster (`spec.clickhouse.cluster`). docs/storage.md ("On a ClickHouse cluster") tells
//! the layout; in short:
//!
//! - Every statement runs `ON CLUSTER <cluster>`.
//! - A MergeTree-family table with a `site_id` column is **sharded by site**: on every node
//!   a local `<table>_local` with the `Replicated` variant of its engine (path
//!   `/clickhouse/tables/{shard}/<db>/<table>`, replica `{replica}`, then the engine's own
//!   arguments), and under the table's own name a `Distributed(<cluster>, <db>,
//!   <table>_local, sipHash64(site_id))` table that inserts and reads go through. All of a
//!   site's rows live on one shard.
//! - A MergeTree-family table without `site_id` (schema_migrations, loader_intents,
//!   storage_state, …) is **replicated on every node** under its own name: one replication
//!   group for the whole cluster (path `/clickhouse/tables/all/<db>/<table>`, replica
//!   `{shard}-{replica}`), so any node answers it whole. These are small bookkeeping tables.
//! - A materialized view reads the local source table and writes the local target table:
//!   each shard aggregates its own sites, and a view fires once per insert (on the shard the
//!   `Distributed` table sent the rows to), never on a replicated copy.
//! - An `ALTER` of columns changes the local table, then the `Distributed` one (so the
//!   front never has a column the shards lack); an `ALTER` of storage (TTL, settings)
//!   changes the local table only.
//! - Drops run `SYNC`, so a replicated table's path is free again at once.

use std::collections::BTreeMap;

use super::parse::{self, Alter, AlterScope, CreateTable, CreateView, Drop, DropKind, Qualified, Statement};

/// The suffix of a sharded table's local, replicated part.
pub const LOCAL_SUFFIX: &str = "_local";
/// The column that shards rows: all of a site's rows live on one shard.
pub const SITE_COLUMN: &str = "site_id";
/// The `Distributed` tables' sharding key.
pub const SHARDING_KEY: &str = "sipHash64(site_id)";

/// Where a table's rows live on the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `<table>_local` on each shard, replicated within it, behind a `Distributed` `<table>`.
    ShardedBySite,
    /// `<table>` replicated on every node of the cluster.
    Everywhere,
}

/// The cluster form of one database's schema: the cluster's name and each table's layout,
/// learnt from the statements that create the tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterForm {
    cluster: String,
    database: String,
    layouts: BTreeMap<String, Layout>,
}

impl ClusterForm {
    /// The form for `database` on `cluster` (a name as `^[A-Za-z_][A-Za-z0-9_-]*$`), with
    /// the layout of every table `creates` makes (the schema's bootstrap and migrations;
    /// statements other than `CREATE TABLE` are skipped, unparseable ones are an error).
    pub fn new<'a>(
        cluster: &str,
        database: &str,
        creates: impl IntoIterator<Item = &'a str>,
    ) -> Result<Self, parse::ParseError> {
        if !valid_cluster_name(cluster) {
            return Err(parse::ParseError(format!(
                "cluster name {cluster:?}: use letters, digits, '_' and '-', starting with a letter or '_'"
            )));
        }
        let mut layouts = BTreeMap::new();
        for sql in creates {
            if let Statement::CreateTable(t) = Statement::parse(sql)? {
                let layout = if t.has_column(SITE_COLUMN) {
                    Layout::ShardedBySite
                } else {
                    Layout::Everywhere
                };
                layouts.insert(t.table.name.to_string(), layout);
            }
        }
        Ok(Self {
            cluster: cluster.to_string(),
            database: database.to_string(),
            layouts,
        })
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// A table's layout; `None` for a name no statement created.
    pub fn layout(&self, table: &str) -> Option<Layout> {
        self.layouts.get(table).copied()
    }

    /// The table that holds `table`'s rows on a node: `<table>_local` when sharded.
    pub fn storage_table(&self, table: &str) -> String {
        match self.layout(table) {
            Some(Layout::ShardedBySite) => format!("{table}{LOCAL_SUFFIX}"),
            _ => table.to_string(),
        }
    }

    /// The tables a `CREATE TABLE` of `table` makes on every node, in creation order.
    pub fn created_tables(&self, table: &str) -> Vec<String> {
        match self.layout(table) {
            Some(Layout::ShardedBySite) => vec![self.storage_table(table), table.to_string()],
            _ => vec![table.to_string()],
        }
    }

    /// The cluster form of one single-node statement: one or two statements, in the order
    /// they must run. Errors name the statement kind or table without one.
    pub fn statements(&self, sql: &str) -> Result<Vec<String>, parse::ParseError> {
        let statement = Statement::parse(sql)?;
        let on = self.on_cluster();
        match statement {
            Statement::CreateDatabase {
                if_not_exists,
                database,
            } => {
                self.own_database(database)?;
                Ok(vec![format!("CREATE DATABASE {}{database} {on}", ine(if_not_exists))])
            }
            Statement::DropDatabase { if_exists, database } => {
                self.own_database(database)?;
                Ok(vec![format!("DROP DATABASE {}{database} {on} SYNC", ie(if_exists))])
            }
            Statement::CreateTable(t) => self.create_table(&t),
            Statement::CreateView(v) => self.create_view(&v).map(|s| vec![s]),
            Statement::Alter(a) => self.alter(&a),
            Statement::Drop(d) => self.drop(&d),
        }
    }

    fn on_cluster(&self) -> String {
        format!("ON CLUSTER {}", self.cluster_ident())
    }

    /// The cluster's name as an identifier: bare when it is one, back-quoted when it has a
    /// '-' (the name's pattern allows no back-quote).
    fn cluster_ident(&self) -> String {
        if self.cluster.contains('-') {
            format!("`{}`", self.cluster)
        } else {
            self.cluster.clone()
        }
    }

    fn own_database(&self, database: &str) -> Result<(), parse::ParseError> {
        if database == self.database {
            Ok(())
        } else {
            Err(parse::ParseError(format!(
                "database {database}: this form is for {}",
                self.database
            )))
        }
    }

    /// The layout of a table the statement names, which must be one of ours.
    fn known(&self, name: Qualified<'_>) -> Result<Layout, parse::ParseError> {
        self.own_database(name.database)?;
        self.layout(name.name).ok_or_else(|| {
            parse::ParseError(format!(
                "table {name}: no CREATE TABLE of the schema makes it, so its cluster layout is unknown"
            ))
        })
    }

    fn create_table(&self, t: &CreateTable<'_>) -> Result<Vec<String>, parse::ParseError> {
        let layout = self.known(t.table)?;
        let engine = replicated_engine(t.engine)?;
        let (db, name) = (t.table.database, t.table.name);
        let (path, replica) = match layout {
            Layout::ShardedBySite => (format!("/clickhouse/tables/{{shard}}/{db}/{name}"), "{replica}"),
            Layout::Everywhere => (format!("/clickhouse/tables/all/{db}/{name}"), "{shard}-{replica}"),
        };
        let args = match t.engine_args.map(str::trim) {
            Some(a) if !a.is_empty() => format!(", {a}"),
            _ => String::new(),
        };
        let storage = self.storage_table(name);
        let on = self.on_cluster();
        let ine = ine(t.if_not_exists);
        let mut out = vec![format!(
            "CREATE TABLE {ine}{db}.{storage} {on} ({}) ENGINE = {engine}('{path}', '{replica}'{args}){}",
            t.elements, t.clauses
        )];
        if layout == Layout::ShardedBySite {
            out.push(format!(
                "CREATE TABLE {ine}{db}.{name} {on} AS {db}.{storage} ENGINE = Distributed({}, {db}, {storage}, {SHARDING_KEY})",
                self.cluster_ident()
            ));
        }
        Ok(out)
    }

    fn create_view(&self, v: &CreateView<'_>) -> Result<String, parse::ParseError> {
        self.own_database(v.view.database)?;
        let sharded = |q: Qualified<'_>| -> Result<(), parse::ParseError> {
            match self.known(q)? {
                Layout::ShardedBySite => Ok(()),
                Layout::Everywhere => Err(parse::ParseError(format!(
                    "view {}: {q} is not sharded by site, and a view must read and write one shard's rows",
                    v.view
                ))),
            }
        };
        sharded(v.target)?;
        let sources = parse::qualified_names(v.select, v.view.database);
        if sources.is_empty() {
            return Err(parse::ParseError(format!(
                "view {}: its SELECT names no {}.table to read",
                v.view, v.view.database
            )));
        }
        // Each source, in the SELECT's own text, becomes its local table.
        let mut select = String::with_capacity(v.select.len() + 16 * sources.len());
        let mut copied = 0;
        for (range, source) in &sources {
            sharded(*source)?;
            select.push_str(&v.select[copied..range.end]);
            select.push_str(LOCAL_SUFFIX);
            copied = range.end;
        }
        select.push_str(&v.select[copied..]);
        Ok(format!(
            "CREATE MATERIALIZED VIEW {}{} {} TO {}.{} AS {select}",
            ine(v.if_not_exists),
            v.view,
            self.on_cluster(),
            v.target.database,
            self.storage_table(v.target.name)
        ))
    }

    fn alter(&self, a: &Alter<'_>) -> Result<Vec<String>, parse::ParseError> {
        let layout = self.known(a.table)?;
        let scope = a.scope()?;
        let db = a.table.database;
        let on = self.on_cluster();
        let mut out = vec![format!(
            "ALTER TABLE {db}.{} {on} {}",
            self.storage_table(a.table.name),
            a.actions
        )];
        if layout == Layout::ShardedBySite && scope == AlterScope::Columns {
            out.push(format!("ALTER TABLE {} {on} {}", a.table, a.actions));
        }
        Ok(out)
    }

    fn drop(&self, d: &Drop<'_>) -> Result<Vec<String>, parse::ParseError> {
        let on = self.on_cluster();
        let ie = ie(d.if_exists);
        let one = |name: &str| format!("DROP {} {ie}{}.{name} {on} SYNC", d.kind.keyword(), d.name.database);
        match d.kind {
            DropKind::View => {
                self.own_database(d.name.database)?;
                Ok(vec![one(d.name.name)])
            }
            // The front first: nothing is sent to a local table that is gone.
            DropKind::Table => {
                self.known(d.name)?;
                Ok(self.created_tables(d.name.name).iter().rev().map(|t| one(t)).collect())
            }
        }
    }
}

/// Whether `name` can name a cluster here: 1-63 letters, digits, '_' and '-', starting
/// with a letter or '_' (the CRD's pattern), so it is safe as a back-quoted identifier.
pub fn valid_cluster_name(name: &str) -> bool {
    name.len() <= 63
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn ine(if_not_exists: bool) -> &'static str {
    if if_not_exists {
        "IF NOT EXISTS "
    } else {
        ""
    }
}

fn ie(if_exists: bool) -> &'static str {
    if if_exists {
        "IF EXISTS "
    } else {
        ""
    }
}

/// `MergeTree` -> `ReplicatedMergeTree`, `ReplacingMergeTree` -> `ReplicatedReplacingMergeTree`,
/// …; engines outside the MergeTree family have no replicated form.
fn replicated_engine(engine: &str) -> Result<String, parse::ParseError> {
    if engine.ends_with("MergeTree") && !engine.starts_with("Replicated") {
        Ok(format!("Replicated{engine}"))
    } else {
        Err(parse::ParseError(format!(
            "engine {engine}: the cluster form knows the MergeTree family (not yet replicated) only"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &str = "CREATE TABLE IF NOT EXISTS db.events_raw (
    event_id UUID,
    site_id LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    INDEX event_id_idx event_id TYPE bloom_filter GRANULARITY 4
) ENGINE = MergeTree
PARTITION BY toYYYYMMDD(ts)
ORDER BY (site_id, ts)
TTL toDateTime(ts) + INTERVAL 30 DAY";
    const ROLLUP: &str =
        "CREATE TABLE IF NOT EXISTS db.rollup (site_id LowCardinality(String), n SimpleAggregateFunction(sum, Int64)) \
                          ENGINE = AggregatingMergeTree ORDER BY site_id";
    const STATE: &str = "CREATE TABLE IF NOT EXISTS db.state (key String, value String, version UInt64) \
                         ENGINE = ReplacingMergeTree(version) ORDER BY key";

    fn form(cluster: &str) -> ClusterForm {
        ClusterForm::new(
            cluster,
            "db",
            [RAW, ROLLUP, STATE, "ALTER TABLE db.x ADD COLUMN a UInt8"],
        )
        .unwrap()
    }

    #[test]
    fn layouts_follow_the_site_column() {
        let f = form("main");
        assert_eq!(f.layout("events_raw"), Some(Layout::ShardedBySite));
        assert_eq!(f.layout("rollup"), Some(Layout::ShardedBySite));
        assert_eq!(f.layout("state"), Some(Layout::Everywhere));
        assert_eq!(f.layout("x"), None);
        assert_eq!(f.storage_table("events_raw"), "events_raw_local");
        assert_eq!(f.storage_table("state"), "state");
        assert_eq!(f.created_tables("rollup"), ["rollup_local", "rollup"]);
        assert_eq!(f.created_tables("state"), ["state"]);
    }

    #[test]
    fn a_sharded_table_is_a_replicated_local_table_behind_a_distributed_one() {
        let out = form("main").statements(RAW).unwrap();
        assert_eq!(
            out,
            [
                "CREATE TABLE IF NOT EXISTS db.events_raw_local ON CLUSTER main (
    event_id UUID,
    site_id LowCardinality(String),
    ts DateTime64(3, 'UTC'),
    INDEX event_id_idx event_id TYPE bloom_filter GRANULARITY 4
) ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/db/events_raw', '{replica}')
PARTITION BY toYYYYMMDD(ts)
ORDER BY (site_id, ts)
TTL toDateTime(ts) + INTERVAL 30 DAY",
                "CREATE TABLE IF NOT EXISTS db.events_raw ON CLUSTER main AS db.events_raw_local \
                 ENGINE = Distributed(main, db, events_raw_local, sipHash64(site_id))",
            ]
        );
        let out = form("main").statements(ROLLUP).unwrap();
        assert!(out[0].contains(
            "ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/db/rollup', '{replica}') ORDER BY site_id"
        ));
    }

    #[test]
    fn a_table_without_a_site_is_replicated_on_every_node_with_its_engine_arguments() {
        assert_eq!(
            form("main").statements(STATE).unwrap(),
            ["CREATE TABLE IF NOT EXISTS db.state ON CLUSTER main (key String, value String, version UInt64) \
              ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/db/state', '{shard}-{replica}', version) ORDER BY key"]
        );
    }

    #[test]
    fn views_read_and_write_the_local_tables() {
        let view = "CREATE MATERIALIZED VIEW IF NOT EXISTS db.rollup_mv TO db.rollup AS \
                    SELECT site_id, toInt64(count()) AS n FROM db.events_raw WHERE name != 'db.events_raw' GROUP BY site_id";
        assert_eq!(
            form("main").statements(view).unwrap(),
            ["CREATE MATERIALIZED VIEW IF NOT EXISTS db.rollup_mv ON CLUSTER main TO db.rollup_local AS \
              SELECT site_id, toInt64(count()) AS n FROM db.events_raw_local WHERE name != 'db.events_raw' GROUP BY site_id"]
        );
        let e = form("main")
            .statements("CREATE MATERIALIZED VIEW db.v TO db.rollup AS SELECT site_id, 1 AS n FROM db.state")
            .unwrap_err();
        assert!(e.0.contains("db.state is not sharded by site"), "{e}");
        let e = form("main")
            .statements("CREATE MATERIALIZED VIEW db.v TO db.rollup AS SELECT 'x' AS site_id, 1 AS n")
            .unwrap_err();
        assert!(e.0.contains("names no db.table"), "{e}");
    }

    #[test]
    fn alters_of_columns_reach_the_front_and_alters_of_storage_do_not() {
        let f = form("main");
        assert_eq!(
            f.statements("ALTER TABLE db.events_raw ADD COLUMN IF NOT EXISTS x UInt8 DEFAULT 1")
                .unwrap(),
            [
                "ALTER TABLE db.events_raw_local ON CLUSTER main ADD COLUMN IF NOT EXISTS x UInt8 DEFAULT 1",
                "ALTER TABLE db.events_raw ON CLUSTER main ADD COLUMN IF NOT EXISTS x UInt8 DEFAULT 1",
            ]
        );
        assert_eq!(
            f.statements("ALTER TABLE db.events_raw MODIFY TTL toDateTime(ts) + INTERVAL 9 DAY")
                .unwrap(),
            ["ALTER TABLE db.events_raw_local ON CLUSTER main MODIFY TTL toDateTime(ts) + INTERVAL 9 DAY"]
        );
        assert_eq!(
            f.statements("ALTER TABLE db.state ADD COLUMN IF NOT EXISTS y String")
                .unwrap(),
            ["ALTER TABLE db.state ON CLUSTER main ADD COLUMN IF NOT EXISTS y String"]
        );
        let e = f.statements("ALTER TABLE db.nope ADD COLUMN y String").unwrap_err();
        assert!(e.0.contains("db.nope: no CREATE TABLE"), "{e}");
    }

    #[test]
    fn databases_and_drops_run_on_the_cluster_and_drops_are_sync() {
        let f = form("eu-1");
        assert_eq!(
            f.statements("CREATE DATABASE IF NOT EXISTS db").unwrap(),
            ["CREATE DATABASE IF NOT EXISTS db ON CLUSTER `eu-1`"]
        );
        assert_eq!(
            f.statements("DROP DATABASE IF EXISTS db").unwrap(),
            ["DROP DATABASE IF EXISTS db ON CLUSTER `eu-1` SYNC"]
        );
        assert_eq!(
            f.statements("DROP TABLE IF EXISTS db.rollup").unwrap(),
            [
                "DROP TABLE IF EXISTS db.rollup ON CLUSTER `eu-1` SYNC",
                "DROP TABLE IF EXISTS db.rollup_local ON CLUSTER `eu-1` SYNC",
            ]
        );
        assert_eq!(
            f.statements("DROP VIEW IF EXISTS db.rollup_mv").unwrap(),
            ["DROP VIEW IF EXISTS db.rollup_mv ON CLUSTER `eu-1` SYNC"]
        );
        assert!(f
            .statements(RAW)
            .unwrap()
            .iter()
            .all(|s| s.contains("ON CLUSTER `eu-1`")));
        assert!(f.statements(RAW).unwrap()[1].contains("Distributed(`eu-1`, db,"));
        let e = f.statements("CREATE DATABASE other").unwrap_err();
        assert!(e.0.contains("this form is for db"), "{e}");
    }

    #[test]
    fn what_has_no_cluster_form_is_refused_by_name() {
        let e = ClusterForm::new(
            "main",
            "db",
            ["CREATE TABLE IF NOT EXISTS db.m (site_id String) ENGINE = Memory"],
        )
        .unwrap()
        .statements("CREATE TABLE IF NOT EXISTS db.m (site_id String) ENGINE = Memory")
        .unwrap_err();
        assert!(e.0.contains("engine Memory"), "{e}");
        for bad in ["", "1main", "ma in", "a`b", "x{shard}"] {
            assert!(ClusterForm::new(bad, "db", [RAW]).is_err(), "{bad:?}");
        }
        assert!(ClusterForm::new("main", "db", ["SELECT 1"]).is_err());
    }
}
