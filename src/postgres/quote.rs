//! Quoting: the one place where a name or a value becomes SQL text, `postgresql.conf` text,
//! `pg_hba.conf` text, or a word of the libpq `options` parameter.
//!
//! Every function here takes any string (the spec's role and database names are hostile by
//! assumption: quotes, `"; DROP ROLE x; --`, `$$`, backslashes, newlines) and returns text that
//! the consumer reads back as exactly that string. None of them accepts NUL: Postgres cannot
//! store it, and the spec's validation rejects it before a name or a value gets here; a NUL is
//! dropped rather than let it truncate a statement.

/// A SQL identifier: always double-quoted, embedded `"` doubled.
///
/// Always quoting keeps the case and the exact bytes of the spec's name (an unquoted `MyRole`
/// would become `myrole`) and makes keywords (`user`, `all`) harmless.
pub fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars().filter(|&c| c != '\0') {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A SQL string literal: single-quoted, embedded `'` doubled.
///
/// A string with a backslash gets the escape-string form `E'…'` with every backslash doubled,
/// so it reads back the same whether `standard_conforming_strings` is on (the default, where
/// a plain `'\'` is one backslash) or off (where it would start an escape). Without a
/// backslash the plain form means the same under both settings.
pub fn quote_literal(value: &str) -> String {
    let escape = value.contains('\\');
    let mut out = String::with_capacity(value.len() + 3);
    if escape {
        out.push('E');
    }
    out.push('\'');
    for c in value.chars().filter(|&c| c != '\0') {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A `postgresql.conf` value: single-quoted, `'` doubled, `\` doubled.
///
/// The configuration file lexer takes no raw newline inside a quoted value, so newline and
/// carriage return are written as the escapes `\n` and `\r` that it turns back into those
/// characters; every other character stands for itself.
pub fn quote_setting_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars().filter(|&c| c != '\0') {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            _ => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Whether `name` can stand as a setting name in `postgresql.conf`: what its lexer reads as
/// one name (letters, digits, `_`, bytes >= 0x80, not starting with a digit), or two such
/// names joined by one `.` (an extension's setting). Names cannot be quoted there, so anything
/// else is refused rather than written.
pub fn is_setting_name(name: &str) -> bool {
    fn is_id(part: &str) -> bool {
        let mut bytes = part.bytes();
        match bytes.next() {
            Some(b) if b.is_ascii_alphabetic() || b == b'_' || b >= 0x80 => {}
            _ => return false,
        }
        bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80)
    }
    match name.split_once('.') {
        None => is_id(name),
        Some((prefix, rest)) => is_id(prefix) && is_id(rest),
    }
}

/// A user or database name in `pg_hba.conf`: always double-quoted (so `all`, `+group` and
/// `@file` are taken literally), embedded `"` doubled, as the hba tokenizer reads it.
///
/// `None` for a name that no hba line can hold: a newline or carriage return ends the line.
pub fn quote_hba_name(name: &str) -> Option<String> {
    if name.contains(['\n', '\r']) {
        return None;
    }
    Some(quote_ident(name))
}

/// One `-c name=value` word of the libpq `options` parameter: Postgres splits that parameter
/// at spaces unless escaped with a backslash, and reads `\\` as one backslash.
pub fn option_word(name: &str, value: &str) -> String {
    let mut out = String::with_capacity(name.len() + value.len() + 4);
    out.push_str("-c ");
    for c in name
        .chars()
        .chain(std::iter::once('='))
        .chain(value.chars())
    {
        match c {
            '\0' => {}
            ' ' | '\t' | '\n' | '\r' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_always_quoted_and_quotes_doubled() {
        assert_eq!(quote_ident("alice"), r#""alice""#);
        assert_eq!(quote_ident("MyRole"), r#""MyRole""#);
        assert_eq!(quote_ident(r#"zenith "new""#), r#""zenith ""new""""#);
        assert_eq!(
            quote_ident(r#""; DROP ROLE x; --"#),
            r#""""; DROP ROLE x; --""#
        );
        assert_eq!(quote_ident("$$"), r#""$$""#);
        assert_eq!(quote_ident(r"back\slash"), r#""back\slash""#);
        assert_eq!(quote_ident("ünïcødé ☃"), "\"ünïcødé ☃\"");
        assert_eq!(quote_ident(""), r#""""#);
        let long = "a".repeat(63);
        assert_eq!(quote_ident(&long), format!("\"{long}\""));
    }

    #[test]
    fn literals_double_quotes_and_escape_backslashes() {
        assert_eq!(quote_literal("plain"), "'plain'");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal("'; DROP ROLE x; --"), "'''; DROP ROLE x; --'");
        assert_eq!(quote_literal("$$ body $$"), "'$$ body $$'");
        assert_eq!(quote_literal(r"a\b"), r"E'a\\b'");
        assert_eq!(quote_literal(r"\'"), r"E'\\'''");
        assert_eq!(quote_literal("line\nbreak"), "'line\nbreak'");
        assert_eq!(quote_literal(""), "''");
    }

    #[test]
    fn setting_values_double_quotes_and_backslashes() {
        assert_eq!(quote_setting_value("on"), "'on'");
        assert_eq!(quote_setting_value("128MB"), "'128MB'");
        assert_eq!(
            quote_setting_value("here's a backslash \\ and a quote ' and a double-quote \" hooray"),
            "'here''s a backslash \\\\ and a quote '' and a double-quote \" hooray'"
        );
        assert_eq!(quote_setting_value("a\nb\rc"), r"'a\nb\rc'");
        assert_eq!(quote_setting_value("# not a comment"), "'# not a comment'");
    }

    #[test]
    fn setting_names_follow_the_config_lexer() {
        for ok in [
            "fsync",
            "neon.tenant_id",
            "_x",
            "test.escaping",
            "a1",
            "pg_stat_statements.max",
        ] {
            assert!(is_setting_name(ok), "{ok}");
        }
        for bad in [
            "",
            "1abc",
            "a.b.c",
            ".a",
            "a.",
            "a b",
            "a=1\nshared_preload_libraries",
            "a-b",
            "a'b",
        ] {
            assert!(!is_setting_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn hba_names_are_quoted_and_newlines_refused() {
        assert_eq!(
            quote_hba_name("cloud_admin").as_deref(),
            Some(r#""cloud_admin""#)
        );
        assert_eq!(quote_hba_name("all").as_deref(), Some(r#""all""#));
        assert_eq!(quote_hba_name(r#"a"b"#).as_deref(), Some(r#""a""b""#));
        assert_eq!(quote_hba_name("a\nb"), None);
    }

    #[test]
    fn option_words_escape_spaces_and_backslashes() {
        assert_eq!(
            option_word("statement_timeout", "0"),
            "-c statement_timeout=0"
        );
        assert_eq!(option_word("search_path", ""), "-c search_path=");
        assert_eq!(
            option_word("application_name", r"a b\c"),
            r"-c application_name=a\ b\\c"
        );
    }
}
