//! `sync_safekeepers`: find the LSN to start from (safekeepers, an upstream, or skipped).

use crate::event::Event;
use crate::step::{Step, StepId, StepOutput};
use crate::time::Now;

use super::startup::{self, Startup, StartupPhase};
use super::{Basebackup, Next, PhaseName, Rejected, Transition};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncSafekeepers {
    pub startup: Startup,
}

impl StartupPhase for SyncSafekeepers {
    const NAME: PhaseName = PhaseName::SyncSafekeepers;

    fn startup(&mut self) -> &mut Startup {
        &mut self.startup
    }
    fn into_startup(self) -> Startup {
        self.startup
    }

    fn step(&mut self, id: StepId) -> Step {
        let spec = self.startup.target.clone();
        Step::SyncSafekeepers { id, spec }
    }

    fn succeed(self, output: StepOutput) -> Result<Next, SyncSafekeepers> {
        match output {
            StepOutput::SafekeepersSynced { lsn } => {
                let (startup, id) = self.startup.advance(PhaseName::Basebackup);
                let spec = startup.target.clone();
                let step = Step::FetchBasebackup { id, spec, lsn };
                Ok(Next::to(Basebackup { startup, lsn }, vec![step]))
            }
            StepOutput::PgdataReady
            | StepOutput::BasebackupDone
            | StepOutput::PostgresStarted { .. }
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

impl Transition for SyncSafekeepers {
    fn on_event(self, event: Event, now: Now) -> Result<Next, Rejected> {
        startup::on_event(self, event, now)
    }
}
