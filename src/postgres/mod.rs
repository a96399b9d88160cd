//! Postgres as compute_ctl runs and configures it.
//!
//! - [`process`]: the postmaster, spawned as a direct child, watched and stopped;
//! - [`connect`]: the admin connection of `-C`, completed with the spec's port;
//! - [`settings`]: settings applied live, checked by Postgres and confirmed by a hash read-back;
//! - [`monitor`]: activity, for `last_active`, and the drift check, on its own thread;
//! - [`drift`]: Postgres compared with the applied spec (one catalog read), as data;
//! - [`quote`]: the one place where names and values become SQL or configuration text;
//! - [`config`]: `postgresql.conf` and `pg_hba.conf`, rendered and written atomically;
//! - [`catalog`]: one read of `pg_authid`, `pg_database` and `pg_shdepend`;
//! - [`options`]: the spec's role and database options and passwords, checked and rendered;
//! - [`plan`]: the statements that bring the catalog to the spec, as a pure function;
//! - [`reconcile`]: the admin session, sending a plan, the error and report.
//!
//! Architecture invariant: only `plan` decides what to send, only `apply` sends, and every
//! name or value in a statement went through `quote`.

pub mod catalog;
pub mod config;
pub mod connect;
pub mod drift;
pub mod monitor;
pub mod options;
pub mod plan;
pub mod process;
pub mod quote;
pub mod reconcile;
pub mod settings;

pub use catalog::{
    CatalogDatabase, CatalogRole, CatalogSnapshot, Dependency, ValidUntil, Verifier,
};
pub use config::{render_pg_hba, render_postgresql_conf, write_config_files, ConfigError};
pub use plan::{plan, Plan, Statement, StatementKind};
pub use reconcile::{
    admin_config, apply, connect, reconcile, reconcile_on, ApplyError, ApplyReport,
};
