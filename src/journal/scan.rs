//! Reading segments back: the line-by-line checks shared by open, verify and the readers, and
//! the rule that tells a torn tail from damage.
//!
//! A line fails in one of two ways. Its *framing* can be broken (cut short, malformed, wrong
//! checksum): that is what a write interrupted by a crash leaves, so it is a torn tail if no
//! line after it has a valid checksum, and damage otherwise. Or its checksum is right and its
//! *content* wrong (not a record, a seq gap or duplicate, an epoch out of order): the bytes are
//! as written, so no crash explains them, and that is always damage.

use std::ops::ControlFlow;

use memchr::memchr;

use super::decode::decode_record;
use super::record::{Record, RecordBody};
use super::segment::{check_line, quick_seq, read_segment, SegmentFile};
use super::{JournalError, FORMAT_VERSION};

/// The first line that failed: where it is and what it should have been.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Bad {
    /// Index into the scanned segment list.
    pub segment_index: usize,
    pub segment: String,
    /// Byte offset of the line in its segment.
    pub offset: u64,
    /// The seq the line should have carried.
    pub seq: u64,
    pub reason: String,
}

impl Bad {
    pub fn into_damaged(self) -> JournalError {
        JournalError::Damaged {
            segment: self.segment,
            seq: self.seq,
            offset: self.offset,
            reason: self.reason,
        }
    }
}

/// A torn tail: the first bad line, with nothing intact after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Torn {
    pub bad: Bad,
    /// Bytes from the bad line to the end of the journal, later segments included.
    pub bytes: u64,
}

/// What a scan found, when it found no damage.
#[derive(Debug, Default)]
pub(crate) struct ScanEnd {
    /// Intact records checked, from the start segment on (visited or skipped).
    pub records: u64,
    /// The seq of the last intact record (the one before the start segment's first, when it
    /// found none).
    pub last_seq: u64,
    /// The epoch of the last intact record, when it was decoded.
    pub last_epoch: Option<u64>,
    pub torn: Option<Torn>,
    /// The visitor stopped the scan; the later lines were not read.
    pub stopped: bool,
    /// The length of each segment read, from the start segment on.
    pub lengths: Vec<u64>,
}

/// Where the scan is: the seq the next line must carry and the epoch of the record before.
struct Cursor {
    expected: u64,
    /// `None` when the record before was not decoded (skipped, or before the start segment).
    last_epoch: Option<u64>,
    records: u64,
}

/// Checks every line of `segments[start..]`, in order, and hands each intact record with
/// seq > `since` to `visit` (with its JSON as stored), until `visit` breaks.
///
/// Records with seq <= `since` are checked in their framing and seq only, and are decoded
/// only when their JSON does not begin the way the writer writes it: readers skip them fast.
/// With `start` = 0 the scan begins at seq 1 and checks the epoch rules from the first record.
///
/// Damage is an error; a torn tail is returned in `ScanEnd::torn` for the caller to decide
/// (the writer cuts it off, `verify` reports it, readers treat it as not yet written).
pub(crate) fn scan(
    segments: &[SegmentFile],
    start: usize,
    since: u64,
    first_kept: u64,
    visit: &mut dyn FnMut(Record, &[u8]) -> ControlFlow<()>,
) -> Result<ScanEnd, JournalError> {
    let mut end = ScanEnd::default();
    let Some(first) = segments.get(start) else {
        return Ok(end);
    };
    let mut cursor = if start == 0 {
        Cursor {
            // 1, or where retirement left the journal starting.
            expected: first_kept,
            // From seq 1 every epoch must begin with its start record; after a retirement the
            // first kept record may be in the middle of one.
            last_epoch: (first_kept <= 1).then_some(0),
            records: 0,
        }
    } else {
        Cursor {
            expected: first.first_seq,
            last_epoch: None,
            records: 0,
        }
    };
    let mut buf = Vec::new();
    // An empty segment whose name does not fit: harmless at the end of the journal (the
    // writer removes it), damage if records follow it.
    let mut stray_empty: Option<Bad> = None;
    let mut torn: Option<Torn> = None;
    for (index, segment) in segments.iter().enumerate().skip(start) {
        read_segment(segment, &mut buf)?;
        end.lengths.push(buf.len() as u64);
        if let Some(torn) = &mut torn {
            if has_intact_line(&buf) {
                return Err(torn.bad.clone().into_damaged());
            }
            torn.bytes += buf.len() as u64;
            continue;
        }
        if buf.is_empty() {
            if segment.first_seq != cursor.expected && stray_empty.is_none() {
                stray_empty = Some(Bad {
                    segment_index: index,
                    segment: segment.name.clone(),
                    offset: 0,
                    seq: cursor.expected,
                    reason: format!(
                        "empty segment named for seq {}, but seq {} comes next",
                        segment.first_seq, cursor.expected
                    ),
                });
            }
            continue;
        }
        if let Some(stray) = stray_empty.take() {
            return Err(stray.into_damaged());
        }
        match scan_segment(index, segment, &buf, since, &mut cursor, visit)? {
            SegmentEnd::Complete => {}
            SegmentEnd::Stopped => {
                end.stopped = true;
                break;
            }
            SegmentEnd::Torn(bad) => {
                let bytes = buf.len() as u64 - bad.offset;
                torn = Some(Torn { bad, bytes });
            }
        }
    }
    end.records = cursor.records;
    end.last_seq = cursor.expected - 1;
    end.last_epoch = cursor.last_epoch;
    end.torn = torn;
    Ok(end)
}

enum SegmentEnd {
    Complete,
    Stopped,
    /// A line with broken framing and no intact line after it in this segment.
    Torn(Bad),
}

fn scan_segment(
    index: usize,
    segment: &SegmentFile,
    buf: &[u8],
    since: u64,
    cursor: &mut Cursor,
    visit: &mut dyn FnMut(Record, &[u8]) -> ControlFlow<()>,
) -> Result<SegmentEnd, JournalError> {
    let mut pos = 0;
    while pos < buf.len() {
        let offset = pos as u64;
        let bad = |reason: String| Bad {
            segment_index: index,
            segment: segment.name.clone(),
            offset,
            seq: cursor.expected,
            reason,
        };
        let Some(len) = memchr(b'\n', &buf[pos..]) else {
            return Ok(SegmentEnd::Torn(bad(format!(
                "cut short: {} bytes without a newline at the end of the segment",
                buf.len() - pos
            ))));
        };
        let line = &buf[pos..pos + len];
        pos += len + 1;
        let json = match check_line(line) {
            Ok(json) => json,
            Err(e) => {
                let bad = bad(e.to_string());
                if has_intact_line(&buf[pos..]) {
                    return Err(bad.into_damaged());
                }
                return Ok(SegmentEnd::Torn(bad));
            }
        };
        // Checked at the first intact line rather than before it: a segment that holds only
        // torn bytes is a torn tail, whatever its name.
        if offset == 0 && segment.first_seq != cursor.expected {
            return Err(bad(format!(
                "segment is named for seq {}, but seq {} comes next",
                segment.first_seq, cursor.expected
            ))
            .into_damaged());
        }
        if cursor.expected <= since {
            if let Some(seq) = quick_seq(json) {
                if seq != cursor.expected {
                    return Err(bad(seq_reason(seq, cursor.expected)).into_damaged());
                }
                cursor.expected += 1;
                cursor.records += 1;
                cursor.last_epoch = None;
                continue;
            }
        }
        let record = match decode_record(json) {
            Ok(record) => record,
            Err(e) => {
                return Err(bad(format!(
                    "checksum is right but the JSON is not a record: {e}"
                ))
                .into_damaged())
            }
        };
        if let Err(reason) = check_record(&record, cursor) {
            return Err(bad(reason).into_damaged());
        }
        if let RecordBody::Start(start) = &record.body {
            // Format 0 never existed; a newer format may mean things this reader would get
            // wrong.
            if start.format == 0 || start.format > FORMAT_VERSION {
                return Err(JournalError::Unsupported {
                    segment: segment.name.clone(),
                    seq: record.seq,
                    format: start.format,
                });
            }
        }
        cursor.expected += 1;
        cursor.records += 1;
        cursor.last_epoch = Some(record.epoch);
        if record.seq > since && visit(record, json).is_break() {
            return Ok(SegmentEnd::Stopped);
        }
    }
    Ok(SegmentEnd::Complete)
}

/// The rules a checksum-valid record must follow at the cursor.
fn check_record(record: &Record, cursor: &Cursor) -> Result<(), String> {
    if record.seq != cursor.expected {
        return Err(seq_reason(record.seq, cursor.expected));
    }
    if record.epoch == 0 {
        return Err("epoch 0: epochs begin at 1".to_owned());
    }
    let Some(last_epoch) = cursor.last_epoch else {
        return Ok(());
    };
    let is_start = matches!(record.body, RecordBody::Start(_));
    if record.epoch < last_epoch {
        return Err(format!(
            "epoch {} after epoch {last_epoch}: epochs never decrease",
            record.epoch
        ));
    }
    if record.epoch > last_epoch && !is_start {
        return Err(format!(
            "epoch {} begins with a {} record, not start",
            record.epoch,
            record.body.kind()
        ));
    }
    if record.epoch == last_epoch && is_start {
        return Err(format!("a second start record in epoch {}", record.epoch));
    }
    Ok(())
}

fn seq_reason(seq: u64, expected: u64) -> String {
    let what = if seq < expected {
        "duplicate or old"
    } else {
        "gap"
    };
    format!("seq {seq} where seq {expected} comes next ({what})")
}

/// Whether any complete line in `bytes` has intact framing: then what came before it was not
/// a torn tail but damage.
fn has_intact_line(bytes: &[u8]) -> bool {
    let mut pos = 0;
    while let Some(len) = memchr(b'\n', &bytes[pos..]) {
        if check_line(&bytes[pos..pos + len]).is_ok() {
            return true;
        }
        pos += len + 1;
    }
    false
}
