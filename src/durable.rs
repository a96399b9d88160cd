//! Durable file operations: the one way this project writes a file that must survive a crash.
//!
//! A file is durable when its bytes and its directory entry are on disk. `write_atomic` gets
//! both, and never leaves a half-written file under the final name: write a temp file in the
//! same directory, fsync it, rename it over the final name, fsync the directory. A failed
//! fsync is returned, never retried: after a failed fsync the kernel may have dropped the
//! dirty pages, so a second fsync can succeed without the data being on disk.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A file operation that failed, naming what was done to which path.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {source}", path.display())]
pub struct DurableError {
    /// What was being done (`fsync directory`, `rename temp file onto`, ...).
    pub action: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl DurableError {
    fn new(action: &'static str, path: &Path, source: io::Error) -> DurableError {
        DurableError {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// Temp files of concurrent `write_atomic` calls in one process must not collide.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Replaces `path` with `bytes` so that after a crash it holds either the old content or the
/// new, never a mix, and the new content is durable when this returns.
///
/// The file is created with mode 0600: stored specs hold password verifiers.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DurableError> {
    write_atomic_owned(path, bytes, None, Persistence::Durable)
}

/// How far a replacement gets before it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persistence {
    /// Survives a machine crash: the file and its directory are fsynced.
    Durable,
    /// Readers see the old file or the new one, never half of one; a machine crash may lose
    /// it. For files in PGDATA that every start writes anew (`postgresql.conf`): their syncs
    /// protect nothing and stall reconfigurations on a busy disk.
    Rebuilt,
}

/// `write_atomic`, the file given to `owner` (uid, gid) before it takes the target's name
/// (files in PGDATA belong to the Postgres OS user, and a reader never sees one it cannot
/// read), synced as `persistence` says.
pub fn write_atomic_owned(
    path: &Path,
    bytes: &[u8],
    owner: Option<(u32, u32)>,
    persistence: Persistence,
) -> Result<(), DurableError> {
    let dir = parent_dir(path);
    let name = path.file_name().ok_or_else(|| {
        DurableError::new(
            "write",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"),
        )
    })?;
    let temp = dir.join(format!(
        ".{}.tmp.{}.{}",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = write_temp(&temp, bytes, owner, persistence).and_then(|()| {
        fs::rename(&temp, path).map_err(|e| DurableError::new("rename temp file onto", path, e))
    });
    if let Err(e) = written {
        // The temp file is garbage now; a failure to remove it is not worth hiding the
        // original error for.
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    match persistence {
        Persistence::Durable => {
            crate::failpoint!(crate::failpoint::durable_point(path, "renamed"), |e| Err(
                DurableError::new("fsync directory", dir, e)
            ));
            fsync_dir(dir)?;
            crate::failpoint!(
                crate::failpoint::durable_point(path, "dir_synced"),
                |e| Err(DurableError::new("fsync directory", dir, e))
            );
            Ok(())
        }
        Persistence::Rebuilt => Ok(()),
    }
}

fn write_temp(
    temp: &Path,
    bytes: &[u8],
    owner: Option<(u32, u32)>,
    persistence: Persistence,
) -> Result<(), DurableError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(temp)
        .map_err(|e| DurableError::new("create", temp, e))?;
    file.write_all(bytes)
        .map_err(|e| DurableError::new("write", temp, e))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
            .map_err(|e| DurableError::new("give away", temp, e))?;
    }
    match persistence {
        Persistence::Durable => {
            crate::failpoint!(crate::failpoint::durable_point(temp, "temp_written"), |e| {
                Err(DurableError::new("fsync", temp, e))
            });
            file.sync_all()
                .map_err(|e| DurableError::new("fsync", temp, e))?;
            crate::failpoint!(crate::failpoint::durable_point(temp, "temp_synced"), |e| {
                Err(DurableError::new("rename temp file onto", temp, e))
            });
            Ok(())
        }
        Persistence::Rebuilt => Ok(()),
    }
}

/// fsyncs a directory, making the creation, removal and renaming of its entries durable.
pub fn fsync_dir(path: &Path) -> Result<(), DurableError> {
    let dir = File::open(path).map_err(|e| DurableError::new("open directory", path, e))?;
    dir.sync_all()
        .map_err(|e| DurableError::new("fsync directory", path, e))
}

/// Creates `path` and its missing parents, fsyncing the parent of each directory it creates so
/// the new entries survive a crash. A directory that exists already is fine.
pub fn create_dir_all_durable(path: &Path) -> Result<(), DurableError> {
    let mut missing = Vec::new();
    let mut at = path;
    loop {
        match fs::metadata(at) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => {
                return Err(DurableError::new(
                    "create directory",
                    at,
                    io::Error::new(io::ErrorKind::AlreadyExists, "a file is in the way"),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(at);
                match at.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => at = parent,
                    // A relative path's last component: its parent is the working directory,
                    // which exists.
                    _ => break,
                }
            }
            Err(e) => return Err(DurableError::new("inspect", at, e)),
        }
    }
    for dir in missing.iter().rev() {
        match fs::create_dir(dir) {
            Ok(()) => {}
            // Someone else created it meanwhile: it exists, which is all we want; its parent
            // is still fsynced below in case the other creator has not done so yet.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(DurableError::new("create directory", dir, e)),
        }
        fsync_dir(parent_dir(dir))?;
    }
    Ok(())
}

/// The directory holding `path`; `.` for a bare file name.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn write_atomic_replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two, longer").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two, longer");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn write_atomic_into_a_missing_directory_fails_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent").join("a.json");
        let err = write_atomic(&path, b"x").unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }

    #[test]
    fn create_dir_all_durable_creates_nested_directories_and_accepts_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a").join("b").join("c");
        create_dir_all_durable(&nested).unwrap();
        assert!(nested.is_dir());
        create_dir_all_durable(&nested).unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"").unwrap();
        let err = create_dir_all_durable(&file).unwrap_err();
        assert!(err.to_string().contains("a file is in the way"), "{err}");
        assert!(create_dir_all_durable(&file.join("below")).is_err());
    }
}
