//! The eleven phases of a compute, one file each, and the `Phase` enum that dispatches to them.
//!
//! Every phase handles every event in an exhaustive `match` without a wildcard arm: adding an
//! event or a phase does not compile until each pair is decided.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::admission::{self, Recalled, RequestLog, SpecAnswer, SpecOffer, Verdict};
use crate::error::{ErrorKind, Rejection, StepError};
use crate::event::Event;
use crate::spec_ref::SpecRef;
use crate::step::{ExitReason, ShutdownMode, Step, StepId, StepName};
use crate::time::Now;

mod basebackup;
mod configuration_pending;
mod configuring;
mod empty;
mod failed;
mod init;
mod running;
mod starting;
mod startup;
mod sync_safekeepers;
mod terminated;
mod terminating;

pub use basebackup::Basebackup;
pub use configuration_pending::ConfigurationPending;
pub use configuring::Configuring;
pub use empty::{Empty, Preparation, SpecFetch};
pub use failed::Failed;
pub use init::Init;
pub use running::Running;
pub use starting::Starting;
pub use startup::Startup;
pub use sync_safekeepers::SyncSafekeepers;
pub use terminated::Terminated;
pub use terminating::Terminating;

/// A phase's reaction to an event: given the event and the time, the next phase and the steps
/// it needs, as data. Implementations perform no I/O.
pub trait Transition: Sized {
    fn on_event(self, event: Event, now: Now) -> Result<Next, Rejected>;
}

/// The outcome of an accepted event: the phase after it (possibly the same phase with new
/// data), the steps to hand to the executor, in order, and for an offered spec the answer its
/// sender gets once the outcome is durable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Next {
    pub phase: Phase,
    pub steps: Vec<Step>,
    pub answer: Option<SpecAnswer>,
}

impl Next {
    pub fn stay(phase: impl Into<Phase>) -> Next {
        Next::to(phase, Vec::new())
    }

    pub fn to(phase: impl Into<Phase>, steps: Vec<Step>) -> Next {
        Next {
            phase: phase.into(),
            steps,
            answer: None,
        }
    }
}

/// An event the phase refuses; the phase comes back unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejected {
    /// The phase, unchanged (boxed: the refusal path stays cheap to return).
    pub phase: Box<Phase>,
    pub rejection: Rejection,
}

impl Rejected {
    pub fn new(phase: impl Into<Phase>, rejection: Rejection) -> Rejected {
        Rejected {
            phase: Box::new(phase.into()),
            rejection,
        }
    }
}

/// Limits and delays the core applies; the driver builds it from the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// How long `failed` keeps serving before the process exits (`--failed-linger`).
    pub failed_linger_ms: u64,
    /// How many times a start-up step with a retryable error is tried in all.
    pub step_attempts_max: u32,
    /// The delay before the second attempt; it doubles with each attempt after.
    pub retry_backoff_ms_min: u64,
    /// The longest delay between two attempts.
    pub retry_backoff_ms_max: u64,
    /// Whether a drift seen in `running` is repaired by applying the desired spec again
    /// (`--drift repair`), or only reported (`--drift report`).
    pub drift_repair: bool,
    /// The drift check's interval (`--drift-interval`): also the least time between two
    /// repairs.
    pub drift_interval_ms: u64,
    /// `--prepare`: prepare a cluster in `empty` while no spec is known.
    pub prepare: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            failed_linger_ms: 30_000,
            step_attempts_max: 5,
            retry_backoff_ms_min: 200,
            retry_backoff_ms_max: 10_000,
            drift_repair: false,
            drift_interval_ms: 30_000,
            prepare: false,
        }
    }
}

impl Policy {
    /// The delay after failed attempt number `attempt` (1-based): exponential, capped.
    pub fn backoff_ms(&self, attempt: u32) -> u64 {
        let doublings = attempt.saturating_sub(1).min(32);
        self.retry_backoff_ms_min
            .saturating_mul(1u64 << doublings)
            .min(self.retry_backoff_ms_max)
    }
}

/// What every phase knows besides its own data: the desired and applied specs, the policy,
/// and the counter that names steps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ctx {
    pub policy: Policy,
    /// The newest durably accepted spec: what the compute must end up running.
    pub desired: Option<SpecRef>,
    /// The seq of the desired spec's `spec_accepted` record (0 while none is desired).
    pub desired_seq: u64,
    /// The spec the running Postgres was last confirmed to run; `None` until the first apply
    /// of this process run.
    pub applied: Option<SpecRef>,
    /// The requests whose spec was accepted, for retries with the same request id.
    pub requests: RequestLog,
    /// The spec an earlier run's postmaster was last confirmed to run, if the journal says
    /// it may still serve: the first start of this run tries to adopt it.
    pub adoptable: Option<SpecRef>,
    /// The attempt each start-up phase reached in an earlier, interrupted run, for the
    /// generation named: the count goes on, so a crash loop does not reset a step's budget.
    pub resumed: Option<(u64, Vec<(PhaseName, u32)>)>,
    /// What the drift repairs so far were for.
    pub drift: DriftMemory,
    /// The last step id handed out.
    last_step_id: u64,
}

/// What `running` remembers of drift repairs, so that a drift is repaired at most once per
/// interval and a drift that a repair did not remove is reported, not repaired in a loop.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftMemory {
    /// When the last repair began (monotonic).
    pub last_repair_ms: Option<u64>,
    /// The drift (fingerprint) the last repair was for, until a check sees no drift.
    pub repaired: Option<u64>,
    /// The drift a repair did not remove: reported, not repaired again.
    pub unrepaired: Option<u64>,
}

/// What `running` does with a drift check's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftVerdict {
    /// No drift: the memory of repairs is cleared.
    Clear,
    /// Reported only: `--drift report`, or a repair was made less than an interval ago.
    Report,
    /// Apply the desired spec again.
    Repair,
    /// A repair was made for this very drift and it remains: reported as such, once.
    NotRemoved,
    /// Already known as not removed by a repair.
    StillNotRemoved,
}

impl Ctx {
    /// The verdict on a drift check that found `found` at `now`; a pure function of the
    /// policy and the memory, also asked by the driver to journal what it will do.
    pub fn drift_verdict(&self, found: Option<u64>, now: Now) -> DriftVerdict {
        let Some(found) = found else {
            return DriftVerdict::Clear;
        };
        if !self.policy.drift_repair {
            return DriftVerdict::Report;
        }
        if self.drift.unrepaired == Some(found) {
            return DriftVerdict::StillNotRemoved;
        }
        if self.drift.repaired == Some(found) {
            return DriftVerdict::NotRemoved;
        }
        let due = self
            .drift
            .last_repair_ms
            .is_none_or(|at| now.mono_ms >= at.saturating_add(self.policy.drift_interval_ms));
        if due {
            DriftVerdict::Repair
        } else {
            DriftVerdict::Report
        }
    }
}

impl Ctx {
    pub fn new(policy: Policy) -> Ctx {
        Ctx {
            policy,
            desired: None,
            desired_seq: 0,
            applied: None,
            requests: RequestLog::default(),
            adoptable: None,
            resumed: None,
            drift: DriftMemory::default(),
            last_step_id: 0,
        }
    }

    /// The first run of start-up phase `phase`'s step `id` for `generation`: attempt 1, or
    /// the one after an earlier run's interrupted attempt (taken once).
    pub(crate) fn first_run(&mut self, phase: PhaseName, id: StepId, generation: u64) -> StepRun {
        let mut run = StepRun::first(id);
        if let Some((resumed_generation, attempts)) = &mut self.resumed {
            if *resumed_generation == generation {
                if let Some(at) = attempts.iter().position(|(p, _)| *p == phase) {
                    let (_, attempt) = attempts.remove(at);
                    run.attempt = attempt.saturating_add(1);
                }
            }
        }
        run
    }

    /// A fresh id for a worker step.
    pub(crate) fn next_step_id(&mut self) -> StepId {
        self.last_step_id += 1;
        StepId(self.last_step_id)
    }

    /// Takes `spec` as the desired spec. Generations only grow: an older one is a defect in
    /// the driver, and is kept out rather than trusted.
    pub(crate) fn accept(&mut self, spec: SpecRef) {
        let newer = self
            .desired
            .as_ref()
            .is_none_or(|d| spec.generation >= d.generation);
        debug_assert!(newer, "spec {spec} is older than the desired one");
        if newer {
            self.desired = Some(spec);
        }
    }
}

/// A start-up step's progress within its phase: the attempt in flight, or the wait before
/// the next one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRun {
    /// 1 for the first try.
    pub attempt: u32,
    /// The step in flight; `None` while waiting for `retry_at_ms`.
    pub in_flight: Option<StepId>,
    /// When the next attempt begins.
    pub retry_at_ms: Option<u64>,
    /// Why the previous attempt failed.
    pub last_error: Option<StepError>,
}

impl StepRun {
    pub(crate) fn first(id: StepId) -> StepRun {
        StepRun {
            attempt: 1,
            in_flight: Some(id),
            retry_at_ms: None,
            last_error: None,
        }
    }

    pub(crate) fn is_in_flight(&self, id: StepId) -> bool {
        self.in_flight == Some(id)
    }

    /// After a failed attempt: wait, then try again, if the error is worth it and attempts
    /// remain. `None` means give up.
    pub(crate) fn retry_after(
        &self,
        error: StepError,
        policy: &Policy,
        now: Now,
    ) -> Option<StepRun> {
        if !error.retryable || self.attempt >= policy.step_attempts_max {
            return None;
        }
        Some(StepRun {
            attempt: self.attempt + 1,
            in_flight: None,
            retry_at_ms: Some(now.mono_ms.saturating_add(policy.backoff_ms(self.attempt))),
            last_error: Some(error),
        })
    }

    /// On a tick: whether the wait is over, and so the next attempt starts now.
    pub(crate) fn due(&self, now: Now) -> bool {
        self.in_flight.is_none() && self.retry_at_ms.is_some_and(|at| now.mono_ms >= at)
    }

    pub(crate) fn start(&mut self, id: StepId) {
        self.in_flight = Some(id);
        self.retry_at_ms = None;
    }
}

/// The name of a phase, as in the JSON of the HTTP API and the journal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseName {
    Empty,
    Init,
    SyncSafekeepers,
    Basebackup,
    Starting,
    Configuring,
    ConfigurationPending,
    Running,
    Failed,
    Terminating,
    Terminated,
}

impl PhaseName {
    pub const ALL: [PhaseName; 11] = [
        PhaseName::Empty,
        PhaseName::Init,
        PhaseName::SyncSafekeepers,
        PhaseName::Basebackup,
        PhaseName::Starting,
        PhaseName::Configuring,
        PhaseName::ConfigurationPending,
        PhaseName::Running,
        PhaseName::Failed,
        PhaseName::Terminating,
        PhaseName::Terminated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PhaseName::Empty => "empty",
            PhaseName::Init => "init",
            PhaseName::SyncSafekeepers => "sync_safekeepers",
            PhaseName::Basebackup => "basebackup",
            PhaseName::Starting => "starting",
            PhaseName::Configuring => "configuring",
            PhaseName::ConfigurationPending => "configuration_pending",
            PhaseName::Running => "running",
            PhaseName::Failed => "failed",
            PhaseName::Terminating => "terminating",
            PhaseName::Terminated => "terminated",
        }
    }
}

impl fmt::Display for PhaseName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The lifecycle position of the compute; only the driver holds one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    Empty(Empty),
    Init(Init),
    SyncSafekeepers(SyncSafekeepers),
    Basebackup(Basebackup),
    Starting(Starting),
    Configuring(Configuring),
    ConfigurationPending(ConfigurationPending),
    Running(Running),
    Failed(Failed),
    Terminating(Terminating),
    Terminated(Terminated),
}

impl Phase {
    /// The first phase of a process run: `empty`, asking the control plane for a spec when
    /// there is one to ask (`fetch_spec`), and knowing the requests the journal says were
    /// accepted. The driver then feeds the journal's desired spec as `SpecAccepted`, and offers
    /// the spec file's, if it has them.
    pub fn boot(policy: Policy, fetch_spec: bool, recalled: Recalled) -> Next {
        let mut ctx = Ctx::new(policy);
        ctx.requests = recalled.requests;
        ctx.adoptable = recalled.adoptable;
        ctx.resumed = recalled.resumed;
        if let Some((spec, seq)) = recalled.desired {
            ctx.desired = Some(spec);
            ctx.desired_seq = seq;
        }
        Empty::boot(ctx, fetch_spec)
    }

    pub fn name(&self) -> PhaseName {
        match self {
            Phase::Empty(_) => PhaseName::Empty,
            Phase::Init(_) => PhaseName::Init,
            Phase::SyncSafekeepers(_) => PhaseName::SyncSafekeepers,
            Phase::Basebackup(_) => PhaseName::Basebackup,
            Phase::Starting(_) => PhaseName::Starting,
            Phase::Configuring(_) => PhaseName::Configuring,
            Phase::ConfigurationPending(_) => PhaseName::ConfigurationPending,
            Phase::Running(_) => PhaseName::Running,
            Phase::Failed(_) => PhaseName::Failed,
            Phase::Terminating(_) => PhaseName::Terminating,
            Phase::Terminated(_) => PhaseName::Terminated,
        }
    }

    fn ctx_mut(&mut self) -> &mut Ctx {
        match self {
            Phase::Empty(p) => &mut p.ctx,
            Phase::Init(p) => &mut p.startup.ctx,
            Phase::SyncSafekeepers(p) => &mut p.startup.ctx,
            Phase::Basebackup(p) => &mut p.startup.ctx,
            Phase::Starting(p) => &mut p.startup.ctx,
            Phase::Configuring(p) => &mut p.ctx,
            Phase::ConfigurationPending(p) => &mut p.ctx,
            Phase::Running(p) => &mut p.ctx,
            Phase::Failed(p) => &mut p.ctx,
            Phase::Terminating(p) => &mut p.ctx,
            Phase::Terminated(p) => &mut p.ctx,
        }
    }

    pub fn ctx(&self) -> &Ctx {
        match self {
            Phase::Empty(p) => &p.ctx,
            Phase::Init(p) => &p.startup.ctx,
            Phase::SyncSafekeepers(p) => &p.startup.ctx,
            Phase::Basebackup(p) => &p.startup.ctx,
            Phase::Starting(p) => &p.startup.ctx,
            Phase::Configuring(p) => &p.ctx,
            Phase::ConfigurationPending(p) => &p.ctx,
            Phase::Running(p) => &p.ctx,
            Phase::Failed(p) => &p.ctx,
            Phase::Terminating(p) => &p.ctx,
            Phase::Terminated(p) => &p.ctx,
        }
    }

    /// The start-up step's retry state, in the phases that retry.
    fn step_run(&self) -> Option<&StepRun> {
        match self {
            Phase::Empty(p) => match (&p.fetch, &p.prepare) {
                (SpecFetch::Fetching(run), _) => Some(run),
                (_, Preparation::Preparing(run)) => Some(run),
                (
                    SpecFetch::Off | SpecFetch::NoSpecYet | SpecFetch::Received,
                    Preparation::Off
                    | Preparation::Wanted
                    | Preparation::Ready
                    | Preparation::GaveUp,
                ) => None,
            },
            Phase::Init(p) => Some(&p.startup.run),
            Phase::SyncSafekeepers(p) => Some(&p.startup.run),
            Phase::Basebackup(p) => Some(&p.startup.run),
            Phase::Starting(p) => Some(&p.startup.run),
            Phase::Configuring(_)
            | Phase::ConfigurationPending(_)
            | Phase::Running(_)
            | Phase::Failed(_)
            | Phase::Terminating(_)
            | Phase::Terminated(_) => None,
        }
    }

    /// Whether a `--prepare` cluster is ready (`Some(true)`) or being prepared (`Some(false)`)
    /// in `empty`; `None` where there is none to show.
    pub fn prepared(&self) -> Option<bool> {
        match self {
            Phase::Empty(p) => match &p.prepare {
                Preparation::Ready => Some(true),
                Preparation::Wanted | Preparation::Preparing(_) => Some(false),
                Preparation::Off | Preparation::GaveUp => None,
            },
            Phase::Init(_)
            | Phase::SyncSafekeepers(_)
            | Phase::Basebackup(_)
            | Phase::Starting(_)
            | Phase::Configuring(_)
            | Phase::ConfigurationPending(_)
            | Phase::Running(_)
            | Phase::Failed(_)
            | Phase::Terminating(_)
            | Phase::Terminated(_) => None,
        }
    }

    /// Which attempt of the phase's step this is (1 where nothing is retried).
    pub fn attempt(&self) -> u32 {
        self.step_run().map_or(1, |run| run.attempt)
    }

    /// The error to show: the failure of `failed`, or the last failed attempt of a step
    /// that is being retried.
    pub fn error(&self) -> Option<&StepError> {
        match self {
            Phase::Failed(p) => Some(&p.error),
            _ => self.step_run().and_then(|run| run.last_error.as_ref()),
        }
    }

    /// The pid of the postmaster this phase knows to be running.
    pub fn postmaster(&self) -> Option<u32> {
        match self {
            Phase::Configuring(p) => Some(p.postmaster),
            Phase::ConfigurationPending(p) => Some(p.postmaster),
            Phase::Running(p) => Some(p.postmaster),
            Phase::Failed(p) => p.postmaster,
            Phase::Terminating(p) => p.postmaster,
            Phase::Empty(_)
            | Phase::Init(_)
            | Phase::SyncSafekeepers(_)
            | Phase::Basebackup(_)
            | Phase::Starting(_)
            | Phase::Terminated(_) => None,
        }
    }

    /// The spec this phase builds or applies (start-up phases, `configuring`,
    /// `configuration_pending`); the driver keeps it until the phase moves on.
    pub fn target(&self) -> Option<&SpecRef> {
        match self {
            Phase::Init(p) => Some(&p.startup.target),
            Phase::SyncSafekeepers(p) => Some(&p.startup.target),
            Phase::Basebackup(p) => Some(&p.startup.target),
            Phase::Starting(p) => Some(&p.startup.target),
            Phase::Configuring(p) => Some(&p.target),
            Phase::ConfigurationPending(p) => Some(&p.target),
            Phase::Empty(_)
            | Phase::Running(_)
            | Phase::Failed(_)
            | Phase::Terminating(_)
            | Phase::Terminated(_) => None,
        }
    }

    /// The worker step this phase waits for, if any.
    pub fn in_flight(&self) -> Option<StepId> {
        match self {
            Phase::Configuring(p) => Some(p.in_flight),
            Phase::ConfigurationPending(p) => Some(p.in_flight),
            Phase::Terminating(p) => Some(p.in_flight),
            _ => self.step_run().and_then(|run| run.in_flight),
        }
    }

    /// The monotonic time at which this phase wants a `Tick` even if nothing else happens:
    /// the next retry, or the end of `failed`'s linger.
    pub fn deadline_ms(&self) -> Option<u64> {
        match self {
            // Only a compute whose Postgres is gone lingers and exits; a failed
            // reconfiguration keeps serving until a new spec, a recover or a terminate.
            Phase::Failed(p) if p.postmaster.is_none() => Some(p.linger_until_ms()),
            Phase::Failed(_) => None,
            _ => self.step_run().and_then(|run| run.retry_at_ms),
        }
    }

    /// Checks the invariants that must hold between any two events. Returns the first one
    /// broken, described; the driver treats it as a defect.
    pub fn check_invariants(&self) -> Result<(), String> {
        let ctx = self.ctx();
        let desired = ctx.desired.as_ref().map(|s| s.generation);
        let applied = ctx.applied.as_ref().map(|s| s.generation);
        if applied > desired {
            return Err(format!(
                "applied generation {applied:?} exceeds desired {desired:?}"
            ));
        }
        let needs_spec = !matches!(
            self,
            Phase::Empty(_) | Phase::Terminating(_) | Phase::Terminated(_)
        );
        if needs_spec && desired.is_none() {
            return Err(format!("phase {} has no desired spec", self.name()));
        }
        match self {
            Phase::Running(_) if applied != desired => Err(format!(
                "running with applied generation {applied:?} but desired {desired:?}"
            )),
            Phase::ConfigurationPending(p) if applied >= desired && !p.repair => Err(format!(
                "configuration pending with nothing new: applied {applied:?}, desired {desired:?}"
            )),
            _ => {
                if let Some(run) = self.step_run() {
                    if run.in_flight.is_some() == run.retry_at_ms.is_some() {
                        return Err(format!(
                            "phase {} must have exactly one of a step in flight and a retry time",
                            self.name()
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

impl Transition for Phase {
    fn on_event(self, event: Event, now: Now) -> Result<Next, Rejected> {
        match self {
            Phase::Empty(p) => p.on_event(event, now),
            Phase::Init(p) => p.on_event(event, now),
            Phase::SyncSafekeepers(p) => p.on_event(event, now),
            Phase::Basebackup(p) => p.on_event(event, now),
            Phase::Starting(p) => p.on_event(event, now),
            Phase::Configuring(p) => p.on_event(event, now),
            Phase::ConfigurationPending(p) => p.on_event(event, now),
            Phase::Running(p) => p.on_event(event, now),
            Phase::Failed(p) => p.on_event(event, now),
            Phase::Terminating(p) => p.on_event(event, now),
            Phase::Terminated(p) => p.on_event(event, now),
        }
    }
}

/// `SpecOffered` in a phase that takes specs: the shared admission rules, then, for a new
/// generation, the phase's own `SpecAccepted`.
pub(crate) fn take_offer(
    phase: impl Into<Phase>,
    offer: SpecOffer,
    now: Now,
) -> Result<Next, Rejected> {
    let phase: Phase = phase.into();
    let name = phase.name();
    take_offer_with(phase, name, Phase::ctx, offer, now, |phase, spec, now| {
        phase.on_event(Event::SpecAccepted { spec }, now)
    })
}

/// `take_offer`, with the phase's own reaction to the accepted spec (`empty` also heeds the
/// offer's storage): `phase` is named `name`, and `ctx_of` finds its `Ctx`.
pub(crate) fn take_offer_with<P: Into<Phase>>(
    phase: P,
    name: PhaseName,
    ctx_of: fn(&P) -> &Ctx,
    offer: SpecOffer,
    now: Now,
    accept: impl FnOnce(P, SpecRef, Now) -> Result<Next, Rejected>,
) -> Result<Next, Rejected> {
    match admission::judge(ctx_of(&phase), &offer, name) {
        Verdict::Answer(answer) => Ok(Next {
            answer: Some(answer),
            ..Next::stay(phase)
        }),
        Verdict::Refuse(rejection) => Err(Rejected::new(phase, rejection)),
        Verdict::Accept(spec) => {
            let generation = spec.generation;
            let mut next = accept(phase, spec, now)?;
            let answer = admission::remember(next.phase.ctx_mut(), offer, generation);
            next.answer = Some(answer);
            Ok(next)
        }
    }
}

/// `SpecOffered` in a phase that takes no spec (`terminating`, `terminated`): a retried
/// request still gets its first answer; anything else is refused.
pub(crate) fn refuse_offer(phase: impl Into<Phase>, offer: SpecOffer) -> Result<Next, Rejected> {
    let phase: Phase = phase.into();
    let name = phase.name();
    let retried = offer
        .request_id
        .as_deref()
        .and_then(|id| phase.ctx().requests.get(id));
    match retried {
        Some(at) => Ok(Next {
            answer: Some(SpecAnswer::Repeated {
                generation: at.generation,
                seq: at.seq,
            }),
            ..Next::stay(phase)
        }),
        None => Err(Rejected::new(phase, Rejection::TakesNoSpec { phase: name })),
    }
}

/// Every path to `terminating`: cancel whatever runs, stop the sidecar, stop Postgres.
pub(crate) fn terminate(
    mut ctx: Ctx,
    postmaster: Option<u32>,
    mode: ShutdownMode,
    reason: ExitReason,
) -> Next {
    let id = ctx.next_step_id();
    Next::to(
        Terminating {
            ctx,
            postmaster,
            mode,
            reason,
            in_flight: id,
        },
        vec![
            Step::CancelSteps,
            Step::StopSidecar,
            Step::StopPostgres { id, mode },
        ],
    )
}

/// Every path to `failed`. `postmaster` is the Postgres that keeps serving, if any.
pub(crate) fn fail(
    ctx: Ctx,
    error: StepError,
    postmaster: Option<u32>,
    now: Now,
    steps: Vec<Step>,
) -> Next {
    Next::to(
        Failed {
            ctx,
            error,
            postmaster,
            since_ms: now.mono_ms,
        },
        steps,
    )
}

/// The postmaster exited without compute_ctl asking, while it served: an orderly shutdown
/// from outside ends the process at once (`terminating`, whose stop finds Postgres gone,
/// then exit 0); any other exit is a failure, with `steps` (`failed`, lingering, exit 10).
pub(crate) fn postmaster_gone(
    ctx: Ctx,
    phase: PhaseName,
    status: crate::event::ExitStatus,
    shut_down: bool,
    now: Now,
    steps: Vec<Step>,
) -> Next {
    if crate::event::stopped_from_outside(status, shut_down) {
        return terminate(
            ctx,
            None,
            ShutdownMode::Fast,
            ExitReason::StoppedFromOutside,
        );
    }
    fail(ctx, postmaster_exited(phase, status), None, now, steps)
}

/// The error of a postmaster that exited on its own.
pub(crate) fn postmaster_exited(phase: PhaseName, status: crate::event::ExitStatus) -> StepError {
    StepError::new(
        phase,
        StepName::Monitor,
        ErrorKind::PostmasterExited,
        format!("postgres exited unexpectedly with {status}"),
    )
}

/// Start over from `init` for the desired spec (Postgres is gone).
pub(crate) fn start_over(mut ctx: Ctx, target: SpecRef) -> Next {
    let id = ctx.next_step_id();
    ctx.applied = None;
    let step = Step::InitPgdata {
        id,
        spec: target.clone(),
    };
    let run = ctx.first_run(PhaseName::Init, id, target.generation);
    let startup = Startup { ctx, target, run };
    let init = Init {
        startup,
        adopting: None,
        prepared: None,
    };
    Next::to(init, vec![step])
}

/// Apply the desired spec to the Postgres that serves (`configuration_pending`).
pub(crate) fn reconfigure(ctx: Ctx, postmaster: u32, target: SpecRef) -> Next {
    pending(ctx, postmaster, target, false)
}

/// Apply the applied (and desired) spec again to the Postgres that serves: a drift repair.
pub(crate) fn repair(ctx: Ctx, postmaster: u32, target: SpecRef) -> Next {
    pending(ctx, postmaster, target, true)
}

fn pending(mut ctx: Ctx, postmaster: u32, target: SpecRef, repair: bool) -> Next {
    let id = ctx.next_step_id();
    Next::to(
        ConfigurationPending {
            ctx,
            postmaster,
            target: target.clone(),
            in_flight: id,
            repair,
        },
        vec![Step::ApplySpec {
            id,
            spec: target,
            first_start: false,
        }],
    )
}

/// Each phase's data converts into the `Phase` that holds it.
macro_rules! into_phase {
    ($($name:ident),* $(,)?) => {
        $(impl From<$name> for Phase {
            fn from(phase: $name) -> Phase {
                Phase::$name(phase)
            }
        })*
    };
}

into_phase!(
    Empty,
    Init,
    SyncSafekeepers,
    Basebackup,
    Starting,
    Configuring,
    ConfigurationPending,
    Running,
    Failed,
    Terminating,
    Terminated,
);
