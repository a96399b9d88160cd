//! `empty`: no spec yet. Waits for `POST /spec`, or asks the control plane for one; with
//! `--prepare`, prepares a cluster meanwhile (`prepare_cluster`), which a spec for the
//! embedded default then uses (`use_prepared`).

use serde::{Deserialize, Serialize};

use crate::error::Rejection;
use crate::event::Event;
use crate::spec_ref::SpecRef;
use crate::step::{ExitReason, PreparedStart, Step, StepId, StepOutput};
use crate::time::Now;

use super::startup::Startup;
use super::{
    take_offer_with, terminate, Ctx, Init, Next, PhaseName, Rejected, StepRun, Transition,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Empty {
    pub ctx: Ctx,
    pub fetch: SpecFetch,
    pub prepare: Preparation,
}

/// Where the `--prepare` cluster stands. A worker step runs at a time, so the preparation
/// begins only once no control plane fetch is outstanding (none configured, or it has no spec
/// for us yet).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "prepare", rename_all = "snake_case")]
pub enum Preparation {
    /// No `--prepare`, or a spec was known at boot.
    Off,
    /// Asked for: `prepare_cluster` begins at the next tick with no fetch outstanding.
    Wanted,
    /// `prepare_cluster` runs, or waits to be tried again after a failure.
    Preparing(StepRun),
    /// The staging directory holds a cluster prepared by this run.
    Ready,
    /// Every attempt failed (the journal has each): a spec starts as usual.
    GaveUp,
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
        // A spec the journal already desires comes at once: nothing to prepare for.
        let prepare = if ctx.policy.prepare && ctx.desired.is_none() {
            Preparation::Wanted
        } else {
            Preparation::Off
        };
        if !fetch_spec {
            return Next::stay(Empty {
                ctx,
                fetch: SpecFetch::Off,
                prepare,
            });
        }
        let id = ctx.next_step_id();
        let fetch = SpecFetch::Fetching(StepRun::first(id));
        let empty = Empty {
            ctx,
            fetch,
            prepare,
        };
        Next::to(empty, vec![Step::FetchSpec { id }])
    }

    fn ctx_of(&self) -> &Ctx {
        &self.ctx
    }

    fn fetch_in_flight(&self, id: StepId) -> bool {
        matches!(&self.fetch, SpecFetch::Fetching(run) if run.is_in_flight(id))
    }

    fn prepare_in_flight(&self, id: StepId) -> bool {
        matches!(&self.prepare, Preparation::Preparing(run) if run.is_in_flight(id))
    }

    /// The desired spec: `init`, which first adopts, uses the prepared cluster, or rebuilds
    /// PGDATA. `embedded` says whether the spec's data comes from the embedded default (false
    /// when not known: the journal's spec at boot).
    fn accept(mut self, spec: SpecRef, embedded: bool) -> Next {
        let mut steps = Vec::new();
        if matches!(&self.fetch, SpecFetch::Fetching(run) if run.in_flight.is_some()) {
            steps.push(Step::CancelSteps);
        }
        self.ctx.accept(spec.clone());
        let id = self.ctx.next_step_id();
        // The first spec of a run may find its Postgres still serving.
        let adopting = self.ctx.adoptable.take();
        let prepared = match (&adopting, &self.prepare) {
            (Some(_), _) | (None, Preparation::Off | Preparation::Wanted | Preparation::GaveUp) => {
                None
            }
            (None, Preparation::Ready) => Some(PreparedStart::Ready),
            (None, Preparation::Preparing(run)) => {
                if embedded && run.in_flight.is_some() {
                    Some(PreparedStart::Awaited)
                } else {
                    if run.in_flight.is_some() {
                        steps.push(Step::CancelSteps);
                    }
                    Some(PreparedStart::Cancelled)
                }
            }
        };
        steps.push(match (&adopting, prepared) {
            (Some(applied), _) => Step::AdoptPostgres {
                id,
                spec: applied.clone(),
            },
            (None, Some(preparation)) => Step::UsePrepared {
                id,
                spec: spec.clone(),
                preparation,
            },
            (None, None) => Step::InitPgdata {
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
        let init = Init {
            startup,
            adopting,
            prepared,
        };
        Next::to(init, steps)
    }

    /// A finished `prepare_cluster`: ready, or tried again after a backoff, or given up.
    fn prepared(
        mut self,
        result: Result<StepOutput, crate::error::StepError>,
        now: Now,
        id: StepId,
    ) -> Result<Next, Rejected> {
        match result {
            Ok(StepOutput::ClusterPrepared) => {
                self.prepare = Preparation::Ready;
                Ok(Next::stay(self))
            }
            Ok(
                StepOutput::PgdataReady
                | StepOutput::SafekeepersSynced { .. }
                | StepOutput::BasebackupDone
                | StepOutput::PostgresStarted { .. }
                | StepOutput::SpecApplied
                | StepOutput::PostgresStopped { .. }
                | StepOutput::SpecFetched { .. }
                | StepOutput::PostgresAdopted { .. }
                | StepOutput::NotAdopted
                | StepOutput::PreparedUsed
                | StepOutput::PreparedDiscarded,
            ) => {
                let phase = PhaseName::Empty;
                Err(Rejected::new(
                    self,
                    Rejection::UnexpectedOutput { phase, id },
                ))
            }
            Err(error) => {
                let retry = match &self.prepare {
                    Preparation::Preparing(run) => run.retry_after(error, &self.ctx.policy, now),
                    Preparation::Off
                    | Preparation::Wanted
                    | Preparation::Ready
                    | Preparation::GaveUp => None,
                };
                self.prepare = match retry {
                    Some(run) => Preparation::Preparing(run),
                    None => Preparation::GaveUp,
                };
                Ok(Next::stay(self))
            }
        }
    }

    /// On a tick with no fetch outstanding: begin the preparation, or try it again.
    fn prepare_if_due(mut self, now: Now) -> Next {
        let due = match &self.prepare {
            Preparation::Wanted => true,
            Preparation::Preparing(run) => run.due(now),
            Preparation::Off | Preparation::Ready | Preparation::GaveUp => false,
        };
        if !due {
            return Next::stay(self);
        }
        let id = self.ctx.next_step_id();
        self.prepare = match self.prepare {
            Preparation::Preparing(mut run) => {
                run.start(id);
                Preparation::Preparing(run)
            }
            Preparation::Off | Preparation::Wanted | Preparation::Ready | Preparation::GaveUp => {
                Preparation::Preparing(StepRun::first(id))
            }
        };
        Next::to(self, vec![Step::PrepareCluster { id }])
    }

    fn stale(self, id: StepId) -> Rejected {
        let phase = PhaseName::Empty;
        Rejected::new(self, Rejection::StaleStep { phase, id })
    }
}

impl Transition for Empty {
    fn on_event(mut self, event: Event, now: Now) -> Result<Next, Rejected> {
        match event {
            Event::SpecOffered { offer } => {
                let embedded = offer.embedded;
                take_offer_with(
                    self,
                    PhaseName::Empty,
                    Empty::ctx_of,
                    offer,
                    now,
                    |empty, spec, _| Ok(empty.accept(spec, embedded)),
                )
            }
            Event::SpecAccepted { spec } => Ok(self.accept(spec, false)),
            Event::StepStarted { id } => {
                if self.fetch_in_flight(id) || self.prepare_in_flight(id) {
                    Ok(Next::stay(self))
                } else {
                    Err(self.stale(id))
                }
            }
            Event::StepFinished { id, result } => {
                if self.prepare_in_flight(id) {
                    return self.prepared(result, now, id);
                }
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
                        | StepOutput::NotAdopted
                        | StepOutput::ClusterPrepared
                        | StepOutput::PreparedUsed
                        | StepOutput::PreparedDiscarded,
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
                    SpecFetch::Fetching(_) | SpecFetch::Received => return Ok(Next::stay(self)),
                    SpecFetch::Off | SpecFetch::NoSpecYet => return Ok(self.prepare_if_due(now)),
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
