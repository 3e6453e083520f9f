//! Queueing: two Reprocesses of one tenant whose day ranges overlap run one after the
//! other. The one admitted first (creation time, then namespace and name: a total order
//! every operator replica agrees on) runs; the later stays `Pending` with reason `Queued`
//! and a message naming the one it waits for, until that one is final (Succeeded, Failed,
//! Cancelled) or gone. Ranges that do not overlap run side by side (the engine's day leases
//! keep them apart anyway; the queue keeps two runs from fighting over one day's lease).

use std::sync::Arc;

use kube::ResourceExt;
use sightline_core::reprocess::{parse_time, ReprocessSpec};
use sightline_core::warehouse::replay::DayRange;

use super::crd::Reprocess;

/// The condition reason of a queued Reprocess.
pub const QUEUED: &str = "Queued";

/// The whole UTC days a spec covers; an error names the field.
pub fn day_range(spec: &ReprocessSpec) -> sightline_core::Result<DayRange> {
    DayRange::widen(parse_time(&spec.from, "from")?, parse_time(&spec.to, "to")?)
}

fn overlap(a: &DayRange, b: &DayRange) -> bool {
    a.first <= b.last && b.first <= a.last
}

/// The admission order: creation time, then namespace, then name.
fn order_key(rp: &Reprocess) -> (Option<k8s_openapi::jiff::Timestamp>, String, String) {
    (
        rp.metadata.creation_timestamp.as_ref().map(|t| t.0),
        rp.namespace().unwrap_or_default(),
        rp.name_any(),
    )
}

/// The earliest-admitted Reprocess `me` must wait for: same tenant, overlapping days,
/// admitted before it, not final. `None`: `me` may run. A resource whose range does not
/// parse holds no one up (it is refused on its own).
pub fn waits_for(me: &Reprocess, all: &[Arc<Reprocess>]) -> Option<Arc<Reprocess>> {
    let mine = day_range(&me.spec.reprocess).ok()?;
    let my_key = order_key(me);
    all.iter()
        .filter(|other| other.spec.reprocess.tenant_ref == me.spec.reprocess.tenant_ref)
        .filter(|other| order_key(other) < my_key)
        .filter(|other| !other.status.as_ref().is_some_and(|s| s.phase().is_final()))
        .filter(|other| day_range(&other.spec.reprocess).is_ok_and(|theirs| overlap(&mine, &theirs)))
        .min_by_key(|other| order_key(other))
        .cloned()
}

/// The `Queued` condition's message.
pub fn queued_message(me: &Reprocess, blocker: &Reprocess) -> String {
    let days = match day_range(&blocker.spec.reprocess) {
        Ok(r) => format!("days {} to {}", r.first, r.last),
        Err(_) => "days".to_string(),
    };
    format!(
        "waits for Reprocess {}/{}: tenant {} and {} overlap this one's range",
        blocker.namespace().unwrap_or_default(),
        blocker.name_any(),
        me.spec.reprocess.tenant_ref,
        days
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reprocess::crd::{Phase, ReprocessResourceSpec, ReprocessStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn rp(name: &str, tenant: &str, from: &str, to: &str, created_secs: i64) -> Arc<Reprocess> {
        let spec: ReprocessSpec =
            serde_yaml::from_str(&format!("tenantRef: {tenant}\nfrom: '{from}'\nto: '{to}'\n")).unwrap();
        let mut obj = Reprocess::new(name, ReprocessResourceSpec::new(spec));
        obj.metadata.namespace = Some("analytics".into());
        obj.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(1_800_000_000 + created_secs).unwrap(),
        ));
        Arc::new(obj)
    }

    fn with_phase(obj: &Arc<Reprocess>, phase: Phase) -> Arc<Reprocess> {
        let mut o = (**obj).clone();
        o.status = Some(ReprocessStatus {
            phase,
            ..Default::default()
        });
        Arc::new(o)
    }

    #[test]
    fn the_later_of_two_overlapping_runs_waits_for_the_earlier() {
        let first = rp("first", "acme", "2026-11-01", "2026-11-08", 0);
        let second = rp("second", "acme", "2026-11-07T12:00:00Z", "2026-11-10", 10);
        let all = vec![first.clone(), second.clone()];
        assert!(waits_for(&first, &all).is_none());
        let blocker = waits_for(&second, &all).unwrap();
        assert_eq!(blocker.name_any(), "first");
        let message = queued_message(&second, &blocker);
        assert!(message.contains("analytics/first"), "{message}");
        assert!(message.contains("2026-11-01 to 2026-11-07"), "{message}");
    }

    #[test]
    fn disjoint_ranges_other_tenants_and_final_runs_hold_no_one() {
        let first = rp("first", "acme", "2026-11-01", "2026-11-08", 0);
        // `to` is exclusive: [11-08, 11-09) does not touch 11-01..11-07.
        let after = rp("after", "acme", "2026-11-08", "2026-11-09", 10);
        let other_tenant = rp("other", "globex", "2026-11-01", "2026-11-08", 10);
        let all = vec![first.clone(), after.clone(), other_tenant.clone()];
        assert!(waits_for(&after, &all).is_none());
        assert!(waits_for(&other_tenant, &all).is_none());
        let overlapping = rp("again", "acme", "2026-11-03", "2026-11-04", 20);
        for phase in [Phase::Succeeded, Phase::Failed, Phase::Cancelled] {
            let done = with_phase(&first, phase);
            assert!(
                waits_for(&overlapping, &[done, overlapping.clone()]).is_none(),
                "{phase:?}"
            );
        }
        for phase in [Phase::Pending, Phase::Running] {
            let live = with_phase(&first, phase);
            assert!(
                waits_for(&overlapping, &[live, overlapping.clone()]).is_some(),
                "{phase:?}"
            );
        }
    }

    #[test]
    fn the_order_is_total_and_a_chain_waits_for_the_earliest() {
        let a = rp("a", "acme", "2026-11-01", "2026-11-05", 0);
        let b = rp("b", "acme", "2026-11-03", "2026-11-08", 0); // same second: the name decides
        let c = rp("c", "acme", "2026-11-04", "2026-11-06", 5);
        let all = vec![c.clone(), b.clone(), a.clone()];
        assert!(waits_for(&a, &all).is_none());
        assert_eq!(waits_for(&b, &all).unwrap().name_any(), "a");
        assert_eq!(waits_for(&c, &all).unwrap().name_any(), "a");
    }
}
