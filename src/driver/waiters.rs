//! Requests parked until the compute gets somewhere: `POST /configure` until the spec runs
//! (or the compute fails), `POST /terminate` until Postgres has stopped. Which are due is a
//! pure function of the phase, tested as data; the driver sends the answers.

use std::sync::mpsc::Sender;
use std::sync::Arc;

use states::{Phase, PhaseName};

use crate::input::ApiAnswer;
use crate::view::StateView;

/// What a parked request waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waiting {
    /// The compute runs `generation` (or a later one), or it failed.
    Configure { generation: u64 },
    /// The compute is terminated.
    Terminate,
    /// The promotion ended: running as a primary, or failed.
    Promote,
}

/// The answer `waiting` gets now, if it is due in `phase` (whose published view is `view`;
/// `promotion_failed` says why the last promotion failed, if it did).
pub fn due(
    waiting: Waiting,
    phase: &Phase,
    view: &Arc<StateView>,
    promotion_failed: Option<&str>,
) -> Option<ApiAnswer> {
    let error_of_phase = || {
        phase
            .error()
            .map(ToString::to_string)
            .unwrap_or_else(|| format!("the compute is {}", phase.name()))
    };
    match waiting {
        Waiting::Promote => match (phase.name(), promotion_failed) {
            (PhaseName::Running, Some(error)) => Some(ApiAnswer::PromoteFailed {
                error: error.to_string(),
            }),
            (PhaseName::Running, None) => Some(ApiAnswer::Promoted {
                generation: phase.ctx().applied.as_ref().map(|s| s.generation),
            }),
            (PhaseName::Failed | PhaseName::Terminating | PhaseName::Terminated, _) => {
                Some(ApiAnswer::PromoteFailed {
                    error: promotion_failed.map_or_else(error_of_phase, str::to_string),
                })
            }
            (
                PhaseName::Empty
                | PhaseName::Init
                | PhaseName::SyncSafekeepers
                | PhaseName::Basebackup
                | PhaseName::Starting
                | PhaseName::Configuring
                | PhaseName::ConfigurationPending,
                _,
            ) => None,
        },
        Waiting::Terminate => match phase {
            Phase::Terminated(terminated) => Some(ApiAnswer::Terminated {
                lsn: terminated.lsn,
            }),
            _ => None,
        },
        Waiting::Configure { generation } => {
            let applied = phase.ctx().applied.as_ref().map(|s| s.generation);
            match phase.name() {
                PhaseName::Running if applied >= Some(generation) => {
                    Some(ApiAnswer::Configured(view.clone()))
                }
                PhaseName::Failed | PhaseName::Terminating | PhaseName::Terminated => {
                    Some(ApiAnswer::ConfigureFailed {
                        message: error_of_phase(),
                    })
                }
                PhaseName::Empty
                | PhaseName::Init
                | PhaseName::SyncSafekeepers
                | PhaseName::Basebackup
                | PhaseName::Starting
                | PhaseName::Configuring
                | PhaseName::ConfigurationPending
                | PhaseName::Running => None,
            }
        }
    }
}

/// The parked requests and where their answers go.
#[derive(Debug, Default)]
pub struct Waiters {
    parked: Vec<(Waiting, Sender<ApiAnswer>)>,
}

impl Waiters {
    pub fn park(&mut self, waiting: Waiting, reply: Sender<ApiAnswer>) {
        self.parked.push((waiting, reply));
    }

    pub fn len(&self) -> usize {
        self.parked.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parked.is_empty()
    }

    /// Answers every request that is due, once, and keeps the others; returns how many were
    /// answered.
    pub fn answer_due(
        &mut self,
        phase: &Phase,
        view: &Arc<StateView>,
        promotion_failed: Option<&str>,
    ) -> usize {
        let before = self.parked.len();
        self.parked.retain(
            |(waiting, reply)| match due(*waiting, phase, view, promotion_failed) {
                Some(answer) => {
                    // The caller may have given up (a closed connection): nothing to do.
                    let _ = reply.send(answer);
                    false
                }
                None => true,
            },
        );
        before - self.parked.len()
    }
}
