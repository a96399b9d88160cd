//! Accepted specs, stored beside the journal by hash: `<state-dir>/specs/<sha256 hex>.json`.
//!
//! A `spec_accepted` record names a spec by its hash; the spec itself is stored (atomically,
//! durably) before that record is appended, so a replayed journal always finds its specs.

use std::io;
use std::path::{Path, PathBuf};

use super::JournalError;
use crate::durable::{create_dir_all_durable, write_atomic};

/// The specs' directory inside the state directory.
pub const SPECS_DIR: &str = "specs";

/// The prefix of a spec hash in records (`sha256:<hex>`), accepted and dropped here.
const HASH_PREFIX: &str = "sha256:";

/// Where the spec with this hash is stored. `hash_hex` is 64 lowercase hex digits (with or
/// without `sha256:`); anything else is refused, so a hash can never name a path elsewhere.
pub fn spec_path(state_dir: &Path, hash_hex: &str) -> Result<PathBuf, JournalError> {
    let hex = hash_hex.strip_prefix(HASH_PREFIX).unwrap_or(hash_hex);
    let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !valid {
        return Err(JournalError::Invalid {
            reason: format!("spec hash {hash_hex:?} is not 64 lowercase hex digits"),
        });
    }
    Ok(state_dir.join(SPECS_DIR).join(format!("{hex}.json")))
}

/// Stores a spec's bytes under its hash, durably (temp file, fsync, rename, fsync directory),
/// creating `specs/` if needed. Returns the file's path.
pub fn store_spec(state_dir: &Path, hash_hex: &str, bytes: &[u8]) -> Result<PathBuf, JournalError> {
    let path = spec_path(state_dir, hash_hex)?;
    // Named by its hash: the same bytes already there were written (atomically, durably)
    // before; anything else there is replaced.
    if std::fs::read(&path).is_ok_and(|stored| stored == bytes) {
        return Ok(path);
    }
    create_dir_all_durable(&state_dir.join(SPECS_DIR))?;
    write_atomic(&path, bytes)?;
    Ok(path)
}

/// The bytes of the spec stored under this hash.
pub fn load_spec(state_dir: &Path, hash_hex: &str) -> Result<Vec<u8>, JournalError> {
    let path = spec_path(state_dir, hash_hex)?;
    std::fs::read(&path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => JournalError::Missing { path },
        _ => JournalError::Io { path, source },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn a_stored_spec_loads_back_by_hash_with_or_without_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = store_spec(dir.path(), HASH, b"{\"a\":1}").unwrap();
        assert_eq!(path, dir.path().join("specs").join(format!("{HASH}.json")));
        assert_eq!(load_spec(dir.path(), HASH).unwrap(), b"{\"a\":1}");
        let prefixed = format!("sha256:{HASH}");
        assert_eq!(load_spec(dir.path(), &prefixed).unwrap(), b"{\"a\":1}");
    }

    #[test]
    fn a_hash_that_is_not_hex_is_refused_and_a_missing_spec_is_named() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["../../etc/passwd", "", &HASH.to_uppercase(), &HASH[1..]] {
            let err = store_spec(dir.path(), bad, b"{}").unwrap_err();
            assert!(matches!(err, JournalError::Invalid { .. }), "{bad}: {err}");
        }
        let err = load_spec(dir.path(), HASH).unwrap_err();
        assert!(err.to_string().contains(HASH), "{err}");
        assert!(!dir.path().join("specs").exists());
    }
}
