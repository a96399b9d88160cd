//! Steps: the side effects a phase asks for, as data. Only the executor turns them into I/O.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::lsn::Lsn;
use crate::spec_ref::SpecRef;

/// Identifies one requested step, so a late report of a cancelled step is never taken for the
/// report of the step in flight. Unique within one process run (an epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StepId(pub u64);

impl fmt::Display for StepId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// How to stop Postgres: Postgres's own shutdown modes (`fast` = SIGINT, `immediate` = SIGQUIT).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownMode {
    #[default]
    Fast,
    Immediate,
}

impl ShutdownMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownMode::Fast => "fast",
            ShutdownMode::Immediate => "immediate",
        }
    }
}

/// Why the process exits, and so its exit code (CONTRACT.md, "Exit codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// Terminated on request (SIGTERM, `POST /terminate`): 0.
    Requested,
    /// Postgres was stopped from outside in an orderly way (`pg_ctl stop -m fast`): 0 at
    /// once, as Neon's compute_ctl exits with Postgres's own code.
    StoppedFromOutside,
    /// PGDATA was not safe to wipe: 6.
    PgdataUnsafe,
    /// Postgres exited unexpectedly, and `--failed-linger` passed: 10.
    PostmasterExited,
    /// Start-up or configuration failed, and `--failed-linger` passed: 11.
    StepFailed,
}

impl ExitReason {
    pub fn code(self) -> i32 {
        match self {
            ExitReason::Requested | ExitReason::StoppedFromOutside => 0,
            ExitReason::PgdataUnsafe => 6,
            ExitReason::PostmasterExited => 10,
            ExitReason::StepFailed => 11,
        }
    }
}

/// How a spec that may use the prepared cluster (`--prepare`) found the preparation, as the
/// `use_prepared` step says in its `step_started` record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PreparedStart {
    /// The cluster was ready when the spec came.
    Ready,
    /// The spec came while the cluster was being prepared, and it is the embedded default's:
    /// waiting is faster than cancelling, since the rest of a preparation is a part of the
    /// very work (`initdb`) that a fresh start would do again from the beginning.
    Awaited,
    /// The spec came while the cluster was being prepared, and its data comes from elsewhere
    /// (or its storage is not known): the preparation is cancelled, since its cluster would
    /// only be discarded.
    Cancelled,
}

impl PreparedStart {
    pub fn as_str(self) -> &'static str {
        match self {
            PreparedStart::Ready => "ready",
            PreparedStart::Awaited => "waits for the preparation",
            PreparedStart::Cancelled => "preparation cancelled",
        }
    }
}

/// A side effect requested by a phase. Steps with an `id` run one at a time, in order, on the
/// executor's worker thread and report back with `Event::StepFinished`; the others are done at
/// once by the executor when the driver hands them over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Adopt the postmaster an earlier run left serving `spec` on PGDATA, if every check
    /// passes (ours, our binary, our PGDATA, the spec hash it runs); else report why not.
    AdoptPostgres { id: StepId, spec: SpecRef },
    /// Check that PGDATA may be wiped (absent, empty, or ours), stop a postmaster of an earlier
    /// run still alive on it, wipe it and recreate it for the Postgres OS user.
    InitPgdata { id: StepId, spec: SpecRef },
    /// Find the LSN to start from: `postgres --sync-safekeepers`, an upstream's flush LSN, or
    /// nothing (embedded default; the output says it was skipped).
    SyncSafekeepers { id: StepId, spec: SpecRef },
    /// Fill PGDATA: a base backup from the pageserver or an upstream, or `initdb`.
    FetchBasebackup {
        id: StepId,
        spec: SpecRef,
        lsn: Option<Lsn>,
    },
    /// Write the config files from the spec, spawn the postmaster, wait until it accepts
    /// connections.
    SpawnPostgres { id: StepId, spec: SpecRef },
    /// Apply settings (reload, confirmed by the spec-hash setting), roles, databases and delta
    /// operations. The same step serves the first start and live reconfiguration.
    ApplySpec {
        id: StepId,
        spec: SpecRef,
        first_start: bool,
    },
    /// Promote the standby (`pg_promote`, waited for), then apply the spec as `ApplySpec`
    /// does, roles and databases included: the compute is now read-write.
    PromotePostgres {
        id: StepId,
        spec: SpecRef,
        /// Replay must reach this LSN before `pg_promote` (no acknowledged write is lost).
        wal_flush_lsn: Option<Lsn>,
    },
    /// Stop Postgres if it runs and wait for it; report the last checkpoint's LSN.
    StopPostgres { id: StepId, mode: ShutdownMode },
    /// Ask the control plane for a spec.
    FetchSpec { id: StepId },
    /// `--prepare`, in `empty`: `initdb` into the staging directory (checked, claimed and
    /// marked like PGDATA) before any spec is known.
    PrepareCluster { id: StepId },
    /// The first step of a start after a preparation: a spec for the embedded default moves
    /// the prepared cluster into PGDATA (checked like `init_pgdata`); any other spec, or a
    /// cluster this run did not finish preparing, discards it.
    UsePrepared {
        id: StepId,
        spec: SpecRef,
        preparation: PreparedStart,
    },
    /// Cancel the step in flight, if any: kill its child processes, close its connections.
    CancelSteps,
    /// Start the sidecar (`--vm-monitor`), if one is configured.
    StartSidecar,
    /// Stop the sidecar, if it runs.
    StopSidecar,
    /// Leave the process with this reason's exit code, once everything before is durable.
    Exit { reason: ExitReason },
}

impl Step {
    /// The id of a worker step, `None` for the steps done at once.
    pub fn id(&self) -> Option<StepId> {
        match self {
            Step::AdoptPostgres { id, .. }
            | Step::InitPgdata { id, .. }
            | Step::SyncSafekeepers { id, .. }
            | Step::FetchBasebackup { id, .. }
            | Step::SpawnPostgres { id, .. }
            | Step::ApplySpec { id, .. }
            | Step::PromotePostgres { id, .. }
            | Step::StopPostgres { id, .. }
            | Step::FetchSpec { id }
            | Step::PrepareCluster { id }
            | Step::UsePrepared { id, .. } => Some(*id),
            Step::CancelSteps | Step::StartSidecar | Step::StopSidecar | Step::Exit { .. } => None,
        }
    }

    pub fn name(&self) -> StepName {
        match self {
            Step::AdoptPostgres { .. } => StepName::AdoptPostgres,
            Step::InitPgdata { .. } => StepName::InitPgdata,
            Step::SyncSafekeepers { .. } => StepName::SyncSafekeepers,
            Step::FetchBasebackup { .. } => StepName::FetchBasebackup,
            Step::SpawnPostgres { .. } => StepName::SpawnPostgres,
            Step::ApplySpec { .. } => StepName::ApplySpec,
            Step::PromotePostgres { .. } => StepName::PromotePostgres,
            Step::StopPostgres { .. } => StepName::StopPostgres,
            Step::FetchSpec { .. } => StepName::FetchSpec,
            Step::PrepareCluster { .. } => StepName::PrepareCluster,
            Step::UsePrepared { .. } => StepName::UsePrepared,
            Step::CancelSteps => StepName::CancelSteps,
            Step::StartSidecar => StepName::StartSidecar,
            Step::StopSidecar => StepName::StopSidecar,
            Step::Exit { .. } => StepName::Exit,
        }
    }

    /// The spec this step works with, if any.
    pub fn spec(&self) -> Option<&SpecRef> {
        match self {
            Step::AdoptPostgres { spec, .. }
            | Step::InitPgdata { spec, .. }
            | Step::SyncSafekeepers { spec, .. }
            | Step::FetchBasebackup { spec, .. }
            | Step::SpawnPostgres { spec, .. }
            | Step::ApplySpec { spec, .. }
            | Step::PromotePostgres { spec, .. }
            | Step::UsePrepared { spec, .. } => Some(spec),
            Step::StopPostgres { .. }
            | Step::FetchSpec { .. }
            | Step::PrepareCluster { .. }
            | Step::CancelSteps
            | Step::StartSidecar
            | Step::StopSidecar
            | Step::Exit { .. } => None,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(id) = self.id() {
            write!(f, "({id}")?;
            if let Some(spec) = self.spec() {
                write!(f, ", {spec}")?;
            }
            match self {
                Step::FetchBasebackup { lsn: Some(lsn), .. } => write!(f, ", lsn {lsn}")?,
                Step::ApplySpec {
                    first_start: true, ..
                } => write!(f, ", first start")?,
                Step::StopPostgres { mode, .. } => write!(f, ", {}", mode.as_str())?,
                Step::UsePrepared { preparation, .. } => write!(f, ", {}", preparation.as_str())?,
                _ => {}
            }
            write!(f, ")")?;
        } else if let Step::Exit { reason } = self {
            write!(f, "({})", reason.code())?;
        }
        Ok(())
    }
}

/// The name of a step, for errors, journal records and the transition table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepName {
    AdoptPostgres,
    InitPgdata,
    SyncSafekeepers,
    FetchBasebackup,
    SpawnPostgres,
    ApplySpec,
    PromotePostgres,
    StopPostgres,
    FetchSpec,
    PrepareCluster,
    UsePrepared,
    CancelSteps,
    StartSidecar,
    StopSidecar,
    Exit,
    /// Not a step that is requested: the watch on a running postmaster, named in the error of
    /// a postmaster that exited on its own.
    Monitor,
    /// Not a step that is requested: SIGUSR2's re-execution of compute_ctl's own binary,
    /// journaled before it and, if the exec fails, after it.
    Reexec,
}

impl StepName {
    pub fn as_str(self) -> &'static str {
        match self {
            StepName::AdoptPostgres => "adopt_postgres",
            StepName::InitPgdata => "init_pgdata",
            StepName::SyncSafekeepers => "sync_safekeepers",
            StepName::FetchBasebackup => "fetch_basebackup",
            StepName::SpawnPostgres => "spawn_postgres",
            StepName::ApplySpec => "apply_spec",
            StepName::PromotePostgres => "promote_postgres",
            StepName::StopPostgres => "stop_postgres",
            StepName::FetchSpec => "fetch_spec",
            StepName::PrepareCluster => "prepare_cluster",
            StepName::UsePrepared => "use_prepared",
            StepName::CancelSteps => "cancel_steps",
            StepName::StartSidecar => "start_sidecar",
            StepName::StopSidecar => "stop_sidecar",
            StepName::Exit => "exit",
            StepName::Monitor => "monitor",
            StepName::Reexec => "reexec",
        }
    }

    /// Whether the step destroys or rebuilds data, and so must be redone from scratch when a
    /// crash interrupted it (its `step_started` record has no `step_finished`).
    pub fn is_destructive(self) -> bool {
        matches!(
            self,
            StepName::InitPgdata
                | StepName::FetchBasebackup
                | StepName::SpawnPostgres
                | StepName::PrepareCluster
                | StepName::UsePrepared
        )
    }
}

impl fmt::Display for StepName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a successful worker step reports back; each phase accepts only its own step's shape.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum StepOutput {
    /// PGDATA is empty and owned by the Postgres OS user.
    PgdataReady,
    /// The LSN to start from; `None` when the storage has no safekeepers (skipped).
    SafekeepersSynced { lsn: Option<Lsn> },
    /// PGDATA holds a data directory.
    BasebackupDone,
    /// The postmaster runs and accepts connections.
    PostgresStarted { pid: u32 },
    /// The spec is applied and confirmed.
    SpecApplied,
    /// Postgres is not running (any more); the LSN of its last checkpoint, if known.
    PostgresStopped { lsn: Option<Lsn> },
    /// The control plane answered; `found: false` means it has no spec for us yet.
    SpecFetched { found: bool },
    /// The postmaster of an earlier run serves the spec: it is this run's now.
    PostgresAdopted { pid: u32 },
    /// A check refused adoption (the step's detail says which): start fresh.
    NotAdopted,
    /// The staging directory holds a prepared cluster (`initdb` done, marked ours).
    ClusterPrepared,
    /// PGDATA holds the prepared cluster: the start goes on to `starting`.
    PreparedUsed,
    /// The prepared cluster was discarded (the step's detail says why): start as usual.
    PreparedDiscarded,
}
