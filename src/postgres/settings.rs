//! Settings applied live: the new `postgresql.conf` is checked by Postgres before it is
//! loaded, put back if refused, and a reload is confirmed by reading back the spec hash.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use states::{ErrorKind, PhaseName, StepError, StepName};

use crate::durable::{write_atomic_owned, Persistence};
use crate::pg_user::{run_as, PgUser};
use crate::postgres::process::{clean_env, Binaries};
use crate::sync::CancelToken;

/// The setting that carries the spec hash, read back to confirm a reload.
pub const SPEC_HASH_SETTING: &str = "compute_ctl.spec_hash";

/// How long a reload may take to show.
const RELOAD_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// A setting whose new value waits for a restart (`pg_settings.pending_restart`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRestart {
    pub name: String,
    pub old: String,
    pub new: String,
}

/// What applying the settings did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SettingsOutcome {
    /// Whether `postgresql.conf` changed (and so Postgres was reloaded).
    pub reloaded: bool,
    pub pending_restart: Vec<PendingRestart>,
}

/// Everything applying settings needs besides the connection.
#[derive(Debug)]
pub struct SettingsTarget<'a> {
    pub pgdata: &'a Path,
    pub conf: &'a str,
    pub spec_hash: &'a str,
    pub binaries: &'a Binaries,
    pub user: Option<&'a PgUser>,
    pub phase: PhaseName,
}

fn step_error(phase: PhaseName, kind: ErrorKind, message: String) -> StepError {
    StepError::new(phase, StepName::ApplySpec, kind, message)
}

fn postgres_error(phase: PhaseName, what: &str, e: &postgres::Error) -> StepError {
    let message = super::error::describe(e);
    step_error(phase, ErrorKind::Postgres, format!("{what}: {message}"))
}

/// Writes `target.conf` as `postgresql.conf` (if it differs), has Postgres check it, reloads,
/// and waits until `compute_ctl.spec_hash` reads back as `target.spec_hash`. A file Postgres
/// refuses is replaced by the previous one before this returns, so Postgres keeps its
/// previous configuration.
pub fn apply(
    client: &mut postgres::Client,
    target: &SettingsTarget<'_>,
    cancel: &CancelToken,
) -> Result<SettingsOutcome, StepError> {
    let phase = target.phase;
    let path = target.pgdata.join("postgresql.conf");
    let previous = std::fs::read_to_string(&path).map_err(|e| {
        step_error(
            phase,
            ErrorKind::Io,
            format!("cannot read {}: {e}", path.display()),
        )
    })?;
    let mut outcome = SettingsOutcome::default();
    let written = previous != target.conf;
    if written {
        write_conf(&path, target.conf, target.user, phase)?;
        crate::failpoint!("settings.written");
    }
    // The file is the target's but Postgres does not run it: a run that wrote it crashed
    // before its reload (an adopted postmaster). Checked and reloaded like a new file.
    if written || spec_hash_seen(client, phase)? != target.spec_hash {
        if let Err(refused) = refused_settings(client, target, phase) {
            if written {
                write_conf(&path, &previous, target.user, phase)?;
            }
            return Err(refused);
        }
        client
            .simple_query("SELECT pg_reload_conf()")
            .map_err(|e| postgres_error(phase, "cannot reload the configuration", &e))?;
        outcome.reloaded = true;
    }
    confirm_hash(client, target.spec_hash, phase, cancel)?;
    outcome.pending_restart = pending_restart(client, phase)?;
    Ok(outcome)
}

fn write_conf(
    path: &Path,
    text: &str,
    user: Option<&PgUser>,
    phase: PhaseName,
) -> Result<(), StepError> {
    write_atomic_owned(
        path,
        text.as_bytes(),
        user.map(PgUser::ids),
        Persistence::Rebuilt,
    )
    .map_err(|e| {
        let message = format!("cannot write {}: {e}", path.display());
        step_error(phase, ErrorKind::Io, message)
    })
}

/// Postgres's verdict on the file as written. `pg_file_settings` marks every entry it would
/// not apply, but a changed restart-only setting (`shared_buffers`) gets the same mark as an
/// invalid value; Postgres reading the file at start-up tells them apart (`postgres -C` fails
/// on any invalid entry), and gives its own reason for each refusal.
fn refused_settings(
    client: &mut postgres::Client,
    target: &SettingsTarget<'_>,
    phase: PhaseName,
) -> Result<(), StepError> {
    let rows = client
        .query(
            "SELECT name, coalesce(setting, ''), error FROM pg_file_settings WHERE error IS NOT NULL ORDER BY seqno",
            &[],
        )
        .map_err(|e| postgres_error(phase, "cannot check the new configuration", &e))?;
    let Some(first) = rows.first() else {
        return Ok(());
    };
    let first_name: String = first.get(0);
    let reasons = match postgres_reads_file(target, &first_name) {
        // Only restart-only changes: `pending_restart` reports them after the reload.
        Ok(()) => return Ok(()),
        Err(reasons) => reasons,
    };
    let mut refused = Vec::new();
    for row in rows {
        let name: String = row.get(0);
        let value: String = row.get(1);
        let error: String = row.get(2);
        let said: Vec<&str> = reasons
            .iter()
            .filter(|r| r.contains(&format!("\"{name}\"")))
            .map(String::as_str)
            .collect();
        match said.is_empty() {
            // Postgres named other entries: this one is only waiting for a restart.
            true if !reasons.is_empty() && error == "setting could not be applied" => {}
            true => refused.push(format!("setting {name} = {value:?} refused: {error}")),
            false => refused.push(format!(
                "setting {name} = {value:?} refused: {}",
                said.join("; ")
            )),
        }
    }
    if refused.is_empty() {
        refused = reasons;
    }
    Err(step_error(
        phase,
        ErrorKind::ConfigRefused,
        format!(
            "{}; the previous postgresql.conf was put back and Postgres keeps its configuration",
            refused.join("; ")
        ),
    ))
}

/// Has Postgres read the file on disk as it would at start-up (`postgres -C name`): `Ok` if it
/// accepts every entry, else its own messages.
fn postgres_reads_file(target: &SettingsTarget<'_>, name: &str) -> Result<(), Vec<String>> {
    let mut command = Command::new(&target.binaries.postgres);
    // Verbose: the SQLSTATE comes with each message (a LOCATION line too, which is dropped).
    command
        .arg("-D")
        .arg(target.pgdata)
        .arg("-C")
        .arg(name)
        .arg("-c")
        .arg("log_error_verbosity=verbose");
    clean_env(&mut command);
    run_as(target.user, &mut command);
    let finished = match crate::subprocess::run(&mut command, &CancelToken::new(), |_| {}) {
        Ok(finished) => finished,
        Err(e) => return Err(vec![e.to_string()]),
    };
    if finished.success() {
        return Ok(());
    }
    let stderr = finished.stderr;
    Err(super::error::parse_log(stderr.lines())
        .into_iter()
        .filter(|entry| !entry.error.message.starts_with("configuration file"))
        .map(|entry| entry.error.to_string())
        .collect())
}

/// The spec hash this session's Postgres runs (empty when none).
fn spec_hash_seen(client: &mut postgres::Client, phase: PhaseName) -> Result<String, StepError> {
    let rows = client
        .query("SELECT current_setting($1, true)", &[&SPEC_HASH_SETTING])
        .map_err(|e| postgres_error(phase, "cannot read back the spec hash", &e))?;
    Ok(rows
        .first()
        .and_then(|r| r.get::<_, Option<String>>(0))
        .unwrap_or_default())
}

/// Waits until this session sees the new spec hash: each query starts by processing a pending
/// reload, so a read-back that matches proves the reload reached the backends.
fn confirm_hash(
    client: &mut postgres::Client,
    expected: &str,
    phase: PhaseName,
    cancel: &CancelToken,
) -> Result<(), StepError> {
    let started = Instant::now();
    let seen = loop {
        let seen = spec_hash_seen(client, phase)?;
        if seen == expected {
            return Ok(());
        }
        if started.elapsed() > RELOAD_CONFIRM_TIMEOUT {
            break seen;
        }
        if !cancel.sleep(Duration::from_millis(1)) {
            return Err(step_error(
                phase,
                ErrorKind::Cancelled,
                "configuration cancelled".into(),
            ));
        }
    };
    Err(step_error(
        phase,
        ErrorKind::Timeout,
        format!("postgres did not load the new configuration within {RELOAD_CONFIRM_TIMEOUT:?}: {SPEC_HASH_SETTING} reads {seen:?}, expected {expected:?}"),
    ))
}

/// Settings changed in the file that take effect only after a restart.
fn pending_restart(
    client: &mut postgres::Client,
    phase: PhaseName,
) -> Result<Vec<PendingRestart>, StepError> {
    let rows = client
        .query(
            "SELECT s.name, current_setting(s.name), coalesce(f.setting, '') \
             FROM pg_settings s \
             LEFT JOIN LATERAL (SELECT setting FROM pg_file_settings f WHERE f.name = s.name \
                                ORDER BY seqno DESC LIMIT 1) f ON true \
             WHERE s.pending_restart ORDER BY s.name",
            &[],
        )
        .map_err(|e| postgres_error(phase, "cannot read pending restarts", &e))?;
    Ok(rows
        .iter()
        .map(|row| PendingRestart {
            name: row.get(0),
            old: row.get(1),
            new: row.get(2),
        })
        .collect())
}
