//! The state directory's LOCK: one writer at a time, and the refused one learns who holds it.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Stdio;

use compute_ctl::journal::{FileJournal, JournalConfig, JournalError};

use super::child_command;

const CHILD_DIR_ENV: &str = "JOURNAL_LOCK_CHILD_DIR";

fn open_error(dir: &Path) -> JournalError {
    FileJournal::open(dir, JournalConfig::default(), |_| {}).unwrap_err()
}

#[test]
fn a_second_open_in_the_same_process_is_locked_out_naming_our_pid() {
    let dir = tempfile::tempdir().unwrap();
    let first = FileJournal::open(dir.path(), JournalConfig::default(), |_| {}).unwrap();
    match open_error(dir.path()) {
        JournalError::Locked { path, holder_pid } => {
            assert_eq!(path, dir.path().join("LOCK"));
            assert_eq!(holder_pid, Some(std::process::id()));
        }
        other => panic!("expected Locked, got {other}"),
    }
    let message = open_error(dir.path()).to_string();
    assert!(
        message.contains(&format!("pid {}", std::process::id())),
        "{message}"
    );
    assert!(message.contains("LOCK"), "{message}");
    drop(first);
    super::reopen(dir.path(), JournalConfig::default(), |_| {}).unwrap();
}

#[test]
fn a_lock_held_by_another_process_names_that_process() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = child_command("journal::lock::lock_holder_child")
        .env(CHILD_DIR_ENV, dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the child exited before locking"
        );
        // The test harness prints `test <name> ... ` before the child's first line.
        if line.trim_end().ends_with("LOCKED") {
            break;
        }
    }
    match open_error(dir.path()) {
        JournalError::Locked { holder_pid, .. } => assert_eq!(holder_pid, Some(child.id())),
        other => panic!("expected Locked, got {other}"),
    }
    // Closing its stdin lets the child go; its lock goes with it.
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    FileJournal::open(dir.path(), JournalConfig::default(), |_| {}).unwrap();
}

/// Run by `a_lock_held_by_another_process_names_that_process`: holds the journal open until
/// its stdin closes.
#[test]
#[ignore = "a child process of another test"]
fn lock_holder_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR_ENV) else {
        return;
    };
    let _journal = FileJournal::open(Path::new(&dir), JournalConfig::default(), |_| {}).unwrap();
    println!("LOCKED");
    let mut rest = Vec::new();
    std::io::stdin().read_to_end(&mut rest).unwrap();
}
