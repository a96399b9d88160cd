//! Child processes (initdb, pg_basebackup, the postmaster...): signalled safely from any
//! thread until reaped, killed with their process group on cancel, their output kept for
//! error messages.

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use states::ExitStatus;

use crate::sync::{lock, CancelToken};

/// The pids of the children compute_ctl spawned and will reap itself. As PID 1 it also
/// inherits orphans; `reap_orphans` reaps those, and never one of these (CloudNativePG's
/// lesson: reap orphans only, never the postmaster, whose status belongs to its watcher).
static OWN_CHILDREN: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// A child that other threads may signal. Its pid cannot be reused while they do: the
/// waiting thread marks it exited under the lock before reaping it, and signals are sent
/// under the same lock only while it is not marked.
#[derive(Debug)]
pub struct ChildHandle {
    pid: u32,
    exit: Mutex<Option<ExitStatus>>,
    exited: Condvar,
    /// For a process adopted from an earlier run: its pidfd, which signals and the watch use,
    /// so that a reused pid is never hit.
    pidfd: Option<std::os::fd::OwnedFd>,
}

impl ChildHandle {
    pub fn new(pid: u32) -> Arc<ChildHandle> {
        lock(&OWN_CHILDREN).insert(pid);
        Arc::new(ChildHandle {
            pid,
            exit: Mutex::new(None),
            exited: Condvar::new(),
            pidfd: None,
        })
    }

    /// A process an earlier run started (an orphan now, or our child again after a
    /// re-exec), watched through a pidfd: its exit is seen at once, without polling.
    pub fn adopt(pid: u32) -> std::io::Result<Arc<ChildHandle>> {
        use std::os::fd::FromRawFd;
        let raw = libc::pid_t::try_from(pid)
            .map_err(|_| std::io::Error::other(format!("pid {pid} is out of range")))?;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, raw, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let fd = i32::try_from(fd).map_err(|_| std::io::Error::other("pidfd out of range"))?;
        // SAFETY: `fd` was just returned by pidfd_open and is owned by nobody else.
        let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        // The PID-1 reaper must leave it to its watch, should it be our child.
        lock(&OWN_CHILDREN).insert(pid);
        Ok(Arc::new(ChildHandle {
            pid,
            exit: Mutex::new(None),
            exited: Condvar::new(),
            pidfd: Some(pidfd),
        }))
    }

    /// For an adopted process: blocks until it exits, then marks it. Its status is known
    /// only when it is our child (after a re-exec); otherwise "unknown".
    pub fn watch_adopted(&self) -> ExitStatus {
        use std::os::fd::AsRawFd;
        let unknown = ExitStatus {
            code: None,
            signal: None,
        };
        let Some(pidfd) = &self.pidfd else {
            return unknown;
        };
        loop {
            let mut poll = libc::pollfd {
                fd: pidfd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; a pidfd becomes readable when the process exits.
            let rc = unsafe { libc::poll(&mut poll, 1, -1) };
            if rc > 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                break;
            }
        }
        let mut exit = lock(&self.exit);
        // SAFETY: siginfo is plain data filled by waitid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: P_PIDFD with our own descriptor; fails with ECHILD for a non-child.
        let rc = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            )
        };
        let status = if rc == 0 {
            // SAFETY: si_status and si_code are valid for a WEXITED report.
            let (code, status) = unsafe { (info.si_code, info.si_status()) };
            if code == libc::CLD_EXITED {
                ExitStatus {
                    code: Some(status),
                    signal: None,
                }
            } else {
                ExitStatus {
                    code: None,
                    signal: Some(status),
                }
            }
        } else {
            unknown
        };
        *exit = Some(status);
        lock(&OWN_CHILDREN).remove(&self.pid);
        self.exited.notify_all();
        status
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` to the child (and, with `group`, to its process group) unless it has
    /// exited; returns whether it was sent.
    pub fn signal(&self, signal: i32, group: bool) -> bool {
        let exit = lock(&self.exit);
        if exit.is_some() {
            return false;
        }
        let Ok(pid) = i32::try_from(self.pid) else {
            return false;
        };
        if let (Some(pidfd), false) = (&self.pidfd, group) {
            use std::os::fd::AsRawFd;
            // SAFETY: pidfd_send_signal with our own descriptor, no siginfo, no flags.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    signal,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
            return rc == 0;
        }
        let target = if group { -pid } else { pid };
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child (or
        // an adopted process group's leader, alive: its exit is not marked).
        unsafe { libc::kill(target, signal) == 0 }
    }

    pub fn status(&self) -> Option<ExitStatus> {
        *lock(&self.exit)
    }

    /// Waits until the child has exited, at most `timeout`.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<ExitStatus> {
        let exit = lock(&self.exit);
        let (exit, _) = self
            .exited
            .wait_timeout_while(exit, timeout, |e| e.is_none())
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *exit
    }

    /// Blocks until `child` exits, marks it, then reaps it.
    pub fn reap(&self, mut child: Child) -> ExitStatus {
        // Wait without reaping, so the pid stays ours until it is marked.
        let pid = i32::try_from(self.pid).unwrap_or(i32::MAX);
        loop {
            // SAFETY: siginfo is plain data filled by waitid.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: valid pointer to `info`; P_PID with our own child's pid.
            let rc = unsafe {
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if rc == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
            {
                break;
            }
        }
        let mut exit = lock(&self.exit);
        let status = match child.wait() {
            Ok(status) => from_std(status),
            Err(_) => ExitStatus {
                code: None,
                signal: None,
            },
        };
        *exit = Some(status);
        lock(&OWN_CHILDREN).remove(&self.pid);
        self.exited.notify_all();
        status
    }
}

/// As PID 1 (a container's entrypoint), compute_ctl inherits every orphaned process of the
/// container; this reaps their zombies every second, leaving its own children to their
/// waiters. Call it only when `std::process::id() == 1`.
pub fn reap_orphans_forever() {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        loop {
            // Peek at one exited child without reaping it.
            // SAFETY: siginfo is plain data filled by waitid.
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            // SAFETY: a valid pointer; P_ALL with WNOHANG never blocks.
            let rc = unsafe {
                libc::waitid(
                    libc::P_ALL,
                    0,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                )
            };
            // SAFETY: si_pid is valid for a WEXITED report; 0 means no child has exited.
            let pid = if rc == 0 { unsafe { info.si_pid() } } else { 0 };
            let Ok(pid) = u32::try_from(pid) else { break };
            if pid == 0 {
                break;
            }
            let own = lock(&OWN_CHILDREN);
            if own.contains(&pid) {
                // Its waiter reaps it; the orphans behind it wait for the next round.
                break;
            }
            // SAFETY: reaps exactly that pid, which is no child of ours we wait for.
            unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG) };
            drop(own);
            log::debug!("reaped orphan process {pid}");
        }
    }
}

/// Converts std's exit status.
pub fn from_std(status: std::process::ExitStatus) -> ExitStatus {
    ExitStatus {
        code: status.code(),
        signal: status.signal(),
    }
}

/// What a finished helper program left.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.code == Some(0)
    }

    /// The last lines of stderr (else stdout), for an error message.
    pub fn tail(&self, lines: usize) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let all: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        all[all.len().saturating_sub(lines)..].join("; ")
    }
}

/// Why a helper program did not finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// `in_dir`: the working directory it was to start in, when one was set: a directory the
    /// user cannot enter fails the start with the same "Permission denied" as the program.
    #[error("cannot start {program}{in_dir}: {source}")]
    Spawn {
        program: String,
        in_dir: String,
        source: std::io::Error,
    },
    #[error("{program} was cancelled")]
    Cancelled { program: String },
}

/// Runs `command` to completion in its own process group; a cancel kills the group.
/// `on_stderr` sees stderr as it arrives (progress reports).
pub fn run(
    command: &mut Command,
    cancel: &CancelToken,
    mut on_stderr: impl FnMut(&[u8]) + Send,
) -> Result<Finished, RunError> {
    let program = command.get_program().to_string_lossy().into_owned();
    let started = Instant::now();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn().map_err(|source| RunError::Spawn {
        program: program.clone(),
        in_dir: command
            .get_current_dir()
            .map_or(String::new(), |dir| format!(" in {}", dir.display())),
        source,
    })?;
    let handle = ChildHandle::new(child.id());
    let killer = handle.clone();
    let _hook = cancel.on_cancel(move || {
        killer.signal(libc::SIGKILL, true);
    });
    let mut stdout_pipe = child.stdout.take();
    let mut stderr_pipe = child.stderr.take();
    let (stdout, stderr) = std::thread::scope(|scope| {
        let out = scope.spawn(move || {
            let mut buffer = Vec::new();
            if let Some(pipe) = stdout_pipe.as_mut() {
                let _ = pipe.read_to_end(&mut buffer);
            }
            buffer
        });
        let mut buffer = Vec::new();
        if let Some(pipe) = stderr_pipe.as_mut() {
            let mut chunk = [0_u8; 8192];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                on_stderr(&chunk[..n]);
                buffer.extend_from_slice(&chunk[..n]);
            }
        }
        (out.join().unwrap_or_default(), buffer)
    });
    let status = handle.reap(child);
    if cancel.is_cancelled() {
        return Err(RunError::Cancelled { program });
    }
    Ok(Finished {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        elapsed: started.elapsed(),
    })
}

/// Has Linux send `signal` to the child when compute_ctl dies (also by SIGKILL): a child that
/// works in PGDATA must not outlive the run that started it (SIGTERM for a guard script that
/// kills its process group, SIGKILL for `initdb`).
pub fn die_with_parent(command: &mut Command, signal: libc::c_int) {
    let parent = std::process::id();
    let arm = move || {
        // SAFETY: PR_SET_PDEATHSIG takes a signal number; the other arguments are unused.
        let rc = unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                signal as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // compute_ctl may have died before the prctl: then nobody would signal the guard.
        // SAFETY: getppid has no preconditions.
        if i64::from(unsafe { libc::getppid() }) != i64::from(parent) {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    };
    // SAFETY: `arm` runs in the child between fork and exec, after std has switched to the
    // Postgres user (a switch that would clear the setting); it calls only the
    // async-signal-safe prctl and getppid and allocates nothing.
    unsafe {
        command.pre_exec(arm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_keeps_output() {
        let finished = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            &CancelToken::new(),
            |_| {},
        )
        .unwrap();
        assert_eq!(finished.status.code, Some(3));
        assert_eq!(finished.stdout.trim(), "out");
        assert_eq!(finished.tail(5), "err");
    }

    #[test]
    fn cancel_kills_the_whole_group() {
        let cancel = CancelToken::new();
        let c = cancel.clone();
        let canceller = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            c.cancel();
        });
        let started = Instant::now();
        // The inner sleep is a grandchild: only a group kill ends it (and closes the pipes).
        let result = run(
            Command::new("sh").args(["-c", "sleep 30 & sleep 30; wait"]),
            &cancel,
            |_| {},
        );
        canceller.join().unwrap();
        assert!(matches!(result, Err(RunError::Cancelled { .. })));
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}
