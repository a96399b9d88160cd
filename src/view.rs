//! What the driver publishes after every input: the state view that `GET /state` and the other
//! read-only endpoints serve without asking the driver.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use states::{PhaseName, StepError};

use crate::clock::Clock;
use crate::postgres::settings::PendingRestart;
use crate::sidecar::SidecarView;
use crate::step_env::Progress;
use crate::sync::{lock, Bell};

/// Milliseconds each start-up phase took in this process run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StartupTimes {
    pub sync_safekeepers_ms: u64,
    pub basebackup_ms: u64,
    pub start_postgres_ms: u64,
    pub config_ms: u64,
    pub total_ms: u64,
}

/// `GET /state` (CONTRACT.md, "State view").
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StateView {
    pub phase: PhaseName,
    pub phase_since: String,
    pub epoch: u64,
    pub seq: u64,
    pub desired_generation: Option<u64>,
    pub applied_generation: Option<u64>,
    pub spec_hash: Option<String>,
    pub postmaster_pid: Option<u32>,
    pub last_active: Option<String>,
    pub attempt: u32,
    pub error: Option<StepError>,
    pub pending_restart: Vec<PendingRestart>,
    pub startup: StartupTimes,
    /// The long step in flight and how far it got (base backups).
    pub progress: Option<Progress>,
    /// Which storage the desired spec selects (`embedded`, `upstream`, `neon`).
    pub storage: Option<String>,
    /// `--prepare`: true once a cluster is ready in `empty`, false while it is prepared (and
    /// in every other phase).
    pub prepared: bool,
    /// The `--vm-monitor` sidecar.
    pub sidecar: Option<SidecarView>,
    /// When compute_ctl started (RFC 3339), for Neon's `/status`.
    pub start_time: String,
    /// What the last drift check found differing from the applied spec (CONTRACT.md,
    /// "Drift"); empty when nothing, or before the first check.
    pub drift: Vec<crate::postgres::drift::Difference>,
    /// `repairing` while `--drift repair` applies the spec again for the drift shown,
    /// `not_removed` when a repair left it; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift_repair: Option<String>,
    /// How long the last drift check took, microseconds.
    #[serde(skip)]
    pub drift_check_us: Option<u64>,
    /// Drift checks reported in this process run.
    #[serde(skip)]
    pub drift_checks: u64,
    /// Neon's tenant and timeline ids, for `/status`.
    #[serde(skip)]
    pub tenant: Option<String>,
    #[serde(skip)]
    pub timeline: Option<String>,
    /// How the compute is being terminated, for `/status` (`termination_pending_fast`).
    #[serde(skip)]
    pub terminate_mode: Option<states::ShutdownMode>,
}

impl StateView {
    /// The view before the driver runs: `empty`, nothing desired yet.
    pub fn starting(epoch: u64, seq: u64, start_time: &str) -> StateView {
        StateView {
            phase: PhaseName::Empty,
            phase_since: start_time.to_string(),
            epoch,
            seq,
            desired_generation: None,
            applied_generation: None,
            spec_hash: None,
            postmaster_pid: None,
            last_active: None,
            attempt: 1,
            error: None,
            pending_restart: Vec::new(),
            startup: StartupTimes::default(),
            progress: None,
            storage: None,
            prepared: false,
            sidecar: None,
            start_time: start_time.to_string(),
            drift: Vec::new(),
            drift_repair: None,
            drift_check_us: None,
            drift_checks: 0,
            tenant: None,
            timeline: None,
            terminate_mode: None,
        }
    }

    /// Ready: running with the desired spec applied (`GET /readyz`).
    pub fn ready(&self) -> bool {
        self.phase == PhaseName::Running
            && self.applied_generation.is_some()
            && self.applied_generation == self.desired_generation
    }

    /// Neon's status name for the phase (`GET /status`).
    pub fn neon_status(&self) -> &'static str {
        match self.phase {
            PhaseName::Empty => "empty",
            PhaseName::Init
            | PhaseName::SyncSafekeepers
            | PhaseName::Basebackup
            | PhaseName::Starting => "init",
            PhaseName::Configuring if self.applied_generation.is_none() => "init",
            PhaseName::Configuring => "configuration",
            PhaseName::ConfigurationPending => "configuration_pending",
            PhaseName::Running => "running",
            PhaseName::Failed => "failed",
            PhaseName::Terminating => match self.terminate_mode {
                Some(states::ShutdownMode::Immediate) => "termination_pending_immediate",
                _ => "termination_pending_fast",
            },
            PhaseName::Terminated => "terminated",
        }
    }
}

/// The published view, shared by the driver (writer) and the HTTP threads (readers).
#[derive(Debug)]
pub struct Published {
    view: Mutex<Arc<StateView>>,
    /// Rung on every publish and every answer the driver sends: what parked requests
    /// (`GET /journal?wait=`, `/configure`, `/terminate`) sleep on.
    changed: Bell,
    /// When the driver loop last ran (monotonic ms), for `GET /healthz`.
    loop_ran_ms: AtomicU64,
    clock: Clock,
    monitor_interval: Duration,
}

impl Published {
    pub fn new(view: StateView, clock: Clock, monitor_interval: Duration) -> Arc<Published> {
        Arc::new(Published {
            view: Mutex::new(Arc::new(view)),
            changed: Bell::default(),
            loop_ran_ms: AtomicU64::new(clock.mono_ms()),
            clock,
            monitor_interval,
        })
    }

    pub fn view(&self) -> Arc<StateView> {
        lock(&self.view).clone()
    }

    /// Replaces the view and rings the bell (journal long-polls look at the new seq).
    pub fn publish(&self, view: StateView) {
        *lock(&self.view) = Arc::new(view);
        self.changed.ring();
    }

    /// The driver sent an answer to a request: rings the bell, so that whoever parked the
    /// request looks at its reply channel.
    pub fn answered(&self) {
        self.changed.ring();
    }

    /// What parked requests sleep on: rung by `publish` and `answered` (and by whoever parks
    /// a new request).
    pub fn changes(&self) -> &Bell {
        &self.changed
    }

    /// The driver stamps this on every loop iteration.
    pub fn loop_ran(&self) {
        self.loop_ran_ms
            .store(self.clock.mono_ms(), Ordering::Relaxed);
    }

    /// Live: the driver loop ran within three monitor intervals (Patroni's lesson: liveness is
    /// the loop's age, not Postgres's health).
    pub fn live(&self) -> bool {
        let age = self
            .clock
            .mono_ms()
            .saturating_sub(self.loop_ran_ms.load(Ordering::Relaxed));
        u128::from(age) <= 3 * self.monitor_interval.as_millis()
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }
}
