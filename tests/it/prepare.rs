//! The prepared start (`--prepare`) through the real binary: a cluster prepared in `empty` and
//! used by a spec for the embedded default (fewer steps, data correct), a spec that comes
//! while it is prepared (it waits), a terminate while preparing, and a kill -9 while
//! preparing followed by restarts (prepared afresh, never reused for another spec). The spec
//! of Neon's storage and an upstream's discard it: `neon.rs`, `upstream.rs`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::compute::{
    embedded_spec, free_port, md5_verifier, processes_in, standin_bindir, traversable_tempdir,
    Compute, Launch,
};

const MINUTE: Duration = Duration::from_secs(60);

/// One role, one database, on the embedded default.
fn small_spec(port: u16) -> Value {
    let mut spec = embedded_spec(port);
    spec["cluster"]["roles"] = json!([
        { "name": "alice", "encrypted_password": md5_verifier("alice-secret", "alice") }
    ]);
    spec["cluster"]["databases"] = json!([{ "name": "shop", "owner": "alice" }]);
    spec
}

fn staging(compute: &Compute) -> PathBuf {
    compute.root.join("pgdata.prepared")
}

/// The worker steps journaled as begun, in order, with their `step_started` detail.
fn started(compute: &Compute) -> Vec<String> {
    compute
        .journal()
        .iter()
        .filter(|r| r["kind"] == "step_started")
        .map(|r| r["detail"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn finished<'a>(records: &'a [Value], step: &str) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| r["kind"] == "step_finished" && r["step"] == step)
        .collect()
}

/// A `-b` whose `initdb` waits until `gate` exists, then runs the real one: a preparation
/// that is in flight for as long as the test wants, without timing.
struct Gate {
    dir: tempfile::TempDir,
}

impl Gate {
    fn new() -> Gate {
        let dir = traversable_tempdir();
        let gate = dir.path().join("open");
        let body = format!(
            "while [ ! -e {} ]; do sleep 0.02; done\nexec /usr/lib/postgresql/15/bin/initdb \"$@\"",
            gate.display()
        );
        standin_bindir(dir.path(), &[("initdb", &body)]);
        Gate { dir }
    }

    fn args(&self) -> Vec<String> {
        let postgres = self.dir.path().join("bin/postgres");
        vec![
            "--prepare".into(),
            "-b".into(),
            postgres.to_str().unwrap().into(),
        ]
    }

    fn open(&self) {
        std::fs::write(self.dir.path().join("open"), "").unwrap();
    }
}

/// Waits until the journal says `prepare_cluster` began and its (gated) initdb runs in the
/// staging directory.
fn wait_preparing(compute: &mut Compute) {
    compute.wait_until(MINUTE, |state| {
        state.is_some_and(|s| s["phase"] == "empty" && s["prepared"] == false)
    });
    let deadline = std::time::Instant::now() + MINUTE;
    while !started(compute)
        .iter()
        .any(|d| d.starts_with("prepare_cluster"))
    {
        assert!(std::time::Instant::now() < deadline, "no prepare_cluster");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_data(compute: &Compute) {
    let mut alice = compute
        .connect("alice", Some("alice-secret"), "shop")
        .unwrap();
    let (user, db): (String, String) = {
        let row = alice
            .query_one("SELECT current_user::text, current_database()::text", &[])
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((user.as_str(), db.as_str()), ("alice", "shop"));
    alice
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .unwrap();
}

fn terminate(compute: &mut Compute) {
    let (status, _, _) = compute.post("/terminate", None, &[]);
    assert_eq!(status, 200);
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
}

#[test]
fn an_embedded_spec_uses_the_prepared_cluster_with_fewer_steps() {
    let mut compute = Compute::start(Launch {
        args: vec!["--prepare".into()],
        ..Launch::default()
    });
    let state = compute.wait_state(MINUTE, "prepared", |s| s["prepared"] == true);
    assert_eq!(state["phase"], "empty");
    assert!(staging(&compute).join("PG_VERSION").is_file());
    assert!(staging(&compute).join("compute_ctl.pgdata").is_file());
    assert_eq!(started(&compute), ["prepare_cluster(#1)"]);

    let port = free_port();
    let (status, _) = compute.post_spec(&small_spec(port));
    assert_eq!(status, 202);
    let state = compute.wait_running();
    assert_eq!(state["prepared"], false);
    assert_eq!(
        compute.transitions(),
        [
            "empty->init",
            "init->starting",
            "starting->configuring",
            "configuring->running"
        ]
    );
    // Four worker steps where a cold start takes five after the spec (init_pgdata,
    // sync_safekeepers, fetch_basebackup, spawn_postgres, apply_spec): three.
    assert_eq!(
        started(&compute),
        [
            "prepare_cluster(#1)",
            "use_prepared(#2, g1, ready)",
            "spawn_postgres(#3, g1)",
            "apply_spec(#4, g1, first start)"
        ]
    );
    let records = compute.journal();
    let used = finished(&records, "use_prepared");
    assert_eq!(used.len(), 1);
    assert_eq!(used[0]["output"]["result"], "prepared_used", "{}", used[0]);
    assert_eq!(used[0]["output"]["detail"]["used"], true);
    assert!(!staging(&compute).exists(), "the staging directory stays");
    assert!(compute.pgdata.join("compute_ctl.pgdata").is_file());
    assert_data(&compute);

    // The embedded default's fsync = off is the spec's here; the database was copied as
    // files (FILE_COPY) since the server runs without fsync.
    let mut admin = compute.admin();
    let fsync: String = admin.query_one("SHOW fsync", &[]).unwrap().get(0);
    assert_eq!(fsync, "off");
    terminate(&mut compute);
}

#[test]
fn a_spec_that_comes_while_preparing_waits_for_the_preparation() {
    let gate = Gate::new();
    let mut compute = Compute::start(Launch {
        args: gate.args(),
        ..Launch::default()
    });
    wait_preparing(&mut compute);
    let (status, _) = compute.post_spec(&small_spec(free_port()));
    assert_eq!(status, 202);
    compute.wait_phase("init", MINUTE);
    // Waiting is faster than cancelling: the journal says it waits.
    assert_eq!(
        started(&compute)[1],
        "use_prepared(#2, g1, waits for the preparation)"
    );
    gate.open();
    compute.wait_running();
    assert_eq!(
        compute.transitions(),
        [
            "empty->init",
            "init->starting",
            "starting->configuring",
            "configuring->running"
        ]
    );
    let records = compute.journal();
    assert_eq!(finished(&records, "prepare_cluster")[0]["ok"], true);
    let used = finished(&records, "use_prepared");
    assert_eq!(used[0]["output"]["detail"]["preparation"], "awaited");
    assert_eq!(used[0]["output"]["detail"]["used"], true);
    assert_data(&compute);
    terminate(&mut compute);
}

#[test]
fn terminate_while_preparing_cancels_the_initdb_and_exits_0() {
    let gate = Gate::new();
    let mut compute = Compute::start(Launch {
        args: gate.args(),
        ..Launch::default()
    });
    wait_preparing(&mut compute);
    terminate(&mut compute);
    assert_eq!(processes_in(&staging(&compute)), Vec::<u32>::new());
    let records = crate::support::compute::dump_journal(&compute.state_dir);
    let prepared = finished(&records, "prepare_cluster");
    assert_eq!(prepared.len(), 1);
    assert_eq!(prepared[0]["ok"], false);
    assert_eq!(prepared[0]["error"]["kind"], "cancelled", "{}", prepared[0]);
    let transitions: Vec<(String, String)> = records
        .iter()
        .filter(|r| r["kind"] == "transition")
        .map(|r| (r["from"].to_string(), r["to"].to_string()))
        .collect();
    assert_eq!(
        transitions,
        [
            ("\"empty\"".into(), "\"terminating\"".into()),
            ("\"terminating\"".into(), "\"terminated\"".into())
        ]
    );
}

/// The `prepare_cluster` records of epoch `epoch`.
fn prepared_in(records: &[Value], epoch: u64) -> Vec<&Value> {
    finished(records, "prepare_cluster")
        .into_iter()
        .filter(|r| r["epoch"] == epoch)
        .collect()
}

#[test]
fn kill_9_while_preparing_then_restarts_prepare_afresh_and_never_reuse_it() {
    let gate = Gate::new();
    let mut compute = Compute::start(Launch {
        args: gate.args(),
        ..Launch::default()
    });
    wait_preparing(&mut compute);
    compute.kill9();
    // initdb dies with compute_ctl (PR_SET_PDEATHSIG): nothing writes into the staging
    // directory after it.
    let deadline = std::time::Instant::now() + MINUTE;
    while !processes_in(&staging(&compute)).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "initdb outlived compute_ctl"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // The next start prepares afresh: the half-built directory is ours by its claim.
    gate.open();
    compute.restart(None, gate.args());
    compute.wait_state(MINUTE, "prepared", |s| s["prepared"] == true);
    let records = compute.journal();
    let start = records
        .iter()
        .rfind(|r| r["kind"] == "start")
        .unwrap()
        .clone();
    let unfinished = start["unfinished_steps"].to_string();
    assert!(unfinished.contains("prepare_cluster"), "{start}");
    let second = prepared_in(&records, 2);
    assert_eq!(second.len(), 1);
    assert_eq!(second[0]["ok"], true);
    // What the killed run left (absent, or half-built and claimed) is ours: a foreign
    // directory would fail the step.
    let found = second[0]["output"]["detail"]["found"].as_str().unwrap();
    assert!(
        found == "absent" || found.starts_with("compute_ctl's own"),
        "{}",
        second[0]
    );

    // A prepared cluster is never reused after a restart: killed once ready, the next start
    // with a spec takes the usual path and leaves it alone.
    compute.kill9();
    let port = free_port();
    compute.restart(Some(small_spec(port)), gate.args());
    compute.wait_running();
    let records = compute.journal();
    let third: Vec<&str> = records
        .iter()
        .filter(|r| r["kind"] == "step_started" && r["epoch"] == 3)
        .map(|r| r["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        third,
        [
            "init_pgdata",
            "sync_safekeepers",
            "fetch_basebackup",
            "spawn_postgres",
            "apply_spec"
        ]
    );
    assert_data(&compute);
    assert!(
        staging(&compute).join("PG_VERSION").is_file(),
        "the earlier run's cluster was touched"
    );
    terminate(&mut compute);
}
