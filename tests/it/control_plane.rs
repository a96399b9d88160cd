//! Control-plane pull (`-i` with `-p`), against a small real HTTP server in the test: its
//! request, its token, an answer with no spec, a control plane that is down at first, and one
//! that serves an invalid spec before a correct one.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::compute::{embedded_spec, free_port, Compute, Launch};

const MINUTE: Duration = Duration::from_secs(60);

/// What the test control plane saw: (path, Authorization header).
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// What the test control plane answers: (status, body); the test may change it.
type Answer = Arc<Mutex<(u16, Value)>>;

/// Serves `answer` (status, body) to every request on `port`, recording each.
fn control_plane(port: u16, answer: (u16, Value)) -> Seen {
    control_plane_answering(port, Arc::new(Mutex::new(answer)))
}

/// Serves the answer of the moment to every request on `port`, recording each.
fn control_plane_answering(port: u16, answer: Answer) -> Seen {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let server = tiny_http::Server::http(("127.0.0.1", port)).unwrap();
    let record = seen.clone();
    std::thread::spawn(move || {
        for request in server.incoming_requests() {
            let auth = request
                .headers()
                .iter()
                .find(|h| h.field.equiv("Authorization"))
                .map(|h| h.value.to_string());
            record
                .lock()
                .unwrap()
                .push((request.url().to_string(), auth));
            let (status, body) = answer.lock().unwrap().clone();
            let response = tiny_http::Response::from_string(body.to_string())
                .with_status_code(status)
                .with_header(
                    tiny_http::Header::from_bytes("Content-Type", "application/json").unwrap(),
                );
            let _ = request.respond(response);
        }
    });
    seen
}

fn launch(cp_port: u16) -> Launch {
    Launch {
        args: vec![
            "-i".into(),
            "compute-7".into(),
            "-p".into(),
            format!("http://127.0.0.1:{cp_port}"),
        ],
        env: vec![("NEON_CONTROL_PLANE_TOKEN".into(), "sekret-token".into())],
        ..Launch::default()
    }
}

#[test]
fn fetches_the_spec_once_the_control_plane_comes_up() {
    let cp_port = free_port();
    let pg_port = free_port();
    // Down at first: nothing listens on cp_port.
    let mut compute = Compute::start(launch(cp_port));
    let waiting = compute.wait_state(MINUTE, "a retried fetch", |s| {
        s["phase"] == "empty" && s["attempt"].as_u64() >= Some(3)
    });
    assert_eq!(waiting["error"]["kind"], "control_plane", "{waiting}");
    assert!(
        waiting["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{waiting}"
    );
    assert_eq!(waiting["error"]["retryable"], true);

    let seen = control_plane(
        cp_port,
        (
            200,
            json!({ "status": "attached", "spec": embedded_spec(pg_port), "compute_ctl_config": { "jwks": { "keys": [] } } }),
        ),
    );
    let state = compute.wait_running();
    assert_eq!(state["desired_generation"], 1);
    let requests = seen.lock().unwrap().clone();
    assert!(!requests.is_empty());
    assert_eq!(requests[0].0, "/compute/api/v2/computes/compute-7/spec");
    assert_eq!(requests[0].1.as_deref(), Some("Bearer sekret-token"));
    let accepted: Vec<Value> = compute
        .journal()
        .into_iter()
        .filter(|r| r["kind"] == "spec_accepted")
        .collect();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0]["source"], "control_plane");
    assert!(
        !compute.log().contains("sekret-token"),
        "the token reached the log"
    );
}

#[test]
fn an_empty_answer_waits_for_post_spec() {
    let cp_port = free_port();
    let seen = control_plane(cp_port, (200, json!({ "status": "empty", "spec": null })));
    let mut compute = Compute::start(launch(cp_port));
    compute.wait_state(MINUTE, "the control plane asked", |_| {
        !seen.lock().unwrap().is_empty()
    });
    let state = compute.wait_phase("empty", MINUTE);
    assert!(state["error"].is_null(), "{state}");
    // It does not keep asking.
    let asked = seen.lock().unwrap().len();
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(seen.lock().unwrap().len(), asked);
    let (status, _) = compute.post_spec(&embedded_spec(free_port()));
    assert_eq!(status, 202);
    compute.wait_running();
}

#[test]
fn a_503_is_retried() {
    let cp_port = free_port();
    let seen = control_plane(cp_port, (503, json!({ "error": "busy" })));
    let mut compute = Compute::start(launch(cp_port));
    let state = compute.wait_state(MINUTE, "retries", |s| s["attempt"].as_u64() >= Some(3));
    assert!(
        state["error"]["message"].as_str().unwrap().contains("503"),
        "{state}"
    );
    assert!(seen.lock().unwrap().len() >= 2);
}

#[test]
fn an_invalid_spec_from_the_control_plane_is_a_retried_error_until_it_is_corrected() {
    let cp_port = free_port();
    let pg_port = free_port();
    let mut bad = embedded_spec(pg_port);
    bad["cluster"]["roles"] = json!([{ "name": "", "encrypted_password": null }]);
    let answer: Answer = Arc::new(Mutex::new((
        200,
        json!({ "status": "attached", "spec": bad }),
    )));
    let seen = control_plane_answering(cp_port, answer.clone());
    let mut compute = Compute::start(launch(cp_port));
    // Attempt 3 is asked for after two refused answers.
    let waiting = compute.wait_state(MINUTE, "the invalid spec retried", |s| {
        s["phase"] == "empty" && s["attempt"].as_u64() >= Some(3)
    });
    assert_eq!(waiting["error"]["kind"], "control_plane", "{waiting}");
    assert_eq!(waiting["error"]["retryable"], true, "{waiting}");
    let message = waiting["error"]["message"].as_str().unwrap();
    assert!(message.contains("spec.cluster.roles[0].name"), "{message}");
    assert!(seen.lock().unwrap().len() >= 2);
    let failed: Vec<Value> = compute
        .journal()
        .into_iter()
        .filter(|r| r["kind"] == "step_finished" && r["step"] == "fetch_spec")
        .collect();
    assert!(!failed.is_empty());
    assert_eq!(failed[0]["ok"], false, "{}", failed[0]);
    assert!(
        failed[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("spec.cluster.roles[0].name"),
        "{}",
        failed[0]
    );

    *answer.lock().unwrap() = (
        200,
        json!({ "status": "attached", "spec": embedded_spec(pg_port) }),
    );
    let state = compute.wait_running();
    assert_eq!(state["desired_generation"], 1);
    assert!(state["error"].is_null(), "{state}");
}
