//! The driver's one inbox: everything that can happen, from every thread.

use std::sync::mpsc::Sender;
use std::sync::Arc;

use states::{ExitStatus, ShutdownMode};

use crate::executor::{Progress, StepReport};
use crate::sidecar::SidecarView;
use crate::spec::ParsedSpec;

/// How many inputs may wait: HTTP threads block (briefly) beyond it rather than grow memory.
pub const INBOX_CAPACITY: usize = 1024;

/// An input to the driver.
#[derive(Debug)]
pub enum Input {
    /// A request only the driver can answer (it changes or waits on the phase).
    Api(ApiCall),
    StepFinished(StepReport),
    PostmasterExited {
        pid: u32,
        status: ExitStatus,
    },
    Signal(SignalKind),
    /// The monitor saw activity (a client backend not idle, a walsender...).
    Activity {
        wall_ms: u64,
    },
    Progress(Progress),
    Sidecar(SidecarView),
}

/// A signal delivered to compute_ctl.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalKind {
    /// SIGTERM: terminate (fast).
    Terminate,
    /// SIGINT: terminate (fast).
    Interrupt,
    /// SIGHUP: re-read the `-S` file (systemd's ExecReload).
    Reload,
}

/// An HTTP request handed to the driver, with where to send the answer.
#[derive(Debug)]
pub struct ApiCall {
    pub request_id: String,
    pub request: ApiRequest,
    pub reply: Sender<ApiReply>,
}

/// The requests that need the driver.
#[derive(Debug)]
pub enum ApiRequest {
    /// `POST /spec`.
    PostSpec {
        spec: Arc<ParsedSpec>,
        if_match: Option<u64>,
    },
    /// `POST /configure` (Neon): accept, then answer once running or failed.
    Configure { spec: Arc<ParsedSpec> },
    /// `POST /terminate`: answer once Postgres has stopped.
    Terminate { mode: ShutdownMode },
    /// `POST /recover`.
    Recover,
    /// `POST /promote` (Neon's shape): answer once promoted and applied, or failed.
    Promote { wal_flush_lsn: Option<states::Lsn> },
}

/// An HTTP answer: status and JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiReply {
    pub status: u16,
    pub body: serde_json::Value,
}

impl ApiReply {
    pub fn new(status: u16, body: serde_json::Value) -> ApiReply {
        ApiReply { status, body }
    }

    /// `{"error": message}` (and `"path"` when a spec path is at fault).
    pub fn error(status: u16, message: impl Into<String>) -> ApiReply {
        ApiReply {
            status,
            body: serde_json::json!({ "error": message.into() }),
        }
    }
}
