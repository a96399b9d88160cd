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

use crate::executor::cancel::{lock, CancelToken};

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
}

impl ChildHandle {
    pub fn new(pid: u32) -> Arc<ChildHandle> {
        lock(&OWN_CHILDREN).insert(pid);
        Arc::new(ChildHandle {
            pid,
            exit: Mutex::new(None),
            exited: Condvar::new(),
        })
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
        let target = if group { -pid } else { pid };
        // SAFETY: kill has no memory-safety preconditions; the pid is our unreaped child.
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
