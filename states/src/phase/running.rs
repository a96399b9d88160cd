//! `running`: Postgres serves with the desired spec applied.

use crate::error::Rejection;
use crate::event::Event;
use crate::step::{ExitReason, Step};
use crate::time::Now;

use super::{
    fail, postmaster_exited, reconfigure, take_offer, terminate, Ctx, Next, PhaseName, Rejected,
    Transition,
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
        }
    }
}
