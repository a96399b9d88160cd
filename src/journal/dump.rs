//! `journal dump`: the records for a person (aligned columns, one line each) or for `jq`
//! (the stored JSON objects, one a line).

use std::fmt::Write as _;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::Path;

use super::read::{existing_journal_dir, start_index};
use super::record::{Cause, Record, RecordBody};
use super::scan::scan;
use super::segment::kept_segments;
use super::JournalError;

/// Writes the records with seq > `since` to `out`: with `json`, each record's JSON exactly as
/// stored, one a line; else a header and one aligned line per record (seq, epoch, ts, kind,
/// summary). Returns how many records it wrote. Damage stops it with an error after the
/// records before it were written; a last line still being written is not shown.
pub fn dump(
    state_dir: &Path,
    since: u64,
    json: bool,
    out: &mut dyn Write,
) -> Result<u64, JournalError> {
    let dir = existing_journal_dir(state_dir)?;
    let (segments, first_kept) = kept_segments(&dir)?;
    let mut printed = 0u64;
    let mut failed = None;
    if !json {
        writeln!(
            out,
            "{:>8}  {:>5}  {:<24}  {:<13}  SUMMARY",
            "SEQ", "EPOCH", "TS", "KIND"
        )
        .map_err(|source| JournalError::Output { source })?;
    }
    let mut line = String::new();
    let start = start_index(&segments, since);
    scan(
        &segments,
        start,
        since,
        first_kept,
        &mut |record, stored| {
            let written = if json {
                out.write_all(stored).and_then(|()| out.write_all(b"\n"))
            } else {
                line.clear();
                human_line(&record, &mut line);
                out.write_all(line.as_bytes())
            };
            match written {
                Ok(()) => {
                    printed += 1;
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    failed = Some(e);
                    ControlFlow::Break(())
                }
            }
        },
    )?;
    if let Some(source) = failed {
        return Err(JournalError::Output { source });
    }
    out.flush()
        .map_err(|source| JournalError::Output { source })?;
    Ok(printed)
}

/// One record as an aligned line, newline included.
pub(crate) fn human_line(record: &Record, out: &mut String) {
    let _ = write!(
        out,
        "{:>8}  {:>5}  {:<24}  {:<13}  ",
        record.seq,
        record.epoch,
        record.ts,
        record.body.kind()
    );
    summary(&record.body, out);
    out.push('\n');
}

/// What a record says, in one line: `init -> sync_safekeepers (step_succeeded: init_pgdata)
/// g1 attempt 1 12ms`. Writing to a `String` cannot fail, so the results are ignored.
fn summary(body: &RecordBody, out: &mut String) {
    match body {
        RecordBody::Start(start) => {
            let _ = write!(
                out,
                "format {}, compute_ctl {}, pid {}, pgdata {}",
                start.format, start.version, start.pid, start.pgdata
            );
            if let Some(torn) = &start.torn_tail {
                let _ = write!(
                    out,
                    ", torn tail cut: {} bytes at {} offset {} ({})",
                    torn.bytes, torn.segment, torn.offset, torn.reason
                );
            }
            for step in &start.unfinished_steps {
                let _ = write!(
                    out,
                    ", unfinished {} {} (seq {}, epoch {}): {}",
                    step.id, step.step, step.seq, step.epoch, step.policy
                );
            }
        }
        RecordBody::SpecAccepted(spec) => {
            let _ = write!(
                out,
                "g{} {} from {}",
                spec.generation,
                spec.spec_hash,
                serde_name(&spec.source)
            );
            if let Some(id) = &spec.request_id {
                let _ = write!(out, ", request {id}");
            }
            if !spec.ignored_fields.is_empty() {
                let _ = write!(out, ", ignored {}", spec.ignored_fields.join(" "));
            }
        }
        RecordBody::Transition(t) => {
            let _ = write!(out, "{} -> {} ", t.from, t.to);
            cause(&t.cause, out);
            if let Some(generation) = t.generation {
                let _ = write!(out, " g{generation}");
            }
            let _ = write!(out, " attempt {} {}ms", t.attempt, t.duration_ms);
            if let Some(error) = &t.error {
                let _ = write!(out, " error: {error} (retryable: {})", error.retryable);
            }
        }
        RecordBody::StepStarted(step) => {
            let _ = write!(out, "{} {}", step.id, step.step);
            if let Some(generation) = step.generation {
                let _ = write!(out, " g{generation}");
            }
            if let Some(detail) = &step.detail {
                let _ = write!(out, " {detail}");
            }
        }
        RecordBody::Drift(drift) => {
            let _ = write!(out, "{} differences", drift.drift.len() + drift.more);
            if let Some(generation) = drift.generation {
                let _ = write!(out, " from g{generation}");
            }
            for item in &drift.drift {
                let _ = write!(
                    out,
                    ", {} {}: expected {}, actual {}",
                    serde_name(&item.kind),
                    item.name,
                    item.expected.as_deref().unwrap_or("none"),
                    item.actual.as_deref().unwrap_or("none")
                );
            }
            if let Some(repair) = &drift.repair {
                let _ = write!(out, " (repair: {repair})");
            }
        }
        RecordBody::StepFinished(step) => {
            let outcome = if step.ok { "ok" } else { "failed" };
            let _ = write!(
                out,
                "{} {} {outcome} {}ms",
                step.id, step.step, step.duration_ms
            );
            if let Some(output) = &step.output {
                let _ = write!(out, " output {output}");
            }
            if let Some(error) = &step.error {
                let _ = write!(out, " error: {error} (retryable: {})", error.retryable);
            }
        }
    }
}

/// `(step_succeeded: init_pgdata)`, `(terminate from SIGTERM, request r-1)`.
fn cause(cause: &Cause, out: &mut String) {
    let _ = write!(out, "({}", cause.event);
    if let Some(step) = cause.step {
        let _ = write!(out, ": {step}");
    }
    if let Some(source) = &cause.source {
        let _ = write!(out, " from {source}");
    }
    if let Some(id) = &cause.request_id {
        let _ = write!(out, ", request {id}");
    }
    out.push(')');
}

/// A unit enum's name as its JSON spells it.
fn serde_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => "?".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::journal::record::TransitionRecord;
    use states::{ErrorKind, EventName, PhaseName, StepError, StepName};

    #[test]
    fn a_transition_reads_as_from_to_cause_generation_attempt_duration() {
        let mut record = Record {
            seq: 12,
            epoch: 2,
            ts: "2026-11-25T01:02:03.456Z".into(),
            mono_ms: 5,
            body: RecordBody::Transition(TransitionRecord {
                from: PhaseName::Init,
                to: PhaseName::SyncSafekeepers,
                cause: Cause {
                    event: EventName::StepSucceeded,
                    request_id: None,
                    step: Some(StepName::InitPgdata),
                    source: None,
                },
                generation: Some(1),
                spec_hash: Some("sha256:00".into()),
                attempt: 1,
                duration_ms: 12,
                error: None,
            }),
        };
        let mut line = String::new();
        human_line(&record, &mut line);
        assert_eq!(
            line,
            "      12      2  2026-11-25T01:02:03.456Z  transition     init -> sync_safekeepers \
             (step_succeeded: init_pgdata) g1 attempt 1 12ms\n"
        );
        if let RecordBody::Transition(t) = &mut record.body {
            t.to = PhaseName::Failed;
            t.cause.event = EventName::StepFailed;
            t.error = Some(StepError::new(
                PhaseName::Init,
                StepName::InitPgdata,
                ErrorKind::PgdataUnsafe,
                "/pg is not ours",
            ));
        }
        line.clear();
        human_line(&record, &mut line);
        assert!(
            line.ends_with(
                "init -> failed (step_failed: init_pgdata) g1 attempt 1 12ms error: init_pgdata \
                 failed in init (pgdata_unsafe): /pg is not ours (retryable: false)\n"
            ),
            "{line}"
        );
    }
}
