//! Kafka over TLS and SASL for tests: a test CA with broker and client certificates made at
//! run time (rcgen), a TLS-terminating proxy in front of a broker (tokio-rustls: another TLS
//! implementation than the clients' OpenSSL), and SCRAM users on a Tansu broker that
//! requires SASL.
//!
//! Neither test broker serves TLS itself: noida-db's Kafka speaks plaintext only, and Tansu
//! 0.6 takes `--cert`/`--key` but never wraps its connections in TLS. So TLS ends at the
//! proxy, which forwards each connection's bytes to the broker, and the broker advertises the
//! proxy's address in its metadata (Tansu's `--advertised-listener-url`), so that every
//! connection a client makes, bootstrap or not, goes through TLS.
//!
//! Tansu 0.6 checks SASL itself (`--authentication`: SCRAM-SHA-256, SCRAM-SHA-512 and
//! OAUTHBEARER offered), but with memory storage, the only one this build has, no SCRAM user
//! can be created while it requires SASL (creating one needs an authenticated session, and
//! its users do not survive a restart): tests can show a SCRAM exchange refused, not one
//! accepted.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tokio_rustls::rustls;

/// A CA and what it signed, as PEM files in a temporary directory.
pub struct TestPki {
    dir: tempfile::TempDir,
    /// The CA's certificate: what clients trust (`SIGHTLINE_KAFKA_CA_FILE`).
    pub ca_file: PathBuf,
    /// The client certificate and key the CA signed (`SIGHTLINE_KAFKA_CERT_FILE`, `_KEY_FILE`).
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    server_der: rustls::pki_types::CertificateDer<'static>,
    server_key_der: Vec<u8>,
}

impl TestPki {
    /// A CA named `name`, a broker certificate for 127.0.0.1 and localhost, and a client
    /// certificate `CN=sightline`, all signed by it. rcgen's validity (1975 to 4096) does not
    /// depend on the clock.
    pub fn new(name: &str) -> TestPki {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, name);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key")).expect("CA");

        let server_key = KeyPair::generate().expect("broker key");
        let mut server =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).expect("params");
        server.distinguished_name.push(DnType::CommonName, "broker");
        let server_cert = server.signed_by(&server_key, &ca).expect("broker certificate");

        let client_key = KeyPair::generate().expect("client key");
        let mut client = CertificateParams::new(Vec::<String>::new()).expect("params");
        client.distinguished_name.push(DnType::CommonName, "sightline");
        let client_cert = client.signed_by(&client_key, &ca).expect("client certificate");

        let write = |file: &str, text: String| {
            let path = dir.path().join(file);
            std::fs::write(&path, text).expect("write a PEM file");
            path
        };
        TestPki {
            ca_file: write("ca.pem", ca.pem()),
            client_cert_file: write("client.pem", client_cert.pem()),
            client_key_file: write("client.key", client_key.serialize_pem()),
            ca_der: ca.der().clone(),
            server_der: server_cert.der().clone(),
            server_key_der: server_key.serialize_der(),
            dir,
        }
    }

    /// A file in this PKI's directory (for tests that write bad ones).
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }
}

/// A TLS-terminating proxy on a free loopback port: it presents the broker certificate of a
/// `TestPki`, requires a client certificate that CA signed, and forwards each connection to
/// `upstream`. Stopped when dropped.
pub struct TlsProxy {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    refused: Arc<Mutex<Vec<String>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl TlsProxy {
    /// The proxy's listener, bound now so that the broker can be told its address before the
    /// proxy starts.
    pub fn bind() -> std::net::TcpListener {
        std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy")
    }

    /// Serves `listener` (from `bind`) on its own runtime until dropped.
    pub fn start(listener: std::net::TcpListener, upstream: &str, pki: &TestPki) -> TlsProxy {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca_der.clone()).expect("the test CA");
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .expect("client verifier");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(pki.server_key_der.clone().into());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![pki.server_der.clone()], key)
            .expect("server certificate");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let addr = listener.local_addr().expect("proxy address");
        listener.set_nonblocking(true).expect("nonblocking");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("proxy runtime");
        let accepted = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(Mutex::new(Vec::new()));
        let upstream = upstream.to_string();
        let (counted, noted) = (accepted.clone(), refused.clone());
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, upstream, counted, noted) =
                    (acceptor.clone(), upstream.clone(), counted.clone(), noted.clone());
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(e) => {
                            noted.lock().unwrap_or_else(|p| p.into_inner()).push(e.to_string());
                            return;
                        }
                    };
                    // The verifier admits no connection without a certificate the CA signed.
                    if tls.get_ref().1.peer_certificates().is_some_and(|c| !c.is_empty()) {
                        counted.fetch_add(1, Ordering::SeqCst);
                    }
                    if let Ok(mut broker) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
                    }
                });
            }
        });
        TlsProxy {
            addr,
            accepted,
            refused,
            runtime: Some(runtime),
        }
    }

    /// Connections whose handshake succeeded with a client certificate the CA signed.
    pub fn accepted_with_client_certificate(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Why handshakes failed, as the proxy saw it.
    pub fn refused(&self) -> Vec<String> {
        self.refused.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The environment of a client that reaches the proxy of `pki` with TLS and its client
/// certificate.
pub fn mtls_env(pki: &TestPki) -> Vec<(String, String)> {
    [
        ("SIGHTLINE_KAFKA_SECURITY_PROTOCOL", "ssl"),
        ("SIGHTLINE_KAFKA_CA_FILE", path_str(&pki.ca_file)),
        ("SIGHTLINE_KAFKA_CERT_FILE", path_str(&pki.client_cert_file)),
        ("SIGHTLINE_KAFKA_KEY_FILE", path_str(&pki.client_key_file)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temporary path")
}
