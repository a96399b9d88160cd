//! The read-only side: `read_since` for `GET /journal` and `verify` for `journal verify`.
//! They open files read-only, take no lock and create nothing, so they run beside a writer.

use std::io;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use super::record::Record;
use super::scan::scan;
use super::segment::{kept_segments, SegmentFile};
use super::{JournalError, JOURNAL_DIR};

/// What `verify` found in an intact journal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// The first seq the journal holds: 1, or later once old segments were retired.
    pub first_seq: u64,
    pub records: u64,
    pub segments: usize,
    /// 0 for an empty journal.
    pub last_seq: u64,
    /// 0 for an empty journal.
    pub last_epoch: u64,
    /// Bytes in all segments.
    pub bytes: u64,
}

/// The journal directory of `state_dir`, which must exist: readers create nothing.
pub(crate) fn existing_journal_dir(state_dir: &Path) -> Result<PathBuf, JournalError> {
    let dir = state_dir.join(JOURNAL_DIR);
    match dir.metadata() {
        Ok(meta) if meta.is_dir() => Ok(dir),
        Ok(_) => Err(JournalError::Missing { path: dir }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(JournalError::Missing { path: dir }),
        Err(e) => Err(JournalError::io(dir, e)),
    }
}

/// The segment to start reading at for records after `since`: the last one whose first seq
/// is at most `since` + 1 (records before it are in earlier segments only).
pub(crate) fn start_index(segments: &[SegmentFile], since: u64) -> usize {
    segments
        .partition_point(|s| s.first_seq <= since.saturating_add(1))
        .saturating_sub(1)
}

/// Records with seq > `since`, in order, at most `limit`. Reads from the segment that holds
/// `since` + 1 on, not the whole journal. A last line still being written is not returned.
pub fn read_since(state_dir: &Path, since: u64, limit: usize) -> Result<Vec<Record>, JournalError> {
    let dir = existing_journal_dir(state_dir)?;
    read_since_in(&dir, since, limit)
}

pub(crate) fn read_since_in(
    journal_dir: &Path,
    since: u64,
    limit: usize,
) -> Result<Vec<Record>, JournalError> {
    let mut records = Vec::new();
    if limit == 0 {
        return Ok(records);
    }
    let (segments, first_kept) = kept_segments(journal_dir)?;
    let start = start_index(&segments, since);
    scan(&segments, start, since, first_kept, &mut |record, _| {
        records.push(record);
        if records.len() >= limit {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })?;
    Ok(records)
}

/// Checks every record of the journal. `Ok` only when every line is intact; a torn tail (a
/// last line cut short, or with a wrong checksum, which the next writer would cut off) is
/// reported as damage too, naming the first bad line.
pub fn verify(state_dir: &Path) -> Result<VerifyReport, JournalError> {
    let dir = existing_journal_dir(state_dir)?;
    let (segments, first_kept) = kept_segments(&dir)?;
    let end = scan(&segments, 0, 0, first_kept, &mut |_, _| {
        ControlFlow::Continue(())
    })?;
    if let Some(torn) = end.torn {
        let mut bad = torn.bad;
        bad.reason = format!(
            "{} (a torn tail: nothing intact follows, the next start cuts it off)",
            bad.reason
        );
        return Err(bad.into_damaged());
    }
    Ok(VerifyReport {
        first_seq: first_kept,
        records: end.records,
        segments: segments.len(),
        last_seq: end.last_seq,
        last_epoch: end.last_epoch.unwrap_or(0),
        bytes: end.lengths.iter().sum(),
    })
}
