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
use crate::spec::{ParsedSpec, SettingCatalog, SpecAdmission, SpecFile};
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
    /// Where the API listens: `--http-addr` or Neon's ports.
    endpoints: Vec<Endpoint>,
    /// `--pg-init-timeout`, or the defaults.
    deadlines: StartDeadlines,
}

/// One address the API listens on, the flag that gave it, and whether tokens are checked.
#[derive(Clone, Debug)]
struct Endpoint {
    addr: String,
    /// What the command line said, for messages: `--http-addr`, `--external-http-port` ...
    flag: &'static str,
    listener: http::Listener,
}

/// What the `-S` file gave: a spec to run, and the envelope's settings of compute_ctl itself.
struct FromFile {
    spec: Option<Arc<ParsedSpec>>,
    compute_ctl_config: Option<serde_json::Value>,
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
    for (flag, why) in args.neon_ignored.given() {
        log::info!("{flag} (Neon's) is ignored: {why}");
    }
    let FromFile {
        spec: from_file,
        compute_ctl_config,
    } = admit_spec_file(&args, &setup.admission)?;
    // A spec file means a start: someone else's PGDATA is refused before the state directory
    // (LOCK, journal/) is created beside it. Without -S, only the journal can say whether a
    // start follows: checked below, once it is read.
    if from_file.is_some() {
        refuse_foreign_pgdata(&setup.pgdata, &setup.state_dir)?;
    }
    let auth = lock_the_front_door(&args, &setup, compute_ctl_config.as_ref())?;
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
        Some(http::catalog::CatalogSetup {
            admin: setup.admin.clone(),
            pgdata: setup.pgdata.clone(),
            bindir: setup.binaries.bindir.clone(),
        }),
    );
    // A busy address is refused before anything is written; requests wait in the backlog
    // until the start record is durable, so no view served predates it.
    let listeners = setup
        .endpoints
        .iter()
        .map(|endpoint| {
            http::bind(&endpoint.addr, endpoint.flag)
                .map(|listener| (listener, endpoint.listener))
                .map_err(|e| refuse(ExitCode::Fatal, format!("{e:#}")))
        })
        .collect::<Result<Vec<_>, Stop>>()?;
    write_start_record(&mut journal, &setup.pgdata, &report, &replay, clock)?;
    published.publish(StateView::starting(
        journal.epoch(),
        journal.last_seq(),
        &start_time,
    ));
    http::serve(listeners, api.clone()).map_err(|e| refuse(ExitCode::Fatal, format!("{e:#}")))?;
    for endpoint in &setup.endpoints {
        log::info!(
            "the API listens on {} ({}{})",
            endpoint.addr,
            endpoint.flag,
            match endpoint.listener {
                http::Listener::External => "",
                http::Listener::Internal => ", no token needed",
            }
        );
    }
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
        phases_entered: replay
            .phases_entered()
            .into_iter()
            .filter_map(|(phase, ts)| {
                let at = humantime::parse_rfc3339(&ts).ok()?;
                let ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
                Some((phase, u64::try_from(ms).ok()?))
            })
            .collect(),
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
            deadlines: self.deadlines,
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
    let binaries = locate_binaries(args)?;
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
    let deadlines = match args.pg_init_timeout {
        None => StartDeadlines::default(),
        Some(0) => {
            return Err(refuse(
                ExitCode::BadCommandLine,
                "--pg-init-timeout must be at least 1 (seconds)",
            ))
        }
        Some(seconds) => StartDeadlines::init_timeout(std::time::Duration::from_secs(seconds)),
    };
    let endpoints = endpoints(args)?;
    let catalog = SettingCatalog::load(&binaries.postgres).map_err(bad)?;
    let admission = SpecAdmission::new(Arc::new(catalog), admin.role());
    Ok(Setup {
        endpoints,
        deadlines,
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

/// `-b`, else `$POSTGRES_PATH` (Neon's default of `-b`), else `postgres` on PATH or
/// `pg_config --bindir`. A bare name (`postgres`, Neon's default) is looked up on PATH.
fn locate_binaries(args: &RunArgs) -> Result<Binaries, Stop> {
    let from_env = std::env::var_os("POSTGRES_PATH").filter(|v| !v.is_empty());
    let (given, named) = match (&args.pgbin, from_env) {
        (Some(path), _) => (Some(path.clone()), None),
        (None, Some(value)) => (Some(PathBuf::from(value)), Some("POSTGRES_PATH")),
        (None, None) => (None, None),
    };
    let given = given.map(|path| on_path_if_bare(&path).unwrap_or(path));
    Binaries::locate(given.as_deref()).map_err(|e| {
        let message = match (named, &given) {
            (Some(variable), Some(path)) => format!(
                "{variable}={} (the default of -b/--pgbin): {e:#}",
                path.display()
            ),
            _ => format!("{e:#}"),
        };
        refuse(ExitCode::BadCommandLine, message)
    })
}

/// `name` found on PATH when it is a bare file name (no `/`) that is not in the working
/// directory, as Neon's `-b postgres` means.
fn on_path_if_bare(name: &Path) -> Option<PathBuf> {
    if name.components().count() != 1 || name.exists() || name.to_str()?.contains('/') {
        return None;
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Where the API listens: Neon's `--external-http-port P` (or its older `--http-port P`) on
/// `0.0.0.0:P` instead of `--http-addr` (clap refuses them together), and Neon's
/// `--internal-http-port Q` on `127.0.0.1:Q` besides, without tokens. The same port for both
/// is a contradiction (exit 2).
fn endpoints(args: &RunArgs) -> Result<Vec<Endpoint>, Stop> {
    let external = match (args.external_http_port, args.http_port) {
        (Some(port), _) => Endpoint {
            addr: format!("0.0.0.0:{port}"),
            flag: "--external-http-port",
            listener: http::Listener::External,
        },
        (None, Some(port)) => Endpoint {
            addr: format!("0.0.0.0:{port}"),
            flag: "--http-port",
            listener: http::Listener::External,
        },
        (None, None) => Endpoint {
            addr: args.http_addr.clone(),
            flag: "--http-addr",
            listener: http::Listener::External,
        },
    };
    let Some(port) = args.internal_http_port else {
        return Ok(vec![external]);
    };
    let external_port = external
        .addr
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse::<u16>().ok());
    if port != 0 && external_port == Some(port) {
        return Err(refuse(
            ExitCode::BadCommandLine,
            format!(
                "--internal-http-port {port} and {} {} name the same port: the internal API \
                 (no token) and the external one need a port each",
                external.flag, external.addr
            ),
        ));
    }
    let internal = Endpoint {
        addr: format!("127.0.0.1:{port}"),
        flag: "--internal-http-port",
        listener: http::Listener::Internal,
    };
    Ok(vec![external, internal])
}

/// The API's keys (`--auth-public-key`, the `-S` envelope's `compute_ctl_config.jwks`), and
/// the rule that a non-loopback external address (`--http-addr`, `--external-http-port`)
/// without keys is refused (exit 2) unless `--insecure-http`. The internal port is loopback
/// and needs no token.
fn lock_the_front_door(
    args: &RunArgs,
    setup: &Setup,
    compute_ctl_config: Option<&serde_json::Value>,
) -> Result<Arc<Auth>, Stop> {
    let exposed: Vec<&Endpoint> = setup
        .endpoints
        .iter()
        .filter(|e| e.listener == http::Listener::External && !is_loopback(&e.addr))
        .collect();
    let auth = Auth::new(
        setup.auth_key,
        args.compute_id.clone(),
        !exposed.is_empty() && !args.insecure_http,
    );
    if let Some(config) = compute_ctl_config {
        auth.use_compute_ctl_config(config);
    }
    if auth.enabled() {
        return Ok(Arc::new(auth));
    }
    for endpoint in exposed {
        let shown = match endpoint.flag {
            "--http-addr" => format!("--http-addr {}", endpoint.addr),
            flag => format!("{flag} serves {}, which", endpoint.addr),
        };
        if !args.insecure_http {
            return Err(refuse(
                ExitCode::BadCommandLine,
                format!(
                    "{shown} is not a loopback address, and the API would have no \
                     authentication: give --auth-public-key FILE (an Ed25519 PEM key) or \
                     compute_ctl_config.jwks in the -S envelope, or --insecure-http to serve \
                     it unauthenticated",
                ),
            ));
        }
        log::warn!(
            "--insecure-http: the API on {} needs no token, and anyone who reaches it can \
             reconfigure or terminate the compute",
            endpoint.addr
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

/// The `-S` file, admitted: bad input changes nothing. Neon's envelope with `"spec": null`
/// gives no spec (a start in `empty`, as without `-S`) but its `compute_ctl_config`.
fn admit_spec_file(args: &RunArgs, admission: &SpecAdmission) -> Result<FromFile, Stop> {
    let Some(path) = &args.spec else {
        return Ok(FromFile {
            spec: None,
            compute_ctl_config: None,
        });
    };
    match admission.admit_config_file(path) {
        Ok(SpecFile::Spec(admitted)) => {
            let spec = admitted.spec;
            Ok(FromFile {
                compute_ctl_config: spec.compute_ctl_config.clone(),
                spec: Some(Arc::new(spec)),
            })
        }
        Ok(SpecFile::NoSpec { compute_ctl_config }) => {
            log::info!(
                "-S {} holds no spec (spec is null): waiting for one (POST /configure, \
                 POST /spec), unless the journal has one",
                path.display()
            );
            Ok(FromFile {
                spec: None,
                compute_ctl_config,
            })
        }
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
