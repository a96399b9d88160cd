//! Neon's `ComputeSpec` JSON, as compute_ctl reads it. Fields we do not act on are still
//! accepted (and listed in the `spec_accepted` record), as Neon's compute_ctl does.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::storage::{redact_connstring, Redacted};
use super::validate::PasswordVerifier;

/// A Postgres identifier (role or database name), as the spec gives it: unquoted.
pub type PgIdent = String;

/// The compute spec: the cluster to declare (roles, databases, settings) and where the data
/// comes from. `Debug` is written by hand: it hides the storage token and any password in
/// `upstream_connstring`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct ComputeSpec {
    pub format_version: f32,
    #[serde(default)]
    pub operation_uuid: Option<String>,
    pub cluster: Cluster,
    #[serde(default)]
    pub delta_operations: Option<Vec<DeltaOp>>,
    /// Skip roles, databases and delta operations (settings are still applied).
    #[serde(default)]
    pub skip_pg_catalog_updates: bool,

    // Neon storage. For backwards compatibility Neon also reads these from the `neon.*`
    // settings in `cluster.settings`; `spec::Storage` resolves both.
    #[serde(default)]
    pub tenant_id: Option<String>,
    #[serde(default)]
    pub timeline_id: Option<String>,
    /// Neon's newer way to name the pageservers: one entry a shard. Neon reads it first and
    /// falls back to `pageserver_connstring` (then the `neon.*` settings) only without it.
    #[serde(default)]
    pub pageserver_connection_info: Option<PageserverConnectionInfo>,
    #[serde(default)]
    pub pageserver_connstring: Option<String>,
    /// The stripe size (in pages) of a sharded tenant named by `pageserver_connstring`.
    #[serde(default)]
    pub shard_stripe_size: Option<u32>,
    #[serde(default)]
    pub safekeeper_connstrings: Vec<String>,
    /// Used as the password to the pageserver and safekeepers (`NEON_AUTH_TOKEN`).
    #[serde(default)]
    pub storage_auth_token: Option<String>,

    /// compute_ctl's extension to Neon's format: an upstream PostgreSQL server to copy or
    /// follow (`postgresql://replicator@host:port/postgres`).
    #[serde(default)]
    pub upstream_connstring: Option<String>,
    /// compute_ctl's extension: the replication slot a `Replica` streams through.
    #[serde(default)]
    pub upstream_slot_name: Option<String>,
    /// compute_ctl's extension: run on the embedded default (a fresh `initdb`, ephemeral data)
    /// although the spec names no storage. Neon refuses a spec without a pageserver; without
    /// this a spec that names neither storage nor settings is refused the same way.
    #[serde(default)]
    pub embedded_storage: bool,

    #[serde(default)]
    pub mode: ComputeMode,

    /// Neon's: drop the logical replication subscriptions a branch's copy carries before the
    /// branch opens for writes. compute_ctl disables them on every upstream branch without
    /// it (the copy's subscriptions would consume the production subscriber's changes).
    #[serde(default)]
    pub drop_subscriptions_before_start: bool,

    /// Neon requires it; we accept its absence.
    #[serde(default)]
    pub suspend_timeout_seconds: Option<i64>,
}

/// What kind of compute this is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ComputeMode {
    /// A read-write node.
    #[default]
    Primary,
    /// A read-only node pinned at an LSN; needs a storage that serves old LSNs (Neon).
    Static(states::Lsn),
    /// A read-only hot standby that follows its storage.
    Replica,
}

impl ComputeMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            ComputeMode::Primary => "primary",
            ComputeMode::Static(_) => "static",
            ComputeMode::Replica => "replica",
        }
    }

    /// Whether the compute accepts writes (and so gets roles and databases applied).
    pub fn is_read_write(&self) -> bool {
        matches!(self, ComputeMode::Primary)
    }
}

/// The cluster's desired contents.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    #[serde(default)]
    pub cluster_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub databases: Vec<Database>,
    /// Text placed at the top of `postgresql.conf`, before `settings`.
    #[serde(default)]
    pub postgresql_conf: Option<String>,
    /// Settings appended to `postgresql.conf`.
    #[serde(default)]
    pub settings: Option<Vec<GenericOption>>,
}

impl Cluster {
    /// The settings, in order (none when absent).
    pub fn settings(&self) -> &[GenericOption] {
        self.settings.as_deref().unwrap_or(&[])
    }

    /// The value of the last setting named `name`.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings()
            .iter()
            .rev()
            .find(|s| s.name == name)
            .and_then(|s| s.value.as_deref())
    }
}

/// A role the cluster must have. `Debug` is written by hand: it names the kind of password
/// verifier, never its value.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    pub name: PgIdent,
    /// A SCRAM-SHA-256 verifier, or an md5 hash (32 hex digits, of password + role name), or
    /// `null`: no password.
    #[serde(default)]
    pub encrypted_password: Option<String>,
    #[serde(default)]
    pub options: Option<Vec<GenericOption>>,
}

impl Role {
    /// What Postgres should store as the role's password: a SCRAM verifier as it is, an md5
    /// hash with its `md5` prefix (Neon sends the 32 hex digits without it). `None` for a role
    /// without a password, and for a value that is not a verifier (`spec::parse` rejects those).
    pub fn password_verifier(&self) -> Option<String> {
        let given = self.encrypted_password.as_deref()?;
        match PasswordVerifier::classify(given)? {
            PasswordVerifier::Scram | PasswordVerifier::Md5 => Some(given.to_string()),
            PasswordVerifier::NeonMd5 => Some(format!("md5{given}")),
        }
    }
}

impl fmt::Debug for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let password = self.encrypted_password.as_deref().map(|given| {
            match PasswordVerifier::classify(given) {
                Some(kind) => kind.redacted(),
                None => "<redacted: not a verifier>",
            }
        });
        f.debug_struct("Role")
            .field("name", &self.name)
            .field("encrypted_password", &password)
            .field("options", &self.options)
            .finish()
    }
}

impl fmt::Debug for ComputeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComputeSpec")
            .field("format_version", &self.format_version)
            .field("operation_uuid", &self.operation_uuid)
            .field("cluster", &self.cluster)
            .field("delta_operations", &self.delta_operations)
            .field("skip_pg_catalog_updates", &self.skip_pg_catalog_updates)
            .field("tenant_id", &self.tenant_id)
            .field("timeline_id", &self.timeline_id)
            .field(
                "pageserver_connstring",
                &self.pageserver_connstring.as_deref().map(redact_connstring),
            )
            .field(
                "pageserver_connection_info",
                &self.pageserver_connection_info,
            )
            .field("shard_stripe_size", &self.shard_stripe_size)
            .field("safekeeper_connstrings", &self.safekeeper_connstrings)
            .field(
                "storage_auth_token",
                &self.storage_auth_token.as_ref().map(|_| Redacted),
            )
            .field(
                "upstream_connstring",
                &self.upstream_connstring.as_deref().map(redact_connstring),
            )
            .field("upstream_slot_name", &self.upstream_slot_name)
            .field("embedded_storage", &self.embedded_storage)
            .field("mode", &self.mode)
            .field(
                "drop_subscriptions_before_start",
                &self.drop_subscriptions_before_start,
            )
            .field("suspend_timeout_seconds", &self.suspend_timeout_seconds)
            .finish()
    }
}

/// A database the cluster must have.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Database {
    pub name: PgIdent,
    pub owner: PgIdent,
    /// `CREATE DATABASE` options (`TEMPLATE`, `LC_COLLATE`, `LC_CTYPE`, `ENCODING`, ...).
    #[serde(default)]
    pub options: Option<Vec<GenericOption>>,
}

/// A named value: a setting, a role option, or a database option.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenericOption {
    pub name: String,
    #[serde(default)]
    pub value: Option<String>,
    /// Neon's hint of the type (`bool`, `integer`, `string`, `enum`...); quoting does not
    /// depend on it.
    #[serde(default)]
    pub vartype: Option<String>,
}

/// A change the declared state cannot express: a rename or a drop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeltaOp {
    /// `delete_db`, `rename_db`, `delete_role` or `rename_role`.
    pub action: String,
    pub name: PgIdent,
    #[serde(default)]
    pub new_name: Option<PgIdent>,
}

/// Neon's `PageserverConnectionInfo`: the pageservers of each shard of the tenant.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageserverConnectionInfo {
    /// 0 for an unsharded tenant; 1 and up for a sharded one (Neon's `ShardCount`, a `u8`).
    pub shard_count: u8,
    /// Pages a stripe, for a sharded tenant (Neon's `ShardStripeSize`, a `u32`).
    #[serde(default)]
    pub stripe_size: Option<u32>,
    /// Keyed by Neon's `ShardIndex` in hex: two digits of shard number, two of shard count
    /// (`"0000"` for an unsharded tenant, `"0102"` for the second of two shards).
    pub shards: std::collections::BTreeMap<String, PageserverShardInfo>,
    #[serde(default)]
    pub prefer_protocol: PageserverProtocol,
}

/// The pageservers that serve one shard; Neon uses the first.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageserverShardInfo {
    pub pageservers: Vec<PageserverShardConnectionInfo>,
}

/// One pageserver of a shard.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageserverShardConnectionInfo {
    #[serde(default)]
    pub id: Option<u64>,
    /// A libpq connection string: the only protocol this compute_ctl speaks.
    #[serde(default)]
    pub libpq_url: Option<String>,
    #[serde(default)]
    pub grpc_url: Option<String>,
}

/// The protocol Neon's compute prefers for the pageservers. The compute may use another one it
/// has URLs for: this compute_ctl always uses libpq.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PageserverProtocol {
    #[default]
    #[serde(rename = "libpq")]
    Libpq,
    #[serde(rename = "grpc")]
    Grpc,
}

/// By hand: the URLs may hold passwords.
impl fmt::Debug for PageserverConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageserverConnectionInfo")
            .field("shard_count", &self.shard_count)
            .field("stripe_size", &self.stripe_size)
            .field("shards", &self.shards)
            .field("prefer_protocol", &self.prefer_protocol)
            .finish()
    }
}

impl fmt::Debug for PageserverShardInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.pageservers).finish()
    }
}

impl fmt::Debug for PageserverShardConnectionInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PageserverShardConnectionInfo")
            .field("id", &self.id)
            .field(
                "libpq_url",
                &self.libpq_url.as_deref().map(redact_connstring),
            )
            .field("grpc_url", &self.grpc_url.as_deref().map(redact_connstring))
            .finish()
    }
}
