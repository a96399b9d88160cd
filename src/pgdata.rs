//! PGDATA's safety rules: compute_ctl wipes a data directory only if it is absent, empty, or
//! its own, and marks its own.
//!
//! "Its own" means one of two things:
//! - the directory holds the marker file (`compute_ctl.pgdata`), written once a base backup or
//!   `initdb` has filled it;
//! - the state directory holds a claim (`pgdata.claim`) naming this directory: written, durably,
//!   before a wipe begins and removed once the marker is in place, it covers a rebuild that a
//!   crash interrupted (`initdb` and `pg_basebackup` need an empty directory, so the marker
//!   cannot go in first).
//!
//! The staging directory of `--prepare` (`<PGDATA>.prepared`) is ours by the same rules, with
//! a claim file of its own (`prepared.claim`), so that a rebuild of PGDATA never drops it.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::durable::{write_atomic, write_atomic_owned, Persistence};
use crate::pg_user::PgUser;

/// The marker file inside a PGDATA compute_ctl filled.
pub const MARKER_FILE: &str = "compute_ctl.pgdata";
/// The claim file in the state directory while PGDATA is being rebuilt.
pub const CLAIM_FILE: &str = "pgdata.claim";
/// The claim file in the state directory while the staging directory of `--prepare` is built.
pub const STAGING_CLAIM_FILE: &str = "prepared.claim";

/// What a PGDATA path holds, as far as wiping it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PgdataKind {
    Absent,
    Empty,
    /// compute_ctl's own; the reason says how it knows.
    Own(&'static str),
    /// Someone else's: never wiped. The reason names what was found.
    Foreign(String),
}

impl PgdataKind {
    pub fn may_wipe(&self) -> bool {
        !matches!(self, PgdataKind::Foreign(_))
    }
}

impl std::fmt::Display for PgdataKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PgdataKind::Absent => f.write_str("absent"),
            PgdataKind::Empty => f.write_str("empty"),
            PgdataKind::Own(why) => write!(f, "compute_ctl's own: {why}"),
            PgdataKind::Foreign(why) => f.write_str(why),
        }
    }
}

/// Why PGDATA must not be wiped: it is someone else's, or it cannot be looked at.
#[derive(Debug)]
pub enum WipeRefused {
    Foreign { pgdata: PathBuf, why: String },
    Uninspectable(anyhow::Error),
}

impl std::fmt::Display for WipeRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WipeRefused::Foreign { pgdata, why } => write!(
                f,
                "PGDATA {} is not safe to wipe: {why}; compute_ctl wipes only a directory that is absent, empty, or carries its marker file {MARKER_FILE}",
                pgdata.display()
            ),
            WipeRefused::Uninspectable(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for WipeRefused {}

impl WipeRefused {
    /// As the error of the step that was about to wipe.
    pub fn to_step_error(
        &self,
        phase: states::PhaseName,
        step: states::StepName,
    ) -> states::StepError {
        let kind = match self {
            WipeRefused::Foreign { .. } => states::ErrorKind::PgdataUnsafe,
            WipeRefused::Uninspectable(_) => states::ErrorKind::Io,
        };
        states::StepError::new(phase, step, kind, self.to_string())
    }
}

/// The one safety check before any wipe of PGDATA: what it holds, if it may be wiped.
pub fn check_wipeable(pgdata: &Path, state_dir: &Path) -> Result<PgdataKind, WipeRefused> {
    match inspect(pgdata, state_dir).map_err(WipeRefused::Uninspectable)? {
        PgdataKind::Foreign(why) => Err(WipeRefused::Foreign {
            pgdata: pgdata.to_path_buf(),
            why,
        }),
        kind => Ok(kind),
    }
}

/// Inspects `pgdata` without changing anything.
pub fn inspect(pgdata: &Path, state_dir: &Path) -> anyhow::Result<PgdataKind> {
    let metadata = match std::fs::symlink_metadata(pgdata) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(PgdataKind::Absent),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot inspect PGDATA {}", pgdata.display()))
        }
    };
    if !metadata.is_dir() {
        return Ok(PgdataKind::Foreign("it is not a directory".to_string()));
    }
    if pgdata.join(MARKER_FILE).is_file() {
        return match owned_by(pgdata, state_dir) {
            Ok(()) => Ok(PgdataKind::Own("it holds compute_ctl's marker file")),
            // One PGDATA, one owner: another compute_ctl's directory is never wiped.
            Err(why) => Ok(PgdataKind::Foreign(why)),
        };
    }
    if claimed(state_dir, pgdata)? {
        return Ok(PgdataKind::Own(
            "its rebuild by compute_ctl was interrupted (claim in the state directory)",
        ));
    }
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(pgdata)
        .with_context(|| format!("cannot list PGDATA {}", pgdata.display()))?
    {
        let name = entry
            .with_context(|| format!("cannot list PGDATA {}", pgdata.display()))?
            .file_name();
        // A volume's root carries lost+found; it is not data.
        if name != "lost+found" {
            entries.push(name.to_string_lossy().into_owned());
        }
    }
    if entries.is_empty() {
        return Ok(PgdataKind::Empty);
    }
    entries.sort();
    let shown: Vec<&str> = entries.iter().take(5).map(String::as_str).collect();
    Ok(PgdataKind::Foreign(format!(
        "it holds {} entries ({}{}) and no compute_ctl marker",
        entries.len(),
        shown.join(", "),
        if entries.len() > 5 { ", ..." } else { "" }
    )))
}

/// Whether `pgdata`'s marker names `state_dir`: Err says what it names instead.
pub fn owned_by(pgdata: &Path, state_dir: &Path) -> Result<(), String> {
    let marker = pgdata.join(MARKER_FILE);
    let text = std::fs::read_to_string(&marker)
        .map_err(|e| format!("cannot read the marker {}: {e}", marker.display()))?;
    let named = text
        .split_once("(state directory ")
        .and_then(|(_, rest)| rest.split_once(");"))
        .map(|(dir, _)| PathBuf::from(dir));
    match named {
        Some(dir) if dir == absolute(state_dir) => Ok(()),
        Some(dir) => Err(format!(
            "its marker names the state directory {} of another compute_ctl, not {}",
            dir.display(),
            absolute(state_dir).display()
        )),
        None => Err(format!(
            "its marker {} names no state directory",
            marker.display()
        )),
    }
}

/// The exclusive lock on PGDATA itself, held for the life of the process once taken: two
/// compute_ctls never run on one PGDATA, whatever their state directories.
static PGDATA_LOCK: std::sync::Mutex<Option<std::fs::File>> = std::sync::Mutex::new(None);

/// Takes the PGDATA lock if PGDATA exists (an absent one is locked by the step that creates
/// it, `lock_created`): `Ok(Err(why))` when another process holds it. Changes nothing on disk.
pub fn lock_if_present(pgdata: &Path) -> anyhow::Result<Result<(), String>> {
    if !pgdata.exists() {
        return Ok(Ok(()));
    }
    take_lock(pgdata)
}

/// After PGDATA was created or emptied: the lock, if this process does not hold it yet.
pub fn lock_created(pgdata: &Path) -> anyhow::Result<()> {
    match take_lock(pgdata)? {
        Ok(()) => Ok(()),
        Err(held) => anyhow::bail!("{held}"),
    }
}

fn take_lock(pgdata: &Path) -> anyhow::Result<Result<(), String>> {
    use std::os::fd::AsRawFd;
    let mut held = crate::sync::lock(&PGDATA_LOCK);
    if held.is_some() {
        return Ok(Ok(()));
    }
    let dir = std::fs::File::open(pgdata)
        .with_context(|| format!("cannot open PGDATA {}", pgdata.display()))?;
    // SAFETY: flock on a descriptor we own; LOCK_NB never blocks.
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = std::io::Error::last_os_error();
        if error.kind() == std::io::ErrorKind::WouldBlock {
            return Ok(Err(format!(
                "PGDATA {} is locked by another running compute_ctl",
                pgdata.display()
            )));
        }
        return Err(error).with_context(|| format!("cannot lock PGDATA {}", pgdata.display()));
    }
    *held = Some(dir);
    Ok(Ok(()))
}

/// Refuses a PGDATA below a directory that `user` (who runs Postgres and its tools when
/// compute_ctl runs as root) cannot enter: `initdb` would fail later with only "Permission
/// denied". Each existing directory above PGDATA is tried by starting `program` (the postgres
/// binary, with `--version`) in it as that user, which is exactly what the tools need.
pub fn check_reachable(pgdata: &Path, user: &PgUser, program: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let can_start_in = |dir: &Path| -> std::io::Result<()> {
        let mut command = std::process::Command::new(program);
        command
            .arg("--version")
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        user.apply(&mut command);
        command.status().map(|_| ())
    };
    if let Err(e) = can_start_in(Path::new("/")) {
        anyhow::bail!(
            "OS user {} (--pg-user) cannot run {}: {e}; make it executable by that user (chmod o+rx) or name another --pg-user",
            user.name,
            program.display()
        );
    }
    let pgdata = absolute(pgdata);
    // Outermost first, so the message names the directory that locks the user out.
    let mut above: Vec<&Path> = pgdata.ancestors().skip(1).collect();
    above.reverse();
    for dir in above {
        let Ok(metadata) = std::fs::metadata(dir) else {
            // Missing: compute_ctl creates it (as root, mode 0755), which the user can enter.
            break;
        };
        if let Err(e) = can_start_in(dir) {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                anyhow::bail!(
                    "PGDATA {}: OS user {} (--pg-user), who runs Postgres, cannot enter {} (mode {:o}, owner uid {}): let it in (chmod o+x {}), put PGDATA in a directory it can enter, or name another --pg-user",
                    pgdata.display(),
                    user.name,
                    dir.display(),
                    metadata.mode() & 0o7777,
                    metadata.uid(),
                    dir.display()
                );
            }
            return Err(e).with_context(|| {
                format!(
                    "cannot check that OS user {} can enter {}",
                    user.name,
                    dir.display()
                )
            });
        }
    }
    Ok(())
}

/// Whether either claim file names `dir`.
fn claimed(state_dir: &Path, dir: &Path) -> anyhow::Result<bool> {
    for file in [CLAIM_FILE, STAGING_CLAIM_FILE] {
        let path = state_dir.join(file);
        match std::fs::read_to_string(&path) {
            Ok(text) if Path::new(text.trim()) == absolute(dir) => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
    Ok(false)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Durably records that compute_ctl is about to rebuild `pgdata`.
pub fn claim(state_dir: &Path, pgdata: &Path) -> anyhow::Result<()> {
    claim_in(state_dir, CLAIM_FILE, pgdata)
}

/// Durably records that compute_ctl is about to rebuild the staging directory `staging`.
pub fn claim_staging(state_dir: &Path, staging: &Path) -> anyhow::Result<()> {
    claim_in(state_dir, STAGING_CLAIM_FILE, staging)
}

fn claim_in(state_dir: &Path, file: &str, dir: &Path) -> anyhow::Result<()> {
    let path = state_dir.join(file);
    let text = format!("{}\n", absolute(dir).display());
    write_atomic(&path, text.as_bytes()).with_context(|| format!("cannot write {}", path.display()))
}

/// Empties `pgdata` (keeping the directory itself, which may be a mount point) or creates it,
/// with mode 0700, owned by the Postgres user.
pub fn wipe_and_recreate(pgdata: &Path, owner: Option<&PgUser>) -> anyhow::Result<()> {
    match std::fs::read_dir(pgdata) {
        Ok(entries) => {
            for entry in entries {
                let path = entry
                    .with_context(|| format!("cannot list PGDATA {}", pgdata.display()))?
                    .path();
                let removed = if path.is_dir() && !path.is_symlink() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                match removed {
                    // Gone already (something of an earlier run removed it): what we want.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    other => other.with_context(|| format!("cannot remove {}", path.display()))?,
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(pgdata)
                .with_context(|| format!("cannot create PGDATA {}", pgdata.display()))?;
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot open PGDATA {}", pgdata.display()))
        }
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(pgdata, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot set the mode of PGDATA {}", pgdata.display()))?;
    if let Some(owner) = owner {
        owner.chown(pgdata)?;
    }
    if let Some(parent) = pgdata.parent() {
        crate::durable::fsync_dir(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        })
        .with_context(|| format!("cannot sync the parent of PGDATA {}", pgdata.display()))?;
    }
    Ok(())
}

/// Marks a filled `pgdata` as compute_ctl's, then drops the claim.
pub fn mark(pgdata: &Path, state_dir: &Path, owner: Option<&PgUser>) -> anyhow::Result<()> {
    mark_with(pgdata, state_dir, owner, CLAIM_FILE)
}

/// Marks a filled staging directory as compute_ctl's, then drops its claim.
pub fn mark_staging(
    staging: &Path,
    state_dir: &Path,
    owner: Option<&PgUser>,
) -> anyhow::Result<()> {
    mark_with(staging, state_dir, owner, STAGING_CLAIM_FILE)
}

fn mark_with(
    pgdata: &Path,
    state_dir: &Path,
    owner: Option<&PgUser>,
    claim_file: &str,
) -> anyhow::Result<()> {
    let marker = pgdata.join(MARKER_FILE);
    let text = format!(
        "this data directory is managed by compute_ctl (state directory {}); it is wiped on every start\n",
        absolute(state_dir).display()
    );
    write_atomic_owned(
        &marker,
        text.as_bytes(),
        owner.map(PgUser::ids),
        Persistence::Durable,
    )
    .with_context(|| format!("cannot write {}", marker.display()))?;
    let claim = state_dir.join(claim_file);
    match std::fs::remove_file(&claim) {
        Ok(()) => crate::durable::fsync_dir(state_dir)
            .with_context(|| format!("cannot sync {}", state_dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", claim.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_directories() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let pgdata = root.path().join("pgdata");
        assert_eq!(inspect(&pgdata, &state).unwrap(), PgdataKind::Absent);
        std::fs::create_dir(&pgdata).unwrap();
        std::fs::create_dir(pgdata.join("lost+found")).unwrap();
        assert_eq!(inspect(&pgdata, &state).unwrap(), PgdataKind::Empty);
        std::fs::write(pgdata.join("PG_VERSION"), "15\n").unwrap();
        assert!(!inspect(&pgdata, &state).unwrap().may_wipe());
        claim(&state, &pgdata).unwrap();
        assert!(matches!(
            inspect(&pgdata, &state).unwrap(),
            PgdataKind::Own(_)
        ));
        mark(&pgdata, &state, None).unwrap();
        assert!(!state.join(CLAIM_FILE).exists());
        assert!(matches!(
            inspect(&pgdata, &state).unwrap(),
            PgdataKind::Own(_)
        ));
        wipe_and_recreate(&pgdata, None).unwrap();
        assert_eq!(inspect(&pgdata, &state).unwrap(), PgdataKind::Empty);
    }

    #[test]
    fn a_claim_for_another_path_does_not_count() {
        let root = tempfile::tempdir().unwrap();
        let pgdata = root.path().join("pgdata");
        std::fs::create_dir(&pgdata).unwrap();
        std::fs::write(pgdata.join("x"), "").unwrap();
        claim(root.path(), &root.path().join("elsewhere")).unwrap();
        assert!(!inspect(&pgdata, root.path()).unwrap().may_wipe());
    }
}
