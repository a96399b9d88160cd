//! `starting`: config files written, the postmaster spawned, and waited for until it accepts
//! connections.

use crate::event::Event;
use crate::step::{Step, StepId, StepOutput};
use crate::time::Now;

use super::startup::{self, Startup, StartupPhase};
use super::{Configuring, Next, PhaseName, Rejected, Transition};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Starting {
    pub startup: Startup,
}

impl StartupPhase for Starting {
    const NAME: PhaseName = PhaseName::Starting;

    fn startup(&mut self) -> &mut Startup {
        &mut self.startup
    }
    fn into_startup(self) -> Startup {
        self.startup
    }

    fn step(&mut self, id: StepId) -> Step {
        let spec = self.startup.target.clone();
        Step::SpawnPostgres { id, spec }
    }

    /// Postgres runs: the sidecar may start, and the spec the config files came from is
    /// applied (roles, databases) and confirmed.
    fn succeed(self, output: StepOutput) -> Result<Next, Starting> {
        match output {
            StepOutput::PostgresStarted { pid } => {
                let Startup {
                    mut ctx, target, ..
                } = self.startup;
                let id = ctx.next_step_id();
                let step = Step::ApplySpec {
                    id,
                    spec: target.clone(),
                    first_start: true,
                };
                let configuring = Configuring {
                    ctx,
                    target,
                    postmaster: pid,
                    in_flight: id,
                    first_start: true,
                };
                Ok(Next::to(configuring, vec![Step::StartSidecar, step]))
            }
            StepOutput::PgdataReady
            | StepOutput::SafekeepersSynced { .. }
            | StepOutput::BasebackupDone
            | StepOutput::SpecApplied
            | StepOutput::PostgresStopped { .. }
            | StepOutput::SpecFetched { .. }
            | StepOutput::PostgresAdopted { .. }
            | StepOutput::NotAdopted
            | StepOutput::ClusterPrepared
            | StepOutput::PreparedUsed
            | StepOutput::PreparedDiscarded => Err(self),
        }
    }
}

impl Transition for Starting {
    fn on_event(self, event: Event, now: Now) -> Result<Next, Rejected> {
        startup::on_event(self, event, now)
    }
}
