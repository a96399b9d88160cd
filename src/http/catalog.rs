//! Neon's catalog endpoints, on vanilla PostgreSQL: `GET /dbs_and_roles`,
//! `GET /database_schema?database=`, `POST /check_writability`, `GET /insights`, and the
//! internal `POST /extensions`, `POST /grants`; and the Neon-only ones that answer 501.
//!
//! Their SQL and `pg_dump` take time, and a request thread never waits: a request thread only
//! parses the request and checks the phase, then hands the work to the catalog pool, a few
//! threads of its own (`CATALOG_THREADS`) behind a bounded queue (`CATALOG_QUEUE_MAX`; one
//! more is answered 503 at once). A catalog thread does the work (`postgres::catalog_api`,
//! each session with its `statement_timeout`) and answers through the request's `Responder`,
//! as the parking answers a parked request. The schema dump is streamed (`BodyStream`, chunked)
//! as pg_dump writes it, at most `SCHEMA_DUMP_BYTES_MAX` within `SCHEMA_DUMP_TIMEOUT`; a dump
//! past either after its head is cut without its last chunk, so it never looks whole.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use states::PhaseName;

use super::limits::{
    CATALOG_QUEUE_MAX, CATALOG_THREADS, SCHEMA_DUMP_BYTES_MAX, SCHEMA_DUMP_TIMEOUT,
};
use super::{json_body, query_param, BodyStream, Reply, Request, Responder};
use crate::postgres::catalog_api::{self, CatalogApiError, DumpLimits, PRIVILEGES};
use crate::postgres::connect::AdminConnection;
use crate::sync::lock;
use crate::view::Published;

/// A test knob: `SCHEMA_DUMP_TIMEOUT` in milliseconds, so that a test can reach it quickly.
pub const SCHEMA_DUMP_TIMEOUT_KNOB: &str = "COMPUTE_CTL_TEST_SCHEMA_DUMP_TIMEOUT_MS";

/// What the catalog pool needs to reach the compute's Postgres.
#[derive(Clone, Debug)]
pub struct CatalogSetup {
    /// `-C`, the admin connection.
    pub admin: AdminConnection,
    /// PGDATA: its `postmaster.pid` gives the port Postgres listens on.
    pub pgdata: PathBuf,
    /// The directory of the Postgres binaries (`pg_dump`).
    pub bindir: PathBuf,
}

/// One piece of catalog work, parsed.
#[derive(Debug)]
pub enum Work {
    DbsAndRoles,
    DatabaseSchema {
        database: String,
    },
    CheckWritability,
    Insights,
    InstallExtension {
        extension: String,
        database: String,
        version: String,
    },
    Grants {
        database: String,
        schema: String,
        privileges: Vec<String>,
        role: String,
    },
}

#[derive(Debug)]
struct Job {
    work: Work,
    responder: Responder,
    request_id: String,
}

/// The catalog pool: its queue, its threads, and what they reach.
#[derive(Debug)]
pub struct Pool {
    jobs: SyncSender<Job>,
    queue: Mutex<Option<Receiver<Job>>>,
    setup: Option<CatalogSetup>,
    published: Arc<Published>,
    limits: DumpLimits,
    /// Jobs a catalog thread is doing now.
    running: AtomicUsize,
}

impl Pool {
    /// The pool (its threads start with `start`); `setup: None` answers every catalog request
    /// 503 (a test build of the API without Postgres).
    pub fn new(setup: Option<CatalogSetup>, published: Arc<Published>) -> Arc<Pool> {
        let (jobs, queue) = mpsc::sync_channel(CATALOG_QUEUE_MAX);
        let timeout = std::env::var(SCHEMA_DUMP_TIMEOUT_KNOB)
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map_or(SCHEMA_DUMP_TIMEOUT, Duration::from_millis);
        Arc::new(Pool {
            jobs,
            queue: Mutex::new(Some(queue)),
            setup,
            published,
            limits: DumpLimits {
                bytes_max: SCHEMA_DUMP_BYTES_MAX,
                timeout,
            },
            running: AtomicUsize::new(0),
        })
    }

    /// Starts the `CATALOG_THREADS` threads (once).
    pub fn start(self: &Arc<Pool>) -> std::io::Result<()> {
        let Some(queue) = lock(&self.queue).take() else {
            return Ok(());
        };
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..CATALOG_THREADS {
            let pool = self.clone();
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("http-catalog-{n}"))
                .spawn(move || pool.work(&queue))?;
        }
        Ok(())
    }

    /// Queues `work`, or answers 503 at once when the queue is full.
    pub fn submit(&self, work: Work, responder: Responder, request_id: String) {
        let job = Job {
            work,
            responder,
            request_id,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => Reply::error(
                503,
                format!(
                    "too many catalog requests ({} running, {CATALOG_QUEUE_MAX} waiting): try \
                     again",
                    self.running.load(Ordering::SeqCst)
                ),
            )
            .send(job.responder, &job.request_id),
            Err(TrySendError::Disconnected(job)) => {
                Reply::error(503, "compute_ctl is shutting down")
                    .send(job.responder, &job.request_id)
            }
        }
    }

    fn work(&self, queue: &Mutex<Receiver<Job>>) {
        loop {
            let job = lock(queue).recv();
            let Ok(Job {
                work,
                responder,
                request_id,
            }) = job
            else {
                return;
            };
            if responder.is_gone() {
                continue;
            }
            self.running.fetch_add(1, Ordering::SeqCst);
            {
                let _log = crate::logging::scope(None, Some(&request_id));
                self.answer(work, responder, &request_id);
            }
            self.running.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Does `work` and answers it, if Postgres still runs (the phase may have changed while
    /// it waited).
    fn answer(&self, work: Work, responder: Responder, request_id: &str) {
        if let Some(refused) = not_running(&self.published) {
            return refused.send(responder, request_id);
        }
        let Some(setup) = &self.setup else {
            return Reply::error(503, "the catalog endpoints are not set up in this build")
                .send(responder, request_id);
        };
        let target = match catalog_api::target(&setup.admin, &setup.pgdata) {
            Ok(target) => target,
            Err(e) => return error_reply(&e).send(responder, request_id),
        };
        let reply = match work {
            Work::DbsAndRoles => match catalog_api::dbs_and_roles(&target) {
                Ok(objects) => Reply::json(200, &objects),
                Err(e) => error_reply(&e),
            },
            Work::DatabaseSchema { database } => {
                return self.database_schema(setup, &target, &database, responder, request_id);
            }
            Work::CheckWritability => match catalog_api::check_writability(&target) {
                Ok(()) => Reply::json(200, &true),
                Err(e) => error_reply(&e),
            },
            Work::Insights => match catalog_api::insights(&target) {
                Ok(insights) => Reply::json(200, &insights),
                Err(e) => error_reply(&e),
            },
            Work::InstallExtension {
                extension,
                database,
                version,
            } => match catalog_api::install_extension(&target, &extension, &database, &version) {
                Ok(version) => {
                    Reply::json(201, &json!({ "extension": extension, "version": version }))
                }
                Err(e) => error_reply_as(&e, "failed to install extension"),
            },
            Work::Grants {
                database,
                schema,
                privileges,
                role,
            } => {
                match catalog_api::set_role_grants(&target, &database, &schema, &privileges, &role)
                {
                    Ok(()) => Reply::json(
                        201,
                        &json!({
                            "database": database,
                            "schema": schema,
                            "privileges": privileges,
                            "role": role,
                        }),
                    ),
                    Err(e) => error_reply_as(&e, "failed to grant role privileges to the schema"),
                }
            }
        };
        reply.send(responder, request_id);
    }

    /// `GET /database_schema`, streamed: the head goes with pg_dump's first bytes (so a
    /// database that is missing, or a pg_dump that fails at once, still gets its status), the
    /// rest in chunks as pg_dump writes them. A limit passed, or pg_dump failing, after the
    /// head cuts the answer without its last chunk: the client sees a body cut short.
    fn database_schema(
        &self,
        setup: &CatalogSetup,
        target: &catalog_api::Target,
        database: &str,
        responder: Responder,
        request_id: &str,
    ) {
        let mut responder = Some(responder);
        let mut body: Option<BodyStream> = None;
        let mut sink = |piece: &[u8]| {
            if let Some(responder) = responder.take() {
                body = Some(responder.stream(200, SQL_TEXT, request_id));
            }
            body.as_mut().is_some_and(|body| body.send(piece).is_ok())
        };
        let dumped =
            catalog_api::database_schema(target, &setup.bindir, database, self.limits, &mut sink);
        match (dumped, responder, body) {
            (Ok(_), _, Some(body)) => body.finish(),
            (Ok(_), Some(responder), None) => {
                Reply::sql_text(200, String::new()).send(responder, request_id)
            }
            (Err(e), _, Some(body)) => {
                log::warn!("GET /database_schema cut short after its head: {e}");
                body.abort();
            }
            (Err(e), Some(responder), None) => error_reply(&e).send(responder, request_id),
            // The sink takes the responder only to make the body.
            (_, None, None) => {}
        }
    }
}

/// The content type of a schema dump.
const SQL_TEXT: &str = "text/plain; charset=utf-8";

/// 503 naming the phase unless the compute is `running` with its postmaster.
pub(super) fn not_running(published: &Published) -> Option<Reply> {
    let view = published.view();
    if view.phase == PhaseName::Running && view.postmaster_pid.is_some() {
        return None;
    }
    Some(Reply::error(
        503,
        format!(
            "Postgres is not running: the compute is in phase {}, the catalog endpoints need \
             running",
            view.phase
        ),
    ))
}

/// The status of each catalog error: 404 no such database, 503 pg_stat_statements not loaded
/// or no session (Postgres went away), 504 the dump's time limit, 500 the rest (Postgres's
/// words, the dump's byte limit, pg_dump's failure).
fn error_reply(error: &CatalogApiError) -> Reply {
    Reply::error(status_of(error), error.to_string())
}

/// `error_reply` with Neon's prefix for `/extensions` and `/grants`.
fn error_reply_as(error: &CatalogApiError, prefix: &str) -> Reply {
    Reply::error(status_of(error), format!("{prefix}: {error}"))
}

fn status_of(error: &CatalogApiError) -> u16 {
    match error {
        CatalogApiError::NoDatabase(_) => 404,
        CatalogApiError::NotLoaded(_) | CatalogApiError::Connect(_) => 503,
        CatalogApiError::DumpTimeout { .. } => 504,
        CatalogApiError::Postgres(_)
        | CatalogApiError::DumpTooLarge { .. }
        | CatalogApiError::DumpFailed(_)
        | CatalogApiError::ReaderGone(_) => 500,
    }
}

/// `GET /database_schema?database=NAME`: the name, percent-decoded; 400 without it.
pub(super) fn database_schema(query: &str) -> Result<Work, Reply> {
    let Some(raw) = query_param(query, "database") else {
        return Err(Reply::error(
            400,
            "the query parameter database is required (?database=NAME)",
        ));
    };
    let database = percent_decode(&raw).ok_or_else(|| {
        Reply::error(
            400,
            format!("database={raw:?} is not percent-encoded UTF-8"),
        )
    })?;
    if database.is_empty() || database.contains('\0') {
        return Err(Reply::error(
            400,
            "database must be a non-empty name without NUL",
        ));
    }
    Ok(Work::DatabaseSchema { database })
}

/// Neon's `ExtensionInstallRequest`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtensionRequest {
    extension: String,
    database: String,
    version: String,
}

/// Neon's `SetRoleGrantsRequest`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantRequest {
    database: String,
    schema: String,
    privileges: Vec<String>,
    role: String,
}

/// `POST /extensions`' body: 415 not JSON, 400 not Neon's shape.
pub(super) fn extension_request(request: &Request) -> Result<Work, Reply> {
    let body = json_body(request)?;
    let parsed: ExtensionRequest = serde_json::from_slice(body).map_err(|e| {
        Reply::error(
            400,
            format!("the body must be {{\"extension\", \"database\", \"version\"}}: {e}"),
        )
    })?;
    for (field, value) in [
        ("extension", &parsed.extension),
        ("database", &parsed.database),
        ("version", &parsed.version),
    ] {
        check_name(field, value)?;
    }
    Ok(Work::InstallExtension {
        extension: parsed.extension,
        database: parsed.database,
        version: parsed.version,
    })
}

/// `POST /grants`' body: 415 not JSON, 400 not Neon's shape or a privilege not Neon's.
pub(super) fn grant_request(request: &Request) -> Result<Work, Reply> {
    let body = json_body(request)?;
    let parsed: GrantRequest = serde_json::from_slice(body).map_err(|e| {
        Reply::error(
            400,
            format!(
                "the body must be {{\"database\", \"schema\", \"privileges\": [...], \"role\"}}: \
                 {e}"
            ),
        )
    })?;
    for (field, value) in [
        ("database", &parsed.database),
        ("schema", &parsed.schema),
        ("role", &parsed.role),
    ] {
        check_name(field, value)?;
    }
    if parsed.privileges.is_empty() {
        return Err(Reply::error(
            400,
            "privileges must name at least one privilege",
        ));
    }
    if let Some(bad) = parsed
        .privileges
        .iter()
        .find(|p| !PRIVILEGES.contains(&p.as_str()))
    {
        return Err(Reply::error(
            400,
            format!(
                "privileges: {bad:?} is not one of {}",
                PRIVILEGES.join(", ")
            ),
        ));
    }
    Ok(Work::Grants {
        database: parsed.database,
        schema: parsed.schema,
        privileges: parsed.privileges,
        role: parsed.role,
    })
}

/// The most bytes of a name: Postgres's `NAMEDATALEN - 1`.
const NAME_BYTES_MAX: usize = 63;

fn check_name(field: &str, value: &str) -> Result<(), Reply> {
    if value.is_empty() || value.len() > NAME_BYTES_MAX || value.contains('\0') {
        return Err(Reply::error(
            400,
            format!("{field} must be a name of 1 to {NAME_BYTES_MAX} bytes without NUL"),
        ));
    }
    Ok(())
}

/// What each Neon-only endpoint is, and why it cannot be here: 501 with it.
pub(super) fn neon_only(path: &str) -> Option<Reply> {
    let why = match path {
        "/lfc/prewarm" | "/lfc/offload" => {
            "the local file cache (LFC) is Neon's Postgres extension: vanilla PostgreSQL has no \
             LFC to prewarm or offload"
        }
        "/autoscaling_metrics" => {
            "autoscaling metrics come from Neon's VM autoscaling and LFC: not available on \
             vanilla PostgreSQL"
        }
        "/failpoints" => {
            "Neon's failpoints are set at run time; compute_ctl's exist only in builds with the \
             `failpoints` feature (tests) and are armed at start by COMPUTE_CTL_FAILPOINTS"
        }
        _ if path.starts_with("/extension_server/") => {
            "remote extensions are downloaded from Neon's extension storage: not available on \
             vanilla PostgreSQL (install extensions into the Postgres installation, then POST \
             /extensions)"
        }
        _ => return None,
    };
    Some(Reply::error(501, format!("{path} is Neon-only: {why}")))
}

/// `%XX` and `+` of a query value decoded; `None` when not UTF-8 or a bad escape.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_values() {
        assert_eq!(percent_decode("a%20b+c").as_deref(), Some("a b c"));
        assert_eq!(percent_decode("%22x%22").as_deref(), Some("\"x\""));
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%ff"), None);
    }

    #[test]
    fn names_why_neon_only_endpoints_are_not_here() {
        for path in [
            "/lfc/prewarm",
            "/lfc/offload",
            "/autoscaling_metrics",
            "/extension_server/x.so",
        ] {
            assert_eq!(neon_only(path).unwrap().status(), 501, "{path}");
        }
        assert!(neon_only("/extension_server").is_none());
    }
}
