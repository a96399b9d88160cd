//! Neon's privileged role (`--privileged-role-name`) against the real binary and Postgres: its
//! attributes and memberships read back from `pg_roles` and `pg_auth_members`, a spec role
//! that logs in and creates a database and a role, the grants on each database, the drift
//! check leaving it alone, a reconfiguration that keeps it, another name on an upstream
//! `Primary` branch, and bad names refused with exit 2 before anything is touched.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::compute::{
    embedded_spec, free_port, md5_verifier, run_once, traversable_tempdir, Compute, Launch,
};
use crate::support::postgres::{Setup, TestPostgres};

const ALICE_PW: &str = "alice-secret";
const CAROL_PW: &str = "carol-secret";

fn spec(port: u16) -> Value {
    let mut spec = embedded_spec(port);
    spec["cluster"]["roles"] = json!([
        { "name": "alice", "encrypted_password": md5_verifier(ALICE_PW, "alice") },
        { "name": "careful", "encrypted_password": null,
          "options": [{ "name": "NOCREATEDB" }, { "name": "NOREPLICATION" }] },
    ]);
    spec["cluster"]["databases"] = json!([{ "name": "shop", "owner": "alice" }]);
    spec
}

/// `rolcanlogin, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolreplication,
/// rolbypassrls` of `role`, from `pg_roles`.
fn attributes(client: &mut postgres::Client, role: &str) -> Option<[bool; 7]> {
    client
        .query_opt(
            "SELECT rolcanlogin, rolsuper, rolinherit, rolcreaterole, rolcreatedb, \
             rolreplication, rolbypassrls FROM pg_roles WHERE rolname = $1",
            &[&role],
        )
        .unwrap()
        .map(|r| std::array::from_fn(|i| r.get(i)))
}

/// The roles `member` is a direct member of, each with its admin option, from
/// `pg_auth_members`.
fn member_of(client: &mut postgres::Client, member: &str) -> Vec<(String, bool)> {
    client
        .query(
            "SELECT r.rolname::text, m.admin_option FROM pg_auth_members m \
             JOIN pg_roles r ON r.oid = m.roleid JOIN pg_roles u ON u.oid = m.member \
             WHERE u.rolname = $1 ORDER BY 1",
            &[&member],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// `datacl` of `database` as text.
fn database_acl(client: &mut postgres::Client, database: &str) -> String {
    client
        .query_one(
            "SELECT coalesce(datacl::text, '') FROM pg_database WHERE datname = $1",
            &[&database],
        )
        .unwrap()
        .get(0)
}

/// The default privileges of the database `client` is connected to, as
/// `(object type, acl)`.
fn default_acls(client: &mut postgres::Client) -> Vec<(String, String)> {
    client
        .query(
            "SELECT defaclobjtype::text, defaclacl::text FROM pg_default_acl \
             WHERE defaclnamespace = 'public'::regnamespace ORDER BY 1",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

/// `compute_ctl_drift_checks_total` from `/metrics`.
fn drift_checks(compute: &Compute) -> u64 {
    let text = ureq::get(&compute.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("compute_ctl_drift_checks_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no drift check counter:\n{text}"))
}

/// The `summary` of the last `apply_spec` step of the journal.
fn last_apply_summary(compute: &Compute) -> Vec<String> {
    let record = compute
        .journal()
        .into_iter()
        .rev()
        .find(|r| r["kind"] == "step_finished" && r["step"] == "apply_spec")
        .unwrap_or_else(|| panic!("no apply_spec finished"));
    let summary = &record["output"]["detail"]["catalog"]["summary"];
    summary
        .as_array()
        .unwrap_or_else(|| panic!("no summary: {record}"))
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect()
}

const ALL_SEVEN: [bool; 7] = [false; 7];

#[test]
fn the_privileged_role_has_neons_attributes_and_spec_roles_use_them() {
    let port = free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(spec(port)),
        args: ["--drift-interval", "1s"].map(String::from).to_vec(),
        ..Launch::default()
    });
    compute.wait_running();
    let mut admin = compute.admin();

    // The role itself: no login, no superuser; CREATEROLE CREATEDB REPLICATION BYPASSRLS.
    let mut expected = ALL_SEVEN;
    expected[2..].copy_from_slice(&[true; 5]);
    assert_eq!(
        attributes(&mut admin, "neon_superuser"),
        Some(expected),
        "login, super, inherit, createrole, createdb, replication, bypassrls"
    );
    assert_eq!(
        member_of(&mut admin, "neon_superuser"),
        [
            ("pg_monitor".to_owned(), true),
            ("pg_read_all_data".to_owned(), false),
            ("pg_signal_backend".to_owned(), true),
            ("pg_write_all_data".to_owned(), false),
        ]
    );
    let may_execute: bool = admin
        .query_one(
            "SELECT has_function_privilege('neon_superuser', \
             'pg_show_replication_origin_status()', 'EXECUTE')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(may_execute);

    // Spec roles: members, with Neon's attributes unless the spec says otherwise.
    let member = vec![("neon_superuser".to_owned(), false)];
    assert_eq!(member_of(&mut admin, "alice"), member);
    assert_eq!(member_of(&mut admin, "careful"), member);
    let mut alice = [true; 7];
    alice[1] = false;
    assert_eq!(attributes(&mut admin, "alice"), Some(alice));
    let careful = [true, false, true, true, false, false, true];
    assert_eq!(attributes(&mut admin, "careful"), Some(careful));

    // Database grants: all of them on the spec's database; default privileges in it and in
    // the admin database.
    let acl = database_acl(&mut admin, "shop");
    assert!(acl.contains("neon_superuser=CTc/"), "{acl}");
    for database in ["postgres", "shop"] {
        let mut client = compute.connect("cloud_admin", None, database).unwrap();
        let acls = default_acls(&mut client);
        assert_eq!(
            acls.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
            ["S", "r"],
            "{database}: {acls:?}"
        );
        for (_, acl) in &acls {
            assert!(acl.contains("neon_superuser="), "{database}: {acl}");
            assert!(acl.contains('*'), "with grant option: {acl}");
        }
    }

    // Not drift: the check sees compute_ctl's own role, not an unexpected one.
    let after = drift_checks(&compute) + 1;
    let deadline = Instant::now() + Duration::from_secs(60);
    while drift_checks(&compute) < after {
        assert!(
            Instant::now() < deadline,
            "no drift check\n{}",
            compute.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(compute.state()["drift"], json!([]), "{}", compute.log());

    // What Neon's users expect of their role.
    admin
        .batch_execute(
            "CREATE TABLE admin_made (x int); INSERT INTO admin_made VALUES (1); \
             CREATE TABLE secret_rows (x int); ALTER TABLE secret_rows ENABLE ROW LEVEL SECURITY; \
             INSERT INTO secret_rows VALUES (7);",
        )
        .unwrap();
    let mut as_alice = compute
        .connect("alice", Some(ALICE_PW), "postgres")
        .unwrap_or_else(|e| panic!("alice cannot log in: {e:?}\n{}", compute.log()));
    as_alice
        .batch_execute("CREATE DATABASE alice_made")
        .unwrap_or_else(|e| panic!("CREATEDB: {e:?}"));
    as_alice
        .batch_execute("CREATE ROLE alice_helper LOGIN")
        .unwrap_or_else(|e| panic!("CREATEROLE: {e:?}"));
    // pg_read_all_data and pg_write_all_data through the role; row level security bypassed.
    let read: i64 = as_alice
        .query_one("SELECT count(*) FROM admin_made", &[])
        .unwrap()
        .get(0);
    assert_eq!(read, 1);
    as_alice
        .batch_execute("INSERT INTO admin_made VALUES (2)")
        .unwrap();
    let seen: i64 = as_alice
        .query_one("SELECT count(*) FROM secret_rows", &[])
        .unwrap()
        .get(0);
    assert_eq!(seen, 1, "BYPASSRLS");
    let made: Option<String> = admin
        .query_opt(
            "SELECT pg_get_userbyid(datdba)::text FROM pg_database WHERE datname = 'alice_made'",
            &[],
        )
        .unwrap()
        .map(|r| r.get(0));
    assert_eq!(made.as_deref(), Some("alice"));
    let mut in_shop = compute.connect("alice", Some(ALICE_PW), "shop").unwrap();
    in_shop
        .batch_execute("CREATE SCHEMA alice_schema")
        .unwrap_or_else(|e| panic!("CREATE on the database: {e:?}"));
    drop(in_shop);
    drop(as_alice);

    // A reconfiguration: carol and a database added, alice (and shop) removed from the spec.
    let mut next = embedded_spec(port);
    next["cluster"]["roles"] = json!([
        { "name": "careful", "encrypted_password": null,
          "options": [{ "name": "NOCREATEDB" }, { "name": "NOREPLICATION" }] },
        { "name": "carol", "encrypted_password": md5_verifier(CAROL_PW, "carol") },
    ]);
    next["cluster"]["databases"] = json!([{ "name": "books", "owner": "carol" }]);
    let (status, body) = compute.post_spec(&next);
    assert_eq!(status, 202, "{body}");
    compute.wait_state(Duration::from_secs(60), "the new spec applied", |s| {
        s["phase"] == "running" && s["applied_generation"] == body["generation"]
    });
    // The role was there: nothing made again; only carol, her database and its grants.
    let summary = last_apply_summary(&compute);
    for line in [
        "create_role: 1",
        "create_database: 1",
        "grant: 1",
        "default_privileges: 1",
    ] {
        assert!(summary.iter().any(|l| l == line), "{line} in {summary:?}");
    }
    let count: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_roles WHERE rolname = 'neon_superuser'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
    assert_eq!(member_of(&mut admin, "carol"), member);
    // A role the spec no longer names is left as it is (Neon drops only by delta operation).
    assert_eq!(member_of(&mut admin, "alice"), member);
    assert!(database_acl(&mut admin, "books").contains("neon_superuser=CTc/"));
    let mut as_carol = compute.connect("carol", Some(CAROL_PW), "books").unwrap();
    as_carol
        .batch_execute("CREATE DATABASE carol_made")
        .unwrap();
}

#[test]
fn bad_privileged_role_names_exit_2_naming_the_flag_before_anything_is_touched() {
    let dir = traversable_tempdir();
    let pgdata = dir.path().join("pgdata");
    let spec_file = dir.path().join("spec.json");
    std::fs::write(&spec_file, spec(free_port()).to_string()).unwrap();
    let too_long = "a".repeat(64);
    for (name, says) in [
        (
            "Neon_Superuser",
            "only lowercase letters a-z and underscores",
        ),
        ("neon-superuser", "'-'"),
        ("", "empty"),
        ("pg_super", "reserves"),
        (too_long.as_str(), "63 bytes"),
        ("cloud_admin", "admin role of -C/--connstr"),
    ] {
        let output = run_once(&pgdata, Some(&spec_file), &["--privileged-role-name", name]);
        let err = String::from_utf8_lossy(&output.stderr).into_owned();
        assert_eq!(output.status.code(), Some(2), "{name:?}: {err}");
        assert!(err.contains("--privileged-role-name"), "{name:?}: {err}");
        assert!(err.contains(says), "{name:?}: {err}");
        assert!(!pgdata.exists(), "{name:?}: PGDATA was created");
        assert!(
            !dir.path().join("pgdata.state").exists(),
            "{name:?}: the state directory was created"
        );
    }
}

#[test]
fn another_name_on_an_upstream_primary_branch() {
    let upstream = TestPostgres::start_with_settings(Setup::default(), &[]);
    let mut source = upstream.client("postgres");
    for statement in [
        "CREATE ROLE upstream_user LOGIN",
        "CREATE DATABASE upstream_db",
    ] {
        source.batch_execute(statement).unwrap();
    }
    let mut spec = spec(free_port());
    spec["upstream_connstring"] = json!(format!(
        "postgresql://cloud_admin@127.0.0.1:{}/postgres",
        upstream.port()
    ));
    spec["mode"] = json!("Primary");
    spec["cluster"]["databases"] = json!([
        { "name": "shop", "owner": "alice" },
        { "name": "upstream_db", "owner": "cloud_admin" },
    ]);
    let mut compute = Compute::start(Launch {
        spec: Some(spec),
        args: ["--privileged-role-name", "my_superuser"]
            .map(String::from)
            .to_vec(),
        ..Launch::default()
    });
    compute.wait_running();
    let mut branch = compute.admin();
    assert!(attributes(&mut branch, "my_superuser").is_some());
    assert_eq!(attributes(&mut branch, "neon_superuser"), None);
    assert_eq!(
        member_of(&mut branch, "alice"),
        [("my_superuser".to_owned(), false)]
    );
    // What the upstream brought is left as it is; its database in the spec gets the grant.
    assert_eq!(member_of(&mut branch, "upstream_user"), []);
    assert!(database_acl(&mut branch, "upstream_db").contains("my_superuser=CTc/"));
    assert!(database_acl(&mut branch, "shop").contains("my_superuser=CTc/"));
    // Nothing reached the upstream.
    assert_eq!(attributes(&mut source, "my_superuser"), None);
}
