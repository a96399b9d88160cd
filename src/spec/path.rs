//! JSON paths as errors and the `spec_accepted` record print them: `cluster.roles[2].name`,
//! `.` for the document itself.

/// The path of the document itself. jq's spelling: a person can paste any of our paths after
/// `jq` (with a leading dot) to look at the value.
pub(crate) const ROOT: &str = ".";

/// A JSON path being built one step at a time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct JsonPath(String);

impl JsonPath {
    /// A step into an object. Keys that are not plain identifiers are quoted (`["a b"]`) so
    /// that the path stays readable and unambiguous.
    pub(crate) fn push_key(&mut self, key: &str) {
        if is_plain_key(key) {
            if !self.0.is_empty() {
                self.0.push('.');
            }
            self.0.push_str(key);
        } else {
            self.0.push('[');
            self.0.push_str(&quoted(key));
            self.0.push(']');
        }
    }

    /// A step into an array.
    pub(crate) fn push_index(&mut self, index: usize) {
        self.0.push_str(&format!("[{index}]"));
    }

    /// The path as text: `.` for the root.
    pub(crate) fn into_string(self) -> String {
        if self.0.is_empty() {
            ROOT.to_string()
        } else {
            self.0
        }
    }
}

/// `path` seen from an enclosing document in which it sits under `prefix` (Neon's envelope
/// holds the spec under `spec`).
pub(crate) fn under(prefix: &str, path: &str) -> String {
    if path == ROOT || path.is_empty() {
        prefix.to_string()
    } else if path.starts_with('[') {
        format!("{prefix}{path}")
    } else {
        format!("{prefix}.{path}")
    }
}

fn is_plain_key(key: &str) -> bool {
    let mut chars = key.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
}

/// A string as JSON writes it, quotes included.
pub(crate) fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    super::hash::escape_json_string_into(text, &mut out);
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_dotted_paths_with_indices() {
        let mut path = JsonPath::default();
        path.push_key("cluster");
        path.push_key("roles");
        path.push_index(2);
        path.push_key("name");
        assert_eq!(path.into_string(), "cluster.roles[2].name");
    }

    #[test]
    fn quotes_keys_that_are_not_identifiers() {
        let mut path = JsonPath::default();
        path.push_key("remote extensions");
        path.push_key("x.y");
        path.push_key("ok_1");
        assert_eq!(path.into_string(), r#"["remote extensions"]["x.y"].ok_1"#);
    }

    #[test]
    fn root_is_a_dot_and_prefixes_join_cleanly() {
        assert_eq!(JsonPath::default().into_string(), ".");
        assert_eq!(under("spec", "."), "spec");
        assert_eq!(under("spec", "cluster.roles[0]"), "spec.cluster.roles[0]");
        assert_eq!(under("spec", r#"["a b"]"#), r#"spec["a b"]"#);
    }
}
