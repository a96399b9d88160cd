//! Crash durability: a child process appends and prints each seq only after `append`
//! returned; it is SIGKILLed at random moments, and every printed seq must be there after.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use compute_ctl::journal::{verify, FileJournal, JournalStore, RecordBody};

use super::{body, child_command, config, seed, start_body, Prng};

const CHILD_DIR_ENV: &str = "JOURNAL_CRASH_CHILD_DIR";
const CHILD_SEED_ENV: &str = "JOURNAL_CRASH_CHILD_SEED";

/// Small segments, so kills land in rotations too.
const SEGMENT_BYTES_MAX: u64 = 4096;

const ROUNDS: u64 = 200;

#[test]
fn every_acknowledged_record_survives_sigkill() {
    let seed = seed(0xC0FF_EE00);
    println!("crash test seed {seed} (JOURNAL_TEST_SEED={seed} to replay)");
    let mut rng = Prng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // (seq, epoch) of every record a child acknowledged.
    let mut acknowledged: Vec<(u64, u64)> = Vec::new();
    let mut torn_tails = 0;
    for round in 0..ROUNDS {
        let context = format!("seed {seed}, round {round}");
        let mut child = child_command("journal::crash::crash_child")
            .env(CHILD_DIR_ENV, &state)
            .env(CHILD_SEED_ENV, rng.next_u64().to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = thread::spawn(move || {
            let mut acked = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The test harness prints `test <name> ... ` before the child's first line.
                let Some(at) = line.find("ACK ") else {
                    continue;
                };
                let mut words = line[at..].split_whitespace().skip(1);
                let seq: u64 = words.next().unwrap().parse().unwrap();
                let epoch: u64 = words.next().unwrap().parse().unwrap();
                acked.push((seq, epoch));
            }
            acked
        });
        // The child needs a few ms to start; kills land before, during and after its open.
        thread::sleep(Duration::from_micros(rng.below(40_000)));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        assert!(
            status.code().is_none(),
            "{context}: the child exited on its own: {stderr}"
        );
        acknowledged.extend(reader.join().unwrap());

        let mut replayed = Vec::new();
        let (journal, report) = super::reopen(&state, config(SEGMENT_BYTES_MAX), |r| {
            replayed.push((r.seq, r.epoch, matches!(r.body, RecordBody::Start(_))));
        })
        .unwrap_or_else(|e| panic!("{context}: open failed: {e}"));
        torn_tails += u64::from(report.torn_tail.is_some());
        drop(journal);

        for (i, (seq, _, _)) in replayed.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1, "{context}: seq gap");
        }
        for &(seq, epoch) in &acknowledged {
            let found = replayed.get(seq as usize - 1).map(|r| (r.0, r.1));
            assert_eq!(
                found,
                Some((seq, epoch)),
                "{context}: acknowledged seq {seq} lost"
            );
        }
        let mut epoch = 0;
        for &(seq, record_epoch, is_start) in &replayed {
            if is_start {
                assert_eq!(record_epoch, epoch + 1, "{context}: seq {seq} epoch skips");
                epoch = record_epoch;
            } else {
                assert_eq!(record_epoch, epoch, "{context}: seq {seq} in a wrong epoch");
            }
        }
        let verified = verify(&state).unwrap_or_else(|e| panic!("{context}: {e}"));
        assert_eq!(verified.records, replayed.len() as u64, "{context}");
    }
    println!(
        "{ROUNDS} kills, {} records acknowledged, {torn_tails} torn tails cut",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() as u64 > ROUNDS,
        "the children barely appended"
    );
}

/// Run by `every_acknowledged_record_survives_sigkill`: appends until killed, printing
/// `ACK <seq> <epoch>` for each record after its append returned.
#[test]
#[ignore = "a child process of another test"]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let seed = std::env::var(CHILD_SEED_ENV).unwrap().parse().unwrap();
    let mut rng = Prng::new(seed);
    let (mut journal, _) =
        FileJournal::open(Path::new(&dir), config(SEGMENT_BYTES_MAX), |_| {}).unwrap();
    let started = Instant::now();
    let mut stdout = std::io::stdout().lock();
    let mut bodies = vec![start_body()];
    // A bound, so a child whose parent died does not run on; the parent kills it far sooner.
    while started.elapsed() < Duration::from_secs(20) {
        let mono_ms = started.elapsed().as_millis() as u64;
        for record in journal.append(bodies, mono_ms, SystemTime::now()).unwrap() {
            writeln!(stdout, "ACK {} {}", record.seq, record.epoch).unwrap();
        }
        stdout.flush().unwrap();
        // Now and then a batch of several pages, which a kill can cut between pages.
        let n = if rng.below(10) == 0 {
            20 + rng.below(40)
        } else {
            1 + rng.below(3)
        };
        bodies = (0..n).map(|_| body(rng.below(1000))).collect();
    }
}
