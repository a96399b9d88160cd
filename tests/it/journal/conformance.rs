//! The conformance suite: one set of behaviours, run against the file and the memory journal.

use std::time::{Duration, UNIX_EPOCH};

use compute_ctl::journal::{
    FileJournal, JournalConfig, JournalError, JournalStore, MemoryJournal, RecordBody,
    StepFinishedRecord,
};
use states::{StepId, StepName};
use tempfile::TempDir;

use super::{body, config, start_body, wall, WALL_TS};

/// Makes fresh stores and reopens them (a restart: a new writer on the same records).
trait Harness {
    type Store: JournalStore;
    fn fresh(&mut self, config: JournalConfig) -> Self::Store;
    fn reopen(&mut self, store: Self::Store) -> Self::Store;
}

struct Files {
    root: TempDir,
    made: usize,
    config: JournalConfig,
}

impl Harness for Files {
    type Store = FileJournal;

    fn fresh(&mut self, config: JournalConfig) -> FileJournal {
        self.made += 1;
        self.config = config;
        let dir = self.root.path().join(format!("state-{}", self.made));
        super::reopen(&dir, config, |_| {}).unwrap().0
    }

    fn reopen(&mut self, store: FileJournal) -> FileJournal {
        let dir = store.state_dir().to_owned();
        // The lock goes with the old writer.
        drop(store);
        super::reopen(&dir, self.config, |_| {}).unwrap().0
    }
}

struct Memory;

impl Harness for Memory {
    type Store = MemoryJournal;

    fn fresh(&mut self, config: JournalConfig) -> MemoryJournal {
        MemoryJournal::new(config)
    }

    fn reopen(&mut self, store: MemoryJournal) -> MemoryJournal {
        store.reopen()
    }
}

fn files() -> Files {
    Files {
        root: tempfile::tempdir().unwrap(),
        made: 0,
        config: JournalConfig::default(),
    }
}

fn is_invalid<T: std::fmt::Debug>(result: Result<T, JournalError>) -> bool {
    matches!(result, Err(JournalError::Invalid { .. }))
}

fn seqs(records: &[compute_ctl::journal::Record]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

fn first_record_of_an_epoch_must_be_start(h: &mut impl Harness) {
    let mut j = h.fresh(JournalConfig::default());
    assert_eq!((j.last_seq(), j.epoch()), (0, 1));
    assert!(is_invalid(j.append(vec![body(0)], 0, wall())));
    assert!(is_invalid(j.append(vec![body(0), start_body()], 0, wall())));
    assert_eq!(j.last_seq(), 0);
    assert!(j.read_since(0, 10).unwrap().is_empty());

    let written = j.append(vec![start_body(), body(1)], 7, wall()).unwrap();
    assert_eq!(seqs(&written), [1, 2]);
    assert!(written
        .iter()
        .all(|r| r.epoch == 1 && r.mono_ms == 7 && r.ts == WALL_TS));
    assert!(matches!(written[0].body, RecordBody::Start(_)));
    assert_eq!(j.read_since(0, 10).unwrap(), written);
}

fn a_second_start_in_an_epoch_is_refused_and_nothing_is_written(h: &mut impl Harness) {
    let mut j = h.fresh(JournalConfig::default());
    j.append(vec![start_body()], 0, wall()).unwrap();
    assert!(is_invalid(j.append(vec![start_body()], 0, wall())));
    assert!(is_invalid(j.append(vec![body(1), start_body()], 0, wall())));
    assert_eq!(j.last_seq(), 1);
    let next = j.append(vec![body(2)], 0, wall()).unwrap();
    assert_eq!(seqs(&next), [2]);
    assert_eq!(seqs(&j.read_since(0, 10).unwrap()), [1, 2]);
}

fn seq_continues_and_epoch_grows_across_reopens(h: &mut impl Harness) {
    let mut j = h.fresh(JournalConfig::default());
    j.append(vec![start_body(), body(1), body(2), body(3)], 0, wall())
        .unwrap();
    let mut j = h.reopen(j);
    assert_eq!((j.last_seq(), j.epoch()), (4, 2));
    assert!(is_invalid(j.append(vec![body(4)], 0, wall())));
    let written = j.append(vec![start_body(), body(5)], 1, wall()).unwrap();
    assert_eq!(seqs(&written), [5, 6]);
    assert!(written.iter().all(|r| r.epoch == 2));
    // A writer that appends nothing leaves no trace: the next takes the same epoch number.
    let j = h.reopen(j);
    assert_eq!(j.epoch(), 3);
    let mut j = h.reopen(j);
    assert_eq!((j.last_seq(), j.epoch()), (6, 3));
    j.append(vec![start_body()], 0, wall()).unwrap();
    let all = j.read_since(0, 100).unwrap();
    assert_eq!(seqs(&all), [1, 2, 3, 4, 5, 6, 7]);
    let epochs: Vec<u64> = all.iter().map(|r| r.epoch).collect();
    assert_eq!(epochs, [1, 1, 1, 1, 2, 2, 3]);
}

fn read_since_returns_records_after_since_up_to_limit(h: &mut impl Harness) {
    let mut j = h.fresh(JournalConfig::default());
    j.append(vec![start_body()], 0, wall()).unwrap();
    for i in 1..10 {
        j.append(vec![body(i)], i, wall()).unwrap();
    }
    assert_eq!(seqs(&j.read_since(0, 3).unwrap()), [1, 2, 3]);
    assert_eq!(seqs(&j.read_since(3, 100).unwrap()), [4, 5, 6, 7, 8, 9, 10]);
    assert_eq!(seqs(&j.read_since(8, 1).unwrap()), [9]);
    assert!(j.read_since(10, 5).unwrap().is_empty());
    assert!(j.read_since(100, 5).unwrap().is_empty());
    assert!(j.read_since(2, 0).unwrap().is_empty());
    let all = j.read_since(0, 100).unwrap();
    assert_eq!(all[4].mono_ms, 4);
    assert_eq!(all[4].body, body(4));
}

fn an_oversized_record_refuses_its_whole_batch(h: &mut impl Harness) {
    let mut j = h.fresh(JournalConfig {
        record_bytes_max: 1024,
        ..JournalConfig::default()
    });
    j.append(vec![start_body()], 0, wall()).unwrap();
    let big = RecordBody::StepFinished(StepFinishedRecord {
        id: StepId(1),
        step: StepName::ApplySpec,
        ok: true,
        duration_ms: 1,
        output: Some(serde_json::json!({ "text": "x".repeat(2000) })),
        error: None,
    });
    let err = j.append(vec![body(1), big], 0, wall()).unwrap_err();
    assert!(
        err.to_string().contains("seq 3") && err.to_string().contains("record_bytes_max"),
        "{err}"
    );
    assert_eq!(j.last_seq(), 1);
    assert_eq!(seqs(&j.read_since(0, 10).unwrap()), [1]);
    assert_eq!(seqs(&j.append(vec![body(2)], 0, wall()).unwrap()), [2]);
}

fn an_empty_append_writes_nothing(h: &mut impl Harness) {
    let mut j = h.fresh(JournalConfig::default());
    assert!(j.append(Vec::new(), 0, wall()).unwrap().is_empty());
    // The start rule still holds after it.
    assert!(is_invalid(j.append(vec![body(1)], 0, wall())));
    assert_eq!(j.last_seq(), 0);
}

fn a_wall_time_outside_1970_to_9999_is_refused(h: &mut impl Harness) {
    let mut j = h.fresh(JournalConfig::default());
    let before_1970 = UNIX_EPOCH - Duration::from_secs(1);
    let after_9999 = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
    assert!(is_invalid(j.append(vec![start_body()], 0, before_1970)));
    assert!(is_invalid(j.append(vec![start_body()], 0, after_9999)));
    assert_eq!(j.last_seq(), 0);
    let last_ms = UNIX_EPOCH + Duration::from_millis(253_402_300_799_999);
    let written = j.append(vec![start_body()], 0, last_ms).unwrap();
    assert_eq!(written[0].ts, "9999-12-31T23:59:59.999Z");
}

fn a_start_record_of_another_format_is_refused(h: &mut impl Harness) {
    let mut j = h.fresh(JournalConfig::default());
    let mut start = start_body();
    if let RecordBody::Start(s) = &mut start {
        s.format += 1;
    }
    assert!(is_invalid(j.append(vec![start], 0, wall())));
    assert_eq!(j.last_seq(), 0);
}

fn batches_and_single_appends_read_back_alike(h: &mut impl Harness) {
    let mut j = h.fresh(config(2048));
    let mut written = j.append(vec![start_body()], 0, wall()).unwrap();
    for i in 1..40 {
        let bodies: Vec<RecordBody> = (0..(i % 4)).map(|k| body(i * 10 + k)).collect();
        written.extend(j.append(bodies, i, wall()).unwrap());
    }
    assert_eq!(j.last_seq(), written.len() as u64);
    assert_eq!(j.read_since(0, 10_000).unwrap(), written);
    let tail = j.read_since(25, 10).unwrap();
    assert_eq!(tail, written[25..35]);
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod file {
            $(#[test] fn $name() { super::$name(&mut super::files()); })*
        }
        mod memory {
            $(#[test] fn $name() { super::$name(&mut super::Memory); })*
        }
    };
}

conformance!(
    first_record_of_an_epoch_must_be_start,
    a_second_start_in_an_epoch_is_refused_and_nothing_is_written,
    seq_continues_and_epoch_grows_across_reopens,
    read_since_returns_records_after_since_up_to_limit,
    an_oversized_record_refuses_its_whole_batch,
    an_empty_append_writes_nothing,
    a_wall_time_outside_1970_to_9999_is_refused,
    a_start_record_of_another_format_is_refused,
    batches_and_single_appends_read_back_alike,
);
