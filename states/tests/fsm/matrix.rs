//! The golden matrix: every `(phase, event)` outcome, regenerated and diffed against
//! `fixtures/fsm/matrix.txt`. A new phase or event changes the matrix, and the diff shows every
//! decision it forces. `UPDATE_GOLDEN=1` rewrites the file after a deliberate change.

use std::path::PathBuf;

use states::table;
use states::{EventName, PhaseName};

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/fsm/matrix.txt")
}

#[test]
fn matrix_matches_golden_file() {
    let actual = table::matrix_text();
    let path = golden_path();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run with UPDATE_GOLDEN=1",
            path.display()
        )
    });
    if actual != expected {
        let mut report = String::new();
        let (a, e): (Vec<&str>, Vec<&str>) = (actual.lines().collect(), expected.lines().collect());
        for line in e.iter().filter(|l| !a.contains(l)) {
            report.push_str(&format!("- {line}\n"));
        }
        for line in a.iter().filter(|l| !e.contains(l)) {
            report.push_str(&format!("+ {line}\n"));
        }
        panic!(
            "the transition matrix changed; review and run UPDATE_GOLDEN=1 cargo test -p states\n{report}"
        );
    }
}

#[test]
fn every_phase_has_samples_and_meets_every_event() {
    for name in PhaseName::ALL {
        let samples = table::samples_of(name);
        assert!(!samples.is_empty(), "{name} has no sample");
        for sample in samples {
            assert_eq!(
                sample.phase.name(),
                name,
                "sample {:?} is in the wrong phase",
                sample.label
            );
            let events: Vec<EventName> = table::events_for(&sample.phase)
                .iter()
                .map(|e| e.event.name())
                .collect();
            for event in EventName::ALL {
                assert!(
                    events.contains(&event),
                    "{} never meets {event}",
                    sample.label
                );
            }
        }
    }
}

#[test]
fn every_phase_is_reached_and_left_in_the_table() {
    let edges = table::edges();
    for name in PhaseName::ALL {
        if name != PhaseName::Empty {
            assert!(
                edges.iter().any(|e| e.to == name && e.from != name),
                "no edge enters {name}"
            );
        }
        if name != PhaseName::Terminated {
            assert!(
                edges.iter().any(|e| e.from == name && e.to != name),
                "no edge leaves {name}"
            );
        }
    }
    assert!(edges.iter().all(|e| e.from != PhaseName::Terminated));
}

#[test]
fn mermaid_lists_every_phase() {
    let diagram = table::mermaid();
    assert!(diagram.starts_with("stateDiagram-v2\n"));
    for name in PhaseName::ALL {
        assert!(
            diagram.contains(name.as_str()),
            "{name} missing from the diagram"
        );
    }
}
