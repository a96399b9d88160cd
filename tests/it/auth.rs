//! `--auth-public-key`: mutating endpoints need a JWT signed (EdDSA) by the key's private half;
//! reads stay open.

use std::time::Duration;

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::json;

use crate::support::compute::{embedded_spec, free_port, Compute, Launch};

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn jwt(key: &SigningKey, claims: serde_json::Value) -> String {
    let header = b64url(
        json!({ "alg": "EdDSA", "typ": "JWT" })
            .to_string()
            .as_bytes(),
    );
    let payload = b64url(claims.to_string().as_bytes());
    let signed = format!("{header}.{payload}");
    let signature = key.sign(signed.as_bytes());
    format!("{signed}.{}", b64url(&signature.to_bytes()))
}

fn public_key_pem(key: &SigningKey) -> String {
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend_from_slice(key.verifying_key().as_bytes());
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n")
}

#[test]
fn mutating_endpoints_need_a_token_signed_by_the_key() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let other = SigningKey::from_bytes(&[9; 32]);
    let dir = crate::support::compute::traversable_tempdir();
    let pem = dir.path().join("auth.pem");
    std::fs::write(&pem, public_key_pem(&key)).unwrap();
    let mut compute = Compute::start(Launch {
        args: vec!["--auth-public-key".into(), pem.display().to_string()],
        ..Launch::default()
    });
    compute.wait_phase("empty", Duration::from_secs(60));
    let spec = embedded_spec(free_port());
    let seq = compute.state()["seq"].clone();

    let (status, body, _) = compute.post("/spec", Some(&spec), &[]);
    assert_eq!(status, 401, "{body}");
    let wrong = format!("Bearer {}", jwt(&other, json!({ "sub": "cp" })));
    let (status, body, _) = compute.post("/spec", Some(&spec), &[("Authorization", &wrong)]);
    assert_eq!(status, 403, "{body}");
    let expired = format!("Bearer {}", jwt(&key, json!({ "exp": 1_000_000_000 })));
    let (status, body, _) = compute.post("/spec", Some(&spec), &[("Authorization", &expired)]);
    assert_eq!(status, 403, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    assert_eq!(
        compute.state()["seq"],
        seq,
        "a refused request was journaled"
    );

    // Reads stay open.
    let (status, _) = compute.get("/state").unwrap();
    assert_eq!(status, 200);

    let good = format!(
        "Bearer {}",
        jwt(&key, json!({ "sub": "cp", "exp": 4_000_000_000_u64 }))
    );
    let (status, body, _) = compute.post("/spec", Some(&spec), &[("Authorization", &good)]);
    assert_eq!(status, 202, "{body}");
    compute.wait_running();
    let (status, _, _) = compute.post("/terminate", None, &[("Authorization", &good)]);
    assert_eq!(status, 200);
}

#[test]
fn a_key_that_is_not_ed25519_is_a_bad_command_line() {
    let dir = crate::support::compute::traversable_tempdir();
    let pem = dir.path().join("auth.pem");
    std::fs::write(
        &pem,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let pem = pem.display().to_string();
    let output = crate::support::compute::run_once(
        &dir.path().join("pgdata"),
        None,
        &["--auth-public-key", &pem],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--auth-public-key"));
}
