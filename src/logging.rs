//! Logs to stderr (journald picks them up), as text or one JSON object a line.
//!
//! The level comes from `COMPUTE_CTL_LOG` (`error`, `warn`, `info`, `debug`, `trace`; default
//! `info`). Postgres's own stderr is forwarded here with the target `postgres`.

use std::io::Write;
use std::time::SystemTime;

use log::{Level, LevelFilter, Log, Metadata, Record};

/// `--log-format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

struct StderrLog {
    format: LogFormat,
    level: LevelFilter,
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
        let ts = humantime::format_rfc3339_millis(SystemTime::now());
        let line = match self.format {
            LogFormat::Text => format!(
                "{ts} {:<5} {}: {}\n",
                record.level(),
                record.target(),
                record.args()
            ),
            LogFormat::Json => {
                let object = serde_json::json!({
                    "ts": ts.to_string(),
                    "level": record.level().as_str().to_lowercase(),
                    "target": record.target(),
                    "msg": record.args().to_string(),
                });
                format!("{object}\n")
            }
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
