//! Crash at every point (issue 17, README "Reliability"): for each scenario (start-up, a live
//! reconfiguration, a failed reconfiguration and its recovery, a terminate, an adoption) a
//! first run lists the failpoints the real binary reaches (`COMPUTE_CTL_FAILPOINTS_TRACE`);
//! then, for each point at each of its hits, a run aborts there
//! (`COMPUTE_CTL_FAILPOINTS=<point>=abort@<hit>`), compute_ctl is started again without the
//! failpoint, the scenario is finished as a control plane would (the spec posted again, the
//! terminate sent again), and the invariants are
//! checked: the journal verifies, seq is gap-free, the phase shown is the one the journal
//! replays to, a spec that got a 202 is never lost and an older one never comes back, no
//! destructive step runs without its `step_started` record, each start names the steps its
//! predecessor left unfinished, never two postmasters, nothing outside PGDATA wiped. Then the
//! I/O points again with `eio` and `enospc`: compute_ctl goes on or exits with the contract's
//! code (1 when the journal cannot be written, 11 when a step failed), and acknowledges nothing
//! the failed write should have persisted.
//!
//! Needs the `failpoints` feature (`cargo test --workspace --features failpoints`).
//! `FAILPOINTS_ERRORS=all` injects both errors at every I/O point (default: `eio` at every
//! I/O point, `enospc` at the journal's and the spec store's); `FAILPOINTS_ONLY=<scenario>[,…]`
//! runs only those; `FAILPOINTS_LIMIT=<n>` at most n armed runs per scenario;
//! `FAILPOINTS_JOBS=<n>` runs n at a time (default 3); `FAILPOINTS_EVERY_HIT=0` aborts only at
//! each point's first hit after the set-up (by default: at every hit, so a point reached twice,
//! e.g. by a failed reconfiguration's spec and then by its recovery's, is crashed at both).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::adoption::postmasters_on;
use crate::support::compute::{
    embedded_spec, free_port, http_call, traversable_tempdir, Compute, Launch,
};

const ARM_ENV: &str = "COMPUTE_CTL_FAILPOINTS";
const TRACE_ENV: &str = "COMPUTE_CTL_FAILPOINTS_TRACE";
const MINUTE: Duration = Duration::from_secs(60);

/// The steps whose side effect destroys something: PGDATA wiped, Postgres stopped.
const DESTRUCTIVE: &[&str] = &["init_pgdata", "stop_postgres"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Startup,
    Reconfigure,
    FailedReconfigure,
    Terminate,
    Adoption,
}

impl Scenario {
    const ALL: [Scenario; 5] = [
        Scenario::Startup,
        Scenario::Reconfigure,
        Scenario::FailedReconfigure,
        Scenario::Terminate,
        Scenario::Adoption,
    ];

    fn name(self) -> &'static str {
        match self {
            Scenario::Startup => "startup",
            Scenario::Reconfigure => "reconfigure",
            Scenario::FailedReconfigure => "failed_reconfigure",
            Scenario::Terminate => "terminate",
            Scenario::Adoption => "adoption",
        }
    }

    /// The spec the compute must end up running.
    fn final_spec(self) -> &'static str {
        match self {
            Scenario::Startup | Scenario::Terminate | Scenario::Adoption => "spec-1",
            Scenario::Reconfigure => "spec-2",
            Scenario::FailedReconfigure => "spec-3",
        }
    }
}

/// A spec told apart by its `application_name`; `spec-bad` carries a value Postgres refuses.
fn spec(port: u16, name: &str) -> Value {
    let mut spec = embedded_spec(port);
    let settings = spec["cluster"]["settings"].as_array_mut().unwrap();
    settings.push(json!({ "name": "application_name", "value": name, "vartype": "string" }));
    if name == "spec-bad" {
        // A time zone Postgres lacks: admitted (compute_ctl judges types and units), refused
        // by Postgres when applied.
        settings
            .push(json!({ "name": "timezone", "value": "Mars/Olympus_Mons", "vartype": "string" }));
    }
    spec
}

/// What an armed point does.
#[derive(Clone, Debug)]
struct Arm {
    point: String,
    hit: u64,
    action: &'static str,
}

/// One line of the trace: a point reached by a process.
#[derive(Clone, Debug)]
struct Hit {
    pid: u32,
    point: String,
    hit: u64,
    io: bool,
    fired: Option<String>,
}

fn read_trace(path: &Path) -> Vec<Hit> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut hits: Vec<Hit> = Vec::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let [pid, point, hit, kind, rest @ ..] = words.as_slice() else {
            continue;
        };
        let (pid, hit) = (pid.parse().unwrap(), hit.parse().unwrap());
        if *kind == "fired" {
            if let Some(last) = hits
                .iter_mut()
                .rev()
                .find(|h| h.pid == pid && h.point == *point && h.hit == hit)
            {
                last.fired = rest.first().map(|a| a.to_string());
            }
            continue;
        }
        hits.push(Hit {
            pid,
            point: point.to_string(),
            hit,
            io: *kind == "io",
            fired: None,
        });
    }
    hits
}

/// Hits per point of the process `pid`.
fn counts(hits: &[Hit], pid: Option<u32>) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for hit in hits.iter().filter(|h| Some(h.pid) == pid) {
        let n = counts.entry(hit.point.clone()).or_insert(0);
        *n = (*n).max(hit.hit);
    }
    counts
}

/// A POST's outcome: the status and body, or the connection error (compute_ctl died).
fn post(compute: &Compute, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
    http_call("POST", &compute.url(path), &[], body).map(|(status, value, _)| (status, value))
}

/// The environment of a launch: the trace, and the arm if any.
fn env_of(trace: &Path, arm: Option<&Arm>) -> Vec<(String, String)> {
    let mut env = vec![(TRACE_ENV.to_string(), trace.display().to_string())];
    if let Some(arm) = arm {
        env.push((
            ARM_ENV.into(),
            format!("{}={}@{}", arm.point, arm.action, arm.hit),
        ));
    }
    env
}

/// One scenario run: its compute, the 202s it got, the trace of its processes.
struct Run {
    compute: Compute,
    /// Kept so the directory lives as long as the run.
    _dir: tempfile::TempDir,
    trace: PathBuf,
    port: u16,
    /// (spec name, generation, seq) of each 202.
    acked: Vec<(String, u64, u64)>,
    /// The pid of the process under test (the one a failpoint is armed in).
    armed_pid: Option<u32>,
    /// Its hits per point before the scenario's action began (during its set-up).
    mark: BTreeMap<String, u64>,
    /// Whether the current process's exit is in `exits`.
    exit_seen: bool,
    /// Exit codes of the processes that ended on their own (not by a signal).
    exits: Vec<Option<i32>>,
    /// Every 'POST /spec' answer or error, for the report of a failure.
    answers: Vec<String>,
    /// The scenario and the armed point, for messages.
    context: String,
}

impl Run {
    fn new() -> Run {
        let dir = traversable_tempdir();
        let root = dir.path().to_path_buf();
        // Beside PGDATA, not ours: nothing may wipe them.
        std::fs::create_dir(root.join("not-ours")).unwrap();
        std::fs::write(root.join("not-ours/keep"), b"keep").unwrap();
        std::fs::write(root.join("keep"), b"keep").unwrap();
        let trace = root.join("failpoints.trace");
        let port = free_port();
        let compute = Compute::start(Launch {
            dir: Some(root),
            // Nothing runs before `launch`: a stand-in that exits at once.
            args: vec!["--help".into()],
            ..Launch::default()
        });
        let mut run = Run {
            compute,
            _dir: dir,
            trace,
            port,
            acked: Vec::new(),
            armed_pid: None,
            mark: BTreeMap::new(),
            exit_seen: false,
            exits: Vec::new(),
            answers: Vec::new(),
            context: String::new(),
        };
        run.compute.wait_exit(MINUTE);
        run
    }

    /// Starts compute_ctl (with `-S spec_file`), tracing; the process under test when
    /// `target`, armed with `arm`.
    fn launch(&mut self, spec_file: Option<&str>, target: bool, arm: Option<&Arm>) {
        let launch = Launch {
            spec: spec_file.map(|name| spec(self.port, name)),
            args: vec!["--failed-linger".into(), "2s".into()],
            env: env_of(&self.trace, arm),
            ..Launch::default()
        };
        self.exit_seen = false;
        let logged = self.compute.log().len();
        self.compute.relaunch(launch);
        // The HTTP port, free when the run began, may have been taken since (runs go on in
        // parallel): another one.
        for _ in 0..3 {
            let bound = self.compute.try_exit().is_none()
                || !self.compute.log()[logged..].contains("Address already in use");
            if bound {
                break;
            }
            self.compute.http_port = free_port();
            self.compute.relaunch(Launch {
                spec: spec_file.map(|name| spec(self.port, name)),
                args: vec!["--failed-linger".into(), "2s".into()],
                env: env_of(&self.trace, arm),
                ..Launch::default()
            });
        }
        if target {
            self.armed_pid = self.compute.pid();
        }
    }

    /// `POST /spec`, the answer remembered.
    fn post_spec(&mut self, name: &str) -> Result<(u16, Value), String> {
        let answer = post(&self.compute, "/spec", Some(&spec(self.port, name)));
        self.answers.push(format!("{name}: {answer:?}"));
        if let Ok((202, body)) = &answer {
            self.acked.push((
                name.to_string(),
                body["generation"].as_u64().unwrap(),
                body["seq"].as_u64().unwrap(),
            ));
        }
        answer
    }

    /// Neon's `POST /configure` of the spec `name`: its 200 stands on a `spec_accepted`
    /// record like a 202, but names no generation or seq, so they are read from the journal's
    /// files (on disk by the time of the answer).
    fn configure(&mut self, name: &str) -> Result<(u16, Value), String> {
        let answer = post(
            &self.compute,
            "/configure",
            Some(&json!({ "spec": spec(self.port, name) })),
        );
        self.answers.push(format!("{name} (configure): {answer:?}"));
        if let Ok((200, _)) = &answer {
            let accepted = self
                .compute
                .journal_files()
                .into_iter()
                .rev()
                .find(|r| {
                    r["kind"] == "spec_accepted"
                        && r["spec_hash"]
                            .as_str()
                            .is_some_and(|hash| self.spec_name(hash) == name)
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{}: /configure of {name} answered 200 with no spec_accepted on disk",
                        self.context
                    )
                });
            self.acked.push((
                name.to_string(),
                accepted["generation"].as_u64().unwrap(),
                accepted["seq"].as_u64().unwrap(),
            ));
        }
        answer
    }

    fn exited(&mut self) -> bool {
        match self.compute.try_exit() {
            Some(status) => {
                if !self.exit_seen {
                    self.exits.push(status.code());
                    self.exit_seen = true;
                }
                true
            }
            None => false,
        }
    }

    /// The spec name of a stored spec (`sha256:<hex>`).
    fn spec_name(&self, hash: &str) -> String {
        let hex = hash.trim_start_matches("sha256:");
        let path = self.compute.state_dir.join(format!("specs/{hex}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("spec {hash} is not stored: {e}"));
        let stored: Value = serde_json::from_str(&text).unwrap();
        let settings = stored["cluster"]["settings"].as_array().unwrap();
        settings
            .iter()
            .find(|s| s["name"] == "application_name")
            .and_then(|s| s["value"].as_str())
            .unwrap_or("?")
            .to_string()
    }

    /// Waits until the phase is stable: `running` with applied = desired, `failed`, or exited.
    /// `empty` counts as stable when `empty_too`, or once the armed point fired (a spec that
    /// could not be stored is not accepted: the compute waits for one).
    fn settle_or_empty(&mut self, empty_too: bool) -> Option<Value> {
        let deadline = Instant::now() + MINUTE;
        while Instant::now() < deadline {
            if self.exited() {
                return None;
            }
            if let Ok((200, state)) = self.compute.get("/state") {
                let stable = (state["phase"] == "running"
                    && state["applied_generation"] == state["desired_generation"])
                    || state["phase"] == "failed"
                    // Nothing accepted (a crash before the -S spec's record): the control
                    // plane posts it.
                    || (state["phase"] == "empty" && (empty_too || self.fired()));
                if stable {
                    return Some(state);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "{}: not settled within a minute\nlog:\n{}",
            self.context,
            self.compute.log()
        );
    }

    fn fired(&self) -> bool {
        read_trace(&self.trace).iter().any(|h| h.fired.is_some())
    }

    fn settle(&mut self) -> Option<Value> {
        self.settle_or_empty(false)
    }

    /// Brings the compute to running `final_spec` as a control plane would: restarts it when
    /// it is gone, posts the spec when another is desired, asks to recover a failed one.
    fn finish(&mut self, final_spec: &str) -> Value {
        let deadline = Instant::now() + 2 * MINUTE;
        while Instant::now() < deadline {
            let Some(state) = self.settle_or_empty(true) else {
                self.launch(None, false, None);
                continue;
            };
            let desired = state["spec_hash"].as_str().map(|h| self.spec_name(h));
            if desired.as_deref() != Some(final_spec) {
                let _ = self.post_spec(final_spec);
                continue;
            }
            if state["phase"] == "failed" {
                if state["postmaster_pid"].is_null() {
                    // Postgres is gone: the linger ends in an exit, then a restart.
                    std::thread::sleep(Duration::from_millis(200));
                } else {
                    let _ = post(&self.compute, "/recover", None);
                }
                continue;
            }
            return state;
        }
        panic!(
            "{}: the compute did not come to run {final_spec}; answers {:?}\nlog:\n{}",
            self.context,
            self.answers,
            self.compute.log()
        );
    }

    /// The scenario's set-up: the process under test is started armed (and brought to
    /// `running` for the scenarios that act on a running compute), or an earlier run is set
    /// up for it; `mark` then holds its hits so far.
    fn setup(&mut self, scenario: Scenario, arm: Option<&Arm>) {
        match scenario {
            Scenario::Startup => {}
            Scenario::Reconfigure | Scenario::FailedReconfigure | Scenario::Terminate => {
                self.launch(Some("spec-1"), true, arm);
                self.compute.wait_running();
                self.mark = counts(&read_trace(&self.trace), self.armed_pid);
            }
            Scenario::Adoption => {
                self.launch(Some("spec-1"), false, None);
                self.compute.wait_running();
                self.compute.kill9();
                self.exits.clear();
            }
        }
    }

    /// The scenario's action; returns when it ended or compute_ctl died.
    fn act(&mut self, scenario: Scenario, arm: Option<&Arm>) {
        match scenario {
            Scenario::Startup => {
                self.launch(Some("spec-1"), true, arm);
                self.settle();
            }
            Scenario::Adoption => {
                self.launch(None, true, arm);
                self.settle();
            }
            Scenario::Reconfigure => {
                if self.post_spec("spec-2").is_ok() {
                    self.settle();
                }
            }
            Scenario::FailedReconfigure => {
                if self.post_spec("spec-bad").is_err() {
                    return;
                }
                match self.settle() {
                    Some(state) if state["phase"] == "failed" => {}
                    _ => return,
                }
                // A control plane first asks to recover: the same refused value fails again.
                if post(&self.compute, "/recover", None).is_err() {
                    return;
                }
                match self.settle() {
                    Some(state) if state["phase"] == "failed" => {}
                    _ => return,
                }
                // Then it sends the corrected spec, as Neon's does (`/configure`, answered
                // once running).
                if self.configure("spec-3").is_ok() {
                    self.settle();
                }
            }
            Scenario::Terminate => {
                if post(&self.compute, "/terminate", None).is_ok() {
                    let _ = self.compute.wait_exit(MINUTE);
                    self.exited();
                }
            }
        }
    }
}

/// The outcome of one run, for the report.
#[derive(Debug, Default)]
struct Tally {
    runs: u64,
    fired: u64,
    checks: u64,
}

/// Every invariant, once the compute runs the scenario's final spec (or, after a terminate,
/// exited).
fn check(run: &mut Run, scenario: Scenario, context: &str, tally: &mut Tally) {
    let compute = &run.compute;
    let records = compute.journal_files();
    // The journal verifies.
    compute.assert_journal_verifies(context);
    // seq gap-free from 1.
    for (i, record) in records.iter().enumerate() {
        assert_eq!(
            record["seq"].as_u64(),
            Some(i as u64 + 1),
            "{context}: seq gap at {record}"
        );
    }
    // Every 202 is in the journal as it was answered, and generations only grow.
    let accepted: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "spec_accepted")
        .collect();
    for pair in accepted.windows(2) {
        assert!(
            pair[1]["generation"].as_u64() > pair[0]["generation"].as_u64(),
            "{context}: generation went back: {} then {}",
            pair[0],
            pair[1]
        );
    }
    for (name, generation, seq) in &run.acked {
        let record = &records[*seq as usize - 1];
        assert_eq!(record["kind"], "spec_accepted", "{context}: 202 seq {seq}");
        assert_eq!(
            record["generation"].as_u64(),
            Some(*generation),
            "{context}"
        );
        let stored = run.spec_name(record["spec_hash"].as_str().unwrap());
        assert_eq!(&stored, name, "{context}: seq {seq} is another spec");
    }
    // Destructive steps: each begun by a process has its step_started in that process's
    // epoch; each start names the steps its predecessor left unfinished.
    let epoch_of_pid: BTreeMap<u32, u64> = records
        .iter()
        .filter(|r| r["kind"] == "start")
        .map(|r| {
            (
                r["pid"].as_u64().unwrap() as u32,
                r["epoch"].as_u64().unwrap(),
            )
        })
        .collect();
    let hits = read_trace(&run.trace);
    for step in DESTRUCTIVE {
        let point = format!("step.begin.{step}");
        let mut begun: BTreeMap<u32, u64> = BTreeMap::new();
        for hit in hits.iter().filter(|h| h.point == point) {
            *begun.entry(hit.pid).or_default() += 1;
        }
        for (pid, n) in begun {
            let epoch = epoch_of_pid
                .get(&pid)
                .unwrap_or_else(|| panic!("{context}: pid {pid} ran {step} without a start"));
            let started = records
                .iter()
                .filter(|r| r["kind"] == "step_started" && r["step"] == *step)
                .filter(|r| r["epoch"].as_u64() == Some(*epoch))
                .count() as u64;
            assert!(
                n <= started,
                "{context}: {step} began {n} times in epoch {epoch}, journaled {started}"
            );
        }
    }
    let last_epoch = records.last().and_then(|r| r["epoch"].as_u64()).unwrap();
    for epoch in 2..=last_epoch {
        let of = |e: u64| {
            records
                .iter()
                .filter(move |r| r["epoch"].as_u64() == Some(e))
        };
        let finished: BTreeSet<u64> = of(epoch - 1)
            .filter(|r| r["kind"] == "step_finished")
            .filter_map(|r| r["id"].as_u64())
            .collect();
        let unfinished: BTreeSet<u64> = of(epoch - 1)
            .filter(|r| r["kind"] == "step_started" && r["id"].as_u64() != Some(0))
            .filter_map(|r| r["id"].as_u64())
            .filter(|id| !finished.contains(id))
            .collect();
        let start = of(epoch).find(|r| r["kind"] == "start").unwrap();
        let named: BTreeSet<u64> = start["unfinished_steps"]
            .as_array()
            .map(|a| a.iter().filter_map(|s| s["id"].as_u64()).collect())
            .unwrap_or_default();
        assert_eq!(
            named, unfinished,
            "{context}: the start of epoch {epoch} names other unfinished steps: {start}"
        );
    }
    // Nothing beside PGDATA wiped.
    assert!(compute.root.join("keep").exists(), "{context}: wiped");
    assert!(compute.root.join("not-ours/keep").exists(), "{context}");
    tally.checks += 6;

    if scenario == Scenario::Terminate {
        assert!(
            postmasters_on(&compute.pgdata).is_empty(),
            "{context}: a postmaster outlived the terminate"
        );
        let last = records.iter().rev().find(|r| r["kind"] == "transition");
        assert_eq!(last.unwrap()["to"], "terminated", "{context}");
        tally.checks += 2;
        return;
    }
    // The phase shown is the one the journal replays to, at its last seq.
    let state = compute.state();
    let records = compute.journal_files();
    let last = records.iter().rev().find(|r| r["kind"] == "transition");
    assert_eq!(state["phase"], last.unwrap()["to"], "{context}: {state}");
    assert_eq!(
        state["seq"].as_u64(),
        records.last().unwrap()["seq"].as_u64(),
        "{context}"
    );
    let desired = records
        .iter()
        .rev()
        .find(|r| r["kind"] == "spec_accepted")
        .unwrap();
    assert_eq!(
        state["desired_generation"], desired["generation"],
        "{context}"
    );
    assert_eq!(state["spec_hash"], desired["spec_hash"], "{context}");
    // The newest acknowledged spec, not an older one, is what Postgres runs.
    let running: String = compute
        .admin()
        .query_one("SHOW application_name", &[])
        .unwrap()
        .get(0);
    assert_eq!(running, scenario.final_spec(), "{context}");
    // (A spec persisted whose 202 a crash cut off may be newer than every 202.)
    if let Some(newest) = run.acked.iter().map(|a| a.1).max() {
        let desired = state["desired_generation"].as_u64().unwrap();
        assert!(
            desired >= newest,
            "{context}: desired generation {desired} is older than the 202 of {newest}"
        );
    }
    // Never two postmasters.
    let postmasters = postmasters_on(&compute.pgdata);
    assert_eq!(
        postmasters.len(),
        1,
        "{context}: postmasters {postmasters:?}"
    );
    assert_eq!(
        state["postmaster_pid"].as_u64(),
        Some(u64::from(postmasters[0])),
        "{context}"
    );
    tally.checks += 5;
}

/// Runs `scenario` once, with `arm` if given, to the end, and checks it.
fn run_scenario(scenario: Scenario, arm: Option<&Arm>, tally: &mut Tally) -> Run {
    let context = match arm {
        Some(arm) => format!(
            "{} with {}={}@{}",
            scenario.name(),
            arm.point,
            arm.action,
            arm.hit
        ),
        None => format!("{} (listing run)", scenario.name()),
    };
    let mut run = Run::new();
    run.context = context.clone();
    run.setup(scenario, arm);
    run.act(scenario, arm);
    let hits = read_trace(&run.trace);
    let fired = hits.iter().find(|h| h.fired.is_some());
    if let Some(arm) = arm {
        let fired = fired.unwrap_or_else(|| {
            panic!(
                "{context}: the point was not reached\nlog:\n{}",
                run.compute.log()
            )
        });
        assert_eq!(fired.point, arm.point, "{context}");
        tally.fired += 1;
        if arm.action == "abort" {
            // Aborted: the process is gone by a signal.
            let status = run.compute.wait_exit(MINUTE);
            assert!(status.code().is_none(), "{context}: exited with {status}");
        } else {
            // An I/O error: it goes on, or exits with the contract's code.
            let deadline = Instant::now() + MINUTE;
            let journal_point = arm.point.starts_with("journal.append")
                || arm.point.starts_with("journal.segment.create");
            while journal_point && !run.exited() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if journal_point {
                assert_eq!(
                    run.exits.last().copied().flatten(),
                    Some(1),
                    "{context}: a failed journal write must end the process with 1; answers {:?}\nlog:\n{}",
                    run.answers,
                    run.compute.log()
                );
                // The input whose write failed was not acknowledged: in the scenarios that
                // post a spec, that is the first input after the set-up.
                if matches!(
                    scenario,
                    Scenario::Reconfigure | Scenario::FailedReconfigure
                ) && arm.hit == run.mark.get(&arm.point).copied().unwrap_or(0) + 1
                {
                    assert!(
                        run.acked.is_empty(),
                        "{context}: acknowledged {:?} although its journal write failed",
                        run.acked
                    );
                }
            }
            for code in run.exits.iter().flatten() {
                assert!(
                    [0, 1, 11].contains(code),
                    "{context}: exit code {code}\nlog:\n{}",
                    run.compute.log()
                );
            }
        }
    }
    // Whatever it did, on to the end without the failpoint.
    if scenario == Scenario::Terminate {
        let terminated = run.exited() && run.exits.last() == Some(&Some(0));
        if !terminated {
            if run.exited() {
                run.launch(None, false, None);
            }
            run.finish(scenario.final_spec());
            let (status, _) =
                post(&run.compute, "/terminate", None).unwrap_or_else(|e| panic!("{context}: {e}"));
            assert_eq!(status, 200, "{context}");
        }
        let status = run.compute.wait_exit(MINUTE);
        assert_eq!(status.code(), Some(0), "{context}");
    } else {
        run.finish(scenario.final_spec());
    }
    check(&mut run, scenario, &context, tally);
    tally.runs += 1;
    run
}

fn error_actions(point: &str) -> Vec<&'static str> {
    if std::env::var("FAILPOINTS_ERRORS").as_deref() == Ok("all")
        || point.starts_with("journal.")
        || point.starts_with("durable.spec.")
    {
        vec!["eio", "enospc"]
    } else {
        vec!["eio"]
    }
}

#[test]
fn crash_and_fail_at_every_point() {
    let started = Instant::now();
    let only = std::env::var("FAILPOINTS_ONLY").ok();
    // For a quick look: at most this many armed runs per scenario.
    let limit: Option<u64> = std::env::var("FAILPOINTS_LIMIT")
        .ok()
        .and_then(|l| l.parse().ok());
    // Abort at every hit of every point after the set-up, not only at each point's first.
    let every_hit = std::env::var("FAILPOINTS_EVERY_HIT").as_deref() != Ok("0");
    let jobs: usize = std::env::var("FAILPOINTS_JOBS")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(3);
    let mut report = Vec::new();
    let mut tally = Tally::default();
    let mut all_points = BTreeSet::new();
    for scenario in Scenario::ALL {
        if only
            .as_deref()
            .is_some_and(|o| !o.split(',').any(|o| o == scenario.name()))
        {
            continue;
        }
        let scenario_started = Instant::now();
        // The listing run: which points the armed process reaches, and how often before
        // the mark.
        let listing = run_scenario(scenario, None, &mut tally);
        let hits = read_trace(&listing.trace);
        let mut points: BTreeMap<String, (u64, bool)> = BTreeMap::new();
        // Every (point, hit) after the mark.
        let mut later_hits: Vec<(String, u64)> = Vec::new();
        for hit in hits.iter().filter(|h| Some(h.pid) == listing.armed_pid) {
            let skip = listing.mark.get(&hit.point).copied().unwrap_or(0);
            if hit.hit > skip {
                if points.contains_key(&hit.point) {
                    later_hits.push((hit.point.clone(), hit.hit));
                }
                points.entry(hit.point.clone()).or_insert((hit.hit, hit.io));
            }
        }
        let hits_reached = points.len() + later_hits.len();
        drop(listing);
        assert!(!points.is_empty(), "{}: no point reached", scenario.name());
        let mut arms = Vec::new();
        for (point, (hit, io)) in &points {
            all_points.insert(point.clone());
            let mut actions = vec!["abort"];
            if *io {
                actions.extend(error_actions(point));
            }
            for action in actions {
                arms.push(Arm {
                    point: point.clone(),
                    hit: *hit,
                    action,
                });
            }
        }
        if every_hit {
            arms.extend(later_hits.iter().map(|(point, hit)| Arm {
                point: point.clone(),
                hit: *hit,
                action: "abort",
            }));
        }
        arms.truncate(limit.unwrap_or(u64::MAX).try_into().unwrap_or(usize::MAX));
        let crashed = arms.iter().filter(|a| a.action == "abort").count();
        let failed = arms.len() - crashed;
        // The runs wait on Postgres and fsyncs mostly: a few at a time.
        let queue = Mutex::new(arms);
        let tallies = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for _ in 0..jobs {
                scope.spawn(|| {
                    let mut mine = Tally::default();
                    loop {
                        let Some(arm) = queue.lock().unwrap().pop() else {
                            break;
                        };
                        drop(run_scenario(scenario, Some(&arm), &mut mine));
                    }
                    tallies.lock().unwrap().push(mine);
                });
            }
        });
        for mine in tallies.into_inner().unwrap() {
            tally.runs += mine.runs;
            tally.fired += mine.fired;
            tally.checks += mine.checks;
        }
        report.push(format!(
            "{:<19} {:>3} points reached ({hits_reached:>3} hits), {crashed:>3} crashed at, {failed:>3} failed with I/O errors, {:>4.0} s",
            scenario.name(),
            points.len(),
            scenario_started.elapsed().as_secs_f64()
        ));
        report.push(format!(
            "    {}",
            points.keys().cloned().collect::<Vec<_>>().join(" ")
        ));
    }
    eprintln!("failpoints report:");
    for line in &report {
        eprintln!("  {line}");
    }
    eprintln!(
        "  {} distinct points, {} runs, {} failpoints fired, {} invariant checks passed, {:.0} s",
        all_points.len(),
        tally.runs,
        tally.fired,
        tally.checks,
        started.elapsed().as_secs_f64()
    );
}
