//! The work behind Neon's catalog endpoints, on vanilla PostgreSQL: the roles and databases as
//! Neon lists them (`/dbs_and_roles`), a bounded `pg_dump --schema-only` (`/database_schema`),
//! a write that proves Postgres writable (`/check_writability`), `pg_stat_statements`' top
//! statements (`/insights`), installing an extension (`/extensions`) and granting privileges
//! on a schema (`/grants`).
//!
//! Every function opens its own admin session with `statement_timeout` set
//! (`STATEMENT_TIMEOUT_MS`) and returns a domain value or a typed [`CatalogApiError`]; status
//! codes are chosen in `src/http/` only. Names from a request reach SQL only through
//! `quote::quote_ident`, values only as bind parameters; a database name is a connection
//! parameter (never SQL). The callers run these on the catalog threads, never on a request
//! thread: each may take up to its timeout.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ChildStderr, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use postgres::Client;
use serde::Serialize;

use super::error::describe;
use super::quote::quote_ident;
use crate::subprocess::ChildHandle;

/// `statement_timeout` of every session opened here: a statement that runs longer is
/// cancelled by Postgres, and the request gets its error.
pub const STATEMENT_TIMEOUT_MS: u64 = 10_000;
/// The most `pg_stat_statements` rows `/insights` returns (Neon's `LIMIT 100`).
pub const INSIGHTS_ROWS_MAX: i64 = 100;

/// Privileges `/grants` accepts (Neon's `Privilege`), each rendered as this keyword.
pub const PRIVILEGES: [&str; 12] = [
    "SELECT",
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
    "USAGE",
    "CREATE",
    "CONNECT",
    "TEMPORARY",
    "EXECUTE",
];

/// Why a catalog request could not be done.
#[derive(Debug, thiserror::Error)]
pub enum CatalogApiError {
    /// The request names a database that does not exist.
    #[error("database {0:?} does not exist")]
    NoDatabase(String),
    /// `/insights` without `pg_stat_statements` loaded and created: what is missing.
    #[error("{0}")]
    NotLoaded(String),
    /// The admin session could not be opened (Postgres went away, or refuses).
    #[error("{0}")]
    Connect(String),
    /// Postgres refused or failed a statement: its own words.
    #[error("{0}")]
    Postgres(String),
    /// The dump grew past its byte limit: pg_dump killed, the answer cut.
    #[error(
        "the schema dump of database {database:?} is over {bytes_max} bytes \
         (SCHEMA_DUMP_BYTES_MAX): pg_dump stopped"
    )]
    DumpTooLarge { database: String, bytes_max: usize },
    /// The dump took longer than its time limit: pg_dump killed.
    #[error(
        "the schema dump of database {database:?} took over {timeout_ms} ms \
         (SCHEMA_DUMP_TIMEOUT): pg_dump killed"
    )]
    DumpTimeout { database: String, timeout_ms: u128 },
    /// pg_dump could not be started, or failed: its last words.
    #[error("{0}")]
    DumpFailed(String),
    /// The dump's reader went away before its end: pg_dump killed.
    #[error("the client of the schema dump of database {0:?} went away: pg_dump stopped")]
    ReaderGone(String),
}

/// Where the catalog requests go: the admin connection to the compute's Postgres (its
/// `postgres` database, or the one `-C` names), and the admin role's name.
#[derive(Clone, Debug)]
pub struct Target {
    pub config: postgres::Config,
    pub admin_role: String,
}

impl Target {
    /// A session on `database` (`None`: the admin connection's own), `statement_timeout` set.
    fn session(&self, database: Option<&str>) -> Result<Client, CatalogApiError> {
        let mut config = self.config.clone();
        if let Some(database) = database {
            config.dbname(database);
        }
        let mut client = config
            .connect(postgres::NoTls)
            .map_err(|e| CatalogApiError::Connect(format!("cannot connect: {}", describe(&e))))?;
        client
            .batch_execute(&format!("SET statement_timeout = {STATEMENT_TIMEOUT_MS}"))
            .map_err(postgres_error)?;
        Ok(client)
    }

    /// A session on `database`, after checking (on the admin connection) that it exists.
    fn session_on(&self, database: &str) -> Result<Client, CatalogApiError> {
        let mut admin = self.session(None)?;
        require_database(&mut admin, database)?;
        drop(admin);
        self.session(Some(database))
    }
}

fn postgres_error(e: postgres::Error) -> CatalogApiError {
    CatalogApiError::Postgres(describe(&e))
}

fn require_database(client: &mut Client, database: &str) -> Result<(), CatalogApiError> {
    let found = client
        .query_opt(
            "SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1",
            &[&database],
        )
        .map_err(postgres_error)?;
    match found {
        Some(_) => Ok(()),
        None => Err(CatalogApiError::NoDatabase(database.to_string())),
    }
}

/// A role as Neon's `CatalogObjects` lists it. The verifier is never given out
/// (`encrypted_password` is always null: CONTRACT.md, "Security of the API").
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CatalogRole {
    pub name: String,
    pub encrypted_password: Option<String>,
    pub options: Option<Vec<serde_json::Value>>,
}

/// A database as Neon's `CatalogObjects` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CatalogDatabase {
    pub name: String,
    pub owner: String,
    pub options: Option<Vec<serde_json::Value>>,
    /// `NOT datallowconn`.
    pub restrict_conn: bool,
    /// An interrupted `DROP DATABASE` left it (`datconnlimit = -2`).
    pub invalid: bool,
}

/// Neon's `CatalogObjects`: every role (`pg_authid`) and database (`pg_database`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CatalogObjects {
    pub roles: Vec<CatalogRole>,
    pub databases: Vec<CatalogDatabase>,
}

/// `GET /dbs_and_roles`: the roles and databases, by name.
pub fn dbs_and_roles(target: &Target) -> Result<CatalogObjects, CatalogApiError> {
    let mut client = target.session(None)?;
    let roles = client
        .query(
            "SELECT rolname::text FROM pg_catalog.pg_authid ORDER BY rolname",
            &[],
        )
        .map_err(postgres_error)?
        .iter()
        .map(|row| CatalogRole {
            name: row.get(0),
            encrypted_password: None,
            options: None,
        })
        .collect();
    let databases = client
        .query(
            "SELECT datname::text, \
             coalesce(pg_catalog.pg_get_userbyid(datdba)::text, ''), \
             NOT datallowconn, datconnlimit = -2 \
             FROM pg_catalog.pg_database ORDER BY datname",
            &[],
        )
        .map_err(postgres_error)?
        .iter()
        .map(|row| CatalogDatabase {
            name: row.get(0),
            owner: row.get(1),
            options: None,
            restrict_conn: row.get(2),
            invalid: row.get(3),
        })
        .collect();
    Ok(CatalogObjects { roles, databases })
}

/// The bounds of one schema dump.
#[derive(Clone, Copy, Debug)]
pub struct DumpLimits {
    pub bytes_max: usize,
    pub timeout: Duration,
}

/// `GET /database_schema`: `pg_dump --schema-only` of `database` (UTF-8), handed to `sink`
/// piece by piece as pg_dump writes it (`sink` answers `false` when its reader is gone), at
/// most `limits.bytes_max` bytes within `limits.timeout`; past either, or when the reader
/// goes, pg_dump is killed (with its process group) and the error says why: whoever streams
/// the pieces must then cut its answer, so that a cut schema never looks whole. Returns the
/// bytes dumped.
pub fn database_schema(
    target: &Target,
    bindir: &Path,
    database: &str,
    limits: DumpLimits,
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<u64, CatalogApiError> {
    let started = Instant::now();
    {
        let mut admin = target.session(None)?;
        require_database(&mut admin, database)?;
    }
    let config = &target.config;
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(name)) => name.clone(),
        Some(postgres::config::Host::Unix(dir)) => dir.display().to_string(),
        None => "127.0.0.1".to_string(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(crate::spec::DEFAULT_PORT);
    let user = config.get_user().unwrap_or_default();
    let pg_dump = bindir.join("pg_dump");
    let mut command = Command::new(&pg_dump);
    // Nothing of compute_ctl's environment (tokens) reaches pg_dump; the database name goes
    // in PGDATABASE, so that no character of it is read as a connection string.
    command
        .env_clear()
        .env("PGDATABASE", database)
        .env("PGHOST", &host)
        .env("PGPORT", port.to_string())
        .env("PGUSER", user)
        .env("PGAPPNAME", "compute_ctl:database_schema")
        .env("PGCONNECT_TIMEOUT", "10")
        .env("LC_ALL", "C")
        .args(["--schema-only", "--no-password", "--encoding=UTF8"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(password) = config.get_password() {
        command.env("PGPASSWORD", String::from_utf8_lossy(password).as_ref());
    }
    // A dump never outlives compute_ctl (the catalog thread that starts it lives as long).
    crate::subprocess::die_with_parent(&mut command, libc::SIGKILL);
    let mut child = command.spawn().map_err(|e| {
        CatalogApiError::DumpFailed(format!("cannot start {}: {e}", pg_dump.display()))
    })?;
    let handle = ChildHandle::new(child.id());
    let deadline = started + limits.timeout;
    let (mut stdout, mut stderr) = match (child.stdout.take(), child.stderr.take()) {
        (Some(out), Some(err)) => (out, err),
        _ => {
            handle.signal(libc::SIGKILL, true);
            handle.reap(child);
            return Err(CatalogApiError::DumpFailed("pg_dump has no pipes".into()));
        }
    };
    let read = read_bounded(&mut stdout, &mut stderr, limits.bytes_max, deadline, sink);
    if read.is_err() {
        handle.signal(libc::SIGKILL, true);
    }
    drop((stdout, stderr));
    let status = handle.reap(child);
    let (dumped, errors) = match read {
        Ok(both) => both,
        Err(Cut::ReaderGone) => return Err(CatalogApiError::ReaderGone(database.to_string())),
        Err(Cut::TooLarge) => {
            return Err(CatalogApiError::DumpTooLarge {
                database: database.to_string(),
                bytes_max: limits.bytes_max,
            })
        }
        Err(Cut::Late) => {
            return Err(CatalogApiError::DumpTimeout {
                database: database.to_string(),
                timeout_ms: limits.timeout.as_millis(),
            })
        }
        Err(Cut::Io(e)) => {
            return Err(CatalogApiError::DumpFailed(format!(
                "reading pg_dump's output: {e}"
            )))
        }
    };
    if status.code != Some(0) {
        let text = String::from_utf8_lossy(&errors);
        let last: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        let last = last[last.len().saturating_sub(3)..].join("; ");
        return Err(CatalogApiError::DumpFailed(super::error::bounded(
            &format!("pg_dump failed ({status:?}): {last}"),
        )));
    }
    Ok(dumped)
}

/// Why reading pg_dump's output stopped early.
enum Cut {
    TooLarge,
    ReaderGone,
    Late,
    Io(std::io::Error),
}

/// Bytes of stderr kept for the error message.
const STDERR_BYTES_MAX: usize = 64 * 1024;

/// Reads `stdout` into `sink` (at most `bytes_max`) and `stderr` (the first
/// `STDERR_BYTES_MAX`) until both end, with `poll(2)`, by `deadline`: one thread, no wait past
/// the deadline (a sink that waits for a slow reader counts against it too).
fn read_bounded(
    stdout: &mut ChildStdout,
    stderr: &mut ChildStderr,
    bytes_max: usize,
    deadline: Instant,
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<(u64, Vec<u8>), Cut> {
    let mut out: usize = 0;
    let mut err = Vec::new();
    let (mut out_open, mut err_open) = (true, true);
    let mut chunk = vec![0_u8; 64 * 1024];
    while out_open || err_open {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Cut::Late);
        }
        let mut fds = [
            libc::pollfd {
                fd: if out_open { stdout.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: if err_open { stderr.as_raw_fd() } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let wait_ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
        // SAFETY: two valid pollfds (a negative fd is ignored by poll).
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, wait_ms) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Cut::Io(e));
        }
        if out_open && fds[0].revents != 0 {
            // poll said readable (or hung up): this read does not block.
            let n = stdout.read(&mut chunk).map_err(Cut::Io)?;
            if n == 0 {
                out_open = false;
            } else if out + n > bytes_max {
                return Err(Cut::TooLarge);
            } else {
                out += n;
                if !sink(&chunk[..n]) {
                    return Err(Cut::ReaderGone);
                }
            }
        }
        if err_open && fds[1].revents != 0 {
            let n = stderr.read(&mut chunk).map_err(Cut::Io)?;
            if n == 0 {
                err_open = false;
            } else {
                let keep = n.min(STDERR_BYTES_MAX.saturating_sub(err.len()));
                err.extend_from_slice(&chunk[..keep]);
            }
        }
    }
    Ok((out as u64, err))
}

/// `POST /check_writability`, as Neon's checker: one row of `public.health_check` written
/// (the table made first when missing, in Neon's shape), so a read-only Postgres, a full disk
/// or a stuck WAL answer with Postgres's error.
pub fn check_writability(target: &Target) -> Result<(), CatalogApiError> {
    let mut client = target.session(None)?;
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS public.health_check (\
             id pg_catalog.int4 PRIMARY KEY GENERATED BY DEFAULT AS IDENTITY, \
             updated_at pg_catalog.timestamptz DEFAULT pg_catalog.now()); \
             INSERT INTO public.health_check VALUES (1, pg_catalog.now()) \
             ON CONFLICT (id) DO UPDATE SET updated_at = pg_catalog.now();",
        )
        .map_err(postgres_error)
}

/// `GET /insights`: Neon's `{"pg_stat_statements": [row, …]}`, each row
/// `row_to_json(pg_stat_statements)`, slowest first (mean execution + planning time), the
/// admin role's own statements left out, at most `INSIGHTS_ROWS_MAX`.
pub fn insights(target: &Target) -> Result<serde_json::Value, CatalogApiError> {
    let mut client = target.session(None)?;
    let preload: String = client
        .query_one(
            "SELECT pg_catalog.current_setting('shared_preload_libraries')",
            &[],
        )
        .map_err(postgres_error)?
        .get(0);
    let loaded = preload
        .split(',')
        .any(|lib| lib.trim().trim_matches('"') == "pg_stat_statements");
    if !loaded {
        return Err(CatalogApiError::NotLoaded(format!(
            "pg_stat_statements is not loaded: shared_preload_libraries is {preload:?}; add \
             pg_stat_statements to it in the spec's settings (a restart) and CREATE EXTENSION \
             pg_stat_statements in database {:?}",
            database_of(target)
        )));
    }
    let schema: Option<String> = client
        .query_opt(
            "SELECT n.nspname::text FROM pg_catalog.pg_extension e \
             JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace \
             WHERE e.extname = 'pg_stat_statements'",
            &[],
        )
        .map_err(postgres_error)?
        .map(|row| row.get(0));
    let Some(schema) = schema else {
        return Err(CatalogApiError::NotLoaded(format!(
            "pg_stat_statements is loaded but its extension is not created in database {:?}: \
             CREATE EXTENSION pg_stat_statements there (POST /extensions)",
            database_of(target)
        )));
    };
    let query = format!(
        "SELECT pg_catalog.row_to_json(pss)::text FROM {}.pg_stat_statements pss \
         WHERE pss.userid IS DISTINCT FROM \
         (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1) \
         ORDER BY (pss.mean_exec_time + pss.mean_plan_time) DESC LIMIT $2",
        quote_ident(&schema)
    );
    let rows = client
        .query(&query, &[&target.admin_role, &INSIGHTS_ROWS_MAX])
        .map_err(postgres_error)?;
    let statements = rows
        .iter()
        .map(|row| {
            let text: String = row.get(0);
            serde_json::from_str(&text)
                .map_err(|e| CatalogApiError::Postgres(format!("row_to_json gave no JSON: {e}")))
        })
        .collect::<Result<Vec<serde_json::Value>, _>>()?;
    Ok(serde_json::json!({ "pg_stat_statements": statements }))
}

fn database_of(target: &Target) -> String {
    target.config.get_dbname().unwrap_or("postgres").to_string()
}

/// `POST /extensions`, as Neon's: `extension` at `version` in `database`: created in schema
/// `public` when absent, updated when another version is installed, nothing when that one is.
/// Returns the version installed.
pub fn install_extension(
    target: &Target,
    extension: &str,
    database: &str,
    version: &str,
) -> Result<String, CatalogApiError> {
    let mut client = target.session_on(database)?;
    let installed: Option<String> = client
        .query_opt(
            "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = $1",
            &[&extension],
        )
        .map_err(postgres_error)?
        .map(|row| row.get(0));
    let statement = match installed {
        Some(installed) if installed == version => return Ok(installed),
        Some(_) => format!(
            "ALTER EXTENSION {} UPDATE TO {}",
            quote_ident(extension),
            quote_ident(version)
        ),
        None => format!(
            "CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA public VERSION {}",
            quote_ident(extension),
            quote_ident(version)
        ),
    };
    client.batch_execute(&statement).map_err(postgres_error)?;
    Ok(version.to_string())
}

/// `POST /grants`, as Neon's: `privileges` (each one of `PRIVILEGES`) on schema `schema` of
/// `database` to `role`; those the role holds already are not granted again (so a standby,
/// where nothing can be granted, answers for grants that exist).
pub fn set_role_grants(
    target: &Target,
    database: &str,
    schema: &str,
    privileges: &[String],
    role: &str,
) -> Result<(), CatalogApiError> {
    if let Some(bad) = privileges
        .iter()
        .find(|p| !PRIVILEGES.contains(&p.as_str()))
    {
        return Err(CatalogApiError::Postgres(format!(
            "{bad:?} is not a privilege (one of {})",
            PRIVILEGES.join(", ")
        )));
    }
    let mut client = target.session_on(database)?;
    let held: Vec<String> = client
        .query(
            "SELECT acl.privilege_type::text FROM pg_catalog.pg_namespace n \
             CROSS JOIN LATERAL pg_catalog.aclexplode(n.nspacl) acl \
             JOIN pg_catalog.pg_roles r ON r.oid = acl.grantee \
             WHERE r.rolname = $1 AND n.nspname = $2",
            &[&role, &schema],
        )
        .map_err(postgres_error)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut missing: Vec<&str> = Vec::new();
    for privilege in privileges {
        if !held.contains(privilege) && !missing.contains(&privilege.as_str()) {
            missing.push(privilege);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    // The keywords are `PRIVILEGES`' own (checked above); the names are quoted.
    let statement = format!(
        "GRANT {} ON SCHEMA {} TO {}",
        missing.join(", "),
        quote_ident(schema),
        quote_ident(role)
    );
    client.batch_execute(&statement).map_err(postgres_error)
}

/// The catalog requests' target for the compute whose Postgres runs on `pgdata`: the admin
/// connection `admin`, on the port Postgres wrote in `postmaster.pid` (unless `-C` names
/// one).
pub fn target(
    admin: &super::connect::AdminConnection,
    pgdata: &Path,
) -> Result<Target, CatalogApiError> {
    let port = super::process::pid_file_port(&pgdata.join("postmaster.pid")).ok_or_else(|| {
        CatalogApiError::Connect(format!(
            "Postgres is not running: no port in {}",
            pgdata.join("postmaster.pid").display()
        ))
    })?;
    Ok(Target {
        config: admin.config(port, None),
        admin_role: admin.role().to_string(),
    })
}
