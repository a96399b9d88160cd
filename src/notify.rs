//! systemd's notification protocol (`Type=notify`, sd_notify(3)) over `NOTIFY_SOCKET`, a path
//! or an abstract socket (`@name`): `READY=1` once running, `STATUS=` with the phase, the
//! generations and a failure's one-line summary, `WATCHDOG=1` from the driver loop,
//! `EXTEND_TIMEOUT_USEC=` while a long start-up step runs, `RELOADING=1` with `MONOTONIC_USEC=`
//! on SIGHUP then `READY=1`, and `STOPPING=1`. Silent without `NOTIFY_SOCKET`.
//!
//! The watchdog is fed only by `watchdog()`, which the driver loop calls once per iteration:
//! a loop that is stuck stops feeding it, and systemd restarts the compute (`WatchdogSec=`).
//! Messages are sent non-blocking: a full socket drops a message (logged), never the loop.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use states::PhaseName;

use crate::view::StateView;

/// How much more start-up time one `EXTEND_TIMEOUT_USEC=` asks for.
pub const EXTEND_TIMEOUT: Duration = Duration::from_secs(60);
/// How often it is asked again while the long step runs (well inside `EXTEND_TIMEOUT`).
pub const EXTEND_INTERVAL: Duration = Duration::from_secs(20);
/// The longest `STATUS=` line sent (systemd shows one line; the journal has the rest).
pub const STATUS_BYTES_MAX: usize = 400;

/// The socket and the watchdog's interval, read once from the environment.
#[derive(Debug)]
struct Notifier {
    socket: UnixDatagram,
    address: SocketAddr,
    /// Half of `WATCHDOG_USEC`, when the watchdog is meant for this process.
    watchdog_interval: Option<Duration>,
    state: Mutex<NotifyState>,
}

/// What was sent, so that only changes are sent again.
#[derive(Debug, Default)]
struct NotifyState {
    status: String,
    phase: Option<PhaseName>,
    /// `READY=1` was sent and no `STOPPING=1` since: reloads are reported.
    ready: bool,
    /// A long start-up step runs: `EXTEND_TIMEOUT_USEC=` is due at this instant.
    extend_due: Option<Instant>,
    watchdog_last: Option<Instant>,
}

static NOTIFIER: OnceLock<Option<Notifier>> = OnceLock::new();

fn notifier() -> Option<&'static Notifier> {
    NOTIFIER.get_or_init(Notifier::from_env).as_ref()
}

impl Notifier {
    fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let address = match address_of(path.as_encoded_bytes()) {
            Ok(address) => address,
            Err(e) => {
                log::warn!("NOTIFY_SOCKET {path:?} is not a socket address: {e}");
                return None;
            }
        };
        let socket = match UnixDatagram::unbound().and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        }) {
            Ok(socket) => socket,
            Err(e) => {
                log::warn!("cannot create a socket to notify systemd: {e}");
                return None;
            }
        };
        let watchdog_interval = watchdog_interval(
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        if let Some(interval) = watchdog_interval {
            log::info!("systemd watchdog: WATCHDOG=1 every {interval:?} from the driver loop");
        }
        Some(Notifier {
            socket,
            address,
            watchdog_interval,
            state: Mutex::new(NotifyState::default()),
        })
    }

    fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.address) {
            log::debug!("cannot notify systemd ({}): {e}", message.trim_end());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NotifyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `@name` is an abstract socket (sd_notify's convention), anything else a path.
fn address_of(bytes: &[u8]) -> std::io::Result<SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => {
            use std::os::unix::ffi::OsStrExt;
            SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(bytes))
        }
    }
}

/// Half of `WATCHDOG_USEC` when it is set, positive, and `WATCHDOG_PID` (if set) is `pid`.
pub fn watchdog_interval(usec: Option<&str>, for_pid: Option<&str>, pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(for_pid) = for_pid {
        if for_pid.trim().parse::<u32>().ok() != Some(pid) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// The `STATUS=` text of a view: phase, generations (desired/applied) and, in `failed`, the
/// error's first line; bounded, one line.
pub fn status_line(view: &StateView) -> String {
    let generation = |g: Option<u64>| g.map_or_else(|| "-".to_string(), |g| g.to_string());
    let mut line = format!(
        "phase {}, generation {} desired, {} applied",
        view.phase,
        generation(view.desired_generation),
        generation(view.applied_generation)
    );
    if let Some(error) = &view.error {
        let summary = error.to_string();
        let first = summary.lines().next().unwrap_or_default();
        line.push_str(": ");
        line.push_str(first);
    }
    if line.len() > STATUS_BYTES_MAX {
        let mut cut = STATUS_BYTES_MAX;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    line
}

/// Whether a phase runs a start-up step that may take long (a base backup, sync-safekeepers).
fn is_long_startup(phase: PhaseName) -> bool {
    matches!(phase, PhaseName::SyncSafekeepers | PhaseName::Basebackup)
}

/// The driver publishes a view: tells systemd what changed (`STATUS=`, and `READY=1` on
/// entering `running`, `STOPPING=1` on entering `terminating`).
pub fn published(view: &StateView) {
    let Some(notifier) = notifier() else { return };
    let mut state = notifier.lock();
    let status = status_line(view);
    let entered = (state.phase != Some(view.phase)).then_some(view.phase);
    if status == state.status && entered.is_none() {
        return;
    }
    let mut message = format!("STATUS={status}\n");
    match entered {
        Some(PhaseName::Running) if !state.ready => {
            state.ready = true;
            message.push_str("READY=1\n");
        }
        Some(PhaseName::Terminating | PhaseName::Terminated)
            if !matches!(
                state.phase,
                Some(PhaseName::Terminating | PhaseName::Terminated)
            ) =>
        {
            state.ready = false;
            message.push_str("STOPPING=1\n");
        }
        _ => {}
    }
    if let Some(phase) = entered {
        if is_long_startup(phase) && !state.ready {
            // At once, then every EXTEND_INTERVAL from `watchdog()`.
            message.push_str(&extend_message());
            state.extend_due = Some(Instant::now() + EXTEND_INTERVAL);
        } else {
            state.extend_due = None;
        }
    }
    state.status = status;
    state.phase = Some(view.phase);
    notifier.send(&message);
}

fn extend_message() -> String {
    format!("EXTEND_TIMEOUT_USEC={}\n", EXTEND_TIMEOUT.as_micros())
}

/// Called once per driver loop iteration: sends `WATCHDOG=1` when half of `WATCHDOG_USEC` has
/// passed since the last one (and `EXTEND_TIMEOUT_USEC=` when due); returns how long the loop
/// may wait before calling again (`Duration::MAX` when nothing is due, ever).
pub fn watchdog() -> Duration {
    let Some(notifier) = notifier() else {
        return Duration::MAX;
    };
    let now = Instant::now();
    let mut state = notifier.lock();
    let mut wait = Duration::MAX;
    if let Some(interval) = notifier.watchdog_interval {
        let due = state.watchdog_last.map_or(now, |last| last + interval);
        if now >= due {
            state.watchdog_last = Some(now);
            notifier.send("WATCHDOG=1\n");
            wait = interval;
        } else {
            wait = due - now;
        }
    }
    if let Some(due) = state.extend_due {
        if now >= due {
            notifier.send(&extend_message());
            state.extend_due = Some(now + EXTEND_INTERVAL);
            wait = wait.min(EXTEND_INTERVAL);
        } else {
            wait = wait.min(due - now);
        }
    }
    wait
}

/// SIGHUP: `RELOADING=1` with `MONOTONIC_USEC=` before `reload` runs, then `READY=1` (and the
/// status) once it returns, accepted or refused. Only while ready: before `running` systemd has
/// no reload to report, and after `STOPPING=1` none either.
pub fn reload<T>(reload: impl FnOnce() -> T) -> T {
    let ready = notifier().is_some_and(|n| n.lock().ready);
    if let (true, Some(notifier)) = (ready, notifier()) {
        notifier.send(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\n",
            monotonic_usec()
        ));
    }
    let result = reload();
    if let (true, Some(notifier)) = (ready, notifier()) {
        let status = notifier.lock().status.clone();
        notifier.send(&format!("READY=1\nSTATUS={status}\n"));
    }
    result
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares `MONOTONIC_USEC=` with.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1_000_000).saturating_add(nanos / 1_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_is_half_of_watchdog_usec_and_only_for_its_pid() {
        assert_eq!(
            watchdog_interval(Some("1000000"), None, 7),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            watchdog_interval(Some("1000000"), Some("7"), 7),
            Some(Duration::from_millis(500))
        );
        assert_eq!(watchdog_interval(Some("1000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("x"), None, 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
    }

    #[test]
    fn abstract_and_path_addresses() {
        let abstract_addr = address_of(b"@compute_ctl-test").unwrap();
        use std::os::linux::net::SocketAddrExt;
        assert_eq!(
            abstract_addr.as_abstract_name(),
            Some(&b"compute_ctl-test"[..])
        );
        let path = address_of(b"/run/systemd/notify").unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
    }
}
