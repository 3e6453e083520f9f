//! The master secret and the per-tenant keys derived from it. Tokens and visitor ids are
//! keyed by the tenant key, so rotating the master secret invalidates both.
//!
//! One encoding everywhere: standard base64, in `$SIGHTLINE_SECRET` as in `<data>/secret.key`,
//! of at least [`MIN_SECRET_BYTES`] bytes.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::{Error, Result};

pub const SECRET_ENV: &str = "SIGHTLINE_SECRET";
const SECRET_FILE: &str = "secret.key";

/// The shortest secret accepted, in bytes after decoding: HMAC-SHA256's full strength.
pub const MIN_SECRET_BYTES: usize = 32;

/// Fewer distinct byte values than this in a secret means it was typed, not drawn at random
/// (32 random bytes show about 30 distinct values; fewer than 16 has a probability below
/// 1e-20).
const MIN_DISTINCT_BYTES: usize = 16;

const HOW_TO_MAKE_ONE: &str = "generate one with `head -c 32 /dev/urandom | base64`";

#[derive(Clone)]
pub struct MasterSecret(Vec<u8>);

impl std::fmt::Debug for MasterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterSecret(..)")
    }
}

/// Creates `dir` (and its parents) readable by the owner only, as data directories hold the
/// secret and the events; an existing directory is left as it is.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

impl MasterSecret {
    /// A secret from its raw bytes: at least [`MIN_SECRET_BYTES`] of them, not a repeated
    /// pattern.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(Error::Secret(format!(
                "the secret is {} bytes; at least {MIN_SECRET_BYTES} are needed ({HOW_TO_MAKE_ONE})",
                bytes.len()
            )));
        }
        if bytes.iter().collect::<HashSet<_>>().len() < MIN_DISTINCT_BYTES {
            return Err(Error::Secret(format!(
                "the secret repeats a few byte values; it must be random ({HOW_TO_MAKE_ONE})"
            )));
        }
        Ok(Self(bytes))
    }

    /// A secret from its base64 text (surrounding whitespace ignored); `origin` names where the
    /// text came from in errors.
    pub fn from_base64(text: &str, origin: &str) -> Result<Self> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|e| Error::Secret(format!("{origin}: not base64 ({e}); {HOW_TO_MAKE_ONE}")))?;
        Self::from_bytes(bytes).map_err(|e| match e {
            Error::Secret(m) => Error::Secret(format!("{origin}: {m}")),
            other => other,
        })
    }

    /// `$SIGHTLINE_SECRET` (base64) when set; else `<data>/secret.key`. Refuses to start
    /// without one: the distributed roles (collector, query) share the tenant's secret, and a
    /// secret made up by one pod would fail every token across pods and give each pod its
    /// own visitor ids.
    pub fn load(data_dir: &Path) -> Result<Self> {
        match Self::load_existing(data_dir)? {
            Some(secret) => Ok(secret),
            None => Err(Error::Secret(format!(
                "no secret: set {SECRET_ENV} (in a cluster, from the tenant's signing Secret) or provide {}; only standalone creates one",
                data_dir.join(SECRET_FILE).display()
            ))),
        }
    }

    /// `$SIGHTLINE_SECRET` or `<data>/secret.key` if either exists. A secret file that others
    /// may read is refused, not used.
    fn load_existing(data_dir: &Path) -> Result<Option<Self>> {
        if let Ok(value) = std::env::var(SECRET_ENV) {
            return Self::from_base64(&value, SECRET_ENV).map(Some);
        }
        let path = data_dir.join(SECRET_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let mode = std::fs::metadata(&path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(Error::Secret(format!(
                        "{} has mode {:o}: others may read it; `chmod 600` it (and rotate it if it was exposed)",
                        path.display(),
                        mode & 0o777
                    )));
                }
                Self::from_base64(&text, &path.display().to_string()).map(Some)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Secret(format!("{}: {e}", path.display()))),
        }
    }

    /// `$SIGHTLINE_SECRET` (base64) when set; else `<data>/secret.key`, created (mode 0600, in
    /// a directory created 0700) with 32 random bytes on first run. For standalone only (one
    /// process, one secret).
    pub fn load_or_create(data_dir: &Path) -> Result<Self> {
        if let Some(secret) = Self::load_existing(data_dir)? {
            return Ok(secret);
        }
        let path = data_dir.join(SECRET_FILE);
        create_private_dir(data_dir)?;
        let mut bytes = vec![0u8; MIN_SECRET_BYTES];
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

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_once_private_and_stable() {
        // The env var would take precedence; this test runs without it.
        if std::env::var(SECRET_ENV).is_ok() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a").join("data");
        let a = MasterSecret::load_or_create(&data).unwrap();
        assert_eq!(mode(&data.join(SECRET_FILE)), 0o600);
        assert_eq!(mode(&data), 0o700, "the data directory is the owner's only");
        assert_eq!(mode(&dir.path().join("a")), 0o700, "and so are the parents it created");
        let b = MasterSecret::load_or_create(&data).unwrap();
        assert_eq!(a.tenant_key("acme"), b.tenant_key("acme"));
        assert_ne!(a.tenant_key("acme"), a.tenant_key("other"));

        // The distributed roles' load finds it, and refuses where there is none.
        assert_eq!(
            MasterSecret::load(&data).unwrap().tenant_key("acme"),
            a.tenant_key("acme")
        );
        let empty = tempfile::tempdir().unwrap();
        let e = MasterSecret::load(empty.path()).unwrap_err().to_string();
        assert!(e.contains("SIGHTLINE_SECRET") && e.contains("only standalone"), "{e}");
        assert!(!empty.path().join(SECRET_FILE).exists(), "nothing created");

        // A secret file others may read is refused, naming the file and the fix.
        std::fs::set_permissions(data.join(SECRET_FILE), std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = MasterSecret::load_or_create(&data).unwrap_err().to_string();
        assert!(
            e.contains("secret.key") && e.contains("644") && e.contains("chmod 600"),
            "{e}"
        );
    }

    #[test]
    fn one_encoding_and_enough_entropy() {
        let random: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(97).wrapping_add(13)).collect();
        assert!(MasterSecret::from_base64(&STANDARD.encode(&random), "test").is_ok());
        assert!(MasterSecret::from_base64(&format!(" {}\n", STANDARD.encode(&random)), "test").is_ok());
        // Raw text is not base64, or decodes to too little.
        let e = MasterSecret::from_base64("sightline-test-secret-0123456789", "SIGHTLINE_SECRET")
            .unwrap_err()
            .to_string();
        assert!(e.contains("SIGHTLINE_SECRET") && e.contains("/dev/urandom"), "{e}");
        // 16 bytes, and 32 bytes of one letter, are refused with how to make a good one.
        for weak in [
            vec![b'a'; 16],
            vec![b'a'; 32],
            b"abababababababababababababababab".to_vec(),
        ] {
            let e = MasterSecret::from_base64(&STANDARD.encode(&weak), "SIGHTLINE_SECRET")
                .unwrap_err()
                .to_string();
            assert!(e.contains("head -c 32 /dev/urandom | base64"), "{e}");
        }
    }
}
