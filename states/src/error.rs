//! The two kinds of "no" in the core: a step that failed, and an event a phase refuses.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::phase::PhaseName;
use crate::step::{StepId, StepName};

/// A step that failed, with everything a control plane or a person needs to act on it.
///
/// The `failed` phase always carries one; it is journaled and shown in `GET /state`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    /// The phase the compute was in when the step failed.
    pub phase: PhaseName,
    /// The step that failed (`monitor` for a postmaster that exited on its own).
    pub step: StepName,
    pub kind: ErrorKind,
    /// What failed and why, naming the object (file, role, setting, server).
    pub message: String,
    /// Whether the same step may succeed if tried again unchanged.
    pub retryable: bool,
}

impl StepError {
    pub fn new(
        phase: PhaseName,
        step: StepName,
        kind: ErrorKind,
        message: impl Into<String>,
    ) -> StepError {
        StepError {
            phase,
            step,
            kind,
            message: message.into(),
            retryable: kind.retryable_by_default(),
        }
    }
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed in {} ({}): {}",
            self.step, self.phase, self.kind, self.message
        )
    }
}

impl std::error::Error for StepError {}

/// The class of a step failure: decides retries and the process exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// A file system operation failed.
    Io,
    /// PGDATA is neither absent, empty, nor ours: it is never wiped (exit code 6).
    PgdataUnsafe,
    /// A deadline passed.
    Timeout,
    /// Postgres refused a statement or a connection.
    Postgres,
    /// Postgres refused a setting's value.
    ConfigRefused,
    /// The postmaster exited without being asked to (exit code 10).
    PostmasterExited,
    /// The storage (upstream server, safekeepers, pageserver) failed or was unreachable.
    Storage,
    /// The control plane could not be reached or gave no usable answer.
    ControlPlane,
    /// The step was cancelled by a terminate request.
    Cancelled,
    /// A defect in compute_ctl itself.
    Internal,
}

impl ErrorKind {
    /// Transient kinds are worth another attempt; the others need a new spec or a person.
    pub fn retryable_by_default(self) -> bool {
        match self {
            ErrorKind::Timeout | ErrorKind::Storage | ErrorKind::ControlPlane => true,
            ErrorKind::Io
            | ErrorKind::PgdataUnsafe
            | ErrorKind::Postgres
            | ErrorKind::ConfigRefused
            | ErrorKind::PostmasterExited
            | ErrorKind::Cancelled
            | ErrorKind::Internal => false,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Io => "io",
            ErrorKind::PgdataUnsafe => "pgdata_unsafe",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Postgres => "postgres",
            ErrorKind::ConfigRefused => "config_refused",
            ErrorKind::PostmasterExited => "postmaster_exited",
            ErrorKind::Storage => "storage",
            ErrorKind::ControlPlane => "control_plane",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event that makes no sense in the current phase. The phase is unchanged; the driver
/// answers the caller (HTTP 409) or journals nothing, but never panics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "rejection", rename_all = "snake_case")]
pub enum Rejection {
    /// `terminating` and `terminated` take no new spec.
    TakesNoSpec { phase: PhaseName },
    /// `If-Match` names a generation other than the desired one.
    GenerationMismatch {
        phase: PhaseName,
        expected: u64,
        desired: u64,
    },
    /// `recover` is only for `failed` and `running`.
    NotFailed { phase: PhaseName },
    /// `promote`, and a drift check's result, are only for `running` (a drift check may end
    /// as a step began).
    NotRunning { phase: PhaseName },
    /// A step started or finished that is not the one this phase waits for (a cancelled
    /// or superseded step reporting late).
    StaleStep { phase: PhaseName, id: StepId },
    /// The step in flight reported an output of the wrong shape: a defect in the executor.
    UnexpectedOutput { phase: PhaseName, id: StepId },
    /// A postmaster exit was reported while no postmaster is supposed to run.
    NoPostmaster { phase: PhaseName },
    /// `terminated` is final.
    Terminated,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::TakesNoSpec { phase } => write!(f, "phase {phase} takes no new spec"),
            Rejection::GenerationMismatch {
                expected, desired, ..
            } => write!(
                f,
                "If-Match names generation {expected}, but the desired generation is {desired}"
            ),
            Rejection::NotFailed { phase } => {
                write!(
                    f,
                    "recover applies only in phases failed and running, not in {phase}"
                )
            }
            Rejection::NotRunning { phase } => write!(
                f,
                "promote and drift checks apply only in phase running, not in {phase}"
            ),
            Rejection::StaleStep { phase, id } => {
                write!(f, "step {id} is not the step phase {phase} waits for")
            }
            Rejection::UnexpectedOutput { phase, id } => {
                write!(f, "step {id} reported an output phase {phase} cannot use")
            }
            Rejection::NoPostmaster { phase } => {
                write!(
                    f,
                    "a postmaster exit was reported in phase {phase}, which runs none"
                )
            }
            Rejection::Terminated => write!(f, "the compute is terminated"),
        }
    }
}

impl std::error::Error for Rejection {}
