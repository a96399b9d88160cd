//! `terminating`: whatever ran is cancelled and Postgres is stopped; then `terminated`.

use crate::error::Rejection;
use crate::event::Event;
use crate::step::{ExitReason, ShutdownMode, Step, StepId, StepOutput};
use crate::time::Now;

use super::{refuse_offer, Ctx, Next, PhaseName, Rejected, Terminated, Transition};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terminating {
    pub ctx: Ctx,
    /// The postmaster being stopped, if one ran.
    pub postmaster: Option<u32>,
    pub mode: ShutdownMode,
    /// Why the process exits, once Postgres has stopped.
    pub reason: ExitReason,
    /// The `stop_postgres` step.
    pub in_flight: StepId,
}

impl Terminating {
    fn reject(self, rejection: Rejection) -> Rejected {
        Rejected::new(self, rejection)
    }
}

impl Transition for Terminating {
    fn on_event(self, event: Event, _now: Now) -> Result<Next, Rejected> {
        const PHASE: PhaseName = PhaseName::Terminating;
        match event {
            Event::SpecOffered { offer } => refuse_offer(self, offer),
            Event::SpecAccepted { .. } => Err(self.reject(Rejection::TakesNoSpec { phase: PHASE })),
            Event::StepStarted { id } => {
                if id == self.in_flight {
                    Ok(Next::stay(self))
                } else {
                    Err(self.reject(Rejection::StaleStep { phase: PHASE, id }))
                }
            }
            Event::StepFinished { id, result } => {
                if id != self.in_flight {
                    // The cancelled steps reporting in.
                    return Err(self.reject(Rejection::StaleStep { phase: PHASE, id }));
                }
                // The stop step escalates to SIGKILL on its own; if even that failed, the
                // error is in its `step_finished` record, and the process still exits.
                let lsn = match result {
                    Ok(StepOutput::PostgresStopped { lsn }) => lsn,
                    Ok(
                        StepOutput::PgdataReady
                        | StepOutput::SafekeepersSynced { .. }
                        | StepOutput::BasebackupDone
                        | StepOutput::PostgresStarted { .. }
                        | StepOutput::SpecApplied
                        | StepOutput::SpecFetched { .. }
                        | StepOutput::PostgresAdopted { .. }
                        | StepOutput::NotAdopted
                        | StepOutput::ClusterPrepared
                        | StepOutput::PreparedUsed
                        | StepOutput::PreparedDiscarded,
                    ) => return Err(self.reject(Rejection::UnexpectedOutput { phase: PHASE, id })),
                    Err(_) => None,
                };
                let reason = self.reason;
                let terminated = Terminated {
                    ctx: self.ctx,
                    reason,
                    lsn,
                };
                Ok(Next::to(terminated, vec![Step::Exit { reason }]))
            }
            // Expected: Postgres is being stopped.
            Event::PostmasterExited { .. } => {
                let mut next = self;
                next.postmaster = None;
                Ok(Next::stay(next))
            }
            Event::Tick => Ok(Next::stay(self)),
            // Already on the way out; the caller waits for the same end.
            Event::Terminate { .. } => Ok(Next::stay(self)),
            Event::Recover => Err(self.reject(Rejection::NotFailed { phase: PHASE })),
            Event::Promote { .. } => Err(self.reject(Rejection::NotRunning { phase: PHASE })),
            Event::Drift { .. } => Err(self.reject(Rejection::NotRunning { phase: PHASE })),
        }
    }
}
