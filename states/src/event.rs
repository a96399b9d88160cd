//! Events: everything that can happen to a compute, as the core sees it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::admission::SpecOffer;
use crate::error::StepError;
use crate::lsn::Lsn;
use crate::spec_ref::SpecRef;
use crate::step::{ShutdownMode, StepId, StepOutput};

/// An input to a phase. The driver turns HTTP requests, finished steps, signals, the
/// postmaster's exit and the clock into these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Someone offers a spec (`POST /spec`, `/configure`, `-S`, SIGHUP, the control plane):
    /// admission decides whether it becomes desired, and the answer goes in `Next::answer`.
    SpecOffered { offer: SpecOffer },
    /// A spec is the desired one: an offer admitted, or the journal's desired spec at start.
    /// The driver makes it durable before anyone sees the phase it leads to.
    SpecAccepted { spec: SpecRef },
    /// The worker began step `id` (its `step_started` record was made durable when it was
    /// handed over, before it could begin).
    StepStarted { id: StepId },
    /// The worker step `id` ended.
    StepFinished {
        id: StepId,
        result: Result<StepOutput, StepError>,
    },
    /// The postmaster exited without being asked to stop. `shut_down` is what pg_control
    /// said just after the exit: the cluster was shut down cleanly (a shutdown checkpoint
    /// written), as a fast or smart shutdown leaves it and an immediate one, a crash or a
    /// kill does not.
    PostmasterExited {
        status: ExitStatus,
        #[serde(default)]
        shut_down: bool,
    },
    /// Time passed: the monitor interval elapsed or a phase's deadline came.
    Tick,
    /// Stop Postgres and exit (SIGTERM, SIGINT, `POST /terminate`).
    Terminate { mode: ShutdownMode },
    /// Apply the desired spec again: after a failure, or in `running` to repair a drift on
    /// demand (`POST /recover`).
    Recover,
    /// Promote the running standby to a read-write primary and apply the spec as for one
    /// (`POST /promote`; the driver lets only an upstream `Replica` ask), once it has
    /// replayed up to `wal_flush_lsn` (the old primary's last flush LSN) when given.
    Promote { wal_flush_lsn: Option<Lsn> },
    /// The drift check compared Postgres with the applied spec: `found` is the fingerprint of
    /// the differences seen, `None` when there are none. With `--drift repair`, `running`
    /// applies the desired spec again (at most once per interval, never twice for the same
    /// drift).
    Drift { found: Option<u64> },
}

impl Event {
    pub fn name(&self) -> EventName {
        match self {
            Event::SpecOffered { .. } => EventName::SpecOffered,
            Event::SpecAccepted { .. } => EventName::SpecAccepted,
            Event::StepStarted { .. } => EventName::StepStarted,
            Event::StepFinished { result: Ok(_), .. } => EventName::StepSucceeded,
            Event::StepFinished { result: Err(_), .. } => EventName::StepFailed,
            Event::PostmasterExited { .. } => EventName::PostmasterExited,
            Event::Tick => EventName::Tick,
            Event::Terminate { .. } => EventName::Terminate,
            Event::Recover => EventName::Recover,
            Event::Promote { .. } => EventName::Promote,
            Event::Drift { .. } => EventName::Drift,
        }
    }
}

/// The name of an event, for journal causes and the transition table. A finished step is
/// named by its outcome, because the two lead to different phases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventName {
    SpecOffered,
    SpecAccepted,
    StepStarted,
    StepSucceeded,
    StepFailed,
    PostmasterExited,
    Tick,
    Terminate,
    Recover,
    Promote,
    Drift,
}

impl EventName {
    pub const ALL: [EventName; 11] = [
        EventName::SpecOffered,
        EventName::SpecAccepted,
        EventName::StepStarted,
        EventName::StepSucceeded,
        EventName::StepFailed,
        EventName::PostmasterExited,
        EventName::Tick,
        EventName::Terminate,
        EventName::Recover,
        EventName::Promote,
        EventName::Drift,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventName::SpecOffered => "spec_offered",
            EventName::SpecAccepted => "spec_accepted",
            EventName::StepStarted => "step_started",
            EventName::StepSucceeded => "step_succeeded",
            EventName::StepFailed => "step_failed",
            EventName::PostmasterExited => "postmaster_exited",
            EventName::Tick => "tick",
            EventName::Terminate => "terminate",
            EventName::Recover => "recover",
            EventName::Promote => "promote",
            EventName::Drift => "drift",
        }
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether the postmaster's exit was an orderly shutdown asked from outside (`pg_ctl stop -m
/// fast` or `-m smart`, as neon_local's `endpoint stop` does): it exited with status 0, or
/// with a status nobody can know (an adopted postmaster is not our child, so only a pidfd
/// says it ended), and pg_control says the cluster was shut down. `pg_ctl -m immediate`
/// does not count: on PostgreSQL 15 its postmaster also exits with status 0 (measured), but
/// it writes no shutdown checkpoint (pg_control stays "in production") and the next start
/// runs crash recovery, so it is an unexpected exit like a crash.
pub fn stopped_from_outside(status: ExitStatus, shut_down: bool) -> bool {
    let clean_status = match (status.code, status.signal) {
        (Some(code), _) => code == 0,
        (None, Some(_)) => false,
        (None, None) => true,
    };
    clean_status && shut_down
}

/// How a process ended: its exit code, or the signal that killed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    pub code: Option<i32>,
    pub signal: Option<i32>,
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exit code {code}"),
            (None, Some(signal)) => write!(f, "signal {signal}"),
            (None, None) => write!(f, "unknown status"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: Option<i32>, signal: Option<i32>) -> ExitStatus {
        ExitStatus { code, signal }
    }

    #[test]
    fn only_a_clean_shutdown_with_status_zero_or_unknown_is_a_stop_from_outside() {
        // pg_ctl -m fast / -m smart on our child.
        assert!(stopped_from_outside(status(Some(0), None), true));
        // An adopted postmaster: no status, pg_control says shut down.
        assert!(stopped_from_outside(status(None, None), true));
        // pg_ctl -m immediate: status 0, pg_control still "in production".
        assert!(!stopped_from_outside(status(Some(0), None), false));
        assert!(!stopped_from_outside(status(None, None), false));
        // A crash or a kill, whatever pg_control says.
        assert!(!stopped_from_outside(status(Some(1), None), true));
        assert!(!stopped_from_outside(status(None, Some(9)), true));
    }
}
