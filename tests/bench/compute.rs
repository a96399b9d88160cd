//! `cargo bench --bench compute [-- SECTION...]`: the real `compute_ctl` binary against the
//! plain PostgreSQL tools doing the same work, in the same run, printed as tables.
//!
//! Sections (all of them by default; name some to run only those, or set
//! `COMPUTE_BENCH_SECTIONS=coldstart,state`):
//!
//! - `coldstart`: process start → `GET /readyz` 200 on the embedded default with
//!   `fixtures/specs/embedded-default.json` (4 roles, 3 databases), against the same work by
//!   hand: `initdb` with compute_ctl's flags, the same `postgresql.conf` settings and
//!   `pg_hba.conf`, `pg_ctl start -w`, one `psql` session sending the same CREATE ROLE and
//!   CREATE DATABASE statements. Alternated: compute_ctl, plain, compute_ctl, plain…
//! - `memory`: compute_ctl's VmRSS and VmHWM in `running`, after thousands of `GET /state` and
//!   30 s at the default monitor interval.
//! - `state`: `GET /state` under `wrk --latency` (8 connections, 10 s) while another thread
//!   polls `GET /healthz`, which answers 200 only while the driver loop keeps ticking.
//! - `roles`: 2,000 roles (md5 verifiers) and 200 databases applied on a fresh compute, then
//!   reconfigurations that change one harmless setting and leave roles and databases alone
//!   (numbers from the journal's `apply_spec` records); the same statements sent by `psql` to a
//!   plain Postgres, alternated.
//! - `reconfigure`: `POST /spec` changing `work_mem`, until `/state.applied_generation` and
//!   `SHOW work_mem` both show it, alternated with the same change by hand (write
//!   `postgresql.conf`, `SELECT pg_reload_conf()`, poll `SHOW`).
//!
//! - `restart`: compute_ctl killed with -9 and started again, and SIGUSR2, each until
//!   `/readyz` answers 200 with the same postmaster (adopted), alternated with the plain
//!   restart of an existing data directory (`postgres -D`, until it accepts a connection).
//!
//! Not a timed test: it asserts nothing about speed; it prints the targets and says whether
//! they were met. Every directory is kept until the run ends (deleting data directories in a
//! loop slows `initdb` on this disk), then removed. compute_ctl and every Postgres working under
//! the run's directory are killed on the way out, also after a panic.
//!
//! Environment: `COMPUTE_BENCH_RUNS` (cold starts per side, 10), `COMPUTE_BENCH_MEMORY_SECS`
//! (30), `COMPUTE_BENCH_MEMORY_REQUESTS` (5000), `COMPUTE_BENCH_WRK_SECS` (10),
//! `COMPUTE_BENCH_WRK_CONNECTIONS` (8), `COMPUTE_BENCH_ROLES` (2000),
//! `COMPUTE_BENCH_DATABASES` (200), `COMPUTE_BENCH_ROLES_RUNS` (2 per side),
//! `COMPUTE_BENCH_NOOP_APPLIES` (10), `COMPUTE_BENCH_RECONFIGURES` (200 per side);
//! `COMPUTE_BENCH_DIR` (where the run's directory goes, default the temp dir),
//! `COMPUTE_BENCH_KEEP=1` (keep it), `COMPUTE_BENCH_PG_BINDIR` (default
//! `/usr/lib/postgresql/15/bin`, else `pg_config --bindir`), `COMPUTE_BENCH_PG_USER` (the OS
//! user Postgres runs as when the bench runs as root, default `postgres`).

#[allow(dead_code)]
#[path = "machine.rs"]
mod machine;

use machine::{describe_disk, env_count, free_port, ms, spec_port, status_field, WrkReport};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

const SECTIONS: [&str; 8] = [
    "coldstart",
    "memory",
    "state",
    "roles",
    "reconfigure",
    "restart",
    "drift",
    "prepare",
];

/// The superuser compute_ctl's `initdb` creates (the user of its default `-C`).
const ADMIN: &str = "cloud_admin";

/// The `/state.startup` fields, in phase order.
const STARTUP_KEYS: [&str; 5] = [
    "sync_safekeepers_ms",
    "basebackup_ms",
    "start_postgres_ms",
    "config_ms",
    "total_ms",
];

/// Given, not measured here: Patroni 4.1, `PATCH /config` → the new value in `SHOW`, on this
/// kind of machine.
const PATRONI_RECONFIGURE_MS: f64 = 175.0;

fn main() {
    let sections = selected_sections();
    let ws = Workspace::create();
    let env = Env::detect();
    print_header(&ws, &env, &sections);
    for section in &sections {
        println!();
        match section.as_str() {
            "coldstart" => coldstart(&ws, &env),
            "memory" => memory(&ws, &env),
            "state" => state_load(&ws, &env),
            "roles" => roles(&ws, &env),
            "reconfigure" => reconfigure(&ws, &env),
            "restart" => restart(&ws, &env),
            "drift" => drift(&ws, &env),
            "prepare" => prepare(&ws, &env),
            other => unreachable!("section {other} was checked"),
        }
    }
    println!();
    println!("load average at the end: {}", load_average());
    // `ws` drops here: every process under its directory is killed, the directory removed.
}

/// The sections named on the command line (cargo adds `--bench`), else in
/// `COMPUTE_BENCH_SECTIONS`, else all.
fn selected_sections() -> Vec<String> {
    let mut named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    if named.is_empty() {
        if let Ok(list) = std::env::var("COMPUTE_BENCH_SECTIONS") {
            named = list
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
        }
    }
    if named.is_empty() {
        return SECTIONS.iter().map(|s| (*s).to_owned()).collect();
    }
    for name in &named {
        if !SECTIONS.contains(&name.as_str()) {
            eprintln!(
                "unknown section {name:?}; sections: {}",
                SECTIONS.join(", ")
            );
            std::process::exit(2);
        }
    }
    named
}

// ---------------------------------------------------------------------------------------------
// The run's directory and what it needs from the machine.

/// The run's directory: one subdirectory per compute or plain Postgres, all kept until the
/// run ends. Dropping it kills every process working under it and removes it.
struct Workspace {
    root: PathBuf,
    next: Cell<usize>,
}

impl Workspace {
    fn create() -> Workspace {
        let parent = std::env::var_os("COMPUTE_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let root = parent.join(format!("compute_ctl-bench-{}", std::process::id()));
        fs::create_dir_all(&root).expect("cannot create the bench directory");
        // Postgres runs as another OS user when the bench runs as root: it must traverse.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755))
            .expect("cannot make the bench directory traversable");
        Workspace {
            root,
            next: Cell::new(1),
        }
    }

    /// A new subdirectory, mode 0755, numbered in creation order.
    fn dir(&self, name: &str) -> PathBuf {
        let n = self.next.get();
        self.next.set(n + 1);
        let dir = self.root.join(format!("{n:03}-{name}"));
        fs::create_dir(&dir).expect("cannot create a run directory");
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .expect("cannot make a run directory traversable");
        dir
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        kill_processes_under(&self.root);
        if std::env::var_os("COMPUTE_BENCH_KEEP").is_some() {
            eprintln!("kept {}", self.root.display());
        } else if let Err(e) = fs::remove_dir_all(&self.root) {
            eprintln!("cannot remove {}: {e}", self.root.display());
        }
    }
}

/// Binaries and the user Postgres runs as.
struct Env {
    compute_ctl: PathBuf,
    bindir: PathBuf,
    /// `(uid, gid)` of the Postgres OS user when the bench runs as root.
    pg_user: Option<(u32, u32)>,
    fixture: Value,
}

impl Env {
    fn detect() -> Env {
        let fixture_path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/specs/embedded-default.json");
        let fixture = serde_json::from_slice(
            &fs::read(&fixture_path).expect("cannot read fixtures/specs/embedded-default.json"),
        )
        .expect("fixtures/specs/embedded-default.json is not JSON");
        Env {
            compute_ctl: PathBuf::from(env!("CARGO_BIN_EXE_compute_ctl")),
            bindir: pg_bindir(),
            pg_user: pg_user(),
            fixture,
        }
    }
}

fn pg_bindir() -> PathBuf {
    if let Some(dir) = std::env::var_os("COMPUTE_BENCH_PG_BINDIR") {
        return PathBuf::from(dir);
    }
    let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
    if debian.join("postgres").exists() {
        return debian;
    }
    let output = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .expect("PostgreSQL 15 not found: set COMPUTE_BENCH_PG_BINDIR or install it");
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// `None` when not root; else the uid and gid of `$COMPUTE_BENCH_PG_USER` (`postgres`).
fn pg_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::env::var("COMPUTE_BENCH_PG_USER").unwrap_or_else(|_| "postgres".into());
    let c_name = CString::new(name.clone()).expect("a user name without NUL");
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: a zeroed passwd is a valid value for getpwnam_r to overwrite.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf` outlives it.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    assert!(
        rc == 0 && !result.is_null(),
        "the bench runs as root and needs an OS user {name:?} to run Postgres as"
    );
    Some((pwd.pw_uid, pwd.pw_gid))
}

fn print_header(ws: &Workspace, env: &Env, sections: &[String]) {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("compute_ctl benchmark");
    println!(
        "  date:        {}",
        humantime::format_rfc3339_seconds(SystemTime::now())
    );
    println!(
        "  machine:     {nproc} cores (nproc), {}, {}",
        cpu_model(),
        memory_total()
    );
    println!("  disk:        {}", describe_disk(&ws.root));
    println!("  fsync:       {}", fsync_probe(&ws.root));
    println!("  directory:   {}", ws.root.display());
    println!("  postgres:    {}", postgres_version(env));
    println!("  compute_ctl: {}", env.compute_ctl.display());
    println!("  load average at the start: {}", load_average());
    println!("  sections:    {}", sections.join(", "));
}

// ---------------------------------------------------------------------------------------------
// Section 1: cold start.

fn coldstart(ws: &Workspace, env: &Env) {
    let runs = env_count("COMPUTE_BENCH_RUNS", 10).max(1);
    println!("## cold start: process start → ready, embedded default, 4 roles and 3 databases");
    println!(
        "{runs} runs per side, alternated (compute_ctl, plain, compute_ctl, plain…); \
         COMPUTE_BENCH_RUNS sets the count"
    );
    let mut a_ready = Vec::new();
    let mut a_http = Vec::new();
    let mut a_phases: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut a_outside = Vec::new();
    let mut a_between = Vec::new();
    let mut a_stop = Vec::new();
    let mut b_total = Vec::new();
    let mut b_initdb = Vec::new();
    let mut b_files = Vec::new();
    let mut b_start = Vec::new();
    let mut b_psql = Vec::new();
    let mut b_stop = Vec::new();
    for run in 1..=runs {
        // A: compute_ctl.
        let spec = fixture_spec(env, free_port());
        let mut compute = Compute::spawn(ws, env, "coldstart-compute", &spec, &[]);
        let ready = ms(compute.wait_ready(Duration::from_secs(120)));
        let state = compute.state();
        for key in STARTUP_KEYS {
            a_phases
                .entry(key)
                .or_default()
                .push(state["startup"][key].as_f64().unwrap_or(f64::NAN));
        }
        let total_ms = state["startup"]["total_ms"].as_f64().unwrap_or(f64::NAN);
        let phases_ms: f64 = STARTUP_KEYS[..4]
            .iter()
            .map(|key| state["startup"][key].as_f64().unwrap_or(f64::NAN))
            .sum();
        a_between.push(total_ms - phases_ms);
        a_ready.push(ready);
        a_outside.push(ready - total_ms);
        a_http.push(compute.first_http.map_or(f64::NAN, ms));
        a_stop.push(ms(compute.terminate()));

        // B: the plain tools.
        let port = free_port();
        let spec = fixture_spec(env, port);
        let mut plain = Plain::new(ws, env, "coldstart-plain", port);
        plain.write_sql(&plain_sql(&spec));
        let conf = plain_conf(&spec, &plain.data);
        let started = Instant::now();
        let initdb = plain.initdb();
        let files = plain.write_config(&conf);
        let start = plain.start();
        let psql = plain.psql();
        let total = started.elapsed();
        b_total.push(ms(total));
        b_initdb.push(ms(initdb));
        b_files.push(ms(files));
        b_start.push(ms(start));
        b_psql.push(ms(psql));
        b_stop.push(ms(plain.stop()));
        eprintln!(
            "  coldstart run {run}/{runs}: compute_ctl {ready:.0} ms, plain {:.0} ms",
            ms(total)
        );
    }
    let a = Stats::of(&a_ready);
    let b = Stats::of(&b_total);
    let ratio = a.median / b.median;
    println!();
    println!("| process start → ready | compute_ctl | plain tools | compute_ctl / plain |");
    println!("|---|---|---|---|");
    println!(
        "| median | {:.0} ms | {:.0} ms | {ratio:.2} |",
        a.median, b.median
    );
    println!(
        "| p90 | {:.0} ms | {:.0} ms | {:.2} |",
        a.p90,
        b.p90,
        a.p90 / b.p90
    );
    println!(
        "| min – max | {:.0} – {:.0} ms | {:.0} – {:.0} ms | |",
        a.min, a.max, b.min, b.max
    );
    println!();
    println!("| where the time goes (medians) | compute_ctl (`/state.startup`) | plain tools |");
    println!("|---|---|---|");
    let phase = |key: &str| Stats::of(a_phases.get(key).map_or(&[][..], Vec::as_slice)).median;
    println!(
        "| sync_safekeepers_ms | {:.0} ms (skipped: embedded) | — |",
        phase("sync_safekeepers_ms")
    );
    println!(
        "| basebackup_ms | {:.0} ms (`initdb`) | {:.0} ms (`initdb`) |",
        phase("basebackup_ms"),
        Stats::of(&b_initdb).median
    );
    println!(
        "| start_postgres_ms | {:.0} ms (config files, postmaster, first connection) | {:.0} ms (config files) + {:.0} ms (`pg_ctl start -w`) |",
        phase("start_postgres_ms"),
        Stats::of(&b_files).median,
        Stats::of(&b_start).median
    );
    println!(
        "| config_ms | {:.0} ms (settings check, catalog read, 7 statements) | {:.0} ms (`psql`, 7 statements) |",
        phase("config_ms"),
        Stats::of(&b_psql).median
    );
    println!("| total_ms | {:.0} ms | |", phase("total_ms"));
    println!(
        "| total_ms minus the four phases: journal appends, hand-over between steps | {:.0} ms | |",
        Stats::of(&a_between).median
    );
    println!(
        "| outside total_ms: spawn, journal open, spec checks, HTTP, the wait's long-poll | {:.0} ms (first HTTP answer after {:.0} ms) | |",
        Stats::of(&a_outside).median,
        Stats::of(&a_http).median
    );
    println!(
        "| stop (not in the total) | {:.0} ms (`POST /terminate` → exit 0) | {:.0} ms (`pg_ctl stop -m fast`) |",
        Stats::of(&a_stop).median,
        Stats::of(&b_stop).median
    );
    println!();
    println!(
        "runs in order (compute_ctl / plain, ms): {}",
        pairs(&a_ready, &b_total)
    );
    println!(
        "target: compute_ctl / plain ≤ 1.10 (medians): {:.2}, {}",
        ratio,
        verdict(ratio <= 1.10)
    );
}

// ---------------------------------------------------------------------------------------------
// Section 2: steady memory.

fn memory(ws: &Workspace, env: &Env) {
    let secs = env_count("COMPUTE_BENCH_MEMORY_SECS", 30);
    let requests = env_count("COMPUTE_BENCH_MEMORY_REQUESTS", 5000);
    println!("## steady memory of compute_ctl in running (default monitor interval, 500 ms)");
    println!(
        "1 run: {requests} GET /state (4 client threads), then {secs} s in running; \
         COMPUTE_BENCH_MEMORY_REQUESTS, COMPUTE_BENCH_MEMORY_SECS"
    );
    let spec = fixture_spec(env, free_port());
    let mut compute = Compute::spawn(ws, env, "memory", &spec, &[]);
    compute.wait_ready(Duration::from_secs(120));
    let ready_at = Instant::now();
    let at_ready = compute.proc_status();

    let threads = 4;
    let url = compute.url("/state");
    let served_started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let url = url.clone();
            let count = requests / threads + u64::from(t < requests % threads);
            std::thread::spawn(move || {
                let agent = agent(Duration::from_secs(10));
                let mut ok = 0u64;
                for _ in 0..count {
                    if let Ok(response) = agent.get(&url).call() {
                        if response.status() == 200 && response.into_string().is_ok() {
                            ok += 1;
                        }
                    }
                }
                ok
            })
        })
        .collect();
    let served: u64 = handles
        .into_iter()
        .map(|h| h.join().expect("a GET /state thread panicked"))
        .sum();
    let served_time = served_started.elapsed();
    let after_requests = compute.proc_status();

    let mut rss_max = after_requests.rss_kb;
    let mut samples = 0;
    while ready_at.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1).min(
            Duration::from_secs(secs).saturating_sub(ready_at.elapsed()) + Duration::from_millis(1),
        ));
        rss_max = rss_max.max(compute.proc_status().rss_kb);
        samples += 1;
    }
    let end = compute.proc_status();
    let state = compute.state();
    let health = compute.get("/healthz").map(|(s, _)| s);
    let in_running = ready_at.elapsed();
    compute.terminate();

    let mib = |kb: u64| kb as f64 / 1024.0;
    println!();
    println!("| compute_ctl process | value |");
    println!("|---|---|");
    println!(
        "| VmRSS at ready | {:.1} MiB ({} kB), {} threads |",
        mib(at_ready.rss_kb),
        at_ready.rss_kb,
        at_ready.threads
    );
    println!(
        "| VmRSS after {served} of {requests} GET /state answered 200 ({:.1} s) | {:.1} MiB ({} kB) |",
        served_time.as_secs_f64(),
        mib(after_requests.rss_kb),
        after_requests.rss_kb
    );
    println!(
        "| VmRSS after {:.0} s in running (phase {}, healthz {:?}) | {:.1} MiB ({} kB); max of {samples} samples {:.1} MiB |",
        in_running.as_secs_f64(),
        state["phase"].as_str().unwrap_or("?"),
        health,
        mib(end.rss_kb),
        end.rss_kb,
        mib(rss_max)
    );
    println!(
        "| VmHWM (peak RSS over the process's life) | {:.1} MiB ({} kB) |",
        mib(end.hwm_kb),
        end.hwm_kb
    );
    println!("| threads | {} |", end.threads);
    println!();
    let peak = end.hwm_kb.max(rss_max);
    println!(
        "target: ≤ 15 MB RSS in running: VmRSS {:.1} MiB, VmHWM {:.1} MiB, {}",
        mib(end.rss_kb),
        mib(end.hwm_kb),
        verdict(mib(peak) <= 15.0)
    );
}

// ---------------------------------------------------------------------------------------------
// Section 3: GET /state under load.

fn state_load(ws: &Workspace, env: &Env) {
    let secs = env_count("COMPUTE_BENCH_WRK_SECS", 10).max(1);
    let connections = env_count("COMPUTE_BENCH_WRK_CONNECTIONS", 8).max(1);
    println!("## GET /state throughput and latency (loopback, wrk)");
    let Some(wrk) = find_on_path("wrk") else {
        println!(
            "skipped: `wrk` is not installed (apt-get install -y wrk), so there is no load generator"
        );
        return;
    };
    println!(
        "1 run: `wrk -t2 -c{connections} -d{secs}s --latency`, /healthz polled every 10 ms from \
         another thread meanwhile; COMPUTE_BENCH_WRK_SECS, COMPUTE_BENCH_WRK_CONNECTIONS"
    );
    let spec = fixture_spec(env, free_port());
    let mut compute = Compute::spawn(ws, env, "state", &spec, &[]);
    compute.wait_ready(Duration::from_secs(120));
    let pid = compute.pid();
    let ticks_before = cpu_ticks(pid);

    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        let url = compute.url("/healthz");
        std::thread::spawn(move || {
            let agent = agent(Duration::from_secs(5));
            let mut samples = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                let status = match agent.get(&url).call() {
                    Ok(r) => Ok(r.status()),
                    Err(ureq::Error::Status(code, _)) => Ok(code),
                    Err(e) => Err(e.to_string()),
                };
                samples.push(HealthSample {
                    answered: Instant::now(),
                    latency: sent.elapsed(),
                    status,
                });
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        })
    };
    let load_started = Instant::now();
    let output = Command::new(&wrk)
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--latency",
            &compute.url("/state"),
        ])
        .stdin(Stdio::null())
        .output()
        .expect("cannot run wrk");
    let load_ended = Instant::now();
    stop.store(true, Ordering::Relaxed);
    let samples = poller.join().expect("the /healthz poller panicked");
    let cpu = ticks_to_secs(cpu_ticks(pid).saturating_sub(ticks_before));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "wrk failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let wrk = WrkReport::parse(&text);
    let after = compute.state();
    compute.terminate();

    // Healthz during the load window.
    let in_window: Vec<&HealthSample> = samples
        .iter()
        .filter(|s| s.answered >= load_started && s.answered <= load_ended)
        .collect();
    let ok_times: Vec<Instant> = in_window
        .iter()
        .filter(|s| s.status == Ok(200))
        .map(|s| s.answered)
        .collect();
    let unavailable = in_window.iter().filter(|s| s.status == Ok(503)).count();
    let failed = in_window
        .iter()
        .filter(|s| !matches!(s.status, Ok(200) | Ok(503)))
        .count();
    let mut gap_max = Duration::ZERO;
    let mut previous = load_started;
    for t in ok_times.iter().copied().chain(std::iter::once(load_ended)) {
        gap_max = gap_max.max(t.saturating_duration_since(previous));
        previous = t;
    }
    let health_latency: Vec<f64> = in_window.iter().map(|s| ms(s.latency)).collect();
    let health = Stats::of(&health_latency);

    println!();
    println!("| GET /state, {connections} connections, {secs} s | value |");
    println!("|---|---|");
    println!(
        "| requests/s | {:.0} ({} requests) |",
        wrk.requests_per_sec, wrk.requests
    );
    println!("| latency p50 | {:.3} ms |", wrk.p50_ms);
    println!(
        "| latency p75 / p90 | {:.3} / {:.3} ms |",
        wrk.p75_ms, wrk.p90_ms
    );
    println!("| latency p99 | {:.3} ms |", wrk.p99_ms);
    println!("| latency max | {:.3} ms |", wrk.max_ms);
    println!(
        "| errors (socket / non-2xx) | {} / {} |",
        wrk.socket_errors, wrk.non_2xx
    );
    println!(
        "| compute_ctl CPU during the load | {:.1} s over {:.1} s ({:.2} cores; wrk and compute_ctl share {} cores) |",
        cpu,
        (load_ended - load_started).as_secs_f64(),
        cpu / (load_ended - load_started).as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "| GET /healthz meanwhile: answers 200 / 503 / failed | {} / {unavailable} / {failed} |",
        ok_times.len()
    );
    println!(
        "| GET /healthz: max gap between 200 answers (polled every 10 ms) | {:.1} ms |",
        ms(gap_max)
    );
    println!(
        "| GET /healthz latency p50 / p99 / max | {:.2} / {:.2} / {:.2} ms |",
        health.median, health.p99, health.max
    );
    println!(
        "| phase after the load | {} (seq {}) |",
        after["phase"].as_str().unwrap_or("?"),
        after["seq"]
    );
    println!();
    println!(
        "target: ≥ 10,000 requests/s: {:.0}, {}",
        wrk.requests_per_sec,
        verdict(wrk.requests_per_sec >= 10_000.0)
    );
    println!(
        "target: p99 ≤ 5 ms: {:.3} ms, {}",
        wrk.p99_ms,
        verdict(wrk.p99_ms <= 5.0)
    );
    println!(
        "target: /healthz 200 throughout (no 503; the driver's liveness stamp is 3 monitor intervals = 1.5 s): {} 503, max gap {:.1} ms, {}",
        unavailable,
        ms(gap_max),
        verdict(unavailable == 0 && failed == 0 && gap_max < Duration::from_millis(1500))
    );
}

struct HealthSample {
    answered: Instant,
    latency: Duration,
    status: Result<u16, String>,
}

// ---------------------------------------------------------------------------------------------
// Section 4: roles at scale.

fn roles(ws: &Workspace, env: &Env) {
    let n_roles = env_count("COMPUTE_BENCH_ROLES", 2000) as usize;
    let n_databases = env_count("COMPUTE_BENCH_DATABASES", 200) as usize;
    let runs = env_count("COMPUTE_BENCH_ROLES_RUNS", 2).max(1);
    let noops = env_count("COMPUTE_BENCH_NOOP_APPLIES", 10).max(1);
    println!("## roles at scale: {n_roles} roles (md5 verifiers), {n_databases} databases");
    println!(
        "{runs} run(s) per side, alternated; {noops} reconfigurations per compute that change one \
         setting (log_min_duration_statement) and no role or database; the spec is the \
         embedded default's settings plus fsync=off, as Neon's compute specs have it. Each \
         CREATE DATABASE copies template1 through the WAL (about 1.5 GB for 200): that part is \
         disk-bound and varies from run to run. \
         COMPUTE_BENCH_ROLES, COMPUTE_BENCH_DATABASES, COMPUTE_BENCH_ROLES_RUNS, \
         COMPUTE_BENCH_NOOP_APPLIES"
    );
    let mut a_ready = Vec::new();
    let mut a_config = Vec::new();
    let mut a_apply = Vec::new();
    let mut a_statements = Vec::new();
    let mut a_summary = String::new();
    let mut noop_apply = Vec::new();
    let mut noop_statements = Vec::new();
    let mut noop_catalog_reads = Vec::new();
    let mut noop_reloaded = 0;
    let mut noop_latency = Vec::new();
    let mut noop_accept = Vec::new();
    let mut b_psql = Vec::new();
    let mut b_total = Vec::new();
    for run in 1..=runs {
        // A: compute_ctl, fresh.
        let spec = roles_spec(env, free_port(), n_roles, n_databases);
        let mut compute = Compute::spawn(ws, env, "roles-compute", &spec, &[]);
        let ready = ms(compute.wait_ready(Duration::from_secs(900)));
        let state = compute.state();
        a_ready.push(ready);
        a_config.push(state["startup"]["config_ms"].as_f64().unwrap_or(f64::NAN));
        let first = apply_steps(&compute.journal(0));
        let first = first.last().expect("no apply_spec step in the journal");
        a_apply.push(first.duration_ms);
        a_statements.push(first.statements_sent.unwrap_or(f64::NAN));
        a_summary = first.summary.clone();

        // A: reconfigurations that leave roles and databases alone.
        let since = state["seq"].as_u64().unwrap_or(0);
        for k in 0..noops {
            let mut changed = spec.clone();
            push_setting(
                &mut changed,
                "log_min_duration_statement",
                if k % 2 == 0 { "10s" } else { "20s" },
            );
            let started = Instant::now();
            let generation = compute.post_spec(&changed);
            noop_accept.push(ms(started.elapsed()));
            compute.wait_applied(generation, Duration::from_secs(120));
            noop_latency.push(ms(started.elapsed()));
        }
        for step in apply_steps(&compute.journal(since)) {
            noop_apply.push(step.duration_ms);
            noop_statements.push(step.statements_sent.unwrap_or(f64::NAN));
            noop_catalog_reads.push(step.catalog_reads.unwrap_or(f64::NAN));
            noop_reloaded += usize::from(step.reloaded);
        }
        compute.terminate();

        // B: the same statements by psql on a plain Postgres.
        let port = free_port();
        let spec = roles_spec(env, port, n_roles, n_databases);
        let mut plain = Plain::new(ws, env, "roles-plain", port);
        plain.write_sql(&plain_sql(&spec));
        let conf = plain_conf(&spec, &plain.data);
        let started = Instant::now();
        plain.initdb();
        plain.write_config(&conf);
        plain.start();
        let psql = plain.psql();
        b_total.push(ms(started.elapsed()));
        b_psql.push(ms(psql));
        plain.stop();
        eprintln!(
            "  roles run {run}/{runs}: compute_ctl ready in {ready:.0} ms, psql {:.0} ms",
            ms(psql)
        );
    }
    let statements = n_roles + n_databases;
    println!();
    println!("| fresh compute | compute_ctl | plain tools |");
    println!("|---|---|---|");
    println!(
        "| process start → ready (median) | {:.0} ms | {:.0} ms (initdb, files, pg_ctl start, psql) |",
        Stats::of(&a_ready).median,
        Stats::of(&b_total).median
    );
    println!(
        "| config_ms (`/state.startup`) | {:.2} s | |",
        Stats::of(&a_config).median / 1e3
    );
    println!(
        "| applying roles and databases | {:.2} s (`apply_spec` step: settings, catalog read, plan, statements) | {:.2} s (`psql -f`, {statements} statements, one session) |",
        Stats::of(&a_apply).median / 1e3,
        Stats::of(&b_psql).median / 1e3
    );
    println!(
        "| statements sent (journal `apply_spec` → `catalog.statements_sent`) | {:.0} ({a_summary}) | {statements} |",
        Stats::of(&a_statements).median
    );
    println!();
    let apply = Stats::of(&noop_apply);
    let latency = Stats::of(&noop_latency);
    let sent_max = noop_statements.iter().copied().fold(0.0, f64::max);
    println!(
        "| reconfiguration, roles and databases unchanged ({} applies) | value |",
        noop_apply.len()
    );
    println!("|---|---|");
    println!(
        "| `apply_spec` step (journal `duration_ms`): median / p90 / max | {:.0} / {:.0} / {:.0} ms |",
        apply.median, apply.p90, apply.max
    );
    println!("| statements sent (max over the applies) | {sent_max:.0} |");
    println!(
        "| catalog reads per apply; applies that reloaded postgresql.conf | {:.0}; {noop_reloaded} |",
        Stats::of(&noop_catalog_reads).median
    );
    println!(
        "| POST /spec → 202 (median) | {:.1} ms |",
        Stats::of(&noop_accept).median
    );
    println!(
        "| POST /spec → /state applied (median / max) | {:.0} / {:.0} ms |",
        latency.median, latency.max
    );
    println!();
    println!(
        "target: an unchanged catalog applies in ≤ 200 ms with 0 statements: {:.0} ms (max {:.0}), {sent_max:.0} statements, {}",
        apply.median,
        apply.max,
        verdict(apply.max <= 200.0 && sent_max == 0.0)
    );
}

/// The drift check's cost: `compute_ctl_drift_check_us` (the monitor's read of the catalog
/// and settings, and the comparison) over many checks, for the fixture spec and for a spec of
/// 2,000 roles.
fn drift(ws: &Workspace, env: &Env) {
    let checks = env_count("COMPUTE_BENCH_DRIFT_CHECKS", 30).max(1);
    let n_roles = env_count("COMPUTE_BENCH_ROLES", 2000) as usize;
    println!("## drift check: {checks} checks per spec, --drift-interval 200ms");
    println!(
        "the duration the monitor measures around `drift::check` (one round trip: catalog and \
         settings selects in one repeatable-read transaction, then the comparison in memory); \
         COMPUTE_BENCH_DRIFT_CHECKS, COMPUTE_BENCH_ROLES"
    );
    println!();
    println!("| spec | drift check: median / p90 / max | differences found | target |");
    println!("|---|---|---|---|");
    let specs = [
        (
            "fixture spec (embedded default, 4 roles, 3 databases)".to_owned(),
            {
                let mut spec = fixture_spec(env, free_port());
                push_setting(&mut spec, "fsync", "off");
                spec
            },
        ),
        (
            format!("{n_roles} roles (md5), 20 databases"),
            roles_spec(env, free_port(), n_roles, 20),
        ),
    ];
    for (i, (label, spec)) in specs.iter().enumerate() {
        let args = ["--drift-interval", "200ms", "--monitor-interval", "100ms"];
        let mut compute = Compute::spawn(ws, env, &format!("drift-{i}"), spec, &args);
        compute.wait_ready(Duration::from_secs(900));
        let mut seen = metric(&compute, "compute_ctl_drift_checks_total");
        let mut durations = Vec::new();
        let mut found = 0.0_f64;
        let deadline = Instant::now() + Duration::from_secs(600);
        while (durations.len() as u64) < checks && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            let now = metric(&compute, "compute_ctl_drift_checks_total");
            if now > seen {
                seen = now;
                durations.push(metric(&compute, "compute_ctl_drift_check_seconds") * 1e3);
                found = found.max(metric(&compute, "compute_ctl_drift_items"));
            }
        }
        compute.terminate();
        let stats = Stats::of(&durations);
        let target = if i == 0 {
            format!("≤ 20 ms: {}", verdict(stats.max <= 20.0))
        } else {
            String::new()
        };
        println!(
            "| {label} | {:.2} / {:.2} / {:.2} ms ({} checks) | {found:.0} | {target} |",
            stats.median,
            stats.p90,
            stats.max,
            durations.len()
        );
    }
}

/// A value of `/metrics`, `NaN` when missing.
fn metric(compute: &Compute, name: &str) -> f64 {
    let text = match compute.agent.get(&compute.url("/metrics")).call() {
        Ok(response) => response.into_string().unwrap_or_default(),
        Err(_) => String::new(),
    };
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN)
}

fn roles_spec(env: &Env, port: u16, n_roles: usize, n_databases: usize) -> Value {
    let mut spec = fixture_spec(env, port);
    push_setting(&mut spec, "fsync", "off");
    let roles: Vec<Value> = (1..=n_roles)
        .map(|i| {
            let name = format!("bench_role_{i:05}");
            json!({
                "name": name,
                "encrypted_password": md5_verifier(&format!("password-{i}"), &name),
                "options": null
            })
        })
        .collect();
    let databases: Vec<Value> = (1..=n_databases)
        .map(|i| {
            let owner = (i - 1) * n_roles.max(1) / n_databases.max(1) + 1;
            json!({
                "name": format!("bench_db_{i:04}"),
                "owner": format!("bench_role_{:05}", owner.min(n_roles)),
            })
        })
        .collect();
    spec["cluster"]["roles"] = Value::Array(roles);
    spec["cluster"]["databases"] = Value::Array(databases);
    spec
}

/// md5(password + role name), hex: the verifier Neon's specs carry.
fn md5_verifier(password: &str, role: &str) -> String {
    use md5::{Digest, Md5};
    Md5::digest(format!("{password}{role}").as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Section 5: reconfiguration latency.

fn reconfigure(ws: &Workspace, env: &Env) {
    let n = env_count("COMPUTE_BENCH_RECONFIGURES", 200).max(1);
    println!("## reconfiguration latency: work_mem changed live, until it shows");
    println!(
        "{n} changes per side, alternated (compute_ctl, plain, …); polls every 1 ms; \
         COMPUTE_BENCH_RECONFIGURES sets the count"
    );
    let base = fixture_spec(env, free_port());
    let mut compute = Compute::spawn(ws, env, "reconfigure-compute", &base, &[]);
    compute.wait_ready(Duration::from_secs(120));
    let since = compute.state()["seq"].as_u64().unwrap_or(0);
    let mut compute_show = pg_client(compute.pg_port);

    let port = free_port();
    let plain_base = fixture_spec(env, port);
    let mut plain = Plain::new(ws, env, "reconfigure-plain", port);
    let conf = plain_conf(&plain_base, &plain.data);
    plain.initdb();
    plain.write_config(&conf);
    plain.start();
    let mut plain_admin = pg_client(port);
    let mut plain_show = pg_client(port);

    let mut a_both = Vec::new();
    let mut a_applied = Vec::new();
    let mut a_shown = Vec::new();
    let mut a_accept = Vec::new();
    let mut generations = Vec::new();
    let mut b_shown = Vec::new();
    let poll = Duration::from_millis(1);
    let deadline = Duration::from_secs(30);
    for i in 0..n {
        let value = if i % 2 == 0 { "8MB" } else { "16MB" };

        // A: POST /spec, then /state and SHOW.
        let mut spec = base.clone();
        push_setting(&mut spec, "work_mem", value);
        let started = Instant::now();
        let generation = compute.post_spec(&spec);
        a_accept.push(ms(started.elapsed()));
        generations.push(generation);
        let mut applied = None;
        let mut shown = None;
        while applied.is_none() || shown.is_none() {
            if applied.is_none()
                && compute.state()["applied_generation"].as_u64() == Some(generation)
            {
                applied = Some(started.elapsed());
            }
            if shown.is_none() && show_work_mem(&mut compute_show) == value {
                shown = Some(started.elapsed());
            }
            assert!(
                started.elapsed() < deadline,
                "generation {generation} (work_mem {value}) not applied within {deadline:?}; state {}\n{}",
                compute.state(),
                compute.log_tail()
            );
            std::thread::sleep(poll);
        }
        let (applied, shown) = (applied.unwrap_or_default(), shown.unwrap_or_default());
        a_applied.push(ms(applied));
        a_shown.push(ms(shown));
        a_both.push(ms(applied.max(shown)));

        // B: the same change by hand.
        let started = Instant::now();
        let mut conf = conf.clone();
        conf.push_str(&format!("work_mem = '{value}'\n"));
        write_file_durably(&plain.data.join("postgresql.conf"), conf.as_bytes());
        plain_admin
            .simple_query("SELECT pg_reload_conf()")
            .expect("pg_reload_conf() failed on the plain Postgres");
        while show_work_mem(&mut plain_show) != value {
            assert!(
                started.elapsed() < deadline,
                "the plain Postgres did not show work_mem {value} within {deadline:?}"
            );
            std::thread::sleep(poll);
        }
        b_shown.push(ms(started.elapsed()));
    }
    let records = compute.journal(since);
    compute.terminate();
    plain.stop();

    // Where compute_ctl's time goes, from the journal (mono_ms of each record).
    let steps = apply_steps(&records);
    let apply_ms: Vec<f64> = steps.iter().map(|s| s.duration_ms).collect();
    let mut accepted_to_running = Vec::new();
    let mut rest = Vec::new();
    for (i, generation) in generations.iter().enumerate() {
        let accepted = records.iter().find(|r| {
            r["kind"] == "spec_accepted" && r["generation"].as_u64() == Some(*generation)
        });
        let running = records.iter().find(|r| {
            r["kind"] == "transition"
                && r["to"] == "running"
                && r["generation"].as_u64() == Some(*generation)
        });
        let step = steps.iter().find(|s| s.generation == Some(*generation));
        if let (Some(accepted), Some(running)) = (accepted, running) {
            let mono = |r: &Value| r["mono_ms"].as_f64().unwrap_or(f64::NAN);
            accepted_to_running.push(mono(running) - mono(accepted));
        }
        if let Some(step) = step {
            rest.push(a_applied[i] - a_accept[i] - step.duration_ms);
        }
    }

    let both = Stats::of(&a_both);
    let plain_stats = Stats::of(&b_shown);
    println!();
    println!("| POST → new value visible ({n} changes) | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|");
    let row = |label: &str, s: &Stats| {
        println!(
            "| {label} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms |",
            s.median, s.p90, s.p99, s.max
        );
    };
    row(
        "compute_ctl: `/state.applied_generation` = G and `SHOW work_mem` new",
        &both,
    );
    row("… of which POST /spec → 202", &Stats::of(&a_accept));
    row("… `/state` applied alone", &Stats::of(&a_applied));
    row("… `SHOW` new alone", &Stats::of(&a_shown));
    row(
        "… journal: `apply_spec` step `duration_ms`",
        &Stats::of(&apply_ms),
    );
    row(
        "… journal: `spec_accepted` → transition to running (mono_ms)",
        &Stats::of(&accepted_to_running),
    );
    row(
        "… the rest of `/state` applied: hand-over to the worker, journal append after the step, publish, 1 ms poll",
        &Stats::of(&rest),
    );
    row(
        "plain: write postgresql.conf (fsync, rename), `SELECT pg_reload_conf()`, poll `SHOW`",
        &plain_stats,
    );
    println!(
        "| reference, not measured here: Patroni 4.1, `PATCH /config` → `SHOW` (given) | ≈ {PATRONI_RECONFIGURE_MS:.0} ms | | | |"
    );
    println!();
    println!(
        "target: p99 ≤ 50 ms: {:.1} ms, {}",
        both.p99,
        verdict(both.p99 <= 50.0)
    );
}

fn show_work_mem(client: &mut postgres::Client) -> String {
    client
        .query_one("SHOW work_mem", &[])
        .map(|row| row.get::<_, String>(0))
        .expect("SHOW work_mem failed")
}

// ---------------------------------------------------------------------------------------------
// compute_ctl as a child process.

/// `--prepare`: spec → `/readyz` 200 with a prepared cluster, one role and one database,
/// against the plain tools' cold start of the same spec; then `configuring` of the six-role,
/// three-database spec against `psql -f` of the same statements in one session. Alternated.
fn prepare(ws: &Workspace, env: &Env) {
    let runs = env_count("COMPUTE_BENCH_PREPARE_RUNS", 5).max(1);
    println!(
        "## prepared start: spec → ready with --prepare, embedded default, 1 role, 1 database"
    );
    println!("{runs} runs per side, alternated; COMPUTE_BENCH_PREPARE_RUNS sets the count");
    let small = |port: u16| {
        let mut spec = fixture_spec(env, port);
        spec["cluster"]["roles"] =
            json!([{ "name": "alice", "encrypted_password": md5_verifier("alice-pw", "alice") }]);
        spec["cluster"]["databases"] = json!([{ "name": "shop", "owner": "alice" }]);
        // Both sides run without fsync (compute_ctl's embedded default): the same server.
        push_setting(&mut spec, "fsync", "off");
        spec
    };
    let mut a_ready = Vec::new();
    let mut a_phases: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut b_total = Vec::new();
    for run in 1..=runs {
        let port = free_port();
        let spec = small(port);
        let mut compute =
            Compute::spawn_with(ws, env, "prepare-compute", None, port, &["--prepare"]);
        let deadline = Instant::now() + Duration::from_secs(120);
        while compute
            .get("/state")
            .map_or(true, |(_, s)| s["prepared"] != true)
        {
            assert!(
                Instant::now() < deadline,
                "not prepared\n{}",
                compute.log_tail()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        compute.started = Instant::now();
        compute.post_spec(&spec);
        let ready = ms(compute.wait_ready(Duration::from_secs(120)));
        let state = compute.state();
        for key in ["start_postgres_ms", "config_ms", "total_ms"] {
            a_phases
                .entry(key)
                .or_default()
                .push(state["startup"][key].as_f64().unwrap_or(f64::NAN));
        }
        a_ready.push(ready);
        compute.terminate();

        let port = free_port();
        let spec = small(port);
        let mut plain = Plain::new(ws, env, "prepare-plain", port);
        plain.write_sql(&plain_sql(&spec));
        let conf = plain_conf(&spec, &plain.data);
        let started = Instant::now();
        plain.initdb();
        plain.write_config(&conf);
        plain.start();
        plain.psql();
        let total = ms(started.elapsed());
        b_total.push(total);
        plain.stop();
        eprintln!("  prepare run {run}/{runs}: compute_ctl {ready:.0} ms, plain {total:.0} ms");
    }
    let a = Stats::of(&a_ready);
    let b = Stats::of(&b_total);
    let ratio = a.median / b.median;
    let phase = |key: &str| Stats::of(a_phases.get(key).map_or(&[][..], Vec::as_slice)).median;
    println!();
    println!(
        "| spec → ready | compute_ctl --prepare | plain tools (initdb, config, pg_ctl start -w, psql) | ratio |"
    );
    println!("|---|---|---|---|");
    println!(
        "| median | {:.0} ms | {:.0} ms | {ratio:.2} |",
        a.median, b.median
    );
    println!(
        "| min – max | {:.0} – {:.0} ms | {:.0} – {:.0} ms | |",
        a.min, a.max, b.min, b.max
    );
    println!(
        "| compute_ctl's phases (medians): start_postgres / config / total | {:.0} / {:.0} / {:.0} ms | | |",
        phase("start_postgres_ms"),
        phase("config_ms"),
        phase("total_ms")
    );
    println!(
        "runs in order (compute_ctl / plain, ms): {}",
        pairs(&a_ready, &b_total)
    );
    println!(
        "target: ≤ 0.35 × the plain chain: {ratio:.2}, {}",
        verdict(ratio <= 0.35)
    );

    println!();
    println!(
        "## configuring: six roles and three databases, compute_ctl's apply_spec against psql -f"
    );
    let six = |port: u16| {
        let mut spec = fixture_spec(env, port);
        if let Some(roles) = spec["cluster"]["roles"].as_array_mut() {
            for name in ["extra_one", "extra_two"] {
                roles.push(json!({ "name": name, "encrypted_password": md5_verifier("pw", name) }));
            }
        }
        // The same server on both sides; the statements differ only by compute_ctl's choices
        // (roles in one transaction, `STRATEGY = FILE_COPY` without fsync).
        push_setting(&mut spec, "fsync", "off");
        spec
    };
    let mut a_config = Vec::new();
    let mut b_psql = Vec::new();
    for run in 1..=runs {
        let port = free_port();
        let spec = six(port);
        let mut compute = Compute::spawn(ws, env, "configure-compute", &spec, &[]);
        compute.wait_ready(Duration::from_secs(120));
        let config = compute.state()["startup"]["config_ms"]
            .as_f64()
            .unwrap_or(f64::NAN);
        a_config.push(config);
        compute.terminate();

        let port = free_port();
        let spec = six(port);
        let mut plain = Plain::new(ws, env, "configure-plain", port);
        plain.write_sql(&plain_sql(&spec));
        let conf = plain_conf(&spec, &plain.data);
        plain.initdb();
        plain.write_config(&conf);
        plain.start();
        let psql = ms(plain.psql());
        b_psql.push(psql);
        plain.stop();
        eprintln!("  configure run {run}/{runs}: apply_spec {config:.0} ms, psql -f {psql:.0} ms");
    }
    let a = Stats::of(&a_config);
    let b = Stats::of(&b_psql);
    let ratio = a.median / b.median;
    println!();
    println!("| configuring | compute_ctl (`config_ms`) | `psql -f`, same statements | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| median | {:.0} ms | {:.0} ms | {ratio:.2} |",
        a.median, b.median
    );
    println!(
        "| min – max | {:.0} – {:.0} ms | {:.0} – {:.0} ms | |",
        a.min, a.max, b.min, b.max
    );
    println!(
        "runs in order (compute_ctl / psql, ms): {}",
        pairs(&a_config, &b_psql)
    );
    println!("target: ≤ 1.10: {ratio:.2}, {}", verdict(ratio <= 1.10));
}

/// A compute_ctl started by the bench, working in its own directory (its cwd, so the
/// workspace's clean-up finds it with its Postgres). Dropping it kills whatever still runs.
struct Compute {
    dir: PathBuf,
    pgdata: PathBuf,
    http_port: u16,
    pg_port: u16,
    child: Option<Child>,
    /// Just before `spawn`.
    started: Instant,
    /// The first HTTP answer (any status), after `started`.
    first_http: Option<Duration>,
    agent: ureq::Agent,
}

impl Compute {
    fn spawn(ws: &Workspace, env: &Env, name: &str, spec: &Value, args: &[&str]) -> Compute {
        Compute::spawn_with(ws, env, name, Some(spec), spec_port(spec), args)
    }

    /// `spawn`, without `-S` when `spec` is `None` (it then waits in `empty`).
    fn spawn_with(
        ws: &Workspace,
        env: &Env,
        name: &str,
        spec: Option<&Value>,
        pg_port: u16,
        args: &[&str],
    ) -> Compute {
        let dir = ws.dir(name);
        let spec_path = dir.join("spec.json");
        if let Some(spec) = spec {
            fs::write(
                &spec_path,
                serde_json::to_vec_pretty(spec).expect("a spec serializes"),
            )
            .expect("cannot write the spec file");
        }
        let log = fs::File::create(dir.join("compute_ctl.log")).expect("cannot create the log");
        let http_port = free_port();
        let pgdata = dir.join("pgdata");
        let mut command = Command::new(&env.compute_ctl);
        command
            .arg("-D")
            .arg(&pgdata)
            .args(
                spec.map(|_| ["-S".as_ref(), spec_path.as_os_str()])
                    .into_iter()
                    .flatten(),
            )
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http_port}"))
            .arg("-b")
            .arg(env.bindir.join("postgres"))
            .args(args)
            .current_dir(&dir)
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot share the log"))
            .stderr(log);
        let started = Instant::now();
        let child = command.spawn().expect("cannot start compute_ctl");
        Compute {
            dir,
            pgdata,
            http_port,
            pg_port,
            child: Some(child),
            started,
            first_http: None,
            agent: agent(Duration::from_secs(120)),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    /// After a kill -9: compute_ctl again on the same directory, ports and spec file.
    fn respawn(&mut self, env: &Env) {
        let log = fs::OpenOptions::new()
            .append(true)
            .open(self.dir.join("compute_ctl.log"))
            .expect("cannot open the log");
        let mut command = Command::new(&env.compute_ctl);
        command
            .arg("-D")
            .arg(&self.pgdata)
            .arg("-S")
            .arg(self.dir.join("spec.json"))
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{}", self.http_port))
            .arg("-b")
            .arg(env.bindir.join("postgres"))
            .current_dir(&self.dir)
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot share the log"))
            .stderr(log);
        self.started = Instant::now();
        self.first_http = None;
        self.child = Some(command.spawn().expect("cannot start compute_ctl"));
    }

    /// `kill -9`, leaving Postgres running.
    fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    fn log_tail(&self) -> String {
        let log = fs::read_to_string(self.dir.join("compute_ctl.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "--- compute_ctl log ({}), last lines ---\n{}",
            self.dir.display(),
            lines[lines.len().saturating_sub(40)..].join("\n")
        )
    }

    /// `GET path`: status and body (JSON, or the text as a JSON string).
    fn get(&self, path: &str) -> Result<(u16, Value), String> {
        into_pair(self.agent.get(&self.url(path)).call())
    }

    fn state(&self) -> Value {
        match self.get("/state") {
            Ok((200, state)) => state,
            other => panic!("GET /state failed: {other:?}\n{}", self.log_tail()),
        }
    }

    /// `POST /spec`; the generation of the 202.
    fn post_spec(&self, spec: &Value) -> u64 {
        let result = self
            .agent
            .post(&self.url("/spec"))
            .set("Content-Type", "application/json")
            .send_string(&spec.to_string());
        match into_pair(result) {
            Ok((202, body)) => body["generation"]
                .as_u64()
                .expect("a 202 to POST /spec names the generation"),
            other => panic!("POST /spec: {other:?}\n{}", self.log_tail()),
        }
    }

    /// All records with seq > `since`.
    fn journal(&self, since: u64) -> Vec<Value> {
        let mut records = Vec::new();
        let mut since = since;
        loop {
            let (status, body) = self
                .get(&format!("/journal?since={since}&limit=10000"))
                .unwrap_or_else(|e| panic!("GET /journal: {e}\n{}", self.log_tail()));
            assert_eq!(status, 200, "GET /journal: {body}");
            let page = body["records"].as_array().cloned().unwrap_or_default();
            let Some(last) = page.last().and_then(|r| r["seq"].as_u64()) else {
                return records;
            };
            since = last;
            records.extend(page);
        }
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits for `GET /readyz` 200; the time since the spawn. Until the HTTP API answers it
    /// polls every 2 ms; then it asks `/readyz` each time the journal grows (a long-poll on
    /// `GET /journal?wait=`), so no busy polling takes CPU from the start-up being measured.
    fn wait_ready(&mut self, timeout: Duration) -> Duration {
        let mut seq = 0;
        loop {
            match self.get("/readyz") {
                Ok((200, _)) => {
                    let ready = self.started.elapsed();
                    self.first_http.get_or_insert(ready);
                    return ready;
                }
                Ok((_, body)) => {
                    self.first_http.get_or_insert(self.started.elapsed());
                    if body["phase"] == "failed" {
                        panic!(
                            "compute_ctl failed: {}\n{}",
                            self.state()["error"],
                            self.log_tail()
                        );
                    }
                    seq = self.wait_for_record(seq);
                }
                Err(_) => {
                    if let Some(status) = self.exited() {
                        panic!("compute_ctl exited with {status}\n{}", self.log_tail());
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            assert!(
                self.started.elapsed() < timeout,
                "compute_ctl not ready within {timeout:?}\n{}",
                self.log_tail()
            );
        }
    }

    /// Until `/state.applied_generation` is `generation` in `running`, asked each time the
    /// journal grows.
    fn wait_applied(&self, generation: u64, timeout: Duration) {
        let started = Instant::now();
        let mut seq = 0;
        loop {
            let state = self.state();
            if state["applied_generation"].as_u64() == Some(generation)
                && state["phase"] == "running"
            {
                return;
            }
            assert!(
                state["phase"] != "failed",
                "configuration failed: {}\n{}",
                state["error"],
                self.log_tail()
            );
            assert!(
                started.elapsed() < timeout,
                "generation {generation} not applied within {timeout:?}: {state}\n{}",
                self.log_tail()
            );
            seq = seq.max(state["seq"].as_u64().unwrap_or(0));
            seq = self.wait_for_record(seq);
        }
    }

    /// Long-polls `GET /journal?since=seq&wait=1`: returns at once if a record after `seq`
    /// exists, else when one is published (at most 1 s); the last seq seen.
    fn wait_for_record(&self, seq: u64) -> u64 {
        match self.get(&format!("/journal?since={seq}&limit=1000&wait=1")) {
            Ok((200, page)) => page["records"]
                .as_array()
                .and_then(|r| r.last())
                .and_then(|r| r["seq"].as_u64())
                .unwrap_or(seq),
            _ => {
                std::thread::sleep(Duration::from_millis(2));
                seq
            }
        }
    }

    /// `POST /terminate`, then waits for exit 0; the time from the request to the exit.
    fn terminate(&mut self) -> Duration {
        let started = Instant::now();
        let answer = into_pair(self.agent.post(&self.url("/terminate")).call());
        assert!(
            matches!(answer, Ok((200, _))),
            "POST /terminate: {answer:?}\n{}",
            self.log_tail()
        );
        let Some(mut child) = self.child.take() else {
            panic!("compute_ctl is not running");
        };
        loop {
            if let Some(status) = child.try_wait().expect("cannot wait for compute_ctl") {
                assert!(
                    status.success(),
                    "compute_ctl exited with {status} after POST /terminate\n{}",
                    self.log_tail()
                );
                return started.elapsed();
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "compute_ctl did not exit within 60 s of POST /terminate\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn proc_status(&self) -> ProcStatus {
        proc_status(self.pid())
    }
}

impl Drop for Compute {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_processes_under(&self.pgdata);
    }
}

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::AgentBuilder::new().timeout(timeout).build()
}

fn into_pair(result: Result<ureq::Response, ureq::Error>) -> Result<(u16, Value), String> {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = response.status();
    let text = response.into_string().map_err(|e| e.to_string())?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// One `apply_spec` step from the journal.
struct ApplyStep {
    generation: Option<u64>,
    duration_ms: f64,
    statements_sent: Option<f64>,
    catalog_reads: Option<f64>,
    reloaded: bool,
    summary: String,
}

/// The finished `apply_spec` steps among `records`, in order, with the generation of their
/// `step_started` record.
fn apply_steps(records: &[Value]) -> Vec<ApplyStep> {
    let mut generations = BTreeMap::new();
    let mut steps = Vec::new();
    for record in records {
        if record["step"] != "apply_spec" {
            continue;
        }
        let id = record["id"].as_u64();
        match record["kind"].as_str() {
            Some("step_started") => {
                generations.insert(id, record["generation"].as_u64());
            }
            Some("step_finished") => {
                let detail = &record["output"]["detail"];
                let catalog = &detail["catalog"];
                steps.push(ApplyStep {
                    generation: generations.get(&id).copied().flatten(),
                    duration_ms: record["duration_ms"].as_f64().unwrap_or(f64::NAN),
                    statements_sent: catalog["statements_sent"].as_f64(),
                    catalog_reads: catalog["catalog_reads"].as_f64(),
                    reloaded: detail["reloaded"] == true,
                    summary: catalog["summary"]
                        .as_array()
                        .map(|s| {
                            s.iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default(),
                });
            }
            _ => {}
        }
    }
    steps
}

// ---------------------------------------------------------------------------------------------
// The plain tools: initdb, pg_ctl, psql.

/// A Postgres set up by hand in its own directory (owned by the Postgres OS user).
struct Plain<'e> {
    env: &'e Env,
    dir: PathBuf,
    data: PathBuf,
    port: u16,
    running: bool,
    /// The postmaster `restart_by_hand` started, reaped once stopped.
    by_hand: Option<Child>,
}

impl<'e> Plain<'e> {
    fn new(ws: &Workspace, env: &'e Env, name: &str, port: u16) -> Plain<'e> {
        let dir = ws.dir(name);
        if let Some((uid, gid)) = env.pg_user {
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .expect("cannot give the plain directory to the Postgres user");
        }
        Plain {
            env,
            data: dir.join("data"),
            dir,
            port,
            running: false,
            by_hand: None,
        }
    }

    /// A Postgres tool as the Postgres OS user, without the caller's `PG*` variables.
    fn tool(&self, program: &str) -> Command {
        let mut command = Command::new(self.env.bindir.join(program));
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                command.env_remove(key);
            }
        }
        command
            .env("HOME", &self.dir)
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.env.pg_user {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn run(&self, mut command: Command, what: &str) -> Duration {
        let started = Instant::now();
        let output = command
            .output()
            .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
        let elapsed = started.elapsed();
        assert!(
            output.status.success(),
            "{what} failed with {}: {}{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
        );
        elapsed
    }

    /// Written before the clock starts: the statements are the input, like the spec.
    fn write_sql(&self, sql: &str) {
        fs::write(self.dir.join("statements.sql"), sql).expect("cannot write the SQL file");
    }

    /// `initdb` with compute_ctl's flags (`src/storage/embedded.rs`).
    fn initdb(&self) -> Duration {
        let mut command = self.tool("initdb");
        command.arg("-D").arg(&self.data).args([
            "-U",
            ADMIN,
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
            "--no-instructions",
        ]);
        self.run(command, "initdb")
    }

    /// `postgresql.conf` (the spec's settings) and compute_ctl's `pg_hba.conf`, replacing
    /// initdb's.
    fn write_config(&self, conf: &str) -> Duration {
        let started = Instant::now();
        let hba = compute_ctl::postgres::render_pg_hba(ADMIN).expect("pg_hba.conf renders");
        fs::write(self.data.join("postgresql.conf"), conf).expect("cannot write postgresql.conf");
        fs::write(self.data.join("pg_hba.conf"), hba).expect("cannot write pg_hba.conf");
        started.elapsed()
    }

    fn start(&mut self) -> Duration {
        let mut command = self.tool("pg_ctl");
        command
            .args(["start", "-w", "-t", "300", "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(self.dir.join("postgres.log"));
        self.running = true;
        self.run(command, "pg_ctl start")
    }

    /// One `psql` session sending `statements.sql`, stopping at the first error.
    fn psql(&self) -> Duration {
        let mut command = self.tool("psql");
        command
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .args(["-U", ADMIN, "-d", "postgres", "-f"])
            .arg(self.dir.join("statements.sql"));
        self.run(command, "psql")
    }

    fn stop(&mut self) -> Duration {
        let mut command = self.tool("pg_ctl");
        command
            .args(["stop", "-w", "-t", "60", "-m", "fast", "-D"])
            .arg(&self.data);
        let elapsed = self.run(command, "pg_ctl stop");
        self.running = false;
        elapsed
    }
}

impl Drop for Plain<'_> {
    fn drop(&mut self) {
        if self.running {
            let mut command = self.tool("pg_ctl");
            command
                .args(["stop", "-w", "-t", "10", "-m", "immediate", "-D"])
                .arg(&self.data)
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = command.status();
        }
        kill_processes_under(&self.dir);
    }
}

/// `kill -9` + start, and SIGUSR2, to ready, against the plain restart of an existing data
/// directory; alternated.
fn restart(ws: &Workspace, env: &Env) {
    let runs = env_count("COMPUTE_BENCH_RESTARTS", 10).max(1);
    println!("## restart: a new compute_ctl process → ready, adopting the running Postgres");
    println!("{runs} runs per side, alternated; COMPUTE_BENCH_RESTARTS sets the count");
    let spec = fixture_spec(env, free_port());
    let mut compute = Compute::spawn(ws, env, "restart-compute", &spec, &[]);
    compute.wait_ready(Duration::from_secs(120));
    let postmaster = compute.state()["postmaster_pid"].clone();
    let mut plain = Plain::new(ws, env, "restart-plain", free_port());
    plain.initdb();
    plain.write_config(&format!(
        "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n",
        plain.port,
        plain.data.display()
    ));
    let (mut killed, mut upgraded, mut by_hand) = (Vec::new(), Vec::new(), Vec::new());
    let mut adopted_every_time = true;
    for _ in 0..runs {
        compute.kill9();
        compute.respawn(env);
        killed.push(ms(compute.wait_ready(Duration::from_secs(120))));
        adopted_every_time &= compute.state()["postmaster_pid"] == postmaster;

        let epoch = compute.state()["epoch"].as_u64().unwrap_or(0);
        let signalled = Instant::now();
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(compute.pid() as i32, libc::SIGUSR2) };
        loop {
            if let Ok((200, _)) = compute.get("/readyz") {
                if compute.state()["epoch"].as_u64() > Some(epoch) {
                    break;
                }
            }
            assert!(
                signalled.elapsed() < Duration::from_secs(120),
                "not ready after SIGUSR2\n{}",
                compute.log_tail()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        upgraded.push(ms(signalled.elapsed()));
        adopted_every_time &= compute.state()["postmaster_pid"] == postmaster;

        by_hand.push(ms(plain.restart_by_hand()));
    }
    let (k, u, h) = (
        Stats::of(&killed),
        Stats::of(&upgraded),
        Stats::of(&by_hand),
    );
    println!();
    println!("| measure (ms) | median | p90 | max |");
    println!("|---|---|---|---|");
    println!(
        "| kill -9, start → ready (compute_ctl) | {:.1} | {:.1} | {:.1} |",
        k.median, k.p90, k.max
    );
    println!(
        "| SIGUSR2 → ready (compute_ctl) | {:.1} | {:.1} | {:.1} |",
        u.median, u.p90, u.max
    );
    println!(
        "| plain `postgres -D` restart → accepting | {:.1} | {:.1} | {:.1} |",
        h.median, h.p90, h.max
    );
    println!();
    println!("the same postmaster every time: {adopted_every_time}");
    println!(
        "goal: ready ≤ 60 ms after the new process starts: {} (kill -9 median {:.1} ms)",
        verdict(k.median <= 60.0),
        k.median
    );
}

impl Plain<'_> {
    /// Stops Postgres (untimed), then starts `postgres -D` by hand and polls until it accepts
    /// a connection: the time of a restart of an existing data directory.
    fn restart_by_hand(&mut self) -> Duration {
        if self.running {
            self.stop();
        }
        if let Some(mut stopped) = self.by_hand.take() {
            let _ = stopped.wait();
        }
        let log = fs::File::create(self.dir.join("postgres.log")).expect("cannot create the log");
        let mut command = self.tool("postgres");
        command
            .arg("-D")
            .arg(&self.data)
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        let started = Instant::now();
        let mut child = command.spawn().expect("cannot start postgres");
        self.running = true;
        loop {
            let mut config = postgres::Config::new();
            config
                .host("127.0.0.1")
                .port(self.port)
                .user(ADMIN)
                .dbname("postgres");
            if config.connect(postgres::NoTls).is_ok() {
                let elapsed = started.elapsed();
                // Left running: `stop` (pg_ctl) ends it at the next round, or the drop does.
                self.by_hand = Some(child);
                return elapsed;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("postgres exited with {status}");
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn pg_client(port: u16) -> postgres::Client {
    let mut config = postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user(ADMIN)
        .dbname("postgres")
        .connect_timeout(Duration::from_secs(5));
    config
        .connect(postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to Postgres on port {port}: {e}"))
}

/// The spec's settings as `postgresql.conf` lines, with the socket in the data directory as
/// compute_ctl puts it (its own `compute_ctl.spec_hash` line left out).
fn plain_conf(spec: &Value, data: &Path) -> String {
    let mut conf = String::from("# the spec's settings, by hand\n");
    for setting in spec["cluster"]["settings"].as_array().into_iter().flatten() {
        if let (Some(name), Some(value)) = (setting["name"].as_str(), setting["value"].as_str()) {
            conf.push_str(&format!("{name} = {}\n", conf_literal(value)));
        }
    }
    conf.push_str(&format!(
        "unix_socket_directories = {}\n",
        conf_literal(&data.to_string_lossy())
    ));
    conf
}

fn conf_literal(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "''"))
}

/// The CREATE ROLE and CREATE DATABASE statements compute_ctl sends for a fresh catalog.
fn plain_sql(spec: &Value) -> String {
    let mut sql = String::new();
    for role in spec["cluster"]["roles"].as_array().into_iter().flatten() {
        let name = sql_ident(role["name"].as_str().unwrap_or_default());
        match role["encrypted_password"].as_str() {
            Some(verifier) if verifier.starts_with("SCRAM-SHA-256$") => {
                sql.push_str(&format!(
                    "CREATE ROLE {name} WITH LOGIN PASSWORD {};\n",
                    sql_literal(verifier)
                ));
            }
            Some(md5) => sql.push_str(&format!(
                "CREATE ROLE {name} WITH LOGIN PASSWORD {};\n",
                sql_literal(&format!("md5{md5}"))
            )),
            None => sql.push_str(&format!("CREATE ROLE {name} WITH LOGIN;\n")),
        }
    }
    for database in spec["cluster"]["databases"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let mut items = vec![format!(
            "OWNER = {}",
            sql_ident(database["owner"].as_str().unwrap_or_default())
        )];
        for option in database["options"].as_array().into_iter().flatten() {
            let name = option["name"].as_str().unwrap_or_default();
            let value = option["value"].as_str().unwrap_or_default();
            items.push(if name.eq_ignore_ascii_case("template") {
                format!("{name} = {}", sql_ident(value))
            } else {
                format!("{name} = {}", sql_literal(value))
            });
        }
        sql.push_str(&format!(
            "CREATE DATABASE {} WITH {};\n",
            sql_ident(database["name"].as_str().unwrap_or_default()),
            items.join(" ")
        ));
    }
    sql
}

fn sql_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn sql_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Temp file, fsync, rename: what a careful tool does to `postgresql.conf`.
fn write_file_durably(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("conf.tmp");
    let mut file = fs::File::create(&tmp).expect("cannot create the temp file");
    file.write_all(bytes).expect("cannot write the temp file");
    file.sync_all().expect("cannot fsync the temp file");
    drop(file);
    fs::rename(&tmp, path).expect("cannot rename the temp file");
}

// ---------------------------------------------------------------------------------------------
// Specs.

/// `fixtures/specs/embedded-default.json` with `port` as its Postgres port.
fn fixture_spec(env: &Env, port: u16) -> Value {
    let mut spec = env.fixture.clone();
    push_setting(&mut spec, "port", &port.to_string());
    spec
}

/// Sets `name` in `cluster.settings`, replacing an entry of that name.
fn push_setting(spec: &mut Value, name: &str, value: &str) {
    let settings = spec["cluster"]["settings"]
        .as_array_mut()
        .expect("the spec has cluster.settings");
    let entry = json!({ "name": name, "value": value, "vartype": "string" });
    match settings.iter_mut().find(|s| s["name"] == name) {
        Some(existing) => existing["value"] = Value::String(value.to_owned()),
        None => settings.push(entry),
    }
}

// ---------------------------------------------------------------------------------------------
// Processes, ports, machine facts.

/// SIGKILL to every live process whose working directory is under `dir` (compute_ctl runs in
/// its run directory, Postgres in its data directory), until none is left.
fn kill_processes_under(dir: &Path) {
    let Ok(dir) = fs::canonicalize(dir) else {
        return;
    };
    for _ in 0..250 {
        let mut found = false;
        for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                == Some("Z");
            if zombie {
                continue;
            }
            let under =
                fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(&dir));
            if under {
                found = true;
                // SAFETY: kill(2) has no memory preconditions; the pid works in our directory.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if !found {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("processes still work under {} after SIGKILL", dir.display());
}

struct ProcStatus {
    rss_kb: u64,
    hwm_kb: u64,
    threads: u64,
}

fn proc_status(pid: u32) -> ProcStatus {
    let field = |name: &str| status_field(pid, name).unwrap_or(0);
    ProcStatus {
        rss_kb: field("VmRSS:"),
        hwm_kb: field("VmHWM:"),
        threads: field("Threads:"),
    }
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command: state is field 3, utime 14, stime 15 (1-based in proc(5)).
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

fn ticks_to_secs(ticks: u64) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let per_sec = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / per_sec as f64
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| {
                fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    })
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn memory_total() -> String {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or_else(
            || "unknown memory".to_owned(),
            |kb| format!("{:.0} GiB RAM", kb / 1024.0 / 1024.0),
        )
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".to_owned())
}

fn postgres_version(env: &Env) -> String {
    Command::new(env.bindir.join("postgres"))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|e| format!("unknown ({e})"))
}

/// 100 appends of 4 KiB, each followed by `fdatasync`, in `dir`: the disk's sync latency,
/// which every journal append, stored spec and `postgresql.conf` write pays.
fn fsync_probe(dir: &Path) -> String {
    let path = dir.join("fsync-probe");
    let Ok(mut file) = fs::File::create(&path) else {
        return "unknown".to_owned();
    };
    let block = [0x5a_u8; 4096];
    let mut latencies = Vec::new();
    for _ in 0..100 {
        let started = Instant::now();
        if file
            .write_all(&block)
            .and_then(|()| file.sync_data())
            .is_err()
        {
            return "unknown (write failed)".to_owned();
        }
        latencies.push(ms(started.elapsed()));
    }
    drop(file);
    let _ = fs::remove_file(&path);
    let s = Stats::of(&latencies);
    format!(
        "4 KiB append + fdatasync, 100 times: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        s.median, s.p99, s.max
    )
}

// ---------------------------------------------------------------------------------------------
// Numbers.

/// Quantiles by linear interpolation between the closest ranks (NaN when empty).
struct Stats {
    median: f64,
    p90: f64,
    p99: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn of(values: &[f64]) -> Stats {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| !v.is_nan()).collect();
        sorted.sort_by(f64::total_cmp);
        let q = |p: f64| {
            if sorted.is_empty() {
                return f64::NAN;
            }
            let pos = (sorted.len() - 1) as f64 * p;
            let lo = pos.floor() as usize;
            let hi = pos.ceil() as usize;
            sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
        };
        Stats {
            median: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            min: q(0.0),
            max: q(1.0),
        }
    }
}

fn pairs(a: &[f64], b: &[f64]) -> String {
    a.iter()
        .zip(b)
        .map(|(a, b)| format!("{a:.0}/{b:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}
