//! How clients reach the brokers: TLS (with a client certificate for mTLS) and SASL (PLAIN,
//! SCRAM-SHA-256, SCRAM-SHA-512). Every role reads it from its environment at start
//! (`Security::from_env`), so a cluster's pods get it the way they get the brokers; a bad
//! setting stops the role at start with an error naming the variable.
//!
//! The same settings drive librdkafka (`Security::apply`: its `security.protocol`,
//! `sasl.*` and `ssl.*` properties) and the raw Kafka requests of `membership`
//! (`Security::tls_connector`, on the OpenSSL librdkafka links, so both accept the same
//! files and the same broker certificates).

use std::fmt;
use std::path::{Path, PathBuf};

use openssl::pkey::PKey;
use openssl::ssl::{SslConnector, SslMethod};
use openssl::x509::X509;

/// `security.protocol`: whether the connection is TLS, and whether it authenticates with
/// SASL (librdkafka's names).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Protocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [
        Protocol::Plaintext,
        Protocol::Ssl,
        Protocol::SaslPlaintext,
        Protocol::SaslSsl,
    ];

    /// librdkafka's spelling: `plaintext`, `ssl`, `sasl_plaintext`, `sasl_ssl`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Plaintext => "plaintext",
            Protocol::Ssl => "ssl",
            Protocol::SaslPlaintext => "sasl_plaintext",
            Protocol::SaslSsl => "sasl_ssl",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, Protocol::Ssl | Protocol::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(self, Protocol::SaslPlaintext | Protocol::SaslSsl)
    }

    /// Case-insensitive, as librdkafka reads it.
    pub fn parse(value: &str) -> Option<Protocol> {
        Protocol::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(value))
    }
}

/// The SASL mechanisms this build speaks (GSSAPI and OAUTHBEARER are not built).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub const ALL: [Mechanism; 3] = [Mechanism::Plain, Mechanism::ScramSha256, Mechanism::ScramSha512];

    /// The IANA name: `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }

    /// Case-insensitive.
    pub fn parse(value: &str) -> Option<Mechanism> {
        Mechanism::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(value))
    }
}

/// SASL credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Sasl {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Sasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The client's own certificate and key, for brokers that authenticate clients by TLS (mTLS).
#[derive(Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// PEM: the certificate, then any intermediates.
    pub cert_file: PathBuf,
    /// PEM: its private key (PKCS#8 or the traditional form; encrypted with `key_password`).
    pub key_file: PathBuf,
    pub key_password: Option<String>,
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("key_password", &self.key_password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The TLS and SASL settings of every Kafka client (see the module comment).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Security {
    pub protocol: Protocol,
    /// Present exactly when `protocol` is `sasl_*`.
    pub sasl: Option<Sasl>,
    /// PEM CAs that sign the brokers' certificates; without it (with TLS) the system's CA
    /// certificates, wherever OpenSSL's usual places have them (librdkafka's `probe`).
    pub ca_file: Option<PathBuf>,
    /// Only with TLS.
    pub client_certificate: Option<ClientCertificate>,
}

/// A setting that cannot work: which variable, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct SecurityError {
    pub variable: &'static str,
    pub message: String,
}

fn error(variable: &'static str, message: impl Into<String>) -> SecurityError {
    SecurityError {
        variable,
        message: message.into(),
    }
}

impl Security {
    pub const PROTOCOL_ENV: &'static str = "SIGHTLINE_KAFKA_SECURITY_PROTOCOL";
    pub const SASL_MECHANISM_ENV: &'static str = "SIGHTLINE_KAFKA_SASL_MECHANISM";
    pub const SASL_USERNAME_ENV: &'static str = "SIGHTLINE_KAFKA_SASL_USERNAME";
    pub const SASL_PASSWORD_ENV: &'static str = "SIGHTLINE_KAFKA_SASL_PASSWORD";
    pub const CA_FILE_ENV: &'static str = "SIGHTLINE_KAFKA_CA_FILE";
    pub const CERT_FILE_ENV: &'static str = "SIGHTLINE_KAFKA_CERT_FILE";
    pub const KEY_FILE_ENV: &'static str = "SIGHTLINE_KAFKA_KEY_FILE";
    pub const KEY_PASSWORD_ENV: &'static str = "SIGHTLINE_KAFKA_KEY_PASSWORD";

    /// The settings of this process's environment (an empty variable counts as unset),
    /// checked as `from_vars` says.
    pub fn from_env() -> Result<Self, SecurityError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// The settings `var` gives for the `*_ENV` names, checked: the protocol and mechanism
    /// are ones this build speaks; SASL protocols have a mechanism, a username and a
    /// password, other protocols none of them; the files are only given with TLS, readable,
    /// and hold what they should (certificates, a key that opens with the password and
    /// belongs to the certificate). The error names the variable.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, SecurityError> {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        let protocol = match var(Self::PROTOCOL_ENV) {
            None => Protocol::Plaintext,
            Some(value) => Protocol::parse(&value).ok_or_else(|| {
                error(
                    Self::PROTOCOL_ENV,
                    format!("{value:?} is not a security protocol: plaintext, ssl, sasl_plaintext or sasl_ssl"),
                )
            })?,
        };
        let sasl_vars = [
            Self::SASL_MECHANISM_ENV,
            Self::SASL_USERNAME_ENV,
            Self::SASL_PASSWORD_ENV,
        ];
        let sasl = if protocol.sasl() {
            let required = |name: &'static str| {
                var(name).ok_or_else(|| {
                    error(
                        name,
                        format!("required with {}={}", Self::PROTOCOL_ENV, protocol.as_str()),
                    )
                })
            };
            let mechanism = required(Self::SASL_MECHANISM_ENV)?;
            let mechanism = Mechanism::parse(&mechanism).ok_or_else(|| {
                error(
                    Self::SASL_MECHANISM_ENV,
                    format!("{mechanism:?} is not a SASL mechanism this build speaks: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"),
                )
            })?;
            Some(Sasl {
                mechanism,
                username: required(Self::SASL_USERNAME_ENV)?,
                password: required(Self::SASL_PASSWORD_ENV)?,
            })
        } else {
            if let Some(name) = sasl_vars.into_iter().find(|name| var(name).is_some()) {
                return Err(error(
                    name,
                    format!(
                        "set, but {}={} does not authenticate with SASL (sasl_plaintext or sasl_ssl does)",
                        Self::PROTOCOL_ENV,
                        protocol.as_str()
                    ),
                ));
            }
            None
        };
        let tls_vars = [
            Self::CA_FILE_ENV,
            Self::CERT_FILE_ENV,
            Self::KEY_FILE_ENV,
            Self::KEY_PASSWORD_ENV,
        ];
        if !protocol.tls() {
            if let Some(name) = tls_vars.into_iter().find(|name| var(name).is_some()) {
                return Err(error(
                    name,
                    format!(
                        "set, but {}={} is not TLS (ssl or sasl_ssl is)",
                        Self::PROTOCOL_ENV,
                        protocol.as_str()
                    ),
                ));
            }
        }
        let client_certificate = match (var(Self::CERT_FILE_ENV), var(Self::KEY_FILE_ENV)) {
            (None, None) => {
                if var(Self::KEY_PASSWORD_ENV).is_some() {
                    return Err(error(
                        Self::KEY_PASSWORD_ENV,
                        format!("set without {}", Self::KEY_FILE_ENV),
                    ));
                }
                None
            }
            (Some(_), None) => {
                return Err(error(
                    Self::KEY_FILE_ENV,
                    format!("required with {} (the certificate's private key)", Self::CERT_FILE_ENV),
                ))
            }
            (None, Some(_)) => {
                return Err(error(
                    Self::CERT_FILE_ENV,
                    format!("required with {} (the key's certificate)", Self::KEY_FILE_ENV),
                ))
            }
            (Some(cert), Some(key)) => Some(ClientCertificate {
                cert_file: cert.into(),
                key_file: key.into(),
                key_password: var(Self::KEY_PASSWORD_ENV),
            }),
        };
        let security = Security {
            protocol,
            sasl,
            ca_file: var(Self::CA_FILE_ENV).map(PathBuf::from),
            client_certificate,
        };
        if protocol.tls() {
            // Reads every file once now, so a bad one stops the role at start.
            security.tls_connector()?;
        }
        Ok(security)
    }

    /// The librdkafka properties of these settings.
    pub fn apply(&self, config: &mut rdkafka::ClientConfig) {
        config.set("security.protocol", self.protocol.as_str());
        if let Some(sasl) = &self.sasl {
            config
                .set("sasl.mechanism", sasl.mechanism.as_str())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", &sasl.password);
        }
        if self.protocol.tls() {
            // `probe`: the system's CA certificates from the usual places. librdkafka's
            // default is OpenSSL's compiled-in directory, which images without the `openssl`
            // package (distroless) do not have.
            let ca = self.ca_file.as_deref().map_or("probe".into(), path_str);
            config.set("ssl.ca.location", ca);
            if let Some(client) = &self.client_certificate {
                config
                    .set("ssl.certificate.location", path_str(&client.cert_file))
                    .set("ssl.key.location", path_str(&client.key_file));
                if let Some(password) = &client.key_password {
                    config.set("ssl.key.password", password);
                }
            }
        }
    }

    /// An OpenSSL client context as librdkafka makes one from these settings: the CAs of
    /// `ca_file` (or the system's), the client certificate and key, broker host names
    /// verified. Errors name the variable whose file is wrong.
    pub fn tls_connector(&self) -> Result<SslConnector, SecurityError> {
        let mut builder = SslConnector::builder(SslMethod::tls_client())
            .map_err(|e| error(Self::PROTOCOL_ENV, format!("OpenSSL: {e}")))?;
        match &self.ca_file {
            Some(path) => {
                let pem = read(Self::CA_FILE_ENV, path)?;
                let certificates = X509::stack_from_pem(&pem).map_err(|e| {
                    error(
                        Self::CA_FILE_ENV,
                        format!("{}: not PEM certificates: {e}", path.display()),
                    )
                })?;
                if certificates.is_empty() {
                    return Err(error(
                        Self::CA_FILE_ENV,
                        format!("{}: holds no PEM certificate", path.display()),
                    ));
                }
                builder
                    .set_ca_file(path)
                    .map_err(|e| error(Self::CA_FILE_ENV, format!("{}: {e}", path.display())))?;
            }
            None => {
                let found = openssl_probe::probe();
                if let Some(file) = found.cert_file {
                    builder
                        .set_ca_file(&file)
                        .map_err(|e| error(Self::CA_FILE_ENV, format!("unset, and {}: {e}", file.display())))?;
                }
            }
        }
        if let Some(client) = &self.client_certificate {
            let chain = read(Self::CERT_FILE_ENV, &client.cert_file)?;
            let chain = X509::stack_from_pem(&chain).map_err(|e| {
                error(
                    Self::CERT_FILE_ENV,
                    format!("{}: not PEM certificates: {e}", client.cert_file.display()),
                )
            })?;
            let mut chain = chain.into_iter();
            let leaf = chain.next().ok_or_else(|| {
                error(
                    Self::CERT_FILE_ENV,
                    format!("{}: holds no PEM certificate", client.cert_file.display()),
                )
            })?;
            let key = read(Self::KEY_FILE_ENV, &client.key_file)?;
            let key = match &client.key_password {
                Some(password) => PKey::private_key_from_pem_passphrase(&key, password.as_bytes()),
                None => PKey::private_key_from_pem(&key),
            }
            .map_err(|e| {
                let hint = if client.key_password.is_some() {
                    format!(" (or {} does not open it)", Self::KEY_PASSWORD_ENV)
                } else {
                    format!(" (an encrypted key needs {})", Self::KEY_PASSWORD_ENV)
                };
                error(
                    Self::KEY_FILE_ENV,
                    format!("{}: not a PEM private key{hint}: {e}", client.key_file.display()),
                )
            })?;
            let matches = leaf.public_key().map(|public| public.public_eq(&key)).unwrap_or(false);
            if !matches {
                return Err(error(
                    Self::KEY_FILE_ENV,
                    format!(
                        "{}: not the private key of the certificate in {} ({})",
                        client.key_file.display(),
                        Self::CERT_FILE_ENV,
                        client.cert_file.display()
                    ),
                ));
            }
            let wrong = |e: openssl::error::ErrorStack| {
                error(Self::CERT_FILE_ENV, format!("{}: {e}", client.cert_file.display()))
            };
            builder.set_certificate(&leaf).map_err(wrong)?;
            for intermediate in chain {
                builder.add_extra_chain_cert(intermediate).map_err(wrong)?;
            }
            builder
                .set_private_key(&key)
                .map_err(|e| error(Self::KEY_FILE_ENV, format!("{}: {e}", client.key_file.display())))?;
        }
        Ok(builder.build())
    }
}

fn read(variable: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|e| error(variable, format!("{}: {e}", path.display())))
}

fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Security, SecurityError> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Security::from_vars(|name| vars.get(name).cloned())
    }

    /// A CA, a client certificate it signed and its key, and another key, as PEM files.
    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            let dir = tempfile::tempdir().unwrap();
            let ca_key = rcgen::KeyPair::generate().unwrap();
            let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
            let key = rcgen::KeyPair::generate().unwrap();
            let cert = rcgen::CertificateParams::new(Vec::<String>::new())
                .unwrap()
                .signed_by(&key, &ca)
                .unwrap();
            let other = rcgen::KeyPair::generate().unwrap();
            for (name, text) in [
                ("ca.pem", ca.pem()),
                ("client.pem", cert.pem()),
                ("client.key", key.serialize_pem()),
                ("other.key", other.serialize_pem()),
                ("not.pem", "not a certificate".to_string()),
            ] {
                std::fs::write(dir.path().join(name), text).unwrap();
            }
            Files { dir }
        }

        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).to_string_lossy().into_owned()
        }
    }

    #[test]
    fn nothing_set_is_plaintext_and_empty_variables_count_as_unset() {
        assert_eq!(from(&[]).unwrap(), Security::default());
        assert_eq!(
            from(&[(Security::PROTOCOL_ENV, ""), (Security::CA_FILE_ENV, "")]).unwrap(),
            Security::default()
        );
        assert_eq!(
            from(&[(Security::PROTOCOL_ENV, "PLAINTEXT")]).unwrap(),
            Security::default()
        );
    }

    #[test]
    fn protocols_and_mechanisms_are_the_ones_this_build_speaks() {
        let e = from(&[(Security::PROTOCOL_ENV, "tls")]).unwrap_err();
        assert_eq!(e.variable, Security::PROTOCOL_ENV);
        assert!(
            e.to_string().contains("plaintext, ssl, sasl_plaintext or sasl_ssl"),
            "{e}"
        );
        let sasl = |mechanism: &str| {
            from(&[
                (Security::PROTOCOL_ENV, "SASL_PLAINTEXT"),
                (Security::SASL_MECHANISM_ENV, mechanism),
                (Security::SASL_USERNAME_ENV, "u"),
                (Security::SASL_PASSWORD_ENV, "p"),
            ])
        };
        let s = sasl("scram-sha-256").unwrap();
        assert_eq!(s.protocol, Protocol::SaslPlaintext);
        assert_eq!(s.sasl.unwrap().mechanism, Mechanism::ScramSha256);
        assert_eq!(sasl("PLAIN").unwrap().sasl.unwrap().mechanism, Mechanism::Plain);
        let e = sasl("GSSAPI").unwrap_err();
        assert_eq!(e.variable, Security::SASL_MECHANISM_ENV);
        assert!(e.to_string().contains("PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"), "{e}");
    }

    #[test]
    fn sasl_needs_its_three_settings_and_only_sasl_takes_them() {
        let e = from(&[
            (Security::PROTOCOL_ENV, "sasl_ssl"),
            (Security::SASL_MECHANISM_ENV, "SCRAM-SHA-512"),
            (Security::SASL_USERNAME_ENV, "u"),
        ])
        .unwrap_err();
        assert_eq!(e.variable, Security::SASL_PASSWORD_ENV);
        assert_eq!(
            e.to_string(),
            "SIGHTLINE_KAFKA_SASL_PASSWORD: required with SIGHTLINE_KAFKA_SECURITY_PROTOCOL=sasl_ssl"
        );
        let e = from(&[(Security::SASL_USERNAME_ENV, "u")]).unwrap_err();
        assert_eq!(e.variable, Security::SASL_USERNAME_ENV);
        assert!(e.to_string().contains("does not authenticate with SASL"), "{e}");
        // The password never shows in a debug print.
        let s = from(&[
            (Security::PROTOCOL_ENV, "sasl_plaintext"),
            (Security::SASL_MECHANISM_ENV, "PLAIN"),
            (Security::SASL_USERNAME_ENV, "u"),
            (Security::SASL_PASSWORD_ENV, "hunter2"),
        ])
        .unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }

    #[test]
    fn tls_files_are_read_at_once_and_a_bad_one_is_named() {
        let f = Files::new();
        let s = from(&[
            (Security::PROTOCOL_ENV, "ssl"),
            (Security::CA_FILE_ENV, &f.path("ca.pem")),
        ])
        .unwrap();
        assert_eq!(s.ca_file.as_deref(), Some(Path::new(&f.path("ca.pem"))));
        // Without a CA file: the system's.
        assert_eq!(from(&[(Security::PROTOCOL_ENV, "ssl")]).unwrap().ca_file, None);
        for (vars, variable, says) in [
            (
                vec![(Security::CA_FILE_ENV, "/nonexistent/ca.pem".to_string())],
                Security::CA_FILE_ENV,
                "/nonexistent/ca.pem: No such file",
            ),
            (
                vec![(Security::CA_FILE_ENV, f.path("not.pem"))],
                Security::CA_FILE_ENV,
                "holds no PEM certificate",
            ),
            (
                vec![(Security::CERT_FILE_ENV, f.path("client.pem"))],
                Security::KEY_FILE_ENV,
                "required with SIGHTLINE_KAFKA_CERT_FILE",
            ),
            (
                vec![(Security::KEY_FILE_ENV, f.path("client.key"))],
                Security::CERT_FILE_ENV,
                "required with SIGHTLINE_KAFKA_KEY_FILE",
            ),
            (
                vec![
                    (Security::CERT_FILE_ENV, f.path("client.pem")),
                    (Security::KEY_FILE_ENV, f.path("other.key")),
                ],
                Security::KEY_FILE_ENV,
                "not the private key of the certificate in SIGHTLINE_KAFKA_CERT_FILE",
            ),
            (
                vec![
                    (Security::CERT_FILE_ENV, f.path("client.pem")),
                    (Security::KEY_FILE_ENV, f.path("not.pem")),
                ],
                Security::KEY_FILE_ENV,
                "not a PEM private key (an encrypted key needs SIGHTLINE_KAFKA_KEY_PASSWORD)",
            ),
            (
                vec![(Security::KEY_PASSWORD_ENV, "pw".to_string())],
                Security::KEY_PASSWORD_ENV,
                "set without SIGHTLINE_KAFKA_KEY_FILE",
            ),
        ] {
            let mut all: Vec<(&str, &str)> = vec![(Security::PROTOCOL_ENV, "ssl")];
            all.extend(vars.iter().map(|(k, v)| (*k, v.as_str())));
            let e = from(&all).unwrap_err();
            assert_eq!(e.variable, variable, "{e}");
            assert!(e.to_string().contains(says), "{e}");
        }
        let s = from(&[
            (Security::PROTOCOL_ENV, "ssl"),
            (Security::CERT_FILE_ENV, &f.path("client.pem")),
            (Security::KEY_FILE_ENV, &f.path("client.key")),
        ])
        .unwrap();
        assert!(s.client_certificate.is_some());
        // TLS files with a protocol that is not TLS would be ignored: refused instead.
        let e = from(&[
            (Security::PROTOCOL_ENV, "sasl_plaintext"),
            (Security::SASL_MECHANISM_ENV, "PLAIN"),
            (Security::SASL_USERNAME_ENV, "u"),
            (Security::SASL_PASSWORD_ENV, "p"),
            (Security::CA_FILE_ENV, &f.path("ca.pem")),
        ])
        .unwrap_err();
        assert_eq!(e.variable, Security::CA_FILE_ENV);
        assert!(e.to_string().contains("sasl_plaintext is not TLS"), "{e}");
    }
}
