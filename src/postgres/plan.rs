//! The plan: the statements that bring the catalog to the spec, worked out in memory.
//!
//! `plan` is a pure function of the spec, a [`CatalogSnapshot`] and the admin role's name. It
//! walks the spec in order over a working copy of the catalog (so a rename or a drop earlier
//! in the list is seen by what comes after it) and emits a [`Statement`] only where the
//! working copy differs from the spec: a spec that matches the catalog plans nothing.
//!
//! Order: the privileged role when it is missing (`privileged`), delta operations (in the
//! spec's order), then roles (created as members of the privileged role), then databases
//! (whose owners must exist by then; each gets all privileges for the privileged role), and
//! last the default privileges in each database created. What is never touched: the admin
//! role, the session user, the privileged role once it exists, roles named `pg_…`, and any
//! role or database the spec does not name (no implicit drops). A spec that declares the
//! admin role (Neon's demo spec does) or the privileged role gets a note; a delta operation
//! on either, or a declared `pg_…` role, fails the plan.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

use crate::postgres::catalog::{CatalogDatabase, CatalogRole, CatalogSnapshot, Verifier};
use crate::postgres::options::{desired_verifier, DatabaseOptions, RoleAttributes};
use crate::postgres::privileged::{PrivilegedRole, MEMBER_DEFAULTS};
use crate::postgres::quote::{quote_ident, quote_literal};
use crate::postgres::reconcile::ApplyError;
use crate::spec::{ComputeSpec, DeltaOp};

/// How long `rename_db` waits for each terminated backend to exit before renaming, ms.
/// `ALTER DATABASE … RENAME` waits up to 5 s more for stragglers on its own.
const TERMINATE_WAIT_MS: u32 = 5_000;

/// What a statement does; counted in the apply report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StatementKind {
    /// `REASSIGN OWNED BY`: a role about to be dropped hands its objects over.
    ReassignOwned,
    /// `DROP OWNED BY`: its remaining privileges go.
    DropOwned,
    DropRole,
    RenameRole,
    DropDatabase,
    /// Sessions connected to a database about to be renamed are ended.
    TerminateBackends,
    RenameDatabase,
    CreateRole,
    AlterRole,
    CreateDatabase,
    AlterDatabaseOwner,
    AlterDatabase,
    /// `GRANT`: what the privileged role is given (roles, functions, databases).
    Grant,
    /// `ALTER DEFAULT PRIVILEGES` for the privileged role, in one database.
    DefaultPrivileges,
}

impl StatementKind {
    /// Whether statements of this kind may share a transaction (and so one round trip) with
    /// their neighbours on the same connection. `CREATE DATABASE` and `DROP DATABASE` cannot
    /// run in a transaction block (nor in a pipeline); a rename waits on the backends its
    /// `TerminateBackends` ended, so both stay on their own.
    pub fn batches(self) -> bool {
        match self {
            StatementKind::ReassignOwned
            | StatementKind::DropOwned
            | StatementKind::DropRole
            | StatementKind::RenameRole
            | StatementKind::CreateRole
            | StatementKind::AlterRole
            | StatementKind::AlterDatabaseOwner
            | StatementKind::AlterDatabase
            | StatementKind::Grant
            | StatementKind::DefaultPrivileges => true,
            StatementKind::DropDatabase
            | StatementKind::TerminateBackends
            | StatementKind::RenameDatabase
            | StatementKind::CreateDatabase => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StatementKind::ReassignOwned => "reassign_owned",
            StatementKind::DropOwned => "drop_owned",
            StatementKind::DropRole => "drop_role",
            StatementKind::RenameRole => "rename_role",
            StatementKind::DropDatabase => "drop_database",
            StatementKind::TerminateBackends => "terminate_backends",
            StatementKind::RenameDatabase => "rename_database",
            StatementKind::CreateRole => "create_role",
            StatementKind::AlterRole => "alter_role",
            StatementKind::CreateDatabase => "create_database",
            StatementKind::AlterDatabaseOwner => "alter_database_owner",
            StatementKind::AlterDatabase => "alter_database",
            StatementKind::Grant => "grant",
            StatementKind::DefaultPrivileges => "default_privileges",
        }
    }
}

impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One SQL statement to send, on its own, in autocommit (`CREATE DATABASE` cannot run in a
/// transaction block, and one statement per message names the one that failed).
#[derive(Clone, PartialEq, Eq)]
pub struct Statement {
    pub kind: StatementKind,
    /// The SQL text. May carry a password verifier: never log it (see `carries_password`).
    pub sql: String,
    /// The database to run it in; `None`: the admin connection's database.
    pub database: Option<String>,
    /// The object it acts on, for errors: `role "alice"`, `database "DB2"`.
    pub object: String,
    /// What it does, for logs and errors (`create role "alice"`); never holds a password.
    pub describes: String,
    /// The verifier in `sql`, so that errors can be scrubbed of it.
    secret: Option<Verifier>,
}

impl Statement {
    fn new(
        kind: StatementKind,
        sql: String,
        database: Option<String>,
        object: String,
        describes: String,
    ) -> Statement {
        Statement {
            kind,
            sql,
            database,
            object,
            describes,
            secret: None,
        }
    }

    /// Whether `sql` holds a password verifier.
    pub fn carries_password(&self) -> bool {
        self.secret.is_some()
    }

    /// `text` with this statement's verifier (if any) cut out: Postgres may quote the
    /// statement back in an error.
    pub fn redact(&self, text: &str) -> String {
        match &self.secret {
            Some(secret) if !secret.as_str().is_empty() => {
                text.replace(secret.as_str(), "<password>")
            }
            _ => text.to_owned(),
        }
    }
}

impl fmt::Debug for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sql = if self.carries_password() {
            "<carries a password>"
        } else {
            self.sql.as_str()
        };
        f.debug_struct("Statement")
            .field("kind", &self.kind)
            .field("database", &self.database)
            .field("describes", &self.describes)
            .field("sql", &sql)
            .finish()
    }
}

/// The statements to send, in order, and notes on what was deliberately left alone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub statements: Vec<Statement>,
    /// Decisions worth a line in the journal (`rename_role "a": "b" exists already`).
    pub notes: Vec<String>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }
}

/// Works out the statements that bring `catalog` to `spec`.
///
/// Nothing here talks to Postgres; every check that can be made in advance (options, names,
/// owners, protected roles) fails the whole plan before a statement is sent, naming the
/// object. With `skip_pg_catalog_updates`, or on a compute that takes no writes (a replica or
/// a static compute), the plan is empty.
pub fn plan(
    spec: &ComputeSpec,
    catalog: &CatalogSnapshot,
    admin_role: &str,
    privileged: &PrivilegedRole,
) -> Result<Plan, ApplyError> {
    let mut planner = Planner::new(catalog, admin_role, privileged);
    if spec.skip_pg_catalog_updates {
        planner
            .plan
            .notes
            .push("skip_pg_catalog_updates is set: roles, databases and delta operations left as they are".into());
        return Ok(planner.plan);
    }
    if !spec.mode.is_read_write() {
        planner.plan.notes.push(format!(
            "a {} compute takes no writes: roles, databases and delta operations left as they are",
            spec.mode.as_str()
        ));
        return Ok(planner.plan);
    }
    planner.privileged_role()?;
    for (i, op) in spec.delta_operations.iter().flatten().enumerate() {
        planner.delta(i, op)?;
    }
    for role in &spec.cluster.roles {
        planner.role(role)?;
    }
    for database in &spec.cluster.databases {
        planner.database(database)?;
    }
    planner.default_privileges();
    Ok(planner.plan)
}

/// The working copy of the catalog and the plan built so far.
struct Planner<'a> {
    catalog: &'a CatalogSnapshot,
    admin_role: &'a str,
    privileged: &'a PrivilegedRole,
    roles: HashMap<String, CatalogRole>,
    databases: HashMap<String, CatalogDatabase>,
    /// Databases this plan creates: they get the privileged role's default privileges last,
    /// on one connection each.
    created_databases: Vec<String>,
    plan: Plan,
}

fn role_object(name: &str) -> String {
    format!("role {}", quote_ident(name))
}

fn database_object(name: &str) -> String {
    format!("database {}", quote_ident(name))
}

impl<'a> Planner<'a> {
    fn new(
        catalog: &'a CatalogSnapshot,
        admin_role: &'a str,
        privileged: &'a PrivilegedRole,
    ) -> Planner<'a> {
        Planner {
            catalog,
            admin_role,
            privileged,
            created_databases: Vec::new(),
            roles: catalog
                .roles
                .iter()
                .map(|r| (r.name.clone(), r.clone()))
                .collect(),
            databases: catalog
                .databases
                .iter()
                .map(|d| (d.name.clone(), d.clone()))
                .collect(),
            plan: Plan::default(),
        }
    }

    fn push(&mut self, statement: Statement) {
        self.plan.statements.push(statement);
    }

    /// The admin connection's database is `None`: statements there reuse that connection.
    fn target(&self, database: &str) -> Option<String> {
        (database != self.catalog.session_database).then(|| database.to_owned())
    }

    /// Refuses a role compute_ctl must never alter.
    fn check_role_touchable(&self, name: &str, doing: &str) -> Result<(), ApplyError> {
        let why = if name == self.admin_role || name == self.catalog.session_user {
            "it is compute_ctl's admin role"
        } else if name == self.privileged.name() {
            "it is the privileged role of --privileged-role-name"
        } else if name.starts_with("pg_") {
            "names starting with pg_ are reserved by Postgres"
        } else {
            return Ok(());
        };
        Err(ApplyError {
            object: role_object(name),
            statement: format!("{doing} role {}", quote_ident(name)),
            message: format!(
                "role {} cannot be managed by the spec: {why}",
                quote_ident(name)
            ),
        })
    }

    fn check_database_touchable(&self, name: &str, doing: &str) -> Result<(), ApplyError> {
        if name == self.catalog.session_database {
            return Err(ApplyError {
                object: database_object(name),
                statement: format!("{doing} database {}", quote_ident(name)),
                message: format!(
                    "database {} is the one compute_ctl connects to and cannot be dropped or renamed",
                    quote_ident(name)
                ),
            });
        }
        Ok(())
    }

    /// Creates the privileged role when the catalog has none, with what it is given
    /// (`privileged`), as Neon does at every configuration: a role that exists is left as
    /// it is, whoever made it. Its statements share the roles' transaction, so the role is
    /// made whole or not at all.
    fn privileged_role(&mut self) -> Result<(), ApplyError> {
        let name = self.privileged.name();
        if name == self.admin_role || name == self.catalog.session_user {
            return Err(ApplyError {
                object: role_object(name),
                statement: format!("create role {}", quote_ident(name)),
                message: format!(
                    "the privileged role {} (--privileged-role-name) is compute_ctl's admin role: \
                     spec roles would become its members",
                    quote_ident(name)
                ),
            });
        }
        if self.roles.contains_key(name) {
            return Ok(());
        }
        let object = role_object(name);
        self.push(Statement::new(
            StatementKind::CreateRole,
            self.privileged.create_sql(),
            None,
            object.clone(),
            format!("create the privileged role {}", quote_ident(name)),
        ));
        for sql in self.privileged.grant_sql(self.catalog.server_version_num) {
            let describes = format!("privileged role: {}", sql.to_ascii_lowercase());
            self.push(Statement::new(
                StatementKind::Grant,
                sql,
                None,
                object.clone(),
                describes,
            ));
        }
        // Neon gives the default privileges in the admin database too ("SystemDB").
        self.push(Statement::new(
            StatementKind::DefaultPrivileges,
            self.privileged.default_privileges_sql(),
            None,
            object,
            format!(
                "default privileges for {} in database {}",
                quote_ident(name),
                quote_ident(&self.catalog.session_database)
            ),
        ));
        let mut role = CatalogRole::new(0, name);
        role.create_db = true;
        role.create_role = true;
        role.replication = true;
        role.bypass_rls = true;
        self.roles.insert(name.to_owned(), role);
        Ok(())
    }

    /// Whether `database` (as the catalog has it, `None`: created by this plan) lacks the
    /// privileged role's grant of all privileges.
    /// All privileges on database `name` for the privileged role (Neon's grant).
    fn database_grant(&self, name: &str) -> Statement {
        Statement::new(
            StatementKind::Grant,
            self.privileged.database_grant_sql(name),
            None,
            database_object(name),
            format!(
                "grant all on database {} to {}",
                quote_ident(name),
                quote_ident(self.privileged.name())
            ),
        )
    }

    fn lacks_database_grant(&self, database: Option<&CatalogDatabase>) -> bool {
        match (self.catalog.role(self.privileged.name()), database) {
            (Some(role), Some(db)) => !db.grants_all_to(role.oid),
            _ => true,
        }
    }

    /// The privileged role's default privileges in each database this plan created (Neon's
    /// `ChangeSchemaPerms` phase), last, so that each needs one connection.
    fn default_privileges(&mut self) {
        for database in std::mem::take(&mut self.created_databases) {
            let target = self.target(&database);
            self.push(Statement::new(
                StatementKind::DefaultPrivileges,
                self.privileged.default_privileges_sql(),
                target,
                database_object(&database),
                format!(
                    "default privileges for {} in database {}",
                    quote_ident(self.privileged.name()),
                    quote_ident(&database)
                ),
            ));
        }
    }

    fn delta(&mut self, index: usize, op: &DeltaOp) -> Result<(), ApplyError> {
        let new_name = || {
            op.new_name.as_deref().ok_or_else(|| ApplyError {
                object: format!("delta_operations[{index}]"),
                statement: format!("{} {}", op.action, quote_ident(&op.name)),
                message: format!("{} needs new_name", op.action),
            })
        };
        match op.action.as_str() {
            "delete_role" => self.delete_role(&op.name),
            "rename_role" => self.rename_role(&op.name, new_name()?),
            "delete_db" => self.delete_database(&op.name),
            "rename_db" => self.rename_database(&op.name, new_name()?),
            other => Err(ApplyError {
                object: format!("delta_operations[{index}]"),
                statement: format!("{other} {}", quote_ident(&op.name)),
                message: format!("unknown delta operation action {other:?}"),
            }),
        }
    }

    /// Drops a role after handing what it owns over: in every database where it owns objects
    /// or holds privileges (`pg_shdepend`), `REASSIGN OWNED BY` to that database's owner
    /// (the admin role when the role itself owns the database), then `DROP OWNED BY` for
    /// its privileges. Databases that take no connections are skipped; if the role owns
    /// something there, `DROP ROLE` fails with Postgres's message naming them.
    fn delete_role(&mut self, name: &str) -> Result<(), ApplyError> {
        self.check_role_touchable(name, "drop")?;
        let Some(role) = self.roles.get(name) else {
            return Ok(());
        };
        let oid = role.oid;
        let mut shared = false;
        let mut in_databases = BTreeSet::new();
        for dep in self
            .catalog
            .dependencies
            .iter()
            .filter(|d| d.role_oid == oid && oid != 0)
        {
            if dep.database_oid == 0 {
                shared = true;
                continue;
            }
            match self.databases.values().find(|d| d.oid == dep.database_oid) {
                Some(db) if db.accepts_connections() => {
                    in_databases.insert(db.name.clone());
                }
                Some(db) => self.plan.notes.push(format!(
                    "role {}: objects in database {} not reassigned (it takes no connections)",
                    quote_ident(name),
                    quote_ident(&db.name)
                )),
                None => {}
            }
        }
        // Shared objects (databases it owns, privileges on databases) are handed over by
        // REASSIGN/DROP OWNED in any one database: the admin connection's, unless listed.
        if shared {
            in_databases.insert(self.catalog.session_database.clone());
        }
        let mut new_owner_of_its_databases = None;
        for database in &in_databases {
            let new_owner = match self.databases.get(database) {
                Some(db) if db.owner != name => db.owner.clone(),
                _ => self.admin_role.to_owned(),
            };
            new_owner_of_its_databases.get_or_insert_with(|| new_owner.clone());
            let target = self.target(database);
            self.push(Statement::new(
                StatementKind::ReassignOwned,
                format!(
                    "REASSIGN OWNED BY {} TO {}",
                    quote_ident(name),
                    quote_ident(&new_owner)
                ),
                target.clone(),
                role_object(name),
                format!(
                    "reassign objects of role {} in database {} to {}",
                    quote_ident(name),
                    quote_ident(database),
                    quote_ident(&new_owner)
                ),
            ));
            self.push(Statement::new(
                StatementKind::DropOwned,
                format!("DROP OWNED BY {}", quote_ident(name)),
                target,
                role_object(name),
                format!(
                    "drop privileges of role {} in database {}",
                    quote_ident(name),
                    quote_ident(database)
                ),
            ));
        }
        self.push(Statement::new(
            StatementKind::DropRole,
            format!("DROP ROLE IF EXISTS {}", quote_ident(name)),
            None,
            role_object(name),
            format!("drop role {}", quote_ident(name)),
        ));
        self.roles.remove(name);
        let heir = new_owner_of_its_databases.unwrap_or_else(|| self.admin_role.to_owned());
        for db in self.databases.values_mut().filter(|d| d.owner == name) {
            db.owner = heir.clone();
        }
        Ok(())
    }

    /// Renames `from` to `to` when `from` exists and `to` does not; anything else means it
    /// happened already (or cannot happen), and is noted. The role keeps its oid, owned
    /// objects and privileges; Postgres clears an md5 password (it hashes the old name), so
    /// the spec's password for `to` is set again by the role pass.
    fn rename_role(&mut self, from: &str, to: &str) -> Result<(), ApplyError> {
        self.check_role_touchable(from, "rename")?;
        self.check_role_touchable(to, "rename to")?;
        match (self.roles.contains_key(from), self.roles.contains_key(to)) {
            (true, false) => {}
            (true, true) => {
                self.plan.notes.push(format!(
                    "rename_role {} to {} skipped: both exist",
                    quote_ident(from),
                    quote_ident(to)
                ));
                return Ok(());
            }
            (false, _) => return Ok(()),
        }
        self.push(Statement::new(
            StatementKind::RenameRole,
            format!(
                "ALTER ROLE {} RENAME TO {}",
                quote_ident(from),
                quote_ident(to)
            ),
            None,
            role_object(from),
            format!("rename role {} to {}", quote_ident(from), quote_ident(to)),
        ));
        if let Some(mut role) = self.roles.remove(from) {
            role.name = to.to_owned();
            if role.password.as_ref().is_some_and(Verifier::is_md5) {
                role.password = None;
            }
            self.roles.insert(to.to_owned(), role);
        }
        for db in self.databases.values_mut().filter(|d| d.owner == from) {
            db.owner = to.to_owned();
        }
        Ok(())
    }

    /// `DROP DATABASE … WITH (FORCE)`: sessions connected to it are terminated.
    fn delete_database(&mut self, name: &str) -> Result<(), ApplyError> {
        self.check_database_touchable(name, "drop")?;
        if self.databases.remove(name).is_none() {
            return Ok(());
        }
        self.push(drop_database(name));
        Ok(())
    }

    /// Renames when `from` exists and `to` does not. Renaming needs `from` to have no other
    /// sessions, so they are terminated first (waiting for each to exit).
    fn rename_database(&mut self, from: &str, to: &str) -> Result<(), ApplyError> {
        self.check_database_touchable(from, "rename")?;
        self.check_database_touchable(to, "rename to")?;
        match (
            self.databases.contains_key(from),
            self.databases.contains_key(to),
        ) {
            (true, false) => {}
            (true, true) => {
                self.plan.notes.push(format!(
                    "rename_db {} to {} skipped: both exist",
                    quote_ident(from),
                    quote_ident(to)
                ));
                return Ok(());
            }
            (false, _) => return Ok(()),
        }
        self.push(Statement::new(
            StatementKind::TerminateBackends,
            format!(
                "SELECT pg_catalog.pg_terminate_backend(pid, {TERMINATE_WAIT_MS}) \
                 FROM pg_catalog.pg_stat_activity \
                 WHERE datname = {} AND pid <> pg_catalog.pg_backend_pid()",
                quote_literal(from)
            ),
            None,
            database_object(from),
            format!("terminate sessions of database {}", quote_ident(from)),
        ));
        self.push(Statement::new(
            StatementKind::RenameDatabase,
            format!(
                "ALTER DATABASE {} RENAME TO {}",
                quote_ident(from),
                quote_ident(to)
            ),
            None,
            database_object(from),
            format!(
                "rename database {} to {}",
                quote_ident(from),
                quote_ident(to)
            ),
        ));
        if let Some(mut db) = self.databases.remove(from) {
            db.name = to.to_owned();
            self.databases.insert(to.to_owned(), db);
        }
        Ok(())
    }

    /// Creates a missing role, or alters an existing one where it differs: password (only
    /// when the stored verifier differs) and the attributes the spec declares.
    fn role(&mut self, role: &crate::spec::Role) -> Result<(), ApplyError> {
        let name = role.name.as_str();
        let object = role_object(name);
        let fail = |statement: String, message: String| ApplyError {
            object: object.clone(),
            statement,
            message: format!("role {}: {message}", quote_ident(name)),
        };
        if name == self.admin_role || name == self.catalog.session_user {
            // Neon's own specs declare the admin role (with a password); compute_ctl's
            // access must not depend on them, so the declaration is noted, not applied.
            self.plan.notes.push(format!(
                "role {} is compute_ctl's admin role: left as it is",
                quote_ident(name)
            ));
            return Ok(());
        }
        if name == self.privileged.name() {
            // Its attributes and grants are compute_ctl's to give, as the admin role's are.
            self.plan.notes.push(format!(
                "role {} is the privileged role (--privileged-role-name): left as it is",
                quote_ident(name)
            ));
            return Ok(());
        }
        let exists = self.roles.contains_key(name);
        let doing = if exists { "alter" } else { "create" };
        self.check_role_touchable(name, doing)?;
        let describe = format!("{doing} role {}", quote_ident(name));
        let password = desired_verifier(role).map_err(|m| fail(describe.clone(), m))?;
        let mut attrs = RoleAttributes::from_spec(role.options.as_deref())
            .map_err(|m| fail(describe.clone(), m))?;

        let current = self.roles.get(name);
        if current.is_none() {
            // Neon's members get these unless the spec says otherwise; a role that exists
            // keeps what it has (Neon never widens an existing role).
            let defaults = MEMBER_DEFAULTS;
            attrs.inherit.get_or_insert(defaults.inherit);
            attrs.create_role.get_or_insert(defaults.create_role);
            attrs.create_db.get_or_insert(defaults.create_db);
            attrs.bypass_rls.get_or_insert(defaults.bypass_rls);
            attrs.replication.get_or_insert(defaults.replication);
        }
        let mut clause = match current {
            None => attrs.create_clause(),
            Some(current) => attrs.alter_clause(current),
        };
        let mut changed: Vec<String> = clause
            .iter()
            .map(|item| {
                // The option's words without its value: `CONNECTION LIMIT 5` → `connection limit`.
                item.split(' ')
                    .take_while(|w| w.bytes().all(|b| b.is_ascii_uppercase()))
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_ascii_lowercase()
            })
            .collect();
        let set_password = match (current, &password) {
            (None, _) => password.is_some(),
            (Some(current), _) => current.password != password,
        };
        if set_password {
            clause.push(match &password {
                Some(verifier) => format!("PASSWORD {}", quote_literal(verifier.as_str())),
                None => "PASSWORD NULL".to_owned(),
            });
            changed.push("password".into());
        }
        if current.is_none() {
            clause.push(format!("IN ROLE {}", self.privileged.ident()));
        }
        if clause.is_empty() {
            return Ok(());
        }
        let (kind, verb) = match current {
            None => (StatementKind::CreateRole, "CREATE"),
            Some(_) => (StatementKind::AlterRole, "ALTER"),
        };
        let describes = match current {
            None => describe,
            Some(_) => format!("{describe} ({})", changed.join(", ")),
        };
        let mut statement = Statement::new(
            kind,
            format!(
                "{verb} ROLE {} WITH {}",
                quote_ident(name),
                clause.join(" ")
            ),
            None,
            object,
            describes,
        );
        if set_password {
            statement.secret = password.clone();
        }
        self.push(statement);
        let entry = self
            .roles
            .entry(name.to_owned())
            .or_insert_with(|| CatalogRole::new(0, name));
        attrs.apply_to(entry);
        entry.password = password;
        Ok(())
    }

    /// Creates a missing database (an invalid one is dropped first), or gives an existing one
    /// the declared owner and alterable options.
    fn database(&mut self, database: &crate::spec::Database) -> Result<(), ApplyError> {
        let name = database.name.as_str();
        let object = database_object(name);
        let owner = database.owner.as_str();
        let current = self.databases.get(name);
        let doing = if current.is_some_and(|d| !d.is_invalid()) {
            "alter"
        } else {
            "create"
        };
        let describe = format!("{doing} database {}", quote_ident(name));
        let options = DatabaseOptions::from_spec(database).map_err(|m| ApplyError {
            object: object.clone(),
            statement: describe.clone(),
            message: format!("database {}: {m}", quote_ident(name)),
        })?;
        if owner != self.admin_role && !self.roles.contains_key(owner) {
            return Err(ApplyError {
                object,
                statement: describe,
                message: format!(
                    "database {}: owner {} is not a role",
                    quote_ident(name),
                    quote_ident(owner)
                ),
            });
        }

        let current = match current {
            Some(db) if db.is_invalid() => {
                self.plan.notes.push(format!(
                    "database {} was left invalid by an interrupted drop: dropped and created again",
                    quote_ident(name)
                ));
                self.check_database_touchable(name, "drop invalid")?;
                self.push(drop_database(name));
                None
            }
            other => other.cloned(),
        };
        match current {
            None => {
                let mut items = vec![format!("OWNER = {}", quote_ident(owner))];
                items.extend(options.create.iter().cloned());
                // PG15's default, WAL_LOG, writes every block of the template into the WAL
                // (~7.5 MB for a fresh template1) and costs ~100 ms here with fsync on.
                // FILE_COPY copies the files between two checkpoints; with fsync on, its
                // syncs make it 8-13x slower (0.75-1.35 s), but with fsync off (the embedded
                // default, README) checkpoints and copies only reach the page cache, and it
                // measured 13-33 ms against WAL_LOG's 14-116 ms for a fresh cluster. So
                // FILE_COPY only when the server runs without fsync, and never over a
                // strategy the spec names.
                let names_strategy = database
                    .options
                    .iter()
                    .flatten()
                    .any(|o| o.name.eq_ignore_ascii_case("strategy"));
                if self.catalog.fsync_off && !names_strategy {
                    items.push("STRATEGY = FILE_COPY".to_owned());
                }
                self.push(Statement::new(
                    StatementKind::CreateDatabase,
                    format!(
                        "CREATE DATABASE {} WITH {}",
                        quote_ident(name),
                        items.join(" ")
                    ),
                    None,
                    object,
                    describe,
                ));
                self.push(self.database_grant(name));
                let mut created = CatalogDatabase::new(0, name, owner);
                options.apply_to(&mut created);
                self.databases.insert(name.to_owned(), created);
                self.created_databases.push(name.to_owned());
            }
            Some(current) => {
                if current.owner != owner {
                    self.push(Statement::new(
                        StatementKind::AlterDatabaseOwner,
                        format!(
                            "ALTER DATABASE {} OWNER TO {}",
                            quote_ident(name),
                            quote_ident(owner)
                        ),
                        None,
                        object.clone(),
                        format!(
                            "change owner of database {} to {}",
                            quote_ident(name),
                            quote_ident(owner)
                        ),
                    ));
                }
                let items = options.alter_clause(&current);
                if !items.is_empty() {
                    self.push(Statement::new(
                        StatementKind::AlterDatabase,
                        format!(
                            "ALTER DATABASE {} WITH {}",
                            quote_ident(name),
                            items.join(" ")
                        ),
                        None,
                        object,
                        format!("alter database {} options", quote_ident(name)),
                    ));
                }
                // Neon grants at creation; a database that lacks the grant (made before the
                // role, or brought by an upstream) gets it too, so a retried configuration
                // finishes what a failed one began.
                let in_catalog = self
                    .catalog
                    .databases
                    .iter()
                    .find(|d| d.oid == current.oid && d.oid != 0);
                if self.lacks_database_grant(in_catalog) {
                    self.push(self.database_grant(name));
                }
                if let Some(db) = self.databases.get_mut(name) {
                    db.owner = owner.to_owned();
                    options.apply_to(db);
                }
            }
        }
        Ok(())
    }
}

fn drop_database(name: &str) -> Statement {
    Statement::new(
        StatementKind::DropDatabase,
        format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name)),
        None,
        database_object(name),
        format!("drop database {}", quote_ident(name)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::catalog::Dependency;

    const ADMIN: &str = "cloud_admin";
    /// The privileged role's oid in `catalog()`, which has it (as every configuration after
    /// the first finds it).
    const PRIVILEGED_OID: u32 = 16_390;
    const MD5: &str = "md5aaaabbbbccccddddeeeeffff00001111";

    fn catalog() -> CatalogSnapshot {
        let mut admin = CatalogRole::new(10, ADMIN);
        admin.superuser = true;
        admin.login = true;
        CatalogSnapshot {
            session_user: ADMIN.into(),
            session_database: "postgres".into(),
            fsync_off: false,
            server_version_num: 150_018,
            roles: vec![
                admin,
                CatalogRole::new(3373, "pg_monitor"),
                CatalogRole::new(PRIVILEGED_OID, "neon_superuser"),
            ],
            databases: vec![
                CatalogDatabase::new(5, "postgres", ADMIN),
                CatalogDatabase::new(1, "template1", ADMIN),
                CatalogDatabase::new(4, "template0", ADMIN),
            ],
            dependencies: Vec::new(),
        }
    }

    fn spec(value: serde_json::Value) -> ComputeSpec {
        let mut full = serde_json::json!({"format_version": 1.0, "cluster": {}});
        for (key, v) in value.as_object().unwrap() {
            if key == "delta_operations" || key == "skip_pg_catalog_updates" || key == "mode" {
                full[key] = v.clone();
            } else {
                full["cluster"][key] = v.clone();
            }
        }
        serde_json::from_value(full).unwrap()
    }

    /// A database the privileged role has every privilege on, as the plan leaves it.
    fn granted(mut database: CatalogDatabase) -> CatalogDatabase {
        database.all_privileges_to.push(PRIVILEGED_OID);
        database
    }

    fn grant_on(database: &str) -> String {
        format!("GRANT ALL PRIVILEGES ON DATABASE \"{database}\" TO \"neon_superuser\"")
    }

    fn default_privileges() -> String {
        PrivilegedRole::default().default_privileges_sql()
    }

    fn sql(plan: &Plan) -> Vec<(Option<&str>, &str)> {
        plan.statements
            .iter()
            .map(|s| (s.database.as_deref(), s.sql.as_str()))
            .collect()
    }

    #[test]
    fn without_fsync_databases_are_copied_as_files_unless_the_spec_names_a_strategy() {
        let spec = spec(serde_json::json!({
            "roles": [{"name": "alice", "encrypted_password": null}],
            "databases": [
                {"name": "a", "owner": "alice"},
                {"name": "b", "owner": "alice",
                 "options": [{"name": "strategy", "value": "wal_log"}]},
            ],
        }));
        let mut unsynced = catalog();
        unsynced.fsync_off = true;
        let plan = plan(&spec, &unsynced, ADMIN, &PrivilegedRole::default()).unwrap();
        let (a, b, defaults) = (grant_on("a"), grant_on("b"), default_privileges());
        assert_eq!(
            sql(&plan)[1..],
            [
                (
                    None,
                    "CREATE DATABASE \"a\" WITH OWNER = \"alice\" STRATEGY = FILE_COPY"
                ),
                (None, a.as_str()),
                (
                    None,
                    "CREATE DATABASE \"b\" WITH OWNER = \"alice\" STRATEGY = 'wal_log'"
                ),
                (None, b.as_str()),
                (Some("a"), defaults.as_str()),
                (Some("b"), defaults.as_str()),
            ]
        );
        assert!(plan.statements[0].kind.batches() && !plan.statements[1].kind.batches());
    }

    #[test]
    fn a_fresh_catalog_gets_one_statement_per_object() {
        let spec = spec(serde_json::json!({
            "roles": [
                {"name": "alice", "encrypted_password": &MD5[3..]},
                {"name": "bob", "encrypted_password": null, "options": [{"name": "CREATEDB"}]},
            ],
            "databases": [
                {"name": "shop", "owner": "alice",
                 "options": [{"name": "LC_COLLATE", "value": "C"}]},
            ],
        }));
        let plan = plan(&spec, &catalog(), ADMIN, &PrivilegedRole::default()).unwrap();
        let (grant, defaults) = (grant_on("shop"), default_privileges());
        assert_eq!(
            sql(&plan),
            [
                (
                    None,
                    format!(
                        "CREATE ROLE \"alice\" WITH LOGIN CREATEDB CREATEROLE REPLICATION \
                         BYPASSRLS INHERIT PASSWORD '{MD5}' IN ROLE \"neon_superuser\""
                    )
                    .as_str()
                ),
                (
                    None,
                    "CREATE ROLE \"bob\" WITH LOGIN CREATEDB CREATEROLE REPLICATION BYPASSRLS \
                     INHERIT IN ROLE \"neon_superuser\""
                ),
                (
                    None,
                    "CREATE DATABASE \"shop\" WITH OWNER = \"alice\" LC_COLLATE = 'C'"
                ),
                (None, grant.as_str()),
                (Some("shop"), defaults.as_str()),
            ]
        );
        assert_eq!(plan.statements[0].describes, "create role \"alice\"");
        assert!(plan.statements[0].carries_password());
        assert!(
            !format!("{plan:?}").contains(&MD5[3..]),
            "Debug hides the verifier"
        );
        assert_eq!(
            plan.statements[0].redact(&format!("near '{MD5}'")),
            "near '<password>'"
        );
    }

    #[test]
    fn a_matching_catalog_plans_nothing() {
        let mut catalog = catalog();
        let mut alice = CatalogRole::new(20, "alice");
        alice.login = true;
        alice.password = Some(Verifier::new(MD5));
        catalog.roles.push(alice);
        catalog
            .databases
            .push(granted(CatalogDatabase::new(30, "shop", "alice")));
        let spec = spec(serde_json::json!({
            // Upper case hex: normalised before comparing.
            "roles": [{"name": "alice", "encrypted_password": MD5[3..].to_ascii_uppercase()}],
            "databases": [{"name": "shop", "owner": "alice",
                           "options": [{"name": "TEMPLATE", "value": "template0"}]}],
            "delta_operations": [
                {"action": "delete_db", "name": "gone"},
                {"action": "rename_role", "name": "old", "new_name": "alice"},
                {"action": "delete_role", "name": "gone"},
            ],
        }));
        let plan = plan(&spec, &catalog, ADMIN, &PrivilegedRole::default()).unwrap();
        assert_eq!(plan, Plan::default());
    }

    #[test]
    fn a_dropped_role_hands_its_objects_to_each_database_owner() {
        let mut catalog = catalog();
        catalog.roles.push(CatalogRole::new(20, "leaver"));
        catalog.roles.push(CatalogRole::new(21, "keeper"));
        catalog
            .databases
            .push(CatalogDatabase::new(30, "app", "keeper"));
        catalog
            .databases
            .push(CatalogDatabase::new(31, "own", "leaver"));
        let mut closed = CatalogDatabase::new(32, "closed", ADMIN);
        closed.allow_connections = false;
        catalog.databases.push(closed);
        for database_oid in [30, 31, 32, 0] {
            catalog.dependencies.push(Dependency {
                role_oid: 20,
                database_oid,
            });
        }
        let spec = spec(serde_json::json!({
            "delta_operations": [{"action": "delete_role", "name": "leaver"}],
        }));
        let plan = plan(&spec, &catalog, ADMIN, &PrivilegedRole::default()).unwrap();
        assert_eq!(
            sql(&plan),
            [
                (Some("app"), "REASSIGN OWNED BY \"leaver\" TO \"keeper\""),
                (Some("app"), "DROP OWNED BY \"leaver\""),
                (
                    Some("own"),
                    "REASSIGN OWNED BY \"leaver\" TO \"cloud_admin\""
                ),
                (Some("own"), "DROP OWNED BY \"leaver\""),
                (None, "REASSIGN OWNED BY \"leaver\" TO \"cloud_admin\""),
                (None, "DROP OWNED BY \"leaver\""),
                (None, "DROP ROLE IF EXISTS \"leaver\""),
            ]
        );
        assert_eq!(
            plan.notes,
            ["role \"leaver\": objects in database \"closed\" not reassigned (it takes no connections)"]
        );
    }

    #[test]
    fn a_renamed_md5_role_gets_its_password_again() {
        let mut catalog = catalog();
        let mut old = CatalogRole::new(20, "old");
        old.login = true;
        old.password = Some(Verifier::new(MD5));
        catalog.roles.push(old);
        catalog
            .databases
            .push(granted(CatalogDatabase::new(30, "db", "old")));
        let spec = spec(serde_json::json!({
            "roles": [{"name": "new", "encrypted_password": MD5}],
            "databases": [{"name": "db", "owner": "new"}],
            "delta_operations": [{"action": "rename_role", "name": "old", "new_name": "new"}],
        }));
        let plan = plan(&spec, &catalog, ADMIN, &PrivilegedRole::default()).unwrap();
        assert_eq!(
            sql(&plan),
            [
                (None, "ALTER ROLE \"old\" RENAME TO \"new\""),
                (
                    None,
                    format!("ALTER ROLE \"new\" WITH PASSWORD '{MD5}'").as_str()
                ),
            ]
        );
        assert_eq!(
            plan.statements[1].describes,
            "alter role \"new\" (password)"
        );
    }

    #[test]
    fn renames_onto_an_existing_name_are_noted_not_sent() {
        let mut catalog = catalog();
        catalog.roles.push(CatalogRole::new(20, "a"));
        catalog.roles.push(CatalogRole::new(21, "b"));
        catalog.databases.push(CatalogDatabase::new(30, "x", "a"));
        catalog.databases.push(CatalogDatabase::new(31, "y", "a"));
        let spec = spec(serde_json::json!({
            "delta_operations": [
                {"action": "rename_role", "name": "a", "new_name": "b"},
                {"action": "rename_db", "name": "x", "new_name": "y"},
            ],
        }));
        let plan = plan(&spec, &catalog, ADMIN, &PrivilegedRole::default()).unwrap();
        assert!(plan.is_empty());
        assert_eq!(
            plan.notes,
            [
                "rename_role \"a\" to \"b\" skipped: both exist",
                "rename_db \"x\" to \"y\" skipped: both exist"
            ]
        );
    }

    #[test]
    fn protected_roles_and_the_admin_database_fail_the_plan() {
        for (value, object) in [
            (
                serde_json::json!({"delta_operations": [{"action": "delete_role", "name": ADMIN}]}),
                "role \"cloud_admin\"",
            ),
            (
                serde_json::json!({"delta_operations": [{"action": "rename_role", "name": "x", "new_name": "pg_x"}]}),
                "role \"pg_x\"",
            ),
            (
                serde_json::json!({"roles": [{"name": "pg_read_all_data"}]}),
                "role \"pg_read_all_data\"",
            ),
            (
                serde_json::json!({"delta_operations": [{"action": "delete_db", "name": "postgres"}]}),
                "database \"postgres\"",
            ),
            (
                serde_json::json!({"delta_operations": [{"action": "rename_db", "name": "x"}]}),
                "delta_operations[0]",
            ),
            (
                serde_json::json!({"delta_operations": [{"action": "truncate_db", "name": "x"}]}),
                "delta_operations[0]",
            ),
            (
                serde_json::json!({"roles": [{"name": "r", "options": [{"name": "SUPERUSER"}]}]}),
                "role \"r\"",
            ),
            (
                serde_json::json!({"roles": [{"name": "r", "encrypted_password": "plain"}]}),
                "role \"r\"",
            ),
            (
                serde_json::json!({"databases": [{"name": "d", "owner": "nobody"}]}),
                "database \"d\"",
            ),
        ] {
            let err = plan(
                &spec(value.clone()),
                &catalog(),
                ADMIN,
                &PrivilegedRole::default(),
            )
            .unwrap_err();
            assert_eq!(err.object, object, "{value}: {err}");
            assert!(!err.to_string().contains("plain"), "no password in errors");
        }
    }

    #[test]
    fn the_admin_role_in_the_spec_is_noted_and_left_alone() {
        let spec = spec(serde_json::json!({
            "roles": [{"name": ADMIN, "encrypted_password": MD5}],
            "databases": [{"name": "mine", "owner": ADMIN}],
        }));
        let plan = plan(&spec, &catalog(), ADMIN, &PrivilegedRole::default()).unwrap();
        assert_eq!(
            sql(&plan)[..1],
            [(
                None,
                "CREATE DATABASE \"mine\" WITH OWNER = \"cloud_admin\""
            )]
        );
        assert_eq!(
            plan.notes,
            ["role \"cloud_admin\" is compute_ctl's admin role: left as it is"]
        );
    }

    #[test]
    fn an_invalid_database_is_dropped_then_created() {
        let mut catalog = catalog();
        let mut half = CatalogDatabase::new(30, "half", ADMIN);
        half.connection_limit = crate::postgres::catalog::DATCONNLIMIT_INVALID;
        catalog.databases.push(half);
        let spec = spec(serde_json::json!({"databases": [{"name": "half", "owner": ADMIN}]}));
        let plan = plan(&spec, &catalog, ADMIN, &PrivilegedRole::default()).unwrap();
        assert_eq!(
            sql(&plan)[..2],
            [
                (None, "DROP DATABASE IF EXISTS \"half\" WITH (FORCE)"),
                (
                    None,
                    "CREATE DATABASE \"half\" WITH OWNER = \"cloud_admin\""
                ),
            ]
        );
    }

    #[test]
    fn the_first_configuration_creates_the_privileged_role_before_its_members() {
        let mut fresh = catalog();
        fresh.roles.retain(|r| r.name != "neon_superuser");
        let spec = spec(serde_json::json!({
            "roles": [{"name": "alice", "encrypted_password": null}],
            "databases": [{"name": "shop", "owner": "alice"}],
        }));
        let plan = plan(&spec, &fresh, ADMIN, &PrivilegedRole::default()).unwrap();
        let (grant, defaults) = (grant_on("shop"), default_privileges());
        assert_eq!(
            sql(&plan),
            [
                (
                    None,
                    "CREATE ROLE \"neon_superuser\" WITH NOLOGIN CREATEDB CREATEROLE \
                     REPLICATION BYPASSRLS IN ROLE \"pg_read_all_data\", \"pg_write_all_data\""
                ),
                (
                    None,
                    "GRANT \"pg_monitor\" TO \"neon_superuser\" WITH ADMIN OPTION"
                ),
                (
                    None,
                    "GRANT \"pg_signal_backend\" TO \"neon_superuser\" WITH ADMIN OPTION"
                ),
                (
                    None,
                    "GRANT EXECUTE ON FUNCTION pg_catalog.pg_show_replication_origin_status() \
                     TO \"neon_superuser\""
                ),
                (None, defaults.as_str()),
                (
                    None,
                    "CREATE ROLE \"alice\" WITH LOGIN CREATEDB CREATEROLE REPLICATION BYPASSRLS \
                     INHERIT IN ROLE \"neon_superuser\""
                ),
                (None, "CREATE DATABASE \"shop\" WITH OWNER = \"alice\""),
                (None, grant.as_str()),
                (Some("shop"), defaults.as_str()),
            ]
        );
        // The role and its members go in one transaction: made whole, or not at all.
        let batches = crate::postgres::reconcile::batch_lengths(&plan.statements);
        assert_eq!(batches, [6, 1, 1, 1]);
        assert_eq!(
            plan.statements[0].describes,
            "create the privileged role \"neon_superuser\""
        );

        // Another name, on PostgreSQL 16: the same, plus what 16 has.
        fresh.server_version_num = 160_004;
        let mine = PrivilegedRole::parse("my_superuser").unwrap();
        let plan = super::plan(&spec, &fresh, ADMIN, &mine).unwrap();
        assert_eq!(
            plan.statements
                .iter()
                .filter(|s| s.kind == StatementKind::Grant && s.database.is_none())
                .count(),
            7,
            "{plan:?}"
        );
        let alice = plan
            .statements
            .iter()
            .find(|s| s.object == "role \"alice\"");
        assert!(alice.is_some_and(|s| s.sql.ends_with("IN ROLE \"my_superuser\"")));
    }

    #[test]
    fn declared_attributes_win_over_the_members_defaults_and_existing_roles_keep_theirs() {
        let mut catalog = catalog();
        let mut old = CatalogRole::new(20, "old");
        old.login = true;
        catalog.roles.push(old);
        let spec = spec(serde_json::json!({
            "roles": [
                {"name": "careful", "encrypted_password": null,
                 "options": [{"name": "NOCREATEDB"}, {"name": "NOINHERIT"},
                             {"name": "REPLICATION", "value": "false"}]},
                {"name": "old", "encrypted_password": null},
            ],
        }));
        let plan = plan(&spec, &catalog, ADMIN, &PrivilegedRole::default()).unwrap();
        assert_eq!(
            sql(&plan),
            [(
                None,
                "CREATE ROLE \"careful\" WITH LOGIN NOCREATEDB CREATEROLE NOREPLICATION \
                 BYPASSRLS NOINHERIT IN ROLE \"neon_superuser\""
            )]
        );
    }

    #[test]
    fn a_database_without_the_grant_gets_it_and_one_with_it_does_not() {
        let mut catalog = catalog();
        catalog
            .databases
            .push(CatalogDatabase::new(30, "bare", ADMIN));
        catalog
            .databases
            .push(granted(CatalogDatabase::new(31, "given", ADMIN)));
        let mut other = CatalogDatabase::new(32, "other", ADMIN);
        other.all_privileges_to.push(PRIVILEGED_OID + 1);
        catalog.databases.push(other);
        let spec = spec(serde_json::json!({
            "databases": [{"name": "bare", "owner": ADMIN}, {"name": "given", "owner": ADMIN},
                          {"name": "other", "owner": ADMIN}],
        }));
        let plan = plan(&spec, &catalog, ADMIN, &PrivilegedRole::default()).unwrap();
        let (bare, other) = (grant_on("bare"), grant_on("other"));
        assert_eq!(sql(&plan), [(None, bare.as_str()), (None, other.as_str())]);
    }

    #[test]
    fn the_privileged_role_is_compute_ctl_s_to_manage() {
        let spec_declaring = spec(serde_json::json!({
            "roles": [{"name": "neon_superuser", "encrypted_password": MD5}],
        }));
        let plan = plan(
            &spec_declaring,
            &catalog(),
            ADMIN,
            &PrivilegedRole::default(),
        )
        .unwrap();
        assert!(plan.is_empty());
        assert_eq!(
            plan.notes,
            ["role \"neon_superuser\" is the privileged role (--privileged-role-name): left as it is"]
        );
        for value in [
            serde_json::json!({"delta_operations": [{"action": "delete_role", "name": "neon_superuser"}]}),
            serde_json::json!({"delta_operations": [{"action": "rename_role", "name": "neon_superuser", "new_name": "x"}]}),
        ] {
            let err = super::plan(
                &spec(value.clone()),
                &catalog(),
                ADMIN,
                &PrivilegedRole::default(),
            )
            .unwrap_err();
            assert_eq!(err.object, "role \"neon_superuser\"", "{value}");
            assert!(err.message.contains("--privileged-role-name"), "{err}");
        }
        let as_admin = PrivilegedRole::parse(ADMIN).unwrap();
        let err =
            super::plan(&spec(serde_json::json!({})), &catalog(), ADMIN, &as_admin).unwrap_err();
        assert!(err.message.contains("admin role"), "{err}");
    }

    #[test]
    fn skip_flag_and_read_only_computes_plan_nothing() {
        let roles = serde_json::json!([{"name": "alice"}]);
        for extra in [
            serde_json::json!({"roles": roles, "skip_pg_catalog_updates": true}),
            serde_json::json!({"roles": roles, "mode": "Replica"}),
        ] {
            let plan = plan(&spec(extra), &catalog(), ADMIN, &PrivilegedRole::default()).unwrap();
            assert!(plan.is_empty());
            assert_eq!(plan.notes.len(), 1);
        }
    }
}
