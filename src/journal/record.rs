//! The journal's records: what each line of a segment holds, after the checksum.

use serde::{Deserialize, Serialize};
use states::{EventName, PhaseName, StepError, StepId, StepName};

/// One journal line's JSON object. `seq`, `epoch`, `ts` and `mono_ms` are assigned by the
/// journal when the record is appended; the body says what happened.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Gap-free from 1, across restarts.
    pub seq: u64,
    /// One per process start (the `start` record opens it).
    pub epoch: u64,
    /// Wall time, RFC 3339 UTC with milliseconds (`2026-11-25T01:02:03.456Z`).
    pub ts: String,
    /// Monotonic milliseconds since the process started.
    pub mono_ms: u64,
    #[serde(flatten)]
    pub body: RecordBody,
}

/// What a record says, tagged by `kind`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecordBody {
    Start(StartRecord),
    SpecAccepted(SpecAcceptedRecord),
    Transition(TransitionRecord),
    StepStarted(StepStartedRecord),
    StepFinished(StepFinishedRecord),
    Drift(DriftRecord),
}

impl RecordBody {
    pub fn kind(&self) -> &'static str {
        match self {
            RecordBody::Start(_) => "start",
            RecordBody::SpecAccepted(_) => "spec_accepted",
            RecordBody::Transition(_) => "transition",
            RecordBody::StepStarted(_) => "step_started",
            RecordBody::StepFinished(_) => "step_finished",
            RecordBody::Drift(_) => "drift",
        }
    }
}

/// The first record of every epoch: who started, and what opening the journal found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StartRecord {
    /// The journal format version (`journal::FORMAT_VERSION`).
    pub format: u32,
    /// compute_ctl's version.
    pub version: String,
    pub pid: u32,
    pub pgdata: String,
    /// A torn last record that opening the journal cut off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torn_tail: Option<TornTail>,
    /// Steps an earlier epoch began and never finished, and what is done about them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unfinished_steps: Vec<UnfinishedStep>,
}

/// What was cut off the end of the journal on open.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TornTail {
    /// The segment's file name.
    pub segment: String,
    /// Where the cut was made, in bytes from the segment's start.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
    pub reason: String,
}

/// A step of an earlier epoch with a `step_started` record and no `step_finished`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnfinishedStep {
    /// The seq of its `step_started` record.
    pub seq: u64,
    pub epoch: u64,
    pub step: StepName,
    pub id: StepId,
    /// What this start does about it: `redo_from_scratch` (every start rebuilds PGDATA).
    pub policy: String,
}

/// Where an accepted spec came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecSource {
    /// `-S/--spec` at start.
    File,
    /// `-S/--spec` re-read on SIGHUP.
    Reload,
    /// `POST /spec` or `POST /configure`.
    Http,
    /// Fetched from the control plane.
    ControlPlane,
}

/// A spec was stored (`specs/<hash>.json`) and became the desired one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SpecAcceptedRecord {
    pub generation: u64,
    /// `sha256:<hex>`.
    pub spec_hash: String,
    pub source: SpecSource,
    /// The `X-Request-Id` of the request that brought it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Fields of the spec that compute_ctl accepts but does not act on (JSON paths).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_fields: Vec<String>,
}

/// The event that caused a transition.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cause {
    pub event: EventName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The step whose end caused it, for `step_succeeded` and `step_failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepName>,
    /// Where the event came from, in words (`SIGTERM`, `POST /terminate`, `journal`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// The compute moved from one phase to another (or retried within one: same `from`, `to`,
/// higher `attempt`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TransitionRecord {
    pub from: PhaseName,
    pub to: PhaseName,
    pub cause: Cause,
    /// The desired generation after the transition.
    pub generation: Option<u64>,
    pub spec_hash: Option<String>,
    pub attempt: u32,
    /// How long the compute was in `from`.
    pub duration_ms: u64,
    pub error: Option<StepError>,
}

/// A worker step was handed to the executor: the intent, durable before any effect.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepStartedRecord {
    pub id: StepId,
    pub step: StepName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// The step's parameters in words (`lsn 0/16B3748`, `fast`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A worker step ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepFinishedRecord {
    pub id: StepId,
    pub step: StepName,
    pub ok: bool,
    pub duration_ms: u64,
    /// What the step reports: its output, and facts worth keeping (a skipped step's reason,
    /// statements sent, bytes copied).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
}

/// What the drift check found changed (appeared, changed, cleared), or a repair did not remove
/// it: the whole list, as `/state.drift` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriftRecord {
    pub drift: Vec<crate::postgres::drift::Difference>,
    /// How many more differences were found than the list holds.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more: usize,
    /// The applied generation it was compared with.
    pub generation: Option<u64>,
    /// `repairing`: the desired spec is applied again (`--drift repair`); `not_removed`: a
    /// repair was made for this drift and it remains (not repaired again until it changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repair: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
