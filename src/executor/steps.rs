//! Each worker step's I/O, dispatched from `Step`.

use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex};

use serde_json::json;
use states::{ErrorKind, Lsn, PhaseName, ShutdownMode, Step, StepError, StepName, StepOutput};

use crate::input::{Input, StepExtra};
use crate::pgdata;
use crate::postgres::process::{self, Postmaster, StartRequest};
use crate::postgres::settings::{self, SettingsTarget};
use crate::prepared;
use crate::step_env::{StepCtx, StepEnv};
use crate::storage;
use crate::sync::lock;

/// A step's end, before it is reported.
#[allow(missing_debug_implementations)]
pub struct Outcome {
    pub result: Result<StepOutput, StepError>,
    pub detail: Option<serde_json::Value>,
    pub extra: StepExtra,
    /// Run once the report is in the driver's inbox.
    pub after_report: Option<Box<dyn FnOnce() + Send>>,
}

impl Outcome {
    pub fn failed(error: StepError) -> Outcome {
        Outcome {
            result: Err(error),
            detail: None,
            extra: StepExtra::None,
            after_report: None,
        }
    }

    fn ok(output: StepOutput, detail: serde_json::Value) -> Outcome {
        Outcome::ok_with(output, detail, StepExtra::None)
    }

    pub fn ok_with(output: StepOutput, detail: serde_json::Value, extra: StepExtra) -> Outcome {
        Outcome {
            result: Ok(output),
            detail: Some(detail),
            extra,
            after_report: None,
        }
    }
}

fn io_error(phase: PhaseName, step: StepName, error: &anyhow::Error) -> StepError {
    StepError::new(phase, step, ErrorKind::Io, format!("{error:#}"))
}

/// Runs one worker step that `phase` asked for. `postmaster` is the one Postgres of this
/// process run; `inbox` hears of its exit.
pub fn run(
    ctx: &StepCtx<'_>,
    step: &Step,
    phase: PhaseName,
    postmaster: &Mutex<Option<Postmaster>>,
    inbox: &SyncSender<Input>,
) -> Outcome {
    let result = match step {
        Step::AdoptPostgres { .. } => return adopt_postgres(ctx, postmaster, inbox),
        Step::InitPgdata { .. } => init_pgdata(ctx),
        Step::SyncSafekeepers { .. } => sync_safekeepers(ctx),
        Step::FetchBasebackup { lsn, .. } => fetch_basebackup(ctx, *lsn),
        Step::SpawnPostgres { .. } => return spawn_postgres(ctx, postmaster, inbox),
        // The first apply and a reconfiguration are the same work: every part is idempotent.
        Step::ApplySpec { .. } => return apply_spec(ctx, phase),
        Step::PromotePostgres { wal_flush_lsn, .. } => {
            return promote_postgres(ctx, phase, *wal_flush_lsn)
        }
        Step::StopPostgres { mode, .. } => stop_postgres(ctx, postmaster, *mode),
        Step::FetchSpec { .. } => return fetch_spec(ctx),
        Step::PrepareCluster { .. } => prepare_cluster(ctx),
        Step::UsePrepared { preparation, .. } => use_prepared(ctx, *preparation),
        Step::CancelSteps | Step::StartSidecar | Step::StopSidecar | Step::Exit { .. } => {
            Err(StepError::new(
                phase,
                step.name(),
                ErrorKind::Internal,
                format!("{step} is not a worker step"),
            ))
        }
    };
    match result {
        Ok((output, detail)) => Outcome::ok(output, detail),
        Err(error) => Outcome::failed(error),
    }
}

type StepResult = Result<(StepOutput, serde_json::Value), StepError>;

/// `init_pgdata`: PGDATA checked, what an earlier run left stopped; an upstream Replica's data
/// kept when it may restart on it, else PGDATA wiped (only if absent, empty or ours).
fn init_pgdata(ctx: &StepCtx<'_>) -> StepResult {
    const STEP: StepName = StepName::InitPgdata;
    let (kind, orphan) = settle_pgdata(ctx, STEP)?;
    let env = ctx.env;
    // A Replica restarts on its own data when it can; the reason is journaled either way.
    let mut reuse = serde_json::Value::Null;
    if let (pgdata::PgdataKind::Own(_), Some(spec)) = (&kind, ctx.spec) {
        match storage::backend(spec).reusable(ctx, spec) {
            Ok(kept) => {
                return Ok((
                    StepOutput::PgdataReady,
                    json!({ "pgdata": env.pgdata, "found": kind.to_string(), "orphan_postmaster_stopped": orphan, "reuse": kept }),
                ))
            }
            Err(why) => reuse = json!({ "kept": false, "reason": why }),
        }
    }
    let mut detail = wipe_pgdata(ctx, STEP, &kind, orphan)?;
    detail["reuse"] = reuse;
    Ok((StepOutput::PgdataReady, detail))
}

/// What `init_pgdata` and `use_prepared` do to PGDATA: settled, then wiped. Returns the facts
/// for the journal.
fn empty_pgdata(ctx: &StepCtx<'_>, step: StepName) -> Result<serde_json::Value, StepError> {
    let (kind, orphan) = settle_pgdata(ctx, step)?;
    wipe_pgdata(ctx, step, &kind, orphan)
}

/// PGDATA checked (only absent, empty or ours goes on), and what an earlier run left working
/// in it stopped: its postmaster, then any Postgres tool (an orphaned initdb).
fn settle_pgdata(
    ctx: &StepCtx<'_>,
    step: StepName,
) -> Result<(pgdata::PgdataKind, Option<u32>), StepError> {
    const PHASE: PhaseName = PhaseName::Init;
    let env = ctx.env;
    let kind = pgdata::check_wipeable(&env.pgdata, &env.state_dir)
        .map_err(|e| e.to_step_error(PHASE, step))?;
    let orphan = match kind {
        pgdata::PgdataKind::Own(_) => process::stop_orphan(&env.pgdata)
            .and_then(|orphan| process::stop_strays(&env.binaries, &env.pgdata).map(|_| orphan))
            .map_err(|e| StepError::new(PHASE, step, ErrorKind::Postgres, format!("{e:#}")))?,
        // `check_wipeable` answered Foreign as an error already.
        pgdata::PgdataKind::Absent | pgdata::PgdataKind::Empty | pgdata::PgdataKind::Foreign(_) => {
            None
        }
    };
    Ok((kind, orphan))
}

/// PGDATA created (if absent), locked before anything in it is touched, claimed and emptied.
fn wipe_pgdata(
    ctx: &StepCtx<'_>,
    step: StepName,
    kind: &pgdata::PgdataKind,
    orphan: Option<u32>,
) -> Result<serde_json::Value, StepError> {
    const PHASE: PhaseName = PhaseName::Init;
    let env = ctx.env;
    std::fs::create_dir_all(&env.pgdata).map_err(|e| {
        let why = anyhow::anyhow!("cannot create PGDATA {}: {e}", env.pgdata.display());
        io_error(PHASE, step, &why)
    })?;
    pgdata::lock_created(&env.pgdata)
        .map_err(|e| StepError::new(PHASE, step, ErrorKind::PgdataUnsafe, format!("{e:#}")))?;
    pgdata::claim(&env.state_dir, &env.pgdata).map_err(|e| io_error(PHASE, step, &e))?;
    crate::failpoint!("pgdata.claimed");
    pgdata::wipe_and_recreate(&env.pgdata, env.pg_user.as_ref())
        .map_err(|e| io_error(PHASE, step, &e))?;
    Ok(
        json!({ "pgdata": env.pgdata, "found": kind.to_string(), "orphan_postmaster_stopped": orphan }),
    )
}

/// `prepare_cluster` (`--prepare`, in `empty`): `initdb` into the staging directory, which is
/// checked and claimed like PGDATA, then marked and stamped with this process run.
fn prepare_cluster(ctx: &StepCtx<'_>) -> StepResult {
    const PHASE: PhaseName = PhaseName::Empty;
    const STEP: StepName = StepName::PrepareCluster;
    let env = ctx.env;
    let staging = prepared::staging_dir(&env.pgdata);
    let found = prepared::make_ready(&staging, &env.state_dir, env.pg_user.as_ref())
        .map_err(|why| StepError::new(PHASE, STEP, ErrorKind::PgdataUnsafe, why))?;
    let initdb = storage::initdb(ctx, &staging, PHASE, STEP)?;
    if ctx.cancel.is_cancelled() {
        return Err(cancelled(PHASE, STEP));
    }
    prepared::seal(&staging, &env.state_dir, env.pg_user.as_ref())
        .map_err(|e| io_error(PHASE, STEP, &e))?;
    Ok((
        StepOutput::ClusterPrepared,
        json!({ "staging": staging, "found": found.to_string(), "initdb": initdb }),
    ))
}

/// `use_prepared`: a spec for the embedded default gets the cluster this run prepared, moved
/// into PGDATA (made ready as by `init_pgdata`); anything else discards it, saying why, and
/// the start goes on as usual (`init_pgdata`).
fn use_prepared(ctx: &StepCtx<'_>, preparation: states::PreparedStart) -> StepResult {
    const PHASE: PhaseName = PhaseName::Init;
    const STEP: StepName = StepName::UsePrepared;
    let env = ctx.env;
    let spec = ctx.spec(PHASE, STEP)?;
    let staging = prepared::staging_dir(&env.pgdata);
    let why_not = match &spec.storage {
        crate::spec::Storage::Embedded => prepared::unusable(&staging),
        other => Some(format!(
            "the spec's data comes from {} storage: a prepared cluster serves the embedded default only",
            other.kind()
        )),
    };
    let discard = |reason: String| -> StepResult {
        log::info!("discarding the prepared cluster: {reason}");
        // Only a directory that is ours (or absent, or empty) is removed.
        let removed = match pgdata::check_wipeable(&staging, &env.state_dir) {
            Ok(_) => prepared::remove(&staging)
                .map(|()| true)
                .map_err(|e| io_error(PHASE, STEP, &e))?,
            Err(e) => {
                log::warn!("the staging directory is kept: {e}");
                false
            }
        };
        Ok((
            StepOutput::PreparedDiscarded,
            json!({ "used": false, "preparation": preparation, "reason": reason, "staging": staging, "removed": removed }),
        ))
    };
    if let Some(reason) = why_not {
        return discard(reason);
    }
    let pgdata_detail = empty_pgdata(ctx, STEP)?;
    // A failed move (another file system: EXDEV) leaves PGDATA claimed: `init_pgdata`
    // empties it again.
    let moved = match prepared::move_into(&staging, &env.pgdata) {
        Ok(moved) => moved,
        Err(e) => return discard(format!("{e:#}")),
    };
    pgdata::mark(&env.pgdata, &env.state_dir, env.pg_user.as_ref())
        .map_err(|e| io_error(PHASE, STEP, &e))?;
    Ok((
        StepOutput::PreparedUsed,
        json!({ "used": true, "preparation": preparation, "staging": staging, "entries_moved": moved, "pgdata": pgdata_detail }),
    ))
}

fn sync_safekeepers(ctx: &StepCtx<'_>) -> StepResult {
    let spec = ctx.spec(PhaseName::SyncSafekeepers, StepName::SyncSafekeepers)?;
    let synced = storage::backend(spec).sync_safekeepers(ctx, spec)?;
    Ok((
        StepOutput::SafekeepersSynced { lsn: synced.lsn },
        synced.detail,
    ))
}

fn fetch_basebackup(ctx: &StepCtx<'_>, lsn: Option<Lsn>) -> StepResult {
    const PHASE: PhaseName = PhaseName::Basebackup;
    let spec = ctx.spec(PHASE, StepName::FetchBasebackup)?;
    let detail = storage::backend(spec).fetch_basebackup(ctx, spec, lsn)?;
    if ctx.cancel.is_cancelled() {
        return Err(cancelled(PHASE, StepName::FetchBasebackup));
    }
    pgdata::mark(
        &ctx.env.pgdata,
        &ctx.env.state_dir,
        ctx.env.pg_user.as_ref(),
    )
    .map_err(|e| io_error(PHASE, StepName::FetchBasebackup, &e))?;
    Ok((StepOutput::BasebackupDone, detail))
}

fn cancelled(phase: PhaseName, step: StepName) -> StepError {
    StepError::new(
        phase,
        step,
        ErrorKind::Cancelled,
        format!("{step} was cancelled"),
    )
}

/// The postmaster's exit, reported to `inbox` only once `release` ran (after the step's own
/// report reached the driver, so the driver learns of the postmaster before of its death),
/// with what pg_control of `env`'s PGDATA says of the shutdown.
fn exit_reporter(
    inbox: &SyncSender<Input>,
    env: &StepEnv,
) -> (
    impl FnOnce(u32, states::ExitStatus) + Send + 'static,
    Box<dyn FnOnce() + Send>,
) {
    let released = Arc::new((Mutex::new(false), Condvar::new()));
    let wait_for = released.clone();
    let inbox = inbox.clone();
    let binaries = env.binaries.clone();
    let pgdata = env.pgdata.clone();
    let on_exit = move |pid, status| {
        let shut_down = process::cluster_shut_down(&binaries, &pgdata);
        let (flag, cv) = &*wait_for;
        let mut done = lock(flag);
        while !*done {
            done = cv.wait(done).unwrap_or_else(|p| p.into_inner());
        }
        drop(done);
        let _ = inbox.send(Input::PostmasterExited {
            pid,
            status,
            shut_down,
        });
    };
    let release: Box<dyn FnOnce() + Send> = Box::new(move || {
        let (flag, cv) = &*released;
        *lock(flag) = true;
        cv.notify_all();
    });
    (on_exit, release)
}

/// `adopt_postgres`: the postmaster an earlier run left, if every check passes; else the
/// check that refused, and a fresh start follows.
fn adopt_postgres(
    ctx: &StepCtx<'_>,
    postmaster: &Mutex<Option<Postmaster>>,
    inbox: &SyncSender<Input>,
) -> Outcome {
    const PHASE: PhaseName = PhaseName::Init;
    const STEP: StepName = StepName::AdoptPostgres;
    let env = ctx.env;
    let spec = match ctx.spec(PHASE, STEP) {
        Ok(spec) => spec,
        Err(e) => return Outcome::failed(e),
    };
    let candidate = crate::postgres::adopt::Candidate {
        binaries: &env.binaries,
        pgdata: &env.pgdata,
        state_dir: &env.state_dir,
        probe: env.admin.config(spec.port(), None),
        spec_hash: &spec.hash,
    };
    let refused = |check: &str, reason: String| {
        log::info!("not adopting the earlier run's postgres ({check}): {reason}");
        Outcome::ok(
            StepOutput::NotAdopted,
            json!({ "adopted": false, "check": check, "reason": reason }),
        )
    };
    let pid = match crate::postgres::adopt::judge(&candidate) {
        crate::postgres::adopt::Verdict::Adopt { pid } => pid,
        crate::postgres::adopt::Verdict::Refuse { check, reason } => return refused(check, reason),
    };
    crate::failpoint!("adopt.judged");
    let (on_exit, release) = exit_reporter(inbox, env);
    match process::adopt(pid, on_exit) {
        Ok(adopted) => {
            *lock(postmaster) = Some(adopted);
            log::info!("adopted postgres (pid {pid}) serving spec {}", spec.hash);
            Outcome {
                result: Ok(StepOutput::PostgresAdopted { pid }),
                detail: Some(json!({
                    "adopted": true,
                    "pid": pid,
                    "spec_hash": spec.hash,
                    "reason": "the postmaster postmaster.pid names runs our binary in our PGDATA, which carries our marker, and serves the spec last applied",
                })),
                extra: StepExtra::None,
                after_report: Some(release),
            }
        }
        Err(e) => refused("pidfd", format!("cannot watch the postmaster {pid}: {e}")),
    }
}

/// `spawn_postgres`: config files from the spec, then the postmaster.
fn spawn_postgres(
    ctx: &StepCtx<'_>,
    postmaster: &Mutex<Option<Postmaster>>,
    inbox: &SyncSender<Input>,
) -> Outcome {
    const PHASE: PhaseName = PhaseName::Starting;
    const STEP: StepName = StepName::SpawnPostgres;
    let env = ctx.env;
    let spec = match ctx.spec(PHASE, STEP) {
        Ok(spec) => spec,
        Err(e) => return Outcome::failed(e),
    };
    if let Err(e) = storage::write_config_files(env, spec) {
        return Outcome::failed(StepError::new(PHASE, STEP, ErrorKind::Io, e.to_string()));
    }
    if let Err(e) = storage::backend(spec).prepare_start(env, spec) {
        return Outcome::failed(io_error(PHASE, STEP, &e));
    }

    let (on_exit, release) = exit_reporter(inbox, env);
    let request = StartRequest {
        binaries: &env.binaries,
        pgdata: &env.pgdata,
        user: env.pg_user.as_ref(),
        probe: env.admin.config(spec.port(), None),
        deadlines: env.deadlines,
    };
    let postmaster_slot = postmaster;
    let result = process::start(request, ctx.cancel, on_exit).map(|postmaster| {
        let pid = postmaster.pid();
        *lock(postmaster_slot) = Some(postmaster);
        pid
    });
    Outcome {
        detail: result
            .as_ref()
            .ok()
            .map(|pid| json!({ "pid": pid, "port": spec.port() })),
        result: result.map(|pid| StepOutput::PostgresStarted { pid }),
        extra: StepExtra::None,
        after_report: Some(release),
    }
}

/// `apply_spec`: settings (checked, reloaded, confirmed), then roles, databases and delta
/// operations, unless the compute is read-only or the spec says to skip them.
fn apply_spec(ctx: &StepCtx<'_>, phase: PhaseName) -> Outcome {
    match apply_spec_parts(ctx, phase) {
        Ok((detail, pending_restart)) => Outcome::ok_with(
            StepOutput::SpecApplied,
            detail,
            StepExtra::Applied { pending_restart },
        ),
        Err(error) => Outcome::failed(error),
    }
}

/// `promote_postgres`: `pg_promote` (after replay reached `wal_flush_lsn`), then the work of
/// `apply_spec`, which applies roles and databases now that Postgres is out of recovery.
fn promote_postgres(ctx: &StepCtx<'_>, phase: PhaseName, wal_flush_lsn: Option<Lsn>) -> Outcome {
    const STEP: StepName = StepName::PromotePostgres;
    let spec = match ctx.spec(phase, STEP) {
        Ok(spec) => spec,
        Err(e) => return Outcome::failed(e),
    };
    let promoted = ctx
        .env
        .admin
        .connect(spec.port(), None)
        .map_err(|e| {
            StepError::new(
                phase,
                STEP,
                ErrorKind::Postgres,
                format!(
                    "cannot connect as the admin role: {}",
                    crate::postgres::error::describe(&e)
                ),
            )
        })
        .and_then(|mut client| {
            crate::postgres::promote::promote(&mut client, wal_flush_lsn, ctx.cancel)
        });
    let promoted = match promoted {
        Ok(promoted) => promoted,
        Err(e) => return Outcome::failed(e),
    };
    match apply_spec_parts(ctx, phase) {
        Ok((detail, pending_restart)) => Outcome::ok_with(
            StepOutput::SpecApplied,
            json!({ "promotion": promoted, "apply": detail }),
            StepExtra::Applied { pending_restart },
        ),
        Err(error) => Outcome::failed(error),
    }
}

/// The work of `apply_spec`: its journal detail and the settings that wait for a restart.
fn apply_spec_parts(
    ctx: &StepCtx<'_>,
    phase: PhaseName,
) -> Result<(serde_json::Value, Vec<settings::PendingRestart>), StepError> {
    const STEP: StepName = StepName::ApplySpec;
    let env = ctx.env;
    let spec = ctx.spec(phase, STEP)?;
    let mut client = env.admin.connect(spec.port(), None).map_err(|e| {
        let message = env.admin.connect_error(spec.port(), &e);
        StepError::new(phase, STEP, ErrorKind::Postgres, message)
    })?;
    // A terminate interrupts the statement in flight (a CREATE DATABASE can take seconds); the
    // cancel request goes out from its own thread, since the hook runs on the driver's.
    let statement = client.cancel_token();
    let _interrupt = ctx.cancel.on_cancel(move || {
        std::thread::spawn(move || statement.cancel_query(postgres::NoTls));
    });
    let conf = storage::postgresql_conf(env, spec)
        .map_err(|e| StepError::new(phase, STEP, ErrorKind::ConfigRefused, e.to_string()))?;
    let target = SettingsTarget {
        pgdata: &env.pgdata,
        conf: &conf,
        spec_hash: &spec.hash,
        binaries: &env.binaries,
        user: env.pg_user.as_ref(),
        phase,
    };
    let settings = settings::apply(&mut client, &target, ctx.cancel)?;
    let catalog = if spec.spec.skip_pg_catalog_updates {
        json!({ "skipped": "the spec sets skip_pg_catalog_updates" })
    } else if !spec.spec.mode.is_read_write() && in_recovery(&mut client, phase)? {
        json!({ "skipped": format!("a {} compute is read-only: roles and databases come from its storage", spec.spec.mode.as_str()) })
    } else {
        let config = env.admin.config(spec.port(), None);
        // A promoted replica is a primary now: its roles and databases are applied as one's.
        let promoted;
        let declared = if spec.spec.mode.is_read_write() {
            &spec.spec
        } else {
            let mut as_primary = spec.spec.clone();
            as_primary.mode = crate::spec::ComputeMode::Primary;
            promoted = as_primary;
            &promoted
        };
        let report = crate::postgres::reconcile_on(
            client,
            &config,
            declared,
            env.admin.role(),
            env.admin.privileged_role(),
        )
        .map_err(|e| e.to_step_error(phase))?;
        json!({
            "statements_sent": report.statements_sent,
            "catalog_reads": report.catalog_reads,
            "summary": report.summary,
        })
    };
    let detail = json!({
        "spec_hash": spec.hash,
        "reloaded": settings.reloaded,
        "pending_restart": settings.pending_restart,
        "catalog": catalog,
    });
    Ok((detail, settings.pending_restart))
}

/// Whether Postgres is a standby: a `Replica` that was promoted is read-write, and gets its
/// roles and databases applied.
fn in_recovery(client: &mut postgres::Client, phase: PhaseName) -> Result<bool, StepError> {
    client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .map(|row| row.get(0))
        .map_err(|e| {
            StepError::new(
                phase,
                StepName::ApplySpec,
                ErrorKind::Postgres,
                format!(
                    "cannot ask whether postgres is in recovery: {}",
                    crate::postgres::error::describe(&e)
                ),
            )
        })
}

/// `stop_postgres`: stop the postmaster if one runs; report its last checkpoint LSN.
fn stop_postgres(
    ctx: &StepCtx<'_>,
    postmaster: &Mutex<Option<Postmaster>>,
    mode: ShutdownMode,
) -> StepResult {
    let postmaster = lock(postmaster).take();
    let Some(postmaster) = postmaster else {
        return Ok((
            StepOutput::PostgresStopped { lsn: None },
            json!({ "postgres": "not running" }),
        ));
    };
    let status = match postmaster.exit_status() {
        Some(status) => status,
        None => postmaster.stop(mode, ctx.env.fast_stop_timeout),
    };
    let lsn = process::checkpoint_lsn(&ctx.env.binaries, &ctx.env.pgdata);
    Ok((
        StepOutput::PostgresStopped { lsn },
        json!({ "pid": postmaster.pid(), "mode": mode.as_str(), "exit": status.to_string(), "lsn": lsn }),
    ))
}

/// `fetch_spec`: the control plane's answer; a spec it serves is admitted like any other, and
/// one that is not admitted is a retryable failure (the control plane may correct it).
fn fetch_spec(ctx: &StepCtx<'_>) -> Outcome {
    match crate::control_plane::fetch(ctx.env) {
        Ok(fetched) => {
            let detail = fetched.detail;
            match fetched.spec {
                None => Outcome::ok(StepOutput::SpecFetched { found: false }, detail),
                Some(spec) => Outcome::ok_with(
                    StepOutput::SpecFetched { found: true },
                    detail,
                    StepExtra::Fetched(Box::new(spec)),
                ),
            }
        }
        Err(error) => Outcome::failed(error),
    }
}
