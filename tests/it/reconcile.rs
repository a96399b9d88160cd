//! Roles, databases and delta operations applied to a real Postgres: the Neon fixture, hostile
//! names, passwords that must (and must not) log in, delta operations, idempotence, what is
//! never touched, and failures that name their object.

use std::collections::BTreeMap;
use std::time::Instant;

use compute_ctl::postgres::config::render_pg_hba;
use compute_ctl::postgres::{admin_config, reconcile, ApplyError, ApplyReport, PrivilegedRole};
use compute_ctl::spec::ComputeSpec;
use postgres::Client;
use serde_json::json;
use states::{ErrorKind, PhaseName};

use crate::support::postgres::{md5_verifier, Setup, TestPostgres, SUPERUSER};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/fixtures/specs/neon-cluster-spec.json"
);

/// What the first configuration of a cluster sends for the privileged role: its `CREATE
/// ROLE`, three grants (PostgreSQL 15) and its default privileges in the admin database.
const PRIVILEGED_ROLE_STATEMENTS: usize = 5;

/// What each database created gets for the privileged role: the grant of all privileges on
/// it, and the default privileges in it.
const PER_DATABASE_CREATED: usize = 2;

fn fixture() -> ComputeSpec {
    serde_json::from_slice(&std::fs::read(FIXTURE).unwrap()).unwrap()
}

/// A spec with only what reconciliation reads.
fn spec(
    roles: serde_json::Value,
    databases: serde_json::Value,
    delta: serde_json::Value,
) -> ComputeSpec {
    serde_json::from_value(json!({
        "format_version": 1.0,
        "cluster": {"roles": roles, "databases": databases},
        "delta_operations": delta,
    }))
    .unwrap()
}

fn apply(pg: &TestPostgres, spec: &ComputeSpec) -> Result<ApplyReport, ApplyError> {
    let config = admin_config(&pg.connstr(SUPERUSER, "postgres"), &[]).unwrap();
    reconcile(&config, spec, SUPERUSER, &PrivilegedRole::default())
}

/// Applies `spec`, then applies it again and checks the second pass sends nothing.
fn apply_twice(pg: &TestPostgres, spec: &ComputeSpec) -> ApplyReport {
    let first = apply(pg, spec).unwrap_or_else(|e| panic!("{e}\n{}", pg.log()));
    let second = apply(pg, spec).unwrap();
    assert_eq!(
        second.statements_sent, 0,
        "second apply: {:?}",
        second.summary
    );
    assert_eq!(second.catalog_reads, 1);
    first
}

/// Every role: name → (can log in, stored verifier).
fn roles(client: &mut Client) -> BTreeMap<String, (bool, Option<String>)> {
    client
        .query(
            "SELECT rolname, rolcanlogin, rolpassword FROM pg_authid",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect()
}

fn role_oid(client: &mut Client, name: &str) -> Option<u32> {
    client
        .query_opt("SELECT oid FROM pg_authid WHERE rolname = $1", &[&name])
        .unwrap()
        .map(|r| r.get(0))
}

/// name → (oid, owner, datcollate, datctype, datconnlimit).
fn databases(client: &mut Client) -> BTreeMap<String, (u32, String, String, String, i32)> {
    client
        .query(
            "SELECT datname, oid, pg_get_userbyid(datdba), datcollate, datctype, datconnlimit \
             FROM pg_database",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))))
        .collect()
}

/// Runs each statement on its own (`CREATE DATABASE` refuses a multi-statement string).
fn run(client: &mut Client, statements: &[&str]) {
    for statement in statements {
        client
            .batch_execute(statement)
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

fn summary_has(report: &ApplyReport, line: &str) -> bool {
    report.summary.iter().any(|l| l == line)
}

#[test]
fn neon_fixture_is_applied_on_a_fresh_cluster_and_then_sends_nothing() {
    let pg = TestPostgres::start();
    let mut client = pg.client("postgres");
    // A marker in template1: databases copied from it have it, those from template0 do not.
    pg.client("template1")
        .batch_execute("CREATE TABLE template1_marker ()")
        .unwrap();

    let spec = fixture();
    let report = apply_twice(&pg, &spec);
    assert_eq!(
        report.statements_sent,
        9 + PRIVILEGED_ROLE_STATEMENTS + 3 * PER_DATABASE_CREATED,
        "{:?}",
        report.summary
    );
    assert!(
        summary_has(&report, "create_role: 7"),
        "{:?}",
        report.summary
    );
    assert!(
        summary_has(&report, "create_database: 3"),
        "{:?}",
        report.summary
    );

    let roles = roles(&mut client);
    for role in &spec.cluster.roles {
        let (login, password) = &roles[&role.name];
        assert!(login, "{} can log in", role.name);
        let expected = role.encrypted_password.as_ref().map(|p| format!("md5{p}"));
        assert_eq!(password, &expected, "{}", role.name);
    }
    let dbs = databases(&mut client);
    let (_, owner, collate, ctype, _) = &dbs["DB2"];
    assert_eq!(
        (owner.as_str(), collate.as_str(), ctype.as_str()),
        ("alexk", "C", "C")
    );
    assert_eq!(dbs["zenith"].1, "MyRole");
    assert_eq!(
        dbs["zenith"].2, "C.UTF-8",
        "the default collation, from template1"
    );
    assert_eq!(dbs["zen"].1, "zen");
    let has_marker = |db: &str| {
        pg.client(db)
            .query_opt(
                "SELECT 1 FROM pg_class WHERE relname = 'template1_marker'",
                &[],
            )
            .unwrap()
            .is_some()
    };
    assert!(!has_marker("DB2"), "DB2 was created from template0");
    assert!(has_marker("zenith"), "zenith was created from template1");
}

#[test]
fn neon_fixture_delta_operations_rename_and_drop_what_exists() {
    let pg = TestPostgres::start();
    let mut client = pg.client("postgres");
    let password = md5_verifier("old", "zenith new");
    run(
        &mut client,
        &[
            "CREATE DATABASE \"DB\"",
            "CREATE DATABASE zenith_test",
            &format!("CREATE ROLE \"zenith new\" LOGIN PASSWORD '{password}'"),
            "CREATE ROLE zenith2 LOGIN",
            "CREATE TABLE granted (x int)",
            "GRANT SELECT ON granted TO zenith2",
        ],
    );
    // zenith2 owns a table in "DB" (renamed to DB2 before zenith2 is dropped).
    pg.client("DB")
        .batch_execute(
            "CREATE TABLE owned_by_zenith2 (x int); ALTER TABLE owned_by_zenith2 OWNER TO zenith2",
        )
        .unwrap();
    let db_oid = databases(&mut client)["DB"].0;
    let role_oid_before = role_oid(&mut client, "zenith new").unwrap();
    // A session in the database to be dropped: WITH (FORCE) ends it.
    let mut doomed_session = pg.client("zenith_test");

    let spec = fixture();
    let report = apply_twice(&pg, &spec);
    for line in [
        "drop_database: 1",
        "terminate_backends: 1",
        "rename_database: 1",
        "reassign_owned: 2",
        "drop_owned: 2",
        "drop_role: 1",
        "rename_role: 1",
        "create_role: 6",
        "alter_role: 1",
        "create_database: 2",
        "alter_database_owner: 1",
    ] {
        assert!(summary_has(&report, line), "{line} in {:?}", report.summary);
    }
    assert!(
        doomed_session.simple_query("SELECT 1").is_err(),
        "its session was ended"
    );

    let dbs = databases(&mut client);
    assert!(!dbs.contains_key("zenith_test"));
    assert!(!dbs.contains_key("DB"));
    assert_eq!(dbs["DB2"].0, db_oid, "rename_db keeps the database");
    assert_eq!(dbs["DB2"].1, "alexk");
    // Options only CREATE DATABASE takes do not apply to a database that exists already.
    assert_eq!(dbs["DB2"].2, "C.UTF-8");

    assert_eq!(role_oid(&mut client, "zenith2"), None);
    assert_eq!(role_oid(&mut client, "zenith new"), None);
    assert_eq!(
        role_oid(&mut client, "zenith \"new\""),
        Some(role_oid_before),
        "rename_role keeps the role"
    );
    // The rename cleared the md5 password; the spec's was set again.
    assert_eq!(
        roles(&mut client)["zenith \"new\""].1.as_deref(),
        Some("md55b1d16b78004bbd51fa06af9eda75972")
    );
    // zenith2's table went to the owner of the database it was in at the time.
    let owner: String = pg
        .client("DB2")
        .query_one(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 'owned_by_zenith2'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(owner, SUPERUSER);
}

#[test]
fn md5_passwords_log_in_with_the_right_password_only() {
    let pg = TestPostgres::start_with(Setup {
        postgresql_conf: None,
        pg_hba: Some(render_pg_hba(SUPERUSER).unwrap()),
    });
    let mut spec = fixture();
    spec.delta_operations = None;
    for (i, role) in spec.cluster.roles.iter_mut().enumerate() {
        if role.encrypted_password.is_some() {
            let verifier = md5_verifier(&format!("pw-{i}"), &role.name);
            // Neon's bare 32 hex digits, the md5-prefixed form, and upper case hex.
            role.encrypted_password = Some(match i % 3 {
                0 => verifier[3..].to_owned(),
                1 => verifier,
                _ => verifier[3..].to_ascii_uppercase(),
            });
        }
    }
    apply_twice(&pg, &spec);
    for (i, role) in spec.cluster.roles.iter().enumerate() {
        let wrong = pg
            .login(&role.name, "not-the-password", "postgres")
            .err()
            .expect("a wrong password is refused");
        assert_eq!(
            wrong.as_db_error().map(|e| e.code().code()),
            Some("28P01"),
            "{}: {wrong}",
            role.name
        );
        let right = pg.login(&role.name, &format!("pw-{i}"), "postgres");
        if role.encrypted_password.is_some() {
            let mut client = right.unwrap_or_else(|e| panic!("{}: {e}", role.name));
            let who: String = client
                .query_one("SELECT current_user::text", &[])
                .unwrap()
                .get(0);
            assert_eq!(who, role.name);
        } else {
            assert!(
                right.is_err(),
                "{} has no password and cannot log in",
                role.name
            );
        }
    }
}

#[test]
fn scram_verifiers_are_stored_as_given_and_log_in() {
    let pg = TestPostgres::start_with(Setup {
        postgresql_conf: None,
        pg_hba: Some(render_pg_hba(SUPERUSER).unwrap()),
    });
    let mut client = pg.client("postgres");
    client
        .batch_execute(
            "SET password_encryption = 'scram-sha-256'; \
             CREATE ROLE tmp PASSWORD 'correct horse'",
        )
        .unwrap();
    let verifier: String = client
        .query_one(
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'tmp'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(verifier.starts_with("SCRAM-SHA-256$"));
    client.batch_execute("DROP ROLE tmp").unwrap();

    // A SCRAM verifier does not depend on the role name: reuse it for a hostile one.
    let name = "scram \"user\" ☃";
    let spec = spec(
        json!([{"name": name, "encrypted_password": verifier}]),
        json!([]),
        json!([]),
    );
    apply_twice(&pg, &spec);
    assert_eq!(
        roles(&mut client)[name].1.as_deref(),
        Some(verifier.as_str())
    );
    pg.login(name, "correct horse", "postgres").unwrap();
    assert!(pg.login(name, "correct horse!", "postgres").is_err());
}

#[test]
fn hostile_names_survive_the_round_trip() {
    let pg = TestPostgres::start_with(Setup {
        postgresql_conf: None,
        pg_hba: Some(render_pg_hba(SUPERUSER).unwrap()),
    });
    let mut client = pg.client("postgres");
    // The injection below names role x: it must still exist afterwards.
    client.batch_execute("CREATE ROLE x").unwrap();
    let long = format!("{}x", "é".repeat(31));
    assert_eq!(long.len(), 63);
    let names = [
        "\"; DROP ROLE x; --",
        "'; DROP ROLE x; --",
        "$$",
        "$q$ ) $q$",
        "with space",
        "ünïcødé ☃",
        long.as_str(),
        "back\\slash",
        "new\nline",
        "MixedCase",
        "all",
        "--",
    ];
    let roles_json: Vec<_> = names
        .iter()
        .map(|n| json!({"name": n, "encrypted_password": md5_verifier("pw", n)}))
        .collect();
    let databases_json: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| json!({"name": n, "owner": names[(i + 1) % names.len()]}))
        .collect();
    let spec = spec(json!(roles_json), json!(databases_json), json!([]));
    let report = apply_twice(&pg, &spec);
    assert_eq!(
        report.statements_sent,
        PRIVILEGED_ROLE_STATEMENTS + names.len() * (2 + PER_DATABASE_CREATED)
    );

    let roles = roles(&mut client);
    assert!(roles.contains_key("x"), "role x survived");
    for name in names {
        assert_eq!(roles[name].1, Some(md5_verifier("pw", name)), "{name:?}");
    }
    let dbs = databases(&mut client);
    for (i, name) in names.iter().enumerate() {
        assert_eq!(dbs[*name].1, names[(i + 1) % names.len()]);
    }
    // A hostile name logs in with its md5 verifier (which hashes the exact name).
    for name in ["back\\slash", long.as_str(), "\"; DROP ROLE x; --"] {
        pg.login(name, "pw", "postgres")
            .unwrap_or_else(|e| panic!("{name:?}: {e}"));
    }
}

#[test]
fn changes_to_passwords_options_and_owners_send_only_the_difference() {
    let pg = TestPostgres::start();
    let mut client = pg.client("postgres");
    let first = spec(
        json!([
            {"name": "alice", "encrypted_password": md5_verifier("a1", "alice")},
            {"name": "bob", "encrypted_password": null,
             "options": [{"name": "CREATEDB"}, {"name": "CONNECTION_LIMIT", "value": "3"},
                         {"name": "VALID UNTIL", "value": "2030-01-01"}]},
        ]),
        json!([{"name": "shop", "owner": "alice"}]),
        json!([]),
    );
    apply_twice(&pg, &first);
    let row = client
        .query_one(
            "SELECT rolcreatedb, rolconnlimit, rolvaliduntil = '2030-01-01 00:00:00+00' \
             FROM pg_authid WHERE rolname = 'bob'",
            &[],
        )
        .unwrap();
    assert_eq!(
        (
            row.get::<_, bool>(0),
            row.get::<_, i32>(1),
            row.get::<_, bool>(2)
        ),
        (true, 3, true)
    );

    let second = spec(
        json!([
            {"name": "alice", "encrypted_password": null},
            {"name": "bob", "encrypted_password": md5_verifier("b2", "bob"),
             "options": [{"name": "CREATEDB"}, {"name": "CONNECTION LIMIT", "value": "5"},
                         {"name": "VALID UNTIL", "value": "2030-01-01T00:00:00Z"}]},
        ]),
        json!([{"name": "shop", "owner": "bob", "options": [{"name": "CONNECTION_LIMIT", "value": "7"}]}]),
        json!([]),
    );
    let shop_oid = databases(&mut client)["shop"].0;
    let report = apply_twice(&pg, &second);
    assert_eq!(report.statements_sent, 4, "{:?}", report.summary);
    for line in [
        "alter_role: 2",
        "alter_database_owner: 1",
        "alter_database: 1",
    ] {
        assert!(summary_has(&report, line), "{line} in {:?}", report.summary);
    }
    let roles = roles(&mut client);
    assert_eq!(roles["alice"].1, None, "null removes the password");
    assert_eq!(roles["bob"].1, Some(md5_verifier("b2", "bob")));
    let connlimit: i32 = client
        .query_one(
            "SELECT rolconnlimit FROM pg_authid WHERE rolname = 'bob'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(connlimit, 5);
    let dbs = databases(&mut client);
    assert_eq!(dbs["shop"].0, shop_oid, "changed in place");
    assert_eq!(dbs["shop"].1, "bob");
    assert_eq!(dbs["shop"].4, 7);
}

#[test]
fn roles_the_spec_does_not_name_are_never_touched() {
    let pg = TestPostgres::start();
    let mut client = pg.client("postgres");
    let password = md5_verifier("b", "bystander");
    run(
        &mut client,
        &[
            &format!("CREATE ROLE bystander LOGIN CREATEDB PASSWORD '{password}'"),
            "CREATE DATABASE bystanders_db OWNER bystander",
        ],
    );
    let all_roles = |client: &mut Client| -> Vec<String> {
        client
            .query(
                "SELECT row(a.*)::text FROM pg_authid a \
                 WHERE rolname NOT IN ('declared', 'neon_superuser') ORDER BY rolname",
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let before = all_roles(&mut client);
    let dbs_before = databases(&mut client);

    // The spec declares the admin role too (Neon's demo spec does): it is left alone.
    let spec_ok = spec(
        json!([
            {"name": "declared", "encrypted_password": null},
            {"name": SUPERUSER, "encrypted_password": md5_verifier("x", SUPERUSER)},
        ]),
        json!([{"name": "declared_db", "owner": SUPERUSER}]),
        json!([]),
    );
    let report = apply_twice(&pg, &spec_ok);
    assert_eq!(
        report.statements_sent,
        2 + PRIVILEGED_ROLE_STATEMENTS + PER_DATABASE_CREATED,
        "{:?}",
        report.summary
    );
    assert!(report.summary.iter().any(|l| l.contains("admin role")));
    assert_eq!(
        all_roles(&mut client),
        before,
        "admin, pg_* and bystander unchanged"
    );
    let mut dbs_after = databases(&mut client);
    dbs_after.remove("declared_db");
    assert_eq!(dbs_after, dbs_before);

    // Delta operations on the admin or a reserved role, or declaring a pg_ role, fail the
    // plan before anything is sent.
    for (bad, object) in [
        (
            spec(
                json!([{"name": "new_one"}]),
                json!([]),
                json!([{"action": "delete_role", "name": SUPERUSER}]),
            ),
            format!("role \"{SUPERUSER}\""),
        ),
        (
            spec(
                json!([{"name": "new_one"}]),
                json!([]),
                json!([{"action": "rename_role", "name": "pg_monitor", "new_name": "mine"}]),
            ),
            "role \"pg_monitor\"".to_owned(),
        ),
        (
            spec(
                json!([{"name": "new_one"}, {"name": "pg_mine"}]),
                json!([]),
                json!([]),
            ),
            "role \"pg_mine\"".to_owned(),
        ),
    ] {
        let err = apply(&pg, &bad).unwrap_err();
        assert_eq!(err.object, object, "{err}");
        assert!(err.to_string().contains(&object), "{err}");
        assert_eq!(role_oid(&mut client, "new_one"), None, "nothing was sent");
    }
    assert_eq!(all_roles(&mut client), before);
}

#[test]
fn an_owner_that_is_not_a_role_fails_before_anything_is_sent() {
    let pg = TestPostgres::start();
    let mut client = pg.client("postgres");
    let bad = spec(
        json!([{"name": "a"}]),
        json!([{"name": "d1", "owner": "a"}, {"name": "d2", "owner": "ghost"}]),
        json!([]),
    );
    let err = apply(&pg, &bad).unwrap_err();
    assert_eq!(err.object, "database \"d2\"");
    assert_eq!(
        err.message,
        "database \"d2\": owner \"ghost\" is not a role"
    );
    let step = err.to_step_error(PhaseName::Configuring);
    assert_eq!((step.kind, step.retryable), (ErrorKind::Postgres, false));
    assert!(step.message.contains("\"d2\"") && step.message.contains("\"ghost\""));
    assert_eq!(role_oid(&mut client, "a"), None, "nothing was sent");

    let good = spec(
        json!([{"name": "a"}, {"name": "ghost"}]),
        json!([{"name": "d1", "owner": "a"}, {"name": "d2", "owner": "ghost"}]),
        json!([]),
    );
    assert_eq!(
        apply_twice(&pg, &good).statements_sent,
        4 + PRIVILEGED_ROLE_STATEMENTS + 2 * PER_DATABASE_CREATED
    );
}

#[test]
fn a_failure_half_way_names_the_object_and_the_next_apply_finishes() {
    let pg = TestPostgres::start();
    let mut client = pg.client("postgres");
    let bad = spec(
        json!([{"name": "a"}, {"name": "b"}]),
        json!([
            {"name": "good", "owner": "a"},
            {"name": "bad", "owner": "b",
             "options": [{"name": "TEMPLATE", "value": "template0"},
                         {"name": "LC_COLLATE", "value": "no_such_locale"}]},
        ]),
        json!([]),
    );
    let err = apply(&pg, &bad).unwrap_err();
    assert_eq!(err.object, "database \"bad\"");
    assert_eq!(err.statement, "create database \"bad\"");
    assert!(
        err.message.contains("no_such_locale"),
        "postgres's own message: {err}"
    );
    // What was sent before the failure stays; the corrected spec finishes the job.
    assert!(role_oid(&mut client, "b").is_some());
    let good = spec(
        json!([{"name": "a"}, {"name": "b"}]),
        json!([{"name": "good", "owner": "a"}, {"name": "bad", "owner": "b"}]),
        json!([]),
    );
    // The privileged role came with the first statements.
    assert_eq!(
        apply_twice(&pg, &good).statements_sent,
        1 + PER_DATABASE_CREATED
    );
}

#[test]
fn dropping_a_role_reassigns_its_objects_or_fails_naming_it() {
    let pg = TestPostgres::start();
    let mut client = pg.client("postgres");
    run(
        &mut client,
        &[
            "CREATE ROLE keeper",
            "CREATE ROLE leaver",
            "CREATE ROLE stuck",
            "CREATE DATABASE app OWNER keeper",
            "CREATE DATABASE closed",
        ],
    );
    pg.client("app")
        .batch_execute(
            "CREATE TABLE t (x int); ALTER TABLE t OWNER TO leaver;
             CREATE TABLE shared (x int); GRANT SELECT ON shared TO leaver;",
        )
        .unwrap();
    pg.client("closed")
        .batch_execute("CREATE TABLE s (x int); ALTER TABLE s OWNER TO stuck")
        .unwrap();
    client
        .batch_execute("ALTER DATABASE closed ALLOW_CONNECTIONS false")
        .unwrap();

    let drop_leaver = spec(
        json!([]),
        json!([]),
        json!([{"action": "delete_role", "name": "leaver"}]),
    );
    apply_twice(&pg, &drop_leaver);
    assert_eq!(role_oid(&mut client, "leaver"), None);
    let owner: String = pg
        .client("app")
        .query_one(
            "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relname = 't'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(owner, "keeper", "the table went to the database's owner");

    // stuck owns a table in a database compute_ctl cannot connect to.
    let drop_stuck = spec(
        json!([]),
        json!([]),
        json!([{"action": "delete_role", "name": "stuck"}]),
    );
    let err = apply(&pg, &drop_stuck).unwrap_err();
    assert_eq!(err.object, "role \"stuck\"");
    assert!(
        err.message
            .contains("role \"stuck\" cannot be dropped because some objects depend on it"),
        "{err}"
    );
    assert!(
        err.message.contains("closed"),
        "postgres's detail names the database: {err}"
    );
    // Whole: the SQLSTATE (dependent_objects_still_exist) and the DETAIL, marked as such.
    assert!(
        err.message.starts_with("ERROR: 2BP01: ") && err.message.contains("; DETAIL: "),
        "{err}"
    );
    assert!(role_oid(&mut client, "stuck").is_some());
}

#[test]
fn delete_and_rename_database_work_with_sessions_connected() {
    let pg = TestPostgres::start();
    let mut client = pg.client("postgres");
    run(
        &mut client,
        &["CREATE DATABASE gone", "CREATE DATABASE old_name"],
    );
    let old_oid = databases(&mut client)["old_name"].0;
    let mut in_gone = pg.client("gone");
    let mut in_old = pg.client("old_name");
    let ops = spec(
        json!([]),
        json!([]),
        json!([
            {"action": "delete_db", "name": "gone"},
            {"action": "rename_db", "name": "old_name", "new_name": "new name"},
            {"action": "delete_db", "name": "never_existed"},
        ]),
    );
    let report = apply_twice(&pg, &ops);
    assert_eq!(
        report.statements_sent,
        3 + PRIVILEGED_ROLE_STATEMENTS,
        "{:?}",
        report.summary
    );
    let dbs = databases(&mut client);
    assert!(!dbs.contains_key("gone") && !dbs.contains_key("old_name"));
    assert_eq!(dbs["new name"].0, old_oid);
    assert!(in_gone.simple_query("SELECT 1").is_err());
    assert!(in_old.simple_query("SELECT 1").is_err());
}

#[test]
fn an_invalid_database_is_dropped_and_created_again() {
    let pg = TestPostgres::start();
    let mut client = pg.client("postgres");
    let spec = spec(
        json!([{"name": "o"}]),
        json!([{"name": "half", "owner": "o"}]),
        json!([]),
    );
    apply_twice(&pg, &spec);
    let oid = databases(&mut client)["half"].0;
    // What an interrupted DROP DATABASE leaves behind.
    client
        .batch_execute("UPDATE pg_database SET datconnlimit = -2 WHERE datname = 'half'")
        .unwrap();
    let report = apply_twice(&pg, &spec);
    assert_eq!(
        report.statements_sent,
        2 + PER_DATABASE_CREATED,
        "{:?}",
        report.summary
    );
    assert!(summary_has(&report, "drop_database: 1"));
    assert!(summary_has(&report, "create_database: 1"));
    let dbs = databases(&mut client);
    assert_ne!(dbs["half"].0, oid);
    assert_eq!(dbs["half"].4, -1);
    pg.client("half");
}

#[test]
fn user_settings_on_the_admin_role_cannot_break_reconciliation() {
    let pg = TestPostgres::start();
    let mut client = pg.client("postgres");
    client
        .batch_execute(
            "ALTER ROLE cloud_admin SET default_transaction_read_only = on;
             ALTER ROLE cloud_admin SET statement_timeout = '1ms';
             ALTER ROLE cloud_admin SET search_path = 'evil';
             ALTER ROLE cloud_admin SET lock_timeout = '1ms';",
        )
        .unwrap();
    let config = admin_config(&pg.connstr(SUPERUSER, "postgres"), &[]).unwrap();
    let mut admin = config.connect(postgres::NoTls).unwrap();
    for (name, expected) in [
        ("default_transaction_read_only", "off"),
        ("statement_timeout", "0"),
        ("search_path", ""),
        ("lock_timeout", "30s"),
        ("TimeZone", "UTC"),
        ("log_min_error_statement", "panic"),
        ("application_name", "compute_ctl"),
    ] {
        let row = admin.simple_query(&format!("SHOW {name}")).unwrap();
        let value = row
            .iter()
            .find_map(|m| match m {
                postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .unwrap();
        assert_eq!(value, expected, "{name}");
    }
    let spec = spec(
        json!([{"name": "r", "encrypted_password": md5_verifier("p", "r")}]),
        json!([{"name": "big", "owner": "r"}]),
        json!([]),
    );
    assert_eq!(
        apply_twice(&pg, &spec).statements_sent,
        2 + PRIVILEGED_ROLE_STATEMENTS + PER_DATABASE_CREATED
    );
}

/// Not a timed test: prints how long 2,000 roles and 200 databases take on a fresh cluster,
/// and the same spec again. Run with `cargo test --test it scale -- --ignored --nocapture`.
#[test]
#[ignore]
fn scale_2000_roles_200_databases() {
    let pg = TestPostgres::start();
    let roles: Vec<_> = (0..2000)
        .map(|i| {
            let name = format!("role {i:04}");
            json!({"name": name, "encrypted_password": md5_verifier("pw", &name)})
        })
        .collect();
    let dbs: Vec<_> = (0..200)
        .map(|i| json!({"name": format!("db {i:03}"), "owner": format!("role {:04}", i * 10)}))
        .collect();
    // Roles first on their own, to tell the cost of roles from that of databases.
    let roles_only = spec(json!(roles), json!([]), json!([]));
    let spec = spec(json!(roles), json!(dbs), json!([]));
    let timed = |spec: &ComputeSpec| {
        let start = Instant::now();
        let report = apply(&pg, spec).unwrap();
        (start.elapsed(), report.statements_sent)
    };
    let (roles_elapsed, roles_sent) = timed(&roles_only);
    let (dbs_elapsed, dbs_sent) = timed(&spec);
    let (again_elapsed, again_sent) = timed(&spec);
    println!(
        "2000 roles: {roles_elapsed:.2?}, {roles_sent} statements; \
         then 200 databases: {dbs_elapsed:.2?}, {dbs_sent} statements; \
         the same spec again: {again_elapsed:.2?}, {again_sent} statements"
    );
    assert_eq!((roles_sent, dbs_sent, again_sent), (2000, 200, 0));
}
