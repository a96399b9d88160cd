//! Scenarios as data: each `fixtures/fsm/*.txt` (but the matrix) is a script of events, each
//! with the phase and steps it must lead to.
//!
//! A line is `EVENT => PHASE [STEP, STEP]`, `EVENT => PHASE (attempt N) [..]`, or
//! `EVENT => rejected`. Events: `boot`, `boot fetch`, `spec gN`, `started`, `started #N`,
//! `ok OUTPUT [ARG]`, `fail KIND`, `exit CODE`, `tick +MS`, `terminate fast|immediate`,
//! `recover`, `promote [LSN]`, `drift -` (none found), `drift N` (the drift with fingerprint N);
//! `boot repair` boots with `--drift repair` (interval 1 s). `ok`, `fail` and `started` without
//! `#N` refer to the step in flight.

use std::path::PathBuf;

use states::{
    ErrorKind, Event, ExitStatus, Lsn, Now, Phase, Policy, ShutdownMode, SpecRef, Step, StepError,
    StepId, StepName, StepOutput, Transition,
};

fn spec(token: &str) -> SpecRef {
    let generation = token.trim_start_matches('g').parse().unwrap();
    SpecRef {
        generation,
        hash: format!("sha256:{generation:064x}"),
    }
}

fn output(words: &[&str]) -> StepOutput {
    let lsn = |i: usize| {
        words
            .get(i)
            .filter(|w| **w != "-")
            .map(|w| w.parse::<Lsn>().unwrap())
    };
    match words[0] {
        "pgdata_ready" => StepOutput::PgdataReady,
        "synced" => StepOutput::SafekeepersSynced { lsn: lsn(1) },
        "basebackup_done" => StepOutput::BasebackupDone,
        "postgres_started" => StepOutput::PostgresStarted {
            pid: words[1].parse().unwrap(),
        },
        "spec_applied" => StepOutput::SpecApplied,
        "postgres_stopped" => StepOutput::PostgresStopped { lsn: lsn(1) },
        "spec_fetched" => StepOutput::SpecFetched {
            found: words[1] == "true",
        },
        other => panic!("unknown output {other:?}"),
    }
}

fn kind(word: &str) -> ErrorKind {
    serde_json::from_value(serde_json::Value::String(word.to_string()))
        .unwrap_or_else(|_| panic!("unknown error kind {word:?}"))
}

/// Runs one script; panics naming the file and line of the first mismatch.
fn run(name: &str, script: &str) {
    let mut phase: Option<Phase> = None;
    let mut now = Now {
        mono_ms: 1_000,
        wall_ms: 1_764_000_000_000,
    };
    for (number, line) in script.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{name}:{}", number + 1);
        let (input, expected) = line
            .split_once("=>")
            .unwrap_or_else(|| panic!("{at}: no `=>`"));
        let words: Vec<&str> = input.split_whitespace().collect();
        let expected = expected.trim();
        let actual = if words[0] == "boot" {
            // `boot repair`: `--drift repair` with a 1 s interval.
            let policy = match words.get(1) {
                Some(&"repair") => Policy {
                    drift_repair: true,
                    drift_interval_ms: 1_000,
                    ..Policy::default()
                },
                _ => Policy::default(),
            };
            let next = Phase::boot(policy, words.get(1) == Some(&"fetch"), Default::default());
            let text = describe(&next.phase, &next.steps);
            phase = Some(next.phase);
            text
        } else {
            let current = phase.take().unwrap_or_else(|| panic!("{at}: no boot line"));
            let in_flight = current.in_flight().unwrap_or(StepId(0));
            let event = match words[0] {
                "spec" => Event::SpecAccepted {
                    spec: spec(words[1]),
                },
                "started" => Event::StepStarted {
                    id: words.get(1).map_or(in_flight, |w| {
                        StepId(w.trim_start_matches('#').parse().unwrap())
                    }),
                },
                "ok" => Event::StepFinished {
                    id: in_flight,
                    result: Ok(output(&words[1..])),
                },
                "fail" => Event::StepFinished {
                    id: in_flight,
                    result: Err(StepError::new(
                        current.name(),
                        StepName::Monitor,
                        kind(words[1]),
                        "scripted failure",
                    )),
                },
                // `exit CODE [shut_down]`: `shut_down` when pg_control says the cluster was
                // shut down cleanly.
                "exit" => Event::PostmasterExited {
                    status: ExitStatus {
                        code: Some(words[1].parse().unwrap()),
                        signal: None,
                    },
                    shut_down: words.get(2) == Some(&"shut_down"),
                },
                "tick" => {
                    let ms: u64 = words[1].trim_start_matches('+').parse().unwrap();
                    now = now.plus_ms(ms);
                    Event::Tick
                }
                "terminate" => Event::Terminate {
                    mode: match words[1] {
                        "fast" => ShutdownMode::Fast,
                        _ => ShutdownMode::Immediate,
                    },
                },
                "recover" => Event::Recover,
                "promote" => Event::Promote {
                    wal_flush_lsn: words.get(1).map(|lsn| lsn.parse::<Lsn>().unwrap()),
                },
                // `drift -` found none; `drift N` found the drift with fingerprint N.
                "drift" => Event::Drift {
                    found: words[1].parse().ok(),
                },
                other => panic!("{at}: unknown event {other:?}"),
            };
            match current.on_event(event, now) {
                Ok(next) => {
                    let text = describe(&next.phase, &next.steps);
                    phase = Some(next.phase);
                    text
                }
                Err(rejected) => {
                    phase = Some(*rejected.phase);
                    "rejected".to_string()
                }
            }
        };
        assert_eq!(actual, expected, "{at}: `{}`", input.trim());
        if let Some(phase) = &phase {
            phase
                .check_invariants()
                .unwrap_or_else(|e| panic!("{at}: invariant broken: {e}"));
        }
    }
}

fn describe(phase: &Phase, steps: &[Step]) -> String {
    let steps: Vec<String> = steps.iter().map(Step::to_string).collect();
    let attempt = match phase.attempt() {
        1 => String::new(),
        n => format!(" (attempt {n})"),
    };
    format!("{}{attempt} [{}]", phase.name(), steps.join(", "))
}

#[test]
fn scripted_scenarios_hold() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/fsm");
    let mut ran = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !name.ends_with(".txt") || name == "matrix.txt" {
            continue;
        }
        run(&name, &std::fs::read_to_string(&path).unwrap());
        ran += 1;
    }
    assert!(
        ran >= 5,
        "only {ran} scenario scripts found in {}",
        dir.display()
    );
}
