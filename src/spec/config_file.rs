//! Neon's config file (`ComputeConfig`, `-c/--config`): `{"spec": … | null,
//! "compute_ctl_config": …}`. A `null` spec is a compute that starts in `empty` and waits for
//! `/configure`, while its `compute_ctl_config` (the API's keys) still applies.

use std::path::Path;

use serde_json::Value;

use super::admission::{Admitted, SpecAdmission, SpecFileError};
use super::parse::{read_json, ENVELOPE_CONFIG_KEY, ENVELOPE_SPEC_KEY};

/// What a `-S/--config` file holds (`Debug` as `ParsedSpec`'s: no secret shown).
#[derive(Debug)]
pub enum SpecFile {
    /// A spec to run, bare or in Neon's envelope (boxed: a spec is large, the other is not).
    Spec(Box<Admitted>),
    /// Neon's envelope with `"spec": null`: nothing to run until a spec comes.
    NoSpec {
        /// The envelope's `compute_ctl_config`, when it has one (not `null`).
        compute_ctl_config: Option<Value>,
    },
}

impl SpecAdmission {
    /// Reads a spec file that may be Neon's envelope with a `null` spec; any other content is
    /// admitted as `admit_file` does. The error names the file.
    pub fn admit_config_file(&self, path: &Path) -> Result<SpecFile, SpecFileError> {
        let bytes = std::fs::read(path).map_err(|error| SpecFileError::Unreadable {
            path: path.display().to_string(),
            error,
        })?;
        if let Ok(value) = read_json(&bytes) {
            if let Some(compute_ctl_config) = without_spec(value) {
                return Ok(SpecFile::NoSpec { compute_ctl_config });
            }
        }
        // Not an envelope without a spec: admission reads it again and says what is wrong.
        self.admit_bytes_of(path, &bytes)
            .map(|admitted| SpecFile::Spec(Box::new(admitted)))
    }
}

/// `Some(compute_ctl_config)` when `value` is Neon's envelope with `"spec": null` (an
/// envelope has `spec` and neither of the keys every bare spec has, as `split_envelope` says).
fn without_spec(value: Value) -> Option<Option<Value>> {
    let Value::Object(mut map) = value else {
        return None;
    };
    let is_envelope = !map.contains_key("cluster") && !map.contains_key("format_version");
    if !is_envelope || !map.get(ENVELOPE_SPEC_KEY).is_some_and(Value::is_null) {
        return None;
    }
    Some(
        map.remove(ENVELOPE_CONFIG_KEY)
            .filter(|config| !config.is_null()),
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_null_spec_is_an_envelope_without_a_spec() {
        let config = json!({ "jwks": { "keys": [] } });
        let found = without_spec(json!({ "spec": null, "compute_ctl_config": config.clone() }));
        assert_eq!(found, Some(Some(config)));
        assert_eq!(without_spec(json!({ "spec": null })), Some(None));
        assert_eq!(
            without_spec(json!({ "spec": null, "compute_ctl_config": null })),
            Some(None)
        );
    }

    #[test]
    fn anything_else_goes_to_admission() {
        for value in [
            json!({ "spec": { "cluster": {} } }),
            json!({ "compute_ctl_config": {} }),
            json!({ "spec": null, "format_version": 1.0 }),
            json!({ "spec": null, "cluster": {} }),
            json!({ "spec": 7 }),
            json!([null]),
        ] {
            assert_eq!(without_spec(value.clone()), None, "{value}");
        }
    }

    #[test]
    fn the_file_decides() {
        let dir = tempfile::tempdir().unwrap();
        let admission = SpecAdmission::form_only("cloud_admin");
        let file = dir.path().join("config.json");
        std::fs::write(
            &file,
            r#"{"spec": null, "compute_ctl_config": {"jwks": null}}"#,
        )
        .unwrap();
        assert!(matches!(
            admission.admit_config_file(&file),
            Ok(SpecFile::NoSpec {
                compute_ctl_config: Some(_)
            })
        ));
        std::fs::write(&file, r#"{"spec": null, "spec": null}"#).unwrap();
        let refused = admission
            .admit_config_file(&file)
            .err()
            .unwrap()
            .to_string();
        assert!(refused.contains("config.json"), "{refused}");
        let missing = dir.path().join("missing.json");
        let refused = admission
            .admit_config_file(&missing)
            .err()
            .unwrap()
            .to_string();
        assert!(refused.contains("missing.json"), "{refused}");
    }
}
