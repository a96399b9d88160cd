//! The executor: the one place a step becomes I/O.
//!
//! Worker steps (those with a `StepId`) run one at a time, in the order handed over, on the
//! worker thread, and report back to the driver's inbox as `Input::StepFinished`. Each gets
//! its own cancel token, so `cancel_steps` stops what runs and what waits, but not a
//! `stop_postgres` handed over after it. The other steps are done at once, on the driver's
//! thread, and never block.

mod steps;

pub use steps::Outcome;

use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use states::{ErrorKind, PhaseName, StepError, StepId};

use crate::input::{Input, StepReport};
use crate::postgres::process::Postmaster;
use crate::spec::ParsedSpec;
use crate::step_env::{StepCtx, StepEnv};
use crate::sync::{lock, CancelToken};

struct Job {
    id: StepId,
    step: states::Step,
    /// The phase that asked for the step, named in its errors.
    phase: PhaseName,
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

    /// Queues a worker step that `phase` asked for. The caller has journaled its
    /// `step_started` record.
    pub fn submit(&self, step: states::Step, spec: Option<Arc<ParsedSpec>>, phase: PhaseName) {
        let Some(id) = step.id() else {
            debug_assert!(false, "{step} is not a worker step");
            return;
        };
        let cancel = CancelToken::new();
        lock(&self.live).push((id, cancel.clone()));
        let job = Job {
            id,
            step,
            phase,
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

/// A worker step between its failpoints: `step.begin.<step>` once its `step_started` record
/// is durable and before its side effect (an armed error fails the step as an I/O error),
/// `step.done.<step>` after the side effect, before it is reported.
fn run_step(
    ctx: &StepCtx<'_>,
    job: &Job,
    postmaster: &Mutex<Option<Postmaster>>,
    inbox: &SyncSender<Input>,
) -> steps::Outcome {
    crate::failpoint!(format!("step.begin.{}", job.step.name()), |e| {
        let name = job.step.name();
        let message = format!("{name} cannot begin: {e}");
        steps::Outcome::failed(StepError::new(job.phase, name, ErrorKind::Io, message))
    });
    let outcome = steps::run(ctx, &job.step, job.phase, postmaster, inbox);
    crate::failpoint!(format!("step.done.{}", job.step.name()));
    outcome
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
            let _log = crate::logging::scope(Some(name.as_str()), None);
            let outcome = if job.cancel.is_cancelled() {
                steps::Outcome::failed(StepError::new(
                    job.phase,
                    name,
                    ErrorKind::Cancelled,
                    format!("{name} was cancelled before it began"),
                ))
            } else {
                if self.inbox.send(Input::StepStarted { id: job.id }).is_err() {
                    return;
                }
                let inbox = self.inbox.clone();
                // Progress is for GET /state only: dropped rather than waited for when the
                // inbox is full.
                let on_progress = move |progress| {
                    let _ = inbox.try_send(Input::Progress(progress));
                };
                let ctx = StepCtx {
                    env: &self.env,
                    spec: job.spec.as_deref(),
                    cancel: &job.cancel,
                    on_progress: &on_progress,
                };
                run_step(&ctx, &job, &self.postmaster, &self.inbox)
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
