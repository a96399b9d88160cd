//! `cargo bench --bench upstream`: the upstream backend's costs on this machine, printed as
//! tables. Run `cargo build --release` first: it drives `target/release/compute_ctl` (or
//! `$COMPUTE_CTL_BIN`), since a bench target is not told where cargo put the binary.
//!
//! - cold start of a `Replica` from a small upstream: process start to `GET /readyz` 200,
//!   with the phases from `/state.startup`;
//! - replica apply lag: a single-row insert committed on the upstream (with
//!   `synchronous_commit = on`) until a query on the compute sees it, p50 and p99 over
//!   `UPSTREAM_BENCH_INSERTS` (200) inserts;
//! - base backup of an upstream database of `UPSTREAM_BENCH_MB` (1100) MB: compute_ctl's
//!   `fetch_basebackup` step (`/state.startup.basebackup_ms`) against `pg_basebackup` alone
//!   with the same flags into an empty directory, alternated, `UPSTREAM_BENCH_ROUNDS` (3)
//!   rounds, and compute_ctl's peak resident memory (`VmHWM`, and the largest `VmRSS`
//!   sampled every 10 ms).
//!
//! Not a timed test: it asserts nothing about speed. Every directory is kept until the end
//! (deleting gigabytes between rounds slows this disk down and would skew the next round),
//! then removed; the upstream servers stop when dropped.

#![allow(clippy::unwrap_used)]

// Named apart from the `postgres` crate it uses.
#[allow(dead_code)]
#[path = "../it/support/postgres.rs"]
mod test_postgres;

#[allow(dead_code)]
#[path = "machine.rs"]
mod machine;

use machine::{describe_disk, env_count, free_port, ms, percentile, spec_port, status_field};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use test_postgres::{Setup, TestPostgres};

type Error = Box<dyn std::error::Error>;

/// The flags compute_ctl gives pg_basebackup (see `src/storage/upstream.rs`).
const BASEBACKUP_FLAGS: [&str; 7] = [
    "--wal-method=stream",
    "--checkpoint=fast",
    "--progress",
    "--no-sync",
    "--no-manifest",
    "--no-password",
    "--label=compute_ctl",
];

fn main() -> Result<(), Error> {
    let binary = match std::env::var_os("COMPUTE_CTL_BIN") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/compute_ctl"),
    };
    if !binary.is_file() {
        eprintln!(
            "{} not found: run `cargo build --release` first (or set COMPUTE_CTL_BIN)",
            binary.display()
        );
        std::process::exit(2);
    }
    // Under /tmp, which the Postgres OS user can traverse (a checkout may not be).
    let base = tempfile::Builder::new()
        .prefix("compute_ctl-bench-upstream.")
        .permissions(<fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755))
        .tempdir()?;
    println!("upstream backend benchmark");
    println!("  compute_ctl: {}", binary.display());
    println!("  directory:   {}", base.path().display());
    println!("  disk:        {}", describe_disk(base.path()));
    println!("  cpus:        {}", std::thread::available_parallelism()?);
    println!();
    let bench = Bench {
        binary,
        base: base.path().to_path_buf(),
        next_dir: AtomicU64::new(0),
    };
    {
        // synchronous_commit on: a commit returns once its WAL is flushed and can be sent,
        // as on a production primary (the test default, off, delays sending by up to 600 ms).
        let small =
            TestPostgres::start_with_settings(Setup::default(), &[("synchronous_commit", "on")]);
        cold_start(&bench, &small, env_count("UPSTREAM_BENCH_STARTS", 5))?;
        apply_lag(&bench, &small, env_count("UPSTREAM_BENCH_INSERTS", 200))?;
    }
    base_backup(
        &bench,
        env_count("UPSTREAM_BENCH_MB", 1100),
        env_count("UPSTREAM_BENCH_ROUNDS", 3),
    )?;
    drop(base);
    Ok(())
}

struct Bench {
    binary: PathBuf,
    base: PathBuf,
    next_dir: AtomicU64,
}

impl Bench {
    /// A fresh directory under the base, kept until the end.
    fn dir(&self, what: &str) -> PathBuf {
        let n = self.next_dir.fetch_add(1, Ordering::SeqCst);
        let dir = self.base.join(format!("{what}-{n}"));
        fs::create_dir(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    fn start(&self, spec: &Value) -> Running {
        let dir = self.dir("compute");
        let http_port = free_port();
        fs::write(dir.join("spec.json"), spec.to_string()).unwrap();
        let log = fs::File::create(dir.join("compute_ctl.log")).unwrap();
        let started = Instant::now();
        let child = Command::new(&self.binary)
            .arg("-D")
            .arg(dir.join("pgdata"))
            .arg("-S")
            .arg(dir.join("spec.json"))
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{http_port}"))
            .args(["--monitor-interval", "100ms"])
            .env("COMPUTE_CTL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Running {
            child,
            started,
            http_port,
            pg_port: spec_port(spec),
            dir,
        }
    }
}

/// A compute_ctl started by the bench.
struct Running {
    child: Child,
    started: Instant,
    http_port: u16,
    pg_port: u16,
    dir: PathBuf,
}

impl Running {
    fn get(&self, path: &str) -> Option<(u16, Value)> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        let response = match agent
            .get(&format!("http://127.0.0.1:{}{path}", self.http_port))
            .call()
        {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(_) => return None,
        };
        let status = response.status();
        let body = response.into_string().ok()?;
        Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    /// Polls `/state` every 100 ms until `until` holds: not faster, since on two cores the
    /// polling itself would slow down the base backup being measured (the durations read
    /// come from compute_ctl's own clock, not from when the poll saw them).
    fn wait(&mut self, timeout: Duration, what: &str, until: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some((200, state)) = self.get("/state") {
                if state["phase"] == "failed" || until(&state) {
                    assert!(
                        state["phase"] != "failed",
                        "{what}: {state}\n{}",
                        self.log()
                    );
                    return state;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "compute_ctl exited ({status}) before {what}\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}\n{}", self.log());
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("compute_ctl.log")).unwrap_or_default()
    }

    fn admin(&self) -> postgres::Client {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.pg_port)
            .user(test_postgres::SUPERUSER)
            .dbname("postgres")
            .connect(postgres::NoTls)
            .unwrap()
    }

    /// `POST /terminate` and wait for the exit.
    fn terminate(mut self) {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(120))
            .build();
        let _ = agent
            .post(&format!("http://127.0.0.1:{}/terminate", self.http_port))
            .call();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A spec that copies `upstream` (as its trusted superuser) in `mode`.
fn spec(upstream: &TestPostgres, mode: &str) -> Value {
    json!({
        "format_version": 1.0,
        "cluster": {
            "roles": [],
            "databases": [],
            "settings": [
                { "name": "port", "value": free_port().to_string(), "vartype": "integer" },
                { "name": "listen_addresses", "value": "127.0.0.1", "vartype": "string" },
                { "name": "fsync", "value": "off", "vartype": "bool" },
                { "name": "shared_buffers", "value": "32MB", "vartype": "string" }
            ]
        },
        "delta_operations": [],
        "upstream_connstring": upstream.connstr(test_postgres::SUPERUSER, "postgres"),
        "mode": mode,
    })
}

fn median(values: &mut [u64]) -> u64 {
    values.sort_unstable();
    values[values.len() / 2]
}

fn cold_start(bench: &Bench, upstream: &TestPostgres, runs: u64) -> Result<(), Error> {
    println!("cold start of a Replica from a small upstream (process start -> /readyz 200)");
    println!(
        "  {:>3}  {:>9}  {:>8}  {:>10}  {:>8}  {:>6}  {:>9}",
        "run", "readyz_ms", "sync_ms", "backup_ms", "start_ms", "config_ms", "total_ms"
    );
    let mut readyz = Vec::new();
    let mut phases: Vec<[u64; 5]> = Vec::new();
    for run in 1..=runs {
        let mut compute = bench.start(&spec(upstream, "Replica"));
        let ready_at = loop {
            if let Some((200, _)) = compute.get("/readyz") {
                break compute.started.elapsed();
            }
            if let Ok(Some(status)) = compute.child.try_wait() {
                panic!("compute_ctl exited ({status})\n{}", compute.log());
            }
            assert!(
                compute.started.elapsed() < Duration::from_secs(60),
                "not ready after 60 s\n{}",
                compute.log()
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        let state = compute.wait(Duration::from_secs(5), "the state", |_| true);
        let s = &state["startup"];
        let ms = |key: &str| s[key].as_u64().unwrap_or(0);
        let row = [
            ms("sync_safekeepers_ms"),
            ms("basebackup_ms"),
            ms("start_postgres_ms"),
            ms("config_ms"),
            ms("total_ms"),
        ];
        println!(
            "  {run:>3}  {:>9}  {:>8}  {:>10}  {:>8}  {:>9}  {:>8}",
            ready_at.as_millis(),
            row[0],
            row[1],
            row[2],
            row[3],
            row[4]
        );
        readyz.push(ready_at.as_millis() as u64);
        phases.push(row);
        compute.terminate();
    }
    let column = |i: usize| median(&mut phases.iter().map(|r| r[i]).collect::<Vec<_>>());
    println!(
        "  {:>3}  {:>9}  {:>8}  {:>10}  {:>8}  {:>9}  {:>8}",
        "med",
        median(&mut readyz),
        column(0),
        column(1),
        column(2),
        column(3),
        column(4)
    );
    println!("  (total_ms: compute_ctl's own count from its start-up to the first apply)");
    println!();
    Ok(())
}

fn apply_lag(bench: &Bench, upstream: &TestPostgres, inserts: u64) -> Result<(), Error> {
    let mut primary = upstream.client("postgres");
    primary
        .batch_execute("CREATE TABLE lag (id bigint PRIMARY KEY, at timestamptz DEFAULT now())")?;
    let mut compute = bench.start(&spec(upstream, "Replica"));
    compute.wait(Duration::from_secs(60), "running", |s| {
        s["phase"] == "running"
    });
    let mut replica = compute.admin();
    let insert = primary.prepare("INSERT INTO lag (id) VALUES ($1)")?;
    let probe = replica.prepare("SELECT 1 FROM lag WHERE id = $1")?;
    // The table itself must have arrived before the first measurement.
    while replica
        .query("SELECT 1 FROM pg_class WHERE relname = 'lag'", &[])?
        .is_empty()
    {
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut lags = Vec::with_capacity(inserts as usize);
    let mut polls = 0_u64;
    for id in 1..=inserts as i64 {
        primary.execute(&insert, &[&id])?;
        let committed = Instant::now();
        loop {
            polls += 1;
            if !replica.query(&probe, &[&id])?.is_empty() {
                break;
            }
            // A short pause leaves the CPU to the WAL receiver and the startup process.
            std::thread::sleep(Duration::from_micros(100));
        }
        lags.push(committed.elapsed());
    }
    lags.sort_unstable();
    let mean = lags.iter().sum::<Duration>() / lags.len() as u32;
    println!("replica apply lag: commit on the upstream -> row visible on the compute");
    println!(
        "  {:>7}  {:>9}  {:>9}  {:>9}  {:>9}  {:>9}  {:>10}",
        "inserts", "p50_ms", "p99_ms", "max_ms", "min_ms", "mean_ms", "polls/row"
    );
    println!(
        "  {:>7}  {:>9.3}  {:>9.3}  {:>9.3}  {:>9.3}  {:>9.3}  {:>10.1}",
        lags.len(),
        ms(percentile(&lags, 0.50)),
        ms(percentile(&lags, 0.99)),
        ms(lags[lags.len() - 1]),
        ms(lags[0]),
        ms(mean),
        polls as f64 / lags.len() as f64
    );
    println!("  (a poll is one query on the compute, with 0.1 ms between polls)");
    println!();
    drop(replica);
    compute.terminate();
    Ok(())
}

/// One alternated round's numbers.
struct Round {
    compute_ms: u64,
    /// pg_basebackup's own time inside the step (the rest is the step's work around it).
    inner_ms: u64,
    plain_ms: u64,
    hwm_kb: u64,
    rss_max_kb: u64,
}

fn base_backup(bench: &Bench, mb: u64, rounds: u64) -> Result<(), Error> {
    let upstream = TestPostgres::start();
    let rows = mb * 1024 * 1024 / 1000;
    let started = Instant::now();
    let mut client = upstream.client("postgres");
    client.batch_execute(&format!(
        "CREATE TABLE big (id bigint, pad text);
         ALTER TABLE big ALTER COLUMN pad SET STORAGE PLAIN;
         INSERT INTO big SELECT g, repeat('x', 900) FROM generate_series(1, {rows}) g;
         CHECKPOINT;"
    ))?;
    let size: i64 = client
        .query_one("SELECT pg_database_size('postgres')", &[])?
        .get(0);
    let cluster_mb = du_kb(&upstream.datadir()) / 1024;
    println!(
        "base backup of an upstream database of {} MB (cluster {} MB on disk; generated in {:.1} s)",
        size / 1024 / 1024,
        cluster_mb,
        started.elapsed().as_secs_f64()
    );
    println!("  pg_basebackup flags: {}", BASEBACKUP_FLAGS.join(" "));
    println!(
        "  {:>5}  {:>6}  {:>10}  {:>8}  {:>16}  {:>6}  {:>10}  {:>10}",
        "round",
        "first",
        "compute_ms",
        "inner_ms",
        "pg_basebackup_ms",
        "ratio",
        "hwm_rss_MB",
        "max_rss_MB"
    );
    let mut results = Vec::new();
    for round in 1..=rounds {
        // Alternate which goes first, so that neither always follows the other's writeback.
        let compute_first = round % 2 == 1;
        let (compute, plain);
        // Neither run pays for the other's writeback: what the last one left dirty is
        // written out before each (PGDATA is copied with --no-sync, so gigabytes are dirty).
        if compute_first {
            compute = compute_backup(bench, &upstream);
            plain = plain_backup(bench, &upstream);
        } else {
            plain = plain_backup(bench, &upstream);
            compute = compute_backup(bench, &upstream);
        }
        let round_result = Round {
            compute_ms: compute.0,
            inner_ms: compute.1,
            plain_ms: plain,
            hwm_kb: compute.2,
            rss_max_kb: compute.3,
        };
        println!(
            "  {round:>5}  {:>6}  {:>10}  {:>8}  {:>16}  {:>6.3}  {:>10.1}  {:>10.1}",
            if compute_first { "ctl" } else { "plain" },
            round_result.compute_ms,
            round_result.inner_ms,
            round_result.plain_ms,
            round_result.compute_ms as f64 / round_result.plain_ms as f64,
            round_result.hwm_kb as f64 / 1024.0,
            round_result.rss_max_kb as f64 / 1024.0
        );
        results.push(round_result);
    }
    let compute_med = median(&mut results.iter().map(|r| r.compute_ms).collect::<Vec<_>>());
    let plain_med = median(&mut results.iter().map(|r| r.plain_ms).collect::<Vec<_>>());
    let inner_med = median(&mut results.iter().map(|r| r.inner_ms).collect::<Vec<_>>());
    let hwm = results.iter().map(|r| r.hwm_kb).max().unwrap_or(0);
    let rss = results.iter().map(|r| r.rss_max_kb).max().unwrap_or(0);
    println!(
        "  {:>5}  {:>6}  {:>10}  {:>8}  {:>16}  {:>6.3}  {:>10.1}  {:>10.1}",
        "med",
        "",
        compute_med,
        inner_med,
        plain_med,
        compute_med as f64 / plain_med as f64,
        hwm as f64 / 1024.0,
        rss as f64 / 1024.0
    );
    let mut ratios: Vec<f64> = results
        .iter()
        .map(|r| r.compute_ms as f64 / r.plain_ms as f64)
        .collect();
    ratios.sort_by(f64::total_cmp);
    let own = median(
        &mut results
            .iter()
            .map(|r| r.compute_ms.saturating_sub(r.inner_ms))
            .collect::<Vec<_>>(),
    );
    println!(
        "  median of the per-round ratios: {:.3}; compute_ctl's own part of the step \
         (compute_ms - inner_ms), median: {own} ms ({:.2}% of the step)",
        ratios[ratios.len() / 2],
        own as f64 * 100.0 / compute_med.max(1) as f64
    );
    println!(
        "  (compute_ms: /state.startup.basebackup_ms, the whole fetch_basebackup step; \
         inner_ms: pg_basebackup inside it; ratio = compute_ms / pg_basebackup_ms, target \
         <= 1.05; RSS of compute_ctl: VmHWM over its life, and the largest VmRSS sampled \
         every 10 ms during the backup, target <= 32 MB; sync(2) before every run)"
    );
    println!();
    Ok(())
}

/// Writes out every dirty page of the machine (sync(2)).
fn sync_disks() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
}

/// compute_ctl copying `upstream`: (basebackup_ms, pg_basebackup_ms inside it, VmHWM kB,
/// max sampled VmRSS kB).
fn compute_backup(bench: &Bench, upstream: &TestPostgres) -> (u64, u64, u64, u64) {
    sync_disks();
    let mut compute = bench.start(&spec(upstream, "Primary"));
    let pid = compute.child.id();
    let done = Arc::new(AtomicBool::new(false));
    let rss_max = Arc::new(AtomicU64::new(0));
    let sampler = {
        let done = done.clone();
        let rss_max = rss_max.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::SeqCst) {
                if let Some(kb) = status_field(pid, "VmRSS:") {
                    rss_max.fetch_max(kb, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let state = compute.wait(Duration::from_secs(600), "the base backup", |s| {
        s["startup"]["basebackup_ms"].as_u64().unwrap_or(0) > 0
    });
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    let hwm = status_field(pid, "VmHWM:").unwrap_or(0);
    let basebackup_ms = state["startup"]["basebackup_ms"].as_u64().unwrap_or(0);
    compute.wait(Duration::from_secs(600), "running", |s| {
        s["phase"] == "running"
    });
    let inner_ms = compute
        .get("/journal?since=0&limit=1000")
        .and_then(|(_, body)| {
            body["records"].as_array().and_then(|records| {
                records
                    .iter()
                    .find(|r| r["kind"] == "step_finished" && r["step"] == "fetch_basebackup")
                    .and_then(|r| r["output"]["detail"]["pg_basebackup_ms"].as_u64())
            })
        })
        .unwrap_or(0);
    compute.terminate();
    (basebackup_ms, inner_ms, hwm, rss_max.load(Ordering::SeqCst))
}

/// `pg_basebackup` alone, same flags, into an empty directory: its wall time in ms.
fn plain_backup(bench: &Bench, upstream: &TestPostgres) -> u64 {
    sync_disks();
    let dir = bench.dir("plain");
    let target = dir.join("pgdata");
    fs::create_dir(&target).unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&target, fs::Permissions::from_mode(0o700)).unwrap();
    test_postgres::give_to_run_as(&target);
    let conninfo = format!(
        "host='127.0.0.1' port='{}' user='{}' dbname='postgres' connect_timeout='10'",
        upstream.port(),
        test_postgres::SUPERUSER
    );
    let started = Instant::now();
    let output = test_postgres::command(upstream.bindir(), "pg_basebackup", &target)
        .arg("-D")
        .arg(&target)
        .arg("-d")
        .arg(conninfo)
        .args(BASEBACKUP_FLAGS)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    assert!(
        output.status.success(),
        "pg_basebackup failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    elapsed.as_millis() as u64
}

/// Disk usage of a directory tree, in kB.
fn du_kb(path: &Path) -> u64 {
    let output = Command::new("du").arg("-sk").arg(path).output();
    output
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .and_then(|kb| kb.parse().ok())
        })
        .unwrap_or(0)
}
