//! What a step may use while it runs: the compute's fixed facts (`StepEnv`), and per step the
//! spec, the cancel token and a progress callback (`StepCtx`). A leaf module: the storage
//! backends, Postgres and the control plane take these, and report back only through their
//! return values and the progress callback, never through the driver's inbox.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use states::{ErrorKind, PhaseName, StepError, StepName};

use crate::pg_user::PgUser;
use crate::postgres::connect::AdminConnection;
use crate::postgres::process::{Binaries, StartDeadlines};
use crate::spec::{ParsedSpec, SpecAdmission};
use crate::sync::CancelToken;

/// What every step knows about this compute; fixed for the process run.
#[derive(Debug)]
pub struct StepEnv {
    pub pgdata: PathBuf,
    pub state_dir: PathBuf,
    pub binaries: Binaries,
    pub pg_user: Option<PgUser>,
    pub admin: AdminConnection,
    pub deadlines: StartDeadlines,
    /// How long a fast shutdown may take before it escalates.
    pub fast_stop_timeout: Duration,
    pub control_plane: Option<crate::control_plane::ControlPlane>,
    /// How a spec from outside (the control plane's) is parsed and checked.
    pub admission: SpecAdmission,
}

/// Progress of a long step, for `GET /state`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub step: String,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
}

/// What one step may use while it runs.
pub struct StepCtx<'a> {
    pub env: &'a StepEnv,
    /// The spec the step works with (`None` for `stop_postgres` and `fetch_spec`).
    pub spec: Option<&'a ParsedSpec>,
    pub cancel: &'a CancelToken,
    /// Where progress goes; it must not block (the executor drops what it cannot deliver).
    pub on_progress: &'a (dyn Fn(Progress) + Sync),
}

impl StepCtx<'_> {
    /// The spec, which every spec-bearing step is handed (a defect otherwise).
    pub fn spec(&self, phase: PhaseName, step: StepName) -> Result<&ParsedSpec, StepError> {
        self.spec.ok_or_else(|| {
            StepError::new(
                phase,
                step,
                ErrorKind::Internal,
                format!("{step} was handed no spec"),
            )
        })
    }

    /// Reports progress of a long step to `GET /state`.
    pub fn progress(&self, progress: Progress) {
        (self.on_progress)(progress);
    }
}

impl std::fmt::Debug for StepCtx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepCtx").finish_non_exhaustive()
    }
}
