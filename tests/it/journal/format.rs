//! The bytes on disk: lines, segment names, rotation, and what a reopen continues from.

use std::fs;

use compute_ctl::journal::{
    read_since, segment_name, verify, FileJournal, JournalConfig, JournalStore, Record, RecordBody,
};

use super::{body, config, lines, open, segment_files, start_body, wall, WALL_TS};

#[test]
fn crc32c_check_value() {
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
}

#[test]
fn a_line_is_crc32c_hex_space_compact_json_newline() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, report, replayed) = open(dir.path(), JournalConfig::default());
    assert_eq!(
        (report.records, report.last_seq, report.last_epoch),
        (0, 0, 0)
    );
    assert!(replayed.is_empty());
    // Open creates the journal directory and the lock, and no segment before the first record.
    assert!(dir.path().join("journal").is_dir());
    assert!(dir.path().join("LOCK").is_file());
    assert!(segment_files(dir.path()).is_empty());

    let written = j.append(vec![start_body()], 5, wall()).unwrap();
    let files = segment_files(dir.path());
    assert_eq!(files, [dir.path().join("journal/00000000000000000001.log")]);
    let bytes = fs::read(&files[0]).unwrap();
    let json = serde_json::to_string(&written[0]).unwrap();
    let expected = format!("{:08x} {json}\n", crc32c::crc32c(json.as_bytes()));
    assert_eq!(String::from_utf8(bytes).unwrap(), expected);
    assert!(
        json.starts_with(&format!(
            r#"{{"seq":1,"epoch":1,"ts":"{WALL_TS}","mono_ms":5,"kind":"start","format":1,"#
        )),
        "{json}"
    );
    // The stored object is the record, read back by anyone with serde_json.
    let parsed: Record = serde_json::from_str(&json).unwrap();
    assert_eq!(parsed, written[0]);
}

#[test]
fn segments_are_named_by_their_first_seq_with_twenty_digits() {
    assert_eq!(segment_name(1), "00000000000000000001.log");
    assert_eq!(segment_name(213), "00000000000000000213.log");
}

#[test]
fn rotation_keeps_seq_continuous_and_readers_read_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let segment_bytes_max = 1500;
    let (mut j, _, _) = open(dir.path(), config(segment_bytes_max));
    let mut written = j.append(vec![start_body()], 0, wall()).unwrap();
    for i in 1..60 {
        written.extend(j.append(vec![body(i)], i, wall()).unwrap());
    }
    let files = segment_files(dir.path());
    assert!(files.len() >= 5, "{} segments", files.len());

    let mut next_seq = 1;
    for file in &files {
        let bytes = fs::read(file).unwrap();
        let name = file.file_name().unwrap().to_str().unwrap();
        assert_eq!(
            name,
            segment_name(next_seq),
            "segment named by its first seq"
        );
        let seg_lines = lines(&bytes);
        // Rotation happens before an append that would overflow: only a segment's single
        // first line may exceed the limit.
        assert!(bytes.len() as u64 <= segment_bytes_max || seg_lines.len() == 1);
        for line in seg_lines {
            let record: Record = serde_json::from_slice(&line[9..]).unwrap();
            assert_eq!(record.seq, next_seq);
            next_seq += 1;
        }
    }
    assert_eq!(next_seq - 1, written.len() as u64);

    assert_eq!(read_since(dir.path(), 0, 1000).unwrap(), written);
    assert_eq!(read_since(dir.path(), 17, 25).unwrap(), written[17..42]);
    assert_eq!(j.read_since(44, 1000).unwrap(), written[44..]);

    // One fdatasync per append, one directory fsync per segment created.
    let stats = j.stats();
    assert_eq!(stats.appends, 60);
    assert_eq!(stats.records, 60);
    assert_eq!(stats.file_fsyncs, 60);
    assert_eq!(stats.segments_created, files.len() as u64);
    assert_eq!(stats.dir_fsyncs, files.len() as u64);
    assert_eq!(stats.fsyncs(), 60 + files.len() as u64);
    let on_disk: u64 = files.iter().map(|f| fs::metadata(f).unwrap().len()).sum();
    assert_eq!(stats.bytes, on_disk);
}

#[test]
fn one_append_of_many_records_is_one_fsync_in_one_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _, _) = open(dir.path(), config(1000));
    let bodies: Vec<RecordBody> = std::iter::once(start_body())
        .chain((1..20).map(body))
        .collect();
    let written = j.append(bodies, 0, wall()).unwrap();
    assert_eq!(written.len(), 20);
    let stats = j.stats();
    assert_eq!((stats.file_fsyncs, stats.dir_fsyncs), (1, 1));
    // Larger than the limit, yet one segment: an append never spans two.
    assert_eq!(segment_files(dir.path()).len(), 1);
    j.append(vec![body(20)], 0, wall()).unwrap();
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 2);
    assert!(files[1].ends_with(segment_name(21)));
}

#[test]
fn reopen_replays_in_order_continues_seq_and_takes_the_next_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _, _) = open(dir.path(), config(1200));
    let mut written = j.append(vec![start_body()], 0, wall()).unwrap();
    for i in 1..30 {
        written.extend(j.append(vec![body(i)], i, wall()).unwrap());
    }
    drop(j);

    let (mut j, report, replayed) = open(dir.path(), config(1200));
    assert_eq!(replayed, written);
    assert_eq!(
        (report.records, report.last_seq, report.last_epoch),
        (30, 30, 1)
    );
    assert!(report.torn_tail.is_none());
    assert_eq!((j.last_seq(), j.epoch()), (30, 2));
    let more = j.append(vec![start_body(), body(31)], 0, wall()).unwrap();
    assert_eq!(
        more.iter().map(|r| (r.seq, r.epoch)).collect::<Vec<_>>(),
        [(31, 2), (32, 2)]
    );
    drop(j);

    let report = verify(dir.path()).unwrap();
    assert_eq!(
        (report.records, report.last_seq, report.last_epoch),
        (32, 32, 2)
    );
    assert_eq!(report.segments, segment_files(dir.path()).len());
}

#[test]
fn an_empty_segment_left_by_a_crash_after_rotation_is_removed_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (mut j, _, _) = open(dir.path(), JournalConfig::default());
    j.append(vec![start_body(), body(1)], 0, wall()).unwrap();
    drop(j);
    let empty = dir.path().join("journal").join(segment_name(3));
    fs::write(&empty, b"").unwrap();
    verify(dir.path()).unwrap();

    let (mut j, report, _) = open(dir.path(), JournalConfig::default());
    assert!(report.torn_tail.is_none());
    assert!(!empty.exists());
    j.append(vec![start_body()], 0, wall()).unwrap();
    // Appends go on in the last segment with records.
    assert_eq!(segment_files(dir.path()).len(), 1);
    assert_eq!(verify(dir.path()).unwrap().records, 3);
}

#[test]
fn open_refuses_limits_no_record_fits() {
    let dir = tempfile::tempdir().unwrap();
    let tiny = JournalConfig {
        record_bytes_max: 10,
        ..JournalConfig::default()
    };
    assert!(FileJournal::open(dir.path(), tiny, |_| {}).is_err());
    assert!(FileJournal::open(dir.path(), config(0), |_| {}).is_err());
}
