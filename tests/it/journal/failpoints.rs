//! The journal at each of its failpoints (issue 17): a child process appends to tiny segments
//! with two kept, so it creates and retires segments; a first child lists the points it
//! reaches, then a child per (point, first or last hit, action) aborts or fails there. After
//! each, the journal must open without damage, verify, read gap-free from its first kept seq,
//! hold every record the child acknowledged (that retention may keep) and the last
//! acknowledged `spec_accepted`; a failed append is the child's last acknowledgement, a failed
//! retirement is not a failed append. Needs the `failpoints` feature.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Instant, SystemTime};

use compute_ctl::journal::{verify, FileJournal, JournalConfig, JournalStore, RecordBody};

use super::{body, child_command, reopen, start_body};

const CHILD_DIR_ENV: &str = "JOURNAL_FAILPOINT_CHILD_DIR";
const APPENDS: u64 = 120;

fn retaining() -> JournalConfig {
    JournalConfig {
        segment_bytes_max: 1_500,
        segments_kept_max: 2,
        ..JournalConfig::default()
    }
}

/// What a child printed: acknowledged (seq, is spec_accepted), and whether an append failed.
struct Child {
    acked: Vec<(u64, bool)>,
    failed: Option<String>,
    aborted: bool,
    stdout: String,
}

fn run_child(state: &Path, trace: &Path, arm: Option<&str>) -> Child {
    let mut command = child_command("journal::failpoints::failpoint_child");
    command
        .env(CHILD_DIR_ENV, state)
        .env("COMPUTE_CTL_FAILPOINTS_TRACE", trace);
    if let Some(arm) = arm {
        command.env("COMPUTE_CTL_FAILPOINTS", arm);
    }
    let output = command.output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    let mut acked = Vec::new();
    let mut failed = None;
    for line in stdout.lines() {
        if let Some(at) = line.find("ACK ") {
            let mut words = line[at + 4..].split_whitespace();
            let seq = words.next().unwrap().parse().unwrap();
            acked.push((seq, words.next() == Some("spec")));
            assert!(failed.is_none(), "an ACK after a failed append: {line}");
        } else if let Some(at) = line.find("ERR ") {
            failed = Some(line[at + 4..].to_string());
        }
    }
    Child {
        acked,
        failed,
        aborted: output.status.code().is_none(),
        stdout,
    }
}

/// (point, hits, io) reached by the listing child.
fn points_of(trace: &Path) -> BTreeMap<String, (u64, bool)> {
    let text = std::fs::read_to_string(trace).unwrap();
    let mut points = BTreeMap::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let [_, point, hit, kind] = words.as_slice() {
            let entry = points.entry(point.to_string()).or_insert((0, false));
            entry.0 = entry.0.max(hit.parse().unwrap());
            entry.1 = *kind == "io";
        }
    }
    points
}

#[test]
fn the_journal_survives_a_crash_or_a_disk_error_at_each_of_its_points() {
    let started = Instant::now();
    let listing_dir = tempfile::tempdir().unwrap();
    let trace = listing_dir.path().join("trace");
    let listing = run_child(&listing_dir.path().join("state"), &trace, None);
    assert_eq!(
        listing.acked.len() as u64,
        APPENDS + 1,
        "{}",
        listing.stdout
    );
    let points = points_of(&trace);
    for expected in [
        "journal.append.before_write",
        "journal.append.written",
        "journal.append.synced",
        "journal.segment.create",
        "journal.segment.created",
        "journal.segment.retire",
        "journal.segment.retired",
        "durable.RETIRED.temp_written",
        "durable.RETIRED.temp_synced",
        "durable.RETIRED.renamed",
        "durable.RETIRED.dir_synced",
    ] {
        assert!(
            points.contains_key(expected),
            "{expected} not reached: {points:?}"
        );
    }
    let mut runs = 0;
    for (point, (hits, io)) in &points {
        let mut at: Vec<u64> = vec![1, *hits];
        at.dedup();
        let mut arms: Vec<(u64, &str)> = at.iter().map(|&h| (h, "abort")).collect();
        if *io {
            arms.extend(at.iter().map(|&h| (h, "eio")));
            arms.push((1, "enospc"));
        }
        for (hit, action) in arms {
            let context = format!("{point}={action}@{hit}");
            let dir = tempfile::tempdir().unwrap();
            let state = dir.path().join("state");
            let child = run_child(
                &state,
                &dir.path().join("trace"),
                Some(&format!("{point}={action}@{hit}")),
            );
            runs += 1;
            match action {
                "abort" => assert!(child.aborted, "{context}: not aborted\n{}", child.stdout),
                _ => {
                    assert!(!child.aborted, "{context}: aborted\n{}", child.stdout);
                    let append_point = !point.contains("retire") && !point.contains("RETIRED");
                    assert_eq!(
                        child.failed.is_some(),
                        append_point,
                        "{context}: failed {:?}\n{}",
                        child.failed,
                        child.stdout
                    );
                }
            }
            // Reopened: no damage, gap-free from the first kept seq, acknowledged records kept.
            let mut replayed = Vec::new();
            let (journal, _) = reopen(&state, retaining(), |r| {
                replayed.push((r.seq, matches!(r.body, RecordBody::SpecAccepted(_))));
            })
            .unwrap_or_else(|e| panic!("{context}: open failed: {e}"));
            drop(journal);
            let first = replayed.first().map_or(1, |r| r.0);
            for (i, (seq, _)) in replayed.iter().enumerate() {
                assert_eq!(*seq, first + i as u64, "{context}: seq gap");
            }
            for (seq, _) in child.acked.iter().filter(|(seq, _)| *seq >= first) {
                assert!(
                    replayed.iter().any(|r| r.0 == *seq),
                    "{context}: acknowledged seq {seq} lost"
                );
            }
            if let Some((seq, _)) = child.acked.iter().rev().find(|(_, spec)| *spec) {
                assert!(
                    replayed.contains(&(*seq, true)),
                    "{context}: the last acknowledged spec_accepted (seq {seq}) is gone"
                );
            }
            if let Some((seq, _)) = child.acked.last() {
                assert!(
                    replayed.iter().any(|r| r.0 == *seq),
                    "{context}: last ack lost"
                );
            }
            verify(&state).unwrap_or_else(|e| panic!("{context}: verify: {e}"));
        }
    }
    eprintln!(
        "journal failpoints: {} points reached, {runs} children crashed or failed at them, {:.1} s",
        points.len(),
        started.elapsed().as_secs_f64()
    );
}

/// Run by the test above: appends `APPENDS` batches, printing `ACK <seq> [spec]` after each
/// append returned and `ERR <error>` when one failed (then stops).
#[test]
#[ignore = "a child process of another test"]
fn failpoint_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let (mut journal, _) = FileJournal::open(Path::new(&dir), retaining(), |_| {}).unwrap();
    let mut bodies = vec![start_body()];
    for i in 0..=APPENDS {
        match journal.append(bodies, i, SystemTime::now()) {
            Ok(records) => {
                for record in records {
                    let spec = matches!(record.body, RecordBody::SpecAccepted(_));
                    println!("ACK {} {}", record.seq, if spec { "spec" } else { "-" });
                }
            }
            Err(e) => {
                println!("ERR {e}");
                return;
            }
        }
        bodies = vec![body(i)];
    }
}
