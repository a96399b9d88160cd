//! What the driver asks of the world besides the journal: effects as data (`Effect`), and the
//! one trait that performs them (`World`). The real world is the executor, the activity
//! monitor and systemd; a test's world records what it was asked.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use states::{PhaseName, ShutdownMode, Step};

use crate::auth::Auth;
use crate::executor::Executor;
use crate::postgres::monitor::{DriftWatch, Monitor, Watch};
use crate::spec::ParsedSpec;
use crate::view::StateView;

/// The drift check the monitor is to run: against the applied spec, named by `id`.
#[derive(Clone, Debug)]
pub struct DriftTarget {
    pub id: u64,
    pub spec: Arc<ParsedSpec>,
    pub interval: Duration,
}

/// One thing the driver wants done, decided before it is done.
#[derive(Clone, Debug)]
pub enum Effect {
    /// Hand a worker step to the executor; its `step_started` record is durable.
    Submit {
        step: Step,
        spec: Option<Arc<ParsedSpec>>,
        /// The phase that asked for it.
        phase: PhaseName,
    },
    CancelSteps,
    StartSidecar,
    StopSidecar,
    /// Watch the Postgres on this port for activity, or none; and check it for drift from
    /// `drift`'s spec (only in `running`).
    WatchActivity {
        port: Option<u16>,
        drift: Option<DriftTarget>,
    },
    /// The published view changed: systemd's `STATUS=` (and `READY=1`, `STOPPING=1` as the
    /// phase says), the log context.
    Published {
        view: Arc<StateView>,
    },
}

impl Effect {
    /// A short name, for tests and logs.
    pub fn label(&self) -> String {
        match self {
            Effect::Submit { step, .. } => format!("submit {step}"),
            Effect::CancelSteps => "cancel_steps".into(),
            Effect::StartSidecar => "start_sidecar".into(),
            Effect::StopSidecar => "stop_sidecar".into(),
            Effect::WatchActivity {
                port: Some(port),
                drift: None,
            } => format!("watch_activity {port}"),
            Effect::WatchActivity {
                port: Some(port),
                drift: Some(drift),
            } => format!(
                "watch_activity {port}, drift check #{} every {} ms",
                drift.id,
                drift.interval.as_millis()
            ),
            Effect::WatchActivity { port: None, .. } => "watch_activity none".into(),
            Effect::Published { view } => format!("published {}", view.phase),
        }
    }
}

/// Performs the driver's effects. Every method returns at once: long work runs on the
/// executor's worker and comes back as an input.
pub trait World {
    /// Stores `spec` as `specs/<hex>.json`, durably: done before its `spec_accepted` record.
    fn store_spec(&mut self, spec: &ParsedSpec) -> Result<(), String>;

    fn perform(&mut self, effect: Effect);

    /// A spec was taken (accepted, identical or repeated): what its envelope says about
    /// compute_ctl itself takes effect (Neon's `compute_ctl_config.jwks`, the API's keys).
    /// Nothing by default: a test's world has no API.
    fn spec_taken(&mut self, spec: &ParsedSpec) {
        let _ = spec;
    }

    /// The `compute_ctl_config` of an envelope without a spec (a SIGHUP on Neon's config file
    /// with `"spec": null`) takes effect. Nothing by default.
    fn compute_ctl_config_taken(&mut self, config: &serde_json::Value) {
        let _ = config;
    }

    /// The journal failed: cancel what runs and stop Postgres, since nothing more can be
    /// acknowledged.
    fn stop_everything(&mut self);

    /// Replaces this process with `binary` run with `args` (same pid, Postgres stays its
    /// child): returns only if that failed, with why.
    fn reexec(&mut self, binary: &std::path::Path, args: &[std::ffi::OsString]) -> std::io::Error;
}

/// The real world.
#[allow(missing_debug_implementations)]
pub struct Shell {
    pub executor: Executor,
    pub monitor: Monitor,
    pub state_dir: PathBuf,
    /// The API's keys: an envelope's `compute_ctl_config.jwks` replaces them.
    pub auth: Arc<Auth>,
}

impl World for Shell {
    fn store_spec(&mut self, spec: &ParsedSpec) -> Result<(), String> {
        crate::journal::store_spec(&self.state_dir, spec.hash_hex(), &spec.canonical_json)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn spec_taken(&mut self, spec: &ParsedSpec) {
        if let Some(config) = &spec.compute_ctl_config {
            self.auth.use_compute_ctl_config(config);
        }
    }

    fn compute_ctl_config_taken(&mut self, config: &serde_json::Value) {
        self.auth.use_compute_ctl_config(config);
    }

    fn perform(&mut self, effect: Effect) {
        match effect {
            Effect::Submit { step, spec, phase } => self.executor.submit(step, spec, phase),
            Effect::CancelSteps => self.executor.cancel_all(),
            Effect::StartSidecar => self.executor.start_sidecar(),
            Effect::StopSidecar => self.executor.stop_sidecar(),
            Effect::WatchActivity { port, drift } => {
                let env = self.executor.env();
                let watch = port.map(|port| Watch {
                    config: env.admin.config(port, None),
                    pgdata: env.pgdata.clone(),
                    drift: drift.map(|target| DriftWatch {
                        id: target.id,
                        expected_settings: crate::storage::expected_settings(env, &target.spec),
                        spec: target.spec,
                        admin_role: env.admin.role().to_owned(),
                        privileged_role: env.admin.privileged_role().clone(),
                        interval: target.interval,
                    }),
                });
                self.monitor.watch(watch);
            }
            Effect::Published { view } => {
                crate::notify::published(&view);
                crate::logging::published(&view);
                crate::metrics::published(&view);
            }
        }
    }

    fn reexec(&mut self, binary: &std::path::Path, args: &[std::ffi::OsString]) -> std::io::Error {
        use std::os::unix::process::CommandExt;
        // The new process starts its own sidecar; Postgres is adopted, not restarted.
        self.executor.stop_sidecar();
        std::process::Command::new(binary).args(args).exec()
    }

    fn stop_everything(&mut self) {
        self.executor.cancel_all();
        self.executor.stop_sidecar();
        if let Some(postmaster) = self.executor.postmaster() {
            postmaster.stop(ShutdownMode::Fast, Duration::from_secs(60));
        }
    }
}
