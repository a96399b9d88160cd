//! The sidecar of the seed (`--vm-monitor`, by default `/bin/vm-informant` when it exists):
//! started once Postgres runs, restarted with backoff when it exits, stopped on terminate.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::subprocess::ChildHandle;
use crate::sync::lock;

/// Where the seed's sidecar lives.
pub const DEFAULT_PATH: &str = "/bin/vm-informant";
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run this long resets the backoff.
const STABLE_RUN: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// The sidecar as `GET /state` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SidecarView {
    pub path: String,
    pub running: bool,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub last_exit: Option<String>,
}

#[derive(Default)]
struct SidecarState {
    wanted: bool,
    supervising: bool,
    child: Option<Arc<ChildHandle>>,
    view: SidecarView,
}

/// Supervises one sidecar process.
#[derive(Clone)]
pub struct Sidecar {
    path: PathBuf,
    state: Arc<(Mutex<SidecarState>, Condvar)>,
    /// Hears every change of the view; must not block.
    on_change: Arc<dyn Fn(SidecarView) + Send + Sync>,
}

impl std::fmt::Debug for Sidecar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sidecar").field("path", &self.path).finish()
    }
}

impl Sidecar {
    pub fn new(path: PathBuf, on_change: Arc<dyn Fn(SidecarView) + Send + Sync>) -> Sidecar {
        let view = SidecarView {
            path: path.display().to_string(),
            ..SidecarView::default()
        };
        Sidecar {
            path,
            state: Arc::new((
                Mutex::new(SidecarState {
                    view,
                    ..SidecarState::default()
                }),
                Condvar::new(),
            )),
            on_change,
        }
    }

    /// Starts supervising (idempotent).
    pub fn start(&self) {
        let (state, _) = &*self.state;
        let mut state = lock(state);
        state.wanted = true;
        if state.supervising {
            return;
        }
        state.supervising = true;
        drop(state);
        let sidecar = self.clone();
        if let Err(e) = std::thread::Builder::new()
            .name("sidecar".into())
            .spawn(move || sidecar.supervise())
        {
            log::error!("cannot start the sidecar supervisor: {e}");
            lock(&self.state.0).supervising = false;
        }
    }

    /// Stops the sidecar: SIGTERM, then SIGKILL after a grace period. Waits for it.
    pub fn stop(&self) {
        let (state, wake) = &*self.state;
        let child = {
            let mut state = lock(state);
            state.wanted = false;
            wake.notify_all();
            state.child.clone()
        };
        if let Some(child) = child {
            child.signal(libc::SIGTERM, true);
            if child.wait_timeout(STOP_TIMEOUT).is_none() {
                child.signal(libc::SIGKILL, true);
                child.wait_timeout(STOP_TIMEOUT);
            }
        }
    }

    fn report(&self) {
        let view = lock(&self.state.0).view.clone();
        (self.on_change)(view);
    }

    fn supervise(self) {
        let mut backoff = BACKOFF_MIN;
        loop {
            if !lock(&self.state.0).wanted {
                break;
            }
            let started = Instant::now();
            let mut command = Command::new(&self.path);
            command.stdin(Stdio::null()).process_group(0);
            crate::postgres::process::clean_env(&mut command);
            match command.spawn() {
                Ok(child) => {
                    let handle = ChildHandle::new(child.id());
                    {
                        let mut state = lock(&self.state.0);
                        state.child = Some(handle.clone());
                        state.view.running = true;
                        state.view.pid = Some(handle.pid());
                    }
                    log::info!(
                        "sidecar {} started (pid {})",
                        self.path.display(),
                        handle.pid()
                    );
                    self.report();
                    let status = handle.reap(child);
                    let mut state = lock(&self.state.0);
                    state.child = None;
                    state.view.running = false;
                    state.view.pid = None;
                    state.view.last_exit = Some(status.to_string());
                    if state.wanted {
                        log::warn!(
                            "sidecar {} exited with {status}; restarting in {backoff:?}",
                            self.path.display()
                        );
                        state.view.restarts += 1;
                    }
                }
                Err(e) => {
                    log::error!(
                        "cannot start sidecar {}: {e}; retrying in {backoff:?}",
                        self.path.display()
                    );
                    lock(&self.state.0).view.last_exit = Some(format!("cannot start: {e}"));
                }
            }
            self.report();
            if started.elapsed() >= STABLE_RUN {
                backoff = BACKOFF_MIN;
            }
            let (state, wake) = &*self.state;
            let guard = lock(state);
            let (guard, _) = wake
                .wait_timeout_while(guard, backoff, |s| s.wanted)
                .unwrap_or_else(|p| p.into_inner());
            drop(guard);
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
        lock(&self.state.0).supervising = false;
        self.report();
    }
}
