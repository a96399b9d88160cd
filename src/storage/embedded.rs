//! The embedded default: no safekeepers, no upstream; PGDATA is a fresh `initdb`, so the data
//! is ephemeral (gone at the next start).

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
        const PHASE: PhaseName = PhaseName::Basebackup;
        const STEP: StepName = StepName::FetchBasebackup;
        let env = ctx.env;
        let initdb = env.binaries.tool("initdb");
        let mut command = Command::new(&initdb);
        command
            .arg("-D")
            .arg(&env.pgdata)
            .arg("-U")
            .arg(env.admin.role())
            // pg_hba.conf is written from the spec before the start.
            .args(["--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8"])
            // PGDATA is rebuilt on every start: syncing it to disk protects nothing.
            .arg("--no-sync")
            .arg("--no-instructions")
            .current_dir(&env.pgdata);
        clean_env(&mut command);
        run_as(env.pg_user.as_ref(), &mut command);
        // A killed compute_ctl takes its initdb along: the next start wipes PGDATA, and an
        // orphaned initdb would go on writing into it.
        subprocess::die_with_parent(&mut command);
        let finished = subprocess::run(&mut command, ctx.cancel, |_| {}).map_err(|e| match e {
            RunError::Cancelled { .. } => {
                StepError::new(PHASE, STEP, ErrorKind::Cancelled, e.to_string())
            }
            RunError::Spawn { .. } => StepError::new(PHASE, STEP, ErrorKind::Io, e.to_string()),
        })?;
        if !finished.success() {
            return Err(StepError::new(
                PHASE,
                STEP,
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

    fn settings(&self, _env: &StepEnv, _spec: &ParsedSpec) -> Vec<(String, String)> {
        Vec::new()
    }

    fn prepare_start(&self, _env: &StepEnv, _spec: &ParsedSpec) -> anyhow::Result<()> {
        Ok(())
    }
}
