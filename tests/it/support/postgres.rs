//! `TestPostgres`: a throwaway PostgreSQL 15 for one test.
//!
//! Each instance gets a fresh temp dir, an `initdb` with superuser `cloud_admin` and
//! `--auth=trust`, and a postmaster listening on 127.0.0.1 only, on a free port, with its
//! Unix socket inside the temp dir. Dropping it stops the postmaster (immediate shutdown)
//! and removes the temp dir, also when the test panicked.
//!
//! Postgres refuses to run as root, and tests and CI run as root: then `initdb` and
//! `postgres` run as the OS user `postgres` (or `$COMPUTE_CTL_TEST_PG_USER`), which owns the
//! temp dir. The binaries come from `$COMPUTE_CTL_TEST_PG_BINDIR`, else
//! `/usr/lib/postgresql/15/bin`, else `pg_config --bindir`.
//!
//! Start-up is quick (about a second): `initdb -N`, and `fsync`, `full_page_writes` and
//! `synchronous_commit` off, since the data is thrown away.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read as _};
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

/// The superuser `initdb` creates.
pub const SUPERUSER: &str = "cloud_admin";

/// How long a postmaster may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a postmaster may take to stop after SIGQUIT before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Port collisions (another process took the port between probe and bind) are retried.
const START_ATTEMPTS_MAX: usize = 8;

/// Options for [`TestPostgres::start_with`].
#[derive(Clone, Debug, Default)]
pub struct Setup {
    /// Replaces the `postgresql.conf` initdb wrote. The port, listen address, socket
    /// directory and the durability settings are given on the command line and win.
    pub postgresql_conf: Option<String>,
    /// Replaces the `pg_hba.conf` initdb wrote (which trusts everyone).
    pub pg_hba: Option<String>,
}

/// A running throwaway Postgres. See the module documentation.
#[derive(Debug)]
pub struct TestPostgres {
    postmaster: Child,
    port: u16,
    bindir: PathBuf,
    /// Dropped last (fields drop after `Drop::drop`), once the postmaster is gone.
    root: tempfile::TempDir,
}

/// The OS user Postgres runs as when the tests run as root.
#[derive(Clone, Copy, Debug)]
struct RunAs {
    uid: u32,
    gid: u32,
}

impl TestPostgres {
    /// Starts one with initdb's configuration (trust for every connection).
    pub fn start() -> TestPostgres {
        TestPostgres::start_with(Setup::default())
    }

    /// Starts one with `setup`'s configuration files.
    pub fn start_with(setup: Setup) -> TestPostgres {
        TestPostgres::start_with_settings(setup, &[])
    }

    /// Starts one with `setup`'s configuration files and `settings` given as `-c name=value`
    /// after the defaults, so that they win (`synchronous_commit=on` for a server whose
    /// commit latency is measured).
    pub fn start_with_settings(setup: Setup, settings: &[(&str, &str)]) -> TestPostgres {
        let mut root = tempfile::Builder::new()
            .prefix("compute_ctl-test-pg.")
            .tempdir()
            .expect("create temp dir");
        if let Some(user) = run_as() {
            std::os::unix::fs::chown(root.path(), Some(user.uid), Some(user.gid))
                .expect("chown temp dir to the postgres user");
        }
        let bindir = bindir().to_owned();
        let datadir = root.path().join("data");
        let socket_dir = root.path().join("socket");
        fs::create_dir(&socket_dir).unwrap();
        give_to_run_as(&socket_dir);

        let output = command(&bindir, "initdb", root.path())
            .arg("-D")
            .arg(&datadir)
            .args([
                "-U",
                SUPERUSER,
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                // Not plain C: tests can then tell a database's own LC_COLLATE = 'C' apart
                // from the default.
                "--locale=C.UTF-8",
            ])
            .output()
            .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if let Some(conf) = &setup.postgresql_conf {
            write_owned(&datadir.join("postgresql.conf"), conf);
        }
        if let Some(hba) = &setup.pg_hba {
            write_owned(&datadir.join("pg_hba.conf"), hba);
        }

        let log_path = root.path().join("postgres.log");
        for attempt in 1..=START_ATTEMPTS_MAX {
            let port = free_port();
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .unwrap();
            let log_start = log.metadata().unwrap().len();
            let postmaster = command(&bindir, "postgres", root.path())
                .arg("-D")
                .arg(&datadir)
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(&socket_dir)
                .args([
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "fsync=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "logging_collector=off",
                ])
                .args(
                    settings
                        .iter()
                        .flat_map(|(name, value)| ["-c".to_string(), format!("{name}={value}")]),
                )
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn postgres");
            let mut pg = TestPostgres {
                postmaster,
                port,
                bindir: bindir.clone(),
                root,
            };
            match pg.wait_ready() {
                Ok(()) => return pg,
                Err(exited) => {
                    let log = read_from(&log_path, log_start);
                    let collision = log.contains("could not bind")
                        || log.contains("Address already in use")
                        || exited.contains("another server");
                    assert!(
                        collision && attempt < START_ATTEMPTS_MAX,
                        "postgres did not start ({exited}), attempt {attempt}:\n{log}"
                    );
                    // Stop this one (if it still runs) and keep the temp dir for the retry.
                    pg.stop();
                    root = pg.take_root();
                }
            }
        }
        unreachable!("the last attempt panics")
    }

    /// Waits until the postmaster accepts connections on our port and serves our data
    /// directory (not another test's that took the port); `Err` says why not.
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let expected = fs::canonicalize(self.datadir()).unwrap();
        loop {
            if let Some(status) = self.postmaster.try_wait().unwrap() {
                return Err(format!("postmaster exited with {status}"));
            }
            if let Ok(mut client) = self.config(SUPERUSER, "postgres").connect(NoTls) {
                let row = client.query_one("SHOW data_directory", &[]).unwrap();
                let served: String = row.get(0);
                if fs::canonicalize(&served).ok() == Some(expected.clone()) {
                    return Ok(());
                }
                return Err(format!("another server answers on port {}", self.port));
            }
            if Instant::now() > deadline {
                return Err(format!("not accepting connections after {READY_TIMEOUT:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    pub fn datadir(&self) -> PathBuf {
        self.root.path().join("data")
    }

    pub fn socket_dir(&self) -> PathBuf {
        self.root.path().join("socket")
    }

    /// The server log so far (stderr of the postmaster), for assertion messages.
    pub fn log(&self) -> String {
        read_from(&self.root.path().join("postgres.log"), 0)
    }

    /// `postgresql://user@127.0.0.1:port/db`, user and database percent-encoded.
    pub fn connstr(&self, user: &str, db: &str) -> String {
        format!(
            "postgresql://{}@127.0.0.1:{}/{}",
            percent_encode(user),
            self.port,
            percent_encode(db)
        )
    }

    /// A TCP connection configuration for `user` to `db`, without a password.
    pub fn config(&self, user: &str, db: &str) -> postgres::Config {
        let mut config = postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(user)
            .dbname(db)
            .connect_timeout(Duration::from_secs(5));
        config
    }

    /// A connection as the superuser to `db`.
    pub fn client(&self, db: &str) -> Client {
        self.config(SUPERUSER, db)
            .connect(NoTls)
            .unwrap_or_else(|e| panic!("connect to {db:?} as {SUPERUSER}: {e}\n{}", self.log()))
    }

    /// Connects as `user` with `password` over TCP.
    pub fn login(&self, user: &str, password: &str, db: &str) -> Result<Client, postgres::Error> {
        self.config(user, db).password(password).connect(NoTls)
    }

    /// SIGQUIT (immediate shutdown: the data is thrown away) and wait; SIGKILL if it hangs.
    fn stop(&mut self) {
        if self.postmaster.try_wait().ok().flatten().is_some() {
            return;
        }
        let pid = self.postmaster.id() as libc::pid_t;
        // SAFETY: kill(2) with a pid we spawned and have not reaped yet (try_wait above
        // returned None), so the pid still names our child.
        unsafe { libc::kill(pid, libc::SIGQUIT) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if self.postmaster.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.postmaster.kill();
        let _ = self.postmaster.wait();
    }

    /// Moves the temp dir out of a failed attempt, leaving an empty placeholder to drop.
    fn take_root(&mut self) -> tempfile::TempDir {
        let placeholder = tempfile::Builder::new()
            .prefix("compute_ctl-test-pg-placeholder.")
            .tempdir()
            .unwrap();
        std::mem::replace(&mut self.root, placeholder)
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The directory holding `postgres`, `initdb`, `pg_ctl`.
pub fn bindir() -> &'static Path {
    static BINDIR: OnceLock<PathBuf> = OnceLock::new();
    BINDIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("COMPUTE_CTL_TEST_PG_BINDIR") {
            return PathBuf::from(dir);
        }
        let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
        if debian.join("postgres").exists() {
            return debian;
        }
        let output = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .expect("PostgreSQL 15 not found: set COMPUTE_CTL_TEST_PG_BINDIR or install it");
        PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
    })
}

/// `None` when not root; else the user to run Postgres as.
fn run_as() -> Option<RunAs> {
    static RUN_AS: OnceLock<Option<RunAs>> = OnceLock::new();
    *RUN_AS.get_or_init(|| {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let name = std::env::var("COMPUTE_CTL_TEST_PG_USER").unwrap_or_else(|_| "postgres".into());
        Some(lookup_user(&name).unwrap_or_else(|| {
            panic!("tests run as root and need an OS user {name:?} to run Postgres as")
        }))
    })
}

fn lookup_user(name: &str) -> Option<RunAs> {
    let c_name = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: a zeroed passwd is a valid value for getpwnam_r to overwrite.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and `buf` outlives it; getpwnam_r is the
    // thread-safe variant.
    let rc = unsafe {
        libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(RunAs {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

/// Gives `path` to the OS user Postgres runs as (when the tests run as root).
pub fn give_to_run_as(path: &Path) {
    if let Some(user) = run_as() {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).unwrap();
    }
}

fn write_owned(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
    give_to_run_as(path);
}

/// A command for one of the Postgres binaries, as the right OS user, with a clean
/// environment (no `PG*` variable of the caller's leaks into the server or initdb).
pub fn command(bindir: &Path, program: &str, home: &Path) -> Command {
    let mut command = Command::new(bindir.join(program));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            command.env_remove(key);
        }
    }
    command.env("HOME", home).current_dir(home);
    if let Some(user) = run_as() {
        command.uid(user.uid).gid(user.gid);
    }
    command
}

/// A loopback port nobody listens on right now (it may be taken before Postgres binds it;
/// `start_with` retries then).
pub fn free_port() -> u16 {
    // The kernel may give a port that was just closed again: two calls of one test (the API's
    // port and Postgres's) or of two tests running at once would then collide. A port is
    // handed out once per test process.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("find a free loopback port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no loopback port not handed out already in 1000 tries");
}

fn read_from(path: &Path, offset: u64) -> String {
    let mut text = Vec::new();
    let read = fs::File::open(path).and_then(|mut f| {
        io::Seek::seek(&mut f, io::SeekFrom::Start(offset))?;
        f.read_to_end(&mut text)
    });
    match read {
        Ok(_) => String::from_utf8_lossy(&text).into_owned(),
        Err(e) => format!("(no log: {e})"),
    }
}

fn percent_encode(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `md5` + md5(password + role name): the verifier Neon's specs carry (without the prefix).
pub fn md5_verifier(password: &str, role: &str) -> String {
    use md5::{Digest, Md5};
    let digest = Md5::digest(format!("{password}{role}").as_bytes());
    let mut out = String::from("md5");
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}
