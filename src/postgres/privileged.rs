//! Neon's privileged role (`--privileged-role-name`, default `neon_superuser`): the role the
//! spec's roles are members of, so that a user's role can do what Neon's users expect of it
//! without being a superuser.
//!
//! What it gets follows Neon's compute_tools (`sql/create_privileged_role.sql`, the
//! `CreateAndAlterRoles` and `CreateAndAlterDatabases` phases of `spec_apply.rs`,
//! `sql/default_grants.sql`, and the migrations it still runs, `migrations/0001`–`0012`):
//! the attributes of [`ATTRIBUTES`], membership in [`MEMBER_OF`], [`ADMIN_OF`] with the admin
//! option, [`FUNCTIONS`], and all privileges on each database of the spec. The statements are
//! worked out by `plan`; this module names the role and says what it is given, as text.

use std::fmt;

use crate::postgres::quote::quote_ident;

/// Neon's default name of the role.
pub const DEFAULT_NAME: &str = "neon_superuser";

/// Postgres's longest name (`NAMEDATALEN - 1`): a longer one would be cut short silently.
pub const NAME_BYTES_MAX: usize = 63;

/// The role's own attributes: it never logs in; it may create databases and roles, stream
/// and read logical changes, and bypass row-level security.
pub const ATTRIBUTES: &str = "NOLOGIN CREATEDB CREATEROLE REPLICATION BYPASSRLS";

/// Predefined roles it is a member of: it may read and write every table.
pub const MEMBER_OF: [&str; 2] = ["pg_read_all_data", "pg_write_all_data"];

/// Predefined roles granted to it `WITH ADMIN OPTION`, so its members may pass them on:
/// monitoring views (Neon's migration 0004) and signalling other backends (0012).
pub const ADMIN_OF: [&str; 2] = ["pg_monitor", "pg_signal_backend"];

/// Predefined roles granted from PostgreSQL 16 on, where they exist (Neon's migration 0003).
pub const ADMIN_OF_SINCE_16: [&str; 1] = ["pg_create_subscription"];

/// Functions it may execute (Neon's migration 0011).
pub const FUNCTIONS: [&str; 1] = ["pg_catalog.pg_show_replication_origin_status()"];

/// Functions from PostgreSQL 16 on (Neon's migration 0010: snapshot synchronization).
pub const FUNCTIONS_SINCE_16: [&str; 2] = [
    "pg_catalog.pg_export_snapshot()",
    "pg_catalog.pg_log_standby_snapshot()",
];

/// The first `server_version_num` of PostgreSQL 16.
pub const VERSION_16: u32 = 160_000;

/// The attributes a spec role gets when it is created, unless the spec declares the
/// attribute itself (Neon's `CREATE ROLE … INHERIT CREATEROLE CREATEDB BYPASSRLS
/// REPLICATION IN ROLE <privileged>`).
pub const MEMBER_DEFAULTS: MemberDefaults = MemberDefaults {
    inherit: true,
    create_role: true,
    create_db: true,
    bypass_rls: true,
    replication: true,
};

/// See [`MEMBER_DEFAULTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberDefaults {
    pub inherit: bool,
    pub create_role: bool,
    pub create_db: bool,
    pub bypass_rls: bool,
    pub replication: bool,
}

/// The privileged role's name, checked as Neon checks it (`^[a-z_]+$`): it is written into
/// statements as it is, and a name of lowercase letters and underscores never needs quoting.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PrivilegedRole(String);

impl Default for PrivilegedRole {
    fn default() -> PrivilegedRole {
        PrivilegedRole(DEFAULT_NAME.to_owned())
    }
}

impl PrivilegedRole {
    /// Checks `text` (the value of `--privileged-role-name`): lowercase ASCII letters and
    /// underscores only, at most [`NAME_BYTES_MAX`] bytes, and not `pg_…` (Postgres reserves
    /// those names for its own roles).
    pub fn parse(text: &str) -> Result<PrivilegedRole, String> {
        if text.is_empty() {
            return Err("the role name is empty".into());
        }
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || *c == '_'))
        {
            return Err(format!(
                "{text:?} has {bad:?}: only lowercase letters a-z and underscores are allowed"
            ));
        }
        if text.len() > NAME_BYTES_MAX {
            return Err(format!(
                "{} bytes is longer than Postgres's names ({NAME_BYTES_MAX} bytes)",
                text.len()
            ));
        }
        if text.starts_with("pg_") {
            return Err(format!(
                "{text:?} starts with pg_, which Postgres reserves for its own roles"
            ));
        }
        Ok(PrivilegedRole(text.to_owned()))
    }

    pub fn name(&self) -> &str {
        &self.0
    }

    /// The name as SQL writes it.
    pub fn ident(&self) -> String {
        quote_ident(&self.0)
    }

    /// `CREATE ROLE` of the role itself.
    pub fn create_sql(&self) -> String {
        let member_of: Vec<String> = MEMBER_OF.iter().map(|r| quote_ident(r)).collect();
        format!(
            "CREATE ROLE {} WITH {ATTRIBUTES} IN ROLE {}",
            self.ident(),
            member_of.join(", ")
        )
    }

    /// The grants that follow its creation, for a server of `server_version_num`.
    pub fn grant_sql(&self, server_version_num: u32) -> Vec<String> {
        let since_16 = server_version_num >= VERSION_16;
        let mut out = Vec::new();
        for role in ADMIN_OF {
            out.push(format!(
                "GRANT {} TO {} WITH ADMIN OPTION",
                quote_ident(role),
                self.ident()
            ));
        }
        if since_16 {
            for role in ADMIN_OF_SINCE_16 {
                out.push(format!("GRANT {} TO {}", quote_ident(role), self.ident()));
            }
        }
        let functions = FUNCTIONS
            .iter()
            .chain(FUNCTIONS_SINCE_16.iter().filter(|_| since_16));
        for function in functions {
            out.push(format!(
                "GRANT EXECUTE ON FUNCTION {function} TO {}",
                self.ident()
            ));
        }
        out
    }

    /// In the database it runs in: tables and sequences that the admin role creates in schema
    /// `public` from then on are the role's too, with the right to grant them on (Neon's
    /// `default_grants.sql`). Skipped where the database has no schema `public`.
    pub fn default_privileges_sql(&self) -> String {
        let role = self.ident();
        format!(
            "DO $compute_ctl$ BEGIN \
             IF EXISTS (SELECT FROM pg_catalog.pg_namespace WHERE nspname = 'public') THEN \
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO {role} WITH GRANT OPTION; \
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON SEQUENCES TO {role} WITH GRANT OPTION; \
             END IF; END $compute_ctl$"
        )
    }

    /// `GRANT ALL PRIVILEGES` (`CREATE`, `CONNECT`, `TEMPORARY`) on `database`.
    pub fn database_grant_sql(&self, database: &str) -> String {
        format!(
            "GRANT ALL PRIVILEGES ON DATABASE {} TO {}",
            quote_ident(database),
            self.ident()
        )
    }
}

impl fmt::Display for PrivilegedRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_as_neon_checks_them() {
        assert_eq!(PrivilegedRole::default().name(), "neon_superuser");
        assert_eq!(
            PrivilegedRole::parse("my_superuser").unwrap().name(),
            "my_superuser"
        );
        for (bad, why) in [
            ("", "empty"),
            ("Neon", "'N'"),
            ("neon-superuser", "'-'"),
            ("neon superuser", "' '"),
            ("r2", "'2'"),
            ("évé", "'é'"),
            ("pg_admins", "pg_"),
        ] {
            let err = PrivilegedRole::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn the_name_limit_is_postgres_s() {
        let longest = "a".repeat(NAME_BYTES_MAX);
        assert!(PrivilegedRole::parse(&longest).is_ok());
        let err = PrivilegedRole::parse(&format!("{longest}a")).unwrap_err();
        assert!(err.contains("64 bytes"), "{err}");
    }

    #[test]
    fn grants_depend_on_the_server_version() {
        let role = PrivilegedRole::default();
        assert_eq!(
            role.create_sql(),
            "CREATE ROLE \"neon_superuser\" WITH NOLOGIN CREATEDB CREATEROLE REPLICATION \
             BYPASSRLS IN ROLE \"pg_read_all_data\", \"pg_write_all_data\""
        );
        assert_eq!(
            role.grant_sql(150_018),
            [
                "GRANT \"pg_monitor\" TO \"neon_superuser\" WITH ADMIN OPTION",
                "GRANT \"pg_signal_backend\" TO \"neon_superuser\" WITH ADMIN OPTION",
                "GRANT EXECUTE ON FUNCTION pg_catalog.pg_show_replication_origin_status() TO \"neon_superuser\"",
            ]
        );
        let pg16 = role.grant_sql(160_004);
        assert_eq!(pg16.len(), 6);
        assert!(pg16.contains(&"GRANT \"pg_create_subscription\" TO \"neon_superuser\"".into()));
        assert!(pg16.iter().any(|s| s.contains("pg_log_standby_snapshot()")));
    }
}
