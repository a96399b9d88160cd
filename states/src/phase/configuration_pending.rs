//! `configuration_pending`: a newer spec is durably accepted and its apply is handed to the
//! executor; the phase becomes `configuring` once the step has started.

use crate::error::Rejection;
use crate::event::Event;
use crate::spec_ref::SpecRef;
use crate::step::{ExitReason, Step, StepId};
use crate::time::Now;

use super::{
    postmaster_gone, take_offer, terminate, Configuring, Ctx, Next, PhaseName, Rejected, Transition,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigurationPending {
    pub ctx: Ctx,
    pub postmaster: u32,
    /// The spec the pending `apply_spec` step applies.
    pub target: SpecRef,
    /// The pending `apply_spec` step.
    pub in_flight: StepId,
    /// Whether it applies the applied spec again (a drift repair, `POST /recover` in
    /// `running`) rather than a newer one.
    pub repair: bool,
}

impl ConfigurationPending {
    fn reject(self, rejection: Rejection) -> Rejected {
        Rejected::new(self, rejection)
    }
}

impl Transition for ConfigurationPending {
    fn on_event(mut self, event: Event, now: Now) -> Result<Next, Rejected> {
        const PHASE: PhaseName = PhaseName::ConfigurationPending;
        match event {
            // Waits behind the pending apply; `configuring` picks it up when that ends.
            Event::SpecOffered { offer } => take_offer(self, offer, now),
            Event::SpecAccepted { spec } => {
                self.ctx.accept(spec);
                Ok(Next::stay(self))
            }
            Event::StepStarted { id } => {
                if id != self.in_flight {
                    return Err(self.reject(Rejection::StaleStep { phase: PHASE, id }));
                }
                let configuring = Configuring {
                    ctx: self.ctx,
                    target: self.target,
                    postmaster: self.postmaster,
                    in_flight: id,
                    first_start: false,
                };
                Ok(Next::to(configuring, Vec::new()))
            }
            // The driver reports a step as started when it hands it over, before the worker
            // can finish it: a finish here is out of order.
            Event::StepFinished { id, .. } => {
                Err(self.reject(Rejection::StaleStep { phase: PHASE, id }))
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
