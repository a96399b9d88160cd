//! Reading a spec's JSON: the text (with duplicate keys refused), Neon's envelope, and the typed
//! `ComputeSpec` with the path of the first type error and the list of fields it ignored.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::path::{under, JsonPath};
use super::{ComputeSpec, SpecError};

/// The key under which Neon's envelope (`ComputeConfig`) holds the spec.
pub(crate) const ENVELOPE_SPEC_KEY: &str = "spec";
/// The envelope's second part: compute_ctl's own configuration (Neon's JWKS and the like).
pub(crate) const ENVELOPE_CONFIG_KEY: &str = "compute_ctl_config";

/// Fields of the spec that must never appear in an error message, even as part of serde's
/// "invalid type: string \"…\"": a wrongly typed password is still a password.
const SECRET_FIELDS: &[&str] = &[
    "encrypted_password",
    "storage_auth_token",
    "upstream_connstring",
    "pageserver_connstring",
    "libpq_url",
    "grpc_url",
    "endpoint_storage_token",
];

/// What the bytes held once the envelope, if any, is taken off. No `Debug`: the spec holds
/// password verifiers.
pub(crate) struct Received {
    /// The bare spec, as received.
    pub(crate) spec: Value,
    pub(crate) compute_ctl_config: Option<Value>,
    /// Whether the spec came inside Neon's envelope; its error paths then start with `spec.`.
    pub(crate) envelope: bool,
}

impl Received {
    /// `path` (relative to the bare spec) as the sender wrote it.
    pub(crate) fn sender_path(&self, path: &str) -> String {
        if self.envelope {
            under(ENVELOPE_SPEC_KEY, path)
        } else {
            path.to_string()
        }
    }
}

/// Reads JSON text into a value, refusing duplicate object keys (serde_json would keep the
/// last one silently, and a spec with two `encrypted_password`s is ambiguous). Errors here are
/// about the text, so they keep serde_json's "at line L column C".
pub(crate) fn read_json(bytes: &[u8]) -> Result<Value, SpecError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value =
        serde_path_to_error::deserialize::<_, StrictValue>(&mut deserializer).map_err(|error| {
            let path = render_tracked_path(error.path());
            let inner = error.into_inner();
            SpecError::new(path, text_error_message(&inner))
        })?;
    deserializer
        .end()
        .map_err(|error| SpecError::new(super::path::ROOT, text_error_message(&error)))?;
    Ok(value.0)
}

fn text_error_message(error: &serde_json::Error) -> String {
    match error.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            format!("invalid JSON: {error}")
        }
        serde_json::error::Category::Io | serde_json::error::Category::Data => error.to_string(),
    }
}

/// Takes Neon's envelope `{"spec": …, "compute_ctl_config": …}` off, if the document is one.
/// A document is an envelope when it has a `spec` key and neither of the keys every bare spec
/// has (`cluster`, `format_version`).
pub(crate) fn split_envelope(value: Value) -> Result<Received, SpecError> {
    let Value::Object(mut map) = value else {
        return Err(SpecError::new(
            super::path::ROOT,
            format!(
                "expected a JSON object (a compute spec, or {{\"spec\": …}}), found {}",
                kind_of(&value)
            ),
        ));
    };
    let is_envelope = map.contains_key(ENVELOPE_SPEC_KEY)
        && !map.contains_key("cluster")
        && !map.contains_key("format_version");
    if !is_envelope {
        return Ok(Received {
            spec: Value::Object(map),
            compute_ctl_config: None,
            envelope: false,
        });
    }
    let spec = map.remove(ENVELOPE_SPEC_KEY).unwrap_or(Value::Null);
    if !spec.is_object() {
        let reason = if spec.is_null() {
            "the envelope holds no spec (spec is null): there is nothing to run".to_string()
        } else {
            format!(
                "expected a compute spec (a JSON object), found {}",
                kind_of(&spec)
            )
        };
        return Err(SpecError::new(ENVELOPE_SPEC_KEY, reason));
    }
    let compute_ctl_config = map
        .remove(ENVELOPE_CONFIG_KEY)
        .filter(|config| !config.is_null());
    Ok(Received {
        spec,
        compute_ctl_config,
        envelope: true,
    })
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The typed spec, and the paths (relative to the bare spec) of the fields it has no place
/// for. On failure, the first type error with its path relative to the bare spec.
pub(crate) fn typed_spec(spec: &Value) -> Result<(ComputeSpec, Vec<String>), SpecError> {
    let mut ignored = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| ignored.push(render_ignored_path(&path));
    let deserializer = serde_ignored::Deserializer::new(spec, &mut record);
    let result = serde_path_to_error::deserialize::<_, ComputeSpec>(deserializer);
    match result {
        Ok(spec) => Ok((spec, ignored)),
        Err(error) => {
            let path = render_tracked_path(error.path());
            let message = error.into_inner().to_string();
            Err(type_error(path, message))
        }
    }
}

/// Shapes a serde error: a missing field is named in the path itself, and a wrongly typed
/// secret is described without its value.
fn type_error(path: String, message: String) -> SpecError {
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        let mut key = JsonPath::default();
        key.push_key(field);
        let key = key.into_string();
        let full = if path == super::path::ROOT {
            key
        } else if key.starts_with('[') {
            format!("{path}{key}")
        } else {
            format!("{path}.{key}")
        };
        return SpecError::new(full, "missing required field");
    }
    let last_key = path.rsplit(['.', '[']).next().unwrap_or("");
    if SECRET_FIELDS.contains(&last_key) || is_role_element(&path) {
        return SpecError::new(
            path,
            "invalid type (the value is not shown: it may be secret)",
        );
    }
    SpecError::new(path, message)
}

/// `cluster.roles[N]`: a role given as something other than an object may be a name and a
/// password written in one string.
fn is_role_element(path: &str) -> bool {
    path.strip_prefix("cluster.roles[")
        .and_then(|rest| rest.strip_suffix(']'))
        .is_some_and(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
}

fn render_tracked_path(path: &serde_path_to_error::Path) -> String {
    let mut out = JsonPath::default();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => out.push_index(*index),
            serde_path_to_error::Segment::Map { key } => out.push_key(key),
            serde_path_to_error::Segment::Enum { variant } => out.push_key(variant),
            // A key that could not be read (a syntax error in it): the enclosing object is
            // as close as the path gets.
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    out.into_string()
}

fn render_ignored_path(path: &serde_ignored::Path<'_>) -> String {
    fn walk(path: &serde_ignored::Path<'_>, out: &mut JsonPath) {
        match path {
            serde_ignored::Path::Root => {}
            serde_ignored::Path::Seq { parent, index } => {
                walk(parent, out);
                out.push_index(*index);
            }
            serde_ignored::Path::Map { parent, key } => {
                walk(parent, out);
                out.push_key(key);
            }
            serde_ignored::Path::Some { parent }
            | serde_ignored::Path::NewtypeStruct { parent }
            | serde_ignored::Path::NewtypeVariant { parent } => walk(parent, out),
        }
    }
    let mut out = JsonPath::default();
    walk(path, &mut out);
    out.into_string()
}

/// A JSON value read with duplicate keys refused.
struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<StrictValue, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Number(v.into())))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Number(v.into())))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<StrictValue, E> {
        Number::from_f64(v)
            .map(|n| StrictValue(Value::Number(n)))
            .ok_or_else(|| E::custom("a number that is not finite"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v.to_string())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }

    fn visit_none<E: de::Error>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<StrictValue, D::Error> {
        StrictValue::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(StrictValue(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<StrictValue, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate key {}",
                    super::path::quoted(&key)
                )));
            }
            let StrictValue(item) = access.next_value()?;
            map.insert(key, item);
        }
        Ok(StrictValue(Value::Object(map)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_duplicate_keys_naming_the_object() {
        let error =
            read_json(br#"{"cluster": {"roles": [{"name": "a", "name": "b"}]}}"#).unwrap_err();
        assert_eq!(error.path, "cluster.roles[0]");
        assert!(
            error
                .message
                .starts_with(r#"duplicate key "name" at line 1"#),
            "{error}"
        );
    }

    #[test]
    fn syntax_errors_say_invalid_json_with_line_and_column() {
        let error = read_json(b"{\"a\": [1,\n 2,]}").unwrap_err();
        assert_eq!(error.path, "a");
        assert!(error.message.starts_with("invalid JSON: "), "{error}");
        assert!(error.message.contains("line 2"), "{error}");
        let error = read_json(b"{} x").unwrap_err();
        assert_eq!(error.path, ".");
        assert!(
            error.message.starts_with("invalid JSON: trailing"),
            "{error}"
        );
        let error = read_json(b"").unwrap_err();
        assert!(error.message.starts_with("invalid JSON: EOF"), "{error}");
    }

    #[test]
    fn reads_every_kind_of_value() {
        let text = br#"{"a": [null, true, -1, 2, 1.5, "s", {}], "b": {"c": []}}"#;
        let value = read_json(text).unwrap();
        assert_eq!(value, serde_json::from_slice::<Value>(text).unwrap());
    }

    #[test]
    fn envelope_is_taken_off_and_bare_specs_pass_through() {
        let received = split_envelope(serde_json::json!({
            "spec": {"format_version": 1.0, "cluster": {}},
            "compute_ctl_config": {"jwks": {"keys": []}}
        }))
        .unwrap();
        assert!(received.envelope);
        assert_eq!(received.spec["format_version"], 1.0);
        assert!(received.compute_ctl_config.is_some());
        assert_eq!(received.sender_path("cluster"), "spec.cluster");

        let bare = serde_json::json!({"format_version": 1.0, "cluster": {}, "spec": 1});
        let received = split_envelope(bare.clone()).unwrap();
        assert!(!received.envelope);
        assert_eq!(received.spec, bare);
        assert_eq!(received.sender_path("cluster"), "cluster");
    }

    fn envelope_error(value: Value) -> SpecError {
        match split_envelope(value) {
            Ok(_) => panic!("accepted"),
            Err(error) => error,
        }
    }

    #[test]
    fn envelope_without_a_spec_is_an_error_at_spec() {
        let error = envelope_error(serde_json::json!({"spec": null}));
        assert_eq!(error.path, "spec");
        let error = envelope_error(serde_json::json!({"spec": [1]}));
        assert_eq!(
            error.to_string(),
            "spec: expected a compute spec (a JSON object), found an array"
        );
        let error = envelope_error(serde_json::json!([1]));
        assert_eq!(error.path, ".");
    }

    #[test]
    fn missing_fields_are_named_in_the_path() {
        let error = typed_spec(&serde_json::json!({"format_version": 1.0})).unwrap_err();
        assert_eq!(error.to_string(), "cluster: missing required field");
        let error = typed_spec(&serde_json::json!({
            "format_version": 1.0, "cluster": {"roles": [{"encrypted_password": null}]}
        }))
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "cluster.roles[0].name: missing required field"
        );
    }

    #[test]
    fn type_errors_of_secrets_do_not_show_the_value() {
        let error = typed_spec(&serde_json::json!({
            "format_version": 1.0,
            "cluster": {"roles": [{"name": "a", "encrypted_password": 271828}]}
        }))
        .unwrap_err();
        assert_eq!(error.path, "cluster.roles[0].encrypted_password");
        assert!(!error.message.contains("271828"), "{error}");
        let error = typed_spec(&serde_json::json!({
            "format_version": 1.0, "cluster": {}, "storage_auth_token": 31415
        }))
        .unwrap_err();
        assert!(!error.message.contains("31415"), "{error}");
        let error = typed_spec(&serde_json::json!({
            "format_version": 1.0, "cluster": {"roles": ["alice:hunter2"]}
        }))
        .unwrap_err();
        assert_eq!(error.path, "cluster.roles[0]");
        assert!(!error.message.contains("hunter2"), "{error}");
    }

    #[test]
    fn ignored_fields_are_listed_with_paths() {
        let (_, ignored) = typed_spec(&serde_json::json!({
            "format_version": 1.0,
            "features": ["x"],
            "cluster": {"roles": [{"name": "a", "extra": {"deep": 1}}], "odd key": 1}
        }))
        .unwrap();
        let mut ignored = ignored;
        ignored.sort();
        assert_eq!(
            ignored,
            vec![
                "cluster.roles[0].extra",
                r#"cluster["odd key"]"#,
                "features"
            ]
        );
    }
}
