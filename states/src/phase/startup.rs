//! What the four start-up phases (`init`, `sync_safekeepers`, `basebackup`, `starting`) share:
//! one worker step each, retried with backoff while its error is retryable, and on success
//! the next phase.

use serde::{Deserialize, Serialize};

use crate::error::Rejection;
use crate::event::Event;
use crate::spec_ref::SpecRef;
use crate::step::{ExitReason, Step, StepId, StepOutput};
use crate::time::Now;

use super::{
    fail, start_over, take_offer, terminate, Ctx, Next, Phase, PhaseName, Rejected, StepRun,
};

/// The data of every start-up phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Startup {
    pub ctx: Ctx,
    /// The spec this start-up builds; a spec accepted meanwhile becomes desired and is
    /// applied once the compute runs.
    pub target: SpecRef,
    pub run: StepRun,
}

impl Startup {
    /// The data for the start-up phase `next`, whose step gets a fresh id (and the attempt
    /// an interrupted earlier run left it at).
    pub(crate) fn advance(mut self, next: PhaseName) -> (Startup, StepId) {
        let id = self.ctx.next_step_id();
        let run = self.ctx.first_run(next, id, self.target.generation);
        let startup = Startup {
            ctx: self.ctx,
            target: self.target,
            run,
        };
        (startup, id)
    }
}

/// A start-up phase: it names its step and the phase that follows its success.
pub(crate) trait StartupPhase: Into<Phase> + Sized {
    const NAME: PhaseName;

    fn startup(&mut self) -> &mut Startup;
    fn into_startup(self) -> Startup;

    /// This phase's step, with the id `id`.
    fn step(&mut self, id: StepId) -> Step;

    /// The next phase after the step succeeded with `output`; the phase back if the output
    /// is not this step's.
    fn succeed(self, output: StepOutput) -> Result<Next, Self>;
}

/// The transition function of every start-up phase.
pub(crate) fn on_event<P: StartupPhase>(
    mut phase: P,
    event: Event,
    now: Now,
) -> Result<Next, Rejected> {
    match event {
        Event::SpecOffered { offer } => take_offer(phase, offer, now),
        Event::SpecAccepted { spec } => {
            phase.startup().ctx.accept(spec);
            Ok(Next::stay(phase))
        }
        Event::StepStarted { id } => {
            if phase.startup().run.is_in_flight(id) {
                Ok(Next::stay(phase))
            } else {
                Err(stale(phase, id))
            }
        }
        Event::StepFinished { id, result } => {
            if !phase.startup().run.is_in_flight(id) {
                return Err(stale(phase, id));
            }
            match result {
                Ok(output) => phase.succeed(output).map_err(|phase| {
                    Rejected::new(phase, Rejection::UnexpectedOutput { phase: P::NAME, id })
                }),
                Err(error) => {
                    let startup = phase.startup();
                    // A newer spec waits: the newest wins, from the start (the failure stays in
                    // the journal's step_finished and transition records).
                    if let Some(desired) = startup.ctx.desired.clone() {
                        if desired != startup.target {
                            return Ok(start_over(phase.into_startup().ctx, desired));
                        }
                    }
                    match startup
                        .run
                        .retry_after(error.clone(), &startup.ctx.policy, now)
                    {
                        Some(retry) => {
                            startup.run = retry;
                            Ok(Next::stay(phase))
                        }
                        None => Ok(fail(phase.into_startup().ctx, error, None, now, Vec::new())),
                    }
                }
            }
        }
        // No postmaster runs before `starting` succeeds: `spawn_postgres` reports a
        // postmaster that died while starting as its own failure.
        Event::PostmasterExited { .. } => Err(Rejected::new(
            phase,
            Rejection::NoPostmaster { phase: P::NAME },
        )),
        Event::Tick => {
            if !phase.startup().run.due(now) {
                return Ok(Next::stay(phase));
            }
            let id = phase.startup().ctx.next_step_id();
            phase.startup().run.start(id);
            let step = phase.step(id);
            Ok(Next::to(phase, vec![step]))
        }
        Event::Terminate { mode } => Ok(terminate(
            phase.into_startup().ctx,
            None,
            mode,
            ExitReason::Requested,
        )),
        Event::Recover => Err(Rejected::new(
            phase,
            Rejection::NotFailed { phase: P::NAME },
        )),
        Event::Promote { .. } | Event::Drift { .. } => Err(Rejected::new(
            phase,
            Rejection::NotRunning { phase: P::NAME },
        )),
    }
}

fn stale<P: StartupPhase>(phase: P, id: StepId) -> Rejected {
    Rejected::new(phase, Rejection::StaleStep { phase: P::NAME, id })
}
