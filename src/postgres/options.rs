//! The spec's role and database options, parsed into what they mean and checked, so that a
//! bad option fails the plan (naming the role or database) before anything is sent.
//!
//! Role options assert attributes: an option the spec names is enforced, an attribute it does
//! not name is left as it is (CloudNativePG's lesson: silence in the spec never takes
//! something away). `LOGIN` is the one default: a declared role is a login role unless its
//! options say `NOLOGIN`.

use std::collections::BTreeMap;

use crate::postgres::catalog::{CatalogDatabase, CatalogRole, ValidUntil, Verifier};
use crate::postgres::quote::{quote_ident, quote_literal};
use crate::spec::{Database, GenericOption, Role};

/// The password a role must have, as the verifier Postgres stores.
///
/// `SCRAM-SHA-256$…` is stored as is; 32 hex digits (Neon's form: md5 of password + role
/// name) and `md5` + 32 hex digits become `md5` + the digits in lowercase, which is how
/// Postgres recognises (and stores) an md5 hash rather than hashing it again. `null` means
/// no password. The error never contains the value.
pub fn desired_verifier(role: &Role) -> Result<Option<Verifier>, String> {
    let Some(given) = role.encrypted_password.as_deref() else {
        return Ok(None);
    };
    if given.starts_with("SCRAM-SHA-256$") {
        return Ok(Some(Verifier::new(given)));
    }
    let hex = given.strip_prefix("md5").unwrap_or(given);
    if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Some(Verifier::new(format!(
            "md5{}",
            hex.to_ascii_lowercase()
        ))));
    }
    Err("encrypted_password is neither a SCRAM-SHA-256 verifier nor an md5 hash".into())
}

/// A role's attributes as the spec declares them (`None`: not declared, left alone).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoleAttributes {
    pub login: bool,
    pub create_db: Option<bool>,
    pub create_role: Option<bool>,
    pub replication: Option<bool>,
    pub bypass_rls: Option<bool>,
    pub inherit: Option<bool>,
    pub connection_limit: Option<i32>,
    /// The spec's text (sent as given) and what it means (compared with the catalog).
    pub valid_until: Option<(String, ValidUntil)>,
}

/// Boolean role attributes: the option name, and which field it sets.
const ROLE_FLAGS: [&str; 6] = [
    "LOGIN",
    "CREATEDB",
    "CREATEROLE",
    "REPLICATION",
    "BYPASSRLS",
    "INHERIT",
];

impl RoleAttributes {
    /// Parses `role.options`. Names are case-insensitive, `_` and ` ` alike
    /// (`CONNECTION_LIMIT` = `CONNECTION LIMIT`). A flag takes no value or a boolean
    /// (`CREATEDB` with `"false"` means `NOCREATEDB`).
    pub fn from_spec(options: Option<&[GenericOption]>) -> Result<RoleAttributes, String> {
        let mut attrs = RoleAttributes {
            login: true,
            ..RoleAttributes::default()
        };
        let mut seen = BTreeMap::new();
        for option in options.unwrap_or(&[]) {
            let name = option_name(&option.name);
            if seen.insert(name.clone(), ()).is_some() {
                return Err(format!("role option {name} is given twice"));
            }
            let value = option.value.as_deref();
            if name == "SUPERUSER" || name == "NOSUPERUSER" {
                return Err(format!(
                    "role option {name} is not accepted: superuser is compute_ctl's alone"
                ));
            }
            if name == "PASSWORD" || name == "ENCRYPTED PASSWORD" {
                return Err(format!(
                    "role option {name} is not accepted: the password comes from encrypted_password"
                ));
            }
            if let Some((flag, negated)) = ROLE_FLAGS.iter().find_map(|flag| {
                if name == *flag {
                    Some((*flag, false))
                } else if name.strip_prefix("NO") == Some(flag) {
                    Some((*flag, true))
                } else {
                    None
                }
            }) {
                let on = match value {
                    None => true,
                    Some(v) => parse_bool(v)
                        .ok_or_else(|| format!("role option {name}: {v:?} is not a boolean"))?,
                } != negated;
                match flag {
                    "LOGIN" => attrs.login = on,
                    "CREATEDB" => attrs.create_db = Some(on),
                    "CREATEROLE" => attrs.create_role = Some(on),
                    "REPLICATION" => attrs.replication = Some(on),
                    "BYPASSRLS" => attrs.bypass_rls = Some(on),
                    _ => attrs.inherit = Some(on),
                }
                continue;
            }
            match name.as_str() {
                "CONNECTION LIMIT" => {
                    let v = value.ok_or("role option CONNECTION LIMIT needs a value")?;
                    attrs.connection_limit = Some(parse_connection_limit(v).ok_or_else(|| {
                        format!("role option CONNECTION LIMIT: {v:?} is not an integer >= -1")
                    })?);
                }
                "VALID UNTIL" => {
                    let v = value.ok_or("role option VALID UNTIL needs a value")?;
                    let at = parse_timestamp(v).ok_or_else(|| {
                        format!(
                            "role option VALID UNTIL: {v:?} is not 'infinity' or an ISO 8601 \
                             timestamp (YYYY-MM-DD[ HH:MM[:SS[.ffffff]]][Z|+HH[:MM]])"
                        )
                    })?;
                    attrs.valid_until = Some((v.to_owned(), at));
                }
                _ => return Err(format!("unknown role option {:?}", option.name)),
            }
        }
        Ok(attrs)
    }

    /// The `CREATE ROLE … WITH` clause: every declared attribute.
    pub fn create_clause(&self) -> Vec<String> {
        let mut out = vec![flag("LOGIN", self.login)];
        self.push_declared(&mut out, None);
        out
    }

    /// The `ALTER ROLE … WITH` clause that brings `current` to the declared attributes;
    /// empty when it has them all.
    pub fn alter_clause(&self, current: &CatalogRole) -> Vec<String> {
        let mut out = Vec::new();
        if self.login != current.login {
            out.push(flag("LOGIN", self.login));
        }
        self.push_declared(&mut out, Some(current));
        out
    }

    fn push_declared(&self, out: &mut Vec<String>, current: Option<&CatalogRole>) {
        let flags = [
            ("CREATEDB", self.create_db, current.map(|c| c.create_db)),
            (
                "CREATEROLE",
                self.create_role,
                current.map(|c| c.create_role),
            ),
            (
                "REPLICATION",
                self.replication,
                current.map(|c| c.replication),
            ),
            ("BYPASSRLS", self.bypass_rls, current.map(|c| c.bypass_rls)),
            ("INHERIT", self.inherit, current.map(|c| c.inherit)),
        ];
        for (name, want, have) in flags {
            if let Some(want) = want {
                if have != Some(want) {
                    out.push(flag(name, want));
                }
            }
        }
        if let Some(limit) = self.connection_limit {
            if current.map(|c| c.connection_limit) != Some(limit) {
                out.push(format!("CONNECTION LIMIT {limit}"));
            }
        }
        if let Some((text, at)) = &self.valid_until {
            if current.and_then(|c| c.valid_until) != Some(*at) {
                out.push(format!("VALID UNTIL {}", quote_literal(text)));
            }
        }
    }

    /// `current` as it will be once the clause built from `self` ran.
    pub fn apply_to(&self, current: &mut CatalogRole) {
        current.login = self.login;
        let flags = [
            (self.create_db, &mut current.create_db),
            (self.create_role, &mut current.create_role),
            (self.replication, &mut current.replication),
            (self.bypass_rls, &mut current.bypass_rls),
            (self.inherit, &mut current.inherit),
        ];
        for (want, have) in flags {
            if let Some(want) = want {
                *have = want;
            }
        }
        if let Some(limit) = self.connection_limit {
            current.connection_limit = limit;
        }
        if let Some((_, at)) = self.valid_until {
            current.valid_until = Some(at);
        }
    }
}

fn flag(name: &str, on: bool) -> String {
    if on {
        name.to_owned()
    } else {
        format!("NO{name}")
    }
}

/// A database's options as the spec declares them.
///
/// Options that only `CREATE DATABASE` takes (template, locale, encoding, strategy,
/// tablespace) apply when the database is created and are not compared afterwards: Postgres
/// cannot change them in place. `CONNECTION LIMIT`, `IS_TEMPLATE` and `ALLOW_CONNECTIONS`
/// are enforced on existing databases too.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DatabaseOptions {
    /// Rendered `NAME = value` items of the `CREATE DATABASE … WITH` clause, in spec order.
    pub create: Vec<String>,
    pub connection_limit: Option<i32>,
    pub is_template: Option<bool>,
    pub allow_connections: Option<bool>,
}

/// How a database option's value is written.
enum DatabaseValue {
    /// An object name: `TEMPLATE`, `TABLESPACE`.
    Identifier,
    /// A string: locales, encoding, provider, strategy.
    Literal,
}

impl DatabaseOptions {
    pub fn from_spec(database: &Database) -> Result<DatabaseOptions, String> {
        let mut out = DatabaseOptions::default();
        let mut seen = BTreeMap::new();
        for option in database.options.as_deref().unwrap_or(&[]) {
            // `CONNECTION LIMIT` is two words in SQL; spec writers use both spellings.
            let name = option_name(&option.name).replace(' ', "_");
            if seen.insert(name.clone(), ()).is_some() {
                return Err(format!("database option {name} is given twice"));
            }
            let value = option
                .value
                .as_deref()
                .ok_or_else(|| format!("database option {name} needs a value"))?;
            let kind = match name.as_str() {
                "TEMPLATE" | "TABLESPACE" => DatabaseValue::Identifier,
                "LC_COLLATE" | "LC_CTYPE" | "ENCODING" | "LOCALE" | "ICU_LOCALE"
                | "LOCALE_PROVIDER" | "STRATEGY" | "COLLATION_VERSION" => DatabaseValue::Literal,
                "CONNECTION_LIMIT" => {
                    let limit = parse_connection_limit(value).ok_or_else(|| {
                        format!("database option {name}: {value:?} is not an integer >= -1")
                    })?;
                    out.connection_limit = Some(limit);
                    out.create.push(format!("CONNECTION LIMIT = {limit}"));
                    continue;
                }
                "IS_TEMPLATE" | "ALLOW_CONNECTIONS" => {
                    let on = parse_bool(value).ok_or_else(|| {
                        format!("database option {name}: {value:?} is not a boolean")
                    })?;
                    if name == "IS_TEMPLATE" {
                        out.is_template = Some(on);
                    } else {
                        out.allow_connections = Some(on);
                    }
                    out.create.push(format!("{name} = {on}"));
                    continue;
                }
                _ => return Err(format!("unknown database option {:?}", option.name)),
            };
            let rendered = match kind {
                DatabaseValue::Identifier => quote_ident(value),
                DatabaseValue::Literal => quote_literal(value),
            };
            out.create.push(format!("{name} = {rendered}"));
        }
        Ok(out)
    }

    /// The `ALTER DATABASE … WITH` items that bring `current` to the declared options.
    pub fn alter_clause(&self, current: &CatalogDatabase) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(limit) = self.connection_limit {
            if current.connection_limit != limit {
                out.push(format!("CONNECTION LIMIT = {limit}"));
            }
        }
        if let Some(on) = self.is_template {
            if current.is_template != on {
                out.push(format!("IS_TEMPLATE = {on}"));
            }
        }
        if let Some(on) = self.allow_connections {
            if current.allow_connections != on {
                out.push(format!("ALLOW_CONNECTIONS = {on}"));
            }
        }
        out
    }

    /// `current` as it will be once the options ran.
    pub fn apply_to(&self, current: &mut CatalogDatabase) {
        if let Some(limit) = self.connection_limit {
            current.connection_limit = limit;
        }
        if let Some(on) = self.is_template {
            current.is_template = on;
        }
        if let Some(on) = self.allow_connections {
            current.allow_connections = on;
        }
    }
}

/// Uppercase, `_` read as a space, runs of spaces collapsed.
fn option_name(name: &str) -> String {
    name.replace('_', " ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_uppercase()
}

/// Postgres's spellings of a boolean.
fn parse_bool(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "t" | "on" | "yes" | "y" | "1" => Some(true),
        "false" | "f" | "off" | "no" | "n" | "0" => Some(false),
        _ => None,
    }
}

fn parse_connection_limit(value: &str) -> Option<i32> {
    value.trim().parse::<i32>().ok().filter(|&n| n >= -1)
}

/// Parses a `VALID UNTIL` value: `infinity`, `-infinity`, or
/// `YYYY-MM-DD[(T| )HH:MM[:SS[.ffffff]]][ ][Z|±HH[[:]MM]]`. A time without an offset is UTC,
/// as it is for Postgres in compute_ctl's admin session (`TimeZone=UTC`), so both read the
/// text as the same instant and an unchanged spec sends nothing.
pub fn parse_timestamp(text: &str) -> Option<ValidUntil> {
    let text = text.trim();
    match text.to_ascii_lowercase().as_str() {
        "infinity" | "+infinity" => return Some(ValidUntil::Infinity),
        "-infinity" => return Some(ValidUntil::NegativeInfinity),
        _ => {}
    }
    let b = text.as_bytes();
    let mut pos = 0;
    let year = digits(b, &mut pos, 4)?;
    expect(b, &mut pos, b'-')?;
    let month = digits(b, &mut pos, 2)?;
    expect(b, &mut pos, b'-')?;
    let day = digits(b, &mut pos, 2)?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    let (mut hour, mut minute, mut second, mut micros) = (0, 0, 0, 0);
    if matches!(b.get(pos), Some(b'T' | b't' | b' '))
        && b.get(pos + 1).is_some_and(u8::is_ascii_digit)
    {
        pos += 1;
        hour = digits(b, &mut pos, 2)?;
        expect(b, &mut pos, b':')?;
        minute = digits(b, &mut pos, 2)?;
        if b.get(pos) == Some(&b':') {
            pos += 1;
            second = digits(b, &mut pos, 2)?;
            if b.get(pos) == Some(&b'.') {
                pos += 1;
                let start = pos;
                while pos < b.len() && b[pos].is_ascii_digit() {
                    pos += 1;
                }
                let fraction = &b[start..pos];
                if fraction.is_empty() || fraction.len() > 6 {
                    return None;
                }
                for (i, d) in fraction.iter().enumerate() {
                    micros += i64::from(d - b'0') * 10_i64.pow(5 - i as u32);
                }
            }
        }
        if hour > 23 || minute > 59 || second > 59 {
            return None;
        }
    }
    if b.get(pos) == Some(&b' ') {
        pos += 1;
    }
    let mut offset_seconds = 0;
    match b.get(pos) {
        None => {}
        Some(b'Z' | b'z') => pos += 1,
        Some(&sign @ (b'+' | b'-')) => {
            pos += 1;
            let hours = digits(b, &mut pos, 2)?;
            let mut minutes = 0;
            if b.get(pos) == Some(&b':') {
                pos += 1;
            }
            if pos < b.len() {
                minutes = digits(b, &mut pos, 2)?;
            }
            if hours > 15 || minutes > 59 {
                return None;
            }
            offset_seconds = (hours * 3600 + minutes * 60) * if sign == b'-' { -1 } else { 1 };
        }
        Some(_) => return None,
    }
    if pos != b.len() {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    Some(ValidUntil::MicrosSinceEpoch(seconds * 1_000_000 + micros))
}

fn digits(b: &[u8], pos: &mut usize, count: usize) -> Option<i64> {
    let chunk = b.get(*pos..*pos + count)?;
    if !chunk.iter().all(u8::is_ascii_digit) {
        return None;
    }
    *pos += count;
    Some(chunk.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
}

fn expect(b: &[u8], pos: &mut usize, byte: u8) -> Option<()> {
    (b.get(*pos) == Some(&byte)).then(|| *pos += 1)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(name: &str, value: Option<&str>) -> GenericOption {
        GenericOption {
            name: name.into(),
            value: value.map(Into::into),
            vartype: None,
        }
    }

    fn role(password: Option<&str>) -> Role {
        Role {
            name: "r".into(),
            encrypted_password: password.map(Into::into),
            options: None,
        }
    }

    #[test]
    fn verifiers_are_normalised() {
        let hex = "6B1D16B78004BBD51FA06AF9EDA75972";
        assert_eq!(
            desired_verifier(&role(Some(hex)))
                .unwrap()
                .unwrap()
                .as_str(),
            "md56b1d16b78004bbd51fa06af9eda75972"
        );
        assert_eq!(
            desired_verifier(&role(Some("md56b1d16b78004bbd51fa06af9eda75972")))
                .unwrap()
                .unwrap()
                .as_str(),
            "md56b1d16b78004bbd51fa06af9eda75972"
        );
        let scram = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy";
        assert_eq!(
            desired_verifier(&role(Some(scram)))
                .unwrap()
                .unwrap()
                .as_str(),
            scram
        );
        assert_eq!(desired_verifier(&role(None)).unwrap(), None);
        let err = desired_verifier(&role(Some("hunter2"))).unwrap_err();
        assert!(!err.contains("hunter2"));
    }

    #[test]
    fn role_options_parse_and_render() {
        let attrs = RoleAttributes::from_spec(Some(&[
            opt("createdb", None),
            opt("CONNECTION_LIMIT", Some("5")),
            opt("REPLICATION", Some("false")),
            opt("VALID UNTIL", Some("2030-01-01")),
        ]))
        .unwrap();
        assert_eq!(
            attrs.create_clause(),
            [
                "LOGIN",
                "CREATEDB",
                "NOREPLICATION",
                "CONNECTION LIMIT 5",
                "VALID UNTIL '2030-01-01'"
            ]
        );
        let mut current = CatalogRole::new(1, "r");
        // NOREPLICATION is what a new role has already.
        assert_eq!(attrs.alter_clause(&current).len(), 4);
        attrs.apply_to(&mut current);
        assert!(attrs.alter_clause(&current).is_empty());
    }

    #[test]
    fn role_options_refuse_unknown_superuser_and_bad_values() {
        for (option, expected) in [
            (
                opt("SUPERUSER", None),
                "role option SUPERUSER is not accepted",
            ),
            (opt("FLY", None), "unknown role option \"FLY\""),
            (
                opt("CONNECTION LIMIT", Some("-5")),
                "is not an integer >= -1",
            ),
            (opt("CONNECTION LIMIT", None), "needs a value"),
            (opt("CREATEDB", Some("maybe")), "is not a boolean"),
            (opt("VALID UNTIL", Some("2030-02-30")), "is not 'infinity'"),
            (opt("PASSWORD", Some("x")), "comes from encrypted_password"),
        ] {
            let err = RoleAttributes::from_spec(Some(&[option])).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
        let err = RoleAttributes::from_spec(Some(&[opt("createdb", None), opt("CREATEDB", None)]))
            .unwrap_err();
        assert_eq!(err, "role option CREATEDB is given twice");
    }

    #[test]
    fn database_options_quote_identifiers_and_literals() {
        let db = Database {
            name: "d".into(),
            owner: "o".into(),
            options: Some(vec![
                opt("TEMPLATE", Some("template0")),
                opt("lc_collate", Some("C")),
                opt("LC_CTYPE", Some("it's\\")),
                opt("CONNECTION LIMIT", Some("10")),
                opt("IS_TEMPLATE", Some("off")),
                opt("TABLESPACE", Some("pg \"default\"")),
            ]),
        };
        let options = DatabaseOptions::from_spec(&db).unwrap();
        assert_eq!(
            options.create,
            [
                "TEMPLATE = \"template0\"",
                "LC_COLLATE = 'C'",
                "LC_CTYPE = E'it''s\\\\'",
                "CONNECTION LIMIT = 10",
                "IS_TEMPLATE = false",
                "TABLESPACE = \"pg \"\"default\"\"\"",
            ]
        );
        let mut current = CatalogDatabase::new(1, "d", "o");
        assert_eq!(options.alter_clause(&current), ["CONNECTION LIMIT = 10"]);
        options.apply_to(&mut current);
        assert!(options.alter_clause(&current).is_empty());
    }

    #[test]
    fn database_options_refuse_unknown_names_and_bad_values() {
        for (option, expected) in [
            (opt("OWNER", Some("x")), "unknown database option \"OWNER\""),
            (
                opt("CONNECTION_LIMIT", Some("1; DROP")),
                "is not an integer",
            ),
            (opt("ALLOW_CONNECTIONS", Some("sure")), "is not a boolean"),
            (opt("TEMPLATE", None), "needs a value"),
        ] {
            let db = Database {
                name: "d".into(),
                owner: "o".into(),
                options: Some(vec![option]),
            };
            let err = DatabaseOptions::from_spec(&db).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn timestamps_parse_as_postgres_reads_them_in_utc() {
        let at = |s: &str| match parse_timestamp(s) {
            Some(ValidUntil::MicrosSinceEpoch(m)) => m,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(at("1970-01-01"), 0);
        assert_eq!(at("2030-01-01"), 1_893_456_000_000_000);
        assert_eq!(at("2030-01-01 00:00:00+00"), 1_893_456_000_000_000);
        assert_eq!(at("2030-01-01T01:00:00+01:00"), 1_893_456_000_000_000);
        assert_eq!(at("2029-12-31 19:00-05"), 1_893_456_000_000_000);
        assert_eq!(at("2030-01-01 00:00:00.25Z"), 1_893_456_000_250_000);
        assert_eq!(at("2000-02-29 12:00"), 951_825_600_000_000);
        assert_eq!(parse_timestamp("infinity"), Some(ValidUntil::Infinity));
        assert_eq!(
            parse_timestamp("-infinity"),
            Some(ValidUntil::NegativeInfinity)
        );
        for bad in [
            "2030-13-01",
            "2001-02-29",
            "2030-01-01 24:00",
            "tomorrow",
            "2030-01-01x",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }
}
