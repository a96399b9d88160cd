//! `running`: Postgres serves with the desired spec applied.

use crate::error::Rejection;
use crate::event::Event;
use crate::step::{ExitReason, Step};
use crate::time::Now;

use super::{
    fail, postmaster_exited, reconfigure, take_offer, terminate, Configuring, Ctx, Next, PhaseName,
    Rejected, Transition,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    pub ctx: Ctx,
    pub postmaster: u32,
}

impl Running {
    fn reject(self, rejection: Rejection) -> Rejected {
        Rejected::new(self, rejection)
    }
}

impl Transition for Running {
    fn on_event(mut self, event: Event, now: Now) -> Result<Next, Rejected> {
        const PHASE: PhaseName = PhaseName::Running;
        match event {
            Event::SpecOffered { offer } => take_offer(self, offer, now),
            Event::SpecAccepted { spec } => {
                self.ctx.accept(spec.clone());
                Ok(reconfigure(self.ctx, self.postmaster, spec))
            }
            Event::StepStarted { id } | Event::StepFinished { id, .. } => {
                Err(self.reject(Rejection::StaleStep { phase: PHASE, id }))
            }
            Event::PostmasterExited { status } => {
                let error = postmaster_exited(PHASE, status);
                Ok(fail(self.ctx, error, None, now, vec![Step::StopSidecar]))
            }
            Event::Tick => Ok(Next::stay(self)),
            Event::Terminate { mode } => Ok(terminate(
                self.ctx,
                Some(self.postmaster),
                mode,
                ExitReason::Requested,
            )),
            Event::Recover => Err(self.reject(Rejection::NotFailed { phase: PHASE })),
            // The applied spec again, as for a primary, after `pg_promote`: `configuring`
            // until it is done, and `failed` (Postgres still serving) if it fails.
            Event::Promote { wal_flush_lsn } => {
                // Until the spec is applied as for a primary, it is not applied: a failed
                // promotion leaves it to `recover` (or a new spec) to apply again.
                let Some(target) = self.ctx.applied.take() else {
                    return Err(self.reject(Rejection::NotRunning { phase: PHASE }));
                };
                let id = self.ctx.next_step_id();
                let configuring = Configuring {
                    ctx: self.ctx,
                    target: target.clone(),
                    postmaster: self.postmaster,
                    in_flight: id,
                    first_start: false,
                };
                Ok(Next::to(
                    configuring,
                    vec![Step::PromotePostgres {
                        id,
                        spec: target,
                        wal_flush_lsn,
                    }],
                ))
            }
        }
    }
}
