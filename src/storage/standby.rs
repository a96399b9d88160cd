//! A standby's parameters raised to its primary's: Postgres refuses to run a hot standby
//! whose `max_connections`, `max_worker_processes`, `max_wal_senders`,
//! `max_prepared_transactions` or `max_locks_per_transaction` is below the primary's
//! ("recovery aborted because of insufficient parameter settings"), as Patroni knows and
//! handles. After the base backup, the copy's control file (`pg_controldata`) holds the
//! primary's values; each of the five is written as at least that value, and the journal
//! says what the spec asked and what was used.
//!
//! The values are kept in a file in PGDATA (rebuilt with it on every start), so that
//! `postgresql.conf` renders the same at start and at every reconfiguration: a raised value
//! is never a pending restart. A `Primary` branch keeps the spec's values (its recovery from
//! the backup checks none of them).

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::postgres::process::Binaries;
use crate::spec::ComputeSpec;
use crate::step_env::StepEnv;
use crate::sync::CancelToken;

/// The file in PGDATA that holds what `raise` decided.
pub const FILE: &str = "compute_ctl.standby_settings.json";

/// Each setting, its line in `pg_controldata`'s output (`LC_ALL=C`), and Postgres's default
/// (the same in PostgreSQL 12 to 17), which applies when the spec leaves the setting out.
const SETTINGS: [(&str, &str, i64); 5] = [
    ("max_connections", "max_connections setting:", 100),
    ("max_worker_processes", "max_worker_processes setting:", 8),
    ("max_wal_senders", "max_wal_senders setting:", 10),
    (
        "max_prepared_transactions",
        "max_prepared_xacts setting:",
        0,
    ),
    (
        "max_locks_per_transaction",
        "max_locks_per_xact setting:",
        64,
    ),
];

/// One of the five settings: what the spec asked, what the primary has, what is used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StandbySetting {
    pub name: String,
    /// The spec's value (`cluster.settings`, else `cluster.postgresql_conf`); `None` when it
    /// leaves the setting at Postgres's default.
    pub spec: Option<String>,
    /// The primary's value, from the copy's control file.
    pub primary: i64,
    /// What the standby runs with: the spec's value (or the default) when it is at least the
    /// primary's, else the primary's.
    pub used: i64,
    /// Whether `used` differs from what the spec alone gives (it is then written to
    /// `postgresql.conf` after the spec's settings).
    pub raised: bool,
}

/// Reads the primary's values from the copy in `pgdata`, decides each setting, writes them to
/// [`FILE`] and returns them for the journal.
pub fn raise(
    env: &StepEnv,
    spec: &ComputeSpec,
    pgdata: &Path,
    cancel: &CancelToken,
) -> anyhow::Result<Vec<StandbySetting>> {
    let control = controldata(&env.binaries, pgdata, cancel)?;
    let decided = decide(spec, &control)?;
    let json = serde_json::to_vec_pretty(&decided).context("cannot encode standby settings")?;
    super::write_pgdata_file(env, FILE, &json)?;
    Ok(decided)
}

/// The settings [`raise`] wrote for this PGDATA, as `postgresql.conf` lines: only those that
/// were raised. None when PGDATA has no such file (a primary, or before the base backup).
pub fn settings(pgdata: &Path) -> Vec<(String, String)> {
    let path = pgdata.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            log::error!(
                "cannot read {}: {e}; the standby settings are left out",
                path.display()
            );
            return Vec::new();
        }
    };
    match serde_json::from_slice::<Vec<StandbySetting>>(&bytes) {
        Ok(decided) => decided
            .into_iter()
            .filter(|s| s.raised)
            .map(|s| (s.name, s.used.to_string()))
            .collect(),
        Err(e) => {
            log::error!(
                "{} does not parse: {e}; the standby settings are left out",
                path.display()
            );
            Vec::new()
        }
    }
}

/// `pg_controldata`'s output for `pgdata`.
pub(super) fn controldata(
    binaries: &Binaries,
    pgdata: &Path,
    cancel: &CancelToken,
) -> anyhow::Result<String> {
    let tool = binaries.tool("pg_controldata");
    let mut command = Command::new(&tool);
    command.arg(pgdata).env("LC_ALL", "C");
    let finished = crate::subprocess::run(&mut command, cancel, |_| {})
        .with_context(|| format!("cannot run {}", tool.display()))?;
    if !finished.success() {
        bail!(
            "{} {} failed with {}: {}",
            tool.display(),
            pgdata.display(),
            finished.status,
            finished.tail(3)
        );
    }
    Ok(finished.stdout)
}

/// Each of the five settings decided from the spec and the control file's text.
fn decide(spec: &ComputeSpec, control: &str) -> anyhow::Result<Vec<StandbySetting>> {
    let mut decided = Vec::new();
    for (name, label, default) in SETTINGS {
        let primary: i64 = control
            .lines()
            .find_map(|line| line.strip_prefix(label))
            .map(str::trim)
            .with_context(|| format!("pg_controldata printed no {label:?} line"))?
            .parse()
            .with_context(|| format!("pg_controldata's {label:?} is not a number"))?;
        let asked = spec_value(spec, name);
        // A value Postgres itself would refuse is left to it (it names the parameter at
        // start-up); it is not compared.
        let own = match &asked {
            Some(text) => text.trim().parse::<i64>().ok(),
            None => Some(default),
        };
        let used = own.map_or(primary, |own| own.max(primary));
        decided.push(StandbySetting {
            name: name.to_string(),
            spec: asked,
            primary,
            used,
            raised: own != Some(used),
        });
    }
    Ok(decided)
}

/// The spec's value of `name`: the last of `cluster.settings`, else the last line of
/// `cluster.postgresql_conf` that sets it.
fn spec_value(spec: &ComputeSpec, name: &str) -> Option<String> {
    if let Some(value) = spec.cluster.setting(name) {
        return Some(value.to_string());
    }
    let text = spec.cluster.postgresql_conf.as_deref()?;
    text.lines()
        .filter_map(|line| {
            let line = line.split('#').next()?.trim();
            let (key, value) = line.split_once('=').or_else(|| line.split_once(' '))?;
            (key.trim() == name).then(|| value.trim().trim_matches('\'').to_string())
        })
        .next_back()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const CONTROL: &str = "pg_control version number:            1300\n\
        max_connections setting:              100\n\
        max_worker_processes setting:         8\n\
        max_wal_senders setting:              10\n\
        max_prepared_xacts setting:           5\n\
        max_locks_per_xact setting:           64\n";

    fn spec(settings: serde_json::Value, conf: Option<&str>) -> ComputeSpec {
        serde_json::from_value(serde_json::json!({
            "format_version": 1.0,
            "cluster": { "settings": settings, "postgresql_conf": conf },
        }))
        .unwrap()
    }

    #[test]
    fn raises_what_is_below_the_primary_and_keeps_the_rest() {
        let spec = spec(
            serde_json::json!([
                { "name": "max_connections", "value": "50", "vartype": "integer" },
                { "name": "max_wal_senders", "value": "20", "vartype": "integer" }
            ]),
            Some("max_locks_per_transaction = 32 # low\n"),
        );
        let decided = decide(&spec, CONTROL).unwrap();
        let by_name = |name: &str| decided.iter().find(|s| s.name == name).unwrap().clone();
        assert_eq!(
            by_name("max_connections"),
            StandbySetting {
                name: "max_connections".into(),
                spec: Some("50".into()),
                primary: 100,
                used: 100,
                raised: true,
            }
        );
        assert_eq!(by_name("max_wal_senders").used, 20);
        assert!(!by_name("max_wal_senders").raised);
        // The default (0) is below the primary's 5 prepared transactions.
        let prepared = by_name("max_prepared_transactions");
        assert_eq!(
            (prepared.spec, prepared.used, prepared.raised),
            (None, 5, true)
        );
        assert!(!by_name("max_worker_processes").raised);
        let locks = by_name("max_locks_per_transaction");
        assert_eq!((locks.spec.as_deref(), locks.used), (Some("32"), 64));
    }

    #[test]
    fn a_control_file_without_the_line_is_an_error() {
        let error = decide(&spec(serde_json::json!([]), None), "nothing\n").unwrap_err();
        assert!(
            error.to_string().contains("max_connections setting"),
            "{error}"
        );
    }
}
