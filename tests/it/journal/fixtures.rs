//! The sample journals in `fixtures/journal/`, each a state directory: `good` (25 records in
//! two epochs, three segments), `torn` (the same with its last line cut short) and `damaged`
//! (the same with one byte changed in the 5th record). Readers use them in place; `open` gets a
//! copy. `COMPUTE_CTL_REGENERATE_FIXTURES=1 cargo test -- --include-ignored regenerate` writes
//! them again (the same bytes: the clock and pid in them are fixed).

use std::fs;
use std::path::{Path, PathBuf};

use compute_ctl::journal::{verify, JournalConfig, JournalError, JournalStore};

use super::{body, config, open, reopen, segment_files, snapshot, start_body, wall};

const SEGMENT_BYTES_MAX: u64 = 3000;

/// Where the torn fixture's last line begins, in its last segment.
const TORN_SEGMENT: &str = "00000000000000000022.log";
const TORN_OFFSET: u64 = 710;
/// Where the damaged fixture's 5th line begins, in its first segment.
const DAMAGED_SEGMENT: &str = "00000000000000000001.log";
const DAMAGED_OFFSET: u64 = 1020;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/journal")
        .join(name)
}

/// A copy of a fixture in a temp dir, for the tests that open it (open takes the lock, and
/// may cut).
fn copy_of(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("journal")).unwrap();
    for file in segment_files(&fixture(name)) {
        fs::copy(
            &file,
            dir.path().join("journal").join(file.file_name().unwrap()),
        )
        .unwrap();
    }
    dir
}

#[test]
fn the_good_fixture_verifies_and_replays_whole() {
    let before = snapshot(&fixture("good"));
    let report = verify(&fixture("good")).unwrap();
    assert_eq!(
        (
            report.records,
            report.segments,
            report.last_seq,
            report.last_epoch
        ),
        (25, 3, 25, 2)
    );
    assert_eq!(snapshot(&fixture("good")), before);
    let copy = copy_of("good");
    let (j, report, records) = open(copy.path(), JournalConfig::default());
    assert!(report.torn_tail.is_none());
    assert_eq!(records.len(), 25);
    assert_eq!((j.last_seq(), j.epoch()), (25, 3));
}

#[test]
fn the_torn_fixture_fails_verify_and_open_cuts_its_last_line() {
    match verify(&fixture("torn")) {
        Err(JournalError::Damaged {
            segment,
            seq,
            offset,
            reason,
        }) => {
            assert_eq!(
                (segment.as_str(), seq, offset),
                (TORN_SEGMENT, 25, TORN_OFFSET)
            );
            assert!(reason.contains("torn tail"), "{reason}");
        }
        other => panic!("expected a torn tail, got {other:?}"),
    }
    let copy = copy_of("torn");
    let torn_file = copy.path().join("journal").join(TORN_SEGMENT);
    let (j, report, records) = open(copy.path(), JournalConfig::default());
    let torn = report.torn_tail.unwrap();
    assert_eq!(
        (torn.segment.as_str(), torn.offset),
        (TORN_SEGMENT, TORN_OFFSET)
    );
    assert!(torn.reason.contains("cut short"), "{}", torn.reason);
    assert_eq!(records.len(), 24);
    assert_eq!(j.last_seq(), 24);
    assert_eq!(fs::metadata(&torn_file).unwrap().len(), TORN_OFFSET);
    drop(j);
    assert_eq!(verify(copy.path()).unwrap().records, 24);
}

#[test]
fn the_damaged_fixture_is_named_by_seq_and_offset_and_left_alone() {
    let expect = |result: Result<_, JournalError>| match result {
        Err(JournalError::Damaged {
            segment,
            seq,
            offset,
            reason,
        }) => {
            assert_eq!(
                (segment.as_str(), seq, offset),
                (DAMAGED_SEGMENT, 5, DAMAGED_OFFSET)
            );
            assert!(reason.contains("checksum mismatch"), "{reason}");
        }
        Ok(_) => panic!("expected damage"),
        Err(other) => panic!("expected damage, got {other}"),
    };
    expect(verify(&fixture("damaged")).map(|_| ()));
    let copy = copy_of("damaged");
    let before = snapshot(copy.path());
    expect(reopen(copy.path(), JournalConfig::default(), |_| {}).map(|_| ()));
    let mut after = snapshot(copy.path());
    // Open took the lock (creating LOCK) and changed nothing else.
    after.remove(&copy.path().join("LOCK"));
    assert_eq!(after, before);
    let message = reopen(copy.path(), JournalConfig::default(), |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("seq 5")
            && message.contains(DAMAGED_SEGMENT)
            && message.contains(&format!("byte offset {DAMAGED_OFFSET}")),
        "{message}"
    );
}

/// Writes the fixtures again; run by hand when the format changes.
#[test]
#[ignore = "writes into the source tree; run by hand"]
fn regenerate() {
    if std::env::var_os("COMPUTE_CTL_REGENERATE_FIXTURES").is_none() {
        return;
    }
    let good = fixture("good");
    let _ = fs::remove_dir_all(fixture(""));
    for epoch in 1..=2u64 {
        let (mut j, _) = reopen(&good, config(SEGMENT_BYTES_MAX), |_| {}).unwrap();
        j.append(vec![start_body()], 0, wall()).unwrap();
        let count = if epoch == 1 { 14 } else { 9 };
        for i in 1..=count {
            j.append(vec![body(epoch * 100 + i)], i * 10, wall())
                .unwrap();
        }
    }
    fs::remove_file(good.join("LOCK")).unwrap();
    let files = segment_files(&good);
    for name in ["torn", "damaged"] {
        fs::create_dir_all(fixture(name).join("journal")).unwrap();
        for file in &files {
            let to = fixture(name)
                .join("journal")
                .join(file.file_name().unwrap());
            fs::copy(file, to).unwrap();
        }
    }
    // torn: the last line loses its second half.
    let last = fixture("torn").join("journal").join(TORN_SEGMENT);
    let bytes = fs::read(&last).unwrap();
    let last_line = bytes[..bytes.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap()
        + 1;
    println!("torn: last line at {last_line}");
    let half = last_line + (bytes.len() - last_line) / 2;
    fs::write(&last, &bytes[..half]).unwrap();
    // damaged: the 5th line's mono_ms digit changes.
    let first = fixture("damaged").join("journal").join(DAMAGED_SEGMENT);
    let mut bytes = fs::read(&first).unwrap();
    let fifth = bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .nth(3)
        .unwrap()
        .0
        + 1;
    println!("damaged: 5th line at {fifth}");
    let digit = fifth
        + bytes[fifth..]
            .windows(10)
            .position(|w| w == b"\"mono_ms\":")
            .unwrap()
        + 10;
    bytes[digit] = if bytes[digit] == b'9' {
        b'8'
    } else {
        bytes[digit] + 1
    };
    fs::write(&first, bytes).unwrap();
}
