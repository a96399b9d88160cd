//! Runs the real `compute_ctl` binary in a temporary directory on free loopback ports, and
//! talks to it over HTTP. Waits poll `/state` or the journal; nothing waits on a fixed sleep.
//! `Drop` kills compute_ctl and any Postgres it left, then removes the directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub use super::postgres::free_port;

/// A temporary directory the Postgres OS user can traverse (tests run as root, Postgres as
/// `postgres`).
pub fn traversable_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix("compute_ctl-it-")
        .permissions(std::fs::Permissions::from_mode(0o755))
        .tempdir()
        .expect("cannot create a temporary directory")
}

/// A minimal embedded-default spec on `port`, listening on loopback only.
pub fn embedded_spec(port: u16) -> Value {
    json!({
        "format_version": 1.0,
        "cluster": {
            "roles": [],
            "databases": [],
            "settings": [
                { "name": "port", "value": port.to_string(), "vartype": "integer" },
                { "name": "listen_addresses", "value": "127.0.0.1", "vartype": "string" },
                { "name": "fsync", "value": "off", "vartype": "bool" },
                { "name": "shared_buffers", "value": "16MB", "vartype": "string" }
            ]
        },
        "delta_operations": []
    })
}

/// Sets `name` to `value` in a spec's `cluster.settings`, replacing an entry of that name.
pub fn set_setting(spec: &mut Value, name: &str, value: &str) {
    let settings = spec["cluster"]["settings"]
        .as_array_mut()
        .expect("cluster.settings is an array");
    settings.retain(|s| s["name"] != name);
    settings.push(json!({ "name": name, "value": value, "vartype": "string" }));
}

/// The md5 verifier as Neon's specs carry it: md5(password + role name), hex, without the
/// `md5` prefix Postgres stores.
pub fn md5_verifier(password: &str, role: &str) -> String {
    let stored = super::postgres::md5_verifier(password, role);
    stored.trim_start_matches("md5").to_string()
}

/// How to start compute_ctl.
#[derive(Debug, Default)]
pub struct Launch {
    /// Written to `<dir>/spec.json` and passed with `-S`.
    pub spec: Option<Value>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Reuse this directory (a restart); else a new one.
    pub dir: Option<PathBuf>,
    pub http_port: Option<u16>,
    /// A command line to run compute_ctl under (e.g. `unshare --pid ...`).
    pub wrapper: Vec<String>,
    /// The compute_ctl binary file to run, if not the one cargo built.
    pub binary: Option<PathBuf>,
    /// Pass `args` only (no `-D`, `--http-addr`, `--monitor-interval`): a command line as
    /// another tool writes it (neon_local); `http_port` is then where it answers.
    pub only_args: bool,
}

/// A running (or exited) compute_ctl.
pub struct Compute {
    dir: Option<tempfile::TempDir>,
    pub root: PathBuf,
    pub pgdata: PathBuf,
    pub state_dir: PathBuf,
    pub http_port: u16,
    child: Option<Child>,
    exit: Option<ExitStatus>,
    binary: PathBuf,
}

impl std::fmt::Debug for Compute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compute").field("root", &self.root).finish()
    }
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_compute_ctl")
}

impl Compute {
    /// Starts compute_ctl and waits until its HTTP API answers (or it exits).
    pub fn start(launch: Launch) -> Compute {
        let (dir, root) = match &launch.dir {
            Some(root) => (None, root.clone()),
            None => {
                let dir = traversable_tempdir();
                let root = dir.path().to_path_buf();
                (Some(dir), root)
            }
        };
        let mut compute = Compute {
            dir,
            pgdata: root.join("pgdata"),
            state_dir: root.join("pgdata.state"),
            root,
            http_port: launch.http_port.unwrap_or_else(free_port),
            child: None,
            exit: None,
            binary: launch.binary.clone().unwrap_or_else(|| binary().into()),
        };
        compute.spawn(&launch);
        compute
    }

    /// Starts compute_ctl again on the same directory and HTTP port (after it exited or was
    /// killed), with `spec` as `-S` if given.
    pub fn restart(&mut self, spec: Option<Value>, args: Vec<String>) {
        self.relaunch(Launch {
            spec,
            args,
            ..Launch::default()
        });
    }

    /// Starts compute_ctl again on the same directory and HTTP port as `launch` says (its
    /// `dir`, `http_port` and `binary` are this compute's).
    pub fn relaunch(&mut self, launch: Launch) {
        assert!(self.child.is_none(), "compute_ctl still runs");
        self.exit = None;
        self.spawn(&launch);
    }

    fn spawn(&mut self, launch: &Launch) {
        let mut command = match launch.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        };
        if !launch.only_args {
            command
                .arg("-D")
                .arg(&self.pgdata)
                .arg("--http-addr")
                .arg(format!("127.0.0.1:{}", self.http_port))
                .arg("--monitor-interval")
                .arg("100ms");
        }
        command
            .args(&launch.args)
            .env("COMPUTE_CTL_LOG", "debug")
            .stdin(Stdio::null());
        if let Some(spec) = &launch.spec {
            let path = self.root.join("spec.json");
            std::fs::write(&path, serde_json::to_vec_pretty(spec).unwrap()).unwrap();
            command.arg("-S").arg(path);
        }
        for (k, v) in &launch.env {
            command.env(k, v);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("compute_ctl.log"))
            .unwrap();
        command.stdout(log.try_clone().unwrap()).stderr(log);
        self.child = Some(command.spawn().expect("cannot start compute_ctl"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self.try_exit().is_some() || self.get("/healthz").is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "compute_ctl did not answer HTTP within 30 s; log:\n{}",
            self.log()
        );
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.root.join("compute_ctl.log")).unwrap_or_default()
    }

    /// `GET path`: (status, JSON body or the text as a JSON string).
    pub fn get(&self, path: &str) -> Result<(u16, Value), String> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .build();
        answer_of(agent.get(&self.url(path)).call(), "GET", path)
            .map(|(status, body, _)| (status, body))
    }

    /// `POST path` with a JSON body and headers: (status, body, X-Request-Id).
    pub fn post(
        &self,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (u16, Value, String) {
        http_call("POST", &self.url(path), headers, body)
            .unwrap_or_else(|e| panic!("POST {path} failed: {e}\nlog:\n{}", self.log()))
    }

    pub fn post_spec(&self, spec: &Value) -> (u16, Value) {
        let (status, body, _) = self.post("/spec", Some(spec), &[]);
        (status, body)
    }

    pub fn state(&self) -> Value {
        match self.get("/state") {
            Ok((200, state)) => state,
            other => panic!("GET /state failed: {other:?}\nlog:\n{}", self.log()),
        }
    }

    /// Polls `/state` until `until` holds; panics with the last state and the log after
    /// `timeout`.
    pub fn wait_state(
        &mut self,
        timeout: Duration,
        what: &str,
        until: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut last = Value::Null;
        while Instant::now() < deadline {
            if let Ok((200, state)) = self.get("/state") {
                if until(&state) {
                    return state;
                }
                last = state;
            } else if let Some(status) = self.try_exit() {
                panic!("compute_ctl exited with {status} while waiting for {what}; last state {last}\nlog:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "timed out after {timeout:?} waiting for {what}; last state {last}\nlog:\n{}",
            self.log()
        );
    }

    /// Polls `/state` until `until(Some(state))` holds, or until compute_ctl exits (then
    /// `until(None)` decides); returns the last state, `None` once it exited.
    pub fn wait_until(
        &mut self,
        timeout: Duration,
        until: impl Fn(Option<&Value>) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.try_exit().is_some() {
                assert!(until(None), "compute_ctl exited\nlog:\n{}", self.log());
                return None;
            }
            if let Ok((200, state)) = self.get("/state") {
                if until(Some(&state)) {
                    return Some(state);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("timed out after {timeout:?}\nlog:\n{}", self.log());
    }

    pub fn wait_phase(&mut self, phase: &str, timeout: Duration) -> Value {
        self.wait_state(timeout, &format!("phase {phase}"), |s| s["phase"] == phase)
    }

    /// Waits until running with the desired generation applied.
    pub fn wait_running(&mut self) -> Value {
        self.wait_state(Duration::from_secs(60), "running, applied = desired", |s| {
            s["phase"] == "running" && s["applied_generation"] == s["desired_generation"]
        })
    }

    /// All journal records, from the HTTP API.
    pub fn journal(&self) -> Vec<Value> {
        let (status, body) = self.get("/journal?since=0&limit=10000").unwrap();
        assert_eq!(status, 200, "{body}");
        body["records"].as_array().cloned().unwrap_or_default()
    }

    /// All journal records, read from the files with `journal dump --json` (works after the
    /// process exited).
    pub fn journal_files(&self) -> Vec<Value> {
        dump_journal(&self.state_dir)
    }

    /// Asserts that `journal verify` passes on the state directory; `context` starts the message.
    pub fn assert_journal_verifies(&self, context: &str) {
        let verify = std::process::Command::new(binary())
            .args(["journal", "verify", "--state-dir"])
            .arg(&self.state_dir)
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{context}: journal verify: {}",
            String::from_utf8_lossy(&verify.stderr)
        );
    }

    /// Transitions as `from->to` strings.
    pub fn transitions(&self) -> Vec<String> {
        self.journal()
            .iter()
            .filter(|r| r["kind"] == "transition")
            .map(|r| {
                format!(
                    "{}->{}",
                    r["from"].as_str().unwrap(),
                    r["to"].as_str().unwrap()
                )
            })
            .collect()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if let Some(child) = &mut self.child {
            if let Ok(Some(status)) = child.try_wait() {
                self.exit = Some(status);
                self.child = None;
            }
        }
        self.exit
    }

    /// Waits for compute_ctl to exit; panics after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.try_exit() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "compute_ctl did not exit within {timeout:?}\nlog:\n{}",
            self.log()
        );
    }

    /// `kill -9` compute_ctl, leaving whatever it started.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The pids of live processes whose working directory is PGDATA (a postmaster and its
    /// backends).
    pub fn postgres_processes(&self) -> Vec<u32> {
        processes_in(&self.pgdata)
    }

    pub fn pg_port(&self) -> u16 {
        let conf = std::fs::read_to_string(self.pgdata.join("postgresql.conf")).unwrap_or_default();
        conf.lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("port = "))
            .map(|v| v.trim_matches('\'').parse().unwrap())
            .unwrap_or(5432)
    }

    /// A connection to the compute's Postgres as `user`.
    pub fn connect(
        &self,
        user: &str,
        password: Option<&str>,
        db: &str,
    ) -> Result<postgres::Client, postgres::Error> {
        let mut config = postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.pg_port())
            .user(user)
            .dbname(db)
            .connect_timeout(Duration::from_secs(5));
        if let Some(password) = password {
            config.password(password);
        }
        config.connect(postgres::NoTls)
    }

    pub fn admin(&self) -> postgres::Client {
        self.connect("cloud_admin", None, "postgres")
            .unwrap_or_else(|e| panic!("cannot connect as cloud_admin: {e}\nlog:\n{}", self.log()))
    }
}

/// `method url` with `headers` and a JSON `body`, waiting up to two minutes: (status, body as
/// JSON or else as a string, X-Request-Id), or the error of a request that got no answer
/// (compute_ctl gone). The body is read whole, past ureq's 10 MB limit of `into_string`.
pub fn http_call(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Result<(u16, Value, String), String> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build();
    let mut request = agent.request(method, url);
    for (name, value) in headers {
        request = request.set(name, value);
    }
    let result = match body {
        Some(body) => request
            .set("Content-Type", "application/json")
            .send_string(&body.to_string()),
        None => request.call(),
    };
    answer_of(result, method, url)
}

/// An answer's status, body (JSON, else a string) and X-Request-Id; the error of a request
/// that got none.
fn answer_of(
    result: Result<ureq::Response, ureq::Error>,
    method: &str,
    url: &str,
) -> Result<(u16, Value, String), String> {
    let response = match result {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = response.status();
    let id = response
        .header("X-Request-Id")
        .unwrap_or_default()
        .to_string();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut response.into_reader(), &mut text)
        .map_err(|e| format!("{method} {url}: reading the answer: {e}"))?;
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok((status, value, id))
}

/// Runs compute_ctl to its exit on `pgdata` (with `-S spec` when given, then `args`), on a free
/// HTTP port: for the refusals that end it at start-up.
pub fn run_once(pgdata: &Path, spec: Option<&Path>, args: &[&str]) -> std::process::Output {
    let mut command = Command::new(binary());
    command.arg("-D").arg(pgdata);
    if let Some(spec) = spec {
        command.arg("-S").arg(spec);
    }
    command
        .arg("--http-addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .args(args)
        .output()
        .expect("cannot run compute_ctl")
}

/// The records of the journal in `state_dir`, read from the files with `journal dump --json`
/// (works with or without a compute_ctl running on it).
pub fn dump_journal(state_dir: &Path) -> Vec<Value> {
    let output = Command::new(binary())
        .args(["journal", "dump", "--json", "--state-dir"])
        .arg(state_dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Live processes whose working directory is `dir`.
pub fn processes_in(dir: &Path) -> Vec<u32> {
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next())
            == Some("Z")
        {
            continue;
        }
        if std::fs::read_link(format!("/proc/{pid}/cwd"))
            .ok()
            .as_deref()
            == Some(dir.as_path())
        {
            found.push(pid);
        }
    }
    found
}

/// Kills every process working in `dir` (SIGKILL) and waits for them to go.
pub fn kill_processes_in(dir: &Path) {
    for _ in 0..100 {
        let pids = processes_in(dir);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Compute {
    fn drop(&mut self) {
        self.kill9();
        kill_processes_in(&self.pgdata);
        if std::thread::panicking() {
            eprintln!(
                "--- compute_ctl log ({}) ---\n{}",
                self.root.display(),
                self.log()
            );
        }
        drop(self.dir.take());
    }
}

/// A directory of Postgres tools for `-b`: `postgres` runs the real one, the other tools are
/// links to the real ones, except `overrides` (`name`, shell script body) which replace them.
/// The real binary is `/usr/lib/postgresql/15/bin`.
pub fn standin_bindir(dir: &Path, overrides: &[(&str, &str)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let real = Path::new("/usr/lib/postgresql/15/bin");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(real).unwrap() {
        let name = entry.unwrap().file_name();
        let name = name.to_string_lossy().to_string();
        let target = bin.join(&name);
        if let Some((_, body)) = overrides.iter().find(|(n, _)| *n == name) {
            std::fs::write(&target, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        } else if name == "postgres" {
            // A file, not a link: compute_ctl resolves links to find the tools beside postgres.
            std::fs::write(
                &target,
                format!("#!/bin/sh\nexec {}/postgres \"$@\"\n", real.display()),
            )
            .unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).unwrap();
        } else {
            std::os::unix::fs::symlink(real.join(&name), &target).unwrap();
        }
    }
    bin.join("postgres")
}
