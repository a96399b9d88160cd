//! `empty`: no spec yet. Waits for `POST /spec`, or asks the control plane for one.

use serde::{Deserialize, Serialize};

use crate::error::Rejection;
use crate::event::Event;
use crate::step::{ExitReason, Step, StepId, StepOutput};
use crate::time::Now;

use super::startup::Startup;
use super::{take_offer, terminate, Ctx, Init, Next, PhaseName, Rejected, StepRun, Transition};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Empty {
    pub ctx: Ctx,
    pub fetch: SpecFetch,
}

/// Where asking the control plane for a spec stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fetch", rename_all = "snake_case")]
pub enum SpecFetch {
    /// No control plane is configured: only `POST /spec` brings a spec.
    Off,
    /// Asking, or waiting to ask again: the control plane was unreachable. It is asked until
    /// it answers, with capped backoff, since a compute without a spec has nothing else to do.
    Fetching(StepRun),
    /// The control plane has no spec for us (`status: empty`): wait for `POST /spec`.
    NoSpecYet,
    /// The control plane gave a spec; the driver accepts it and reports `SpecAccepted`.
    Received,
}

impl Empty {
    pub(crate) fn boot(mut ctx: Ctx, fetch_spec: bool) -> Next {
        if !fetch_spec {
            return Next::stay(Empty {
                ctx,
                fetch: SpecFetch::Off,
            });
        }
        let id = ctx.next_step_id();
        let fetch = SpecFetch::Fetching(StepRun::first(id));
        Next::to(Empty { ctx, fetch }, vec![Step::FetchSpec { id }])
    }

    fn fetch_in_flight(&self, id: StepId) -> bool {
        matches!(&self.fetch, SpecFetch::Fetching(run) if run.is_in_flight(id))
    }

    fn stale(self, id: StepId) -> Rejected {
        let phase = PhaseName::Empty;
        Rejected::new(self, Rejection::StaleStep { phase, id })
    }
}

impl Transition for Empty {
    fn on_event(mut self, event: Event, now: Now) -> Result<Next, Rejected> {
        match event {
            Event::SpecOffered { offer } => take_offer(self, offer, now),
            Event::SpecAccepted { spec } => {
                let mut steps = Vec::new();
                if matches!(&self.fetch, SpecFetch::Fetching(run) if run.in_flight.is_some()) {
                    steps.push(Step::CancelSteps);
                }
                self.ctx.accept(spec.clone());
                let id = self.ctx.next_step_id();
                // The first spec of a run may find its Postgres still serving.
                let adopting = self.ctx.adoptable.take();
                steps.push(match &adopting {
                    Some(applied) => Step::AdoptPostgres {
                        id,
                        spec: applied.clone(),
                    },
                    None => Step::InitPgdata {
                        id,
                        spec: spec.clone(),
                    },
                });
                let run = self.ctx.first_run(PhaseName::Init, id, spec.generation);
                let startup = Startup {
                    ctx: self.ctx,
                    target: spec,
                    run,
                };
                Ok(Next::to(Init { startup, adopting }, steps))
            }
            Event::StepStarted { id } => {
                if self.fetch_in_flight(id) {
                    Ok(Next::stay(self))
                } else {
                    Err(self.stale(id))
                }
            }
            Event::StepFinished { id, result } => {
                if !self.fetch_in_flight(id) {
                    return Err(self.stale(id));
                }
                match result {
                    Ok(StepOutput::SpecFetched { found }) => {
                        self.fetch = if found {
                            SpecFetch::Received
                        } else {
                            SpecFetch::NoSpecYet
                        };
                        Ok(Next::stay(self))
                    }
                    Ok(
                        StepOutput::PgdataReady
                        | StepOutput::SafekeepersSynced { .. }
                        | StepOutput::BasebackupDone
                        | StepOutput::PostgresStarted { .. }
                        | StepOutput::SpecApplied
                        | StepOutput::PostgresStopped { .. }
                        | StepOutput::PostgresAdopted { .. }
                        | StepOutput::NotAdopted,
                    ) => {
                        let phase = PhaseName::Empty;
                        Err(Rejected::new(
                            self,
                            Rejection::UnexpectedOutput { phase, id },
                        ))
                    }
                    Err(error) => {
                        if let SpecFetch::Fetching(run) = &mut self.fetch {
                            let policy = &self.ctx.policy;
                            let at = now.mono_ms.saturating_add(policy.backoff_ms(run.attempt));
                            *run = StepRun {
                                attempt: run.attempt.saturating_add(1),
                                in_flight: None,
                                retry_at_ms: Some(at),
                                last_error: Some(error),
                            };
                        }
                        Ok(Next::stay(self))
                    }
                }
            }
            Event::PostmasterExited { .. } => {
                let phase = PhaseName::Empty;
                Err(Rejected::new(self, Rejection::NoPostmaster { phase }))
            }
            Event::Tick => {
                let id = match &mut self.fetch {
                    SpecFetch::Fetching(run) if run.due(now) => {
                        let id = self.ctx.next_step_id();
                        run.start(id);
                        id
                    }
                    SpecFetch::Fetching(_)
                    | SpecFetch::Off
                    | SpecFetch::NoSpecYet
                    | SpecFetch::Received => return Ok(Next::stay(self)),
                };
                Ok(Next::to(self, vec![Step::FetchSpec { id }]))
            }
            Event::Terminate { mode } => Ok(terminate(self.ctx, None, mode, ExitReason::Requested)),
            Event::Recover => {
                let phase = PhaseName::Empty;
                Err(Rejected::new(self, Rejection::NotFailed { phase }))
            }
            Event::Promote { .. } | Event::Drift { .. } => {
                let phase = PhaseName::Empty;
                Err(Rejected::new(self, Rejection::NotRunning { phase }))
            }
        }
    }
}
