//! `--auth-public-key`: mutating endpoints need a JWT (`Authorization: Bearer …`) signed with
//! the Ed25519 key (EdDSA); its `exp`, when present, is checked.

use std::path::Path;

use anyhow::{bail, Context};
use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};

/// DER prefix of an Ed25519 SubjectPublicKeyInfo (RFC 8410); the key's 32 bytes follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Verifies bearer tokens against one public key.
#[derive(Clone, Debug)]
pub struct Verifier {
    key: VerifyingKey,
}

impl Verifier {
    /// Reads a PEM `PUBLIC KEY` file holding an Ed25519 key.
    pub fn from_pem_file(path: &Path) -> anyhow::Result<Verifier> {
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
        let key = VerifyingKey::from_bytes(&raw).with_context(|| {
            format!("--auth-public-key {}: invalid Ed25519 key", path.display())
        })?;
        Ok(Verifier { key })
    }

    /// Checks `token`'s algorithm, signature and expiry.
    pub fn verify(&self, token: &str) -> Result<(), String> {
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("not a JWT (header.payload.signature)".into());
        };
        let header: serde_json::Value = url
            .decode(header)
            .ok()
            .and_then(|h| serde_json::from_slice(&h).ok())
            .ok_or("the JWT header is not base64url JSON")?;
        if header["alg"] != "EdDSA" {
            return Err(format!("algorithm {} is not EdDSA", header["alg"]));
        }
        let signature = url
            .decode(signature)
            .ok()
            .and_then(|s| Signature::from_slice(&s).ok())
            .ok_or("the JWT signature is malformed")?;
        let signed = &token[..header_and_payload_len(token)];
        self.key
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| "the signature does not match the public key".to_string())?;
        let claims: serde_json::Value = url
            .decode(payload)
            .ok()
            .and_then(|p| serde_json::from_slice(&p).ok())
            .ok_or("the JWT payload is not base64url JSON")?;
        if let Some(exp) = claims.get("exp").and_then(serde_json::Value::as_u64) {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            if now >= exp {
                return Err("the token has expired".into());
            }
        }
        Ok(())
    }
}

fn header_and_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}
