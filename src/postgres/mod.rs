//! Postgres as compute_ctl runs and configures it.
//!
//! - [`process`]: the postmaster, spawned as a direct child (or adopted), watched and stopped;
//! - [`adopt`]: whether an earlier run's postmaster may be adopted, check by check;
//! - [`connect`]: the admin connection of `-C`, completed with the spec's port;
//! - [`error`]: Postgres's own words, whole (SQLSTATE, message, DETAIL, HINT);
//! - [`settings`]: settings applied live, checked by Postgres and confirmed by a hash read-back;
//! - [`monitor`]: activity, for `last_active`, and the drift check, on its own thread;
//! - [`drift`]: Postgres compared with the applied spec (one catalog read), as data;
//! - [`promote`]: a standby promoted to a read-write primary (`POST /promote`);
//! - [`tls`]: libpq's `sslmode` and `sslrootcert` for the servers compute_ctl reads from;
//! - [`quote`]: the one place where names and values become SQL or configuration text;
//! - [`config`]: `postgresql.conf` and `pg_hba.conf`, rendered and written atomically;
//! - [`catalog`]: one read of `pg_authid`, `pg_database` and `pg_shdepend`;
//! - [`catalog_api`]: the work of Neon's catalog endpoints (`/dbs_and_roles`, a bounded
//!   `pg_dump --schema-only`, `/check_writability`, `/insights`, `/extensions`, `/grants`);
//! - [`options`]: the spec's role and database options and passwords, checked and rendered;
//! - [`plan`]: the statements that bring the catalog to the spec, as a pure function;
//! - [`privileged`]: Neon's privileged role (`--privileged-role-name`) and what it is given;
//! - [`reconcile`]: the admin session, sending a plan, the error and report.
//!
//! Architecture invariant: only `plan` decides what to send, only `apply` sends, and every
//! name or value in a statement went through `quote`.

pub mod adopt;
pub mod catalog;
pub mod catalog_api;
pub mod config;
pub mod connect;
pub mod drift;
pub mod error;
pub mod monitor;
pub mod options;
pub mod plan;
pub mod privileged;
pub mod process;
pub mod promote;
pub mod quote;
pub mod reconcile;
pub mod settings;
pub mod tls;

pub use catalog::{
    CatalogDatabase, CatalogRole, CatalogSnapshot, Dependency, ValidUntil, Verifier,
};
pub use config::{render_pg_hba, render_postgresql_conf, write_config_files, ConfigError};
pub use plan::{plan, Plan, Statement, StatementKind};
pub use privileged::PrivilegedRole;
pub use reconcile::{
    admin_config, apply, connect, reconcile, reconcile_on, ApplyError, ApplyReport,
};
