//! `cargo bench --bench journal`: the journal's costs on this machine, printed as a table.
//!
//! - append latency, one record per append (one fdatasync each), on a real file under
//!   cargo's target tmp dir (the disk is named in the output);
//! - fsyncs per record, from `JournalStats`: 1 per append plus 1 per segment created;
//! - replay throughput: `FileJournal::open` over 1,000,000 records (page cache warm), against
//!   the derived `serde_json` decoder alone on the same lines;
//! - journal bytes per typical transition record.
//!
//! Not a timed test: it asserts nothing about speed. `JOURNAL_BENCH_RECORDS` and
//! `JOURNAL_BENCH_APPENDS` shrink the run. The directories are removed at the end.

#[allow(dead_code)]
#[path = "machine.rs"]
mod machine;

use machine::{describe_disk, env_count, ms, percentile};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use compute_ctl::journal::{
    verify, Cause, FileJournal, JournalConfig, JournalStore, Record, RecordBody, StartRecord,
    StepFinishedRecord, StepStartedRecord, TransitionRecord, FORMAT_VERSION,
};
use states::{EventName, PhaseName, StepId, StepName};

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-journal");
    let _ = fs::remove_dir_all(&base);
    fs::create_dir_all(&base)?;
    let result = run(&base);
    let _ = fs::remove_dir_all(&base);
    result
}

fn run(base: &Path) -> Result<(), Error> {
    let appends = env_count("JOURNAL_BENCH_APPENDS", 2000);
    let records = env_count("JOURNAL_BENCH_RECORDS", 1_000_000);
    println!("journal benchmark");
    println!("  directory: {}", base.display());
    println!("  disk:      {}", describe_disk(base));
    println!();

    // Append latency: one transition record per append.
    let dir = base.join("append");
    let (mut journal, _) = FileJournal::open(&dir, JournalConfig::default(), |_| {})?;
    journal.append(vec![start()], 0, SystemTime::now())?;
    let before = journal.stats();
    let mut latencies = Vec::with_capacity(appends as usize);
    for i in 0..appends {
        let started = Instant::now();
        journal.append(vec![transition(i)], i, SystemTime::now())?;
        latencies.push(started.elapsed());
    }
    let after = journal.stats();
    drop(journal);
    latencies.sort();
    let appended = after.records - before.records;
    let bytes_per_transition = (after.bytes - before.bytes) as f64 / appended as f64;

    // The same with small segments, so rotations count too.
    let dir = base.join("rotate");
    let small = JournalConfig {
        segment_bytes_max: 64 * 1024,
        ..JournalConfig::default()
    };
    let (mut journal, _) = FileJournal::open(&dir, small, |_| {})?;
    journal.append(vec![start()], 0, SystemTime::now())?;
    for i in 0..appends {
        journal.append(vec![transition(i)], i, SystemTime::now())?;
    }
    let rotated = journal.stats();
    drop(journal);

    // Replay: write the records in big batches, then open (scan, check, decode, visit) again.
    let dir = base.join("replay");
    let write_started = Instant::now();
    let (mut journal, _) = FileJournal::open(&dir, JournalConfig::default(), |_| {})?;
    journal.append(vec![start()], 0, SystemTime::now())?;
    let mut i = 1;
    while i < records {
        let n = (records - i).min(1000);
        let bodies = (i..i + n).map(typical).collect();
        journal.append(bodies, i, SystemTime::now())?;
        i += n;
    }
    let journal_bytes = journal.stats().bytes;
    drop(journal);
    let write_time = write_started.elapsed();

    let mut replays = Vec::new();
    for _ in 0..3 {
        let mut seen = 0u64;
        let started = Instant::now();
        let (journal, report) = FileJournal::open(&dir, JournalConfig::default(), |r| {
            seen += r.seq & 1;
        })?;
        replays.push(started.elapsed());
        drop(journal);
        assert_eq!(report.records, records);
        std::hint::black_box(seen);
    }
    replays.sort();
    let verify_started = Instant::now();
    let verified = verify(&dir)?;
    let verify_time = verify_started.elapsed();
    assert_eq!(verified.records, records);
    let derived_time = derived_decode(&dir)?;

    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    let mb_rate = |d: Duration| journal_bytes as f64 / d.as_secs_f64() / 1e6;
    let per_record = |n: u64, of: u64| n as f64 / of as f64;
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| append latency p50 (1 record/append, fdatasync) | {:.3} ms |",
        ms(percentile(&latencies, 0.50))
    );
    println!(
        "| append latency p99 | {:.3} ms |",
        ms(percentile(&latencies, 0.99))
    );
    println!(
        "| append latency max | {:.3} ms |",
        ms(latencies.last().copied().unwrap_or_default())
    );
    println!(
        "| fsyncs per record, 16 MiB segments ({appended} appends, {} segments created) | {:.4} ({} file + {} dir) |",
        after.segments_created - before.segments_created,
        per_record(after.fsyncs() - before.fsyncs(), appended),
        after.file_fsyncs - before.file_fsyncs,
        after.dir_fsyncs - before.dir_fsyncs
    );
    println!(
        "| fsyncs per record, 64 KiB segments ({} records, {} segments created) | {:.4} ({} file + {} dir) |",
        rotated.records,
        rotated.segments_created,
        per_record(rotated.fsyncs(), rotated.records),
        rotated.file_fsyncs,
        rotated.dir_fsyncs
    );
    println!(
        "| journal bytes per typical transition record (line, newline included) | {bytes_per_transition:.0} B |"
    );
    println!(
        "| replay of {records} records ({:.0} MB, {} segments): best of 3 | {:.0} records/s ({:.0} MB/s, {:.3} s) |",
        journal_bytes as f64 / 1e6,
        verified.segments,
        rate(replays[0]),
        mb_rate(replays[0]),
        replays[0].as_secs_f64()
    );
    println!(
        "| replay: median of 3 | {:.0} records/s ({:.3} s) |",
        rate(replays[1]),
        replays[1].as_secs_f64()
    );
    println!(
        "| verify of the same journal | {:.0} records/s ({:.3} s) |",
        rate(verify_time),
        verify_time.as_secs_f64()
    );
    println!(
        "| for comparison: derived `Deserialize` of the same lines alone (no checks) | {:.0} records/s ({:.3} s) |",
        rate(derived_time),
        derived_time.as_secs_f64()
    );
    println!(
        "| writing the replay journal (batches of 1000) | {:.0} records/s |",
        rate(write_time)
    );
    Ok(())
}

/// Decodes every line of the journal with `Record`'s derived `Deserialize` (the flattened
/// body buffered through serde's `Content`), segments already in memory: what replay would
/// cost without the streaming decoder.
fn derived_decode(dir: &Path) -> Result<Duration, Error> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir.join("journal"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.sort();
    let segments: Vec<Vec<u8>> = files.iter().map(fs::read).collect::<Result<_, _>>()?;
    let started = Instant::now();
    let mut count = 0u64;
    for bytes in &segments {
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let record: Record = serde_json::from_slice(&line[9..])?;
            count += record.seq & 1;
        }
    }
    std::hint::black_box(count);
    Ok(started.elapsed())
}

fn start() -> RecordBody {
    RecordBody::Start(StartRecord {
        format: FORMAT_VERSION,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        pgdata: "/var/db/postgres/compute".to_owned(),
        torn_tail: None,
        unfinished_steps: Vec::new(),
    })
}

const PHASES: [PhaseName; 6] = [
    PhaseName::Init,
    PhaseName::SyncSafekeepers,
    PhaseName::Basebackup,
    PhaseName::Starting,
    PhaseName::Configuring,
    PhaseName::Running,
];

const STEPS: [StepName; 5] = [
    StepName::InitPgdata,
    StepName::SyncSafekeepers,
    StepName::FetchBasebackup,
    StepName::SpawnPostgres,
    StepName::ApplySpec,
];

/// A start-up transition as the driver writes it.
fn transition(i: u64) -> RecordBody {
    let k = (i % 5) as usize;
    RecordBody::Transition(TransitionRecord {
        from: PHASES[k],
        to: PHASES[k + 1],
        cause: Cause {
            event: EventName::StepSucceeded,
            request_id: None,
            step: Some(STEPS[k]),
            source: None,
        },
        generation: Some(1),
        spec_hash: Some(
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".to_owned(),
        ),
        attempt: 1,
        duration_ms: 12 + i % 900,
        error: None,
    })
}

/// A journal's usual rhythm: step started, step finished, transition.
fn typical(i: u64) -> RecordBody {
    let k = (i / 3 % 5) as usize;
    match i % 3 {
        0 => RecordBody::StepStarted(StepStartedRecord {
            id: StepId(i),
            step: STEPS[k],
            generation: Some(1),
            detail: None,
        }),
        1 => RecordBody::StepFinished(StepFinishedRecord {
            id: StepId(i - 1),
            step: STEPS[k],
            ok: true,
            duration_ms: 5 + i % 800,
            output: None,
            error: None,
        }),
        _ => transition(i / 3),
    }
}
