//! The driver's one inbox: everything that can happen, from every thread, and the typed answers
//! the driver gives to the requests among them. Only `src/http/` turns those answers into
//! status codes and bodies.

use std::sync::mpsc::Sender;
use std::sync::Arc;

use states::{ExitStatus, Lsn, PhaseName, Rejection, ShutdownMode, StepError, StepId, StepName};
use states::{SpecAnswer, StepOutput};

use crate::postgres::monitor::DriftReport;
use crate::postgres::settings::PendingRestart;
use crate::sidecar::SidecarView;
use crate::spec::ParsedSpec;
use crate::step_env::Progress;
use crate::view::StateView;

/// How many inputs may wait: HTTP threads block (briefly) beyond it rather than grow memory.
pub const INBOX_CAPACITY: usize = 1024;

/// An input to the driver.
#[derive(Debug)]
pub enum Input {
    /// A request only the driver can answer (it changes or waits on the phase).
    Api(ApiCall),
    /// The worker began step `id`.
    StepStarted {
        id: StepId,
    },
    StepFinished(StepReport),
    PostmasterExited {
        pid: u32,
        status: ExitStatus,
        /// pg_control, read after the exit, says the cluster was shut down cleanly.
        shut_down: bool,
    },
    Signal(SignalKind),
    /// The monitor saw activity (a client backend not idle, a walsender...).
    Activity {
        wall_ms: u64,
    },
    Progress(Progress),
    Sidecar(SidecarView),
    /// The monitor's drift check ended.
    Drift(DriftReport),
}

/// A worker step's end, as the worker reports it.
#[derive(Debug)]
pub struct StepReport {
    pub id: StepId,
    pub step: StepName,
    pub result: Result<StepOutput, StepError>,
    pub duration_ms: u64,
    /// Facts worth journaling (`step_finished.output`): a skipped step's reason, statements
    /// sent, an orphan stopped.
    pub detail: Option<serde_json::Value>,
    pub extra: StepExtra,
}

/// What a step hands the driver besides its output.
#[derive(Debug, Default)]
pub enum StepExtra {
    #[default]
    None,
    /// `apply_spec`: settings that wait for a restart.
    Applied {
        pending_restart: Vec<PendingRestart>,
    },
    /// `fetch_spec`: the control plane's spec, admitted (parsed and checked).
    Fetched(Box<ParsedSpec>),
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
    /// SIGUSR2: re-execute compute_ctl's own binary file, keeping Postgres (an upgrade in
    /// place: the new process adopts it).
    Upgrade,
}

/// An HTTP request handed to the driver, with where to send the answer.
#[derive(Debug)]
pub struct ApiCall {
    pub request_id: String,
    pub request: ApiRequest,
    pub reply: Sender<ApiAnswer>,
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

/// The driver's answer to an `ApiRequest`, as a value.
#[derive(Clone, Debug, PartialEq)]
pub enum ApiAnswer {
    /// `PostSpec` or `Configure` taken: accepted, identical, or a retried request's first
    /// answer. `Configure` is answered only later, with `Configured` or `ConfigureFailed`.
    Spec(SpecAnswer),
    /// `Configure`: the compute runs the spec (Neon's `/status` body comes from the view).
    Configured(Arc<StateView>),
    /// `Configure`: the compute failed, or is going away, before it ran the spec.
    ConfigureFailed { message: String },
    /// `Terminate`: Postgres has stopped; its last checkpoint's LSN.
    Terminated { lsn: Option<Lsn> },
    /// `Recover`: accepted; the phase it led to.
    Recovering { phase: PhaseName },
    /// The phase refused the request.
    Refused(Rejection),
    /// Nothing was accepted: the spec or the journal could not be written.
    NotDurable { message: String },
    /// `Promote`: the compute is a primary now, running this generation.
    Promoted { generation: Option<u64> },
    /// `Promote`: refused (not an upstream replica, or a phase that cannot promote).
    NotPromoted { error: String },
    /// `Promote`: the promotion (or the apply after it) failed.
    PromoteFailed { error: String },
}
