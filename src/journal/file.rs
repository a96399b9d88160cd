//! The file journal: the one writer of a state directory's segments.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::batch::{self, Tip};
use super::record::{Record, RecordBody, TornTail};
use super::scan::{scan, Torn};
use super::segment::{kept_segments, list_segments, segment_name, SegmentFile, RETIRED_FILE};
use super::{
    read, JournalConfig, JournalError, JournalStats, JournalStore, JOURNAL_DIR, LOCK_FILE,
};
use crate::durable::{create_dir_all_durable, fsync_dir, write_atomic};

/// What opening the journal found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenReport {
    /// Intact records replayed.
    pub records: u64,
    /// The seq of the last intact record, 0 for an empty journal.
    pub last_seq: u64,
    /// The epoch of the last intact record, 0 for an empty journal; this writer's is one more.
    pub last_epoch: u64,
    /// The torn last record(s) cut off, if any.
    pub torn_tail: Option<TornTail>,
}

/// The segment appends go to.
#[derive(Debug)]
struct Segment {
    name: String,
    path: PathBuf,
    /// Opened for appending: every write lands at the end.
    file: File,
    /// Bytes in the file: all of them intact lines.
    len: u64,
}

/// The journal of one state directory, open for appending. Holds the state directory's
/// LOCK for its whole life; dropping it releases the lock.
#[derive(Debug)]
pub struct FileJournal {
    state_dir: PathBuf,
    journal_dir: PathBuf,
    config: JournalConfig,
    /// The flock lives as long as this open file description.
    _lock: File,
    /// `None` until the first append of an empty journal creates a segment.
    current: Option<Segment>,
    tip: Tip,
    stats: JournalStats,
    /// Why appends are refused: a write or fsync failed, so the bytes on disk are unknown.
    poisoned: Option<(PathBuf, String)>,
    /// The seq of the last `spec_accepted` record: retention never deletes its segment.
    protect_seq: u64,
}

impl FileJournal {
    /// Opens the journal of `state_dir` for appending (creating the directories if needed),
    /// holding its LOCK, and replays it: `visit` sees every intact record in order. A torn
    /// tail is cut off and reported; damage is an error and leaves every file as it was (by
    /// then `visit` may have seen the records before the damage).
    pub fn open(
        state_dir: &Path,
        config: JournalConfig,
        mut visit: impl FnMut(&Record),
    ) -> Result<(FileJournal, OpenReport), JournalError> {
        config.check()?;
        create_dir_all_durable(state_dir)?;
        let lock = lock_state_dir(state_dir)?;
        let journal_dir = state_dir.join(JOURNAL_DIR);
        create_dir_all_durable(&journal_dir)?;

        let (segments, first_kept) = kept_segments(&journal_dir)?;
        let mut protect_seq = 0;
        let end = scan(&segments, 0, 0, first_kept, &mut |record, _| {
            if matches!(record.body, RecordBody::SpecAccepted(_)) {
                protect_seq = record.seq;
            }
            visit(&record);
            ControlFlow::Continue(())
        })?;
        // Files a retirement marked retired but a crash left behind.
        remove_retired(&journal_dir, first_kept)?;

        // The length each segment keeps: all of it, up to the torn line, or nothing after it.
        let mut keep: Vec<u64> = end.lengths.clone();
        let torn_tail = end.torn.as_ref().map(|torn| torn_tail(torn, &segments));
        if let Some(Torn { bad, .. }) = &end.torn {
            keep[bad.segment_index] = bad.offset;
            for len in &mut keep[bad.segment_index + 1..] {
                *len = 0;
            }
        }
        let current = repair(&journal_dir, &segments, &end.lengths, &keep)?;
        if let Some(torn) = &torn_tail {
            log::warn!(
                "journal {}: cut off a torn tail of {} bytes at segment {} byte offset {}: {}",
                journal_dir.display(),
                torn.bytes,
                torn.segment,
                torn.offset,
                torn.reason
            );
        }

        let last_epoch = end.last_epoch.unwrap_or(0);
        let report = OpenReport {
            records: end.records,
            last_seq: end.last_seq,
            last_epoch,
            torn_tail,
        };
        let journal = FileJournal {
            state_dir: state_dir.to_owned(),
            journal_dir,
            config,
            _lock: lock,
            current,
            tip: Tip::opened(end.last_seq, last_epoch),
            stats: JournalStats::default(),
            poisoned: None,
            protect_seq,
        };
        Ok((journal, report))
    }

    /// What this writer's appends did since it was opened (open's own work not counted).
    pub fn stats(&self) -> JournalStats {
        self.stats
    }

    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    pub fn journal_dir(&self) -> &Path {
        &self.journal_dir
    }

    pub fn config(&self) -> JournalConfig {
        self.config
    }

    /// Writes `lines` (the records from `first_seq` on) durably, starting a segment first if
    /// the current one would grow past its limit.
    fn write(&mut self, first_seq: u64, lines: &[u8]) -> Result<(), JournalError> {
        let rotate = match &self.current {
            None => true,
            Some(segment) => {
                segment.len > 0 && segment.len + lines.len() as u64 > self.config.segment_bytes_max
            }
        };
        if rotate {
            let name = segment_name(first_seq);
            let path = self.journal_dir.join(&name);
            crate::failpoint!("journal.segment.create", |e| Err(JournalError::io(
                &path, e
            )));
            let file = OpenOptions::new()
                .append(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| JournalError::io(&path, e))?;
            self.stats.segments_created += 1;
            crate::failpoint!("journal.segment.created", |e| Err(JournalError::io(
                &path, e
            )));
            // The new name must be on disk before records in it are acknowledged.
            fsync_dir(&self.journal_dir)?;
            self.stats.dir_fsyncs += 1;
            self.current = Some(Segment {
                name,
                path,
                file,
                len: 0,
            });
        }
        let Some(segment) = &mut self.current else {
            return Err(JournalError::Invalid {
                reason: "no segment to append to".to_owned(),
            });
        };
        crate::failpoint!("journal.append.before_write", |e| Err(JournalError::io(
            &segment.path,
            e
        )));
        segment
            .file
            .write_all(lines)
            .map_err(|e| JournalError::io(&segment.path, e))?;
        // fdatasync: the data and the file size, which is all a reader needs. (An error armed
        // at the failpoint comes out as the fsync's own.)
        crate::failpoint_io!("journal.append.written")
            .and_then(|()| segment.file.sync_data())
            .map_err(|e| JournalError::io(&segment.path, e))?;
        self.stats.file_fsyncs += 1;
        segment.len += lines.len() as u64;
        crate::failpoint!("journal.append.synced", |e| Err(JournalError::io(
            &segment.path,
            e
        )));
        Ok(())
    }

    /// Deletes the oldest segments beyond `segments_kept_max`, never the one holding the last
    /// `spec_accepted` record or any after it. `RETIRED` names the first kept seq before any
    /// file goes, so a crash in between leaves files that the next open removes, and a first
    /// segment lost any other way still reads as damage.
    fn retire(&mut self) -> Result<(), JournalError> {
        let kept_max = self.config.segments_kept_max;
        if kept_max == 0 {
            return Ok(());
        }
        let (segments, _) = kept_segments(&self.journal_dir)?;
        if segments.len() <= kept_max {
            return Ok(());
        }
        let holding_spec = segments
            .iter()
            .rposition(|s| s.first_seq <= self.protect_seq)
            .unwrap_or(0);
        let retire = (segments.len() - kept_max).min(holding_spec);
        if retire == 0 {
            return Ok(());
        }
        let first_kept = segments[retire].first_seq;
        write_atomic(
            &self.journal_dir.join(RETIRED_FILE),
            format!("{first_kept}\n").as_bytes(),
        )?;
        crate::failpoint!("journal.segment.retire", |e| Err(JournalError::io(
            &self.journal_dir,
            e
        )));
        remove_retired(&self.journal_dir, first_kept)?;
        crate::failpoint!("journal.segment.retired", |e| Err(JournalError::io(
            &self.journal_dir,
            e
        )));
        self.stats.segments_retired += retire as u64;
        Ok(())
    }

    /// The segment appends go to now, if any.
    pub fn current_segment(&self) -> Option<&str> {
        self.current.as_ref().map(|s| s.name.as_str())
    }
}

impl JournalStore for FileJournal {
    fn append(
        &mut self,
        bodies: Vec<RecordBody>,
        mono_ms: u64,
        wall: SystemTime,
    ) -> Result<Vec<Record>, JournalError> {
        if let Some((path, reason)) = &self.poisoned {
            return Err(JournalError::Poisoned {
                path: path.clone(),
                reason: reason.clone(),
            });
        }
        if bodies.is_empty() {
            return Ok(Vec::new());
        }
        let started = std::time::Instant::now();
        let fsyncs_before = self.stats.fsyncs();
        let batch = batch::build(self.tip, bodies, mono_ms, wall, &self.config)?;
        let first_seq = self.tip.last_seq + 1;
        if let Err(e) = self.write(first_seq, &batch.lines) {
            let path = match &e {
                JournalError::Io { path, .. } => path.clone(),
                _ => self.journal_dir.clone(),
            };
            self.poisoned = Some((path, e.to_string()));
            return Err(e);
        }
        let rotated = self
            .current
            .as_ref()
            .is_some_and(|s| s.len == batch.lines.len() as u64);
        self.tip = self.tip.after(&batch);
        self.stats.appends += 1;
        self.stats.records += batch.records.len() as u64;
        crate::metrics::journal_appended(
            batch.records.len(),
            self.stats.fsyncs() - fsyncs_before,
            started.elapsed(),
        );
        self.stats.bytes += batch.lines.len() as u64;
        if let Some(accepted) = batch
            .records
            .iter()
            .rev()
            .find(|r| matches!(r.body, RecordBody::SpecAccepted(_)))
        {
            self.protect_seq = accepted.seq;
        }
        if rotated {
            // The records are durable already; a failed retirement only leaves old segments.
            if let Err(e) = self.retire() {
                log::warn!(
                    "journal {}: old segments not retired: {e}",
                    self.journal_dir.display()
                );
            }
        }
        Ok(batch.records)
    }

    fn last_seq(&self) -> u64 {
        self.tip.last_seq
    }

    fn epoch(&self) -> u64 {
        self.tip.epoch
    }

    fn read_since(&self, since: u64, limit: usize) -> Result<Vec<Record>, JournalError> {
        read::read_since_in(&self.journal_dir, since, limit)
    }
}

/// Takes the state directory's LOCK without waiting, and writes our pid into it.
///
/// The lock is a flock(2) on this open file description. std opens files close-on-exec, so
/// the processes we start (Postgres, the sidecar) do not inherit it: a postmaster that
/// outlives a crashed compute_ctl does not keep the next one out.
fn lock_state_dir(state_dir: &Path) -> Result<File, JournalError> {
    let path = state_dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| JournalError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let holder_pid = read_pid(&mut file);
            return Err(JournalError::Locked { path, holder_pid });
        }
        Err(TryLockError::Error(e)) => return Err(JournalError::io(&path, e)),
    }
    // The pid is for the error message of a second opener only: it need not survive a crash
    // (the lock does not either), so it is not fsynced.
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()));
    written.map_err(|e| JournalError::io(&path, e))?;
    Ok(file)
}

/// The pid in a LOCK file, if it holds one (its holder may be writing it this moment).
fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.take(32).read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// The `TornTail` of a torn scan, naming the cut.
fn torn_tail(torn: &Torn, segments: &[SegmentFile]) -> TornTail {
    let segment = segments
        .get(torn.bad.segment_index)
        .map_or_else(|| torn.bad.segment.clone(), |s| s.name.clone());
    TornTail {
        segment,
        offset: torn.bad.offset,
        bytes: torn.bytes,
        reason: torn.bad.reason.clone(),
    }
}

/// Removes the segment files named below `first_kept` (retired), then syncs the directory.
fn remove_retired(journal_dir: &Path, first_kept: u64) -> Result<(), JournalError> {
    let mut removed = false;
    for segment in list_segments(journal_dir)? {
        if segment.first_seq >= first_kept {
            continue;
        }
        match fs::remove_file(&segment.path) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(JournalError::io(&segment.path, e)),
        }
    }
    if removed {
        fsync_dir(journal_dir)?;
    }
    Ok(())
}

/// Brings the segment files to the lengths in `keep`: removes the segments left with nothing
/// at the end (then fsyncs the directory), truncates the torn one (then fsyncs it), and returns
/// the last remaining segment, opened for appending.
///
/// Every state a crash can leave in between reads as the same torn tail (or none) on the next
/// open: the removed segments held no intact line, and the truncation comes last.
fn repair(
    journal_dir: &Path,
    segments: &[SegmentFile],
    lengths: &[u64],
    keep: &[u64],
) -> Result<Option<Segment>, JournalError> {
    let last = keep.iter().rposition(|&len| len > 0);
    let remove_from = last.map_or(0, |last| last + 1);
    let mut removed = false;
    for segment in segments[remove_from..].iter().rev() {
        match fs::remove_file(&segment.path) {
            Ok(()) => removed = true,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(JournalError::io(&segment.path, e)),
        }
    }
    if removed {
        fsync_dir(journal_dir)?;
    }
    let Some(last) = last else {
        return Ok(None);
    };
    let segment = &segments[last];
    let file = OpenOptions::new()
        .append(true)
        .open(&segment.path)
        .map_err(|e| JournalError::io(&segment.path, e))?;
    if keep[last] != lengths[last] {
        file.set_len(keep[last])
            .map_err(|e| JournalError::io(&segment.path, e))?;
        file.sync_all()
            .map_err(|e| JournalError::io(&segment.path, e))?;
    }
    Ok(Some(Segment {
        name: segment.name.clone(),
        path: segment.path.clone(),
        file,
        len: keep[last],
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::journal::record::StartRecord;
    use crate::journal::FORMAT_VERSION;

    fn start() -> RecordBody {
        RecordBody::Start(StartRecord {
            format: FORMAT_VERSION,
            version: "test".into(),
            pid: 1,
            pgdata: "/pg".into(),
            torn_tail: None,
            unfinished_steps: Vec::new(),
        })
    }

    #[test]
    fn a_failed_write_changes_nothing_in_memory_and_poisons_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) =
            FileJournal::open(dir.path(), JournalConfig::default(), |_| {}).unwrap();
        journal.append(vec![start()], 0, SystemTime::now()).unwrap();
        let stats = journal.stats();
        // A read-only handle in place of the segment: the next write fails as a full or
        // broken disk would make it fail.
        let segment = journal.current.as_mut().unwrap();
        segment.file = File::open(&segment.path).unwrap();
        let on_disk = fs::read(&segment.path).unwrap();

        let err = journal.append(vec![start()], 0, SystemTime::now());
        // A refused record is refused before any write, and poisons nothing.
        assert!(matches!(err, Err(JournalError::Invalid { .. })), "{err:?}");
        let transition_like = RecordBody::StepStarted(crate::journal::StepStartedRecord {
            id: states::StepId(1),
            step: states::StepName::InitPgdata,
            generation: None,
            detail: None,
        });
        let err = journal
            .append(vec![transition_like.clone()], 0, SystemTime::now())
            .unwrap_err();
        assert!(matches!(err, JournalError::Io { .. }), "{err}");
        assert_eq!(journal.last_seq(), 1);
        assert_eq!(journal.stats(), stats);
        let err = journal
            .append(vec![transition_like], 0, SystemTime::now())
            .unwrap_err();
        assert!(matches!(err, JournalError::Poisoned { .. }), "{err}");
        assert!(
            err.to_string().contains("00000000000000000001.log"),
            "{err}"
        );
        let segment = journal.current.as_ref().unwrap();
        assert_eq!(fs::read(&segment.path).unwrap(), on_disk);
    }
}
