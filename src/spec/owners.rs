//! Database owners checked against the roles the compute will have, so that a spec whose
//! database is owned by nobody is refused before PGDATA is rebuilt, not by `CREATE DATABASE`
//! after.

use super::{ParsedSpec, SpecError, Storage};

/// The owners of `cluster.databases` that will not be roles when the databases are created.
///
/// Checked on the embedded default only: its cluster is a fresh `initdb -U <admin role>`, whose
/// only roles are then the admin role (the user of `-C`), the spec's roles and Postgres's
/// `pg_*` roles (which cannot own a database). There is no `postgres` role unless the admin
/// role is `postgres`. Neon's timelines and an upstream server bring roles of their own that
/// the spec need not list, so their owners are left to `CREATE DATABASE`.
pub(crate) fn check(parsed: &ParsedSpec, admin_role: &str) -> Vec<SpecError> {
    if parsed.storage != Storage::Embedded {
        return Vec::new();
    }
    let cluster = &parsed.spec.cluster;
    let mut errors = Vec::new();
    for (i, database) in cluster.databases.iter().enumerate() {
        let owner = database.owner.as_str();
        if owner == admin_role || cluster.roles.iter().any(|role| role.name == owner) {
            continue;
        }
        errors.push(SpecError::new(
            format!("cluster.databases[{i}].owner"),
            format!(
                "database {:?} is owned by {owner:?}, which is neither a role of the spec \
                 (cluster.roles) nor the admin role {admin_role:?} (the user of -C): add the \
                 role to cluster.roles, or give the database one of those owners",
                database.name
            ),
        ));
    }
    errors
}
