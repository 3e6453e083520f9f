//! A dry run's comparison of a day's staging with what `events` holds now: the numbers a
//! team reads before it applies a fix (docs/replay.md, "Dry run").

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::super::Warehouse;
use crate::schema::{self, EVENTS_TABLE};
use crate::{Error, Result};

/// How many sources and pages a comparison lists.
const TOP: usize = 5;

/// One metric of a day, now and after the replay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricChange {
    /// visitors, visits, pageviews or bounce_rate (percent).
    pub metric: String,
    pub current: f64,
    pub recomputed: f64,
}

/// A dimension value whose count changes: visits for sources, pageviews for pages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueChange {
    pub value: String,
    pub current: i64,
    pub recomputed: i64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub metrics: Vec<MetricChange>,
    /// Sources whose visits change most (at most 5, largest change first).
    pub sources: Vec<ValueChange>,
    /// Pages whose pageviews change most.
    pub pages: Vec<ValueChange>,
}

/// Compares the replayed sites' rows of `day` (`toYYYYMMDD` number) in `events` and in
/// `staged`. Counted as the query API counts (non-bot rows weighed by `sign`, visitors by
/// the same sketch).
pub(super) async fn compare(
    wh: &dyn Warehouse,
    db: &str,
    staged: &str,
    day: u32,
    sites: &super::SiteFilter,
) -> Result<Comparison> {
    let mut totals = Vec::new();
    for table in [EVENTS_TABLE, staged] {
        let rows = wh
            .select(
                &format!(
                    "SELECT toFloat64({}) AS visitors, toInt64(sum(sign * visit_delta)) AS visits, \
                            toInt64(sum(sign * is_pageview)) AS pageviews, toInt64(sum(sign * bounce_delta)) AS bounces \
                     FROM {db}.{table} WHERE toYYYYMMDD(ts) = {day} AND is_bot = 0 AND {}",
                    schema::visitors_count("visitor_id"),
                    sites.condition()
                ),
                &sites.params(),
            )
            .await?;
        let r = rows.first().ok_or_else(|| Error::Decode("no totals".into()))?;
        let num = |k: &str| r[k].as_f64().unwrap_or(0.0);
        let visits = num("visits");
        let bounce_rate = if visits > 0.0 {
            (num("bounces") / visits * 1000.0).round() / 10.0
        } else {
            0.0
        };
        totals.push([num("visitors"), visits, num("pageviews"), bounce_rate]);
    }
    let metrics = ["visitors", "visits", "pageviews", "bounce_rate"]
        .iter()
        .enumerate()
        .map(|(i, m)| MetricChange {
            metric: m.to_string(),
            current: totals[0][i],
            recomputed: totals[1][i],
        })
        .collect();
    Ok(Comparison {
        metrics,
        sources: changes(wh, db, staged, day, sites, "session_source", "visit_delta").await?,
        pages: changes(wh, db, staged, day, sites, "pathname", "is_pageview").await?,
    })
}

async fn changes(
    wh: &dyn Warehouse,
    db: &str,
    staged: &str,
    day: u32,
    sites: &super::SiteFilter,
    column: &str,
    counted: &str,
) -> Result<Vec<ValueChange>> {
    let mut by_value: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (side, table) in [EVENTS_TABLE, staged].iter().enumerate() {
        let rows = wh
            .select(
                &format!(
                    "SELECT toString({column}) AS value, toInt64(sum(sign * {counted})) AS n FROM {db}.{table} \
                     WHERE toYYYYMMDD(ts) = {day} AND is_bot = 0 AND {} GROUP BY value",
                    sites.condition()
                ),
                &sites.params(),
            )
            .await?;
        for r in rows {
            let entry = by_value
                .entry(r["value"].as_str().unwrap_or_default().to_string())
                .or_default();
            let n = r["n"].as_i64().unwrap_or(0);
            if side == 0 {
                entry.0 = n;
            } else {
                entry.1 = n;
            }
        }
    }
    let mut changed: Vec<ValueChange> = by_value
        .into_iter()
        .filter(|(_, (a, b))| a != b)
        .map(|(value, (current, recomputed))| ValueChange {
            value,
            current,
            recomputed,
        })
        .collect();
    changed.sort_by(|a, b| {
        (b.recomputed - b.current)
            .abs()
            .cmp(&(a.recomputed - a.current).abs())
            .then_with(|| a.value.cmp(&b.value))
    });
    changed.truncate(TOP);
    Ok(changed)
}

/// The identities that made the replayed sites' rows of a day, with their net rows.
pub(super) async fn identities(
    wh: &dyn Warehouse,
    db: &str,
    day: u32,
    sites: &super::SiteFilter,
) -> Result<BTreeMap<String, u64>> {
    let rows = wh
        .select(
            &format!(
                "SELECT toString(processing) AS p, sum(sign) AS n FROM {db}.{EVENTS_TABLE} \
                 WHERE toYYYYMMDD(ts) = {day} AND {} GROUP BY p HAVING n != 0 ORDER BY p",
                sites.condition()
            ),
            &sites.params(),
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| {
            let p = r["p"].as_str().unwrap_or_default();
            // Rows from before identities were stamped carry none.
            let name = if p.is_empty() { "unknown" } else { p };
            (name.to_string(), r["n"].as_i64().unwrap_or(0).max(0) as u64)
        })
        .collect())
}
