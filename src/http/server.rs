//! The HTTP/1.1 server on `std::net`: `IO_THREADS` I/O threads own the sockets (non-blocking,
//! `poll`; the first accepts and deals connections out in turn), read each request whole
//! within its limits (`limits.rs`), hand it to the request threads as a `Job`, and write the
//! answers they (or the parking) give back through a `Responder`.
//! A slow or silent client costs a buffer, never a thread: it is cut off at its deadline.
//! What can be answered at once from the published view (the probes, `/state`) is answered
//! on the I/O thread itself (`AnswerAtOnce`): handing such a request to a thread and its
//! answer back costs more than the answer.
//! It serves several listening sockets (Neon's external and internal ports), each marked with
//! the `Listener` it is, which every request it brings carries.
//!
//! A connection is, in turn: idle (no byte of its next request yet), receiving the head,
//! receiving the body, dispatched (a thread or the parking has it), writing the answer; then
//! idle again (keep-alive) or closed. A dispatched connection whose client hangs up is
//! closed and its `Responder` marked gone, so the parking forgets it.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::limits::{
    BODIES_BYTES_MAX, BODY_BYTES_MAX, BODY_TIMEOUT, CONNECTIONS_MAX, HEAD_TIMEOUT, IDLE_TIMEOUT,
    STREAM_UNSENT_BYTES_MAX, WRITE_TIMEOUT,
};
use super::wire::{self, Head};
use super::Job;
use crate::sync::lock;

/// Bytes read from a socket at a time.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Bytes read from one connection in one turn of the loop (the others get their turn).
const READ_TURN_BYTES_MAX: usize = 256 * 1024;
/// How long a closing connection's remaining bytes are read and dropped.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest sleep of the loop without an event.
const POLL_TIMEOUT_MS_MAX: i32 = 1000;
/// I/O threads. One thread answers a few busy connections in lock-step with its clients
/// (it sleeps while they read, they wait while it writes); two overlap that on two cores
/// (README, "Benchmarks": `GET /state` at 4 connections).
pub const IO_THREADS: usize = 2;

/// Which listening socket a request came on, and so whether its token is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// `--http-addr`, or Neon's `--external-http-port`: tokens are checked when keys exist.
    External,
    /// Neon's `--internal-http-port`, on loopback only: for processes of this machine, no
    /// token (as Neon's internal server).
    Internal,
}

/// A request read whole: head and body.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
    /// The listener it came on.
    pub listener: Listener,
    /// Returns the body's bytes to `BODIES_BYTES_MAX` when the request is done.
    _lease: Lease,
}

impl Request {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        wire::header(&self.headers, name)
    }
}

/// Answers on the I/O thread what needs no wait, no lock held long and no disk (the probes and
/// `/state` from the published view); gives the request back for a request thread otherwise.
/// It must return within microseconds: every connection waits while it runs.
pub type AnswerAtOnce =
    Box<dyn Fn(Request, Responder) -> Option<(Request, Responder)> + Send + Sync + 'static>;

thread_local! {
    /// True on the I/O thread: an answer given there needs no wake-up of the loop, which
    /// writes its outbox before it sleeps again.
    static ON_IO_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Bytes for the I/O thread to write to connection `conn`: a whole answer, or a piece of a
/// streamed one (`more`: the answer goes on).
#[derive(Debug)]
struct Outgoing {
    conn: u64,
    bytes: Vec<u8>,
    /// Close the connection once this is written (and nothing more comes).
    close: bool,
    more: bool,
    /// A streamed answer's bytes handed over and not yet written (`BodyStream`'s limit).
    unsent: Option<Arc<AtomicUsize>>,
}

/// What an I/O thread shares with whoever answers, and with the other I/O threads.
#[derive(Debug)]
pub struct Io {
    outbox: Mutex<Vec<Outgoing>>,
    /// Connections the accepting thread dealt to this one.
    incoming: Mutex<Vec<(TcpStream, SocketAddr, Listener)>>,
    wake: UnixStream,
    /// Answers given and not yet written out (or dropped with their connection): the process
    /// waits for them before it exits.
    pub writes_pending: Arc<AtomicUsize>,
    /// Of every I/O thread: bytes of bodies being received or held by requests.
    bodies_bytes: Arc<AtomicUsize>,
    /// Of every I/O thread: connections open (`CONNECTIONS_MAX`).
    connections: Arc<AtomicUsize>,
}

impl Io {
    /// Queues `out` for the I/O thread, and wakes it unless this is the I/O thread itself
    /// (which writes its outbox before it sleeps again).
    fn hand_over(&self, out: Outgoing) {
        self.writes_pending.fetch_add(1, Ordering::SeqCst);
        lock(&self.outbox).push(out);
        if !ON_IO_THREAD.with(|on| on.get()) {
            self.wake();
        }
    }

    fn wake(&self) {
        // A full wake socket already wakes the loop.
        let _ = (&self.wake).write(&[1]);
    }
}

/// Bytes of `BODIES_BYTES_MAX` held by one request.
#[derive(Debug)]
struct Lease {
    io: Arc<Io>,
    bytes: usize,
}

impl Lease {
    fn take(io: &Arc<Io>, bytes: usize) -> Option<Lease> {
        let taken = io
            .bodies_bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |held| {
                held.checked_add(bytes).filter(|n| *n <= BODIES_BYTES_MAX)
            });
        taken.ok().map(|_| Lease {
            io: io.clone(),
            bytes,
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.io.bodies_bytes.fetch_sub(self.bytes, Ordering::SeqCst);
    }
}

/// The one way to answer a request, from any thread. Dropped unanswered, it answers 500.
#[derive(Debug)]
pub struct Responder {
    conn: u64,
    keep_alive: bool,
    gone: Arc<AtomicBool>,
    io: Arc<Io>,
    sent: bool,
    /// The request's method and path and when it was handed to a thread, for the HTTP
    /// metrics, counted when the answer goes out (a parked request's too).
    label: Option<(String, String, std::time::Instant)>,
}

impl Responder {
    /// Counts the answer in `/metrics` under `method` and `path` when it is sent.
    pub fn labelled(mut self, method: &str, path: &str) -> Responder {
        self.label = Some((
            method.to_string(),
            path.to_string(),
            std::time::Instant::now(),
        ));
        self
    }

    /// Sends the response and hands the connection back for its next request.
    pub fn respond(mut self, status: u16, content_type: &str, body: &[u8], request_id: &str) {
        self.send(status, content_type, body, request_id);
    }

    /// Marks the answer given (`status`): counted in `/metrics` once, after a POST's failpoint
    /// (the driver persisted what it answers; the answer is not written yet).
    fn answered(&mut self, status: u16) {
        self.sent = true;
        if let Some((method, path, started)) = self.label.take() {
            crate::failpoint!(crate::failpoint::http_point(method == "POST", &path));
            crate::metrics::http_request(&method, &path, status, started.elapsed());
        }
    }

    fn send(&mut self, status: u16, content_type: &str, body: &[u8], request_id: &str) {
        self.answered(status);
        let bytes = wire::render(status, content_type, body, request_id, self.keep_alive);
        self.io.hand_over(Outgoing {
            conn: self.conn,
            bytes,
            close: !self.keep_alive,
            more: false,
            unsent: None,
        });
    }

    /// Starts a streamed answer: the head now (`Transfer-Encoding: chunked`), the body in
    /// pieces through the `BodyStream`, at most `STREAM_UNSENT_BYTES_MAX` ahead of the client.
    pub fn stream(mut self, status: u16, content_type: &str, request_id: &str) -> BodyStream {
        self.answered(status);
        let head = wire::render_chunked_head(status, content_type, request_id, self.keep_alive);
        let unsent = Arc::new(AtomicUsize::new(head.len()));
        self.io.hand_over(Outgoing {
            conn: self.conn,
            bytes: head,
            close: false,
            more: true,
            unsent: Some(unsent.clone()),
        });
        BodyStream {
            conn: self.conn,
            keep_alive: self.keep_alive,
            gone: self.gone.clone(),
            io: self.io.clone(),
            unsent,
            ended: false,
        }
    }

    /// The client hung up while its request waited: nobody reads the answer.
    pub fn is_gone(&self) -> bool {
        self.gone.load(Ordering::SeqCst)
    }
}

/// The client is gone (hung up, or cut off at `WRITE_TIMEOUT`): stop producing.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientGone;

/// The body of a streamed answer, sent in chunks from the thread that produces it. Ended by
/// `finish`; dropped unfinished (`abort`), the connection is closed without the last chunk,
/// so the client sees a body cut short, never one that looks whole.
#[derive(Debug)]
pub struct BodyStream {
    conn: u64,
    keep_alive: bool,
    gone: Arc<AtomicBool>,
    io: Arc<Io>,
    unsent: Arc<AtomicUsize>,
    ended: bool,
}

impl BodyStream {
    /// Sends `data` as one chunk; waits while the client is `STREAM_UNSENT_BYTES_MAX` behind.
    pub fn send(&mut self, data: &[u8]) -> Result<(), ClientGone> {
        if data.is_empty() {
            return Ok(());
        }
        while self.unsent.load(Ordering::SeqCst) > STREAM_UNSENT_BYTES_MAX {
            if self.gone.load(Ordering::SeqCst) {
                return Err(ClientGone);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        if self.gone.load(Ordering::SeqCst) {
            return Err(ClientGone);
        }
        let bytes = wire::chunk(data);
        self.unsent.fetch_add(bytes.len(), Ordering::SeqCst);
        self.push(bytes, false, true);
        Ok(())
    }

    /// Ends the body (the last chunk); the connection goes on unless the request said close.
    pub fn finish(mut self) {
        self.ended = true;
        self.push(wire::LAST_CHUNK.to_vec(), !self.keep_alive, false);
    }

    /// Ends the answer without its last chunk and closes the connection: the body was cut
    /// (its producer failed or passed a limit after the head was sent).
    pub fn abort(mut self) {
        self.cut();
    }

    fn cut(&mut self) {
        self.ended = true;
        self.push(Vec::new(), true, false);
    }

    fn push(&self, bytes: Vec<u8>, close: bool, more: bool) {
        self.io.hand_over(Outgoing {
            conn: self.conn,
            bytes,
            close,
            more,
            unsent: Some(self.unsent.clone()),
        });
    }
}

impl Drop for BodyStream {
    fn drop(&mut self) {
        if !self.ended {
            self.cut();
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if !self.sent {
            let body = br#"{"error": "the request was dropped unanswered (a defect)"}"#;
            self.send(500, "application/json", body, "");
        }
    }
}

/// Binds `addr`, which the command line's `flag` gave (named in the error); connections wait
/// in the backlog until `start`.
pub fn bind(addr: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).map_err(|e| anyhow::anyhow!("cannot listen on {flag} {addr}: {e}"))
}

/// Starts the I/O threads on `listeners`; requests `at_once` gives back go to `jobs`.
pub fn start(
    listeners: Vec<(TcpListener, Listener)>,
    at_once: AnswerAtOnce,
    jobs: SyncSender<Job>,
    writes_pending: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    for (listener, _) in &listeners {
        listener.set_nonblocking(true)?;
        // std listens with a backlog of 128: a burst of connections beyond it would wait for
        // SYN retries. Listening again on a listening socket only changes the backlog.
        // SAFETY: a valid, listening socket descriptor.
        let backlog = i32::try_from(CONNECTIONS_MAX).unwrap_or(i32::MAX);
        if unsafe { libc::listen(listener.as_raw_fd(), backlog) } != 0 {
            log::debug!(
                "http: cannot raise the listen backlog: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    let bodies_bytes = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let mut ios = Vec::with_capacity(IO_THREADS);
    let mut wakes = Vec::with_capacity(IO_THREADS);
    for _ in 0..IO_THREADS {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        ios.push(Arc::new(Io {
            outbox: Mutex::new(Vec::new()),
            incoming: Mutex::new(Vec::new()),
            wake: wake_tx,
            writes_pending: writes_pending.clone(),
            bodies_bytes: bodies_bytes.clone(),
            connections: connections.clone(),
        }));
        wakes.push(wake_rx);
    }
    let peers: Arc<[Arc<Io>]> = ios.clone().into();
    let at_once: Arc<AnswerAtOnce> = Arc::new(at_once);
    let mut listeners = Some(listeners);
    for (n, (io, wake)) in ios.into_iter().zip(wakes).enumerate() {
        let mut server = Server {
            listeners: listeners.take().unwrap_or_default(),
            wake,
            io,
            peers: peers.clone(),
            next_peer: 0,
            at_once: at_once.clone(),
            jobs: jobs.clone(),
            conns: HashMap::new(),
            next_conn: 1,
            refused_logged: None,
            accept_paused_until: None,
        };
        std::thread::Builder::new()
            .name(format!("http-io-{n}"))
            .spawn(move || server.run())?;
    }
    Ok(())
}

enum State {
    /// No byte of the next request yet.
    Idle,
    /// Receiving the head (the deadline runs from its first byte).
    Head,
    /// Receiving the body: `total` bytes of head and body.
    Body {
        head: Head,
        total: usize,
        lease: Lease,
    },
    /// A request thread or the parking has the request.
    Dispatched,
    /// Writing `out` from `at`; `close` after it; `more` of a streamed answer may follow
    /// (then back to `Dispatched` once `out` is written, until the next piece).
    Writing {
        out: Vec<u8>,
        at: usize,
        close: bool,
        more: bool,
        unsent: Option<Arc<AtomicUsize>>,
    },
    /// Answered and closing: what the client still sends (a refused body) is read and
    /// dropped until it stops, so that it reads the answer rather than a reset.
    Draining,
}

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    listener: Listener,
    buf: Vec<u8>,
    state: State,
    deadline: Instant,
    gone: Arc<AtomicBool>,
}

struct Server {
    /// Every listening socket, polled after the wake socket, in this order: the first I/O
    /// thread's (it accepts for all); the others have none.
    listeners: Vec<(TcpListener, Listener)>,
    wake: UnixStream,
    io: Arc<Io>,
    /// Every I/O thread's `Io`, this one's too: where accepted connections are dealt.
    peers: Arc<[Arc<Io>]>,
    next_peer: usize,
    at_once: Arc<AnswerAtOnce>,
    jobs: SyncSender<Job>,
    conns: HashMap<u64, Conn>,
    next_conn: u64,
    /// When a refused connection was last logged (one line a second at most).
    refused_logged: Option<Instant>,
    /// `accept` failed (out of file descriptors): the listener rests until then.
    accept_paused_until: Option<Instant>,
}

/// What to do with a connection after an event.
enum Verdict {
    Keep,
    Close,
}

impl Server {
    fn run(&mut self) {
        ON_IO_THREAD.with(|on| on.set(true));
        let mut fds: Vec<libc::pollfd> = Vec::new();
        let mut ids: Vec<u64> = Vec::new();
        loop {
            let now = Instant::now();
            fds.clear();
            ids.clear();
            let listening = self.accept_paused_until.is_none_or(|until| now >= until);
            fds.push(pollfd(self.wake.as_raw_fd(), libc::POLLIN));
            for (listener, _) in &self.listeners {
                fds.push(pollfd(
                    listener.as_raw_fd(),
                    if listening { libc::POLLIN } else { 0 },
                ));
            }
            let conns_at = 1 + self.listeners.len();
            let mut next_deadline = now + Duration::from_millis(POLL_TIMEOUT_MS_MAX as u64);
            for (id, conn) in &self.conns {
                let events = match conn.state {
                    State::Idle | State::Head | State::Body { .. } => {
                        libc::POLLIN | libc::POLLRDHUP
                    }
                    State::Dispatched => libc::POLLRDHUP,
                    State::Draining => libc::POLLIN,
                    State::Writing { .. } => libc::POLLOUT,
                };
                if !matches!(conn.state, State::Dispatched) {
                    next_deadline = next_deadline.min(conn.deadline);
                }
                fds.push(pollfd(conn.stream.as_raw_fd(), events));
                ids.push(*id);
            }
            let timeout_ms = next_deadline
                .saturating_duration_since(now)
                .as_millis()
                .min(POLL_TIMEOUT_MS_MAX as u128) as i32;
            // SAFETY: `fds` is a valid, initialised array of `fds.len()` pollfd structs.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != ErrorKind::Interrupted {
                    log::error!("http: poll failed: {e}");
                    std::thread::sleep(Duration::from_millis(10));
                }
                continue;
            }
            if fds[0].revents != 0 {
                let mut drain = [0u8; 256];
                while matches!((&self.wake).read(&mut drain), Ok(n) if n > 0) {}
                self.take_incoming();
                self.take_outbox();
            }
            for at in 0..self.listeners.len() {
                if fds[1 + at].revents != 0 {
                    self.accept(at);
                }
            }
            for (i, id) in ids.iter().enumerate() {
                let revents = fds[i + conns_at].revents;
                if revents != 0 {
                    self.on_event(*id, revents);
                }
            }
            self.expire(Instant::now());
            // Answers given on this thread: written now, not after the next poll. Writing
            // one may free a pipelined request that is answered at once too.
            while !lock(&self.io.outbox).is_empty() {
                self.take_outbox();
            }
        }
    }

    /// Answers handed over by request threads and the parking.
    fn take_outbox(&mut self) {
        let answers = std::mem::take(&mut *lock(&self.io.outbox));
        for piece in answers {
            let id = piece.conn;
            match self.conns.get_mut(&id) {
                Some(conn) if matches!(conn.state, State::Dispatched) => {
                    conn.state = State::Writing {
                        out: piece.bytes,
                        at: 0,
                        close: piece.close,
                        more: piece.more,
                        unsent: piece.unsent,
                    };
                    conn.deadline = Instant::now() + WRITE_TIMEOUT;
                    self.on_event(id, libc::POLLOUT);
                }
                // The next piece of a streamed answer whose last one is still being
                // written: after it (one pending write per connection).
                Some(Conn {
                    state:
                        State::Writing {
                            out,
                            close,
                            more: more @ true,
                            ..
                        },
                    deadline,
                    ..
                }) => {
                    out.extend_from_slice(&piece.bytes);
                    *close = piece.close;
                    *more = piece.more;
                    *deadline = Instant::now() + WRITE_TIMEOUT;
                    self.io.writes_pending.fetch_sub(1, Ordering::SeqCst);
                }
                // The client hung up, or a defect answered twice: nothing to write.
                _ => {
                    self.io.writes_pending.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }

    /// Accepts what waits on the listener at `at` of `listeners`.
    fn accept(&mut self, at: usize) {
        loop {
            let Some((listener, kind)) = self.listeners.get(at) else {
                return;
            };
            let kind = *kind;
            match listener.accept() {
                Ok((stream, peer)) => {
                    if self.io.connections.load(Ordering::SeqCst) >= CONNECTIONS_MAX {
                        self.refuse(stream, peer);
                        continue;
                    }
                    self.io.connections.fetch_add(1, Ordering::SeqCst);
                    // Dealt in turn: keep-alive connections stay where they land.
                    let to = self.next_peer % self.peers.len();
                    self.next_peer = self.next_peer.wrapping_add(1);
                    if Arc::ptr_eq(&self.peers[to], &self.io) {
                        self.adopt(stream, peer, kind);
                    } else {
                        lock(&self.peers[to].incoming).push((stream, peer, kind));
                        self.peers[to].wake();
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("http: cannot accept a connection: {e}");
                    self.accept_paused_until = Some(Instant::now() + Duration::from_millis(100));
                    return;
                }
            }
        }
    }

    /// Connections the accepting thread dealt to this one.
    fn take_incoming(&mut self) {
        let incoming = std::mem::take(&mut *lock(&self.io.incoming));
        for (stream, peer, kind) in incoming {
            self.adopt(stream, peer, kind);
        }
    }

    /// Takes an accepted connection (counted in `connections` already) into this thread.
    fn adopt(&mut self, stream: TcpStream, peer: SocketAddr, listener: Listener) {
        if let Err(e) = stream.set_nonblocking(true) {
            log::warn!("http: cannot make the connection from {peer} non-blocking: {e}");
            self.io.connections.fetch_sub(1, Ordering::SeqCst);
            return;
        }
        let _ = stream.set_nodelay(true);
        let id = self.next_conn;
        self.next_conn += 1;
        self.conns.insert(
            id,
            Conn {
                stream,
                peer,
                listener,
                buf: Vec::new(),
                state: State::Idle,
                deadline: Instant::now() + IDLE_TIMEOUT,
                gone: Arc::new(AtomicBool::new(false)),
            },
        );
    }

    /// One connection too many: 503 at once (if the socket takes it) and closed.
    fn refuse(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        let body = format!(r#"{{"error": "too many connections: {CONNECTIONS_MAX} are open"}}"#);
        let out = wire::render(503, "application/json", body.as_bytes(), "", false);
        let _ = stream.set_nonblocking(true);
        let _ = stream.write(&out);
        let now = Instant::now();
        if self
            .refused_logged
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1))
        {
            self.refused_logged = Some(now);
            log::warn!(
                "http: refused the connection from {peer}: {CONNECTIONS_MAX} connections are open"
            );
        }
    }

    fn on_event(&mut self, id: u64, revents: libc::c_short) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let verdict = match conn.state {
            State::Writing { .. } => self.write(id),
            State::Draining => drain(conn),
            State::Dispatched => {
                // The client hung up while its request waits: nobody will read the answer.
                conn.gone.store(true, Ordering::SeqCst);
                log::debug!("http: {} hung up while its request waited", conn.peer);
                Verdict::Close
            }
            State::Idle | State::Head | State::Body { .. } => {
                if revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
                    Verdict::Close
                } else {
                    self.read(id)
                }
            }
        };
        if let Verdict::Close = verdict {
            self.close(id);
        }
    }

    fn close(&mut self, id: u64) {
        if let Some(conn) = self.conns.remove(&id) {
            self.io.connections.fetch_sub(1, Ordering::SeqCst);
            if matches!(conn.state, State::Writing { .. }) {
                self.io.writes_pending.fetch_sub(1, Ordering::SeqCst);
            }
            conn.gone.store(true, Ordering::SeqCst);
        }
    }

    fn read(&mut self, id: u64) -> Verdict {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Verdict::Close;
        };
        let mut chunk = [0u8; READ_CHUNK_BYTES];
        let mut this_turn = 0;
        let mut eof = false;
        while this_turn < READ_TURN_BYTES_MAX {
            match conn.stream.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    conn.buf.extend_from_slice(&chunk[..n]);
                    this_turn += n;
                    if n < chunk.len() {
                        // The socket had no more; poll says when it has (a read that
                        // would block costs a system call per request).
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Verdict::Close,
            }
        }
        match self.advance(id) {
            Verdict::Close => Verdict::Close,
            // A request cut short by its client: nothing to answer.
            Verdict::Keep if eof => match self.conns.get(&id).map(|c| &c.state) {
                Some(State::Dispatched | State::Writing { .. }) => Verdict::Keep,
                _ => Verdict::Close,
            },
            Verdict::Keep => Verdict::Keep,
        }
    }

    /// Moves a connection on with the bytes it has: a head parsed, a body complete, a request
    /// dispatched; or an error answered.
    fn advance(&mut self, id: u64) -> Verdict {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Verdict::Close;
        };
        loop {
            match &conn.state {
                State::Idle | State::Head => {
                    if conn.buf.is_empty() {
                        return Verdict::Keep;
                    }
                    if matches!(conn.state, State::Idle) {
                        conn.state = State::Head;
                        conn.deadline = Instant::now() + HEAD_TIMEOUT;
                    }
                    let head = match wire::parse_head(&conn.buf) {
                        Ok(Some(head)) => head,
                        Ok(None) => return Verdict::Keep,
                        Err(e) => {
                            log::info!(
                                "http: refused a request from {}: {}",
                                conn.peer,
                                e.message()
                            );
                            return answer_and_close(&self.io, conn, e.status(), &e.message());
                        }
                    };
                    if head.header("Transfer-Encoding").is_some() {
                        return answer_and_close(
                            &self.io,
                            conn,
                            411,
                            "Transfer-Encoding is not supported: send Content-Length",
                        );
                    }
                    let length = match head.content_length() {
                        Ok(length) => length,
                        Err(e) => return answer_and_close(&self.io, conn, 400, &e.message()),
                    };
                    if length > BODY_BYTES_MAX {
                        return answer_and_close(
                            &self.io,
                            conn,
                            413,
                            &format!("the body exceeds {BODY_BYTES_MAX} bytes"),
                        );
                    }
                    let Some(lease) = Lease::take(&self.io, length) else {
                        return answer_and_close(
                            &self.io,
                            conn,
                            503,
                            &format!(
                                "bodies being received exceed {BODIES_BYTES_MAX} bytes: try again"
                            ),
                        );
                    };
                    let total = head.len + length;
                    if head.expects_continue() && length > 0 && conn.buf.len() < total {
                        let _ = conn.stream.write(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    conn.deadline = Instant::now() + BODY_TIMEOUT;
                    conn.state = State::Body { head, total, lease };
                }
                State::Body { total, .. } => {
                    if conn.buf.len() < *total {
                        return Verdict::Keep;
                    }
                    let State::Body { head, total, lease } =
                        std::mem::replace(&mut conn.state, State::Dispatched)
                    else {
                        return Verdict::Close;
                    };
                    let rest = conn.buf.split_off(total);
                    let mut body = std::mem::replace(&mut conn.buf, rest);
                    body.drain(..head.len);
                    let keep_alive = head.keep_alive();
                    let request = Request {
                        method: head.method,
                        target: head.target,
                        headers: head.headers,
                        body,
                        peer: conn.peer,
                        listener: conn.listener,
                        _lease: lease,
                    };
                    let responder = Responder {
                        conn: id,
                        keep_alive,
                        gone: conn.gone.clone(),
                        io: self.io.clone(),
                        sent: false,
                        label: None,
                    };
                    let Some((request, responder)) = (self.at_once)(request, responder) else {
                        return Verdict::Keep;
                    };
                    return match self.jobs.try_send(Job::Request { request, responder }) {
                        Ok(()) => Verdict::Keep,
                        Err(TrySendError::Full(Job::Request { responder, .. })) => {
                            responder.respond(
                                503,
                                "application/json",
                                br#"{"error": "too many requests are waiting for a thread"}"#,
                                "",
                            );
                            Verdict::Keep
                        }
                        Err(_) => Verdict::Close,
                    };
                }
                State::Dispatched | State::Writing { .. } | State::Draining => {
                    return Verdict::Keep
                }
            }
        }
    }

    fn write(&mut self, id: u64) -> Verdict {
        let Some(conn) = self.conns.get_mut(&id) else {
            return Verdict::Close;
        };
        let State::Writing {
            out,
            at,
            close,
            more,
            unsent,
        } = &mut conn.state
        else {
            return Verdict::Keep;
        };
        while *at < out.len() {
            match conn.stream.write(&out[*at..]) {
                Ok(0) => return Verdict::Close,
                Ok(n) => *at += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Verdict::Keep,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Verdict::Close,
            }
        }
        let close = *close;
        self.io.writes_pending.fetch_sub(1, Ordering::SeqCst);
        if let Some(unsent) = unsent {
            unsent.store(0, Ordering::SeqCst);
        }
        if *more {
            // A streamed answer between pieces: its producer has the request still.
            conn.state = State::Dispatched;
            return Verdict::Keep;
        }
        if close {
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
            conn.state = State::Draining;
            conn.deadline = Instant::now() + DRAIN_TIMEOUT;
            return drain(conn);
        }
        conn.state = State::Idle;
        conn.deadline = Instant::now() + IDLE_TIMEOUT;
        // The next request may be in the buffer already (pipelining).
        self.advance(id)
    }

    /// Cuts off connections past their deadline.
    fn expire(&mut self, now: Instant) {
        let late: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| !matches!(c.state, State::Dispatched) && c.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            let (what, limit) = match conn.state {
                State::Idle => {
                    log::debug!("http: closed the idle connection from {}", conn.peer);
                    self.close(id);
                    continue;
                }
                State::Head => ("head", HEAD_TIMEOUT),
                State::Body { .. } => ("body", BODY_TIMEOUT),
                State::Writing { .. } => {
                    log::warn!(
                        "http: cut off {}: it did not take its answer within {WRITE_TIMEOUT:?}",
                        conn.peer
                    );
                    self.close(id);
                    continue;
                }
                State::Draining => {
                    self.close(id);
                    continue;
                }
                State::Dispatched => continue,
            };
            let message = format!("the request {what} was not received within {limit:?}");
            log::warn!("http: cut off the slow client {}: {message}", conn.peer);
            if let Verdict::Close = answer_and_close(&self.io, conn, 408, &message) {
                self.close(id);
            }
        }
    }
}

/// Reads and drops what a closing connection still sends; closes at its end.
fn drain(conn: &mut Conn) -> Verdict {
    let mut chunk = [0u8; READ_CHUNK_BYTES];
    let mut this_turn = 0;
    while this_turn < READ_TURN_BYTES_MAX {
        match conn.stream.read(&mut chunk) {
            Ok(0) => return Verdict::Close,
            Ok(n) => this_turn += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Verdict::Keep,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return Verdict::Close,
        }
    }
    Verdict::Keep
}

/// Answers `status` with `{"error": message}` from the I/O thread and closes after it.
fn answer_and_close(io: &Io, conn: &mut Conn, status: u16, message: &str) -> Verdict {
    let body = serde_json::json!({ "error": message }).to_string();
    let out = wire::render(status, "application/json", body.as_bytes(), "", false);
    io.writes_pending.fetch_add(1, Ordering::SeqCst);
    conn.buf.clear();
    conn.state = State::Writing {
        out,
        at: 0,
        close: true,
        more: false,
        unsent: None,
    };
    conn.deadline = Instant::now() + Duration::from_secs(1).min(WRITE_TIMEOUT);
    Verdict::Keep
}

fn pollfd(fd: std::os::fd::RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}
