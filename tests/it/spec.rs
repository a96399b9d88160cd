//! The spec module through its public door: `spec::parse`, `SettingCatalog`, `check_file`,
//! against our fixtures, Neon's own fixtures and the real Postgres 15 binary.

use std::path::{Path, PathBuf};

use compute_ctl::spec::{self, ComputeMode, ParsedSpec, SettingCatalog, SpecError, Storage};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const POSTGRES_BIN: &str = "/usr/lib/postgresql/15/bin/postgres";

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/specs")
}

/// Neon's fixtures live in `shared/`, beside the repository's clone; a git worktree one level
/// deeper finds them one level further up.
fn neon_fixture(path: &str) -> Vec<u8> {
    let candidates = [
        concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/neon-fixtures"),
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/neon-fixtures"),
    ];
    let dir = candidates
        .iter()
        .map(Path::new)
        .find(|dir| dir.is_dir())
        .unwrap_or_else(|| panic!("no neon-fixtures directory at {candidates:?}"));
    read(&dir.join(path))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn json_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".json"))
        .collect();
    names.sort();
    names
}

fn parse_ok(bytes: &[u8]) -> ParsedSpec {
    match spec::parse(bytes) {
        Ok(parsed) => parsed,
        Err(errors) => panic!("rejected: {errors:#?}"),
    }
}

fn parse_err(bytes: &[u8]) -> Vec<SpecError> {
    match spec::parse(bytes) {
        Ok(parsed) => panic!("accepted: {parsed:?}"),
        Err(errors) => errors,
    }
}

/// The one door for rule tests: our minimal fixture, changed by `edit`, and the errors it gets
/// (`path: reason`), empty if it parses.
fn check(edit: impl FnOnce(&mut Value)) -> Vec<String> {
    let mut value: Value =
        serde_json::from_slice(&read(&fixtures_dir().join("minimal.json"))).unwrap();
    edit(&mut value);
    match spec::parse(&serde_json::to_vec(&value).unwrap()) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn paths(errors: &[String]) -> Vec<&str> {
    errors
        .iter()
        .map(|error| {
            error
                .split_once(": ")
                .map_or(error.as_str(), |(path, _)| path)
        })
        .collect()
}

fn assert_valid(what: &str, edit: impl FnOnce(&mut Value)) {
    let errors = check(edit);
    assert!(errors.is_empty(), "{what}: {errors:#?}");
}

fn assert_invalid(what: &str, edit: impl FnOnce(&mut Value), path: &str, reason: &str) {
    let errors = check(edit);
    assert_eq!(paths(&errors), vec![path], "{what}: {errors:#?}");
    assert!(errors[0].contains(reason), "{what}: {errors:#?}");
}

fn settings(value: &mut Value) -> &mut Vec<Value> {
    value["cluster"]["settings"].as_array_mut().unwrap()
}

fn roles(value: &mut Value) -> &mut Vec<Value> {
    value["cluster"]["roles"].as_array_mut().unwrap()
}

fn add_setting(value: &mut Value, name: &str, setting: Value) {
    settings(value).push(json!({"name": name, "value": setting, "vartype": "string"}));
}

fn neon_fields(value: &mut Value) {
    value["tenant_id"] = json!("b0554b632bd4d547a63b86c3630317e8");
    value["timeline_id"] = json!("2414a61ffc94e428f14b5758fe308e13");
    value["pageserver_connstring"] = json!("host=127.0.0.1 port=6400");
    value["safekeeper_connstrings"] = json!(["127.0.0.1:5454", "127.0.0.1:5455"]);
}

// ---------------------------------------------------------------------------------------------
// Fixtures

#[test]
fn our_valid_fixtures_parse_to_the_storage_they_are_named_for() {
    let dir = fixtures_dir();
    let expected: &[(&str, &str, u16)] = &[
        ("embedded-default.json", "embedded", 55432),
        ("embedded-opt-in.json", "embedded", 5432),
        // Neon reads any number there.
        ("format-version-2.json", "embedded", 55432),
        ("hostile-names.json", "embedded", 55432),
        ("minimal.json", "embedded", 55432),
        // A copy of Neon's own fixture (libs/compute_api/tests/cluster_spec.json).
        ("neon-cluster-spec.json", "neon", 55432),
        ("neon-connection-info-and-connstring.json", "neon", 55437),
        ("neon-connection-info.json", "neon", 55436),
        ("neon-sharded-connstring.json", "neon", 55438),
        ("neon-typed-fields.json", "embedded", 55432),
        ("neon.json", "neon", 55435),
        ("upstream-primary.json", "upstream", 55434),
        ("upstream-replica.json", "upstream", 55433),
    ];
    let listed: Vec<&str> = expected.iter().map(|(name, _, _)| *name).collect();
    assert_eq!(
        json_files(&dir),
        listed,
        "every valid fixture has a row here"
    );
    for (name, kind, port) in expected {
        let parsed = parse_ok(&read(&dir.join(name)));
        assert_eq!(parsed.storage.kind(), *kind, "{name}");
        assert_eq!(parsed.port(), *port, "{name}");
    }
}

#[test]
fn minimal_fixture_is_what_it_says() {
    let parsed = parse_ok(&read(&fixtures_dir().join("minimal.json")));
    assert_eq!(parsed.storage, Storage::Embedded);
    assert_eq!(parsed.spec.cluster.roles.len(), 1);
    assert_eq!(parsed.spec.cluster.databases.len(), 1);
    assert_eq!(
        parsed.spec.cluster.roles[0].password_verifier().as_deref(),
        Some("md591c76e9f0e4ed85662e7ded2446617b4")
    );
    assert!(
        parsed.ignored_fields.is_empty(),
        "{:?}",
        parsed.ignored_fields
    );
    assert!(parsed.compute_ctl_config.is_none());
}

#[test]
fn embedded_default_listens_on_loopback_only() {
    let parsed = parse_ok(&read(&fixtures_dir().join("embedded-default.json")));
    assert_eq!(
        parsed.spec.cluster.setting("listen_addresses"),
        Some("127.0.0.1")
    );
    assert_eq!(parsed.spec.mode, ComputeMode::Primary);
    assert!(parsed.spec.cluster.roles.len() >= 3);
    assert!(parsed.spec.cluster.databases.len() >= 2);
}

#[test]
fn hostile_names_are_all_valid_and_kept_byte_for_byte() {
    let parsed = parse_ok(&read(&fixtures_dir().join("hostile-names.json")));
    let names: Vec<&str> = parsed
        .spec
        .cluster
        .roles
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    assert!(names.contains(&"\"; DROP ROLE postgres; --"));
    assert!(names.contains(&"back\\slash\\"));
    assert!(names.iter().any(|n| n.len() == 63 && n.is_ascii()));
    assert!(names.iter().any(|n| n.len() == 63 && !n.is_ascii()));
    assert!(names.contains(&"MixedCase") && names.contains(&"mixedcase"));
}

#[test]
fn upstream_fixtures_select_the_upstream_with_their_modes() {
    let parsed = parse_ok(&read(&fixtures_dir().join("upstream-replica.json")));
    match &parsed.storage {
        Storage::Upstream {
            connstring,
            mode,
            slot,
        } => {
            assert!(connstring.starts_with("postgresql://replicator@127.0.0.1:5432/"));
            assert_eq!(*mode, ComputeMode::Replica);
            assert_eq!(slot.as_deref(), Some("compute_ctl_replica"));
        }
        other => panic!("{other:?}"),
    }
    let parsed = parse_ok(&read(&fixtures_dir().join("upstream-primary.json")));
    assert!(matches!(
        parsed.storage,
        Storage::Upstream {
            mode: ComputeMode::Primary,
            slot: None,
            ..
        }
    ));
    assert_eq!(
        parsed.storage.to_string(),
        "upstream primary from 127.0.0.1:5432"
    );
}

#[test]
fn neon_fixture_uses_the_fields() {
    let parsed = parse_ok(&read(&fixtures_dir().join("neon.json")));
    assert_eq!(
        parsed.storage,
        Storage::Neon {
            pageserver_connstring: "postgresql://no_user@127.0.0.1:6400".into(),
            stripe_size: None,
            safekeepers: vec![
                "127.0.0.1:5454".into(),
                "127.0.0.1:5455".into(),
                "127.0.0.1:5456".into()
            ],
            tenant_id: "b0554b632bd4d547a63b86c3630317e8".into(),
            timeline_id: "2414a61ffc94e428f14b5758fe308e13".into(),
            auth_token: Some("not-a-real-token".into()),
            mode: ComputeMode::Primary,
        }
    );
    assert_eq!(
        parsed.ignored_fields,
        vec!["features", "pgbouncer_settings", "suspend_timeout_seconds"]
    );
}

/// Every invalid fixture, and the exact paths of the errors it gets, in order.
const INVALID: &[(&str, &[&str], &str)] = &[
    ("bad-port.json", &["cluster.settings[0].value"], "port must be an integer from 1 to 65535, found \"70000\""),
    ("bad-setting-name.json", &["cluster.settings[3].name"], "invalid setting name \"work-mem\""),
    ("bad-slot-name.json", &["upstream_slot_name"], "lower case letters, digits and underscores"),
    ("bad-static-lsn.json", &["mode.Static"], "invalid LSN \"not-an-lsn\""),
    ("bad-upstream-connstring.json", &["upstream_connstring"], "invalid value for option `port`"),
    ("bogus-audit-log-level.json", &["audit_log_level"], "expected one of Disabled, Log, Base, Hipaa, Extended, Full, found the string \"Bogus\""),
    ("cleartext-password.json", &["cluster.roles[3].encrypted_password"], "not a password verifier: expected a SCRAM-SHA-256 verifier or an md5 hash (32 hex digits); clear-text passwords are not accepted"),
    ("connection-info-missing-shard.json", &["pageserver_connection_info.shards"], "shard 0102 missing from pageserver_connection_info shard map"),
    ("database-option-oid.json", &["cluster.databases[0].options[0].name"], "OID is not allowed"),
    ("database-option-without-value.json", &["cluster.databases[0].options[0].value"], "database option ENCODING needs a value"),
    ("duplicate-database.json", &["cluster.databases[1].name"], "duplicate database \"app\" (also cluster.databases[0])"),
    ("duplicate-key.json", &["cluster.roles[0]"], "duplicate key \"name\" at line 5"),
    ("duplicate-role.json", &["cluster.roles[2].name"], "duplicate role \"alice\" (also cluster.roles[0])"),
    ("duplicate-safekeepers.json", &["safekeeper_connstrings"], "duplicate entry in safekeeper_connstrings: 127.0.0.1:5454!"),
    ("duplicate-setting.json", &["cluster.settings[3].name"], "duplicate setting \"Port\" (also cluster.settings[0])"),
    ("embedded-opt-in-with-neon.json", &["embedded_storage"], "the embedded default cannot be combined with Neon's storage"),
    ("empty-database-owner.json", &["cluster.databases[0].owner"], "database owner is empty"),
    ("empty-role-name.json", &["cluster.roles[0].name"], "role name is empty"),
    ("empty-safekeepers.json", &["safekeeper_connstrings"], "safekeeper_connstrings is empty"),
    ("envelope-null-spec.json", &["spec"], "the envelope holds no spec"),
    ("envelope-role-wrong-type.json", &["spec.cluster.roles[0].name"], "invalid type: integer `42`, expected a string"),
    ("format-version-string.json", &["format_version"], "invalid type: string \"1.0\", expected f32"),
    ("invalid-json.json", &["cluster.roles[0]"], "invalid JSON: trailing comma at line 5 column 24"),
    ("invalid-tenant-id.json", &["tenant_id"], "invalid tenant id \"b0554b632bd4d547a63b86c3630317e\": expected 32 hexadecimal digits"),
    (
        "many-errors.json",
        &[
            "cluster.roles[1].name",
            "cluster.roles[1].encrypted_password",
            "cluster.databases[1].name",
            "cluster.databases[1].owner",
            "cluster.settings[3].name",
            "mode",
        ],
        "role name \"pg_x\" is reserved",
    ),
    ("missing-cluster.json", &["cluster"], "missing required field"),
    ("negative-reconfigure-concurrency.json", &["reconfigure_concurrency"], "expected an integer from 0 to 18446744073709551615 (Neon's type is usize), found -1"),
    ("neon-without-tenant-id.json", &["tenant_id"], "tenant id should be provided"),
    ("no-storage-no-settings.json", &["pageserver_connection_info"], "pageserver connection information should be provided"),
    ("owned-setting.json", &["cluster.settings[3].name"], "setting \"data_directory\" is written by compute_ctl"),
    ("postgresql-conf-nul.json", &["cluster.postgresql_conf"], "NUL"),
    ("rename-without-new-name.json", &["delta_operations[0].new_name"], "rename_role needs new_name"),
    ("replica-without-storage.json", &["mode"], "a Replica needs a primary to follow"),
    ("reserved-role-name.json", &["cluster.roles[1].name"], "role name \"pg_monitor_app\" is reserved"),
    ("role-name-too-long.json", &["cluster.roles[1].name"], "is 64 bytes long: at most 63 are allowed"),
    ("role-name-wrong-type.json", &["cluster.roles[2].name"], "invalid type: sequence, expected a string"),
    ("safekeepers-without-pageserver.json", &["safekeeper_connstrings"], "needs pageserver_connstring"),
    ("setting-null-value.json", &["cluster.settings[3].value"], "a setting needs a value"),
    ("setting-value-newline.json", &["cluster.settings[3].value"], "line break"),
    ("sharded-connstring-without-stripe-size.json", &["pageserver_connstring"], "2 shards but no stripe_size"),
    ("static-with-upstream.json", &["mode"], "a vanilla upstream cannot serve pages as of an old LSN"),
    ("static-without-storage.json", &["mode"], "the embedded default has nothing to follow"),
    ("unknown-db-option.json", &["cluster.databases[0].options[1].name"], "unknown database option \"LC_NUMERIC\""),
    ("unknown-delta-action.json", &["delta_operations[1].action"], "unknown action \"truncate_db\""),
    ("unknown-mode.json", &["mode"], "unknown variant `Secondary`"),
    ("uppercase-md5-hash.json", &["cluster.roles[0].encrypted_password"], "not a password verifier"),
    ("upstream-with-neon-fields.json", &["upstream_connstring"], "cannot be combined with Neon's storage (pageserver_connstring)"),
];

#[test]
fn invalid_fixtures_fail_at_exactly_their_paths() {
    let dir = fixtures_dir().join("invalid");
    let listed: Vec<&str> = INVALID.iter().map(|(name, _, _)| *name).collect();
    assert_eq!(
        json_files(&dir),
        listed,
        "every invalid fixture has a row here"
    );
    for (name, expected_paths, reason) in INVALID {
        let errors = parse_err(&read(&dir.join(name)));
        let got: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(&got, expected_paths, "{name}: {errors:#?}");
        assert!(errors[0].message.contains(reason), "{name}: {errors:#?}");
        for error in &errors {
            let message = &error.message;
            assert!(
                !message.ends_with('.'),
                "{name}: trailing period in {message:?}"
            );
            assert!(
                !message.starts_with(|c: char| c.is_ascii_uppercase()),
                "{name}: {message:?} starts in upper case"
            );
        }
    }
}

#[test]
fn cleartext_passwords_are_never_echoed() {
    let errors = parse_err(&read(
        &fixtures_dir().join("invalid/cleartext-password.json"),
    ));
    let text = format!("{errors:?} {}", errors[0]);
    assert!(!text.contains("correct horse"), "{text}");
}

// ---------------------------------------------------------------------------------------------
// Neon's fixtures

#[test]
fn neon_compute_api_fixture_parses_with_storage_from_the_settings() {
    let parsed = parse_ok(&neon_fixture("libs/compute_api/tests/cluster_spec.json"));
    assert_eq!(
        parsed.storage,
        Storage::Neon {
            pageserver_connstring: "host=127.0.0.1 port=6400".into(),
            stripe_size: None,
            safekeepers: vec![
                "127.0.0.1:6502".into(),
                "127.0.0.1:6503".into(),
                "127.0.0.1:6501".into()
            ],
            tenant_id: "b0554b632bd4d547a63b86c3630317e8".into(),
            timeline_id: "2414a61ffc94e428f14b5758fe308e13".into(),
            auth_token: None,
            mode: ComputeMode::Primary,
        }
    );
    assert_eq!(parsed.port(), 55432);
    assert_eq!(parsed.spec.cluster.roles.len(), 6);
    assert_eq!(parsed.spec.delta_operations.as_ref().map(Vec::len), Some(4));
    assert_eq!(
        parsed.ignored_fields,
        vec![
            "pgbouncer_settings",
            "remote_extensions",
            "suspend_timeout_seconds",
            "timestamp"
        ]
    );
}

#[test]
fn neon_compute_tools_fixture_is_rejected_for_its_duplicate_safekeeper() {
    let bytes = neon_fixture("compute_tools/tests/cluster_spec.json");
    let value: Value = serde_json::from_slice(&bytes).unwrap();
    let index = value["cluster"]["settings"]
        .as_array()
        .unwrap()
        .iter()
        .position(|s| s["name"] == "neon.safekeepers")
        .unwrap();
    let errors = parse_err(&bytes);
    assert_eq!(
        errors,
        vec![SpecError::new(
            format!("cluster.settings[{index}].value"),
            "duplicate entry in safekeeper_connstrings: 127.0.0.1:6502!"
        )]
    );
}

const DOCKER_COMPOSE_CONFIG: &str =
    "docker-compose/compute_wrapper/var/db/postgres/configs/config.json";

#[test]
fn neon_docker_compose_envelope_is_rejected_for_its_placeholders() {
    let errors = parse_err(&neon_fixture(DOCKER_COMPOSE_CONFIG));
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        vec![
            "spec.cluster.settings[18].value: invalid tenant id \"TENANT_ID\": expected 32 hexadecimal digits",
            "spec.cluster.settings[17].value: invalid timeline id \"TIMELINE_ID\": expected 32 hexadecimal digits",
        ]
    );
}

#[test]
fn neon_docker_compose_envelope_is_accepted_with_real_ids() {
    let text = String::from_utf8(neon_fixture(DOCKER_COMPOSE_CONFIG)).unwrap();
    let text = text
        .replace("\"TENANT_ID\"", "\"de200bd42b49cc1814412c7e592dd6e9\"")
        .replace("\"TIMELINE_ID\"", "\"7f2aff2a1042b93a2617f44851638422\"");
    let parsed = parse_ok(text.as_bytes());
    match &parsed.storage {
        Storage::Neon {
            pageserver_connstring,
            safekeepers,
            tenant_id,
            timeline_id,
            mode,
            ..
        } => {
            assert_eq!(pageserver_connstring, "host=pageserver port=6400");
            assert_eq!(
                safekeepers,
                &["safekeeper1:5454", "safekeeper2:5454", "safekeeper3:5454"]
            );
            assert_eq!(tenant_id, "de200bd42b49cc1814412c7e592dd6e9");
            assert_eq!(timeline_id, "7f2aff2a1042b93a2617f44851638422");
            assert_eq!(*mode, ComputeMode::Primary);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(parsed.port(), 55433);
    let config = parsed.compute_ctl_config.as_ref().unwrap();
    assert_eq!(config["jwks"]["keys"][0]["crv"], "Ed25519");
    // The hash and the stored JSON are the bare spec's: the envelope is not part of them.
    let envelope: Value = serde_json::from_str(&text).unwrap();
    let bare = parse_ok(&serde_json::to_vec(&envelope["spec"]).unwrap());
    assert_eq!(bare.hash, parsed.hash);
    assert_eq!(bare.canonical_json, parsed.canonical_json);
    assert!(bare.compute_ctl_config.is_none());
    assert_eq!(
        parsed.ignored_fields,
        vec!["suspend_timeout_seconds", "timestamp"]
    );
}

// ---------------------------------------------------------------------------------------------
// Hashing

#[test]
fn key_order_and_whitespace_do_not_change_the_hash() {
    let a = br#"{"format_version": 1.0, "cluster": {"roles": [{"name": "a", "encrypted_password": null}], "settings": []}, "embedded_storage": true, "x": {"b": 1, "a": 2}}"#;
    let b = b"{\"x\":{\"a\":2,\"b\":1},\n\t\"cluster\" : {\"settings\":[],\"roles\":[{\"encrypted_password\":null,\"name\":\"a\"}]},\"embedded_storage\":true,\"format_version\":1.0}\n";
    let (a, b) = (parse_ok(a), parse_ok(b));
    assert_eq!(a.hash, b.hash);
    assert_eq!(a.canonical_json, b.canonical_json);
    assert_eq!(
        String::from_utf8(a.canonical_json.clone()).unwrap(),
        r#"{"cluster":{"roles":[{"encrypted_password":null,"name":"a"}],"settings":[]},"embedded_storage":true,"format_version":1.0,"x":{"a":2,"b":1}}"#
    );
}

/// A change to a spec's JSON.
type Edit = Box<dyn Fn(&mut Value)>;

#[test]
fn any_changed_value_changes_the_hash() {
    let base = parse_ok(&read(&fixtures_dir().join("minimal.json")));
    let edits: Vec<Edit> = vec![
        Box::new(|v| v["cluster"]["settings"][2]["value"] = json!("21")),
        Box::new(|v| v["cluster"]["roles"][0]["encrypted_password"] = json!(null)),
        Box::new(|v| v["unknown_field"] = json!(1)),
        Box::new(|v| v["delta_operations"] = json!(null)),
        Box::new(|v| v["cluster"]["settings"].as_array_mut().unwrap().reverse()),
    ];
    for (i, edit) in edits.iter().enumerate() {
        let mut value: Value = serde_json::from_slice(&base.canonical_json).unwrap();
        edit(&mut value);
        let changed = parse_ok(&serde_json::to_vec(&value).unwrap());
        assert_ne!(changed.hash, base.hash, "edit {i}");
    }
}

#[test]
fn hash_is_the_sha256_of_the_canonical_json() {
    for name in json_files(&fixtures_dir()) {
        let parsed = parse_ok(&read(&fixtures_dir().join(&name)));
        let digest = Sha256::digest(&parsed.canonical_json);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(parsed.hash, format!("sha256:{hex}"), "{name}");
        assert_eq!(parsed.hash_hex(), hex, "{name}");
        assert!(!parsed.canonical_json.ends_with(b"\n"), "{name}");
        // The canonical JSON is the spec as received, and parses to the same hash again.
        let original: Value = serde_json::from_slice(&read(&fixtures_dir().join(&name))).unwrap();
        let canonical: Value = serde_json::from_slice(&parsed.canonical_json).unwrap();
        assert_eq!(canonical, original, "{name}");
        assert_eq!(parse_ok(&parsed.canonical_json).hash, parsed.hash, "{name}");
    }
}

// ---------------------------------------------------------------------------------------------
// Envelope, ignored fields, Debug

#[test]
fn envelope_and_bare_spec_are_the_same_spec() {
    let bare = read(&fixtures_dir().join("minimal.json"));
    let bare_value: Value = serde_json::from_slice(&bare).unwrap();
    let envelope = json!({"spec": bare_value, "compute_ctl_config": {"jwks": {"keys": []}}});
    let from_envelope = parse_ok(&serde_json::to_vec(&envelope).unwrap());
    let from_bare = parse_ok(&bare);
    assert_eq!(from_envelope.hash, from_bare.hash);
    assert_eq!(from_envelope.spec, from_bare.spec);
    assert_eq!(
        from_envelope.compute_ctl_config,
        Some(json!({"jwks": {"keys": []}}))
    );
    let without_config = json!({"spec": bare_value});
    assert!(parse_ok(&serde_json::to_vec(&without_config).unwrap())
        .compute_ctl_config
        .is_none());
}

#[test]
fn envelope_errors_point_into_the_envelope() {
    let mut value: Value =
        serde_json::from_slice(&read(&fixtures_dir().join("minimal.json"))).unwrap();
    value["cluster"]["roles"][0]["name"] = json!("pg_bad");
    value["mode"] = json!("Replica");
    let errors = parse_err(&serde_json::to_vec(&json!({"spec": value})).unwrap());
    let got: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(got, vec!["spec.cluster.roles[0].name", "spec.mode"]);
}

#[test]
fn ignored_fields_list_unknown_fields_at_every_depth() {
    let parsed = parse_ok(
        br#"{
        "format_version": 1.0,
        "features": ["activity_monitor_experimental"],
        "remote_extensions": {"public_extensions": [], "library_index": {}, "extension_data": {}},
        "suspend_timeout_seconds": -1,
        "storage_auth_token": "unused-without-neon",
        "cluster": {
            "roles": [{"name": "a", "encrypted_password": null, "new_in_neon": true}],
            "databases": [{"name": "d", "owner": "a", "invalid": false}],
            "settings": [{"name": "work_mem", "value": "4MB", "vartype": "string", "hint": 1}]
        }
    }"#,
    );
    assert_eq!(
        parsed.ignored_fields,
        vec![
            "cluster.databases[0].invalid",
            "cluster.roles[0].new_in_neon",
            "cluster.settings[0].hint",
            "features",
            "remote_extensions",
            "storage_auth_token",
            "suspend_timeout_seconds",
        ]
    );
}

#[test]
fn debug_output_never_shows_secrets() {
    let parsed = parse_ok(&read(&fixtures_dir().join("embedded-default.json")));
    let shown = format!(
        "{parsed:?} {:?} {:?}",
        parsed.spec, parsed.spec.cluster.roles
    );
    assert!(!shown.contains("SCRAM-SHA-256$4096"), "{shown}");
    assert!(
        !shown.contains("0b9789f4aeea4f6c7edf16192882e9aa"),
        "{shown}"
    );
    assert!(
        shown.contains("<redacted scram-sha-256 verifier>"),
        "{shown}"
    );
    let parsed = parse_ok(&read(&fixtures_dir().join("neon.json")));
    let shown = format!("{parsed:?} {}", parsed.storage);
    assert!(!shown.contains("not-a-real-token"), "{shown}");
    let mut value: Value =
        serde_json::from_slice(&read(&fixtures_dir().join("upstream-primary.json"))).unwrap();
    value["upstream_connstring"] = json!("host=db user=rep password=pw-secret");
    let parsed = parse_ok(&serde_json::to_vec(&value).unwrap());
    let shown = format!("{parsed:?} {}", parsed.storage);
    assert!(!shown.contains("pw-secret"), "{shown}");
}

// ---------------------------------------------------------------------------------------------
// Rules, one by one

/// Neon's compute_ctl types `format_version` as `f32` and never reads it
/// (libs/compute_api/src/spec.rs): any number is taken, anything else is refused.
#[test]
fn format_version_is_any_number_as_neon_reads_it() {
    for version in [json!(1), json!(1.0), json!(1.1), json!(2.0), json!(0)] {
        assert_valid(&version.to_string(), |v| {
            v["format_version"] = version.clone()
        });
    }
    assert_invalid(
        "null",
        |v| v["format_version"] = json!(null),
        "format_version",
        "invalid type: null, expected f32",
    );
    assert_invalid(
        "string",
        |v| v["format_version"] = json!("1.0"),
        "format_version",
        "invalid type: string \"1.0\", expected f32",
    );
    assert_invalid(
        "missing",
        |v| {
            v.as_object_mut().unwrap().remove("format_version");
        },
        "format_version",
        "missing required field",
    );
}

#[test]
fn unknown_fields_and_missing_optional_fields_are_tolerated() {
    assert_valid("unknown everywhere", |v| {
        v["brand_new"] = json!({"x": [1, 2]});
        v["cluster"]["brand_new"] = json!(null);
        v["cluster"]["roles"][0]["brand_new"] = json!("x");
    });
    assert_valid(
        "bare minimum, asking for the embedded default",
        |v| *v = json!({"format_version": 1.0, "cluster": {}, "embedded_storage": true}),
    );
    assert_valid("nulls where Neon sends them", |v| {
        v["embedded_storage"] = json!(true);
        v["delta_operations"] = json!(null);
        v["cluster"]["settings"] = json!(null);
        v["cluster"]["roles"][0]["options"] = json!(null);
        v["suspend_timeout_seconds"] = json!(null);
    });
}

#[test]
fn role_names() {
    let name_of = |name: Value| {
        move |v: &mut Value| roles(v).push(json!({"name": name, "encrypted_password": null}))
    };
    assert_valid("63 bytes", name_of(json!("r".repeat(63))));
    assert_valid(
        "63 bytes of unicode",
        name_of(json!(format!("{}x", "é".repeat(31)))),
    );
    assert_valid(
        "case differs from an existing role",
        name_of(json!("ALICE")),
    );
    assert_valid("PG_ in upper case", name_of(json!("PG_admin")));
    assert_invalid(
        "64 bytes",
        name_of(json!("r".repeat(64))),
        "cluster.roles[1].name",
        "64 bytes long",
    );
    assert_invalid(
        "empty",
        name_of(json!("")),
        "cluster.roles[1].name",
        "role name is empty",
    );
    assert_invalid(
        "NUL",
        name_of(json!("a\u{0}b")),
        "cluster.roles[1].name",
        "NUL",
    );
    assert_invalid(
        "pg_",
        name_of(json!("pg_read_all_data")),
        "cluster.roles[1].name",
        "reserved",
    );
    assert_invalid(
        "public",
        name_of(json!("public")),
        "cluster.roles[1].name",
        "reserved by Postgres",
    );
    assert_invalid(
        "none",
        name_of(json!("none")),
        "cluster.roles[1].name",
        "reserved by Postgres",
    );
    assert_invalid(
        "duplicate",
        name_of(json!("alice")),
        "cluster.roles[1].name",
        "(also cluster.roles[0])",
    );
    assert_invalid(
        "number",
        name_of(json!(7)),
        "cluster.roles[1].name",
        "invalid type: integer `7`, expected a string",
    );
}

#[test]
fn role_passwords() {
    let password =
        |p: Value| move |v: &mut Value| v["cluster"]["roles"][0]["encrypted_password"] = p;
    let scram = "SCRAM-SHA-256$4096:yptLJ6xHSJgH2zJSCsOY5g==$odxK9K1XrdrGz7XtCsw7pJux5c7HggWdr7Qjt5ciiu4=:9OdZ5QWzviTeMl0DWH5IR130q3/TTnSeQk2at8/vRG0=";
    assert_valid("scram", password(json!(scram)));
    assert_valid(
        "neon md5",
        password(json!("91c76e9f0e4ed85662e7ded2446617b4")),
    );
    assert_valid(
        "prefixed md5",
        password(json!("md591c76e9f0e4ed85662e7ded2446617b4")),
    );
    assert_valid("null", password(json!(null)));
    let path = "cluster.roles[0].encrypted_password";
    for bad in [
        "hunter2",
        "",
        "SCRAM-SHA-256$hunter2",
        "SCRAM-SHA-256$4096:yptLJ6xHSJgH2zJSCsOY5g==$short:9OdZ5QWzviTeMl0DWH5IR130q3/TTnSeQk2at8/vRG0=",
        "md5hunter2",
        "91c76e9f0e4ed85662e7ded2446617b",
    ] {
        let errors = check(password(json!(bad)));
        assert_eq!(paths(&errors), vec![path], "{bad}: {errors:?}");
        assert!(errors[0].contains("clear-text passwords are not accepted"), "{errors:?}");
        if !bad.is_empty() {
            assert!(!errors[0].contains(bad), "{bad} echoed: {errors:?}");
        }
    }
    let errors = check(password(json!(8675309)));
    assert_eq!(paths(&errors), vec![path]);
    assert!(!errors[0].contains("8675309"), "{errors:?}");
}

#[test]
fn databases() {
    let database =
        |d: Value| move |v: &mut Value| v["cluster"]["databases"].as_array_mut().unwrap().push(d);
    assert_valid(
        "63 bytes",
        database(json!({"name": "d".repeat(63), "owner": "alice"})),
    );
    assert_valid(
        "owner not declared (it may exist already)",
        database(json!({"name": "x", "owner": "cloud_admin"})),
    );
    assert_invalid(
        "64 bytes",
        database(json!({"name": "d".repeat(64), "owner": "alice"})),
        "cluster.databases[1].name",
        "64 bytes long",
    );
    assert_invalid(
        "empty",
        database(json!({"name": "", "owner": "alice"})),
        "cluster.databases[1].name",
        "database name is empty",
    );
    assert_invalid(
        "NUL",
        database(json!({"name": "a\u{0}", "owner": "alice"})),
        "cluster.databases[1].name",
        "NUL",
    );
    assert_invalid(
        "duplicate",
        database(json!({"name": "app", "owner": "alice"})),
        "cluster.databases[1].name",
        "duplicate database",
    );
    assert_invalid(
        "empty owner",
        database(json!({"name": "x", "owner": ""})),
        "cluster.databases[1].owner",
        "database owner is empty",
    );
    assert_invalid(
        "no owner",
        database(json!({"name": "x"})),
        "cluster.databases[1].owner",
        "missing required field",
    );
}

#[test]
fn database_options() {
    let options = |o: Value| move |v: &mut Value| v["cluster"]["databases"][0]["options"] = o;
    let all: Vec<Value> = [
        ("TEMPLATE", "template0"),
        ("ENCODING", "UTF8"),
        ("LOCALE", "C"),
        ("LC_COLLATE", "C"),
        ("LC_CTYPE", "C"),
        ("ICU_LOCALE", "und"),
        ("LOCALE_PROVIDER", "libc"),
        ("COLLATION_VERSION", "1"),
        ("CONNECTION_LIMIT", "5"),
        ("IS_TEMPLATE", "false"),
        ("ALLOW_CONNECTIONS", "true"),
        ("STRATEGY", "wal_log"),
        ("TABLESPACE", "pg_default"),
    ]
    .iter()
    .map(|(name, value)| json!({"name": name, "value": value}))
    .collect();
    assert_valid("every allowed option", options(Value::Array(all)));
    assert_valid(
        "lower case and CONNECTION LIMIT with a space",
        options(
            json!([{"name": "template", "value": "template0"}, {"name": "Connection Limit", "value": "3"}]),
        ),
    );
    let first = "cluster.databases[0].options[0]";
    assert_invalid(
        "OID",
        options(json!([{"name": "OID", "value": "20000"}])),
        &format!("{first}.name"),
        "OID is not allowed",
    );
    assert_invalid(
        "unknown",
        options(json!([{"name": "OWNER", "value": "x"}])),
        &format!("{first}.name"),
        "unknown database option \"OWNER\"",
    );
    assert_invalid(
        "null value",
        options(json!([{"name": "LOCALE", "value": null}])),
        &format!("{first}.value"),
        "needs a value",
    );
    assert_invalid(
        "empty value",
        options(json!([{"name": "LOCALE", "value": ""}])),
        &format!("{first}.value"),
        "needs a value",
    );
    assert_invalid(
        "no value",
        options(json!([{"name": "LOCALE"}])),
        &format!("{first}.value"),
        "needs a value",
    );
    assert_invalid(
        "duplicate",
        options(json!([{"name": "LOCALE", "value": "C"}, {"name": "locale", "value": "C"}])),
        "cluster.databases[0].options[1].name",
        "duplicate database option LOCALE (also cluster.databases[0].options[0])",
    );
}

#[test]
fn setting_names() {
    for good in [
        "work_mem",
        "my_ext.setting_1",
        "_x",
        "A.B",
        "Application_Name",
    ] {
        assert_valid(good, |v| add_setting(v, good, json!("1")));
    }
    for bad in ["work-mem", "a.b.c", "a$b", "1x", "", "a b", ".x", "x.", "é"] {
        assert_invalid(
            bad,
            |v| add_setting(v, bad, json!("1")),
            "cluster.settings[3].name",
            "invalid setting name",
        );
    }
    for owned in [
        "data_directory",
        "config_file",
        "hba_file",
        "ident_file",
        "compute_ctl.spec_hash",
        "HBA_File",
    ] {
        assert_invalid(
            owned,
            |v| add_setting(v, owned, json!("/x")),
            "cluster.settings[3].name",
            "written by compute_ctl",
        );
    }
}

#[test]
fn duplicate_settings_name_both_indices() {
    assert_invalid(
        "same name",
        |v| add_setting(v, "max_connections", json!("30")),
        "cluster.settings[3].name",
        "duplicate setting \"max_connections\" (also cluster.settings[2])",
    );
    assert_invalid(
        "case differs",
        |v| add_setting(v, "LISTEN_ADDRESSES", json!("*")),
        "cluster.settings[3].name",
        "(also cluster.settings[1])",
    );
}

#[test]
fn setting_values() {
    assert_valid("quotes and backslashes", |v| {
        add_setting(v, "application_name", json!("it's \"x\" \\ y $$"))
    });
    assert_valid("empty string", |v| add_setting(v, "search_path", json!("")));
    let path = "cluster.settings[3].value";
    assert_invalid(
        "null",
        |v| add_setting(v, "work_mem", json!(null)),
        path,
        "a setting needs a value",
    );
    assert_invalid(
        "NUL",
        |v| add_setting(v, "work_mem", json!("4\u{0}MB")),
        path,
        "NUL",
    );
    assert_invalid(
        "LF",
        |v| add_setting(v, "work_mem", json!("4MB\nfsync = off")),
        path,
        "line break",
    );
    assert_invalid(
        "CR",
        |v| add_setting(v, "work_mem", json!("4MB\r")),
        path,
        "line break",
    );
    assert_invalid(
        "number",
        |v| add_setting(v, "work_mem", json!(4096)),
        path,
        "invalid type: integer `4096`, expected a string",
    );
    assert_invalid(
        "NUL in postgresql_conf",
        |v| v["cluster"]["postgresql_conf"] = json!("a\u{0}"),
        "cluster.postgresql_conf",
        "NUL",
    );
    assert_valid("postgresql_conf with lines", |v| {
        v["cluster"]["postgresql_conf"] = json!("work_mem = '4MB'\n# comment\n")
    });
}

#[test]
fn port_setting() {
    let port =
        |p: &'static str| move |v: &mut Value| v["cluster"]["settings"][0]["value"] = json!(p);
    for good in ["1", "5432", "65535", " 6000 "] {
        assert_valid(good, port(good));
    }
    for bad in ["0", "65536", "-1", "abc", "", "5432.0"] {
        assert_invalid(
            bad,
            port(bad),
            "cluster.settings[0].value",
            "port must be an integer from 1 to 65535",
        );
    }
    let mut value: Value =
        serde_json::from_slice(&read(&fixtures_dir().join("minimal.json"))).unwrap();
    value["cluster"]["settings"][0]["name"] = json!("PORT");
    value["cluster"]["settings"][0]["value"] = json!("6001");
    assert_eq!(parse_ok(&serde_json::to_vec(&value).unwrap()).port(), 6001);
    settings(&mut value).remove(0);
    assert_eq!(parse_ok(&serde_json::to_vec(&value).unwrap()).port(), 5432);
}

#[test]
fn delta_operations() {
    let ops = |o: Value| move |v: &mut Value| v["delta_operations"] = o;
    assert_valid(
        "all four actions",
        ops(json!([
            {"action": "delete_db", "name": "old"},
            {"action": "rename_db", "name": "a", "new_name": "b"},
            {"action": "delete_role", "name": "gone"},
            {"action": "rename_role", "name": "x", "new_name": "y"}
        ])),
    );
    assert_invalid(
        "unknown",
        ops(json!([{"action": "drop_db", "name": "x"}])),
        "delta_operations[0].action",
        "unknown action \"drop_db\"",
    );
    assert_invalid(
        "rename_db without new_name",
        ops(json!([{"action": "rename_db", "name": "x"}])),
        "delta_operations[0].new_name",
        "needs new_name",
    );
    assert_invalid(
        "empty new_name",
        ops(json!([{"action": "rename_role", "name": "x", "new_name": ""}])),
        "delta_operations[0].new_name",
        "role name is empty",
    );
    assert_invalid(
        "long new_name",
        ops(json!([{"action": "rename_role", "name": "x", "new_name": "n".repeat(64)}])),
        "delta_operations[0].new_name",
        "64 bytes long",
    );
    assert_invalid(
        "empty name",
        ops(json!([{"action": "delete_db", "name": ""}])),
        "delta_operations[0].name",
        "database name is empty",
    );
    assert_invalid(
        "no action",
        ops(json!([{"name": "x"}])),
        "delta_operations[0].action",
        "missing required field",
    );
}

// ---------------------------------------------------------------------------------------------
// Storage selection

#[test]
fn neon_storage_from_fields() {
    let errors = check(neon_fields);
    assert!(errors.is_empty(), "{errors:?}");
    let mut value: Value =
        serde_json::from_slice(&read(&fixtures_dir().join("minimal.json"))).unwrap();
    neon_fields(&mut value);
    value["tenant_id"] = json!("B0554B632BD4D547A63B86C3630317E8");
    let parsed = parse_ok(&serde_json::to_vec(&value).unwrap());
    match parsed.storage {
        Storage::Neon { tenant_id, .. } => {
            assert_eq!(tenant_id, "b0554b632bd4d547a63b86c3630317e8")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn neon_storage_from_settings_and_their_errors_name_the_setting() {
    let from_settings = |v: &mut Value| {
        add_setting(
            v,
            "neon.pageserver_connstring",
            json!("host=127.0.0.1 port=6400"),
        );
        add_setting(
            v,
            "neon.tenant_id",
            json!("b0554b632bd4d547a63b86c3630317e8"),
        );
        add_setting(
            v,
            "neon.timeline_id",
            json!("2414a61ffc94e428f14b5758fe308e13"),
        );
        add_setting(v, "neon.safekeepers", json!("sk1:5454, sk2:5454"));
    };
    assert_valid("all from settings", from_settings);
    assert_invalid(
        "bad tenant in the setting",
        |v| {
            from_settings(v);
            v["cluster"]["settings"][4]["value"] = json!("nope");
        },
        "cluster.settings[4].value",
        "invalid tenant id \"nope\": expected 32 hexadecimal digits",
    );
    assert_invalid(
        "the field wins over the setting",
        |v| {
            from_settings(v);
            v["cluster"]["settings"][4]["value"] = json!("nope");
            v["tenant_id"] = json!("zz");
        },
        "tenant_id",
        "invalid tenant id \"zz\"",
    );
    assert_invalid(
        "duplicate safekeepers in the setting",
        |v| {
            from_settings(v);
            v["cluster"]["settings"][6]["value"] = json!("sk1:5454,sk2:5454,sk1:5454");
        },
        "cluster.settings[6].value",
        "duplicate entry in safekeeper_connstrings: sk1:5454!",
    );
    assert_invalid(
        "empty safekeepers setting",
        |v| {
            from_settings(v);
            v["cluster"]["settings"][6]["value"] = json!("");
        },
        "cluster.settings[6].value",
        "safekeeper_connstrings is empty",
    );
    assert_invalid(
        "no safekeepers at all",
        |v| {
            from_settings(v);
            settings(v).pop();
        },
        "safekeeper_connstrings",
        "safekeeper_connstrings is empty",
    );
    assert_invalid(
        "no timeline",
        |v| {
            from_settings(v);
            settings(v).remove(5);
        },
        "timeline_id",
        "timeline id should be provided",
    );
    // The field, when not empty, is used instead of the setting (Neon's order).
    assert_valid("field over setting", |v| {
        from_settings(v);
        v["cluster"]["settings"][6]["value"] = json!("dup:1,dup:1");
        v["safekeeper_connstrings"] = json!(["sk1:5454"]);
    });
}

/// The storage a parsed fixture selects, as `(pageserver_connstring, stripe_size)`.
fn neon_pageservers(name: &str) -> (String, Option<u32>, Vec<String>) {
    let parsed = parse_ok(&read(&fixtures_dir().join(name)));
    match parsed.storage {
        Storage::Neon {
            pageserver_connstring,
            stripe_size,
            ..
        } => (pageserver_connstring, stripe_size, parsed.ignored_fields),
        other => panic!("{name}: {other:?}"),
    }
}

/// Neon's `ParsedSpec::try_from` (compute_tools/src/compute.rs) reads
/// `pageserver_connection_info` first; `write_postgres_conf` (compute_tools/src/config.rs)
/// joins its shards' libpq URLs, in shard order, into `neon.pageserver_connstring`.
#[test]
fn pageserver_connection_info_names_the_pageservers_in_shard_order() {
    let (connstring, stripe_size, _) = neon_pageservers("neon-connection-info.json");
    assert_eq!(
        connstring,
        "postgresql://no_user@127.0.0.1:6400,postgresql://no_user@127.0.0.1:6401"
    );
    assert_eq!(stripe_size, Some(2048));

    // Both forms: Neon takes the connection info and reads no pageserver_connstring.
    let (connstring, stripe_size, ignored) =
        neon_pageservers("neon-connection-info-and-connstring.json");
    assert_eq!(connstring, "postgresql://no_user@127.0.0.1:6400");
    assert_eq!(stripe_size, None);
    assert!(
        ignored.contains(&"pageserver_connstring".to_string()),
        "{ignored:?}"
    );

    let (connstring, stripe_size, ignored) = neon_pageservers("neon-sharded-connstring.json");
    assert_eq!(connstring.split(',').count(), 2);
    assert_eq!(stripe_size, Some(2048));
    assert!(
        !ignored.contains(&"shard_stripe_size".to_string()),
        "{ignored:?}"
    );

    let (_, stripe_size, ignored) = neon_pageservers("neon.json");
    assert_eq!(stripe_size, None);
    assert!(
        !ignored.contains(&"shard_stripe_size".to_string()),
        "{ignored:?}"
    );
}

#[test]
fn pageserver_connection_info_rules() {
    let info = |info: Value| {
        move |v: &mut Value| {
            neon_fields(v);
            v.as_object_mut().unwrap().remove("pageserver_connstring");
            v["pageserver_connection_info"] = info;
        }
    };
    let unsharded = |url: Value| json!({"shard_count": 0, "shards": {"0000": {"pageservers": [{"libpq_url": url}]}}});
    assert_valid(
        "unsharded",
        info(unsharded(json!("host=127.0.0.1 port=6400"))),
    );
    assert_invalid(
        "no libpq_url",
        info(unsharded(json!(null))),
        r#"pageserver_connection_info.shards["0000"].pageservers[0].libpq_url"#,
        "no libpq_url for shard 0000",
    );
    assert_invalid(
        "a comma in a shard's url",
        info(unsharded(json!("host=a,host=b"))),
        r#"pageserver_connection_info.shards["0000"].pageservers[0].libpq_url"#,
        "cannot contain a comma",
    );
    assert_invalid(
        "a shard without pageservers",
        info(json!({"shard_count": 0, "shards": {"0000": {"pageservers": []}}})),
        r#"pageserver_connection_info.shards["0000"].pageservers"#,
        "shard 0000 has no pageserver",
    );
    assert_invalid(
        "sharded without a stripe size",
        info(
            json!({"shard_count": 1, "shards": {"0001": {"pageservers": [{"libpq_url": "host=a"}]}}}),
        ),
        "pageserver_connection_info.stripe_size",
        "shard_count is 1 but no stripe_size",
    );
    let errors = check(info(
        json!({"shard_count": 0, "shards": {"zz": {"pageservers": []}}}),
    ));
    assert_eq!(
        paths(&errors),
        vec![
            "pageserver_connection_info.shards.zz",
            "pageserver_connection_info.shards"
        ],
        "{errors:#?}"
    );
    assert_invalid(
        "a shard count beyond Neon's u8",
        info(json!({"shard_count": 256, "shards": {}})),
        "pageserver_connection_info.shard_count",
        "invalid value: integer `256`, expected u8",
    );
    assert_invalid(
        "beside an upstream",
        |v| {
            info(unsharded(json!("host=a")))(v);
            for name in ["tenant_id", "timeline_id", "safekeeper_connstrings"] {
                v.as_object_mut().unwrap().remove(name);
            }
            v["upstream_connstring"] = json!("postgresql://replicator@127.0.0.1:5432/postgres");
        },
        "upstream_connstring",
        "cannot be combined with Neon's storage (pageserver_connection_info)",
    );
    // A password in a libpq URL is a secret like any connection string's.
    let mut value: Value =
        serde_json::from_slice(&read(&fixtures_dir().join("minimal.json"))).unwrap();
    info(unsharded(json!("postgresql://u:pw-secret@127.0.0.1:6400")))(&mut value);
    let parsed = parse_ok(&serde_json::to_vec(&value).unwrap());
    let shown = format!("{parsed:?}");
    assert!(!shown.contains("pw-secret"), "{shown}");
}

/// Neon's `PageserverConnectionInfo::from_connstr` (libs/compute_api/src/spec.rs): more than
/// one comma-separated pageserver needs a stripe size; from the settings, `neon.stripe_size`.
#[test]
fn sharded_connstrings_need_a_stripe_size() {
    let sharded = |v: &mut Value| {
        neon_fields(v);
        v["pageserver_connstring"] = json!("host=127.0.0.1 port=6400,host=127.0.0.1 port=6401");
    };
    assert_invalid(
        "field without shard_stripe_size",
        sharded,
        "pageserver_connstring",
        "2 shards but no stripe_size: a comma-separated list of pageservers names the shards of a \
         sharded tenant, which needs shard_stripe_size",
    );
    assert_valid("field with shard_stripe_size", |v| {
        sharded(v);
        v["shard_stripe_size"] = json!(2048);
    });
    assert_invalid(
        "neon.stripe_size does not serve the field",
        |v| {
            sharded(v);
            add_setting(v, "neon.stripe_size", json!("2048"));
        },
        "pageserver_connstring",
        "2 shards but no stripe_size",
    );
    assert_invalid(
        "a stripe size beyond u32",
        |v| {
            sharded(v);
            v["shard_stripe_size"] = json!(-1);
        },
        "shard_stripe_size",
        "invalid value: integer `-1`, expected u32",
    );
    let from_settings = |v: &mut Value| {
        neon_fields(v);
        v.as_object_mut().unwrap().remove("pageserver_connstring");
        add_setting(
            v,
            "neon.pageserver_connstring",
            json!("host=a,host=b,host=c"),
        );
    };
    assert_invalid(
        "setting without neon.stripe_size",
        from_settings,
        "cluster.settings[3].value",
        "3 shards but no stripe_size: a comma-separated list of pageservers names the shards of \
         a sharded tenant, which needs the neon.stripe_size setting",
    );
    assert_valid("setting with neon.stripe_size", |v| {
        from_settings(v);
        add_setting(v, "neon.stripe_size", json!("2048"));
    });
    assert_invalid(
        "neon.stripe_size that is not a number",
        |v| {
            from_settings(v);
            add_setting(v, "neon.stripe_size", json!("big"));
        },
        "cluster.settings[4].value",
        "invalid neon.stripe_size \"big\"",
    );
    assert_valid("one pageserver needs no stripe size", neon_fields);
}

/// Neon refuses a spec without a pageserver (`ParsedSpec::try_from`,
/// compute_tools/src/compute.rs); ours runs the embedded default for a spec that asks for it,
/// or that gives settings of its own.
#[test]
fn the_embedded_default_is_asked_for_or_implied_by_settings() {
    let bare = |v: &mut Value| *v = json!({"format_version": 1.0, "cluster": {"roles": []}});
    assert_invalid(
        "nothing at all",
        bare,
        "pageserver_connection_info",
        "pageserver connection information should be provided",
    );
    assert_invalid(
        "an empty settings list says nothing either",
        |v| {
            bare(v);
            v["cluster"]["settings"] = json!([]);
            v["cluster"]["postgresql_conf"] = json!("\n");
        },
        "pageserver_connection_info",
        "\"embedded_storage\": true",
    );
    assert_valid("asked for", |v| {
        bare(v);
        v["embedded_storage"] = json!(true);
    });
    assert_valid("settings of its own", |_| {});
    assert_valid("a postgresql_conf of its own", |v| {
        bare(v);
        v["cluster"]["postgresql_conf"] = json!("work_mem = '4MB'\n");
    });
    assert_invalid(
        "false is not asking",
        |v| {
            bare(v);
            v["embedded_storage"] = json!(false);
        },
        "pageserver_connection_info",
        "pageserver connection information should be provided",
    );
    assert_invalid(
        "beside an upstream",
        |v| {
            v["upstream_connstring"] = json!("postgresql://replicator@127.0.0.1:5432/postgres");
            v["embedded_storage"] = json!(true);
        },
        "embedded_storage",
        "the embedded default cannot be combined with an upstream server",
    );
}

/// Neon's typed fields that compute_ctl does not act on: accepted with Neon's values (and
/// listed as ignored), refused with values Neon's types refuse.
#[test]
fn neon_typed_fields_are_checked_and_still_ignored() {
    let parsed = parse_ok(&read(&fixtures_dir().join("neon-typed-fields.json")));
    for name in [
        "audit_log_level",
        "features",
        "reconfigure_concurrency",
        "remote_extensions",
    ] {
        assert!(
            parsed.ignored_fields.contains(&name.to_string()),
            "{name}: {:?}",
            parsed.ignored_fields
        );
    }
    let bad = [
        (
            "audit_log_level",
            json!("log"),
            "expected one of Disabled, Log, Base",
        ),
        ("reconfigure_concurrency", json!(-1), "Neon's type is usize"),
        ("offload_lfc_interval_seconds", json!(0), "NonZeroU64"),
        ("logs_export_host", json!("collector"), "expected host:port"),
        (
            "safekeepers_generation",
            json!(4294967296_u64),
            "Neon's type is u32",
        ),
        ("autoprewarm", json!("yes"), "expected true or false"),
        ("project_id", json!(7), "expected a string, found 7"),
        (
            "features",
            json!("tls_experimental"),
            "expected an array of feature names",
        ),
        (
            "pgbouncer_settings",
            json!([]),
            "expected an object, found an array",
        ),
    ];
    for (name, value, reason) in bad {
        assert_invalid(name, |v| v[name] = value.clone(), name, reason);
    }
    assert_invalid(
        "a feature that is not a name",
        |v| v["features"] = json!(["tls_experimental", 1]),
        "features[1]",
        "expected a feature name",
    );
    // A feature unknown to Neon is its `UnknownFeature`, not an error.
    assert_valid("unknown feature", |v| {
        v["features"] = json!(["from_the_future"])
    });
    assert_valid("null is absent", |v| v["audit_log_level"] = json!(null));
    let errors = check(|v| v["endpoint_storage_token"] = json!(271828));
    assert_eq!(paths(&errors), vec!["endpoint_storage_token"]);
    assert!(!errors[0].contains("271828"), "{errors:?}");
}

#[test]
fn replicas_and_static_computes_on_neon_need_no_safekeepers() {
    for mode in [json!("Replica"), json!({"Static": "0/16B3748"})] {
        let parsed_mode = mode.clone();
        assert_valid("no safekeepers", |v| {
            neon_fields(v);
            v["safekeeper_connstrings"] = json!([]);
            v["mode"] = parsed_mode;
        });
        assert_valid("duplicates do not matter", |v| {
            neon_fields(v);
            v["safekeeper_connstrings"] = json!(["a:1", "a:1"]);
            v["mode"] = mode;
        });
    }
}

#[test]
fn upstream_storage() {
    for connstring in [
        "postgresql://replicator@db.example:5433/postgres",
        "postgres://replicator:secret@10.0.0.1/postgres?sslmode=require",
        "host=127.0.0.1 port=5432 user=replicator dbname=postgres",
        "host=/var/run/postgresql user=replicator",
    ] {
        assert_valid(connstring, |v| {
            v["upstream_connstring"] = json!(connstring);
            v["mode"] = json!("Replica");
        });
    }
    assert_invalid(
        "empty",
        |v| v["upstream_connstring"] = json!(""),
        "upstream_connstring",
        "empty",
    );
    assert_invalid(
        "not a connstring",
        |v| v["upstream_connstring"] = json!("just some words"),
        "upstream_connstring",
        "not a PostgreSQL connection string",
    );
    assert_invalid(
        "with a Neon setting",
        |v| {
            v["upstream_connstring"] = json!("host=db");
            add_setting(v, "neon.pageserver_connstring", json!("host=ps"));
        },
        "upstream_connstring",
        "the neon.pageserver_connstring setting",
    );
    let errors = check(|v| {
        v["upstream_connstring"] = json!("host=db");
        neon_fields(v);
    });
    assert_eq!(paths(&errors), vec!["upstream_connstring"]);
    assert!(
        errors[0]
            .contains("(pageserver_connstring, safekeeper_connstrings, tenant_id, timeline_id)"),
        "{errors:?}"
    );
    assert_invalid(
        "static",
        |v| {
            v["upstream_connstring"] = json!("host=db");
            v["mode"] = json!({"Static": "0/1"});
        },
        "mode",
        "a vanilla upstream cannot serve pages as of an old LSN",
    );
    assert_invalid(
        "slot without upstream",
        |v| v["upstream_slot_name"] = json!("slot"),
        "upstream_slot_name",
        "needs upstream_connstring",
    );
}

#[test]
fn embedded_default_has_nothing_to_follow() {
    assert_invalid(
        "replica",
        |v| v["mode"] = json!("Replica"),
        "mode",
        "nothing to follow",
    );
    assert_invalid(
        "static",
        |v| v["mode"] = json!({"Static": "0/0"}),
        "mode",
        "nothing to follow",
    );
    assert_invalid(
        "tenant alone",
        |v| v["tenant_id"] = json!("b0554b632bd4d547a63b86c3630317e8"),
        "tenant_id",
        "needs pageserver_connstring",
    );
    // neon.* settings alone are just settings: the compute is embedded.
    let mut value: Value =
        serde_json::from_slice(&read(&fixtures_dir().join("minimal.json"))).unwrap();
    add_setting(
        &mut value,
        "neon.tenant_id",
        json!("b0554b632bd4d547a63b86c3630317e8"),
    );
    assert_eq!(
        parse_ok(&serde_json::to_vec(&value).unwrap()).storage,
        Storage::Embedded
    );
}

// ---------------------------------------------------------------------------------------------
// The setting catalog, against the real Postgres 15

fn real_catalog() -> SettingCatalog {
    SettingCatalog::load(Path::new(POSTGRES_BIN)).unwrap()
}

fn with_settings(list: Value) -> compute_ctl::spec::ComputeSpec {
    let mut value: Value =
        serde_json::from_slice(&read(&fixtures_dir().join("minimal.json"))).unwrap();
    value["cluster"]["settings"] = list;
    parse_ok(&serde_json::to_vec(&value).unwrap()).spec
}

#[test]
fn catalog_knows_postgres_settings_and_their_contexts() {
    let catalog = real_catalog();
    assert_eq!(
        catalog.library_dir(),
        Path::new("/usr/lib/postgresql/15/lib")
    );
    for name in [
        "port",
        "shared_buffers",
        "work_mem",
        "application_name",
        "Work_Mem",
    ] {
        assert!(catalog.knows(name), "{name}");
    }
    assert!(!catalog.knows("no_such_setting"));
    assert!(catalog.needs_restart("shared_buffers"));
    assert!(catalog.needs_restart("max_connections"));
    assert!(!catalog.needs_restart("work_mem"));
    assert!(!catalog.needs_restart("fsync"));
}

#[test]
fn catalog_rejects_unknown_names_and_passes_dotted_ones() {
    let catalog = real_catalog();
    let spec = with_settings(json!([
        {"name": "port", "value": "55432"},
        {"name": "my_ext.anything", "value": "1"},
        {"name": "no_such_setting", "value": "1"},
        {"name": "shared_preload_libraries", "value": "pg_stat_statements"}
    ]));
    let errors = catalog.check(&spec);
    assert_eq!(
        errors,
        vec![SpecError::new(
            "cluster.settings[2]",
            format!("unrecognized configuration parameter \"no_such_setting\": {POSTGRES_BIN} does not have it")
        )]
    );
}

#[test]
fn catalog_checks_preload_libraries() {
    let catalog = real_catalog();
    for installed in [
        "pg_stat_statements",
        "'pg_stat_statements'",
        "$libdir/pg_stat_statements",
        " pg_stat_statements , auto_explain ",
        "\"pg_stat_statements\"",
        "",
    ] {
        let spec = with_settings(json!([{"name": "shared_preload_libraries", "value": installed}]));
        assert_eq!(catalog.check(&spec), vec![], "{installed}");
    }
    let spec = with_settings(json!([
        {"name": "work_mem", "value": "4MB"},
        {"name": "shared_preload_libraries", "value": "neon,pg_stat_statements,pg_cron"}
    ]));
    let errors: Vec<String> = catalog
        .check(&spec)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        errors,
        vec![
            format!(
                "cluster.settings[1]: shared_preload_libraries: library \"neon\" is not installed for {POSTGRES_BIN} (it is part of Neon's Postgres build; a vanilla PostgreSQL cannot load it)"
            ),
            format!(
                "cluster.settings[1]: shared_preload_libraries: library \"pg_cron\" is not installed for {POSTGRES_BIN} (no pg_cron.so in /usr/lib/postgresql/15/lib)"
            ),
        ]
    );
}

#[test]
fn catalog_load_names_a_missing_binary() {
    let error = SettingCatalog::load(Path::new("/nonexistent/bin/postgres")).unwrap_err();
    assert!(
        format!("{error:#}").contains("/nonexistent/bin/postgres"),
        "{error:#}"
    );
    let error = SettingCatalog::load(Path::new("/bin/false")).unwrap_err();
    assert!(
        format!("{error:#}").contains("/bin/false --describe-config failed"),
        "{error:#}"
    );
}

// ---------------------------------------------------------------------------------------------
// `compute_ctl spec check`

fn run_check(path: &Path, postgres_bin: Option<&str>) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = spec::check_file(
        path,
        postgres_bin.map(Path::new),
        "cloud_admin",
        &mut out,
        &mut err,
    );
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

#[test]
fn check_file_valid_spec() {
    let path = fixtures_dir().join("minimal.json");
    let hash = parse_ok(&read(&path)).hash;
    let (code, out, err) = run_check(&path, None);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!("ok: {hash} (embedded: fresh initdb, ephemeral data)\n")
    );
    assert_eq!(err, "");
}

#[test]
fn check_file_invalid_spec_prints_every_error() {
    let (code, out, err) = run_check(&fixtures_dir().join("invalid/many-errors.json"), None);
    assert_eq!(code, 3);
    assert_eq!(out, "");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 6, "{err}");
    assert!(
        lines[0].starts_with("cluster.roles[1].name: role name \"pg_x\" is reserved"),
        "{err}"
    );
    assert!(lines[5].starts_with("mode: "), "{err}");
}

#[test]
fn check_file_unreadable() {
    let (code, out, err) = run_check(Path::new("/nonexistent/spec.json"), None);
    assert_eq!(code, 3);
    assert_eq!(out, "");
    assert!(
        err.starts_with("/nonexistent/spec.json: cannot read: "),
        "{err}"
    );
}

#[test]
fn check_file_with_a_binary_checks_names_and_libraries() {
    let (code, out, err) = run_check(
        &fixtures_dir().join("embedded-default.json"),
        Some(POSTGRES_BIN),
    );
    assert_eq!((code, err.as_str()), (0, ""), "{out}");
    let (code, out, err) = run_check(&fixtures_dir().join("neon.json"), Some(POSTGRES_BIN));
    assert_eq!(code, 3);
    assert_eq!(out, "");
    assert_eq!(
        err,
        format!(
            "cluster.settings[3]: shared_preload_libraries: library \"neon\" is not installed for {POSTGRES_BIN} (it is part of Neon's Postgres build; a vanilla PostgreSQL cannot load it)\n"
        )
    );
    // Without the binary, the same file is valid: only its form is checked.
    let (code, out, _) = run_check(&fixtures_dir().join("neon.json"), None);
    assert_eq!(code, 0);
    assert!(out.starts_with("ok: sha256:"), "{out}");
    assert!(
        out.contains("(neon primary, tenant b0554b632bd4d547a63b86c3630317e8"),
        "{out}"
    );
}

#[test]
fn check_file_paths_of_an_envelope_start_with_spec() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let text = String::from_utf8(neon_fixture(DOCKER_COMPOSE_CONFIG))
        .unwrap()
        .replace("\"TENANT_ID\"", "\"de200bd42b49cc1814412c7e592dd6e9\"")
        .replace("\"TIMELINE_ID\"", "\"7f2aff2a1042b93a2617f44851638422\"");
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = run_check(&path, Some(POSTGRES_BIN));
    assert_eq!(code, 3);
    let starts: Vec<&str> = err
        .lines()
        .map(|line| line.split(" is not installed").next().unwrap())
        .map(|line| line.split(": /usr").next().unwrap())
        .collect();
    assert_eq!(
        starts,
        vec![
            "spec.cluster.settings[15]: shared_preload_libraries: library \"neon\"",
            "spec.cluster.settings[15]: shared_preload_libraries: library \"pg_cron\"",
            "spec.cluster.settings[15]: shared_preload_libraries: library \"timescaledb\"",
            "spec.cluster.settings[20]: unrecognized configuration parameter \"max_replication_write_lag\"",
            "spec.cluster.settings[21]: unrecognized configuration parameter \"max_replication_flush_lag\"",
        ],
        "{err}"
    );
}

#[test]
fn check_file_with_a_bad_binary_is_a_usage_error() {
    let (code, out, err) = run_check(
        &fixtures_dir().join("minimal.json"),
        Some("/nonexistent/postgres"),
    );
    assert_eq!(code, 2);
    assert_eq!(out, "");
    assert!(err.contains("/nonexistent/postgres"), "{err}");
}
