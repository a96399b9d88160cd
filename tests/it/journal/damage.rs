//! Seeded damage: truncations and byte flips of a real journal, each judged by an oracle that
//! knows where every line was. Tail damage must recover exactly the intact prefix; damage with
//! intact records after it must be named (seq, segment, byte offset) and leave every file
//! byte-identical; `verify` must agree with `open`; nothing may panic.

use std::fs;
use std::path::{Path, PathBuf};

use compute_ctl::journal::{segment_name, verify, JournalError, JournalStore, Record};

use super::{body, config, open, segment_files, snapshot, start_body, wall, Prng};

/// ~40 records a segment.
const SEGMENT_BYTES_MAX: u64 = 9000;

/// A journal before the damage: its segments' bytes and where each line is.
struct Pristine {
    /// (file name, bytes), in order.
    segments: Vec<(String, Vec<u8>)>,
    records: Vec<Record>,
    /// Every line in order; line `i` holds seq `i + 1`.
    lines: Vec<Line>,
}

#[derive(Clone, Copy, Debug)]
struct Line {
    segment: usize,
    offset: usize,
    /// Newline included.
    len: usize,
}

impl Pristine {
    fn build(dir: &Path) -> Pristine {
        let mut records = Vec::new();
        // Three epochs, so the epoch rules are in play.
        for (epoch, count) in [(1u64, 40u64), (2, 40), (3, 25)] {
            let (mut j, _, _) = open(dir, config(SEGMENT_BYTES_MAX));
            records.extend(j.append(vec![start_body()], 0, wall()).unwrap());
            for i in 1..count {
                records.extend(j.append(vec![body(epoch * 100 + i)], i, wall()).unwrap());
            }
        }
        let mut segments = Vec::new();
        let mut lines = Vec::new();
        for (index, path) in segment_files(dir).into_iter().enumerate() {
            let bytes = fs::read(&path).unwrap();
            let mut offset = 0;
            while offset < bytes.len() {
                let len = bytes[offset..].iter().position(|&b| b == b'\n').unwrap() + 1;
                lines.push(Line {
                    segment: index,
                    offset,
                    len,
                });
                offset += len;
            }
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            segments.push((name, bytes));
        }
        assert_eq!(lines.len(), records.len());
        assert!(segments.len() >= 2, "{} segments", segments.len());
        let last_segment = segments.len() - 1;
        assert!(lines.iter().filter(|l| l.segment == last_segment).count() >= 2);
        Pristine {
            segments,
            records,
            lines,
        }
    }

    /// Writes the pristine segments into `journal_dir`, removing anything else there.
    fn restore(&self, journal_dir: &Path) {
        for entry in fs::read_dir(journal_dir).unwrap() {
            fs::remove_file(entry.unwrap().path()).unwrap();
        }
        for (name, bytes) in &self.segments {
            fs::write(journal_dir.join(name), bytes).unwrap();
        }
    }

    /// The index of the line holding byte `pos` of segment `segment`.
    fn line_at(&self, segment: usize, pos: usize) -> usize {
        self.lines
            .iter()
            .position(|l| l.segment == segment && l.offset <= pos && pos < l.offset + l.len)
            .unwrap()
    }

    fn last_line_of(&self, segment: usize) -> usize {
        self.lines
            .iter()
            .rposition(|l| l.segment == segment)
            .unwrap()
    }
}

#[derive(Clone, Copy, Debug)]
enum Mutation {
    /// Segment, byte position, new value.
    Flip(usize, usize, u8),
    /// Segment, new length.
    Truncate(usize, usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// Opens cleanly with this many records (a cut at a line boundary of the last segment).
    Clean { records: usize },
    /// The first bad line is at (segment, offset) and should hold `seq`; nothing intact after.
    Torn {
        segment: String,
        offset: u64,
        seq: u64,
        bytes: u64,
    },
    Damaged {
        segment: String,
        offset: u64,
        seq: u64,
    },
}

/// What the journal must report after `mutation`, from where the lines were.
fn oracle(p: &Pristine, mutation: Mutation) -> Expect {
    let last_segment = p.segments.len() - 1;
    let at = |line: usize| {
        let l = p.lines[line];
        (
            p.segments[l.segment].0.clone(),
            l.offset as u64,
            line as u64 + 1,
        )
    };
    match mutation {
        Mutation::Flip(segment, pos, _) => {
            let line = p.line_at(segment, pos);
            let l = p.lines[line];
            let is_newline = pos == l.offset + l.len - 1;
            // A flipped newline merges the line with the next one in its segment.
            let bad_through = if is_newline && line < p.last_line_of(segment) {
                line + 1
            } else {
                line
            };
            let (segment_name, offset, seq) = at(line);
            if bad_through == p.lines.len() - 1 {
                let bytes = (p.segments[segment].1.len() - l.offset) as u64;
                Expect::Torn {
                    segment: segment_name,
                    offset,
                    seq,
                    bytes,
                }
            } else {
                Expect::Damaged {
                    segment: segment_name,
                    offset,
                    seq,
                }
            }
        }
        Mutation::Truncate(segment, len) => {
            let cut_line = p.line_at(segment, len);
            let l = p.lines[cut_line];
            let (segment_name, offset, seq) = at(cut_line);
            match (l.offset == len, segment == last_segment) {
                // At a line boundary of the last segment: simply fewer records.
                (true, true) => Expect::Clean { records: cut_line },
                // At a line boundary before the last segment: the next segment's first record
                // is not the seq that comes next.
                (true, false) => Expect::Damaged {
                    segment: p.segments[segment + 1].0.clone(),
                    offset: 0,
                    seq,
                },
                (false, true) => Expect::Torn {
                    segment: segment_name,
                    offset,
                    seq,
                    bytes: (len - l.offset) as u64,
                },
                (false, false) => Expect::Damaged {
                    segment: segment_name,
                    offset,
                    seq,
                },
            }
        }
    }
}

fn mutate(p: &Pristine, rng: &mut Prng) -> Mutation {
    // A third of the cases hit the last two lines, where a crash leaves its marks; the rest
    // hit anywhere.
    let at_tail = rng.below(3) == 0;
    let segment = if at_tail {
        p.segments.len() - 1
    } else {
        rng.below(p.segments.len() as u64) as usize
    };
    let bytes = &p.segments[segment].1;
    let from = if at_tail {
        p.lines[p.lines.len() - 2].offset
    } else {
        0
    };
    let span = (bytes.len() - from) as u64;
    if rng.below(2) == 0 {
        let pos = from + rng.below(span) as usize;
        let old = bytes[pos];
        // A newline is the most telling value: it splits a line in two.
        let mut new = if rng.below(4) == 0 {
            b'\n'
        } else {
            rng.below(256) as u8
        };
        if new == old {
            new = old ^ 0x20;
        }
        Mutation::Flip(segment, pos, new)
    } else if rng.below(4) == 0 {
        // Exactly at a line boundary.
        let starts: Vec<usize> = p
            .lines
            .iter()
            .filter(|l| l.segment == segment && l.offset >= from)
            .map(|l| l.offset)
            .collect();
        Mutation::Truncate(segment, starts[rng.below(starts.len() as u64) as usize])
    } else {
        Mutation::Truncate(segment, from + rng.below(span) as usize)
    }
}

fn apply(p: &Pristine, journal_dir: &Path, mutation: Mutation) {
    match mutation {
        Mutation::Flip(segment, pos, value) => {
            let (name, bytes) = &p.segments[segment];
            let mut bytes = bytes.clone();
            bytes[pos] = value;
            fs::write(journal_dir.join(name), bytes).unwrap();
        }
        Mutation::Truncate(segment, len) => {
            let (name, bytes) = &p.segments[segment];
            fs::write(journal_dir.join(name), &bytes[..len]).unwrap();
        }
    }
}

fn damaged_at(result: Result<impl std::fmt::Debug, JournalError>) -> Option<(String, u64, u64)> {
    match result {
        Err(JournalError::Damaged {
            segment,
            seq,
            offset,
            ..
        }) => Some((segment, offset, seq)),
        _ => None,
    }
}

fn run(seed: u64, cases: u64) {
    let work = tempfile::tempdir().unwrap();
    let pristine_dir = work.path().join("pristine");
    let pristine = Pristine::build(&pristine_dir);
    let state: PathBuf = work.path().join("state");
    let journal_dir = state.join("journal");
    fs::create_dir_all(&journal_dir).unwrap();
    let mut rng = Prng::new(seed);
    let mut seen = [0u64; 3];
    for case in 0..cases {
        let mutation = mutate(&pristine, &mut rng);
        let expect = oracle(&pristine, mutation);
        let context = format!(
            "seed {seed} case {case}: {mutation:?} expects {expect:?} \
             (JOURNAL_TEST_SEED={seed} replays it)"
        );
        pristine.restore(&journal_dir);
        apply(&pristine, &journal_dir, mutation);
        let before = snapshot(&journal_dir);

        let verified = verify(&state);
        let mut replayed: Vec<Record> = Vec::new();
        let opened = super::reopen(&state, config(SEGMENT_BYTES_MAX), |r| {
            replayed.push(r.clone());
        });
        match &expect {
            Expect::Clean { records } => {
                seen[0] += 1;
                let report = verified.unwrap_or_else(|e| panic!("{context}: verify: {e}"));
                assert_eq!(report.records, *records as u64, "{context}");
                let (_, report) = opened.unwrap_or_else(|e| panic!("{context}: open: {e}"));
                assert!(report.torn_tail.is_none(), "{context}");
                assert_eq!(replayed, pristine.records[..*records], "{context}");
            }
            Expect::Torn {
                segment,
                offset,
                seq,
                bytes,
            } => {
                seen[1] += 1;
                assert_eq!(
                    damaged_at(verified),
                    Some((segment.clone(), *offset, *seq)),
                    "{context}: verify"
                );
                let (mut journal, report) =
                    opened.unwrap_or_else(|e| panic!("{context}: open: {e}"));
                let torn = report
                    .torn_tail
                    .unwrap_or_else(|| panic!("{context}: no torn tail"));
                assert_eq!(
                    (&torn.segment, torn.offset, torn.bytes),
                    (segment, *offset, *bytes),
                    "{context}"
                );
                let intact = (*seq - 1) as usize;
                assert_eq!(replayed, pristine.records[..intact], "{context}");
                assert_eq!(report.last_seq, *seq - 1, "{context}");
                // The writer goes on from the cut, now and then on disk too.
                if case.is_multiple_of(8) {
                    let written = journal.append(vec![start_body()], 0, wall()).unwrap();
                    assert_eq!(written[0].seq, *seq, "{context}");
                }
                drop(journal);
                let after = verify(&state).unwrap_or_else(|e| panic!("{context}: after: {e}"));
                assert!(after.last_seq >= *seq - 1, "{context}");
            }
            Expect::Damaged {
                segment,
                offset,
                seq,
            } => {
                seen[2] += 1;
                let expected = Some((segment.clone(), *offset, *seq));
                assert_eq!(damaged_at(verified), expected, "{context}: verify");
                assert_eq!(damaged_at(opened), expected, "{context}: open");
                let after = snapshot(&journal_dir);
                assert!(
                    after == before,
                    "{context}: open modified a damaged journal"
                );
            }
        }
    }
    println!(
        "seed {seed}: {cases} cases: {} clean cuts, {} torn tails, {} damaged",
        seen[0], seen[1], seen[2]
    );
    assert!(
        seen.iter().all(|&n| n > 0),
        "seed {seed}: some outcome never came up: {seen:?}"
    );
}

// 4 x 2,500 cases, so two test threads share the work.
#[test]
fn seeded_damage_a() {
    run(super::seed(0xDA4A_0001), 2_500);
}

#[test]
fn seeded_damage_b() {
    run(super::seed(0xDA4A_0002), 2_500);
}

#[test]
fn seeded_damage_c() {
    run(super::seed(0xDA4A_0003), 2_500);
}

#[test]
fn seeded_damage_d() {
    run(super::seed(0xDA4A_0004), 2_500);
}

#[test]
fn the_oracle_knows_the_segment_names() {
    let dir = tempfile::tempdir().unwrap();
    let p = Pristine::build(dir.path());
    let mut next = 1;
    for (name, bytes) in &p.segments {
        assert_eq!(*name, segment_name(next));
        next += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
    }
    let (j, report, _) = open(dir.path(), config(SEGMENT_BYTES_MAX));
    assert_eq!(report.last_seq, p.records.len() as u64);
    assert_eq!(j.last_seq(), next - 1);
}
