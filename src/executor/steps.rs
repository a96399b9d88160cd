//! Each worker step's I/O, dispatched from `Step`.

use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex};

use serde_json::json;
use states::{ErrorKind, Lsn, PhaseName, ShutdownMode, Step, StepError, StepName, StepOutput};

use crate::input::{Input, StepExtra};
use crate::pgdata;
use crate::postgres::process::{self, Postmaster, StartRequest};
use crate::postgres::settings::{self, SettingsTarget};
use crate::step_env::StepCtx;
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
        Step::StopPostgres { mode, .. } => stop_postgres(ctx, postmaster, *mode),
        Step::FetchSpec { .. } => return fetch_spec(ctx),
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

/// `init_pgdata`: wipe only what is absent, empty or ours; stop an orphan postmaster first.
fn init_pgdata(ctx: &StepCtx<'_>) -> StepResult {
    const PHASE: PhaseName = PhaseName::Init;
    const STEP: StepName = StepName::InitPgdata;
    let env = ctx.env;
    let kind = pgdata::check_wipeable(&env.pgdata, &env.state_dir)
        .map_err(|e| e.to_step_error(PHASE, STEP))?;
    let orphan = match kind {
        pgdata::PgdataKind::Own(_) => process::stop_orphan(&env.pgdata)
            .map_err(|e| StepError::new(PHASE, STEP, ErrorKind::Postgres, format!("{e:#}")))?,
        // `check_wipeable` answered Foreign as an error already.
        pgdata::PgdataKind::Absent | pgdata::PgdataKind::Empty | pgdata::PgdataKind::Foreign(_) => {
            None
        }
    };
    // Locked before anything in it is touched: an absent PGDATA is created empty first.
    std::fs::create_dir_all(&env.pgdata).map_err(|e| {
        let why = anyhow::anyhow!("cannot create PGDATA {}: {e}", env.pgdata.display());
        io_error(PHASE, STEP, &why)
    })?;
    pgdata::lock_created(&env.pgdata)
        .map_err(|e| StepError::new(PHASE, STEP, ErrorKind::PgdataUnsafe, format!("{e:#}")))?;
    pgdata::claim(&env.state_dir, &env.pgdata).map_err(|e| io_error(PHASE, STEP, &e))?;
    crate::failpoint!("pgdata.claimed");
    pgdata::wipe_and_recreate(&env.pgdata, env.pg_user.as_ref())
        .map_err(|e| io_error(PHASE, STEP, &e))?;
    Ok((
        StepOutput::PgdataReady,
        json!({ "pgdata": env.pgdata, "found": kind.to_string(), "orphan_postmaster_stopped": orphan }),
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
/// report reached the driver, so the driver learns of the postmaster before of its death).
fn exit_reporter(
    inbox: &SyncSender<Input>,
) -> (
    impl FnOnce(u32, states::ExitStatus) + Send + 'static,
    Box<dyn FnOnce() + Send>,
) {
    let released = Arc::new((Mutex::new(false), Condvar::new()));
    let wait_for = released.clone();
    let inbox = inbox.clone();
    let on_exit = move |pid, status| {
        let (flag, cv) = &*wait_for;
        let mut done = lock(flag);
        while !*done {
            done = cv.wait(done).unwrap_or_else(|p| p.into_inner());
        }
        drop(done);
        let _ = inbox.send(Input::PostmasterExited { pid, status });
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
    let (on_exit, release) = exit_reporter(inbox);
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

    let (on_exit, release) = exit_reporter(inbox);
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

/// The work of `apply_spec`: its journal detail and the settings that wait for a restart.
fn apply_spec_parts(
    ctx: &StepCtx<'_>,
    phase: PhaseName,
) -> Result<(serde_json::Value, Vec<settings::PendingRestart>), StepError> {
    const STEP: StepName = StepName::ApplySpec;
    let env = ctx.env;
    let spec = ctx.spec(phase, STEP)?;
    let postgres_error = |what: &str, e: postgres::Error| {
        StepError::new(phase, STEP, ErrorKind::Postgres, format!("{what}: {e}"))
    };
    let mut client = env
        .admin
        .connect(spec.port(), None)
        .map_err(|e| postgres_error("cannot connect as the admin role", e))?;
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
    } else if !spec.spec.mode.is_read_write() {
        json!({ "skipped": format!("a {} compute is read-only: roles and databases come from its storage", spec.spec.mode.as_str()) })
    } else {
        let config = env.admin.config(spec.port(), None);
        let report = crate::postgres::reconcile_on(client, &config, &spec.spec, env.admin.role())
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
