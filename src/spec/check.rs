//! `compute_ctl spec check FILE [-b POSTGRES] [-C URL]`: the form rules and the databases'
//! owners, and with a binary the setting names, values and preload libraries, without touching
//! anything.

use std::io::Write;
use std::path::Path;

use super::path::under;
use super::SettingCatalog;

/// The spec is valid.
pub const CHECK_OK: i32 = 0;
/// A bad command line, as the contract's code 2: `-b` names no usable Postgres binary, or
/// `-C` is not a connection string.
pub const CHECK_BAD_BINARY: i32 = 2;
/// The spec is invalid, or the file cannot be read (the contract's "bad spec file").
pub const CHECK_INVALID: i32 = 3;

/// Checks the spec in `path` and returns the process exit code: 0 after printing
/// `ok: <hash> (<storage>)` on `out`; 3 after printing each error as `<path>: <reason>` (or
/// why the file cannot be read) on `err`; 2 when `postgres_bin` cannot be described. Database
/// owners are checked against the spec's roles and `admin_role`; with `postgres_bin`, setting
/// names, values and `shared_preload_libraries` are checked against it too.
pub fn check_file(
    path: &Path,
    postgres_bin: Option<&Path>,
    admin_role: &str,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    // Output errors are not worth a different exit code: the code says it all.
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) => {
            let _ = writeln!(err, "{}: cannot read: {error}", path.display());
            return CHECK_INVALID;
        }
    };
    let (parsed, envelope) = match super::parse_received(&bytes) {
        Ok(parsed) => parsed,
        Err(errors) => {
            for error in errors {
                let _ = writeln!(err, "{error}");
            }
            return CHECK_INVALID;
        }
    };
    let errors = match postgres_bin {
        Some(postgres_bin) => match SettingCatalog::load(postgres_bin) {
            Ok(catalog) => catalog.check_spec(&parsed, admin_role),
            Err(error) => {
                let _ = writeln!(err, "{error:#}");
                return CHECK_BAD_BINARY;
            }
        },
        None => super::owners::check(&parsed, admin_role),
    };
    if !errors.is_empty() {
        for error in errors {
            let path = if envelope {
                under(super::parse::ENVELOPE_SPEC_KEY, &error.path)
            } else {
                error.path
            };
            let _ = writeln!(err, "{path}: {}", error.message);
        }
        return CHECK_INVALID;
    }
    let _ = writeln!(out, "ok: {} ({})", parsed.hash, parsed.storage);
    CHECK_OK
}
