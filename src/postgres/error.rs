//! Postgres's own words, whole: the severity, SQLSTATE, message, DETAIL and HINT of an error
//! the server sent (`FATAL: 28P01: password authentication failed for user "x"`), or the
//! client's chain of causes when no server answered. Every error compute_ctl journals that
//! quotes Postgres goes through here, so none drops the lines that say why and what to do.

use std::fmt::Write as _;

/// The longest quote of Postgres kept in one message: a DETAIL can list many objects.
pub const QUOTE_BYTES_MAX: usize = 4096;

/// The parts of a server error, however they arrived (a `DbError`, an ErrorResponse read by
/// the wire client, a log line).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerError {
    /// `ERROR`, `FATAL`, `PANIC` (the non-localized one when the server sent it).
    pub severity: String,
    /// The SQLSTATE, five characters; `None` when the source did not carry it.
    pub code: Option<String>,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ServerError {
    /// From a `postgres` crate server error.
    pub fn of_db(db: &postgres::error::DbError) -> ServerError {
        ServerError {
            severity: db
                .parsed_severity()
                .map(|s| s.to_string())
                .unwrap_or_else(|| db.severity().to_string()),
            code: Some(db.code().code().to_string()),
            message: db.message().to_string(),
            detail: db.detail().map(str::to_string),
            hint: db.hint().map(str::to_string),
        }
    }
}

impl std::fmt::Display for ServerError {
    /// `SEVERITY: CODE: message; DETAIL: …; HINT: …` (psql's verbose form, on one line).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut text = String::new();
        let _ = write!(text, "{}: ", self.severity);
        if let Some(code) = &self.code {
            let _ = write!(text, "{code}: ");
        }
        text.push_str(&self.message);
        if let Some(detail) = &self.detail {
            let _ = write!(text, "; DETAIL: {detail}");
        }
        if let Some(hint) = &self.hint {
            let _ = write!(text, "; HINT: {hint}");
        }
        f.write_str(&bounded(&text))
    }
}

/// A `postgres` error in full: the server's error whole, else the client's description and
/// every cause (`error connecting to server: Connection refused (os error 111)`).
pub fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return ServerError::of_db(db).to_string();
    }
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // tokio-postgres repeats a cause in its own text for some kinds.
        if !message.contains(&cause_text) {
            let _ = write!(message, ": {cause_text}");
        }
        source = cause.source();
    }
    bounded(&message)
}

/// `text` cut to [`QUOTE_BYTES_MAX`] on a character boundary, marked when cut.
pub fn bounded(text: &str) -> String {
    if text.len() <= QUOTE_BYTES_MAX {
        return text.to_string();
    }
    let mut end = QUOTE_BYTES_MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut at {QUOTE_BYTES_MAX} bytes)", &text[..end])
}

/// The levels a log line of Postgres can carry, as its stderr writes them.
const LEVELS: [&str; 11] = [
    "PANIC", "FATAL", "ERROR", "WARNING", "NOTICE", "LOG", "INFO", "DEBUG", "DETAIL", "HINT",
    "LOCATION",
];

/// One message of Postgres's stderr log: its first line and the DETAIL and HINT lines that
/// follow it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    pub error: ServerError,
}

impl LogEntry {
    fn is_fatal(&self) -> bool {
        matches!(self.error.severity.as_str(), "FATAL" | "PANIC")
    }

    /// Worth quoting beside a FATAL: a warning or error, a message with a SQLSTATE other
    /// than `00000` (an `invalid value for parameter` LOG), or one that says why or what to
    /// do (the `could not bind` LOG with its HINT); not the routine start-up lines.
    fn is_telling(&self) -> bool {
        matches!(
            self.error.severity.as_str(),
            "FATAL" | "PANIC" | "ERROR" | "WARNING"
        ) || self.error.code.is_some()
            || self.error.detail.is_some()
            || self.error.hint.is_some()
    }
}

/// Splits a log line after its prefix: `2026-12-03 01:02:03.456 UTC [9] 28P01 FATAL:  x` →
/// (`FATAL`, the SQLSTATE `28P01` when the prefix ends with one (compute_ctl's default
/// `log_line_prefix` has `%e`; `log_error_verbosity = verbose` puts it after the level),
/// `x`).
fn split_log_line(line: &str) -> Option<(&'static str, Option<String>, &str)> {
    let (at, level) = LEVELS
        .iter()
        .filter_map(|level| {
            let needle = format!("{level}:  ");
            line.find(&needle).map(|at| (at, *level))
        })
        .min_by_key(|(at, _)| *at)?;
    let before = line[..at].trim_end();
    let mut rest = &line[at + level.len() + 3..];
    let is_code = |word: &str| {
        word.len() == 5
            && word
                .bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    };
    let mut code = before
        .rsplit(' ')
        .next()
        .filter(|word| is_code(word) && *word != "00000")
        .map(str::to_string);
    if let Some((word, tail)) = rest.split_once(": ") {
        if is_code(word) {
            if word != "00000" {
                code = Some(word.to_string());
            }
            rest = tail;
        }
    }
    Some((level, code, rest.trim_end()))
}

/// Postgres's stderr lines as messages: each level line starts one, its DETAIL and HINT
/// lines join it; LOCATION lines and lines without a level (a continued message) are
/// dropped.
pub fn parse_log<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<LogEntry> {
    let mut entries: Vec<LogEntry> = Vec::new();
    for line in lines {
        let Some((level, code, text)) = split_log_line(line) else {
            continue;
        };
        match (level, entries.last_mut()) {
            ("DETAIL", Some(last)) => last.error.detail = Some(text.to_string()),
            ("HINT", Some(last)) => last.error.hint = Some(text.to_string()),
            ("DETAIL" | "HINT" | "LOCATION", _) => {}
            (severity, _) => entries.push(LogEntry {
                error: ServerError {
                    severity: severity.to_string(),
                    code,
                    message: text.to_string(),
                    detail: None,
                    hint: None,
                },
            }),
        }
    }
    entries
}

/// How many telling messages before the FATAL a start-up failure quotes.
const MESSAGES_BEFORE_FATAL_MAX: usize = 4;

/// The messages of a failed start worth quoting, bounded: the last FATAL or PANIC, with the
/// telling messages just before it (a `could not bind` LOG whose HINT names the port) and
/// any FATAL after it; without a FATAL, the last telling messages.
pub fn around_the_fatal(entries: &[LogEntry]) -> Vec<&LogEntry> {
    let fatal = entries.iter().rposition(LogEntry::is_fatal);
    let end = fatal.map_or(entries.len(), |at| at + 1);
    let mut quoted: Vec<&LogEntry> = entries[..end]
        .iter()
        .rev()
        .skip(usize::from(fatal.is_some()))
        .take(MESSAGES_BEFORE_FATAL_MAX * 3)
        .filter(|e| e.is_telling())
        .take(MESSAGES_BEFORE_FATAL_MAX)
        .collect();
    quoted.reverse();
    if let Some(at) = fatal {
        quoted.push(&entries[at]);
    }
    quoted
}

/// The quote of a failed start: the messages `around_the_fatal`, one line, bounded.
pub fn quote_log<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let entries = parse_log(lines);
    let quoted = around_the_fatal(&entries);
    if quoted.is_empty() {
        return None;
    }
    let text = quoted
        .iter()
        .map(|e| e.error.to_string())
        .collect::<Vec<_>>()
        .join(" | ");
    Some(bounded(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_every_part_on_one_line() {
        let error = ServerError {
            severity: "FATAL".into(),
            code: Some("55000".into()),
            message: "recovery aborted because of insufficient parameter settings".into(),
            detail: Some("max_connections = 50 is a lower setting than on the primary".into()),
            hint: Some("You can restart the server".into()),
        };
        assert_eq!(
            error.to_string(),
            "FATAL: 55000: recovery aborted because of insufficient parameter settings; \
             DETAIL: max_connections = 50 is a lower setting than on the primary; \
             HINT: You can restart the server"
        );
        let bare = ServerError {
            severity: "ERROR".into(),
            message: "boom".into(),
            ..ServerError::default()
        };
        assert_eq!(bare.to_string(), "ERROR: boom");
    }

    #[test]
    fn quotes_the_messages_around_the_fatal_with_their_detail_and_hint() {
        let log = [
            "2026-12-03 01:02:03.456 UTC [9] LOG:  starting PostgreSQL 15.18 on x86_64",
            "2026-12-03 01:02:03.456 UTC [9] LOG:  could not bind IPv4 address \"127.0.0.1\": Address already in use",
            "2026-12-03 01:02:03.456 UTC [9] HINT:  Is another postmaster already running on port 5432? If not, wait a few seconds and retry.",
            "2026-12-03 01:02:03.456 UTC [9] WARNING:  could not create listen socket for \"127.0.0.1\"",
            "2026-12-03 01:02:03.456 UTC [9] 58000 FATAL:  could not create any TCP/IP sockets",
            "2026-12-03 01:02:03.456 UTC [9] LOG:  database system is shut down",
        ];
        assert_eq!(
            quote_log(log).unwrap(),
            "LOG: could not bind IPv4 address \"127.0.0.1\": Address already in use; \
             HINT: Is another postmaster already running on port 5432? If not, wait a few \
             seconds and retry. | WARNING: could not create listen socket for \"127.0.0.1\" | \
             FATAL: 58000: could not create any TCP/IP sockets"
        );
        let verbose = [
            "FATAL:  55000: recovery aborted because of insufficient parameter settings",
            "DETAIL:  max_connections = 50 is a lower setting than on the primary server, where its value was 100.",
            "HINT:  You can restart the server after making the necessary configuration changes.",
            "LOCATION:  RecoveryRequiresIntParameter, xlogrecovery.c:4583",
        ];
        let entries = parse_log(verbose);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].error.code.as_deref(), Some("55000"));
        assert!(entries[0]
            .error
            .detail
            .as_deref()
            .unwrap()
            .contains("max_connections = 50"));
        assert!(entries[0].error.hint.is_some());
        assert_eq!(quote_log(["LOG:  all is well"]), None);
    }

    #[test]
    fn bounds_long_quotes_on_a_char_boundary() {
        let long = "é".repeat(QUOTE_BYTES_MAX);
        let cut = bounded(&long);
        assert!(cut.len() < QUOTE_BYTES_MAX + 40, "{}", cut.len());
        assert!(cut.ends_with("(cut at 4096 bytes)"));
        assert_eq!(bounded("short"), "short");
    }
}
