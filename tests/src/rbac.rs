//! The operator's RBAC as installed, and whether it allows a request. The rules come from
//! `manifests/install.yaml` (the chart rendered with its defaults; scripts/check-packaging.sh
//! fails when the two differ). `kube_api::ApiServer` checks every request the operator makes
//! in the mocked-API tests against them, so an API call added without its rule in
//! `charts/sightline/templates/rbac.yaml` fails there rather than in a cluster.
//!
//! Authorization follows Kubernetes' request attributes: GET of a name is `get`, of a
//! collection `list` (`watch` with `watch=true`), POST `create`, PUT `update`, PATCH
//! `patch`, DELETE `delete`; a server-side apply of an object (not of a subresource) may
//! create it, which the API server authorizes as `create` too. The ClusterRole's rules hold
//! in every namespace; the Role's only in the operator's own, which the tests name as they
//! like, so a Role rule matches any namespaced request. Rules with `resourceNames` match
//! only requests naming one of them (never a create, which names none in its path).

use std::path::Path;
use std::sync::OnceLock;

use http::Method;
use serde::Deserialize;
use serde_yaml::Value;

/// One rule of a ClusterRole or Role.
#[derive(Clone, Debug)]
pub struct Rule {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
    pub resource_names: Vec<String>,
    /// From a Role: holds only for namespaced requests.
    pub namespaced: bool,
}

/// What the API server authorizes a request as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    pub verb: &'static str,
    pub group: String,
    /// `resource` or `resource/subresource`.
    pub resource: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl std::fmt::Display for Attributes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() { "core" } else { &self.group };
        write!(f, "{} {} ({group})", self.verb, self.resource)?;
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        if let Some(ns) = &self.namespace {
            write!(f, " in namespace {ns}")?;
        }
        Ok(())
    }
}

/// The attributes of a request (one, or two for a server-side apply that may create).
/// `None` for paths that are no resource (discovery, /version).
pub fn attributes(method: &Method, path: &str, query: &str) -> Option<Vec<Attributes>> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => (String::new(), rest),
        ["apis", group, _version, rest @ ..] => (group.to_string(), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    let (resource, name, subresource) = match rest {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(name.to_string()), None),
        [resource, name, sub] => (*resource, Some(name.to_string()), Some(*sub)),
        _ => return None,
    };
    let watch = query.split('&').any(|p| p == "watch=true" || p == "watch=1");
    let verb = match (method.clone(), &name) {
        (Method::GET, Some(_)) => "get",
        (Method::GET, None) if watch => "watch",
        (Method::GET, None) => "list",
        (Method::POST, _) => "create",
        (Method::PUT, _) => "update",
        (Method::PATCH, _) => "patch",
        (Method::DELETE, Some(_)) => "delete",
        (Method::DELETE, None) => "deletecollection",
        _ => return None,
    };
    let resource = match subresource {
        Some(sub) => format!("{resource}/{sub}"),
        None => resource.to_string(),
    };
    let one = |verb: &'static str, name: Option<String>| Attributes {
        verb,
        group: group.clone(),
        resource: resource.clone(),
        namespace: namespace.clone(),
        name,
    };
    let mut all = vec![one(verb, name.clone())];
    let apply = verb == "patch" && query.split('&').any(|p| p.starts_with("fieldManager="));
    if apply && subresource.is_none() {
        all.push(one("create", None));
    }
    Some(all)
}

impl Rule {
    fn allows(&self, a: &Attributes) -> bool {
        let has = |list: &[String], value: &str| list.iter().any(|v| v == "*" || v == value);
        (!self.namespaced || a.namespace.is_some())
            && has(&self.api_groups, &a.group)
            && has(&self.resources, &a.resource)
            && has(&self.verbs, a.verb)
            && (self.resource_names.is_empty() || a.name.as_ref().is_some_and(|n| self.resource_names.contains(n)))
    }
}

/// The rules of every ClusterRole and Role in a bundle.
#[derive(Clone, Debug)]
pub struct Rbac {
    pub rules: Vec<Rule>,
}

impl Rbac {
    /// Reads the ClusterRoles and Roles of a multi-document YAML file.
    pub fn from_bundle(text: &str) -> Result<Rbac, String> {
        let strings = |v: &Value, key: &str| -> Vec<String> {
            v.get(key)
                .and_then(Value::as_sequence)
                .map(|s| s.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        };
        let mut rules = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(text) {
            let doc = Value::deserialize(doc).map_err(|e| e.to_string())?;
            let namespaced = match doc.get("kind").and_then(Value::as_str) {
                Some("ClusterRole") => false,
                Some("Role") => true,
                _ => continue,
            };
            for rule in doc.get("rules").and_then(Value::as_sequence).into_iter().flatten() {
                rules.push(Rule {
                    api_groups: strings(rule, "apiGroups"),
                    resources: strings(rule, "resources"),
                    verbs: strings(rule, "verbs"),
                    resource_names: strings(rule, "resourceNames"),
                    namespaced,
                });
            }
        }
        if rules.is_empty() {
            return Err("no ClusterRole or Role rules".into());
        }
        Ok(Rbac { rules })
    }

    /// The operator's RBAC from manifests/install.yaml, read once.
    pub fn installed() -> &'static Rbac {
        static RBAC: OnceLock<Rbac> = OnceLock::new();
        RBAC.get_or_init(|| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/install.yaml");
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            Rbac::from_bundle(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
    }

    pub fn allows(&self, a: &Attributes) -> bool {
        self.rules.iter().any(|r| r.allows(a))
    }

    /// `Err` names what the request needs and no rule grants.
    pub fn check(&self, method: &Method, path: &str, query: &str) -> Result<(), String> {
        let Some(needed) = attributes(method, path, query) else {
            return Ok(());
        };
        let missing: Vec<String> = needed
            .iter()
            .filter(|a| !self.allows(a))
            .map(ToString::to_string)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(missing.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUNDLE: &str = "
kind: ClusterRole
rules:
  - { apiGroups: [apps], resources: [deployments], verbs: [list, watch, create, patch] }
  - { apiGroups: [sightline.dev], resources: [analyticstenants/status], verbs: [patch] }
  - { apiGroups: [''], resources: [secrets], verbs: [get] }
---
kind: Role
rules:
  - { apiGroups: [coordination.k8s.io], resources: [leases], verbs: [create] }
  - { apiGroups: [coordination.k8s.io], resources: [leases], resourceNames: [op], verbs: [get, patch] }
---
kind: Deployment
";

    fn check(method: Method, path: &str, query: &str) -> Result<(), String> {
        Rbac::from_bundle(BUNDLE).unwrap().check(&method, path, query)
    }

    #[test]
    fn requests_map_to_the_verbs_kubernetes_authorizes() {
        let a = attributes(&Method::GET, "/apis/apps/v1/deployments", "watch=true&labelSelector=x").unwrap();
        assert_eq!(
            (a[0].verb, a[0].resource.as_str(), a[0].namespace.as_ref()),
            ("watch", "deployments", None)
        );
        let a = attributes(&Method::GET, "/api/v1/namespaces/ns/secrets/s", "").unwrap();
        assert_eq!(
            (a[0].verb, a[0].group.as_str(), a[0].name.as_deref()),
            ("get", "", Some("s"))
        );
        let a = attributes(
            &Method::PATCH,
            "/apis/apps/v1/namespaces/ns/deployments/d",
            "fieldManager=op&force=true",
        )
        .unwrap();
        assert_eq!(a.iter().map(|a| a.verb).collect::<Vec<_>>(), ["patch", "create"]);
        let a = attributes(
            &Method::PATCH,
            "/apis/sightline.dev/v1alpha1/analyticstenants/t/status",
            "fieldManager=op&force=true",
        )
        .unwrap();
        assert_eq!(a.len(), 1, "a status apply creates nothing");
        assert_eq!(a[0].resource, "analyticstenants/status");
        assert!(attributes(&Method::GET, "/version", "").is_none());
    }

    #[test]
    fn only_granted_requests_pass() {
        assert!(check(Method::GET, "/apis/apps/v1/deployments", "watch=true").is_ok());
        assert!(check(
            Method::PATCH,
            "/apis/apps/v1/namespaces/ns/deployments/d",
            "fieldManager=op"
        )
        .is_ok());
        let e = check(Method::DELETE, "/apis/apps/v1/namespaces/ns/deployments/d", "").unwrap_err();
        assert_eq!(e, "delete deployments (apps) \"d\" in namespace ns");
        assert!(check(Method::GET, "/api/v1/secrets", "").is_err(), "list of secrets");
        assert!(check(
            Method::PATCH,
            "/apis/sightline.dev/v1alpha1/analyticstenants/t/status",
            ""
        )
        .is_ok());
        assert!(check(Method::PATCH, "/apis/sightline.dev/v1alpha1/analyticstenants/t", "").is_err());
        // The Role: its namespace only, and names where it lists them.
        assert!(check(Method::POST, "/apis/coordination.k8s.io/v1/namespaces/x/leases", "").is_ok());
        assert!(check(Method::GET, "/apis/coordination.k8s.io/v1/namespaces/x/leases/op", "").is_ok());
        assert!(check(
            Method::GET,
            "/apis/coordination.k8s.io/v1/namespaces/x/leases/other",
            ""
        )
        .is_err());
        assert!(check(Method::GET, "/apis/coordination.k8s.io/v1/leases", "").is_err());
    }
}
