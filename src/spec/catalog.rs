//! The Postgres binary's own list of settings (name, context, type, range) and installed
//! libraries, to reject a spec that names a setting or a preload library this Postgres does
//! not have, or gives a setting a value it would refuse, before anything is touched (Postgres
//! would otherwise refuse to start, after PGDATA was already rebuilt).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use super::values::{Described, VarType};
use super::{ComputeSpec, ParsedSpec, SpecError};

/// Settings Postgres 15 knows but `--describe-config` does not print: it leaves out those
/// flagged "not in sample" (developer and debugging options, `application_name`). They can be
/// set in postgresql.conf all the same. Their contexts are from `pg_settings`. A name here
/// that a later major version dropped only moves the error to start-up, where Postgres names
/// the setting itself.
const UNLISTED_SETTINGS: &[(&str, &str)] = &[
    ("allow_in_place_tablespaces", "superuser"),
    ("allow_system_table_mods", "superuser"),
    ("application_name", "user"),
    ("backtrace_functions", "superuser"),
    ("debug_discard_caches", "superuser"),
    ("debug_parallel_query", "user"),
    ("force_parallel_mode", "user"),
    ("ignore_checksum_failure", "superuser"),
    ("ignore_invalid_pages", "postmaster"),
    ("ignore_system_indexes", "backend"),
    ("jit_debugging_support", "superuser-backend"),
    ("jit_dump_bitcode", "superuser"),
    ("jit_expressions", "user"),
    ("jit_profiling_support", "superuser-backend"),
    ("jit_tuple_deforming", "user"),
    ("post_auth_delay", "backend"),
    ("pre_auth_delay", "sighup"),
    ("remove_temp_files_after_crash", "sighup"),
    ("restrict_nonsystem_relation_kind", "user"),
    ("trace_notify", "user"),
    ("trace_recovery_messages", "sighup"),
    ("trace_sort", "user"),
    ("wal_consistency_checking", "superuser"),
    ("zero_damaged_pages", "superuser"),
];

/// Libraries that exist only in Neon's build of Postgres: a vanilla PostgreSQL cannot load
/// them, which deserves a clearer word than "not installed".
const NEON_LIBRARIES: &[&str] = &[
    "neon",
    "neon_rmgr",
    "neon_utils",
    "neon_walredo",
    "neon_test_utils",
];

/// The setting's context that needs a server restart to change.
const RESTART_CONTEXT: &str = "postmaster";

/// The Postgres binary's own list of settings and installed libraries.
#[derive(Clone, Debug)]
pub struct SettingCatalog {
    postgres_bin: PathBuf,
    /// Lower-case setting name → what `--describe-config` says of it (context, type, range).
    settings: BTreeMap<String, Described>,
    library_dir: PathBuf,
}

impl SettingCatalog {
    /// Runs `<postgres> --describe-config` (which works as root, unlike the server) and finds
    /// the library directory: `pg_config --pkglibdir` beside the binary, else `<bindir>/../lib`.
    pub fn load(postgres_bin: &Path) -> anyhow::Result<SettingCatalog> {
        let postgres_bin = locate(postgres_bin)
            .with_context(|| format!("cannot find postgres binary {}", postgres_bin.display()))?;
        let output = Command::new(&postgres_bin)
            .arg("--describe-config")
            .output()
            .with_context(|| format!("cannot run {} --describe-config", postgres_bin.display()))?;
        if !output.status.success() {
            bail!(
                "{} --describe-config failed ({}): {}",
                postgres_bin.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let described = String::from_utf8_lossy(&output.stdout);
        let library_dir = library_dir(&postgres_bin);
        let catalog = SettingCatalog::from_describe_config(&postgres_bin, &described, &library_dir);
        if catalog.settings.len() <= UNLISTED_SETTINGS.len() {
            bail!(
                "{} --describe-config listed no settings",
                postgres_bin.display()
            );
        }
        Ok(catalog)
    }

    /// A catalog from the text `--describe-config` printed (tab-separated: name, context,
    /// group, type, ...) and a library directory.
    pub fn from_describe_config(
        postgres_bin: &Path,
        described: &str,
        library_dir: &Path,
    ) -> SettingCatalog {
        // Unlisted settings have no type here: their values are left to Postgres.
        let mut settings: BTreeMap<String, Described> = UNLISTED_SETTINGS
            .iter()
            .map(|(name, context)| {
                let described = Described {
                    context: context.to_string(),
                    vartype: None,
                    min: None,
                    max: None,
                };
                (name.to_string(), described)
            })
            .collect();
        for line in described.lines() {
            // name, context, group, type, reset value, minimum, maximum, descriptions
            let fields: Vec<&str> = line.split('\t').collect();
            let (Some(name), Some(context)) = (fields.first(), fields.get(1)) else {
                continue;
            };
            if name.is_empty() {
                continue;
            }
            let number = |i: usize| fields.get(i).and_then(|f| f.trim().parse::<f64>().ok());
            let described = Described {
                context: context.to_string(),
                vartype: fields.get(3).and_then(|t| VarType::from_described(t)),
                min: number(5),
                max: number(6),
            };
            settings.insert(name.to_ascii_lowercase(), described);
        }
        SettingCatalog {
            postgres_bin: postgres_bin.to_path_buf(),
            settings,
            library_dir: library_dir.to_path_buf(),
        }
    }

    /// The binary the catalog describes.
    pub fn postgres_bin(&self) -> &Path {
        &self.postgres_bin
    }

    /// Where the binary's loadable libraries are (`$libdir`).
    pub fn library_dir(&self) -> &Path {
        &self.library_dir
    }

    /// Whether this Postgres has a setting of that name (names are case-insensitive).
    pub fn knows(&self, name: &str) -> bool {
        self.settings.contains_key(&name.to_ascii_lowercase())
    }

    /// Whether changing the setting needs a restart (context `postmaster`): used to predict
    /// `pending_restart`.
    pub fn needs_restart(&self, name: &str) -> bool {
        self.settings
            .get(&name.to_ascii_lowercase())
            .is_some_and(|described| described.context == RESTART_CONTEXT)
    }

    /// Whether `$libdir` has the library `name` (`x`, `x.so`, or `$libdir/x`), or, for an
    /// absolute path, whether that file exists (with or without `.so`).
    pub fn has_library(&self, name: &str) -> bool {
        let name = name.strip_prefix("$libdir/").unwrap_or(name);
        let base = if Path::new(name).is_absolute() {
            PathBuf::from(name)
        } else {
            self.library_dir.join(name)
        };
        let mut with_suffix = base.clone().into_os_string();
        with_suffix.push(".so");
        PathBuf::from(with_suffix).is_file() || (name.ends_with(".so") && base.is_file())
    }

    /// Everything a spec is checked against beyond its form, before anything is touched: its
    /// settings against this Postgres (`check`), and its databases' owners against the roles
    /// the compute will have (`super::owners::check`, with `admin_role` the user of `-C`).
    pub fn check_spec(&self, parsed: &ParsedSpec, admin_role: &str) -> Vec<SpecError> {
        let mut errors = self.check(&parsed.spec);
        errors.extend(super::owners::check(parsed, admin_role));
        errors
    }

    /// The settings of `cluster.settings` and of `cluster.postgresql_conf` that this Postgres
    /// would refuse to start with: an unknown name without a dot (dotted names are extension
    /// settings, known only once the extension loads), a `shared_preload_libraries` entry that
    /// is not installed, and a value that is not of the setting's type, unit or range. Paths
    /// are relative to the bare spec: `cluster.settings[i]`, and `cluster.postgresql_conf`
    /// with the line number first in the message.
    pub fn check(&self, spec: &ComputeSpec) -> Vec<SpecError> {
        let mut errors = Vec::new();
        for (i, setting) in spec.cluster.settings().iter().enumerate() {
            let path = format!("cluster.settings[{i}]");
            let value = setting.value.as_deref().unwrap_or("");
            for message in self.check_setting(&setting.name, value) {
                errors.push(SpecError::new(&path, message));
            }
        }
        if let Some(text) = spec.cluster.postgresql_conf.as_deref() {
            // Syntax errors are form errors (`validate`): only the lines read are judged here.
            let (lines, _) = super::conf::parse(text);
            for line in lines {
                for message in self.check_setting(&line.name, &line.value) {
                    errors.push(SpecError::new(
                        "cluster.postgresql_conf",
                        format!("line {}: {message}", line.line),
                    ));
                }
            }
        }
        errors
    }

    /// What this Postgres would refuse in `name = value`.
    fn check_setting(&self, name: &str, value: &str) -> Vec<String> {
        if name.contains('.') {
            return Vec::new();
        }
        let Some(described) = self.settings.get(&name.to_ascii_lowercase()) else {
            return vec![format!(
                "unrecognized configuration parameter {name:?}: {} does not have it",
                self.postgres_bin.display()
            )];
        };
        if name.eq_ignore_ascii_case("shared_preload_libraries") {
            return preload_libraries(value)
                .iter()
                .filter(|library| !self.has_library(library))
                .map(|library| self.missing_library(library))
                .collect();
        }
        match super::values::check(name, value, described) {
            Ok(()) => Vec::new(),
            Err(message) => vec![message],
        }
    }

    fn missing_library(&self, library: &str) -> String {
        let bare = library.strip_prefix("$libdir/").unwrap_or(library);
        let bare = bare.strip_suffix(".so").unwrap_or(bare);
        let why = if NEON_LIBRARIES.contains(&bare) {
            "it is part of Neon's Postgres build; a vanilla PostgreSQL cannot load it".to_string()
        } else {
            format!("no {bare}.so in {}", self.library_dir.display())
        };
        format!(
            "shared_preload_libraries: library {library:?} is not installed for {} ({why})",
            self.postgres_bin.display()
        )
    }
}

/// The entries of a `shared_preload_libraries` value: comma-separated, blanks trimmed, quotes
/// (the value's own and each entry's) taken off, empty entries dropped.
pub(crate) fn preload_libraries(value: &str) -> Vec<String> {
    let value = value.trim();
    let value = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(value);
    value
        .split(',')
        .map(|entry| entry.trim().trim_matches(['"', '\'']).trim().to_string())
        .filter(|entry| !entry.is_empty())
        .collect()
}

/// The binary's path: as given when it names a file, `postgres` in it when it names a
/// directory (`-b /usr/lib/postgresql/15/bin`), else looked up on `PATH` (a bare `postgres`).
fn locate(postgres_bin: &Path) -> anyhow::Result<PathBuf> {
    if postgres_bin.components().count() > 1 {
        if postgres_bin.is_file() {
            return Ok(postgres_bin.to_path_buf());
        }
        if postgres_bin.is_dir() {
            let inside = postgres_bin.join("postgres");
            if inside.is_file() {
                return Ok(inside);
            }
            bail!("it is a directory without a postgres binary in it; name the postgres binary");
        }
        bail!("no such file");
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(postgres_bin))
        .find(|candidate| candidate.is_file())
        .context("not found on PATH")
}

/// `$libdir` of the binary: what `pg_config --pkglibdir` beside it says, else `../lib`.
fn library_dir(postgres_bin: &Path) -> PathBuf {
    let bindir = postgres_bin.parent().unwrap_or(Path::new("."));
    let pg_config = bindir.join("pg_config");
    if pg_config.is_file() {
        if let Ok(output) = Command::new(&pg_config).arg("--pkglibdir").output() {
            let dir = String::from_utf8_lossy(&output.stdout).trim().to_string();
            if output.status.success() && !dir.is_empty() {
                return PathBuf::from(dir);
            }
        }
    }
    bindir.join("..").join("lib")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESCRIBED: &str = "port\tpostmaster\tConnections\tINTEGER\t5432\t1\t65535\tTCP port.\t\n\
                             work_mem\tuser\tResource Usage\tINTEGER\t4096\t64\t2147483647\tx\t\n\
                             fsync\tsighup\tWAL\tBOOLEAN\ton\t\t\tx\t\n";

    fn catalog(library_dir: &Path) -> SettingCatalog {
        SettingCatalog::from_describe_config(
            Path::new("/opt/pg/bin/postgres"),
            DESCRIBED,
            library_dir,
        )
    }

    #[test]
    fn knows_described_and_unlisted_settings_case_insensitively() {
        let catalog = catalog(Path::new("/nonexistent"));
        assert!(catalog.knows("port"));
        assert!(catalog.knows("Work_Mem"));
        assert!(catalog.knows("application_name"));
        assert!(!catalog.knows("no_such_setting"));
        assert!(catalog.needs_restart("PORT"));
        assert!(!catalog.needs_restart("work_mem"));
        assert!(!catalog.needs_restart("no_such_setting"));
    }

    #[test]
    fn splits_preload_libraries() {
        assert_eq!(
            preload_libraries(" 'neon, \"pg_cron\" ,$libdir/auto_explain,,' "),
            vec!["neon", "pg_cron", "$libdir/auto_explain"]
        );
        assert!(preload_libraries("").is_empty());
    }

    #[test]
    fn finds_libraries_in_the_library_dir() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("pg_cron.so"), b"").unwrap();
        let catalog = catalog(dir.path());
        assert!(catalog.has_library("pg_cron"));
        assert!(catalog.has_library("pg_cron.so"));
        assert!(catalog.has_library("$libdir/pg_cron"));
        let absolute = dir.path().join("pg_cron");
        assert!(catalog.has_library(absolute.to_str().unwrap()));
        assert!(!catalog.has_library("timescaledb"));
        assert!(!catalog.has_library("/nonexistent/pg_cron"));
    }
}
