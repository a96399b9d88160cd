//! The journal: an append-only, checksummed, segmented record of everything compute_ctl did.
//!
//! The journal is the source of truth of a compute: the driver appends a record (and the
//! append is durable) before it publishes or acts on what the record says, and on start it
//! rebuilds its state by replaying the records. This module owns the bytes on disk; what the
//! records mean is in [`record`].
//!
//! # On-disk format, version 1 ([`FORMAT_VERSION`])
//!
//! ```text
//! <state-dir>/
//!   LOCK                              exclusive flock(2) of the running writer; holds its pid
//!   journal/
//!     00000000000000000001.log        a segment: records 1 ..
//!     00000000000000000213.log        the next segment: records 213 ..
//!     RETIRED                         once old segments were deleted: the first seq kept
//!   specs/<sha256 hex>.json           accepted specs, written atomically (see `specs`)
//! ```
//!
//! **Segments.** A segment file is named by the seq of its first record, as 20 decimal digits
//! with leading zeros, then `.log` ([`segment_name`]). Files in `journal/` with other names are
//! ignored. Sorted by name, the segments hold every record from seq 1 (or from the seq that
//! `RETIRED` names) on, without a gap: the first segment is `00000000000000000001.log` (or the
//! one `RETIRED` names), and each later one is named by the seq that
//! follows the last record of the one before. A writer starts a new segment before an append
//! whose lines would push the current one past [`JournalConfig::segment_bytes_max`]; one
//! append never spans two segments (so a segment can exceed that size by one append), and the
//! journal directory is fsynced when a segment is created.
//!
//! **Retention.** When a new segment starts and more than
//! [`JournalConfig::segments_kept_max`] exist (default 8, so 128 MiB), the oldest are retired:
//! `RETIRED` is written atomically with the first seq of the oldest segment kept, then the
//! older files are deleted and the directory fsynced. The segment holding the last
//! `spec_accepted` record and every later one are never retired, so a restart always finds
//! the desired spec. A crash between the two leaves files below `RETIRED`, which readers
//! ignore and the next writer deletes; a first segment missing without `RETIRED` naming its
//! successor is damage. After a retirement the first kept record may be in the middle of an
//! epoch. An empty or torn-away segment at the very end is also removed (see "Opening").
//!
//! **Lines.** A segment is a sequence of lines, one record each:
//!
//! ```text
//! e3069283 {"seq":1,"epoch":1,"ts":"2026-11-25T01:02:03.456Z","mono_ms":0,"kind":"start",...}\n
//! ```
//!
//! that is: the CRC32C (Castagnoli) of the JSON bytes as exactly 8 lowercase hex digits, one
//! space (0x20), the JSON object as compact UTF-8 (serde_json's output, which never holds a
//! raw newline), and one newline (0x0A). Nothing else: no header, no padding, no trailer. The
//! whole line, newline included, is at most [`JournalConfig::record_bytes_max`] bytes.
//!
//! **Records.** The JSON object is a [`Record`]: `seq`, `epoch`, `ts`, `mono_ms`, then `kind`
//! and the fields of that kind (`start`, `spec_accepted`, `transition`, `step_started`,
//! `step_finished`), in that order as written; readers accept any key order. `seq` is 1 for
//! the first record ever and +1 for each record after it, across segments and restarts.
//! `epoch` is one per writer: a writer that opens the journal takes the last epoch in it + 1,
//! and its first record is a `start` record (whose `format` is [`FORMAT_VERSION`]); no other
//! record is `start`, and epochs never decrease. `ts` is the wall time of the append, RFC 3339
//! UTC with milliseconds; `mono_ms` the writer's monotonic clock, given by the caller.
//!
//! **Durability.** One [`JournalStore::append`] writes its records with one `write` and one
//! `fdatasync` of the segment; it returns only after both succeeded. A failed write or fsync
//! poisons the journal (every later append fails): the caller exits, and the next start
//! replays what is on disk. Nothing is retried.
//!
//! **Opening** ([`FileJournal::open`]) takes the LOCK, then checks every line in order: its
//! framing and checksum, that its JSON is a record, that its seq is the next one (and the
//! first of a segment is the seq in the segment's name), and the epoch rules. The first line
//! that fails decides:
//!
//! - a *torn tail*: the line is cut short (no newline), malformed or fails its checksum, and
//!   no line after it (in this or a later segment) has a valid checksum. The writer died in
//!   the middle of an append that was never acknowledged. The segment is truncated at the
//!   start of that line and fsynced, later segment files are removed, a segment left empty is
//!   removed too (then the directory is fsynced), and the cut is reported as a [`TornTail`].
//! - *damage*: anything else (a checksum-valid line after the bad one, or a line whose
//!   checksum is right but whose content is wrong: bad JSON, a seq gap or duplicate, a wrong
//!   epoch). Opening fails with [`JournalError::Damaged`] naming the segment, the seq the bad
//!   line should have carried and its byte offset, and modifies nothing.
//!
//! An empty segment file at the end (a writer died between creating it and writing to it) is
//! removed on open; it held nothing.
//!
//! **Readers** ([`read_since`], [`dump`], [`verify`]) open files read-only, take no lock,
//! create nothing, and may run while a writer appends: a last line without its newline yet is
//! not visible to them (except to `verify`, which reports it as a torn tail).

mod batch;
mod decode;
mod dump;
mod error;
mod file;
mod memory;
mod read;
pub mod record;
mod scan;
mod segment;
pub mod specs;

pub use dump::dump;
pub use error::JournalError;
pub use file::{FileJournal, OpenReport};
pub use memory::MemoryJournal;
pub use read::{read_since, verify, VerifyReport};
pub use record::*;
pub use segment::{parse_segment_name, segment_name};
pub use specs::{load_spec, spec_path, store_spec};

use std::time::SystemTime;

/// The version of the on-disk format described above; written in every `start` record. A
/// journal whose `start` record names a newer version is refused, not guessed at.
pub const FORMAT_VERSION: u32 = 1;

/// The journal's directory inside the state directory.
pub const JOURNAL_DIR: &str = "journal";

/// The lock file inside the state directory, held by the running writer.
pub const LOCK_FILE: &str = "LOCK";

/// The default [`JournalConfig::segment_bytes_max`]: 16 MiB.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 16 * 1024 * 1024;

/// The default [`JournalConfig::segments_kept_max`]: 8 segments, 128 MiB with the default
/// segment size.
pub const SEGMENTS_KEPT_MAX_DEFAULT: usize = 8;

/// The default [`JournalConfig::record_bytes_max`]: 1 MiB.
pub const RECORD_BYTES_MAX_DEFAULT: usize = 1024 * 1024;

/// The limits a writer keeps to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalConfig {
    /// A new segment starts before an append that would push the current one past this.
    pub segment_bytes_max: u64,
    /// The longest line (checksum, space, JSON, newline) an append writes; a longer record is
    /// refused before anything is written.
    pub record_bytes_max: usize,
    /// How many segments are kept: when a new one starts, the oldest beyond this are retired
    /// (deleted), except the segment holding the last `spec_accepted` record and those after
    /// it, which a restart replays. 0 keeps every segment.
    pub segments_kept_max: usize,
}

impl Default for JournalConfig {
    fn default() -> JournalConfig {
        JournalConfig {
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            record_bytes_max: RECORD_BYTES_MAX_DEFAULT,
            segments_kept_max: SEGMENTS_KEPT_MAX_DEFAULT,
        }
    }
}

impl JournalConfig {
    /// Refuses limits no record could fit in.
    pub(crate) fn check(&self) -> Result<(), JournalError> {
        // The smallest record a writer produces is well over this; a limit below it would
        // refuse every append, which is a configuration error to report at open.
        const RECORD_BYTES_MIN: usize = 128;
        if self.record_bytes_max < RECORD_BYTES_MIN {
            return Err(JournalError::Invalid {
                reason: format!(
                    "record_bytes_max {} is below the minimum of {RECORD_BYTES_MIN}",
                    self.record_bytes_max
                ),
            });
        }
        if self.segment_bytes_max == 0 {
            return Err(JournalError::Invalid {
                reason: "segment_bytes_max is 0".to_owned(),
            });
        }
        Ok(())
    }
}

/// Where records are kept: a directory of segment files ([`FileJournal`]) or memory
/// ([`MemoryJournal`]). Both follow the same rules, checked by one conformance suite.
pub trait JournalStore {
    /// Appends one record per body: assigns `seq` (last + 1, ...), the current `epoch`, and
    /// `ts` from `wall`; checks every record before anything is written (the first record of
    /// an epoch is `start` and no other is, each line fits `record_bytes_max`); writes them
    /// all and makes them durable with one fsync. Returns the records as written. On an error
    /// nothing is appended; an I/O error poisons the store (every later append fails).
    fn append(
        &mut self,
        bodies: Vec<RecordBody>,
        mono_ms: u64,
        wall: SystemTime,
    ) -> Result<Vec<Record>, JournalError>;

    /// The seq of the last record, 0 for an empty journal.
    fn last_seq(&self) -> u64;

    /// This writer's epoch: the last epoch in the journal when it was opened, + 1.
    fn epoch(&self) -> u64;

    /// Records with seq > `since`, in order, at most `limit`.
    fn read_since(&self, since: u64, limit: usize) -> Result<Vec<Record>, JournalError>;
}

/// What a writer's appends did since it was opened (the fsyncs of `open` itself, when it
/// creates directories or cuts a torn tail, are not counted): the benchmark and `/metrics`
/// read these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct JournalStats {
    /// Successful `append` calls that wrote at least one record.
    pub appends: u64,
    pub records: u64,
    /// Bytes of lines written.
    pub bytes: u64,
    /// `fdatasync`s of segment files.
    pub file_fsyncs: u64,
    /// fsyncs of the journal directory (one per segment created).
    pub dir_fsyncs: u64,
    pub segments_created: u64,
    /// Old segments deleted by retention.
    pub segments_retired: u64,
}

impl JournalStats {
    /// All fsyncs, of files and of the directory.
    pub fn fsyncs(&self) -> u64 {
        self.file_fsyncs + self.dir_fsyncs
    }
}
