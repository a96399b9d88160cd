//! The run: from the command line to the driver loop, as named steps. Everything that can be
//! refused is checked before anything is written, and each refusal has its documented exit
//! code (`ExitCode`): a bad command line, a bad spec file, a locked state directory, a damaged
//! journal, a PGDATA not safe to wipe; `Fatal` for anything else.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use states::Policy;

use crate::auth::Auth;
use crate::cli::RunArgs;
use crate::clock::{rfc3339_ms, Clock};
use crate::driver::world::Shell;
use crate::driver::{Driver, DriverParts, Exit};
use crate::executor::Executor;
use crate::exit::ExitCode;
use crate::http::{self, Api};
use crate::input::{Input, SignalKind, INBOX_CAPACITY};
use crate::journal::{
    FileJournal, JournalConfig, JournalStore, OpenReport, RecordBody, StartRecord,
};
use crate::pg_user::PgUser;
use crate::postgres::connect::AdminConnection;
use crate::postgres::monitor::{Monitor, Reports};
use crate::postgres::process::{Binaries, StartDeadlines};
use crate::replay::Replay;
use crate::spec::{ParsedSpec, SettingCatalog, SpecAdmission};
use crate::step_env::StepEnv;
use crate::view::{Published, StateView};

/// Why the start stops: the exit code, and the message that names the cause.
#[derive(Debug)]
pub struct Stop {
    pub code: ExitCode,
    pub message: String,
}

fn refuse(code: ExitCode, message: impl Into<String>) -> Stop {
    Stop {
        code,
        message: message.into(),
    }
}

/// Runs compute_ctl; returns the process exit code.
pub fn run(args: RunArgs) -> i32 {
    crate::logging::init(args.log_format);
    match start(args) {
        Ok(code) => code.code(),
        Err(refused) => {
            log::error!("{}", refused.message);
            refused.code.code()
        }
    }
}

/// What the command line gives, checked: nothing is written yet.
struct Setup {
    pgdata: PathBuf,
    state_dir: PathBuf,
    binaries: Binaries,
    admin: AdminConnection,
    pg_user: Option<PgUser>,
    control_plane: Option<crate::control_plane::ControlPlane>,
    /// `--auth-public-key`, read.
    auth_key: Option<ed25519_dalek::VerifyingKey>,
    admission: SpecAdmission,
}

/// The journal opened (locked) and what it says of earlier runs.
struct Opened {
    journal: FileJournal,
    report: OpenReport,
    replay: Replay,
    /// The journal's desired spec, read back from the spec store.
    replayed: Option<Arc<ParsedSpec>>,
    /// The spec an earlier run's postmaster may still serve, read back likewise.
    adoptable: Option<Arc<ParsedSpec>>,
}

fn start(args: RunArgs) -> Result<ExitCode, Stop> {
    let clock = Clock::start();
    let setup = check_command_line(&args)?;
    let from_file = admit_spec_file(&args, &setup.admission)?;
    // A spec file means a start: someone else's PGDATA is refused before the state directory
    // (LOCK, journal/) is created beside it. Without -S, only the journal can say whether a
    // start follows: checked below, once it is read.
    if from_file.is_some() {
        refuse_foreign_pgdata(&setup.pgdata, &setup.state_dir)?;
    }
    let auth = lock_the_front_door(&args, &setup, from_file.as_deref())?;
    let opened = open_journal(&setup.state_dir)?;
    // One PGDATA, one compute_ctl, whatever its state directory; held until the exit.
    lock_pgdata(&setup.pgdata)?;
    // A compute that will start must not wipe someone else's directory.
    if from_file.is_some() || opened.replayed.is_some() {
        refuse_foreign_pgdata(&setup.pgdata, &setup.state_dir)?;
    }

    let (inbox_tx, inbox) = mpsc::sync_channel::<Input>(INBOX_CAPACITY);
    let start_time = rfc3339_ms(clock.now().wall_ms);
    let Opened {
        mut journal,
        report,
        replay,
        replayed,
        adoptable,
    } = opened;
    let published = Published::new(
        StateView::starting(journal.epoch(), journal.last_seq(), &start_time),
        clock,
        args.monitor_interval,
    );
    let api = Api::new(
        published.clone(),
        inbox_tx.clone(),
        setup.state_dir.clone(),
        setup.admission.clone(),
        auth.clone(),
    );
    // A busy address is refused before anything is written; requests wait in the backlog
    // until the start record is durable, so no view served predates it.
    let server =
        http::bind(&args.http_addr).map_err(|e| refuse(ExitCode::Fatal, format!("{e:#}")))?;
    write_start_record(&mut journal, &setup.pgdata, &report, &replay, clock)?;
    published.publish(StateView::starting(
        journal.epoch(),
        journal.last_seq(),
        &start_time,
    ));
    http::serve(server, api.clone()).map_err(|e| refuse(ExitCode::Fatal, format!("{e:#}")))?;
    log::info!(
        "compute_ctl {} started: epoch {}, PGDATA {}, state directory {}",
        env!("CARGO_PKG_VERSION"),
        journal.epoch(),
        setup.pgdata.display(),
        setup.state_dir.display()
    );

    let fetch_spec = setup.control_plane.is_some() && replayed.is_none() && from_file.is_none();
    let world = start_workers(&args, setup.step_env(), &inbox_tx, clock, auth)?;
    let parts = DriverParts {
        journal: Box::new(journal),
        world: Box::new(world),
        published,
        inbox,
        clock,
        monitor_interval: args.monitor_interval,
        policy: Policy {
            failed_linger_ms: u64::try_from(args.failed_linger.as_millis()).unwrap_or(u64::MAX),
            drift_repair: args.drift == crate::cli::DriftMode::Repair,
            drift_interval_ms: u64::try_from(args.drift_interval.as_millis()).unwrap_or(u64::MAX),
            prepare: args.prepare,
            ..Policy::default()
        },
        fetch_spec,
        spec_file: args.spec.clone(),
        admission: setup.admission,
        recalled: replay.recalled(),
        start_time,
        reexec: std::env::current_exe()
            .ok()
            .map(|binary| (binary, std::env::args_os().skip(1).collect())),
    };
    let mut driver = Driver::new(parts, clock.now());
    let exit = match driver.start(replayed, adoptable, from_file, clock.now()) {
        Ok(()) => driver.run(),
        Err(exit) => exit,
    };
    api.drain(std::time::Duration::from_secs(2));
    match exit {
        Exit::Code(code) => Ok(code),
        Exit::JournalFailed(message) => Err(refuse(
            ExitCode::Fatal,
            format!("stopping: the journal cannot be written: {message}"),
        )),
        Exit::InboxClosed => Err(refuse(
            ExitCode::Fatal,
            "stopping: the driver's inbox closed",
        )),
    }
}

impl Setup {
    /// What every step knows about this compute.
    fn step_env(&self) -> StepEnv {
        StepEnv {
            pgdata: self.pgdata.clone(),
            state_dir: self.state_dir.clone(),
            binaries: self.binaries.clone(),
            pg_user: self.pg_user.clone(),
            admin: self.admin.clone(),
            deadlines: StartDeadlines::default(),
            fast_stop_timeout: std::time::Duration::from_secs(60),
            control_plane: self.control_plane.clone(),
            admission: self.admission.clone(),
        }
    }
}

/// Every flag checked, and the Postgres binary described: a bad command line changes nothing.
fn check_command_line(args: &RunArgs) -> Result<Setup, Stop> {
    let bad = |e: anyhow::Error| refuse(ExitCode::BadCommandLine, format!("{e:#}"));
    let Some(pgdata) = args.pgdata.clone() else {
        return Err(refuse(ExitCode::BadCommandLine, "-D/--pgdata is required"));
    };
    let state_dir = state_dir_for(&pgdata, args.state_dir.as_deref())?;
    let binaries = Binaries::locate(args.pgbin.as_deref()).map_err(bad)?;
    let admin = AdminConnection::parse(&args.connstr)
        .and_then(|admin| admin.with_privileged_role(args.privileged_role_name.clone()))
        .map_err(bad)?;
    let pg_user = PgUser::for_root(&args.pg_user).map_err(bad)?;
    if let Some(user) = &pg_user {
        crate::pgdata::check_reachable(&pgdata, user, &binaries.postgres).map_err(bad)?;
    }
    let control_plane = match (&args.compute_id, &args.control_plane_uri) {
        (Some(id), Some(uri)) => Some(crate::control_plane::ControlPlane {
            uri: uri.clone(),
            compute_id: id.clone(),
            token: std::env::var("NEON_CONTROL_PLANE_TOKEN")
                .ok()
                .filter(|t| !t.is_empty()),
        }),
        // `-i` alone names the compute (for tokens' `compute_id` and logs).
        (_, None) => None,
        (None, Some(_)) => {
            return Err(refuse(
                ExitCode::BadCommandLine,
                "-p/--control-plane-uri needs -i/--compute-id (the compute to ask for)",
            ))
        }
    };
    let auth_key = match &args.auth_public_key {
        Some(path) => Some(crate::auth::key_from_pem_file(path).map_err(bad)?),
        None => None,
    };
    if args.monitor_interval.is_zero() {
        return Err(refuse(
            ExitCode::BadCommandLine,
            "--monitor-interval must be longer than 0",
        ));
    }
    if args.drift_interval.is_zero() {
        return Err(refuse(
            ExitCode::BadCommandLine,
            "--drift-interval must be longer than 0",
        ));
    }
    let catalog = SettingCatalog::load(&binaries.postgres).map_err(bad)?;
    let admission = SpecAdmission::new(Arc::new(catalog), admin.role());
    Ok(Setup {
        pgdata,
        state_dir,
        binaries,
        admin,
        pg_user,
        control_plane,
        auth_key,
        admission,
    })
}

/// The API's keys (`--auth-public-key`, the `-S` envelope's `compute_ctl_config.jwks`), and
/// the rule that a non-loopback `--http-addr` without keys is refused (exit 2) unless
/// `--insecure-http`.
fn lock_the_front_door(
    args: &RunArgs,
    setup: &Setup,
    from_file: Option<&ParsedSpec>,
) -> Result<Arc<Auth>, Stop> {
    let loopback = is_loopback(&args.http_addr);
    let auth = Auth::new(
        setup.auth_key,
        args.compute_id.clone(),
        !loopback && !args.insecure_http,
    );
    if let Some(config) = from_file.and_then(|spec| spec.compute_ctl_config.as_ref()) {
        auth.use_compute_ctl_config(config);
    }
    if !loopback && !auth.enabled() {
        if !args.insecure_http {
            return Err(refuse(
                ExitCode::BadCommandLine,
                format!(
                    "--http-addr {} is not a loopback address, and the API would have no \
                     authentication: give --auth-public-key FILE (an Ed25519 PEM key) or \
                     compute_ctl_config.jwks in the -S envelope, or --insecure-http to serve \
                     it unauthenticated",
                    args.http_addr
                ),
            ));
        }
        log::warn!(
            "--insecure-http: the API on {} needs no token, and anyone who reaches it can \
             reconfigure or terminate the compute",
            args.http_addr
        );
    }
    Ok(Arc::new(auth))
}

/// Whether `addr` (`host:port`) listens on loopback only: `127.0.0.0/8`, `::1`, `localhost`.
fn is_loopback(addr: &str) -> bool {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// The state directory: `--state-dir`, or `<PGDATA>.state` beside PGDATA (never inside it:
/// PGDATA is wiped on every start).
fn state_dir_for(pgdata: &Path, flag: Option<&Path>) -> Result<PathBuf, Stop> {
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
            ExitCode::BadCommandLine,
            format!(
                "--state-dir {} is inside PGDATA {}, which is wiped on every start",
                state_dir.display(),
                pgdata.display()
            ),
        ));
    }
    Ok(state_dir)
}

/// The `-S` file, admitted: bad input changes nothing.
fn admit_spec_file(
    args: &RunArgs,
    admission: &SpecAdmission,
) -> Result<Option<Arc<ParsedSpec>>, Stop> {
    let Some(path) = &args.spec else {
        return Ok(None);
    };
    match admission.admit_file(path) {
        Ok(admitted) => Ok(Some(Arc::new(admitted.spec))),
        Err(e) => Err(refuse(ExitCode::BadSpecFile, format!("-S {e}"))),
    }
}

/// Creates and locks the state directory, opens the journal (cutting a torn tail), replays
/// it, and reads back its desired spec.
fn open_journal(state_dir: &Path) -> Result<Opened, Stop> {
    crate::durable::create_dir_all_durable(state_dir).map_err(|e| {
        refuse(
            ExitCode::Fatal,
            format!(
                "cannot create the state directory {}: {e}",
                state_dir.display()
            ),
        )
    })?;
    let mut replay = Replay::default();
    let (journal, report) = FileJournal::open(state_dir, JournalConfig::default(), |record| {
        replay.visit(record)
    })
    .map_err(|e| refuse(ExitCode::of_journal_error(&e), e.to_string()))?;
    if let Some(torn) = &report.torn_tail {
        log::warn!(
            "the journal's last record was torn ({}): {} bytes cut from {} at offset {}",
            torn.reason,
            torn.bytes,
            torn.segment,
            torn.offset
        );
    }
    let load = |hash: &str| -> Result<Arc<ParsedSpec>, Stop> {
        let damaged = |why: String| {
            let message = format!("the journal's spec {hash} {why}");
            refuse(ExitCode::JournalDamaged, message)
        };
        let hex = hash.trim_start_matches("sha256:");
        let bytes = crate::journal::load_spec(state_dir, hex)
            .map_err(|e| damaged(format!("cannot be read: {e}")))?;
        // Admitted when it was accepted: the form rules again, as a check of the store.
        let spec = crate::spec::parse(&bytes).map_err(|errors| {
            damaged(format!(
                "is no longer valid: {}",
                crate::spec::SpecErrors(errors)
            ))
        })?;
        Ok(Arc::new(spec))
    };
    let replayed = replay.desired.as_ref().map(|d| load(&d.hash)).transpose()?;
    let adoptable = replay
        .adoptable
        .as_ref()
        .map(|a| load(&a.hash))
        .transpose()?;
    Ok(Opened {
        journal,
        report,
        replay,
        replayed,
        adoptable,
    })
}

fn lock_pgdata(pgdata: &Path) -> Result<(), Stop> {
    match crate::pgdata::lock_if_present(pgdata) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(held)) => Err(refuse(
            ExitCode::PgdataUnsafe,
            format!("{held}: one PGDATA has one compute_ctl; stop the other, or give this one its own -D"),
        )),
        Err(e) => Err(refuse(ExitCode::Fatal, format!("{e:#}"))),
    }
}

fn refuse_foreign_pgdata(pgdata: &Path, state_dir: &Path) -> Result<(), Stop> {
    match crate::pgdata::check_wipeable(pgdata, state_dir) {
        Ok(_) => Ok(()),
        Err(e @ crate::pgdata::WipeRefused::Foreign { .. }) => {
            Err(refuse(ExitCode::PgdataUnsafe, e.to_string()))
        }
        Err(e) => Err(refuse(ExitCode::Fatal, e.to_string())),
    }
}

/// The epoch's first record: who started, on what, and what the last run left unfinished.
fn write_start_record(
    journal: &mut FileJournal,
    pgdata: &Path,
    report: &OpenReport,
    replay: &Replay,
    clock: Clock,
) -> Result<(), Stop> {
    let start_record = RecordBody::Start(StartRecord {
        format: crate::journal::FORMAT_VERSION,
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        pgdata: pgdata.display().to_string(),
        torn_tail: report.torn_tail.clone(),
        unfinished_steps: replay.unfinished_steps(),
    });
    let now = clock.now();
    journal
        .append(vec![start_record], now.mono_ms, Clock::wall_time(now))
        .map(|_| ())
        .map_err(|e| {
            refuse(
                ExitCode::Fatal,
                format!("the journal cannot be written: {e}"),
            )
        })
}

/// The threads that do the driver's work: the step worker, the activity monitor, the sidecar's
/// supervisor, the signal forwarder and, as PID 1, the reaper of orphans.
fn start_workers(
    args: &RunArgs,
    env: StepEnv,
    inbox: &mpsc::SyncSender<Input>,
    clock: Clock,
    auth: Arc<Auth>,
) -> Result<Shell, Stop> {
    let fatal = |e: anyhow::Error| refuse(ExitCode::Fatal, format!("{e:#}"));
    let state_dir = env.state_dir.clone();
    let sidecar_path = args
        .vm_monitor
        .clone()
        .or_else(|| Some(PathBuf::from(crate::sidecar::DEFAULT_PATH)).filter(|p| p.is_file()));
    let sidecar = sidecar_path.map(|path| {
        let inbox = inbox.clone();
        let on_change = Arc::new(move |view| {
            let _ = inbox.try_send(Input::Sidecar(view));
        });
        crate::sidecar::Sidecar::new(path, on_change)
    });
    let executor = Executor::start(env, inbox.clone(), sidecar).map_err(fatal)?;
    let activity = inbox.clone();
    let on_active = move |wall_ms| {
        if activity.try_send(Input::Activity { wall_ms }).is_err() {
            log::debug!("the driver's inbox is full; activity not reported");
        }
    };
    let drift = inbox.clone();
    let on_drift = move |report| {
        // The next interval's check reports again.
        if drift.try_send(Input::Drift(report)).is_err() {
            log::debug!("the driver's inbox is full; a drift check not reported");
        }
    };
    let reports = Reports {
        on_active: Box::new(on_active),
        on_drift: Box::new(on_drift),
    };
    let monitor = Monitor::start(args.monitor_interval, reports, clock).map_err(fatal)?;
    forward_signals(inbox.clone())
        .map_err(|e| refuse(ExitCode::Fatal, format!("cannot handle signals: {e}")))?;
    if std::process::id() == 1 {
        std::thread::Builder::new()
            .name("orphan-reaper".into())
            .spawn(crate::subprocess::reap_orphans_forever)
            .map_err(|e| {
                refuse(
                    ExitCode::Fatal,
                    format!("cannot start the orphan reaper: {e}"),
                )
            })?;
    }
    Ok(Shell {
        executor,
        monitor,
        state_dir,
        auth,
    })
}

/// SIGTERM, SIGINT, SIGHUP and SIGUSR2 become inputs.
fn forward_signals(inbox: mpsc::SyncSender<Input>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR2};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR2])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let kind = match signal {
                    SIGTERM => SignalKind::Terminate,
                    SIGINT => SignalKind::Interrupt,
                    SIGUSR2 => SignalKind::Upgrade,
                    _ => SignalKind::Reload,
                };
                if inbox.send(Input::Signal(kind)).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}
