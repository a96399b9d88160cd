//! `cluster.postgresql_conf` read as Postgres reads a `postgresql.conf` (its `guc-file.l`):
//! one `name [=] value` a line, `#` comments, values bare or in single quotes, so that its
//! lines are checked like `cluster.settings` before anything is touched.

/// One `name = value` line of `cluster.postgresql_conf`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConfLine {
    /// 1-based, as Postgres numbers lines in its errors.
    pub line: usize,
    pub name: String,
    /// The value as Postgres sees it: quotes taken off, escapes resolved.
    pub value: String,
}

/// A line Postgres would refuse with "syntax error in file".
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConfSyntaxError {
    pub line: usize,
    pub message: String,
}

/// Directives that name other files: compute_ctl cannot judge those files, and Postgres reads
/// them relative to PGDATA, which compute_ctl rebuilds.
const INCLUDE_DIRECTIVES: &[&str] = &["include", "include_if_exists", "include_dir"];

/// The `name = value` lines of `text` (include directives left out), and the lines Postgres
/// could not parse.
pub(crate) fn parse(text: &str) -> (Vec<ConfLine>, Vec<ConfSyntaxError>) {
    let mut lines = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        match parse_line(raw) {
            Ok(None) => {}
            Ok(Some((name, _))) if INCLUDE_DIRECTIVES.contains(&name.as_str()) => {}
            Ok(Some((name, value))) => lines.push(ConfLine { line, name, value }),
            Err(message) => errors.push(ConfSyntaxError { line, message }),
        }
    }
    (lines, errors)
}

/// The value of the last line that sets `name` (case-insensitive, as Postgres takes the last).
pub(crate) fn last_value<'a>(lines: &'a [ConfLine], name: &str) -> Option<&'a str> {
    lines
        .iter()
        .rev()
        .find(|l| l.name.eq_ignore_ascii_case(name))
        .map(|l| l.value.as_str())
}

fn parse_line(raw: &str) -> Result<Option<(String, String)>, String> {
    let rest = raw.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        return Ok(None);
    }
    let name_len = rest
        .char_indices()
        .find(|&(i, c)| !(is_letter(c) || (i > 0 && (c.is_ascii_digit() || c == '.'))))
        .map_or(rest.len(), |(i, _)| i);
    if name_len == 0 {
        return Err(format!("expected a setting name, found {}", shown(rest)));
    }
    let name = &rest[..name_len];
    let mut rest = rest[name_len..].trim_start();
    if let Some(after) = rest.strip_prefix('=') {
        rest = after.trim_start();
    }
    let (value, rest) = if let Some(quoted) = rest.strip_prefix('\'') {
        read_quoted(quoted).ok_or_else(|| format!("{name}: the quoted value is not closed"))?
    } else {
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '#')
            .unwrap_or(rest.len());
        if end == 0 {
            return Err(format!("{name}: no value"));
        }
        (rest[..end].to_string(), &rest[end..])
    };
    let rest = rest.trim_start();
    if !(rest.is_empty() || rest.starts_with('#')) {
        return Err(format!(
            "{name}: unexpected {} after the value (quote a value that has blanks)",
            shown(rest)
        ));
    }
    Ok(Some((name.to_string(), value)))
}

/// The text after an opening quote: the value (`''` and backslash escapes resolved, as
/// Postgres's `DeescapeQuotedString` does) and what follows the closing quote.
fn read_quoted(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\'' if chars.peek().is_some_and(|&(_, next)| next == '\'') => {
                chars.next();
                value.push('\'');
            }
            '\'' => return Some((value, &text[i + 1..])),
            '\\' => {
                let (_, escaped) = chars.next()?;
                value.push(match escaped {
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    other => other,
                });
            }
            other => value.push(other),
        }
    }
    None
}

/// Postgres's `LETTER`: ASCII letters, `_`, and any byte from 0x80 up.
fn is_letter(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || !c.is_ascii()
}

fn shown(text: &str) -> String {
    let cut: String = text.chars().take(40).collect();
    format!("{cut:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(line: usize, name: &str, value: &str) -> ConfLine {
        ConfLine {
            line,
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn reads_the_shapes_postgres_reads() {
        let text = "# a comment\n\
                    port=55433\n\
                    \n\
                    shared_buffers = '128MB'   # memory\n\
                    work_mem 4MB\n\
                    search_path = '\"$user\", public'\n\
                    neon.tenant_id = 'ab''cd'\n\
                    include 'other.conf'\n\
                    log_line_prefix = 'a\\tb\\'c'\n";
        let (lines, errors) = parse(text);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            lines,
            vec![
                line(2, "port", "55433"),
                line(4, "shared_buffers", "128MB"),
                line(5, "work_mem", "4MB"),
                line(6, "search_path", "\"$user\", public"),
                line(7, "neon.tenant_id", "ab'cd"),
                line(9, "log_line_prefix", "a\tb'c"),
            ]
        );
        assert_eq!(last_value(&lines, "PORT"), Some("55433"));
        assert_eq!(last_value(&lines, "fsync"), None);
    }

    #[test]
    fn names_the_line_postgres_would_refuse() {
        let (lines, errors) = parse("fsync = off\nwork_mem = 4 MB\n= 3\nx = 'open\n");
        assert_eq!(lines, vec![line(1, "fsync", "off")]);
        let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 4]);
        assert!(errors[0].message.contains("quote a value"), "{errors:?}");
    }
}
