//! Readers beside a writer: `read_since`, `dump` and `verify` read while the writer holds the
//! lock and appends, and never change, create or lock anything.

use std::fs;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use compute_ctl::journal::{dump, read_since, verify, JournalError, JournalStore, Record};

use super::{body, config, lines, open, segment_files, snapshot, start_body, wall};

#[test]
fn readers_change_nothing_while_a_writer_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _, _) = open(dir.path(), config(2000));
    let mut written = j.append(vec![start_body()], 0, wall()).unwrap();
    for i in 1..50 {
        written.extend(j.append(vec![body(i)], i, wall()).unwrap());
    }
    let before = snapshot(dir.path());

    assert_eq!(read_since(dir.path(), 0, 1000).unwrap(), written);
    assert_eq!(read_since(dir.path(), 40, 5).unwrap(), written[40..45]);
    let report = verify(dir.path()).unwrap();
    assert_eq!(
        (report.records, report.last_seq, report.last_epoch),
        (50, 50, 1)
    );
    let mut out = Vec::new();
    assert_eq!(dump(dir.path(), 0, true, &mut out).unwrap(), 50);
    let mut human = Vec::new();
    assert_eq!(dump(dir.path(), 45, false, &mut human).unwrap(), 5);

    assert_eq!(snapshot(dir.path()), before, "a reader changed a file");
    // The writer is undisturbed.
    assert_eq!(j.append(vec![body(50)], 0, wall()).unwrap()[0].seq, 51);
}

#[test]
fn dump_json_is_exactly_the_stored_objects_and_human_lines_are_aligned() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _, _) = open(dir.path(), config(1500));
    j.append(vec![start_body()], 0, wall()).unwrap();
    for i in 1..20 {
        j.append(vec![body(i)], i, wall()).unwrap();
    }
    let mut stored = Vec::new();
    for file in segment_files(dir.path()) {
        let bytes = fs::read(file).unwrap();
        for line in lines(&bytes) {
            stored.extend_from_slice(&line[9..]);
            stored.push(b'\n');
        }
    }
    let mut out = Vec::new();
    assert_eq!(dump(dir.path(), 0, true, &mut out).unwrap(), 20);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        String::from_utf8(stored).unwrap()
    );

    let mut out = Vec::new();
    assert_eq!(dump(dir.path(), 17, false, &mut out).unwrap(), 3);
    let text = String::from_utf8(out).unwrap();
    let text_lines: Vec<&str> = text.lines().collect();
    assert_eq!(text_lines.len(), 4, "{text}");
    assert!(text_lines[0].contains("SEQ") && text_lines[0].contains("SUMMARY"));
    // seq, epoch, ts, kind: the summary begins at the same column on every line.
    let column = text_lines[0].find("SUMMARY").unwrap();
    for line in &text_lines[1..] {
        assert_eq!(&line[column - 2..column], "  ", "{line}");
        assert_ne!(line.as_bytes()[column], b' ', "{line}");
    }
    assert_eq!(
        text_lines[1],
        "      18      1  2025-11-24T16:00:00.123Z  step_started   #17 fetch_basebackup g1 lsn \
         0/16B3759"
    );
    assert!(
        text_lines[3].ends_with(&format!(
            "spec_accepted  g4 sha256:{:064x} from http, request req-19, ignored \
             suspend_timeout_seconds",
            19
        )),
        "{}",
        text_lines[3]
    );
}

#[test]
fn readers_of_a_state_directory_without_a_journal_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = |e: JournalError| matches!(e, JournalError::Missing { .. });
    assert!(missing(read_since(dir.path(), 0, 10).unwrap_err()));
    assert!(missing(verify(dir.path()).unwrap_err()));
    assert!(missing(
        dump(dir.path(), 0, true, &mut Vec::new()).unwrap_err()
    ));
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn read_since_starts_at_the_segment_holding_since_and_reads_no_earlier_one() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _, _) = open(dir.path(), config(1500));
    let mut written = j.append(vec![start_body()], 0, wall()).unwrap();
    for i in 1..40 {
        written.extend(j.append(vec![body(i)], i, wall()).unwrap());
    }
    drop(j);
    let files = segment_files(dir.path());
    assert!(files.len() >= 3);
    // Damage the first segment: a reader that starts later never sees it, `verify` does.
    let mut first = fs::read(&files[0]).unwrap();
    first[20] ^= 0x01;
    fs::write(&files[0], &first).unwrap();
    let last_start: u64 = files[files.len() - 1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let since = last_start - 1;
    assert_eq!(
        read_since(dir.path(), since, 100).unwrap(),
        written[since as usize..]
    );
    assert!(matches!(
        read_since(dir.path(), 0, 100),
        Err(JournalError::Damaged {
            seq: 1,
            offset: 0,
            ..
        })
    ));
    assert!(matches!(
        verify(dir.path()),
        Err(JournalError::Damaged { seq: 1, .. })
    ));
}

#[test]
fn readers_follow_a_writer_that_appends_and_rotates() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_owned();
    let (mut j, _, _) = open(&state, config(4096));
    j.append(vec![start_body()], 0, wall()).unwrap();
    let total: u64 = 600;
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            for i in 1..total {
                // Batches of 1..=3, never past `total`.
                let n = (1 + i % 3).min(total - j.last_seq());
                let bodies = (0..n).map(|k| body(i * 3 + k)).collect();
                j.append(bodies, i, wall()).unwrap();
                if j.last_seq() >= total {
                    break;
                }
            }
            done.store(true, Ordering::SeqCst);
            j
        })
    };
    let mut seen: Vec<Record> = Vec::new();
    // Polls after the writer finished: a loaded machine may poll many times before.
    let mut polls = 0u64;
    loop {
        let finished = done.load(Ordering::SeqCst);
        let since = seen.last().map_or(0, |r| r.seq);
        let batch = read_since(&state, since, 50).unwrap();
        for record in batch {
            assert_eq!(record.seq, seen.len() as u64 + 1, "readers see no gap");
            seen.push(record);
        }
        let mut out = Vec::new();
        let dumped = dump(&state, since, true, &mut out).unwrap();
        assert!(dumped as usize <= (total - since) as usize);
        polls += u64::from(finished);
        if finished && seen.len() as u64 == total {
            break;
        }
        assert!(
            !(finished && polls > 10_000),
            "the reader stalled at {}",
            seen.len()
        );
    }
    let j = writer.join().unwrap();
    assert_eq!(j.read_since(0, 10_000).unwrap(), seen);
    assert_eq!(verify(&state).unwrap().records, total);
}
