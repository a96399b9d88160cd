//! Neon compute_ctl's endpoints with its shapes, so its control plane and test clients work
//! unchanged: `GET /status`, `POST /configure`, `POST /terminate?mode=`, `GET /metrics.json`.

use std::time::Duration;

use serde_json::json;

use crate::support::compute::{embedded_spec, free_port, processes_in, Compute, Launch};

const MINUTE: Duration = Duration::from_secs(60);

#[test]
fn configure_answers_with_the_status_once_running() {
    let mut compute = Compute::start(Launch::default());
    compute.wait_phase("empty", MINUTE);
    let (status, body) = compute.get("/status").unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["status"], "empty");
    for field in ["start_time", "tenant", "timeline", "last_active", "error"] {
        assert!(body.get(field).is_some(), "/status lacks {field}: {body}");
    }

    let port = free_port();
    let envelope =
        json!({ "spec": embedded_spec(port), "compute_ctl_config": { "jwks": { "keys": [] } } });
    let (status, body, _) = compute.post("/configure", Some(&embedded_spec(port)), &[]);
    assert_eq!(status, 400, "a bare spec is not Neon's request: {body}");
    let (status, body, _) = compute.post("/configure", Some(&envelope), &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "running");
    assert!(body["start_time"].is_string());

    let (status, metrics) = compute.get("/metrics.json").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics["total_startup_ms"].as_u64().unwrap() > 0,
        "{metrics}"
    );
    assert!(metrics.get("basebackup_ms").is_some());

    // A bad spec: 400 with Neon's error shape.
    let bad = json!({ "spec": { "format_version": 1.0, "cluster": { "roles": [{ "name": 1 }] } } });
    let (status, body, _) = compute.post("/configure", Some(&bad), &[]);
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("cluster.roles[0].name"),
        "{body}"
    );
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");

    // A spec that fails to apply: 500 with the error.
    let mut failing = embedded_spec(port);
    failing["cluster"]["databases"] = json!([{ "name": "d", "owner": "cloud_admin",
        "options": [{ "name": "TEMPLATE", "value": "no_such_template" }] }]);
    let (status, body, _) = compute.post("/configure", Some(&json!({ "spec": failing })), &[]);
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("no_such_template"),
        "{body}"
    );
    let (_, status_body) = compute.get("/status").unwrap();
    assert_eq!(status_body["status"], "failed");

    // Immediate termination, Neon's `{"lsn"}` answer.
    let (status, body, _) = compute.post("/terminate?mode=immediate", None, &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.as_object().unwrap().contains_key("lsn"));
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
    assert!(processes_in(&compute.pgdata).is_empty());
}

#[test]
fn terminate_works_in_empty_and_in_failed() {
    let mut empty = Compute::start(Launch::default());
    empty.wait_phase("empty", MINUTE);
    let (status, body, _) = empty.post("/terminate", None, &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "lsn": null }));
    assert_eq!(empty.wait_exit(MINUTE).code(), Some(0));

    let port = free_port();
    let mut spec = embedded_spec(port);
    // A database Postgres cannot create: `configuring` fails with Postgres serving.
    spec["cluster"]["databases"] = json!([{ "name": "d", "owner": "cloud_admin",
        "options": [{ "name": "TEMPLATE", "value": "no_such_template" }] }]);
    let mut failed = Compute::start(Launch {
        spec: Some(spec),
        args: vec!["--failed-linger".into(), "10m".into()],
        ..Launch::default()
    });
    let state = failed.wait_phase("failed", MINUTE);
    assert!(state["postmaster_pid"].is_u64(), "{state}");
    let (status, body, _) = failed.post("/terminate?mode=fast", None, &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body["lsn"].is_string(), "{body}");
    assert_eq!(failed.wait_exit(MINUTE).code(), Some(0));
    assert!(processes_in(&failed.pgdata).is_empty());
}

#[test]
fn configure_in_a_phase_that_takes_no_spec_is_412() {
    // `pg_controldata` (read after Postgres stopped) takes 3 s: `terminating` lasts that long.
    let dir = crate::support::compute::traversable_tempdir();
    let postgres = crate::support::compute::standin_bindir(
        dir.path(),
        &[(
            "pg_controldata",
            "sleep 3; exec /usr/lib/postgresql/15/bin/pg_controldata \"$@\"",
        )],
    );
    let port = free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(embedded_spec(port)),
        args: vec!["-b".into(), postgres.display().to_string()],
        ..Launch::default()
    });
    compute.wait_running();
    compute.signal(libc::SIGTERM);
    compute.wait_phase("terminating", MINUTE);
    let (_, status_body) = compute.get("/status").unwrap();
    assert_eq!(status_body["status"], "termination_pending_fast");
    let (status, body, _) = compute.post(
        "/configure",
        Some(&json!({ "spec": embedded_spec(port) })),
        &[],
    );
    assert_eq!(status, 412, "{body}");
    let (status, body, _) = compute.post(
        "/configure",
        Some(&json!({ "compute_ctl_config": {} })),
        &[],
    );
    assert_eq!(status, 400, "a body without a spec: {body}");
    let (status, body) = compute.post_spec(&embedded_spec(port));
    assert_eq!(status, 409, "{body}");
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
}
