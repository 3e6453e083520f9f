//! The plugin's API client: the kubeconfig's current context, else the pod's in-cluster
//! configuration (kube's `Config::infer` order, which kubectl follows too), keeping which
//! server that is and where its URL came from, so that a failure to connect names both
//! instead of kube's `ServiceError: client error (Connect)`.

use kube::config::{InClusterError, KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};

use super::PluginError;

/// The API server the client talks to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiServer {
    /// Its URL (`https://host:port`, with a path only when the configuration names one).
    pub url: String,
    /// Where the URL came from: `the kubeconfig's current context "NAME"` or the in-cluster
    /// configuration.
    pub from: String,
}

/// A client for the kubeconfig's current context (`KUBECONFIG`, else `~/.kube/config`),
/// else for the in-cluster configuration (`KUBERNETES_SERVICE_HOST`/`_PORT` and the
/// service account's files). Nothing is sent yet. Errors (`PluginError::Config`) say why
/// neither could be used.
pub async fn connect() -> Result<(Client, ApiServer), PluginError> {
    let (mut config, from) = match from_kubeconfig().await {
        Ok(found) => found,
        Err(kubeconfig) => match Config::incluster() {
            Ok(config) => (config, "the in-cluster configuration".to_string()),
            Err(in_cluster) => {
                return Err(PluginError::Config(format!(
                    "no Kubernetes cluster to talk to: kubeconfig: {}; in-cluster: {} (set KUBECONFIG to your \
                     cluster's kubeconfig)",
                    describe_kubeconfig_error(&kubeconfig),
                    describe_in_cluster_error(&in_cluster)
                )))
            }
        },
    };
    // What `Config::infer` does too (KUBE_RS_DEBUG_* environment variables).
    config.apply_debug_overrides();
    let server = ApiServer {
        url: shown_url(&config.cluster_url.to_string()),
        from,
    };
    let client = Client::try_from(config)
        .map_err(|e| PluginError::Config(format!("Kubernetes client for {} ({}): {e}", server.url, server.from)))?;
    Ok((client, server))
}

async fn from_kubeconfig() -> Result<(Config, String), KubeconfigError> {
    let kubeconfig = Kubeconfig::read()?;
    let from = match &kubeconfig.current_context {
        Some(name) => format!("from the kubeconfig's current context {name:?}"),
        None => "from the kubeconfig's current context".to_string(),
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    Ok((config, from))
}

/// A URL as a person wrote it: `https://127.0.0.1:6443`, not the parsed `…:6443/`.
fn shown_url(url: &str) -> String {
    match url.split_once("://") {
        // The one '/' is the root path's, at the end.
        Some((_, rest)) if rest.find('/') == Some(rest.len() - 1) => url[..url.len() - 1].to_string(),
        _ => url.to_string(),
    }
}

/// kube's kubeconfig errors, with a path shown as a path (kube's own message quotes its
/// debug form: `'"/home/me/.kube/config"'`).
fn describe_kubeconfig_error(e: &KubeconfigError) -> String {
    match e {
        KubeconfigError::ReadConfig(io, path) => format!("cannot read {}: {io}", path.display()),
        KubeconfigError::FindPath => "KUBECONFIG is not set and there is no home directory for ~/.kube/config".into(),
        other => other.to_string(),
    }
}

fn describe_in_cluster_error(e: &InClusterError) -> String {
    match e {
        InClusterError::ReadEnvironmentVariable(_) => {
            "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (not in a pod)".into()
        }
        other => other.to_string(),
    }
}

impl ApiServer {
    /// `e` with a failure to connect to this server (TCP, DNS, TLS, the connect timeout)
    /// said as such: `cannot reach the Kubernetes API server at URL (FROM): WHY`. Any other
    /// error is returned as it is.
    pub fn explain(&self, e: PluginError) -> PluginError {
        match e {
            PluginError::Kube(kube) => match connect_failure(&kube) {
                Some(why) => PluginError::Unreachable(format!(
                    "cannot reach the Kubernetes API server at {} ({}): {why}",
                    self.url, self.from
                )),
                None => PluginError::Kube(kube),
            },
            other => other,
        }
    }
}

/// Why a request could not connect, when that is what `e` is: the innermost cause, an I/O
/// error by its kind (`connection refused`, `timed out`) where it has one.
fn connect_failure(e: &kube::Error) -> Option<String> {
    let kube::Error::Service(service) = e else {
        return None;
    };
    let chain: Vec<&(dyn std::error::Error + 'static)> =
        std::iter::successors(Some(service.as_ref() as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
        .collect();
    let connect = chain.iter().any(|e| {
        e.downcast_ref::<hyper_util::client::legacy::Error>()
            .is_some_and(|e| e.is_connect())
    });
    if !connect {
        return None;
    }
    let innermost = chain.last()?;
    let io = chain.iter().rev().find_map(|e| e.downcast_ref::<std::io::Error>());
    Some(match io {
        Some(io) if described_by_kind(io.kind()) => io.kind().to_string(),
        _ => innermost.to_string(),
    })
}

/// I/O error kinds whose name says all (`connection refused`); for others the error's own
/// text says more (a DNS failure, a certificate refused).
fn described_by_kind(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        kind,
        ConnectionRefused
            | ConnectionReset
            | ConnectionAborted
            | TimedOut
            | HostUnreachable
            | NetworkUnreachable
            | AddrNotAvailable
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_shown_as_written() {
        for (given, shown) in [
            ("https://127.0.0.1:1", "https://127.0.0.1:1"),
            ("https://127.0.0.1:1/", "https://127.0.0.1:1"),
            ("https://api.example:6443/", "https://api.example:6443"),
            (
                "https://proxy.example/k8s/clusters/c-1",
                "https://proxy.example/k8s/clusters/c-1",
            ),
        ] {
            assert_eq!(shown_url(given), shown, "{given}");
        }
    }

    #[test]
    fn a_missing_kubeconfig_is_named_by_its_path() {
        let e = KubeconfigError::ReadConfig(
            std::io::Error::from(std::io::ErrorKind::NotFound),
            "/home/me/.kube/config".into(),
        );
        assert_eq!(
            describe_kubeconfig_error(&e),
            "cannot read /home/me/.kube/config: entity not found"
        );
    }

    #[tokio::test]
    async fn a_server_nobody_listens_on_is_named_with_why() {
        // A port just released: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}");
        let client = Client::try_from(Config::new(url.parse().unwrap())).unwrap();
        let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
        let e = PluginError::Kube(api.get_opt("default").await.unwrap_err());
        let server = ApiServer {
            url: url.clone(),
            from: "from the kubeconfig's current context \"test\"".into(),
        };
        assert_eq!(
            server.explain(e).to_string(),
            format!(
                "cannot reach the Kubernetes API server at {url} (from the kubeconfig's current context \"test\"): \
                 connection refused"
            )
        );
        // Anything else passes through.
        let refused = PluginError::Refused("no".into());
        assert_eq!(server.explain(refused).to_string(), "no");
    }
}
