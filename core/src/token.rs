//! Stateless tokens, so that millions of merchants need no token table: an HMAC-SHA256 over
//! (tenant, site, scope, expiry) keyed by the tenant's secret.
//!
//! Format: `slt1.<base64url(tenant \n site \n scope \n expiry-unix-seconds)>.<base64url(mac)>`.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::spec::{valid_site_id, valid_tenant_name};

const PREFIX: &str = "slt1";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Send events (collector).
    Write,
    /// Read metrics (query API).
    Read,
    /// Operate the tenant (a standalone server's admin endpoint: replays). Admin tokens are
    /// for the whole tenant: their site is `ALL_SITES`.
    Admin,
}

/// The site of an admin token: every site of its tenant.
pub const ALL_SITES: &str = "*";

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Write => "write",
            Scope::Read => "read",
            Scope::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "write" => Ok(Scope::Write),
            "read" => Ok(Scope::Read),
            "admin" => Ok(Scope::Admin),
            other => Err(format!("scope {other:?}: expected write, read or admin")),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub tenant: String,
    pub site: String,
    pub scope: Scope,
    /// Unix seconds after which the token is refused.
    pub expires: i64,
}

/// Why a token was refused; each maps to a 401 with this text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("malformed token")]
    Malformed,
    /// Also the answer for a tenant that does not exist: a forger learns nothing about which
    /// tenant names are real.
    #[error("bad token signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token has scope {found}, this endpoint needs {needed}")]
    WrongScope { found: &'static str, needed: &'static str },
    #[error("token is for another site")]
    WrongSite,
}

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], payload: &[u8]) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
    mac.update(payload);
    mac
}

pub fn issue(secret: &[u8], claims: &Claims) -> String {
    let payload = format!(
        "{}\n{}\n{}\n{}",
        claims.tenant,
        claims.site,
        claims.scope.as_str(),
        claims.expires
    );
    let sig = mac(secret, payload.as_bytes()).finalize().into_bytes();
    format!(
        "{PREFIX}.{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

/// Reads the claims without checking the signature: only to find which tenant's secret to
/// verify with. Never trust the result before `verify`.
pub fn peek(token: &str) -> Result<Claims, TokenError> {
    let (payload, _) = split(token)?;
    parse_payload(&payload)
}

/// Verifies signature, expiry and scope. `secret_of` returns the tenant's secret; a tenant
/// it does not know is refused exactly like a forged signature (same error, and the MAC is
/// still computed, so the answer takes as long).
pub fn verify(
    token: &str,
    now_unix: i64,
    needed: Scope,
    secret_of: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<Claims, TokenError> {
    let (payload, sig) = split(token)?;
    let claims = parse_payload(&payload)?;
    let secret = secret_of(&claims.tenant);
    let key = secret.as_deref().unwrap_or(b"no tenant of this name");
    let verified = mac(key, &payload).verify_slice(&sig).is_ok();
    if !verified || secret.is_none() {
        return Err(TokenError::BadSignature);
    }
    if now_unix >= claims.expires {
        return Err(TokenError::Expired);
    }
    if claims.scope != needed {
        return Err(TokenError::WrongScope {
            found: claims.scope.as_str(),
            needed: needed.as_str(),
        });
    }
    Ok(claims)
}

/// The token of an `Authorization` header value: the `Bearer` scheme (case-insensitive, as
/// RFC 9110 section 11.1 makes every auth scheme), whitespace, then the token. Shared by the
/// collector and the query API so both accept the same headers.
pub fn from_authorization(value: &[u8]) -> Result<&str, TokenError> {
    let text = std::str::from_utf8(value).map_err(|_| TokenError::Malformed)?.trim();
    let (scheme, token) = text.split_once([' ', '\t']).ok_or(TokenError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(TokenError::Malformed);
    }
    Ok(token)
}

fn split(token: &str) -> Result<(Vec<u8>, Vec<u8>), TokenError> {
    let mut parts = token.split('.');
    let (Some(PREFIX), Some(payload), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| TokenError::Malformed)?;
    Ok((payload, sig))
}

fn parse_payload(payload: &[u8]) -> Result<Claims, TokenError> {
    let text = std::str::from_utf8(payload).map_err(|_| TokenError::Malformed)?;
    let fields: Vec<&str> = text.split('\n').collect();
    let [tenant, site, scope, expires] = fields[..] else {
        return Err(TokenError::Malformed);
    };
    let scope: Scope = scope.parse().map_err(|_| TokenError::Malformed)?;
    // Admin tokens are for every site, and only they are.
    let site_ok = match scope {
        Scope::Admin => site == ALL_SITES,
        _ => valid_site_id(site),
    };
    if !valid_tenant_name(tenant) || !site_ok {
        return Err(TokenError::Malformed);
    }
    Ok(Claims {
        tenant: tenant.to_string(),
        site: site.to_string(),
        scope,
        expires: expires.parse().map_err(|_| TokenError::Malformed)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(scope: Scope, expires: i64) -> Claims {
        Claims {
            tenant: "acme".into(),
            site: "a.example".into(),
            scope,
            expires,
        }
    }
    fn secrets(t: &str) -> Option<Vec<u8>> {
        (t == "acme").then(|| b"secret-of-acme".to_vec())
    }

    #[test]
    fn round_trip() {
        let t = issue(b"secret-of-acme", &claims(Scope::Read, 2000));
        assert_eq!(
            verify(&t, 1000, Scope::Read, secrets).unwrap(),
            claims(Scope::Read, 2000)
        );
    }

    #[test]
    fn refuses_forged_expired_and_wrong_scope() {
        let forged = issue(b"another-secret", &claims(Scope::Read, 2000));
        assert_eq!(
            verify(&forged, 1000, Scope::Read, secrets),
            Err(TokenError::BadSignature)
        );
        let t = issue(b"secret-of-acme", &claims(Scope::Read, 2000));
        assert_eq!(verify(&t, 2000, Scope::Read, secrets), Err(TokenError::Expired));
        assert!(matches!(
            verify(&t, 1000, Scope::Write, secrets),
            Err(TokenError::WrongScope { .. })
        ));
        // Changing the site in the payload while keeping the signature must fail.
        let mut parts: Vec<String> = t.split('.').map(String::from).collect();
        parts[1] = URL_SAFE_NO_PAD.encode("acme\nb.example\nread\n2000");
        assert_eq!(
            verify(&parts.join("."), 1000, Scope::Read, secrets),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify("nonsense", 1000, Scope::Read, secrets),
            Err(TokenError::Malformed)
        );
        let other_tenant = issue(
            b"x",
            &Claims {
                tenant: "other".into(),
                ..claims(Scope::Read, 2000)
            },
        );
        // A tenant that does not exist gets the forged signature's answer.
        assert_eq!(
            verify(&other_tenant, 1000, Scope::Read, secrets),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for header in ["Bearer abc", "bearer abc", "BEARER  abc ", "Bearer\tabc", " bEaReR abc"] {
            assert_eq!(from_authorization(header.as_bytes()), Ok("abc"), "{header:?}");
        }
        for header in ["Basic abc", "Bearer", "Bearer   ", "Bearerabc", "abc"] {
            assert_eq!(
                from_authorization(header.as_bytes()),
                Err(TokenError::Malformed),
                "{header:?}"
            );
        }
        assert_eq!(from_authorization(b"Bearer \xff"), Err(TokenError::Malformed));
    }

    #[test]
    fn admin_tokens_are_for_the_whole_tenant_and_nothing_else() {
        let admin = Claims {
            site: ALL_SITES.into(),
            ..claims(Scope::Admin, 2000)
        };
        let t = issue(b"secret-of-acme", &admin);
        assert_eq!(verify(&t, 1000, Scope::Admin, secrets).unwrap(), admin);
        assert!(matches!(
            verify(&t, 1000, Scope::Read, secrets),
            Err(TokenError::WrongScope { .. })
        ));
        let read = issue(b"secret-of-acme", &claims(Scope::Read, 2000));
        assert_eq!(
            verify(&read, 1000, Scope::Admin, secrets),
            Err(TokenError::WrongScope {
                found: "read",
                needed: "admin"
            })
        );
        // "*" is no site for other scopes, and an admin token names no single site.
        let star_read = issue(
            b"secret-of-acme",
            &Claims {
                site: ALL_SITES.into(),
                ..claims(Scope::Read, 2000)
            },
        );
        assert_eq!(
            verify(&star_read, 1000, Scope::Read, secrets),
            Err(TokenError::Malformed)
        );
        let site_admin = issue(b"secret-of-acme", &claims(Scope::Admin, 2000));
        assert_eq!(
            verify(&site_admin, 1000, Scope::Admin, secrets),
            Err(TokenError::Malformed)
        );
    }
}
