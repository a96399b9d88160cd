//! A seeded random simulation: a model of the driver and executor feeds the machine random,
//! realistic events (steps that succeed, fail, report late; specs, ticks, postmaster deaths,
//! terminates, recovers) and checks the invariants after each one. A failure prints the seed.

use std::collections::VecDeque;

use states::{
    ErrorKind, Event, ExitStatus, Now, Phase, PhaseName, Policy, ShutdownMode, SpecRef, Step,
    StepError, StepId, StepOutput, Transition,
};

/// splitmix64: small, seedable, and good enough to explore interleavings.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A worker step waiting in the model executor's queue.
struct Queued {
    id: StepId,
    step: Step,
    cancelled: bool,
}

/// The model of everything outside the core.
struct World {
    rng: Rng,
    now: Now,
    queue: VecDeque<Queued>,
    /// Whether a postmaster process exists in the model.
    postmaster_alive: bool,
    next_pid: u32,
    generation: u64,
}

impl World {
    fn spec(&mut self) -> SpecRef {
        self.generation += 1;
        SpecRef {
            generation: self.generation,
            hash: format!("sha256:{:064x}", self.generation),
        }
    }

    /// Hands steps over as the driver does: worker steps are queued and reported started at
    /// once; `cancel_steps` marks everything queued as cancelled.
    fn take_steps(&mut self, steps: &[Step]) -> Vec<Event> {
        let mut started = Vec::new();
        for step in steps {
            match step.id() {
                Some(id) => {
                    self.queue.push_back(Queued {
                        id,
                        step: step.clone(),
                        cancelled: false,
                    });
                    started.push(Event::StepStarted { id });
                }
                None => {
                    if matches!(step, Step::CancelSteps) {
                        for queued in &mut self.queue {
                            // A stop requested together with the cancel is not cancelled.
                            if !matches!(queued.step, Step::StopPostgres { .. }) {
                                queued.cancelled = true;
                            }
                        }
                    }
                }
            }
        }
        started
    }

    /// The result the executor reports for the step at the head of the queue.
    fn finish_head(&mut self, phase: PhaseName) -> Option<Event> {
        let queued = self.queue.pop_front()?;
        let error = |kind| StepError::new(phase, queued.step.name(), kind, "simulated");
        let result = if queued.cancelled {
            Err(error(ErrorKind::Cancelled))
        } else if self.rng.chance(12) {
            let kind = if self.rng.chance(50) {
                ErrorKind::Storage
            } else {
                ErrorKind::Postgres
            };
            Err(error(kind))
        } else {
            Ok(match &queued.step {
                // The simulation boots without a journal: nothing to adopt.
                Step::AdoptPostgres { .. } => StepOutput::NotAdopted,
                Step::InitPgdata { .. } => StepOutput::PgdataReady,
                Step::SyncSafekeepers { .. } => StepOutput::SafekeepersSynced { lsn: None },
                Step::FetchBasebackup { .. } => StepOutput::BasebackupDone,
                Step::SpawnPostgres { .. } => {
                    self.postmaster_alive = true;
                    self.next_pid += 1;
                    StepOutput::PostgresStarted { pid: self.next_pid }
                }
                Step::ApplySpec { .. } | Step::PromotePostgres { .. } => StepOutput::SpecApplied,
                Step::StopPostgres { .. } => {
                    self.postmaster_alive = false;
                    StepOutput::PostgresStopped { lsn: None }
                }
                Step::FetchSpec { .. } => StepOutput::SpecFetched {
                    found: self.rng.chance(30),
                },
                Step::PrepareCluster { .. } => StepOutput::ClusterPrepared,
                Step::UsePrepared { .. } => {
                    if self.rng.chance(50) {
                        StepOutput::PreparedUsed
                    } else {
                        StepOutput::PreparedDiscarded
                    }
                }
                Step::CancelSteps | Step::StartSidecar | Step::StopSidecar | Step::Exit { .. } => {
                    unreachable!("not a worker step")
                }
            })
        };
        Some(Event::StepFinished {
            id: queued.id,
            result,
        })
    }

    fn random_event(&mut self, phase: &Phase) -> Event {
        match self.rng.below(100) {
            0..=54 => match self.finish_head(phase.name()) {
                Some(event) => event,
                None => Event::Tick,
            },
            55..=64 => Event::SpecAccepted { spec: self.spec() },
            65..=79 => {
                self.now = self.now.plus_ms(self.rng.below(40_000));
                Event::Tick
            }
            80..=84 => {
                self.postmaster_alive = false;
                // A kill, or now and then an orderly stop from outside.
                let orderly = self.rng.chance(25);
                Event::PostmasterExited {
                    status: ExitStatus {
                        code: orderly.then_some(0),
                        signal: (!orderly).then_some(9),
                    },
                    shut_down: orderly,
                }
            }
            85..=87 => Event::Terminate {
                mode: if self.rng.chance(50) {
                    ShutdownMode::Fast
                } else {
                    ShutdownMode::Immediate
                },
            },
            88..=90 => Event::Recover,
            91 => Event::Promote {
                wal_flush_lsn: None,
            },
            92..=93 => Event::Drift {
                found: self.rng.chance(70).then(|| self.rng.below(3)),
            },
            94..=96 => Event::StepStarted {
                id: StepId(self.rng.below(50)),
            },
            _ => Event::StepFinished {
                id: StepId(self.rng.below(50)),
                result: Ok(StepOutput::SpecApplied),
            },
        }
    }
}

/// Checks one transition `before --event--> after`; returns why it is wrong.
fn check(
    before: PhaseName,
    after: &Phase,
    history: &[PhaseName],
    accepted: bool,
) -> Result<(), String> {
    after.check_invariants()?;
    if before == PhaseName::Terminated && (accepted || after.name() != PhaseName::Terminated) {
        return Err("terminated is not absorbing".to_string());
    }
    if after.name() == PhaseName::Running && before != PhaseName::Running {
        if before != PhaseName::Configuring {
            return Err(format!("running entered from {before}, not configuring"));
        }
        // Since the last `init`, the path must have gone through `starting`.
        let since_init = history
            .iter()
            .rposition(|p| *p == PhaseName::Init)
            .map_or(history, |i| &history[i..]);
        if !since_init.contains(&PhaseName::Starting) {
            return Err("running reached without starting".to_string());
        }
    }
    if after.name() == PhaseName::Failed && after.error().is_none() {
        return Err("failed without an error".to_string());
    }
    Ok(())
}

fn new_world(seed: u64) -> World {
    World {
        rng: Rng(seed),
        now: Now {
            mono_ms: 0,
            wall_ms: 1_764_000_000_000,
        },
        queue: VecDeque::new(),
        postmaster_alive: false,
        next_pid: 1000,
        generation: 0,
    }
}

/// Runs `events` events from one seed. When the machine terminates, a few more events check
/// that it absorbs them, then the process "restarts" (as under systemd) with a fresh boot.
/// Returns every phase reached.
fn simulate(seed: u64, events: usize) -> Result<Vec<PhaseName>, String> {
    let mut world = new_world(seed);
    // Half the seeds repair drift, with an interval shorter than the clock's steps; a
    // (different) half run with `--prepare`.
    let policy = Policy {
        drift_repair: seed.is_multiple_of(2),
        drift_interval_ms: 100,
        prepare: seed % 4 < 2,
        ..Policy::default()
    };
    let mut reached = Vec::new();
    let mut handled = 0;
    while handled < events {
        world.queue.clear();
        world.postmaster_alive = false;
        let boot = Phase::boot(policy, world.rng.chance(30), Default::default());
        let mut pending: VecDeque<Event> = world.take_steps(&boot.steps).into();
        let mut phase = boot.phase;
        let mut history = vec![phase.name()];
        let mut after_terminated = 0;
        while handled < events && after_terminated < 3 {
            let event = match pending.pop_front() {
                Some(event) => event,
                None => world.random_event(&phase),
            };
            let described = format!("{event:?}");
            let before = phase.name();
            let (after, accepted) = match phase.on_event(event, world.now) {
                Ok(next) => {
                    pending.extend(world.take_steps(&next.steps));
                    (next.phase, true)
                }
                Err(rejected) => (*rejected.phase, false),
            };
            handled += 1;
            check(before, &after, &history, accepted)
                .map_err(|e| format!("event {handled}, {before} + {described}: {e}"))?;
            if after.name() != before {
                history.push(after.name());
                reached.push(after.name());
            }
            if after.name() == PhaseName::Terminated {
                after_terminated += 1;
            }
            phase = after;
        }
    }
    Ok(reached)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
fn random_events_keep_the_invariants() {
    let seeds = env_u64("SIM_SEEDS", 500);
    let base = env_u64("SIM_SEED", 0x5EED);
    let events_per_seed = 400;
    let mut reached = std::collections::BTreeSet::new();
    for i in 0..seeds {
        let seed = base.wrapping_add(i);
        match simulate(seed, events_per_seed) {
            Ok(phases) => reached.extend(phases),
            Err(e) => panic!("seed {seed} (rerun: SIM_SEED={seed} SIM_SEEDS=1): {e}"),
        }
    }
    // 500 seeds x 400 events = 200,000 events by default.
    // Guards the simulation itself: a model that never reaches a phase tests nothing there.
    for name in PhaseName::ALL {
        if name != PhaseName::Empty {
            assert!(
                reached.contains(&name),
                "the simulation never reached {name}"
            );
        }
    }
}
