//! Tokens: `Authorization` headers of any bytes, tokens of any claims, and payloads of any
//! bytes signed with a tenant's secret, through the token parser and verifier.
#![no_main]

use arbitrary::Arbitrary;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use sightline_core::spec::{valid_site_id, valid_tenant_name};
use sightline_core::token::{from_authorization, issue, peek, verify, Claims, Scope, TokenError, ALL_SITES};

const SECRET: &[u8] = b"secret-of-acme";

fn secrets(tenant: &str) -> Option<Vec<u8>> {
    (tenant == "acme").then(|| SECRET.to_vec())
}

fn scope(byte: u8) -> Scope {
    [Scope::Write, Scope::Read, Scope::Admin][usize::from(byte % 3)]
}

#[derive(Arbitrary, Debug)]
enum Input {
    /// An `Authorization` header value as sent.
    Header { value: Vec<u8>, now: i64, needed: u8 },
    /// A token the tenant's secret signed, for claims of any text.
    Claims {
        tenant: String,
        site: String,
        scope: u8,
        expires: i64,
        now: i64,
        needed: u8,
    },
    /// A payload of any bytes with a valid signature.
    Signed { payload: Vec<u8>, now: i64, needed: u8 },
}

/// Whether claims are ones a token may carry: a tenant name, and a site (admin: every site).
fn well_formed(tenant: &str, site: &str, scope: Scope) -> bool {
    let site_ok = match scope {
        Scope::Admin => site == ALL_SITES,
        _ => valid_site_id(site),
    };
    valid_tenant_name(tenant) && site_ok
}

fn signed(payload: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("any key length");
    mac.update(payload);
    let sig = mac.finalize().into_bytes();
    format!(
        "slt1.{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(sig)
    )
}

fuzz_target!(|input: Input| {
    match input {
        Input::Header { value, now, needed } => {
            let Ok(token) = from_authorization(&value) else {
                return;
            };
            assert!(!token.is_empty() && token == token.trim(), "token {token:?}");
            let verified = verify(token, now, scope(needed), secrets);
            if let Ok(claims) = &verified {
                // Only the secret signs: a token that verifies is one `issue` wrote.
                assert_eq!(
                    issue(SECRET, claims),
                    token,
                    "a token verified that issue did not write"
                );
            }
            if let (Ok(claims), Ok(peeked)) = (&verified, peek(token)) {
                assert_eq!(claims, &peeked);
            }
        }
        Input::Claims {
            tenant,
            site,
            scope: s,
            expires,
            now,
            needed,
        } => {
            let claims = Claims {
                tenant,
                site,
                scope: scope(s),
                expires,
            };
            let token = issue(SECRET, &claims);
            let needed = scope(needed);
            let expected = if !well_formed(&claims.tenant, &claims.site, claims.scope) {
                Err(TokenError::Malformed)
            } else if claims.tenant != "acme" {
                Err(TokenError::BadSignature)
            } else if now >= claims.expires {
                Err(TokenError::Expired)
            } else if claims.scope != needed {
                Err(TokenError::WrongScope {
                    found: claims.scope.as_str(),
                    needed: needed.as_str(),
                })
            } else {
                Ok(claims.clone())
            };
            assert_eq!(verify(&token, now, needed, secrets), expected, "{claims:?}");
            if well_formed(&claims.tenant, &claims.site, claims.scope) {
                assert_eq!(peek(&token), Ok(claims));
            }
        }
        Input::Signed { payload, now, needed } => {
            let token = signed(&payload);
            let Ok(claims) = verify(&token, now, scope(needed), secrets) else {
                return;
            };
            assert!(well_formed(&claims.tenant, &claims.site, claims.scope), "{claims:?}");
            assert_eq!(claims.tenant, "acme", "only acme's secret signed");
            assert!(now < claims.expires, "an expired token verified");
            let text = std::str::from_utf8(&payload).expect("a verified payload is text");
            let fields: Vec<&str> = text.split('\n').collect();
            assert_eq!(
                fields[..3],
                [claims.tenant.as_str(), claims.site.as_str(), claims.scope.as_str()],
                "the claims are the payload's"
            );
            assert_eq!(peek(&token), Ok(claims));
        }
    }
});
