//! The API's authentication (CONTRACT.md, "Security of the API"), as Neon's compute_ctl does
//! it: a JWT (`Authorization: Bearer …`) signed EdDSA by one of the API's keys, which are the
//! `--auth-public-key` file (Ed25519 PEM) and the Ed25519 `OKP` keys of Neon's
//! `compute_ctl_config.jwks` (from `-S`, `POST /configure` or the control plane's answer).
//!
//! A token is refused with 401 (`Refusal::Unauthorized`) when it is missing, malformed, over
//! `TOKEN_BYTES_MAX`, not EdDSA, signed by no key of ours, expired (`exp`, required) or not yet
//! valid (`nbf`); with 403 (`Refusal::Forbidden`) when its claims do not admit it: `compute_id`
//! must equal `--compute-id`, unless `scope` is `compute_ctl:admin` and `aud` contains
//! `compute`. No message quotes a token or a key's bytes.

use std::path::Path;
use std::sync::RwLock;

use anyhow::{bail, Context};
use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use serde_json::Value;

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the key's 32 bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The longest bearer token looked at (a larger one is refused unread).
pub const TOKEN_BYTES_MAX: usize = 4096;
/// The most keys taken from one JWKS.
pub const JWKS_KEYS_MAX: usize = 64;
/// Clock skew allowed for `exp` and `nbf` (jsonwebtoken's default, which Neon's uses).
pub const LEEWAY_SECS: u64 = 60;
/// The scope that admits a token for any compute (with `AUDIENCE` in `aud`).
pub const ADMIN_SCOPE: &str = "compute_ctl:admin";
/// The audience an admin token must name.
pub const AUDIENCE: &str = "compute";

/// Why a request is refused: 401 or 403.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or one that is not valid: 401.
    Unauthorized(String),
    /// A valid token whose claims do not admit it here: 403.
    Forbidden(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Unauthorized(why) | Refusal::Forbidden(why) => f.write_str(why),
        }
    }
}

/// One verification key, with the `kid` a JWKS gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    pub kid: Option<String>,
    pub key: VerifyingKey,
}

/// The API's keys and the claims it admits. Shared by the HTTP threads (which check) and
/// whoever receives a new `compute_ctl_config` (which replaces the JWKS keys).
#[derive(Debug)]
pub struct Auth {
    pem: Option<Key>,
    jwks: RwLock<Vec<Key>>,
    compute_id: Option<String>,
    /// The API listens beyond loopback: a JWKS without keys does not open it.
    keep_locked: bool,
}

impl Auth {
    /// `pem`: the `--auth-public-key` key; `compute_id`: `--compute-id`; `keep_locked`: the
    /// address is not loopback (and not `--insecure-http`), so the last keys stay.
    pub fn new(pem: Option<VerifyingKey>, compute_id: Option<String>, keep_locked: bool) -> Auth {
        Auth {
            pem: pem.map(|key| Key { kid: None, key }),
            jwks: RwLock::new(Vec::new()),
            compute_id,
            keep_locked,
        }
    }

    /// Whether requests need a token: some key is known.
    pub fn enabled(&self) -> bool {
        self.pem.is_some() || !self.jwks_keys().is_empty()
    }

    fn jwks_keys(&self) -> Vec<Key> {
        self.jwks
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Takes the keys of Neon's `compute_ctl_config` (`{"jwks": {"keys": [...]}}`): they
    /// replace the JWKS keys known so far. Without `jwks`, nothing changes; keys that are not
    /// Ed25519 are left out and logged.
    pub fn use_compute_ctl_config(&self, config: &Value) {
        let Some(jwks) = config.get("jwks").filter(|j| !j.is_null()) else {
            return;
        };
        let (keys, skipped) = jwks_keys(jwks);
        for why in &skipped {
            log::warn!("compute_ctl_config.jwks: {why}");
        }
        if keys.is_empty() && self.keep_locked && !self.jwks_keys().is_empty() {
            log::warn!(
                "compute_ctl_config.jwks has no Ed25519 key: the API listens beyond loopback, \
                 so its keys stay as they were"
            );
            return;
        }
        log::info!(
            "the API's keys: {} Ed25519 key(s) from compute_ctl_config.jwks{}",
            keys.len(),
            if self.pem.is_some() {
                ", and --auth-public-key"
            } else {
                ""
            }
        );
        *self
            .jwks
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = keys;
    }

    /// Checks the `Authorization` header's value, if any, now.
    pub fn check(&self, authorization: Option<&str>) -> Result<(), Refusal> {
        let mut keys = self.jwks_keys();
        keys.extend(self.pem.clone());
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let Some(value) = authorization else {
            return Err(Refusal::Unauthorized(
                "this endpoint needs a bearer token".into(),
            ));
        };
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                Refusal::Unauthorized("the Authorization header is not `Bearer <JWT>`".into())
            })?;
        verify(token, &keys, self.compute_id.as_deref(), now_s)
    }
}

/// Reads a PEM `PUBLIC KEY` file holding an Ed25519 key.
pub fn key_from_pem_file(path: &Path) -> anyhow::Result<VerifyingKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--auth-public-key {}: cannot read it", path.display()))?;
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(body)
        .with_context(|| format!("--auth-public-key {}: not PEM (base64)", path.display()))?;
    let Some(raw) = der.strip_prefix(&ED25519_SPKI_PREFIX) else {
        bail!(
            "--auth-public-key {}: not an Ed25519 public key",
            path.display()
        );
    };
    let raw: [u8; 32] = raw.try_into().map_err(|_| {
        anyhow::anyhow!(
            "--auth-public-key {}: the key is not 32 bytes",
            path.display()
        )
    })?;
    VerifyingKey::from_bytes(&raw)
        .with_context(|| format!("--auth-public-key {}: invalid Ed25519 key", path.display()))
}

/// The Ed25519 keys of a JWKS (`{"keys": [...]}`), and why each other entry was left out.
pub fn jwks_keys(jwks: &Value) -> (Vec<Key>, Vec<String>) {
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    let Some(entries) = jwks.get("keys").and_then(Value::as_array) else {
        skipped.push("not a JWKS: it has no \"keys\" list".into());
        return (keys, skipped);
    };
    for (i, jwk) in entries.iter().enumerate() {
        let kid = jwk.get("kid").and_then(Value::as_str).map(str::to_string);
        let name = match &kid {
            Some(kid) => format!("keys[{i}] (kid {kid:?})"),
            None => format!("keys[{i}]"),
        };
        if keys.len() == JWKS_KEYS_MAX {
            skipped.push(format!("{name}: more than {JWKS_KEYS_MAX} keys"));
            continue;
        }
        let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or("");
        let crv = jwk.get("crv").and_then(Value::as_str).unwrap_or("");
        if kty != "OKP" || crv != "Ed25519" {
            skipped.push(format!(
                "{name}: kty {kty:?} crv {crv:?} is not an Ed25519 key (OKP, Ed25519)"
            ));
            continue;
        }
        let key = jwk
            .get("x")
            .and_then(Value::as_str)
            .and_then(|x| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(x)
                    .ok()
            })
            .and_then(|raw| <[u8; 32]>::try_from(raw.as_slice()).ok())
            .and_then(|raw| VerifyingKey::from_bytes(&raw).ok());
        match key {
            Some(key) => keys.push(Key { kid, key }),
            None => skipped.push(format!("{name}: \"x\" is not a 32-byte Ed25519 key")),
        }
    }
    (keys, skipped)
}

fn unauthorized(why: impl Into<String>) -> Refusal {
    Refusal::Unauthorized(why.into())
}

fn decode_json(part: &str, what: &str) -> Result<Value, Refusal> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or_else(|| unauthorized(format!("the JWT {what} is not base64url JSON")))
}

/// Checks `token` against `keys` at `now_s` (seconds since the epoch): the algorithm, the
/// signature, `exp` and `nbf` (401), then Neon's claims (403).
pub fn verify(
    token: &str,
    keys: &[Key],
    compute_id: Option<&str>,
    now_s: u64,
) -> Result<(), Refusal> {
    if token.len() > TOKEN_BYTES_MAX {
        return Err(unauthorized(format!(
            "the bearer token exceeds {TOKEN_BYTES_MAX} bytes"
        )));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(unauthorized("not a JWT (header.payload.signature)"));
    };
    let header = decode_json(header, "header")?;
    if header["alg"] != "EdDSA" {
        return Err(unauthorized(format!(
            "the JWT's algorithm {} is not EdDSA",
            header["alg"]
        )));
    }
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .ok()
        .and_then(|s| Signature::from_slice(&s).ok())
        .ok_or_else(|| unauthorized("the JWT signature is malformed"))?;
    let kid = header.get("kid").and_then(Value::as_str);
    let candidates: Vec<&Key> = match kid {
        Some(kid) if keys.iter().any(|k| k.kid.as_deref() == Some(kid)) => keys
            .iter()
            .filter(|k| k.kid.as_deref() == Some(kid))
            .collect(),
        _ => keys.iter().collect(),
    };
    let signed = &token[..header_and_payload_len(token)];
    if !candidates
        .iter()
        .any(|k| k.key.verify(signed.as_bytes(), &signature).is_ok())
    {
        return Err(unauthorized(match kid {
            Some(kid) => {
                format!("the JWT (kid {kid:?}) is signed by none of the API's Ed25519 keys")
            }
            None => "the JWT is signed by none of the API's Ed25519 keys".to_string(),
        }));
    }
    let claims = decode_json(payload, "payload")?;
    let Some(exp) = claims.get("exp").and_then(Value::as_u64) else {
        return Err(unauthorized("the JWT has no exp"));
    };
    if now_s >= exp.saturating_add(LEEWAY_SECS) {
        return Err(unauthorized("the JWT has expired"));
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_u64) {
        if now_s.saturating_add(LEEWAY_SECS) < nbf {
            return Err(unauthorized("the JWT is not valid yet (nbf)"));
        }
    }
    admit_claims(&claims, compute_id)
}

/// Neon's claims: an admin token names the audience; any other names this compute.
fn admit_claims(claims: &Value, compute_id: Option<&str>) -> Result<(), Refusal> {
    if claims.get("scope").and_then(Value::as_str) == Some(ADMIN_SCOPE) {
        let audience = match claims.get("aud") {
            Some(Value::String(aud)) => aud == AUDIENCE,
            Some(Value::Array(auds)) => auds.iter().any(|a| a == AUDIENCE),
            _ => false,
        };
        return if audience {
            Ok(())
        } else {
            Err(Refusal::Forbidden(format!(
                "scope {ADMIN_SCOPE} needs aud containing {AUDIENCE:?}"
            )))
        };
    }
    match (claims.get("compute_id").and_then(Value::as_str), compute_id) {
        (Some(claimed), Some(ours)) if claimed == ours => Ok(()),
        (Some(claimed), Some(ours)) => Err(Refusal::Forbidden(format!(
            "the token's compute_id {claimed:?} is not this compute ({ours:?})"
        ))),
        (Some(_), None) => Err(Refusal::Forbidden(
            "the token names a compute_id, and this compute has no --compute-id".into(),
        )),
        (None, _) => Err(Refusal::Forbidden(format!(
            "the token has neither compute_id nor scope {ADMIN_SCOPE}"
        ))),
    }
}

fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use serde_json::json;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn token(key: &SigningKey, header: Value, claims: Value) -> String {
        let signed = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let signature = key.sign(signed.as_bytes());
        format!("{signed}.{}", b64(&signature.to_bytes()))
    }

    const NOW: u64 = 2_000_000_000;

    fn keys(key: &SigningKey) -> Vec<Key> {
        vec![Key {
            kid: Some("k1".into()),
            key: key.verifying_key(),
        }]
    }

    #[test]
    fn claims_as_neons() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let eddsa = json!({ "alg": "EdDSA" });
        let check = |claims: Value| {
            verify(
                &token(&key, eddsa.clone(), claims),
                &keys(&key),
                Some("c1"),
                NOW,
            )
        };
        assert_eq!(
            check(json!({ "compute_id": "c1", "exp": NOW + 10 })),
            Ok(())
        );
        assert!(matches!(
            check(json!({ "compute_id": "c2", "exp": NOW + 10 })),
            Err(Refusal::Forbidden(_))
        ));
        assert_eq!(
            check(json!({ "scope": ADMIN_SCOPE, "aud": ["compute"], "exp": NOW + 10 })),
            Ok(())
        );
        assert_eq!(
            check(json!({ "scope": ADMIN_SCOPE, "aud": "compute", "exp": NOW + 10 })),
            Ok(())
        );
        assert!(matches!(
            check(json!({ "scope": ADMIN_SCOPE, "exp": NOW + 10 })),
            Err(Refusal::Forbidden(_))
        ));
        assert!(matches!(
            check(json!({ "compute_id": "c1", "exp": NOW - LEEWAY_SECS })),
            Err(Refusal::Unauthorized(_))
        ));
        assert!(matches!(
            check(json!({ "compute_id": "c1" })),
            Err(Refusal::Unauthorized(_))
        ));
        assert!(matches!(
            check(json!({ "compute_id": "c1", "exp": NOW + 10, "nbf": NOW + LEEWAY_SECS + 1 })),
            Err(Refusal::Unauthorized(_))
        ));
    }

    #[test]
    fn only_eddsa_by_our_keys() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let other = SigningKey::from_bytes(&[2; 32]);
        let claims = json!({ "compute_id": "c1", "exp": NOW + 10 });
        let forged = token(
            &other,
            json!({ "alg": "EdDSA", "kid": "k1" }),
            claims.clone(),
        );
        assert!(matches!(
            verify(&forged, &keys(&key), Some("c1"), NOW),
            Err(Refusal::Unauthorized(_))
        ));
        let none = format!(
            "{}.{}.",
            b64(json!({ "alg": "none" }).to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        assert!(matches!(
            verify(&none, &keys(&key), Some("c1"), NOW),
            Err(Refusal::Unauthorized(_))
        ));
        let huge = "a".repeat(TOKEN_BYTES_MAX + 1);
        assert!(matches!(
            verify(&huge, &keys(&key), Some("c1"), NOW),
            Err(Refusal::Unauthorized(_))
        ));
    }

    #[test]
    fn a_jwks_gives_its_ed25519_keys_only() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let jwks = json!({ "keys": [
            { "kty": "EC", "crv": "P-256", "kid": "ec", "x": "AAAA", "y": "AAAA" },
            { "kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": b64(key.verifying_key().as_bytes()) },
            { "kty": "OKP", "crv": "Ed25519", "kid": "short", "x": "AAAA" },
        ]});
        let (keys, skipped) = jwks_keys(&jwks);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("ed"));
        assert_eq!(skipped.len(), 2, "{skipped:?}");
    }

    #[test]
    fn an_empty_jwks_does_not_open_an_api_beyond_loopback() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let jwks = json!({ "jwks": { "keys": [
            { "kty": "OKP", "crv": "Ed25519", "x": b64(key.verifying_key().as_bytes()) }]}});
        let locked = Auth::new(None, None, true);
        locked.use_compute_ctl_config(&jwks);
        locked.use_compute_ctl_config(&json!({ "jwks": { "keys": [] } }));
        assert!(locked.enabled());
        let local = Auth::new(None, None, false);
        local.use_compute_ctl_config(&jwks);
        assert!(local.enabled());
        local.use_compute_ctl_config(&json!({ "jwks": { "keys": [] } }));
        assert!(!local.enabled());
    }
}
