//! The API's authentication (CONTRACT.md, "Security of the API"): with `--auth-public-key`
//! or the Ed25519 keys of Neon's `compute_ctl_config.jwks`, every endpoint but `/healthz`,
//! `/readyz` and `/metrics` needs a JWT signed EdDSA by one of them, with Neon's claims; a
//! non-loopback `--http-addr` without keys is refused; nothing secret is ever in an answer,
//! a log line or the journal.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::support::compute::{
    binary, embedded_spec, free_port, md5_verifier, traversable_tempdir, Compute, Launch,
};

const MINUTE: Duration = Duration::from_secs(60);
pub(crate) const FAR: u64 = 4_000_000_000;

pub(crate) fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signed_part(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    )
}

fn jwt_with(key: &SigningKey, header: Value, claims: Value) -> String {
    let signed = signed_part(&header, &claims);
    let signature = key.sign(signed.as_bytes());
    format!("{signed}.{}", b64url(&signature.to_bytes()))
}

pub(crate) fn jwt(key: &SigningKey, claims: Value) -> String {
    jwt_with(key, json!({ "alg": "EdDSA", "typ": "JWT" }), claims)
}

/// HMAC-SHA256 (RFC 2104), for the HS256 confusion attack.
fn hmac_sha256(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .to_vec()
}

pub(crate) fn public_key_pem(key: &SigningKey) -> String {
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend_from_slice(key.verifying_key().as_bytes());
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    format!("-----BEGIN PUBLIC KEY-----\n{body}\n-----END PUBLIC KEY-----\n")
}

pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// `GET path` with headers: (status, body).
fn get_with(compute: &Compute, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let mut request = agent.get(&compute.url(path));
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let response = match request.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("GET {path}: {e}"),
    };
    let status = response.status();
    let text = response.into_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn every_bad_token_is_refused_and_changes_nothing() {
    let key = SigningKey::from_bytes(&[7; 32]);
    let other = SigningKey::from_bytes(&[9; 32]);
    let dir = traversable_tempdir();
    let pem = dir.path().join("auth.pem");
    std::fs::write(&pem, public_key_pem(&key)).unwrap();
    let mut compute = Compute::start(Launch {
        args: vec![
            "--auth-public-key".into(),
            pem.display().to_string(),
            "--compute-id".into(),
            "compute-1".into(),
        ],
        ..Launch::default()
    });
    let good = bearer(&jwt(&key, json!({ "compute_id": "compute-1", "exp": FAR })));
    let state = |compute: &Compute| {
        let (status, state) = get_with(compute, "/state", &[("Authorization", &good)]);
        assert_eq!(status, 200, "{state}");
        state
    };
    let deadline = Instant::now() + MINUTE;
    while state(&compute)["phase"] != "empty" {
        assert!(Instant::now() < deadline, "never reached empty");
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = state(&compute);
    let spec = embedded_spec(free_port());

    let claims = json!({ "compute_id": "compute-1", "exp": FAR });
    let hs256 = {
        let signed = signed_part(&json!({ "alg": "HS256", "typ": "JWT" }), &claims);
        let mac = hmac_sha256(public_key_pem(&key).as_bytes(), signed.as_bytes());
        format!("{signed}.{}", b64url(&mac))
    };
    let hs256_raw = {
        let signed = signed_part(&json!({ "alg": "HS256", "typ": "JWT" }), &claims);
        let mac = hmac_sha256(key.verifying_key().as_bytes(), signed.as_bytes());
        format!("{signed}.{}", b64url(&mac))
    };
    let none = format!("{}.", signed_part(&json!({ "alg": "none" }), &claims));
    let cases: Vec<(&str, Option<String>, u16)> = vec![
        ("no token", None, 401),
        ("not bearer", Some("Basic YTpi".into()), 401),
        ("alg none", Some(bearer(&none)), 401),
        ("HS256 with the PEM's bytes", Some(bearer(&hs256)), 401),
        ("HS256 with the raw key", Some(bearer(&hs256_raw)), 401),
        (
            "another key",
            Some(bearer(&jwt(&other, claims.clone()))),
            401,
        ),
        (
            "expired",
            Some(bearer(&jwt(
                &key,
                json!({ "compute_id": "compute-1", "exp": 1_000_000_000 }),
            ))),
            401,
        ),
        (
            "no exp",
            Some(bearer(&jwt(&key, json!({ "compute_id": "compute-1" })))),
            401,
        ),
        (
            "not yet valid",
            Some(bearer(&jwt(
                &key,
                json!({ "compute_id": "compute-1", "exp": FAR, "nbf": now_s() + 3600 }),
            ))),
            401,
        ),
        (
            "oversized",
            Some(bearer(&jwt(
                &key,
                json!({ "compute_id": "compute-1", "exp": FAR, "pad": "x".repeat(5000) }),
            ))),
            401,
        ),
        (
            "wrong compute_id",
            Some(bearer(&jwt(
                &key,
                json!({ "compute_id": "compute-2", "exp": FAR }),
            ))),
            403,
        ),
        (
            "admin scope without the audience",
            Some(bearer(&jwt(
                &key,
                json!({ "scope": "compute_ctl:admin", "exp": FAR }),
            ))),
            403,
        ),
        (
            "admin scope, another audience",
            Some(bearer(&jwt(
                &key,
                json!({ "scope": "compute_ctl:admin", "aud": ["pageserver"], "exp": FAR }),
            ))),
            403,
        ),
        (
            "neither compute_id nor scope",
            Some(bearer(&jwt(&key, json!({ "sub": "cp", "exp": FAR })))),
            403,
        ),
    ];
    for (what, header, expected) in &cases {
        let headers: Vec<(&str, &str)> = header
            .iter()
            .map(|h| ("Authorization", h.as_str()))
            .collect();
        let (status, body, _) = compute.post("/spec", Some(&spec), &headers);
        assert_eq!(status, *expected, "POST /spec, {what}: {body}");
        let (status, body) = get_with(&compute, "/state", &headers);
        assert_eq!(status, *expected, "GET /state, {what}: {body}");
        for path in ["/journal", "/status", "/fsm", "/metrics.json"] {
            let (status, body) = get_with(&compute, path, &headers);
            assert_eq!(status, *expected, "GET {path}, {what}: {body}");
        }
        let (status, body, _) = compute.post("/terminate", None, &headers);
        assert_eq!(status, *expected, "POST /terminate, {what}: {body}");
        let after = state(&compute);
        assert_eq!(
            (&after["seq"], &after["phase"]),
            (&before["seq"], &before["phase"]),
            "{what} changed something"
        );
    }

    // What probes and scrapers call stays open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, _) = compute.get(path).unwrap();
        assert_ne!(status, 401, "{path}");
        assert_ne!(status, 403, "{path}");
    }

    let admin = bearer(&jwt(
        &key,
        json!({ "scope": "compute_ctl:admin", "aud": ["compute"], "exp": FAR }),
    ));
    let (status, _) = get_with(&compute, "/state", &[("Authorization", &admin)]);
    assert_eq!(status, 200);
    let (status, body, _) = compute.post("/spec", Some(&spec), &[("Authorization", &good)]);
    assert_eq!(status, 202, "{body}");
    let deadline = Instant::now() + MINUTE;
    while state(&compute)["phase"] != "running" {
        assert!(Instant::now() < deadline, "never reached running");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, _, _) = compute.post("/terminate", None, &[("Authorization", &admin)]);
    assert_eq!(status, 200);
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
}

#[test]
fn neon_jwks_keys_lock_the_api_and_other_keys_are_ignored() {
    let key = SigningKey::from_bytes(&[11; 32]);
    let ec_impostor = SigningKey::from_bytes(&[12; 32]);
    let port = free_port();
    let envelope = json!({
        "spec": embedded_spec(port),
        "compute_ctl_config": { "jwks": { "keys": [
            { "kty": "EC", "crv": "P-256", "kid": "ec-1", "use": "sig",
              "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
              "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0" },
            { "kty": "OKP", "crv": "Ed25519", "kid": "ed-1", "use": "sig", "alg": "EdDSA",
              "x": b64url(key.verifying_key().as_bytes()) }
        ] } }
    });
    let mut compute = Compute::start(Launch {
        spec: Some(envelope),
        args: vec!["--compute-id".into(), "c-9".into()],
        ..Launch::default()
    });
    let good = bearer(&jwt_with(
        &key,
        json!({ "alg": "EdDSA", "kid": "ed-1" }),
        json!({ "compute_id": "c-9", "exp": FAR }),
    ));
    let deadline = Instant::now() + MINUTE;
    loop {
        let (status, state) = get_with(&compute, "/state", &[("Authorization", &good)]);
        assert_eq!(status, 200, "{state}");
        if state["phase"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "never reached running: {state}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, before) = get_with(&compute, "/state", &[("Authorization", &good)]);
    let (status, _) = compute.get("/state").unwrap();
    assert_eq!(status, 401, "the JWKS keys do not lock /state");
    let claims = json!({ "compute_id": "c-9", "exp": FAR });
    // A token that names the EC key: as ES256, and as EdDSA by a key that is not in the JWKS.
    let es256 = {
        let signed = signed_part(&json!({ "alg": "ES256", "kid": "ec-1" }), &claims);
        format!("{signed}.{}", b64url(&[1; 64]))
    };
    let impostor = jwt_with(
        &ec_impostor,
        json!({ "alg": "EdDSA", "kid": "ec-1" }),
        claims.clone(),
    );
    for (what, token) in [
        ("ES256", es256),
        ("EdDSA by the kid of an EC key", impostor),
    ] {
        let header = bearer(&token);
        let (status, body) = get_with(&compute, "/state", &[("Authorization", &header)]);
        assert_eq!(status, 401, "{what}: {body}");
        let (status, body, _) = compute.post("/terminate", None, &[("Authorization", &header)]);
        assert_eq!(status, 401, "{what}: {body}");
    }
    let (_, after) = get_with(&compute, "/state", &[("Authorization", &good)]);
    assert_eq!(
        (&after["seq"], &after["phase"]),
        (&before["seq"], &before["phase"])
    );
    assert!(
        compute.log().contains("kid \"ec-1\""),
        "the EC key was not reported as left out"
    );
    let (status, _, _) = compute.post("/terminate", None, &[("Authorization", &good)]);
    assert_eq!(status, 200);
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
}

#[test]
fn a_key_that_is_not_ed25519_is_a_bad_command_line() {
    let dir = traversable_tempdir();
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

/// compute_ctl on `addr` with `args`, until `/healthz` answers or it exits.
fn start_on(addr: &str, dir: &std::path::Path, args: &[&str]) -> std::process::Child {
    let child = Command::new(binary())
        .arg("-D")
        .arg(dir.join("pgdata"))
        .arg("--http-addr")
        .arg(addr)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
}

#[test]
fn a_non_loopback_address_without_keys_is_refused() {
    let dir = traversable_tempdir();
    let port = free_port();
    let addr = format!("0.0.0.0:{port}");
    let output = start_on(&addr, dir.path(), &[]).wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for named in [
        "--http-addr",
        "--auth-public-key",
        "compute_ctl_config.jwks",
        "--insecure-http",
    ] {
        assert!(stderr.contains(named), "{named} not named: {stderr}");
    }
    assert!(
        !dir.path().join("pgdata.state").exists(),
        "the refusal wrote something"
    );

    // `--insecure-http` is the explicit way out; a key is the other.
    for args in [vec!["--insecure-http"], vec!["--auth-public-key", "KEY"]] {
        let pem = dir.path().join("auth.pem");
        std::fs::write(&pem, public_key_pem(&SigningKey::from_bytes(&[3; 32]))).unwrap();
        let pem = pem.display().to_string();
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == "KEY" { pem.as_str() } else { a })
            .collect();
        let run = traversable_tempdir();
        let port = free_port();
        let mut child = start_on(&format!("0.0.0.0:{port}"), run.path(), &args);
        let deadline = Instant::now() + MINUTE;
        let url = format!("http://127.0.0.1:{port}/healthz");
        loop {
            if ureq::get(&url).call().is_ok() {
                break;
            }
            assert!(child.try_wait().unwrap().is_none(), "{args:?}: it exited");
            assert!(Instant::now() < deadline, "{args:?}: no answer");
            std::thread::sleep(Duration::from_millis(20));
        }
        // SIGTERM once compute_ctl handles it (its handler is installed after the API serves).
        let handles_sigterm = || {
            std::fs::read_to_string(format!("/proc/{}/status", child.id()))
                .unwrap_or_default()
                .lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                .is_some_and(|mask| mask & (1 << (libc::SIGTERM - 1)) != 0)
        };
        while !handles_sigterm() {
            assert!(Instant::now() < deadline, "{args:?}: SIGTERM never handled");
            std::thread::sleep(Duration::from_millis(20));
        }
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert_eq!(child.wait().unwrap().code(), Some(0), "{args:?}");
    }
}

#[test]
fn nothing_secret_in_any_answer_log_line_or_journal_record() {
    let key = SigningKey::from_bytes(&[21; 32]);
    let dir = traversable_tempdir();
    let pem = dir.path().join("auth.pem");
    std::fs::write(&pem, public_key_pem(&key)).unwrap();
    let port = free_port();
    let verifier = md5_verifier("role-password-1", "app");
    let mut spec = embedded_spec(port);
    spec["cluster"]["roles"] = json!([{ "name": "app", "encrypted_password": verifier }]);
    spec["storage_auth_token"] = json!("storage-token-secret-1");
    let token = jwt(&key, json!({ "compute_id": "c-s", "exp": FAR }));
    let auth = bearer(&token);
    let refused = jwt(&key, json!({ "compute_id": "c-other", "exp": FAR }));
    let mut compute = Compute::start(Launch {
        args: vec![
            "--auth-public-key".into(),
            pem.display().to_string(),
            "--compute-id".into(),
            "c-s".into(),
            "-C".into(),
            "postgresql://cloud_admin:admin-password-1@127.0.0.1/postgres".into(),
        ],
        env: vec![(
            "NEON_CONTROL_PLANE_TOKEN".into(),
            "control-plane-token-1".into(),
        )],
        ..Launch::default()
    });
    let headers = [("Authorization", auth.as_str())];
    let mut answers = Vec::new();
    let (status, body, _) = compute.post("/spec", Some(&spec), &headers);
    assert_eq!(status, 202, "{body}");
    answers.push(body);
    let (status, body, _) = compute.post(
        "/spec",
        Some(&spec),
        &[("Authorization", &bearer(&refused))],
    );
    assert_eq!(status, 403);
    answers.push(body);
    let deadline = Instant::now() + MINUTE;
    loop {
        let (_, state) = get_with(&compute, "/state", &headers);
        if state["phase"] == "running" || state["phase"] == "failed" {
            assert_eq!(state["phase"], "running", "{state}");
            break;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let envelope = json!({ "spec": spec, "compute_ctl_config": {} });
    let (status, body, _) = compute.post("/configure", Some(&envelope), &headers);
    assert_eq!(status, 200, "{body}");
    answers.push(body);
    for path in [
        "/state",
        "/status",
        "/journal?since=0&limit=10000",
        "/metrics",
        "/metrics.json",
        "/fsm",
        "/readyz",
        "/healthz",
    ] {
        answers.push(get_with(&compute, path, &headers).1);
    }
    let (status, body, _) = compute.post("/terminate", None, &headers);
    assert_eq!(status, 200);
    answers.push(body);
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));

    let answers: Vec<String> = answers.iter().map(Value::to_string).collect();
    let journal: Vec<String> = compute
        .journal_files()
        .iter()
        .map(Value::to_string)
        .collect();
    let log = compute.log();
    let secrets = [
        verifier.as_str(),
        "role-password-1",
        "storage-token-secret-1",
        "admin-password-1",
        "control-plane-token-1",
        token.as_str(),
        refused.as_str(),
        // A token's signature alone.
        token.rsplit('.').next().unwrap(),
    ];
    for secret in secrets {
        for (i, answer) in answers.iter().enumerate() {
            assert!(
                !answer.contains(secret),
                "answer {i} holds {secret}: {answer}"
            );
        }
        for record in &journal {
            assert!(
                !record.contains(secret),
                "a journal record holds {secret}: {record}"
            );
        }
        if let Some(line) = log.lines().find(|l| l.contains(secret)) {
            panic!("the log holds {secret}: {line}");
        }
    }
}
