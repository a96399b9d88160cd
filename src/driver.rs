//! The driver: the one thread that owns the phase.
//!
//! For each input: the pure decision (`states`), then the journal append (durable, one fsync
//! for everything the input caused), then the new view is published, the caller answered, and
//! the steps handed to the executor. Nothing here blocks on Postgres or the network: long work
//! runs on the executor's worker and comes back as an input.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use states::{
    Event, Next, Now, Phase, PhaseName, Rejection, ShutdownMode, SpecRef, Step, StepName,
    StepOutput, Transition,
};

use crate::clock::{rfc3339_ms, Clock};
use crate::executor::{Executor, Progress, StepExtra, StepReport};
use crate::input::{ApiCall, ApiReply, ApiRequest, Input, SignalKind};
use crate::journal::{
    Cause, JournalStore, RecordBody, SpecAcceptedRecord, SpecSource, StepFinishedRecord,
    StepStartedRecord, TransitionRecord,
};
use crate::postgres::monitor::Monitor;
use crate::postgres::settings::PendingRestart;
use crate::replay::{AcceptedRequest, DesiredSpec};
use crate::sidecar::SidecarView;
use crate::spec::{ParsedSpec, SettingsCheck};
use crate::view::{Published, StartupTimes, StateView};

/// The spec the compute must end up running, with its generation and record.
#[derive(Clone, Debug)]
struct Desired {
    generation: u64,
    seq: u64,
    spec: Arc<ParsedSpec>,
}

/// Why the driver loop ended.
#[derive(Debug)]
pub enum Exit {
    /// The phase reached `terminated`; the process exits with this code.
    Code(i32),
    /// The journal could not be written: nothing more can be acknowledged.
    JournalFailed(String),
}

/// Everything the driver needs, built by `run`.
#[allow(missing_debug_implementations)]
pub struct DriverParts {
    pub journal: Box<dyn JournalStore + Send>,
    pub executor: Executor,
    pub published: Arc<Published>,
    pub inbox: Receiver<Input>,
    pub clock: Clock,
    pub monitor: Monitor,
    pub monitor_interval: Duration,
    pub state_dir: PathBuf,
    pub spec_file: Option<PathBuf>,
    pub settings_check: SettingsCheck,
    pub requests: HashMap<String, AcceptedRequest>,
    pub start_time: String,
}

pub struct Driver {
    phase: Phase,
    phase_since: Now,
    journal: Box<dyn JournalStore + Send>,
    executor: Executor,
    published: Arc<Published>,
    inbox: Receiver<Input>,
    clock: Clock,
    monitor: Monitor,
    monitor_interval: Duration,
    next_tick_ms: u64,
    state_dir: PathBuf,
    spec_file: Option<PathBuf>,
    settings_check: SettingsCheck,

    desired: Option<Desired>,
    /// Specs by hash that steps in flight or the running Postgres may still need.
    specs: HashMap<String, Arc<ParsedSpec>>,
    requests: HashMap<String, AcceptedRequest>,
    last_active_ms: Option<u64>,
    pending_restart: Vec<PendingRestart>,
    startup: StartupTimes,
    startup_began_ms: Option<u64>,
    progress: Option<Progress>,
    sidecar: Option<SidecarView>,
    terminate_waiters: Vec<Sender<ApiReply>>,
    configure_waiters: Vec<(u64, Sender<ApiReply>)>,
    terminate_mode: Option<ShutdownMode>,
    start_time: String,
    exit: Option<Exit>,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("phase", &self.phase.name())
            .finish()
    }
}

/// What an input brings besides its event: records of facts that happened anyway (a spec
/// accepted, a step finished), and a new desired spec, which becomes the driver's only once
/// they are durable.
#[derive(Debug, Default)]
struct Facts {
    records: Vec<RecordBody>,
    desired: Option<Desired>,
}

impl Facts {
    fn record(record: RecordBody) -> Facts {
        Facts {
            records: vec![record],
            desired: None,
        }
    }
}

/// Where an event came from, for the transition record's cause.
#[derive(Clone, Debug, Default)]
struct Origin {
    request_id: Option<String>,
    step: Option<StepName>,
    source: Option<String>,
}

impl Driver {
    /// A driver in `empty`; `boot` hands it the spec it starts with, if any.
    pub fn new(parts: DriverParts, policy: states::Policy, fetch_spec: bool) -> (Driver, Next) {
        let now = parts.clock.now();
        let boot = Phase::boot(policy, fetch_spec);
        let driver = Driver {
            phase: boot.phase.clone(),
            phase_since: now,
            journal: parts.journal,
            executor: parts.executor,
            published: parts.published,
            inbox: parts.inbox,
            clock: parts.clock,
            monitor: parts.monitor,
            monitor_interval: parts.monitor_interval,
            next_tick_ms: now.mono_ms,
            state_dir: parts.state_dir,
            spec_file: parts.spec_file,
            settings_check: parts.settings_check,
            desired: None,
            specs: HashMap::new(),
            requests: parts.requests,
            last_active_ms: None,
            pending_restart: Vec::new(),
            startup: StartupTimes::default(),
            startup_began_ms: None,
            progress: None,
            sidecar: None,
            terminate_waiters: Vec::new(),
            configure_waiters: Vec::new(),
            terminate_mode: None,
            start_time: parts.start_time,
            exit: None,
        };
        (driver, boot)
    }

    /// Starts from the journal's desired spec (and, if it differs, the `-S` file's, as a new
    /// generation), then runs the loop until the phase is `terminated` or the journal fails.
    pub fn run(
        mut self,
        boot: Next,
        replayed: Option<(DesiredSpec, Arc<ParsedSpec>)>,
        from_file: Option<Arc<ParsedSpec>>,
    ) -> Exit {
        self.execute(boot.steps, &HashMap::new());
        if let Some((desired, spec)) = replayed {
            self.specs.insert(spec.hash.clone(), spec.clone());
            self.desired = Some(Desired {
                generation: desired.generation,
                seq: desired.seq,
                spec: spec.clone(),
            });
            let origin = Origin {
                source: Some("journal: the last accepted spec".into()),
                ..Origin::default()
            };
            let event = Event::SpecAccepted {
                spec: spec_ref(desired.generation, &spec),
            };
            let now = self.clock.now();
            if let Err(exit) = self.handle(event, origin, now, Facts::default()) {
                return exit;
            }
        }
        if let Some(spec) = from_file {
            let now = self.clock.now();
            match self.accept_spec(spec, SpecSource::File, None, None, now) {
                Ok(_) => {}
                Err(Refusal::Fatal(exit)) => return exit,
                Err(Refusal::Reply(reply)) => {
                    log::error!("the spec file was not accepted: {}", reply.body);
                }
            }
        }
        self.publish();
        self.run_loop()
    }

    fn run_loop(mut self) -> Exit {
        let exit = self.drive();
        if let Exit::JournalFailed(why) = &exit {
            // Nothing more can be acknowledged; leave no Postgres behind.
            log::error!("stopping postgres: the journal cannot be written: {why}");
            self.executor.cancel_all();
            self.executor.stop_sidecar();
            if let Some(postmaster) = self.executor.postmaster() {
                postmaster.stop(ShutdownMode::Fast, Duration::from_secs(60));
            }
        }
        exit
    }

    fn drive(&mut self) -> Exit {
        loop {
            self.published.loop_ran();
            if let Some(exit) = self.exit.take() {
                return exit;
            }
            let now_ms = self.clock.mono_ms();
            let mut wake_ms = self.next_tick_ms;
            if let Some(deadline) = self.phase.deadline_ms() {
                wake_ms = wake_ms.min(deadline);
            }
            // The systemd watchdog is fed here, by the loop itself, and bounds the wait.
            let timeout = Duration::from_millis(wake_ms.saturating_sub(now_ms))
                .min(crate::notify::watchdog());
            let input = match self.inbox.recv_timeout(timeout) {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    return Exit::JournalFailed("the driver's inbox closed".into())
                }
            };
            let now = self.clock.now();
            let result = match input {
                Some(input) => self.on_input(input, now),
                None => Ok(()),
            };
            if let Err(exit) = result {
                return exit;
            }
            if now.mono_ms >= self.next_tick_ms
                || self.phase.deadline_ms().is_some_and(|d| now.mono_ms >= d)
            {
                let interval = u64::try_from(self.monitor_interval.as_millis()).unwrap_or(500);
                self.next_tick_ms = now.mono_ms.saturating_add(interval.max(1));
                if let Err(exit) =
                    self.handle(Event::Tick, Origin::default(), now, Facts::default())
                {
                    return exit;
                }
            }
            if let Err(broken) = self.phase.check_invariants() {
                log::error!("invariant broken in phase {}: {broken}", self.phase.name());
                debug_assert!(false, "invariant broken: {broken}");
            }
        }
    }

    fn on_input(&mut self, input: Input, now: Now) -> Result<(), Exit> {
        match input {
            Input::Api(call) => self.on_api(call, now),
            Input::StepFinished(report) => self.on_step_finished(report, now),
            Input::PostmasterExited { pid, status } => {
                if self.phase.postmaster() != Some(pid) {
                    log::info!("postgres (pid {pid}) exited with {status}; no phase waits for it");
                    return Ok(());
                }
                if self.phase.name() == PhaseName::Terminating {
                    log::info!("postgres (pid {pid}) stopped as asked, with {status}");
                    return self
                        .handle(
                            Event::PostmasterExited { status },
                            Origin::default(),
                            now,
                            Facts::default(),
                        )
                        .map(|_| ());
                }
                log::error!("postgres (pid {pid}) exited unexpectedly with {status}");
                let origin = Origin {
                    source: Some(format!("postmaster pid {pid}")),
                    ..Origin::default()
                };
                if let Err(rejection) = self.handle(
                    Event::PostmasterExited { status },
                    origin,
                    now,
                    Facts::default(),
                )? {
                    log::warn!("the postmaster's exit was refused: {rejection}");
                }
                Ok(())
            }
            Input::Signal(signal) => self.on_signal(signal, now),
            Input::Activity { wall_ms } => {
                self.last_active_ms = Some(self.last_active_ms.map_or(wall_ms, |t| t.max(wall_ms)));
                self.publish();
                Ok(())
            }
            Input::Progress(progress) => {
                self.progress = Some(progress);
                self.publish();
                Ok(())
            }
            Input::Sidecar(view) => {
                self.sidecar = Some(view);
                self.publish();
                Ok(())
            }
        }
    }

    fn on_signal(&mut self, signal: SignalKind, now: Now) -> Result<(), Exit> {
        match signal {
            SignalKind::Terminate | SignalKind::Interrupt => {
                let name = if signal == SignalKind::Terminate {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
                log::info!("{name}: terminating");
                let origin = Origin {
                    source: Some(name.into()),
                    ..Origin::default()
                };
                self.terminate_mode.get_or_insert(ShutdownMode::Fast);
                let event = Event::Terminate {
                    mode: ShutdownMode::Fast,
                };
                // Refused only in `terminated`, which is on its way out anyway.
                self.handle(event, origin, now, Facts::default())?.ok();
                Ok(())
            }
            SignalKind::Reload => crate::notify::reload(|| self.reload(now)),
        }
    }

    /// SIGHUP: re-reads the `-S` file and offers it as a new spec.
    fn reload(&mut self, now: Now) -> Result<(), Exit> {
        let Some(path) = self.spec_file.clone() else {
            log::warn!("SIGHUP: no -S/--spec file to re-read");
            return Ok(());
        };
        let spec = match crate::spec::load_file(&path).and_then(|spec| self.check(spec)) {
            Ok(spec) => spec,
            Err(errors) => {
                log::error!("SIGHUP: {} is not accepted: {errors}", path.display());
                return Ok(());
            }
        };
        match self.accept_spec(Arc::new(spec), SpecSource::Reload, None, None, now) {
            Ok(reply) => {
                log::info!("SIGHUP: {} re-read: {}", path.display(), reply.body);
                Ok(())
            }
            Err(Refusal::Reply(reply)) => {
                log::error!("SIGHUP: {} not accepted: {}", path.display(), reply.body);
                Ok(())
            }
            Err(Refusal::Fatal(exit)) => Err(exit),
        }
    }

    fn on_api(&mut self, call: ApiCall, now: Now) -> Result<(), Exit> {
        let ApiCall {
            request_id,
            request,
            reply,
        } = call;
        let _log = crate::logging::scope(None, Some(&request_id));
        let answer = match request {
            ApiRequest::PostSpec { spec, if_match } => {
                match self.accept_spec(spec, SpecSource::Http, Some(request_id), if_match, now) {
                    Ok(answer) => answer,
                    Err(Refusal::Reply(answer)) => answer,
                    Err(Refusal::Fatal(exit)) => {
                        let _ = reply.send(ApiReply::error(
                            503,
                            "the journal cannot be written: nothing was accepted",
                        ));
                        return Err(exit);
                    }
                }
            }
            ApiRequest::Configure { spec } => {
                let accepted =
                    self.accept_spec(spec, SpecSource::Http, Some(request_id), None, now);
                let generation = match accepted {
                    Ok(answer) => answer.body["generation"].as_u64().unwrap_or(0),
                    Err(Refusal::Reply(answer)) => {
                        // Neon answers 412 in a phase that takes no spec.
                        let answer = if answer.status == 409 {
                            ApiReply::error(
                                412,
                                format!("phase {} takes no spec", self.phase.name()),
                            )
                        } else {
                            answer
                        };
                        let _ = reply.send(answer);
                        return Ok(());
                    }
                    Err(Refusal::Fatal(exit)) => {
                        let _ = reply.send(ApiReply::error(500, "the journal cannot be written"));
                        return Err(exit);
                    }
                };
                self.configure_waiters.push((generation, reply));
                self.answer_waiters();
                return Ok(());
            }
            ApiRequest::Terminate { mode } => {
                if let Phase::Terminated(t) = &self.phase {
                    let _ = reply.send(ApiReply::new(200, json!({ "lsn": t.lsn })));
                    return Ok(());
                }
                self.terminate_mode.get_or_insert(mode);
                let origin = Origin {
                    request_id: Some(request_id),
                    source: Some("POST /terminate".into()),
                    ..Origin::default()
                };
                self.terminate_waiters.push(reply);
                // Refused only in `terminated`, answered above.
                self.handle(Event::Terminate { mode }, origin, now, Facts::default())?
                    .ok();
                return Ok(());
            }
            ApiRequest::Recover => {
                let origin = Origin {
                    request_id: Some(request_id),
                    source: Some("POST /recover".into()),
                    ..Origin::default()
                };
                match self.handle(Event::Recover, origin, now, Facts::default())? {
                    Ok(()) => ApiReply::new(200, json!({ "phase": self.phase.name() })),
                    Err(rejection) => ApiReply::error(409, rejection.to_string()),
                }
            }
        };
        let _ = reply.send(answer);
        Ok(())
    }

    /// The one path by which a spec becomes desired (checked against the Postgres binary
    /// already): checks the request, stores the spec file, journals
    /// `spec_accepted` with the transition it causes (one fsync), then answers.
    fn accept_spec(
        &mut self,
        spec: Arc<ParsedSpec>,
        source: SpecSource,
        request_id: Option<String>,
        if_match: Option<u64>,
        now: Now,
    ) -> Result<ApiReply, Refusal> {
        if let Some(id) = &request_id {
            if let Some(previous) = self.requests.get(id) {
                return Ok(accepted_reply(202, previous.generation, previous.seq));
            }
        }
        if !self.phase.name().takes_spec() {
            return Err(Refusal::Reply(ApiReply::error(
                409,
                Rejection::TakesNoSpec {
                    phase: self.phase.name(),
                }
                .to_string(),
            )));
        }
        let current = self.desired.as_ref().map(|d| d.generation).unwrap_or(0);
        if let Some(expected) = if_match {
            if expected != current {
                return Err(Refusal::Reply(ApiReply::error(
                    409,
                    format!("If-Match names generation {expected}, but the desired generation is {current}"),
                )));
            }
        }
        if let Some(desired) = &self.desired {
            if desired.spec.hash == spec.hash {
                return Ok(accepted_reply(200, desired.generation, desired.seq));
            }
        }
        let generation = current + 1;
        crate::journal::store_spec(&self.state_dir, spec.hash_hex(), &spec.canonical_json)
            .map_err(|e| {
                log::error!("cannot store spec {}: {e}", spec.hash);
                Refusal::Reply(ApiReply::error(
                    503,
                    format!("the spec cannot be stored: {e}"),
                ))
            })?;
        let accepted = RecordBody::SpecAccepted(SpecAcceptedRecord {
            generation,
            spec_hash: spec.hash.clone(),
            source,
            request_id: request_id.clone(),
            ignored_fields: spec.ignored_fields.clone(),
        });
        let origin = Origin {
            request_id: request_id.clone(),
            source: Some(source_name(source).into()),
            step: None,
        };
        let event = Event::SpecAccepted {
            spec: spec_ref(generation, &spec),
        };
        let first_seq = self.journal.last_seq() + 1;
        self.specs.insert(spec.hash.clone(), spec.clone());
        let facts = Facts {
            records: vec![accepted],
            desired: Some(Desired {
                generation,
                seq: first_seq,
                spec: spec.clone(),
            }),
        };
        match self.handle(event, origin, now, facts) {
            Ok(Ok(())) => {}
            Ok(Err(rejection)) => {
                return Err(Refusal::Reply(ApiReply::error(409, rejection.to_string())));
            }
            Err(exit) => return Err(Refusal::Fatal(exit)),
        }
        if let Some(id) = request_id {
            self.requests.insert(
                id,
                AcceptedRequest {
                    generation,
                    seq: first_seq,
                },
            );
        }
        // `handle` published the view with the new desired spec.
        Ok(accepted_reply(202, generation, first_seq))
    }

    /// The check against the Postgres binary for the specs that reach the driver unchecked
    /// (SIGHUP's file, the control plane's); HTTP and `-S` at start check theirs on the way in.
    fn check(&self, spec: ParsedSpec) -> Result<ParsedSpec, String> {
        let errors = (self.settings_check)(&spec);
        if errors.is_empty() {
            return Ok(spec);
        }
        Err(errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; "))
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
        let _log = crate::logging::scope(Some(step.as_str()), None);
        match &result {
            Ok(_) => log::info!("step {step} {id} finished in {duration_ms} ms"),
            Err(e) => log::warn!("step {step} {id} failed after {duration_ms} ms: {e}"),
        }
        if result.is_ok() {
            self.record_timing(step, duration_ms, now);
        }
        if matches!(step, StepName::FetchBasebackup | StepName::SyncSafekeepers) {
            self.progress = None;
        }
        let mut fetched = None;
        match extra {
            StepExtra::None => {}
            StepExtra::Applied { pending_restart } => self.pending_restart = pending_restart,
            StepExtra::Fetched(spec) => fetched = Some(*spec),
        }
        let finished = RecordBody::StepFinished(StepFinishedRecord {
            id,
            step,
            ok: result.is_ok(),
            duration_ms,
            output: step_finished_output(&result, detail),
            error: result.as_ref().err().cloned(),
        });
        let origin = Origin {
            step: Some(step),
            ..Origin::default()
        };
        let event = Event::StepFinished { id, result };
        match self.handle(event, origin, now, Facts::record(finished))? {
            Ok(()) => {}
            Err(rejection) => log::info!("step {step} {id} reported late: {rejection}"),
        }
        if let Some(fetched) = fetched {
            match fetched.and_then(|spec| self.check(spec)) {
                Ok(spec) => {
                    match self.accept_spec(
                        Arc::new(spec),
                        SpecSource::ControlPlane,
                        None,
                        None,
                        now,
                    ) {
                        Ok(_) | Err(Refusal::Reply(_)) => {}
                        Err(Refusal::Fatal(exit)) => return Err(exit),
                    }
                }
                Err(message) => log::error!("the control plane's spec is not accepted: {message}"),
            }
        }
        self.answer_waiters();
        Ok(())
    }

    fn record_timing(&mut self, step: StepName, duration_ms: u64, now: Now) {
        match step {
            StepName::SyncSafekeepers => self.startup.sync_safekeepers_ms = duration_ms,
            StepName::FetchBasebackup => self.startup.basebackup_ms = duration_ms,
            StepName::SpawnPostgres => self.startup.start_postgres_ms = duration_ms,
            StepName::ApplySpec if self.phase.ctx().applied.is_none() => {
                self.startup.config_ms = duration_ms;
                if let Some(began) = self.startup_began_ms {
                    self.startup.total_ms = now.mono_ms.saturating_sub(began);
                }
            }
            _ => {}
        }
    }

    /// Decides, journals, publishes, executes. `Ok(Err(rejection))`: the phase refused the
    /// event and nothing but `records` (facts that happened anyway) was journaled.
    fn handle(
        &mut self,
        event: Event,
        origin: Origin,
        now: Now,
        facts: Facts,
    ) -> Result<Result<(), Rejection>, Exit> {
        let Facts {
            mut records,
            desired,
        } = facts;
        let event_name = event.name();
        let event_error = match &event {
            Event::StepFinished {
                result: Err(error), ..
            } => Some(error.clone()),
            _ => None,
        };
        let before = self.phase.name();
        let before_attempt = self.phase.attempt();
        let next = match self.phase.clone().on_event(event, now) {
            Ok(next) => next,
            Err(rejected) => {
                // A finished step happened whatever the phase thinks of it; a spec the phase
                // refuses was never accepted.
                if desired.is_none() && !records.is_empty() {
                    self.append(records, now)?;
                    self.publish();
                }
                return Ok(Err(rejected.rejection));
            }
        };
        // Most ticks change nothing: nothing to write, publish or answer.
        if next.steps.is_empty()
            && records.is_empty()
            && desired.is_none()
            && next.phase == self.phase
        {
            return Ok(Ok(()));
        }
        let mut phase = next.phase;
        let cause = Cause {
            event: event_name,
            request_id: origin.request_id.clone(),
            step: origin.step,
            source: origin.source.clone(),
        };
        let mut from = (before, before_attempt, self.phase_since.mono_ms);
        if let Some(record) = self.transition_record(from, &phase, cause, event_error, now) {
            records.push(record);
            from = (phase.name(), phase.attempt(), now.mono_ms);
        }
        // Worker steps are handed over now: their intent is journaled with this input, and
        // the phase hears that they started.
        let mut specs_for_steps = HashMap::new();
        for step in &next.steps {
            let Some(id) = step.id() else { continue };
            records.push(RecordBody::StepStarted(StepStartedRecord {
                id,
                step: step.name(),
                generation: step.spec().map(|s| s.generation),
                detail: Some(step.to_string()),
            }));
            if let Some(spec_ref) = step.spec() {
                if let Some(spec) = self.specs.get(&spec_ref.hash) {
                    specs_for_steps.insert(id, spec.clone());
                }
            }
            match phase.clone().on_event(Event::StepStarted { id }, now) {
                Ok(started) => {
                    debug_assert!(started.steps.is_empty(), "step_started asked for steps");
                    let cause = Cause {
                        event: states::EventName::StepStarted,
                        request_id: origin.request_id.clone(),
                        step: Some(step.name()),
                        source: None,
                    };
                    if let Some(record) =
                        self.transition_record(from, &started.phase, cause, None, now)
                    {
                        records.push(record);
                        from = (started.phase.name(), started.phase.attempt(), now.mono_ms);
                    }
                    phase = started.phase;
                }
                Err(rejected) => log::error!(
                    "phase {} refused its own step {id}: {}",
                    phase.name(),
                    rejected.rejection
                ),
            }
        }
        self.append(records, now)?;
        if let Some(desired) = desired {
            self.desired = Some(desired);
        }
        if phase.name() != before {
            self.phase_since = now;
            self.on_phase_entered(&phase, now);
        }
        self.phase = phase;
        self.prune_specs();
        self.publish();
        self.execute(next.steps, &specs_for_steps);
        self.answer_waiters();
        Ok(Ok(()))
    }

    fn transition_record(
        &self,
        (from, from_attempt, since_ms): (PhaseName, u32, u64),
        to: &Phase,
        cause: Cause,
        event_error: Option<states::StepError>,
        now: Now,
    ) -> Option<RecordBody> {
        if to.name() == from && to.attempt() == from_attempt {
            return None;
        }
        let desired = to.ctx().desired.as_ref();
        Some(RecordBody::Transition(TransitionRecord {
            from,
            to: to.name(),
            cause,
            generation: desired.map(|d| d.generation),
            spec_hash: desired.map(|d| d.hash.clone()),
            attempt: to.attempt(),
            duration_ms: now.mono_ms.saturating_sub(since_ms),
            // The phase's own error, or the failure that caused this move.
            error: to.error().cloned().or(event_error),
        }))
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

    fn on_phase_entered(&mut self, phase: &Phase, now: Now) {
        log::info!("phase {}", phase.name());
        match phase.name() {
            PhaseName::Init => {
                self.startup = StartupTimes::default();
                self.startup_began_ms = Some(now.mono_ms);
                self.pending_restart.clear();
            }
            PhaseName::Running => {
                let port = self.desired.as_ref().map(|d| d.spec.port());
                let config = port.map(|p| self.executor.env().admin.config(p, None));
                self.monitor.watch(config);
            }
            // Asking a Postgres that shuts down only fills its log with refusals.
            PhaseName::Terminating | PhaseName::Terminated => self.monitor.watch(None),
            PhaseName::Failed if phase.postmaster().is_none() => self.monitor.watch(None),
            _ => {}
        }
    }

    /// Keeps only the specs the phase may still need: desired, applied, and the one being
    /// built or applied.
    fn prune_specs(&mut self) {
        let ctx = self.phase.ctx();
        let keep: Vec<&str> = [
            ctx.desired.as_ref(),
            ctx.applied.as_ref(),
            self.phase.target(),
        ]
        .into_iter()
        .flatten()
        .map(|s| s.hash.as_str())
        .collect();
        self.specs.retain(|hash, _| keep.contains(&hash.as_str()));
    }

    fn execute(&mut self, steps: Vec<Step>, specs: &HashMap<states::StepId, Arc<ParsedSpec>>) {
        for step in steps {
            match &step {
                Step::CancelSteps => self.executor.cancel_all(),
                Step::StartSidecar => self.executor.start_sidecar(),
                Step::StopSidecar => self.executor.stop_sidecar(),
                Step::Exit { reason } => {
                    let code = reason.code();
                    log::info!("exiting with code {code} ({reason:?})");
                    self.exit = Some(Exit::Code(code));
                }
                Step::InitPgdata { id, .. }
                | Step::SyncSafekeepers { id, .. }
                | Step::FetchBasebackup { id, .. }
                | Step::SpawnPostgres { id, .. }
                | Step::ApplySpec { id, .. }
                | Step::StopPostgres { id, .. }
                | Step::FetchSpec { id } => {
                    let spec = specs.get(id).cloned();
                    if step.spec().is_some() && spec.is_none() {
                        log::error!("no stored spec for step {step}");
                    }
                    self.executor.submit(step, spec);
                }
            }
        }
    }

    /// Answers `POST /terminate` once terminated, `POST /configure` once running or failed.
    fn answer_waiters(&mut self) {
        if let Phase::Terminated(terminated) = &self.phase {
            for waiter in self.terminate_waiters.drain(..) {
                let _ = waiter.send(ApiReply::new(200, json!({ "lsn": terminated.lsn })));
            }
        }
        if self.configure_waiters.is_empty() {
            return;
        }
        let applied = self.phase.ctx().applied.as_ref().map(|s| s.generation);
        let name = self.phase.name();
        let error = self.phase.error().map(|e| e.to_string());
        let status = self.neon_status();
        self.configure_waiters.retain(|(generation, reply)| {
            let answer = match name {
                PhaseName::Running if applied >= Some(*generation) => {
                    ApiReply::new(200, status.clone())
                }
                PhaseName::Failed | PhaseName::Terminating | PhaseName::Terminated => {
                    ApiReply::error(
                        500,
                        error
                            .clone()
                            .unwrap_or_else(|| format!("the compute is {name}")),
                    )
                }
                _ => return true,
            };
            let _ = reply.send(answer);
            false
        });
    }

    fn neon_status(&self) -> serde_json::Value {
        crate::http::neon::status_body(&self.view())
    }

    fn view(&self) -> StateView {
        let ctx = self.phase.ctx();
        let desired_spec = self.desired.as_ref().map(|d| &d.spec);
        StateView {
            phase: self.phase.name(),
            phase_since: rfc3339_ms(self.phase_since.wall_ms),
            epoch: self.journal.epoch(),
            seq: self.journal.last_seq(),
            desired_generation: ctx.desired.as_ref().map(|s| s.generation),
            applied_generation: ctx.applied.as_ref().map(|s| s.generation),
            spec_hash: ctx.desired.as_ref().map(|s| s.hash.clone()),
            postmaster_pid: self.phase.postmaster(),
            last_active: self.last_active_ms.map(rfc3339_ms),
            attempt: self.phase.attempt(),
            error: self.phase.error().cloned(),
            pending_restart: self.pending_restart.clone(),
            startup: self.startup.clone(),
            progress: self.progress.clone(),
            storage: desired_spec.map(|s| s.storage.kind().to_string()),
            sidecar: self.sidecar.clone(),
            start_time: self.start_time.clone(),
            tenant: desired_spec.and_then(|s| s.storage.tenant_id().map(str::to_string)),
            timeline: desired_spec.and_then(|s| s.storage.timeline_id().map(str::to_string)),
            terminate_mode: self.terminate_mode,
        }
    }

    fn publish(&self) {
        let view = self.view();
        crate::notify::published(&view);
        crate::logging::published(&view);
        self.published.publish(view);
    }
}

/// A spec request that was not accepted: the answer, or a journal failure that ends the
/// process.
enum Refusal {
    Reply(ApiReply),
    Fatal(Exit),
}

/// `step_finished.output`: the step's result (`{"result": "postgres_started", "pid": …}`) and
/// the facts it reported, under `detail`.
fn step_finished_output(
    result: &Result<StepOutput, states::StepError>,
    detail: Option<serde_json::Value>,
) -> Option<serde_json::Value> {
    let mut output = match result {
        Ok(output) => serde_json::to_value(output).unwrap_or_else(|_| json!({})),
        Err(_) => json!({}),
    };
    if let (Some(object), Some(detail)) = (output.as_object_mut(), detail) {
        object.insert("detail".into(), detail);
    }
    output
        .as_object()
        .is_some_and(|o| !o.is_empty())
        .then_some(output)
}

fn accepted_reply(status: u16, generation: u64, seq: u64) -> ApiReply {
    ApiReply::new(status, json!({ "generation": generation, "seq": seq }))
}

fn spec_ref(generation: u64, spec: &ParsedSpec) -> SpecRef {
    SpecRef {
        generation,
        hash: spec.hash.clone(),
    }
}

fn source_name(source: SpecSource) -> &'static str {
    match source {
        SpecSource::File => "-S file",
        SpecSource::Reload => "SIGHUP: -S file re-read",
        SpecSource::Http => "HTTP",
        SpecSource::ControlPlane => "control plane",
    }
}
