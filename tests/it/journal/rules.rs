//! Lines whose checksum is right but whose content breaks a rule: these are never a torn
//! tail (no crash writes a valid checksum over wrong content), always damage, even at the end.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::Path;

use compute_ctl::journal::{
    read_since, verify, JournalConfig, JournalError, JournalStore, Record, RecordBody,
};

use super::{body, open, reopen, segment_files, snapshot, start_body, wall};

/// A journal of 5 records in epoch 1, the writer gone.
fn journal() -> (tempfile::TempDir, Vec<Record>) {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _, _) = open(dir.path(), JournalConfig::default());
    let records = j
        .append(
            vec![start_body(), body(1), body(2), body(3), body(4)],
            0,
            wall(),
        )
        .unwrap();
    (dir, records)
}

/// Appends `json` as a line with a valid checksum to the last segment; returns its offset.
fn append_line(state_dir: &Path, json: &str) -> u64 {
    let last = segment_files(state_dir).pop().unwrap();
    let offset = fs::metadata(&last).unwrap().len();
    let mut file = OpenOptions::new().append(true).open(&last).unwrap();
    writeln!(file, "{:08x} {json}", crc32c::crc32c(json.as_bytes())).unwrap();
    offset
}

fn record_json(record: &Record) -> String {
    serde_json::to_string(record).unwrap()
}

/// `open` and `verify` both report damage at (seq, offset) with `reason_part`, and open
/// leaves the journal as it was.
fn assert_damaged(state_dir: &Path, seq: u64, offset: u64, reason_part: &str) {
    let journal_dir = state_dir.join("journal");
    let before = snapshot(&journal_dir);
    for (what, result) in [
        ("verify", verify(state_dir).map(|_| ())),
        (
            "open",
            reopen(state_dir, JournalConfig::default(), |_| {}).map(|_| ()),
        ),
    ] {
        match result {
            Err(JournalError::Damaged {
                seq: s,
                offset: o,
                reason,
                ..
            }) => {
                assert_eq!((s, o), (seq, offset), "{what}: {reason}");
                assert!(reason.contains(reason_part), "{what}: {reason}");
            }
            other => panic!("{what}: expected damage, got {other:?}"),
        }
    }
    assert_eq!(
        snapshot(&journal_dir),
        before,
        "open modified a damaged journal"
    );
}

#[test]
fn a_duplicated_last_record_is_damage_not_a_torn_tail() {
    let (dir, records) = journal();
    let offset = append_line(dir.path(), &record_json(&records[4]));
    assert_damaged(dir.path(), 6, offset, "duplicate");
}

#[test]
fn a_seq_gap_at_the_end_is_damage() {
    let (dir, records) = journal();
    let mut gap = records[4].clone();
    gap.seq = 7;
    let offset = append_line(dir.path(), &record_json(&gap));
    assert_damaged(dir.path(), 6, offset, "gap");
}

#[test]
fn valid_checksum_over_invalid_json_is_damage() {
    let (dir, _) = journal();
    let offset = append_line(dir.path(), "{\"seq\":6,");
    assert_damaged(dir.path(), 6, offset, "not a record");
}

#[test]
fn an_epoch_must_begin_with_start_and_have_only_one() {
    let (dir, records) = journal();
    let mut next = records[4].clone();
    next.seq = 6;
    next.epoch = 2;
    let offset = append_line(dir.path(), &record_json(&next));
    assert_damaged(dir.path(), 6, offset, "not start");

    let (dir, records) = journal();
    let mut second_start = records[0].clone();
    second_start.seq = 6;
    let offset = append_line(dir.path(), &record_json(&second_start));
    assert_damaged(dir.path(), 6, offset, "second start");
}

#[test]
fn epochs_never_decrease() {
    let (dir, records) = journal();
    let mut start = records[0].clone();
    start.seq = 6;
    start.epoch = 2;
    append_line(dir.path(), &record_json(&start));
    let mut old = records[1].clone();
    old.seq = 7;
    let offset = append_line(dir.path(), &record_json(&old));
    assert_damaged(dir.path(), 7, offset, "never decrease");
}

#[test]
fn a_start_record_of_a_newer_format_is_refused() {
    let (dir, records) = journal();
    let mut start = records[0].clone();
    start.seq = 6;
    start.epoch = 2;
    if let RecordBody::Start(s) = &mut start.body {
        s.format = 2;
    }
    append_line(dir.path(), &record_json(&start));
    match verify(dir.path()) {
        Err(JournalError::Unsupported {
            seq: 6, format: 2, ..
        }) => {}
        other => panic!("expected Unsupported, got {other:?}"),
    }
    let err = reopen(dir.path(), JournalConfig::default(), |_| {}).unwrap_err();
    assert!(err.to_string().contains("format 2"), "{err}");
}

#[test]
fn a_record_in_another_key_order_is_read_all_the_same() {
    let (dir, records) = journal();
    let mut next = records[2].clone();
    next.seq = 6;
    let value = serde_json::to_value(&next).unwrap();
    let object = value.as_object().unwrap();
    let mut keys: Vec<&String> = object.keys().collect();
    keys.reverse();
    let parts: Vec<String> = keys
        .iter()
        .map(|k| format!("{}:{}", serde_json::to_string(k).unwrap(), object[*k]))
        .collect();
    append_line(dir.path(), &format!("{{{}}}", parts.join(",")));
    assert_eq!(read_since(dir.path(), 5, 10).unwrap(), [next.clone()]);
    let (j, report, replayed) = open(dir.path(), JournalConfig::default());
    assert!(report.torn_tail.is_none());
    assert_eq!(replayed[5], next);
    assert_eq!(j.last_seq(), 6);
}
