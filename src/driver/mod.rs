//! The driver: the one thread that owns the phase.
//!
//! For each input: decide (the pure core, `states`), persist (the spec file and the journal,
//! one fsync for everything the input caused), publish the view, answer the caller, hand the
//! effects to the world. Nothing here blocks on Postgres or the network: long work runs on
//! the executor's worker and comes back as an input.
//!
//! - `records`: the journal records an input writes;
//! - `effects`: what entering a phase asks of the world, and steps as effects (pure);
//! - `waiters`: parked `/configure` and `/terminate` requests, and when they are due (pure);
//! - `world`: effects as data, and the trait that performs them.
//!
//! The driver runs without threads in tests: an in-memory journal, a recording world, and
//! `Now` passed in (`tests/it/driver.rs`).

mod effects;
mod inputs;
mod records;
mod waiters;
pub mod world;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use states::{
    Event, Next, Now, Phase, PhaseName, Policy, Recalled, Rejection, ShutdownMode, SpecAnswer,
    SpecRef, Step, StepId, Transition,
};

use crate::clock::{rfc3339_ms, Clock};
use crate::exit::ExitCode;
use crate::input::Input;
use crate::journal::{JournalStore, RecordBody, SpecAcceptedRecord, SpecSource};
use crate::postgres::drift::Difference;
use crate::postgres::settings::PendingRestart;
use crate::sidecar::SidecarView;
use crate::spec::{ParsedSpec, SpecAdmission};
use crate::step_env::Progress;
use crate::view::{Published, StartupTimes, StateView};

use records::{From, Origin};
use waiters::Waiters;
use world::{DriftTarget, Effect, World};

/// Why the driver loop ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// The phase reached `terminated`; the process exits with this code.
    Code(ExitCode),
    /// The journal could not be written: nothing more can be acknowledged.
    JournalFailed(String),
    /// Every sender of the inbox is gone (a defect: the API and the executor hold senders
    /// for the life of the process).
    InboxClosed,
}

/// Everything the driver needs, built by `run`.
#[allow(missing_debug_implementations)]
pub struct DriverParts {
    pub journal: Box<dyn JournalStore + Send>,
    pub world: Box<dyn World + Send>,
    pub published: Arc<Published>,
    pub inbox: Receiver<Input>,
    pub clock: Clock,
    pub monitor_interval: Duration,
    pub policy: Policy,
    /// Ask the control plane for a spec at boot.
    pub fetch_spec: bool,
    /// `-S`, re-read on SIGHUP.
    pub spec_file: Option<PathBuf>,
    pub admission: SpecAdmission,
    pub recalled: Recalled,
    /// When the start-up phases the last run left unfinished were first entered (wall ms),
    /// for `phase_since` when this run goes on with them (`Replay::phases_entered`).
    pub phases_entered: Vec<(PhaseName, u64)>,
    pub start_time: String,
    /// The binary file compute_ctl was started from, and its arguments, for SIGUSR2.
    pub reexec: Option<(PathBuf, Vec<std::ffi::OsString>)>,
}

/// What the view shows besides the phase: facts the driver collects as they come.
#[derive(Debug, Default)]
struct Shown {
    last_active_ms: Option<u64>,
    pending_restart: Vec<PendingRestart>,
    startup: StartupTimes,
    startup_began_ms: Option<u64>,
    progress: Option<Progress>,
    sidecar: Option<SidecarView>,
    terminate_mode: Option<ShutdownMode>,
    /// Why the last promotion failed, until the next one is asked for: a newer spec may be
    /// applied after it, and `POST /promote` still failed.
    promotion_failed: Option<String>,
    /// The drift check's last list, each item with the time it was first seen.
    drift: Vec<Difference>,
    drift_repair: Option<String>,
    drift_check_us: Option<u64>,
    drift_checks: u64,
}

pub struct Driver {
    phase: Phase,
    phase_since: Now,
    /// `DriverParts::phases_entered`, each taken once.
    phases_entered: Vec<(PhaseName, u64)>,
    journal: Box<dyn JournalStore + Send>,
    world: Box<dyn World + Send>,
    published: Arc<Published>,
    inbox: Receiver<Input>,
    clock: Clock,
    monitor_interval: Duration,
    next_tick_ms: u64,
    spec_file: Option<PathBuf>,
    admission: SpecAdmission,
    /// Specs by hash that the phase may still need: desired, applied, and the one being
    /// built or applied.
    specs: HashMap<String, Arc<ParsedSpec>>,
    shown: Shown,
    waiters: Waiters,
    start_time: String,
    reexec: Option<(PathBuf, Vec<std::ffi::OsString>)>,
    exit: Option<Exit>,
    /// The id of the last drift watch handed to the monitor; its reports only are current.
    drift_watch: u64,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("phase", &self.phase.name())
            .finish()
    }
}

/// What an input brings besides its event: records of facts that happened anyway (a step
/// finished), or a spec offered, which is stored before its `spec_accepted` record.
#[derive(Debug, Default)]
struct Facts {
    records: Vec<RecordBody>,
    offered: Option<(Arc<ParsedSpec>, SpecSource)>,
}

/// The pure part of an event's handling.
#[derive(Debug)]
enum Decided {
    /// The phase refused it; `records` are facts journaled anyway.
    Refused {
        records: Vec<RecordBody>,
        rejection: Rejection,
    },
    /// Nothing to write, publish or do; an offer's answer if it was one.
    Unchanged {
        answer: Option<SpecAnswer>,
    },
    Changed(Box<Decision>),
}

/// What an event changes, before it is durable.
#[derive(Debug)]
struct Decision {
    phase: Phase,
    steps: Vec<Step>,
    /// `spec_accepted` first, then the transition, then a `step_started` per worker step.
    records: Vec<RecordBody>,
    /// The offered spec that becomes desired: stored before the records.
    accepted: Option<Arc<ParsedSpec>>,
    answer: Option<SpecAnswer>,
    /// The phase changed (not only its data or attempt).
    entered: bool,
}

/// How one event ended.
#[derive(Debug)]
enum Handled {
    /// Decided and durable; an offered spec's answer.
    Done(Option<SpecAnswer>),
    /// The phase refused the event; only facts that happened anyway were journaled.
    Refused(Rejection),
    /// The offered spec could not be stored: nothing was accepted.
    NotStored(String),
}

impl Driver {
    /// A driver in `empty`, with the boot steps done. `start` then brings it the journal's
    /// desired spec and the spec file's.
    pub fn new(parts: DriverParts, now: Now) -> Driver {
        let boot = Phase::boot(parts.policy, parts.fetch_spec, parts.recalled);
        let mut driver = Driver {
            phase: boot.phase.clone(),
            phase_since: now,
            phases_entered: parts.phases_entered,
            journal: parts.journal,
            world: parts.world,
            published: parts.published,
            inbox: parts.inbox,
            clock: parts.clock,
            monitor_interval: parts.monitor_interval,
            next_tick_ms: now.mono_ms,
            spec_file: parts.spec_file,
            admission: parts.admission,
            specs: HashMap::new(),
            shown: Shown::default(),
            waiters: Waiters::default(),
            start_time: parts.start_time,
            reexec: parts.reexec,
            exit: None,
            drift_watch: 0,
        };
        let (effects, _) = effects::steps_to_effects(boot.steps, &HashMap::new(), PhaseName::Empty);
        for effect in effects {
            driver.world.perform(effect);
        }
        driver
    }

    /// Brings the compute back with the journal's desired spec (`replayed`, already
    /// accepted; the postmaster serving `adoptable` is adopted if it may be), then offers the
    /// `-S` file's (a new generation if it differs).
    pub fn start(
        &mut self,
        replayed: Option<Arc<ParsedSpec>>,
        adoptable: Option<Arc<ParsedSpec>>,
        from_file: Option<Arc<ParsedSpec>>,
        now: Now,
    ) -> Result<(), Exit> {
        if let Some(spec) = adoptable {
            self.specs.insert(spec.hash.clone(), spec);
        }
        if let (Some(spec), Some(desired)) = (replayed, self.phase.ctx().desired.clone()) {
            debug_assert_eq!(
                spec.hash, desired.hash,
                "the replayed spec is not the desired one"
            );
            self.specs.insert(spec.hash.clone(), spec);
            let origin = Origin::source("journal: the last accepted spec");
            let event = Event::SpecAccepted { spec: desired };
            self.handle(event, origin, now, Facts::default())?;
        }
        if let Some(spec) = from_file {
            match self.offer(spec, SpecSource::File, None, None, now)? {
                Handled::Done(answer) => log::info!("the spec file: {answer:?}"),
                Handled::Refused(why) => log::error!("the spec file was not accepted: {why}"),
                Handled::NotStored(why) => log::error!("the spec file was not accepted: {why}"),
            }
        }
        self.publish();
        Ok(())
    }

    /// Runs the loop until the phase is `terminated` or the journal fails.
    pub fn run(mut self) -> Exit {
        let exit = self.drive();
        if let Exit::JournalFailed(why) = &exit {
            // Nothing more can be acknowledged; leave no Postgres behind.
            log::error!("stopping postgres: the journal cannot be written: {why}");
            self.world.stop_everything();
        }
        exit
    }

    /// The loop: receive, decide, persist, publish, answer, hand over; or a tick when the
    /// monitor interval or a phase's deadline comes first.
    fn drive(&mut self) -> Exit {
        loop {
            self.published.loop_ran();
            if let Some(exit) = self.exit.take() {
                return exit;
            }
            // The systemd watchdog is fed here, by the loop itself, and bounds the wait.
            let timeout =
                Duration::from_millis(self.wake_ms().saturating_sub(self.clock.mono_ms()))
                    .min(crate::notify::watchdog());
            let input = match self.inbox.recv_timeout(timeout) {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => return Exit::InboxClosed,
            };
            let now = self.clock.now();
            let handled = match input {
                Some(input) => self.on_input(input, now),
                None => Ok(()),
            };
            if let Err(exit) = handled.and_then(|()| self.tick_if_due(now)) {
                return exit;
            }
        }
    }

    /// When the loop must wake without an input: the next monitor tick or phase deadline.
    fn wake_ms(&self) -> u64 {
        let deadline = self.phase.deadline_ms().unwrap_or(u64::MAX);
        self.next_tick_ms.min(deadline)
    }

    /// A tick, if the monitor interval or the phase's deadline has come.
    pub fn tick_if_due(&mut self, now: Now) -> Result<(), Exit> {
        if now.mono_ms >= self.wake_ms() {
            let interval = u64::try_from(self.monitor_interval.as_millis()).unwrap_or(500);
            self.next_tick_ms = now.mono_ms.saturating_add(interval.max(1));
            self.handle(Event::Tick, Origin::default(), now, Facts::default())?;
        }
        self.check_invariants();
        Ok(())
    }

    /// One event: decide (pure), persist, publish, answer, hand over.
    fn handle(
        &mut self,
        event: Event,
        origin: Origin,
        now: Now,
        facts: Facts,
    ) -> Result<Handled, Exit> {
        match self.decide(event, &origin, now, facts) {
            Decided::Refused { records, rejection } => {
                // A finished step happened whatever the phase thinks of it.
                if !records.is_empty() {
                    self.append(records, now)?;
                    self.publish();
                }
                Ok(Handled::Refused(rejection))
            }
            Decided::Unchanged { answer } => Ok(Handled::Done(answer)),
            Decided::Changed(decision) => self.commit(*decision, now),
        }
    }

    /// What `event` does, as data: the core's next phase and steps, and the records that
    /// make it durable. Reads the driver's state, changes none of it.
    fn decide(&self, event: Event, origin: &Origin, now: Now, facts: Facts) -> Decided {
        let Facts {
            mut records,
            offered,
        } = facts;
        let event_name = event.name();
        let event_error = match &event {
            Event::StepFinished {
                result: Err(error), ..
            } => Some(error.clone()),
            _ => None,
        };
        let from = From {
            phase: self.phase.name(),
            attempt: self.phase.attempt(),
            since_ms: self.phase_since.mono_ms,
        };
        let Next {
            phase,
            steps,
            answer,
        } = match self.phase.clone().on_event(event, now) {
            Ok(next) => next,
            Err(rejected) => {
                let rejection = rejected.rejection;
                return Decided::Refused { records, rejection };
            }
        };
        let accepted = match (answer, offered) {
            (Some(SpecAnswer::Accepted { generation, seq }), Some((spec, source))) => {
                debug_assert_eq!(
                    seq,
                    self.journal.last_seq() + 1,
                    "the offer's seq is not next"
                );
                records.insert(
                    0,
                    RecordBody::SpecAccepted(SpecAcceptedRecord {
                        generation,
                        spec_hash: spec.hash.clone(),
                        source,
                        request_id: origin.request_id.clone(),
                        ignored_fields: spec.ignored_fields.clone(),
                    }),
                );
                Some(spec)
            }
            _ => None,
        };
        // Most ticks change nothing: nothing to write, publish or answer.
        if steps.is_empty() && records.is_empty() && accepted.is_none() && phase == self.phase {
            return Decided::Unchanged { answer };
        }
        // An offer that was accepted caused what follows as an accepted spec.
        let cause = match accepted {
            Some(_) => states::EventName::SpecAccepted,
            None => event_name,
        };
        records.extend(records::transition(
            from,
            &phase,
            cause,
            origin,
            event_error,
            now.mono_ms,
        ));
        records.extend(steps.iter().filter_map(records::step_started));
        Decided::Changed(Box::new(Decision {
            entered: phase.name() != from.phase,
            phase,
            steps,
            records,
            accepted,
            answer,
        }))
    }

    /// Makes a decision durable (the spec file first, its record names it; then the records,
    /// one fsync), then publishes it, performs its effects and answers the parked requests.
    fn commit(&mut self, decision: Decision, now: Now) -> Result<Handled, Exit> {
        let Decision {
            phase,
            steps,
            records,
            accepted,
            answer,
            entered,
        } = decision;
        if let Some(spec) = &accepted {
            if let Err(why) = self.world.store_spec(spec) {
                log::error!("cannot store spec {}: {why}", spec.hash);
                return Ok(Handled::NotStored(why));
            }
        }
        self.append(records, now)?;
        if let Some(spec) = accepted {
            self.specs.insert(spec.hash.clone(), spec);
        }
        let specs_for_steps: HashMap<StepId, Arc<ParsedSpec>> = steps
            .iter()
            .filter_map(|step| {
                let spec = self.specs.get(&step.spec()?.hash)?;
                Some((step.id()?, spec.clone()))
            })
            .collect();
        self.phase = phase;
        let mut effects = Vec::new();
        if entered {
            self.phase_since = now;
            // An attempt that goes on with the last run's shows since when the phase has
            // been tried, not since this run came to it (issue: a crash loop is one start-up).
            // Only the wall time: the monotonic one of another process means nothing here.
            if self.phase.attempt() > 1 {
                let name = self.phase.name();
                if let Some(at) = self.phases_entered.iter().position(|(p, _)| *p == name) {
                    self.phase_since.wall_ms = self.phases_entered.remove(at).1;
                }
            }
            log::info!("phase {}", self.phase.name());
            if self.phase.name() == PhaseName::Init {
                self.shown.startup = StartupTimes::default();
                self.shown.startup_began_ms = Some(now.mono_ms);
                self.shown.pending_restart.clear();
                self.shown.drift.clear();
                self.shown.drift_repair = None;
            }
            let drift = self.drift_target();
            effects =
                effects::on_entering(&self.phase, self.desired_spec().map(|s| s.port()), drift);
        }
        self.prune_specs();
        self.publish();
        let (step_effects, exit) =
            effects::steps_to_effects(steps, &specs_for_steps, self.phase.name());
        effects.extend(step_effects);
        for effect in effects {
            self.world.perform(effect);
        }
        if let Some(reason) = exit {
            if reason == states::ExitReason::Requested {
                // A stop that failed leaves no Postgres behind an answered terminate.
                self.world.stop_everything();
            }
            let code = ExitCode::from(reason);
            log::info!("exiting with code {} ({reason:?})", code.code());
            self.exit = Some(Exit::Code(code));
        }
        self.answer_waiters();
        Ok(Handled::Done(answer))
    }

    fn append(&mut self, records: Vec<RecordBody>, now: Now) -> Result<(), Exit> {
        if records.is_empty() {
            return Ok(());
        }
        self.journal
            .append(records, now.mono_ms, Clock::wall_time(now))
            .map(|records| crate::metrics::journaled(&records))
            .map_err(|e| {
                log::error!("the journal cannot be written: {e}; nothing more is acknowledged");
                Exit::JournalFailed(e.to_string())
            })
    }

    /// In `running`: a new drift watch, against the applied spec.
    fn drift_target(&mut self) -> Option<DriftTarget> {
        if self.phase.name() != PhaseName::Running {
            return None;
        }
        let ctx = self.phase.ctx();
        let spec = self.specs.get(&ctx.applied.as_ref()?.hash)?.clone();
        let interval = Duration::from_millis(ctx.policy.drift_interval_ms.max(1));
        self.drift_watch += 1;
        Some(DriftTarget {
            id: self.drift_watch,
            spec,
            interval,
        })
    }

    fn desired_spec(&self) -> Option<&Arc<ParsedSpec>> {
        let desired = self.phase.ctx().desired.as_ref()?;
        self.specs.get(&desired.hash)
    }

    /// Keeps only the specs the phase may still need: desired, applied, and the one being
    /// built or applied.
    fn prune_specs(&mut self) {
        let ctx = self.phase.ctx();
        let keep: Vec<&SpecRef> = [
            ctx.desired.as_ref(),
            ctx.applied.as_ref(),
            self.phase.target(),
        ]
        .into_iter()
        .flatten()
        .collect();
        self.specs
            .retain(|hash, _| keep.iter().any(|s| s.hash == *hash));
    }

    fn answer_waiters(&mut self) {
        if self.waiters.is_empty() {
            return;
        }
        let view = self.published.view();
        let failed = self.shown.promotion_failed.as_deref();
        if self.waiters.answer_due(&self.phase, &view, failed) > 0 {
            self.published.answered();
        }
    }

    /// The invariants between two inputs; a broken one is a defect.
    fn check_invariants(&self) {
        if let Err(broken) = self.phase.check_invariants() {
            log::error!("invariant broken in phase {}: {broken}", self.phase.name());
            debug_assert!(false, "invariant broken: {broken}");
        }
        debug_assert!(
            self.phase.ctx().desired.is_none() || self.desired_spec().is_some(),
            "the desired spec is not kept"
        );
    }

    /// The view of the driver's state that `GET /state` serves.
    pub fn view(&self) -> StateView {
        let ctx = self.phase.ctx();
        let desired_spec = self.desired_spec();
        let shown = &self.shown;
        StateView {
            phase: self.phase.name(),
            phase_since: rfc3339_ms(self.phase_since.wall_ms),
            epoch: self.journal.epoch(),
            seq: self.journal.last_seq(),
            desired_generation: ctx.desired.as_ref().map(|s| s.generation),
            applied_generation: ctx.applied.as_ref().map(|s| s.generation),
            spec_hash: ctx.desired.as_ref().map(|s| s.hash.clone()),
            postmaster_pid: self.phase.postmaster(),
            last_active: shown.last_active_ms.map(rfc3339_ms),
            attempt: self.phase.attempt(),
            error: self.phase.error().cloned(),
            pending_restart: shown.pending_restart.clone(),
            startup: shown.startup.clone(),
            progress: shown.progress.clone(),
            storage: desired_spec.map(|s| s.storage.kind().to_string()),
            prepared: self.phase.prepared().unwrap_or(false),
            sidecar: shown.sidecar.clone(),
            start_time: self.start_time.clone(),
            drift: shown.drift.clone(),
            drift_repair: shown.drift_repair.clone(),
            drift_check_us: shown.drift_check_us,
            drift_checks: shown.drift_checks,
            tenant: desired_spec.and_then(|s| s.storage.tenant_id().map(str::to_string)),
            timeline: desired_spec.and_then(|s| s.storage.timeline_id().map(str::to_string)),
            terminate_mode: shown.terminate_mode,
        }
    }

    /// The phase, for tests.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The journal, for tests.
    pub fn journal(&self) -> &dyn JournalStore {
        self.journal.as_ref()
    }

    /// How many requests are parked, for tests.
    pub fn parked(&self) -> usize {
        self.waiters.len()
    }

    /// Publishes the view, and tells the world it changed (systemd's `STATUS=`, the log
    /// context).
    fn publish(&mut self) {
        let view = Arc::new(self.view());
        self.published.publish((*view).clone());
        self.world.perform(Effect::Published { view });
    }
}
