//! Where a compute's data comes from: the backend the spec selects (CONTRACT.md, "Where the
//! data comes from"). Each backend finds the LSN to start from (`sync_safekeepers`) and fills
//! PGDATA (`fetch_basebackup`), and may add settings and files before Postgres starts.

mod branch;
mod embedded;

pub use embedded::{initdb, EPHEMERAL_SETTINGS};
mod neon;
mod reuse;
mod standby;
mod upstream;
pub mod wire;

use states::{Lsn, StepError};

use crate::spec::{ParsedSpec, Storage};
use crate::step_env::{StepCtx, StepEnv};

/// What `sync_safekeepers` found.
#[derive(Debug)]
pub struct Synced {
    /// The LSN to start from; `None` when the storage has none to give.
    pub lsn: Option<Lsn>,
    /// Journaled in `step_finished.output`: what was done, or why it was skipped.
    pub detail: serde_json::Value,
}

/// A source of data for PGDATA.
pub trait StorageBackend {
    fn sync_safekeepers(&self, ctx: &StepCtx<'_>, spec: &ParsedSpec) -> Result<Synced, StepError>;

    /// Fills the empty PGDATA; returns facts for the journal.
    fn fetch_basebackup(
        &self,
        ctx: &StepCtx<'_>,
        spec: &ParsedSpec,
        lsn: Option<Lsn>,
    ) -> Result<serde_json::Value, StepError>;

    /// Settings this storage adds to `postgresql.conf` (after the spec's own).
    fn settings(&self, env: &StepEnv, spec: &ParsedSpec) -> Vec<(String, String)>;

    /// Files to place in PGDATA before Postgres starts (`standby.signal`).
    fn prepare_start(&self, env: &StepEnv, spec: &ParsedSpec) -> anyhow::Result<()>;

    /// Whether the PGDATA an earlier run left may be started again instead of filled anew:
    /// `Ok` with the reason for the journal, `Err` with why not. Only an upstream `Replica`
    /// keeps its data; every other storage starts fresh.
    fn reusable(
        &self,
        _ctx: &StepCtx<'_>,
        _spec: &ParsedSpec,
    ) -> Result<serde_json::Value, String> {
        Err("this storage starts every compute from a fresh copy".into())
    }
}

/// Writes a file into PGDATA (a signal file, a password file): mode 0600, owned by the
/// Postgres user, replaced atomically and not synced, since every start rebuilds PGDATA.
pub(crate) fn write_pgdata_file(env: &StepEnv, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    use crate::durable::{write_atomic_owned, Persistence};
    let path = env.pgdata.join(name);
    let owner = env.pg_user.as_ref().map(crate::pg_user::PgUser::ids);
    write_atomic_owned(&path, bytes, owner, Persistence::Rebuilt)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// The `postgresql.conf` a spec runs with on its storage: the spec's settings, then the
/// socket directory, the storage's settings and the spec hash. The same text at start and on
/// every apply, so an unchanged spec reloads nothing.
pub fn postgresql_conf(
    env: &StepEnv,
    spec: &ParsedSpec,
) -> Result<String, crate::postgres::ConfigError> {
    let extra = own_settings(env, spec);
    let extra: Vec<(&str, String)> = extra.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    crate::postgres::config::render_postgresql_conf(&spec.spec, &extra)
}

/// The settings `postgresql.conf` gives `spec` on its storage, `(name, value)`, the last of a
/// name winning as in Postgres: what the drift check expects to find. The raw
/// `cluster.postgresql_conf` text is not among them (Postgres parses it; it is not compared).
pub fn expected_settings(env: &StepEnv, spec: &ParsedSpec) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let spec_settings = spec.spec.cluster.settings().iter().filter_map(|s| {
        s.value
            .as_ref()
            .map(|value| (s.name.clone(), value.clone()))
    });
    for (name, value) in spec_settings.chain(own_settings(env, spec)) {
        out.retain(|(n, _)| !n.eq_ignore_ascii_case(&name));
        out.push((name, value));
    }
    out
}

/// compute_ctl's own settings, after the spec's: the socket directory, the storage's, the
/// spec hash.
fn own_settings(env: &StepEnv, spec: &ParsedSpec) -> Vec<(String, String)> {
    let mut extra: Vec<(String, String)> = Vec::new();
    if spec
        .spec
        .cluster
        .setting("unix_socket_directories")
        .is_none()
    {
        extra.push((
            "unix_socket_directories".into(),
            env.pgdata.to_string_lossy().into_owned(),
        ));
    }
    extra.extend(crate::postgres::config::defaults(&spec.spec));
    extra.extend(backend(spec).settings(env, spec));
    extra.push((
        crate::postgres::settings::SPEC_HASH_SETTING.into(),
        spec.hash.clone(),
    ));
    extra
}

/// Writes `postgresql.conf` and `pg_hba.conf` for `spec` into PGDATA.
pub fn write_config_files(
    env: &StepEnv,
    spec: &ParsedSpec,
) -> Result<(), crate::postgres::ConfigError> {
    let conf = postgresql_conf(env, spec)?;
    let hba = crate::postgres::config::render_pg_hba(env.admin.role())?;
    crate::postgres::config::write_config_files(&env.pgdata, &conf, &hba)
}

/// The backend `spec` selects.
pub fn backend(spec: &ParsedSpec) -> Box<dyn StorageBackend> {
    match &spec.storage {
        Storage::Embedded => Box::new(embedded::Embedded),
        Storage::Upstream { .. } => Box::new(upstream::Upstream),
        Storage::Neon { .. } => Box::new(neon::Neon::default()),
    }
}
