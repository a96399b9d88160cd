//! `configuring`: the target spec is being applied to the running Postgres.

use crate::error::Rejection;
use crate::event::Event;
use crate::spec_ref::SpecRef;
use crate::step::{ExitReason, Step, StepId, StepOutput};
use crate::time::Now;

use super::{
    fail, postmaster_gone, reconfigure, take_offer, terminate, Ctx, Next, PhaseName, Rejected,
    Running, Transition,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Configuring {
    pub ctx: Ctx,
    /// The spec being applied; a newer one accepted meanwhile waits in `ctx.desired`.
    pub target: SpecRef,
    pub postmaster: u32,
    /// The `apply_spec` (or, after `promote`, `promote_postgres`) step in flight.
    pub in_flight: StepId,
    /// Whether this is the first apply after `starting`.
    pub first_start: bool,
}

impl Configuring {
    fn reject(self, rejection: Rejection) -> Rejected {
        Rejected::new(self, rejection)
    }

    /// The apply succeeded: run, or apply the spec that arrived meanwhile.
    fn applied(mut self) -> Next {
        self.ctx.applied = Some(self.target.clone());
        match self.ctx.desired.clone() {
            Some(desired) if desired != self.target => {
                reconfigure(self.ctx, self.postmaster, desired)
            }
            Some(_) | None => {
                let running = Running {
                    ctx: self.ctx,
                    postmaster: self.postmaster,
                };
                Next::to(running, Vec::new())
            }
        }
    }
}

impl Transition for Configuring {
    fn on_event(mut self, event: Event, now: Now) -> Result<Next, Rejected> {
        const PHASE: PhaseName = PhaseName::Configuring;
        match event {
            Event::SpecOffered { offer } => take_offer(self, offer, now),
            Event::SpecAccepted { spec } => {
                self.ctx.accept(spec);
                Ok(Next::stay(self))
            }
            Event::StepStarted { id } => {
                if id == self.in_flight {
                    Ok(Next::stay(self))
                } else {
                    Err(self.reject(Rejection::StaleStep { phase: PHASE, id }))
                }
            }
            Event::StepFinished { id, result } => {
                if id != self.in_flight {
                    return Err(self.reject(Rejection::StaleStep { phase: PHASE, id }));
                }
                match result {
                    Ok(StepOutput::SpecApplied) => Ok(self.applied()),
                    Ok(
                        StepOutput::PgdataReady
                        | StepOutput::SafekeepersSynced { .. }
                        | StepOutput::BasebackupDone
                        | StepOutput::PostgresStarted { .. }
                        | StepOutput::PostgresStopped { .. }
                        | StepOutput::SpecFetched { .. }
                        | StepOutput::PostgresAdopted { .. }
                        | StepOutput::NotAdopted
                        | StepOutput::ClusterPrepared
                        | StepOutput::PreparedUsed
                        | StepOutput::PreparedDiscarded,
                    ) => Err(self.reject(Rejection::UnexpectedOutput { phase: PHASE, id })),
                    // A failed apply never takes Postgres down: it keeps serving with what
                    // it had, and `failed` waits for a corrected spec or `recover` -- unless a
                    // newer spec already waits: the newest wins.
                    Err(error) => match self.ctx.desired.clone() {
                        Some(desired) if desired != self.target => {
                            Ok(reconfigure(self.ctx, self.postmaster, desired))
                        }
                        Some(_) | None => {
                            Ok(fail(self.ctx, error, Some(self.postmaster), now, vec![]))
                        }
                    },
                }
            }
            Event::PostmasterExited { status, shut_down } => {
                let steps = vec![Step::CancelSteps, Step::StopSidecar];
                Ok(postmaster_gone(
                    self.ctx, PHASE, status, shut_down, now, steps,
                ))
            }
            Event::Tick => Ok(Next::stay(self)),
            Event::Terminate { mode } => Ok(terminate(
                self.ctx,
                Some(self.postmaster),
                mode,
                ExitReason::Requested,
            )),
            Event::Recover => Err(self.reject(Rejection::NotFailed { phase: PHASE })),
            Event::Promote { .. } => Err(self.reject(Rejection::NotRunning { phase: PHASE })),
            Event::Drift { .. } => Err(self.reject(Rejection::NotRunning { phase: PHASE })),
        }
    }
}
