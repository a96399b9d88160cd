//! What a start rebuilds from the journal: the desired spec, the generation counter, the
//! answers to requests already accepted, and the steps the previous run left unfinished.

use std::collections::BTreeMap;

use states::{AcceptedAt, PhaseName, Recalled, RequestLog, SpecRef, StepId, StepName};

use crate::journal::{Record, RecordBody, UnfinishedStep};

/// Which spec was desired last, and by which record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredSpec {
    pub generation: u64,
    /// `sha256:<hex>`.
    pub hash: String,
    /// The seq of its `spec_accepted` record.
    pub seq: u64,
}

/// The state rebuilt from the journal's records, in order.
#[derive(Debug, Default)]
pub struct Replay {
    pub desired: Option<DesiredSpec>,
    /// Accepted request ids (the newest, bounded), for retries with the same `X-Request-Id`.
    pub requests: RequestLog,
    pub last_seq: u64,
    pub last_epoch: u64,
    /// The spec the postmaster on PGDATA was last confirmed to run (the last transition to
    /// `running`), unless a wipe or a stop was begun after it: a start may adopt it.
    pub adoptable: Option<SpecRef>,
    /// The attempt each start-up phase reached in the last epoch, by generation, until it
    /// got to `running`.
    attempts: Vec<(u64, PhaseName, u32)>,
    /// When each start-up phase was first entered (`ts`) in the chain of attempts that goes
    /// on, by generation: kept across epochs, since an attempt carried over is the same
    /// start-up going on; until `running`.
    entered: Vec<(u64, PhaseName, String)>,
    /// Steps started in the last epoch with no `step_finished`, by (epoch, id).
    started: BTreeMap<(u64, StepId), (u64, StepName)>,
}

impl Replay {
    /// Takes one record, in journal order.
    pub fn visit(&mut self, record: &Record) {
        debug_assert!(
            record.seq > self.last_seq,
            "replay out of order at {}",
            record.seq
        );
        self.last_seq = record.seq;
        if record.epoch > self.last_epoch {
            // Steps of older epochs were reported by the start record of the epoch after
            // them; only the previous run's are still news.
            self.started.clear();
            // The count that goes on is the last run's (each run's transitions carry it).
            self.attempts.clear();
            self.last_epoch = record.epoch;
        }
        match &record.body {
            RecordBody::SpecAccepted(accepted) => {
                // Generations only grow, so the last accepted spec is also the newest.
                debug_assert!(
                    self.desired
                        .as_ref()
                        .is_none_or(|d| accepted.generation > d.generation),
                    "generation {} after a later one",
                    accepted.generation
                );
                self.desired = Some(DesiredSpec {
                    generation: accepted.generation,
                    hash: accepted.spec_hash.clone(),
                    seq: record.seq,
                });
                if let Some(id) = &accepted.request_id {
                    self.requests.insert(
                        id.clone(),
                        AcceptedAt {
                            generation: accepted.generation,
                            seq: record.seq,
                        },
                    );
                }
            }
            RecordBody::StepStarted(started) => {
                // A wipe or a stop begun: no postmaster serving the spec may be left.
                if matches!(
                    started.step,
                    StepName::InitPgdata | StepName::UsePrepared | StepName::StopPostgres
                ) {
                    self.adoptable = None;
                }
                self.started
                    .insert((record.epoch, started.id), (record.seq, started.step));
            }
            RecordBody::StepFinished(finished) => {
                self.started.remove(&(record.epoch, finished.id));
            }
            RecordBody::Transition(transition) => {
                let startup = matches!(
                    transition.to,
                    PhaseName::Init
                        | PhaseName::SyncSafekeepers
                        | PhaseName::Basebackup
                        | PhaseName::Starting
                );
                if let (true, Some(generation)) = (startup, transition.generation) {
                    self.attempts
                        .retain(|(_, phase, _)| *phase != transition.to);
                    self.attempts
                        .push((generation, transition.to, transition.attempt));
                    // A first attempt begins the phase afresh; a later one goes on with it.
                    let going_on = transition.attempt > 1
                        && self
                            .entered
                            .iter()
                            .any(|(g, phase, _)| *g == generation && *phase == transition.to);
                    if !going_on {
                        self.entered.retain(|(_, phase, _)| *phase != transition.to);
                        self.entered
                            .push((generation, transition.to, record.ts.clone()));
                    }
                }
                if transition.to == PhaseName::Running {
                    self.attempts.clear();
                    self.entered.clear();
                    self.adoptable = transition
                        .generation
                        .zip(transition.spec_hash.clone())
                        .map(|(generation, hash)| SpecRef { generation, hash });
                }
            }
            // A drift is seen again by the next run's checks, not replayed.
            RecordBody::Start(_) | RecordBody::Drift(_) => {}
        }
    }

    /// What the core is told of earlier runs at boot.
    pub fn recalled(&self) -> Recalled {
        Recalled {
            desired: self.desired.as_ref().map(|d| {
                let spec = SpecRef {
                    generation: d.generation,
                    hash: d.hash.clone(),
                };
                (spec, d.seq)
            }),
            requests: self.requests.clone(),
            adoptable: self.adoptable.clone(),
            resumed: self.desired.as_ref().map(|d| {
                let attempts = self
                    .attempts
                    .iter()
                    .filter(|(generation, _, _)| *generation == d.generation)
                    .map(|(_, phase, attempt)| (*phase, *attempt))
                    .collect();
                (d.generation, attempts)
            }),
        }
    }

    /// When each start-up phase of the desired spec was first entered (RFC 3339), for the
    /// phases the last run left with an attempt that goes on: `/state.phase_since` shows it
    /// when this run enters the phase again at the next attempt.
    pub fn phases_entered(&self) -> Vec<(PhaseName, String)> {
        let Some(desired) = &self.desired else {
            return Vec::new();
        };
        self.entered
            .iter()
            .filter(|(generation, phase, _)| {
                *generation == desired.generation
                    && self
                        .attempts
                        .iter()
                        .any(|(g, p, _)| g == generation && p == phase)
            })
            .map(|(_, phase, ts)| (*phase, ts.clone()))
            .collect()
    }

    /// The steps the previous run began and never finished: every start rebuilds PGDATA
    /// from scratch, which is the policy applied to each.
    pub fn unfinished_steps(&self) -> Vec<UnfinishedStep> {
        self.started
            .iter()
            .map(|((epoch, id), (seq, step))| UnfinishedStep {
                seq: *seq,
                epoch: *epoch,
                step: *step,
                id: *id,
                policy: if step.is_destructive() {
                    "redo_from_scratch".to_string()
                } else {
                    "abandoned: the next start redoes every step".to_string()
                },
            })
            .collect()
    }
}
