//! Object metadata every child carries: name, namespace, labels and the owner reference to
//! the tenant (so Kubernetes deletes the children with it).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::names::Role;
use crate::validate::Validated;

pub fn meta(v: &Validated, name: String, role: Option<Role>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(v.names.namespace.to_string()),
        labels: Some(v.names.labels(role)),
        owner_references: Some(vec![v.owner.clone()]),
        ..Default::default()
    }
}
