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

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::durable::{write_atomic, write_atomic_owned, Persistence};
use crate::pg_user::PgUser;

/// The marker file inside a PGDATA compute_ctl filled.
pub const MARKER_FILE: &str = "compute_ctl.pgdata";
/// The claim file in the state directory while PGDATA is being rebuilt.
pub const CLAIM_FILE: &str = "pgdata.claim";

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
        return Ok(PgdataKind::Own("it holds compute_ctl's marker file"));
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

fn claim_path(state_dir: &Path) -> PathBuf {
    state_dir.join(CLAIM_FILE)
}

fn claimed(state_dir: &Path, pgdata: &Path) -> anyhow::Result<bool> {
    match std::fs::read_to_string(claim_path(state_dir)) {
        Ok(text) => Ok(Path::new(text.trim()) == absolute(pgdata)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => {
            Err(e).with_context(|| format!("cannot read {}", claim_path(state_dir).display()))
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Durably records that compute_ctl is about to rebuild `pgdata`.
pub fn claim(state_dir: &Path, pgdata: &Path) -> anyhow::Result<()> {
    let text = format!("{}\n", absolute(pgdata).display());
    write_atomic(&claim_path(state_dir), text.as_bytes())
        .with_context(|| format!("cannot write {}", claim_path(state_dir).display()))
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
                removed.with_context(|| format!("cannot remove {}", path.display()))?;
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
    match std::fs::remove_file(claim_path(state_dir)) {
        Ok(()) => crate::durable::fsync_dir(state_dir)
            .with_context(|| format!("cannot sync {}", state_dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => {
            Err(e).with_context(|| format!("cannot remove {}", claim_path(state_dir).display()))
        }
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
