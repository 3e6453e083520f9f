//! The master secret and the per-tenant keys derived from it. Tokens and visitor ids are
//! keyed by the tenant key, so rotating the master secret invalidates both.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::{Error, Result};

pub const SECRET_ENV: &str = "SIGHTLINE_SECRET";
const SECRET_FILE: &str = "secret.key";

#[derive(Clone)]
pub struct MasterSecret(Vec<u8>);

impl std::fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterSecret(..)")
    }
}

impl MasterSecret {
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        if bytes.len() < 16 {
            return Err(Error::Secret("the secret must be at least 16 bytes".into()));
        }
        Ok(Self(bytes))
    }

    /// `$SIGHTLINE_SECRET` when set; else `<data>/secret.key`, created (mode 0600) with 32
    /// random bytes on first run.
    pub fn load_or_create(data_dir: &Path) -> Result<Self> {
        if let Ok(value) = std::env::var(SECRET_ENV) {
            return Self::from_bytes(value.into_bytes());
        }
        let path = data_dir.join(SECRET_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let bytes = STANDARD
                    .decode(text.trim())
                    .map_err(|e| Error::Secret(format!("{}: not base64: {e}", path.display())))?;
                Self::from_bytes(bytes)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir)?;
                let mut bytes = vec![0u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)?;
                file.write_all(STANDARD.encode(&bytes).as_bytes())?;
                file.sync_all()?;
                Ok(Self(bytes))
            }
            Err(e) => Err(Error::Secret(format!("{}: {e}", path.display()))),
        }
    }

    /// The key of one tenant: HMAC(master, "tenant:" + name).
    pub fn tenant_key(&self, tenant: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(b"tenant:");
        mac.update(tenant.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_with_mode_0600_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        // The env var would take precedence; this test runs without it.
        if std::env::var(SECRET_ENV).is_ok() {
            return;
        }
        let a = MasterSecret::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let b = MasterSecret::load_or_create(dir.path()).unwrap();
        assert_eq!(a.tenant_key("acme"), b.tenant_key("acme"));
        assert_ne!(a.tenant_key("acme"), a.tenant_key("other"));
    }
}
