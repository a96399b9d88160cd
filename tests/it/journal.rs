//! The journal, tested on real files: the conformance suite for both stores, the format,
//! the lock, readers beside a writer, crash recovery, seeded damage, and the fixtures.
//!
//! Helpers shared by the submodules live here: record bodies, a fixed clock, a tiny seeded
//! PRNG, and snapshots of a directory's files.

mod conformance;
mod crash;
mod damage;
#[cfg(feature = "failpoints")]
mod failpoints;
mod fixtures;
mod format;
mod lock;
mod readers;
mod retention;
mod rules;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use compute_ctl::journal::{
    Cause, FileJournal, JournalConfig, JournalError, OpenReport, Record, RecordBody,
    SpecAcceptedRecord, SpecSource, StartRecord, StepFinishedRecord, StepStartedRecord,
    TransitionRecord, FORMAT_VERSION,
};
use states::{ErrorKind, EventName, PhaseName, StepError, StepId, StepName};

/// A fixed wall time, so records and fixtures are reproducible: 2025-11-24T16:00:00.123Z.
pub fn wall() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(1_764_000_000_123)
}

/// The `ts` that `wall()` is written as.
pub const WALL_TS: &str = "2025-11-24T16:00:00.123Z";

/// Tiny segments, all kept (retention has its own tests).
pub fn config(segment_bytes_max: u64) -> JournalConfig {
    JournalConfig {
        segment_bytes_max,
        segments_kept_max: 0,
        ..JournalConfig::default()
    }
}

pub fn start_body() -> RecordBody {
    RecordBody::Start(StartRecord {
        format: FORMAT_VERSION,
        version: "0.1.0".into(),
        pid: 4242,
        pgdata: "/var/db/postgres/compute".into(),
        torn_tail: None,
        unfinished_steps: Vec::new(),
    })
}

/// The phases of a start-up, in order: `body(i)` walks through them.
const PHASES: [PhaseName; 6] = [
    PhaseName::Init,
    PhaseName::SyncSafekeepers,
    PhaseName::Basebackup,
    PhaseName::Starting,
    PhaseName::Configuring,
    PhaseName::Running,
];

/// A typical transition: `init -> sync_safekeepers (step_succeeded: init_pgdata) g1 attempt 1`.
pub fn transition_body(i: u64) -> RecordBody {
    let from = PHASES[i as usize % (PHASES.len() - 1)];
    let to = PHASES[i as usize % (PHASES.len() - 1) + 1];
    RecordBody::Transition(TransitionRecord {
        from,
        to,
        cause: Cause {
            event: EventName::StepSucceeded,
            request_id: None,
            step: Some(StepName::InitPgdata),
            source: None,
        },
        generation: Some(1),
        spec_hash: Some(
            "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
        ),
        attempt: 1,
        duration_ms: 12 + i % 1000,
        error: None,
    })
}

/// A mix of every kind but `start`, varied by `i` so lines differ in length.
pub fn body(i: u64) -> RecordBody {
    match i % 5 {
        0 | 1 => transition_body(i),
        2 => RecordBody::StepStarted(StepStartedRecord {
            id: StepId(i),
            step: StepName::FetchBasebackup,
            generation: Some(1),
            detail: Some(format!("lsn 0/{:X}", 0x16B_3748 + i)),
        }),
        3 => RecordBody::StepFinished(StepFinishedRecord {
            id: StepId(i),
            step: StepName::ApplySpec,
            ok: i.is_multiple_of(2),
            duration_ms: i * 7 % 997,
            output: Some(
                serde_json::json!({ "statements": i % 13, "note": "x".repeat(i as usize % 40) }),
            ),
            error: (i % 2 == 1).then(|| {
                StepError::new(
                    PhaseName::Configuring,
                    StepName::ApplySpec,
                    ErrorKind::Postgres,
                    format!("role \"r{i}\" cannot be created"),
                )
            }),
        }),
        _ => RecordBody::SpecAccepted(SpecAcceptedRecord {
            generation: 1 + i / 5,
            spec_hash: format!("sha256:{:064x}", i),
            source: SpecSource::Http,
            request_id: Some(format!("req-{i}")),
            ignored_fields: vec!["suspend_timeout_seconds".into()],
        }),
    }
}

/// Opens the journal of `state_dir`, collecting the replayed records.
pub fn open(state_dir: &Path, config: JournalConfig) -> (FileJournal, OpenReport, Vec<Record>) {
    let mut records = Vec::new();
    let (journal, report) = reopen(state_dir, config, |r| records.push(r.clone())).unwrap();
    (journal, report, records)
}

/// `FileJournal::open` for a journal this process held and let go of, waiting out one thing:
/// a child process that another test thread is spawning this moment holds a copy of every
/// open file of ours, the lock's included, from its fork until its exec. So the lock may
/// still be held, by "us", for a moment after the journal was dropped. A lock that stays held
/// (a journal that does not let go) still fails, after 10 s.
pub fn reopen(
    state_dir: &Path,
    config: JournalConfig,
    mut visit: impl FnMut(&Record),
) -> Result<(FileJournal, OpenReport), JournalError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match FileJournal::open(state_dir, config, &mut visit) {
            Err(JournalError::Locked {
                holder_pid: Some(pid),
                ..
            }) if pid == std::process::id() && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            other => return other,
        }
    }
}

/// splitmix64: a tiny, good-enough PRNG whose seed reproduces a failing run.
#[derive(Clone, Debug)]
pub struct Prng(u64);

impl Prng {
    pub fn new(seed: u64) -> Prng {
        Prng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform enough in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// A seed from `JOURNAL_TEST_SEED` (to replay a failure), else `default`.
pub fn seed(default: u64) -> u64 {
    std::env::var("JOURNAL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Every file under `dir`, with its bytes and modification time.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(at) = stack.pop() {
        for entry in fs::read_dir(&at).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                let bytes = fs::read(entry.path()).unwrap();
                files.insert(entry.path(), (bytes, meta.modified().unwrap()));
            }
        }
    }
    files
}

/// The segment files of a state directory, sorted by name.
pub fn segment_files(state_dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(state_dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files
}

/// The complete lines of a segment, newline excluded.
pub fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
    // The split after the last newline is empty (or an unterminated fragment, not a line).
    lines.pop();
    lines
}

/// The path of this test binary and the arguments that run exactly one (ignored) test in it,
/// for tests that need a second process.
pub fn child_command(test: &str) -> std::process::Command {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command.args([
        test,
        "--exact",
        "--nocapture",
        "--include-ignored",
        "--test-threads",
        "1",
    ]);
    command
}
