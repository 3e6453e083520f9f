//! Which processing identities made each UTC day of `events` (docs/replay.md, "The
//! processor and its identity"): every row carries its identity (`events.processing`), so a
//! day's identities are read off its rows. `/metrics` shows, per tenant, how many days each
//! identity made (`sightline_day_processing_identity`) and how many days mix identities.
//!
//! Reading every row on each refresh would scan the whole table again and again for days
//! that never change. A day is one partition of `events` (`toYYYYMMDD(ts)`), and a
//! partition's data is exactly its set of active parts (parts are immutable: an insert, a
//! merge, a swap or a retention drop changes the set). So `DayIdentities` keeps each day's
//! identities with a fingerprint of its parts and reads again only the days whose parts
//! changed: the days writers still insert into, and the days a replay swapped.

use std::collections::{BTreeMap, BTreeSet};

use super::{Params, Warehouse};
use crate::schema::EVENTS_TABLE;
use crate::{Error, Result};

/// The identity label of rows stored before rows carried their identity (schema migration
/// 6 added the column with an empty default).
pub const UNRECORDED: &str = "unrecorded";

/// What made the days of one tenant's `events`, refreshed incrementally.
#[derive(Clone, Debug, Default)]
pub struct DayIdentities {
    /// Per partition (`YYYYMMDD`): the fingerprint of its active parts when it was read, and
    /// the identities with net rows (`sum(sign) > 0`) in it.
    days: BTreeMap<String, (u64, BTreeSet<String>)>,
}

/// Days per identity: what `/metrics` shows for a tenant.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityDays {
    /// Per identity, the UTC days holding net rows it made (a day of two identities counts
    /// under both).
    pub days: BTreeMap<String, u64>,
    /// Days holding net rows of more than one identity.
    pub mixed: u64,
    /// Days holding net rows.
    pub total: u64,
}

impl DayIdentities {
    /// Brings the record up to `db`'s `events` (a single server's table: on a ClickHouse
    /// cluster `events` is a `Distributed` table without parts of its own, and this reads
    /// nothing). Reads the parts list, then the rows of the days whose parts changed since
    /// the last refresh. Returns how many days were read again. Errors: the warehouse's.
    pub async fn refresh(&mut self, wh: &dyn Warehouse, db: &str) -> Result<usize> {
        let parts = wh
            .select(
                "SELECT partition_id AS p, toString(cityHash64(arraySort(groupArray(name)))) AS f FROM system.parts \
                 WHERE database = {db:String} AND table = {table:String} AND active GROUP BY p",
                &Params::new().bind("db", db).bind("table", EVENTS_TABLE),
            )
            .await?;
        let mut current = BTreeMap::new();
        for row in &parts {
            let partition = row["p"]
                .as_str()
                .ok_or_else(|| Error::Decode(format!("partition in {row}")))?;
            let fingerprint = row["f"]
                .as_str()
                .and_then(|f| f.parse::<u64>().ok())
                .ok_or_else(|| Error::Decode(format!("parts fingerprint in {row}")))?;
            current.insert(partition.to_string(), fingerprint);
        }
        self.days.retain(|p, _| current.contains_key(p));
        let changed: Vec<&String> = current
            .iter()
            .filter(|(p, f)| self.days.get(*p).is_none_or(|(known, _)| known != *f))
            .map(|(p, _)| p)
            .collect();
        if changed.is_empty() {
            return Ok(0);
        }
        // Parts that change between the two reads give a fingerprint older than the rows
        // read: the next refresh sees the new parts and reads the day again.
        let rows = wh
            .select(
                &format!(
                    "SELECT _partition_id AS p, processing, toInt64(sum(sign)) AS net FROM {db}.{EVENTS_TABLE} \
                     WHERE _partition_id IN {{ps:Array(String)}} GROUP BY p, processing"
                ),
                &Params::new().bind("ps", Params::array_of_strings(&changed)),
            )
            .await?;
        let mut read: BTreeMap<String, BTreeSet<String>> =
            changed.iter().map(|p| ((*p).clone(), BTreeSet::new())).collect();
        for row in &rows {
            let partition = row["p"]
                .as_str()
                .ok_or_else(|| Error::Decode(format!("partition in {row}")))?;
            let identity = row["processing"]
                .as_str()
                .ok_or_else(|| Error::Decode(format!("processing in {row}")))?;
            if row["net"].as_i64().unwrap_or(0) > 0 {
                let identity = if identity.is_empty() { UNRECORDED } else { identity };
                read.entry(partition.to_string())
                    .or_default()
                    .insert(identity.to_string());
            }
        }
        let n = read.len();
        for (partition, identities) in read {
            let fingerprint = current[&partition];
            self.days.insert(partition, (fingerprint, identities));
        }
        Ok(n)
    }

    /// Days per identity, as of the last refresh.
    pub fn summary(&self) -> IdentityDays {
        let mut out = IdentityDays::default();
        for (_, identities) in self.days.values() {
            if identities.is_empty() {
                continue;
            }
            out.total += 1;
            if identities.len() > 1 {
                out.mixed += 1;
            }
            for identity in identities {
                *out.days.entry(identity.clone()).or_default() += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(identities: &[&str]) -> (u64, BTreeSet<String>) {
        (0, identities.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn days_are_counted_per_identity_and_mixed_days_once() {
        let record = DayIdentities {
            days: BTreeMap::from([
                ("20261110".to_string(), day(&["v3"])),
                ("20261111".to_string(), day(&["v3", "v4"])),
                ("20261112".to_string(), day(&["v4"])),
                ("20261113".to_string(), day(&["v4"])),
                // Every row cancelled: no identity made what the day holds.
                ("20261114".to_string(), day(&[])),
            ]),
        };
        let summary = record.summary();
        assert_eq!(
            summary.days,
            BTreeMap::from([("v3".to_string(), 2), ("v4".to_string(), 3)])
        );
        assert_eq!((summary.mixed, summary.total), (1, 4));
    }
}
