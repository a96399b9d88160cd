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
    SpecOffer, SpecRef, StepName, Transition,
};

use crate::clock::{rfc3339_ms, Clock};
use crate::exit::ExitCode;
use crate::input::{ApiAnswer, ApiCall, ApiRequest, Input, SignalKind, StepExtra, StepReport};
use crate::journal::{
    JournalStore, RecordBody, SpecAcceptedRecord, SpecSource, StepFinishedRecord,
};
use crate::postgres::settings::PendingRestart;
use crate::sidecar::SidecarView;
use crate::spec::{ParsedSpec, SpecAdmission};
use crate::step_env::Progress;
use crate::view::{Published, StartupTimes, StateView};

use records::{From, Origin};
use waiters::{Waiters, Waiting};
use world::World;

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
}

pub struct Driver {
    phase: Phase,
    phase_since: Now,
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
            let timeout =
                Duration::from_millis(self.wake_ms().saturating_sub(self.clock.mono_ms()));
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

    /// One input, decided and done; `Err` ends the loop.
    pub fn on_input(&mut self, input: Input, now: Now) -> Result<(), Exit> {
        let result = match input {
            Input::Api(call) => self.on_api(call, now),
            Input::StepStarted { id } => {
                let event = Event::StepStarted { id };
                if let Handled::Refused(why) =
                    self.handle(event, Origin::default(), now, Facts::default())?
                {
                    log::debug!("step {id} began late: {why}");
                }
                Ok(())
            }
            Input::StepFinished(report) => self.on_step_finished(report, now),
            Input::PostmasterExited { pid, status } => {
                if self.phase.postmaster() != Some(pid) {
                    log::info!("postgres (pid {pid}) exited with {status}; no phase waits for it");
                    return Ok(());
                }
                let origin = if self.phase.name() == PhaseName::Terminating {
                    log::info!("postgres (pid {pid}) stopped as asked, with {status}");
                    Origin::default()
                } else {
                    log::error!("postgres (pid {pid}) exited unexpectedly with {status}");
                    Origin::source(format!("postmaster pid {pid}"))
                };
                let event = Event::PostmasterExited { status };
                if let Handled::Refused(why) = self.handle(event, origin, now, Facts::default())? {
                    log::warn!("the postmaster's exit was refused: {why}");
                }
                Ok(())
            }
            Input::Signal(signal) => self.on_signal(signal, now),
            Input::Activity { wall_ms } => {
                let last = self
                    .shown
                    .last_active_ms
                    .map_or(wall_ms, |t| t.max(wall_ms));
                self.shown.last_active_ms = Some(last);
                self.publish();
                Ok(())
            }
            Input::Progress(progress) => {
                self.shown.progress = Some(progress);
                self.publish();
                Ok(())
            }
            Input::Sidecar(view) => {
                self.shown.sidecar = Some(view);
                self.publish();
                Ok(())
            }
        };
        self.check_invariants();
        result
    }

    fn on_signal(&mut self, signal: SignalKind, now: Now) -> Result<(), Exit> {
        let name = match signal {
            SignalKind::Terminate => "SIGTERM",
            SignalKind::Interrupt => "SIGINT",
            SignalKind::Reload => return self.reload(now),
            SignalKind::Upgrade => return self.upgrade(now),
        };
        log::info!("{name}: terminating");
        self.shown.terminate_mode.get_or_insert(ShutdownMode::Fast);
        let event = Event::Terminate {
            mode: ShutdownMode::Fast,
        };
        // Refused only in `terminated`, which is on its way out anyway.
        self.handle(event, Origin::source(name), now, Facts::default())?;
        Ok(())
    }

    /// SIGUSR2: re-execute the binary file compute_ctl was started from, with the same
    /// arguments; the new process opens the journal (a new epoch) and adopts Postgres. The
    /// intent is journaled first; a failed exec is journaled, and this process goes on.
    fn upgrade(&mut self, now: Now) -> Result<(), Exit> {
        let Some((binary, args)) = self.reexec.clone() else {
            log::warn!("SIGUSR2: the binary to re-execute is unknown");
            return Ok(());
        };
        let detail = format!("re-execute {} keeping postgres", binary.display());
        log::info!("SIGUSR2: {detail}");
        let id = states::StepId(0);
        let started = RecordBody::StepStarted(crate::journal::StepStartedRecord {
            id,
            step: StepName::Reexec,
            generation: self.phase.ctx().desired.as_ref().map(|d| d.generation),
            detail: Some(detail),
        });
        self.append(vec![started], now)?;
        let error = self.world.reexec(&binary, &args);
        let message = format!("cannot re-execute {}: {error}", binary.display());
        log::error!("SIGUSR2: {message}");
        let failed = RecordBody::StepFinished(StepFinishedRecord {
            id,
            step: StepName::Reexec,
            ok: false,
            duration_ms: 0,
            output: None,
            error: Some(states::StepError::new(
                self.phase.name(),
                StepName::Reexec,
                states::ErrorKind::Io,
                message,
            )),
        });
        self.append(vec![failed], now)?;
        self.publish();
        Ok(())
    }

    /// SIGHUP: the `-S` file again, admitted like any spec.
    fn reload(&mut self, now: Now) -> Result<(), Exit> {
        let Some(path) = self.spec_file.clone() else {
            log::warn!("SIGHUP: no -S/--spec file to re-read");
            return Ok(());
        };
        let spec = match self.admission.admit_file(&path) {
            Ok(admitted) => Arc::new(admitted.spec),
            Err(e) => {
                log::error!("SIGHUP: not accepted: {e}");
                return Ok(());
            }
        };
        let shown = path.display();
        match self.offer(spec, SpecSource::Reload, None, None, now)? {
            Handled::Done(answer) => log::info!("SIGHUP: {shown} re-read: {answer:?}"),
            Handled::Refused(why) => log::error!("SIGHUP: {shown} not accepted: {why}"),
            Handled::NotStored(why) => log::error!("SIGHUP: {shown} not accepted: {why}"),
        }
        Ok(())
    }

    fn on_api(&mut self, call: ApiCall, now: Now) -> Result<(), Exit> {
        let ApiCall {
            request_id,
            request,
            reply,
        } = call;
        let (handled, answer) = match request {
            ApiRequest::PostSpec { spec, if_match } => {
                let handled = self.offer(spec, SpecSource::Http, Some(request_id), if_match, now);
                let answer = spec_answer(&handled);
                (handled, answer)
            }
            ApiRequest::Configure { spec } => {
                let handled = self.offer(spec, SpecSource::Http, Some(request_id), None, now);
                if let Ok(Handled::Done(Some(answer))) = &handled {
                    let generation = answer.generation();
                    self.waiters.park(Waiting::Configure { generation }, reply);
                    self.answer_waiters();
                    return Ok(());
                }
                let answer = spec_answer(&handled);
                (handled, answer)
            }
            ApiRequest::Terminate { mode } => {
                self.shown.terminate_mode.get_or_insert(mode);
                self.waiters.park(Waiting::Terminate, reply);
                let origin = Origin::request(request_id, "POST /terminate");
                // Refused only in `terminated`, where the waiter is answered at once.
                self.handle(Event::Terminate { mode }, origin, now, Facts::default())?;
                self.answer_waiters();
                return Ok(());
            }
            ApiRequest::Recover => {
                let origin = Origin::request(request_id, "POST /recover");
                let handled = self.handle(Event::Recover, origin, now, Facts::default());
                let answer = match &handled {
                    Ok(Handled::Refused(why)) => ApiAnswer::Refused(why.clone()),
                    Ok(_) => ApiAnswer::Recovering {
                        phase: self.phase.name(),
                    },
                    Err(_) => journal_failed(),
                };
                (handled, answer)
            }
        };
        // The caller may have given up (a closed connection): nothing to do.
        let _ = reply.send(answer);
        handled.map(|_| ())
    }

    fn on_step_finished(&mut self, report: StepReport, now: Now) -> Result<(), Exit> {
        let StepReport {
            id,
            step,
            result,
            duration_ms,
            detail,
            extra,
        } = report;
        match &result {
            Ok(_) => log::info!("step {step} {id} finished in {duration_ms} ms"),
            Err(e) => log::warn!("step {step} {id} failed after {duration_ms} ms: {e}"),
        }
        if result.is_ok() {
            self.record_timing(step, duration_ms, now);
        }
        if matches!(step, StepName::FetchBasebackup | StepName::SyncSafekeepers) {
            self.shown.progress = None;
        }
        let mut fetched = None;
        match extra {
            StepExtra::None => {}
            StepExtra::Applied { pending_restart } => self.shown.pending_restart = pending_restart,
            StepExtra::Fetched(spec) => fetched = Some(Arc::new(*spec)),
        }
        let finished = RecordBody::StepFinished(StepFinishedRecord {
            id,
            step,
            ok: result.is_ok(),
            duration_ms,
            output: records::step_finished_output(&result, detail),
            error: result.as_ref().err().cloned(),
        });
        let origin = Origin {
            step: Some(step),
            ..Origin::default()
        };
        let facts = Facts {
            records: vec![finished],
            offered: None,
        };
        if let Handled::Refused(why) =
            self.handle(Event::StepFinished { id, result }, origin, now, facts)?
        {
            log::info!("step {step} {id} reported late: {why}");
        }
        crate::failpoint!(format!("step.finished.{step}"));
        if let Some(spec) = fetched {
            match self.offer(spec, SpecSource::ControlPlane, None, None, now)? {
                Handled::Done(_) => {}
                Handled::Refused(why) => log::error!("the control plane's spec is refused: {why}"),
                Handled::NotStored(why) => {
                    log::error!("the control plane's spec is refused: {why}")
                }
            }
        }
        Ok(())
    }

    /// Offers `spec` to the phase: admission in the core, then, if accepted, the spec stored
    /// and its `spec_accepted` record first in the input's batch.
    fn offer(
        &mut self,
        spec: Arc<ParsedSpec>,
        source: SpecSource,
        request_id: Option<String>,
        if_match: Option<u64>,
        now: Now,
    ) -> Result<Handled, Exit> {
        let offer = SpecOffer {
            hash: spec.hash.clone(),
            if_match,
            request_id: request_id.clone(),
            seq: self.journal.last_seq() + 1,
        };
        let origin = Origin {
            request_id,
            source: Some(records::source_name(source).into()),
            step: None,
        };
        let facts = Facts {
            records: Vec::new(),
            offered: Some((spec, source)),
        };
        self.handle(Event::SpecOffered { offer }, origin, now, facts)
    }

    fn record_timing(&mut self, step: StepName, duration_ms: u64, now: Now) {
        let startup = &mut self.shown.startup;
        match step {
            StepName::SyncSafekeepers => startup.sync_safekeepers_ms = duration_ms,
            StepName::FetchBasebackup => startup.basebackup_ms = duration_ms,
            StepName::SpawnPostgres => startup.start_postgres_ms = duration_ms,
            StepName::ApplySpec if self.phase.ctx().applied.is_none() => {
                startup.config_ms = duration_ms;
                if let Some(began) = self.shown.startup_began_ms {
                    startup.total_ms = now.mono_ms.saturating_sub(began);
                }
            }
            _ => {}
        }
    }

    /// Decides, persists, publishes, answers, hands over.
    fn handle(
        &mut self,
        event: Event,
        origin: Origin,
        now: Now,
        facts: Facts,
    ) -> Result<Handled, Exit> {
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

        // Decide.
        let next = match self.phase.clone().on_event(event, now) {
            Ok(next) => next,
            Err(rejected) => {
                // A finished step happened whatever the phase thinks of it.
                if !records.is_empty() {
                    self.append(records, now)?;
                    self.publish();
                }
                return Ok(Handled::Refused(rejected.rejection));
            }
        };
        let Next {
            phase,
            steps,
            answer,
        } = next;
        let accepted = match (answer, &offered) {
            (Some(SpecAnswer::Accepted { generation, seq }), Some((spec, source))) => {
                debug_assert_eq!(
                    seq,
                    self.journal.last_seq() + 1,
                    "the offer's seq is not next"
                );
                Some((generation, spec.clone(), *source))
            }
            _ => None,
        };
        // Most ticks change nothing: nothing to write, publish or answer.
        if steps.is_empty() && records.is_empty() && accepted.is_none() && phase == self.phase {
            return Ok(Handled::Done(answer));
        }
        if let Some((generation, spec, source)) = &accepted {
            let request_id = origin.request_id.clone();
            records.insert(
                0,
                RecordBody::SpecAccepted(SpecAcceptedRecord {
                    generation: *generation,
                    spec_hash: spec.hash.clone(),
                    source: *source,
                    request_id,
                    ignored_fields: spec.ignored_fields.clone(),
                }),
            );
            self.specs.insert(spec.hash.clone(), spec.clone());
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
            &origin,
            event_error,
            now.mono_ms,
        ));
        let mut specs_for_steps = HashMap::new();
        for step in &steps {
            records.extend(records::step_started(step));
            if let (Some(id), Some(spec)) = (step.id(), step.spec()) {
                if let Some(spec) = self.specs.get(&spec.hash) {
                    specs_for_steps.insert(id, spec.clone());
                }
            }
        }

        // Persist: the spec first (its record names it), then the records, one fsync.
        if let Some((_, spec, _)) = &accepted {
            if let Err(why) = self.world.store_spec(spec) {
                log::error!("cannot store spec {}: {why}", spec.hash);
                self.prune_specs();
                return Ok(Handled::NotStored(why));
            }
        }
        self.append(records, now)?;

        // Publish, answer, hand over.
        let entered = phase.name() != from.phase;
        self.phase = phase;
        let mut effects = Vec::new();
        if entered {
            self.phase_since = now;
            log::info!("phase {}", self.phase.name());
            if self.phase.name() == PhaseName::Init {
                self.shown.startup = StartupTimes::default();
                self.shown.startup_began_ms = Some(now.mono_ms);
                self.shown.pending_restart.clear();
            }
            effects = effects::on_entering(&self.phase, self.desired_spec().map(|s| s.port()));
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
            .map(|_| ())
            .map_err(|e| {
                log::error!("the journal cannot be written: {e}; nothing more is acknowledged");
                Exit::JournalFailed(e.to_string())
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
        self.waiters.answer_due(&self.phase, &view);
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
            sidecar: shown.sidecar.clone(),
            start_time: self.start_time.clone(),
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

    fn publish(&self) {
        self.published.publish(self.view());
    }
}

/// The answer to an offered spec that is not parked.
fn spec_answer(handled: &Result<Handled, Exit>) -> ApiAnswer {
    match handled {
        Ok(Handled::Done(Some(answer))) => ApiAnswer::Spec(*answer),
        Ok(Handled::Done(None)) => ApiAnswer::NotDurable {
            message: "the phase gave no answer to the spec (a defect)".into(),
        },
        Ok(Handled::Refused(why)) => ApiAnswer::Refused(why.clone()),
        Ok(Handled::NotStored(why)) => ApiAnswer::NotDurable {
            message: format!("the spec cannot be stored: {why}"),
        },
        Err(_) => journal_failed(),
    }
}

fn journal_failed() -> ApiAnswer {
    ApiAnswer::NotDurable {
        message: "the journal cannot be written: nothing was accepted".into(),
    }
}
