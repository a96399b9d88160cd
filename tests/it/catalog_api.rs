//! Neon's catalog endpoints on vanilla PostgreSQL, against the real binary and Postgres:
//! `/dbs_and_roles` lists the spec's roles and databases, `/database_schema` dumps a table a
//! test made (404, 400, the byte limit, the time limit), `/check_writability` writes,
//! `/insights` without and with `pg_stat_statements`, the internal `/extensions` and `/grants`
//! read back from the catalog (without a token on the internal port, with one on the
//! external), the Neon-only 501s, 503 until running, and the catalog pool's limit.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use serde_json::{json, Value};

use crate::auth::{bearer, jwt, public_key_pem, FAR};
use crate::support::compute::{
    embedded_spec, free_port, http_call, md5_verifier, set_setting, traversable_tempdir, Compute,
    Launch,
};

const MINUTE: Duration = Duration::from_secs(60);
const APP_PW: &str = "app-secret";

/// `method url` with `headers` and a JSON `body`: (status, body as JSON or as a string).
fn call(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&Value>) -> (u16, Value) {
    let (status, value, _) =
        http_call(method, url, headers, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    (status, value)
}

fn spec(port: u16) -> Value {
    let mut spec = embedded_spec(port);
    spec["cluster"]["roles"] = json!([
        { "name": "app", "encrypted_password": md5_verifier(APP_PW, "app") },
        { "name": "reporter", "encrypted_password": null },
    ]);
    spec["cluster"]["databases"] = json!([
        { "name": "app", "owner": "app" },
        { "name": "reports", "owner": "reporter" },
    ]);
    set_setting(&mut spec, "shared_preload_libraries", "pg_stat_statements");
    spec
}

#[test]
fn every_catalog_endpoint_on_a_running_compute() {
    let key = SigningKey::from_bytes(&[5; 32]);
    let dir = traversable_tempdir();
    let pem = dir.path().join("auth.pem");
    std::fs::write(&pem, public_key_pem(&key)).unwrap();
    let internal = free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(spec(free_port())),
        args: vec![
            "--auth-public-key".into(),
            pem.display().to_string(),
            "--compute-id".into(),
            "c-1".into(),
            "--internal-http-port".into(),
            internal.to_string(),
        ],
        ..Launch::default()
    });
    let token = bearer(&jwt(&key, json!({ "compute_id": "c-1", "exp": FAR })));
    let auth = [("Authorization", token.as_str())];
    let external = |path: &str| compute.url(path);
    let inside = |path: &str| format!("http://127.0.0.1:{internal}{path}");
    let deadline = Instant::now() + MINUTE;
    while call("GET", &inside("/state"), &[], None).1["phase"] != "running" {
        assert!(
            Instant::now() < deadline,
            "never running:\n{}",
            compute.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The catalog, as Neon lists it, without a verifier; a token on the external port.
    assert_eq!(call("GET", &external("/dbs_and_roles"), &[], None).0, 401);
    let (status, catalog) = call("GET", &external("/dbs_and_roles"), &auth, None);
    assert_eq!(status, 200, "{catalog}");
    let roles: Vec<&str> = catalog["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for role in ["app", "reporter", "cloud_admin", "neon_superuser"] {
        assert!(roles.contains(&role), "{role} not in {roles:?}");
    }
    assert!(catalog["roles"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["encrypted_password"].is_null()));
    let app = catalog["databases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "app")
        .unwrap_or_else(|| panic!("no database app: {catalog}"));
    assert_eq!(app["owner"], "app");
    assert_eq!(app["restrict_conn"], false);
    assert_eq!(app["invalid"], false);
    assert!(catalog["databases"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["name"] == "reports" && d["owner"] == "reporter"));

    // The schema of a database, with a table made here; 404, 400.
    let mut app_db = compute.connect("cloud_admin", None, "app").unwrap();
    app_db
        .batch_execute("CREATE TABLE public.orders_for_dump (id int PRIMARY KEY, note text)")
        .unwrap();
    let (status, dump) = call("GET", &inside("/database_schema?database=app"), &[], None);
    assert_eq!(status, 200, "{dump}");
    let dump = dump.as_str().unwrap();
    assert!(
        dump.contains("CREATE TABLE public.orders_for_dump"),
        "{dump}"
    );
    let (status, body) = call("GET", &inside("/database_schema?database=nope"), &[], None);
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("\"nope\""),
        "{body}"
    );
    let (status, body) = call("GET", &inside("/database_schema"), &[], None);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("database"),
        "{body}"
    );

    // Streamed: a chunked body, whole (its last chunk) when pg_dump ends well.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", internal)).unwrap();
    std::io::Write::write_all(
        &mut raw,
        b"GET /database_schema?database=app HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut answer = Vec::new();
    std::io::Read::read_to_end(&mut raw, &mut answer).unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(
        answer.contains("\r\nTransfer-Encoding: chunked\r\n"),
        "{answer}"
    );
    assert!(answer.ends_with("\r\n0\r\n\r\n"), "no last chunk: {answer}");

    // The byte limit: a dump over SCHEMA_DUMP_BYTES_MAX (16 MiB) is cut: pg_dump stopped,
    // the answer closed without its last chunk, so the client sees a body cut short.
    let mut reports = compute.connect("cloud_admin", None, "reports").unwrap();
    reports
        .batch_execute(
            "CREATE TABLE big (id int); \
             DO $$ BEGIN EXECUTE format('COMMENT ON TABLE big IS %L', \
             repeat('x', 17 * 1024 * 1024)); END $$;",
        )
        .unwrap();
    let cut = http_call(
        "GET",
        &inside("/database_schema?database=reports"),
        &[],
        None,
    );
    match &cut {
        Err(e) => assert!(e.contains("reading the answer"), "{e}"),
        Ok((status, body, _)) => panic!(
            "a whole answer {status}: {}",
            &body.to_string()[..200.min(body.to_string().len())]
        ),
    }
    let deadline = Instant::now() + MINUTE;
    while !compute.log().contains("cut short after its head") {
        assert!(
            Instant::now() < deadline,
            "no cut logged:\n{}",
            compute.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        compute.log().contains("SCHEMA_DUMP_BYTES_MAX"),
        "{}",
        compute.log()
    );

    // A write succeeds, as Neon's checker writes it.
    let (status, body) = call("POST", &external("/check_writability"), &auth, None);
    assert_eq!((status, &body), (200, &json!(true)), "{body}");
    let mut admin = compute.admin();
    let rows: i64 = admin
        .query_one("SELECT count(*) FROM public.health_check WHERE id = 1", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 1);

    // Insights: loaded but not created names what is missing; created, Neon's rows.
    let (status, body) = call("GET", &inside("/insights"), &[], None);
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("CREATE EXTENSION pg_stat_statements"),
        "{body}"
    );

    // The internal /extensions creates it (201, Neon's shape), read back from pg_extension.
    let request = json!({ "extension": "pg_stat_statements", "database": "postgres",
                          "version": "1.10" });
    let (status, body) = call("POST", &inside("/extensions"), &[], Some(&request));
    assert_eq!(status, 201, "{body}");
    assert_eq!(
        body,
        json!({ "extension": "pg_stat_statements", "version": "1.10" })
    );
    let request = json!({ "extension": "hstore", "database": "app", "version": "1.8" });
    assert_eq!(
        call("POST", &external("/extensions"), &[], Some(&request)).0,
        401
    );
    for url in [inside("/extensions"), external("/extensions")] {
        let (status, body) = call("POST", &url, &auth, Some(&request));
        assert_eq!(status, 201, "{url}: {body}");
    }
    let version: String = app_db
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'hstore'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, "1.8");
    let missing = json!({ "extension": "hstore", "database": "nope", "version": "1.8" });
    assert_eq!(
        call("POST", &inside("/extensions"), &[], Some(&missing)).0,
        404
    );
    let bad = json!({ "extension": "no_such_extension", "database": "app", "version": "1" });
    let (status, body) = call("POST", &inside("/extensions"), &[], Some(&bad));
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("failed to install extension"),
        "{body}"
    );
    let (status, _) = call(
        "POST",
        &inside("/extensions"),
        &[],
        Some(&json!({ "extension": 1 })),
    );
    assert_eq!(status, 400);

    // Now the statements of a spec role show in /insights.
    let mut as_app = compute.connect("app", Some(APP_PW), "app").unwrap();
    as_app
        .batch_execute("SELECT 4242 AS insights_marker")
        .unwrap();
    let (status, body) = call("GET", &inside("/insights"), &[], None);
    assert_eq!(status, 200, "{body}");
    let statements = body["pg_stat_statements"].as_array().unwrap();
    assert!(
        statements.iter().any(|s| s["query"]
            .as_str()
            .unwrap_or("")
            .contains("insights_marker")),
        "{body}"
    );
    assert!(statements.len() <= 100);

    // The internal /grants, read back with has_schema_privilege.
    let grant = json!({ "database": "app", "schema": "public",
                        "privileges": ["USAGE", "CREATE"], "role": "reporter" });
    let (status, body) = call("POST", &inside("/grants"), &[], Some(&grant));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body, grant);
    let granted: bool = app_db
        .query_one(
            "SELECT has_schema_privilege('reporter', 'public', 'CREATE')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(granted);
    // Again: nothing left to grant, the same answer.
    assert_eq!(call("POST", &inside("/grants"), &[], Some(&grant)).0, 201);
    let bad_privilege = json!({ "database": "app", "schema": "public",
                                "privileges": ["ALL; DROP TABLE x"], "role": "reporter" });
    assert_eq!(
        call("POST", &inside("/grants"), &[], Some(&bad_privilege)).0,
        400
    );
    let no_role = json!({ "database": "app", "schema": "public",
                          "privileges": ["USAGE"], "role": "nobody\"; DROP ROLE app; --" });
    let (status, body) = call("POST", &inside("/grants"), &[], Some(&no_role));
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("does not exist"),
        "{body}"
    );

    // The Neon-only endpoints: 501 with why.
    for (method, path, why) in [
        ("POST", "/lfc/prewarm", "LFC"),
        ("POST", "/lfc/offload", "LFC"),
        ("GET", "/autoscaling_metrics", "autoscaling"),
        ("POST", "/extension_server/hstore.so", "remote extensions"),
    ] {
        let (status, body) = call(method, &inside(path), &[], None);
        assert_eq!(status, 501, "{path}: {body}");
        assert!(body["error"].as_str().unwrap().contains(why), "{body}");
    }

    compute.signal(libc::SIGTERM);
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
}

#[test]
fn catalog_endpoints_answer_503_until_running() {
    let mut compute = Compute::start(Launch::default());
    compute.wait_phase("empty", MINUTE);
    for (method, path) in [
        ("GET", "/dbs_and_roles"),
        ("GET", "/database_schema?database=postgres"),
        ("POST", "/check_writability"),
        ("GET", "/insights"),
    ] {
        let (status, body) = call(method, &compute.url(path), &[], None);
        assert_eq!(status, 503, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("phase empty"),
            "{body}"
        );
    }
    let grant = json!({ "database": "app", "schema": "public",
                        "privileges": ["USAGE"], "role": "reporter" });
    assert_eq!(
        call("POST", &compute.url("/grants"), &[], Some(&grant)).0,
        503
    );
    // A bad request is answered as such in any phase; the Neon-only ones are 501 in any.
    assert_eq!(
        call("GET", &compute.url("/database_schema"), &[], None).0,
        400
    );
    assert_eq!(call("POST", &compute.url("/lfc/offload"), &[], None).0, 501);
    compute.signal(libc::SIGTERM);
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
}

/// Which pg_dump sessions to count.
#[derive(Clone, Copy)]
enum Dumps {
    All,
    WaitingOnALock,
}

/// pg_dump sessions of `/database_schema` (`PGAPPNAME`) in `pg_stat_activity`.
fn dumps(admin: &mut postgres::Client, which: Dumps) -> i64 {
    let sql = match which {
        Dumps::All => {
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'compute_ctl:database_schema'"
        }
        Dumps::WaitingOnALock => {
            "SELECT count(*) FROM pg_stat_activity \
             WHERE application_name = 'compute_ctl:database_schema' AND wait_event_type = 'Lock'"
        }
    };
    admin.query_one(sql, &[]).unwrap().get(0)
}

/// Waits (a minute at most, else panics with `why`) until `dumps` counts `n`.
fn wait_for_dumps(admin: &mut postgres::Client, which: Dumps, n: i64, why: &str) {
    let deadline = Instant::now() + MINUTE;
    while dumps(admin, which) != n {
        assert!(Instant::now() < deadline, "{why}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A compute whose database `app` has a table `locked`, and a session to lock it with: a
/// `pg_dump` then waits behind `LOCK TABLE locked IN ACCESS EXCLUSIVE MODE`.
fn with_a_lockable_table(env: Vec<(String, String)>) -> (Compute, postgres::Client) {
    let mut compute = Compute::start(Launch {
        spec: Some(spec(free_port())),
        env,
        ..Launch::default()
    });
    compute.wait_running();
    let mut holder = compute.connect("cloud_admin", None, "app").unwrap();
    holder
        .batch_execute("CREATE TABLE locked (id int)")
        .unwrap();
    (compute, holder)
}

/// The pool's limit (`CATALOG_THREADS` + `CATALOG_QUEUE_MAX`: 2 + 8) while every dump waits
/// on a lock, the probes answering meanwhile (with the default time limit of 60 s, so the
/// machine's load cannot turn a waiting dump into a 504).
#[test]
fn the_catalog_pool_limit_refuses_at_once_and_the_probes_answer() {
    let (mut compute, mut holder) = with_a_lockable_table(Vec::new());
    // pg_dump's ACCESS SHARE lock on `locked` waits behind this one.
    let mut hold = holder.transaction().unwrap();
    hold.batch_execute("LOCK TABLE locked IN ACCESS EXCLUSIVE MODE")
        .unwrap();

    let (results, answers) = mpsc::channel();
    let url = compute.url("/database_schema?database=app");
    let send = |n: usize| {
        for _ in 0..n {
            let (url, results) = (url.clone(), results.clone());
            std::thread::spawn(move || {
                let _ = results.send(call("GET", &url, &[], None));
            });
        }
    };
    // First the two the pool's threads run, until both pg_dumps wait on the lock: the
    // threads are busy from then on, so what comes next only queues or is refused.
    send(2);
    let mut admin = compute.admin();
    wait_for_dumps(
        &mut admin,
        Dumps::WaitingOnALock,
        2,
        "the two dumps never waited on the lock",
    );
    // Then ten more for a queue of eight: the two beyond it are answered at once.
    send(10);
    for _ in 0..2 {
        let (status, body) = answers.recv_timeout(MINUTE).unwrap();
        assert_eq!(status, 503, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("too many catalog requests"),
            "{body}"
        );
    }
    // Every catalog request is refused while the pool is full; probes answer at once.
    let (status, body) = call("GET", &compute.url("/dbs_and_roles"), &[], None);
    assert_eq!(status, 503, "{body}");
    assert_eq!(compute.get("/healthz").unwrap().0, 200);
    assert_eq!(compute.state()["phase"], "running");
    assert!(
        answers.try_recv().is_err(),
        "a dump finished under the lock"
    );
    hold.rollback().unwrap();
    for _ in 0..10 {
        let (status, body) = answers.recv_timeout(MINUTE).unwrap();
        assert_eq!(status, 200, "{body}");
        assert!(body
            .as_str()
            .unwrap()
            .contains("CREATE TABLE public.locked"));
    }

    compute.signal(libc::SIGTERM);
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
}

/// The time limit (`SCHEMA_DUMP_TIMEOUT`, through its test knob): pg_dump killed, 504 naming
/// it, no pg_dump session left.
#[test]
fn a_dump_beyond_the_time_limit_is_killed_and_answered_504() {
    let timeout_ms = 3000;
    let (mut compute, mut holder) = with_a_lockable_table(vec![(
        "COMPUTE_CTL_TEST_SCHEMA_DUMP_TIMEOUT_MS".into(),
        timeout_ms.to_string(),
    )]);
    let url = compute.url("/database_schema?database=app");
    let mut hold = holder.transaction().unwrap();
    hold.batch_execute("LOCK TABLE locked IN ACCESS EXCLUSIVE MODE")
        .unwrap();
    let started = Instant::now();
    let (status, body) = call("GET", &url, &[], None);
    let took = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("SCHEMA_DUMP_TIMEOUT"),
        "{body}"
    );
    // Not before the knob's limit, and by the knob's limit, not the default's 60 s.
    assert!(took >= Duration::from_millis(timeout_ms), "{took:?}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    hold.rollback().unwrap();
    let mut admin = compute.admin();
    wait_for_dumps(
        &mut admin,
        Dumps::All,
        0,
        "pg_dump's session outlived its kill",
    );
    compute.signal(libc::SIGTERM);
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
}

/// `STREAM_UNSENT_BYTES_MAX`: a client that stops reading a streamed dump holds pg_dump back
/// (it blocks on its pipe; compute_ctl holds at most the limit, not the dump), and a client
/// that hangs up stops it.
#[test]
fn a_dump_reader_that_stops_holds_pg_dump_back_and_one_that_hangs_up_stops_it() {
    let (mut compute, mut holder) = with_a_lockable_table(Vec::new());
    // 12 MiB: under SCHEMA_DUMP_BYTES_MAX, far over what the small socket buffers below and
    // the stream's own limit hold.
    holder
        .batch_execute(
            "DO $$ BEGIN EXECUTE format('COMMENT ON TABLE locked IS %L', \
             repeat('x', 12 * 1024 * 1024)); END $$;",
        )
        .unwrap();
    let raw = std::net::TcpStream::connect(("127.0.0.1", compute.http_port)).unwrap();
    let small: libc::c_int = 64 * 1024;
    // SAFETY: a valid socket and a c_int option of its size.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(&raw),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&small as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
    std::io::Write::write_all(
        &mut &raw,
        b"GET /database_schema?database=app HTTP/1.1\r\nHost: t\r\n\r\n",
    )
    .unwrap();
    let mut head = [0_u8; 64];
    let n = std::io::Read::read(&mut &raw, &mut head).unwrap();
    assert!(
        String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200 OK"),
        "{}",
        String::from_utf8_lossy(&head[..n])
    );
    let mut admin = compute.admin();
    // Unread, the dump does not end: pg_dump is still there after it would have finished
    // many times over (a 12 MiB dump takes well under a second here).
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        dumps(&mut admin, Dumps::All),
        1,
        "pg_dump ended with its reader stopped"
    );
    assert_eq!(compute.get("/healthz").unwrap().0, 200);
    // Hung up: pg_dump is stopped.
    drop(raw);
    wait_for_dumps(&mut admin, Dumps::All, 0, "pg_dump outlived its reader");
    compute.signal(libc::SIGTERM);
    assert_eq!(compute.wait_exit(MINUTE).code(), Some(0));
}
