//! Reconciliation: read the catalog once, plan in memory, send the plan one statement at a
//! time. Also the admin connection's settings and the error every failure becomes.

use std::fmt;
use std::time::Duration;

use postgres::{Client, NoTls};
use states::{ErrorKind, PhaseName, StepError, StepName};

use crate::postgres::catalog::CatalogSnapshot;
use crate::postgres::plan::{plan, Plan, Statement, StatementKind};
use crate::postgres::privileged::PrivilegedRole;
use crate::postgres::quote::option_word;
use crate::spec::ComputeSpec;

/// `lock_timeout` of the admin session. Long enough for the short locks that ordinary
/// traffic holds; short enough that a statement queued behind a long transaction (which
/// blocks every later user of that lock too) fails with a message naming the object instead
/// of hanging the configuration.
pub const ADMIN_LOCK_TIMEOUT: &str = "30s";

/// How long connecting to Postgres may take, unless the connection string says otherwise.
pub const CONNECT_TIMEOUT_SECS: u64 = 10;

/// Settings of the admin session, passed as startup options so they win over anything a user
/// set with `ALTER DATABASE/ROLE … SET` (startup options rank above those):
///
/// - `default_transaction_read_only=off`: a user's read-only default cannot stop DDL;
/// - `statement_timeout=0`, `idle_in_transaction_session_timeout=0`,
///   `idle_session_timeout=0`: `CREATE DATABASE` may take long and must not be cancelled by
///   a user's limit, nor the admin session closed between statements;
/// - `lock_timeout`: see [`ADMIN_LOCK_TIMEOUT`];
/// - `search_path=` (empty): every name compute_ctl writes is schema-qualified or built in;
///   a user's schema cannot shadow a function;
/// - `TimeZone=UTC`, `DateStyle=ISO`: `VALID UNTIL` values without an offset are UTC, as the
///   planner compares them;
/// - `log_statement=none`, `log_min_error_statement=panic`: statements carry password
///   verifiers (as good as the password for md5 authentication), and must not reach the
///   server log through a user's `log_statement=all` or a failed statement being echoed;
/// - `client_min_messages=warning`: Postgres's notices (an md5 password cleared by a rename)
///   are expected, not news.
pub const ADMIN_SESSION_SETTINGS: [(&str, &str); 11] = [
    ("default_transaction_read_only", "off"),
    ("statement_timeout", "0"),
    ("idle_in_transaction_session_timeout", "0"),
    ("idle_session_timeout", "0"),
    ("lock_timeout", ADMIN_LOCK_TIMEOUT),
    ("search_path", ""),
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO"),
    ("log_statement", "none"),
    ("log_min_error_statement", "panic"),
    ("client_min_messages", "warning"),
];

/// A failed reconciliation: which object, what compute_ctl was doing, and what Postgres (or
/// the plan's own check) said. Never holds a password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplyError {
    /// `role "alice"`, `database "DB2"`, `catalog`, `delta_operations[2]`.
    pub object: String,
    /// The statement's `describes` text (`create database "DB2"`), or the step that failed
    /// (`connect to database "x"`).
    pub statement: String,
    /// Postgres's own message (and detail), or the plan's reason.
    pub message: String,
}

impl ApplyError {
    /// From a `postgres` error: the server's error whole (SQLSTATE, message, DETAIL, HINT)
    /// when it is one, else the
    /// client's description (connection refused, closed…), scrubbed of `statement`'s
    /// password.
    pub(crate) fn from_postgres(
        object: &str,
        doing: &str,
        error: &postgres::Error,
        statement: Option<&Statement>,
    ) -> ApplyError {
        let message = super::error::describe(error);
        let message = match statement {
            Some(statement) => statement.redact(&message),
            None => message,
        };
        ApplyError {
            object: object.to_owned(),
            statement: doing.to_owned(),
            message,
        }
    }

    /// The journaled form: kind `postgres`, not retryable (the same spec would fail the same
    /// way; a new spec or a person is needed).
    pub fn to_step_error(&self, phase: PhaseName) -> StepError {
        // `ErrorKind::Postgres` is not retryable by default.
        StepError::new(
            phase,
            StepName::ApplySpec,
            ErrorKind::Postgres,
            self.to_string(),
        )
    }
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.statement, self.message)
    }
}

impl std::error::Error for ApplyError {}

/// What a reconciliation did, for the journal and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Statements sent (catalog reads not counted). `0` for a spec the catalog matches.
    pub statements_sent: usize,
    /// Catalog round trips: `1` for `reconcile`, `0` for a bare `apply`.
    pub catalog_reads: usize,
    /// One line per kind of statement sent (`create_role: 3`), then the plan's notes.
    pub summary: Vec<String>,
}

/// The admin connection's configuration: `connstr` (a URL or `key=value` string) with
/// [`ADMIN_SESSION_SETTINGS`] and then `extra_options` appended to its `options` (later
/// words win), `application_name=compute_ctl` and a connect timeout unless it sets them.
pub fn admin_config(
    connstr: &str,
    extra_options: &[(&str, &str)],
) -> Result<postgres::Config, ApplyError> {
    let mut config: postgres::Config =
        connstr.parse().map_err(|e: postgres::Error| ApplyError {
            object: "admin connection string".into(),
            statement: "parse the admin connection string".into(),
            message: e.to_string(),
        })?;
    let mut words: Vec<String> = config
        .get_options()
        .filter(|o| !o.trim().is_empty())
        .map(|o| vec![o.to_owned()])
        .unwrap_or_default();
    words.extend(
        ADMIN_SESSION_SETTINGS
            .iter()
            .chain(extra_options)
            .map(|(name, value)| option_word(name, value)),
    );
    config.options(&words.join(" "));
    if config.get_application_name().is_none() {
        config.application_name("compute_ctl");
    }
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(CONNECT_TIMEOUT_SECS));
    }
    Ok(config)
}

/// Connects as `config` says, to `database` instead of its own when given.
pub fn connect(
    config: &postgres::Config,
    database: Option<&str>,
) -> Result<Client, postgres::Error> {
    match database {
        None => config.connect(NoTls),
        Some(database) => {
            let mut config = config.clone();
            config.dbname(database);
            config.connect(NoTls)
        }
    }
}

/// Reads the catalog once, plans, and applies: the whole of what the `configuring` phase does
/// for roles, databases and delta operations, and the privileged role.
pub fn reconcile(
    config: &postgres::Config,
    spec: &ComputeSpec,
    admin_role: &str,
    privileged: &PrivilegedRole,
) -> Result<ApplyReport, ApplyError> {
    let admin_database = config.get_dbname().unwrap_or("the admin database");
    let admin = connect(config, None).map_err(|e| {
        ApplyError::from_postgres(
            "admin connection",
            &format!("connect to {admin_database}"),
            &e,
            None,
        )
    })?;
    reconcile_on(admin, config, spec, admin_role, privileged)
}

/// `reconcile` on an admin connection already open (to the database `config` names), which
/// saves a connection when the caller has one.
pub fn reconcile_on(
    mut admin: Client,
    config: &postgres::Config,
    spec: &ComputeSpec,
    admin_role: &str,
    privileged: &PrivilegedRole,
) -> Result<ApplyReport, ApplyError> {
    let snapshot = CatalogSnapshot::read(&mut admin)?;
    let plan = plan(spec, &snapshot, admin_role, privileged)?;
    let mut admin = Some(admin);
    let mut report = apply(
        |database| match (database, admin.take()) {
            (None, Some(client)) => Ok(client),
            (database, _) => connect(config, database),
        },
        &plan,
    )?;
    report.catalog_reads = 1;
    Ok(report)
}

/// Sends `plan`'s statements in order and stops at the first failure. Neighbours that may
/// share a transaction (`StatementKind::batches`: roles, ownership, database options) on the
/// same connection go as one transaction in one round trip (`BEGIN; …; COMMIT` as one simple
/// query); `CREATE DATABASE` and the others go on their own, in autocommit. When a batch
/// fails, nothing of it stayed (it was one transaction): it is rolled back and sent again one
/// statement at a time, so the error names the statement that failed.
///
/// `connect(None)` gives the admin database's connection, `connect(Some(db))` one to `db`; the
/// admin connection is kept, another is closed as soon as the statements for its database are
/// done (a later statement may drop or rename that database). An empty plan connects to
/// nothing.
///
/// Statements sent before a failure stay applied: each is idempotent in the next plan, which
/// is worked out from the catalog as it then is.
pub fn apply<F>(mut connect: F, plan: &Plan) -> Result<ApplyReport, ApplyError>
where
    F: FnMut(Option<&str>) -> Result<Client, postgres::Error>,
{
    let mut admin: Option<Client> = None;
    let mut other: Option<(String, Client)> = None;
    let mut report = ApplyReport::default();
    let mut counts: Vec<(StatementKind, usize)> = Vec::new();
    for batch in batches(&plan.statements) {
        let first = &batch[0];
        let connect_error = |e: postgres::Error, database: &str| {
            ApplyError::from_postgres(
                &first.object,
                &format!("{} (connect to database {database:?})", first.describes),
                &e,
                None,
            )
        };
        let client = match &first.database {
            None => {
                other = None;
                match &mut admin {
                    Some(client) => client,
                    slot @ None => {
                        slot.insert(connect(None).map_err(|e| connect_error(e, "admin"))?)
                    }
                }
            }
            Some(database) => {
                if other.as_ref().is_some_and(|(name, _)| name != database) {
                    other = None;
                }
                match &mut other {
                    Some((_, client)) => client,
                    slot @ None => {
                        let client =
                            connect(Some(database)).map_err(|e| connect_error(e, database))?;
                        &mut slot.insert((database.clone(), client)).1
                    }
                }
            }
        };
        send(client, batch)?;
        for statement in batch {
            report.statements_sent += 1;
            match counts.iter_mut().find(|(kind, _)| *kind == statement.kind) {
                Some((_, n)) => *n += 1,
                None => counts.push((statement.kind, 1)),
            }
        }
    }
    report.summary = counts
        .iter()
        .map(|(kind, n)| format!("{kind}: {n}"))
        .chain(plan.notes.iter().cloned())
        .collect();
    Ok(report)
}

/// `statements` cut into the runs sent together: neighbours that batch and share a database,
/// and every other statement alone.
fn batches(statements: &[Statement]) -> Vec<&[Statement]> {
    let mut out = Vec::new();
    let mut start = 0;
    for end in 1..=statements.len() {
        let split = end == statements.len() || {
            let (prev, next) = (&statements[end - 1], &statements[end]);
            !(prev.kind.batches() && next.kind.batches() && prev.database == next.database)
        };
        if split {
            out.push(&statements[start..end]);
            start = end;
        }
    }
    out
}

/// How many statements each round trip of `statements` holds, for tests of the plan.
#[cfg(test)]
pub(crate) fn batch_lengths(statements: &[Statement]) -> Vec<usize> {
    batches(statements).iter().map(|b| b.len()).collect()
}

/// Sends one batch: a lone statement as it is, several as one transaction in one round trip,
/// and, if that fails, rolled back and sent again one at a time to name the failing one.
fn send(client: &mut Client, batch: &[Statement]) -> Result<(), ApplyError> {
    let one = |client: &mut Client, statement: &Statement| {
        client.batch_execute(&statement.sql).map_err(|e| {
            ApplyError::from_postgres(&statement.object, &statement.describes, &e, Some(statement))
        })
    };
    if let [statement] = batch {
        return one(client, statement);
    }
    let mut sql = String::from("BEGIN;\n");
    for statement in batch {
        sql.push_str(&statement.sql);
        sql.push_str(";\n");
    }
    sql.push_str("COMMIT;");
    if client.batch_execute(&sql).is_ok() {
        return Ok(());
    }
    // The failed statement left the transaction aborted; nothing of the batch is applied.
    if let Err(e) = client.batch_execute("ROLLBACK") {
        return Err(ApplyError::from_postgres(
            &batch[0].object,
            "roll back a failed batch",
            &e,
            None,
        ));
    }
    for statement in batch {
        one(client, statement)?;
    }
    Ok(())
}
