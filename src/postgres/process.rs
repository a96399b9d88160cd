//! The postmaster: spawned as a direct child (so its exit is a `waitpid`, not a guess), waited
//! for until it accepts connections, watched, and stopped. Also finds and stops a postmaster
//! an earlier, killed compute_ctl left running on PGDATA.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use states::{ErrorKind, ExitStatus, Lsn, PhaseName, ShutdownMode, StepError, StepName};

use super::error;
use crate::pg_user::{run_as, PgUser};
use crate::postgres::connect::describe;
use crate::subprocess::ChildHandle;
use crate::sync::{lock, CancelToken};

/// Environment variables that are ours, not Postgres's: `NOTIFY_SOCKET` would let Postgres
/// talk to systemd in our name (and the watchdog's are systemd's word to us alone); the tokens
/// are secrets Postgres has no use for.
const ENV_NOT_FOR_POSTGRES: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "NEON_CONTROL_PLANE_TOKEN",
    "NEON_AUTH_TOKEN",
    "COMPUTE_CTL_LOG",
];

/// How many of Postgres's last stderr lines are kept for error messages.
const STDERR_TAIL_LINES: usize = 200;

/// The Postgres binaries: `postgres` and the tools beside it.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub postgres: PathBuf,
    pub bindir: PathBuf,
}

impl Binaries {
    /// `-b/--pgbin` (the binary, or the directory that holds it), else `postgres` on PATH,
    /// else `pg_config --bindir`.
    pub fn locate(pgbin: Option<&Path>) -> anyhow::Result<Binaries> {
        let postgres = match pgbin {
            Some(path) => path.to_path_buf(),
            None => match find_on_path("postgres") {
                Some(path) => path,
                None => {
                    let output = Command::new("pg_config").arg("--bindir").output().context(
                        "no postgres on PATH and pg_config cannot be run; pass -b/--pgbin",
                    )?;
                    let bindir = String::from_utf8_lossy(&output.stdout).trim().to_string();
                    if !output.status.success() || bindir.is_empty() {
                        bail!("no postgres on PATH and pg_config --bindir failed; pass -b/--pgbin");
                    }
                    Path::new(&bindir).join("postgres")
                }
            },
        };
        // A directory names where `postgres` is (`-b /usr/lib/postgresql/15/bin`).
        let postgres = if postgres.is_dir() {
            let inside = postgres.join("postgres");
            if !inside.is_file() {
                bail!(
                    "-b/--pgbin {}: a directory without a postgres binary in it; name the postgres binary (e.g. /usr/lib/postgresql/15/bin/postgres)",
                    postgres.display()
                );
            }
            inside
        } else {
            postgres
        };
        if !postgres.is_file() {
            bail!(
                "-b/--pgbin {}: no such file; name the postgres binary (e.g. /usr/lib/postgresql/15/bin/postgres) or the directory that holds it",
                postgres.display()
            );
        }
        // A link on PATH (/usr/local/bin/postgres): the tools and libraries are beside the
        // file it points to.
        let postgres = std::fs::canonicalize(&postgres)
            .with_context(|| format!("-b/--pgbin {}: cannot resolve it", postgres.display()))?;
        let bindir = postgres
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(Binaries { postgres, bindir })
    }

    /// A tool that lives beside `postgres` (`initdb`, `pg_basebackup`, `pg_controldata`).
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Strips our own variables from a command's environment (CONTRACT: `NOTIFY_SOCKET`).
pub fn clean_env(command: &mut Command) {
    for name in ENV_NOT_FOR_POSTGRES {
        command.env_remove(name);
    }
}

/// Deadlines of a start: "postmaster up" (postmaster.pid written) and "accepting
/// connections" (status ready and a connection succeeds) are separate, because the second
/// includes crash recovery, which may take long.
/// `--pg-init-timeout` (Neon's) replaces both with one bound on the whole start, named in
/// the error when it is exceeded.
#[derive(Clone, Copy, Debug)]
pub struct StartDeadlines {
    pub up: Duration,
    pub accepting: Duration,
    /// `--pg-init-timeout`: spawn to accepting connections, all of it.
    pub init_timeout: Option<Duration>,
}

impl Default for StartDeadlines {
    fn default() -> StartDeadlines {
        StartDeadlines {
            up: Duration::from_secs(30),
            accepting: Duration::from_secs(300),
            init_timeout: None,
        }
    }
}

impl StartDeadlines {
    /// One bound on the whole start: `--pg-init-timeout`.
    pub fn init_timeout(total: Duration) -> StartDeadlines {
        StartDeadlines {
            up: total,
            accepting: total,
            init_timeout: Some(total),
        }
    }
}

/// A running postmaster, shared by the step that stops it and the monitor.
#[derive(Clone, Debug)]
pub struct Postmaster {
    handle: Arc<ChildHandle>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
}

impl Postmaster {
    pub fn pid(&self) -> u32 {
        self.handle.pid()
    }

    /// `Some` once it has exited.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.handle.status()
    }

    /// The last lines Postgres wrote to stderr.
    pub fn stderr_tail(&self, lines: usize) -> Vec<String> {
        let tail = lock(&self.stderr_tail);
        tail.iter()
            .skip(tail.len().saturating_sub(lines))
            .cloned()
            .collect()
    }

    /// Stops it: `fast` (SIGINT) or `immediate` (SIGQUIT), escalating to SIGQUIT and then to
    /// SIGKILL of its process group if it does not exit in time.
    pub fn stop(&self, mode: ShutdownMode, fast_timeout: Duration) -> ExitStatus {
        let (signal, timeout) = match mode {
            ShutdownMode::Fast => (libc::SIGINT, fast_timeout),
            ShutdownMode::Immediate => (libc::SIGQUIT, Duration::from_secs(5)),
        };
        self.handle.signal(signal, false);
        if let Some(status) = self.handle.wait_timeout(timeout) {
            return status;
        }
        log::warn!(
            "postgres (pid {}) did not stop within {timeout:?} after a {} shutdown request: sending SIGQUIT",
            self.pid(),
            mode.as_str()
        );
        self.handle.signal(libc::SIGQUIT, false);
        if let Some(status) = self.handle.wait_timeout(Duration::from_secs(5)) {
            return status;
        }
        log::warn!(
            "postgres (pid {}) ignored SIGQUIT: killing its process group",
            self.pid()
        );
        self.handle.signal(libc::SIGKILL, true);
        self.handle
            .wait_timeout(Duration::from_secs(30))
            .unwrap_or(ExitStatus {
                code: None,
                signal: Some(libc::SIGKILL),
            })
    }
}

/// Everything a start needs.
#[derive(Debug)]
pub struct StartRequest<'a> {
    pub binaries: &'a Binaries,
    pub pgdata: &'a Path,
    pub user: Option<&'a PgUser>,
    /// How to connect to prove it accepts connections.
    pub probe: postgres::Config,
    pub deadlines: StartDeadlines,
}

/// Spawns the postmaster and waits until it accepts connections. `on_exit` is called from the
/// watcher thread when it exits, whenever that is. On any failure the postmaster is stopped
/// before this returns: a failed start leaves no Postgres behind.
pub fn start(
    request: StartRequest<'_>,
    cancel: &CancelToken,
    on_exit: impl FnOnce(u32, ExitStatus) + Send + 'static,
) -> Result<Postmaster, StepError> {
    start_with_args(request, &[], cancel, on_exit)
}

/// [`start`] with `args` after `-D PGDATA` on the postmaster's command line (`-c name=value`
/// settings that win over `postgresql.conf`, for a private start before the real one).
pub fn start_with_args(
    request: StartRequest<'_>,
    args: &[String],
    cancel: &CancelToken,
    on_exit: impl FnOnce(u32, ExitStatus) + Send + 'static,
) -> Result<Postmaster, StepError> {
    let error = |kind, message: String| {
        StepError::new(PhaseName::Starting, StepName::SpawnPostgres, kind, message)
    };
    // A stale postmaster.pid would fool the readiness check below.
    let pid_file = request.pgdata.join("postmaster.pid");
    let _ = std::fs::remove_file(&pid_file);
    remove_stale_socket_locks(request.pgdata);

    let mut command = Command::new(&request.binaries.postgres);
    command
        .arg("-D")
        .arg(request.pgdata)
        .args(args)
        .current_dir(request.pgdata)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C meant for compute_ctl does not reach it, and a
        // group kill reaches its backends.
        .process_group(0);
    clean_env(&mut command);
    run_as(request.user, &mut command);
    let mut child = command.spawn().map_err(|e| {
        error(
            ErrorKind::Io,
            format!("cannot start {}: {e}", request.binaries.postgres.display()),
        )
    })?;
    let pid = child.id();
    let handle = ChildHandle::new(pid);
    let stderr_tail = Arc::new(Mutex::new(VecDeque::new()));
    if let Some(stderr) = child.stderr.take() {
        let tail = stderr_tail.clone();
        let spawned = std::thread::Builder::new()
            .name("postgres-stderr".into())
            .spawn(move || forward_stderr(stderr, &tail));
        if let Err(e) = spawned {
            log::error!("cannot start the thread that forwards postgres's stderr: {e}");
        }
    }
    let watched = handle.clone();
    std::thread::Builder::new()
        .name("postmaster-watch".into())
        .spawn(move || {
            let status = watched.reap(child);
            on_exit(pid, status);
        })
        .map_err(|e| {
            error(
                ErrorKind::Internal,
                format!("cannot start the postmaster watch thread: {e}"),
            )
        })?;

    let postmaster = Postmaster {
        handle,
        stderr_tail,
    };
    match wait_until_accepting(&postmaster, &request, cancel) {
        Ok(()) => Ok(postmaster),
        Err((kind, message)) => {
            if postmaster.exit_status().is_none() {
                postmaster.stop(ShutdownMode::Immediate, Duration::from_secs(5));
            }
            let mut error = error(kind, message);
            // A postmaster that ran for the whole deadline without accepting connections (the
            // wrong port, a crash recovery longer than the deadline) does the same on a
            // retry, after PGDATA is rebuilt again: it needs a person, not another attempt.
            if kind == ErrorKind::Timeout {
                error.retryable = false;
            }
            Err(error)
        }
    }
}

/// A PGDATA kept from an earlier run (a replica restarting on its data) may hold the socket
/// lock files of a postmaster that was killed: Postgres takes a lock naming a pid that still
/// exists (a zombie not yet reaped) for a live postmaster and refuses to start. Removes the
/// lock files (and their sockets) whose pid does not run.
fn remove_stale_socket_locks(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(socket) = name
            .strip_suffix(".lock")
            .filter(|s| s.starts_with(".s.PGSQL."))
        else {
            continue;
        };
        let pid = std::fs::read_to_string(entry.path())
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok());
        if pid.is_some_and(|pid| !process_alive(pid)) {
            log::info!("removing the stale socket lock {name} of a postmaster that is gone");
            let _ = std::fs::remove_file(entry.path());
            let _ = std::fs::remove_file(dir.join(socket));
        }
    }
}

/// Takes over the postmaster `pid` that an earlier run left serving: it is watched through a
/// pidfd, so `on_exit` hears of its exit at once (status "unknown" unless it is our child).
/// Its stderr went with the earlier run; nothing of it is forwarded.
pub fn adopt(
    pid: u32,
    on_exit: impl FnOnce(u32, ExitStatus) + Send + 'static,
) -> std::io::Result<Postmaster> {
    let handle = ChildHandle::adopt(pid)?;
    let watched = handle.clone();
    std::thread::Builder::new()
        .name("postmaster-watch".into())
        .spawn(move || {
            let status = watched.watch_adopted();
            on_exit(pid, status);
        })?;
    Ok(Postmaster {
        handle,
        stderr_tail: Arc::new(Mutex::new(VecDeque::new())),
    })
}

fn wait_until_accepting(
    postmaster: &Postmaster,
    request: &StartRequest<'_>,
    cancel: &CancelToken,
) -> Result<(), (ErrorKind, String)> {
    let started = Instant::now();
    let pid_file = request.pgdata.join("postmaster.pid");
    let mut up_since: Option<Instant> = None;
    let mut last_connect_error = String::new();
    loop {
        if cancel.is_cancelled() {
            return Err((ErrorKind::Cancelled, "start of postgres cancelled".into()));
        }
        if let Some(status) = postmaster.exit_status() {
            return Err(exited_during_start(postmaster, request, status));
        }
        if let Some(total) = request.deadlines.init_timeout {
            if started.elapsed() > total {
                let reached = match up_since {
                    None => format!("it did not write {}", pid_file.display()),
                    Some(_) => format!(
                        "it did not accept connections on {} (last connection error: {last_connect_error})",
                        describe(&request.probe)
                    ),
                };
                return Err((
                    ErrorKind::Timeout,
                    format!(
                        "postgres (pid {}) did not start within --pg-init-timeout {}s: {reached}",
                        postmaster.pid(),
                        total.as_secs()
                    ),
                ));
            }
        }
        // `None` until postmaster.pid names our child; then its status line, if written.
        let status: Option<Option<String>> = read_pid_file(&pid_file)
            .filter(|(file_pid, _)| *file_pid == postmaster.pid())
            .map(|(_, status)| status);
        match (up_since, &status) {
            (None, Some(_)) => up_since = Some(Instant::now()),
            (None, None) if started.elapsed() > request.deadlines.up => {
                return Err((
                    ErrorKind::Timeout,
                    format!(
                        "postgres (pid {}) did not write {} within {:?}",
                        postmaster.pid(),
                        pid_file.display(),
                        request.deadlines.up
                    ),
                ));
            }
            _ => {}
        }
        if let (Some(since), Some(status)) = (up_since, status) {
            if matches!(status.as_deref(), Some("ready" | "standby")) {
                // Ready on a port compute_ctl does not connect to would never be reached.
                if let Some(port) = pid_file_port(&pid_file) {
                    if !request.probe.get_ports().contains(&port) {
                        return Err((
                            ErrorKind::Postgres,
                            format!(
                                "postgres (pid {}) listens on port {port} (its postmaster.pid), but compute_ctl connects to {}: give -C/--connstr port {port} or no port (the spec's port is then used)",
                                postmaster.pid(),
                                describe(&request.probe)
                            ),
                        ));
                    }
                }
                let mut probe = request.probe.clone();
                probe.connect_timeout(Duration::from_secs(2));
                match probe.connect(postgres::NoTls) {
                    Ok(mut client) => match client.simple_query("SELECT 1") {
                        Ok(_) => return Ok(()),
                        Err(e) => last_connect_error = error::describe(&e),
                    },
                    Err(e) => last_connect_error = error::describe(&e),
                }
            }
            if since.elapsed() > request.deadlines.accepting {
                return Err((
                    ErrorKind::Timeout,
                    format!(
                        "postgres (pid {}) did not accept connections on {} within {:?} (status {status:?}; last connection error: {last_connect_error}); check the spec's port setting, -C/--connstr and pg_hba.conf",
                        postmaster.pid(),
                        describe(&request.probe),
                        request.deadlines.accepting
                    ),
                ));
            }
        }
        cancel.sleep(Duration::from_millis(5));
    }
}

/// Postgres's own words for why it exited: the messages around its FATAL, each with its
/// SQLSTATE (when the log line prefix has it), DETAIL and HINT, bounded.
fn exited_during_start(
    postmaster: &Postmaster,
    request: &StartRequest<'_>,
    status: ExitStatus,
) -> (ErrorKind, String) {
    // The stderr thread may still be draining the pipe.
    std::thread::sleep(Duration::from_millis(20));
    let mut tail = postmaster.stderr_tail(STDERR_TAIL_LINES);
    // A taken port: the address and the reason are in a LOG line, the port in the HINT
    // after it; the FATAL says only "could not create any TCP/IP sockets".
    let taken_port = port_in_use(&tail.iter().map(String::as_str).collect::<Vec<_>>());
    let entries = error::parse_log(tail.iter().map(String::as_str));
    let quoted = error::around_the_fatal(&entries);
    let refused = quoted.iter().any(|entry| {
        let message = &entry.error.message;
        message.contains("invalid value for parameter")
            || message.contains("unrecognized configuration parameter")
            || message.contains("contains errors")
            || message.contains("parameter \"")
    });
    // A refused file is refused before the file's log_line_prefix applies, so its lines
    // carry no SQLSTATE: Postgres reading the same file verbosely says it with the codes.
    if refused {
        if let Some(verbose) = read_config_verbosely(request) {
            tail = verbose;
        }
    }
    let said = match error::quote_log(tail.iter().map(String::as_str)) {
        Some(said) => said,
        None => error::bounded(
            &tail
                .iter()
                .rev()
                .take(3)
                .rev()
                .cloned()
                .collect::<Vec<_>>()
                .join("; "),
        ),
    };
    let kind = if refused {
        ErrorKind::ConfigRefused
    } else {
        ErrorKind::Postgres
    };
    let fix = match taken_port {
        Some(port) => format!(
            " (port {port} is taken by another process: stop it, or give the spec another port setting)"
        ),
        None => String::new(),
    };
    (
        kind,
        format!("postgres exited during start-up with {status}: {said}{fix}"),
    )
}

/// The stderr of `postgres -C data_directory` on PGDATA with `log_error_verbosity =
/// verbose` (each message with its SQLSTATE), when Postgres refuses the configuration.
fn read_config_verbosely(request: &StartRequest<'_>) -> Option<Vec<String>> {
    let mut command = Command::new(&request.binaries.postgres);
    command.arg("-D").arg(request.pgdata).args([
        "-C",
        "data_directory",
        "-c",
        "log_error_verbosity=verbose",
    ]);
    clean_env(&mut command);
    run_as(request.user, &mut command);
    let finished = crate::subprocess::run(&mut command, &CancelToken::new(), |_| {}).ok()?;
    if finished.success() {
        return None;
    }
    Some(finished.stderr.lines().map(str::to_string).collect())
}

/// The port of "Address already in use", from the HINT Postgres gives with it ("Is another
/// postmaster already running on port 5432?").
fn port_in_use(lines: &[&str]) -> Option<u16> {
    if !lines.iter().any(|l| l.contains("Address already in use")) {
        return None;
    }
    lines.iter().find_map(|line| {
        let after = line.split("running on port ").nth(1)?;
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// The longest line of Postgres's stderr forwarded whole; the rest of a longer one is dropped.
const STDERR_LINE_BYTES_MAX: usize = 64 * 1024;

/// Forwards Postgres's stderr, a log line per line it writes (bytes that are not UTF-8 are
/// replaced, not a reason to stop forwarding).
fn forward_stderr(stderr: std::process::ChildStderr, tail: &Mutex<VecDeque<String>>) {
    let mut reader = BufReader::new(stderr);
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        let limit = u64::try_from(STDERR_LINE_BYTES_MAX).unwrap_or(u64::MAX);
        match (&mut reader).take(limit).read_until(b'\n', &mut bytes) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if !bytes.ends_with(b"\n") && bytes.len() == STDERR_LINE_BYTES_MAX {
            // Drop the rest of an overlong line, a bounded piece at a time.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                match (&mut reader).take(limit).read_until(b'\n', &mut rest) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if rest.ends_with(b"\n") => break,
                    Ok(_) => {}
                }
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        let line = text.trim_end_matches(['\n', '\r']).to_string();
        log::info!(target: "postgres", "{line}");
        let mut tail = lock(tail);
        if tail.len() == STDERR_TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

/// The port from postmaster.pid (its fourth line), once written.
pub(crate) fn pid_file_port(path: &Path) -> Option<u16> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().nth(3)?.trim().parse().ok()
}

/// `(pid, status)` from postmaster.pid: its first line and its eighth (`ready`, `standby`,
/// `starting`, `stopping`), if written yet.
pub(crate) fn read_pid_file(path: &Path) -> Option<(u32, Option<String>)> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.trim().parse().ok()?;
    let status = lines.nth(6).map(|s| s.trim().to_string());
    Some((pid, status))
}

/// Stops a postmaster that an earlier compute_ctl (killed, so it could not) left running on
/// `pgdata`. It is not our child: liveness is read from /proc. Returns its pid if one ran.
pub fn stop_orphan(pgdata: &Path) -> anyhow::Result<Option<u32>> {
    let Some((pid, _)) = read_pid_file(&pgdata.join("postmaster.pid")) else {
        return Ok(None);
    };
    if !is_postmaster_of(pid, pgdata) {
        return Ok(None);
    }
    log::warn!(
        "a postmaster of an earlier run (pid {pid}) still runs on {}: stopping it",
        pgdata.display()
    );
    let raw = i32::try_from(pid).context("postmaster.pid holds an impossible pid")?;
    // Immediate shutdown: PGDATA is wiped next, nothing in it needs to be kept.
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(raw, libc::SIGQUIT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if process_alive(pid) {
        log::warn!("postmaster {pid} ignored SIGQUIT: killing its process group");
        // SAFETY: as above; the group is the postmaster's own.
        unsafe { libc::kill(-raw, libc::SIGKILL) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while process_alive(pid) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if process_alive(pid) {
            bail!(
                "the postmaster of an earlier run (pid {pid}) on {} survived SIGKILL",
                pgdata.display()
            );
        }
    }
    Ok(Some(pid))
}

/// Kills every Postgres tool (a program of `binaries`' directory) still working in `pgdata`:
/// what an earlier run left besides its postmaster (an initdb, a backend of a stopped
/// postmaster). Waits until they are gone, so nothing writes into PGDATA while it is wiped.
/// Returns their pids.
pub fn stop_strays(binaries: &Binaries, pgdata: &Path) -> anyhow::Result<Vec<u32>> {
    let Ok(dir) = std::fs::canonicalize(pgdata) else {
        return Ok(Vec::new());
    };
    let bindir = binaries
        .postgres
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf));
    let ours = |pid: u32| {
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
        exe.as_deref().and_then(Path::parent) == bindir.as_deref()
    };
    let working_in = |dir: &Path| -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<u32>().ok())
            .filter(|pid| *pid != std::process::id())
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .ok()
                    .as_deref()
                    == Some(dir)
            })
            .filter(|pid| ours(*pid) && process_alive(*pid))
            .collect()
    };
    let strays = working_in(&dir);
    for pid in &strays {
        log::warn!(
            "a process of an earlier run (pid {pid}) still works in {}: killing it",
            dir.display()
        );
        if let Ok(raw) = i32::try_from(*pid) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(raw, libc::SIGKILL) };
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !working_in(&dir).is_empty() {
        if Instant::now() > deadline {
            bail!(
                "processes of an earlier run still work in {} after SIGKILL",
                dir.display()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(strays)
}

/// Whether `pid` is a live process whose working directory is `pgdata` (a postmaster works in
/// its data directory).
fn is_postmaster_of(pid: u32, pgdata: &Path) -> bool {
    if !process_alive(pid) {
        return false;
    }
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"));
    match (cwd, std::fs::canonicalize(pgdata)) {
        (Ok(cwd), Ok(pgdata)) => cwd == pgdata,
        _ => false,
    }
}

/// Alive and not a zombie. A zombie we parent (as PID 1) is reaped here.
pub(crate) fn process_alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks existence.
    if unsafe { libc::kill(raw, 0) } != 0 {
        return false;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    if state == Some("Z") {
        // SAFETY: reaps only that pid, without blocking; harmless if it is not our child.
        unsafe { libc::waitpid(raw, std::ptr::null_mut(), libc::WNOHANG) };
        return false;
    }
    true
}

/// Whether pg_control says the stopped cluster on `pgdata` was shut down cleanly ("shut
/// down", or "shut down in recovery" for a standby): what a fast or smart shutdown leaves,
/// and an immediate one, a crash or a kill does not. Asked once the postmaster has exited,
/// when the checkpointer has written its last word; `false` when pg_controldata cannot say.
pub fn cluster_shut_down(binaries: &Binaries, pgdata: &Path) -> bool {
    let mut command = Command::new(binaries.tool("pg_controldata"));
    command.arg(pgdata).env("LC_ALL", "C");
    let Ok(finished) = crate::subprocess::run(&mut command, &CancelToken::new(), |_| {}) else {
        return false;
    };
    let state = finished
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("Database cluster state:"))
        .map(str::trim);
    matches!(state, Some("shut down" | "shut down in recovery"))
}

/// The LSN of the last checkpoint of a stopped cluster (`pg_controldata`): what
/// `POST /terminate` reports.
pub fn checkpoint_lsn(binaries: &Binaries, pgdata: &Path) -> Option<Lsn> {
    let mut command = Command::new(binaries.tool("pg_controldata"));
    command.arg(pgdata).env("LC_ALL", "C");
    let finished = crate::subprocess::run(&mut command, &CancelToken::new(), |_| {}).ok()?;
    finished
        .stdout
        .lines()
        .find_map(|line| line.strip_prefix("Latest checkpoint location:"))
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pid_file_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("postmaster.pid");
        std::fs::write(&path, "123\n/data\n1\n5432\n/tmp\n*\n  1 2\nready   \n").unwrap();
        assert_eq!(read_pid_file(&path), Some((123, Some("ready".into()))));
        std::fs::write(&path, "123\n/data\n").unwrap();
        assert_eq!(read_pid_file(&path), Some((123, None)));
    }

    #[test]
    fn finds_the_port_in_use() {
        let lines = [
            "LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use",
            "HINT:  Is another postmaster already running on port 55432? If not, wait a few seconds and retry.",
            "FATAL:  could not create any TCP/IP sockets",
        ];
        assert_eq!(port_in_use(&lines), Some(55432));
        assert_eq!(port_in_use(&lines[2..]), None);
    }
}
