//! The upstream PostgreSQL backend end to end: the real binary against real upstream servers
//! (`TestPostgres`) on loopback: a streaming replica, a read-write branch, the refusal of
//! `Static`, an unreachable upstream and a refused password, and base backups interrupted by
//! `kill -9`, `POST /terminate` and SIGTERM.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::compute::{
    embedded_spec, free_port, md5_verifier, processes_in, set_setting, Compute, Launch,
};
use crate::support::postgres::{Setup, TestPostgres};

const MINUTE: Duration = Duration::from_secs(60);

/// The replication role's password in these tests; it must never show in a log or record.
const REPLICATOR_PASSWORD: &str = "rep-s3cret-do-not-log";

/// `pg_hba.conf` of an upstream: the superuser is trusted from loopback (as compute_ctl's
/// own tests connect), every other role needs its password, for normal and replication
/// connections alike.
const UPSTREAM_HBA: &str = "\
local all all trust
host all cloud_admin 127.0.0.1/32 trust
host replication cloud_admin 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
host replication all 127.0.0.1/32 scram-sha-256
";

/// An upstream with a `replicator` role (LOGIN REPLICATION, password) and a table `t` of
/// `rows` small rows.
fn upstream(rows: i64) -> TestPostgres {
    upstream_with(rows, &[])
}

/// `upstream` with `settings` on its command line.
fn upstream_with(rows: i64, settings: &[(&str, &str)]) -> TestPostgres {
    upstream_with_hba(rows, UPSTREAM_HBA, settings)
}

/// `upstream_with` and `hba` as its `pg_hba.conf`.
fn upstream_with_hba(rows: i64, hba: &str, settings: &[(&str, &str)]) -> TestPostgres {
    let pg = TestPostgres::start_with_settings(
        Setup {
            pg_hba: Some(hba.to_string()),
            ..Setup::default()
        },
        settings,
    );
    let mut client = pg.client("postgres");
    client
        .batch_execute(&format!(
            "CREATE ROLE replicator LOGIN REPLICATION PASSWORD '{REPLICATOR_PASSWORD}';
             CREATE TABLE t (id bigint PRIMARY KEY, note text NOT NULL);"
        ))
        .unwrap();
    client
        .execute(
            "INSERT INTO t SELECT g, 'row ' || g FROM generate_series(1, $1::bigint) g",
            &[&rows],
        )
        .unwrap();
    pg
}

/// An upstream holding a table `big` of about `mb` megabytes (900-byte rows kept inline), so
/// that a base backup of it takes seconds.
fn big_upstream(mb: i64) -> TestPostgres {
    let pg = upstream(10);
    let rows = mb * 1024 * 1024 / 1000;
    let started = Instant::now();
    pg.client("postgres")
        .batch_execute(&format!(
            "CREATE TABLE big (id bigint, pad text);
             ALTER TABLE big ALTER COLUMN pad SET STORAGE PLAIN;
             INSERT INTO big SELECT g, repeat('x', 900) FROM generate_series(1, {rows}) g;
             CHECKPOINT;"
        ))
        .unwrap();
    eprintln!(
        "big upstream: {rows} rows (~{mb} MB) in {:?}",
        started.elapsed()
    );
    pg
}

/// The replicator's connection string, with its password in it (as a control plane would
/// send it).
fn replicator_connstr(pg: &TestPostgres, password: &str) -> String {
    format!(
        "postgresql://replicator:{password}@127.0.0.1:{}/postgres?application_name=compute_it",
        pg.port()
    )
}

/// A compute spec on a free port that takes its data from `connstring`.
fn upstream_spec(connstring: &str, mode: Value) -> Value {
    let mut spec = embedded_spec(free_port());
    spec["upstream_connstring"] = json!(connstring);
    spec["mode"] = mode;
    spec
}

fn count(client: &mut postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap()
        .get(0)
}

/// The first `step_finished` record of `step` in `epoch`.
fn finished(compute: &Compute, step: &str, epoch: u64) -> Value {
    compute
        .journal()
        .into_iter()
        .find(|r| r["kind"] == "step_finished" && r["step"] == step && r["epoch"] == epoch)
        .unwrap_or_else(|| panic!("no step_finished for {step} in epoch {epoch}"))
}

/// Live `pg_basebackup` processes (the guard `sh` too) whose command line names `pgdata`.
fn basebackups_into(pgdata: &Path) -> Vec<u32> {
    let needle = pgdata.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains("pg_basebackup") && cmdline.contains(&needle) {
            found.push(pid);
        }
    }
    found
}

/// Waits until `until` holds, polling; panics with `what` after `timeout`.
fn poll(timeout: Duration, what: &str, mut until: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if until() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Waits until the base backup has copied some data (its progress shows in `/state`).
fn wait_backup_under_way(compute: &mut Compute) -> Value {
    compute.wait_state(MINUTE, "a base backup under way", |s| {
        s["phase"] == "basebackup"
            && s["progress"]["step"] == "fetch_basebackup"
            && s["progress"]["bytes_done"].as_u64().unwrap_or(0) > 0
            && s["progress"]["bytes_done"].as_u64() < s["progress"]["bytes_total"].as_u64()
    })
}

#[test]
fn replica_streams_from_the_upstream_through_its_slot() {
    let upstream = upstream(1000);
    let mut spec = upstream_spec(
        &replicator_connstr(&upstream, REPLICATOR_PASSWORD),
        json!("Replica"),
    );
    spec["upstream_slot_name"] = json!("compute_it_slot");
    spec["cluster"]["roles"] = json!([
        { "name": "alice", "encrypted_password": md5_verifier("alice-secret", "alice") }
    ]);
    spec["cluster"]["databases"] = json!([{ "name": "app", "owner": "alice" }]);
    let mut compute = Compute::start(Launch {
        spec: Some(spec),
        ..Launch::default()
    });
    let state = compute.wait_running();
    assert_eq!(state["storage"], "upstream");

    // The rows of the copy, read-only, in recovery.
    let mut replica = compute.admin();
    assert_eq!(count(&mut replica, "t"), 1000);
    let in_recovery: bool = replica
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get(0);
    assert!(in_recovery);
    let refused = replica
        .execute("INSERT INTO t VALUES (0, 'on the replica')", &[])
        .unwrap_err();
    let refused = refused.as_db_error().unwrap().message();
    assert!(refused.contains("read-only transaction"), "{refused}");

    // New rows arrive by streaming.
    let mut primary = upstream.client("postgres");
    primary
        .execute("INSERT INTO t VALUES (1001, 'streamed')", &[])
        .unwrap();
    poll(Duration::from_secs(30), "row 1001 on the replica", || {
        !replica
            .query("SELECT 1 FROM t WHERE id = 1001", &[])
            .unwrap()
            .is_empty()
    });

    // Through the slot, which the base backup created, as the spec's application.
    poll(Duration::from_secs(30), "the slot in use", || {
        let row = primary
            .query_opt(
                "SELECT active FROM pg_replication_slots \
                 WHERE slot_name = 'compute_it_slot' AND slot_type = 'physical'",
                &[],
            )
            .unwrap();
        row.is_some_and(|r| r.get::<_, bool>(0))
    });
    let senders = primary
        .query(
            "SELECT 1 FROM pg_stat_replication \
             WHERE application_name = 'compute_it' AND usename = 'replicator' \
               AND state = 'streaming'",
            &[],
        )
        .unwrap();
    assert_eq!(senders.len(), 1);

    // The journal: the start LSN, the slot, and why roles and databases were not applied.
    let synced = finished(&compute, "sync_safekeepers", 1);
    assert!(synced["output"]["detail"]["lsn"].is_string(), "{synced}");
    assert_eq!(synced["output"]["detail"]["upstream_in_recovery"], false);
    let backup = finished(&compute, "fetch_basebackup", 1);
    assert_eq!(
        backup["output"]["detail"]["slot"],
        json!({ "name": "compute_it_slot", "created": true }),
        "{backup}"
    );
    assert!(backup["output"]["detail"]["bytes"].as_u64().unwrap() > 0);
    let applied = finished(&compute, "apply_spec", 1);
    let skipped = applied["output"]["detail"]["catalog"]["skipped"]
        .as_str()
        .unwrap_or_default();
    assert!(skipped.contains("read-only"), "{applied}");
    let alice = replica
        .query("SELECT 1 FROM pg_roles WHERE rolname = 'alice'", &[])
        .unwrap();
    assert!(alice.is_empty(), "roles are not applied on a replica");

    // The password is nowhere but in the password file (mode 0600).
    let journal = serde_json::to_string(&compute.journal()).unwrap();
    assert!(!journal.contains(REPLICATOR_PASSWORD));
    assert!(!compute.log().contains(REPLICATOR_PASSWORD));
    let conf = std::fs::read_to_string(compute.pgdata.join("postgresql.conf")).unwrap();
    assert!(!conf.contains(REPLICATOR_PASSWORD), "{conf}");
    assert!(conf.contains("primary_conninfo"), "{conf}");
    assert!(
        conf.contains("primary_slot_name = 'compute_it_slot'"),
        "{conf}"
    );
    use std::os::unix::fs::PermissionsExt;
    let passfile = compute.pgdata.join("compute_ctl.upstream.pgpass");
    let mode = std::fs::metadata(&passfile).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(replica);

    let (status, body, _) = compute.post("/terminate", None, &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
    assert!(processes_in(&compute.pgdata).is_empty());
}

#[test]
fn primary_branch_is_read_write_and_its_writes_stay_local() {
    let upstream = upstream(100);
    let mut spec = upstream_spec(
        &format!(
            "postgresql://cloud_admin@127.0.0.1:{}/postgres",
            upstream.port()
        ),
        json!("Primary"),
    );
    spec["cluster"]["roles"] = json!([
        { "name": "alice", "encrypted_password": md5_verifier("alice-secret", "alice") }
    ]);
    spec["cluster"]["databases"] = json!([{ "name": "app", "owner": "alice" }]);
    let mut compute = Compute::start(Launch {
        spec: Some(spec),
        ..Launch::default()
    });
    compute.wait_running();

    let mut branch = compute.admin();
    let in_recovery: bool = branch
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get(0);
    assert!(!in_recovery, "a Primary copy runs read-write");
    assert!(!compute.pgdata.join("standby.signal").exists());
    assert_eq!(count(&mut branch, "t"), 100);
    branch
        .execute("INSERT INTO t VALUES (101, 'only on the branch')", &[])
        .unwrap();
    assert_eq!(count(&mut branch, "t"), 101);
    let mut source = upstream.client("postgres");
    assert_eq!(
        count(&mut source, "t"),
        100,
        "a branch write reached the upstream"
    );

    // The spec's roles and databases are applied on the branch, and only there.
    let mut app = compute
        .connect("alice", Some("alice-secret"), "app")
        .unwrap_or_else(|e| {
            panic!(
                "alice cannot log in to app: {e:?}\n{}",
                finished(&compute, "promote_postgres", 1)
            )
        });
    let who: String = app.query_one("SELECT current_user", &[]).unwrap().get(0);
    assert_eq!(who, "alice");
    let on_upstream = source
        .query("SELECT 1 FROM pg_roles WHERE rolname = 'alice'", &[])
        .unwrap();
    assert!(on_upstream.is_empty());
    let applied = finished(&compute, "apply_spec", 1);
    assert!(
        applied["output"]["detail"]["catalog"]["statements_sent"]
            .as_u64()
            .unwrap()
            > 0,
        "{applied}"
    );
}

#[test]
fn static_over_an_upstream_is_refused_naming_mode() {
    let spec = upstream_spec(
        "postgresql://replicator@127.0.0.1:5432/postgres",
        json!({ "Static": "0/16B3748" }),
    );

    // Over HTTP: 400 naming `mode`, nothing accepted, PGDATA untouched.
    let mut compute = Compute::start(Launch::default());
    compute.wait_phase("empty", MINUTE);
    let (status, body) = compute.post_spec(&spec);
    assert_eq!(status, 400, "{body}");
    let paths = serde_json::to_string(&body).unwrap();
    assert!(paths.contains("\"mode\""), "{body}");
    assert!(!compute.pgdata.exists(), "PGDATA was touched");
    assert_eq!(compute.state()["phase"], "empty");

    // As -S: exit 3, nothing created.
    let mut refused = Compute::start(Launch {
        spec: Some(spec),
        ..Launch::default()
    });
    assert_eq!(refused.wait_exit(MINUTE).code(), Some(3));
    assert!(refused.log().contains("mode"), "{}", refused.log());
    assert!(!refused.pgdata.exists());
    assert!(!refused.state_dir.exists());
}

/// Waits for `failed` after every attempt, checks the error, and the exit code 11.
fn fails_after_attempts(spec: Value, expected: &str, secret: Option<&str>) {
    let started = Instant::now();
    let mut compute = Compute::start(Launch {
        spec: Some(spec),
        args: vec!["--failed-linger".into(), "1s".into()],
        ..Launch::default()
    });
    // Each attempt shows in /state while the step is retried.
    let attempts_seen = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let failed = compute.wait_state(MINUTE, "phase failed", |s| {
        if s["phase"] == "sync_safekeepers" {
            attempts_seen
                .borrow_mut()
                .insert(s["attempt"].as_u64().unwrap_or(0));
        }
        s["phase"] == "failed"
    });
    let error = &failed["error"];
    assert_eq!(error["kind"], "storage", "{failed}");
    assert_eq!(error["step"], "sync_safekeepers", "{failed}");
    assert_eq!(error["retryable"], true, "{failed}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains(expected), "{message}");
    let attempts_seen = attempts_seen.into_inner();
    assert!(
        attempts_seen.iter().max() >= Some(&4),
        "attempts seen in /state: {attempts_seen:?}"
    );
    let records = compute.journal();
    let begun = records
        .iter()
        .filter(|r| r["kind"] == "step_started" && r["step"] == "sync_safekeepers")
        .count();
    assert_eq!(begun, 5);
    let retried: Vec<u64> = records
        .iter()
        .filter(|r| r["kind"] == "transition" && r["to"] == "sync_safekeepers")
        .filter_map(|r| r["attempt"].as_u64())
        .collect();
    assert!(retried.contains(&5), "{retried:?}");
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(11));
    eprintln!("failed and exited after {:?}", started.elapsed());
    assert!(started.elapsed() < Duration::from_secs(30), "too slow");
    if let Some(secret) = secret {
        assert!(!compute.log().contains(secret));
        assert!(!serde_json::to_string(&failed).unwrap().contains(secret));
    }
    assert!(!compute.pgdata.join("PG_VERSION").exists());
}

#[test]
fn unreachable_upstream_fails_retryable_after_every_attempt() {
    // Nothing listens on this port.
    let port = free_port();
    let spec = upstream_spec(
        &format!("postgresql://replicator:pw-not-logged@127.0.0.1:{port}/postgres"),
        json!("Replica"),
    );
    fails_after_attempts(spec, "Connection refused", Some("pw-not-logged"));
}

#[test]
fn refused_password_fails_retryable_with_the_upstreams_message() {
    let upstream = upstream(1);
    let spec = upstream_spec(
        &replicator_connstr(&upstream, "wrong-password-x"),
        json!("Replica"),
    );
    fails_after_attempts(
        spec,
        "password authentication failed for user \"replicator\"",
        Some("wrong-password-x"),
    );
}

#[test]
fn kill_9_during_a_base_backup_then_restart_redoes_it() {
    let upstream = big_upstream(2000);
    let mut spec = upstream_spec(
        &replicator_connstr(&upstream, REPLICATOR_PASSWORD),
        json!("Replica"),
    );
    spec["upstream_slot_name"] = json!("killed_slot");
    let mut compute = Compute::start(Launch {
        spec: Some(spec),
        ..Launch::default()
    });
    let during = wait_backup_under_way(&mut compute);
    assert!(!basebackups_into(&compute.pgdata).is_empty());
    compute.kill9();
    eprintln!("killed compute_ctl at {}", during["progress"]);

    // pg_basebackup and the WAL receiver it forked die with compute_ctl.
    let killed = Instant::now();
    poll(Duration::from_secs(10), "pg_basebackup gone", || {
        basebackups_into(&compute.pgdata).is_empty() && processes_in(&compute.pgdata).is_empty()
    });
    eprintln!("pg_basebackup gone {:?} after the kill", killed.elapsed());

    compute.restart(None, vec![]);
    let state = compute.wait_state(Duration::from_secs(120), "running again", |s| {
        s["phase"] == "running" && s["applied_generation"] == s["desired_generation"]
    });
    assert_eq!(state["epoch"], 2);
    let start = compute
        .journal()
        .into_iter()
        .find(|r| r["kind"] == "start" && r["epoch"] == 2)
        .unwrap();
    let unfinished = start["unfinished_steps"].as_array().unwrap();
    assert!(
        unfinished
            .iter()
            .any(|s| s["step"] == "fetch_basebackup" && s["policy"] == "redo_from_scratch"),
        "{start}"
    );
    // The slot the interrupted backup created is found and used, not created again.
    let backup = finished(&compute, "fetch_basebackup", 2);
    assert_eq!(
        backup["output"]["detail"]["slot"],
        json!({ "name": "killed_slot", "created": false }),
        "{backup}"
    );
    let mut replica = compute.admin();
    let mut source = upstream.client("postgres");
    assert_eq!(count(&mut replica, "big"), count(&mut source, "big"));
    assert_eq!(count(&mut replica, "t"), 10);
    assert!(basebackups_into(&compute.pgdata).is_empty());
}

#[test]
fn terminate_during_a_base_backup_exits_0_at_once() {
    // pg_basebackup reports progress when the wall clock's second changes: a backup of well
    // over a second is seen under way on any machine (800 MB streamed in 0.8 s here).
    let upstream = big_upstream(2000);
    let connstring = replicator_connstr(&upstream, REPLICATOR_PASSWORD);
    for how in ["POST /terminate", "SIGTERM"] {
        let mut compute = Compute::start(Launch {
            spec: Some(upstream_spec(&connstring, json!("Primary"))),
            ..Launch::default()
        });
        wait_backup_under_way(&mut compute);
        let started = Instant::now();
        if how == "SIGTERM" {
            compute.signal(libc::SIGTERM);
        } else {
            let (status, body, _) = compute.post("/terminate", None, &[]);
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["lsn"], Value::Null);
        }
        let status = compute.wait_exit(Duration::from_secs(30));
        let took = started.elapsed();
        eprintln!("{how} during a base backup: exit {status} after {took:?}");
        assert_eq!(status.code(), Some(0), "{how}");
        assert!(took < Duration::from_secs(5), "{how} took {took:?}");
        assert!(basebackups_into(&compute.pgdata).is_empty(), "{how}");
        assert!(processes_in(&compute.pgdata).is_empty(), "{how}");
        let records = crate::support::compute::dump_journal(&compute.state_dir);
        let cancelled = records
            .iter()
            .find(|r| r["kind"] == "step_finished" && r["step"] == "fetch_basebackup")
            .unwrap_or_else(|| panic!("{how}: no step_finished for the base backup"));
        assert_eq!(cancelled["error"]["kind"], "cancelled", "{cancelled}");
    }
}

#[test]
fn upstream_lost_during_a_base_backup_fails_retryable_with_pg_basebackups_words() {
    // Over a second of backup, so that pg_basebackup reports progress mid-way (see above).
    let upstream = big_upstream(2000);
    let spec = upstream_spec(
        &replicator_connstr(&upstream, REPLICATOR_PASSWORD),
        json!("Primary"),
    );
    let mut compute = Compute::start(Launch {
        spec: Some(spec),
        args: vec!["--failed-linger".into(), "1s".into()],
        ..Launch::default()
    });
    wait_backup_under_way(&mut compute);
    // Immediate shutdown of the upstream, and its data gone.
    drop(upstream);

    let failed = compute.wait_phase("failed", MINUTE);
    let error = &failed["error"];
    assert_eq!(error["kind"], "storage", "{failed}");
    assert_eq!(error["step"], "fetch_basebackup", "{failed}");
    assert_eq!(error["retryable"], true, "{failed}");
    let message = error["message"].as_str().unwrap();
    assert!(message.contains("pg_basebackup"), "{message}");
    assert!(message.contains("Connection refused"), "{message}");
    assert!(!message.contains(REPLICATOR_PASSWORD));
    let records = compute.journal();
    let attempts: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "step_finished" && r["step"] == "fetch_basebackup")
        .collect();
    assert_eq!(attempts.len(), 5, "{attempts:?}");
    // The first attempt lost its server mid-stream; the retries could not reach it.
    let first = attempts[0]["error"]["message"].as_str().unwrap();
    assert!(first.contains("pg_basebackup"), "{first}");
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(11));
    assert!(basebackups_into(&compute.pgdata).is_empty());
    assert!(processes_in(&compute.pgdata).is_empty());
}

#[test]
fn copies_of_a_standby_upstream_read_its_receive_lsn() {
    // A standby refuses a base backup of WAL written without full-page images.
    let upstream = upstream_with(100, &[("full_page_writes", "on")]);
    let mut first = Compute::start(Launch {
        spec: Some(upstream_spec(
            &replicator_connstr(&upstream, REPLICATOR_PASSWORD),
            json!("Replica"),
        )),
        ..Launch::default()
    });
    first.wait_running();
    // The first compute is itself a standby; its copy of the upstream's roles lets the
    // replicator in (compute_ctl's pg_hba.conf asks other roles for their password).
    let standby = format!(
        "postgresql://replicator:{REPLICATOR_PASSWORD}@127.0.0.1:{}/postgres",
        first.pg_port()
    );

    // A replica of the replica: cascading replication.
    let mut second = Compute::start(Launch {
        spec: Some(upstream_spec(&standby, json!("Replica"))),
        ..Launch::default()
    });
    second.wait_running();
    let synced = finished(&second, "sync_safekeepers", 1);
    assert_eq!(
        synced["output"]["detail"]["upstream_in_recovery"], true,
        "{synced}"
    );
    assert!(synced["output"]["detail"]["lsn_source"]
        .as_str()
        .unwrap()
        .contains("pg_last_wal_receive_lsn"));
    upstream
        .client("postgres")
        .execute("INSERT INTO t VALUES (101, 'cascaded')", &[])
        .unwrap();
    let mut cascaded = second.admin();
    poll(Duration::from_secs(30), "row 101 two hops away", || {
        !cascaded
            .query("SELECT 1 FROM t WHERE id = 101", &[])
            .unwrap()
            .is_empty()
    });

    // A read-write branch of the standby: its standby.signal is not part of the copy.
    let mut branch = Compute::start(Launch {
        spec: Some(upstream_spec(&standby, json!("Primary"))),
        ..Launch::default()
    });
    branch.wait_running();
    let backup = finished(&branch, "fetch_basebackup", 1);
    let removed = backup["output"]["detail"]["removed_from_copy"].to_string();
    assert!(removed.contains("standby.signal"), "{backup}");
    let mut client = branch.admin();
    let in_recovery: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get(0);
    assert!(!in_recovery);
    client
        .execute("INSERT INTO t VALUES (102, 'branch')", &[])
        .unwrap();
    assert_eq!(count(&mut client, "t"), 102);
}

fn show(client: &mut postgres::Client, name: &str) -> String {
    client
        .query_one(&format!("SHOW {name}"), &[])
        .unwrap()
        .get(0)
}

#[test]
fn a_replica_raises_the_standby_settings_to_the_primarys_and_a_branch_keeps_the_specs() {
    // An ordinary primary (max_connections 100, initdb's default) with more worker processes
    // than Postgres's default, under a spec that asks for fewer connections.
    let upstream = upstream_with(10, &[("max_worker_processes", "12")]);
    let connstring = replicator_connstr(&upstream, REPLICATOR_PASSWORD);
    let mut spec = upstream_spec(&connstring, json!("Replica"));
    set_setting(&mut spec, "max_connections", "50");
    set_setting(&mut spec, "max_wal_senders", "20");
    let mut compute = Compute::start(Launch {
        spec: Some(spec.clone()),
        ..Launch::default()
    });
    let state = compute.wait_running();
    assert_eq!(state["pending_restart"], json!([]), "{state}");
    let mut replica = compute.admin();
    assert_eq!(show(&mut replica, "max_connections"), "100");
    assert_eq!(show(&mut replica, "max_worker_processes"), "12");
    // Above the primary's: the spec's value stands.
    assert_eq!(show(&mut replica, "max_wal_senders"), "20");
    assert_eq!(count(&mut replica, "t"), 10);

    // Journaled: the spec's value and the value used, for each of the five.
    let backup = finished(&compute, "fetch_basebackup", 1);
    let decided = backup["output"]["detail"]["standby_settings"]
        .as_array()
        .unwrap_or_else(|| panic!("{backup}"));
    let by_name = |name: &str| {
        decided
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {backup}"))
            .clone()
    };
    assert_eq!(decided.len(), 5, "{backup}");
    assert_eq!(
        by_name("max_connections"),
        json!({ "name": "max_connections", "spec": "50", "primary": 100, "used": 100, "raised": true })
    );
    assert_eq!(
        by_name("max_worker_processes"),
        json!({ "name": "max_worker_processes", "spec": null, "primary": 12, "used": 12, "raised": true })
    );
    assert_eq!(by_name("max_wal_senders")["raised"], false);
    assert_eq!(by_name("max_wal_senders")["used"], 20);

    // A reconfiguration renders the same raised values: nothing waits for a restart.
    let mut next = spec.clone();
    set_setting(&mut next, "work_mem", "7MB");
    let (status, body) = compute.post_spec(&next);
    assert_eq!(status, 202, "{body}");
    let state = compute.wait_state(MINUTE, "the new spec applied", |s| {
        s["phase"] == "running" && s["applied_generation"] == 2
    });
    assert_eq!(state["pending_restart"], json!([]), "{state}");
    assert_eq!(show(&mut replica, "work_mem"), "7MB");
    assert_eq!(show(&mut replica, "max_connections"), "100");
    drop(replica);
    drop(compute);

    // A Primary branch keeps the spec's values: its recovery checks none of them.
    let mut spec = upstream_spec(
        &format!(
            "postgresql://cloud_admin@127.0.0.1:{}/postgres",
            upstream.port()
        ),
        json!("Primary"),
    );
    set_setting(&mut spec, "max_connections", "50");
    let mut branch = Compute::start(Launch {
        spec: Some(spec),
        ..Launch::default()
    });
    branch.wait_running();
    assert_eq!(show(&mut branch.admin(), "max_connections"), "50");
    let backup = finished(&branch, "fetch_basebackup", 1);
    assert_eq!(backup["output"]["detail"]["standby_settings"], Value::Null);
}

#[test]
fn a_missing_admin_role_names_the_upstreams_superusers_and_the_fix() {
    let upstream = upstream(1);
    upstream
        .client("postgres")
        .batch_execute("CREATE ROLE pgadmin LOGIN SUPERUSER; CREATE ROLE nologin_su SUPERUSER;")
        .unwrap();
    let spec = upstream_spec(
        &replicator_connstr(&upstream, REPLICATOR_PASSWORD),
        json!("Primary"),
    );
    let mut compute = Compute::start(Launch {
        spec: Some(spec),
        args: vec![
            "-C".into(),
            "postgresql://compute_admin@127.0.0.1/postgres".into(),
            "--failed-linger".into(),
            "60s".into(),
        ],
        ..Launch::default()
    });
    let failed = compute.wait_phase("failed", MINUTE);
    let error = &failed["error"];
    assert_eq!(error["step"], "sync_safekeepers", "{failed}");
    // Trying again changes nothing: no retries.
    assert_eq!(error["retryable"], false, "{failed}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("the admin role compute_admin (the user of -C/--connstr) does not exist"),
        "{message}"
    );
    // Which superusers the upstream has (those that can log in), and the fix.
    assert!(
        message.contains("superusers that can log in are cloud_admin, pgadmin"),
        "{message}"
    );
    assert!(
        message.contains("pass -C postgresql://cloud_admin@…"),
        "{message}"
    );
    assert!(!message.contains("nologin_su"), "{message}");
    assert!(!message.contains(REPLICATOR_PASSWORD));
    assert!(!compute.pgdata.join("PG_VERSION").exists());
}

/// A publisher (`wal_level = logical`) with a table `feed` and a publication of it, and an
/// upstream that subscribes to it through the slot `prod_sub` on the publisher.
fn publisher_and_subscriber() -> (TestPostgres, TestPostgres) {
    let publisher = upstream_with(1, &[("wal_level", "logical"), ("log_connections", "on")]);
    publisher
        .client("postgres")
        .batch_execute(
            "CREATE TABLE feed (id bigint PRIMARY KEY);
             INSERT INTO feed VALUES (1);
             CREATE PUBLICATION feed_pub FOR TABLE feed;",
        )
        .unwrap();
    let subscriber = upstream(1);
    let mut client = subscriber.client("postgres");
    client
        .batch_execute("CREATE TABLE feed (id bigint PRIMARY KEY)")
        .unwrap();
    client
        .batch_execute(&format!(
            "CREATE SUBSCRIPTION prod_sub
                 CONNECTION 'host=127.0.0.1 port={} user=cloud_admin dbname=postgres'
                 PUBLICATION feed_pub;",
            publisher.port()
        ))
        .unwrap();
    poll(MINUTE, "the subscriber's initial copy", || {
        count(&mut client, "feed") == 1
    });
    (publisher, subscriber)
}

/// How many connections the publisher's log shows (it runs with `log_connections`).
fn connections_logged(publisher: &TestPostgres) -> usize {
    publisher.log().matches("connection authorized").count()
}

/// The walsenders on `publisher` serving its slot `slot`.
fn senders_of_slot(publisher: &TestPostgres, slot: &str) -> i64 {
    publisher
        .client("postgres")
        .query_one(
            "SELECT count(*) FROM pg_stat_replication r \
             JOIN pg_replication_slots s ON s.active_pid = r.pid WHERE s.slot_name = $1",
            &[&slot],
        )
        .unwrap()
        .get(0)
}

#[test]
fn a_branch_of_a_subscriber_never_consumes_from_its_publisher() {
    let (publisher, subscriber) = publisher_and_subscriber();
    let admin_connstr = format!(
        "postgresql://cloud_admin@127.0.0.1:{}/postgres",
        subscriber.port()
    );
    let mut production = subscriber.client("postgres");
    for drop_them in [false, true] {
        // Every connection to the publisher shows in its log (log_connections): an apply
        // worker of the branch would connect within milliseconds of its start.
        let connections_before = connections_logged(&publisher);
        let mut spec = upstream_spec(&admin_connstr, json!("Primary"));
        if drop_them {
            spec["drop_subscriptions_before_start"] = json!(true);
        }
        let mut branch = Compute::start(Launch {
            spec: Some(spec),
            ..Launch::default()
        });
        branch.wait_running();
        let mut client = branch.admin();
        let subs = client
            .query(
                "SELECT subenabled, subslotname::text FROM pg_subscription WHERE subname = 'prod_sub'",
                &[],
            )
            .unwrap();
        if drop_them {
            assert!(subs.is_empty(), "drop_subscriptions_before_start kept it");
        } else {
            // The copy stays disabled and detached from the production slot.
            assert_eq!(subs.len(), 1);
            assert!(!subs[0].get::<_, bool>(0), "the branch's copy is enabled");
            assert_eq!(subs[0].get::<_, Option<String>>(1), None);
        }
        // Journaled: what was found and what was done.
        let backup = finished(&branch, "fetch_basebackup", 1);
        let journaled = &backup["output"]["detail"]["subscriptions"];
        eprintln!(
            "branch ({}): pg_basebackup {} ms, private start {} ms",
            journaled["policy"],
            backup["output"]["detail"]["pg_basebackup_ms"],
            journaled["private_start_ms"]
        );
        let policy = if drop_them { "dropped" } else { "disabled" };
        assert_eq!(journaled["policy"], policy, "{backup}");
        assert_eq!(
            journaled["subscriptions"],
            json!([{ "database": "postgres", "name": "prod_sub", "was_enabled": true, "slot_detached": "prod_sub" }]),
            "{backup}"
        );

        // Nothing on the branch connects to the publisher: a bounded look for what must
        // not happen.
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            assert_eq!(
                connections_logged(&publisher),
                connections_before,
                "the branch connected to the publisher:\n{}",
                publisher.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The publisher's slot is untouched and still serves the production subscriber
        // alone: a new row reaches the subscriber, never the branch.
        let id = if drop_them { 3_i64 } else { 2 };
        publisher
            .client("postgres")
            .execute("INSERT INTO feed VALUES ($1)", &[&id])
            .unwrap();
        poll(MINUTE, "the row on the production subscriber", || {
            !production
                .query("SELECT 1 FROM feed WHERE id = $1", &[&id])
                .unwrap()
                .is_empty()
        });
        assert_eq!(senders_of_slot(&publisher, "prod_sub"), 1);
        assert!(client
            .query("SELECT 1 FROM feed WHERE id = $1", &[&id])
            .unwrap()
            .is_empty());
        // The branch is read-write; a DROP SUBSCRIPTION there leaves the publisher's slot.
        if !drop_them {
            client.batch_execute("DROP SUBSCRIPTION prod_sub").unwrap();
        }
        let slots: i64 = publisher
            .client("postgres")
            .query_one(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'prod_sub'",
                &[],
            )
            .unwrap()
            .get(0);
        assert_eq!(slots, 1, "the production slot was dropped");
    }
}

#[test]
fn a_branch_of_an_upstream_without_subscriptions_skips_the_private_start() {
    let upstream = upstream(1);
    let spec = upstream_spec(
        &format!(
            "postgresql://cloud_admin@127.0.0.1:{}/postgres",
            upstream.port()
        ),
        json!("Primary"),
    );
    let mut branch = Compute::start(Launch {
        spec: Some(spec),
        ..Launch::default()
    });
    branch.wait_running();
    let backup = finished(&branch, "fetch_basebackup", 1);
    assert_eq!(
        backup["output"]["detail"]["subscriptions"]["policy"], "none",
        "{backup}"
    );
}

/// An upstream that speaks TLS with `certs` and lets the replicator in over TLS only (the
/// harness's own superuser connections go without).
fn tls_upstream(certs: &crate::support::certs::TestCerts) -> TestPostgres {
    let hba = "\
local all all trust
host all cloud_admin 127.0.0.1/32 trust
hostssl replication cloud_admin 127.0.0.1/32 trust
hostssl all replicator 127.0.0.1/32 scram-sha-256
hostssl replication replicator 127.0.0.1/32 scram-sha-256
";
    let cert = certs.server_cert.to_string_lossy().into_owned();
    let key = certs.server_key.to_string_lossy().into_owned();
    upstream_with_hba(
        10,
        hba,
        &[
            ("ssl", "on"),
            ("ssl_cert_file", &cert),
            ("ssl_key_file", &key),
        ],
    )
}

/// The replicator's URL to `host` with the TLS options `tls` (`sslmode=…&sslrootcert=…`).
fn tls_connstr(pg: &TestPostgres, host: &str, tls: &str) -> String {
    format!(
        "postgresql://replicator:{REPLICATOR_PASSWORD}@{host}:{}/postgres?application_name=compute_tls&{tls}",
        pg.port()
    )
}

/// Whether every session of the replicator on `pg` (the probe, the walsender) uses TLS.
fn replicator_sessions_use_tls(pg: &TestPostgres) -> (i64, i64) {
    let row = pg
        .client("postgres")
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl) FROM pg_stat_activity a \
             JOIN pg_stat_ssl s USING (pid) WHERE a.usename = 'replicator'",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

#[test]
fn tls_to_the_upstream_require_verify_ca_verify_full_and_their_refusals() {
    // The server's certificate names localhost only: 127.0.0.1 is "another host" for
    // verify-full.
    let certs = crate::support::certs::TestCerts::make(&["DNS:localhost"]);
    let upstream = tls_upstream(&certs);
    let ca = certs.ca.display().to_string();
    let other_ca = certs.other_ca.display().to_string();

    // verify-full, the right CA and host: a replica (probe, pg_basebackup, WAL receiver),
    // every session of it over TLS.
    let spec = upstream_spec(
        &tls_connstr(
            &upstream,
            "localhost",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
        ),
        json!("Replica"),
    );
    let mut replica = Compute::start(Launch {
        spec: Some(spec),
        ..Launch::default()
    });
    replica.wait_running();
    upstream
        .client("postgres")
        .execute("INSERT INTO t VALUES (11, 'over tls')", &[])
        .unwrap();
    let mut client = replica.admin();
    poll(MINUTE, "row 11 streamed over TLS", || {
        !client
            .query("SELECT 1 FROM t WHERE id = 11", &[])
            .unwrap()
            .is_empty()
    });
    let (sessions, with_tls) = replicator_sessions_use_tls(&upstream);
    assert!(sessions >= 1, "no walsender for the replica");
    assert_eq!(sessions, with_tls, "a replicator session without TLS");
    let conf = std::fs::read_to_string(replica.pgdata.join("postgresql.conf")).unwrap();
    assert!(
        conf.contains("sslmode=''verify-full''") && conf.contains(&format!("sslrootcert=''{ca}''")),
        "{conf}"
    );
    drop(client);
    drop(replica);

    // require (no CA: encrypted, not authenticated) and verify-ca to 127.0.0.1 (the chain is
    // checked, the name is not): branches copy over TLS.
    for tls in [
        "sslmode=require".to_string(),
        format!("sslmode=verify-ca&sslrootcert={ca}"),
    ] {
        let spec = upstream_spec(&tls_connstr(&upstream, "127.0.0.1", &tls), json!("Primary"));
        let mut branch = Compute::start(Launch {
            spec: Some(spec),
            ..Launch::default()
        });
        branch.wait_running();
        assert_eq!(count(&mut branch.admin(), "t"), 11, "{tls}");
    }

    // verify-full to a host the certificate does not name, and verify-full with a CA that
    // did not sign it: refused at once (not retried), saying which check failed.
    for (host, root, expected) in [
        (
            "127.0.0.1",
            ca.as_str(),
            "does not name the host connected to (verify-full)",
        ),
        (
            "localhost",
            other_ca.as_str(),
            "not signed by a CA in sslrootcert",
        ),
    ] {
        let spec = upstream_spec(
            &tls_connstr(
                &upstream,
                host,
                &format!("sslmode=verify-full&sslrootcert={root}"),
            ),
            json!("Replica"),
        );
        let mut refused = Compute::start(Launch {
            spec: Some(spec),
            args: vec!["--failed-linger".into(), "60s".into()],
            ..Launch::default()
        });
        let failed = refused.wait_phase("failed", MINUTE);
        let error = &failed["error"];
        assert_eq!(error["step"], "sync_safekeepers", "{failed}");
        assert_eq!(error["retryable"], false, "{failed}");
        let message = error["message"].as_str().unwrap();
        assert!(message.contains(expected), "{message}");
        assert!(!message.contains(REPLICATOR_PASSWORD));
    }

    // Without TLS the upstream lets no replicator in: the refusal quotes its FATAL whole.
    let spec = upstream_spec(
        &tls_connstr(&upstream, "127.0.0.1", "sslmode=disable"),
        json!("Replica"),
    );
    let mut plain = Compute::start(Launch {
        spec: Some(spec),
        args: vec!["--failed-linger".into(), "60s".into()],
        ..Launch::default()
    });
    let failed = plain.wait_phase("failed", MINUTE);
    let message = failed["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("FATAL: 28000: no pg_hba.conf entry"),
        "{message}"
    );
}

#[test]
fn the_pageservers_wire_client_speaks_tls_and_refuses_a_wrong_ca() {
    use compute_ctl::storage::wire::{self, ConnectOptions, WireError};
    use compute_ctl::sync::CancelToken;

    let certs = crate::support::certs::TestCerts::make(&["DNS:localhost", "IP:127.0.0.1"]);
    let server = tls_upstream(&certs);
    let options = |tls: &str| {
        let text = format!(
            "postgresql://replicator@127.0.0.1:{}/postgres?{tls}",
            server.port()
        );
        let parsed = compute_ctl::postgres::tls::parse(&text).unwrap();
        ConnectOptions {
            config: parsed.config,
            tls: parsed.tls,
            password: Some(REPLICATOR_PASSWORD.into()),
            parameters: vec![("application_name".into(), "wire-tls".into())],
            idle_timeout: Duration::from_secs(30),
            label: "server under test".into(),
        }
    };
    let ca = certs.ca.display();
    for tls in [
        "sslmode=require".to_string(),
        format!("sslmode=verify-full&sslrootcert={ca}"),
    ] {
        let mut connection = wire::connect(&options(&tls), &CancelToken::new())
            .unwrap_or_else(|e| panic!("{tls}: {e}"));
        let mut copy = connection
            .copy_out(
                "COPY (SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()) TO STDOUT",
            )
            .unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut copy, &mut out).unwrap();
        copy.finish().unwrap();
        assert_eq!(out, "true\n", "{tls}");
    }
    let wrong = format!(
        "sslmode=verify-full&sslrootcert={}",
        certs.other_ca.display()
    );
    match wire::connect(&options(&wrong), &CancelToken::new()) {
        Err(error @ WireError::Tls { .. }) => {
            assert!(!error.transient());
            let text = error.to_string();
            assert!(text.contains("not signed by a CA in sslrootcert"), "{text}");
        }
        Err(other) => panic!("not a TLS error: {other}"),
        Ok(_) => panic!("a wrong CA was accepted"),
    }
}

#[test]
fn promotion_of_a_replica_while_a_client_reads_then_a_write() {
    let upstream = upstream(100);
    let mut spec = upstream_spec(
        &replicator_connstr(&upstream, REPLICATOR_PASSWORD),
        json!("Replica"),
    );
    spec["cluster"]["roles"] = json!([
        { "name": "alice", "encrypted_password": md5_verifier("alice-secret", "alice") }
    ]);
    spec["cluster"]["databases"] = json!([{ "name": "app", "owner": "alice" }]);
    let mut compute = Compute::start(Launch {
        spec: Some(spec),
        ..Launch::default()
    });
    compute.wait_running();

    // A client reads from the replica all along, on one session.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut reader_client = compute.admin();
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut reads, mut errors) = (0_u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match reader_client.query_one("SELECT count(*) FROM t", &[]) {
                    Ok(_) => reads += 1,
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (reads, errors)
        })
    };

    // The last write of the old primary reaches the replica; then the primary is gone.
    let mut primary = upstream.client("postgres");
    primary
        .execute("INSERT INTO t VALUES (101, 'last on the old primary')", &[])
        .unwrap();
    let flush_lsn: String = primary
        .query_one("SELECT pg_current_wal_flush_lsn()::text", &[])
        .unwrap()
        .get(0);
    let mut replica = compute.admin();
    poll(MINUTE, "the last write on the replica", || {
        !replica
            .query("SELECT 1 FROM t WHERE id = 101", &[])
            .unwrap()
            .is_empty()
    });
    drop(primary);
    drop(upstream);

    let started = Instant::now();
    let (status, body, _) = compute.post(
        "/promote",
        Some(&json!({ "wal_flush_lsn": flush_lsn })),
        &[],
    );
    let took = started.elapsed();
    eprintln!("POST /promote answered {status} {body} after {took:?}");
    assert_eq!(status, 200, "{body}\n{}", compute.log());
    assert_eq!(body["status"], "completed", "{body}");

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (reads, errors) = reader.join().unwrap();
    assert!(
        errors.is_empty(),
        "the reading client saw errors: {errors:?}"
    );
    assert!(reads > 0);
    eprintln!("{reads} reads on one session during the failover");

    // Read-write now, with the spec's roles and databases applied as for a primary.
    let in_recovery: bool = replica
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get(0);
    assert!(!in_recovery);
    replica
        .execute(
            "INSERT INTO t VALUES (102, 'first on the new primary')",
            &[],
        )
        .unwrap();
    assert_eq!(count(&mut replica, "t"), 102);
    let mut app = compute
        .connect("alice", Some("alice-secret"), "app")
        .unwrap_or_else(|e| {
            panic!(
                "alice cannot log in to app: {e:?}\n{}",
                finished(&compute, "promote_postgres", 1)
            )
        });
    app.batch_execute("CREATE TABLE notes (id int)").unwrap();

    // Journaled as a transition: running -> configuring (cause promote), the step, running.
    let state = compute.state();
    assert_eq!(state["phase"], "running", "{state}");
    let records = compute.journal();
    let promoting = records
        .iter()
        .find(|r| r["kind"] == "transition" && r["cause"]["event"] == "promote")
        .unwrap_or_else(|| panic!("no promote transition"));
    assert_eq!(promoting["from"], "running", "{promoting}");
    assert_eq!(promoting["to"], "configuring", "{promoting}");
    assert_eq!(promoting["cause"]["source"], "POST /promote", "{promoting}");
    let step = finished(&compute, "promote_postgres", 1);
    let detail = &step["output"]["detail"];
    assert_eq!(detail["promotion"]["promoted_now"], true, "{step}");
    assert_eq!(detail["promotion"]["wal_flush_lsn"], flush_lsn, "{step}");
    assert!(
        detail["apply"]["catalog"]["statements_sent"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{step}"
    );

    // A second promote finds a primary: completed, nothing done.
    let (status, body, _) = compute.post("/promote", None, &[]);
    assert_eq!(status, 200, "{body}");
    let steps = compute
        .journal()
        .into_iter()
        .filter(|r| r["kind"] == "step_finished" && r["step"] == "promote_postgres")
        .count();
    assert_eq!(steps, 2);
}

#[test]
fn promote_is_refused_for_a_compute_that_is_not_a_replica() {
    let mut compute = Compute::start(Launch {
        spec: Some(embedded_spec(free_port())),
        ..Launch::default()
    });
    compute.wait_running();
    let (status, body, _) = compute.post("/promote", None, &[]);
    assert_eq!(status, 412, "{body}");
    assert_eq!(body["status"], "not_promoted", "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("only an upstream Replica can be promoted") && error.contains("embedded"),
        "{error}"
    );
    let (status, body, _) = compute.post("/promote", Some(&json!({ "wal_flush_lsn": "x" })), &[]);
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("wal_flush_lsn"), "{body}");
    assert_eq!(compute.state()["phase"], "running");
}

#[test]
fn a_promotion_waiting_for_an_lsn_never_replayed_fails_and_terminate_ends_it() {
    let upstream = upstream(10);
    let mut compute = Compute::start(Launch {
        spec: Some(upstream_spec(
            &replicator_connstr(&upstream, REPLICATOR_PASSWORD),
            json!("Replica"),
        )),
        ..Launch::default()
    });
    compute.wait_running();
    // An LSN far beyond anything the upstream wrote: promoting would lose writes, so the
    // promotion waits for replay to reach it.
    let url = compute.url("/promote");
    let promote = std::thread::spawn(move || {
        let answer = ureq::post(&url)
            .set("Content-Type", "application/json")
            .send_string(r#"{"wal_flush_lsn": "FF/0"}"#);
        match answer {
            Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
            Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
            Err(e) => panic!("POST /promote: {e}"),
        }
    });
    compute.wait_state(MINUTE, "the promotion under way", |s| {
        s["phase"] == "configuring"
    });
    // Still a standby, still serving reads.
    let in_recovery: bool = compute
        .admin()
        .query_one("SELECT pg_is_in_recovery()", &[])
        .unwrap()
        .get(0);
    assert!(in_recovery);
    let started = Instant::now();
    let (status, body, _) = compute.post("/terminate", None, &[]);
    assert_eq!(status, 200, "{body}");
    let (status, answer) = promote.join().unwrap();
    eprintln!(
        "promote answered {status} {answer} {:?} after the terminate",
        started.elapsed()
    );
    assert_eq!(status, 500, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["status"], "failed", "{answer}");
    assert!(answer["error"].is_string(), "{answer}");
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
    let step = crate::support::compute::dump_journal(&compute.state_dir)
        .into_iter()
        .find(|r| r["kind"] == "step_finished" && r["step"] == "promote_postgres")
        .unwrap_or_else(|| panic!("no step_finished for promote_postgres"));
    assert_eq!(step["error"]["kind"], "cancelled", "{step}");
}

/// Kills compute_ctl and its postmaster: a compute whose Postgres is gone, PGDATA left.
fn kill_compute_and_postgres(compute: &mut Compute) {
    compute.kill9();
    crate::support::compute::kill_processes_in(&compute.pgdata);
}

#[test]
fn a_replica_whose_postgres_is_gone_restarts_from_its_data_else_copies_afresh() {
    let upstream = upstream(1000);
    // Without a slot, the upstream's oldest WAL is read with pg_monitor's rights.
    upstream
        .client("postgres")
        .batch_execute("GRANT pg_monitor TO replicator")
        .unwrap();
    let spec = upstream_spec(
        &replicator_connstr(&upstream, REPLICATOR_PASSWORD),
        json!("Replica"),
    );
    let mut compute = Compute::start(Launch {
        spec: Some(spec),
        ..Launch::default()
    });
    compute.wait_running();
    let mut primary = upstream.client("postgres");
    primary
        .execute("INSERT INTO t VALUES (2001, 'before the crash')", &[])
        .unwrap();
    poll(Duration::from_secs(30), "row 2001 on the replica", || {
        count_where(&mut compute.admin(), "t", "id = 2001") == 1
    });

    // Postgres gone, PGDATA intact: a restart streams on from it, no new base backup.
    kill_compute_and_postgres(&mut compute);
    primary
        .execute("INSERT INTO t VALUES (2002, 'while it was down')", &[])
        .unwrap();
    compute.restart(None, vec![]);
    compute.wait_running();
    let records = compute.journal();
    let in_epoch_2 = |step: &str| {
        records
            .iter()
            .find(|r| r["epoch"] == 2 && r["kind"] == "step_finished" && r["step"] == step)
            .cloned()
            .unwrap_or_else(|| panic!("no {step} in epoch 2"))
    };
    let init = in_epoch_2("init_pgdata");
    assert_eq!(init["output"]["detail"]["reuse"]["kept"], true, "{init}");
    let backup = in_epoch_2("fetch_basebackup");
    assert_eq!(backup["output"]["detail"]["reused"], true, "{backup}");
    poll(
        Duration::from_secs(30),
        "row 2002 streamed after the restart",
        || count_where(&mut compute.admin(), "t", "id = 2002") == 1,
    );
    assert_eq!(count_where(&mut compute.admin(), "t", "id = 2001"), 1);

    // Down again while the upstream moves on and recycles its WAL: a fresh base backup.
    kill_compute_and_postgres(&mut compute);
    for _ in 0..4 {
        primary
            .batch_execute("INSERT INTO t SELECT g, 'churn' FROM generate_series(3000, 3999) g ON CONFLICT DO NOTHING; SELECT pg_switch_wal();")
            .unwrap();
    }
    primary.batch_execute("CHECKPOINT").unwrap();
    compute.restart(None, vec![]);
    compute.wait_running();
    let records = compute.journal();
    let init = records
        .iter()
        .find(|r| r["epoch"] == 3 && r["kind"] == "step_finished" && r["step"] == "init_pgdata")
        .unwrap();
    let reuse = &init["output"]["detail"]["reuse"];
    assert_eq!(reuse["kept"], false, "{init}");
    assert!(
        reuse["reason"]
            .as_str()
            .unwrap()
            .contains("no longer has the WAL"),
        "{init}"
    );
    let backup = records
        .iter()
        .find(|r| {
            r["epoch"] == 3 && r["kind"] == "step_finished" && r["step"] == "fetch_basebackup"
        })
        .unwrap();
    assert!(backup["output"]["detail"]["reused"].is_null(), "{backup}");
    assert_eq!(count_where(&mut compute.admin(), "t", "id = 3999"), 1);
}

/// Rows of `table` matching `condition`.
fn count_where(client: &mut postgres::Client, table: &str, condition: &str) -> i64 {
    client
        .query_one(
            &format!("SELECT count(*) FROM {table} WHERE {condition}"),
            &[],
        )
        .unwrap()
        .get(0)
}

#[test]
fn a_prepared_cluster_is_discarded_for_an_upstream_spec() {
    let upstream = upstream(10);
    let mut compute = Compute::start(Launch {
        args: vec!["--prepare".into()],
        ..Launch::default()
    });
    compute.wait_state(MINUTE, "prepared", |s| s["prepared"] == true);
    let spec = upstream_spec(
        &replicator_connstr(&upstream, REPLICATOR_PASSWORD),
        json!("Primary"),
    );
    let (status, _) = compute.post_spec(&spec);
    assert_eq!(status, 202);
    let state = compute.wait_running();
    assert_eq!(state["storage"], "upstream");
    // Discarded, journaled, and the usual path taken.
    let used = finished(&compute, "use_prepared", 1);
    assert_eq!(used["output"]["result"], "prepared_discarded", "{used}");
    let reason = used["output"]["detail"]["reason"].as_str().unwrap();
    assert!(reason.contains("upstream storage"), "{reason}");
    assert_eq!(used["output"]["detail"]["removed"], true);
    assert!(!compute.root.join("pgdata.prepared").exists());
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
    let mut admin = compute.admin();
    assert_eq!(count(&mut admin, "t"), 10);
}
