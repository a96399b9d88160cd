//! Logs to stderr (journald picks them up), as text or one JSON object a line.
//!
//! The level comes from `COMPUTE_CTL_LOG` (`error`, `warn`, `info`, `debug`, `trace`; default
//! `info`). Postgres's own stderr is forwarded here with the target `postgres`, a line each. The Postgres
//! client's own debug lines (statements with password verifiers) are never written.
//!
//! A JSON line carries `ts`, `level`, `target`, `msg`, and where known `phase` and `seq` (of
//! the view the driver last published), `step` (the step the logging thread runs or reports)
//! and `request_id` (the HTTP request it serves). The last two come from a `Scope` the thread
//! holds while it works on them.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};
use states::PhaseName;

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The longest message logged; longer ones are cut (a line stays a line journald keeps).
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024;
/// The longest request id carried (the HTTP layer bounds it already).
const REQUEST_ID_BYTES_MAX: usize = 200;

/// The published phase (`PhaseName::ALL` index + 1; 0 before the first publish) and seq.
static PHASE: AtomicU8 = AtomicU8::new(0);
static SEQ: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static CONTEXT: RefCell<Context> = const { RefCell::new(Context { step: None, request_id: None }) };
}

#[derive(Clone, Debug, Default)]
struct Context {
    step: Option<&'static str>,
    request_id: Option<String>,
}

/// While held, this thread's log lines carry `step` and/or `request_id`; dropping it restores
/// what was there before.
#[derive(Debug)]
pub struct Scope {
    previous: Context,
}

/// Marks this thread's lines with a step and a request id until the `Scope` is dropped.
pub fn scope(step: Option<&'static str>, request_id: Option<&str>) -> Scope {
    let request_id = request_id.map(|id| {
        let mut cut = id.len().min(REQUEST_ID_BYTES_MAX);
        while !id.is_char_boundary(cut) {
            cut -= 1;
        }
        id[..cut].to_string()
    });
    let previous = CONTEXT.with(|c| {
        let mut c = c.borrow_mut();
        let previous = c.clone();
        if step.is_some() {
            c.step = step;
        }
        if request_id.is_some() {
            c.request_id = request_id;
        }
        previous
    });
    Scope { previous }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let previous = std::mem::take(&mut self.previous);
        CONTEXT.with(|c| *c.borrow_mut() = previous);
    }
}

/// The driver published a view: later lines carry its phase and seq.
pub fn published(view: &crate::view::StateView) {
    let index = PhaseName::ALL
        .iter()
        .position(|p| *p == view.phase)
        .map_or(0, |i| u8::try_from(i + 1).unwrap_or(0));
    PHASE.store(index, Ordering::Relaxed);
    SEQ.store(view.seq, Ordering::Relaxed);
}

fn current_phase() -> Option<PhaseName> {
    let index = usize::from(PHASE.load(Ordering::Relaxed));
    index
        .checked_sub(1)
        .and_then(|i| PhaseName::ALL.get(i).copied())
}

struct StderrLog {
    format: LogFormat,
    level: LevelFilter,
}

/// One JSON log line (without the newline) for a record with `msg`.
pub fn json_line(ts: &str, level: Level, target: &str, msg: &str) -> String {
    let mut object = serde_json::Map::new();
    object.insert("ts".into(), ts.into());
    object.insert("level".into(), level.as_str().to_lowercase().into());
    object.insert("target".into(), target.into());
    object.insert("msg".into(), msg.into());
    if let Some(phase) = current_phase() {
        object.insert("phase".into(), phase.as_str().into());
        object.insert("seq".into(), SEQ.load(Ordering::Relaxed).into());
    }
    CONTEXT.with(|c| {
        let c = c.borrow();
        if let Some(step) = c.step {
            object.insert("step".into(), step.into());
        }
        if let Some(id) = &c.request_id {
            object.insert("request_id".into(), id.as_str().into());
        }
    });
    serde_json::Value::Object(object).to_string()
}

impl Log for StderrLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // The Postgres client logs every statement at debug, passwords (verifiers) included:
        // its debug and trace lines never pass.
        if metadata.target().starts_with("tokio_postgres") && metadata.level() > Level::Info {
            return false;
        }
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let ts = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let mut msg = record.args().to_string();
        if msg.len() > MESSAGE_BYTES_MAX {
            let mut cut = MESSAGE_BYTES_MAX;
            while !msg.is_char_boundary(cut) {
                cut -= 1;
            }
            msg.truncate(cut);
        }
        let line = match self.format {
            LogFormat::Text => format!("{ts} {:<5} {}: {}\n", record.level(), record.target(), msg),
            LogFormat::Json => json_line(&ts, record.level(), record.target(), &msg) + "\n",
        };
        // One write per line keeps lines whole when several threads log at once.
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}

/// Installs the logger once; later calls are ignored.
pub fn init(format: LogFormat) {
    let level = std::env::var("COMPUTE_CTL_LOG")
        .ok()
        .and_then(|v| v.parse::<Level>().ok())
        .map_or(LevelFilter::Info, |l| l.to_level_filter());
    let logger = Box::new(StderrLog { format, level });
    if log::set_boxed_logger(logger).is_ok() {
        log::set_max_level(level);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_adds_step_and_request_id_and_restores_on_drop() {
        let plain: serde_json::Value =
            serde_json::from_str(&json_line("t", Level::Info, "x", "a\nb")).unwrap();
        assert_eq!(plain["msg"], "a\nb");
        assert!(plain.get("step").is_none());
        {
            let _outer = scope(None, Some("req-1"));
            let _inner = scope(Some("apply_spec"), None);
            let line: serde_json::Value =
                serde_json::from_str(&json_line("t", Level::Warn, "x", "m")).unwrap();
            assert_eq!(line["step"], "apply_spec");
            assert_eq!(line["request_id"], "req-1");
            assert_eq!(line["level"], "warn");
        }
        let after: serde_json::Value =
            serde_json::from_str(&json_line("t", Level::Info, "x", "m")).unwrap();
        assert!(after.get("step").is_none() && after.get("request_id").is_none());
    }
}
