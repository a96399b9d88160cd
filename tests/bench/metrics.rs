//! `cargo build --release && cargo bench --bench metrics`: `GET /metrics` beside `GET /state`
//! under `wrk --latency` on a running compute (alternated, several rounds), and compute_ctl's
//! memory after the load, printed as a table.
//!
//! Not a timed test: it asserts nothing about speed; it prints the targets (`/metrics` is not
//! the slow one; RSS with metrics ≤ 10 MB) and whether they were met.
//!
//! Environment: `METRICS_BENCH_ROUNDS` (3 per endpoint), `METRICS_BENCH_SECS` (5 per wrk run),
//! `METRICS_BENCH_CONNECTIONS` (8), `COMPUTE_BENCH_BIN` (default `target/release/compute_ctl`),
//! `COMPUTE_BENCH_PG_BINDIR` (default `/usr/lib/postgresql/15/bin`).

#[allow(dead_code)]
#[path = "machine.rs"]
mod machine;

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use machine::{env_count, free_port, status_field, WrkReport};
use serde_json::json;

/// Kills compute_ctl (and the Postgres it runs) when the bench ends, also after a panic.
struct Running {
    child: Child,
    http_port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let url = format!("http://127.0.0.1:{}/terminate", self.http_port);
        let _ = ureq::post(&url).timeout(Duration::from_secs(60)).call();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let rounds = env_count("METRICS_BENCH_ROUNDS", 3).max(1);
    let secs = env_count("METRICS_BENCH_SECS", 5).max(1);
    let connections = env_count("METRICS_BENCH_CONNECTIONS", 8).max(1);
    let Some(wrk) = which("wrk") else {
        println!("skipped: `wrk` is not installed (apt-get install -y wrk)");
        return;
    };
    let binary = std::env::var_os("COMPUTE_BENCH_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/compute_ctl"),
        PathBuf::from,
    );
    assert!(
        binary.is_file(),
        "{} is missing: cargo build --release first",
        binary.display()
    );
    let bindir = std::env::var_os("COMPUTE_BENCH_PG_BINDIR").map_or_else(
        || PathBuf::from("/usr/lib/postgresql/15/bin"),
        PathBuf::from,
    );

    let dir = tempfile::Builder::new()
        .prefix("compute_ctl-bench-metrics-")
        .permissions(std::fs::Permissions::from_mode(0o755))
        .tempdir()
        .expect("cannot create a temporary directory");
    let pg_port = free_port();
    let spec = json!({
        "format_version": 1.0,
        "cluster": {"roles": [], "databases": [], "settings": [
            {"name": "port", "value": pg_port.to_string(), "vartype": "integer"},
            {"name": "listen_addresses", "value": "127.0.0.1", "vartype": "string"},
            {"name": "fsync", "value": "off", "vartype": "bool"}
        ]},
        "delta_operations": []
    });
    let spec_path = dir.path().join("spec.json");
    std::fs::write(&spec_path, spec.to_string()).expect("cannot write the spec");
    let http_port = free_port();
    let log = std::fs::File::create(dir.path().join("compute_ctl.log")).expect("log");
    let child = Command::new(&binary)
        .arg("-D")
        .arg(dir.path().join("pgdata"))
        .arg("-S")
        .arg(&spec_path)
        .arg("-b")
        .arg(bindir.join("postgres"))
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{http_port}"))
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("cannot start compute_ctl");
    let pid = child.id();
    let compute = Running {
        child,
        http_port,
        _dir: dir,
    };
    let base = format!("http://127.0.0.1:{http_port}");
    let deadline = Instant::now() + Duration::from_secs(120);
    while ureq::get(&format!("{base}/readyz")).call().is_err() {
        assert!(
            Instant::now() < deadline,
            "the compute was not ready in 120 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let metrics_bytes = ureq::get(&format!("{base}/metrics"))
        .call()
        .ok()
        .and_then(|r| r.into_string().ok())
        .map_or(0, |t| t.len());
    let state_bytes = ureq::get(&format!("{base}/state"))
        .call()
        .ok()
        .and_then(|r| r.into_string().ok())
        .map_or(0, |t| t.len());
    let rss_before = status_field(pid, "VmRSS:").unwrap_or(0);

    println!("## GET /metrics beside GET /state (loopback, wrk)");
    println!(
        "{rounds} rounds, alternated: `wrk -t2 -c{connections} -d{secs}s --latency` on /state, \
         then on /metrics; the compute is running (embedded default); {} cores shared by wrk \
         and compute_ctl; METRICS_BENCH_ROUNDS, METRICS_BENCH_SECS, METRICS_BENCH_CONNECTIONS",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut reports: [Vec<WrkReport>; 2] = [Vec::new(), Vec::new()];
    let paths = ["/state", "/metrics"];
    for _ in 0..rounds {
        for (i, path) in paths.iter().enumerate() {
            let output = Command::new(&wrk)
                .args([
                    "-t2",
                    &format!("-c{connections}"),
                    &format!("-d{secs}s"),
                    "--latency",
                    &format!("{base}{path}"),
                ])
                .stdin(Stdio::null())
                .output()
                .expect("cannot run wrk");
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            assert!(output.status.success(), "wrk failed: {text}");
            reports[i].push(WrkReport::parse(&text));
        }
    }
    let rss_after = status_field(pid, "VmRSS:").unwrap_or(0);
    let hwm = status_field(pid, "VmHWM:").unwrap_or(0);
    let threads = status_field(pid, "Threads:").unwrap_or(0);
    drop(compute);

    println!();
    println!("| measure | GET /state | GET /metrics |");
    println!("|---|---|---|");
    println!("| answer size | {state_bytes} B | {metrics_bytes} B |");
    let row = |name: &str, f: &dyn Fn(&WrkReport) -> f64, unit: &str, digits: usize| {
        let cell = |rs: &[WrkReport]| {
            let mut values: Vec<f64> = rs.iter().map(f).collect();
            values.sort_by(f64::total_cmp);
            let median = values[values.len() / 2];
            let all: Vec<String> = rs.iter().map(|r| format!("{:.*}", digits, f(r))).collect();
            format!("{median:.digits$} {unit} ({})", all.join(", "))
        };
        println!(
            "| {name}: median (each round) | {} | {} |",
            cell(&reports[0]),
            cell(&reports[1])
        );
    };
    row("requests/s", &|r| r.requests_per_sec, "", 0);
    row("latency p50", &|r| r.p50_ms, "ms", 3);
    row("latency p99", &|r| r.p99_ms, "ms", 3);
    row("latency max", &|r| r.max_ms, "ms", 2);
    let errors = |rs: &[WrkReport]| -> u64 { rs.iter().map(|r| r.socket_errors + r.non_2xx).sum() };
    println!(
        "| errors (socket + non-2xx), all rounds | {} | {} |",
        errors(&reports[0]),
        errors(&reports[1])
    );
    println!(
        "| compute_ctl VmRSS before / after the load, VmHWM, threads | {:.1} / {:.1} MiB, {:.1} MiB, {threads} | |",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        hwm as f64 / 1024.0
    );
    let median = |rs: &[WrkReport], f: &dyn Fn(&WrkReport) -> f64| {
        let mut v: Vec<f64> = rs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let state_p99 = median(&reports[0], &|r| r.p99_ms);
    let metrics_p99 = median(&reports[1], &|r| r.p99_ms);
    let state_rps = median(&reports[0], &|r| r.requests_per_sec);
    let metrics_rps = median(&reports[1], &|r| r.requests_per_sec);
    println!();
    println!(
        "/metrics against /state: {:.2}× the requests/s, {:.2}× the p99 (its answer is {:.1}× larger)",
        metrics_rps / state_rps,
        metrics_p99 / state_p99,
        metrics_bytes as f64 / state_bytes.max(1) as f64
    );
    println!(
        "target: RSS with metrics ≤ 10 MB: VmHWM {:.1} MB, {}",
        hwm as f64 * 1024.0 / 1e6,
        if hwm as f64 * 1024.0 <= 10e6 {
            "met"
        } else {
            "MISSED"
        }
    );
    println!(
        "target: /metrics not the slow one (p99 ≤ 5 ms, ≥ 10,000 requests/s): p99 {metrics_p99:.3} ms, {metrics_rps:.0}/s, {}",
        if metrics_p99 <= 5.0 && metrics_rps >= 10_000.0 {
            "met"
        } else {
            "MISSED"
        }
    );
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
