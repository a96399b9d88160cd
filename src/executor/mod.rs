//! The executor: the one place a step becomes I/O.
//!
//! Worker steps (those with a `StepId`) run one at a time, in the order handed over, on the
//! worker thread, and report back to the driver's inbox as `Input::StepFinished`. Each gets
//! its own cancel token, so `cancel_steps` stops what runs and what waits, but not a
//! `stop_postgres` handed over after it. The other steps are done at once, on the driver's
//! thread, and never block.

pub mod cancel;
mod steps;

pub use steps::{Outcome, StepCtx};

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use states::{ErrorKind, StepError, StepId, StepName, StepOutput};

use crate::input::Input;
use crate::pg_user::PgUser;
use crate::postgres::connect::AdminConnection;
use crate::postgres::process::{Binaries, Postmaster, StartDeadlines};
use crate::postgres::settings::PendingRestart;
use crate::spec::ParsedSpec;
use cancel::{lock, CancelToken};

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
    /// `fetch_spec`: the control plane's spec, parsed and checked.
    Fetched(Box<Result<ParsedSpec, String>>),
}

/// Progress of a long step, for `GET /state`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub step: String,
    pub bytes_done: u64,
    pub bytes_total: Option<u64>,
}

struct Job {
    id: StepId,
    step: states::Step,
    spec: Option<Arc<ParsedSpec>>,
    cancel: CancelToken,
}

/// Hands steps to the worker and cancels them.
pub struct Executor {
    env: Arc<StepEnv>,
    jobs: Sender<Job>,
    /// Tokens of the steps handed over and not finished.
    live: Arc<Mutex<Vec<(StepId, CancelToken)>>>,
    /// The running postmaster, once `spawn_postgres` succeeded.
    postmaster: Arc<Mutex<Option<Postmaster>>>,
    sidecar: Option<crate::sidecar::Sidecar>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor").field("env", &self.env).finish()
    }
}

impl Executor {
    pub fn start(
        env: StepEnv,
        inbox: SyncSender<Input>,
        sidecar: Option<crate::sidecar::Sidecar>,
    ) -> anyhow::Result<Executor> {
        let env = Arc::new(env);
        let (jobs, receiver) = mpsc::channel();
        let live = Arc::new(Mutex::new(Vec::new()));
        let postmaster = Arc::new(Mutex::new(None));
        let worker = Worker {
            env: env.clone(),
            inbox,
            live: live.clone(),
            postmaster: postmaster.clone(),
        };
        std::thread::Builder::new()
            .name("step-worker".into())
            .spawn(move || worker.run(receiver))?;
        Ok(Executor {
            env,
            jobs,
            live,
            postmaster,
            sidecar,
        })
    }

    pub fn env(&self) -> &StepEnv {
        &self.env
    }

    /// Queues a worker step. The caller has journaled its `step_started` record.
    pub fn submit(&self, step: states::Step, spec: Option<Arc<ParsedSpec>>) {
        let Some(id) = step.id() else {
            debug_assert!(false, "{step} is not a worker step");
            return;
        };
        let cancel = CancelToken::new();
        lock(&self.live).push((id, cancel.clone()));
        let job = Job {
            id,
            step,
            spec,
            cancel,
        };
        if self.jobs.send(job).is_err() {
            log::error!("the step worker is gone; step {id} cannot run");
        }
    }

    /// `cancel_steps`: cancels every step handed over and not finished.
    pub fn cancel_all(&self) {
        let live = lock(&self.live).clone();
        for (id, token) in live {
            log::info!("cancelling step {id}");
            token.cancel();
        }
    }

    pub fn start_sidecar(&self) {
        if let Some(sidecar) = &self.sidecar {
            sidecar.start();
        }
    }

    pub fn stop_sidecar(&self) {
        if let Some(sidecar) = &self.sidecar {
            sidecar.stop();
        }
    }

    /// The postmaster, if one runs.
    pub fn postmaster(&self) -> Option<Postmaster> {
        lock(&self.postmaster).clone()
    }
}

struct Worker {
    env: Arc<StepEnv>,
    inbox: SyncSender<Input>,
    live: Arc<Mutex<Vec<(StepId, CancelToken)>>>,
    postmaster: Arc<Mutex<Option<Postmaster>>>,
}

impl Worker {
    fn run(self, jobs: Receiver<Job>) {
        for job in jobs {
            let started = Instant::now();
            let name = job.step.name();
            let _log = crate::logging::scope(Some(name.as_str()), None);
            let outcome = if job.cancel.is_cancelled() {
                steps::Outcome::failed(StepError::new(
                    states::PhaseName::Terminating,
                    name,
                    ErrorKind::Cancelled,
                    format!("{name} was cancelled before it began"),
                ))
            } else {
                let ctx = steps::StepCtx {
                    env: &self.env,
                    spec: job.spec.as_deref(),
                    cancel: &job.cancel,
                    inbox: &self.inbox,
                    postmaster: &self.postmaster,
                };
                steps::run(&ctx, &job.step)
            };
            lock(&self.live).retain(|(id, _)| *id != job.id);
            let report = StepReport {
                id: job.id,
                step: name,
                result: outcome.result,
                duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
                detail: outcome.detail,
                extra: outcome.extra,
            };
            if self.inbox.send(Input::StepFinished(report)).is_err() {
                return;
            }
            // The postmaster watch reports an exit only after the start was reported, so the
            // driver learns of the postmaster before of its death.
            if let Some(release) = outcome.after_report {
                release();
            }
        }
    }
}
