//! Neon's storage: the safekeepers hold the WAL, the pageserver serves the pages and a base
//! backup. `sync_safekeepers` runs `postgres --sync-safekeepers` for the LSN to start from;
//! `fetch_basebackup` asks the pageserver for `basebackup <tenant> <timeline> [<lsn>] --gzip`
//! over libpq and unpacks the gzip'd tar into PGDATA as it streams in.
//!
//! What Neon's compute_ctl does, and so do we (semantics read from its `compute.rs` and
//! `config.rs`):
//! - before syncing, `postgresql.conf` is written into PGDATA with `neon.safekeepers`,
//!   `neon.tenant_id`, `neon.timeline_id` and `neon.pageserver_connstring`: the walproposer
//!   reads them from there (`-D` cannot be used in that mode; `PGDATA` is set instead), and
//!   the token goes in `NEON_AUTH_TOKEN`;
//! - only a `Primary` syncs: a replica would kick a running primary off the safekeepers. A
//!   `Static` compute starts at its own LSN, a `Replica` at the pageserver's latest (no LSN in
//!   the command) and both add `--replica`, as Neon does for every non-primary mode;
//! - the basebackup goes to the first pageserver of a comma-separated list (shard 0), with the
//!   storage token as the password, `application_name=compute_ctl` and
//!   `options=-c neon.compute_mode=<mode>`.
//!
//! Differences: Neon's fast path that asks the safekeepers whether they are already synced is
//! not done (the sync itself gives the same LSN); its `pg_dynshmem` link to `/dev/shm` is an
//! autoscaling matter and is not made; the command is sent as a simple query rather than
//! through the extended protocol (the pageserver serves both).

use std::fs;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use states::{ErrorKind, Lsn, PhaseName, StepError, StepName};

use super::wire::{self, ConnectOptions, WireError};
use super::{StorageBackend, Synced};
use crate::pg_user::{run_as, PgUser};
use crate::pgdata;
use crate::postgres::process::clean_env;
use crate::spec::{ComputeMode, ParsedSpec, Storage};
use crate::step_env::{Progress, StepCtx, StepEnv};
use crate::subprocess::{self, Finished, RunError};
use crate::sync::CancelToken;

/// How long `postgres --sync-safekeepers` may run: it waits for a quorum of safekeepers,
/// which may be down; past this the attempt fails (and is retried).
pub const SYNC_SAFEKEEPERS_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// How long the pageserver may send nothing during a base backup. It first waits for the
/// requested LSN to arrive from the safekeepers (its own `wait_lsn_timeout` is a minute), so
/// this is longer.
pub const BASEBACKUP_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// `GET /state` progress is reported at most this often.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// One read of a file's contents from the archive.
const COPY_CHUNK_BYTES: usize = 64 * 1024;
/// Lines of the program's stderr quoted in an error.
const STDERR_TAIL_LINES: usize = 5;

/// The Neon backend.
#[derive(Debug)]
pub struct Neon {
    pub sync_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for Neon {
    fn default() -> Neon {
        Neon {
            sync_timeout: SYNC_SAFEKEEPERS_TIMEOUT,
            idle_timeout: BASEBACKUP_IDLE_TIMEOUT,
        }
    }
}

/// The Neon fields of a spec.
struct Fields<'a> {
    pageserver_connstring: &'a str,
    stripe_size: Option<u32>,
    safekeepers: &'a [String],
    tenant_id: &'a str,
    timeline_id: &'a str,
    auth_token: Option<&'a str>,
    mode: ComputeMode,
}

fn fields(spec: &ParsedSpec) -> Option<Fields<'_>> {
    match &spec.storage {
        Storage::Neon {
            pageserver_connstring,
            stripe_size,
            safekeepers,
            tenant_id,
            timeline_id,
            auth_token,
            mode,
        } => Some(Fields {
            pageserver_connstring,
            stripe_size: *stripe_size,
            safekeepers,
            tenant_id,
            timeline_id,
            auth_token: auth_token.as_deref(),
            mode: *mode,
        }),
        Storage::Embedded | Storage::Upstream { .. } => None,
    }
}

fn fields_or_defect(
    spec: &ParsedSpec,
    phase: PhaseName,
    step: StepName,
) -> Result<Fields<'_>, StepError> {
    fields(spec).ok_or_else(|| {
        StepError::new(
            phase,
            step,
            ErrorKind::Internal,
            format!(
                "the Neon backend was handed a spec whose storage is {}",
                spec.storage.kind()
            ),
        )
    })
}

/// The command the pageserver is sent: Neon's, argument for argument. No LSN when there is
/// none to give (a replica, or a sync that found an empty timeline, `0/0`).
pub fn basebackup_command(
    tenant_id: &str,
    timeline_id: &str,
    lsn: Option<Lsn>,
    mode: ComputeMode,
) -> String {
    let mut command = format!("basebackup {tenant_id} {timeline_id}");
    if let Some(lsn) = lsn.filter(|lsn| lsn.0 != 0) {
        command.push_str(&format!(" {lsn}"));
    }
    command.push_str(" --gzip");
    if mode != ComputeMode::Primary {
        command.push_str(" --replica");
    }
    command
}

/// The LSN `postgres --sync-safekeepers` printed: its last line on stdout.
pub fn parse_sync_output(stdout: &str) -> Result<Lsn, String> {
    let Some(line) = stdout.lines().rev().find(|l| !l.trim().is_empty()) else {
        return Err("it printed nothing on stdout".into());
    };
    Lsn::from_str(line.trim()).map_err(|e| format!("its last line on stdout is not an LSN: {e}"))
}

impl StorageBackend for Neon {
    fn sync_safekeepers(&self, ctx: &StepCtx<'_>, spec: &ParsedSpec) -> Result<Synced, StepError> {
        const PHASE: PhaseName = PhaseName::SyncSafekeepers;
        const STEP: StepName = StepName::SyncSafekeepers;
        let neon = fields_or_defect(spec, PHASE, STEP)?;
        match neon.mode {
            ComputeMode::Replica => {
                return Ok(Synced {
                    lsn: None,
                    detail: json!({ "skipped": "a Replica does not sync the safekeepers (that would push a running primary off them): it starts from the pageserver's latest LSN" }),
                })
            }
            ComputeMode::Static(lsn) => {
                return Ok(Synced {
                    lsn: Some(lsn),
                    detail: json!({
                        "skipped": format!("a Static compute writes no WAL and reads pages as of its own LSN {lsn}"),
                        "lsn": lsn,
                    }),
                })
            }
            ComputeMode::Primary => {}
        }
        let env = ctx.env;
        let error = |kind, message: String| StepError::new(PHASE, STEP, kind, message);

        // The walproposer reads the safekeepers, tenant and timeline from postgresql.conf.
        super::write_config_files(env, spec).map_err(|e| {
            error(
                ErrorKind::Io,
                format!("cannot write the configuration for the safekeeper sync: {e}"),
            )
        })?;

        let mut command = Command::new(&env.binaries.postgres);
        command.arg("--sync-safekeepers").current_dir(&env.pgdata);
        clean_env(&mut command);
        // After clean_env, which strips an inherited NEON_AUTH_TOKEN: only the spec's goes.
        command.env("PGDATA", &env.pgdata);
        if let Some(token) = neon.auth_token {
            command.env("NEON_AUTH_TOKEN", token);
        }
        run_as(env.pg_user.as_ref(), &mut command);
        let program = format!("{} --sync-safekeepers", env.binaries.postgres.display());
        let finished = match run_with_deadline(&mut command, ctx.cancel, self.sync_timeout) {
            Ran::Finished(finished) => finished,
            Ran::Cancelled => {
                return Err(error(
                    ErrorKind::Cancelled,
                    format!("{program} was cancelled"),
                ))
            }
            Ran::TimedOut(tail) => {
                // Storage, retryable: the safekeepers may come back.
                return Err(error(
                    ErrorKind::Storage,
                    format!(
                        "{program} did not finish within {:?} (are a majority of the safekeepers {} reachable?){}",
                        self.sync_timeout,
                        neon.safekeepers.join(","),
                        if tail.is_empty() { String::new() } else { format!(": {tail}") }
                    ),
                ));
            }
            Ran::Spawn(message) => return Err(error(ErrorKind::Io, message)),
        };
        if !finished.success() {
            return Err(error(
                ErrorKind::Storage,
                format!(
                    "{program} failed with {}: {}",
                    finished.status,
                    finished.tail(STDERR_TAIL_LINES)
                ),
            ));
        }
        let lsn = parse_sync_output(&finished.stdout).map_err(|why| {
            error(
                ErrorKind::Storage,
                format!(
                    "{program} gave no LSN: {why}; stderr: {}",
                    finished.tail(STDERR_TAIL_LINES)
                ),
            )
        })?;
        Ok(Synced {
            lsn: Some(lsn),
            detail: json!({
                "lsn": lsn,
                "safekeepers": neon.safekeepers,
                "sync_ms": u64::try_from(finished.elapsed.as_millis()).unwrap_or(u64::MAX),
            }),
        })
    }

    fn fetch_basebackup(
        &self,
        ctx: &StepCtx<'_>,
        spec: &ParsedSpec,
        lsn: Option<Lsn>,
    ) -> Result<serde_json::Value, StepError> {
        const PHASE: PhaseName = PhaseName::Basebackup;
        const STEP: StepName = StepName::FetchBasebackup;
        let neon = fields_or_defect(spec, PHASE, STEP)?;
        let env = ctx.env;
        let started = Instant::now();
        let error = |kind, message: String| StepError::new(PHASE, STEP, kind, message);
        let wire_error = |e: WireError| {
            if matches!(e, WireError::Cancelled { .. }) {
                return error(ErrorKind::Cancelled, e.to_string());
            }
            let mut step_error = error(ErrorKind::Storage, e.to_string());
            step_error.retryable = e.transient();
            step_error
        };

        // An earlier attempt may have left half an archive (and sync_safekeepers its config
        // files): every attempt starts from an empty PGDATA. It is ours: init claimed it.
        pgdata::check_wipeable(&env.pgdata, &env.state_dir)
            .map_err(|e| e.to_step_error(PHASE, STEP))?;
        pgdata::wipe_and_recreate(&env.pgdata, env.pg_user.as_ref())
            .map_err(|e| error(ErrorKind::Io, format!("{e:#}")))?;

        // Shard 0 serves the base backup of a sharded tenant.
        let first = neon
            .pageserver_connstring
            .split(',')
            .next()
            .unwrap_or_default()
            .trim();
        let crate::postgres::tls::ConnString { config, tls } = crate::postgres::tls::parse(first)
            .map_err(|e| {
            error(
                ErrorKind::Storage,
                // The parser's messages name options, never their values (no password shown).
                format!("the pageserver connection string cannot be parsed: {e}"),
            )
        })?;
        let server = format!("pageserver {}", address_of(&config));
        let options = ConnectOptions {
            config,
            tls,
            password: neon.auth_token.map(str::to_owned),
            parameters: vec![
                ("application_name".into(), "compute_ctl".into()),
                (
                    "options".into(),
                    format!("-c neon.compute_mode={}", neon.mode.as_str()),
                ),
            ],
            idle_timeout: self.idle_timeout,
            label: server.clone(),
        };
        let command = basebackup_command(neon.tenant_id, neon.timeline_id, lsn, neon.mode);
        log::info!("fetching the base backup from {server}: {command}");

        let mut connection = wire::connect(&options, ctx.cancel).map_err(wire_error)?;
        let connected_ms = started.elapsed().as_millis();
        let mut copy = connection.copy_out(&command).map_err(wire_error)?;
        let unpacked = {
            let reporting = Reporting {
                copy: &mut copy,
                ctx,
                // The first data is reported at once: a stream may stall right after it.
                last_report: None,
            };
            unpack(
                flate2::read::GzDecoder::new(BufReader::with_capacity(COPY_CHUNK_BYTES, reporting)),
                &env.pgdata,
                env.pg_user.as_ref(),
                ctx.cancel,
            )
        };
        let stats = match unpacked {
            Ok(stats) => stats,
            Err(UnpackError::Read(e)) => {
                return Err(match copy.take_failure() {
                    Some(failure) => wire_error(failure),
                    None if ctx.cancel.is_cancelled() => error(
                        ErrorKind::Cancelled,
                        format!("the transfer from {server} was cancelled"),
                    ),
                    None => error(
                        ErrorKind::Storage,
                        format!("the base backup from {server} is not a valid gzip'd tar: {e}"),
                    ),
                })
            }
            Err(UnpackError::Cancelled) => {
                return Err(error(
                    ErrorKind::Cancelled,
                    format!("the transfer from {server} was cancelled"),
                ))
            }
            Err(UnpackError::Write { path, source }) => {
                return Err(error(
                    ErrorKind::Io,
                    format!("cannot write {}: {source}", path.display()),
                ))
            }
            Err(UnpackError::Entry { path, reason }) => {
                let mut e = error(
                    ErrorKind::Storage,
                    format!("the base backup from {server} has a tar entry {path:?} that {reason}"),
                );
                e.retryable = false;
                return Err(e);
            }
        };
        let bytes = copy.received();
        copy.finish().map_err(wire_error)?;
        connection.close();
        ctx.progress(Progress {
            step: StepName::FetchBasebackup.to_string(),
            bytes_done: bytes,
            bytes_total: Some(bytes),
        });
        if stats.files == 0 {
            return Err(error(
                ErrorKind::Storage,
                format!("the base backup from {server} holds no file"),
            ));
        }
        // A hot standby must run with at least its primary's values of five settings.
        let standby_settings = match neon.mode {
            ComputeMode::Primary => None,
            ComputeMode::Replica | ComputeMode::Static(_) => Some(
                super::standby::raise(env, &spec.spec, &env.pgdata, ctx.cancel).map_err(|e| {
                    error(
                        ErrorKind::Io,
                        format!("cannot raise the standby's settings: {e:#}"),
                    )
                })?,
            ),
        };
        Ok(json!({
            "storage": "neon",
            "pageserver": server,
            "command": command,
            "lsn": lsn,
            "bytes_received": bytes,
            "files": stats.files,
            "directories": stats.directories,
            "bytes_unpacked": stats.bytes,
            "connect_ms": u64::try_from(connected_ms).unwrap_or(u64::MAX),
            "basebackup_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "standby_settings": standby_settings,
        }))
    }

    /// Neon's storage settings, as Neon writes them after the spec's own (`storage_settings`),
    /// then a standby's parameters raised to the primary's.
    fn settings(&self, env: &StepEnv, spec: &ParsedSpec) -> Vec<(String, String)> {
        if fields(spec).is_none() {
            return Vec::new();
        }
        let mut wanted = storage_settings(spec);
        wanted.extend(super::standby::settings(&env.pgdata));
        wanted
    }

    /// A read-only compute starts as a standby (`standby.signal`), as Neon's does.
    fn prepare_start(&self, env: &StepEnv, spec: &ParsedSpec) -> anyhow::Result<()> {
        let Some(neon) = fields(spec) else {
            return Ok(());
        };
        if neon.mode == ComputeMode::Primary {
            return Ok(());
        }
        super::write_pgdata_file(env, "standby.signal", b"")
    }
}

/// `host:port` of the first host of a connection string, for messages (never a password).
fn address_of(config: &postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => host.clone(),
        Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "(no host)".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// How a time-boxed program ended.
enum Ran {
    Finished(Finished),
    Cancelled,
    /// Killed at the deadline; the last lines it wrote to stderr.
    TimedOut(String),
    Spawn(String),
}

/// Runs `command` like `subprocess::run`, but kills it (its whole process group) at
/// `deadline` too, keeping what it wrote to stderr so far for the message.
fn run_with_deadline(command: &mut Command, cancel: &CancelToken, deadline: Duration) -> Ran {
    let mut stderr = Vec::new();
    let local = CancelToken::new();
    let forward = local.clone();
    let _hook = cancel.on_cancel(move || forward.cancel());
    let timed_out = Arc::new(AtomicBool::new(false));
    let timer_token = local.clone();
    let flag = timed_out.clone();
    let timer = std::thread::Builder::new()
        .name("step-deadline".into())
        .spawn(move || {
            if timer_token.sleep(deadline) {
                flag.store(true, Ordering::SeqCst);
                timer_token.cancel();
            }
        });
    let result = subprocess::run(command, &local, |chunk| stderr.extend_from_slice(chunk));
    // Wakes the timer if it still sleeps.
    local.cancel();
    if let Ok(timer) = timer {
        let _ = timer.join();
    }
    if cancel.is_cancelled() {
        return Ran::Cancelled;
    }
    if timed_out.load(Ordering::SeqCst) {
        let partial = Finished {
            status: states::ExitStatus {
                code: None,
                signal: Some(libc::SIGKILL),
            },
            stdout: String::new(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            elapsed: deadline,
        };
        return Ran::TimedOut(partial.tail(STDERR_TAIL_LINES));
    }
    match result {
        Ok(finished) => Ran::Finished(finished),
        Err(e @ RunError::Spawn { .. }) => Ran::Spawn(e.to_string()),
        Err(RunError::Cancelled { .. }) => Ran::Cancelled,
    }
}

/// Reads the COPY data and reports the bytes received to `GET /state`, at most every
/// `PROGRESS_INTERVAL`.
struct Reporting<'a, 'c, 's> {
    copy: &'a mut wire::CopyOut<'c>,
    ctx: &'a StepCtx<'s>,
    last_report: Option<Instant>,
}

impl Read for Reporting<'_, '_, '_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.ctx.cancel.is_cancelled() {
            return Err(io::Error::other("cancelled"));
        }
        let n = self.copy.read(out)?;
        if self
            .last_report
            .is_none_or(|at| at.elapsed() >= PROGRESS_INTERVAL)
        {
            self.last_report = Some(Instant::now());
            self.ctx.progress(Progress {
                step: StepName::FetchBasebackup.to_string(),
                bytes_done: self.copy.received(),
                bytes_total: None,
            });
        }
        Ok(n)
    }
}

/// What an unpacked archive held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UnpackStats {
    pub files: u64,
    pub directories: u64,
    /// Bytes of file contents written.
    pub bytes: u64,
}

/// Why an archive could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// The stream failed: the connection, the gzip layer, or the tar framing.
    #[error("cannot read the archive: {0}")]
    Read(io::Error),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    /// An entry that would leave PGDATA, or of a kind a base backup has no use for.
    #[error("tar entry {path:?} {reason}")]
    Entry { path: String, reason: String },
    #[error("cancelled")]
    Cancelled,
}

/// Unpacks a tar stream into `pgdata` as it is read, never holding more than a chunk of it:
/// regular files and directories only, every path inside `pgdata`, modes from the archive,
/// owned by `owner` when given. Reads the stream to its end, so that a compressed stream's
/// trailer is checked.
pub fn unpack<R: Read>(
    reader: R,
    pgdata: &Path,
    owner: Option<&PgUser>,
    cancel: &CancelToken,
) -> Result<UnpackStats, UnpackError> {
    let mut stats = UnpackStats::default();
    let mut archive = tar::Archive::new(reader);
    let mut chunk = vec![0_u8; COPY_CHUNK_BYTES];
    {
        let entries = archive.entries().map_err(UnpackError::Read)?;
        for entry in entries {
            if cancel.is_cancelled() {
                return Err(UnpackError::Cancelled);
            }
            let mut entry = entry.map_err(UnpackError::Read)?;
            let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let relative = inside(&shown)?;
            let kind = entry.header().entry_type();
            let mode = entry.header().mode().map_err(UnpackError::Read)? & 0o777;
            let target = pgdata.join(&relative);
            let write_error = |path: &Path, source| UnpackError::Write {
                path: path.to_path_buf(),
                source,
            };
            match kind {
                tar::EntryType::Directory => {
                    if relative.as_os_str().is_empty() {
                        // PGDATA itself: its mode and owner stay as init set them (0700).
                        continue;
                    }
                    make_parents(pgdata, &relative, owner)?;
                    match fs::symlink_metadata(&target) {
                        Ok(meta) if meta.is_dir() => {}
                        Ok(_) => {
                            return Err(UnpackError::Entry {
                                path: shown,
                                reason: "is a directory where a file was unpacked".into(),
                            })
                        }
                        Err(_) => fs::create_dir(&target).map_err(|e| write_error(&target, e))?,
                    }
                    fs::set_permissions(&target, fs::Permissions::from_mode(mode))
                        .map_err(|e| write_error(&target, e))?;
                    if let Some(owner) = owner {
                        std::os::unix::fs::chown(&target, Some(owner.uid), Some(owner.gid))
                            .map_err(|e| write_error(&target, e))?;
                    }
                    stats.directories += 1;
                }
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    if relative.as_os_str().is_empty() {
                        return Err(UnpackError::Entry {
                            path: shown,
                            reason: "names PGDATA itself as a file".into(),
                        });
                    }
                    make_parents(pgdata, &relative, owner)?;
                    // O_NOFOLLOW: a link can never redirect a write out of PGDATA.
                    let mut file = fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(0o600)
                        .custom_flags(libc::O_NOFOLLOW)
                        .open(&target)
                        .map_err(|e| write_error(&target, e))?;
                    loop {
                        let n = entry.read(&mut chunk).map_err(UnpackError::Read)?;
                        if n == 0 {
                            break;
                        }
                        file.write_all(&chunk[..n])
                            .map_err(|e| write_error(&target, e))?;
                        stats.bytes += n as u64;
                    }
                    file.set_permissions(fs::Permissions::from_mode(mode))
                        .map_err(|e| write_error(&target, e))?;
                    if let Some(owner) = owner {
                        std::os::unix::fs::fchown(&file, Some(owner.uid), Some(owner.gid))
                            .map_err(|e| write_error(&target, e))?;
                    }
                    stats.files += 1;
                }
                // Extension headers that describe the next entry; the tar crate applies them.
                tar::EntryType::XGlobalHeader
                | tar::EntryType::XHeader
                | tar::EntryType::GNULongName
                | tar::EntryType::GNULongLink => {}
                other => {
                    return Err(UnpackError::Entry {
                        path: shown,
                        reason: format!(
                            "is a {other:?} entry: a base backup holds only regular files and directories"
                        ),
                    })
                }
            }
        }
    }
    // The rest of the stream: the archive's end blocks and, under gzip, the trailer whose
    // checksum proves the data whole.
    let mut rest = archive.into_inner();
    loop {
        match rest.read(&mut chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(UnpackError::Read(e)),
        }
    }
    Ok(stats)
}

/// The path of an entry relative to PGDATA; an error for one that is absolute or climbs out.
fn inside(shown: &str) -> Result<PathBuf, UnpackError> {
    let mut relative = PathBuf::new();
    for component in Path::new(shown).components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(UnpackError::Entry {
                    path: shown.to_string(),
                    reason: "is an absolute path: refusing to write outside PGDATA".into(),
                })
            }
            Component::ParentDir => {
                return Err(UnpackError::Entry {
                    path: shown.to_string(),
                    reason: "climbs out with '..': refusing to write outside PGDATA".into(),
                })
            }
        }
    }
    Ok(relative)
}

/// Creates the directories above `relative` that the archive did not list before it (mode
/// 0700, owned by `owner`). Only directories are ever created, so none of them is a link.
fn make_parents(pgdata: &Path, relative: &Path, owner: Option<&PgUser>) -> Result<(), UnpackError> {
    let Some(parent) = relative.parent() else {
        return Ok(());
    };
    let mut path = pgdata.to_path_buf();
    for part in parent.components() {
        path.push(part);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(UnpackError::Entry {
                    path: relative.display().to_string(),
                    reason: format!(
                        "needs {} to be a directory, and it is a file",
                        path.display()
                    ),
                })
            }
            Err(_) => {
                fs::create_dir(&path).map_err(|source| UnpackError::Write {
                    path: path.clone(),
                    source,
                })?;
                fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).map_err(
                    |source| UnpackError::Write {
                        path: path.clone(),
                        source,
                    },
                )?;
                if let Some(owner) = owner {
                    owner.chown(&path).map_err(|e| UnpackError::Write {
                        path: path.clone(),
                        source: io::Error::other(format!("{e:#}")),
                    })?;
                }
            }
        }
    }
    Ok(())
}

/// Neon's storage settings from the spec's fields, in the order Neon's `write_postgres_conf`
/// (compute_tools/src/config.rs) writes them, leaving out those the spec's own settings already
/// give; for a read-only compute hot standby, at its LSN for a static one.
fn storage_settings(spec: &ParsedSpec) -> Vec<(String, String)> {
    let Some(neon) = fields(spec) else {
        return Vec::new();
    };
    let mut wanted: Vec<(String, String)> = Vec::new();
    // Before the connection string, as Neon's `write_postgres_conf` (compute_tools/src/
    // config.rs) writes it: the extension reads the stripe size to route pages to shards.
    if let Some(stripe_size) = neon.stripe_size {
        wanted.push(("neon.stripe_size".into(), stripe_size.to_string()));
    }
    wanted.push((
        "neon.pageserver_connstring".into(),
        neon.pageserver_connstring.to_string(),
    ));
    if !neon.safekeepers.is_empty() {
        wanted.push(("neon.safekeepers".into(), neon.safekeepers.join(",")));
    }
    wanted.push(("neon.tenant_id".into(), neon.tenant_id.to_string()));
    wanted.push(("neon.timeline_id".into(), neon.timeline_id.to_string()));
    wanted.retain(|(name, value)| spec.spec.cluster.setting(name) != Some(value.as_str()));
    match neon.mode {
        ComputeMode::Primary => {}
        ComputeMode::Replica => wanted.push(("hot_standby".into(), "on".into())),
        ComputeMode::Static(lsn) => {
            wanted.push(("hot_standby".into(), "on".into()));
            wanted.push(("recovery_target_lsn".into(), lsn.to_string()));
        }
    }
    wanted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sharded_tenant_gets_its_stripe_size_before_the_pageservers() {
        let spec = crate::spec::parse(include_bytes!(
            "../../fixtures/specs/neon-connection-info.json"
        ))
        .expect("the fixture is valid");
        let names: Vec<(String, String)> = storage_settings(&spec)
            .into_iter()
            .filter(|(name, _)| name == "neon.stripe_size" || name == "neon.pageserver_connstring")
            .collect();
        assert_eq!(
            names,
            vec![
                ("neon.stripe_size".to_string(), "2048".to_string()),
                (
                    "neon.pageserver_connstring".to_string(),
                    "postgresql://no_user@127.0.0.1:6400,postgresql://no_user@127.0.0.1:6401"
                        .to_string()
                ),
            ]
        );
        let unsharded =
            crate::spec::parse(include_bytes!("../../fixtures/specs/neon.json")).expect("valid");
        assert!(storage_settings(&unsharded)
            .iter()
            .all(|(name, _)| name != "neon.stripe_size"));
    }

    #[test]
    fn the_command_is_neons() {
        let tenant = "b0554b632bd4d547a63b86c3630317e8";
        let timeline = "2414a61ffc94e428f14b5758fe308e13";
        let lsn = Some(Lsn(0x16B3748));
        assert_eq!(
            basebackup_command(tenant, timeline, lsn, ComputeMode::Primary),
            format!("basebackup {tenant} {timeline} 0/16B3748 --gzip")
        );
        assert_eq!(
            basebackup_command(tenant, timeline, Some(Lsn(0)), ComputeMode::Primary),
            format!("basebackup {tenant} {timeline} --gzip")
        );
        assert_eq!(
            basebackup_command(tenant, timeline, None, ComputeMode::Replica),
            format!("basebackup {tenant} {timeline} --gzip --replica")
        );
        assert_eq!(
            basebackup_command(tenant, timeline, lsn, ComputeMode::Static(Lsn(0x16B3748))),
            format!("basebackup {tenant} {timeline} 0/16B3748 --gzip --replica")
        );
    }

    #[test]
    fn the_sync_output_is_its_last_line() {
        assert_eq!(parse_sync_output("0/16B3748\n"), Ok(Lsn(0x16B3748)));
        assert_eq!(
            parse_sync_output("something first\n1/2\n\n"),
            Ok(Lsn((1 << 32) | 2))
        );
        assert!(parse_sync_output("").is_err());
        assert!(parse_sync_output("0/1\nno lsn here\n").is_err());
    }

    #[test]
    fn entries_outside_pgdata_are_refused() {
        assert_eq!(inside("./base/1/123").unwrap(), PathBuf::from("base/1/123"));
        assert_eq!(inside(".").unwrap(), PathBuf::new());
        for bad in ["/etc/passwd", "../x", "base/../../x"] {
            assert!(
                matches!(inside(bad), Err(UnpackError::Entry { .. })),
                "{bad}"
            );
        }
    }

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        builder.into_inner().unwrap()
    }

    fn file_header(path: &[u8], size: u64, kind: tar::EntryType) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        // Written raw: set_path itself refuses `..` and absolute paths.
        header.as_old_mut().name[..path.len()].copy_from_slice(path);
        header.set_size(size);
        header.set_mode(0o640);
        header.set_entry_type(kind);
        header.set_cksum();
        header
    }

    #[test]
    fn unpacks_files_and_directories_with_their_modes() {
        let dir = tempfile::tempdir().unwrap();
        let data = archive(|b| {
            let mut header = tar::Header::new_gnu();
            header.set_path("global").unwrap();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o700);
            header.set_size(0);
            header.set_cksum();
            b.append(&header, io::empty()).unwrap();
            b.append(
                &file_header(b"global/pg_control", 5, tar::EntryType::Regular),
                &b"hello"[..],
            )
            .unwrap();
            // No directory entry before it: its parents are made.
            b.append(
                &file_header(b"base/1/123", 3, tar::EntryType::Regular),
                &b"abc"[..],
            )
            .unwrap();
        });
        let stats = unpack(&data[..], dir.path(), None, &CancelToken::new()).unwrap();
        assert_eq!(
            stats,
            UnpackStats {
                files: 2,
                directories: 1,
                bytes: 8
            }
        );
        assert_eq!(
            fs::read(dir.path().join("global/pg_control")).unwrap(),
            b"hello"
        );
        let mode = fs::metadata(dir.path().join("base/1/123"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        let mode = fs::metadata(dir.path().join("base"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn refuses_escapes_and_links() {
        let outer = tempfile::tempdir().unwrap();
        let pgdata = outer.path().join("pgdata");
        fs::create_dir(&pgdata).unwrap();
        for (path, kind) in [
            (&b"../escaped"[..], tar::EntryType::Regular),
            (&b"/tmp/absolute"[..], tar::EntryType::Regular),
            (&b"link"[..], tar::EntryType::Symlink),
            (&b"hard"[..], tar::EntryType::Link),
        ] {
            let data = archive(|b| b.append(&file_header(path, 0, kind), io::empty()).unwrap());
            let result = unpack(&data[..], &pgdata, None, &CancelToken::new());
            assert!(
                matches!(result, Err(UnpackError::Entry { .. })),
                "{}: {result:?}",
                String::from_utf8_lossy(path)
            );
        }
        assert!(!outer.path().join("escaped").exists());
        assert_eq!(fs::read_dir(&pgdata).unwrap().count(), 0);
    }

    #[test]
    fn a_cut_gzip_stream_is_a_read_error() {
        let data = archive(|b| {
            b.append(
                &file_header(b"f", 4096, tar::EntryType::Regular),
                &vec![7_u8; 4096][..],
            )
            .unwrap();
        });
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&data).unwrap();
        let gz = gz.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let whole = unpack(
            flate2::read::GzDecoder::new(&gz[..]),
            dir.path(),
            None,
            &CancelToken::new(),
        );
        assert_eq!(whole.unwrap().files, 1);
        let cut = unpack(
            flate2::read::GzDecoder::new(&gz[..gz.len() - 6]),
            dir.path(),
            None,
            &CancelToken::new(),
        );
        assert!(matches!(cut, Err(UnpackError::Read(_))), "{cut:?}");
    }

    #[test]
    fn a_deadline_kills_the_program() {
        let started = Instant::now();
        let ran = run_with_deadline(
            Command::new("sh").args(["-c", "sleep 30 & sleep 30; wait"]),
            &CancelToken::new(),
            Duration::from_millis(200),
        );
        assert!(matches!(ran, Ran::TimedOut(_)));
        assert!(started.elapsed() < Duration::from_secs(10));
        let ran = run_with_deadline(
            Command::new("sh").args(["-c", "echo 0/1"]),
            &CancelToken::new(),
            Duration::from_secs(30),
        );
        assert!(matches!(ran, Ran::Finished(f) if f.stdout.trim() == "0/1"));
    }
}
