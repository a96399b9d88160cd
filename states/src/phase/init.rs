//! `init`: the postmaster an earlier run left may be adopted; a cluster prepared in `empty`
//! may be used (then straight to `starting`); else PGDATA is checked (only an absent, empty
//! or own directory is wiped) and recreated.

use crate::event::Event;
use crate::spec_ref::SpecRef;
use crate::step::{PreparedStart, Step, StepId, StepOutput};
use crate::time::Now;

use super::startup::{self, Startup, StartupPhase};
use super::{
    reconfigure, Next, PhaseName, Rejected, Running, Starting, SyncSafekeepers, Transition,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Init {
    pub startup: Startup,
    /// The spec the journal says an earlier run's postmaster was last confirmed to run:
    /// while set, the step is `adopt_postgres`; once refused, a fresh start.
    pub adopting: Option<SpecRef>,
    /// How the spec found the `--prepare` cluster: while set, the step is `use_prepared`;
    /// once discarded, a fresh start.
    pub prepared: Option<PreparedStart>,
}

impl StartupPhase for Init {
    const NAME: PhaseName = PhaseName::Init;

    fn startup(&mut self) -> &mut Startup {
        &mut self.startup
    }
    fn into_startup(self) -> Startup {
        self.startup
    }

    fn step(&mut self, id: StepId) -> Step {
        match (&self.adopting, self.prepared) {
            (Some(spec), _) => Step::AdoptPostgres {
                id,
                spec: spec.clone(),
            },
            (None, Some(preparation)) => Step::UsePrepared {
                id,
                spec: self.startup.target.clone(),
                preparation,
            },
            (None, None) => Step::InitPgdata {
                id,
                spec: self.startup.target.clone(),
            },
        }
    }

    fn succeed(mut self, output: StepOutput) -> Result<Next, Init> {
        match output {
            StepOutput::PostgresAdopted { pid } => {
                let Some(applied) = self.adopting.take() else {
                    return Err(self);
                };
                let mut ctx = self.startup.ctx;
                ctx.applied = Some(applied.clone());
                match ctx.desired.clone() {
                    Some(desired) if desired != applied => {
                        let mut next = reconfigure(ctx, pid, desired);
                        next.steps.insert(0, Step::StartSidecar);
                        Ok(next)
                    }
                    Some(_) | None => Ok(Next::to(
                        Running {
                            ctx,
                            postmaster: pid,
                        },
                        vec![Step::StartSidecar],
                    )),
                }
            }
            StepOutput::NotAdopted if self.adopting.is_some() => {
                let (startup, id) = self.startup.advance(PhaseName::Init);
                let spec = startup.target.clone();
                let init = Init {
                    startup,
                    adopting: None,
                    prepared: None,
                };
                Ok(Next::to(init, vec![Step::InitPgdata { id, spec }]))
            }
            // PGDATA holds a fresh initdb already: no LSN to find, no base backup to take.
            StepOutput::PreparedUsed if self.prepared.is_some() => {
                let (startup, id) = self.startup.advance(PhaseName::Starting);
                let spec = startup.target.clone();
                let step = Step::SpawnPostgres { id, spec };
                Ok(Next::to(Starting { startup }, vec![step]))
            }
            StepOutput::PreparedDiscarded if self.prepared.is_some() => {
                let (startup, id) = self.startup.advance(PhaseName::Init);
                let spec = startup.target.clone();
                let init = Init {
                    startup,
                    adopting: None,
                    prepared: None,
                };
                Ok(Next::to(init, vec![Step::InitPgdata { id, spec }]))
            }
            StepOutput::PgdataReady if self.adopting.is_none() && self.prepared.is_none() => {
                let (startup, id) = self.startup.advance(PhaseName::SyncSafekeepers);
                let spec = startup.target.clone();
                let step = Step::SyncSafekeepers { id, spec };
                Ok(Next::to(SyncSafekeepers { startup }, vec![step]))
            }
            StepOutput::PgdataReady
            | StepOutput::NotAdopted
            | StepOutput::PreparedUsed
            | StepOutput::PreparedDiscarded
            | StepOutput::ClusterPrepared
            | StepOutput::SafekeepersSynced { .. }
            | StepOutput::BasebackupDone
            | StepOutput::PostgresStarted { .. }
            | StepOutput::SpecApplied
            | StepOutput::PostgresStopped { .. }
            | StepOutput::SpecFetched { .. } => Err(self),
        }
    }
}

impl Transition for Init {
    fn on_event(self, event: Event, now: Now) -> Result<Next, Rejected> {
        startup::on_event(self, event, now)
    }
}
