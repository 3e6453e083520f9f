//! `kubectl sightline report TENANT`: a support bundle, one YAML stream a person can attach
//! to an issue: the tenant, every object the operator made for it, its pods, the Events
//! about them, the names of its Secrets, and the operator's recent logs.
//!
//! Redacted: Secrets are listed by metadata only (the API is asked for metadata, and any
//! `data`/`stringData` that still arrives is dropped), and the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation, which holds a Secret's
//! data when it was made by `kubectl apply`, is removed from every object; `managedFields`
//! are left out as noise.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{ListParams, LogParams};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};

use super::{workload_namespace, PluginError};
use crate::crd::AnalyticsTenant;

/// Where the operator runs and how much of its log to take.
#[derive(Clone, Debug)]
pub struct Scope {
    pub tenant: String,
    /// The operator's namespace.
    pub operator_namespace: String,
    /// Label selector of the operator's pods.
    pub operator_selector: String,
    /// Log lines per operator pod.
    pub log_lines: i64,
    /// The workloads' namespace, when the tenant does not say.
    pub namespace: Option<String>,
}

/// The annotation `kubectl apply` leaves, which carries a Secret's data.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Collects the bundle; `collected_at` dates it.
pub async fn report(client: &Client, scope: &Scope, collected_at: &str) -> Result<String, PluginError> {
    let tenants: Api<AnalyticsTenant> = Api::all(client.clone());
    let tenant = tenants.get_opt(&scope.tenant).await?.ok_or_else(|| {
        PluginError::NotFound(format!(
            "AnalyticsTenant {:?} does not exist (kubectl get tenants)",
            scope.tenant
        ))
    })?;
    let namespace = scope
        .namespace
        .clone()
        .or_else(|| workload_namespace(&tenant))
        .unwrap_or_else(|| scope.operator_namespace.clone());
    let mut docs: Vec<Value> = vec![json!({
        "kind": "SightlineSupportBundle",
        "tenant": scope.tenant,
        "namespace": namespace,
        "collectedAt": collected_at,
        "redacted": "Secrets by metadata only; kubectl's last-applied annotations and field-manager bookkeeping removed",
    })];
    docs.push(serde_json::to_value(&tenant).map_err(yaml_error)?);
    let selector = format!("app.kubernetes.io/instance={}", scope.tenant);
    let mut problems = Vec::new();
    macro_rules! collect {
        ($($kind:ty),*) => {$(
            match list::<$kind>(client, &namespace, &selector).await {
                Ok(items) => docs.extend(items),
                Err(e) => problems.push(format!("{}: {e}", <$kind as k8s_openapi::Resource>::KIND)),
            }
        )*};
    }
    collect!(
        ConfigMap,
        Deployment,
        StatefulSet,
        Service,
        PodDisruptionBudget,
        HorizontalPodAutoscaler,
        Pod
    );
    // Secrets: names, labels and annotations only.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    match secrets
        .list_metadata(&ListParams::default().labels(&format!("app.kubernetes.io/managed-by={}", crate::FIELD_MANAGER)))
        .await
    {
        Ok(list) => {
            for s in list.items {
                let mut meta = serde_json::to_value(&s.metadata).map_err(yaml_error)?;
                if let Some(m) = meta.as_object_mut() {
                    m.remove("managedFields");
                }
                docs.push(json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta}));
            }
        }
        Err(e) => problems.push(format!("Secret: {e}")),
    }
    // Events about the tenant (in `default`, as for every cluster-scoped object) and about
    // its objects.
    let mut namespaces = vec!["default"];
    if namespace != "default" {
        namespaces.push(namespace.as_str());
    }
    for ns in namespaces {
        let events: Api<Event> = Api::namespaced(client.clone(), ns);
        match events.list(&ListParams::default()).await {
            Ok(list) => docs.extend(
                list.items
                    .into_iter()
                    .filter(|e| {
                        e.regarding
                            .as_ref()
                            .and_then(|r| r.name.as_deref())
                            .is_some_and(|n| n == scope.tenant || n.starts_with(&format!("{}-", scope.tenant)))
                    })
                    .filter_map(|e| serde_json::to_value(e).ok()),
            ),
            Err(e) => problems.push(format!("Events in {ns}: {e}")),
        }
    }
    // The operator's logs.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &scope.operator_namespace);
    match pods.list(&ListParams::default().labels(&scope.operator_selector)).await {
        Ok(list) => {
            for pod in list.items {
                let name = pod.metadata.name.clone().unwrap_or_default();
                let params = LogParams {
                    tail_lines: Some(scope.log_lines),
                    ..LogParams::default()
                };
                match pods.logs(&name, &params).await {
                    Ok(text) => docs.push(
                        json!({"kind": "OperatorLog", "pod": name, "namespace": scope.operator_namespace, "log": text}),
                    ),
                    Err(e) => problems.push(format!("logs of {name}: {e}")),
                }
            }
        }
        Err(e) => problems.push(format!("operator pods ({}): {e}", scope.operator_selector)),
    }
    if !problems.is_empty() {
        docs[0]["notCollected"] = json!(problems);
    }
    let mut out = String::new();
    for mut doc in docs {
        redact(&mut doc);
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&doc)?);
    }
    Ok(out)
}

/// Lists one kind in the namespace by label selector, as JSON with its kind.
async fn list<K>(client: &Client, namespace: &str, selector: &str) -> Result<Vec<Value>, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let items = api.list(&ListParams::default().labels(selector)).await?.items;
    Ok(items.iter().filter_map(|o| crate::build::typed(o).ok()).collect())
}

fn yaml_error(e: serde_json::Error) -> PluginError {
    PluginError::Refused(format!("an object could not be written out: {e}"))
}

/// Removes what must never leave the cluster, and noise: a Secret's `data` and
/// `stringData`, the last-applied annotation, `managedFields`.
pub fn redact(doc: &mut Value) {
    if doc["kind"] == "Secret" {
        if let Some(m) = doc.as_object_mut() {
            m.remove("data");
            m.remove("stringData");
        }
    }
    if let Some(meta) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("managedFields");
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove(LAST_APPLIED);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_lose_their_data_and_every_object_its_last_applied_copy() {
        let mut secret = json!({"kind": "Secret", "data": {"secret": "c2VjcmV0"}, "stringData": {"x": "y"},
            "metadata": {"name": "s", "annotations": {LAST_APPLIED: "{\"data\":{\"secret\":\"c2VjcmV0\"}}", "keep": "1"},
                         "managedFields": [{}]}});
        redact(&mut secret);
        let text = secret.to_string();
        assert!(
            !text.contains("c2VjcmV0") && !text.contains("stringData") && !text.contains("managedFields"),
            "{text}"
        );
        assert_eq!(secret["metadata"]["annotations"]["keep"], "1");
    }
}
