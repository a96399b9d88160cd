//! Drift: Postgres changed by hand through SQL (ALTER SYSTEM + reload, roles created, altered,
//! a password changed, a database dropped, an owner changed), seen by the real binary with
//! `--drift-interval 1s`, cleared when undone by hand, repaired with `--drift repair`; never
//! for a fresh spec, Postgres's own objects, or after a live reconfiguration.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::compute::{embedded_spec, free_port, md5_verifier, Compute, Launch};

const MINUTE: Duration = Duration::from_secs(60);

/// The spec's password of alice, and the one set by hand.
const ALICE_PW: &str = "alice-spec-pw";
const HAND_PW: &str = "hand-set-pw";

fn spec(port: u16) -> Value {
    let mut spec = embedded_spec(port);
    spec["cluster"]["settings"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "work_mem", "value": "4MB", "vartype": "string" }));
    spec["cluster"]["roles"] = json!([{
        "name": "alice",
        "encrypted_password": md5_verifier(ALICE_PW, "alice"),
        "options": [{ "name": "CREATEDB" }],
    }]);
    spec["cluster"]["databases"] = json!([
        { "name": "shop", "owner": "alice" },
        { "name": "books", "owner": "alice" },
    ]);
    spec
}

fn start(port: u16, mode: &str) -> Compute {
    let mut compute = Compute::start(Launch {
        spec: Some(spec(port)),
        args: [
            "--drift",
            mode,
            "--drift-interval",
            "1s",
            "--failed-linger",
            "10m",
        ]
        .map(String::from)
        .to_vec(),
        ..Launch::default()
    });
    compute.wait_running();
    compute
}

/// `compute_ctl_drift_checks_total` from `/metrics`.
fn checks(compute: &Compute) -> u64 {
    let response = ureq::get(&compute.url("/metrics")).call().unwrap();
    let text = response.into_string().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("compute_ctl_drift_checks_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no drift check counter in /metrics:\n{text}"))
}

/// Waits until `more` drift checks were made after now, then returns the state.
fn after_checks(compute: &mut Compute, more: u64) -> Value {
    let target = checks(compute) + more;
    let deadline = std::time::Instant::now() + MINUTE;
    while checks(compute) < target {
        assert!(
            std::time::Instant::now() < deadline,
            "no drift check\nlog:\n{}",
            compute.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    compute.state()
}

/// The drift list as `(kind, name, expected, actual)`, each with a `since`.
fn drift(state: &Value) -> Vec<(String, String, Value, Value)> {
    let list = state["drift"]
        .as_array()
        .unwrap_or_else(|| panic!("/state.drift is not a list: {state}"));
    list.iter()
        .map(|d| {
            assert!(d["since"].is_string(), "no since: {d}");
            let keys: Vec<&String> = d.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["actual", "expected", "kind", "name", "since"], "{d}");
            (
                d["kind"].as_str().unwrap().to_owned(),
                d["name"].as_str().unwrap().to_owned(),
                d["expected"].clone(),
                d["actual"].clone(),
            )
        })
        .collect()
}

fn item(kind: &str, name: &str, expected: Value, actual: Value) -> (String, String, Value, Value) {
    (kind.into(), name.into(), expected, actual)
}

/// Runs each `;`-separated statement on its own (`DROP DATABASE` cannot share a transaction).
fn sql(compute: &Compute, statements: &str) {
    let mut admin = compute.admin();
    for statement in statements
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        admin
            .batch_execute(statement)
            .unwrap_or_else(|e| panic!("{statement}: {e:?}"));
    }
}

fn drift_records(compute: &Compute) -> Vec<Value> {
    compute
        .journal()
        .into_iter()
        .filter(|r| r["kind"] == "drift")
        .collect()
}

/// Polls until `until(compute, state)` holds.
fn poll(compute: &mut Compute, what: &str, until: impl Fn(&Compute, &Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + MINUTE;
    loop {
        let state = compute.state();
        if until(compute, &state) {
            return state;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}: {state}\nlog:\n{}",
            compute.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn caused_by(compute: &Compute, event: &str) -> usize {
    compute
        .journal()
        .iter()
        .filter(|r| {
            r["kind"] == "transition" && r["cause"]["event"] == event && r["from"] == "running"
        })
        .count()
}

#[test]
fn drift_made_by_hand_is_seen_then_cleared_when_undone() {
    let port = free_port();
    let mut compute = start(port, "report");
    // A fresh spec, Postgres's own roles and databases (pg_*, templates, postgres) and the
    // admin role: no drift.
    let state = after_checks(&mut compute, 2);
    assert_eq!(drift(&state), [], "{state}");
    assert!(drift_records(&compute).is_empty());

    sql(
        &compute,
        &format!(
            "ALTER SYSTEM SET work_mem = '64MB'; SELECT pg_reload_conf();
             CREATE ROLE mallory;
             ALTER ROLE alice NOCREATEDB;
             ALTER ROLE alice PASSWORD '{}';
             DROP DATABASE shop;
             ALTER DATABASE books OWNER TO mallory;
             ALTER DATABASE books SET search_path = 'x';",
            crate::support::postgres::md5_verifier(HAND_PW, "alice")
        ),
    );
    let expected = vec![
        item(
            "setting",
            "search_path (database \"books\")",
            Value::Null,
            json!("x"),
        ),
        item("setting", "work_mem", json!("4MB"), json!("64MB")),
        item("role", "alice", json!("CREATEDB"), json!("NOCREATEDB")),
        item(
            "role",
            "alice",
            json!("password as in the spec"),
            json!("changed"),
        ),
        item("role", "mallory", Value::Null, json!("NOLOGIN")),
        item(
            "database",
            "books",
            json!("owner alice"),
            json!("owner mallory"),
        ),
        item("database", "shop", json!("owner alice"), Value::Null),
    ];
    let state = compute.wait_state(MINUTE, "every drift seen", |s| {
        s["drift"]
            .as_array()
            .is_some_and(|d| d.len() == expected.len())
    });
    assert_eq!(drift(&state), expected, "{state}");
    assert_eq!(state["phase"], "running", "report only: nothing repaired");
    let records = drift_records(&compute);
    let last = records.last().expect("a drift record");
    assert_eq!(last["drift"], state["drift"], "the record carries the list");
    assert_eq!(last["generation"], 1);
    assert_eq!(caused_by(&compute, "drift"), 0);
    let metrics = ureq::get(&compute.url("/metrics"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    assert!(
        metrics.contains("\ncompute_ctl_drift_items 7\n"),
        "{metrics}"
    );

    // Secrets: neither verifier (nor the passwords) in answers, journal or log.
    let journal_text = compute
        .journal_files()
        .iter()
        .map(Value::to_string)
        .collect::<String>();
    let answers = format!("{state}{metrics}{}", Value::Array(compute.journal()));
    for secret in [
        crate::support::postgres::md5_verifier(HAND_PW, "alice"),
        md5_verifier(ALICE_PW, "alice"),
        HAND_PW.to_owned(),
    ] {
        let hex = secret.trim_start_matches("md5");
        for (what, text) in [
            ("answers", &answers),
            ("journal", &journal_text),
            ("log", &compute.log()),
        ] {
            let line = text.lines().find(|l| l.contains(hex));
            assert!(line.is_none(), "a verifier in the {what}: {line:?}");
        }
    }

    // Undone by hand: cleared, and journaled as cleared.
    sql(
        &compute,
        &format!(
            "ALTER SYSTEM RESET work_mem; SELECT pg_reload_conf();
             ALTER DATABASE books OWNER TO alice;
             ALTER DATABASE books RESET search_path;
             DROP ROLE mallory;
             ALTER ROLE alice CREATEDB;
             ALTER ROLE alice PASSWORD 'md5{}';
             CREATE DATABASE shop OWNER alice;",
            md5_verifier(ALICE_PW, "alice")
        ),
    );
    let state = compute.wait_state(MINUTE, "drift cleared", |s| {
        s["drift"].as_array().is_some_and(Vec::is_empty)
    });
    assert_eq!(state["phase"], "running");
    let records = drift_records(&compute);
    assert_eq!(
        records.last().unwrap()["drift"],
        json!([]),
        "cleared is journaled"
    );
}

#[test]
fn no_drift_after_a_live_reconfiguration() {
    let port = free_port();
    let mut compute = start(port, "report");
    let mut next = spec(port);
    next["cluster"]["settings"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "statement_timeout", "value": "90s", "vartype": "string" }));
    next["cluster"]["roles"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "bob", "encrypted_password": null }));
    next["cluster"]["databases"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "name": "bobs", "owner": "bob" }));
    let (status, body) = compute.post_spec(&next);
    assert_eq!(status, 202, "{body}");
    compute.wait_state(MINUTE, "generation 2 running", |s| {
        s["phase"] == "running" && s["applied_generation"] == 2
    });
    let state = after_checks(&mut compute, 2);
    assert_eq!(drift(&state), [], "{state}");
    assert!(drift_records(&compute).is_empty());
}

#[test]
fn drift_repair_applies_the_spec_again_and_reports_what_it_cannot_remove() {
    let port = free_port();
    let mut compute = start(port, "repair");
    sql(
        &compute,
        "DROP DATABASE shop; ALTER ROLE alice NOCREATEDB; ALTER ROLE alice PASSWORD 'x';",
    );
    // The statements run one by one: a check may see only some of them, and the rest are
    // repaired one interval later; what counts is the end.
    let state = poll(&mut compute, "drift repaired", |compute, s| {
        s["phase"] == "running"
            && s["drift"].as_array().is_some_and(Vec::is_empty)
            && caused_by(compute, "drift") >= 1
            && compute
                .admin()
                .query_one(
                    "SELECT count(*) FROM pg_database WHERE datname = 'shop'",
                    &[],
                )
                .is_ok_and(|row| row.get::<_, i64>(0) == 1)
    });
    let mut admin = compute.admin();
    let row = admin
        .query_one(
            "SELECT (SELECT count(*) FROM pg_database WHERE datname = 'shop'), \
             (SELECT rolcreatedb FROM pg_roles WHERE rolname = 'alice')",
            &[],
        )
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1, "shop created again");
    assert!(row.get::<_, bool>(1), "CREATEDB given again");
    assert!(
        compute.connect("alice", Some(ALICE_PW), "shop").is_ok(),
        "the spec's password is back\nlog:\n{}",
        compute.log()
    );
    assert_eq!(state["applied_generation"], 1);
    // The path: running -> configuration_pending -> configuring -> running, cause drift.
    let journal = compute.journal();
    let repair_at = journal
        .iter()
        .position(|r| r["kind"] == "transition" && r["cause"]["event"] == "drift")
        .unwrap();
    let path: Vec<String> = journal[repair_at..]
        .iter()
        .filter(|r| r["kind"] == "transition")
        .take(3)
        .map(|r| {
            format!(
                "{} -> {}",
                r["from"].as_str().unwrap(),
                r["to"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        path,
        [
            "running -> configuration_pending",
            "configuration_pending -> configuring",
            "configuring -> running"
        ]
    );
    drop(admin);

    // An unexpected role: no implicit drops, so a repair does not remove it: reported as
    // such, once, not repaired in a loop.
    let before = caused_by(&compute, "drift");
    sql(&compute, "CREATE ROLE mallory;");
    let state = compute.wait_state(MINUTE, "drift not removed", |s| {
        s["drift_repair"] == "not_removed"
    });
    assert_eq!(
        drift(&state),
        [item("role", "mallory", Value::Null, json!("NOLOGIN"))]
    );
    assert_eq!(
        caused_by(&compute, "drift"),
        before + 1,
        "one repair for it"
    );
    let records = drift_records(&compute);
    assert_eq!(records.last().unwrap()["repair"], "not_removed");
    // Another drift beside it is repaired once more; the one that stays is not repaired again.
    sql(&compute, "DROP DATABASE books;");
    poll(
        &mut compute,
        "books repaired, mallory left",
        |compute, s| {
            s["phase"] == "running"
                && caused_by(compute, "drift") == before + 2
                && s["drift"].as_array().is_some_and(|d| d.len() == 1)
                && s["drift_repair"] == "not_removed"
        },
    );
    let state = after_checks(&mut compute, 3);
    assert_eq!(
        drift(&state),
        [item("role", "mallory", Value::Null, json!("NOLOGIN"))]
    );
    assert_eq!(caused_by(&compute, "drift"), before + 2, "no repair loop");
    let books: i64 = compute
        .admin()
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = 'books'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(books, 1, "books created again");
}

#[test]
fn recover_in_running_repairs_once_on_demand() {
    let port = free_port();
    let mut compute = start(port, "report");
    sql(&compute, "DROP DATABASE shop;");
    compute.wait_state(MINUTE, "the dropped database seen", |s| {
        s["drift"].as_array().is_some_and(|d| d.len() == 1)
    });
    let (status, body, _) = compute.post("/recover", None, &[]);
    assert_eq!(status, 200, "{body}");
    let state = compute.wait_state(MINUTE, "repaired", |s| {
        s["phase"] == "running" && s["drift"].as_array().is_some_and(Vec::is_empty)
    });
    assert_eq!(state["applied_generation"], 1);
    assert_eq!(caused_by(&compute, "recover"), 1);
    assert_eq!(
        caused_by(&compute, "drift"),
        0,
        "report mode never repairs by itself"
    );
    let exists: i64 = compute
        .admin()
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = 'shop'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(exists, 1);
}
