//! Restarts without an outage (CONTRACT.md, "Restarts and adoption"): after a kill -9 or a
//! SIGUSR2 the new process adopts the running postmaster when every check passes, says which
//! check refused when one does, and never leaves two postmasters or a wiped foreign PGDATA.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::compute::{
    embedded_spec, free_port, md5_verifier, processes_in, run_once, traversable_tempdir, Compute,
    Launch,
};

const MINUTE: Duration = Duration::from_secs(60);

fn app_spec(port: u16) -> Value {
    let mut spec = embedded_spec(port);
    spec["cluster"]["roles"] = json!([
        { "name": "alice", "encrypted_password": md5_verifier("alice-secret", "alice") }
    ]);
    spec["cluster"]["databases"] = json!([{ "name": "app", "owner": "alice" }]);
    spec
}

/// The `adopt_postgres` step records of `epoch`: (ok, output detail).
fn adoption_in(compute: &Compute, epoch: u64) -> Option<Value> {
    compute.journal().into_iter().find(|r| {
        r["kind"] == "step_finished" && r["step"] == "adopt_postgres" && r["epoch"] == epoch
    })
}

/// Postmasters on `pgdata`: the processes working there whose parent does not (a backend
/// just forked still carries the postmaster's command line).
pub(crate) fn postmasters_on(pgdata: &Path) -> Vec<u32> {
    let working = processes_in(pgdata);
    let parent = |pid: u32| -> Option<u32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    working
        .iter()
        .copied()
        .filter(|pid| parent(*pid).is_some_and(|ppid| !working.contains(&ppid)))
        .collect()
}

fn running_with_a_session(spec: Value, args: Vec<String>) -> (Compute, Value, postgres::Client) {
    let mut compute = Compute::start(Launch {
        spec: Some(spec),
        args,
        ..Launch::default()
    });
    let state = compute.wait_running();
    let mut session = compute
        .connect("alice", Some("alice-secret"), "app")
        .unwrap();
    session
        .batch_execute("CREATE TABLE kept (n int); INSERT INTO kept VALUES (42);")
        .unwrap();
    (compute, state, session)
}

#[test]
fn kill_9_in_running_adopts_the_postmaster_and_keeps_sessions_and_data() {
    let (mut compute, before, mut session) = running_with_a_session(app_spec(free_port()), vec![]);
    compute.kill9();
    compute.restart(None, vec![]);
    let after = compute.wait_running();
    assert_eq!(after["epoch"], 2);
    assert_eq!(after["postmaster_pid"], before["postmaster_pid"], "{after}");
    assert_eq!(after["applied_generation"], 1);
    let adopted = adoption_in(&compute, 2).expect("an adoption record");
    assert_eq!(adopted["ok"], true, "{adopted}");
    let detail = &adopted["output"]["detail"];
    assert_eq!(adopted["output"]["result"], "postgres_adopted", "{adopted}");
    assert_eq!(detail["adopted"], true, "{adopted}");
    assert_eq!(detail["pid"], before["postmaster_pid"]);
    assert_eq!(detail["spec_hash"], before["spec_hash"]);
    assert!(
        detail["reason"].as_str().unwrap().contains("spec"),
        "{adopted}"
    );
    // Nothing was wiped: no init_pgdata in the new epoch.
    assert!(!compute
        .journal()
        .iter()
        .any(|r| r["epoch"] == 2 && r["kind"] == "step_started" && r["step"] == "init_pgdata"));
    // The session opened before the kill still works, and so does the data.
    let n: i32 = session.query_one("SELECT n FROM kept", &[]).unwrap().get(0);
    assert_eq!(n, 42);
    assert_eq!(postmasters_on(&compute.pgdata).len(), 1);
}

#[test]
fn a_changed_spec_hash_refuses_adoption_stops_the_orphan_and_starts_fresh() {
    let (mut compute, before, _session) = running_with_a_session(app_spec(free_port()), vec![]);
    let orphan = before["postmaster_pid"].as_u64().unwrap();
    let mut admin = compute.admin();
    admin
        .batch_execute("ALTER SYSTEM SET compute_ctl.spec_hash = 'sha256:not-the-applied-one'")
        .unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    compute.kill9();
    assert!(
        processes_in(&compute.pgdata).contains(&(orphan as u32)),
        "postgres should outlive a kill -9 of compute_ctl"
    );
    // No -S: the journal's spec brings the compute back.
    compute.restart(None, vec![]);
    let after = compute.wait_running();
    assert_eq!(after["epoch"], 2);
    assert_eq!(after["desired_generation"], 1);
    assert_eq!(after["spec_hash"], before["spec_hash"]);
    assert_ne!(after["postmaster_pid"], before["postmaster_pid"]);
    let refused = adoption_in(&compute, 2).expect("an adoption record");
    assert_eq!(refused["output"]["result"], "not_adopted", "{refused}");
    assert_eq!(
        refused["output"]["detail"]["check"], "spec_hash",
        "{refused}"
    );
    let init = compute
        .journal()
        .into_iter()
        .rfind(|r| r["kind"] == "step_finished" && r["step"] == "init_pgdata" && r["epoch"] == 2)
        .unwrap();
    assert_eq!(
        init["output"]["detail"]["orphan_postmaster_stopped"], orphan,
        "{init}"
    );
    compute
        .connect("alice", Some("alice-secret"), "app")
        .unwrap();
    assert_eq!(postmasters_on(&compute.pgdata).len(), 1);
}

/// A directory whose `postgres` is a copy of the real one (another binary file) and whose
/// other tools link to the real ones.
fn copied_bindir(root: &Path) -> PathBuf {
    let real = Path::new("/usr/lib/postgresql/15/bin");
    let dir = root.join("otherbin");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(real).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "postgres" {
            std::fs::copy(entry.path(), dir.join(&name)).unwrap();
        } else {
            std::os::unix::fs::symlink(entry.path(), dir.join(&name)).unwrap();
        }
    }
    dir
}

#[test]
fn a_postmaster_of_another_binary_is_not_adopted() {
    let (mut compute, before, _session) = running_with_a_session(app_spec(free_port()), vec![]);
    let bindir = copied_bindir(&compute.root);
    compute.kill9();
    let postgres = bindir.join("postgres").display().to_string();
    compute.restart(None, vec!["-b".into(), postgres]);
    let after = compute.wait_running();
    let refused = adoption_in(&compute, 2).expect("an adoption record");
    assert_eq!(refused["output"]["detail"]["check"], "binary", "{refused}");
    assert_ne!(after["postmaster_pid"], before["postmaster_pid"]);
    assert_eq!(postmasters_on(&compute.pgdata).len(), 1);
}

#[test]
fn a_postmaster_that_is_gone_is_not_adopted() {
    let (mut compute, before, _session) = running_with_a_session(app_spec(free_port()), vec![]);
    compute.kill9();
    let pid = before["postmaster_pid"].as_u64().unwrap() as i32;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = Instant::now() + MINUTE;
    while !postmasters_on(&compute.pgdata).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    compute.restart(None, vec![]);
    compute.wait_running();
    let refused = adoption_in(&compute, 2).expect("an adoption record");
    assert_eq!(refused["output"]["detail"]["check"], "alive", "{refused}");
}

#[test]
fn a_pgdata_without_our_marker_is_refused_and_its_postmaster_left_alone() {
    let (mut compute, before, _session) = running_with_a_session(app_spec(free_port()), vec![]);
    compute.kill9();
    std::fs::remove_file(compute.pgdata.join(compute_ctl::pgdata::MARKER_FILE)).unwrap();
    let output = run_once(&compute.pgdata, None, &[]);
    assert_eq!(output.status.code(), Some(6), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not safe to wipe"), "{stderr}");
    let pid = before["postmaster_pid"].as_u64().unwrap() as u32;
    assert_eq!(postmasters_on(&compute.pgdata), [pid]);
}

#[test]
fn the_adopted_postmaster_killed_fails_the_compute_and_exits_10() {
    let (mut compute, before, _session) = running_with_a_session(app_spec(free_port()), vec![]);
    compute.kill9();
    compute.restart(None, vec!["--failed-linger".into(), "1s".into()]);
    compute.wait_running();
    let pid = before["postmaster_pid"].as_u64().unwrap() as i32;
    let killed = Instant::now();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let failed = compute.wait_phase("failed", MINUTE);
    eprintln!(
        "the adopted postmaster's exit seen after {:?}",
        killed.elapsed()
    );
    assert_eq!(failed["error"]["kind"], "postmaster_exited", "{failed}");
    assert!(failed["postmaster_pid"].is_null(), "{failed}");
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(10));
}

#[test]
fn sigusr2_reexecutes_the_binary_and_adopts_postgres() {
    let (mut compute, before, mut session) = running_with_a_session(app_spec(free_port()), vec![]);
    let pid = compute.pid().unwrap();
    compute.signal(libc::SIGUSR2);
    let after = compute.wait_state(MINUTE, "the re-executed process running", |s| {
        s["epoch"] == 2 && s["phase"] == "running"
    });
    assert_eq!(compute.pid(), Some(pid), "the same process");
    assert_eq!(after["postmaster_pid"], before["postmaster_pid"]);
    assert_eq!(
        adoption_in(&compute, 2).unwrap()["output"]["detail"]["adopted"],
        true
    );
    let n: i32 = session.query_one("SELECT n FROM kept", &[]).unwrap().get(0);
    assert_eq!(n, 42);
    // Its start record lists the re-execution the old image began.
    let start = compute
        .journal()
        .into_iter()
        .find(|r| r["kind"] == "start" && r["epoch"] == 2)
        .unwrap();
    assert!(start.to_string().contains("reexec"), "{start}");
    // Postgres is still its child: terminate stops it.
    let (status, _, _) = compute.post("/terminate", None, &[]);
    assert_eq!(status, 200);
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
    assert!(postmasters_on(&compute.pgdata).is_empty());
}

/// compute_ctl's binary copied to `path` (a file of its own that a test may replace).
fn own_binary_at(path: &Path) {
    let tmp = path.with_extension("new");
    std::fs::copy(crate::support::compute::binary(), &tmp).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn sigusr2_runs_a_replaced_binary_file() {
    let dir = traversable_tempdir();
    let binary = dir.path().join("compute_ctl");
    own_binary_at(&binary);
    let mut compute = Compute::start(Launch {
        spec: Some(app_spec(free_port())),
        binary: Some(binary.clone()),
        ..Launch::default()
    });
    let before = compute.wait_running();
    let pid = compute.pid().unwrap();
    // An upgrade: a new file at the same path (a new inode).
    own_binary_at(&binary);
    compute.signal(libc::SIGUSR2);
    let after = compute.wait_state(MINUTE, "the new binary running", |s| {
        s["epoch"] == 2 && s["phase"] == "running"
    });
    assert_eq!(after["postmaster_pid"], before["postmaster_pid"]);
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(
        exe, binary,
        "the process runs the new file, not the deleted one"
    );
}

/// Replaces the (running, so busy) file at `path` with one holding `bytes`, of `mode`.
fn replace_file(path: &Path, bytes: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn sigusr2_with_a_broken_binary_keeps_postgres_running() {
    let dir = traversable_tempdir();
    let binary = dir.path().join("compute_ctl");
    own_binary_at(&binary);
    let mut compute = Compute::start(Launch {
        spec: Some(app_spec(free_port())),
        binary: Some(binary.clone()),
        ..Launch::default()
    });
    let before = compute.wait_running();
    let postmaster = before["postmaster_pid"].as_u64().unwrap() as u32;

    // A file that cannot be executed: the exec fails, this process goes on and says why.
    replace_file(&binary, b"not a program", 0o644);
    compute.signal(libc::SIGUSR2);
    let deadline = Instant::now() + MINUTE;
    let failed = loop {
        let found = compute
            .journal()
            .into_iter()
            .find(|r| r["kind"] == "step_finished" && r["step"] == "reexec");
        match found {
            Some(record) => break record,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            None => panic!("no failed re-exec journaled\nlog:\n{}", compute.log()),
        }
    };
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(message.contains(&binary.display().to_string()), "{message}");
    assert_eq!(compute.state()["phase"], "running");

    // A program that starts and fails before adopting: it exits non-zero, Postgres stays.
    replace_file(
        &binary,
        b"#!/bin/sh\necho 'broken build' >&2\nexit 1\n",
        0o755,
    );
    compute.signal(libc::SIGUSR2);
    let status = compute.wait_exit(MINUTE);
    assert_ne!(status.code(), Some(0));
    assert!(compute.log().contains("broken build"));
    assert_eq!(postmasters_on(&compute.pgdata), [postmaster]);
    let named = crate::support::compute::dump_journal(&compute.state_dir)
        .into_iter()
        .filter(|r| r["kind"] == "step_started" && r["step"] == "reexec")
        .count();
    assert_eq!(named, 2, "each re-exec is journaled with its binary");
}

#[test]
fn a_refused_live_value_keeps_serving_past_the_linger_and_a_restart_does_not_loop() {
    let port = free_port();
    let (mut compute, before, _session) =
        running_with_a_session(app_spec(port), vec!["--failed-linger".into(), "1s".into()]);
    let mut bad = app_spec(port);
    bad["cluster"]["settings"]
        .as_array_mut()
        .unwrap()
        // A time zone it lacks: only Postgres can refuse it (compute_ctl judges types and units).
        .push(json!({ "name": "timezone", "value": "Mars/Olympus_Mons", "vartype": "string" }));
    let (status, _) = compute.post_spec(&bad);
    assert_eq!(status, 202);
    let failed = compute.wait_phase("failed", MINUTE);
    assert_eq!(failed["postmaster_pid"], before["postmaster_pid"]);
    // Well past --failed-linger: still serving, no exit.
    std::thread::sleep(Duration::from_secs(3));
    assert!(compute.try_exit().is_none(), "it exited after the linger");
    assert_eq!(compute.state()["phase"], "failed");
    compute
        .connect("alice", Some("alice-secret"), "app")
        .unwrap();

    compute.kill9();
    compute.restart(None, vec!["--failed-linger".into(), "1s".into()]);
    let again = compute.wait_state(MINUTE, "the same failure after adoption", |s| {
        s["epoch"] == 2 && s["phase"] == "failed"
    });
    assert_eq!(again["postmaster_pid"], before["postmaster_pid"], "{again}");
    assert_eq!(again["desired_generation"], 2);
    assert_eq!(again["applied_generation"], 1);
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        compute.try_exit().is_none(),
        "it exited: a crash loop under systemd"
    );
    let applies = compute
        .journal()
        .into_iter()
        .filter(|r| r["epoch"] == 2 && r["kind"] == "step_started" && r["step"] == "apply_spec")
        .count();
    assert_eq!(applies, 1, "one attempt, no loop");
}

#[test]
fn a_second_instance_on_the_same_pgdata_with_another_state_directory_is_refused() {
    let (mut compute, before, _session) = running_with_a_session(app_spec(free_port()), vec![]);
    let other_state = compute.root.join("other.state");
    let output = run_once(
        &compute.pgdata,
        None,
        &["--state-dir", other_state.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(6), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another running compute_ctl"), "{stderr}");
    let state = compute.state();
    assert_eq!(state["phase"], "running");
    assert_eq!(state["postmaster_pid"], before["postmaster_pid"]);
    assert!(compute.try_exit().is_none());

    // Once the first is gone, its marker still keeps the other state directory out.
    compute.kill9();
    let spec = compute.root.join("spec.json");
    let output = run_once(
        &compute.pgdata,
        Some(&spec),
        &["--state-dir", other_state.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(6), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("marker names the state directory"),
        "{stderr}"
    );
    assert_eq!(
        postmasters_on(&compute.pgdata).len(),
        1,
        "the orphan was not touched"
    );
}

#[test]
fn kill_9_at_random_moments_of_start_up_never_leaves_two_postmasters() {
    let port = free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(app_spec(port)),
        ..Launch::default()
    });
    let rounds = 30;
    let mut adopted = 0;
    let mut seed: u64 = 0x5eed_1234;
    for round in 0..rounds {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(seed % 900));
        compute.kill9();
        let postmasters = postmasters_on(&compute.pgdata);
        assert!(postmasters.len() <= 1, "round {round}: {postmasters:?}");
        compute.restart(None, vec![]);
        let state = compute.wait_running();
        let epoch = state["epoch"].as_u64().unwrap();
        let postmasters = postmasters_on(&compute.pgdata);
        assert_eq!(
            postmasters,
            [state["postmaster_pid"].as_u64().unwrap() as u32],
            "round {round}"
        );
        if adoption_in(&compute, epoch).is_some_and(|r| r["output"]["detail"]["adopted"] == true) {
            adopted += 1;
        }
        // Whatever was adopted is fully configured.
        compute
            .connect("alice", Some("alice-secret"), "app")
            .unwrap();
    }
    eprintln!("{adopted} of {rounds} restarts adopted postgres");
    assert!(adopted > 0, "no restart adopted");
}

/// pgbench's count of failed transactions, from its report.
fn failed_transactions(report: &str) -> Option<u64> {
    report
        .lines()
        .find_map(|l| l.strip_prefix("number of failed transactions: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[test]
fn pgbench_sees_no_failed_transaction_across_kill_9_and_sigusr2() {
    let (mut compute, before, _session) = running_with_a_session(app_spec(free_port()), vec![]);
    let port = compute.pg_port().to_string();
    let pgbench = |args: &[&str]| {
        std::process::Command::new("/usr/lib/postgresql/15/bin/pgbench")
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "cloud_admin"])
            .args(args)
            .arg("postgres")
            .output()
            .unwrap()
    };
    let init = pgbench(&["-i", "-q", "-s", "1"]);
    assert!(init.status.success(), "{init:?}");
    let port_for_run = port.clone();
    let run = std::thread::spawn(move || {
        std::process::Command::new("/usr/lib/postgresql/15/bin/pgbench")
            .args(["-h", "127.0.0.1", "-p", &port_for_run, "-U", "cloud_admin"])
            .args(["-c", "4", "-T", "20", "-n", "postgres"])
            .output()
            .unwrap()
    });
    std::thread::sleep(Duration::from_secs(5));
    compute.kill9();
    compute.restart(None, vec![]);
    let after_kill = compute.wait_running();
    assert_eq!(after_kill["postmaster_pid"], before["postmaster_pid"]);
    std::thread::sleep(Duration::from_secs(5));
    compute.signal(libc::SIGUSR2);
    let after_upgrade = compute.wait_state(MINUTE, "running after SIGUSR2", |s| {
        s["epoch"] == 3 && s["phase"] == "running"
    });
    assert_eq!(after_upgrade["postmaster_pid"], before["postmaster_pid"]);
    let output = run.join().unwrap();
    let report = String::from_utf8_lossy(&output.stdout);
    eprintln!("{report}");
    assert!(output.status.success(), "{output:?}");
    assert_eq!(failed_transactions(&report), Some(0), "{report}");
    let processed = report
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or(0);
    assert!(processed > 0, "{report}");
}

#[test]
fn attempts_go_on_across_restarts_of_an_interrupted_start_up() {
    let dir = traversable_tempdir();
    // The embedded default's basebackup phase runs initdb: here it never ends.
    let postgres =
        crate::support::compute::standin_bindir(dir.path(), &[("initdb", "exec sleep 600")]);
    let args = vec!["-b".to_string(), postgres.display().to_string()];
    let mut compute = Compute::start(Launch {
        spec: Some(embedded_spec(free_port())),
        args: args.clone(),
        ..Launch::default()
    });
    let first = compute.wait_phase("basebackup", MINUTE);
    assert_eq!(first["attempt"], 1);
    for expected in 2..=3 {
        compute.kill9();
        crate::support::compute::kill_processes_in(&compute.pgdata);
        compute.restart(None, args.clone());
        let state = compute.wait_phase("basebackup", MINUTE);
        assert_eq!(state["attempt"], expected, "{state}");
        let entered = compute
            .journal()
            .into_iter()
            .rfind(|r| r["kind"] == "transition" && r["to"] == "basebackup")
            .unwrap();
        assert_eq!(entered["attempt"], expected, "{entered}");
        // The phase has been tried since the first run entered it.
        assert_eq!(state["phase_since"], first["phase_since"], "{state}");
    }
}
