//! The form rules of a spec: everything that can be judged from the spec alone, before
//! anything is touched. Every problem is collected (not just the first), each with its path.
//!
//! Values are not judged here, but against the Postgres binary (`SettingCatalog::check`: type,
//! unit and range of each setting), and database owners against the admin role
//! (`owners::check`): both need what the spec alone does not say.

use std::collections::HashMap;

use super::storage::{self, Storage};
use super::{ComputeSpec, GenericOption, SpecError};

/// Postgres's `NAMEDATALEN - 1`: longer role and database names are cut short by Postgres,
/// which would make the declared name and the real one differ.
pub(crate) const NAME_BYTES_MAX: usize = 63;

/// Settings that compute_ctl writes itself: a spec cannot move the data directory or the
/// files compute_ctl generates, nor fake the hash compute_ctl reads back to confirm a reload.
pub(crate) const OWNED_SETTINGS: &[&str] = &[
    "data_directory",
    "config_file",
    "hba_file",
    "ident_file",
    "compute_ctl.spec_hash",
];

/// `CREATE DATABASE` options (Postgres 15) a spec may give, in upper case. `OID` is left out:
/// OIDs are Postgres's to choose, and a fixed one collides on a branch.
pub(crate) const DATABASE_OPTIONS: &[&str] = &[
    "TEMPLATE",
    "ENCODING",
    "LOCALE",
    "LC_COLLATE",
    "LC_CTYPE",
    "ICU_LOCALE",
    "LOCALE_PROVIDER",
    "COLLATION_VERSION",
    "CONNECTION_LIMIT",
    "IS_TEMPLATE",
    "ALLOW_CONNECTIONS",
    "STRATEGY",
    "TABLESPACE",
];

/// The delta operations Neon defines.
pub(crate) const DELTA_ACTIONS: &[&str] = &["delete_db", "rename_db", "delete_role", "rename_role"];

/// Role names Postgres refuses in `CREATE ROLE` (besides the `pg_` prefix).
const RESERVED_ROLE_NAMES: &[&str] = &["public", "none"];

/// How many characters of a user's value an error message quotes.
const SHOWN_CHARS_MAX: usize = 64;

/// The errors found so far.
#[derive(Debug, Default)]
pub(crate) struct Findings(Vec<SpecError>);

impl Findings {
    pub(crate) fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(SpecError::new(path, message));
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn into_errors(self) -> Vec<SpecError> {
        self.0
    }
}

/// The forms of password verifier a role may carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PasswordVerifier {
    /// `SCRAM-SHA-256$<iterations>:<salt>$<storedkey>:<serverkey>`, stored as is.
    Scram,
    /// `md5` and 32 lowercase hex digits, stored as is.
    Md5,
    /// Neon's form: the 32 hex digits of md5(password + role name), stored with `md5` before.
    NeonMd5,
}

impl PasswordVerifier {
    /// The form of `given`; `None` when it is none of them (it may be a clear-text password).
    pub(crate) fn classify(given: &str) -> Option<PasswordVerifier> {
        if let Some(rest) = given.strip_prefix("SCRAM-SHA-256$") {
            return is_scram_body(rest).then_some(PasswordVerifier::Scram);
        }
        if let Some(hex) = given.strip_prefix("md5") {
            if is_md5_hex(hex) {
                return Some(PasswordVerifier::Md5);
            }
        }
        is_md5_hex(given).then_some(PasswordVerifier::NeonMd5)
    }

    /// How `Debug` shows a verifier of this form.
    pub(crate) fn redacted(self) -> &'static str {
        match self {
            PasswordVerifier::Scram => "<redacted scram-sha-256 verifier>",
            PasswordVerifier::Md5 | PasswordVerifier::NeonMd5 => "<redacted md5 hash>",
        }
    }
}

/// 32 lowercase hex digits. Postgres takes an upper-case md5 "hash" for a clear-text password,
/// so upper case is not a hash here either.
fn is_md5_hex(text: &str) -> bool {
    text.len() == 32 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `<iterations>:<salt>$<storedkey>:<serverkey>`, as Postgres's `parse_scram_secret` reads it:
/// a positive iteration count, a base64 salt, and two base64 keys of 32 bytes (SHA-256).
fn is_scram_body(body: &str) -> bool {
    const SCRAM_KEY_BYTES: usize = 32;
    let Some((iterations_and_salt, keys)) = body.split_once('$') else {
        return false;
    };
    let Some((iterations, salt)) = iterations_and_salt.split_once(':') else {
        return false;
    };
    let Some((stored_key, server_key)) = keys.split_once(':') else {
        return false;
    };
    let iterations_ok = !iterations.is_empty()
        && iterations.bytes().all(|b| b.is_ascii_digit())
        && iterations.parse::<u32>().is_ok_and(|n| n > 0);
    iterations_ok
        && base64_len(salt).is_some_and(|n| n > 0)
        && base64_len(stored_key) == Some(SCRAM_KEY_BYTES)
        && base64_len(server_key) == Some(SCRAM_KEY_BYTES)
}

/// The decoded length of padded standard base64, or `None` if `text` is not that.
fn base64_len(text: &str) -> Option<usize> {
    if text.is_empty() || !text.len().is_multiple_of(4) {
        return None;
    }
    let body = text.trim_end_matches('=');
    let padding = text.len() - body.len();
    let alphabet_ok = body
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    (alphabet_ok && padding <= 2).then(|| text.len() / 4 * 3 - padding)
}

/// A user's value quoted for an error message, cut short if long.
pub(crate) fn shown(value: &str) -> String {
    if value.chars().count() <= SHOWN_CHARS_MAX {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(SHOWN_CHARS_MAX).collect();
        format!("{head:?}…")
    }
}

/// All form rules; the storage the spec selects when they all pass.
/// `received` is the spec as JSON, for the fields of Neon's that the typed spec does not keep.
pub(crate) fn check_form(
    spec: &ComputeSpec,
    received: &serde_json::Value,
) -> (Vec<SpecError>, Option<Storage>) {
    let mut findings = Findings::default();
    // `format_version` is not judged beyond being a number: Neon's compute_ctl types it `f32`
    // (libs/compute_api/src/spec.rs, `ComputeSpec`) and no code of its reads it, so a spec
    // Neon runs is not refused here for its version.
    super::neon_fields::check(received, &mut findings);
    check_roles(spec, &mut findings);
    check_databases(spec, &mut findings);
    check_settings(spec, &mut findings);
    check_postgresql_conf(spec, &mut findings);
    check_delta_operations(spec, &mut findings);
    let storage = storage::resolve(spec, &mut findings);
    let errors = findings.into_errors();
    let storage = if errors.is_empty() { storage } else { None };
    (errors, storage)
}

/// Rules shared by role and database names (and the names in delta operations): what
/// Postgres stores in a `name` column, unchanged.
fn check_name(name: &str, what: &str, path: &str, findings: &mut Findings) -> bool {
    let problem = if name.is_empty() {
        format!("{what} is empty")
    } else if name.contains('\0') {
        format!("{what} contains a NUL byte")
    } else if name.len() > NAME_BYTES_MAX {
        format!(
            "{what} {} is {} bytes long: at most {NAME_BYTES_MAX} are allowed (Postgres would \
             cut it short)",
            shown(name),
            name.len()
        )
    } else {
        return true;
    };
    findings.add(path, problem);
    false
}

fn check_roles(spec: &ComputeSpec, findings: &mut Findings) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, role) in spec.cluster.roles.iter().enumerate() {
        let path = format!("cluster.roles[{i}]");
        let name_path = format!("{path}.name");
        if check_name(&role.name, "role name", &name_path, findings) {
            if role.name.starts_with("pg_") {
                findings.add(
                    &name_path,
                    format!(
                        "role name {} is reserved: names starting with pg_ belong to Postgres",
                        shown(&role.name)
                    ),
                );
            } else if RESERVED_ROLE_NAMES.contains(&role.name.as_str()) {
                findings.add(
                    &name_path,
                    format!("role name {} is reserved by Postgres", shown(&role.name)),
                );
            }
            if let Some(first) = seen.get(role.name.as_str()) {
                findings.add(
                    &name_path,
                    format!(
                        "duplicate role {} (also cluster.roles[{first}])",
                        shown(&role.name)
                    ),
                );
            } else {
                seen.insert(&role.name, i);
            }
        }
        if let Some(password) = role.encrypted_password.as_deref() {
            // The value is never quoted: if it is not a verifier, it may well be a password.
            if PasswordVerifier::classify(password).is_none() {
                findings.add(
                    format!("{path}.encrypted_password"),
                    "not a password verifier: expected a SCRAM-SHA-256 verifier or an md5 hash \
                     (32 hex digits); clear-text passwords are not accepted",
                );
            }
        }
    }
}

fn check_databases(spec: &ComputeSpec, findings: &mut Findings) {
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, database) in spec.cluster.databases.iter().enumerate() {
        let path = format!("cluster.databases[{i}]");
        let name_path = format!("{path}.name");
        if check_name(&database.name, "database name", &name_path, findings) {
            if let Some(first) = seen.get(database.name.as_str()) {
                findings.add(
                    &name_path,
                    format!(
                        "duplicate database {} (also cluster.databases[{first}])",
                        shown(&database.name)
                    ),
                );
            } else {
                seen.insert(&database.name, i);
            }
        }
        check_name(
            &database.owner,
            "database owner",
            &format!("{path}.owner"),
            findings,
        );
        let options = database.options.as_deref().unwrap_or(&[]);
        check_database_options(options, &path, findings);
    }
}

fn check_database_options(options: &[GenericOption], database_path: &str, findings: &mut Findings) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (j, option) in options.iter().enumerate() {
        let path = format!("{database_path}.options[{j}]");
        let mut name = option.name.trim().to_ascii_uppercase();
        if name == "CONNECTION LIMIT" {
            name = "CONNECTION_LIMIT".to_string();
        }
        if name == "OID" {
            findings.add(
                format!("{path}.name"),
                "database option OID is not allowed: Postgres chooses the OID",
            );
            continue;
        }
        if !DATABASE_OPTIONS.contains(&name.as_str()) {
            findings.add(
                format!("{path}.name"),
                format!(
                    "unknown database option {}: expected one of {}",
                    shown(&option.name),
                    DATABASE_OPTIONS.join(", ")
                ),
            );
            continue;
        }
        if let Some(first) = seen.get(&name) {
            findings.add(
                format!("{path}.name"),
                format!("duplicate database option {name} (also {database_path}.options[{first}])"),
            );
        } else {
            seen.insert(name.clone(), j);
        }
        match option.value.as_deref() {
            None | Some("") => findings.add(
                format!("{path}.value"),
                format!("database option {name} needs a value"),
            ),
            Some(value) if value.contains('\0') => findings.add(
                format!("{path}.value"),
                format!("the value of database option {name} contains a NUL byte"),
            ),
            Some(_) => {}
        }
    }
}

/// A name postgresql.conf can hold: `name` or `extension.name`, each part a letter or `_`
/// then letters, digits and `_` (Postgres's configuration file lexer: `$` and a second dot are
/// syntax errors there, though `SET` would take them).
pub(crate) fn is_setting_name(name: &str) -> bool {
    fn is_part(part: &str) -> bool {
        let mut bytes = part.bytes();
        matches!(bytes.next(), Some(b) if b == b'_' || b.is_ascii_alphabetic())
            && bytes.all(|b| b == b'_' || b.is_ascii_alphanumeric())
    }
    match name.split_once('.') {
        Some((extension, setting)) => is_part(extension) && is_part(setting),
        None => is_part(name),
    }
}

fn check_settings(spec: &ComputeSpec, findings: &mut Findings) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, setting) in spec.cluster.settings().iter().enumerate() {
        let path = format!("cluster.settings[{i}]");
        let lower = setting.name.to_ascii_lowercase();
        if !is_setting_name(&setting.name) {
            findings.add(
                format!("{path}.name"),
                format!(
                    "invalid setting name {}: expected a name like work_mem, or an extension's \
                     like myext.work_mem (letters, digits and underscores, at most one dot)",
                    shown(&setting.name)
                ),
            );
        } else if OWNED_SETTINGS.contains(&lower.as_str()) {
            findings.add(
                format!("{path}.name"),
                format!(
                    "setting {} is written by compute_ctl and cannot be set in a spec",
                    shown(&setting.name)
                ),
            );
        } else if let Some(first) = seen.get(&lower) {
            // Setting names are case-insensitive to Postgres: `Port` and `port` are one.
            findings.add(
                format!("{path}.name"),
                format!(
                    "duplicate setting {} (also cluster.settings[{first}])",
                    shown(&setting.name)
                ),
            );
        } else {
            seen.insert(lower.clone(), i);
        }
        let value_path = format!("{path}.value");
        match setting.value.as_deref() {
            // Neon would write the bare name into postgresql.conf, which Postgres refuses.
            None => findings.add(
                value_path,
                "a setting needs a value (null cannot be written into postgresql.conf; to fall \
                 back to the default, leave the setting out)",
            ),
            Some(value) if value.contains('\0') => {
                findings.add(value_path, "the value contains a NUL byte");
            }
            Some(value) if value.contains(['\n', '\r']) => findings.add(
                value_path,
                "the value contains a line break, which cannot be written into postgresql.conf",
            ),
            Some(value) if lower == "port" => {
                if parse_port(value).is_none() {
                    findings.add(
                        value_path,
                        format!(
                            "port must be an integer from 1 to 65535, found {}",
                            shown(value)
                        ),
                    );
                }
            }
            Some(_) => {}
        }
    }
}

/// A `port` setting's value as Postgres reads it (surrounding blanks and quotes aside).
pub(crate) fn parse_port(value: &str) -> Option<u16> {
    let value = value.trim();
    let value = value
        .strip_prefix('\'')
        .and_then(|v| v.strip_suffix('\''))
        .unwrap_or(value)
        .trim();
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<u16>().ok().filter(|port| *port > 0)
}

/// `cluster.postgresql_conf` under the rules of `cluster.settings`: lines Postgres can read,
/// no setting compute_ctl writes itself, a valid port.
fn check_postgresql_conf(spec: &ComputeSpec, findings: &mut Findings) {
    const PATH: &str = "cluster.postgresql_conf";
    let Some(text) = spec.cluster.postgresql_conf.as_deref() else {
        return;
    };
    if text.contains('\0') {
        findings.add(
            PATH,
            "contains a NUL byte, which cannot be written into postgresql.conf",
        );
        return;
    }
    let (lines, errors) = super::conf::parse(text);
    for error in errors {
        findings.add(
            PATH,
            format!(
                "line {}: Postgres cannot read it ({}): write one `name = 'value'` a line",
                error.line, error.message
            ),
        );
    }
    for line in lines {
        let lower = line.name.to_ascii_lowercase();
        if OWNED_SETTINGS.contains(&lower.as_str()) {
            findings.add(
                PATH,
                format!(
                    "line {}: setting {} is written by compute_ctl and cannot be set in a spec",
                    line.line,
                    shown(&line.name)
                ),
            );
        } else if lower == "port" && parse_port(&line.value).is_none() {
            findings.add(
                PATH,
                format!(
                    "line {}: port must be an integer from 1 to 65535, found {}",
                    line.line,
                    shown(&line.value)
                ),
            );
        }
    }
}

fn check_delta_operations(spec: &ComputeSpec, findings: &mut Findings) {
    for (i, operation) in spec.delta_operations.iter().flatten().enumerate() {
        let path = format!("delta_operations[{i}]");
        let (what, renames) = match operation.action.as_str() {
            "delete_db" => ("database name", false),
            "rename_db" => ("database name", true),
            "delete_role" => ("role name", false),
            "rename_role" => ("role name", true),
            _ => {
                findings.add(
                    format!("{path}.action"),
                    format!(
                        "unknown action {}: expected one of {}",
                        shown(&operation.action),
                        DELTA_ACTIONS.join(", ")
                    ),
                );
                continue;
            }
        };
        check_name(&operation.name, what, &format!("{path}.name"), findings);
        if renames {
            match operation.new_name.as_deref() {
                Some(new_name) => {
                    check_name(new_name, what, &format!("{path}.new_name"), findings);
                }
                None => findings.add(
                    format!("{path}.new_name"),
                    format!("{} needs new_name", operation.action),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAM: &str = "SCRAM-SHA-256$4096:9d+VYVdh5IzYLLsZHvh4wA==$TDuzK3JG45LHFuL+o+6z6cPgsQycj4XVv1u0KdneJWc=:gjklePtEoY0yiJiIqpDlZkSrrraNOyK6UYN3yPzVunU=";

    #[test]
    fn classifies_password_verifiers() {
        assert_eq!(
            PasswordVerifier::classify(SCRAM),
            Some(PasswordVerifier::Scram)
        );
        assert_eq!(
            PasswordVerifier::classify("md591c76e9f0e4ed85662e7ded2446617b4"),
            Some(PasswordVerifier::Md5)
        );
        assert_eq!(
            PasswordVerifier::classify("91c76e9f0e4ed85662e7ded2446617b4"),
            Some(PasswordVerifier::NeonMd5)
        );
    }

    #[test]
    fn refuses_what_is_not_a_verifier() {
        let broken_scram = [
            "SCRAM-SHA-256$",
            "SCRAM-SHA-256$4096:c2FsdA==",
            "SCRAM-SHA-256$0:9d+VYVdh5IzYLLsZHvh4wA==$TDuzK3JG45LHFuL+o+6z6cPgsQycj4XVv1u0KdneJWc=:gjklePtEoY0yiJiIqpDlZkSrrraNOyK6UYN3yPzVunU=",
            "SCRAM-SHA-256$x:9d+VYVdh5IzYLLsZHvh4wA==$TDuzK3JG45LHFuL+o+6z6cPgsQycj4XVv1u0KdneJWc=:gjklePtEoY0yiJiIqpDlZkSrrraNOyK6UYN3yPzVunU=",
            "SCRAM-SHA-256$4096:$TDuzK3JG45LHFuL+o+6z6cPgsQycj4XVv1u0KdneJWc=:gjklePtEoY0yiJiIqpDlZkSrrraNOyK6UYN3yPzVunU=",
            "SCRAM-SHA-256$4096:9d+VYVdh5IzYLLsZHvh4wA==$c2hvcnQ=:gjklePtEoY0yiJiIqpDlZkSrrraNOyK6UYN3yPzVunU=",
            "SCRAM-SHA-256$4096:9d+VYVdh5IzYLLsZHvh4wA==$TDuzK3JG45LHFuL+o+6z6cPgsQycj4XVv1u0KdneJWc=:gjkle*tEoY0yiJiIqpDlZkSrrraNOyK6UYN3yPzVunU=",
        ];
        for given in broken_scram {
            assert_eq!(PasswordVerifier::classify(given), None, "{given}");
        }
        for given in [
            "",
            "hunter2",
            "md5",
            "md5hunter2",
            "91C76E9F0E4ED85662E7DED2446617B4",
            "91c76e9f0e4ed85662e7ded2446617b",
            "md591c76e9f0e4ed85662e7ded2446617b4a",
        ] {
            assert_eq!(PasswordVerifier::classify(given), None, "{given}");
        }
    }

    #[test]
    fn base64_lengths() {
        assert_eq!(base64_len("c2FsdA=="), Some(4));
        assert_eq!(base64_len("YWJj"), Some(3));
        assert_eq!(base64_len("YWJjZA="), None);
        assert_eq!(base64_len("YW=j"), None);
        assert_eq!(base64_len("Y==="), None);
        assert_eq!(base64_len(""), None);
    }

    #[test]
    fn setting_names_follow_the_configuration_file_lexer() {
        for good in ["work_mem", "_x", "neon.tenant_id", "A1.b_2", "x.y"] {
            assert!(is_setting_name(good), "{good}");
        }
        for bad in [
            "", "1abc", "a b", "a-b", "a.b.c", "a$b", ".a", "a.", "a..b", "é", "a;b",
        ] {
            assert!(!is_setting_name(bad), "{bad}");
        }
    }

    #[test]
    fn ports() {
        assert_eq!(parse_port("55432"), Some(55432));
        assert_eq!(parse_port(" '5432' "), Some(5432));
        assert_eq!(parse_port("1"), Some(1));
        assert_eq!(parse_port("65535"), Some(65535));
        for bad in ["0", "65536", "-1", "+5", "5432x", "", "''", "54 32"] {
            assert_eq!(parse_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn shown_values_are_quoted_and_cut_short() {
        assert_eq!(shown("a\"b"), r#""a\"b""#);
        let long = "x".repeat(100);
        assert_eq!(shown(&long), format!("\"{}\"…", "x".repeat(64)));
    }
}
