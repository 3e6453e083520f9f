//! Build: pure functions from the `Validated` value to every object the operator applies,
//! one module per Kubernetes kind (plus the topic specs and the DDL plan for the shared
//! Kafka and ClickHouse code). Nothing here reads the raw spec, the cluster or the clock.

pub mod collector;
pub mod config_map;
pub mod ddl;
pub mod loader;
mod meta;
pub mod pod;
pub mod query;
pub mod secret;
pub mod topics;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde::Serialize;
use sightline_ingest::kafka::provision::TopicSpec;

use crate::error::Result;
use crate::validate::Validated;
use secret::SigningKey;

/// Everything one tenant needs.
#[derive(Clone, Debug)]
pub struct Children {
    pub topics: Vec<TopicSpec>,
    pub ddl: ddl::DdlPlan,
    /// Created when absent, never overwritten.
    pub secret: Secret,
    pub config_map: ConfigMap,
    pub collector: Deployment,
    pub collector_service: Service,
    /// `None` when autoscaling is off (an HPA left from before is deleted).
    pub collector_autoscaler: Option<HorizontalPodAutoscaler>,
    pub collector_budget: PodDisruptionBudget,
    pub loader: StatefulSet,
    pub loader_service: Service,
    pub query: Deployment,
    pub query_service: Service,
    pub query_budget: PodDisruptionBudget,
}

/// Builds every child. `key` fills the signing Secret (see `secret::build`).
pub fn build(v: &Validated, key: Option<&SigningKey>) -> Result<Children> {
    Ok(Children {
        topics: topics::build(v),
        ddl: ddl::build(v)?,
        secret: secret::build(v, key),
        config_map: config_map::build(v)?,
        collector: collector::deployment(v),
        collector_service: collector::service(v),
        collector_autoscaler: collector::autoscaler(v),
        collector_budget: collector::disruption_budget(v),
        loader: loader::stateful_set(v),
        loader_service: loader::service(v),
        query: query::deployment(v),
        query_service: query::service(v),
        query_budget: query::disruption_budget(v),
    })
}

impl Children {
    /// The objects applied by server-side apply after the Secret, in apply order: the
    /// ConfigMap first (the pods mount it), then the workloads and what goes with them.
    /// Values carry `apiVersion` and `kind`.
    pub fn applied_objects(&self) -> Result<Vec<serde_json::Value>> {
        let mut objects = vec![
            typed(&self.config_map)?,
            typed(&self.collector)?,
            typed(&self.collector_service)?,
        ];
        if let Some(hpa) = &self.collector_autoscaler {
            objects.push(typed(hpa)?);
        }
        objects.extend([
            typed(&self.collector_budget)?,
            typed(&self.loader_service)?,
            typed(&self.loader)?,
            typed(&self.query)?,
            typed(&self.query_service)?,
            typed(&self.query_budget)?,
        ]);
        Ok(objects)
    }

    /// Every Kubernetes object, the Secret first: what `render` prints.
    pub fn all_objects(&self) -> Result<Vec<serde_json::Value>> {
        let mut objects = vec![typed(&self.secret)?];
        objects.extend(self.applied_objects()?);
        Ok(objects)
    }
}

/// What the operator applies of a built object: the object with `drift::DIGEST_ANNOTATION`
/// (the digest of the object without it), and on a workload `TEMPLATE_DIGEST_ANNOTATION`
/// (the digest of its pod template), so a later reconcile tells drift from a change to make
/// and a template change (pods replaced) from any other.
pub fn stamped(mut object: serde_json::Value) -> serde_json::Value {
    let digest = crate::drift::digest(&object);
    let template = object
        .pointer("/spec/template")
        .filter(|_| matches!(object["kind"].as_str(), Some("Deployment" | "StatefulSet")))
        .map(crate::drift::digest);
    let metadata = &mut object["metadata"];
    if !metadata["annotations"].is_object() {
        metadata["annotations"] = serde_json::json!({});
    }
    let annotations = &mut metadata["annotations"];
    annotations[crate::drift::DIGEST_ANNOTATION] = digest.into();
    if let Some(template) = template {
        annotations[TEMPLATE_DIGEST_ANNOTATION] = template.into();
        annotations[OPERATOR_VERSION_ANNOTATION] = env!("CARGO_PKG_VERSION").into();
    }
    object
}

/// On a Deployment or StatefulSet: the digest of the pod template the operator applied.
pub const TEMPLATE_DIGEST_ANNOTATION: &str = "sightline.dev/template-digest";
/// On a Deployment or StatefulSet: the operator version that applied it (names an operator
/// upgrade as the cause of a rollout).
pub const OPERATOR_VERSION_ANNOTATION: &str = "sightline.dev/operator-version";

/// An object as JSON with its `apiVersion` and `kind` (k8s-openapi leaves them to the
/// serializer of each type; they are set here explicitly so every value is complete).
pub fn typed<K>(object: &K) -> Result<serde_json::Value>
where
    K: k8s_openapi::Resource + Serialize,
{
    let mut value = serde_json::to_value(object)?;
    if let Some(map) = value.as_object_mut() {
        map.insert("apiVersion".into(), K::API_VERSION.into());
        map.insert("kind".into(), K::KIND.into());
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::tests::object;
    use crate::validate::{validate, OperatorConfig};

    fn children(spec: &str) -> (Validated, Children) {
        let v = validate(&object("acme", spec), &OperatorConfig::example("analytics")).unwrap();
        let c = build(&v, Some(&SigningKey::generate())).unwrap();
        (v, c)
    }

    const SPEC: &str =
        "sites: { allowed: [{ id: shop.example.com }] }\nkafka: { partitions: 4, replicationFactor: 1 }\n\
                        ingest: { loader: { replicas: 2 } }";

    fn container(template: &k8s_openapi::api::core::v1::PodTemplateSpec) -> &k8s_openapi::api::core::v1::Container {
        &template.spec.as_ref().unwrap().containers[0]
    }

    fn env_names(template: &k8s_openapi::api::core::v1::PodTemplateSpec) -> Vec<String> {
        container(template)
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.name.clone())
            .collect()
    }

    #[test]
    fn every_child_is_owned_labelled_and_in_the_namespace() {
        let (_, c) = children(SPEC);
        for o in c.all_objects().unwrap() {
            let meta = &o["metadata"];
            assert_eq!(meta["namespace"], "analytics", "{o}");
            assert_eq!(meta["ownerReferences"][0]["kind"], "AnalyticsTenant", "{o}");
            assert_eq!(meta["ownerReferences"][0]["controller"], true, "{o}");
            assert_eq!(meta["labels"]["app.kubernetes.io/instance"], "acme", "{o}");
            assert!(o["apiVersion"].is_string() && o["kind"].is_string(), "{o}");
        }
        let kinds: Vec<String> = c
            .all_objects()
            .unwrap()
            .iter()
            .map(|o| o["kind"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            kinds,
            [
                "Secret",
                "ConfigMap",
                "Deployment",
                "Service",
                "PodDisruptionBudget",
                "Service",
                "StatefulSet",
                "Deployment",
                "Service",
                "PodDisruptionBudget"
            ]
        );
    }

    #[test]
    fn every_pod_is_probed_limited_unprivileged_and_scraped() {
        let (_, c) = children(SPEC);
        let templates = [
            &c.collector.spec.as_ref().unwrap().template,
            &c.loader.spec.as_ref().unwrap().template,
            &c.query.spec.as_ref().unwrap().template,
        ];
        for t in templates {
            let k = container(t);
            let path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
                p.as_ref().unwrap().http_get.as_ref().unwrap().path.clone().unwrap()
            };
            assert_eq!(path(&k.liveness_probe), "/healthz");
            assert_eq!(path(&k.readiness_probe), "/readyz");
            // Probes and scrapes go to the operations listener, never the public port.
            let probe_port = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
                p.as_ref().unwrap().http_get.as_ref().unwrap().port.clone()
            };
            let ops = k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("ops".into());
            assert_eq!(probe_port(&k.liveness_probe), ops);
            assert_eq!(probe_port(&k.readiness_probe), ops);
            let ports = k.ports.as_ref().unwrap();
            assert!(ports
                .iter()
                .any(|p| p.name.as_deref() == Some("ops") && p.container_port == crate::names::OPS_PORT));
            let cargs = k.args.as_ref().unwrap();
            assert!(cargs
                .windows(2)
                .any(|w| w[0] == "--ops-listen" && w[1] == "0.0.0.0:9090"));
            // The loader has no public API: `--listen` would be refused by its command line.
            assert_eq!(cargs.iter().any(|a| a == "--listen"), cargs[0] != "loader", "{cargs:?}");
            let r = k.resources.as_ref().unwrap();
            assert!(r.requests.as_ref().unwrap().contains_key("cpu"));
            assert!(r.limits.as_ref().unwrap().contains_key("memory"));
            let sc = k.security_context.as_ref().unwrap();
            assert_eq!(sc.run_as_non_root, Some(true));
            assert_eq!(sc.read_only_root_filesystem, Some(true));
            assert_eq!(sc.allow_privilege_escalation, Some(false));
            let annotations = t.metadata.as_ref().unwrap().annotations.as_ref().unwrap();
            assert_eq!(annotations["prometheus.io/scrape"], "true");
            assert_eq!(annotations["prometheus.io/path"], "/metrics");
            assert_eq!(annotations["prometheus.io/port"], "9090");
            let args = k.args.as_ref().unwrap();
            assert_eq!(args[1..3], ["--tenants".to_string(), pod::TENANTS_DIR.to_string()]);
            // The tenants directory is the ConfigMap, mounted whole (updated in place).
            let volumes = t.spec.as_ref().unwrap().volumes.as_ref().unwrap();
            assert_eq!(volumes[0].config_map.as_ref().unwrap().name, "acme-tenant");
            assert!(k.volume_mounts.as_ref().unwrap().iter().all(|m| m.sub_path.is_none()));
        }
    }

    #[test]
    fn roles_get_what_they_need_and_nothing_more() {
        let (_, c) = children(SPEC);
        let collector = env_names(&c.collector.spec.as_ref().unwrap().template);
        assert!(collector.contains(&"SIGHTLINE_SECRET".to_string()));
        assert!(collector.contains(&"SIGHTLINE_KAFKA_BROKERS".to_string()));
        assert!(!collector.contains(&"SIGHTLINE_CLICKHOUSE_URL".to_string()));
        let loader = env_names(&c.loader.spec.as_ref().unwrap().template);
        assert!(loader.contains(&"SIGHTLINE_CLICKHOUSE_URL".to_string()));
        assert!(loader.contains(&"SIGHTLINE_LOADER_INSTANCE".to_string()));
        assert!(!loader.contains(&"SIGHTLINE_SECRET".to_string()));
        let query = env_names(&c.query.spec.as_ref().unwrap().template);
        assert!(query.contains(&"SIGHTLINE_SECRET".to_string()));
        assert!(!query.contains(&"SIGHTLINE_KAFKA_BROKERS".to_string()));
        // The signing secret comes from the tenant's Secret, not a value in the spec.
        let secret_ref = container(&c.query.spec.as_ref().unwrap().template)
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "SIGHTLINE_SECRET")
            .unwrap()
            .value_from
            .clone()
            .unwrap()
            .secret_key_ref
            .unwrap();
        assert_eq!(secret_ref.name, "acme-signing-key");
        // Roles in a cluster check the schema version: the operator is the single migrator.
        for t in [
            &c.loader.spec.as_ref().unwrap().template,
            &c.query.spec.as_ref().unwrap().template,
        ] {
            let args = container(t).args.clone().unwrap();
            assert!(args.windows(2).any(|w| w == ["--migrations", "check"]), "{args:?}");
        }
    }

    #[test]
    fn the_loader_is_a_statefulset_with_stable_names() {
        let (v, c) = children(SPEC);
        let spec = c.loader.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.service_name.as_deref(), Some("acme-loader"));
        let instance = container(&spec.template)
            .env
            .as_ref()
            .unwrap()
            .iter()
            .find(|e| e.name == "SIGHTLINE_LOADER_INSTANCE")
            .unwrap()
            .value_from
            .clone()
            .unwrap()
            .field_ref
            .unwrap();
        assert_eq!(instance.field_path, "metadata.name");
        assert_eq!(
            c.loader_service.spec.as_ref().unwrap().cluster_ip.as_deref(),
            Some("None")
        );
        assert_eq!(v.names.consumer_group, "sightline.acme.loader");
    }

    #[test]
    fn collectors_trust_the_operators_proxies_and_no_other_role_does() {
        let (_, plain) = children(SPEC);
        let args = |c: &Children| {
            (
                container(&c.collector.spec.as_ref().unwrap().template)
                    .args
                    .clone()
                    .unwrap(),
                container(&c.query.spec.as_ref().unwrap().template)
                    .args
                    .clone()
                    .unwrap(),
            )
        };
        let (collector, _) = args(&plain);
        assert!(!collector.iter().any(|a| a == "--trusted-proxy"), "{collector:?}");
        let config = OperatorConfig {
            collector_trusted_proxies: vec!["10.0.0.0/8".into(), "fd00::/8".into()],
            ..OperatorConfig::example("analytics")
        };
        let v = validate(&object("acme", SPEC), &config).unwrap();
        let (collector, query) = args(&build(&v, None).unwrap());
        let trusted: Vec<&[String]> = collector.windows(2).filter(|w| w[0] == "--trusted-proxy").collect();
        assert_eq!(
            trusted,
            [
                &["--trusted-proxy".to_string(), "10.0.0.0/8".to_string()][..],
                &["--trusted-proxy".to_string(), "fd00::/8".to_string()][..]
            ]
        );
        assert!(!query.iter().any(|a| a == "--trusted-proxy"), "{query:?}");
    }

    #[test]
    fn autoscaling_gives_an_hpa_and_leaves_replicas_to_it() {
        let (_, fixed) = children(SPEC);
        assert!(fixed.collector_autoscaler.is_none());
        assert_eq!(fixed.collector.spec.as_ref().unwrap().replicas, Some(2));
        let (_, scaled) = children(&SPEC.replace(
            "ingest: { loader: { replicas: 2 } }",
            "ingest: { loader: { replicas: 2 }, collector: { autoscaling: { minReplicas: 3, maxReplicas: 12, targetCpuPercent: 60 } } }",
        ));
        assert_eq!(scaled.collector.spec.as_ref().unwrap().replicas, None);
        let hpa = scaled.collector_autoscaler.unwrap().spec.unwrap();
        assert_eq!(hpa.min_replicas, Some(3));
        assert_eq!(hpa.max_replicas, 12);
        assert_eq!(hpa.scale_target_ref.name, "acme-collector");
        let target = &hpa.metrics.unwrap()[0].resource.clone().unwrap().target;
        assert_eq!(target.average_utilization, Some(60));
    }

    #[test]
    fn budgets_and_services_select_their_role() {
        let (_, c) = children(SPEC);
        for (pdb, role) in [(&c.collector_budget, "collector"), (&c.query_budget, "query")] {
            let spec = pdb.spec.as_ref().unwrap();
            assert_eq!(
                spec.max_unavailable,
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(1))
            );
            let labels = spec.selector.as_ref().unwrap().match_labels.as_ref().unwrap();
            assert_eq!(labels["app.kubernetes.io/component"], role);
        }
        let svc = c.collector_service.spec.as_ref().unwrap();
        assert_eq!(svc.ports.as_ref().unwrap()[0].port, 8080);
        assert_eq!(
            svc.selector.as_ref().unwrap()["app.kubernetes.io/component"],
            "collector"
        );
    }

    #[test]
    fn the_secret_is_generated_by_the_caller_and_the_configmap_is_a_tenants_file() {
        let (v, c) = children(SPEC);
        let data = c.secret.data.as_ref().unwrap();
        assert_eq!(data[pod::SECRET_KEY].0.len(), 44, "32 bytes, padded base64");
        // The roles read it: the one encoding of SIGHTLINE_SECRET.
        let text = String::from_utf8(data[pod::SECRET_KEY].0.clone()).unwrap();
        sightline_core::secret::MasterSecret::from_base64(&text, "the generated key").unwrap();
        let without = secret::build(&v, None);
        assert!(without.data.is_none(), "render shows no key");
        let yaml = &c.config_map.data.as_ref().unwrap()[config_map::FILE];
        let parsed = sightline_core::spec::parse_tenants(yaml, "configmap").unwrap();
        assert_eq!(parsed, vec![v.tenant.clone()]);
    }

    #[test]
    fn topics_and_ddl_follow_the_spec() {
        let (_, c) = children(SPEC);
        assert_eq!(c.topics.len(), 2);
        assert_eq!(c.topics[0].name, "sightline.acme.events");
        assert_eq!(c.topics[1].name, "sightline.acme.events.dlq");
        assert!(c.topics.iter().all(|t| t.partitions == 4 && t.replication_factor == 1));
        assert_eq!(c.topics[0].configs["retention.ms"], (168 * 3_600_000).to_string());
        assert_eq!(c.ddl.database, "sightline_acme");
        assert_eq!(
            c.ddl.target_version,
            sightline_core::schema::migrations(&sightline_core::spec::Tenant {
                name: "acme".into(),
                spec: serde_yaml::from_str("sites: { open: true }").unwrap()
            })
            .last()
            .unwrap()
            .version
        );
        for table in [
            "events_raw",
            "events",
            "rollup_site_15m",
            "rollup_site_15m_mv",
            "schema_migrations",
        ] {
            assert!(c.ddl.objects.contains(&table.to_string()), "{:?}", c.ddl.objects);
        }
        // The hourly layout retires once a tenant is on the tiers: drift repair must not
        // expect it.
        assert!(
            !c.ddl.objects.iter().any(|o| o.contains("hourly")),
            "{:?}",
            c.ddl.objects
        );
        assert!(c
            .ddl
            .steps
            .iter()
            .flat_map(|s| &s.statements)
            .all(|s| s.contains("sightline_acme.")));
        let (_, other) = children(&format!("{SPEC}\nclickhouse: {{ database: shop_analytics }}"));
        assert_eq!(other.ddl.database, "shop_analytics");
        assert!(other.ddl.steps[0].statements[0].contains("shop_analytics.events_raw"));
    }
}

/// Golden pod templates: an operator upgrade must not restart a tenant's pods unless a
/// template change is intended. These snapshots (build/snapshots/, committed) fail on any
/// change to what the workloads run; when the change is meant, review and accept it
/// (`cargo insta review`, or `INSTA_UPDATE=always` and read the diff), and a running tenant
/// then announces it (`RolloutPending` and a `RolloutStarted` Event).
#[cfg(test)]
mod golden {
    use super::*;
    use crate::validate::tests::object;
    use crate::validate::{validate, ClientCertificateSecret, OperatorConfig, SecretFile};
    use sightline_ingest::kafka::{Mechanism, Protocol, Sasl, Security};

    /// A tenant that sets what the templates read: resources, credentials, autoscaling.
    const SPEC: &str = "sites: { allowed: [{ id: shop.example.com }] }\n\
        kafka: { partitions: 4, replicationFactor: 3 }\n\
        clickhouse: { credentialsSecret: { name: ch-credentials } }\n\
        ingest:\n  collector: { autoscaling: { minReplicas: 2, maxReplicas: 6 }, resources: { limits: { cpu: '2' } } }\n  \
        loader: { replicas: 2, resources: { requests: { memory: 1Gi } } }\n  query: { replicas: 3 }";

    fn templates() -> Children {
        let mut config = OperatorConfig::example("analytics");
        config.image = "registry.example/sightline:1.2.3".into();
        config.kafka_credentials_secret = Some("kafka-credentials".into());
        config.kafka_security = Security {
            protocol: Protocol::SaslSsl,
            sasl: Some(Sasl {
                mechanism: Mechanism::ScramSha512,
                username: "operator".into(),
                password: "operator-password".into(),
            }),
            ..Security::default()
        };
        // A Strimzi cluster's CA Secret and KafkaUser Secret (mTLS).
        config.kafka_ca_secret = Some(SecretFile {
            name: "kafka-cluster-ca-cert".into(),
            key: "ca.crt".into(),
        });
        config.kafka_client_secret = Some(ClientCertificateSecret {
            name: "sightline-kafka-user".into(),
            certificate: "user.crt".into(),
            key: "user.key".into(),
        });
        config.check_kafka().unwrap();
        let v = validate(&object("acme", SPEC), &config).unwrap();
        build(&v, None).unwrap()
    }

    fn yaml(template: &k8s_openapi::api::core::v1::PodTemplateSpec) -> String {
        serde_yaml::to_string(template).unwrap()
    }

    #[test]
    fn collector_pod_template() {
        insta::assert_snapshot!(yaml(&templates().collector.spec.unwrap().template));
    }

    #[test]
    fn loader_pod_template() {
        insta::assert_snapshot!(yaml(&templates().loader.spec.unwrap().template));
    }

    #[test]
    fn query_pod_template() {
        insta::assert_snapshot!(yaml(&templates().query.spec.unwrap().template));
    }

    #[test]
    fn templates_do_not_depend_on_the_operator_version_or_the_run() {
        // Built twice (a new key each time, as a reconcile does): byte-identical.
        assert_eq!(
            yaml(&templates().collector.spec.unwrap().template),
            yaml(&templates().collector.spec.unwrap().template)
        );
        let text = yaml(&templates().query.spec.unwrap().template);
        assert!(!text.contains(env!("CARGO_PKG_VERSION")), "{text}");
    }
}
