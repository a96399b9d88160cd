//! `basebackup`: fill PGDATA (pageserver, upstream base backup, or `initdb`).

use crate::event::Event;
use crate::lsn::Lsn;
use crate::step::{Step, StepId, StepOutput};
use crate::time::Now;

use super::startup::{self, Startup, StartupPhase};
use super::{Next, PhaseName, Rejected, Starting, Transition};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Basebackup {
    pub startup: Startup,
    /// The LSN `sync_safekeepers` found, if any.
    pub lsn: Option<Lsn>,
}

impl StartupPhase for Basebackup {
    const NAME: PhaseName = PhaseName::Basebackup;

    fn startup(&mut self) -> &mut Startup {
        &mut self.startup
    }
    fn into_startup(self) -> Startup {
        self.startup
    }

    fn step(&mut self, id: StepId) -> Step {
        let spec = self.startup.target.clone();
        Step::FetchBasebackup {
            id,
            spec,
            lsn: self.lsn,
        }
    }

    fn succeed(self, output: StepOutput) -> Result<Next, Basebackup> {
        match output {
            StepOutput::BasebackupDone => {
                let (startup, id) = self.startup.advance(PhaseName::Starting);
                let spec = startup.target.clone();
                let step = Step::SpawnPostgres { id, spec };
                Ok(Next::to(Starting { startup }, vec![step]))
            }
            StepOutput::PgdataReady
            | StepOutput::SafekeepersSynced { .. }
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

impl Transition for Basebackup {
    fn on_event(self, event: Event, now: Now) -> Result<Next, Rejected> {
        startup::on_event(self, event, now)
    }
}
