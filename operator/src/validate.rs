//! Validate: an `AnalyticsTenant` and the operator's settings in, one `Validated` value out,
//! with every default resolved. Every builder reads this value and nothing else, so build
//! and validation cannot disagree.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use sightline_core::spec::{AutoscalingSpec, CredentialsSecretRef, DeletionPolicy, ResourcesSpec, Tenant};

use crate::crd::AnalyticsTenant;
use crate::error::Error;
use crate::names::{Names, Namespace, TenantName};

/// The operator's own settings: what a tenant's spec falls back to.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Where workloads go when `spec.ingest.namespace` is absent (the operator's namespace).
    pub namespace: String,
    /// The `sightline` image the workloads run unless the spec overrides it.
    pub image: String,
    /// Kafka bootstrap servers (the operator's and the workloads').
    pub brokers: String,
    /// Kafka TLS/SASL settings (the operator's own client; protocol and mechanism are passed
    /// to the workloads as environment).
    pub kafka_security: sightline_ingest::kafka::Security,
    /// A Secret in the workloads' namespace with the SASL `username` and `password` for the
    /// workloads.
    pub kafka_credentials_secret: Option<String>,
    /// A Secret in the workloads' namespace with the CA certificates that sign the brokers'
    /// certificates (TLS; without it the workloads trust the image's CA certificates).
    pub kafka_ca_secret: Option<SecretFile>,
    /// A Secret in the workloads' namespace with their client certificate and key (mTLS).
    pub kafka_client_secret: Option<ClientCertificateSecret>,
    /// ClickHouse URL unless the spec names one.
    pub clickhouse_url: Option<String>,
    /// A Secret (in the workloads' namespace) with ClickHouse credentials, unless the spec
    /// names one.
    pub clickhouse_credentials: Option<CredentialsSecretRef>,
    /// Networks (CIDR, already parsed) of the proxies in front of every collector, such as
    /// an ingress controller's pods: each collector trusts their forwarding header for the
    /// visitor's address (`--trusted-proxy`). Empty: collectors trust no proxy.
    pub collector_trusted_proxies: Vec<String>,
}

impl OperatorConfig {
    /// Settings for tests and `render`: everything local.
    pub fn example(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            image: "ghcr.io/sightline/sightline:latest".into(),
            brokers: "kafka:9092".into(),
            kafka_security: Default::default(),
            kafka_credentials_secret: None,
            kafka_ca_secret: None,
            kafka_client_secret: None,
            clickhouse_url: Some("http://clickhouse:8123".into()),
            clickhouse_credentials: None,
            collector_trusted_proxies: Vec::new(),
        }
    }
}

/// One key of a Secret: a file the workloads get mounted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretFile {
    pub name: String,
    /// The key that holds the file (a CA bundle in PEM).
    pub key: String,
}

/// A Secret with a client certificate and its key, as Strimzi's `certificateAndKey` names
/// one: a KafkaUser's Secret has them as `user.crt` and `user.key`, a cert-manager or
/// `kubernetes.io/tls` Secret as `tls.crt` and `tls.key`. The key must not be encrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificateSecret {
    pub name: String,
    /// The key holding the certificate (PEM, then any intermediates).
    pub certificate: String,
    /// The key holding its private key (PEM).
    pub key: String,
}

impl OperatorConfig {
    /// Checks that the workloads' Kafka settings can work with the operator's protocol:
    /// SASL needs the credentials Secret (and only SASL takes it); the CA and client
    /// certificate Secrets only go with TLS. The error names the flag.
    pub fn check_kafka(&self) -> Result<(), String> {
        let protocol = self.kafka_security.protocol;
        let env = sightline_ingest::kafka::Security::PROTOCOL_ENV;
        match (protocol.sasl(), &self.kafka_credentials_secret) {
            (true, None) => {
                return Err(format!(
                    "--kafka-credentials-secret is required with {env}={}: the workloads authenticate with its username and password",
                    protocol.as_str()
                ))
            }
            (false, Some(_)) => {
                return Err(format!(
                    "--kafka-credentials-secret: {env}={} does not authenticate with SASL (sasl_plaintext or sasl_ssl does)",
                    protocol.as_str()
                ))
            }
            _ => {}
        }
        if !protocol.tls() {
            let flag = if self.kafka_ca_secret.is_some() {
                Some("--kafka-ca-secret")
            } else if self.kafka_client_secret.is_some() {
                Some("--kafka-client-secret")
            } else {
                None
            };
            if let Some(flag) = flag {
                return Err(format!(
                    "{flag}: {env}={} is not TLS (ssl or sasl_ssl is)",
                    protocol.as_str()
                ));
            }
        }
        Ok(())
    }
}

/// Container resources with the role's defaults filled in (Kubernetes quantities).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resources {
    pub request_cpu: String,
    pub request_memory: String,
    pub limit_cpu: Option<String>,
    pub limit_memory: String,
}

impl Resources {
    fn resolve(spec: &ResourcesSpec, cpu: &str, memory: &str, memory_limit: &str) -> Self {
        Self {
            request_cpu: spec.requests.cpu.clone().unwrap_or_else(|| cpu.into()),
            request_memory: spec.requests.memory.clone().unwrap_or_else(|| memory.into()),
            // No CPU limit by default: throttling a latency-sensitive server helps nobody.
            limit_cpu: spec.limits.cpu.clone(),
            limit_memory: spec.limits.memory.clone().unwrap_or_else(|| memory_limit.into()),
        }
    }
}

/// How many collector pods: fixed, or an HPA's bounds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scaling {
    Fixed(i32),
    Autoscaled {
        min: i32,
        max: i32,
        target_cpu_percent: i32,
    },
}

/// One role's workload settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub replicas: i32,
    pub resources: Resources,
}

/// Where the warehouse is for this tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct ClickHouseTarget {
    pub url: String,
    pub credentials: Option<CredentialsSecretRef>,
}

/// Everything the build and apply steps need, resolved.
#[derive(Clone, Debug)]
pub struct Validated {
    /// The tenant as the roles and core see it (name and spec).
    pub tenant: Tenant,
    pub names: Names,
    pub generation: Option<i64>,
    /// Owner reference every child carries, so Kubernetes collects them with the tenant.
    pub owner: OwnerReference,
    pub image: String,
    pub brokers: String,
    pub kafka_security: sightline_ingest::kafka::Security,
    pub kafka_credentials_secret: Option<String>,
    pub kafka_ca_secret: Option<SecretFile>,
    pub kafka_client_secret: Option<ClientCertificateSecret>,
    pub clickhouse: ClickHouseTarget,
    pub collector: Workload,
    pub collector_scaling: Scaling,
    /// The collector's `--trusted-proxy` networks (the operator's setting).
    pub collector_trusted_proxies: Vec<String>,
    pub loader: Workload,
    pub query: Workload,
    pub deletion_policy: DeletionPolicy,
}

/// Checks the resource and resolves every default; `Error::Invalid` names what is wrong.
pub fn validate(obj: &AnalyticsTenant, config: &OperatorConfig) -> Result<Validated, Error> {
    let raw_name = obj.metadata.name.clone().unwrap_or_default();
    let invalid = |message: String| Error::Invalid { message };
    let name = TenantName::parse(&raw_name).ok_or_else(|| {
        invalid(format!(
            "metadata.name {raw_name:?}: use 1-40 lowercase letters, digits and '-', starting with a letter"
        ))
    })?;
    let spec = obj.spec.tenant.clone();
    spec.validate(&format!("AnalyticsTenant {raw_name}"))
        .map_err(|e| invalid(e.to_string()))?;
    let namespace_name = spec
        .ingest
        .namespace
        .clone()
        .unwrap_or_else(|| config.namespace.clone());
    let namespace = Namespace::parse(&namespace_name)
        .ok_or_else(|| invalid(format!("ingest.namespace {namespace_name:?} is not a namespace name")))?;
    let url = spec
        .clickhouse
        .url
        .clone()
        .or_else(|| config.clickhouse_url.clone())
        .ok_or_else(|| invalid("clickhouse.url is not set and the operator has no --clickhouse-url".into()))?;
    let uid = obj
        .metadata
        .uid
        .clone()
        .ok_or_else(|| invalid("metadata.uid is missing (not an object read from the API)".into()))?;
    let owner = OwnerReference {
        api_version: AnalyticsTenant::api_version(&()).into_owned(),
        kind: AnalyticsTenant::kind(&()).into_owned(),
        name: raw_name.clone(),
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let ingest = &spec.ingest;
    let collector_scaling = match &ingest.collector.autoscaling {
        None => Scaling::Fixed(ingest.collector.replicas as i32),
        Some(AutoscalingSpec {
            min_replicas,
            max_replicas,
            target_cpu_percent,
        }) => Scaling::Autoscaled {
            min: *min_replicas as i32,
            max: *max_replicas as i32,
            target_cpu_percent: *target_cpu_percent as i32,
        },
    };
    let tenant = Tenant {
        name: raw_name,
        spec: spec.clone(),
    };
    Ok(Validated {
        names: Names::new(&tenant, name, namespace),
        generation: obj.metadata.generation,
        owner,
        image: ingest.image.clone().unwrap_or_else(|| config.image.clone()),
        brokers: config.brokers.clone(),
        kafka_security: config.kafka_security.clone(),
        kafka_credentials_secret: config.kafka_credentials_secret.clone(),
        kafka_ca_secret: config.kafka_ca_secret.clone(),
        kafka_client_secret: config.kafka_client_secret.clone(),
        clickhouse: ClickHouseTarget {
            url,
            credentials: spec
                .clickhouse
                .credentials_secret
                .clone()
                .or_else(|| config.clickhouse_credentials.clone()),
        },
        collector: Workload {
            replicas: ingest.collector.replicas as i32,
            resources: Resources::resolve(&ingest.collector.resources, "250m", "256Mi", "512Mi"),
        },
        collector_scaling,
        collector_trusted_proxies: config.collector_trusted_proxies.clone(),
        loader: Workload {
            replicas: ingest.loader.replicas as i32,
            resources: Resources::resolve(&ingest.loader.resources, "500m", "512Mi", "1Gi"),
        },
        query: Workload {
            replicas: ingest.query.replicas as i32,
            resources: Resources::resolve(&ingest.query.resources, "250m", "256Mi", "1Gi"),
        },
        deletion_policy: spec.deletion_policy,
        tenant,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::AnalyticsTenantSpec;

    /// A tenant object as the API would hand it over (uid, generation).
    pub fn object(name: &str, spec_yaml: &str) -> AnalyticsTenant {
        let tenant = serde_yaml::from_str(spec_yaml).unwrap();
        let mut obj = AnalyticsTenant::new(name, AnalyticsTenantSpec { tenant });
        obj.metadata.uid = Some(format!("uid-{name}"));
        obj.metadata.generation = Some(1);
        obj
    }

    #[test]
    fn defaults_are_resolved_once() {
        let v = validate(
            &object("acme", "sites: { allowed: [{ id: shop.example.com }] }"),
            &OperatorConfig::example("sightline"),
        )
        .unwrap();
        assert_eq!(v.names.namespace.as_str(), "sightline");
        assert_eq!(v.names.database, "sightline_acme");
        assert_eq!(v.collector_scaling, Scaling::Fixed(2));
        assert_eq!(v.loader.replicas, 1);
        assert_eq!(v.clickhouse.url, "http://clickhouse:8123");
        assert_eq!(v.owner.kind, "AnalyticsTenant");
        assert_eq!(v.owner.uid, "uid-acme");
        assert_eq!(v.deletion_policy, DeletionPolicy::Retain);
        assert_eq!(v.collector.resources.request_cpu, "250m");
    }

    #[test]
    fn overrides_win_and_bad_values_are_named() {
        let v = validate(
            &object(
                "acme",
                "sites: { open: true }\nclickhouse: { database: shared_db, url: 'https://ch:8443' }\n\
                 ingest: { namespace: shop, image: 'reg/sightline:1', collector: { autoscaling: { minReplicas: 2, maxReplicas: 9 } } }",
            ),
            &OperatorConfig::example("sightline"),
        )
        .unwrap();
        assert_eq!(v.names.database, "shared_db");
        assert_eq!(v.names.namespace.as_str(), "shop");
        assert_eq!(v.image, "reg/sightline:1");
        assert_eq!(
            v.collector_scaling,
            Scaling::Autoscaled {
                min: 2,
                max: 9,
                target_cpu_percent: 70
            }
        );
        let e = validate(
            &object(
                "acme",
                "sites: { open: true }\nkafka: { partitions: 2 }\ningest: { loader: { replicas: 3 } }",
            ),
            &OperatorConfig::example("sightline"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("ingest.loader.replicas"), "{e}");
        assert_eq!(e.reason(), "Invalid");
        let e = validate(
            &object("Bad_Name", "sites: { open: true }"),
            &OperatorConfig::example("s"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("metadata.name"), "{e}");
        let e = validate(
            &object(
                "acme",
                "sites: { open: true }\nclickhouse: { database: 'Robert; DROP' }",
            ),
            &OperatorConfig::example("s"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("clickhouse.database"), "{e}");
    }

    #[test]
    fn a_clickhouse_cluster_is_accepted_and_a_bad_cluster_name_is_named() {
        let v = validate(
            &object("acme", "sites: { open: true }\nclickhouse: { cluster: eu-west-1 }"),
            &OperatorConfig::example("s"),
        )
        .unwrap();
        assert_eq!(v.tenant.spec.clickhouse.cluster.as_deref(), Some("eu-west-1"));
        let e = validate(
            &object("acme", "sites: { open: true }\nclickhouse: { cluster: 'a`b' }"),
            &OperatorConfig::example("s"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("clickhouse.cluster"), "{e}");
        assert_eq!(e.reason(), "Invalid");
    }

    #[test]
    fn the_workloads_kafka_secrets_must_fit_the_protocol_naming_the_flag() {
        use sightline_ingest::kafka::{Mechanism, Protocol, Sasl, Security};
        let mut config = OperatorConfig::example("analytics");
        config.check_kafka().unwrap();
        let sasl = Security {
            protocol: Protocol::SaslSsl,
            sasl: Some(Sasl {
                mechanism: Mechanism::ScramSha256,
                username: "u".into(),
                password: "p".into(),
            }),
            ..Security::default()
        };
        config.kafka_security = sasl.clone();
        let e = config.check_kafka().unwrap_err();
        assert!(
            e.starts_with("--kafka-credentials-secret is required with SIGHTLINE_KAFKA_SECURITY_PROTOCOL=sasl_ssl"),
            "{e}"
        );
        config.kafka_credentials_secret = Some("kafka-credentials".into());
        config.kafka_ca_secret = Some(SecretFile {
            name: "ca".into(),
            key: "ca.crt".into(),
        });
        config.check_kafka().unwrap();
        // Plaintext: neither credentials nor certificates.
        config.kafka_security = Security::default();
        let e = config.check_kafka().unwrap_err();
        assert!(
            e.starts_with("--kafka-credentials-secret: SIGHTLINE_KAFKA_SECURITY_PROTOCOL=plaintext"),
            "{e}"
        );
        config.kafka_credentials_secret = None;
        let e = config.check_kafka().unwrap_err();
        assert!(
            e.starts_with("--kafka-ca-secret: SIGHTLINE_KAFKA_SECURITY_PROTOCOL=plaintext is not TLS"),
            "{e}"
        );
    }
}
