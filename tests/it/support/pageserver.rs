//! A test-only Neon pageserver: a TCP server on loopback that speaks the Postgres v3 wire
//! protocol (startup, cleartext-password authentication, simple and extended queries, COPY
//! OUT) well enough for libpq, the `postgres` crate and compute_ctl, and answers exactly
//! `basebackup <tenant> <timeline> [<lsn>] --gzip [--replica]` with a gzip'd tar.
//!
//! The tar is made from a real base backup of a real Postgres (`pg_basebackup` of a
//! `TestPostgres` holding a table with rows), so what compute_ctl unpacks is a data directory
//! that starts. The server records every command and startup it saw; it can be told, one
//! connection at a time, to fail, to drop the connection or to stall in the middle of the
//! stream. Dropping it stops it; threads of stalled connections end at once too.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::postgres::{bindir, TestPostgres, SUPERUSER};

/// Bytes of tar data in one CopyData message (Neon's pageserver sends small chunks too).
const CHUNK_BYTES: usize = 16 * 1024;
/// How long a stalled connection waits for its client to go before giving up by itself.
const STALL_MAX: Duration = Duration::from_secs(120);

/// A base backup of a real Postgres, as a pageserver would send it.
#[derive(Debug)]
pub struct SampleBackup {
    /// The gzip'd tar.
    pub gz: Arc<Vec<u8>>,
    /// Files in the tar.
    pub files: usize,
    /// The table in database `postgres` and how many rows it has.
    pub table: &'static str,
    pub rows: i64,
    /// The sum of its `id` column, to compare contents and not only the count.
    pub id_sum: i64,
}

/// The backup every test shares: made once per test binary (a Postgres start and a
/// `pg_basebackup` take a few seconds).
pub fn sample_backup() -> &'static SampleBackup {
    static BACKUP: OnceLock<SampleBackup> = OnceLock::new();
    BACKUP.get_or_init(make_sample_backup)
}

fn make_sample_backup() -> SampleBackup {
    const TABLE: &str = "pageserver_rows";
    const ROWS: i64 = 5000;
    let source = TestPostgres::start();
    let mut client = source.client("postgres");
    client
        .batch_execute(&format!(
            "CREATE TABLE {TABLE} (id bigint PRIMARY KEY, payload text NOT NULL);
             INSERT INTO {TABLE} SELECT g, md5(g::text) FROM generate_series(1, {ROWS}) g;
             CHECKPOINT;"
        ))
        .unwrap();
    let id_sum: i64 = client
        .query_one(&format!("SELECT sum(id)::bigint FROM {TABLE}"), &[])
        .unwrap()
        .get(0);
    drop(client);

    let work = tempfile::Builder::new()
        .prefix("compute_ctl-it-backup-")
        .tempdir()
        .unwrap();
    let target = work.path().join("data");
    let mut command = Command::new(bindir().join("pg_basebackup"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            command.env_remove(key);
        }
    }
    let output = command
        .arg("-D")
        .arg(&target)
        .args(["-X", "stream", "-c", "fast", "--no-sync", "-h", "127.0.0.1"])
        .arg("-p")
        .arg(source.port().to_string())
        .args(["-U", SUPERUSER])
        .output()
        .expect("run pg_basebackup");
    assert!(
        output.status.success(),
        "pg_basebackup failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    drop(source);

    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    let files = append_tree(&mut builder, &target, Path::new(""));
    let gz = builder.into_inner().unwrap().finish().unwrap();
    SampleBackup {
        gz: Arc::new(gz),
        files,
        table: TABLE,
        rows: ROWS,
        id_sum,
    }
}

/// Appends the tree under `dir` with paths relative to the data directory's root (no entry
/// for the root itself, no `./`), a directory before what it holds, as a pageserver does.
fn append_tree<W: Write>(builder: &mut tar::Builder<W>, dir: &Path, relative: &Path) -> usize {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    let mut files = 0;
    for path in entries {
        let name = relative.join(path.file_name().unwrap());
        builder.append_path_with_name(&path, &name).unwrap();
        if path.is_dir() {
            files += append_tree(builder, &path, &name);
        } else {
            files += 1;
        }
    }
    files
}

/// What the server does with one basebackup request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// The whole backup.
    Serve,
    /// An ErrorResponse with this message (as Neon's would say "tenant ... not found").
    Error(String),
    /// This many bytes of the backup, then the connection is cut.
    DropAfter(usize),
    /// This many bytes, then nothing until the client goes away.
    StallAfter(usize),
}

/// How to set the server up.
#[derive(Debug)]
pub struct Setup {
    /// `None`: any free port.
    pub port: Option<u16>,
    pub tenant: String,
    pub timeline: String,
    /// When set, the client must send it as its (cleartext) password.
    pub token: Option<String>,
    /// Answers for the first requests, in order; `Serve` once used up.
    pub script: Vec<Answer>,
}

/// What the server saw.
#[derive(Debug, Default)]
struct Seen {
    /// Every query text received (simple Query and Parse), in order.
    commands: Vec<String>,
    /// The startup parameters of every connection.
    startups: Vec<HashMap<String, String>>,
    /// The passwords clients sent.
    passwords: Vec<String>,
    /// For each stalled stream: how long after the stall the client closed the connection.
    stall_ended: Vec<Duration>,
}

struct Shared {
    backup: Arc<Vec<u8>>,
    tenant: String,
    timeline: String,
    token: Option<String>,
    script: Mutex<VecDeque<Answer>>,
    seen: Mutex<Seen>,
    stop: AtomicBool,
    connections: AtomicUsize,
}

/// A running test pageserver. See the module documentation.
pub struct TestPageserver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TestPageserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPageserver")
            .field("addr", &self.addr)
            .finish()
    }
}

impl TestPageserver {
    /// Starts serving `backup` (a gzip'd tar).
    pub fn start(setup: Setup, backup: Arc<Vec<u8>>) -> TestPageserver {
        let port = setup.port.unwrap_or(0);
        // A port a compute was already pointed at may still be in TIME_WAIT: retry a bit.
        let deadline = Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match TcpListener::bind(("127.0.0.1", port)) {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("test pageserver cannot bind port {port} yet: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("test pageserver cannot bind port {port}: {e}"),
            }
        };
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            backup,
            tenant: setup.tenant,
            timeline: setup.timeline,
            token: setup.token,
            script: Mutex::new(setup.script.into()),
            seen: Mutex::new(Seen::default()),
            stop: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
        });
        let accepting = shared.clone();
        let accept = std::thread::Builder::new()
            .name("test-pageserver".into())
            .spawn(move || accept_loop(listener, accepting))
            .unwrap();
        TestPageserver {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `postgresql://no_user@127.0.0.1:<port>`, the form of Neon's specs.
    pub fn connstring(&self) -> String {
        format!("postgresql://no_user@127.0.0.1:{}", self.port())
    }

    /// Every query text received, in order.
    pub fn commands(&self) -> Vec<String> {
        self.shared.seen.lock().unwrap().commands.clone()
    }

    pub fn startups(&self) -> Vec<HashMap<String, String>> {
        self.shared.seen.lock().unwrap().startups.clone()
    }

    pub fn passwords(&self) -> Vec<String> {
        self.shared.seen.lock().unwrap().passwords.clone()
    }

    pub fn stall_ended(&self) -> Vec<Duration> {
        self.shared.seen.lock().unwrap().stall_ended.clone()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for TestPageserver {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let conn = shared.clone();
                std::thread::Builder::new()
                    .name("test-pageserver-conn".into())
                    .spawn(move || {
                        let _ = serve_connection(stream, &conn);
                    })
                    .unwrap();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The wire protocol, server side.

/// A backend message: tag, length (counting itself), body.
fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(tag);
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(text.as_bytes());
    out.push(0);
}

fn error_response(severity: &str, code: &str, text: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [
        (b'S', severity),
        (b'V', severity),
        (b'C', code),
        (b'M', text),
    ] {
        body.push(field);
        cstr(&mut body, value);
    }
    body.push(0);
    message(b'E', &body)
}

fn ready_for_query() -> Vec<u8> {
    message(b'Z', b"I")
}

/// Reads a NUL-terminated string at `*at`, moving past it.
fn read_cstr(body: &[u8], at: &mut usize) -> String {
    let start = (*at).min(body.len());
    let end = body[start..]
        .iter()
        .position(|b| *b == 0)
        .map_or(body.len(), |p| start + p);
    *at = end + 1;
    String::from_utf8_lossy(&body[start..end]).into_owned()
}

fn read_exact_or_eof(stream: &mut TcpStream, buf: &mut [u8]) -> io::Result<bool> {
    match stream.read_exact(buf) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// A frontend message after startup: (tag, body); `None` at end of stream.
fn read_message(stream: &mut TcpStream) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut header = [0_u8; 5];
    if !read_exact_or_eof(stream, &mut header)? {
        return Ok(None);
    }
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    assert!(
        (4..1 << 20).contains(&length),
        "bad frontend message length {length}"
    );
    let mut body = vec![0_u8; length - 4];
    stream.read_exact(&mut body)?;
    Ok(Some((header[0], body)))
}

fn serve_connection(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_read_timeout(Some(STALL_MAX))?;
    // The startup packet, after any number of encryption requests we decline.
    let parameters = loop {
        let mut length = [0_u8; 4];
        if !read_exact_or_eof(&mut stream, &mut length)? {
            return Ok(());
        }
        let length = u32::from_be_bytes(length) as usize;
        assert!((8..10_000).contains(&length), "bad startup length {length}");
        let mut body = vec![0_u8; length - 4];
        stream.read_exact(&mut body)?;
        let code = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
        match code {
            // SSLRequest, GSSENCRequest: no.
            80_877_103 | 80_877_104 => stream.write_all(b"N")?,
            // CancelRequest: nothing runs that it could cancel.
            80_877_102 => return Ok(()),
            196_608 => {
                let mut at = 4;
                let mut parameters = HashMap::new();
                while at < body.len() && body[at] != 0 {
                    let name = read_cstr(&body, &mut at);
                    let value = read_cstr(&body, &mut at);
                    parameters.insert(name, value);
                }
                break parameters;
            }
            other => {
                stream.write_all(&error_response(
                    "FATAL",
                    "08P01",
                    &format!("unsupported protocol {other}"),
                ))?;
                return Ok(());
            }
        }
    };
    shared.seen.lock().unwrap().startups.push(parameters);

    if let Some(token) = &shared.token {
        // AuthenticationCleartextPassword, as Neon's pageserver asks for its JWT.
        stream.write_all(&message(b'R', &3_u32.to_be_bytes()))?;
        let Some((tag, body)) = read_message(&mut stream)? else {
            return Ok(());
        };
        let mut at = 0;
        let password = if tag == b'p' {
            read_cstr(&body, &mut at)
        } else {
            String::new()
        };
        shared.seen.lock().unwrap().passwords.push(password.clone());
        if password != *token {
            stream.write_all(&error_response(
                "FATAL",
                "28P01",
                "authentication failed: the token is not valid",
            ))?;
            return Ok(());
        }
    }
    let mut hello = message(b'R', &0_u32.to_be_bytes());
    for (name, value) in [
        ("server_version", "15.0 (test pageserver)"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("DateStyle", "ISO, MDY"),
        ("integer_datetimes", "on"),
        ("standard_conforming_strings", "on"),
    ] {
        let mut body = Vec::new();
        cstr(&mut body, name);
        cstr(&mut body, value);
        hello.extend(message(b'S', &body));
    }
    let mut key = Vec::new();
    key.extend_from_slice(&4242_u32.to_be_bytes());
    key.extend_from_slice(&7_u32.to_be_bytes());
    hello.extend(message(b'K', &key));
    hello.extend(ready_for_query());
    stream.write_all(&hello)?;

    // Extended protocol: prepared statements by name, portals by name.
    let mut statements: HashMap<String, String> = HashMap::new();
    let mut portals: HashMap<String, String> = HashMap::new();
    // After an error in an extended-protocol exchange, everything up to Sync is skipped.
    let mut skipping = false;
    while let Some((tag, body)) = read_message(&mut stream)? {
        if skipping && tag != b'S' {
            continue;
        }
        let mut at = 0;
        match tag {
            b'Q' => {
                let query = read_cstr(&body, &mut at);
                shared.seen.lock().unwrap().commands.push(query.clone());
                if run_command(&mut stream, shared, &query)? == Flow::Closed {
                    return Ok(());
                }
                stream.write_all(&ready_for_query())?;
            }
            b'P' => {
                let name = read_cstr(&body, &mut at);
                let query = read_cstr(&body, &mut at);
                shared.seen.lock().unwrap().commands.push(query.clone());
                statements.insert(name, query);
                stream.write_all(&message(b'1', &[]))?;
            }
            b'B' => {
                let portal = read_cstr(&body, &mut at);
                let statement = read_cstr(&body, &mut at);
                let query = statements.get(&statement).cloned().unwrap_or_default();
                portals.insert(portal, query);
                stream.write_all(&message(b'2', &[]))?;
            }
            b'D' => {
                let kind = body.first().copied().unwrap_or(b'S');
                let mut out = Vec::new();
                if kind == b'S' {
                    out.extend(message(b't', &0_u16.to_be_bytes()));
                }
                // A basebackup has no result rows: it answers with COPY.
                out.extend(message(b'n', &[]));
                stream.write_all(&out)?;
            }
            b'E' => {
                let portal = read_cstr(&body, &mut at);
                let query = portals.get(&portal).cloned().unwrap_or_default();
                match run_command(&mut stream, shared, &query)? {
                    Flow::Closed => return Ok(()),
                    Flow::Failed => skipping = true,
                    Flow::Done => {}
                }
            }
            b'S' => {
                skipping = false;
                stream.write_all(&ready_for_query())?;
            }
            b'C' => stream.write_all(&message(b'3', &[]))?,
            b'H' => stream.flush()?,
            b'X' => return Ok(()),
            other => {
                stream.write_all(&error_response(
                    "FATAL",
                    "08P01",
                    &format!("unexpected message {:?}", other as char),
                ))?;
                return Ok(());
            }
        }
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Done,
    Failed,
    /// The connection was cut (as scripted) or the client left.
    Closed,
}

/// Answers one command: the basebackup as scripted, an ErrorResponse for anything else.
fn run_command(stream: &mut TcpStream, shared: &Shared, query: &str) -> io::Result<Flow> {
    let words: Vec<&str> = query.split_whitespace().collect();
    let refuse = |stream: &mut TcpStream, text: String| -> io::Result<Flow> {
        stream.write_all(&error_response("ERROR", "XX000", &text))?;
        Ok(Flow::Failed)
    };
    let ["basebackup", tenant, timeline, rest @ ..] = words.as_slice() else {
        return refuse(stream, format!("unsupported command {query:?}"));
    };
    if *tenant != shared.tenant {
        return refuse(stream, format!("tenant {tenant} not found"));
    }
    if *timeline != shared.timeline {
        return refuse(stream, format!("timeline {tenant}/{timeline} not found"));
    }
    let (lsn, flags) = match rest {
        [lsn, flags @ ..] if !lsn.starts_with("--") => (Some(*lsn), flags),
        flags => (None, flags),
    };
    if let Some(lsn) = lsn {
        let valid = lsn.split_once('/').is_some_and(|(hi, lo)| {
            u32::from_str_radix(hi, 16).is_ok() && u32::from_str_radix(lo, 16).is_ok()
        });
        if !valid {
            return refuse(stream, format!("invalid LSN {lsn:?}"));
        }
    }
    let gzip = flags.first() == Some(&"--gzip");
    let flags_ok = gzip && matches!(&flags[1..], [] | ["--replica"]);
    if !flags_ok {
        return refuse(
            stream,
            format!("this pageserver serves only `basebackup <tenant> <timeline> [lsn] --gzip [--replica]`, not {query:?}"),
        );
    }
    let answer = shared
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Answer::Serve);
    let (limit, then) = match &answer {
        Answer::Error(text) => return refuse(stream, text.clone()),
        Answer::Serve => (usize::MAX, None),
        Answer::DropAfter(n) => (*n, Some(false)),
        Answer::StallAfter(n) => (*n, Some(true)),
    };
    // CopyOutResponse: binary, no columns.
    let mut start = vec![1_u8];
    start.extend_from_slice(&0_u16.to_be_bytes());
    stream.write_all(&message(b'H', &start))?;
    let data = &shared.backup[..limit.min(shared.backup.len())];
    for chunk in data.chunks(CHUNK_BYTES) {
        if shared.stop.load(Ordering::SeqCst) {
            return Ok(Flow::Closed);
        }
        stream.write_all(&message(b'd', chunk))?;
    }
    match then {
        None => {
            let mut done = message(b'c', &[]);
            let mut tag = Vec::new();
            cstr(&mut tag, "COPY");
            done.extend(message(b'C', &tag));
            stream.write_all(&done)?;
            Ok(Flow::Done)
        }
        Some(false) => {
            let _ = stream.shutdown(Shutdown::Both);
            Ok(Flow::Closed)
        }
        Some(true) => {
            stream.flush()?;
            let stalled = Instant::now();
            stream.set_read_timeout(Some(Duration::from_millis(20)))?;
            let mut byte = [0_u8; 1024];
            while stalled.elapsed() < STALL_MAX && !shared.stop.load(Ordering::SeqCst) {
                match stream.read(&mut byte) {
                    // The client went away: that is what a stall waits for.
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
            shared
                .seen
                .lock()
                .unwrap()
                .stall_ended
                .push(stalled.elapsed());
            Ok(Flow::Closed)
        }
    }
}
