//! The compute's life on the embedded default, end to end through the real binary: from the
//! seed's usage line to `running`, failures, restarts, refusals and termination.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::compute::{embedded_spec, md5_verifier, processes_in, Compute, Launch};

const MINUTE: Duration = Duration::from_secs(60);

/// A spec with roles (md5 passwords whose clear text the tests know) and databases with
/// options.
fn app_spec(port: u16) -> Value {
    let mut spec = embedded_spec(port);
    spec["cluster"]["roles"] = json!([
        { "name": "alice", "encrypted_password": md5_verifier("alice-secret", "alice"), "options": null },
        { "name": "bob", "encrypted_password": md5_verifier("bob-secret", "bob") },
        { "name": "nopass", "encrypted_password": null }
    ]);
    spec["cluster"]["databases"] = json!([
        { "name": "app", "owner": "alice" },
        { "name": "reports", "owner": "bob", "options": [
            { "name": "TEMPLATE", "value": "template0", "vartype": "enum" },
            { "name": "LC_COLLATE", "value": "C", "vartype": "string" },
            { "name": "LC_CTYPE", "value": "C", "vartype": "string" }
        ] }
    ]);
    spec
}

fn exit_code(status: std::process::ExitStatus) -> Option<i32> {
    status.code()
}

#[test]
fn seed_usage_line_reaches_running_and_terminates_cleanly() {
    let port = crate::support::compute::free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(app_spec(port)),
        args: vec![
            "-C".into(),
            "postgresql://cloud_admin@localhost/postgres".into(),
            "-b".into(),
            "/usr/lib/postgresql/15/bin/postgres".into(),
        ],
        ..Launch::default()
    });
    let state = compute.wait_running();
    assert_eq!(state["desired_generation"], 1);
    assert!(state["postmaster_pid"].as_u64().is_some(), "{state}");
    assert!(state["spec_hash"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(state["storage"], "embedded");
    assert_eq!(state["epoch"], 1);
    assert!(
        state["startup"]["total_ms"].as_u64().unwrap() > 0,
        "{state}"
    );

    // The journal tells the whole path, in order.
    let transitions = compute.transitions();
    assert_eq!(
        transitions,
        [
            "empty->init",
            "init->sync_safekeepers",
            "sync_safekeepers->basebackup",
            "basebackup->starting",
            "starting->configuring",
            "configuring->running"
        ],
        "{transitions:?}"
    );
    let records = compute.journal();
    let skipped = records
        .iter()
        .find(|r| r["kind"] == "step_finished" && r["step"] == "sync_safekeepers")
        .unwrap();
    assert!(
        skipped["output"]["detail"]["skipped"]
            .as_str()
            .unwrap()
            .contains("embedded default"),
        "{skipped}"
    );

    // Roles log in over TCP with their passwords, and not with a wrong one.
    for (role, password) in [("alice", "alice-secret"), ("bob", "bob-secret")] {
        let mut client = compute
            .connect(role, Some(password), "postgres")
            .unwrap_or_else(|e| panic!("{role} cannot log in: {e}"));
        let who: String = client.query_one("SELECT current_user", &[]).unwrap().get(0);
        assert_eq!(who, role);
        assert!(
            compute.connect(role, Some("wrong"), "postgres").is_err(),
            "{role} logs in with a wrong password"
        );
    }
    assert!(compute
        .connect("nopass", Some("anything"), "postgres")
        .is_err());

    let mut admin = compute.admin();
    let row = admin
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text, datcollate, datctype FROM pg_database WHERE datname = 'reports'",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "bob");
    assert_eq!(row.get::<_, String>(1), "C");
    assert_eq!(row.get::<_, String>(2), "C");
    let owner: String = admin
        .query_one(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = 'app'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(owner, "alice");
    let hash: String = admin
        .query_one("SHOW compute_ctl.spec_hash", &[])
        .unwrap()
        .get(0);
    assert_eq!(hash, state["spec_hash"].as_str().unwrap());
    drop(admin);

    // GET /journal serves exactly the records in the files.
    let from_http = compute.journal();
    let from_files = compute.journal_files();
    assert!(from_files.len() >= from_http.len());
    assert_eq!(from_files[..from_http.len()], from_http[..]);

    let (status, _) = compute.get("/readyz").unwrap();
    assert_eq!(status, 200);
    let (status, _) = compute.get("/healthz").unwrap();
    assert_eq!(status, 200);

    // SIGTERM: terminated, exit 0, no Postgres left.
    compute.signal(libc::SIGTERM);
    let status = compute.wait_exit(MINUTE);
    assert_eq!(exit_code(status), Some(0), "{}", compute.log());
    assert!(
        processes_in(&compute.pgdata).is_empty(),
        "postgres left behind"
    );
    let last: Vec<Value> = compute
        .journal_files()
        .into_iter()
        .filter(|r| r["kind"] == "transition")
        .collect();
    assert_eq!(last.last().unwrap()["to"], "terminated");
    let terminating = last.iter().find(|r| r["to"] == "terminating").unwrap();
    assert_eq!(terminating["from"], "running");
    assert_eq!(terminating["cause"]["event"], "terminate");
    assert_eq!(terminating["cause"]["source"], "SIGTERM");
}

#[test]
fn no_spec_waits_in_empty_then_post_spec_runs() {
    let mut compute = Compute::start(Launch::default());
    let state = compute.wait_phase("empty", MINUTE);
    assert!(state["desired_generation"].is_null());
    let (status, _) = compute.get("/readyz").unwrap();
    assert_eq!(status, 503);

    let port = crate::support::compute::free_port();
    let (status, body, request_id) = compute.post(
        "/spec",
        Some(&embedded_spec(port)),
        &[("X-Request-Id", "first-spec")],
    );
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["generation"], 1);
    assert_eq!(request_id, "first-spec");
    compute.wait_running();
    let accepted: Vec<Value> = compute
        .journal()
        .into_iter()
        .filter(|r| r["kind"] == "spec_accepted")
        .collect();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0]["request_id"], "first-spec");
    assert_eq!(accepted[0]["seq"], body["seq"]);

    let (status, body, _) = compute.post("/terminate", None, &[]);
    assert_eq!(status, 200, "{body}");
    assert!(body.get("lsn").is_some(), "{body}");
    assert_eq!(exit_code(compute.wait_exit(MINUTE)), Some(0));
    assert!(processes_in(&compute.pgdata).is_empty());
}

#[test]
fn hostile_names_and_values_survive() {
    let port = crate::support::compute::free_port();
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/specs/hostile-names.json"
    ))
    .unwrap();
    let mut spec: Value = serde_json::from_str(&text).unwrap();
    for setting in spec["cluster"]["settings"].as_array_mut().unwrap() {
        if setting["name"] == "port" {
            setting["value"] = json!(port.to_string());
        }
    }
    let mut compute = Compute::start(Launch {
        spec: Some(spec.clone()),
        ..Launch::default()
    });
    compute.wait_running();
    let mut admin = compute.admin();
    for role in spec["cluster"]["roles"].as_array().unwrap() {
        let name = role["name"].as_str().unwrap();
        let found = admin
            .query(
                "SELECT 1 FROM pg_roles WHERE rolname = $1 AND rolcanlogin",
                &[&name],
            )
            .unwrap();
        assert_eq!(found.len(), 1, "role {name:?} missing");
    }
    for db in spec["cluster"]["databases"].as_array().unwrap() {
        let name = db["name"].as_str().unwrap();
        let owner = db["owner"].as_str().unwrap();
        let found: String = admin
            .query_one(
                "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = $1",
                &[&name],
            )
            .unwrap_or_else(|e| panic!("database {name:?}: {e}"))
            .get(0);
        assert_eq!(found, owner);
    }
    for setting in spec["cluster"]["settings"].as_array().unwrap() {
        let name = setting["name"].as_str().unwrap();
        let value: String = admin
            .query_one("SELECT current_setting($1)", &[&name])
            .unwrap()
            .get(0);
        assert_eq!(value, setting["value"].as_str().unwrap(), "setting {name}");
    }
    // postgres is still a superuser: the injection attempts stayed names.
    let superuser: bool = admin
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'cloud_admin'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(superuser);
}

#[test]
fn killed_postmaster_fails_with_its_status_then_exits_10() {
    let port = crate::support::compute::free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(embedded_spec(port)),
        args: vec!["--failed-linger".into(), "2s".into()],
        ..Launch::default()
    });
    let state = compute.wait_running();
    let pid = state["postmaster_pid"].as_u64().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let failed = compute.wait_phase("failed", MINUTE);
    assert_eq!(failed["error"]["kind"], "postmaster_exited", "{failed}");
    assert_eq!(failed["error"]["step"], "monitor");
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("signal 9"),
        "{failed}"
    );
    assert!(failed["postmaster_pid"].is_null());
    assert_eq!(exit_code(compute.wait_exit(MINUTE)), Some(10));
    assert!(processes_in(&compute.pgdata).is_empty());
}

#[test]
fn bad_spec_file_exits_3_and_touches_nothing() {
    let dir = crate::support::compute::traversable_tempdir();
    let pgdata = dir.path().join("pgdata");
    let spec = dir.path().join("spec.json");
    let mut bad = embedded_spec(5432);
    bad["cluster"]["roles"] = json!([{ "name": ["not", "a", "string"] }]);
    std::fs::write(&spec, bad.to_string()).unwrap();
    let output = crate::support::compute::run_once(&pgdata, Some(&spec), &[]);
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cluster.roles[0].name"), "{stderr}");
    assert!(!pgdata.exists(), "PGDATA was created");
    assert!(
        !dir.path().join("pgdata.state").exists(),
        "the state directory was created"
    );
}

#[test]
fn unknown_setting_in_spec_file_exits_3_naming_it() {
    let dir = crate::support::compute::traversable_tempdir();
    let spec = dir.path().join("spec.json");
    let mut bad = embedded_spec(5432);
    bad["cluster"]["settings"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "no_such_setting", "value": "1" }));
    std::fs::write(&spec, bad.to_string()).unwrap();
    let output = crate::support::compute::run_once(&dir.path().join("pgdata"), Some(&spec), &[]);
    assert_eq!(output.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cluster.settings[4]"), "{stderr}");
}

#[test]
fn foreign_pgdata_exits_6_and_stays_intact() {
    let dir = crate::support::compute::traversable_tempdir();
    let pgdata = dir.path().join("pgdata");
    std::fs::create_dir(&pgdata).unwrap();
    std::fs::write(pgdata.join("PG_VERSION"), "15\n").unwrap();
    std::fs::write(pgdata.join("precious.txt"), "do not delete").unwrap();
    let spec = dir.path().join("spec.json");
    std::fs::write(
        &spec,
        embedded_spec(crate::support::compute::free_port()).to_string(),
    )
    .unwrap();
    let output = crate::support::compute::run_once(&pgdata, Some(&spec), &[]);
    assert_eq!(
        output.status.code(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not safe to wipe"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(pgdata.join("precious.txt")).unwrap(),
        "do not delete"
    );
    assert_eq!(
        std::fs::read_to_string(pgdata.join("PG_VERSION")).unwrap(),
        "15\n"
    );
    assert!(
        !dir.path().join("pgdata.state").exists(),
        "the state directory was created"
    );
}

#[test]
fn second_instance_on_the_same_state_directory_exits_4() {
    let mut first = Compute::start(Launch::default());
    first.wait_phase("empty", MINUTE);
    let output = crate::support::compute::run_once(&first.pgdata, None, &[]);
    assert_eq!(output.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&first.pid().unwrap().to_string()),
        "the holder's pid is not named: {stderr}"
    );
}

// A restart after kill -9: tests/it/adoption.rs (adopted, or refused and started fresh with
// the orphan stopped).

#[test]
fn a_value_postgres_refuses_at_start_fails_starting_with_its_message() {
    let port = crate::support::compute::free_port();
    let mut spec = embedded_spec(port);
    spec["cluster"]["settings"]
        .as_array_mut()
        .unwrap()
        // A string whose check only Postgres knows (compute_ctl judges types, units, ranges).
        .push(json!({ "name": "timezone", "value": "Mars/Olympus_Mons" }));
    let mut compute = Compute::start(Launch {
        spec: Some(spec),
        args: vec!["--failed-linger".into(), "60s".into()],
        ..Launch::default()
    });
    let failed = compute.wait_phase("failed", MINUTE);
    assert_eq!(failed["error"]["phase"], "starting", "{failed}");
    assert_eq!(failed["error"]["step"], "spawn_postgres");
    assert_eq!(failed["error"]["kind"], "config_refused");
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("invalid value for parameter \"TimeZone\": \"Mars/Olympus_Mons\""),
        "{message}"
    );
    // Postgres's whole message: its SQLSTATE (invalid_parameter_value); a HINT is quoted
    // too (a_port_in_use_fails_starting_with_postgres_hint_and_fatal).
    assert!(
        message.contains("22023: invalid value for parameter"),
        "{message}"
    );
    assert!(
        processes_in(&compute.pgdata).is_empty(),
        "a failed start left postgres running"
    );
}

#[test]
fn a_port_in_use_fails_starting_with_postgres_hint_and_fatal() {
    // Something else holds the spec's port on the spec's address.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let mut compute = Compute::start(Launch {
        spec: Some(embedded_spec(port)),
        args: vec!["--failed-linger".into(), "60s".into()],
        ..Launch::default()
    });
    let failed = compute.wait_phase("failed", MINUTE);
    assert_eq!(failed["error"]["step"], "spawn_postgres", "{failed}");
    assert_eq!(failed["error"]["kind"], "postgres", "{failed}");
    let message = failed["error"]["message"].as_str().unwrap();
    eprintln!("{message}");
    // The lines around the FATAL: the bind failure with its HINT naming the port, then the
    // FATAL with its SQLSTATE (from compute_ctl's default log_line_prefix).
    assert!(message.contains("Address already in use"), "{message}");
    assert!(
        message.contains(&format!(
            "HINT: Is another postmaster already running on port {port}?"
        )),
        "{message}"
    );
    assert!(
        message.contains("FATAL: XX000: could not create any TCP/IP sockets"),
        "{message}"
    );
    // Bounded, and not the routine start-up lines.
    assert!(message.len() < 4096, "{}", message.len());
    assert!(!message.contains("starting PostgreSQL"), "{message}");
    // The same words in the journal.
    let journaled = compute
        .journal()
        .into_iter()
        .rfind(|r| r["kind"] == "step_finished" && r["step"] == "spawn_postgres")
        .unwrap();
    assert_eq!(journaled["error"]["message"], message, "{journaled}");
    drop(holder);
}

#[test]
fn state_answers_during_a_ten_minute_step_and_terminate_cancels_it() {
    let dir = crate::support::compute::traversable_tempdir();
    // initdb runs as the Postgres OS user: give it a directory it may write in.
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).unwrap();
    let pid_file = run.join("initdb.pid");
    let postgres = crate::support::compute::standin_bindir(
        dir.path(),
        &[(
            "initdb",
            &format!("echo $$ > {}; exec sleep 600", pid_file.display()),
        )],
    );
    let port = crate::support::compute::free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(embedded_spec(port)),
        args: vec!["-b".into(), postgres.display().to_string()],
        ..Launch::default()
    });
    compute.wait_phase("basebackup", MINUTE);
    compute.wait_state(MINUTE, "the long step running", |_| pid_file.exists());
    let mut slowest = Duration::ZERO;
    for _ in 0..50 {
        let started = std::time::Instant::now();
        let (status, state) = compute.get("/state").unwrap();
        slowest = slowest.max(started.elapsed());
        assert_eq!(status, 200);
        assert_eq!(state["phase"], "basebackup");
        let (status, _) = compute.get("/healthz").unwrap();
        assert_eq!(
            status, 200,
            "the driver loop is not live during a long step"
        );
    }
    eprintln!("slowest GET /state during the step: {slowest:?}");
    // A blocked driver would hold GET /state for the whole 10-minute step.
    assert!(
        slowest < Duration::from_secs(2),
        "GET /state waited {slowest:?}"
    );

    let step_pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let started = std::time::Instant::now();
    let (status, body, _) = compute.post("/terminate", None, &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(exit_code(compute.wait_exit(MINUTE)), Some(0));
    eprintln!("terminate during the step took {:?}", started.elapsed());
    assert_ne!(
        unsafe { libc::kill(step_pid, 0) },
        0,
        "the step's child process is still alive"
    );
    let cancelled = compute
        .journal_files()
        .into_iter()
        .find(|r| r["kind"] == "step_finished" && r["step"] == "fetch_basebackup")
        .unwrap();
    assert_eq!(cancelled["error"]["kind"], "cancelled", "{cancelled}");
}

#[test]
fn the_sidecar_starts_with_postgres_restarts_and_stops() {
    let dir = crate::support::compute::traversable_tempdir();
    let sidecar = dir.path().join("vm-informant");
    let pids = dir.path().join("sidecar.pids");
    std::fs::write(
        &sidecar,
        format!("#!/bin/sh\necho $$ >> {}\nexec sleep 600\n", pids.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sidecar, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = crate::support::compute::free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(embedded_spec(port)),
        args: vec!["--vm-monitor".into(), sidecar.display().to_string()],
        ..Launch::default()
    });
    let state = compute.wait_state(MINUTE, "the sidecar running", |s| {
        s["sidecar"]["running"] == true
    });
    assert!(
        state["postmaster_pid"].is_u64(),
        "started before postgres runs: {state}"
    );
    let first = state["sidecar"]["pid"].as_u64().unwrap() as i32;
    unsafe { libc::kill(first, libc::SIGKILL) };
    let state = compute.wait_state(MINUTE, "the sidecar restarted", |s| {
        s["sidecar"]["restarts"].as_u64() >= Some(1) && s["sidecar"]["running"] == true
    });
    let second = state["sidecar"]["pid"].as_u64().unwrap() as i32;
    assert_ne!(first, second);
    compute.signal(libc::SIGTERM);
    assert_eq!(exit_code(compute.wait_exit(MINUTE)), Some(0));
    assert_ne!(
        unsafe { libc::kill(second, 0) },
        0,
        "the sidecar outlived compute_ctl"
    );
}

#[test]
fn last_active_is_null_until_a_client_works() {
    let port = crate::support::compute::free_port();
    let mut spec = embedded_spec(port);
    // Autovacuum workers count as activity; keep them out of this test.
    spec["cluster"]["settings"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "autovacuum", "value": "off" }));
    let mut compute = Compute::start(Launch {
        spec: Some(spec),
        ..Launch::default()
    });
    compute.wait_running();
    // Several monitor ticks (100 ms in tests) with no client: still null.
    let idle = compute.admin();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        compute.state()["last_active"].is_null(),
        "{}",
        compute.state()
    );
    drop(idle);
    let mut client = compute.admin();
    let worker = std::thread::spawn(move || {
        client
            .batch_execute("SET application_name = 'psql'; SELECT pg_sleep(1.5)")
            .unwrap();
    });
    let state = compute.wait_state(MINUTE, "last_active set", |s| s["last_active"].is_string());
    assert!(state["last_active"].as_str().unwrap().ends_with('Z'));
    worker.join().unwrap();
}

#[test]
fn as_pid_1_it_reaps_orphans_but_never_the_postmaster() {
    let dir = crate::support::compute::traversable_tempdir();
    // The sidecar leaves an orphan behind: a subshell's child that outlives it by 0.2 s.
    let sidecar = dir.path().join("orphan-maker");
    std::fs::write(&sidecar, "#!/bin/sh\n(sleep 0.2 &)\nexec sleep 600\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&sidecar, std::fs::Permissions::from_mode(0o755)).unwrap();
    let port = crate::support::compute::free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(embedded_spec(port)),
        args: vec![
            "--vm-monitor".into(),
            sidecar.display().to_string(),
            "--failed-linger".into(),
            "1s".into(),
        ],
        wrapper: ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
            .map(String::from)
            .to_vec(),
        ..Launch::default()
    });
    compute.wait_state(MINUTE, "the sidecar running", |s| {
        s["sidecar"]["running"] == true
    });
    // compute_ctl as seen from here: the child of `unshare`.
    let wrapper = compute.pid().unwrap();
    let compute_ctl = children_of(wrapper)
        .into_iter()
        .next()
        .expect("no compute_ctl under unshare");
    let zombies = || {
        children_of(compute_ctl)
            .into_iter()
            .filter(|pid| process_state(*pid) == Some('Z'))
            .collect::<Vec<_>>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    std::thread::sleep(Duration::from_millis(2500));
    while !zombies().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        zombies().is_empty(),
        "orphans left as zombies: {:?}",
        zombies()
    );

    // The postmaster's exit still reaches its watcher with its own status.
    let state = compute.wait_running();
    let postmaster = state["postmaster_pid"].as_u64().unwrap();
    // That pid is inside the namespace; find it here by its working directory.
    let outside = processes_in(&compute.pgdata)
        .into_iter()
        .find(|pid| children_of(compute_ctl).contains(pid))
        .expect("no postmaster under compute_ctl");
    assert!(postmaster > 0);
    unsafe { libc::kill(outside as i32, libc::SIGKILL) };
    let failed = compute.wait_phase("failed", MINUTE);
    assert!(
        failed["error"]["message"]
            .as_str()
            .unwrap()
            .contains("signal 9"),
        "{failed}"
    );
    assert_eq!(exit_code(compute.wait_exit(MINUTE)), Some(10));
}

/// An upgrade in place in a container: compute_ctl is PID 1 of its namespace, SIGUSR2 makes
/// it execute its binary again as the same PID 1, and the new image adopts the postmaster it
/// keeps as its child (a session and its data survive).
#[test]
fn as_pid_1_sigusr2_reexecutes_and_adopts_postgres() {
    let port = crate::support::compute::free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(embedded_spec(port)),
        wrapper: ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
            .map(String::from)
            .to_vec(),
        ..Launch::default()
    });
    let before = compute.wait_running();
    let wrapper = compute.pid().unwrap();
    let compute_ctl = children_of(wrapper)
        .into_iter()
        .next()
        .expect("no compute_ctl under unshare");
    let status = std::fs::read_to_string(format!("/proc/{compute_ctl}/status")).unwrap();
    let ns_pid = status
        .lines()
        .find(|l| l.starts_with("NSpid:"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        ns_pid, "1",
        "compute_ctl is not PID 1 of its namespace: {status}"
    );
    let mut session = compute.admin();
    session
        .batch_execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42);")
        .unwrap();

    unsafe { libc::kill(compute_ctl as i32, libc::SIGUSR2) };
    let after = compute.wait_state(MINUTE, "the re-executed PID 1 running", |s| {
        s["epoch"] == 2 && s["phase"] == "running"
    });
    assert_eq!(after["postmaster_pid"], before["postmaster_pid"], "{after}");
    assert_eq!(
        children_of(wrapper),
        vec![compute_ctl],
        "the same process, still PID 1"
    );
    let adopted = compute
        .journal()
        .into_iter()
        .find(|r| r["kind"] == "step_finished" && r["step"] == "adopt_postgres" && r["epoch"] == 2)
        .expect("no adoption record in epoch 2");
    assert_eq!(adopted["output"]["detail"]["adopted"], true, "{adopted}");
    let n: i32 = session.query_one("SELECT n FROM kept", &[]).unwrap().get(0);
    assert_eq!(n, 42, "the session and its data survive the upgrade");

    let (status, _, _) = compute.post("/terminate", None, &[]);
    assert_eq!(status, 200);
    assert_eq!(exit_code(compute.wait_exit(MINUTE)), Some(0));
}

/// The pids whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        if fields.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            children.push(child);
        }
    }
    children
}

fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .next()?
        .chars()
        .next()
}
