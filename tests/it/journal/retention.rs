//! Retention: old segments go once there are more than `segments_kept_max`, but never the one
//! holding the last `spec_accepted` record (a restart replays it) or any after it; readers and
//! a reopen start where retirement left the journal; a lost first segment is still damage.

use compute_ctl::journal::{verify, JournalConfig, JournalError, JournalStore, RecordBody};

use super::{body, open, start_body, transition_body, wall};

fn retaining(segments_kept_max: usize) -> JournalConfig {
    JournalConfig {
        segment_bytes_max: 1_000,
        segments_kept_max,
        ..JournalConfig::default()
    }
}

fn spec_accepted(i: u64) -> RecordBody {
    // body(i) is a spec_accepted record when i % 5 == 4.
    body(i / 5 * 5 + 4)
}

#[test]
fn old_segments_are_retired_and_the_journal_reads_from_the_first_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _, _) = open(dir.path(), retaining(3));
    journal
        .append(vec![start_body(), spec_accepted(0)], 1, wall())
        .unwrap();
    // Past the spec: transitions only, until a later spec moves the protection forward.
    for i in 0..60 {
        journal.append(vec![transition_body(i)], 2, wall()).unwrap();
    }
    // The segment with the only spec_accepted is protected: nothing retired yet.
    assert_eq!(journal.stats().segments_retired, 0);
    let accepted_seq = journal.append(vec![spec_accepted(100)], 3, wall()).unwrap()[0].seq;
    for i in 0..60 {
        journal.append(vec![transition_body(i)], 4, wall()).unwrap();
    }
    let stats = journal.stats();
    assert!(stats.segments_retired > 0, "{stats:?}");
    let last_seq = journal.last_seq();
    drop(journal);

    let report = verify(dir.path()).unwrap();
    assert!(report.first_seq > 1);
    assert!(
        report.first_seq <= accepted_seq,
        "the last spec_accepted was retired"
    );
    assert_eq!(report.last_seq, last_seq);
    assert!(report.segments >= 3);

    // A reopen replays from the first kept seq, including the last spec_accepted.
    let (journal, opened, records) = open(dir.path(), retaining(3));
    assert_eq!(opened.last_seq, last_seq);
    assert_eq!(records.first().unwrap().seq, report.first_seq);
    assert!(records.iter().any(|r| r.seq == accepted_seq));
    for pair in records.windows(2) {
        assert_eq!(pair[1].seq, pair[0].seq + 1);
    }
    // Readers start there too.
    let read = journal.read_since(0, 10_000).unwrap();
    assert_eq!(read.first().unwrap().seq, report.first_seq);
}

#[test]
fn zero_keeps_every_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _, _) = open(dir.path(), retaining(0));
    journal.append(vec![start_body()], 1, wall()).unwrap();
    for i in 0..200 {
        journal.append(vec![body(i)], 2, wall()).unwrap();
    }
    assert_eq!(journal.stats().segments_retired, 0);
    assert_eq!(verify(dir.path()).unwrap().first_seq, 1);
}

#[test]
fn a_lost_first_segment_is_damage_but_an_interrupted_retirement_is_finished() {
    let dir = tempfile::tempdir().unwrap();
    let (mut journal, _, _) = open(dir.path(), retaining(0));
    journal.append(vec![start_body()], 1, wall()).unwrap();
    for i in 0..100 {
        journal.append(vec![body(i)], 2, wall()).unwrap();
    }
    drop(journal);
    let journal_dir = dir.path().join("journal");
    let mut segments: Vec<_> = std::fs::read_dir(&journal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3);
    let second_first_seq: u64 = segments[1]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();

    // RETIRED says the first segment was retired, but the crash left its file: the reopen
    // removes it and reads from the second.
    std::fs::write(journal_dir.join("RETIRED"), format!("{second_first_seq}\n")).unwrap();
    let (journal, _, records) = open(dir.path(), retaining(0));
    assert_eq!(records.first().unwrap().seq, second_first_seq);
    assert!(!segments[0].exists(), "the retired file stayed");
    drop(journal);

    // Without RETIRED, a missing first segment is damage.
    std::fs::remove_file(journal_dir.join("RETIRED")).unwrap();
    let before = super::snapshot(&journal_dir);
    // A child another test forks holds a copy of the LOCK descriptor until its exec: wait
    // that window out rather than mistake it for a second writer.
    let mut tries = 0;
    loop {
        match compute_ctl::journal::FileJournal::open(dir.path(), retaining(0), |_| {}) {
            Err(JournalError::Damaged { .. }) => break,
            Err(JournalError::Locked { .. }) if tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => panic!("expected damage, got {other:?}"),
        }
    }
    assert!(verify(dir.path()).is_err());
    assert!(
        super::snapshot(&journal_dir) == before,
        "damage changed the journal's files"
    );
}
