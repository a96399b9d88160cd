//! The first ten minutes (issue 18): each mistake a new user makes, through the real binary,
//! gets an answer that names the object, the cause and the fix, and a refusal leaves nothing
//! behind where the contract says so.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::compute::{binary, embedded_spec, free_port, run_once, Compute, Launch};

const MINUTE: Duration = Duration::from_secs(60);

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

/// Writes `spec` into `dir/spec.json`.
fn write_spec(dir: &Path, spec: &Value) -> PathBuf {
    let path = dir.join("spec.json");
    std::fs::write(&path, spec.to_string()).unwrap();
    path
}

/// `compute_ctl spec check FILE -b <the directory of postgres>`.
fn spec_check(file: &Path) -> Output {
    Command::new(binary())
        .args(["spec", "check"])
        .arg(file)
        .arg("-b")
        .arg(crate::support::postgres::bindir())
        .output()
        .unwrap()
}

/// The run refuses `spec` with exit 3 before it touches anything: no state directory, no
/// PGDATA. Returns its stderr.
fn refused_at_start(spec: &Value) -> String {
    let dir = crate::support::compute::traversable_tempdir();
    let path = write_spec(dir.path(), spec);
    let pgdata = dir.path().join("pgdata");
    let output = run_once(&pgdata, Some(&path), &[]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert!(!pgdata.exists(), "PGDATA was created");
    assert!(
        !dir.path().join("pgdata.state").exists(),
        "the state directory was created"
    );
    stderr(&output)
}

// 1. PGDATA below a directory the Postgres user cannot enter.
#[test]
fn pgdata_the_postgres_user_cannot_reach_is_refused_naming_the_directory_and_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    // Tests run as root: Postgres runs as `postgres`, who cannot enter a root-owned 0700.
    assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
    let dir = crate::support::compute::traversable_tempdir();
    let locked = dir.path().join("root-only");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    let pgdata = locked.join("pgdata");
    let spec = write_spec(dir.path(), &embedded_spec(free_port()));
    let output = run_once(&pgdata, Some(&spec), &[]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "OS user postgres (--pg-user), who runs Postgres, cannot enter {} (mode 700, owner uid 0)",
            locked.display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("chmod o+x {}", locked.display())),
        "{err}"
    );
    assert!(err.contains("or name another --pg-user"), "{err}");
    assert!(!pgdata.exists(), "PGDATA was created");
    assert!(
        !locked.join("pgdata.state").exists(),
        "the state directory was created"
    );
}

// 2. The port only in `cluster.postgresql_conf`, as neon_local writes it.
#[test]
fn a_port_only_in_postgresql_conf_is_the_port_connected_to() {
    let port = free_port();
    let mut spec = embedded_spec(port);
    spec["cluster"]["settings"]
        .as_array_mut()
        .unwrap()
        .retain(|s| s["name"] != "port");
    spec["cluster"]["postgresql_conf"] = json!(format!(
        "# as neon_local writes it\nport = {port}\nmax_connections=20\n"
    ));
    let mut compute = Compute::start(Launch {
        spec: Some(spec),
        ..Launch::default()
    });
    compute.wait_running();
    let rows = compute.admin().query("SHOW port", &[]).unwrap();
    assert_eq!(rows[0].get::<_, String>(0), port.to_string());
    let spawned = compute
        .journal()
        .into_iter()
        .find(|r| r["kind"] == "step_finished" && r["step"] == "spawn_postgres")
        .unwrap_or_else(|| panic!("no spawn_postgres record\n{}", compute.log()));
    assert_eq!(spawned["output"]["detail"]["port"], port, "{spawned}");
}

// 2. A start on a port compute_ctl does not connect to fails at once, naming both, and is
// not retried.
#[test]
fn a_start_compute_ctl_cannot_connect_to_names_host_and_port_and_is_not_retried() {
    let port = free_port();
    let other = free_port();
    let mut compute = Compute::start(Launch {
        spec: Some(embedded_spec(port)),
        args: vec![
            "-C".into(),
            format!("postgresql://cloud_admin@127.0.0.1:{other}/postgres"),
        ],
        ..Launch::default()
    });
    let state = compute.wait_phase("failed", MINUTE);
    let error = &state["error"];
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("listens on port {port} (its postmaster.pid)")),
        "{message}"
    );
    assert!(
        message.contains(&format!("connects to 127.0.0.1:{other} as cloud_admin")),
        "{message}"
    );
    assert!(
        message.contains(&format!("give -C/--connstr port {port} or no port")),
        "{message}"
    );
    assert_eq!(error["retryable"], false, "{state}");
    let spawns = compute
        .journal()
        .iter()
        .filter(|r| r["kind"] == "step_started" && r["step"] == "spawn_postgres")
        .count();
    assert_eq!(spawns, 1, "the start was retried");
}

// 3. The Postgres port is taken.
#[test]
fn a_taken_port_is_named_with_postgres_reason_and_the_fix() {
    let port = free_port();
    let _taken = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let mut compute = Compute::start(Launch {
        spec: Some(embedded_spec(port)),
        ..Launch::default()
    });
    let state = compute.wait_phase("failed", MINUTE);
    let message = state["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("could not bind IPv4 address \"127.0.0.1\": Address already in use"),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "port {port} is taken by another process: stop it, or give the spec another port setting"
        )),
        "{message}"
    );
}

// 4. `-b` naming the directory of the binaries.
#[test]
fn pgbin_as_a_directory_is_where_postgres_is() {
    let bindir = crate::support::postgres::bindir();
    let mut compute = Compute::start(Launch {
        spec: Some(embedded_spec(free_port())),
        args: vec!["-b".into(), bindir.display().to_string()],
        ..Launch::default()
    });
    compute.wait_running();

    // A directory without postgres is refused saying so, before anything is written.
    let dir = crate::support::compute::traversable_tempdir();
    let empty = dir.path().join("bin");
    std::fs::create_dir(&empty).unwrap();
    let spec = write_spec(dir.path(), &embedded_spec(free_port()));
    let pgdata = dir.path().join("pgdata");
    let output = run_once(&pgdata, Some(&spec), &["-b", empty.to_str().unwrap()]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "-b/--pgbin {}: a directory without a postgres binary in it; name the postgres binary",
            empty.display()
        )),
        "{err}"
    );
    assert!(!pgdata.exists() && !dir.path().join("pgdata.state").exists());
}

// 5. A value Postgres would refuse at start.
#[test]
fn a_setting_value_of_the_wrong_type_is_refused_by_spec_check_at_start_and_by_post_spec() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = embedded_spec(free_port());
    spec["cluster"]["settings"][3] = json!({"name": "shared_buffers", "value": "banana"});
    let output = spec_check(&write_spec(dir.path(), &spec));
    assert_eq!(output.status.code(), Some(3), "{}", stdout(&output));
    let expected = "cluster.settings[3]: shared_buffers: invalid value \"banana\": an integer is \
                    expected, a number of 8kB or one followed by a unit (B, kB, MB, GB or TB), \
                    as in '128MB'";
    assert_eq!(stderr(&output).trim(), expected);
    assert!(refused_at_start(&spec).contains(expected));
    // POST /spec: 400 at the same path, nothing journaled.
    let mut compute = Compute::start(Launch::default());
    compute.wait_phase("empty", MINUTE);
    let seq = compute.state()["seq"].clone();
    let (status, body) = compute.post_spec(&spec);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["path"], "cluster.settings[3]", "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("as in '128MB'"),
        "{body}"
    );
    assert_eq!(
        compute.state()["seq"],
        seq,
        "the refused spec was journaled"
    );

    // A unit Postgres converts, out of the range it gives.
    spec["cluster"]["settings"][3] = json!({"name": "shared_buffers", "value": "64kB"});
    let output = spec_check(&write_spec(dir.path(), &spec));
    assert_eq!(output.status.code(), Some(3));
    assert!(
        stderr(&output).contains(
            "shared_buffers: \"64kB\" is outside the valid range: it is 8 8kB, and Postgres takes 16 to 1073741823 8kB"
        ),
        "{}",
        stderr(&output)
    );
    spec["cluster"]["settings"][3] = json!({"name": "shared_buffers", "value": "1.5GB"});
    let output = spec_check(&write_spec(dir.path(), &spec));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

// 5. A database owned by a role that will not exist.
#[test]
fn a_database_owner_that_is_no_role_is_refused_by_spec_check_and_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = embedded_spec(free_port());
    spec["cluster"]["roles"] = json!([{"name": "app", "encrypted_password": null}]);
    spec["cluster"]["databases"] = json!([
        {"name": "app", "owner": "app"},
        {"name": "admin_db", "owner": "cloud_admin"},
        {"name": "orphan", "owner": "nobody"}
    ]);
    let expected = "cluster.databases[2].owner: database \"orphan\" is owned by \"nobody\", which \
                    is neither a role of the spec (cluster.roles) nor the admin role \
                    \"cloud_admin\" (the user of -C): add the role to cluster.roles, or give the \
                    database one of those owners";
    let file = write_spec(dir.path(), &spec);
    let output = spec_check(&file);
    assert_eq!(output.status.code(), Some(3));
    assert_eq!(stderr(&output).trim(), expected);
    // Without -b too: owners need no binary.
    let output = Command::new(binary())
        .args(["spec", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(stderr(&output).trim(), expected);
    assert!(refused_at_start(&spec).contains(expected));
}

// 5. `cluster.postgresql_conf` checked like `cluster.settings`.
#[test]
fn postgresql_conf_lines_are_checked_like_settings() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = embedded_spec(free_port());
    spec["cluster"]["postgresql_conf"] = json!(
        "# neon_local's shape\nshared_preload_libraries = 'neon'\nwork_mem = lots\nno_such_thing = 1\n"
    );
    let output = spec_check(&write_spec(dir.path(), &spec));
    assert_eq!(output.status.code(), Some(3));
    let err = stderr(&output);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert!(
        lines[0].starts_with(
            "cluster.postgresql_conf: line 2: shared_preload_libraries: library \"neon\" is not installed"
        ) && lines[0].ends_with("(it is part of Neon's Postgres build; a vanilla PostgreSQL cannot load it)"),
        "{err}"
    );
    assert!(
        lines[1].starts_with("cluster.postgresql_conf: line 3: work_mem: invalid value \"lots\""),
        "{err}"
    );
    assert!(
        lines[2].starts_with(
            "cluster.postgresql_conf: line 4: unrecognized configuration parameter \"no_such_thing\""
        ),
        "{err}"
    );
    assert!(refused_at_start(&spec).contains("line 2: shared_preload_libraries"));
}

// 6. Someone else's PGDATA: nothing is written, not even the state directory beside it.
#[test]
fn a_foreign_pgdata_is_refused_before_the_state_directory_exists() {
    let dir = crate::support::compute::traversable_tempdir();
    let pgdata = dir.path().join("pgdata");
    std::fs::create_dir(&pgdata).unwrap();
    std::fs::write(pgdata.join("PG_VERSION"), "15\n").unwrap();
    let spec = write_spec(dir.path(), &embedded_spec(free_port()));
    let output = run_once(&pgdata, Some(&spec), &[]);
    let err = stderr(&output);
    assert_eq!(output.status.code(), Some(6), "{err}");
    assert!(
        err.contains("wipes only a directory that is absent, empty, or carries its marker file"),
        "{err}"
    );
    assert!(
        !dir.path().join("pgdata.state").exists(),
        "the state directory was created"
    );
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut entries = entries;
    entries.sort();
    assert_eq!(entries, vec!["pgdata", "spec.json"]);
}

/// `(role, password)` of the README's quick-start table: rows "| `role` | `password` | …".
fn readme_passwords() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(repo_file("README.md")).unwrap();
    readme
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let role = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let password = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            password
                .ends_with("-secret")
                .then(|| (role.to_string(), password.to_string()))
        })
        .collect()
}

// 7. The quick start's passwords are in the README, and `psql -h` as it says connects.
#[test]
fn the_quick_start_passwords_in_the_readme_log_in() {
    let passwords = readme_passwords();
    let roles: Vec<&str> = passwords.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, vec!["app", "reporter", "bob"], "{passwords:?}");
    let mut spec: Value = serde_json::from_slice(
        &std::fs::read(repo_file("fixtures/specs/embedded-default.json")).unwrap(),
    )
    .unwrap();
    let port = free_port();
    for setting in spec["cluster"]["settings"].as_array_mut().unwrap() {
        if setting["name"] == "port" {
            setting["value"] = json!(port.to_string());
        }
    }
    let mut compute = Compute::start(Launch {
        spec: Some(spec),
        ..Launch::default()
    });
    compute.wait_running();
    for (role, password) in &passwords {
        let mut client = compute
            .connect(role, Some(password), "postgres")
            .unwrap_or_else(|e| panic!("{role} cannot log in with {password}: {e}"));
        let rows = client.query("SELECT current_user::text", &[]).unwrap();
        assert_eq!(&rows[0].get::<_, String>(0), role);
        assert!(
            compute.connect(role, Some("wrong"), "postgres").is_err(),
            "{role} logs in with a wrong password"
        );
    }
    // The README's psql line, with the port of this run.
    let output = Command::new(crate::support::postgres::bindir().join("psql"))
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "app",
            "-d",
            "app",
        ])
        .args(["-Atc", "SELECT current_database()"])
        .env("PGPASSWORD", "app-secret")
        .output()
        .unwrap();
    assert_eq!(stdout(&output).trim(), "app", "{}", stderr(&output));
}

// 8. `--help`, the completions, the man page.
#[test]
fn help_shows_exit_codes_variables_an_example_and_required_pgdata() {
    let output = Command::new(binary()).arg("--help").output().unwrap();
    assert!(output.status.success());
    let help = stdout(&output);
    for words in [
        "-D, --pgdata <DIR>",
        "Exit codes:",
        "6   PGDATA is not safe to wipe",
        "11  start-up or configuration failed",
        "COMPUTE_CTL_LOG",
        "NEON_CONTROL_PLANE_TOKEN",
        "Example",
        "compute_ctl -D /tmp/compute/pgdata -S fixtures/specs/embedded-default.json",
        "psql -h 127.0.0.1 -p 55432 -U cloud_admin postgres",
        "completions",
        "man",
    ] {
        assert!(help.contains(words), "--help lacks {words:?}:\n{help}");
    }
    // Usage marks -D as required; a run without it is a usage error (exit 2).
    assert!(
        help.contains("Usage: compute_ctl [OPTIONS] --pgdata <DIR>"),
        "{help}"
    );
    let output = Command::new(binary())
        .arg("-S")
        .arg("/x.json")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--pgdata <DIR>"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn completions_and_the_man_page_are_printed_from_the_same_definitions() {
    let dir = tempfile::tempdir().unwrap();
    for (shell, marker, check) in [
        ("bash", "complete -F _compute_ctl", Some(["bash", "-n"])),
        ("zsh", "#compdef compute_ctl", None),
        ("fish", "complete -c compute_ctl", None),
    ] {
        let output = Command::new(binary())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        let script = stdout(&output);
        assert!(script.contains(marker), "{shell}:\n{script}");
        assert!(
            script.contains("pgdata") && script.contains("journal"),
            "{shell}"
        );
        if let Some([program, flag]) = check {
            let path = dir.path().join(shell);
            std::fs::write(&path, &script).unwrap();
            let checked = Command::new(program).arg(flag).arg(&path).output().unwrap();
            assert!(checked.status.success(), "{}", stderr(&checked));
        }
    }
    let output = Command::new(binary()).arg("man").output().unwrap();
    assert!(output.status.success());
    let page = stdout(&output);
    assert!(page.starts_with(".ie \\n(.g .ds Aq"), "{page}");
    assert!(page.contains(".TH compute_ctl 1"), "{page}");
    assert!(page.contains("\\-\\-pgdata"), "{page}");
    assert!(page.contains("Exit codes:"), "{page}");
    assert!(page.contains("NEON_CONTROL_PLANE_TOKEN"), "{page}");
}

// 5. The units and enum values `--describe-config` does not print are PostgreSQL 15's own.
#[test]
fn the_units_and_enum_values_compute_ctl_knows_are_those_of_the_server() {
    let server = crate::support::postgres::TestPostgres::start();
    let mut client = server.client("postgres");
    let (units, enums, unitless) = compute_ctl::spec::pg15_lists();
    let rows = client
        .query(
            "SELECT name, unit FROM pg_settings WHERE unit IS NOT NULL ORDER BY name",
            &[],
        )
        .unwrap();
    let server_units: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(units, server_units);
    let rows = client
        .query(
            "SELECT lower(name), enumvals FROM pg_settings WHERE vartype = 'enum' ORDER BY 1",
            &[],
        )
        .unwrap();
    let server_enums: Vec<(String, Vec<String>)> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(enums, server_enums);
    let rows = client
        .query(
            "SELECT name FROM pg_settings WHERE unit IS NULL AND vartype IN ('integer', 'real') \
             ORDER BY name",
            &[],
        )
        .unwrap();
    let server_unitless: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(unitless, server_unitless);
}
