//! Postgres stopped from outside (CONTRACT.md, "Exit codes"): an orderly `pg_ctl stop` (`-m
//! fast`, `-m smart`, as neon_local's `endpoint stop` does) is journaled and compute_ctl exits
//! 0 at once, for its own child and for an adopted postmaster alike; `-m immediate` is an
//! unexpected exit like a crash (failed, exit 10 after `--failed-linger`).

use std::time::Duration;

use serde_json::Value;

use crate::support::compute::{
    dump_journal, embedded_spec, free_port, processes_in, Compute, Launch,
};
use crate::support::postgres::{bindir, command};

/// A bound on the waits, not a timed assertion: the exit is expected within milliseconds.
const MINUTE: Duration = Duration::from_secs(60);

fn running(args: Vec<String>) -> (Compute, u32) {
    let mut compute = Compute::start(Launch {
        spec: Some(embedded_spec(free_port())),
        args,
        ..Launch::default()
    });
    let state = compute.wait_running();
    let pid = state["postmaster_pid"].as_u64().unwrap() as u32;
    (compute, pid)
}

/// `pg_ctl -D PGDATA -m MODE stop` as the Postgres OS user, as an operator would.
fn pg_ctl_stop(compute: &Compute, mode: &str) {
    let output = command(bindir(), "pg_ctl", &compute.pgdata)
        .arg("-D")
        .arg(&compute.pgdata)
        .args(["-m", mode, "-w", "stop"])
        .output()
        .unwrap();
    assert!(output.status.success(), "pg_ctl -m {mode} stop: {output:?}");
}

/// The transition out of `from` that the postmaster's exit caused.
fn exit_transition(compute: &Compute, from: &str) -> Value {
    // Read from the files: once compute_ctl has exited, nothing answers `GET /journal`.
    dump_journal(&compute.state_dir)
        .into_iter()
        .find(|r| {
            r["kind"] == "transition"
                && r["from"] == from
                && r["cause"]["event"] == "postmaster_exited"
        })
        .unwrap_or_else(|| panic!("no postmaster_exited transition from {from}"))
}

fn assert_stopped_from_outside(compute: &mut Compute, pid: u32, from: &str) {
    assert_eq!(
        compute.wait_exit(MINUTE).code(),
        Some(0),
        "{}",
        compute.log()
    );
    let record = exit_transition(compute, from);
    assert_eq!(record["to"], "terminating", "{record}");
    let source = record["cause"]["source"].as_str().unwrap();
    assert!(
        source.contains(&format!("postmaster pid {pid} stopped from outside")),
        "{record}"
    );
    assert!(source.contains("pg_control says shut down"), "{record}");
    let last = dump_journal(&compute.state_dir)
        .into_iter()
        .rev()
        .find(|r| r["kind"] == "transition")
        .unwrap();
    assert_eq!(
        (&last["from"], &last["to"]),
        (&"terminating".into(), &"terminated".into()),
        "{last}"
    );
    assert!(processes_in(&compute.pgdata).is_empty());
    compute.assert_journal_verifies("after an external stop");
}

#[test]
fn pg_ctl_fast_stop_from_outside_exits_0_at_once() {
    let (mut compute, pid) = running(vec![]);
    pg_ctl_stop(&compute, "fast");
    assert_stopped_from_outside(&mut compute, pid, "running");
    assert!(exit_transition(&compute, "running")["cause"]["source"]
        .as_str()
        .unwrap()
        .contains("exit code 0"));
}

#[test]
fn pg_ctl_smart_stop_from_outside_exits_0_at_once() {
    let (mut compute, pid) = running(vec![]);
    pg_ctl_stop(&compute, "smart");
    assert_stopped_from_outside(&mut compute, pid, "running");
}

#[test]
fn pg_ctl_immediate_stop_is_unexpected_and_exits_10_after_the_linger() {
    // Its postmaster exits with status 0 on PostgreSQL 15, but without a shutdown
    // checkpoint: a crash recovery follows, as after a crash.
    let (mut compute, pid) = running(vec!["--failed-linger".into(), "1s".into()]);
    pg_ctl_stop(&compute, "immediate");
    let failed = compute.wait_phase("failed", MINUTE);
    assert_eq!(failed["error"]["kind"], "postmaster_exited", "{failed}");
    let record = exit_transition(&compute, "running");
    let source = record["cause"]["source"].as_str().unwrap();
    assert!(
        source.contains(&format!("postmaster pid {pid} exited unexpectedly")),
        "{record}"
    );
    assert!(
        source.contains("pg_control does not say shut down"),
        "{record}"
    );
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(10));
}

#[test]
fn a_killed_postmaster_still_exits_10_after_the_linger() {
    let (mut compute, pid) = running(vec!["--failed-linger".into(), "1s".into()]);
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let failed = compute.wait_phase("failed", MINUTE);
    assert_eq!(failed["error"]["kind"], "postmaster_exited", "{failed}");
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(10));
}

#[test]
fn an_adopted_postmaster_stopped_from_outside_exits_0_at_once() {
    let (mut compute, pid) = running(vec![]);
    compute.kill9();
    compute.restart(None, vec!["--failed-linger".into(), "30s".into()]);
    let state = compute.wait_running();
    assert_eq!(
        state["postmaster_pid"].as_u64(),
        Some(u64::from(pid)),
        "adopted"
    );
    assert_eq!(state["epoch"], 2, "{state}");
    pg_ctl_stop(&compute, "fast");
    // Not our child: its status is not known, and pg_control says how it ended.
    assert_stopped_from_outside(&mut compute, pid, "running");
}
