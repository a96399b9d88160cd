//! The spec's canonical JSON and its hash: the identity of a spec in the journal and in
//! `<state-dir>/specs/<hex>.json`.
//!
//! The canonical form is written here rather than by `serde_json::to_vec`, because the order of
//! `serde_json::Map` depends on a cargo feature (`preserve_order`) that any crate in the build
//! can switch on. The form:
//!
//! - object keys sorted by their UTF-8 bytes, at every depth;
//! - no whitespace at all, and no trailing newline;
//! - strings escaped as JSON requires and no more: `"`, `\` and control characters (the usual
//!   short escapes, else `\u00XX`); everything else, `/` and non-ASCII included, as is;
//! - numbers as `serde_json` prints them (`1.0` stays `1.0`, `1e2` becomes `100.0`).
//!
//! So two documents that differ only in key order or whitespace have the same hash.

use std::fmt::Write as _;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// The prefix of a spec hash, naming the algorithm.
pub(crate) const HASH_PREFIX: &str = "sha256:";

/// `value` in canonical form (see the module doc).
pub(crate) fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = String::new();
    write_value(value, &mut out);
    out.into_bytes()
}

/// `sha256:<64 lowercase hex digits>` of `bytes`.
pub(crate) fn spec_hash(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(HASH_PREFIX.len() + 64);
    out.push_str(HASH_PREFIX);
    for byte in digest {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(number) => {
            let _ = write!(out, "{number}");
        }
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_value(item, out);
            }
            out.push('}');
        }
    }
}

fn write_string(text: &str, out: &mut String) {
    out.push('"');
    escape_json_string_into(text, out);
    out.push('"');
}

/// Appends `text` escaped for the inside of a JSON string.
pub(crate) fn escape_json_string_into(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canonical(value: &Value) -> String {
        String::from_utf8(canonical_json(value)).unwrap()
    }

    #[test]
    fn sorts_keys_at_every_depth_and_drops_whitespace() {
        let value = json!({"b": 1, "a": {"z": [true, null, {"y": 2, "x": 1.5}], "c": "s"}});
        assert_eq!(
            canonical(&value),
            r#"{"a":{"c":"s","z":[true,null,{"x":1.5,"y":2}]},"b":1}"#
        );
    }

    #[test]
    fn sorts_by_bytes_not_by_locale() {
        let value = json!({"b": 0, "B": 0, "é": 0, "_": 0, "a": 0});
        assert_eq!(canonical(&value), r#"{"B":0,"_":0,"a":0,"b":0,"é":0}"#);
    }

    #[test]
    fn escapes_only_what_json_requires() {
        let value = json!("q\" b\\ n\n t\t c\u{1} / é");
        assert_eq!(canonical(&value), r#""q\" b\\ n\n t\t c\u0001 / é""#);
        // What we write is JSON that reads back to the same value.
        let back: Value = serde_json::from_slice(&canonical_json(&value)).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn agrees_with_serde_json_on_strings_and_numbers() {
        let value = json!(["\u{7f}\u{1f}\u{0}", 1.0, -3, 18446744073709551615u64, 0.1]);
        assert_eq!(canonical(&value), serde_json::to_string(&value).unwrap());
    }

    #[test]
    fn hash_is_sha256_of_the_bytes() {
        // The standard test vector for SHA-256("abc").
        assert_eq!(
            spec_hash(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
