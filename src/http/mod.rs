//! The HTTP API (CONTRACT.md, "HTTP API"): a blocking `tiny_http` server on a few threads.
//!
//! Reads (`GET /state`, `/healthz`, `/readyz`, `/metrics`, `/journal`, `/fsm`, `/status`) are
//! answered from the published view and the journal files, never by the driver, so they answer
//! at once while a long step runs. Requests that change or wait on the phase are parsed and
//! checked here, then handed to the driver as typed `ApiRequest`s.

pub mod neon;

use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use states::{ShutdownMode, SpecAnswer};
use tiny_http::{Header, Method, Request, Response, Server};

use crate::input::{ApiAnswer, ApiCall, ApiRequest, Input};
use crate::spec::{SpecAdmission, SpecErrors};
use crate::view::Published;

/// The largest request body accepted (413 beyond).
pub const BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Threads that serve requests.
pub const THREADS: usize = 4;
/// The longest `GET /journal?wait=`.
pub const JOURNAL_WAIT_MAX: Duration = Duration::from_secs(60);
/// The most records one `GET /journal` returns.
pub const JOURNAL_LIMIT_MAX: usize = 10_000;
/// How long a request waits for the driver's answer (`/terminate`, `/configure` wait longer:
/// they answer when the compute gets there).
const DRIVER_ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
const WAITING_ANSWER_TIMEOUT: Duration = Duration::from_secs(3600);
/// The longest `X-Request-Id` taken as given.
const REQUEST_ID_BYTES_MAX: usize = 200;

/// What the request threads share.
pub struct Api {
    pub published: Arc<Published>,
    pub inbox: SyncSender<Input>,
    pub state_dir: PathBuf,
    /// Parses and checks a spec (form rules, the Postgres binary's settings and libraries).
    pub admission: SpecAdmission,
    pub auth: Option<crate::auth::Verifier>,
    /// Requests handed to the driver and not yet answered: the process waits for them before
    /// it exits, so `POST /terminate` gets its answer.
    pub in_flight: AtomicUsize,
    next_request: AtomicU64,
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
        auth: Option<crate::auth::Verifier>,
    ) -> Arc<Api> {
        let fsm_json = serde_json::to_string(&states::table::table()).unwrap_or_default();
        Arc::new(Api {
            published,
            inbox,
            state_dir,
            admission,
            auth,
            in_flight: AtomicUsize::new(0),
            next_request: AtomicU64::new(1),
            fsm_json,
        })
    }

    /// Waits until every request handed to the driver has been answered, at most `timeout`.
    pub fn drain(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        while self.in_flight.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        // Let the last response leave the socket.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Binds `addr` (connections wait in the backlog until `serve`): a busy address is refused
/// before compute_ctl writes anything.
pub fn bind(addr: &str) -> anyhow::Result<Server> {
    Server::http(addr).map_err(|e| anyhow::anyhow!("cannot listen on --http-addr {addr}: {e}"))
}

/// Serves on `THREADS` threads; called once the view to publish is true.
pub fn serve(server: Server, api: Arc<Api>) -> anyhow::Result<()> {
    let server = Arc::new(server);
    for n in 0..THREADS {
        let server = server.clone();
        let api = api.clone();
        std::thread::Builder::new()
            .name(format!("http-{n}"))
            .spawn(move || {
                for request in server.incoming_requests() {
                    handle(&api, request);
                }
            })?;
    }
    Ok(())
}

fn header(request: &Request, name: &str) -> Option<String> {
    request
        .headers()
        .iter()
        .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str().to_string())
}

fn handle(api: &Api, mut request: Request) {
    let request_id = header(&request, "X-Request-Id")
        .filter(|id| {
            !id.is_empty()
                && id.len() <= REQUEST_ID_BYTES_MAX
                && id.bytes().all(|b| b.is_ascii_graphic())
        })
        .unwrap_or_else(|| api.new_request_id());
    let url = request.url().to_string();
    let (path, query) = url.split_once('?').unwrap_or((url.as_str(), ""));
    let method = request.method().clone();
    let reply = if let Some(denied) = api.authorize(&method, path, &request) {
        denied
    } else {
        route(api, &mut request, &method, path, query, &request_id)
    };
    crate::failpoint!(crate::failpoint::http_point(method == Method::Post, path));
    respond(request, reply, &request_id);
}

fn route(
    api: &Api,
    request: &mut Request,
    method: &Method,
    path: &str,
    query: &str,
    request_id: &str,
) -> Reply {
    match (method, path) {
        (Method::Get, "/state") => Reply::json(200, &*api.published.view()),
        (Method::Get, "/healthz") => {
            if api.published.live() {
                Reply::json(200, &json!({ "status": "ok" }))
            } else {
                Reply::json(503, &json!({ "status": "the driver loop is stuck" }))
            }
        }
        (Method::Get, "/readyz") => {
            let view = api.published.view();
            let body = json!({
                "ready": view.ready(),
                "phase": view.phase,
                "desired_generation": view.desired_generation,
                "applied_generation": view.applied_generation,
            });
            Reply::json(if view.ready() { 200 } else { 503 }, &body)
        }
        (Method::Get, "/metrics") => Reply::text(200, metrics(&api.published.view())),
        (Method::Get, "/fsm") => Reply::raw_json(200, api.fsm_json.clone()),
        (Method::Get, "/journal") => journal(api, query),
        (Method::Post, "/spec") => post_spec(api, request, request_id),
        (Method::Post, "/terminate") => match terminate_mode(query) {
            Ok(mode) => {
                let request = ApiRequest::Terminate { mode };
                match api.call(request, request_id, WAITING_ANSWER_TIMEOUT) {
                    Ok(ApiAnswer::Terminated { lsn }) => Reply::json(200, &json!({ "lsn": lsn })),
                    Ok(other) => answer_reply(other),
                    Err(reply) => reply,
                }
            }
            Err(reply) => reply,
        },
        (Method::Post, "/recover") => {
            match api.call(ApiRequest::Recover, request_id, DRIVER_ANSWER_TIMEOUT) {
                Ok(ApiAnswer::Recovering { phase }) => Reply::json(200, &json!({ "phase": phase })),
                Ok(other) => answer_reply(other),
                Err(reply) => reply,
            }
        }
        (Method::Get, "/status") => Reply::json(200, &neon::status_body(&api.published.view())),
        (Method::Get, "/metrics.json") => {
            Reply::json(200, &neon::metrics_body(&api.published.view()))
        }
        (Method::Post, "/configure") => neon::configure(api, request, request_id),
        (
            _,
            "/state" | "/healthz" | "/readyz" | "/metrics" | "/fsm" | "/journal" | "/status"
            | "/metrics.json" | "/spec" | "/terminate" | "/recover" | "/configure",
        ) => Reply::error(405, format!("{method} is not allowed on {path}")),
        _ => Reply::error(404, format!("no endpoint {path}")),
    }
}

impl Api {
    fn new_request_id(&self) -> String {
        let n = self.next_request.fetch_add(1, Ordering::Relaxed);
        let wall = crate::clock::Clock::wall_time(self.published.clock().now())
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        format!("cc-{wall:x}-{}-{n}", std::process::id())
    }

    /// Hands `request` to the driver and waits for its answer; `Err` is the reply when none
    /// comes.
    pub(crate) fn call(
        &self,
        request: ApiRequest,
        request_id: &str,
        timeout: Duration,
    ) -> Result<ApiAnswer, Reply> {
        let (reply, answer) = mpsc::channel();
        let call = ApiCall {
            request_id: request_id.to_string(),
            request,
            reply,
        };
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let result = if self.inbox.send(Input::Api(call)).is_err() {
            Err(Reply::error(503, "compute_ctl is shutting down"))
        } else {
            match answer.recv_timeout(timeout) {
                Ok(answer) => Ok(answer),
                Err(mpsc::RecvTimeoutError::Timeout) => Err(Reply::error(
                    504,
                    format!("no answer from the driver within {timeout:?}"),
                )),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    Err(Reply::error(503, "compute_ctl is shutting down"))
                }
            }
        };
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        result
    }

    fn authorize(&self, method: &Method, path: &str, request: &Request) -> Option<Reply> {
        let verifier = self.auth.as_ref()?;
        // Reads are open (health checks, scrapers); changes need a token.
        if *method == Method::Get {
            return None;
        }
        let token = header(request, "Authorization")
            .and_then(|v| v.strip_prefix("Bearer ").map(|t| t.trim().to_string()));
        match token {
            None => Some(Reply::error(
                401,
                format!("{method} {path} needs a bearer token"),
            )),
            Some(token) => match verifier.verify(&token) {
                Ok(()) => None,
                Err(why) => Some(Reply::error(
                    403,
                    format!("the bearer token is refused: {why}"),
                )),
            },
        }
    }
}

/// Reads a JSON body within the limit: 413 beyond it, 415 if not JSON.
pub(crate) fn read_body(request: &mut Request) -> Result<Vec<u8>, Reply> {
    let content_type = header(request, "Content-Type").unwrap_or_default();
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
    if request.body_length().is_some_and(|n| n > BODY_BYTES_MAX) {
        return Err(Reply::error(
            413,
            format!("the body exceeds {BODY_BYTES_MAX} bytes"),
        ));
    }
    let mut body = Vec::new();
    let limit = u64::try_from(BODY_BYTES_MAX).unwrap_or(u64::MAX) + 1;
    if let Err(e) = request.as_reader().take(limit).read_to_end(&mut body) {
        return Err(Reply::error(400, format!("cannot read the body: {e}")));
    }
    if body.len() > BODY_BYTES_MAX {
        return Err(Reply::error(
            413,
            format!("the body exceeds {BODY_BYTES_MAX} bytes"),
        ));
    }
    Ok(body)
}

/// `POST /spec`: admitted here, offered to the driver, its answer as a status code.
fn post_spec(api: &Api, request: &mut Request, request_id: &str) -> Reply {
    let body = match read_body(request) {
        Ok(body) => body,
        Err(reply) => return reply,
    };
    let spec = match api.admission.admit(&body) {
        Ok(admitted) => Arc::new(admitted.spec),
        Err(errors) => return spec_errors(&errors),
    };
    let if_match = match header(request, "If-Match") {
        None => None,
        Some(value) => match value.trim().trim_matches('"').parse::<u64>() {
            Ok(generation) => Some(generation),
            Err(_) => {
                return Reply::error(
                    400,
                    format!("If-Match {value:?} is not a generation number"),
                )
            }
        },
    };
    let request = ApiRequest::PostSpec { spec, if_match };
    match api.call(request, request_id, DRIVER_ANSWER_TIMEOUT) {
        Ok(answer) => answer_reply(answer),
        Err(reply) => reply,
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

fn journal(api: &Api, query: &str) -> Reply {
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
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
    };
    let limit = usize::try_from(limit)
        .unwrap_or(JOURNAL_LIMIT_MAX)
        .clamp(1, JOURNAL_LIMIT_MAX);
    let wait = Duration::from_secs(wait).min(JOURNAL_WAIT_MAX);
    if !wait.is_zero() && api.published.view().seq <= since {
        api.published.wait_for_seq(since, wait);
    }
    match crate::journal::read_since(&api.state_dir, since, limit) {
        Ok(records) => {
            let last_seq = api
                .published
                .view()
                .seq
                .max(records.last().map_or(0, |r| r.seq));
            Reply::json(200, &json!({ "records": records, "last_seq": last_seq }))
        }
        Err(e) => Reply::error(500, format!("cannot read the journal: {e}")),
    }
}

fn metrics(view: &crate::view::StateView) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP compute_ctl_phase 1 for the compute's current phase."
    );
    let _ = writeln!(out, "# TYPE compute_ctl_phase gauge");
    for phase in states::PhaseName::ALL {
        let _ = writeln!(
            out,
            "compute_ctl_phase{{phase=\"{phase}\"}} {}",
            u8::from(phase == view.phase)
        );
    }
    let gauges: [(&str, &str, u64); 11] = [
        (
            "compute_ctl_desired_generation",
            "The generation of the desired spec.",
            view.desired_generation.unwrap_or(0),
        ),
        (
            "compute_ctl_applied_generation",
            "The generation applied to the running Postgres.",
            view.applied_generation.unwrap_or(0),
        ),
        (
            "compute_ctl_journal_seq",
            "The seq of the last journal record.",
            view.seq,
        ),
        (
            "compute_ctl_epoch",
            "The journal epoch of this process run.",
            view.epoch,
        ),
        (
            "compute_ctl_attempt",
            "The attempt of the current phase's step.",
            u64::from(view.attempt),
        ),
        (
            "compute_ctl_postgres_up",
            "1 while a postmaster runs.",
            u64::from(view.postmaster_pid.is_some()),
        ),
        (
            "compute_ctl_ready",
            "1 when running with the desired spec applied.",
            u64::from(view.ready()),
        ),
        (
            "compute_ctl_pending_restart_settings",
            "Settings waiting for a restart.",
            view.pending_restart.len() as u64,
        ),
        (
            "compute_ctl_startup_basebackup_ms",
            "The basebackup phase of the last start-up.",
            view.startup.basebackup_ms,
        ),
        (
            "compute_ctl_startup_start_postgres_ms",
            "Starting Postgres in the last start-up.",
            view.startup.start_postgres_ms,
        ),
        (
            "compute_ctl_startup_total_ms",
            "The whole last start-up.",
            view.startup.total_ms,
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    }
    out
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

    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::json(status, &json!({ "error": message.into() }))
    }
}

fn respond(request: Request, reply: Reply, request_id: &str) {
    let mut response = Response::from_string(reply.body).with_status_code(reply.status);
    for (name, value) in [
        ("Content-Type", reply.content_type),
        ("X-Request-Id", request_id),
    ] {
        if let Ok(header) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(header);
        }
    }
    if let Err(e) = request.respond(response) {
        log::debug!("cannot send a response: {e}");
    }
}
