//! `compute_ctl spec check FILE [-b POSTGRES] [-C URL]`: the form rules and the databases'
//! owners, and with a binary the setting names, values and preload libraries, without touching
//! anything.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use super::{SettingCatalog, SpecAdmission, SpecFileError};
use crate::exit::ExitCode;

/// The spec is valid.
const CHECK_OK: ExitCode = ExitCode::Terminated;
/// `-b` names no usable Postgres binary (a bad command line).
const CHECK_BAD_BINARY: ExitCode = ExitCode::BadCommandLine;
/// The spec is invalid, or the file cannot be read (a bad spec file).
const CHECK_INVALID: ExitCode = ExitCode::BadSpecFile;

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
    let admission = match postgres_bin {
        Some(postgres_bin) => match SettingCatalog::load(postgres_bin) {
            Ok(catalog) => SpecAdmission::new(Arc::new(catalog), admin_role),
            Err(error) => {
                let _ = writeln!(err, "{error:#}");
                return CHECK_BAD_BINARY.code();
            }
        },
        None => SpecAdmission::form_only(admin_role),
    };
    // Output errors are not worth a different exit code: the code says it all.
    let parsed = match admission.admit_file(path) {
        Ok(admitted) => admitted.spec,
        Err(SpecFileError::Unreadable { path, error }) => {
            let _ = writeln!(err, "{path}: cannot read: {error}");
            return CHECK_INVALID.code();
        }
        Err(SpecFileError::Invalid { errors, .. }) => {
            for error in errors.0 {
                let _ = writeln!(err, "{error}");
            }
            return CHECK_INVALID.code();
        }
    };
    let _ = writeln!(out, "ok: {} ({})", parsed.hash, parsed.storage);
    CHECK_OK.code()
}
