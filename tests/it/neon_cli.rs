//! Neon's command line and config file: compute_ctl started exactly as neon_local starts
//! Neon's (`control_plane/src/endpoint.rs`), driven as Neon's Python client drives it
//! (`test_runner/fixtures/endpoint/http.py`); a config file whose spec is `null`; Neon's flags
//! that mean nothing here; contradictory flags; `POSTGRES_PATH`; `--pg-init-timeout`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

use crate::auth::{b64url, bearer, jwt, FAR};
use crate::support::compute::{
    binary, embedded_spec, free_port, http_call, set_setting, standin_bindir, traversable_tempdir,
    Compute, Launch,
};

const MINUTE: Duration = Duration::from_secs(60);
const POSTGRES: &str = "/usr/lib/postgresql/15/bin/postgres";
const COMPUTE_ID: &str = "ep-neon-local-1";

/// Neon's `ComputeCtlConfig` with `key` as its one JWK, as neon_local writes it.
fn compute_ctl_config(key: &SigningKey) -> Value {
    json!({ "jwks": { "keys": [
        { "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": "neon-local",
          "x": b64url(key.verifying_key().as_bytes()) }
    ] } })
}

/// The token neon_local's `get_status` sends: the compute's own.
fn compute_token(key: &SigningKey) -> String {
    bearer(&jwt(key, json!({ "compute_id": COMPUTE_ID, "exp": FAR })))
}

/// The control plane's admin token (Neon's `compute_ctl:admin` scope, audience `compute`).
fn admin_token(key: &SigningKey) -> String {
    bearer(&jwt(
        key,
        json!({ "scope": "compute_ctl:admin", "aud": ["compute"], "exp": FAR }),
    ))
}

/// `method` on `127.0.0.1:port` `path` with an optional token and JSON body: (status, body).
fn call(
    method: &str,
    port: u16,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let headers: Vec<(&str, &str)> = token.map(|t| ("Authorization", t)).into_iter().collect();
    let url = format!("http://127.0.0.1:{port}{path}");
    let (status, value, _) = http_call(method, &url, &headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"));
    (status, value)
}

/// Polls `GET /status` every 100 ms with `token`, as Neon's client does, until its `status`
/// is `want`; panics on `failed` or after a minute.
fn poll_status(compute: &mut Compute, port: u16, token: &str, want: &str) -> Value {
    let deadline = Instant::now() + MINUTE;
    loop {
        let (code, status) = call("GET", port, "/status", Some(token), None);
        assert_eq!(code, 200, "GET /status: {status}");
        if status["status"] == want {
            return status;
        }
        assert_ne!(
            status["status"],
            "failed",
            "{status}\nlog:\n{}",
            compute.log()
        );
        assert!(
            compute.try_exit().is_none(),
            "exited\nlog:\n{}",
            compute.log()
        );
        assert!(
            Instant::now() < deadline,
            "never {want}: {status}\nlog:\n{}",
            compute.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// neon_local's command line for the endpoint in `dir`: `--external-http-port P
/// --internal-http-port Q --pgdata … --connstr … --config FILE --pgbin … --compute-id ID`.
fn neon_local_args(dir: &Path, external: u16, internal: u16, pg_port: u16) -> Vec<String> {
    vec![
        "--external-http-port".into(),
        external.to_string(),
        "--internal-http-port".into(),
        internal.to_string(),
        "--pgdata".into(),
        dir.join("pgdata").display().to_string(),
        "--connstr".into(),
        format!("postgresql://cloud_admin@127.0.0.1:{pg_port}/postgres"),
        "--config".into(),
        dir.join("config.json").display().to_string(),
        "--pgbin".into(),
        POSTGRES.into(),
        "--compute-id".into(),
        COMPUTE_ID.into(),
    ]
}

/// Starts compute_ctl in `dir` with exactly `args`, answering on `port`.
fn start_exactly(dir: &Path, port: u16, args: Vec<String>) -> Compute {
    Compute::start(Launch {
        dir: Some(dir.to_path_buf()),
        http_port: Some(port),
        args,
        only_args: true,
        ..Launch::default()
    })
}

#[test]
fn neon_locals_invocation_starts_and_serves_both_ports() {
    let key = SigningKey::from_bytes(&[21; 32]);
    let dir = traversable_tempdir();
    let (external, internal, pg_port) = (free_port(), free_port(), free_port());
    let spec = embedded_spec(pg_port);
    let config = json!({ "spec": spec, "compute_ctl_config": compute_ctl_config(&key) });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let mut compute = start_exactly(
        dir.path(),
        external,
        neon_local_args(dir.path(), external, internal, pg_port),
    );
    let token = compute_token(&key);
    let status = poll_status(&mut compute, external, &token, "running");
    assert!(status["start_time"].is_string(), "{status}");

    // The external port needs the token; the internal one does not, and serves the same API.
    let (code, body) = call("GET", external, "/status", None, None);
    assert_eq!(code, 401, "{body}");
    let (code, body) = call("GET", internal, "/status", None, None);
    assert_eq!((code, &body["status"]), (200, &json!("running")), "{body}");
    let (code, state) = call("GET", internal, "/state", None, None);
    assert_eq!(code, 200, "{state}");
    assert_eq!(state["desired_generation"], 1);
    let log = compute.log();
    for listening in [
        format!("the API listens on 0.0.0.0:{external} (--external-http-port)"),
        format!("the API listens on 127.0.0.1:{internal} (--internal-http-port, no token needed)"),
    ] {
        assert!(log.contains(&listening), "not logged: {listening}\n{log}");
    }

    // /configure with the envelope, as neon_local's `reconfigure` sends it.
    let mut changed = embedded_spec(pg_port);
    set_setting(&mut changed, "work_mem", "8MB");
    let envelope = json!({ "spec": changed, "compute_ctl_config": compute_ctl_config(&key) });
    let (code, body) = call(
        "POST",
        external,
        "/configure",
        Some(&token),
        Some(&envelope),
    );
    assert_eq!((code, &body["status"]), (200, &json!("running")), "{body}");
    let work_mem: String = compute
        .admin()
        .query_one("SHOW work_mem", &[])
        .unwrap()
        .get(0);
    assert_eq!(work_mem, "8MB");

    let (code, body) = call(
        "POST",
        external,
        "/terminate?mode=immediate",
        Some(&admin_token(&key)),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
}

#[test]
fn a_config_whose_spec_is_null_starts_empty_until_configure() {
    let key = SigningKey::from_bytes(&[22; 32]);
    let dir = traversable_tempdir();
    let (external, internal, pg_port) = (free_port(), free_port(), free_port());
    let config_file = dir.path().join("config.json");
    let config = json!({ "spec": null, "compute_ctl_config": compute_ctl_config(&key) });
    std::fs::write(&config_file, config.to_string()).unwrap();
    let mut compute = start_exactly(
        dir.path(),
        external,
        neon_local_args(dir.path(), external, internal, pg_port),
    );
    let token = compute_token(&key);
    // Neon's name of `empty` is `empty`; the null spec's keys lock the external port.
    poll_status(&mut compute, external, &token, "empty");
    let (code, body) = call("GET", external, "/state", None, None);
    assert_eq!(
        code, 401,
        "the jwks of a null spec's envelope must apply: {body}"
    );
    assert!(compute.log().contains("holds no spec (spec is null)"));

    let envelope =
        json!({ "spec": embedded_spec(pg_port), "compute_ctl_config": compute_ctl_config(&key) });
    let (code, body) = call(
        "POST",
        external,
        "/configure",
        Some(&token),
        Some(&envelope),
    );
    assert_eq!((code, &body["status"]), (200, &json!("running")), "{body}");

    // SIGHUP re-reads the file: its spec is still null, so nothing is applied or journaled.
    let (_, before) = call("GET", internal, "/state", None, None);
    compute.signal(libc::SIGHUP);
    let deadline = Instant::now() + MINUTE;
    while !compute.log().contains("SIGHUP: ") {
        assert!(
            Instant::now() < deadline,
            "SIGHUP not logged\n{}",
            compute.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = compute.log();
    assert!(
        log.contains(
            "holds no spec (spec is null): nothing to apply, the desired spec stays (generation 1)"
        ),
        "{log}"
    );
    let (_, after) = call("GET", internal, "/state", None, None);
    assert_eq!(
        (&after["phase"], &after["desired_generation"]),
        (&json!("running"), &before["desired_generation"]),
        "{after}"
    );
    // Nothing was offered: no spec accepted after the one /configure brought.
    let journal = compute.journal_files();
    assert!(
        !journal
            .iter()
            .any(|r| r["kind"] == "spec_accepted" && r["generation"] == 2),
        "a null spec was accepted"
    );

    let (code, _) = call(
        "POST",
        external,
        "/terminate",
        Some(&admin_token(&key)),
        None,
    );
    assert_eq!(code, 200);
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
}

#[test]
fn neons_flags_that_mean_nothing_here_are_accepted_and_logged() {
    let mut compute = Compute::start(Launch {
        args: [
            "--dev",
            "--remote-ext-base-url",
            "http://pg-ext-s3-gateway",
            "--resize-swap-on-bind",
            "--set-disk-quota-for-fs",
            "/var/db/postgres",
            "--cgroup",
            "neon-postgres",
            "--filecache-connstr",
            "host=localhost port=5432 dbname=postgres user=cloud_admin password=hidden-secret",
            "--vm-monitor-addr",
            "0.0.0.0:10301",
            "--installed-extensions-collection-interval",
            "3600",
            "--lakebase-mode",
            "false",
            "--compute-id",
            COMPUTE_ID,
        ]
        .map(String::from)
        .to_vec(),
        ..Launch::default()
    });
    compute.wait_phase("empty", MINUTE);
    let log = compute.log();
    for flag in [
        "--dev",
        "--remote-ext-base-url",
        "--resize-swap-on-bind",
        "--set-disk-quota-for-fs",
        "--cgroup",
        "--filecache-connstr",
        "--vm-monitor-addr",
        "--installed-extensions-collection-interval",
        "--lakebase-mode",
    ] {
        let line = format!("{flag} (Neon's) is ignored: ");
        assert_eq!(log.matches(&line).count(), 1, "{line}\n{log}");
    }
    assert!(!log.contains("hidden-secret"), "a flag's value was logged");
    let (code, _, _) = compute.post("/terminate", None, &[]);
    assert_eq!(code, 200);
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
}

/// compute_ctl run to its exit with exactly `args` (and `env`) in `dir`.
fn run_exactly(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary());
    command
        .arg("--pgdata")
        .arg(dir.join("pgdata"))
        .args(args)
        .stdin(Stdio::null());
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

#[test]
fn contradictory_flags_are_a_bad_command_line_naming_them() {
    let dir = traversable_tempdir();
    let port = free_port().to_string();
    let other = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (
            vec!["--http-addr", &addr, "--external-http-port", &other],
            vec!["--http-addr", "--external-http-port"],
        ),
        (
            vec!["--http-addr", &addr, "--http-port", &other],
            vec!["--http-addr", "--http-port"],
        ),
        (
            vec!["--external-http-port", &port, "--http-port", &other],
            vec!["--external-http-port", "--http-port"],
        ),
        (
            vec![
                "--external-http-port",
                &port,
                "--internal-http-port",
                &port,
                "--insecure-http",
            ],
            vec!["--external-http-port", "--internal-http-port"],
        ),
        (
            vec!["--http-addr", &addr, "--internal-http-port", &port],
            vec!["--http-addr", "--internal-http-port"],
        ),
        // The external port is 0.0.0.0: without keys it is refused like --http-addr 0.0.0.0.
        (
            vec!["--external-http-port", &port],
            vec![
                "--external-http-port",
                "--auth-public-key",
                "--insecure-http",
            ],
        ),
        (
            vec!["--http-addr", &addr, "--pg-init-timeout", "0"],
            vec!["--pg-init-timeout"],
        ),
        (
            vec!["--http-addr", &addr, "--lakebase-mode", "maybe"],
            vec!["--lakebase-mode"],
        ),
    ];
    for (args, named) in cases {
        let output = run_exactly(dir.path(), &args, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        for flag in named {
            assert!(
                stderr.contains(flag),
                "{args:?}: {flag} not named: {stderr}"
            );
        }
        assert!(
            !dir.path().join("pgdata.state").exists() && !dir.path().join("pgdata").exists(),
            "{args:?}: the refusal wrote something"
        );
    }
}

#[test]
fn postgres_path_is_the_default_of_pgbin() {
    let dir = traversable_tempdir();
    let used = dir.path().join("standin-used");
    let body = format!("touch {}\nexec {POSTGRES} \"$@\"", used.display());
    let standin = standin_bindir(dir.path(), &[("postgres", &body)]);
    let addr = format!("127.0.0.1:{}", free_port());

    // A POSTGRES_PATH that names nothing is refused, naming the variable.
    let output = run_exactly(
        dir.path(),
        &["--http-addr", &addr],
        &[("POSTGRES_PATH", "/nonexistent/postgres")],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("POSTGRES_PATH=/nonexistent/postgres"),
        "{stderr}"
    );

    // -b wins over POSTGRES_PATH.
    let mut compute = Compute::start(Launch {
        args: vec!["-b".into(), POSTGRES.into()],
        env: vec![("POSTGRES_PATH".into(), "/nonexistent/postgres".into())],
        ..Launch::default()
    });
    compute.wait_phase("empty", MINUTE);
    let (code, _, _) = compute.post("/terminate", None, &[]);
    assert_eq!(code, 200);
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
    assert!(!used.exists());

    // Without -b, POSTGRES_PATH is the binary: the stand-in runs (its catalog is read at start)
    // and the compute runs on it.
    let mut compute = Compute::start(Launch {
        spec: Some(embedded_spec(free_port())),
        env: vec![("POSTGRES_PATH".into(), standin.display().to_string())],
        ..Launch::default()
    });
    compute.wait_running();
    assert!(used.exists(), "POSTGRES_PATH's postgres was not run");
    let (code, _, _) = compute.post("/terminate", None, &[]);
    assert_eq!(code, 200);
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
}

#[test]
fn an_exceeded_pg_init_timeout_fails_the_start_naming_the_flag() {
    let dir = traversable_tempdir();
    // The postmaster (`postgres -D …`) never starts; everything else is the real postgres.
    let body = format!("if [ \"$1\" = \"-D\" ]; then exec sleep 120; fi\nexec {POSTGRES} \"$@\"");
    let standin = standin_bindir(dir.path(), &[("postgres", &body)]);
    let mut compute = Compute::start(Launch {
        spec: Some(embedded_spec(free_port())),
        args: [
            "-b",
            &standin.display().to_string(),
            "--pg-init-timeout",
            "2",
            "--failed-linger",
            "1s",
        ]
        .map(String::from)
        .to_vec(),
        ..Launch::default()
    });
    let state = compute.wait_phase("failed", MINUTE);
    let error = &state["error"];
    assert_eq!(error["step"], "spawn_postgres", "{state}");
    assert_eq!(error["kind"], "timeout", "{state}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("--pg-init-timeout 2s"), "{message}");
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(11));
    assert!(
        compute.postgres_processes().is_empty(),
        "the stand-in postmaster was left running"
    );
}
