//! The journal records the driver writes, built from what an input did: where a transition
//! came from, the step intents, a finished step's output.

use serde_json::json;
use states::{EventName, Phase, PhaseName, Step, StepError, StepName, StepOutput};

use crate::journal::{Cause, RecordBody, SpecSource, StepStartedRecord, TransitionRecord};

/// Where an event came from, for the transition record's cause.
#[derive(Clone, Debug, Default)]
pub struct Origin {
    pub request_id: Option<String>,
    pub step: Option<StepName>,
    pub source: Option<String>,
}

impl Origin {
    pub fn source(source: impl Into<String>) -> Origin {
        Origin {
            source: Some(source.into()),
            ..Origin::default()
        }
    }

    pub fn request(request_id: String, source: &str) -> Origin {
        Origin {
            request_id: Some(request_id),
            source: Some(source.into()),
            step: None,
        }
    }
}

/// The phase an input started from: its name, attempt, and since when.
#[derive(Clone, Copy, Debug)]
pub struct From {
    pub phase: PhaseName,
    pub attempt: u32,
    pub since_ms: u64,
}

/// The transition record from `from` to `to`, or `None` if neither the phase nor its attempt
/// changed.
pub fn transition(
    from: From,
    to: &Phase,
    event: EventName,
    origin: &Origin,
    event_error: Option<StepError>,
    now_ms: u64,
) -> Option<RecordBody> {
    if to.name() == from.phase && to.attempt() == from.attempt {
        return None;
    }
    let desired = to.ctx().desired.as_ref();
    Some(RecordBody::Transition(TransitionRecord {
        from: from.phase,
        to: to.name(),
        cause: Cause {
            event,
            request_id: origin.request_id.clone(),
            step: origin.step,
            source: origin.source.clone(),
        },
        generation: desired.map(|d| d.generation),
        spec_hash: desired.map(|d| d.hash.clone()),
        attempt: to.attempt(),
        duration_ms: now_ms.saturating_sub(from.since_ms),
        // The phase's own error, or the failure that caused this move.
        error: to.error().cloned().or(event_error),
    }))
}

/// The intent of a worker step, journaled before it is handed over.
pub fn step_started(step: &Step) -> Option<RecordBody> {
    let id = step.id()?;
    Some(RecordBody::StepStarted(StepStartedRecord {
        id,
        step: step.name(),
        generation: step.spec().map(|s| s.generation),
        detail: Some(step.to_string()),
    }))
}

/// `step_finished.output`: the step's result (`{"result": "postgres_started", "pid": …}`) and
/// the facts it reported, under `detail`.
pub fn step_finished_output(
    result: &Result<StepOutput, StepError>,
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

/// How a spec's source is named in causes.
pub fn source_name(source: SpecSource) -> &'static str {
    match source {
        SpecSource::File => "-S file",
        SpecSource::Reload => "SIGHUP: -S file re-read",
        SpecSource::Http => "HTTP",
        SpecSource::ControlPlane => "control plane",
    }
}
