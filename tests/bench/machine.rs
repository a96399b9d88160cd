//! What every benchmark needs: knobs from the environment, the machine's facts (the disk under
//! a path, a process's memory), free ports, and the few statistics they print. Included by each
//! bench with `#[path = "machine.rs"] mod machine;`.

use std::fs;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

/// `name` from the environment, else `default`.
pub fn env_count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The nearest-rank percentile `p` (0..=1) of sorted samples; zero when there are none.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// The `port` setting of a spec.
pub fn spec_port(spec: &serde_json::Value) -> u16 {
    spec["cluster"]["settings"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == "port")
        .and_then(|s| s["value"].as_str())
        .and_then(|v| v.parse().ok())
        .expect("the spec sets port")
}

/// A number field of `/proc/<pid>/status` (`VmRSS:`, `VmHWM:` in kB; `Threads:`).
pub fn status_field(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The file system and device holding `path`, from /proc/self/mountinfo.
pub fn describe_disk(path: &Path) -> String {
    let Ok(path) = path.canonicalize() else {
        return "unknown".to_owned();
    };
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return "unknown".to_owned();
    };
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mount_point), Some(fs_type), Some(source)) =
            (fields.get(4), fields.get(dash + 1), fields.get(dash + 2))
        else {
            continue;
        };
        if path.starts_with(mount_point)
            && best
                .as_ref()
                .is_none_or(|(len, _)| mount_point.len() >= *len)
        {
            best = Some((
                mount_point.len(),
                format!("{fs_type} on {source}, mounted at {mount_point}"),
            ));
        }
    }
    best.map_or_else(|| "unknown".to_owned(), |(_, d)| d)
}

/// What `wrk --latency` printed.
#[derive(Debug, Default)]
pub struct WrkReport {
    pub requests_per_sec: f64,
    pub requests: u64,
    pub p50_ms: f64,
    pub p75_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub socket_errors: u64,
    pub non_2xx: u64,
}

impl WrkReport {
    pub fn parse(text: &str) -> WrkReport {
        let mut report = WrkReport::default();
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["Requests/sec:", value] => report.requests_per_sec = value.parse().unwrap_or(0.0),
                [n, "requests", "in", ..] => report.requests = n.parse().unwrap_or(0),
                ["50%", v] => report.p50_ms = duration_ms(v),
                ["75%", v] => report.p75_ms = duration_ms(v),
                ["90%", v] => report.p90_ms = duration_ms(v),
                ["99%", v] => report.p99_ms = duration_ms(v),
                ["Latency", _avg, _stdev, max, ..] => report.max_ms = duration_ms(max),
                ["Socket", "errors:", rest @ ..] => {
                    report.socket_errors = rest
                        .iter()
                        .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                        .sum();
                }
                ["Non-2xx", "or", "3xx", "responses:", n] => {
                    report.non_2xx = n.parse().unwrap_or(0)
                }
                _ => {}
            }
        }
        report
    }
}

/// `192.00us`, `4.89ms`, `1.02s`, `2.00m` as milliseconds.
pub fn duration_ms(text: &str) -> f64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => number / 1e3,
        "ms" => number,
        "s" => number * 1e3,
        "m" => number * 60e3,
        _ => f64::NAN,
    }
}
