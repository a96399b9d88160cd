//! The compute spec: Neon's `ComputeSpec` format, parsed, checked against its form rules,
//! hashed, and the storage it selects.
//!
//! Code map:
//! - `types`: the serde types of Neon's format (with `Debug` that hides secrets);
//! - `parse`: the JSON text, Neon's envelope, the typed spec, the fields we do not use;
//! - `validate`: the form rules, all errors collected, each with its JSON path;
//! - `neon_fields`: Neon's typed fields we do not act on, checked as Neon's types check them;
//! - `storage`: where the data comes from (Neon, an upstream server, or a fresh initdb);
//! - `hash`: the canonical JSON a spec is stored and identified by;
//! - `conf`: `cluster.postgresql_conf` read line by line, as Postgres reads the file;
//! - `catalog`: the Postgres binary's own settings and libraries;
//! - `admission`: the one door for a spec from outside: parse, form rules, catalog, every error;
//! - `config_file`: Neon's config file, whose spec may be `null` (start in `empty`);
//! - `values`: setting values judged by type, unit and range, as Postgres parses them;
//! - `owners`: database owners against the roles the compute will have;
//! - `check`: `compute_ctl spec check FILE`.
//!
//! Paths in errors: `cluster.roles[2].name`; `.` is the document itself. When the spec came
//! in Neon's envelope, paths start with `spec.` so that they point into what was sent. Errors
//! about the JSON text (syntax, duplicate keys) carry serde_json's "at line L column C", as the
//! path alone may not find the spot; errors about the spec's content carry only the path.

mod admission;
mod catalog;
mod check;
mod conf;
mod config_file;
mod hash;
mod neon_fields;
mod owners;
mod parse;
mod path;
mod storage;
pub mod types;
mod validate;
mod values;

use std::fmt;

use serde::Serialize;

pub use admission::{Admitted, SpecAdmission, SpecErrors, SpecFileError};
pub use catalog::SettingCatalog;
pub use check::check_file;
pub use config_file::SpecFile;
pub use storage::Storage;
pub use types::*;
pub use values::{pg15_lists, Pg15Lists};

/// The port Postgres listens on when the spec has no `port` setting.
pub const DEFAULT_PORT: u16 = 5432;

/// One problem with a spec: the JSON path (e.g. `cluster.roles[2].name`, or with the envelope
/// `spec.cluster.roles[2].name`) and the reason. Messages never quote a password or token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SpecError {
    pub path: String,
    pub message: String,
}

impl SpecError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> SpecError {
        SpecError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for SpecError {}

/// A spec that passed every form check, ready to be stored and applied.
#[derive(Clone)]
pub struct ParsedSpec {
    pub spec: ComputeSpec,
    /// The bare spec's canonical JSON (keys sorted at every depth, compact, no trailing
    /// newline): what is stored as `specs/<hex>.json`.
    pub canonical_json: Vec<u8>,
    /// `sha256:<64 hex>` of `canonical_json`.
    pub hash: String,
    pub storage: Storage,
    /// JSON paths, relative to the bare spec and sorted, of fields accepted but not acted on:
    /// fields this compute_ctl does not know (Neon's `remote_extensions`,
    /// `pgbouncer_settings`, `features`...), `suspend_timeout_seconds`, and
    /// `storage_auth_token` when the storage is not Neon's. Listed in the `spec_accepted`
    /// record.
    pub ignored_fields: Vec<String>,
    /// The envelope's second part, if present (and not null).
    pub compute_ctl_config: Option<serde_json::Value>,
}

impl ParsedSpec {
    /// The hash without its `sha256:` prefix: the stored file's name.
    pub fn hash_hex(&self) -> &str {
        self.hash
            .strip_prefix(hash::HASH_PREFIX)
            .unwrap_or(&self.hash)
    }

    /// The port Postgres will listen on: the `port` setting, else the last `port` line of
    /// `cluster.postgresql_conf` (neon_local's specs put it there), else 5432. The settings win
    /// because `postgresql.conf` has them after `postgresql_conf`, and Postgres takes the last.
    pub fn port(&self) -> u16 {
        let cluster = &self.spec.cluster;
        let from_settings = cluster
            .settings()
            .iter()
            .rev()
            .find(|setting| setting.name.eq_ignore_ascii_case("port"))
            .and_then(|setting| setting.value.as_deref());
        let from_conf = || {
            let (lines, _) = conf::parse(cluster.postgresql_conf.as_deref()?);
            conf::last_value(&lines, "port").map(str::to_string)
        };
        match from_settings {
            Some(value) => validate::parse_port(value),
            None => from_conf().as_deref().and_then(validate::parse_port),
        }
        .unwrap_or(DEFAULT_PORT)
    }
}

/// By hand, because the canonical JSON holds the password verifiers.
impl fmt::Debug for ParsedSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParsedSpec")
            .field("hash", &self.hash)
            .field("storage", &self.storage)
            .field("ignored_fields", &self.ignored_fields)
            .field(
                "canonical_json",
                &format_args!("<{} bytes>", self.canonical_json.len()),
            )
            .field(
                "compute_ctl_config",
                &self.compute_ctl_config.as_ref().map(|_| "<present>"),
            )
            .field("spec", &self.spec)
            .finish()
    }
}

/// Fields of the typed spec that are accepted but never acted on.
const UNUSED_KNOWN_FIELDS: &[&str] = &["suspend_timeout_seconds"];

/// Parses bytes that hold a bare `ComputeSpec` or Neon's envelope
/// `{"spec": …, "compute_ctl_config": …}`, and runs every form rule. Returns every error found:
/// all of the form rules' at once; a JSON or type error alone, since nothing after it can be
/// read.
pub fn parse(bytes: &[u8]) -> Result<ParsedSpec, Vec<SpecError>> {
    parse_received(bytes).map(|(parsed, _)| parsed)
}

/// `parse`, and whether the spec came in Neon's envelope (`SpecAdmission` adds the binary's
/// checks).
pub(crate) fn parse_received(bytes: &[u8]) -> Result<(ParsedSpec, bool), Vec<SpecError>> {
    let value = parse::read_json(bytes).map_err(|error| vec![error])?;
    let received = parse::split_envelope(value).map_err(|error| vec![error])?;
    let in_sender_terms = |error: SpecError| SpecError {
        path: received.sender_path(&error.path),
        message: error.message,
    };
    let (spec, mut ignored_fields) =
        parse::typed_spec(&received.spec).map_err(|error| vec![in_sender_terms(error)])?;
    let (errors, storage) = validate::check_form(&spec, &received.spec);
    let storage = match storage {
        Some(storage) if errors.is_empty() => storage,
        _ => return Err(errors.into_iter().map(in_sender_terms).collect()),
    };

    if let Some(fields) = received.spec.as_object() {
        for name in UNUSED_KNOWN_FIELDS {
            if fields.get(*name).is_some_and(|value| !value.is_null()) {
                ignored_fields.push(name.to_string());
            }
        }
    }
    if spec.storage_auth_token.is_some() && !matches!(storage, Storage::Neon { .. }) {
        ignored_fields.push("storage_auth_token".to_string());
    }
    // Neon reads `pageserver_connection_info` and then not the older fields; a stripe size
    // for a single pageserver (an unsharded tenant) is not used either.
    if spec.pageserver_connection_info.is_some() && spec.pageserver_connstring.is_some() {
        ignored_fields.push("pageserver_connstring".to_string());
    }
    let stripe_used = matches!(
        storage,
        Storage::Neon {
            stripe_size: Some(_),
            ..
        }
    ) && spec.pageserver_connection_info.is_none()
        && spec.pageserver_connstring.is_some();
    if spec.shard_stripe_size.is_some() && !stripe_used {
        ignored_fields.push("shard_stripe_size".to_string());
    }
    ignored_fields.sort();
    ignored_fields.dedup();

    let canonical_json = hash::canonical_json(&received.spec);
    let hash = hash::spec_hash(&canonical_json);
    Ok((
        ParsedSpec {
            spec,
            canonical_json,
            hash,
            storage,
            ignored_fields,
            compute_ctl_config: received.compute_ctl_config,
        },
        received.envelope,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_path_then_reason() {
        let error = SpecError::new("cluster.roles[2].name", "role name is empty");
        assert_eq!(
            error.to_string(),
            "cluster.roles[2].name: role name is empty"
        );
    }

    #[test]
    fn minimal_spec_parses_with_defaults() {
        let parsed =
            parse(br#"{"format_version": 1.0, "cluster": {}, "embedded_storage": true}"#).unwrap();
        assert_eq!(parsed.storage, Storage::Embedded);
        assert_eq!(parsed.port(), DEFAULT_PORT);
        let conf = parse(
            br#"{"format_version": 1.0, "cluster": {"postgresql_conf": "port=55433\nport = 55434\n"}}"#,
        )
        .unwrap();
        assert_eq!(conf.port(), 55434);
        assert_eq!(parsed.hash.len(), "sha256:".len() + 64);
        assert_eq!(parsed.hash_hex().len(), 64);
        assert!(parsed.ignored_fields.is_empty());
        assert_eq!(
            parsed.canonical_json,
            br#"{"cluster":{},"embedded_storage":true,"format_version":1.0}"#
        );
    }

    #[test]
    fn a_spec_without_storage_or_settings_must_ask_for_the_embedded_default() {
        let errors = match parse(br#"{"format_version": 1.0, "cluster": {}}"#) {
            Ok(parsed) => panic!("accepted: {parsed:?}"),
            Err(errors) => errors,
        };
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].path, "pageserver_connection_info");
        assert!(
            errors[0]
                .message
                .starts_with("pageserver connection information should be provided"),
            "{errors:?}"
        );
    }

    #[test]
    fn debug_of_a_parsed_spec_hides_passwords() {
        let parsed = parse(
            br#"{"format_version": 1.0, "cluster": {"roles": [
                {"name": "a", "encrypted_password": "91c76e9f0e4ed85662e7ded2446617b4"}]},
                "upstream_connstring": "postgresql://rep:pw-secret@db/postgres",
                "storage_auth_token": "token-secret"}"#,
        )
        .unwrap();
        let shown = format!("{parsed:?}");
        for secret in ["91c76e9f", "pw-secret", "token-secret"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("<redacted md5 hash>"), "{shown}");
    }
}
