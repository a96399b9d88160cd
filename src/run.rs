//! The run: from the command line to the driver loop. Everything that can be refused is
//! checked before anything is written, and each refusal has its documented exit code:
//! 2 bad command line, 3 bad spec file, 4 state directory locked, 5 journal damaged,
//! 6 PGDATA not safe to wipe; 1 for anything else (the journal could not be written).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use states::Policy;

use crate::cli::RunArgs;
use crate::clock::{rfc3339_ms, Clock};
use crate::driver::{Driver, DriverParts, Exit};
use crate::executor::{Executor, StepEnv};
use crate::http::{self, Api};
use crate::input::{Input, SignalKind, INBOX_CAPACITY};
use crate::journal::{
    FileJournal, JournalConfig, JournalError, JournalStore, RecordBody, StartRecord,
};
use crate::pg_user::PgUser;
use crate::pgdata::{self, PgdataKind};
use crate::postgres::connect::AdminConnection;
use crate::postgres::monitor::Monitor;
use crate::postgres::process::{Binaries, StartDeadlines};
use crate::replay::Replay;
use crate::spec::{ParsedSpec, SettingCatalog, SettingsCheck};
use crate::view::{Published, StartupTimes, StateView};

/// A refusal with its exit code.
#[derive(Debug)]
pub struct Refused {
    pub code: i32,
    pub message: String,
}

fn refuse(code: i32, message: impl Into<String>) -> Refused {
    Refused {
        code,
        message: message.into(),
    }
}

/// The exit code for a journal error: 4 locked, 5 damaged, 1 otherwise.
pub fn exit_code_of_journal_error(error: &JournalError) -> i32 {
    match error {
        JournalError::Locked { .. } => 4,
        JournalError::Damaged { .. } => 5,
        _ => 1,
    }
}

/// Runs compute_ctl; returns the process exit code.
pub fn run(args: RunArgs) -> i32 {
    crate::logging::init(args.log_format);
    match start(args) {
        Ok(code) => code,
        Err(refused) => {
            log::error!("{}", refused.message);
            refused.code
        }
    }
}

/// The state directory: `--state-dir`, or `<PGDATA>.state` beside PGDATA (never inside it:
/// PGDATA is wiped on every start).
fn state_dir_for(pgdata: &Path, flag: Option<&Path>) -> Result<PathBuf, Refused> {
    let state_dir = match flag {
        Some(dir) => dir.to_path_buf(),
        None => {
            let mut name = pgdata.file_name().unwrap_or_default().to_os_string();
            name.push(".state");
            pgdata.with_file_name(name)
        }
    };
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    if absolute(&state_dir).starts_with(absolute(pgdata)) {
        return Err(refuse(
            2,
            format!(
                "--state-dir {} is inside PGDATA {}, which is wiped on every start",
                state_dir.display(),
                pgdata.display()
            ),
        ));
    }
    Ok(state_dir)
}

fn start(args: RunArgs) -> Result<i32, Refused> {
    let clock = Clock::start();
    let Some(pgdata) = args.pgdata.clone() else {
        return Err(refuse(2, "-D/--pgdata is required"));
    };
    let state_dir = state_dir_for(&pgdata, args.state_dir.as_deref())?;
    let binaries =
        Binaries::locate(args.pgbin.as_deref()).map_err(|e| refuse(2, format!("{e:#}")))?;
    let admin = AdminConnection::parse(&args.connstr).map_err(|e| refuse(2, format!("{e:#}")))?;
    let pg_user = PgUser::for_root(&args.pg_user).map_err(|e| refuse(2, format!("{e:#}")))?;
    if let Some(user) = &pg_user {
        pgdata::check_reachable(&pgdata, user, &binaries.postgres)
            .map_err(|e| refuse(2, format!("{e:#}")))?;
    }
    let control_plane = match (&args.compute_id, &args.control_plane_uri) {
        (Some(id), Some(uri)) => Some(crate::control_plane::ControlPlane {
            uri: uri.clone(),
            compute_id: id.clone(),
            token: std::env::var("NEON_CONTROL_PLANE_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        }),
        (None, None) => None,
        _ => {
            return Err(refuse(
                2,
                "-i/--compute-id and -p/--control-plane-uri go together",
            ))
        }
    };
    let auth = match &args.auth_public_key {
        Some(path) => Some(
            crate::auth::Verifier::from_pem_file(path).map_err(|e| refuse(2, format!("{e:#}")))?,
        ),
        None => None,
    };
    if args.monitor_interval.is_zero() {
        return Err(refuse(2, "--monitor-interval must be longer than 0"));
    }
    let catalog = Arc::new(
        SettingCatalog::load(&binaries.postgres).map_err(|e| refuse(2, format!("{e:#}")))?,
    );

    // The spec file: bad input changes nothing.
    let from_file = match &args.spec {
        Some(path) => {
            let spec = crate::spec::load_file(path)
                .map_err(|errors| refuse(3, format!("-S {}: {errors}", path.display())))?;
            let errors = catalog.check_spec(&spec, admin.role());
            if !errors.is_empty() {
                let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
                return Err(refuse(
                    3,
                    format!("-S {}: {}", path.display(), listed.join("; ")),
                ));
            }
            Some(Arc::new(spec))
        }
        None => None,
    };

    // A spec file means a start: someone else's PGDATA is refused before the state directory
    // (LOCK, journal/) is created beside it. Without -S, only the journal can say whether a
    // start follows: checked below, once it is read.
    if from_file.is_some() {
        refuse_foreign_pgdata(&pgdata, &state_dir)?;
    }
    crate::durable::create_dir_all_durable(&state_dir).map_err(|e| {
        refuse(
            1,
            format!(
                "cannot create the state directory {}: {e}",
                state_dir.display()
            ),
        )
    })?;
    let mut replay = Replay::default();
    let (mut journal, opened) = FileJournal::open(&state_dir, JournalConfig::default(), |record| {
        replay.visit(record)
    })
    .map_err(|e| refuse(exit_code_of_journal_error(&e), e.to_string()))?;
    if let Some(torn) = &opened.torn_tail {
        log::warn!(
            "the journal's last record was torn ({}): {} bytes cut from {} at offset {}",
            torn.reason,
            torn.bytes,
            torn.segment,
            torn.offset
        );
    }
    let replayed = match &replay.desired {
        Some(desired) => {
            let hex = desired.hash.trim_start_matches("sha256:");
            let bytes = crate::journal::load_spec(&state_dir, hex).map_err(|e| {
                refuse(
                    5,
                    format!(
                        "the journal's desired spec {} cannot be read: {e}",
                        desired.hash
                    ),
                )
            })?;
            let spec = crate::spec::parse(&bytes).map_err(|errors| {
                let listed: Vec<String> = errors.iter().map(ToString::to_string).collect();
                refuse(
                    5,
                    format!(
                        "the journal's desired spec {} is no longer valid: {}",
                        desired.hash,
                        listed.join("; ")
                    ),
                )
            })?;
            Some((desired.clone(), Arc::new(spec)))
        }
        None => None,
    };

    // A compute that will start must not wipe someone else's directory.
    if from_file.is_some() || replayed.is_some() {
        refuse_foreign_pgdata(&pgdata, &state_dir)?;
    }

    let (inbox_tx, inbox) = mpsc::sync_channel::<Input>(INBOX_CAPACITY);
    let start_time = rfc3339_ms(clock.now().wall_ms);
    let published = Published::new(
        initial_view(&journal, &start_time),
        clock,
        args.monitor_interval,
    );
    let check_catalog = catalog.clone();
    let admin_role = admin.role().to_string();
    let settings_check: SettingsCheck =
        Arc::new(move |spec: &ParsedSpec| check_catalog.check_spec(spec, &admin_role));
    let api = Api::new(
        published.clone(),
        inbox_tx.clone(),
        state_dir.clone(),
        settings_check.clone(),
        auth,
    );
    let server = http::bind(&args.http_addr).map_err(|e| refuse(1, format!("{e:#}")))?;

    let start_record = RecordBody::Start(StartRecord {
        format: crate::journal::FORMAT_VERSION,
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        pgdata: pgdata.display().to_string(),
        torn_tail: opened.torn_tail.clone(),
        unfinished_steps: replay.unfinished_steps(),
    });
    let now = clock.now();
    journal
        .append(vec![start_record], now.mono_ms, Clock::wall_time(now))
        .map_err(|e| refuse(1, format!("the journal cannot be written: {e}")))?;
    // Answer only now: every view served includes the start record.
    published.publish(initial_view(&journal, &start_time));
    http::serve(server, api.clone()).map_err(|e| refuse(1, format!("{e:#}")))?;
    log::info!(
        "compute_ctl {} started: epoch {}, PGDATA {}, state directory {}",
        env!("CARGO_PKG_VERSION"),
        journal.epoch(),
        pgdata.display(),
        state_dir.display()
    );

    let sidecar_path = args
        .vm_monitor
        .clone()
        .or_else(|| Some(PathBuf::from(crate::sidecar::DEFAULT_PATH)).filter(|p| p.is_file()));
    let sidecar = sidecar_path.map(|path| crate::sidecar::Sidecar::new(path, inbox_tx.clone()));
    let env = StepEnv {
        pgdata: pgdata.clone(),
        state_dir: state_dir.clone(),
        binaries,
        pg_user,
        admin,
        deadlines: StartDeadlines::default(),
        fast_stop_timeout: std::time::Duration::from_secs(60),
        control_plane: control_plane.clone(),
    };
    let executor =
        Executor::start(env, inbox_tx.clone(), sidecar).map_err(|e| refuse(1, format!("{e:#}")))?;
    let monitor = Monitor::start(args.monitor_interval, inbox_tx.clone(), clock)
        .map_err(|e| refuse(1, format!("{e:#}")))?;
    forward_signals(inbox_tx).map_err(|e| refuse(1, format!("cannot handle signals: {e}")))?;
    if std::process::id() == 1 {
        std::thread::Builder::new()
            .name("orphan-reaper".into())
            .spawn(crate::subprocess::reap_orphans_forever)
            .map_err(|e| refuse(1, format!("cannot start the orphan reaper: {e}")))?;
    }

    let policy = Policy {
        failed_linger_ms: u64::try_from(args.failed_linger.as_millis()).unwrap_or(u64::MAX),
        ..Policy::default()
    };
    let parts = DriverParts {
        journal: Box::new(journal),
        executor,
        published,
        inbox,
        clock,
        monitor,
        monitor_interval: args.monitor_interval,
        state_dir,
        spec_file: args.spec.clone(),
        settings_check,
        requests: replay.requests.clone(),
        start_time,
    };
    let fetch_spec = control_plane.is_some() && replayed.is_none() && from_file.is_none();
    let (driver, boot) = Driver::new(parts, policy, fetch_spec);
    let exit = driver.run(boot, replayed, from_file);
    api.drain(std::time::Duration::from_secs(2));
    match exit {
        Exit::Code(code) => Ok(code),
        Exit::JournalFailed(message) => Err(refuse(
            1,
            format!("stopping: the journal cannot be written: {message}"),
        )),
    }
}

/// Exit 6 for a PGDATA that is not compute_ctl's to wipe.
fn refuse_foreign_pgdata(pgdata: &Path, state_dir: &Path) -> Result<(), Refused> {
    let kind = pgdata::inspect(pgdata, state_dir).map_err(|e| refuse(1, format!("{e:#}")))?;
    if let PgdataKind::Foreign(why) = kind {
        return Err(refuse(
            6,
            format!(
                "PGDATA {} is not safe to wipe: {why}; compute_ctl wipes only a directory that is absent, empty, or carries its marker file {}",
                pgdata.display(),
                pgdata::MARKER_FILE
            ),
        ));
    }
    Ok(())
}

fn initial_view(journal: &FileJournal, start_time: &str) -> StateView {
    StateView {
        phase: states::PhaseName::Empty,
        phase_since: start_time.to_string(),
        epoch: journal.epoch(),
        seq: journal.last_seq(),
        desired_generation: None,
        applied_generation: None,
        spec_hash: None,
        postmaster_pid: None,
        last_active: None,
        attempt: 1,
        error: None,
        pending_restart: Vec::new(),
        startup: StartupTimes::default(),
        progress: None,
        storage: None,
        sidecar: None,
        start_time: start_time.to_string(),
        tenant: None,
        timeline: None,
        terminate_mode: None,
    }
}

/// SIGTERM, SIGINT and SIGHUP become inputs.
fn forward_signals(inbox: mpsc::SyncSender<Input>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let kind = match signal {
                    SIGTERM => SignalKind::Terminate,
                    SIGINT => SignalKind::Interrupt,
                    _ => SignalKind::Reload,
                };
                if inbox.send(Input::Signal(kind)).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}
