//! The embedded default: no safekeepers, no upstream; PGDATA is a fresh `initdb`, so the data
//! is ephemeral (gone at the next start).

use std::path::Path;
use std::process::Command;

use serde_json::json;
use states::{ErrorKind, Lsn, PhaseName, StepError, StepName};

use super::{StorageBackend, Synced};
use crate::pg_user::run_as;
use crate::postgres::process::clean_env;
use crate::spec::ParsedSpec;
use crate::step_env::{StepCtx, StepEnv};
use crate::subprocess::{self, RunError};

/// `initdb`.
#[derive(Debug)]
pub struct Embedded;

impl StorageBackend for Embedded {
    fn sync_safekeepers(
        &self,
        _ctx: &StepCtx<'_>,
        _spec: &ParsedSpec,
    ) -> Result<Synced, StepError> {
        Ok(Synced {
            lsn: None,
            detail: json!({ "skipped": "the spec names no safekeepers and no upstream: the embedded default starts from a fresh initdb" }),
        })
    }

    fn fetch_basebackup(
        &self,
        ctx: &StepCtx<'_>,
        _spec: &ParsedSpec,
        _lsn: Option<Lsn>,
    ) -> Result<serde_json::Value, StepError> {
        initdb(
            ctx,
            &ctx.env.pgdata,
            PhaseName::Basebackup,
            StepName::FetchBasebackup,
        )
    }

    fn settings(&self, _env: &StepEnv, spec: &ParsedSpec) -> Vec<(String, String)> {
        ephemeral_settings(spec)
    }

    fn prepare_start(&self, _env: &StepEnv, _spec: &ParsedSpec) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The settings the embedded default runs with unless the spec names them: its PGDATA is a
/// fresh `initdb` on every start, so nothing in it outlives the process run, and making it
/// durable against a crash of the machine buys nothing (after one, the next start wipes it).
/// A crash of Postgres alone loses nothing with these: its writes are in the kernel's page
/// cache, and crash recovery replays the WAL from there.
///
/// - `fsync = off`: no flush to disk at commit or checkpoint (a `CREATE DATABASE` drops from
///   ~100 ms to ~15 ms on this machine's disk, see README, "The embedded default's settings").
///
/// `synchronous_commit` and `full_page_writes` stay on: with `fsync` off they cost little,
/// and turning them off could lose commits or leave torn pages when Postgres alone crashes.
pub const EPHEMERAL_SETTINGS: [(&str, &str); 1] = [("fsync", "off")];

fn ephemeral_settings(spec: &ParsedSpec) -> Vec<(String, String)> {
    EPHEMERAL_SETTINGS
        .iter()
        // The spec's own value always wins.
        .filter(|(name, _)| spec.spec.cluster.setting(name).is_none())
        .map(|(name, value)| (name.to_string(), value.to_string()))
        .collect()
}

/// Runs `initdb` into the empty directory `dir` (PGDATA, or the staging directory of
/// `--prepare`), as the Postgres user, cancellable.
pub fn initdb(
    ctx: &StepCtx<'_>,
    dir: &Path,
    phase: PhaseName,
    step: StepName,
) -> Result<serde_json::Value, StepError> {
    let env = ctx.env;
    {
        let initdb = env.binaries.tool("initdb");
        let mut command = Command::new(&initdb);
        command
            .arg("-D")
            .arg(dir)
            .arg("-U")
            .arg(env.admin.role())
            // pg_hba.conf is written from the spec before the start.
            .args(["--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"])
            // PGDATA is rebuilt on every start: syncing it to disk protects nothing.
            .arg("--no-sync")
            .arg("--no-instructions")
            .current_dir(dir);
        clean_env(&mut command);
        run_as(env.pg_user.as_ref(), &mut command);
        // An initdb that outlived a killed compute_ctl would go on writing into a directory
        // the next run empties: it dies with compute_ctl (SIGKILL: on SIGTERM initdb would
        // clean its directory up, racing the next run; its `postgres --boot` children end
        // with their input pipe).
        subprocess::die_with_parent(&mut command, libc::SIGKILL);
        let finished = subprocess::run(&mut command, ctx.cancel, |_| {}).map_err(|e| match e {
            RunError::Cancelled { .. } => {
                StepError::new(phase, step, ErrorKind::Cancelled, e.to_string())
            }
            RunError::Spawn { .. } => StepError::new(phase, step, ErrorKind::Io, e.to_string()),
        })?;
        if !finished.success() {
            return Err(StepError::new(
                phase,
                step,
                ErrorKind::Io,
                format!(
                    "{} failed with {}: {}",
                    initdb.display(),
                    finished.status,
                    finished.tail(5)
                ),
            ));
        }
        Ok(json!({
            "storage": "embedded",
            "initdb_ms": finished.elapsed.as_millis() as u64,
            "superuser": env.admin.role(),
        }))
    }
}
