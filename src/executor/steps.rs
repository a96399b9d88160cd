//! Each worker step's I/O, dispatched from `Step`.

use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Condvar, Mutex};

use serde_json::json;
use states::{ErrorKind, Lsn, PhaseName, ShutdownMode, Step, StepError, StepName, StepOutput};

use super::cancel::{lock, CancelToken};
use super::{Progress, StepEnv, StepExtra};
use crate::input::Input;
use crate::pgdata::{self, PgdataKind};
use crate::postgres::process::{self, Postmaster, StartRequest};
use crate::postgres::settings::{self, SettingsTarget};
use crate::spec::ParsedSpec;
use crate::storage;

/// What a step may use while it runs.
pub struct StepCtx<'a> {
    pub env: &'a StepEnv,
    /// The spec the step works with (`None` for `stop_postgres` and `fetch_spec`).
    pub spec: Option<&'a ParsedSpec>,
    pub cancel: &'a CancelToken,
    pub inbox: &'a SyncSender<Input>,
    pub postmaster: &'a Mutex<Option<Postmaster>>,
}

impl StepCtx<'_> {
    /// The spec, which every spec-bearing step is handed (a defect otherwise).
    pub fn spec(&self, phase: PhaseName, step: StepName) -> Result<&ParsedSpec, StepError> {
        self.spec.ok_or_else(|| {
            StepError::new(
                phase,
                step,
                ErrorKind::Internal,
                format!("{step} was handed no spec"),
            )
        })
    }

    /// Reports progress of a long step to `GET /state`.
    pub fn progress(&self, progress: Progress) {
        let _ = self.inbox.try_send(Input::Progress(progress));
    }
}

impl std::fmt::Debug for StepCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepCtx").finish_non_exhaustive()
    }
}

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

pub fn run(ctx: &StepCtx<'_>, step: &Step) -> Outcome {
    let result = match step {
        Step::InitPgdata { .. } => init_pgdata(ctx),
        Step::SyncSafekeepers { .. } => sync_safekeepers(ctx),
        Step::FetchBasebackup { lsn, .. } => fetch_basebackup(ctx, *lsn),
        Step::SpawnPostgres { .. } => return spawn_postgres(ctx),
        // The first apply and a reconfiguration are the same work: every part is idempotent.
        Step::ApplySpec { .. } => return apply_spec(ctx),
        Step::StopPostgres { mode, .. } => stop_postgres(ctx, *mode),
        Step::FetchSpec { .. } => return fetch_spec(ctx),
        Step::CancelSteps | Step::StartSidecar | Step::StopSidecar | Step::Exit { .. } => {
            Err(StepError::new(
                PhaseName::Terminating,
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
    let kind =
        pgdata::inspect(&env.pgdata, &env.state_dir).map_err(|e| io_error(PHASE, STEP, &e))?;
    if let PgdataKind::Foreign(why) = &kind {
        return Err(StepError::new(
            PHASE,
            STEP,
            ErrorKind::PgdataUnsafe,
            format!(
                "PGDATA {} is not safe to wipe: {why}; compute_ctl wipes only a directory that is absent, empty, or carries its marker file {}",
                env.pgdata.display(),
                pgdata::MARKER_FILE
            ),
        ));
    }
    let orphan = match kind {
        PgdataKind::Own(_) => process::stop_orphan(&env.pgdata)
            .map_err(|e| StepError::new(PHASE, STEP, ErrorKind::Postgres, format!("{e:#}")))?,
        PgdataKind::Absent | PgdataKind::Empty | PgdataKind::Foreign(_) => None,
    };
    pgdata::claim(&env.state_dir, &env.pgdata).map_err(|e| io_error(PHASE, STEP, &e))?;
    pgdata::wipe_and_recreate(&env.pgdata, env.pg_user.as_ref())
        .map_err(|e| io_error(PHASE, STEP, &e))?;
    let found = match &kind {
        PgdataKind::Absent => "absent".to_string(),
        PgdataKind::Empty => "empty".to_string(),
        PgdataKind::Own(why) => format!("compute_ctl's own: {why}"),
        PgdataKind::Foreign(why) => why.clone(),
    };
    Ok((
        StepOutput::PgdataReady,
        json!({ "pgdata": env.pgdata, "found": found, "orphan_postmaster_stopped": orphan }),
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

/// The `postgresql.conf` of a spec: the same text at start and on every apply, so an
/// unchanged spec reloads nothing.
pub fn postgresql_conf(
    env: &StepEnv,
    spec: &ParsedSpec,
) -> Result<String, crate::postgres::ConfigError> {
    let mut extra: Vec<(String, String)> = Vec::new();
    if spec
        .spec
        .cluster
        .setting("unix_socket_directories")
        .is_none()
    {
        extra.push((
            "unix_socket_directories".into(),
            env.pgdata.to_string_lossy().into_owned(),
        ));
    }
    extra.extend(storage::backend(spec).settings(env, spec));
    extra.push((settings::SPEC_HASH_SETTING.into(), spec.hash.clone()));
    let extra: Vec<(&str, String)> = extra.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    crate::postgres::config::render_postgresql_conf(&spec.spec, &extra)
}

/// `spawn_postgres`: config files from the spec, then the postmaster.
fn spawn_postgres(ctx: &StepCtx<'_>) -> Outcome {
    const PHASE: PhaseName = PhaseName::Starting;
    const STEP: StepName = StepName::SpawnPostgres;
    let env = ctx.env;
    let spec = match ctx.spec(PHASE, STEP) {
        Ok(spec) => spec,
        Err(e) => return Outcome::failed(e),
    };
    let files = postgresql_conf(env, spec).and_then(|conf| {
        let hba = crate::postgres::config::render_pg_hba(env.admin.role())?;
        crate::postgres::config::write_config_files(&env.pgdata, &conf, &hba)
    });
    if let Err(e) = files {
        return Outcome::failed(StepError::new(PHASE, STEP, ErrorKind::Io, e.to_string()));
    }
    if let Err(e) = storage::backend(spec).prepare_start(env, spec) {
        return Outcome::failed(io_error(PHASE, STEP, &e));
    }

    // The watch reports an exit only after this step's report reached the driver.
    let released = Arc::new((Mutex::new(false), Condvar::new()));
    let wait_for = released.clone();
    let inbox = ctx.inbox.clone();
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
    let request = StartRequest {
        binaries: &env.binaries,
        pgdata: &env.pgdata,
        user: env.pg_user.as_ref(),
        probe: env.admin.config(spec.port(), None),
        deadlines: env.deadlines,
    };
    let result = process::start(request, ctx.cancel, on_exit).map(|postmaster| {
        let pid = postmaster.pid();
        *lock(ctx.postmaster) = Some(postmaster);
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
fn apply_spec(ctx: &StepCtx<'_>) -> Outcome {
    match apply_spec_parts(ctx) {
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
) -> Result<(serde_json::Value, Vec<settings::PendingRestart>), StepError> {
    let phase = PhaseName::Configuring;
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
    let conf = postgresql_conf(env, spec)
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
fn stop_postgres(ctx: &StepCtx<'_>, mode: ShutdownMode) -> StepResult {
    let postmaster = lock(ctx.postmaster).take();
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

fn fetch_spec(ctx: &StepCtx<'_>) -> Outcome {
    crate::control_plane::fetch_step(ctx)
}
