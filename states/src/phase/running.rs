//! `running`: Postgres serves with the desired spec applied. The drift check's results come
//! here: with `--drift repair` a drift is repaired by applying the desired spec again, at
//! most once per interval, and a drift that a repair did not remove is only reported.

use crate::error::Rejection;
use crate::event::Event;
use crate::step::{ExitReason, Step};
use crate::time::Now;

use super::{
    postmaster_gone, reconfigure, repair, take_offer, terminate, Configuring, Ctx, DriftVerdict,
    Next, PhaseName, Rejected, Transition,
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

    /// Applies the desired spec again (`configuration_pending`, then `configuring`).
    fn repair(mut self, now: Now) -> Result<Next, Rejected> {
        let Some(desired) = self.ctx.desired.clone() else {
            // Unreachable by the invariants (running has a desired spec); a refusal, not a
            // panic.
            let phase = PhaseName::Running;
            return Err(Rejected::new(self, Rejection::NotRunning { phase }));
        };
        self.ctx.drift.last_repair_ms = Some(now.mono_ms);
        Ok(repair(self.ctx, self.postmaster, desired))
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
            Event::PostmasterExited { status, shut_down } => Ok(postmaster_gone(
                self.ctx,
                PHASE,
                status,
                shut_down,
                now,
                vec![Step::StopSidecar],
            )),
            Event::Tick => Ok(Next::stay(self)),
            Event::Terminate { mode } => Ok(terminate(
                self.ctx,
                Some(self.postmaster),
                mode,
                ExitReason::Requested,
            )),
            // On demand: the desired spec applied again, once.
            Event::Recover => self.repair(now),
            Event::Drift { found } => match self.ctx.drift_verdict(found, now) {
                DriftVerdict::Clear => {
                    // The time of the last repair stays: at most one per interval.
                    self.ctx.drift.repaired = None;
                    self.ctx.drift.unrepaired = None;
                    Ok(Next::stay(self))
                }
                DriftVerdict::Report | DriftVerdict::StillNotRemoved => Ok(Next::stay(self)),
                DriftVerdict::NotRemoved => {
                    self.ctx.drift.unrepaired = found;
                    Ok(Next::stay(self))
                }
                // A drift a repair left stays known while it is part of what is seen.
                DriftVerdict::Repair => {
                    self.ctx.drift.repaired = found;
                    self.repair(now)
                }
            },
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
