//! The prepared start (`--prepare`): a cluster `initdb`'d in a staging directory while
//! compute_ctl waits in `empty`, moved into PGDATA when a spec for the embedded default comes.
//!
//! The staging directory is `<PGDATA>.prepared`, a sibling of PGDATA (so that moving the
//! cluster is a `rename` of each entry on one file system), and it is ours by PGDATA's rules
//! (`pgdata::check_wipeable`: absent, empty, our marker, or our claim). A cluster is used only
//! by the run that prepared it: its stamp file names this process run, so after a restart the
//! directory is prepared afresh, never reused for another spec.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context;

use crate::pg_user::PgUser;
use crate::pgdata::{self, PgdataKind, MARKER_FILE};

/// The file in the staging directory that says which process run prepared it.
pub const STAMP_FILE: &str = "compute_ctl.prepared";

/// The staging directory for `pgdata`: `<PGDATA>.prepared`.
pub fn staging_dir(pgdata: &Path) -> PathBuf {
    let mut name = pgdata.as_os_str().to_owned();
    name.push(".prepared");
    PathBuf::from(name)
}

/// This process run's stamp: its pid and the time it first asked, so a re-executed or
/// restarted compute_ctl never takes an earlier run's cluster for its own.
fn run_stamp() -> &'static str {
    static STAMP: OnceLock<String> = OnceLock::new();
    STAMP.get_or_init(|| {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!(
            "prepared by compute_ctl pid {} at {started}\n",
            std::process::id()
        )
    })
}

/// Checks the staging directory (ours, or absent or empty), claims it, and leaves it empty
/// for `initdb`, owned by the Postgres user. Returns what it held.
pub fn make_ready(
    staging: &Path,
    state_dir: &Path,
    owner: Option<&PgUser>,
) -> Result<PgdataKind, String> {
    let kind = pgdata::check_wipeable(staging, state_dir)
        .map_err(|e| format!("the staging directory of --prepare: {e}"))?;
    pgdata::claim_staging(state_dir, staging).map_err(|e| format!("{e:#}"))?;
    pgdata::wipe_and_recreate(staging, owner).map_err(|e| {
        format!(
            "cannot empty the staging directory {}: {e:#}",
            staging.display()
        )
    })?;
    Ok(kind)
}

/// After `initdb`: the marker (which drops the claim) and this run's stamp.
pub fn seal(staging: &Path, state_dir: &Path, owner: Option<&PgUser>) -> anyhow::Result<()> {
    pgdata::mark_staging(staging, state_dir, owner)?;
    let stamp = staging.join(STAMP_FILE);
    std::fs::write(&stamp, run_stamp()).with_context(|| format!("cannot write {}", stamp.display()))
}

/// Why the staging directory holds no cluster this run can use, if it holds none.
pub fn unusable(staging: &Path) -> Option<String> {
    let stamp = staging.join(STAMP_FILE);
    match std::fs::read_to_string(&stamp) {
        Ok(text) if text == run_stamp() => None,
        Ok(_) => Some(format!(
            "{} names an earlier run: a prepared cluster is never reused after a restart",
            stamp.display()
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(format!(
            "the staging directory {} holds no finished preparation (cancelled, failed, or never begun)",
            staging.display()
        )),
        Err(e) => Some(format!("cannot read {}: {e}", stamp.display())),
    }
}

/// Moves the prepared cluster's entries into the empty, locked PGDATA (a `rename` each, so
/// PGDATA keeps its inode and its lock), then removes the staging directory. The staging
/// marker goes last: a crash half-way leaves both directories ours. Returns how many entries
/// moved.
pub fn move_into(staging: &Path, pgdata: &Path) -> anyhow::Result<usize> {
    let mut moved = 0;
    let entries = std::fs::read_dir(staging)
        .with_context(|| format!("cannot list the staging directory {}", staging.display()))?;
    for entry in entries {
        let entry = entry
            .with_context(|| format!("cannot list the staging directory {}", staging.display()))?;
        let name = entry.file_name();
        if name == MARKER_FILE || name == STAMP_FILE {
            continue;
        }
        let to = pgdata.join(&name);
        std::fs::rename(entry.path(), &to).with_context(|| {
            format!("cannot move {} to {}", entry.path().display(), to.display())
        })?;
        moved += 1;
    }
    remove(staging)?;
    Ok(moved)
}

/// Removes the staging directory (only if it is ours, empty or absent; the caller checked).
pub fn remove(staging: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(staging) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e)
            .with_context(|| format!("cannot remove the staging directory {}", staging.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_cluster_moves_into_pgdata_and_the_staging_directory_goes() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let pgdata = root.path().join("pgdata");
        std::fs::create_dir(&pgdata).unwrap();
        let staging = staging_dir(&pgdata);
        assert_eq!(staging, root.path().join("pgdata.prepared"));
        assert!(unusable(&staging).is_some());
        make_ready(&staging, &state, None).unwrap();
        std::fs::write(staging.join("PG_VERSION"), "15\n").unwrap();
        std::fs::create_dir(staging.join("base")).unwrap();
        // Half-built (no marker yet) but claimed: ours.
        assert!(pgdata::check_wipeable(&staging, &state).is_ok());
        assert!(unusable(&staging).is_some());
        seal(&staging, &state, None).unwrap();
        assert_eq!(unusable(&staging), None);
        assert_eq!(move_into(&staging, &pgdata).unwrap(), 2);
        assert!(pgdata.join("PG_VERSION").is_file() && pgdata.join("base").is_dir());
        assert!(!staging.exists());
    }

    #[test]
    fn a_foreign_staging_directory_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let staging = staging_dir(&root.path().join("pgdata"));
        std::fs::create_dir(&staging).unwrap();
        std::fs::write(staging.join("precious"), "x").unwrap();
        let refused = make_ready(&staging, root.path(), None).unwrap_err();
        assert!(refused.contains("staging directory"), "{refused}");
        assert!(staging.join("precious").exists());
    }
}
