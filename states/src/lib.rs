//! The pure lifecycle core of compute_ctl: phases, events, steps, and the transitions between
//! them. No I/O, no threads, no clock: time comes in as `Now`, effects go out as `Step`s.
//!
//! The driver in the `compute_ctl` crate owns the one `Phase` of a process and feeds it
//! `Event`s; each answer is a `Next` (the next phase and the steps to run) or a `Rejected`.

pub mod admission;
pub mod error;
pub mod event;
pub mod lsn;
pub mod phase;
pub mod spec_ref;
pub mod step;
pub mod table;
pub mod time;

pub use admission::{
    AcceptedAt, Recalled, RequestLog, SpecAnswer, SpecOffer, REQUESTS_REMEMBERED_MAX,
};
pub use error::{ErrorKind, Rejection, StepError};
pub use event::{stopped_from_outside, Event, EventName, ExitStatus};
pub use lsn::Lsn;
pub use phase::{
    Ctx, DriftMemory, DriftVerdict, Next, Phase, PhaseName, Policy, Preparation, Rejected,
    Transition,
};
pub use spec_ref::SpecRef;
pub use step::{ExitReason, PreparedStart, ShutdownMode, Step, StepId, StepName, StepOutput};
pub use time::Now;
