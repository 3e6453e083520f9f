//! Support for the cluster tests: a client for the current kubeconfig context and the CRD
//! installed from the operator's code.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};

/// A client for the kubeconfig's current context (e2e/run.sh points it at a kind cluster).
pub async fn client() -> Client {
    Client::try_default()
        .await
        .expect("a Kubernetes cluster in the kubeconfig (e2e/run.sh creates one with kind)")
}

/// Installs (or updates) the operator's CRDs (AnalyticsTenant, Reprocess) and waits until
/// each is served.
pub async fn install_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in sightline_operator::crds::embedded() {
        let name = crd.metadata.name.clone().expect("the CRD has a name");
        crds.patch(&name, &PatchParams::apply("sightline-e2e").force(), &Patch::Apply(&crd))
            .await
            .expect("CRD applied");
        established(&crds, &name).await;
    }
}

async fn established(crds: &Api<CustomResourceDefinition>, name: &str) {
    for _ in 0..60 {
        let got = crds.get(name).await.expect("CRD read back");
        let established = got
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        if established {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    panic!("the CRD {name} was not established within 30 s");
}
