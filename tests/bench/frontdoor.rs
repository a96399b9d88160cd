//! `cargo build --release && cargo bench --bench frontdoor`: the front door under load.
//!
//! - `GET /healthz` latency (a new connection per probe, as a kubelet does): p50 / p99 / max
//!   while N long-polls (`GET /journal?wait=60` that nothing answers) and M slow clients (a
//!   byte of a request head a second) are open, for N, M in 0, 16, 64;
//! - `GET /state` throughput with `wrk` at 4 and 64 connections (skipped without `wrk`),
//!   alternated with a same-run baseline: `tiny_http` answering the same body.
//!
//! Knobs: `FRONTDOOR_BENCH_PROBES` (probes per row, 2000), `FRONTDOOR_BENCH_WRK_SECS` (10),
//! `FRONTDOOR_BENCH_WRK_ROUNDS` (2).
//! Prints tables; asserts nothing about time.

#[path = "machine.rs"]
#[allow(dead_code)]
mod machine;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use machine::{env_count, free_port, ms, percentile};

fn binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/compute_ctl")
}

struct Running {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Running {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let port = free_port();
    let child = Command::new(binary())
        .arg("-D")
        .arg(dir.path().join("pgdata"))
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start target/release/compute_ctl (cargo build --release first)");
    // Dropped (killed) if it never answers.
    let running = Running {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if get(port, "/healthz").is_some() {
            return running;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("compute_ctl did not answer within 30 s");
}

/// One request on a new connection: its status and body.
fn get(port: u16, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_nodelay(true).ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .ok()?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).ok()?;
    let status = String::from_utf8_lossy(out.get(..16)?)
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())?;
    let at = out.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((status, out.split_off(at + 4)))
}

/// M slow clients, each re-opened when the server cuts it off, fed a byte a second.
fn slow_clients(port: u16, m: usize, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let open = || {
            let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
            let _ = s.write_all(b"G");
            s
        };
        let mut clients: Vec<TcpStream> = (0..m).map(|_| open()).collect();
        while !stop.load(Ordering::SeqCst) {
            for client in &mut clients {
                if client.write_all(b"E").is_err() {
                    *client = open();
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    })
}

fn healthz_rows(probes: usize) {
    println!("## GET /healthz while requests wait");
    println!(
        "{probes} probes per row, each on a new connection; long-polls: `GET /journal?since=<far>&wait=60`; \
         slow clients: a byte of a request head a second (re-opened when cut off at 10 s)"
    );
    println!();
    println!("| long-polls N | slow clients M | p50 | p99 | max | threads |");
    println!("|---|---|---|---|---|---|");
    for (n, m) in [
        (0, 0),
        (16, 0),
        (0, 16),
        (16, 16),
        (64, 0),
        (0, 64),
        (64, 64),
    ] {
        let running = start();
        let port = running.port;
        let polls: Vec<TcpStream> = (0..n)
            .map(|_| {
                let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                s.write_all(b"GET /journal?since=999999999&wait=60 HTTP/1.1\r\nHost: b\r\n\r\n")
                    .expect("send");
                s
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let slow = slow_clients(port, m, stop.clone());
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..100 {
            get(port, "/healthz");
        }
        let mut samples = Vec::with_capacity(probes);
        let mut failed = 0;
        for _ in 0..probes {
            let started = Instant::now();
            if get(port, "/healthz").map(|(status, _)| status) != Some(200) {
                failed += 1;
            }
            samples.push(started.elapsed());
        }
        samples.sort();
        let threads = machine::status_field(running.child.id(), "Threads:").unwrap_or(0);
        println!(
            "| {n} | {m} | {:.3} ms | {:.3} ms | {:.3} ms | {threads} |{}",
            ms(percentile(&samples, 0.5)),
            ms(percentile(&samples, 0.99)),
            ms(samples.last().copied().unwrap_or_default()),
            if failed > 0 {
                format!(" {failed} not 200")
            } else {
                String::new()
            }
        );
        stop.store(true, Ordering::SeqCst);
        let _ = slow.join();
        drop(polls);
    }
    println!();
}

/// The baseline: `tiny_http` 0.12 with four request threads (the API's server before the
/// front-door issue, whose 57k req/s at 4 connections is the goal) answering the same `/state`
/// body from memory. Its threads live until the benchmark ends.
fn tiny_http_baseline(body: Vec<u8>) -> u16 {
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("a tiny_http server"));
    let port = server
        .server_addr()
        .to_ip()
        .map(|a| a.port())
        .expect("a TCP address");
    let body = Arc::new(body);
    for _ in 0..4 {
        let server = server.clone();
        let body = body.clone();
        std::thread::spawn(move || {
            let header = tiny_http::Header::from_bytes("Content-Type", "application/json")
                .expect("a valid header");
            for request in server.incoming_requests() {
                let response =
                    tiny_http::Response::from_data(body.as_slice()).with_header(header.clone());
                let _ = request.respond(response);
            }
        });
    }
    port
}

/// One `wrk` run against `port`: a table row's cells after the first two.
fn wrk_row(wrk: &Path, port: u16, connections: usize, secs: u64) -> String {
    let output = Command::new(wrk)
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--latency",
            &format!("http://127.0.0.1:{port}/state"),
        ])
        .output()
        .expect("cannot run wrk");
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |key: &str| {
        text.lines()
            .map(str::split_whitespace)
            .filter_map(|mut words| {
                (words.next() == Some(key)).then(|| words.next().unwrap_or("?").to_string())
            })
            .next()
            .unwrap_or_else(|| "?".into())
    };
    let max = text
        .lines()
        .find(|l| l.trim_start().starts_with("Latency"))
        .and_then(|l| l.split_whitespace().nth(3))
        .unwrap_or("?")
        .to_string();
    let errors = text
        .lines()
        .find(|l| l.contains("Socket errors") || l.contains("Non-2xx"))
        .map_or_else(|| "0".to_string(), |l| l.trim().to_string());
    format!(
        "{} | {} | {} | {max} | {errors}",
        field("Requests/sec:"),
        field("50%"),
        field("99%"),
    )
}

fn wrk_rows(secs: u64, rounds: usize) {
    println!("## GET /state throughput (wrk -t2, loopback, {secs} s per row)");
    let Some(wrk) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("wrk"))
            .find(|p| p.is_file())
    }) else {
        println!("skipped: `wrk` is not installed (apt-get install -y wrk)");
        return;
    };
    let running = start();
    let (_, body) = get(running.port, "/state").expect("compute_ctl answers GET /state");
    let baseline = tiny_http_baseline(body);
    println!();
    println!("Alternated, {rounds} rounds; the baseline serves the same body.");
    println!();
    println!("| server | connections | requests/s | p50 | p99 | max | errors |");
    println!("|---|---|---|---|---|---|---|");
    for _ in 0..rounds {
        for connections in [4, 64] {
            let ours = wrk_row(&wrk, running.port, connections, secs);
            println!("| compute_ctl | {connections} | {ours} |");
            let theirs = wrk_row(&wrk, baseline, connections, secs);
            println!("| tiny_http, 4 threads | {connections} | {theirs} |");
        }
    }
    println!();
}

fn main() {
    // `cargo bench` passes `--bench`; a section name may follow.
    let named: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let wants = |name: &str| named.is_empty() || named.iter().any(|n| n == name);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("# front door benchmark");
    println!(
        "machine: {cores} cores; load average {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!();
    if wants("healthz") {
        healthz_rows(env_count("FRONTDOOR_BENCH_PROBES", 2000) as usize);
    }
    if wants("state") {
        wrk_rows(
            env_count("FRONTDOOR_BENCH_WRK_SECS", 10),
            env_count("FRONTDOOR_BENCH_WRK_ROUNDS", 2) as usize,
        );
    }
}
