//! The signing Secret `<tenant>-signing-key`: created once, never overwritten, and never
//! silently regenerated. A new key would void every token issued and change every visitor
//! id, so a Secret that existed (the status records its key's fingerprint) and is gone is
//! reported (`SigningSecretReady=False`, reason `SecretMissing`) until a person asks for a
//! new key with the annotation `sightline.dev/regenerate-signing-secret: "true"`. The
//! operator honours it only once the missing Secret has been reported, then removes it (so
//! the next deletion is reported again), and restarts the collector and query pods, which
//! read the key at start.

use std::collections::BTreeMap;

use chrono::Utc;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::Policy;
use crate::build::pod::SECRET_KEY;
use crate::build::secret::{fingerprint, SigningKey};
use crate::crd::{AnalyticsTenant, TenantStatus, REGENERATE_SECRET_ANNOTATION};
use crate::drift::{Found, Kind, Outcome};
use crate::error::Result;
use crate::names::Role;
use crate::status::{Step, SIGNING_SECRET_READY};
use crate::validate::Validated;

/// The field manager of the restart annotation, apart from the operator's own so its
/// server-side apply of the template never takes the annotation back (a second restart).
pub const RESTART_FIELD_MANAGER: &str = "sightline-operator-restart";
/// The pod-template annotation a restart sets (like `kubectl rollout restart`).
pub const RESTARTED_AT_ANNOTATION: &str = "sightline.dev/restarted-at";

/// What the Secret step did and found.
#[derive(Clone, Debug)]
pub struct SecretOutcome {
    pub step: Step,
    /// The fingerprint of the key in place (`None` when there is none).
    pub fingerprint: Option<String>,
    pub drift: Option<Found>,
    /// A new key was made on request (pods restarted, annotation removed).
    pub regenerated: bool,
}

/// Brings the Secret about; `secret` is the built Secret (without data), `previous` the
/// tenant's status as read.
pub async fn reconcile(
    client: &Client,
    obj: &AnalyticsTenant,
    v: &Validated,
    secret: &Secret,
    policy: Policy,
) -> Result<SecretOutcome> {
    let previous = obj.status.as_ref();
    let known = previous.and_then(|s| s.signing_key_fingerprint.clone());
    let api: Api<Secret> = Api::namespaced(client.clone(), v.names.namespace.as_str());
    let name = v.names.signing_secret();
    let id = format!("{}/{name}", v.names.namespace);
    if let Some(existing) = api.get_opt(&name).await? {
        return Ok(present(&existing, &id, known));
    }
    let reported_missing = previous
        .and_then(|s: &TenantStatus| s.condition(SIGNING_SECRET_READY))
        .is_some_and(|c| c.status == "False" && c.reason == "SecretMissing");
    let regenerate = known.is_some() && reported_missing && obj.annotated(REGENERATE_SECRET_ANNOTATION);
    if known.is_some() && !regenerate {
        let how = if obj.annotated(REGENERATE_SECRET_ANNOTATION) {
            "the regenerate annotation is honoured once this is reported: the next reconcile makes a new key"
        } else {
            "restore it from a backup, or annotate the tenant sightline.dev/regenerate-signing-secret=true to make a new key"
        };
        let message = format!(
            "Secret {id} was deleted; the operator makes no new key on its own (it would void every token and change every visitor id): {how}"
        );
        return Ok(SecretOutcome {
            step: Step::Failed {
                reason: "SecretMissing",
                message,
                transient: false,
            },
            fingerprint: known,
            drift: Some(Found::new(Kind::SigningSecret, &id, "deleted", Outcome::Reported)),
            regenerated: false,
        });
    }
    if !policy.write {
        return Ok(SecretOutcome {
            step: Step::Pending {
                message: format!("Secret {id} to create (paused)"),
            },
            fingerprint: known,
            drift: None,
            regenerated: false,
        });
    }
    let key = SigningKey::generate();
    let mut created = crate::build::secret::build(v, Some(&key));
    created.metadata = secret.metadata.clone();
    match api.create(&PostParams::default(), &created).await {
        Ok(_) => {}
        // Created between our read and our write (another reconcile): keep theirs.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let theirs = api.get(&name).await?;
            return Ok(present(&theirs, &id, known));
        }
        Err(e) => return Err(e.into()),
    }
    if regenerate {
        forget_request(client, obj).await?;
        restart(client, v).await?;
        tracing::warn!(tenant = %v.names.tenant, secret = %id, "signing key regenerated on request");
    }
    Ok(SecretOutcome {
        step: Step::Done {
            reason: if regenerate { "Regenerated" } else { "Created" },
            message: if regenerate {
                format!("Secret {id} has a new key, made on request; collector and query pods restart to read it")
            } else {
                format!("Secret {id} created with a new key")
            },
        },
        fingerprint: Some(key.fingerprint()),
        drift: None,
        regenerated: regenerate,
    })
}

/// The Secret exists: usable, or not (no key, not a key the roles accept); a key other than
/// the one recorded is drift (reported: the operator never writes an existing Secret).
fn present(secret: &Secret, id: &str, known: Option<String>) -> SecretOutcome {
    let Some(value) = secret.data.as_ref().and_then(|d| d.get(SECRET_KEY)) else {
        return SecretOutcome {
            step: Step::Failed {
                reason: "SecretInvalid",
                message: format!("Secret {id} has no key {SECRET_KEY:?}"),
                transient: false,
            },
            fingerprint: known,
            drift: None,
            regenerated: false,
        };
    };
    let text = String::from_utf8_lossy(&value.0);
    if let Err(e) = sightline_core::secret::MasterSecret::from_base64(&text, &format!("Secret {id}")) {
        return SecretOutcome {
            step: Step::Failed {
                reason: "SecretInvalid",
                message: e.to_string(),
                transient: false,
            },
            fingerprint: known,
            drift: None,
            regenerated: false,
        };
    }
    let now = fingerprint(&value.0);
    let drift = known.filter(|k| *k != now).map(|k| {
        Found::new(
            Kind::SigningSecret,
            id,
            format!("its key was replaced outside the operator (fingerprint {k} -> {now}): tokens issued before no longer verify"),
            Outcome::Reported,
        )
    });
    SecretOutcome {
        step: Step::Done {
            reason: "Present",
            message: format!("Secret {id} holds the signing key"),
        },
        fingerprint: Some(now),
        drift,
        regenerated: false,
    }
}

/// Removes the regenerate annotation (a merge patch of the tenant's metadata).
async fn forget_request(client: &Client, obj: &AnalyticsTenant) -> Result<()> {
    let api: Api<AnalyticsTenant> = Api::all(client.clone());
    let patch = json!({"metadata": {"annotations": {REGENERATE_SECRET_ANNOTATION: null}}});
    api.patch(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Restarts the collector and query Deployments (the roles that read the key), as
/// `kubectl rollout restart` does, under a field manager of its own.
async fn restart(client: &Client, v: &Validated) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), v.names.namespace.as_str());
    let at = Utc::now().to_rfc3339();
    for role in [Role::Collector, Role::Query] {
        let patch = json!({
            "spec": {"template": {"metadata": {"annotations": BTreeMap::from([(RESTARTED_AT_ANNOTATION, at.as_str())])}}},
        });
        // A merge patch: it never creates a Deployment that is not there.
        let params = PatchParams {
            field_manager: Some(RESTART_FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match api.patch(&v.names.workload(role), &params, &Patch::Merge(&patch)).await {
            Ok(_) => {}
            // Not created yet: its pods will read the new key when they start.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
