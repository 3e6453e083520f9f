//! `kubectl sightline status TENANT`: one screen that answers "done? healthy? why not?":
//! kstatus health, every condition with its reason, age and message, the endpoints, the
//! schema and processor versions, sites and the loaders' lag.

use chrono::{DateTime, Utc};
use kube::{Api, Client, ResourceExt};

use super::PluginError;
use crate::conditions::{self, Health};
use crate::crd::AnalyticsTenant;

/// Reads the tenant and renders it.
pub async fn status(client: &Client, name: &str, now: DateTime<Utc>) -> Result<String, PluginError> {
    let api: Api<AnalyticsTenant> = Api::all(client.clone());
    let tenant = api.get_opt(name).await?.ok_or_else(|| {
        PluginError::NotFound(format!("AnalyticsTenant {name:?} does not exist (kubectl get tenants)"))
    })?;
    Ok(render(&tenant, now))
}

/// The screen for one tenant (pure: `now` dates the ages).
pub fn render(t: &AnalyticsTenant, now: DateTime<Utc>) -> String {
    let status = t.status.clone().unwrap_or_default();
    let health = conditions::health(
        t.metadata.deletion_timestamp.is_some(),
        t.metadata.generation,
        status.observed_generation,
        &status.conditions,
    );
    let mut out = String::new();
    let generation = |g: Option<i64>| g.map(|g| g.to_string()).unwrap_or_else(|| "-".into());
    out.push_str(&format!(
        "AnalyticsTenant {}  generation {} (observed {})  health {}",
        t.name_any(),
        generation(t.metadata.generation),
        generation(status.observed_generation),
        health.word()
    ));
    match &health {
        Health::InProgress(why) | Health::Failed(why) if !why.is_empty() => out.push_str(&format!(": {why}")),
        _ => {}
    }
    out.push('\n');
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    out.push_str(&format!(
        "collector  {}\nquery      {}\n",
        or_dash(status.collector_endpoint.clone()),
        or_dash(status.query_endpoint.clone())
    ));
    out.push_str(&format!(
        "schema version {}  pipeline version {}  sites {}  loader lag {}\n",
        or_dash(status.schema_version.map(|v| v.to_string())),
        or_dash(status.pipeline_version.map(|v| v.to_string())),
        or_dash(status.sites.map(|v| v.to_string())),
        or_dash(status.loader_lag.map(|v| format!("{v} events"))),
    ));
    if status.conditions.is_empty() {
        out.push_str("no conditions yet: the operator has not reconciled this tenant\n");
        return out;
    }
    let rows: Vec<[String; 5]> = status
        .conditions
        .iter()
        .map(|c| {
            let since = DateTime::from_timestamp_millis(c.last_transition_time.0.as_millisecond())
                .map(|at| age(now - at))
                .unwrap_or_else(|| "-".into());
            [
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                since,
                c.message.chars().take(160).collect(),
            ]
        })
        .collect();
    let header = ["CONDITION", "STATUS", "REASON", "AGE", "MESSAGE"].map(String::from);
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().chain([&header]).map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    for row in [&header].into_iter().chain(&rows) {
        let line: Vec<String> = (0..4).map(|i| format!("{:<w$}", row[i], w = widths[i])).collect();
        out.push_str(&format!("{}  {}\n", line.join("  "), row[4]).replace("  \n", "\n"));
    }
    out
}

/// `45s`, `12m`, `3h`, `2d`, as kubectl prints ages.
fn age(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        assert_eq!(age(chrono::Duration::seconds(45)), "45s");
        assert_eq!(age(chrono::Duration::seconds(600)), "10m");
        assert_eq!(age(chrono::Duration::hours(5)), "5h");
        assert_eq!(age(chrono::Duration::days(3)), "3d");
    }
}
