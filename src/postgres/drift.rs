//! Drift: Postgres compared with the applied spec, by one read of the catalog snapshot (the
//! same selects as reconciliation, with the settings' after them, in one round trip).
//!
//! What is compared: settings (the last entry of compute_ctl's `postgresql.conf` and the
//! running value's source against the expected settings, anything in `postgresql.auto.conf`,
//! any `ALTER DATABASE/ROLE … SET`); roles (missing, unexpected, the attributes the spec
//! declares, superuser, the password verifier); databases (missing, unexpected, owner); the
//! privileged role (`--privileged-role-name`) when it is missing. What Postgres owns (oids
//! below 16384: the bootstrap superuser, `pg_…` roles, `postgres` and the templates), the
//! admin role, the privileged role and the admin database are never unexpected. A verifier
//! is never shown: a changed one reads `"changed"`.
//!
//! `compare` is a pure function of the spec, the snapshot and the expected settings, tested
//! as data; `check` reads and compares.

use std::collections::{BTreeMap, BTreeSet};

use postgres::{Client, SimpleQueryRow};
use serde::{Deserialize, Serialize};

use crate::postgres::catalog::{boolean, catalog_error, field, text, CatalogRole, CatalogSnapshot};
use crate::postgres::options::{desired_verifier, RoleAttributes};
use crate::postgres::privileged::{self, PrivilegedRole};
use crate::postgres::reconcile::{ApplyError, ADMIN_SESSION_SETTINGS};
use crate::spec::ComputeSpec;

/// The first oid of objects that users create; anything below is Postgres's own.
pub const FIRST_NORMAL_OID: u32 = 16_384;

/// The most differences one check reports; the rest are counted (`more`).
pub const DRIFT_ITEMS_MAX: usize = 256;

/// How long a statement of the monitor's session may take on the server (its
/// `statement_timeout`): a check never holds the driver's next watch longer.
pub const CHECK_TIMEOUT_MS: u32 = 5_000;

/// The settings selects sent after the catalog's: the entries of the configuration files
/// (which file: compute_ctl's `conf`, `auto` for `postgresql.auto.conf`, or `other`), the
/// running values that come from a configuration file, and `ALTER DATABASE/ROLE … SET`.
const SETTINGS_SELECTS: &str = "\
SELECT f.name, f.setting, CASE \
WHEN f.sourcefile = pg_catalog.current_setting('config_file') THEN 'conf' \
WHEN f.sourcefile = pg_catalog.current_setting('data_directory') || '/postgresql.auto.conf' \
THEN 'auto' ELSE 'other' END AS file FROM pg_catalog.pg_file_settings f \
WHERE f.name IS NOT NULL ORDER BY f.seqno;
SELECT s.name, pg_catalog.current_setting(s.name) AS shown, \
coalesce(s.sourcefile = pg_catalog.current_setting('config_file'), false) AS ours \
FROM pg_catalog.pg_settings s WHERE s.source = 'configuration file';
SELECT d.datname AS db, r.rolname AS role, c.setting FROM pg_catalog.pg_db_role_setting s \
LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase \
LEFT JOIN pg_catalog.pg_authid r ON r.oid = s.setrole \
CROSS JOIN LATERAL pg_catalog.unnest(s.setconfig) AS c(setting);";

/// How many result sets `SETTINGS_SELECTS` gives.
const SETTINGS_RESULTS: usize = 3;

/// What kind of object differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    Setting,
    Role,
    Database,
}

/// One difference between Postgres and the applied spec (CONTRACT.md, "Drift"). `expected`
/// is `None` for an object the spec does not have, `actual` for one Postgres does not have.
/// Never holds a password verifier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Difference {
    pub kind: DriftKind,
    pub name: String,
    pub expected: Option<String>,
    pub actual: Option<String>,
    /// When it was first seen (RFC 3339); the driver fills it in.
    #[serde(default)]
    pub since: Option<String>,
}

impl Difference {
    fn new(kind: DriftKind, name: &str, expected: Option<String>, actual: Option<String>) -> Self {
        Difference {
            kind,
            name: name.to_owned(),
            expected,
            actual,
            since: None,
        }
    }

    /// What identifies it across checks (its `since` is kept while it lasts).
    pub fn key(&self) -> (DriftKind, &str, Option<&str>) {
        (self.kind, &self.name, self.expected.as_deref())
    }

    /// Whether `other` says the same, `since` aside.
    pub fn same(&self, other: &Difference) -> bool {
        self.key() == other.key() && self.actual == other.actual
    }
}

/// The differences of one check, in order, at most [`DRIFT_ITEMS_MAX`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drift {
    pub items: Vec<Difference>,
    /// How many more were found than `items` holds.
    pub more: usize,
}

impl Drift {
    /// A fingerprint of what was found (FNV-1a over kind, name, expected and actual), `None`
    /// when nothing was: the core tells a drift a repair did not remove by it.
    pub fn fingerprint(&self) -> Option<u64> {
        if self.items.is_empty() {
            return None;
        }
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        let mut eat = |bytes: &[u8]| {
            for b in bytes.iter().chain([0xff].iter()) {
                hash ^= u64::from(*b);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        };
        for item in &self.items {
            eat(&[item.kind as u8]);
            eat(item.name.as_bytes());
            eat(item.expected.as_deref().unwrap_or("\u{0}").as_bytes());
            eat(item.actual.as_deref().unwrap_or("\u{0}").as_bytes());
        }
        eat(&self.more.to_le_bytes());
        Some(hash)
    }
}

/// One entry of a configuration file (`pg_file_settings`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSetting {
    pub name: String,
    pub value: String,
    pub file: SettingFile,
}

/// Which file a setting entry is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SettingFile {
    /// compute_ctl's `postgresql.conf`.
    Conf,
    /// `postgresql.auto.conf` (`ALTER SYSTEM`).
    Auto,
    /// Any other (an `include`).
    Other,
}

/// A running value that comes from a configuration file (`pg_settings`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningSetting {
    pub name: String,
    /// `current_setting(name)`: the value as Postgres shows it.
    pub shown: String,
    /// Whether it comes from compute_ctl's `postgresql.conf`.
    pub ours: bool,
}

/// A setting made with `ALTER DATABASE/ROLE … SET` (`pg_db_role_setting`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectSetting {
    pub database: Option<String>,
    pub role: Option<String>,
    /// `name=value`, as Postgres stores it.
    pub setting: String,
}

/// The settings half of the drift snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SettingsSnapshot {
    pub files: Vec<FileSetting>,
    pub running: Vec<RunningSetting>,
    pub objects: Vec<ObjectSetting>,
}

/// Reads the catalog and the settings in one round trip and compares them with `spec`;
/// `expected_settings` are the `(name, value)` pairs compute_ctl wrote to `postgresql.conf`
/// for it (the spec's and its own, the last of a name winning).
pub fn check(
    client: &mut Client,
    spec: &ComputeSpec,
    expected_settings: &[(String, String)],
    admin_role: &str,
    privileged: &PrivilegedRole,
) -> Result<Drift, ApplyError> {
    let (catalog, results) =
        CatalogSnapshot::read_with(client, SETTINGS_SELECTS, SETTINGS_RESULTS)?;
    let settings = settings_from(&results)?;
    Ok(compare(
        spec,
        &catalog,
        &settings,
        expected_settings,
        admin_role,
        privileged,
    ))
}

fn settings_from(results: &[Vec<SimpleQueryRow>]) -> Result<SettingsSnapshot, ApplyError> {
    let [files, running, objects] = results else {
        return Err(catalog_error(format!(
            "expected {SETTINGS_RESULTS} settings results, got {}",
            results.len()
        )));
    };
    let mut out = SettingsSnapshot::default();
    for row in files {
        out.files.push(FileSetting {
            name: text(row, "name")?.to_ascii_lowercase(),
            value: field(row, "setting")?.unwrap_or_default().to_owned(),
            file: match text(row, "file")? {
                "conf" => SettingFile::Conf,
                "auto" => SettingFile::Auto,
                _ => SettingFile::Other,
            },
        });
    }
    for row in running {
        out.running.push(RunningSetting {
            name: text(row, "name")?.to_ascii_lowercase(),
            shown: text(row, "shown")?.to_owned(),
            ours: boolean(row, "ours")?,
        });
    }
    for row in objects {
        out.objects.push(ObjectSetting {
            database: field(row, "db")?.map(str::to_owned),
            role: field(row, "role")?.map(str::to_owned),
            setting: text(row, "setting")?.to_owned(),
        });
    }
    Ok(out)
}

/// The differences between the snapshot and `spec`, sorted by kind and name.
pub fn compare(
    spec: &ComputeSpec,
    catalog: &CatalogSnapshot,
    settings: &SettingsSnapshot,
    expected_settings: &[(String, String)],
    admin_role: &str,
    privileged: &PrivilegedRole,
) -> Drift {
    let mut found = compare_settings(settings, expected_settings);
    // Roles and databases are the spec's only where compute_ctl manages them (as `plan`).
    if !spec.skip_pg_catalog_updates && spec.mode.is_read_write() {
        found.extend(compare_roles(spec, catalog, admin_role, privileged));
        found.extend(compare_databases(spec, catalog));
    }
    found.sort_by(|a, b| a.key().cmp(&b.key()).then(a.actual.cmp(&b.actual)));
    let more = found.len().saturating_sub(DRIFT_ITEMS_MAX);
    found.truncate(DRIFT_ITEMS_MAX);
    Drift { items: found, more }
}

fn compare_settings(
    settings: &SettingsSnapshot,
    expected_settings: &[(String, String)],
) -> Vec<Difference> {
    let expected: BTreeMap<String, &str> = expected_settings
        .iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value.as_str()))
        .collect();
    // The admin session sets these itself: its view of them is not the server's.
    let own_session: BTreeSet<String> = ADMIN_SESSION_SETTINGS
        .iter()
        .map(|(name, _)| name.to_ascii_lowercase())
        .collect();
    let mut found: BTreeMap<String, Difference> = BTreeMap::new();
    let setting = |name: &str, actual: Option<String>| {
        let want = expected.get(name).map(|v| (*v).to_owned());
        Difference::new(DriftKind::Setting, name, want, actual)
    };
    // compute_ctl's file, as written: the last entry of each expected name.
    for (name, want) in &expected {
        let last = settings
            .files
            .iter()
            .rev()
            .find(|f| f.file == SettingFile::Conf && f.name == *name);
        if last.map(|f| f.value.as_str()) != Some(*want) {
            found.insert(name.clone(), setting(name, last.map(|f| f.value.clone())));
        }
    }
    // Anything in postgresql.auto.conf (the last entry of a name is what Postgres takes).
    for entry in settings
        .files
        .iter()
        .filter(|f| f.file == SettingFile::Auto)
    {
        found.insert(
            entry.name.clone(),
            setting(&entry.name, Some(entry.value.clone())),
        );
    }
    // A running value from another file than compute_ctl's.
    for running in settings.running.iter().filter(|r| !r.ours) {
        if own_session.contains(&running.name) {
            continue;
        }
        found
            .entry(running.name.clone())
            .or_insert_with(|| setting(&running.name, Some(running.shown.clone())));
    }
    let mut out: Vec<Difference> = found.into_values().collect();
    for object in &settings.objects {
        let (name, value) = object
            .setting
            .split_once('=')
            .unwrap_or((object.setting.as_str(), ""));
        let quoted = |s: &str| crate::postgres::quote::quote_ident(s);
        let scope = match (&object.role, &object.database) {
            (Some(role), Some(db)) => format!("role {} in database {}", quoted(role), quoted(db)),
            (Some(role), None) => format!("role {}", quoted(role)),
            (None, Some(db)) => format!("database {}", quoted(db)),
            (None, None) => "every role and database".to_owned(),
        };
        out.push(Difference::new(
            DriftKind::Setting,
            &format!("{name} ({scope})"),
            None,
            Some(value.to_owned()),
        ));
    }
    out
}

/// Whether a role is Postgres's or compute_ctl's own, never the spec's.
fn own_role(
    role: &CatalogRole,
    catalog: &CatalogSnapshot,
    admin_role: &str,
    privileged: &PrivilegedRole,
) -> bool {
    role.oid < FIRST_NORMAL_OID
        || role.name == admin_role
        || role.name == catalog.session_user
        || role.name == privileged.name()
        || role.name.starts_with("pg_")
}

/// Whether the spec's data comes from storage (an upstream, Neon's pageserver), whose roles
/// and databases the spec need not name.
fn brought_by_storage(spec: &ComputeSpec) -> bool {
    spec.upstream_connstring.is_some()
        || spec.pageserver_connstring.is_some()
        || spec.pageserver_connection_info.is_some()
}

fn compare_roles(
    spec: &ComputeSpec,
    catalog: &CatalogSnapshot,
    admin_role: &str,
    privileged: &PrivilegedRole,
) -> Vec<Difference> {
    let mut out = Vec::new();
    // Every configuration creates it when missing (`plan`): a repair brings it back.
    if catalog.role(privileged.name()).is_none() {
        out.push(Difference::new(
            DriftKind::Role,
            privileged.name(),
            Some(privileged::ATTRIBUTES.to_owned()),
            None,
        ));
    }
    let declared: BTreeSet<&str> = spec.cluster.roles.iter().map(|r| r.name.as_str()).collect();
    for role in &spec.cluster.roles {
        let name = role.name.as_str();
        if name == admin_role || name == catalog.session_user || name == privileged.name() {
            continue;
        }
        // A spec `plan` refuses never reached `running`; nothing to compare in that case.
        let Ok(attrs) = RoleAttributes::from_spec(role.options.as_deref()) else {
            continue;
        };
        let Some(current) = catalog.role(name) else {
            let want = attrs.create_clause().join(" ");
            out.push(Difference::new(DriftKind::Role, name, Some(want), None));
            continue;
        };
        let (want, have) = attribute_differences(&attrs, current);
        if !want.is_empty() {
            out.push(Difference::new(
                DriftKind::Role,
                name,
                Some(want.join(" ")),
                Some(have.join(" ")),
            ));
        }
        if let Ok(password) = desired_verifier(role) {
            if current.password != password {
                let want = match password {
                    Some(_) => "password as in the spec",
                    None => "no password",
                };
                let have = match current.password {
                    Some(_) => "changed",
                    None => "no password",
                };
                out.push(Difference::new(
                    DriftKind::Role,
                    name,
                    Some(want.into()),
                    Some(have.into()),
                ));
            }
        }
    }
    // Roles the spec does not name are drift only where compute_ctl made every role: a copy
    // of an upstream or a Neon timeline brings the roles of its storage.
    let from_storage = brought_by_storage(spec);
    for role in &catalog.roles {
        if from_storage
            || own_role(role, catalog, admin_role, privileged)
            || declared.contains(role.name.as_str())
        {
            continue;
        }
        out.push(Difference::new(
            DriftKind::Role,
            &role.name,
            None,
            Some(describe_role(role)),
        ));
    }
    out
}

/// The declared attributes `current` lacks, as the spec words them and as the role has them;
/// superuser too, which no spec may grant.
fn attribute_differences(
    attrs: &RoleAttributes,
    current: &CatalogRole,
) -> (Vec<String>, Vec<String>) {
    let mut want = Vec::new();
    let mut have = Vec::new();
    let mut flag = |name: &str, wanted: Option<bool>, has: bool| {
        if let Some(wanted) = wanted {
            if wanted != has {
                want.push(flag_word(name, wanted));
                have.push(flag_word(name, has));
            }
        }
    };
    flag("SUPERUSER", Some(false), current.superuser);
    flag("LOGIN", Some(attrs.login), current.login);
    flag("CREATEDB", attrs.create_db, current.create_db);
    flag("CREATEROLE", attrs.create_role, current.create_role);
    flag("REPLICATION", attrs.replication, current.replication);
    flag("BYPASSRLS", attrs.bypass_rls, current.bypass_rls);
    flag("INHERIT", attrs.inherit, current.inherit);
    if let Some(limit) = attrs.connection_limit {
        if limit != current.connection_limit {
            want.push(format!("CONNECTION LIMIT {limit}"));
            have.push(format!("CONNECTION LIMIT {}", current.connection_limit));
        }
    }
    if let Some((text, at)) = &attrs.valid_until {
        if current.valid_until != Some(*at) {
            want.push(format!("VALID UNTIL {text}"));
            have.push(match current.valid_until {
                Some(v) => format!("VALID UNTIL {v:?}"),
                None => "no VALID UNTIL".into(),
            });
        }
    }
    (want, have)
}

fn flag_word(name: &str, on: bool) -> String {
    if on {
        name.to_owned()
    } else {
        format!("NO{name}")
    }
}

/// A role's attributes in `CREATE ROLE` words, never its password.
fn describe_role(role: &CatalogRole) -> String {
    let mut words = vec![flag_word("LOGIN", role.login)];
    for (name, on) in [
        ("SUPERUSER", role.superuser),
        ("CREATEDB", role.create_db),
        ("CREATEROLE", role.create_role),
        ("REPLICATION", role.replication),
        ("BYPASSRLS", role.bypass_rls),
    ] {
        if on {
            words.push(name.to_owned());
        }
    }
    words.join(" ")
}

fn compare_databases(spec: &ComputeSpec, catalog: &CatalogSnapshot) -> Vec<Difference> {
    let mut out = Vec::new();
    let owner = |name: &str| Some(format!("owner {name}"));
    for database in &spec.cluster.databases {
        let name = database.name.as_str();
        match catalog.database(name) {
            None => out.push(Difference::new(
                DriftKind::Database,
                name,
                owner(&database.owner),
                None,
            )),
            Some(current) if current.owner != database.owner.as_str() => {
                out.push(Difference::new(
                    DriftKind::Database,
                    name,
                    owner(&database.owner),
                    owner(&current.owner),
                ));
            }
            Some(_) => {}
        }
    }
    let declared: BTreeSet<&str> = spec
        .cluster
        .databases
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    let from_storage = brought_by_storage(spec);
    for database in &catalog.databases {
        if from_storage
            || database.oid < FIRST_NORMAL_OID
            || database.name == catalog.session_database
            || declared.contains(database.name.as_str())
        {
            continue;
        }
        out.push(Difference::new(
            DriftKind::Database,
            &database.name,
            None,
            owner(&database.owner),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::catalog::{CatalogDatabase, Verifier};

    const ADMIN: &str = "cloud_admin";
    const MD5: &str = "md5aaaabbbbccccddddeeeeffff00001111";

    fn spec() -> ComputeSpec {
        serde_json::from_value(serde_json::json!({
            "format_version": 1.0,
            "cluster": {
                "roles": [{"name": "alice", "encrypted_password": &MD5[3..],
                           "options": [{"name": "CREATEDB"}]}],
                "databases": [{"name": "shop", "owner": "alice"}],
            },
        }))
        .unwrap()
    }

    fn catalog() -> CatalogSnapshot {
        let mut admin = CatalogRole::new(10, ADMIN);
        admin.superuser = true;
        admin.login = true;
        let mut alice = CatalogRole::new(16_400, "alice");
        alice.login = true;
        alice.create_db = true;
        alice.password = Some(Verifier::new(MD5));
        CatalogSnapshot {
            session_user: ADMIN.into(),
            session_database: "postgres".into(),
            roles: vec![
                admin,
                CatalogRole::new(3373, "pg_monitor"),
                alice,
                CatalogRole::new(16_390, privileged::DEFAULT_NAME),
            ],
            databases: vec![
                CatalogDatabase::new(5, "postgres", ADMIN),
                CatalogDatabase::new(1, "template1", ADMIN),
                CatalogDatabase::new(4, "template0", ADMIN),
                CatalogDatabase::new(16_401, "shop", "alice"),
            ],
            dependencies: Vec::new(),
            fsync_off: false,
            server_version_num: 150_018,
        }
    }

    fn settings() -> SettingsSnapshot {
        SettingsSnapshot {
            files: vec![FileSetting {
                name: "work_mem".into(),
                value: "4MB".into(),
                file: SettingFile::Conf,
            }],
            running: vec![RunningSetting {
                name: "work_mem".into(),
                shown: "4MB".into(),
                ours: true,
            }],
            objects: Vec::new(),
        }
    }

    fn expected() -> Vec<(String, String)> {
        vec![("work_mem".into(), "4MB".into())]
    }

    fn drift(catalog: &CatalogSnapshot, settings: &SettingsSnapshot) -> Vec<Difference> {
        compare(
            &spec(),
            catalog,
            settings,
            &expected(),
            ADMIN,
            &PrivilegedRole::default(),
        )
        .items
    }

    fn item(
        kind: DriftKind,
        name: &str,
        expected: Option<&str>,
        actual: Option<&str>,
    ) -> Difference {
        Difference::new(kind, name, expected.map(Into::into), actual.map(Into::into))
    }

    #[test]
    fn a_matching_cluster_has_no_drift_and_postgres_own_objects_are_not_drift() {
        let found = compare(
            &spec(),
            &catalog(),
            &settings(),
            &expected(),
            ADMIN,
            &PrivilegedRole::default(),
        );
        assert_eq!(found, Drift::default());
        assert_eq!(found.fingerprint(), None);
    }

    #[test]
    fn each_kind_of_drift_is_named_with_expected_and_actual() {
        let mut catalog = catalog();
        catalog.roles[2].create_db = false;
        catalog.roles[2].password = Some(Verifier::new("md5ffff"));
        catalog.roles.push(CatalogRole::new(16_500, "mallory"));
        catalog.databases[3].owner = "mallory".into();
        catalog
            .databases
            .push(CatalogDatabase::new(16_501, "extra", ADMIN));
        let mut settings = settings();
        settings.files.push(FileSetting {
            name: "work_mem".into(),
            value: "64MB".into(),
            file: SettingFile::Auto,
        });
        settings.objects.push(ObjectSetting {
            database: Some("shop".into()),
            role: None,
            setting: "search_path=x".into(),
        });
        let found = drift(&catalog, &settings);
        assert_eq!(
            found,
            [
                item(
                    DriftKind::Setting,
                    "search_path (database \"shop\")",
                    None,
                    Some("x")
                ),
                item(DriftKind::Setting, "work_mem", Some("4MB"), Some("64MB")),
                item(
                    DriftKind::Role,
                    "alice",
                    Some("CREATEDB"),
                    Some("NOCREATEDB")
                ),
                item(
                    DriftKind::Role,
                    "alice",
                    Some("password as in the spec"),
                    Some("changed")
                ),
                item(DriftKind::Role, "mallory", None, Some("NOLOGIN")),
                item(
                    DriftKind::Database,
                    "extra",
                    None,
                    Some("owner cloud_admin")
                ),
                item(
                    DriftKind::Database,
                    "shop",
                    Some("owner alice"),
                    Some("owner mallory")
                ),
            ]
        );
        assert!(!format!("{found:?}").contains("ffff"), "no verifier shown");
    }

    #[test]
    fn missing_objects_have_no_actual() {
        let mut catalog = catalog();
        catalog.roles.retain(|r| r.name != "alice");
        catalog.databases.retain(|d| d.name != "shop");
        let found = drift(&catalog, &SettingsSnapshot::default());
        assert_eq!(
            found,
            [
                item(DriftKind::Setting, "work_mem", Some("4MB"), None),
                item(DriftKind::Role, "alice", Some("LOGIN CREATEDB"), None),
                item(DriftKind::Database, "shop", Some("owner alice"), None),
            ]
        );
    }

    #[test]
    fn the_privileged_role_is_never_unexpected_and_its_absence_is_drift() {
        // Present (as every configuration leaves it), made by compute_ctl, not in the spec.
        assert!(drift(&catalog(), &settings()).is_empty());
        let mut catalog = catalog();
        catalog.roles.retain(|r| r.name != privileged::DEFAULT_NAME);
        assert_eq!(
            drift(&catalog, &settings()),
            [item(
                DriftKind::Role,
                "neon_superuser",
                Some("NOLOGIN CREATEDB CREATEROLE REPLICATION BYPASSRLS"),
                None
            )]
        );
        // Another name: that one is compute_ctl's, and neon_superuser is anybody's.
        let mine = PrivilegedRole::parse("my_superuser").unwrap();
        let mut catalog = self::catalog();
        catalog.roles[3].name = "my_superuser".into();
        catalog
            .roles
            .push(CatalogRole::new(16_600, "neon_superuser"));
        let found = compare(&spec(), &catalog, &settings(), &expected(), ADMIN, &mine);
        assert_eq!(
            found.items,
            [item(
                DriftKind::Role,
                "neon_superuser",
                None,
                Some("NOLOGIN")
            )]
        );
    }

    #[test]
    fn the_list_is_bounded_and_the_fingerprint_follows_it() {
        let mut catalog = catalog();
        for i in 0..(DRIFT_ITEMS_MAX as u32 + 10) {
            catalog
                .roles
                .push(CatalogRole::new(20_000 + i, format!("r{i:04}")));
        }
        let found = compare(
            &spec(),
            &catalog,
            &settings(),
            &expected(),
            ADMIN,
            &PrivilegedRole::default(),
        );
        assert_eq!(found.items.len(), DRIFT_ITEMS_MAX);
        assert_eq!(found.more, 10);
        let mut fewer = found.clone();
        fewer.items.pop();
        assert_ne!(found.fingerprint(), fewer.fingerprint());
        assert_eq!(found.fingerprint(), found.clone().fingerprint());
    }

    #[test]
    fn a_replica_compares_settings_only() {
        let mut replica = spec();
        replica.mode = crate::spec::ComputeMode::Replica;
        let mut catalog = catalog();
        catalog
            .roles
            .push(CatalogRole::new(16_500, "upstream_role"));
        let found = compare(
            &replica,
            &catalog,
            &settings(),
            &expected(),
            ADMIN,
            &PrivilegedRole::default(),
        );
        assert!(found.items.is_empty(), "{found:?}");
    }
}
