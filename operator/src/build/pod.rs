//! What every pod of a tenant has: the `sightline` container for its role, probes on
//! `/healthz` and `/readyz` of its operations listener (port `ops`), resources, a non-root user and a read-only root filesystem
//! (with the data and tmp directories as emptyDirs), Prometheus scrape annotations, the
//! tenant's ConfigMap as its tenants directory and the settings as environment.
//!
//! The ConfigMap is mounted as a directory (not through subPath), so Kubernetes updates the
//! files in place when the tenant changes and the roles reload them without a restart; for
//! the same reason the pod template carries no checksum of it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use sightline_ingest::kafka::{Protocol, Security};

use crate::names::{Role, OPS_PORT};
use crate::validate::{Resources, Validated, Workload};

/// Where the tenant's ConfigMap is mounted: the roles' `--tenants`.
pub const TENANTS_DIR: &str = "/etc/sightline/tenants";
/// The roles' `--data` (an emptyDir: in a cluster nothing durable lives there).
pub const DATA_DIR: &str = "/var/lib/sightline";
/// The key of the signing Secret that holds `SIGHTLINE_SECRET`.
pub const SECRET_KEY: &str = "secret";
/// The uid the container runs as (the distroless "nonroot" user).
pub const RUN_AS_USER: i64 = 65532;
/// Where the Kafka CA Secret's certificate is mounted (`SIGHTLINE_KAFKA_CA_FILE`).
pub const KAFKA_CA_DIR: &str = "/etc/sightline/kafka/ca";
/// Where the Kafka client certificate Secret is mounted (`SIGHTLINE_KAFKA_CERT_FILE`, `_KEY_FILE`).
pub const KAFKA_CLIENT_DIR: &str = "/etc/sightline/kafka/client";

/// The pod template of a role: its container runs `sightline <role> <args>`.
pub fn template(
    v: &Validated,
    role: Role,
    workload: &Workload,
    args: Vec<String>,
    env: Vec<EnvVar>,
) -> PodTemplateSpec {
    let annotations = BTreeMap::from([
        ("prometheus.io/scrape".to_string(), "true".to_string()),
        ("prometheus.io/port".to_string(), OPS_PORT.to_string()),
        ("prometheus.io/path".to_string(), "/metrics".to_string()),
    ]);
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String("ops".into()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Default::default()
    };
    let mut all_args = vec![
        role.as_str().to_string(),
        "--tenants".into(),
        TENANTS_DIR.into(),
        "--data".into(),
        DATA_DIR.into(),
        "--ops-listen".into(),
        format!("0.0.0.0:{OPS_PORT}"),
    ];
    let mut ports = vec![ContainerPort {
        name: Some("ops".into()),
        container_port: OPS_PORT,
        protocol: Some("TCP".into()),
        ..Default::default()
    }];
    if role.has_api() {
        all_args.extend(["--listen".into(), format!("0.0.0.0:{}", role.port())]);
        ports.insert(
            0,
            ContainerPort {
                name: Some("http".into()),
                container_port: role.port(),
                protocol: Some("TCP".into()),
                ..Default::default()
            },
        );
    }
    all_args.extend(args);
    let mut volume_mounts = vec![
        VolumeMount {
            name: "tenants".into(),
            mount_path: TENANTS_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "data".into(),
            mount_path: DATA_DIR.into(),
            ..Default::default()
        },
        VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        },
    ];
    let mut volumes = vec![tenants_volume(v), empty_dir_volume("data"), empty_dir_volume("tmp")];
    if matches!(role, Role::Collector | Role::Loader) {
        for (volume, mount) in kafka_tls_volumes(v) {
            volumes.push(volume);
            volume_mounts.push(mount);
        }
    }
    let container = Container {
        name: role.as_str().to_string(),
        image: Some(v.image.clone()),
        args: Some(all_args),
        env: Some(env),
        ports: Some(ports),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        resources: Some(resources(&workload.resources)),
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
        volume_mounts: Some(volume_mounts),
        ..Default::default()
    };
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(v.names.labels(Some(role))),
            annotations: Some(annotations),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
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
            // A loader or collector finishing its batch on SIGTERM needs a moment.
            termination_grace_period_seconds: Some(60),
            automount_service_account_token: Some(false),
            volumes: Some(volumes),
            ..Default::default()
        }),
    }
}

/// The `tenants` volume every Sightline pod mounts at `TENANTS_DIR`: the tenant's ConfigMap.
pub fn tenants_volume(v: &Validated) -> Volume {
    Volume {
        name: "tenants".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: v.names.config_map(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A pod-lifetime scratch volume (`emptyDir`) named `name`.
pub fn empty_dir_volume(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

pub fn resources(r: &Resources) -> ResourceRequirements {
    let mut limits = BTreeMap::from([("memory".to_string(), Quantity(r.limit_memory.clone()))]);
    if let Some(cpu) = &r.limit_cpu {
        limits.insert("cpu".into(), Quantity(cpu.clone()));
    }
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(r.request_cpu.clone())),
            ("memory".to_string(), Quantity(r.request_memory.clone())),
        ])),
        limits: Some(limits),
        ..Default::default()
    }
}

/// A plain environment variable.
pub fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// An environment variable from a key of a Secret.
pub fn env_from_secret(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// An environment variable from the pod's own metadata (e.g. `metadata.name`).
pub fn env_from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The tenant's signing secret as `SIGHTLINE_SECRET` (collector and query).
pub fn signing_secret_env(v: &Validated) -> EnvVar {
    env_from_secret(
        sightline_core::secret::SECRET_ENV,
        &v.names.signing_secret(),
        SECRET_KEY,
    )
}

/// Brokers and TLS/SASL settings (collector and loader): the operator's protocol and
/// mechanism, the SASL credentials from their Secret, and the paths where
/// `kafka_tls_volumes` mounts the CA and the client certificate.
pub fn kafka_env(v: &Validated) -> Vec<EnvVar> {
    let mut vars = vec![env("SIGHTLINE_KAFKA_BROKERS", &v.brokers)];
    let s = &v.kafka_security;
    if s.protocol != Protocol::Plaintext {
        vars.push(env(Security::PROTOCOL_ENV, s.protocol.as_str()));
    }
    if let Some(sasl) = &s.sasl {
        vars.push(env(Security::SASL_MECHANISM_ENV, sasl.mechanism.as_str()));
    }
    if let Some(secret) = &v.kafka_credentials_secret {
        vars.push(env_from_secret(Security::SASL_USERNAME_ENV, secret, "username"));
        vars.push(env_from_secret(Security::SASL_PASSWORD_ENV, secret, "password"));
    }
    if v.kafka_ca_secret.is_some() {
        vars.push(env(Security::CA_FILE_ENV, &format!("{KAFKA_CA_DIR}/ca.crt")));
    }
    if v.kafka_client_secret.is_some() {
        vars.push(env(Security::CERT_FILE_ENV, &format!("{KAFKA_CLIENT_DIR}/tls.crt")));
        vars.push(env(Security::KEY_FILE_ENV, &format!("{KAFKA_CLIENT_DIR}/tls.key")));
    }
    vars
}

/// The Kafka CA and client certificate Secrets as read-only volumes (their keys under fixed
/// file names, readable by the pod's group only: the key is a secret), with their mounts.
fn kafka_tls_volumes(v: &Validated) -> Vec<(Volume, VolumeMount)> {
    let secret_volume = |name: &str, secret: &str, items: Vec<(&str, &str)>, dir: &str| {
        (
            Volume {
                name: name.into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(secret.into()),
                    items: Some(
                        items
                            .into_iter()
                            .map(|(key, path)| KeyToPath {
                                key: key.into(),
                                path: path.into(),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                    default_mode: Some(0o440),
                    optional: Some(false),
                }),
                ..Default::default()
            },
            VolumeMount {
                name: name.into(),
                mount_path: dir.into(),
                read_only: Some(true),
                ..Default::default()
            },
        )
    };
    let mut volumes = Vec::new();
    if let Some(ca) = &v.kafka_ca_secret {
        volumes.push(secret_volume(
            "kafka-ca",
            &ca.name,
            vec![(ca.key.as_str(), "ca.crt")],
            KAFKA_CA_DIR,
        ));
    }
    if let Some(client) = &v.kafka_client_secret {
        volumes.push(secret_volume(
            "kafka-client",
            &client.name,
            vec![
                (client.certificate.as_str(), "tls.crt"),
                (client.key.as_str(), "tls.key"),
            ],
            KAFKA_CLIENT_DIR,
        ));
    }
    volumes
}

/// The ClickHouse URL and credentials (loader and query).
pub fn clickhouse_env(v: &Validated) -> Vec<EnvVar> {
    let mut vars = vec![env("SIGHTLINE_CLICKHOUSE_URL", &v.clickhouse.url)];
    if let Some(c) = &v.clickhouse.credentials {
        vars.push(env_from_secret("SIGHTLINE_CLICKHOUSE_USER", &c.name, &c.user_key));
        vars.push(env_from_secret(
            "SIGHTLINE_CLICKHOUSE_PASSWORD",
            &c.name,
            &c.password_key,
        ));
    }
    vars
}

/// Logs as JSON lines, at info.
pub fn log_env() -> Vec<EnvVar> {
    vec![env("RUST_LOG", "info")]
}
