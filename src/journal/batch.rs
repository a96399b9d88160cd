//! Turning the bodies of one append into records and lines, with every check a record must
//! pass before it is written. Shared by the file and the memory journal, so both refuse the
//! same things.

use std::time::{SystemTime, UNIX_EPOCH};

use super::record::{Record, RecordBody};
use super::segment::encode_line;
use super::{JournalConfig, JournalError, FORMAT_VERSION};

/// Where a journal stands: what the next append continues from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tip {
    /// The seq of the last record, 0 for an empty journal.
    pub last_seq: u64,
    /// This writer's epoch.
    pub epoch: u64,
    /// Whether this epoch's `start` record is written: until it is, it is the only record
    /// an append takes.
    pub epoch_started: bool,
}

impl Tip {
    /// A writer's tip over a journal whose last record is `last_seq` in `last_epoch`.
    pub fn opened(last_seq: u64, last_epoch: u64) -> Tip {
        Tip {
            last_seq,
            epoch: last_epoch + 1,
            epoch_started: false,
        }
    }

    /// The tip after `batch` was written.
    pub fn after(self, batch: &Batch) -> Tip {
        Tip {
            last_seq: self.last_seq + batch.records.len() as u64,
            epoch: self.epoch,
            epoch_started: self.epoch_started || !batch.records.is_empty(),
        }
    }
}

/// The records of one append and their lines, ready to be written in one go.
#[derive(Debug)]
pub(crate) struct Batch {
    pub records: Vec<Record>,
    pub lines: Vec<u8>,
}

/// Builds and checks the records of one append; refuses the whole batch if one is wrong.
pub(crate) fn build(
    tip: Tip,
    bodies: Vec<RecordBody>,
    mono_ms: u64,
    wall: SystemTime,
    config: &JournalConfig,
) -> Result<Batch, JournalError> {
    let ts = format_ts(wall)?;
    let count = bodies.len() as u64;
    if tip.last_seq.checked_add(count).is_none() {
        return Err(JournalError::Invalid {
            reason: format!("seq would pass u64::MAX after seq {}", tip.last_seq),
        });
    }
    let mut records = Vec::with_capacity(bodies.len());
    let mut lines = Vec::new();
    for (i, body) in bodies.into_iter().enumerate() {
        let seq = tip.last_seq + 1 + i as u64;
        let opens_epoch = i == 0 && !tip.epoch_started;
        check_body(&body, seq, tip.epoch, opens_epoch)?;
        let record = Record {
            seq,
            epoch: tip.epoch,
            ts: ts.clone(),
            mono_ms,
            body,
        };
        let json = serde_json::to_vec(&record).map_err(|e| JournalError::Invalid {
            reason: format!("record seq {seq} cannot be encoded: {e}"),
        })?;
        // serde_json escapes newlines inside strings; a raw one would split the line.
        if memchr::memchr(b'\n', &json).is_some() {
            return Err(JournalError::Invalid {
                reason: format!("record seq {seq} encodes with a raw newline"),
            });
        }
        let start = lines.len();
        encode_line(&json, &mut lines);
        let line_bytes = lines.len() - start;
        if line_bytes > config.record_bytes_max {
            return Err(JournalError::Invalid {
                reason: format!(
                    "record seq {seq} ({}) is {line_bytes} bytes, over record_bytes_max {}",
                    record.body.kind(),
                    config.record_bytes_max
                ),
            });
        }
        records.push(record);
    }
    Ok(Batch { records, lines })
}

/// The `start` record opens an epoch, and only it.
fn check_body(
    body: &RecordBody,
    seq: u64,
    epoch: u64,
    opens_epoch: bool,
) -> Result<(), JournalError> {
    match (body, opens_epoch) {
        (RecordBody::Start(start), true) => {
            if start.format != FORMAT_VERSION {
                return Err(JournalError::Invalid {
                    reason: format!(
                        "start record seq {seq} names format {}, this writer writes format \
                         {FORMAT_VERSION}",
                        start.format
                    ),
                });
            }
            Ok(())
        }
        (RecordBody::Start(_), false) => Err(JournalError::Invalid {
            reason: format!("start record seq {seq}: epoch {epoch} has its start record already"),
        }),
        (other, true) => Err(JournalError::Invalid {
            reason: format!(
                "record seq {seq} is {}: the first record of epoch {epoch} must be start",
                other.kind()
            ),
        }),
        (_, false) => Ok(()),
    }
}

/// RFC 3339 UTC with milliseconds. humantime panics outside years 1970..=9999, so those are
/// refused here.
pub(crate) fn format_ts(wall: SystemTime) -> Result<String, JournalError> {
    // 10000-01-01T00:00:00Z
    const SECS_MAX: u64 = 253_402_300_800;
    match wall.duration_since(UNIX_EPOCH) {
        Ok(since) if since.as_secs() < SECS_MAX => {
            Ok(humantime::format_rfc3339_millis(wall).to_string())
        }
        _ => Err(JournalError::Invalid {
            reason: format!("wall time {wall:?} is outside 1970..=9999"),
        }),
    }
}
