//! The catalog snapshot: what roles and databases exist, read in one round trip.
//!
//! Reconciliation reads `pg_authid`, `pg_database` and `pg_shdepend` once, in one repeatable
//! read transaction sent as one simple query, and works out everything else in memory
//! (`plan`). A spec that matches the catalog therefore costs exactly this one read.

use std::fmt;

use postgres::{Client, SimpleQueryMessage, SimpleQueryRow};

use crate::postgres::reconcile::ApplyError;

/// The catalog read: the session's identity, then roles, databases, and which roles own or
/// are granted objects in which database. `BEGIN … COMMIT` makes the selects see one
/// snapshot; the text protocol (one round trip) is enough for these column types. The drift
/// check sends the same selects with its own after them (`read_with`).
const CATALOG_SELECTS: &str = "\
SELECT session_user AS who, pg_catalog.current_database() AS db, \
pg_catalog.current_setting('fsync') AS fsync, \
pg_catalog.current_setting('server_version_num') AS version;
SELECT oid, rolname, rolpassword, rolsuper, rolcanlogin, rolinherit, rolcreaterole, \
rolcreatedb, rolreplication, rolbypassrls, rolconnlimit, \
extract(epoch FROM rolvaliduntil) AS valid_until FROM pg_catalog.pg_authid;
SELECT oid, datname, pg_catalog.pg_get_userbyid(datdba) AS owner, datconnlimit, \
datistemplate, datallowconn, \
ARRAY(SELECT a.grantee FROM pg_catalog.aclexplode(datacl) a GROUP BY a.grantee \
HAVING pg_catalog.count(DISTINCT a.privilege_type) = 3) AS all_privileges_to \
FROM pg_catalog.pg_database;
SELECT DISTINCT refobjid AS role_oid, dbid FROM pg_catalog.pg_shdepend \
WHERE refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass;";

/// How many result sets `CATALOG_SELECTS` gives.
const CATALOG_RESULTS: usize = 4;

/// `datconnlimit` of a database whose `DROP DATABASE` was interrupted: it cannot be
/// connected to and must be dropped (Postgres 15.4 and later mark it so).
pub const DATCONNLIMIT_INVALID: i32 = -2;

/// A stored password verifier (`md5…` or `SCRAM-SHA-256$…`). Its `Debug` never shows it: a
/// verifier is as good as the password for `md5` authentication.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier(String);

impl Verifier {
    pub fn new(text: impl Into<String>) -> Verifier {
        Verifier(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An md5 verifier includes the role name, so Postgres clears it when the role is renamed.
    pub fn is_md5(&self) -> bool {
        self.0.starts_with("md5")
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_md5() {
            "md5(redacted)"
        } else {
            "scram(redacted)"
        })
    }
}

/// A point in time as `rolvaliduntil` holds it: microseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValidUntil {
    Infinity,
    NegativeInfinity,
    MicrosSinceEpoch(i64),
}

impl ValidUntil {
    /// Parses `extract(epoch FROM …)` output: `Infinity`, `-Infinity`, or a decimal number
    /// of seconds (`1893456000.000000`).
    pub fn from_epoch_text(text: &str) -> Option<ValidUntil> {
        match text {
            "Infinity" => return Some(ValidUntil::Infinity),
            "-Infinity" => return Some(ValidUntil::NegativeInfinity),
            _ => {}
        }
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let seconds: i64 = whole.parse().ok()?;
        let mut micros: i64 = 0;
        for (i, b) in fraction.bytes().take(6).enumerate() {
            micros += i64::from(b - b'0') * 10_i64.pow(5 - i as u32);
        }
        let total = seconds.checked_mul(1_000_000)?.checked_add(micros)?;
        Some(ValidUntil::MicrosSinceEpoch(if negative {
            -total
        } else {
            total
        }))
    }
}

/// One row of `pg_authid`, as far as reconciliation looks at it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogRole {
    pub oid: u32,
    pub name: String,
    pub password: Option<Verifier>,
    pub superuser: bool,
    pub login: bool,
    pub inherit: bool,
    pub create_role: bool,
    pub create_db: bool,
    pub replication: bool,
    pub bypass_rls: bool,
    /// `-1`: no limit.
    pub connection_limit: i32,
    pub valid_until: Option<ValidUntil>,
}

impl CatalogRole {
    /// A role with Postgres's defaults for `CREATE ROLE name` (no password, `INHERIT`,
    /// `NOLOGIN`), for building snapshots in tests and the plan's view of created roles.
    pub fn new(oid: u32, name: impl Into<String>) -> CatalogRole {
        CatalogRole {
            oid,
            name: name.into(),
            password: None,
            superuser: false,
            login: false,
            inherit: true,
            create_role: false,
            create_db: false,
            replication: false,
            bypass_rls: false,
            connection_limit: -1,
            valid_until: None,
        }
    }
}

/// One row of `pg_database`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogDatabase {
    pub oid: u32,
    pub name: String,
    /// The owner's role name.
    pub owner: String,
    /// `-1`: no limit; [`DATCONNLIMIT_INVALID`]: an interrupted drop.
    pub connection_limit: i32,
    pub is_template: bool,
    pub allow_connections: bool,
    /// Oids of the roles granted every privilege on it (`CREATE`, `CONNECT`, `TEMPORARY`)
    /// in its ACL; empty when it has the default ACL.
    pub all_privileges_to: Vec<u32>,
}

impl CatalogDatabase {
    pub fn new(oid: u32, name: impl Into<String>, owner: impl Into<String>) -> CatalogDatabase {
        CatalogDatabase {
            oid,
            name: name.into(),
            owner: owner.into(),
            connection_limit: -1,
            is_template: false,
            allow_connections: true,
            all_privileges_to: Vec::new(),
        }
    }

    /// Left behind by an interrupted `DROP DATABASE`: unusable, only fit to be dropped.
    pub fn is_invalid(&self) -> bool {
        self.connection_limit == DATCONNLIMIT_INVALID
    }

    /// Whether compute_ctl can connect to it (to reassign a dropped role's objects there).
    pub fn accepts_connections(&self) -> bool {
        self.allow_connections && !self.is_invalid()
    }
}

/// A role that owns objects in a database, or has privileges there (`pg_shdepend`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub role_oid: u32,
    /// `0` for shared objects: databases the role owns, privileges on databases.
    pub database_oid: u32,
}

/// Everything reconciliation knows about the cluster before it acts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatalogSnapshot {
    /// The role compute_ctl is connected as.
    pub session_user: String,
    /// The database compute_ctl's admin connection uses (statements with no database run
    /// there).
    pub session_database: String,
    /// The server runs with `fsync = off` (the embedded default's, unless the spec sets it):
    /// `CREATE DATABASE` then copies files (see `plan`).
    pub fsync_off: bool,
    /// `server_version_num` (`150018`): what the privileged role is granted depends on it.
    pub server_version_num: u32,
    pub roles: Vec<CatalogRole>,
    pub databases: Vec<CatalogDatabase>,
    pub dependencies: Vec<Dependency>,
}

impl CatalogSnapshot {
    /// Reads the snapshot over `client` in one round trip.
    pub fn read(client: &mut Client) -> Result<CatalogSnapshot, ApplyError> {
        let (snapshot, _) = CatalogSnapshot::read_with(client, "", 0)?;
        Ok(snapshot)
    }

    /// Reads the snapshot and the result sets of `more` (`more_results` selects, each ending
    /// with `;`) in the same snapshot and round trip.
    pub fn read_with(
        client: &mut Client,
        more: &str,
        more_results: usize,
    ) -> Result<(CatalogSnapshot, Vec<Vec<SimpleQueryRow>>), ApplyError> {
        let query = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;\n{CATALOG_SELECTS}\n{more}\nCOMMIT;"
        );
        let messages = client
            .simple_query(&query)
            .map_err(|e| ApplyError::from_postgres("catalog", "read the catalog", &e, None))?;
        let mut results: Vec<Vec<SimpleQueryRow>> = vec![Vec::new()];
        for message in messages {
            match message {
                SimpleQueryMessage::Row(row) => {
                    if let Some(last) = results.last_mut() {
                        last.push(row);
                    }
                }
                SimpleQueryMessage::CommandComplete(_) => results.push(Vec::new()),
                // Column names are looked up by name on each row.
                SimpleQueryMessage::RowDescription(_) => {}
                _ => {}
            }
        }
        // BEGIN, the selects, COMMIT, and the empty set opened after the last completion.
        let expected = CATALOG_RESULTS + more_results + 2;
        if results.len() != expected + 1 {
            return Err(catalog_error(format!(
                "expected {expected} results from the catalog query, got {}",
                results.len() - 1
            )));
        }
        let who = results[1]
            .first()
            .ok_or_else(|| catalog_error("no session row".into()))?;
        let mut snapshot = CatalogSnapshot {
            session_user: text(who, "who")?.to_owned(),
            session_database: text(who, "db")?.to_owned(),
            fsync_off: text(who, "fsync")? == "off",
            server_version_num: number(who, "version")?,
            ..CatalogSnapshot::default()
        };
        for row in &results[2] {
            snapshot.roles.push(CatalogRole {
                oid: number(row, "oid")?,
                name: text(row, "rolname")?.to_owned(),
                password: field(row, "rolpassword")?.map(Verifier::new),
                superuser: boolean(row, "rolsuper")?,
                login: boolean(row, "rolcanlogin")?,
                inherit: boolean(row, "rolinherit")?,
                create_role: boolean(row, "rolcreaterole")?,
                create_db: boolean(row, "rolcreatedb")?,
                replication: boolean(row, "rolreplication")?,
                bypass_rls: boolean(row, "rolbypassrls")?,
                connection_limit: number(row, "rolconnlimit")?,
                valid_until: match field(row, "valid_until")? {
                    None => None,
                    Some(t) => Some(ValidUntil::from_epoch_text(t).ok_or_else(|| {
                        catalog_error(format!("cannot read rolvaliduntil epoch {t:?}"))
                    })?),
                },
            });
        }
        for row in &results[3] {
            snapshot.databases.push(CatalogDatabase {
                oid: number(row, "oid")?,
                name: text(row, "datname")?.to_owned(),
                owner: text(row, "owner")?.to_owned(),
                connection_limit: number(row, "datconnlimit")?,
                is_template: boolean(row, "datistemplate")?,
                allow_connections: boolean(row, "datallowconn")?,
                all_privileges_to: oid_array(text(row, "all_privileges_to")?).ok_or_else(|| {
                    catalog_error(format!(
                        "column all_privileges_to: {:?} is not an array of oids",
                        text(row, "all_privileges_to").unwrap_or_default()
                    ))
                })?,
            });
        }
        for row in &results[4] {
            snapshot.dependencies.push(Dependency {
                role_oid: number(row, "role_oid")?,
                database_oid: number(row, "dbid")?,
            });
        }
        let rest = results.drain(1 + CATALOG_RESULTS..1 + CATALOG_RESULTS + more_results);
        Ok((snapshot, rest.collect()))
    }

    pub fn role(&self, name: &str) -> Option<&CatalogRole> {
        self.roles.iter().find(|r| r.name == name)
    }

    pub fn database(&self, name: &str) -> Option<&CatalogDatabase> {
        self.databases.iter().find(|d| d.name == name)
    }
}

impl CatalogDatabase {
    /// Whether the role of `oid` holds every privilege on it by a grant of its own.
    pub fn grants_all_to(&self, oid: u32) -> bool {
        oid != 0 && self.all_privileges_to.contains(&oid)
    }
}

pub(crate) fn catalog_error(message: String) -> ApplyError {
    ApplyError {
        object: "catalog".into(),
        statement: "read the catalog".into(),
        message,
    }
}

pub(crate) fn field<'a>(
    row: &'a SimpleQueryRow,
    column: &str,
) -> Result<Option<&'a str>, ApplyError> {
    row.try_get(column)
        .map_err(|e| catalog_error(format!("column {column}: {e}")))
}

pub(crate) fn text<'a>(row: &'a SimpleQueryRow, column: &str) -> Result<&'a str, ApplyError> {
    field(row, column)?.ok_or_else(|| catalog_error(format!("column {column} is null")))
}

pub(crate) fn boolean(row: &SimpleQueryRow, column: &str) -> Result<bool, ApplyError> {
    match text(row, column)? {
        "t" => Ok(true),
        "f" => Ok(false),
        other => Err(catalog_error(format!(
            "column {column}: {other:?} is not a boolean"
        ))),
    }
}

fn number<T: std::str::FromStr>(row: &SimpleQueryRow, column: &str) -> Result<T, ApplyError> {
    let t = text(row, column)?;
    t.parse()
        .map_err(|_| catalog_error(format!("column {column}: {t:?} is not a number")))
}

/// Parses an array of oids as Postgres writes it (`{10,16390}`, `{}`).
fn oid_array(text: &str) -> Option<Vec<u32>> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    if inner.is_empty() {
        return Some(Vec::new());
    }
    inner.split(',').map(|oid| oid.parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_arrays_parse_or_are_refused() {
        assert_eq!(oid_array("{}"), Some(vec![]));
        assert_eq!(oid_array("{10,16390}"), Some(vec![10, 16390]));
        assert_eq!(oid_array("{x}"), None);
        assert_eq!(oid_array("10"), None);
    }

    #[test]
    fn epoch_text_parses_to_micros() {
        assert_eq!(
            ValidUntil::from_epoch_text("1893456000.000000"),
            Some(ValidUntil::MicrosSinceEpoch(1_893_456_000_000_000))
        );
        assert_eq!(
            ValidUntil::from_epoch_text("1.5"),
            Some(ValidUntil::MicrosSinceEpoch(1_500_000))
        );
        assert_eq!(
            ValidUntil::from_epoch_text("-0.000001"),
            Some(ValidUntil::MicrosSinceEpoch(-1))
        );
        assert_eq!(
            ValidUntil::from_epoch_text("Infinity"),
            Some(ValidUntil::Infinity)
        );
        assert_eq!(
            ValidUntil::from_epoch_text("-Infinity"),
            Some(ValidUntil::NegativeInfinity)
        );
        assert_eq!(ValidUntil::from_epoch_text("x"), None);
        assert_eq!(ValidUntil::from_epoch_text(""), None);
    }

    #[test]
    fn verifier_debug_never_shows_the_hash() {
        let v = Verifier::new("md5abcdef0123456789abcdef0123456789");
        assert_eq!(format!("{v:?}"), "md5(redacted)");
        let s = Verifier::new("SCRAM-SHA-256$4096:salt$a:b");
        assert!(!format!("{s:?}").contains("salt"));
    }
}
