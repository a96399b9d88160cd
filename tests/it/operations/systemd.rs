//! systemd's side, against the real binary: a datagram socket of the test's own is
//! `NOTIFY_SOCKET`; the README's unit is checked by `systemd-analyze verify`.

use std::time::{Duration, Instant};

use crate::support::compute::{embedded_spec, free_port, standin_bindir, Compute, Launch};
use crate::support::notify::NotifySocket;

const MINUTE: Duration = Duration::from_secs(60);

fn start(notify: &NotifySocket, args: Vec<String>, dir: Option<std::path::PathBuf>) -> Compute {
    Compute::start(Launch {
        spec: Some(embedded_spec(free_port())),
        args,
        env: vec![
            ("NOTIFY_SOCKET".into(), notify.address.clone()),
            ("WATCHDOG_USEC".into(), "1000000".into()),
        ],
        dir,
        ..Launch::default()
    })
}

/// `CLOCK_MONOTONIC` in microseconds, as systemd reads it.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) },
        0
    );
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

#[test]
fn ready_status_watchdog_at_half_watchdog_usec_reload_and_stopping() {
    let notify = NotifySocket::bind();
    let mut compute = start(&notify, Vec::new(), None);
    compute.wait_running();
    let ready = notify.wait_for("READY=1", MINUTE);
    assert_eq!(
        ready.value("STATUS").as_deref(),
        Some("phase running, generation 1 desired, 1 applied"),
        "{ready:?}"
    );
    // STATUS= follows the phases of the start-up, in order.
    let statuses: Vec<String> = notify
        .messages()
        .iter()
        .filter_map(|m| m.value("STATUS"))
        .collect();
    let phases: Vec<&str> = statuses
        .iter()
        .filter_map(|s| s.strip_prefix("phase ")?.split(',').next())
        .collect();
    assert_eq!(
        phases,
        [
            "init",
            "sync_safekeepers",
            "basebackup",
            "starting",
            "configuring",
            "running"
        ],
        "{statuses:?}"
    );

    // Postgres is not told where systemd listens, nor of our watchdog.
    let postmaster = compute.state()["postmaster_pid"].as_u64().unwrap();
    let environ = std::fs::read(format!("/proc/{postmaster}/environ")).unwrap();
    for name in ["NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID="] {
        assert!(
            !environ
                .split(|b| *b == 0)
                .any(|v| v.starts_with(name.as_bytes())),
            "postgres has {name}"
        );
    }

    // The watchdog: every 500 ms (half of WATCHDOG_USEC=1000000), from the driver loop.
    let from = Instant::now();
    std::thread::sleep(Duration::from_millis(3200));
    let pings = notify.watchdogs(from, Instant::now());
    assert!(
        (5..=8).contains(&pings.len()),
        "{} pings in 3.2 s: {pings:?}",
        pings.len()
    );
    for pair in pings.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(400) && gap <= Duration::from_millis(750),
            "watchdog gap {gap:?}"
        );
    }

    // SIGHUP: RELOADING=1 with MONOTONIC_USEC= (systemd compares it with its own clock), then
    // READY=1 once the re-read file is taken (here: identical, a no-op).
    let before_usec = monotonic_usec();
    let sent = Instant::now();
    compute.signal(libc::SIGHUP);
    let reloading = notify.wait_for("RELOADING=1", Duration::from_secs(10));
    let usec: u64 = reloading.value("MONOTONIC_USEC").unwrap().parse().unwrap();
    assert!(
        usec >= before_usec && usec <= monotonic_usec(),
        "MONOTONIC_USEC={usec} not between {before_usec} and now"
    );
    let after: Vec<_> = notify
        .messages()
        .into_iter()
        .filter(|m| m.at >= sent)
        .collect();
    let reloading_at = after.iter().position(|m| m.has("RELOADING=1")).unwrap();
    let ready_again = (Instant::now() + Duration::from_secs(10), ());
    let mut ready_index = None;
    while Instant::now() < ready_again.0 && ready_index.is_none() {
        let after: Vec<_> = notify
            .messages()
            .into_iter()
            .filter(|m| m.at >= sent)
            .collect();
        ready_index = after.iter().position(|m| m.has("READY=1"));
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        ready_index.is_some_and(|i| i > reloading_at),
        "no READY=1 after RELOADING=1: {:#?}",
        notify.messages()
    );

    // A refused re-read also ends the reload with READY=1: the spec file is now invalid.
    std::fs::write(compute.root.join("spec.json"), b"{ not json").unwrap();
    let sent = Instant::now();
    compute.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let after: Vec<_> = notify
            .messages()
            .into_iter()
            .filter(|m| m.at >= sent)
            .collect();
        let reloading = after.iter().position(|m| m.has("RELOADING=1"));
        let ready = after.iter().rposition(|m| m.has("READY=1"));
        if let (Some(r), Some(k)) = (reloading, ready) {
            assert!(k > r);
            break;
        }
        assert!(Instant::now() < deadline, "{:#?}", notify.messages());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(compute.state()["phase"], "running");

    // SIGTERM: STOPPING=1, then the process exits 0.
    compute.signal(libc::SIGTERM);
    let stopping = notify.wait_for("STOPPING=1", Duration::from_secs(30));
    assert!(stopping
        .value("STATUS")
        .unwrap()
        .starts_with("phase terminating"));
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
}

/// Stops one thread of `pid` (ptrace's group-stop of a single tracee): the rest of the
/// process runs on.
struct ThreadStop(i32);

impl ThreadStop {
    fn stop(tid: i32) -> ThreadStop {
        unsafe {
            let seized = libc::ptrace(libc::PTRACE_SEIZE, tid, 0, 0);
            assert_eq!(
                seized,
                0,
                "PTRACE_SEIZE: {}",
                std::io::Error::last_os_error()
            );
            assert_eq!(libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0), 0);
            let mut status = 0;
            let waited = libc::waitpid(tid, &mut status, libc::__WALL);
            assert_eq!(waited, tid, "{}", std::io::Error::last_os_error());
            assert!(libc::WIFSTOPPED(status), "status {status:#x}");
        }
        ThreadStop(tid)
    }
}

impl Drop for ThreadStop {
    fn drop(&mut self) {
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.0, 0, 0) };
    }
}

/// The driver loop runs on compute_ctl's main thread (tid = pid): stopping that thread alone
/// (ptrace) blocks the loop while the HTTP threads and the step worker keep running. The
/// pings stop, so systemd would restart the compute; `/healthz` says 503 (the loop is old);
/// and once the thread runs again, so does the watchdog.
#[test]
fn a_blocked_driver_loop_stops_the_watchdog_and_it_resumes_after() {
    let notify = NotifySocket::bind();
    let mut compute = start(&notify, Vec::new(), None);
    compute.wait_running();
    notify.wait_for("READY=1", MINUTE);
    let pid = compute.pid().unwrap() as i32;
    let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/comm")).unwrap();
    assert_eq!(
        comm.trim(),
        "compute_ctl",
        "the main thread runs the driver"
    );

    let stopped = ThreadStop::stop(pid);
    let from = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    let during = notify.watchdogs(from + Duration::from_millis(100), Instant::now());
    // The HTTP threads still answer, from the published view: the process is not stopped.
    let (status, body) = compute.get("/healthz").unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(compute.get("/state").unwrap().0, 200);
    drop(stopped);
    assert!(
        during.is_empty(),
        "pings while the loop was blocked: {during:?}"
    );

    let resumed = Instant::now();
    std::thread::sleep(Duration::from_millis(1600));
    let after = notify.watchdogs(resumed, Instant::now());
    assert!(
        after.len() >= 2,
        "pings after the loop ran again: {after:?}"
    );
    assert_eq!(compute.get("/healthz").unwrap().0, 200);
    compute.signal(libc::SIGTERM);
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
}

/// WATCHDOG_PID names another process: the watchdog is not ours, no WATCHDOG=1 is sent.
#[test]
fn no_watchdog_when_watchdog_pid_names_another_process() {
    let notify = NotifySocket::bind();
    let mut compute = Compute::start(Launch {
        spec: Some(embedded_spec(free_port())),
        env: vec![
            ("NOTIFY_SOCKET".into(), notify.address.clone()),
            ("WATCHDOG_USEC".into(), "200000".into()),
            ("WATCHDOG_PID".into(), "1".into()),
        ],
        ..Launch::default()
    });
    compute.wait_running();
    notify.wait_for("READY=1", MINUTE);
    let from = Instant::now();
    std::thread::sleep(Duration::from_millis(600));
    assert!(notify.watchdogs(from, Instant::now()).is_empty());
    assert!(notify.messages().iter().all(|m| !m.has("WATCHDOG=1")));
}

/// A slow base backup (a stand-in `initdb` that sleeps, then runs the real one): systemd is
/// asked for more start-up time (`EXTEND_TIMEOUT_USEC=`) while it runs, before `READY=1`.
#[test]
fn a_slow_startup_step_extends_the_start_timeout() {
    let dir = crate::support::compute::traversable_tempdir();
    let postgres = standin_bindir(
        dir.path(),
        &[(
            "initdb",
            "sleep 1.5\nexec /usr/lib/postgresql/15/bin/initdb \"$@\"",
        )],
    );
    let notify = NotifySocket::bind();
    let mut compute = start(
        &notify,
        vec!["-b".into(), postgres.display().to_string()],
        Some(dir.path().to_path_buf()),
    );
    compute.wait_running();
    let ready = notify.wait_for("READY=1", MINUTE);
    let messages = notify.messages();
    let extend = messages
        .iter()
        .find(|m| m.value("EXTEND_TIMEOUT_USEC").is_some())
        .unwrap_or_else(|| panic!("no EXTEND_TIMEOUT_USEC: {messages:#?}"));
    assert_eq!(
        extend.value("EXTEND_TIMEOUT_USEC").as_deref(),
        Some("60000000")
    );
    assert!(extend.at < ready.at);
    // Sent as the long step began: with the status of its phase; the step then ran ≥ 1.5 s.
    let phase = extend.value("STATUS").unwrap_or_default();
    assert!(
        phase.starts_with("phase sync_safekeepers") || phase.starts_with("phase basebackup"),
        "{phase}"
    );
    let entered_basebackup = messages
        .iter()
        .find(|m| {
            m.value("STATUS")
                .is_some_and(|s| s.starts_with("phase basebackup"))
        })
        .unwrap();
    assert!(entered_basebackup.value("EXTEND_TIMEOUT_USEC").is_some());
    assert!(ready.at - entered_basebackup.at >= Duration::from_millis(1500));
    drop(dir);
}

/// The README's systemd unit, verified by systemd's own checker.
#[test]
fn the_readme_unit_passes_systemd_analyze_verify() {
    let unit = crate::operations::readme_block("ini", "[Unit]");
    for line in [
        "Type=notify",
        "NotifyAccess=main",
        "Restart=on-failure",
        "RestartPreventExitStatus=2 3 5 6",
        "KillMode=process",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l == line), "the unit lacks {line}");
    }
    for key in ["WatchdogSec=", "TimeoutStartSec=", "TimeoutStopSec="] {
        assert!(
            unit.lines().any(|l| l.starts_with(key)),
            "the unit lacks {key}"
        );
    }
    // The unit names the installed binary; here it is the one under test.
    let installed = "/usr/local/bin/compute_ctl";
    assert!(unit.contains(installed));
    let unit = unit.replace(installed, crate::support::compute::binary());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("compute_ctl.service");
    std::fs::write(&path, &unit).unwrap();
    let analyze = crate::support::tools::tool("systemd-analyze", "Debian's systemd");
    let output = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    // verify reports some problems as warnings only: none about this unit.
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("compute_ctl.service"))
        .collect();
    assert!(ours.is_empty(), "{stderr}");
}

/// A start-up that fails: `STATUS=` says `failed` with the error's first line (Postgres's own
/// words), and no `READY=1` is ever sent.
#[test]
fn a_failed_start_says_why_in_status_and_never_ready() {
    let notify = NotifySocket::bind();
    let mut spec = embedded_spec(free_port());
    spec["cluster"]["settings"]
        .as_array_mut()
        .unwrap()
        // A time zone Postgres lacks: refused by Postgres at start, not at admission.
        .push(serde_json::json!({"name": "timezone", "value": "Mars/Olympus_Mons", "vartype": "string"}));
    let mut compute = Compute::start(Launch {
        spec: Some(spec),
        env: vec![("NOTIFY_SOCKET".into(), notify.address.clone())],
        ..Launch::default()
    });
    compute.wait_phase("failed", MINUTE);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let failed = notify
            .messages()
            .into_iter()
            .filter_map(|m| m.value("STATUS"))
            .find(|s| s.starts_with("phase failed"));
        if let Some(status) = failed {
            break status;
        }
        assert!(Instant::now() < deadline, "{:#?}", notify.messages());
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.contains("failed in starting"), "{status}");
    assert!(status.contains("TimeZone"), "{status}");
    assert!(status.len() <= 400 && !status.contains('\n'), "{status}");
    assert!(notify.messages().iter().all(|m| !m.has("READY=1")));
}
