//! What a replay or a tier rebuild killed mid-way leaves behind: its day leases (live for
//! up to `lease::TTL`) and its staging tables (never dropped). Only a process that holds
//! the warehouse alone may clear them, since it then knows their owners have stopped: the
//! embedded engine, which one process opens at a time (`sightline reprocess --data`, and
//! `sightline standalone` at start, before its writers and replays run).

use chrono::NaiveDate;

use super::super::{Params, Warehouse};
use super::lease;
use crate::{Error, Result};

/// The staging tables' names: a replay's (`events_replay_<run>_<YYYYMMDD>`, and its tiers'
/// `<tier>_stage_<YYYYMMDD>_<run>` with their views, `..._mv`, `day.rs`), a tier rebuild's
/// (`<tier>_stage_[<unit>_]<random>`, `tiers.rs`, `repair.rs`).
const STAGING: &str = "^(events_replay_[0-9a-f]{8}_[0-9]{8}|[a-z0-9_]+_stage_([0-9]+_)?[0-9a-f]{8}(_mv)?)$";

/// What `clear_left_behind` cleared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeftBehind {
    /// Days whose claims were released.
    pub leases: Vec<NaiveDate>,
    /// Staging tables dropped.
    pub tables: Vec<String>,
}

/// Releases `db`'s live day leases and drops its staging tables. For a process that holds
/// the warehouse alone (see the module documentation): elsewhere it would break runs under
/// way. Errors: the warehouse's.
pub async fn clear_left_behind(wh: &dyn Warehouse, db: &str) -> Result<LeftBehind> {
    let leases = lease::release_left_behind(wh, db).await?;
    let rows = wh
        .select(
            // Views first: a view whose table went would fail the next insert into its source.
            "SELECT name FROM system.tables WHERE database = {db:String} AND match(name, {staging:String}) \
             ORDER BY engine != 'MaterializedView', name",
            &Params::new().bind("db", db).bind("staging", STAGING),
        )
        .await?;
    let mut tables = Vec::with_capacity(rows.len());
    for r in &rows {
        let name = r["name"]
            .as_str()
            .ok_or_else(|| Error::Decode(format!("name in {r}")))?;
        // The name matched STAGING: letters, digits and underscores only.
        wh.execute(&format!("DROP TABLE IF EXISTS {db}.{name}"), &Params::new())
            .await?;
        tables.push(name.to_string());
    }
    if !leases.is_empty() || !tables.is_empty() {
        tracing::warn!(%db, leases = leases.len(), tables = tables.len(),
            "cleared what stopped replays left behind (their leases and staging tables)");
    }
    Ok(LeftBehind { leases, tables })
}

#[cfg(test)]
mod tests {
    use super::STAGING;

    #[test]
    fn the_staging_pattern_takes_staging_tables_only() {
        let re = regex::Regex::new(STAGING).unwrap();
        for staging in [
            "events_replay_0a1b2c3d_20261110",
            "rollup_site_15m_stage_20261110_deadbeef",
            "rollup_dims_daily_stage_202611_0000ffff",
            "rollup_site_hourly_stage_12345678",
            "rollup_dims_15m_stage_20261110_0a1b2c3d_mv",
        ] {
            assert!(re.is_match(staging), "{staging}");
        }
        for table in [
            "events",
            "events_raw",
            "rollup_site_15m",
            "day_leases",
            "storage_state",
            "events_replay_0a1b2c3d_20261110; DROP TABLE x",
        ] {
            assert!(!re.is_match(table), "{table}");
        }
    }
}
