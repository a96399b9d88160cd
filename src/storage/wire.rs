//! A small blocking client of the Postgres v3 wire protocol: connect, authenticate, run one
//! command that answers with COPY OUT, and stream that data as it arrives.
//!
//! Why not the `postgres` crate: its blocking client cannot be interrupted from another thread
//! while it waits for data, and a terminate must end a stalled transfer at once. Here the
//! socket is ours, so a cancel hook shuts it down and the blocked read returns. The message
//! framing and the authentication exchanges (md5, SCRAM-SHA-256) are `postgres-protocol`'s,
//! the same code the `postgres` crate speaks with.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use fallible_iterator::FallibleIterator;
use postgres::config::Host;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::{ErrorFields, Header, Message};
use postgres_protocol::message::frontend;

use crate::postgres::error::ServerError;
use crate::postgres::tls::{SslMode, Tls};
use crate::sync::{CancelToken, HookGuard};

/// The largest backend message accepted: COPY data arrives in chunks far below this, so a
/// bigger length is a broken or hostile server, not data.
pub const MESSAGE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// How long a connection attempt to one address may take when the connection string sets no
/// `connect_timeout`.
pub const CONNECT_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// How often a blocked read wakes up to look at the cancel token and the idle deadline.
const READ_POLL: Duration = Duration::from_millis(250);
/// The size of one socket read.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Why a conversation with the server failed. `server` names it as the caller labelled it
/// (`pageserver 127.0.0.1:6400`).
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("cannot connect to {server}: {reason}")]
    Connect { server: String, reason: String },
    /// The server's own ErrorResponse, while connecting or answering the command.
    #[error("{server} answered: {message}")]
    Server { server: String, message: String },
    #[error("{server} asks for {method} authentication, which compute_ctl does not speak")]
    UnsupportedAuth { server: String, method: String },
    #[error("{server} asks for a password and the connection string and spec give none")]
    NoPassword { server: String },
    #[error("lost the connection to {server} {during}: {reason}")]
    Transfer {
        server: String,
        during: &'static str,
        reason: String,
    },
    #[error("{server} sent nothing for {idle:?} {during}")]
    Idle {
        server: String,
        during: &'static str,
        idle: Duration,
    },
    #[error("{server} broke the protocol {during}: {what}")]
    Protocol {
        server: String,
        during: &'static str,
        what: String,
    },
    #[error("the connection to {server} is not usable: {reason}")]
    Config { server: String, reason: String },
    /// TLS refused or failed (a wrong CA, a certificate for another host, a server without
    /// TLS under `sslmode=require`): the same attempt would fail the same way.
    #[error("TLS to {server} failed: {reason}")]
    Tls { server: String, reason: String },
    #[error("the transfer from {server} was cancelled")]
    Cancelled { server: String },
}

impl WireError {
    /// Whether another attempt, unchanged, may succeed: the network and the server may
    /// recover; a configuration this client cannot use will not.
    pub fn transient(&self) -> bool {
        match self {
            WireError::Connect { .. }
            | WireError::Server { .. }
            | WireError::Transfer { .. }
            | WireError::Idle { .. }
            | WireError::Protocol { .. } => true,
            WireError::UnsupportedAuth { .. }
            | WireError::NoPassword { .. }
            | WireError::Config { .. }
            | WireError::Tls { .. }
            | WireError::Cancelled { .. } => false,
        }
    }
}

/// How to reach the server and who to be there.
#[derive(Clone)]
pub struct ConnectOptions {
    /// The parsed connection string (URL or key=value form).
    pub config: postgres::Config,
    /// Its `sslmode` and `sslrootcert` (`postgres::tls::parse` splits them off).
    pub tls: Tls,
    /// Overrides the connection string's password (Neon sends the storage token this way).
    pub password: Option<String>,
    /// Startup parameters sent besides `user` and `database` (`application_name`, `options`).
    pub parameters: Vec<(String, String)>,
    /// No byte from the server for this long ends the conversation.
    pub idle_timeout: Duration,
    /// Names the server in messages and logs (never with a password).
    pub label: String,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("label", &self.label)
            .field("parameters", &self.parameters)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

/// The socket, with or without TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn shutdown(&self) {
        let socket = match self {
            Stream::Plain(socket) => socket,
            Stream::Tls(tls) => &tls.sock,
        };
        let _ = socket.shutdown(Shutdown::Both);
    }
}

impl Read for Stream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.read(out),
            Stream::Tls(tls) => tls.read(out),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(socket) => socket.write(bytes),
            Stream::Tls(tls) => tls.write(bytes),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(socket) => socket.flush(),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// An authenticated connection, ready for a command.
pub struct Connection {
    stream: Stream,
    /// Received bytes not yet parsed into messages.
    buffer: BytesMut,
    /// One socket read's worth, reused.
    chunk: Vec<u8>,
    server: String,
    idle_timeout: Duration,
    cancel: CancelToken,
    /// Shuts the socket when the token is cancelled; unregistered when the connection drops.
    _hook: HookGuard,
    /// The address that answered.
    pub peer: SocketAddr,
    /// Bytes of COPY data received so far.
    pub copy_bytes: u64,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// Opens a connection to the first address of `options` that accepts one and authenticates.
pub fn connect(options: &ConnectOptions, cancel: &CancelToken) -> Result<Connection, WireError> {
    let server = options.label.clone();
    let user = options
        .config
        .get_user()
        .map(str::to_owned)
        .unwrap_or_else(default_user);
    let timeout = options
        .config
        .get_connect_timeout()
        .copied()
        .unwrap_or(CONNECT_TIMEOUT_DEFAULT);
    let (stream, host) = open_socket(&options.config, &server, timeout, cancel)?;
    let peer = stream.peer_addr().map_err(|e| WireError::Connect {
        server: server.clone(),
        reason: e.to_string(),
    })?;
    let closer = stream.try_clone().map_err(|e| WireError::Connect {
        server: server.clone(),
        reason: format!("cannot share the socket with the cancel hook: {e}"),
    })?;
    // A cancel shuts the socket: a read blocked in the kernel returns at once.
    let hook = cancel.on_cancel(move || {
        let _ = closer.shutdown(Shutdown::Both);
    });
    let stream = negotiate_tls(stream, &options.tls, &host, &server, timeout, cancel)?;
    let socket = match &stream {
        Stream::Plain(socket) => socket,
        Stream::Tls(tls) => &tls.sock,
    };
    socket
        .set_read_timeout(Some(READ_POLL))
        .and_then(|()| socket.set_nodelay(true))
        .map_err(|e| WireError::Connect {
            server: server.clone(),
            reason: e.to_string(),
        })?;
    let mut connection = Connection {
        stream,
        buffer: BytesMut::with_capacity(READ_CHUNK_BYTES),
        chunk: vec![0_u8; READ_CHUNK_BYTES],
        server,
        idle_timeout: options.idle_timeout,
        cancel: cancel.clone(),
        _hook: hook,
        peer,
        copy_bytes: 0,
    };
    connection.startup(options, &user)?;
    Ok(connection)
}

/// Asks for TLS (SSLRequest) unless `sslmode=disable`, and completes the handshake with the
/// checks `tls` names, within `timeout`. A server that declines is fine for `prefer` only.
fn negotiate_tls(
    mut socket: TcpStream,
    tls: &Tls,
    host: &str,
    server: &str,
    timeout: Duration,
    cancel: &CancelToken,
) -> Result<Stream, WireError> {
    let failed = |reason: String| {
        if cancel.is_cancelled() {
            WireError::Cancelled {
                server: server.to_string(),
            }
        } else {
            WireError::Tls {
                server: server.to_string(),
                reason,
            }
        }
    };
    if tls.mode == SslMode::Disable {
        return Ok(Stream::Plain(socket));
    }
    let config = crate::postgres::tls::client_config(tls).map_err(|e| WireError::Config {
        server: server.to_string(),
        reason: e.to_string(),
    })?;
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    let mut answer = [0_u8; 1];
    socket
        .set_read_timeout(Some(timeout))
        .and_then(|()| socket.write_all(&request))
        .and_then(|()| socket.read_exact(&mut answer))
        .map_err(|e| {
            // A cancel shuts the socket under the blocked read.
            if cancel.is_cancelled() {
                WireError::Cancelled {
                    server: server.to_string(),
                }
            } else {
                WireError::Connect {
                    server: server.to_string(),
                    reason: format!("asking for TLS: {e}"),
                }
            }
        })?;
    match answer[0] {
        b'S' => {}
        b'N' if tls.mode == SslMode::Prefer => return Ok(Stream::Plain(socket)),
        b'N' => {
            return Err(failed(format!(
                "the server does not accept TLS (ssl = off) and sslmode={} asks for it",
                tls.mode.as_str()
            )))
        }
        other => {
            return Err(WireError::Protocol {
                server: server.to_string(),
                during: "asking for TLS",
                what: format!("answered the SSLRequest with byte {other:#04x}"),
            })
        }
    }
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| failed(format!("{host:?} is not a name TLS can check: {e}")))?;
    let mut connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .map_err(|e| failed(e.to_string()))?;
    while connection.is_handshaking() {
        connection.complete_io(&mut socket).map_err(|e| {
            let reason = e.to_string();
            match crate::postgres::tls::explain(&reason) {
                Some(why) => failed(format!("{reason} ({why})")),
                None => failed(reason),
            }
        })?;
    }
    Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(
        connection, socket,
    ))))
}

/// libpq's default user: the operating system's name for the one running.
fn default_user() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "compute_ctl".to_string())
}

/// Connects to each host and port in turn (as libpq does) until one accepts; waits in a
/// helper thread so that a cancel need not wait for a connection attempt to time out.
fn open_socket(
    config: &postgres::Config,
    server: &str,
    timeout: Duration,
    cancel: &CancelToken,
) -> Result<(TcpStream, String), WireError> {
    let hosts = config.get_hosts();
    let ports = config.get_ports();
    if hosts.is_empty() {
        return Err(WireError::Config {
            server: server.to_string(),
            reason: "the connection string names no host".into(),
        });
    }
    let mut addresses: Vec<(String, u16)> = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let port = match ports {
            [] => 5432,
            [one] => *one,
            many => many.get(i).copied().unwrap_or(5432),
        };
        match host {
            Host::Tcp(name) => addresses.push((name.clone(), port)),
            Host::Unix(path) => {
                return Err(WireError::Config {
                    server: server.to_string(),
                    reason: format!(
                        "Unix socket {} is not supported: a pageserver is reached over TCP",
                        path.display()
                    ),
                })
            }
        }
    }
    let (sender, receiver) = mpsc::channel();
    let attempt = std::thread::Builder::new()
        .name("wire-connect".into())
        .spawn(move || {
            let mut reasons = Vec::new();
            for (host, port) in addresses {
                let resolved = match (host.as_str(), port).to_socket_addrs() {
                    Ok(resolved) => resolved.collect::<Vec<_>>(),
                    Err(e) => {
                        reasons.push(format!("{host}:{port}: {e}"));
                        continue;
                    }
                };
                for address in resolved {
                    match TcpStream::connect_timeout(&address, timeout) {
                        Ok(stream) => {
                            let _ = sender.send(Ok((stream, host)));
                            return;
                        }
                        Err(e) => reasons.push(format!("{address}: {e}")),
                    }
                }
            }
            let _ = sender.send(Err(reasons.join("; ")));
        });
    if let Err(e) = attempt {
        return Err(WireError::Connect {
            server: server.to_string(),
            reason: format!("cannot start the connecting thread: {e}"),
        });
    }
    loop {
        if cancel.is_cancelled() {
            // The thread finishes on its own within its timeout and drops what it opened.
            return Err(WireError::Cancelled {
                server: server.to_string(),
            });
        }
        match receiver.recv_timeout(READ_POLL) {
            Ok(Ok(connected)) => return Ok(connected),
            Ok(Err(reason)) => {
                return Err(WireError::Connect {
                    server: server.to_string(),
                    reason,
                })
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(WireError::Connect {
                    server: server.to_string(),
                    reason: "the connecting thread ended without an answer".into(),
                })
            }
        }
    }
}

/// An ErrorResponse whole: `ERROR: XX000: tenant x not found; DETAIL: …; HINT: …`.
pub fn error_text(mut fields: ErrorFields<'_>) -> String {
    let mut error = ServerError::default();
    let mut localized = None;
    while let Ok(Some(field)) = fields.next() {
        let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
        match field.type_() {
            b'V' => error.severity = value,
            b'S' => localized = Some(value),
            b'C' => error.code = Some(value),
            b'M' => error.message = value,
            b'D' => error.detail = Some(value),
            b'H' => error.hint = Some(value),
            _ => {}
        }
    }
    if error.severity.is_empty() {
        error.severity = localized.unwrap_or_else(|| "ERROR".into());
    }
    if error.message.is_empty() {
        error.message = "(no message)".into();
    }
    error.to_string()
}

impl Connection {
    fn send(&mut self, during: &'static str, message: &BytesMut) -> Result<(), WireError> {
        self.stream.write_all(message).map_err(|e| {
            if self.cancel.is_cancelled() {
                WireError::Cancelled {
                    server: self.server.clone(),
                }
            } else {
                WireError::Transfer {
                    server: self.server.clone(),
                    during,
                    reason: e.to_string(),
                }
            }
        })
    }

    fn protocol(&self, during: &'static str, what: impl Into<String>) -> WireError {
        WireError::Protocol {
            server: self.server.clone(),
            during,
            what: what.into(),
        }
    }

    /// The next backend message, reading from the socket as needed.
    fn next_message(&mut self, during: &'static str) -> Result<Message, WireError> {
        let mut idle_since = Instant::now();
        loop {
            if let Some(header) =
                Header::parse(&self.buffer).map_err(|e| self.protocol(during, e.to_string()))?
            {
                let length = header.len() as usize + 1;
                if length > MESSAGE_BYTES_MAX {
                    return Err(self.protocol(
                        during,
                        format!(
                            "a message of {length} bytes (tag {:?}) exceeds the limit of {MESSAGE_BYTES_MAX}",
                            header.tag() as char
                        ),
                    ));
                }
            }
            if let Some(message) = Message::parse(&mut self.buffer)
                .map_err(|e| self.protocol(during, e.to_string()))?
            {
                return Ok(message);
            }
            if self.cancel.is_cancelled() {
                return Err(WireError::Cancelled {
                    server: self.server.clone(),
                });
            }
            match self.stream.read(&mut self.chunk) {
                Ok(0) => {
                    return Err(if self.cancel.is_cancelled() {
                        WireError::Cancelled {
                            server: self.server.clone(),
                        }
                    } else {
                        WireError::Transfer {
                            server: self.server.clone(),
                            during,
                            reason: "the server closed the connection".into(),
                        }
                    })
                }
                Ok(n) => {
                    self.buffer.extend_from_slice(&self.chunk[..n]);
                    idle_since = Instant::now();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    if idle_since.elapsed() >= self.idle_timeout {
                        return Err(WireError::Idle {
                            server: self.server.clone(),
                            during,
                            idle: self.idle_timeout,
                        });
                    }
                }
                Err(e) => {
                    return Err(if self.cancel.is_cancelled() {
                        WireError::Cancelled {
                            server: self.server.clone(),
                        }
                    } else {
                        WireError::Transfer {
                            server: self.server.clone(),
                            during,
                            reason: e.to_string(),
                        }
                    })
                }
            }
        }
    }

    fn server_error(&self, fields: ErrorFields<'_>) -> WireError {
        WireError::Server {
            server: self.server.clone(),
            message: error_text(fields),
        }
    }

    /// The startup message, authentication, and the server's parameters up to ReadyForQuery.
    fn startup(&mut self, options: &ConnectOptions, user: &str) -> Result<(), WireError> {
        const DURING: &str = "while connecting";
        let mut parameters: Vec<(&str, &str)> = vec![("user", user)];
        if let Some(database) = options.config.get_dbname() {
            parameters.push(("database", database));
        }
        for (name, value) in &options.parameters {
            parameters.push((name, value));
        }
        let mut out = BytesMut::new();
        frontend::startup_message(parameters, &mut out).map_err(|e| {
            self.protocol(DURING, format!("cannot encode the startup message: {e}"))
        })?;
        self.send(DURING, &out)?;
        let password: Option<Vec<u8>> = options
            .password
            .as_ref()
            .map(|p| p.as_bytes().to_vec())
            .or_else(|| options.config.get_password().map(<[u8]>::to_vec));
        let mut scram: Option<ScramSha256> = None;
        loop {
            let message = self.next_message(DURING)?;
            let mut out = BytesMut::new();
            match message {
                Message::AuthenticationOk => {}
                Message::AuthenticationCleartextPassword => {
                    let password = self.password(password.as_deref())?;
                    frontend::password_message(password, &mut out)
                        .map_err(|e| self.protocol(DURING, e.to_string()))?;
                    self.send(DURING, &out)?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let password = self.password(password.as_deref())?;
                    let hashed = md5_hash(user.as_bytes(), password, body.salt());
                    frontend::password_message(hashed.as_bytes(), &mut out)
                        .map_err(|e| self.protocol(DURING, e.to_string()))?;
                    self.send(DURING, &out)?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut offered = Vec::new();
                    while let Ok(Some(mechanism)) = mechanisms.next() {
                        offered.push(mechanism.to_string());
                    }
                    if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                        return Err(WireError::UnsupportedAuth {
                            server: self.server.clone(),
                            method: format!("SASL ({})", offered.join(", ")),
                        });
                    }
                    let password = self.password(password.as_deref())?;
                    let exchange = ScramSha256::new(password, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, exchange.message(), &mut out)
                        .map_err(|e| self.protocol(DURING, e.to_string()))?;
                    self.send(DURING, &out)?;
                    scram = Some(exchange);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let Some(exchange) = scram.as_mut() else {
                        return Err(self.protocol(DURING, "SASL continue without a SASL start"));
                    };
                    exchange
                        .update(body.data())
                        .map_err(|e| self.protocol(DURING, format!("SCRAM: {e}")))?;
                    frontend::sasl_response(exchange.message(), &mut out)
                        .map_err(|e| self.protocol(DURING, e.to_string()))?;
                    self.send(DURING, &out)?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let Some(exchange) = scram.as_mut() else {
                        return Err(self.protocol(DURING, "SASL final without a SASL start"));
                    };
                    exchange
                        .finish(body.data())
                        .map_err(|e| self.protocol(DURING, format!("SCRAM: {e}")))?;
                }
                Message::AuthenticationGss
                | Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential
                | Message::AuthenticationSspi
                | Message::AuthenticationGssContinue(_) => {
                    return Err(WireError::UnsupportedAuth {
                        server: self.server.clone(),
                        method: "GSSAPI/SSPI/Kerberos".into(),
                    })
                }
                Message::ErrorResponse(body) => return Err(self.server_error(body.fields())),
                Message::ParameterStatus(_)
                | Message::BackendKeyData(_)
                | Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(_) => return Ok(()),
                _ => return Err(self.protocol(DURING, "an unexpected message")),
            }
        }
    }

    fn password<'p>(&self, password: Option<&'p [u8]>) -> Result<&'p [u8], WireError> {
        password.ok_or_else(|| WireError::NoPassword {
            server: self.server.clone(),
        })
    }

    /// Sends `command` as a simple query and waits for the server to start COPY OUT; read the
    /// data from the returned reader until it ends, then call [`CopyOut::finish`].
    pub fn copy_out(&mut self, command: &str) -> Result<CopyOut<'_>, WireError> {
        const DURING: &str = "while starting the copy";
        let mut out = BytesMut::new();
        frontend::query(command, &mut out).map_err(|e| self.protocol(DURING, e.to_string()))?;
        self.send(DURING, &out)?;
        loop {
            match self.next_message(DURING)? {
                Message::CopyOutResponse(_) => {
                    return Ok(CopyOut {
                        connection: self,
                        pending: bytes::Bytes::new(),
                        done: false,
                        failure: None,
                    })
                }
                Message::ErrorResponse(body) => return Err(self.server_error(body.fields())),
                Message::NoticeResponse(_) | Message::ParameterStatus(_) => {}
                _ => {
                    return Err(self.protocol(
                        DURING,
                        "the command was answered without a COPY OUT response",
                    ))
                }
            }
        }
    }

    /// Says goodbye (Terminate) and closes the socket.
    pub fn close(mut self) {
        let mut out = BytesMut::new();
        frontend::terminate(&mut out);
        let _ = self.stream.write_all(&out);
        self.stream.shutdown();
    }
}

/// The data of a COPY OUT, as a byte stream. A failure (the server's error, a lost connection)
/// is returned as an `io::Error` and kept: [`CopyOut::take_failure`] gives the typed error.
pub struct CopyOut<'c> {
    connection: &'c mut Connection,
    pending: bytes::Bytes,
    done: bool,
    failure: Option<WireError>,
}

impl std::fmt::Debug for CopyOut<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CopyOut")
            .field("connection", &self.connection)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl CopyOut<'_> {
    /// The failure behind the last `io::Error` this reader returned, if it was the wire's.
    pub fn take_failure(&mut self) -> Option<WireError> {
        self.failure.take()
    }

    /// Bytes of COPY data received so far.
    pub fn received(&self) -> u64 {
        self.connection.copy_bytes
    }

    /// After the data ended: the command's completion, up to ReadyForQuery. A server that
    /// reports an error after the data (Neon's does, when the archive could not be finished)
    /// fails here.
    pub fn finish(mut self) -> Result<(), WireError> {
        const DURING: &str = "after the copy";
        // Data the caller did not read still has to be received before the completion.
        if let Err(e) = io::copy(&mut self, &mut io::sink()) {
            return Err(self.take_failure().unwrap_or(WireError::Protocol {
                server: self.connection.server.clone(),
                during: DURING,
                what: e.to_string(),
            }));
        }
        loop {
            match self.connection.next_message(DURING)? {
                Message::CommandComplete(_) | Message::NoticeResponse(_) => {}
                Message::ErrorResponse(body) => {
                    return Err(self.connection.server_error(body.fields()))
                }
                Message::ReadyForQuery(_) => return Ok(()),
                _ => return Err(self.connection.protocol(DURING, "an unexpected message")),
            }
        }
    }

    fn fail(&mut self, error: WireError) -> io::Error {
        let io_error = io::Error::other(error.to_string());
        self.failure = Some(error);
        io_error
    }
}

impl Read for CopyOut<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        const DURING: &str = "during the copy";
        while self.pending.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.connection.next_message(DURING) {
                Ok(Message::CopyData(body)) => {
                    let data = body.into_bytes();
                    self.connection.copy_bytes += data.len() as u64;
                    self.pending = data;
                }
                Ok(Message::CopyDone) => self.done = true,
                Ok(Message::NoticeResponse(_)) => {}
                Ok(Message::ErrorResponse(body)) => {
                    let error = self.connection.server_error(body.fields());
                    return Err(self.fail(error));
                }
                Ok(_) => {
                    let error = self
                        .connection
                        .protocol(DURING, "an unexpected message inside the copy data");
                    return Err(self.fail(error));
                }
                Err(error) => return Err(self.fail(error)),
            }
        }
        let n = out.len().min(self.pending.len());
        out[..n].copy_from_slice(&self.pending[..n]);
        let _ = self.pending.split_to(n);
        Ok(n)
    }
}
