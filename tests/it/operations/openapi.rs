//! The OpenAPI document: the served one equals the repository's, names every endpoint of
//! CONTRACT.md, and schemathesis checks a live compute against it.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::compute::{embedded_spec, free_port, set_setting, Compute, Launch};

/// The repository's document.
fn document() -> Value {
    serde_json::from_str(include_str!("../../../src/http/openapi.json")).unwrap()
}

/// CONTRACT.md's endpoints, ours and Neon's (its "HTTP API" table).
const CONTRACT: [(&str, &str); 20] = [
    ("get", "/state"),
    ("post", "/spec"),
    ("get", "/journal"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/fsm"),
    ("post", "/terminate"),
    ("post", "/recover"),
    ("get", "/status"),
    ("post", "/configure"),
    ("get", "/metrics.json"),
    ("get", "/openapi.json"),
    ("post", "/promote"),
    ("get", "/dbs_and_roles"),
    ("get", "/database_schema"),
    ("post", "/check_writability"),
    ("get", "/insights"),
    ("post", "/extensions"),
    ("post", "/grants"),
];

/// Endpoints the document describes (the contract's) that this build does not serve yet. A
/// test below fails as soon as one is served, so this list shrinks as they land: every one
/// is served now.
const NOT_SERVED_YET: [&str; 0] = [];

/// Neon-only endpoints: served, with 501 and why (no LFC, no autoscaling, no remote
/// extensions on vanilla PostgreSQL). schemathesis leaves them out: a 5xx is its failure.
const NEON_ONLY: [&str; 5] = [
    "/lfc/prewarm",
    "/lfc/offload",
    "/autoscaling_metrics",
    "/extension_server/{filename}",
    "/failpoints",
];

#[test]
fn the_served_document_is_the_repository_one_and_covers_the_contract() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (method, path) in CONTRACT {
        let op = &paths
            .get(path)
            .unwrap_or_else(|| panic!("no {path} in the document"))[method];
        assert!(op.is_object(), "no {method} {path}");
        let responses = op["responses"].as_object().unwrap();
        assert!(!responses.is_empty(), "{method} {path} has no responses");
        // Every endpoint but the probes and the scrape takes the bearer scheme.
        let open = ["/healthz", "/readyz", "/metrics"].contains(&path);
        assert_eq!(op["security"] == serde_json::json!([]), open, "{path}");
        if !open {
            assert!(responses.contains_key("401") && responses.contains_key("403"));
        }
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["bearerFormat"],
        "JWT"
    );

    let mut compute = Compute::start(Launch::default());
    let (status, served) = compute.get("/openapi.json").unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        served, doc,
        "GET /openapi.json differs from src/http/openapi.json"
    );
    let method_of = |path: &str| {
        doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(p, _)| p.replace("{filename}", "x") == path)
            .map(|(_, ops)| ops.as_object().unwrap().keys().next().unwrap().clone())
            .unwrap()
    };
    let status_of = |path: &str| {
        let path = path.replace("{filename}", "x");
        let method = method_of(&path);
        let status = if method == "get" {
            compute.get(&path).unwrap().0
        } else {
            compute.post(&path, None, &[]).0
        };
        (method, path, status)
    };
    for path in NOT_SERVED_YET {
        let (method, path, status) = status_of(path);
        assert_eq!(
            status, 404,
            "{method} {path} is served now: take it off NOT_SERVED_YET (the schemathesis run \
             then covers it)"
        );
    }
    // Each documented method of each Neon-only path (Neon's Python client asks for the LFC's
    // status with GET and cancels a prewarm with DELETE) answers 501, documented.
    for path in NEON_ONLY {
        let url = compute.url(&path.replace("{filename}", "x"));
        let ops = doc["paths"][path].as_object().unwrap();
        assert!(!ops.is_empty(), "{path}: no operation documented");
        for (method, op) in ops {
            let status = match ureq::request(&method.to_uppercase(), &url).call() {
                Ok(r) => r.status(),
                Err(ureq::Error::Status(code, _)) => code,
                Err(e) => panic!("{method} {path}: {e}"),
            };
            assert_eq!(status, 501, "{method} {path}");
            assert!(
                op["responses"]["501"].is_object(),
                "{method} {path}: no 501 documented"
            );
        }
    }
    compute.signal(libc::SIGTERM);
    assert_eq!(compute.wait_exit(Duration::from_secs(60)).code(), Some(0));
}

/// schemathesis, a bounded number of examples per operation (`COMPUTE_CTL_SCHEMATHESIS_EXAMPLES`,
/// default 8): no 5xx, every status code, content type, header and body as the document
/// says, and every refused request (4xx) leaves seq and phase as they were (the hook module
/// beside this file). `POST /terminate` is left out: it ends the compute (tested elsewhere).
#[test]
fn schemathesis_finds_nothing_on_a_live_compute() {
    let st = crate::support::tools::tool("st", "schemathesis (PyPI)");
    let examples =
        std::env::var("COMPUTE_CTL_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "8".into());
    // pg_stat_statements loaded and created, so that GET /insights answers 200.
    let mut spec = embedded_spec(free_port());
    set_setting(&mut spec, "shared_preload_libraries", "pg_stat_statements");
    let mut compute = Compute::start(Launch {
        spec: Some(spec),
        args: vec!["--failed-linger".into(), "1h".into()],
        ..Launch::default()
    });
    compute.wait_running();
    compute
        .admin()
        .batch_execute("CREATE EXTENSION pg_stat_statements")
        .unwrap();
    let base = compute.url("");
    let hooks = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/operations");
    let mut command = Command::new(st);
    command
        .arg("run")
        .arg(compute.url("/openapi.json"))
        .args(["--url", &base])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_headers_conformance,response_schema_conformance,\
             refused_requests_change_nothing",
        ])
        .args(["--max-examples", &examples])
        .args(["--workers", "1", "--seed", "12"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--request-timeout", "60"])
        .args(["--exclude-path", "/terminate"])
        .args(["--no-color", "--warnings", "off"])
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env("PYTHONPATH", hooks)
        .env("COMPUTE_CTL_URL", &base)
        .env(
            "HYPOTHESIS_STORAGE_DIRECTORY",
            compute.root.join("hypothesis"),
        )
        // schemathesis keeps a cache in its working directory: the compute's temp dir.
        .current_dir(&compute.root);
    for path in NOT_SERVED_YET.iter().chain(&NEON_ONLY) {
        command.args(["--exclude-path", path]);
    }
    let started = Instant::now();
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!(
        "schemathesis took {:.1} s:\n{stdout}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{stdout}{}\ncompute_ctl log:\n{}",
        String::from_utf8_lossy(&output.stderr),
        compute.log()
    );
    // The run reached the operations: at least one case per operation it was given.
    assert!(stdout.contains("passed"), "{stdout}");
    assert!(
        compute.try_exit().is_none(),
        "the compute exited during the run"
    );
}
