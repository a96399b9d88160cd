//! The one way a spec from outside gets in (`-S` at start, SIGHUP, `POST /spec`,
//! `POST /configure`, the control plane, `spec check`): parse it, run the form rules, check its
//! databases' owners and, with a catalog, its settings against the Postgres binary, and collect
//! every error with its JSON path.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use super::path::under;
use super::{parse_received, ParsedSpec, SettingCatalog, SpecError};

/// Admits specs: the form rules and the owners always, the binary's settings and libraries
/// when it has a catalog (`spec check` without `-b` has none).
#[derive(Clone, Debug)]
pub struct SpecAdmission {
    catalog: Option<Arc<SettingCatalog>>,
    /// The admin role of `-C`: a database it owns needs no role in the spec.
    admin_role: String,
}

/// A spec that passed admission, and whether it came in Neon's envelope.
#[derive(Debug)]
pub struct Admitted {
    pub spec: ParsedSpec,
    /// It came as `{"spec": …, "compute_ctl_config": …}`.
    pub envelope: bool,
}

/// Every problem admission found; never empty. Paths point into what was sent (`spec.` first
/// for an envelope).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecErrors(pub Vec<SpecError>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, error) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SpecErrors {}

impl SpecErrors {
    /// The same errors, for a spec that sat under `key` of what was sent.
    pub fn within(self, key: &str) -> SpecErrors {
        SpecErrors(
            self.0
                .into_iter()
                .map(|e| SpecError {
                    path: under(key, &e.path),
                    message: e.message,
                })
                .collect(),
        )
    }

    /// The first error's path, for answers that name one.
    pub fn first_path(&self) -> Option<&str> {
        self.0.first().map(|e| e.path.as_str())
    }
}

/// A spec file that was not admitted: it cannot be read, or what it holds is not a valid spec.
#[derive(Debug)]
pub enum SpecFileError {
    Unreadable { path: String, error: std::io::Error },
    Invalid { path: String, errors: SpecErrors },
}

impl fmt::Display for SpecFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecFileError::Unreadable { path, error } => write!(f, "cannot read {path}: {error}"),
            SpecFileError::Invalid { path, errors } => write!(f, "{path}: {errors}"),
        }
    }
}

impl std::error::Error for SpecFileError {}

impl SpecAdmission {
    /// Admission against the Postgres binary `catalog` describes, for the admin role of `-C`.
    pub fn new(catalog: Arc<SettingCatalog>, admin_role: &str) -> SpecAdmission {
        SpecAdmission {
            catalog: Some(catalog),
            admin_role: admin_role.to_string(),
        }
    }

    /// The form rules and the owners only (`spec check` without `-b`).
    pub fn form_only(admin_role: &str) -> SpecAdmission {
        SpecAdmission {
            catalog: None,
            admin_role: admin_role.to_string(),
        }
    }

    /// Parses and checks `bytes`: a bare spec or Neon's envelope.
    pub fn admit(&self, bytes: &[u8]) -> Result<Admitted, SpecErrors> {
        let (spec, envelope) = parse_received(bytes).map_err(SpecErrors)?;
        let errors = match &self.catalog {
            Some(catalog) => catalog.check_spec(&spec, &self.admin_role),
            None => super::owners::check(&spec, &self.admin_role),
        };
        if !errors.is_empty() {
            let in_sender_terms = |error: SpecError| match envelope {
                true => SpecError {
                    path: under(super::parse::ENVELOPE_SPEC_KEY, &error.path),
                    message: error.message,
                },
                false => error,
            };
            return Err(SpecErrors(
                errors.into_iter().map(in_sender_terms).collect(),
            ));
        }
        Ok(Admitted { spec, envelope })
    }

    /// Reads and admits a spec file; the error names the file.
    pub fn admit_file(&self, path: &Path) -> Result<Admitted, SpecFileError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|error| SpecFileError::Unreadable {
            path: shown.clone(),
            error,
        })?;
        self.admit_bytes_of(path, &bytes)
    }

    /// Admits `bytes`, read from `path` (named in the error).
    pub(crate) fn admit_bytes_of(
        &self,
        path: &Path,
        bytes: &[u8],
    ) -> Result<Admitted, SpecFileError> {
        self.admit(bytes).map_err(|errors| SpecFileError::Invalid {
            path: path.display().to_string(),
            errors,
        })
    }
}
