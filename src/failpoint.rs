//! Named failpoints at the persistence and step boundaries, for the exhaustive crash test
//! (`tests/it/failpoints.rs`, README "Reliability").
//!
//! Compiled in only with the cargo feature `failpoints` (off by default, never in a release
//! build): without it `failpoint!` expands to nothing and its arguments are not evaluated.
//! With it, every point reached counts its hits, and
//!
//! - `COMPUTE_CTL_FAILPOINTS="<name>=<action>[@<hit>];…"` arms points: at the `hit`-th time
//!   (default 1) the point is reached, `abort` aborts the process (SIGABRT: nothing after the
//!   point runs, nothing is flushed), `eio` and `enospc` make the point's operation fail with
//!   that OS error. Each arm fires once. An error armed at a point that cannot fail (a step
//!   boundary, an HTTP answer) is logged and ignored.
//! - `COMPUTE_CTL_FAILPOINTS_TRACE=FILE` appends one line per point reached to FILE:
//!   `<pid> <name> <hit> io|abort`, and `<pid> <name> <hit> fired <action>` before an armed
//!   point acts.
//!
//! A leaf: every module may use it.

use std::io;

/// The variable that arms failpoints.
pub const ARM_ENV: &str = "COMPUTE_CTL_FAILPOINTS";
/// The variable naming the trace file.
pub const TRACE_ENV: &str = "COMPUTE_CTL_FAILPOINTS_TRACE";

/// What an armed point does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Abort,
    Eio,
    Enospc,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Abort => "abort",
            Action::Eio => "eio",
            Action::Enospc => "enospc",
        }
    }

    /// The OS error an error action returns.
    pub fn error(self) -> Option<io::Error> {
        match self {
            Action::Abort => None,
            Action::Eio => Some(io::Error::from_raw_os_error(libc::EIO)),
            Action::Enospc => Some(io::Error::from_raw_os_error(libc::ENOSPC)),
        }
    }
}

/// One armed point: `name` acts as `action` at its `hit`-th time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arm {
    pub name: String,
    pub action: Action,
    pub hit: u64,
}

/// Parses `COMPUTE_CTL_FAILPOINTS`: `name=action[@hit]`, separated by `;`.
pub fn parse(text: &str) -> Result<Vec<Arm>, String> {
    let mut arms = Vec::new();
    for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, rest) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected name=action[@hit]"))?;
        let (action, hit) = match rest.split_once('@') {
            Some((action, hit)) => {
                let hit: u64 = hit
                    .parse()
                    .map_err(|_| format!("{part:?}: the hit is not a number"))?;
                (action, hit)
            }
            None => (rest, 1),
        };
        if hit == 0 {
            return Err(format!("{part:?}: hits count from 1"));
        }
        let action = match action {
            "abort" => Action::Abort,
            "eio" => Action::Eio,
            "enospc" => Action::Enospc,
            other => return Err(format!("{part:?}: unknown action {other:?}")),
        };
        arms.push(Arm {
            name: name.trim().to_string(),
            action,
            hit,
        });
    }
    Ok(arms)
}

/// The name of an atomic write's point at `stage`: `durable.<file>.<stage>`, where `<file>` is
/// the file's name (`RETIRED`, `pgdata.claim`, the marker `compute_ctl.pgdata`), `spec` for a
/// stored spec; a temp file is named by the file it replaces.
pub fn durable_point(path: &std::path::Path, stage: &str) -> String {
    let in_specs = path
        .parent()
        .and_then(|p| p.file_name())
        .is_some_and(|d| d == "specs");
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let file = match name.strip_prefix('.').and_then(|n| n.split_once(".tmp.")) {
        _ if in_specs => "spec".to_string(),
        Some((replaced, _)) => replaced.to_string(),
        None => name,
    };
    format!("durable.{file}.{stage}")
}

/// The point of an HTTP answer, after the driver persisted what it answers and before the
/// response is written: `http.answer.spec` for `POST /spec`; none (an empty name) for a `GET`.
pub fn http_point(post: bool, path: &str) -> String {
    match post {
        true => format!("http.answer{}", path.replace('/', ".")),
        false => String::new(),
    }
}

/// A failpoint. `failpoint!(name)` marks a boundary that can only crash (abort);
/// `failpoint!(name, on_error)` one whose operation can fail: an armed error returns
/// `on_error(io::Error)` from the enclosing function. `name` is anything `AsRef<str>`; with
/// the feature off nothing is evaluated.
#[macro_export]
macro_rules! failpoint {
    ($name:expr) => {{
        #[cfg(feature = "failpoints")]
        $crate::failpoint::reach(AsRef::<str>::as_ref(&$name));
    }};
    ($name:expr, $on_error:expr) => {{
        #[cfg(feature = "failpoints")]
        if let Err(error) = $crate::failpoint::hit(AsRef::<str>::as_ref(&$name)) {
            return ($on_error)(error);
        }
    }};
}

/// A failpoint in front of an operation that can fail, as an `io::Result<()>` to chain before
/// it (`failpoint_io!(name).and_then(|()| file.sync_data())`), so that an armed error takes
/// the operation's own error path; `Ok(())` without the feature.
#[macro_export]
macro_rules! failpoint_io {
    ($name:expr) => {{
        #[cfg(feature = "failpoints")]
        let result = $crate::failpoint::hit(AsRef::<str>::as_ref(&$name));
        #[cfg(not(feature = "failpoints"))]
        let result = Ok::<(), std::io::Error>(());
        result
    }};
}

#[cfg(feature = "failpoints")]
pub use armed::{hit, reach};

#[cfg(feature = "failpoints")]
mod armed {
    use std::collections::HashMap;
    use std::fs::{File, OpenOptions};
    use std::io::{self, Write};
    use std::sync::{Mutex, OnceLock};

    use super::{parse, Action, Arm, ARM_ENV, TRACE_ENV};

    struct Points {
        arms: Vec<(Arm, bool)>,
        hits: HashMap<String, u64>,
        trace: Option<File>,
    }

    fn points() -> &'static Mutex<Points> {
        static POINTS: OnceLock<Mutex<Points>> = OnceLock::new();
        POINTS.get_or_init(|| {
            let arms = match std::env::var(ARM_ENV) {
                Ok(text) => parse(&text).unwrap_or_else(|e| {
                    log::error!("{ARM_ENV}: {e}; no failpoint armed");
                    Vec::new()
                }),
                Err(_) => Vec::new(),
            };
            let trace = std::env::var_os(TRACE_ENV).and_then(|path| {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| log::error!("{TRACE_ENV}: {e}"))
                    .ok()
            });
            Mutex::new(Points {
                arms: arms.into_iter().map(|a| (a, false)).collect(),
                hits: HashMap::new(),
                trace,
            })
        })
    }

    /// A point that can only crash.
    pub fn reach(name: &str) {
        if let Some(action) = count(name, false) {
            log::warn!(
                "failpoint {name}: {} cannot happen here; ignored",
                action.as_str()
            );
        }
    }

    /// A point whose operation can fail.
    pub fn hit(name: &str) -> Result<(), io::Error> {
        match count(name, true).and_then(Action::error) {
            Some(error) => {
                log::warn!("failpoint {name}: returning {error}");
                Err(error)
            }
            None => Ok(()),
        }
    }

    /// Counts a hit, traces it, aborts if so armed; the error action armed for this hit.
    fn count(name: &str, io: bool) -> Option<Action> {
        if name.is_empty() {
            return None;
        }
        let mut points = points().lock().unwrap_or_else(|p| p.into_inner());
        let points = &mut *points;
        let hit = points.hits.entry(name.to_string()).or_insert(0);
        *hit += 1;
        let hit = *hit;
        let pid = std::process::id();
        let kind = if io { "io" } else { "abort" };
        if let Some(trace) = &mut points.trace {
            let _ = trace.write_all(format!("{pid} {name} {hit} {kind}\n").as_bytes());
        }
        let (arm, fired) = points
            .arms
            .iter_mut()
            .find(|(arm, fired)| !*fired && arm.name == name && arm.hit == hit)?;
        *fired = true;
        let action = arm.action;
        if let Some(trace) = &mut points.trace {
            let line = format!("{pid} {name} {hit} fired {}\n", action.as_str());
            let _ = trace.write_all(line.as_bytes());
        }
        if action == Action::Abort {
            eprintln!("failpoint {name} (hit {hit}): abort");
            std::process::abort();
        }
        Some(action)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn arms_parse_with_and_without_a_hit() {
        let arms = parse("journal.append.written=abort; durable.spec.renamed=enospc@3;").unwrap();
        assert_eq!(
            arms,
            vec![
                Arm {
                    name: "journal.append.written".into(),
                    action: Action::Abort,
                    hit: 1
                },
                Arm {
                    name: "durable.spec.renamed".into(),
                    action: Action::Enospc,
                    hit: 3
                },
            ]
        );
        assert!(parse("x=explode").is_err());
        assert!(parse("x=abort@0").is_err());
        assert!(parse("x").is_err());
        assert_eq!(
            durable_point(std::path::Path::new("/s/specs/ab12.json"), "renamed"),
            "durable.spec.renamed"
        );
        assert_eq!(
            durable_point(std::path::Path::new("/s/.RETIRED.tmp.12.0"), "temp_written"),
            "durable.RETIRED.temp_written"
        );
        assert_eq!(
            Action::Enospc.error().unwrap().raw_os_error(),
            Some(libc::ENOSPC)
        );
    }
}
