//! The tenant's signing Secret: the key that signs its tokens and keys its visitor ids
//! (`SIGHTLINE_SECRET` of its collector and query pods). Generated once, when the Secret
//! does not exist, and never overwritten: a new key would invalidate every token issued and
//! change every visitor id mid-day. The value comes from the caller (`SigningKey::generate`
//! in apply), so this builder stays pure.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use rand::RngCore;

use super::meta::meta;
use super::pod::SECRET_KEY;
use crate::validate::Validated;

/// A fresh signing key: 32 random bytes in standard, padded base64, the one encoding
/// `SIGHTLINE_SECRET` is read in (`core::secret::MasterSecret::from_base64`).
#[derive(Clone)]
pub struct SigningKey(String);

impl SigningKey {
    pub fn generate() -> Self {
        let mut bytes = [0u8; sightline_core::secret::MIN_SECRET_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(STANDARD.encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The status's `signingKeyFingerprint` of this key.
    pub fn fingerprint(&self) -> String {
        fingerprint(self.0.as_bytes())
    }
}

/// The first 16 hex digits of the SHA-256 of a key's text as the Secret holds it: tells one
/// key from another, and reveals nothing usable about either.
pub fn fingerprint(key: &[u8]) -> String {
    use sha2::Digest;
    crate::drift::hex16(&sha2::Sha256::digest(key))
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// The Secret; `key` is `None` where the value must not be shown (`render`), in which case
/// the Secret has no data and apply would generate it.
pub fn build(v: &Validated, key: Option<&SigningKey>) -> Secret {
    Secret {
        metadata: meta(v, v.names.signing_secret(), None),
        type_: Some("Opaque".into()),
        data: key.map(|k| BTreeMap::from([(SECRET_KEY.to_string(), ByteString(k.as_str().as_bytes().to_vec()))])),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_is_a_secret_the_roles_accept() {
        // The collector and query pods read SIGHTLINE_SECRET with core's MasterSecret; a key
        // they refused would stop every tenant's pods at start.
        for _ in 0..64 {
            let key = SigningKey::generate();
            sightline_core::secret::MasterSecret::from_base64(key.as_str(), "SIGHTLINE_SECRET")
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
}
