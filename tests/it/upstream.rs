//! The upstream PostgreSQL backend end to end: the real binary against real upstream servers
//! (`TestPostgres`) on loopback: a streaming replica, a read-write branch, the refusal of
//! `Static`, an unreachable upstream and a refused password, and base backups interrupted by
//! `kill -9`, `POST /terminate` and SIGTERM.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::compute::{
    embedded_spec, free_port, md5_verifier, processes_in, Compute, Launch,
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
    let pg = TestPostgres::start_with_settings(
        Setup {
            pg_hba: Some(UPSTREAM_HBA.to_string()),
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
        .unwrap_or_else(|e| panic!("alice cannot log in to app: {e}"));
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
    let upstream = big_upstream(800);
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
    let upstream = big_upstream(800);
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
