//! `GET /metrics` of a live compute, checked by `promtool check metrics` and read back.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::compute::{embedded_spec, free_port, Compute, Launch};

/// What `promtool check metrics` says of Neon's two downtime names, which it lints as
/// abbreviated units (`ms`): kept as Neon spells them, so that Neon's dashboards work. Nothing
/// else may be said.
const NEON_NAMES_LINT: [&str; 2] = [
    "compute_pg_current_downtime_ms metric names should not contain abbreviated units",
    "compute_pg_downtime_ms_total metric names should not contain abbreviated units",
];

/// promtool's exit code for lint problems (a text it cannot parse exits 1).
const PROMTOOL_LINT_EXIT: i32 = 3;

/// Runs `promtool check metrics` on `text`: the exposition parses, and the only lint problems
/// are those of Neon's names.
pub fn check_with_promtool(text: &str) {
    let promtool = crate::support::tools::tool("promtool", "Debian's prometheus");
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines: Vec<&str> = said
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines.sort_unstable();
    assert!(
        output.status.code() == Some(PROMTOOL_LINT_EXIT) && lines == NEON_NAMES_LINT,
        "promtool ({}): {said}\n{text}",
        output.status
    );
}

/// The value of the sample `name{labels}` (exactly as written), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn live_metrics_pass_promtool_and_count_what_happened() {
    let port = free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(embedded_spec(port)),
        ..Launch::default()
    });
    compute.wait_running();
    // Some traffic of each kind: a read, a refusal, an unknown route, a reconfiguration.
    assert_eq!(compute.get("/state").unwrap().0, 200);
    assert_eq!(compute.get("/no-such-endpoint").unwrap().0, 404);
    let (status, _, _) = compute.post("/spec", Some(&serde_json::json!({"cluster": 1})), &[]);
    assert_eq!(status, 400);
    let mut spec = embedded_spec(port);
    spec["cluster"]["settings"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"name": "work_mem", "value": "8MB", "vartype": "string"}));
    assert_eq!(compute.post_spec(&spec).0, 202);
    compute.wait_state(Duration::from_secs(60), "generation 2 applied", |s| {
        s["applied_generation"] == 2 && s["phase"] == "running"
    });

    let (status, body) = compute.get("/metrics").unwrap();
    assert_eq!(status, 200);
    let text = body.as_str().unwrap().to_string();

    check_with_promtool(&text);

    let version = env!("CARGO_PKG_VERSION");
    // Neon's: up, with its status name; no downtime on a compute that has served throughout.
    assert_eq!(
        sample(
            &text,
            &format!("compute_ctl_up{{build_tag=\"{version}\",status=\"running\"}}")
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("compute_ctl_up{"))
            .count(),
        1
    );
    for series in [
        "compute_pg_current_downtime_ms",
        "compute_pg_downtime_ms_total",
        "compute_ctl_postgres_current_downtime_seconds",
        "compute_ctl_postgres_downtime_seconds_total",
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series}\n{text}");
    }
    assert_eq!(
        sample(
            &text,
            &format!("compute_ctl_build_info{{version=\"{version}\"}}")
        ),
        Some(1.0)
    );
    let transitions = |from: &str, to: &str| {
        sample(
            &text,
            &format!("compute_ctl_transitions_total{{from=\"{from}\",to=\"{to}\"}}"),
        )
        .unwrap_or(0.0)
    };
    assert_eq!(transitions("empty", "init"), 1.0);
    assert_eq!(transitions("configuring", "running"), 2.0, "{text}");
    assert_eq!(
        transitions("running", "configuration_pending"),
        1.0,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "compute_ctl_step_results_total{step=\"apply_spec\",result=\"ok\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            "compute_ctl_step_duration_seconds_count{step=\"fetch_basebackup\"}"
        ),
        Some(1.0)
    );
    let http = |method: &str, route: &str, code: u16| {
        sample(
            &text,
            &format!(
                "compute_ctl_http_requests_total{{method=\"{method}\",route=\"{route}\",code=\"{code}\"}}"
            ),
        )
        .unwrap_or(0.0)
    };
    assert!(http("GET", "/state", 200) >= 2.0, "{text}");
    assert_eq!(http("GET", "other", 404), 1.0, "{text}");
    assert_eq!(http("POST", "/spec", 400), 1.0, "{text}");
    assert_eq!(http("POST", "/spec", 202), 1.0, "{text}");
    assert!(
        sample(
            &text,
            "compute_ctl_http_request_duration_seconds_count{route=\"/spec\"}"
        ) == Some(2.0),
        "{text}"
    );
    // The journal: every append is one write and one fsync (plus one per new segment).
    let appends = sample(&text, "compute_ctl_journal_appends_total").unwrap();
    let fsyncs = sample(&text, "compute_ctl_journal_fsyncs_total").unwrap();
    assert!(appends >= 8.0, "{text}");
    assert!(fsyncs >= appends && fsyncs <= appends + 2.0, "{text}");
    assert_eq!(
        sample(&text, "compute_ctl_journal_append_duration_seconds_count"),
        Some(appends)
    );
    let seq = compute.state()["seq"].as_f64().unwrap();
    assert_eq!(sample(&text, "compute_ctl_journal_seq"), Some(seq));
    assert_eq!(
        sample(&text, "compute_ctl_journal_records_total"),
        Some(seq)
    );
    // process_*: this process's, from /proc.
    let rss = sample(&text, "process_resident_memory_bytes").unwrap();
    assert!(rss > 1e6 && rss < 64e6, "rss {rss}");
    assert!(sample(&text, "process_open_fds").unwrap() >= 3.0);
    assert!(sample(&text, "process_max_fds").unwrap() >= 64.0);
    assert!(sample(&text, "process_cpu_seconds_total").unwrap() > 0.0);
    let started = sample(&text, "process_start_time_seconds").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        started <= now + 1.0 && started > now - 600.0,
        "start {started}, now {now}"
    );

    // Serving /metrics never asks Postgres: with the postmaster stopped (SIGSTOP), it answers.
    let postmaster = compute.state()["postmaster_pid"].as_i64().unwrap() as i32;
    unsafe { libc::kill(postmaster, libc::SIGSTOP) };
    let answered = compute.get("/metrics");
    unsafe { libc::kill(postmaster, libc::SIGCONT) };
    assert_eq!(answered.unwrap().0, 200);
}

/// `/metrics` of `compute`.
fn metrics(compute: &Compute) -> String {
    let (status, body) = compute.get("/metrics").unwrap();
    assert_eq!(status, 200);
    body.as_str().unwrap().to_string()
}

#[test]
fn neons_downtime_counts_while_postgres_is_gone_and_stops_when_it_serves_again() {
    let mut compute = Compute::start(Launch {
        spec: Some(embedded_spec(free_port())),
        args: ["--failed-linger", "10m"].map(String::from).to_vec(),
        ..Launch::default()
    });
    compute.wait_running();
    let version = env!("CARGO_PKG_VERSION");
    let up = |text: &str, status: &str| {
        sample(
            text,
            &format!("compute_ctl_up{{build_tag=\"{version}\",status=\"{status}\"}}"),
        )
    };
    assert_eq!(up(&metrics(&compute), "running"), Some(1.0));

    // Postgres killed: `failed` without a postmaster, and the downtime grows.
    let postmaster = compute.state()["postmaster_pid"].as_i64().unwrap() as i32;
    unsafe { libc::kill(postmaster, libc::SIGKILL) };
    compute.wait_phase("failed", Duration::from_secs(60));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let down = loop {
        let text = metrics(&compute);
        let current = sample(&text, "compute_pg_current_downtime_ms").unwrap();
        if current > 0.0 {
            assert_eq!(up(&text, "failed"), Some(1.0), "{text}");
            assert_eq!(up(&text, "running"), None, "one status at a time: {text}");
            let total = sample(&text, "compute_pg_downtime_ms_total").unwrap();
            assert!(total >= current, "{text}");
            let seconds = sample(&text, "compute_ctl_postgres_current_downtime_seconds").unwrap();
            assert!((seconds * 1000.0 - current).abs() < 1.0, "{text}");
            break current;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no downtime counted:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    };

    // Recovered: the stretch ends, and what it lasted stays counted.
    let (status, body, _) = compute.post("/recover", None, &[]);
    assert!(matches!(status, 200 | 202), "{status} {body}");
    compute.wait_state(Duration::from_secs(60), "running again", |s| {
        s["phase"] == "running" && s["applied_generation"] == s["desired_generation"]
    });
    let text = metrics(&compute);
    check_with_promtool(&text);
    assert_eq!(up(&text, "running"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "compute_pg_current_downtime_ms"), Some(0.0));
    let total = sample(&text, "compute_pg_downtime_ms_total").unwrap();
    assert!(total >= down, "total {total} < {down} seen while down");
    eprintln!("downtime: {total} ms in all, {down} ms seen while Postgres was gone");
    // It no longer grows while Postgres serves.
    let again = sample(&metrics(&compute), "compute_pg_downtime_ms_total").unwrap();
    assert_eq!(again, total);
}
