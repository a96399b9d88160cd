//! `terminated`: Postgres is stopped and the process exits. Absorbs every event.

use crate::error::Rejection;
use crate::event::Event;
use crate::lsn::Lsn;
use crate::step::ExitReason;
use crate::time::Now;

use super::{refuse_offer, Ctx, Next, Rejected, Transition};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terminated {
    pub ctx: Ctx,
    pub reason: ExitReason,
    /// The LSN of Postgres's last checkpoint, reported to `POST /terminate`.
    pub lsn: Option<Lsn>,
}

impl Transition for Terminated {
    fn on_event(self, event: Event, _now: Now) -> Result<Next, Rejected> {
        match event {
            Event::SpecOffered { offer } => refuse_offer(self, offer),
            Event::SpecAccepted { .. }
            | Event::StepStarted { .. }
            | Event::StepFinished { .. }
            | Event::PostmasterExited { .. }
            | Event::Tick
            | Event::Terminate { .. }
            | Event::Recover
            | Event::Promote { .. }
            | Event::Drift { .. } => Err(Rejected::new(self, Rejection::Terminated)),
        }
    }
}
