//! `--log-format json`: every line of stderr is one JSON object with `ts`, `level`, `target`,
//! `msg`, and the context where it is known; Postgres's own lines stay a line each.

use std::time::Duration;

use serde_json::Value;

use crate::support::compute::{embedded_spec, free_port, Compute, Launch};

#[test]
fn json_log_lines_carry_their_context() {
    let port = free_port();
    let mut compute = Compute::start(Launch {
        args: vec!["--log-format".into(), "json".into()],
        ..Launch::default()
    });
    let (status, _, id) = compute.post(
        "/spec",
        Some(&embedded_spec(port)),
        &[("X-Request-Id", "it-log-request-1")],
    );
    assert_eq!((status, id.as_str()), (202, "it-log-request-1"));
    compute.wait_running();
    // A Postgres line that spans lines in the server's own log: one statement with a newline.
    let mut admin = compute.admin();
    let _ = admin.batch_execute("SELECT 1/0 AS \"two\nlines\"");
    drop(admin);
    compute.signal(libc::SIGTERM);
    assert_eq!(compute.wait_exit(Duration::from_secs(60)).code(), Some(0));

    let log = compute.log();
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(lines.len() > 20, "{log}");
    for line in &lines {
        for key in ["ts", "level", "target", "msg"] {
            assert!(line[key].is_string(), "no {key}: {line}");
        }
        assert!(
            humantime::parse_rfc3339(line["ts"].as_str().unwrap()).is_ok(),
            "{line}"
        );
        assert!(
            ["error", "warn", "info", "debug", "trace"].contains(&line["level"].as_str().unwrap())
        );
    }
    let find = |what: &str, f: &dyn Fn(&Value) -> bool| -> Value {
        lines
            .iter()
            .find(|l| f(l))
            .cloned()
            .unwrap_or_else(|| panic!("no line {what} in\n{log}"))
    };
    // The driver's lines: phase and seq of the published view.
    let driver = find("from the driver with phase and seq", &|l| {
        l["target"] == "compute_ctl::driver" && l["phase"].is_string() && l["seq"].is_u64()
    });
    assert!(driver["seq"].as_u64().unwrap() >= 1);
    // The request that brought the spec: its id, on the HTTP thread and in the driver.
    find("with the request id", &|l| {
        l["request_id"] == "it-log-request-1"
    });
    // A step's lines: the worker's, and the driver's report of it.
    find("with step apply_spec", &|l| l["step"] == "apply_spec");
    find("with step fetch_basebackup", &|l| {
        l["step"] == "fetch_basebackup"
    });
    // Postgres's own stderr: target postgres, a JSON line per line it wrote.
    let postgres: Vec<&Value> = lines.iter().filter(|l| l["target"] == "postgres").collect();
    assert!(
        postgres.iter().any(|l| l["msg"]
            .as_str()
            .unwrap()
            .contains("database system is ready")),
        "{log}"
    );
    let error = find("with Postgres's division by zero", &|l| {
        l["target"] == "postgres" && l["msg"].as_str().unwrap().contains("division by zero")
    });
    assert!(!error["msg"].as_str().unwrap().contains('\n'));
    assert!(postgres
        .iter()
        .all(|l| !l["msg"].as_str().unwrap().contains('\n')));
}
