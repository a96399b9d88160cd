//! Live reconfiguration and the spec contract (generations, If-Match, request ids, refusals),
//! through the real binary on the embedded default.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::compute::{
    embedded_spec, free_port, md5_verifier, set_setting, Compute, Launch,
};

const MINUTE: Duration = Duration::from_secs(60);

fn show(compute: &Compute, name: &str) -> String {
    compute
        .admin()
        .query_one("SELECT current_setting($1)", &[&name])
        .unwrap()
        .get(0)
}

fn running(port: u16) -> (Compute, Value) {
    let mut compute = Compute::start(Launch {
        spec: Some(embedded_spec(port)),
        args: vec!["--failed-linger".into(), "10m".into()],
        ..Launch::default()
    });
    let state = compute.wait_running();
    (compute, state)
}

fn seq(compute: &Compute) -> u64 {
    compute.state()["seq"].as_u64().unwrap()
}

#[test]
fn a_new_spec_is_applied_live_and_confirmed() {
    let port = free_port();
    let (mut compute, before) = running(port);
    let pid = before["postmaster_pid"].clone();
    let mut spec = embedded_spec(port);
    set_setting(&mut spec, "work_mem", "7MB");
    set_setting(&mut spec, "application_name", "it's \"live\"");
    spec["cluster"]["roles"] =
        json!([{ "name": "carol", "encrypted_password": md5_verifier("carol-pw", "carol") }]);
    spec["cluster"]["databases"] = json!([{ "name": "carol_db", "owner": "carol" }]);
    let (status, body) = compute.post_spec(&spec);
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["generation"], 2);
    let state = compute.wait_running();
    assert_eq!(state["applied_generation"], 2);
    assert_eq!(
        state["postmaster_pid"], pid,
        "reconfiguration restarted postgres"
    );
    assert_eq!(show(&compute, "work_mem"), "7MB");
    assert_eq!(show(&compute, "application_name"), "it's \"live\"");
    assert_eq!(
        show(&compute, "compute_ctl.spec_hash"),
        state["spec_hash"].as_str().unwrap()
    );
    compute
        .connect("carol", Some("carol-pw"), "carol_db")
        .unwrap();

    // The journal has the accept, then pending, then configuring, then running.
    let transitions = compute.transitions();
    let tail: Vec<&str> = transitions
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        [
            "running->configuration_pending",
            "configuration_pending->configuring",
            "configuring->running"
        ]
    );
    let accepted: Vec<Value> = compute
        .journal()
        .into_iter()
        .filter(|r| r["kind"] == "spec_accepted")
        .collect();
    assert_eq!(accepted.last().unwrap()["seq"], body["seq"]);
}

#[test]
fn identical_spec_is_a_no_op_and_if_match_guards_the_generation() {
    let port = free_port();
    let (mut compute, state) = running(port);
    let seq_before = seq(&compute);

    // The same spec again: 200, the current generation and the original record's seq.
    let (status, body) = compute.post_spec(&embedded_spec(port));
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["generation"], 1);
    assert_eq!(seq(&compute), seq_before, "an identical spec was journaled");

    // A stale If-Match: 409, nothing recorded.
    let mut spec = embedded_spec(port);
    set_setting(&mut spec, "work_mem", "5MB");
    let (status, body, _) = compute.post("/spec", Some(&spec), &[("If-Match", "7")]);
    assert_eq!(status, 409, "{body}");
    assert_eq!(seq(&compute), seq_before);
    assert_eq!(compute.state()["phase"], state["phase"]);

    // The right If-Match: accepted.
    let (status, body, _) = compute.post(
        "/spec",
        Some(&spec),
        &[("If-Match", "1"), ("X-Request-Id", "req-42")],
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["generation"], 2);
    compute.wait_running();

    // A retry with the same request id gets the original answer, even with a stale If-Match.
    let (status, retried, id) = compute.post(
        "/spec",
        Some(&spec),
        &[("If-Match", "1"), ("X-Request-Id", "req-42")],
    );
    assert_eq!((status, &retried), (202, &body));
    assert_eq!(id, "req-42");

    // ... also after a restart (the map is rebuilt from the journal).
    compute.signal(libc::SIGTERM);
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
    compute.restart(None, vec![]);
    compute.wait_running();
    let (status, retried, _) = compute.post("/spec", Some(&spec), &[("X-Request-Id", "req-42")]);
    assert_eq!((status, &retried), (202, &body));
}

#[test]
fn rejected_requests_change_nothing() {
    let port = free_port();
    let (compute, state) = running(port);
    let seq_before = seq(&compute);
    let mut unknown = embedded_spec(port);
    set_setting(&mut unknown, "no_such_setting", "1");
    let mut wrong_type = embedded_spec(port);
    wrong_type["cluster"]["roles"] = json!([{ "name": 42 }]);
    let huge = json!({ "pad": "x".repeat(17 * 1024 * 1024) });
    struct Refused<'a> {
        what: &'a str,
        body: Value,
        headers: Vec<(&'a str, &'a str)>,
        status: u16,
        path: Option<&'a str>,
    }
    let cases = [
        Refused {
            what: "unknown setting",
            body: unknown,
            headers: vec![],
            status: 400,
            path: Some("cluster.settings[4]"),
        },
        Refused {
            what: "wrong type",
            body: wrong_type,
            headers: vec![],
            status: 400,
            path: Some("cluster.roles[0].name"),
        },
        Refused {
            what: "stale If-Match",
            body: embedded_spec(port),
            headers: vec![("If-Match", "0")],
            status: 409,
            path: None,
        },
        Refused {
            what: "oversized body",
            body: huge,
            headers: vec![],
            status: 413,
            path: None,
        },
    ];
    for case in cases {
        let what = case.what;
        let (status, answer, _) = compute.post("/spec", Some(&case.body), &case.headers);
        assert_eq!(status, case.status, "{what}: {answer}");
        assert!(answer["error"].is_string(), "{what}: {answer}");
        if let Some(path) = case.path {
            assert_eq!(answer["path"], path, "{what}: {answer}");
        }
        assert_eq!(seq(&compute), seq_before, "{what} was journaled");
        assert_eq!(compute.state()["phase"], state["phase"]);
    }
    // Not JSON at all, and the wrong content type.
    let agent = ureq::AgentBuilder::new().build();
    let raw = |content_type: &str, body: &str| match agent
        .post(&compute.url("/spec"))
        .set("Content-Type", content_type)
        .send_string(body)
    {
        Ok(r) => r.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(raw("application/json", "{ not json"), 400);
    assert_eq!(raw("text/plain", &embedded_spec(port).to_string()), 415);
    assert_eq!(seq(&compute), seq_before);
}

#[test]
fn failed_reconfiguration_keeps_serving_and_a_corrected_spec_recovers() {
    let port = free_port();
    let (mut compute, state) = running(port);
    let pid = state["postmaster_pid"].clone();

    // A database whose owner is not a role: refused before it is accepted.
    let mut bad = embedded_spec(port);
    bad["cluster"]["databases"] = json!([{ "name": "orphan_db", "owner": "nobody_here" }]);
    let (status, body) = compute.post_spec(&bad);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["path"], "cluster.databases[0].owner", "{body}");

    // A database Postgres cannot create (its template does not exist): apply_spec fails.
    let mut bad = embedded_spec(port);
    bad["cluster"]["databases"] = json!([{ "name": "orphan_db", "owner": "cloud_admin",
        "options": [{ "name": "TEMPLATE", "value": "no_such_template", "vartype": "string" }] }]);
    let (status, _) = compute.post_spec(&bad);
    assert_eq!(status, 202);
    let failed = compute.wait_phase("failed", MINUTE);
    assert_eq!(failed["error"]["step"], "apply_spec");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("orphan_db") && message.contains("no_such_template"),
        "{message}"
    );
    assert_eq!(failed["postmaster_pid"], pid);
    compute.admin().query_one("SELECT 1", &[]).unwrap();

    // A value Postgres refuses (a time zone it does not have: compute_ctl judges types,
    // units and ranges, the rest is Postgres's): the file is put back, Postgres keeps its
    // configuration.
    let timezone_before = show(&compute, "TimeZone");
    let mut refused = embedded_spec(port);
    set_setting(&mut refused, "timezone", "Mars/Olympus_Mons");
    let (status, _) = compute.post_spec(&refused);
    assert_eq!(status, 202);
    let failed = compute.wait_state(MINUTE, "config refused", |s| {
        s["phase"] == "failed" && s["desired_generation"] == 3
    });
    assert_eq!(failed["error"]["kind"], "config_refused", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("invalid value for parameter \"TimeZone\": \"Mars/Olympus_Mons\""),
        "{message}"
    );
    // A refused setting too (invalid_parameter_value).
    assert!(message.contains("22023: invalid value"), "{message}");
    assert_eq!(show(&compute, "TimeZone"), timezone_before);
    let conf = std::fs::read_to_string(compute.pgdata.join("postgresql.conf")).unwrap();
    assert!(
        !conf.contains("Mars/Olympus_Mons"),
        "the refused file stayed"
    );
    assert_eq!(failed["postmaster_pid"], pid);

    // POST /recover re-applies the desired (still refused) spec: failed again.
    let (status, body, _) = compute.post("/recover", None, &[]);
    assert_eq!(status, 200, "{body}");

    // A corrected spec: back to running, same postmaster.
    let mut good = embedded_spec(port);
    set_setting(&mut good, "work_mem", "9MB");
    let (status, _) = compute.post_spec(&good);
    assert_eq!(status, 202);
    let state = compute.wait_running();
    assert_eq!(state["postmaster_pid"], pid);
    assert_eq!(show(&compute, "work_mem"), "9MB");
    // In running, recover applies the spec once more (a drift repair on demand).
    let (status, body, _) = compute.post("/recover", None, &[]);
    assert_eq!(status, 200, "{body}");
    let state = compute.wait_running();
    assert_eq!(state["postmaster_pid"], pid);
}

#[test]
fn restart_only_settings_show_as_pending_restart() {
    let port = free_port();
    let (mut compute, _) = running(port);
    let mut spec = embedded_spec(port);
    set_setting(&mut spec, "shared_buffers", "24MB");
    let (status, _) = compute.post_spec(&spec);
    assert_eq!(status, 202);
    let state = compute.wait_running();
    let pending = state["pending_restart"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{state}");
    assert_eq!(pending[0]["name"], "shared_buffers");
    assert_eq!(pending[0]["old"], "16MB");
    assert_eq!(pending[0]["new"], "24MB");
}

#[test]
fn specs_arriving_during_start_up_wait_and_the_newest_wins() {
    let mut compute = Compute::start(Launch::default());
    compute.wait_phase("empty", MINUTE);
    let port = free_port();
    let mut generations = Vec::new();
    for n in 0..5 {
        let mut spec = embedded_spec(port);
        set_setting(&mut spec, "application_name", &format!("burst-{n}"));
        let (status, body) = compute.post_spec(&spec);
        assert_eq!(status, 202, "{body}");
        generations.push(body["generation"].as_u64().unwrap());
    }
    assert_eq!(generations, [1, 2, 3, 4, 5]);
    let state = compute.wait_running();
    assert_eq!(state["applied_generation"], 5);
    assert_eq!(show(&compute, "application_name"), "burst-4");
    // One apply at a time: every apply_spec step finished before the next started.
    let mut open = 0;
    for record in compute.journal() {
        if record["step"] == "apply_spec" {
            match record["kind"].as_str().unwrap() {
                "step_started" => open += 1,
                "step_finished" => open -= 1,
                _ => {}
            }
            assert!(open <= 1, "two applies at once: {record}");
        }
    }
}

#[test]
fn sighup_rereads_the_spec_file() {
    let port = free_port();
    let (mut compute, _) = running(port);
    let path = compute.root.join("spec.json");
    // Unchanged file: nothing new.
    let seq_before = seq(&compute);
    compute.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(seq(&compute), seq_before);
    let mut spec = embedded_spec(port);
    set_setting(&mut spec, "work_mem", "11MB");
    std::fs::write(&path, spec.to_string()).unwrap();
    compute.signal(libc::SIGHUP);
    let state = compute.wait_state(MINUTE, "generation 2 applied", |s| {
        s["applied_generation"] == 2 && s["phase"] == "running"
    });
    assert_eq!(state["desired_generation"], 2);
    assert_eq!(show(&compute, "work_mem"), "11MB");
    let accepted: Vec<Value> = compute
        .journal()
        .into_iter()
        .filter(|r| r["kind"] == "spec_accepted")
        .collect();
    assert_eq!(accepted.last().unwrap()["source"], "reload");

    // A file with a setting this Postgres does not know: refused, nothing journaled.
    let seq_before = seq(&compute);
    set_setting(&mut spec, "no_such_setting", "1");
    std::fs::write(&path, spec.to_string()).unwrap();
    compute.signal(libc::SIGHUP);
    let deadline = std::time::Instant::now() + MINUTE;
    while !compute.log().contains("no_such_setting") {
        assert!(
            std::time::Instant::now() < deadline,
            "the refusal was not logged"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(seq(&compute), seq_before);
    assert_eq!(compute.state()["desired_generation"], 2);
}

#[test]
fn a_different_spec_file_at_restart_is_a_new_generation() {
    let port = free_port();
    let (mut compute, _) = running(port);
    compute.signal(libc::SIGTERM);
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
    let mut spec = embedded_spec(port);
    set_setting(&mut spec, "work_mem", "13MB");
    compute.restart(Some(spec), vec![]);
    let state = compute.wait_running();
    assert_eq!(state["desired_generation"], 2);
    assert_eq!(state["epoch"], 2);
    assert_eq!(show(&compute, "work_mem"), "13MB");
    // GET /journal?since=0 shows both epochs.
    let epochs: std::collections::BTreeSet<u64> = compute
        .journal()
        .iter()
        .map(|r| r["epoch"].as_u64().unwrap())
        .collect();
    assert_eq!(epochs.into_iter().collect::<Vec<_>>(), [1, 2]);
}

#[test]
fn terminate_interrupts_a_long_apply() {
    let port = free_port();
    let (mut compute, _) = running(port);
    // Forty databases take seconds to create: long enough to terminate in the middle.
    let mut spec = embedded_spec(port);
    spec["cluster"]["roles"] = json!([{ "name": "owner", "encrypted_password": null }]);
    spec["cluster"]["databases"] = (0..40)
        .map(|i| json!({ "name": format!("db{i}"), "owner": "owner" }))
        .collect();
    let (status, _) = compute.post_spec(&spec);
    assert_eq!(status, 202);
    compute.wait_phase("configuring", MINUTE);
    // Wait until the apply is creating databases.
    let deadline = std::time::Instant::now() + MINUTE;
    while compute_databases(&compute) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no database was created"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, body, _) = compute.post("/terminate", None, &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
    let apply = compute
        .journal_files()
        .into_iter()
        .rfind(|r| r["kind"] == "step_finished" && r["step"] == "apply_spec")
        .unwrap();
    assert_eq!(apply["ok"], false, "the apply ran to its end: {apply}");
    let message = apply["error"]["message"].as_str().unwrap();
    assert!(message.contains("cancel"), "{message}");
}

fn compute_databases(compute: &Compute) -> i64 {
    compute
        .connect("cloud_admin", None, "postgres")
        .ok()
        .and_then(|mut c| {
            c.query_one(
                "SELECT count(*) FROM pg_database WHERE datname LIKE 'db%'",
                &[],
            )
            .ok()
        })
        .map_or(0, |r| r.get(0))
}
