//! Build: the objects one `Reprocess` needs, pure (nothing here reads the cluster or the
//! clock). A Job whose pod runs `sightline reprocess --resource NS/NAME` with the plan's
//! image (the tenant's, by digest: `plan`), its loader's resources (the role whose work a replay repeats: process raw rows,
//! write ClickHouse) and ClickHouse settings, and the tenant's ConfigMap as its tenants
//! directory; and the pod's own ServiceAccount with a Role that allows exactly `get` on
//! this Reprocess and `patch` on its status, bound by a RoleBinding. Every object is owned
//! by the Reprocess (deleted with it).
//!
//! The Job runs in the Reprocess's namespace, which must be the tenant's workloads
//! namespace (`validate_namespace`): a pod can mount only its own namespace's ConfigMap and
//! Secrets, and an owner reference cannot cross namespaces.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile, SecurityContext,
    ServiceAccount, VolumeMount,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};

use super::crd::Reprocess;
use crate::build::pod::{self, RUN_AS_USER, TENANTS_DIR};
use crate::error::{Error, Result};
use crate::validate::Validated;

/// The label naming the Reprocess on its Job, pod and RBAC objects.
pub const REPROCESS_LABEL: &str = "sightline.dev/reprocess";
/// Pods a Job makes before it gives up; each resumes from the status's checkpoint.
pub const BACKOFF_LIMIT: i32 = 3;

/// The Reprocess as its children refer to it: name, namespace, uid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

impl Owner {
    /// Errors (`Invalid`) for an object not read from the API (no namespace or uid).
    pub fn of(rp: &Reprocess) -> Result<Self> {
        let invalid = |what: &str| Error::Invalid {
            message: format!(
                "Reprocess {}: metadata.{what} is missing (not an object read from the API)",
                rp.name_any()
            ),
        };
        Ok(Owner {
            name: rp.name_any(),
            namespace: rp.namespace().ok_or_else(|| invalid("namespace"))?,
            uid: rp.uid().ok_or_else(|| invalid("uid"))?,
        })
    }

    fn reference(&self) -> OwnerReference {
        OwnerReference {
            api_version: Reprocess::api_version(&()).into_owned(),
            kind: Reprocess::kind(&()).into_owned(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    /// `NS/NAME`, what `sightline reprocess --resource` takes.
    pub fn resource_arg(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// The name of the Job, its ServiceAccount, Role and RoleBinding: `<name>-replay`, or
    /// for a long name its first 47 bytes, `-`, 8 hex digits of its SHA-256 and `-replay`
    /// (at most 63: the Job's name becomes a label value of its pods).
    pub fn child_name(&self) -> String {
        const SUFFIX: &str = "-replay";
        if self.name.len() + SUFFIX.len() <= 63 {
            return format!("{}{SUFFIX}", self.name);
        }
        let digest = Sha256::digest(self.name.as_bytes());
        let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        // Resource names are ASCII (DNS subdomains), so any byte index is a char boundary.
        let head = self.name[..47].trim_end_matches(['-', '.']);
        format!("{head}-{hex}{SUFFIX}")
    }

    fn meta(&self, v: &Validated) -> ObjectMeta {
        let mut labels = v.names.labels(None);
        labels.insert("app.kubernetes.io/component".into(), "reprocess".into());
        labels.insert(REPROCESS_LABEL.into(), label_value(&self.name));
        ObjectMeta {
            name: Some(self.child_name()),
            namespace: Some(self.namespace.clone()),
            labels: Some(labels),
            owner_references: Some(vec![self.reference()]),
            ..Default::default()
        }
    }
}

/// A label value for a name (at most 63 bytes; a longer name keeps its first 63, trimmed
/// to end alphanumeric as label values must).
fn label_value(name: &str) -> String {
    name[..name.len().min(63)]
        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Refuses a Reprocess outside its tenant's workloads namespace (see the module docs).
pub fn validate_namespace(owner: &Owner, v: &Validated) -> Result<()> {
    if owner.namespace == v.names.namespace.as_str() {
        return Ok(());
    }
    Err(Error::Invalid {
        message: format!(
            "Reprocess {}/{} must be in namespace {}, where tenant {}'s workloads, ConfigMap and Secrets are",
            owner.namespace, owner.name, v.names.namespace, v.names.tenant
        ),
    })
}

/// Everything one Reprocess needs, in the order they are applied (the Job last, so its
/// pod finds its permissions).
#[derive(Clone, Debug)]
pub struct ReprocessChildren {
    pub service_account: ServiceAccount,
    pub role: Role,
    pub role_binding: RoleBinding,
    pub job: Job,
}

/// `image`: what the Job runs, the plan's (by digest).
pub fn build(owner: &Owner, v: &Validated, image: &str) -> ReprocessChildren {
    ReprocessChildren {
        service_account: service_account(owner, v),
        role: role(owner, v),
        role_binding: role_binding(owner, v),
        job: job(owner, v, image),
    }
}

pub fn service_account(owner: &Owner, v: &Validated) -> ServiceAccount {
    ServiceAccount {
        metadata: owner.meta(v),
        // Only the Job's pod mounts a token (its own spec says so).
        automount_service_account_token: Some(false),
        ..Default::default()
    }
}

/// `get` on this Reprocess and `patch` on its status; nothing else, not even `list`.
pub fn role(owner: &Owner, v: &Validated) -> Role {
    let group = Reprocess::group(&()).into_owned();
    let plural = Reprocess::plural(&()).into_owned();
    let rule = |resource: String, verb: &str| PolicyRule {
        api_groups: Some(vec![group.clone()]),
        resources: Some(vec![resource]),
        resource_names: Some(vec![owner.name.clone()]),
        verbs: vec![verb.to_string()],
        ..Default::default()
    };
    Role {
        metadata: owner.meta(v),
        rules: Some(vec![
            rule(plural.clone(), "get"),
            rule(format!("{plural}/status"), "patch"),
        ]),
    }
}

pub fn role_binding(owner: &Owner, v: &Validated) -> RoleBinding {
    RoleBinding {
        metadata: owner.meta(v),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: owner.child_name(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: owner.child_name(),
            namespace: Some(owner.namespace.clone()),
            ..Default::default()
        }]),
    }
}

/// The Job: one pod at a time (`parallelism` 1, the engine runs days in parallel inside
/// it; a replacement pod only once the last one stopped), restarted as a new pod up to
/// `BACKOFF_LIMIT` times; each pod resumes from the checkpoint in the status, so no
/// finished day is replayed again.
pub fn job(owner: &Owner, v: &Validated, image: &str) -> Job {
    let meta = owner.meta(v);
    let container = Container {
        name: "reprocess".into(),
        image: Some(image.to_string()),
        args: Some(vec![
            "reprocess".into(),
            "--resource".into(),
            owner.resource_arg(),
            "--tenants".into(),
            TENANTS_DIR.into(),
            // The operator migrates: the pod waits until the schema is current.
            "--migrations".into(),
            "check".into(),
        ]),
        env: Some({
            let mut env = pod::clickhouse_env(v);
            env.extend(pod::log_env());
            env
        }),
        resources: Some(pod::resources(&v.loader.resources)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(RUN_AS_USER),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "tenants".into(),
                mount_path: TENANTS_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let pod_labels: BTreeMap<String, String> = meta.labels.clone().unwrap_or_default();
    Job {
        metadata: meta,
        spec: Some(JobSpec {
            backoff_limit: Some(BACKOFF_LIMIT),
            parallelism: Some(1),
            completions: Some(1),
            // A new pod only once the last one has stopped (not while it still finishes
            // its day after SIGTERM): one pod of a run at a time.
            pod_replacement_policy: Some("Failed".into()),
            // A pod evicted, preempted or drained away (it finishes its day and exits 1 for
            // the next pod to resume) does not count towards the backoff limit.
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![PodFailurePolicyRule {
                    action: "Ignore".into(),
                    on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                        type_: "DisruptionTarget".into(),
                        status: "True".into(),
                    }]),
                    on_exit_codes: None,
                }],
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    restart_policy: Some("Never".into()),
                    service_account_name: Some(owner.child_name()),
                    automount_service_account_token: Some(true),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS_USER),
                        run_as_group: Some(RUN_AS_USER),
                        fs_group: Some(RUN_AS_USER),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    // The engine finishes the days under way on SIGTERM (their work is kept).
                    termination_grace_period_seconds: Some(300),
                    volumes: Some(vec![pod::tenants_volume(v), pod::empty_dir_volume("tmp")]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests::object;
    use crate::validate::{validate, OperatorConfig};

    const SPEC: &str = "sites: { allowed: [{ id: shop.example.com }] }\n\
        ingest: { image: registry.example/sightline:fix-7, loader: { resources: { requests: { cpu: 750m, memory: 1Gi }, limits: { memory: 3Gi } } } }\n\
        clickhouse: { credentialsSecret: { name: ch-creds } }";

    fn tenant() -> Validated {
        validate(&object("acme", SPEC), &OperatorConfig::example("analytics")).unwrap()
    }

    fn owner(name: &str) -> Owner {
        Owner {
            name: name.into(),
            namespace: "analytics".into(),
            uid: "uid-rp".into(),
        }
    }

    #[test]
    fn the_job_is_owned_runs_the_resource_with_the_tenants_image_and_resources() {
        let v = tenant();
        let pinned = format!("registry.example/sightline@sha256:{}", "a".repeat(64));
        let c = build(&owner("fix-referrers"), &v, &pinned);
        let job = &c.job;
        assert_eq!(job.metadata.name.as_deref(), Some("fix-referrers-replay"));
        assert_eq!(job.metadata.namespace.as_deref(), Some("analytics"));
        let owners = job.metadata.owner_references.as_ref().unwrap();
        assert_eq!(owners.len(), 1);
        assert_eq!(
            (
                owners[0].kind.as_str(),
                owners[0].api_version.as_str(),
                owners[0].name.as_str(),
                owners[0].uid.as_str()
            ),
            ("Reprocess", "sightline.dev/v1alpha1", "fix-referrers", "uid-rp")
        );
        assert_eq!(owners[0].controller, Some(true));
        let spec = job.spec.as_ref().unwrap();
        assert_eq!(spec.backoff_limit, Some(BACKOFF_LIMIT));
        assert_eq!(spec.pod_replacement_policy.as_deref(), Some("Failed"));
        let ignored = &spec.pod_failure_policy.as_ref().unwrap().rules[0];
        assert_eq!(ignored.action, "Ignore");
        assert_eq!(ignored.on_pod_conditions.as_ref().unwrap()[0].type_, "DisruptionTarget");
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.service_account_name.as_deref(), Some("fix-referrers-replay"));
        assert_eq!(pod.automount_service_account_token, Some(true));
        let k = &pod.containers[0];
        assert_eq!(k.image.as_deref(), Some(pinned.as_str()), "the plan's image, by digest");
        assert_eq!(
            k.args.as_ref().unwrap(),
            &[
                "reprocess",
                "--resource",
                "analytics/fix-referrers",
                "--tenants",
                TENANTS_DIR,
                "--migrations",
                "check"
            ]
        );
        let r = k.resources.as_ref().unwrap();
        assert_eq!(r.requests.as_ref().unwrap()["cpu"].0, "750m");
        assert_eq!(r.limits.as_ref().unwrap()["memory"].0, "3Gi");
        let env: Vec<&str> = k.env.as_ref().unwrap().iter().map(|e| e.name.as_str()).collect();
        for name in [
            "SIGHTLINE_CLICKHOUSE_URL",
            "SIGHTLINE_CLICKHOUSE_USER",
            "SIGHTLINE_CLICKHOUSE_PASSWORD",
        ] {
            assert!(env.contains(&name), "{env:?}");
        }
        assert!(!env.contains(&"SIGHTLINE_SECRET"), "a replay needs no signing key");
        let sc = k.security_context.as_ref().unwrap();
        assert_eq!(
            (sc.run_as_non_root, sc.read_only_root_filesystem),
            (Some(true), Some(true))
        );
        let volumes = pod.volumes.as_ref().unwrap();
        assert_eq!(volumes[0].config_map.as_ref().unwrap().name, "acme-tenant");
        let labels = spec.template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(labels[REPROCESS_LABEL], "fix-referrers");
        assert_eq!(labels["app.kubernetes.io/instance"], "acme");
    }

    #[test]
    fn the_service_account_may_only_get_its_reprocess_and_patch_its_status() {
        let v = tenant();
        let c = build(&owner("fix-referrers"), &v, &v.image);
        assert_eq!(c.service_account.metadata.name.as_deref(), Some("fix-referrers-replay"));
        assert_eq!(
            c.service_account.metadata.owner_references.as_ref().unwrap()[0].name,
            "fix-referrers"
        );
        let rules = c.role.rules.as_ref().unwrap();
        // (api groups, resources, resource names, verbs) of each rule.
        type Grant = (Vec<String>, Vec<String>, Vec<String>, Vec<String>);
        let granted: Vec<Grant> = rules
            .iter()
            .map(|r| {
                (
                    r.api_groups.clone().unwrap(),
                    r.resources.clone().unwrap(),
                    r.resource_names.clone().unwrap(),
                    r.verbs.clone(),
                )
            })
            .collect();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            granted,
            [
                (
                    s(&["sightline.dev"]),
                    s(&["reprocesses"]),
                    s(&["fix-referrers"]),
                    s(&["get"])
                ),
                (
                    s(&["sightline.dev"]),
                    s(&["reprocesses/status"]),
                    s(&["fix-referrers"]),
                    s(&["patch"])
                ),
            ]
        );
        let binding = &c.role_binding;
        assert_eq!(binding.role_ref.kind, "Role");
        assert_eq!(binding.role_ref.name, "fix-referrers-replay");
        let subject = &binding.subjects.as_ref().unwrap()[0];
        assert_eq!(
            (
                subject.kind.as_str(),
                subject.name.as_str(),
                subject.namespace.as_deref()
            ),
            ("ServiceAccount", "fix-referrers-replay", Some("analytics"))
        );
    }

    #[test]
    fn long_names_give_distinct_names_within_63_bytes() {
        let a = owner(&format!("{}-a", "x".repeat(70)));
        let b = owner(&format!("{}-b", "x".repeat(70)));
        assert!(a.child_name().len() <= 63, "{}", a.child_name());
        assert_ne!(a.child_name(), b.child_name());
        assert!(a.child_name().ends_with("-replay"));
        let labels = a.meta(&tenant()).labels.unwrap();
        assert!(labels[REPROCESS_LABEL].len() <= 63);
        assert_eq!(owner("short").child_name(), "short-replay");
    }

    #[test]
    fn a_reprocess_outside_the_tenants_namespace_is_refused_by_name() {
        let v = tenant();
        assert!(validate_namespace(&owner("fix"), &v).is_ok());
        let elsewhere = Owner {
            namespace: "default".into(),
            ..owner("fix")
        };
        let e = validate_namespace(&elsewhere, &v).unwrap_err();
        assert_eq!(e.reason(), "Invalid");
        assert!(e.to_string().contains("must be in namespace analytics"), "{e}");
    }

    #[test]
    fn an_object_without_uid_is_refused() {
        let rp = Reprocess::new(
            "fix",
            super::super::crd::ReprocessResourceSpec::new(
                sightline_core::reprocess::parse_reprocess("tenantRef: acme\nfrom: 2026-11-01\nto: 2026-11-02\n", "t")
                    .unwrap(),
            ),
        );
        assert!(Owner::of(&rp).unwrap_err().to_string().contains("metadata.namespace"));
    }
}
