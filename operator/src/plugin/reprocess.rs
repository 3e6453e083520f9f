//! `kubectl sightline reprocess plan|approve|cancel NAME`: the plan the operator computed,
//! printed for a person to review; its approval (`spec.approvedPlanHash` set to the plan's
//! hash by a JSON merge patch carrying the `resourceVersion` read, so a plan recomputed
//! between the read and the write is refused rather than approved unseen); and a
//! cancellation (a DELETE: the finalizer lets the Job's pod finish the day under way, write
//! `Cancelled`, and the operator records the finished days in an Event).

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::PluginError;
use crate::reprocess::crd::{Approval, Phase, Reprocess, APPROVED};
use crate::reprocess::plan::{grouped, DOCUMENTED_ROWS_PER_SECOND};

async fn get(client: &Client, namespace: &str, name: &str) -> Result<(Api<Reprocess>, Reprocess), PluginError> {
    let api: Api<Reprocess> = Api::namespaced(client.clone(), namespace);
    let rp = api.get_opt(name).await?.ok_or_else(|| {
        PluginError::NotFound(format!(
            "Reprocess {namespace}/{name} does not exist (kubectl -n {namespace} get reprocesses)"
        ))
    })?;
    Ok((api, rp))
}

/// Bytes as a person reads them (KiB, MiB, GiB; 1024-based).
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Seconds as `1h 02m 03s`.
fn duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}h {m:02}m {s:02}s")
    } else if m > 0 {
        format!("{m}m {s:02}s")
    } else {
        format!("{s}s")
    }
}

/// `reprocess plan NAME`: the plan, its approval and what to do next.
pub async fn plan(client: &Client, namespace: &str, name: &str) -> Result<String, PluginError> {
    let (_, rp) = get(client, namespace, name).await?;
    let spec = &rp.spec;
    let status = rp.status.clone().unwrap_or_default();
    let Some(plan) = status.plan.as_ref() else {
        let why = status
            .condition(APPROVED)
            .map(|c| format!("{}: {}", c.reason, c.message))
            .or(status.message.clone())
            .unwrap_or_else(|| "the operator has not looked at it yet".into());
        return Err(PluginError::Refused(format!(
            "Reprocess {namespace}/{name} has no plan yet ({why})"
        )));
    };
    let mut out = String::new();
    let r = &spec.reprocess;
    out.push_str(&format!(
        "Reprocess {namespace}/{name}  tenant {}  {}  phase {:?}\n",
        r.tenant_ref,
        if r.dry_run { "dry run" } else { "replay" },
        status.phase()
    ));
    out.push_str(&format!("plan       {}\n", plan.hash));
    out.push_str(&format!(
        "days       {} to {} ({} days{})\n",
        plan.first_day,
        plan.last_day,
        plan.days,
        if plan.unsealed_days > 0 {
            format!(", {} not sealed yet", plan.unsealed_days)
        } else {
            String::new()
        }
    ));
    out.push_str(&format!(
        "sites      {}\n",
        if r.sites.is_empty() {
            "all".to_string()
        } else {
            r.sites.join(", ")
        }
    ));
    out.push_str(&format!(
        "input      {} rows, {} of events_raw\n",
        plan.rows,
        bytes(plan.bytes)
    ));
    out.push_str(&format!(
        "processing {} (pipeline version {})\nimage      {}\n",
        plan.processing, plan.pipeline_version, plan.image
    ));
    out.push_str(&format!(
        "estimate   {} ({} at {} rows/s)\n",
        duration(plan.eta_seconds),
        plan.eta_basis,
        grouped(DOCUMENTED_ROWS_PER_SECOND)
    ));
    out.push_str(&format!("per {}:\n", plan.breakdown_by.to_lowercase()));
    for p in &plan.breakdown {
        out.push_str(&format!(
            "  {:<10}  {:>3} days  {:>12} rows  {:>10}\n",
            p.period,
            p.days,
            p.rows,
            bytes(p.bytes)
        ));
    }
    if plan.partitions.is_empty() {
        out.push_str("replaces   nothing (a dry run compares only)\n");
    } else {
        out.push_str("replaces:\n");
        for p in &plan.partitions {
            out.push_str(&format!(
                "  {:<20} partitions {} to {} ({})\n",
                p.table, p.first, p.last, p.count
            ));
        }
    }
    let approval = match status.condition(APPROVED) {
        Some(c) => format!("{} ({}): {}", c.status, c.reason, c.message),
        None => "not decided yet".into(),
    };
    out.push_str(&format!("approval   {:?}; approved {approval}\n", spec.approval));
    if spec.approval == Approval::Manual
        && spec.approved_plan_hash.as_deref() != Some(plan.hash.as_str())
        && status.phase() == Phase::Pending
    {
        out.push_str(&format!(
            "to run it: kubectl sightline reprocess approve {name} -n {namespace} --hash {}\n",
            plan.hash
        ));
    }
    Ok(out)
}

/// A plan's hash as given to `reprocess approve --hash`: surrounding whitespace trimmed and
/// lower-cased (a hash copied from a terminal, or written in upper case, is the same hash),
/// then it must be 64 hex digits, as `status.plan.hash` (SHA-256) and the CRD's pattern for
/// `spec.approvedPlanHash` (`^[0-9a-f]{64}$`) have it. The error says what is wrong and the
/// form expected (clap and `approve` put `--hash` before it); the command line checks it
/// before anything is sent.
pub fn plan_hash(given: &str) -> Result<String, String> {
    let hash = given.trim().to_ascii_lowercase();
    let wrong = match given.trim().chars().find(|c| !c.is_ascii_hexdigit()) {
        _ if hash.is_empty() => "it is empty".to_string(),
        Some(c) => format!("{c:?} is not a hex digit"),
        None if hash.len() != 64 => format!("it has {} digits", hash.len()),
        None => return Ok(hash),
    };
    Err(format!(
        "not a plan hash ({wrong}): expected the 64 hex digits (SHA-256) that `kubectl sightline reprocess plan \
         NAME` prints after \"plan\""
    ))
}

/// `reprocess approve NAME --hash H`: sets `spec.approvedPlanHash` to the current plan's
/// hash, which must be `expected` (the hash the person reviewed with `plan`; read by
/// `plan_hash` first, so nothing is sent for one of the wrong form): a plan recomputed
/// after the review is never approved unseen. Errors: a malformed hash, no such Reprocess,
/// no plan yet, an Automatic run (nothing to approve), a run that started or ended, a plan
/// other than `expected`, or one recomputed since it was read (409).
pub async fn approve(client: &Client, namespace: &str, name: &str, expected: &str) -> Result<String, PluginError> {
    let expected = plan_hash(expected).map_err(|e| PluginError::Refused(format!("--hash {expected:?}: {e}")))?;
    let (api, rp) = get(client, namespace, name).await?;
    let status = rp.status.clone().unwrap_or_default();
    if rp.spec.approval == Approval::Automatic {
        return Err(PluginError::Refused(format!(
            "Reprocess {namespace}/{name} has approval Automatic: it runs without approval (create it with \
             spec.approval: Manual to approve its plan first)"
        )));
    }
    if status.phase() != Phase::Pending || status.job_name.is_some() {
        return Err(PluginError::Refused(format!(
            "Reprocess {namespace}/{name} already ran or runs (phase {:?}{}): approval applies before the start",
            status.phase(),
            status
                .job_name
                .as_ref()
                .map(|j| format!(", Job {j}"))
                .unwrap_or_default()
        )));
    }
    let Some(plan) = status.plan.as_ref() else {
        return Err(PluginError::Refused(format!(
            "Reprocess {namespace}/{name} has no plan yet: the operator computes it (see kubectl sightline reprocess \
             plan {name}{})",
            status
                .condition(APPROVED)
                .map(|c| format!("; {}: {}", c.reason, c.message))
                .unwrap_or_default()
        )));
    };
    if expected != plan.hash {
        return Err(PluginError::Refused(format!(
            "the plan of Reprocess {namespace}/{name} is {}, not {expected}: review it again (kubectl sightline \
             reprocess plan {name})",
            plan.hash
        )));
    }
    if rp.spec.approved_plan_hash.as_deref() == Some(plan.hash.as_str()) {
        return Ok(format!(
            "Reprocess {namespace}/{name}: plan {} was approved already\n",
            plan.hash
        ));
    }
    let patch = serde_json::json!({
        "metadata": {"resourceVersion": rp.resource_version()},
        "spec": {"approvedPlanHash": plan.hash},
    });
    match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(format!(
            "Reprocess {namespace}/{name}: approved plan {} ({} days, {} rows); the operator starts it\n",
            plan.hash, plan.days, plan.rows
        )),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(PluginError::Refused(format!(
            "Reprocess {namespace}/{name} changed since it was read (its plan may have been recomputed): review it \
             again (kubectl sightline reprocess plan {name}) and approve again"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// `reprocess cancel NAME`: deletes it. A running one stops after the day under way (its
/// finalizer holds the object until the pod wrote `Cancelled`); the operator then records
/// the finished days in an Event.
pub async fn cancel(client: &Client, namespace: &str, name: &str) -> Result<String, PluginError> {
    let (api, rp) = get(client, namespace, name).await?;
    let phase = rp.status.as_ref().map(|s| s.phase()).unwrap_or_default();
    api.delete(name, &DeleteParams::default()).await?;
    Ok(match phase {
        Phase::Running => format!(
            "Reprocess {namespace}/{name} deleted while running: its pod finishes the day under way and stops; the \
             operator then records the finished days in an Event (kubectl -n {namespace} get events \
             --field-selector involvedObject.name={name})\n"
        ),
        Phase::Pending => format!("Reprocess {namespace}/{name} deleted before it replayed a day\n"),
        finished => format!("Reprocess {namespace}/{name} deleted (it had ended: {finished:?})\n"),
    })
}
