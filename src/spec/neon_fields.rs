//! Fields of Neon's `ComputeSpec` (libs/compute_api/src/spec.rs) that compute_ctl does not act
//! on, checked as Neon's serde types check them: a spec Neon's compute_ctl refuses is refused
//! here too, naming the field, instead of being accepted and ignored.
//!
//! They stay out of the typed spec (they are still listed as ignored in the `spec_accepted`
//! record), so they are read from the JSON. `null` stands for an absent field, as it does for
//! the fields the typed spec reads.

use serde_json::{Map, Value};

use super::path::JsonPath;
use super::validate::{shown, Findings};

/// What Neon's type of a field accepts.
#[derive(Clone, Copy)]
enum Shape {
    Bool,
    /// An integer from 0 to `max`; `rust` names Neon's type in the message.
    Unsigned {
        max: u64,
        rust: &'static str,
    },
    /// `NonZeroU64`.
    Positive,
    Text,
    /// A secret string: its value is never shown.
    SecretText,
    /// Neon's `PostgresLogsRsyslogConfig::build` (compute_tools/src/rsyslog.rs) splits it at
    /// the first `:` into a host and a port, and fails without one.
    HostPort,
    /// A unit-variant enum: one of these names, exactly.
    OneOf(&'static [&'static str]),
    /// `Vec<ComputeFeature>`: strings, and any string, as Neon's `#[serde(other)]` makes an
    /// unknown feature `UnknownFeature` rather than an error.
    Features,
    /// `IndexMap<String, String>`.
    TextMap,
    /// Neon's `RemoteExtSpec`.
    RemoteExtensions,
    /// A struct we do not look into.
    Object,
}

/// Neon's `ComputeAudit`.
const AUDIT_LOG_LEVELS: &[&str] = &["Disabled", "Log", "Base", "Hipaa", "Extended", "Full"];

/// The fields, with Neon's types (64-bit `usize`).
const FIELDS: &[(&str, Shape)] = &[
    ("features", Shape::Features),
    (
        "swap_size_bytes",
        Shape::Unsigned {
            max: u64::MAX,
            rust: "u64",
        },
    ),
    (
        "disk_quota_bytes",
        Shape::Unsigned {
            max: u64::MAX,
            rust: "u64",
        },
    ),
    ("disable_lfc_resizing", Shape::Bool),
    ("project_id", Shape::Text),
    ("branch_id", Shape::Text),
    ("endpoint_id", Shape::Text),
    (
        "safekeepers_generation",
        Shape::Unsigned {
            max: u32::MAX as u64,
            rust: "u32",
        },
    ),
    ("remote_extensions", Shape::RemoteExtensions),
    ("pgbouncer_settings", Shape::TextMap),
    ("local_proxy_config", Shape::Object),
    (
        "reconfigure_concurrency",
        Shape::Unsigned {
            max: u64::MAX,
            rust: "usize",
        },
    ),
    ("audit_log_level", Shape::OneOf(AUDIT_LOG_LEVELS)),
    ("logs_export_host", Shape::HostPort),
    ("endpoint_storage_addr", Shape::Text),
    ("endpoint_storage_token", Shape::SecretText),
    ("autoprewarm", Shape::Bool),
    ("offload_lfc_interval_seconds", Shape::Positive),
    ("databricks_settings", Shape::Object),
];

/// Checks each of Neon's fields the spec gives.
pub(crate) fn check(spec: &Value, findings: &mut Findings) {
    let Some(fields) = spec.as_object() else {
        return;
    };
    for (name, shape) in FIELDS {
        if let Some(value) = fields.get(*name).filter(|value| !value.is_null()) {
            check_value(value, *shape, &key_path(None, name), findings);
        }
    }
}

fn key_path(parent: Option<&str>, key: &str) -> String {
    let mut path = JsonPath::default();
    path.push_key(key);
    let key = path.into_string();
    match parent {
        None => key,
        Some(parent) if key.starts_with('[') => format!("{parent}{key}"),
        Some(parent) => format!("{parent}.{key}"),
    }
}

/// How a value is named in a message: strings quoted (cut short), numbers and booleans as they
/// are, the rest by kind.
fn found(value: &Value) -> String {
    match value {
        Value::String(text) => format!("the string {}", shown(text)),
        Value::Number(number) => number.to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Null => "null".to_string(),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

fn check_value(value: &Value, shape: Shape, path: &str, findings: &mut Findings) {
    match shape {
        Shape::Bool => {
            if !value.is_boolean() {
                findings.add(
                    path,
                    format!("expected true or false, found {}", found(value)),
                );
            }
        }
        Shape::Unsigned { max, rust } => {
            if value.as_u64().is_none_or(|n| n > max) {
                findings.add(
                    path,
                    format!(
                        "expected an integer from 0 to {max} (Neon's type is {rust}), found {}",
                        found(value)
                    ),
                );
            }
        }
        Shape::Positive => {
            if value.as_u64().is_none_or(|n| n == 0) {
                findings.add(
                    path,
                    format!(
                        "expected a positive integer of seconds (Neon's type is NonZeroU64), \
                         found {}",
                        found(value)
                    ),
                );
            }
        }
        Shape::Text => {
            if !value.is_string() {
                findings.add(path, format!("expected a string, found {}", found(value)));
            }
        }
        Shape::SecretText => {
            if !value.is_string() {
                findings.add(
                    path,
                    "expected a string (the value is not shown: it may be secret)",
                );
            }
        }
        Shape::HostPort => match value.as_str() {
            Some(text) if text.contains(':') => {}
            Some(text) => findings.add(
                path,
                format!(
                    "expected host:port (the collector Postgres logs are sent to), found {}",
                    shown(text)
                ),
            ),
            None => findings.add(path, format!("expected a string, found {}", found(value))),
        },
        Shape::OneOf(names) => match value.as_str() {
            Some(text) if names.contains(&text) => {}
            _ => findings.add(
                path,
                format!(
                    "expected one of {}, found {}",
                    names.join(", "),
                    found(value)
                ),
            ),
        },
        Shape::Features => match value.as_array() {
            Some(features) => {
                for (i, feature) in features.iter().enumerate() {
                    if !feature.is_string() {
                        findings.add(
                            format!("{path}[{i}]"),
                            format!(
                                "expected a feature name (a string), found {}",
                                found(feature)
                            ),
                        );
                    }
                }
            }
            None => findings.add(
                path,
                format!("expected an array of feature names, found {}", found(value)),
            ),
        },
        Shape::TextMap => {
            if let Some(map) = object(value, path, findings) {
                check_text_map(map, path, findings);
            }
        }
        Shape::RemoteExtensions => {
            if let Some(map) = object(value, path, findings) {
                check_remote_extensions(map, path, findings);
            }
        }
        Shape::Object => {
            object(value, path, findings);
        }
    }
}

fn object<'a>(
    value: &'a Value,
    path: &str,
    findings: &mut Findings,
) -> Option<&'a Map<String, Value>> {
    let map = value.as_object();
    if map.is_none() {
        findings.add(path, format!("expected an object, found {}", found(value)));
    }
    map
}

fn check_text_map(map: &Map<String, Value>, path: &str, findings: &mut Findings) {
    for (key, value) in map {
        if !value.is_string() {
            findings.add(
                key_path(Some(path), key),
                format!("expected a string, found {}", found(value)),
            );
        }
    }
}

/// Neon's `RemoteExtSpec`: two optional lists of extension names, and two required maps.
fn check_remote_extensions(map: &Map<String, Value>, path: &str, findings: &mut Findings) {
    for list in ["public_extensions", "custom_extensions"] {
        let Some(value) = map.get(list).filter(|value| !value.is_null()) else {
            continue;
        };
        let list_path = key_path(Some(path), list);
        match value.as_array() {
            Some(names) => {
                for (i, name) in names.iter().enumerate() {
                    if !name.is_string() {
                        findings.add(
                            format!("{list_path}[{i}]"),
                            format!("expected an extension name, found {}", found(name)),
                        );
                    }
                }
            }
            None => findings.add(
                list_path,
                format!(
                    "expected an array of extension names, found {}",
                    found(value)
                ),
            ),
        }
    }
    for required in ["library_index", "extension_data"] {
        let required_path = key_path(Some(path), required);
        let Some(value) = map.get(required) else {
            findings.add(required_path, "missing required field");
            continue;
        };
        let Some(entries) = object(value, &required_path, findings) else {
            continue;
        };
        if required == "library_index" {
            check_text_map(entries, &required_path, findings);
            continue;
        }
        for (name, data) in entries {
            let data_path = key_path(Some(&required_path), name);
            let Some(data) = object(data, &data_path, findings) else {
                continue;
            };
            let control_path = key_path(Some(&data_path), "control_data");
            match data.get("control_data") {
                Some(control) => {
                    if let Some(control) = object(control, &control_path, findings) {
                        check_text_map(control, &control_path, findings);
                    }
                }
                None => findings.add(control_path, "missing required field"),
            }
            let archive_path = key_path(Some(&data_path), "archive_path");
            match data.get("archive_path") {
                Some(Value::String(_)) => {}
                Some(other) => findings.add(
                    archive_path,
                    format!("expected a string, found {}", found(other)),
                ),
                None => findings.add(archive_path, "missing required field"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(spec: Value) -> Vec<String> {
        let mut findings = Findings::default();
        check(&spec, &mut findings);
        findings
            .into_errors()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn accepts_what_neon_accepts() {
        let spec = serde_json::json!({
            "features": ["activity_monitor_experimental", "from_the_future"],
            "swap_size_bytes": 0,
            "disable_lfc_resizing": null,
            "safekeepers_generation": 4294967295_u64,
            "reconfigure_concurrency": 4,
            "audit_log_level": "Extended",
            "logs_export_host": "collector.svc:10514",
            "endpoint_storage_token": "t",
            "autoprewarm": false,
            "offload_lfc_interval_seconds": 60,
            "pgbouncer_settings": {"default_pool_size": "16"},
            "remote_extensions": {"public_extensions": null, "library_index": {},
                                  "extension_data": {"x": {"control_data": {}, "archive_path": ""}}},
            "local_proxy_config": {},
        });
        assert_eq!(errors(spec), Vec::<String>::new());
    }

    #[test]
    fn refuses_what_neon_refuses_naming_the_path() {
        let spec = serde_json::json!({
            "features": ["tls_experimental", 7],
            "swap_size_bytes": -1,
            "safekeepers_generation": 4294967296_u64,
            "reconfigure_concurrency": 1.5,
            "audit_log_level": "Bogus",
            "logs_export_host": "collector",
            "endpoint_storage_token": 31415,
            "autoprewarm": "yes",
            "offload_lfc_interval_seconds": 0,
            "pgbouncer_settings": {"pool mode": 1},
            "remote_extensions": {"extension_data": {"x": {"control_data": []}}},
        });
        let got = errors(spec);
        let paths: Vec<&str> = got
            .iter()
            .map(|e| e.split_once(": ").map_or(e.as_str(), |(p, _)| p))
            .collect();
        assert_eq!(
            paths,
            vec![
                "features[1]",
                "swap_size_bytes",
                "safekeepers_generation",
                "remote_extensions.library_index",
                "remote_extensions.extension_data.x.control_data",
                "remote_extensions.extension_data.x.archive_path",
                r#"pgbouncer_settings["pool mode"]"#,
                "reconfigure_concurrency",
                "audit_log_level",
                "logs_export_host",
                "endpoint_storage_token",
                "autoprewarm",
                "offload_lfc_interval_seconds",
            ],
            "{got:#?}"
        );
        assert!(got.iter().all(|e| !e.contains("31415")), "{got:#?}");
        assert!(
            got.iter().any(|e| e
                == "audit_log_level: expected one of Disabled, Log, Base, Hipaa, Extended, Full, \
                    found the string \"Bogus\""),
            "{got:#?}"
        );
    }
}
