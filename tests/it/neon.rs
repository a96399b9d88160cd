//! Neon's storage through the real binary: `postgres --sync-safekeepers` (a stand-in script
//! that records how it was run, the real postgres for everything else) and a base backup from
//! the test pageserver, which speaks the real wire protocol and serves a real Postgres's base
//! backup. Also the wire client against a real Postgres, and the test pageserver against
//! libpq (`psql`) and the `postgres` crate, so neither side only agrees with itself.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::compute::{
    free_port, md5_verifier, processes_in, traversable_tempdir, Compute, Launch,
};
use crate::support::pageserver::{sample_backup, Answer, Setup, TestPageserver};
use crate::support::postgres::{bindir, TestPostgres};

const MINUTE: Duration = Duration::from_secs(60);
const TENANT: &str = "b0554b632bd4d547a63b86c3630317e8";
const TIMELINE: &str = "2414a61ffc94e428f14b5758fe308e13";
const TOKEN: &str = "test-storage-token";
const SAFEKEEPERS: [&str; 3] = ["127.0.0.1:5454", "127.0.0.1:5455", "127.0.0.1:5456"];
/// What the stand-in's `--sync-safekeepers` prints.
const SYNC_LSN: &str = "0/16B3748";

/// A Neon spec for a compute on `pg_port`, fetching from `pageserver`.
fn neon_spec(pg_port: u16, pageserver: &str, mode: Value) -> Value {
    json!({
        "format_version": 1.0,
        "cluster": {
            "roles": [
                { "name": "app", "encrypted_password": md5_verifier("app-secret", "app"), "options": null }
            ],
            "databases": [],
            "settings": [
                { "name": "port", "value": pg_port.to_string(), "vartype": "integer" },
                { "name": "listen_addresses", "value": "127.0.0.1", "vartype": "string" },
                { "name": "fsync", "value": "off", "vartype": "bool" },
                { "name": "shared_buffers", "value": "16MB", "vartype": "string" }
            ]
        },
        "delta_operations": [],
        "tenant_id": TENANT,
        "timeline_id": TIMELINE,
        "pageserver_connstring": pageserver,
        "safekeeper_connstrings": SAFEKEEPERS,
        "storage_auth_token": TOKEN,
        "mode": mode,
    })
}

fn pageserver(script: Vec<Answer>) -> TestPageserver {
    pageserver_on(None, script)
}

fn pageserver_on(port: Option<u16>, script: Vec<Answer>) -> TestPageserver {
    TestPageserver::start(
        Setup {
            port,
            tenant: TENANT.into(),
            timeline: TIMELINE.into(),
            token: Some(TOKEN.into()),
            script,
        },
        sample_backup().gz.clone(),
    )
}

/// A `-b` directory whose `postgres` is a stand-in script: `--sync-safekeepers` records its
/// arguments, environment, user and the config file it was given, and prints `SYNC_LSN`;
/// anything else execs the real postgres. The other tools are links to the real ones.
///
/// Files in `record/` steer it: `fail-once` (fail the next sync, with a message on stderr),
/// `hang` (sleep in a child process, its pid in `sleep.pid`).
struct StandIn {
    dir: tempfile::TempDir,
}

impl StandIn {
    fn new() -> StandIn {
        let dir = traversable_tempdir();
        let bin = dir.path().join("bin");
        let record = dir.path().join("record");
        std::fs::create_dir(&bin).unwrap();
        std::fs::create_dir(&record).unwrap();
        // The script runs as the postgres OS user, and writes here.
        std::fs::set_permissions(&record, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let script = r#"#!/bin/sh
# A stand-in for Neon's postgres: --sync-safekeepers is recorded and answered; anything else
# is the real postgres.
if [ "$1" = "--sync-safekeepers" ]; then
    record="@RECORD@"
    {
        echo "call"
        echo "argc=$#"
        for arg in "$@"; do echo "arg=$arg"; done
        echo "PGDATA=${PGDATA-<unset>}"
        echo "NEON_AUTH_TOKEN=${NEON_AUTH_TOKEN-<unset>}"
        echo "NOTIFY_SOCKET=${NOTIFY_SOCKET-<unset>}"
        echo "NEON_CONTROL_PLANE_TOKEN=${NEON_CONTROL_PLANE_TOKEN-<unset>}"
        echo "uid=$(id -u)"
        echo "cwd=$(pwd)"
    } >> "$record/calls.txt"
    cp "$PGDATA/postgresql.conf" "$record/postgresql.conf"
    if [ -e "$record/fail-once" ]; then
        rm -f "$record/fail-once"
        echo "FATAL:  could not reach a quorum of safekeepers (stand-in)" >&2
        exit 1
    fi
    if [ -e "$record/hang" ]; then
        sleep 60 &
        echo $! > "$record/sleep.pid"
        wait
    fi
    echo "LOG:  sync-safekeepers done (stand-in)" >&2
    echo "@LSN@"
    exit 0
fi
exec "@REAL@" "$@"
"#
        .replace("@RECORD@", record.to_str().unwrap())
        .replace("@LSN@", SYNC_LSN)
        .replace("@REAL@", bindir().join("postgres").to_str().unwrap());
        let postgres = bin.join("postgres");
        std::fs::write(&postgres, script).unwrap();
        std::fs::set_permissions(&postgres, std::fs::Permissions::from_mode(0o755)).unwrap();
        for tool in ["initdb", "pg_controldata", "pg_config", "pg_ctl"] {
            std::os::unix::fs::symlink(bindir().join(tool), bin.join(tool)).unwrap();
        }
        StandIn { dir }
    }

    fn postgres(&self) -> PathBuf {
        self.dir.path().join("bin/postgres")
    }

    fn record(&self, name: &str) -> PathBuf {
        self.dir.path().join("record").join(name)
    }

    /// Each `--sync-safekeepers` run: its recorded `key=value` lines.
    fn calls(&self) -> Vec<Vec<String>> {
        let text = std::fs::read_to_string(self.record("calls.txt")).unwrap_or_default();
        text.split("call\n")
            .filter(|c| !c.is_empty())
            .map(|c| c.lines().map(str::to_owned).collect())
            .collect()
    }

    fn args(&self) -> Vec<String> {
        vec!["-b".into(), self.postgres().to_str().unwrap().into()]
    }
}

/// The `step_finished` records of `step`.
fn finished(compute: &Compute, step: &str) -> Vec<Value> {
    compute
        .journal()
        .into_iter()
        .filter(|r| r["kind"] == "step_finished" && r["step"] == step)
        .collect()
}

/// Live processes whose command line mentions `dir` (a stand-in script, a postmaster of its
/// PGDATA).
fn processes_mentioning(dir: &Path) -> Vec<(u32, String)> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            == Some("Z");
        if !zombie && cmdline.contains(&needle) {
            found.push((pid, cmdline));
        }
    }
    found
}

fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty()
        && stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            != Some("Z")
}

/// Counts the table's rows and sums its ids, in the compute.
fn table_facts(client: &mut postgres::Client) -> (i64, i64) {
    let table = sample_backup().table;
    let row = client
        .query_one(
            &format!("SELECT count(*)::bigint, sum(id)::bigint FROM {table}"),
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

// ---------------------------------------------------------------------------------------------
// End to end

#[test]
fn a_primary_starts_from_the_pageservers_base_backup() {
    let stand_in = StandIn::new();
    let pageserver = pageserver(vec![]);
    let port = free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(neon_spec(port, &pageserver.connstring(), json!("Primary"))),
        args: stand_in.args(),
        ..Launch::default()
    });
    let state = compute.wait_running();
    assert_eq!(state["storage"], "neon");
    assert!(
        state["startup"]["basebackup_ms"].as_u64().unwrap() > 0,
        "{state}"
    );

    // Exactly Neon's command, at the LSN the sync printed, once.
    assert_eq!(
        pageserver.commands(),
        [format!("basebackup {TENANT} {TIMELINE} {SYNC_LSN} --gzip")]
    );
    let startups = pageserver.startups();
    assert_eq!(startups.len(), 1);
    assert_eq!(startups[0]["user"], "no_user");
    assert_eq!(startups[0]["application_name"], "compute_ctl");
    assert_eq!(startups[0]["options"], "-c neon.compute_mode=primary");
    assert_eq!(pageserver.passwords(), [TOKEN]);

    // The journal: the sync's LSN, then the base backup's facts.
    let sync = finished(&compute, "sync_safekeepers");
    assert_eq!(sync.len(), 1);
    assert_eq!(sync[0]["output"]["detail"]["lsn"], SYNC_LSN, "{}", sync[0]);
    let fetch = finished(&compute, "fetch_basebackup");
    assert_eq!(fetch.len(), 1);
    let detail = &fetch[0]["output"]["detail"];
    assert_eq!(
        detail["command"],
        format!("basebackup {TENANT} {TIMELINE} {SYNC_LSN} --gzip"),
        "{detail}"
    );
    assert_eq!(
        detail["bytes_received"].as_u64().unwrap(),
        sample_backup().gz.len() as u64
    );
    assert_eq!(
        detail["files"].as_u64().unwrap(),
        sample_backup().files as u64
    );
    assert_eq!(
        compute.transitions(),
        [
            "empty->init",
            "init->sync_safekeepers",
            "sync_safekeepers->basebackup",
            "basebackup->starting",
            "starting->configuring",
            "configuring->running"
        ]
    );

    // The source database's rows are there, and the spec was applied on top of them.
    let mut admin = compute.admin();
    assert_eq!(
        table_facts(&mut admin),
        (sample_backup().rows, sample_backup().id_sum)
    );
    compute
        .connect("app", Some("app-secret"), "postgres")
        .unwrap();
    let tenant: String = admin
        .query_one("SELECT current_setting('neon.tenant_id')", &[])
        .unwrap()
        .get(0);
    assert_eq!(tenant, TENANT);
    drop(admin);

    // Every unpacked file belongs to the Postgres user; PGDATA stays 0700.
    let pgdata = std::fs::metadata(&compute.pgdata).unwrap();
    assert_eq!(pgdata.mode() & 0o777, 0o700);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_ne!(pgdata.uid(), 0, "PGDATA belongs to root");
    }
    let mut stack = vec![compute.pgdata.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let meta = entry.metadata().unwrap();
            assert_eq!(
                meta.uid(),
                pgdata.uid(),
                "{} is not the postgres user's",
                entry.path().display()
            );
            if meta.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    assert_eq!(
        std::fs::metadata(compute.pgdata.join("global/pg_control"))
            .unwrap()
            .mode()
            & 0o777,
        0o600
    );

    let (status, _, _) = compute.post("/terminate", None, &[]);
    assert_eq!(status, 200);
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
}

#[test]
fn sync_safekeepers_runs_postgres_as_neon_does_and_retries_a_failure() {
    let stand_in = StandIn::new();
    std::fs::write(stand_in.record("fail-once"), "").unwrap();
    let pageserver = pageserver(vec![]);
    let port = free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(neon_spec(port, &pageserver.connstring(), json!("Primary"))),
        args: stand_in.args(),
        env: vec![
            // Ours, not Postgres's: neither may reach it.
            ("NOTIFY_SOCKET".into(), "/nonexistent/notify.sock".into()),
            ("NEON_AUTH_TOKEN".into(), "inherited-not-the-specs".into()),
            (
                "NEON_CONTROL_PLANE_TOKEN".into(),
                "control-plane-secret".into(),
            ),
        ],
        ..Launch::default()
    });
    compute.wait_running();

    let calls = stand_in.calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let pgdata = std::fs::canonicalize(&compute.pgdata).unwrap();
    let postgres_uid = std::fs::metadata(&compute.pgdata).unwrap().uid();
    for call in &calls {
        assert_eq!(
            call,
            &[
                "argc=1".to_string(),
                "arg=--sync-safekeepers".into(),
                format!("PGDATA={}", compute.pgdata.display()),
                format!("NEON_AUTH_TOKEN={TOKEN}"),
                "NOTIFY_SOCKET=<unset>".into(),
                "NEON_CONTROL_PLANE_TOKEN=<unset>".into(),
                format!("uid={postgres_uid}"),
                format!("cwd={}", pgdata.display()),
            ]
        );
    }
    // The walproposer's settings were in postgresql.conf when it ran.
    let conf = std::fs::read_to_string(stand_in.record("postgresql.conf")).unwrap();
    for line in [
        format!("neon.safekeepers = '{}'", SAFEKEEPERS.join(",")),
        format!("neon.tenant_id = '{TENANT}'"),
        format!("neon.timeline_id = '{TIMELINE}'"),
        format!("neon.pageserver_connstring = '{}'", pageserver.connstring()),
    ] {
        assert!(
            conf.lines().any(|l| l == line),
            "{line:?} missing from:\n{conf}"
        );
    }

    // The first attempt failed with the program's own words, retryable; the second's LSN
    // reached the pageserver.
    let sync = finished(&compute, "sync_safekeepers");
    assert_eq!(sync.len(), 2, "{sync:?}");
    let error = &sync[0]["error"];
    assert_eq!(error["kind"], "storage", "{}", sync[0]);
    assert_eq!(error["retryable"], true);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("--sync-safekeepers failed") && message.contains("quorum of safekeepers"),
        "{message}"
    );
    assert_eq!(sync[1]["output"]["detail"]["lsn"], SYNC_LSN);
    assert_eq!(
        pageserver.commands(),
        [format!("basebackup {TENANT} {TIMELINE} {SYNC_LSN} --gzip")]
    );
}

#[test]
fn a_replica_fetches_the_latest_backup_and_runs_as_a_hot_standby() {
    let pageserver = pageserver(vec![]);
    let port = free_port();
    // Below the primary's (the sample backup's server runs initdb's 100): raised to it.
    let mut spec = neon_spec(port, &pageserver.connstring(), json!("Replica"));
    crate::support::compute::set_setting(&mut spec, "max_connections", "40");
    let mut compute = Compute::start(Launch {
        spec: Some(spec),
        ..Launch::default()
    });
    let state = compute.wait_running();
    assert_eq!(state["pending_restart"], json!([]), "{state}");
    assert_eq!(
        pageserver.commands(),
        [format!("basebackup {TENANT} {TIMELINE} --gzip --replica")]
    );
    let backup = finished(&compute, "fetch_basebackup");
    let raised = backup[0]["output"]["detail"]["standby_settings"]
        .as_array()
        .unwrap_or_else(|| panic!("{}", backup[0]))
        .iter()
        .find(|s| s["name"] == "max_connections")
        .cloned()
        .unwrap();
    assert_eq!(
        raised,
        json!({ "name": "max_connections", "spec": "40", "primary": 100, "used": 100, "raised": true })
    );
    assert_eq!(
        pageserver.startups()[0]["options"],
        "-c neon.compute_mode=replica"
    );
    let sync = finished(&compute, "sync_safekeepers");
    assert!(
        sync[0]["output"]["detail"]["skipped"]
            .as_str()
            .unwrap()
            .contains("Replica"),
        "{}",
        sync[0]
    );
    assert!(compute.pgdata.join("standby.signal").is_file());
    let mut admin = compute.admin();
    let in_recovery: bool = admin
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get(0);
    assert!(in_recovery);
    let max_connections: String = admin.query_one("SHOW max_connections", &[]).unwrap().get(0);
    assert_eq!(max_connections, "100");
    assert_eq!(
        table_facts(&mut admin),
        (sample_backup().rows, sample_backup().id_sum)
    );
}

#[test]
fn neons_own_library_is_refused_by_a_vanilla_postgres() {
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/specs/neon-cluster-spec.json"
    ))
    .unwrap();
    let fixture: Value = serde_json::from_str(&fixture).unwrap();
    let mut ours = neon_spec(
        free_port(),
        "postgresql://no_user@127.0.0.1:1",
        json!("Primary"),
    );
    ours["cluster"]["settings"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "shared_preload_libraries", "value": "neon", "vartype": "string" }));

    let dir = traversable_tempdir();
    let fixture_path = dir.path().join("fixture.json");
    std::fs::write(&fixture_path, fixture.to_string()).unwrap();
    // Its form is fine: `spec check` without a binary accepts it.
    let check = std::process::Command::new(crate::support::compute::binary())
        .args(["spec", "check"])
        .arg(&fixture_path)
        .output()
        .unwrap();
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );

    for (name, spec) in [("fixture", &fixture), ("ours", &ours)] {
        // -S: exit 3 before anything is touched.
        let path = dir.path().join(format!("{name}.json"));
        std::fs::write(&path, spec.to_string()).unwrap();
        let pgdata = dir.path().join(format!("{name}-pgdata"));
        let output = crate::support::compute::run_once(&pgdata, Some(&path), &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(3), "{name}: {stderr}");
        assert!(
            stderr.contains("shared_preload_libraries")
                && stderr.contains("\"neon\"")
                && stderr.contains("Neon's Postgres build"),
            "{name}: {stderr}"
        );
        assert!(!pgdata.exists(), "{name}: PGDATA was created");
    }

    // POST /spec: 400 naming the setting.
    let mut compute = Compute::start(Launch::default());
    compute.wait_phase("empty", MINUTE);
    for (name, spec) in [("fixture", &fixture), ("ours", &ours)] {
        let (status, body) = compute.post_spec(spec);
        assert_eq!(status, 400, "{name}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(
            error.contains("Neon's Postgres build")
                && body["path"]
                    .as_str()
                    .unwrap()
                    .starts_with("cluster.settings["),
            "{name}: {body}"
        );
    }
    assert_eq!(compute.state()["phase"], "empty");
}

// ---------------------------------------------------------------------------------------------
// Failures, retries, termination

#[test]
fn a_pageserver_down_at_first_is_retried_until_it_answers() {
    // Made now: the pageserver must be ready to serve within the retries.
    sample_backup();
    let stand_in = StandIn::new();
    let ps_port = free_port();
    let port = free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(neon_spec(
            port,
            &format!("postgresql://no_user@127.0.0.1:{ps_port}"),
            json!("Primary"),
        )),
        args: stand_in.args(),
        ..Launch::default()
    });
    let retrying = compute.wait_state(MINUTE, "a second basebackup attempt", |s| {
        s["phase"] == "basebackup" && s["attempt"].as_u64().unwrap_or(0) >= 2
    });
    eprintln!("pageserver comes up at attempt {}", retrying["attempt"]);
    let pageserver = pageserver_on(Some(ps_port), vec![]);
    compute.wait_running();

    let fetches = finished(&compute, "fetch_basebackup");
    assert!(fetches.len() >= 2, "{fetches:?}");
    let first = &fetches[0]["error"];
    assert_eq!(first["kind"], "storage", "{}", fetches[0]);
    assert_eq!(first["retryable"], true);
    let message = first["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("cannot connect to pageserver 127.0.0.1:{ps_port}"))
            && message.to_lowercase().contains("refused"),
        "{message}"
    );
    assert!(fetches.last().unwrap()["output"]["detail"]["command"].is_string());
    // The attempts are journaled as they happened.
    let attempts: Vec<u64> = compute
        .journal()
        .iter()
        .filter(|r| r["kind"] == "transition" && r["to"] == "basebackup")
        .filter_map(|r| r["attempt"].as_u64())
        .collect();
    assert!(attempts.iter().any(|a| *a >= 2), "{attempts:?}");
    assert_eq!(pageserver.commands().len(), 1);
    assert_eq!(
        table_facts(&mut compute.admin()),
        (sample_backup().rows, sample_backup().id_sum)
    );
}

#[test]
fn a_stream_cut_midway_is_fetched_again_into_a_clean_pgdata() {
    let stand_in = StandIn::new();
    let pageserver = pageserver(vec![Answer::DropAfter(300 * 1024)]);
    let port = free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(neon_spec(port, &pageserver.connstring(), json!("Primary"))),
        args: stand_in.args(),
        ..Launch::default()
    });
    compute.wait_running();
    assert_eq!(pageserver.connections(), 2);
    let fetches = finished(&compute, "fetch_basebackup");
    assert_eq!(fetches.len(), 2, "{fetches:?}");
    let error = &fetches[0]["error"];
    assert_eq!(error["retryable"], true, "{}", fetches[0]);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "lost the connection to pageserver 127.0.0.1:{}",
            pageserver.port()
        )) && message.contains("during the copy"),
        "{message}"
    );
    assert_eq!(
        table_facts(&mut compute.admin()),
        (sample_backup().rows, sample_backup().id_sum)
    );
}

#[test]
fn a_pageserver_that_keeps_refusing_fails_the_start_with_its_message() {
    let stand_in = StandIn::new();
    let refusal = format!("tenant {TENANT} is not active (test pageserver)");
    let pageserver = pageserver(vec![Answer::Error(refusal.clone()); 10]);
    let port = free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(neon_spec(port, &pageserver.connstring(), json!("Primary"))),
        args: [
            stand_in.args(),
            vec!["--failed-linger".into(), "60s".into()],
        ]
        .concat(),
        ..Launch::default()
    });
    let failed = compute.wait_phase("failed", MINUTE);
    let error = &failed["error"];
    assert_eq!(error["phase"], "basebackup", "{failed}");
    assert_eq!(error["step"], "fetch_basebackup");
    assert_eq!(error["kind"], "storage");
    assert_eq!(error["retryable"], true);
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(&refusal) && message.contains("pageserver 127.0.0.1"),
        "{message}"
    );
    // Five attempts (the policy's), each asked the pageserver once, each journaled.
    assert_eq!(pageserver.commands().len(), 5);
    let fetches = finished(&compute, "fetch_basebackup");
    assert_eq!(fetches.len(), 5, "{fetches:?}");
    let attempts: Vec<u64> = compute
        .journal()
        .iter()
        .filter(|r| r["kind"] == "transition" && r["from"] == "basebackup")
        .filter_map(|r| r["attempt"].as_u64())
        .collect();
    assert!(attempts.contains(&5), "{attempts:?}");
    assert!(processes_in(&compute.pgdata).is_empty());
}

#[test]
fn terminate_during_a_stalled_base_backup_exits_at_once() {
    let stand_in = StandIn::new();
    let pageserver = pageserver(vec![Answer::StallAfter(256 * 1024); 5]);
    let port = free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(neon_spec(port, &pageserver.connstring(), json!("Primary"))),
        args: stand_in.args(),
        ..Launch::default()
    });
    let stalled = compute.wait_state(MINUTE, "base backup progress", |s| {
        s["phase"] == "basebackup" && s["progress"]["bytes_done"].as_u64().unwrap_or(0) > 0
    });
    assert_eq!(stalled["progress"]["step"], "fetch_basebackup", "{stalled}");
    // Let it sit in the stall a little: the read is blocked in the kernel now.
    std::thread::sleep(Duration::from_millis(300));

    let started = Instant::now();
    let (status, body, _) = compute.post("/terminate", None, &[]);
    let answered = started.elapsed();
    assert_eq!(status, 200, "{body}");
    let exit = compute.wait_exit(MINUTE);
    let exited = started.elapsed();
    eprintln!(
        "terminate during a stalled base backup: answered after {} ms, exited after {} ms",
        answered.as_millis(),
        exited.as_millis()
    );
    assert_eq!(exit.code(), Some(0));
    assert!(exited < Duration::from_secs(5), "took {exited:?}");
    assert!(processes_in(&compute.pgdata).is_empty());
    assert!(
        processes_mentioning(&compute.root).is_empty(),
        "{:?}",
        processes_mentioning(&compute.root)
    );
    // The pageserver saw its client go.
    let deadline = Instant::now() + Duration::from_secs(5);
    while pageserver.stall_ended().is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(pageserver.stall_ended().len(), 1);
}

#[test]
fn terminate_during_sync_safekeepers_kills_the_program() {
    let stand_in = StandIn::new();
    std::fs::write(stand_in.record("hang"), "").unwrap();
    let port = free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(neon_spec(
            port,
            "postgresql://no_user@127.0.0.1:1",
            json!("Primary"),
        )),
        args: stand_in.args(),
        ..Launch::default()
    });
    compute.wait_phase("sync_safekeepers", MINUTE);
    let deadline = Instant::now() + MINUTE;
    let sleeper = loop {
        if let Ok(pid) = std::fs::read_to_string(stand_in.record("sleep.pid")) {
            if let Ok(pid) = pid.trim().parse::<u32>() {
                break pid;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the stand-in never started its sleep"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(alive(sleeper));

    let started = Instant::now();
    let (status, _, _) = compute.post("/terminate", None, &[]);
    assert_eq!(status, 200);
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
    let exited = started.elapsed();
    eprintln!(
        "terminate during sync-safekeepers: exited after {} ms",
        exited.as_millis()
    );
    assert!(exited < Duration::from_secs(5), "took {exited:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(sleeper) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        !alive(sleeper),
        "the sync's child process outlived the cancel"
    );
    assert!(processes_mentioning(stand_in.dir.path()).is_empty());
}

// ---------------------------------------------------------------------------------------------
// Both sides of the wire, each against an independent other side

#[test]
fn the_test_pageserver_serves_libpq_and_the_postgres_crate() {
    let pageserver = pageserver(vec![]);
    let backup = &sample_backup().gz;
    let command = format!("basebackup {TENANT} {TIMELINE} 0/2000000 --gzip");

    // libpq, through psql (simple query protocol).
    let out = std::process::Command::new(bindir().join("psql"))
        .arg(format!(
            "host=127.0.0.1 port={} user=no_user dbname=postgres",
            pageserver.port()
        ))
        .args(["-X", "-q", "-c", &command])
        .env("PGPASSWORD", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == **backup,
        "psql received {} bytes",
        out.stdout.len()
    );

    // The postgres crate (extended query protocol).
    let mut client = postgres::Config::new()
        .host("127.0.0.1")
        .port(pageserver.port())
        .user("no_user")
        .password(TOKEN)
        .connect(postgres::NoTls)
        .unwrap();
    let mut received = Vec::new();
    client
        .copy_out(command.as_str())
        .unwrap()
        .read_to_end(&mut received)
        .unwrap();
    assert!(received == **backup, "received {} bytes", received.len());
    let error = client
        .copy_out(format!("basebackup {TENANT} ffffffffffffffffffffffffffffffff --gzip").as_str())
        .err()
        .unwrap();
    let said = error.as_db_error().map(|e| e.message().to_string());
    assert!(
        said.as_deref().is_some_and(|m| m.contains("not found")),
        "{error:?}"
    );
    drop(client);

    // A wrong token is refused.
    let refused = postgres::Config::new()
        .host("127.0.0.1")
        .port(pageserver.port())
        .user("no_user")
        .password("wrong")
        .connect(postgres::NoTls)
        .err()
        .unwrap();
    let said = refused.as_db_error().map(|e| e.message().to_string());
    assert!(
        said.as_deref().is_some_and(|m| m.contains("token")),
        "{refused:?}"
    );
    assert_eq!(pageserver.commands()[0], command);
}

fn wire_options(
    config: postgres::Config,
    password: Option<&str>,
) -> compute_ctl::storage::wire::ConnectOptions {
    compute_ctl::storage::wire::ConnectOptions {
        config,
        tls: Default::default(),
        password: password.map(str::to_owned),
        parameters: vec![("application_name".into(), "wire-test".into())],
        idle_timeout: Duration::from_secs(30),
        label: "server under test".into(),
    }
}

#[test]
fn the_wire_client_copies_from_a_real_postgres_with_every_password_method() {
    use compute_ctl::storage::wire::{self, WireError};
    use compute_ctl::sync::CancelToken;

    let pg = TestPostgres::start_with(crate::support::postgres::Setup {
        pg_hba: Some(
            "local all all trust\n\
             host all cloud_admin 127.0.0.1/32 trust\n\
             host all md5_user 127.0.0.1/32 md5\n\
             host all scram_user 127.0.0.1/32 scram-sha-256\n\
             host all clear_user 127.0.0.1/32 password\n"
                .into(),
        ),
        ..Default::default()
    });
    let mut admin = pg.client("postgres");
    admin
        .batch_execute(
            "SET password_encryption = 'md5'; CREATE ROLE md5_user LOGIN PASSWORD 'md5-pw';
             SET password_encryption = 'scram-sha-256';
             CREATE ROLE scram_user LOGIN PASSWORD 'scram-pw';
             CREATE ROLE clear_user LOGIN PASSWORD 'clear-pw';",
        )
        .unwrap();
    let query = "COPY (SELECT g, md5(g::text) FROM generate_series(1, 20000) g) TO STDOUT";
    let mut expected = Vec::new();
    admin
        .copy_out(query)
        .unwrap()
        .read_to_end(&mut expected)
        .unwrap();
    assert!(expected.len() > 500_000);

    for (user, password) in [
        ("cloud_admin", None),
        ("md5_user", Some("md5-pw")),
        ("scram_user", Some("scram-pw")),
        ("clear_user", Some("clear-pw")),
    ] {
        let cancel = CancelToken::new();
        let mut connection = wire::connect(
            &wire_options(pg.config(user, "postgres"), password),
            &cancel,
        )
        .unwrap_or_else(|e| panic!("{user}: {e}"));
        let mut copy = connection.copy_out(query).unwrap();
        let mut received = Vec::new();
        copy.read_to_end(&mut received).unwrap();
        assert!(received == expected, "{user}: {} bytes", received.len());
        assert_eq!(copy.received(), expected.len() as u64);
        copy.finish().unwrap();
        connection.close();
    }

    // A wrong password: Postgres's own refusal.
    let refused = wire::connect(
        &wire_options(pg.config("scram_user", "postgres"), Some("wrong")),
        &CancelToken::new(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(&refused, WireError::Server { message, .. } if message.contains("28P01")),
        "{refused}"
    );
    // An error in the middle of the data: the reader fails, the typed error says why.
    let mut connection = wire::connect(
        &wire_options(pg.config("cloud_admin", "postgres"), None),
        &CancelToken::new(),
    )
    .unwrap();
    let mut copy = connection
        .copy_out("COPY (SELECT 1 / (g - 15000) FROM generate_series(1, 20000) g) TO STDOUT")
        .unwrap();
    assert!(copy.read_to_end(&mut Vec::new()).is_err());
    let failure = copy.take_failure().unwrap();
    assert!(
        matches!(&failure, WireError::Server { message, .. } if message.contains("division by zero") && message.contains("22012")),
        "{failure}"
    );
    // A command that answers without COPY.
    drop(copy);
    let mut connection = wire::connect(
        &wire_options(pg.config("cloud_admin", "postgres"), None),
        &CancelToken::new(),
    )
    .unwrap();
    let not_copy = connection.copy_out("SELECT 1").err().unwrap();
    assert!(matches!(not_copy, WireError::Protocol { .. }), "{not_copy}");
}

#[test]
fn a_cancel_ends_a_silent_connection_at_once() {
    use compute_ctl::storage::wire::{self, WireError};
    use compute_ctl::sync::CancelToken;

    // Accepts, then says nothing: the client blocks waiting for authentication.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let holder = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut stream = stream;
        let mut sink = Vec::new();
        // Returns when the client closes its end.
        let _ = stream.read_to_end(&mut sink);
    });
    let mut config = postgres::Config::new();
    config.host("127.0.0.1").port(port).user("nobody");
    let cancel = CancelToken::new();
    let canceller = {
        let cancel = cancel.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let at = Instant::now();
            cancel.cancel();
            at
        })
    };
    let result = wire::connect(&wire_options(config, None), &cancel);
    let returned = Instant::now();
    let cancelled_at = canceller.join().unwrap();
    assert!(
        matches!(result, Err(WireError::Cancelled { .. })),
        "{:?}",
        result.err()
    );
    let lag = returned.duration_since(cancelled_at);
    eprintln!(
        "wire connect returned {} ms after the cancel",
        lag.as_millis()
    );
    assert!(lag < Duration::from_secs(1), "{lag:?}");
    holder.join().unwrap();
}

#[test]
fn a_prepared_cluster_is_discarded_for_a_neon_spec() {
    let stand_in = StandIn::new();
    let pageserver = pageserver(vec![]);
    let mut args = stand_in.args();
    args.push("--prepare".into());
    let mut compute = Compute::start(Launch {
        args,
        ..Launch::default()
    });
    compute.wait_state(MINUTE, "prepared", |s| s["prepared"] == true);
    let port = free_port();
    let (status, _) =
        compute.post_spec(&neon_spec(port, &pageserver.connstring(), json!("Primary")));
    assert_eq!(status, 202);
    let state = compute.wait_running();
    assert_eq!(state["storage"], "neon");
    let used = finished(&compute, "use_prepared");
    assert_eq!(used.len(), 1);
    assert_eq!(used[0]["output"]["result"], "prepared_discarded");
    let reason = used[0]["output"]["detail"]["reason"].as_str().unwrap();
    assert!(reason.contains("neon storage"), "{reason}");
    assert!(!compute.root.join("pgdata.prepared").exists());
    // The usual path: the sync's LSN, the pageserver's base backup, its rows.
    assert_eq!(finished(&compute, "sync_safekeepers").len(), 1);
    assert_eq!(
        pageserver.commands(),
        [format!("basebackup {TENANT} {TIMELINE} {SYNC_LSN} --gzip")]
    );
    let mut admin = compute.admin();
    assert_eq!(
        table_facts(&mut admin),
        (sample_backup().rows, sample_backup().id_sum)
    );
}
