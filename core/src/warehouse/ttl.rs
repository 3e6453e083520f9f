//! Retention as the spec says it, changed only where it differs. Every `MODIFY TTL` is an
//! ALTER (the table's alter lock; on a replicated table an entry in the replication log
//! that every replica runs), one that changes the TTL also a mutation that rewrites the
//! table's parts (`materialize_ttl_after_modify`), and the schema is applied on every start
//! of a migrating role and every resync of the operator: so each table's TTL is read first
//! (`system.tables.engine_full`), and only a table whose TTL is not the spec's gets its
//! `ALTER`. A TTL changed by hand counts as different and is set back.

use std::collections::HashMap;

use super::{Params, Warehouse};
use crate::ddl::parse::{find_top_level_word, Statement};
use crate::ddl::Form;
use crate::{Error, Result};

/// Runs those of `statements` (`ALTER TABLE db.t MODIFY TTL expr`, as
/// `schema::spec_statements` writes them for database `db`) whose table's TTL differs from
/// `expr`, in `form`. Tables that do not exist are left alone (the operator's drift repair
/// recreates them, with the spec's TTL). Returns the tables changed, as the schema names
/// them, in statement order.
///
/// TTLs are compared as the engine formats them (`formatQuerySingleLine`, ClickHouse 23.10
/// or newer), so `INTERVAL 30 DAY` and the `toIntervalDay(30)` the engine stores are equal.
pub async fn apply_spec_ttls(wh: &dyn Warehouse, form: &Form, db: &str, statements: &[String]) -> Result<Vec<String>> {
    struct Wanted<'a> {
        table: &'a str,
        storage: String,
        expression: &'a str,
        sql: &'a str,
    }
    let mut wanted = Vec::with_capacity(statements.len());
    for sql in statements {
        let not_ttl = |message: String| Error::Ddl {
            sql: sql.clone(),
            message,
        };
        let alter = match Statement::parse(sql).map_err(|e| not_ttl(e.to_string()))? {
            Statement::Alter(alter) => alter,
            _ => return Err(not_ttl("a spec statement is an ALTER TABLE … MODIFY TTL".into())),
        };
        let expression = alter
            .modified_ttl()
            .ok_or_else(|| not_ttl("a spec statement is an ALTER TABLE … MODIFY TTL".into()))?;
        wanted.push(Wanted {
            table: alter.table.name,
            storage: form.storage_table(alter.table.name),
            expression,
            sql,
        });
    }
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let rows = wh
        .select(
            "SELECT name, engine_full FROM system.tables WHERE database = {db:String} AND name IN {names:Array(String)}",
            &Params::new()
                .bind("db", db)
                .bind("names", Params::array_of_strings(wanted.iter().map(|w| w.storage.as_str()))),
        )
        .await?;
    let engines: HashMap<&str, &str> = rows
        .iter()
        .filter_map(|r| Some((r["name"].as_str()?, r["engine_full"].as_str()?)))
        .collect();
    // Both sides of each comparison as a statement for the engine to format: the TTL a
    // table has and the one the spec wants.
    let mut compared = Vec::new();
    let mut queries = Vec::new();
    for w in &wanted {
        let Some(engine) = engines.get(w.storage.as_str()) else {
            tracing::debug!(table = %w.storage, "no such table; its TTL is set when it is created");
            continue;
        };
        let Some(current) = ttl_of(engine) else {
            compared.push((w, false));
            continue;
        };
        queries.push(format!("ALTER TABLE {db}.{} MODIFY TTL {current}", w.storage));
        queries.push(format!("ALTER TABLE {db}.{} MODIFY TTL {}", w.storage, w.expression));
        compared.push((w, true));
    }
    let formatted: Vec<String> = if queries.is_empty() {
        Vec::new()
    } else {
        let rows = wh
            .select(
                "SELECT arrayMap(q -> formatQuerySingleLine(q), {queries:Array(String)}) AS formatted",
                &Params::new().bind("queries", Params::array_of_strings(&queries)),
            )
            .await?;
        rows.first()
            .and_then(|r| r["formatted"].as_array())
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
            .filter(|f: &Vec<String>| f.len() == queries.len())
            .ok_or_else(|| Error::Decode(format!("formatted TTLs: {rows:?}")))?
    };
    let mut pairs = formatted.chunks(2);
    let mut changed = Vec::new();
    for (w, has_ttl) in compared {
        let same = has_ttl && pairs.next().is_some_and(|pair| pair[0] == pair[1]);
        if same {
            continue;
        }
        for statement in form.statements(w.sql)? {
            wh.execute(&statement, &Params::new()).await?;
        }
        tracing::info!(table = %w.table, ttl = %w.expression, "table TTL set to the spec's retention");
        changed.push(w.table.to_string());
    }
    Ok(changed)
}

/// The table TTL in an `engine_full` (`MergeTree PARTITION BY … TTL <ttl> SETTINGS …`).
fn ttl_of(engine_full: &str) -> Option<&str> {
    let at = find_top_level_word(engine_full, "TTL")?;
    let rest = &engine_full[at + "TTL".len()..];
    let end = find_top_level_word(rest, "SETTINGS").unwrap_or(rest.len());
    Some(rest[..end].trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_is_read_out_of_engine_full() {
        assert_eq!(
            ttl_of("MergeTree PARTITION BY toYYYYMMDD(ts) ORDER BY (site_id, ts) TTL toDateTime(ts) + toIntervalDay(30) SETTINGS index_granularity = 8192"),
            Some("toDateTime(ts) + toIntervalDay(30)")
        );
        assert_eq!(
            ttl_of("ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/db/r', '{replica}') PARTITION BY toYYYYMM(day) ORDER BY (site_id, day) TTL day + toIntervalDay(90)"),
            Some("day + toIntervalDay(90)")
        );
        assert_eq!(
            ttl_of("ReplacingMergeTree(version) ORDER BY key SETTINGS index_granularity = 8192"),
            None
        );
        assert_eq!(ttl_of("MergeTree('a TTL b') ORDER BY ttl"), None);
    }
}
