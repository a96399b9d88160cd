//! The HTTP API (CONTRACT.md, "HTTP API" and "Security of the API"): our own small HTTP/1.1
//! server on `std::net` (README, "HTTP API", says why not `tiny_http`).
//!
//! - `server`: one I/O thread owns every connection and reads each request whole within the
//!   limits of `limits`; a `Responder` answers it from any thread;
//! - `wire`: the request head parsed, a response rendered (pure);
//! - `parking`: requests that wait (long-polls, requests handed to the driver), kept with their
//!   connection and no thread;
//! - this file: the request threads (`THREADS`), which only authorize, parse, route and
//!   answer; reads (`/state`, `/healthz`, `/readyz`, `/metrics`, `/journal`, `/fsm`, `/status`)
//!   come from the published view and the journal files, never from the driver; the driver's
//!   typed `ApiAnswer`s become status codes here only;
//! - `neon`: Neon's `/status`, `/configure`, `/metrics.json`;
//! - `catalog`: Neon's catalog endpoints (`/dbs_and_roles`, `/database_schema`,
//!   `/check_writability`, `/insights`, `/extensions`, `/grants`) on their own bounded pool
//!   of threads, and the Neon-only ones (501).

pub mod catalog;
pub mod limits;
pub mod neon;
pub mod parking;
pub mod server;
pub mod wire;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use states::{ShutdownMode, SpecAnswer};

use crate::auth::{Auth, Refusal};
use crate::input::{ApiAnswer, ApiCall, ApiRequest, Input};
use crate::spec::{SpecAdmission, SpecErrors};
use crate::sync::lock;
use crate::view::Published;

/// The OpenAPI 3.1 document of this API (`GET /openapi.json`); a test keeps it equal to what
/// is served and checks the server against it with schemathesis.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

pub use limits::{BODY_BYTES_MAX, JOURNAL_LIMIT_MAX, JOURNAL_WAIT_MAX, THREADS};
use limits::{DRIVER_ANSWER_TIMEOUT, QUEUE_MAX, REQUEST_ID_BYTES_MAX, WAITING_ANSWER_TIMEOUT};
use parking::{Parked, Parking, Waiting};
pub use server::{bind, BodyStream, ClientGone, Listener, Request, Responder};

/// Work for a request thread.
#[derive(Debug)]
pub enum Job {
    /// A request read whole.
    Request {
        request: Request,
        responder: Responder,
    },
    /// A parked long-poll that is due: read the journal and answer.
    Journal {
        since: u64,
        limit: usize,
        request_id: String,
        responder: Responder,
    },
}

/// The endpoints that need no token when auth is on: what probes and scrapers call.
const OPEN_PATHS: &[&str] = &["/healthz", "/readyz", "/metrics"];

/// What the request threads share.
pub struct Api {
    pub published: Arc<Published>,
    pub inbox: SyncSender<Input>,
    pub state_dir: PathBuf,
    /// Parses and checks a spec (form rules, the Postgres binary's settings and libraries).
    pub admission: SpecAdmission,
    /// The API's keys; without any, requests need no token.
    pub auth: Arc<Auth>,
    parking: Arc<Parking>,
    /// The catalog pool: Neon's catalog endpoints' work, off the request threads.
    catalog: Arc<catalog::Pool>,
    /// Answers given and not yet written to their sockets.
    writes_pending: Arc<AtomicUsize>,
    next_request: AtomicU64,
    /// This process's id, in every request id made here (read once: a system call).
    pid: u32,
    fsm_json: String,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

impl Api {
    pub fn new(
        published: Arc<Published>,
        inbox: SyncSender<Input>,
        state_dir: PathBuf,
        admission: SpecAdmission,
        auth: Arc<Auth>,
        catalog: Option<catalog::CatalogSetup>,
    ) -> Arc<Api> {
        let fsm_json = serde_json::to_string(&states::table::table()).unwrap_or_default();
        Arc::new(Api {
            parking: Parking::new(published.clone(), state_dir.clone()),
            catalog: catalog::Pool::new(catalog, published.clone()),
            published,
            inbox,
            state_dir,
            admission,
            auth,
            writes_pending: Arc::new(AtomicUsize::new(0)),
            next_request: AtomicU64::new(1),
            pid: std::process::id(),
            fsm_json,
        })
    }

    /// Waits until every request handed to the driver has been answered and every answer
    /// written out, at most `timeout`.
    pub fn drain(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while (self.parking.in_flight() > 0 || self.writes_pending.load(Ordering::SeqCst) > 0)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Let the last bytes leave the socket.
        std::thread::sleep(Duration::from_millis(50));
    }

    /// Requests parked now (long-polls and requests waiting on the driver).
    pub fn parked(&self) -> usize {
        self.parking.len()
    }
}

/// Serves on `listeners` (each marked external or internal): the I/O threads, `THREADS`
/// request threads and the parking thread; called once the view to publish is true.
pub fn serve(
    listeners: Vec<(std::net::TcpListener, Listener)>,
    api: Arc<Api>,
) -> anyhow::Result<()> {
    let (jobs, queue) = mpsc::sync_channel::<Job>(QUEUE_MAX);
    let queue = Arc::new(Mutex::new(queue));
    for n in 0..THREADS {
        let queue = queue.clone();
        let api = api.clone();
        std::thread::Builder::new()
            .name(format!("http-{n}"))
            .spawn(move || work(&api, &queue))?;
    }
    api.parking.start(jobs.clone())?;
    api.catalog.start()?;
    let at_once_api = api.clone();
    let at_once =
        Box::new(move |request, responder| answer_at_once(&at_once_api, request, responder));
    server::start(listeners, at_once, jobs, api.writes_pending.clone())?;
    Ok(())
}

/// The reads answered on the I/O thread: each is one look at the published view and a small
/// body, cheaper than the hand-off to a request thread (`GET /state` at 4 connections went
/// from 31k to 70–100k req/s; README, "Benchmarks"). `/metrics` (a larger text) and `/journal`
/// (files) stay on the request threads.
const AT_ONCE_PATHS: &[&str] = &["/healthz", "/readyz", "/state", "/status"];

/// Answers a request for `AT_ONCE_PATHS` on the calling (I/O) thread, unless it needs a
/// token checked (a signature is not checked on the thread every connection waits for).
fn answer_at_once(
    api: &Api,
    request: Request,
    responder: Responder,
) -> Option<(Request, Responder)> {
    let path = request.target.split('?').next().unwrap_or_default();
    let at_once = request.method == "GET"
        && AT_ONCE_PATHS.contains(&path)
        && (!api.auth.enabled() || OPEN_PATHS.contains(&path));
    if !at_once {
        return Some((request, responder));
    }
    handle(api, request, responder);
    None
}

/// A request thread: takes jobs until the queue closes.
fn work(api: &Api, queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = lock(queue).recv();
        match job {
            Ok(Job::Request { request, responder }) => handle(api, request, responder),
            Ok(Job::Journal {
                since,
                limit,
                request_id,
                responder,
            }) => journal_reply(&api.state_dir, &api.published, since, limit)
                .send(responder, &request_id),
            Err(_) => return,
        }
    }
}

/// What a route decided: an answer now, or a wait.
enum Outcome {
    Now(Reply),
    /// Hand `request` to the driver; park until its answer (mapped by `reply`) or `timeout`.
    Call {
        request: ApiRequest,
        timeout: Duration,
        reply: fn(ApiAnswer) -> Reply,
    },
    /// Park until the journal has a record after `since`, at most `wait`.
    Journal {
        since: u64,
        limit: usize,
        wait: Duration,
    },
    /// Hand the work to the catalog pool, which answers.
    Catalog(catalog::Work),
}

impl From<Reply> for Outcome {
    fn from(reply: Reply) -> Outcome {
        Outcome::Now(reply)
    }
}

fn handle(api: &Api, request: Request, responder: Responder) {
    let request_id = request
        .header("X-Request-Id")
        .filter(|id| {
            !id.is_empty()
                && id.len() <= REQUEST_ID_BYTES_MAX
                && id.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_string)
        .unwrap_or_else(|| api.new_request_id());
    let _log = crate::logging::scope(None, Some(&request_id));
    let target = request.target.clone();
    let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
    let responder = responder.labelled(&request.method, path);
    let outcome = match api.authorize(path, &request) {
        Some(denied) => Outcome::Now(denied),
        None => route(api, &request, path, query),
    };
    match outcome {
        Outcome::Now(reply) => reply.send(responder, &request_id),
        Outcome::Call {
            request,
            timeout,
            reply,
        } => api.call(request, request_id, timeout, reply, responder),
        Outcome::Journal { since, limit, wait } => {
            if wait.is_zero() || api.published.view().seq > since || !api.parking.reserve(false) {
                // Nothing to wait for, or no place to wait in: the records there are now.
                journal_reply(&api.state_dir, &api.published, since, limit)
                    .send(responder, &request_id);
                return;
            }
            api.parking.park(Parked {
                responder,
                request_id,
                waiting: Waiting::Journal { since, limit },
                deadline: Instant::now() + wait,
            });
        }
        Outcome::Catalog(work) => api.catalog.submit(work, responder, request_id),
    }
}

fn route(api: &Api, request: &Request, path: &str, query: &str) -> Outcome {
    let method = request.method.as_str();
    match (method, path) {
        ("GET", "/state") => Reply::json(200, &*api.published.view()).into(),
        ("GET", "/healthz") => {
            if api.published.live() {
                Reply::json(200, &json!({ "status": "ok" })).into()
            } else {
                Reply::json(503, &json!({ "status": "the driver loop is stuck" })).into()
            }
        }
        ("GET", "/readyz") => {
            let view = api.published.view();
            let body = json!({
                "ready": view.ready(),
                "phase": view.phase,
                "desired_generation": view.desired_generation,
                "applied_generation": view.applied_generation,
            });
            Reply::json(if view.ready() { 200 } else { 503 }, &body).into()
        }
        ("GET", "/metrics") => {
            Reply::text(200, crate::metrics::render(&api.published.view())).into()
        }
        ("GET", "/fsm") => Reply::raw_json(200, api.fsm_json.clone()).into(),
        ("GET", "/openapi.json") => Reply::raw_json(200, OPENAPI_JSON.to_string()).into(),
        ("GET", "/journal") => journal(query),
        ("POST", "/spec") => post_spec(api, request),
        ("POST", "/terminate") => match terminate_mode(query) {
            Ok(mode) => Outcome::Call {
                request: ApiRequest::Terminate { mode },
                timeout: WAITING_ANSWER_TIMEOUT,
                reply: answer_reply,
            },
            Err(reply) => reply.into(),
        },
        ("POST", "/recover") => Outcome::Call {
            request: ApiRequest::Recover,
            timeout: DRIVER_ANSWER_TIMEOUT,
            reply: answer_reply,
        },
        ("GET", "/status") => Reply::json(200, &neon::status_body(&api.published.view())).into(),
        ("GET", "/metrics.json") => {
            Reply::json(200, &neon::metrics_body(&api.published.view())).into()
        }
        ("POST", "/promote") => match promote_request(request) {
            Ok(wal_flush_lsn) => Outcome::Call {
                request: ApiRequest::Promote { wal_flush_lsn },
                timeout: WAITING_ANSWER_TIMEOUT,
                reply: answer_reply,
            },
            Err(reply) => reply.into(),
        },
        ("POST", "/configure") => neon::configure(api, request),
        ("GET", "/dbs_and_roles") => catalog_work(api, Ok(catalog::Work::DbsAndRoles)),
        ("GET", "/database_schema") => catalog_work(api, catalog::database_schema(query)),
        ("POST", "/check_writability") => catalog_work(api, Ok(catalog::Work::CheckWritability)),
        ("GET", "/insights") => catalog_work(api, Ok(catalog::Work::Insights)),
        ("POST", "/extensions") => catalog_work(api, catalog::extension_request(request)),
        ("POST", "/grants") => catalog_work(api, catalog::grant_request(request)),
        ("GET", "/autoscaling_metrics")
        | ("GET" | "POST" | "DELETE", "/lfc/prewarm")
        | ("GET" | "POST", "/lfc/offload")
        | ("POST", "/failpoints") => {
            catalog::neon_only(path).map_or_else(|| not_found(path), Outcome::Now)
        }
        ("POST", _) if path.starts_with("/extension_server/") => {
            catalog::neon_only(path).map_or_else(|| not_found(path), Outcome::Now)
        }
        (
            _,
            "/state"
            | "/healthz"
            | "/readyz"
            | "/metrics"
            | "/fsm"
            | "/journal"
            | "/status"
            | "/metrics.json"
            | "/spec"
            | "/terminate"
            | "/recover"
            | "/configure"
            | "/promote"
            | "/openapi.json"
            | "/dbs_and_roles"
            | "/database_schema"
            | "/check_writability"
            | "/insights"
            | "/extensions"
            | "/grants"
            | "/autoscaling_metrics"
            | "/lfc/prewarm"
            | "/lfc/offload"
            | "/failpoints",
        ) => Reply::error(405, format!("{method} is not allowed on {path}")).into(),
        _ if path.starts_with("/extension_server/") => {
            Reply::error(405, format!("{method} is not allowed on {path}")).into()
        }
        _ => not_found(path),
    }
}

fn not_found(path: &str) -> Outcome {
    Reply::error(404, format!("no endpoint {path}")).into()
}

/// A catalog request: a bad request answered now (400, 415), 503 unless running, else the
/// work for the catalog pool.
fn catalog_work(api: &Api, work: Result<catalog::Work, Reply>) -> Outcome {
    match work {
        Err(reply) => reply.into(),
        Ok(work) => match catalog::not_running(&api.published) {
            Some(refused) => refused.into(),
            None => Outcome::Catalog(work),
        },
    }
}

impl Api {
    fn new_request_id(&self) -> String {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        let wall = crate::clock::Clock::wall_time(self.published.clock().now())
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!("cc-{wall:x}-{}-{n}", self.pid)
    }

    /// Hands `request` to the driver and parks its caller until the answer comes (mapped by
    /// `reply`) or `timeout`. `POST /terminate` is parked even when the parking is full.
    fn call(
        &self,
        request: ApiRequest,
        request_id: String,
        timeout: Duration,
        reply: fn(ApiAnswer) -> Reply,
        responder: Responder,
    ) {
        let always = matches!(request, ApiRequest::Terminate { .. });
        if !self.parking.reserve(always) {
            return Reply::error(
                503,
                format!(
                    "too many waiting requests ({}): try again",
                    limits::PARKED_MAX
                ),
            )
            .send(responder, &request_id);
        }
        let (answer_tx, answer) = mpsc::channel();
        let call = ApiCall {
            request_id: request_id.clone(),
            request,
            reply: answer_tx,
        };
        let refused = match self.inbox.try_send(Input::Api(call)) {
            Ok(()) => {
                return self.parking.park(Parked {
                    responder,
                    request_id,
                    waiting: Waiting::Answer { answer, reply },
                    deadline: Instant::now() + timeout,
                })
            }
            Err(TrySendError::Full(_)) => "the driver's inbox is full: try again",
            Err(TrySendError::Disconnected(_)) => "compute_ctl is shutting down",
        };
        self.parking.release();
        Reply::error(503, refused).send(responder, &request_id);
    }

    /// `None` when the request may go on: it came on the internal listener, auth is off, the
    /// endpoint is open, or the token is valid; else the 401/403 reply.
    fn authorize(&self, path: &str, request: &Request) -> Option<Reply> {
        // Neon's internal port (loopback only) serves the processes of this machine without
        // a token, as Neon's internal server does.
        if request.listener == Listener::Internal {
            return None;
        }
        if !self.auth.enabled() || OPEN_PATHS.contains(&path) {
            return None;
        }
        match self.auth.check(request.header("Authorization")) {
            Ok(()) => None,
            Err(Refusal::Unauthorized(why)) => Some(Reply::error(
                401,
                format!("{} {path}: {why}", request.method),
            )),
            Err(Refusal::Forbidden(why)) => Some(Reply::error(
                403,
                format!(
                    "{} {path}: the bearer token is refused: {why}",
                    request.method
                ),
            )),
        }
    }
}

/// The body as JSON: 415 if not `application/json` (its size was checked as it came: 413).
pub(crate) fn json_body(request: &Request) -> Result<&[u8], Reply> {
    let content_type = request.header("Content-Type").unwrap_or_default();
    let media = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media != "application/json" {
        return Err(Reply::error(
            415,
            format!("the body must be application/json, not {:?}", content_type),
        ));
    }
    Ok(&request.body)
}

/// `POST /promote`'s body, optional: Neon's `{"wal_flush_lsn": "X/Y", "spec": …}` (the spec,
/// if any, is not taken here: send it with `POST /spec` before or after).
fn promote_request(request: &Request) -> Result<Option<states::Lsn>, Reply> {
    // No body (and so no content type) asks for a promotion without an LSN to wait for.
    if request.body.is_empty() && request.header("Content-Type").is_none() {
        return Ok(None);
    }
    let body = json_body(request)?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| Reply::error(400, format!("the body is not JSON: {e}")))?;
    match value.get("wal_flush_lsn") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(text)) => text.parse().map(Some).map_err(|e| {
            Reply::error(
                400,
                format!("wal_flush_lsn {text:?} is not an LSN (X/Y): {e}"),
            )
        }),
        Some(other) => Err(Reply::error(
            400,
            format!("wal_flush_lsn must be a string \"X/Y\", not {other}"),
        )),
    }
}

/// `POST /spec`: admitted here, offered to the driver, its answer as a status code.
fn post_spec(api: &Api, request: &Request) -> Outcome {
    let body = match json_body(request) {
        Ok(body) => body,
        Err(reply) => return reply.into(),
    };
    let spec = match api.admission.admit(body) {
        Ok(admitted) => Arc::new(admitted.spec),
        Err(errors) => return spec_errors(&errors).into(),
    };
    let if_match = match request.header("If-Match") {
        None => None,
        Some(value) => match value.trim().trim_matches('"').parse::<u64>() {
            Ok(generation) => Some(generation),
            Err(_) => {
                return Reply::error(
                    400,
                    format!("If-Match {value:?} is not a generation number"),
                )
                .into()
            }
        },
    };
    Outcome::Call {
        request: ApiRequest::PostSpec { spec, if_match },
        timeout: DRIVER_ANSWER_TIMEOUT,
        reply: answer_reply,
    }
}

/// Our API's status codes for the driver's answers: 202 a new generation (or a retried
/// request's), 200 identical, 409 refused by the phase, 503 nothing durable.
fn answer_reply(answer: ApiAnswer) -> Reply {
    let accepted = |status, generation, seq| {
        Reply::json(status, &json!({ "generation": generation, "seq": seq }))
    };
    match answer {
        ApiAnswer::Spec(SpecAnswer::Accepted { generation, seq })
        | ApiAnswer::Spec(SpecAnswer::Repeated { generation, seq }) => {
            accepted(202, generation, seq)
        }
        ApiAnswer::Spec(SpecAnswer::Identical { generation, seq }) => {
            accepted(200, generation, seq)
        }
        ApiAnswer::Refused(rejection) => Reply::error(409, rejection.to_string()),
        ApiAnswer::NotDurable { message } => Reply::error(503, message),
        ApiAnswer::Terminated { lsn } => Reply::json(200, &json!({ "lsn": lsn })),
        ApiAnswer::Recovering { phase } => Reply::json(200, &json!({ "phase": phase })),
        ApiAnswer::Configured(view) => Reply::json(200, &neon::status_body(&view)),
        ApiAnswer::ConfigureFailed { message } => Reply::error(500, message),
        // Neon's shapes for `POST /promote`.
        ApiAnswer::Promoted { generation } => Reply::json(
            200,
            &json!({ "status": "completed", "generation": generation }),
        ),
        ApiAnswer::NotPromoted { error } => {
            Reply::json(412, &json!({ "status": "not_promoted", "error": error }))
        }
        ApiAnswer::PromoteFailed { error } => {
            Reply::json(500, &json!({ "status": "failed", "error": error }))
        }
    }
}

/// 400 with `{"error", "path", "errors": [...]}`: every error, the first's path, and each.
pub(crate) fn spec_errors(errors: &SpecErrors) -> Reply {
    let body = json!({
        "error": errors.to_string(),
        "path": errors.first_path(),
        "errors": errors.0.iter().map(|e| json!({ "path": e.path, "message": e.message })).collect::<Vec<_>>(),
    });
    Reply::json(400, &body)
}

fn terminate_mode(query: &str) -> Result<ShutdownMode, Reply> {
    match query_param(query, "mode").as_deref() {
        None | Some("fast") => Ok(ShutdownMode::Fast),
        Some("immediate") => Ok(ShutdownMode::Immediate),
        Some(other) => Err(Reply::error(
            400,
            format!("mode {other:?} is neither fast nor immediate"),
        )),
    }
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

/// `GET /journal?since=&limit=&wait=`: parsed here; answered now, or parked.
fn journal(query: &str) -> Outcome {
    let number = |name: &str, default: u64| -> Result<u64, Reply> {
        match query_param(query, name) {
            None => Ok(default),
            Some(value) => value
                .parse()
                .map_err(|_| Reply::error(400, format!("{name}={value:?} is not a whole number"))),
        }
    };
    let (since, limit, wait) = match (number("since", 0), number("limit", 1000), number("wait", 0))
    {
        (Ok(s), Ok(l), Ok(w)) => (s, l, w),
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r.into(),
    };
    let limit = usize::try_from(limit)
        .unwrap_or(JOURNAL_LIMIT_MAX)
        .clamp(1, JOURNAL_LIMIT_MAX);
    let wait = Duration::from_secs(wait).min(JOURNAL_WAIT_MAX);
    Outcome::Journal { since, limit, wait }
}

/// The journal's records after `since`, at most `limit`.
fn journal_reply(state_dir: &Path, published: &Published, since: u64, limit: usize) -> Reply {
    match crate::journal::read_since(state_dir, since, limit) {
        Ok(records) => {
            let last_seq = published
                .view()
                .seq
                .max(records.last().map_or(0, |r| r.seq));
            Reply::json(200, &json!({ "records": records, "last_seq": last_seq }))
        }
        Err(e) => Reply::error(500, format!("cannot read the journal: {e}")),
    }
}

/// A response: status, body, content type.
#[derive(Debug)]
pub struct Reply {
    status: u16,
    body: String,
    content_type: &'static str,
}

impl Reply {
    pub fn json(status: u16, body: &impl serde::Serialize) -> Reply {
        match serde_json::to_string(body) {
            Ok(body) => Reply::raw_json(status, body),
            Err(e) => Reply::raw_json(
                500,
                json!({ "error": format!("cannot encode the answer: {e}") }).to_string(),
            ),
        }
    }

    fn raw_json(status: u16, body: String) -> Reply {
        Reply {
            status,
            body,
            content_type: "application/json",
        }
    }

    fn text(status: u16, body: String) -> Reply {
        Reply {
            status,
            body,
            content_type: "text/plain; version=0.0.4",
        }
    }

    /// A text body (a schema dump's SQL).
    fn sql_text(status: u16, body: String) -> Reply {
        Reply {
            status,
            body,
            content_type: "text/plain; charset=utf-8",
        }
    }

    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::json(status, &json!({ "error": message.into() }))
    }

    pub fn status(&self) -> u16 {
        self.status
    }

    /// Sends it on `responder`'s connection, with `X-Request-Id`.
    pub fn send(self, responder: Responder, request_id: &str) {
        responder.respond(
            self.status,
            self.content_type,
            self.body.as_bytes(),
            request_id,
        );
    }
}
