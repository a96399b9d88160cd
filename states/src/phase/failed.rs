//! `failed`: a step failed or Postgres exited. Keeps serving (and Postgres, if it still runs)
//! for `--failed-linger`, waiting for a new spec or `recover`; then exits.

use crate::error::{ErrorKind, Rejection, StepError};
use crate::event::{stopped_from_outside, Event};
use crate::step::{ExitReason, ShutdownMode, Step};
use crate::time::Now;

use super::{
    postmaster_exited, reconfigure, repair, start_over, take_offer, terminate, Ctx, Next,
    PhaseName, Rejected, Transition,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failed {
    pub ctx: Ctx,
    pub error: StepError,
    /// The Postgres that still serves (a failed reconfiguration), if any.
    pub postmaster: Option<u32>,
    /// When the compute failed (monotonic).
    pub since_ms: u64,
}

impl Failed {
    /// When the linger ends and the process exits.
    pub fn linger_until_ms(&self) -> u64 {
        self.since_ms
            .saturating_add(self.ctx.policy.failed_linger_ms)
    }

    /// The exit code this failure ends with.
    pub fn exit_reason(&self) -> ExitReason {
        match self.error.kind {
            ErrorKind::PgdataUnsafe => ExitReason::PgdataUnsafe,
            ErrorKind::PostmasterExited => ExitReason::PostmasterExited,
            ErrorKind::Io
            | ErrorKind::Timeout
            | ErrorKind::Postgres
            | ErrorKind::ConfigRefused
            | ErrorKind::Storage
            | ErrorKind::ControlPlane
            | ErrorKind::Cancelled
            | ErrorKind::Internal => ExitReason::StepFailed,
        }
    }

    /// Apply the desired spec again: on the Postgres that serves, else from the start.
    fn retry(self) -> Result<Next, Rejected> {
        let Some(desired) = self.ctx.desired.clone() else {
            // Unreachable by the invariants (nothing fails before a spec is accepted); kept
            // as a refusal rather than a panic.
            let phase = PhaseName::Failed;
            return Err(Rejected::new(self, Rejection::NotFailed { phase }));
        };
        let again = self.ctx.applied.as_ref() == Some(&desired);
        Ok(match self.postmaster {
            // A failed repair: the applied spec again.
            Some(pid) if again => repair(self.ctx, pid, desired),
            Some(pid) => reconfigure(self.ctx, pid, desired),
            None => start_over(self.ctx, desired),
        })
    }
}

impl Transition for Failed {
    fn on_event(mut self, event: Event, now: Now) -> Result<Next, Rejected> {
        const PHASE: PhaseName = PhaseName::Failed;
        match event {
            Event::SpecOffered { offer } => take_offer(self, offer, now),
            Event::SpecAccepted { spec } => {
                self.ctx.accept(spec);
                self.retry()
            }
            Event::StepStarted { id } | Event::StepFinished { id, .. } => Err(Rejected::new(
                self,
                Rejection::StaleStep { phase: PHASE, id },
            )),
            // Postgres survived the failure and has now exited too: that is what the exit
            // code reports. The first error stays in the journal.
            Event::PostmasterExited { status, shut_down } => {
                if self.postmaster.is_none() {
                    return Err(Rejected::new(
                        self,
                        Rejection::NoPostmaster { phase: PHASE },
                    ));
                }
                // Stopped from outside in an orderly way: the compute is being taken down on
                // purpose, as from any other phase that serves (exit 0 at once).
                if stopped_from_outside(status, shut_down) {
                    return Ok(terminate(
                        self.ctx,
                        None,
                        ShutdownMode::Fast,
                        ExitReason::StoppedFromOutside,
                    ));
                }
                self.error = postmaster_exited(PHASE, status);
                self.postmaster = None;
                Ok(Next::to(self, vec![Step::StopSidecar]))
            }
            Event::Tick => {
                // Postgres still serves (a failed reconfiguration): no linger, no exit.
                if self.postmaster.is_some() || now.mono_ms < self.linger_until_ms() {
                    return Ok(Next::stay(self));
                }
                let reason = self.exit_reason();
                Ok(terminate(
                    self.ctx,
                    self.postmaster,
                    ShutdownMode::Fast,
                    reason,
                ))
            }
            Event::Terminate { mode } => Ok(terminate(
                self.ctx,
                self.postmaster,
                mode,
                ExitReason::Requested,
            )),
            Event::Recover => self.retry(),
            Event::Promote { .. } => Err(Rejected::new(
                self,
                Rejection::NotRunning {
                    phase: PhaseName::Failed,
                },
            )),
            Event::Drift { .. } => Err(Rejected::new(self, Rejection::NotRunning { phase: PHASE })),
        }
    }
}
