//! `init`: PGDATA is checked (only an absent, empty or own directory is wiped) and recreated.

use crate::event::Event;
use crate::step::{Step, StepId, StepOutput};
use crate::time::Now;

use super::startup::{self, Startup, StartupPhase};
use super::{Next, PhaseName, Rejected, SyncSafekeepers, Transition};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Init {
    pub startup: Startup,
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
        let spec = self.startup.target.clone();
        Step::InitPgdata { id, spec }
    }

    fn succeed(self, output: StepOutput) -> Result<Next, Init> {
        match output {
            StepOutput::PgdataReady => {
                let (startup, id) = self.startup.advance();
                let spec = startup.target.clone();
                let step = Step::SyncSafekeepers { id, spec };
                Ok(Next::to(SyncSafekeepers { startup }, vec![step]))
            }
            StepOutput::SafekeepersSynced { .. }
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
