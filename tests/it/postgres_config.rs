//! The rendered configuration files, read back by a real Postgres: hostile setting values
//! come back unchanged, and the rendered pg_hba lets the admin in without a password and
//! nobody else.

use compute_ctl::postgres::config::{render_pg_hba, render_postgresql_conf};
use compute_ctl::spec::{Cluster, ComputeSpec, GenericOption};

use crate::support::postgres::{Setup, TestPostgres, SUPERUSER};

fn spec_with_settings(settings: &[(&str, &str)]) -> ComputeSpec {
    let mut spec: ComputeSpec = serde_json::from_value(serde_json::json!({
        "format_version": 1.0,
        "cluster": {}
    }))
    .unwrap();
    spec.cluster = Cluster {
        settings: Some(
            settings
                .iter()
                .map(|(name, value)| GenericOption {
                    name: (*name).into(),
                    value: Some((*value).into()),
                    vartype: Some("string".into()),
                })
                .collect(),
        ),
        ..Cluster::default()
    };
    spec
}

#[test]
fn hostile_setting_values_come_back_unchanged() {
    let values = [
        (
            "test.escaping",
            "here's a backslash \\ and a quote ' and a double-quote \" hooray",
        ),
        ("test.newlines", "line one\nline two\r\nend"),
        ("test.backslashes", "\\\\server\\share\\"),
        ("test.comment", "# not a comment"),
        ("test.only_quote", "'"),
        ("test.empty", ""),
        ("test.unicode", "ünïcødé ☃ $$ \"; DROP ROLE x; --"),
        ("test.octal_lookalike", "\\101"),
    ];
    let spec = spec_with_settings(&values);
    let conf =
        render_postgresql_conf(&spec, &[("compute_ctl.spec_hash", "sha256:x".into())]).unwrap();
    assert!(conf.contains(
        "test.escaping = 'here''s a backslash \\\\ and a quote '' and a double-quote \" hooray'\n"
    ));
    let pg = TestPostgres::start_with(Setup {
        postgresql_conf: Some(conf),
        pg_hba: None,
    });
    let mut client = pg.client("postgres");
    for (name, value) in values {
        let row = client
            .query_one("SELECT pg_catalog.current_setting($1)", &[&name])
            .unwrap();
        let got: String = row.get(0);
        assert_eq!(got, value, "{name}");
    }
    let row = client
        .query_one(
            "SELECT pg_catalog.current_setting('compute_ctl.spec_hash')",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "sha256:x");
    // Postgres read every line without complaint.
    let errors: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_catalog.pg_file_settings WHERE error IS NOT NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(errors, 0, "{}", pg.log());
}

#[test]
fn rendered_pg_hba_trusts_the_admin_and_asks_everyone_else() {
    let pg = TestPostgres::start_with(Setup {
        postgresql_conf: None,
        pg_hba: Some(render_pg_hba(SUPERUSER).unwrap()),
    });
    // The admin: no password over loopback TCP.
    let mut admin = pg.client("postgres");
    admin
        .batch_execute(
            "CREATE ROLE nopass LOGIN; \
             CREATE ROLE withpass LOGIN PASSWORD 'secret'",
        )
        .unwrap();
    // Everyone else: their password, and a role without one cannot get in.
    assert!(pg.login("withpass", "secret", "postgres").is_ok());
    let wrong = pg
        .login("withpass", "guess", "postgres")
        .err()
        .expect("a wrong password is refused");
    assert_eq!(
        wrong.as_db_error().map(|e| e.code().code()),
        Some("28P01"),
        "{wrong}"
    );
    assert!(pg
        .config("nopass", "postgres")
        .connect(postgres::NoTls)
        .is_err());
    assert!(pg.login("nopass", "", "postgres").is_err());
}
